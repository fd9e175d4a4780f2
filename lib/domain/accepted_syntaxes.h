/* The transfer syntaxes the cluster's ingest replicas accept for storage
 * (Orthanc's /tools/accepted-transfer-syntaxes), shared through PostgreSQL: it
 * owns the table accepted_transfer_syntaxes (0030), one row or none (none: every
 * syntax ingest can store, ts_dicom_storage_syntaxes()). rest writes it on PUT,
 * ingest reads it at each association (one primary-key read). */
#ifndef TS_ACCEPTED_SYNTAXES_H
#define TS_ACCEPTED_SYNTAXES_H

#include <jansson.h>

#include "base/err.h"
#include "io/db.h"

/* The accepted UIDs as a sorted JSON array (the caller decrefs *out). */
int ts_accepted_syntaxes_get(ts_db_pool *db, json_t **out, ts_err *err);

/* Replaces the accepted list by uids (a JSON array of UIDs; not stolen). */
int ts_accepted_syntaxes_set(ts_db_pool *db, const json_t *uids, ts_err *err);

#endif
