/* The audit trail of rest: who (user, API key or token subject), what (method,
 * uri, the resource the route names), when, from where (client IP) and the
 * outcome (HTTP status) of every request that reads, exports, changes or
 * deletes patient data, and of every refused one. Each is a log line at once
 * and a row of audit_log (0021) written in batches by a thread of its own: a
 * request never waits for it; when PostgreSQL cannot keep up, rows beyond
 * TESSERA_AUDIT_QUEUE are dropped and counted (the log line stays). */
#ifndef REST_AUDIT_H
#define REST_AUDIT_H

#include "base/err.h"
#include "rest_http.h"

typedef struct rest_audit rest_audit;

/* Starts the writer and installs ctx->audit; nothing when TESSERA_AUDIT is off. */
int rest_audit_start(rest_ctx *ctx, ts_err *err);
/* Writes what is queued, then stops the writer. */
void rest_audit_stop(rest_ctx *ctx);

/* GET /tessera/audit[?since=<id>][&limit=<n>][&resource=<id>][&who=<name>]: the
 * rows after id `since`, oldest first (admins). */
void rest_audit_list(rest_request *req);

#endif
