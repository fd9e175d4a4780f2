/* What every service does at start and stop: bounded malloc arenas, the
 * configuration (a bad value stops the service with a message naming it),
 * logging, --help, and SIGINT/SIGTERM turned into a callback on a thread. */
#ifndef TS_SERVICE_H
#define TS_SERVICE_H

/* Parses --help/--version, sets MALLOC_ARENA_MAX's equivalent, loads the
 * configuration and starts logging as `name`. Exits on a bad configuration. */
void ts_service_init(const char *name, int argc, char **argv);

/* Blocks SIGINT, SIGTERM and SIGHUP in this thread and the threads it creates
 * later, and starts a thread that calls on_stop(user) when SIGINT or SIGTERM
 * arrives, and the function given to ts_service_on_reload (if any) at each
 * SIGHUP (otherwise SIGHUP is logged and ignored). Call before creating any
 * other thread. */
void ts_service_handle_signals(void (*on_stop)(void *user), void *user);
/* What SIGHUP does: on_reload(user), on the signal thread. */
void ts_service_on_reload(void (*on_reload)(void *user), void *user);

#endif
