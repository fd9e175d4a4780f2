/* The Query/Retrieve SCP (dicom_find.cc): C-ECHO and C-FIND in the Patient Root
 * and Study Root information models, one thread per association (bounded),
 * each C-FIND handed to a C callback that streams its matches back with
 * ts_dicom_find_pending(). Identifiers reach the callback in UTF-8. */
#ifndef TS_DICOM_FIND_H
#define TS_DICOM_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dicom.h"
#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TS_QR_PATIENT_ROOT, TS_QR_STUDY_ROOT } ts_qr_model;

/* DIMSE statuses of C-FIND, C-MOVE and C-GET (PS3.4 C.4.1.1.4, C.4.2.1.5,
 * C.4.3.1.4) that the callbacks return. */
enum {
    TS_QR_SUCCESS = 0x0000,
    TS_QR_PENDING = 0xff00,
    TS_QR_CANCEL = 0xfe00,
    TS_QR_OUT_OF_RESOURCES = 0xa700,
    TS_QR_UNABLE_SUBOPS = 0xa702, /* C-MOVE/C-GET: no sub-operation could be done */
    TS_QR_DEST_UNKNOWN = 0xa801,  /* C-MOVE: destination not registered */
    TS_QR_IDENTIFIER_MISMATCH = 0xa900,
    TS_QR_SOME_FAILED = 0xb000, /* C-MOVE/C-GET: some sub-operations failed */
    TS_QR_UNABLE_TO_PROCESS = 0xc000,
};

/* One element of a C-FIND identifier. Sequences come with an empty value
 * and is_sequence set; the leaf elements of a sequence's first item follow
 * the top-level keys, each with `sequence` set to the sequence's tag (PS3.4
 * C.2.2.2.6: one item of matching keys). */
typedef struct ts_dicom_find_key {
    uint32_t tag;
    const char *value; /* UTF-8, padding removed, values joined by '\' */
    bool is_sequence;
    uint32_t sequence; /* 0: a top-level key */
} ts_dicom_find_key;

typedef struct ts_dicom_find_rq {
    ts_qr_model model;
    const char *level;             /* QueryRetrieveLevel as received, "" if absent */
    const ts_dicom_find_key *keys; /* without QueryRetrieveLevel and SpecificCharacterSet */
    size_t nkeys;
    size_t max_keys_hit; /* keys dropped because the identifier had too many */
} ts_dicom_find_rq;

typedef struct ts_dicom_find_out ts_dicom_find_out;

/* Sends one pending response: the identifier with values[i] as the value of
 * keys[i] (NULL or "": zero length); a sequence's value is its items as a
 * JSON array of objects {"ggggeeee": value} ("": no items), item keys'
 * values are not used. status is 0xFF00, or 0xFF01 when some
 * optional keys are not supported. TS_ECANCELED when the client has sent a
 * C-CANCEL (stop and return 0xFE00); another error means the association is
 * gone. */
int ts_dicom_find_pending(ts_dicom_find_out *out, const char *const *values, uint16_t status,
                          ts_err *err);

/* A C-MOVE: the identifier as for C-FIND, and the destination AE title. */
typedef struct ts_dicom_move_rq {
    ts_qr_model model;
    const char *level;
    const ts_dicom_find_key *keys;
    size_t nkeys;
    size_t max_keys_hit;
    const char *destination;
    uint16_t message_id; /* of the C-MOVE-RQ: the sub-operations' Move Originator Message ID */
} ts_dicom_move_rq;

/* What the sub-operations came to, for the final C-MOVE response. */
typedef struct ts_dicom_move_result {
    unsigned completed, failed, warning;
    char *failed_uids; /* malloc'd '\'-joined SOP Instance UIDs that failed, or NULL; the SCP frees
                          it */
} ts_dicom_move_result;

/* A C-MOVE or C-GET being answered. */
typedef struct ts_dicom_retrieve_out ts_dicom_retrieve_out;

/* Sends a pending C-MOVE/C-GET response with the counts so far and
 * `remaining` still to go. TS_ECANCELED when the client has sent C-CANCEL
 * (stop and return 0xFE00); another error: the association is gone. */
int ts_dicom_retrieve_pending(ts_dicom_retrieve_out *out, unsigned remaining,
                              const ts_dicom_move_result *res, ts_err *err);

/* One C-GET sub-operation: sends the file at path (sop_uid is for the failed
 * list) with C-STORE on the C-GET's own association, counts its status in res
 * and sends a pending C-GET response with `remaining` still to go. 0 when the
 * sub-operation was done (whatever its status); TS_ECANCELED when the client
 * has sent C-CANCEL (stop and return 0xFE00); another error: the association
 * is gone. */
int ts_dicom_get_send(ts_dicom_retrieve_out *out, const char *path, const char *sop_uid,
                      unsigned remaining, ts_dicom_move_result *res, ts_err *err);

typedef struct ts_dicom_qr_callbacks {
    void *user;
    void *retrieve_user; /* given to move and get instead of user when set */
    /* May the association go on? NULL accepts every calling AE. */
    bool (*accept)(void *user, const ts_dicom_assoc *assoc);
    /* Answers one C-FIND: pending responses through out, then the final status
     * is returned (0 success, 0xFE00 cancelled, 0xA900, 0xA700, 0xC000...).
     * comment (may stay empty) becomes the final response's ErrorComment. */
    uint16_t (*find)(void *user, const ts_dicom_assoc *assoc, const ts_dicom_find_rq *rq,
                     ts_dicom_find_out *out, char *comment, size_t comment_size);
    /* Answers one C-MOVE (NULL: C-MOVE is not offered): sends the matching
     * instances to the destination, fills res and returns the final status
     * (0 all sent, 0xB000 some failed, 0xA702 none could be sent, 0xA801
     * destination unknown, 0xA900 bad identifier, 0xFE00 cancelled...),
     * with ts_dicom_retrieve_pending() after each sub-operation. */
    uint16_t (*move)(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                     ts_dicom_retrieve_out *out, ts_dicom_move_result *res, char *comment,
                     size_t comment_size);
    /* Answers one C-GET (NULL: C-GET is not offered): rq->destination is NULL;
     * each matching instance goes through ts_dicom_get_send(); returns the final
     * status as for C-MOVE (0xFE00 when cancelled). */
    uint16_t (*get)(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                    ts_dicom_retrieve_out *out, ts_dicom_move_result *res, char *comment,
                    size_t comment_size);
} ts_dicom_qr_callbacks;

typedef struct ts_dicom_qr_scp ts_dicom_qr_scp;

/* Opens the listening port; cfg->max_dataset bounds a received identifier. */
int ts_dicom_qr_scp_new(const ts_dicom_scp_config *cfg, const ts_dicom_qr_callbacks *cb,
                        ts_dicom_qr_scp **out, ts_err *err);
/* Serves until ts_dicom_qr_scp_stop(), then waits for running associations. */
int ts_dicom_qr_scp_run(ts_dicom_qr_scp *scp, ts_err *err);
void ts_dicom_qr_scp_stop(ts_dicom_qr_scp *scp);
/* As ts_dicom_scp_active(). */
int ts_dicom_qr_scp_active(ts_dicom_qr_scp *scp);
void ts_dicom_qr_scp_free(ts_dicom_qr_scp *scp);

#ifdef __cplusplus
}
#endif

#endif
