/* The storage area: files named by a random UUID under <root>/aa/bb/<uuid>,
 * written to a temporary name under <root>/tmp, fsynced, then renamed, so that
 * a file the index refers to is always complete. */
#ifndef TS_STORE_H
#define TS_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

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

/* The path of a temporary file of this storage area given its name (the last
 * component of a ts_store_temp_path); TS_EINVAL for any other name, so that a
 * name received from the network cannot point elsewhere. */
int ts_store_temp_path_of(ts_store *st, const char *name, char *path, size_t size, ts_err *err);

/* Moves a complete temporary file into place: new uuid, rename to the intent
 * tmp/<uuid>.intent, hard link into aa/bb/<uuid>, fsync of the file and of
 * its directory. On failure the temporary file is kept (the caller removes it).
 * TS_ENOSPACE when the disk is full.
 *
 * The intent marks a file that is in place but may have no index row yet. The
 * writer must, inside the transaction that indexes the file, hold the file's
 * lock and check that the intent is still there (ts_store_hold in
 * store_index.h), and call ts_store_settle after the commit. A writer that dies
 * in between leaves the intent; ts_store_reclaim (store_index.h) later removes
 * the file if no row refers to it, so that a crash never leaves a file without
 * its row for good. */
int ts_store_commit_file(ts_store *st, const char *temp_path, char uuid[TS_UUID_LEN + 1],
                         ts_err *err);

/* ts_store_commit_file in two steps, so that a writer can run its index
 * statement while the disk syncs (ingest does): ts_store_place_file renames to
 * the intent and links into place, without any fsync; ts_store_sync_file
 * fsyncs the file and its directory. The index transaction must not commit
 * before ts_store_sync_file succeeded. A failed place keeps the temporary
 * file; after a failed sync the caller removes the file (ts_store_remove). */
int ts_store_place_file(ts_store *st, const char *temp_path, char uuid[TS_UUID_LEN + 1],
                        ts_err *err);
int ts_store_sync_file(ts_store *st, const char *uuid, ts_err *err);
/* ts_store_sync_file in two halves that may run at once on two threads: the
 * file (its data and inode), and its directory. Files placed one after the
 * other share a directory for a while, and an fsync of a directory that
 * another thread of the process has just started or is waiting for is shared:
 * the instances received at once cost one directory fsync between them. */
int ts_store_sync_data(ts_store *st, const char *uuid, ts_err *err);
int ts_store_sync_dir(ts_store *st, const char *uuid, ts_err *err);

/* ts_store_place_file for a file in memory: written once, straight under its
 * intent's name (no temporary file to rename), then linked into place; no
 * fsync (ts_store_sync_file follows, as after ts_store_place_file). On failure
 * nothing is left. With keep_fd, the file stays open on success and *keep_fd
 * (else -1) is for ts_store_sync_fd, which replaces ts_store_sync_data. */
int ts_store_place_data(ts_store *st, const void *data, size_t len, char uuid[TS_UUID_LEN + 1],
                        int *keep_fd, ts_err *err);
/* fsync of the file open as fd (its data and inode), then close (always). */
int ts_store_sync_fd(int fd, const char *uuid, ts_err *err);

/* Drops the intent of a file whose fate is decided (its row committed, or the
 * file removed). A missing intent is not an error. */
int ts_store_settle(ts_store *st, const char *uuid);
bool ts_store_has_intent(ts_store *st, const char *uuid);

/* Calls fn for the uuid of every intent not touched for min_age_s seconds. */
typedef int (*ts_store_intent_fn)(void *user, const char *uuid);
int ts_store_intents(ts_store *st, int min_age_s, ts_store_intent_fn fn, void *user, ts_err *err);

/* Writes a buffer as a new file (temporary name, fsync, rename). */
int ts_store_write(ts_store *st, const void *data, size_t len, char uuid[TS_UUID_LEN + 1],
                   ts_err *err);

/* The path of a stored file (it may not exist). Fails on a malformed uuid. */
int ts_store_path(const ts_store *st, const char *uuid, char *path, size_t size, ts_err *err);

/* Reads a whole stored file; the caller frees *data. TS_ENOTFOUND if absent. */
int ts_store_read(ts_store *st, const char *uuid, void **data, size_t *len, ts_err *err);

/* Removes a stored file and its intent; a file already gone counts as removed. */
int ts_store_remove(ts_store *st, const char *uuid, ts_err *err);

/* Creates the 65,536 aa/bb directories of the layout that do not exist yet,
 * fsyncs them and marks the tree prepared (a file in the root); from then on
 * no write makes a directory and no removal deletes one. On ext4 a new
 * directory is expensive (the allocator scans the block groups, and the new
 * entry needs its own fsync): in a young storage area, where nearly every file
 * lands in an aa/bb of its own, making it on the write path cost ingest about
 * 0.4 ms of CPU per instance. The tree takes about 1.5 s and, on ext4, 270 MB
 * (one 4 KB block per directory). Returns at once when the marker exists;
 * *created (may be NULL) receives how many directories this call made. */
int ts_store_prepare_tree(ts_store *st, int *created, ts_err *err);
bool ts_store_tree_prepared(ts_store *st);

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
