/* Who may do what over DICOM: the grants of a calling AE title and the audit
 * of each request, shared by every SCP (ingest's port, query's port).
 *
 * Grants come from the modalities table (the cluster's /modalities): a
 * registered AE title follows its AllowStore, AllowFind, AllowMove, AllowGet
 * and AllowedLabels (migration 0027: NULL every study; else only the studies
 * carrying one of the labels, with their series, instances and patients, as
 * for a label-scoped REST caller). An AE title that is not registered follows
 * TESSERA_DICOM_ALWAYS_ALLOW_{STORE,FIND,MOVE,GET} (Orthanc's names). Unlike
 * Orthanc 1.10.1, where DicomAlwaysAllowStore=true lets a registered modality
 * with AllowStore=false store anyway, a registered AE's own flags always
 * decide here: an explicit refusal is kept. Several rows with one AE title:
 * each operation is allowed if one row allows it, labels are their union
 * (and no restriction if one row has none).
 *
 * A refusal answers 0x0124 "Refused: Not Authorized" (PS3.7 C.5.4), in the
 * request's response: the association stays up for what the AE may do.
 *
 * Lookups are cached per process for TESSERA_DICOM_GRANTS_CACHE seconds, so
 * a C-STORE does not cost a query each. Every request (allowed or not) is an
 * audit event (domain/audit.h), queued, never waited for. */
#ifndef TS_DICOM_ACCESS_H
#define TS_DICOM_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "domain/audit.h"
#include "io/db.h"

typedef enum ts_dicom_op {
    TS_DICOM_OP_STORE,
    TS_DICOM_OP_FIND,
    TS_DICOM_OP_MOVE,
    TS_DICOM_OP_GET,
    TS_DICOM_OP_COUNT
} ts_dicom_op;

/* PS3.7 C.5.4: the DIMSE service user was not authorized to invoke the operation. */
#define TS_DIMSE_NOT_AUTHORIZED 0x0124

typedef struct ts_dicom_grant {
    bool known; /* the AE title is in the modalities table */
    bool allow[TS_DICOM_OP_COUNT];
    bool restricted;     /* only the studies carrying one of labels */
    const char **labels; /* valid label names ([A-Za-z0-9_-]{1,64}) */
    size_t nlabels;
    char *buf; /* owns the names */
} ts_dicom_grant;

typedef struct ts_dicom_access_config {
    bool always_allow[TS_DICOM_OP_COUNT]; /* for AE titles not registered */
    int cache_s;                          /* 0: no cache */
} ts_dicom_access_config;

typedef struct ts_dicom_access ts_dicom_access;

/* The settings' configuration (TESSERA_DICOM_ALWAYS_ALLOW_*, _GRANTS_CACHE). */
void ts_dicom_access_config_from_settings(ts_dicom_access_config *cfg);
/* db: where the modalities are; audit may be NULL (no trail). */
ts_dicom_access *ts_dicom_access_new(ts_db_pool *db, const ts_dicom_access_config *cfg,
                                     ts_audit *audit);
void ts_dicom_access_free(ts_dicom_access *a);

/* The grant of aet (a copy: ts_dicom_grant_clear() it). */
int ts_dicom_access_lookup(ts_dicom_access *a, const char *aet, ts_dicom_grant *out, ts_err *err);
void ts_dicom_grant_clear(ts_dicom_grant *g);
/* TESSERA_DICOM_REGISTERED_AES_ONLY's check at association: whether aet is in
 * the modalities table; false (logged) when the table cannot be read. */
bool ts_dicom_access_registered(ts_dicom_access *a, const char *aet);

/* Whether the association's calling AE title may do op: TS_QR_SUCCESS with
 * *g filled (cleared by the caller), TS_DIMSE_NOT_AUTHORIZED or 0xA700 (the
 * grants could not be read: refused, never let through) with comment filled,
 * the refusal logged. a NULL: everything allowed, no restriction. */
uint16_t ts_dicom_access_check(ts_dicom_access *a, const ts_dicom_assoc *assoc, ts_dicom_op op,
                               ts_dicom_grant *g, char *comment, size_t comment_size);

/* Records one request in the audit trail: who is the calling AE title,
 * source the peer's address, request says e.g. "C-MOVE STUDY to DEST",
 * resources the UIDs concerned (comma-separated), outcome the final DIMSE
 * status. */
void ts_dicom_access_audit(ts_dicom_access *a, const ts_dicom_assoc *assoc, ts_dicom_op op,
                           const char *request, const char *resources, uint16_t status);

/* The identifier's unique keys that carry a value (PatientID, StudyInstanceUID,
 * SeriesInstanceUID, SOPInstanceUID, AccessionNumber) as the audit's
 * resources: comma-separated, cut to size. */
void ts_dicom_access_keys(const ts_dicom_find_key *keys, size_t n, char *buf, size_t size);

#endif
