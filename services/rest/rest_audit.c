/* The REST service's audit events and the trail's route (see rest_audit.h). */
#include "rest_audit.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "domain/audit.h"
#include "rest_common.h"

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* What the request does to patient data, or NULL when it touches none. */
static const char *action_of(const char *method, const char *pattern)
{
    static const char *const data_prefixes[] = {"/patients",
                                                "/studies",
                                                "/series",
                                                "/instances",
                                                "/dicom-web/",
                                                "/wado",
                                                "/tools/find",
                                                "/tools/lookup",
                                                "/tools/create-archive",
                                                "/tools/create-media",
                                                "/tools/create-dicom",
                                                "/modalities/*/store",
                                                "/peers/*/store",
                                                NULL};
    bool data = false;
    for (int i = 0; data_prefixes[i]; i++)
        data = data || starts_with(pattern, data_prefixes[i]);
    if (!data)
        return NULL;
    bool dicomweb = starts_with(pattern, "/dicom-web/");
    if (strcmp(method, "DELETE") == 0)
        return "delete";
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        if (starts_with(pattern, "/wado") || strstr(pattern, "/archive") ||
            strstr(pattern, "/media") || ends_with(pattern, "/file"))
            return "export";
        if (dicomweb) {
            /* QIDO-RS searches end with the level's collection */
            if (ends_with(pattern, "/studies") || ends_with(pattern, "/series") ||
                ends_with(pattern, "/instances"))
                return "query";
            if (ends_with(pattern, "/metadata"))
                return "read";
            return "export"; /* WADO-RS: instances, frames, bulk data, rendered */
        }
        return "read";
    }
    if (strcmp(method, "POST") == 0) {
        if (strcmp(pattern, "/instances") == 0 || (dicomweb && ends_with(pattern, "/studies")) ||
            (dicomweb && ends_with(pattern, "/studies/*")))
            return "store";
        if (starts_with(pattern, "/tools/find") || starts_with(pattern, "/tools/lookup"))
            return "query";
        if (strcmp(pattern, "/tools/create-dicom") == 0)
            return "store"; /* a new instance, as an upload */
        if (strstr(pattern, "/archive") || strstr(pattern, "/media") ||
            ends_with(pattern, "/store") || starts_with(pattern, "/tools/create-"))
            return "export";
    }
    return "modify";
}

void rest_audit_request(rest_request *req, const char *pattern)
{
    const char *action = action_of(req->method, pattern);
    if (!action)
        return;
    /* the path segments the pattern leaves open: the resources' ids or UIDs */
    char resources[1024] = "";
    size_t n = 0;
    const char *p = pattern;
    for (int i = 0; i < req->nseg && *p; i++) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 1 && *p == '*' && n + 1 < sizeof(resources))
            n += (size_t)snprintf(resources + n, sizeof(resources) - n, "%s%s", n ? "," : "",
                                  req->seg[i]);
        if (len == 2 && p[0] == '*' && p[1] == '*')
            break;
        p += len;
    }
    if (n >= sizeof(resources))
        resources[sizeof(resources) - 1] = '\0';
    char ip[64], request[600];
    rest_client_ip(req, ip, sizeof(ip));
    snprintf(request, sizeof(request), "%s %.500s", req->method, req->url);
    bool user = req->username && req->username[0];
    /* rest_auth.c names API keys "key:<id>" and tokens "jwt:<subject>" */
    const char *kind = !user                                    ? "anonymous"
                       : strncmp(req->username, "key:", 4) == 0 ? "api-key"
                       : strncmp(req->username, "jwt:", 4) == 0 ? "token"
                                                                : "user";
    ts_audit_event e = {.who = user ? req->username : "",
                        .who_kind = kind,
                        .action = action,
                        .resources = resources,
                        .source = ip,
                        .request = request,
                        .outcome = req->status ? req->status : 200};
    ts_audit_record(req->ctx->audit, &e);
}

static const ts_db_stmt list_stmt = {
    "rest_audit_list",
    "SELECT coalesce(json_agg(json_build_object('Id', id, 'Time',"
    " to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'Service', service,"
    " 'Who', who, 'WhoKind', who_kind, 'Action', action, 'Resources', resources, 'Source', source,"
    " 'Request', request, 'Outcome', outcome) ORDER BY id), '[]')::text"
    " FROM (SELECT * FROM audit_log WHERE id > $1::bigint AND ($2 = '' OR who = $2)"
    "       AND ($3 = '' OR resources @> ARRAY[$3]) AND ($4 = '' OR action = $4)"
    "       ORDER BY id LIMIT $5::int) a",
    5};

void rest_audit_list(rest_request *req)
{
    long since = rest_arg_long(req, "since", 0);
    long limit = rest_arg_long(req, "limit", 100);
    if (since < 0 || limit < 0) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE, "since and limit are whole numbers");
        return;
    }
    if (limit == 0 || limit > 1000)
        limit = 1000;
    char since_s[24], limit_s[24];
    snprintf(since_s, sizeof(since_s), "%ld", since);
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    const char *who = rest_arg(req, "who"), *resource = rest_arg(req, "resource"),
               *action = rest_arg(req, "action");
    const char *params[] = {since_s, who ? who : "", resource ? resource : "", action ? action : "",
                            limit_s};
    PGresult *res = rest_rows_query(req, &list_stmt, params);
    if (!res)
        return;
    rest_reply_json_text(req, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    PQclear(res);
}
