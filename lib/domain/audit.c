/* The audit trail's queue and writer (see audit.h). */
#include "domain/audit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "base/xalloc.h"

/* Rows a statement writes at most; also the queue length that wakes the
 * writer before its flush interval has passed. */
#define BATCH_MAX 1000

typedef struct audit_ev {
    struct timespec at;
    char *who, *who_kind, *action, *resources, *source, *request; /* one block, at who */
    int outcome;
} audit_ev;

struct ts_audit {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    audit_ev *q; /* ring of max events */
    size_t head, count, max;
    long dropped, dropped_logged;
    bool stop;
    bool draining; /* stopping: no more lingering */
    bool has_thread;
    int flush_ms;
    pthread_t thread;
    ts_db_pool *pool;
    char service[24];
};

static void ev_free(audit_ev *e)
{
    free(e->who); /* the block of all six */
    memset(e, 0, sizeof(*e));
}

/* ---- the batch in COPY's text format --------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* A value in COPY's text format: backslash, tab, newline and carriage
 * return escaped. */
static void sb_copy_text(sbuf *b, const char *s)
{
    for (const char *c = s ? s : ""; *c; c++) {
        const char *esc = *c == '\\'   ? "\\\\"
                          : *c == '\t' ? "\\t"
                          : *c == '\n' ? "\\n"
                          : *c == '\r' ? "\\r"
                                       : NULL;
        if (esc)
            sb_put(b, esc, 2);
        else
            sb_put(b, c, 1);
    }
}

/* The comma-separated resources as a text[] literal ({"a","b"}; {} for none),
 * each element quoted with " and \ escaped, then escaped for COPY. */
static void sb_copy_array(sbuf *b, const char *list)
{
    sbuf lit = {0};
    sb_put(&lit, "{", 1);
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        sb_put(&lit, lit.len > 1 ? ",\"" : "\"", lit.len > 1 ? 2 : 1);
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '"' || p[i] == '\\')
                sb_put(&lit, "\\", 1);
            sb_put(&lit, p + i, 1);
        }
        sb_put(&lit, "\"", 1);
        p += n + (p[n] == ',');
    }
    sb_put(&lit, "}", 1);
    sb_copy_text(b, lit.p);
    free(lit.p);
}

/* One COPY per batch: with the INSERT ... unnest of arrays it replaced and
 * 0047's BRIN index, PostgreSQL's CPU a row went from 9.9 to 7.5 us
 * (bench/audit-rows, docs/benchmarks.md). */
static const char copy_sql[] =
    "COPY audit_log (at, service, who, who_kind, action, resources, source, request, outcome)"
    " FROM STDIN";

typedef struct batch {
    const char *service;
    audit_ev *ev;
    size_t n;
} batch;

static int insert_fn(ts_db *db, void *arg, ts_err *err)
{
    batch *b = arg;
    sbuf rows = {0};
    for (size_t i = 0; i < b->n; i++) {
        audit_ev *e = &b->ev[i];
        char at[64];
        struct tm tm;
        gmtime_r(&e->at.tv_sec, &tm);
        size_t len = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(at + len, sizeof(at) - len, ".%06ldZ\t", e->at.tv_nsec / 1000);
        sb_put(&rows, at, strlen(at));
        const char *text[] = {b->service, e->who, e->who_kind, e->action};
        for (size_t c = 0; c < sizeof(text) / sizeof(text[0]); c++) {
            sb_copy_text(&rows, text[c]);
            sb_put(&rows, "\t", 1);
        }
        sb_copy_array(&rows, e->resources);
        sb_put(&rows, "\t", 1);
        sb_copy_text(&rows, e->source);
        sb_put(&rows, "\t", 1);
        sb_copy_text(&rows, e->request);
        char outcome[16];
        snprintf(outcome, sizeof(outcome), "\t%d\n", e->outcome);
        sb_put(&rows, outcome, strlen(outcome));
    }
    int rc = ts_db_copy_in(db, copy_sql, rows.p, rows.len, err);
    free(rows.p);
    return rc;
}

