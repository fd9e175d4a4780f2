/* Orthanc's Lua scripts (issue 23): one Lua 5.4 state with the scripts named
 * by TESSERA_LUA_SCRIPTS (or a posted one), Orthanc's helpers (RestApiGet/
 * Post/Put/Delete against Tessera's own REST at TESSERA_LUA_REST_URL, HttpGet/
 * Post/Put/Delete, ParseJson/DumpJson, PrintRecursive, GenerateDicomUid; SendToModality,
 * SendToPeer, ModifyInstance and Delete through the host the caller sets) and two limits, an
 * instruction count (lua_sethook) and a memory ceiling (our lua_Alloc), so a
 * script that loops or allocates without bound fails its call with the reason
 * and the state stays usable. A ts_lua belongs to one thread at a time; the
 * router of tessera-jobs owns one. */
#ifndef TS_LUA_SCRIPTS_H
#define TS_LUA_SCRIPTS_H

#include <jansson.h>
#include <stdbool.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_lua ts_lua;

/* What the script asks the caller to do: SendToModality(resource, modality,
 * [localAet]), SendToPeer(resource, peer), Delete(resource). Each returns 0
 * or a negative code with err set (raised in the script as a Lua error).
 * modify: NULL, or the body of Orthanc's /modify (Replace, Remove,
 * RemovePrivateTags) when the resource is ModifyInstance's output: as in
 * Orthanc's job chain, SendToModality(ModifyInstance(id, ...), m) sends the
 * modified instance (here never stored: Delete of it does nothing). */
typedef struct ts_lua_host {
    void *ctx;
    int (*send)(void *ctx, bool peer, const char *resource, const char *target,
                const char *local_aet, const json_t *modify, ts_err *err);
    int (*delete_resource)(void *ctx, const char *resource, ts_err *err);
} ts_lua_host;

/* A state with the standard libraries and the helpers, limits from
 * TESSERA_LUA_MAX_INSTRUCTIONS and TESSERA_LUA_MAX_MEMORY. The caller frees it. */
ts_lua *ts_lua_new(void);
void ts_lua_free(ts_lua *l);

/* Runs every script of TESSERA_LUA_SCRIPTS in order. TS_EINVAL with
 * "file:line: message" for a syntax error, TS_EIO for an unreadable file. */
int ts_lua_load_configured(ts_lua *l, ts_err *err);
/* Runs one script given as text (name: its chunk name in messages). */
int ts_lua_run_string(ts_lua *l, const char *script, size_t len, const char *name, ts_err *err);

/* Whether the scripts define the global function name. */
bool ts_lua_has(ts_lua *l, const char *name);

/* The helpers SendToModality, SendToPeer and Delete act through host (NULL:
 * they raise "not available here"). The pointer must live until the next
 * call of ts_lua_set_host. */
void ts_lua_set_host(ts_lua *l, const ts_lua_host *host);

/* Calls the global function name with args (a JSON array, each element
 * turned into a Lua value: objects and arrays into tables); *result (may be
 * NULL) receives its first result as JSON (null when none), the caller
 * decrefs it. A script error, the instruction limit or the memory limit:
 * TS_EINVAL with the reason. */
int ts_lua_call(ts_lua *l, const char *name, const json_t *args, json_t **result, ts_err *err);

/* What print and PrintRecursive wrote since the last call (the caller frees
 * it; never NULL). */
char *ts_lua_take_output(ts_lua *l);

#ifdef __cplusplus
}
#endif

#endif
