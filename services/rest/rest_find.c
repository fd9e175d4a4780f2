/* POST /tools/find (see rest_find.h). The body, as Orthanc 1.10.1 takes it:
 *   {"Level": "Patient"|"Study"|"Series"|"Instance", "Query": {tag: pattern},
 *    "Expand": bool, "Limit": n, "Since": n, "CaseSensitive": bool (default false),
 *    "RequestedTags": [tag, ...] (Orthanc 1.11's: with Expand, each resource gets
 *    "RequestedTags": {name: value} for the tags the index holds)}
 * Tags are dictionary names or "gggg,eeee"; patterns use C-FIND's matching
 * (wildcards, lists, date ranges). Without "CaseSensitive": true, every text
 * tag is matched without case, not only person names (Orthanc 1.10.1's rule). The answer is the
 * list of public ids, or of the resources as GET /{level}/{id} gives them when Expand is true. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dicom/dicom.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_find.h"
#include "rest_labels.h"
#include "tessera.pb-c.h"

#define FIND_MAX_KEYS 64

static const ts_db_stmt expand_ids = {
    "rest_find_expand",
    "SELECT coalesce(jsonb_agg(tessera_resource_json(r.id, $2::integer)"
    "  ORDER BY array_position($1::text[], r.public_id)), '[]')"
    " FROM resources r WHERE r.public_id = ANY ($1::text[])",
    2};

void rest_find_restrict(rest_request *req, Tessera__FindRequest *fr, char **buf, size_t max)
{
    const rest_principal *who = req->who;
    if (!who || !who->restricted)
        return;
    size_t n = who->nlabels < max ? who->nlabels : max;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char *)who->labels[i];
    fr->restrict_to_labels = true;
    fr->n_visible_labels = n;
    fr->visible_labels = buf;
}

static void bad_request(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_REQUEST, details);
}

static int level_of(const char *s)
{
    static const char *const names[] = {"Patient", "Study", "Series", "Instance"};
    for (int i = 0; i < 4; i++)
        if (s && strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* The ids as a PostgreSQL array literal: public ids are hex and dashes. */
