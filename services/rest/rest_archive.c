/* Archives (see rest_archive.h). The ZIP itself is lib/domain/archives.c's; here are
 * Orthanc's routes and bodies. A synchronous archive is written while it is
 * sent: each read of the HTTP layer takes the next piece of the ZIP, so memory
 * stays flat whatever the size of the files. An asynchronous one is an
 * `Archive` job (services/jobs/jobs_archive.c) whose ZIP lands in the storage
 * area, where every REST process finds it for GET /jobs/{id}/archive. */
#include "rest_archive.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "domain/archives.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_jobs.h"

/* a list of resources to archive: about 90,000 ids */
#define ARCHIVE_BODY_MAX (4 * 1024 * 1024)

typedef struct arch_reader {
    ts_archive *a;
    const char *piece;
    size_t len, pos;
} arch_reader;

static ssize_t archive_stream_read(void *cls, char *buf, size_t max)
{
    arch_reader *r = cls;
    while (r->pos == r->len) {
        const void *data;
        ts_err err;
        int rc = ts_archive_next(r->a, &data, &r->len, &err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return 0;
        r->piece = data;
        r->pos = 0;
    }
    size_t n = r->len - r->pos;
    if (n > max)
        n = max;
    memcpy(buf, r->piece + r->pos, n);
    r->pos += n;
    return (ssize_t)n;
}

static void archive_stream_free(void *cls)
{
    arch_reader *r = cls;
    ts_archive_free(r->a);
    free(r);
}

/* Lists the archive of ids, or answers (404 for an unknown resource) and
 * returns NULL. */
static ts_archive *open_archive(rest_request *req, const char *const *ids, size_t n, int level,
                                const char *log_id)
{
    ts_archive *a = NULL;
    ts_err err;
    int rc = ts_archive_new(req->ctx->db, req->ctx->store, ids, n, level, log_id, &a, &err);
    if (rc == TS_ENOTFOUND) {
        rest_reply_unknown_resource(req);
        return NULL;
    }
    if (rc) {
        ts_warn("read failed", "uri=%s error=\"%s\"", req->url, err.msg);
        rest_reply_failure(req, rc, err.msg);
        return NULL;
    }
    return a;
}

/* Streams the ZIP of ids as the answer, named filename. */
static void stream_archive(rest_request *req, const char *const *ids, size_t n, int level,
                           const char *log_id, const char *filename)
{
    ts_archive *a = open_archive(req, ids, n, level, log_id);
    if (!a)
        return;
    arch_reader *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->a = a;
    rest_reply_stream(req, "application/zip", -1, archive_stream_read, archive_stream_free, r);
    snprintf(req->disposition, sizeof(req->disposition), "filename=\"%s\"", filename);
}

/* GET /{patients,studies,series}/{id}/archive */
void rest_archive(rest_request *req)
{
    int level = rest_level_of_plural(req->seg[0]);
    if (level < 0 || level > 2 || !ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return;
    }
    char filename[80];
    snprintf(filename, sizeof(filename), "%s.zip", req->seg[1]);
    const char *ids[] = {req->seg[1]};
    stream_archive(req, ids, 1, level, req->seg[1], filename);
}

/* ---- jobs ---------------------------------------------------------------------- */

static bool bad_format(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, details);
    return false;
}

/* Orthanc's GetJobParameters: Synchronous (else Asynchronous; synchronous by
 * default), Priority; only from an object. Answers and returns false when a
 * field has the wrong type, or asks for transcoding (not supported). */
static bool job_parameters(rest_request *req, const json_t *body, bool *synchronous, int *priority)
{
    *synchronous = true;
    *priority = 0;
    if (!json_is_object(body))
        return true;
    const json_t *s = json_object_get(body, "Synchronous");
    const json_t *a = json_object_get(body, "Asynchronous");
    if (s && !json_is_boolean(s))
        return bad_format(req, "Boolean value expected in field: Synchronous");
    if (!s && a && !json_is_boolean(a))
        return bad_format(req, "Boolean value expected in field: Asynchronous");
    if (!rest_job_priority(req, body, priority))
        return false;
    if (json_object_get(body, "Transcode")) {
        rest_reply_oe(req, TS_OE_NOT_IMPLEMENTED, "Transcode: Tessera does not transcode archives");
        return false;
    }
    *synchronous = s ? json_is_true(s) : a ? !json_is_true(a) : true;
    return true;
}

/* Submits an Archive job over ids (already known to exist: a is their
 * listing) and answers {"ID", "Path"}. */
static void submit_archive(rest_request *req, const json_t *ids, int level, int priority,
                           const ts_archive *a)
{
    long long size = ts_archive_uncompressed_size(a);
    char size_text[32];
    snprintf(size_text, sizeof(size_text), "%lld", size);
    json_t *content = json_pack("{s:s, s:I, s:s, s:I}", "Description", "REST API", "InstancesCount",
                                (json_int_t)ts_archive_instances(a), "UncompressedSize", size_text,
                                "UncompressedSizeMB", (json_int_t)(size / (1024 * 1024)));
    json_t *input = json_pack("{s:O, s:i}", "Resources", ids, "Level", level);
    rest_jobs_submit(req, "Archive", priority, content, input, true);
    json_decref(content);
    json_decref(input);
}

