/* Orthanc peers shared by the cluster (the `peers` table), with Orthanc's
 * shapes: GET /peers (names; ?expand: name -> configuration), GET
 * /peers/{id} (the operations), GET /peers/{id}/configuration, PUT (array
 * form [url(, username, password)] or {"Url", "Username", "Password"}),
 * DELETE, GET /peers/{id}/system (the peer's own /system, fetched with
 * libcurl), POST /peers/{id}/store (an OrthancPeerStore job) and POST
 * /peers/{id}/store-straight (one file relayed to the peer at once). The password
 * is never shown, as in Orthanc ("Password": null). */
#include "rest_peers.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "domain/exports.h"
#include "base/log.h"
#include "rest_common.h"
#include "rest_jobs.h"
#include "rest_modalities.h"

#define PEER_BODY_MAX (64 * 1024)
#define URL_MAX 1024
#define NAME_MAX_LEN 64
#define SYSTEM_ANSWER_MAX (1024 * 1024)

static const ts_db_stmt list_peers = {
    "rest_list_peers",
    "SELECT name, url, username, password FROM peers WHERE $1::text IS NULL OR name = $1"
    " ORDER BY name",
    1};

static const ts_db_stmt put_peer = {
    "rest_put_peer",
    "INSERT INTO peers (name, url, username, password) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (name) DO UPDATE SET url = excluded.url, username = excluded.username,"
    " password = excluded.password, updated_at = now()",
    4};

static const ts_db_stmt delete_peer = {"rest_delete_peer",
                                       "DELETE FROM peers WHERE name = $1 RETURNING name", 1};

typedef struct peer_rows {
    const char *name; /* NULL: all */
    json_t *out;      /* name -> configuration (public) */
    json_t *secrets;  /* name -> password (only when asked for one name) */
} peer_rows;

static int rows_txn(ts_db *db, void *arg, ts_err *err)
{
    peer_rows *m = arg;
    const char *params[] = {m->name};
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &list_peers, params, &res, err);
    if (rc)
        return rc;
    json_decref(m->out);
    json_decref(m->secrets);
    m->out = json_object();
    m->secrets = json_object();
    for (int row = 0; row < PQntuples(res); row++) {
        json_t *conf = json_pack("{s:[], s:b, s:i, s:s}", "HttpHeaders", "Pkcs11", 0, "Timeout", 0,
                                 "Url", PQgetvalue(res, row, 1));
        if (!PQgetisnull(res, row, 2)) {
            json_object_set_new(conf, "Password", json_null());
            json_object_set_new(conf, "Username", json_string(PQgetvalue(res, row, 2)));
        }
        json_object_set_new(m->out, PQgetvalue(res, row, 0), conf);
        if (m->name && !PQgetisnull(res, row, 3))
            json_object_set_new(m->secrets, PQgetvalue(res, row, 0),
                                json_string(PQgetvalue(res, row, 3)));
    }
    PQclear(res);
    return 0;
}

/* The configuration of one peer (and its password, when password is not
 * NULL: the caller frees it), or NULL after answering. */
static json_t *find_peer(rest_request *req, const char *name, bool empty_404, char **password)
{
    peer_rows m = {name, NULL, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ, rows_txn, &m, &err);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        json_decref(m.out);
        json_decref(m.secrets);
        return NULL;
    }
    json_t *conf = json_incref(json_object_get(m.out, name));
    if (conf && password) {
        const char *pw = json_string_value(json_object_get(m.secrets, name));
        *password = pw ? strdup(pw) : NULL;
    }
    json_decref(m.out);
    json_decref(m.secrets);
    if (!conf) {
        if (empty_404) {
            rest_reply_empty(req, 404);
        } else {
            char details[160];
            snprintf(details, sizeof(details), "No peer with symbolic name: %.100s", name);
            rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, details);
        }
    }
    return conf;
}

void rest_list_peers(rest_request *req)
{
    peer_rows m = {NULL, NULL, NULL};
    ts_err err;
    int rc = ts_db_transaction(req->ctx->db, TS_DB_READ, rows_txn, &m, &err);
    json_decref(m.secrets);
    if (rc) {
        rest_reply_failure(req, rc, err.msg);
        json_decref(m.out);
        return;
    }
    if (rest_flag(req, "expand")) {
        rest_reply_json(req, 200, m.out);
        return;
    }
    json_t *names = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(m.out, k, v) json_array_append_new(names, json_string(k));
    json_decref(m.out);
    rest_reply_json(req, 200, names);
}

void rest_get_peer(rest_request *req)
{
    json_t *conf = find_peer(req, req->seg[1], true, NULL);
    if (!conf)
        return;
    json_decref(conf);
    rest_reply_json(
        req, 200, json_pack("[s, s, s, s]", "configuration", "store", "store-straight", "system"));
}

void rest_get_peer_configuration(rest_request *req)
{
    json_t *conf = find_peer(req, req->seg[1], false, NULL);
    if (conf)
        rest_reply_json(req, 200, conf);
}

