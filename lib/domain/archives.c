/* Archives in Orthanc 1.10.1's layout (its ArchiveJob and HierarchicalZipWriter):
 *
 *   PatientID PatientName/AccessionNumber StudyDescription/Modality SeriesDescription/
 *   MO000000.dcm (MO: the first two letters of the modality)
 *
 * Every folder name is made ASCII, '^' becomes a space, only letters, digits,
 * '.', '_' and single spaces are kept, an empty name becomes "Unknown Patient"
 * (Study, Series), and a name already used in the same folder gets "-2", "-3"...
 * Patients, studies and series come in the order of their public ids, the
 * instances of a series in the order they were stored; files are numbered per
 * series after the first two letters of the modality.
 *
 * The ZIP (stored, no compression; zip64 where libarchive needs it) is made
 * one step at a time: each step feeds the next 64 KiB of a file to libarchive,
 * whose output lands in a buffer that the caller drains before the next step. */
#include "domain/archives.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "base/xalloc.h"

#define ARCHIVE_CHUNK (64 * 1024)

typedef struct arch_file {
    size_t dir; /* index into dirs */
    char name[32];
    char uuid[TS_UUID_LEN + 1];
    long long size; /* as the index has it */
} arch_file;

struct ts_archive {
    ts_store *store;
    char id[64]; /* public id, for logs */
    char **dirs; /* "patient/study/series/" of each series */
    size_t ndirs, dirs_cap;
    arch_file *files;
    size_t nfiles, files_cap, next;
    struct archive *a;
    bool opened, done, failed;
    int fd;
    long long remaining; /* bytes of the current file still to send */
    char *out;           /* libarchive's output of the last step, not yet taken */
    size_t out_len, out_cap;
    char *chunk;
    time_t now;
    unsigned long long sent;
    size_t skipped;
    long long total_size; /* as the index has it */
    char errmsg[256];     /* why the archive failed */
};

/* ---- Orthanc's names ---------------------------------------------------------- */

static void strip_spaces(char *s)
{
    size_t n = strlen(s), b = 0;
    while (b < n && isspace((unsigned char)s[b]))
        b++;
    while (n > b && isspace((unsigned char)s[n - 1]))
        n--;
    memmove(s, s + b, n - b);
    s[n - b] = '\0';
}

static char *append_ascii(char *o, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 128 && !iscntrl(*p))
            *o++ = (char)*p;
    return o;
}

/* Toolbox::ConvertToAscii then StripSpaces of "a b": ASCII without control
 * characters. */
static char *ascii_stripped(const char *a, const char *b)
{
    char *out = xmalloc(strlen(a) + strlen(b) + 2);
    char *o = append_ascii(out, a);
    o = append_ascii(o, " ");
    o = append_ascii(o, b);
    *o = '\0';
    strip_spaces(out);
    return out;
}

/* HierarchicalZipWriter's KeepAlphanumeric: '^' is a space, runs of spaces are
 * one, letters, digits, '.' and '_' are kept, anything else dropped. */
static char *keep_alnum(const char *s)
{
    char *out = xmalloc(strlen(s) + 1), *o = out;
    bool last_space = false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p == '^' ? ' ' : *p;
        if (c >= 128)
            continue;
        if (isspace(c)) {
            if (!last_space)
                *o++ = ' ';
            last_space = true;
        } else if (isalnum(c) || c == '.' || c == '_') {
            *o++ = (char)c;
            last_space = false;
        }
    }
    *o = '\0';
    strip_spaces(out);
    return out;
}

/* The names used so far in one folder. */
typedef struct name_set {
    char **v;
    size_t n, cap;
} name_set;

static void name_set_clear(name_set *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    memset(ns, 0, sizeof(*ns));
}

static bool name_set_has(const name_set *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return true;
    return false;
}

/* The folder name of a resource from two of its main tags, unique in its
 * folder; ns keeps it (the result points into ns). */
