/* QIDO-RS (PS3.18 10.6): searches for studies, series and instances. The
 * matching is the query service's, the one matcher behind C-FIND and
 * /tools/find: this module turns the query string into a bus FindRequest and
 * the matches into DICOM JSON.
 *
 * - keys: keyword or tag ("PatientName", "00100010"), values percent-decoded;
 *   an attribute of a sequence's items as "Sequence.Attribute" (PS3.18 8.3.4.1:
 *   "RequestAttributesSequence.ScheduledProcedureStepID", "00400275.00400009"),
 *   matched item by item;
 *   UI and CS values may list alternatives separated by ',' or '\'; an empty
 *   value is a return key. A name that is no attribute, an attribute the index
 *   cannot match on, or one below the level searched: 400 with a message.
 * - includefield: keywords or tags, comma-separated and repeated, or "all"
 *   (every attribute the index holds for the level and those above it; at
 *   instance level also every attribute of the stored metadata but bulk data).
 * - fuzzymatching=true: person names match case-insensitively even when
 *   TESSERA_QUERY_CASE_SENSITIVE_PN is on; there is no phonetic matching.
 * - limit/offset: paging; the query service's TESSERA_QUERY_LIMIT caps an
 *   answer, and a capped answer carries PS3.18's Warning 299.
 * - no match: 204 No Content, as PS3.18 8.3.4.4.1 (2024e) says. */
#include "rest_dicomweb_qido.h"
#include "rest_find.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/config.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_dicomweb_common.h"
#include "rest_dicomweb_xml.h"
#include "tessera.pb-c.h"

#define QIDO_MAX_KEYS 64
#define QIDO_MAX_VALUE 1024

#define T TS_TAG
#define P TS_LEVEL_PATIENT
#define S TS_LEVEL_STUDY
#define E TS_LEVEL_SERIES
#define I TS_LEVEL_INSTANCE

typedef struct qido_attr {
    uint32_t tag;
    ts_level level;
} qido_attr;

/* The attributes QIDO matches on: PS3.18 Table 10.6.1-5's required keys and
 * the others the index keeps (services/query/query_match.c has their SQL). */
static const qido_attr MATCHABLE[] = {
    {T(0x0010, 0x0010), P}, {T(0x0010, 0x0020), P}, {T(0x0010, 0x0030), P}, {T(0x0010, 0x0040), P},
    {T(0x0010, 0x1000), P}, {T(0x0008, 0x0020), S}, {T(0x0008, 0x0030), S}, {T(0x0020, 0x0010), S},
    {T(0x0008, 0x1030), S}, {T(0x0008, 0x0050), S}, {T(0x0020, 0x000d), S}, {T(0x0032, 0x1060), S},
    {T(0x0008, 0x0080), S}, {T(0x0032, 0x1032), S}, {T(0x0008, 0x0090), S}, {T(0x0008, 0x0061), S},
    {T(0x0008, 0x0021), E}, {T(0x0008, 0x0031), E}, {T(0x0008, 0x0060), E}, {T(0x0008, 0x0070), E},
    {T(0x0008, 0x1010), E}, {T(0x0008, 0x103e), E}, {T(0x0018, 0x0015), E}, {T(0x0018, 0x1030), E},
    {T(0x0020, 0x0011), E}, {T(0x0020, 0x000e), E}, {T(0x0008, 0x1070), E}, {T(0x0008, 0x0018), I},
    {T(0x0008, 0x0016), I}, {T(0x0020, 0x0013), I}, {T(0x0008, 0x0012), I}, {T(0x0008, 0x0013), I},
    {T(0x0020, 0x0012), I}, {T(0x0028, 0x0008), I}, {T(0x0020, 0x4000), I}, {T(0x0040, 0x0244), E},
    {T(0x0040, 0x0245), E}, {T(0x0040, 0x0275), E},
};

#define TAG_REQUEST_ATTRIBUTES T(0x0040, 0x0275)

/* Attributes of sequence items QIDO matches on, as "Sequence.Attribute"
 * (keywords or tags): the sequence matches when one of its items matches
 * every such key (PS3.4 C.2.2.2.6). */
