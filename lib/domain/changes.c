#include "domain/changes.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"

static const ts_db_stmt sequence_changes = {"changes_sequence",
                                            "SELECT tessera_sequence_changes($1::boolean)", 1};

typedef struct {
    bool wait;
    long numbered;
} sequence_args;

static int sequence_txn(ts_db *db, void *arg, ts_err *err)
{
    sequence_args *a = arg;
    const char *params[] = {a->wait ? "true" : "false"};
    PGresult *res;
    int rc = ts_db_exec(db, &sequence_changes, params, &res, err);
    if (rc)
        return rc;
    a->numbered = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int ts_changes_sequence(ts_db_pool *pool, bool wait, long *numbered, ts_err *err)
{
    sequence_args a = {.wait = wait, .numbered = 0};
    /* READ COMMITTED whatever TESSERA_DB_ISOLATION says: the snapshot must be
     * taken after the advisory lock, or the counter could be stale. */
    int rc = ts_db_transaction(pool, TS_DB_WRITE_READ_COMMITTED, sequence_txn, &a, err);
    if (numbered)
        *numbered = a.numbered;
    return rc;
}

/* The oldest changes by Seq, then those of them old enough: the seq index
 * gives the first rows at once, and created_at grows with Seq (a change is
 * numbered right after its commit), so a pass reads batch rows, never the log. */
static const ts_db_stmt prune_changes = {
    "changes_prune",
    "WITH oldest AS (SELECT id, created_at FROM changes"
    " WHERE seq <= (SELECT last_seq FROM router_cursor) ORDER BY seq LIMIT $2::int)"
    " DELETE FROM changes c USING oldest o"
    " WHERE c.id = o.id AND o.created_at < now() - make_interval(days => $1::int)",
    2};
static const ts_db_stmt clear_changes = {
    "changes_clear", "DELETE FROM changes WHERE seq <= (SELECT last_seq FROM router_cursor)", 0};

int ts_changes_prune(ts_db_pool *pool, int days, int batch, long *deleted, ts_err *err)
{
    if (days < 0)
        return ts_db_write_one(pool, &clear_changes, NULL, deleted, err);
    char days_s[16], batch_s[16];
    snprintf(days_s, sizeof(days_s), "%d", days);
    snprintf(batch_s, sizeof(batch_s), "%d", batch);
    const char *params[] = {days_s, batch_s};
    return ts_db_write_one(pool, &prune_changes, params, deleted, err);
}

/* Passes start at least this far apart: under a stream of commits, one pass
 * numbers the changes of many (a pass per commit cost a second transaction,
 * with its WAL flush, for every instance stored). /changes sees a change this
 * much later at most. */
#define SEQUENCER_MIN_GAP_MS 10

struct ts_change_sequencer {
    ts_db_pool *pool;
    int interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool nudged;
    bool stop;
};

static struct timespec timespec_add_ms(struct timespec t, int ms)
{
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static struct timespec realtime_after(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return timespec_add_ms(t, ms);
}

static bool realtime_reached(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void *sequencer_loop(void *arg)
{
    ts_change_sequencer *s = arg;
    struct timespec last_pass = {0, 0};
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (!s->nudged && !s->stop) {
            struct timespec until = realtime_after(s->interval_ms);
            pthread_cond_timedwait(&s->cv, &s->mu, &until);
        }
        /* a nudge soon after the last pass waits for the gap; a stop does not */
        struct timespec gap_end = timespec_add_ms(last_pass, SEQUENCER_MIN_GAP_MS);
        while (!s->stop && !realtime_reached(&gap_end))
            pthread_cond_timedwait(&s->cv, &s->mu, &gap_end);
        bool stopping = s->stop;
        s->nudged = false;
        pthread_mutex_unlock(&s->mu);
        /* Nudges that arrive while this runs make the next pass start at once:
         * a burst of commits costs a few passes, not one per commit. */
        ts_err err;
        long n;
        clock_gettime(CLOCK_REALTIME, &last_pass);
        if (ts_changes_sequence(s->pool, false, &n, &err))
            ts_warn("cannot number changes (retried later)", "error=\"%s\"", err.msg);
        pthread_mutex_lock(&s->mu);
        if (stopping)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int ts_change_sequencer_start(ts_db_pool *pool, int interval_ms, ts_change_sequencer **out,
                              ts_err *err)
{
    ts_change_sequencer *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->pool = pool;
    s->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sequencer_loop, s) != 0) {
        free(s);
        return ts_err_set(err, TS_EINVAL, "cannot start the change sequencer thread");
    }
    *out = s;
    return 0;
}

void ts_change_sequencer_nudge(ts_change_sequencer *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->nudged = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void ts_change_sequencer_stop(ts_change_sequencer *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
