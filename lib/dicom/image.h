/* Pixels: decoding one frame of an instance (dcmtk's dcmimage: every photometric
 * interpretation, bit depth and transfer syntax a registered codec decodes),
 * Orthanc's renderings of it (preview, rendered, image-uint8/uint16/int16,
 * numpy, matlab), the DICOM standard's (VOI window or LUT from the file, PS3.18
 * rendered), and PNG/JPEG encoding (libpng, libjpeg). One frame at a time: a
 * multi-frame file is never decoded whole (dcmtk's partial access), so memory is
 * bounded by one frame, whatever the size of the study.
 *
 * Thread-safe: each call owns what it decodes; nothing is cached. */
#ifndef TS_DICOM_IMAGE_H
#define TS_DICOM_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest image any rendering produces (width and height each): a request
 * for more is refused (Orthanc 1.10.1 tries and dies for 100000x100000). */
#define TS_IMAGE_MAX_SIDE 8192

/* A decoded frame, as Orthanc's decoder gives it: stored values (no Modality
 * LUT) for monochrome data; RGB (8 bits a sample) for every colour model
 * (RGB, YBR_*, palette colour converted by dcmtk). */
typedef struct ts_image_frame {
    unsigned width, height;
    unsigned channels; /* 1: grey (values), 3: RGB (rgb) */
    int32_t *values;   /* channels 1: width*height stored values */
    uint8_t *rgb;      /* channels 3: width*height*3, interleaved */
    unsigned frames;   /* frames of the instance */
    unsigned bits_stored;
    bool is_signed;
    bool monochrome1;
    /* from the file: rescale (1, 0 when absent) and the first window */
    bool has_rescale;
    double slope, intercept;
    bool has_window;
    double window_center, window_width;
    /* channels 1: the smallest and largest of values when has_range (known to the
     * decoder that wrote them; saves the renderings a pass) */
    bool has_range;
    int32_t value_min, value_max;
} ts_image_frame;

/* Decodes frame index (from 0) of a DICOM file or buffer into *out (cleared
 * with ts_image_frame_clear). Errors: TS_ENOTFOUND: no such frame; TS_ETOOBIG:
 * an image over TS_IMAGE_MAX_SIDE; TS_EUNSUPPORTED: a transfer syntax no codec
 * decodes (video, unknown UIDs), a photometric interpretation or bit depth
 * dcmtk cannot render, no pixel data; TS_EDICOM: the file is not readable,
 * its pixel data is shorter than its frames or does not decode. */
int ts_image_decode_file(const char *path, unsigned index, ts_image_frame *out, ts_err *err);
int ts_image_decode_buffer(const void *data, size_t len, unsigned index, ts_image_frame *out,
                           ts_err *err);
void ts_image_frame_clear(ts_image_frame *f);

/* Pixels to send: width*height*channels samples of bytes_per_sample each
 * (native byte order for 2), row after row. */
typedef struct ts_image_pixels {
    unsigned width, height, channels, bytes_per_sample;
    bool is_signed;
    uint8_t *data;
} ts_image_pixels;
void ts_image_pixels_clear(ts_image_pixels *p);

/* Orthanc 1.10.1's conversions of a decoded frame. */
typedef enum ts_image_mode {
    TS_IMAGE_PREVIEW, /* 8 bits: grey deeper than 8 bits stretched from its minimum to its
                         maximum, MONOCHROME1 inverted; RGB as it is */
    TS_IMAGE_UINT8,   /* grey values clamped to 0..255 */
    TS_IMAGE_UINT16,  /* grey values clamped to 0..65535 */
    TS_IMAGE_INT16,   /* grey values clamped to -32768..32767 */
} ts_image_mode;
/* TS_EUNSUPPORTED for UINT8/UINT16/INT16 of a colour frame (Orthanc: 415). */
int ts_image_convert(const ts_image_frame *f, ts_image_mode mode, ts_image_pixels *out,
                     ts_err *err);

