/* POST /tools/find: Orthanc's search over the index, answered by the query
 * service's matching engine over the bus (FindRequest/FindReply). */
#ifndef REST_FIND_H
#define REST_FIND_H

#include "rest_http.h"

void rest_tools_find(rest_request *req);

#endif
