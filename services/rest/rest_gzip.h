/* Answers compressed with gzip when the client says it takes them
 * (Accept-Encoding), for the large and repetitive ones: a series' DICOMweb
 * metadata (megabytes of near-identical JSON per 500 images), and OHIF's
 * bundles, which scripts/fetch-viewer stores compressed beside the originals. */
#ifndef REST_GZIP_H
#define REST_GZIP_H

#include <stdbool.h>
#include <stddef.h>

#include "rest_http.h"

/* Whether Accept-Encoding lists gzip (or "*") without q=0. */
bool rest_accepts_gzip(rest_request *req);

/* rest_reply_owned, the body compressed (zlib level 1: the answer is sent at
 * once, and the level barely changes the size of such JSON) when the client
 * accepts gzip and the body is over 1 KiB; always with Vary: Accept-Encoding. */
void rest_reply_owned_gzip(rest_request *req, int status, void *body, size_t len,
                           const char *content_type);

#endif
