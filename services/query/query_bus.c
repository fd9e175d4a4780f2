#include "query_bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/bus.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "query_match.h"
#include "tessera.pb-c.h"
#include "base/xalloc.h"

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

/* The bus's case matching in the matcher's terms (an unknown value: exact). */
static query_case case_of(Tessera__CaseMatching cm)
{
    switch (cm) {
    case TESSERA__CASE_MATCHING__CASE_FOLD_PERSON_NAMES:
        return QUERY_CASE_FOLD_PN;
    case TESSERA__CASE_MATCHING__CASE_FOLD_TEXT:
        return QUERY_CASE_FOLD_TEXT;
    case TESSERA__CASE_MATCHING__CASE_EXACT:
    default:
        return QUERY_CASE_EXACT;
    }
}

static int build_keys(const Tessera__FindRequest *req, query_key **out, size_t *n, ts_err *err)
{
    size_t extra = req->expand ? query_tag_count() : 0;
    size_t total = req->n_query + req->n_requested_tags + extra;
    if (req->n_query + req->n_requested_tags > MAX_KEYS)
        return ts_err_set(err, TS_EINVAL, "more than %d keys", MAX_KEYS);
    query_key *keys = xcalloc(total ? total : 1, sizeof(*keys));
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

/* What a reply points to, freed once it is packed (the strings are the
 * query result's). */
typedef struct reply_bufs {
    Tessera__FindMatch *matches, **match_ptrs;
    Tessera__FindTagValue *tvs, **tv_ptrs;
} reply_bufs;

static void reply_bufs_alloc(reply_bufs *b, size_t nmatches, size_t ntags)
{
    b->matches = xcalloc(nmatches, sizeof(*b->matches));
    b->match_ptrs = xcalloc(nmatches, sizeof(*b->match_ptrs));
    b->tvs = xcalloc(ntags, sizeof(*b->tvs));
    b->tv_ptrs = xcalloc(ntags, sizeof(*b->tv_ptrs));
}

static void reply_bufs_clear(reply_bufs *b)
{
    free(b->tvs);
    free(b->tv_ptrs);
    free(b->matches);
    free(b->match_ptrs);
}

/* The retrieve form of a request (ingest's C-MOVE/C-GET): every instance it
 * names, with its SOPInstanceUID and file, in one reply. */
static int retrieve_reply(query_bus_ctx *ctx, const Tessera__FindRequest *req,
                          Tessera__FindReply *rep, query_result *res, reply_bufs *b, ts_err *err)
{
    /* the find form's limits; its query keys come first (requested tags and
     * expand mean nothing to a retrieve and are not passed on) */
    query_key *keys;
    size_t nkeys;
    int rc = build_keys(req, &keys, &nkeys, err);
    if (rc)
        return rc;
    /* items' keys name no instances: only the top-level ones are kept */
    size_t nq = 0;
    for (size_t i = 0; i < req->n_query; i++)
        if (!req->query[i]->sequence)
            keys[nq++] = keys[i];
    rc = query_retrieve_run_visible(ctx->db, (ts_level)req->level, keys, nq,
                                    case_of(req->case_matching), req->restrict_to_labels,
                                    (const char *const *)req->visible_labels, req->n_visible_labels,
                                    res, err);
    free(keys);
    if (rc)
        return rc;
    size_t n = (size_t)res->nrows;
    reply_bufs_alloc(b, n, n);
    for (size_t r = 0; r < n; r++) {
        tessera__find_match__init(&b->matches[r]);
        tessera__find_tag_value__init(&b->tvs[r]);
        b->tvs[r].tag = TS_TAG_SOP_INSTANCE_UID;
        b->tvs[r].value = (char *)query_result_value(res, (int)r, nq);
        b->tv_ptrs[r] = &b->tvs[r];
        b->matches[r].public_id = (char *)query_result_id(res, (int)r);
        b->matches[r].n_tags = 1;
        b->matches[r].tags = &b->tv_ptrs[r];
        b->matches[r].file = (char *)query_result_file(res, (int)r);
        b->match_ptrs[r] = &b->matches[r];
    }
    rep->n_matches = n;
    rep->matches = b->match_ptrs;
    rep->status = TESSERA__FIND_STATUS__FIND_OK;
    ts_info("retrieve listed", "level=%d instances=%zu", (int)req->level, n);
    return 0;
}

int query_bus_handle(void *user, const uint8_t *buf, size_t len, uint8_t **reply, size_t *reply_len)
{
    query_bus_ctx *ctx = user;
    Tessera__FindReply rep = TESSERA__FIND_REPLY__INIT;
    query_key *keys = NULL;
    uint32_t *seqs = NULL;
    size_t nkeys = 0;
    query_result res = {0};
    reply_bufs b = {0};
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
    if (req->retrieve) {
        if ((rc = retrieve_reply(ctx, req, &rep, &res, &b, &err)))
            goto failed;
        goto reply;
    }
    if (req->limit < 0 || req->since < 0) {
        rc = ts_err_set(&err, TS_EINVAL, "negative limit or since");
        goto failed;
    }
    if ((rc = build_keys(req, &keys, &nkeys, &err)))
        goto failed;
    /* the query keys come first in keys: their sequences (item attributes) */
    seqs = xcalloc(nkeys ? nkeys : 1, sizeof(*seqs));
    for (size_t i = 0; i < req->n_query; i++)
        seqs[i] = req->query[i]->sequence;
    query_spec spec = {.level = (ts_level)req->level,
                       .keys = keys,
                       .nkeys = nkeys,
                       .key_sequences = seqs,
                       .case_matching = case_of(req->case_matching),
                       .limit = req->limit > 0 && req->limit < ctx->limit ? req->limit : ctx->limit,
                       .since = req->since,
                       .labels = (const char *const *)req->labels,
                       .nlabels = req->n_labels,
                       .labels_constraint = (query_labels_constraint)req->labels_constraint,
                       .restrict_to_labels = req->restrict_to_labels,
                       .visible = (const char *const *)req->visible_labels,
                       .nvisible = req->n_visible_labels};
    if ((rc = query_run(ctx->db, &spec, &res, &err)))
        goto failed;

    /* the tags of a match: each known key once, in request order */
    size_t *cols = xcalloc(nkeys ? nkeys : 1, sizeof(*cols));
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
    reply_bufs_alloc(&b, nrows, nrows * ncols);
    for (size_t r = 0; r < nrows; r++) {
        tessera__find_match__init(&b.matches[r]);
        b.matches[r].public_id = (char *)query_result_id(&res, (int)r);
        b.matches[r].n_tags = ncols;
        b.matches[r].tags = b.tv_ptrs + r * ncols;
        for (size_t c = 0; c < ncols; c++) {
            Tessera__FindTagValue *tv = &b.tvs[r * ncols + c];
            tessera__find_tag_value__init(tv);
            tv->tag = keys[cols[c]].tag;
            tv->value = (char *)query_result_value(&res, (int)r, cols[c]);
            b.tv_ptrs[r * ncols + c] = tv;
        }
        b.match_ptrs[r] = &b.matches[r];
    }
    free(cols);
    rep.n_matches = nrows;
    rep.matches = b.match_ptrs;
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
    reply_bufs_clear(&b);
    query_result_clear(&res);
    free(keys);
    free(seqs);
    if (req)
        tessera__find_request__free_unpacked(req, NULL);
    return 0;
}
