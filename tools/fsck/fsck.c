/* tessera-fsck: compares the storage area with the index.
 *
 *   tessera-fsck [--repair] [--min-age SECONDS]
 *
 * Reports files without an attachment row ("orphan-file": left by a crash
 * between writing a file and committing its row, or by a commit in doubt) and
 * attachment rows without their file ("missing-file": data lost outside
 * Tessera). Files already in the deletion queue are not orphans, nor files
 * whose writer's intent is still there (in flight, or settled by a deleter
 * after TESSERA_STORE_INTENT_AGE: lib/domain/store_index.h). Files younger
 * than --min-age (default 3600 s) are skipped: they may belong to a store
 * whose transaction has not committed yet. Every candidate is checked again
 * against the index before it is reported, so a store or a deletion that runs
 * during the scan is not reported.
 *
 * --repair queues the orphan files for the deleter; missing files cannot be
 * repaired here (restore them from a backup).
 *
 * Exit status: 0 consistent, 1 inconsistencies found (even if repaired), 2
 * the check could not run. Configuration as every service (TESSERA_DB_URL,
 * TESSERA_STORAGE_DIR). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/config.h"
#include "io/db.h"
#include "base/log.h"
#include "io/migrate.h"
#include "base/service.h"
#include "io/store.h"

#define PAGE 50000

typedef struct uuid_bin {
    unsigned char b[16];
} uuid_bin;

typedef struct uuid_set {
    uuid_bin *v;
    size_t n, cap;
} uuid_set;

typedef struct disk_file {
    uuid_bin id;
    time_t mtime;
    long long size;
} disk_file;

typedef struct fsck {
    ts_db_pool *db;
    ts_store *store;
    long min_age_s;
    time_t now;
    disk_file *files;
    size_t nfiles, cap_files;
    long foreign;
    uuid_set rows;   /* attachments */
    uuid_set queued; /* deletion queue */
} fsck;

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool parse_uuid(const char *s, uuid_bin *out)
{
    int k = 0;
    for (const char *p = s; *p && k < 16; p++) {
        if (*p == '-')
            continue;
        int hi = hexval(p[0]), lo = p[1] ? hexval(p[1]) : -1;
        if (hi < 0 || lo < 0)
            return false;
        out->b[k++] = (unsigned char)(hi << 4 | lo);
        p++;
    }
    return k == 16;
}

static void format_uuid(const uuid_bin *u, char out[TS_UUID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u->b[i] >> 4];
        out[o++] = hex[u->b[i] & 15];
    }
    out[o] = '\0';
}

static int cmp_uuid(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void set_add(uuid_set *s, const uuid_bin *u)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            abort();
    }
    s->v[s->n++] = *u;
}

static bool set_has(const uuid_set *s, const uuid_bin *u)
{
    return s->n && bsearch(u, s->v, s->n, sizeof(*s->v), cmp_uuid) != NULL;
}

static int on_file(void *user, const char *uuid, const char *path, const struct stat *st)
{
    fsck *f = user;
    uuid_bin id;
    if (!uuid || !parse_uuid(uuid, &id)) {
        printf("foreign-file path=%s\n", path);
        f->foreign++;
        return 0;
    }
    if (f->nfiles == f->cap_files) {
        f->cap_files = f->cap_files ? f->cap_files * 2 : 1024;
        f->files = realloc(f->files, f->cap_files * sizeof(*f->files));
        if (!f->files)
            abort();
    }
    f->files[f->nfiles++] = (disk_file){id, st->st_mtime, (long long)st->st_size};
    return 0;
}

/* ---- reading uuids from the index, a page at a time ---------------------- */

static const ts_db_stmt page_attachments = {
    "fsck_attachments",
    "SELECT uuid::text FROM attachments WHERE uuid > $1::uuid ORDER BY uuid LIMIT 50000", 1};
static const ts_db_stmt page_queue = {
    "fsck_queue",
    "SELECT uuid::text FROM deletion_queue WHERE uuid > $1::uuid ORDER BY uuid LIMIT 50000", 1};

