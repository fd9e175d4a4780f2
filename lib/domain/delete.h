/* Deletion of one resource (DELETE /{level}/{id}, /tools/bulk-delete and the
 * BulkDelete job): one write transaction of the SQL function
 * tessera_delete_resource (db/functions/delete.sql), which removes the
 * resource, its descendants and the ancestors it leaves empty from the index
 * and hands their files to the deleter service. It runs READ COMMITTED
 * whatever TESSERA_DB_ISOLATION says: it reads the subtree after locking its
 * root, and must see what writers committed meanwhile. */
#ifndef TS_DELETE_H
#define TS_DELETE_H

#include "io/db.h"
#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_deleted {
    int remaining_level; /* Orthanc's RemainingAncestor: its level, -1 when none */
    char remaining_id[64];
    long long removed; /* resources removed (their files go to the deleter) */
} ts_deleted;

/* Deletes the resource public_id of level (0 patient .. 3 instance; -1: its
 * own level, looked up in the same transaction). Returns 1 deleted, 0 unknown
 * resource, or a negative code. out may be NULL. */
int ts_delete_resource(ts_db_pool *db, const char *public_id, int level, ts_deleted *out,
                       ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
