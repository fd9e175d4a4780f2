/* STOW-RS (PS3.18 10.5): POST /dicom-web/studies[/{study}] with a
 * multipart/related; type="application/dicom" body. The body was spooled to
 * the storage area's tmp/ as it arrived (rest_http.c); here it is split part by
 * part into temporary files through one fixed buffer, and only when the whole
 * body is well formed (a boundary that appears, every part closed) is each
 * part stored through ingest's write path, the bus request of POST /instances.
 * The answer is PS3.18's Store Instances Response: ReferencedSOPSequence,
 * FailedSOPSequence with FailureReason, and 200 (all stored), 202 (some
 * failed) or 409 (none stored), as DICOM JSON or, when Accept prefers it,
 * as one application/dicom+xml document (PS3.19 A.1). Failure reasons: 0xC000 a part that is not a
 * DICOM data set (or not application/dicom), 0x0110 a data set of another
 * study than the URL's or refused by ingest, 0xA700 storage or database out
 * of resources. */
#include "rest_dicomweb_stow.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dicom/dicom.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_xml.h"
#include "rest_upload.h"

#define STOW_BUF (256 * 1024)
#define STOW_MAX_HEADERS 16384
#define STOW_MAX_PARTS 10000

#define REASON_CANNOT_UNDERSTAND 0xC000
#define REASON_PROCESSING_FAILURE 0x0110
#define REASON_OUT_OF_RESOURCES 0xA700

typedef struct stow_part {
    char path[4096];
    char type[128]; /* media type, lower case, "" when the part has none */
} stow_part;

/* The body, read through one buffer. */
typedef struct reader {
    int fd;
    char *buf;
    size_t len, pos;
    bool eof;
} reader;

