/* Query/retrieve as an SCU, with Orthanc 1.10.1's routes and answers:
 * POST /modalities/{id}/query runs a C-FIND from this process and keeps the
 * answers in Redis (lib/domain/queries.h), so that every REST process serves
 * /queries/...; retrieving answers (POST /queries/{id}/retrieve,
 * /queries/{id}/answers/{n}/retrieve) and POST /modalities/{id}/move submit
 * DicomMoveScu jobs (services/jobs/jobs_move.c). */
#ifndef REST_QUERIES_H
#define REST_QUERIES_H

#include "rest_http.h"

void rest_modality_query(rest_request *req);
void rest_modality_move(rest_request *req);
void rest_queries_list(rest_request *req);
void rest_query_get(rest_request *req);
void rest_query_delete(rest_request *req);
void rest_query_answers(rest_request *req);
void rest_query_answer(rest_request *req);
void rest_query_answer_content(rest_request *req);
/* POST /queries/{id}/answers/{n}/query-studies|query-series|query-instances */
void rest_query_children(rest_request *req);
/* GET /queries/{id}/level, /modality, /query: the last segment says which */
void rest_query_field(rest_request *req);
/* POST /queries/{id}/retrieve and /queries/{id}/answers/{n}/retrieve */
void rest_query_retrieve(rest_request *req);

#endif
