// Pixels (image.h): dcmtk's DicomImage decodes one frame; Orthanc's renderings
// are computed here with Orthanc 1.10.1's own formulas (so that its clients see
// the same pixels), the standard's through dcmtk's VOI transformation; libpng
// and libjpeg encode.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmimage/diregist.h> // registers the colour image classes with DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>

#include <errno.h>
#include <math.h>
#include <png.h>
#include <zlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jpeglib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "base/xalloc.h"
#include "dicom/image.h"

namespace
{

// Files are loaded with large elements left on disk: DicomImage's partial
// access then reads only the frame it decodes.
const Uint32 LAZY_LOAD = 4096;

int load_file(const char *path, DcmFileFormat &ff, ts_err *err)
{
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, LAZY_LOAD, ERM_autoDetect);
    if (c.bad())
        return ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", c.text());
    return 0;
}

unsigned number_of_frames(DcmDataset *ds)
{
    Sint32 n = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, n).bad() || n < 1)
        n = 1;
    return static_cast<unsigned>(n);
}

// What stops a frame from being decoded before dcmtk is asked to: no pixel
// data, a transfer syntax without a codec, uncompressed pixel data shorter than
// its frames (dcmtk would pad it with zeros and render a lie), a frame number
// out of range, an absurd size.
int check_decodable(DcmFileFormat &ff, unsigned index, unsigned *frames, ts_err *err)
{
    DcmDataset *ds = ff.getDataset();
    const char *uid = nullptr;
    if (ff.getMetaInfo()->findAndGetString(DCM_TransferSyntaxUID, uid).good() && uid && *uid &&
        DcmXfer(uid).getXfer() == EXS_Unknown)
        return ts_err_set(err, TS_EUNSUPPORTED, "transfer syntax %.64s is unknown", uid);
    E_TransferSyntax xfer = ds->getOriginalXfer();
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return ts_err_set(err, TS_EUNSUPPORTED, "the instance has no pixel data");
    Uint16 rows = 0, cols = 0, bits = 0, spp = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, bits).bad())
        return ts_err_set(err, TS_EDICOM, "no Rows, Columns or BitsAllocated");
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    if (rows == 0 || cols == 0)
        return ts_err_set(err, TS_EDICOM, "an image of %ux%u pixels", cols, rows);
    if (rows > TS_IMAGE_MAX_SIDE || cols > TS_IMAGE_MAX_SIDE)
        return ts_err_set(err, TS_ETOOBIG, "an image of %ux%u pixels (at most %u a side)", cols,
                          rows, TS_IMAGE_MAX_SIDE);
    *frames = number_of_frames(ds);
    if (index >= *frames)
        return ts_err_set(err, TS_ENOTFOUND, "no frame %u (the instance has %u)", index, *frames);
    DcmXfer x(xfer);
    if (x.isEncapsulated()) {
        if (!DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit))
            return ts_err_set(err, TS_EUNSUPPORTED, "no decoder for transfer syntax %s (%s)",
                              x.getXferID(), x.getXferName());
    } else if (bits % 8 == 0) {
        unsigned long long frame = static_cast<unsigned long long>(rows) * cols * spp * (bits / 8);
        OFString pi;
        // YBR_*_422: two pixels share one Cb and one Cr, so 2 samples a pixel
        if (ds->findAndGetOFString(DCM_PhotometricInterpretation, pi).good() && pi.size() > 4 &&
            pi.substr(pi.size() - 4) == "_422")
            frame = frame * 2 / 3;
        if (el->getLength() < frame * *frames)
            return ts_err_set(err, TS_EDICOM, "pixel data of %lu bytes for %u frames of %llu",
                              static_cast<unsigned long>(el->getLength()), *frames, frame);
    }
    return 0;
}

const char *image_status(EI_Status s)
{
    const char *t = DicomImage::getString(s);
    return t ? t : "unknown";
}

// The attributes of the file that the renderings read beside the pixels.
void read_attributes(DcmDataset *ds, ts_image_frame *out)
{
    Uint16 u16 = 0;
    ds->findAndGetUint16(DCM_BitsStored, u16);
    out->bits_stored = u16;
    u16 = 0;
    ds->findAndGetUint16(DCM_PixelRepresentation, u16);
    out->is_signed = u16 == 1;
    out->slope = 1;
    out->intercept = 0;
    Float64 a, b;
    if (ds->findAndGetFloat64(DCM_RescaleSlope, a).good() &&
        ds->findAndGetFloat64(DCM_RescaleIntercept, b).good()) {
        out->has_rescale = true;
        out->slope = a;
        out->intercept = b;
    }
    if (ds->findAndGetFloat64(DCM_WindowCenter, a, 0).good() &&
        ds->findAndGetFloat64(DCM_WindowWidth, b, 0).good()) {
        out->has_window = true;
        out->window_center = a;
        out->window_width = b;
    }
}

