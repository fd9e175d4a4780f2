/* StoreBatchRequest (ingest_batch.h). */
#include "ingest_batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/parallel.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "io/bus.h"

/* Items written at once: each mostly waits for its fsyncs and its group
 * commit, so a whole chunk of a job (64 copies) in flight lets the committers
 * index it in one transaction (they take up to 64 statements). */
#define BATCH_PARALLEL 64

/* ... but never more than this many bytes of files being parsed at once (one
 * item always goes): a chunk of large images would otherwise hold 64 parsed
 * datasets in memory. */
#define BATCH_BYTES (64L << 20)

bool ingest_batch_is(const uint8_t *req, size_t len)
{
    return len >= 2 && req[0] == 0xA2 && req[1] == 0x06;
}

typedef struct item {
    const Tessera__StoreRequest *req;
    ingest_result res;
    char error[sizeof(((ts_err *)0)->msg)];
    Tessera__StoreStatus status;
} item;

typedef struct batch {
    ingest_ctx *ctx;
    long max_size;
    item *items;
    size_t n;
    atomic_size_t next;
    pthread_mutex_t mu;
    pthread_cond_t freed;
    long bytes; /* being written (BATCH_BYTES) */
} batch;

/* Waits until size more bytes fit in BATCH_BYTES (or nothing else is being
 * written), then counts them. */
static void bytes_take(batch *b, long size)
{
    pthread_mutex_lock(&b->mu);
    while (b->bytes > 0 && b->bytes + size > BATCH_BYTES)
        pthread_cond_wait(&b->freed, &b->mu);
    b->bytes += size;
    pthread_mutex_unlock(&b->mu);
}

static void bytes_give(batch *b, long size)
{
    pthread_mutex_lock(&b->mu);
    b->bytes -= size;
    pthread_cond_broadcast(&b->freed);
    pthread_mutex_unlock(&b->mu);
}

/* One item, as a StoreRequest with temp_file (or dicom) is served alone. */
static void store_item(batch *b, item *it)
{
    const Tessera__StoreRequest *req = it->req;
    char path[4096];
    ts_err err;
    ts_err_clear(&err);
    it->res.status = INGEST_FAILED;
    long size = (long)req->dicom.len;
    if (*req->temp_file) {
        struct stat sb;
        if (ts_store_temp_path_of(b->ctx->store, req->temp_file, path, sizeof(path), &err)) {
            it->status = TESSERA__STORE_STATUS__STORE_INTERNAL_ERROR;
            snprintf(it->error, sizeof(it->error), "%s", err.msg);
            return;
        }
        if (stat(path, &sb) != 0) {
            it->status = TESSERA__STORE_STATUS__STORE_STORAGE_ERROR;
            snprintf(it->error, sizeof(it->error),
                     "the file %.200s is not in this storage area: %s", req->temp_file,
                     strerror(errno));
            return;
        }
        if ((long)sb.st_size > b->max_size) {
            unlink(path);
            it->status = TESSERA__STORE_STATUS__STORE_TOO_LARGE;
            snprintf(it->error, sizeof(it->error),
                     "instance of %lld bytes is larger than %ld bytes", (long long)sb.st_size,
                     b->max_size);
            return;
        }
        size = (long)sb.st_size;
    } else if ((long)req->dicom.len > b->max_size) {
        it->status = TESSERA__STORE_STATUS__STORE_TOO_LARGE;
        snprintf(it->error, sizeof(it->error), "instance of %zu bytes is larger than %ld bytes",
                 req->dicom.len, b->max_size);
        return;
    }
    ingest_origin origin = {.origin = *req->origin ? req->origin : "RestApi",
                            .remote_aet = req->remote_aet,
                            .remote_ip = req->remote_ip,
                            .called_aet = req->called_aet,
                            .http_username = req->http_username};
    bytes_take(b, size);
    if (*req->temp_file)
        ingest_file(b->ctx, path, &origin, &it->res, &err);
    else /* in memory: written once, in its place (as main.c's single requests) */
        ingest_data(b->ctx, req->dicom.data, req->dicom.len, &origin, &it->res, &err);
    bytes_give(b, size);
    it->status = ingest_bus_status(it->res.status);
    if (it->res.status != INGEST_STORED && it->res.status != INGEST_ALREADY_STORED &&
        it->res.status != INGEST_FILTERED_OUT) {
        snprintf(it->error, sizeof(it->error), "%s", err.msg);
        ts_warn("bus store failed", "status=%d error=\"%s\"", (int)it->status, err.msg);
    }
}

static void *batch_main(void *arg)
{
    batch *b = arg;
    for (;;) {
        size_t k = atomic_fetch_add(&b->next, 1);
        if (k >= b->n)
            return NULL;
        store_item(b, &b->items[k]);
    }
}

int ingest_batch_request(ingest_ctx *ctx, long max_instance_size, const uint8_t *req_buf,
                         size_t len, uint8_t **reply, size_t *reply_len)
{
    Tessera__StoreBatchReply rep = TESSERA__STORE_BATCH_REPLY__INIT;
    Tessera__StoreBatchRequest *req = tessera__store_batch_request__unpack(NULL, len, req_buf);
    if (!req) {
        /* no item to answer for: an empty reply, which the caller reads as a
         * failure of every item it sent */
        ts_warn("undecodable store batch", "bytes=%zu", len);
        *reply = ts_bus_pack(&rep.base, reply_len);
        return 0;
    }
    size_t n = req->n_items;
    item *items = xcalloc(n ? n : 1, sizeof(*items));
    for (size_t k = 0; k < n; k++)
        items[k].req = req->items[k];
    batch b = {.ctx = ctx, .max_size = max_instance_size, .items = items, .n = n};
    atomic_init(&b.next, 0);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.freed, NULL);
    ts_parallel_run(batch_main, &b, n < BATCH_PARALLEL ? n : BATCH_PARALLEL);
    pthread_cond_destroy(&b.freed);
    pthread_mutex_destroy(&b.mu);

    Tessera__StoreReply *replies = xcalloc(n ? n : 1, sizeof(*replies));
    Tessera__StoreReply **ptrs = xcalloc(n ? n : 1, sizeof(*ptrs));
    for (size_t k = 0; k < n; k++) {
        Tessera__StoreReply *r = &replies[k];
        tessera__store_reply__init(r);
        r->status = items[k].status;
        r->error = items[k].error;
        if (r->status == TESSERA__STORE_STATUS__STORE_STORED ||
            r->status == TESSERA__STORE_STATUS__STORE_ALREADY_STORED ||
            r->status == TESSERA__STORE_STATUS__STORE_FILTERED_OUT) {
            ts_ids *ids = &items[k].res.ids;
            r->patient_id = ids->patient;
            r->study_id = ids->study;
            r->series_id = ids->series;
            r->instance_id = ids->instance;
        }
        ptrs[k] = r;
    }
    rep.n_replies = n;
    rep.replies = ptrs;
    *reply = ts_bus_pack(&rep.base, reply_len);
    free(ptrs);
    free(replies);
    free(items);
    tessera__store_batch_request__free_unpacked(req, NULL);
    return 0;
}
