#include "rest_common.h"
#include "dicom/dicom.h"
#include "domain/store_index.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rest_level_of_plural(const char *s)
{
    static const char *const names[] = {"patients", "studies", "series", "instances"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void rest_md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
    out[0] = '\0';
    for (unsigned i = 0; i < mdlen && i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void rest_set_etag(rest_request *req, const char *revision, const void *data, size_t len)
{
    char hex[33];
    rest_md5_hex(data, len, hex);
    snprintf(req->etag, sizeof(req->etag), "\"%s-%s\"", revision, hex);
}

/* A revision as Orthanc reads one (boost::lexical_cast<int64_t>): an optional
 * sign and digits, nothing else, within int64. */
static bool parse_revision(const char *s, size_t n, long long *out)
{
    size_t i = n && (s[0] == '+' || s[0] == '-') ? 1 : 0;
    if (i == n || n - i > 19)
        return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > (unsigned long long)INT64_MAX)
        return false;
    *out = s[0] == '-' ? -(long long)v : (long long)v;
    return true;
}

bool rest_etag_read(rest_request *req, const char *revision, const char *md5)
{
    snprintf(req->etag, sizeof(req->etag), "\"%s-%s\"", revision, md5);
    const char *h = rest_header(req, "If-None-Match");
    if (!h)
        return false;
    /* Orthanc's reading: the quotes around it dropped, then the revision up to
     * the first '-' and the MD5 after it; anything else is a bad request */
    size_t n = strlen(h);
    const char *s = h;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    const char *dash = memchr(s, '-', n);
    long long rev;
    if (!dash || !parse_revision(s, (size_t)(dash - s), &rev)) {
        char details[200];
        snprintf(details, sizeof(details),
                 "The \"If-None-Match\" HTTP header should contain the ETag (revision followed "
                 "by MD5 hash), but found: %.60s",
                 h);
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return true;
    }
    size_t md5_len = n - (size_t)(dash + 1 - s);
    if (rev == atoll(revision) && md5_len == strlen(md5) && memcmp(dash + 1, md5, md5_len) == 0) {
        rest_reply_empty(req, 304);
        return true;
    }
    return false;
}

int rest_if_match(rest_request *req, rest_if_match_t *m)
{
    memset(m, 0, sizeof(*m));
    const char *h = rest_header(req, "If-Match");
    if (!h)
        return 0;
    /* Orthanc: spaces stripped, then the surrounding quotes, then the revision
     * up to the first '-' (an integer) and the MD5 after it; both must match */
    const char *s = h;
    size_t n = strlen(h);
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    const char *dash = memchr(s, '-', n);
    long long rev;
    if (!dash || !parse_revision(s, (size_t)(dash - s), &rev)) {
        char details[200];
        snprintf(details, sizeof(details),
                 "The \"if-match\" HTTP header should contain the ETag (revision followed by "
                 "MD5 hash), but found: %.*s",
                 (int)(n > 80 ? 80 : n), s);
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, details);
        return -1;
    }
    m->given = true;
    snprintf(m->revision, sizeof(m->revision), "%lld", rev >= 0 && rev <= INT32_MAX ? rev : -1);
    size_t md5_len = n - (size_t)(dash + 1 - s);
    if (md5_len >= sizeof(m->md5))
        snprintf(m->md5, sizeof(m->md5), "(too long)");
    else
        snprintf(m->md5, sizeof(m->md5), "%.*s", (int)md5_len, dash + 1);
    return 0;
}

void rest_reply_revision_conflict(rest_request *req, bool if_match_given)
{
    rest_reply_oe(req, TS_OE_REVISION,
                  if_match_given
                      ? "the revision in If-Match is not the current one"
                      : "HTTP header \"If-Match\" is missing, as \"CheckRevisions\" is \"true\"");
}

static int row_txn(ts_db *db, void *arg, ts_err *err)
{
    rest_row *r = arg;
    PGresult *res;
    int rc = ts_db_exec(db, r->stmt, r->params, &res, err);
    if (rc)
        return rc;
    for (int i = 0; i < r->ncols && i < REST_ROW_MAX_COLS; i++) {
        free(r->col[i]);
        r->col[i] = PQntuples(res) && i < PQnfields(res) && !PQgetisnull(res, 0, i)
                        ? strdup(PQgetvalue(res, 0, i))
                        : NULL;
    }
    PQclear(res);
    return 0;
}

typedef struct holding {
    rest_row *row;
    ts_store *store;
    const char *uuid;
} holding;

static int holding_txn(ts_db *db, void *arg, ts_err *err)
{
    holding *h = arg;
    int rc = ts_store_hold(db, h->store, h->uuid, err);
    return rc ? rc : row_txn(db, h->row, err);
}

bool rest_row_query_holding(rest_request *req, ts_db_mode mode, rest_row *row, const char *uuid)
{
    holding h = {row, req->ctx->store, uuid};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, mode, holding_txn, &h, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return false;
    }
    return true;
}

