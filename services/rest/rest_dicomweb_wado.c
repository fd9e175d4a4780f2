/* WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames.
 *
 * Instances go out as multipart/related; type="application/dicom", one part
 * per file, streamed: memory is the list of files (one query) and one buffer,
 * whatever the size of the study. Files are sent as stored (Tessera does not
 * transcode): each part names its transfer syntax, and an Accept that asks
 * for a syntax a file is not stored in is answered 406.
 *
 * Metadata is the DICOM JSON stored at ingest (instances.dicomweb), one
 * indexed read for a study or a series; an instance stored before that column
 * existed is read from its file (nothing is written back: reads stay
 * read-only). BulkDataURIs point under .../instances/{i}/bulk/. */
#include "rest_dicomweb_wado.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom/dicom.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_xml.h"

#define DW_MAX_FRAMES 4096

/* ---- a multipart/related answer made while it is sent ------------------------ */

typedef enum { MP_FILES, MP_FRAMES, MP_VALUE } mp_kind;

typedef struct mp_stream {
    mp_kind kind;
    char boundary[40];
    char hdr[600];
    size_t hdr_len, hdr_pos;
    int fd;                  /* the current part's file (MP_FILES) */
    ts_dicom_reader *reader; /* the current part's value (MP_FRAMES, MP_VALUE) */
    bool closed;
    ts_store *store;
    PGresult *res; /* MP_FILES: dw_instances' rows */
    int row;
    char path[4096];  /* MP_FRAMES: the file */
    unsigned *frames; /* 1-based */
    size_t nframes, next_frame;
} mp_stream;

static void mp_free(void *cls)
{
    mp_stream *s = cls;
    if (s->fd >= 0)
        close(s->fd);
    ts_dicom_reader_free(s->reader);
    if (s->res)
        PQclear(s->res);
    free(s->frames);
    free(s);
}

static mp_stream *mp_new(mp_kind kind, ts_store *store)
{
    mp_stream *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->kind = kind;
    s->fd = -1;
    s->store = store;
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    int n = snprintf(s->boundary, sizeof(s->boundary), "tessera-");
    for (size_t i = 0; i < sizeof(rnd) && n + 3 < (int)sizeof(s->boundary); i++)
        n += snprintf(s->boundary + n, sizeof(s->boundary) - (size_t)n, "%02x", rnd[i]);
    return s;
}

static void mp_header(mp_stream *s, const char *content_type)
{
    s->hdr_len = (size_t)snprintf(s->hdr, sizeof(s->hdr), "--%s\r\nContent-Type: %s\r\n\r\n",
                                  s->boundary, content_type);
    s->hdr_pos = 0;
}

