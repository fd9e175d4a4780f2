/* The agreement between the storage area and the index that keeps a crash
 * from leaving a file without its row for good.
 *
 * A writer puts a file in place with an intent (ts_store_commit_file, or
 * ts_store_place_file and then ts_store_sync_file before the commit, as ingest
 * does). In the transaction that indexes it, the writer calls ts_store_hold first: it takes
 * the file's advisory lock (held until the transaction ends) and checks that
 * the intent is still there (ingest's store function takes the lock itself,
 * and ingest checks the intent after it, before the commit: what matters is
 * that the check happens under the lock); after the commit it drops the intent
 * (ts_store_settle). ts_store_reclaim, run by the deleters, looks at intents
 * older than a grace period: under the same lock (tried, never waited for) it
 * drops the intent when a row refers to the file, and otherwise removes the
 * file and the intent. A writer that was only slow then finds its intent gone
 * and fails its transaction instead of indexing a removed file. */
#ifndef TS_STORE_INDEX_H
#define TS_STORE_INDEX_H

#include "io/db.h"
#include "io/store.h"

/* Inside the writer's transaction, before the row is written. TS_ENOTFOUND
 * (not replayed) when the file was reclaimed meanwhile. */
int ts_store_hold(ts_db *db, ts_store *st, const char *uuid, ts_err *err);

/* The second half of ts_store_hold, for a writer whose own statement took the
 * file's lock (tessera_store_instance does, first thing): call it after that
 * statement and before the commit. TS_ENOTFOUND when the file was reclaimed. */
int ts_store_check_intent(ts_store *st, const char *uuid, ts_err *err);

/* Settles the intents older than min_age_s. Counts what it did. */
int ts_store_reclaim(ts_db_pool *pool, ts_store *st, int min_age_s, int *settled, int *removed,
                     ts_err *err);

#endif
