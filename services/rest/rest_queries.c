/* Query/retrieve as an SCU (see rest_queries.h). What Orthanc 1.10.1 answers
 * is the reference, bodies and error bodies included; the differences are
 * listed in tests/integration/test_queries.py. A query is kept in Redis as
 * {"Level", "Modality", "Query", "Normalize", "LocalAet", "Timeout", "AET",
 * "Host", "Port", "Answers"}: queries and answers in Orthanc's "Short" form
 * ({"gggg,eeee": "value"}), the modality as it was when the query ran (a
 * retrieve goes where the query went, as in Orthanc). */
#include "rest_queries.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/config.h"
#include "dicom/dicom.h"
#include "dicom/dicom_qr_scu.h"
#include "base/log.h"
#include "domain/queries.h"
#include "rest_common.h"
#include "rest_jobs.h"
#include "rest_modalities.h"

#define QUERY_BODY_MAX (64 * 1024)
#define MOVE_BODY_MAX (4 * 1024 * 1024)
#define QUERY_KEYS_MAX 256

/* ---- small helpers ------------------------------------------------------ */

static void bad_format(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, details);
}

static void bad_type(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_PARAMETER_TYPE, details);
}

static void out_of_range(rest_request *req)
{
    rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, NULL);
}

static ts_redis *open_queries(rest_request *req)
{
    ts_redis *q = NULL;
    ts_err err;
    if (ts_redis_open(ts_cfg_str(TESSERA_REDIS_URL), 5000, &q, &err)) {
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
        return NULL;
    }
    return q;
}

/* Orthanc's StringToResourceType: case-insensitive, plurals and IMAGE too. */
static bool parse_level(const char *s, ts_level *level)
{
    static const struct {
        const char *name;
        ts_level level;
    } names[] = {{"PATIENT", TS_LEVEL_PATIENT}, {"PATIENTS", TS_LEVEL_PATIENT},
                 {"STUDY", TS_LEVEL_STUDY},     {"STUDIES", TS_LEVEL_STUDY},
                 {"SERIES", TS_LEVEL_SERIES},   {"INSTANCE", TS_LEVEL_INSTANCE},
                 {"IMAGE", TS_LEVEL_INSTANCE},  {"INSTANCES", TS_LEVEL_INSTANCE},
                 {"IMAGES", TS_LEVEL_INSTANCE}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *level = names[i].level;
            return true;
        }
    return false;
}

static const char *qr_level_name(ts_level level)
{
    static const char *const names[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
    return names[level];
}

/* A modality's configuration (rest_modalities.h), as the C-FIND and C-MOVE
 * routes use it. */
typedef struct modality {
    json_t *conf;
    const char *aet, *host; /* in conf */
    int port;
    bool tls; /* UseDicomTls */
} modality;

/* The modality `name`, or false after answering (404 as Orthanc, or a failure). */
static bool find_modality(rest_request *req, const char *name, modality *m)
{
    memset(m, 0, sizeof(*m));
    if (!(m->conf = rest_modality_find(req, name)))
        return false;
    m->aet = json_string_value(json_object_get(m->conf, "AET"));
    m->host = json_string_value(json_object_get(m->conf, "Host"));
    m->port = (int)json_integer_value(json_object_get(m->conf, "Port"));
    m->tls = json_is_true(json_object_get(m->conf, "UseDicomTls"));
    return true;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A copy of an object with its keys sorted ("gggg,eeee" sorts as tags do). */
static json_t *sorted_copy(const json_t *o)
{
    size_t n = json_object_size(o), i = 0;
    const char **keys = calloc(n + 1, sizeof(*keys));
    if (!keys)
        abort();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_key);
    json_t *out = json_object();
    for (i = 0; i < n; i++)
        json_object_set(out, keys[i], json_object_get(o, keys[i]));
    free(keys);
    return out;
}

typedef enum { FORMAT_FULL, FORMAT_SHORT, FORMAT_HUMAN } dicom_format;

/* Orthanc's GetDicomFormat of a GET: ?simplify, then ?short, else `def`. */
static dicom_format format_of_args(rest_request *req, dicom_format def)
{
    if (rest_flag(req, "simplify"))
        return FORMAT_HUMAN;
    if (rest_flag(req, "short"))
        return FORMAT_SHORT;
    if (rest_flag(req, "full"))
        return FORMAT_FULL;
    return def;
}

/* The same from a JSON body (Simplify, Short, Full); false after answering. */
static bool format_of_body(rest_request *req, const json_t *body, dicom_format *fmt)
{
    static const struct {
        const char *key;
        dicom_format fmt;
    } keys[] = {{"Simplify", FORMAT_HUMAN}, {"Short", FORMAT_SHORT}, {"Full", FORMAT_FULL}};
    *fmt = FORMAT_SHORT;
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(body, keys[i].key);
        if (!v)
            continue;
        if (!json_is_boolean(v)) {
            char details[96];
            snprintf(details, sizeof(details), "Boolean value expected in field: %s", keys[i].key);
            bad_format(req, details);
            return false;
        }
        if (json_is_true(v)) {
            *fmt = keys[i].fmt;
            return true;
        }
    }
    return true;
}

