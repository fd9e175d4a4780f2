/* C-MOVE and C-GET, written once for every SCP that serves them (query's own
 * port, ingest's association): the destination looked up in the shared
 * modalities table, the sub-operations (C-STORE to the destination, or back
 * over the client's own association for C-GET) with a pending response after
 * each, the counts and the final status. Which instances a request names is
 * the caller's business (a callback): query matches the index itself, ingest
 * asks query over the bus. */
#ifndef TS_RETRIEVE_H
#define TS_RETRIEVE_H

#include <stddef.h>
#include <stdint.h>

#include "io/db.h"
#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "domain/dicom_access.h"
#include "io/store.h"

/* The instances a retrieve names, in the order they are sent. */
typedef struct ts_retrieve_list {
    char **sop_uids;
    char **files; /* uuid of each instance's file in the storage area, "" if none */
    size_t n, cap;
} ts_retrieve_list;

/* Appends one instance (both strings are copied). */
void ts_retrieve_list_add(ts_retrieve_list *l, const char *sop_uid, const char *file);
void ts_retrieve_list_clear(ts_retrieve_list *l);

/* Fills list with the instances rq names (op: "move" or "get", for logs),
 * only among the studies grant may see (grant->restricted).
 * Returns TS_QR_SUCCESS, or the status to answer with (comment filled,
 * the reason logged). */
typedef uint16_t (*ts_retrieve_find_fn)(void *user, const ts_dicom_assoc *assoc,
                                        const ts_dicom_move_rq *rq, const char *op,
                                        const ts_dicom_grant *grant, ts_retrieve_list *list,
                                        char *comment, size_t comment_size);

typedef struct ts_retrieve {
    ts_db_pool *db; /* where the modalities (C-MOVE destinations) are */
    ts_store *store;
    const char *our_aet; /* calling AE title towards a C-MOVE destination */
    int timeout_s;       /* of the association to a C-MOVE destination */
    ts_retrieve_find_fn find;
    void *user; /* find's */
    /* The job registry (Redis URL): each C-MOVE shows in /jobs while it runs and
     * can be canceled there (domain/jobs.h, ts_jobs_begin_scp). NULL or "": no
     * entry. Best effort: when Redis cannot be reached the C-MOVE goes on
     * without its entry (a warning in the log). */
    const char *jobs_url;
    int jobs_history; /* finished jobs kept (TESSERA_JOBS_HISTORY) */
    /* The calling AE's AllowMove/AllowGet and labels, and the audit of each
     * request (NULL: everything allowed, nothing audited). */
    ts_dicom_access *access;
} ts_retrieve;

/* Answers a C-MOVE: the move callback of ts_dicom_qr_callbacks and
 * ts_dicom_scp_callbacks, with a ts_retrieve as their retrieve_user. An unknown destination gets
 * 0xA801; then the ts_retrieve's find, and the instances go to the destination over one
 * association, followed in /jobs when jobs_url is set. A cancel from REST ends
 * the sub-operations as a C-CANCEL does: status Cancel (0xFE00) with the counts. */
uint16_t ts_retrieve_move(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                          ts_dicom_retrieve_out *rout, ts_dicom_move_result *out, char *comment,
                          size_t comment_size);

/* Answers a C-GET likewise: the instances go back over the C-GET's own
 * association (ts_dicom_get_send). */
uint16_t ts_retrieve_get(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                         ts_dicom_retrieve_out *get, ts_dicom_move_result *out, char *comment,
                         size_t comment_size);

#endif