static void bad_format(rest_request *req, const char *details)
{
    rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, details);
}

void rest_put_peer(rest_request *req)
{
    if (strlen(req->seg[1]) > NAME_MAX_LEN) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "a peer's symbolic name has 64 characters at most");
        return;
    }
    if (req->body_len > PEER_BODY_MAX) {
        rest_reply_oe_status(req, 413, TS_OE_BAD_REQUEST, "the body is larger than 65536 bytes");
        return;
    }
    json_error_t jerr;
    json_t *body = req->body ? json_loadb(req->body, req->body_len, 0, &jerr) : NULL;
    const json_t *url = NULL, *user = NULL, *pw = NULL;
    if (json_is_array(body) && (json_array_size(body) == 1 || json_array_size(body) == 3)) {
        url = json_array_get(body, 0);
        user = json_array_get(body, 1);
        pw = json_array_get(body, 2);
    } else if (json_is_object(body)) {
        url = json_object_get(body, "Url");
        user = json_object_get(body, "Username");
        pw = json_object_get(body, "Password");
    } else {
        bad_format(req, NULL);
        goto out;
    }
    if ((url && !json_is_string(url)) || (user && !json_is_string(user)) ||
        (pw && !json_is_string(pw))) {
        bad_format(req, "Url, Username and Password must be strings");
        goto out;
    }
    if (!url || !json_string_length(url)) {
        bad_format(req, "Empty URL");
        goto out;
    }
    const char *u = json_string_value(url);
    if ((strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) || strlen(u) > URL_MAX) {
        bad_format(req, "the Url must start with http:// or https:// (1024 characters at most)");
        goto out;
    }
    if ((user && json_string_length(user) > 256) || (pw && json_string_length(pw) > 256)) {
        bad_format(req, "Username and Password have 256 characters at most");
        goto out;
    }
    /* Orthanc keeps its peers' URLs with a final slash */
    char normalised[URL_MAX + 2];
    snprintf(normalised, sizeof(normalised), "%s%s", u, u[strlen(u) - 1] == '/' ? "" : "/");
    const char *params[] = {req->seg[1], normalised, user ? json_string_value(user) : NULL,
                            pw ? json_string_value(pw) : NULL};
    rest_row r = {&put_peer, params, 0, {0}};
    if (rest_row_query(req, TS_DB_WRITE, &r)) {
        ts_info("peer stored", "name=%s url=%s", req->seg[1], normalised);
        rest_reply_text(req, 200, "", 0);
    }
    rest_row_clear(&r);
out:
    json_decref(body);
}

void rest_delete_peer(rest_request *req)
{
    const char *params[] = {req->seg[1]};
    rest_row r = {&delete_peer, params, 1, {0}};
    if (!rest_row_query(req, TS_DB_WRITE, &r))
        return;
    if (r.col[0]) {
        ts_info("peer deleted", "name=%s", req->seg[1]);
        rest_reply_text(req, 200, "", 0);
    } else {
        char details[160];
        snprintf(details, sizeof(details), "Unknown Orthanc peer: %.100s", req->seg[1]);
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, details);
    }
    rest_row_clear(&r);
}

typedef struct answer {
    char *data;
    size_t len;
    size_t max;
    bool too_big;
} answer;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
    answer *a = user;
    size_t n = size * nmemb;
    if (a->len + n > a->max) {
        a->too_big = true;
        return 0; /* stops the transfer */
    }
    char *grown = realloc(a->data, a->len + n + 1);
    if (!grown)
        abort();
    a->data = grown;
    memcpy(a->data + a->len, ptr, n);
    a->len += n;
    a->data[a->len] = '\0';
    return n;
}

/* One request to the peer of conf (its Url + path, with its credentials): GET,
 * or POST of body when body is not NULL. The answer (at most max_answer bytes)
 * into *a, its HTTP status into *status. */
static CURLcode peer_request(const json_t *conf, const char *password, const char *path,
                             const char *body, size_t body_len, size_t max_answer, answer *a,
                             long *status, char *url, size_t url_size)
{
    snprintf(url, url_size, "%s%s", json_string_value(json_object_get(conf, "Url")), path);
    const char *user = json_string_value(json_object_get(conf, "Username"));
    a->max = max_answer;
    CURL *curl = curl_easy_init();
    if (!curl)
        abort();
    struct curl_slist *headers = NULL;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)ts_cfg_int(TESSERA_DICOM_TIMEOUT));
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (user) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, password ? password : "");
    }
    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/dicom");
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode cc = curl_easy_perform(curl);
    *status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    return cc;
}

