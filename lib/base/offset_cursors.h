/* Keyset cursors behind Orthanc's offset paging.
 *
 * Orthanc's `GET /patients?since=N&limit=L` takes N as an offset into the
 * resources of a level in id order, so each page skips N rows: a client that
 * pages through ten million instances reads the index quadratically. A rest
 * process remembers, for the pages it answered, the id that ends each one
 * ("position N+L starts after id X") and answers the next page from there with
 * an index range (`id > X`), skipping only the distance from the nearest
 * remembered position. An entry holds the level's removal count at the time
 * (statistics_counters, db/migrations/0045): once a resource of the level has
 * been removed, positions may have moved and the entry is not used.
 *
 * One table per process, shared by its threads (a mutex); a fixed number of
 * entries per level, the least recently used replaced. Nothing is shared
 * between rest replicas: a client whose pages alternate between two replicas
 * finds, in each, the position two pages back, which costs one page of skip. */
#ifndef TS_OFFSET_CURSORS_H
#define TS_OFFSET_CURSORS_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TS_OFFSET_CURSOR_LEVELS 4
#define TS_OFFSET_CURSORS_PER_LEVEL 256

typedef struct ts_offset_cursor {
    long long position; /* the offset of the first resource after after_id */
    long long after_id;
    long long removals; /* the level's removal count when it was taken */
} ts_offset_cursor;

/* The remembered position nearest at or below `offset` for `level`; false
 * (and *out untouched) if there is none. */
bool ts_offset_cursor_find(int level, long long offset, ts_offset_cursor *out);

/* Remembers `c` for `level`, and forgets the level's entries taken at another
 * removal count (they can no longer be used). */
void ts_offset_cursor_put(int level, const ts_offset_cursor *c);

/* Forgets everything (tests). */
void ts_offset_cursor_reset(void);

#ifdef __cplusplus
}
#endif

#endif
