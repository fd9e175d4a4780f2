/* DICOM modalities shared by the cluster (the `modalities` table), with
 * Orthanc's shapes: GET /modalities (names; ?expand: name -> configuration),
 * GET /modalities/{id} (the operations), GET /modalities/{id}/configuration,
 * PUT (Orthanc's array form ["AET", "host", port(, "Manufacturer")] or object
 * form {"AET", "Host", "Port", "Manufacturer", "Allow*", "LocalAet", "Timeout",
 * "UseDicomTls" (every association to it over DICOM TLS), and Tessera's
 * "AllowedLabels" (the labels whose studies the AE may query and retrieve,
 * lib/domain/dicom_access.h; absent or null: every study)}), DELETE,
 * POST /modalities/{id}/echo (C-ECHO from this process) and
 * POST /modalities/{id}/store (a DicomModalityStore job, rest_jobs.c). */
#include "rest_modalities.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "domain/exports.h"
#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_jobs.h"
#include "rest_labels.h"

/* JSON bodies of these routes are small; a list of resources to send is
 * bounded too (about 90,000 ids). */
#define MODALITY_BODY_MAX (64 * 1024)
#define STORE_BODY_MAX (4 * 1024 * 1024)
#define NAME_MAX_LEN 64

static const ts_db_stmt list_modalities = {
    "rest_list_modalities",
    "SELECT name, aet, host, port::text, manufacturer, allow_echo::text, allow_find::text,"
    " allow_get::text, allow_move::text, allow_store::text, local_aet, timeout::text,"
    " allow_find_worklist::text, allow_n_action::text, allow_event_report::text,"
    " allow_transcoding::text, use_dicom_tls::text,"
    " CASE WHEN allowed_labels IS NULL THEN '' ELSE array_to_json(allowed_labels)::text END"
    " FROM modalities"
    " WHERE $1::text IS NULL OR name = $1 ORDER BY name",
    1};

static const ts_db_stmt put_modality = {
    "rest_put_modality",
    "INSERT INTO modalities (name, aet, host, port, manufacturer, allow_echo, allow_find,"
    " allow_get, allow_move, allow_store, local_aet, timeout, allow_find_worklist,"
    " allow_n_action, allow_event_report, allow_transcoding, allowed_labels, use_dicom_tls)"
    " VALUES ($1, $2, $3, $4::integer, $5, $6::boolean, $7::boolean, $8::boolean, $9::boolean,"
    " $10::boolean, $11, $12::integer, $13::boolean, $14::boolean, $15::boolean, $16::boolean,"
    " $17::text[], $18::boolean)"
    " ON CONFLICT (name) DO UPDATE SET aet = excluded.aet, host = excluded.host,"
    " port = excluded.port, manufacturer = excluded.manufacturer,"
    " allow_echo = excluded.allow_echo, allow_find = excluded.allow_find,"
    " allow_get = excluded.allow_get, allow_move = excluded.allow_move,"
    " allow_store = excluded.allow_store, local_aet = excluded.local_aet,"
    " timeout = excluded.timeout, allow_find_worklist = excluded.allow_find_worklist,"
    " allow_n_action = excluded.allow_n_action, allow_event_report = excluded.allow_event_report,"
    " allow_transcoding = excluded.allow_transcoding,"
    " allowed_labels = excluded.allowed_labels, use_dicom_tls = excluded.use_dicom_tls,"
    " updated_at = now()",
    18};

static const ts_db_stmt delete_modality = {
    "rest_delete_modality", "DELETE FROM modalities WHERE name = $1 RETURNING name", 1};

/* Expands resources of any level to their instances: the number of the given
 * ids found, the instances' ids in the order they arrived, and the bytes of
 * their DICOM files. */