static const struct {
    uint32_t sequence, tag;
} ITEM_MATCHABLE[] = {
    {TAG_REQUEST_ATTRIBUTES, T(0x0040, 0x0009)}, /* ScheduledProcedureStepID */
    {TAG_REQUEST_ATTRIBUTES, T(0x0040, 0x1001)}, /* RequestedProcedureID */
};

/* What each level answers without includefield (PS3.18 Tables 10.6.3-3 to
 * -5, as far as the index holds them; RetrieveURL and InstanceAvailability
 * are added to every match). */
static const uint32_t STUDY_TAGS[] = {
    T(0x0008, 0x0020), T(0x0008, 0x0030), T(0x0008, 0x0050), T(0x0008, 0x0061), T(0x0008, 0x0090),
    T(0x0010, 0x0010), T(0x0010, 0x0020), T(0x0010, 0x0030), T(0x0010, 0x0040), T(0x0020, 0x000d),
    T(0x0020, 0x0010), T(0x0008, 0x1030), T(0x0020, 0x1206), T(0x0020, 0x1208), 0};
static const uint32_t SERIES_TAGS[] = {T(0x0008, 0x0060), T(0x0008, 0x103e), T(0x0020, 0x000e),
                                       T(0x0020, 0x0011), T(0x0020, 0x1209), T(0x0008, 0x0021),
                                       T(0x0008, 0x0031), T(0x0020, 0x000d), T(0x0040, 0x0244),
                                       T(0x0040, 0x0245), T(0x0040, 0x0275), 0};
static const uint32_t INSTANCE_TAGS[] = {T(0x0008, 0x0016),
                                         T(0x0008, 0x0018),
                                         T(0x0020, 0x0013),
                                         T(0x0028, 0x0008),
                                         T(0x0020, 0x000d),
                                         T(0x0020, 0x000e),
                                         0};
/* instance attributes that are not main tags, read from the stored metadata */
static const uint32_t INSTANCE_STORED_TAGS[] = {T(0x0028, 0x0010), T(0x0028, 0x0011),
                                                T(0x0028, 0x0100), 0};

#undef T
#undef P
#undef S
#undef E
#undef I

#define TAG_RETRIEVE_URL TS_TAG(0x0008, 0x1190)
#define TAG_AVAILABILITY TS_TAG(0x0008, 0x0056)

static const qido_attr *matchable(uint32_t tag)
{
    for (size_t i = 0; i < sizeof(MATCHABLE) / sizeof(MATCHABLE[0]); i++)
        if (MATCHABLE[i].tag == tag)
            return &MATCHABLE[i];
    return NULL;
}

typedef struct qido {
    rest_request *req;
    ts_level level;
    bool failed; /* answered already */
    Tessera__FindTagValue keys[QIDO_MAX_KEYS];
    Tessera__FindTagValue *key_ptrs[QIDO_MAX_KEYS];
    char *values[QIDO_MAX_KEYS]; /* owned copies */
    size_t nkeys;
    uint32_t fields[QIDO_MAX_KEYS * 2]; /* return keys */
    size_t nfields;
    bool all;
    long limit, offset;
    bool fuzzy;
} qido;

static void add_field(qido *q, uint32_t tag)
{
    for (size_t i = 0; i < q->nfields; i++)
        if (q->fields[i] == tag)
            return;
    if (q->nfields < sizeof(q->fields) / sizeof(q->fields[0]))
        q->fields[q->nfields++] = tag;
}

