/* Resources: lists, single resources, navigation between levels, instance
 * contents and uploads. Every read is one SQL round trip: PostgreSQL builds
 * the JSON (tessera_resource_json in db/migrations/0003_resource_json.sql). */
#include "rest_resources.h"

#include <arpa/inet.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom.h"
#include "ids.h"
#include "log.h"
#include "rest_common.h"
#include "tessera.pb-c.h"

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

/* ---- lists and single resources -------------------------------------------- */

static const ts_db_stmt list_ids = {
    "rest_list_ids",
    "SELECT coalesce(jsonb_agg(public_id ORDER BY id), '[]') FROM ("
    " SELECT id, public_id FROM resources WHERE level = $1::smallint"
    " ORDER BY id OFFSET $2::bigint LIMIT $3::bigint) s",
    3};

static const ts_db_stmt list_expanded = {
    "rest_list_expanded",
    "SELECT coalesce(jsonb_agg(tessera_resource_json(id, $4::integer) ORDER BY id), '[]') FROM ("
    " SELECT id FROM resources WHERE level = $1::smallint"
    " ORDER BY id OFFSET $2::bigint LIMIT $3::bigint) s",
    4};

static const ts_db_stmt get_resource = {
    "rest_get_resource",
    "SELECT tessera_resource_json(id, $3::integer) FROM resources"
    " WHERE public_id = $1 AND level = $2::smallint",
    3};

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
        rest_reply_error(req, 400, 8, "Bad request", details);
        return;
    }
    long since = rest_arg_long(req, "since", 0);
    long limit = rest_arg_long(req, "limit", -2);
    if (since < 0 || limit == -1) {
        rest_reply_error(req, 400, 5, "Bad type for a parameter",
                         "Syntax error in some user-supplied data");
        return;
    }
    char lv[4], since_s[24], limit_s[24], age[16];
    level_param(lv, level);
    snprintf(since_s, sizeof(since_s), "%ld", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    snprintf(age, sizeof(age), "%d", req->ctx->stable_age_s);
    const char *params[] = {lv, since_s, limit == -2 ? NULL : limit_s, age};
    read_one r;
    if (!query(req, rest_flag(req, "expand") ? &list_expanded : &list_ids, params, &r))
        return;
    rest_reply_json_text(req, 200, r.text ? r.text : "[]", r.text ? strlen(r.text) : 2);
    read_one_clear(&r);
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
    const char *params[] = {req->seg[1], lv, age};
    read_one r;
    if (!query(req, &get_resource, params, &r))
        return;
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
            rest_reply_error(req, 500, 15, "Bad file format", err.msg);
            return;
        }
        json_t *body = ts_dicom_to_dicom_json_inline(d);
        ts_dicom_free(d);
        rest_reply_json(req, 200, body);
        req->content_type = "application/dicom+json";
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
        rest_reply_error(req, 500, 15, "Bad file format", err.msg);
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

/* ---- uploads -------------------------------------------------------------------- */

/* Stores one DICOM file through ingest. On success *answer is Orthanc's
 * per-instance answer; otherwise the request has been answered with the error
 * unless quiet, and *answer is a short failure object. Returns the HTTP status. */