static const ts_db_stmt expand_instances = {
    "rest_expand_instances",
    "WITH RECURSIVE given AS ("
    "  SELECT id, level FROM resources WHERE public_id = ANY ($1::text[])),"
    " d AS (SELECT id, level FROM given"
    "  UNION SELECT r.id, r.level FROM resources r JOIN d ON r.parent_id = d.id"
    "  WHERE d.level < 3)"
    " SELECT (SELECT count(*) FROM given)::text,"
    "  coalesce((SELECT json_agg(r.public_id ORDER BY r.id) FROM d"
    "   JOIN resources r ON r.id = d.id WHERE d.level = 3), '[]')::text,"
    "  (SELECT coalesce(sum(a.uncompressed_size), 0) FROM d"
    "   JOIN attachments a ON a.resource_id = d.id AND a.content_type = 1"
    "   WHERE d.level = 3)::text",
    1};

/* ---- reading ------------------------------------------------------------ */

typedef struct modality_rows {
    const char *name; /* NULL: all */
    json_t *out;      /* name -> configuration */
} modality_rows;

static json_t *configuration_of(PGresult *res, int row)
{
    /* Orthanc's keys, sorted as Orthanc writes them, each as it was given
     * (0022_modality_options.sql says what Tessera does with which) */
#define B(col) json_boolean(strcmp(PQgetvalue(res, row, col), "true") == 0)
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:s, s:s, s:i, s:i,"
                     " s:o}",
                     "AET", PQgetvalue(res, row, 1), "AllowEcho", B(5), "AllowEventReport", B(14),
                     "AllowFind", B(6), "AllowFindWorklist", B(12), "AllowGet", B(7), "AllowMove",
                     B(8), "AllowNAction", B(13), "AllowStore", B(9), "AllowTranscoding", B(15),
                     "Host", PQgetvalue(res, row, 2), "LocalAet", PQgetvalue(res, row, 10),
                     "Manufacturer", PQgetvalue(res, row, 4), "Port", atoi(PQgetvalue(res, row, 3)),
                     "Timeout", atoi(PQgetvalue(res, row, 11)), "UseDicomTls", B(16));
#undef B
}

/* Orthanc's configuration, with Tessera's AllowedLabels when the modality has them. */
static json_t *configuration_with_labels(PGresult *res, int row)
{
    json_t *conf = configuration_of(res, row);
    const char *labels = PQgetvalue(res, row, 17);
    if (*labels)
        json_object_set_new(conf, "AllowedLabels", json_loads(labels, 0, NULL));
    return conf;
}

static int rows_txn(ts_db *db, void *arg, ts_err *err)
{
    modality_rows *m = arg;
    const char *params[] = {m->name};
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &list_modalities, params, &res, err);
    if (rc)
        return rc;
    json_decref(m->out);
    m->out = json_object();
    for (int row = 0; row < PQntuples(res); row++)
        json_object_set_new(m->out, PQgetvalue(res, row, 0), configuration_with_labels(res, row));
    PQclear(res);
    return 0;
}

/* The configuration of one modality, or NULL after answering (404 or a failure). */
static json_t *find_modality(rest_request *req, const char *name, bool empty_404)
{
    modality_rows m = {name, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ, rows_txn, &m, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        json_decref(m.out);
        return NULL;
    }
    json_t *conf = json_incref(json_object_get(m.out, name));
    json_decref(m.out);
    if (!conf) {
        if (empty_404) {
            rest_reply_empty(req, 404);
        } else {
            char details[160];
            snprintf(details, sizeof(details), "No modality with symbolic name: %.100s", name);
            rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, details);
        }
    }
    return conf;
}

void rest_list_modalities(rest_request *req)
{
    modality_rows m = {NULL, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ, rows_txn, &m, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        json_decref(m.out);
        return;
    }
    if (rest_flag(req, "expand")) {
        rest_reply_json(req, 200, m.out);
        return;
    }
    json_t *names = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(m.out, k, v) json_array_append_new(names, json_string(k));
    json_decref(m.out);
    rest_reply_json(req, 200, names);
}

void rest_get_modality(rest_request *req)
{
    json_t *conf = find_modality(req, req->seg[1], true);
    if (!conf)
        return;
    json_decref(conf);
    /* the operations of a modality that Tessera serves */
    rest_reply_json(req, 200,
                    json_pack("[s, s, s, s, s, s]", "configuration", "echo", "move", "query",
                              "store", "store-straight"));
}

