/* Batch store requests on ingest's store socket (StoreBatchRequest in
 * proto/tessera.proto): several temporary files in one request, each through
 * ingest_file (the one write path), several at a time so that their fsyncs
 * overlap and the committers index them in shared transactions. */
#ifndef INGEST_BATCH_H
#define INGEST_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest_write.h"
#include "tessera.pb-c.h"

/* Whether a message on the store socket is a StoreBatchRequest (its first
 * field is number 100, which no StoreRequest has). */
bool ingest_batch_is(const uint8_t *req, size_t len);

/* Serves one StoreBatchRequest: *reply is a packed StoreBatchReply (malloc'd),
 * one StoreReply per item in order. Items larger than max_instance_size are
 * refused like single requests. Always returns 0 (errors are in the reply). */
int ingest_batch_request(ingest_ctx *ctx, long max_instance_size, const uint8_t *req, size_t len,
                         uint8_t **reply, size_t *reply_len);

/* The bus status of a write path outcome (services/ingest/main.c). */
Tessera__StoreStatus ingest_bus_status(ingest_status s);

#endif
