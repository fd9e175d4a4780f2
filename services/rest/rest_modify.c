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
#include "dicom/codecs.h"
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

/* a resource's level, its study (itself for a study) and its patient's PatientID */
static const ts_db_stmt resource_info = {
    "modify_resource_info",
    "WITH RECURSIVE up AS ("
    " SELECT id, level, parent_id, public_id FROM resources WHERE public_id = $1"
    " UNION ALL SELECT r.id, r.level, r.parent_id, r.public_id FROM resources r"
    " JOIN up ON r.id = up.parent_id)"
    " SELECT (SELECT level FROM up WHERE public_id = $1)::text,"
    " (SELECT public_id FROM up WHERE level = 1),"
    " (SELECT p.patient_id FROM up JOIN patients p ON p.resource_id = up.id WHERE up.level = 0)",
    1};

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

/* Orthanc's "Transcode": *uid NULL when absent; false after answering (not a
 * string: 400 "Bad file format"; an unknown UID: Orthanc 1.10.1 answers
 * ParameterOutOfRange on an instance, BadFileFormat for a job, each with its
 * own wording). */
static bool transcode_field(rest_request *req, const json_t *body, bool job, const char **uid)
{
    const json_t *t = json_is_object(body) ? json_object_get(body, "Transcode") : NULL;
    *uid = NULL;
    if (!t)
        return true;
    if (!json_is_string(t)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "String value expected in field: Transcode");
        return false;
    }
    if (!ts_transfer_syntax_known(json_string_value(t))) {
        char details[300];
        snprintf(details, sizeof(details), "Unknown transfer syntax%s: %s", job ? " UID" : "",
                 json_string_value(t));
        rest_reply_oe(req, job ? TS_OE_BAD_FILE_FORMAT : TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return false;
    }
    *uid = json_string_value(t);
    return true;
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
    const char *transcode = NULL;
    /* Orthanc 1.10.1 transcodes a modified instance, and ignores Transcode in
     * an anonymization of one */
    if (!m || (!anonymize && !transcode_field(req, body, false, &transcode)))
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
    /* lossy targets allowed, with the new SOP Instance UID the encoder gives
     * (Orthanc's answer); failures are Orthanc's 500 */
    if (transcode && (ts_dicom_transcode(d, transcode, TS_TRANSCODE_ALLOW_LOSSY, false, &err))) {
        char details[600];
        ts_info("transcoding failed", "instance=%s to=%s error=\"%s\"", req->seg[1], transcode,
                err.msg);
        snprintf(details, sizeof(details), "Cannot transcode to transfer syntax: %s (%s)",
                 transcode, err.msg);
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, details);
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

/* Orthanc's Synchronous/Asynchronous (synchronous by default) and Priority;
 * false after answering. */
static bool job_parameters(rest_request *req, const json_t *body, bool *asynchronous, int *priority)
{
    const json_t *s = json_object_get(body, "Synchronous");
    const json_t *a = json_object_get(body, "Asynchronous");
    if (s && !json_is_boolean(s)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Synchronous");
        return false;
    }
    if (!s && a && !json_is_boolean(a)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Asynchronous");
        return false;
    }
    *asynchronous = s ? !json_is_true(s) : a ? json_is_true(a) : false;
    return rest_job_priority(req, body, priority);
}

/* KeepSource (def when absent); false after answering. */
static bool keep_source(rest_request *req, const json_t *body, bool def, bool *out)
{
    const json_t *ks = json_object_get(body, "KeepSource");
    if (ks && !json_is_boolean(ks)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: KeepSource");
        return false;
    }
    *out = ks ? json_is_true(ks) : def;
    return true;
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
    bool asynchronous, keep;
    int priority;
    if (!job_parameters(req, body, &asynchronous, &priority) ||
        !keep_source(req, body, true, &keep))
        goto out;
    const char *transcode;
    if (!(m = parse_modification(req, body, anonymize)) ||
        !transcode_field(req, body, true, &transcode))
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
    json_t *input =
        json_pack("{s:O, s:b, s:i, s:s, s:s, s:s, s:b, s:s, s:O}", "Body", body, "Anonymize",
                  anonymize, "Level", level, "Secret", secret, "PatientID", uuid, "PatientName",
                  name, "KeepSource", keep, "Resource", req->seg[1], "Instances", ids);
    json_t *content =
        json_pack("{s:s, s:i, s:I, s:b}", "Description", "REST API", "FailedInstancesCount", 0,
                  "InstancesCount", (json_int_t)json_array_size(ids), "IsAnonymization", anonymize);
    if (transcode) {
        json_object_set_new(input, "Transcode", json_string(transcode));
        json_object_set_new(content, "Transcode", json_string(transcode)); /* as Orthanc's */
    }
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

/* ---- split and merge ------------------------------------------------------ */

typedef struct info {
    int level; /* -1: unknown */
    char study[TS_ID_LEN + 1];
    char patient_id[256];
} info;

/* false after answering (database failure) */
static bool resource_of(rest_request *req, const char *id, info *out)
{
    out->level = -1;
    out->study[0] = out->patient_id[0] = '\0';
    if (!ts_id_is_valid(id))
        return true;
    const char *params[] = {id};
    rest_row row = {.stmt = &resource_info, .params = params, .ncols = 3};
    if (!rest_row_query(req, TS_DB_READ_SINGLE, &row))
        return false;
    if (row.col[0]) {
        out->level = atoi(row.col[0]);
        snprintf(out->study, sizeof(out->study), "%s", row.col[1] ? row.col[1] : "");
        snprintf(out->patient_id, sizeof(out->patient_id), "%s", row.col[2] ? row.col[2] : "");
    }
    rest_row_clear(&row);
    return true;
}

/* Appends the instances of a resource to list (once each); false after answering. */
static bool add_instances(rest_request *req, const char *id, int level, json_t *list, json_t *seen)
{
    char level_text[4];
    snprintf(level_text, sizeof(level_text), "%d", level);
    const char *params[] = {id, level_text};
    PGresult *res = rest_rows_query(req, &resource_instances, params);
    if (!res)
        return false;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *iid = PQgetvalue(res, i, 0);
        if (!json_object_get(seen, iid)) {
            json_object_set_new(seen, iid, json_true());
            json_array_append_new(list, json_string(iid));
        }
    }
    PQclear(res);
    return true;
}

/* A field that must be a list of strings (when present, unless required);
 * false after answering. */
static bool string_list(rest_request *req, const json_t *body, const char *name, bool required)
{
    const json_t *v = json_object_get(body, name);
    bool ok = v ? json_is_array(v) : !required;
    for (size_t i = 0; ok && v && i < json_array_size(v); i++)
        ok = json_is_string(json_array_get(v, i));
    if (!ok) {
        char details[96];
        snprintf(details, sizeof(details), "List of strings expected in field: %s", name);
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, details);
    }
    return ok;
}