void rest_get_modality_configuration(rest_request *req)
{
    json_t *conf = find_modality(req, req->seg[1], false);
    if (conf)
        rest_reply_json(req, 200, conf);
}

/* ---- writing ------------------------------------------------------------ */

/* Orthanc's manufacturers, and the obsolete names it still accepts. */
static const char *manufacturer_of(const char *s)
{
    static const char *const known[] = {"Generic", "GenericNoWildcardInDates",
                                        "GenericNoUniversalWildcard", "Vitrea", "GE"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(s, known[i]) == 0)
            return known[i];
    if (strcmp(s, "AgfaImpax") == 0 || strcmp(s, "SyngoVia") == 0)
        return "GenericNoWildcardInDates";
    if (strcmp(s, "EFilm2") == 0 || strcmp(s, "MedInria") == 0 || strcmp(s, "ClearCanvas") == 0 ||
        strcmp(s, "Dcm4Chee") == 0 || strcmp(s, "StoreScp") == 0)
        return "Generic";
    return NULL;
}

static bool bad_format(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, details);
    return false;
}

/* Port as Orthanc takes it: a number or a string of digits, 1..65534. */
static bool parse_port(rest_request *req, const json_t *v, int *port)
{
    long long p;
    if (json_is_integer(v)) {
        p = json_integer_value(v);
    } else if (json_is_string(v)) {
        char *end;
        const char *s = json_string_value(v);
        p = strtoll(s, &end, 10);
        if (end == s || *end)
            return bad_format(req, NULL);
    } else {
        return bad_format(req, NULL);
    }
    if (p < 1 || p > 65534) {
        char details[128];
        snprintf(details, sizeof(details),
                 "A TCP port number must be in range [1..65534], but found: %lld", p);
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return false;
    }
    *port = (int)p;
    return true;
}

#define MODALITY_FLAGS 9

typedef struct modality_in {
    const char *aet, *host, *manufacturer;
    const char *local_aet; /* "": none */
    int port;
    int timeout; /* 0: none */
    /* echo, find, get, move, store, find-worklist, n-action, event-report, transcoding */
    bool allow[MODALITY_FLAGS];
    char *labels; /* AllowedLabels as a text[] literal ("{a,b}"), NULL: every study */
    bool tls;     /* UseDicomTls */
} modality_in;

/* Tessera's AllowedLabels: null or an array of label names. */
static bool parse_allowed_labels(rest_request *req, const json_t *body, modality_in *m)
{
    const json_t *l = json_object_get(body, "AllowedLabels");
    if (!l || json_is_null(l))
        return true;
    if (!json_is_array(l))
        return bad_format(req, "Array of labels expected in field: AllowedLabels");
    size_t n = json_array_size(l), len = 3;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(l, i));
        if (!s || !rest_label_is_valid(s)) {
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                          "AllowedLabels: each label has 1 to 64 characters among A-Z, a-z, 0-9, "
                          "'_' and '-'");
            return false;
        }
        len += strlen(s) + 1;
    }
    m->labels = calloc(1, len);
    if (!m->labels)
        abort();
    size_t off = (size_t)snprintf(m->labels, len, "{");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(m->labels + off, len - off, "%s%s", i ? "," : "",
                                json_string_value(json_array_get(l, i)));
    snprintf(m->labels + off, len - off, "}");
    return true;
}

/* LocalAet and Timeout of the object form, checked as Orthanc checks them; an
 * AE title has 16 characters at most (PS3.5 6.2), which Orthanc does not check
 * (every association would fail), and a Timeout is within the one of the
 * requests' (dicom_options). */
static bool parse_local_settings(rest_request *req, const json_t *body, modality_in *m)
{
    const json_t *l = json_object_get(body, "LocalAet");
    if (l && !json_is_string(l))
        return bad_format(req, "String value expected in field: LocalAet");
    if (l && strlen(json_string_value(l)) > 16) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "the LocalAet must have 16 characters at most");
        return false;
    }
    m->local_aet = l ? json_string_value(l) : "";
    const json_t *t = json_object_get(body, "Timeout");
    if (t && !json_is_integer(t))
        return bad_format(req, "Integer value expected in field: Timeout");
    if (t && json_integer_value(t) < 0)
        return bad_format(req, "Unsigned integer value expected in field: Timeout");
    if (t && json_integer_value(t) > 3600) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "the Timeout must be 3600 seconds at most");
        return false;
    }
    m->timeout = t ? (int)json_integer_value(t) : 0;
    return true;
}

