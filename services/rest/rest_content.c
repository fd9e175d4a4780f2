/* Shared tags and tag paths, as Orthanc 1.10.1 answers them. One SQL round
 * trip finds the files; the rest is read from the storage area. */
#include "rest_content.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dicom.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_common.h"

/* The DICOM files of every instance under a resource; one row of NULL when the
 * resource has no instance, no row when it does not exist. */
static const ts_db_stmt instance_files = {
    "rest_content_instance_files",
    "WITH RECURSIVE root AS ("
    "  SELECT id, level FROM resources WHERE public_id = $1 AND level = $2::smallint),"
    " d(id, level) AS (SELECT id, level FROM root"
    "  UNION ALL SELECT c.id, c.level FROM resources c JOIN d ON c.parent_id = d.id"
    "  WHERE d.level < 3),"
    " f AS (SELECT a.uuid::text AS uuid, d.id FROM d"
    "  JOIN attachments a ON a.resource_id = d.id AND a.content_type = 1 WHERE d.level = 3)"
    " SELECT f.uuid, r.public_id FROM root LEFT JOIN f ON true"
    " LEFT JOIN resources r ON r.id = f.id ORDER BY f.id",
    2};

/* The same for one instance (every /instances/{id}/... file route, /rendered
 * among them): a plain join, no recursion to plan. With the BEGIN/COMMIT gone
 * (list_files), 0.19 -> 0.08 ms per lookup (pgbench, one client). */
static const ts_db_stmt instance_file = {
    "rest_content_instance_file",
    "SELECT a.uuid::text, r.public_id FROM resources r"
    " LEFT JOIN attachments a ON a.resource_id = r.id AND a.content_type = 1"
    " WHERE r.public_id = $1 AND r.level = 3",
    1};

typedef struct file_list {
    const ts_db_stmt *stmt;
    const char *const *params;
    bool found;
    char (*uuids)[TS_UUID_LEN + 1];
    char (*ids)[TS_ID_LEN + 1]; /* the instances' public ids */
    size_t n;
} file_list;

static void file_list_clear(file_list *fl)
{
    free(fl->uuids);
    free(fl->ids);
    fl->uuids = NULL;
    fl->ids = NULL;
    fl->n = 0;
}

static int file_list_txn(ts_db *db, void *arg, ts_err *err)
{
    file_list *fl = arg;
    PGresult *res;
    int rc = ts_db_exec(db, fl->stmt, fl->params, &res, err);
    if (rc)
        return rc;
    free(fl->uuids);
    free(fl->ids);
    fl->n = 0;
    fl->found = PQntuples(res) > 0;
    fl->uuids = malloc(((size_t)PQntuples(res) + 1) * sizeof(*fl->uuids));
    fl->ids = malloc(((size_t)PQntuples(res) + 1) * sizeof(*fl->ids));
    if (!fl->uuids || !fl->ids)
        abort();
    for (int i = 0; i < PQntuples(res); i++) {
        const char *u = PQgetvalue(res, i, 0);
        const char *id = PQgetvalue(res, i, 1);
        if (!PQgetisnull(res, i, 0) && strlen(u) == TS_UUID_LEN && strlen(id) == TS_ID_LEN) {
            memcpy(fl->uuids[fl->n], u, TS_UUID_LEN + 1);
            memcpy(fl->ids[fl->n++], id, TS_ID_LEN + 1);
        }
    }
    PQclear(res);
    return 0;
}

/* The files under the resource of the request (level from seg[0], id from
 * seg[1]); answers the request itself and returns false on failure. */
static bool list_files(rest_request *req, int level, file_list *fl)
{
    memset(fl, 0, sizeof(*fl));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return false;
    }
    char lv[4];
    snprintf(lv, sizeof(lv), "%d", level);
    const char *params[] = {req->seg[1], lv};
    fl->stmt = level == 3 ? &instance_file : &instance_files;
    fl->params = params;
    ts_err err;
    /* one statement: no BEGIN/COMMIT around it, one round trip */
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ_SINGLE, file_list_txn, fl, &err);
    fl->params = NULL;
    if (rc) {
        ts_warn("read failed", "uri=%s error=\"%s\"", req->url, err.msg);
        rest_reply_failure(req, rc, err.msg);
        file_list_clear(fl);
        return false;
    }
    if (!fl->found) {
        rest_reply_unknown_resource(req);
        file_list_clear(fl);
        return false;
    }
    return true;
}

