/* lib/domain/archives.c against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one) and a temporary storage area: the ZIP
 * (read back with libarchive) holds every file under the resources once, in
 * Orthanc 1.10.1's folder layout and order, with the stored bytes; unknown ids
 * and ids of another level are TS_ENOTFOUND; a file deleted since the listing
 * is left out, a file of the wrong size fails the archive; progress counters
 * and the job's ZIP path. */
#include <archive.h>
#include <archive_entry.h>
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

#include "domain/archives.h"
#include "io/db.h"
#include "io/migrate.h"
#include "io/store.h"
#include "unit_pg.h"
#include "unit_fs.h"

static ts_db_pool *pool;
static ts_store *store;
static char url[512];
static char base[PATH_MAX];

static int exec_sql(const char *sql)
{
    return unit_pg_exec(url, sql);
}

/* A patient (0), study (1) or series (2) with its main tags (a JSON object,
 * or NULL for no row in its level's table). */
static int add_resource(int level, const char *id, const char *parent, const char *tags)
{
    static const char *const tables[] = {"patients (resource_id, main_tags)",
                                         "studies (resource_id, study_instance_uid, main_tags)",
                                         "series (resource_id, series_instance_uid, main_tags)"};
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "INSERT INTO resources (level, public_id, parent_id) "
             "SELECT %d, '%s', (SELECT id FROM resources WHERE public_id = '%s')",
             level, id, parent ? parent : "");
    if (exec_sql(sql))
        return -1;
    if (!tags)
        return 0;
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s SELECT id, %s'%s'::jsonb FROM resources "
             "WHERE public_id = '%s'",
             tables[level], level ? "'1.2.3', " : "", tags, id);
    return exec_sql(sql);
}

/* An instance whose file holds "content of <id>"; the index gives it size_delta
 * more bytes than it has. The file's uuid goes to uuid (may be NULL). */