/* Keeps buf[pos..len), reads more after it; false at the end of the body. */
static bool fill(reader *r)
{
    if (r->eof)
        return false;
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
    while (r->len < STOW_BUF) {
        ssize_t n = read(r->fd, r->buf + r->len, STOW_BUF - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r->eof = true;
            return r->len > 0;
        }
        r->len += (size_t)n;
        return true;
    }
    return true;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* A parameter of a Content-Type value ("boundary", "type"), quotes removed. */
static bool ct_param(const char *ct, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
        const char *s = p + 1;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncasecmp(s, name, nl) != 0 || s[nl] != '=')
            continue;
        s += nl + 1;
        size_t n;
        if (*s == '"') {
            s++;
            const char *q = strchr(s, '"');
            n = q ? (size_t)(q - s) : strlen(s);
        } else {
            n = strcspn(s, "; \t");
        }
        if (n >= size)
            return false;
        memcpy(out, s, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

/* The media type of a part's headers (lower case), or "". */
static void part_type(const char *h, size_t n, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        const char *line = h + i;
        const char *eol = memchr(line, '\n', n - i);
        size_t ll = eol ? (size_t)(eol - line) : n - i;
        if (ll > 13 && strncasecmp(line, "content-type:", 13) == 0) {
            const char *v = line + 13;
            size_t vl = ll - 13;
            while (vl && (*v == ' ' || *v == '\t'))
                v++, vl--;
            size_t tl = 0;
            while (tl < vl && v[tl] != ';' && v[tl] != '\r' && v[tl] != ' ' && tl + 1 < size) {
                out[tl] = (char)tolower((unsigned char)v[tl]);
                tl++;
            }
            out[tl] = '\0';
        }
        i += ll + 1;
    }
}

/* Splits the body into *parts (temporary files). 0, or an error in msg. */
static int split(rest_request *req, const char *boundary, stow_part **parts, size_t *nparts,
                 char *msg, size_t msize)
{
    char delim[100];
    int dl = snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
    size_t dlen = (size_t)dl;
    reader r = {.fd = -1};
    int out = -1, rc = -1;
    size_t cap = 0;
    r.buf = malloc(STOW_BUF);
    if (!r.buf)
        abort();
    r.fd = req->body_path ? open(req->body_path, O_RDONLY | O_CLOEXEC) : -1;
    if (r.fd < 0) {
        snprintf(msg, msize, "the body is empty");
        goto done;
    }
    /* the first delimiter may open the body: read it as if a CRLF came first */
    memcpy(r.buf, "\r\n", 2);
    r.len = 2;
    fill(&r);
    /* preamble */
    for (;;) {
        char *d = memmem(r.buf + r.pos, r.len - r.pos, delim, dlen);
        if (d) {
            r.pos = (size_t)(d - r.buf) + dlen;
            break;
        }
        if (r.len - r.pos > dlen)
            r.pos = r.len - dlen;
        if (!fill(&r) || (r.eof && !memmem(r.buf + r.pos, r.len - r.pos, delim, dlen))) {
            snprintf(msg, msize,
                     "the boundary \"%.80s\" of the Content-Type never appears in "
                     "the body",
                     boundary);
            goto done;
        }
    }
    for (;;) {
        /* after a delimiter: "--" closes, else padding and CRLF, then headers */
        while (r.len - r.pos < 2 + STOW_MAX_HEADERS && !r.eof)
            fill(&r);
        const char *p = r.buf + r.pos, *end = r.buf + r.len;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            snprintf(msg, msize, "part %zu: the boundary line is not followed by CRLF",
                     *nparts + 1);
            goto done;
        }
        p += 2;
        const char *body;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            body = p + 2; /* no headers */
        } else {
            const char *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (!h || h - p > STOW_MAX_HEADERS) {
                snprintf(msg, msize,
                         "part %zu: its headers do not end (a blank line) within "
                         "%d bytes",
                         *nparts + 1, STOW_MAX_HEADERS);
                goto done;
            }
            body = h + 4;
        }
        if (*nparts == STOW_MAX_PARTS) {
            snprintf(msg, msize, "more than %d parts", STOW_MAX_PARTS);
            goto done;
        }
        if (*nparts == cap) {
            cap = cap ? 2 * cap : 16;
            *parts = realloc(*parts, cap * sizeof(**parts));
            if (!*parts)
                abort();
        }
        stow_part *part = &(*parts)[*nparts];
        memset(part, 0, sizeof(*part));
        part_type(p, (size_t)(body - p), part->type, sizeof(part->type));
        ts_err err;
        if (ts_store_temp_path(req->ctx->store, part->path, sizeof(part->path), &err) ||
            (out = open(part->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
            snprintf(msg, msize, "cannot spool part %zu: %s", *nparts + 1,
                     out < 0 ? strerror(errno) : err.msg);
            goto done;
        }
        (*nparts)++;
        r.pos = (size_t)(body - r.buf);
        /* the part's content: up to the next delimiter */
        for (;;) {
            char *d = memmem(r.buf + r.pos, r.len - r.pos, delim, dlen);
            size_t upto = d ? (size_t)(d - r.buf) : (r.len - r.pos > dlen ? r.len - dlen : r.pos);
            if (!write_all(out, r.buf + r.pos, upto - r.pos)) {
                snprintf(msg, msize, "cannot spool part %zu: %s", *nparts, strerror(errno));
                goto done;
            }
            r.pos = upto;
            if (d) {
                r.pos += dlen;
                break;
            }
            if (!fill(&r) || (r.eof && !memmem(r.buf + r.pos, r.len - r.pos, delim, dlen) &&
                              r.len - r.pos <= dlen)) {
                snprintf(msg, msize,
                         "part %zu is truncated: the body ends before its closing "
                         "boundary",
                         *nparts);
                goto done;
            }
        }
        close(out);
        out = -1;
    }
    rc = *nparts ? 0 : -1;
    if (rc)
        snprintf(msg, msize, "the body holds no part");
done:
    if (out >= 0)
        close(out);
    if (r.fd >= 0)
        close(r.fd);
    free(r.buf);
    return rc;
}

static json_t *sop_item(const char *class_uid, const char *sop_uid)
{
    json_t *item = json_object();
    if (class_uid && *class_uid)
        json_object_set_new(item, "00081150", ts_dicomweb_attribute("UI", class_uid));
    if (sop_uid && *sop_uid)
        json_object_set_new(item, "00081155", ts_dicomweb_attribute("UI", sop_uid));
    return item;
}

static void add_failed(json_t *failed, const char *class_uid, const char *sop_uid, int reason,
                       const char *why)
{
    json_t *item = sop_item(class_uid, sop_uid);
    char r[16];
    snprintf(r, sizeof(r), "%d", reason);
    json_object_set_new(item, "00081197", ts_dicomweb_attribute("US", r));
    json_array_append_new(failed, item);
    ts_info("stow-rs: part refused", "sop=%s reason=0x%04x why=\"%s\"", sop_uid ? sop_uid : "",
            reason, why);
}

/* Stores one part; adds it to stored or failed. */
static void store_part(rest_request *req, const stow_part *part, const char *study,
                       const char *root, json_t *stored, json_t *failed, char *first_study,
                       size_t fs_size)
{
    if (part->type[0] && strcmp(part->type, "application/dicom") != 0) {
        add_failed(failed, NULL, NULL, REASON_CANNOT_UNDERSTAND, part->type);
        return;
    }
    ts_dicom *d = NULL;
    ts_dicom_identity id = {0};
    ts_err err;
    if (ts_dicom_open_file(part->path, &d, &err) || ts_dicom_identity_get(d, &id, &err)) {
        add_failed(failed, NULL, NULL, REASON_CANNOT_UNDERSTAND, err.msg);
        goto out;
    }
    if (study && strcmp(id.study_uid, study) != 0) {
        add_failed(failed, id.sop_class_uid, id.sop_uid, REASON_PROCESSING_FAILURE,
                   "StudyInstanceUID is not the URL's study");
        goto out;
    }
    ts_dicom_free(d);
    d = NULL;
    json_t *answer = NULL;
    int status = rest_store_temp_file(req, part->path, &answer);
    if (status == 200) {
        json_t *item = sop_item(id.sop_class_uid, id.sop_uid);
        char url[1024];
        snprintf(url, sizeof(url), "%s/studies/%s/series/%s/instances/%s", root, id.study_uid,
                 id.series_uid, id.sop_uid);
        json_object_set_new(item, "00081190", ts_dicomweb_attribute("UR", url));
        json_array_append_new(stored, item);
        if (!first_study[0])
            snprintf(first_study, fs_size, "%s", id.study_uid);
        else if (strcmp(first_study, id.study_uid) != 0)
            snprintf(first_study, fs_size, "-"); /* several studies: no RetrieveURL */
    } else {
        const char *details = json_string_value(json_object_get(answer, "Details"));
        add_failed(failed, id.sop_class_uid, id.sop_uid,
                   status == 400                                     ? REASON_CANNOT_UNDERSTAND
                   : status == 503 || status == 507 || status == 413 ? REASON_OUT_OF_RESOURCES
                                                                     : REASON_PROCESSING_FAILURE,
                   details ? details : "");
    }
    json_decref(answer);
out:
    ts_dicom_identity_clear(&id);
    ts_dicom_free(d);
}

void rest_dw_store(rest_request *req)
{
    dw_cors(req);
    const char *study = req->nseg == 3 ? req->seg[2] : NULL;
    if (study && !dw_uid_valid(study)) {
        dw_error(req, 400, "\"%.80s\" is not a UID", study);
        return;
    }
    bool xml;
    if (!dw_accept_response(req, &xml))
        return;
    const char *ct = rest_header(req, "Content-Type");
    char type[96] = "", boundary[80];
    if (!ct || strncasecmp(ct, "multipart/related", 17) != 0 ||
        (ct[17] && ct[17] != ';' && ct[17] != ' ')) {
        dw_error(req, 415,
                 "STOW-RS takes multipart/related; type=\"application/dicom\", not "
                 "\"%.100s\"",
                 ct ? ct : "");
        return;
    }
    if (ct_param(ct, "type", type, sizeof(type)) && strcasecmp(type, "application/dicom") != 0) {
        dw_error(req, 415, "parts of type \"%.80s\" are not stored: only application/dicom", type);
        return;
    }
    if (!ct_param(ct, "boundary", boundary, sizeof(boundary)) || !boundary[0] ||
        strlen(boundary) > 70) {
        dw_error(req, 400, "the Content-Type has no boundary parameter (of 1 to 70 characters)");
        return;
    }
    stow_part *parts = NULL;
    size_t n = 0;
    char msg[300];
    if (split(req, boundary, &parts, &n, msg, sizeof(msg))) {
        for (size_t i = 0; i < n; i++)
            unlink(parts[i].path);
        free(parts);
        dw_error(req, 400, "malformed multipart body: %s", msg);
        return;
    }
    char root[320], first_study[80] = "";
    dw_root(req, root, sizeof(root));
    json_t *stored = json_array(), *failed = json_array();
    for (size_t i = 0; i < n; i++) {
        store_part(req, &parts[i], study, root, stored, failed, first_study, sizeof(first_study));
        unlink(parts[i].path); /* gone already when ingest took it over */
    }
    free(parts);
    json_t *rsp = json_object();
    const char *rs = study ? study : first_study[0] && first_study[0] != '-' ? first_study : NULL;
    if (rs) {
        char url[512];
        snprintf(url, sizeof(url), "%s/studies/%s", root, rs);
        json_object_set_new(rsp, "00081190", ts_dicomweb_attribute("UR", url));
    }
    size_t ns = json_array_size(stored), nf = json_array_size(failed);
    json_t *seq = json_pack("{s:s, s:o}", "vr", "SQ", "Value", stored);
    json_object_set_new(rsp, "00081199", seq);
    if (nf)
        json_object_set_new(rsp, "00081198", json_pack("{s:s, s:o}", "vr", "SQ", "Value", failed));
    else
        json_decref(failed);
    ts_info("stow-rs", "parts=%zu stored=%zu failed=%zu", n, ns, nf);
    int status = nf == 0 ? 200 : ns ? 202 : 409;
    if (xml)
        dw_reply_xml_dataset(req, status, rsp);
    else
        dw_reply_json(req, status, rsp);
}
