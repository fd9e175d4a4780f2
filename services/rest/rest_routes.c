/* Auto-routing rules and deliveries (see rest_routes.h). A rule is checked
 * here field by field and kept normalised (a condition's single pattern
 * becomes a list of one, a tag given as "0008,0060" becomes "Modality") in
 * routes.definition; the router reads the columns taken from it. */
#include "rest_routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "base/log.h"
#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "dicom/dicom_modify.h"
#include "rest_common.h"

#define MAX_CONDITIONS 32
#define MAX_PATTERNS 64
#define MAX_PATTERN_LEN 256
#define MAX_ACTIONS 16
#define MAX_NAME_LEN 256

static const char *const triggers[] = {"NewInstance", "StableSeries", "StableStudy",
                                       "StablePatient"};
static const char *const trigger_levels[] = {"Instance", "Series", "Study", "Patient"};

/* Whole actions that a store action's fields replace: named, with the way. */
static const char *const merged[] = {"Modify", "Anonymize", "Transcode", "ModifyThenStore",
                                     "AnonymizeThenStore"};

static bool bad(rest_request *req, const char *fmt, const char *a, const char *b)
{
    char details[512];
    snprintf(details, sizeof(details), fmt, a ? a : "", b ? b : "");
    rest_reply_oe_status(req, 400, TS_OE_BAD_REQUEST, details);
    return false;
}

static bool only_keys(rest_request *req, const json_t *obj, const char *const *keys, size_t n,
                      const char *where)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < n; i++)
            known = known || strcmp(k, keys[i]) == 0;
        if (!known)
            return bad(req, "unknown field \"%.100s\" in %s", k, where);
    }
    return true;
}

/* A condition's value: one pattern or a non-empty list of them. */
static json_t *patterns(rest_request *req, const char *key, const json_t *v)
{
    json_t *list = json_is_string(v) ? json_pack("[O]", v) : json_incref((json_t *)v);
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > MAX_PATTERNS) {
        json_decref(list);
        bad(req,
            "condition \"%.100s\": a pattern (text, * and ? as wildcards) or a list of 1 to "
            "64 patterns expected%s",
            key, NULL);
        return NULL;
    }
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        if (!json_is_string(p) || json_string_length(p) > MAX_PATTERN_LEN) {
            json_decref(list);
            bad(req, "condition \"%.100s\": every pattern is text of at most 256 characters%s", key,
                NULL);
            return NULL;
        }
    }
    return list;
}

static json_t *conditions(rest_request *req, const json_t *c)
{
    if (!c)
        return json_object();
    if (!json_is_object(c) || json_object_size(c) > MAX_CONDITIONS) {
        bad(req,
            "\"Conditions\" must be an object of at most 32 conditions {\"Tag\": "
            "pattern or [patterns]}%s%s",
            NULL, NULL);
        return NULL;
    }
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)c, k, v)
    {
        char name[96];
        uint32_t tag;
        if (strcmp(k, "CallingAet") == 0 || strcmp(k, "Origin") == 0) {
            snprintf(name, sizeof(name), "%s", k);
        } else if (!ts_dicom_parse_tag(k, &tag)) {
            json_decref(out);
            bad(req,
                "condition on \"%.100s\": not a DICOM tag (a main tag's name such as "
                "\"Modality\", or CallingAet, Origin)%s",
                k, NULL);
            return NULL;
        } else if (!ts_dicom_is_main_tag(tag)) {
            json_decref(out);
            bad(req,
                "condition on \"%.100s\": not one of the main DICOM tags that the index "
                "keeps (MainDicomTags of /patients, /studies, /series, /instances)%s",
                k, NULL);
            return NULL;
        } else {
            ts_dicom_tag_name(tag, name, sizeof(name));
        }
        json_t *list = patterns(req, k, v);
        if (!list) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, name, list);
    }
    return out;
}

/* A store action's "Anonymize" or "Modify" (Orthanc's body of /anonymize or
 * /modify): checked as the router's jobs will apply it, at the level of one
 * instance (Orthanc's Lua ModifyInstance; an anonymization is always at the
 * patient level). */
