/* The Archive job (Orthanc's type): a ZIP of resources in Orthanc's layout
 * (lib/domain/archives.h) written to the storage area as jobs/<id>.zip, where every
 * REST process serves it as the job's output `archive`. Input: {"Resources":
 * [public ids], "Level": 0..2 or -1 (any)}. The worker writes a part of its
 * own and renames it when complete; a pause, cancel, failure or lost lease
 * removes the part, and the next run writes the archive again. */
#ifndef JOBS_ARCHIVE_H
#define JOBS_ARCHIVE_H

#include "jobs_worker.h"

void jobs_archive_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

/* Removes the outputs that no job needs any more: ZIPs of jobs that left the
 * history (TESSERA_JOBS_HISTORY) or did not succeed, and parts left by killed
 * workers. Any jobs process may run it, at any time. */
void jobs_archive_sweep(jobs_service *svc, ts_jobs *redis);

#endif
