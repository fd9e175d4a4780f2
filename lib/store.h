/* The storage area: files named by a random UUID under <root>/aa/bb/<uuid>,
 * written to a temporary name under <root>/tmp, fsynced, then renamed, so that
 * a file the index refers to is always complete. */
#ifndef TS_STORE_H
#define TS_STORE_H

#include <stddef.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_UUID_LEN 36

typedef struct ts_store ts_store;

/* Creates root and root/tmp if needed; fails if root is not writable. */
int ts_store_open(const char *root, ts_store **out, ts_err *err);
void ts_store_free(ts_store *st);

/* A fresh temporary path under root/tmp for a file being received. */
int ts_store_temp_path(ts_store *st, char *path, size_t size, ts_err *err);

/* Moves a complete temporary file into place: fsync, new uuid, rename into
 * aa/bb/<uuid>, fsync of the directory. On failure the temporary file is kept
 * (the caller removes it). TS_ENOSPACE when the disk is full. */
int ts_store_commit_file(ts_store *st, const char *temp_path, char uuid[TS_UUID_LEN + 1],
                         ts_err *err);

/* Writes a buffer as a new file (temporary name, fsync, rename). */
int ts_store_write(ts_store *st, const void *data, size_t len, char uuid[TS_UUID_LEN + 1],
                   ts_err *err);

/* The path of a stored file (it may not exist). Fails on a malformed uuid. */
int ts_store_path(const ts_store *st, const char *uuid, char *path, size_t size, ts_err *err);

/* Reads a whole stored file; the caller frees *data. TS_ENOTFOUND if absent. */
int ts_store_read(ts_store *st, const char *uuid, void **data, size_t *len, ts_err *err);

/* Removes a stored file; a file already gone counts as removed. */
int ts_store_remove(ts_store *st, const char *uuid, ts_err *err);

/* Removes temporary files not written to for max_age_s seconds: what a process
 * killed in the middle of a transfer left. */
int ts_store_sweep_temp(ts_store *st, int max_age_s, int *removed, ts_err *err);

/* Calls fn for every file under root/aa/bb/ (not tmp/): uuid is the file's
 * name, or NULL for a file that is not named like a stored file (wrong shape,
 * wrong directory, not a regular file). A non-zero return from fn stops the
 * walk and is returned. Files removed during the walk are skipped. */
struct stat;
typedef int (*ts_store_walk_fn)(void *user, const char *uuid, const char *path,
                                const struct stat *st);
int ts_store_walk(ts_store *st, ts_store_walk_fn fn, void *user, ts_err *err);

/* The root directory of the storage area. */
const char *ts_store_root(const ts_store *st);

#ifdef __cplusplus
}
#endif

#endif
