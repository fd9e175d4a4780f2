#include "base/service.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"

#define TS_VERSION "0.1.0"

static char service_name[32] = "tessera";

const char *ts_service_name(void)
{
    return service_name;
}

const char *ts_service_version(void)
{
    return TS_VERSION;
}

void ts_service_init(const char *name, int argc, char **argv)
{
    /* glibc creates up to 8 arenas per core for threaded programs; with many
     * short-lived association threads that is where RSS goes. Bounded before
     * any thread exists, then set from TESSERA_MALLOC_ARENAS once the
     * configuration is read. */
    mallopt(M_ARENA_MAX, 4);
    snprintf(service_name, sizeof(service_name), "%s", name);
    ts_log_init(name, TS_LOG_INFO);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", name, TS_VERSION);
            exit(0);
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ts_err ignored;
            ts_config_load(NULL, &ignored);
            printf(
                "usage: %s\nEvery setting comes from the environment (or TESSERA_CONFIG_FILE):\n\n",
                name);
            ts_config_print(stdout);
            exit(0);
        }
        fprintf(stderr, "%s: unknown argument %s (try --help)\n", name, argv[i]);
        exit(2);
    }
    ts_err err;
    if (ts_config_load(NULL, &err)) {
        ts_error("bad configuration, stopping", "error=\"%s\"", err.msg);
        fprintf(stderr, "%s: configuration error: %s\n", name, err.msg);
        exit(2);
    }
    mallopt(M_ARENA_MAX, (int)ts_cfg_int(TESSERA_MALLOC_ARENAS));
}

typedef struct signal_waiter {
    sigset_t set;
    void (*on_stop)(void *);
    void *user;
} signal_waiter;

static void (*reload_fn)(void *);
static void *reload_user;

void ts_service_on_reload(void (*on_reload)(void *user), void *user)
{
    reload_user = user;
    __atomic_store_n(&reload_fn, on_reload, __ATOMIC_RELEASE);
}

static void *wait_for_signal(void *arg)
{
    signal_waiter *w = arg;
    int sig;
    while (sigwait(&w->set, &sig) == 0) {
        if (sig == SIGHUP) {
            void (*fn)(void *) = __atomic_load_n(&reload_fn, __ATOMIC_ACQUIRE);
            ts_info("reloading", "signal=SIGHUP what=%s", fn ? "files" : "nothing to reload");
            if (fn)
                fn(reload_user);
            continue;
        }
        ts_info("stopping", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        w->on_stop(w->user);
        break;
    }
    free(w);
    return NULL;
}

void ts_service_handle_signals(void (*on_stop)(void *user), void *user)
{
    signal_waiter *w = calloc(1, sizeof(*w));
    if (!w)
        abort();
    sigemptyset(&w->set);
    sigaddset(&w->set, SIGINT);
    sigaddset(&w->set, SIGTERM);
    sigaddset(&w->set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &w->set, NULL);
    signal(SIGPIPE, SIG_IGN);
    w->on_stop = on_stop;
    w->user = user;
    pthread_t t;
    pthread_create(&t, NULL, wait_for_signal, w);
    pthread_detach(t);
}

void ts_service_die(const char *step, const ts_err *err)
{
    ts_error("cannot start", "step=%s error=\"%s\"", step, err->msg);
    exit(1);
}

ts_metrics_server *ts_service_metrics(ts_health_fn health, void *user)
{
    int port = (int)ts_cfg_int(TESSERA_METRICS_PORT);
    ts_metrics_server *srv = NULL;
    ts_err err;
    if (port && ts_metrics_serve(port, health, user, &srv, &err))
        ts_service_die("metrics", &err);
    return srv;
}
