/* ZIP archives of DICOM resources in Orthanc 1.10.1's layout, made while they
 * are read: what REST streams (GET /{level}/{id}/archive, synchronous
 * POST .../archive and /tools/create-archive) and what the Archive job writes
 * to the storage area. It owns the list of files (one query) and libarchive's
 * writer; memory is the list (~100 bytes an instance) plus one chunk. */
#ifndef TS_ARCHIVE_H
#define TS_ARCHIVE_H

#include <stddef.h>

#include "io/db.h"
#include "base/err.h"
#include "io/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_archive ts_archive;

/* Lists the files under resources (public ids; a resource given twice, or
 * within another one given, counts once) in one read transaction. level: the
 * level every id must have (0 patient .. 2 series), or -1 for any level
 * (instances included). TS_ENOTFOUND when an id is unknown (or of another
 * level). log_id names the archive in logs. */
int ts_archive_new(ts_db_pool *db, ts_store *store, const char *const *ids, size_t n, int level,
                   const char *log_id, ts_archive **out, ts_err *err);
void ts_archive_free(ts_archive *a);

/* What the archive holds: instances and the bytes of their files. */
size_t ts_archive_instances(const ts_archive *a);
long long ts_archive_uncompressed_size(const ts_archive *a);
/* Instances whose files are written so far (for progress), bytes produced so far. */
size_t ts_archive_files_done(const ts_archive *a);
long long ts_archive_bytes_out(const ts_archive *a);

/* The next piece of the ZIP: 1 with *data and *len set (valid until the next
 * call), 0 at the end, or a negative code (the archive cannot be completed: a
 * file unreadable or of the wrong size). A file deleted since the listing is
 * left out. */
int ts_archive_next(ts_archive *a, const void **data, size_t *len, ts_err *err);

/* The ZIP of the Archive job job_id (a job id: a UUID) in the storage area,
 * readable by every process: <root>/jobs/<job_id>.zip. The folder is made on
 * first use. The job's worker writes <job_id>.zip.<suffix>.part and renames it
 * when complete. */
#define TS_ARCHIVE_JOBS_DIR "jobs"
int ts_archive_job_path(const ts_store *st, const char *job_id, const char *suffix, char *path,
                        size_t size, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
