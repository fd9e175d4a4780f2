/* Routes over the resources of the index: lists, resources, navigation,
 * instance contents and uploads. */
#ifndef REST_RESOURCES_H
#define REST_RESOURCES_H

#include "rest_http.h"

void rest_list_resources(rest_request *req);
void rest_get_resource(rest_request *req);
void rest_navigate(rest_request *req);
void rest_instance_file(rest_request *req);
void rest_instance_tags(rest_request *req);
void rest_upload_instance(rest_request *req);
void rest_tools_lookup(rest_request *req);
void rest_resource_statistics(rest_request *req);
/* GET/PUT /patients/{id}/protected */
void rest_patient_protected(rest_request *req);

/* Stores a complete file of the storage area's tmp/ through ingest (the one
 * write path, as POST /instances) without answering the request: returns the
 * HTTP status POST /instances would give and sets *answer (Orthanc's
 * per-instance object, "Status" "Success"/"AlreadyStored"/"Failure"), which
 * the caller decrefs. Ingest takes the file over; unlink what is left. */
int rest_store_temp_file(rest_request *req, const char *temp_path, json_t **answer);

#endif
