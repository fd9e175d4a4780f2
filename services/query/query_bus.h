/* query's bus endpoint `find`: a FindRequest in, the matcher (query_match.h)
 * run once, a FindReply out; in its retrieve form, the instances (and files)
 * an ingest's C-MOVE/C-GET names. */
#ifndef QUERY_BUS_H
#define QUERY_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/db.h"

typedef struct query_bus_ctx {
    ts_db_pool *db;
    long limit; /* the most a request may ask for, and its default */
} query_bus_ctx;

/* A ts_bus_handler: user is a query_bus_ctx. Always answers (errors go in the
 * reply's status), except for undecodable input. */
int query_bus_handle(void *user, const uint8_t *req, size_t len, uint8_t **reply,
                     size_t *reply_len);

#endif
