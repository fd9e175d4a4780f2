/* Transcoding (lib/dicom/transcode.cc, codecs.cc, codecs_j2k.cc) over real
 * files: the test writes small uncompressed images with known pixels (16-bit,
 * 12-bit signed multi-frame with odd sizes, 8-bit RGB multi-frame, 8-bit), has
 * dcmtk's dcmcjpeg/dcmcjpls/dcmcrle and GDCM's gdcmconv compress them, and
 * checks that
 *   - our decoders give back exactly the original pixels (lossless syntaxes),
 *     and GDCM's own decode of a lossy JPEG 2000 within 1;
 *   - what our encoders write decodes exactly with the independent tools
 *     (dcmdjpeg, dcmdjpls, dcmdrle, gdcmconv --raw for JPEG 2000);
 *   - bad requests get their TS_E* code: unknown UID, no codec, lossy without
 *     permission, BitsStored too deep for JPEG baseline, truncated code
 *     streams, input that is not DICOM, a missing file.
 * Skips (77) when the tools are missing (dcmtk, libgdcm-tools). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "unit_fs.h"

#define TS_EXPLICIT "1.2.840.10008.1.2.1"
#define TS_IMPLICIT "1.2.840.10008.1.2"
#define TS_BIG "1.2.840.10008.1.2.2"
#define TS_DEFLATE "1.2.840.10008.1.2.1.99"
#define TS_JPEG_BASELINE "1.2.840.10008.1.2.4.50"
#define TS_JPEG_EXTENDED "1.2.840.10008.1.2.4.51"
#define TS_JPEG_LOSSLESS "1.2.840.10008.1.2.4.57"
#define TS_JPEG_SV1 "1.2.840.10008.1.2.4.70"
#define TS_JLS "1.2.840.10008.1.2.4.80"
#define TS_JLS_NEAR "1.2.840.10008.1.2.4.81"
#define TS_J2K_LOSSLESS "1.2.840.10008.1.2.4.90"
#define TS_J2K "1.2.840.10008.1.2.4.91"
#define TS_RLE "1.2.840.10008.1.2.5"
#define TS_MPEG2 "1.2.840.10008.1.2.4.100"

static char tmpdir[] = "/tmp/ts-test-transcode-XXXXXX";

/* ---- a minimal Part 10 writer (explicit VR little endian) ---------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put16(buf *b, uint16_t v)
{
    unsigned char x[2] = {v & 0xff, v >> 8};
    put(b, x, 2);
}

static void put32(buf *b, uint32_t v)
{
    unsigned char x[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
    put(b, x, 4);
}

static void elem(buf *b, uint32_t tag, const char *vr, const void *v, size_t n)
{
    size_t padded = n + (n & 1);
    put16(b, tag >> 16);
    put16(b, tag & 0xffff);
    put(b, vr, 2);
    if (!strcmp(vr, "OB") || !strcmp(vr, "OW")) {
        put16(b, 0);
        put32(b, (uint32_t)padded);
    } else {
        put16(b, (uint16_t)padded);
    }
    put(b, v, n);
    if (n & 1) {
        char pad = (!strcmp(vr, "UI") || !strcmp(vr, "OB")) ? 0 : ' ';
        put(b, &pad, 1);
    }
}

static void elem_str(buf *b, uint32_t tag, const char *vr, const char *s)
{
    elem(b, tag, vr, s, strlen(s));
}

static void elem_us(buf *b, uint32_t tag, uint16_t v)
{
    unsigned char x[2] = {v & 0xff, v >> 8};
    elem(b, tag, "US", x, 2);
}

typedef struct {
    const char *name;
    unsigned rows, cols, spp, bits_alloc, bits_stored, signed_, frames;
    const char *photometric;
    bool no_gdcm_j2k;      /* gdcmconv --j2k asserts on signed multi-frame data */
    unsigned char *pixels; /* little-endian, as in the file */
    size_t len;
    char path[256];
} image;

