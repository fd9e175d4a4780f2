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
void rest_modality_store(rest_request *req);

#endif
