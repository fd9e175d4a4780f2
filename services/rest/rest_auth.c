/* Authentication and authorization of rest (see rest_auth.h). */
#include "rest_auth.h"

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/config.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_dicomweb_common.h"
#include "rest_jwt.h"
#include "rest_labels.h"

typedef struct user {
    char *name;
    char *password;
    rest_principal p;
} user;

/* API keys recently read from PostgreSQL: a key costs one round trip per
 * TESSERA_HTTP_API_KEY_CACHE seconds per replica, not per request; a
 * revocation reaches the other replicas within that time (at once on the
 * replica that revoked it). */
#define KEY_CACHE 64
typedef struct cached_key {
    char id[17];
    char sha256[65];
    bool revoked;
    rest_principal p;
    double expires; /* monotonic seconds; 0: empty */
} cached_key;

/* Visibility answers of the last moments, by the question itself (statement,
 * id, labels): a label-scoped client reading a study's many instances asks the
 * same question again and again, and the check doubled the round trips of a
 * read. The slot is chosen by a cheap hash and the whole question compared
 * (a hash collision must never lend one resource's answer to another); a
 * question longer than a slot is not cached. An answer lasts
 * TESSERA_HTTP_VISIBILITY_CACHE seconds; a label put or removed through this
 * replica drops them all at once (rest_auth_labels_changed), one made through
 * another replica is seen within that time. */
#define VIS_CACHE 1024
#define VIS_QUESTION 320
typedef struct cached_vis {
    char question[VIS_QUESTION]; /* NUL-separated parts, question_len bytes */
    size_t question_len;
    double expires;
    unsigned long generation;
    bool visible;
} cached_vis;

struct rest_auth {
    cached_vis vis[VIS_CACHE]; /* under mu */
    int vis_ttl;
    unsigned long generation;
    user *users;
    size_t nusers;
    int key_ttl;
    pthread_mutex_t mu;
    cached_key keys[KEY_CACHE];
    rest_jwt *jwt;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

rest_role rest_role_parse(const char *s)
{
    if (!s)
        return REST_ROLE_NONE;
    if (strcmp(s, "admin") == 0)
        return REST_ROLE_ADMIN;
    if (strcmp(s, "write") == 0)
        return REST_ROLE_WRITE;
    if (strcmp(s, "read") == 0)
        return REST_ROLE_READ;
    return REST_ROLE_NONE;
}

static const char *role_name(rest_role r)
{
    static const char *const names[] = {"unset", "none", "read", "write", "admin"};
    return names[r];
}

/* Adds the labels of text (separated by any of seps) to p's grants and makes
 * p label-scoped; false on an invalid label. Admins are never label-scoped. */
static bool grant_labels(rest_principal *p, const char *text, const char *seps)
{
    char *copy = strdup(text);
    if (!copy)
        abort();
    bool ok = true;
    p->restricted = true;
    for (char *save = NULL, *l = strtok_r(copy, seps, &save); l; l = strtok_r(NULL, seps, &save)) {
        if (!rest_label_is_valid(l) || p->nlabels == REST_MAX_GRANTS) {
            ok = false;
            break;
        }
        snprintf(p->labels[p->nlabels++], sizeof(p->labels[0]), "%s", l);
    }
    free(copy);
    if (p->role == REST_ROLE_ADMIN)
        p->restricted = false;
    return ok;
}

/* ---- HTTP Basic users ------------------------------------------------------ */

static void add_user(rest_auth *a, const char *entry)
{
    const char *colon = strchr(entry, ':');
    if (!colon || colon == entry)
        return;
    a->users = realloc(a->users, (a->nusers + 1) * sizeof(user));
    if (!a->users)
        abort();
    user *u = &a->users[a->nusers++];
    memset(u, 0, sizeof(*u));
    u->name = strndup(entry, (size_t)(colon - entry));
    u->password = strdup(colon + 1);
    snprintf(u->p.name, sizeof(u->p.name), "%s", u->name);
    u->p.role = REST_ROLE_ADMIN; /* as before roles existed */
}

/* Users from TESSERA_HTTP_USERS ("user:password,...") and the lines of
 * TESSERA_HTTP_USERS_FILE ("user:password"; # comments); their roles from
 * TESSERA_HTTP_USER_ROLES ("user=role[:label|label],..."; admin when absent). */
static int load_users(rest_auth *a, ts_err *err)
{
    char *text = strdup(ts_cfg_str(TESSERA_HTTP_USERS));
    if (!text)
        abort();
    for (char *save = NULL, *u = strtok_r(text, ",", &save); u; u = strtok_r(NULL, ",", &save))
        add_user(a, u);
    free(text);
    const char *file = ts_cfg_str(TESSERA_HTTP_USERS_FILE);
    if (file[0]) {
        FILE *f = fopen(file, "r");
        if (!f)
            return ts_err_set(err, TS_EIO, "TESSERA_HTTP_USERS_FILE %s: %m", file);
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0] != '#')
                add_user(a, line);
        }
        fclose(f);
    }
    text = strdup(ts_cfg_str(TESSERA_HTTP_USER_ROLES));
    if (!text)
        abort();
    int rc = 0;
    for (char *save = NULL, *e = strtok_r(text, ",", &save); e && !rc;
         e = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(e, '=');
        char *labels = eq ? strchr(eq, ':') : NULL;
        if (labels)
            *labels++ = '\0';
        if (eq)
            *eq++ = '\0';
        rest_role role = rest_role_parse(eq);
        user *u = NULL;
        for (size_t i = 0; i < a->nusers; i++)
            if (strcmp(a->users[i].name, e) == 0)
                u = &a->users[i];
        if (!u || role == REST_ROLE_NONE) {
            rc = ts_err_set(
                err, TS_EINVAL,
                "TESSERA_HTTP_USER_ROLES: \"%s\" is not user=admin|write|read[:label|...] "
                "of a known user",
                e);
            break;
        }
        u->p.role = role;
        if (labels && !grant_labels(&u->p, labels, "|"))
            rc = ts_err_set(err, TS_EINVAL, "TESSERA_HTTP_USER_ROLES: invalid labels for %s", e);
    }
    free(text);
    return rc;
}

