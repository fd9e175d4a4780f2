/* POST /tools/find: Orthanc's search over the index, answered by the query
 * service's matching engine over the bus (FindRequest/FindReply). */
#ifndef REST_FIND_H
#define REST_FIND_H

#include "rest_http.h"

#include "tessera.pb-c.h"

void rest_tools_find(rest_request *req);

/* Restricts a FindRequest to what the caller may see (label-scoped grants). The
 * label pointers stay valid as long as req. */
void rest_find_restrict(rest_request *req, Tessera__FindRequest *fr, char **buf, size_t max);

#endif