/* One statement: a read needs no BEGIN/COMMIT around it (one round trip). */
static ts_db_mode row_mode(ts_db_mode mode)
{
    return mode == TS_DB_READ ? TS_DB_READ_SINGLE : mode;
}

int rest_row_run(ts_db_pool *db, ts_db_mode mode, rest_row *row, ts_err *err)
{
    return ts_db_transaction(db, row_mode(mode), row_txn, row, err);
}

bool rest_row_query(rest_request *req, ts_db_mode mode, rest_row *row)
{
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, row_mode(mode), row_txn, row, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        return false;
    }
    return true;
}

typedef struct rows_arg {
    const ts_db_stmt *stmt;
    const char *const *params;
    PGresult *res;
} rows_arg;

static int rows_txn(ts_db *db, void *arg, ts_err *err)
{
    rows_arg *a = arg;
    if (a->res) { /* a replay */
        PQclear(a->res);
        a->res = NULL;
    }
    return ts_db_exec(db, a->stmt, a->params, &a->res, err);
}

PGresult *rest_rows_query(rest_request *req, const ts_db_stmt *stmt, const char *const *params)
{
    rows_arg a = {stmt, params, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ_SINGLE, rows_txn, &a, &err);
    if (rc) {
        if (a.res)
            PQclear(a.res);
        rest_reply_failure(req, rc, err.msg);
        return NULL;
    }
    return a.res;
}

void rest_row_clear(rest_row *row)
{
    for (int i = 0; i < REST_ROW_MAX_COLS; i++) {
        free(row->col[i]);
        row->col[i] = NULL;
    }
}

bool rest_body_within(rest_request *req, size_t max)
{
    if (req->body_len <= max)
        return true;
    char details[96];
    snprintf(details, sizeof(details), "the body is larger than %zu bytes", max);
    rest_reply_oe_status(req, 413, TS_OE_BAD_REQUEST, details);
    return false;
}

const char *rest_body_trimmed(const rest_request *req, size_t *len)
{
    const char *s = req->body;
    size_t n = req->body_len;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    while (n && isspace((unsigned char)*s))
        s++, n--;
    *len = n;
    return s;
}

/* Orthanc's ?short form from its full form: {"gggg,eeee": value}, null for
 * binary and too long values, arrays of the same for sequences. */
json_t *rest_short_tags(const json_t *full)
{
    json_t *out = json_object();
    const char *key;
    json_t *tag;
    json_object_foreach((json_t *)full, key, tag)
    {
        const char *type = json_string_value(json_object_get(tag, "Type"));
        json_t *value = json_object_get(tag, "Value");
        if (type && strcmp(type, "Sequence") == 0 && json_is_array(value)) {
            json_t *items = json_array();
            size_t i;
            json_t *item;
            json_array_foreach(value, i, item) json_array_append_new(items, rest_short_tags(item));
            json_object_set_new(out, key, items);
        } else if (type && strcmp(type, "String") == 0) {
            json_object_set(out, key, value);
        } else {
            json_object_set_new(out, key, json_null());
        }
    }
    return out;
}

bool rest_arg_tags(rest_request *req, const char *name, uint32_t **tags, size_t *n)
{
    *tags = NULL;
    *n = 0;
    const char *arg = rest_arg(req, name);
    if (!arg)
        return true;
    size_t max = 1;
    for (const char *p = arg; *p; p++)
        max += *p == ',';
    *tags = malloc(max * sizeof(**tags));
    if (!*tags)
        abort();
    for (const char *p = arg;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[80];
        if (len >= sizeof(one) || (snprintf(one, sizeof(one), "%.*s", (int)len, p),
                                   !ts_dicom_parse_tag(one, &(*tags)[*n]))) {
            char details[120];
            snprintf(details, sizeof(details), "Unknown DICOM tag: \"%.*s\"",
                     (int)(len > 80 ? 80 : len), p);
            rest_reply_oe(req, TS_OE_UNKNOWN_DICOM_TAG, details);
            free(*tags);
            *tags = NULL;
            *n = 0;
            return false;
        }
        (*n)++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return true;
}
