/* Deletions: DELETE /{level}/{id}, POST /tools/bulk-delete, and the deletion
 * queue's status. The index changes and the queueing of the files commit in
 * one transaction (db/functions/delete.sql); the deleter service removes the
 * files later. */
#ifndef REST_DELETE_H
#define REST_DELETE_H

#include "rest_http.h"

void rest_delete_resource(rest_request *req);
void rest_bulk_delete(rest_request *req);
/* GET /tessera/deletion-queue: {"Length", "OldestAgeSeconds", "Failing", "RemovalRate"} */
void rest_deletion_queue_status(rest_request *req);

/* Wakes a deleter after a transaction that queued files (best effort). */
void rest_nudge_deleters(rest_ctx *ctx);

#endif
