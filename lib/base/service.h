/* What every service does at start and stop: bounded malloc arenas, the
 * configuration (a bad value stops the service with a message naming it),
 * logging, --help, and SIGINT/SIGTERM turned into a callback on a thread. */
#ifndef TS_SERVICE_H
#define TS_SERVICE_H

/* Parses --help/--version, sets MALLOC_ARENA_MAX's equivalent, loads the
 * configuration and starts logging as `name`. Exits on a bad configuration. */
void ts_service_init(const char *name, int argc, char **argv);

/* Blocks SIGINT and SIGTERM in this thread and the threads it creates later,
 * and starts a thread that calls on_stop(user) when one arrives. Call before
 * creating any other thread. */
void ts_service_handle_signals(void (*on_stop)(void *user), void *user);

#endif
