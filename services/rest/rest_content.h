/* Routes that read inside the DICOM files: the tags shared by every instance
 * of a resource, the value at a tag path of one instance, its frames. */
#ifndef REST_CONTENT_H
#define REST_CONTENT_H

#include "dicom/dicom.h"
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

/* Shared with the image routes (rest_image.c). */
/* The file of the instance of the request; answers the request itself (404)
 * and returns false on failure. */
bool rest_instance_path(rest_request *req, char *path, size_t size);
/* The files of every instance under the resource of the request (level 0..3,
 * id in seg[1]), in the index's order; *n of them. NULL when the request has
 * been answered (unknown resource, database failure). The caller frees it. */
char (*rest_resource_files(rest_request *req, int level, size_t *n))[4096];
/* A frame number as Orthanc reads it (boost::lexical_cast<unsigned int>): an
 * optional sign, then digits; "-1" wraps round. False if it is not one. */
bool rest_parse_frame(const char *s, unsigned *out);

/* The raw bytes of frame seg[3] of instance seg[1] (/instances/{id}/frames/{n}/...):
 * a reader and its media type, or false when the request has been answered
 * (404 unknown, Orthanc's errors for a frame out of range, a syntax without
 * frames, a bad file). The caller frees the reader. */
bool rest_open_frame_raw(rest_request *req, ts_dicom_reader **r, const char **mime);

#endif
