/* Orthanc's Lua scripts (see lua_scripts.h). The helpers follow Orthanc
 * 1.10.1's LuaContext/LuaScripting: RestApi* answer the body as a string (nil
 * on failure, RestApiDelete true), ParseJson/DumpJson convert with jansson,
 * PrintRecursive is Orthanc's Toolbox.lua function. */
#include "domain/lua_scripts.h"

#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "dicom/dicom_modify.h"

#define HOOK_EVERY 10000     /* instructions between two looks at the count */
#define MAX_BODY (64u << 20) /* largest HTTP answer a script receives */
#define MAX_DEPTH 64         /* nesting of tables turned into JSON */

struct ts_lua {
    lua_State *L;
    size_t used, max_bytes;
    long long steps, max_steps;
    bool over_steps, over_memory;
    const ts_lua_host *host;
    /* the last ModifyInstance of the callback (Orthanc's chain: the next
     * SendTo* or Delete of "" works on its output) */
    json_t *modify;
    char modify_resource[80];
    char *out; /* print's output since the last take */
    size_t out_len;
    char rest_url[512];
    char http_user[256], http_password[256];
    long http_timeout_s;
};

/* ---- limits --------------------------------------------------------------- */

/* Fails an allocation that would take the state past max_bytes; Lua turns it
 * into a memory error of the running call, and frees what it no longer holds. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    ts_lua *l = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is the type of the object */
    if (nsize == 0) {
        free(ptr);
        l->used -= old;
        return NULL;
    }
    if (nsize > old && l->used + (nsize - old) > l->max_bytes) {
        l->over_memory = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    l->used = l->used - old + nsize;
    return p;
}

/* Once over the limit, raised again at every instruction: a script that
 * catches the error with pcall and loops on is stopped at once outside it. */
static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    ts_lua *l = *(ts_lua **)lua_getextraspace(L);
    l->steps += HOOK_EVERY;
    if (l->steps > l->max_steps) {
        if (!l->over_steps)
            lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
        l->over_steps = true;
        luaL_error(L, "the script ran more than %I instructions (TESSERA_LUA_MAX_INSTRUCTIONS)",
                   (lua_Integer)l->max_steps);
    }
}

static ts_lua *of(lua_State *L)
{
    return *(ts_lua **)lua_getextraspace(L);
}

/* The reason of a failed pcall, the limits named. */
static int failed(ts_lua *l, int status, ts_err *err)
{
    const char *msg = lua_tostring(l->L, -1);
    if (status == LUA_ERRMEM || l->over_memory)
        ts_err_set(err, TS_EINVAL,
                   "the script exceeded TESSERA_LUA_MAX_MEMORY (%zu MiB): not enough memory",
                   l->max_bytes >> 20);
    else
        ts_err_set(err, TS_EINVAL, "%s", msg ? msg : "error object is not a string");
    lua_settop(l->L, 0);
    return err->code;
}

static void limits_reset(ts_lua *l)
{
    if (l->over_steps)
        lua_sethook(l->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    l->steps = 0;
    l->over_steps = l->over_memory = false;
}

/* ---- JSON <-> Lua ------------------------------------------------------- */

static void push_json(lua_State *L, const json_t *v)
{
    luaL_checkstack(L, 4, "JSON too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            push_json(L, e);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        lua_createtable(L, (int)json_array_size(v), 0);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            push_json(L, e);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, json_is_true(v));
        break;
    case JSON_NULL:
        lua_pushnil(L);
        break;
    }
}

/* The Lua value at idx as JSON (a new reference). A table whose keys are 1..n
 * is an array, any other an object (keys as strings), as Orthanc's GetJson;
 * functions, userdata and tables nested beyond MAX_DEPTH are null. keep_strings: numbers as strings
 * (Orthanc's DumpJson(value, true)). */
static json_t *to_json(lua_State *L, int idx, bool keep_strings, int depth)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (keep_strings)
            return json_string(lua_tostring(L, idx));
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *j = json_stringn(s, len);
        return j ? j : json_string(""); /* not UTF-8: JSON cannot hold it */
    }
    case LUA_TTABLE: {
        if (depth > MAX_DEPTH || !lua_checkstack(L, 4))
            return json_null(); /* a cycle: cut (this may run outside protected mode) */
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            keys++;
            lua_pop(L, 1);
        }
        if (n > 0 && keys == n) {
            json_t *a = json_array();
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                json_array_append_new(a, to_json(L, -1, keep_strings, depth + 1));
                lua_pop(L, 1);
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pushvalue(L, -2); /* tostring on a copy: lua_next needs the key as it is */
            const char *k = lua_tostring(L, -1);
            if (k)
                json_object_set_new(o, k, to_json(L, -2, keep_strings, depth + 1));
            lua_pop(L, 2);
        }
        return o;
    }
    default:
        return json_null();
    }
}