/* The instance file of the list's i-th entry, parsed; NULL when it is gone
 * (removed since the list was made: Orthanc skips such an instance). */
static ts_dicom *open_listed(rest_request *req, const file_list *fl, size_t i, const char *what)
{
    char path[4096];
    ts_err err;
    ts_dicom *d;
    if (ts_store_path(req->ctx->store, fl->uuids[i], path, sizeof(path), &err))
        return NULL;
    if (ts_dicom_open_file(path, &d, &err)) {
        ts_warn("instance file unreadable", "route=%s uuid=%s error=\"%s\"", what, fl->uuids[i],
                err.msg);
        return NULL;
    }
    return d;
}

/* ---- shared tags -------------------------------------------------------------- */

/* Orthanc keeps the tags of type "String" only. */
static void keep_strings(json_t *tags)
{
    const char *key;
    json_t *tag, *tmp;
    json_object_foreach_safe(tags, tmp, key, tag)
    {
        const char *type = json_string_value(json_object_get(tag, "Type"));
        if (!type || strcmp(type, "String") != 0)
            json_object_del(tags, key);
    }
}

/* Removes from shared what tags does not have with the same value. */
static void intersect(json_t *shared, json_t *tags)
{
    const char *key;
    json_t *tag, *tmp;
    json_object_foreach_safe(shared, tmp, key, tag)
    {
        json_t *other = json_object_get(tags, key);
        const char *a = json_string_value(json_object_get(tag, "Value"));
        const char *b = other ? json_string_value(json_object_get(other, "Value")) : NULL;
        if (!a || !b || strcmp(a, b) != 0)
            json_object_del(shared, key);
    }
}

void rest_shared_tags(rest_request *req)
{
    file_list fl;
    if (!list_files(req, rest_level_of_plural(req->seg[0]), &fl))
        return;
    json_t *shared = NULL;
    for (size_t i = 0; i < fl.n; i++) {
        ts_dicom *d = open_listed(req, &fl, i, "shared-tags");
        if (!d)
            continue;
        json_t *tags = ts_dicom_to_orthanc_json(d);
        ts_dicom_free(d);
        keep_strings(tags);
        if (!shared) {
            shared = tags;
        } else {
            intersect(shared, tags);
            json_decref(tags);
        }
    }
    file_list_clear(&fl);
    if (!shared)
        shared = json_object();
    json_t *body;
    if (rest_flag(req, "simplify")) {
        body = ts_dicom_orthanc_simplify(shared);
    } else if (rest_flag(req, "short")) {
        body = json_object();
        const char *key;
        json_t *tag;
        json_object_foreach(shared, key, tag)
            json_object_set(body, key, json_object_get(tag, "Value"));
    } else {
        body = json_incref(shared);
    }
    json_decref(shared);
    rest_reply_json(req, 200, body);
}

/* GET /{level}/{id}/instances-tags [?simplify|?short] [?ignore-length=...]: each
 * instance's /tags by its public id, as Orthanc 1.10.1. */
void rest_instances_tags(rest_request *req)
{
    uint32_t *full_length;
    size_t nfull;
    if (!rest_arg_tags(req, "ignore-length", &full_length, &nfull))
        return;
    file_list fl;
    if (!list_files(req, rest_level_of_plural(req->seg[0]), &fl)) {
        free(full_length);
        return;
    }
    bool simplify = rest_flag(req, "simplify"), brief = rest_flag(req, "short");
    json_t *body = json_object();
    for (size_t i = 0; i < fl.n; i++) {
        ts_dicom *d = open_listed(req, &fl, i, "instances-tags");
        if (!d)
            continue;
        json_t *full = ts_dicom_to_orthanc_json_full(d, full_length, nfull);
        ts_dicom_free(d);
        json_t *tags = simplify ? ts_dicom_orthanc_simplify(full)
                       : brief  ? rest_short_tags(full)
                                : json_incref(full);
        json_decref(full);
        json_object_set_new(body, fl.ids[i], tags);
    }
    file_list_clear(&fl);
    free(full_length);
    rest_reply_json(req, 200, body);
}