static const char *folder_name(name_set *ns, const char *tag1, const char *tag2,
                               const char *unknown)
{
    char *raw = ascii_stripped(tag1 ? tag1 : "", tag2 ? tag2 : "");
    char *std = keep_alnum(*raw ? raw : unknown);
    free(raw);
    char *name = xstrdup(std);
    for (unsigned count = 2; name_set_has(ns, name); count++) {
        free(name);
        size_t n = strlen(std) + 16;
        name = xmalloc(n);
        snprintf(name, n, "%s-%u", std, count);
    }
    free(std);
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? 2 * ns->cap : 8;
        ns->v = xrealloc(ns->v, ns->cap * sizeof(*ns->v));
    }
    ns->v[ns->n++] = name;
    return name;
}

/* "CT000012.dcm": the first two letters of the modality, upper-cased, then the
 * number of the file in its series. */
static void file_name(const char *modality, unsigned counter, char *out, size_t size)
{
    size_t n = modality ? strlen(modality) : 0;
    unsigned char c0 = n ? (unsigned char)modality[0] : 0,
                  c1 = n > 1 ? (unsigned char)modality[1] : 0;
    char raw[32];
    if (n == 0)
        snprintf(raw, sizeof(raw), "%08u.dcm", counter);
    else if (n == 1)
        snprintf(raw, sizeof(raw), "%c%07u.dcm", c0 < 128 ? toupper(c0) : c0, counter);
    else
        snprintf(raw, sizeof(raw), "%c%c%06u.dcm", c0 < 128 ? toupper(c0) : c0,
                 c1 < 128 ? toupper(c1) : c1, counter);
    char *kept = keep_alnum(raw);
    snprintf(out, size, "%s", kept);
    free(kept);
}

/* ---- the list of files, from one query ------------------------------------------ */

/* Every instance under the resources with its ancestors' folder tags, in the
 * archive's order, each once; then how many of the given ids were found and
 * how many distinct ids were given. Always one row at least (of NULLs when
 * there is no instance). */
static const ts_db_stmt archive_rows = {
    "ts_archive_rows",
    "WITH RECURSIVE given AS (SELECT DISTINCT unnest($1::text[]) AS public_id),"
    " root AS (SELECT r.id, r.level FROM given g JOIN resources r ON r.public_id = g.public_id"
    "  WHERE $2::smallint < 0 OR r.level = $2::smallint),"
    " d(id, level) AS (SELECT id, level FROM root"
    "  UNION SELECT c.id, c.level FROM resources c JOIN d ON c.parent_id = d.id"
    "  WHERE d.level < 3),"
    " f AS (SELECT p.public_id AS p_id, pt.main_tags->>'PatientID' AS p1,"
    "   pt.main_tags->>'PatientName' AS p2, s.public_id AS s_id,"
    "   st.main_tags->>'AccessionNumber' AS s1, st.main_tags->>'StudyDescription' AS s2,"
    "   se.public_id AS se_id, sr.main_tags->>'Modality' AS se1,"
    "   sr.main_tags->>'SeriesDescription' AS se2, a.uuid::text AS uuid,"
    "   a.uncompressed_size AS size, i.id AS i_id"
    "  FROM d JOIN resources i ON i.id = d.id"
    "  JOIN resources se ON se.id = i.parent_id"
    "  JOIN resources s ON s.id = se.parent_id"
    "  JOIN resources p ON p.id = s.parent_id"
    "  JOIN attachments a ON a.resource_id = i.id AND a.content_type = 1"
    "  LEFT JOIN patients pt ON pt.resource_id = p.id"
    "  LEFT JOIN studies st ON st.resource_id = s.id"
    "  LEFT JOIN series sr ON sr.resource_id = se.id"
    "  WHERE d.level = 3)"
    " SELECT f.p_id, f.p1, f.p2, f.s_id, f.s1, f.s2, f.se_id, f.se1, f.se2, f.uuid, f.size,"
    "  (SELECT count(*) FROM root), (SELECT count(*) FROM given)"
    " FROM (SELECT 1) one LEFT JOIN f ON true"
    " ORDER BY f.p_id COLLATE \"C\", f.s_id COLLATE \"C\", f.se_id COLLATE \"C\", f.i_id",
    2};

enum {
    C_PID,
    C_P1,
    C_P2,
    C_SID,
    C_S1,
    C_S2,
    C_SEID,
    C_SE1,
    C_SE2,
    C_UUID,
    C_SIZE,
    C_FOUND,
    C_GIVEN
};