/* ---- the writer thread ---------------------------------------------------------------- */

static void *writer(void *arg)
{
    ts_audit *a = arg;
    audit_ev *taken = xcalloc(BATCH_MAX, sizeof(*taken));
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->count == 0 && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->count == 0 && a->stop)
            break;
        /* The first event of a batch woke us: the others of the next flush
         * interval join it, so that PostgreSQL sees one statement and one
         * commit per interval instead of one per request (a commit each cost
         * more than the request it recorded). A full batch or stop ends the
         * wait early. */
        struct timespec flush_at;
        clock_gettime(CLOCK_REALTIME, &flush_at);
        flush_at.tv_nsec += (long)a->flush_ms % 1000 * 1000000L;
        flush_at.tv_sec += a->flush_ms / 1000 + flush_at.tv_nsec / 1000000000L;
        flush_at.tv_nsec %= 1000000000L;
        while (a->count < BATCH_MAX && !a->stop && !a->draining &&
               pthread_cond_timedwait(&a->cv, &a->mu, &flush_at) == 0)
            ;
        size_t n = a->count < BATCH_MAX ? a->count : BATCH_MAX;
        for (size_t i = 0; i < n; i++) {
            taken[i] = a->q[a->head];
            memset(&a->q[a->head], 0, sizeof(audit_ev));
            a->head = (a->head + 1) % a->max;
        }
        a->count -= n;
        long dropped = a->dropped;
        bool stopping = a->stop;
        pthread_mutex_unlock(&a->mu);

        if (dropped > a->dropped_logged) {
            ts_warn("audit events dropped: the queue was full", "dropped_total=%ld", dropped);
            a->dropped_logged = dropped;
        }
        batch b = {a->service, taken, n};
        ts_err err;
        int rc = ts_db_transaction(a->pool, TS_DB_WRITE, insert_fn, &b, &err);

        pthread_mutex_lock(&a->mu);
        if (rc == 0 || stopping) {
            if (rc)
                ts_warn("audit events not written at stop", "count=%zu error=\"%s\"", n, err.msg);
            for (size_t i = 0; i < n; i++)
                ev_free(&taken[i]);
            continue;
        }
        /* not written: back to the front of the queue, as far as it has room
         * (newer events count more than these: what does not fit is dropped) */
        ts_warn("audit events not written yet, retrying", "count=%zu error=\"%s\"", n, err.msg);
        size_t room = a->max - a->count;
        size_t keep = n < room ? n : room;
        for (size_t k = keep; k > 0; k--) {
            a->head = (a->head + a->max - 1) % a->max;
            a->q[a->head] = taken[n - keep + k - 1];
        }
        a->count += keep;
        for (size_t i = 0; i < n - keep; i++)
            ev_free(&taken[i]);
        a->dropped += (long)(n - keep);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        while (!a->stop && pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0)
            ; /* a second before the next attempt (new events wake us: wait on) */
    }
    pthread_mutex_unlock(&a->mu);
    free(taken);
    return NULL;
}

