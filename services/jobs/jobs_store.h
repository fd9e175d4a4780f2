/* The DicomModalityStore job: sends instances to a DICOM modality with
 * C-STORE. Input: {"Instances": [public ids], "AET", "Host", "Port",
 * "LocalAet", "Timeout", "Permissive"}. Confirmed instances are recorded in the job's done
 * set, so a resubmitted or taken-over job sends only the others. */
#ifndef JOBS_STORE_H
#define JOBS_STORE_H

#include "jobs_worker.h"

void jobs_store_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

/* Helpers shared with the other instance-sending jobs (jobs_peer.c). */

/* The storage uuids of instances (uuids[i] NULL when gone; the caller frees). */
int jobs_instance_files(jobs_worker *w, const char *const *ids, size_t n, char **uuids,
                        ts_err *err);
/* Adds items to the job's done set and records progress and content,
 * retrying while Redis is away; false when it stayed away. */
bool jobs_record(jobs_worker *w, ts_job_claim *c, const char *const *items, size_t n, int progress);
/* The job's done set (retrying as above); NULL when Redis stayed away. */
json_t *jobs_done_items(jobs_worker *w, ts_job_claim *c);

#endif