static void fail(qido *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(qido *q, const char *fmt, ...)
{
    if (q->failed)
        return;
    q->failed = true;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dw_error(q->req, 400, "%s", msg);
}

static bool parse_long(const char *v, long *out)
{
    char *end;
    long n = v && *v ? strtol(v, &end, 10) : -1;
    if (!v || !*v || *end || n < 0)
        return false;
    *out = n;
    return true;
}

static void add_key(qido *q, uint32_t tag, const char *value, uint32_t sequence)
{
    if (q->nkeys == QIDO_MAX_KEYS) {
        fail(q, "more than %d query keys", QIDO_MAX_KEYS);
        return;
    }
    char *v = strdup(value);
    if (!v)
        abort();
    char vr[3];
    ts_dicom_tag_vr(tag, vr);
    /* QIDO lists UIDs (and codes) with commas; the matcher takes DICOM's '\' */
    if (strcmp(vr, "UI") == 0 || strcmp(vr, "CS") == 0)
        for (char *c = v; *c; c++)
            if (*c == ',')
                *c = '\\';
    size_t k = q->nkeys++;
    tessera__find_tag_value__init(&q->keys[k]);
    q->keys[k].tag = tag;
    q->keys[k].value = v;
    q->keys[k].sequence = sequence;
    q->values[k] = v;
    q->key_ptrs[k] = &q->keys[k];
}

/* "Sequence.Attribute" (keywords or tags, e.g. "00400275.00400009"): the
 * sequence's tag and the item attribute's (item may be NULL). */
static bool parse_item_path(const char *s, uint32_t *sequence, uint32_t *item)
{
    const char *dot = strchr(s, '.');
    char head[80];
    uint32_t it;
    if (!dot || (size_t)(dot - s) >= sizeof(head) || strchr(dot + 1, '.'))
        return false;
    snprintf(head, sizeof(head), "%.*s", (int)(dot - s), s);
    if (!ts_dicom_parse_tag(head, sequence) || !ts_dicom_parse_tag(dot + 1, &it))
        return false;
    if (item)
        *item = it;
    return true;
}

static bool is_sequence(uint32_t tag)
{
    char vr[3];
    ts_dicom_tag_vr(tag, vr);
    return strcmp(vr, "SQ") == 0;
}

static bool item_matchable(uint32_t sequence, uint32_t tag)
{
    for (size_t i = 0; i < sizeof(ITEM_MATCHABLE) / sizeof(ITEM_MATCHABLE[0]); i++)
        if (ITEM_MATCHABLE[i].sequence == sequence && ITEM_MATCHABLE[i].tag == tag)
            return true;
    return false;
}

static void parse_includefield(qido *q, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (!copy)
        abort();
    char *save = NULL;
    for (char *f = strtok_r(copy, ",", &save); f && !q->failed; f = strtok_r(NULL, ",", &save)) {
        f += strspn(f, " ");
        uint32_t tag;
        if (strcasecmp(f, "all") == 0)
            q->all = true;
        else if (ts_dicom_parse_tag(f, &tag))
            add_field(q, tag);
        else if (parse_item_path(f, &tag, NULL))
            add_field(q, tag); /* the sequence, with its items */
        else
            fail(q, "includefield: \"%.80s\" is neither a DICOM keyword nor a tag", f);
    }
    free(copy);
}

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    qido *q = cls;
    (void)kind;
    if (q->failed)
        return MHD_NO;
    if (strlen(key) > 128 || (value && strlen(value) > QIDO_MAX_VALUE)) {
        fail(q, "query parameter \"%.40s\" is longer than %d bytes", key, QIDO_MAX_VALUE);
        return MHD_NO;
    }
    if (strcmp(key, "includefield") == 0) {
        parse_includefield(q, value);
    } else if (strcmp(key, "limit") == 0) {
        if (!parse_long(value, &q->limit))
            fail(q, "limit: \"%.40s\" is not a non-negative integer", value ? value : "");
    } else if (strcmp(key, "offset") == 0) {
        if (!parse_long(value, &q->offset))
            fail(q, "offset: \"%.40s\" is not a non-negative integer", value ? value : "");
    } else if (strcmp(key, "fuzzymatching") == 0) {
        if (value && strcmp(value, "true") == 0)
            q->fuzzy = true;
        else if (!value || strcmp(value, "false") != 0)
            fail(q, "fuzzymatching: \"%.40s\" is neither true nor false", value ? value : "");
    } else {
        uint32_t tag, item;
        const qido_attr *a;
        char name[80];
        if (strchr(key, '.') && parse_item_path(key, &tag, &item)) {
            char item_name[80];
            ts_dicom_tag_name(tag, name, sizeof(name));
            ts_dicom_tag_name(item, item_name, sizeof(item_name));
            if (!item_matchable(tag, item))
                fail(q, "%s.%s (%.80s) is not an attribute Tessera matches on", name, item_name,
                     key);
            else if (q->level < TS_LEVEL_SERIES)
                fail(q, "%s is not an attribute of the level searched (study or above)", name);
            else {
                add_key(q, item, value ? value : "", tag);
                add_field(q, tag); /* a matching key is returned (PS3.18 10.6.3.3.1) */
            }
        } else if (!ts_dicom_parse_tag(key, &tag)) {
            fail(q,
                 "\"%.80s\" is neither a DICOM attribute (keyword or tag) nor a QIDO-RS "
                 "parameter",
                 key);
        } else if (!(a = matchable(tag))) {
            ts_dicom_tag_name(tag, name, sizeof(name));
            fail(q, "%s (%.80s) is not an attribute Tessera matches on", name, key);
        } else if (a->level > q->level) {
            static const char *const levels[] = {"patient", "study", "series", "instance"};
            ts_dicom_tag_name(tag, name, sizeof(name));
            fail(q, "%s is not an attribute of the level searched (%s or above)", name,
                 levels[q->level]);
        } else if (is_sequence(tag) && value && *value) {
            ts_dicom_tag_name(tag, name, sizeof(name));
            fail(q, "%s is a sequence: match on its items' attributes (%s.Attribute=value)", name,
                 name);
        } else {
            add_key(q, tag, value ? value : "", 0);
        }
    }
    return q->failed ? MHD_NO : MHD_YES;
}

