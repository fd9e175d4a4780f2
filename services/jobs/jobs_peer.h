/* The OrthancPeerStore job: sends instances to another Orthanc-compatible
 * server over HTTP (POST /instances, libcurl). Input: {"Instances": [public
 * ids], "Url", "Username", "Password", "Timeout", "Permissive"}. Confirmed
 * instances are recorded in the job's done set, as for DicomModalityStore. */
#ifndef JOBS_PEER_H
#define JOBS_PEER_H

#include "jobs_worker.h"

void jobs_peer_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

#endif
