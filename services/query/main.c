/* tessera-query: the matching engine behind C-FIND (its own DICOM port) and
 * the bus endpoint `find` (for REST's /tools/find). Reads only. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "dicom.h"
#include "dicom_find.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "query_bus.h"
#include "query_match.h"
#include "service.h"
#include "store.h"

/* DIMSE statuses of C-FIND (PS3.4 C.4.1.1.4). */
enum {
    ST_SUCCESS = 0x0000,
    ST_PENDING = 0xff00,
    ST_CANCEL = 0xfe00,
    ST_OUT_OF_RESOURCES = 0xa700,
    ST_IDENTIFIER_MISMATCH = 0xa900,
    ST_UNABLE_TO_PROCESS = 0xc000,
};

#define TAG_RETRIEVE_AET TS_TAG(0x0008, 0x0054)
#define TAG_INSTANCE_AVAILABILITY TS_TAG(0x0008, 0x0056)

typedef struct query_service {
    ts_db_pool *db;
    query_bus_ctx bus;
    const char *aet;
    long limit;
    bool case_sensitive;
    ts_store *store;
    int timeout_s;
    _Atomic(ts_dicom_qr_scp *) scp;
} query_service;

static bool parse_level(const char *s, ts_level *out)
{
    static const char *const names[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (ts_level)i;
            return true;
        }
    return false;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint16_t on_find(void *user, const ts_dicom_assoc *assoc, const ts_dicom_find_rq *rq,
                        ts_dicom_find_out *out, char *comment, size_t comment_size)
{
    query_service *svc = user;
    double start = now_ms();
    const char *model = rq->model == TS_QR_PATIENT_ROOT ? "patient-root" : "study-root";
    ts_level level;
    query_result res = {0};
    query_key *keys = NULL;
    const char **values = NULL;
    uint16_t status = ST_SUCCESS;
    int sent = 0;
    ts_err err;
    ts_err_clear(&err);

    if (!parse_level(rq->level, &level) ||
        (rq->model == TS_QR_STUDY_ROOT && level == TS_LEVEL_PATIENT)) {
        snprintf(comment, comment_size, "QueryRetrieveLevel '%s' invalid in the %s model",
                 rq->level, model);
        ts_warn("C-FIND refused",
                "calling_aet=%s model=%s level=\"%s\" status=a900 "
                "error=\"invalid QueryRetrieveLevel\"",
                assoc->calling_aet, model, rq->level);
        return ST_IDENTIFIER_MISMATCH;
    }
    if (rq->max_keys_hit)
        ts_warn("C-FIND identifier cut", "calling_aet=%s keys_dropped=%zu", assoc->calling_aet,
                rq->max_keys_hit);

    keys = calloc(rq->nkeys ? rq->nkeys : 1, sizeof(*keys));
    values = calloc(rq->nkeys ? rq->nkeys : 1, sizeof(*values));
    if (!keys || !values)
        abort();
    for (size_t i = 0; i < rq->nkeys; i++)
        keys[i] = (query_key){rq->keys[i].tag, rq->keys[i].is_sequence ? "" : rq->keys[i].value};
    query_spec spec = {.level = level,
                       .keys = keys,
                       .nkeys = rq->nkeys,
                       .case_sensitive = svc->case_sensitive,
                       .limit = svc->limit};
    int rc = query_run(svc->db, &spec, &res, &err);
    if (rc) {
        status = rc == TS_EINVAL                               ? ST_IDENTIFIER_MISMATCH
                 : (rc == TS_EDB_BUSY || rc == TS_EDB_INDOUBT) ? ST_OUT_OF_RESOURCES
                                                               : ST_UNABLE_TO_PROCESS;
        snprintf(comment, comment_size, "%s", err.msg);
        ts_warn("C-FIND failed", "calling_aet=%s model=%s level=%s status=%04x error=\"%s\"",
                assoc->calling_aet, model, rq->level, status, err.msg);
        goto done;
    }
    for (int row = 0; row < res.nrows; row++) {
        for (size_t i = 0; i < rq->nkeys; i++) {
            if (rq->keys[i].tag == TAG_RETRIEVE_AET)
                values[i] = svc->aet;
            else if (rq->keys[i].tag == TAG_INSTANCE_AVAILABILITY)
                values[i] = "ONLINE";
            else
                values[i] = query_result_value(&res, row, i);
        }
        rc = ts_dicom_find_pending(out, values, ST_PENDING, &err);
        if (rc == TS_ECANCELED) {
            ts_info("C-FIND cancelled", "calling_aet=%s sent=%d", assoc->calling_aet, sent);
            status = ST_CANCEL;
            goto done;
        }
        if (rc) {
            ts_warn("C-FIND answer not sent", "calling_aet=%s error=\"%s\"", assoc->calling_aet,
                    err.msg);
            status = ST_UNABLE_TO_PROCESS;
            goto done;
        }
        sent++;
    }
    if (res.truncated)
        ts_warn("C-FIND result limit reached, answers cut", "calling_aet=%s limit=%ld",
                assoc->calling_aet, svc->limit);
    ts_info("C-FIND", "calling_aet=%s model=%s level=%s matches=%d truncated=%d ms=%.1f",
            assoc->calling_aet, model, rq->level, sent, res.truncated, now_ms() - start);
done:
    query_result_clear(&res);
    free(keys);
    free(values);
    return status;
}

/* ---- C-MOVE ---------------------------------------------------------------- */

enum {
    ST_MOVE_UNABLE_SUBOPS = 0xa702,
    ST_MOVE_DEST_UNKNOWN = 0xa801,
    ST_MOVE_SOME_FAILED = 0xb000,
};

static const ts_db_stmt find_destination = {
    "query_find_destination",
    "SELECT host, port FROM modalities WHERE aet = $1 AND allow_move ORDER BY name LIMIT 1", 1};

typedef struct destination {
    const char *aet;
    char host[256];
    int port;
    bool found;
} destination;

static int destination_txn(ts_db *db, void *arg, ts_err *err)
{
    destination *d = arg;
    const char *params[] = {d->aet};
    PGresult *res;
    int rc = ts_db_exec(db, &find_destination, params, &res, err);
    if (rc)
        return rc;
    d->found = PQntuples(res) > 0;
    if (d->found) {
        snprintf(d->host, sizeof(d->host), "%s", PQgetvalue(res, 0, 0));
        d->port = atoi(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return 0;
}

/* The key that names one resource of each level: a C-MOVE must give it. */
static const uint32_t UNIQUE_KEY[] = {TS_TAG_PATIENT_ID, TS_TAG_STUDY_INSTANCE_UID,
                                      TS_TAG_SERIES_INSTANCE_UID, TS_TAG_SOP_INSTANCE_UID};

static void add_failed_uid(char **list, size_t *len, const char *uid)
{
    size_t n = strlen(uid);
    char *l = realloc(*list, *len + n + 2);
    if (!l)
        abort();
    if (*len)
        l[(*len)++] = '\\';
    memcpy(l + *len, uid, n + 1);
    *len += n;
    *list = l;
}

/* Checks a C-MOVE/C-GET identifier and finds the instances it names, with their
 * files. ST_SUCCESS, or the status to answer with (comment filled, logged). */
static uint16_t retrieve_find(query_service *svc, const ts_dicom_assoc *assoc,
                              const ts_dicom_move_rq *rq, const char *op, query_result *res,
                              char *comment, size_t comment_size)
{
    const char *model = rq->model == TS_QR_PATIENT_ROOT ? "patient-root" : "study-root";
    ts_level level;
    ts_err err;
    ts_err_clear(&err);
    if (!parse_level(rq->level, &level) ||
        (rq->model == TS_QR_STUDY_ROOT && level == TS_LEVEL_PATIENT)) {
        snprintf(comment, comment_size, "QueryRetrieveLevel '%s' invalid in the %s model",
                 rq->level, model);
        ts_warn("retrieve refused", "op=%s calling_aet=%s model=%s level=\"%s\" status=a900", op,
                assoc->calling_aet, model, rq->level);
        return ST_IDENTIFIER_MISMATCH;
    }
    /* a retrieve names what it wants: without the level's unique key it
     * would move everything */
    bool has_unique = false;
    for (size_t i = 0; i < rq->nkeys; i++)
        if (rq->keys[i].tag == UNIQUE_KEY[level] && *rq->keys[i].value)
            has_unique = true;
    if (!has_unique) {
        snprintf(comment, comment_size, "the unique key of level %s is missing", rq->level);
        ts_warn("retrieve refused",
                "op=%s calling_aet=%s level=%s status=a900 "
                "error=\"no unique key\"",
                op, assoc->calling_aet, rq->level);
        return ST_IDENTIFIER_MISMATCH;
    }
    query_key *keys = calloc(rq->nkeys + 1, sizeof(*keys));
    if (!keys)
        abort();
    for (size_t i = 0; i < rq->nkeys; i++)
        keys[i] = (query_key){rq->keys[i].tag, rq->keys[i].is_sequence ? "" : rq->keys[i].value};
    keys[rq->nkeys] = (query_key){TS_TAG_SOP_INSTANCE_UID, ""};
    query_spec spec = {.level = TS_LEVEL_INSTANCE,
                       .keys = keys,
                       .nkeys = rq->nkeys + 1,
                       .case_sensitive = svc->case_sensitive,
                       .with_file = true};
    int rc = query_run(svc->db, &spec, res, &err);
    free(keys);
    if (rc) {
        uint16_t status = rc == TS_EINVAL                               ? ST_IDENTIFIER_MISMATCH
                          : (rc == TS_EDB_BUSY || rc == TS_EDB_INDOUBT) ? ST_OUT_OF_RESOURCES
                                                                        : ST_UNABLE_TO_PROCESS;
        snprintf(comment, comment_size, "%s", err.msg);
        ts_warn("retrieve failed", "op=%s calling_aet=%s status=%04x error=\"%s\"", op,
                assoc->calling_aet, status, err.msg);
        return status;
    }
    return ST_SUCCESS;
}

static uint16_t retrieve_status(const ts_dicom_move_result *out)
{
    if (out->failed && !out->completed && !out->warning)
        return ST_MOVE_UNABLE_SUBOPS;
    if (out->failed || out->warning)
        return ST_MOVE_SOME_FAILED;
    return ST_SUCCESS;
}

/* Counts one sub-operation's status in res (the failed list too). */
static void count_status(ts_dicom_move_result *res, size_t *failed_len, uint16_t st,
                         const char *sop_uid)
{
    if (st == 0)
        res->completed++;
    else if ((st & 0xf000) == 0xb000 || st == 0x0107 || st == 0x0116)
        res->warning++;
    else {
        res->failed++;
        add_failed_uid(&res->failed_uids, failed_len, sop_uid);
    }
}

typedef struct move_progress {
    ts_dicom_retrieve_out *out;
    ts_dicom_move_result *res;
    const query_result *q;
    const int *rows; /* per path: its row in q */
    bool *reported;  /* per path */
    size_t *failed_len;
    size_t uid_key; /* the key index of SOPInstanceUID */
    unsigned remaining;
    bool cancelled;
} move_progress;

/* After each file sent to the C-MOVE destination: count it, tell the client,
 * stop if it cancelled. */
static bool on_move_progress(void *user, size_t i, uint16_t status)
{
    move_progress *p = user;
    ts_err err;
    p->reported[i] = true;
    count_status(p->res, p->failed_len, status, query_result_value(p->q, p->rows[i], p->uid_key));
    p->remaining--;
    int rc = ts_dicom_retrieve_pending(p->out, p->remaining, p->res, &err);
    if (rc == TS_ECANCELED)
        p->cancelled = true;
    return rc == 0;
}

static uint16_t on_move(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                        ts_dicom_retrieve_out *rout, ts_dicom_move_result *out, char *comment,
                        size_t comment_size)
{
    query_service *svc = user;
    query_result res = {0};
    char **paths = NULL;
    uint16_t *statuses = NULL;
    int *rows = NULL;
    bool *reported = NULL;
    int npaths = 0;
    size_t failed_len = 0;
    ts_err err;
    ts_err_clear(&err);

    destination dest = {.aet = rq->destination};
    if (ts_db_transaction(svc->db, TS_DB_READ, destination_txn, &dest, &err)) {
        snprintf(comment, comment_size, "%s", err.msg);
        ts_warn("C-MOVE failed", "calling_aet=%s error=\"%s\"", assoc->calling_aet, err.msg);
        return ST_OUT_OF_RESOURCES;
    }
    if (!dest.found) {
        snprintf(comment, comment_size, "move destination '%s' is not registered", rq->destination);
        ts_warn("C-MOVE refused: unknown destination", "calling_aet=%s destination=%s status=a801",
                assoc->calling_aet, rq->destination);
        return ST_MOVE_DEST_UNKNOWN;
    }
    uint16_t status = retrieve_find(svc, assoc, rq, "move", &res, comment, comment_size);
    if (status != ST_SUCCESS)
        goto done;
    paths = calloc((size_t)res.nrows + 1, sizeof(*paths));
    statuses = calloc((size_t)res.nrows + 1, sizeof(*statuses));
    rows = calloc((size_t)res.nrows + 1, sizeof(*rows));
    reported = calloc((size_t)res.nrows + 1, sizeof(*reported));
    if (!paths || !statuses || !rows || !reported)
        abort();
    for (int row = 0; row < res.nrows; row++) {
        char path[4096];
        const char *uuid = query_result_file(&res, row);
        if (!*uuid || ts_store_path(svc->store, uuid, path, sizeof(path), &err)) {
            count_status(out, &failed_len, 0xa702, query_result_value(&res, row, rq->nkeys));
            continue;
        }
        paths[npaths] = strdup(path);
        if (!paths[npaths])
            abort();
        rows[npaths++] = row;
    }
    if (npaths) {
        ts_dicom_peer peer = {.our_aet = svc->aet,
                              .aet = rq->destination,
                              .host = dest.host,
                              .port = dest.port,
                              .timeout_s = svc->timeout_s};
        move_progress prog = {.out = rout,
                              .res = out,
                              .q = &res,
                              .rows = rows,
                              .reported = reported,
                              .failed_len = &failed_len,
                              .uid_key = rq->nkeys,
                              .remaining = (unsigned)npaths};
        int rc = ts_dicom_store_files_progress(&peer, (const char *const *)paths, (size_t)npaths,
                                               statuses, on_move_progress, &prog, &err);
        if (rc && !prog.cancelled) {
            ts_warn("C-MOVE: cannot send to the destination", "destination=%s error=\"%s\"",
                    rq->destination, err.msg);
            snprintf(comment, comment_size, "%s", err.msg);
        }
        if (prog.cancelled) {
            ts_info("C-MOVE cancelled", "calling_aet=%s destination=%s completed=%u",
                    assoc->calling_aet, rq->destination, out->completed);
            status = ST_CANCEL;
            goto done;
        }
        /* files never tried (unreadable, or the association broke first) */
        for (int i = 0; i < npaths; i++)
            if (!reported[i])
                count_status(out, &failed_len, statuses[i],
                             query_result_value(&res, rows[i], rq->nkeys));
    }
    status = retrieve_status(out);
    ts_info("C-MOVE", "calling_aet=%s destination=%s level=%s completed=%u failed=%u warning=%u",
            assoc->calling_aet, rq->destination, rq->level, out->completed, out->failed,
            out->warning);
done:
    for (int i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    free(statuses);
    free(rows);
    free(reported);
    query_result_clear(&res);
    return status;
}

static uint16_t on_get(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                       ts_dicom_retrieve_out *get, ts_dicom_move_result *out, char *comment,
                       size_t comment_size)
{
    query_service *svc = user;
    query_result res = {0};
    ts_err err;
    ts_err_clear(&err);
    uint16_t status = retrieve_find(svc, assoc, rq, "get", &res, comment, comment_size);
    if (status != ST_SUCCESS)
        goto done;
    for (int row = 0; row < res.nrows; row++) {
        char path[4096] = "";
        const char *uuid = query_result_file(&res, row);
        if (*uuid && ts_store_path(svc->store, uuid, path, sizeof(path), &err))
            path[0] = '\0'; /* counted as a failed sub-operation */
        int rc = ts_dicom_get_send(get, path, query_result_value(&res, row, rq->nkeys),
                                   (unsigned)(res.nrows - row - 1), out, &err);
        if (rc == TS_ECANCELED) {
            ts_info("C-GET cancelled", "calling_aet=%s completed=%u", assoc->calling_aet,
                    out->completed);
            status = ST_CANCEL;
            goto done;
        }
        if (rc) {
            ts_warn("C-GET stopped", "calling_aet=%s error=\"%s\"", assoc->calling_aet, err.msg);
            status = ST_UNABLE_TO_PROCESS;
            goto done;
        }
    }
    status = retrieve_status(out);
    ts_info("C-GET", "calling_aet=%s level=%s completed=%u failed=%u warning=%u",
            assoc->calling_aet, rq->level, out->completed, out->failed, out->warning);
done:
    query_result_clear(&res);
    return status;
}

/* ---- health and lifecycle ------------------------------------------------- */

static int ping_fn(ts_db *db, void *arg, ts_err *err)
{
    return ts_db_exec_sql(db, "SELECT 1", err);
}

static bool health(void *user, char *reason, size_t size)
{
    query_service *svc = user;
    ts_err err;
    if (ts_db_with_conn(svc->db, ping_fn, NULL, &err)) {
        snprintf(reason, size, "%s", err.msg);
        return false;
    }
    return true;
}

static atomic_bool stopping;
static atomic_bool stopped;

static void on_stop(void *user)
{
    query_service *svc = user;
    atomic_store(&stopping, true);
    ts_dicom_qr_scp *scp = atomic_load(&svc->scp);
    if (scp)
        ts_dicom_qr_scp_stop(scp);
    atomic_store(&stopped, true);
}

static void die(const char *what, const ts_err *err)
{
    ts_error("cannot start", "step=%s error=\"%s\"", what, err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    ts_service_init("query", argc, argv);
    query_service svc = {0};
    ts_err err;
    ts_err_clear(&err);

    ts_service_handle_signals(on_stop, &svc);
    if (ts_dicom_global_init(&err))
        die("dicom", &err);

    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    if (ts_db_pool_new(&dbopt, &svc.db, &err))
        die("database", &err);
    if (ts_db_migrate_wait(svc.db, 120, &err))
        die("migrations", &err);
    if (atomic_load(&stopping)) {
        ts_info("stopped during start-up", NULL);
        return 0;
    }
    svc.aet = ts_config_str("TESSERA_DICOM_AET");
    svc.limit = ts_config_int("TESSERA_QUERY_LIMIT");
    svc.case_sensitive = ts_config_bool("TESSERA_QUERY_CASE_SENSITIVE_PN");
    svc.bus = (query_bus_ctx){.db = svc.db, .limit = svc.limit};
    svc.timeout_s = (int)ts_config_int("TESSERA_DICOM_TIMEOUT");
    if (ts_store_open(ts_config_str("TESSERA_STORAGE_DIR"), &svc.store, &err))
        die("storage", &err);

    ts_bus_server *bus = NULL;
    const char *bus_url = ts_config_str("TESSERA_QUERY_BUS_LISTEN");
    if (*bus_url && ts_bus_server_start(bus_url, (size_t)ts_config_int("TESSERA_BUS_MAX_MESSAGE"),
                                        (int)ts_config_int("TESSERA_BUS_WORKERS"), query_bus_handle,
                                        &svc.bus, &bus, &err))
        die("bus", &err);

    ts_metrics_server *metrics = NULL;
    int metrics_port = (int)ts_config_int("TESSERA_METRICS_PORT");
    if (metrics_port && ts_metrics_serve(metrics_port, health, &svc, &metrics, &err))
        die("metrics", &err);

    int port = (int)ts_config_int("TESSERA_QUERY_DICOM_PORT");
    ts_dicom_qr_scp *scp = NULL;
    int rc = 0;
    if (port) {
        ts_dicom_scp_config scfg = {
            .aet = svc.aet,
            .port = port,
            .max_associations = (int)ts_config_int("TESSERA_DICOM_MAX_ASSOCIATIONS"),
            .max_pdu = (int)ts_config_int("TESSERA_DICOM_MAX_PDU"),
            .timeout_s = (int)ts_config_int("TESSERA_DICOM_TIMEOUT"),
            .check_called_aet = ts_config_bool("TESSERA_DICOM_CHECK_CALLED_AET"),
            .max_dataset = 1 << 20, /* a C-FIND identifier: 1 MiB is plenty */
        };
        ts_dicom_qr_callbacks cb = {.user = &svc, .find = on_find, .move = on_move, .get = on_get};
        if (ts_dicom_qr_scp_new(&scfg, &cb, &scp, &err))
            die("dicom listener", &err);
        atomic_store(&svc.scp, scp);
        if (atomic_load(&stopping))
            ts_dicom_qr_scp_stop(scp);
    }
    ts_info("query ready", "aet=%s dicom_port=%d bus=%s metrics_port=%d limit=%ld", svc.aet, port,
            bus_url, metrics_port, svc.limit);
    if (scp) {
        rc = ts_dicom_qr_scp_run(scp, &err);
    } else {
        while (!atomic_load(&stopped))
            usleep(100 * 1000);
    }

    ts_bus_server_free(bus);
    ts_dicom_qr_scp_free(scp);
    ts_metrics_server_free(metrics);
    ts_store_free(svc.store);
    ts_db_pool_free(svc.db);
    ts_info("stopped", NULL);
    return rc ? 1 : 0;
}
