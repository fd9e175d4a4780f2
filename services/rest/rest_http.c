#include "rest_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "base/config.h"

#include "base/log.h"
#include "base/metrics.h"

struct rest_server {
    struct MHD_Daemon *daemon;
    rest_ctx *ctx;
    const rest_route *routes;
    size_t nroutes;
    ts_metric *m_requests[6];    /* by status class 1xx..5xx */
    ts_metric **m_route_seconds; /* per route */
    ts_metric **m_route_trips;
    bool auth; /* authentication required (ctx->authenticate) */
    /* HTTPS (TESSERA_HTTP_TLS_CERT/KEY): the certificate chain and key given
     * to each handshake, replaced by rest_server_reload_tls */
    struct tls_creds *tls, *tls_prev;
    pthread_mutex_t tls_mu;
};

/* ---- HTTPS ---------------------------------------------------------------------- */

#define TLS_MAX_CHAIN 8
/* Each connection's memory pool (MHD's default is 32 KiB): the request's head
 * (at most REST_MAX_HEAD, on_request), the answer's, and for a mapped answer
 * (mapped_response) the list of its regions, 16 bytes each, in half of it:
 * 2,048 regions, a mapped answer of up to 1,023 files. Not larger: MHD zeroes
 * the pool between the requests of a connection, and every request pays for
 * it (wrk, 16 connections, same run: 256 KiB cost 35% of the req/s of a 404
 * and 22% of GET /studies/{id}; 64 KiB 3-6% against 32 KiB). */
#define REST_POOL_SIZE (64u * 1024)
#define REST_MAX_REGIONS (REST_POOL_SIZE / 2 / 16)
#define REST_MAX_HEAD (32u * 1024)
typedef struct tls_creds {
    gnutls_pcert_st certs[TLS_MAX_CHAIN];
    unsigned int ncerts;
    gnutls_privkey_t key;
} tls_creds;

static void tls_creds_free(tls_creds *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->ncerts; i++)
        gnutls_pcert_deinit(&c->certs[i]);
    if (c->key)
        gnutls_privkey_deinit(c->key);
    free(c);
}

/* The PEM chain (server certificate first) and its key, checked to belong together. */
static int tls_creds_load(const char *cert_file, const char *key_file, tls_creds **out, ts_err *err)
{
    tls_creds *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    gnutls_datum_t key = {0};
    c->ncerts = TLS_MAX_CHAIN;
    int rc = gnutls_pcert_list_import_x509_file(c->certs, &c->ncerts, cert_file,
                                                GNUTLS_X509_FMT_PEM, NULL, NULL, 0);
    if (rc < 0) {
        c->ncerts = 0;
        tls_creds_free(c);
        return ts_err_set(err, TS_EINVAL, "TESSERA_HTTP_TLS_CERT %s: %s", cert_file,
                          gnutls_strerror(rc));
    }
    if ((rc = gnutls_load_file(key_file, &key)) < 0 || (rc = gnutls_privkey_init(&c->key)) < 0 ||
        (rc = gnutls_privkey_import_x509_raw(c->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        gnutls_free(key.data);
        tls_creds_free(c);
        return ts_err_set(err, TS_EINVAL, "TESSERA_HTTP_TLS_KEY %s: %s", key_file,
                          gnutls_strerror(rc));
    }
    gnutls_free(key.data);
    /* the key must be the certificate's: sign and verify a probe */
    gnutls_datum_t probe = {(unsigned char *)"tessera", 7}, sig = {0};
    gnutls_sign_algorithm_t algo =
        gnutls_pk_to_sign(gnutls_privkey_get_pk_algorithm(c->key, NULL), GNUTLS_DIG_SHA256);
    if (gnutls_privkey_sign_data2(c->key, algo, 0, &probe, &sig) < 0 ||
        gnutls_pubkey_verify_data2(c->certs[0].pubkey, algo, 0, &probe, &sig) < 0) {
        gnutls_free(sig.data);
        tls_creds_free(c);
        return ts_err_set(err, TS_EINVAL, "TESSERA_HTTP_TLS_KEY %s is not the key of %s", key_file,
                          cert_file);
    }
    gnutls_free(sig.data);
    *out = c;
    return 0;
}

/* GnuTLS asks this at each handshake (MHD_OPTION_HTTPS_CERT_CALLBACK, which
 * has no user pointer: one HTTPS server per process). */
static rest_server *tls_server;

static int tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                        const gnutls_pk_algorithm_t *pk_algos, int npk_algos,
                        gnutls_pcert_st **pcert, unsigned int *pcert_length,
                        gnutls_privkey_t *privkey)
{
    rest_server *srv = tls_server;
    pthread_mutex_lock(&srv->tls_mu);
    *pcert = srv->tls->certs;
    *pcert_length = srv->tls->ncerts;
    *privkey = srv->tls->key;
    pthread_mutex_unlock(&srv->tls_mu);
    return 0;
}

int rest_server_reload_tls(rest_server *srv, ts_err *err)
{
    if (!srv->tls)
        return 0;
    tls_creds *c;
    int rc = tls_creds_load(ts_cfg_str(TESSERA_HTTP_TLS_CERT), ts_cfg_str(TESSERA_HTTP_TLS_KEY), &c,
                            err);
    if (rc)
        return rc; /* the certificate in use stays */
    /* a handshake that took the previous credentials a moment ago may still
     * use them: they are freed at the reload after this one */
    pthread_mutex_lock(&srv->tls_mu);
    tls_creds *old = srv->tls_prev;
    srv->tls_prev = srv->tls;
    srv->tls = c;
    pthread_mutex_unlock(&srv->tls_mu);
    tls_creds_free(old);
    ts_info("https certificate loaded", "file=%s", ts_cfg_str(TESSERA_HTTP_TLS_CERT));
    return 0;
}

/* A streamed body (rest_reply_stream). */
struct rest_stream {
    long long size; /* -1: unknown */
    rest_stream_read_fn read;
    void (*free_cls)(void *cls);
    void *cls;
    rest_stream_map_fn map; /* rest_reply_stream_mapped */
};

/* What MHD keeps for us between the calls of one request.
 *
 * A request refused for its credentials (401) still has its body read and
 * dropped before the answer, so that the connection stays usable: a client
 * that sends first without credentials and then again with them (httplib2,
 * browsers) does so on the same connection. Nothing is read past
 * TESSERA_MAX_INSTANCE_SIZE, whoever sends it: a body that says it is larger
 * (Content-Length) is answered (401 or 413) before it is read, and a chunked
 * body that grows larger has its connection closed. MHD closes the connection
 * after an answer given before the body, as it cannot tell where the next
 * request would start; a refused client that waits for "100 Continue" gets its
 * 401 that way too, having sent nothing. The limit is the route's own
 * (rest_body_kind), found from the request line before the body is read.
 *
 * Uploads of instances (REST_BODY_SPOOL) are written to the storage area's
 * tmp/ as they arrive and handed to ingest by name, so memory does not grow
 * with them; every other body is kept in memory within its route's limit. */
typedef struct pending {
    char *body;
    size_t len, cap;
    size_t seen;  /* body bytes read, kept or not */
    bool too_big; /* Content-Length over the limit: answered 413 before the body */
    /* uploads of instances are spooled to a temporary file of the storage
     * area instead (REST_BODY_SPOOL) */
    bool spool;
    size_t limit;       /* the route's largest body (rest_body_kind) */
    bool refused;       /* no valid credentials: answered 401 after the body */
    rest_principal who; /* who authenticated; an unnamed admin when authentication is off */
    bool dropped;       /* no route takes it: the body is read and dropped */
    const char *method; /* after Orthanc's method faking (X-HTTP-Method-Override) */
    bool bad_method;    /* a faked method other than PUT or DELETE: 400 after the body */
    bool gzip;          /* the route inflates gzip bodies (REST_BODY_SPOOL_GZIP) */
    int fd;
    char spool_path[4096];
    char spool_error[512];
} pending;

static void spool_discard(pending *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->spool_path[0]) {
        unlink(p->spool_path); /* gone already when ingest took it over */
        p->spool_path[0] = '\0';
    }
}

