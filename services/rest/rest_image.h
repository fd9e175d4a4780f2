/* Orthanc 1.10.1's image routes: decoded frames as PNG/JPEG/PAM (preview,
 * rendered, image-uint8, image-uint16, image-int16), Matlab text and numpy
 * arrays, and the gzipped raw frame; through lib/dicom/image.h, one frame
 * decoded at a time. */
#ifndef REST_IMAGE_H
#define REST_IMAGE_H

#include "rest_http.h"

/* GET /instances/{id}/{preview,rendered,image-uint8,image-uint16,image-int16,matlab}
 * and /instances/{id}/frames/{n}/... of the same: the last segment says which. */
void rest_image(rest_request *req);
/* GET /instances/{id}/numpy, /instances/{id}/frames/{n}/numpy, /series/{id}/numpy
 * [?rescale=true|false] [?compress=true|false: a .npz, deflated while it is sent] */
void rest_image_numpy(rest_request *req);
/* GET /instances/{id}/frames/{n}/raw.gz */
void rest_image_raw_gz(rest_request *req);

/* Shared with DICOMweb's rendered resources: the Accept header's choice between
 * image/png, image/jpeg (and image/x-portable-arbitrarymap when pam) as
 * Orthanc's HttpContentNegociation makes it: NULL when none fits. No header,
 * or a wildcard: png_first decides what comes first. */
const char *rest_image_negotiate(rest_request *req, bool pam, bool png_first);
/* Encodes p as mime and answers 200 with it; answers an error and returns
 * false when it cannot be encoded so (16-bit JPEG). */
struct ts_image_pixels;
bool rest_image_reply(rest_request *req, const struct ts_image_pixels *p, const char *mime,
                      int quality);

/* A turn to decode, render and encode (at most TESSERA_RENDER_THREADS at once,
 * in arrival order; rest_image.c says why): taken around the CPU part of every
 * image answer, Orthanc's routes and DICOMweb's rendered resources alike. */
void rest_render_turn_enter(void);
void rest_render_turn_leave(void);

#endif
