/* Metadata of every level, with Orthanc's revisions: GET answers an ETag
 * "<revision>-<md5 of the value>"; PUT and DELETE of a metadata that exists
 * need If-Match with the current revision, else 409 (CheckRevisions: true). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_metadata.h"

/* Orthanc's system metadata: readable, not writable through the API. */
static const char *const system_names[] = {"IndexInSeries",
                                           "ReceptionDate",
                                           "RemoteAET",
                                           "ExpectedNumberOfInstances",
                                           "ModifiedFrom",
                                           "AnonymizedFrom",
                                           "LastUpdate",
                                           "Origin",
                                           "TransferSyntax",
                                           "SopClassUid",
                                           "RemoteIP",
                                           "CalledAET",
                                           "HttpUsername",
                                           "PixelDataOffset",
                                           "MainDicomTagsSignature"};

/* User metadata come from TESSERA_USER_METADATA ("Name=1024,Other=1025"); a
 * name may also be given by its number. Writes *canonical (the stored name).
 * Returns false for names that are neither system nor user metadata. */
#define N_SYSTEM (sizeof(system_names) / sizeof(system_names[0]))

static bool resolve_name(const char *given, char *canonical, size_t size, bool *is_user)
{
    *is_user = false;
    char *end;
    long number = strtol(given, &end, 10);
    bool numeric = *given && !*end;
    for (size_t i = 0; i < N_SYSTEM; i++) {
        /* by name, or by Orthanc's number (its MetadataType: the order above) */
        if (strcmp(given, system_names[i]) == 0 || (numeric && number == (long)i + 1)) {
            snprintf(canonical, size, "%s", system_names[i]);
            return true;
        }
    }
    size_t n;
    const ts_cfg_pair *user = ts_cfg_pairs(TESSERA_USER_METADATA, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(given, user[i].name) == 0 || (numeric && user[i].number == number)) {
            snprintf(canonical, size, "%s", user[i].name);
            *is_user = true;
            return true;
        }
    }
    if (numeric && number >= 1024 && number <= 65535) {
        snprintf(canonical, size, "%ld", number);
        *is_user = true;
        return true;
    }
    return false;
}

/* Orthanc's number of a stored name (the order Orthanc lists them in). */
static long number_of(const char *name)
{
    for (size_t i = 0; i < N_SYSTEM; i++)
        if (strcmp(name, system_names[i]) == 0)
            return (long)i + 1;
    const char *p = ts_cfg_str(TESSERA_USER_METADATA);
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq && (size_t)(eq - p) == strlen(name) && strncmp(name, p, (size_t)(eq - p)) == 0)
            return strtol(eq + 1, NULL, 10);
        p = comma ? comma + 1 : NULL;
    }
    char *end;
    long number = strtol(name, &end, 10);
    return *name && !*end ? number : 1L << 30;
}

static int by_number(const void *a, const void *b)
{
    long x = number_of(*(const char *const *)a), y = number_of(*(const char *const *)b);
    return x < y ? -1 : x > y ? 1 : strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
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
    /* LastUpdate of a patient/study/series is the resource's column */
    "SELECT r.id IS NOT NULL,"
    " CASE WHEN $3 = 'LastUpdate' AND r.level < 3 THEN tessera_orthanc_time(r.last_update)"
    "  ELSE m.value END,"
    " CASE WHEN $3 = 'LastUpdate' AND r.level < 3 THEN '0' ELSE m.revision::text END"
    " FROM (SELECT 1) one LEFT JOIN resources r ON r.public_id = $1 AND r.level = $2::smallint"
    " LEFT JOIN metadata m ON m.resource_id = r.id AND m.name = $3",
    3};

static const ts_db_stmt put_metadata = {
    "rest_put_metadata",
    "SELECT status, revision::text FROM tessera_put_metadata($1, $2::smallint, $3, $4,"
    " $5::integer, $6)",
    6};

static const ts_db_stmt delete_metadata = {
    "rest_delete_metadata",
    "SELECT status FROM tessera_delete_metadata($1, $2::smallint, $3, $4::integer, $5)", 5};

/* ---- routes ----------------------------------------------------------------- */