static int l_parse_json(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    json_error_t jerr;
    json_t *v = json_loadb(s, len, JSON_DECODE_ANY, &jerr);
    if (!v)
        return luaL_error(L, "ParseJson: %s (line %d)", jerr.text, jerr.line);
    push_json(L, v);
    json_decref(v);
    return 1;
}

static int l_dump_json(lua_State *L)
{
    luaL_checkany(L, 1);
    json_t *v = to_json(L, 1, lua_toboolean(L, 2), 0);
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS) /* as Orthanc */;
    json_decref(v);
    lua_pushstring(L, s ? s : "null");
    free(s);
    return 1;
}

/* print: the log (as Orthanc's, at its warning level) and the output that
 * /tools/execute-script answers. */
static int l_print(lua_State *L)
{
    ts_lua *l = of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        /* Orthanc 1.10.1 joins print's arguments so, empty ones left out */
        if (luaL_bufflen(&b) > 0)
            luaL_addstring(&b, ", ");
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    char q[1024];
    ts_warn("lua", "print=%s", ts_log_quote(q, sizeof(q), line));
    if (l->out_len + len + 1 <= MAX_BODY) {
        l->out = xrealloc(l->out, l->out_len + len + 2);
        memcpy(l->out + l->out_len, line, len);
        l->out_len += len;
        l->out[l->out_len++] = '\n';
        l->out[l->out_len] = '\0';
    }
    return 0;
}

/* ---- HTTP (libcurl) --------------------------------------------------------- */

typedef struct body {
    char *data;
    size_t len;
    const char *in;
    size_t in_len, in_off;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    body *b = arg;
    size_t k = size * n;
    if (b->len + k > MAX_BODY)
        return 0;
    b->data = xrealloc(b->data, b->len + k + 1);
    memcpy(b->data + b->len, p, k);
    b->len += k;
    b->data[b->len] = '\0';
    return k;
}

/* One request; pushes the body (a string, or true for DELETE) or nil on
 * failure (logged), as Orthanc's helpers. headers: a table at index hidx or 0. */
