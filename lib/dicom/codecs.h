// Pixel data codecs and transcoding (dcmtk's JPEG, JPEG-LS and RLE codecs plus
// a JPEG 2000 codec over OpenJPEG, codecs_j2k.cc).
#ifndef TS_DICOM_CODECS_H
#define TS_DICOM_CODECS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

// Registers every decoder and encoder with dcmtk's codec list so that
// DcmDataset::chooseRepresentation() can decode every transfer syntax ingest
// accepts (except video) and encode JPEG, JPEG-LS, RLE and JPEG 2000
// (lossless). Idempotent and thread-safe; ts_dicom_global_init() calls it.
void ts_dicom_codecs_init(void);

/* ---- transcoding (lib/dicom/transcode.cc) -------------------------------- */

enum {
    // Lossy targets (JPEG baseline/extended .50/.51, JPEG-LS near-lossless .81)
    // are refused without this flag; with it the result gets a new SOP
    // Instance UID, as dcmtk's encoders and Orthanc do (PS3.3 C.7.6.1.1.5).
    TS_TRANSCODE_ALLOW_LOSSY = 1,
};

/* True for a transfer syntax UID dcmtk knows (retired ones included). */
bool ts_transfer_syntax_known(const char *uid);

/* True when Tessera can write a data set stored in `from` in `to`, as far as
 * the two syntaxes go: `to` == `from`, or `from` decodes (every syntax ingest
 * accepts except video, JPIP and JPEG 2000 part 2) and `to` encodes
 * (uncompressed, deflate, JPEG .50/.51/.57/.70, JPEG-LS, JPEG 2000 .90/.91, RLE).
 * Lossy `to` needs flags & TS_TRANSCODE_ALLOW_LOSSY. A given file can still
 * fail (BitsStored 12 to JPEG baseline, pixel data that do not decode). */
bool ts_transcode_possible(const char *from, const char *to, unsigned flags);

/* Writes the DICOM file at `path` (or the `len` bytes at `data`) in transfer
 * syntax `to_uid` into a malloc'd buffer (*out, *out_len; free() it). A file
 * already in to_uid: 0 with *out NULL (send the input as it is). Errors:
 *   TS_EINVAL       to_uid is not a transfer syntax UID
 *   TS_EUNSUPPORTED no codec for this conversion (video, lossy without the flag,
 *                   JPEG baseline of 12-bit data ...); the message says which
 *   TS_EDICOM       the input is not DICOM or its pixel data do not decode
 *   TS_EIO          the file cannot be read
 * Nothing is written on failure. */
int ts_dicom_transcode_file(const char *path, const char *to_uid, unsigned flags, void **out,
                            size_t *out_len, ts_err *err);
/* The same rules without converting anything (reads the file's header only):
 * 0 when ts_dicom_transcode_file should succeed unless the pixel data are
 * broken, else its error. For answers that must decide before they start. */
int ts_dicom_transcode_check(const char *path, const char *to_uid, unsigned flags, ts_err *err);
int ts_dicom_transcode_buffer(const void *data, size_t len, const char *to_uid, unsigned flags,
                              void **out, size_t *out_len, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
