/* /queries in Redis (see queries.h). Keys:
 *   tessera:query:<id>   string: the query's JSON, with a TTL
 *   tessera:queries      zset id -> creation time (ms)
 * The set may name queries whose string has expired: listing drops them. */
#include "queries.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#define KEY_PREFIX "tessera:query:"
#define KEY_ALL "tessera:queries"

struct ts_queries {
    redisContext *c;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ts_queries_connect(const char *url, int timeout_ms, ts_queries **out, ts_err *err)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = NULL;
    if (strncmp(url, "unix://", 7) == 0 && url[7]) {
        c = redisConnectUnixWithTimeout(url + 7, tv);
    } else if (strncmp(url, "redis://", 8) == 0 && url[8]) {
        const char *hp = url + 8;
        const char *at = strrchr(hp, '@');
        if (at)
            hp = at + 1;
        const char *colon = strrchr(hp, ':');
        size_t n = colon ? (size_t)(colon - hp) : strcspn(hp, "/");
        char host[256];
        snprintf(host, sizeof(host), "%.*s", (int)(n < sizeof(host) ? n : sizeof(host) - 1), hp);
        int port = colon ? atoi(colon + 1) : 6379;
        if (!host[0] || port <= 0 || port > 65535)
            return ts_err_set(err, TS_EINVAL, "TESSERA_REDIS_URL: bad host or port in '%s'", url);
        c = redisConnectWithTimeout(host, port, tv);
    } else {
        return ts_err_set(err, TS_EINVAL,
                          "TESSERA_REDIS_URL: '%s' is neither redis://host:port nor unix:///path",
                          url);
    }
    if (!c)
        abort();
    if (c->err) {
        int rc = ts_err_set(err, TS_EIO, "redis %s: %s", url, c->errstr);
        redisFree(c);
        return rc;
    }
    redisSetTimeout(c, tv);
    ts_queries *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->c = c;
    *out = q;
    return 0;
}

void ts_queries_free(ts_queries *q)
{
    if (!q)
        return;
    if (q->c)
        redisFree(q->c);
    free(q);
}

static int run(ts_queries *q, int argc, const char **argv, redisReply **out, ts_err *err)
{
    redisReply *r = redisCommandArgv(q->c, argc, argv, NULL);
    if (!r)
        return ts_err_set(err, TS_EIO, "redis %s: %s", argv[0], q->c->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
        int rc = ts_err_set(err, TS_EIO, "redis %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* A query id is a lower-case UUID: anything else is unknown without asking. */
static bool valid_id(const char *id)
{
    if (strlen(id) != TS_QUERY_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
            return false;
    return true;
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

int ts_queries_add(ts_queries *q, const json_t *query, int ttl_s, int history,
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
    int rc = run(q, 10, argv, &r, err);
    free(text);
    if (rc)
        return ts_err_prefix(err, "store query");
    freeReplyObject(r);
    return 0;
}

int ts_queries_get(ts_queries *q, const char *id, json_t **out, ts_err *err)
{
    if (!valid_id(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown query: %s", id);
    char key[96];
    snprintf(key, sizeof(key), KEY_PREFIX "%s", id);
    const char *argv[] = {"GET", key};
    redisReply *r = NULL;
    int rc = run(q, 2, argv, &r, err);
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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ts_queries_list(ts_queries *q, json_t **out, ts_err *err)
{
    const char *argv[] = {"EVAL", list_script, "1", KEY_ALL};
    redisReply *r = NULL;
    int rc = run(q, 4, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return ts_err_set(err, TS_EIO, "redis: unexpected reply to the list of queries");
    }
    const char **ids = calloc(r->elements + 1, sizeof(*ids));
    if (!ids)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            ids[n++] = r->element[i]->str;
    /* Orthanc lists its queries in the order of their ids */
    qsort(ids, n, sizeof(*ids), cmp_str);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(ids[i]));
    free(ids);
    freeReplyObject(r);
    *out = a;
    return 0;
}

int ts_queries_delete(ts_queries *q, const char *id, ts_err *err)
{
    if (!valid_id(id))
        return 0;
    char key[96];
    snprintf(key, sizeof(key), KEY_PREFIX "%s", id);
    const char *argv[] = {"DEL", key};
    redisReply *r = NULL;
    int rc = run(q, 2, argv, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    const char *zrem[] = {"ZREM", KEY_ALL, id};
    rc = run(q, 3, zrem, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    return 0;
}
