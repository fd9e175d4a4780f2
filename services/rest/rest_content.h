/* Routes that read inside the DICOM files: the tags shared by every instance
 * of a resource, the value at a tag path of one instance, its frames. */
#ifndef REST_CONTENT_H
#define REST_CONTENT_H

#include "rest_http.h"

/* GET /{patients,studies,series}/{id}/shared-tags [?simplify|?short] */
void rest_shared_tags(rest_request *req);
/* GET /{level}/{id}/module, /studies/{id}/module-patient [?simplify|?short] */
void rest_module(rest_request *req);
/* GET /{patients,studies,series}/{id}/instances-tags [?simplify|?short] */
void rest_instances_tags(rest_request *req);
/* GET /instances/{id}/content[/tag/item/tag...] */
void rest_instance_content(rest_request *req);
/* GET /instances/{id}/frames */
void rest_instance_frames(rest_request *req);
/* GET /instances/{id}/frames/{n}/raw */
void rest_instance_frame_raw(rest_request *req);

#endif
