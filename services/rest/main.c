/* tessera-rest: the Orthanc-compatible REST API. Reads go straight to
 * PostgreSQL in read-only transactions; new instances go through ingest's
 * write path on the bus. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "bus.h"
#include "config.h"
#include "db.h"
#include "dicom.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "rest_http.h"
#include "rest_archive.h"
#include "rest_content.h"
#include "rest_attachments.h"
#include "rest_delete.h"
#include "rest_dicomweb.h"
#include "rest_find.h"
#include "rest_jobs.h"
#include "rest_modalities.h"
#include "rest_peers.h"
#include "rest_queries.h"
#include "rest_metadata.h"
#include "rest_resources.h"
#include "service.h"
#include "store.h"

/* Orthanc's routes, in the order they are tried; '*' is one path segment. */
static const rest_route routes[] = {
    {"GET", "/system", rest_system},
    {"GET", "/statistics", rest_statistics},
    {"GET", "/changes", rest_changes},
    {"GET", "/tools/metrics-prometheus", rest_metrics_prometheus},
    {"GET", "/patients", rest_list_resources},
    {"GET", "/studies", rest_list_resources},
    {"GET", "/series", rest_list_resources},
    {"GET", "/instances", rest_list_resources},
    {"POST", "/instances", rest_upload_instance},
    {"GET", "/patients/*", rest_get_resource},
    {"GET", "/studies/*", rest_get_resource},
    {"GET", "/series/*", rest_get_resource},
    {"GET", "/instances/*", rest_get_resource},
    {"GET", "/instances/*/file", rest_instance_file},
    {"GET", "/instances/*/tags", rest_instance_tags},
    {"GET", "/instances/*/simplified-tags", rest_instance_tags},
    {"GET", "/instances/*/header", rest_instance_tags},
    {"GET", "/patients/*/studies", rest_navigate},
    {"GET", "/patients/*/series", rest_navigate},
    {"GET", "/patients/*/instances", rest_navigate},
    {"GET", "/studies/*/patient", rest_navigate},
    {"GET", "/studies/*/series", rest_navigate},
    {"GET", "/studies/*/instances", rest_navigate},
    {"GET", "/series/*/patient", rest_navigate},
    {"GET", "/series/*/study", rest_navigate},
    {"GET", "/series/*/instances", rest_navigate},
    {"GET", "/instances/*/patient", rest_navigate},
    {"GET", "/instances/*/study", rest_navigate},
    {"GET", "/instances/*/series", rest_navigate},
    {"POST", "/tools/lookup", rest_tools_lookup},
    {"GET", "/patients/*/attachments", rest_list_attachments},
    {"GET", "/patients/*/attachments/*", rest_attachment_operations},
    {"GET", "/patients/*/attachments/*/*", rest_attachment_get},
    {"PUT", "/patients/*/attachments/*", rest_attachment_put},
    {"DELETE", "/patients/*/attachments/*", rest_attachment_delete},
    {"GET", "/studies/*/attachments", rest_list_attachments},
    {"GET", "/studies/*/attachments/*", rest_attachment_operations},
    {"GET", "/studies/*/attachments/*/*", rest_attachment_get},
    {"PUT", "/studies/*/attachments/*", rest_attachment_put},
    {"DELETE", "/studies/*/attachments/*", rest_attachment_delete},
    {"GET", "/series/*/attachments", rest_list_attachments},
    {"GET", "/series/*/attachments/*", rest_attachment_operations},
    {"GET", "/series/*/attachments/*/*", rest_attachment_get},
    {"PUT", "/series/*/attachments/*", rest_attachment_put},
    {"DELETE", "/series/*/attachments/*", rest_attachment_delete},
    {"GET", "/instances/*/attachments", rest_list_attachments},
    {"GET", "/instances/*/attachments/*", rest_attachment_operations},
    {"GET", "/instances/*/attachments/*/*", rest_attachment_get},
    {"PUT", "/instances/*/attachments/*", rest_attachment_put},
    {"DELETE", "/instances/*/attachments/*", rest_attachment_delete},
    {"GET", "/patients/*/statistics", rest_resource_statistics},
    {"GET", "/studies/*/statistics", rest_resource_statistics},
    {"GET", "/series/*/statistics", rest_resource_statistics},
    {"GET", "/instances/*/statistics", rest_resource_statistics},
    {"GET", "/patients/*/metadata", rest_list_metadata},
    {"GET", "/patients/*/metadata/*", rest_get_metadata},
    {"PUT", "/patients/*/metadata/*", rest_put_metadata},
    {"DELETE", "/patients/*/metadata/*", rest_delete_metadata},
    {"GET", "/studies/*/metadata", rest_list_metadata},
    {"GET", "/studies/*/metadata/*", rest_get_metadata},
    {"PUT", "/studies/*/metadata/*", rest_put_metadata},
    {"DELETE", "/studies/*/metadata/*", rest_delete_metadata},
    {"GET", "/series/*/metadata", rest_list_metadata},
    {"GET", "/series/*/metadata/*", rest_get_metadata},
    {"PUT", "/series/*/metadata/*", rest_put_metadata},
    {"DELETE", "/series/*/metadata/*", rest_delete_metadata},
    {"GET", "/instances/*/metadata", rest_list_metadata},
    {"GET", "/instances/*/metadata/*", rest_get_metadata},
    {"PUT", "/instances/*/metadata/*", rest_put_metadata},
    {"DELETE", "/instances/*/metadata/*", rest_delete_metadata},
    /* deletions (rest_delete.c) */
    {"DELETE", "/patients/*", rest_delete_resource},
    {"DELETE", "/studies/*", rest_delete_resource},
    {"DELETE", "/series/*", rest_delete_resource},
    {"DELETE", "/instances/*", rest_delete_resource},
    {"POST", "/tools/bulk-delete", rest_bulk_delete},
    {"GET", "/tessera/deletion-queue", rest_deletion_queue_status},
    /* matching through the query service (rest_find.c) */
    {"POST", "/tools/find", rest_tools_find},
    /* archives, shared tags, instance content (rest_archive.c, rest_content.c) */
    {"GET", "/patients/*/archive", rest_archive},
    {"GET", "/studies/*/archive", rest_archive},
    {"GET", "/series/*/archive", rest_archive},
    {"POST", "/patients/*/archive", rest_archive_post},
    {"POST", "/studies/*/archive", rest_archive_post},
    {"POST", "/series/*/archive", rest_archive_post},
    {"POST", "/tools/create-archive", rest_create_archive},
    {"GET", "/patients/*/shared-tags", rest_shared_tags},
    {"GET", "/studies/*/shared-tags", rest_shared_tags},
    {"GET", "/series/*/shared-tags", rest_shared_tags},
    {"GET", "/instances/*/content/**", rest_instance_content},
    {"GET", "/instances/*/frames", rest_instance_frames},
    {"GET", "/instances/*/frames/*/raw", rest_instance_frame_raw},
    /* modalities (rest_modalities.c), jobs (rest_jobs.c), peers (rest_peers.c) */
    {"GET", "/modalities", rest_list_modalities},
    {"GET", "/modalities/*", rest_get_modality},
    {"PUT", "/modalities/*", rest_put_modality},
    {"DELETE", "/modalities/*", rest_delete_modality},
    {"GET", "/modalities/*/configuration", rest_get_modality_configuration},
    {"POST", "/modalities/*/echo", rest_modality_echo},
    {"POST", "/modalities/*/store", rest_modality_store},
    {"GET", "/jobs", rest_jobs_list},
    {"GET", "/jobs/*", rest_jobs_get},
    {"GET", "/jobs/*/*", rest_jobs_output},
    {"POST", "/jobs/*/cancel", rest_jobs_control},
    {"POST", "/jobs/*/pause", rest_jobs_control},
    {"POST", "/jobs/*/resume", rest_jobs_control},
    {"POST", "/jobs/*/resubmit", rest_jobs_control},
    {"GET", "/peers", rest_list_peers},
    {"GET", "/peers/*", rest_get_peer},
    {"PUT", "/peers/*", rest_put_peer},
    {"DELETE", "/peers/*", rest_delete_peer},
    {"GET", "/peers/*/configuration", rest_get_peer_configuration},
    {"GET", "/peers/*/system", rest_peer_system},
    {"POST", "/peers/*/store", rest_peer_store},
    /* query/retrieve as an SCU (rest_queries.c) */
    {"POST", "/modalities/*/query", rest_modality_query},
    {"POST", "/modalities/*/move", rest_modality_move},
    {"GET", "/queries", rest_queries_list},
    {"GET", "/queries/*", rest_query_get},
    {"DELETE", "/queries/*", rest_query_delete},
    {"GET", "/queries/*/answers", rest_query_answers},
    {"GET", "/queries/*/answers/*", rest_query_answer},
    {"GET", "/queries/*/answers/*/content", rest_query_answer_content},
    {"GET", "/queries/*/level", rest_query_field},
    {"GET", "/queries/*/modality", rest_query_field},
    {"GET", "/queries/*/query", rest_query_field},
    {"POST", "/queries/*/retrieve", rest_query_retrieve},
    {"POST", "/queries/*/answers/*/retrieve", rest_query_retrieve},
    {"POST", "/queries/*/answers/*/query-studies", rest_query_children},
    {"POST", "/queries/*/answers/*/query-series", rest_query_children},
    {"POST", "/queries/*/answers/*/query-instances", rest_query_children},
    /* DICOMweb (rest_dicomweb_*.c) */
    {"GET", "/dicom-web/studies", rest_dw_search},
    {"GET", "/dicom-web/series", rest_dw_search},
    {"GET", "/dicom-web/instances", rest_dw_search},
    {"GET", "/dicom-web/studies/*/series", rest_dw_search},
    {"GET", "/dicom-web/studies/*/instances", rest_dw_search},
    {"GET", "/dicom-web/studies/*/series/*/instances", rest_dw_search},
    {"GET", "/dicom-web/studies/*", rest_dw_retrieve},
    {"GET", "/dicom-web/studies/*/series/*", rest_dw_retrieve},
    {"GET", "/dicom-web/studies/*/series/*/instances/*", rest_dw_retrieve},
    {"GET", "/dicom-web/studies/*/metadata", rest_dw_metadata},
    {"GET", "/dicom-web/studies/*/series/*/metadata", rest_dw_metadata},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/metadata", rest_dw_metadata},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/frames/*", rest_dw_frames},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/bulk/**", rest_dw_bulk},
    {"POST", "/dicom-web/studies", rest_dw_store},
    {"POST", "/dicom-web/studies/*", rest_dw_store},
    {"OPTIONS", "/dicom-web/**", rest_dw_preflight},
    {"GET", "/wado", rest_dw_wado_uri}, /* where Orthanc's plugin serves WADO-URI */
    {"OPTIONS", "/wado", rest_dw_preflight},
};

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