/* Constant time in the length of the stored entry: no early exit on a mismatch. */
static bool same_secret(const char *given, const char *stored)
{
    size_t la = strlen(given), lb = strlen(stored);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(stored[i] ^ (i < la ? given[i] : 0));
    return diff == 0;
}

static bool basic(rest_auth *a, struct MHD_Connection *conn, rest_principal *who)
{
    char *pass = NULL;
    char *name = MHD_basic_auth_get_username_password(conn, &pass);
    const user *found = NULL;
    if (name && pass)
        /* every user is compared, whoever matches: the same time for a wrong
         * password as for an unknown user */
        for (size_t i = 0; i < a->nusers; i++) {
            bool same_name = strcmp(a->users[i].name, name) == 0;
            bool same_pass = same_secret(pass, a->users[i].password);
            if (same_name && same_pass)
                found = &a->users[i];
        }
    if (found)
        *who = found->p;
    else
        ts_info("http authentication refused", "kind=basic user=\"%.64s\"", name ? name : "");
    MHD_free(name);
    MHD_free(pass);
    return found != NULL;
}

/* ---- API keys ------------------------------------------------------------------ */

/* SHA-256 fetched from OpenSSL's provider once: EVP_sha256() makes every
 * digest fetch it again, under the provider store's lock. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void sha256_hex(const char *s, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int n = 0;
    pthread_once(&sha256_once, sha256_fetch);
    EVP_Digest(s, strlen(s), md, &n, sha256_md ? sha256_md : EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static bool all_hex(const char *s, size_t n)
{
    return strspn(s, "0123456789abcdef") >= n;
}

static const ts_db_stmt key_lookup = {
    "rest_api_key_lookup",
    "SELECT secret_sha256, role, array_to_string(labels, '|'), (labels IS NOT NULL)::text,"
    " (revoked_at IS NOT NULL)::text, name FROM api_keys WHERE id = $1",
    1};

/* "tsk_<16 hex>_<64 hex>" */
static bool api_key(rest_auth *a, rest_ctx *ctx, const char *key, rest_principal *who)
{
    char id[17], hash[65];
    if (strlen(key) != 4 + 16 + 1 + 64 || !all_hex(key + 4, 16) || key[20] != '_' ||
        !all_hex(key + 21, 64))
        goto refused;
    memcpy(id, key + 4, 16);
    id[16] = '\0';
    sha256_hex(key + 21, hash);
    double t = now_s();
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < KEY_CACHE; i++) {
        cached_key *c = &a->keys[i];
        if (c->expires > t && strcmp(c->id, id) == 0) {
            bool ok = !c->revoked && CRYPTO_memcmp(c->sha256, hash, 64) == 0;
            if (ok)
                *who = c->p;
            pthread_mutex_unlock(&a->mu);
            if (ok)
                return true;
            goto refused;
        }
    }
    pthread_mutex_unlock(&a->mu);
    const char *params[] = {id};
    rest_row row = {&key_lookup, params, 6, {0}};
    ts_err err;
    if (rest_row_run(ctx->db, TS_DB_READ, &row, &err)) {
        ts_warn("api key lookup failed", "error=\"%s\"", err.msg);
        goto refused; /* 401, the client may retry */
    }
    cached_key c = {0};
    snprintf(c.id, sizeof(c.id), "%s", id);
    bool found = row.col[0] != NULL;
    if (found) {
        snprintf(c.sha256, sizeof(c.sha256), "%s", row.col[0]);
        c.revoked = strcmp(row.col[4], "true") == 0;
        c.p.role = rest_role_parse(row.col[1]);
        snprintf(c.p.name, sizeof(c.p.name), "key:%s", id);
        if (strcmp(row.col[3], "true") == 0)
            grant_labels(&c.p, row.col[2] ? row.col[2] : "", "|");
    } else {
        c.revoked = true; /* unknown: cached as refused too */
    }
    rest_row_clear(&row);
    c.expires = now_s() + a->key_ttl;
    if (a->key_ttl > 0) {
        pthread_mutex_lock(&a->mu);
        int slot = 0;
        for (int i = 0; i < KEY_CACHE; i++) {
            if (strcmp(a->keys[i].id, id) == 0 || a->keys[i].expires <= t) {
                slot = i;
                break;
            }
            if (a->keys[i].expires < a->keys[slot].expires)
                slot = i;
        }
        a->keys[slot] = c;
        pthread_mutex_unlock(&a->mu);
    }
    if (!c.revoked && CRYPTO_memcmp(c.sha256, hash, 64) == 0) {
        *who = c.p;
        return true;
    }