// The commonest frame (CT, MR, CR: uncompressed little endian, MONOCHROME1/2, 8 or
// 16 bits allocated, high bit at the top of the stored bits) is read straight from
// the file into stored values: what DicomImage gives for it (the stored bits, sign-
// extended when signed), without its copies and conversions, which were a third of
// a 512x512 /rendered (bench/image). false: not such a frame, DicomImage decodes it.
bool decode_native_mono(DcmFileFormat &ff, unsigned index, ts_image_frame *out)
{
    DcmDataset *ds = ff.getDataset();
    E_TransferSyntax xfer = ds->getOriginalXfer();
    if ((xfer != EXS_LittleEndianExplicit && xfer != EXS_LittleEndianImplicit) ||
        gLocalByteOrder != EBO_LittleEndian)
        return false;
    Uint16 rows = 0, cols = 0, alloc = 0, stored = 0, high = 0, spp = 1;
    OFString pi;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, alloc).bad() ||
        ds->findAndGetUint16(DCM_BitsStored, stored).bad() ||
        ds->findAndGetUint16(DCM_HighBit, high).bad() ||
        ds->findAndGetOFString(DCM_PhotometricInterpretation, pi).bad())
        return false;
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    if ((pi != "MONOCHROME1" && pi != "MONOCHROME2") || spp != 1 || (alloc != 8 && alloc != 16) ||
        stored == 0 || stored > alloc || high != stored - 1)
        return false;
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return false;
    size_t n = static_cast<size_t>(rows) * cols, bytes = n * (alloc / 8);
    // not a std::vector: its zero-filling showed under perf
    Uint8 *raw = static_cast<Uint8 *>(xmalloc(bytes));
    DcmFileCache cache;
    if (el->getPartialValue(raw, static_cast<Uint32>(index * bytes), static_cast<Uint32>(bytes),
                            &cache)
            .bad()) {
        free(raw);
        return false;
    }
    out->width = cols;
    out->height = rows;
    out->channels = 1;
    out->monochrome1 = pi == "MONOCHROME1";
    int32_t *values = static_cast<int32_t *>(xmalloc(n * sizeof(int32_t)));
    // the stored bits only; signed: sign-extended, as (v ^ sign) - sign
    const uint32_t mask = (1u << stored) - 1;
    const int32_t sign = out->is_signed ? static_cast<int32_t>(1u << (stored - 1)) : 0;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        uint32_t w;
        if (alloc == 8) {
            w = raw[i];
        } else {
            Uint16 w16;
            memcpy(&w16, raw + 2 * i, 2);
            w = w16;
        }
        int32_t v = static_cast<int32_t>((w & mask) ^ static_cast<uint32_t>(sign)) - sign;
        values[i] = v;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    free(raw);
    out->values = values;
    out->has_range = n > 0;
    out->value_min = lo;
    out->value_max = hi;
    return true;
}

int decode(DcmFileFormat &ff, unsigned index, ts_image_frame *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    unsigned frames = 1;
    int rc = check_decodable(ff, index, &frames, err);
    if (rc)
        return rc;
    DcmDataset *ds = ff.getDataset();
    out->frames = frames;
    read_attributes(ds, out);
    if (decode_native_mono(ff, index, out))
        return 0;
    // Stored values, as Orthanc's decoder gives them: the Modality LUT is applied
    // by the renderings that want it.
    DicomImage img(&ff, ds->getOriginalXfer(),
                   CIF_UsePartialAccessToPixelData | CIF_IgnoreModalityTransformation, index, 1);
    if (img.getStatus() != EIS_Normal)
        return ts_err_set(err,
                          img.getStatus() == EIS_NotSupportedValue ? TS_EUNSUPPORTED : TS_EDICOM,
                          "frame %u does not decode: %s", index, image_status(img.getStatus()));
    out->width = static_cast<unsigned>(img.getWidth());
    out->height = static_cast<unsigned>(img.getHeight());
    size_t n = static_cast<size_t>(out->width) * out->height;
    if (img.isMonochrome()) {
        out->channels = 1;
        out->monochrome1 = img.getPhotometricInterpretation() == EPI_Monochrome1;
        const DiPixel *px = img.getInterData();
        if (!px || !px->getData() || px->getCount() < n)
            return ts_err_set(err, TS_EDICOM, "frame %u does not decode", index);
        out->values = static_cast<int32_t *>(xmalloc(n * sizeof(int32_t)));
        const void *d = px->getData();
        switch (px->getRepresentation()) {
        case EPR_Uint8:
            std::copy_n(static_cast<const Uint8 *>(d), n, out->values);
            break;
        case EPR_Sint8:
            std::copy_n(static_cast<const Sint8 *>(d), n, out->values);
            break;
        case EPR_Uint16:
            std::copy_n(static_cast<const Uint16 *>(d), n, out->values);
            break;
        case EPR_Sint16:
            std::copy_n(static_cast<const Sint16 *>(d), n, out->values);
            break;
        case EPR_Uint32:
            for (size_t i = 0; i < n; i++) {
                Uint32 v = static_cast<const Uint32 *>(d)[i];
                out->values[i] = v > INT32_MAX ? INT32_MAX : static_cast<int32_t>(v);
            }
            break;
        case EPR_Sint32:
            std::copy_n(static_cast<const Sint32 *>(d), n, out->values);
            break;
        }
    } else {
        // RGB, YBR_* and palette colour: dcmtk converts to RGB, 8 bits a sample
        out->channels = 3;
        const void *d = img.getOutputData(8, 0, 0);
        if (!d || img.getOutputDataSize(8) < n * 3)
            return ts_err_set(err, TS_EDICOM, "frame %u does not decode: %s", index,
                              image_status(img.getStatus()));
        out->rgb = static_cast<uint8_t *>(xmalloc(n * 3));
        memcpy(out->rgb, d, n * 3);
    }
    return 0;
}

