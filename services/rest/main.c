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
#include "rest_auth.h"
#include "rest_audit.h"
#include "rest_services.h"
#include "domain/audit.h"
#include "rest_content.h"
#include "rest_create.h"
#include "rest_attachments.h"
#include "rest_delete.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_qido.h"
#include "rest_dicomweb_stow.h"
#include "rest_dicomweb_wado.h"
#include "rest_find.h"
#include "rest_image.h"
#include "rest_jobs.h"
#include "rest_labels.h"
#include "rest_modalities.h"
#include "rest_peers.h"
#include "rest_queries.h"
#include "rest_metadata.h"
#include "rest_modify.h"
#include "rest_resources.h"
#include "rest_routes.h"
#include "rest_lua.h"
#include "rest_exports.h"
#include "rest_system.h"
#include "rest_upload.h"
#include "rest_ui.h"
#include "base/service.h"
#include "io/store.h"

static void rest_tools_list(rest_request *req);

/* Orthanc's routes, in the order they are tried; '*' is one path segment.
 * Each row ends with the least role that may call it and what a caller
 * restricted to labels may reach through it (rest_http.h, rest_scope); both
 * are checked in one place before the handler runs (rest_auth.c, authorize). */
static const rest_route routes[] = {
    {"GET", "/tools", rest_tools_list, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_PUBLIC},
    {"GET", "/tools/default-encoding", rest_default_encoding, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_PUBLIC},
    {"PUT", "/tools/default-encoding", rest_default_encoding, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/tools/accepted-transfer-syntaxes", rest_accepted_transfer_syntaxes, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_PUBLIC},
    {"PUT", "/tools/accepted-transfer-syntaxes", rest_accepted_transfer_syntaxes, REST_BODY_SMALL,
     REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"GET", "/tools/unknown-sop-class-accepted", rest_unknown_sop_class_accepted, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_PUBLIC},
    {"PUT", "/tools/unknown-sop-class-accepted", rest_unknown_sop_class_accepted, REST_BODY_SMALL,
     REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"GET", "/tools/log-level", rest_log_level, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_PUBLIC},
    {"PUT", "/tools/log-level", rest_log_level, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"POST", "/tools/dicom-echo", rest_tools_dicom_echo, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    /* Orthanc's log of exports (rest_exports.c), Lua (rest_lua.c): execute-script is off
     * unless TESSERA_EXECUTE_LUA_ENABLED */
    {"GET", "/exports", rest_exports, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"DELETE", "/exports", rest_exports, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"POST", "/tools/execute-script", rest_execute_script, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/system", rest_system, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_PUBLIC},
    {"GET", "/statistics", rest_statistics, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/changes", rest_changes, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"DELETE", "/changes", rest_delete_changes, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"GET", "/tools/metrics-prometheus", rest_metrics_prometheus, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    {"GET", "/patients", rest_list_resources, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/studies", rest_list_resources, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/series", rest_list_resources, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/instances", rest_list_resources, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"POST", "/instances", rest_upload_instance, REST_BODY_SPOOL_GZIP, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"GET", "/patients/*", rest_get_resource, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_IN_SQL},
    {"GET", "/studies/*", rest_get_resource, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_IN_SQL},
    {"GET", "/series/*", rest_get_resource, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_IN_SQL},
    {"GET", "/instances/*", rest_get_resource, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_IN_SQL},
    {"GET", "/instances/*/file", rest_instance_file, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/tags", rest_instance_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/simplified-tags", rest_instance_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/header", rest_instance_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/studies", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/series", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/instances", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/patient", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_PATIENT_OF},
    {"GET", "/studies/*/series", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/instances", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/patient", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_PATIENT_OF},
    {"GET", "/series/*/study", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"GET", "/series/*/instances", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/patient", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_PATIENT_OF},
    {"GET", "/instances/*/study", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/series", rest_navigate, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/tools/lookup", rest_tools_lookup, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/patients/*/attachments", rest_list_attachments, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/patients/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/patients/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/attachments", rest_list_attachments, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/studies/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/studies/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/attachments", rest_list_attachments, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/series/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/series/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/attachments", rest_list_attachments, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/attachments/*", rest_attachment_operations, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/attachments/*/*", rest_attachment_get, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/instances/*/attachments/*", rest_attachment_put, REST_BODY_INSTANCE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/instances/*/attachments/*", rest_attachment_delete, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    /* attachment operations of Orthanc's list (issue 16) */
    {"POST", "/patients/*/attachments/*/verify-md5", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"POST", "/patients/*/attachments/*/compress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/patients/*/attachments/*/uncompress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/attachments/*/verify-md5", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/attachments/*/compress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/attachments/*/uncompress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/series/*/attachments/*/verify-md5", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"POST", "/series/*/attachments/*/compress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/series/*/attachments/*/uncompress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/instances/*/attachments/*/verify-md5", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"POST", "/instances/*/attachments/*/compress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"POST", "/instances/*/attachments/*/uncompress", rest_attachment_post, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/statistics", rest_resource_statistics, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/statistics", rest_resource_statistics, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/statistics", rest_resource_statistics, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/statistics", rest_resource_statistics, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/protected", rest_patient_protected, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/patients/*/protected", rest_patient_protected, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/metadata", rest_list_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/metadata/*", rest_get_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/patients/*/metadata/*", rest_put_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/patients/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/metadata", rest_list_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/metadata/*", rest_get_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/studies/*/metadata/*", rest_put_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/studies/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/metadata", rest_list_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/metadata/*", rest_get_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/series/*/metadata/*", rest_put_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/series/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/metadata", rest_list_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/metadata/*", rest_get_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/instances/*/metadata/*", rest_put_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/instances/*/metadata/*", rest_delete_metadata, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    /* deletions (rest_delete.c) */
    {"DELETE", "/patients/*", rest_delete_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/studies/*", rest_delete_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/series/*", rest_delete_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/instances/*", rest_delete_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/tools/bulk-delete", rest_bulk_delete, REST_BODY_LARGE, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"GET", "/tessera/deletion-queue", rest_deletion_queue_status, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    /* auto-routing rules and deliveries (rest_routes.c; the router is in jobs) */
    {"GET", "/tessera/routes", rest_routes_list, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"POST", "/tessera/routes", rest_routes_create, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/tessera/routes/*", rest_routes_get, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"PUT", "/tessera/routes/*", rest_routes_update, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"DELETE", "/tessera/routes/*", rest_routes_delete, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"POST", "/tessera/routes/*/test", rest_routes_test, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/tessera/route-deliveries", rest_route_deliveries_list, REST_BODY_SMALL,
     REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"POST", "/tessera/route-deliveries/*/resubmit", rest_route_deliveries_resubmit,
     REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"GET", "/tessera/audit", rest_audit_list, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    /* every service process's heartbeat, for the UI's system page (rest_services.c) */
    {"GET", "/tessera/services", rest_services_list, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    /* matching through the query service (rest_find.c) */
    {"POST", "/tools/find", rest_tools_find, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    /* archives, shared tags, instance content (rest_archive.c, rest_content.c) */
    {"GET", "/patients/*/archive", rest_archive, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/archive", rest_archive, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/archive", rest_archive, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/patients/*/archive", rest_archive_post, REST_BODY_LARGE, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/archive", rest_archive_post, REST_BODY_LARGE, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/series/*/archive", rest_archive_post, REST_BODY_LARGE, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/tools/create-archive", rest_create_archive, REST_BODY_LARGE, REST_ROLE_READ,
     REST_SCOPE_NONE},
    {"GET", "/patients/*/shared-tags", rest_shared_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/shared-tags", rest_shared_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/shared-tags", rest_shared_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/module", rest_module, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/module", rest_module, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/module-patient", rest_module, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/module", rest_module, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/module", rest_module, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/instances-tags", rest_instances_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/instances-tags", rest_instances_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/instances-tags", rest_instances_tags, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/content/**", rest_instance_content, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames", rest_instance_frames, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/raw", rest_instance_frame_raw, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    /* decoded pixels (rest_image.c) */
    {"GET", "/instances/*/preview", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/preview", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/rendered", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/rendered", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/image-uint8", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/image-uint8", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/image-uint16", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/image-uint16", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/image-int16", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/image-int16", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/matlab", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/matlab", rest_image, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/numpy", rest_image_numpy, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/numpy", rest_image_numpy, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/numpy", rest_image_numpy, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/frames/*/raw.gz", rest_image_raw_gz, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    /* modification and anonymization (rest_modify.c, rest_create.c) */
    {"POST", "/instances/*/modify", rest_modify_instance, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/instances/*/anonymize", rest_modify_instance, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"POST", "/series/*/modify", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/series/*/anonymize", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/modify", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/anonymize", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/patients/*/modify", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/patients/*/anonymize", rest_modify_resource, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/split", rest_split_study, REST_BODY_LARGE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"POST", "/studies/*/merge", rest_merge_study, REST_BODY_LARGE, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"GET", "/tools/generate-uid", rest_generate_uid, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_PUBLIC},
    {"POST", "/tools/create-dicom", rest_create_dicom, REST_BODY_INSTANCE, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    /* modalities (rest_modalities.c), jobs (rest_jobs.c), peers (rest_peers.c) */
    {"GET", "/modalities", rest_list_modalities, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/modalities/*", rest_get_modality, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"PUT", "/modalities/*", rest_put_modality, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"DELETE", "/modalities/*", rest_delete_modality, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/modalities/*/configuration", rest_get_modality_configuration, REST_BODY_SMALL,
     REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"POST", "/modalities/*/echo", rest_modality_echo, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"POST", "/modalities/*/store", rest_modality_store, REST_BODY_LARGE, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"POST", "/modalities/*/store-straight", rest_modality_store_straight, REST_BODY_INSTANCE,
     REST_ROLE_WRITE, REST_SCOPE_NONE},
    /* jobs: everyone but an admin sees and controls only the jobs it submitted
     * (rest_jobs.c), so label-scoped callers may follow their archives */
    {"GET", "/jobs", rest_jobs_list, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/jobs/*", rest_jobs_get, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/jobs/*/*", rest_jobs_output, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"POST", "/jobs/*/cancel", rest_jobs_control, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_FILTERED},
    {"POST", "/jobs/*/pause", rest_jobs_control, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_FILTERED},
    {"POST", "/jobs/*/resume", rest_jobs_control, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_FILTERED},
    {"POST", "/jobs/*/resubmit", rest_jobs_control, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_FILTERED},
    {"GET", "/peers", rest_list_peers, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/peers/*", rest_get_peer, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"PUT", "/peers/*", rest_put_peer, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"DELETE", "/peers/*", rest_delete_peer, REST_BODY_SMALL, REST_ROLE_ADMIN, REST_SCOPE_NONE},
    {"GET", "/peers/*/configuration", rest_get_peer_configuration, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/peers/*/system", rest_peer_system, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"POST", "/peers/*/store", rest_peer_store, REST_BODY_LARGE, REST_ROLE_WRITE, REST_SCOPE_NONE},
    {"POST", "/peers/*/store-straight", rest_peer_store_straight, REST_BODY_INSTANCE,
     REST_ROLE_WRITE, REST_SCOPE_NONE},
    /* query/retrieve as an SCU (rest_queries.c) */
    {"POST", "/modalities/*/query", rest_modality_query, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"POST", "/modalities/*/move", rest_modality_move, REST_BODY_LARGE, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"GET", "/queries", rest_queries_list, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/queries/*", rest_query_get, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"DELETE", "/queries/*", rest_query_delete, REST_BODY_SMALL, REST_ROLE_WRITE, REST_SCOPE_NONE},
    {"GET", "/queries/*/answers", rest_query_answers, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    {"GET", "/queries/*/answers/*", rest_query_answer, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    {"GET", "/queries/*/answers/*/content", rest_query_answer_content, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/queries/*/level", rest_query_field, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/queries/*/modality", rest_query_field, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_NONE},
    {"GET", "/queries/*/query", rest_query_field, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"POST", "/queries/*/retrieve", rest_query_retrieve, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"POST", "/queries/*/answers/*/retrieve", rest_query_retrieve, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"POST", "/queries/*/answers/*/query-studies", rest_query_children, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_NONE},
    {"POST", "/queries/*/answers/*/query-series", rest_query_children, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_NONE},
    {"POST", "/queries/*/answers/*/query-instances", rest_query_children, REST_BODY_SMALL,
     REST_ROLE_WRITE, REST_SCOPE_NONE},
    /* labels, as Orthanc 1.12 has them (rest_labels.c) */
    {"GET", "/tools/labels", rest_tools_labels, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_NONE},
    {"GET", "/patients/*/labels", rest_list_labels, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/labels", rest_list_labels, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/labels", rest_list_labels, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/labels", rest_list_labels, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/patients/*/labels/*", rest_get_label, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/studies/*/labels/*", rest_get_label, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/series/*/labels/*", rest_get_label, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"GET", "/instances/*/labels/*", rest_get_label, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_RESOURCE},
    {"PUT", "/patients/*/labels/*", rest_put_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"PUT", "/studies/*/labels/*", rest_put_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"PUT", "/series/*/labels/*", rest_put_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"PUT", "/instances/*/labels/*", rest_put_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/patients/*/labels/*", rest_delete_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/studies/*/labels/*", rest_delete_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/series/*/labels/*", rest_delete_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    {"DELETE", "/instances/*/labels/*", rest_delete_label, REST_BODY_SMALL, REST_ROLE_WRITE,
     REST_SCOPE_RESOURCE},
    /* API keys for machines, made and revoked by an admin (rest_auth.c) */
    {"POST", "/tessera/api-keys", rest_api_keys_create, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"GET", "/tessera/api-keys", rest_api_keys_list, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    {"DELETE", "/tessera/api-keys/*", rest_api_keys_revoke, REST_BODY_SMALL, REST_ROLE_ADMIN,
     REST_SCOPE_NONE},
    /* DICOMweb (rest_dicomweb_*.c) */
    {"GET", "/dicom-web/studies", rest_dw_search, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/series", rest_dw_search, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/instances", rest_dw_search, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/studies/*/series", rest_dw_search, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/studies/*/instances", rest_dw_search, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/studies/*/series/*/instances", rest_dw_search, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_FILTERED},
    {"GET", "/dicom-web/studies/*", rest_dw_retrieve, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*", rest_dw_retrieve, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*", rest_dw_retrieve, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/metadata", rest_dw_metadata, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/metadata", rest_dw_metadata, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/metadata", rest_dw_metadata, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/frames/*", rest_dw_frames, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    /* rendered images (rest_dicomweb_wado.c, issue 21) */
    {"GET", "/dicom-web/studies/*/rendered", rest_dw_rendered, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/thumbnail", rest_dw_rendered, REST_BODY_SMALL, REST_ROLE_READ,
     REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/rendered", rest_dw_rendered, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/thumbnail", rest_dw_rendered, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/rendered", rest_dw_rendered, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/thumbnail", rest_dw_rendered,
     REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/frames/*/rendered", rest_dw_rendered,
     REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/frames/*/thumbnail", rest_dw_rendered,
     REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"GET", "/dicom-web/studies/*/series/*/instances/*/bulk/**", rest_dw_bulk, REST_BODY_SMALL,
     REST_ROLE_READ, REST_SCOPE_DICOMWEB},
    {"POST", "/dicom-web/studies", rest_dw_store, REST_BODY_SPOOL, REST_ROLE_WRITE,
     REST_SCOPE_FILTERED},
    {"POST", "/dicom-web/studies/*", rest_dw_store, REST_BODY_SPOOL, REST_ROLE_WRITE,
     REST_SCOPE_NONE},
    {"OPTIONS", "/dicom-web/**", rest_dw_preflight, REST_BODY_SMALL, REST_ROLE_NONE,
     REST_SCOPE_PUBLIC},
    /* where Orthanc's plugin serves WADO-URI */
    {"GET", "/wado", rest_dw_wado_uri, REST_BODY_SMALL, REST_ROLE_READ, REST_SCOPE_WADO_URI},
    {"OPTIONS", "/wado", rest_dw_preflight, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
    /* the web UI's static files (rest_ui.c, ui/): no patient data, any signed-in caller */
    {"GET", "/", rest_ui_redirect, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
    {"GET", "/ui", rest_ui_file_get, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
    {"GET", "/ui/**", rest_ui_file_get, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
    {"GET", "/viewer", rest_viewer_get, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
    {"GET", "/viewer/**", rest_viewer_get, REST_BODY_SMALL, REST_ROLE_NONE, REST_SCOPE_PUBLIC},
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

static void on_reload(void *user)
{
    ts_err err;
    if (rest_server_reload_tls(user, &err))
        ts_error("https certificate not reloaded, the old one stays", "error=\"%s\"", err.msg);
}

int main(int argc, char **argv)
{
    ts_service_init("rest", argc, argv);
    ts_service_handle_signals(on_stop, NULL);
    ts_err err;
    ts_err_clear(&err);
    if (ts_dicom_global_init(&err))
        ts_service_die("dicom", &err);
    if (ts_dicom_dictionary_add(ts_cfg_str(TESSERA_DICOM_DICTIONARY), &err))
        ts_service_die("dictionary", &err);

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
    ctx.unrouted = rest_dw_unrouted; /* DICOMweb's CORS on answers no handler gave */
    if (ts_cfg_bool(TESSERA_AUDIT) &&
        ts_audit_start(ts_cfg_str(TESSERA_DB_URL), "rest", (size_t)ts_cfg_int(TESSERA_AUDIT_QUEUE),
                       &ctx.audit, &err))
        ts_service_die("audit", &err);
    ctx.on_answered = rest_audit_request;

    ts_metrics_server *metrics = ts_service_metrics(ts_service_db_health, ctx.db);
    ts_heartbeat *heartbeat = ts_service_heartbeat(ctx.db, ts_service_db_health, ctx.db);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);

    if (rest_auth_start(&ctx, &err))
        ts_service_die("authentication", &err);
    if (rest_lua_start(&ctx, &err))
        ts_service_die("lua scripts", &err);
    rest_server *srv;
    int port = (int)ts_cfg_int(TESSERA_HTTP_PORT);
    if (rest_server_start(&ctx, port, (int)ts_cfg_int(TESSERA_HTTP_MAX_CONNECTIONS), routes,
                          sizeof(routes) / sizeof(routes[0]), &srv, &err))
        ts_service_die("http", &err);
    ts_service_on_reload(on_reload, srv); /* SIGHUP: a renewed certificate */
    ts_info("rest ready", "http_port=%d ingest_bus=%s metrics_port=%d", port,
            ts_cfg_str(TESSERA_INGEST_BUS), metrics_port);

    pthread_mutex_lock(&stop_mu);
    while (!stop_requested)
        pthread_cond_wait(&stop_cv, &stop_mu);
    pthread_mutex_unlock(&stop_mu);

    rest_server_stop(srv);
    ts_audit_stop(ctx.audit, 2000);
    rest_auth_stop(&ctx);
    ts_heartbeat_stop(heartbeat);
    rest_lua_stop(&ctx);
    ts_metrics_server_free(metrics);
    ts_bus_client_free(ctx.ingest);
    ts_bus_client_free(ctx.deleters);
    ts_bus_client_free(ctx.query);
    ts_store_free(ctx.store);
    ts_db_pool_free(ctx.db);
    ts_info("stopped", NULL);
    return 0;
}
