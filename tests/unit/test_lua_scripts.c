/* Orthanc's Lua scripts (lib/domain/lua_scripts.h) without a server: JSON
 * both ways, the limits (a loop, a loop that catches the limit, an allocation
 * bomb) and that the state serves the next call after each, a syntax error
 * with its line, the helpers that need a host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/config.h"
#include "domain/lua_scripts.h"

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static ts_lua *state_with(const char *script)
{
    char *envp[] = {"TESSERA_LUA_MAX_INSTRUCTIONS=2000000", "TESSERA_LUA_MAX_MEMORY=8", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    ts_lua *l = ts_lua_new();
    if (ts_lua_run_string(l, script, strlen(script), "=test", &err))
        fail_msg("%s", err.msg);
    return l;
}

static void test_json_both_ways(void **state)
{
    (void)state;
    ts_lua *l = state_with("function Echo(id, tags)\n"
                           "  local t = ParseJson(DumpJson(tags))\n"
                           "  return {id = id, modality = t['Modality'], n = #t['List'],"
                           " list = t['List'], none = t['Missing'] == nil}\n"
                           "end\n");
    assert_true(ts_lua_has(l, "Echo"));
    assert_false(ts_lua_has(l, "OnStoredInstance"));
    json_t *args = json_pack("[s, {s:s, s:[i, s, b]}]", "abc", "Modality", "CT", "List", 7, "x", 1);
    json_t *out = NULL;
    ts_err err = {0};
    assert_int_equal(ts_lua_call(l, "Echo", args, &out, &err), 0);
    json_t *want = json_pack("{s:s, s:s, s:i, s:[i, s, b], s:b}", "id", "abc", "modality", "CT",
                             "n", 3, "list", 7, "x", 1, "none", 1);
    if (!json_equal(out, want)) {
        char *s = json_dumps(out, 0);
        fail_msg("got %s", s);
    }
    json_decref(want);
    json_decref(out);
    json_decref(args);
    ts_lua_free(l);
}

static void test_limits_fail_the_call_and_the_next_works(void **state)
{
    (void)state;
    ts_lua *l = state_with(
        "function Loop() while true do end end\n"
        "function Sly() while true do pcall(function() while true do end end) end end\n"
        "function Bomb() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end end\n"
        "function Fine(n) local s = 0 for i = 1, n do s = s + i end return s end\n");
    json_t *none = json_array(), *args = json_pack("[i]", 1000);
    const char *const bad[] = {"Loop", "Sly", "Bomb"};
    for (size_t i = 0; i < 3; i++) {
        ts_err err = {0};
        json_t *out = NULL;
        assert_int_equal(ts_lua_call(l, bad[i], none, NULL, &err), TS_EINVAL);
        assert_contains(err.msg, i < 2 ? "instructions (TESSERA_LUA_MAX_INSTRUCTIONS)"
                                       : "TESSERA_LUA_MAX_MEMORY (8 MiB)");
        assert_int_equal(ts_lua_call(l, "Fine", args, &out, &err), 0);
        assert_int_equal(json_integer_value(out), 500500);
        json_decref(out);
    }
    json_decref(none);
    json_decref(args);
    ts_lua_free(l);
}

static void test_syntax_error_has_its_line(void **state)
{
    (void)state;
    char path[] = "/tmp/ts-lua-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "x = 1\n\nif then\nend\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char var[64];
    snprintf(var, sizeof(var), "TESSERA_LUA_SCRIPTS=%s", path);
    char *envp[] = {var, NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    ts_lua *l = ts_lua_new();
    assert_int_equal(ts_lua_load_configured(l, &err), TS_EINVAL);
    unlink(path);
    assert_contains(err.msg, path);
    assert_contains(err.msg, strrchr(path, '/') + 1);
    assert_contains(err.msg, ":3:");
    ts_lua_free(l);
}

static void test_host_helpers_and_print(void **state)
{
    (void)state;
    ts_lua *l = state_with("function Route(id) Delete(SendToModality(id, 'pacs')) end\n"
                           "function Talk() PrintRecursive({a = 1}) print('x', 2) end\n"
                           "function Uid() return GenerateDicomUid() end\n");
    json_t *args = json_pack("[s]", "0123-abcd");
    ts_err err = {0};
    /* no host: the helpers say where they work */
    assert_int_equal(ts_lua_call(l, "Route", args, NULL, &err), TS_EINVAL);
    assert_contains(err.msg, "SendToModality is not available here");
    json_t *none = json_array();
    assert_int_equal(ts_lua_call(l, "Talk", none, NULL, &err), 0);
    json_t *uid = NULL;
    assert_int_equal(ts_lua_call(l, "Uid", none, &uid, &err), 0);
    assert_memory_equal(json_string_value(uid), "2.25.", 5);
    json_decref(uid);
    char *out = ts_lua_take_output(l);
    assert_string_equal(out, "table\n\t[a], number, 1\nx, 2\n");
    free(out);
    json_decref(none);
    json_decref(args);
    ts_lua_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_both_ways),
        cmocka_unit_test(test_limits_fail_the_call_and_the_next_works),
        cmocka_unit_test(test_syntax_error_has_its_line),
        cmocka_unit_test(test_host_helpers_and_print),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