// A buffer parsed as a file (see ts_dicom_open_buffer: dcmtk then checks
// declared lengths against what is there before allocating).
int load_buffer(const void *data, size_t len, DcmFileFormat &ff, int *fd, ts_err *err)
{
    *fd = memfd_create("ts-image", MFD_CLOEXEC);
    if (*fd < 0)
        return ts_err_set(err, TS_EIO, "memfd_create: %s", strerror(errno));
    const char *p = static_cast<const char *>(data);
    while (len > 0) {
        ssize_t w = write(*fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ts_err_set(err, TS_EIO, "memfd write: %s", strerror(errno));
        p += w;
        len -= static_cast<size_t>(w);
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", *fd);
    return load_file(path, ff, err);
}

// ---- Orthanc's pixel operations (OrthancFramework's ImageProcessing) -------------

// ShiftScale: y = a*x + b in float, clamped, then rounded (iround) or floored.
inline uint8_t shift_scale8(float x, float a, float b, bool round)
{
    float v = a * x + b;
    if (v >= 255.0f)
        return 255;
    if (v <= 0.0f)
        return 0;
    return static_cast<uint8_t>(round ? lroundf(v) : floorf(v));
}

void pixels_alloc(ts_image_pixels *p, unsigned w, unsigned h, unsigned ch, unsigned bps, bool sgn)
{
    p->width = w;
    p->height = h;
    p->channels = ch;
    p->bytes_per_sample = bps;
    p->is_signed = sgn;
    p->data = static_cast<uint8_t *>(xmalloc(static_cast<size_t>(w) * h * ch * bps + 1));
}

// SmoothGaussian5x5: the separable kernel 1 4 6 4 1 (/16), edges repeated.
void smooth5x5(uint8_t *img, unsigned w, unsigned h, unsigned ch)
{
    static const int k[5] = {1, 4, 6, 4, 1};
    std::vector<uint8_t> tmp(static_cast<size_t>(w) * h * ch);
    for (unsigned y = 0; y < h; y++)
        for (unsigned x = 0; x < w; x++)
            for (unsigned c = 0; c < ch; c++) {
                int s = 0;
                for (int i = -2; i <= 2; i++) {
                    int xx = std::clamp(static_cast<int>(x) + i, 0, static_cast<int>(w) - 1);
                    s += k[i + 2] * img[(static_cast<size_t>(y) * w + xx) * ch + c];
                }
                tmp[(static_cast<size_t>(y) * w + x) * ch + c] = static_cast<uint8_t>((s + 8) / 16);
            }
    for (unsigned y = 0; y < h; y++)
        for (unsigned x = 0; x < w; x++)
            for (unsigned c = 0; c < ch; c++) {
                int s = 0;
                for (int i = -2; i <= 2; i++) {
                    int yy = std::clamp(static_cast<int>(y) + i, 0, static_cast<int>(h) - 1);
                    s += k[i + 2] * tmp[(static_cast<size_t>(yy) * w + x) * ch + c];
                }
                img[(static_cast<size_t>(y) * w + x) * ch + c] = static_cast<uint8_t>((s + 8) / 16);
            }
}

// Resize: each target pixel takes the source pixel under its centre.
void resize(const uint8_t *src, unsigned sw, unsigned sh, unsigned ch, uint8_t *dst, unsigned dw,
            unsigned dh)
{
    const float sx = static_cast<float>(sw) / static_cast<float>(dw);
    const float sy = static_cast<float>(sh) / static_cast<float>(dh);
    for (unsigned y = 0; y < dh; y++) {
        unsigned yy = std::min(sh - 1, static_cast<unsigned>((static_cast<float>(y) + 0.5f) * sy));
        for (unsigned x = 0; x < dw; x++) {
            unsigned xx =
                std::min(sw - 1, static_cast<unsigned>((static_cast<float>(x) + 0.5f) * sx));
            memcpy(dst + (static_cast<size_t>(y) * dw + x) * ch,
                   src + (static_cast<size_t>(yy) * sw + xx) * ch, ch);
        }
    }
}

// The size that fits w x h (0: free) with the aspect ratio kept, as Orthanc's
// /rendered computes it.
void fit(unsigned sw, unsigned sh, unsigned w, unsigned h, unsigned *tw, unsigned *th)
{
    float ratio = 1;
    if (w && h)
        ratio = std::min(static_cast<float>(w) / static_cast<float>(sw),
                         static_cast<float>(h) / static_cast<float>(sh));
    else if (w)
        ratio = static_cast<float>(w) / static_cast<float>(sw);
    else if (h)
        ratio = static_cast<float>(h) / static_cast<float>(sh);
    *tw = static_cast<unsigned>(lroundf(ratio * static_cast<float>(sw)));
    *th = static_cast<unsigned>(lroundf(ratio * static_cast<float>(sh)));
}

// Scales the 8-bit image in *p to fit w x h; smooth: Gaussian first when shrinking.
int scale_to_fit(ts_image_pixels *p, unsigned w, unsigned h, bool smooth, ts_err *err)
{
    unsigned tw, th;
    fit(p->width, p->height, w, h, &tw, &th);
    if (tw > TS_IMAGE_MAX_SIDE || th > TS_IMAGE_MAX_SIDE)
        return ts_err_set(err, TS_ETOOBIG, "a rendering of %ux%u pixels (at most %u a side)", tw,
                          th, TS_IMAGE_MAX_SIDE);
    if (tw == 0 || th == 0)
        return ts_err_set(err, TS_EINVAL, "a rendering of %ux%u pixels", tw, th);
    if (tw == p->width && th == p->height)
        return 0;
    if (smooth && (tw < p->width || th < p->height))
        smooth5x5(p->data, p->width, p->height, p->channels);
    ts_image_pixels r;
    pixels_alloc(&r, tw, th, p->channels, 1, false);
    resize(p->data, p->width, p->height, p->channels, r.data, tw, th);
    ts_image_pixels_clear(p);
    *p = r;
    return 0;
}

// PS3.18 8.3.5.1.3.2's source region of the viewport: sw/sh negative flip it.
int crop(ts_image_pixels *p, const ts_image_dicom_opts *o, ts_err *err)
{
    long x0 = o->sw >= 0 ? o->sx : o->sx + o->sw, y0 = o->sh >= 0 ? o->sy : o->sy + o->sh;
    long w = labs(o->sw), h = labs(o->sh);
    if (w == 0 || h == 0 || x0 < 0 || y0 < 0 || x0 + w > static_cast<long>(p->width) ||
        y0 + h > static_cast<long>(p->height))
        return ts_err_set(err, TS_EINVAL, "region %ld,%ld,%ld,%ld is not inside the %ux%u image",
                          o->sx, o->sy, o->sw, o->sh, p->width, p->height);
    ts_image_pixels r;
    pixels_alloc(&r, static_cast<unsigned>(w), static_cast<unsigned>(h), p->channels, 1, false);
    const unsigned ch = p->channels;
    for (long y = 0; y < h; y++)
        for (long x = 0; x < w; x++) {
            long sx = o->sw >= 0 ? x0 + x : x0 + w - 1 - x;
            long sy = o->sh >= 0 ? y0 + y : y0 + h - 1 - y;
            memcpy(r.data + (static_cast<size_t>(y) * w + x) * ch,
                   p->data + (static_cast<size_t>(sy) * p->width + sx) * ch, ch);
        }
    ts_image_pixels_clear(p);
    *p = r;
    return 0;
}

// Orthanc's decoder gives 8-bit grey (Grayscale8) for unsigned data of at most 8 bits.
bool is_grey8(const ts_image_frame *f)
{
    return f->channels == 1 && !f->is_signed && f->bits_stored <= 8;
}

// ---- encoders ----------------------------------------------------------------------

struct membuf {
    std::vector<uint8_t> bytes;
};

void png_write_cb(png_structp png, png_bytep data, png_size_t len)
{
    membuf *m = static_cast<membuf *>(png_get_io_ptr(png));
    m->bytes.insert(m->bytes.end(), data, data + len);
}

void png_flush_cb(png_structp) {}

uint8_t *copy_out(const std::vector<uint8_t> &v, size_t *len)
{
    uint8_t *o = static_cast<uint8_t *>(xmalloc(v.size() + 1));
    memcpy(o, v.data(), v.size());
    *len = v.size();
    return o;
}

} // namespace

extern "C" void ts_image_frame_clear(ts_image_frame *f)
{
    if (!f)
        return;
    free(f->values);
    free(f->rgb);
    memset(f, 0, sizeof(*f));
}

extern "C" void ts_image_pixels_clear(ts_image_pixels *p)
{
    if (!p)
        return;
    free(p->data);
    memset(p, 0, sizeof(*p));
}

extern "C" int ts_image_decode_file(const char *path, unsigned index, ts_image_frame *out,
                                    ts_err *err)
{
    memset(out, 0, sizeof(*out));
    DcmFileFormat ff;
    int rc = load_file(path, ff, err);
    return rc ? rc : decode(ff, index, out, err);
}

extern "C" int ts_image_decode_buffer(const void *data, size_t len, unsigned index,
                                      ts_image_frame *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    DcmFileFormat ff;
    int fd = -1;
    int rc = load_buffer(data, len, ff, &fd, err);
    if (!rc)
        rc = decode(ff, index, out, err);
    if (rc)
        ts_image_frame_clear(out);
    if (fd >= 0)
        close(fd);
    return rc;
}

extern "C" int ts_image_convert(const ts_image_frame *f, ts_image_mode mode, ts_image_pixels *out,
                                ts_err *err)
{
    memset(out, 0, sizeof(*out));
    size_t n = static_cast<size_t>(f->width) * f->height;
    if (f->channels == 3) {
        if (mode != TS_IMAGE_PREVIEW)
            return ts_err_set(err, TS_EUNSUPPORTED, "a colour image has no %s form",
                              mode == TS_IMAGE_UINT8    ? "uint8"
                              : mode == TS_IMAGE_UINT16 ? "uint16"
                                                        : "int16");
        pixels_alloc(out, f->width, f->height, 3, 1, false);
        memcpy(out->data, f->rgb, n * 3);
        return 0;
    }
    switch (mode) {
    case TS_IMAGE_PREVIEW: {
        pixels_alloc(out, f->width, f->height, 1, 1, false);
        if (is_grey8(f)) {
            for (size_t i = 0; i < n; i++)
                out->data[i] = static_cast<uint8_t>(f->values[i]);
        } else {
            int32_t lo = n ? *std::min_element(f->values, f->values + n) : 0;
            int32_t hi = n ? *std::max_element(f->values, f->values + n) : 0;
            if (lo == hi) {
                memset(out->data, 0, n);
            } else {
                float scaling = 255.0f / static_cast<float>(hi - lo);
                float offset = static_cast<float>(-lo) * scaling;
                for (size_t i = 0; i < n; i++)
                    out->data[i] =
                        shift_scale8(static_cast<float>(f->values[i]), scaling, offset, true);
            }
        }
        if (f->monochrome1)
            for (size_t i = 0; i < n; i++)
                out->data[i] = static_cast<uint8_t>(255 - out->data[i]);
        return 0;
    }
    case TS_IMAGE_UINT8:
        pixels_alloc(out, f->width, f->height, 1, 1, false);
        for (size_t i = 0; i < n; i++)
            out->data[i] = static_cast<uint8_t>(std::clamp(f->values[i], 0, 255));
        return 0;
    case TS_IMAGE_UINT16: {
        pixels_alloc(out, f->width, f->height, 1, 2, false);
        uint16_t *d = reinterpret_cast<uint16_t *>(out->data);
        for (size_t i = 0; i < n; i++)
            d[i] = static_cast<uint16_t>(std::clamp(f->values[i], 0, 65535));
        return 0;
    }
    case TS_IMAGE_INT16: {
        pixels_alloc(out, f->width, f->height, 1, 2, true);
        int16_t *d = reinterpret_cast<int16_t *>(out->data);
        for (size_t i = 0; i < n; i++)
            d[i] = static_cast<int16_t>(std::clamp(f->values[i], -32768, 32767));
        return 0;
    }
    }
    return ts_err_set(err, TS_EINVAL, "unknown image mode %d", static_cast<int>(mode));
}

extern "C" int ts_image_render_orthanc(const ts_image_frame *f, const ts_image_render_opts *o,
                                       ts_image_pixels *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    size_t n = static_cast<size_t>(f->width) * f->height;
    if (f->channels == 3) {
        pixels_alloc(out, f->width, f->height, 3, 1, false);
        memcpy(out->data, f->rgb, n * 3);
    } else {
        // OrthancRestResources.cpp, RenderedFrameHandler (1.10.1), in float as there
        float slope = static_cast<float>(f->slope), intercept = static_cast<float>(f->intercept);
        // without a window: the stored range, neither rescaled nor shifted by the
        // intercept (what Orthanc 1.10.1 answers, checked with a slope of 3 and an
        // intercept of -1000)
        float ww = static_cast<float>(1u << std::min(f->bits_stored, 31u));
        float wc = ww / 2.0f;
        if (f->has_window) {
            wc = static_cast<float>(f->window_center);
            ww = static_cast<float>(f->window_width);
        }
        if (o->has_window_width)
            ww = static_cast<float>(o->window_width);
        if (o->has_window_center)
            wc = static_cast<float>(o->window_center);
        if (ww <= 1.0f)
            ww = 1;
        if (fabsf(slope) <= 0.1f)
            slope = 0.1f;
        const float scaling = 255.0f * slope / ww;
        const float offset = (intercept - wc + ww / 2.0f) / slope;
        pixels_alloc(out, f->width, f->height, 1, 1, false);
        // Through a table of the frame's range of values when it is narrower than the
        // frame (a 12-bit CT: 4096 entries for 262,144 pixels): the same function per
        // entry, so the same bytes, without a float multiply per pixel (the loop was
        // the first of a 512x512 /rendered's costs under perf).
        const float b = offset * scaling;
        const int32_t *v = f->values;
        uint8_t *dst = out->data; // a local: a store through uint8_t* may alias out
        int32_t lo = n ? v[0] : 0, hi = lo;
        if (f->has_range) {
            lo = f->value_min;
            hi = f->value_max;
        } else {
            for (size_t i = 1; i < n; i++) {
                lo = std::min(lo, v[i]);
                hi = std::max(hi, v[i]);
            }
        }
        const uint8_t flip = f->monochrome1 ? 255 : 0;
        const int64_t span = static_cast<int64_t>(hi) - lo;
        if (n && static_cast<uint64_t>(span) < n) {
            std::vector<uint8_t> lut(static_cast<size_t>(span) + 1);
            for (size_t k = 0; k < lut.size(); k++)
                lut[k] = static_cast<uint8_t>(
                    flip ^ shift_scale8(static_cast<float>(lo + static_cast<int64_t>(k)), scaling,
                                        b, false));
            const uint8_t *t = lut.data();
            for (size_t i = 0; i < n; i++)
                dst[i] = t[static_cast<size_t>(static_cast<int64_t>(v[i]) - lo)];
        } else {
            for (size_t i = 0; i < n; i++)
                dst[i] = static_cast<uint8_t>(
                    flip ^ shift_scale8(static_cast<float>(v[i]), scaling, b, false));
        }
    }
    int rc = scale_to_fit(out, o->width, o->height, o->smooth, err);
    if (rc)
        ts_image_pixels_clear(out);
    return rc;
}

extern "C" int ts_image_render_dicom_file(const char *path, unsigned index,
                                          const ts_image_dicom_opts *o, ts_image_pixels *out,
                                          ts_err *err)
{
    memset(out, 0, sizeof(*out));
    EF_VoiLutFunction fn = EFV_Linear;
    bool exact = false;
    if (o->function && *o->function) {
        if (!strcasecmp(o->function, "linear"))
            fn = EFV_Linear;
        else if (!strcasecmp(o->function, "linear_exact"))
            exact = true; // dcmtk 3.6.7 has no LINEAR_EXACT: see below
        else if (!strcasecmp(o->function, "sigmoid"))
            fn = EFV_Sigmoid;
        else
            return ts_err_set(err, TS_EINVAL,
                              "VOI LUT function \"%.32s\" is not LINEAR, "
                              "LINEAR_EXACT or SIGMOID",
                              o->function);
    }
    DcmFileFormat ff;
    int rc = load_file(path, ff, err);
    unsigned frames = 1;
    if (!rc)
        rc = check_decodable(ff, index, &frames, err);
    if (rc)
        return rc;
    DicomImage img(&ff, ff.getDataset()->getOriginalXfer(), CIF_UsePartialAccessToPixelData, index,
                   1);
    if (img.getStatus() != EIS_Normal)
        return ts_err_set(err,
                          img.getStatus() == EIS_NotSupportedValue ? TS_EUNSUPPORTED : TS_EDICOM,
                          "frame %u does not decode: %s", index, image_status(img.getStatus()));
    unsigned ch = img.isMonochrome() ? 1 : 3;
    if (ch == 1) {
        if (o->has_window && exact) {
            // PS3.3 C.11.2.1.3.2's (x - c)/w + 0.5 is LINEAR's (x - (c' - 0.5))/(w' - 1) + 0.5
            // with c' = c + 0.5 and w' = w + 1
            img.setWindow(o->window_center + 0.5, (o->window_width <= 0 ? 1 : o->window_width) + 1);
        } else if (o->has_window) {
            img.setWindow(o->window_center, o->window_width < 1 ? 1 : o->window_width);
            img.setVoiLutFunction(fn);
        } else if (img.getWindowCount() > 0) {
            img.setWindow(0);
        } else if (img.getVoiLutCount() > 0) {
            img.setVoiLut(0);
        } else {
            img.setMinMaxWindow();
        }
    }
    size_t n = static_cast<size_t>(img.getWidth()) * img.getHeight() * ch;
    const void *d = img.getOutputData(8, 0, 0);
    if (!d || img.getOutputDataSize(8) < n)
        return ts_err_set(err, TS_EDICOM, "frame %u does not render", index);
    pixels_alloc(out, static_cast<unsigned>(img.getWidth()), static_cast<unsigned>(img.getHeight()),
                 ch, 1, false);
    memcpy(out->data, d, n);
    if (o->has_region && (rc = crop(out, o, err)) != 0) {
        ts_image_pixels_clear(out);
        return rc;
    }
    unsigned w = o->width, h = o->height;
    if (o->shrink_only && (!w || w >= out->width) && (!h || h >= out->height))
        w = h = 0;
    rc = scale_to_fit(out, w, h, true, err);
    if (rc)
        ts_image_pixels_clear(out);
    return rc;
}

extern "C" int ts_image_encode_png(const ts_image_pixels *p, uint8_t **out, size_t *len,
                                   ts_err *err)
{
    *out = nullptr;
    *len = 0;
    membuf m;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return ts_err_set(err, TS_EIO, "png: cannot create the encoder");
    }
    std::vector<png_bytep> rows(p->height);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return ts_err_set(err, TS_EIO, "png: encoding failed");
    }
    png_set_write_fn(png, &m, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, p->width, p->height, p->bytes_per_sample * 8,
                 p->channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    // speed over size: the answer goes to a viewer, not an archive. Level 1 and the
    // "up" filter alone: libpng's adaptive filtering was 2/3 of a 512x512 /rendered
    // (3.5 of 5.3 ms; up: 1.3 ms, and smooth medical images compress as well).
    // Z_RLE (matches at distance 1 only, which is what the up filter leaves in an
    // image): zlib's deflate was a third of rest's CPU under 16 clients, and on a
    // noisy 512x512 CT RLE is 2.1x faster than the default strategy and 6% smaller
    // (docs/benchmarks.md, "Rendering under 16 clients").
    png_set_compression_level(png, 1);
    png_set_compression_strategy(png, Z_RLE);
    png_set_filter(png, 0, PNG_FILTER_UP);
    png_write_info(png, info);
    if (p->bytes_per_sample == 2)
        png_set_swap(png); // PNG is big-endian
    size_t stride = static_cast<size_t>(p->width) * p->channels * p->bytes_per_sample;
    for (unsigned y = 0; y < p->height; y++)
        rows[y] = p->data + y * stride;
    png_write_image(png, rows.data());
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    *out = copy_out(m.bytes, len);
    return 0;
}

