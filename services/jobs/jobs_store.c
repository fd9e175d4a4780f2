/* DicomModalityStore (see jobs_store.h). Instances go in chunks of up to
 * CHUNK_MAX, one association per chunk. A pause or cancel is seen after the
 * instance being sent (the association is released there) and what the peer
 * confirmed is recorded each second from inside the chunk, so a chunk need
 * not be small: an unchanged send goes in whole chunks from the start (a routed
 * backlog's job of up to 1,024 instances is one association, as storescu's). A
 * modified send (a route's Anonymize/Modify) keeps a chunk's temporary copies
 * on disk until its end, so it starts at CHUNK_FIRST and grows (up to
 * CHUNK_MAX_MODIFIED) while a chunk takes less than a quarter of a second (shrinks past a second).
 * After each chunk the instances the peer confirmed are added to the job's done set and the
 * progress is recorded: a worker killed in the middle of a chunk costs the resending of what the
 * peer confirmed in the last second only (duplicates, never losses). */
#include "jobs_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/config.h"
#include "dicom/dicom.h"
#include "base/ids.h"
#include "base/log.h"
#include "jobs_modify.h"

#define CHUNK_MIN 1
#define CHUNK_FIRST 32
#define CHUNK_MAX 1024         /* a routed backlog's job of up to 1,024 is one association */
#define CHUNK_MAX_MODIFIED 512 /* temporary copies on disk at most */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool status_ok(uint16_t s)
{
    /* success, and the warnings of PS3.4 B.2.3 (coercion, elements discarded,
     * data set does not match the SOP class) */
    return s == 0x0000 || s == 0xB000 || s == 0xB006 || s == 0xB007;
}

/* One chunk on the wire. Besides the chunk's end, what the peer confirmed is
 * recorded each second from the progress callback, so that a large chunk to
 * a slow peer still moves the job's progress (and a killed worker's
 * successor resends at most a second's worth). */
typedef struct {
    jobs_worker *w;
    ts_job_claim *c;
    const char **ids; /* the chunk's instances, in step with statuses */
    const uint16_t *statuses;
    const char **sent; /* scratch for the ids recorded */
    size_t processed;  /* files the peer has answered (or that were skipped) */
    size_t recorded;   /* files [0, recorded) already looked at for the record */
    size_t ndone, total;
    double last_record;
    bool redis_gone;
} chunk_progress;

/* ts_dicom_store_files_progress' callback, before each file after the first
 * (i: the file just answered); false releases the association. */
