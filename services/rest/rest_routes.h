/* Auto-routing rules and their deliveries (issue 23), in PostgreSQL
 * (0017_routes.sql); the router itself runs in the jobs service
 * (services/jobs/jobs_router.c).
 *
 * /tessera/routes                    GET list, POST create
 * /tessera/routes/{id}               GET, PUT (If-Match), DELETE (If-Match)
 * /tessera/routes/{id}/test          POST a resource id: would the rule fire for it?
 * /tessera/route-deliveries          GET (?state=dead|pending|running)
 * /tessera/route-deliveries/{id}/resubmit   POST: a dead delivery tried again
 *
 * A rule: {"Name": "...", "Enabled": true, "Trigger": "StableStudy",
 *          "Conditions": {"Modality": "CT", "StudyDescription": ["HEAD*", "BRAIN?"],
 *                         "CallingAet": "SCANNER*", "Origin": "DicomProtocol"},
 *          "Actions": [{"Type": "StoreToModality", "Modality": "pacs"},
 *                      {"Type": "StoreToPeer", "Peer": "backup"}, {"Type": "Delete"}]}
 * Every malformed field is a 400 that names it. */
#ifndef REST_ROUTES_H
#define REST_ROUTES_H

#include "rest_http.h"

void rest_routes_list(rest_request *req);
void rest_routes_create(rest_request *req);
void rest_routes_get(rest_request *req);
void rest_routes_update(rest_request *req);
void rest_routes_delete(rest_request *req);
void rest_routes_test(rest_request *req);
void rest_route_deliveries_list(rest_request *req);
void rest_route_deliveries_resubmit(rest_request *req);

#endif
