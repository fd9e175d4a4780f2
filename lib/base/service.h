/* What every service does at start and stop: bounded malloc arenas, the
 * configuration (a bad value stops the service with a message naming it),
 * logging, --help, SIGINT/SIGTERM turned into a callback on a thread, the
 * metrics and /health port, and stopping with a message when a step of the
 * start-up fails. The io half (database pool, migrations, storage area) is in
 * lib/io/service_io.h. A service's main() is these calls in this order:
 *   ts_service_init, ts_service_handle_signals, its own set-up (ts_service_die
 *   on a failure), ts_service_metrics, its loop. */
#ifndef TS_SERVICE_H
#define TS_SERVICE_H

#include "base/err.h"
#include "base/metrics.h"

/* Parses --help/--version, sets MALLOC_ARENA_MAX's equivalent, loads the
 * configuration and starts logging as `name`. Exits on a bad configuration. */
void ts_service_init(const char *name, int argc, char **argv);

/* The name given to ts_service_init ("tessera" before), and the version. */
const char *ts_service_name(void);
const char *ts_service_version(void);

/* Blocks SIGINT, SIGTERM and SIGHUP in this thread and the threads it creates
 * later, and starts a thread that calls on_stop(user) when SIGINT or SIGTERM
 * arrives, and the function given to ts_service_on_reload (if any) at each
 * SIGHUP (otherwise SIGHUP is logged and ignored). Call before creating any
 * other thread. */
void ts_service_handle_signals(void (*on_stop)(void *user), void *user);
/* What SIGHUP does: on_reload(user), on the signal thread. */
void ts_service_on_reload(void (*on_reload)(void *user), void *user);

/* Logs that the start-up step `step` failed with err, and exits with status 1. */
_Noreturn void ts_service_die(const char *step, const ts_err *err);

/* Serves /metrics and /health (health(user), may be NULL) on TESSERA_METRICS_PORT;
 * NULL when that is 0. Dies when the port cannot be served. The caller frees
 * the server with ts_metrics_server_free. */
ts_metrics_server *ts_service_metrics(ts_health_fn health, void *user);

#endif
