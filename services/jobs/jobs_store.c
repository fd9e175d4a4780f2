/* DicomModalityStore (see jobs_store.h). Instances go in chunks, one
 * association per chunk; the chunk grows while a chunk takes less than a
 * quarter of a second and shrinks past a second, so that a pause or cancel
 * is seen about once a second whatever the peer's speed. After each chunk the
 * instances the peer confirmed are added to the job's done set and the
 * progress is recorded: a worker killed in the middle of a chunk costs the
 * resending of that chunk only (duplicates, never losses). */
#include "jobs_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "dicom.h"
#include "ids.h"
#include "log.h"

#define CHUNK_MIN 1
#define CHUNK_MAX 512

/* Orthanc's ErrorCode values used here */
#define ERR_NETWORK 9
#define ERR_UNKNOWN_RESOURCE 17
#define ERR_BAD_FORMAT 15

static const ts_db_stmt instance_files = {
    "jobs_instance_files",
    "SELECT r.public_id, a.uuid::text FROM resources r"
    " JOIN attachments a ON a.resource_id = r.id AND a.content_type = 1"
    " WHERE r.level = 3 AND r.public_id = ANY ($1::text[])",
    1};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

static bool status_ok(uint16_t s)
{
    /* success, and the warnings of PS3.4 B.2.3 (coercion, elements discarded,
     * data set does not match the SOP class) */
    return s == 0x0000 || s == 0xB000 || s == 0xB006 || s == 0xB007;
}

