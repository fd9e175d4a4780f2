/* Orthanc's POST /tools/execute-script: the posted Lua script runs in a fresh
 * state of this rest replica (lib/domain/lua_scripts.h) after the scripts of
 * TESSERA_LUA_SCRIPTS; what it prints is the answer. Off unless
 * TESSERA_EXECUTE_LUA_ENABLED (403, as Orthanc's ExecuteLuaEnabled).
 * And Orthanc's IncomingHttpRequestFilter(method, uri, ip, username,
 * headers) when the scripts define it: one state, called under a mutex
 * before every request is routed; false answers 403 with no body. */
#ifndef REST_LUA_H
#define REST_LUA_H

#include "rest_http.h"

void rest_execute_script(rest_request *req);
/* Loads TESSERA_LUA_SCRIPTS and sets ctx->filter when they define
 * IncomingHttpRequestFilter; a script error stops the start. */
int rest_lua_start(rest_ctx *ctx, ts_err *err);
void rest_lua_stop(rest_ctx *ctx);

#endif
