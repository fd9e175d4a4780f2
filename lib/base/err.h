/* Errors: a code the caller can branch on and a message a person can act on.
 * Functions that can fail return 0 or a negative TS_E* code and fill a ts_err. */
#ifndef TS_ERR_H
#define TS_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TS_OK = 0,
    TS_EINVAL = -1, /* bad argument or input */
    TS_EIO = -2,    /* file system or socket */
    TS_ENOTFOUND = -3,
    TS_EEXIST = -4,
    TS_EDICOM = -5,    /* input is not usable DICOM */
    TS_EDB = -6,       /* database error that replaying will not fix */
    TS_EDB_BUSY = -7,  /* conflicts outlasted the replays, or the database is unreachable:
                          HTTP 503, DICOM 0xA700 */
    TS_ECONFLICT = -8, /* revision mismatch */
    TS_ETIMEOUT = -9,
    TS_EBUS = -10,
    TS_ETOOBIG = -11,
    TS_ENOSPACE = -12, /* storage area full */
    TS_ECANCELED = -13,
    TS_EDB_INDOUBT = -14,  /* like TS_EDB_BUSY, but a COMMIT was sent and its answer lost:
                              the transaction may have taken effect */
    TS_EUNSUPPORTED = -15, /* valid request, but no codec or conversion for it (HTTP 415 or
                              400, DICOM 0xA900) */
};

typedef struct ts_err {
    int code;
    char msg[512];
} ts_err;

/* Fills err (which may be NULL) and returns code, so that a failure site reads
 * `return ts_err_set(err, TS_EIO, "open %s: %s", path, strerror(errno));`. */
int ts_err_set(ts_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with more context ("store instance: " + msg). */
int ts_err_prefix(ts_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void ts_err_clear(ts_err *err);

/* The name of a code, for logs ("db_busy"). */
const char *ts_err_name(int code);

#ifdef __cplusplus
}
#endif

#endif
