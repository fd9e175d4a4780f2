/* lib/db and lib/migrate against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test); skipped without one. Each run works in a database of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/db.h"
#include "base/log.h"
#include "io/migrate.h"

static char test_url[512];

static int admin_exec(const char *sql)
{
    PGconn *c = PQconnectdb(getenv("TESSERA_TEST_DB_URL"));
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return -1;
    }
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static int fresh_database(char *name, size_t size)
{
    static int n;
    snprintf(name, size, "unit_db_%d_%d", (int)getpid(), n++);
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    return admin_exec(sql);
}

static ts_db_pool *new_pool(int size, int retries)
{
    char db[64];
    assert_int_equal(fresh_database(db, sizeof(db)), 0);
    snprintf(test_url, sizeof(test_url), "%s dbname=%s", getenv("TESSERA_TEST_DB_URL"), db);
    ts_db_options opt = {.conninfo = test_url,
                         .size = size,
                         .max_retries = retries,
                         .isolation = "read-committed",
                         .connect_timeout_s = 5,
                         .retry_base_ms = 10};
    ts_db_pool *pool;
    ts_err err;
    assert_int_equal(ts_db_pool_new(&opt, &pool, &err), 0);
    return pool;
}

typedef struct failing {
    int attempts;
    int fail_times;
    const char *sqlstate;
} failing;

static int failing_txn(ts_db *db, void *arg, ts_err *err)
{
    failing *f = arg;
    f->attempts++;
    if (f->attempts <= f->fail_times) {
        char sql[200];
        snprintf(sql, sizeof(sql),
                 "DO $$BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '%s'; END$$", f->sqlstate);
        return ts_db_exec_sql(db, sql, err);
    }
    return ts_db_exec_sql(db, "SELECT 1", err);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_replays_serialization_failures_then_succeeds(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    failing f = {0, 2, "40001"};
    ts_err err;
    double t0 = now_ms();
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), 0);
    double elapsed = now_ms() - t0;
    assert_int_equal(f.attempts, 3);
    assert_int_equal(ts_db_pool_replays(pool), 2);
    assert_int_equal(ts_db_pool_busy_failures(pool), 0);
    /* attempt k waits base * k more: 10 + 20 ms at least */
    assert_true(elapsed >= 30.0);
    ts_db_pool_free(pool);
}

static void test_deadlock_is_replayed_too(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    failing f = {0, 1, "40P01"};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), 0);
    assert_int_equal(f.attempts, 2);
    ts_db_pool_free(pool);
}

static void test_gives_up_with_busy_after_max_retries(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    failing f = {0, 100, "40001"};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), TS_EDB_BUSY);
    assert_int_equal(err.code, TS_EDB_BUSY);
    assert_int_equal(f.attempts, 4); /* the first attempt and 3 replays */
    assert_int_equal(ts_db_pool_busy_failures(pool), 1);
    assert_non_null(strstr(err.msg, "after 4 attempts"));
    ts_db_pool_free(pool);
}

static void test_zero_retries_fails_at_once(void **state)
{
    ts_db_pool *pool = new_pool(1, 0);
    failing f = {0, 100, "40001"};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), TS_EDB_BUSY);
    assert_int_equal(f.attempts, 1);
    ts_db_pool_free(pool);
}

static void test_other_errors_are_not_replayed(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    failing f = {0, 100, "42601"}; /* syntax error */
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), TS_EDB);
    assert_int_equal(f.attempts, 1);
    assert_non_null(strstr(err.msg, "sqlstate=42601"));
    ts_db_pool_free(pool);
}

static int write_txn(ts_db *db, void *arg, ts_err *err)
{
    return ts_db_exec_sql(db, "CREATE TABLE should_not_exist (x int)", err);
}

static const ts_db_stmt sleep_then_value = {"unit_sleep_then_value",
                                            "SELECT pg_sleep(0.2), $1::int + 1", 1};

typedef struct overlap {
    double sent_ms;     /* ts_db_send returned after this long */
    double received_ms; /* ts_db_receive returned after this long */
    int value;
    int second_send_rc;
} overlap;

