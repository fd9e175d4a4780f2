/* /modify, /anonymize and /tools/generate-uid (see rest_modify.h). */
#include "rest_modify.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "dicom/dicom_modify.h"
#include "rest_common.h"
#include "rest_jobs.h"

static const ts_db_stmt instance_file = {
    "modify_instance_file",
    "SELECT a.uuid::text FROM resources r"
    " JOIN attachments a ON a.resource_id = r.id AND a.content_type = 1"
    " WHERE r.level = 3 AND r.public_id = $1",
    1};

/* every instance under a resource of a given level, oldest first */
static const ts_db_stmt resource_instances = {
    "modify_resource_instances",
    "WITH RECURSIVE t AS ("
    " SELECT id, level FROM resources WHERE public_id = $1 AND level = $2::smallint"
    " UNION ALL SELECT r.id, r.level FROM resources r JOIN t ON r.parent_id = t.id"
    " WHERE t.level < 3)"
    " SELECT r.public_id FROM t JOIN resources r ON r.id = t.id WHERE t.level = 3 ORDER BY r.id",
    2};

static const ts_db_stmt next_anonymized = {"modify_next_anonymized",
                                           "SELECT nextval('anonymization_sequence')::text", 0};

static void random_hex(char *out, size_t bytes)
{
    unsigned char b[32];
    if (bytes > sizeof(b))
        bytes = sizeof(b);
    RAND_bytes(b, (int)bytes);
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* A random UUID (version 4), as Orthanc's anonymized PatientID. */
static void random_uuid(char out[37])
{
    unsigned char b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* The body as JSON (an empty body is {}); answers 400 and returns NULL when it
 * is not JSON (Orthanc: "Bad file format"). */
static json_t *parse_body(rest_request *req)
{
    if (!rest_body_within(req, 16 * 1024 * 1024))
        return NULL;
    size_t len;
    const char *text = rest_body_trimmed(req, &len);
    if (len == 0)
        return json_object();
    json_error_t jerr;
    json_t *body = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!body)
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "");
    return body;
}

/* The request's modification, or NULL after answering its error. */
static ts_modify *parse_modification(rest_request *req, const json_t *body, bool anonymize)
{
    if (json_is_object(body) && json_object_get(body, "Transcode")) {
        /* being built elsewhere (the image issue); refused rather than ignored */
        rest_reply_oe(req, TS_OE_NOT_IMPLEMENTED,
                      "Transcode: Tessera does not transcode modified instances yet");
        return NULL;
    }
    ts_modify *m = NULL;
    ts_oe oe = TS_OE_SUCCESS;
    ts_err err;
    ts_err_clear(&err);
    if (ts_modify_parse(body, anonymize, &m, &oe, &err)) {
        rest_reply_oe(req, oe, err.msg);
        return NULL;
    }
    return m;
}

/* "Anonymized<N>" from the cluster's counter; false after answering. */
static bool anonymized_name(rest_request *req, char *out, size_t size)
{
    rest_row row = {.stmt = &next_anonymized, .params = NULL, .ncols = 1};
    if (!rest_row_query(req, TS_DB_WRITE, &row))
        return false;
    snprintf(out, size, "Anonymized%s", row.col[0] ? row.col[0] : "");
    rest_row_clear(&row);
    return true;
}

static bool is_anonymize(const rest_request *req)
{
    return strcmp(req->seg[req->nseg - 1], "anonymize") == 0;
}

void rest_modify_instance(rest_request *req)
{
    bool anonymize = is_anonymize(req);
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    json_t *body = parse_body(req);
    if (!body)
        return;
    ts_modify *m = parse_modification(req, body, anonymize);
    ts_dicom *d = NULL;
    char temp[4096] = "";
    if (!m)
        goto out;
    const char *params[] = {req->seg[1]};
    rest_row row = {.stmt = &instance_file, .params = params, .ncols = 1};
    if (!rest_row_query(req, TS_DB_READ_SINGLE, &row))
        goto out;
    char path[4096];
    ts_err err;
    bool found =
        row.col[0] && ts_store_path(req->ctx->store, row.col[0], path, sizeof(path), &err) == 0;
    rest_row_clear(&row);
    if (!found) {
        rest_reply_unknown_resource(req);
        goto out;
    }
    /* Orthanc picks the level from the UIDs the body replaces */
    ts_modify_set_level(m, ts_modify_instance_level(m));
    ts_oe oe = TS_OE_SUCCESS;
    if (ts_modify_check(m, &oe, &err)) {
        rest_reply_oe(req, oe, err.msg);
        goto out;
    }
    char secret[65];
    random_hex(secret, 32);
    ts_modify_set_secret(m, secret);
    if (anonymize) {
        char uuid[37], name[64];
        random_uuid(uuid);
        if (!anonymized_name(req, name, sizeof(name)))
            goto out;
        ts_modify_set_anonymous_patient(m, uuid, name);
    }
    if (ts_dicom_open_file(path, &d, &err)) {
        rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err.msg);
        goto out;
    }
    if (ts_modify_apply(m, d, &oe, &err)) {
        rest_reply_oe(req, oe, err.msg);
        goto out;
    }
    /* written to the storage area's tmp/ and streamed from there, so that a
     * large file is never held in memory */
    if (ts_store_temp_path(req->ctx->store, temp, sizeof(temp), &err) ||
        ts_dicom_save_file(d, temp, &err)) {
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        goto out;
    }
    int fd = open(temp, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, "the modified file vanished");
        goto out;
    }
    rest_reply_file(req, fd, (size_t)st.st_size, "application/dicom");
