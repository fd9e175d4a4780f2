/* The answers of C-FIND queries run for POST /modalities/{id}/query, kept in
 * Redis so that every REST process serves /queries/{id}. It owns the keys under
 * "tessera:query": one string per query (its JSON: level, modality, query,
 * answers, how to reach the modality) with a TTL, and a sorted set of the ids
 * by creation time, trimmed to a configured count (Orthanc keeps the last
 * QueryRetrieveSize queries in memory; here they also expire).
 *
 * Each call takes a Redis connection (redis.h): one per thread. */
#ifndef TS_QUERIES_H
#define TS_QUERIES_H

#include <jansson.h>
#include <stdbool.h>

#include "base/err.h"
#include "io/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_QUERY_ID_LEN 36 /* a UUID, as Orthanc's query ids */

/* Stores a query (not stolen) for ttl_s seconds; drops the oldest beyond
 * `history`. id receives its new id. */
int ts_queries_add(ts_redis *q, const json_t *query, int ttl_s, int history,
                   char id[TS_QUERY_ID_LEN + 1], ts_err *err);

/* The query's JSON; TS_ENOTFOUND if unknown or expired. The caller decrefs. */
int ts_queries_get(ts_redis *q, const char *id, json_t **out, ts_err *err);

/* The ids of the queries still kept, sorted (GET /queries). */
int ts_queries_list(ts_redis *q, json_t **out, ts_err *err);

/* Forgets a query (nothing happens for an unknown one, as in Orthanc). */
int ts_queries_delete(ts_redis *q, const char *id, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
