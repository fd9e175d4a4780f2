#include "io/db.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "base/metrics.h"

#define MAX_PREPARED 128

struct ts_db {
    PGconn *conn;
    bool in_use;
    bool broken;            /* the last failure was a lost connection */
    bool retryable;         /* the last failure was 40001 or 40P01 */
    bool commit_in_doubt;   /* a COMMIT was sent and its answer lost */
    const ts_db_stmt *sent; /* sent by ts_db_send, result not yet received */
    const char *begin;      /* the transaction's BEGIN, not sent yet: it goes
                               with the first statement */
    bool pipelined;         /* sent as BEGIN + statement in one pipeline */
    const ts_db_stmt *prepared[MAX_PREPARED];
    int nprepared;
    ts_db_pool *pool;
};

struct ts_db_pool {
    ts_db_options opt;
    char *conninfo;
    char *isolation;
    pthread_mutex_t mu;
    /* threads waiting for a connection, oldest first: a released connection
     * goes to the oldest waiter directly, so no thread waits while later ones
     * are served (a plain condition variable let some requests wait 100+ ms
     * behind others under 16 concurrent clients) */
    struct pool_waiter *waiters_head, *waiters_tail;
    ts_db *conns;
    ts_db_pool *reads; /* read-only transactions go here when set (the replica) */
    atomic_long replays;
    atomic_long busy_failures;
    ts_metric *m_replays;
    ts_metric *m_busy;
};

void ts_db_options_from_config(ts_db_options *opt)
{
    opt->conninfo = ts_cfg_str(TESSERA_DB_URL);
    opt->read_conninfo = NULL; /* opt-in: see db.h */
    opt->size = (int)ts_cfg_int(TESSERA_DB_POOL_SIZE);
    opt->max_retries = (int)ts_cfg_int(TESSERA_DB_MAX_RETRIES);
    opt->isolation = ts_cfg_str(TESSERA_DB_ISOLATION);
    opt->connect_timeout_s = (int)ts_cfg_int(TESSERA_DB_CONNECT_TIMEOUT);
    opt->retry_base_ms = 100;
}

int ts_db_pool_new(const ts_db_options *opt, ts_db_pool **out, ts_err *err)
{
    *out = NULL;
    if (opt->size < 1)
        return ts_err_set(err, TS_EINVAL, "database pool size must be at least 1");
    ts_db_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        abort();
    pool->opt = *opt;
    pool->conninfo = strdup(opt->conninfo ? opt->conninfo : "");
    pool->isolation = strdup(opt->isolation ? opt->isolation : "read-committed");
    if (!pool->conninfo || !pool->isolation)
        abort();
    pool->opt.conninfo = pool->conninfo;
    pool->opt.isolation = pool->isolation;
    pool->opt.read_conninfo = NULL;
    if (pool->opt.retry_base_ms <= 0)
        pool->opt.retry_base_ms = 100;
    pool->conns = calloc((size_t)opt->size, sizeof(ts_db));
    if (!pool->conns)
        abort();
    for (int i = 0; i < opt->size; i++)
        pool->conns[i].pool = pool;
    pthread_mutex_init(&pool->mu, NULL);
    pool->m_replays = ts_metrics_counter(
        "tessera_db_replays_total", NULL,
        "transactions replayed after a serialization failure, deadlock or lost connection");
    pool->m_busy = ts_metrics_counter("tessera_db_busy_total", NULL,
                                      "transactions given up after the last replay (503/0xA700)");
    if (opt->read_conninfo && *opt->read_conninfo) {
        ts_db_options ro = pool->opt;
        ro.conninfo = opt->read_conninfo;
        int rc = ts_db_pool_new(&ro, &pool->reads, err);
        if (rc) {
            ts_db_pool_free(pool);
            return rc;
        }
        ts_info("read-only transactions go to the read URL", "connections=%d", opt->size);
    }
    *out = pool;
    return 0;
}

void ts_db_pool_free(ts_db_pool *pool)
{
    if (!pool)
        return;
    ts_db_pool_free(pool->reads);
    for (int i = 0; i < pool->opt.size; i++)
        if (pool->conns[i].conn)
            PQfinish(pool->conns[i].conn);
    pthread_mutex_destroy(&pool->mu);
    free(pool->conns);
    free(pool->conninfo);
    free(pool->isolation);
    free(pool);
}

long ts_db_pool_replays(const ts_db_pool *pool)
{
    return atomic_load(&((ts_db_pool *)pool)->replays) +
           (pool->reads ? ts_db_pool_replays(pool->reads) : 0);
}

