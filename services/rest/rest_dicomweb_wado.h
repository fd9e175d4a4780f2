/* WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames, read
 * straight from PostgreSQL and the storage area; and WADO-URI (PS3.18 9). */
#ifndef REST_DICOMWEB_WADO_H
#define REST_DICOMWEB_WADO_H

#include "rest_http.h"

/* GET /dicom-web/studies/{s}[/series/{se}[/instances/{i}]]: multipart/related
 * of application/dicom parts, streamed */
void rest_dw_retrieve(rest_request *req);
/* GET the same followed by /metadata: DICOM JSON, BulkDataURIs for bulk data */
void rest_dw_metadata(rest_request *req);
/* GET /dicom-web/studies/{s}/series/{se}/instances/{i}/bulk/{tag}[/{item}/{tag}...] */
void rest_dw_bulk(rest_request *req);
/* GET /dicom-web/studies/{s}/series/{se}/instances/{i}/frames/{n[,n...]} */
void rest_dw_frames(rest_request *req);
/* GET /wado?requestType=WADO&objectUID=[&studyUID=&seriesUID=] (WADO-URI,
 * PS3.18 9; Orthanc's plugin serves it there): the file for contentType=application/dicom,
 * a rendered frame for image/jpeg (the default) */
void rest_dw_wado_uri(rest_request *req);

/* GET .../{studies/{s},series/{se},instances/{i},frames/{f}}/{rendered,thumbnail}
 * (PS3.18 8.3.5.1.3): rendered images (issue 21) */
void rest_dw_rendered(rest_request *req);

#endif
