/* POST /tools/create-dicom: a new instance from tags as JSON, under a parent or
 * not, with a PDF, PNG or JPEG as content (lib/dicom/dicom_create.h), stored
 * through ingest's one write path as an upload. */
#ifndef REST_CREATE_H
#define REST_CREATE_H

#include "rest_http.h"

void rest_create_dicom(rest_request *req);

#endif
