/* Deletions (see rest_delete.h). Orthanc's answers: DELETE of a resource gives
 * {"RemainingAncestor": {"ID", "Path", "Type"}} (null when nothing is left
 * above it), an unknown id an empty 404; /tools/bulk-delete ignores unknown
 * ids and answers an empty 200. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rest_common.h"
#include "rest_delete.h"
#include "tessera.pb-c.h"

static const ts_db_stmt delete_resource = {
    "rest_delete_resource",
    "SELECT status, remaining_level, remaining_id, removed "
    "FROM tessera_delete_resource($1, $2::smallint)",
    2};

static const ts_db_stmt level_of = {
    "rest_level_of", "SELECT level FROM resources WHERE public_id = $1", 1};

static const ts_db_stmt queue_status = {
    "rest_deletion_queue_status",
    "SELECT length, oldest_age_s, failing, removal_rate FROM tessera_deletion_queue_status()",
    0};

void rest_nudge_deleters(rest_ctx *ctx)
{
    if (!ctx->deleters)
        return;
    Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
    ts_bus_push(ctx->deleters, &nudge.base);
}

static const char *const type_names[] = {"Patient", "Study", "Series", "Instance"};
static const char *const plural_names[] = {"patients", "studies", "series", "instances"};

/* One deletion in its own transaction. Returns 1 deleted, 0 unknown, or a
 * negative TS_E* code (err filled). remaining gets the RemainingAncestor. */
static int delete_one(rest_ctx *ctx, const char *public_id, int level, json_t **remaining,
                      ts_err *err)
{
    char lv[4];
    snprintf(lv, sizeof(lv), "%d", level);
    const char *params[] = {public_id, lv};
    rest_row r = {&delete_resource, params, 4, {0}};
    int rc = rest_row_run(ctx->db, TS_DB_WRITE_READ_COMMITTED, &r, err);
    if (rc) {
        rest_row_clear(&r);
        return rc;
    }
    int result = 0;
    if (r.col[0] && strcmp(r.col[0], "deleted") == 0) {
        result = 1;
        if (remaining) {
            int rl = r.col[1] ? atoi(r.col[1]) : -1;
            if (rl >= 0 && rl <= 3 && r.col[2]) {
                char path[128];
                snprintf(path, sizeof(path), "/%s/%s", plural_names[rl], r.col[2]);
                *remaining = json_pack("{s:s, s:s, s:s}", "ID", r.col[2], "Path", path, "Type",
                                       type_names[rl]);
            } else {
                *remaining = json_null();
            }
        }
        if (r.col[3] && strcmp(r.col[3], "0") != 0)
            rest_nudge_deleters(ctx);
        ts_info("deleted", "level=%s id=%s resources_removed=%s", type_names[level], public_id,
                r.col[3] ? r.col[3] : "0");
    }
    rest_row_clear(&r);
    return result;
}

/* DELETE /{level}/{id} */
void rest_delete_resource(rest_request *req)
{
    int level = rest_level_of_plural(req->seg[0]);
    json_t *remaining = NULL;
    ts_err err;
    int rc = delete_one(req->ctx, req->seg[1], level, &remaining, &err);
    if (rc < 0) {
        rest_reply_failure(req, rc, err.msg);
        return;
    }
    if (rc == 0) {
        rest_reply_empty(req, 404);
        return;
    }
    rest_reply_json(req, 200, json_pack("{s:o}", "RemainingAncestor", remaining));
}

/* POST /tools/bulk-delete {"Resources": [id, ...]}: ids of any level. */
void rest_bulk_delete(rest_request *req)
{
    json_error_t jerr;
    json_t *body = req->body ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    if (!json_is_object(body)) {
        rest_reply_error(req, 400, 8, "Bad request", "The body must contain a JSON object");
        json_decref(body);
        return;
    }
    json_t *list = json_object_get(body, "Resources");
    bool ok = json_is_array(list);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) ok = ok && json_is_string(v);
    if (!ok) {
        rest_reply_error(req, 400, 15, "Bad file format",
                         "List of strings expected in field: Resources");
        json_decref(body);
        return;
    }
    ts_err err;
    json_array_foreach(list, i, v)
    {
        /* each resource in its own short transaction: a huge list does not
         * hold locks on everything at once */
        const char *id = json_string_value(v);
        const char *params[] = {id};
        rest_row r = {&level_of, params, 1, {0}};
        int rc = rest_row_run(req->ctx->db, TS_DB_READ, &r, &err);
        int level = rc == 0 && r.col[0] ? atoi(r.col[0]) : -1;
        rest_row_clear(&r);
        if (rc == 0 && level >= 0)
            rc = delete_one(req->ctx, id, level, NULL, &err);
        if (rc < 0) {
            rest_reply_failure(req, rc, err.msg);
            json_decref(body);
            return;
        }
    }
    json_decref(body);
    rest_reply_text(req, 200, "", 0);
}

void rest_deletion_queue_status(rest_request *req)
{
    rest_row r = {&queue_status, NULL, 4, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    json_t *b = json_pack("{s:I, s:f, s:I, s:f}", "Length", (json_int_t)atoll(r.col[0]),
                          "OldestAgeSeconds", atof(r.col[1]), "Failing",
                          (json_int_t)atoll(r.col[2]), "RemovalRate", atof(r.col[3]));
    rest_row_clear(&r);
    rest_reply_json(req, 200, b);
}
