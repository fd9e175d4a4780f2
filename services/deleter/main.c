/* tessera-deleter: drains the durable deletion queue. Each pass claims a batch
 * of queued files (FOR UPDATE SKIP LOCKED, so any number of deleters share the
 * queue without removing a file twice at once), removes them from the storage
 * area (a file already gone counts as removed), deletes their queue rows and
 * commits. A deleter killed at any point leaves its rows in the queue: the
 * next pass removes those files again, which is harmless. A queued file that
 * an attachment still references is never removed (only tessera-fsck --repair
 * could queue such a file by mistake; the row is dropped with a warning).
 *
 * A deletion leaves the metadata and attachment rows of the resources it
 * removed to the deleters (deletion_purge, db/functions/delete.sql): before
 * draining, a pass removes those rows for up to TESSERA_DELETER_BATCH
 * resources and queues their files, in one transaction of its own.
 *
 * Each idle pass also settles the intents of files whose writer died before
 * indexing them (lib/domain/store_index.h), after TESSERA_STORE_INTENT_AGE seconds.
 *
 * Passes start when a nudge arrives on the PULL socket (REST sends one after
 * each deletion) and every TESSERA_DELETER_POLL_INTERVAL seconds. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/bus.h"
#include "base/config.h"
#include "io/db.h"
#include "base/log.h"
#include "base/metrics.h"
#include "io/service_io.h"
#include "base/service.h"
#include "io/store.h"
#include "domain/audit.h"
#include "domain/changes.h"
#include "domain/store_index.h"

typedef struct deleter {
    ts_db_pool *db;
    ts_store *store;
    long batch;
    long max_rate;
    int poll_s;
    int intent_age_s;
    ts_metric *m_removed;
    ts_metric *m_abandoned;
    ts_metric *m_failed;
    ts_metric *m_passes;
    ts_metric *m_queue_length;
    ts_metric *m_oldest_age;
    ts_metric *m_failing;
} deleter;

static atomic_bool stop_requested;

static void on_stop(void *user)
{
    (void)user;
    atomic_store(&stop_requested, true);
}

static const ts_db_stmt claim_batch = {
    "deleter_claim",
    "SELECT q.id, q.uuid::text, EXISTS (SELECT 1 FROM attachments a WHERE a.uuid = q.uuid) "
    "FROM deletion_queue q WHERE q.not_before <= now() "
    "ORDER BY q.id LIMIT $1 FOR UPDATE OF q SKIP LOCKED",
    1};

static const ts_db_stmt purge_removed = {"deleter_purge",
                                         "SELECT tessera_purge_removed($1::integer)", 1};

static const ts_db_stmt drop_rows = {"deleter_drop",
                                     "DELETE FROM deletion_queue WHERE id = ANY ($1::bigint[])", 1};

/* a failed removal waits a minute per attempt so far, at most an hour */
static const ts_db_stmt postpone_row = {
    "deleter_postpone",
    "UPDATE deletion_queue SET attempts = attempts + 1, last_error = $2, "
    "not_before = now() + least(attempts + 1, 60) * interval '1 minute' WHERE id = $1",
    2};

static const ts_db_stmt count_removed = {
    "deleter_count",
    "INSERT INTO deletion_stats (minute, removed) VALUES (date_trunc('minute', now()), $1) "
    "ON CONFLICT (minute) DO UPDATE SET removed = deletion_stats.removed + excluded.removed",
    1};

static const ts_db_stmt queue_status = {
    "deleter_status", "SELECT length, oldest_age_s, failing FROM tessera_deletion_queue_status()",
    0};

static const ts_db_stmt prune_stats = {
    "deleter_prune", "DELETE FROM deletion_stats WHERE minute < now() - interval '1 day'", 0};

typedef struct pass {
    deleter *d;
    long claimed;
    long removed;
    long failed;
} pass;

