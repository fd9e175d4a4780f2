/* Metadata of every level, with Orthanc's revisions: GET answers an ETag
 * "<revision>-<md5 of the value>"; PUT and DELETE of a metadata that exists
 * need If-Match with the current revision, else 409 (CheckRevisions: true). */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ids.h"
#include "log.h"
#include "rest_metadata.h"

/* Orthanc's system metadata: readable, not writable through the API. */
static const char *const system_names[] = {
    "IndexInSeries", "ReceptionDate", "RemoteAET", "ExpectedNumberOfInstances", "ModifiedFrom",
    "AnonymizedFrom", "LastUpdate", "Origin", "TransferSyntax", "SopClassUid", "RemoteIP",
    "CalledAET", "HttpUsername", "PixelDataOffset", "MainDicomTagsSignature"};

static int level_of_plural(const char *s)
{
    static const char *const names[] = {"patients", "studies", "series", "instances"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* User metadata come from TESSERA_USER_METADATA ("Name=1024,Other=1025"); a
 * name may also be given by its number. Writes *canonical (the stored name).
 * Returns false for names that are neither system nor user metadata. */
static bool resolve_name(const char *given, char *canonical, size_t size, bool *is_user)
{
    *is_user = false;
    for (size_t i = 0; i < sizeof(system_names) / sizeof(system_names[0]); i++) {
        if (strcmp(given, system_names[i]) == 0) {
            snprintf(canonical, size, "%s", given);
            return true;
        }
    }
    const char *list = ts_config_str("TESSERA_USER_METADATA");
    char *end;
    long number = strtol(given, &end, 10);
    bool numeric = *given && !*end;
    const char *p = list;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq) {
            size_t name_len = (size_t)(eq - p);
            long idx = strtol(eq + 1, NULL, 10);
            if ((strlen(given) == name_len && strncmp(given, p, name_len) == 0) ||
                (numeric && idx == number)) {
                snprintf(canonical, size, "%.*s", (int)name_len, p);
                *is_user = true;
                return true;
            }
        }
        p = comma ? comma + 1 : NULL;
    }
    if (numeric && number >= 1024 && number <= 65535) {
        snprintf(canonical, size, "%ld", number);
        *is_user = true;
        return true;
    }
    return false;
}

static void set_etag(rest_request *req, const char *revision, const char *value)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_Digest(value, strlen(value), md, &len, EVP_md5(), NULL);
    char hex[33];
    for (unsigned i = 0; i < len && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(req->etag, sizeof(req->etag), "\"%s-%s\"", revision, hex);
}

/* If-Match: "3", 3 or "3-<md5>" (the ETag as given). -1: absent; -2: malformed. */
static long if_match(rest_request *req)
{
    const char *h = rest_header(req, "If-Match");
    if (!h)
        return -1;
    while (*h == ' ' || *h == '"')
        h++;
    char *end;
    long rev = strtol(h, &end, 10);
    if (end == h || rev < 0 || (*end && *end != '-' && *end != '"' && *end != ' '))
        return -2;
    return rev;
}

/* ---- database ------------------------------------------------------------ */

static const ts_db_stmt list_metadata = {
    "rest_list_metadata",
    "SELECT r.id IS NOT NULL, coalesce((SELECT jsonb_object_agg(m.name, m.value ORDER BY m.name)"
    "   FROM metadata m WHERE m.resource_id = r.id), '{}')"
    "   || CASE WHEN r.level < 3 THEN jsonb_build_object('LastUpdate',"
    "      tessera_orthanc_time(r.last_update)) ELSE '{}' END"
    " FROM (SELECT 1) one LEFT JOIN resources r ON r.public_id = $1 AND r.level = $2::smallint",
    2};

static const ts_db_stmt get_metadata = {
    "rest_get_metadata",
    "SELECT r.id IS NOT NULL, m.value, m.revision::text"
    " FROM (SELECT 1) one LEFT JOIN resources r ON r.public_id = $1 AND r.level = $2::smallint"
    " LEFT JOIN metadata m ON m.resource_id = r.id AND m.name = $3",
    3};

static const ts_db_stmt put_metadata = {
    "rest_put_metadata",
    "SELECT status, revision::text FROM tessera_put_metadata($1, $2::smallint, $3, $4,"
    " $5::integer)",
    5};

static const ts_db_stmt delete_metadata = {
    "rest_delete_metadata",
    "SELECT status FROM tessera_delete_metadata($1, $2::smallint, $3, $4::integer)", 4};

typedef struct row {
    const ts_db_stmt *stmt;
    const char *const *params;
    int ncols;
    char *col[3];
} row;

static int row_txn(ts_db *db, void *arg, ts_err *err)
{
    row *r = arg;
    PGresult *res;
    int rc = ts_db_exec(db, r->stmt, r->params, &res, err);
    if (rc)
        return rc;
    for (int i = 0; i < r->ncols; i++) {
        free(r->col[i]);
        r->col[i] = PQntuples(res) && !PQgetisnull(res, 0, i) ? strdup(PQgetvalue(res, 0, i)) : NULL;
    }
    PQclear(res);
    return 0;
}