static char *ids_literal(Tessera__FindReply *r)
{
    size_t cap = 3 + r->n_matches * 48, len = 0;
    char *s = malloc(cap);
    if (!s)
        abort();
    s[len++] = '{';
    for (size_t i = 0; i < r->n_matches; i++) {
        const char *id = r->matches[i]->public_id;
        if (strspn(id, "0123456789abcdef-") != strlen(id) || strlen(id) > 44)
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%s%s", len > 1 ? "," : "", id);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

typedef struct expand_txn_args {
    const char *params[2];
    char *text;
} expand_txn_args;

static int expand_txn(ts_db *db, void *arg, ts_err *err)
{
    expand_txn_args *a = arg;
    PGresult *res;
    int rc = ts_db_exec(db, &expand_ids, a->params, &res, err);
    if (rc)
        return rc;
    free(a->text);
    a->text = strdup(PQntuples(res) ? PQgetvalue(res, 0, 0) : "[]");
    PQclear(res);
    return 0;
}

void rest_tools_find(rest_request *req)
{
    json_error_t jerr;
    json_t *body = req->body ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    uint32_t requested[FIND_MAX_KEYS];
    size_t nrequested = 0;
    Tessera__FindTagValue keys[FIND_MAX_KEYS];
    Tessera__FindTagValue *key_ptrs[FIND_MAX_KEYS];
    Tessera__FindRequest fr = TESSERA__FIND_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    char *labels[FIND_MAX_KEYS], *visible[REST_MAX_GRANTS];
    if (!json_is_object(body)) {
        bad_request(req, "The body must contain a JSON object");
        goto out;
    }
    json_t *level = json_object_get(body, "Level");
    json_t *query = json_object_get(body, "Query");
    int lv = level_of(json_string_value(level));
    if (!json_is_string(level) || !json_is_object(query)) {
        bad_request(req, "Field \"Level\" (a string) and field \"Query\" (an object) are required");
        goto out;
    }
    if (lv < 0) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "Level must be Patient, Study, Series or Instance");
        goto out;
    }
    json_t *expand = json_object_get(body, "Expand");
    json_t *limit = json_object_get(body, "Limit");
    json_t *since = json_object_get(body, "Since");
    json_t *cs = json_object_get(body, "CaseSensitive");
    if ((expand && !json_is_boolean(expand)) || (cs && !json_is_boolean(cs)) ||
        (limit && (!json_is_integer(limit) || json_integer_value(limit) < 0)) ||
        (since && (!json_is_integer(since) || json_integer_value(since) < 0))) {
        bad_request(req, "Expand and CaseSensitive must be booleans, Limit and Since "
                         "non-negative integers");
        goto out;
    }
    const char *name;
    json_t *value;
    size_t n = 0;
    json_object_foreach(query, name, value)
    {
        uint32_t tag;
        if (!json_is_string(value)) {
            bad_request(req, "The values of \"Query\" must be strings");
            goto out;
        }
        if (!ts_dicom_parse_tag(name, &tag)) {
            char details[300];
            snprintf(details, sizeof(details), "Unknown DICOM tag: \"%.200s\"", name);
            rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, details); /* as Orthanc */
            goto out;
        }
        if (n == FIND_MAX_KEYS) {
            bad_request(req, "Too many keys in \"Query\"");
            goto out;
        }
        tessera__find_tag_value__init(&keys[n]);
        keys[n].tag = tag;
        keys[n].value = (char *)json_string_value(value);
        key_ptrs[n] = &keys[n];
        n++;
    }
    json_t *rtags = json_object_get(body, "RequestedTags");
    if (rtags && !json_is_array(rtags)) {
        bad_request(req, "\"RequestedTags\" must be a list of tags");
        goto out;
    }
    size_t ri;
    json_t *rv;
    json_array_foreach(rtags, ri, rv)
    {
        if (!json_is_string(rv) ||
            !ts_dicom_parse_tag(json_string_value(rv), &requested[nrequested])) {
            rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, "in \"RequestedTags\"");
            goto out;
        }
        if (++nrequested == FIND_MAX_KEYS) {
            bad_request(req, "Too many \"RequestedTags\"");
            goto out;
        }
    }
    /* Orthanc 1.12: "Labels": [names], "LabelsConstraint": "All" (default), "Any", "None" */
    json_t *jlabels = json_object_get(body, "Labels");
    json_t *jconstraint = json_object_get(body, "LabelsConstraint");
    if (jlabels && !json_is_array(jlabels)) {
        bad_request(req, "Field \"Labels\" must contain an array of strings");
        goto out;
    }
    json_t *jl;
    json_array_foreach(jlabels, ri, jl)
    {
        const char *l = json_string_value(jl);
        if (!l) {
            bad_request(req, "Field \"Labels\" must contain an array of strings");
            goto out;
        }
        if (!rest_label_is_valid(l)) {
            char details[200];
            snprintf(details, sizeof(details), "Invalid label: \"%.64s\"", l);
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
            goto out;
        }
        if (fr.n_labels == FIND_MAX_KEYS) {
            bad_request(req, "Too many \"Labels\"");
            goto out;
        }
        labels[fr.n_labels++] = (char *)l;
    }
    fr.labels = labels;
    if (jconstraint) {
        const char *c = json_string_value(jconstraint);
        if (c && strcmp(c, "All") == 0)
            fr.labels_constraint = TESSERA__LABELS_CONSTRAINT__LABELS_ALL;
        else if (c && strcmp(c, "Any") == 0)
            fr.labels_constraint = TESSERA__LABELS_CONSTRAINT__LABELS_ANY;
        else if (c && strcmp(c, "None") == 0)
            fr.labels_constraint = TESSERA__LABELS_CONSTRAINT__LABELS_NONE;
        else {
            rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                          "\"LabelsConstraint\" must be \"All\", \"Any\" or \"None\"");
            goto out;
        }
    }
    rest_find_restrict(req, &fr, visible, REST_MAX_GRANTS);
    if (!req->ctx->query) {
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE,
                      "no query service configured (TESSERA_QUERY_BUS)");
        goto out;
    }
    fr.level = (Tessera__ResourceLevel)lv;
    fr.n_query = n;
    fr.query = key_ptrs;
    fr.limit = limit ? json_integer_value(limit) : 0;
    fr.since = since ? json_integer_value(since) : 0;
    fr.case_matching = json_is_true(cs) ? TESSERA__CASE_MATCHING__CASE_EXACT
                                        : TESSERA__CASE_MATCHING__CASE_FOLD_TEXT;
    fr.n_requested_tags = nrequested;
    fr.requested_tags = requested;
    ts_err err;
    int rc = ts_bus_call(req->ctx->query, &fr.base, &tessera__find_reply__descriptor, &reply,
                         req->ctx->bus_timeout_ms, &err);
    if (rc) {
        rest_reply_failure(req, rc == TS_ETIMEOUT ? TS_EDB_BUSY : rc, err.msg);
        goto out;
    }
    Tessera__FindReply *r = (Tessera__FindReply *)reply;
    switch (r->status) {
    case TESSERA__FIND_STATUS__FIND_OK:
        break;
    case TESSERA__FIND_STATUS__FIND_BAD_REQUEST:
        bad_request(req, r->error);
        goto out;
    case TESSERA__FIND_STATUS__FIND_DB_UNAVAILABLE:
        rest_reply_failure(req, TS_EDB_BUSY, r->error);
        goto out;
    default:
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, r->error);
        goto out;
    }
    if (!expand || !json_is_true(expand)) {
        json_t *ids = json_array();
        for (size_t i = 0; i < r->n_matches; i++)
            json_array_append_new(ids, json_string(r->matches[i]->public_id));
        rest_reply_json(req, 200, ids);
        goto out;
    }
    char age[16];
    snprintf(age, sizeof(age), "%d", req->ctx->stable_age_s);
    expand_txn_args a = {{ids_literal(r), age}, NULL};
    rc = ts_db_transaction(req->ctx->db, TS_DB_READ, expand_txn, &a, &err);
    free((char *)a.params[0]);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
    } else if (nrequested == 0) {
        rest_reply_json_text(req, 200, a.text, strlen(a.text));
    } else {
        /* the resources come in the order of the matches (array_position) */
        json_t *list = json_loads(a.text, 0, NULL);
        size_t i;
        json_t *res;
        json_array_foreach(list, i, res)
        {
            json_t *tags = json_object();
            for (size_t k = 0; i < r->n_matches && k < r->matches[i]->n_tags; k++) {
                Tessera__FindTagValue *t = r->matches[i]->tags[k];
                for (size_t q = 0; q < nrequested; q++) {
                    if (requested[q] != t->tag)
                        continue;
                    char name[80];
                    ts_dicom_tag_name(t->tag, name, sizeof(name));
                    json_object_set_new(tags, name, json_string(t->value));
                }
            }
            json_object_set_new(res, "RequestedTags", tags);
        }
        rest_reply_json(req, 200, list ? list : json_array());
    }
    free(a.text);
out:
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    json_decref(body);
}