/* What ingest does: send, work while the server runs the statement, receive. */
static int overlap_txn(ts_db *db, void *arg, ts_err *err)
{
    overlap *o = arg;
    double t0 = now_ms();
    const char *params[] = {"41"};
    int rc = ts_db_send(db, &sleep_then_value, params, err);
    if (rc)
        return rc;
    o->sent_ms = now_ms() - t0;
    ts_err ignored;
    /* one statement in flight per connection */
    o->second_send_rc = ts_db_send(db, &sleep_then_value, params, &ignored);
    PGresult *res;
    rc = ts_db_receive(db, &res, err);
    if (rc)
        return rc;
    o->received_ms = now_ms() - t0;
    o->value = atoi(PQgetvalue(res, 0, 1));
    PQclear(res);
    return 0;
}

static void test_send_returns_before_the_result(void **state)
{
    (void)state;
    ts_db_pool *pool = new_pool(1, 0);
    overlap o = {0};
    ts_err err;
    /* twice: the first time prepares the statement, the second finds it prepared */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, overlap_txn, &o, &err), 0);
        assert_int_equal(o.value, 42);
        assert_true(o.sent_ms < 150.0);
        assert_true(o.received_ms >= 190.0);
        assert_int_equal(o.second_send_rc, TS_EINVAL);
    }
    ts_db_pool_free(pool);
}

static const ts_db_stmt divides_by_zero = {"unit_divides_by_zero",
                                           "SELECT CASE WHEN $1::int > 0 THEN 1 / 0 ELSE 1 END", 1};

typedef struct forgetful {
    int attempts;
} forgetful;

/* Sends and returns without receiving: the attempt must fail, and the
 * connection must still work for the next transaction. */
static int forgetful_txn(ts_db *db, void *arg, ts_err *err)
{
    forgetful *f = arg;
    f->attempts++;
    const char *params[] = {"0"};
    return ts_db_send(db, &divides_by_zero, params, err);
}

static int receive_error_txn(ts_db *db, void *arg, ts_err *err)
{
    (void)arg;
    const char *params[] = {"1"};
    int rc = ts_db_send(db, &divides_by_zero, params, err);
    if (rc)
        return rc;
    return ts_db_receive(db, NULL, err);
}

static void test_unreceived_result_fails_the_attempt(void **state)
{
    (void)state;
    ts_db_pool *pool = new_pool(1, 0);
    forgetful f = {0};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, forgetful_txn, &f, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "never received"));
    /* an error reported by ts_db_receive is the statement's, with its name */
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, receive_error_txn, NULL, &err), TS_EDB);
    assert_non_null(strstr(err.msg, "unit_divides_by_zero"));
    assert_non_null(strstr(err.msg, "division by zero"));
    overlap o = {0};
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, overlap_txn, &o, &err), 0);
    assert_int_equal(o.value, 42);
    ts_db_pool_free(pool);
}

static void test_read_transactions_are_read_only(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, write_txn, NULL, &err), TS_EDB);
    assert_non_null(strstr(err.msg, "read-only"));
    ts_db_pool_free(pool);
}

static const ts_db_stmt backend_pid = {"test_backend_pid", "SELECT pg_backend_pid()::text", 0};

/* Runs stmt and copies the first value of its answer into out (32 bytes). */
static int first_text(ts_db *db, const ts_db_stmt *stmt, char *out, ts_err *err)
{
    PGresult *res;
    int rc = ts_db_exec(db, stmt, NULL, &res, err);
    if (rc)
        return rc;
    snprintf(out, 32, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static int pid_txn(ts_db *db, void *arg, ts_err *err)
{
    return first_text(db, &backend_pid, arg, err);
}

static void test_reconnects_after_the_server_drops_the_connection(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    ts_err err;
    char pid[32], pid2[32];
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, pid_txn, pid, &err), 0);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%s)", pid);
    assert_int_equal(admin_exec(sql), 0);
    usleep(100000);
    /* the lost connection is noticed, re-opened, the statement re-prepared */
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, pid_txn, pid2, &err), 0);
    assert_string_not_equal(pid, pid2);
    ts_db_pool_free(pool);
}

