#include "io/store.h"

#include <dirent.h>
#include <errno.h>
#include <time.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "base/xalloc.h"

/* A stored file larger than this is refused by ts_store_read: reading it into
 * one buffer would be a mistake anyway (the largest accepted instance is far
 * smaller), and it bounds what a corrupt or foreign file can make us allocate. */
#define TS_STORE_READ_MAX ((uint64_t)4 << 30)

/* How often commit recreates aa/bb and retries the rename when a concurrent
 * ts_store_remove has just removed an empty aa or aa/bb under our feet. */
#define TS_STORE_COMMIT_ATTEMPTS 5

/* Files placed one after the other share their aa/bb directory for this many
 * files (new_uuid), so that one fsync of the directory makes the new names of
 * several files durable (sync_dir): instances received at once by one ingest
 * cost one directory fsync between them, not one each. The directory changes
 * at random after each run, so the files still spread over the whole tree. */
#define DIR_RUN 32
/* directories whose fsyncs are being shared at once (more: fsynced alone) */
#define DIR_SLOTS 8

typedef struct dir_sync {
    unsigned dir;                /* aa/bb as a number */
    int users;                   /* threads waiting for one of its fsyncs */
    bool busy;                   /* an fsync of it runs */
    unsigned long started, done; /* its fsyncs, numbered */
    unsigned long failed;        /* the last one that failed */
    ts_err err;
} dir_sync;

struct ts_store {
    char *root;                /* without trailing slash */
    atomic_bool tree_prepared; /* every aa/bb exists and stays (ts_store_prepare_tree) */
    atomic_uint run_count;     /* files named so far (new_uuid) */
    atomic_uint run_dir;       /* the directory of the current run */
    pthread_mutex_t dir_mu;
    pthread_cond_t dir_cond;
    dir_sync dirs[DIR_SLOTS];
};

/* In the root once every aa/bb directory exists (ts_store_prepare_tree). */
#define TREE_MARKER ".tessera-tree-prepared"

/* The message a person acts on: the path and the system's reason. ENOSPC and
 * EDQUOT get their own code so that callers can answer "storage full". errno is
 * kept so that a caller can still decide whether to retry. */
static int store_errno(ts_err *err, int e, const char *path, const char *op)
{
    char buf[256];
    const char *reason = strerror_r(e, buf, sizeof(buf));
    int code = (e == ENOSPC || e == EDQUOT) ? TS_ENOSPACE : TS_EIO;
    if (op)
        ts_err_set(err, code, "store %s: %s: %s", path, op, reason);
    else
        ts_err_set(err, code, "store %s: %s", path, reason);
    errno = e;
    return code;
}

/* snprintf that reports truncation as an error instead of using a cut path. */
static int path_fmt(ts_err *err, char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int path_fmt(ts_err *err, char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return ts_err_set(err, TS_EINVAL, "store: path too long (%d bytes, room for %zu)", n, size);
    return 0;
}

/* mkdir that treats an existing directory as success; *created says whether
 * this call made it (its parent then needs an fsync to make it durable). */
static int mkdir_one(const char *path, bool *created, ts_err *err)
{
    if (created)
        *created = false;
    if (mkdir(path, 0755) == 0) {
        if (created)
            *created = true;
        return 0;
    }
    int e = errno;
    if (e == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return 0;
        return store_errno(err, ENOTDIR, path, "create directory");
    }
    return store_errno(err, e, path, "create directory");
}

/* mkdir -p, trying the full path first: the root usually exists, and a path
 * below a regular file then fails with ENOTDIR naming the path asked for. */
static int mkdir_p(const char *path, ts_err *err)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return mkdir_one(path, NULL, err);
    if (errno != ENOENT)
        return store_errno(err, errno, path, "create directory");
    char parent[PATH_MAX];
    int rc = path_fmt(err, parent, sizeof(parent), "%s", path);
    if (rc)
        return rc;
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        return store_errno(err, ENOENT, path, "create directory");
    *slash = '\0';
    rc = mkdir_p(parent, err);
    if (rc)
        return rc;
    return mkdir_one(path, NULL, err);
}

