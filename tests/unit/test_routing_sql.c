/* The SQL of the stable sweep (db/functions/stable.sql) and of the router's
 * dispatch (db/functions/routing.sql) against a real PostgreSQL
 * (TESSERA_TEST_DB_URL; skipped without one): four sweepers or four
 * dispatchers at once log each Stable* change and make each delivery exactly
 * once; a row a writer holds is left for the next pass; nothing is stable
 * before the age + 1 s; wildcards are DICOM's, not LIKE's. */
#include <libpq-fe.h>
#include <pthread.h>
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
#include "unit_pg.h"

static ts_db_pool *pool;
static char url[512];

static long scalar_on(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static long scalar(const char *sql)
{
    PGconn *c = unit_pg_connect(url);
    long v = scalar_on(c, sql);
    PQfinish(c);
    return v;
}

static void exec1(const char *sql)
{
    PGconn *c = unit_pg_connect(url);
    unit_pg_exec_ok(c, sql);
    PQfinish(c);
}

static int setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_routing_sql", url, sizeof(url)))
        return -1;
    return unit_pg_pool(url, 2, "read-committed", &pool) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_db_pool_free(pool);
    return 0;
}

/* A patient and a study (stable), and n unstable series under it whose last
 * instance is `ago` seconds old. */
static void make_series(const char *prefix, int n, double ago)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "WITH p AS (INSERT INTO resources (level, public_id, stable) VALUES (0, '%s-p', true)"
             " RETURNING id),"
             " s AS (INSERT INTO resources (level, public_id, parent_id, stable)"
             "  SELECT 1, '%s-s', id, true FROM p RETURNING id)"
             " INSERT INTO resources (level, public_id, parent_id, last_update)"
             " SELECT 2, '%s-' || g, s.id, now() - make_interval(secs => %f)"
             " FROM s, generate_series(1, %d) g",
             prefix, prefix, prefix, ago, n);
    exec1(sql);
}

typedef struct sweeper {
    long logged;
    int limit;
} sweeper;

static void *sweep(void *arg)
{
    sweeper *s = arg;
    PGconn *c = unit_pg_connect(url);
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT tessera_emit_stable(1, %d)", s->limit);
    for (;;) {
        long n = scalar_on(c, sql);
        s->logged += n;
        if (n == 0)
            break;
    }
    PQfinish(c);
    return NULL;
}

static void test_four_sweepers_log_each_change_once(void **state)
{
    (void)state;
    make_series("once", 2000, 10);
    sweeper s[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (sweeper){0, 50};
        assert_int_equal(pthread_create(&t[i], NULL, sweep, &s[i]), 0);
    }
    long total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += s[i].logged;
    }
    assert_int_equal(total, 2000);
    assert_int_equal(scalar("SELECT count(*) FROM changes WHERE change_type = 'StableSeries'"
                            " AND public_id LIKE 'once-%'"),
                     2000);
    assert_int_equal(scalar("SELECT count(DISTINCT public_id) FROM changes"
                            " WHERE change_type = 'StableSeries' AND public_id LIKE 'once-%'"),
                     2000);
    assert_int_equal(scalar("SELECT count(*) FROM resources WHERE public_id LIKE 'once-%'"
                            " AND NOT stable"),
                     0);
    /* more than one sweeper did some of the work (not a lock taken in turn) */
    int busy = 0;
    for (int i = 0; i < 4; i++)
        busy += s[i].logged > 0;
    assert_true(busy >= 2);
}

static void test_not_before_age_plus_one_second(void **state)
{
    (void)state;
    make_series("young", 1, 1.5); /* age 1, but last_update may be a second early */
    assert_int_equal(scalar("SELECT tessera_emit_stable(1, 1000)"), 0);
    exec1("UPDATE resources SET last_update = now() - interval '2.5 seconds'"
          " WHERE public_id = 'young-1'");
    assert_int_equal(scalar("SELECT tessera_emit_stable(1, 1000)"), 1);
    assert_int_equal(scalar("SELECT count(*) FROM changes WHERE public_id = 'young-1'"), 1);
}