static void test_unreachable_database_is_busy(void **state)
{
    ts_db_options opt = {.conninfo = "host=/nonexistent-dir port=1 dbname=x",
                         .size = 1,
                         .max_retries = 1,
                         .isolation = "read-committed",
                         .connect_timeout_s = 1,
                         .retry_base_ms = 5};
    ts_db_pool *pool;
    ts_err err;
    assert_int_equal(ts_db_pool_new(&opt, &pool, &err), 0);
    failing f = {0, 0, "00000"};
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, failing_txn, &f, &err), TS_EDB_BUSY);
    assert_non_null(strstr(err.msg, "database unreachable"));
    assert_int_equal(f.attempts, 0);
    ts_db_pool_free(pool);
}

static const ts_db_stmt which_name = {"test_which", "SELECT name FROM which", 0};

/* Which database answered: the one whose table `which` says so. */
static int which_txn(ts_db *db, void *arg, ts_err *err)
{
    return first_text(db, &which_name, arg, err);
}

static void test_reads_go_to_the_read_url(void **state)
{
    char primary[64], replica[64], sql[200];
    assert_int_equal(fresh_database(primary, sizeof(primary)), 0);
    assert_int_equal(fresh_database(replica, sizeof(replica)), 0);
    char primary_url[512], replica_url[512];
    snprintf(primary_url, sizeof(primary_url), "%s dbname=%s", getenv("TESSERA_TEST_DB_URL"),
             primary);
    snprintf(replica_url, sizeof(replica_url), "%s dbname=%s", getenv("TESSERA_TEST_DB_URL"),
             replica);
    const char *names[] = {primary, replica};
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof(sql), "%s dbname=%s", getenv("TESSERA_TEST_DB_URL"), names[i]);
        PGconn *c = PQconnectdb(sql);
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE which (name text); INSERT INTO which VALUES ('%s')",
                 i ? "replica" : "primary");
        PGresult *r = PQexec(c, sql);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        PQfinish(c);
    }
    ts_db_options opt = {.conninfo = primary_url,
                         .read_conninfo = replica_url,
                         .size = 2,
                         .max_retries = 1,
                         .isolation = "read-committed",
                         .connect_timeout_s = 5,
                         .retry_base_ms = 10};
    ts_db_pool *pool;
    ts_err err;
    assert_int_equal(ts_db_pool_new(&opt, &pool, &err), 0);
    char got[32];
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, which_txn, got, &err), 0);
    assert_string_equal(got, "replica");
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ_SINGLE, which_txn, got, &err), 0);
    assert_string_equal(got, "replica");
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, which_txn, got, &err), 0);
    assert_string_equal(got, "primary");
    assert_int_equal(ts_db_with_conn(pool, which_txn, got, &err), 0);
    assert_string_equal(got, "primary");
    ts_db_pool_free(pool);

    /* unset (or empty): everything on the primary */
    opt.read_conninfo = "";
    assert_int_equal(ts_db_pool_new(&opt, &pool, &err), 0);
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, which_txn, got, &err), 0);
    assert_string_equal(got, "primary");
    ts_db_pool_free(pool);
}

static const ts_db_stmt count_tables = {
    "test_count_tables",
    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' "
    "AND table_name IN ('resources','patients','studies','series','instances','metadata',"
    "'attachments','changes','deletion_queue','modalities')",
    0};