static void add_fields(qido *q, const uint32_t *tags)
{
    for (; *tags; tags++)
        add_field(q, *tags);
}

/* Removes every attribute that holds bulk data (a BulkDataURI), at any depth:
 * QIDO answers carry no bulk data. */
static void drop_bulk(json_t *obj)
{
    const char *key;
    json_t *attr;
    void *tmp;
    json_object_foreach_safe(obj, tmp, key, attr)
    {
        if (json_object_get(attr, "BulkDataURI")) {
            json_object_del(obj, key);
            continue;
        }
        json_t *items = json_object_get(attr, "Value");
        size_t i;
        json_t *item;
        if (json_is_array(items))
            json_array_foreach(items, i, item) if (json_is_object(item)) drop_bulk(item);
    }
}

/* The stored attributes of the matched instances that the index does not
 * keep (Rows, Columns, BitsAllocated, includefield's others; every one for
 * "all"), added to each answer object that lacks them. One read; instances
 * stored before 0011_instance_dicomweb.sql have nothing stored and get none. */
static const ts_db_stmt stored_attrs = {
    "rest_dw_qido_stored",
    "SELECT r.public_id, CASE WHEN $2::boolean THEN i.dicomweb::text ELSE"
    " (SELECT json_object_agg(k, i.dicomweb->k) FROM unnest($3::text[]) k"
    "  WHERE i.dicomweb->k IS NOT NULL)::text END"
    " FROM resources r JOIN instances i ON i.resource_id = r.id"
    " WHERE r.public_id = ANY ($1::text[]) AND i.dicomweb IS NOT NULL",
    3};

static bool add_stored(qido *q, Tessera__FindReply *r, json_t *answers)
{
    size_t cap = 3 + r->n_matches * 48 + 1;
    char *ids = malloc(cap), *keys = malloc(3 + q->nfields * 10);
    if (!ids || !keys)
        abort();
    size_t n = 0, m = 0;
    ids[n++] = '{';
    for (size_t i = 0; i < r->n_matches; i++) {
        const char *id = r->matches[i]->public_id;
        if (ts_id_is_valid(id))
            n += (size_t)snprintf(ids + n, cap - n, "%s%s", n > 1 ? "," : "", id);
    }
    snprintf(ids + n, cap - n, "}");
    keys[m++] = '{';
    for (size_t i = 0; i < q->nfields; i++)
        m += (size_t)sprintf(keys + m, "%s%08X", m > 1 ? "," : "", q->fields[i]);
    sprintf(keys + m, "}");
    const char *params[] = {ids, q->all ? "true" : "false", keys};
    PGresult *res = rest_rows_query(q->req, &stored_attrs, params);
    free(ids);
    free(keys);
    if (!res)
        return false;
    for (int row = 0; row < PQntuples(res); row++) {
        json_t *attrs = json_loads(PQgetvalue(res, row, 1), 0, NULL);
        if (!json_is_object(attrs)) {
            json_decref(attrs);
            continue;
        }
        drop_bulk(attrs);
        for (size_t i = 0; i < r->n_matches; i++) {
            if (strcmp(r->matches[i]->public_id, PQgetvalue(res, row, 0)) != 0)
                continue;
            json_t *obj = json_array_get(answers, i);
            const char *key;
            json_t *attr;
            json_object_foreach(attrs, key, attr) if (!json_object_get(obj, key))
                json_object_set(obj, key, attr);
        }
        json_decref(attrs);
    }
    PQclear(res);
    return true;
}

