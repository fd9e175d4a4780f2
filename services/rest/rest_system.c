/* /system, /statistics, /changes, the metrics and the /tools settings (see rest_system.h). */
#include "rest_system.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/accepted_syntaxes.h"
#include "domain/changes.h"
#include "base/config.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "base/metrics.h"
#include "rest_common.h"

#define TESSERA_VERSION "0.1.0"
/* The Orthanc release whose REST API we answer like; clients compare it to
 * decide which routes they may use. */
#define ORTHANC_API_VERSION "1.10.1"
#define ORTHANC_API_LEVEL 18

void rest_system(rest_request *req)
{
    json_t *b = json_object();
    json_object_set_new(b, "ApiVersion", json_integer(ORTHANC_API_LEVEL));
    json_object_set_new(b, "CheckRevisions", json_true());
    json_object_set_new(b, "DatabaseBackendPlugin", json_null());
    json_object_set_new(b, "DatabaseVersion", json_integer(6));
    json_object_set_new(b, "DicomAet", json_string(ts_cfg_str(TESSERA_DICOM_AET)));
    json_object_set_new(b, "DicomPort", json_integer(ts_cfg_int(TESSERA_DICOM_PORT)));
    json_object_set_new(b, "HttpPort", json_integer(ts_cfg_int(TESSERA_HTTP_PORT)));
    json_object_set_new(b, "IsHttpServerSecure", json_false());
    json_object_set_new(b, "Name", json_string(ts_cfg_str(TESSERA_NAME)));
    json_object_set_new(b, "PluginsEnabled", json_false());
    json_object_set_new(b, "StorageAreaPlugin", json_null());
    json_object_set_new(b, "Version", json_string(ORTHANC_API_VERSION));
    json_object_set_new(b, "TesseraVersion", json_string(TESSERA_VERSION));
    rest_reply_json(req, 200, b);
}

typedef struct text_result {
    const ts_db_stmt *stmt;
    const char *const *params;
    char *text;
} text_result;

static int text_txn(ts_db *db, void *arg, ts_err *err)
{
    text_result *t = arg;
    PGresult *res;
    int rc = ts_db_exec(db, t->stmt, t->params, &res, err);
    if (rc)
        return rc;
    free(t->text);
    t->text = strdup(PQntuples(res) && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : "null");
    PQclear(res);
    return 0;
}

static void reply_query(rest_request *req, const ts_db_stmt *stmt, const char *const *params)
{
    text_result t = {stmt, params, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ_SINGLE, text_txn, &t, &err);
    if (rc)
        rest_reply_failure(req, rc, err.msg);
    else
        rest_reply_json_text(req, 200, t.text, strlen(t.text));
    free(t.text);
}

/* From the counters that triggers maintain (db/migrations/0025_statistics_counters.sql):
 * 64 rows to sum whatever the size of the archive. They count what is indexed,
 * and the sizes of the attachments of indexed resources. */
static const ts_db_stmt statistics = {
    "rest_statistics",
    "SELECT jsonb_build_object("
    " 'CountPatients', s.patients, 'CountStudies', s.studies,"
    " 'CountSeries', s.series, 'CountInstances', s.instances,"
    " 'TotalDiskSize', s.disk::text, 'TotalDiskSizeMB', s.disk / 1048576,"
    " 'TotalUncompressedSize', s.raw::text, 'TotalUncompressedSizeMB', s.raw / 1048576)"
    " FROM (SELECT sum(patients)::bigint AS patients, sum(studies)::bigint AS studies,"
    "              sum(series)::bigint AS series, sum(instances)::bigint AS instances,"
    "              sum(disk_size)::bigint AS disk, sum(raw_size)::bigint AS raw"
    "       FROM statistics_counters) s",
    0};

void rest_statistics(rest_request *req)
{
    reply_query(req, &statistics, NULL);
}

/* Last of a page without changes is the newest Seq given (change_counter): the
 * log may have been emptied since (the last patient deleted, as in Orthanc). */
static const ts_db_stmt changes = {
    "rest_changes",
    "WITH c AS (SELECT seq, change_type, level, public_id, created_at FROM changes"
    "           WHERE seq > $1::bigint ORDER BY seq LIMIT $2::bigint + 1),"
    " page AS (SELECT * FROM c ORDER BY seq LIMIT $2::bigint)"
    " SELECT jsonb_build_object("
    " 'Changes', coalesce((SELECT jsonb_agg(jsonb_build_object("
    "    'ChangeType', change_type, 'Date', tessera_orthanc_time(created_at),"
    "    'ID', public_id,"
    "    'Path', '/' || (ARRAY['patients','studies','series','instances'])[level + 1] || '/' || "
    "public_id,"
    "    'ResourceType', (ARRAY['Patient','Study','Series','Instance'])[level + 1],"
    "    'Seq', seq) ORDER BY seq) FROM page), '[]'),"
    " 'Done', (SELECT count(*) FROM c) <= $2::bigint,"
    " 'Last', coalesce((SELECT max(seq) FROM page), (SELECT last_seq FROM change_counter)))",
    2};

