/* The storage area as a user of it sees it: files on disk under aa/bb/<uuid>,
 * their contents, error codes and messages. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <time.h>
#include "io/store.h"
#include "unit_fs.h"

typedef struct {
    char root[PATH_MAX]; /* <tmpdir>/root, not yet created */
    char base[PATH_MAX]; /* the mkdtemp directory */
    ts_store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    xsnprintf(f->base, sizeof(f->base), "/tmp/ts-store-XXXXXX");
    if (!mkdtemp(f->base))
        goto out_free_fixture;
    /* a root two levels below an existing directory: open must create both */
    xsnprintf(f->root, sizeof(f->root), "%s/storage/area", f->base);
    ts_err err = {0};
    if (ts_store_open(f->root, &f->st, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        goto out_remove_base;
    }
    *state = f;
    return 0;

out_remove_base:
    rm_rf(f->base);
out_free_fixture:
    free(f);
    return -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ts_store_free(f->st);
    rm_rf(f->base);
    free(f);
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    return buf;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return (size_t)-1;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void assert_uuid_shape(const char *uuid)
{
    assert_int_equal(strlen(uuid), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(uuid[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", uuid[i]));
    }
}

static void test_open_creates_root_and_tmp(void **state)
{
    fixture *f = *state;
    char tmp[PATH_MAX];
    xsnprintf(tmp, sizeof(tmp), "%s/tmp", f->root);
    assert_true(is_dir(f->root));
    assert_true(is_dir(tmp));
    assert_string_equal(ts_store_root(f->st), f->root);
    /* the writability probe leaves nothing behind */
    assert_int_equal(count_entries(tmp), 0);

    /* opening an existing area again works, and a trailing slash is the same root */
    char slashed[PATH_MAX + 2];
    xsnprintf(slashed, sizeof(slashed), "%s//", f->root);
    ts_store *again = NULL;
    ts_err err = {0};
    assert_int_equal(ts_store_open(slashed, &again, &err), 0);
    assert_string_equal(ts_store_root(again), f->root);
    ts_store_free(again);
}

static void test_write_read_layout(void **state)
{
    fixture *f = *state;
    static const char content[] = "DICM pretend instance\0with a NUL inside";
    char uuid[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, content, sizeof(content), uuid, &err), 0);
    assert_uuid_shape(uuid);

    /* the file is at <root>/aa/bb/<uuid>, with exactly the bytes written */
    char expect[PATH_MAX];
    xsnprintf(expect, sizeof(expect), "%s/%.2s/%.2s/%s", f->root, uuid, uuid + 2, uuid);
    char path[PATH_MAX];
    assert_int_equal(ts_store_path(f->st, uuid, path, sizeof(path), &err), 0);
    assert_string_equal(path, expect);
    size_t len = 0;
    char *disk = slurp(expect, &len);
    assert_non_null(disk);
    assert_int_equal(len, sizeof(content));
    assert_memory_equal(disk, content, sizeof(content));
    free(disk);

    void *data = NULL;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, sizeof(content));
    assert_memory_equal(data, content, sizeof(content));
    free(data);

    /* no temporary file is left behind, only the intent until the writer settles it */
    char tmp[PATH_MAX];
    xsnprintf(tmp, sizeof(tmp), "%s/tmp", f->root);
    assert_int_equal(count_entries(tmp), 1);
    assert_true(ts_store_has_intent(f->st, uuid));
    assert_int_equal(ts_store_settle(f->st, uuid), 0);
    assert_int_equal(count_entries(tmp), 0);
}

static int collect_intent(void *user, const char *uuid)
{
    char(*seen)[TS_UUID_LEN + 1] = user;
    memcpy(*seen, uuid, TS_UUID_LEN + 1);
    return 0;
}

/* An intent names a file in place that may have no row yet: listed once old
 * enough, gone when settled or when the file is removed. */
static void test_intents(void **state)
{
    fixture *f = *state;
    char a[TS_UUID_LEN + 1], b[TS_UUID_LEN + 1], seen[TS_UUID_LEN + 1] = "";
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "a", 1, a, &err), 0);
    assert_int_equal(ts_store_write(f->st, "b", 1, b, &err), 0);
    assert_int_equal(ts_store_intents(f->st, 3600, collect_intent, &seen, &err), 0);
    assert_string_equal(seen, ""); /* too young */
    assert_int_equal(ts_store_settle(f->st, a), 0);
    assert_int_equal(ts_store_settle(f->st, a), 0); /* twice is fine */
    assert_int_equal(ts_store_intents(f->st, 0, collect_intent, &seen, &err), 0);
    assert_string_equal(seen, b);
    assert_int_equal(ts_store_remove(f->st, b, &err), 0);
    assert_false(ts_store_has_intent(f->st, b));
    void *data;
    size_t len;
    assert_int_equal(ts_store_read(f->st, a, &data, &len, &err), 0); /* settled, still there */
    free(data);
}