static int add_instance(const char *id, const char *series, int size_delta,
                        char uuid_out[TS_UUID_LEN + 1])
{
    char content[128], uuid[TS_UUID_LEN + 1];
    snprintf(content, sizeof(content), "content of %s", id);
    ts_err err;
    if (ts_store_write(store, content, strlen(content), uuid, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    if (uuid_out)
        memcpy(uuid_out, uuid, sizeof(uuid));
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "WITH r AS (INSERT INTO resources (level, public_id, parent_id) "
             "SELECT 3, '%s', id FROM resources WHERE public_id = '%s' RETURNING id) "
             "INSERT INTO attachments (resource_id, content_type, uuid, compressed_size, "
             "uncompressed_size) SELECT id, 1, '%s', %zu, %zu FROM r",
             id, series, uuid, strlen(content) + size_delta, strlen(content) + size_delta);
    return exec_sql(sql);
}

/* pat1: st1 (se1: zz-first then aa-second; se2, same folder name: i3),
 *       st2 (no tags; se3 MR: i4)
 * pat2 (no tags): st3: se4 (empty modality): i5 */
static int setup(void **state)
{
    (void)state;
    if (unit_pg_new_database("unit_archives", url, sizeof(url)))
        return -1;
    if (unit_pg_pool(url, 2, "read-committed", &pool))
        return -1;
    ts_err err;
    snprintf(base, sizeof(base), "/tmp/ts-archives-XXXXXX");
    if (!mkdtemp(base) || ts_store_open(base, &store, &err)) {
        fprintf(stderr, "storage area: %s\n", err.msg);
        return -1;
    }
    if (add_resource(0, "pat1", NULL, "{\"PatientID\": \"ID1\", \"PatientName\": \"DOE^JOHN\"}") ||
        add_resource(1, "st1", "pat1",
                     "{\"AccessionNumber\": \"ACC1\", \"StudyDescription\": \"Head/CT\"}") ||
        add_resource(2, "se1", "st1", "{\"Modality\": \"ct\", \"SeriesDescription\": \"Axial\"}") ||
        add_instance("zz-first", "se1", 0, NULL) || add_instance("aa-second", "se1", 0, NULL) ||
        add_resource(2, "se2", "st1", "{\"Modality\": \"CT\", \"SeriesDescription\": \"Axial\"}") ||
        add_instance("i3", "se2", 0, NULL) || add_resource(1, "st2", "pat1", "{}") ||
        add_resource(2, "se3", "st2", "{\"Modality\": \"MR\"}") ||
        add_instance("i4", "se3", 0, NULL) || add_resource(0, "pat2", NULL, NULL) ||
        add_resource(1, "st3", "pat2", NULL) ||
        add_resource(2, "se4", "st3", "{\"Modality\": \"\"}") || add_instance("i5", "se4", 0, NULL))
        return -1;
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
    char *data;
    size_t len;
} buf;

/* Drains the archive; returns the last ts_archive_next code (0: complete). */
static int drain(ts_archive *a, buf *out, ts_err *err)
{
    out->data = NULL;
    out->len = 0;
    for (;;) {
        const void *data;
        size_t len;
        int rc = ts_archive_next(a, &data, &len, err);
        if (rc != 1)
            return rc;
        assert_true(len > 0);
        out->data = realloc(out->data, out->len + len);
        assert_non_null(out->data);
        memcpy(out->data + out->len, data, len);
        out->len += len;
    }
}

/* The entries of a ZIP as "name=content\n" lines, in order. */
static char *zip_listing(const buf *zip)
{
    struct archive *r = archive_read_new();
    archive_read_support_format_zip(r);
    assert_int_equal(archive_read_open_memory(r, zip->data, zip->len), ARCHIVE_OK);
    size_t cap = 4096, n = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    struct archive_entry *e;
    int rc;
    while ((rc = archive_read_next_header(r, &e)) == ARCHIVE_OK) {
        char content[256];
        la_ssize_t got = archive_read_data(r, content, sizeof(content) - 1);
        assert_true(got >= 0);
        content[got] = '\0';
        n += (size_t)snprintf(out + n, cap - n, "%s=%s\n", archive_entry_pathname(e), content);
        assert_true(n < cap);
    }
    assert_int_equal(rc, ARCHIVE_EOF);
    archive_read_free(r);
    return out;
}

/* The whole archive of ids at level, as a listing; checks the counters. */
static char *archive_of(const char *const *ids, size_t n, int level, size_t instances,
                        long long size)
{
    ts_archive *a = NULL;
    ts_err err;
    assert_int_equal(ts_archive_new(pool, store, ids, n, level, "test", &a, &err), 0);
    assert_int_equal(ts_archive_instances(a), instances);
    assert_int_equal(ts_archive_uncompressed_size(a), size);
    assert_int_equal(ts_archive_files_done(a), 0);
    buf zip;
    assert_int_equal(drain(a, &zip, &err), 0);
    assert_int_equal(ts_archive_files_done(a), instances);
    assert_int_equal(ts_archive_bytes_out(a), (long long)zip.len);
    /* at the end it stays at the end */
    const void *data;
    size_t len;
    assert_int_equal(ts_archive_next(a, &data, &len, &err), 0);
    ts_archive_free(a);
    char *listing = zip_listing(&zip);
    free(zip.data);
    return listing;
}

#define C(id) (long long)strlen("content of " id)

static void test_layout_and_order(void **state)
{
    (void)state;
    const char *ids[] = {"pat2", "pat1"};
    char *l =
        archive_of(ids, 2, 0, 5, C("zz-first") + C("aa-second") + C("i3") + C("i4") + C("i5"));
    assert_string_equal(
        l, "ID1 DOE JOHN/ACC1 HeadCT/ct Axial/CT000000.dcm=content of zz-first\n"
           "ID1 DOE JOHN/ACC1 HeadCT/ct Axial/CT000001.dcm=content of aa-second\n"
           "ID1 DOE JOHN/ACC1 HeadCT/CT Axial/CT000000.dcm=content of i3\n"
           "ID1 DOE JOHN/Unknown Study/MR/MR000000.dcm=content of i4\n"
           "Unknown Patient/Unknown Study/Unknown Series/00000000.dcm=content of i5\n");
    free(l);
}

/* Two series whose folder names are the same get "-2". */
static void test_same_folder_name(void **state)
{
    (void)state;
    assert_int_equal(add_resource(0, "pat3", NULL, "{\"PatientID\": \"ID3\"}"), 0);
    assert_int_equal(add_resource(1, "st4", "pat3", "{\"AccessionNumber\": \"A\"}"), 0);
    assert_int_equal(add_resource(2, "se5", "st4", "{\"Modality\": \"US\"}"), 0);
    assert_int_equal(add_resource(2, "se6", "st4", "{\"Modality\": \"US\"}"), 0);
    assert_int_equal(add_instance("i6", "se5", 0, NULL), 0);
    assert_int_equal(add_instance("i7", "se6", 0, NULL), 0);
    const char *ids[] = {"st4"};
    char *l = archive_of(ids, 1, 1, 2, C("i6") + C("i7"));
    assert_string_equal(l, "ID3/A/US/US000000.dcm=content of i6\n"
                           "ID3/A/US-2/US000000.dcm=content of i7\n");
    free(l);
}

/* A resource given twice, or within another one given, counts once. */
static void test_overlap_counts_once(void **state)
{
    (void)state;
    const char *ids[] = {"se2", "st1", "aa-second", "st1"};
    char *l = archive_of(ids, 4, -1, 3, C("zz-first") + C("aa-second") + C("i3"));
    assert_string_equal(l, "ID1 DOE JOHN/ACC1 HeadCT/ct Axial/CT000000.dcm=content of zz-first\n"
                           "ID1 DOE JOHN/ACC1 HeadCT/ct Axial/CT000001.dcm=content of aa-second\n"
                           "ID1 DOE JOHN/ACC1 HeadCT/CT Axial/CT000000.dcm=content of i3\n");
    free(l);
}

static void test_single_instance(void **state)
{
    (void)state;
    const char *ids[] = {"i4"};
    char *l = archive_of(ids, 1, -1, 1, C("i4"));
    assert_string_equal(l, "ID1 DOE JOHN/Unknown Study/MR/MR000000.dcm=content of i4\n");
    free(l);
}

static void test_nothing_given(void **state)
{
    (void)state;
    char *l = archive_of(NULL, 0, -1, 0, 0);
    assert_string_equal(l, "");
    free(l);
}

static void expect_not_found(const char *const *ids, size_t n, int level)
{
    ts_archive *a = NULL;
    ts_err err;
    assert_int_equal(ts_archive_new(pool, store, ids, n, level, "test", &a, &err), TS_ENOTFOUND);
    assert_int_equal(err.code, TS_ENOTFOUND);
    assert_null(a);
}

static void test_unknown_or_wrong_level(void **state)
{
    (void)state;
    const char *unknown[] = {"nope"};
    expect_not_found(unknown, 1, -1);
    const char *one_unknown[] = {"pat1", "nope"};
    expect_not_found(one_unknown, 2, 0);
    const char *study[] = {"st1"};
    expect_not_found(study, 1, 0);
    expect_not_found(study, 1, 2);
    const char *instance[] = {"i4"};
    expect_not_found(instance, 1, 2);
    const char *quoted[] = {"p\"1\\"};
    expect_not_found(quoted, 1, -1);
}

static void test_deleted_file_left_out(void **state)
{
    (void)state;
    char gone[TS_UUID_LEN + 1];
    assert_int_equal(add_resource(0, "pat5", NULL, "{\"PatientID\": \"ID5\"}"), 0);
    assert_int_equal(add_resource(1, "st5", "pat5", "{}"), 0);
    assert_int_equal(add_resource(2, "se7", "st5", "{\"Modality\": \"OT\"}"), 0);
    assert_int_equal(add_instance("i8", "se7", 0, gone), 0);
    assert_int_equal(add_instance("i9", "se7", 0, NULL), 0);
    const char *ids[] = {"pat5"};
    ts_archive *a;
    ts_err err;
    assert_int_equal(ts_archive_new(pool, store, ids, 1, 0, "test", &a, &err), 0);
    assert_int_equal(ts_archive_instances(a), 2);
    assert_int_equal(ts_store_remove(store, gone, &err), 0);
    buf zip;
    assert_int_equal(drain(a, &zip, &err), 0);
    ts_archive_free(a);
    char *l = zip_listing(&zip);
    assert_string_equal(l, "ID5/Unknown Study/OT/OT000001.dcm=content of i9\n");
    free(l);
    free(zip.data);
}

/* A file whose size is not the index's: no archive (a negative code, again on
 * the next call), never a complete one. */
static void test_wrong_size_fails(void **state)
{
    (void)state;
    assert_int_equal(add_resource(0, "pat6", NULL, "{\"PatientID\": \"ID6\"}"), 0);
    assert_int_equal(add_resource(1, "st6", "pat6", "{}"), 0);
    assert_int_equal(add_resource(2, "se8", "st6", "{\"Modality\": \"OT\"}"), 0);
    assert_int_equal(add_instance("i10", "se8", 0, NULL), 0);
    assert_int_equal(add_instance("i11", "se8", 1, NULL), 0);
    const char *ids[] = {"pat6"};
    ts_archive *a;
    ts_err err;
    assert_int_equal(ts_archive_new(pool, store, ids, 1, 0, "test", &a, &err), 0);
    buf zip;
    int rc = drain(a, &zip, &err);
    assert_true(rc < 0);
    assert_int_equal(err.code, rc);
    assert_true(err.msg[0] != '\0');
    const void *data;
    size_t len;
    assert_true(ts_archive_next(a, &data, &len, &err) < 0);
    ts_archive_free(a);
    free(zip.data);
}

/* Freed before its end (a client that went away): nothing leaks (ASan). */
static void test_free_unfinished(void **state)
{
    (void)state;
    const char *ids[] = {"pat1"};
    ts_archive *a;
    ts_err err;
    assert_int_equal(ts_archive_new(pool, store, ids, 1, 0, "test", &a, &err), 0);
    const void *data;
    size_t len;
    assert_int_equal(ts_archive_next(a, &data, &len, &err), 1);
    ts_archive_free(a);
}

static void test_job_path(void **state)
{
    (void)state;
    char path[PATH_MAX], want[PATH_MAX + 64], dir[PATH_MAX + 8];
    ts_err err;
    const char *job = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    assert_int_equal(ts_archive_job_path(store, job, NULL, path, sizeof(path), &err), 0);
    snprintf(want, sizeof(want), "%s/jobs/%s.zip", ts_store_root(store), job);
    assert_string_equal(path, want);
    snprintf(dir, sizeof(dir), "%s/jobs", ts_store_root(store));
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(ts_archive_job_path(store, job, "w1", path, sizeof(path), &err), 0);
    snprintf(want, sizeof(want), "%s/jobs/%s.zip.w1.part", ts_store_root(store), job);
    assert_string_equal(path, want);
    /* a job id is a UUID: nothing that could name another file */
    static const char *const bad[] = {"", "../x", "ABC", "a/b", "0f1e2d3c 4b5a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(ts_archive_job_path(store, bad[i], NULL, path, sizeof(path), &err),
                         TS_EINVAL);
    /* a buffer too small is an error, not a cut path */
    char small[16];
    assert_int_equal(ts_archive_job_path(store, job, NULL, small, sizeof(small), &err), TS_EINVAL);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_order),      cmocka_unit_test(test_same_folder_name),
        cmocka_unit_test(test_overlap_counts_once),   cmocka_unit_test(test_single_instance),
        cmocka_unit_test(test_nothing_given),         cmocka_unit_test(test_unknown_or_wrong_level),
        cmocka_unit_test(test_deleted_file_left_out), cmocka_unit_test(test_wrong_size_fails),
        cmocka_unit_test(test_free_unfinished),       cmocka_unit_test(test_job_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