refused:
    ts_info("http authentication refused", "kind=api-key id=\"%.16s\"",
            strlen(key) > 4 ? key + 4 : "");
    return false;
}

static void forget_key(rest_auth *a, const char *id)
{
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < KEY_CACHE; i++)
        if (strcmp(a->keys[i].id, id) == 0)
            a->keys[i].expires = 0;
    pthread_mutex_unlock(&a->mu);
}

static bool authenticate(rest_ctx *ctx, void *conn, rest_principal *who)
{
    rest_auth *a = ctx->auth;
    memset(who, 0, sizeof(*who));
    const char *authz =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *token = authz + 7;
        while (*token == ' ')
            token++;
        if (strncmp(token, "tsk_", 4) == 0)
            return api_key(a, ctx, token, who);
        char reason[160];
        if (a->jwt && rest_jwt_verify(a->jwt, token, who, reason, sizeof(reason)) == 0)
            return true;
        ts_info("http authentication refused", "kind=jwt reason=\"%s\"",
                a->jwt ? reason : "no token issuer configured (TESSERA_JWT_*)");
        return false;
    }
    return basic(a, conn, who);
}

/* ---- authorization: the one check before every route ------------------------ */

/* The caller's labels are the last parameter of each. */
static const ts_db_stmt resource_visible = {
    "rest_resource_visible",
    "SELECT " REST_VISIBLE_SQL("r",
                               "$3::text[]") "::text FROM resources r"
                                             " WHERE r.public_id = $1 AND r.level = $2::smallint",
    3};