void jobs_store_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    json_t *instances = json_object_get(c->input, "Instances");
    const char *aet = json_string_value(json_object_get(c->input, "AET"));
    const char *host = json_string_value(json_object_get(c->input, "Host"));
    int port = (int)json_integer_value(json_object_get(c->input, "Port"));
    const char *local = json_string_value(json_object_get(c->input, "LocalAet"));
    int timeout = (int)json_integer_value(json_object_get(c->input, "Timeout"));
    /* Orthanc's Permissive: an instance that cannot be sent is counted in
     * FailedInstancesCount and the job goes on (a later resubmit tries again) */
    bool permissive = json_is_true(json_object_get(c->input, "Permissive"));
    size_t failed = 0;
    done_arg d = {c, NULL};
    const char **todo = NULL;
    const char **sent = NULL;
    char **paths = NULL;
    uint16_t *statuses = NULL;
    files_q q = {0};

    memset(out, 0, sizeof(*out));
    if (!json_is_array(instances) || !aet || !host || port <= 0) {
        jobs_fail(out, ERR_BAD_FORMAT, "Bad file format", "malformed job input");
        goto out;
    }
    ts_dicom_peer peer = {.our_aet = local && *local ? local : w->svc->our_aet,
                          .aet = aet,
                          .host = host,
                          .port = port,
                          .timeout_s = timeout > 0 ? timeout : w->svc->dicom_timeout_s};

    if (!jobs_retry_redis(w, do_done_items, &d)) {
        out->interrupted = true;
        goto out;
    }
    size_t total = json_array_size(instances), ntodo = 0, ndone = 0;
    todo = calloc(total + 1, sizeof(*todo));
    sent = calloc(CHUNK_MAX, sizeof(*sent));
    paths = calloc(CHUNK_MAX, sizeof(*paths));
    statuses = calloc(CHUNK_MAX, sizeof(*statuses));
    q.uuids = calloc(CHUNK_MAX, sizeof(*q.uuids));
    if (!todo || !sent || !paths || !statuses || !q.uuids)
        abort();
    size_t i;
    json_t *v;
    json_array_foreach(instances, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !ts_id_is_valid(id)) {
            jobs_fail(out, ERR_BAD_FORMAT, "Bad file format", "malformed instance id in job input");
            goto out;
        }
        if (json_object_get(d.done, id))
            ndone++;
        else
            todo[ntodo++] = id;
    }
    if (c->taken_over || ndone)
        ts_info("store job resumed", "job=%s confirmed=%zu remaining=%zu taken_over=%d", c->id,
                ndone, ntodo, c->taken_over);

    json_object_set_new(c->content, "FailedInstancesCount", json_integer(0));
    size_t chunk = CHUNK_MIN;
    for (size_t pos = 0; pos < ntodo;) {
        if (jobs_worker_interrupted(w)) {
            out->interrupted = true;
            goto out;
        }
        size_t n = ntodo - pos < chunk ? ntodo - pos : chunk;
        q.ids = todo + pos;
        q.n = n;
        ts_err err;
        int rc = ts_db_transaction(w->svc->db, TS_DB_READ, files_txn, &q, &err);
        if (rc) {
            /* the database is unreachable: let another attempt (resubmit) do it */
            jobs_fail(out, 11, "The database is currently not available", err.msg);
            goto out;
        }
        /* ids[] and paths[] of the instances still stored, in step */
        const char *ids[CHUNK_MAX];
        size_t m_ok = 0;
        for (size_t k = 0; k < n; k++) {
            char path[4096];
            if (!q.uuids[k] || ts_store_path(w->svc->store, q.uuids[k], path, sizeof(path), &err)) {
                if (permissive) {
                    failed++;
                    continue;
                }
                char details[160];
                snprintf(details, sizeof(details), "instance %s is no longer stored", q.ids[k]);
                jobs_fail(out, ERR_UNKNOWN_RESOURCE, "Unknown resource", details);
                goto out;
            }
            free(paths[m_ok]);
            paths[m_ok] = strdup(path);
            ids[m_ok++] = q.ids[k];
        }
        double t0 = now_s();
        rc = m_ok ? ts_dicom_store_files(&peer, (const char *const *)paths, m_ok, statuses, &err)
                  : 0;
        double elapsed = now_s() - t0;
        if (rc && !permissive) {
            jobs_fail(out, ERR_NETWORK, "Error in the network protocol", err.msg);
            goto out;
        }
        if (rc) {
            ts_warn("instances not sent (permissive job goes on)", "job=%s count=%zu error=\"%s\"",
                    c->id, m_ok, err.msg);
            failed += m_ok;
            m_ok = 0;
        }
        size_t nsent = 0;
        for (size_t k = 0; k < m_ok; k++) {
            if (!status_ok(statuses[k]) && permissive) {
                failed++;
                continue;
            }
            if (!status_ok(statuses[k])) {
                char details[256];
                if (statuses[k] == 0xFFFF)
                    snprintf(details, sizeof(details),
                             "C-STORE of instance %s to %s: not sent (the peer refused its SOP "
                             "class or transfer syntax, or the file is unreadable)",
                             ids[k], aet);
                else
                    snprintf(details, sizeof(details),
                             "C-STORE of instance %s to %s: the peer answered status 0x%04x",
                             ids[k], aet, statuses[k]);
                /* what was confirmed before the refusal is kept */
                mark_arg m = {c, sent, nsent, (int)((ndone + nsent) * 100 / total)};
                jobs_retry_redis(w, do_mark, &m);
                jobs_fail(out, ERR_NETWORK, "Error in the network protocol", details);
                goto out;
            }
            sent[nsent++] = ids[k];
        }
        ndone += nsent;
        ts_metric_add(w->svc->m_sent, (double)nsent);
        json_object_set_new(c->content, "FailedInstancesCount", json_integer((json_int_t)failed));
        mark_arg m = {c, sent, nsent, (int)((ndone + failed) * 100 / total)};
        if (!jobs_retry_redis(w, do_mark, &m)) {
            out->interrupted = true;
            goto out;
        }
        pos += n;
        if (elapsed < 0.25 && chunk < CHUNK_MAX)
            chunk *= 2;
        else if (elapsed > 1.0 && chunk > CHUNK_MIN)
            chunk /= 2;
    }
out:
    if (paths)
        for (size_t k = 0; k < CHUNK_MAX; k++)
            free(paths[k]);
    if (q.uuids)
        for (size_t k = 0; k < CHUNK_MAX; k++)
            free(q.uuids[k]);
    free(q.uuids);
    free(paths);
    free(statuses);
    free(sent);
    free(todo);
    json_decref(d.done);
}
