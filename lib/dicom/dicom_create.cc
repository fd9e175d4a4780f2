// New datasets for /tools/create-dicom (see dicom_create.h).
#include "dicom/dicom_create.h"

#include <openssl/evp.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>

#include "dicom_internal.hh"

namespace
{

DcmTagKey key_of(uint32_t tag)
{
    return DcmTagKey(static_cast<Uint16>(tag >> 16), static_cast<Uint16>(tag & 0xffff));
}

int fail(ts_oe *oe, ts_oe code, ts_err *err, const std::string &details)
{
    *oe = code;
    return ts_err_set(err, TS_EINVAL, "%s", details.c_str());
}

bool base64_decode(const char *b64, std::string &out)
{
    size_t n = strlen(b64);
    std::vector<unsigned char> buf(n / 4 * 3 + 4);
    int len = EVP_DecodeBlock(buf.data(), reinterpret_cast<const unsigned char *>(b64),
                              static_cast<int>(n));
    if (len < 0 || n % 4 != 0)
        return false;
    while (n > 0 && b64[n - 1] == '=') {
        len--;
        n--;
    }
    out.assign(reinterpret_cast<char *>(buf.data()), static_cast<size_t>(len));
    return true;
}

struct image {
    unsigned width = 0, height = 0, channels = 0, bits = 8;
    std::vector<unsigned char> pixels; // rows one after the other, little-endian for 16 bits
};

struct png_source {
    const std::string *data;
    size_t pos;
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n)
{
    png_source *src = static_cast<png_source *>(png_get_io_ptr(png));
    if (src->pos + n > src->data->size())
        png_error(png, "truncated PNG");
    memcpy(out, src->data->data() + src->pos, n);
    src->pos += n;
}

// libpng prints its errors and warnings to stderr unless given these: the
// caller reports the failure
void png_quiet_error(png_structp png, png_const_charp)
{
    png_longjmp(png, 1);
}

void png_quiet_warning(png_structp, png_const_charp) {}

bool decode_png(const std::string &data, image &img, std::string &why)
{
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, png_quiet_error, png_quiet_warning);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, nullptr);
        why = "cannot allocate a PNG decoder";
        return false;
    }
    png_source src = {&data, 0};
    std::vector<png_bytep> rows;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        why = "not a readable PNG image";
        return false;
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    // palettes and low bit depths expanded, alpha dropped, 16 bits swapped to
    // little-endian: grayscale or RGB of 8 or 16 bits, as DICOM stores them
    png_set_expand(png);
    png_set_strip_alpha(png);
    if (png_get_bit_depth(png, info) == 16)
        png_set_swap(png);
    png_read_update_info(png, info);
    img.width = png_get_image_width(png, info);
    img.height = png_get_image_height(png, info);
    img.channels = png_get_channels(png, info);
    img.bits = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    img.pixels.resize(rowbytes * img.height);
    rows.resize(img.height);
    for (unsigned y = 0; y < img.height; y++)
        rows[y] = img.pixels.data() + y * rowbytes;
    png_read_image(png, rows.data());
    png_destroy_read_struct(&png, &info, nullptr);
    if (img.channels != 1 && img.channels != 3) {
        why = "unsupported PNG pixel format";
        return false;
    }
    return true;
}

struct jpeg_failure {
    jpeg_error_mgr mgr;
    jmp_buf jump;
};

void jpeg_fail(j_common_ptr cinfo)
{
    longjmp(reinterpret_cast<jpeg_failure *>(cinfo->err)->jump, 1);
}

bool decode_jpeg(const std::string &data, image &img, std::string &why)
{
    jpeg_decompress_struct cinfo;
    jpeg_failure failure;
    cinfo.err = jpeg_std_error(&failure.mgr);
    failure.mgr.error_exit = jpeg_fail;
    failure.mgr.output_message = [](j_common_ptr) {}; // warnings: not to stderr
    if (setjmp(failure.jump)) {
        jpeg_destroy_decompress(&cinfo);
        why = "not a readable JPEG image";
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char *>(data.data()),
                 static_cast<unsigned long>(data.size()));
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_GRAYSCALE)
        cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    img.width = cinfo.output_width;
    img.height = cinfo.output_height;
    img.channels = static_cast<unsigned>(cinfo.output_components);
    img.bits = 8;
    size_t rowbytes = static_cast<size_t>(img.width) * img.channels;
    img.pixels.resize(rowbytes * img.height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = img.pixels.data() + cinfo.output_scanline * rowbytes;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return true;
}

} // namespace

