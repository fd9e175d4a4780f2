/* Orthanc 1.10.1's image routes (OrthancRestResources.cpp: IDecodedFrameHandler,
 * GetImageHandler, RenderedFrameHandler, /matlab, /numpy). Its answers, checked
 * against a live Orthanc with its GDCM plugin (tests/integration/test_image.py):
 * a frame out of range or a bad argument (negative or non-numeric width,
 * height, window) is a 404; anything else that fails while decoding or
 * encoding (a transfer syntax without a codec, a colour frame asked as
 * image-uint8, ?smooth=maybe, ?quality=500) a 415; an Accept it cannot serve a
 * 404. Orthanc sends these with an empty body; Tessera sends the same statuses
 * with Orthanc's error body saying what was wrong. */
#include "rest_image.h"

#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "base/config.h"
#include "base/log.h"
#include "dicom/dicom.h"
#include "dicom/image.h"
#include "rest_common.h"
#include "rest_content.h"
#include "rest_dicomweb_common.h"

#define MIME_PNG "image/png"
#define MIME_JPEG "image/jpeg"
#define MIME_PAM "image/x-portable-arbitrarymap"

/* Takes data (malloc'd) as the 200 answer. */
static void reply_bytes(rest_request *req, void *data, size_t len, const char *type)
{
    rest_reply_text(req, 200, "", 0);
    free(req->content);
    req->content = data;
    req->content_len = len;
    req->content_type = type;
}

/* Orthanc answers a failed decode or rendering with 415 and a bad frame number
 * or argument with 404 (RestApi "ParameterOutOfRange"). */
static void reply_image_error(rest_request *req, int rc, const ts_err *err)
{
    switch (rc) {
    case TS_ENOTFOUND:
        rest_reply_oe_status(req, 404, TS_OE_PARAMETER_OUT_OF_RANGE, err->msg);
        break;
    case TS_ETOOBIG:
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, err->msg);
        break;
    case TS_EUNSUPPORTED:
        rest_reply_oe_status(req, 415, TS_OE_NOT_IMPLEMENTED, err->msg);
        break;
    case TS_EINVAL:
        rest_reply_oe_status(req, 404, TS_OE_PARAMETER_OUT_OF_RANGE, err->msg);
        break;
    default:
        ts_warn("image: frame does not decode", "uri=%s error=\"%s\"", req->url, err->msg);
        rest_reply_oe_status(req, 415, TS_OE_BAD_FILE_FORMAT, err->msg);
        break;
    }
}

const char *rest_image_negotiate(rest_request *req, bool pam, bool png_first)
{
    const char *accept = rest_header(req, "Accept");
    const char *first = png_first ? MIME_PNG : MIME_JPEG;
    if (!accept || !*accept)
        return first;
    size_t pos = 0;
    dw_media m;
    while (dw_accept_next(accept, &pos, &m)) {
        if (!strcmp(m.range, "*/*") || !strcmp(m.range, "image/*"))
            return first;
        if (!strcmp(m.range, MIME_PNG))
            return MIME_PNG;
        if (!strcmp(m.range, MIME_JPEG))
            return MIME_JPEG;
        if (pam && !strcmp(m.range, MIME_PAM))
            return MIME_PAM;
    }
    return NULL;
}

bool rest_image_reply(rest_request *req, const ts_image_pixels *p, const char *mime, int quality)
{
    uint8_t *out = NULL;
    size_t len = 0;
    ts_err err;
    int rc;
    if (!strcmp(mime, MIME_JPEG))
        rc = ts_image_encode_jpeg(p, quality, &out, &len, &err);
    else if (!strcmp(mime, MIME_PAM))
        rc = ts_image_encode_pam(p, &out, &len, &err);
    else
        rc = ts_image_encode_png(p, &out, &len, &err);
    if (rc == TS_EUNSUPPORTED) {
        /* Orthanc: a 16-bit image asked as JPEG is not answered (404) */
        rest_reply_oe_status(req, 404, TS_OE_NOT_ACCEPTABLE, err.msg);
        return false;
    }
    if (rc) {
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, err.msg);
        return false;
    }
    reply_bytes(req, out, len, mime);
    return true;
}

