/* The BulkDelete job (Tessera's own type; Orthanc deletes synchronously):
 * POST /tools/bulk-delete with "Asynchronous": true. Input: {"Resources":
 * [public ids of any level]}. Each resource is deleted in its own transaction
 * by the SQL function that DELETE uses (lib/domain/delete.h); unknown ids are
 * skipped, as Orthanc does; the deleters are nudged as after a DELETE.
 * Deleted ids are recorded in the job's done set, so
 * a resumed or taken-over job goes on with the others. */
#ifndef JOBS_BULK_DELETE_H
#define JOBS_BULK_DELETE_H

#include "jobs_worker.h"

void jobs_bulk_delete_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

#endif