/* Appends an id to a growing "{1,2,3" array literal (closed by the caller). */
static void append_id(char **buf, size_t *len, size_t *cap, const char *id)
{
    size_t n = strlen(id);
    if (*len + n + 3 > *cap) {
        *cap = (*len + n + 3) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf)
            abort();
    }
    char sep = *len == 0 ? '{' : ',';
    (*buf)[(*len)++] = sep;
    memcpy(*buf + *len, id, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int pass_txn(ts_db *db, void *arg, ts_err *err)
{
    pass *p = arg;
    deleter *d = p->d;
    p->claimed = p->removed = p->failed = 0;
    char limit[24];
    snprintf(limit, sizeof(limit), "%ld", d->batch);
    const char *params[] = {limit};
    PGresult *res = NULL;
    char *ids = NULL;
    size_t len = 0, cap = 0;
    int rc = ts_db_exec(db, &claim_batch, params, &res, err);
    if (rc)
        return rc;
    int n = PQntuples(res);
    p->claimed = n;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *id = PQgetvalue(res, i, 0);
        const char *uuid = PQgetvalue(res, i, 1);
        if (strcmp(PQgetvalue(res, i, 2), "t") == 0) {
            ts_warn("queued file is referenced by an attachment, not removed", "uuid=%s", uuid);
            append_id(&ids, &len, &cap, id);
            continue;
        }
        ts_err rm;
        if (ts_store_remove(d->store, uuid, &rm)) {
            ts_warn("cannot remove a file, retried later", "uuid=%s error=\"%s\"", uuid, rm.msg);
            const char *pp[] = {id, rm.msg};
            rc = ts_db_exec(db, &postpone_row, pp, NULL, err);
            p->failed++;
            continue;
        }
        append_id(&ids, &len, &cap, id);
        p->removed++;
    }
    PQclear(res);
    if (rc == 0 && ids) {
        ids[len++] = '}';
        ids[len] = '\0';
        const char *pd[] = {ids};
        rc = ts_db_exec(db, &drop_rows, pd, NULL, err);
    }
    if (rc == 0 && p->removed) {
        char removed[24];
        snprintf(removed, sizeof(removed), "%ld", p->removed);
        const char *pc[] = {removed};
        rc = ts_db_exec(db, &count_removed, pc, NULL, err);
    }
    free(ids);
    return rc;
}

typedef struct purge {
    deleter *d;
    bool found;  /* an entry of deletion_purge was waiting */
    long queued; /* files queued from it */
} purge;

