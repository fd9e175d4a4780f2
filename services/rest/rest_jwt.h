/* JWT bearer tokens (RFC 7519) signed RS256 or ES256, verified with OpenSSL
 * against the keys of a JWKS (RFC 7517) read from a file
 * (TESSERA_JWT_JWKS_FILE) or an OpenID Connect provider's jwks_uri
 * (TESSERA_JWT_JWKS_URL, through libcurl, refreshed every
 * TESSERA_JWT_JWKS_REFRESH seconds and when a token names an unknown key). */
#ifndef REST_JWT_H
#define REST_JWT_H

#include <stddef.h>

#include "base/err.h"
#include "rest_http.h"

typedef struct rest_jwt rest_jwt;

/* *out stays NULL when no JWKS is configured. */
int rest_jwt_start(rest_jwt **out, ts_err *err);
void rest_jwt_stop(rest_jwt *j);

/* 0 and *who filled (subject, role and label grants from the claims named by
 * the settings) when the token is valid; else -1 and why in reason. */
int rest_jwt_verify(rest_jwt *j, const char *token, rest_principal *who, char *reason, size_t size);

#endif
