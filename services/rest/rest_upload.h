/* POST /instances: DICOM files uploaded over HTTP (one, a ZIP, or a
 * multipart/form-data of them), stored through ingest's one write path. */
#ifndef REST_UPLOAD_H
#define REST_UPLOAD_H

#include <jansson.h>

#include "rest_http.h"

/* POST /instances: one DICOM file (or a ZIP of them) as the body, stored
 * through ingest's write path; or a multipart/form-data of such bodies. */
void rest_upload_instance(rest_request *req);

/* Stores a complete file of the storage area's tmp/ through ingest (the one
 * write path, as POST /instances) without answering the request: returns the
 * HTTP status POST /instances would give and sets *answer (Orthanc's
 * per-instance object, "Status" "Success"/"AlreadyStored"/"Failure"), which
 * the caller decrefs. Ingest takes the file over; unlink what is left. */
int rest_store_temp_file(rest_request *req, const char *temp_path, json_t **answer);

#endif