typedef struct page {
    const ts_db_stmt *stmt;
    char after[TS_UUID_LEN + 1];
    uuid_set *into;
    int got;
} page;

static int page_txn(ts_db *db, void *arg, ts_err *err)
{
    page *p = arg;
    const char *params[] = {p->after};
    PGresult *res;
    int rc = ts_db_exec(db, p->stmt, params, &res, err);
    if (rc)
        return rc;
    p->got = PQntuples(res);
    for (int i = 0; i < p->got; i++) {
        uuid_bin u;
        if (parse_uuid(PQgetvalue(res, i, 0), &u))
            set_add(p->into, &u);
    }
    if (p->got)
        snprintf(p->after, sizeof(p->after), "%s", PQgetvalue(res, p->got - 1, 0));
    PQclear(res);
    return 0;
}

static int read_all(fsck *f, const ts_db_stmt *stmt, uuid_set *into, ts_err *err)
{
    page p = {stmt, "00000000-0000-0000-0000-000000000000", into, 0};
    /* the all-zero uuid is never generated (version 4 uuids), so "> zero" is all */
    do {
        int rc = ts_db_transaction(f->db, TS_DB_READ, page_txn, &p, err);
        if (rc)
            return rc;
    } while (p.got == PAGE);
    if (into->n) /* qsort(NULL, 0, ...) is undefined (UBSan says so) */
        qsort(into->v, into->n, sizeof(*into->v), cmp_uuid);
    return 0;
}

/* ---- second looks, one candidate at a time (candidates are few) ---------- */

static const ts_db_stmt still_unreferenced = {
    "fsck_unreferenced",
    "SELECT NOT EXISTS (SELECT 1 FROM attachments WHERE uuid = $1::uuid) "
    "AND NOT EXISTS (SELECT 1 FROM deletion_queue WHERE uuid = $1::uuid)",
    1};
static const ts_db_stmt row_of = {
    "fsck_row_of",
    "SELECT r.level, r.public_id, a.content_type FROM attachments a "
    "JOIN resources r ON r.id = a.resource_id WHERE a.uuid = $1::uuid",
    1};
static const ts_db_stmt queue_file = {"fsck_queue_file",
                                      "INSERT INTO deletion_queue (uuid) VALUES ($1::uuid)", 1};

typedef struct probe {
    const ts_db_stmt *stmt;
    const char *uuid;
    char col[3][80];
    bool found;
} probe;

static int probe_txn(ts_db *db, void *arg, ts_err *err)
{
    probe *p = arg;
    const char *params[] = {p->uuid};
    PGresult *res;
    int rc = ts_db_exec(db, p->stmt, params, &res, err);
    if (rc)
        return rc;
    p->found = PQntuples(res) > 0;
    for (int c = 0; p->found && c < PQnfields(res) && c < 3; c++)
        snprintf(p->col[c], sizeof(p->col[c]), "%s", PQgetvalue(res, 0, c));
    PQclear(res);
    return 0;
}

static int probe_run(fsck *f, const ts_db_stmt *stmt, const char *uuid, ts_db_mode mode, probe *p,
                     ts_err *err)
{
    memset(p, 0, sizeof(*p));
    p->stmt = stmt;
    p->uuid = uuid;
    return ts_db_transaction(f->db, mode, probe_txn, p, err);
}

static const char *level_name(const char *lv)
{
    static const char *names[] = {"Patient", "Study", "Series", "Instance"};
    int l = atoi(lv);
    return l >= 0 && l <= 3 ? names[l] : "?";
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tessera-fsck [--repair] [--min-age SECONDS]\n"
                 "Compares the storage area (TESSERA_STORAGE_DIR) with the index "
                 "(TESSERA_DB_URL).\n"
                 "Exit status: 0 consistent, 1 inconsistencies found, 2 error.\n");
}

