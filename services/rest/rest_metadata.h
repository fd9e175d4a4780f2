/* Metadata routes with revisions (If-Match / ETag), for every level. */
#ifndef REST_METADATA_H
#define REST_METADATA_H

#include "rest_http.h"

void rest_list_metadata(rest_request *req);
void rest_get_metadata(rest_request *req);
void rest_put_metadata(rest_request *req);
void rest_delete_metadata(rest_request *req);

#endif