static void test_a_row_held_by_a_writer_waits_for_the_next_pass(void **state)
{
    (void)state;
    make_series("held", 2, 10);
    PGconn *writer = unit_pg_connect(url);
    unit_pg_exec_ok(writer, "BEGIN");
    /* what tessera_store_instance holds on the chain while it adds an instance */
    unit_pg_exec_ok(writer, "SELECT id FROM resources WHERE public_id = 'held-1' FOR KEY SHARE");
    assert_int_equal(scalar("SELECT tessera_emit_stable(1, 1000)"), 1); /* held-2 only */
    /* the writer's instance makes it unstable again (tessera_touch_ancestors) */
    unit_pg_exec_ok(writer, "UPDATE resources SET last_update = now(), stable = false"
                            " WHERE public_id = 'held-1'");
    unit_pg_exec_ok(writer, "COMMIT");
    PQfinish(writer);
    assert_int_equal(scalar("SELECT tessera_emit_stable(1, 1000)"), 0);
    assert_int_equal(scalar("SELECT count(*) FROM changes WHERE public_id LIKE 'held-%'"), 1);
}

static void test_wildcards_are_dicom_ones(void **state)
{
    (void)state;
    assert_int_equal(scalar("SELECT ('CT' LIKE tessera_route_like('C*'))::int"), 1);
    assert_int_equal(scalar("SELECT ('CT' LIKE tessera_route_like('C?'))::int"), 1);
    assert_int_equal(scalar("SELECT ('CTX' LIKE tessera_route_like('C?'))::int"), 0);
    /* LIKE's own wildcards and escape are plain characters in a pattern */
    assert_int_equal(scalar("SELECT ('A1B' LIKE tessera_route_like('A_B'))::int"), 0);
    assert_int_equal(scalar("SELECT ('A_B' LIKE tessera_route_like('A_B'))::int"), 1);
    assert_int_equal(scalar("SELECT ('100 mg' LIKE tessera_route_like('100%'))::int"), 0);
    assert_int_equal(scalar("SELECT ('a\\b' LIKE tessera_route_like('a\\b'))::int"), 1);
}

/* Dispatches until the cursor has passed every change. */
static void *dispatch(void *arg)
{
    long *made = arg;
    PGconn *c = unit_pg_connect(url);
    long last = scalar_on(c, "SELECT max(seq) FROM changes");
    while (scalar_on(c, "SELECT last_seq FROM router_cursor") < last) {
        long n = scalar_on(c, "SELECT tessera_route_dispatch(40, '{}')");
        if (n > 0)
            *made += n;
        else if (n < 0) /* another dispatcher holds the cursor */
            usleep(1000);
    }
    PQfinish(c);
    return NULL;
}

static void test_four_dispatchers_make_each_delivery_once(void **state)
{
    (void)state;
    /* one CT series and one MR series, 300 instances each, NewInstance logged */
    exec1(
        "WITH p AS (INSERT INTO resources (level, public_id) VALUES (0, 'dp') RETURNING id),"
        " pp AS (INSERT INTO patients (resource_id) SELECT id FROM p),"
        " s AS (INSERT INTO resources (level, public_id, parent_id)"
        "  SELECT 1, 'ds', id FROM p RETURNING id),"
        " ss AS (INSERT INTO studies (resource_id, study_instance_uid) SELECT id, '1' FROM s),"
        " se AS (INSERT INTO resources (level, public_id, parent_id)"
        "  SELECT 2, 'd' || m, s.id FROM s, (VALUES ('CT'), ('MR')) v(m) RETURNING id, public_id),"
        " sse AS (INSERT INTO series (resource_id, series_instance_uid, main_tags)"
        "  SELECT id, public_id, jsonb_build_object('Modality', substr(public_id, 2)) FROM se),"
        " i AS (INSERT INTO resources (level, public_id, parent_id)"
        "  SELECT 3, se.public_id || '-' || g, se.id FROM se, generate_series(1, 300) g"
        "  RETURNING id, public_id),"
        " ii AS (INSERT INTO instances (resource_id, sop_instance_uid)"
        "  SELECT id, public_id FROM i)"
        " INSERT INTO changes (change_type, level, public_id)"
        " SELECT 'NewInstance', 3, public_id FROM i ORDER BY id");
    exec1("INSERT INTO routes (id, name, trigger, conditions, actions, definition)"
          " VALUES ('r', '', 'NewInstance', '{\"Modality\": [\"C?\"]}',"
          " '[{\"Type\": \"StoreToModality\", \"Modality\": \"x\"}]', '{}')");
    assert_true(scalar("SELECT tessera_sequence_changes(true)") >= 600);
    long made[4] = {0};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, dispatch, &made[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(made[0] + made[1] + made[2] + made[3], 300);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries"), 300);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries WHERE public_id LIKE 'dCT-%'"),
                     300);
    assert_int_equal(scalar("SELECT count(DISTINCT change_seq) FROM route_deliveries"), 300);
    assert_int_equal(scalar("SELECT last_seq FROM router_cursor"),
                     scalar("SELECT max(seq) FROM changes"));
}

