/* WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames.
 *
 * Instances go out as multipart/related; type="application/dicom", one part
 * per file, streamed: memory is the list of files (one query, which also gives
 * their sizes, hence the Content-Length) and one buffer, whatever the size of
 * the study. Files are sent as stored unless Accept asks
 * for a transfer-syntax (PS3.18 8.7.3.5.2): then each file in another syntax
 * is converted as its part is sent (lib/dicom/transcode.cc; one instance in
 * memory at a time); each part names its transfer syntax, and a syntax that
 * is unknown or that a file cannot be converted to is answered 406.
 * Frames likewise: octet-stream means native pixels (a compressed instance is
 * decoded first), a transfer-syntax asks for that one.
 *
 * Metadata is the DICOM JSON stored at ingest (instances.dicomweb), one
 * indexed read for a study or a series; an instance stored before that column
 * existed is read from its file (nothing is written back: reads stay
 * read-only). BulkDataURIs point under .../instances/{i}/bulk/. */
#include "rest_dicomweb_wado.h"
#include "rest_gzip.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "dicom/image.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_xml.h"
#include "rest_image.h"

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
    char want[80]; /* MP_FILES: the transfer syntax asked for ("": as stored) */
    char *mem;     /* MP_FILES: the current part, converted */
    size_t mem_len, mem_pos;
    int keep_fd;          /* MP_FRAMES: a memfd holding the converted file, or -1 */
    bool sized;           /* MP_FILES as stored: Content-Length from the index's sizes */
    long long part_left;  /* sized: bytes of the current file still to send */
    bool failed;          /* sized: a file is gone or changed, the answer is cut */
    rest_region *regions; /* mp_map: the whole answer, files mapped */
    unsigned nregions;
    char *heads;          /* mp_map: the text between the files */
    char frame_type[160]; /* MP_FRAMES: each part's Content-Type */
} mp_stream;

/* Releases mp_map's mappings (every other region, from the second, is a file). */
static void mp_unmap(mp_stream *s)
{
    for (unsigned i = 1; i < s->nregions; i += 2)
        if (s->regions[i].len)
            munmap((void *)s->regions[i].base, s->regions[i].len);
    free(s->regions);
    free(s->heads);
    s->regions = NULL;
    s->heads = NULL;
    s->nregions = 0;
}

static void mp_free(void *cls)
{
    mp_stream *s = cls;
    if (s->fd >= 0)
        close(s->fd);
    ts_dicom_reader_free(s->reader);
    if (s->res)
        PQclear(s->res);
    if (s->keep_fd >= 0)
        close(s->keep_fd);
    free(s->mem);
    free(s->frames);
    mp_unmap(s);
    free(s);
}