static int http_call(lua_State *L, const char *method, const char *url, const char *data,
                     size_t data_len, int hidx, bool auth)
{
    ts_lua *l = of(L);
    CURL *c = curl_easy_init();
    if (!c)
        return luaL_error(L, "curl_easy_init failed");
    body b = {0};
    struct curl_slist *hdrs = NULL;
    if (hidx) {
        lua_pushnil(L);
        while (lua_next(L, hidx)) {
            const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
            if (k && v) {
                lua_pushfstring(L, "%s: %s", k, v);
                hdrs = curl_slist_append(hdrs, lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, l->http_timeout_s);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (data) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)data_len);
    }
    if (hdrs)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (auth && l->http_user[0]) {
        curl_easy_setopt(c, CURLOPT_USERNAME, l->http_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, l->http_password);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    char q[600];
    if (rc != CURLE_OK || status < 200 || status >= 300) {
        ts_warn("lua http call failed", "method=%s url=%s status=%ld error=%s", method,
                ts_log_quote(q, sizeof(q), url), status,
                rc != CURLE_OK ? curl_easy_strerror(rc) : "status");
        free(b.data);
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    free(b.data);
    return 1;
}

/* RestApiGet(uri, [builtin], [headers]), RestApiPost/Put(uri, body, [builtin],
 * [headers]), RestApiDelete(uri, [builtin], [headers]): Tessera's own REST
 * (builtin means nothing here: there are no plugins). */
static int rest_api(lua_State *L, const char *method, bool has_body)
{
    ts_lua *l = of(L);
    const char *uri = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *data = has_body ? luaL_optlstring(L, 2, "", &len) : NULL;
    int hidx = has_body ? 4 : 3;
    if (!lua_istable(L, hidx))
        hidx = 0;
    lua_pushfstring(L, "%s%s%s", l->rest_url, uri[0] == '/' ? "" : "/", uri);
    const char *url = lua_tostring(L, -1);
    int n = http_call(L, method, url, data, len, hidx, false);
    if (strcmp(method, "DELETE") == 0 && !lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    return n;
}

static int l_rest_get(lua_State *L)
{
    return rest_api(L, "GET", false);
}
static int l_rest_post(lua_State *L)
{
    return rest_api(L, "POST", true);
}
static int l_rest_put(lua_State *L)
{
    return rest_api(L, "PUT", true);
}
static int l_rest_delete(lua_State *L)
{
    return rest_api(L, "DELETE", false);
}

/* HttpGet(url, [headers]), HttpPost/Put(url, body, [headers]), HttpDelete(url,
 * [headers]): any server, with SetHttpCredentials and SetHttpTimeout. */
static int http_api(lua_State *L, const char *method, bool has_body)
{
    const char *url = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *data = has_body ? luaL_optlstring(L, 2, "", &len) : NULL;
    int hidx = has_body ? 3 : 2;
    return http_call(L, method, url, data, len, lua_istable(L, hidx) ? hidx : 0, true);
}

static int l_http_get(lua_State *L)
{
    return http_api(L, "GET", false);
}
static int l_http_post(lua_State *L)
{
    return http_api(L, "POST", true);
}
static int l_http_put(lua_State *L)
{
    return http_api(L, "PUT", true);
}
static int l_http_delete(lua_State *L)
{
    int n = http_api(L, "DELETE", false);
    if (!lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    return n;
}

/* GenerateDicomUid(): as GET /tools/generate-uid */
static int l_generate_uid(lua_State *L)
{
    char uid[80];
    ts_dicom_generate_uid(uid, sizeof(uid));
    lua_pushstring(L, uid);
    return 1;
}

static int l_set_credentials(lua_State *L)
{
    ts_lua *l = of(L);
    snprintf(l->http_user, sizeof(l->http_user), "%s", luaL_checkstring(L, 1));
    snprintf(l->http_password, sizeof(l->http_password), "%s", luaL_checkstring(L, 2));
    return 0;
}

static int l_set_timeout(lua_State *L)
{
    of(L)->http_timeout_s = (long)luaL_checkinteger(L, 1);
    return 0;
}

/* ---- what the host does -------------------------------------------------- */

static const ts_lua_host *host_of(lua_State *L, const char *what)
{
    const ts_lua_host *h = of(L)->host;
    if (!h)
        luaL_error(L, "%s is not available here (only in the router's callbacks)", what);
    return h;
}

/* SendToModality(resource, modality, [localAet]) / SendToPeer(resource,
 * peer): the resource id, so that Delete(SendToModality(...)) deletes it once
 * sent, as in Orthanc's samples. */
static int send_to(lua_State *L, bool peer)
{
    const char *what = peer ? "SendToPeer" : "SendToModality";
    const ts_lua_host *h = host_of(L, what);
    ts_lua *l = of(L);
    const char *resource = luaL_checkstring(L, 1), *target = luaL_checkstring(L, 2);
    const char *local = peer ? NULL : luaL_optstring(L, 3, NULL);
    const json_t *modify = NULL;
    if (!*resource) { /* ModifyInstance's output, as Orthanc's "" */
        if (!l->modify)
            return luaL_error(L, "%s: no resource (and no ModifyInstance before)", what);
        resource = l->modify_resource;
        modify = l->modify;
    }
    ts_err err;
    if (h->send(h->ctx, peer, resource, target, local, modify, &err))
        return luaL_error(L, "%s: %s", what, err.msg);
    lua_pushvalue(L, 1);
    return 1;
}

/* ModifyInstance(instanceId, replacements, removals, removePrivateTags), as
 * Orthanc's Toolbox.lua: returns "", which the next SendToModality/
 * SendToPeer/Delete takes as the modified instance. The modification is
 * checked now (a bad one is the script's error) and applied by the store
 * job to what it sends; the modified instance is never stored, so
 * Delete("") has nothing to do. */
static int l_modify_instance(lua_State *L)
{
    ts_lua *l = of(L);
    host_of(L, "ModifyInstance");
    const char *resource = luaL_checkstring(L, 1);
    if (strlen(resource) >= sizeof(l->modify_resource))
        return luaL_error(L, "ModifyInstance: %s is not an instance id", resource);
    json_t *body = json_object();
    if (lua_istable(L, 2))
        json_object_set_new(body, "Replace", to_json(L, 2, true, 0));
    if (lua_istable(L, 3)) {
        json_t *remove = to_json(L, 3, true, 0);
        if (json_is_object(remove) && json_object_size(remove) == 0) { /* {} */
            json_decref(remove);
            remove = json_array();
        }
        json_object_set_new(body, "Remove", remove);
    }
    json_t *replace = json_object_get(body, "Replace");
    if (json_is_array(replace) && json_array_size(replace) == 0) /* {} */
        json_object_set_new(body, "Replace", json_object());
    json_object_set_new(body, "RemovePrivateTags", json_boolean(lua_toboolean(L, 4)));
    ts_modify *m = NULL;
    ts_oe oe;
    ts_err err;
    ts_err_clear(&err);
    int rc = ts_modify_parse(body, false, &m, &oe, &err);
    if (!rc) {
        ts_modify_set_level(m, ts_modify_instance_level(m));
        rc = ts_modify_check(m, &oe, &err);
    }
    ts_modify_free(m);
    if (rc) {
        /* Orthanc gives no details for some (an unknown tag name): the body then */
        char *text = err.msg[0] ? NULL : json_dumps(body, JSON_COMPACT);
        char why[600];
        snprintf(why, sizeof(why), "%s: %s", ts_oe_description(oe), text ? text : err.msg);
        free(text);
        json_decref(body);
        return luaL_error(L, "ModifyInstance: %s", why);
    }
    json_decref(l->modify);
    l->modify = body;
    snprintf(l->modify_resource, sizeof(l->modify_resource), "%s", resource);
    lua_pushstring(L, "");
    return 1;
}

static int l_send_to_modality(lua_State *L)
{
    return send_to(L, false);
}
static int l_send_to_peer(lua_State *L)
{
    return send_to(L, true);
}

static int l_delete(lua_State *L)
{
    const ts_lua_host *h = host_of(L, "Delete");
    const char *resource = luaL_checkstring(L, 1);
    if (!*resource) {
        if (!of(L)->modify)
            return luaL_error(L, "Delete: no resource (and no ModifyInstance before)");
        return 0; /* ModifyInstance's output was sent, never stored */
    }
    ts_err err;
    if (h->delete_resource(h->ctx, resource, &err))
        return luaL_error(L, "Delete: %s", err.msg);
    return 0;
}

/* Orthanc 1.10.1's Toolbox.lua, as is: print's output is the same */
static const char prelude[] =
    "function PrintRecursive(s, l, i) -- recursive Print (structure, limit, indent)\n"
    "   l = (l) or 100; i = i or \"\";\t-- default item limit, indent string\n"
    "   if (l<1) then print \"ERROR: Item limit reached.\"; return l-1 end;\n"
    "   local ts = type(s);\n"
    "   if (ts ~= \"table\") then print (i,ts,s); return l-1 end\n"
    "   print (i,ts);           -- print \"table\"\n"
    "   for k,v in pairs(s) do  -- print \"[KEY] VALUE\"\n"
    "      l = PrintRecursive(v, l, i..\"\\t[\"..tostring(k)..\"]\");\n"
    "      if (l < 0) then break end\n"
    "   end\n"
    "   return l\n"
    "end\n";

/* ---- the state --------------------------------------------------------------- */

ts_lua *ts_lua_new(void)
{
    ts_lua *l = xcalloc(1, sizeof(*l));
    l->max_bytes = (size_t)ts_cfg_int(TESSERA_LUA_MAX_MEMORY) << 20;
    l->max_steps = ts_cfg_int(TESSERA_LUA_MAX_INSTRUCTIONS);
    l->http_timeout_s = 60;
    l->out = xstrdup("");
    const char *url = ts_cfg_str(TESSERA_LUA_REST_URL);
    if (url[0])
        snprintf(l->rest_url, sizeof(l->rest_url), "%s", url);
    else
        snprintf(l->rest_url, sizeof(l->rest_url), "http://127.0.0.1:%ld",
                 ts_cfg_int(TESSERA_HTTP_PORT));
    size_t n = strlen(l->rest_url);
    if (n && l->rest_url[n - 1] == '/')
        l->rest_url[n - 1] = '\0';
    l->L = lua_newstate(lua_alloc, l);
    if (!l->L)
        abort();
    *(ts_lua **)lua_getextraspace(l->L) = l;
    lua_sethook(l->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    luaL_openlibs(l->L);
    static const luaL_Reg fns[] = {
        {"print", l_print},
        {"ParseJson", l_parse_json},
        {"DumpJson", l_dump_json},
        {"RestApiGet", l_rest_get},
        {"RestApiPost", l_rest_post},
        {"RestApiPut", l_rest_put},
        {"RestApiDelete", l_rest_delete},
        {"HttpGet", l_http_get},
        {"HttpPost", l_http_post},
        {"HttpPut", l_http_put},
        {"HttpDelete", l_http_delete},
        {"SetHttpCredentials", l_set_credentials},
        {"SetHttpTimeout", l_set_timeout},
        {"GenerateDicomUid", l_generate_uid},
        {"SendToModality", l_send_to_modality},
        {"SendToPeer", l_send_to_peer},
        {"Delete", l_delete},
        {"ModifyInstance", l_modify_instance},
        {NULL, NULL},
    };
    lua_pushglobaltable(l->L);
    luaL_setfuncs(l->L, fns, 0);
    lua_pop(l->L, 1);
    ts_err err;
    if (ts_lua_run_string(l, prelude, sizeof(prelude) - 1, "=prelude", &err))
        abort(); /* our own text */
    return l;
}

void ts_lua_free(ts_lua *l)
{
    if (!l)
        return;
    lua_close(l->L);
    json_decref(l->modify);
    free(l->out);
    free(l);
}

static int run_loaded(ts_lua *l, ts_err *err)
{
    limits_reset(l);
    int status = lua_pcall(l->L, 0, 0, 0);
    if (status != LUA_OK)
        return failed(l, status, err);
    return 0;
}

int ts_lua_run_string(ts_lua *l, const char *script, size_t len, const char *name, ts_err *err)
{
    limits_reset(l);
    int status = luaL_loadbufferx(l->L, script, len, name, "t");
    if (status != LUA_OK)
        return failed(l, status, err);
    return run_loaded(l, err);
}

/* The file's text; its chunk is named after its base name, since Lua cuts
 * names longer than LUA_IDSIZE (60) and a long path would lose the file. */
static int load_file(ts_lua *l, const char *path, ts_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ts_err_set(err, TS_EIO, "open %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_BODY) {
                fclose(f);
                free(text);
                return ts_err_set(err, TS_ETOOBIG, "%s is larger than %u bytes", path, MAX_BODY);
            }
            cap = cap ? cap * 2 : 65536;
            text = xrealloc(text, cap);
        }
        size_t k = fread(text + len, 1, cap - len, f);
        len += k;
        if (k == 0)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        return ts_err_set(err, TS_EIO, "read %s: %s", path, strerror(errno));
    }
    const char *base = strrchr(path, '/');
    char name[64];
    snprintf(name, sizeof(name), "=%s", base ? base + 1 : path);
    int rc = ts_lua_run_string(l, text, len, name, err);
    free(text);
    return rc;
}

int ts_lua_load_configured(ts_lua *l, ts_err *err)
{
    char *list = xstrdup(ts_cfg_str(TESSERA_LUA_SCRIPTS));
    int rc = 0;
    char *save = NULL;
    for (char *p = strtok_r(list, ",", &save); p && !rc; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ')
            p++;
        if (!*p)
            continue;
        rc = load_file(l, p, err);
        if (rc)
            ts_err_prefix(err, "TESSERA_LUA_SCRIPTS %s", p);
        else
            ts_info("lua script loaded", "path=%s", p);
    }
    free(list);
    return rc;
}

bool ts_lua_has(ts_lua *l, const char *name)
{
    bool has = lua_getglobal(l->L, name) == LUA_TFUNCTION;
    lua_pop(l->L, 1);
    return has;
}

void ts_lua_set_host(ts_lua *l, const ts_lua_host *host)
{
    l->host = host;
    json_decref(l->modify); /* one callback's chain does not reach the next */
    l->modify = NULL;
}

/* lua_pcall'd: pushes the arguments (jansson cannot fail us halfway once in
 * Lua: a memory error here is the call's) and calls. */
static int call_protected(lua_State *L)
{
    const char *name = lua_touserdata(L, 1);
    const json_t *args = lua_touserdata(L, 2);
    lua_settop(L, 0);
    if (lua_getglobal(L, name) != LUA_TFUNCTION)
        return luaL_error(L, "the scripts define no function %s", name);
    size_t i;
    json_t *e;
    json_array_foreach(args, i, e) push_json(L, e);
    lua_call(L, (int)json_array_size(args), 1);
    return 1;
}

int ts_lua_call(ts_lua *l, const char *name, const json_t *args, json_t **result, ts_err *err)
{
    if (result)
        *result = NULL;
    limits_reset(l);
    lua_settop(l->L, 0);
    lua_pushcfunction(l->L, call_protected);
    lua_pushlightuserdata(l->L, (void *)name);
    lua_pushlightuserdata(l->L, (void *)args);
    int status = lua_pcall(l->L, 2, 1, 0);
    if (status != LUA_OK)
        return failed(l, status, err);
    if (result)
        *result = to_json(l->L, -1, false, 0);
    lua_settop(l->L, 0);
    return 0;
}

char *ts_lua_take_output(ts_lua *l)
{
    char *out = l->out;
    l->out = xstrdup("");
    l->out_len = 0;
    return out;
}
