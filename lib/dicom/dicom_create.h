/* New datasets for POST /tools/create-dicom (dicom_create.cc): an empty dataset
 * filled tag by tag (the tags of a request go through dicom_modify.h), the
 * tags it inherits from its parent, and its content from a data URI: a PDF
 * (Encapsulated PDF), a PNG (libpng) or a JPEG (libjpeg) decoded into
 * uncompressed pixel data, as Orthanc 1.10.1 builds them. */
#ifndef TS_DICOM_CREATE_H
#define TS_DICOM_CREATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/orthanc_errors.h"
#include "dicom/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An empty dataset (no meta header yet: ts_dicom_save_file writes one). */
ts_dicom *ts_dicom_new(void);

/* Sets a top-level element from text (the dictionary's VR). */
int ts_dicom_put_string(ts_dicom *d, uint32_t tag, const char *value, ts_err *err);

/* Copies the elements of these tags that src has into d (a parent's tags). */
void ts_dicom_copy_tags(ts_dicom *d, const ts_dicom *src, const uint32_t *tags, size_t n);

/* The content of a new instance from a data URI ("data:<mime>;base64,...").
 * application/pdf: EncapsulatedDocument with SOPClassUID Encapsulated PDF
 * Storage, Modality OT, ConversionType WSD; image/png and image/jpeg: the
 * image module (8 or 16 bits, grayscale or RGB) with its pixel data.
 * TS_EINVAL with *oe, as Orthanc 1.10.1: not a data URI or an image that does
 * not decode (BadFileFormat), another MIME type (NotImplemented). */
int ts_dicom_set_content(ts_dicom *d, const char *data_uri, ts_oe *oe, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
