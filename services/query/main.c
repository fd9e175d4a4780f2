/* tessera-query: the matching engine behind C-FIND (its own DICOM port) and
 * the bus endpoint `find` (for REST's /tools/find). Reads only. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "io/bus.h"
#include "base/config.h"
#include "io/db.h"
#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "base/log.h"
#include "base/metrics.h"
#include "io/service_io.h"
#include "query_bus.h"
#include "query_match.h"
#include "domain/audit.h"
#include "domain/dicom_access.h"
#include "domain/retrieve.h"
#include "base/service.h"
#include "io/store.h"

#define TAG_RETRIEVE_AET TS_TAG(0x0008, 0x0054)
#define TAG_INSTANCE_AVAILABILITY TS_TAG(0x0008, 0x0056)

typedef struct query_service {
    ts_db_pool *db;
    query_bus_ctx bus;
    const char *aet;
    long limit;
    query_case case_matching; /* of C-FIND and the instances of C-MOVE/C-GET */
    ts_store *store;
    int timeout_s;
    _Atomic(ts_dicom_qr_scp *) scp;
    ts_retrieve retrieve;    /* C-MOVE, C-GET */
    ts_dicom_access *access; /* grants of calling AE titles, audit */
    bool registered_only;    /* TESSERA_DICOM_REGISTERED_AES_ONLY */
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
    uint32_t *seqs = NULL;
    const char **values = NULL;
    uint16_t status = TS_QR_SUCCESS;
    int sent = 0;
    ts_err err;
    ts_err_clear(&err);
    ts_dicom_grant grant;
    char resources[1024];

    status =
        ts_dicom_access_check(svc->access, assoc, TS_DICOM_OP_FIND, &grant, comment, comment_size);
    if (status != TS_QR_SUCCESS)
        goto done;
    if (!parse_level(rq->level, &level) ||
        (rq->model == TS_QR_STUDY_ROOT && level == TS_LEVEL_PATIENT)) {
        snprintf(comment, comment_size, "QueryRetrieveLevel '%s' invalid in the %s model",
                 rq->level, model);
        status = TS_QR_IDENTIFIER_MISMATCH;
        ts_warn("C-FIND refused",
                "calling_aet=%s model=%s level=\"%s\" status=a900 "
                "error=\"invalid QueryRetrieveLevel\"",
                assoc->calling_aet, model, rq->level);
        goto done;
    }
    if (rq->max_keys_hit)
        ts_warn("C-FIND identifier cut", "calling_aet=%s keys_dropped=%zu", assoc->calling_aet,
                rq->max_keys_hit);

    keys = calloc(rq->nkeys ? rq->nkeys : 1, sizeof(*keys));
    values = calloc(rq->nkeys ? rq->nkeys : 1, sizeof(*values));
    seqs = calloc(rq->nkeys ? rq->nkeys : 1, sizeof(*seqs));
    if (!keys || !values || !seqs)
        abort();
    for (size_t i = 0; i < rq->nkeys; i++) {
        keys[i] = (query_key){rq->keys[i].tag, rq->keys[i].is_sequence ? "" : rq->keys[i].value};
        seqs[i] = rq->keys[i].sequence; /* an item's key: sequence matching */
    }
    query_spec spec = {.level = level,
                       .keys = keys,
                       .nkeys = rq->nkeys,
                       .key_sequences = seqs,
                       .case_matching = svc->case_matching,
                       .limit = svc->limit,
                       /* the calling AE's label grant: the filter of /tools/find */
                       .restrict_to_labels = grant.restricted,
                       .visible = grant.labels,
                       .nvisible = grant.nlabels};
    int rc = query_run(svc->db, &spec, &res, &err);
    /* the matcher's share of the time; the rest is the answers sent over DIMSE */
    double sql_ms = now_ms() - start;
    if (rc) {
        status = rc == TS_EINVAL                               ? TS_QR_IDENTIFIER_MISMATCH
                 : (rc == TS_EDB_BUSY || rc == TS_EDB_INDOUBT) ? TS_QR_OUT_OF_RESOURCES
                                                               : TS_QR_UNABLE_TO_PROCESS;
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
        rc = ts_dicom_find_pending(out, values, TS_QR_PENDING, &err);
        if (rc == TS_ECANCELED) {
            ts_info("C-FIND cancelled", "calling_aet=%s sent=%d", assoc->calling_aet, sent);
            status = TS_QR_CANCEL;
            goto done;
        }
        if (rc) {
            ts_warn("C-FIND answer not sent", "calling_aet=%s error=\"%s\"", assoc->calling_aet,
                    err.msg);
            status = TS_QR_UNABLE_TO_PROCESS;
            goto done;
        }
        sent++;
    }
    if (res.truncated)
        ts_warn("C-FIND result limit reached, answers cut", "calling_aet=%s limit=%ld",
                assoc->calling_aet, svc->limit);
    ts_info("C-FIND",
            "calling_aet=%s model=%s level=%s matches=%d truncated=%d ms=%.1f matcher_ms=%.1f",
            assoc->calling_aet, model, rq->level, sent, res.truncated, now_ms() - start, sql_ms);