/* The ids of a json array as a C array (pointing into it); NULL when empty. */
static const char **id_array(const json_t *list, size_t *n)
{
    *n = json_array_size(list);
    const char **ids = calloc(*n + 1, sizeof(*ids));
    if (!ids)
        abort();
    for (size_t i = 0; i < *n; i++)
        ids[i] = json_string_value(json_array_get(list, i));
    return ids;
}

/* Synchronous: the ZIP as the answer; asynchronous: an Archive job. */
static void archive_or_job(rest_request *req, const json_t *list, int level, bool synchronous,
                           int priority, const char *log_id, const char *filename)
{
    size_t n;
    const char **ids = id_array(list, &n);
    /* Orthanc's answer for an id that is not one: unknown resource */
    for (size_t i = 0; i < n; i++)
        if (!ts_id_is_valid(ids[i])) {
            rest_reply_unknown_resource(req);
            goto out;
        }
    if (synchronous) {
        stream_archive(req, ids, n, level, log_id, filename);
        goto out;
    }
    ts_archive *a = open_archive(req, ids, n, level, log_id);
    if (a) {
        submit_archive(req, list, level, priority, a);
        ts_archive_free(a);
    }
out:
    free(ids);
}

/* The JSON body with Orthanc's job parameters, or NULL after answering (413,
 * or 400 with details_if_bad when it is not JSON). The caller decrefs it. */
static json_t *job_body(rest_request *req, const char *details_if_bad, bool *synchronous,
                        int *priority)
{
    if (!rest_body_within(req, ARCHIVE_BODY_MAX))
        return NULL;
    json_error_t jerr;
    json_t *body =
        req->body_len ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    if (!body) {
        bad_format(req, details_if_bad);
        return NULL;
    }
    if (!job_parameters(req, body, synchronous, priority)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

/* POST /{patients,studies,series}/{id}/archive: Orthanc archives the resource
 * of that id whatever its level (POST /patients/{study}/archive is the study's
 * archive). */
void rest_archive_post(rest_request *req)
{
    bool synchronous;
    int priority;
    json_t *body = job_body(req, NULL, &synchronous, &priority);
    if (!body)
        return;
    char filename[80];
    snprintf(filename, sizeof(filename), "%.64s.zip", req->seg[1]);
    json_t *list = json_pack("[s]", req->seg[1]);
    /* as Orthanc 1.10.1: the id's own level, whatever the route says */
    archive_or_job(req, list, -1, synchronous, priority, req->seg[1], filename);
    json_decref(list);
    json_decref(body);
}

/* POST /tools/create-archive: {"Resources": [...], "Synchronous", "Asynchronous",
 * "Priority"} or a bare list of ids, of any level. */
void rest_create_archive(rest_request *req)
{
    bool synchronous;
    int priority;
    json_t *body = job_body(req, "Expected a list of resources to archive in the body",
                            &synchronous, &priority);
    if (!body)
        return;
    const json_t *list = body;
    if (json_is_object(body)) {
        list = json_object_get(body, "Resources");
        if (!list) {
            bad_format(req, "Missing field Resources in the JSON body");
            goto out;
        }
    } else if (!json_is_array(body)) {
        bad_format(req, NULL);
        goto out;
    }
    bool ok = json_is_array(list);
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v) ok = ok && json_is_string(v);
    if (!ok) {
        bad_format(req, "Expected a list of strings (Orthanc identifiers)");
        goto out;
    }
    archive_or_job(req, list, -1, synchronous, priority, "create-archive", "Archive.zip");
out:
    json_decref(body);
}

/* GET /jobs/{id}/archive of a job (its JSON): the ZIP of a successful Archive job. */
void rest_archive_job_output(rest_request *req, const json_t *job)
{
    const char *type = json_string_value(json_object_get(job, "Type"));
    const char *state = json_string_value(json_object_get(job, "State"));
    char path[4096];
    ts_err err;
    int fd = -1;
    struct stat st;
    if (type && strcmp(type, "Archive") == 0 && state && strcmp(state, "Success") == 0 &&
        ts_archive_job_path(req->ctx->store, req->seg[1], NULL, path, sizeof(path), &err) == 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT) {
            rest_reply_oe(req, TS_OE_INTERNAL_ERROR, strerror(errno));
            return;
        }
        if (fd >= 0 && fstat(fd, &st) != 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) {
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, "Job has no such output: archive");
        return;
    }
    rest_reply_file(req, fd, (size_t)st.st_size, "application/zip");
    snprintf(req->disposition, sizeof(req->disposition), "filename=\"archive.zip\"");
}