int ts_audit_start(const char *conninfo, const char *service, size_t max_pending, ts_audit **out,
                   ts_err *err)
{
    ts_audit *a = xcalloc(1, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    snprintf(a->service, sizeof(a->service), "%s", service);
    a->flush_ms = (int)ts_cfg_int(TESSERA_AUDIT_FLUSH_MS);
    a->max = max_pending ? max_pending : 1;
    a->q = xcalloc(a->max, sizeof(*a->q));
    if (conninfo && *conninfo) {
        ts_db_options opt;
        ts_db_options_from_config(&opt);
        opt.conninfo = conninfo;
        opt.read_conninfo = NULL;
        opt.size = 1;
        opt.max_retries = 2;
        int rc = ts_db_pool_new(&opt, &a->pool, err);
        if (rc) {
            free(a->q);
            free(a);
            return rc;
        }
        if (pthread_create(&a->thread, NULL, writer, a) != 0) {
            ts_db_pool_free(a->pool);
            free(a->q);
            free(a);
            return ts_err_set(err, TS_EIO, "audit: cannot start its writer thread");
        }
        a->has_thread = true;
    }
    *out = a;
    return 0;
}

void ts_audit_record(ts_audit *a, const ts_audit_event *e)
{
    ts_info("audit", "who=%s who_kind=%s action=%s resources=%s source=%s request=%s outcome=%d",
            e->who ? e->who : "", e->who_kind ? e->who_kind : "", e->action,
            e->resources ? e->resources : "", e->source ? e->source : "",
            e->request ? e->request : "", e->outcome);
    if (!a || !a->has_thread)
        return;
    audit_ev ev = {0};
    clock_gettime(CLOCK_REALTIME, &ev.at);
    /* the six strings in one block: one malloc and one free an event */
    const char *v[6] = {e->who ? e->who : "",
                        e->who_kind ? e->who_kind : "anonymous",
                        e->action,
                        e->resources ? e->resources : "",
                        e->source ? e->source : "",
                        e->request ? e->request : ""};
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++)
        total += (len[i] = strlen(v[i])) + 1;
    char *block = xmalloc(total);
    char **dst[6] = {&ev.who, &ev.who_kind, &ev.action, &ev.resources, &ev.source, &ev.request};
    for (int i = 0; i < 6; i++) {
        memcpy(block, v[i], len[i] + 1);
        *dst[i] = block;
        block += len[i] + 1;
    }
    ev.outcome = e->outcome;
    pthread_mutex_lock(&a->mu);
    if (a->count == a->max) { /* full: the oldest goes */
        ev_free(&a->q[a->head]);
        a->head = (a->head + 1) % a->max;
        a->count--;
        a->dropped++;
    }
    a->q[(a->head + a->count) % a->max] = ev;
    a->count++;
    /* the writer waits for the first event of a batch, then for a full one
     * (or its interval): no wake-up, no system call, for the others */
    if (a->count == 1 || a->count == BATCH_MAX)
        pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void ts_audit_stop(ts_audit *a, int timeout_ms)
{
    if (!a)
        return;
    if (a->has_thread) {
        /* write what is queued at once, giving the writer the time asked
         * for (also to retry), then stop it */
        pthread_mutex_lock(&a->mu);
        a->draining = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        for (int waited = 0; waited < timeout_ms && ts_audit_pending(a) > 0; waited += 10) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        ts_db_pool_free(a->pool);
    }
    for (size_t i = 0; i < a->count; i++)
        ev_free(&a->q[(a->head + i) % a->max]);
    free(a->q);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

long ts_audit_dropped(ts_audit *a)
{
    pthread_mutex_lock(&a->mu);
    long d = a->dropped;
    pthread_mutex_unlock(&a->mu);
    return d;
}

size_t ts_audit_pending(ts_audit *a)
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->count;
    pthread_mutex_unlock(&a->mu);
    return n;
}

static const ts_db_stmt prune_stmt = {
    "audit_prune",
    "WITH old AS (SELECT id FROM audit_log WHERE at < now() - make_interval(days => $1::int)"
    " ORDER BY id LIMIT $2::int)"
    " DELETE FROM audit_log a USING old WHERE a.id = old.id",
    2};

int ts_audit_prune(ts_db_pool *pool, int days, int batch, long *deleted, ts_err *err)
{
    char days_s[16], batch_s[16];
    snprintf(days_s, sizeof(days_s), "%d", days);
    snprintf(batch_s, sizeof(batch_s), "%d", batch);
    const char *params[] = {days_s, batch_s};
    return ts_db_write_one(pool, &prune_stmt, params, deleted, err);
}