/* RestApiCall::ParseBoolean: "true"/"1" or "false"/"0", nothing else. */
static bool parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "0"))
        *out = false;
    else
        return false;
    return true;
}

/* boost::lexical_cast<int> and <float>: the whole text, nothing around it. */
static bool parse_int(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v > INT32_MAX || v < INT32_MIN || *s == ' ')
        return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || *s == ' ' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Orthanc's EncodeJpeg: ?quality from 1 to 100 (default 90), read whatever the
 * format; out of range is a 415. */
static bool quality_arg(rest_request *req, int *quality)
{
    *quality = 90;
    const char *q = rest_arg(req, "quality");
    long v;
    if (!q)
        return true;
    if (!parse_int(q, &v) || v <= 0 || v > 100) {
        rest_reply_oe_status(req, 415, TS_OE_BAD_REQUEST, "quality must be from 1 to 100");
        return false;
    }
    *quality = (int)v;
    return true;
}

/* RenderedFrameHandler::GetUserArguments */
static bool render_args(rest_request *req, ts_image_render_opts *o)
{
    memset(o, 0, sizeof(*o));
    static const char *const sizes[] = {"width", "height"};
    for (int i = 0; i < 2; i++) {
        const char *a = rest_arg(req, sizes[i]);
        long v;
        if (!a)
            continue;
        if (!parse_int(a, &v) || v < 0) {
            char msg[96];
            snprintf(msg, sizeof(msg), "bad value for argument: %s", sizes[i]);
            rest_reply_oe_status(req, 404, TS_OE_PARAMETER_OUT_OF_RANGE, msg);
            return false;
        }
        if (v > TS_IMAGE_MAX_SIDE) {
            char msg[96];
            snprintf(msg, sizeof(msg), "%s is at most %d", sizes[i], TS_IMAGE_MAX_SIDE);
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, msg);
            return false;
        }
        if (i == 0)
            o->width = (unsigned)v;
        else
            o->height = (unsigned)v;
    }
    const char *wc = rest_arg(req, "window-center"), *ww = rest_arg(req, "window-width");
    if ((wc && !parse_float(wc, &o->window_center)) || (ww && !parse_float(ww, &o->window_width))) {
        rest_reply_oe_status(req, 404, TS_OE_PARAMETER_OUT_OF_RANGE,
                             wc && !parse_float(wc, &o->window_center)
                                 ? "bad value for argument: window-center"
                                 : "bad value for argument: window-width");
        return false;
    }
    o->has_window_center = wc != NULL;
    o->has_window_width = ww != NULL;
    const char *sm = rest_arg(req, "smooth");
    if (sm && !parse_bool(sm, &o->smooth)) {
        rest_reply_oe_status(req, 415, TS_OE_BAD_REQUEST, "smooth must be true or false");
        return false;
    }
    return true;
}

/* The frame of the request: /instances/{id}/{kind} is frame 0,
 * /instances/{id}/frames/{n}/{kind} frame n. false when answered (404). */
static bool request_frame(rest_request *req, unsigned *frame)
{
    *frame = 0;
    if (req->nseg >= 5 && !strcmp(req->seg[2], "frames") && !rest_parse_frame(req->seg[3], frame)) {
        rest_reply_empty(req, 404);
        return false;
    }
    return true;
}

/* The phases of one image request, logged at debug level: where its time goes
 * (lookup: the database; wait: for a turn in the gate below; decode: reading and
 * parsing the file and decoding the frame; render: window or conversion and
 * resize; encode: PNG/JPEG/PAM). The
 * send is what the client sees beyond the route's time
 * (tessera_http_request_seconds). */
typedef struct phase_clock {
    bool on;
    double t[6];
    int n;
} phase_clock;

