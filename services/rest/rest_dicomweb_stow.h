/* STOW-RS (PS3.18 10.5): DICOM files posted as multipart/related, stored
 * through ingest's write path as POST /instances is. */
#ifndef REST_DICOMWEB_STOW_H
#define REST_DICOMWEB_STOW_H

#include "rest_http.h"

/* POST /dicom-web/studies[/{s}]: multipart/related of application/dicom parts */
void rest_dw_store(rest_request *req);

#endif