long ts_db_pool_busy_failures(const ts_db_pool *pool)
{
    return atomic_load(&((ts_db_pool *)pool)->busy_failures) +
           (pool->reads ? ts_db_pool_busy_failures(pool->reads) : 0);
}

typedef struct pool_waiter {
    pthread_cond_t cv;
    ts_db *conn; /* set by release() when handed over */
    struct pool_waiter *next;
} pool_waiter;

static ts_db *acquire(ts_db_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    if (!pool->waiters_head) {
        for (int i = 0; i < pool->opt.size; i++) {
            if (!pool->conns[i].in_use) {
                pool->conns[i].in_use = true;
                pthread_mutex_unlock(&pool->mu);
                return &pool->conns[i];
            }
        }
    }
    /* The waiter lives on this stack while queued: release() takes it off the
     * queue before it hands over a connection, and only then does this return. */
    pool_waiter w = {.conn = NULL, .next = NULL};
    pthread_cond_init(&w.cv, NULL);
    if (pool->waiters_tail)
        pool->waiters_tail->next = &w;
    else
        pool->waiters_head = &w; // cppcheck-suppress autoVariables ; dequeued before return
    pool->waiters_tail = &w;     // cppcheck-suppress autoVariables ; dequeued before return
    while (!w.conn)
        pthread_cond_wait(&w.cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    pthread_cond_destroy(&w.cv);
    return w.conn;
}

static void release(ts_db *db)
{
    ts_db_pool *pool = db->pool;
    pthread_mutex_lock(&pool->mu);
    pool_waiter *w = pool->waiters_head;
    if (w) {
        /* handed over still in use: the oldest waiter owns it now */
        pool->waiters_head = w->next;
        if (!pool->waiters_head)
            pool->waiters_tail = NULL;
        w->conn = db;
        pthread_cond_signal(&w->cv);
    } else {
        db->in_use = false;
    }
    pthread_mutex_unlock(&pool->mu);
}

static void drop_connection(ts_db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
    db->nprepared = 0;
    db->sent = NULL;
    db->begin = NULL;
    db->pipelined = false;
}

/* Server notices ("relation already exists, skipping") are not errors. */
static void log_notice(void *arg, const char *message)
{
    char quoted[512];
    ts_debug("database notice", "notice=%s", ts_log_quote(quoted, sizeof(quoted), message));
}

/* Opens the connection if it is not open or was lost. */
static int ensure_connected(ts_db *db, ts_err *err)
{
    db->broken = false;
    db->retryable = false;
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return 0;
    drop_connection(db);
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", db->pool->opt.connect_timeout_s);
    /* Keepalives and a TCP user timeout: a silent network partition must turn
     * into a lost connection (replayed, or in doubt), not a COMMIT that waits
     * forever. Ignored on unix sockets. */
    const char *keys[] = {"dbname",           "connect_timeout",  "application_name",
                          "keepalives",       "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", NULL};
    const char *vals[] = {
        db->pool->conninfo, timeout, "tessera", "1", "10", "5", "3", "30000", NULL};
    db->conn = PQconnectdbParams(keys, vals, 1 /* expand dbname as a connection string */);
    if (!db->conn)
        abort();
    if (PQstatus(db->conn) != CONNECTION_OK) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db->conn));
        msg[strcspn(msg, "\n")] = '\0';
        drop_connection(db);
        db->broken = true;
        return ts_err_set(err, TS_EDB_BUSY, "database unreachable: %s", msg);
    }
    PQsetNoticeProcessor(db->conn, log_notice, NULL);
    /* Tessera's statements are short: at 10M instances (bench/scale with
     * auto_explain) JIT compiled a 3,954-study name-prefix C-FIND for 44 ms of
     * its 139, and starting parallel workers cost 20-40 ms of a 30 ms
     * /tools/find (8 ms without). Neither pays for itself here. */
    PGresult *res = PQexec(db->conn, "SET jit = off; SET max_parallel_workers_per_gather = 0");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db->conn));
        msg[strcspn(msg, "\n")] = '\0';
        PQclear(res);
        drop_connection(db);
        db->broken = true;
        return ts_err_set(err, TS_EDB_BUSY, "database session settings: %s", msg);
    }
    PQclear(res);
    return 0;
}

