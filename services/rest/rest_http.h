/* The HTTP layer of the REST service: libmicrohttpd glue, request bodies with
 * a size limit, a route table, and answers in Orthanc's shapes (JSON bodies,
 * Orthanc's error bodies). */
#ifndef REST_HTTP_H
#define REST_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "io/bus.h"
#include "io/db.h"
#include "base/orthanc_errors.h"
#include "base/err.h"
#include "io/store.h"

/* Who makes a request and what they may do (rest_auth.c): roles are ordered,
 * each allowing what the ones below it allow. */
typedef enum rest_role {
    REST_ROLE_UNSET = 0, /* a route row without one: GET needs read, others write */
    REST_ROLE_NONE,      /* a caller without rights; a route anyone may call (preflights) */
    REST_ROLE_READ,      /* GET (and reads sent as POST: /tools/find, archives) */
    REST_ROLE_WRITE,     /* uploads, deletions, labels, metadata, jobs */
    REST_ROLE_ADMIN,     /* configuration: modalities, peers, API keys, log level */
} rest_role;

#define REST_MAX_GRANTS 32
typedef struct rest_principal {
    char name[128]; /* HTTP Basic user, "key:<id>" or the token's subject; "" when
                       authentication is off */
    rest_role role;
    /* label-scoped: sees only the studies carrying one of these labels (with
     * their series, instances and patients); otherwise sees everything */
    bool restricted;
    size_t nlabels;
    char labels[REST_MAX_GRANTS][65];
} rest_principal;

struct rest_route;
struct rest_request;

typedef struct rest_ctx {
    ts_db_pool *db;
    ts_store *store;
    ts_bus_client *ingest;
    ts_bus_client *deleters; /* PUSH nudges after deletions; NULL: none */
    ts_bus_client *query;    /* the query service's find; NULL: not configured */
    int stable_age_s;
    long max_body;
    int bus_timeout_ms;
    /* Authentication and authorization (rest_auth.c); NULL: everyone is an
     * unrestricted admin (authentication off). authenticate() reads the
     * request's credentials (conn: struct MHD_Connection) and fills *who, false
     * when they are missing or wrong (401). authorize() runs before every
     * route's handler (rest_dispatch): false when it answered instead (403, or
     * 404 for a resource the caller may not see). */
    bool (*authenticate)(struct rest_ctx *ctx, void *conn, rest_principal *who);
    bool (*authorize)(struct rest_request *req, const struct rest_route *route);
    struct rest_auth *auth;
    struct ts_audit *audit; /* the audit trail's queue (lib/domain/audit.h); NULL: logs only */
    /* called after a route answered, with its pattern (the audit trail); NULL: none */
    void (*on_answered)(struct rest_request *req, const char *pattern);
    /* Adds headers to an answer that no route's handler gave (401 and 413
     * before the body, 404/405, a bad faked method, ...): DICOMweb's CORS
     * headers, so that a browser shows the page why. NULL: none. */
    void (*unrouted)(struct rest_request *req);
    /* Orthanc's Lua IncomingHttpRequestFilter (rest_lua.c), run before
     * routing: false when it answered instead (403). NULL: none. */
    bool (*filter)(struct rest_request *req);
    struct rest_lua *lua;
} rest_ctx;

#define REST_MAX_SEGMENTS 32

typedef struct rest_request {
    rest_ctx *ctx;
    const char *method;
    const char *url;
    const char *raw_url; /* the path as sent, before normalisation (set by rest_dispatch) */
    const char *seg[REST_MAX_SEGMENTS]; /* path segments */
    int nseg;
    const char *body;
    size_t body_len;
    /* POST /instances: the body is this complete file in the storage area's
     * tmp/ instead (body is NULL); removed after the handler unless taken over */
    const char *body_path;
    void *conn;                /* struct MHD_Connection */
    const char *username;      /* the HTTP Basic user when authentication is on, else "" */
    const rest_principal *who; /* never NULL in a handler */
    /* the answer, set by rest_reply_* */
    int status;
    char *content;
    size_t content_len;
    int content_fd; /* when >= 0, the body is this file (content_len bytes) */
    const char *content_type;
    const char *allow;          /* for 405 */
    char etag[64];              /* sent as ETag when not empty */
    char disposition[96];       /* sent as Content-Disposition when not empty */
    struct rest_stream *stream; /* when set, the body is produced while it is sent */
    char *headers;              /* more headers: "name\nvalue\n" pairs (rest_add_header) */
} rest_request;

