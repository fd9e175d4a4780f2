/* GET /tessera/services (see rest_services.h). */
#include "rest_services.h"

#include "io/heartbeat.h"

void rest_services_list(rest_request *req)
{
    json_t *list = NULL;
    ts_err err;
    int rc = ts_heartbeat_list(req->ctx->db, &list, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return;
    }
    rest_reply_json(req, 200, list);
}