static int write_all(int fd, const void *data, size_t len, const char *path, ts_err *err);

static int fsync_path(const char *path, int flags, ts_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return store_errno(err, errno, path, "open for fsync");
    int rc = 0;
    if (fsync(fd) != 0)
        rc = store_errno(err, errno, path, "fsync");
    close(fd);
    return rc;
}

/* Whether the tree is prepared; until it is, every call looks for the marker,
 * so that a process started before another one prepared the tree (a deleter
 * before the first ingest) stops removing emptied directories. */
static bool tree_marker_seen(ts_store *st)
{
    if (atomic_load(&st->tree_prepared))
        return true;
    char marker[PATH_MAX];
    if (path_fmt(NULL, marker, sizeof(marker), "%s/" TREE_MARKER, st->root) == 0 &&
        access(marker, F_OK) == 0)
        atomic_store(&st->tree_prepared, true);
    return atomic_load(&st->tree_prepared);
}

/* The store only ever creates lower-case names (uuid_unparse_lower), so an
 * upper-case uuid cannot name a stored file; refusing it also means that only
 * [0-9a-f-] ever reaches a path, so no uuid can climb out of the root. */
static bool uuid_shape_ok(const char *uuid)
{
    if (!uuid)
        return false;
    for (int i = 0; i < TS_UUID_LEN; i++) {
        char c = uuid[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false; /* also catches a string shorter than 36 */
        }
    }
    return uuid[TS_UUID_LEN] == '\0';
}

int ts_store_open(const char *root, ts_store **out, ts_err *err)
{
    *out = NULL;
    if (!root || !*root)
        return ts_err_set(err, TS_EINVAL, "store: the storage root is empty");

    ts_store *st = calloc(1, sizeof(*st));
    if (!st)
        abort();
    st->root = xstrdup(root);
    pthread_mutex_init(&st->dir_mu, NULL);
    pthread_cond_init(&st->dir_cond, NULL);
    /* "/data/" and "/data" are the same root; keep paths in messages tidy. */
    size_t n = strlen(st->root);
    while (n > 1 && st->root[n - 1] == '/')
        st->root[--n] = '\0';

    char tmp[PATH_MAX];
    char probe[PATH_MAX];
    int rc = mkdir_p(st->root, err);
    if (rc)
        goto out_free_store;
    rc = path_fmt(err, tmp, sizeof(tmp), "%s/tmp", st->root);
    if (rc)
        goto out_free_store;
    rc = mkdir_one(tmp, NULL, err);
    if (rc)
        goto out_free_store;

    /* access(W_OK) says nothing useful when running as root or on a read-only
     * mount; creating a file is the only honest test of writability. */
    rc = path_fmt(err, probe, sizeof(probe), "%s/.probe-XXXXXX", tmp);
    if (rc)
        goto out_free_store;
    int fd = mkstemp(probe);
    if (fd < 0) {
        rc = store_errno(err, errno, tmp, "not writable");
        goto out_free_store;
    }
    close(fd);
    unlink(probe);

    tree_marker_seen(st);
    *out = st;
    return 0;

out_free_store:
    ts_store_free(st);
    return rc;
}

void ts_store_free(ts_store *st)
{
    if (!st)
        return;
    free(st->root);
    pthread_cond_destroy(&st->dir_cond);
    pthread_mutex_destroy(&st->dir_mu);
    free(st);
}

/* A new random uuid for a stored file; its first two bytes (the aa/bb
 * directory) are those of the current run (DIR_RUN). */
/* Random bytes for uuids, taken from the kernel a page at a time per thread:
 * libuuid's uuid_generate_random costs six system calls per uuid (getrandom,
 * then getpid, getuid, getppid, gettid and a lock to stir its own PRNG). */
static _Thread_local unsigned char rand_pool[512];
static _Thread_local size_t rand_left;
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;

/* a child must not hand out the uuids its parent has handed out already */
static void rand_forget(void)
{
    rand_left = 0;
}

static void rand_atfork(void)
{
    pthread_atfork(NULL, NULL, rand_forget);
}

