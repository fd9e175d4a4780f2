/* lib/domain/dicom_access.c: the grants of a calling AE title from the
 * modalities table (several rows of one AE title, labels, unregistered AEs),
 * the cache, the refusal status, the audit's resource list. Needs PostgreSQL
 * (TESSERA_TEST_DB_URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "domain/dicom_access.h"
#include "unit_pg.h"

static char db_url[512];
static ts_db_pool *db;

static int group_setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_dicom_access", db_url, sizeof(db_url)) ||
        unit_pg_pool(db_url, 2, "read-committed", &db))
        return -1;
    return unit_pg_exec(db_url,
                        "INSERT INTO modalities (name, aet, host, port, allow_store, allow_find,"
                        " allow_move, allow_get, allowed_labels) VALUES"
                        " ('a1', 'AE_A', 'h', 1, false, true, false, false, '{A}'),"
                        " ('a2', 'AE_A', 'h', 1, false, false, true, false, '{B,C}'),"
                        " ('open', 'AE_OPEN', 'h', 1, true, true, true, true, NULL),"
                        " ('mixed1', 'AE_MIX', 'h', 1, true, true, true, true, '{A}'),"
                        " ('mixed2', 'AE_MIX', 'h', 1, true, true, true, true, NULL),"
                        " ('empty', 'AE_EMPTY', 'h', 1, true, true, true, true, '{}')");
}

static int group_teardown(void **state)
{
    (void)state;
    ts_db_pool_free(db);
    return 0;
}

static ts_dicom_access *access_with(bool always, int cache_s)
{
    ts_dicom_access_config cfg = {.cache_s = cache_s};
    for (int i = 0; i < TS_DICOM_OP_COUNT; i++)
        cfg.always_allow[i] = always;
    return ts_dicom_access_new(db, &cfg, NULL);
}

static void lookup(ts_dicom_access *a, const char *aet, ts_dicom_grant *g)
{
    ts_err err;
    assert_int_equal(ts_dicom_access_lookup(a, aet, g, &err), 0);
}

/* Two rows of one AE title: an operation is allowed when one row allows it; the
 * labels are their union. */
static void test_rows_of_one_aet_add_up(void **state)
{
    (void)state;
    ts_dicom_access *a = access_with(true, 0);
    ts_dicom_grant g;
    lookup(a, "AE_A", &g);
    assert_true(g.known);
    assert_false(g.allow[TS_DICOM_OP_STORE]);
    assert_true(g.allow[TS_DICOM_OP_FIND]);
    assert_true(g.allow[TS_DICOM_OP_MOVE]);
    assert_false(g.allow[TS_DICOM_OP_GET]);
    assert_true(g.restricted);
    assert_int_equal(g.nlabels, 3);
    assert_string_equal(g.labels[0], "A");
    assert_string_equal(g.labels[1], "B");
    assert_string_equal(g.labels[2], "C");
    ts_dicom_grant_clear(&g);
    /* one row without labels: no restriction at all */
    lookup(a, "AE_MIX", &g);
    assert_false(g.restricted);
    assert_int_equal(g.nlabels, 0);
    ts_dicom_grant_clear(&g);
    /* an empty list is a restriction to nothing */
    lookup(a, "AE_EMPTY", &g);
    assert_true(g.restricted);
    assert_int_equal(g.nlabels, 0);
    ts_dicom_grant_clear(&g);
    ts_dicom_access_free(a);
}

/* The check: a registered AE's flags decide whatever the setting; an
 * unregistered one follows the setting; a NULL access allows everything. */