/* Adds a header to the answer (e.g. DICOMweb's Warning). */
void rest_add_header(rest_request *req, const char *name, const char *value);

/* A request header, or NULL. */
const char *rest_header(rest_request *req, const char *name);
/* Every request header as {"lower-case name": "value"} (the caller decrefs). */
json_t *rest_headers_json(rest_request *req);

/* The client's IP address as text ("127.0.0.1", "::1"); "" if unknown. */
void rest_client_ip(rest_request *req, char *out, size_t size);

/* A query-string argument, or NULL. */
const char *rest_arg(rest_request *req, const char *name);
/* Present as an argument, whatever its value (Orthanc's rule: ?expand=false expands). */
bool rest_flag(rest_request *req, const char *name);
/* A non-negative integer argument; def when absent; -1 when malformed. */
long rest_arg_long(rest_request *req, const char *name, long def);

/* The answers. rest_reply_json steals the reference. */
void rest_reply_json(rest_request *req, int status, json_t *body);
/* A JSON text that is already built (from PostgreSQL). */
void rest_reply_json_text(rest_request *req, int status, const char *text, size_t len);
/* A text body (text/plain), e.g. a metadata value. */
void rest_reply_text(rest_request *req, int status, const char *text, size_t len);
void rest_reply_file(rest_request *req, int fd, size_t size, const char *content_type);
/* A malloc'd body the answer takes over (freed once sent); content_type must
 * outlive the request (a literal). */
void rest_reply_owned(rest_request *req, int status, void *body, size_t len,
                      const char *content_type);

/* A body produced while it is sent, so that it never has to be held whole:
 * size bytes (Content-Length), or chunked when size is -1. read() fills buf with
 * at most max bytes and returns how many (> 0), 0 at the end, or -1 to abort the
 * transfer (the client sees a truncated answer). read() runs on the
 * connection's thread and may block. free_cls(cls) is called once, whatever
 * happens, also when the answer is never sent. */
typedef ssize_t (*rest_stream_read_fn)(void *cls, char *buf, size_t max);
void rest_reply_stream(rest_request *req, const char *content_type, long long size,
                       rest_stream_read_fn read, void (*free_cls)(void *cls), void *cls);

/* A stream of known size whose whole body can also be given at once as memory
 * regions: read-only mappings of the files and the text between them.
 * map(cls, max, &regions, &n) points *regions at n <= max regions (owned by
 * cls, valid until free_cls) whose lengths add up to the size given to
 * rest_reply_stream, and returns 0; or returns -1 and leaves the stream as it
 * was, to be read from its start with read() (too many regions, a file gone,
 * shorter than indexed or not mappable). libmicrohttpd then sends the regions
 * itself with sendmsg() (MHD_create_response_from_iovec): each byte is copied
 * once, from the page cache into the socket, instead of read() into its buffer
 * and send() from there, and keep-alive, timeouts, HTTP/1.0 and a client gone
 * are its ordinary business. Used for plain HTTP GET only: over TLS GnuTLS
 * would read the mappings in user space (a file truncated in place meanwhile
 * would be a SIGBUS; the kernel's copy gives sendmsg() EFAULT instead) and
 * copies for encryption anyway; a HEAD sends no body. Call after
 * rest_reply_stream. */
typedef struct rest_region {
    const void *base;
    size_t len;
} rest_region;
typedef int (*rest_stream_map_fn)(void *cls, unsigned max, const rest_region **regions,
                                  unsigned *n);
void rest_reply_stream_mapped(rest_request *req, rest_stream_map_fn map);

/* Orthanc's error body for code (lib/base/orthanc_errors.h): {"HttpError",
 * "HttpStatus", "Message", "Method", "OrthancError", "OrthancStatus", "Uri"}
 * (+ "Details" when given), with the HTTP status Orthanc uses for the code. */
void rest_reply_oe(rest_request *req, ts_oe code, const char *details);
/* The same with another HTTP status, where Orthanc answers one that is not the
 * code's own (e.g. 413 for a body over the limit, 507 for a full storage area). */