static void random_uuid(uuid_t u)
{
    pthread_once(&rand_once, rand_atfork);
    if (rand_left < sizeof(uuid_t)) {
        size_t got = 0;
        while (got < sizeof(rand_pool)) {
            ssize_t n = getrandom(rand_pool + got, sizeof(rand_pool) - got, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < sizeof(rand_pool)) {
            uuid_generate_random(u); /* libuuid has its fallbacks */
            return;
        }
        rand_left = sizeof(rand_pool);
    }
    memcpy(u, rand_pool + sizeof(rand_pool) - rand_left, sizeof(uuid_t));
    rand_left -= sizeof(uuid_t);
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

static void new_uuid(ts_store *st, char out[TS_UUID_LEN + 1])
{
    uuid_t u = {0};
    random_uuid(u);
    unsigned n = atomic_fetch_add(&st->run_count, 1);
    if (n % DIR_RUN == 0) {
        atomic_store(&st->run_dir, (unsigned)u[0] << 8 | u[1]);
    } else {
        unsigned d = atomic_load(&st->run_dir);
        u[0] = (unsigned char)(d >> 8);
        u[1] = (unsigned char)d;
    }
    uuid_unparse_lower(u, out);
}

/* fsync of the directory of uuid's file, shared: a thread whose file was
 * linked before an fsync of that directory started needs no fsync of its own.
 * It waits for the first fsync that starts after it asked (starting it itself
 * when none runs), whose outcome is its own. */
static int sync_dir(ts_store *st, const char *uuid, const char *dir, ts_err *err)
{
    unsigned key = (unsigned)strtoul((char[]){uuid[0], uuid[1], uuid[2], uuid[3], '\0'}, NULL, 16);
    pthread_mutex_lock(&st->dir_mu);
    dir_sync *s = NULL;
    for (int i = 0; i < DIR_SLOTS && !s; i++)
        if (st->dirs[i].users > 0 && st->dirs[i].dir == key)
            s = &st->dirs[i];
    for (int i = 0; i < DIR_SLOTS && !s; i++)
        if (st->dirs[i].users == 0) {
            s = &st->dirs[i];
            *s = (dir_sync){.dir = key};
        }
    if (!s) {
        pthread_mutex_unlock(&st->dir_mu);
        return fsync_path(dir, O_DIRECTORY, err);
    }
    s->users++;
    unsigned long need = s->started + 1;
    while (s->done < need) {
        if (s->busy) {
            pthread_cond_wait(&st->dir_cond, &st->dir_mu);
            continue;
        }
        s->busy = true;
        unsigned long n = ++s->started;
        pthread_mutex_unlock(&st->dir_mu);
        ts_err e;
        ts_err_clear(&e);
        int rc = fsync_path(dir, O_DIRECTORY, &e);
        pthread_mutex_lock(&st->dir_mu);
        s->busy = false;
        s->done = n;
        if (rc) {
            s->failed = n;
            s->err = e;
        }
        pthread_cond_broadcast(&st->dir_cond);
    }
    int rc = 0;
    if (s->failed >= need) {
        rc = s->err.code ? s->err.code : TS_EIO;
        if (err)
            *err = s->err;
    }
    s->users--;
    pthread_mutex_unlock(&st->dir_mu);
    return rc;
}

const char *ts_store_root(const ts_store *st)
{
    return st->root;
}

int ts_store_temp_path(ts_store *st, char *path, size_t size, ts_err *err)
{
    /* A random uuid keeps temporary names unique across threads and across
     * every process sharing the storage area, without any coordination. */
    uuid_t u = {0};
    char name[TS_UUID_LEN + 1];
    random_uuid(u);
    uuid_unparse_lower(u, name);
    return path_fmt(err, path, size, "%s/tmp/%s.part", st->root, name);
}

int ts_store_temp_path_of(ts_store *st, const char *name, char *path, size_t size, ts_err *err)
{
    char u[TS_UUID_LEN + 1] = "";
    bool ok =
        name && strlen(name) == TS_UUID_LEN + 5 && memcmp(name + TS_UUID_LEN, ".part", 5) == 0;
    if (ok)
        memcpy(u, name, TS_UUID_LEN);
    if (!ok || !uuid_shape_ok(u))
        return ts_err_set(err, TS_EINVAL, "store: \"%.60s\" is not a temporary file name",
                          name ? name : "");
    return path_fmt(err, path, size, "%s/tmp/%s", st->root, name);
}

int ts_store_path(const ts_store *st, const char *uuid, char *path, size_t size, ts_err *err)
{
    if (!uuid_shape_ok(uuid))
        return ts_err_set(err, TS_EINVAL, "store: malformed uuid \"%.40s\"", uuid ? uuid : "");
    return path_fmt(err, path, size, "%s/%.2s/%.2s/%s", st->root, uuid, uuid + 2, uuid);
}

static int intent_path(const ts_store *st, const char *uuid, char *path, size_t size, ts_err *err)
{
    if (!uuid_shape_ok(uuid))
        return ts_err_set(err, TS_EINVAL, "store: malformed uuid \"%.40s\"", uuid ? uuid : "");
    return path_fmt(err, path, size, "%s/tmp/%.36s.intent", st->root, uuid);
}

/* Creates root/aa and root/aa/bb as needed; *aa_made and *bb_made are set
 * (never cleared) when this call made them. No fsync here: ts_store_remove
 * may rmdir an emptied aa/bb and aa at any moment, so the parents are fsynced
 * by sync_new_parents only once the file's link holds them in place. */
static int make_parents(ts_store *st, const char *uuid, bool *aa_made, bool *bb_made, ts_err *err)
{
    char aa[PATH_MAX];
    char bb[PATH_MAX];
    int rc = path_fmt(err, aa, sizeof(aa), "%s/%.2s", st->root, uuid);
    if (rc)
        return rc;
    rc = path_fmt(err, bb, sizeof(bb), "%s/%.2s/%.2s", st->root, uuid, uuid + 2);
    if (rc)
        return rc;
    /* aa can vanish between the two mkdirs (a remover emptied aa/bb, then
     * aa): bb's mkdir then fails with ENOENT and aa is made again. */
    for (int attempt = 1;; attempt++) {
        bool created;
        rc = mkdir_one(aa, &created, err);
        if (rc)
            return rc;
        *aa_made = *aa_made || created;
        rc = mkdir_one(bb, &created, err);
        if (rc == 0) {
            *bb_made = *bb_made || created;
            return 0;
        }
        if (errno != ENOENT || attempt >= TS_STORE_COMMIT_ATTEMPTS)
            return rc;
    }
}

/* Makes the new directories' names durable: the parent of each directory
 * make_parents created is fsynced. Called after the link, when aa/bb holds a
 * file and neither can be removed any more. */
static int sync_new_parents(ts_store *st, const char *uuid, bool aa_made, bool bb_made, ts_err *err)
{
    char aa[PATH_MAX];
    int rc = 0;
    if (aa_made)
        rc = fsync_path(st->root, O_DIRECTORY, err);
    if (rc == 0 && bb_made && (rc = path_fmt(err, aa, sizeof(aa), "%s/%.2s", st->root, uuid)) == 0)
        rc = fsync_path(aa, O_DIRECTORY, err);
    return rc;
}

int ts_store_place_file(ts_store *st, const char *temp_path, char uuid[TS_UUID_LEN + 1],
                        ts_err *err)
{
    char final[PATH_MAX];
    char intent[PATH_MAX];
    uuid[0] = '\0'; /* never leave a caller holding a stale uuid after a failure */

    new_uuid(st, uuid);
    int rc = ts_store_path(st, uuid, final, sizeof(final), err);
    if (rc)
        goto out_clear_uuid;
    rc = intent_path(st, uuid, intent, sizeof(intent), err);
    if (rc)
        goto out_clear_uuid;

    /* The intent first: from here on, a crash leaves a name that says which
     * file may be in place without its row (see store.h). Same directory, so
     * the rename cannot fail for a missing directory. */
    if (rename(temp_path, intent) != 0) {
        rc = store_errno(err, errno, temp_path, "rename to intent");
        goto out_clear_uuid;
    }

    /* aa/bb usually exist: link first and make them only when it fails for a
     * missing directory. ts_store_remove deletes aa/bb (and aa) once empty, so
     * they can also vanish between our mkdir and our link: make them again. */
    bool aa_made = false;
    bool bb_made = false;
    for (int attempt = 1;; attempt++) {
        if (link(intent, final) == 0)
            break;
        rc = store_errno(err, errno, final, "link from intent");
        /* store_errno keeps errno: only a missing directory is worth a retry */
        if (errno != ENOENT || attempt >= TS_STORE_COMMIT_ATTEMPTS)
            goto out_intent_back;
        if (access(intent, F_OK) != 0)
            goto out_intent_back; /* the file itself is gone: nothing to retry */
        rc = make_parents(st, uuid, &aa_made, &bb_made, err);
        if (rc)
            goto out_intent_back;
    }
    rc = sync_new_parents(st, uuid, aa_made, bb_made, err);
    if (rc) {
        unlink(final);
        goto out_intent_back;
    }
    return 0;

out_intent_back:
    /* The header promises the temporary file is kept on failure. */
    rename(intent, temp_path);
out_clear_uuid:
    uuid[0] = '\0';
    return rc;
}

int ts_store_place_data(ts_store *st, const void *data, size_t len, char uuid[TS_UUID_LEN + 1],
                        int *keep_fd, ts_err *err)
{
    if (keep_fd)
        *keep_fd = -1;
    char final[PATH_MAX];
    char intent[PATH_MAX];
    uuid[0] = '\0';
    char name[TS_UUID_LEN + 1];
    new_uuid(st, name);
    int rc = ts_store_path(st, name, final, sizeof(final), err);
    if (rc)
        return rc;
    if ((rc = intent_path(st, name, intent, sizeof(intent), err)))
        return rc;
    /* the intent's name from the first byte: a crash leaves it beside whatever
     * is in place, as for ts_store_place_file */
    int fd = open(intent, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return store_errno(err, errno, intent, "create");
    rc = write_all(fd, data, len, intent, err);
    /* kept open for ts_store_sync_fd: no second open (and path walk) to fsync */
    if (!keep_fd || rc) {
        if (close(fd) != 0 && rc == 0)
            rc = store_errno(err, errno, intent, "close");
        fd = -1;
    }
    bool aa_made = false;
    bool bb_made = false;
    for (int attempt = 1; rc == 0; attempt++) {
        if (link(intent, final) == 0) {
            rc = sync_new_parents(st, name, aa_made, bb_made, err);
            if (rc) {
                unlink(final);
                break;
            }
            memcpy(uuid, name, TS_UUID_LEN + 1);
            if (keep_fd)
                *keep_fd = fd;
            return 0;
        }
        rc = store_errno(err, errno, final, "link from intent");
        if (errno != ENOENT || attempt >= TS_STORE_COMMIT_ATTEMPTS)
            break;
        rc = make_parents(st, name, &aa_made, &bb_made, err); /* see ts_store_place_file */
    }
    if (fd >= 0)
        close(fd);
    unlink(intent);
    return rc;
}

int ts_store_sync_fd(int fd, const char *uuid, ts_err *err)
{
    int rc = 0;
    if (fsync(fd) != 0)
        rc = ts_err_set(err, errno == ENOSPC ? TS_ENOSPACE : TS_EIO, "store: fsync %s: %s", uuid,
                        strerror(errno));
    /* close can report a deferred write error (NFS, quotas): it counts */
    if (close(fd) != 0 && rc == 0)
        rc = ts_err_set(err, errno == ENOSPC ? TS_ENOSPACE : TS_EIO, "store: close %s: %s", uuid,
                        strerror(errno));
    return rc;
}

int ts_store_sync_file(ts_store *st, const char *uuid, ts_err *err)
{
    char final[PATH_MAX];
    char dir[PATH_MAX];
    int rc = ts_store_path(st, uuid, final, sizeof(final), err);
    if (rc)
        return rc;
    rc = path_fmt(err, dir, sizeof(dir), "%s/%.2s/%.2s", st->root, uuid, uuid + 2);
    if (rc)
        return rc;
    /* The file's fsync after its link: on ext4 and XFS it commits the journal
     * with the new names too, so the directory's fsync that POSIX asks for
     * finds nothing left to write (one journal commit per instance, not two). */
    rc = fsync_path(final, 0, err);
    if (rc == 0)
        rc = sync_dir(st, uuid, dir, err);
    return rc;
}

int ts_store_sync_data(ts_store *st, const char *uuid, ts_err *err)
{
    char final[PATH_MAX];
    int rc = ts_store_path(st, uuid, final, sizeof(final), err);
    return rc ? rc : fsync_path(final, 0, err);
}

int ts_store_sync_dir(ts_store *st, const char *uuid, ts_err *err)
{
    char dir[PATH_MAX];
    if (!uuid_shape_ok(uuid))
        return ts_err_set(err, TS_EINVAL, "store: malformed uuid \"%.40s\"", uuid ? uuid : "");
    int rc = path_fmt(err, dir, sizeof(dir), "%s/%.2s/%.2s", st->root, uuid, uuid + 2);
    return rc ? rc : sync_dir(st, uuid, dir, err);
}

int ts_store_commit_file(ts_store *st, const char *temp_path, char uuid[TS_UUID_LEN + 1],
                         ts_err *err)
{
    int rc = ts_store_place_file(st, temp_path, uuid, err);
    if (rc)
        return rc;
    rc = ts_store_sync_file(st, uuid, err);
    if (rc) {
        /* a file whose directory entry may not be durable must not be handed
         * to the index; the temporary file is kept, as promised */
        char final[PATH_MAX];
        char intent[PATH_MAX];
        ts_err ignored;
        if (ts_store_path(st, uuid, final, sizeof(final), &ignored) == 0)
            unlink(final);
        if (intent_path(st, uuid, intent, sizeof(intent), &ignored) == 0)
            rename(intent, temp_path);
        uuid[0] = '\0';
    }
    return rc;
}

int ts_store_settle(ts_store *st, const char *uuid)
{
    char intent[PATH_MAX];
    ts_err ignored;
    if (intent_path(st, uuid, intent, sizeof(intent), &ignored))
        return TS_EINVAL;
    return unlink(intent) == 0 || errno == ENOENT ? 0 : TS_EIO;
}

bool ts_store_has_intent(ts_store *st, const char *uuid)
{
    char intent[PATH_MAX];
    ts_err ignored;
    return intent_path(st, uuid, intent, sizeof(intent), &ignored) == 0 &&
           access(intent, F_OK) == 0;
}

int ts_store_intents(ts_store *st, int min_age_s, ts_store_intent_fn fn, void *user, ts_err *err)
{
    char tmp[PATH_MAX];
    int rc = path_fmt(err, tmp, sizeof(tmp), "%s/tmp", st->root);
    if (rc)
        return rc;
    DIR *dir = opendir(tmp);
    if (!dir)
        return store_errno(err, errno, tmp, "open directory");
    time_t now = time(NULL);
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len != TS_UUID_LEN + 7 || strcmp(e->d_name + TS_UUID_LEN, ".intent") != 0)
            continue;
        struct stat sb;
        /* An age of 0 means every intent: a file's mtime may be a second
         * ahead of time(), which reads a coarser clock than the file system. */
        if (fstatat(dirfd(dir), e->d_name, &sb, 0) != 0 ||
            (min_age_s > 0 && now - sb.st_mtime < min_age_s))
            continue;
        char uuid[TS_UUID_LEN + 1];
        memcpy(uuid, e->d_name, TS_UUID_LEN);
        uuid[TS_UUID_LEN] = '\0';
        if (uuid_shape_ok(uuid))
            rc = fn(user, uuid);
    }
    closedir(dir);
    return rc;
}

static int write_all(int fd, const void *data, size_t len, const char *path, ts_err *err)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return store_errno(err, errno, path, "write");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ts_store_write(ts_store *st, const void *data, size_t len, char uuid[TS_UUID_LEN + 1],
                   ts_err *err)
{
    char temp[PATH_MAX];
    uuid[0] = '\0';
    int rc = ts_store_temp_path(st, temp, sizeof(temp), err);
    if (rc)
        return rc;
    int fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return store_errno(err, errno, temp, "create");
    rc = write_all(fd, data, len, temp, err);
    /* close can report a deferred write error (NFS, quotas): it counts. */
    if (close(fd) != 0 && rc == 0)
        rc = store_errno(err, errno, temp, "close");
    if (rc)
        goto out_unlink_temp;
    rc = ts_store_commit_file(st, temp, uuid, err);
    if (rc)
        goto out_unlink_temp;
    return 0;

out_unlink_temp:
    unlink(temp);
    return rc;
}

int ts_store_read(ts_store *st, const char *uuid, void **data, size_t *len, ts_err *err)
{
    char path[PATH_MAX];
    struct stat sb;
    char *buf = NULL;
    *data = NULL;
    *len = 0;
    int rc = ts_store_path(st, uuid, path, sizeof(path), err);
    if (rc)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return ts_err_set(err, TS_ENOTFOUND, "store %s: no such file", path);
        return store_errno(err, errno, path, "open");
    }
    if (fstat(fd, &sb) != 0) {
        rc = store_errno(err, errno, path, "stat");
        goto out_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = ts_err_set(err, TS_EIO, "store %s: not a regular file", path);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > TS_STORE_READ_MAX || (uint64_t)sb.st_size > SIZE_MAX) {
        rc = ts_err_set(err, TS_ETOOBIG, "store %s: %lld bytes, more than the %llu that are read",
                        path, (long long)sb.st_size, (unsigned long long)TS_STORE_READ_MAX);
        goto out_close;
    }

    size_t size = (size_t)sb.st_size;
    buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = store_errno(err, errno, path, "read");
            goto out_free_buf;
        }
        if (n == 0) {
            /* Stored files are never rewritten, so a short file is damage. */
            rc = ts_err_set(err, TS_EIO, "store %s: file shrank while read (%zu of %zu bytes)",
                            path, got, size);
            goto out_free_buf;
        }
        got += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = size;
    return 0;

