/* POST /tools/create-dicom (see rest_create.h), as Orthanc 1.10.1: the body is
 * {"Tags": {...}, "Content", "Parent", "Force", "PrivateCreator"}, or the tags
 * themselves (Orthanc's first form, without the default dates and character
 * set). */
#include "rest_create.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "dicom/dicom_create.h"
#include "dicom/dicom_modify.h"
#include "rest_common.h"
#include "rest_upload.h"

/* the parent's level and one instance of it */
static const ts_db_stmt parent_instance = {
    "create_parent_instance",
    "WITH RECURSIVE t AS ("
    " SELECT id, level FROM resources WHERE public_id = $1"
    " UNION ALL SELECT r.id, r.level FROM resources r JOIN t ON r.parent_id = t.id"
    " WHERE t.level < 3)"
    " SELECT (SELECT level FROM resources WHERE public_id = $1)::text,"
    " (SELECT a.uuid::text FROM t JOIN attachments a ON a.resource_id = t.id"
    "  AND a.content_type = 1 WHERE t.level = 3 ORDER BY t.id LIMIT 1)",
    1};

static void uuid_text(char out[37])
{
    unsigned char b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static bool inherited(uint32_t tag, int parent_level)
{
    for (int module = 0; module <= parent_level; module++) {
        size_t n;
        const uint32_t *tags = ts_dicom_module_tags(module, &n);
        for (size_t i = 0; i < n; i++)
            if (tags[i] == tag)
                return true;
    }
    return false;
}

/* The request's tags checked as Orthanc checks them; false after answering. */
static bool check_tags(rest_request *req, const json_t *tags, int parent_level, bool force)
{
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)tags, name, value)
    {
        uint32_t tag;
        if (!ts_dicom_parse_tag(name, &tag)) {
            rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, "");
            return false;
        }
        if (tag == TS_TAG(0x7fe0, 0x0010)) {
            rest_reply_oe(req, TS_OE_CREATE_DICOM_USE_CONTENT, "");
            return false;
        }
        /* the parent's tags, and without Force the identifying UIDs, are not
         * the request's to set */
        bool uid = tag == TS_TAG_STUDY_INSTANCE_UID || tag == TS_TAG_SERIES_INSTANCE_UID ||
                   tag == TS_TAG_SOP_INSTANCE_UID;
        if ((parent_level >= 0 && inherited(tag, parent_level)) || (uid && !force)) {
            rest_reply_oe(req, TS_OE_CREATE_DICOM_OVERRIDE_TAG, name);
            return false;
        }
    }
    return true;
}

/* Now, as Orthanc writes the dates and times of a new instance. */
static void now_text(char date[16], char tm_text[24])
{
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, 16, "%Y%m%d", &tm);
    strftime(tm_text, 24, "%H%M%S.000000", &tm);
}