done:
    ts_dicom_access_keys(rq->keys, rq->nkeys, resources, sizeof(resources));
    ts_dicom_access_audit(svc->access, assoc, TS_DICOM_OP_FIND, rq->level, resources, status);
    ts_dicom_grant_clear(&grant);
    query_result_clear(&res);
    free(keys);
    free(seqs);
    free(values);
    return status;
}

/* ---- C-MOVE and C-GET (lib/domain/retrieve.c sends; this finds the instances) ------ */

/* A ts_retrieve_find_fn: checks the identifier and matches the instances it
 * names, with their files. */
static uint16_t retrieve_find(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                              const char *op, const ts_dicom_grant *grant, ts_retrieve_list *list,
                              char *comment, size_t comment_size)
{
    query_service *svc = user;
    const char *model = rq->model == TS_QR_PATIENT_ROOT ? "patient-root" : "study-root";
    ts_level level;
    query_result res = {0};
    ts_err err;
    ts_err_clear(&err);
    if (!parse_level(rq->level, &level) ||
        (rq->model == TS_QR_STUDY_ROOT && level == TS_LEVEL_PATIENT)) {
        snprintf(comment, comment_size, "QueryRetrieveLevel '%s' invalid in the %s model",
                 rq->level, model);
        ts_warn("retrieve refused", "op=%s calling_aet=%s model=%s level=\"%s\" status=a900", op,
                assoc->calling_aet, model, rq->level);
        return TS_QR_IDENTIFIER_MISMATCH;
    }
    query_key *keys = calloc(rq->nkeys + 1, sizeof(*keys));
    if (!keys)
        abort();
    size_t nkeys = 0;
    for (size_t i = 0; i < rq->nkeys; i++)
        if (!rq->keys[i].sequence) /* items' keys name no instances */
            keys[nkeys++] =
                (query_key){rq->keys[i].tag, rq->keys[i].is_sequence ? "" : rq->keys[i].value};
    int rc =
        query_retrieve_run_visible(svc->db, level, keys, nkeys, svc->case_matching,
                                   grant->restricted, grant->labels, grant->nlabels, &res, &err);
    free(keys);
    if (rc) {
        uint16_t status = rc == TS_EINVAL                               ? TS_QR_IDENTIFIER_MISMATCH
                          : (rc == TS_EDB_BUSY || rc == TS_EDB_INDOUBT) ? TS_QR_OUT_OF_RESOURCES
                                                                        : TS_QR_UNABLE_TO_PROCESS;
        snprintf(comment, comment_size, "%s", err.msg);
        ts_warn("retrieve failed", "op=%s calling_aet=%s level=%s status=%04x error=\"%s\"", op,
                assoc->calling_aet, rq->level, status, err.msg);
        return status;
    }
    for (int row = 0; row < res.nrows; row++)
        ts_retrieve_list_add(list, query_result_value(&res, row, rq->nkeys),
                             query_result_file(&res, row));
    query_result_clear(&res);
    return TS_QR_SUCCESS;
}

/* TESSERA_DICOM_REGISTERED_AES_ONLY: only AE titles of the modalities table. */
static bool on_accept(void *user, const ts_dicom_assoc *assoc)
{
    query_service *svc = user;
    return !svc->registered_only || ts_dicom_access_registered(svc->access, assoc->calling_aet);
}

/* ---- health and lifecycle ------------------------------------------------- */

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