static bool parse_modality(rest_request *req, const json_t *body, modality_in *m)
{
    m->manufacturer = "Generic";
    m->local_aet = "";
    m->timeout = 0;
    m->labels = NULL;
    m->tls = false;
    for (int i = 0; i < MODALITY_FLAGS; i++)
        m->allow[i] = true;
    const json_t *aet, *host, *port, *manufacturer = NULL;
    if (json_is_array(body)) {
        if (json_array_size(body) != 3 && json_array_size(body) != 4)
            return bad_format(req, NULL);
        aet = json_array_get(body, 0);
        host = json_array_get(body, 1);
        port = json_array_get(body, 2);
        manufacturer = json_array_get(body, 3);
        if (!json_is_string(aet) || !json_is_string(host))
            return bad_format(req, NULL);
    } else if (json_is_object(body)) {
        aet = json_object_get(body, "AET");
        host = json_object_get(body, "Host");
        port = json_object_get(body, "Port");
        manufacturer = json_object_get(body, "Manufacturer");
        if (!json_is_string(aet))
            return bad_format(req, "String value expected in field: AET");
        if (!json_is_string(host))
            return bad_format(req, "String value expected in field: Host");
        if (!port)
            return bad_format(req, NULL);
        /* as Orthanc reads them: AllowStorageCommitment (index 9, not stored)
         * last, over AllowNAction and AllowEventReport; UseDicomTls (10) */
        static const char *const keys[] = {"AllowEcho",        "AllowFind",
                                           "AllowGet",         "AllowMove",
                                           "AllowStore",       "AllowFindWorklist",
                                           "AllowNAction",     "AllowEventReport",
                                           "AllowTranscoding", "AllowStorageCommitment",
                                           "UseDicomTls"};
        for (int i = 0; i < (int)(sizeof(keys) / sizeof(keys[0])); i++) {
            const json_t *v = json_object_get(body, keys[i]);
            if (v && !json_is_boolean(v)) {
                char details[96];
                snprintf(details, sizeof(details), "Boolean value expected in field: %s", keys[i]);
                return bad_format(req, details);
            }
            if (v && i < MODALITY_FLAGS)
                m->allow[i] = json_is_true(v);
            else if (v && i == MODALITY_FLAGS)
                m->allow[6] = m->allow[7] = json_is_true(v);
        }
        m->tls = json_is_true(json_object_get(body, "UseDicomTls"));
        if (!parse_local_settings(req, body, m) || !parse_allowed_labels(req, body, m))
            return false;
    } else {
        return bad_format(req, NULL);
    }
    if (!parse_port(req, port, &m->port))
        return false;
    if (manufacturer) {
        const char *name = json_string_value(manufacturer);
        m->manufacturer = name ? manufacturer_of(name) : NULL;
        if (!m->manufacturer) {
            char details[160];
            snprintf(details, sizeof(details), "Unknown modality manufacturer: \"%.100s\"",
                     name ? name : "");
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
            return false;
        }
    }
    m->aet = json_string_value(aet);
    m->host = json_string_value(host);
    /* an AE title has 16 characters at most (PS3.5 6.2): refuse what no peer accepts */
    if (!m->aet[0] || strlen(m->aet) > 16 || !m->host[0] || strlen(m->host) > 255) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "the AET must have 1 to 16 characters and the Host 1 to 255");
        return false;
    }
    return true;
}

static bool name_ok(rest_request *req, const char *name)
{
    if (strlen(name) > NAME_MAX_LEN) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "a modality's symbolic name has 64 characters at most");
        return false;
    }
    return true;
}

