/* lib/domain/delete.c against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one): ts_delete_resource removes the resource,
 * its descendants and the ancestors it leaves empty, says which ancestor
 * remains (Orthanc's RemainingAncestor) and how many resources went, hands
 * their files to the deleter, and answers 0 for an unknown resource or one of
 * another level. */
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/db.h"
#include "domain/delete.h"
#include "io/migrate.h"
#include "unit_pg.h"

static ts_db_pool *pool;
static char url[512];

static long scalar(const char *fmt, const char *arg)
{
    char sql[512];
    snprintf(sql, sizeof(sql), fmt, arg);
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    long v = PQgetisnull(r, 0, 0) ? -1 : atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

/* A query without an argument. */
static long scalar0(const char *sql)
{
    return scalar("%s", sql);
}

static bool exists(const char *public_id)
{
    return scalar("SELECT count(*) FROM resources WHERE public_id = '%s'", public_id) == 1;
}

/* <p>: patient; <p>-st: study; <p>-se1 with <p>-i1, <p>-i2; <p>-se2 with
 * <p>-i3. Each resource has its level's row; each instance a file. */
static void make_patient(const char *p)
{
    char sql[4096];
    snprintf(sql, sizeof(sql),
             "INSERT INTO resources (level, public_id) VALUES (0, '%1$s');"
             "INSERT INTO resources (level, public_id, parent_id) SELECT 1, '%1$s-st', id "
             " FROM resources WHERE public_id = '%1$s';"
             "INSERT INTO resources (level, public_id, parent_id) SELECT 2, s, id "
             " FROM resources, (VALUES ('%1$s-se1'), ('%1$s-se2')) v(s) "
             " WHERE public_id = '%1$s-st';"
             "INSERT INTO resources (level, public_id, parent_id) SELECT 3, i, id "
             " FROM resources, (VALUES ('%1$s-i1', '%1$s-se1'), ('%1$s-i2', '%1$s-se1'),"
             "  ('%1$s-i3', '%1$s-se2')) v(i, s) WHERE public_id = s;"
             "INSERT INTO patients (resource_id, patient_id) SELECT id, '%1$s' FROM resources "
             " WHERE public_id = '%1$s';"
             "INSERT INTO studies (resource_id, study_instance_uid) SELECT id, public_id "
             " FROM resources WHERE public_id = '%1$s-st';"
             "INSERT INTO series (resource_id, series_instance_uid) SELECT id, public_id "
             " FROM resources WHERE public_id LIKE '%1$s-se_';"
             "INSERT INTO instances (resource_id, sop_instance_uid) SELECT id, public_id "
             " FROM resources WHERE public_id LIKE '%1$s-i_';"
             "INSERT INTO attachments (resource_id, content_type, uuid, compressed_size, "
             " uncompressed_size) SELECT id, 1, gen_random_uuid(), 10, 10 FROM resources "
             " WHERE public_id LIKE '%1$s-i_';",
             p);
    assert_int_equal(unit_pg_exec(url, sql), 0);
}

static int setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_delete", url, sizeof(url)))
        return -1;
    if (unit_pg_pool(url, 2, "serializable", &pool))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_db_pool_free(pool);
    return 0;
}

