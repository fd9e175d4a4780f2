/* One Redis connection (see redis.h). */
#include "io/redis.h"
#include "base/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct ts_redis {
    char *host; /* NULL for a unix socket */
    char *path;
    int port;
    int timeout_ms;
    redisContext *c;
};

static struct timeval tv_of(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static void drop_conn(ts_redis *r)
{
    if (r->c)
        redisFree(r->c);
    r->c = NULL;
}

static int ensure_conn(ts_redis *r, ts_err *err)
{
    if (r->c && !r->c->err)
        return 0;
    drop_conn(r);
    struct timeval tv = tv_of(r->timeout_ms);
    redisContext *c = r->host ? redisConnectWithTimeout(r->host, r->port, tv)
                              : redisConnectUnixWithTimeout(r->path, tv);
    if (!c)
        abort();
    if (c->err) {
        int rc = ts_err_set(err, TS_EIO, "redis %s:%d%s: %s", r->host ? r->host : "unix",
                            r->host ? r->port : 0, r->host ? "" : r->path, c->errstr);
        redisFree(c);
        return rc;
    }
    redisSetTimeout(c, tv);
    r->c = c;
    return 0;
}

int ts_redis_run(ts_redis *r, int argc, const char **argv, int extra_ms, redisReply **out,
                 ts_err *err)
{
    int rc = ensure_conn(r, err);
    if (rc)
        return rc;
    if (extra_ms > 0)
        redisSetTimeout(r->c, tv_of(r->timeout_ms + extra_ms));
    redisReply *reply = redisCommandArgv(r->c, argc, argv, NULL);
    if (!reply) {
        rc = ts_err_set(err, TS_EIO, "redis %s: %s", argv[0], r->c->errstr);
        drop_conn(r);
        return rc;
    }
    if (extra_ms > 0)
        redisSetTimeout(r->c, tv_of(r->timeout_ms));
    if (reply->type == REDIS_REPLY_ERROR) {
        rc = ts_err_set(err, TS_EIO, "redis %s: %s", argv[0], reply->str);
        freeReplyObject(reply);
        return rc;
    }
    *out = reply;
    return 0;
}

int ts_redis_open(const char *url, int timeout_ms, ts_redis **out, ts_err *err)
{
    ts_redis *r = xcalloc(1, sizeof(*r));
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    int rc;
    if (strncmp(url, "unix://", 7) == 0 && url[7]) {
        r->path = xstrdup(url + 7);
    } else if (strncmp(url, "redis://", 8) == 0 && url[8]) {
        const char *hp = url + 8;
        const char *at = strrchr(hp, '@'); /* user:password@ is not supported, skip it */
        if (at)
            hp = at + 1;
        const char *colon = strrchr(hp, ':');
        size_t n = colon ? (size_t)(colon - hp) : strcspn(hp, "/");
        r->host = strndup(hp, n);
        if (!r->host)
            abort();
        r->port = colon ? atoi(colon + 1) : 6379;
        if (!r->host[0] || r->port <= 0 || r->port > 65535) {
            rc = ts_err_set(err, TS_EINVAL, "TESSERA_REDIS_URL: bad host or port in '%s'", url);
            goto fail;
        }
    } else {
        rc = ts_err_set(err, TS_EINVAL,
                        "TESSERA_REDIS_URL: '%s' is neither redis://host:port nor unix:///path",
                        url);
        goto fail;
    }
    rc = ensure_conn(r, err);
    if (rc)
        goto fail;
    *out = r;
    return 0;
fail:
    ts_redis_free(r);
    return rc;
}

void ts_redis_free(ts_redis *r)
{
    if (!r)
        return;
    drop_conn(r);
    free(r->host);
    free(r->path);
    free(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *ts_redis_sorted_strings(const redisReply *r)
{
    const char **ids = xcalloc(r->elements + 1, sizeof(*ids));
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            ids[n++] = r->element[i]->str;
    qsort(ids, n, sizeof(*ids), cmp_str);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(ids[i]));
    free(ids);
    return a;
}