namespace
{
struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
};
void jpeg_fail(j_common_ptr c)
{
    jpeg_failure *f = reinterpret_cast<jpeg_failure *>(c->err);
    (*c->err->format_message)(c, f->msg);
    longjmp(f->jump, 1);
}
} // namespace

extern "C" int ts_image_encode_jpeg(const ts_image_pixels *p, int quality, uint8_t **out,
                                    size_t *len, ts_err *err)
{
    *out = nullptr;
    *len = 0;
    if (p->bytes_per_sample != 1)
        return ts_err_set(err, TS_EUNSUPPORTED, "JPEG holds 8-bit samples only");
    struct jpeg_compress_struct c;
    jpeg_failure jf;
    c.err = jpeg_std_error(&jf.mgr);
    jf.mgr.error_exit = jpeg_fail;
    unsigned char *buf = nullptr;
    unsigned long size = 0;
    if (setjmp(jf.jump)) {
        jpeg_destroy_compress(&c);
        free(buf);
        return ts_err_set(err, TS_EIO, "jpeg: %s", jf.msg);
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buf, &size);
    c.image_width = p->width;
    c.image_height = p->height;
    c.input_components = static_cast<int>(p->channels);
    c.in_color_space = p->channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, std::clamp(quality, 1, 100), TRUE);
    jpeg_start_compress(&c, TRUE);
    size_t stride = static_cast<size_t>(p->width) * p->channels;
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = p->data + c.next_scanline * stride;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *out = static_cast<uint8_t *>(xmalloc(size + 1));
    memcpy(*out, buf, size);
    *len = size;
    free(buf);
    return 0;
}

