/* lib/domain/store_index.c against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one) and a temporary storage area: a writer's
 * ts_store_hold succeeds while its intent is there and fails with TS_ENOTFOUND
 * once the file was reclaimed; ts_store_reclaim keeps (and settles) a file a
 * row refers to, removes one no row refers to, leaves alone a file whose writer
 * is in its transaction and an intent younger than min_age_s. */
#include <dirent.h>
#include <libpq-fe.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/db.h"
#include "io/migrate.h"
#include "io/store.h"
#include "domain/store_index.h"
#include "unit_pg.h"
#include "unit_fs.h"

static ts_db_pool *pool;
static ts_store *store;
static char url[512];
static char base[PATH_MAX];

/* A file put in place the way a writer does: with an intent. */
static void place_file(char uuid[TS_UUID_LEN + 1])
{
    char tmp[PATH_MAX];
    ts_err err;
    assert_int_equal(ts_store_temp_path(store, tmp, sizeof(tmp), &err), 0);
    FILE *fp = fopen(tmp, "wb");
    assert_non_null(fp);
    fputs("some bytes", fp);
    fclose(fp);
    assert_int_equal(ts_store_commit_file(store, tmp, uuid, &err), 0);
    assert_true(ts_store_has_intent(store, uuid));
}

static bool file_exists(const char *uuid)
{
    char path[PATH_MAX];
    ts_err err;
    assert_int_equal(ts_store_path(store, uuid, path, sizeof(path), &err), 0);
    return access(path, F_OK) == 0;
}

/* A row that refers to the file, committed. */
static void index_file(const char *uuid)
{
    PGconn *c = unit_pg_connect(url);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "WITH r AS (INSERT INTO resources (level, public_id) VALUES (0, 'p-%s') RETURNING id) "
             "INSERT INTO attachments (resource_id, content_type, uuid, compressed_size, "
             "uncompressed_size) SELECT id, 1, '%s', 10, 10 FROM r",
             uuid, uuid);
    unit_pg_exec_ok(c, sql);
    PQfinish(c);
}

static int setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_store_index", url, sizeof(url)))
        return -1;
    if (unit_pg_pool(url, 4, "read-committed", &pool))
        return -1;
    ts_err err;
    snprintf(base, sizeof(base), "/tmp/ts-store-index-XXXXXX");
    if (!mkdtemp(base) || ts_store_open(base, &store, &err)) {
        fprintf(stderr, "storage area: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_store_free(store);
    rm_rf(base);
    ts_db_pool_free(pool);
    return 0;
}

typedef struct {
    const char *uuid;
    int hold_rc;
    ts_err hold_err;
    int reclaim_rc, settled, removed;
    bool reclaim_inside;
} writer;

static int writer_txn(ts_db *db, void *arg, ts_err *err)
{
    writer *w = arg;
    w->hold_rc = ts_store_hold(db, store, w->uuid, &w->hold_err);
    if (w->reclaim_inside) {
        /* a deleter's pass while this writer holds the file */
        ts_err rerr;
        w->settled = w->removed = -1;
        w->reclaim_rc = ts_store_reclaim(pool, store, 0, &w->settled, &w->removed, &rerr);
    }
    (void)err;
    return 0;
}

static void test_hold_with_intent(void **state)
{
    (void)state;
    char uuid[TS_UUID_LEN + 1];
    place_file(uuid);
    writer w = {.uuid = uuid};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, writer_txn, &w, &err), 0);
    assert_int_equal(w.hold_rc, 0);
    assert_int_equal(ts_store_check_intent(store, uuid, &err), 0);
    assert_int_equal(ts_store_settle(store, uuid), 0);
}

/* While the writer is in its transaction (after ts_store_hold), a deleter's
 * pass neither removes its file nor drops its intent. */
static void test_reclaim_leaves_a_held_file(void **state)
{
    (void)state;
    char uuid[TS_UUID_LEN + 1];
    place_file(uuid);
    writer w = {.uuid = uuid, .reclaim_inside = true};
    ts_err err;
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, writer_txn, &w, &err), 0);
    assert_int_equal(w.hold_rc, 0);
    assert_int_equal(w.reclaim_rc, 0);
    assert_int_equal(w.settled, 0);
    assert_int_equal(w.removed, 0);
    assert_true(file_exists(uuid));
    assert_true(ts_store_has_intent(store, uuid));
    /* the writer gives up: its file is removed with its intent */
    assert_int_equal(ts_store_remove(store, uuid, &err), 0);
}

/* An abandoned file (intent, no row) is removed; its slow writer then finds
 * its intent gone and fails, naming the file. */
static void test_reclaim_removes_an_abandoned_file(void **state)
{
    (void)state;
    char uuid[TS_UUID_LEN + 1];
    place_file(uuid);
    int settled = -1, removed = -1;
    ts_err err;
    assert_int_equal(ts_store_reclaim(pool, store, 0, &settled, &removed, &err), 0);
    assert_int_equal(settled, 0);
    assert_int_equal(removed, 1);
    assert_false(file_exists(uuid));
    assert_false(ts_store_has_intent(store, uuid));

    writer w = {.uuid = uuid};
    assert_int_equal(ts_db_transaction(pool, TS_DB_WRITE, writer_txn, &w, &err), 0);
    assert_int_equal(w.hold_rc, TS_ENOTFOUND);
    assert_int_equal(w.hold_err.code, TS_ENOTFOUND);
    assert_non_null(strstr(w.hold_err.msg, uuid));
    assert_int_equal(ts_store_check_intent(store, uuid, &err), TS_ENOTFOUND);
    assert_non_null(strstr(err.msg, uuid));
}

/* A file a committed row refers to is kept; only its intent goes. */
static void test_reclaim_settles_an_indexed_file(void **state)
{
    (void)state;
    char uuid[TS_UUID_LEN + 1];
    place_file(uuid);
    index_file(uuid);
    int settled = -1, removed = -1;
    ts_err err;
    assert_int_equal(ts_store_reclaim(pool, store, 0, &settled, &removed, &err), 0);
    assert_int_equal(settled, 1);
    assert_int_equal(removed, 0);
    assert_true(file_exists(uuid));
    assert_false(ts_store_has_intent(store, uuid));
    /* nothing left to do: a second pass counts nothing */
    assert_int_equal(ts_store_reclaim(pool, store, 0, &settled, &removed, &err), 0);
    assert_int_equal(settled, 0);
    assert_int_equal(removed, 0);
    assert_true(file_exists(uuid));
}

/* Intents younger than min_age_s are not looked at: a writer may still be
 * on its way to ts_store_hold. */
static void test_reclaim_spares_young_intents(void **state)
{
    (void)state;
    char uuid[TS_UUID_LEN + 1];
    place_file(uuid);
    int settled = -1, removed = -1;
    ts_err err;
    assert_int_equal(ts_store_reclaim(pool, store, 3600, &settled, &removed, &err), 0);
    assert_int_equal(settled, 0);
    assert_int_equal(removed, 0);
    assert_true(file_exists(uuid));
    assert_true(ts_store_has_intent(store, uuid));
    /* the counts are optional */
    assert_int_equal(ts_store_reclaim(pool, store, 0, NULL, NULL, &err), 0);
    assert_false(file_exists(uuid));
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hold_with_intent),
        cmocka_unit_test(test_reclaim_leaves_a_held_file),
        cmocka_unit_test(test_reclaim_removes_an_abandoned_file),
        cmocka_unit_test(test_reclaim_settles_an_indexed_file),
        cmocka_unit_test(test_reclaim_spares_young_intents),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
