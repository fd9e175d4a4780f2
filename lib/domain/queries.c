/* /queries in Redis (see queries.h). Keys:
 *   tessera:query:<id>   string: the query's JSON, with a TTL
 *   tessera:queries      zset id -> creation time (ms)
 * The set may name queries whose string has expired: listing drops them. */
#include "domain/queries.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "base/ids.h"
#include "io/redis.h"

#define KEY_PREFIX "tessera:query:"
#define KEY_ALL "tessera:queries"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* KEYS: query, all. ARGV: id, json, ttl_ms, now, history */
/* clang-format off */
static const char add_script[] =
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[3]))\n"
    "local n = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])\n"
    "if n > 0 then\n"
    "  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - 1)) do\n"
    "    redis.call('DEL', '" KEY_PREFIX "' .. id)\n"
    "  end\n"
    "  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - 1)\n"
    "end\n"
    "return 1\n";
/* clang-format on */

int ts_queries_add(ts_redis *q, const json_t *query, int ttl_s, int history,
                   char id[TS_QUERY_ID_LEN + 1], ts_err *err)
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
    char key[96], ttl[32], now[32], hist[16];
    snprintf(key, sizeof(key), KEY_PREFIX "%s", id);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_s * 1000);
    snprintf(now, sizeof(now), "%lld", now_ms());
    snprintf(hist, sizeof(hist), "%d", history);
    char *text = json_dumps(query, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        abort();
    const char *argv[] = {"EVAL", add_script, "2", key, KEY_ALL, id, text, ttl, now, hist};
    redisReply *r = NULL;
    int rc = ts_redis_run(q, 10, argv, 0, &r, err);
    free(text);
    if (rc)
        return ts_err_prefix(err, "store query");
    freeReplyObject(r);
    return 0;
}

int ts_queries_get(ts_redis *q, const char *id, json_t **out, ts_err *err)
{
    if (!ts_id_is_lower_uuid(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown query: %s", id);
    char key[96];
    snprintf(key, sizeof(key), KEY_PREFIX "%s", id);
    const char *argv[] = {"GET", key};
    redisReply *r = NULL;
    int rc = ts_redis_run(q, 2, argv, 0, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return ts_err_set(err, TS_ENOTFOUND, "unknown query: %s", id);
    }
    json_error_t jerr;
    json_t *o = json_loadb(r->str, r->len, 0, &jerr);
    freeReplyObject(r);
    if (!json_is_object(o)) {
        json_decref(o);
        return ts_err_set(err, TS_EIO, "query %s: unreadable JSON in redis", id);
    }
    *out = o;
    return 0;
}

/* KEYS: all. Returns the ids whose string still exists; drops the others. */
/* clang-format off */
static const char list_script[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  if redis.call('EXISTS', '" KEY_PREFIX "' .. id) == 1 then\n"
    "    out[#out + 1] = id\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    "return out\n";
/* clang-format on */

int ts_queries_list(ts_redis *q, json_t **out, ts_err *err)
{
    const char *argv[] = {"EVAL", list_script, "1", KEY_ALL};
    redisReply *r = NULL;
    int rc = ts_redis_run(q, 4, argv, 0, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return ts_err_set(err, TS_EIO, "redis: unexpected reply to the list of queries");
    }
    *out = ts_redis_sorted_strings(r);
    freeReplyObject(r);
    return 0;
}

int ts_queries_delete(ts_redis *q, const char *id, ts_err *err)
{
    if (!ts_id_is_lower_uuid(id))
        return 0;
    char key[96];
    snprintf(key, sizeof(key), KEY_PREFIX "%s", id);
    const char *argv[] = {"DEL", key};
    redisReply *r = NULL;
    int rc = ts_redis_run(q, 2, argv, 0, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    const char *zrem[] = {"ZREM", KEY_ALL, id};
    rc = ts_redis_run(q, 3, zrem, 0, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    return 0;
}
