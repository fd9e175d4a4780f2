/* tessera-jobs: runs the jobs of the Redis registry (lib/domain/jobs.h). Each of
 * TESSERA_JOBS_WORKERS threads takes one job at a time from the queue (or a
 * job whose worker died, once its lease ran out) and runs it; a keeper thread
 * renews the leases of the running jobs twice a second, which is also how a
 * pause or cancel made through any REST process reaches the worker: the
 * renewal answers that the job is no longer Running, the worker stops at its
 * next step and releases the job. A process stopped with SIGTERM puts its
 * running jobs back in the queue after the chunk on the wire; one killed
 * outright leaves them to be taken over when their leases run out. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/config.h"
#include "io/db.h"
#include "dicom/dicom.h"
#include "domain/jobs.h"
#include "jobs_archive.h"
#include "jobs_bulk_delete.h"
#include "jobs_modify.h"
#include "jobs_move.h"
#include "jobs_peer.h"
#include "jobs_router.h"
#include "jobs_store.h"
#include "jobs_worker.h"
#include "base/log.h"
#include "base/metrics.h"
#include "io/service_io.h"
#include "base/service.h"
#include "io/store.h"

/* One worker thread and what the keeper knows of its job. */
typedef struct slot {
    jobs_worker w;
    pthread_t thread;
    pthread_mutex_t mu;
    bool busy;
    ts_job_claim claim; /* id and entry only are read by the keeper */
} slot;

static jobs_service svc;