static void spool_write(rest_server *srv, pending *p, const char *data, size_t len)
{
    if (p->spool_error[0])
        return;
    if (p->fd < 0) {
        ts_err err;
        if (ts_store_temp_path(srv->ctx->store, p->spool_path, sizeof(p->spool_path), &err)) {
            snprintf(p->spool_error, sizeof(p->spool_error), "%.500s", err.msg);
            p->spool_path[0] = '\0';
            return;
        }
        p->fd = open(p->spool_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (p->fd < 0) {
            snprintf(p->spool_error, sizeof(p->spool_error), "cannot create %.300s: %s",
                     p->spool_path, strerror(errno));
            p->spool_path[0] = '\0';
            return;
        }
    }
    while (len > 0) {
        ssize_t n = write(p->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(p->spool_error, sizeof(p->spool_error), "cannot write %.300s: %s",
                     p->spool_path, strerror(errno));
            spool_discard(p);
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

/* The body as it was sent, inflated when its Content-Encoding is gzip, into
 * memory or into a new spool file; at most p->limit bytes come out. */
typedef struct inflater {
    rest_server *srv;
    pending *p;
    z_stream z;
    char *out; /* memory bodies */
    size_t len, cap;
    bool too_big, corrupt, ended;
} inflater;

static void inflater_put(inflater *f, const char *data, size_t n)
{
    if (f->len + n > f->p->limit) {
        f->too_big = true;
        return;
    }
    if (f->p->spool) {
        spool_write(f->srv, f->p, data, n);
    } else {
        if (f->len + n > f->cap) {
            size_t cap = f->cap ? f->cap : 65536;
            while (cap < f->len + n)
                cap *= 2;
            f->out = realloc(f->out, cap);
            if (!f->out)
                abort();
            f->cap = cap;
        }
        memcpy(f->out + f->len, data, n);
    }
    f->len += n;
}

/* Feeds n compressed bytes; false once the stream has ended, is corrupt or too big. */
static bool inflater_feed(inflater *f, const char *in, size_t n)
{
    char buf[65536];
    f->z.next_in = (Bytef *)in;
    f->z.avail_in = (uInt)n;
    while (!f->too_big && !f->corrupt) {
        f->z.next_out = (Bytef *)buf;
        f->z.avail_out = sizeof(buf);
        int rc = inflate(&f->z, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            f->corrupt = true;
            break;
        }
        inflater_put(f, buf, sizeof(buf) - f->z.avail_out);
        if (rc == Z_STREAM_END) {
            f->ended = true; /* what follows the stream is ignored */
            return false;
        }
        if (f->z.avail_in == 0 && f->z.avail_out != 0)
            break;
    }
    return !f->too_big && !f->corrupt;
}

typedef enum { INFLATE_OK, INFLATE_CORRUPT, INFLATE_TOO_BIG, INFLATE_SPOOL_ERROR } inflate_result;

/* Replaces p's body (memory or spool file) with its gzip inflation. */
static inflate_result inflate_body(rest_server *srv, pending *p)
{
    inflater f = {.srv = srv, .p = p};
    if (inflateInit2(&f.z, 16 + MAX_WBITS) != Z_OK)
        abort();
    char old_path[sizeof(p->spool_path)];
    if (p->spool) {
        snprintf(old_path, sizeof(old_path), "%s", p->spool_path);
        p->spool_path[0] = '\0'; /* spool_write makes a new file */
        int fd = open(old_path, O_RDONLY | O_CLOEXEC);
        char buf[65536];
        ssize_t n = fd < 0 ? -1 : 0;
        while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
            if (!inflater_feed(&f, buf, (size_t)n))
                break;
        if (fd >= 0)
            close(fd);
        unlink(old_path);
        if (n < 0)
            f.corrupt = true;
    } else {
        inflater_feed(&f, p->body, p->len);
    }
    inflateEnd(&f.z);
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (!p->spool) {
        free(p->body);
        p->body = f.out;
        p->cap = f.cap;
    }
    p->len = f.len;
    if (f.too_big)
        return INFLATE_TOO_BIG;
    if (f.corrupt || !f.ended)
        return INFLATE_CORRUPT;
    return p->spool_error[0] ? INFLATE_SPOOL_ERROR : INFLATE_OK;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Request Entity Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    default:
        return "Error";
    }
}

void rest_client_ip(rest_request *req, char *out, size_t size)
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)size);
}

