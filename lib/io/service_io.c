#include "io/service_io.h"

#include <stdio.h>

#include "base/config.h"
#include "base/service.h"
#include "io/migrate.h"

/* A service waits this long for PostgreSQL and for another process's
 * migrations at start (compose starts everything at once). */
#define MIGRATIONS_WAIT_S 120

ts_db_pool *ts_service_db(const ts_db_options *opt)
{
    ts_db_pool *pool = NULL;
    ts_err err;
    if (ts_db_pool_new(opt, &pool, &err))
        ts_service_die("database", &err);
    if (ts_db_migrate_wait(pool, MIGRATIONS_WAIT_S, &err))
        ts_service_die("migrations", &err);
    return pool;
}

ts_store *ts_service_store(void)
{
    ts_store *store = NULL;
    ts_err err;
    if (ts_store_open(ts_cfg_str(TESSERA_STORAGE_DIR), &store, &err))
        ts_service_die("storage", &err);
    return store;
}

static int ping(ts_db *db, void *arg, ts_err *err)
{
    (void)arg;
    return ts_db_exec_sql(db, "SELECT 1", err);
}

bool ts_service_db_health(void *pool, char *reason, size_t size)
{
    /* A connection opened before PostgreSQL restarted fails once and is dropped;
     * that says nothing of now, so a failure counts only when a second try,
     * on a fresh connection, fails too. */
    ts_err err;
    for (int attempt = 0; attempt < 2; attempt++)
        if (ts_db_with_conn(pool, ping, NULL, &err) == 0)
            return true;
    snprintf(reason, size, "%s", err.msg);
    return false;
}

ts_heartbeat *ts_service_heartbeat(ts_db_pool *pool, ts_health_fn health, void *user)
{
    ts_heartbeat *hb = NULL;
    ts_err err;
    if (ts_heartbeat_start(pool, ts_service_name(), ts_service_version(),
                           (int)ts_cfg_int(TESSERA_HEARTBEAT_INTERVAL), health, user, &hb, &err))
        ts_service_die("heartbeat", &err);
    return hb;
}
