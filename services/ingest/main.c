/* tessera-ingest: the DICOM C-ECHO/C-STORE receiver and the one write path
 * for new instances (also offered on the bus, for the REST upload). C-FIND,
 * C-MOVE and C-GET on its association are relayed to query (ingest_find.c),
 * so that one AE and port serve a client for everything. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/bus.h"
#include "base/config.h"
#include "io/db.h"
#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "ingest_batch.h"
#include "ingest_find.h"
#include "ingest_write.h"
#include "base/log.h"
#include "base/metrics.h"
#include "io/service_io.h"
#include "domain/accepted_syntaxes.h"
#include "domain/audit.h"
#include "domain/dicom_access.h"
#include "domain/retrieve.h"
#include "base/service.h"
#include "io/store.h"
#include "tessera.pb-c.h"

typedef struct ingest_service {
    ingest_ctx write;
    _Atomic(ts_dicom_scp *) scp;
    bool registered_only;
    long max_instance_size;
    ingest_find find;        /* C-FIND relayed to query */
    ts_retrieve retrieve;    /* C-MOVE, C-GET: instances listed by query, sent from here */
    ts_dicom_access *access; /* grants of calling AE titles, audit */
    /* the last list of accepted transfer syntaxes read, for when the database
     * cannot be reached (NULL: none read yet, all accepted) */
    pthread_mutex_t syntaxes_lock;
    json_t *last_syntaxes;
} ingest_service;

/* ---- DICOM callbacks ------------------------------------------------------ */

/* TESSERA_DICOM_REGISTERED_AES_ONLY: only AE titles of the modalities table. */
static bool on_accept(void *user, const ts_dicom_assoc *assoc)
{
    ingest_service *svc = user;
    return !svc->registered_only || ts_dicom_access_registered(svc->access, assoc->calling_aet);
}

/* The transfer syntaxes accepted for storage, read from the database at each
 * association so that a PUT on any rest replica applies to every ingest at once;
 * when the read fails, the last list read stands. */
static json_t *on_storage_syntaxes(void *user)
{
    ingest_service *svc = user;
    json_t *uids = NULL;
    ts_err err;
    int rc = ts_accepted_syntaxes_get(svc->write.db, &uids, &err);
    pthread_mutex_lock(&svc->syntaxes_lock);
    if (rc) {
        ts_warn("cannot read the accepted transfer syntaxes, the last ones read stand",
                "error=\"%s\"", err.msg);
        uids = json_incref(svc->last_syntaxes);
    } else {
        json_decref(svc->last_syntaxes);
        svc->last_syntaxes = json_incref(uids);
    }
    pthread_mutex_unlock(&svc->syntaxes_lock);
    return uids;
}

static int on_temp_path(void *user, char *path, size_t size, ts_err *err)
{
    ingest_service *svc = user;
    return ts_store_temp_path(svc->write.store, path, size, err);
}

static uint16_t on_store(void *user, const ts_dicom_assoc *assoc, const ts_dicom_store_rq *rq,
                         char *comment, size_t comment_size)
{
    ingest_service *svc = user;
    ingest_origin origin = {.origin = "DicomProtocol",
                            .remote_aet = assoc->calling_aet,
                            .remote_ip = assoc->peer_ip,
                            .called_aet = assoc->called_aet,
                            .sop_class_uid = rq->sop_class_uid,
                            .sop_instance_uid = rq->sop_instance_uid};
    ingest_result res = {.status = INGEST_FAILED};
    ts_err err;
    ts_err_clear(&err);
    ts_dicom_grant grant;
    uint16_t status =
        ts_dicom_access_check(svc->access, assoc, TS_DICOM_OP_STORE, &grant, comment, comment_size);
    ts_dicom_grant_clear(&grant);
    char resources[200];
    snprintf(resources, sizeof(resources), "%s", rq->sop_instance_uid);
    if (status != 0) {
        if (rq->path)
            unlink(rq->path); /* ours now, and refused: nothing is kept */
    } else if (rq->data ? ingest_data(&svc->write, rq->data, rq->len, &origin, &res, &err)
                        : ingest_file(&svc->write, rq->path, &origin, &res, &err)) {
        status = (uint16_t)ingest_dimse_status(res.status);
        ts_warn("C-STORE failed", "calling_aet=%s sop=%s status=%04x error=\"%s\"",
                assoc->calling_aet, rq->sop_instance_uid, status, err.msg);
        snprintf(comment, comment_size, "%s", err.msg);
    } else {
        status = (uint16_t)ingest_dimse_status(res.status);
        /* the instance's public id beside its UID, as REST's trail names it */
        snprintf(resources, sizeof(resources), "%s,%s", rq->sop_instance_uid, res.ids.instance);
    }
    ts_dicom_access_audit(svc->access, assoc, TS_DICOM_OP_STORE, "", resources, status);
    return status;
}

