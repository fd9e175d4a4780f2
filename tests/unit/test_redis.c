/* lib/io/redis.c against a redis-server of its own (unit_redis.h; skipped when
 * redis-server is missing): URLs it refuses (TS_EINVAL) and a server that does
 * not answer (TS_EIO); replies, error replies as TS_EIO with Redis's message;
 * the per-command extra time of a blocking command; a connection opened again
 * after a Redis restart; the sorted list of an array reply's strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "io/redis.h"
#include "unit_redis.h"

static void test_bad_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {"",
                                      "localhost:6379",
                                      "http://localhost:6379",
                                      "redis://",
                                      "redis://:6379",
                                      "redis://localhost:0",
                                      "redis://localhost:65536",
                                      "redis://localhost:port",
                                      "unix://"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        ts_redis *r = NULL;
        ts_err err = {0};
        assert_int_equal(ts_redis_open(bad[i], 100, &r, &err), TS_EINVAL);
        assert_int_equal(err.code, TS_EINVAL);
        assert_non_null(strstr(err.msg, "TESSERA_REDIS_URL"));
        assert_null(r);
    }
}

static void test_nobody_listening(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "unix://%s/none.sock", redis_dir);
    ts_redis *r = NULL;
    ts_err err = {0};
    assert_int_equal(ts_redis_open(path, 200, &r, &err), TS_EIO);
    assert_int_equal(err.code, TS_EIO);
    assert_null(r);
}

static void test_commands(void **state)
{
    (void)state;
    ts_redis *r = NULL;
    ts_err err;
    assert_int_equal(ts_redis_open(redis_url, 2000, &r, &err), 0);
    redisReply *rep = NULL;
    const char *set[] = {"SET", "k", "a value"};
    assert_int_equal(ts_redis_run(r, 3, set, 0, &rep, &err), 0);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    const char *get[] = {"GET", "k"};
    assert_int_equal(ts_redis_run(r, 2, get, 0, &rep, &err), 0);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "a value");
    freeReplyObject(rep);
    /* an error reply is an error, with Redis's message; the connection stays usable */
    rep = NULL;
    const char *incr[] = {"INCR", "k"};
    assert_int_equal(ts_redis_run(r, 2, incr, 0, &rep, &err), TS_EIO);
    assert_int_equal(err.code, TS_EIO);
    assert_non_null(strstr(err.msg, "not an integer"));
    assert_null(rep);
    const char *unknown[] = {"NOSUCHCOMMAND"};
    assert_int_equal(ts_redis_run(r, 1, unknown, 0, &rep, &err), TS_EIO);
    assert_int_equal(ts_redis_run(r, 2, get, 0, &rep, &err), 0);
    assert_string_equal(rep->str, "a value");
    freeReplyObject(rep);
    const char *del[] = {"DEL", "k"};
    assert_int_equal(ts_redis_run(r, 2, del, 0, &rep, &err), 0);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    assert_int_equal(rep->integer, 1);
    freeReplyObject(rep);
    ts_redis_free(r);
}

/* A blocking command longer than the timeout needs extra_ms; without it, it
 * times out, and the next command works on a new connection. */
static void test_blocking_command(void **state)
{
    (void)state;
    ts_redis *r = NULL;
    ts_err err;
    assert_int_equal(ts_redis_open(redis_url, 300, &r, &err), 0);
    redisReply *rep = NULL;
    const char *blpop[] = {"BLPOP", "empty", "1"};
    assert_int_equal(ts_redis_run(r, 3, blpop, 2000, &rep, &err), 0);
    assert_int_equal(rep->type, REDIS_REPLY_NIL);
    freeReplyObject(rep);
    /* the extra time was for that command only */
    assert_int_equal(ts_redis_run(r, 3, blpop, 0, &rep, &err), TS_EIO);
    const char *ping[] = {"PING"};
    assert_int_equal(ts_redis_run(r, 1, ping, 0, &rep, &err), 0);
    assert_string_equal(rep->str, "PONG");
    freeReplyObject(rep);
    ts_redis_free(r);
}

/* Redis restarts: the commands while it is down fail (TS_EIO), the first one
 * after works without a new ts_redis. */
static void test_restart(void **state)
{
    (void)state;
    ts_redis *r = NULL;
    ts_err err;
    assert_int_equal(ts_redis_open(redis_url, 1000, &r, &err), 0);
    redisReply *rep = NULL;
    const char *ping[] = {"PING"};
    assert_int_equal(ts_redis_run(r, 1, ping, 0, &rep, &err), 0);
    freeReplyObject(rep);
    unit_redis_kill();
    assert_int_equal(ts_redis_run(r, 1, ping, 0, &rep, &err), TS_EIO);
    assert_int_equal(ts_redis_run(r, 1, ping, 0, &rep, &err), TS_EIO);
    assert_int_equal(unit_redis_run(), 0);
    assert_int_equal(ts_redis_run(r, 1, ping, 0, &rep, &err), 0);
    assert_string_equal(rep->str, "PONG");
    freeReplyObject(rep);
    ts_redis_free(r);
}

static void test_sorted_strings(void **state)
{
    (void)state;
    ts_redis *r = NULL;
    ts_err err;
    assert_int_equal(ts_redis_open(redis_url, 1000, &r, &err), 0);
    redisReply *rep = NULL;
    /* strings in any order, and a non-string element, which is left out */
    const char *eval[] = {"EVAL", "return {'c', 'a', 7, 'b-2', 'b'}", "0"};
    assert_int_equal(ts_redis_run(r, 3, eval, 0, &rep, &err), 0);
    json_t *a = ts_redis_sorted_strings(rep);
    freeReplyObject(rep);
    char *s = json_dumps(a, JSON_COMPACT);
    assert_string_equal(s, "[\"a\",\"b\",\"b-2\",\"c\"]");
    free(s);
    json_decref(a);
    const char *empty[] = {"EVAL", "return {}", "0"};
    assert_int_equal(ts_redis_run(r, 3, empty, 0, &rep, &err), 0);
    a = ts_redis_sorted_strings(rep);
    freeReplyObject(rep);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 0);
    json_decref(a);
    ts_redis_free(r);
}

int main(void)
{
    if (!unit_redis_available())
        return 77;
    /* as every service does (lib/base/service.c): a write to a connection Redis
     * closed must fail, not kill the process */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_urls), cmocka_unit_test(test_nobody_listening),
        cmocka_unit_test(test_commands), cmocka_unit_test(test_blocking_command),
        cmocka_unit_test(test_restart),  cmocka_unit_test(test_sorted_strings),
    };
    return cmocka_run_group_tests(tests, unit_redis_start, unit_redis_stop);
}
