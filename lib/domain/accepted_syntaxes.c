#include "domain/accepted_syntaxes.h"

#include <stdlib.h>

#include "dicom/dicom.h"

static const ts_db_stmt select_syntaxes = {
    "accepted_syntaxes_get", "SELECT array_to_json(uids)::text FROM accepted_transfer_syntaxes", 0};

static const ts_db_stmt upsert_syntaxes = {
    "accepted_syntaxes_set",
    "INSERT INTO accepted_transfer_syntaxes (id, uids) "
    "SELECT true, coalesce(array_agg(u), '{}') FROM json_array_elements_text($1::json) u "
    "ON CONFLICT (id) DO UPDATE SET uids = excluded.uids, changed = now()",
    1};

static int get_txn(ts_db *db, void *arg, ts_err *err)
{
    json_t **out = arg;
    PGresult *res;
    int rc = ts_db_exec(db, &select_syntaxes, NULL, &res, err);
    if (rc)
        return rc;
    json_decref(*out);
    *out = PQntuples(res) ? json_loads(PQgetvalue(res, 0, 0), 0, NULL) : NULL;
    PQclear(res);
    return 0;
}

int ts_accepted_syntaxes_get(ts_db_pool *db, json_t **out, ts_err *err)
{
    json_t *uids = NULL;
    int rc = ts_db_transaction(db, TS_DB_READ_SINGLE, get_txn, &uids, err);
    if (rc) {
        json_decref(uids);
        return rc;
    }
    if (!json_is_array(uids)) {
        /* no row yet: everything ingest can store */
        json_decref(uids);
        uids = ts_dicom_storage_syntaxes();
    }
    *out = uids;
    return 0;
}

static int set_txn(ts_db *db, void *arg, ts_err *err)
{
    const char *params[] = {arg};
    return ts_db_exec(db, &upsert_syntaxes, params, NULL, err);
}

int ts_accepted_syntaxes_set(ts_db_pool *db, const json_t *uids, ts_err *err)
{
    char *text = json_dumps(uids, JSON_COMPACT);
    if (!text)
        abort();
    int rc = ts_db_transaction(db, TS_DB_WRITE, set_txn, text, err);
    free(text);
    return rc;
}
