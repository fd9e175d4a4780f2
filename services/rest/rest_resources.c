/* Resources: lists, single resources, navigation between levels, instance
 * contents (uploads are in rest_upload.c). Every read is one SQL round trip:
 * PostgreSQL builds the JSON (tessera_resource_json in db/migrations/0003_resource_json.sql). */
#include "rest_resources.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "base/ids.h"
#include "base/offset_cursors.h"
#include "base/log.h"
#include "rest_auth.h"
#include "rest_common.h"

/* "patients" -> 0 ... "instances" -> 3; -1 if unknown. Singular forms for
 * the parent routes ("patient", "study", "series"). */
static int level_of_plural(const char *s)
{
    static const char *const names[] = {"patients", "studies", "series", "instances"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static int level_of_singular(const char *s)
{
    static const char *const names[] = {"patient", "study", "series", "instance"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* ---- one-statement reads -------------------------------------------------- */

typedef struct read_one {
    const ts_db_stmt *stmt;
    const char *const *params;
    char *text;  /* first column of the first row, malloc'd; NULL if no row or NULL */
    char *text2; /* second column, when there is one */
    bool found;
} read_one;

static int read_one_txn(ts_db *db, void *arg, ts_err *err)
{
    read_one *r = arg;
    PGresult *res;
    int rc = ts_db_exec(db, r->stmt, r->params, &res, err);
    if (rc)
        return rc;
    free(r->text);
    free(r->text2);
    r->text = r->text2 = NULL;
    r->found = PQntuples(res) > 0;
    if (r->found && !PQgetisnull(res, 0, 0))
        r->text = strdup(PQgetvalue(res, 0, 0));
    if (r->found && PQnfields(res) > 1 && !PQgetisnull(res, 0, 1))
        r->text2 = strdup(PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

/* Runs stmt; on failure answers the request and returns false. */
static bool query(rest_request *req, const ts_db_stmt *stmt, const char *const *params,
                  read_one *out)
{
    memset(out, 0, sizeof(*out));
    out->stmt = stmt;
    out->params = params;
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ_SINGLE, read_one_txn, out, &err);
    if (rc) {
        ts_warn("read failed", "uri=%s error=\"%s\"", req->url, err.msg);
        rest_reply_failure(req, rc, err.msg);
        return false;
    }
    return true;
}

static void read_one_clear(read_one *r)
{
    free(r->text);
    free(r->text2);
}

/* A page of a list: the JSON and what the next cursor is made of. */
typedef struct list_page {
    const ts_db_stmt *stmt;
    const char *const *params;
    char *json;
    long long removals, last_id, count;
} list_page;

static int list_page_txn(ts_db *db, void *arg, ts_err *err)
{
    list_page *p = arg;
    PGresult *res;
    int rc = ts_db_exec(db, p->stmt, p->params, &res, err);
    if (rc)
        return rc;
    free(p->json);
    p->json = NULL;
    p->count = 0;
    if (PQntuples(res) > 0 && PQnfields(res) >= 4) {
        if (!PQgetisnull(res, 0, 0))
            p->json = strdup(PQgetvalue(res, 0, 0));
        p->removals = PQgetisnull(res, 0, 1) ? 0 : atoll(PQgetvalue(res, 0, 1));
        p->last_id = PQgetisnull(res, 0, 2) ? 0 : atoll(PQgetvalue(res, 0, 2));
        p->count = atoll(PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return 0;
}

/* ---- lists and single resources -------------------------------------------- */

/* The lists page by Orthanc's offset ("since"), answered from a keyset
 * cursor when this process has one for a position at or below it
 * (base/offset_cursors.h): $5/$6/$7 (list_ids; $6/$7/$8 for list_expanded)
 * are the cursor's removal count, id and the offset's distance from it. The
 * cursor is used only if the level's removal count is still the same, read in
 * the same snapshot; otherwise the offset counts from the start. The answer's
 * other columns are what the next cursor is made of: the removal count, the
 * last id and the number of resources on the page.
 * $4 (list_ids) / $5 (list_expanded): the labels of a label-scoped caller
 * (db/functions/labels.sql), else NULL; such lists take no cursor. */
#define LIST_REMOVALS                                                                              \
    "WITH g AS MATERIALIZED (SELECT sum(CASE $1::smallint WHEN 0 THEN patients_removed"            \
    " WHEN 1 THEN studies_removed WHEN 2 THEN series_removed ELSE instances_removed END)::bigint"  \
    " AS removals FROM statistics_counters) "
#define LIST_TAIL " (SELECT removals FROM g)::text, max(id)::text, count(*)::text FROM p"

static const ts_db_stmt list_ids = {
    "rest_list_ids",
    LIST_REMOVALS ", p AS (SELECT id, public_id FROM resources WHERE level = $1::smallint"
                  " AND ($4::text[] IS NULL OR tessera_visible(id, $4::text[], false))"
                  " AND id > (SELECT CASE WHEN removals = $5::bigint THEN $6::bigint ELSE -1 END"
                  " FROM g) ORDER BY id OFFSET (SELECT CASE WHEN removals = $5::bigint"
                  " THEN $7::bigint ELSE $2::bigint END FROM g) LIMIT $3::bigint)"
                  " SELECT coalesce(jsonb_agg(public_id ORDER BY id), '[]')," LIST_TAIL,
    7};

static const ts_db_stmt list_expanded = {
    "rest_list_expanded",
    LIST_REMOVALS ", p AS (SELECT id FROM resources WHERE level = $1::smallint"
                  " AND ($5::text[] IS NULL OR tessera_visible(id, $5::text[], false))"
                  " AND id > (SELECT CASE WHEN removals = $6::bigint THEN $7::bigint ELSE -1 END"
                  " FROM g) ORDER BY id OFFSET (SELECT CASE WHEN removals = $6::bigint"
                  " THEN $8::bigint ELSE $2::bigint END FROM g) LIMIT $3::bigint)"
                  " SELECT coalesce(jsonb_agg(tessera_resource_json(id, $4::integer) ORDER BY id),"
                  " '[]')," LIST_TAIL,
    8};

static const ts_db_stmt get_resource = {
    "rest_get_resource",
    "SELECT tessera_resource_json(id, $3::integer) FROM resources"
    " WHERE public_id = $1 AND level = $2::smallint",
    3};

/* The same for a label-scoped caller, $4 its labels: what it may not see is
 * not found (REST_SCOPE_IN_SQL: no check of its own before, one round trip).
 * Used when the replica's visibility cache does not know the answer yet
 * (rest_auth_visibility_known): a row found is remembered as visible.
 * A statement of its own, not "$4 IS NULL OR ..." in the one above: with the
 * callers of a replica mixed, PostgreSQL compared the generic plan with the
 * custom plans of NULL (which drop the test) and planned every execution
 * again (pg_prepared_statements: no generic plan), and planning it costs more
 * than running it (EXPLAIN ANALYZE: 55-100 us against 45 us). */
static const ts_db_stmt get_resource_visible = {
    "rest_get_resource_visible",
    "SELECT tessera_resource_json(r.id, $3::integer) FROM resources r"
    " WHERE r.public_id = $1 AND r.level = $2::smallint"
    " AND " REST_VISIBLE_SQL("r", "$4::text[]"),
    4};

/* Descendants at a deeper level, expanded, as Orthanc's navigation routes answer;
 * the second column says whether the starting resource exists. */
static const ts_db_stmt get_descendants = {
    "rest_get_descendants",
    "WITH RECURSIVE d(id, level) AS ("
    " SELECT id, level FROM resources WHERE public_id = $1 AND level = $2::smallint"
    " UNION ALL SELECT c.id, c.level FROM resources c JOIN d ON c.parent_id = d.id"
    " WHERE d.level < $3::smallint)"
    " SELECT coalesce(jsonb_agg(tessera_resource_json(id, $4::integer) ORDER BY id)"
    "   FILTER (WHERE level = $3::smallint), '[]'),"
    " (count(*) FILTER (WHERE level = $2::smallint))::text FROM d",
    4};

static const ts_db_stmt get_ancestor = {
    "rest_get_ancestor",
    "WITH RECURSIVE a(id, parent_id, level) AS ("
    " SELECT id, parent_id, level FROM resources WHERE public_id = $1 AND level = $2::smallint"
    " UNION ALL SELECT r.id, r.parent_id, r.level FROM resources r JOIN a ON r.id = a.parent_id)"
    " SELECT tessera_resource_json(id, $4::integer) FROM a WHERE level = $3::smallint",
    4};

static void level_param(char buf[4], int level)
{
    snprintf(buf, 4, "%d", level);
}

/* GET /patients, /studies, /series, /instances [?expand] [?since=N] [?limit=N] */
void rest_list_resources(rest_request *req)
{
    int level = level_of_plural(req->seg[0]);
    /* Orthanc: "since" and "limit" go together; each must be an integer. */
    bool has_since = rest_arg(req, "since") != NULL, has_limit = rest_arg(req, "limit") != NULL;
    if (has_since != has_limit) {
        char details[1200];
        /* Orthanc writes the route with a trailing slash */
        snprintf(details, sizeof(details), "Missing \"%s\" argument for GET request against: %s/",
                 has_since ? "limit" : "since", req->url);
        rest_reply_oe(req, TS_OE_BAD_REQUEST, details);
        return;
    }
    long since = rest_arg_long(req, "since", 0);
    long limit = rest_arg_long(req, "limit", -2);
    if (since < 0 || limit == -1) {
        rest_reply_oe(req, TS_OE_BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data");
        return;
    }
    char lv[4], since_s[24], limit_s[24], age[16];
    level_param(lv, level);
    snprintf(since_s, sizeof(since_s), "%ld", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    snprintf(age, sizeof(age), "%d", req->ctx->stable_age_s);
    /* a label-scoped caller lists what it may see (rest_http.h, REST_SCOPE_FILTERED) */
    char labels[REST_MAX_GRANTS * 66 + 3];
    const char *scope = NULL;
    if (req->who && req->who->restricted) {
        size_t n = (size_t)snprintf(labels, sizeof(labels), "{");
        for (size_t i = 0; i < req->who->nlabels; i++)
            n += (size_t)snprintf(labels + n, sizeof(labels) - n, "%s%s", i ? "," : "",
                                  req->who->labels[i]);
        snprintf(labels + n, sizeof(labels) - n, "}");
        scope = labels;
    }
    bool expand = rest_flag(req, "expand");
    /* a cursor for this offset, unless the caller's list is filtered by labels */
    ts_offset_cursor cur;
    bool have_cursor = !scope && ts_offset_cursor_find(level, since, &cur);
    char removals_s[24], after_s[24], skip_s[24];
    if (have_cursor) {
        snprintf(removals_s, sizeof(removals_s), "%lld", cur.removals);
        snprintf(after_s, sizeof(after_s), "%lld", cur.after_id);
        snprintf(skip_s, sizeof(skip_s), "%lld", (long long)since - cur.position);
    }
    const char *c_removals = have_cursor ? removals_s : NULL,
               *c_after = have_cursor ? after_s : NULL, *c_skip = have_cursor ? skip_s : NULL;
    const char *limit_p = limit == -2 ? NULL : limit_s;
    const char *ids_params[] = {lv, since_s, limit_p, scope, c_removals, c_after, c_skip};
    const char *expanded_params[] = {lv, since_s, limit_p, age, scope, c_removals, c_after, c_skip};
    list_page page = {0};
    page.stmt = expand ? &list_expanded : &list_ids;
    page.params = expand ? expanded_params : ids_params;
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ_SINGLE, list_page_txn, &page, &err);
    if (rc) {
        ts_warn("read failed", "uri=%s error=\"%s\"", req->url, err.msg);
        rest_reply_failure(req, rc, err.msg);
        free(page.json);
        return;
    }
    if (!scope && page.count > 0) {
        ts_offset_cursor next = {since + page.count, page.last_id, page.removals};
        ts_offset_cursor_put(level, &next);
    }
    rest_reply_json_text(req, 200, page.json ? page.json : "[]", page.json ? strlen(page.json) : 2);
    free(page.json);
}

/* GET /{level}/{id} */
void rest_get_resource(rest_request *req)
{
    int level = level_of_plural(req->seg[0]);
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_empty(req, 404);
        return;
    }
    char lv[4], age[16];
    level_param(lv, level);
    snprintf(age, sizeof(age), "%d", req->ctx->stable_age_s);
    char labels[REST_LABELS_LITERAL_MAX];
    const char *scope = rest_auth_visible_labels(req, labels, sizeof(labels));
    rest_vis_ticket ticket;
    int known = scope ? rest_auth_visibility_known(req, req->seg[1], lv, &ticket) : -1;
    if (known == 0) { /* what an unknown id gets */
        rest_reply_empty(req, 404);
        return;
    }
    if (known == 1)
        scope = NULL; /* seen lately: read as for an unrestricted caller */
    const char *params[] = {req->seg[1], lv, age, scope};
    read_one r;
    if (!query(req, scope ? &get_resource_visible : &get_resource, params, &r))
        return;
    if (scope && r.text)
        rest_auth_visibility_learned(req, req->seg[1], lv, &ticket);
    if (!r.text)
        rest_reply_empty(req, 404);
    else
        rest_reply_json_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}

/* GET /{level}/{id}/{children-or-parent}: /studies/{id}/series, /instances/{id}/patient, ... */
void rest_navigate(rest_request *req)
{
    int level = level_of_plural(req->seg[0]);
    int target = level_of_plural(req->seg[2]);
    bool plural = target >= 0;
    if (!plural)
        target = level_of_singular(req->seg[2]);
    /* "series" is both: below a study or patient it means children; above an instance, the parent
     */
    if (target == 2 && level == 3)
        plural = false;
    if (target < 0 || (plural && target <= level) || (!plural && target >= level)) {
        req->status = 404;
        return;
    }
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    char lv[4], tv[4], age[16];
    level_param(lv, level);
    level_param(tv, target);
    snprintf(age, sizeof(age), "%d", req->ctx->stable_age_s);
    const char *params[] = {req->seg[1], lv, tv, age};
    read_one r;
    if (!query(req, plural ? &get_descendants : &get_ancestor, params, &r))
        return;
    bool exists = plural ? (r.text2 && strcmp(r.text2, "0") != 0) : r.text != NULL;
    if (!exists)
        rest_reply_unknown_resource(req);
    else
        rest_reply_json_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}

/* ---- instance contents -------------------------------------------------------- */

static const ts_db_stmt get_dicom_file = {
    "rest_get_dicom_file",
    "SELECT a.uuid::text, a.uncompressed_size::text FROM attachments a"
    " JOIN resources r ON r.id = a.resource_id"
    " WHERE r.public_id = $1 AND r.level = 3 AND a.content_type = 1",
    1};

/* Finds the instance's DICOM file (and its uuid, when uuid is not NULL);
 * answers 404 itself. */
static bool instance_path(rest_request *req, char *path, size_t size, char *uuid)
{
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return false;
    }
    const char *params[] = {req->seg[1]};
    read_one r;
    if (!query(req, &get_dicom_file, params, &r))
        return false;
    ts_err err;
    bool ok = r.text && ts_store_path(req->ctx->store, r.text, path, size, &err) == 0;
    if (ok && uuid)
        snprintf(uuid, TS_UUID_LEN + 1, "%s", r.text);
    if (!ok)
        rest_reply_unknown_resource(req);
    read_one_clear(&r);
    return ok;
}

/* GET /instances/{id}/file: streamed from the storage area, never held in memory. */
/* ?transcode=UID (Orthanc 1.11+; 1.10.1 ignores the argument and sends the
 * file as stored): an unknown UID is 400 "Parameter out of range", a
 * conversion without a codec or of pixel data that do not decode 500
 * "Internal error" (Orthanc's answers); lossy targets are allowed and give a
 * new SOP Instance UID, as Orthanc's. The stored syntax: the file as is. */
static bool reply_transcoded(rest_request *req, const char *path, const char *uid)
{
    char details[600];
    if (!ts_transfer_syntax_known(uid)) {
        snprintf(details, sizeof(details), "Unknown transfer syntax: %s", uid);
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return true;
    }
    void *out;
    size_t len;
    ts_err err;
    int rc = ts_dicom_transcode_file(path, uid, TS_TRANSCODE_ALLOW_LOSSY, &out, &len, &err);
    if (rc == 0 && !out)
        return false; /* already in that syntax */
    if (rc) {
        ts_info("transcoding failed", "path=%s to=%s error=\"%s\"", path, uid, err.msg);
        snprintf(details, sizeof(details), "Cannot transcode to transfer syntax: %s (%s)", uid,
                 err.msg);
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, details);
        return true;
    }
    rest_reply_owned(req, 200, out, len, "application/dicom");
    return true;
}

void rest_instance_file(rest_request *req)
{
    char path[4096], uuid[TS_UUID_LEN + 1];
    if (!instance_path(req, path, sizeof(path), uuid))
        return;
    /* Orthanc answers the DICOM JSON model to exactly this Accept, the file to
     * any other */
    const char *accept = rest_header(req, "Accept");
    if (accept && strcmp(accept, "application/dicom+json") == 0) {
        ts_dicom *d;
        ts_err err;
        if (ts_dicom_open_file(path, &d, &err)) {
            rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
            return;
        }
        json_t *body = ts_dicom_to_dicom_json_inline(d);
        ts_dicom_free(d);
        rest_reply_json(req, 200, body);
        req->content_type = "application/dicom+json";
        return;
    }
    const char *transcode = rest_arg(req, "transcode");
    if (transcode && reply_transcoded(req, path, transcode)) {
        if (req->status == 200)
            snprintf(req->disposition, sizeof(req->disposition), "filename=\"%s.dcm\"", uuid);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        /* deleted between the query and now */
        if (fd >= 0)
            close(fd);
        ts_warn("indexed file missing", "path=%s error=\"%s\"", path, strerror(errno));
        rest_reply_unknown_resource(req);
        return;
    }
    rest_reply_file(req, fd, (size_t)st.st_size, "application/dicom");
    snprintf(req->disposition, sizeof(req->disposition), "filename=\"%s.dcm\"", uuid);
}

/* GET /instances/{id}/tags [?simplify|?short], /instances/{id}/simplified-tags,
 * /instances/{id}/header [?simplify|?short]; ?ignore-length=<tags> for the first two */
void rest_instance_tags(rest_request *req)
{
    char path[4096];
    if (!instance_path(req, path, sizeof(path), NULL))
        return;
    uint32_t *full_length;
    size_t nfull;
    if (!rest_arg_tags(req, "ignore-length", &full_length, &nfull))
        return;
    ts_dicom *d;
    ts_err err;
    if (ts_dicom_open_file(path, &d, &err)) {
        free(full_length);
        rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
        return;
    }
    bool simplify = strcmp(req->seg[2], "simplified-tags") == 0 || rest_flag(req, "simplify");
    json_t *full = strcmp(req->seg[2], "header") == 0
                       ? ts_dicom_header_to_orthanc_json(d)
                       : ts_dicom_to_orthanc_json_full(d, full_length, nfull);
    ts_dicom_free(d);
    free(full_length);
    json_t *body = simplify                  ? ts_dicom_orthanc_simplify(full)
                   : rest_flag(req, "short") ? rest_short_tags(full)
                                             : json_incref(full);
    json_decref(full);
    rest_reply_json(req, 200, body);
}

/* ---- lookup and per-resource statistics ----------------------------------------- */

static const ts_db_stmt lookup = {
    "rest_lookup",
    "SELECT coalesce(jsonb_agg(jsonb_build_object("
    "  'ID', r.public_id,"
    "  'Path', '/' || (ARRAY['patients','studies','series','instances'])[r.level + 1] || '/' || "
    "r.public_id,"
    "  'Type', (ARRAY['Patient','Study','Series','Instance'])[r.level + 1]) ORDER BY r.level, "
    "r.id), '[]')"
    " FROM resources r WHERE r.id IN ("
    "  SELECT resource_id FROM patients WHERE tessera_fold(patient_id) = tessera_fold($1)"
    "  UNION SELECT resource_id FROM studies WHERE study_instance_uid = $1"
    "  UNION SELECT resource_id FROM series WHERE series_instance_uid = $1"
    "  UNION SELECT resource_id FROM instances WHERE sop_instance_uid = $1)",
    1};

/* POST /tools/lookup: the body is a PatientID or a Study/Series/SOP Instance UID,
 * white space around it ignored. The PatientID is found without case, as Orthanc
 * does (folded by Unicode's rules: migration 0009 indexes it); UIDs hold no
 * letters and are compared as they are. */
void rest_tools_lookup(rest_request *req)
{
    char value[256];
    size_t n;
    const char *s = rest_body_trimmed(req, &n);
    if (n == 0 || n >= sizeof(value)) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "the body must be one DICOM identifier");
        return;
    }
    memcpy(value, s, n);
    value[n] = '\0';
    /* no identifier is other than text: Orthanc finds nothing for such a body
     * (PostgreSQL would refuse it as a parameter) */
    json_t *as_text = json_stringn(value, n);
    if (!as_text) {
        rest_reply_json_text(req, 200, "[]", 2);
        return;
    }
    json_decref(as_text);
    const char *params[] = {value};
    read_one r;
    if (!query(req, &lookup, params, &r))
        return;
    rest_reply_json_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}

static const ts_db_stmt resource_statistics = {
    "rest_resource_statistics",
    "WITH RECURSIVE d(id, level) AS ("
    " SELECT id, level FROM resources WHERE public_id = $1 AND level = $2::smallint"
    " UNION ALL SELECT c.id, c.level FROM resources c JOIN d ON c.parent_id = d.id),"
    " s AS (SELECT"
    "   count(*) FILTER (WHERE d.level = $2::smallint) AS found,"
    "   count(*) FILTER (WHERE d.level = 1) AS studies,"
    "   count(*) FILTER (WHERE d.level = 2) AS series,"
    "   count(*) FILTER (WHERE d.level = 3) AS instances,"
    "   coalesce(sum(a.compressed_size), 0)::bigint AS disk,"
    "   coalesce(sum(a.uncompressed_size), 0)::bigint AS raw,"
    "   coalesce(sum(a.compressed_size) FILTER (WHERE a.content_type = 1), 0)::bigint AS dicom,"
    "   coalesce(sum(a.uncompressed_size) FILTER (WHERE a.content_type = 1), 0)::bigint"
    "    AS dicom_raw"
    "  FROM d LEFT JOIN attachments a ON a.resource_id = d.id)"
    " SELECT jsonb_strip_nulls(jsonb_build_object("
    "   'CountStudies', CASE WHEN $2::smallint = 0 THEN studies END,"
    "   'CountSeries', CASE WHEN $2::smallint <= 1 THEN series END,"
    "   'CountInstances', CASE WHEN $2::smallint <= 2 THEN instances END,"
    "   'DiskSize', disk::text, 'DiskSizeMB', disk / 1048576,"
    "   'UncompressedSize', raw::text, 'UncompressedSizeMB', raw / 1048576,"
    "   'DicomDiskSize', dicom::text, 'DicomDiskSizeMB', dicom / 1048576,"
    "   'DicomUncompressedSize', dicom_raw::text, 'DicomUncompressedSizeMB', dicom_raw / 1048576)),"
    " found::text FROM s",
    2};

/* GET /{level}/{id}/statistics */
void rest_resource_statistics(rest_request *req)
{
    int level = level_of_plural(req->seg[0]);
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    char lv[4];
    level_param(lv, level);
    const char *params[] = {req->seg[1], lv};
    read_one r;
    if (!query(req, &resource_statistics, params, &r))
        return;
    if (!r.text2 || strcmp(r.text2, "0") == 0)
        rest_reply_unknown_resource(req);
    else
        rest_reply_json_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}

/* ---- protection against recycling ----------------------------------------------- */

static const ts_db_stmt get_protected = {
    "rest_get_protected",
    "SELECT CASE WHEN p.protected THEN '1' ELSE '0' END FROM resources r"
    " JOIN patients p ON p.resource_id = r.id WHERE r.public_id = $1 AND r.level = 0",
    1};

static const ts_db_stmt set_protected = {
    "rest_set_protected",
    "UPDATE patients p SET protected = $2::boolean FROM resources r"
    " WHERE r.public_id = $1 AND r.level = 0 AND p.resource_id = r.id RETURNING '1'",
    2};

/* GET/PUT /patients/{id}/protected: Orthanc's flag against recycling, "0" or
 * "1" (PUT also takes "true"/"false", white space around ignored). Tessera
 * recycles nothing; the flag is kept for the clients that set and read it.
 * Orthanc answers an unknown patient with 400 "Parameter out of range". */
void rest_patient_protected(rest_request *req)
{
    bool put = strcmp(req->method, "PUT") == 0;
    const char *value = NULL;
    if (put) {
        size_t n;
        const char *s = rest_body_trimmed(req, &n);
        if ((n == 1 && s[0] == '1') || (n == 4 && strncmp(s, "true", 4) == 0))
            value = "true";
        else if ((n == 1 && s[0] == '0') || (n == 5 && strncmp(s, "false", 5) == 0))
            value = "false";
        if (!value) {
            rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected");
            return;
        }
    }
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
        return;
    }
    const char *params[] = {req->seg[1], value};
    read_one r;
    if (put) {
        rest_row row = {.stmt = &set_protected, .params = params, .ncols = 1};
        if (!rest_row_query(req, TS_DB_WRITE, &row))
            return;
        bool found = row.col[0] != NULL;
        rest_row_clear(&row);
        if (!found)
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
        else
            rest_reply_text(req, 200, "", 0);
        return;
    }
    if (!query(req, &get_protected, params, &r))
        return;
    if (!r.text)
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
    else
        rest_reply_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}