/* Orthanc's /rendered: the window (from the file, else 0..2^BitsStored as
 * Orthanc 1.10.1 computes it, on the rescaled values; overridden by window_center/window_width when
 * set) applied to the rescaled values with Orthanc's linear formula, MONOCHROME1 inverted, then
 * resized to fit width x height (0: keep that side; both: the smaller ratio wins) by Orthanc's
 * nearest-neighbour sampling, after a 5x5 Gaussian when smooth and shrinking. Colour frames are
 * only resized. TS_ETOOBIG when the result would exceed TS_IMAGE_MAX_SIDE. */
typedef struct ts_image_render_opts {
    unsigned width, height;
    bool smooth;
    bool has_window_center, has_window_width;
    double window_center, window_width;
} ts_image_render_opts;
int ts_image_render_orthanc(const ts_image_frame *f, const ts_image_render_opts *o,
                            ts_image_pixels *out, ts_err *err);

/* PS3.18's rendered resources (8.3.5.1) through dcmtk's VOI transformation:
 * the Modality LUT, then window = explicit centre/width with function
 * ("LINEAR", "LINEAR_EXACT", "SIGMOID"; NULL: LINEAR), else the file's first
 * window, else its first VOI LUT, else the values' min/max; MONOCHROME1 as
 * presented (dark high values). Then fitted to width x height (aspect kept;
 * 0: keep). Errors as ts_image_decode_file, TS_EINVAL for an unknown function. */
typedef struct ts_image_dicom_opts {
    unsigned width, height;
    bool shrink_only; /* never make the image larger */
    /* the source region to render (PS3.18 viewport's sx,sy,sw,sh; negative sw/sh: the
     * region lies left of/above sx,sy and is flipped); has_region false: all of it.
     * TS_EINVAL when it leaves the image. */
    bool has_region;
    long sx, sy, sw, sh;
    bool has_window;
    double window_center, window_width;
    const char *function;
} ts_image_dicom_opts;
int ts_image_render_dicom_file(const char *path, unsigned index, const ts_image_dicom_opts *o,
                               ts_image_pixels *out, ts_err *err);

/* PNG of 8 or 16 bits (16-bit samples as stored: int16 as their two's
 * complement, as Orthanc writes image-int16). *out is malloc'd. */
int ts_image_encode_png(const ts_image_pixels *p, uint8_t **out, size_t *len, ts_err *err);
/* Baseline JPEG of 8-bit grey or RGB, quality 1..100 (Orthanc's default 90).
 * TS_EUNSUPPORTED for 16-bit samples. */
int ts_image_encode_jpeg(const ts_image_pixels *p, int quality, uint8_t **out, size_t *len,
                         ts_err *err);
/* Netpbm PAM (image/x-portable-arbitrarymap), as Orthanc writes it. */
int ts_image_encode_pam(const ts_image_pixels *p, uint8_t **out, size_t *len, ts_err *err);

/* Orthanc's /matlab: "double([ v v ; v v ])" (stored values), or for colour
 * "double(permute(reshape([ r g b ... ], [ 3 W H ]), [ 3 2 1 ]))". */
char *ts_image_matlab(const ts_image_frame *f);

/* Orthanc's /numpy: the frame's samples as a .npy array of shape (H,W,C) (or
 * (N, H,W,C) for frames_total > 0, a header for that many frames, the caller
 * appending each frame's ts_image_npy_data). rescale: float32 of
 * value*slope+intercept; else the stored type (u1, <u2, <i2). Colour is u1
 * either way. The header is padded to 128 bytes as numpy and Orthanc write it. */
char *ts_image_npy_header(const ts_image_frame *f, bool rescale, unsigned frames_total,
                          size_t *len);
int ts_image_npy_data(const ts_image_frame *f, bool rescale, uint8_t **out, size_t *len,
                      ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
