/* Each service process's heartbeat in the database, so that one place (GET
 * /tessera/services, the UI's system page) sees every process of every
 * service, however many replicas run and on whichever hosts. A process writes
 * its row (service, version, host, pid, whether its /health check passes) at
 * start and then every TESSERA_HEARTBEAT_INTERVAL seconds from a thread of its
 * own, and marks it stopped at a clean stop. Liveness is judged with the
 * database's clock: a row not refreshed for three intervals is "down" (killed
 * with -9, hung, or unable to reach PostgreSQL). Rows of processes gone for a
 * day are removed. Table: db/migrations/0034_service_heartbeats.sql. */
#ifndef TS_HEARTBEAT_H
#define TS_HEARTBEAT_H

#include <jansson.h>

#include "base/err.h"
#include "base/metrics.h"
#include "io/db.h"

typedef struct ts_heartbeat ts_heartbeat;

/* Writes the first heartbeat of service `service` (synchronously: the process
 * is listed when this returns) and starts the thread that writes the next ones
 * every interval_s seconds. health(user) (may be NULL: always healthy) is asked
 * at each beat. */
int ts_heartbeat_start(ts_db_pool *pool, const char *service, const char *version, int interval_s,
                       ts_health_fn health, void *user, ts_heartbeat **out, ts_err *err);

/* Stops the thread and marks the row stopped (best effort). NULL is a no-op. */
void ts_heartbeat_stop(ts_heartbeat *hb);

/* Every process's row as a JSON array, ordered by service, host and pid:
 * {"Service", "Version", "Host", "Pid", "StartedAt", "LastSeen" (ISO 8601 UTC),
 * "SecondsSinceLastSeen", "IntervalSeconds", "State" ("up", "down" or
 * "stopped"), "Healthy", "Reason"}. */
int ts_heartbeat_list(ts_db_pool *pool, json_t **out, ts_err *err);

#endif