out_free_buf:
    free(buf);
out_close:
    close(fd);
    return rc;
}

int ts_store_remove(ts_store *st, const char *uuid, ts_err *err)
{
    char path[PATH_MAX];
    char dir[PATH_MAX];
    int rc = ts_store_path(st, uuid, path, sizeof(path), err);
    if (rc)
        return rc;
    /* Removal is replayed after crashes and by several deleters: a file that
     * is already gone has been removed. */
    if (unlink(path) != 0 && errno != ENOENT)
        return store_errno(err, errno, path, "remove");
    ts_store_settle(st, uuid); /* a writer that gave up leaves its intent to go with it */

    /* Leave no empty aa/bb behind, unless the tree is prepared (it stays
     * whole). Failing here is harmless (ENOTEMPTY most of the time, or a
     * concurrent commit that just created a file), so it is not reported; an
     * aa/bb that could not go means aa cannot go either. */
    if (!tree_marker_seen(st) &&
        path_fmt(NULL, dir, sizeof(dir), "%s/%.2s/%.2s", st->root, uuid, uuid + 2) == 0 &&
        rmdir(dir) == 0 && path_fmt(NULL, dir, sizeof(dir), "%s/%.2s", st->root, uuid) == 0)
        rmdir(dir);
    return 0;
}

