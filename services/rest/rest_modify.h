/* Orthanc's /modify and /anonymize (lib/dicom/dicom_modify.h does the work on a
 * dataset): an instance is modified in the REST process and the file is the
 * answer (nothing stored, as Orthanc); a series, study or patient becomes a
 * ResourceModification job in the Redis registry, run by the jobs service
 * (services/jobs/jobs_modify.c), whose new instances go through ingest. Also
 * /tools/generate-uid. */
#ifndef REST_MODIFY_H
#define REST_MODIFY_H

#include "rest_http.h"

/* POST /instances/{id}/modify and /instances/{id}/anonymize */
void rest_modify_instance(rest_request *req);
/* POST /{patients,studies,series}/{id}/modify and .../anonymize */
void rest_modify_resource(rest_request *req);
/* POST /studies/{id}/split: the given series/instances copied into a new study
 * (a SplitStudy job) */
void rest_split_study(rest_request *req);
/* POST /studies/{id}/merge: the given studies/series/instances copied into this
 * study, taking its patient and study tags (a MergeStudy job) */
void rest_merge_study(rest_request *req);
/* GET /tools/generate-uid?level=patient|study|series|instance */
void rest_generate_uid(rest_request *req);

#endif