static void test_check(void **state)
{
    (void)state;
    ts_dicom_assoc assoc = {.calling_aet = "AE_A", .called_aet = "TESSERA", .peer_ip = "10.0.0.1"};
    char comment[128] = "";
    ts_dicom_grant g;
    ts_dicom_access *open = access_with(true, 0), *closed = access_with(false, 0);
    assert_int_equal(
        ts_dicom_access_check(open, &assoc, TS_DICOM_OP_STORE, &g, comment, sizeof(comment)),
        TS_DIMSE_NOT_AUTHORIZED);
    assert_non_null(strstr(comment, "C-STORE not allowed for AE title AE_A"));
    ts_dicom_grant_clear(&g);
    assert_int_equal(
        ts_dicom_access_check(closed, &assoc, TS_DICOM_OP_FIND, &g, comment, sizeof(comment)),
        TS_QR_SUCCESS);
    ts_dicom_grant_clear(&g);
    snprintf(assoc.calling_aet, sizeof(assoc.calling_aet), "NOBODY");
    assert_int_equal(
        ts_dicom_access_check(open, &assoc, TS_DICOM_OP_GET, &g, comment, sizeof(comment)),
        TS_QR_SUCCESS);
    assert_false(g.known);
    assert_false(g.restricted);
    ts_dicom_grant_clear(&g);
    assert_int_equal(
        ts_dicom_access_check(closed, &assoc, TS_DICOM_OP_GET, &g, comment, sizeof(comment)),
        TS_DIMSE_NOT_AUTHORIZED);
    ts_dicom_grant_clear(&g);
    assert_int_equal(
        ts_dicom_access_check(NULL, &assoc, TS_DICOM_OP_STORE, &g, comment, sizeof(comment)),
        TS_QR_SUCCESS);
    assert_true(g.allow[TS_DICOM_OP_STORE]);
    ts_dicom_grant_clear(&g);
    ts_dicom_access_free(open);
    ts_dicom_access_free(closed);
}

/* Cached for cache_s: a change in the table shows only once the entry expired;
 * without a cache at once. More AE titles than the cache holds still answer. */
static void test_cache(void **state)
{
    (void)state;
    ts_dicom_access *cached = access_with(true, 3600), *fresh = access_with(true, 0);
    ts_dicom_grant g;
    lookup(cached, "AE_OPEN", &g);
    assert_true(g.allow[TS_DICOM_OP_STORE]);
    ts_dicom_grant_clear(&g);
    assert_int_equal(
        unit_pg_exec(db_url, "UPDATE modalities SET allow_store = false WHERE aet = 'AE_OPEN'"), 0);
    lookup(cached, "AE_OPEN", &g);
    assert_true(g.allow[TS_DICOM_OP_STORE]); /* still the cached grant */
    ts_dicom_grant_clear(&g);
    lookup(fresh, "AE_OPEN", &g);
    assert_false(g.allow[TS_DICOM_OP_STORE]);
    ts_dicom_grant_clear(&g);
    for (int i = 0; i < 100; i++) {
        char aet[17];
        snprintf(aet, sizeof(aet), "X%d", i);
        lookup(cached, aet, &g);
        assert_false(g.known);
        ts_dicom_grant_clear(&g);
    }
    lookup(cached, "AE_A", &g);
    assert_int_equal(g.nlabels, 3); /* copies of cached labels are whole */
    ts_dicom_grant_clear(&g);
    lookup(cached, "AE_A", &g);
    assert_string_equal(g.labels[2], "C");
    ts_dicom_grant_clear(&g);
    ts_dicom_access_free(cached);
    ts_dicom_access_free(fresh);
}

/* The audit's resources: the identifier's unique keys with a value, lists split,
 * cut to the buffer. */
static void test_keys(void **state)
{
    (void)state;
    ts_dicom_find_key keys[] = {{TS_TAG(0x0010, 0x0010), "DOE^J", false, 0},
                                {TS_TAG(0x0020, 0x000D), "1.2.3\\1.2.4", false, 0},
                                {TS_TAG(0x0020, 0x000E), "", false, 0},
                                {TS_TAG(0x0008, 0x0050), "ACC1", false, 0}};
    char buf[64];
    ts_dicom_access_keys(keys, 4, buf, sizeof(buf));
    assert_string_equal(buf, "1.2.3,1.2.4,ACC1");
    char small[8];
    ts_dicom_access_keys(keys, 4, small, sizeof(small));
    assert_int_equal(strlen(small), 7);
    ts_dicom_access_keys(keys, 1, buf, sizeof(buf));
    assert_string_equal(buf, "");
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_of_one_aet_add_up),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