static bool in_modules(uint32_t tag)
{
    for (int module = 0; module < 2; module++) {
        size_t n;
        const uint32_t *tags = ts_dicom_module_tags(module, &n);
        for (size_t i = 0; i < n; i++)
            if (tags[i] == tag)
                return tag != TS_TAG_STUDY_INSTANCE_UID;
    }
    return false;
}

/* A split may change only the patient and study modules (not the new study's
 * UID); false after answering as Orthanc. */
static bool split_tag_ok(rest_request *req, const char *name, uint32_t *tag)
{
    if (!ts_dicom_parse_tag(name, tag)) {
        rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, "");
        return false;
    }
    if (in_modules(*tag))
        return true;
    char tname[64], details[200];
    ts_dicom_tag_name(*tag, tname, sizeof(tname));
    snprintf(details, sizeof(details),
             "Cannot modify the following tag while splitting a study (not in the patient/study "
             "modules): %s (%04x,%04x)",
             tname, *tag >> 16, *tag & 0xffff);
    rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
    return false;
}

/* SplitStudy and MergeStudy: series-level modifications run by jobs_modify.c;
 * content gets Orthanc's common fields. */
static void submit_copy_job(rest_request *req, const char *type, json_t *modify_body,
                            json_t *instances, bool keep, int priority, bool asynchronous,
                            json_t *content, const char *target)
{
    char secret[65];
    random_hex(secret, 32);
    json_t *input =
        json_pack("{s:O, s:b, s:i, s:s, s:s, s:s, s:b, s:s, s:O}", "Body", modify_body, "Anonymize",
                  0, "Level", 2, "Secret", secret, "PatientID", "", "PatientName", "", "KeepSource",
                  keep, "Resource", req->seg[1], "Instances", instances);
    if (target)
        json_object_set_new(input, "Target", json_string(target));
    json_object_set_new(content, "Description", json_string("REST API"));
    json_object_set_new(content, "FailedInstancesCount", json_integer(0));
    json_object_set_new(content, "InstancesCount",
                        json_integer((json_int_t)json_array_size(instances)));
    rest_jobs_submit(req, type, priority, content, input, asynchronous);
    json_decref(input);
}

/* The split's Replace and Remove, checked; false after answering. */
static bool split_changes(rest_request *req, const json_t *body, json_t *replace, json_t *remove)
{
    const json_t *rep = json_object_get(body, "Replace");
    if (rep && !json_is_object(rep)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "");
        return false;
    }
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)rep, name, value)
    {
        uint32_t tag;
        if (!split_tag_ok(req, name, &tag))
            return false;
        if (!json_is_string(value)) {
            char details[64];
            snprintf(details, sizeof(details), "Bad Parameter type for tag %04x,%04x", tag >> 16,
                     tag & 0xffff);
            rest_reply_oe(req, TS_OE_BAD_PARAMETER_TYPE, details);
            return false;
        }
        json_object_set(replace, name, value);
    }
    if (!string_list(req, body, "Remove", false))
        return false;
    const json_t *list = json_object_get(body, "Remove");
    for (size_t i = 0; i < json_array_size(list); i++) {
        uint32_t tag;
        if (!split_tag_ok(req, json_string_value(json_array_get(list, i)), &tag))
            return false;
        json_array_append(remove, json_array_get(list, i));
    }
    return true;
}

