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

/* "admin" -> REST_ROLE_ADMIN ...; REST_ROLE_NONE when unknown. */
rest_role rest_role_parse(const char *s);

#endif