/* Smooth ramps plus noise: compressible, but every bit matters. */
static void fill_pixels(image *im)
{
    size_t samples = (size_t)im->rows * im->cols * im->spp * im->frames;
    size_t bytes = im->bits_alloc / 8;
    im->len = samples * bytes;
    im->pixels = calloc(1, im->len + 1);
    assert_non_null(im->pixels);
    uint32_t seed = 12345;
    size_t i = 0;
    for (unsigned f = 0; f < im->frames; f++)
        for (unsigned y = 0; y < im->rows; y++)
            for (unsigned x = 0; x < im->cols; x++)
                for (unsigned c = 0; c < im->spp; c++, i++) {
                    seed = seed * 1103515245u + 12345u;
                    int32_t range = 1 << im->bits_stored;
                    int32_t v = (int32_t)((x * 37 + y * 53 + f * 101 + c * 71) * (range / 256 + 1) +
                                          ((seed >> 16) & 15)) %
                                range;
                    if (im->signed_)
                        v -= range / 2;
                    if (bytes == 1) {
                        im->pixels[i] = (unsigned char)v;
                    } else {
                        uint16_t w = (uint16_t)v; /* sign-extended for negative values */
                        im->pixels[2 * i] = w & 0xff;
                        im->pixels[2 * i + 1] = w >> 8;
                    }
                }
}

/* A Part 10 file of im's attributes; its pixel data native, or `encapsulated`
 * (the whole 7FE0,0010 element, items and delimiter included) in syntax ts. */
