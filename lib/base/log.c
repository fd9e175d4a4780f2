#include "base/log.h"

#include <ctype.h>
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

/* Appends s to out (size bytes, n used) as a logfmt value. in_quotes: the
 * format already put quotes around it (key="%s"): quotes, backslashes and
 * control characters are escaped. Bare (key=%s): quoted when empty or holding
 * anything that would end the value or the line. Elsewhere: control
 * characters are escaped so that a value never breaks the line. */
/* A value that ts_log_quote() made: "...", with every inner quote and
 * backslash escaped and no control character. */
static bool already_quoted(const char *s)
{
    size_t len = strlen(s);
    if (len < 2 || s[0] != '"' || s[len - 1] != '"')
        return false;
    for (size_t i = 1; i + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"')
            return false;
        if (c == '\\' && ++i + 1 >= len)
            return false; /* a backslash escapes the closing quote */
    }
    return true;
}

static size_t put_value(char *out, size_t size, size_t n, const char *s, bool in_quotes, bool bare)
{
    bool quote = false;
    if (bare && already_quoted(s))
        bare = false; /* passes through: it has no control character */
    if (bare) {
        quote = !*s;
        for (const unsigned char *p = (const unsigned char *)s; *p && !quote; p++)
            quote = *p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f;
    }
    bool escape_quotes = in_quotes || quote;
    if (quote && n + 1 < size)
        out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 2 < size; p++) {
        unsigned char c = *p;
        if (escape_quotes && (c == '"' || c == '\\')) {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c == '\n' || c == '\r') {
            out[n++] = '\\';
            out[n++] = c == '\n' ? 'n' : 'r';
        } else if (c < 0x20 || c == 0x7f) {
            out[n++] = ' ';
        } else {
            out[n++] = (char)c;
        }
    }
    if (quote && n + 1 < size)
        out[n++] = '"';
    out[n < size ? n : size - 1] = '\0';
    return n;
}

/* vsnprintf for the key=value part, except that every %s value goes through
 * put_value(): a peer's AE title, a dcmtk error text or a file name can never
 * add a field or a line. Other conversions are formatted one at a time by
 * snprintf (the format is checked at compile time by the printf attribute). */
static size_t format_kv(char *out, size_t size, const char *fmt, va_list ap)
{
    size_t n = 0;
    const char *f = fmt;
    while (*f && n + 1 < size) {
        if (*f != '%') {
            out[n++] = *f++;
            continue;
        }
        if (f[1] == '%') {
            out[n++] = '%';
            f += 2;
            continue;
        }
        /* one conversion: %[flags][width][.precision][length]conv, '*' resolved */
        char spec[64];
        size_t k = 0;
        spec[k++] = *f++;
        while (*f && strchr("-+ #0", *f) && k < 20)
            spec[k++] = *f++;
        if (*f == '*') {
            k += (size_t)snprintf(spec + k, sizeof(spec) - k, "%d", va_arg(ap, int));
            f++;
        }
        while (isdigit((unsigned char)*f) && k < 40)
            spec[k++] = *f++;
        if (*f == '.') {
            spec[k++] = *f++;
            if (*f == '*') {
                k += (size_t)snprintf(spec + k, sizeof(spec) - k, "%d", va_arg(ap, int));
                f++;
            }
            while (isdigit((unsigned char)*f) && k < 56)
                spec[k++] = *f++;
        }
        char len[3] = "";
        size_t l = 0;
        while (*f && strchr("hlzjtL", *f) && l < 2)
            len[l++] = *f++;
        len[l] = '\0';
        char conv = *f ? *f++ : 's';
        memcpy(spec + k, len, l);
        k += l;
        spec[k++] = conv;
        spec[k] = '\0';
        char tmp[2048];
        int m = 0;
        switch (conv) {
        case 'd':
        case 'i':
            if (!strcmp(len, "ll"))
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long long));
            else if (!strcmp(len, "l") || !strcmp(len, "z") || !strcmp(len, "t") ||
                     !strcmp(len, "j"))
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long));
            else
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, int));
            break;
        case 'u':
        case 'x':
        case 'X':
        case 'o':
            if (!strcmp(len, "ll"))
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned long long));
            else if (!strcmp(len, "l") || !strcmp(len, "z") || !strcmp(len, "t") ||
                     !strcmp(len, "j"))
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned long));
            else
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned int));
            break;
        case 'c':
            m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, int));
            break;
        case 'p':
            m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, void *));
            break;
        case 'f':
        case 'F':
        case 'e':
        case 'E':
        case 'g':
        case 'G':
        case 'a':
        case 'A':
            if (!strcmp(len, "L"))
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long double));
            else
                m = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, double));
            break;
        case 's': {
            const char *v = va_arg(ap, const char *);
            m = snprintf(tmp, sizeof(tmp), spec, v ? v : "");
            if (m < 0)
                tmp[0] = '\0';
            bool in_quotes = n > 0 && out[n - 1] == '"' && *f == '"';
            bool bare = !in_quotes && n > 0 && out[n - 1] == '=';
            n = put_value(out, size, n, tmp, in_quotes, bare);
            continue;
        }
        default: /* not a conversion the attribute accepts: write it as it is */
            m = snprintf(tmp, sizeof(tmp), "%s", spec);
            break;
        }
        if (m < 0)
            continue;
        for (const char *t = tmp; *t && n + 1 < size; t++)
            out[n++] = *t;
    }
    out[n < size ? n : size - 1] = '\0';
    return n;
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
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level], log_service,
                     ts_log_quote(quoted, sizeof(quoted), msg));
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    if (kvfmt && *kvfmt && (size_t)n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, kvfmt);
        n += (int)format_kv(line + n, sizeof(line) - 1 - (size_t)n, kvfmt, ap);
        va_end(ap);
    }
    line[n++] = '\n';
    /* one write per line so that lines from several threads never interleave */
    fwrite(line, 1, (size_t)n, stderr);
}

void ts_log_external(void *cls, const char *fmt, va_list ap)
{
    if (!ts_log_enabled(TS_LOG_WARN))
        return;
    char text[1024];
    vsnprintf(text, sizeof(text), fmt, ap);
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    ts_log_write(TS_LOG_WARN, cls ? (const char *)cls : "library", "detail=\"%s\"", text);
}
