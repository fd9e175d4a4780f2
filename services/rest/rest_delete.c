/* Deletions (see rest_delete.h). Orthanc's answers: DELETE of a resource gives
 * {"RemainingAncestor": {"ID", "Path", "Type"}} (null when nothing is left
 * above it), an unknown id an empty 404; /tools/bulk-delete ignores unknown
 * ids and answers an empty 200; with "Asynchronous": true it is a BulkDelete
 * job instead (Tessera's own type: Orthanc has no such job). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/delete.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_delete.h"
#include "rest_jobs.h"
#include "tessera.pb-c.h"

static const ts_db_stmt queue_status = {
    "rest_deletion_queue_status",
    "SELECT length, oldest_age_s, failing, removal_rate FROM tessera_deletion_queue_status()", 0};

void rest_nudge_deleters(rest_ctx *ctx)
{
    if (!ctx->deleters)
        return;
    Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
    ts_bus_push(ctx->deleters, &nudge.base);
}

static const char *const type_names[] = {"Patient", "Study", "Series", "Instance"};
static const char *const plural_names[] = {"patients", "studies", "series", "instances"};

/* One deletion in its own transaction (lib/domain/delete.h; level -1: any). Returns
 * 1 deleted, 0 unknown, or a negative TS_E* code (err filled). remaining gets
 * the RemainingAncestor. */
static int delete_one(rest_ctx *ctx, const char *public_id, int level, json_t **remaining,
                      ts_err *err)
{
    ts_deleted d;
    int rc = ts_delete_resource(ctx->db, public_id, level, &d, err);
    if (rc <= 0)
        return rc;
    if (remaining) {
        int rl = d.remaining_level;
        if (rl >= 0 && rl <= 3) {
            char path[128];
            snprintf(path, sizeof(path), "/%s/%s", plural_names[rl], d.remaining_id);
            *remaining = json_pack("{s:s, s:s, s:s}", "ID", d.remaining_id, "Path", path, "Type",
                                   type_names[rl]);
        } else {
            *remaining = json_null();
        }
    }
    if (d.removed)
        rest_nudge_deleters(ctx);
    ts_info("deleted", "level=%s id=%s resources_removed=%lld",
            level >= 0 ? type_names[level] : "any", public_id, d.removed);
    return 1;
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
        rest_reply_oe(req, TS_OE_BAD_REQUEST, "The body must contain a JSON object");
        json_decref(body);
        return;
    }
    json_t *list = json_object_get(body, "Resources");
    bool ok = json_is_array(list);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) ok = ok && json_is_string(v);
    if (!ok) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "List of strings expected in field: Resources");
        json_decref(body);
        return;
    }
    const json_t *async = json_object_get(body, "Asynchronous");
    /* Tessera's own fields (Orthanc ignores them): checked when they matter */
    if (async && !json_is_boolean(async)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Boolean value expected in field: Asynchronous");
        json_decref(body);
        return;
    }
    int priority = 0;
    if (json_is_true(async) && !rest_job_priority(req, body, &priority)) {
        json_decref(body);
        return;
    }
    if (json_is_true(async)) {
        /* Tessera's BulkDelete job (Orthanc deletes synchronously) */
        json_t *content = json_pack("{s:s, s:I, s:i}", "Description", "REST API", "ResourcesCount",
                                    (json_int_t)json_array_size(list), "DeletedResourcesCount", 0);
        json_t *input = json_pack("{s:O}", "Resources", list);
        rest_jobs_submit(req, "BulkDelete", priority, content, input, true);
        json_decref(content);
        json_decref(input);
        json_decref(body);
        return;
    }
    ts_err err;
    json_array_foreach(list, i, v)
    {
        /* each resource in its own short transaction: a huge list does not
         * hold locks on everything at once */
        int rc = delete_one(req->ctx, json_string_value(v), -1, NULL, &err);
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