typedef struct arch_build {
    const char *const *params;
    bool found;
    ts_archive *s;
} arch_build;

static void stream_clear_files(ts_archive *s)
{
    for (size_t i = 0; i < s->ndirs; i++)
        free(s->dirs[i]);
    free(s->dirs);
    free(s->files);
    s->dirs = NULL;
    s->files = NULL;
    s->ndirs = s->dirs_cap = s->nfiles = s->files_cap = 0;
    s->total_size = 0;
}

static const char *col(PGresult *res, int row, int c)
{
    return PQgetisnull(res, row, c) ? NULL : PQgetvalue(res, row, c);
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static void add_dir(ts_archive *s, const char *p, const char *st, const char *se)
{
    if (s->ndirs == s->dirs_cap) {
        s->dirs_cap = s->dirs_cap ? 2 * s->dirs_cap : 16;
        s->dirs = xrealloc(s->dirs, s->dirs_cap * sizeof(*s->dirs));
    }
    size_t n = strlen(p) + strlen(st) + strlen(se) + 4;
    char *dir = xmalloc(n);
    snprintf(dir, n, "%s/%s/%s/", p, st, se);
    s->dirs[s->ndirs++] = dir;
}

static void build_list(ts_archive *s, PGresult *res)
{
    name_set patients = {0}, studies = {0}, series = {0};
    const char *pdir = "", *sdir = "";
    const char *prev_p = NULL, *prev_s = NULL, *prev_se = NULL, *modality = NULL;
    unsigned counter = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *uuid = col(res, i, C_UUID);
        if (!uuid || strlen(uuid) != TS_UUID_LEN)
            continue;
        const char *p = col(res, i, C_PID), *st = col(res, i, C_SID), *se = col(res, i, C_SEID);
        if (!same(p, prev_p)) {
            pdir = folder_name(&patients, col(res, i, C_P1), col(res, i, C_P2), "Unknown Patient");
            name_set_clear(&studies);
            prev_s = NULL;
        }
        if (!same(st, prev_s)) {
            sdir = folder_name(&studies, col(res, i, C_S1), col(res, i, C_S2), "Unknown Study");
            name_set_clear(&series);
            prev_se = NULL;
        }
        if (!same(se, prev_se)) {
            modality = col(res, i, C_SE1);
            add_dir(s, pdir, sdir,
                    folder_name(&series, modality, col(res, i, C_SE2), "Unknown Series"));
            counter = 0;
        }
        prev_p = p;
        prev_s = st;
        prev_se = se;
        if (s->nfiles == s->files_cap) {
            s->files_cap = s->files_cap ? 2 * s->files_cap : 64;
            s->files = xrealloc(s->files, s->files_cap * sizeof(*s->files));
        }
        arch_file *f = &s->files[s->nfiles++];
        f->dir = s->ndirs - 1;
        file_name(modality, counter++, f->name, sizeof(f->name));
        memcpy(f->uuid, uuid, TS_UUID_LEN + 1);
        f->size = strtoll(PQgetvalue(res, i, C_SIZE), NULL, 10);
        s->total_size += f->size;
    }
    name_set_clear(&patients);
    name_set_clear(&studies);
    name_set_clear(&series);
}

static int archive_rows_txn(ts_db *db, void *arg, ts_err *err)
{
    arch_build *b = arg;
    stream_clear_files(b->s); /* a replay starts again */
    PGresult *res;
    int rc = ts_db_exec(db, &archive_rows, b->params, &res, err);
    if (rc)
        return rc;
    b->found =
        PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, C_FOUND), PQgetvalue(res, 0, C_GIVEN)) == 0;
    build_list(b->s, res);
    PQclear(res);
    return 0;
}

/* ---- the stream ------------------------------------------------------------------ */

static la_ssize_t zip_write(struct archive *a, void *cls, const void *buf, size_t len)
{
    ts_archive *s = cls;
    (void)a;
    if (s->out_len + len > s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap : ARCHIVE_CHUNK + 4096;
        while (cap < s->out_len + len)
            cap *= 2;
        s->out = xrealloc(s->out, cap);
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, buf, len);
    s->out_len += len;
    return (la_ssize_t)len;
}