/* A {"gggg,eeee": "value"} map in one of Orthanc's forms. */
static json_t *in_format(const json_t *map, dicom_format fmt)
{
    json_t *sorted = sorted_copy(map);
    if (fmt == FORMAT_SHORT)
        return sorted;
    json_t *full = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(sorted, k, v)
    {
        uint32_t tag;
        char name[96] = "";
        if (ts_dicom_parse_tag(k, &tag))
            ts_dicom_tag_name(tag, name, sizeof(name));
        if (!name[0] || (strlen(name) == 9 && name[4] == ','))
            snprintf(name, sizeof(name), "Unknown Tag & Data");
        if (json_is_string(v))
            json_object_set_new(
                full, k, json_pack("{s:s, s:s, s:O}", "Name", name, "Type", "String", "Value", v));
        else
            json_object_set_new(
                full, k, json_pack("{s:s, s:s, s:n}", "Name", name, "Type", "Null", "Value"));
    }
    json_decref(sorted);
    if (fmt == FORMAT_FULL)
        return full;
    json_t *human = ts_dicom_orthanc_simplify(full);
    json_decref(full);
    return human;
}

/* A map of tags to strings as Orthanc reads one from JSON (names or
 * "gggg,eeee" keys) into "gggg,eeee" keys; NULL when a key is no tag or a
 * value no string. *unknown_tag tells which. */
static json_t *read_tags(const json_t *o, bool *unknown_tag)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    *unknown_tag = false;
    json_object_foreach((json_t *)o, k, v)
    {
        uint32_t tag;
        if (!ts_dicom_parse_tag(k, &tag)) {
            *unknown_tag = true;
            json_decref(out);
            return NULL;
        }
        if (!json_is_string(v)) {
            json_decref(out);
            return NULL;
        }
        char key[10];
        ts_dicom_tag_key(tag, key);
        json_object_set(out, key, v);
    }
    return out;
}

/* An answer index as boost::lexical_cast<size_t> reads it; false after
 * answering (400 as Orthanc). */
static bool parse_index(rest_request *req, const char *s, size_t count, size_t *index)
{
    const char *p = s;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    if (!*p || strlen(p) > 19) {
        bad_type(req, "Syntax error in some user-supplied data");
        return false;
    }
    unsigned long long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            bad_type(req, "Syntax error in some user-supplied data");
            return false;
        }
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (neg && v)
        v = ~0ULL; /* wraps round: out of range */
    if (v >= count) {
        out_of_range(req);
        return false;
    }
    *index = (size_t)v;
    return true;
}

/* The query of the request's /queries/{id}, or NULL after answering. */
static json_t *load_query(rest_request *req)
{
    ts_redis *q = open_queries(req);
    if (!q)
        return NULL;
    ts_err err;
    json_t *o = NULL;
    int rc = ts_queries_get(q, req->seg[1], &o, &err);
    ts_redis_free(q);
    if (rc == TS_ENOTFOUND)
        rest_reply_unknown_resource(req);
    else if (rc)
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
    return rc ? NULL : o;
}

/* ---- POST /modalities/{id}/query ----------------------------------------- */

/* Runs a C-FIND on modality m (named `name`), keeps its answers and answers
 * {"ID", "Path"} as Orthanc does, or its error. query: "gggg,eeee" -> value. */