static bool modification_ok(rest_request *req, const char *where, const char *kind,
                            const json_t *body)
{
    if (!json_is_object(body))
        return bad(req, "%s: \"%s\" is an object, Orthanc's body of /anonymize or /modify", where,
                   kind);
    bool anonymize = strcmp(kind, "Anonymize") == 0;
    ts_modify *m = NULL;
    ts_oe oe;
    ts_err err;
    ts_err_clear(&err);
    int rc = ts_modify_parse(body, anonymize, &m, &oe, &err);
    if (!rc && !anonymize) {
        ts_modify_set_level(m, ts_modify_instance_level(m));
        rc = ts_modify_check(m, &oe, &err);
    }
    ts_modify_free(m);
    if (rc) {
        char details[600];
        snprintf(details, sizeof(details), "%s: \"%s\": %s", where, kind,
                 err.msg[0] ? err.msg : ts_oe_description(oe));
        rest_reply_oe_status(req, 400, oe ? oe : TS_OE_BAD_REQUEST, details);
        return false;
    }
    return true;
}

static json_t *store_action(rest_request *req, const json_t *a, const char *where, const char *type)
{
    bool modality = type[7] == 'M';
    const char *field = modality ? "Modality" : "Peer";
    const char *const keys[] = {"Type", field, "Transcode", "Anonymize", "Modify", "Secret"};
    if (!only_keys(req, a, keys, 6, where))
        return NULL;
    const char *dest = json_string_value(json_object_get(a, field));
    if (!dest || !*dest)
        return bad(req, "%s needs \"%s\": the name of one of /modalities or /peers", type, field),
               NULL;
    json_t *out = json_pack("{s:s, s:s}", "Type", type, field, dest);
    const json_t *t = json_object_get(a, "Transcode");
    if (t && (!json_is_string(t) || !ts_transfer_syntax_known(json_string_value(t)))) {
        char details[300];
        if (json_is_string(t))
            snprintf(details, sizeof(details),
                     "%s: \"Transcode\" must be a transfer syntax UID Tessera knows (%.100s is "
                     "not)",
                     where, json_string_value(t));
        else
            snprintf(details, sizeof(details),
                     "%s: \"Transcode\" must be a transfer syntax UID (text)", where);
        rest_reply_oe_status(req, 400, TS_OE_BAD_REQUEST, details);
        json_decref(out);
        return NULL;
    }
    if (t)
        json_object_set(out, "Transcode", (json_t *)t);
    const json_t *anon = json_object_get(a, "Anonymize"), *mod = json_object_get(a, "Modify");
    if (anon && mod) {
        json_decref(out);
        return bad(req, "%s: \"Anonymize\" or \"Modify\", not both%s", where, NULL), NULL;
    }
    const json_t *secret = json_object_get(a, "Secret");
    if (secret && (!json_is_string(secret) || json_string_length(secret) < 16 ||
                   json_string_length(secret) > 128 || !(anon || mod))) {
        json_decref(out);
        return bad(req,
                   "%s: \"Secret\" (the key the new UIDs derive from) is text of 16 to 128 "
                   "characters, with \"Anonymize\" or \"Modify\"%s",
                   where, NULL),
               NULL;
    }
    if (anon || mod) {
        const char *kind = anon ? "Anonymize" : "Modify";
        if (!modification_ok(req, where, kind, anon ? anon : mod)) {
            json_decref(out);
            return NULL;
        }
        json_object_set(out, kind, (json_t *)(anon ? anon : mod));
        /* the rule's own key: the same original UID gets the same new one in
         * every delivery of the rule (a study routed instance by instance
         * stays one study), and a GET-edit-PUT keeps it */
        char hex[65];
        if (!secret) {
            unsigned char b[32];
            RAND_bytes(b, (int)sizeof(b));
            for (size_t i = 0; i < sizeof(b); i++)
                sprintf(hex + 2 * i, "%02x", b[i]);
        }
        json_object_set_new(out, "Secret", json_string(secret ? json_string_value(secret) : hex));
    }
    return out;
}

