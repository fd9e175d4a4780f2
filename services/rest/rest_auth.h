/* Who may call what over HTTP (docs/design.md, "Labels and access").
 *
 * Authentication: HTTP Basic users (TESSERA_HTTP_USERS, TESSERA_HTTP_USERS_FILE;
 * admins unless TESSERA_HTTP_USER_ROLES says otherwise), API keys for machines
 * ("Authorization: Bearer tsk_<id>_<secret>", kept hashed in PostgreSQL, made
 * and revoked over REST by an admin) and JWT bearer tokens (rest_jwt.c).
 * Authorization: each route's least role and scope (the route table in
 * main.c), checked once before every handler (rest_dispatch); a resource a
 * label-scoped caller may not see answers 404 as an unknown one does. */
#ifndef REST_AUTH_H
#define REST_AUTH_H

#include "base/err.h"
#include "rest_http.h"

typedef struct rest_auth rest_auth;

/* Reads the users, roles and token settings and installs the hooks of ctx
 * (ctx->auth, ctx->authenticate, ctx->authorize). Fails when authentication is
 * required (rest_http_auth_required) and there is no way in: no user and no
 * token issuer. */
int rest_auth_start(rest_ctx *ctx, ts_err *err);
void rest_auth_stop(rest_ctx *ctx);

/* POST /tessera/api-keys {"Name", "Role": "admin"|"write"|"read", "Labels": [..]}:
 * the key is in the answer, once; GET /tessera/api-keys lists them (no secret);
 * DELETE /tessera/api-keys/{id} revokes one. */
void rest_api_keys_create(rest_request *req);
void rest_api_keys_list(rest_request *req);
void rest_api_keys_revoke(rest_request *req);

/* A label was put or removed here: visibility answers cached by this
 * replica are dropped. */
void rest_auth_labels_changed(rest_ctx *ctx);

/* The labels of a label-scoped caller as a text[] literal (in buf), for the
 * statements that check visibility themselves (REST_SCOPE_IN_SQL, lists);
 * NULL when the caller sees everything. */
const char *rest_auth_visible_labels(const rest_request *req, char *buf, size_t size);
#define REST_LABELS_LITERAL_MAX (REST_MAX_GRANTS * 66 + 3)

/* For a REST_SCOPE_IN_SQL handler of /{level}/{id} (level as its digit): what
 * this replica's visibility cache (TESSERA_HTTP_VISIBILITY_CACHE) knows of the
 * label-scoped caller and that resource: 1 visible, 0 not, -1 unknown. When it
 * knows, the handler reads the resource without the check (a client reading a
 * study again and again pays for the check once per cache lifetime); when not,
 * it checks in its own statement and, when the row came back, tells the cache
 * with rest_auth_visibility_learned and the ticket of this call (taken before
 * the statement: a label changed meanwhile voids it). The answers are those of
 * authorize's own check of the same resource (the same expression). */
typedef struct rest_vis_ticket {
    unsigned long generation;
    double t;
} rest_vis_ticket;
int rest_auth_visibility_known(rest_request *req, const char *id, const char *level,
                               rest_vis_ticket *ticket);
void rest_auth_visibility_learned(rest_request *req, const char *id, const char *level,
                                  const rest_vis_ticket *ticket);

/* Whether the row r (id, level, parent_id, labels of resources) is visible to a
 * caller granted the labels of the SQL expression `labels` (a text[]), written
 * into a statement: the study decides (its labels) for a study, its series and
 * instances; a patient is visible when all its studies are
 * (db/functions/labels.sql). The same test as tessera_visible(), without a
 * function call: the planner sees it, and nothing walks up level by level. The
 * study's labels are read from its resources row (0048): for a study, the row
 * itself; for a series or an instance, one or two probes of the primary key
 * inside the CASE, correlated subplans. A statement a level without the CASE was
 * tried (with an EXISTS on labels, before 0048): PostgreSQL flattened it into a
 * semi-join and, for an instance, hashed every label row of the caller's labels
 * (pgbench: 0.22 against 0.12 ms with 500 labelled studies). */
#define REST_VISIBLE_SQL(r, labels)                                                                \
    "(CASE WHEN " r ".level = 0 THEN tessera_patient_visible(" r ".id, " labels ")"                \
    " WHEN " r ".level = 1 THEN coalesce(" r ".labels && " labels ", false)"                       \
    " ELSE coalesce((SELECT vs.labels FROM resources vs WHERE vs.id = CASE " r ".level"            \
    " WHEN 2 THEN " r ".parent_id"                                                                 \
    " ELSE (SELECT vp.parent_id FROM resources vp WHERE vp.id = " r ".parent_id) END)"             \
    " && " labels ", false) END)"

/* "admin" -> REST_ROLE_ADMIN ...; REST_ROLE_NONE when unknown. */
rest_role rest_role_parse(const char *s);

#endif