static void phase_mark(phase_clock *c)
{
    if (!c->on || c->n >= 6)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->t[c->n++] = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void phase_log(const phase_clock *c, const rest_request *req)
{
    if (!c->on || c->n < 6)
        return;
    ts_debug("image request phases",
             "uri=%s lookup_ms=%.3f wait_ms=%.3f decode_ms=%.3f render_ms=%.3f encode_ms=%.3f",
             req->url, c->t[1] - c->t[0], c->t[2] - c->t[1], c->t[3] - c->t[2], c->t[4] - c->t[3],
             c->t[5] - c->t[4]);
}

/* Renderings in flight at once: as many as the machine has CPUs (or
 * TESSERA_RENDER_THREADS), the others wait their turn in arrival order. MHD
 * gives each connection a thread, so without this 16 clients are 16 renderings
 * sharing 2 CPUs: each takes 8x its CPU time, and the scheduler's slices make
 * some take far longer (p95 3x the median). In turn, each takes its CPU time
 * after a wait that is the same for all: the same throughput, a tighter tail,
 * and at most this many decoded frames in memory. A ticket lock: waiters sleep
 * on one of GATE_CVS condition variables by ticket, so a leave wakes only the
 * ticket it admits (and the few that share its variable, which sleep again). */
#define GATE_CVS 64

static struct {
    pthread_once_t once;
    pthread_mutex_t mu;
    pthread_cond_t cv[GATE_CVS];
    unsigned long next; /* the next ticket to hand out */
    unsigned long done; /* renderings finished */
    unsigned long slots;
} gate = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

static void gate_init(void)
{
    for (int i = 0; i < GATE_CVS; i++)
        pthread_cond_init(&gate.cv[i], NULL);
    long n = ts_cfg_int(TESSERA_RENDER_THREADS);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    gate.slots = n > 0 ? (unsigned long)n : 1;
}

void rest_render_turn_enter(void)
{
    pthread_once(&gate.once, gate_init);
    pthread_mutex_lock(&gate.mu);
    unsigned long t = gate.next++;
    while (t - gate.done >= gate.slots) /* unsigned: wraps as the counters do */
        pthread_cond_wait(&gate.cv[t % GATE_CVS], &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

void rest_render_turn_leave(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.done++;
    /* the ticket this admits, if it is waiting */
    pthread_cond_broadcast(&gate.cv[(gate.done + gate.slots - 1) % GATE_CVS]);
    pthread_mutex_unlock(&gate.mu);
}

/* Decode, render or convert, encode: the CPU part of rest_image, inside the gate. */
static void image_of_file(rest_request *req, const char *path, unsigned frame, phase_clock *clk)
{
    const char *kind = req->seg[req->nseg - 1];
    ts_image_frame f;
    ts_err err;
    int rc = ts_image_decode_file(path, frame, &f, &err);
    if (rc) {
        reply_image_error(req, rc, &err);
        return;
    }
    phase_mark(clk);
    if (!strcmp(kind, "matlab")) {
        char *text = ts_image_matlab(&f);
        reply_bytes(req, text, strlen(text), "text/plain");
        ts_image_frame_clear(&f);
        return;
    }
    ts_image_pixels px = {0};
    int quality;
    if (!strcmp(kind, "rendered")) {
        ts_image_render_opts o;
        if (!render_args(req, &o) || !quality_arg(req, &quality))
            goto out;
        rc = ts_image_render_orthanc(&f, &o, &px, &err);
    } else {
        ts_image_mode mode = !strcmp(kind, "preview")        ? TS_IMAGE_PREVIEW
                             : !strcmp(kind, "image-uint8")  ? TS_IMAGE_UINT8
                             : !strcmp(kind, "image-uint16") ? TS_IMAGE_UINT16
                                                             : TS_IMAGE_INT16;
        if (!quality_arg(req, &quality))
            goto out;
        rc = ts_image_convert(&f, mode, &px, &err);
    }
    if (rc) {
        reply_image_error(req, rc, &err);
        goto out;
    }
    phase_mark(clk);
    const char *mime = rest_image_negotiate(req, true, true);
    if (!mime) {
        rest_reply_oe_status(req, 404, TS_OE_NOT_ACCEPTABLE,
                             "the image is sent as image/png, image/jpeg or "
                             "image/x-portable-arbitrarymap");
        goto out;
    }
    if (rest_image_reply(req, &px, mime, quality)) {
        phase_mark(clk);
        phase_log(clk, req);
    }
out:
    ts_image_pixels_clear(&px);
    ts_image_frame_clear(&f);
}

void rest_image(rest_request *req)
{
    unsigned frame;
    phase_clock clk = {.on = ts_log_enabled(TS_LOG_DEBUG)};
    phase_mark(&clk);
    if (!request_frame(req, &frame))
        return;
    char path[4096];
    if (!rest_instance_path(req, path, sizeof(path)))
        return;
    phase_mark(&clk);
    rest_render_turn_enter();
    phase_mark(&clk);
    image_of_file(req, path, frame, &clk);
    rest_render_turn_leave();
}

/* ---- numpy: streamed frame by frame ----------------------------------------------- */

typedef struct npy_stream {
    char (*paths)[4096];
    size_t npaths, next_path;
    unsigned frames_in_path, next_frame;
    bool rescale;
    unsigned width, height, channels;
    uint8_t *buf;
    size_t len, pos;
    /* ?compress: the array as the one member "arr_0" of a ZIP (Orthanc's .npz),
     * deflated while it is sent, sizes in a data descriptor after the data */
    bool zip;
    int zphase; /* 0 local header, 1 data, 2 trailer, 3 done */
    z_stream z;
    uLong crc;
    unsigned long long usize, csize;
    uint8_t *zbuf;
    size_t zlen, zpos, zcap;
} npy_stream;

static void npy_free(void *cls)
{
    npy_stream *s = cls;
    if (s->zip)
        deflateEnd(&s->z);
    free(s->paths);
    free(s->buf);
    free(s->zbuf);
    free(s);
}

/* The next frame's bytes into s->buf; false at the end or on failure. */
static bool npy_next(npy_stream *s)
{
    while (s->next_frame >= s->frames_in_path) {
        if (s->next_path >= s->npaths)
            return false;
        ts_err err;
        if (ts_dicom_frame_count(s->paths[s->next_path], &s->frames_in_path, &err)) {
            ts_warn("numpy: instance unreadable", "error=\"%s\"", err.msg);
            return false;
        }
        s->next_path++;
        s->next_frame = 0;
    }
    ts_image_frame f;
    ts_err err;
    int rc = ts_image_decode_file(s->paths[s->next_path - 1], s->next_frame++, &f, &err);
    if (rc == 0 && (f.width != s->width || f.height != s->height || f.channels != s->channels))
        rc = ts_err_set(&err, TS_EINVAL, "frames of different sizes in one array");
    free(s->buf);
    s->buf = NULL;
    if (rc == 0)
        rc = ts_image_npy_data(&f, s->rescale, &s->buf, &s->len, &err);
    ts_image_frame_clear(&f);
    if (rc) {
        ts_warn("numpy: frame does not decode, answer cut", "error=\"%s\"", err.msg);
        return false;
    }
    s->pos = 0;
    return true;
}

static ssize_t npy_raw_read(npy_stream *s, char *buf, size_t max)
{
    if (s->pos >= s->len && !npy_next(s))
        return s->next_path >= s->npaths && s->next_frame >= s->frames_in_path ? 0 : -1;
    size_t n = s->len - s->pos < max ? s->len - s->pos : max;
    memcpy(buf, s->buf + s->pos, n);
    s->pos += n;
    return (ssize_t)n;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, unsigned long v)
{
    put16(p, (unsigned)(v & 0xffff));
    put16(p + 2, (unsigned)(v >> 16));
}

static void zip_room(npy_stream *s, size_t more)
{
    if (s->zlen + more > s->zcap) {
        s->zcap = (s->zlen + more) * 2;
        s->zbuf = realloc(s->zbuf, s->zcap);
        if (!s->zbuf)
            abort();
    }
}

/* Deflates in (flush: Z_FINISH at the end) into s->zbuf. */
static void zip_deflate(npy_stream *s, const void *in, size_t n, int flush)
{
    s->z.next_in = (Bytef *)in;
    s->z.avail_in = (uInt)n;
    int rc;
    do {
        zip_room(s, 65536);
        s->z.next_out = s->zbuf + s->zlen;
        s->z.avail_out = (uInt)(s->zcap - s->zlen);
        rc = deflate(&s->z, flush);
        size_t made = (s->zcap - s->zlen) - s->z.avail_out;
        s->zlen += made;
        s->csize += made;
    } while (s->z.avail_in > 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
}

/* The next piece of the ZIP into s->zbuf; false at the end or on failure. */
static bool zip_fill(npy_stream *s)
{
    static const char name[] = "arr_0";
    s->zlen = s->zpos = 0;
    if (s->zphase == 0) {
        zip_room(s, 30 + 5);
        uint8_t *h = s->zbuf;
        memset(h, 0, 30);
        put32(h, 0x04034b50);
        put16(h + 4, 20);
        put16(h + 6, 0x0008); /* sizes and CRC in the data descriptor */
        put16(h + 8, 8);      /* deflate */
        put16(h + 26, 5);
        memcpy(h + 30, name, 5);
        s->zlen = 35;
        s->zphase = 1;
        return true;
    }
    if (s->zphase == 1) {
        char in[65536];
        ssize_t n = npy_raw_read(s, in, sizeof(in));
        if (n < 0)
            return false;
        if (n > 0) {
            s->crc = crc32(s->crc, (const Bytef *)in, (uInt)n);
            s->usize += (unsigned long long)n;
            zip_deflate(s, in, (size_t)n, Z_NO_FLUSH);
        } else {
            zip_deflate(s, NULL, 0, Z_FINISH);
            s->zphase = 2;
        }
        if (s->usize > 0xffffffffULL || s->csize > 0xffffffffULL)
            return false; /* would need ZIP64 */
        return true;
    }
    if (s->zphase == 2) {
        unsigned long long cd_offset = 35 + s->csize + 16;
        zip_room(s, 16 + 46 + 5 + 22);
        uint8_t *d = s->zbuf;
        put32(d, 0x08074b50);
        put32(d + 4, s->crc);
        put32(d + 8, (unsigned long)s->csize);
        put32(d + 12, (unsigned long)s->usize);
        uint8_t *c = d + 16;
        memset(c, 0, 46);
        put32(c, 0x02014b50);
        put16(c + 4, 20);
        put16(c + 6, 20);
        put16(c + 8, 0x0008);
        put16(c + 10, 8);
        put32(c + 16, s->crc);
        put32(c + 20, (unsigned long)s->csize);
        put32(c + 24, (unsigned long)s->usize);
        put16(c + 28, 5);
        memcpy(c + 46, name, 5);
        uint8_t *e = c + 51;
        memset(e, 0, 22);
        put32(e, 0x06054b50);
        put16(e + 8, 1);
        put16(e + 10, 1);
        put32(e + 12, 51);
        put32(e + 16, (unsigned long)cd_offset);
        s->zlen = 16 + 51 + 22;
        s->zphase = 3;
        return true;
    }
    return false;
}

static ssize_t npy_read(void *cls, char *buf, size_t max)
{
    npy_stream *s = cls;
    if (!s->zip)
        return npy_raw_read(s, buf, max);
    while (s->zpos >= s->zlen) /* deflate may keep a whole chunk to itself */
        if (!zip_fill(s))
            return s->zphase == 3 ? 0 : -1;
    size_t n = s->zlen - s->zpos < max ? s->zlen - s->zpos : max;
    memcpy(buf, s->zbuf + s->zpos, n);
    s->zpos += n;
    return (ssize_t)n;
}

static int by_slice(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[2] < y[2] ? -1 : x[2] > y[2]);
}

/* "a\\b\\c" as n numbers; false when there are not n. */
static bool parse_numbers(const char *v, double *out, int n)
{
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(v, &end);
        if (end == v)
            return false;
        v = *end == '\\' ? end + 1 : end;
    }
    return true;
}

/* A series' files in Orthanc's slice order (its SliceOrdering): along the normal of
 * the image plane when every instance has ImagePositionPatient and
 * ImageOrientationPatient, else by InstanceNumber (files without one last, in the
 * index's order). */
static void sort_series(char (*paths)[4096], size_t n)
{
    double(*keys)[3] = malloc((n + 1) * sizeof(*keys)); /* position, number, index */
    char(*copy)[4096] = malloc((n + 1) * sizeof(*copy));
    if (!keys || !copy)
        abort();
    bool all_positions = true;
    for (size_t i = 0; i < n; i++) {
        ts_dicom *d;
        ts_err err;
        keys[i][0] = 0;
        keys[i][1] = 1e300;
        keys[i][2] = (double)i;
        if (ts_dicom_open_file(paths[i], &d, &err) != 0) {
            all_positions = false;
            continue;
        }
        char *num = ts_dicom_get_string(d, TS_TAG(0x0020, 0x0013), false);
        char *pos = ts_dicom_get_string(d, TS_TAG(0x0020, 0x0032), false);
        char *ori = ts_dicom_get_string(d, TS_TAG(0x0020, 0x0037), false);
        double p[3], o[6];
        if (num)
            keys[i][1] = strtod(num, NULL);
        if (pos && ori && parse_numbers(pos, p, 3) && parse_numbers(ori, o, 6)) {
            double nx = o[1] * o[5] - o[2] * o[4], ny = o[2] * o[3] - o[0] * o[5],
                   nz = o[0] * o[4] - o[1] * o[3];
            keys[i][0] = p[0] * nx + p[1] * ny + p[2] * nz;
        } else {
            all_positions = false;
        }
        free(num);
        free(pos);
        free(ori);
        ts_dicom_free(d);
    }
    for (size_t i = 0; i < n; i++) /* sort on (key, index): position or number */
        keys[i][0] = all_positions ? keys[i][0] : keys[i][1];
    qsort(keys, n, sizeof(*keys), by_slice);
    memcpy(copy, paths, n * sizeof(*copy));
    for (size_t i = 0; i < n; i++)
        memcpy(paths[i], copy[(size_t)keys[i][2]], sizeof(*paths));
    free(keys);
    free(copy);
}

void rest_image_numpy(rest_request *req)
{
    bool rescale = true, compress = false;
    const char *a = rest_arg(req, "rescale");
    if (a && !parse_bool(a, &rescale)) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "rescale must be true or false");
        return;
    }
    a = rest_arg(req, "compress");
    if (a && !parse_bool(a, &compress)) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "compress must be true or false");
        return;
    }
    bool one_frame = req->nseg >= 5 && !strcmp(req->seg[2], "frames");
    bool series = !strcmp(req->seg[0], "series");
    unsigned frame = 0;
    if (one_frame && !request_frame(req, &frame))
        return;
    size_t n = 0;
    char(*paths)[4096] = rest_resource_files(req, series ? 2 : 3, &n);
    if (!paths)
        return;
    if (n == 0) {
        free(paths);
        rest_reply_unknown_resource(req);
        return;
    }
    if (series)
        sort_series(paths, n);
    /* the first frame fixes the array's type and shape */
    ts_image_frame f;
    ts_err err;
    int rc = ts_image_decode_file(paths[0], frame, &f, &err);
    if (rc) {
        free(paths);
        if (rc == TS_ENOTFOUND) /* Orthanc: 400 here, not the 404 of the image routes */
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, err.msg);
        else
            reply_image_error(req, rc, &err);
        return;
    }
    unsigned total = 0;
    if (!one_frame) {
        for (size_t i = 0; i < n; i++) {
            unsigned c = 0;
            if (ts_dicom_frame_count(paths[i], &c, &err) == 0)
                total += c;
        }
    }
    size_t hlen;
    char *header = ts_image_npy_header(&f, rescale, one_frame ? 0 : (total ? total : 1), &hlen);
    if (one_frame && !compress) {
        uint8_t *data;
        size_t dlen;
        rc = ts_image_npy_data(&f, rescale, &data, &dlen, &err);
        if (rc == 0) {
            char *all = malloc(hlen + dlen + 1);
            if (!all)
                abort();
            memcpy(all, header, hlen);
            memcpy(all + hlen, data, dlen);
            reply_bytes(req, all, hlen + dlen, "application/octet-stream");
            free(data);
        } else {
            reply_image_error(req, rc, &err);
        }
        free(header);
        free(paths);
        ts_image_frame_clear(&f);
        return;
    }
    npy_stream *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->paths = paths;
    s->npaths = n;
    s->rescale = rescale;
    s->width = f.width;
    s->height = f.height;
    s->channels = f.channels;
    s->buf = (uint8_t *)header; /* the header first, then frame after frame */
    s->len = hlen;
    if (one_frame) {
        /* the header and the one frame; no file to go on with */
        uint8_t *data;
        size_t dlen;
        rc = ts_image_npy_data(&f, rescale, &data, &dlen, &err);
        if (rc) {
            ts_image_frame_clear(&f);
            npy_free(s);
            reply_image_error(req, rc, &err);
            return;
        }
        s->buf = realloc(s->buf, hlen + dlen);
        if (!s->buf)
            abort();
        memcpy(s->buf + hlen, data, dlen);
        s->len = hlen + dlen;
        free(data);
        s->npaths = 0;
    }
    if (compress) {
        s->zip = true;
        s->crc = crc32(0, NULL, 0);
        if (deflateInit2(&s->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
            Z_OK)
            abort();
    }
    ts_image_frame_clear(&f);
    rest_reply_stream(req, "application/octet-stream", -1, npy_read, npy_free, s);
}

