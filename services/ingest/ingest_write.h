/* ingest's write path, shared by C-STORE and the bus's store requests: parse,
 * compute the public ids, move the file into the storage area, then the
 * read-write transaction that indexes it (shared with other instances
 * received at the same time: ingest_commit.h), then a change event on the bus. */
#ifndef INGEST_WRITE_H
#define INGEST_WRITE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/bus.h"
#include "domain/changes.h"
#include "io/db.h"
#include "base/err.h"
#include "base/ids.h"
#include "base/metrics.h"
#include "io/store.h"
#include "domain/lua_scripts.h"
#include "ingest_commit.h"

typedef struct ingest_ctx {
    ts_db_pool *db;
    ts_store *store;
    ts_bus_pub *events;             /* may be NULL */
    ts_change_sequencer *sequencer; /* numbers the changes after commit; may be NULL */
    ingest_commit *commit;          /* indexes instances in groups (ingest_commit.h) */
    bool overwrite;
    /* TESSERA_INGEST_MEMORY_THRESHOLD: a file up to this size is parsed and
     * hashed in memory and written once in its place (0: through a file) */
    long long memory_threshold;
    /* TESSERA_INGEST_TRANSCODING: the syntax every instance is stored in; NULL: as received */
    const char *transcode_to;
    ts_metric *m_stored, *m_already, *m_invalid, *m_db_busy, *m_storage, *m_failed;
    ts_metric *m_seconds;
    ts_metric *m_in_memory, *m_in_file; /* where each instance came: memory, a temporary file */
    /* the scripts of TESSERA_LUA_SCRIPTS when they define ReceivedInstanceFilter
     * (else NULL): one state, called under lua_lock by every thread */
    ts_lua *lua;
    pthread_mutex_t lua_lock;
} ingest_ctx;

/* Orthanc's instance metadata about where the instance came from. */
typedef struct ingest_origin {
    const char *origin; /* "DicomProtocol", "RestApi" */
    const char *remote_aet;
    const char *remote_ip;
    const char *called_aet;
    const char *http_username;
    /* C-STORE: the command's Affected SOP Class and Instance UIDs, which the data
     * set must carry (PS3.4 B.2.1.1); NULL for uploads. */
    const char *sop_class_uid;
    const char *sop_instance_uid;
} ingest_origin;

typedef enum {
    INGEST_STORED,
    INGEST_ALREADY_STORED,
    INGEST_INVALID,     /* not DICOM, truncated, identifiers missing, not the C-STORE's instance */
    INGEST_WRONG_CLASS, /* C-STORE: the data set is not of the command's SOP class */
    INGEST_DB_BUSY,     /* database unreachable or conflicts outlasted the replays */
    INGEST_STORAGE_ERROR,
    INGEST_FAILED,       /* anything else */
    INGEST_FILTERED_OUT, /* ReceivedInstanceFilter said false: nothing stored */
} ingest_status;

typedef struct ingest_result {
    ingest_status status;
    ts_ids ids;
} ingest_result;

void ingest_ctx_init_metrics(ingest_ctx *ctx);

/* Stores the instance in temp_path (a file under the storage area's tmp/).
 * The temporary file is consumed in every case: moved into place or removed.
 * Returns 0 when the instance is stored, was already, or was filtered out
 * (out->status says which); otherwise the error
 * says why and out->status says what to answer. Nothing half-stored remains:
 * no file without its row, no row without its file. */
int ingest_file(ingest_ctx *ctx, const char *temp_path, const ingest_origin *origin,
                ingest_result *out, ts_err *err);

/* The same for an instance in memory (a C-STORE received into memory, bytes
 * sent on the bus): parsed and hashed there, written once, straight into its
 * place. data stays the caller's. */
int ingest_data(ingest_ctx *ctx, const void *data, size_t len, const ingest_origin *origin,
                ingest_result *out, ts_err *err);

/* Writes len bytes into a new temporary file of the storage area; its path in path. */
int ingest_write_temp(ts_store *st, const uint8_t *data, size_t len, char *path, size_t size,
                      ts_err *err);

/* DIMSE status for a result (0x0000, 0xA700, 0xC000, ...). */
unsigned ingest_dimse_status(ingest_status status);

#endif