/* Opens the next part; false when there is none left. */
static bool mp_next_part(mp_stream *s)
{
    ts_err err;
    if (s->kind == MP_FILES) {
        while (s->row < PQntuples(s->res)) {
            int r = s->row++;
            char path[4096], type[200];
            if (ts_store_path(s->store, PQgetvalue(s->res, r, DW_COL_UUID), path, sizeof(path),
                              &err) ||
                (s->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
                /* deleted since the listing: left out, as archives do */
                ts_warn("dicomweb: file gone", "uuid=%s", PQgetvalue(s->res, r, DW_COL_UUID));
                continue;
            }
            const char *syntax = PQgetvalue(s->res, r, DW_COL_SYNTAX);
            if (*syntax)
                snprintf(type, sizeof(type), "application/dicom; transfer-syntax=%s", syntax);
            else
                snprintf(type, sizeof(type), "application/dicom");
            mp_header(s, type);
            return true;
        }
        return false;
    }
    if (s->kind == MP_FRAMES && s->next_frame < s->nframes) {
        const char *mime = NULL;
        if (ts_dicom_frame_raw(s->path, s->frames[s->next_frame++] - 1, &s->reader, &mime, &err)) {
            ts_warn("dicomweb: frame unreadable", "error=\"%s\"", err.msg);
            return false;
        }
        mp_header(s, mime);
        return true;
    }
    if (s->kind == MP_VALUE && s->reader && !s->hdr_len) {
        mp_header(s, "application/octet-stream");
        return true;
    }
    return false;
}

static ssize_t mp_read(void *cls, char *buf, size_t max)
{
    mp_stream *s = cls;
    size_t w = 0;
    while (w < max) {
        if (s->hdr_pos < s->hdr_len) {
            size_t n = s->hdr_len - s->hdr_pos;
            if (n > max - w)
                n = max - w;
            memcpy(buf + w, s->hdr + s->hdr_pos, n);
            s->hdr_pos += n;
            w += n;
            continue;
        }
        if (s->fd >= 0) {
            ssize_t n = read(s->fd, buf + w, max - w);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -1;
            if (n > 0) {
                w += (size_t)n;
                continue;
            }
            close(s->fd);
            s->fd = -1;
        } else if (s->reader && s->hdr_len) {
            size_t got = 0;
            ts_err err;
            if (ts_dicom_reader_read(s->reader, buf + w, max - w, &got, &err))
                return -1;
            if (got > 0) {
                w += got;
                continue;
            }
            ts_dicom_reader_free(s->reader);
            s->reader = NULL;
        } else if (s->closed) {
            break;
        } else {
            /* between parts: the delimiter of the next one, or the close */
            bool first = s->hdr_len == 0;
            char prev[8];
            snprintf(prev, sizeof(prev), "%s", first ? "" : "\r\n");
            if (s->kind == MP_VALUE && !first) {
                s->hdr_len =
                    (size_t)snprintf(s->hdr, sizeof(s->hdr), "\r\n--%s--\r\n", s->boundary);
                s->hdr_pos = 0;
                s->closed = true;
            } else if (mp_next_part(s)) {
                if (!first) { /* the CRLF that ends the previous part's body */
                    memmove(s->hdr + 2, s->hdr,
                            s->hdr_len + 1 < sizeof(s->hdr) - 2 ? s->hdr_len + 1
                                                                : sizeof(s->hdr) - 2);
                    memcpy(s->hdr, "\r\n", 2);
                    s->hdr_len += 2;
                }
            } else {
                s->hdr_len =
                    (size_t)snprintf(s->hdr, sizeof(s->hdr), "%s--%s--\r\n", prev, s->boundary);
                s->hdr_pos = 0;
                s->closed = true;
            }
        }
    }
    return (ssize_t)w;
}

static void mp_reply(rest_request *req, mp_stream *s, const char *type)
{
    char ct[160];
    snprintf(ct, sizeof(ct), "multipart/related; type=\"%s\"; boundary=%s", type, s->boundary);
    /* the header's text must outlive the handler: keep it in the request */
    rest_reply_stream(req, NULL, -1, mp_read, mp_free, s);
    rest_add_header(req, "Content-Type", ct);
}

/* ---- instances ----------------------------------------------------------------- */

/* Accept for multipart/related of application/dicom: the transfer syntax
 * asked for ("" or "*": as stored). Answers 406 and returns false otherwise. */
static bool accept_dicom(rest_request *req, char *syntax, size_t size)
{
    const char *accept = rest_header(req, "Accept");
    syntax[0] = '\0';
    if (!accept || !*accept)
        return true;
    size_t pos = 0;
    dw_media m;
    while (dw_accept_next(accept, &pos, &m)) {
        bool range_ok = strcmp(m.range, "*/*") == 0 || strcmp(m.range, "multipart/*") == 0 ||
                        strcmp(m.range, "multipart/related") == 0;
        if (range_ok && (!m.type[0] || strcmp(m.type, "application/dicom") == 0)) {
            snprintf(syntax, size, "%s", strcmp(m.transfer_syntax, "*") ? m.transfer_syntax : "");
            return true;
        }
    }
    dw_error(req, 406,
             "instances are sent as multipart/related; type=\"application/dicom\" only, not as "
             "\"%.200s\"",
             accept);
    return false;
}

void rest_dw_retrieve(rest_request *req)
{
    dw_cors(req);
    char syntax[80];
    if (!accept_dicom(req, syntax, sizeof(syntax)))
        return;
    PGresult *res = dw_instances(req, false);
    if (!res)
        return;
    for (int r = 0; syntax[0] && r < PQntuples(res); r++)
        if (strcmp(PQgetvalue(res, r, DW_COL_SYNTAX), syntax) != 0) {
            dw_error(req, 406,
                     "instance %s is stored as %s and Tessera does not transcode; ask for "
                     "transfer-syntax=* to get the files as stored",
                     PQgetvalue(res, r, DW_COL_SOP), PQgetvalue(res, r, DW_COL_SYNTAX));
            PQclear(res);
            return;
        }
    mp_stream *s = mp_new(MP_FILES, req->ctx->store);
    s->res = res;
    mp_reply(req, s, "application/dicom");
}

/* ---- metadata ------------------------------------------------------------------- */

/* The answer being built: a growing buffer. */
typedef struct meta_buf {
    char *data;
    size_t len, cap;
} meta_buf;

static void meta_reserve(meta_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    while (b->len + more > b->cap)
        b->cap = b->cap ? 2 * b->cap : 65536;
    b->data = realloc(b->data, b->cap);
    if (!b->data)
        abort();
}

/* Appends an instance's stored DICOM JSON (jsonb's text: blanks after ',' and
 * ':') without the blanks between tokens, with prefix put before every
 * BulkDataURI value ("/7fe00010" is relative to the instance). One pass over
 * the text instead of a parse and a dump: a series' metadata is thousands of
 * these. Inside a JSON string every '"' is escaped, so a "BulkDataURI" key
 * followed by ':' is always the key. */
static void append_metadata(meta_buf *b, const char *text, const char *prefix)
{
    size_t n = strlen(text), plen = strlen(prefix);
    meta_reserve(b, n);
    bool in_str = false, esc = false, bulk_value = false;
    size_t str_start = 0, str_end = 0; /* the last string closed, in b->data */
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (in_str) {
            b->data[b->len++] = c;
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"') {
                in_str = false;
                str_end = b->len;
            }
            continue;
        }
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r')
            continue;
        if (c == ':' && str_end - str_start == 13 &&
            memcmp(b->data + str_start, "\"BulkDataURI\"", 13) == 0) {
            b->data[b->len++] = c;
            bulk_value = true;
            continue;
        }
        b->data[b->len++] = c;
        if (c == '"') {
            in_str = true;
            str_start = b->len - 1;
            if (bulk_value) {
                meta_reserve(b, plen + (n - i));
                memcpy(b->data + b->len, prefix, plen);
                b->len += plen;
            }
        }
        bulk_value = false;
    }
}