static const ts_db_stmt last_change = {
    "rest_last_change",
    "SELECT jsonb_build_object('Changes', coalesce((SELECT jsonb_agg(jsonb_build_object("
    "    'ChangeType', change_type, 'Date', tessera_orthanc_time(created_at),"
    "    'ID', public_id,"
    "    'Path', '/' || (ARRAY['patients','studies','series','instances'])[level + 1] || '/' || "
    "public_id,"
    "    'ResourceType', (ARRAY['Patient','Study','Series','Instance'])[level + 1],"
    "    'Seq', seq)) FROM (SELECT * FROM changes WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1) "
    "l), '[]'),"
    " 'Done', true, 'Last', (SELECT last_seq FROM change_counter))",
    0};

/* GET /changes [?since=N] [?limit=N] [?last] */
void rest_changes(rest_request *req)
{
    /* Number what has committed so far, so that a client that just stored
     * something sees it (waiting for another process's pass: returning at once
     * left a change committed just before unnumbered, and unlisted). */
    ts_err err;
    if (ts_changes_sequence(req->ctx->db, true, NULL, &err))
        ts_warn("cannot number changes before reading them", "error=\"%s\"", err.msg);
    if (rest_flag(req, "last")) {
        reply_query(req, &last_change, NULL);
        return;
    }
    /* Orthanc reads a malformed since or limit as 0 here (not an error). */
    long since = rest_arg_long(req, "since", 0);
    long limit = rest_arg_long(req, "limit", 100);
    if (since < 0)
        since = 0;
    if (limit < 0)
        limit = 0;
    if (limit > 10000)
        limit = 10000;
    char since_s[24], limit_s[24];
    snprintf(since_s, sizeof(since_s), "%ld", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    const char *params[] = {since_s, limit_s};
    reply_query(req, &changes, params);
}

/* DELETE /changes: Orthanc's "clear the change log". Tessera keeps what the
 * router has not dispatched yet (router_cursor), or a rule would miss it;
 * the newest Seq given stays /changes' Last, so a client's since= still works. */
void rest_delete_changes(rest_request *req)
{
    ts_err err;
    long deleted = 0;
    int rc = ts_changes_sequence(req->ctx->db, true, NULL, &err);
    if (rc == 0)
        rc = ts_changes_prune(req->ctx->db, -1, 0, &deleted, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return;
    }
    ts_info("change log cleared", "rows=%ld", deleted);
    rest_reply_text(req, 200, "", 0);
}

/* GET /tools/metrics-prometheus: Orthanc's route for the process's metrics
 * (also on TESSERA_METRICS_PORT/metrics): requests, time and database round
 * trips per route, pool replays, ... */
void rest_metrics_prometheus(rest_request *req)
{
    char *text = ts_metrics_render();
    rest_reply_text(req, 200, text, strlen(text));
    req->content_type = "text/plain; version=0.0.4";
    free(text);
}

/* A PUT refused because Tessera keeps the setting fixed (docs/conformance.md). */
static void reply_fixed(rest_request *req, const char *what)
{
    char details[160];
    snprintf(details, sizeof(details), "%s cannot be changed while Tessera runs", what);
    rest_reply_oe(req, TS_OE_NOT_IMPLEMENTED, details);
}

/* The PUT body as a short word, white space around it ignored; "" when longer. */
static void body_word(rest_request *req, char *out, size_t size)
{
    size_t n;
    const char *s = rest_body_trimmed(req, &n);
    if (n >= size)
        n = 0;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Orthanc's Encoding names (its EnumerationToString). */
static const char *const encodings[] = {
    "Ascii",  "Utf8",     "Latin1",      "Latin2", "Latin3",        "Latin4",
    "Latin5", "Cyrillic", "Windows1251", "Arabic", "Greek",         "Hebrew",
    "Thai",   "Japanese", "Chinese",     "Korean", "JapaneseKanji", "SimplifiedChinese"};

/* GET/PUT /tools/default-encoding: files without Specific Character Set are read
 * as Latin-1 in every service (Orthanc's default); only that value is taken. */
void rest_default_encoding(rest_request *req)
{
    if (strcmp(req->method, "GET") == 0) {
        rest_reply_text(req, 200, "Latin1", 6);
        req->content_type = "text/plain";
        return;
    }
    char word[32];
    body_word(req, word, sizeof(word));
    bool known = false;
    for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++)
        known = known || strcmp(word, encodings[i]) == 0;
    if (!known) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
        return;
    }
    if (strcmp(word, "Latin1") != 0) {
        reply_fixed(req, "the default encoding");
        return;
    }
    rest_reply_text(req, 200, "Latin1", 6);
    req->content_type = "text/plain";
}