/* ---- modules ---------------------------------------------------------------------- */

/* The attributes of the module Orthanc 1.10.1 answers for each level (PS3.3:
 * C.7-1 Patient with the Issuer of Patient ID macro, C.7-3 General Study, C.7-5
 * General Series with the Performed Procedure Step Summary macro, C.12-1 SOP
 * Common with the Digital Signatures macro). */
static const uint32_t patient_module[] = {
    TS_TAG(0x0008, 0x1120), TS_TAG(0x0010, 0x0010), TS_TAG(0x0010, 0x0020), TS_TAG(0x0010, 0x0021),
    TS_TAG(0x0010, 0x0024), TS_TAG(0x0010, 0x0030), TS_TAG(0x0010, 0x0032), TS_TAG(0x0010, 0x0040),
    TS_TAG(0x0010, 0x1000), TS_TAG(0x0010, 0x1001), TS_TAG(0x0010, 0x1002), TS_TAG(0x0010, 0x2160),
    TS_TAG(0x0010, 0x2201), TS_TAG(0x0010, 0x2202), TS_TAG(0x0010, 0x2292), TS_TAG(0x0010, 0x2293),
    TS_TAG(0x0010, 0x2294), TS_TAG(0x0010, 0x2297), TS_TAG(0x0010, 0x2298), TS_TAG(0x0010, 0x2299),
    TS_TAG(0x0010, 0x4000), TS_TAG(0x0012, 0x0062), TS_TAG(0x0012, 0x0063), TS_TAG(0x0012, 0x0064),
};
static const uint32_t study_module[] = {
    TS_TAG(0x0008, 0x0020), TS_TAG(0x0008, 0x0030), TS_TAG(0x0008, 0x0050), TS_TAG(0x0008, 0x0051),
    TS_TAG(0x0008, 0x0090), TS_TAG(0x0008, 0x0096), TS_TAG(0x0008, 0x1030), TS_TAG(0x0008, 0x1032),
    TS_TAG(0x0008, 0x1048), TS_TAG(0x0008, 0x1049), TS_TAG(0x0008, 0x1060), TS_TAG(0x0008, 0x1062),
    TS_TAG(0x0008, 0x1110), TS_TAG(0x0020, 0x000d), TS_TAG(0x0020, 0x0010), TS_TAG(0x0032, 0x1034),
    TS_TAG(0x0040, 0x1012),
};
/* Largest Pixel Value in Series is (0028,0109) in PS3.6; Orthanc 1.10.1 lists
 * (0029,0109), a private tag, instead and so never answers it. */
static const uint32_t series_module[] = {
    TS_TAG(0x0008, 0x0021), TS_TAG(0x0008, 0x0031), TS_TAG(0x0008, 0x0060), TS_TAG(0x0008, 0x103e),
    TS_TAG(0x0008, 0x103f), TS_TAG(0x0008, 0x1050), TS_TAG(0x0008, 0x1052), TS_TAG(0x0008, 0x1070),
    TS_TAG(0x0008, 0x1072), TS_TAG(0x0008, 0x1111), TS_TAG(0x0008, 0x1250), TS_TAG(0x0010, 0x2210),
    TS_TAG(0x0018, 0x0015), TS_TAG(0x0018, 0x1030), TS_TAG(0x0018, 0x5100), TS_TAG(0x0020, 0x000e),
    TS_TAG(0x0020, 0x0011), TS_TAG(0x0020, 0x0060), TS_TAG(0x0028, 0x0108), TS_TAG(0x0028, 0x0109),
    TS_TAG(0x0040, 0x0244), TS_TAG(0x0040, 0x0245), TS_TAG(0x0040, 0x0253), TS_TAG(0x0040, 0x0254),
    TS_TAG(0x0040, 0x0260), TS_TAG(0x0040, 0x0275), TS_TAG(0x0040, 0x0280),
};
static const uint32_t instance_module[] = {
    TS_TAG(0x0008, 0x0005), TS_TAG(0x0008, 0x0012), TS_TAG(0x0008, 0x0013), TS_TAG(0x0008, 0x0014),
    TS_TAG(0x0008, 0x0016), TS_TAG(0x0008, 0x0018), TS_TAG(0x0008, 0x001a), TS_TAG(0x0008, 0x001b),
    TS_TAG(0x0008, 0x0110), TS_TAG(0x0008, 0x0201), TS_TAG(0x0018, 0xa001), TS_TAG(0x0020, 0x0013),
    TS_TAG(0x0028, 0x0303), TS_TAG(0x0040, 0xa390), TS_TAG(0x0100, 0x0410), TS_TAG(0x0100, 0x0420),
    TS_TAG(0x0100, 0x0424), TS_TAG(0x0100, 0x0426), TS_TAG(0x0400, 0x0500), TS_TAG(0x0400, 0x0561),
    TS_TAG(0x4ffe, 0x0001), TS_TAG(0xfffa, 0xfffa),
};