static mp_stream *mp_new(mp_kind kind, ts_store *store)
{
    mp_stream *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->kind = kind;
    s->fd = -1;
    s->keep_fd = -1;
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

/* The Content-Type of a part of a file in syntax ("": unknown). */
static void part_type(const char *syntax, char *out, size_t size)
{
    if (*syntax)
        snprintf(out, size, "application/dicom; transfer-syntax=%s", syntax);
    else
        snprintf(out, size, "application/dicom");
}

/* Opens the next part; false when there is none left (or s->failed). */
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
                /* deleted since the listing: left out, as archives do, unless the
                 * Content-Length counted it: then the answer is cut (the client
                 * sees it short rather than silently without an instance) */
                ts_warn("dicomweb: file gone", "uuid=%s", PQgetvalue(s->res, r, DW_COL_UUID));
                if (s->sized) {
                    s->failed = true;
                    return false;
                }
                continue;
            }
            s->part_left = strtoll(PQgetvalue(s->res, r, DW_COL_SIZE), NULL, 10);
            const char *syntax = PQgetvalue(s->res, r, DW_COL_SYNTAX);
            if (s->want[0] && strcmp(syntax, s->want) != 0) {
                void *out = NULL;
                size_t len = 0;
                if (ts_dicom_transcode_file(path, s->want, TS_TRANSCODE_ALLOW_LOSSY, &out, &len,
                                            &err)) {
                    /* the answer has begun: left out, with a line saying why */
                    ts_warn("dicomweb: instance left out, conversion failed",
                            "sop=%s syntax=%s to=%s error=\"%s\"",
                            PQgetvalue(s->res, r, DW_COL_SOP), syntax, s->want, err.msg);
                    close(s->fd);
                    s->fd = -1;
                    continue;
                }
                if (out) { /* (NULL: it was in that syntax after all) */
                    close(s->fd);
                    s->fd = -1;
                    s->mem = out;
                    s->mem_len = len;
                    s->mem_pos = 0;
                    syntax = s->want;
                }
            }
            part_type(syntax, type, sizeof(type));
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
        mp_header(s, s->frame_type[0] ? s->frame_type : mime);
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
        if (s->mem) {
            size_t n = s->mem_len - s->mem_pos;
            if (n > max - w)
                n = max - w;
            memcpy(buf + w, s->mem + s->mem_pos, n);
            s->mem_pos += n;
            w += n;
            if (s->mem_pos == s->mem_len) {
                free(s->mem);
                s->mem = NULL;
            }
        } else if (s->fd >= 0) {
            size_t want = max - w;
            if (s->sized && (long long)want > s->part_left)
                want = (size_t)s->part_left;
            ssize_t n = want ? read(s->fd, buf + w, want) : 0;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -1;
            if (n > 0) {
                w += (size_t)n;
                s->part_left -= n;
                continue;
            }
            if (s->sized && s->part_left) {
                ts_warn("dicomweb: file shorter than indexed, answer cut", "left=%lld",
                        s->part_left);
                return -1;
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
            } else if (s->failed) {
                return -1;
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

/* The files as stored (MP_FILES, sized), each mapped read-only, and the text
 * between them: the same bytes as mp_read, for rest_reply_stream_mapped (one
 * copy, page cache to socket, made by the kernel in sendmsg(): over loopback
 * rest's CPU per byte is about halved, docs/benchmarks.md). Everything is
 * opened before the answer starts; a file gone, shorter than indexed or not
 * mappable gives up (-1, nothing left mapped) and mp_read then does what it
 * always does, cutting the answer where that file comes. A file replaced or
 * deleted after this keeps its mapped bytes (the mapping holds the inode); one
 * truncated in place meanwhile makes sendmsg() fail with EFAULT (the kernel,
 * not rest, touches the pages: no SIGBUS) and the answer is cut. */
static int mp_map(void *cls, unsigned max, const rest_region **out, unsigned *nout)
{
    mp_stream *s = cls;
    unsigned rows = (unsigned)PQntuples(s->res);
    if (s->kind != MP_FILES || !s->sized || s->row || rows >= max / 2)
        return -1;
    size_t blen = strlen(s->boundary), cap = (size_t)rows * (sizeof(s->hdr) + 2) + blen + 16;
    s->heads = malloc(cap);
    s->regions = calloc(2 * (size_t)rows + 1, sizeof(*s->regions));
    if (!s->heads || !s->regions)
        abort();
    size_t pos = 0;
    for (unsigned r = 0; r < rows; r++) {
        char path[4096], type[200];
        ts_err err;
        const char *uuid = PQgetvalue(s->res, (int)r, DW_COL_UUID);
        size_t len = (size_t)strtoll(PQgetvalue(s->res, (int)r, DW_COL_SIZE), NULL, 10);
        struct stat st;
        int fd = -1;
        void *m = NULL;
        if (ts_store_path(s->store, uuid, path, sizeof(path), &err) ||
            (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) ||
            (size_t)st.st_size < len ||
            (len && (m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED)) {
            if (fd >= 0)
                close(fd);
            mp_unmap(s);
            return -1;
        }
        close(fd);
        part_type(PQgetvalue(s->res, (int)r, DW_COL_SYNTAX), type, sizeof(type));
        int n = snprintf(s->heads + pos, cap - pos, "%s--%s\r\nContent-Type: %s\r\n\r\n",
                         r ? "\r\n" : "", s->boundary, type);
        s->regions[s->nregions++] = (rest_region){s->heads + pos, (size_t)n};
        s->regions[s->nregions++] = (rest_region){m, len};
        pos += (size_t)n;
    }
    int n = snprintf(s->heads + pos, cap - pos, "%s--%s--\r\n", rows ? "\r\n" : "", s->boundary);
    s->regions[s->nregions++] = (rest_region){s->heads + pos, (size_t)n};
    *out = s->regions;
    *nout = s->nregions;
    return 0;
}

static void mp_reply(rest_request *req, mp_stream *s, const char *type, long long size)
{
    char ct[256]; /* type: a media type with its transfer-syntax parameter */
    snprintf(ct, sizeof(ct), "multipart/related; type=\"%s\"; boundary=%s", type, s->boundary);
    /* the header's text must outlive the handler: keep it in the request */
    rest_reply_stream(req, NULL, size, mp_read, mp_free, s);
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
    if (syntax[0] && !ts_transfer_syntax_known(syntax)) {
        dw_error(req, 406, "unknown transfer syntax %s", syntax);
        return;
    }
    PGresult *res = dw_instances(req, false);
    if (!res)
        return;
    /* Decided before the answer starts: each file that needs a conversion has
     * its header read (not its pixels) to know that one exists. */
    for (int r = 0; syntax[0] && r < PQntuples(res); r++) {
        const char *stored = PQgetvalue(res, r, DW_COL_SYNTAX);
        char path[4096];
        ts_err err;
        if (!strcmp(stored, syntax) ||
            ts_store_path(req->ctx->store, PQgetvalue(res, r, DW_COL_UUID), path, sizeof(path),
                          &err))
            continue;
        if (ts_dicom_transcode_check(path, syntax, TS_TRANSCODE_ALLOW_LOSSY, &err) ==
            TS_EUNSUPPORTED) {
            dw_error(req, 406,
                     "instance %s is stored as %s and cannot be converted to %s (%.200s); ask "
                     "for transfer-syntax=* to get the files as stored",
                     PQgetvalue(res, r, DW_COL_SOP), stored, syntax, err.msg);
            PQclear(res);
            return;
        }
    }
    mp_stream *s = mp_new(MP_FILES, req->ctx->store);
    s->res = res;
    snprintf(s->want, sizeof(s->want), "%s", syntax);
    /* Files as stored (no syntax asked for, or every file in it already): the
     * answer's length is known from the index (the stored files are the DICOM
     * files, uncompressed). With a Content-Length MHD reads into a buffer of
     * its block size (rest_http.c) instead of chunks as large as what is left
     * of the connection's memory pool: fewer reads and sends, less CPU
     * in rest and in the client (bench/wado-retrieve). Converted: chunked. */
    long long size = (long long)strlen(s->boundary) + 6; /* "--B--\r\n" */
    for (int r = 0; r < PQntuples(res) && size >= 0; r++) {
        const char *stored = PQgetvalue(res, r, DW_COL_SYNTAX);
        if (syntax[0] && strcmp(stored, syntax) != 0) {
            size = -1;
            break;
        }
        char type[200];
        part_type(stored, type, sizeof(type));
        /* "--B\r\nContent-Type: T\r\n\r\n", the file, CRLF */
        size += 2 + (long long)strlen(s->boundary) + 16 + (long long)strlen(type) + 4 +
                strtoll(PQgetvalue(res, r, DW_COL_SIZE), NULL, 10) + 2;
    }
    s->sized = size >= 0;
    mp_reply(req, s, "application/dicom", size);
    /* over plain HTTP the files go out from mappings of them (mp_map) */
    if (s->sized)
        rest_reply_stream_mapped(req, mp_map);
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
    /* thousands of near-identical instances: gzip makes 5.8 MB of a 500-image
     * series about 0.3 MB, for clients that take it (every browser) */
    rest_reply_owned_gzip(req, 200, b.data, b.len, DW_JSON);
}

/* ---- bulk data and frames --------------------------------------------------------- */

/* Accept for multipart/related of octet-stream (or, when compressed_ok, of
 * the frames' own media types). *want: the transfer-syntax asked for ("": as
 * stored, or native pixels for octet-stream). */
static bool accept_octets(rest_request *req, bool *any_type, char *want, size_t want_size)
{
    const char *accept = rest_header(req, "Accept");
    *any_type = true;
    want[0] = '\0';
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
            snprintf(want, want_size, "%s", m.transfer_syntax);
            return true;
        }
        /* a compressed frame type with its syntax: image/jp2; transfer-syntax=... */
        if (strncmp(m.type, "image/", 6) == 0 && m.transfer_syntax[0]) {
            snprintf(want, want_size, "%s", m.transfer_syntax);
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

static bool uncompressed_uid(const char *uid)
{
    return !strcmp(uid, "1.2.840.10008.1.2") || !strcmp(uid, "1.2.840.10008.1.2.1") ||
           !strcmp(uid, "1.2.840.10008.1.2.2") || !strcmp(uid, "1.2.840.10008.1.2.1.99");
}

/* The Content-Type of frames in a transfer syntax (PS3.18 Table 8.7.3-5): the
 * syntax's image type with the syntax named (also where it is the type's
 * default, so that no client has to know the defaults); native pixels are
 * application/octet-stream, and a compressed syntax without an image type is
 * application/octet-stream with the syntax named, never bare: a client must
 * not take compressed bytes for pixels. */
static void frame_media(const char *syntax, char *out, size_t size)
{
    static const struct {
        const char *uid, *type;
    } types[] = {
        {"1.2.840.10008.1.2.4.50", "image/jpeg"},  {"1.2.840.10008.1.2.4.51", "image/jpeg"},
        {"1.2.840.10008.1.2.4.57", "image/jpeg"},  {"1.2.840.10008.1.2.4.70", "image/jpeg"},
        {"1.2.840.10008.1.2.4.80", "image/jls"},   {"1.2.840.10008.1.2.4.81", "image/jls"},
        {"1.2.840.10008.1.2.4.90", "image/jp2"},   {"1.2.840.10008.1.2.4.91", "image/jp2"},
        {"1.2.840.10008.1.2.4.92", "image/jpx"},   {"1.2.840.10008.1.2.4.93", "image/jpx"},
        {"1.2.840.10008.1.2.4.201", "image/jphc"}, {"1.2.840.10008.1.2.4.202", "image/jphc"},
        {"1.2.840.10008.1.2.4.203", "image/jphc"}, {"1.2.840.10008.1.2.5", "image/x-dicom-rle"},
    };
    if (!syntax[0] || uncompressed_uid(syntax)) {
        snprintf(out, size, "application/octet-stream");
        return;
    }
    const char *type = "application/octet-stream";
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (!strcmp(types[i].uid, syntax))
            type = types[i].type;
    snprintf(out, size, "%s; transfer-syntax=%s", type, syntax);
}

/* The file of `path` converted for the frames asked for: *fd a memfd holding
 * it (read through /proc/self/fd), or -1 when the stored file will do. False
 * (answered) when the conversion is impossible or fails. */
static bool frames_source(rest_request *req, const char *path, const char *want, bool any_type,
                          int *fd, char *syntax, size_t syntax_size)
{
    *fd = -1;
    syntax[0] = '\0';
    ts_dicom *d;
    ts_err err;
    if (ts_dicom_open_file(path, &d, &err)) {
        rest_reply_failure(req, TS_EDICOM, err.msg);
        return false;
    }
    char stored[80];
    snprintf(stored, sizeof(stored), "%s", ts_dicom_transfer_syntax(d));
    ts_dicom_free(d);
    const char *to = want;
    bool native = uncompressed_uid(stored);
    if (!any_type && !to[0])
        to = native ? "" : "1.2.840.10008.1.2.1"; /* octet-stream: native pixels */
    /* native frames come out little-endian whatever the uncompressed syntax */
    if (native && uncompressed_uid(to))
        to = "";
    /* the frames' syntax: the stored one, unless converted below */
    snprintf(syntax, syntax_size, "%s", stored);
    if (!to[0] || !strcmp(to, stored))
        return true;
    if (!ts_transcode_possible(stored, to, TS_TRANSCODE_ALLOW_LOSSY)) {
        dw_error(req, 406, "the instance is stored as %s and its frames cannot be given in %s",
                 stored, to);
        return false;
    }
    void *out = NULL;
    size_t len = 0;
    if (ts_dicom_transcode_file(path, to, TS_TRANSCODE_ALLOW_LOSSY, &out, &len, &err)) {
        dw_error(req, err.code == TS_EUNSUPPORTED ? 406 : 500,
                 "the frames cannot be given in %s: %.300s", to, err.msg);
        return false;
    }
    if (!out)
        return true;
    snprintf(syntax, syntax_size, "%s", to);
    *fd = memfd_create("ts-frames", MFD_CLOEXEC);
    size_t done = 0;
    while (*fd >= 0 && done < len) {
        ssize_t w = write(*fd, (char *)out + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(*fd);
            *fd = -1;
            break;
        }
        done += (size_t)w;
    }
    free(out);
    if (*fd < 0) {
        rest_reply_failure(req, TS_EIO, "cannot hold the converted instance");
        return false;
    }
    return true;
}

static void reply_frames(rest_request *req, const char *path, unsigned *frames, size_t n,
                         bool any_type, const char *want)
{
    int fd;
    char syntax[80];
    if (!frames_source(req, path, want, any_type, &fd, syntax, sizeof(syntax))) {
        free(frames);
        return;
    }
    char converted[64];
    if (fd >= 0) {
        snprintf(converted, sizeof(converted), "/proc/self/fd/%d", fd);
        path = converted;
    }
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
                         "frame %u is stored compressed (%s); accept type=\"%s\" or "
                         "transfer-syntax=*",
                         frames[i], mime, mime);
                free(frames);
                if (fd >= 0)
                    close(fd);
                return;
            }
        }
    mp_stream *s = mp_new(MP_FRAMES, req->ctx->store);
    s->keep_fd = fd;
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->frames = frames;
    s->nframes = n;
    frame_media(syntax, s->frame_type, sizeof(s->frame_type));
    /* the multipart's type: its parts' (RFC 2387), without their parameters */
    char root[96];
    snprintf(root, sizeof(root), "%.*s", (int)strcspn(s->frame_type, ";"), s->frame_type);
    mp_reply(req, s, root, -1);
}

void rest_dw_frames(rest_request *req)
{
    dw_cors(req);
    bool any_type;
    char want[80];
    if (!accept_octets(req, &any_type, want, sizeof(want)))
        return;
    if (want[0] && strcmp(want, "*") != 0 && !ts_transfer_syntax_known(want)) {
        dw_error(req, 406, "unknown transfer syntax %s", want);
        return;
    }
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
    reply_frames(req, path, frames, n, any_type, want);
}

void rest_dw_bulk(rest_request *req)
{
    dw_cors(req);
    bool any_type;
    char want[80]; /* (for the pixel data; other values go as stored) */
    if (!accept_octets(req, &any_type, want, sizeof(want)))
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
        reply_frames(req, file, frames, count, any_type, want);
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
    mp_reply(req, s, "application/octet-stream", -1);
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

static void dw_wado_uri_image(rest_request *req, const char *path);

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
    /* without contentType PS3.18 asks for image/jpeg (rendered, issue 21) */
    bool image = !content || media_listed(content, "image/jpeg");
    if (!image && !media_listed(content, "application/dicom")) {
        dw_error(req, 406, "contentType \"%.80s\": application/dicom or image/jpeg", content);
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
    bool convert = syntax && *syntax && strcmp(syntax, "*") != 0 &&
                   strcmp(syntax, PQgetvalue(res, 0, DW_COL_SYNTAX)) != 0;
    if (convert && !ts_transfer_syntax_known(syntax)) {
        dw_error(req, 406, "unknown transfer syntax %.80s", syntax);
        PQclear(res);
        return;
    }
    char path[4096];
    ts_err err;
    int rc =
        ts_store_path(req->ctx->store, PQgetvalue(res, 0, DW_COL_UUID), path, sizeof(path), &err);
    if (image && rc == 0) {
        PQclear(res);
        dw_wado_uri_image(req, path);
        return;
    }
    if (convert && rc == 0) {
        /* PS3.18 9.1: the object in the transferSyntax asked for */
        void *out = NULL;
        size_t len = 0;
        int trc = ts_dicom_transcode_file(path, syntax, TS_TRANSCODE_ALLOW_LOSSY, &out, &len, &err);
        if (trc == 0 && out) {
            PQclear(res);
            rest_reply_owned(req, 200, out, len, "application/dicom");
            return;
        }
        if (trc && trc != TS_EIO) {
            dw_error(req, trc == TS_EUNSUPPORTED ? 406 : 500,
                     "instance %s is stored as %s and cannot be converted to %s: %.300s",
                     PQgetvalue(res, 0, DW_COL_SOP), PQgetvalue(res, 0, DW_COL_SYNTAX), syntax,
                     err.msg);
            PQclear(res);
            return;
        }
        rc = trc; /* TS_EIO: gone (below); 0 with no output: already in that syntax */
    }
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

/* ---- rendered and thumbnail (PS3.18 8.3.5.1.3, 10.4.1.1.3; issue 21, rest_image's
 * encoders, lib/dicom/image.h's standard rendering) ---------------------------------
 *
 * /instances/{i}/rendered and /frames/{f}/rendered: one image (the first frame of a
 * multi-frame instance; several frames: multipart/related, one part each);
 * /series/{se}/rendered and /studies/{s}/rendered: multipart/related, one part per
 * instance (its first frame), rendered while sent; thumbnails: one image of the
 * middle instance, fitted to the viewport or 128x128. Query: quality (1..100),
 * viewport=vw,vh[,sx,sy,sw,sh] (the source region cropped first), window=c,w[,fn]
 * (LINEAR, LINEAR_EXACT, SIGMOID). Accept: image/jpeg (the default), image/png,
 * or multipart/related; type= one of them. */

#define DW_THUMB_SIDE 128

typedef struct dw_render {
    ts_image_dicom_opts o;
    char function[16];
    int quality;
    const char *mime;
} dw_render;

/* Parses the query and Accept; answers (400/406) and returns false on a bad one. */
static bool dw_render_args(rest_request *req, bool thumbnail, bool multipart_ok, dw_render *r)
{
    memset(r, 0, sizeof(*r));
    r->quality = 90;
    if (thumbnail)
        r->o.width = r->o.height = DW_THUMB_SIDE;
    const char *q = rest_arg(req, "quality");
    if (q) {
        char *end;
        long v = strtol(q, &end, 10);
        if (!*q || *end || v < 1 || v > 100) {
            dw_error(req, 400, "quality \"%.20s\" is not a number from 1 to 100", q);
            return false;
        }
        r->quality = (int)v;
    }
    const char *vp = rest_arg(req, "viewport");
    if (vp) {
        unsigned vw, vh;
        int used = 0, used2 = 0;
        bool ok = sscanf(vp, "%u,%u%n", &vw, &vh, &used) == 2 && vw && vh &&
                  vw <= TS_IMAGE_MAX_SIDE && vh <= TS_IMAGE_MAX_SIDE;
        if (ok && vp[used]) {
            /* the source region: sx,sy,sw,sh (pixels of the image) */
            ok = sscanf(vp + used, ",%ld,%ld,%ld,%ld%n", &r->o.sx, &r->o.sy, &r->o.sw, &r->o.sh,
                        &used2) == 4 &&
                 !vp[used + used2];
            r->o.has_region = true;
        }
        if (!ok) {
            dw_error(req, 400,
                     "viewport \"%.60s\": vw,vh (1..%d each)[,sx,sy,sw,sh (the source "
                     "region, in pixels)]",
                     vp, TS_IMAGE_MAX_SIDE);
            return false;
        }
        r->o.width = vw;
        r->o.height = vh;
    }
    const char *w = rest_arg(req, "window");
    if (w) {
        int used = 0;
        r->o.has_window = true;
        if (sscanf(w, "%lf,%lf%n", &r->o.window_center, &r->o.window_width, &used) != 2 ||
            r->o.window_width <= 0 ||
            (w[used] &&
             (w[used] != ',' || sscanf(w + used + 1, "%15[A-Za-z_]", r->function) != 1 ||
              (strcasecmp(r->function, "linear") && strcasecmp(r->function, "linear_exact") &&
               strcasecmp(r->function, "sigmoid"))))) {
            dw_error(req, 400,
                     "window \"%.60s\": center,width[,function] with a width above 0 and "
                     "LINEAR, LINEAR_EXACT or SIGMOID",
                     w);
            return false;
        }
        r->o.function = r->function[0] ? r->function : NULL;
    }
    const char *accept = rest_header(req, "Accept");
    if (!accept || !*accept) {
        r->mime = "image/jpeg";
        return true;
    }
    size_t pos = 0;
    dw_media m;
    while (dw_accept_next(accept, &pos, &m)) {
        const char *t = m.range;
        if (multipart_ok && !strcmp(m.range, "multipart/related"))
            t = m.type[0] ? m.type : "image/jpeg";
        if (!strcmp(t, "*/*") || !strcmp(t, "image/*") || !strcmp(t, "image/jpeg")) {
            r->mime = "image/jpeg";
            return true;
        }
        if (!strcmp(t, "image/png")) {
            r->mime = "image/png";
            return true;
        }
    }
    dw_error(req, 406, "rendered images are sent as image/jpeg or image/png, not %.100s", accept);
    return false;
}

/* One frame (from 0) of one file rendered and encoded; *out malloc'd. */
static int dw_render_one(const char *path, unsigned frame, const dw_render *r, uint8_t **out,
                         size_t *len, ts_err *err)
{
    ts_image_pixels p;
    /* in turn with Orthanc's image routes: a flood of rendered requests gets
     * the CPUs in arrival order, not all of them at once (rest_image.h) */
    rest_render_turn_enter();
    int rc = ts_image_render_dicom_file(path, frame, &r->o, &p, err);
    if (rc == 0) {
        if (!strcmp(r->mime, "image/png"))
            rc = ts_image_encode_png(&p, out, len, err);
        else
            rc = ts_image_encode_jpeg(&p, r->quality, out, len, err);
        ts_image_pixels_clear(&p);
    }
    rest_render_turn_leave();
    return rc;
}

static void dw_render_error(rest_request *req, int rc, const ts_err *err)
{
    if (rc == TS_ENOTFOUND)
        dw_error(req, 404, "%s", err->msg);
    else if (rc == TS_EUNSUPPORTED)
        dw_error(req, 415, "%s", err->msg);
    else if (rc == TS_ETOOBIG || rc == TS_EINVAL)
        dw_error(req, 400, "%s", err->msg);
    else {
        ts_warn("dicomweb: rendering failed", "uri=%s error=\"%s\"", req->url, err->msg);
        rest_reply_oe_status(req, 500, TS_OE_BAD_FILE_FORMAT, err->msg);
    }
}

static bool dw_row_path(rest_request *req, PGresult *res, int row, char *path, size_t size)
{
    ts_err err;
    if (ts_store_path(req->ctx->store, PQgetvalue(res, row, DW_COL_UUID), path, size, &err)) {
        dw_error(req, 404, "instance %s is gone", PQgetvalue(res, row, DW_COL_SOP));
        return false;
    }
    return true;
}

/* A multipart/related of rendered images, each part made when it is sent. */
typedef struct dw_render_stream {
    dw_render r;
    PGresult *res; /* dw_instances' rows (NULL for frames of one file) */
    char path[4096];
    unsigned *frames;
    size_t n, next;
    ts_store *store;
    char boundary[40];
    uint8_t *buf;
    size_t len, pos;
    size_t parts; /* sent so far */
    bool closed;
} dw_render_stream;

static void dw_render_stream_free(void *cls)
{
    dw_render_stream *s = cls;
    if (s->res)
        PQclear(s->res);
    free(s->frames);
    free(s->buf);
    free(s);
}

static bool dw_render_stream_next(dw_render_stream *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->pos = 0;
again:
    if (s->next >= s->n) {
        if (s->closed)
            return false;
        s->closed = true;
        s->buf = malloc(sizeof(s->boundary) + 16);
        if (!s->buf)
            abort();
        s->len = (size_t)snprintf((char *)s->buf, sizeof(s->boundary) + 16, "\r\n--%s--\r\n",
                                  s->boundary);
        return true;
    }
    size_t i = s->next++;
    unsigned frame = 0;
    ts_err err;
    if (s->res) {
        if (ts_store_path(s->store, PQgetvalue(s->res, (int)i, DW_COL_UUID), s->path,
                          sizeof(s->path), &err))
            return false;
    } else {
        frame = s->frames[i] - 1;
    }
    uint8_t *img;
    size_t ilen;
    int rc = dw_render_one(s->path, frame, &s->r, &img, &ilen, &err);
    if (rc && s->res) {
        /* an instance of a series or study that does not render (no pixels, no
         * codec) is left out rather than cutting every image after it */
        ts_warn("dicomweb: instance left out of a rendered series", "sop=%s error=\"%s\"",
                PQgetvalue(s->res, (int)i, DW_COL_SOP), err.msg);
        goto again;
    }
    if (rc) {
        ts_warn("dicomweb: rendering failed, answer cut", "error=\"%s\"", err.msg);
        return false;
    }
    char head[160];
    int h = snprintf(head, sizeof(head), "%s--%s\r\nContent-Type: %s\r\n\r\n",
                     s->parts++ ? "\r\n" : "", s->boundary, s->r.mime);
    s->buf = malloc((size_t)h + ilen + 1);
    if (!s->buf)
        abort();
    memcpy(s->buf, head, (size_t)h);
    memcpy(s->buf + h, img, ilen);
    s->len = (size_t)h + ilen;
    free(img);
    return true;
}

static ssize_t dw_render_stream_read(void *cls, char *buf, size_t max)
{
    dw_render_stream *s = cls;
    if (s->pos >= s->len && !dw_render_stream_next(s))
        return s->closed && s->next >= s->n ? 0 : -1;
    size_t k = s->len - s->pos < max ? s->len - s->pos : max;
    memcpy(buf, s->buf + s->pos, k);
    s->pos += k;
    return (ssize_t)k;
}

static void dw_render_multipart(rest_request *req, dw_render_stream *s)
{
    uint8_t rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    int k = snprintf(s->boundary, sizeof(s->boundary), "tessera-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        k += snprintf(s->boundary + k, sizeof(s->boundary) - (size_t)k, "%02x", rnd[i]);
    s->store = req->ctx->store;
    char ctype[160];
    snprintf(ctype, sizeof(ctype), "multipart/related; type=\"%s\"; boundary=%s", s->r.mime,
             s->boundary);
    rest_reply_stream(req, NULL, -1, dw_render_stream_read, dw_render_stream_free, s);
    rest_add_header(req, "Content-Type", ctype);
}

void rest_dw_rendered(rest_request *req)
{
    dw_cors(req);
    bool thumbnail = !strcmp(req->seg[req->nseg - 1], "thumbnail");
    /* seg: dicom-web studies S [series SE [instances I [frames F]]] rendered */
    int depth = (req->nseg - 2) / 2; /* 1 study, 2 series, 3 instance, 4 frames */
    dw_render r;
    if (!dw_render_args(req, thumbnail, !thumbnail && depth != 3, &r))
        return;
    if (thumbnail && !rest_arg(req, "viewport"))
        r.o.shrink_only = true; /* a small image stays as it is */
    unsigned *frames = NULL;
    size_t nframes = 0;
    if (depth == 4) {
        const char *list = req->seg[8];
        frames = calloc(DW_MAX_FRAMES, sizeof(*frames));
        if (!frames)
            abort();
        for (const char *p = list; *p && nframes < DW_MAX_FRAMES;) {
            char *end;
            long f = strtol(p, &end, 10);
            if (end == p || f < 1 || f > 0x7fffffff || (*end && *end != ',')) {
                dw_error(req, 400,
                         "frame list \"%.100s\": frames are numbers from 1, comma-separated", list);
                free(frames);
                return;
            }
            frames[nframes++] = (unsigned)f;
            p = *end ? end + 1 : end;
        }
        if (thumbnail)
            nframes = 1;
    }
    PGresult *res = dw_instances(req, false);
    if (!res) {
        free(frames);
        return;
    }
    int rows = PQntuples(res);
    if (depth <= 2 && !thumbnail) {
        dw_render_stream *s = calloc(1, sizeof(*s));
        if (!s)
            abort();
        s->r = r;
        s->r.o.function = r.function[0] ? s->r.function : NULL;
        s->res = res;
        s->n = (size_t)rows;
        dw_render_multipart(req, s);
        free(frames);
        return;
    }
    /* one file: the instance, or for a thumbnail of a series or study the middle
     * instance, else the next one that renders (a document or an instance without a
     * codec in a study does not make its thumbnail fail) */
    char path[4096];
    if (depth <= 2) {
        for (int k = 0; k < rows; k++) {
            int row = (rows / 2 + k) % rows;
            uint8_t *img;
            size_t len;
            ts_err err;
            if (!dw_row_path(req, res, row, path, sizeof(path)))
                break;
            int rc = dw_render_one(path, 0, &r, &img, &len, &err);
            if (rc == 0) {
                PQclear(res);
                free(frames);
                rest_reply_text(req, 200, "", 0);
                free(req->content);
                req->content = (char *)img;
                req->content_len = len;
                req->content_type = r.mime;
                return;
            }
            if (k == rows - 1)
                dw_render_error(req, rc, &err);
        }
        PQclear(res);
        free(frames);
        return;
    }
    if (!dw_row_path(req, res, 0, path, sizeof(path))) {
        PQclear(res);
        free(frames);
        return;
    }
    PQclear(res);
    if (nframes > 1) {
        dw_render_stream *s = calloc(1, sizeof(*s));
        if (!s)
            abort();
        s->r = r;
        s->r.o.function = r.function[0] ? s->r.function : NULL;
        memcpy(s->path, path, sizeof(s->path));
        s->frames = frames;
        s->n = nframes;
        /* every frame number is checked before the answer starts */
        ts_err err;
        for (size_t i = 0; i < nframes; i++) {
            unsigned count = 0;
            if (ts_dicom_frame_count(path, &count, &err) == 0 && frames[i] > count) {
                dw_error(req, 404, "no frame %u: the instance has %u", frames[i], count);
                dw_render_stream_free(s);
                return;
            }
        }
        dw_render_multipart(req, s);
        return;
    }
    unsigned frame = nframes ? frames[0] - 1 : 0;
    free(frames);
    uint8_t *img;
    size_t len;
    ts_err err;
    int rc = dw_render_one(path, frame, &r, &img, &len, &err);
    if (rc) {
        dw_render_error(req, rc, &err);
        return;
    }
    rest_reply_text(req, 200, "", 0);
    free(req->content);
    req->content = (char *)img;
    req->content_len = len;
    req->content_type = r.mime;
}

/* WADO-URI's image/jpeg (PS3.18 9.1.2.1): frameNumber, rows, columns,
 * windowCenter + windowWidth, imageQuality; region is not supported. */
static void dw_wado_uri_image(rest_request *req, const char *path)
{
    dw_render r = {.quality = 90, .mime = "image/jpeg"};
    long frame = rest_arg_long(req, "frameNumber", 1);
    long rows = rest_arg_long(req, "rows", 0), cols = rest_arg_long(req, "columns", 0);
    long quality = rest_arg_long(req, "imageQuality", 90);
    const char *wc = rest_arg(req, "windowCenter"), *ww = rest_arg(req, "windowWidth");
    char *e1 = NULL, *e2 = NULL;
    if (frame < 1 || rows < 0 || cols < 0 || rows > TS_IMAGE_MAX_SIDE || cols > TS_IMAGE_MAX_SIDE ||
        quality < 1 || quality > 100 || !wc != !ww || (wc && (strtod(wc, &e1), *e1 || !*wc)) ||
        (ww && (strtod(ww, &e2), *e2 || !*ww))) {
        dw_error(req, 400,
                 "frameNumber (from 1), rows and columns (0..%d), imageQuality (1..100), "
                 "windowCenter with windowWidth (numbers)",
                 TS_IMAGE_MAX_SIDE);
        return;
    }
    if (rest_arg(req, "region")) {
        dw_error(req, 400, "region is not supported");
        return;
    }
    r.quality = (int)quality;
    r.o.width = (unsigned)cols;
    r.o.height = (unsigned)rows;
    if (wc) {
        r.o.has_window = true;
        r.o.window_center = strtod(wc, NULL);
        r.o.window_width = strtod(ww, NULL);
    }
    uint8_t *img;
    size_t len;
    ts_err err;
    int rc = dw_render_one(path, (unsigned)frame - 1, &r, &img, &len, &err);
    if (rc) {
        dw_render_error(req, rc, &err);
        return;
    }
    rest_reply_text(req, 200, "", 0);
    free(req->content);
    req->content = (char *)img;
    req->content_len = len;
    req->content_type = r.mime;
}
