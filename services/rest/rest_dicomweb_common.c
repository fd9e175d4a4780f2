/* Shared pieces of the DICOMweb routes (see rest_dicomweb_common.h). */
#include "rest_dicomweb_common.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/config.h"
#include "rest_common.h"
#include "rest_dicomweb_xml.h"

bool dw_uid_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 && strspn(s, "0123456789.") == n;
}

/* The first value of a header that may list several ("a, b"), trimmed, when
 * it is made only of the characters an authority or a scheme holds; else "". */
static void first_value(rest_request *req, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    const char *v = rest_header(req, name);
    if (!v)
        return;
    v += strspn(v, " \t");
    size_t n = strcspn(v, ",");
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]";
    if (n == 0 || n >= size || strspn(v, ok) < n)
        return;
    memcpy(out, v, n);
    out[n] = '\0';
}

void dw_root(rest_request *req, char *out, size_t size)
{
    /* behind a proxy the client's scheme and host are in X-Forwarded-*
     * (compose/haproxy.cfg sets both, replacing what a client sent); Host
     * names the proxy instead when the proxy rewrites it */
    char proto[8], host[256];
    first_value(req, "X-Forwarded-Proto", proto, sizeof(proto));
    if (strcasecmp(proto, "https") != 0)
        strcpy(proto, "http");
    else
        strcpy(proto, "https");
    first_value(req, "X-Forwarded-Host", host, sizeof(host));
    if (!host[0])
        first_value(req, "Host", host, sizeof(host));
    if (!host[0])
        strcpy(host, "127.0.0.1");
    snprintf(out, size, "%s://%s/dicom-web", proto, host);
}

/* Is origin one of TESSERA_HTTP_CORS_ORIGINS ("*" or a comma-separated list)? */
static bool origin_allowed(const char *allowed, const char *origin)
{
    size_t olen = strlen(origin);
    for (const char *p = allowed; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == olen && strncasecmp(p, origin, m) == 0)
            return true;
        p += n;
    }
    return false;
}

#define DW_CORS_METHODS "GET, POST, OPTIONS"
#define DW_CORS_HEADERS "Accept, Authorization, Content-Type, If-Match, If-None-Match, Range"
#define DW_CORS_EXPOSE "Content-Type, Content-Length, Content-Location, ETag, Location, Warning"

bool dw_cors(rest_request *req)
{
    const char *allowed = ts_cfg_str(TESSERA_HTTP_CORS_ORIGINS);
    const char *origin = rest_header(req, "Origin");
    if (!allowed[0])
        return false;
    bool any = strcmp(allowed, "*") == 0;
    if (!any && (!origin || strlen(origin) > 255 || !origin_allowed(allowed, origin)))
        return false;
    /* a list answers the one origin asking, so caches must keep answers apart */
    rest_add_header(req, "Access-Control-Allow-Origin", any ? "*" : origin);
    if (!any) {
        rest_add_header(req, "Vary", "Origin");
        rest_add_header(req, "Access-Control-Allow-Credentials", "true");
    }
    rest_add_header(req, "Access-Control-Allow-Methods", DW_CORS_METHODS);
    rest_add_header(req, "Access-Control-Allow-Headers", DW_CORS_HEADERS);
    rest_add_header(req, "Access-Control-Expose-Headers", DW_CORS_EXPOSE);
    return true;
}

void rest_dw_unrouted(rest_request *req)
{
    const char *u = req->url;
    if ((strncmp(u, "/dicom-web", 10) == 0 && (u[10] == '/' || !u[10])) || strcmp(u, "/wado") == 0)
        dw_cors(req);
}

void rest_dw_preflight(rest_request *req)
{
    rest_reply_empty(req, 204);
    rest_add_header(req, "Allow", DW_CORS_METHODS);
    if (dw_cors(req))
        rest_add_header(req, "Access-Control-Max-Age", "600");
}

void dw_error(rest_request *req, int status, const char *fmt, ...)
{
    char details[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof(details), fmt, ap);
    va_end(ap);
    ts_oe code = status == 404   ? TS_OE_UNKNOWN_RESOURCE
                 : status == 406 ? TS_OE_NOT_ACCEPTABLE
                 : status == 415 ? TS_OE_UNSUPPORTED_MEDIA_TYPE
                                 : TS_OE_BAD_REQUEST;
    rest_reply_oe_status(req, status, code, details);
}

void dw_reply_json(rest_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    if (!text)
        abort();
    rest_reply_text(req, status, text, strlen(text));
    free(text);
    req->content_type = DW_JSON;
}