static uint16_t on_find(void *user, const ts_dicom_assoc *assoc, const ts_dicom_find_rq *rq,
                        ts_dicom_find_out *out, char *comment, size_t comment_size)
{
    ingest_service *svc = user;
    ts_dicom_grant grant;
    uint16_t status =
        ts_dicom_access_check(svc->access, assoc, TS_DICOM_OP_FIND, &grant, comment, comment_size);
    if (status == TS_QR_SUCCESS)
        status = ingest_find_relay(&svc->find, assoc, &grant, rq, out, comment, comment_size);
    char resources[1024];
    ts_dicom_access_keys(rq->keys, rq->nkeys, resources, sizeof(resources));
    ts_dicom_access_audit(svc->access, assoc, TS_DICOM_OP_FIND, rq->level, resources, status);
    ts_dicom_grant_clear(&grant);
    return status;
}

/* ---- bus: store requests from REST --------------------------------------- */

Tessera__StoreStatus ingest_bus_status(ingest_status s)
{
    switch (s) {
    case INGEST_STORED:
        return TESSERA__STORE_STATUS__STORE_STORED;
    case INGEST_ALREADY_STORED:
        return TESSERA__STORE_STATUS__STORE_ALREADY_STORED;
    case INGEST_FILTERED_OUT:
        return TESSERA__STORE_STATUS__STORE_FILTERED_OUT;
    case INGEST_INVALID:
    case INGEST_WRONG_CLASS:
        return TESSERA__STORE_STATUS__STORE_INVALID_DICOM;
    case INGEST_DB_BUSY:
        return TESSERA__STORE_STATUS__STORE_DB_UNAVAILABLE;
    case INGEST_STORAGE_ERROR:
        return TESSERA__STORE_STATUS__STORE_STORAGE_ERROR;
    case INGEST_FAILED:
        break;
    }
    return TESSERA__STORE_STATUS__STORE_INTERNAL_ERROR;
}

static int on_bus_request(void *user, const uint8_t *req_buf, size_t len, uint8_t **reply,
                          size_t *reply_len)
{
    ingest_service *svc = user;
    if (ingest_batch_is(req_buf, len)) /* jobs' chunks of modified copies */
        return ingest_batch_request(&svc->write, svc->max_instance_size, req_buf, len, reply,
                                    reply_len);
    Tessera__StoreReply rep = TESSERA__STORE_REPLY__INIT;
    char error[sizeof(((ts_err *)0)->msg)] = "";
    ingest_result res = {.status = INGEST_FAILED};
    Tessera__StoreRequest *req = tessera__store_request__unpack(NULL, len, req_buf);
    if (!req) {
        snprintf(error, sizeof(error), "undecodable store request of %zu bytes", len);
        rep.status = TESSERA__STORE_STATUS__STORE_INTERNAL_ERROR;
        goto reply;
    }
    if ((long)req->dicom.len > svc->max_instance_size) {
        snprintf(error, sizeof(error), "instance of %zu bytes is larger than %ld bytes",
                 req->dicom.len, svc->max_instance_size);
        rep.status = TESSERA__STORE_STATUS__STORE_TOO_LARGE;
        goto reply;
    }
    char path[4096];
    ts_err err;
    ts_err_clear(&err);
    struct stat sb;
    if (*req->temp_file) {
        /* an upload REST spooled into the shared storage area */
        if (ts_store_temp_path_of(svc->write.store, req->temp_file, path, sizeof(path), &err)) {
            rep.status = TESSERA__STORE_STATUS__STORE_INTERNAL_ERROR;
            snprintf(error, sizeof(error), "%s", err.msg);
            goto reply;
        }
        if (stat(path, &sb) != 0) {
            rep.status = TESSERA__STORE_STATUS__STORE_STORAGE_ERROR;
            snprintf(error, sizeof(error),
                     "the uploaded file %.200s is not in this storage area: %s", req->temp_file,
                     strerror(errno));
            goto reply;
        }
        if ((long)sb.st_size > svc->max_instance_size) {
            unlink(path);
            snprintf(error, sizeof(error), "instance of %lld bytes is larger than %ld bytes",
                     (long long)sb.st_size, svc->max_instance_size);
            rep.status = TESSERA__STORE_STATUS__STORE_TOO_LARGE;
            goto reply;
        }
    }
    ingest_origin origin = {.origin = *req->origin ? req->origin : "RestApi",
                            .remote_aet = req->remote_aet,
                            .remote_ip = req->remote_ip,
                            .called_aet = req->called_aet,
                            .http_username = req->http_username};
    if (*req->temp_file)
        ingest_file(&svc->write, path, &origin, &res, &err);
    else
        ingest_data(&svc->write, req->dicom.data, req->dicom.len, &origin, &res, &err);
    rep.status = ingest_bus_status(res.status);
    if (res.status == INGEST_STORED || res.status == INGEST_ALREADY_STORED ||
        res.status == INGEST_FILTERED_OUT) {
        rep.patient_id = res.ids.patient;
        rep.study_id = res.ids.study;
        rep.series_id = res.ids.series;
        rep.instance_id = res.ids.instance;
    } else {
        snprintf(error, sizeof(error), "%s", err.msg);
        ts_warn("bus store failed", "status=%d error=\"%s\"", (int)rep.status, err.msg);
    }
reply:
    rep.error = error;
    *reply = ts_bus_pack(&rep.base, reply_len);
    if (req)
        tessera__store_request__free_unpacked(req, NULL);
    return 0;
}

