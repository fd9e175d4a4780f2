/* Labels (see rest_labels.h). Each route is one statement; a write locks the
 * resource FOR KEY SHARE, as the write path locks a parent, so that a deletion
 * running at the same time either sees the label row or the label is refused
 * as an unknown resource (no label row outlives its resource unseen). */
#include "rest_labels.h"

#include <stdio.h>
#include <string.h>

#include "base/ids.h"
#include "rest_auth.h"
#include "rest_common.h"

bool rest_label_is_valid(const char *label)
{
    size_t n = strlen(label);
    if (n == 0 || n > 64)
        return false;
    return strspn(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static const ts_db_stmt list_labels = {
    "rest_list_labels",
    "SELECT (SELECT coalesce(jsonb_agg(l.label ORDER BY l.label COLLATE \"C\"), '[]')"
    "   FROM labels l WHERE l.resource_id = r.id)"
    " FROM resources r WHERE r.public_id = $1 AND r.level = $2::smallint",
    2};

static const ts_db_stmt get_label = {
    "rest_get_label",
    "SELECT EXISTS (SELECT 1 FROM labels l WHERE l.resource_id = r.id AND l.label = $3)::text"
    " FROM resources r WHERE r.public_id = $1 AND r.level = $2::smallint",
    3};

static const ts_db_stmt put_label = {
    "rest_put_label",
    "WITH r AS (SELECT id FROM resources WHERE public_id = $1 AND level = $2::smallint"
    "   FOR KEY SHARE),"
    " ins AS (INSERT INTO labels (resource_id, label) SELECT id, $3 FROM r"
    "   ON CONFLICT DO NOTHING)"
    " SELECT count(*)::text FROM r",
    3};

static const ts_db_stmt delete_label = {
    "rest_delete_label",
    "WITH r AS (SELECT id FROM resources WHERE public_id = $1 AND level = $2::smallint"
    "   FOR KEY SHARE),"
    " del AS (DELETE FROM labels l USING r WHERE l.resource_id = r.id AND l.label = $3)"
    " SELECT count(*)::text FROM r",
    3};

/* Every label that a live resource carries, sorted (Orthanc's std::set). */
static const ts_db_stmt all_labels = {
    "rest_all_labels",
    "SELECT coalesce(jsonb_agg(label ORDER BY label COLLATE \"C\"), '[]') FROM ("
    " SELECT DISTINCT l.label FROM labels l"
    " WHERE EXISTS (SELECT 1 FROM resources r WHERE r.id = l.resource_id)) s",
    0};

/* The level of seg[0] and the label of seg[3] (when present), checked; false
 * when the request has been answered. */
static bool parse(rest_request *req, char lv[4], const char **label)
{
    int level = rest_level_of_plural(req->seg[0]);
    snprintf(lv, 4, "%d", level);
    if (label) {
        *label = req->seg[3];
        if (!rest_label_is_valid(*label)) {
            char details[200];
            snprintf(details, sizeof(details),
                     "A label must be a non-empty, alphanumeric string (with '_' and '-') of at "
                     "most 64 characters: \"%.64s\"",
                     *label);
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
            return false;
        }
    }
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return false;
    }
    return true;
}

/* GET /{level}/{id}/labels */
void rest_list_labels(rest_request *req)
{
    char lv[4];
    if (!parse(req, lv, NULL))
        return;
    const char *params[] = {req->seg[1], lv};
    rest_row r = {&list_labels, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    if (!r.col[0])
        rest_reply_unknown_resource(req);
    else
        rest_reply_json_text(req, 200, r.col[0], strlen(r.col[0]));
    rest_row_clear(&r);
}

/* GET /{level}/{id}/labels/{label}: an empty 200 when the resource has the
 * label; Orthanc 1.12 answers nothing, so 404, when it has not. */
void rest_get_label(rest_request *req)
{
    char lv[4];
    const char *label;
    if (!parse(req, lv, &label))
        return;
    const char *params[] = {req->seg[1], lv, label};
    rest_row r = {&get_label, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    if (!r.col[0])
        rest_reply_unknown_resource(req);
    else if (strcmp(r.col[0], "true") == 0)
        rest_reply_text(req, 200, "", 0);
    else
        rest_reply_empty(req, 404);
    rest_row_clear(&r);
}

static void modify(rest_request *req, const ts_db_stmt *stmt)
{
    char lv[4];
    const char *label;
    if (!parse(req, lv, &label))
        return;
    const char *params[] = {req->seg[1], lv, label};
    rest_row r = {stmt, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_WRITE, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "0") == 0) {
        rest_reply_unknown_resource(req);
    } else {
        rest_auth_labels_changed(req->ctx); /* who may see what has changed */
        rest_reply_text(req, 200, "", 0);   /* Orthanc 1.12: an empty text/plain answer */
    }
    rest_row_clear(&r);
}

/* PUT /{level}/{id}/labels/{label}: adding a label twice is no error. */
void rest_put_label(rest_request *req)
{
    modify(req, &put_label);
}

/* DELETE /{level}/{id}/labels/{label}: removing an absent label is no error. */
void rest_delete_label(rest_request *req)
{
    modify(req, &delete_label);
}

/* GET /tools/labels */
void rest_tools_labels(rest_request *req)
{
    rest_row r = {&all_labels, NULL, 1, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    rest_reply_json_text(req, 200, r.col[0] ? r.col[0] : "[]", r.col[0] ? strlen(r.col[0]) : 2);
    rest_row_clear(&r);
}