/* Classifies a failed result: conflicts and lost connections can be replayed. */
static int result_error(ts_db *db, PGresult *res, const char *what, ts_err *err)
{
    /* copied: the result is cleared before the message is written */
    char state_buf[8] = "";
    const char *field = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (field)
        snprintf(state_buf, sizeof(state_buf), "%s", field);
    const char *state = field ? state_buf : NULL;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn));
    msg[strcspn(msg, "\n")] = '\0';
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        db->retryable = true;
    if (PQstatus(db->conn) != CONNECTION_OK || (state && strncmp(state, "08", 2) == 0) ||
        (state && (strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
                   strcmp(state, "57P03") == 0))) {
        db->broken = true;
    }
    if (res)
        PQclear(res);
    return ts_err_set(err, TS_EDB, "%s: %s%s%s", what, msg, state ? " sqlstate=" : "",
                      state ? state : "");
}

static __thread long tl_round_trips;
/* statements run so far by the current TS_DB_READ_SINGLE transaction of this
 * thread, or -1 outside one */
static __thread int tl_single_statements = -1;

long ts_db_thread_round_trips(void)
{
    return tl_round_trips;
}

static int single_guard(ts_err *err)
{
    if (tl_single_statements < 0)
        return 0;
    if (tl_single_statements++ > 0)
        return ts_err_set(err, TS_EINVAL, "a single-statement read ran a second statement");
    return 0;
}

static bool is_prepared(ts_db *db, const ts_db_stmt *stmt)
{
    for (int i = 0; i < db->nprepared; i++)
        if (db->prepared[i] == stmt)
            return true;
    return false;
}

static int run_sql(ts_db *db, const char *sql, ts_err *err);

/* The BEGIN that attempt_once left for the first statement, on its own: for
 * statements that cannot share its pipeline. */
static int send_pending_begin(ts_db *db, ts_err *err)
{
    if (!db->begin)
        return 0;
    const char *begin = db->begin;
    db->begin = NULL;
    return run_sql(db, begin, err);
}

static int ensure_prepared(ts_db *db, const ts_db_stmt *stmt, ts_err *err)
{
    if (is_prepared(db, stmt))
        return 0;
    tl_round_trips++;
    PGresult *r = PQprepare(db->conn, stmt->name, stmt->sql, stmt->nparams, NULL);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        return result_error(db, r, stmt->name, err);
    PQclear(r);
    if (db->nprepared < MAX_PREPARED)
        db->prepared[db->nprepared++] = stmt;
    return 0;
}

int ts_db_exec(ts_db *db, const ts_db_stmt *stmt, const char *const *params, PGresult **res,
               ts_err *err)
{
    int rc = ts_db_send(db, stmt, params, err);
    if (rc) {
        if (res)
            *res = NULL;
        return rc;
    }
    return ts_db_receive(db, res, err);
}

int ts_db_send(ts_db *db, const ts_db_stmt *stmt, const char *const *params, ts_err *err)
{
    if (single_guard(err))
        return TS_EINVAL;
    if (db->sent)
        return ts_err_set(err, TS_EINVAL, "%s sent before the result of %s was received",
                          stmt->name, db->sent->name);
    int rc = ensure_prepared(db, stmt, err);
    if (rc)
        return rc;
    tl_round_trips++;
    if (db->begin) {
        /* BEGIN and the statement in one round trip (libpq's pipeline mode):
         * one wait for the server less in every write transaction */
        const char *begin = db->begin;
        db->begin = NULL;
        if (!PQenterPipelineMode(db->conn) ||
            !PQsendQueryParams(db->conn, begin, 0, NULL, NULL, NULL, NULL, 0) ||
            !PQsendQueryPrepared(db->conn, stmt->name, stmt->nparams, params, NULL, NULL, 0) ||
            !PQpipelineSync(db->conn)) {
            rc = result_error(db, NULL, stmt->name, err);
            db->broken = true; /* in an unknown pipeline state: start afresh */
            return rc;
        }
        db->pipelined = true;
    } else if (!PQsendQueryPrepared(db->conn, stmt->name, stmt->nparams, params, NULL, NULL, 0)) {
        return result_error(db, NULL, stmt->name, err);
    }
    db->sent = stmt;
    return 0;
}

/* Reads every result of what ts_db_send sent. Returns the statement's result,
 * or the first failure (a failed BEGIN's, then the statement's), or NULL when
 * the connection was lost. */
static PGresult *take_result(ts_db *db)
{
    PGresult *first = NULL;
    if (!db->pipelined) {
        first = PQgetResult(db->conn);
        PGresult *more;
        while ((more = PQgetResult(db->conn)) != NULL)
            PQclear(more);
        db->sent = NULL;
        return first;
    }
    /* BEGIN's result, NULL, the statement's, NULL, then the sync; after a
     * failure the rest come as PGRES_PIPELINE_ABORTED. A lost connection
     * gives NULLs only. */
    PGresult *failure = NULL;
    PGresult *r;
    int nulls = 0;
    int results = 0;
    while (nulls < 2) {
        r = PQgetResult(db->conn);
        if (!r) {
            if (PQstatus(db->conn) != CONNECTION_OK)
                break;
            nulls++;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        results++;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !failure)
            failure = r;
        else if (results == 2 && !failure)
            first = r;
        else
            PQclear(r);
    }
    db->sent = NULL;
    db->pipelined = false;
    if (!PQexitPipelineMode(db->conn))
        db->broken = true;
    if (failure) {
        if (first)
            PQclear(first);
        return failure;
    }
    return first;
}