static void test_instance_then_emptied_ancestors(void **state)
{
    (void)state;
    make_patient("a");
    make_patient("keep"); /* another patient: never touched */
    ts_deleted out;
    ts_err err;
    /* an instance whose series keeps another one */
    assert_int_equal(ts_delete_resource(pool, "a-i1", 3, &out, &err), 1);
    assert_int_equal(out.remaining_level, 2);
    assert_string_equal(out.remaining_id, "a-se1");
    assert_int_equal(out.removed, 1);
    assert_false(exists("a-i1"));
    assert_true(exists("a-i2"));
    assert_int_equal(scalar("SELECT count(*) FROM instances i JOIN resources r ON "
                            "r.id = i.resource_id WHERE r.public_id = '%s'",
                            "a-i1"),
                     0);
    /* the last instance of a series, its level looked up: the series goes too */
    assert_int_equal(ts_delete_resource(pool, "a-i2", -1, &out, &err), 1);
    assert_int_equal(out.remaining_level, 1);
    assert_string_equal(out.remaining_id, "a-st");
    assert_int_equal(out.removed, 2);
    assert_false(exists("a-se1"));
    assert_true(exists("a-se2"));
    /* the last instance of the patient: everything goes, no ancestor remains */
    assert_int_equal(ts_delete_resource(pool, "a-i3", 3, &out, &err), 1);
    assert_int_equal(out.remaining_level, -1);
    assert_int_equal(out.removed, 4);
    assert_int_equal(scalar("SELECT count(*) FROM resources WHERE public_id LIKE '%s%%'", "a"), 0);
    assert_int_equal(scalar("SELECT count(*) FROM resources WHERE public_id LIKE '%s%%'", "keep"),
                     7);
    /* gone already: unknown */
    assert_int_equal(ts_delete_resource(pool, "a-i3", 3, &out, &err), 0);
    assert_int_equal(ts_delete_resource(pool, "a-i3", -1, NULL, &err), 0);
}

/* The files of the removed resources go to the deleter (its first step,
 * tessera_purge_removed, queues them); those of the others stay. */
static void test_files_handed_to_the_deleter(void **state)
{
    (void)state;
    make_patient("b");
    assert_int_equal(unit_pg_exec(url, "DELETE FROM deletion_queue; DELETE FROM deletion_purge"),
                     0);
    ts_err err;
    assert_int_equal(ts_delete_resource(pool, "b-se1", 2, NULL, &err), 1);
    assert_int_equal(scalar0("SELECT coalesce(sum(tessera_purge_removed(100)), -1) FROM "
                             "generate_series(1, 3)"),
                     2);
    assert_int_equal(scalar0("SELECT count(*) FROM deletion_queue q JOIN attachments a "
                             "USING (uuid)"),
                     0);
    assert_int_equal(scalar0("SELECT count(*) FROM deletion_queue"), 2);
    assert_int_equal(scalar("SELECT count(*) FROM attachments a JOIN resources r ON "
                            "r.id = a.resource_id WHERE r.public_id = '%s'",
                            "b-i3"),
                     1);
}

/* A whole patient: every resource under it. */
static void test_patient(void **state)
{
    (void)state;
    make_patient("c");
    ts_deleted out;
    ts_err err;
    assert_int_equal(ts_delete_resource(pool, "c", 0, &out, &err), 1);
    assert_int_equal(out.remaining_level, -1);
    assert_int_equal(out.removed, 7);
    assert_int_equal(scalar("SELECT count(*) FROM resources WHERE public_id LIKE '%s%%'", "c"), 0);
    assert_int_equal(scalar("SELECT count(*) FROM patients WHERE patient_id = '%s'", "c"), 0);
}

/* An id of another level, or unknown: 0, and nothing removed. */
static void test_unknown_or_wrong_level(void **state)
{
    (void)state;
    make_patient("d");
    ts_deleted out;
    ts_err err;
    assert_int_equal(ts_delete_resource(pool, "d-st", 2, &out, &err), 0);
    assert_int_equal(ts_delete_resource(pool, "d-st", 0, &out, &err), 0);
    assert_int_equal(ts_delete_resource(pool, "d-i1", 2, &out, &err), 0);
    assert_int_equal(ts_delete_resource(pool, "nope", -1, &out, &err), 0);
    assert_int_equal(ts_delete_resource(pool, "nope", 1, NULL, &err), 0);
    assert_int_equal(scalar("SELECT count(*) FROM resources WHERE public_id LIKE '%s%%'", "d"), 7);
    /* the right level deletes it, and the patient it leaves empty */
    assert_int_equal(ts_delete_resource(pool, "d-st", 1, &out, &err), 1);
    assert_int_equal(out.remaining_level, -1);
    assert_int_equal(out.removed, 7);
    assert_false(exists("d"));
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instance_then_emptied_ancestors),
        cmocka_unit_test(test_files_handed_to_the_deleter),
        cmocka_unit_test(test_patient),
        cmocka_unit_test(test_unknown_or_wrong_level),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
