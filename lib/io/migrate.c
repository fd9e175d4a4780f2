#include "io/migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"

/* Any constant will do; it only has to be the same in every service. */
#define MIGRATION_LOCK_KEY "7365726173736574" /* "tessera" reversed, in hex */

static const ts_db_stmt is_applied = {"migrate_is_applied",
                                      "SELECT 1 FROM schema_migrations WHERE name = $1", 1};
static const ts_db_stmt record = {"migrate_record",
                                  "INSERT INTO schema_migrations (name) VALUES ($1)", 1};
static const ts_db_stmt function_current = {
    "migrate_function_current", "SELECT 1 FROM schema_functions WHERE name = $1 AND md5 = md5($2)",
    2};
static const ts_db_stmt function_record = {
    "migrate_function_record",
    "INSERT INTO schema_functions (name, md5) VALUES ($1, md5($2))"
    " ON CONFLICT (name) DO UPDATE SET md5 = excluded.md5, applied_at = now()",
    2};

/* Re-applies each function file whose text changed since it was last applied. */
static int apply_functions(ts_db *db, ts_err *err)
{
    int rc = ts_db_exec_sql(db,
                            "CREATE TABLE IF NOT EXISTS schema_functions ("
                            " name text PRIMARY KEY, md5 text NOT NULL,"
                            " applied_at timestamptz NOT NULL DEFAULT now())",
                            err);
    if (rc)
        return rc;
    for (size_t i = 0; i < ts_functions_count; i++) {
        const ts_migration *f = &ts_functions[i];
        const char *params[] = {f->name, f->sql};
        PGresult *res;
        if ((rc = ts_db_exec(db, &function_current, params, &res, err)))
            return rc;
        int current = PQntuples(res);
        PQclear(res);
        if (current)
            continue;
        if ((rc = ts_db_exec_sql(db, "BEGIN", err)))
            return rc;
        if ((rc = ts_db_exec_sql(db, f->sql, err)) ||
            (rc = ts_db_exec(db, &function_record, params, NULL, err))) {
            ts_err ignored;
            ts_db_exec_sql(db, "ROLLBACK", &ignored);
            return ts_err_prefix(err, "functions %s", f->name);
        }
        if ((rc = ts_db_exec_sql(db, "COMMIT", err)))
            return ts_err_prefix(err, "functions %s", f->name);
        ts_info("functions applied", "name=%s", f->name);
    }
    return 0;
}

static int migrate_locked(ts_db *db, int *applied, ts_err *err)
{
    int rc = ts_db_exec_sql(db,
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " name text PRIMARY KEY,"
                            " applied_at timestamptz NOT NULL DEFAULT now())",
                            err);
    if (rc)
        return rc;
    for (size_t i = 0; i < ts_migrations_count; i++) {
        const ts_migration *m = &ts_migrations[i];
        const char *params[] = {m->name};
        PGresult *res;
        rc = ts_db_exec(db, &is_applied, params, &res, err);
        if (rc)
            return rc;
        int done = PQntuples(res);
        PQclear(res);
        if (done)
            continue;
        /* Each migration and its record commit together, or not at all. */
        if ((rc = ts_db_exec_sql(db, "BEGIN", err)))
            return rc;
        if ((rc = ts_db_exec_sql(db, m->sql, err)) ||
            (rc = ts_db_exec(db, &record, params, NULL, err))) {
            ts_err ignored;
            ts_db_exec_sql(db, "ROLLBACK", &ignored);
            return ts_err_prefix(err, "migration %s", m->name);
        }
        if ((rc = ts_db_exec_sql(db, "COMMIT", err)))
            return ts_err_prefix(err, "migration %s", m->name);
        ts_info("migration applied", "name=%s", m->name);
        (*applied)++;
    }
    return apply_functions(db, err);
}

static int migrate_fn(ts_db *db, void *arg, ts_err *err)
{
    int *applied = arg;
    /* A session lock: two services starting at once apply each migration once;
     * the second waits here and then finds everything recorded. */
    int rc = ts_db_exec_sql(db, "SELECT pg_advisory_lock(x'" MIGRATION_LOCK_KEY "'::bigint)", err);
    if (rc)
        return rc;
    rc = migrate_locked(db, applied, err);
    ts_err ignored;
    ts_db_exec_sql(db, "SELECT pg_advisory_unlock(x'" MIGRATION_LOCK_KEY "'::bigint)", &ignored);
    return rc;
}

int ts_db_migrate(ts_db_pool *pool, int *applied, ts_err *err)
{
    int count = 0;
    int rc = ts_db_with_conn(pool, migrate_fn, &count, err);
    if (applied)
        *applied = count;
    return rc;
}

int ts_db_migrate_wait(ts_db_pool *pool, int timeout_s, ts_err *err)
{
    time_t deadline = time(NULL) + timeout_s;
    for (;;) {
        int rc = ts_db_migrate(pool, NULL, err);
        if (rc == 0 || rc != TS_EDB_BUSY || time(NULL) >= deadline)
            return rc;
        ts_warn("database not ready, retrying", "error=\"%s\"", err->msg);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
}