/* An instance stored before instances.dicomweb existed: its file. */
static json_t *file_metadata(rest_request *req, PGresult *res, int r, const char *prefix)
{
    char path[4096];
    ts_err err;
    ts_dicom *d = NULL;
    if (ts_store_path(req->ctx->store, PQgetvalue(res, r, DW_COL_UUID), path, sizeof(path), &err) ||
        ts_dicom_open_file(path, &d, &err)) {
        ts_warn("dicomweb: metadata unreadable", "sop=%s error=\"%s\"",
                PQgetvalue(res, r, DW_COL_SOP), err.msg);
        return NULL;
    }
    json_t *j = ts_dicom_to_dicomweb_json(d, prefix);
    ts_dicom_free(d);
    return j;
}

void rest_dw_metadata(rest_request *req)
{
    dw_cors(req);
    bool xml;
    if (!dw_accept_dataset(req, &xml))
        return;
    PGresult *res = dw_instances(req, true);
    if (!res)
        return;
    char root[320];
    dw_root(req, root, sizeof(root));
    meta_buf b = {0};
    meta_reserve(&b, 1);
    b.data[b.len++] = '[';
    for (int r = 0; r < PQntuples(res); r++) {
        char prefix[1024];
        snprintf(prefix, sizeof(prefix), "%s/studies/%s/series/%s/instances/%s/bulk", root,
                 PQgetvalue(res, r, DW_COL_STUDY), PQgetvalue(res, r, DW_COL_SERIES),
                 PQgetvalue(res, r, DW_COL_SOP));
        size_t before = b.len;
        meta_reserve(&b, 1);
        if (b.len > 1)
            b.data[b.len++] = ',';
        if (!PQgetisnull(res, r, DW_COL_DICOMWEB)) {
            append_metadata(&b, PQgetvalue(res, r, DW_COL_DICOMWEB), prefix);
            continue;
        }
        json_t *j = file_metadata(req, res, r, prefix);
        if (!j) {
            b.len = before;
            continue;
        }
        char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        if (!text)
            abort();
        size_t n = strlen(text);
        meta_reserve(&b, n);
        memcpy(b.data + b.len, text, n);
        b.len += n;
        free(text);
    }
    meta_reserve(&b, 1);
    b.data[b.len++] = ']';
    PQclear(res);
    if (xml) {
        /* XML is written from the JSON model: parsed once more, the rarer answer */
        json_t *all = json_loadb(b.data, b.len, 0, NULL);
        free(b.data);
        if (!all) {
            rest_reply_oe(req, TS_OE_INTERNAL_ERROR, "stored DICOM JSON that does not parse");
            return;
        }
        dw_reply_xml(req, all);
        json_decref(all);
        return;
    }
    rest_reply_text(req, 200, b.data, b.len);
    free(b.data);
    req->content_type = DW_JSON;
}