void rest_put_modality(rest_request *req)
{
    if (!name_ok(req, req->seg[1]) || !rest_body_within(req, MODALITY_BODY_MAX))
        return;
    json_error_t jerr;
    json_t *body = req->body ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    modality_in m;
    if (!body) {
        bad_format(req, NULL);
        return;
    }
    if (!parse_modality(req, body, &m)) {
        free(m.labels);
        json_decref(body);
        return;
    }
    char port[16], timeout[16];
    snprintf(port, sizeof(port), "%d", m.port);
    snprintf(timeout, sizeof(timeout), "%d", m.timeout);
    const char *b[MODALITY_FLAGS];
    for (int i = 0; i < MODALITY_FLAGS; i++)
        b[i] = m.allow[i] ? "true" : "false";
    const char *params[] = {
        req->seg[1], m.aet, m.host, port, m.manufacturer, b[0],
        b[1],        b[2],  b[3],   b[4], m.local_aet,    timeout,
        b[5],        b[6],  b[7],   b[8], m.labels,       m.tls ? "true" : "false"};
    rest_row r = {&put_modality, params, 0, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        ts_info("modality stored", "name=%s aet=%s host=%s port=%d", req->seg[1], m.aet, m.host,
                m.port);
        rest_reply_text(req, 200, "", 0);
    }
    rest_row_clear(&r);
    free(m.labels);
    json_decref(body);
}

void rest_delete_modality(rest_request *req)
{
    const char *params[] = {req->seg[1]};
    rest_row r = {&delete_modality, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_WRITE, &r))
        return;
    if (r.col[0]) {
        ts_info("modality deleted", "name=%s", req->seg[1]);
        rest_reply_text(req, 200, "", 0);
    } else {
        char details[160];
        snprintf(details, sizeof(details), "Unknown DICOM modality with symbolic name: %.100s",
                 req->seg[1]);
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, details);
    }
    rest_row_clear(&r);
}

/* ---- DICOM -------------------------------------------------------------- */

/* Timeout and LocalAet of an optional JSON object body (0, the peer's or
 * TESSERA_DICOM_TIMEOUT, and TESSERA_DICOM_AET when absent); false after
 * answering. */
static bool dicom_options(rest_request *req, const json_t *body, int *timeout, const char **local)
{
    *timeout = 0;
    *local = ts_cfg_str(TESSERA_DICOM_AET);
    if (!json_is_object(body))
        return true;
    const json_t *t = json_object_get(body, "Timeout");
    if (t && (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > 3600))
        return bad_format(req, "Integer value between 0 and 3600 expected in field: Timeout");
    if (t)
        *timeout = (int)json_integer_value(t);
    const json_t *l = json_object_get(body, "LocalAet");
    if (l && (!json_is_string(l) || !json_string_value(l)[0] || strlen(json_string_value(l)) > 16))
        return bad_format(req, "String value of 1 to 16 characters expected in field: LocalAet");
    if (l)
        *local = json_string_value(l);
    return true;
}

json_t *rest_modality_find(rest_request *req, const char *name)
{
    return find_modality(req, name, false);
}

void rest_modality_settings(const json_t *conf, int *timeout, const char **local)
{
    const char *l = json_string_value(json_object_get(conf, "LocalAet"));
    if (l && *l)
        *local = l;
    int t = (int)json_integer_value(json_object_get(conf, "Timeout"));
    if (*timeout <= 0 && t > 0)
        *timeout = t;
}

void rest_modality_echo(rest_request *req)
{
    if (!rest_body_within(req, MODALITY_BODY_MAX))
        return;
    json_error_t jerr;
    json_t *body = req->body_len ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    json_t *conf = find_modality(req, req->seg[1], false);
    int timeout;
    const char *local;
    if (!conf || !dicom_options(req, body, &timeout, &local))
        goto out;
    rest_modality_settings(conf, &timeout, &local);
    ts_dicom_peer peer = {.our_aet = local,
                          .aet = json_string_value(json_object_get(conf, "AET")),
                          .host = json_string_value(json_object_get(conf, "Host")),
                          .port = (int)json_integer_value(json_object_get(conf, "Port")),
                          .timeout_s =
                              timeout > 0 ? timeout : (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
                          .tls = json_is_true(json_object_get(conf, "UseDicomTls"))};
    ts_err err;
    if (ts_dicom_echo(&peer, &err)) {
        ts_info("echo failed", "modality=%s error=\"%s\"", req->seg[1], err.msg);
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, err.msg);
        goto out;
    }
    rest_reply_json(req, 200, json_object());
out:
    json_decref(conf);
    json_decref(body);
}

