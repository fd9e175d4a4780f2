/* Pixels (lib/dicom/image.cc): the same image in several transfer syntaxes decodes
 * to the same values, and to the bytes of its uncompressed pixel data; frames out
 * of range, broken and cut buffers fail with an error (run under ASan by
 * scripts/test); the renderings keep Orthanc's rules (window edges, MONOCHROME1,
 * sizes) and the encoders write what their formats say.
 * Files: tests/data/dicom and Debian's pydicom test files (skipped when absent). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <png.h>

#include "dicom/dicom.h"
#include "dicom/image.h"

#define DATA TS_TEST_DATA "/dicom/"
#define PYDICOM "/usr/lib/python3/dist-packages/pydicom/data/test_files/"

static int setup(void **state)
{
    (void)state;
    ts_err err;
    return ts_dicom_global_init(&err);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void decode_ok(const char *path, unsigned frame, ts_image_frame *f)
{
    ts_err err;
    int rc = ts_image_decode_file(path, frame, f, &err);
    if (rc)
        fail_msg("%s: %s", path, err.msg);
}

/* MR_small (16-bit signed) decodes to the little-endian values of its own pixel
 * data element, and its big endian, implicit, RLE, JPEG-LS and JPEG 2000 lossless
 * copies to the same values. */
static void test_same_values_in_every_syntax(void **state)
{
    (void)state;
    ts_image_frame ref;
    decode_ok(DATA "MR_small.dcm", 0, &ref);
    assert_int_equal(ref.channels, 1);
    assert_true(ref.is_signed);
    ts_dicom_reader *r;
    const char *mime;
    ts_err err;
    assert_int_equal(ts_dicom_frame_raw(DATA "MR_small.dcm", 0, &r, &mime, &err), 0);
    size_t n = (size_t)ref.width * ref.height;
    assert_int_equal(ts_dicom_reader_size(r), n * 2);
    int16_t *raw = malloc(n * 2);
    size_t got = 0, total = 0;
    while (ts_dicom_reader_read(r, (char *)raw + total, n * 2 - total, &got, &err) == 0 && got)
        total += got;
    ts_dicom_reader_free(r);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ref.values[i], raw[i]);
    free(raw);

    const char *copies[] = {DATA "MR_small_bigendian.dcm", DATA "MR_small_implicit.dcm",
                            PYDICOM "MR_small_RLE.dcm", PYDICOM "MR_small_jpeg_ls_lossless.dcm",
                            PYDICOM "MR_small_jp2klossless.dcm"};
    for (size_t c = 0; c < sizeof(copies) / sizeof(*copies); c++) {
        if (access(copies[c], R_OK) != 0)
            continue;
        ts_image_frame f;
        decode_ok(copies[c], 0, &f);
        assert_int_equal(f.width, ref.width);
        assert_int_equal(f.height, ref.height);
        if (memcmp(f.values, ref.values, n * sizeof(int32_t)) != 0)
            fail_msg("%s decodes to other values", copies[c]);
        ts_image_frame_clear(&f);
    }
    ts_image_frame_clear(&ref);
}

/* RGB: RLE and frame 0 of a 2-frame RLE agree; a lossy JPEG (YBR_FULL in the
 * file, RGB out) of the same picture is close. */
static void test_colour(void **state)
{
    (void)state;
    if (access(PYDICOM "SC_rgb_rle.dcm", R_OK) != 0)
        skip();
    ts_image_frame ref, f;
    decode_ok(PYDICOM "SC_rgb_rle.dcm", 0, &ref);
    assert_int_equal(ref.channels, 3);
    size_t n = (size_t)ref.width * ref.height * 3;
    decode_ok(PYDICOM "SC_rgb_rle_2frame.dcm", 0, &f);
    assert_int_equal(f.frames, 2);
    assert_memory_equal(f.rgb, ref.rgb, n);
    ts_image_frame_clear(&f);
    decode_ok(PYDICOM "SC_rgb_rle_2frame.dcm", 1, &f);
    ts_image_frame_clear(&f);
    decode_ok(PYDICOM "SC_rgb_jpeg_dcmtk.dcm", 0, &f);
    long sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += labs((long)f.rgb[i] - (long)ref.rgb[i]);
    assert_true(sum / (long)n < 8);
    ts_image_frame_clear(&f);
    ts_image_pixels p;
    ts_err err;
    assert_int_equal(ts_image_convert(&ref, TS_IMAGE_UINT16, &p, &err), TS_EUNSUPPORTED);
    assert_int_equal(ts_image_convert(&ref, TS_IMAGE_PREVIEW, &p, &err), 0);
    assert_memory_equal(p.data, ref.rgb, n);
    ts_image_pixels_clear(&p);
    ts_image_frame_clear(&ref);
}