int main(int argc, char **argv)
{
    bool repair = false;
    long min_age = 3600;
    char *pass[4] = {argv[0]};
    int npass = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repair") == 0) {
            repair = true;
        } else if (strcmp(argv[i], "--min-age") == 0 && i + 1 < argc) {
            char *end;
            min_age = strtol(argv[++i], &end, 10);
            if (*end || min_age < 0) {
                usage(stderr);
                return 2;
            }
        } else if ((strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "--version") == 0) &&
                   npass < 3) {
            if (strcmp(argv[i], "--help") == 0)
                usage(stdout);
            pass[npass++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    ts_service_init("fsck", npass, pass);
    ts_err err;
    ts_err_clear(&err);
    fsck f = {.min_age_s = min_age, .now = time(NULL)};

    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    dbopt.size = 1;
    if (ts_db_pool_new(&dbopt, &f.db, &err) || ts_db_migrate_wait(f.db, 60, &err) ||
        ts_store_open(ts_cfg_str(TESSERA_STORAGE_DIR), &f.store, &err)) {
        fprintf(stderr, "tessera-fsck: %s\n", err.msg);
        return 2;
    }

    /* Disk first, then attachments, then the queue: a deletion that moves a
     * row from attachments to the queue during the scan is seen in one of them. */
    if (ts_store_walk(f.store, on_file, &f, &err) ||
        read_all(&f, &page_attachments, &f.rows, &err) ||
        read_all(&f, &page_queue, &f.queued, &err)) {
        fprintf(stderr, "tessera-fsck: %s\n", err.msg);
        return 2;
    }

    long orphans = 0, missing = 0, young = 0, repaired = 0, in_flight = 0;
    char uuid[TS_UUID_LEN + 1];
    probe p;
    for (size_t i = 0; i < f.nfiles; i++) {
        disk_file *d = &f.files[i];
        if (set_has(&f.rows, &d->id) || set_has(&f.queued, &d->id))
            continue;
        if (f.now - d->mtime < f.min_age_s) {
            young++;
            continue;
        }
        format_uuid(&d->id, uuid);
        if (ts_store_has_intent(f.store, uuid)) {
            in_flight++; /* its writer has not answered yet: a deleter settles it */
            continue;
        }
        if (probe_run(&f, &still_unreferenced, uuid, TS_DB_READ, &p, &err))
            goto db_failed;
        if (strcmp(p.col[0], "t") != 0)
            continue; /* indexed or queued during the scan */
        char path[4096];
        ts_store_path(f.store, uuid, path, sizeof(path), &err);
        printf("orphan-file uuid=%s path=%s size=%lld age_s=%lld\n", uuid, path, d->size,
               (long long)(f.now - d->mtime));
        orphans++;
        if (repair) {
            if (probe_run(&f, &queue_file, uuid, TS_DB_WRITE, &p, &err))
                goto db_failed;
            repaired++;
        }
    }

    qsort(f.files, f.nfiles, sizeof(*f.files), cmp_uuid); /* id is the first member */
    for (size_t i = 0; i < f.rows.n; i++) {
        if (f.nfiles && bsearch(&f.rows.v[i], f.files, f.nfiles, sizeof(*f.files), cmp_uuid))
            continue;
        format_uuid(&f.rows.v[i], uuid);
        char path[4096];
        struct stat sb;
        if (ts_store_path(f.store, uuid, path, sizeof(path), &err) == 0 && stat(path, &sb) == 0)
            continue; /* stored during the scan */
        if (probe_run(&f, &row_of, uuid, TS_DB_READ, &p, &err))
            goto db_failed;
        if (!p.found)
            continue; /* deleted during the scan */
        printf("missing-file uuid=%s level=%s id=%s content_type=%s\n", uuid, level_name(p.col[0]),
               p.col[1], p.col[2]);
        missing++;
    }

    printf("fsck files=%zu attachments=%zu queued=%zu orphan_files=%ld missing_files=%ld "
           "foreign_files=%ld young_files_skipped=%ld in_flight=%ld repaired=%ld\n",
           f.nfiles, f.rows.n, f.queued.n, orphans, missing, f.foreign, young, in_flight, repaired);
    free(f.files);
    free(f.rows.v);
    free(f.queued.v);
    ts_store_free(f.store);
    ts_db_pool_free(f.db);
    return orphans || missing ? 1 : 0;

db_failed:
    fprintf(stderr, "tessera-fsck: %s\n", err.msg);
    return 2;
}