void rest_create_dicom(rest_request *req)
{
    json_t *body = NULL, *modify_body = NULL;
    ts_modify *m = NULL;
    ts_dicom *d = NULL, *parent = NULL;
    char temp[4096] = "";
    size_t len;
    const char *text = rest_body_trimmed(req, &len);
    json_error_t jerr;
    if (!len || !(body = json_loadb(text, len, JSON_DECODE_ANY, &jerr))) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, ""); /* as Orthanc 1.10.1 */
        goto out;
    }
    if (!json_is_object(body)) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "");
        goto out;
    }
    /* Orthanc's second form has "Tags"; in the first, the body is the tags */
    bool v2 = json_object_get(body, "Tags") != NULL;
    const json_t *tags = v2 ? json_object_get(body, "Tags") : body;
    if (!json_is_object(tags)) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "");
        goto out;
    }
    const json_t *force_v = v2 ? json_object_get(body, "Force") : NULL;
    if (force_v && !json_is_boolean(force_v)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Force");
        goto out;
    }
    bool force = json_is_true(force_v);
    const json_t *content = v2 ? json_object_get(body, "Content") : NULL;
    const json_t *parent_v = v2 ? json_object_get(body, "Parent") : NULL;
    const json_t *creator = v2 ? json_object_get(body, "PrivateCreator") : NULL;
    if ((content && !json_is_string(content)) || (parent_v && !json_is_string(parent_v)) ||
        (creator && !json_is_string(creator))) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "");
        goto out;
    }
    int parent_level = -1;
    ts_err err;
    ts_oe oe = TS_OE_SUCCESS;
    if (parent_v) {
        const char *params[] = {json_string_value(parent_v)};
        rest_row row = {.stmt = &parent_instance, .params = params, .ncols = 2};
        if (!ts_id_is_valid(params[0])) {
            rest_reply_oe(req, TS_OE_CREATE_DICOM_BAD_PARENT, "");
            goto out;
        }
        if (!rest_row_query(req, TS_DB_READ_SINGLE, &row))
            goto out;
        parent_level = row.col[0] ? atoi(row.col[0]) : -1;
        char path[4096];
        bool found =
            row.col[1] && ts_store_path(req->ctx->store, row.col[1], path, sizeof(path), &err) == 0;
        rest_row_clear(&row);
        if (parent_level == 3) {
            rest_reply_oe(req, TS_OE_CREATE_DICOM_PARENT_IS_INSTANCE, "");
            goto out;
        }
        if (parent_level < 0 || !found) {
            rest_reply_oe(req, TS_OE_CREATE_DICOM_BAD_PARENT, "");
            goto out;
        }
        if (ts_dicom_open_file(path, &parent, &err)) {
            rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
            goto out;
        }
    }
    if (!check_tags(req, tags, parent_level, force))
        goto out;
    /* the request's tags are a modification of an empty dataset */
    modify_body = json_pack("{s:O, s:b}", "Replace", tags, "Force", 1);
    if (creator)
        json_object_set_new(modify_body, "PrivateCreator", json_string(json_string_value(creator)));
    if (ts_modify_parse(modify_body, false, &m, &oe, &err)) {
        rest_reply_oe(req, oe, err.msg);
        goto out;
    }
    d = ts_dicom_new();
    if (parent)
        for (int module = 0; module <= parent_level; module++) {
            size_t n;
            const uint32_t *mt = ts_dicom_module_tags(module, &n);
            ts_dicom_copy_tags(d, parent, mt, n);
        }
    char uid[80], uuid[37], date[16], tm_text[24];
    if (parent_level < 0 && !json_object_get(tags, "PatientID")) {
        uuid_text(uuid); /* Orthanc's PatientID of a new patient */
        ts_dicom_put_string(d, TS_TAG_PATIENT_ID, uuid, &err);
    }
    const uint32_t uids[] = {TS_TAG_STUDY_INSTANCE_UID, TS_TAG_SERIES_INSTANCE_UID,
                             TS_TAG_SOP_INSTANCE_UID};
    for (int level = 1; level <= 3; level++)
        if (level > parent_level) {
            ts_dicom_generate_uid(uid, sizeof(uid));
            ts_dicom_put_string(d, uids[level - 1], uid, &err);
        }
    if (v2) {
        /* Orthanc's defaults of a new instance: its character set, and now
         * as the dates and times its parent does not give */
        now_text(date, tm_text);
        ts_dicom_put_string(d, TS_TAG(0x0008, 0x0005), "ISO_IR 100", &err);
        const uint32_t dates[][2] = {{TS_TAG(0x0008, 0x0012), TS_TAG(0x0008, 0x0013)},
                                     {TS_TAG(0x0008, 0x0020), TS_TAG(0x0008, 0x0030)},
                                     {TS_TAG(0x0008, 0x0021), TS_TAG(0x0008, 0x0031)},
                                     {TS_TAG(0x0008, 0x0022), TS_TAG(0x0008, 0x0032)},
                                     {TS_TAG(0x0008, 0x0023), TS_TAG(0x0008, 0x0033)}};
        const int level_of[] = {3, 1, 2, 3, 3};
        for (int i = 0; i < 5; i++)
            if (level_of[i] > parent_level) {
                ts_dicom_put_string(d, dates[i][0], date, &err);
                ts_dicom_put_string(d, dates[i][1], tm_text, &err);
            }
    }
    if (ts_modify_apply(m, d, &oe, &err) ||
        (content && ts_dicom_set_content(d, json_string_value(content), &oe, &err))) {
        /* Orthanc 1.10.1 answers an unsupported MIME type with 500 */
        rest_reply_oe_status(req, oe == TS_OE_NOT_IMPLEMENTED ? 500 : ts_oe_http_status(oe), oe,
                             err.msg);
        goto out;
    }
    if (ts_store_temp_path(req->ctx->store, temp, sizeof(temp), &err) ||
        ts_dicom_save_file(d, temp, &err)) {
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        goto out;
    }
    /* through ingest, as an upload: the one write path */
    json_t *answer = NULL;
    int status = rest_store_temp_file(req, temp, &answer);
    if (status == 200)
        rest_reply_json(req, 200, answer);
    else {
        const char *details = json_string_value(json_object_get(answer, "Details"));
        rest_reply_oe_status(req, status, TS_OE_INTERNAL_ERROR, details ? details : "");
        json_decref(answer);
    }
out:
    if (temp[0])
        unlink(temp);
    ts_dicom_free(d);
    ts_dicom_free(parent);
    ts_modify_free(m);
    json_decref(modify_body);
    json_decref(body);
}