static void test_write_empty_file(void **state)
{
    fixture *f = *state;
    char uuid[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "", 0, uuid, &err), 0);
    void *data = NULL;
    size_t len = 99;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_non_null(data);
    free(data);
}

static void test_two_writes_two_files(void **state)
{
    fixture *f = *state;
    char a[TS_UUID_LEN + 1];
    char b[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "same", 4, a, &err), 0);
    assert_int_equal(ts_store_write(f->st, "same", 4, b, &err), 0);
    assert_string_not_equal(a, b);
}

static int count_file(void *user, const char *uuid, const char *path, const struct stat *sb)
{
    (void)uuid;
    (void)path;
    (void)sb;
    (*(int *)user)++;
    return 0;
}

static void test_prepared_tree_keeps_emptied_directories(void **state)
{
    fixture *f = *state;
    char uuid[TS_UUID_LEN + 1];
    char bb[PATH_MAX];
    char marker[PATH_MAX];
    ts_err err = {0};
    assert_false(ts_store_tree_prepared(f->st));
    /* the marker appears after this store was opened, as when an ingest
     * prepares the tree while a deleter already runs */
    xsnprintf(marker, sizeof(marker), "%s/.tessera-tree-prepared", f->root);
    FILE *fp = fopen(marker, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(ts_store_write(f->st, "x", 1, uuid, &err), 0);
    xsnprintf(bb, sizeof(bb), "%s/%.2s/%.2s", f->root, uuid, uuid + 2);
    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);
    assert_true(is_dir(bb));
    assert_true(ts_store_tree_prepared(f->st));
    /* the marker is not a stored file */
    int files = 0;
    assert_int_equal(ts_store_walk(f->st, count_file, &files, &err), 0);
    assert_int_equal(files, 0);
}

static void test_remove_twice_and_prune(void **state)
{
    fixture *f = *state;
    char uuid[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "x", 1, uuid, &err), 0);
    char path[PATH_MAX];
    char aa[PATH_MAX];
    char bb[PATH_MAX];
    assert_int_equal(ts_store_path(f->st, uuid, path, sizeof(path), &err), 0);
    xsnprintf(aa, sizeof(aa), "%s/%.2s", f->root, uuid);
    xsnprintf(bb, sizeof(bb), "%s/%.2s/%.2s", f->root, uuid, uuid + 2);
    assert_true(exists(path));

    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);
    assert_false(exists(path));
    /* the now-empty aa/bb and aa are gone too; root and tmp stay */
    assert_false(exists(bb));
    assert_false(exists(aa));
    assert_true(is_dir(f->root));

    /* a file already gone counts as removed */
    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);

    void *data = (void *)1;
    size_t len = 1;
    ts_err_clear(&err);
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), TS_ENOTFOUND);
    assert_null(data);
    assert_int_equal(err.code, TS_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
}

static void test_remove_keeps_siblings(void **state)
{
    fixture *f = *state;
    /* The store picks names at random, so to get two files in one aa/bb the
     * test places a sibling next to a stored file by hand. */
    char uuid[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "x", 1, uuid, &err), 0);
    char sibling[TS_UUID_LEN + 1];
    xsnprintf(sibling, sizeof(sibling), "%.4s0000-0000-4000-8000-000000000000", uuid);
    char spath[PATH_MAX];
    assert_int_equal(ts_store_path(f->st, sibling, spath, sizeof(spath), &err), 0);
    FILE *fp = fopen(spath, "w");
    assert_non_null(fp);
    fclose(fp);

    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);
    assert_true(exists(spath)); /* aa/bb not empty: it stays, with the sibling */
    assert_int_equal(ts_store_remove(f->st, sibling, &err), 0);
    char aa[PATH_MAX];
    xsnprintf(aa, sizeof(aa), "%s/%.2s", f->root, uuid);
    assert_false(exists(aa));
}