static void run_query(rest_request *req, const char *name, const modality *m, ts_level level,
                      json_t *query, bool normalize, int timeout, const char *local)
{
    json_t *answers = NULL, *stored = NULL;
    ts_dicom_qr_key keys[QUERY_KEYS_MAX];
    query = sorted_copy(query);
    size_t nkeys = 0;
    const char *k;
    json_t *v;
    json_object_foreach(query, k, v)
    {
        ts_dicom_parse_tag(k, &keys[nkeys].tag);
        keys[nkeys++].value = json_string_value(v);
    }
    rest_modality_settings(m->conf, &timeout, &local);
    ts_dicom_peer peer = {.our_aet = local,
                          .aet = m->aet,
                          .host = m->host,
                          .port = m->port,
                          .timeout_s =
                              timeout > 0 ? timeout : (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
                          .tls = m->tls};
    ts_err err;
    int rc = ts_dicom_find_scu(&peer, level, keys, nkeys, normalize,
                               (size_t)ts_cfg_int(TESSERA_QUERY_LIMIT), &answers, &err);
    if (rc) {
        ts_info("C-FIND failed", "modality=%s error=\"%s\"", name, err.msg);
        if (rc == TS_EINVAL) { /* a key that cannot be put in an identifier (a sequence) */
            bad_format(req, err.msg);
            goto out;
        }
        /* Orthanc answers 422 when the peer could not process the query */
        rest_reply_oe_status(req,
                             rc == TS_EDICOM && strstr(err.msg, "(unable to process") ? 422 : 500,
                             TS_OE_NETWORK_PROTOCOL, err.msg);
        goto out;
    }
    stored = json_pack("{s:s, s:s, s:O, s:b, s:s, s:i, s:s, s:s, s:i, s:b, s:O}", "Level",
                       ts_level_name(level), "Modality", name, "Query", query, "Normalize",
                       normalize, "LocalAet", local, "Timeout", timeout, "AET", m->aet, "Host",
                       m->host, "Port", m->port, "UseDicomTls", m->tls, "Answers", answers);
    ts_redis *q = open_queries(req);
    if (!q)
        goto out;
    char id[TS_QUERY_ID_LEN + 1];
    rc = ts_queries_add(q, stored, (int)ts_cfg_int(TESSERA_QUERIES_TTL),
                        (int)ts_cfg_int(TESSERA_QUERIES_HISTORY), id, &err);
    ts_redis_free(q);
    if (rc) {
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
        goto out;
    }
    ts_info("C-FIND done", "modality=%s level=%s answers=%zu query=%s", name, ts_level_name(level),
            json_array_size(answers), id);
    char path[64];
    snprintf(path, sizeof(path), "/queries/%s", id);
    rest_reply_json(req, 200, json_pack("{s:s, s:s}", "ID", id, "Path", path));
out:
    json_decref(stored);
    json_decref(answers);
    json_decref(query);
}

void rest_modality_query(rest_request *req)
{
    json_t *body = NULL, *query = NULL;
    modality m = {0};
    if (!rest_body_within(req, QUERY_BODY_MAX))
        goto out;
    json_error_t jerr;
    body = req->body_len ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    if (!json_is_object(body)) {
        bad_format(req, "Must provide a JSON object");
        goto out;
    }
    const json_t *level_v = json_object_get(body, "Level");
    const json_t *normalize_v = json_object_get(body, "Normalize");
    const json_t *query_v = json_object_get(body, "Query");
    if (!json_is_string(level_v)) {
        bad_format(req, "The JSON body must contain field Level");
        goto out;
    }
    if (normalize_v && !json_is_boolean(normalize_v)) {
        bad_format(req, "The field Normalize must contain a Boolean");
        goto out;
    }
    if (query_v && !json_is_object(query_v)) {
        bad_format(req, "The field Query must contain a JSON object");
        goto out;
    }
    if (!find_modality(req, req->seg[1], &m))
        goto out;
    ts_level level;
    if (!parse_level(json_string_value(level_v), &level)) {
        out_of_range(req);
        goto out;
    }
    const json_t *timeout_v = json_object_get(body, "Timeout");
    if (timeout_v && !json_is_integer(timeout_v)) {
        bad_format(req, "Integer value expected in field: Timeout");
        goto out;
    }
    const json_t *local_v = json_object_get(body, "LocalAet");
    if (local_v && (!json_is_string(local_v) || !json_string_value(local_v)[0] ||
                    strlen(json_string_value(local_v)) > 16)) {
        bad_format(req, "String value of 1 to 16 characters expected in field: LocalAet");
        goto out;
    }
    bool unknown_tag;
    query = query_v ? read_tags(query_v, &unknown_tag) : json_object();
    if (!query || json_object_size(query) > QUERY_KEYS_MAX) {
        bad_format(req, "Associative array of DICOM tags to strings expected in field: Query");
        goto out;
    }
    bool normalize = !normalize_v || json_is_true(normalize_v);
    int timeout = timeout_v ? (int)json_integer_value(timeout_v) : 0;
    const char *local = local_v ? json_string_value(local_v) : ts_cfg_str(TESSERA_DICOM_AET);
    run_query(req, req->seg[1], &m, level, query, normalize, timeout, local);
out:
    json_decref(m.conf);
    json_decref(query);
    json_decref(body);
}

/* ---- reading /queries ------------------------------------------------------ */

void rest_queries_list(rest_request *req)
{
    ts_redis *q = open_queries(req);
    if (!q)
        return;
    ts_err err;
    json_t *ids = NULL;
    if (ts_queries_list(q, &ids, &err))
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
    else
        rest_reply_json(req, 200, ids);
    ts_redis_free(q);
}

void rest_query_get(rest_request *req)
{
    json_t *o = load_query(req);
    if (!o)
        return;
    json_decref(o);
    rest_reply_json(
        req, 200,
        json_pack("[s, s, s, s, s]", "answers", "level", "modality", "query", "retrieve"));
}

void rest_query_delete(rest_request *req)
{
    ts_redis *q = open_queries(req);
    if (!q)
        return;
    ts_err err;
    if (ts_queries_delete(q, req->seg[1], &err))
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
    else
        rest_reply_text(req, 200, "", 0);
    ts_redis_free(q);
}

void rest_query_answers(rest_request *req)
{
    json_t *o = load_query(req);
    if (!o)
        return;
    json_t *answers = json_object_get(o, "Answers");
    json_t *out = json_array();
    bool expand = rest_flag(req, "expand");
    dicom_format fmt = format_of_args(req, FORMAT_FULL);
    for (size_t i = 0; i < json_array_size(answers); i++) {
        if (expand) {
            json_array_append_new(out, in_format(json_array_get(answers, i), fmt));
        } else {
            char n[24];
            snprintf(n, sizeof(n), "%zu", i);
            json_array_append_new(out, json_string(n));
        }
    }
    rest_reply_json(req, 200, out);
    json_decref(o);
}

/* The stored level of a query (as parse_level reads "Study"...). */
static ts_level level_of(const json_t *o)
{
    ts_level level = TS_LEVEL_STUDY;
    const char *s = json_string_value(json_object_get(o, "Level"));
    if (s)
        parse_level(s, &level);
    return level;
}

void rest_query_answer(rest_request *req)
{
    json_t *o = load_query(req);
    size_t index;
    if (o &&
        parse_index(req, req->seg[3], json_array_size(json_object_get(o, "Answers")), &index)) {
        /* Orthanc 1.10.1's list, its "query-study" included (the route is
         * query-studies) */
        json_t *ops = json_pack("[s, s]", "content", "retrieve");
        ts_level level = level_of(o);
        if (level == TS_LEVEL_PATIENT)
            json_array_append_new(ops, json_string("query-study"));
        if (level <= TS_LEVEL_STUDY)
            json_array_append_new(ops, json_string("query-series"));
        if (level <= TS_LEVEL_SERIES)
            json_array_append_new(ops, json_string("query-instances"));
        rest_reply_json(req, 200, ops);
    }
    json_decref(o);
}

/* POST /queries/{id}/answers/{n}/query-studies|query-series|query-instances:
 * a new query one level down, restricted to the answer's resource. */
void rest_query_children(rest_request *req)
{
    json_t *o = NULL, *body = NULL, *query = NULL;
    modality m = {0};
    if (!rest_body_within(req, QUERY_BODY_MAX) || !(o = load_query(req)))
        goto out;
    json_t *answers = json_object_get(o, "Answers");
    size_t index;
    if (!parse_index(req, req->seg[3], json_array_size(answers), &index))
        goto out;
    ts_level parent = level_of(o), child;
    if (strcmp(req->seg[4], "query-studies") == 0)
        child = TS_LEVEL_STUDY;
    else if (strcmp(req->seg[4], "query-series") == 0)
        child = TS_LEVEL_SERIES;
    else
        child = TS_LEVEL_INSTANCE;
    if (parent >= child) {
        rest_reply_unknown_resource(req);
        goto out;
    }
    json_error_t jerr;
    body = req->body_len ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    if (!json_is_object(body)) {
        bad_format(req, "Must provide a JSON object");
        goto out;
    }
    const json_t *query_v = json_object_get(body, "Query");
    bool unknown_tag;
    query = json_is_object(query_v) ? read_tags(query_v, &unknown_tag)
                                    : (query_v ? NULL : json_object());
    if (!query || json_object_size(query) > QUERY_KEYS_MAX - 3) {
        bad_format(req, "Associative array of DICOM tags to strings expected in field: Query");
        goto out;
    }
    /* what identifies the answer at its level (Orthanc's CopyStringTag) */
    static const char *const ids[][2] = {
        {"0010,0020", NULL}, {"0020,000d", NULL}, {"0020,000d", "0020,000e"}};
    json_t *answer = json_array_get(answers, index);
    for (int i = 0; i < 2 && ids[parent][i]; i++) {
        json_t *v = json_object_get(answer, ids[parent][i]);
        if (!json_is_string(v)) {
            rest_reply_oe(req, TS_OE_INEXISTENT_TAG, NULL);
            goto out;
        }
        json_object_set(query, ids[parent][i], v);
    }
    const char *name = json_string_value(json_object_get(o, "Modality"));
    if (!name || !find_modality(req, name, &m))
        goto out;
    run_query(req, name, &m, child, query, json_is_true(json_object_get(o, "Normalize")),
              (int)json_integer_value(json_object_get(o, "Timeout")),
              json_string_value(json_object_get(o, "LocalAet")));
out:
    json_decref(m.conf);
    json_decref(query);
    json_decref(body);
    json_decref(o);
}

void rest_query_answer_content(rest_request *req)
{
    json_t *o = load_query(req);
    json_t *answers = json_object_get(o, "Answers");
    size_t index;
    if (o && parse_index(req, req->seg[3], json_array_size(answers), &index))
        rest_reply_json(
            req, 200, in_format(json_array_get(answers, index), format_of_args(req, FORMAT_FULL)));
    json_decref(o);
}

void rest_query_field(rest_request *req)
{
    json_t *o = load_query(req);
    if (!o)
        return;
    const char *what = req->seg[2];
    if (strcmp(what, "query") == 0) {
        rest_reply_json(req, 200,
                        in_format(json_object_get(o, "Query"), format_of_args(req, FORMAT_FULL)));
    } else {
        const char *v = json_string_value(
            json_object_get(o, strcmp(what, "level") == 0 ? "Level" : "Modality"));
        rest_reply_text(req, 200, v ? v : "", v ? strlen(v) : 0);
    }
    json_decref(o);
}

/* ---- moves: retrieve and POST /modalities/{id}/move ------------------------- */

/* Synchronous/Asynchronous, Priority, Permissive as Orthanc's SubmitGenericJob
 * reads them; false after answering. */
static bool job_options(rest_request *req, const json_t *body, bool *asynchronous, int *priority,
                        bool *permissive)
{
    *asynchronous = false;
    *priority = 0;
    *permissive = false;
    const json_t *pm = json_object_get(body, "Permissive");
    const json_t *s = json_object_get(body, "Synchronous");
    const json_t *a = json_object_get(body, "Asynchronous");
    if (pm && !json_is_boolean(pm)) {
        bad_format(req, "Boolean value expected in field: Permissive");
        return false;
    }
    if (s && !json_is_boolean(s)) {
        bad_format(req, "Boolean value expected in field: Synchronous");
        return false;
    }
    if (!s && a && !json_is_boolean(a)) {
        bad_format(req, "Boolean value expected in field: Asynchronous");
        return false;
    }
    if (!rest_job_priority(req, body, priority))
        return false;
    *permissive = json_is_true(pm);
    *asynchronous = s ? json_is_false(s) : json_is_true(a);
    return true;
}

/* What DicomMoveScuJob shows of an identifier in its Content's "Query". */
static json_t *identifier_of(const json_t *answer)
{
    static const char *const keep[] = {"0008,0018", "0008,0050", "0008,0052",
                                       "0010,0020", "0020,000d", "0020,000e"};
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        json_t *v = json_object_get(answer, keep[i]);
        if (v)
            json_object_set(o, keep[i], v);
    }
    return o;
}