extern "C" int ts_image_encode_pam(const ts_image_pixels *p, uint8_t **out, size_t *len,
                                   ts_err *err)
{
    (void)err;
    char head[160];
    int h = snprintf(head, sizeof(head),
                     "P7\nWIDTH %u\nHEIGHT %u\nDEPTH %u\nMAXVAL %u\nTUPLTYPE %s\nENDHDR\n",
                     p->width, p->height, p->channels, p->bytes_per_sample == 2 ? 65535u : 255u,
                     p->channels == 3 ? "RGB" : "GRAYSCALE");
    size_t body = static_cast<size_t>(p->width) * p->height * p->channels * p->bytes_per_sample;
    *out = static_cast<uint8_t *>(xmalloc(static_cast<size_t>(h) + body + 1));
    memcpy(*out, head, static_cast<size_t>(h));
    uint8_t *d = *out + h;
    if (p->bytes_per_sample == 2) // PAM samples are big-endian
        for (size_t i = 0; i < body; i += 2) {
            d[i] = p->data[i + 1];
            d[i + 1] = p->data[i];
        }
    else
        memcpy(d, p->data, body);
    *len = static_cast<size_t>(h) + body;
    return 0;
}

extern "C" char *ts_image_matlab(const ts_image_frame *f)
{
    std::string s;
    size_t n = static_cast<size_t>(f->width) * f->height;
    char num[24];
    if (f->channels == 3) {
        s.reserve(n * 12 + 64);
        s = "double(permute(reshape([";
        for (size_t i = 0; i < n * 3; i++) {
            snprintf(num, sizeof(num), " %u", f->rgb[i]);
            s += num;
        }
        snprintf(num, sizeof(num), "%u", f->width);
        s += " ], [ 3 " + std::string(num) + " ";
        snprintf(num, sizeof(num), "%u", f->height);
        s += std::string(num) + " ]), [ 3 2 1 ]))";
    } else {
        s.reserve(n * 7 + 16);
        s = "double([";
        for (unsigned y = 0; y < f->height; y++) {
            if (y)
                s += " ;";
            for (unsigned x = 0; x < f->width; x++) {
                snprintf(num, sizeof(num), " %d", f->values[static_cast<size_t>(y) * f->width + x]);
                s += num;
            }
        }
        s += " ])";
    }
    return xstrdup(s.c_str());
}

