/* libFuzzer target: decoding and re-encoding pixel data (lib/dicom/transcode.cc,
 * codecs.cc, codecs_j2k.cc) on arbitrary bytes, as GET /instances/{id}/file?
 * transcode=, the store jobs and WADO-RS meet stored files: to Explicit VR
 * Little Endian (every decoder), then to JPEG 2000 and RLE (our encoder and
 * dcmtk's). Nothing may crash, leak or read out of bounds; an error is a fine
 * answer. Seeds: compressed files that scripts/fuzz makes with dcmtk's and
 * GDCM's tools. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "base/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ts_log_init("fuzz", TS_LOG_ERROR);
    ts_err err;
    if (ts_dicom_global_init(&err))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void *out = NULL;
    size_t len = 0;
    ts_err err;
    if (ts_dicom_transcode_buffer(data, size, "1.2.840.10008.1.2.1", 0, &out, &len, &err) == 0 &&
        out) {
        void *again = NULL;
        size_t n = 0;
        (void)ts_dicom_transcode_buffer(out, len, "1.2.840.10008.1.2.4.90", 0, &again, &n, &err);
        free(again);
        again = NULL;
        (void)ts_dicom_transcode_buffer(out, len, "1.2.840.10008.1.2.5", 0, &again, &n, &err);
        free(again);
    }
    free(out);
    return 0;
}