static const ts_db_stmt patient_of_visible = {
    "rest_patient_of_visible",
    "SELECT tessera_visible(id, $3::text[], true)::text FROM resources"
    " WHERE public_id = $1 AND level = $2::smallint",
    3};

static const ts_db_stmt study_uid_visible = {
    "rest_study_uid_visible",
    "SELECT EXISTS (SELECT 1 FROM studies s JOIN labels l ON l.resource_id = s.resource_id"
    " WHERE s.study_instance_uid = $1 AND l.label = ANY ($2::text[]))::text",
    2};

static void labels_literal(const rest_principal *p, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "{");
    for (size_t i = 0; i < p->nlabels && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%s", i ? "," : "", p->labels[i]);
    if (n < size)
        snprintf(out + n, size - n, "}");
}

const char *rest_auth_visible_labels(const rest_request *req, char *buf, size_t size)
{
    if (!req->who || !req->who->restricted)
        return NULL;
    labels_literal(req->who, buf, size);
    return buf;
}

void rest_auth_labels_changed(rest_ctx *ctx)
{
    rest_auth *a = ctx->auth;
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->generation++;
    pthread_mutex_unlock(&a->mu);
}

/* A visibility question as the cache keys it: the statement's name and every
 * parameter (labels included), NUL-separated. */
typedef struct vis_question {
    char text[VIS_QUESTION];
    size_t len;
    bool cacheable; /* no longer than a slot */
    cached_vis *slot;
} vis_question;

static void question_make(rest_auth *a, const ts_db_stmt *stmt, const char *const *params,
                          int nparams, vis_question *q)
{
    q->len = strlen(stmt->name) + 1;
    q->cacheable = q->len <= sizeof(q->text);
    if (q->cacheable)
        memcpy(q->text, stmt->name, q->len);
    for (int i = 0; i < nparams && q->cacheable; i++) {
        size_t n = strlen(params[i]) + 1;
        q->cacheable = q->len + n <= sizeof(q->text);
        if (q->cacheable)
            memcpy(q->text + q->len, params[i], n);
        q->len += n;
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: a slot, not a proof */
    for (size_t i = 0; q->cacheable && i < q->len; i++)
        h = (h ^ (unsigned char)q->text[i]) * 1099511628211ULL;
    q->slot = &a->vis[h % VIS_CACHE];
}

/* The cached answer (0 or 1), or -2; *ticket is what cache_put needs, taken
 * before the question goes to PostgreSQL (a label changed meanwhile voids it). */
static int cache_get(rest_auth *a, const vis_question *q, rest_vis_ticket *ticket)
{
    ticket->t = now_s();
    pthread_mutex_lock(&a->mu);
    ticket->generation = a->generation;
    cached_vis *slot = q->slot;
    int v = -2;
    if (q->cacheable && slot->expires > ticket->t && slot->generation == ticket->generation &&
        slot->question_len == q->len && memcmp(slot->question, q->text, q->len) == 0)
        v = slot->visible;
    pthread_mutex_unlock(&a->mu);
    return v;
}

static void cache_put(rest_auth *a, const vis_question *q, const rest_vis_ticket *ticket, bool v)
{
    if (a->vis_ttl <= 0 || !q->cacheable)
        return;
    pthread_mutex_lock(&a->mu);
    cached_vis *slot = q->slot;
    memcpy(slot->question, q->text, q->len);
    slot->question_len = q->len;
    slot->visible = v;
    slot->generation = ticket->generation;
    slot->expires = ticket->t + a->vis_ttl;
    pthread_mutex_unlock(&a->mu);
}

/* 1: visible; 0: not (or unknown); -1: the request has been answered (failure).
 * params[nparams - 1] is filled with the caller's labels. */
static int visible(rest_request *req, const ts_db_stmt *stmt, const char **params, int nparams)
{
    rest_auth *a = req->ctx->auth;
    char labels[REST_LABELS_LITERAL_MAX];
    labels_literal(req->who, labels, sizeof(labels));
    params[nparams - 1] = labels;
    vis_question q;
    question_make(a, stmt, params, nparams, &q);
    rest_vis_ticket ticket;
    int v = cache_get(a, &q, &ticket);
    if (v >= 0)
        return v;
    rest_row row = {stmt, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &row))
        return -1;
    v = row.col[0] && strcmp(row.col[0], "true") == 0;
    rest_row_clear(&row);
    cache_put(a, &q, &ticket, v);
    return v;
}

