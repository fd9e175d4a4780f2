#include "ingest_commit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "domain/store_index.h"

static const ts_db_stmt store_instance = {
    "ingest_store_instance",
    "SELECT status, old_uuid, changes FROM "
    "tessera_store_instance($1::text[], $2::jsonb, $3::jsonb, $4::jsonb, $5::boolean, $6::json)",
    6};

/* The same for several instances in one statement (one round trip, one
 * parse of the call instead of one per instance): tessera_store_instance runs
 * once per row, in the batch's order; each call sees what the earlier ones
 * wrote (a volatile function's statements take new snapshots). The values go
 * as text arrays, cast per element as the single statement casts them. */
static const ts_db_stmt store_instances = {
    "ingest_store_instances",
    "SELECT r.status, r.old_uuid, r.changes "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[]) "
    "WITH ORDINALITY AS j(ids, tags, instance, meta, overwrite, dicomweb, ord), "
    "LATERAL tessera_store_instance(j.ids::text[], j.tags::jsonb, j.instance::jsonb, "
    "j.meta::jsonb, j.overwrite, j.dicomweb::json) r "
    "ORDER BY j.ord",
    6};

struct ingest_commit {
    ts_db_pool *pool;
    ts_store *store;
    int max_batch;
    int nthreads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t queued;   /* a job was queued, or stopping */
    pthread_cond_t synced;   /* a job's fsync finished */
    ingest_job *head, *tail; /* FIFO */
    bool stopping;
    ts_metric *m_batch;
};

typedef struct batch {
    ingest_commit *c;
    ingest_job **jobs;
    int n;
} batch;

/* One transaction for the batch: each job's statement (it takes the file's
 * lock, then the intent is checked under it, lib/domain/store_index.h), then the
 * wait for every job's fsync; ts_db_transaction commits after. May run again
 * (replays): every result is overwritten. */
/* A PostgreSQL array literal of the batch's parameter k: each value quoted
 * (backslash before " and \), NULL for a NULL. */
static char *array_literal(ingest_job **jobs, int n, int k)
{
    size_t size = 3;
    for (int i = 0; i < n; i++) {
        const char *v = jobs[i]->params[k];
        size += v ? 2 * strlen(v) + 3 : 5;
    }
    char *out = xmalloc(size);
    char *p = out;
    *p++ = '{';
    for (int i = 0; i < n; i++) {
        const char *v = jobs[i]->params[k];
        if (i)
            *p++ = ',';
        if (!v) {
            memcpy(p, "NULL", 4);
            p += 4;
            continue;
        }
        *p++ = '"';
        for (; *v; v++) {
            if (*v == '"' || *v == '\\')
                *p++ = '\\';
            *p++ = *v;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* Runs the batch's statements: one call for one instance, one statement for
 * several. Each row of *res is its job's result, in order. */
static int store_batch(ts_db *db, batch *b, PGresult **res, ts_err *err)
{
    if (b->n == 1)
        return ts_db_exec(db, &store_instance, b->jobs[0]->params, res, err);
    char *arrays[6];
    for (int k = 0; k < 6; k++)
        arrays[k] = array_literal(b->jobs, b->n, k);
    int rc = ts_db_exec(db, &store_instances, (const char *const *)arrays, res, err);
    for (int k = 0; k < 6; k++)
        free(arrays[k]);
    int rows = rc == 0 ? PQntuples(*res) : b->n;
    if (rows != b->n) {
        PQclear(*res);
        *res = NULL;
        rc = ts_err_set(err, TS_EIO, "the batch's statement gave %d rows for %d instances", rows,
                        b->n);
    }
    return rc;
}

static int batch_txn(ts_db *db, void *arg, ts_err *err)
{
    batch *b = arg;
    PGresult *res;
    int rc = store_batch(db, b, &res, err);
    if (rc)
        return rc;
    for (int i = 0; i < b->n; i++) {
        ingest_job *job = b->jobs[i];
        /* under the file's lock, which the statement took */
        rc = ts_store_check_intent(b->c->store, job->uuid, err);
        if (rc) {
            PQclear(res);
            return rc;
        }
        snprintf(job->status, sizeof(job->status), "%s", PQgetvalue(res, i, 0));
        snprintf(job->old_uuid, sizeof(job->old_uuid), "%s",
                 PQgetisnull(res, i, 1) ? "" : PQgetvalue(res, i, 1));
        free(job->changes);
        job->changes = xstrdup(PQgetvalue(res, i, 2));
    }
    PQclear(res);
    /* The files' directories, while their writers fsync the files: once each
     * (files placed one after the other share one, lib/io/store.h). */
    for (int i = 0; i < b->n; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = memcmp(b->jobs[j]->uuid, b->jobs[i]->uuid, 4) == 0;
        if (!seen) {
            int rc = ts_store_sync_dir(b->c->store, b->jobs[i]->uuid, err);
            if (rc)
                return rc;
        }
    }
    /* nothing commits before its files are on disk */
    const char *failed = NULL;
    pthread_mutex_lock(&b->c->mu);
    for (int i = 0; i < b->n; i++) {
        while (b->jobs[i]->sync_state == 0)
            pthread_cond_wait(&b->c->synced, &b->c->mu);
        if (b->jobs[i]->sync_state < 0)
            failed = b->jobs[i]->uuid;
    }
    pthread_mutex_unlock(&b->c->mu);
    if (failed)
        return ts_err_set(err, TS_EIO, "the file %s could not be synced", failed);
    return 0;
}

static void run_batch(ingest_commit *c, ingest_job **jobs, int n)
{
    batch b = {c, jobs, n};
    ts_err err;
    ts_err_clear(&err);
    int rc = ts_db_transaction(c->pool, TS_DB_WRITE, batch_txn, &b, &err);
    if (rc && n > 1 && rc != TS_EDB_INDOUBT && rc != TS_EDB_BUSY) {
        /* one job's failure (a bad value, a failed fsync, a reclaimed file)
         * must not fail the others: each on its own */
        ts_debug("group commit failed, replayed one by one", "instances=%d error=\"%s\"", n,
                 err.msg);
        for (int i = 0; i < n; i++)
            run_batch(c, &jobs[i], 1);
        return;
    }
    if (rc == 0)
        ts_metric_observe(c->m_batch, n);
    for (int i = 0; i < n; i++) {
        jobs[i]->rc = rc;
        jobs[i]->sync_failed = jobs[i]->sync_state < 0;
        if (rc)
            jobs[i]->err = err;
    }
}

static void *committer_main(void *arg)
{
    ingest_commit *c = arg;
    ingest_job **jobs = xcalloc((size_t)c->max_batch, sizeof(*jobs));
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->stopping)
            pthread_cond_wait(&c->queued, &c->mu);
        if (!c->head)
            break;
        int n = 0;
        while (c->head && n < c->max_batch) {
            jobs[n++] = c->head;
            c->head = c->head->next;
        }
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->mu);
        run_batch(c, jobs, n);
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < n; i++) {
            jobs[i]->done = true;
            pthread_cond_signal(&jobs[i]->cond);
        }
    }
    pthread_mutex_unlock(&c->mu);
    free(jobs);
    return NULL;
}

