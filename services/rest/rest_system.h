/* What the server says about itself and how it runs: /system, /statistics,
 * /changes, the Prometheus metrics, and Orthanc's /tools settings as Tessera
 * applies them. */
#ifndef REST_SYSTEM_H
#define REST_SYSTEM_H

#include "rest_http.h"

void rest_system(rest_request *req);
void rest_statistics(rest_request *req);
void rest_changes(rest_request *req);
void rest_delete_changes(rest_request *req);
void rest_metrics_prometheus(rest_request *req);
/* Orthanc's /tools settings, read as Tessera runs:
 * GET/PUT /tools/default-encoding, /tools/accepted-transfer-syntaxes,
 * /tools/unknown-sop-class-accepted, /tools/log-level */
void rest_default_encoding(rest_request *req);
void rest_accepted_transfer_syntaxes(rest_request *req);
void rest_unknown_sop_class_accepted(rest_request *req);
void rest_log_level(rest_request *req);

#endif
