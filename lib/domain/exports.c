/* Orthanc's /exports (see exports.h). */
#include "domain/exports.h"

#include <stdlib.h>

#include "base/config.h"

/* each resource with the identifiers of itself and its ancestors */
static const ts_db_stmt log_exports = {
    "exports_log",
    "INSERT INTO exports (level, public_id, remote, patient_id, study_uid, series_uid, sop_uid)"
    " SELECT r.level, r.public_id, $1, t.patient_id, t.study_uid, t.series_uid, t.sop_uid"
    " FROM jsonb_array_elements_text($2::jsonb) WITH ORDINALITY AS e(id, n)"
    " JOIN resources r ON r.public_id = e.id"
    " CROSS JOIN LATERAL ("
    "  WITH RECURSIVE up AS (SELECT x.id, x.parent_id FROM resources x WHERE x.id = r.id"
    "   UNION ALL SELECT x.id, x.parent_id FROM resources x JOIN up ON x.id = up.parent_id)"
    "  SELECT (SELECT p.patient_id FROM up JOIN patients p ON p.resource_id = up.id) patient_id,"
    "   (SELECT s.study_instance_uid FROM up JOIN studies s ON s.resource_id = up.id) study_uid,"
    "   (SELECT s.series_instance_uid FROM up JOIN series s ON s.resource_id = up.id) series_uid,"
    "   (SELECT i.sop_instance_uid FROM up JOIN instances i ON i.resource_id = up.id) sop_uid"
    " ) t ORDER BY e.n",
    2};

typedef struct log_arg {
    const char *params[2];
} log_arg;

static int log_txn(ts_db *db, void *arg, ts_err *err)
{
    log_arg *a = arg;
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &log_exports, a->params, &res, err);
    if (res)
        PQclear(res);
    return rc;
}

int ts_exports_log(ts_db_pool *db, const char *remote, const json_t *ids, ts_err *err)
{
    if (!ts_cfg_bool(TESSERA_LOG_EXPORTED_RESOURCES) || !json_array_size(ids))
        return 0;
    char *text = json_dumps(ids, JSON_COMPACT);
    if (!text)
        abort();
    log_arg a = {{remote, text}};
    int rc = ts_db_transaction(db, TS_DB_WRITE_READ_COMMITTED, log_txn, &a, err);
    free(text);
    return rc ? ts_err_prefix(err, "log exported resources") : 0;
}