static void write_file(const image *im, const char *path, const char *ts, const char *photometric,
                       const buf *encapsulated)
{
    char sop[64];
    xsnprintf(sop, sizeof sop, "2.25.4242.%u%u%u", im->rows, im->cols, im->frames);
    buf ds = {0};
    elem_str(&ds, 0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.7");
    elem_str(&ds, 0x00080018, "UI", sop);
    elem_str(&ds, 0x00080060, "CS", "OT");
    elem_str(&ds, 0x00100010, "PN", "TRANSCODE^TEST");
    elem_str(&ds, 0x00100020, "LO", "TC1");
    elem_str(&ds, 0x0020000d, "UI", "2.25.4242.1");
    elem_str(&ds, 0x0020000e, "UI", "2.25.4242.2");
    elem_us(&ds, 0x00280002, (uint16_t)im->spp);
    elem_str(&ds, 0x00280004, "CS", photometric);
    if (im->spp > 1)
        elem_us(&ds, 0x00280006, 0);
    char frames[16];
    xsnprintf(frames, sizeof frames, "%u", im->frames);
    elem_str(&ds, 0x00280008, "IS", frames);
    elem_us(&ds, 0x00280010, (uint16_t)im->rows);
    elem_us(&ds, 0x00280011, (uint16_t)im->cols);
    elem_us(&ds, 0x00280100, (uint16_t)im->bits_alloc);
    elem_us(&ds, 0x00280101, (uint16_t)im->bits_stored);
    elem_us(&ds, 0x00280102, (uint16_t)(im->bits_stored - 1));
    elem_us(&ds, 0x00280103, (uint16_t)im->signed_);
    if (encapsulated)
        put(&ds, encapsulated->p, encapsulated->n);
    else
        elem(&ds, 0x7fe00010, im->bits_alloc == 8 ? "OB" : "OW", im->pixels, im->len);

    buf meta = {0};
    unsigned char version[2] = {0, 1};
    elem(&meta, 0x00020001, "OB", version, 2);
    elem_str(&meta, 0x00020002, "UI", "1.2.840.10008.5.1.4.1.1.7");
    elem_str(&meta, 0x00020003, "UI", sop);
    elem_str(&meta, 0x00020010, "UI", ts);
    elem_str(&meta, 0x00020012, "UI", "2.25.4242.9");

    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char preamble[128] = {0};
    fwrite(preamble, 1, sizeof preamble, f);
    fwrite("DICM", 1, 4, f);
    buf gl = {0};
    unsigned char glen[4] = {meta.n & 0xff, (meta.n >> 8) & 0xff, 0, 0};
    elem(&gl, 0x00020000, "UL", glen, 4);
    fwrite(gl.p, 1, gl.n, f);
    fwrite(meta.p, 1, meta.n, f);
    fwrite(ds.p, 1, ds.n, f);
    assert_int_equal(fclose(f), 0);
    free(gl.p);
    free(meta.p);
    free(ds.p);
}

static void write_image(image *im)
{
    fill_pixels(im);
    xsnprintf(im->path, sizeof im->path, "%s/%s.dcm", tmpdir, im->name);
    write_file(im, im->path, TS_EXPLICIT, im->photometric, NULL);
}

static image images[] = {
    {.name = "mono16",
     .rows = 64,
     .cols = 48,
     .spp = 1,
     .bits_alloc = 16,
     .bits_stored = 16,
     .frames = 1,
     .photometric = "MONOCHROME2"},
    {.name = "mono12s",
     .rows = 33,
     .cols = 17,
     .spp = 1,
     .bits_alloc = 16,
     .bits_stored = 12,
     .signed_ = 1,
     .frames = 3,
     .photometric = "MONOCHROME2",
     .no_gdcm_j2k = true},
    {.name = "mono12u",
     .rows = 33,
     .cols = 17,
     .spp = 1,
     .bits_alloc = 16,
     .bits_stored = 12,
     .frames = 3,
     .photometric = "MONOCHROME2"},
    {.name = "mono16s",
     .rows = 20,
     .cols = 24,
     .spp = 1,
     .bits_alloc = 16,
     .bits_stored = 16,
     .signed_ = 1,
     .frames = 1,
     .photometric = "MONOCHROME2"},
    {.name = "rgb8",
     .rows = 30,
     .cols = 40,
     .spp = 3,
     .bits_alloc = 8,
     .bits_stored = 8,
     .frames = 2,
     .photometric = "RGB"},
    {.name = "mono8",
     .rows = 32,
     .cols = 32,
     .spp = 1,
     .bits_alloc = 8,
     .bits_stored = 8,
     .frames = 1,
     .photometric = "MONOCHROME2"},
};
#define N_IMAGES (sizeof images / sizeof images[0])

/* ---- helpers ---------------------------------------------------------------- */

static bool have(const char *tool)
{
    char cmd[256];
    xsnprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("command failed (%d): %s", rc, cmd);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The native Pixel Data value of an explicit VR little endian file (the last
 * top-level 7FE0,0010 OB/OW with a defined length); fails on encapsulated data. */
static const unsigned char *native_pixels(const unsigned char *p, size_t n, size_t *len)
{
    for (size_t i = n - 12; i > 132; i--) {
        if (p[i] == 0xe0 && p[i + 1] == 0x7f && p[i + 2] == 0x10 && p[i + 3] == 0x00 &&
            p[i + 4] == 'O' && (p[i + 5] == 'B' || p[i + 5] == 'W') && p[i + 6] == 0 &&
            p[i + 7] == 0) {
            uint32_t l = p[i + 8] | p[i + 9] << 8 | p[i + 10] << 16 | (uint32_t)p[i + 11] << 24;
            if (l == 0xffffffffu)
                fail_msg("pixel data still encapsulated");
            assert_true(i + 12 + l <= n);
            *len = l;
            return p + i + 12;
        }
    }
    fail_msg("no native pixel data found");
    return NULL;
}

static char *tag_of(const void *data, size_t n, uint32_t tag)
{
    ts_dicom *d = NULL;
    ts_err err = {0};
    if (ts_dicom_open_buffer(data, n, &d, &err))
        fail_msg("reopen: %s", err.msg);
    /* (the meta header's transfer syntax is not in the data set) */
    char *v =
        tag == 0x00020010 ? strdup(ts_dicom_transfer_syntax(d)) : ts_dicom_get_string(d, tag, true);
    ts_dicom_free(d);
    if (!v)
        fail_msg("tag %08x missing", tag);
    return v;
}

/* Samples equal within tol (0: byte for byte). The pad byte after odd-length
 * 8-bit data is not compared. */
static void assert_pixels(const image *im, const unsigned char *got, size_t got_len, int tol,
                          const char *what)
{
    if (got_len < im->len || got_len > im->len + 1)
        fail_msg("%s %s: %zu bytes of pixels, want %zu", im->name, what, got_len, im->len);
    if (tol == 0) {
        if (memcmp(got, im->pixels, im->len) != 0)
            fail_msg("%s %s: pixels differ", im->name, what);
        return;
    }
    size_t bytes = im->bits_alloc / 8;
    for (size_t i = 0; i < im->len / bytes; i++) {
        int a, b;
        if (bytes == 1) {
            a = got[i];
            b = im->pixels[i];
        } else {
            a = (int16_t)(got[2 * i] | got[2 * i + 1] << 8);
            b = (int16_t)(im->pixels[2 * i] | im->pixels[2 * i + 1] << 8);
            if (!im->signed_) {
                a &= 0xffff;
                b &= 0xffff;
            }
        }
        if (abs(a - b) > tol)
            fail_msg("%s %s: sample %zu is %d, want %d (+-%d)", im->name, what, i, a, b, tol);
    }
}

/* Our decode of `path` to explicit VR LE, compared with the original. */
static void check_our_decode(const image *im, const char *path, int tol, const char *what)
{
    void *out = NULL;
    size_t n = 0;
    ts_err err = {0};
    if (ts_dicom_transcode_file(path, TS_EXPLICIT, 0, &out, &n, &err))
        fail_msg("%s %s: decode failed: %s", im->name, what, err.msg);
    size_t plen;
    const unsigned char *px = native_pixels(out, n, &plen);
    assert_pixels(im, px, plen, tol, what);
    char *pi = tag_of(out, n, 0x00280004);
    if (im->spp == 3)
        assert_string_equal(pi, "RGB"); /* YBR_RCT/YBR_ICT come out as RGB */
    free(pi);
    free(out);
}

static int setup(void **state)
{
    (void)state;
    if (!have("dcmcjpeg") || !have("dcmcjpls") || !have("dcmcrle") || !have("gdcmconv")) {
        fprintf(stderr, "dcmtk or gdcmconv (libgdcm-tools) missing: skipped\n");
        exit(77);
    }
    ts_err err = {0};
    if (ts_dicom_global_init(&err)) {
        fprintf(stderr, "dicom init: %s\n", err.msg);
        return -1;
    }
    ts_dicom_codecs_init(); /* a second call is harmless */
    if (!mkdtemp(tmpdir))
        return -1;
    for (size_t i = 0; i < N_IMAGES; i++)
        write_image(&images[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_IMAGES; i++)
        free(images[i].pixels);
    rm_rf(tmpdir);
    return 0;
}

/* ---- tests -------------------------------------------------------------------- */

/* Uncompressed originals round-trip through every uncompressed syntax. */
static void test_uncompressed_syntaxes(void **state)
{
    (void)state;
    const char *syntaxes[] = {TS_IMPLICIT, TS_BIG, TS_DEFLATE, TS_EXPLICIT};
    for (size_t i = 0; i < N_IMAGES; i++) {
        image *im = &images[i];
        for (size_t s = 0; s < 4; s++) {
            void *out = NULL;
            size_t n = 0;
            ts_err err = {0};
            if (ts_dicom_transcode_file(im->path, syntaxes[s], 0, &out, &n, &err))
                fail_msg("%s to %s: %s", im->name, syntaxes[s], err.msg);
            if (!strcmp(syntaxes[s], TS_EXPLICIT)) {
                /* already in it: nothing made, the caller sends the input */
                assert_null(out);
                assert_int_equal(n, 0);
                continue;
            }
            char *ts = tag_of(out, n, 0x00020010);
            assert_string_equal(ts, syntaxes[s]);
            free(ts);
            char path[300];
            xsnprintf(path, sizeof path, "%s/%s-%zu.dcm", tmpdir, im->name, s);
            write_all(path, out, n);
            free(out);
            check_our_decode(im, path, 0, syntaxes[s]);
        }
    }
}

/* Files compressed by dcmtk's and GDCM's tools decode to the original pixels. */
static void test_decode_tool_files(void **state)
{
    (void)state;
    struct {
        const char *tool, *suffix, *ts;
        bool only8;
    } tools[] = {
        {"dcmcjpeg", "jpeg70", TS_JPEG_SV1, false},
        {"dcmcjpeg +el", "jpeg57", TS_JPEG_LOSSLESS, false},
        {"dcmcjpls", "jls80", TS_JLS, false},
        {"dcmcrle", "rle", TS_RLE, false},
        {"gdcmconv --j2k", "j2k90", TS_J2K_LOSSLESS, false},
    };
    for (size_t i = 0; i < N_IMAGES; i++) {
        image *im = &images[i];
        for (size_t t = 0; t < sizeof tools / sizeof tools[0]; t++) {
            if (im->no_gdcm_j2k && !strncmp(tools[t].tool, "gdcmconv", 8))
                continue;
            char path[300];
            xsnprintf(path, sizeof path, "%s/%s-%s.dcm", tmpdir, im->name, tools[t].suffix);
            run("%s %s %s >/dev/null 2>&1", tools[t].tool, im->path, path);
            size_t n;
            unsigned char *p = read_all(path, &n);
            char *ts = tag_of(p, n, 0x00020010);
            assert_string_equal(ts, tools[t].ts);
            free(ts);
            free(p);
            check_our_decode(im, path, 0, tools[t].suffix);
        }
    }
}

/* GDCM's JPEG 2000 of an RGB image says YBR_RCT (it applies the colour
 * transform); lossy (YBR_ICT) decodes like GDCM's own decode. */
static void test_decode_j2k_color_and_lossy(void **state)
{
    (void)state;
    image *rgb = &images[4];
    char path[300];
    xsnprintf(path, sizeof path, "%s/rgb8-j2k90.dcm", tmpdir);
    size_t n;
    unsigned char *p = read_all(path, &n);
    char *pi = tag_of(p, n, 0x00280004);
    /* what GDCM wrote; our decoder must answer RGB either way */
    assert_true(!strcmp(pi, "YBR_RCT") || !strcmp(pi, "RGB"));
    free(pi);
    free(p);
    check_our_decode(rgb, path, 0, "gdcm j2k rgb");

    for (size_t i = 0; i < N_IMAGES; i++) {
        image *im = &images[i];
        if (im->no_gdcm_j2k)
            continue;
        char lossy[300], ref[300];
        xsnprintf(lossy, sizeof lossy, "%s/%s-j2k91.dcm", tmpdir, im->name);
        xsnprintf(ref, sizeof ref, "%s/%s-j2k91-gdcm-raw.dcm", tmpdir, im->name);
        run("gdcmconv --j2k --lossy -r 8 %s %s >/dev/null 2>&1", im->path, lossy);
        run("gdcmconv --raw %s %s >/dev/null 2>&1", lossy, ref);
        /* Our decode against GDCM's decode of the same lossy stream. */
        size_t rn;
        unsigned char *rp = read_all(ref, &rn);
        size_t rlen;
        const unsigned char *rpx = native_pixels(rp, rn, &rlen);
        image gdcm = *im;
        gdcm.pixels = malloc(rlen);
        assert_non_null(gdcm.pixels);
        memcpy(gdcm.pixels, rpx, rlen);
        gdcm.len = im->len;
        check_our_decode(&gdcm, lossy, 1, "lossy j2k vs gdcm");
        free(gdcm.pixels);
        free(rp);
    }
}

/* Encapsulated pixel data: an empty offset table, then one item per frame. */
static void encapsulate(buf *b, unsigned char **frames, size_t *lens, unsigned n)
{
    put16(b, 0x7fe0);
    put16(b, 0x0010);
    put(b, "OB", 2);
    put16(b, 0);
    put32(b, 0xffffffffu);
    put16(b, 0xfffe);
    put16(b, 0xe000);
    put32(b, 0);
    for (unsigned i = 0; i < n; i++) {
        put16(b, 0xfffe);
        put16(b, 0xe000);
        put32(b, (uint32_t)(lens[i] + (lens[i] & 1)));
        put(b, frames[i], lens[i]);
        if (lens[i] & 1)
            put(b, "", 1);
    }
    put16(b, 0xfffe);
    put16(b, 0xe0dd);
    put32(b, 0);
}

/* JPEG 2000 with the colour transform, written by OpenJPEG's own opj_compress
 * (not by our encoder) and labelled as PS3.5 8.2.4 asks: YBR_RCT for the
 * reversible transform (lossless: the original RGB back exactly), YBR_ICT for
 * the irreversible one (lossy: what opj_decompress makes of it, within 1).
 * Both come out as RGB. */
static void test_decode_j2k_ybr_rct_ict(void **state)
{
    (void)state;
    if (!have("opj_compress") || !have("opj_decompress")) {
        skip();
        return;
    }
    image *im = &images[4]; /* rgb8, 2 frames */
    size_t frame_len = (size_t)im->rows * im->cols * 3;
    for (int lossy = 0; lossy <= 1; lossy++) {
        unsigned char *streams[2];
        size_t lens[2];
        image ref = *im;
        ref.pixels = malloc(im->len);
        assert_non_null(ref.pixels);
        for (unsigned f = 0; f < im->frames; f++) {
            char ppm[300], j2k[300], back[300];
            xsnprintf(ppm, sizeof ppm, "%s/rgb-%d-%u.ppm", tmpdir, lossy, f);
            xsnprintf(j2k, sizeof j2k, "%s/rgb-%d-%u.j2k", tmpdir, lossy, f);
            xsnprintf(back, sizeof back, "%s/rgb-%d-%u-back.ppm", tmpdir, lossy, f);
            FILE *fp = fopen(ppm, "wb");
            assert_non_null(fp);
            fprintf(fp, "P6\n%u %u\n255\n", im->cols, im->rows);
            fwrite(im->pixels + f * frame_len, 1, frame_len, fp);
            assert_int_equal(fclose(fp), 0);
            run("opj_compress -i %s -o %s -n 4 -mct 1 %s >/dev/null 2>&1", ppm, j2k,
                lossy ? "-I -r 8" : "");
            run("opj_decompress -i %s -o %s >/dev/null 2>&1", j2k, back);
            streams[f] = read_all(j2k, &lens[f]);
            size_t bn;
            unsigned char *bp = read_all(back, &bn);
            assert_true(bn >= frame_len);
            memcpy(ref.pixels + f * frame_len, bp + bn - frame_len, frame_len);
            free(bp);
        }
        buf px = {0};
        encapsulate(&px, streams, lens, im->frames);
        char path[300];
        xsnprintf(path, sizeof path, "%s/rgb-%s.dcm", tmpdir, lossy ? "ict" : "rct");
        write_file(im, path, lossy ? TS_J2K : TS_J2K_LOSSLESS, lossy ? "YBR_ICT" : "YBR_RCT", &px);
        free(px.p);
        if (lossy)
            check_our_decode(&ref, path, 1, "YBR_ICT vs opj_decompress");
        else
            check_our_decode(im, path, 0, "YBR_RCT vs original");
        for (unsigned f = 0; f < im->frames; f++)
            free(streams[f]);
        free(ref.pixels);
    }
}

/* What we encode, the independent tools decode to the original pixels. */
static void test_encode_then_tool_decode(void **state)
{
    (void)state;
    struct {
        const char *ts, *decoder;
    } targets[] = {
        {TS_JPEG_SV1, "dcmdjpeg"}, {TS_JPEG_LOSSLESS, "dcmdjpeg"},      {TS_JLS, "dcmdjpls"},
        {TS_RLE, "dcmdrle"},       {TS_J2K_LOSSLESS, "gdcmconv --raw"}, {TS_J2K, "gdcmconv --raw"},
    };
    for (size_t i = 0; i < N_IMAGES; i++) {
        image *im = &images[i];
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            void *out = NULL;
            size_t n = 0;
            ts_err err = {0};
            if (ts_dicom_transcode_file(im->path, targets[t].ts, 0, &out, &n, &err))
                fail_msg("%s to %s: %s", im->name, targets[t].ts, err.msg);
            char *ts = tag_of(out, n, 0x00020010);
            assert_string_equal(ts, targets[t].ts);
            free(ts);
            /* lossless: same instance */
            char *sop = tag_of(out, n, 0x00080018);
            char want[64];
            xsnprintf(want, sizeof want, "2.25.4242.%u%u%u", im->rows, im->cols, im->frames);
            assert_string_equal(sop, want);
            free(sop);
            char enc[300], dec[300];
            xsnprintf(enc, sizeof enc, "%s/%s-ours-%zu.dcm", tmpdir, im->name, t);
            xsnprintf(dec, sizeof dec, "%s/%s-ours-%zu-dec.dcm", tmpdir, im->name, t);
            write_all(enc, out, n);
            free(out);
            char what[128];
            xsnprintf(what, sizeof what, "ours to %s, %s", targets[t].ts, targets[t].decoder);
            /* our own decoder agrees */
            check_our_decode(im, enc, 0, what);
            /* (GDCM cannot read signed multi-frame J2K: mono16s checks signed data) */
            if (im->no_gdcm_j2k && !strncmp(targets[t].decoder, "gdcmconv", 8))
                continue;
            run("%s %s %s >/dev/null 2>&1", targets[t].decoder, enc, dec);
            size_t dn;
            unsigned char *dp = read_all(dec, &dn);
            size_t plen;
            const unsigned char *px = native_pixels(dp, dn, &plen);
            assert_pixels(im, px, plen, 0, what);
            free(dp);
        }
    }
}

/* Compressed to another compressed syntax goes through native pixels. */
static void test_compressed_to_compressed(void **state)
{
    (void)state;
    image *im = &images[1]; /* 12-bit signed, 3 frames */
    char src[300], mid[300];
    xsnprintf(src, sizeof src, "%s/mono12s-jpeg70.dcm", tmpdir);
    xsnprintf(mid, sizeof mid, "%s/mono12s-jpeg-to-j2k.dcm", tmpdir);
    void *out = NULL;
    size_t n = 0;
    ts_err err = {0};
    if (ts_dicom_transcode_file(src, TS_J2K_LOSSLESS, 0, &out, &n, &err))
        fail_msg("jpeg to j2k: %s", err.msg);
    write_all(mid, out, n);
    free(out);
    check_our_decode(im, mid, 0, "jpeg -> j2k");
    if (ts_dicom_transcode_file(mid, TS_JLS, 0, &out, &n, &err))
        fail_msg("j2k to jls: %s", err.msg);
    xsnprintf(mid, sizeof mid, "%s/mono12s-j2k-to-jls.dcm", tmpdir);
    write_all(mid, out, n);
    free(out);
    check_our_decode(im, mid, 0, "j2k -> jls");
    /* and from a buffer */
    size_t bn;
    unsigned char *b = read_all(mid, &bn);
    if (ts_dicom_transcode_buffer(b, bn, TS_RLE, 0, &out, &n, &err))
        fail_msg("jls to rle: %s", err.msg);
    free(b);
    xsnprintf(mid, sizeof mid, "%s/mono12s-jls-to-rle.dcm", tmpdir);
    write_all(mid, out, n);
    free(out);
    check_our_decode(im, mid, 0, "jls -> rle");
}

/* Lossy targets: refused without the flag; with it JPEG baseline of 8-bit data
 * works and the instance gets a new SOP Instance UID; 16-bit is refused. */
static void test_lossy_rules(void **state)
{
    (void)state;
    void *out = NULL;
    size_t n = 0;
    ts_err err = {0};
    image *m8 = &images[5], *m16 = &images[0];
    assert_int_equal(ts_dicom_transcode_file(m8->path, TS_JPEG_BASELINE, 0, &out, &n, &err),
                     TS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "lossy"));
    assert_null(out);
    assert_int_equal(ts_dicom_transcode_file(m8->path, TS_JLS_NEAR, 0, &out, &n, &err),
                     TS_EUNSUPPORTED);
    assert_int_equal(ts_dicom_transcode_file(m16->path, TS_JPEG_BASELINE, TS_TRANSCODE_ALLOW_LOSSY,
                                             &out, &n, &err),
                     TS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "BitsStored"));

    assert_int_equal(ts_dicom_transcode_file(m8->path, TS_JPEG_BASELINE, TS_TRANSCODE_ALLOW_LOSSY,
                                             &out, &n, &err),
                     0);
    char *sop = tag_of(out, n, 0x00080018);
    assert_string_not_equal(sop, "2.25.4242.32321");
    free(sop);
    char *lossy = tag_of(out, n, 0x00282110);
    assert_non_null(lossy);
    assert_string_equal(lossy, "01");
    free(lossy);
    char path[300];
    xsnprintf(path, sizeof path, "%s/mono8-baseline.dcm", tmpdir);
    write_all(path, out, n);
    free(out);
    /* JPEG at quality 90 of a noisy ramp: within 16 of the original */
    check_our_decode(m8, path, 16, "jpeg baseline");

    /* the lossy file decompresses (Orthanc does it too, keeping the UID) */
    assert_int_equal(ts_dicom_transcode_file(path, TS_EXPLICIT, 0, &out, &n, &err), 0);
    free(out);

    assert_true(ts_transcode_possible(TS_J2K, TS_EXPLICIT, 0));
    assert_false(ts_transcode_possible(TS_EXPLICIT, TS_JPEG_BASELINE, 0));
    assert_true(ts_transcode_possible(TS_EXPLICIT, TS_JPEG_BASELINE, TS_TRANSCODE_ALLOW_LOSSY));
    assert_false(ts_transcode_possible(TS_MPEG2, TS_EXPLICIT, 0));
    assert_true(ts_transcode_possible(TS_MPEG2, TS_MPEG2, 0));
    assert_false(ts_transcode_possible("1.2.3.4", TS_EXPLICIT, 0));
}

