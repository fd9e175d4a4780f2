/* The job registry in Redis, shared by every REST and jobs process. It owns
 * the keys under "tessera:job": one hash per job (Orthanc's fields and the
 * worker's private ones), a sorted set of every job by creation time, a sorted
 * set of finished jobs (the history, trimmed to a configured size), the queue
 * (a sorted set of waiting entries, highest Priority first and first come
 * first served among equals, and a sorted set of the entries workers took),
 * one lease key (with a TTL) per running job and one set per job of the items
 * it has completed (resumable work).
 *
 * Every state change is one Lua script, so a REST process that cancels and the
 * worker that runs the job never overwrite each other: the worker notices a
 * cancel or pause when it renews its lease (ts_jobs_renew). A worker that dies
 * stops renewing; once the lease has run out the next worker to look for work
 * takes the job over and runs it again, skipping the completed items.
 *
 * A ts_jobs is one connection: use one per thread. Every call reconnects
 * first if the connection was lost (Redis restarted); the process must ignore
 * SIGPIPE (ts_service_handle_signals does). */
#ifndef TS_JOBS_H
#define TS_JOBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_JOB_ID_LEN 36 /* a UUID, as Orthanc's job ids */

typedef struct ts_jobs ts_jobs;

/* url: "redis://host:port" or "unix:///path" ("unix://path" too). Connects
 * now, so that a wrong URL fails at start. timeout_ms bounds every command
 * (blocking reads add their own wait to it). */
int ts_jobs_connect(const char *url, int timeout_ms, ts_jobs **out, ts_err *err);
void ts_jobs_free(ts_jobs *j);

/* ---- what REST does ------------------------------------------------------ */

/* Creates a Pending job and queues it: it runs before the waiting jobs of a
 * lower priority and after those of its own or a higher one (Orthanc's
 * Priority). content is Orthanc's public "Content"; input is what the worker
 * needs (private). id receives the new job's id. */
int ts_jobs_submit(ts_jobs *j, const char *type, int priority, const json_t *content,
                   const json_t *input, char id[TS_JOB_ID_LEN + 1], ts_err *err);

/* The same, recording who submitted it (a REST caller's name: "alice",
 * "key:<id>", "jwt:<subject>"); NULL or "": nobody (the cluster's own jobs,
 * such as routing's; ts_jobs_submit). Never in Orthanc's JSON of the job. */
int ts_jobs_submit_by(ts_jobs *j, const char *submitter, const char *type, int priority,
                      const json_t *content, const json_t *input, char id[TS_JOB_ID_LEN + 1],
                      ts_err *err);

/* Who submitted the job into out ("" when nobody); TS_ENOTFOUND if unknown. */
int ts_jobs_submitter(ts_jobs *j, const char *id, char *out, size_t size, ts_err *err);

/* Orthanc's JSON of a job (GET /jobs/{id}); TS_ENOTFOUND if unknown. The
 * caller decrefs *out. */
int ts_jobs_get(ts_jobs *j, const char *id, json_t **out, ts_err *err);

/* The State of a job ("Pending", ...) into state; TS_ENOTFOUND if unknown. */
int ts_jobs_state(ts_jobs *j, const char *id, char *state, size_t size, ts_err *err);

/* Every job id, sorted (GET /jobs). The caller decrefs *out (an array). */
int ts_jobs_list(ts_jobs *j, json_t **out, ts_err *err);
/* The ids of the jobs that submitter submitted (NULL: every job), sorted. */
int ts_jobs_list_by(ts_jobs *j, const char *submitter, json_t **out, ts_err *err);

typedef enum { TS_JOB_CANCEL, TS_JOB_PAUSE, TS_JOB_RESUME, TS_JOB_RESUBMIT } ts_job_action;

/* Orthanc's transitions: cancel (unfinished -> Failure "Canceled job"), pause
 * (Pending/Running/Retry -> Paused), resume (Paused -> Pending), resubmit
 * (Failure -> Pending; completed items are kept, so they are not done again).
 * Cancel and pause of a finished job do nothing, as in Orthanc. TS_ENOTFOUND
 * for an unknown job, TS_EINVAL (message says the state) when resume or
 * resubmit do not apply. A cancel trims the history to `history` finished
 * jobs. */
int ts_jobs_control(ts_jobs *j, const char *id, ts_job_action action, int history, ts_err *err);

/* ---- what a worker does --------------------------------------------------- */

/* A job taken by a worker; fields valid until ts_job_claim_clear. */
typedef struct ts_job_claim {
    char id[TS_JOB_ID_LEN + 1];
    char entry[64]; /* the queue entry ("<seq>:<id>") */
    char *type;
    json_t *input;
    json_t *content;
    bool taken_over; /* another worker ran it before and stopped renewing its lease */
} ts_job_claim;
void ts_job_claim_clear(ts_job_claim *c);