static json_t *action(rest_request *req, const json_t *a, size_t index, size_t count)
{
    char where[32];
    snprintf(where, sizeof(where), "Actions[%zu]", index);
    const char *type = json_string_value(json_object_get(a, "Type"));
    if (!json_is_object(a) || !type)
        return bad(req, "%s must be an object with a \"Type\"%s", where, NULL), NULL;
    for (size_t i = 0; i < sizeof(merged) / sizeof(*merged); i++)
        if (strcmp(type, merged[i]) == 0)
            return bad(req,
                       "%s: %s is a field of the store action it comes before: "
                       "{\"Type\": \"StoreToModality\", \"Modality\": ..., \"Anonymize\": "
                       "{...} or \"Modify\": {...}, \"Transcode\": \"<transfer syntax UID>\"}",
                       where, type),
                   NULL;
    if (strcmp(type, "StoreToModality") == 0 || strcmp(type, "StoreToPeer") == 0)
        return store_action(req, a, where, type);
    if (strcmp(type, "Delete") == 0) {
        const char *const keys[] = {"Type"};
        if (!only_keys(req, a, keys, 1, where))
            return NULL;
        if (index + 1 != count || index == 0)
            return bad(req,
                       "%s: Delete is the last action, after at least one store (it deletes "
                       "the resource once it was sent)%s",
                       where, NULL),
                   NULL;
        return json_pack("{s:s}", "Type", type);
    }
    return bad(req, "%s: unknown action type \"%.100s\" (StoreToModality, StoreToPeer, Delete)",
               where, type),
           NULL;
}

/* The normalised rule of a request body, or NULL (answered). */
static json_t *parse_rule(rest_request *req)
{
    if (!rest_body_within(req, 64 * 1024))
        return NULL;
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    if (!json_is_object(body)) {
        char details[300];
        if (body)
            snprintf(details, sizeof(details), "a rule is a JSON object");
        else
            snprintf(details, sizeof(details), "the body is not JSON: line %d column %d: %s",
                     jerr.line, jerr.column, jerr.text);
        json_decref(body);
        rest_reply_oe_status(req, 400, TS_OE_BAD_FILE_FORMAT, details);
        return NULL;
    }
    json_t *rule = NULL, *conds = NULL, *acts = NULL;
    const char *const keys[] = {"Name", "Enabled", "Trigger", "Conditions", "Actions"};
    if (!only_keys(req, body, keys, 5, "the rule (Name, Enabled, Trigger, Conditions, Actions)"))
        goto out;
    const json_t *name = json_object_get(body, "Name");
    if (name && (!json_is_string(name) || json_string_length(name) > MAX_NAME_LEN)) {
        bad(req, "\"Name\" is text of at most 256 characters%s%s", NULL, NULL);
        goto out;
    }
    const json_t *enabled = json_object_get(body, "Enabled");
    if (enabled && !json_is_boolean(enabled)) {
        bad(req, "\"Enabled\" is true or false%s%s", NULL, NULL);
        goto out;
    }
    const char *trigger = json_string_value(json_object_get(body, "Trigger"));
    bool known = false;
    for (size_t i = 0; trigger && i < 4; i++)
        known = known || strcmp(trigger, triggers[i]) == 0;
    if (!known) {
        bad(req,
            "\"Trigger\" must be one of NewInstance, StableSeries, StableStudy, "
            "StablePatient%s%s",
            NULL, NULL);
        goto out;
    }
    if (!(conds = conditions(req, json_object_get(body, "Conditions"))))
        goto out;
    const json_t *list = json_object_get(body, "Actions");
    if (!json_is_array(list) || !json_array_size(list) || json_array_size(list) > MAX_ACTIONS) {
        bad(req, "\"Actions\" must be a list of 1 to 16 actions%s%s", NULL, NULL);
        goto out;
    }
    acts = json_array();
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *a = action(req, json_array_get(list, i), i, json_array_size(list));
        if (!a)
            goto out;
        json_array_append_new(acts, a);
    }
    rule = json_pack("{s:s, s:b, s:s, s:O, s:O}", "Name", name ? json_string_value(name) : "",
                     "Enabled", !enabled || json_is_true(enabled), "Trigger", trigger, "Conditions",
                     conds, "Actions", acts);
out:
    json_decref(conds);
    json_decref(acts);
    json_decref(body);
    return rule;
}