/* ---- raw.gz --------------------------------------------------------------------- */

void rest_image_raw_gz(rest_request *req)
{
    ts_dicom_reader *r;
    const char *mime;
    if (!rest_open_frame_raw(req, &r, &mime))
        return;
    ts_err err;
    /* a frame is at most a few hundred MB and Orthanc holds it whole too */
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, ts_dicom_reader_size(r)) + 64, used = 0;
    uint8_t *out = malloc(cap);
    uint8_t in[65536];
    if (!out)
        abort();
    for (;;) {
        size_t got = 0;
        if (ts_dicom_reader_read(r, in, sizeof(in), &got, &err)) {
            deflateEnd(&z);
            free(out);
            ts_dicom_reader_free(r);
            rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, err.msg);
            return;
        }
        z.next_in = in;
        z.avail_in = (uInt)got;
        int flush = got ? Z_NO_FLUSH : Z_FINISH;
        do {
            if (cap - used < 65536) {
                cap *= 2;
                out = realloc(out, cap);
                if (!out)
                    abort();
            }
            z.next_out = out + used;
            z.avail_out = (uInt)(cap - used);
            int zr = deflate(&z, flush);
            used = cap - z.avail_out;
            if (zr == Z_STREAM_END)
                break;
        } while (z.avail_in > 0 || (flush == Z_FINISH));
        if (!got)
            break;
    }
    deflateEnd(&z);
    ts_dicom_reader_free(r);
    reply_bytes(req, out, used, "application/gzip");
}
