/* Labels, as Orthanc 1.12 has them (Orthanc 1.10.1 has none):
 * GET /{level}/{id}/labels, GET/PUT/DELETE /{level}/{id}/labels/{label} and
 * GET /tools/labels. /tools/find's "Labels" and "LabelsConstraint" are in
 * rest_find.c, the matching in the query service (query_match.c). */
#ifndef REST_LABELS_H
#define REST_LABELS_H

#include <stdbool.h>

#include "rest_http.h"

/* Orthanc 1.12's rule (ServerToolbox::IsValidLabel): 1 to 64 characters, each
 * an ASCII letter, a digit, '_' or '-'. */
bool rest_label_is_valid(const char *label);

void rest_list_labels(rest_request *req);
void rest_get_label(rest_request *req);
void rest_put_label(rest_request *req);
void rest_delete_label(rest_request *req);
void rest_tools_labels(rest_request *req);

#endif