void rest_split_study(rest_request *req)
{
    json_t *body = parse_body(req);
    json_t *list = json_array(), *seen = json_object(), *replace = json_object(),
           *remove = json_array();
    if (!body)
        goto out;
    if (!json_is_object(body)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "");
        goto out;
    }
    bool asynchronous, keep;
    int priority;
    info study;
    if (!job_parameters(req, body, &asynchronous, &priority) ||
        !keep_source(req, body, false, &keep) || !resource_of(req, req->seg[1], &study))
        goto out;
    if (study.level != 1) {
        char details[96];
        snprintf(details, sizeof(details), "Cannot split unknown study %s", req->seg[1]);
        rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
        goto out;
    }
    if (!string_list(req, body, "Series", false) || !string_list(req, body, "Instances", false))
        goto out;
    if (!json_object_get(body, "Series") && !json_object_get(body, "Instances")) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST,
                      "Both the \"Series\" and the \"Instances\" fields are missing");
        goto out;
    }
    static const char *const fields[] = {"Series", "Instances"};
    for (int f = 0; f < 2; f++) {
        const json_t *ids = json_object_get(body, fields[f]);
        for (size_t i = 0; i < json_array_size(ids); i++) {
            const char *id = json_string_value(json_array_get(ids, i));
            info r;
            if (!resource_of(req, id, &r))
                goto out;
            if (r.level != (f == 0 ? 2 : 3)) {
                rest_reply_unknown_resource(req);
                goto out;
            }
            if (strcmp(r.study, req->seg[1]) != 0) {
                char details[160];
                snprintf(details, sizeof(details),
                         "This %s does not belong to the study to be split: %s",
                         f == 0 ? "series" : "instance", id);
                rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
                goto out;
            }
            if (!add_instances(req, id, r.level, list, seen))
                goto out;
        }
    }
    if (!split_changes(req, body, replace, remove))
        goto out;
    /* the new study's UID now, so that the answer names it at once */
    char uid[80];
    ts_dicom_generate_uid(uid, sizeof(uid));
    json_object_set_new(replace, "StudyInstanceUID", json_string(uid));
    const json_t *pid = json_object_get(replace, "PatientID");
    ts_ids ids;
    ts_ids_compute(pid ? json_string_value(pid) : study.patient_id, uid, NULL, NULL, &ids);
    json_t *modify_body =
        json_pack("{s:O, s:O, s:b}", "Replace", replace, "Remove", remove, "Force", 1);
    json_t *content = json_pack("{s:s, s:s}", "TargetStudy", ids.study, "TargetStudyUID", uid);
    submit_copy_job(req, "SplitStudy", modify_body, list, keep, priority, asynchronous, content,
                    NULL);
    json_decref(content);
    json_decref(modify_body);
out:
    json_decref(remove);
    json_decref(replace);
    json_decref(seen);
    json_decref(list);
    json_decref(body);
}

void rest_merge_study(rest_request *req)
{
    json_t *body = parse_body(req);
    json_t *list = json_array(), *seen = json_object();
    if (!body)
        goto out;
    if (!json_is_object(body)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "");
        goto out;
    }
    bool asynchronous, keep;
    int priority;
    info target;
    if (!job_parameters(req, body, &asynchronous, &priority) ||
        !keep_source(req, body, false, &keep) || !string_list(req, body, "Resources", true) ||
        !resource_of(req, req->seg[1], &target))
        goto out;
    if (target.level != 1) {
        char details[96];
        snprintf(details, sizeof(details), "Cannot merge into an unknown study: %s", req->seg[1]);
        rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
        goto out;
    }
    const json_t *resources = json_object_get(body, "Resources");
    for (size_t i = 0; i < json_array_size(resources); i++) {
        const char *id = json_string_value(json_array_get(resources, i));
        info r;
        char details[200];
        if (!resource_of(req, id, &r))
            goto out;
        if (r.level == 0) {
            snprintf(details, sizeof(details),
                     "This resource is neither a study, nor a series, nor an instance: %s is a "
                     "Patient",
                     id);
            rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
            goto out;
        }
        if (r.level < 0) {
            snprintf(details, sizeof(details), "Cannot find this resource: %s", id);
            rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
            goto out;
        }
        if (strcmp(r.study, req->seg[1]) == 0) {
            if (r.level == 1)
                snprintf(details, sizeof(details), "Cannot merge a study into the same study: %s",
                         id);
            else
                snprintf(details, sizeof(details), "Cannot merge %s %s into its parent study %s",
                         r.level == 2 ? "series" : "instance", id, req->seg[1]);
            rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
            goto out;
        }
        if (!add_instances(req, id, r.level, list, seen))
            goto out;
    }
    json_t *modify_body = json_pack("{s:b}", "Force", 1);
    json_t *content = json_pack("{s:s}", "TargetStudy", req->seg[1]);
    submit_copy_job(req, "MergeStudy", modify_body, list, keep, priority, asynchronous, content,
                    req->seg[1]);
    json_decref(content);
    json_decref(modify_body);
out:
    json_decref(seen);
    json_decref(list);
    json_decref(body);
}
