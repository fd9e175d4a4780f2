/* Logging: one logfmt line per event on stderr
 * (ts=... level=info svc=ingest msg="stored instance" key=value ...).
 * The macros test the level before evaluating their arguments. */
#ifndef TS_LOG_H
#define TS_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TS_LOG_DEBUG = 0, TS_LOG_INFO, TS_LOG_WARN, TS_LOG_ERROR } ts_log_level;

/* Sets the service name written as svc= and the minimum level. */
void ts_log_init(const char *service, ts_log_level level);
void ts_log_set_level(ts_log_level level);
bool ts_log_enabled(ts_log_level level);
/* "debug", "info", "warn", "error" -> level; false if the name is unknown. */
bool ts_log_level_parse(const char *name, ts_log_level *out);

/* msg is quoted for logfmt; kvfmt (may be NULL) appends raw key=value pairs.
 * Values that may hold spaces or quotes go through ts_log_quote(). */
void ts_log_write(ts_log_level level, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A printf-style log callback for a library that takes one (libmicrohttpd's
 * MHD_OPTION_EXTERNAL_LOGGER): a warning whose msg is cls (a string naming the
 * source, e.g. "http server") and whose detail= is the library's text, so that
 * every line stays logfmt. */
void ts_log_external(void *cls, const char *fmt, va_list ap);

/* Quotes s for logfmt into buf (always NUL-terminated); returns buf. */
const char *ts_log_quote(char *buf, unsigned size, const char *s);

#define ts_log_(lvl, ...)                                                                          \
    do {                                                                                           \
        if (ts_log_enabled(lvl))                                                                   \
            ts_log_write(lvl, __VA_ARGS__);                                                        \
    } while (0)
#define ts_debug(...) ts_log_(TS_LOG_DEBUG, __VA_ARGS__)
#define ts_info(...) ts_log_(TS_LOG_INFO, __VA_ARGS__)
#define ts_warn(...) ts_log_(TS_LOG_WARN, __VA_ARGS__)
#define ts_error(...) ts_log_(TS_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
