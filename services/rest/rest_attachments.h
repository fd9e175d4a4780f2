/* Attachment routes with revisions (If-Match / ETag), for every level. */
#ifndef REST_ATTACHMENTS_H
#define REST_ATTACHMENTS_H

#include "rest_http.h"

void rest_list_attachments(rest_request *req);
void rest_attachment_operations(rest_request *req);
void rest_attachment_get(rest_request *req);
void rest_attachment_put(rest_request *req);
void rest_attachment_delete(rest_request *req);
/* POST .../attachments/{name}/verify-md5, /compress, /uncompress */
void rest_attachment_post(rest_request *req);

#endif