/* A sequence as the index keeps it (a JSON array of items {"ggggeeee": value},
 * 0038_series_request_attributes.sql) in DICOM JSON; "": no items. */
static json_t *sequence_json(const char *stored)
{
    json_t *out = json_pack("{s:s}", "vr", "SQ");
    json_t *items = *stored ? json_loads(stored, 0, NULL) : NULL;
    if (json_is_array(items) && json_array_size(items) > 0) {
        json_t *value = json_array();
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            json_t *obj = json_object();
            const char *k;
            json_t *v;
            uint32_t tag;
            char vr[3];
            json_object_foreach(item, k, v) if (json_is_string(v) && ts_dicom_parse_tag(k, &tag))
            {
                ts_dicom_tag_vr(tag, vr);
                json_object_set_new(obj, k, ts_dicomweb_attribute(vr, json_string_value(v)));
            }
            json_array_append_new(value, obj);
        }
        json_object_set_new(out, "Value", value);
    }
    json_decref(items);
    return out;
}

/* One match as DICOM JSON, with its RetrieveURL and InstanceAvailability. */
static json_t *match_json(qido *q, const Tessera__FindMatch *m, const char *root)
{
    json_t *obj = json_object();
    const char *uids[3] = {NULL, NULL, NULL};
    for (size_t t = 0; t < m->n_tags; t++) {
        const Tessera__FindTagValue *tv = m->tags[t];
        char vr[3], key[9];
        ts_dicom_tag_vr(tv->tag, vr);
        snprintf(key, sizeof(key), "%08X", tv->tag);
        json_object_set_new(obj, key,
                            strcmp(vr, "SQ") == 0 ? sequence_json(tv->value)
                                                  : ts_dicomweb_attribute(vr, tv->value));
        if (tv->tag == TS_TAG_STUDY_INSTANCE_UID)
            uids[0] = tv->value;
        else if (tv->tag == TS_TAG_SERIES_INSTANCE_UID)
            uids[1] = tv->value;
        else if (tv->tag == TS_TAG_SOP_INSTANCE_UID)
            uids[2] = tv->value;
    }
    char url[1024];
    int n = snprintf(url, sizeof(url), "%s/studies/%s", root, uids[0] ? uids[0] : "");
    if (q->level >= TS_LEVEL_SERIES && n > 0 && (size_t)n < sizeof(url))
        n += snprintf(url + n, sizeof(url) - (size_t)n, "/series/%s", uids[1] ? uids[1] : "");
    if (q->level == TS_LEVEL_INSTANCE && n > 0 && (size_t)n < sizeof(url))
        snprintf(url + n, sizeof(url) - (size_t)n, "/instances/%s", uids[2] ? uids[2] : "");
    json_object_set_new(obj, "00081190", ts_dicomweb_attribute("UR", url));
    json_object_set_new(obj, "00080056", ts_dicomweb_attribute("CS", "ONLINE"));
    return obj;
}

