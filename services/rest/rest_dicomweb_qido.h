/* QIDO-RS (PS3.18 10.6), the DICOMweb searches for studies, series and
 * instances, matched by the query service. */
#ifndef REST_DICOMWEB_QIDO_H
#define REST_DICOMWEB_QIDO_H

#include "rest_http.h"

/* GET /dicom-web/{studies,series,instances},
 * /dicom-web/studies/{s}/{series,instances}, /dicom-web/studies/{s}/series/{se}/instances */
void rest_dw_search(rest_request *req);

#endif
