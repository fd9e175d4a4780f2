#include "query_bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "query_match.h"
#include "tessera.pb-c.h"

/* Every input from the network has a limit. */
#define MAX_KEYS 512
#define MAX_VALUE 4096

static Tessera__FindStatus status_of(int rc)
{
    switch (rc) {
    case TS_EINVAL:
        return TESSERA__FIND_STATUS__FIND_BAD_REQUEST;
    case TS_EDB_BUSY:
    case TS_EDB_INDOUBT:
        return TESSERA__FIND_STATUS__FIND_DB_UNAVAILABLE;
    default:
        return TESSERA__FIND_STATUS__FIND_INTERNAL_ERROR;
    }
}

static int build_keys(const Tessera__FindRequest *req, query_key **out, size_t *n, ts_err *err)
{
    size_t extra = req->expand ? query_tag_count() : 0;
    size_t total = req->n_query + req->n_requested_tags + extra;
    if (req->n_query + req->n_requested_tags > MAX_KEYS)
        return ts_err_set(err, TS_EINVAL, "more than %d keys", MAX_KEYS);
    query_key *keys = calloc(total ? total : 1, sizeof(*keys));
    if (!keys)
        abort();
    size_t k = 0;
    for (size_t i = 0; i < req->n_query; i++) {
        if (strlen(req->query[i]->value) > MAX_VALUE) {
            free(keys);
            return ts_err_set(err, TS_EINVAL, "value of tag %08x longer than %d bytes",
                              req->query[i]->tag, MAX_VALUE);
        }
        keys[k++] = (query_key){req->query[i]->tag, req->query[i]->value};
    }
    for (size_t i = 0; i < req->n_requested_tags; i++)
        keys[k++] = (query_key){req->requested_tags[i], ""};
    for (size_t i = 0; i < extra; i++)
        if (query_tag_at(i)->level <= (ts_level)req->level)
            keys[k++] = (query_key){query_tag_at(i)->tag, ""};
    *out = keys;
    *n = k;
    return 0;
}

int query_bus_handle(void *user, const uint8_t *buf, size_t len, uint8_t **reply, size_t *reply_len)
{
    query_bus_ctx *ctx = user;
    Tessera__FindReply rep = TESSERA__FIND_REPLY__INIT;
    query_key *keys = NULL;
    size_t nkeys = 0;
    query_result res = {0};
    Tessera__FindMatch *matches = NULL, **match_ptrs = NULL;
    Tessera__FindTagValue *tvs = NULL, **tv_ptrs = NULL;
    char error[sizeof(((ts_err *)0)->msg)] = "";
    ts_err err;
    ts_err_clear(&err);
    int rc;

    Tessera__FindRequest *req = tessera__find_request__unpack(NULL, len, buf);
    if (!req) {
        snprintf(error, sizeof(error), "undecodable find request of %zu bytes", len);
        rep.status = TESSERA__FIND_STATUS__FIND_BAD_REQUEST;
        goto reply;
    }
    if ((int)req->level < 0 || req->level > TESSERA__RESOURCE_LEVEL__LEVEL_INSTANCE) {
        rc = ts_err_set(&err, TS_EINVAL, "unknown level %d", (int)req->level);
        goto failed;
    }
    if (req->limit < 0 || req->since < 0) {
        rc = ts_err_set(&err, TS_EINVAL, "negative limit or since");
        goto failed;
    }
    if ((rc = build_keys(req, &keys, &nkeys, &err)))
        goto failed;
    query_spec spec = {.level = (ts_level)req->level,
                       .keys = keys,
                       .nkeys = nkeys,
                       .case_sensitive = req->case_sensitive,
                       .limit = req->limit > 0 && req->limit < ctx->limit ? req->limit : ctx->limit,
                       .since = req->since};
    if ((rc = query_run(ctx->db, &spec, &res, &err)))
        goto failed;

    /* the tags of a match: each known key once, in request order */
    size_t *cols = calloc(nkeys ? nkeys : 1, sizeof(*cols));
    if (!cols)
        abort();
    size_t ncols = 0;
    for (size_t k = 0; k < nkeys; k++) {
        if (res.q.key_col[k] < 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < ncols; j++)
            dup = dup || keys[cols[j]].tag == keys[k].tag;
        if (!dup)
            cols[ncols++] = k;
    }
    size_t nrows = (size_t)res.nrows;
    matches = calloc(nrows ? nrows : 1, sizeof(*matches));
    match_ptrs = calloc(nrows ? nrows : 1, sizeof(*match_ptrs));
    size_t ntv = nrows * ncols;
    tvs = calloc(ntv ? ntv : 1, sizeof(*tvs));
    tv_ptrs = calloc(ntv ? ntv : 1, sizeof(*tv_ptrs));
    if (!matches || !match_ptrs || !tvs || !tv_ptrs)
        abort();
    for (size_t r = 0; r < nrows; r++) {
        tessera__find_match__init(&matches[r]);
        matches[r].public_id = (char *)query_result_id(&res, (int)r);
        matches[r].n_tags = ncols;
        matches[r].tags = tv_ptrs + r * ncols;
        for (size_t c = 0; c < ncols; c++) {
            Tessera__FindTagValue *tv = &tvs[r * ncols + c];
            tessera__find_tag_value__init(tv);
            tv->tag = keys[cols[c]].tag;
            tv->value = (char *)query_result_value(&res, (int)r, cols[c]);
            tv_ptrs[r * ncols + c] = tv;
        }
        match_ptrs[r] = &matches[r];
    }
    free(cols);
    rep.n_matches = nrows;
    rep.matches = match_ptrs;
    rep.truncated = res.truncated;
    rep.status = TESSERA__FIND_STATUS__FIND_OK;
    goto reply;

failed:
    rep.status = status_of(rc);
    snprintf(error, sizeof(error), "%s", err.msg);
    ts_warn("find failed", "status=%d error=\"%s\"", (int)rep.status, err.msg);
reply:
    rep.error = error;
    *reply = ts_bus_pack(&rep.base, reply_len);
    free(tvs);
    free(tv_ptrs);
    free(matches);
    free(match_ptrs);
    query_result_clear(&res);
    free(keys);
    if (req)
        tessera__find_request__free_unpacked(req, NULL);
    return 0;
}
