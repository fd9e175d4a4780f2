/* Routes that read the resources of the index: lists, resources, navigation,
 * instance files and tags, lookups, statistics, and protection. */
#ifndef REST_RESOURCES_H
#define REST_RESOURCES_H

#include "rest_http.h"

void rest_list_resources(rest_request *req);
void rest_get_resource(rest_request *req);
void rest_navigate(rest_request *req);
void rest_instance_file(rest_request *req);
void rest_instance_tags(rest_request *req);
void rest_tools_lookup(rest_request *req);
void rest_resource_statistics(rest_request *req);
/* GET/PUT /patients/{id}/protected */
void rest_patient_protected(rest_request *req);

#endif