/* ---- bulk data and frames --------------------------------------------------------- */

/* Accept for multipart/related of octet-stream (or, when compressed_ok, of
 * the frames' own media types). */
static bool accept_octets(rest_request *req, bool *any_type)
{
    const char *accept = rest_header(req, "Accept");
    *any_type = true;
    if (!accept || !*accept)
        return true;
    size_t pos = 0;
    dw_media m;
    while (dw_accept_next(accept, &pos, &m)) {
        bool range_ok = strcmp(m.range, "*/*") == 0 || strcmp(m.range, "multipart/*") == 0 ||
                        strcmp(m.range, "multipart/related") == 0;
        if (!range_ok)
            continue;
        if (!m.type[0] || strcmp(m.type, "*/*") == 0 || strcmp(m.transfer_syntax, "*") == 0)
            return true;
        if (strcmp(m.type, "application/octet-stream") == 0) {
            *any_type = false;
            return true;
        }
    }
    dw_error(req, 406,
             "bulk data and frames are sent as multipart/related; "
             "type=\"application/octet-stream\", not as \"%.200s\"",
             accept);
    return false;
}

/* The file of the instance of the path. */
static bool instance_file(rest_request *req, char *path, size_t size)
{
    PGresult *res = dw_instances(req, false);
    if (!res)
        return false;
    ts_err err;
    int rc = ts_store_path(req->ctx->store, PQgetvalue(res, 0, DW_COL_UUID), path, size, &err);
    PQclear(res);
    if (rc)
        rest_reply_failure(req, rc, err.msg);
    return rc == 0;
}

static void reply_frames(rest_request *req, const char *path, unsigned *frames, size_t n,
                         bool any_type)
{
    if (!any_type)
        /* octet-stream only: a compressed frame cannot be given as asked */
        for (size_t i = 0; i < n; i++) {
            ts_dicom_reader *rd = NULL;
            const char *mime = NULL;
            ts_err err;
            int rc = ts_dicom_frame_raw(path, frames[i] - 1, &rd, &mime, &err);
            ts_dicom_reader_free(rd);
            if (rc == 0 && strcmp(mime, "application/octet-stream") != 0) {
                dw_error(req, 406,
                         "frame %u is stored compressed (%s) and Tessera does not transcode; "
                         "accept type=\"%s\" or transfer-syntax=*",
                         frames[i], mime, mime);
                free(frames);
                return;
            }
        }
    mp_stream *s = mp_new(MP_FRAMES, req->ctx->store);
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->frames = frames;
    s->nframes = n;
    mp_reply(req, s, "application/octet-stream");
}