/* POST /modalities/{id}/store-straight: the body (a DICOM file) goes to the
 * modality with C-STORE at once, not through a job, as in Orthanc 1.10.1; the
 * answer names what was sent. The file is written to the storage area for the
 * time of the C-STORE (an intent: a crash leaves nothing for good). */
void rest_modality_store_straight(rest_request *req)
{
    json_t *conf = find_modality(req, req->seg[1], false);
    if (!conf)
        return;
    ts_dicom *d = NULL;
    ts_err err;
    char *sop_class = NULL, *sop_inst = NULL;
    char uuid[TS_UUID_LEN + 1] = "";
    if (ts_dicom_open_buffer(req->body ? req->body : "", req->body_len, &d, &err) ||
        !(sop_class = ts_dicom_get_string(d, 0x00080016, false)) ||
        !(sop_inst = ts_dicom_get_string(d, 0x00080018, false))) {
        char details[96];
        snprintf(details, sizeof(details), "Cannot parse an invalid DICOM file (size: %zu bytes)",
                 req->body_len);
        bad_format(req, details);
        goto out;
    }
    char path[4096];
    if (ts_store_write(req->ctx->store, req->body, req->body_len, uuid, &err) ||
        ts_store_path(req->ctx->store, uuid, path, sizeof(path), &err)) {
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        goto out;
    }
    int timeout = 0;
    const char *local = ts_cfg_str(TESSERA_DICOM_AET);
    rest_modality_settings(conf, &timeout, &local);
    ts_dicom_peer peer = {.our_aet = local,
                          .aet = json_string_value(json_object_get(conf, "AET")),
                          .host = json_string_value(json_object_get(conf, "Host")),
                          .port = (int)json_integer_value(json_object_get(conf, "Port")),
                          .timeout_s =
                              timeout > 0 ? timeout : (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
                          .tls = json_is_true(json_object_get(conf, "UseDicomTls"))};
    const char *paths[] = {path};
    uint16_t status = 0xFFFF;
    if (ts_dicom_store_files(&peer, paths, 1, &status, &err)) {
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, err.msg);
    } else if (status != 0 && (status & 0xf000) != 0xb000) {
        char details[160];
        snprintf(details, sizeof(details), "C-STORE of %.64s to %.16s: status 0x%04x", sop_inst,
                 peer.aet, status);
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, details);
    } else {
        rest_reply_json(
            req, 200,
            json_pack("{s:s, s:s}", "SOPClassUID", sop_class, "SOPInstanceUID", sop_inst));
    }
out:
    if (*uuid) {
        ts_err ignored;
        ts_store_remove(req->ctx->store, uuid, &ignored);
    }
    free(sop_class);
    free(sop_inst);
    ts_dicom_free(d);
    json_decref(conf);
}

/* POST /tools/dicom-echo: C-ECHO to the modality of the body (Orthanc's object
 * or array form, with Timeout and LocalAet as in /modalities/{id}/echo). */
void rest_tools_dicom_echo(rest_request *req)
{
    if (!rest_body_within(req, MODALITY_BODY_MAX))
        return;
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    modality_in m;
    int timeout;
    const char *local;
    if (!body) {
        bad_format(req, "Cannot parse the JSON body");
        goto out;
    }
    if (!parse_modality(req, body, &m) || !dicom_options(req, body, &timeout, &local))
        goto out;
    ts_dicom_peer peer = {.our_aet = local,
                          .aet = m.aet,
                          .host = m.host,
                          .port = m.port,
                          .timeout_s =
                              timeout > 0 ? timeout : (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
                          .tls = m.tls};
    ts_err err;
    if (ts_dicom_echo(&peer, &err)) {
        ts_info("echo failed", "aet=%s error=\"%s\"", m.aet, err.msg);
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, err.msg);
        goto out;
    }
    rest_reply_json(req, 200, json_object());
out:
    json_decref(body);
}