static void test_bad_input(void **state)
{
    (void)state;
    ts_image_frame f;
    ts_err err;
    assert_int_equal(ts_image_decode_file(DATA "CT_small.dcm", 1, &f, &err), TS_ENOTFOUND);
    assert_int_equal(ts_image_decode_file(DATA "CT_small.dcm", 4000000000u, &f, &err),
                     TS_ENOTFOUND);
    /* no pixel data */
    assert_int_equal(ts_image_decode_file(DATA "rtplan.dcm", 0, &f, &err), TS_EUNSUPPORTED);
    assert_int_equal(ts_image_decode_buffer("not dicom at all", 16, 0, &f, &err), TS_EDICOM);
    /* every cut of a file, compressed or not: an error or a frame, never a crash */
    const char *files[] = {DATA "CT_small.dcm", DATA "JPEG-lossy.dcm", PYDICOM "MR_small_RLE.dcm"};
    for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++) {
        size_t len;
        uint8_t *b = read_all(files[i], &len);
        if (!b)
            continue;
        for (size_t cut = 0; cut < len; cut += len / 97 + 1) {
            int rc = ts_image_decode_buffer(b, cut, 0, &f, &err);
            if (rc == 0)
                ts_image_frame_clear(&f);
            else
                assert_true(rc == TS_EDICOM || rc == TS_EUNSUPPORTED);
        }
        /* flipped bytes in the second half (the pixels): no crash */
        for (size_t k = len / 2; k < len; k += 7)
            b[k] ^= 0x5a;
        if (ts_image_decode_buffer(b, len, 0, &f, &err) == 0)
            ts_image_frame_clear(&f);
        free(b);
    }
}

/* A synthetic frame: values 0..width*height-1, 12 bits. */
static void ramp(ts_image_frame *f, unsigned w, unsigned h)
{
    memset(f, 0, sizeof(*f));
    f->width = w;
    f->height = h;
    f->channels = 1;
    f->frames = 1;
    f->bits_stored = 12;
    f->slope = 1;
    f->values = malloc((size_t)w * h * sizeof(int32_t));
    for (unsigned i = 0; i < w * h; i++)
        f->values[i] = (int32_t)(i * 16);
}

/* The PNG encoder's output read back by libpng gives the pixels it was given, for
 * 8 and 16 bits, grey and RGB: runs, noise and edges (what the up filter and the
 * RLE strategy of the encoder see in an image). */
