/* Heartbeats of the service processes (see heartbeat.h). */
#include "io/heartbeat.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/xalloc.h"

/* Missed beats after which a process is down (a string: it is spliced into
 * the SQL), and how long the row of a process gone (stopped or down) stays
 * listed. */
#define MISSED_BEATS "3"
#define KEEP_GONE "1 day"

struct ts_heartbeat {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    pthread_t thread;
    ts_db_pool *pool;
    long long id;
    int interval_s;
    ts_health_fn health;
    void *user;
    bool failing; /* the last beat failed: log the next success */
};

static const ts_db_stmt insert_stmt = {
    "heartbeat_insert",
    "INSERT INTO service_heartbeats (service, version, host, pid, interval_s) "
    "VALUES ($1, $2, $3, $4, $5) RETURNING id",
    5};

static const ts_db_stmt beat_stmt = {"heartbeat_beat",
                                     "UPDATE service_heartbeats SET last_seen = now(), "
                                     "healthy = $2, reason = $3 WHERE id = $1",
                                     3};

static const ts_db_stmt prune_stmt = {
    "heartbeat_prune",
    "DELETE FROM service_heartbeats WHERE last_seen < now() - interval '" KEEP_GONE "'", 0};

static const ts_db_stmt stop_stmt = {
    "heartbeat_stop", "UPDATE service_heartbeats SET stopped_at = now() WHERE id = $1", 1};

/* The database builds the answer: its clock judges every process, whatever
 * the clocks of their hosts say. */
static const ts_db_stmt list_stmt = {
    "heartbeat_list",
    "SELECT coalesce(json_agg(json_build_object("
    "'Service', service, 'Version', version, 'Host', host, 'Pid', pid, "
    "'StartedAt', to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "'LastSeen', to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "'SecondsSinceLastSeen', round(extract(epoch FROM now() - last_seen)::numeric, 1), "
    "'IntervalSeconds', interval_s, "
    "'State', CASE WHEN stopped_at IS NOT NULL THEN 'stopped' "
    "WHEN last_seen >= now() - make_interval(secs => interval_s * " MISSED_BEATS ") "
    "THEN 'up' ELSE 'down' END, "
    "'Healthy', healthy, 'Reason', reason) ORDER BY service, host, pid, id)::text, '[]') "
    "FROM service_heartbeats",
    0};

typedef struct insert_arg {
    const char *params[5];
    long long id;
} insert_arg;

static int insert_txn(ts_db *db, void *arg, ts_err *err)
{
    insert_arg *a = arg;
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &insert_stmt, a->params, &res, err);
    if (rc)
        return rc;
    a->id = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

typedef struct beat_arg {
    char id[24];
    bool healthy;
    char reason[256];
} beat_arg;

static int beat_txn(ts_db *db, void *arg, ts_err *err)
{
    beat_arg *a = arg;
    const char *params[3] = {a->id, a->healthy ? "true" : "false", a->reason};
    int rc = ts_db_exec(db, &beat_stmt, params, NULL, err);
    if (rc == 0)
        rc = ts_db_exec(db, &prune_stmt, NULL, NULL, err);
    return rc;
}

static void beat(ts_heartbeat *hb)
{
    beat_arg a = {.healthy = true};
    snprintf(a.id, sizeof(a.id), "%lld", hb->id);
    if (hb->health)
        a.healthy = hb->health(hb->user, a.reason, sizeof(a.reason));
    ts_err err;
    if (ts_db_transaction(hb->pool, TS_DB_WRITE_READ_COMMITTED, beat_txn, &a, &err)) {
        /* the database is away: the process shows as down until it is back */
        if (!hb->failing)
            ts_warn("cannot write the heartbeat", "error=\"%s\"", err.msg);
        hb->failing = true;
    } else if (hb->failing) {
        ts_info("heartbeat written again", "id=%lld", hb->id);
        hb->failing = false;
    }
}

static void *beat_loop(void *arg)
{
    ts_heartbeat *hb = arg;
    pthread_mutex_lock(&hb->mu);
    while (!hb->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += hb->interval_s;
        while (!hb->stop && pthread_cond_timedwait(&hb->cv, &hb->mu, &until) == 0)
            ;
        if (hb->stop)
            break;
        pthread_mutex_unlock(&hb->mu);
        beat(hb);
        pthread_mutex_lock(&hb->mu);
    }
    pthread_mutex_unlock(&hb->mu);
    return NULL;
}

int ts_heartbeat_start(ts_db_pool *pool, const char *service, const char *version, int interval_s,
                       ts_health_fn health, void *user, ts_heartbeat **out, ts_err *err)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1))
        snprintf(host, sizeof(host), "unknown");
    char pid[16], interval[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    snprintf(interval, sizeof(interval), "%d", interval_s);
    insert_arg a = {{service, version, host, pid, interval}, 0};
    int rc = ts_db_transaction(pool, TS_DB_WRITE_READ_COMMITTED, insert_txn, &a, err);
    if (rc)
        return rc;
    ts_heartbeat *hb = xcalloc(1, sizeof(*hb));
    pthread_mutex_init(&hb->mu, NULL);
    pthread_cond_init(&hb->cv, NULL);
    hb->pool = pool;
    hb->id = a.id;
    hb->interval_s = interval_s;
    hb->health = health;
    hb->user = user;
    if (pthread_create(&hb->thread, NULL, beat_loop, hb)) {
        free(hb);
        return ts_err_set(err, TS_EIO, "cannot start the heartbeat thread");
    }
    *out = hb;
    return 0;
}

static int stop_txn(ts_db *db, void *arg, ts_err *err)
{
    const char *params[1] = {arg};
    return ts_db_exec(db, &stop_stmt, params, NULL, err);
}

void ts_heartbeat_stop(ts_heartbeat *hb)
{
    if (!hb)
        return;
    pthread_mutex_lock(&hb->mu);
    hb->stop = true;
    pthread_cond_signal(&hb->cv);
    pthread_mutex_unlock(&hb->mu);
    pthread_join(hb->thread, NULL);
    char id[24];
    snprintf(id, sizeof(id), "%lld", hb->id);
    ts_err err;
    if (ts_db_transaction(hb->pool, TS_DB_WRITE_READ_COMMITTED, stop_txn, id, &err))
        ts_warn("cannot mark the heartbeat stopped", "error=\"%s\"", err.msg);
    pthread_mutex_destroy(&hb->mu);
    pthread_cond_destroy(&hb->cv);
    free(hb);
}

static int list_txn(ts_db *db, void *arg, ts_err *err)
{
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &list_stmt, NULL, &res, err);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *list = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    PQclear(res);
    if (!list)
        return ts_err_set(err, TS_EIO, "bad heartbeat list: %s", jerr.text);
    json_decref(*(json_t **)arg);
    *(json_t **)arg = list;
    return 0;
}

int ts_heartbeat_list(ts_db_pool *pool, json_t **out, ts_err *err)
{
    *out = NULL;
    return ts_db_transaction(pool, TS_DB_READ_SINGLE, list_txn, out, err);
}