typedef struct move_job {
    const char *aet, *host, *local, *target;
    int port, timeout, priority;
    bool asynchronous, permissive, tls;
    dicom_format fmt;
    json_t *resources; /* identifiers, borrowed */
} move_job;

static void submit_move(rest_request *req, const move_job *mj)
{
    json_t *query = json_array();
    for (size_t i = 0; i < json_array_size(mj->resources); i++) {
        json_t *id = identifier_of(json_array_get(mj->resources, i));
        json_array_append_new(query, in_format(id, mj->fmt));
        json_decref(id);
    }
    json_t *content = json_pack("{s:s, s:s, s:o, s:s}", "Description", "REST API", "LocalAet",
                                mj->local, "Query", query, "RemoteAet", mj->aet);
    json_t *input = json_pack(
        "{s:s, s:s, s:i, s:b, s:s, s:s, s:i, s:b, s:O}", "AET", mj->aet, "Host", mj->host, "Port",
        mj->port, "UseDicomTls", mj->tls, "LocalAet", mj->local, "TargetAet", mj->target, "Timeout",
        mj->timeout, "Permissive", mj->permissive, "Resources", mj->resources);
    ts_info("C-MOVE job", "remote=%s target=%s identifiers=%zu", mj->aet, mj->target,
            json_array_size(mj->resources));
    rest_jobs_submit(req, "DicomMoveScu", mj->priority, content, input, mj->asynchronous);
    json_decref(input);
    json_decref(content);
}