static int cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* The resources of a store body, as Orthanc accepts them: one id as plain
 * text, a JSON string, a JSON array of ids, or {"Resources": [...], ...}.
 * Answers and returns NULL when malformed. */
static json_t *store_resources(rest_request *req, json_t *body)
{
    json_t *list = NULL;
    if (json_is_string(body))
        list = json_pack("[O]", body);
    else if (json_is_array(body))
        list = json_incref(body);
    else if (json_is_object(body)) {
        list = json_incref(json_object_get(body, "Resources"));
        if (!list) {
            bad_format(req, "Missing field in JSON: \"Resources\"");
            return NULL;
        }
        if (!json_is_array(list)) {
            json_decref(list);
            bad_format(req, "JSON field \"Resources\" must contain an array");
            return NULL;
        }
    } else {
        bad_format(req, "Must provide a JSON value");
        return NULL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (!json_is_string(v)) {
            json_decref(list);
            bad_format(req, "Resources must be given as strings");
            return NULL;
        }
        if (!ts_id_is_valid(json_string_value(v))) {
            char details[160];
            snprintf(details, sizeof(details),
                     "This string is not a valid Orthanc identifier: %.100s", json_string_value(v));
            json_decref(list);
            bad_format(req, details);
            return NULL;
        }
    }
    return list;
}

/* The given ids, sorted and without duplicates (Orthanc's ParentResources). */
static json_t *unique_sorted(const json_t *list)
{
    size_t n = json_array_size(list);
    json_t **items = calloc(n + 1, sizeof(*items));
    if (!items)
        abort();
    for (size_t i = 0; i < n; i++)
        items[i] = json_array_get(list, i);
    qsort(items, n, sizeof(*items), cmp_json_str);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(json_string_value(items[i]), json_string_value(items[i - 1])) != 0)
            json_array_append(out, items[i]);
    free(items);
    return out;
}

/* Parses a store body (the forms of store_resources, with Asynchronous,
 * Synchronous, Priority, Permissive, Timeout, LocalAet); answers and returns
 * false when malformed. */
bool rest_store_parse(rest_request *req, rest_store_req *sr)
{
    memset(sr, 0, sizeof(*sr));
    if (!rest_body_within(req, STORE_BODY_MAX))
        return false;
    json_error_t jerr;
    if (req->body_len)
        sr->body = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr);
    if (!sr->body && req->body_len) {
        /* Orthanc also takes one id as plain text */
        char id[TS_ID_LEN + 1];
        size_t n;
        const char *s = rest_body_trimmed(req, &n);
        if (n == TS_ID_LEN) {
            memcpy(id, s, n);
            id[n] = '\0';
            if (ts_id_is_valid(id))
                sr->body = json_string(id);
        }
    }
    if (!sr->body)
        return bad_format(req, "Must provide a JSON value");
    json_t *list = store_resources(req, sr->body);
    if (!list)
        return false;
    sr->parents = unique_sorted(list);
    sr->ordered = list; /* /exports logs them in the request's order, as Orthanc */
    json_t *body = sr->body;
    if (json_is_object(body)) {
        const json_t *a = json_object_get(body, "Asynchronous");
        const json_t *s = json_object_get(body, "Synchronous");
        const json_t *pm = json_object_get(body, "Permissive");
        if ((a && !json_is_boolean(a)) || (s && !json_is_boolean(s)) ||
            (pm && !json_is_boolean(pm)))
            return bad_format(
                req, "Boolean value expected in fields Asynchronous, Synchronous and Permissive");
        if (!rest_job_priority(req, body, &sr->priority))
            return false;
        sr->permissive = json_is_true(pm);
        sr->asynchronous = json_is_true(a) || json_is_false(s);
        /* Orthanc 1.10.1's peer store: these two answers (its modality store
         * ignores the field; Tessera's converts, see lib/dicom/dicom_scu.cc) */
        const json_t *t = json_object_get(body, "Transcode");
        if (t && !json_is_string(t))
            return bad_format(req, "String value expected in field: Transcode");
        if (t && !ts_transfer_syntax_known(json_string_value(t))) {
            char details[300];
            snprintf(details, sizeof(details), "Unknown transfer syntax UID: %.200s",
                     json_string_value(t));
            return bad_format(req, details);
        }
        sr->transcode = json_string_value(t);
    }
    return dicom_options(req, body, &sr->timeout, &sr->local_aet);
}

