// Pixel data codecs and transcoding (dcmtk's JPEG, JPEG-LS and RLE codecs plus
// a JPEG 2000 codec over OpenJPEG, codecs_j2k.cc).
#ifndef TS_DICOM_CODECS_H
#define TS_DICOM_CODECS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Registers every decoder and encoder with dcmtk's codec list so that
// DcmDataset::chooseRepresentation() can decode every transfer syntax ingest
// accepts (except video) and encode JPEG, JPEG-LS, RLE and JPEG 2000
// (lossless). Idempotent and thread-safe; ts_dicom_global_init() calls it.
void ts_dicom_codecs_init(void);

#ifdef __cplusplus
}
#endif

#endif