namespace
{
const char *npy_descr(const ts_image_frame *f, bool rescale)
{
    if (f->channels == 3 || (!rescale && is_grey8(f)))
        return "<u1";
    if (rescale)
        return "<f4";
    return f->is_signed ? "<i2" : "<u2";
}
} // namespace

extern "C" char *ts_image_npy_header(const ts_image_frame *f, bool rescale, unsigned frames_total,
                                     size_t *len)
{
    char shape[64], dict[160];
    if (frames_total)
        snprintf(shape, sizeof(shape), "(%u, %u,%u,%u)", frames_total, f->height, f->width,
                 f->channels);
    else
        snprintf(shape, sizeof(shape), "(%u,%u,%u)", f->height, f->width, f->channels);
    int dl = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                      npy_descr(f, rescale), shape);
    // magic (6) + version (2) + header length (2) + dict, padded with spaces and
    // ended by '\n' to a multiple of 64 (numpy's format 1.0)
    size_t total = 10 + static_cast<size_t>(dl) + 1;
    total = (total + 63) / 64 * 64;
    char *h = static_cast<char *>(xmalloc(total + 1));
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    size_t hl = total - 10;
    h[8] = static_cast<char>(hl & 0xff);
    h[9] = static_cast<char>(hl >> 8);
    memcpy(h + 10, dict, static_cast<size_t>(dl));
    memset(h + 10 + dl, ' ', total - 10 - static_cast<size_t>(dl) - 1);
    h[total - 1] = '\n';
    h[total] = '\0';
    *len = total;
    return h;
}