static void test_png_round_trip(void **state)
{
    (void)state;
    static const struct {
        unsigned ch, bps;
    } kinds[] = {{1, 1}, {1, 2}, {3, 1}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        ts_image_pixels p = {
            .width = 67, .height = 45, .channels = kinds[k].ch, .bytes_per_sample = kinds[k].bps};
        size_t n = (size_t)p.width * p.height * p.channels;
        uint16_t *want = malloc(n * sizeof(*want));
        p.data = malloc(n * p.bytes_per_sample);
        uint32_t rnd = 12345;
        for (size_t i = 0; i < n; i++) {
            rnd = rnd * 1103515245u + 12345u;
            unsigned x = (unsigned)(i / p.channels) % p.width;
            /* a flat left part, a noisy middle, a ramp on the right */
            uint16_t v = x < 20 ? 0 : x < 45 ? (uint16_t)(rnd >> 16) : (uint16_t)(x * 977);
            if (p.bytes_per_sample == 1)
                v &= 0xff;
            want[i] = v;
            if (p.bytes_per_sample == 1)
                p.data[i] = (uint8_t)v;
            else
                memcpy(p.data + 2 * i, &v, 2); /* host order, as ts_image_convert makes */
        }
        uint8_t *out;
        size_t len;
        ts_err err;
        assert_int_equal(ts_image_encode_png(&p, &out, &len, &err), 0);
        png_image img;
        memset(&img, 0, sizeof(img));
        img.version = PNG_IMAGE_VERSION;
        assert_true(png_image_begin_read_from_memory(&img, out, len));
        assert_int_equal(img.width, p.width);
        assert_int_equal(img.height, p.height);
        /* linear 16-bit samples for 16-bit images (no gamma in the file: unchanged) */
        img.format = (p.channels == 3 ? PNG_FORMAT_FLAG_COLOR : 0) |
                     (p.bytes_per_sample == 2 ? PNG_FORMAT_FLAG_LINEAR : 0);
        size_t bytes = PNG_IMAGE_SIZE(img);
        assert_int_equal(bytes, n * p.bytes_per_sample);
        uint8_t *got = malloc(bytes);
        assert_true(png_image_finish_read(&img, NULL, got, 0, NULL));
        for (size_t i = 0; i < n; i++) {
            uint16_t v = got[i];
            if (p.bytes_per_sample == 2)
                memcpy(&v, got + 2 * i, 2);
            if (v != want[i])
                fail_msg("kind %zu sample %zu: %u, want %u", k, i, v, want[i]);
        }
        free(got);
        free(out);
        free(want);
        ts_image_pixels_clear(&p);
    }
}

static void test_render_rules(void **state)
{
    (void)state;
    ts_image_frame f;
    ramp(&f, 16, 16); /* 0 .. 4080 */
    ts_image_render_opts o = {.has_window_center = true,
                              .has_window_width = true,
                              .window_center = 2000,
                              .window_width = 1000};
    ts_image_pixels p;
    ts_err err;
    assert_int_equal(ts_image_render_orthanc(&f, &o, &p, &err), 0);
    for (unsigned i = 0; i < 256; i++) {
        int v = f.values[i];
        if (v <= 1500)
            assert_int_equal(p.data[i], 0);
        else if (v >= 2500)
            assert_int_equal(p.data[i], 255);
        if (i)
            assert_true(p.data[i] >= p.data[i - 1]);
    }
    ts_image_pixels_clear(&p);
    f.monochrome1 = true;
    assert_int_equal(ts_image_render_orthanc(&f, &o, &p, &err), 0);
    assert_int_equal(p.data[0], 255);
    assert_int_equal(p.data[255], 0);
    ts_image_pixels_clear(&p);
    /* sizes: the smaller ratio wins; each pixel is the one under the centre */
    o = (ts_image_render_opts){.width = 4, .height = 100};
    assert_int_equal(ts_image_render_orthanc(&f, &o, &p, &err), 0);
    assert_int_equal(p.width, 4);
    assert_int_equal(p.height, 4);
    ts_image_pixels full;
    ts_image_render_opts none = {0};
    assert_int_equal(ts_image_render_orthanc(&f, &none, &full, &err), 0);
    assert_int_equal(p.data[0], full.data[2 * 16 + 2]);
    assert_int_equal(p.data[5], full.data[6 * 16 + 6]);
    ts_image_pixels_clear(&p);
    ts_image_pixels_clear(&full);
    o = (ts_image_render_opts){.width = TS_IMAGE_MAX_SIDE * 2};
    assert_int_equal(ts_image_render_orthanc(&f, &o, &p, &err), TS_ETOOBIG);
    /* preview stretches min..max; uint8 clamps */
    f.monochrome1 = false;
    assert_int_equal(ts_image_convert(&f, TS_IMAGE_PREVIEW, &p, &err), 0);
    assert_int_equal(p.data[0], 0);
    assert_int_equal(p.data[255], 255);
    ts_image_pixels_clear(&p);
    assert_int_equal(ts_image_convert(&f, TS_IMAGE_UINT8, &p, &err), 0);
    assert_int_equal(p.data[15], 240);
    assert_int_equal(p.data[16], 255);
    ts_image_pixels_clear(&p);
    ts_image_frame_clear(&f);
}