static bool run(rest_request *req, ts_db_mode mode, row *r)
{
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, mode, row_txn, r, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return false;
    }
    return true;
}

static void row_clear(row *r)
{
    for (int i = 0; i < 3; i++)
        free(r->col[i]);
}

/* ---- routes ----------------------------------------------------------------- */

/* GET /{level}/{id}/metadata [?expand] */
void rest_list_metadata(rest_request *req)
{
    char lv[4];
    snprintf(lv, sizeof(lv), "%d", level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    const char *params[] = {req->seg[1], lv};
    row r = {&list_metadata, params, 2, {0}};
    if (!run(req, TS_DB_READ, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "t") != 0) {
        rest_reply_unknown_resource(req);
    } else {
        json_t *all = json_loads(r.col[1], 0, NULL);
        if (rest_flag(req, "expand")) {
            rest_reply_json(req, 200, all);
        } else {
            json_t *names = json_array();
            const char *key;
            json_t *v;
            json_object_foreach(all, key, v) json_array_append_new(names, json_string(key));
            json_decref(all);
            rest_reply_json(req, 200, names);
        }
    }
    row_clear(&r);
}

/* GET /{level}/{id}/metadata/{name} */
void rest_get_metadata(rest_request *req)
{
    char name[128], lv[4];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user)) {
        rest_reply_error(req, 404, 7, "Accessing an inexistent item", "unknown metadata name");
        return;
    }
    const char *params[] = {req->seg[1], lv, name};
    row r = {&get_metadata, params, 3, {0}};
    if (!run(req, TS_DB_READ, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "t") != 0)
        rest_reply_unknown_resource(req);
    else if (!r.col[1])
        rest_reply_error(req, 404, 7, "Accessing an inexistent item", NULL);
    else {
        set_etag(req, r.col[2], r.col[1]);
        rest_reply_text(req, 200, r.col[1], strlen(r.col[1]));
    }
    row_clear(&r);
}

/* PUT /{level}/{id}/metadata/{name}: the body is the value. */
void rest_put_metadata(rest_request *req)
{
    char name[128], lv[4], rev[16];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user) || !is_user) {
        rest_reply_error(req, 400, 4, "Parameter out of range",
                         "only user metadata (TESSERA_USER_METADATA, or 1024..65535) can be set");
        return;
    }
    long match = if_match(req);
    if (match == -2) {
        rest_reply_error(req, 400, 4, "Parameter out of range",
                         "the \"If-Match\" HTTP header should contain the revision as an integer");
        return;
    }
    char *value = strndup(req->body ? req->body : "", req->body_len);
    if (!value || strlen(value) != req->body_len) {
        free(value);
        rest_reply_error(req, 400, 8, "Bad request", "a metadata value is text without NUL bytes");
        return;
    }
    snprintf(rev, sizeof(rev), "%ld", match);
    const char *params[] = {req->seg[1], lv, name, value, match >= 0 ? rev : NULL};
    row r = {&put_metadata, params, 2, {0}};
    if (run(req, TS_DB_WRITE, &r)) {
        const char *status = r.col[0] ? r.col[0] : "";
        if (strcmp(status, "ok") == 0) {
            set_etag(req, r.col[1], value);
            rest_reply_text(req, 200, "", 0);
        } else if (strcmp(status, "unknown_resource") == 0) {
            rest_reply_unknown_resource(req);
        } else {
            rest_reply_error(req, 409, 43, "The revision of a metadata or attachment is outdated",
                             match < 0 ? "HTTP header \"If-Match\" is missing, as \"CheckRevisions\" "
                                         "is \"true\""
                                       : "the revision in If-Match is not the current one");
        }
    }
    row_clear(&r);
    free(value);
}

/* DELETE /{level}/{id}/metadata/{name} */
void rest_delete_metadata(rest_request *req)
{
    char name[128], lv[4], rev[16];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user) || !is_user) {
        rest_reply_error(req, 400, 4, "Parameter out of range",
                         "only user metadata can be deleted");
        return;
    }
    long match = if_match(req);
    if (match == -2) {
        rest_reply_error(req, 400, 4, "Parameter out of range",
                         "the \"If-Match\" HTTP header should contain the revision as an integer");
        return;
    }
    snprintf(rev, sizeof(rev), "%ld", match);
    const char *params[] = {req->seg[1], lv, name, match >= 0 ? rev : NULL};
    row r = {&delete_metadata, params, 1, {0}};
    if (run(req, TS_DB_WRITE, &r)) {
        const char *status = r.col[0] ? r.col[0] : "";
        if (strcmp(status, "ok") == 0)
            rest_reply_text(req, 200, "", 0);
        else if (strcmp(status, "unknown_resource") == 0)
            rest_reply_unknown_resource(req);
        else if (strcmp(status, "not_found") == 0)
            rest_reply_error(req, 404, 7, "Accessing an inexistent item", NULL);
        else
            rest_reply_error(req, 409, 43, "The revision of a metadata or attachment is outdated",
                             match < 0 ? "HTTP header \"If-Match\" is missing, as \"CheckRevisions\" "
                                         "is \"true\""
                                       : "the revision in If-Match is not the current one");
    }
    row_clear(&r);
}