const char *rest_arg(rest_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool rest_flag(rest_request *req, const char *name)
{
    /* Orthanc tests presence only: ?expand=false expands too. */
    const char *value = NULL;
    size_t size = 0;
    return MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
                                         &value, &size) == MHD_YES;
}

long rest_arg_long(rest_request *req, const char *name, long def)
{
    const char *v = rest_arg(req, name);
    if (!v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || *end || n < 0)
        return -1;
    return n;
}

static void stream_free(struct rest_stream *st);

void rest_add_header(rest_request *req, const char *name, const char *value)
{
    size_t old = req->headers ? strlen(req->headers) : 0;
    size_t add = strlen(name) + strlen(value) + 2;
    req->headers = realloc(req->headers, old + add + 1);
    if (!req->headers)
        abort();
    snprintf(req->headers + old, add + 1, "%s\n%s\n", name, value);
}

static void set_content(rest_request *req, int status, char *content, size_t len, const char *type)
{
    free(req->content);
    stream_free(req->stream); /* an answer given after a stream replaces it */
    req->stream = NULL;
    req->status = status;
    req->content = content;
    req->content_len = len;
    req->content_type = type;
}

void rest_reply_json(rest_request *req, int status, json_t *body)
{
    /* Orthanc indents its JSON; clients do not care, people reading it do. */
    char *text = json_dumps(body, JSON_INDENT(3) | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text)
        abort();
    size_t len = strlen(text);
    set_content(req, status, text, len, "application/json; charset=utf-8");
}

void rest_reply_json_text(rest_request *req, int status, const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, text, len);
    copy[len] = '\0';
    set_content(req, status, copy, len, "application/json; charset=utf-8");
}

const char *rest_header(rest_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    char lower[256];
    size_t i = 0;
    for (; key[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)key[i]);
    lower[i] = '\0';
    json_t *v = json_string(value ? value : "");
    json_object_set_new(cls, lower, v ? v : json_string(""));
    return MHD_YES;
}

json_t *rest_headers_json(rest_request *req)
{
    json_t *out = json_object();
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, add_header, out);
    return out;
}

void rest_reply_text(rest_request *req, int status, const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, text, len);
    copy[len] = '\0';
    set_content(req, status, copy, len, "text/plain; charset=utf-8");
}

void rest_reply_file(rest_request *req, int fd, size_t size, const char *content_type)
{
    set_content(req, 200, NULL, size, content_type);
    req->content_fd = fd;
}

void rest_reply_owned(rest_request *req, int status, void *body, size_t len,
                      const char *content_type)
{
    set_content(req, status, body, len, content_type);
}

void rest_reply_stream(rest_request *req, const char *content_type, long long size,
                       rest_stream_read_fn read, void (*free_cls)(void *cls), void *cls)
{
    set_content(req, 200, NULL, 0, content_type);
    struct rest_stream *st = malloc(sizeof(*st));
    if (!st)
        abort();
    *st = (struct rest_stream){.size = size, .read = read, .free_cls = free_cls, .cls = cls};
    req->stream = st;
}

void rest_reply_stream_mapped(rest_request *req, rest_stream_map_fn map)
{
    if (req->stream && req->stream->size >= 0)
        req->stream->map = map;
}

