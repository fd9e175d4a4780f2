/* The router of every tessera-jobs process (issue 23): one thread that, every
 * TESSERA_ROUTER_INTERVAL ms, runs the cluster-wide stable sweep
 * (db/functions/stable.sql), numbers the changes it logged, dispatches the
 * change log to deliveries under the one durable cursor
 * (db/functions/routing.sql) and drives the due deliveries: a store step is a
 * DicomModalityStore or OrthancPeerStore job in the Redis registry, run by any
 * worker; a failed step is retried with back-off (the failed job resubmitted,
 * so instances already sent are not sent again) and the delivery goes dead
 * after TESSERA_ROUTER_MAX_ATTEMPTS. Each process claims deliveries FOR
 * UPDATE SKIP LOCKED with a lease (not_before), so any number of processes
 * share the work and one killed mid-way leaves its deliveries to the next. */
#ifndef JOBS_ROUTER_H
#define JOBS_ROUTER_H

#include "jobs_worker.h"

typedef struct jobs_router jobs_router;

/* Starts the thread (its own Redis connection); NULL when
 * TESSERA_ROUTER is off. */
int jobs_router_start(jobs_service *svc, jobs_router **out, ts_err *err);
/* Stops and joins it (svc->stopping must be set). Accepts NULL. */
void jobs_router_stop(jobs_router *r);

#endif
