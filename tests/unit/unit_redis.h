/* For the unit tests that need Redis: a redis-server of their own on a unix
 * socket in a temporary directory, which a test can stop and start again (a
 * restart). Header-only (static functions), included by the test programs that
 * use it; they skip (exit 77) when unit_redis_available() is false. */
#ifndef TS_UNIT_REDIS_H
#define TS_UNIT_REDIS_H

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool unit_redis_available(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") == 0)
        return true;
    fprintf(stderr, "redis-server missing: skipped\n");
    return false;
}

static char redis_dir[64];
static char redis_sock[128];
static char redis_url[160];
static pid_t redis_pid;

static void unit_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* redis-server on the unix socket redis_sock; 0 once it listens. */
static int unit_redis_run(void)
{
    unlink(redis_sock);
    redis_pid = fork();
    if (redis_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no stray server if the test dies */
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", redis_sock, "--dir",
               redis_dir, "--save", "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        struct stat sb;
        if (stat(redis_sock, &sb) == 0)
            return 0;
        int status;
        if (waitpid(redis_pid, &status, WNOHANG) == redis_pid)
            return -1;
        unit_sleep_ms(50);
    }
    return -1;
}

static void unit_redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
    redis_pid = 0;
}

static int unit_redis_start(void **state)
{
    (void)state;
    snprintf(redis_dir, sizeof(redis_dir), "/tmp/ts-redis-XXXXXX");
    if (!mkdtemp(redis_dir))
        return -1;
    snprintf(redis_sock, sizeof(redis_sock), "%s/redis.sock", redis_dir);
    snprintf(redis_url, sizeof(redis_url), "unix://%s", redis_sock);
    return unit_redis_run();
}

static int unit_redis_stop(void **state)
{
    (void)state;
    unit_redis_kill();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", redis_dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
