/* tessera-rest: the Orthanc-compatible REST API. Reads go straight to
 * PostgreSQL in read-only transactions; new instances go through ingest's
 * write path on the bus. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/bus.h"
#include "base/config.h"
#include "io/db.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "base/metrics.h"
#include "io/service_io.h"
#include "rest_http.h"
#include "rest_archive.h"
#include "rest_content.h"
#include "rest_attachments.h"
#include "rest_delete.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_qido.h"
#include "rest_dicomweb_stow.h"
#include "rest_dicomweb_wado.h"
#include "rest_find.h"
#include "rest_jobs.h"
#include "rest_modalities.h"
#include "rest_peers.h"
#include "rest_queries.h"
#include "rest_metadata.h"
#include "rest_resources.h"
#include "rest_system.h"
#include "rest_upload.h"
#include "base/service.h"
#include "io/store.h"

static void rest_tools_list(rest_request *req);

/* Orthanc's routes, in the order they are tried; '*' is one path segment. */
static const rest_route routes[] = {
    {"GET", "/tools", rest_tools_list, REST_BODY_SMALL},
    {"GET", "/tools/default-encoding", rest_default_encoding, REST_BODY_SMALL},
    {"PUT", "/tools/default-encoding", rest_default_encoding, REST_BODY_SMALL},
    {"GET", "/tools/accepted-transfer-syntaxes", rest_accepted_transfer_syntaxes, REST_BODY_SMALL},
    {"PUT", "/tools/accepted-transfer-syntaxes", rest_accepted_transfer_syntaxes, REST_BODY_SMALL},
    {"GET", "/tools/unknown-sop-class-accepted", rest_unknown_sop_class_accepted, REST_BODY_SMALL},
    {"PUT", "/tools/unknown-sop-class-accepted", rest_unknown_sop_class_accepted, REST_BODY_SMALL},
    {"GET", "/tools/log-level", rest_log_level, REST_BODY_SMALL},
    {"PUT", "/tools/log-level", rest_log_level, REST_BODY_SMALL},
    {"POST", "/tools/dicom-echo", rest_tools_dicom_echo, REST_BODY_SMALL},
    {"GET", "/system", rest_system, REST_BODY_SMALL},
    {"GET", "/statistics", rest_statistics, REST_BODY_SMALL},
    {"GET", "/changes", rest_changes, REST_BODY_SMALL},
    {"GET", "/tools/metrics-prometheus", rest_metrics_prometheus, REST_BODY_SMALL},
    {"GET", "/patients", rest_list_resources, REST_BODY_SMALL},
    {"GET", "/studies", rest_list_resources, REST_BODY_SMALL},
    {"GET", "/series", rest_list_resources, REST_BODY_SMALL},
    {"GET", "/instances", rest_list_resources, REST_BODY_SMALL},
    {"POST", "/instances", rest_upload_instance, REST_BODY_SPOOL_GZIP},
    {"GET", "/patients/*", rest_get_resource, REST_BODY_SMALL},
    {"GET", "/studies/*", rest_get_resource, REST_BODY_SMALL},
    {"GET", "/series/*", rest_get_resource, REST_BODY_SMALL},
    {"GET", "/instances/*", rest_get_resource, REST_BODY_SMALL},
    {"GET", "/instances/*/file", rest_instance_file, REST_BODY_SMALL},
    {"GET", "/instances/*/tags", rest_instance_tags, REST_BODY_SMALL},
    {"GET", "/instances/*/simplified-tags", rest_instance_tags, REST_BODY_SMALL},
    {"GET", "/instances/*/header", rest_instance_tags, REST_BODY_SMALL},
    {"GET", "/patients/*/studies", rest_navigate, REST_BODY_SMALL},
    {"GET", "/patients/*/series", rest_navigate, REST_BODY_SMALL},
    {"GET", "/patients/*/instances", rest_navigate, REST_BODY_SMALL},
    {"GET", "/studies/*/patient", rest_navigate, REST_BODY_SMALL},
    {"GET", "/studies/*/series", rest_navigate, REST_BODY_SMALL},
    {"GET", "/studies/*/instances", rest_navigate, REST_BODY_SMALL},
    {"GET", "/series/*/patient", rest_navigate, REST_BODY_SMALL},
    {"GET", "/series/*/study", rest_navigate, REST_BODY_SMALL},
    {"GET", "/series/*/instances", rest_navigate, REST_BODY_SMALL},
    {"GET", "/instances/*/patient", rest_navigate, REST_BODY_SMALL},
    {"GET", "/instances/*/study", rest_navigate, REST_BODY_SMALL},
    {"GET", "/instances/*/series", rest_navigate, REST_BODY_SMALL},
    {"POST", "/tools/lookup", rest_tools_lookup, REST_BODY_SMALL},
    {"GET", "/patients/*/attachments", rest_list_attachments, REST_BODY_SMALL},
    {"GET", "/patients/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL},
    {"GET", "/patients/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL},
    {"PUT", "/patients/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE},
    {"DELETE", "/patients/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL},
    {"GET", "/studies/*/attachments", rest_list_attachments, REST_BODY_SMALL},
    {"GET", "/studies/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL},
    {"GET", "/studies/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL},
    {"PUT", "/studies/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE},
    {"DELETE", "/studies/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL},
    {"GET", "/series/*/attachments", rest_list_attachments, REST_BODY_SMALL},
    {"GET", "/series/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL},
    {"GET", "/series/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL},
    {"PUT", "/series/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE},
    {"DELETE", "/series/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL},
    {"GET", "/instances/*/attachments", rest_list_attachments, REST_BODY_SMALL},
    {"GET", "/instances/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL},
    {"GET", "/instances/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL},
    {"PUT", "/instances/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE},
    {"DELETE", "/instances/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL},
    {"GET", "/patients/*/statistics", rest_resource_statistics, REST_BODY_SMALL},
    {"GET", "/studies/*/statistics", rest_resource_statistics, REST_BODY_SMALL},
    {"GET", "/series/*/statistics", rest_resource_statistics, REST_BODY_SMALL},
    {"GET", "/instances/*/statistics", rest_resource_statistics, REST_BODY_SMALL},
    {"GET", "/patients/*/protected", rest_patient_protected, REST_BODY_SMALL},
    {"PUT", "/patients/*/protected", rest_patient_protected, REST_BODY_SMALL},
    {"GET", "/patients/*/metadata", rest_list_metadata, REST_BODY_SMALL},
    {"GET", "/patients/*/metadata/*", rest_get_metadata, REST_BODY_SMALL},
    {"PUT", "/patients/*/metadata/*", rest_put_metadata, REST_BODY_SMALL},
    {"DELETE", "/patients/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL},
    {"GET", "/studies/*/metadata", rest_list_metadata, REST_BODY_SMALL},
    {"GET", "/studies/*/metadata/*", rest_get_metadata, REST_BODY_SMALL},
    {"PUT", "/studies/*/metadata/*", rest_put_metadata, REST_BODY_SMALL},
    {"DELETE", "/studies/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL},
    {"GET", "/series/*/metadata", rest_list_metadata, REST_BODY_SMALL},
    {"GET", "/series/*/metadata/*", rest_get_metadata, REST_BODY_SMALL},
    {"PUT", "/series/*/metadata/*", rest_put_metadata, REST_BODY_SMALL},
    {"DELETE", "/series/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL},
    {"GET", "/instances/*/metadata", rest_list_metadata, REST_BODY_SMALL},
    {"GET", "/instances/*/metadata/*", rest_get_metadata, REST_BODY_SMALL},
    {"PUT", "/instances/*/metadata/*", rest_put_metadata, REST_BODY_SMALL},
    {"DELETE", "/instances/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL},
    /* deletions (rest_delete.c) */
    {"DELETE", "/patients/*", rest_delete_resource, REST_BODY_SMALL},
    {"DELETE", "/studies/*", rest_delete_resource, REST_BODY_SMALL},
    {"DELETE", "/series/*", rest_delete_resource, REST_BODY_SMALL},
    {"DELETE", "/instances/*", rest_delete_resource, REST_BODY_SMALL},
    {"POST", "/tools/bulk-delete", rest_bulk_delete, REST_BODY_LARGE},
    {"GET", "/tessera/deletion-queue", rest_deletion_queue_status, REST_BODY_SMALL},
    /* matching through the query service (rest_find.c) */
    {"POST", "/tools/find", rest_tools_find, REST_BODY_SMALL},
    /* archives, shared tags, instance content (rest_archive.c, rest_content.c) */
    {"GET", "/patients/*/archive", rest_archive, REST_BODY_SMALL},
    {"GET", "/studies/*/archive", rest_archive, REST_BODY_SMALL},
    {"GET", "/series/*/archive", rest_archive, REST_BODY_SMALL},
    {"POST", "/patients/*/archive", rest_archive_post, REST_BODY_LARGE},
    {"POST", "/studies/*/archive", rest_archive_post, REST_BODY_LARGE},
    {"POST", "/series/*/archive", rest_archive_post, REST_BODY_LARGE},
    {"POST", "/tools/create-archive", rest_create_archive, REST_BODY_LARGE},
    {"GET", "/patients/*/shared-tags", rest_shared_tags, REST_BODY_SMALL},
    {"GET", "/studies/*/shared-tags", rest_shared_tags, REST_BODY_SMALL},
    {"GET", "/series/*/shared-tags", rest_shared_tags, REST_BODY_SMALL},
    {"GET", "/patients/*/module", rest_module, REST_BODY_SMALL},
    {"GET", "/studies/*/module", rest_module, REST_BODY_SMALL},
    {"GET", "/studies/*/module-patient", rest_module, REST_BODY_SMALL},
    {"GET", "/series/*/module", rest_module, REST_BODY_SMALL},
    {"GET", "/instances/*/module", rest_module, REST_BODY_SMALL},
    {"GET", "/patients/*/instances-tags", rest_instances_tags, REST_BODY_SMALL},
    {"GET", "/studies/*/instances-tags", rest_instances_tags, REST_BODY_SMALL},
    {"GET", "/series/*/instances-tags", rest_instances_tags, REST_BODY_SMALL},
    {"GET", "/instances/*/content/**", rest_instance_content, REST_BODY_SMALL},
    {"GET", "/instances/*/frames", rest_instance_frames, REST_BODY_SMALL},
    {"GET", "/instances/*/frames/*/raw", rest_instance_frame_raw, REST_BODY_SMALL},
    /* modalities (rest_modalities.c), jobs (rest_jobs.c), peers (rest_peers.c) */
    {"GET", "/modalities", rest_list_modalities, REST_BODY_SMALL},
    {"GET", "/modalities/*", rest_get_modality, REST_BODY_SMALL},
    {"PUT", "/modalities/*", rest_put_modality, REST_BODY_SMALL},
    {"DELETE", "/modalities/*", rest_delete_modality, REST_BODY_SMALL},
    {"GET", "/modalities/*/configuration", rest_get_modality_configuration, REST_BODY_SMALL},
    {"POST", "/modalities/*/echo", rest_modality_echo, REST_BODY_SMALL},
    {"POST", "/modalities/*/store", rest_modality_store, REST_BODY_LARGE},
    {"GET", "/jobs", rest_jobs_list, REST_BODY_SMALL},
    {"GET", "/jobs/*", rest_jobs_get, REST_BODY_SMALL},
    {"GET", "/jobs/*/*", rest_jobs_output, REST_BODY_SMALL},
    {"POST", "/jobs/*/cancel", rest_jobs_control, REST_BODY_SMALL},
    {"POST", "/jobs/*/pause", rest_jobs_control, REST_BODY_SMALL},
    {"POST", "/jobs/*/resume", rest_jobs_control, REST_BODY_SMALL},
    {"POST", "/jobs/*/resubmit", rest_jobs_control, REST_BODY_SMALL},
    {"GET", "/peers", rest_list_peers, REST_BODY_SMALL},
    {"GET", "/peers/*", rest_get_peer, REST_BODY_SMALL},
    {"PUT", "/peers/*", rest_put_peer, REST_BODY_SMALL},
    {"DELETE", "/peers/*", rest_delete_peer, REST_BODY_SMALL},
    {"GET", "/peers/*/configuration", rest_get_peer_configuration, REST_BODY_SMALL},
    {"GET", "/peers/*/system", rest_peer_system, REST_BODY_SMALL},
    {"POST", "/peers/*/store", rest_peer_store, REST_BODY_LARGE},
    /* query/retrieve as an SCU (rest_queries.c) */
    {"POST", "/modalities/*/query", rest_modality_query, REST_BODY_SMALL},
    {"POST", "/modalities/*/move", rest_modality_move, REST_BODY_LARGE},
    {"GET", "/queries", rest_queries_list, REST_BODY_SMALL},
    {"GET", "/queries/*", rest_query_get, REST_BODY_SMALL},
    {"DELETE", "/queries/*", rest_query_delete, REST_BODY_SMALL},
    {"GET", "/queries/*/answers", rest_query_answers, REST_BODY_SMALL},
    {"GET", "/queries/*/answers/*", rest_query_answer, REST_BODY_SMALL},
    {"GET", "/queries/*/answers/*/content", rest_query_answer_content, REST_BODY_SMALL},
    {"GET", "/queries/*/level", rest_query_field, REST_BODY_SMALL},
    {"GET", "/queries/*/modality", rest_query_field, REST_BODY_SMALL},
    {"GET", "/queries/*/query", rest_query_field, REST_BODY_SMALL},
    {"POST", "/queries/*/retrieve", rest_query_retrieve, REST_BODY_SMALL},
    {"POST", "/queries/*/answers/*/retrieve", rest_query_retrieve, REST_BODY_SMALL},
    {"POST", "/queries/*/answers/*/query-studies", rest_query_children, REST_BODY_SMALL},
    {"POST", "/queries/*/answers/*/query-series", rest_query_children, REST_BODY_SMALL},
    {"POST", "/queries/*/answers/*/query-instances", rest_query_children, REST_BODY_SMALL},
    /* DICOMweb (rest_dicomweb_*.c) */
    {"GET", "/dicom-web/studies", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/series", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/instances", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/instances", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/instances", rest_dw_search, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*", rest_dw_retrieve, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*", rest_dw_retrieve, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/instances/*", rest_dw_retrieve, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/metadata", rest_dw_metadata, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/metadata", rest_dw_metadata, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/metadata", rest_dw_metadata,
     REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/frames/*", rest_dw_frames, REST_BODY_SMALL},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/bulk/**", rest_dw_bulk, REST_BODY_SMALL},
    {"POST", "/dicom-web/studies", rest_dw_store, REST_BODY_SPOOL},
    {"POST", "/dicom-web/studies/*", rest_dw_store, REST_BODY_SPOOL},
    {"OPTIONS", "/dicom-web/**", rest_dw_preflight, REST_BODY_SMALL},
    /* where Orthanc's plugin serves WADO-URI */
    {"GET", "/wado", rest_dw_wado_uri, REST_BODY_SMALL},
    {"OPTIONS", "/wado", rest_dw_preflight, REST_BODY_SMALL},
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* GET /tools: the names under /tools that this table serves, sorted, as Orthanc
 * lists the children of a path. */
static void rest_tools_list(rest_request *req)
{
    const size_t n = sizeof(routes) / sizeof(routes[0]);
    const char *names[sizeof(routes) / sizeof(routes[0])] = {0};
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(routes[i].pattern, "/tools/", 7) == 0)
            names[count++] = routes[i].pattern + 7;
    qsort(names, count, sizeof(names[0]), cmp_str);
    json_t *list = json_array();
    for (size_t i = 0; i < count; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
            json_array_append_new(list, json_string(names[i]));
    rest_reply_json(req, 200, list);
}

static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv = PTHREAD_COND_INITIALIZER;
static int stop_requested;

static void on_stop(void *user)
{
    pthread_mutex_lock(&stop_mu);
    stop_requested = 1;
    pthread_cond_signal(&stop_cv);
    pthread_mutex_unlock(&stop_mu);
}

int main(int argc, char **argv)
{
    ts_service_init("rest", argc, argv);
    ts_service_handle_signals(on_stop, NULL);
    ts_err err;
    ts_err_clear(&err);
    if (ts_dicom_global_init(&err))
        ts_service_die("dicom", &err);

    rest_ctx ctx = {0};
    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    dbopt.read_conninfo = ts_cfg_str(TESSERA_DB_READ_URL); /* a replica may serve our reads */
    ctx.db = ts_service_db(&dbopt);
    ctx.store = ts_service_store();
    size_t max_msg = (size_t)ts_cfg_int(TESSERA_BUS_MAX_MESSAGE);
    if (ts_bus_client_new(ts_cfg_str(TESSERA_INGEST_BUS),
                          (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL), max_msg, &ctx.ingest,
                          &err))
        ts_service_die("bus", &err);
    const char *query = ts_cfg_str(TESSERA_QUERY_BUS);
    if (query[0] && ts_bus_client_new(query, (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL), max_msg,
                                      &ctx.query, &err))
        ts_service_die("bus", &err);
    const char *deleters = ts_cfg_str(TESSERA_DELETER_BUS);
    if (deleters[0] && ts_bus_pusher_new(deleters, (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL),
                                         &ctx.deleters, &err))
        ts_service_die("bus", &err);
    ctx.stable_age_s = (int)ts_cfg_int(TESSERA_STABLE_AGE);
    ctx.max_body = ts_cfg_int(TESSERA_MAX_INSTANCE_SIZE);
    ctx.bus_timeout_ms = (int)ts_cfg_int(TESSERA_BUS_TIMEOUT) * 1000;

    ts_metrics_server *metrics = ts_service_metrics(ts_service_db_health, ctx.db);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);

    rest_server *srv;
    int port = (int)ts_cfg_int(TESSERA_HTTP_PORT);
    if (rest_server_start(&ctx, port, (int)ts_cfg_int(TESSERA_HTTP_MAX_CONNECTIONS), routes,
                          sizeof(routes) / sizeof(routes[0]), &srv, &err))
        ts_service_die("http", &err);
    ts_info("rest ready", "http_port=%d ingest_bus=%s metrics_port=%d", port,
            ts_cfg_str(TESSERA_INGEST_BUS), metrics_port);

    pthread_mutex_lock(&stop_mu);
    while (!stop_requested)
        pthread_cond_wait(&stop_cv, &stop_mu);
    pthread_mutex_unlock(&stop_mu);

    rest_server_stop(srv);
    ts_metrics_server_free(metrics);
    ts_bus_client_free(ctx.ingest);
    ts_bus_client_free(ctx.deleters);
    ts_bus_client_free(ctx.query);
    ts_store_free(ctx.store);
    ts_db_pool_free(ctx.db);
    ts_info("stopped", NULL);
    return 0;
}