static int ping_fn(ts_db *db, void *arg, ts_err *err)
{
    return ts_db_exec_sql(db, "SELECT 1", err);
}

static bool health(void *user, char *reason, size_t size)
{
    rest_ctx *ctx = user;
    ts_err err;
    if (ts_db_with_conn(ctx->db, ping_fn, NULL, &err)) {
        snprintf(reason, size, "%s", err.msg);
        return false;
    }
    return true;
}

static void die(const char *what, const ts_err *err)
{
    ts_error("cannot start", "step=%s error=\"%s\"", what, err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    ts_service_init("rest", argc, argv);
    ts_service_handle_signals(on_stop, NULL);
    ts_err err;
    ts_err_clear(&err);
    if (ts_dicom_global_init(&err))
        die("dicom", &err);

    rest_ctx ctx = {0};
    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    dbopt.read_conninfo = ts_config_str("TESSERA_DB_READ_URL"); /* a replica may serve our reads */
    if (ts_db_pool_new(&dbopt, &ctx.db, &err))
        die("database", &err);
    if (ts_db_migrate_wait(ctx.db, 120, &err))
        die("migrations", &err);
    if (ts_store_open(ts_config_str("TESSERA_STORAGE_DIR"), &ctx.store, &err))
        die("storage", &err);
    size_t max_msg = (size_t)ts_config_int("TESSERA_BUS_MAX_MESSAGE");
    if (ts_bus_client_new(ts_config_str("TESSERA_INGEST_BUS"),
                          (int)ts_config_int("TESSERA_BUS_RESOLVE_INTERVAL"), max_msg, &ctx.ingest,
                          &err))
        die("bus", &err);
    const char *query = ts_config_str("TESSERA_QUERY_BUS");
    if (query[0] && ts_bus_client_new(query, (int)ts_config_int("TESSERA_BUS_RESOLVE_INTERVAL"),
                                      max_msg, &ctx.query, &err))
        die("bus", &err);
    const char *deleters = ts_config_str("TESSERA_DELETER_BUS");
    if (deleters[0] && ts_bus_pusher_new(deleters, (int)ts_config_int("TESSERA_BUS_RESOLVE_INTERVAL"),
                                         &ctx.deleters, &err))
        die("bus", &err);
    ctx.stable_age_s = (int)ts_config_int("TESSERA_STABLE_AGE");
    ctx.max_body = ts_config_int("TESSERA_MAX_INSTANCE_SIZE");
    ctx.bus_timeout_ms = (int)ts_config_int("TESSERA_BUS_TIMEOUT") * 1000;

    ts_metrics_server *metrics = NULL;
    int metrics_port = (int)ts_config_int("TESSERA_METRICS_PORT");
    if (metrics_port && ts_metrics_serve(metrics_port, health, &ctx, &metrics, &err))
        die("metrics", &err);

    rest_server *srv;
    int port = (int)ts_config_int("TESSERA_HTTP_PORT");
    if (rest_server_start(&ctx, port, (int)ts_config_int("TESSERA_HTTP_MAX_CONNECTIONS"), routes,
                          sizeof(routes) / sizeof(routes[0]), &srv, &err))
        die("http", &err);
    ts_info("rest ready", "http_port=%d ingest_bus=%s metrics_port=%d", port,
            ts_config_str("TESSERA_INGEST_BUS"), metrics_port);

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