/* TargetAet and Timeout of a retrieve body as Orthanc 1.10.1 reads them: a
 * JSON object, else the body itself is the target AE title. */
void rest_query_retrieve(rest_request *req)
{
    json_t *body = NULL, *o = NULL, *resources = NULL;
    bool one = req->nseg == 5; /* /queries/{id}/answers/{n}/retrieve */
    if (!rest_body_within(req, QUERY_BODY_MAX))
        goto out;
    json_error_t jerr;
    body = req->body_len ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    char text_aet[65] = "";
    const char *target = ts_cfg_str(TESSERA_DICOM_AET);
    int timeout = -1;
    if (json_is_object(body)) {
        const json_t *t = json_object_get(body, "TargetAet");
        const json_t *to = json_object_get(body, "Timeout");
        if ((t && !json_is_string(t)) || (to && !json_is_integer(to))) {
            bad_type(req, NULL);
            goto out;
        }
        if (t)
            target = json_string_value(t);
        if (to)
            timeout = (int)json_integer_value(to);
    } else if (json_is_string(body)) {
        /* Orthanc 1.10.1 fails (500) on a JSON string; taken as the AE title */
        target = json_string_value(body);
    } else if (body) {
        bad_format(req, "Must provide a JSON object or an AE title");
        goto out;
    } else if (req->body_len) {
        size_t n;
        const char *s = rest_body_trimmed(req, &n);
        if (n > 64) {
            bad_format(req, "an AE title has 16 characters at most");
            goto out;
        }
        memcpy(text_aet, s, n);
        text_aet[n] = '\0';
        if (n)
            target = text_aet;
    }
    if (!target[0] || strlen(target) > 16) {
        bad_format(req, "the target AE title must have 1 to 16 characters");
        goto out;
    }
    if (!(o = load_query(req)))
        goto out;
    json_t *answers = json_object_get(o, "Answers");
    size_t index = 0;
    if (one && !parse_index(req, req->seg[3], json_array_size(answers), &index))
        goto out;
    json_t *opts = json_is_object(body) ? body : NULL;
    move_job mj = {0};
    if (!format_of_body(req, opts, &mj.fmt) ||
        !job_options(req, opts, &mj.asynchronous, &mj.priority, &mj.permissive))
        goto out;
    if (one)
        resources = json_pack("[O]", json_array_get(answers, index));
    else
        resources = json_incref(answers);
    mj.aet = json_string_value(json_object_get(o, "AET"));
    mj.host = json_string_value(json_object_get(o, "Host"));
    mj.port = (int)json_integer_value(json_object_get(o, "Port"));
    mj.tls = json_is_true(json_object_get(o, "UseDicomTls"));
    mj.local = json_string_value(json_object_get(o, "LocalAet"));
    mj.target = target;
    mj.timeout = timeout >= 0 ? timeout : (int)json_integer_value(json_object_get(o, "Timeout"));
    mj.resources = resources;
    if (!mj.aet || !mj.host || !mj.local) {
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, "the stored query is incomplete");
        goto out;
    }
    submit_move(req, &mj);