static void on_stop(void *user)
{
    (void)user;
    atomic_store(&svc.stopping, true);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct finish_arg {
    ts_job_claim *c;
    jobs_outcome *o;
} finish_arg;

static int do_finish(jobs_worker *w, void *arg, ts_err *err)
{
    finish_arg *f = arg;
    if (f->o->interrupted)
        return ts_jobs_release(w->redis, w->consumer, f->c, err);
    return ts_jobs_finish(w->redis, w->consumer, f->c, f->o->code, f->o->description, f->o->details,
                          f->c->content, w->svc->history, err);
}

static void run_job(slot *s)
{
    jobs_worker *w = &s->w;
    ts_job_claim *c = &s->claim;
    jobs_outcome o;
    memset(&o, 0, sizeof(o));
    ts_info("job started", "job=%s type=%s taken_over=%d", c->id, c->type, c->taken_over);
    if (strcmp(c->type, "DicomModalityStore") == 0) {
        jobs_store_run(w, c, &o);
    } else if (strcmp(c->type, "OrthancPeerStore") == 0) {
        jobs_peer_run(w, c, &o);
    } else if (strcmp(c->type, "DicomMoveScu") == 0) {
        jobs_move_run(w, c, &o);
    } else if (strcmp(c->type, "Archive") == 0) {
        jobs_archive_run(w, c, &o);
    } else if (strcmp(c->type, "BulkDelete") == 0) {
        jobs_bulk_delete_run(w, c, &o);
    } else if (strcmp(c->type, "ResourceModification") == 0 || strcmp(c->type, "SplitStudy") == 0 ||
               strcmp(c->type, "MergeStudy") == 0) {
        jobs_modify_run(w, c, &o);
    } else {
        o.code = 2;
        snprintf(o.description, sizeof(o.description), "Not implemented yet");
        snprintf(o.details, sizeof(o.details), "no runner for jobs of type %s", c->type);
    }
    finish_arg f = {c, &o};
    if (o.interrupted && atomic_load(&svc.stopping)) {
        /* back to the queue for another process to go on with at once; if
         * Redis cannot be reached, the lease runs out and it is taken over */
        ts_err err;
        if (ts_jobs_requeue(w->redis, w->consumer, c, &err))
            ts_warn("cannot requeue a job, it will be taken over", "job=%s error=\"%s\"", c->id,
                    err.msg);
        else
            ts_info("job requeued for another worker", "job=%s", c->id);
        ts_metric_inc(svc.m_jobs[2]);
        return;
    }
    jobs_retry_redis(w, do_finish, &f);
    if (o.interrupted) {
        ts_info("job stopped (paused, canceled or taken over)", "job=%s", c->id);
        ts_metric_inc(svc.m_jobs[2]);
    } else if (o.code == 0) {
        ts_info("job succeeded", "job=%s", c->id);
        ts_metric_inc(svc.m_jobs[0]);
    } else {
        char q[600];
        ts_warn("job failed", "job=%s code=%d details=%s", c->id, o.code,
                ts_log_quote(q, sizeof(q), o.details));
        ts_metric_inc(svc.m_jobs[1]);
    }
}

static void *worker_main(void *arg)
{
    slot *s = arg;
    jobs_worker *w = &s->w;
    bool prepared = false;
    while (!atomic_load(&svc.stopping)) {
        ts_err err;
        if (!prepared) {
            if (ts_jobs_prepare(w->redis, &err)) {
                ts_warn("redis unreachable", "error=\"%s\"", err.msg);
                sleep_ms(500);
                continue;
            }
            prepared = true;
        }
        ts_job_claim c;
        int rc = ts_jobs_take(w->redis, w->consumer, 500, svc.lease_ms, &c, &err);
        if (rc < 0) {
            ts_warn("cannot take a job", "error=\"%s\"", err.msg);
            sleep_ms(500);
            continue;
        }
        if (rc == 0)
            continue;
        pthread_mutex_lock(&s->mu);
        s->claim = c;
        s->busy = true;
        atomic_store(&w->stop_job, false);
        pthread_mutex_unlock(&s->mu);
        run_job(s);
        pthread_mutex_lock(&s->mu);
        s->busy = false;
        ts_job_claim_clear(&s->claim);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* Renews the leases of the running jobs; tells a worker to stop when its job
 * is no longer Running (paused, canceled) or was taken by another worker. */
static void keeper(slot *slots, int n, ts_jobs *redis, const char *process)
{
    int interval = svc.lease_ms / 3 < 500 ? svc.lease_ms / 3 : 500;
    long rounds = 0;
    while (!atomic_load(&svc.stopping)) {
        ts_err herr;
        if (ts_jobs_heartbeat(redis, process, &herr))
            ts_debug("heartbeat failed", "error=\"%s\"", herr.msg);
        /* now and then, the archives that no job needs any more */
        if (rounds++ % (10000 / interval) == 1)
            jobs_archive_sweep(&svc, redis);
        for (int i = 0; i < n; i++) {
            slot *s = &slots[i];
            pthread_mutex_lock(&s->mu);
            if (s->busy) {
                ts_err err;
                int rc = ts_jobs_renew(redis, s->w.consumer, &s->claim, svc.lease_ms, &err);
                if (rc == 0 && !atomic_load(&s->w.stop_job)) {
                    ts_info("job no longer ours to run", "job=%s", s->claim.id);
                    atomic_store(&s->w.stop_job, true);
                } else if (rc < 0) {
                    ts_warn("cannot renew a lease", "job=%s error=\"%s\"", s->claim.id, err.msg);
                }
            }
            pthread_mutex_unlock(&s->mu);
        }
        sleep_ms(interval);
    }
}

/* /health: Redis and the database answer. */
static bool health(void *user, char *reason, size_t size)
{
    (void)user;
    ts_err err;
    ts_jobs *j = NULL;
    if (ts_jobs_connect(svc.redis_url, 2000, &j, &err)) {
        snprintf(reason, size, "%s", err.msg);
        return false;
    }
    ts_jobs_free(j);
    return ts_service_db_health(svc.db, reason, size);
}

int main(int argc, char **argv)
{
    ts_service_init("jobs", argc, argv);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ts_service_handle_signals(on_stop, NULL);
    ts_err err;
    ts_err_clear(&err);
    if (ts_dicom_global_init(&err))
        ts_service_die("dicom", &err);
    if (ts_dicom_dictionary_add(ts_cfg_str(TESSERA_DICOM_DICTIONARY), &err))
        ts_service_die("dictionary", &err);

    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    int nworkers = (int)ts_cfg_int(TESSERA_JOBS_WORKERS);
    if (dbopt.size < nworkers + 1) /* + the router's thread */
        dbopt.size = nworkers + 1;
    svc.db = ts_service_db(&dbopt);
    svc.store = ts_service_store();
    const char *deleters = ts_cfg_str(TESSERA_DELETER_BUS);
    if (deleters[0] && ts_bus_pusher_new(deleters, (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL),
                                         &svc.deleters, &err))
        ts_service_die("bus", &err);
    /* modified copies go through ingest's one write path (ResourceModification) */
    const char *ingest = ts_cfg_str(TESSERA_INGEST_BUS);
    if (ingest[0] &&
        ts_bus_client_new(ingest, (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL),
                          (size_t)ts_cfg_int(TESSERA_BUS_MAX_MESSAGE), &svc.ingest, &err))
        ts_service_die("bus", &err);
    svc.bus_timeout_ms = (int)ts_cfg_int(TESSERA_BUS_TIMEOUT) * 1000;
    svc.redis_url = ts_cfg_str(TESSERA_REDIS_URL);
    svc.lease_ms = (int)ts_cfg_int(TESSERA_JOBS_LEASE) * 1000;
    svc.history = (int)ts_cfg_int(TESSERA_JOBS_HISTORY);
    svc.our_aet = ts_cfg_str(TESSERA_DICOM_AET);
    svc.archive_max_rate = ts_cfg_int(TESSERA_JOBS_ARCHIVE_MAX_RATE) * 1024;
    svc.dicom_timeout_s = (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT);
    svc.m_sent = ts_metrics_counter("tessera_jobs_instances_sent_total", NULL,
                                    "instances confirmed by modalities (C-STORE)");
    static const char *const outcome[] = {"outcome=\"success\"", "outcome=\"failure\"",
                                          "outcome=\"interrupted\""};
    for (int i = 0; i < 3; i++)
        svc.m_jobs[i] =
            ts_metrics_counter("tessera_jobs_runs_total", outcome[i], "job runs ended, by outcome");

    ts_jobs *keeper_redis;
    if (ts_jobs_connect(svc.redis_url, 5000, &keeper_redis, &err))
        ts_service_die("redis", &err);
    if (ts_jobs_prepare(keeper_redis, &err))
        ts_service_die("redis", &err);

    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    slot *slots = calloc((size_t)nworkers, sizeof(*slots));
    if (!slots)
        abort();
    for (int i = 0; i < nworkers; i++) {
        slot *s = &slots[i];
        s->w.svc = &svc;
        snprintf(s->w.consumer, sizeof(s->w.consumer), "%s-%d-%d", host, (int)getpid(), i);
        pthread_mutex_init(&s->mu, NULL);
        if (ts_jobs_connect(svc.redis_url, 5000, &s->w.redis, &err))
            ts_service_die("redis", &err);
    }

    ts_metrics_server *metrics = ts_service_metrics(health, NULL);
    ts_heartbeat *heartbeat = ts_service_heartbeat(svc.db, health, NULL);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);

    for (int i = 0; i < nworkers; i++)
        pthread_create(&slots[i].thread, NULL, worker_main, &slots[i]);
    ts_info("jobs ready", "workers=%d lease_s=%d history=%d redis=%s metrics_port=%d", nworkers,
            svc.lease_ms / 1000, svc.history, svc.redis_url, metrics_port);

    jobs_router *router = NULL;
    if (jobs_router_start(&svc, &router, &err))
        ts_service_die("router", &err);

    char process[96];
    snprintf(process, sizeof(process), "%s-%d", host, (int)getpid());
    keeper(slots, nworkers, keeper_redis, process);
    jobs_router_stop(router);

    for (int i = 0; i < nworkers; i++) {
        pthread_join(slots[i].thread, NULL);
        ts_jobs_free(slots[i].w.redis);
        pthread_mutex_destroy(&slots[i].mu);
    }
    free(slots);
    ts_jobs_free(keeper_redis);
    ts_heartbeat_stop(heartbeat);
    ts_metrics_server_free(metrics);
    ts_bus_client_free(svc.deleters);
    ts_bus_client_free(svc.ingest);
    ts_store_free(svc.store);
    ts_db_pool_free(svc.db);
    ts_info("stopped", NULL);
    return 0;
}