static void test_encoders(void **state)
{
    (void)state;
    ts_image_frame f;
    ramp(&f, 3, 2);
    ts_image_pixels p;
    ts_err err;
    uint8_t *out;
    size_t len;
    assert_int_equal(ts_image_convert(&f, TS_IMAGE_UINT16, &p, &err), 0);
    assert_int_equal(ts_image_encode_png(&p, &out, &len, &err), 0);
    assert_memory_equal(out, "\x89PNG\r\n\x1a\n", 8);
    /* IHDR: width 3, height 2, depth 16, grey */
    assert_int_equal(out[19], 3);
    assert_int_equal(out[23], 2);
    assert_int_equal(out[24], 16);
    assert_int_equal(out[25], 0);
    free(out);
    assert_int_equal(ts_image_encode_jpeg(&p, 90, &out, &len, &err), TS_EUNSUPPORTED);
    assert_int_equal(ts_image_encode_pam(&p, &out, &len, &err), 0);
    const char *head = "P7\nWIDTH 3\nHEIGHT 2\nDEPTH 1\nMAXVAL 65535\nTUPLTYPE GRAYSCALE\nENDHDR\n";
    assert_memory_equal(out, head, strlen(head));
    assert_int_equal(len, strlen(head) + 12);
    assert_int_equal(out[strlen(head) + 2], 0); /* 16, big-endian */
    assert_int_equal(out[strlen(head) + 3], 16);
    free(out);
    ts_image_pixels_clear(&p);
    assert_int_equal(ts_image_convert(&f, TS_IMAGE_PREVIEW, &p, &err), 0);
    assert_int_equal(ts_image_encode_jpeg(&p, 90, &out, &len, &err), 0);
    assert_memory_equal(out, "\xff\xd8", 2);
    assert_memory_equal(out + len - 2, "\xff\xd9", 2);
    free(out);
    ts_image_pixels_clear(&p);

    char *m = ts_image_matlab(&f);
    assert_string_equal(m, "double([ 0 16 32 ; 48 64 80 ])");
    free(m);
    size_t hl;
    char *h = ts_image_npy_header(&f, false, 0, &hl);
    assert_int_equal(hl % 64, 0);
    assert_int_equal(h[hl - 1], '\n');
    /* after the magic, version and length (which holds a NUL) */
    assert_non_null(strstr(h + 10, "{'descr': '<u2', 'fortran_order': False, 'shape': (2,3,1), }"));
    free(h);
    h = ts_image_npy_header(&f, true, 5, &hl);
    assert_non_null(strstr(h + 10, "'descr': '<f4'"));
    assert_non_null(strstr(h + 10, "'shape': (5, 2,3,1)"));
    free(h);
    assert_int_equal(ts_image_npy_data(&f, true, &out, &len, &err), 0);
    assert_int_equal(len, 6 * 4);
    float v;
    memcpy(&v, out + 4 * 5, 4);
    assert_true(v == 80.0f);
    free(out);
    ts_image_frame_clear(&f);
}

/* The standard's rendering (DICOMweb): dcmtk's VOI window over the Modality LUT. */
static void test_render_dicom(void **state)
{
    (void)state;
    ts_image_dicom_opts o = {.width = 32, .height = 32};
    ts_image_pixels p;
    ts_err err;
    assert_int_equal(ts_image_render_dicom_file(DATA "CT_small.dcm", 0, &o, &p, &err), 0);
    assert_int_equal(p.width, 32);
    assert_int_equal(p.channels, 1);
    ts_image_pixels_clear(&p);
    /* a window below every value: white; above: black */
    o = (ts_image_dicom_opts){.has_window = true, .window_center = -30000, .window_width = 10};
    assert_int_equal(ts_image_render_dicom_file(DATA "CT_small.dcm", 0, &o, &p, &err), 0);
    assert_int_equal(p.data[0], 255);
    ts_image_pixels_clear(&p);
    o.window_center = 30000;
    o.function = "LINEAR_EXACT";
    assert_int_equal(ts_image_render_dicom_file(DATA "CT_small.dcm", 0, &o, &p, &err), 0);
    assert_int_equal(p.data[0], 0);
    ts_image_pixels_clear(&p);
    o.function = "CUBIC";
    assert_int_equal(ts_image_render_dicom_file(DATA "CT_small.dcm", 0, &o, &p, &err), TS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_values_in_every_syntax),
        cmocka_unit_test(test_colour),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_render_rules),
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_render_dicom),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