static void stream_free(struct rest_stream *st)
{
    if (!st)
        return;
    if (st->free_cls)
        st->free_cls(st->cls);
    free(st);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct rest_stream *st = cls;
    (void)pos;
    ssize_t n = st->read(st->cls, buf, max);
    if (n > 0)
        return n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_done(void *cls)
{
    stream_free(cls);
}

void rest_reply_oe_status(rest_request *req, int http_status, ts_oe code, const char *details)
{
    int orthanc_status = (int)code;
    const char *orthanc_error = ts_oe_description(code);
    json_t *body = json_object();
    if (details && *details)
        json_object_set_new(body, "Details", json_string(details));
    json_object_set_new(body, "HttpError", json_string(status_text(http_status)));
    json_object_set_new(body, "HttpStatus", json_integer(http_status));
    json_object_set_new(body, "Message", json_string(orthanc_error));
    json_object_set_new(body, "Method", json_string(req->method));
    json_object_set_new(body, "OrthancError", json_string(orthanc_error));
    json_object_set_new(body, "OrthancStatus", json_integer(orthanc_status));
    json_object_set_new(body, "Uri", json_string(req->url));
    rest_reply_json(req, http_status, body);
}

void rest_reply_oe(rest_request *req, ts_oe code, const char *details)
{
    rest_reply_oe_status(req, ts_oe_http_status(code), code, details);
}

void rest_reply_unknown_resource(rest_request *req)
{
    rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, NULL);
}

void rest_reply_empty(rest_request *req, int status)
{
    set_content(req, status, NULL, 0, NULL);
}

void rest_reply_failure(rest_request *req, int code, const char *details)
{
    if (code == TS_EDB_BUSY || code == TS_EDB_INDOUBT)
        /* Orthanc's ErrorCode_DatabaseCannotSerialize, answered 503 */
        rest_reply_oe(req, TS_OE_DATABASE_CANNOT_SERIALIZE, details);
    else if (code == TS_ETIMEOUT || code == TS_EBUS)
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, details);
    else
        rest_reply_oe(req, TS_OE_INTERNAL_ERROR, details);
}

static bool segment_match(const char *pattern_seg, size_t n, const char *seg)
{
    if (n == 1 && pattern_seg[0] == '*')
        return true;
    return strlen(seg) == n && strncmp(pattern_seg, seg, n) == 0;
}

static bool pattern_match(const char *pattern, rest_request *req)
{
    const char *p = pattern;
    int i = 0;
    while (*p == '/')
        p++;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '*' && p[1] == '*' && !slash)
            return true;
        if (i >= req->nseg || !segment_match(p, n, req->seg[i]))
            return false;
        i++;
        p += n;
        while (*p == '/')
            p++;
    }
    return i == req->nseg;
}

/* Splits the path into segments in buf (which the segments then point into),
 * as Orthanc does: empty segments and "." dropped, ".." removes the one before. */
static bool split_path(rest_request *req, char *buf)
{
    req->nseg = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (strcmp(s, ".") == 0)
            continue;
        if (strcmp(s, "..") == 0) {
            if (req->nseg > 0)
                req->nseg--;
            continue;
        }
        if (req->nseg == REST_MAX_SEGMENTS)
            return false;
        req->seg[req->nseg++] = s;
    }
    return true;
}

/* The normalised path, as Orthanc reports it in "Uri". */
static void join_path(rest_request *req, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < req->nseg && n + 1 < size; i++)
        n += (size_t)snprintf(out + n, size - n, "/%s", req->seg[i]);
    if (req->nseg == 0)
        snprintf(out, size, "/");
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Routes the request and records, per route, its time and its database round
 * trips (lib/db counts them per thread; MHD runs each connection on its own). */
/* req's own headers (rest_add_header) onto resp. */
static void add_headers(struct MHD_Response *resp, rest_request *req)
{
    for (char *h = req->headers; h && *h;) {
        char *nl = strchr(h, '\n'), *end = nl ? strchr(nl + 1, '\n') : NULL;
        if (!end)
            break;
        *nl = *end = '\0';
        MHD_add_response_header(resp, h, nl + 1);
        h = end + 1;
    }
}

static void unrouted(rest_request *req)
{
    if (req->ctx && req->ctx->unrouted)
        req->ctx->unrouted(req);
}

static void dispatch(rest_server *srv, rest_request *req)
{
    double t0 = monotonic_s();
    long trips0 = ts_db_thread_round_trips();
    int route = rest_dispatch(srv->routes, srv->nroutes, req);
    if (route < 0)
        unrouted(req);
    if (route >= 0) {
        ts_metric_observe(srv->m_route_seconds[route], monotonic_s() - t0);
        ts_metric_add(srv->m_route_trips[route], (double)(ts_db_thread_round_trips() - trips0));
    }
}

const rest_route *rest_route_find(const rest_route *routes, size_t nroutes, const char *method,
                                  const char *url)
{
    char path[1024];
    rest_request req = {.url = url};
    if (strlen(url) >= sizeof(path) || !split_path(&req, strcpy(path, url)))
        return NULL;
    for (size_t i = 0; i < nroutes; i++)
        if (strcmp(routes[i].method, method) == 0 && pattern_match(routes[i].pattern, &req))
            return &routes[i];
    return NULL;
}