int ts_store_prepare_tree(ts_store *st, int *created, ts_err *err)
{
    char marker[PATH_MAX];
    char aa[PATH_MAX];
    char bb[PATH_MAX];
    int made = 0;
    int rc = path_fmt(err, marker, sizeof(marker), "%s/" TREE_MARKER, st->root);
    if (rc)
        return rc;
    if (access(marker, F_OK) == 0) {
        atomic_store(&st->tree_prepared, true);
        goto out;
    }
    /* Several processes may do this at once on a shared volume: a directory
     * made by another counts as made. */
    for (int a = 0; a < 256; a++) {
        bool aa_created;
        if ((rc = path_fmt(err, aa, sizeof(aa), "%s/%02x", st->root, a)) ||
            (rc = mkdir_one(aa, &aa_created, err)))
            return rc;
        made += aa_created;
        for (int b = 0; b < 256; b++) {
            bool bb_created;
            if ((rc = path_fmt(err, bb, sizeof(bb), "%s/%02x", aa, b)) ||
                (rc = mkdir_one(bb, &bb_created, err)))
                return rc;
            made += bb_created;
        }
    }
    /* One syncfs for the 65,792 new directories (their inodes and blocks as
     * well as their entries), rather than an fsync of each. */
    int root_fd = open(st->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return store_errno(err, errno, st->root, "open");
    if (syncfs(root_fd) != 0) {
        rc = store_errno(err, errno, st->root, "syncfs");
        close(root_fd);
        return rc;
    }
    close(root_fd);
    /* the marker last, durable, once everything it promises is */
    int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return store_errno(err, errno, marker, "create");
    if (fsync(fd) != 0) {
        rc = store_errno(err, errno, marker, "fsync");
        close(fd);
        return rc;
    }
    close(fd);
    if ((rc = fsync_path(st->root, O_DIRECTORY, err)))
        return rc;
    atomic_store(&st->tree_prepared, true);
out:
    if (created)
        *created = made;
    return 0;
}

bool ts_store_tree_prepared(ts_store *st)
{
    return tree_marker_seen(st);
}

int ts_store_sweep_temp(ts_store *st, int max_age_s, int *removed, ts_err *err)
{
    char tmp[PATH_MAX];
    int rc = path_fmt(err, tmp, sizeof(tmp), "%s/tmp", st->root);
    if (rc)
        return rc;
    DIR *dir = opendir(tmp);
    if (!dir)
        return store_errno(err, errno, tmp, "open directory");
    int count = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".part") != 0)
            continue;
        struct stat sb;
        /* a file being received is written to all the time: an old mtime means
         * its writer is gone (killed in the middle of a transfer) */
        if (fstatat(dirfd(dir), e->d_name, &sb, 0) == 0 && now - sb.st_mtime > max_age_s &&
            unlinkat(dirfd(dir), e->d_name, 0) == 0)
            count++;
    }
    closedir(dir);
    if (removed)
        *removed = count;
    return 0;
}