static void test_bad_requests(void **state)
{
    (void)state;
    void *out = NULL;
    size_t n = 0;
    ts_err err = {0};
    image *im = &images[0];
    /* not a transfer syntax */
    assert_int_equal(ts_dicom_transcode_file(im->path, "1.2.3.4", 0, &out, &n, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "1.2.3.4"));
    assert_int_equal(ts_dicom_transcode_file(im->path, "", 0, &out, &n, &err), TS_EINVAL);
    assert_int_equal(ts_dicom_transcode_file(im->path, NULL, 0, &out, &n, &err), TS_EINVAL);
    /* a SOP class UID is no transfer syntax either */
    assert_int_equal(
        ts_dicom_transcode_file(im->path, "1.2.840.10008.5.1.4.1.1.7", 0, &out, &n, &err),
        TS_EINVAL);
    /* known, but no encoder: video */
    assert_int_equal(ts_dicom_transcode_file(im->path, TS_MPEG2, 0, &out, &n, &err),
                     TS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "no encoder"));
    assert_null(out);
    /* no file, not DICOM */
    char path[300];
    xsnprintf(path, sizeof path, "%s/missing.dcm", tmpdir);
    assert_int_equal(ts_dicom_transcode_file(path, TS_EXPLICIT, 0, &out, &n, &err), TS_EIO);
    assert_int_equal(ts_dicom_transcode_buffer("hello, world", 12, TS_EXPLICIT, 0, &out, &n, &err),
                     TS_EDICOM);
    assert_int_equal(ts_dicom_transcode_buffer("hi", 2, TS_EXPLICIT, 0, &out, &n, &err), TS_EDICOM);
}

