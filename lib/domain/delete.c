/* Deletion of one resource (see delete.h). */
#include "domain/delete.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ts_db_stmt level_of = {"ts_delete_level_of",
                                    "SELECT level FROM resources WHERE public_id = $1", 1};

static const ts_db_stmt delete_resource = {"ts_delete_resource",
                                           "SELECT status, remaining_level, remaining_id, removed "
                                           "FROM tessera_delete_resource($1, $2::smallint)",
                                           2};

typedef struct delete_call {
    const char *public_id;
    int level;
    int result;
    ts_deleted out;
} delete_call;

static int delete_txn(ts_db *db, void *arg, ts_err *err)
{
    delete_call *d = arg;
    const char *id_params[] = {d->public_id};
    PGresult *res = NULL;
    int rc;
    int level = d->level;
    d->result = 0;
    if (level < 0) {
        rc = ts_db_exec(db, &level_of, id_params, &res, err);
        if (rc)
            return rc;
        level = PQntuples(res) ? atoi(PQgetvalue(res, 0, 0)) : -1;
        PQclear(res);
        if (level < 0)
            return 0;
    }
    char lv[16];
    snprintf(lv, sizeof(lv), "%d", level);
    const char *params[] = {d->public_id, lv};
    rc = ts_db_exec(db, &delete_resource, params, &res, err);
    if (rc)
        return rc;
    memset(&d->out, 0, sizeof(d->out));
    d->out.remaining_level = -1;
    if (PQntuples(res) && strcmp(PQgetvalue(res, 0, 0), "deleted") == 0) {
        d->result = 1;
        if (!PQgetisnull(res, 0, 1) && !PQgetisnull(res, 0, 2)) {
            d->out.remaining_level = atoi(PQgetvalue(res, 0, 1));
            snprintf(d->out.remaining_id, sizeof(d->out.remaining_id), "%s", PQgetvalue(res, 0, 2));
        }
        d->out.removed = PQgetisnull(res, 0, 3) ? 0 : atoll(PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return 0;
}

int ts_delete_resource(ts_db_pool *db, const char *public_id, int level, ts_deleted *out,
                       ts_err *err)
{
    delete_call d = {public_id, level, 0, {0}};
    d.out.remaining_level = -1; /* also when the id is unknown at level -1 (nothing ran) */
    int rc = ts_db_transaction(db, TS_DB_WRITE_READ_COMMITTED, delete_txn, &d, err);
    if (rc)
        return rc;
    if (out)
        *out = d.out;
    return d.result;
}