/* GET/PUT /tools/accepted-transfer-syntaxes: what every ingest replica accepts for
 * storage, kept in PostgreSQL (lib/domain/accepted_syntaxes.h) and read by ingest at
 * each association. PUT takes Orthanc's body: a JSON string or list of UIDs with
 * wildcards, or a bare pattern that is not JSON; the answer is the new list. */
void rest_accepted_transfer_syntaxes(rest_request *req)
{
    ts_err err;
    ts_err_clear(&err);
    json_t *uids = NULL;
    if (strcmp(req->method, "PUT") == 0) {
        /* as Orthanc's JsonCpp reads it: the first JSON value, whatever follows it
         * (so a bare "1.2.840..." is the number 1.2, refused) */
        json_t *body = json_loadb(req->body ? req->body : "", req->body_len,
                                  JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, NULL);
        if (!body) /* a body that is not JSON is one pattern */
            body = json_stringn_nocheck(req->body ? req->body : "", req->body_len);
        int rc = ts_dicom_storage_syntaxes_match(body, &uids, &err);
        json_decref(body);
        if (rc) {
            rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, err.msg);
            return;
        }
        rc = ts_accepted_syntaxes_set(req->ctx->db, uids, &err);
        if (rc) {
            json_decref(uids);
            rest_reply_failure(req, rc, err.msg);
            return;
        }
        /* the list written, not read back: a read replica may lag behind */
        rest_reply_json(req, 200, uids);
        return;
    }
    int rc = ts_accepted_syntaxes_get(req->ctx->db, &uids, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return;
    }
    rest_reply_json(req, 200, uids);
}

/* GET/PUT /tools/unknown-sop-class-accepted: the storage SCP accepts the storage
 * SOP classes dcmtk knows, and no other ("0", Orthanc's default). */
void rest_unknown_sop_class_accepted(rest_request *req)
{
    if (strcmp(req->method, "GET") == 0) {
        rest_reply_text(req, 200, "0", 1);
        req->content_type = "text/plain";
        return;
    }
    char word[16];
    body_word(req, word, sizeof(word));
    if (strcmp(word, "0") == 0 || strcmp(word, "false") == 0) {
        rest_reply_text(req, 200, "", 0);
        req->content_type = "text/plain";
    } else if (strcmp(word, "1") == 0 || strcmp(word, "true") == 0) {
        reply_fixed(req, "the acceptance of unknown SOP classes");
    } else {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected");
    }
}

/* Orthanc's verbosity names over this service's level: "default" is the
 * TESSERA_LOG_LEVEL it started with, "verbose" and "trace" are debug. The name
 * last set is answered (two names share one level). */
static pthread_mutex_t log_level_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_level_name[16] = "default";

void rest_log_level(rest_request *req)
{
    pthread_mutex_lock(&log_level_mu);
    if (strcmp(req->method, "GET") == 0) {
        rest_reply_text(req, 200, log_level_name, strlen(log_level_name));
        req->content_type = "text/plain";
        pthread_mutex_unlock(&log_level_mu);
        return;
    }
    char word[16];
    body_word(req, word, sizeof(word));
    ts_log_level level;
    if (strcmp(word, "default") == 0) {
        if (!ts_log_level_parse(ts_cfg_str(TESSERA_LOG_LEVEL), &level))
            level = TS_LOG_INFO;
    } else if (strcmp(word, "verbose") == 0 || strcmp(word, "trace") == 0) {
        level = TS_LOG_DEBUG;
    } else {
        pthread_mutex_unlock(&log_level_mu);
        char details[96];
        snprintf(details, sizeof(details),
                 "Verbosity can be \"default\", \"verbose\" or \"trace\": %.40s", word);
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return;
    }
    snprintf(log_level_name, sizeof(log_level_name), "%s", word);
    ts_log_set_level(level);
    pthread_mutex_unlock(&log_level_mu);
    rest_reply_text(req, 200, "", 0);
    req->content_type = "text/plain";
}
