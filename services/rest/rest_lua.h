/* Orthanc's POST /tools/execute-script: the posted Lua script runs in a fresh
 * state of this rest replica (lib/domain/lua_scripts.h) after the scripts of
 * TESSERA_LUA_SCRIPTS; what it prints is the answer. Off unless
 * TESSERA_EXECUTE_LUA_ENABLED (403, as Orthanc's ExecuteLuaEnabled). */
#ifndef REST_LUA_H
#define REST_LUA_H

#include "rest_http.h"

void rest_execute_script(rest_request *req);

#endif
