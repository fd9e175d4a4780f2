/* Group commit for ingest's write path: the index statements of instances
 * received at once (several associations, REST uploads) run in one transaction
 * and share one commit, i.e. one WAL flush, instead of a transaction each.
 * Owns its committer threads, each with a pooled connection while it commits.
 *
 * A writer submits a job (the statement's parameters and its file's uuid),
 * fsyncs its file meanwhile, says so (ingest_commit_synced), and waits
 * (ingest_commit_wait); the committer fsyncs the files' directories after the
 * statements (once per directory: files placed one after the other share one,
 * lib/io/store.h). A batch commits only once every file in it is on disk,
 * and a writer answers its client only once its own job's commit is known, so
 * every acknowledged instance is durable in file and index. A batch that fails
 * for one job's sake (a statement error, a failed fsync, a reclaimed file) is
 * replayed job by job, so that only that job fails. */
#ifndef INGEST_COMMIT_H
#define INGEST_COMMIT_H

#include <pthread.h>
#include <stdbool.h>

#include "base/err.h"
#include "base/metrics.h"
#include "io/db.h"
#include "io/store.h"

typedef struct ingest_commit ingest_commit;

typedef struct ingest_job {
    /* in: tessera_store_instance's six parameters and the file's uuid */
    const char *params[6];
    const char *uuid;
    /* out, once ingest_commit_wait returned: rc 0 or the transaction's error
     * (TS_EDB_INDOUBT: the commit's outcome is unknown); sync_failed when the
     * writer's own fsync failed */
    int rc;
    ts_err err;
    bool sync_failed;
    char status[32];
    char old_uuid[TS_UUID_LEN + 1];
    char *changes; /* JSON text, malloc'd: the caller frees it */
    /* private */
    int sync_state; /* 0 pending, 1 synced, -1 failed */
    bool done;
    pthread_cond_t cond;
    struct ingest_job *next;
} ingest_job;

/* Starts `threads` committers over pool (each uses one of its connections while
 * it commits), taking up to max_batch jobs per transaction. */
int ingest_commit_start(ts_db_pool *pool, ts_store *st, int threads, int max_batch,
                        ingest_commit **out, ts_err *err);
/* Stops the committers once the queued jobs are done. Accepts NULL. */
void ingest_commit_stop(ingest_commit *c);

/* Queues job (its params and uuid set; the rest is filled here). */
void ingest_commit_submit(ingest_commit *c, ingest_job *job);
/* The writer's fsync of its file is done (ok) or failed. */
void ingest_commit_synced(ingest_commit *c, ingest_job *job, bool ok);
/* Waits until job's transaction committed or failed; then job's out fields are set. */
void ingest_commit_wait(ingest_commit *c, ingest_job *job);

#endif
