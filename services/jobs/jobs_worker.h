/* What a job type's runner gets from the worker that took the job: the
 * process's pools, the worker's own Redis connection, and whether it must stop
 * (the job was paused or canceled, or the process is stopping); and the
 * helpers every runner shares (jobs_worker.c): failing a run, retrying Redis,
 * the job's done set and progress, the files of instances. */
#ifndef JOBS_WORKER_H
#define JOBS_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/orthanc_errors.h"
#include "io/bus.h"
#include "io/db.h"
#include "domain/jobs.h"
#include "base/metrics.h"
#include "io/store.h"

typedef struct jobs_service {
    ts_db_pool *db;
    ts_store *store;
    const char *redis_url;
    int lease_ms;
    int history;
    const char *our_aet;
    int dicom_timeout_s;
    long long archive_max_rate; /* bytes per second an Archive job writes at most; 0: no limit */
    ts_bus_client *deleters;    /* PUSH nudges after deletions (BulkDelete); NULL: none */
    ts_bus_client *ingest;      /* ingest's store socket (ResourceModification); NULL: none */
    int bus_timeout_ms;
    atomic_bool stopping;
    ts_metric *m_sent;
    ts_metric *m_jobs[3]; /* success, failure, interrupted */
} jobs_service;

typedef struct jobs_worker {
    jobs_service *svc;
    ts_jobs *redis;
    char consumer[128];
    atomic_bool stop_job; /* set by the lease keeper: paused, canceled or lost */
} jobs_worker;

/* true when the running job must stop now */
bool jobs_worker_interrupted(jobs_worker *w);

/* The end of one run of a job: finished (Success when code is 0, else
 * Failure with Orthanc's ErrorCode), or interrupted (to be released, or taken
 * over by another worker). */
typedef struct jobs_outcome {
    bool interrupted;
    int code;
    char description[128];
    char details[512];
} jobs_outcome;

/* Ends the run as a Failure with Orthanc's ErrorCode, ErrorDescription and
 * ErrorDetails (cut to fit). */
/* The job fails with Orthanc's code (its description from the table) and details. */
void jobs_fail(jobs_outcome *out, ts_oe code, const char *details);

/* Runs a Redis call until it works, for up to about two leases (Redis may be
 * restarting); false if it never did (the job is then left to be taken over). */
bool jobs_retry_redis(jobs_worker *w, int (*fn)(jobs_worker *w, void *arg, ts_err *err), void *arg);

/* The storage uuids of instances (uuids[i] NULL when gone; the caller frees). */
int jobs_instance_files(jobs_worker *w, const char *const *ids, size_t n, char **uuids,
                        ts_err *err);
/* Adds items to the job's done set and records progress and content,
 * retrying while Redis is away; false when it stayed away. */
bool jobs_record(jobs_worker *w, ts_job_claim *c, const char *const *items, size_t n, int progress);
/* The job's done set (retrying as above); NULL when Redis stayed away. */
json_t *jobs_done_items(jobs_worker *w, ts_job_claim *c);

#endif