static void test_temp_file_commit(void **state)
{
    fixture *f = *state;
    char temp[PATH_MAX];
    ts_err err = {0};
    assert_int_equal(ts_store_temp_path(f->st, temp, sizeof(temp), &err), 0);
    char prefix[PATH_MAX];
    xsnprintf(prefix, sizeof(prefix), "%s/tmp/", f->root);
    assert_memory_equal(temp, prefix, strlen(prefix));
    assert_string_equal(temp + strlen(temp) - 5, ".part");

    char temp2[PATH_MAX];
    assert_int_equal(ts_store_temp_path(f->st, temp2, sizeof(temp2), &err), 0);
    assert_string_not_equal(temp, temp2);

    /* a received file, written in pieces as a network upload would be */
    FILE *fp = fopen(temp, "wb");
    assert_non_null(fp);
    fputs("first part,", fp);
    fputs("second part", fp);
    fclose(fp);

    char uuid[TS_UUID_LEN + 1];
    assert_int_equal(ts_store_commit_file(f->st, temp, uuid, &err), 0);
    assert_uuid_shape(uuid);
    assert_false(exists(temp));
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, strlen("first part,second part"));
    assert_memory_equal(data, "first part,second part", len);
    free(data);
}

static void test_place_then_sync(void **state)
{
    fixture *f = *state;
    char temp[PATH_MAX];
    ts_err err = {0};
    assert_int_equal(ts_store_temp_path(f->st, temp, sizeof(temp), &err), 0);
    FILE *fp = fopen(temp, "w");
    assert_non_null(fp);
    fputs("placed", fp);
    fclose(fp);

    char uuid[TS_UUID_LEN + 1];
    assert_int_equal(ts_store_place_file(f->st, temp, uuid, &err), 0);
    assert_uuid_shape(uuid);
    assert_false(exists(temp));
    /* in place and readable at once, with its intent until settled */
    assert_true(ts_store_has_intent(f->st, uuid));
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, strlen("placed"));
    free(data);
    assert_int_equal(ts_store_sync_file(f->st, uuid, &err), 0);
    assert_int_equal(ts_store_settle(f->st, uuid), 0);
    assert_false(ts_store_has_intent(f->st, uuid));

    /* a sync of a file that is not there is an error that names it */
    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);
    assert_int_equal(ts_store_sync_file(f->st, uuid, &err), TS_EIO);
    assert_non_null(strstr(err.msg, uuid));
}

/* A file in memory: written once under its intent's name, linked into place;
 * no temporary file. */
static void test_place_data(void **state)
{
    fixture *f = *state;
    ts_err err = {0};
    char uuid[TS_UUID_LEN + 1];
    assert_int_equal(ts_store_place_data(f->st, "in memory", 9, uuid, NULL, &err), 0);
    assert_uuid_shape(uuid);
    assert_true(ts_store_has_intent(f->st, uuid));
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(data, "in memory", 9);
    free(data);
    assert_int_equal(ts_store_sync_data(f->st, uuid, &err), 0);
    assert_int_equal(ts_store_sync_dir(f->st, uuid, &err), 0);
    assert_int_equal(ts_store_settle(f->st, uuid), 0);
    char tmp[PATH_MAX];
    xsnprintf(tmp, sizeof(tmp), "%s/tmp", f->root);
    assert_int_equal(count_entries(tmp), 0); /* no .part, no intent left */

    /* a directory that is not there: its fsync fails and names it */
    const char *lost = "ffff0000-0000-4000-8000-000000000000";
    char dir[PATH_MAX];
    xsnprintf(dir, sizeof(dir), "%s/ff/ff", f->root);
    if (!exists(dir)) {
        assert_int_equal(ts_store_sync_dir(f->st, lost, &err), TS_EIO);
        assert_non_null(strstr(err.msg, dir));
    }
    assert_int_equal(ts_store_sync_dir(f->st, "../../etc/passwd", &err), TS_EINVAL);
}

/* Kept open: the same file, in place, fsynced through its descriptor, which
 * ts_store_sync_fd closes; uuids are version 4 and differ. */
