/* The change log's sequencer: changes are inserted without a Seq and numbered
 * after they commit (db/functions/changes.sql), so that /changes lists them in
 * commit order without holes. Writers nudge a sequencer thread after each
 * commit; it numbers in batches, and on its own every interval as well. */
#ifndef TS_CHANGES_H
#define TS_CHANGES_H

#include <stdbool.h>

#include "io/db.h"
#include "base/err.h"

/* Numbers the committed changes without a Seq now, in a transaction of its own.
 * With wait false (writers' sequencers) it returns at once when another process
 * is numbering; with wait true (a reader of /changes) it waits for that pass
 * and numbers what is left, so that every change committed before the call is
 * numbered when it returns. *numbered (may be NULL) receives how many it
 * numbered. */
int ts_changes_sequence(ts_db_pool *pool, bool wait, long *numbered, ts_err *err);

/* The change log's retention (TESSERA_CHANGES_RETENTION_DAYS, run by the
 * deleters): removes up to batch of the oldest numbered changes older than
 * days. Never a change the router has not dispatched yet (router_cursor), so
 * routing and Stable* forwarding lose nothing; /changes' Last stays the newest
 * Seq given. Looks at batch rows at most, whatever the log's size.
 * With days < 0, removes every dispatched change at once (DELETE /changes). */
int ts_changes_prune(ts_db_pool *pool, int days, int batch, long *deleted, ts_err *err);

typedef struct ts_change_sequencer ts_change_sequencer;

/* Starts the thread; it runs after each nudge and every interval_ms. */
int ts_change_sequencer_start(ts_db_pool *pool, int interval_ms, ts_change_sequencer **out,
                              ts_err *err);
void ts_change_sequencer_nudge(ts_change_sequencer *s);
/* Runs a last pass and stops. Accepts NULL. */
void ts_change_sequencer_stop(ts_change_sequencer *s);

#endif
