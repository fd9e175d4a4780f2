/* libFuzzer target: the pixel decoder (lib/dicom/image.cc) on arbitrary bytes, as
 * rest reads stored files: decode frame 0 (dcmtk and every registered codec),
 * then every rendering and encoder a route uses. Nothing may crash, leak or read
 * out of bounds; a refusal is a fine answer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/log.h"
#include "dicom/dicom.h"
#include "dicom/image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ts_log_init("fuzz", TS_LOG_ERROR);
    ts_err err;
    if (ts_dicom_global_init(&err))
        abort();
    return 0;
}

static void encode(const ts_image_pixels *p)
{
    uint8_t *out;
    size_t len;
    ts_err err;
    if (ts_image_encode_png(p, &out, &len, &err) == 0)
        free(out);
    if (ts_image_encode_jpeg(p, 75, &out, &len, &err) == 0)
        free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_image_frame f;
    ts_err err;
    if (ts_image_decode_buffer(data, size, 0, &f, &err))
        return 0;
    ts_image_pixels p;
    for (int m = TS_IMAGE_PREVIEW; m <= TS_IMAGE_INT16; m++)
        if (ts_image_convert(&f, (ts_image_mode)m, &p, &err) == 0) {
            encode(&p);
            ts_image_pixels_clear(&p);
        }
    ts_image_render_opts o = {.width = 17, .height = 9, .smooth = true};
    if (ts_image_render_orthanc(&f, &o, &p, &err) == 0) {
        encode(&p);
        ts_image_pixels_clear(&p);
    }
    free(ts_image_matlab(&f));
    size_t len;
    free(ts_image_npy_header(&f, true, 0, &len));
    uint8_t *npy;
    if (ts_image_npy_data(&f, true, &npy, &len, &err) == 0)
        free(npy);
    ts_image_frame_clear(&f);
    return 0;
}