bool rest_store_expand(rest_request *req, rest_store_req *sr)
{
    size_t len = 3;
    for (size_t i = 0; i < json_array_size(sr->parents); i++)
        len += TS_ID_LEN + 1;
    char *array = malloc(len);
    if (!array)
        abort();
    size_t off = 0;
    array[off++] = '{';
    for (size_t i = 0; i < json_array_size(sr->parents); i++)
        off += (size_t)sprintf(array + off, "%s%s", i ? "," : "",
                               json_string_value(json_array_get(sr->parents, i)));
    array[off++] = '}';
    array[off] = '\0';
    const char *params[] = {array};
    rest_row r = {&expand_instances, params, 3, {0}};
    bool ok = rest_row_query(req, TS_DB_READ, &r);
    free(array);
    if (ok && (!r.col[0] || (size_t)atoll(r.col[0]) != json_array_size(sr->parents))) {
        rest_reply_unknown_resource(req);
        ok = false;
    }
    if (ok) {
        json_error_t jerr;
        sr->instances = r.col[1] ? json_loads(r.col[1], 0, &jerr) : NULL;
        sr->size = r.col[2] ? atoll(r.col[2]) : 0;
        if (!json_is_array(sr->instances)) {
            rest_reply_oe(req, TS_OE_INTERNAL_ERROR, "cannot read the instances to send");
            ok = false;
        }
    }
    rest_row_clear(&r);
    return ok;
}

void rest_store_clear(rest_store_req *sr)
{
    json_decref(sr->body);
    json_decref(sr->parents);
    json_decref(sr->ordered);
    json_decref(sr->instances);
    memset(sr, 0, sizeof(*sr));
}

void rest_modality_store(rest_request *req)
{
    rest_store_req sr;
    json_t *conf = NULL, *content = NULL, *input = NULL;
    if (!rest_store_parse(req, &sr))
        goto out;
    if (!(conf = find_modality(req, req->seg[1], false)))
        goto out;
    if (!rest_store_expand(req, &sr))
        goto out;
    /* the Content shows the LocalAet the request asked for, as Orthanc's does,
     * while the association uses the modality's when it has one */
    const char *asked = sr.local_aet;
    rest_modality_settings(conf, &sr.timeout, &sr.local_aet);
    const char *remote = json_string_value(json_object_get(conf, "AET"));
    content =
        json_pack("{s:s, s:i, s:I, s:s}", "Description", "REST API", "FailedInstancesCount", 0,
                  "InstancesCount", (json_int_t)json_array_size(sr.instances), "LocalAet", asked);
    if (json_array_size(sr.parents))
        json_object_set(content, "ParentResources", sr.parents);
    json_object_set_new(content, "RemoteAet", json_string(remote));
    input = json_pack("{s:O, s:s, s:O, s:O, s:O, s:s, s:i, s:b}", "Instances", sr.instances, "AET",
                      remote, "Host", json_object_get(conf, "Host"), "Port",
                      json_object_get(conf, "Port"), "UseDicomTls",
                      json_object_get(conf, "UseDicomTls"), "LocalAet", sr.local_aet, "Timeout",
                      sr.timeout, "Permissive", sr.permissive);
    if (sr.transcode) {
        json_object_set_new(content, "Transcode", json_string(sr.transcode));
        json_object_set_new(input, "Transcode", json_string(sr.transcode));
    }
    ts_err xerr;
    if (ts_exports_log(req->ctx->db, req->seg[1], sr.ordered, &xerr))
        ts_warn("cannot log the export", "error=\"%s\"", xerr.msg); /* the send goes on */
    rest_jobs_submit(req, "DicomModalityStore", sr.priority, content, input, sr.asynchronous);
out:
    json_decref(input);
    json_decref(content);
    json_decref(conf);
    rest_store_clear(&sr);
}
