/* The audit trail (see rest_audit.h). */
#include "rest_audit.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"
#include "rest_common.h"

typedef struct audit_entry {
    char at[100]; /* ISO 8601 with microseconds, UTC */
    char who[128];
    char source[64];
    const char *action;
    char method[16];
    char uri[512];
    char resource[96];
    int status;
} audit_entry;

struct rest_audit {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    audit_entry *queue; /* a ring of cap entries */
    size_t cap, head, len;
    bool stop;
    pthread_t thread;
    ts_db_pool *db;
    int retention_days;
    ts_metric *m_dropped, *m_written;
};

static const char *action_of(const rest_request *req, const rest_route *route)
{
    if (req->status == 401 || req->status == 403)
        return "refused";
    const char *p = route ? route->pattern : req->url;
    if (strcmp(req->method, "DELETE") == 0)
        return "delete";
    /* what leaves with the bytes of the instances */
    if (strstr(p, "/archive") || strstr(p, "/file") || strstr(p, "/store") ||
        strncmp(p, "/dicom-web/studies/", 19) == 0 || strcmp(p, "/wado") == 0 ||
        strstr(p, "/frames") || strstr(p, "/content"))
        return strcmp(req->method, "GET") == 0 || strcmp(req->method, "POST") == 0 ? "export"
                                                                                   : "modify";
    if (strcmp(req->method, "GET") == 0 || (route && route->role == REST_ROLE_READ))
        return "read";
    return "modify";
}