extern "C" int ts_image_npy_data(const ts_image_frame *f, bool rescale, uint8_t **out, size_t *len,
                                 ts_err *err)
{
    (void)err;
    size_t n = static_cast<size_t>(f->width) * f->height;
    if (f->channels == 3) {
        *out = static_cast<uint8_t *>(xmalloc(n * 3 + 1));
        memcpy(*out, f->rgb, n * 3);
        *len = n * 3;
        return 0;
    }
    const char *d = npy_descr(f, rescale);
    if (!strcmp(d, "<u1")) {
        *out = static_cast<uint8_t *>(xmalloc(n + 1));
        for (size_t i = 0; i < n; i++)
            (*out)[i] = static_cast<uint8_t>(std::clamp(f->values[i], 0, 255));
        *len = n;
    } else if (!strcmp(d, "<f4")) {
        float *o = static_cast<float *>(xmalloc(n * 4 + 1));
        float s = rescale && f->has_rescale ? static_cast<float>(f->slope) : 1.0f;
        float b = rescale && f->has_rescale ? static_cast<float>(f->intercept) : 0.0f;
        for (size_t i = 0; i < n; i++)
            o[i] = static_cast<float>(f->values[i]) * s + b;
        *out = reinterpret_cast<uint8_t *>(o);
        *len = n * 4;
    } else if (!strcmp(d, "<i2")) {
        int16_t *o = static_cast<int16_t *>(xmalloc(n * 2 + 1));
        for (size_t i = 0; i < n; i++)
            o[i] = static_cast<int16_t>(std::clamp(f->values[i], -32768, 32767));
        *out = reinterpret_cast<uint8_t *>(o);
        *len = n * 2;
    } else {
        uint16_t *o = static_cast<uint16_t *>(xmalloc(n * 2 + 1));
        for (size_t i = 0; i < n; i++)
            o[i] = static_cast<uint16_t>(std::clamp(f->values[i], 0, 65535));
        *out = reinterpret_cast<uint8_t *>(o);
        *len = n * 2;
    }
    return 0;
}