/* Code streams cut short or overwritten: TS_EDICOM, no crash, nothing out. */
static void test_broken_code_streams(void **state)
{
    (void)state;
    const char *suffixes[] = {"j2k90", "jls80", "jpeg70", "rle"};
    for (size_t s = 0; s < 4; s++) {
        char path[300];
        xsnprintf(path, sizeof path, "%s/mono16-%s.dcm", tmpdir, suffixes[s]);
        size_t n;
        unsigned char *p = read_all(path, &n);
        /* Keep the header and the first third of the pixel data. */
        size_t px = 0;
        for (size_t i = 132; i + 8 < n; i++)
            if (p[i] == 0xe0 && p[i + 1] == 0x7f && p[i + 2] == 0x10 && p[i + 3] == 0x00)
                px = i;
        assert_true(px > 0);
        size_t cut = px + (n - px) / 3;
        void *out = NULL;
        size_t on = 0;
        ts_err err = {0};
        int rc = ts_dicom_transcode_buffer(p, cut, TS_EXPLICIT, 0, &out, &on, &err);
        if (rc != TS_EDICOM)
            fail_msg("%s cut: rc %d (%s)", suffixes[s], rc, err.msg);
        assert_null(out);
        /* Same length, garbage in the code stream after its first 16 bytes. */
        for (size_t i = px + 40; i < n - 2; i++)
            p[i] = (unsigned char)(i * 131);
        rc = ts_dicom_transcode_buffer(p, n, TS_EXPLICIT, 0, &out, &on, &err);
        /* RLE has no checks to fail: garbage in, other pixels out. The others refuse. */
        if (strcmp(suffixes[s], "rle") != 0 && rc != TS_EDICOM)
            fail_msg("%s garbage: rc %d (%s)", suffixes[s], rc, err.msg);
        free(out);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uncompressed_syntaxes),
        cmocka_unit_test(test_decode_tool_files),
        cmocka_unit_test(test_decode_j2k_color_and_lossy),
        cmocka_unit_test(test_decode_j2k_ybr_rct_ict),
        cmocka_unit_test(test_encode_then_tool_decode),
        cmocka_unit_test(test_compressed_to_compressed),
        cmocka_unit_test(test_lossy_rules),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_broken_code_streams),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