static int stream_fail(ts_archive *s, const char *what, const char *detail)
{
    ts_warn("archive aborted", "id=%s step=\"%s\" error=\"%s\" files_sent=%zu", s->id, what,
            detail ? detail : "", s->next);
    /* bounded pieces: the whole fits errmsg (the log line above has it all) */
    snprintf(s->errmsg, sizeof(s->errmsg), "archive %.64s: %.32s: %.140s", s->id, what,
             detail ? detail : "");
    s->failed = true;
    return -1;
}

/* Starts the next file's entry, or ends the archive after the last one. */
static int start_next_file(ts_archive *s)
{
    while (s->next < s->nfiles) {
        arch_file *f = &s->files[s->next];
        char path[4096];
        ts_err err;
        if (ts_store_path(s->store, f->uuid, path, sizeof(path), &err))
            return stream_fail(s, "path", err.msg);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            /* deleted since the query: the archive shows the index after the delete */
            ts_warn("archive: file gone", "id=%s uuid=%s", s->id, f->uuid);
            s->skipped++;
            s->next++;
            continue;
        }
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return stream_fail(s, "open", strerror(e));
        }
        if (st.st_size != f->size) {
            /* a damaged storage area: better no archive than a wrong one */
            char detail[128];
            snprintf(detail, sizeof(detail), "%s has %lld bytes, the index says %lld", f->uuid,
                     (long long)st.st_size, f->size);
            close(fd);
            return stream_fail(s, "size", detail);
        }
        const char *dir = s->dirs[f->dir];
        size_t n = strlen(dir) + strlen(f->name) + 1;
        char *name = xmalloc(n);
        snprintf(name, n, "%s%s", dir, f->name);
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, st.st_size);
        archive_entry_set_mtime(e, s->now, 0);
        int rc = archive_write_header(s->a, e);
        archive_entry_free(e);
        free(name);
        if (rc != ARCHIVE_OK) {
            close(fd);
            return stream_fail(s, "zip header", archive_error_string(s->a));
        }
        s->fd = fd;
        s->remaining = st.st_size;
        return 0;
    }
    if (archive_write_close(s->a) != ARCHIVE_OK)
        return stream_fail(s, "zip close", archive_error_string(s->a));
    s->done = true;
    ts_info("archive written", "id=%s files=%zu skipped=%zu bytes=%llu", s->id,
            s->nfiles - s->skipped, s->skipped, s->sent + s->out_len);
    return 0;
}

/* One step: the next entry's header, the next chunk of the current file, or
 * the end of the archive. Its output is in s->out. */
static int step(ts_archive *s)
{
    if (!s->opened) {
        if (archive_write_open(s->a, s, NULL, zip_write, NULL) != ARCHIVE_OK)
            return stream_fail(s, "zip open", archive_error_string(s->a));
        s->opened = true;
    }
    if (s->fd < 0)
        return start_next_file(s);
    if (s->remaining > 0) {
        size_t want = s->remaining < ARCHIVE_CHUNK ? (size_t)s->remaining : ARCHIVE_CHUNK;
        ssize_t n;
        do
            n = read(s->fd, s->chunk, want);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return stream_fail(s, "read", n < 0 ? strerror(errno) : "file shorter than its size");
        if (archive_write_data(s->a, s->chunk, (size_t)n) != n)
            return stream_fail(s, "zip data", archive_error_string(s->a));
        s->remaining -= n;
    }
    if (s->remaining == 0) {
        if (archive_write_finish_entry(s->a) != ARCHIVE_OK)
            return stream_fail(s, "zip entry", archive_error_string(s->a));
        close(s->fd);
        s->fd = -1;
        s->next++;
    }
    return 0;
}

/* ---- the API ---------------------------------------------------------------------- */

