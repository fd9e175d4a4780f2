/* DICOM modalities shared by the cluster, stored in PostgreSQL (the
 * `modalities` table): Orthanc's /modalities routes, C-ECHO, and sending
 * resources as a DicomModalityStore job. */
#ifndef REST_MODALITIES_H
#define REST_MODALITIES_H

#include "rest_http.h"

void rest_list_modalities(rest_request *req);
void rest_get_modality(rest_request *req);
void rest_get_modality_configuration(rest_request *req);
void rest_put_modality(rest_request *req);
void rest_delete_modality(rest_request *req);
void rest_modality_echo(rest_request *req);
/* POST /tools/dicom-echo (a modality given in the body) */
void rest_tools_dicom_echo(rest_request *req);
void rest_modality_store(rest_request *req);

/* The configuration of the modality `name` as GET /modalities/{id}/configuration
 * shows it, or NULL after answering (404, as Orthanc, or a failure). */
json_t *rest_modality_find(rest_request *req, const char *name);
/* The calling AE title and timeout of an association with the modality conf,
 * from what the request gave (*timeout 0: none), as Orthanc 1.10.1 picks them:
 * the modality's LocalAet when it has one, even over the request's; its
 * Timeout when the request gave none. *local may then point into conf. */
void rest_modality_store_straight(rest_request *req);
void rest_modality_settings(const json_t *conf, int *timeout, const char **local);

/* The body of POST /modalities/{id}/store and /peers/{id}/store, in
 * Orthanc's forms: one id as text, a JSON string or list of ids, or
 * {"Resources": [...], "Asynchronous", "Synchronous", "Priority",
 * "Permissive", "Timeout", "LocalAet", "Transcode"}. */
typedef struct rest_store_req {
    json_t *body;
    json_t *parents;   /* the ids given, sorted, without duplicates */
    json_t *ordered;   /* the ids given, in order (the log of /exports) */
    json_t *instances; /* after rest_store_expand: the instances' ids */
    long long size;    /* after rest_store_expand: bytes of their files */
    bool asynchronous, permissive;
    int priority, timeout; /* timeout 0: the default */
    const char *local_aet;
    const char *transcode; /* "Transcode": a transfer syntax UID, or NULL */
} rest_store_req;
/* Each answers the request and returns false when it fails (bad body, an
 * unknown resource). */
bool rest_store_parse(rest_request *req, rest_store_req *sr);
bool rest_store_expand(rest_request *req, rest_store_req *sr);
void rest_store_clear(rest_store_req *sr);

#endif