int main(int argc, char **argv)
{
    ts_service_init("query", argc, argv);
    query_service svc = {0};
    ts_err err;
    ts_err_clear(&err);

    ts_service_handle_signals(on_stop, &svc);
    if (ts_dicom_global_init(&err))
        ts_service_die("dicom", &err);
    if (ts_dicom_dictionary_add(ts_cfg_str(TESSERA_DICOM_DICTIONARY), &err))
        ts_service_die("dictionary", &err);

    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    dbopt.read_conninfo = ts_cfg_str(TESSERA_DB_READ_URL); /* a replica may serve our reads */
    svc.db = ts_service_db(&dbopt);
    if (atomic_load(&stopping)) {
        ts_info("stopped during start-up", NULL);
        return 0;
    }
    svc.aet = ts_cfg_str(TESSERA_DICOM_AET);
    svc.limit = ts_cfg_int(TESSERA_QUERY_LIMIT);
    svc.case_matching =
        ts_cfg_bool(TESSERA_QUERY_CASE_SENSITIVE_PN) ? QUERY_CASE_EXACT : QUERY_CASE_FOLD_PN;
    svc.bus = (query_bus_ctx){.db = svc.db, .limit = svc.limit};
    svc.timeout_s = (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT);
    svc.store = ts_service_store();

    ts_bus_server *bus = NULL;
    const char *bus_url = ts_cfg_str(TESSERA_QUERY_BUS_LISTEN);
    if (*bus_url && ts_bus_server_start(bus_url, (size_t)ts_cfg_int(TESSERA_BUS_MAX_MESSAGE),
                                        (int)ts_cfg_int(TESSERA_BUS_WORKERS), query_bus_handle,
                                        &svc.bus, &bus, &err))
        ts_service_die("bus", &err);

    ts_metrics_server *metrics = ts_service_metrics(ts_service_db_health, svc.db);
    ts_heartbeat *heartbeat = ts_service_heartbeat(svc.db, ts_service_db_health, svc.db);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);

    ts_audit *audit = NULL;
    /* the audit writes to the primary, whatever serves our reads */
    if (ts_cfg_bool(TESSERA_AUDIT) &&
        ts_audit_start(ts_cfg_str(TESSERA_DB_URL), "query", (size_t)ts_cfg_int(TESSERA_AUDIT_QUEUE),
                       &audit, &err))
        ts_service_die("audit", &err);
    ts_dicom_access_config acfg;
    ts_dicom_access_config_from_settings(&acfg);
    svc.access = ts_dicom_access_new(svc.db, &acfg, audit);
    svc.registered_only = ts_cfg_bool(TESSERA_DICOM_REGISTERED_AES_ONLY);

    int port = (int)ts_cfg_int(TESSERA_QUERY_DICOM_PORT);
    ts_dicom_qr_scp *scp = NULL;
    int rc = 0;
    if (port) {
        ts_dicom_scp_config scfg = {
            .aet = svc.aet,
            .port = port,
            .max_associations = (int)ts_cfg_int(TESSERA_DICOM_MAX_ASSOCIATIONS),
            .max_pdu = (int)ts_cfg_int(TESSERA_DICOM_MAX_PDU),
            .timeout_s = (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
            .max_pending = (int)ts_cfg_int(TESSERA_DICOM_MAX_PENDING),
            .max_pending_per_peer = (int)ts_cfg_int(TESSERA_DICOM_MAX_PENDING_PER_PEER),
            .check_called_aet = ts_cfg_bool(TESSERA_DICOM_CHECK_CALLED_AET),
            .tls_certificate = ts_cfg_str(TESSERA_DICOM_TLS_CERTIFICATE),
            .tls_private_key = ts_cfg_str(TESSERA_DICOM_TLS_PRIVATE_KEY),
            .tls_trusted = ts_cfg_str(TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES),
            .tls_client_cert_required = ts_cfg_bool(TESSERA_DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED),
            .max_dataset = 1 << 20, /* a C-FIND identifier: 1 MiB is plenty */
        };
        svc.retrieve = (ts_retrieve){
            .db = svc.db,
            .store = svc.store,
            .our_aet = svc.aet,
            .timeout_s = svc.timeout_s,
            .find = retrieve_find,
            .user = &svc,
            .jobs_url = ts_cfg_bool(TESSERA_MOVE_JOBS) ? ts_cfg_str(TESSERA_REDIS_URL) : NULL,
            .jobs_history = (int)ts_cfg_int(TESSERA_JOBS_HISTORY),
            .access = svc.access};
        ts_dicom_qr_callbacks cb = {.user = &svc,
                                    .retrieve_user = &svc.retrieve,
                                    .accept = on_accept,
                                    .find = on_find,
                                    .move = ts_retrieve_move,
                                    .get = ts_retrieve_get};
        if (ts_dicom_qr_scp_new(&scfg, &cb, &scp, &err))
            ts_service_die("dicom listener", &err);
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
    ts_dicom_access_free(svc.access);
    ts_audit_stop(audit, 2000);
    ts_heartbeat_stop(heartbeat);
    ts_metrics_server_free(metrics);
    ts_store_free(svc.store);
    ts_db_pool_free(svc.db);
    ts_info("stopped", NULL);
    return rc ? 1 : 0;
}