/* ---- health and lifecycle ----------------------------------------------- */

/* A signal may come before the SCP exists (waiting for the database): the
 * flag stops the start-up; the SCP, once it exists, is stopped directly. */
static atomic_bool stopping;

static void on_stop(void *user)
{
    ingest_service *svc = user;
    atomic_store(&stopping, true);
    ts_dicom_scp *scp = atomic_load(&svc->scp);
    if (!scp) {
        /* Still starting (e.g. waiting for PostgreSQL): nothing is in flight. */
        ts_info("stopped during start-up", NULL);
        _exit(0);
    }
    ts_dicom_scp_stop(scp);
}

int main(int argc, char **argv)
{
    ts_service_init("ingest", argc, argv);
    ingest_service svc = {0};
    pthread_mutex_init(&svc.syntaxes_lock, NULL);
    ts_err err;
    ts_err_clear(&err);

    ts_service_handle_signals(on_stop, &svc);
    if (ts_dicom_global_init(&err))
        ts_service_die("dicom", &err);
    if (ts_dicom_dictionary_add(ts_cfg_str(TESSERA_DICOM_DICTIONARY), &err))
        ts_service_die("dictionary", &err);

    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    svc.write.db = ts_service_db(&dbopt);
    if (atomic_load(&stopping)) {
        ts_info("stopped during start-up", NULL);
        return 0;
    }
    svc.write.store = ts_service_store();
    if (ts_cfg_bool(TESSERA_STORAGE_PREPARE) && !ts_store_tree_prepared(svc.write.store)) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int made = 0;
        if (ts_store_prepare_tree(svc.write.store, &made, &err))
            ts_service_die("storage tree", &err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ts_info("storage tree prepared", "directories_made=%d ms=%ld", made,
                (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    }
    int swept = 0;
    if (ts_store_sweep_temp(svc.write.store, 3600, &swept, &err))
        ts_warn("cannot sweep temporary files", "error=\"%s\"", err.msg);
    else if (swept)
        ts_info("removed abandoned temporary files", "count=%d", swept);
    svc.write.overwrite = ts_cfg_bool(TESSERA_OVERWRITE_INSTANCES);
    svc.write.memory_threshold = ts_cfg_int(TESSERA_INGEST_MEMORY_THRESHOLD);
    const char *ingest_ts = ts_cfg_str(TESSERA_INGEST_TRANSCODING);
    if (*ingest_ts) {
        if (!ts_transfer_syntax_known(ingest_ts)) {
            ts_err_set(&err, TS_EINVAL, "TESSERA_INGEST_TRANSCODING: %s is not a transfer syntax",
                       ingest_ts);
            ts_service_die("settings", &err);
        }
        svc.write.transcode_to = ingest_ts;
    }
    /* Orthanc's ReceivedInstanceFilter, from the scripts the routers run too */
    pthread_mutex_init(&svc.write.lua_lock, NULL);
    if (ts_cfg_str(TESSERA_LUA_SCRIPTS)[0]) {
        svc.write.lua = ts_lua_new();
        if (ts_lua_load_configured(svc.write.lua, &err))
            ts_service_die("lua scripts", &err);
        if (!ts_lua_has(svc.write.lua, "ReceivedInstanceFilter")) {
            ts_lua_free(svc.write.lua);
            svc.write.lua = NULL;
        }
    }
    svc.registered_only = ts_cfg_bool(TESSERA_DICOM_REGISTERED_AES_ONLY);
    svc.max_instance_size = ts_cfg_int(TESSERA_MAX_INSTANCE_SIZE);
    ingest_ctx_init_metrics(&svc.write);
    if (ts_change_sequencer_start(svc.write.db, 1000, &svc.write.sequencer, &err))
        ts_service_die("change sequencer", &err);
    if (ingest_commit_start(svc.write.db, svc.write.store,
                            (int)ts_cfg_int(TESSERA_INGEST_COMMITTERS), 64, &svc.write.commit,
                            &err))
        ts_service_die("committer", &err);

    const char *events_url = ts_cfg_str(TESSERA_EVENTS_LISTEN);
    if (*events_url && ts_bus_pub_open(events_url, &svc.write.events, &err))
        ts_service_die("events", &err);

    ts_bus_server *bus = NULL;
    const char *bus_url = ts_cfg_str(TESSERA_INGEST_BUS_LISTEN);
    if (*bus_url &&
        ts_bus_server_start(bus_url, (size_t)ts_cfg_int(TESSERA_BUS_MAX_MESSAGE),
                            (int)ts_cfg_int(TESSERA_BUS_WORKERS), on_bus_request, &svc, &bus, &err))
        ts_service_die("bus", &err);

    ts_metrics_server *metrics = ts_service_metrics(ts_service_db_health, svc.write.db);
    ts_heartbeat *heartbeat =
        ts_service_heartbeat(svc.write.db, ts_service_db_health, svc.write.db);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);

    ts_dicom_scp_config scfg = {
        .aet = ts_cfg_str(TESSERA_DICOM_AET),
        .port = (int)ts_cfg_int(TESSERA_DICOM_PORT),
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
        .max_dataset = ts_cfg_int(TESSERA_MAX_INSTANCE_SIZE),
        .memory_threshold = svc.write.memory_threshold,
    };
    ts_audit *audit = NULL;
    if (ts_cfg_bool(TESSERA_AUDIT) &&
        ts_audit_start(ts_cfg_str(TESSERA_DB_URL), "ingest",
                       (size_t)ts_cfg_int(TESSERA_AUDIT_QUEUE), &audit, &err))
        ts_service_die("audit", &err);
    ts_dicom_access_config acfg;
    ts_dicom_access_config_from_settings(&acfg);
    svc.access = ts_dicom_access_new(svc.write.db, &acfg, audit);
    if (ingest_find_init(&svc.find, &err))
        ts_service_die("query bus", &err);
    svc.retrieve = (ts_retrieve){
        .db = svc.write.db,
        .store = svc.write.store,
        .our_aet = scfg.aet,
        .timeout_s = scfg.timeout_s,
        .find = ingest_find_instances,
        .user = &svc.find,
        .jobs_url = ts_cfg_bool(TESSERA_MOVE_JOBS) ? ts_cfg_str(TESSERA_REDIS_URL) : NULL,
        .jobs_history = (int)ts_cfg_int(TESSERA_JOBS_HISTORY),
        .access = svc.access};
    bool relay = svc.find.query != NULL;
    ts_dicom_scp_callbacks cb = {.user = &svc,
                                 .retrieve_user = &svc.retrieve,
                                 .accept = on_accept,
                                 .temp_path = on_temp_path,
                                 .storage_syntaxes = on_storage_syntaxes,
                                 .store = on_store,
                                 .find = relay ? on_find : NULL,
                                 .move = relay ? ts_retrieve_move : NULL,
                                 .get = relay ? ts_retrieve_get : NULL};
    ts_dicom_scp *scp;
    if (ts_dicom_scp_new(&scfg, &cb, &scp, &err))
        ts_service_die("dicom listener", &err);
    atomic_store(&svc.scp, scp);
    if (atomic_load(&stopping))
        ts_dicom_scp_stop(scp); /* a signal came during start-up */
    ts_info("ingest ready", "aet=%s dicom_port=%d bus=%s events=%s metrics_port=%d", scfg.aet,
            scfg.port, bus_url, events_url, metrics_port);

    int rc = ts_dicom_scp_run(scp, &err);

    ts_bus_server_free(bus);
    ts_dicom_scp_free(scp);
    ingest_find_clear(&svc.find);
    ts_dicom_access_free(svc.access);
    ts_audit_stop(audit, 2000);
    ingest_commit_stop(svc.write.commit);
    ts_change_sequencer_stop(svc.write.sequencer);
    ts_heartbeat_stop(heartbeat);
    ts_metrics_server_free(metrics);
    ts_bus_pub_free(svc.write.events);
    ts_lua_free(svc.write.lua);
    ts_store_free(svc.write.store);
    ts_db_pool_free(svc.write.db);
    json_decref(svc.last_syntaxes);
    ts_info("stopped", NULL);
    return rc ? 1 : 0;
}
