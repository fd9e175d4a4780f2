/* Archives: a ZIP of the resources' DICOM files in Orthanc's layout
 * (lib/domain/archives.h). GET /{patients,studies,series}/{id}/archive and the
 * synchronous POSTs stream it; asynchronous POSTs submit an `Archive` job
 * whose ZIP is then GET /jobs/{id}/archive, from any REST process. */
#ifndef REST_ARCHIVE_H
#define REST_ARCHIVE_H

#include <jansson.h>

#include "rest_http.h"

/* GET /{patients,studies,series}/{id}/archive */
void rest_archive(rest_request *req);
/* POST /{patients,studies,series}/{id}/archive (Synchronous, Asynchronous, Priority) */
void rest_archive_post(rest_request *req);
/* POST /tools/create-archive */
void rest_create_archive(rest_request *req);
/* GET /jobs/{id}/archive, the job's JSON given */
void rest_archive_job_output(rest_request *req, const json_t *job);

#endif
