/* GET/DELETE /exports (see rest_exports.h). */
#include "rest_exports.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rest_common.h"

/* Orthanc's ExportedResource::Format: the identifiers down to the resource's
 * own level */
static const ts_db_stmt exports = {
    "rest_exports",
    "WITH c AS (SELECT * FROM exports WHERE seq > $1::bigint ORDER BY seq LIMIT $2::bigint + 1),"
    " page AS (SELECT * FROM c ORDER BY seq LIMIT $2::bigint)"
    " SELECT jsonb_build_object("
    " 'Exports', coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object("
    "    'Date', tessera_orthanc_time(created_at), 'ID', public_id,"
    "    'Path', '/' || (ARRAY['patients','studies','series','instances'])[level + 1] || '/' ||"
    "     public_id,"
    "    'PatientID', patient_id, 'RemoteModality', remote,"
    "    'ResourceType', (ARRAY['Patient','Study','Series','Instance'])[level + 1],"
    "    'Seq', seq, 'StudyInstanceUID', study_uid,"
    "    'SeriesInstanceUID', CASE WHEN level >= 2 THEN series_uid END,"
    "    'SOPInstanceUID', CASE WHEN level = 3 THEN sop_uid END)) ORDER BY seq) FROM page), '[]'),"
    " 'Done', (SELECT count(*) FROM c) <= $2::bigint,"
    " 'Last', coalesce((SELECT max(seq) FROM page), $1::bigint))::text", /* Orthanc: since */
    2};
static const ts_db_stmt clear = {"rest_exports_clear", "DELETE FROM exports", 0};

typedef struct q_arg {
    const ts_db_stmt *stmt;
    const char *const *params;
    char *text;
} q_arg;

static int q_txn(ts_db *db, void *arg, ts_err *err)
{
    q_arg *q = arg;
    PGresult *res = NULL;
    int rc = ts_db_exec(db, q->stmt, q->params, &res, err);
    if (rc == 0 && PQntuples(res) == 1) {
        free(q->text);
        q->text = strdup(PQgetvalue(res, 0, 0));
    }
    if (res)
        PQclear(res);
    return rc;
}

void rest_exports(rest_request *req)
{
    bool del = strcmp(req->method, "DELETE") == 0;
    /* as /changes: a malformed since or limit reads as 0, limit at most 10,000 */
    long since = rest_arg_long(req, "since", 0), limit = rest_arg_long(req, "limit", 100);
    since = since < 0 ? 0 : since;
    limit = limit < 0 ? 0 : limit > 10000 ? 10000 : limit;
    char since_s[24], limit_s[24];
    snprintf(since_s, sizeof(since_s), "%ld", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    const char *params[] = {since_s, limit_s};
    q_arg q = {del ? &clear : &exports, params, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, del ? TS_DB_WRITE_READ_COMMITTED : TS_DB_READ_SINGLE,
                               q_txn, &q, &err);
    if (rc)
        rest_reply_failure(req, rc, err.msg);
    else if (del)
        rest_reply_json(req, 200, json_object());
    else
        rest_reply_json_text(req, 200, q.text ? q.text : "{}", strlen(q.text ? q.text : "{}"));
    free(q.text);
}