static bool on_stored(void *user, size_t i, uint16_t status)
{
    (void)status;
    chunk_progress *p = user;
    p->processed = i + 1;
    if (now_s() - p->last_record >= 1.0) {
        size_t n = 0;
        for (size_t k = p->recorded; k < p->processed; k++)
            if (status_ok(p->statuses[k]))
                p->sent[n++] = p->ids[k];
        p->ndone += n;
        if (!jobs_record(p->w, p->c, p->sent, n, (int)(p->ndone * 100 / p->total))) {
            p->redis_gone = true;
            return false;
        }
        p->recorded = p->processed;
        p->last_record = now_s();
    }
    return !jobs_worker_interrupted(p->w);
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
    json_t *done = NULL;
    const char **todo = NULL;
    const char **sent = NULL;
    char **paths = NULL;
    uint16_t *statuses = NULL;
    char **uuids = NULL; /* per instance of the chunk, NULL when it is gone */
    bool *temps = NULL;  /* paths[k] is a modified copy to unlink */
    ts_modify *m = NULL;

    memset(out, 0, sizeof(*out));
    bool bad = false;
    if (!(m = jobs_route_modification(c->input, &bad, out)) && bad)
        goto out;
    if (!json_is_array(instances) || !aet || !host || port <= 0) {
        jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed job input");
        goto out;
    }
    ts_dicom_peer peer = {.our_aet = local && *local ? local : w->svc->our_aet,
                          .aet = aet,
                          .host = host,
                          .port = port,
                          .timeout_s = timeout > 0 ? timeout : w->svc->dicom_timeout_s,
                          .transcode = json_string_value(json_object_get(c->input, "Transcode")),
                          .tls = json_is_true(json_object_get(c->input, "UseDicomTls"))};

    if (!(done = jobs_done_items(w, c))) {
        out->interrupted = true;
        goto out;
    }
    size_t total = json_array_size(instances), ntodo = 0, ndone = 0;
    todo = calloc(total + 1, sizeof(*todo));
    sent = calloc(CHUNK_MAX, sizeof(*sent));
    paths = calloc(CHUNK_MAX, sizeof(*paths));
    statuses = calloc(CHUNK_MAX, sizeof(*statuses));
    uuids = calloc(CHUNK_MAX, sizeof(*uuids));
    temps = calloc(CHUNK_MAX, sizeof(*temps));
    if (!todo || !sent || !paths || !statuses || !uuids || !temps)
        abort();
    size_t i;
    json_t *v;
    json_array_foreach(instances, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !ts_id_is_valid(id)) {
            jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed instance id in job input");
            goto out;
        }
        if (json_object_get(done, id))
            ndone++;
        else
            todo[ntodo++] = id;
    }
    if (c->taken_over || ndone)
        ts_info("store job resumed", "job=%s confirmed=%zu remaining=%zu taken_over=%d", c->id,
                ndone, ntodo, c->taken_over);

    json_object_set_new(c->content, "FailedInstancesCount", json_integer(0));
    size_t chunk = m ? CHUNK_FIRST : CHUNK_MAX;
    for (size_t pos = 0; pos < ntodo;) {
        if (jobs_worker_interrupted(w)) {
            out->interrupted = true;
            goto out;
        }
        size_t n = ntodo - pos < chunk ? ntodo - pos : chunk;
        const char *const *chunk_ids = todo + pos;
        ts_err err;
        int rc = jobs_instance_files(w, chunk_ids, n, uuids, &err);
        if (rc) {
            /* the database is unreachable: let another attempt (resubmit) do it */
            jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
            goto out;
        }
        /* ids[] and paths[] of the instances still stored, in step */
        const char *ids[CHUNK_MAX];
        size_t m_ok = 0;
        for (size_t k = 0; k < n; k++) {
            char path[4096];
            if (!uuids[k] || ts_store_path(w->svc->store, uuids[k], path, sizeof(path), &err)) {
                if (permissive) {
                    failed++;
                    continue;
                }
                char details[160];
                snprintf(details, sizeof(details), "instance %s is no longer stored", chunk_ids[k]);
                jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, details);
                goto out;
            }
            if (temps[m_ok])
                unlink(paths[m_ok]);
            free(paths[m_ok]);
            temps[m_ok] = false;
            paths[m_ok] = NULL;
            if (m) {
                /* a route's anonymize/modify then store: the copy is sent */
                char copy[4096];
                ts_oe oe;
                if (jobs_route_modified_file(w, m, path, copy, sizeof(copy), &oe, &err)) {
                    char details[600];
                    snprintf(details, sizeof(details), "modifying instance %s: %s", chunk_ids[k],
                             err.msg);
                    jobs_fail(out, oe, details);
                    goto out;
                }
                snprintf(path, sizeof(path), "%s", copy);
                temps[m_ok] = true;
            }
            paths[m_ok] = strdup(path);
            ids[m_ok++] = chunk_ids[k];
        }
        double t0 = now_s();
        chunk_progress progress = {.w = w,
                                   .c = c,
                                   .ids = ids,
                                   .statuses = statuses,
                                   .sent = sent,
                                   .ndone = ndone,
                                   .total = total,
                                   .last_record = t0};
        rc = m_ok ? ts_dicom_store_files_progress(&peer, (const char *const *)paths, m_ok, statuses,
                                                  on_stored, &progress, &err)
                  : 0;
        double elapsed = now_s() - t0;
        bool interrupted = rc == TS_ECANCELED;
        if (interrupted) {
            /* paused, cancelled or Redis gone mid-chunk: what the peer
             * confirmed is kept */
            rc = 0;
            m_ok = progress.processed;
        }
        ndone = progress.ndone; /* what the callback recorded */
        if (rc && !permissive) {
            jobs_fail(out, TS_OE_NETWORK_PROTOCOL, err.msg);
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
                             "C-STORE of instance %s to %s: not sent (the peer accepted neither "
                             "its SOP class with its transfer syntax nor one it converts to, or "
                             "the file is unreadable)",
                             ids[k], aet);
                else
                    snprintf(details, sizeof(details),
                             "C-STORE of instance %s to %s: the peer answered status 0x%04x",
                             ids[k], aet, statuses[k]);
                /* what was confirmed before the refusal is kept */
                jobs_record(w, c, sent, nsent, (int)((ndone + nsent) * 100 / total));
                jobs_fail(out, TS_OE_NETWORK_PROTOCOL, details);
                goto out;
            }
            if (k >= progress.recorded) /* not recorded by the callback yet */
                sent[nsent++] = ids[k];
        }
        ndone += nsent;
        ts_metric_add(w->svc->m_sent, (double)nsent);
        json_object_set_new(c->content, "FailedInstancesCount", json_integer((json_int_t)failed));
        if (!jobs_record(w, c, sent, nsent, (int)((ndone + failed) * 100 / total)) || interrupted) {
            out->interrupted = true;
            goto out;
        }
        pos += n;
        if (m && elapsed < 0.25 && chunk < CHUNK_MAX_MODIFIED)
            chunk *= 2;
        else if (m && elapsed > 1.0 && chunk > CHUNK_MIN)
            chunk /= 2;
    }
out:
    if (paths)
        for (size_t k = 0; k < CHUNK_MAX; k++) {
            if (temps && temps[k] && paths[k])
                unlink(paths[k]);
            free(paths[k]);
        }
    free(temps);
    ts_modify_free(m);
    if (uuids)
        for (size_t k = 0; k < CHUNK_MAX; k++)
            free(uuids[k]);
    free(uuids);
    free(paths);
    free(statuses);
    free(sent);
    free(todo);
    json_decref(done);
}