static void test_place_data_keep_fd(void **state)
{
    fixture *f = *state;
    ts_err err = {0};
    char uuid[TS_UUID_LEN + 1], other[TS_UUID_LEN + 1];
    int fd = -2;
    assert_int_equal(ts_store_place_data(f->st, "kept open", 9, uuid, &fd, &err), 0);
    assert_true(fd >= 0);
    assert_uuid_shape(uuid);
    assert_int_equal(uuid[14], '4');
    assert_non_null(strchr("89ab", uuid[19]));
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(data, "kept open", 9);
    free(data);
    assert_int_equal(ts_store_sync_fd(fd, uuid, &err), 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed */
    assert_int_equal(ts_store_place_data(f->st, "x", 1, other, NULL, &err), 0);
    assert_string_not_equal(uuid, other);
    /* a failed fsync (here: not a file descriptor) is an error that names the file */
    assert_int_equal(ts_store_sync_fd(-1, uuid, &err), TS_EIO);
    assert_non_null(strstr(err.msg, uuid));
    ts_store_settle(f->st, uuid);
    ts_store_settle(f->st, other);
}

/* Files placed one after the other share their aa/bb directory for a run of
 * 32 (one directory fsync covers them), then the next run has its own. */
static void test_placed_files_share_a_directory_per_run(void **state)
{
    fixture *f = *state;
    ts_err err = {0};
    char uuids[64][TS_UUID_LEN + 1];
    for (int i = 0; i < 64; i++)
        assert_int_equal(ts_store_place_data(f->st, "x", 1, uuids[i], NULL, &err), 0);
    for (int i = 1; i < 32; i++) {
        assert_memory_equal(uuids[i], uuids[0], 4);
        assert_memory_equal(uuids[32 + i], uuids[32], 4);
        assert_string_not_equal(uuids[i], uuids[0]); /* the rest stays random */
    }
    for (int i = 0; i < 64; i++) {
        assert_int_equal(ts_store_sync_data(f->st, uuids[i], &err), 0);
        assert_int_equal(ts_store_sync_dir(f->st, uuids[i], &err), 0);
        ts_store_settle(f->st, uuids[i]);
    }
}

typedef struct {
    ts_store *st;
    int failures;
} syncer;

static void *sync_many(void *arg)
{
    syncer *s = arg;
    for (int i = 0; i < 40; i++) {
        char uuid[TS_UUID_LEN + 1];
        ts_err err = {0};
        if (ts_store_place_data(s->st, "y", 1, uuid, NULL, &err) ||
            ts_store_sync_data(s->st, uuid, &err) || ts_store_sync_dir(s->st, uuid, &err))
            s->failures++;
        ts_store_settle(s->st, uuid);
    }
    return NULL;
}

/* Directory fsyncs shared between threads: every thread's waits end, each
 * with success. */
static void test_concurrent_dir_syncs(void **state)
{
    fixture *f = *state;
    syncer s[8];
    pthread_t th[8];
    for (int t = 0; t < 8; t++) {
        s[t] = (syncer){f->st, 0};
        assert_int_equal(pthread_create(&th[t], NULL, sync_many, &s[t]), 0);
    }
    for (int t = 0; t < 8; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(s[t].failures, 0);
    }
}

static void test_commit_missing_temp(void **state)
{
    fixture *f = *state;
    char temp[PATH_MAX];
    ts_err err = {0};
    assert_int_equal(ts_store_temp_path(f->st, temp, sizeof(temp), &err), 0);
    char uuid[TS_UUID_LEN + 1] = "unchanged";
    assert_int_equal(ts_store_commit_file(f->st, temp, uuid, &err), TS_EIO);
    assert_int_equal(err.code, TS_EIO);
    assert_non_null(strstr(err.msg, temp));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    assert_string_equal(uuid, "");
}

static void test_unwritable_root(void **state)
{
    (void)state;
    /* Tests run as root, where permission bits do not stop anything; a path
     * below a regular file fails for everyone (ENOTDIR). */
    ts_store *st = (ts_store *)1;
    ts_err err = {0};
    assert_int_equal(ts_store_open("/etc/passwd/x", &st, &err), TS_EIO);
    assert_null(st);
    assert_int_equal(err.code, TS_EIO);
    assert_non_null(strstr(err.msg, "/etc/passwd/x"));
    assert_non_null(strstr(err.msg, "Not a directory"));
    assert_memory_equal(err.msg, "store ", 6);

    assert_int_equal(ts_store_open("", &st, &err), TS_EINVAL);
    assert_null(st);
}

static void test_root_is_a_file(void **state)
{
    fixture *f = *state;
    char file[PATH_MAX];
    xsnprintf(file, sizeof(file), "%s/plain", f->base);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    ts_store *st = NULL;
    ts_err err = {0};
    assert_int_equal(ts_store_open(file, &st, &err), TS_EIO);
    assert_null(st);
    assert_non_null(strstr(err.msg, file));
}

static void test_bad_uuid_rejected(void **state)
{
    fixture *f = *state;
    static const char *const bad[] = {
        "",
        "abc",
        "../../../../../../../etc/passwd-00000000",
        "../../00-0000-0000-0000-000000000000",
        "abcdef01-2345-6789-abcd-ef0123456789x", /* 37 chars */
        "abcdef01-2345-6789-abcd-ef012345678",   /* 35 chars */
        "abcdef01x2345-6789-abcd-ef0123456789",  /* dash missing */
        "ABCDEF01-2345-6789-ABCD-EF0123456789",  /* never created by the store */
        "abcdef01-2345-6789-abcd-ef012345678g",  /* not hex */
        "abcdef01-2345-6789-abcd/ef0123456789",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[PATH_MAX] = "untouched";
        ts_err err = {0};
        assert_int_equal(ts_store_path(f->st, bad[i], path, sizeof(path), &err), TS_EINVAL);
        assert_non_null(strstr(err.msg, "malformed uuid"));
        void *data = NULL;
        size_t len = 0;
        assert_int_equal(ts_store_read(f->st, bad[i], &data, &len, &err), TS_EINVAL);
        assert_int_equal(ts_store_remove(f->st, bad[i], &err), TS_EINVAL);
    }
    ts_err err = {0};
    char path[PATH_MAX];
    assert_int_equal(ts_store_path(f->st, NULL, path, sizeof(path), &err), TS_EINVAL);
    /* the good shape passes even when no such file exists */
    assert_int_equal(
        ts_store_path(f->st, "abcdef01-2345-6789-abcd-ef0123456789", path, sizeof(path), &err), 0);
    char expect[PATH_MAX];
    xsnprintf(expect, sizeof(expect), "%s/ab/cd/abcdef01-2345-6789-abcd-ef0123456789", f->root);
    assert_string_equal(path, expect);
}

static void test_path_buffer_too_small(void **state)
{
    fixture *f = *state;
    char small[16];
    ts_err err = {0};
    assert_int_equal(
        ts_store_path(f->st, "abcdef01-2345-6789-abcd-ef0123456789", small, sizeof(small), &err),
        TS_EINVAL);
    assert_non_null(strstr(err.msg, "too long"));
    assert_int_equal(ts_store_temp_path(f->st, small, sizeof(small), &err), TS_EINVAL);
}

static void test_read_not_a_file(void **state)
{
    fixture *f = *state;
    /* a directory where a file should be is damage, not "absent" */
    const char *uuid = "01234567-89ab-cdef-0123-456789abcdef";
    char path[PATH_MAX];
    ts_err err = {0};
    assert_int_equal(ts_store_path(f->st, uuid, path, sizeof(path), &err), 0);
    char dir[PATH_MAX];
    xsnprintf(dir, sizeof(dir), "%s/01", f->root);
    assert_int_equal(mkdir(dir, 0755), 0);
    xsnprintf(dir, sizeof(dir), "%s/01/23", f->root);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), TS_EIO);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_null(data);
}