static int purge_txn(ts_db *db, void *arg, ts_err *err)
{
    purge *pu = arg;
    char limit[24];
    snprintf(limit, sizeof(limit), "%ld", pu->d->batch);
    const char *params[] = {limit};
    PGresult *res;
    int rc = ts_db_exec(db, &purge_removed, params, &res, err);
    if (rc)
        return rc;
    pu->found = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
    pu->queued = pu->found ? atol(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return 0;
}

static int status_txn(ts_db *db, void *arg, ts_err *err)
{
    deleter *d = arg;
    PGresult *res;
    int rc = ts_db_exec(db, &queue_status, NULL, &res, err);
    if (rc)
        return rc;
    if (PQntuples(res) == 1) {
        ts_metric_set(d->m_queue_length, atof(PQgetvalue(res, 0, 0)));
        ts_metric_set(d->m_oldest_age, atof(PQgetvalue(res, 0, 1)));
        ts_metric_set(d->m_failing, atof(PQgetvalue(res, 0, 2)));
    }
    PQclear(res);
    return ts_db_exec(db, &prune_stats, NULL, NULL, err);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    ts_service_init("deleter", argc, argv);
    ts_service_handle_signals(on_stop, NULL);
    ts_err err;
    ts_err_clear(&err);

    deleter d = {0};
    ts_db_options dbopt;
    ts_db_options_from_config(&dbopt);
    if (dbopt.size > 2)
        dbopt.size = 2; /* the pass loop and /health */
    d.db = ts_service_db(&dbopt);
    d.store = ts_service_store();
    d.batch = ts_cfg_int(TESSERA_DELETER_BATCH);
    d.max_rate = ts_cfg_int(TESSERA_DELETER_MAX_RATE);
    d.poll_s = (int)ts_cfg_int(TESSERA_DELETER_POLL_INTERVAL);
    d.intent_age_s = (int)ts_cfg_int(TESSERA_STORE_INTENT_AGE);
    if (d.max_rate > 0 && d.batch > d.max_rate)
        d.batch = d.max_rate;
    d.m_removed = ts_metrics_counter("tessera_deleter_files_removed_total", NULL,
                                     "files removed from the storage area");
    d.m_abandoned = ts_metrics_counter("tessera_deleter_abandoned_files_removed_total", NULL,
                                       "files in place whose writer died before indexing them");
    d.m_failed = ts_metrics_counter("tessera_deleter_remove_failures_total", NULL,
                                    "removals that failed and were postponed");
    d.m_passes =
        ts_metrics_counter("tessera_deleter_passes_total", NULL, "passes over the deletion queue");
    d.m_queue_length = ts_metrics_gauge("tessera_deletion_queue_length", NULL,
                                        "files waiting in the deletion queue (all deleters)");
    d.m_oldest_age = ts_metrics_gauge("tessera_deletion_queue_oldest_age_seconds", NULL,
                                      "age of the oldest entry of the deletion queue");
    d.m_failing = ts_metrics_gauge("tessera_deletion_queue_failing", NULL,
                                   "queued files whose removal failed at least once");

    ts_bus_puller *nudges = NULL;
    const char *listen = ts_cfg_str(TESSERA_DELETER_BUS_LISTEN);
    if (listen[0] && ts_bus_puller_open(listen, &nudges, &err))
        ts_service_die("bus", &err);

    ts_metrics_server *metrics = ts_service_metrics(ts_service_db_health, d.db);
    ts_heartbeat *heartbeat = ts_service_heartbeat(d.db, ts_service_db_health, d.db);
    int metrics_port = (int)ts_cfg_int(TESSERA_METRICS_PORT);
    ts_info("deleter ready", "bus=%s batch=%ld poll_s=%d max_rate=%ld metrics_port=%d", listen,
            d.batch, d.poll_s, d.max_rate, metrics_port);

    double last_status = 0, last_audit_prune = 0, last_changes_prune = 0;
    while (!atomic_load(&stop_requested)) {
        double t0 = now_s();
        purge pu = {&d, false, 0};
        if (ts_db_transaction(d.db, TS_DB_WRITE_READ_COMMITTED, purge_txn, &pu, &err))
            ts_warn("purge of removed resources failed, retried", "error=\"%s\"", err.msg);
        else if (pu.found)
            ts_info("removed resources purged", "files_queued=%ld seconds=%.3f", pu.queued,
                    now_s() - t0);
        pass p = {&d, 0, 0, 0};
        int rc = ts_db_transaction(d.db, TS_DB_WRITE_READ_COMMITTED, pass_txn, &p, &err);
        ts_metric_inc(d.m_passes);
        if (rc) {
            ts_warn("deletion pass failed, retried", "error=\"%s\"", err.msg);
            p.claimed = 0;
        } else {
            ts_metric_add(d.m_removed, (double)p.removed);
            ts_metric_add(d.m_failed, (double)p.failed);
            if (p.claimed)
                ts_info("deletion pass", "claimed=%ld removed=%ld failed=%ld seconds=%.3f",
                        p.claimed, p.removed, p.failed, now_s() - t0);
        }
        if (rc == 0 && p.claimed < d.batch) {
            /* files whose writer died between putting them in place and
             * indexing them (lib/domain/store_index.h) */
            int settled = 0, removed = 0;
            ts_err rerr;
            if (ts_store_reclaim(d.db, d.store, d.intent_age_s, &settled, &removed, &rerr))
                ts_warn("cannot look at intents", "error=\"%s\"", rerr.msg);
            ts_metric_add(d.m_abandoned, removed);
            if (settled || removed)
                ts_info("abandoned intents settled", "indexed=%d removed=%d", settled, removed);
        }
        int retention = (int)ts_cfg_int(TESSERA_AUDIT_RETENTION_DAYS);
        if (retention > 0 && now_s() - last_audit_prune >= 60) {
            /* the audit trail's retention, a batch a minute from each deleter */
            long pruned = 0;
            ts_err aerr;
            if (ts_audit_prune(d.db, retention, 10000, &pruned, &aerr))
                ts_warn("cannot prune the audit trail", "error=\"%s\"", aerr.msg);
            else if (pruned)
                ts_info("audit trail pruned", "rows=%ld older_than_days=%d", pruned, retention);
            last_audit_prune = now_s();
        }
        int changes_days = (int)ts_cfg_int(TESSERA_CHANGES_RETENTION_DAYS);
        if (changes_days > 0 && now_s() - last_changes_prune >= 10) {
            /* the change log's retention: batches until none is due, then
             * a look every 10 s (a 10M-row log is pruned at the rate it grew) */
            long pruned = 0;
            ts_err cerr;
            if (ts_changes_prune(d.db, changes_days, 10000, &pruned, &cerr))
                ts_warn("cannot prune the change log", "error=\"%s\"", cerr.msg);
            else if (pruned)
                ts_info("change log pruned", "rows=%ld older_than_days=%d", pruned, changes_days);
            if (pruned < 10000)
                last_changes_prune = now_s();
        }
        if (now_s() - last_status >= 1 || p.claimed < d.batch) {
            ts_err serr;
            if (ts_db_transaction(d.db, TS_DB_WRITE_READ_COMMITTED, status_txn, &d, &serr) == 0)
                last_status = now_s();
        }
        if (d.max_rate > 0 && p.removed > 0)
            sleep_s((double)p.removed / (double)d.max_rate - (now_s() - t0));
        if (rc == 0 && (p.claimed == d.batch || pu.found))
            continue; /* more is waiting */
        /* idle: until a nudge or the poll interval, watching for SIGTERM */
        double until = now_s() + (rc ? 1.0 : d.poll_s);
        while (!atomic_load(&stop_requested) && now_s() < until) {
            if (nudges) {
                if (ts_bus_puller_wait(nudges, 200) == 1)
                    break;
            } else {
                sleep_s(0.2);
            }
        }
    }

    ts_heartbeat_stop(heartbeat);
    ts_metrics_server_free(metrics);
    ts_bus_puller_free(nudges);
    ts_store_free(d.store);
    ts_db_pool_free(d.db);
    ts_info("stopped", NULL);
    return 0;
}
