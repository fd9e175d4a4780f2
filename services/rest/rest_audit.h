/* The audit trail of the REST service (lib/domain/audit.h): every request that
 * reads, exports, queries, stores, modifies or deletes patient data leaves an
 * event, recorded after its answer is decided (never delaying it); admins read
 * the trail at GET /tessera/audit. */
#ifndef REST_AUDIT_H
#define REST_AUDIT_H

#include "rest_http.h"

/* Records the request that the route of pattern answered, if it touches
 * patient data (patients, studies, series, instances, DICOMweb, WADO-URI,
 * /tools/find and lookup, archives and media, sending to modalities/peers). */
void rest_audit_request(rest_request *req, const char *pattern);

/* GET /tessera/audit?since=ID&limit=N&who=&resource=&action=: the trail in id
 * order, at most 1,000 rows a page. */
void rest_audit_list(rest_request *req);

#endif