/* Moves the jobs that wait in the queue of earlier versions (a Redis stream)
 * to the priority queue; nothing to do after the first call. */
int ts_jobs_prepare(ts_jobs *j, ts_err *err);

/* Takes one job for worker `consumer`: first a job whose worker's lease ran
 * out, then the waiting job of the highest priority (the oldest among
 * equals), waiting up to block_ms for one. Holds the job's lease for
 * lease_ms. Returns 1 with *c filled, 0 when there was nothing to run, or a
 * negative code. */
int ts_jobs_take(ts_jobs *j, const char *consumer, int block_ms, int lease_ms, ts_job_claim *c,
                 ts_err *err);

/* Renews the lease. Returns 1 while the job is still ours and Running, 0 when
 * it was paused, canceled or taken by another worker (stop and call
 * ts_jobs_release), or a negative code (Redis unreachable: go on and try
 * again later; the lease may run out). */
int ts_jobs_renew(ts_jobs *j, const char *consumer, const ts_job_claim *c, int lease_ms,
                  ts_err *err);

/* Records progress (0..100) and the public content. */
int ts_jobs_progress(ts_jobs *j, const ts_job_claim *c, int progress, const json_t *content,
                     ts_err *err);

/* Adds completed items (e.g. instance ids) to the job's set. */
int ts_jobs_mark_done(ts_jobs *j, const ts_job_claim *c, const char *const *items, size_t n,
                      ts_err *err);
/* The job's completed items (a JSON object used as a set: item -> true). */
int ts_jobs_done_items(ts_jobs *j, const ts_job_claim *c, json_t **out, ts_err *err);

/* Ends the run: Success (error_code 0) or Failure with Orthanc's ErrorCode,
 * its description and details. If the job was canceled or paused meanwhile,
 * its state is left as it is. Trims the history to `history` finished jobs. */
int ts_jobs_finish(ts_jobs *j, const char *consumer, const ts_job_claim *c, int error_code,
                   const char *error_description, const char *details, const json_t *content,
                   int history, ts_err *err);

/* Gives the job up without finishing it (it was paused or canceled): frees the
 * queue entry and the lease. */
int ts_jobs_release(ts_jobs *j, const char *consumer, const ts_job_claim *c, ts_err *err);

/* Puts a job this worker runs back in the queue (Pending) for another worker
 * to go on with at once: what a process does when it is asked to stop. */
int ts_jobs_requeue(ts_jobs *j, const char *consumer, const ts_job_claim *c, ts_err *err);

/* ---- jobs run by a DICOM SCP ----------------------------------------------- */

/* A job that no jobs worker runs: the SCP serving an incoming C-MOVE registers
 * it so that /jobs shows it (Orthanc's "DicomModalityStore" with Description
 * "C-MOVE"). It is created Running, owned by `owner` with a lease of
 * lease_ms, and never queued: no worker takes it, not even over. The SCP then
 * renews it with ts_jobs_renew (0 once it was canceled from REST: stop the
 * sub-operations and call ts_jobs_release), records progress with
 * ts_jobs_progress and ends it with ts_jobs_finish; c is what those take (its
 * entry is empty). Pause and resubmit are refused (TS_EINVAL): the client's
 * association can be neither held nor replayed. If the SCP's process dies,
 * the job's lease runs out and the next worker's take (or the next
 * ts_jobs_begin_scp) ends it as Failure (InternalError). Best effort for the
 * caller: the C-MOVE goes on without its entry when Redis cannot be reached. */
int ts_jobs_begin_scp(ts_jobs *j, const char *type, const char *owner, int lease_ms,
                      const json_t *content, ts_job_claim *c, ts_err *err);

/* A jobs process says it is alive (its keeper, twice a second), and REST
 * asks how many said so within the last within_ms: a synchronous call does
 * not wait forever for a job that no process will run. */
int ts_jobs_heartbeat(ts_jobs *j, const char *process, ts_err *err);
int ts_jobs_live_processes(ts_jobs *j, int within_ms, long long *count, ts_err *err);

/* ---- job events (the OnJob* callbacks of the Lua scripts) ------------------ */

/* Every Submitted, Success and Failure is logged, numbered, in the list
 * "tessera:jobs:events" (the newest 10,000 kept) by the script that changes
 * the job's state. The first max events, oldest first, as [{"Seq", "Kind",
 * "ID"}] (the caller decrefs *out). */
int ts_jobs_events(ts_jobs *j, size_t max, json_t **out, ts_err *err);
/* Removes the events numbered up to upto (any number of readers may ack the
 * same ones: a reader records them idempotently, then acks). */
int ts_jobs_events_ack(ts_jobs *j, long long upto, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