/* GET /{level}/{id}/module and /studies/{id}/module-patient [?simplify|?short]
 * [?ignore-length=...]: the tags of the level's module in the resource's first
 * instance, as Orthanc 1.10.1. */
void rest_module(rest_request *req)
{
    int level = rest_level_of_plural(req->seg[0]);
    const uint32_t *module;
    size_t n;
    if (level == 0 || strcmp(req->seg[2], "module-patient") == 0) {
        module = patient_module;
        n = sizeof(patient_module) / sizeof(patient_module[0]);
    } else if (level == 1) {
        module = study_module;
        n = sizeof(study_module) / sizeof(study_module[0]);
    } else if (level == 2) {
        module = series_module;
        n = sizeof(series_module) / sizeof(series_module[0]);
    } else {
        module = instance_module;
        n = sizeof(instance_module) / sizeof(instance_module[0]);
    }
    uint32_t *full_length;
    size_t nfull;
    if (!rest_arg_tags(req, "ignore-length", &full_length, &nfull))
        return;
    file_list fl;
    if (!list_files(req, level, &fl)) {
        free(full_length);
        return;
    }
    ts_dicom *d = fl.n ? open_listed(req, &fl, 0, "module") : NULL;
    file_list_clear(&fl);
    if (!d) {
        free(full_length);
        rest_reply_unknown_resource(req);
        return;
    }
    json_t *tags = ts_dicom_to_orthanc_json_full(d, full_length, nfull);
    ts_dicom_free(d);
    free(full_length);
    json_t *kept = json_object();
    for (size_t i = 0; i < n; i++) {
        char key[10];
        snprintf(key, sizeof(key), "%04x,%04x", module[i] >> 16, module[i] & 0xffff);
        json_t *v = json_object_get(tags, key);
        if (v)
            json_object_set(kept, key, v);
    }
    json_decref(tags);
    json_t *body = rest_flag(req, "simplify") ? ts_dicom_orthanc_simplify(kept)
                   : rest_flag(req, "short")  ? rest_short_tags(kept)
                                              : json_incref(kept);
    json_decref(kept);
    rest_reply_json(req, 200, body);
}

/* ---- tag paths ------------------------------------------------------------------- */

static ssize_t value_read(void *cls, char *buf, size_t max)
{
    size_t got;
    ts_err err;
    if (ts_dicom_reader_read(cls, buf, max, &got, &err)) {
        ts_warn("value transfer aborted", "error=\"%s\"", err.msg);
        return -1;
    }
    return (ssize_t)got;
}

static void value_free(void *cls)
{
    ts_dicom_reader_free(cls);
}

/* Answers with the bytes of a value, read from the file while they are sent;
 * takes the reader. */
static void reply_value(rest_request *req, ts_dicom_reader *r, const char *content_type)
{
    size_t size = ts_dicom_reader_size(r);
    if (size == 0) {
        ts_dicom_reader_free(r);
        rest_reply_text(req, 200, "", 0);
        req->content_type = content_type;
        return;
    }
    rest_reply_stream(req, content_type, (long long)size, value_read, value_free, r);
}