static void test_read_too_big(void **state)
{
    fixture *f = *state;
    char uuid[TS_UUID_LEN + 1];
    ts_err err = {0};
    assert_int_equal(ts_store_write(f->st, "x", 1, uuid, &err), 0);
    char path[PATH_MAX];
    assert_int_equal(ts_store_path(f->st, uuid, path, sizeof(path), &err), 0);
    /* a sparse file just past 4 GiB costs no disk space */
    assert_int_equal(truncate(path, ((off_t)4 << 30) + 1), 0);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(f->st, uuid, &data, &len, &err), TS_ETOOBIG);
    assert_null(data);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(ts_store_remove(f->st, uuid, &err), 0);
}

#define N_THREADS 4
#define PER_THREAD 50

typedef struct {
    ts_store *st;
    int id;
    char uuids[PER_THREAD][TS_UUID_LEN + 1];
    int failures;
} worker;

static void *write_many(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char content[64];
        int n = snprintf(content, sizeof(content), "thread %d file %d", w->id, i);
        ts_err err = {0};
        if (ts_store_write(w->st, content, (size_t)n, w->uuids[i], &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            w->failures++;
        }
        /* removing every third file races rmdir of aa/bb against commits */
        if (i % 3 == 2 && ts_store_remove(w->st, w->uuids[i], &err) != 0)
            w->failures++;
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_concurrent_writes(void **state)
{
    fixture *f = *state;
    static worker w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        memset(&w[t], 0, sizeof(w[t]));
        w[t].st = f->st;
        w[t].id = t;
        assert_int_equal(pthread_create(&th[t], NULL, write_many, &w[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);

    static char all[N_THREADS * PER_THREAD][TS_UUID_LEN + 1];
    size_t n = 0;
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(w[t].failures, 0);
        for (int i = 0; i < PER_THREAD; i++) {
            memcpy(all[n++], w[t].uuids[i], TS_UUID_LEN + 1);
            void *data = NULL;
            size_t len = 0;
            ts_err err = {0};
            int rc = ts_store_read(f->st, w[t].uuids[i], &data, &len, &err);
            if (i % 3 == 2) {
                assert_int_equal(rc, TS_ENOTFOUND);
                continue;
            }
            /* each file holds what its writer wrote, not another thread's bytes */
            char expect[64];
            int el = snprintf(expect, sizeof(expect), "thread %d file %d", t, i);
            assert_int_equal(rc, 0);
            assert_int_equal(len, (size_t)el);
            assert_memory_equal(data, expect, len);
            free(data);
        }
    }
    qsort(all, n, sizeof(all[0]), cmp_str);
    for (size_t i = 1; i < n; i++)
        assert_string_not_equal(all[i - 1], all[i]);
    for (size_t i = 0; i < n; i++)
        ts_store_settle(f->st, all[i]); /* the removed ones took their intent with them */
    char tmp[PATH_MAX];
    xsnprintf(tmp, sizeof(tmp), "%s/tmp", f->root);
    assert_int_equal(count_entries(tmp), 0);
}

/* Temporary files nobody wrote to for an hour are swept; fresh ones stay. */
static void test_sweep_removes_only_abandoned_temp_files(void **state)
{
    fixture *f = *state;
    ts_err err;
    char old_path[PATH_MAX], fresh_path[PATH_MAX], other[PATH_MAX];
    assert_int_equal(ts_store_temp_path(f->st, old_path, sizeof(old_path), &err), 0);
    assert_int_equal(ts_store_temp_path(f->st, fresh_path, sizeof(fresh_path), &err), 0);
    xsnprintf(other, sizeof(other), "%s/tmp/not-ours.txt", f->root);
    const char *paths[] = {old_path, fresh_path, other};
    for (int i = 0; i < 3; i++) {
        FILE *fp = fopen(paths[i], "w");
        assert_non_null(fp);
        fputs("partial", fp);
        fclose(fp);
    }
    struct timespec two_hours_ago[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    assert_int_equal(utimensat(AT_FDCWD, old_path, two_hours_ago, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, other, two_hours_ago, 0), 0);
    int removed = -1;
    assert_int_equal(ts_store_sweep_temp(f->st, 3600, &removed, &err), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(access(old_path, F_OK), -1);
    assert_int_equal(access(fresh_path, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0); /* only *.part files are ours */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sweep_removes_only_abandoned_temp_files, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_creates_root_and_tmp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_intents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_read_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_writes_two_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_twice_and_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_tree_keeps_emptied_directories, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_keeps_siblings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_temp_file_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_place_then_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_missing_temp, setup, teardown),
        cmocka_unit_test(test_unwritable_root),
        cmocka_unit_test_setup_teardown(test_root_is_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_uuid_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_buffer_too_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_not_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_place_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_place_data_keep_fd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_placed_files_share_a_directory_per_run, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_dir_syncs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
