/* The io half of the service skeleton (lib/base/service.h): the database pool
 * with the migrations applied, the storage area, and the /health check that
 * pings the database. Each opener logs and exits on failure (ts_service_die):
 * it is meant for main() only. */
#ifndef TS_SERVICE_IO_H
#define TS_SERVICE_IO_H

#include <stdbool.h>
#include <stddef.h>

#include "base/metrics.h"
#include "io/db.h"
#include "io/heartbeat.h"
#include "io/store.h"

/* Opens the pool of opt (from ts_db_options_from_config, adjusted by the
 * caller) and waits up to 120 s for the migrations (applying them if this
 * process gets the lock). The caller frees the pool with ts_db_pool_free. */
ts_db_pool *ts_service_db(const ts_db_options *opt);

/* Opens the storage area at TESSERA_STORAGE_DIR. The caller frees it with
 * ts_store_free. */
ts_store *ts_service_store(void);

/* A ts_health_fn: healthy when a connection of the pool `pool` answers
 * SELECT 1 (tried twice, so that a connection left over from before a restart
 * of PostgreSQL does not count); otherwise writes the database's error to
 * reason. */
bool ts_service_db_health(void *pool, char *reason, size_t size);

/* Starts this process's heartbeat (io/heartbeat.h) as the service named at
 * ts_service_init, every TESSERA_HEARTBEAT_INTERVAL seconds, reporting
 * health(user) (the function given to ts_service_metrics). The caller stops
 * it with ts_heartbeat_stop before freeing the pool. */
ts_heartbeat *ts_service_heartbeat(ts_db_pool *pool, ts_health_fn health, void *user);

#endif