void rest_dw_search(rest_request *req)
{
    dw_cors(req);
    qido *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->req = req;
    ProtobufCMessage *reply = NULL;
    const char *last = req->seg[req->nseg - 1];
    q->level = strcmp(last, "studies") == 0  ? TS_LEVEL_STUDY
               : strcmp(last, "series") == 0 ? TS_LEVEL_SERIES
                                             : TS_LEVEL_INSTANCE;
    bool xml;
    if (!dw_accept_dataset(req, &xml))
        goto out;
    /* the UIDs of the path are keys like the others */
    for (int k = 0; k < 2 && 2 + 2 * k < req->nseg - 1; k++) {
        const char *uid = req->seg[2 + 2 * k];
        if (!dw_uid_valid(uid)) {
            fail(q, "\"%.80s\" is not a UID", uid);
            goto out;
        }
        add_key(q, k == 0 ? TS_TAG_STUDY_INSTANCE_UID : TS_TAG_SERIES_INSTANCE_UID, uid, 0);
    }
    bool study_in_path = req->nseg > 3;
    bool series_in_path = req->nseg > 5;
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, on_arg, q);
    if (q->failed)
        goto out;
    /* PS3.18 10.6.3.3: a search without the parent in its path answers the
     * parent's attributes too */
    if (q->level == TS_LEVEL_STUDY || !study_in_path)
        add_fields(q, STUDY_TAGS);
    if (q->level == TS_LEVEL_SERIES || (q->level == TS_LEVEL_INSTANCE && !series_in_path))
        add_fields(q, SERIES_TAGS);
    if (q->level == TS_LEVEL_INSTANCE) {
        add_fields(q, INSTANCE_TAGS);
        add_fields(q, INSTANCE_STORED_TAGS);
    }
    if (!req->ctx->query) {
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE,
                      "no query service configured (TESSERA_QUERY_BUS)");
        goto out;
    }
    Tessera__FindRequest fr = TESSERA__FIND_REQUEST__INIT;
    fr.level = (Tessera__ResourceLevel)q->level;
    fr.n_query = q->nkeys;
    fr.query = q->key_ptrs;
    fr.n_requested_tags = q->nfields;
    fr.requested_tags = q->fields;
    fr.expand = q->all;
    fr.limit = q->limit;
    fr.since = q->offset;
    char *visible[REST_MAX_GRANTS];
    rest_find_restrict(req, &fr, visible, REST_MAX_GRANTS);
    fr.case_matching = !q->fuzzy && ts_cfg_bool(TESSERA_QUERY_CASE_SENSITIVE_PN)
                           ? TESSERA__CASE_MATCHING__CASE_EXACT
                           : TESSERA__CASE_MATCHING__CASE_FOLD_PERSON_NAMES;
    ts_err err;
    int rc = ts_bus_call(req->ctx->query, &fr.base, &tessera__find_reply__descriptor, &reply,
                         req->ctx->bus_timeout_ms, &err);
    if (rc) {
        rest_reply_failure(req, rc == TS_ETIMEOUT ? TS_EDB_BUSY : rc, err.msg);
        goto out;
    }
    Tessera__FindReply *r = (Tessera__FindReply *)reply;
    if (r->status == TESSERA__FIND_STATUS__FIND_BAD_REQUEST) {
        dw_error(req, 400, "%s", r->error);
        goto out;
    }
    if (r->status == TESSERA__FIND_STATUS__FIND_DB_UNAVAILABLE) {
        rest_reply_failure(req, TS_EDB_BUSY, r->error);
        goto out;
    }
    if (r->status != TESSERA__FIND_STATUS__FIND_OK) {
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, r->error);
        goto out;
    }
    if (r->n_matches == 0) {
        rest_reply_empty(req, 204);
        goto out;
    }
    char root[320];
    dw_root(req, root, sizeof(root));
    json_t *answers = json_array();
    for (size_t i = 0; i < r->n_matches; i++)
        json_array_append_new(answers, match_json(q, r->matches[i], root));
    if (q->level == TS_LEVEL_INSTANCE && !add_stored(q, r, answers)) {
        json_decref(answers);
        goto out;
    }
    if (xml) {
        dw_reply_xml(req, answers);
        json_decref(answers);
    } else {
        dw_reply_json(req, 200, answers);
    }
    /* cut by the query service's own maximum, not by the client's limit */
    if (r->truncated && (q->limit == 0 || (long)r->n_matches < q->limit))
        rest_add_header(req, "Warning",
                        "299 tessera: \"The number of results exceeded the maximum supported by "
                        "the server. Additional results can be requested.\"");
out:
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    for (size_t i = 0; i < q->nkeys; i++)
        free(q->values[i]);
    free(q);
}