/* The first store action whose modality or peer is not configured. */
static const ts_db_stmt missing_destination = {
    "routes_missing_destination",
    "SELECT a->>'Type', coalesce(a->>'Modality', a->>'Peer')"
    " FROM jsonb_array_elements($1::jsonb) a"
    " WHERE (a->>'Type' = 'StoreToModality'"
    "        AND NOT EXISTS (SELECT 1 FROM modalities m WHERE m.name = a->>'Modality'))"
    "    OR (a->>'Type' = 'StoreToPeer'"
    "        AND NOT EXISTS (SELECT 1 FROM peers p WHERE p.name = a->>'Peer'))"
    " LIMIT 1",
    1};

static bool destinations_exist(rest_request *req, const json_t *rule)
{
    char *acts = json_dumps(json_object_get(rule, "Actions"), JSON_COMPACT);
    const char *params[] = {acts};
    rest_row r = {&missing_destination, params, 2, {0}};
    bool ok = rest_row_query(req, TS_DB_READ, &r);
    free(acts);
    if (ok && r.col[0]) {
        bool modality = strcmp(r.col[0], "StoreToModality") == 0;
        char details[400];
        snprintf(details, sizeof(details), "%s: unknown %s \"%.100s\" (GET %s lists them)",
                 r.col[0], modality ? "modality" : "peer", r.col[1],
                 modality ? "/modalities" : "/peers");
        rest_reply_oe_status(req, 400, modality ? TS_OE_UNKNOWN_MODALITY : TS_OE_BAD_REQUEST,
                             details);
        ok = false;
    }
    rest_row_clear(&r);
    return ok;
}

#define ROUTE_JSON "(jsonb_build_object('ID', id, 'Revision', revision) || definition)::text"

static const ts_db_stmt list_routes = {
    "routes_list",
    "SELECT coalesce(jsonb_agg(jsonb_build_object('ID', id, 'Revision', revision) || definition"
    " ORDER BY created_at, id), '[]')::text FROM routes",
    0};
static const ts_db_stmt get_route = {
    "routes_get", "SELECT " ROUTE_JSON ", revision::text FROM routes WHERE id = $1", 1};
static const ts_db_stmt create_route = {
    "routes_create",
    "INSERT INTO routes (id, name, enabled, trigger, conditions, actions, definition)"
    " SELECT gen_random_uuid()::text, d->>'Name', (d->>'Enabled')::boolean, d->>'Trigger',"
    "  d->'Conditions', d->'Actions', d FROM (SELECT $1::jsonb AS d) x"
    " RETURNING " ROUTE_JSON ", revision::text",
    1};
/* 'unknown', 'conflict' or 'ok' with the new JSON and revision */
static const ts_db_stmt update_route = {
    "routes_update",
    "WITH cur AS (SELECT revision FROM routes WHERE id = $1 FOR UPDATE),"
    " upd AS (UPDATE routes r SET name = d->>'Name', enabled = (d->>'Enabled')::boolean,"
    "   trigger = d->>'Trigger', conditions = d->'Conditions', actions = d->'Actions',"
    "   definition = d, revision = r.revision + 1, updated_at = now()"
    "   FROM cur, (SELECT $2::jsonb AS d) x WHERE r.id = $1 AND cur.revision = $3::integer"
    "   RETURNING (jsonb_build_object('ID', r.id, 'Revision', r.revision) || r.definition)::text"
    "   AS body, r.revision)"
    " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur) THEN 'unknown'"
    "  WHEN EXISTS (SELECT 1 FROM upd) THEN 'ok' ELSE 'conflict' END,"
    " (SELECT body FROM upd), (SELECT revision::text FROM upd)",
    3};
static const ts_db_stmt delete_route = {
    "routes_delete",
    "WITH cur AS (SELECT revision FROM routes WHERE id = $1 FOR UPDATE),"
    " del AS (DELETE FROM routes r USING cur WHERE r.id = $1 AND cur.revision = $2::integer"
    "   RETURNING r.id)"
    " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur) THEN 'unknown'"
    "  WHEN EXISTS (SELECT 1 FROM del) THEN 'ok' ELSE 'conflict' END",
    2};
static const ts_db_stmt test_route = {"routes_test",
                                      "SELECT rt.trigger, r.level::text,"
                                      " CASE WHEN rt.id IS NOT NULL AND r.id IS NOT NULL"
                                      "  THEN tessera_route_matches(rt.conditions, r.id)::text END,"
                                      " rt.actions::text, rt.enabled::text"
                                      " FROM (SELECT 1) one LEFT JOIN routes rt ON rt.id = $1"
                                      " LEFT JOIN resources r ON r.public_id = $2",
                                      2};

