/* The DICOMweb Studies service (PS3.18) under /dicom-web/: QIDO-RS searches
 * (rest_dicomweb_qido.c), WADO-RS retrieval and metadata
 * (rest_dicomweb_wado.c) and STOW-RS (rest_dicomweb_stow.c). Searches go to
 * the query service's matcher, stores to ingest's write path, reads straight
 * to PostgreSQL and the storage area. */
#ifndef REST_DICOMWEB_H
#define REST_DICOMWEB_H

#include "rest_http.h"

/* GET /dicom-web/{studies,series,instances},
 * /dicom-web/studies/{s}/{series,instances}, /dicom-web/studies/{s}/series/{se}/instances */
void rest_dw_search(rest_request *req);
/* GET /dicom-web/studies/{s}[/series/{se}[/instances/{i}]]: multipart/related
 * of application/dicom parts, streamed */
void rest_dw_retrieve(rest_request *req);
/* GET the same followed by /metadata: DICOM JSON, BulkDataURIs for bulk data */
void rest_dw_metadata(rest_request *req);
/* GET /dicom-web/studies/{s}/series/{se}/instances/{i}/bulk/{tag}[/{item}/{tag}...] */
void rest_dw_bulk(rest_request *req);
/* GET /dicom-web/studies/{s}/series/{se}/instances/{i}/frames/{n[,n...]} */
void rest_dw_frames(rest_request *req);
/* POST /dicom-web/studies[/{s}]: multipart/related of application/dicom parts */
void rest_dw_store(rest_request *req);
/* GET /wado?requestType=WADO&objectUID=[&studyUID=&seriesUID=] (WADO-URI,
 * PS3.18 9; Orthanc's plugin serves it there): the file for contentType=application/dicom; 406 for
 * rendered images (not available yet) */
void rest_dw_wado_uri(rest_request *req);
/* OPTIONS under /dicom-web/ and /wado: 204 with Allow, and a CORS preflight's
 * answer when TESSERA_HTTP_CORS_ORIGINS allows the Origin */
void rest_dw_preflight(rest_request *req);

#endif