int rest_dispatch(const rest_route *routes, size_t nroutes, rest_request *req)
{
    char path[1024];
    static __thread char normalised[1024];
    if (strlen(req->url) >= sizeof(path) || !split_path(req, strcpy(path, req->url))) {
        rest_reply_oe(req, TS_OE_UNKNOWN_RESOURCE, "path too long");
        return -1;
    }
    join_path(req, normalised, sizeof(normalised));
    req->raw_url = req->url;
    req->url = normalised;
    if (req->ctx && req->ctx->filter && !req->ctx->filter(req))
        return -1;
    bool path_known = false;
    char allowed[128] = "";
    for (size_t i = 0; i < nroutes; i++) {
        const rest_route *r = &routes[i];
        if (!pattern_match(r->pattern, req))
            continue;
        if (strcmp(r->method, req->method) == 0) {
            /* the one check of who may call what, for every route */
            if (!req->ctx || !req->ctx->authorize || req->ctx->authorize(req, r))
                r->handler(req);
            /* here, while req->seg still points into path (refusals included) */
            if (req->ctx && req->ctx->on_answered)
                req->ctx->on_answered(req, r->pattern);
            return (int)i;
        }
        size_t plen = strlen(r->pattern);
        if (plen >= 2 && strcmp(r->pattern + plen - 2, "**") == 0)
            continue; /* Orthanc: other methods on a trailing-wildcard route are unknown */
        path_known = true;
        if (!strstr(allowed, r->method)) {
            size_t n = strlen(allowed);
            snprintf(allowed + n, sizeof(allowed) - n, "%s%s", n ? "," : "", r->method);
        }
    }
    if (path_known) {
        req->allow = strdup(allowed);
        set_content(req, 405, NULL, 0, NULL);
        return -1;
    }
    rest_reply_unknown_resource(req);
    return -1;
}

/* Whether a connected socket's peer is this host (its address is the socket's
 * own: the traffic goes over the loopback interface). */
