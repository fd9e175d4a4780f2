/* The database: a libpq pool (one connection per worker thread, prepared
 * statements), read-only and read-write transactions (read-only ones on a read
 * replica when the pool is given one), and the one place that
 * replays a transaction that failed with SQLSTATE 40001 (serialization failure)
 * or 40P01 (deadlock), or lost its connection: attempt k waits 100 ms * k plus
 * jitter; past the configured count the caller gets TS_EDB_BUSY (HTTP 503,
 * DICOM 0xA700), or TS_EDB_INDOUBT whenever a COMMIT was sent and its answer
 * lost and no later attempt succeeded (the work may have been done), whatever
 * the last attempt's error was. Connections are re-established by themselves. */
#ifndef TS_DB_H
#define TS_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "base/err.h"

typedef struct ts_db_pool ts_db_pool;
typedef struct ts_db ts_db; /* one pooled connection, lent to a transaction */

/* TS_DB_WRITE uses TESSERA_DB_ISOLATION; TS_DB_WRITE_READ_COMMITTED is for work
 * that must see rows committed after it began (the change sequencer; deletions,
 * which read the subtree after locking its root: db/functions/delete.sql).
 * TS_DB_READ_SINGLE is a read of exactly one statement, sent without BEGIN and
 * COMMIT: one network round trip (a single statement is atomic and sees one
 * snapshot by itself). A second statement in it is refused (TS_EINVAL). */
typedef enum { TS_DB_READ, TS_DB_WRITE, TS_DB_WRITE_READ_COMMITTED, TS_DB_READ_SINGLE } ts_db_mode;

typedef struct ts_db_options {
    const char *conninfo; /* libpq connection string */
    /* Where TS_DB_READ and TS_DB_READ_SINGLE transactions go, over connections
     * of their own (`size` more): a read replica, so they may see the index a
     * moment behind the primary. NULL or "": the primary. Services opt in
     * (TESSERA_DB_READ_URL) where a slightly stale read is harmless: it is not
     * filled by ts_db_options_from_config. */
    const char *read_conninfo;
    int size;              /* connections */
    int max_retries;       /* replays after the first attempt */
    const char *isolation; /* "read-committed", "repeatable-read", "serializable" */
    int connect_timeout_s;
    int retry_base_ms; /* 100 unless a test wants it faster */
} ts_db_options;

/* Fills options from the configuration (TESSERA_DB_*). */
void ts_db_options_from_config(ts_db_options *opt);

/* Creates the pool; connections are opened when first needed. */
int ts_db_pool_new(const ts_db_options *opt, ts_db_pool **out, ts_err *err);
void ts_db_pool_free(ts_db_pool *pool);

/* A statement prepared once per connection, on first use. Statements are
 * static objects: their address identifies them. */
typedef struct ts_db_stmt {
    const char *name;
    const char *sql;
    int nparams;
} ts_db_stmt;

/* The body of a transaction. It may run several times (replays), so it must
 * not have effects outside the database, and must return the code of
 * ts_db_exec's failure unchanged so that replays are recognised. */
typedef int (*ts_db_txn_fn)(ts_db *db, void *arg, ts_err *err);

/* Runs fn in a transaction (READ ONLY for TS_DB_READ), commits, and replays on
 * conflicts and lost connections as described above. */
int ts_db_transaction(ts_db_pool *pool, ts_db_mode mode, ts_db_txn_fn fn, void *arg, ts_err *err);

/* One statement in a write transaction of its own (replayed as above);
 * *rows (may be NULL) receives the rows it changed, 0 on failure. */
int ts_db_write_one(ts_db_pool *pool, const ts_db_stmt *stmt, const char *const *params, long *rows,
                    ts_err *err);

/* Runs fn with a connection outside any transaction (migrations, locks). No
 * replay. */
int ts_db_with_conn(ts_db_pool *pool, ts_db_txn_fn fn, void *arg, ts_err *err);

/* Executes a prepared statement with text parameters (NULL entries are SQL
 * NULL). On success *res (if res is not NULL) holds the result, which the
 * caller PQclear()s. */
int ts_db_exec(ts_db *db, const ts_db_stmt *stmt, const char *const *params, PGresult **res,
               ts_err *err);

/* ts_db_exec in two halves, for a caller with other work to do while the
 * statement runs: ts_db_send sends it (preparing it first when needed), and
 * ts_db_receive waits for its result, with ts_db_exec's result and errors. One
 * statement in flight per connection; the transaction fn must receive what it
 * sent before it returns (if it does not, ts_db_transaction discards the
 * result and fails the attempt). */
int ts_db_send(ts_db *db, const ts_db_stmt *stmt, const char *const *params, ts_err *err);
int ts_db_receive(ts_db *db, PGresult **res, ts_err *err);

/* Executes SQL text built at run time (not prepared: planned with the values)
 * with nparams text parameters ($1..$n). Same result and errors as ts_db_exec. */
int ts_db_exec_params(ts_db *db, const char *sql, int nparams, const char *const *params,
                      PGresult **res, ts_err *err);

/* Executes SQL text without parameters (schema changes, SET, locks). */
int ts_db_exec_sql(ts_db *db, const char *sql, ts_err *err);

/* Runs "COPY ... FROM STDIN" (sql) with data, len bytes in COPY's text format
 * (one line a row, columns separated by tabs, \ \t \n \r escaped): the
 * cheapest way to append many rows (no statement planned, no arrays unpacked). */
int ts_db_copy_in(ts_db *db, const char *sql, const char *data, size_t len, ts_err *err);

/* Network round trips to PostgreSQL made by the calling thread so far
 * (statements, BEGIN/COMMIT, first-use PREPAREs): a route's cost, counted by
 * the REST service per route. */
long ts_db_thread_round_trips(void);

/* Replays so far and transactions given up, for metrics and tests. */
long ts_db_pool_replays(const ts_db_pool *pool);
long ts_db_pool_busy_failures(const ts_db_pool *pool);

#endif
