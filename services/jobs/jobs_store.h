/* The DicomModalityStore job: sends instances to a DICOM modality with
 * C-STORE. Input: {"Instances": [public ids], "AET", "Host", "Port",
 * "LocalAet", "Timeout", "Permissive"}. Confirmed instances are recorded in the job's done
 * set, so a resubmitted or taken-over job sends only the others. */
#ifndef JOBS_STORE_H
#define JOBS_STORE_H

#include "jobs_worker.h"

void jobs_store_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

#endif