void rest_reply_oe_status(rest_request *req, int http_status, ts_oe code, const char *details);
void rest_reply_unknown_resource(rest_request *req);
/* Orthanc answers GET /{level}/{id} of an unknown id with an empty 404. */
void rest_reply_empty(rest_request *req, int status);
/* The answer for a failure of the database or the bus (503 for TS_EDB_BUSY). */
void rest_reply_failure(rest_request *req, int code, const char *details);

typedef void (*rest_handler)(rest_request *req);
/* Whether authentication is required: TESSERA_HTTP_AUTH on, or auto while
 * TESSERA_HTTP_BIND is not a loopback address. */
bool rest_http_auth_required(void);

/* How large a route's body may be, known from the request line and headers
 * alone: a larger Content-Length is answered 413 before the body is read, and
 * a chunked body that grows past it has its connection closed. So no client
 * makes rest hold more than the route it calls needs. */
typedef enum rest_body_kind {
    REST_BODY_SMALL = 0,  /* JSON or a text value: REST_BODY_SMALL_MAX (the default) */
    REST_BODY_LARGE,      /* long JSON lists (archives, C-MOVE, send to): REST_BODY_LARGE_MAX */
    REST_BODY_INSTANCE,   /* held in memory, up to TESSERA_MAX_INSTANCE_SIZE (attachments) */
    REST_BODY_SPOOL,      /* spooled to the storage area's tmp/, up to TESSERA_MAX_INSTANCE_SIZE */
    REST_BODY_SPOOL_GZIP, /* the same, inflated first when sent with Content-Encoding: gzip
                             (within the same limit), as Orthanc 1.10.1 does for POST
                             /instances only */
} rest_body_kind;
#define REST_BODY_SMALL_MAX (1024 * 1024)
#define REST_BODY_LARGE_MAX (4 * 1024 * 1024)

/* What a label-scoped caller (rest_principal.restricted) may reach through a
 * route; everyone else reaches every route their role allows. */
typedef enum rest_scope {
    REST_SCOPE_NONE = 0,   /* not for label-scoped callers (403): cluster-wide data */
    REST_SCOPE_PUBLIC,     /* no patient data (/system, /tools) */
    REST_SCOPE_RESOURCE,   /* /{level}/{id}/...: the resource must be visible, else 404 */
    REST_SCOPE_PATIENT_OF, /* /{level}/{id}/patient: the patient must be visible, else 404 */
    REST_SCOPE_FILTERED,   /* the handler answers only what is visible (lists, find, QIDO,
                              the caller's own jobs) */
    REST_SCOPE_DICOMWEB,   /* /dicom-web/studies/{uid}/...: the study must be visible (404) */
    REST_SCOPE_WADO_URI,   /* /wado?studyUID=...: the same */
    REST_SCOPE_IN_SQL,     /* /{level}/{id}: the handler's own statement leaves out what
                              the caller may not see (rest_auth_visible_labels,
                              REST_VISIBLE_SQL), answering as for an unknown id */
} rest_scope;

typedef struct rest_route {
    const char *method;
    const char *pattern; /* path segments; a segment "*" matches any one, a last
                            segment "**" all the remaining ones (none included) */
    rest_handler handler;
    rest_body_kind body;
    rest_role role;   /* the least role that may call it (UNSET: by method) */
    rest_scope scope; /* NONE when unset: closed to label-scoped callers */
} rest_route;

/* The route that a request for method and url would reach, or NULL (404/405). */
const rest_route *rest_route_find(const rest_route *routes, size_t nroutes, const char *method,
                                  const char *url);

/* Starts serving on port with at most max_connections at once, one thread
 * per connection (handlers block on the database). */
typedef struct rest_server rest_server;
/* Routes one request (its url normalised in place, as Orthanc does) to its
 * handler, or answers 404/405. Returns the index of the route that answered,
 * or -1. Used by the server and by the fuzz target. */
int rest_dispatch(const rest_route *routes, size_t nroutes, rest_request *req);

int rest_server_start(rest_ctx *ctx, int port, int max_connections, const rest_route *routes,
                      size_t nroutes, rest_server **out, ts_err *err);
void rest_server_stop(rest_server *srv);
/* Re-reads TESSERA_HTTP_TLS_CERT and TESSERA_HTTP_TLS_KEY (on SIGHUP): new
 * handshakes get the new certificate, connections already open keep theirs.
 * On failure the certificate in use stays. Nothing to do without HTTPS. */
int rest_server_reload_tls(rest_server *srv, ts_err *err);

#endif