void rest_peer_system(rest_request *req)
{
    char *password = NULL;
    json_t *conf = find_peer(req, req->seg[1], false, &password);
    if (!conf)
        return;
    char url[URL_MAX + 16];
    answer a = {0};
    long status;
    CURLcode cc = peer_request(conf, password, "system", NULL, 0, SYSTEM_ANSWER_MAX, &a, &status,
                               url, sizeof(url));
    char details[256];
    json_error_t jerr;
    json_t *system = NULL;
    if (a.too_big) {
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, "the peer's answer is larger than 1 MiB");
    } else if (cc != CURLE_OK) {
        snprintf(details, sizeof(details), "libCURL error: %s", curl_easy_strerror(cc));
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, details);
    } else if (status != 200) {
        snprintf(details, sizeof(details), "the peer answered HTTP status %ld to GET %.150s",
                 status, url);
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, details);
    } else if (!(system = json_loadb(a.data ? a.data : "", a.len, 0, &jerr))) {
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, "the peer's answer to GET /system is not JSON");
    } else {
        rest_reply_json(req, 200, system);
    }
    free(a.data);
    free(password);
    json_decref(conf);
}

/* POST /peers/{id}/store-straight: the body (a DICOM file) goes to the peer's
 * POST /instances at once, not through a job; its answer is ours, as in
 * Orthanc 1.10.1 (a refusal by the peer is Orthanc's 500 "Cannot send DICOM
 * to remote peer"). Nothing is stored here. */
void rest_peer_store_straight(rest_request *req)
{
    char *password = NULL;
    json_t *conf = find_peer(req, req->seg[1], false, &password);
    if (!conf)
        return;
    char url[URL_MAX + 16];
    answer a = {0};
    long status;
    CURLcode cc = peer_request(conf, password, "instances", req->body ? req->body : "",
                               req->body_len, SYSTEM_ANSWER_MAX, &a, &status, url, sizeof(url));
    char details[256];
    json_error_t jerr;
    json_t *reply = NULL;
    if (cc != CURLE_OK && !a.too_big) {
        snprintf(details, sizeof(details), "libCURL error: %s", curl_easy_strerror(cc));
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, details);
    } else if (a.too_big || status != 200 ||
               !(reply = json_loadb(a.data ? a.data : "", a.len, 0, &jerr))) {
        ts_info("store-straight refused by the peer", "peer=%s status=%ld", req->seg[1], status);
        snprintf(details, sizeof(details), "Cannot send DICOM to remote peer: %.100s", req->seg[1]);
        rest_reply_oe(req, TS_OE_NETWORK_PROTOCOL, details);
    } else {
        rest_reply_json(req, 200, reply);
    }
    free(a.data);
    free(password);
    json_decref(conf);
}

void rest_peer_store(rest_request *req)
{
    rest_store_req sr;
    char *password = NULL;
    json_t *conf = NULL, *content = NULL, *input = NULL;
    if (!rest_store_parse(req, &sr))
        goto out;
    if (!(conf = find_peer(req, req->seg[1], false, &password)))
        goto out;
    if (!rest_store_expand(req, &sr))
        goto out;
    const char *url = json_string_value(json_object_get(conf, "Url"));
    char size[32];
    snprintf(size, sizeof(size), "%lld", sr.size);
    content = json_pack("{s:b, s:s, s:i, s:I}", "Compress", 0, "Description", "REST API",
                        "FailedInstancesCount", 0, "InstancesCount",
                        (json_int_t)json_array_size(sr.instances));
    if (json_array_size(sr.parents))
        json_object_set(content, "ParentResources", sr.parents);
    const char *user = json_string_value(json_object_get(conf, "Username"));
    /* Orthanc's form: [url] or [url, username, ""] (the password blanked) */
    json_object_set_new(content, "Peer",
                        user ? json_pack("[s, s, s]", url, user, "") : json_pack("[s]", url));
    json_object_set_new(content, "Size", json_string(size));
    json_object_set_new(content, "SizeMB", json_integer(sr.size / (1024 * 1024)));
    input = json_pack("{s:O, s:s, s:i, s:b}", "Instances", sr.instances, "Url", url, "Timeout",
                      sr.timeout > 0 ? sr.timeout : (int)ts_cfg_int(TESSERA_DICOM_TIMEOUT),
                      "Permissive", sr.permissive);
    if (sr.transcode) {
        /* Orthanc's Content names it too */
        json_object_set_new(content, "Transcode", json_string(sr.transcode));
        json_object_set_new(input, "Transcode", json_string(sr.transcode));
    }
    if (user) {
        /* the password goes into the job's private input (never shown) */
        json_object_set_new(input, "Username", json_string(user));
        json_object_set_new(input, "Password", json_string(password ? password : ""));
    }
    ts_err xerr;
    if (ts_exports_log(req->ctx->db, req->seg[1], sr.ordered, &xerr))
        ts_warn("cannot log the export", "error=\"%s\"", xerr.msg); /* the send goes on */
    rest_jobs_submit(req, "OrthancPeerStore", sr.priority, content, input, sr.asynchronous);
out:
    free(password);
    json_decref(input);
    json_decref(content);
    json_decref(conf);
    rest_store_clear(&sr);
}
