#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static const char *log_service = "tessera";
static ts_log_level log_min_level = TS_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ts_log_init(const char *service, ts_log_level level)
{
    log_service = service;
    log_min_level = level;
}

void ts_log_set_level(ts_log_level level)
{
    log_min_level = level;
}

bool ts_log_enabled(ts_log_level level)
{
    return level >= log_min_level;
}

bool ts_log_level_parse(const char *name, ts_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (ts_log_level)i;
            return true;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = TS_LOG_WARN;
        return true;
    }
    return false;
}

const char *ts_log_quote(char *buf, unsigned size, const char *s)
{
    unsigned n = 0;
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[n++] = '"';
    for (; s && *s && n + 3 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else if (c < 0x20) {
            buf[n++] = ' ';
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

void ts_log_write(ts_log_level level, const char *msg, const char *kvfmt, ...)
{
    char line[4096];
    char quoted[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s svc=%s msg=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), level_names[level], log_service,
                     ts_log_quote(quoted, sizeof(quoted), msg));
    if (kvfmt && n > 0 && (size_t)n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, kvfmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, kvfmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* one write per line so that lines from several threads never interleave */
    fwrite(line, 1, (size_t)n, stderr);
}
