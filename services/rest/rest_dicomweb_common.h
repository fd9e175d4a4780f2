/* What the DICOMweb modules (rest_dicomweb_{qido,wado,stow}.c) share: UIDs in
 * paths, the public root, DICOM JSON answers and errors, Accept headers, CORS
 * and OPTIONS, the instances under a study, series or instance with their files. */
#ifndef REST_DICOMWEB_COMMON_H
#define REST_DICOMWEB_COMMON_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "rest_http.h"

#define DW_JSON "application/dicom+json"

/* A UID as PS3.5 9.1 allows them: 1 to 64 characters of digits and '.'. */
bool dw_uid_valid(const char *s);

/* "<scheme>://<host>/dicom-web": the root that RetrieveURLs and BulkDataURIs
 * start with. The scheme is X-Forwarded-Proto's first value when it is https,
 * else http; the host X-Forwarded-Host's first value, else Host, else
 * 127.0.0.1 (values with characters an authority cannot hold are ignored). */
void dw_root(rest_request *req, char *out, size_t size);

/* CORS: adds Access-Control-Allow-Origin/-Methods/-Headers/-Expose-Headers
 * to the answer when TESSERA_HTTP_CORS_ORIGINS allows the request's Origin
 * ("*": any origin, also requests without one). Returns whether it did. */
bool dw_cors(rest_request *req);

/* An error answer: Orthanc's error body with the message in "Details". */
void dw_error(rest_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A DICOM JSON answer (steals body). */
void dw_reply_json(rest_request *req, int status, json_t *body);

/* The media ranges of the Accept header, one at a time: type/subtype in
 * lower case, the value of the parameters "type" and "transfer-syntax"
 * (quotes removed, "" when absent) and the quality q (1 when absent). Ranges
 * with q=0 are skipped. Returns false at the end. *pos starts at 0. */
typedef struct dw_media {
    char range[96];
    char type[96];
    char transfer_syntax[80];
    double q;
} dw_media;
bool dw_accept_next(const char *accept, size_t *pos, dw_media *out);

/* Does Accept allow a JSON answer (application/dicom+json, application/json,
 * application/ wildcard, any)? Answers 406 and returns false when not. */
bool dw_accept_json(rest_request *req);

/* Data sets (QIDO-RS answers, metadata): does Accept allow JSON (as
 * dw_accept_json) or XML (multipart/related; type="application/dicom+xml", or
 * application/dicom+xml)? *xml says which: the range of the highest quality
 * that allows one chooses, the first of them on a tie (RFC 9110 12.5.1).
 * Answers 406 and returns false when neither. */
bool dw_accept_dataset(rest_request *req, bool *xml);

/* One data set (the STOW-RS response, PS3.18 10.5.3): JSON as
 * dw_accept_dataset, or XML as one application/dicom+xml document (not
 * multipart). Answers 406 and returns false when neither. */
bool dw_accept_response(rest_request *req, bool *xml);

/* The instances under the UIDs of the path (seg[2] study, seg[4] series,
 * seg[6] instance, as far as the path goes) in series then instance order:
 * columns as DW_COL_*. Answers (400 bad UID, 404 none) and returns NULL when
 * there is nothing to give; the caller PQclear()s. */
enum {
    DW_COL_UUID,
    DW_COL_SIZE,
    DW_COL_STUDY,
    DW_COL_SERIES,
    DW_COL_SOP,
    DW_COL_SOP_CLASS,
    DW_COL_SYNTAX,
    DW_COL_DICOMWEB, /* only with_json */
};
PGresult *dw_instances(rest_request *req, bool with_json);

/* OPTIONS under /dicom-web/ and /wado: 204 with Allow, and a CORS preflight's
 * answer when TESSERA_HTTP_CORS_ORIGINS allows the Origin */
void rest_dw_preflight(rest_request *req);

/* rest_ctx's unrouted hook: the CORS headers of an answer under /dicom-web/ or
 * /wado that no handler gave (401 and 413 before the body, 404, 405, ...) */
void rest_dw_unrouted(rest_request *req);

#endif
