/* POST /tools/execute-script (see rest_lua.h). */
#include "rest_lua.h"

#include <arpa/inet.h>
#include <pthread.h>
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

struct rest_lua {
    ts_lua *lua;
    pthread_mutex_t mu;
};

static bool request_filter(rest_request *req)
{
    struct rest_lua *rl = req->ctx->lua;
    char ip[INET6_ADDRSTRLEN];
    rest_client_ip(req, ip, sizeof(ip));
    json_t *args = json_pack("[s, s, s, s, o]", req->method, req->raw_url, ip,
                             req->username ? req->username : "", rest_headers_json(req));
    json_t *result = NULL;
    ts_err err;
    pthread_mutex_lock(&rl->mu);
    int rc = ts_lua_call(rl->lua, "IncomingHttpRequestFilter", args, &result, &err);
    pthread_mutex_unlock(&rl->mu);
    json_decref(args);
    bool ok = rc == 0 && json_is_true(result);
    json_decref(result);
    if (rc) {
        char q[400];
        ts_warn("IncomingHttpRequestFilter failed; request refused", "error=%s",
                ts_log_quote(q, sizeof(q), err.msg));
    }
    if (!ok) /* Orthanc 1.10.1: 403, no body */
        rest_reply_text(req, 403, "", 0);
    return ok;
}

int rest_lua_start(rest_ctx *ctx, ts_err *err)
{
    if (!ts_cfg_str(TESSERA_LUA_SCRIPTS)[0])
        return 0;
    ts_lua *l = ts_lua_new();
    int rc = ts_lua_load_configured(l, err);
    if (rc || !ts_lua_has(l, "IncomingHttpRequestFilter")) {
        ts_lua_free(l);
        return rc;
    }
    struct rest_lua *rl = calloc(1, sizeof(*rl));
    if (!rl)
        abort();
    rl->lua = l;
    pthread_mutex_init(&rl->mu, NULL);
    ctx->lua = rl;
    ctx->filter = request_filter;
    ts_info("IncomingHttpRequestFilter on", NULL);
    return 0;
}

void rest_lua_stop(rest_ctx *ctx)
{
    struct rest_lua *rl = ctx->lua;
    if (!rl)
        return;
    ts_lua_free(rl->lua);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
    ctx->lua = NULL;
    ctx->filter = NULL;
}