extern "C" ts_dicom *ts_dicom_new(void)
{
    return new ts_dicom();
}

extern "C" int ts_dicom_put_string(ts_dicom *d, uint32_t tag, const char *value, ts_err *err)
{
    OFCondition c = d->file.getDataset()->putAndInsertString(key_of(tag), value);
    if (c.bad())
        return ts_err_set(err, TS_EINVAL, "tag %04x,%04x: %s", tag >> 16, tag & 0xffff, c.text());
    return 0;
}

extern "C" void ts_dicom_copy_tags(ts_dicom *d, const ts_dicom *src, const uint32_t *tags, size_t n)
{
    DcmDataset *from = const_cast<ts_dicom *>(src)->file.getDataset();
    DcmDataset *to = d->file.getDataset();
    for (size_t i = 0; i < n; i++) {
        DcmElement *el = nullptr;
        if (from->findAndGetElement(key_of(tags[i]), el).good() && el)
            to->insert(static_cast<DcmElement *>(el->clone()), OFTrue);
    }
}

extern "C" int ts_dicom_set_content(ts_dicom *d, const char *uri, ts_oe *oe, ts_err *err)
{
    const char *comma = strchr(uri, ',');
    const char *semi = strstr(uri, ";base64,");
    if (strncmp(uri, "data:", 5) != 0 || !comma || !semi || semi + 7 != comma)
        return fail(oe, TS_OE_BAD_FILE_FORMAT, err,
                    "the content is no data URI (data:<MIME type>;base64,<bytes>)");
    std::string mime(uri + 5, static_cast<size_t>(semi - (uri + 5)));
    if (mime != "application/pdf" && mime != "image/png" && mime != "image/jpeg")
        return fail(oe, TS_OE_NOT_IMPLEMENTED, err,
                    "Unsupported MIME type for the content of a new DICOM file: " + mime);
    std::string bytes;
    if (!base64_decode(comma + 1, bytes))
        return fail(oe, TS_OE_BAD_FILE_FORMAT, err, "the content is not valid base64");
    DcmDataset *ds = d->file.getDataset();
    if (mime == "application/pdf") {
        // an odd length is padded with a NUL, as PS3.5 requires
        if (bytes.size() % 2)
            bytes.push_back('\0');
        ds->putAndInsertString(DCM_SOPClassUID, UID_EncapsulatedPDFStorage);
        ds->putAndInsertString(DCM_Modality, "OT");
        ds->putAndInsertString(DCM_ConversionType, "WSD");
        ds->putAndInsertString(DCM_MIMETypeOfEncapsulatedDocument, "application/pdf");
        ds->putAndInsertUint8Array(DCM_EncapsulatedDocument,
                                   reinterpret_cast<const Uint8 *>(bytes.data()),
                                   static_cast<unsigned long>(bytes.size()));
        return 0;
    }
    image img;
    std::string why;
    bool ok;
    if (mime == "image/png")
        ok = decode_png(bytes, img, why);
    else if (mime == "image/jpeg")
        ok = decode_jpeg(bytes, img, why);
    else
        return fail(oe, TS_OE_NOT_IMPLEMENTED, err,
                    "Unsupported MIME type for the content of a new DICOM file: " + mime);
    if (!ok)
        return fail(oe, TS_OE_BAD_FILE_FORMAT, err, why);
    ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(img.channels));
    ds->putAndInsertString(DCM_PhotometricInterpretation,
                           img.channels == 3 ? "RGB" : "MONOCHROME2");
    if (img.channels == 3)
        ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
    ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(img.height));
    ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(img.width));
    ds->putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(img.bits));
    ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(img.bits));
    ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(img.bits - 1));
    ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
    if (img.pixels.size() % 2)
        img.pixels.push_back(0);
    ds->putAndInsertUint8Array(DCM_PixelData, img.pixels.data(),
                               static_cast<unsigned long>(img.pixels.size()));
    return 0;
}