/* GET /{level}/{id}/metadata [?expand] */
void rest_list_metadata(rest_request *req)
{
    char lv[4];
    snprintf(lv, sizeof(lv), "%d", rest_level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    const char *params[] = {req->seg[1], lv};
    rest_row r = {&list_metadata, params, 2, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "t") != 0) {
        rest_reply_unknown_resource(req);
    } else {
        /* Orthanc lists the names in the order of their numbers, and writes
         * the object of ?expand with its keys sorted */
        json_t *all = json_loads(r.col[1], 0, NULL);
        bool expand = rest_flag(req, "expand");
        size_t n = json_object_size(all), i = 0;
        const char **keys = calloc(n + 1, sizeof(*keys));
        if (!keys)
            abort();
        const char *key;
        json_t *v;
        json_object_foreach(all, key, v) keys[i++] = key;
        qsort(keys, n, sizeof(*keys), expand ? by_name : by_number);
        json_t *out = expand ? json_object() : json_array();
        for (i = 0; i < n; i++) {
            if (expand)
                json_object_set(out, keys[i], json_object_get(all, keys[i]));
            else
                json_array_append_new(out, json_string(keys[i]));
        }
        free(keys);
        json_decref(all);
        rest_reply_json(req, 200, out);
    }
    rest_row_clear(&r);
}

/* GET /{level}/{id}/metadata/{name} */
void rest_get_metadata(rest_request *req)
{
    char name[128], lv[4];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", rest_level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user)) {
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, NULL);
        return;
    }
    const char *params[] = {req->seg[1], lv, name};
    rest_row r = {&get_metadata, params, 3, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "t") != 0)
        rest_reply_unknown_resource(req);
    else if (!r.col[1])
        rest_reply_empty(req, 404); /* a name the resource has not: Orthanc's empty 404 */
    else {
        char md5[33];
        rest_md5_hex(r.col[1], strlen(r.col[1]), md5);
        if (!rest_etag_read(req, r.col[2] ? r.col[2] : "0", md5))
            rest_reply_text(req, 200, r.col[1], strlen(r.col[1]));
    }
    rest_row_clear(&r);
}

/* PUT /{level}/{id}/metadata/{name}: the body is the value. */
void rest_put_metadata(rest_request *req)
{
    char name[128], lv[4];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", rest_level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user) || !is_user) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "only user metadata (TESSERA_USER_METADATA, or 1024..65535) can be set");
        return;
    }
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    char *value = strndup(req->body ? req->body : "", req->body_len);
    if (!value || strlen(value) != req->body_len) {
        free(value);
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "a metadata value is text without NUL bytes");
        return;
    }
    const char *params[] = {req->seg[1],
                            lv,
                            name,
                            value,
                            match.given ? match.revision : NULL,
                            match.given ? match.md5 : NULL};
    rest_row r = {&put_metadata, params, 2, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        const char *status = r.col[0] ? r.col[0] : "";
        if (strcmp(status, "ok") == 0) {
            rest_set_etag(req, r.col[1], value, strlen(value));
            rest_reply_text(req, 200, "", 0);
        } else if (strcmp(status, "unknown_resource") == 0) {
            rest_reply_unknown_resource(req);
        } else {
            rest_reply_revision_conflict(req, match.given);
        }
    }
    rest_row_clear(&r);
    free(value);
}

/* DELETE /{level}/{id}/metadata/{name} */
void rest_delete_metadata(rest_request *req)
{
    char name[128], lv[4];
    bool is_user;
    snprintf(lv, sizeof(lv), "%d", rest_level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!resolve_name(req->seg[3], name, sizeof(name), &is_user) || !is_user) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, "only user metadata can be deleted");
        return;
    }
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    const char *params[] = {req->seg[1], lv, name, match.given ? match.revision : NULL,
                            match.given ? match.md5 : NULL};
    rest_row r = {&delete_metadata, params, 1, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        const char *status = r.col[0] ? r.col[0] : "";
        if (strcmp(status, "ok") == 0)
            rest_reply_text(req, 200, "", 0);
        else if (strcmp(status, "unknown_resource") == 0)
            rest_reply_unknown_resource(req);
        else if (strcmp(status, "not_found") == 0)
            rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, NULL);
        else
            rest_reply_revision_conflict(req, match.given);
    }
    rest_row_clear(&r);
}
