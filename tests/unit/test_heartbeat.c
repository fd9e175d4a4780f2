/* lib/io/heartbeat.c against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one): a started process is listed up at once
 * with its name, version and pid; its health function's verdict comes with the
 * next beat; a row not refreshed for three intervals is down; a clean stop
 * marks it stopped; rows gone for more than a day are removed by a beat. */
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "io/db.h"
#include "io/heartbeat.h"
#include "io/migrate.h"
#include "unit_pg.h"

static ts_db_pool *pool;
static char url[512];

static int setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_heartbeat", url, sizeof(url)))
        return -1;
    return unit_pg_pool(url, 2, "read-committed", &pool);
}

static int teardown(void **state)
{
    (void)state;
    ts_db_pool_free(pool);
    return 0;
}

static void sql(const char *text)
{
    PGconn *c = unit_pg_connect(url);
    unit_pg_exec_ok(c, text);
    PQfinish(c);
}

/* The listed row of this process for service `name` (a new reference). */
static json_t *row_of(const char *name)
{
    json_t *list = NULL, *v, *found = NULL;
    ts_err err;
    assert_int_equal(ts_heartbeat_list(pool, &list, &err), 0);
    size_t i;
    json_array_foreach(list, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "Service")), name) == 0 &&
            json_integer_value(json_object_get(v, "Pid")) == getpid())
            found = json_incref(v);
    }
    json_decref(list);
    assert_non_null(found);
    return found;
}

static const char *str(json_t *row, const char *key)
{
    return json_string_value(json_object_get(row, key));
}

static bool sick(void *user, char *reason, size_t size)
{
    snprintf(reason, size, "%s", (const char *)user);
    return false;
}

static void test_up_with_health_then_stopped(void **state)
{
    (void)state;
    ts_heartbeat *hb = NULL;
    ts_err err;
    assert_int_equal(ts_heartbeat_start(pool, "svc-a", "9.9.9", 1, sick, "disk full", &hb, &err),
                     0);
    json_t *r = row_of("svc-a");
    assert_string_equal(str(r, "State"), "up");
    assert_string_equal(str(r, "Version"), "9.9.9");
    assert_int_equal(json_integer_value(json_object_get(r, "IntervalSeconds")), 1);
    assert_true(json_is_true(json_object_get(r, "Healthy"))); /* no beat yet */
    json_decref(r);
    usleep(1600 * 1000);
    r = row_of("svc-a");
    assert_true(json_is_false(json_object_get(r, "Healthy")));
    assert_string_equal(str(r, "Reason"), "disk full");
    assert_true(json_number_value(json_object_get(r, "SecondsSinceLastSeen")) < 1.5);
    json_decref(r);
    ts_heartbeat_stop(hb);
    r = row_of("svc-a");
    assert_string_equal(str(r, "State"), "stopped");
    json_decref(r);
}

static void test_down_after_three_missed_beats_and_pruned_after_a_day(void **state)
{
    (void)state;
    ts_heartbeat *hb = NULL;
    ts_err err;
    assert_int_equal(ts_heartbeat_start(pool, "svc-b", "1", 5, NULL, NULL, &hb, &err), 0);
    /* 14 s without a beat: fewer than three intervals of 5 s, still up */
    sql("UPDATE service_heartbeats SET last_seen = now() - interval '14 s' WHERE service = "
        "'svc-b'");
    json_t *r = row_of("svc-b");
    assert_string_equal(str(r, "State"), "up");
    json_decref(r);
    sql("UPDATE service_heartbeats SET last_seen = now() - interval '16 s' WHERE service = "
        "'svc-b'");
    r = row_of("svc-b");
    assert_string_equal(str(r, "State"), "down");
    json_decref(r);
    ts_heartbeat_stop(hb);
    /* a process gone two days ago: the next beat of anyone removes its row */
    sql("INSERT INTO service_heartbeats (service, version, host, pid, interval_s, last_seen) "
        "VALUES ('svc-old', '1', 'h', 1, 10, now() - interval '2 days')");
    assert_int_equal(ts_heartbeat_start(pool, "svc-c", "1", 1, NULL, NULL, &hb, &err), 0);
    usleep(1600 * 1000);
    json_t *list = NULL;
    assert_int_equal(ts_heartbeat_list(pool, &list, &err), 0);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        assert_string_not_equal(str(v, "Service"), "svc-old");
    }
    json_decref(list);
    ts_heartbeat_stop(hb);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    ts_log_init("test_heartbeat", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_up_with_health_then_stopped),
        cmocka_unit_test(test_down_after_three_missed_beats_and_pruned_after_a_day),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