void rest_dw_frames(rest_request *req)
{
    dw_cors(req);
    bool any_type;
    if (!accept_octets(req, &any_type))
        return;
    char path[4096];
    if (!instance_file(req, path, sizeof(path)))
        return;
    unsigned count = 1;
    ts_err err;
    if (ts_dicom_frame_count(path, &count, &err)) {
        rest_reply_failure(req, TS_EDICOM, err.msg);
        return;
    }
    unsigned *frames = calloc(DW_MAX_FRAMES, sizeof(*frames));
    if (!frames)
        abort();
    size_t n = 0;
    const char *p = req->seg[8];
    while (*p) {
        char *end;
        unsigned long f = strtoul(p, &end, 10);
        if (end == p || (*end && *end != ',') || f == 0 || n == DW_MAX_FRAMES || *p == '-') {
            dw_error(req, 400, "frame list \"%.100s\": frames are numbers from 1, comma-separated",
                     req->seg[8]);
            free(frames);
            return;
        }
        if (f > count) {
            dw_error(req, 404, "instance %s has %u frame(s), not %lu", req->seg[6], count, f);
            free(frames);
            return;
        }
        frames[n++] = (unsigned)f;
        p = *end ? end + 1 : end;
    }
    reply_frames(req, path, frames, n, any_type);
}

void rest_dw_bulk(rest_request *req)
{
    dw_cors(req);
    bool any_type;
    if (!accept_octets(req, &any_type))
        return;
    /* bulk/{tag}[/{item from 1}/{tag}]... */
    int first = 8, n = req->nseg - first;
    const char *path_seg[REST_MAX_SEGMENTS];
    char items[REST_MAX_SEGMENTS][16];
    if (n < 1 || n % 2 == 0) {
        dw_error(req, 404, "a bulk data path is a tag, or tags and item numbers alternating");
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *s = req->seg[first + i];
        if (i % 2 == 0) {
            if (strlen(s) != 8 || strspn(s, "0123456789abcdefABCDEF") != 8) {
                dw_error(req, 404, "\"%.40s\" is not a tag of 8 hex digits", s);
                return;
            }
            path_seg[i] = s;
        } else {
            char *end;
            long item = strtol(s, &end, 10);
            if (end == s || *end || item < 1 || item > 1000000) {
                dw_error(req, 404, "\"%.40s\" is not an item number (from 1)", s);
                return;
            }
            snprintf(items[i], sizeof(items[i]), "%ld", item - 1);
            path_seg[i] = items[i];
        }
    }
    char file[4096];
    if (!instance_file(req, file, sizeof(file)))
        return;
    if (n == 1 && strcasecmp(path_seg[0], "7fe00010") == 0) {
        /* pixel data: its frames, one part each */
        unsigned count = 1;
        ts_err err;
        if (ts_dicom_frame_count(file, &count, &err)) {
            rest_reply_failure(req, TS_EDICOM, err.msg);
            return;
        }
        if (count > DW_MAX_FRAMES)
            count = DW_MAX_FRAMES;
        unsigned *frames = calloc(count, sizeof(*frames));
        if (!frames)
            abort();
        for (unsigned i = 0; i < count; i++)
            frames[i] = i + 1;
        reply_frames(req, file, frames, count, any_type);
        return;
    }
    ts_dicom_content c = {0};
    ts_err err;
    int rc = ts_dicom_content_get(file, path_seg, (size_t)n, &c, &err);
    if (rc == TS_ENOTFOUND || rc == TS_EINVAL || (rc == 0 && !c.value)) {
        ts_dicom_content_clear(&c);
        dw_error(req, 404, "no bulk data at this path");
        return;
    }
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return;
    }
    mp_stream *s = mp_new(MP_VALUE, req->ctx->store);
    s->reader = c.value;
    c.value = NULL;
    ts_dicom_content_clear(&c);
    mp_reply(req, s, "application/octet-stream");
}

/* ---- WADO-URI ---------------------------------------------------------------------- */

/* Is media (type/subtype, parameters and blanks ignored, any case) in the
 * comma-separated list? */