static void reply_route(rest_request *req, const char *json, const char *revision)
{
    rest_set_etag(req, revision, json, strlen(json));
    rest_reply_json_text(req, 200, json, strlen(json));
}

static void reply_unknown_route(rest_request *req)
{
    char details[160];
    snprintf(details, sizeof(details), "unknown route \"%.100s\" (GET /tessera/routes)",
             req->seg[2]);
    rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, details);
}

void rest_routes_list(rest_request *req)
{
    rest_row r = {&list_routes, NULL, 1, {0}};
    if (rest_row_query(req, TS_DB_READ, &r))
        rest_reply_json_text(req, 200, r.col[0], strlen(r.col[0]));
    rest_row_clear(&r);
}

void rest_routes_get(rest_request *req)
{
    const char *params[] = {req->seg[2]};
    rest_row r = {&get_route, params, 2, {0}};
    if (rest_row_query(req, TS_DB_READ, &r)) {
        if (r.col[0])
            reply_route(req, r.col[0], r.col[1]);
        else
            reply_unknown_route(req);
    }
    rest_row_clear(&r);
}

void rest_routes_create(rest_request *req)
{
    json_t *rule = parse_rule(req);
    if (!rule || !destinations_exist(req, rule))
        goto out;
    char *text = json_dumps(rule, JSON_COMPACT);
    const char *params[] = {text};
    rest_row r = {&create_route, params, 2, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        ts_info("route created", "trigger=%s", json_string_value(json_object_get(rule, "Trigger")));
        reply_route(req, r.col[0], r.col[1]);
    }
    rest_row_clear(&r);
    free(text);
out:
    json_decref(rule);
}

void rest_routes_update(rest_request *req)
{
    /* the whole ETag, as for metadata (rest_if_match); the revision decides */
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    json_t *rule = parse_rule(req);
    if (!rule || !destinations_exist(req, rule))
        goto out;
    if (!match.given) {
        rest_reply_revision_conflict(req, false);
        goto out;
    }
    char *text = json_dumps(rule, JSON_COMPACT);
    const char *params[] = {req->seg[2], text, match.revision};
    rest_row r = {&update_route, params, 3, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        if (strcmp(r.col[0], "unknown") == 0)
            reply_unknown_route(req);
        else if (strcmp(r.col[0], "conflict") == 0)
            rest_reply_revision_conflict(req, true);
        else
            reply_route(req, r.col[1], r.col[2]);
    }
    rest_row_clear(&r);
    free(text);
out:
    json_decref(rule);
}

void rest_routes_delete(rest_request *req)
{
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    if (!match.given) {
        rest_reply_revision_conflict(req, false);
        return;
    }
    const char *params[] = {req->seg[2], match.revision};
    rest_row r = {&delete_route, params, 1, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        if (strcmp(r.col[0], "unknown") == 0)
            reply_unknown_route(req);
        else if (strcmp(r.col[0], "conflict") == 0)
            rest_reply_revision_conflict(req, true);
        else
            rest_reply_json(req, 200, json_object());
    }
    rest_row_clear(&r);
}