/* A text[] literal of the ids, each quoted. */
static char *array_literal(const char *const *ids, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += 2 * strlen(ids[i]) + 3;
    char *out = xmalloc(len), *o = out;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        *o++ = '"';
        for (const char *p = ids[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                *o++ = '\\';
            *o++ = *p;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

int ts_archive_new(ts_db_pool *db, ts_store *store, const char *const *ids, size_t n, int level,
                   const char *log_id, ts_archive **out, ts_err *err)
{
    ts_archive *s = xcalloc(1, sizeof(*s));
    s->fd = -1;
    s->store = store;
    s->done = true; /* nothing to report if it never starts */
    snprintf(s->id, sizeof(s->id), "%s", log_id);
    char lv[16];
    snprintf(lv, sizeof(lv), "%d", level);
    char *array = array_literal(ids, n);
    const char *params[] = {array, lv};
    arch_build b = {.params = params, .s = s};
    int rc = ts_db_transaction(db, TS_DB_READ, archive_rows_txn, &b, err);
    free(array);
    if (rc)
        goto fail;
    if (!b.found) {
        rc = ts_err_set(err, TS_ENOTFOUND, "unknown resource in archive %s", log_id);
        goto fail;
    }
    s->a = archive_write_new();
    if (!s->a)
        abort();
    if (archive_write_set_format_zip(s->a) != ARCHIVE_OK ||
        archive_write_zip_set_compression_store(s->a) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(s->a, 0) != ARCHIVE_OK) {
        rc = ts_err_set(err, TS_EIO, "libarchive: %s", archive_error_string(s->a));
        goto fail;
    }
    s->chunk = xmalloc(ARCHIVE_CHUNK);
    s->now = time(NULL);
    s->done = false;
    *out = s;
    return 0;
fail:
    ts_archive_free(s);
    return rc;
}

size_t ts_archive_instances(const ts_archive *a)
{
    return a->nfiles;
}

long long ts_archive_uncompressed_size(const ts_archive *a)
{
    return a->total_size;
}

size_t ts_archive_files_done(const ts_archive *a)
{
    return a->next;
}

long long ts_archive_bytes_out(const ts_archive *a)
{
    return (long long)(a->sent + a->out_len);
}

int ts_archive_next(ts_archive *s, const void **data, size_t *len, ts_err *err)
{
    s->sent += s->out_len;
    s->out_len = 0;
    while (s->out_len == 0) {
        if (s->failed)
            return ts_err_set(err, TS_EIO, "%s", s->errmsg);
        if (s->done)
            return 0;
        if (step(s))
            return ts_err_set(err, TS_EIO, "%s", s->errmsg);
    }
    *data = s->out;
    *len = s->out_len;
    return 1;
}

void ts_archive_free(ts_archive *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->a) {
        /* Closing an unfinished archive writes its end into s->out, which nobody
         * reads any more; archive_write_fail() would be cheaper but makes
         * libarchive 3.6 leak its output filter. */
        if (s->opened && !s->done)
            archive_write_close(s->a);
        archive_write_free(s->a);
    }
    if (!s->done && !s->failed)
        ts_warn("archive not completed", "id=%s files_written=%zu", s->id, s->next);
    stream_clear_files(s);
    free(s->out);
    free(s->chunk);
    free(s);
}

int ts_archive_job_path(const ts_store *st, const char *job_id, const char *suffix, char *path,
                        size_t size, ts_err *err)
{
    size_t n = strlen(job_id);
    if (n == 0 || n > 64 || strspn(job_id, "0123456789abcdef-") != n)
        return ts_err_set(err, TS_EINVAL, "bad job id: %.64s", job_id);
    int w = snprintf(path, size, "%s/" TS_ARCHIVE_JOBS_DIR, ts_store_root(st));
    if (w < 0 || (size_t)w >= size)
        return ts_err_set(err, TS_EINVAL, "path too long: %s", ts_store_root(st));
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return ts_err_set(err, TS_EIO, "mkdir %s: %s", path, strerror(errno));
    w = snprintf(path, size, "%s/" TS_ARCHIVE_JOBS_DIR "/%s.zip%s%s%s", ts_store_root(st), job_id,
                 suffix ? "." : "", suffix ? suffix : "", suffix ? ".part" : "");
    if (w < 0 || (size_t)w >= size)
        return ts_err_set(err, TS_EINVAL, "path too long: %s", ts_store_root(st));
    return 0;
}
