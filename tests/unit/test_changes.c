/* lib/domain/changes.c against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one): changes inserted unnumbered get Seq in
 * insertion order without holes; a writer's pass returns at once while another
 * process numbers, a reader's pass waits for it and leaves nothing unnumbered;
 * the sequencer thread numbers after a nudge. */
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "domain/changes.h"
#include "io/db.h"
#include "base/log.h"
#include "io/migrate.h"
#include "unit_pg.h"

static ts_db_pool *pool;
static char url[512];

static long scalar(const char *sql)
{
    PGconn *c = unit_pg_connect(url);
    PGresult *r = PQexec(c, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

static void insert_changes(int n)
{
    PGconn *c = unit_pg_connect(url);
    char sql[160];
    snprintf(sql, sizeof(sql),
             "INSERT INTO changes (change_type, level, public_id) "
             "SELECT 'NewInstance', 3, 'i' || g FROM generate_series(1, %d) g",
             n);
    unit_pg_exec_ok(c, sql);
    PQfinish(c);
}

static int setup(void **state)
{
    if (unit_pg_new_database("unit_changes", url, sizeof(url)))
        return -1;
    if (unit_pg_pool(url, 4, "read-committed", &pool))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    ts_db_pool_free(pool);
    return 0;
}

static void test_numbered_in_order_without_holes(void **state)
{
    long before = scalar("SELECT last_seq FROM change_counter");
    insert_changes(25);
    long n = -1;
    ts_err err;
    assert_int_equal(ts_changes_sequence(pool, false, &n, &err), 0);
    assert_int_equal(n, 25);
    assert_int_equal(scalar("SELECT count(*) FROM changes WHERE seq IS NULL"), 0);
    /* Seq follows insertion order, starting right after the last one given */
    assert_int_equal(scalar("SELECT min(seq) FROM changes WHERE seq > 0") > before, 1);
    assert_int_equal(scalar("SELECT count(*) FROM (SELECT seq - lag(seq) OVER (ORDER BY id) AS d "
                            "FROM changes) x WHERE d IS NOT NULL AND d <> 1"),
                     0);
    assert_int_equal(scalar("SELECT last_seq FROM change_counter"), before + 25);
    /* nothing left: a second pass numbers nothing */
    assert_int_equal(ts_changes_sequence(pool, false, &n, &err), 0);
    assert_int_equal(n, 0);
}

typedef struct {
    long numbered;
    int rc;
    struct timespec done;
} reader;

static void *read_pass(void *arg)
{
    reader *r = arg;
    ts_err err;
    r->rc = ts_changes_sequence(pool, true, &r->numbered, &err);
    clock_gettime(CLOCK_MONOTONIC, &r->done);
    return NULL;
}

/* While another process holds the sequencer's lock (its pass has not ended),
 * a writer's pass returns at once with nothing numbered, and a reader's pass
 * waits: when it returns, everything committed before it is numbered. */
static void test_reader_waits_for_another_pass(void **state)
{
    insert_changes(3);
    PGconn *other = unit_pg_connect(url);
    unit_pg_exec_ok(other, "BEGIN");
    unit_pg_exec_ok(other, "SELECT pg_advisory_xact_lock(x'7365717565636572'::bigint)");

    long n = -1;
    ts_err err;
    assert_int_equal(ts_changes_sequence(pool, false, &n, &err), 0);
    assert_int_equal(n, 0); /* the writer's pass gave way */

    reader r = {.numbered = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_pass, &r), 0);
    usleep(300 * 1000);
    struct timespec released;
    clock_gettime(CLOCK_MONOTONIC, &released);
    unit_pg_exec_ok(other, "COMMIT");
    pthread_join(t, NULL);
    PQfinish(other);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.numbered, 3);
    /* it returned only after the other pass ended */
    double waited = (double)(r.done.tv_sec - released.tv_sec) +
                    (double)(r.done.tv_nsec - released.tv_nsec) / 1e9;
    assert_true(waited >= 0);
    assert_int_equal(scalar("SELECT count(*) FROM changes WHERE seq IS NULL"), 0);
}

static void test_sequencer_thread_numbers_after_a_nudge(void **state)
{
    ts_change_sequencer *s;
    ts_err err;
    /* a long interval: only the nudge can make it run within the test */
    assert_int_equal(ts_change_sequencer_start(pool, 60000, &s, &err), 0);
    insert_changes(4);
    ts_change_sequencer_nudge(s);
    long left = 4;
    for (int i = 0; i < 200 && left; i++) {
        usleep(10 * 1000);
        left = scalar("SELECT count(*) FROM changes WHERE seq IS NULL");
    }
    assert_int_equal(left, 0);
    ts_change_sequencer_stop(s);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    ts_log_init("test_changes", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbered_in_order_without_holes),
        cmocka_unit_test(test_reader_waits_for_another_pass),
        cmocka_unit_test(test_sequencer_thread_numbers_after_a_nudge),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