/* POST /tessera/routes/{id}/test with a resource id (text, or {"Resource": id}) */
void rest_routes_test(rest_request *req)
{
    if (!rest_body_within(req, 4096))
        return;
    char id[128] = "";
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, JSON_DECODE_ANY, &jerr);
    const char *given = json_is_string(body) ? json_string_value(body)
                        : json_is_object(body)
                            ? json_string_value(json_object_get(body, "Resource"))
                            : NULL;
    if (given) {
        snprintf(id, sizeof(id), "%s", given);
    } else if (!body) {
        size_t n;
        const char *s = rest_body_trimmed(req, &n);
        if (n < sizeof(id))
            snprintf(id, sizeof(id), "%.*s", (int)n, s);
    }
    json_decref(body);
    if (!ts_id_is_valid(id)) {
        rest_reply_oe_status(req, 400, TS_OE_BAD_REQUEST,
                             "the body names the resource to test: its Orthanc id, as text or "
                             "{\"Resource\": id}");
        return;
    }
    const char *params[] = {req->seg[2], id};
    rest_row r = {&test_route, params, 5, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        goto out;
    if (!r.col[0]) {
        reply_unknown_route(req);
        goto out;
    }
    if (!r.col[1]) {
        rest_reply_unknown_resource(req);
        goto out;
    }
    int level = atoi(r.col[1]);
    const char *type = trigger_levels[3 - level];
    bool level_ok = false;
    for (int i = 0; i < 4; i++)
        if (strcmp(r.col[0], triggers[i]) == 0)
            level_ok = 3 - i == level;
    bool cond_ok = r.col[2] && strcmp(r.col[2], "true") == 0;
    json_t *out = json_pack("{s:s, s:s, s:s, s:b, s:b, s:b}", "Resource", id, "ResourceType", type,
                            "Trigger", r.col[0], "Enabled", strcmp(r.col[4], "true") == 0,
                            "ConditionsMatch", cond_ok, "Matches", level_ok && cond_ok);
    if (!level_ok) {
        char why[160];
        snprintf(why, sizeof(why), "the trigger %s is about another level than a %s", r.col[0],
                 type);
        json_object_set_new(out, "Reason", json_string(why));
    }
    json_object_set_new(out, "Actions",
                        level_ok && cond_ok ? json_loads(r.col[3], 0, NULL) : json_array());
    rest_reply_json(req, 200, out);
out:
    rest_row_clear(&r);
}

static const ts_db_stmt list_deliveries = {
    "routes_deliveries",
    "SELECT coalesce(jsonb_agg(jsonb_build_object('ID', id, 'Route', route_id,"
    " 'ChangeSeq', change_seq, 'ChangeType', change_type, 'Resource', public_id,"
    " 'ResourceType', (ARRAY['Patient','Study','Series','Instance'])[level + 1],"
    " 'Step', step, 'Action', actions->step, 'State', state, 'Attempts', attempts,"
    " 'NextAttempt', tessera_orthanc_time(not_before), 'Job', job_id, 'LastError', last_error,"
    " 'CreationTime', tessera_orthanc_time(created_at)) ORDER BY id), '[]')::text"
    " FROM (SELECT * FROM route_deliveries WHERE $1::text IS NULL OR state = $1"
    "       ORDER BY id LIMIT 10000) d",
    1};
static const ts_db_stmt resubmit_delivery = {
    "routes_resubmit",
    "WITH cur AS (SELECT state FROM route_deliveries WHERE id = $1::bigint FOR UPDATE),"
    " upd AS (UPDATE route_deliveries d SET state = 'pending', attempts = 0, not_before = now(),"
    "   updated_at = now() FROM cur WHERE d.id = $1::bigint AND cur.state = 'dead' RETURNING 1)"
    " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur) THEN 'unknown'"
    "  WHEN EXISTS (SELECT 1 FROM upd) THEN 'ok' ELSE (SELECT state FROM cur) END",
    1};

void rest_route_deliveries_list(rest_request *req)
{
    const char *state = rest_arg(req, "state");
    if (state && strcmp(state, "dead") && strcmp(state, "pending") && strcmp(state, "running")) {
        bad(req, "?state= is dead, pending or running, not \"%.40s\"%s", state, NULL);
        return;
    }
    const char *params[] = {state};
    rest_row r = {&list_deliveries, params, 1, {0}};
    if (rest_row_query(req, TS_DB_READ, &r))
        rest_reply_json_text(req, 200, r.col[0], strlen(r.col[0]));
    rest_row_clear(&r);
}

void rest_route_deliveries_resubmit(rest_request *req)
{
    char *end;
    long long id = strtoll(req->seg[2], &end, 10);
    if (*end || id <= 0 || end == req->seg[2]) {
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, "unknown delivery");
        return;
    }
    const char *params[] = {req->seg[2]};
    rest_row r = {&resubmit_delivery, params, 1, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        if (strcmp(r.col[0], "unknown") == 0) {
            rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, "unknown delivery");
        } else if (strcmp(r.col[0], "ok") == 0) {
            ts_info("route delivery resubmitted", "delivery=%s", req->seg[2]);
            rest_reply_json(req, 200, json_object());
        } else {
            bad(req, "only a dead delivery can be resubmitted; this one is %s%s", r.col[0], NULL);
        }
    }
    rest_row_clear(&r);
}
