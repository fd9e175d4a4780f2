/* Schema migrations: db/migrations/NNNN_name.sql, compiled into the binary,
 * applied in order at start under an advisory lock and recorded in
 * schema_migrations, so that services starting at once apply each one once.
 * Then the files of db/functions (CREATE OR REPLACE of the SQL functions), each
 * re-applied when its text differs from the one recorded in schema_functions:
 * a function is changed by editing its file, not by copying it into a new
 * migration. */
#ifndef TS_MIGRATE_H
#define TS_MIGRATE_H

#include <stddef.h>

#include "io/db.h"

typedef struct ts_migration {
    const char *name; /* file name, e.g. "0001_index.sql" */
    const char *sql;
} ts_migration;

extern const ts_migration ts_migrations[];
extern const size_t ts_migrations_count;
extern const ts_migration ts_functions[];
extern const size_t ts_functions_count;

/* Applies the migrations not yet recorded, then the function files that
 * changed. *applied (may be NULL) receives how many migrations this call applied. */
int ts_db_migrate(ts_db_pool *pool, int *applied, ts_err *err);

/* Calls ts_db_migrate until the database answers (a service may start before
 * PostgreSQL does), logging each failure; gives up after timeout_s. */
int ts_db_migrate_wait(ts_db_pool *pool, int timeout_s, ts_err *err);

#endif