int ts_db_receive(ts_db *db, PGresult **res, ts_err *err)
{
    if (res)
        *res = NULL;
    if (!db->sent)
        return ts_err_set(err, TS_EINVAL, "no statement in flight");
    const ts_db_stmt *stmt = db->sent;
    PGresult *r = take_result(db);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return result_error(db, r, stmt->name, err);
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

/* What a statement sent as text does first: refused inside a
 * TS_DB_READ_SINGLE transaction, the pending BEGIN sent, the round trip counted. */
static int begin_statement(ts_db *db, ts_err *err)
{
    if (single_guard(err))
        return TS_EINVAL;
    int rc = send_pending_begin(db, err);
    if (rc == 0)
        tl_round_trips++;
    return rc;
}

int ts_db_exec_params(ts_db *db, const char *sql, int nparams, const char *const *params,
                      PGresult **res, ts_err *err)
{
    if (res)
        *res = NULL;
    int rc = begin_statement(db, err);
    if (rc)
        return rc;
    PGresult *r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char what[64];
        snprintf(what, sizeof(what), "%.40s", sql);
        what[strcspn(what, "\n")] = '\0';
        return result_error(db, r, what, err);
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

int ts_db_exec_sql(ts_db *db, const char *sql, ts_err *err)
{
    int rc = send_pending_begin(db, err);
    if (rc)
        return rc;
    return run_sql(db, sql, err);
}

int ts_db_copy_in(ts_db *db, const char *sql, const char *data, size_t len, ts_err *err)
{
    int rc = begin_statement(db, err);
    if (rc)
        return rc;
    PGresult *r = PQexec(db->conn, sql);
    if (!r || PQresultStatus(r) != PGRES_COPY_IN)
        return result_error(db, r, "COPY", err);
    PQclear(r);
    /* the connection is blocking: PQputCopyData returns once it has the data
     * (in pieces below INT_MAX, its length's type) */
    const char *why = NULL;
    for (size_t off = 0; off < len && !why;) {
        size_t n = len - off < (1u << 30) ? len - off : (1u << 30);
        if (PQputCopyData(db->conn, data + off, (int)n) != 1)
            why = PQerrorMessage(db->conn);
        off += n;
    }
    if (PQputCopyEnd(db->conn, why) != 1)
        return result_error(db, NULL, "COPY end", err);
    r = PQgetResult(db->conn);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK) {
        rc = result_error(db, r, "COPY", err);
        while ((r = PQgetResult(db->conn)))
            PQclear(r);
        return rc;
    }
    PQclear(r);
    while ((r = PQgetResult(db->conn)))
        PQclear(r);
    return 0;
}

static int run_sql(ts_db *db, const char *sql, ts_err *err)
{
    tl_round_trips++;
    PGresult *r = PQexec(db->conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char what[64];
        snprintf(what, sizeof(what), "%.40s", sql);
        what[strcspn(what, "\n")] = '\0';
        return result_error(db, r, what, err);
    }
    PQclear(r);
    return 0;
}

static const char *begin_sql(const ts_db_pool *pool, ts_db_mode mode)
{
    if (mode == TS_DB_READ)
        return "BEGIN READ ONLY";
    if (mode == TS_DB_WRITE_READ_COMMITTED)
        return "BEGIN ISOLATION LEVEL READ COMMITTED";
    if (strcmp(pool->isolation, "serializable") == 0)
        return "BEGIN ISOLATION LEVEL SERIALIZABLE";
    if (strcmp(pool->isolation, "repeatable-read") == 0)
        return "BEGIN ISOLATION LEVEL REPEATABLE READ";
    return "BEGIN ISOLATION LEVEL READ COMMITTED";
}

static void sleep_before_replay(const ts_db_pool *pool, int attempt)
{
    /* 100 ms more at each attempt, plus up to half of the base as jitter so that
     * writers that collided once do not collide again in step. */
    unsigned seed = (unsigned)(time(NULL) ^ (uintptr_t)&attempt);
    long ms =
        (long)pool->opt.retry_base_ms * attempt + rand_r(&seed) % (pool->opt.retry_base_ms / 2 + 1);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int attempt_once(ts_db *db, ts_db_mode mode, ts_db_txn_fn fn, void *arg, ts_err *err)
{
    int rc = ensure_connected(db, err);
    if (rc)
        return rc;
    if (mode == TS_DB_READ_SINGLE) {
        tl_single_statements = 0;
        rc = fn(db, arg, err);
        tl_single_statements = -1;
        return rc;
    }
    /* sent with the first statement (ts_db_send pipelines the two) */
    db->begin = begin_sql(db->pool, mode);
    rc = fn(db, arg, err);
    if (db->sent) {
        /* fn gave up between ts_db_send and ts_db_receive: the connection
         * takes no other statement before that result is read */
        PGresult *r = take_result(db);
        if (r)
            PQclear(r);
        if (rc == 0)
            rc = ts_err_set(err, TS_EINVAL, "a statement's result was never received");
    }
    if (rc) {
        if (!db->broken && !db->begin) {
            ts_err ignored;
            bool retryable = db->retryable;
            ts_db_exec_sql(db, "ROLLBACK", &ignored);
            db->retryable = retryable;
        }
        db->begin = NULL;
        return rc;
    }
    if (db->begin) {
        db->begin = NULL; /* fn ran nothing: no transaction was opened */
        return 0;
    }
    rc = ts_db_exec_sql(db, "COMMIT", err);
    if (rc && db->broken)
        db->commit_in_doubt = true;
    return rc;
}

int ts_db_transaction(ts_db_pool *pool, ts_db_mode mode, ts_db_txn_fn fn, void *arg, ts_err *err)
{
    if (pool->reads && (mode == TS_DB_READ || mode == TS_DB_READ_SINGLE))
        pool = pool->reads;
    ts_db *db = acquire(pool);
    int rc = 0;
    db->commit_in_doubt = false;
    for (int attempt = 0;; attempt++) {
        ts_err_clear(err);
        rc = attempt_once(db, mode, fn, arg, err);
        if (rc == 0)
            break;
        bool replayable = db->retryable || db->broken;
        if (db->broken)
            drop_connection(db);
        if (!replayable) {
            /* A COMMIT sent earlier may have taken effect: whatever failed
             * since, the caller must not undo the work's side effects. */
            if (db->commit_in_doubt) {
                rc = TS_EDB_INDOUBT;
                if (err)
                    err->code = rc;
            }
            break;
        }
        if (attempt >= pool->opt.max_retries) {
            atomic_fetch_add(&pool->busy_failures, 1);
            ts_metric_inc(pool->m_busy);
            ts_warn("transaction given up", "attempts=%d error=\"%s\"", attempt + 1,
                    err ? err->msg : "");
            rc = ts_err_prefix(err, "database busy or unavailable after %d attempts", attempt + 1);
            if (err)
                err->code = TS_EDB_BUSY;
            rc = db->commit_in_doubt ? TS_EDB_INDOUBT : TS_EDB_BUSY;
            if (err)
                err->code = rc;
            break;
        }
        atomic_fetch_add(&pool->replays, 1);
        ts_metric_inc(pool->m_replays);
        ts_debug("replaying transaction", "attempt=%d error=\"%s\"", attempt + 1,
                 err ? err->msg : "");
        sleep_before_replay(pool, attempt + 1);
    }
    release(db);
    return rc;
}

typedef struct {
    const ts_db_stmt *stmt;
    const char *const *params;
    long rows;
} write_one_arg;

static int write_one_txn(ts_db *db, void *arg, ts_err *err)
{
    write_one_arg *a = arg;
    PGresult *res;
    int rc = ts_db_exec(db, a->stmt, a->params, &res, err);
    if (rc)
        return rc;
    a->rows = atol(PQcmdTuples(res));
    PQclear(res);
    return 0;
}

int ts_db_write_one(ts_db_pool *pool, const ts_db_stmt *stmt, const char *const *params, long *rows,
                    ts_err *err)
{
    write_one_arg a = {stmt, params, 0};
    int rc = ts_db_transaction(pool, TS_DB_WRITE, write_one_txn, &a, err);
    if (rows)
        *rows = rc ? 0 : a.rows;
    return rc;
}

int ts_db_with_conn(ts_db_pool *pool, ts_db_txn_fn fn, void *arg, ts_err *err)
{
    ts_db *db = acquire(pool);
    int rc = ensure_connected(db, err);
    if (rc == 0) {
        rc = fn(db, arg, err);
        if (db->broken)
            drop_connection(db);
    }
    release(db);
    return rc;
}