int ingest_commit_start(ts_db_pool *pool, ts_store *st, int threads, int max_batch,
                        ingest_commit **out, ts_err *err)
{
    ingest_commit *c = xcalloc(1, sizeof(*c));
    c->pool = pool;
    c->store = st;
    c->max_batch = max_batch < 1 ? 1 : max_batch;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->queued, NULL);
    pthread_cond_init(&c->synced, NULL);
    static const double bounds[] = {1, 2, 4, 8, 16, 32, 64};
    c->m_batch = ts_metrics_histogram("tessera_ingest_commit_instances", NULL,
                                      "instances indexed per transaction (group commit)", bounds,
                                      sizeof(bounds) / sizeof(bounds[0]));
    c->threads = xcalloc((size_t)threads, sizeof(*c->threads));
    for (int i = 0; i < threads; i++) {
        int e = pthread_create(&c->threads[i], NULL, committer_main, c);
        if (e) {
            ingest_commit_stop(c);
            return ts_err_set(err, TS_EIO, "cannot start a committer thread: %s", strerror(e));
        }
        c->nthreads++;
    }
    *out = c;
    return 0;
}

void ingest_commit_stop(ingest_commit *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->queued);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    free(c->threads);
    pthread_cond_destroy(&c->synced);
    pthread_cond_destroy(&c->queued);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void ingest_commit_submit(ingest_commit *c, ingest_job *job)
{
    job->rc = 0;
    ts_err_clear(&job->err);
    job->sync_failed = false;
    job->status[0] = job->old_uuid[0] = '\0';
    job->changes = NULL;
    job->sync_state = 0;
    job->done = false;
    job->next = NULL;
    pthread_cond_init(&job->cond, NULL);
    pthread_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = job;
    else
        c->head = job;
    c->tail = job;
    pthread_cond_signal(&c->queued);
    pthread_mutex_unlock(&c->mu);
}

void ingest_commit_synced(ingest_commit *c, ingest_job *job, bool ok)
{
    pthread_mutex_lock(&c->mu);
    job->sync_state = ok ? 1 : -1;
    pthread_cond_broadcast(&c->synced);
    pthread_mutex_unlock(&c->mu);
}

void ingest_commit_wait(ingest_commit *c, ingest_job *job)
{
    pthread_mutex_lock(&c->mu);
    while (!job->done)
        pthread_cond_wait(&job->cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&job->cond);
}