/* The question resource_visible asks for /{level}/{id}: the GET handler shares
 * its answers (REST_SCOPE_IN_SQL). */
static void resource_question(rest_request *req, const char *id, const char *level, char *labels,
                              vis_question *q)
{
    labels_literal(req->who, labels, REST_LABELS_LITERAL_MAX);
    const char *params[] = {id, level, labels};
    question_make(req->ctx->auth, &resource_visible, params, 3, q);
}

int rest_auth_visibility_known(rest_request *req, const char *id, const char *level,
                               rest_vis_ticket *ticket)
{
    char labels[REST_LABELS_LITERAL_MAX];
    vis_question q;
    resource_question(req, id, level, labels, &q);
    int v = cache_get(req->ctx->auth, &q, ticket);
    return v >= 0 ? v : -1;
}

void rest_auth_visibility_learned(rest_request *req, const char *id, const char *level,
                                  const rest_vis_ticket *ticket)
{
    char labels[REST_LABELS_LITERAL_MAX];
    vis_question q;
    resource_question(req, id, level, labels, &q);
    cache_put(req->ctx->auth, &q, ticket, true);
}

static bool authorize(rest_request *req, const rest_route *route)
{
    const rest_principal *who = req->who;
    char details[160];
    if (!who)
        return true;
    rest_role need = route->role;
    if (need == REST_ROLE_UNSET) /* a row that says nothing: by its method */
        need = strcmp(req->method, "GET") == 0 ? REST_ROLE_READ : REST_ROLE_WRITE;
    if (who->role < need) {
        ts_info("http access refused", "who=\"%s\" role=%s needs=%s method=%s uri=%s", who->name,
                role_name(who->role), role_name(need), req->method, req->url);
        snprintf(details, sizeof(details), "this route needs the role \"%s\"", role_name(need));
        rest_reply_oe_status(req, 403, TS_OE_UNAUTHORIZED, details);
        return false;
    }
    if (!who->restricted)
        return true;
    int v = 1;
    const char *params[3];
    switch (route->scope) {
    case REST_SCOPE_PUBLIC:
    case REST_SCOPE_FILTERED:
    case REST_SCOPE_IN_SQL: /* the handler's statement checks (rest_http.h) */
        return true;
    case REST_SCOPE_NONE:
        ts_info("http access refused", "who=\"%s\" label-scoped method=%s uri=%s", who->name,
                req->method, req->url);
        rest_reply_oe_status(req, 403, TS_OE_UNAUTHORIZED,
                             "this route is not open to a caller restricted to labels");
        return false;
    case REST_SCOPE_RESOURCE:
    case REST_SCOPE_PATIENT_OF: {
        char lv[4];
        snprintf(lv, sizeof(lv), "%d", rest_level_of_plural(req->seg[0]));
        params[0] = req->seg[1];
        params[1] = lv;
        const ts_db_stmt *stmt =
            route->scope == REST_SCOPE_PATIENT_OF ? &patient_of_visible : &resource_visible;
        if ((v = visible(req, stmt, params, 3)) == 0) {
            /* what an unknown id gets */
            if (req->nseg == 2 && strcmp(req->method, "GET") == 0)
                rest_reply_empty(req, 404);
            else
                rest_reply_unknown_resource(req);
        }
        break;
    }
    case REST_SCOPE_DICOMWEB:
    case REST_SCOPE_WADO_URI: {
        const char *uid =
            route->scope == REST_SCOPE_WADO_URI ? rest_arg(req, "studyUID") : req->seg[2];
        params[0] = uid ? uid : "";
        if ((v = visible(req, &study_uid_visible, params, 2)) == 0) {
            /* what an unknown study gets (dw_instances) */
            static const char *const names[] = {"StudyInstanceUID", "SeriesInstanceUID",
                                                "SOPInstanceUID"};
            int k = 0;
            while (k < 2 && 2 + 2 * (k + 1) < req->nseg)
                k++;
            dw_error(req, 404, "no %s %s here", names[k],
                     route->scope == REST_SCOPE_WADO_URI ? params[0] : req->seg[2 + 2 * k]);
        }
        break;
    }
    }
    if (v == 0)
        ts_info("http access refused", "who=\"%s\" not-visible method=%s uri=%s", who->name,
                req->method, req->url);
    return v == 1;
}

