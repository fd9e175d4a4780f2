/* The audit trail: who read, exported, stored, modified or deleted which patient
 * data, when, from where, with what outcome (table audit_log, migration 0026).
 *
 * Recording never blocks the request path: ts_audit_record() copies the event
 * into a bounded queue in memory and returns; a thread of its own writes the
 * queue in batches: the first event of a batch wakes it, it waits
 * TESSERA_AUDIT_FLUSH_MS (or for BATCH_MAX events) and writes them all with one
 * COPY, over a connection of its own. ts_audit_stop() writes the queue at
 * once; after a crash (kill -9) the events of the last interval are only in the
 * log (docs/design.md, "The audit trail's batches"). When
 * PostgreSQL is unreachable the events wait in the queue; past max_pending the
 * oldest are dropped, each drop counted (ts_audit_dropped) and logged once per
 * batch. Every event is also a logfmt line (msg="audit"), so a log collector
 * holds the trail even when the database lost some.
 *
 * Retention: ts_audit_prune() removes rows older than a number of days, in
 * batches; the deleter service calls it (TESSERA_AUDIT_RETENTION_DAYS). */
#ifndef TS_AUDIT_H
#define TS_AUDIT_H

#include <stddef.h>

#include "base/err.h"
#include "io/db.h"

typedef struct ts_audit ts_audit;

typedef struct ts_audit_event {
    const char *who;       /* user, API key name, AE title; "" anonymous */
    const char *who_kind;  /* "user", "api-key", "token", "aet", "anonymous" */
    const char *action;    /* "read", "export", "query", "store", "modify", "delete" */
    const char *resources; /* resource ids or UIDs, comma-separated; "" none */
    const char *source;    /* the client's address */
    const char *request;   /* "GET /studies/…" or "C-MOVE" … */
    int outcome;           /* HTTP status or DIMSE status */
} ts_audit_event;

/* Starts the writer for service ("rest", "ingest", ...), with its own
 * connection to conninfo. NULL conninfo: events are only logged. */
int ts_audit_start(const char *conninfo, const char *service, size_t max_pending, ts_audit **out,
                   ts_err *err);
/* Queues the event (copies every string) and logs it. Never blocks on I/O. */
void ts_audit_record(ts_audit *a, const ts_audit_event *e);
/* Writes what is queued (waits up to timeout_ms), stops the thread, frees. */
void ts_audit_stop(ts_audit *a, int timeout_ms);
/* Events dropped because the queue was full; events waiting. */
long ts_audit_dropped(ts_audit *a);
size_t ts_audit_pending(ts_audit *a);

/* Deletes rows older than days (at most batch rows a call); returns the count. */
int ts_audit_prune(ts_db_pool *pool, int days, int batch, long *deleted, ts_err *err);

#endif