static int store_one(rest_request *req, const void *data, size_t len, const char *temp_path,
                     json_t **answer, bool quiet)
{
    *answer = NULL;
    Tessera__StoreRequest sr = TESSERA__STORE_REQUEST__INIT;
    if (temp_path) {
        /* a file in the shared storage area's tmp/: ingest takes it over by name */
        const char *slash = strrchr(temp_path, '/');
        sr.temp_file = (char *)(slash ? slash + 1 : temp_path);
    } else {
        sr.dicom.data = (uint8_t *)data;
        sr.dicom.len = len;
    }
    sr.origin = "RestApi";
    char ip[INET6_ADDRSTRLEN];
    rest_client_ip(req, ip, sizeof(ip));
    sr.remote_ip = ip;
    sr.http_username = (char *)(req->username ? req->username : "");
    ProtobufCMessage *reply;
    ts_err err;
    int rc = ts_bus_call(req->ctx->ingest, &sr.base, &tessera__store_reply__descriptor, &reply,
                         req->ctx->bus_timeout_ms, &err);
    if (rc) {
        ts_warn("upload: ingest did not answer", "error=\"%s\"", err.msg);
        if (!quiet)
            rest_reply_failure(req, rc, err.msg);
        *answer = json_pack("{s:s, s:s}", "Status", "Failure", "Details", err.msg);
        return 503;
    }
    Tessera__StoreReply *r = (Tessera__StoreReply *)reply;
    int status = 200;
    switch (r->status) {
    case TESSERA__STORE_STATUS__STORE_STORED:
    case TESSERA__STORE_STATUS__STORE_ALREADY_STORED: {
        char path[64];
        snprintf(path, sizeof(path), "/instances/%s", r->instance_id);
        *answer = json_object();
        json_object_set_new(*answer, "ID", json_string(r->instance_id));
        json_object_set_new(*answer, "ParentPatient", json_string(r->patient_id));
        json_object_set_new(*answer, "ParentSeries", json_string(r->series_id));
        json_object_set_new(*answer, "ParentStudy", json_string(r->study_id));
        json_object_set_new(*answer, "Path", json_string(path));
        json_object_set_new(*answer, "Status",
                            json_string(r->status == TESSERA__STORE_STATUS__STORE_STORED
                                            ? "Success"
                                            : "AlreadyStored"));
        break;
    }
    case TESSERA__STORE_STATUS__STORE_INVALID_DICOM:
        status = 400;
        if (!quiet)
            rest_reply_error(req, 400, 15, "Bad file format", r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_TOO_LARGE:
        status = 413;
        if (!quiet)
            rest_reply_error(req, 413, 8, "Bad request", r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_DB_UNAVAILABLE:
        status = 503;
        if (!quiet)
            rest_reply_failure(req, TS_EDB_BUSY, r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_STORAGE_ERROR:
        status = 507;
        if (!quiet)
            rest_reply_error(req, 507, 13, "Error in the storage area", r->error);
        break;
    default:
        status = 500;
        if (!quiet)
            rest_reply_error(req, 500, -1, "Internal error", r->error);
        break;
    }
    if (!*answer)
        *answer = json_pack("{s:s, s:s}", "Status", "Failure", "Details", r->error);
    protobuf_c_message_free_unpacked(reply, NULL);
    return status;
}

/* Copies the current entry of a into a new temporary file of the storage area.
 * 0, or a message in details. */
static int entry_to_temp(rest_request *req, struct archive *a, char *path, size_t size,
                         char *details, size_t dsize)
{
    ts_err err;
    if (ts_store_temp_path(req->ctx->store, path, size, &err)) {
        snprintf(details, dsize, "%.400s", err.msg);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(details, dsize, "cannot create %.300s: %s", path, strerror(errno));
        return -1;
    }
    const void *block;
    size_t n;
    la_int64_t offset, written = 0;
    int rc;
    while ((rc = archive_read_data_block(a, &block, &n, &offset)) == ARCHIVE_OK) {
        if (offset != written || written + (la_int64_t)n > req->ctx->max_body) {
            snprintf(details, dsize, offset != written ? "sparse entry" : "entry too large");
            rc = ARCHIVE_FATAL;
            break;
        }
        const char *p = block;
        while (n > 0) {
            ssize_t w = write(fd, p, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                snprintf(details, dsize, "cannot write %.300s: %s", path, strerror(errno));
                close(fd);
                unlink(path);
                return -1;
            }
            p += w;
            n -= (size_t)w;
            written += w;
        }
    }
    close(fd);
    if (rc != ARCHIVE_EOF) {
        if (!details[0])
            snprintf(details, dsize, "truncated entry: %s", archive_error_string(a));
        unlink(path);
        return -1;
    }
    return 0;
}

/* A ZIP of DICOM files (Orthanc accepts them on POST /instances): every entry
 * is stored on its own; the answer lists one result per entry. As in Orthanc
 * 1.10.1, an entry that is not a DICOM instance (a README, a DICOMDIR index,
 * an empty file) is skipped, and logged; any other failure is listed. Entries
 * go through temporary files, so memory does not grow with their size. */
static void upload_zip(rest_request *req)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_zip(a);
    int opened = req->body_path ? archive_read_open_filename(a, req->body_path, 65536)
                                : archive_read_open_memory(a, req->body, req->body_len);
    if (opened != ARCHIVE_OK) {
        rest_reply_error(req, 400, 15, "Bad file format", archive_error_string(a));
        archive_read_free(a);
        return;
    }
    json_t *results = json_array();
    struct archive_entry *entry;
    int rc;
    while ((rc = archive_read_next_header(a, &entry)) == ARCHIVE_OK) {
        if (archive_entry_filetype(entry) != AE_IFREG)
            continue;
        const char *name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
        char path[4096], details[512] = "";
        if (entry_to_temp(req, a, path, sizeof(path), details, sizeof(details))) {
            json_array_append_new(results, json_pack("{s:s, s:s, s:s}", "Status", "Failure", "Path",
                                                     name, "Details", details));
            continue;
        }
        json_t *answer;
        int status = store_one(req, NULL, 0, path, &answer, true);
        unlink(path); /* gone already when ingest took it over */
        if (status == 400) {
            const char *why = json_string_value(json_object_get(answer, "Details"));
            ts_info("zip entry skipped: not a DICOM instance",
                    "entry=\"%.200s\" details=\"%.300s\"", name, why ? why : "");
            json_decref(answer);
            continue;
        }
        json_array_append_new(results, answer);
    }
    if (rc != ARCHIVE_EOF) {
        rest_reply_error(req, 400, 15, "Bad file format", archive_error_string(a));
        json_decref(results);
    } else {
        rest_reply_json(req, 200, results);
    }
    archive_read_free(a);
}

static void upload_body(rest_request *req);

/* The boundary of a multipart/form-data Content-Type, or NULL. */
static bool form_boundary(rest_request *req, char *out, size_t size)
{
    const char *type = rest_header(req, "Content-Type");
    if (!type || strncasecmp(type, "multipart/form-data", 19) != 0)
        return false;
    const char *b = strcasestr(type, "boundary=");
    if (!b)
        return false;
    b += 9;
    bool quoted = *b == '"';
    b += quoted;
    size_t n = strcspn(b, quoted ? "\"" : "; \t");
    if (n == 0 || n + 3 > size)
        return false;
    snprintf(out, size, "--%.*s", (int)n, b);
    return true;
}

/* Writes len bytes to a new temporary file of the storage area (path). */
static int bytes_to_temp(rest_request *req, const char *data, size_t len, char *path, size_t size)
{
    ts_err err;
    if (ts_store_temp_path(req->ctx->store, path, size, &err)) {
        rest_reply_error(req, 507, 13, "Error in the storage area", err.msg);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    while (fd >= 0 && len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            break;
        data += w;
        len -= (size_t)w;
    }
    if (fd < 0 || len > 0) {
        char details[512];
        snprintf(details, sizeof(details), "cannot write %.300s: %s", path, strerror(errno));
        rest_reply_error(req, 507, 13, "Error in the storage area", details);
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        return -1;
    }
    close(fd);
    return 0;
}

/* A multipart/form-data body (an HTML form's upload): as Orthanc 1.10.1, each
 * part is uploaded as a body of its own, the first failure is the answer, and
 * success an empty 200. Parts go through temporary files; the body is mapped,
 * not read into memory. */
static void upload_form(rest_request *req, const char *boundary)
{
    const char *body = req->body;
    void *map = NULL;
    if (req->body_len == 0) {
        rest_reply_text(req, 200, "", 0); /* no part: nothing to do, as Orthanc */
        return;
    }
    if (req->body_path) {
        int fd = open(req->body_path, O_RDONLY | O_CLOEXEC);
        map = fd < 0 ? MAP_FAILED : mmap(NULL, req->body_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (fd >= 0)
            close(fd);
        if (map == MAP_FAILED) {
            rest_reply_error(req, 500, 13, "Error in the storage area", strerror(errno));
            return;
        }
        body = map;
    }
    const char *end = body + req->body_len;
    size_t blen = strlen(boundary);
    const char *saved_body = req->body, *saved_path = req->body_path;
    size_t saved_len = req->body_len;
    bool failed = false;
    /* the first delimiter may follow a preamble; the others follow CRLF */
    const char *p = memmem(body, req->body_len, boundary, blen);
    while (p && !failed) {
        p += blen;
        if (end - p < 2 || (p[0] == '-' && p[1] == '-'))
            break; /* the closing delimiter */
        const char *headers_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!headers_end)
            break;
        const char *data = headers_end + 4;
        const char *next = NULL;
        for (const char *q = data; q < end;) {
            const char *crlf = memmem(q, (size_t)(end - q), "\r\n", 2);
            if (!crlf || (size_t)(end - crlf) < 2 + blen)
                break;
            if (memcmp(crlf + 2, boundary, blen) == 0) {
                next = crlf;
                break;
            }
            q = crlf + 2;
        }
        if (!next)
            break; /* no closing delimiter: the part is cut, nothing is stored of it */
        char path[4096];
        if (bytes_to_temp(req, data, (size_t)(next - data), path, sizeof(path))) {
            failed = true;
            break;
        }
        req->body = NULL;
        req->body_path = path;
        req->body_len = (size_t)(next - data);
        upload_body(req);
        unlink(path); /* gone already when ingest took it over */
        failed = req->status != 200;
        p = next + 2;
    }
    req->body = saved_body;
    req->body_path = saved_path;
    req->body_len = saved_len;
    if (map)
        munmap(map, saved_len);
    if (!failed)
        rest_reply_text(req, 200, "", 0);
}

/* POST /instances: one DICOM file (or a ZIP of them) as the body, stored
 * through ingest's write path; or a multipart/form-data of such bodies. */
void rest_upload_instance(rest_request *req)
{
    char boundary[128];
    if (form_boundary(req, boundary, sizeof(boundary))) {
        upload_form(req, boundary);
        return;
    }
    upload_body(req);
}

static void upload_body(rest_request *req)
{
    if (req->body_len == 0) {
        rest_reply_error(req, 400, 15, "Bad file format", "Received an empty DICOM file");
        return;
    }
    char magic[4] = {0};
    if (req->body_path) {
        int fd = open(req->body_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, magic, sizeof(magic)) < 0)
            memset(magic, 0, sizeof(magic));
        if (fd >= 0)
            close(fd);
    } else if (req->body_len >= 4) {
        memcpy(magic, req->body, 4);
    }
    if (memcmp(magic, "PK\x03\x04", 4) == 0) {
        upload_zip(req);
        return;
    }
    json_t *answer;
    if (store_one(req, req->body, req->body_len, req->body_path, &answer, false) == 200)
        rest_reply_json(req, 200, answer);
    else
        json_decref(answer);
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
        rest_reply_error(req, 400, 8, "Bad request", "the body must be one DICOM identifier");
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
    "   coalesce(sum(a.uncompressed_size), 0)::bigint AS raw"
    "  FROM d LEFT JOIN attachments a ON a.resource_id = d.id)"
    " SELECT jsonb_strip_nulls(jsonb_build_object("
    "   'CountStudies', CASE WHEN $2::smallint = 0 THEN studies END,"
    "   'CountSeries', CASE WHEN $2::smallint <= 1 THEN series END,"
    "   'CountInstances', CASE WHEN $2::smallint <= 2 THEN instances END,"
    "   'DiskSize', disk::text, 'DiskSizeMB', disk / 1048576,"
    "   'UncompressedSize', raw::text, 'UncompressedSizeMB', raw / 1048576)), found::text FROM s",
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

int rest_store_temp_file(rest_request *req, const char *temp_path, json_t **answer)
{
    return store_one(req, NULL, 0, temp_path, answer, true);
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
            rest_reply_error(req, 400, 15, "Bad file format", "Boolean value expected");
            return;
        }
    }
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_error(req, 400, 3, "Parameter out of range", NULL);
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
            rest_reply_error(req, 400, 3, "Parameter out of range", NULL);
        else
            rest_reply_text(req, 200, "", 0);
        return;
    }
    if (!query(req, &get_protected, params, &r))
        return;
    if (!r.text)
        rest_reply_error(req, 400, 3, "Parameter out of range", NULL);
    else
        rest_reply_text(req, 200, r.text, strlen(r.text));
    read_one_clear(&r);
}