out:
    if (temp[0])
        unlink(temp); /* the open descriptor keeps the bytes until they are sent */
    ts_dicom_free(d);
    ts_modify_free(m);
    json_decref(body);
}

void rest_modify_resource(rest_request *req)
{
    bool anonymize = is_anonymize(req);
    int level = rest_level_of_plural(req->seg[0]);
    json_t *body = parse_body(req);
    json_t *ids = NULL;
    ts_modify *m = NULL;
    if (!body)
        return;
    if (!json_is_object(body)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "");
        goto out;
    }
    /* Orthanc: synchronous unless asked otherwise */
    const json_t *s = json_object_get(body, "Synchronous");
    const json_t *a = json_object_get(body, "Asynchronous");
    if (s && !json_is_boolean(s)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Synchronous");
        goto out;
    }
    if (!s && a && !json_is_boolean(a)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Asynchronous");
        goto out;
    }
    bool asynchronous = s ? !json_is_true(s) : a ? json_is_true(a) : false;
    int priority;
    if (!rest_job_priority(req, body, &priority))
        goto out;
    const json_t *ks = json_object_get(body, "KeepSource");
    if (ks && !json_is_boolean(ks)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: KeepSource");
        goto out;
    }
    if (!(m = parse_modification(req, body, anonymize)))
        goto out;
    if (level < 0 || level > 2 || !ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        goto out;
    }
    char level_text[4];
    snprintf(level_text, sizeof(level_text), "%d", level);
    const char *params[] = {req->seg[1], level_text};
    PGresult *res = rest_rows_query(req, &resource_instances, params);
    if (!res)
        goto out;
    ids = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(ids, json_string(PQgetvalue(res, i, 0)));
    PQclear(res);
    if (json_array_size(ids) == 0) {
        rest_reply_unknown_resource(req);
        goto out;
    }
    char secret[65], uuid[37] = "", name[64] = "";
    random_hex(secret, 32);
    if (anonymize) {
        random_uuid(uuid);
        if (!anonymized_name(req, name, sizeof(name)))
            goto out;
    }
    /* the worker parses Body again; Orthanc's level rules are checked there,
     * so that a bad combination is a failed job as in Orthanc (a synchronous
     * call answers its error) */
    json_t *input = json_pack("{s:O, s:b, s:i, s:s, s:s, s:s, s:b, s:s, s:O}", "Body", body,
                              "Anonymize", anonymize, "Level", level, "Secret", secret, "PatientID",
                              uuid, "PatientName", name, "KeepSource", ks ? json_is_true(ks) : true,
                              "Resource", req->seg[1], "Instances", ids);
    json_t *content =
        json_pack("{s:s, s:i, s:I, s:b}", "Description", "REST API", "FailedInstancesCount", 0,
                  "InstancesCount", (json_int_t)json_array_size(ids), "IsAnonymization", anonymize);
    rest_jobs_submit(req, "ResourceModification", priority, content, input, asynchronous);
    json_decref(content);
    json_decref(input);
out:
    ts_modify_free(m);
    json_decref(ids);
    json_decref(body);
}

void rest_generate_uid(rest_request *req)
{
    const char *level = rest_arg(req, "level");
    if (!level || (strcmp(level, "patient") != 0 && strcmp(level, "study") != 0 &&
                   strcmp(level, "series") != 0 && strcmp(level, "instance") != 0)) {
        /* Orthanc 1.10.1 answers 404 (empty) to a missing or an unknown level */
        rest_reply_oe_status(req, 404, TS_OE_PARAMETER_OUT_OF_RANGE,
                             "Argument \"level\" must be \"patient\", \"study\", \"series\" or "
                             "\"instance\"");
        return;
    }
    char uid[80];
    if (strcmp(level, "patient") == 0)
        random_uuid(uid); /* Orthanc's patient "UID" is a UUID, as its anonymized PatientID */
    else
        ts_dicom_generate_uid(uid, sizeof(uid));
    rest_reply_text(req, 200, uid, strlen(uid));
}