/* Two hex digits: the shape of the aa and bb directory levels. */
static bool hex2_ok(const char *s)
{
    return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2;
}

int ts_store_walk(ts_store *st, ts_store_walk_fn fn, void *user, ts_err *err)
{
    char aa_path[PATH_MAX], bb_path[PATH_MAX], file_path[PATH_MAX];
    DIR *top = opendir(st->root);
    if (!top)
        return store_errno(err, errno, st->root, "open directory");
    int rc = 0;
    struct dirent *a;
    while (rc == 0 && (a = readdir(top))) {
        if (!hex2_ok(a->d_name))
            continue; /* ".", "..", tmp/ */
        if (path_fmt(err, aa_path, sizeof(aa_path), "%s/%s", st->root, a->d_name))
            continue;
        DIR *mid = opendir(aa_path);
        if (!mid)
            continue; /* removed meanwhile by ts_store_remove */
        struct dirent *b;
        while (rc == 0 && (b = readdir(mid))) {
            if (!hex2_ok(b->d_name))
                continue;
            if (path_fmt(err, bb_path, sizeof(bb_path), "%s/%s", aa_path, b->d_name))
                continue;
            DIR *leaf = opendir(bb_path);
            if (!leaf)
                continue;
            struct dirent *f;
            while (rc == 0 && (f = readdir(leaf))) {
                if (f->d_name[0] == '.')
                    continue;
                if (path_fmt(err, file_path, sizeof(file_path), "%s/%s", bb_path, f->d_name))
                    continue;
                struct stat sb;
                if (lstat(file_path, &sb) != 0)
                    continue; /* removed meanwhile */
                bool named_well = uuid_shape_ok(f->d_name) && f->d_name[TS_UUID_LEN] == '\0' &&
                                  strncmp(f->d_name, a->d_name, 2) == 0 &&
                                  strncmp(f->d_name + 2, b->d_name, 2) == 0 && S_ISREG(sb.st_mode);
                rc = fn(user, named_well ? f->d_name : NULL, file_path, &sb);
            }
            closedir(leaf);
        }
        closedir(mid);
    }
    closedir(top);
    return rc;
}