/* One batch mixing instance and series changes, a change whose resource is
 * gone, two rules and Lua callbacks: the set-wise dispatch makes exactly the
 * deliveries a change-by-change one would (runs after the test above, on its
 * series dCT and dMR). */
static void test_a_mixed_batch_gets_each_matching_delivery(void **state)
{
    (void)state;
    exec1("INSERT INTO routes (id, name, trigger, conditions, actions, definition)"
          " VALUES ('st', '', 'StableSeries', '{\"Modality\": [\"CT\"]}',"
          " '[{\"Type\": \"StoreToModality\", \"Modality\": \"y\"}]', '{}')");
    exec1("INSERT INTO changes (change_type, level, public_id) VALUES"
          " ('NewInstance', 3, 'dCT-1'), ('NewInstance', 3, 'gone'),"
          " ('StableSeries', 2, 'dCT'), ('StableSeries', 2, 'dMR'),"
          " ('NewInstance', 3, 'dMR-1'), ('StableSeries', 2, 'gone-series')");
    assert_int_equal(scalar("SELECT tessera_sequence_changes(true)"), 6);
    long before = scalar("SELECT count(*) FROM route_deliveries");
    /* rule r (NewInstance, C?): dCT-1; rule st: dCT; Lua: the 4 whose resource exists */
    assert_int_equal(scalar("SELECT tessera_route_dispatch(100, '{NewInstance,StableSeries}')"), 6);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries"), before + 6);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries WHERE route_id = 'r'"
                            " AND public_id = 'dCT-1' AND actions->0->>'Modality' = 'x'"
                            " AND change_seq = (SELECT max(seq) FROM changes"
                            "  WHERE public_id = 'dCT-1')"),
                     1);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries WHERE route_id = 'st'"
                            " AND public_id = 'dCT' AND level = 2"
                            " AND change_type = 'StableSeries'"),
                     1);
    assert_int_equal(scalar("SELECT count(*) FROM route_deliveries WHERE route_id = 'lua'"
                            " AND public_id IN ('dCT-1', 'dCT', 'dMR', 'dMR-1')"
                            " AND actions->0->>'Callback' = CASE change_type"
                            " WHEN 'NewInstance' THEN 'OnStoredInstance' ELSE 'On' || change_type"
                            " END"),
                     4);
    assert_int_equal(scalar("SELECT last_seq FROM router_cursor"),
                     scalar("SELECT max(seq) FROM changes"));
    /* dispatched once: nothing more on a second pass */
    assert_int_equal(scalar("SELECT tessera_route_dispatch(100, '{NewInstance,StableSeries}')"), 0);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    ts_log_init("test_routing_sql", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_four_sweepers_log_each_change_once),
        cmocka_unit_test(test_not_before_age_plus_one_second),
        cmocka_unit_test(test_a_row_held_by_a_writer_waits_for_the_next_pass),
        cmocka_unit_test(test_wildcards_are_dicom_ones),
        cmocka_unit_test(test_four_dispatchers_make_each_delivery_once),
        cmocka_unit_test(test_a_mixed_batch_gets_each_matching_delivery),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