out:
    json_decref(resources);
    json_decref(o);
    json_decref(body);
}

/* A string field of Orthanc's Toolbox::GetJsonStringField: absent -> def,
 * not a string -> 400 "Bad type for a parameter". */
static bool string_field(rest_request *req, const json_t *body, const char *key, const char *def,
                         const char **out)
{
    const json_t *v = json_object_get(body, key);
    if (v && !json_is_string(v)) {
        bad_type(req, NULL);
        return false;
    }
    *out = v ? json_string_value(v) : def;
    if (!(*out)[0] || strlen(*out) > 16) {
        char details[96];
        snprintf(details, sizeof(details),
                 "String value of 1 to 16 characters expected in field: %s", key);
        bad_format(req, details);
        return false;
    }
    return true;
}

/* Orthanc 1.10.1 runs the C-MOVE within the request and answers {}; here it
 * is a DicomMoveScu job, so a synchronous call waits for it and answers {} (or
 * Orthanc's error), and "Asynchronous": true answers {"ID", "Path"}. */
void rest_modality_move(rest_request *req)
{
    json_t *body = NULL, *resources = NULL;
    modality m = {0};
    if (!rest_body_within(req, MOVE_BODY_MAX))
        goto out;
    json_error_t jerr;
    body = req->body_len ? json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr) : NULL;
    const json_t *res_v = json_object_get(body, "Resources");
    const json_t *level_v = json_object_get(body, "Level");
    if (!json_is_object(body) || !json_is_array(res_v) || !json_is_string(level_v)) {
        bad_format(req, "Must provide a JSON body containing fields Resources and Level");
        goto out;
    }
    ts_level level;
    if (!parse_level(json_string_value(level_v), &level)) {
        out_of_range(req);
        goto out;
    }
    move_job mj = {0};
    const char *our = ts_cfg_str(TESSERA_DICOM_AET);
    if (!string_field(req, body, "LocalAet", our, &mj.local) ||
        !string_field(req, body, "TargetAet", our, &mj.target))
        goto out;
    if (!find_modality(req, req->seg[1], &m))
        goto out;
    const json_t *to = json_object_get(body, "Timeout");
    if (to && (!json_is_integer(to) || json_integer_value(to) < 0)) {
        bad_format(req, "Unsigned integer value expected in field: Timeout");
        goto out;
    }
    resources = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(res_v, i, r)
    {
        bool unknown_tag = false;
        json_t *id = json_is_object(r) ? read_tags(r, &unknown_tag) : NULL;
        if (!id) {
            if (unknown_tag)
                rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, NULL);
            else
                bad_format(req, NULL);
            goto out;
        }
        json_object_set_new(id, "0008,0052", json_string(qr_level_name(level)));
        json_array_append_new(resources, id);
    }
    if (!format_of_body(req, body, &mj.fmt) ||
        !job_options(req, body, &mj.asynchronous, &mj.priority, &mj.permissive))
        goto out;
    mj.aet = m.aet;
    mj.host = m.host;
    mj.port = m.port;
    mj.tls = m.tls;
    mj.timeout = to ? (int)json_integer_value(to) : 0;
    rest_modality_settings(m.conf, &mj.timeout, &mj.local);
    mj.resources = resources;
    submit_move(req, &mj);
    if (mj.asynchronous)
        goto out;
    if (req->status == 200) {
        rest_reply_json(req, 200, json_object());
    } else if (req->status == 500 && req->content) {
        /* Orthanc answers 422 when the peer could not process the C-MOVE */
        json_t *e = json_loadb(req->content, req->content_len, 0, &jerr);
        const char *details = json_string_value(json_object_get(e, "Details"));
        if (json_integer_value(json_object_get(e, "OrthancStatus")) == 9 && details &&
            strstr(details, "(unable to process")) {
            char *copy = strdup(details);
            rest_reply_oe_status(req, 422, TS_OE_NETWORK_PROTOCOL, copy);
            free(copy);
        }
        json_decref(e);
    }
out:
    json_decref(m.conf);
    json_decref(resources);
    json_decref(body);
}
