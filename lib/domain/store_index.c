#include "domain/store_index.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"

/* One advisory lock per file: class 0x7473 ("ts") and the hash of the uuid.
 * Two files that share a hash only wait for each other. tessera_store_instance
 * (db/functions/store_instance.sql) takes the same lock. */
static const ts_db_stmt lock_file = {"store_lock_file",
                                     "SELECT pg_advisory_xact_lock(29811, hashtext($1))", 1};
static const ts_db_stmt try_lock_file = {
    "store_try_lock_file", "SELECT pg_try_advisory_xact_lock(29811, hashtext($1))", 1};
/* A statement of its own, after the lock: it sees what committed before. */
static const ts_db_stmt file_indexed = {
    "store_file_indexed", "SELECT EXISTS (SELECT 1 FROM attachments WHERE uuid = $1::uuid)", 1};

int ts_store_hold(ts_db *db, ts_store *st, const char *uuid, ts_err *err)
{
    const char *params[] = {uuid};
    int rc = ts_db_exec(db, &lock_file, params, NULL, err);
    if (rc)
        return rc;
    return ts_store_check_intent(st, uuid, err);
}

int ts_store_check_intent(ts_store *st, const char *uuid, ts_err *err)
{
    if (!ts_store_has_intent(st, uuid))
        return ts_err_set(err, TS_ENOTFOUND,
                          "the stored file %s was reclaimed while its transaction waited", uuid);
    return 0;
}

typedef struct reclaim {
    ts_db_pool *pool;
    ts_store *st;
    const char *uuid;
    int settled, removed;
} reclaim;

static int reclaim_txn(ts_db *db, void *arg, ts_err *err)
{
    reclaim *r = arg;
    const char *params[] = {r->uuid};
    PGresult *res;
    int rc = ts_db_exec(db, &try_lock_file, params, &res, err);
    if (rc)
        return rc;
    bool locked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!locked)
        return 0; /* its writer is in its transaction: not ours to decide */
    rc = ts_db_exec(db, &file_indexed, params, &res, err);
    if (rc)
        return rc;
    bool indexed = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    /* still under the lock: the writer cannot commit in between */
    if (indexed) {
        ts_store_settle(r->st, r->uuid);
        r->settled++;
        return 0;
    }
    ts_err rm;
    if (ts_store_remove(r->st, r->uuid, &rm)) {
        ts_warn("cannot remove an abandoned file", "uuid=%s error=\"%s\"", r->uuid, rm.msg);
        return 0;
    }
    ts_info("abandoned file removed", "uuid=%s", r->uuid);
    r->removed++;
    return 0;
}

static int reclaim_one(void *user, const char *uuid)
{
    reclaim *r = user;
    r->uuid = uuid;
    ts_err err;
    if (ts_db_transaction(r->pool, TS_DB_WRITE_READ_COMMITTED, reclaim_txn, r, &err))
        ts_warn("cannot settle an intent, retried later", "uuid=%s error=\"%s\"", uuid, err.msg);
    return 0;
}

int ts_store_reclaim(ts_db_pool *pool, ts_store *st, int min_age_s, int *settled, int *removed,
                     ts_err *err)
{
    reclaim r = {pool, st, NULL, 0, 0};
    int rc = ts_store_intents(st, min_age_s, reclaim_one, &r, err);
    if (settled)
        *settled = r.settled;
    if (removed)
        *removed = r.removed;
    return rc;
}
