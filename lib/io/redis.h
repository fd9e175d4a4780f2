/* One connection to Redis, shared by the modules that keep state there (the
 * job registry, jobs.h; the C-FIND answers of /queries, queries.h). The URL is
 * TESSERA_REDIS_URL's form: "redis://host:port" or "unix:///path". A lost
 * connection is dropped and opened again by the next command, so a Redis
 * restart costs the commands that were in flight, not the process.
 *
 * A ts_redis is not shared between threads. */
#ifndef TS_REDIS_H
#define TS_REDIS_H

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_redis ts_redis;

/* Parses url and connects; timeout_ms (<= 0: 5 s) bounds connecting and every
 * command. TS_EINVAL for a bad url, TS_EIO when Redis does not answer. */
int ts_redis_open(const char *url, int timeout_ms, ts_redis **out, ts_err *err);
void ts_redis_free(ts_redis *r);

/* Runs one command; *out is a reply that is not an error (the caller frees it
 * with freeReplyObject). extra_ms lengthens the timeout of this command only
 * (for a blocking command such as BLPOP). */
int ts_redis_run(ts_redis *r, int argc, const char **argv, int extra_ms, redisReply **out,
                 ts_err *err);

/* The string elements of an array reply as a JSON array, sorted (Orthanc
 * lists its jobs and queries in the order of their ids). */
json_t *ts_redis_sorted_strings(const redisReply *r);

#ifdef __cplusplus
}
#endif

#endif
