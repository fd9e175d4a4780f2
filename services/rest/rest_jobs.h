/* The jobs routes (GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel|pause|
 * resume|resubmit, GET /jobs/{id}/{output}), answered from the Redis registry
 * (lib/domain/jobs.h) whichever REST process is asked, and the submission of a job
 * with Orthanc's Synchronous/Asynchronous answers. A job belongs to whoever
 * submitted it (its "submitter" in the registry): a caller that is not an
 * admin lists, reads and controls only its own, and another's job answers
 * what an unknown id answers. */
#ifndef REST_JOBS_H
#define REST_JOBS_H

#include <jansson.h>

#include "domain/jobs.h"
#include "rest_http.h"

void rest_jobs_list(rest_request *req);
void rest_jobs_get(rest_request *req);
void rest_jobs_output(rest_request *req);
/* POST /jobs/{id}/{action}: the action is the last segment */
void rest_jobs_control(rest_request *req);

/* Submits a job (content and input are not stolen) and answers: {"ID",
 * "Path"} when asynchronous; otherwise waits for the job to end and answers
 * its Content (Success) or an Orthanc error body built from its ErrorCode,
 * ErrorDescription and ErrorDetails (Failure), as Orthanc does. */
/* A job request's "Priority" (0 when absent). Answers 400 and returns false
 * when it is not an integer, or lies outside +-1,000,000,000 (the queue's
 * order in Redis; a larger value would wrap when converted to int). */
bool rest_job_priority(rest_request *req, const json_t *body, int *priority);

void rest_jobs_submit(rest_request *req, const char *type, int priority, const json_t *content,
                      const json_t *input, bool asynchronous);

#endif
