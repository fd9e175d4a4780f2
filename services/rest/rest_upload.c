/* Uploads (see rest_upload.h): a DICOM file, a ZIP of them, or a
 * multipart/form-data of such bodies, each file stored through ingest's write
 * path over the bus (StoreRequest/StoreReply). */
#include "rest_upload.h"

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

#include "base/log.h"
#include "tessera.pb-c.h"

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
    case TESSERA__STORE_STATUS__STORE_ALREADY_STORED:
    case TESSERA__STORE_STATUS__STORE_FILTERED_OUT: {
        char path[64];
        snprintf(path, sizeof(path), "/instances/%s", r->instance_id);
        *answer = json_object();
        json_object_set_new(*answer, "ID", json_string(r->instance_id));
        json_object_set_new(*answer, "ParentPatient", json_string(r->patient_id));
        json_object_set_new(*answer, "ParentSeries", json_string(r->series_id));
        json_object_set_new(*answer, "ParentStudy", json_string(r->study_id));
        json_object_set_new(*answer, "Path", json_string(path));
        json_object_set_new(*answer, "Status",
                            json_string(r->status == TESSERA__STORE_STATUS__STORE_STORED ? "Success"
                                        : r->status == TESSERA__STORE_STATUS__STORE_FILTERED_OUT
                                            ? "FilteredOut"
                                            : "AlreadyStored"));
        break;
    }
    case TESSERA__STORE_STATUS__STORE_INVALID_DICOM:
        status = 400;
        if (!quiet)
            rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_TOO_LARGE:
        status = 413;
        if (!quiet)
            rest_reply_oe_status(req, 413, TS_OE_BAD_REQUEST, r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_DB_UNAVAILABLE:
        status = 503;
        if (!quiet)
            rest_reply_failure(req, TS_EDB_BUSY, r->error);
        break;
    case TESSERA__STORE_STATUS__STORE_STORAGE_ERROR:
        status = 507;
        if (!quiet)
            rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, r->error);
        break;
    default:
        status = 500;
        if (!quiet)
            rest_reply_oe(req, TS_OE_INTERNAL_ERROR, r->error);
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
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, archive_error_string(a));
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
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, archive_error_string(a));
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
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
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
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, details);
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
            rest_reply_oe(req, TS_OE_FILE_STORAGE_CANNOT_WRITE, strerror(errno));
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
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Received an empty DICOM file");
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

int rest_store_temp_file(rest_request *req, const char *temp_path, json_t **answer)
{
    return store_one(req, NULL, 0, temp_path, answer, true);
}