/* ---- API keys over REST -------------------------------------------------------- */

static const ts_db_stmt key_insert = {
    "rest_api_key_insert",
    "INSERT INTO api_keys (id, name, secret_sha256, role, labels, created_by)"
    " VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NULL THEN NULL"
    "   ELSE string_to_array($5, '|') END, $6) RETURNING id",
    6};

static const ts_db_stmt key_list = {
    "rest_api_key_list",
    "SELECT coalesce(jsonb_agg(jsonb_build_object('ID', id, 'Name', name, 'Role', role,"
    " 'Labels', to_jsonb(labels), 'CreatedAt', tessera_orthanc_time(created_at),"
    " 'CreatedBy', created_by, 'Revoked', revoked_at IS NOT NULL) ORDER BY created_at, id), '[]')"
    " FROM api_keys",
    0};

static const ts_db_stmt key_revoke = {
    "rest_api_key_revoke",
    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id", 1};

static void random_hex(char *out, size_t bytes)
{
    unsigned char buf[64];
    if (RAND_bytes(buf, (int)bytes) != 1)
        abort(); /* no randomness: no key */
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", buf[i]);
}

void rest_api_keys_create(rest_request *req)
{
    json_error_t jerr;
    json_t *body = req->body ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    const char *name = json_string_value(json_object_get(body, "Name"));
    const char *role = json_string_value(json_object_get(body, "Role"));
    json_t *labels = json_object_get(body, "Labels");
    char joined[REST_MAX_GRANTS * 66 + 1] = "";
    bool ok = json_is_object(body) && name && *name && strlen(name) <= 128 &&
              rest_role_parse(role) != REST_ROLE_NONE &&
              (!labels || json_is_null(labels) ||
               (json_is_array(labels) && json_array_size(labels) <= REST_MAX_GRANTS));
    size_t i;
    json_t *l;
    json_array_foreach(labels, i, l)
    {
        const char *s = json_string_value(l);
        if (!s || !rest_label_is_valid(s)) {
            ok = false;
            break;
        }
        size_t n = strlen(joined);
        snprintf(joined + n, sizeof(joined) - n, "%s%s", i ? "|" : "", s);
    }
    if (!ok) {
        rest_reply_oe(
            req, TS_OE_BAD_REQUEST,
            "expected {\"Name\": text, \"Role\": \"admin\"|\"write\"|\"read\", \"Labels\": "
            "[label, ...] (optional: absent or null for every study)}");
        json_decref(body);
        return;
    }
    char id[17], secret[65], hash[65], key[90];
    random_hex(id, 8);
    random_hex(secret, 32);
    sha256_hex(secret, hash);
    snprintf(key, sizeof(key), "tsk_%s_%s", id, secret);
    bool scoped = json_is_array(labels);
    const char *params[] = {id, name, hash, role, scoped ? joined : NULL, req->who->name};
    rest_row row = {&key_insert, params, 1, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &row)) {
        json_t *out = json_object();
        json_object_set_new(out, "ID", json_string(id));
        json_object_set_new(out, "Name", json_string(name));
        json_object_set_new(out, "Role", json_string(role));
        json_object_set(out, "Labels", scoped ? labels : json_null());
        json_object_set_new(out, "Key", json_string(key));
        ts_info("api key created", "id=%s role=%s by=\"%s\"", id, role, req->who->name);
        rest_reply_json(req, 200, out);
    }
    rest_row_clear(&row);
    json_decref(body);
}

