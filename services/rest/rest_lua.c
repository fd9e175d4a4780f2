/* POST /tools/execute-script (see rest_lua.h). */
#include "rest_lua.h"

#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/orthanc_errors.h"
#include "domain/lua_scripts.h"
#include "rest_common.h"

void rest_execute_script(rest_request *req)
{
    if (!ts_cfg_bool(TESSERA_EXECUTE_LUA_ENABLED)) {
        /* Orthanc 1.10.1: 403 and no body ("disallowed for security") */
        ts_warn("POST /tools/execute-script refused (TESSERA_EXECUTE_LUA_ENABLED is off)", NULL);
        rest_reply_text(req, 403, "", 0);
        return;
    }
    /* a state per request: a script cannot leave globals to the next one,
     * and requests on other threads never wait for it */
    ts_lua *l = ts_lua_new();
    ts_err err;
    /* "line": the chunk name Orthanc gives a posted script, in its messages */
    int rc = ts_lua_load_configured(l, &err);
    if (!rc)
        rc = ts_lua_run_string(l, req->body ? req->body : "", req->body_len, "line", &err);
    if (rc) {
        rest_reply_oe(req, TS_OE_CANNOT_EXECUTE_LUA, err.msg);
    } else {
        char *out = ts_lua_take_output(l);
        rest_reply_owned(req, 200, out, strlen(out), "text/plain");
    }
    ts_lua_free(l);
}
