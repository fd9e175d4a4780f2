/* The Archive job (see jobs_archive.h). */
#include "jobs_archive.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "domain/archives.h"
#include "base/config.h"
#include "base/log.h"

#define MEGA (1024LL * 1024LL)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Orthanc's Content of an Archive job. */
static void set_content(ts_job_claim *c, const ts_archive *a, long long archive_size)
{
    char text[32];
    json_t *o = json_object();
    if (archive_size >= 0) {
        snprintf(text, sizeof(text), "%lld", archive_size);
        json_object_set_new(o, "ArchiveSize", json_string(text));
        json_object_set_new(o, "ArchiveSizeMB", json_integer(archive_size / MEGA));
    }
    json_object_set_new(o, "Description", json_string("REST API"));
    json_object_set_new(o, "InstancesCount", json_integer((json_int_t)ts_archive_instances(a)));
    long long size = ts_archive_uncompressed_size(a);
    snprintf(text, sizeof(text), "%lld", size);
    json_object_set_new(o, "UncompressedSize", json_string(text));
    json_object_set_new(o, "UncompressedSizeMB", json_integer(size / MEGA));
    json_decref(c->content);
    c->content = o;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

void jobs_archive_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    const json_t *list = json_object_get(c->input, "Resources");
    int level = (int)json_integer_value(json_object_get(c->input, "Level"));
    size_t n = json_array_size(list);
    const char **ids = calloc(n + 1, sizeof(*ids));
    if (!ids)
        abort();
    for (size_t i = 0; i < n; i++)
        ids[i] = json_string_value(json_array_get(list, i));
    ts_archive *a = NULL;
    char part[4096] = "", final[4096];
    int fd = -1;
    ts_err err;
    int rc = ts_archive_new(w->svc->db, w->svc->store, ids, n, level, c->id, &a, &err);
    if (rc == TS_ENOTFOUND) {
        /* deleted since the job was submitted */
        jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, err.msg);
        goto done;
    }
    if (rc) {
        jobs_fail(out, rc == TS_EDB_BUSY ? TS_OE_DATABASE_UNAVAILABLE : TS_OE_INTERNAL_ERROR,
                  err.msg);
        goto done;
    }
    /* a part of its own per worker: a worker that lost its lease but still
     * writes never mixes its bytes with those of the one that took over */
    if (ts_archive_job_path(w->svc->store, c->id, w->consumer, part, sizeof(part), &err) ||
        ts_archive_job_path(w->svc->store, c->id, NULL, final, sizeof(final), &err)) {
        part[0] = '\0';
        jobs_fail(out, TS_OE_CANNOT_WRITE_FILE, err.msg);
        goto done;
    }
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        char details[4200];
        snprintf(details, sizeof(details), "open %s: %s", part, strerror(errno));
        jobs_fail(out, TS_OE_CANNOT_WRITE_FILE, details);
        goto done;
    }
    set_content(c, a, 0);
    long long max_rate = w->svc->archive_max_rate; /* bytes per second, 0: no limit */
    double started = now_s(), last_report = started;
    long long written = 0;
    for (;;) {
        if (jobs_worker_interrupted(w)) {
            out->interrupted = true;
            goto done;
        }
        const void *data;
        size_t len;
        rc = ts_archive_next(a, &data, &len, &err);
        if (rc < 0) {
            jobs_fail(out, TS_OE_INTERNAL_ERROR, err.msg);
            goto done;
        }
        if (rc == 0)
            break;
        if (!write_all(fd, data, len)) {
            char details[4200];
            snprintf(details, sizeof(details), "write %s: %s", part, strerror(errno));
            jobs_fail(out, TS_OE_CANNOT_WRITE_FILE, details);
            goto done;
        }
        written += (long long)len;
        /* ahead of the rate: wait, a tenth of a second at a time so that a
         * cancel is heard */
        while (max_rate > 0 && !jobs_worker_interrupted(w)) {
            double ahead = (double)written / (double)max_rate - (now_s() - started);
            if (ahead <= 0)
                break;
            struct timespec ts = {0, (long)((ahead < 0.1 ? ahead : 0.1) * 1e9)};
            nanosleep(&ts, NULL);
        }
        if (now_s() - last_report >= 0.5) {
            last_report = now_s();
            size_t total = ts_archive_instances(a);
            int progress = total ? (int)(ts_archive_files_done(a) * 100 / total) : 0;
            set_content(c, a, written);
            jobs_record(w, c, NULL, 0, progress > 99 ? 99 : progress);
        }
    }
    /* closed whatever fsync says; close can report a deferred write error too */
    const char *failed_op = fsync(fd) != 0 ? "fsync" : NULL;
    int saved_errno = errno;
    if (close(fd) != 0 && !failed_op) {
        failed_op = "close";
        saved_errno = errno;
    }
    fd = -1;
    if (failed_op) {
        char details[4200];
        snprintf(details, sizeof(details), "%s %s: %s", failed_op, part, strerror(saved_errno));
        jobs_fail(out, TS_OE_CANNOT_WRITE_FILE, details);
        goto done;
    }
    if (rename(part, final) != 0) {
        char details[8400];
        snprintf(details, sizeof(details), "rename %s to %s: %s", part, final, strerror(errno));
        jobs_fail(out, TS_OE_CANNOT_WRITE_FILE, details);
        goto done;
    }
    part[0] = '\0';
    set_content(c, a, written);
    ts_info("archive job written", "job=%s instances=%zu bytes=%lld", c->id,
            ts_archive_instances(a), written);
done:
    if (fd >= 0)
        close(fd);
    /* canceled, paused, failed or taken over: no partial output stays behind
     * (a resumed or resubmitted job writes the archive again) */
    if (part[0])
        unlink(part);
    ts_archive_free(a);
    free(ids);
}

/* ---- the outputs' folder ------------------------------------------------------ */

void jobs_archive_sweep(jobs_service *svc, ts_jobs *redis)
{
    char dir[4096];
    ts_err err;
    if (ts_archive_job_path(svc->store, "0", NULL, dir, sizeof(dir), &err))
        return;
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    time_t now = time(NULL);
    int removed = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char id[TS_JOB_ID_LEN + 1];
        size_t n = strcspn(e->d_name, ".");
        if (n != TS_JOB_ID_LEN)
            continue;
        memcpy(id, e->d_name, n);
        id[n] = '\0';
        bool part = strstr(e->d_name, ".part") != NULL;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        char state[32];
        int rc = ts_jobs_state(redis, id, state, sizeof(state), &err);
        if (rc && rc != TS_ENOTFOUND)
            break; /* Redis away: next time */
        bool keep;
        if (rc == TS_ENOTFOUND)
            /* the job left the history; a job being submitted has no file yet */
            keep = false;
        else if (part)
            /* a worker killed while writing leaves its part: the one that takes
             * over writes its own */
            keep = (strcmp(state, "Running") == 0 || strcmp(state, "Pending") == 0) &&
                   now - st.st_mtime < 2 * svc->lease_ms / 1000 + 60;
        else
            /* a worker renames its ZIP just before it records Success */
            keep = strcmp(state, "Success") == 0 || now - st.st_mtime < 10;
        if (!keep && unlink(path) == 0)
            removed++;
    }
    closedir(d);
    if (removed)
        ts_info("job outputs removed", "count=%d", removed);
}