/* Copies a parameter value without its quotes, at most size - 1 bytes. */
static void param_value(const char *v, size_t n, char *out, size_t size)
{
    while (n && isspace((unsigned char)*v))
        v++, n--;
    while (n && isspace((unsigned char)v[n - 1]))
        n--;
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
        v++, n -= 2;
    if (n >= size)
        n = size - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

bool dw_accept_next(const char *accept, size_t *pos, dw_media *out)
{
    while (accept && accept[*pos]) {
        const char *s = accept + *pos;
        /* a comma inside quotes does not end the range */
        size_t n = 0;
        bool quoted = false;
        while (s[n] && (quoted || s[n] != ',')) {
            if (s[n] == '"')
                quoted = !quoted;
            n++;
        }
        *pos += n + (s[n] == ',');
        memset(out, 0, sizeof(*out));
        out->q = 1.0;
        const char *semi = memchr(s, ';', n);
        param_value(s, semi ? (size_t)(semi - s) : n, out->range, sizeof(out->range));
        for (char *c = out->range; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (!out->range[0])
            continue;
        bool zero = false;
        while (semi) {
            const char *p = semi + 1;
            const char *next = p;
            quoted = false;
            while (next < s + n && (quoted || *next != ';')) {
                if (*next == '"')
                    quoted = !quoted;
                next++;
            }
            const char *eq = memchr(p, '=', (size_t)(next - p));
            if (eq) {
                char name[32];
                param_value(p, (size_t)(eq - p), name, sizeof(name));
                if (strcasecmp(name, "type") == 0) {
                    param_value(eq + 1, (size_t)(next - eq - 1), out->type, sizeof(out->type));
                    for (char *c = out->type; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
                } else if (strcasecmp(name, "transfer-syntax") == 0) {
                    param_value(eq + 1, (size_t)(next - eq - 1), out->transfer_syntax,
                                sizeof(out->transfer_syntax));
                } else if (strcasecmp(name, "q") == 0) {
                    char q[16];
                    param_value(eq + 1, (size_t)(next - eq - 1), q, sizeof(q));
                    out->q = strtod(q, NULL);
                    zero = out->q <= 0.0;
                }
            }
            semi = next < s + n ? next : NULL;
        }
        if (!zero)
            return true;
    }
    return false;
}

bool dw_accept_json(rest_request *req)
{
    const char *accept = rest_header(req, "Accept");
    if (!accept || !*accept)
        return true;
    size_t pos = 0;
    dw_media m;
    while (dw_accept_next(accept, &pos, &m))
        if (strcmp(m.range, DW_JSON) == 0 || strcmp(m.range, "application/json") == 0 ||
            strcmp(m.range, "application/*") == 0 || strcmp(m.range, "*/*") == 0)
            return true;
    dw_error(req, 406, "this resource is available as %s only, not as \"%.200s\"", DW_JSON, accept);
    return false;
}

/* The best range of Accept for a data set: 0 none, 1 JSON, 2 XML. */
static int accept_format(const char *accept, bool multipart_xml)
{
    size_t pos = 0;
    dw_media m;
    int best = 0;
    double best_q = 0.0;
    while (dw_accept_next(accept, &pos, &m)) {
        int f = 0;
        if (strcmp(m.range, DW_JSON) == 0 || strcmp(m.range, "application/json") == 0 ||
            strcmp(m.range, "application/*") == 0 || strcmp(m.range, "*/*") == 0)
            f = 1;
        else if (strcmp(m.range, DW_XML) == 0 ||
                 (multipart_xml && strcmp(m.range, "multipart/related") == 0 &&
                  strcmp(m.type, DW_XML) == 0))
            f = 2;
        if (f && m.q > best_q) {
            best = f;
            best_q = m.q;
        }
    }
    return best;
}

bool dw_accept_dataset(rest_request *req, bool *xml)
{
    const char *accept = rest_header(req, "Accept");
    *xml = false;
    if (!accept || !*accept)
        return true;
    int f = accept_format(accept, true);
    *xml = f == 2;
    if (f)
        return true;
    dw_error(req, 406,
             "this resource is available as %s or multipart/related; "
             "type=\"" DW_XML "\", not as \"%.200s\"",
             DW_JSON, accept);
    return false;
}

bool dw_accept_response(rest_request *req, bool *xml)
{
    const char *accept = rest_header(req, "Accept");
    *xml = false;
    if (!accept || !*accept)
        return true;
    int f = accept_format(accept, false);
    *xml = f == 2;
    if (f)
        return true;
    dw_error(req, 406, "this answer is available as %s or %s, not as \"%.200s\"", DW_JSON, DW_XML,
             accept);
    return false;
}

/* Every instance of a study, optionally of one series and one SOP instance,
 * with its file, as the index has them; in series then instance order. A study
 * UID may exist under two patients (Orthanc's ids hash PatientID too): both
 * come. */
static const ts_db_stmt instances_stmt = {
    "rest_dw_instances",
    "SELECT a.uuid::text, a.uncompressed_size::text, st.study_instance_uid,"
    " se.series_instance_uid, i.sop_instance_uid, coalesce(i.sop_class_uid, ''),"
    " coalesce((SELECT m.value FROM metadata m WHERE m.resource_id = ri.id"
    "  AND m.name = 'TransferSyntax'), ''),"
    " CASE WHEN $4::boolean THEN i.dicomweb::text END"
    " FROM studies st JOIN resources rse ON rse.parent_id = st.resource_id"
    " JOIN series se ON se.resource_id = rse.id"
    " JOIN resources ri ON ri.parent_id = rse.id JOIN instances i ON i.resource_id = ri.id"
    " JOIN attachments a ON a.resource_id = ri.id AND a.content_type = 1"
    " WHERE st.study_instance_uid = $1 AND ($2 = '' OR se.series_instance_uid = $2)"
    " AND ($3 = '' OR i.sop_instance_uid = $3)"
    " ORDER BY rse.id, i.index_in_series NULLS LAST, ri.id",
    4};

PGresult *dw_instances(rest_request *req, bool with_json)
{
    const char *uids[3] = {"", "", ""};
    static const char *const names[] = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"};
    for (int k = 0; k < 3 && 2 + 2 * k < req->nseg; k++) {
        const char *s = req->seg[2 + 2 * k];
        if (!dw_uid_valid(s)) {
            dw_error(req, 400, "%s \"%.80s\" is not a UID", names[k], s);
            return NULL;
        }
        uids[k] = s;
    }
    const char *params[] = {uids[0], uids[1], uids[2], with_json ? "true" : "false"};
    PGresult *res = rest_rows_query(req, &instances_stmt, params);
    if (res && PQntuples(res) == 0) {
        PQclear(res);
        const int k = uids[2][0] ? 2 : uids[1][0] ? 1 : 0;
        dw_error(req, 404, "no %s %s here", names[k], uids[k]);
        return NULL;
    }
    return res;
}
