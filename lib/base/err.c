#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ts_err_set(ts_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

int ts_err_prefix(ts_err *err, const char *fmt, ...)
{
    if (!err)
        return TS_EINVAL;
    char prefix[256];
    char old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* prefix + ": " + old, cut to fit */
    size_t np = strnlen(prefix, sizeof(prefix));
    size_t cap = sizeof(err->msg) - 1;
    size_t n = 0;
    memcpy(err->msg, prefix, np < cap ? np : cap);
    n = np < cap ? np : cap;
    if (n + 2 <= cap) {
        memcpy(err->msg + n, ": ", 2);
        n += 2;
    }
    size_t no = strnlen(old, sizeof(old));
    if (no > cap - n)
        no = cap - n;
    memcpy(err->msg + n, old, no);
    err->msg[n + no] = '\0';
    return err->code;
}

void ts_err_clear(ts_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *ts_err_name(int code)
{
    switch (code) {
    case TS_OK:
        return "ok";
    case TS_EINVAL:
        return "invalid";
    case TS_EIO:
        return "io";
    case TS_ENOTFOUND:
        return "not_found";
    case TS_EEXIST:
        return "exists";
    case TS_EDICOM:
        return "bad_dicom";
    case TS_EDB:
        return "db";
    case TS_EDB_BUSY:
        return "db_busy";
    case TS_ECONFLICT:
        return "conflict";
    case TS_ETIMEOUT:
        return "timeout";
    case TS_EBUS:
        return "bus";
    case TS_ETOOBIG:
        return "too_big";
    case TS_ENOSPACE:
        return "no_space";
    case TS_ECANCELED:
        return "canceled";
    case TS_EDB_INDOUBT:
        return "db_in_doubt";
    case TS_EUNSUPPORTED:
        return "unsupported";
    default:
        return "unknown";
    }
}
