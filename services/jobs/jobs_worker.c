/* The helpers every job runner shares (see jobs_worker.h). */
#include "jobs_worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

static const ts_db_stmt instance_files = {
    "jobs_instance_files",
    "SELECT r.public_id, a.uuid::text FROM resources r"
    " JOIN attachments a ON a.resource_id = r.id AND a.content_type = 1"
    " WHERE r.level = 3 AND r.public_id = ANY ($1::text[])",
    1};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool jobs_worker_interrupted(jobs_worker *w)
{
    return atomic_load(&w->stop_job) || atomic_load(&w->svc->stopping);
}

void jobs_fail(jobs_outcome *out, ts_oe code, const char *details)
{
    const char *description = ts_oe_description(code);
    out->code = (int)code;
    snprintf(out->description, sizeof(out->description), "%.*s", (int)sizeof(out->description) - 1,
             description);
    snprintf(out->details, sizeof(out->details), "%.*s", (int)sizeof(out->details) - 1, details);
}

bool jobs_retry_redis(jobs_worker *w, int (*fn)(jobs_worker *w, void *arg, ts_err *err), void *arg)
{
    int waited = 0;
    for (;;) {
        ts_err err;
        if (fn(w, arg, &err) == 0)
            return true;
        if (waited > 2 * w->svc->lease_ms || atomic_load(&w->svc->stopping)) {
            ts_error("redis unreachable, job left to be taken over", "error=\"%s\"", err.msg);
            return false;
        }
        ts_warn("redis call failed, retrying", "error=\"%s\"", err.msg);
        sleep_ms(250);
        waited += 250;
    }
}

typedef struct files_q {
    const char *const *ids;
    size_t n;
    char **uuids; /* out: per id, NULL when the instance is gone */
} files_q;

static int files_txn(ts_db *db, void *arg, ts_err *err)
{
    files_q *q = arg;
    /* ids have the shape of public ids (checked): safe inside an array literal */
    size_t len = 3;
    for (size_t i = 0; i < q->n; i++)
        len += strlen(q->ids[i]) + 1;
    char *array = malloc(len);
    if (!array)
        abort();
    size_t off = 0;
    array[off++] = '{';
    for (size_t i = 0; i < q->n; i++)
        off += (size_t)sprintf(array + off, "%s%s", i ? "," : "", q->ids[i]);
    array[off++] = '}';
    array[off] = '\0';
    const char *params[] = {array};
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &instance_files, params, &res, err);
    free(array);
    if (rc)
        return rc;
    for (size_t i = 0; i < q->n; i++) {
        free(q->uuids[i]);
        q->uuids[i] = NULL;
    }
    for (int row = 0; row < PQntuples(res); row++)
        for (size_t i = 0; i < q->n; i++)
            if (!q->uuids[i] && strcmp(PQgetvalue(res, row, 0), q->ids[i]) == 0)
                q->uuids[i] = strdup(PQgetvalue(res, row, 1));
    PQclear(res);
    return 0;
}

int jobs_instance_files(jobs_worker *w, const char *const *ids, size_t n, char **uuids, ts_err *err)
{
    files_q q = {ids, n, uuids};
    return ts_db_transaction(w->svc->db, TS_DB_READ, files_txn, &q, err);
}

typedef struct mark_arg {
    ts_job_claim *c;
    const char *const *items;
    size_t n;
    int progress;
} mark_arg;

static int do_mark(jobs_worker *w, void *arg, ts_err *err)
{
    mark_arg *m = arg;
    int rc = ts_jobs_mark_done(w->redis, m->c, m->items, m->n, err);
    if (rc == 0)
        rc = ts_jobs_progress(w->redis, m->c, m->progress, m->c->content, err);
    return rc;
}

bool jobs_record(jobs_worker *w, ts_job_claim *c, const char *const *items, size_t n, int progress)
{
    mark_arg m = {c, items, n, progress};
    return jobs_retry_redis(w, do_mark, &m);
}

typedef struct done_arg {
    ts_job_claim *c;
    json_t *done;
} done_arg;

static int do_done_items(jobs_worker *w, void *arg, ts_err *err)
{
    done_arg *d = arg;
    return ts_jobs_done_items(w->redis, d->c, &d->done, err);
}

json_t *jobs_done_items(jobs_worker *w, ts_job_claim *c)
{
    done_arg d = {c, NULL};
    return jobs_retry_redis(w, do_done_items, &d) ? d.done : NULL;
}
