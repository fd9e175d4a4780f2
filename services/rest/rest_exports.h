/* Orthanc's GET /exports (?since, ?limit as /changes) and DELETE /exports:
 * the log of resources sent to modalities and peers (lib/domain/exports.h). */
#ifndef REST_EXPORTS_H
#define REST_EXPORTS_H

#include "rest_http.h"

void rest_exports(rest_request *req);

#endif