/* The hook called by rest_http after every routed request and every 401. */
static void record(rest_request *req, const rest_route *route)
{
    rest_audit *a = req->ctx->audit_state;
    /* patient data only: no audit of /system, /tools, metrics, preflights */
    if (route && route->scope == REST_SCOPE_PUBLIC && req->status != 403)
        return;
    if (!route && req->status != 401)
        return;
    audit_entry e = {0};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(e.at, sizeof(e.at), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec);
    snprintf(e.who, sizeof(e.who), "%s", req->who ? req->who->name : "");
    rest_client_ip(req, e.source, sizeof(e.source));
    e.action = action_of(req, route);
    snprintf(e.method, sizeof(e.method), "%s", req->method);
    snprintf(e.uri, sizeof(e.uri), "%s", req->url);
    const char *res = NULL;
    if (route && (route->scope == REST_SCOPE_RESOURCE || route->scope == REST_SCOPE_PATIENT_OF) &&
        req->nseg >= 2)
        res = req->seg[1];
    else if (route && route->scope == REST_SCOPE_DICOMWEB && req->nseg >= 3)
        res = req->seg[2];
    else if (route && route->scope == REST_SCOPE_WADO_URI)
        res = rest_arg(req, "studyUID");
    snprintf(e.resource, sizeof(e.resource), "%s", res ? res : "");
    e.status = req->status;
    ts_info("audit", "who=\"%s\" source=%s action=%s method=%s uri=\"%s\" resource=%s status=%d",
            e.who, e.source, e.action, e.method, e.uri, e.resource[0] ? e.resource : "-", e.status);
    pthread_mutex_lock(&a->mu);
    if (a->len == a->cap) {
        pthread_mutex_unlock(&a->mu);
        ts_metric_inc(a->m_dropped);
        return;
    }
    a->queue[(a->head + a->len) % a->cap] = e;
    a->len++;
    if (a->len >= 256)
        pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

typedef struct batch {
    const char *json;
} batch;

static int insert_txn(ts_db *db, void *arg, ts_err *err)
{
    batch *b = arg;
    const char *params[] = {b->json};
    PGresult *res = NULL;
    int rc = ts_db_exec_params(
        db,
        "INSERT INTO audit_log (at, who, source, action, method, uri, resource, status)"
        " SELECT at, who, source, action, method, uri, nullif(resource, ''), status"
        " FROM jsonb_to_recordset($1::jsonb) AS x(at timestamptz, who text, source text,"
        " action text, method text, uri text, resource text, status integer)",
        1, params, &res, err);
    if (res)
        PQclear(res);
    return rc;
}

static int purge_txn(ts_db *db, void *arg, ts_err *err)
{
    char days[16];
    snprintf(days, sizeof(days), "%d", *(int *)arg);
    const char *params[] = {days};
    PGresult *res = NULL;
    int rc = ts_db_exec_params(
        db, "DELETE FROM audit_log WHERE at < now() - make_interval(days => $1::integer)", 1,
        params, &res, err);
    if (res)
        PQclear(res);
    return rc;
}

/* Takes what is queued (at most 1000 rows) as one JSON array; NULL if nothing. */
static char *take(rest_audit *a, size_t *n)
{
    json_t *arr = json_array();
    *n = 0;
    while (a->len > 0 && *n < 1000) {
        audit_entry *e = &a->queue[a->head];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "at", e->at, "who",
                              e->who, "source", e->source, "action", e->action, "method", e->method,
                              "uri", e->uri, "resource", e->resource, "status", e->status);
        if (o) /* NULL only for text that is not UTF-8: that row is left out */
            json_array_append_new(arr, o);
        a->head = (a->head + 1) % a->cap;
        a->len--;
        (*n)++;
    }
    char *text = *n ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

static void *writer(void *arg)
{
    rest_audit *a = arg;
    time_t next_purge = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        if (a->len == 0 && !a->stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 250 * 1000000L; /* a batch every 250 ms at most */
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&a->cv, &a->mu, &until);
        }
        size_t n;
        char *json = take(a, &n);
        bool stop = a->stop && a->len == 0;
        pthread_mutex_unlock(&a->mu);
        if (json) {
            ts_err err;
            batch b = {json};
            if (ts_db_transaction(a->db, TS_DB_WRITE_READ_COMMITTED, insert_txn, &b, &err)) {
                ts_warn("audit rows lost", "rows=%zu error=\"%s\"", n, err.msg);
                ts_metric_add(a->m_dropped, (double)n);
            } else {
                ts_metric_add(a->m_written, (double)n);
            }
            free(json);
        }
        if (a->retention_days > 0 && time(NULL) >= next_purge) {
            ts_err err;
            if (ts_db_transaction(a->db, TS_DB_WRITE_READ_COMMITTED, purge_txn, &a->retention_days,
                                  &err))
                ts_warn("audit retention failed", "error=\"%s\"", err.msg);
            next_purge = time(NULL) + 3600;
        }
        pthread_mutex_lock(&a->mu);
        if (stop)
            break;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int rest_audit_start(rest_ctx *ctx, ts_err *err)
{
    if (!ts_config_bool("TESSERA_AUDIT"))
        return 0;
    rest_audit *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->cap = (size_t)ts_config_int("TESSERA_AUDIT_QUEUE");
    a->queue = calloc(a->cap, sizeof(audit_entry));
    if (!a->queue)
        abort();
    a->db = ctx->db;
    a->retention_days = (int)ts_config_int("TESSERA_AUDIT_RETENTION_DAYS");
    a->m_dropped = ts_metrics_counter("tessera_audit_dropped_total", "",
                                      "audit rows not written (queue full or database failure)");
    a->m_written = ts_metrics_counter("tessera_audit_written_total", "", "audit rows written");
    if (pthread_create(&a->thread, NULL, writer, a)) {
        free(a->queue);
        free(a);
        return ts_err_set(err, TS_EIO, "cannot start the audit writer");
    }
    ctx->audit_state = a;
    ctx->audit = record;
    return 0;
}

void rest_audit_stop(rest_ctx *ctx)
{
    rest_audit *a = ctx->audit_state;
    if (!a)
        return;
    ctx->audit = NULL;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    free(a->queue);
    free(a);
    ctx->audit_state = NULL;
}

static const ts_db_stmt audit_list = {
    "rest_audit_list",
    "SELECT coalesce(jsonb_agg(jsonb_build_object('ID', id, 'Time', to_char(at AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'Who', who, 'Source', source, 'Action', action,"
    " 'Method', method, 'Uri', uri, 'Resource', resource, 'Status', status) ORDER BY id), '[]')"
    " FROM (SELECT * FROM audit_log WHERE id > $1::bigint"
    " AND ($3::text IS NULL OR resource = $3) AND ($4::text IS NULL OR who = $4)"
    " ORDER BY id LIMIT $2::bigint) s",
    4};

void rest_audit_list(rest_request *req)
{
    long since = rest_arg_long(req, "since", 0), limit = rest_arg_long(req, "limit", 1000);
    if (since < 0 || limit < 0) {
        rest_reply_oe(req, TS_OE_BAD_PARAMETER_TYPE, "since and limit are non-negative integers");
        return;
    }
    char s[24], l[24];
    snprintf(s, sizeof(s), "%ld", since);
    snprintf(l, sizeof(l), "%ld", limit);
    const char *params[] = {s, l, rest_arg(req, "resource"), rest_arg(req, "who")};
    rest_row row = {&audit_list, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &row))
        return;
    rest_reply_json_text(req, 200, row.col[0] ? row.col[0] : "[]",
                         row.col[0] ? strlen(row.col[0]) : 2);
    rest_row_clear(&row);
}