void rest_instance_content(rest_request *req)
{
    file_list fl;
    if (!list_files(req, 3, &fl))
        return;
    char path[4096];
    ts_err err;
    if (fl.n == 0 || ts_store_path(req->ctx->store, fl.uuids[0], path, sizeof(path), &err)) {
        file_list_clear(&fl);
        rest_reply_unknown_resource(req);
        return;
    }
    file_list_clear(&fl);
    ts_dicom_content c;
    int rc = ts_dicom_content_get(path, req->seg + 3, (size_t)(req->nseg - 3), &c, &err);
    if (rc == TS_ENOTFOUND) {
        rest_reply_empty(req, 404); /* Orthanc answers nothing when the path leads nowhere */
    } else if (rc == TS_EINVAL) {
        rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, NULL);
    } else if (rc) {
        ts_warn("content: instance file unreadable", "path=%s error=\"%s\"", path, err.msg);
        rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
    } else if (c.list) {
        rest_reply_json(req, 200, json_incref(c.list));
    } else {
        reply_value(req, c.value, "application/octet-stream");
        c.value = NULL;
    }
    ts_dicom_content_clear(&c);
}

/* ---- frames ---------------------------------------------------------------------- */

bool rest_instance_path(rest_request *req, char *path, size_t size)
{
    file_list fl;
    if (!list_files(req, 3, &fl))
        return false;
    ts_err err;
    bool ok = fl.n > 0 && ts_store_path(req->ctx->store, fl.uuids[0], path, size, &err) == 0;
    file_list_clear(&fl);
    if (!ok)
        rest_reply_unknown_resource(req);
    return ok;
}

char (*rest_resource_files(rest_request *req, int level, size_t *n))[4096]
{
    file_list fl;
    *n = 0;
    if (!list_files(req, level, &fl))
        return NULL;
    char(*paths)[4096] = malloc((fl.n + 1) * sizeof(*paths));
    if (!paths)
        abort();
    for (size_t i = 0; i < fl.n; i++) {
        ts_err err;
        if (ts_store_path(req->ctx->store, fl.uuids[i], paths[*n], sizeof(*paths), &err) == 0)
            (*n)++;
    }
    file_list_clear(&fl);
    return paths;
}

void rest_instance_frames(rest_request *req)
{
    char path[4096];
    if (!rest_instance_path(req, path, sizeof(path)))
        return;
    unsigned count;
    ts_err err;
    if (ts_dicom_frame_count(path, &count, &err)) {
        ts_warn("frames: instance file unreadable", "path=%s error=\"%s\"", path, err.msg);
        rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
        return;
    }
    json_t *list = json_array();
    for (unsigned i = 0; i < count; i++)
        json_array_append_new(list, json_integer(i));
    rest_reply_json(req, 200, list);
}

bool rest_parse_frame(const char *s, unsigned *out)
{
    bool neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    if (!*s || strlen(s) > 10)
        return false;
    unsigned long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > UINT_MAX)
        return false;
    *out = neg ? 0u - (unsigned)v : (unsigned)v;
    return true;
}

bool rest_open_frame_raw(rest_request *req, ts_dicom_reader **r, const char **mime)
{
    unsigned frame;
    if (!rest_parse_frame(req->seg[3], &frame)) {
        rest_reply_empty(req, 404);
        return false;
    }
    char path[4096];
    if (!rest_instance_path(req, path, sizeof(path)))
        return false;
    ts_err err;
    int rc = ts_dicom_frame_raw(path, frame, r, mime, &err);
    if (rc == TS_ENOTFOUND)
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
    else if (rc == TS_EINVAL)
        rest_reply_oe_status(req, 500, TS_OE_NOT_IMPLEMENTED, NULL);
    else if (rc)
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, err.msg);
    return rc == 0;
}

void rest_instance_frame_raw(rest_request *req)
{
    ts_dicom_reader *r;
    const char *mime;
    if (rest_open_frame_raw(req, &r, &mime))
        reply_value(req, r, mime);
}