static int count_txn(ts_db *db, void *arg, ts_err *err)
{
    PGresult *res;
    int rc = ts_db_exec(db, &count_tables, NULL, &res, err);
    if (rc)
        return rc;
    *(int *)arg = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

typedef struct migrate_run {
    ts_db_pool *pool;
    int applied;
    int rc;
} migrate_run;

static void *migrate_thread(void *arg)
{
    migrate_run *m = arg;
    ts_err err;
    m->rc = ts_db_migrate(m->pool, &m->applied, &err);
    if (m->rc)
        fprintf(stderr, "migrate: %s\n", err.msg);
    return NULL;
}

static void test_migrations_apply_once_even_when_started_together(void **state)
{
    ts_db_pool *pool = new_pool(4, 3);
    migrate_run runs[3] = {{pool, 0, 0}, {pool, 0, 0}, {pool, 0, 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, migrate_thread, &runs[i]);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    int total = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(runs[i].rc, 0);
        total += runs[i].applied;
    }
    assert_int_equal(total, (int)ts_migrations_count);
    int tables = 0;
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, count_txn, &tables, &err), 0);
    assert_int_equal(tables, 10);
    int again = -1;
    assert_int_equal(ts_db_migrate(pool, &again, &err), 0);
    assert_int_equal(again, 0);
    ts_db_pool_free(pool);
}

static const ts_db_stmt function_state = {
    "test_function_state",
    "SELECT count(*) FILTER (WHERE md5 = 'stale')::text || '/' || count(*)::text"
    " FROM schema_functions",
    0};

static int function_state_txn(ts_db *db, void *arg, ts_err *err)
{
    PGresult *res;
    int rc = ts_db_exec(db, &function_state, NULL, &res, err);
    if (rc)
        return rc;
    char *out = arg;
    snprintf(out, 32, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static int make_stale_txn(ts_db *db, void *arg, ts_err *err)
{
    return ts_db_exec_sql(db,
                          "UPDATE schema_functions SET md5 = 'stale';"
                          " DROP FUNCTION tessera_orthanc_time(timestamptz) CASCADE",
                          err);
}

static const ts_db_stmt orthanc_time = {"test_orthanc_time",
                                        "SELECT tessera_orthanc_time('2026-01-02 03:04:05+00')", 0};

static int call_function_txn(ts_db *db, void *arg, ts_err *err)
{
    PGresult *res;
    int rc = ts_db_exec(db, &orthanc_time, NULL, &res, err);
    if (rc)
        return rc;
    char *out = arg;
    snprintf(out, 32, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static void test_changed_function_files_are_reapplied(void **state)
{
    ts_db_pool *pool = new_pool(1, 3);
    ts_err err;
    assert_int_equal(ts_db_migrate(pool, NULL, &err), 0);
    char st[32];
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, function_state_txn, st, &err), 0);
    char expected[32];
    snprintf(expected, sizeof(expected), "0/%zu", ts_functions_count);
    assert_string_equal(st, expected);
    /* as if every file had changed, and one function had been lost */
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, make_stale_txn, NULL, &err), 0);
    assert_int_equal(ts_db_migrate(pool, NULL, &err), 0);
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, function_state_txn, st, &err), 0);
    assert_string_equal(st, expected);
    char value[32];
    assert_int_equal(ts_db_transaction(pool, TS_DB_READ, call_function_txn, value, &err), 0);
    assert_int_equal(strlen(value), 15);
    ts_db_pool_free(pool);
}

int main(void)
{
    if (!getenv("TESSERA_TEST_DB_URL") || admin_exec("SELECT 1") != 0) {
        fprintf(stderr, "TESSERA_TEST_DB_URL not set or unreachable: skipped\n");
        return 77;
    }
    ts_log_init("test_db", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replays_serialization_failures_then_succeeds),
        cmocka_unit_test(test_deadlock_is_replayed_too),
        cmocka_unit_test(test_gives_up_with_busy_after_max_retries),
        cmocka_unit_test(test_zero_retries_fails_at_once),
        cmocka_unit_test(test_other_errors_are_not_replayed),
        cmocka_unit_test(test_send_returns_before_the_result),
        cmocka_unit_test(test_unreceived_result_fails_the_attempt),
        cmocka_unit_test(test_read_transactions_are_read_only),
        cmocka_unit_test(test_reconnects_after_the_server_drops_the_connection),
        cmocka_unit_test(test_unreachable_database_is_busy),
        cmocka_unit_test(test_reads_go_to_the_read_url),
        cmocka_unit_test(test_migrations_apply_once_even_when_started_together),
        cmocka_unit_test(test_changed_function_files_are_reapplied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