static bool media_listed(const char *list, const char *media)
{
    size_t mlen = strlen(media);
    for (const char *p = list; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",;");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == mlen && strncasecmp(p, media, m) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

/* One instance by its SOP Instance UID (an index read), in the columns of
 * dw_instances (DW_COL_*, without the JSON), checked against the series and
 * study UIDs when they are given. Two instances with one UID (under two
 * patients) are not told apart: 404. */
static const ts_db_stmt uri_instance_stmt = {
    "rest_dw_uri_instance",
    "SELECT a.uuid::text, a.uncompressed_size::text, st.study_instance_uid,"
    " se.series_instance_uid, i.sop_instance_uid, coalesce(i.sop_class_uid, ''),"
    " coalesce((SELECT m.value FROM metadata m WHERE m.resource_id = ri.id"
    "  AND m.name = 'TransferSyntax'), '')"
    " FROM instances i JOIN resources ri ON ri.id = i.resource_id"
    " JOIN series se ON se.resource_id = ri.parent_id"
    " JOIN resources rse ON rse.id = ri.parent_id JOIN studies st ON st.resource_id = rse.parent_id"
    " JOIN attachments a ON a.resource_id = ri.id AND a.content_type = 1"
    " WHERE i.sop_instance_uid = $1 AND ($2 = '' OR se.series_instance_uid = $2)"
    " AND ($3 = '' OR st.study_instance_uid = $3) LIMIT 2",
    3};

void rest_dw_wado_uri(rest_request *req)
{
    dw_cors(req);
    const char *type = rest_arg(req, "requestType");
    if (!type || strcmp(type, "WADO") != 0) {
        dw_error(req, 400, "requestType=WADO is required (PS3.18 9.1.2), not \"%.40s\"",
                 type ? type : "");
        return;
    }
    /* objectUID finds the instance; studyUID and seriesUID, which PS3.18 asks
     * for and Orthanc's plugin takes as optional, must then be its own */
    static const char *const names[] = {"studyUID", "seriesUID", "objectUID"};
    const char *uids[3];
    for (int k = 0; k < 3; k++) {
        uids[k] = rest_arg(req, names[k]);
        if (!uids[k])
            uids[k] = "";
        if ((uids[k][0] || k == 2) && !dw_uid_valid(uids[k])) {
            dw_error(req, 400, "%s \"%.80s\" is not a UID", names[k], uids[k]);
            return;
        }
    }
    const char *content = rest_arg(req, "contentType");
    if (!content || !media_listed(content, "application/dicom")) {
        /* without contentType PS3.18 asks for image/jpeg: rendering too */
        dw_error(req, 406,
                 "contentType \"%.80s\" is a rendered image, which Tessera does not make yet; "
                 "contentType=application/dicom gives the file as stored",
                 content ? content : "(absent: image/jpeg)");
        return;
    }
    const char *anonymize = rest_arg(req, "anonymize");
    if (anonymize && strcmp(anonymize, "yes") == 0) {
        dw_error(req, 400, "anonymize=yes is not supported");
        return;
    }
    const char *params[] = {uids[2], uids[1], uids[0]};
    PGresult *res = rest_rows_query(req, &uri_instance_stmt, params);
    if (!res)
        return;
    if (PQntuples(res) != 1) {
        dw_error(req, 404, "no objectUID %s here%s", uids[2],
                 uids[0][0] || uids[1][0] ? " under the studyUID and seriesUID given" : "");
        PQclear(res);
        return;
    }
    const char *syntax = rest_arg(req, "transferSyntax");
    if (syntax && *syntax && strcmp(syntax, "*") != 0 &&
        strcmp(syntax, PQgetvalue(res, 0, DW_COL_SYNTAX)) != 0) {
        dw_error(req, 406,
                 "instance %s is stored as %s and Tessera does not transcode; leave out "
                 "transferSyntax to get the file as stored",
                 PQgetvalue(res, 0, DW_COL_SOP), PQgetvalue(res, 0, DW_COL_SYNTAX));
        PQclear(res);
        return;
    }
    char path[4096];
    ts_err err;
    int rc =
        ts_store_path(req->ctx->store, PQgetvalue(res, 0, DW_COL_UUID), path, sizeof(path), &err);
    int fd = rc ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        /* deleted between the query and now */
        if (fd >= 0)
            close(fd);
        ts_warn("dicomweb: file gone", "uuid=%s", PQgetvalue(res, 0, DW_COL_UUID));
        dw_error(req, 404, "no objectUID %s here", uids[2]);
        PQclear(res);
        return;
    }
    PQclear(res);
    rest_reply_file(req, fd, (size_t)st.st_size, "application/dicom");
}