void rest_api_keys_list(rest_request *req)
{
    rest_row row = {&key_list, NULL, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &row))
        return;
    rest_reply_json_text(req, 200, row.col[0] ? row.col[0] : "[]",
                         row.col[0] ? strlen(row.col[0]) : 2);
    rest_row_clear(&row);
}

void rest_api_keys_revoke(rest_request *req)
{
    const char *id = req->seg[2];
    if (strlen(id) != 16 || !all_hex(id, 16)) {
        rest_reply_unknown_resource(req);
        return;
    }
    const char *params[] = {id};
    rest_row row = {&key_revoke, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_WRITE, &row))
        return;
    if (!row.col[0]) {
        rest_reply_unknown_resource(req);
    } else {
        forget_key(req->ctx->auth, id);
        ts_info("api key revoked", "id=%s by=\"%s\"", id, req->who->name);
        rest_reply_text(req, 200, "", 0);
    }
    rest_row_clear(&row);
}

/* ---- start and stop ------------------------------------------------------------ */

int rest_auth_start(rest_ctx *ctx, ts_err *err)
{
    rest_auth *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    pthread_mutex_init(&a->mu, NULL);
    a->key_ttl = (int)ts_cfg_int(TESSERA_HTTP_API_KEY_CACHE);
    a->vis_ttl = (int)ts_cfg_int(TESSERA_HTTP_VISIBILITY_CACHE);
    ctx->auth = a;
    int rc = load_users(a, err);
    if (rc == 0)
        rc = rest_jwt_start(&a->jwt, err);
    if (rc == 0 && rest_http_auth_required() && a->nusers == 0 && !a->jwt)
        rc = ts_err_set(err, TS_EINVAL,
                        "authentication is on (TESSERA_HTTP_AUTH=%s, TESSERA_HTTP_BIND=%s is not "
                        "loopback) but there are no users and no token issuer, so no way in: set "
                        "TESSERA_HTTP_USERS_FILE or "
                        "TESSERA_HTTP_USERS (an admin makes API keys), or a token issuer "
                        "(TESSERA_JWT_JWKS_FILE or TESSERA_JWT_JWKS_URL), bind to 127.0.0.1, or "
                        "set TESSERA_HTTP_AUTH=off",
                        ts_cfg_str(TESSERA_HTTP_AUTH), ts_cfg_str(TESSERA_HTTP_BIND));
    if (rc) {
        rest_auth_stop(ctx);
        return rc;
    }
    ctx->authenticate = authenticate;
    ctx->authorize = authorize;
    ts_info("http authentication", "users=%zu api_key_cache=%ds jwt=%s", a->nusers, a->key_ttl,
            a->jwt ? "on" : "off");
    return 0;
}

void rest_auth_stop(rest_ctx *ctx)
{
    rest_auth *a = ctx->auth;
    if (!a)
        return;
    for (size_t i = 0; i < a->nusers; i++) {
        free(a->users[i].name);
        free(a->users[i].password);
    }
    free(a->users);
    rest_jwt_stop(a->jwt);
    pthread_mutex_destroy(&a->mu);
    free(a);
    ctx->auth = NULL;
    ctx->authenticate = NULL;
    ctx->authorize = NULL;
}