static bool peer_is_this_host(int sock)
{
    struct sockaddr_storage a = {0}, b = {0};
    socklen_t la = sizeof(a), lb = sizeof(b);
    if (getsockname(sock, (struct sockaddr *)&a, &la) ||
        getpeername(sock, (struct sockaddr *)&b, &lb) || a.ss_family != b.ss_family)
        return false;
    if (a.ss_family == AF_INET)
        return ((struct sockaddr_in *)&a)->sin_addr.s_addr ==
               ((struct sockaddr_in *)&b)->sin_addr.s_addr;
    if (a.ss_family == AF_INET6)
        return memcmp(&((struct sockaddr_in6 *)&a)->sin6_addr,
                      &((struct sockaddr_in6 *)&b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

/* rest_reply_stream_mapped: the stream's regions sent by MHD itself, or NULL
 * (TLS, HEAD, or the stream cannot give them: then it is read as usual). MHD
 * copies the list of regions into the connection's memory pool when the body
 * starts (MHD_OPTION_CONNECTION_MEMORY_LIMIT, REST_POOL_SIZE): at most
 * REST_MAX_REGIONS, half of the pool, the request's head and the answer's
 * having the other half. */
static struct MHD_Response *mapped_response(struct MHD_Connection *conn, rest_request *req)
{
    struct rest_stream *st = req->stream;
    const rest_region *rg = NULL;
    unsigned n = 0;
    if (!st->map || strcmp(req->method, "HEAD") == 0 ||
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION) ||
        st->map(st->cls, REST_MAX_REGIONS, &rg, &n))
        return NULL;
    struct MHD_IoVec *iov = calloc(n ? n : 1, sizeof(*iov));
    if (!iov)
        abort();
    long long total = 0;
    for (unsigned i = 0; i < n; i++) {
        iov[i] = (struct MHD_IoVec){.iov_base = rg[i].base, .iov_len = rg[i].len};
        total += (long long)rg[i].len;
    }
    struct MHD_Response *resp = NULL;
    if (total != st->size) /* a bug in the stream: its read() is right by construction */
        ts_error("http: mapped regions do not add up to the answer's size", "size=%lld got=%lld",
                 st->size, total);
    else
        resp = MHD_create_response_from_iovec(iov, n, stream_done, st);
    free(iov); /* (MHD keeps a copy) */
    /* A client on this host (a viewer, HAProxy, the benchmark's curl): over the
     * loopback interface the kernel hands each segment to the receiver as it
     * is sent, and there is no bandwidth-delay product to cover. With the
     * autotuned send buffer (up to 4 MiB) rest runs megabytes ahead and the
     * client copies them out of memory rather than out of the CPU's cache; a
     * 128 KiB buffer (the kernel doubles it) keeps the two in step.
     * bench/wado-retrieve, one run, CPU seconds of rest + curl for 525 MB:
     * 0.15 + 0.19 autotuned, 0.12 + 0.09 with 128 KiB (medians, docs/benchmarks.md).
     * The mapping is for every client; the buffer stays autotuned for a remote
     * one, whose throughput a small buffer would cap at buffer / RTT. */
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (resp && fd && peer_is_this_host(fd->connect_fd)) {
        int sndbuf = 128 * 1024;
        setsockopt(fd->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
    return resp;
}

static enum MHD_Result send_answer(struct MHD_Connection *conn, rest_request *req)
{
    struct MHD_Response *resp;
    if (req->stream) {
        /* 64 KiB per read when the size is known: MHD reads into a buffer of
         * this size. bench/wado-retrieve (1,000 x 0.5 MB, CPU seconds per
         * retrieve, same run): 64 KiB 0.15-0.17 in rest and 0.09-0.11 in curl;
         * 128 KiB 0.17-0.22 and 0.14-0.17; 256 KiB 0.17-0.21 and 0.13-0.17
         * (probably: larger buffers leave the caches between read and send). A
         * chunked answer (size -1) is read into what is left of the
         * connection's memory pool (REST_POOL_SIZE) instead, whatever this says. MHD owns
         * the stream from here, also on failure */
        uint64_t size = req->stream->size < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)req->stream->size;
        resp = mapped_response(conn, req);
        if (!resp)
            resp = MHD_create_response_from_callback(size, 64 * 1024, stream_reader, req->stream,
                                                     stream_done);
        if (!resp)
            stream_free(req->stream);
        req->stream = NULL;
    } else if (req->content_fd >= 0) {
        resp = MHD_create_response_from_fd64(req->content_len, req->content_fd);
    } else {
        resp = MHD_create_response_from_buffer(req->content_len, req->content ? req->content : "",
                                               req->content ? MHD_RESPMEM_MUST_FREE
                                                            : MHD_RESPMEM_PERSISTENT);
        req->content = NULL; /* MHD owns it now */
    }
    if (!resp)
        return MHD_NO;
    if (req->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    if (req->disposition[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, req->disposition);
    if (req->etag[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, req->etag);
    add_headers(resp, req);
    if (req->allow) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, req->allow);
        free((char *)req->allow);
        req->allow = NULL;
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static bool is_loopback(const char *addr)
{
    return strcmp(addr, "127.0.0.1") == 0 || strncmp(addr, "127.", 4) == 0 ||
           strcmp(addr, "::1") == 0 || strcmp(addr, "localhost") == 0;
}

bool rest_http_auth_required(void)
{
    const char *auth = ts_cfg_str(TESSERA_HTTP_AUTH);
    return strcmp(auth, "on") == 0 ||
           (strcmp(auth, "auto") == 0 && !is_loopback(ts_cfg_str(TESSERA_HTTP_BIND)));
}

/* Sends the answer of req and counts it. */
static enum MHD_Result finish(rest_server *srv, struct MHD_Connection *conn, rest_request *req)
{
    int cls_idx = req->status / 100;
    if (cls_idx >= 1 && cls_idx <= 5)
        ts_metric_inc(srv->m_requests[cls_idx]);
    ts_debug("http request", "method=%s uri=%s status=%d", req->method, req->url, req->status);
    enum MHD_Result ret = send_answer(conn, req);
    free(req->content);
    req->content = NULL;
    free(req->headers);
    req->headers = NULL;
    return ret;
}

/* The answer to a request refused for its credentials or its size. */
static enum MHD_Result refuse(rest_server *srv, struct MHD_Connection *conn, pending *p,
                              const char *method, const char *url)
{
    if (p->refused) {
        /* The web UI's pages: a browser whose user dismissed its sign-in prompt
         * shows this body; say what happened instead of a blank page. The API
         * answers an empty body, as Orthanc does. */
        static const char sign_in[] =
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Sign-in needed"
            "</title><h1>Sign-in needed</h1><p>This Tessera asks for a user name and a "
            "password (HTTP Basic authentication). Reload the page to sign in.</p></html>\n";
        bool page =
            strcmp(method, "GET") == 0 &&
            (strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0);
        struct MHD_Response *resp =
            page ? MHD_create_response_from_buffer(sizeof(sign_in) - 1, (void *)sign_in,
                                                   MHD_RESPMEM_PERSISTENT)
                 : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        if (page)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        /* DICOMweb's CORS headers, so that a browser shows the page why */
        rest_request req = {
            .ctx = srv->ctx, .method = method, .url = url, .conn = conn, .content_fd = -1};
        unrouted(&req);
        add_headers(resp, &req);
        free(req.headers);
        /* a bearer token or API key that failed is told so (RFC 6750), else Basic */
        const char *authz =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        enum MHD_Result ret;
        if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                    "Bearer realm=\"Tessera\", error=\"invalid_token\"");
            ret = MHD_queue_response(conn, MHD_HTTP_UNAUTHORIZED, resp);
        } else {
            ret = MHD_queue_basic_auth_fail_response(conn, "Tessera", resp);
        }
        MHD_destroy_response(resp);
        ts_metric_inc(srv->m_requests[4]);
        ts_debug("http request", "method=%s uri=%s status=401", method, url);
        return ret;
    }
    rest_request req = {
        .ctx = srv->ctx, .method = method, .url = url, .conn = conn, .content_fd = -1};
    char details[128];
    snprintf(details, sizeof(details), "the body is larger than %zu bytes", p->limit);
    rest_reply_oe_status(&req, 413, TS_OE_BAD_REQUEST, details);
    unrouted(&req);
    return finish(srv, conn, &req);
}

static size_t body_limit(const rest_server *srv, rest_body_kind kind)
{
    switch (kind) {
    case REST_BODY_SMALL:
        return REST_BODY_SMALL_MAX;
    case REST_BODY_LARGE:
        return REST_BODY_LARGE_MAX;
    case REST_BODY_INSTANCE:
    case REST_BODY_SPOOL:
    case REST_BODY_SPOOL_GZIP:
        return (size_t)srv->ctx->max_body;
    }
    return REST_BODY_SMALL_MAX;
}

/* Orthanc's method faking: X-HTTP-Method-Override on any request, or ?_method=
 * on a GET, makes it a PUT or a DELETE (in any case); another value is refused
 * (*bad). An empty value fakes nothing. */
static const char *faked_method(struct MHD_Connection *conn, const char *method, bool *bad)
{
    const char *o = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-HTTP-Method-Override");
    if (!o && strcmp(method, "GET") == 0)
        o = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "_method");
    if (!o || !o[0])
        return method;
    if (strcasecmp(o, "PUT") == 0)
        return "PUT";
    if (strcasecmp(o, "DELETE") == 0)
        return "DELETE";
    *bad = true;
    return method;
}

static bool expects_continue(struct MHD_Connection *conn)
{
    const char *e = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return e && strcasecmp(e, "100-continue") == 0;
}

static enum MHD_Result add_head_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    /* (+ what MHD keeps for each header in the pool besides its text) */
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 64;
    return MHD_YES;
}

/* The request's head as it weighs in the connection's pool: URL and headers. */
static size_t head_size(struct MHD_Connection *conn, const char *url)
{
    size_t n = strlen(url);
    MHD_get_connection_values(conn, MHD_HEADER_KIND, add_head_size, &n);
    return n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    rest_server *srv = cls;
    pending *p = *con_cls;
    (void)version;
    if (!p && head_size(conn, url) > REST_MAX_HEAD) {
        /* MHD's own limit is its pool, larger than it used to be for the
         * mapped answers' sake (REST_POOL_SIZE): the head keeps the old one */
        struct MHD_Response *r =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            abort();
        *con_cls = p;
        p->fd = -1;
        /* a browser's CORS preflight never carries credentials */
        if (!srv->auth)
            p->who.role = REST_ROLE_ADMIN;
        else if (strcmp(method, "OPTIONS") != 0)
            p->refused = !srv->ctx->authenticate(srv->ctx, conn, &p->who);
        else
            p->who.role = REST_ROLE_NONE; /* a preflight carries no credentials */
        p->method = faked_method(conn, method, &p->bad_method);
        const rest_route *route = rest_route_find(srv->routes, srv->nroutes, p->method, url);
        rest_body_kind kind = route ? route->body : REST_BODY_SMALL;
        p->limit = body_limit(srv, kind);
        /* no route (404/405): the body is read and dropped, as Orthanc reads
         * it, so that the connection stays usable; nothing is held */
        p->dropped = !route || p->bad_method;
        p->gzip = kind == REST_BODY_SPOOL_GZIP;
        if (p->dropped)
            p->limit = (size_t)srv->ctx->max_body;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        p->too_big = cl && strtoull(cl, NULL, 10) > p->limit;
        /* answered before the body: MHD closes the connection afterwards */
        if (p->too_big || (p->refused && expects_continue(conn)))
            return refuse(srv, conn, p, p->method, url);
        p->spool =
            !p->refused && !p->dropped && (kind == REST_BODY_SPOOL || kind == REST_BODY_SPOOL_GZIP);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        p->seen += n;
        if (p->seen > p->limit)
            return MHD_NO; /* a chunked body past the limit: the connection is closed */
        if (p->refused || p->dropped)
            return MHD_YES; /* read and dropped */
        if (p->spool) {
            spool_write(srv, p, upload, n);
            p->len += n;
        } else {
            if (p->len + n > p->cap) {
                size_t cap = p->cap ? p->cap : 65536;
                while (cap < p->len + n)
                    cap *= 2;
                p->body = realloc(p->body, cap);
                if (!p->body)
                    abort();
                p->cap = cap;
            }
            memcpy(p->body + p->len, upload, n);
            p->len += n;
        }
        return MHD_YES;
    }
    if (p->refused)
        return refuse(srv, conn, p, p->method, url);
    if (p->fd >= 0) {
        close(p->fd); /* complete: the handler reads it, or hands it to ingest */
        p->fd = -1;
    }
    rest_request req = {.ctx = srv->ctx,
                        .method = p->method,
                        .url = url,
                        .conn = conn,
                        .content_fd = -1,
                        .username = p->who.name,
                        .who = &p->who};
    const char *encoding =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    inflate_result inflated = INFLATE_OK;
    if (p->gzip && encoding && strcasecmp(encoding, "gzip") == 0 && !p->dropped &&
        !p->spool_error[0])
        inflated = inflate_body(srv, p);
    req.body = p->body;
    req.body_len = p->len;
    if (p->spool_path[0])
        req.body_path = p->spool_path;
    char details[128];
    if (p->bad_method) {
        set_content(&req, 400, NULL, 0, NULL);
    } else if (p->spool_error[0]) {
        rest_reply_oe_status(&req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, p->spool_error);
    } else if (inflated == INFLATE_CORRUPT) {
        rest_reply_oe(&req, TS_OE_BAD_FILE_FORMAT, "the gzip body is corrupt");
    } else if (inflated == INFLATE_TOO_BIG) {
        snprintf(details, sizeof(details), "the inflated body is larger than %zu bytes", p->limit);
        rest_reply_oe_status(&req, 413, TS_OE_BAD_REQUEST, details);
    } else {
        dispatch(srv, &req);
    }
    if (p->bad_method || p->spool_error[0] || inflated != INFLATE_OK)
        unrouted(&req);
    spool_discard(p);
    return finish(srv, conn, &req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    pending *p = *con_cls;
    if (p) {
        spool_discard(p); /* an upload cut short leaves nothing behind */
        free(p->body);
        free(p);
    }
    *con_cls = NULL;
}

int rest_server_start(rest_ctx *ctx, int port, int max_connections, const rest_route *routes,
                      size_t nroutes, rest_server **out, ts_err *err)
{
    rest_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        abort();
    srv->ctx = ctx;
    srv->routes = routes;
    srv->nroutes = nroutes;
    static const char *const labels[] = {
        "", "code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"", "code=\"4xx\"", "code=\"5xx\""};
    for (int i = 1; i <= 5; i++)
        srv->m_requests[i] = ts_metrics_counter("tessera_http_requests_total", labels[i],
                                                "HTTP requests answered, by status class");
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,  0.5,    1,     2.5,  5,     10};
    srv->m_route_seconds = calloc(nroutes, sizeof(ts_metric *));
    srv->m_route_trips = calloc(nroutes, sizeof(ts_metric *));
    if (!srv->m_route_seconds || !srv->m_route_trips)
        abort();
    for (size_t i = 0; i < nroutes; i++) {
        char label[200];
        snprintf(label, sizeof(label), "route=\"%s %s\"", routes[i].method, routes[i].pattern);
        srv->m_route_seconds[i] =
            ts_metrics_histogram("tessera_http_request_seconds", label, "time to answer, by route",
                                 bounds, sizeof(bounds) / sizeof(bounds[0]));
        srv->m_route_trips[i] =
            ts_metrics_counter("tessera_http_db_round_trips_total", label,
                               "network round trips to PostgreSQL made while answering, by route");
    }

    /* authentication: on unless off, and by default whenever the service
     * listens beyond loopback (rest_auth.c refuses to start without a way in) */
    const char *bind_addr = ts_cfg_str(TESSERA_HTTP_BIND);
    srv->auth = rest_http_auth_required();
    int rc = 0;
    if (srv->auth && !ctx->authenticate)
        rc = ts_err_set(err, TS_EINVAL, "authentication is on but nothing authenticates");
    struct sockaddr_in6 a6 = {0};
    struct sockaddr_in a4 = {0};
    const struct sockaddr *sa = NULL;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (rc == 0) {
        const char *host = strcmp(bind_addr, "localhost") == 0 ? "127.0.0.1" : bind_addr;
        if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
            a4.sin_family = AF_INET;
            a4.sin_port = htons((uint16_t)port);
            sa = (const struct sockaddr *)&a4;
        } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
            a6.sin6_family = AF_INET6;
            a6.sin6_port = htons((uint16_t)port);
            sa = (const struct sockaddr *)&a6;
            flags |= MHD_USE_IPv6;
        } else {
            rc = ts_err_set(err, TS_EINVAL, "TESSERA_HTTP_BIND=%s is not an IP address", bind_addr);
        }
    }
    /* HTTPS when a certificate is configured (libmicrohttpd's GnuTLS) */
    pthread_mutex_init(&srv->tls_mu, NULL);
    const char *cert = ts_cfg_str(TESSERA_HTTP_TLS_CERT);
    const char *key = ts_cfg_str(TESSERA_HTTP_TLS_KEY);
    if (rc == 0 && (cert[0] || key[0])) {
        if (!cert[0] || !key[0])
            rc = ts_err_set(err, TS_EINVAL,
                            "HTTPS needs both TESSERA_HTTP_TLS_CERT and "
                            "TESSERA_HTTP_TLS_KEY");
        else if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            rc = ts_err_set(err, TS_EINVAL, "this libmicrohttpd has no TLS");
        else if ((rc = tls_creds_load(cert, key, &srv->tls, err)) == 0) {
            flags |= MHD_USE_TLS;
            tls_server = srv;
        }
    }
    if (rc == 0) {
        srv->daemon = MHD_start_daemon(
            flags, (uint16_t)port, NULL, NULL, on_request, srv, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, ts_log_external, (void *)"http server",
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_connections,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)REST_POOL_SIZE,
            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_SOCK_ADDR, sa,
            srv->tls ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END, tls_retrieve,
            MHD_OPTION_END);
        if (!srv->daemon)
            rc = ts_err_set(err, TS_EIO, "cannot serve HTTP on %s port %d (in use?)", bind_addr,
                            port);
    }
    if (rc) {
        tls_creds_free(srv->tls);
        free(srv->m_route_seconds);
        free(srv->m_route_trips);
        free(srv);
        return rc;
    }
    ts_info("http", "bind=%s port=%d auth=%s tls=%s", bind_addr, port, srv->auth ? "on" : "off",
            srv->tls ? "on" : "off");
    *out = srv;
    return 0;
}

void rest_server_stop(rest_server *srv)
{
    if (!srv)
        return;
    MHD_stop_daemon(srv->daemon);
    tls_creds_free(srv->tls);
    tls_creds_free(srv->tls_prev);
    free(srv->m_route_seconds);
    free(srv->m_route_trips);
    free(srv);
}
