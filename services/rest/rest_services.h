/* GET /tessera/services: every service process's heartbeat (lib/io/heartbeat.h),
 * up, down or stopped, whichever replica answers. */
#ifndef REST_SERVICES_H
#define REST_SERVICES_H

#include "rest_http.h"

void rest_services_list(rest_request *req);

#endif
