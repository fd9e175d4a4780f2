#include "base/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/xalloc.h"

#if MHD_VERSION < 0x00097002
typedef int ts_mhd_result;
#else
typedef enum MHD_Result ts_mhd_result;
#endif

typedef enum { TS_METRIC_COUNTER, TS_METRIC_GAUGE, TS_METRIC_HISTOGRAM } ts_metric_kind;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One base name: the Prometheus text format wants all series of a name in one
 * group under a single HELP and TYPE, whatever order they were registered in. */
typedef struct ts_family {
    struct ts_family *next;
    char *name;
    char *help;
    ts_metric_kind kind;
    ts_metric *metrics; /* in registration order */
    ts_metric *last;
} ts_family;

struct ts_metric {
    ts_metric *next;
    ts_family *family;
    char *labels; /* NULL when the series has none */
    /* counter and gauge: the bit pattern of a double, updated with a CAS loop
     * so that the hot path takes no lock */
    _Atomic uint64_t bits;
    /* histogram: a lock so that a scrape never sees a count that disagrees
     * with its buckets */
    pthread_mutex_t lock;
    size_t nbounds;
    double *bounds;
    uint64_t *buckets; /* nbounds + 1 non-cumulative counts, the last is +Inf */
    uint64_t count;
    double sum;
};

/* The process registry: registration is rare, so one mutex is enough. Metrics
 * live as long as the process; they are never freed. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ts_family *registry_head;
static ts_family *registry_last;

/* Registering a bad name is a programming error, found by the first run. */
static void bug(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bug(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("BUG: metrics: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static bool name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p > name && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool same_labels(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static ts_metric *registry_get(ts_metric_kind kind, const char *name, const char *labels,
                               const char *help, const double *bounds, size_t nbounds)
{
    if (!name_ok(name))
        bug("invalid metric name \"%s\"", name ? name : "(null)");
    if (labels && !*labels)
        labels = NULL;
    /* The labels are pasted between braces as given: a brace or a newline in
     * them would break every line that follows. */
    if (labels && strpbrk(labels, "{}\n"))
        bug("labels of %s must not hold braces or newlines: %s", name, labels);
    for (size_t i = 0; i < nbounds; i++)
        if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            bug("bounds of histogram %s must ascend", name);

    pthread_mutex_lock(&registry_lock);
    ts_family *fam = registry_head;
    while (fam && strcmp(fam->name, name) != 0)
        fam = fam->next;
    if (fam && fam->kind != kind)
        bug("%s registered as a %s and as a %s", name, kind_names[fam->kind], kind_names[kind]);
    if (!fam) {
        fam = xcalloc(1, sizeof(*fam));
        fam->name = xstrdup(name);
        fam->help = xstrdup(help ? help : "");
        fam->kind = kind;
        if (registry_last)
            registry_last->next = fam;
        else
            registry_head = fam;
        registry_last = fam;
    }
    ts_metric *m = fam->metrics;
    while (m && !same_labels(m->labels, labels))
        m = m->next;
    if (!m) {
        m = xcalloc(1, sizeof(*m));
        m->family = fam;
        m->labels = labels ? xstrdup(labels) : NULL;
        atomic_init(&m->bits, 0); /* all-zero bits are +0.0 */
        pthread_mutex_init(&m->lock, NULL);
        if (kind == TS_METRIC_HISTOGRAM) {
            m->nbounds = nbounds;
            m->bounds = xcalloc(nbounds ? nbounds : 1, sizeof(double));
            if (nbounds)
                memcpy(m->bounds, bounds, nbounds * sizeof(double));
            m->buckets = xcalloc(nbounds + 1, sizeof(uint64_t));
        }
        if (fam->last)
            fam->last->next = m;
        else
            fam->metrics = m;
        fam->last = m;
    }
    pthread_mutex_unlock(&registry_lock);
    return m;
}

ts_metric *ts_metrics_counter(const char *name, const char *labels, const char *help)
{
    return registry_get(TS_METRIC_COUNTER, name, labels, help, NULL, 0);
}

ts_metric *ts_metrics_gauge(const char *name, const char *labels, const char *help)
{
    return registry_get(TS_METRIC_GAUGE, name, labels, help, NULL, 0);
}

ts_metric *ts_metrics_histogram(const char *name, const char *labels, const char *help,
                                const double *bounds, size_t nbounds)
{
    return registry_get(TS_METRIC_HISTOGRAM, name, labels, help, bounds, nbounds);
}

static uint64_t to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double from_bits(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

void ts_metric_add(ts_metric *m, double v)
{
    ts_metric_kind kind = m->family->kind;
    if (kind == TS_METRIC_HISTOGRAM)
        return;
    /* A counter only goes up (Prometheus takes a drop for a restart); a wrong
     * call must not make rates lie, nor stop the service over a metric. */
    if (kind == TS_METRIC_COUNTER && !(v >= 0))
        return;
    uint64_t old = atomic_load(&m->bits);
    while (!atomic_compare_exchange_weak(&m->bits, &old, to_bits(from_bits(old) + v)))
        ;
}

void ts_metric_inc(ts_metric *m)
{
    ts_metric_add(m, 1.0);
}

void ts_metric_set(ts_metric *m, double v)
{
    if (m->family->kind == TS_METRIC_GAUGE)
        atomic_store(&m->bits, to_bits(v));
}

void ts_metric_observe(ts_metric *m, double v)
{
    if (m->family->kind != TS_METRIC_HISTOGRAM)
        return;
    size_t i = 0;
    while (i < m->nbounds && !(v <= m->bounds[i]))
        i++;
    pthread_mutex_lock(&m->lock);
    m->buckets[i]++;
    m->count++;
    m->sum += v;
    pthread_mutex_unlock(&m->lock);
}

double ts_metric_value(const ts_metric *m)
{
    if (m->family->kind != TS_METRIC_HISTOGRAM)
        return from_bits(atomic_load(&((ts_metric *)m)->bits));
    ts_metric *mm = (ts_metric *)m; /* the lock is not part of the value */
    pthread_mutex_lock(&mm->lock);
    uint64_t n = mm->count;
    pthread_mutex_unlock(&mm->lock);
    return (double)n;
}

/* A growing text buffer; out of memory aborts. */
typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} ts_text;

static void text_printf(ts_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(ts_text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(t->buf, cap);
        if (!p)
            abort();
        t->buf = p;
        t->cap = cap;
    }
}

/* Prometheus floats: +Inf, -Inf, NaN, else the shortest text that reads back
 * as the same double (so counters print as "3", not "3.000000"). */
static const char *fmt_double(char *buf, size_t size, double v)
{
    if (isnan(v))
        snprintf(buf, size, "NaN");
    else if (isinf(v))
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(buf, size, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, size, "%.17g", v);
    }
    return buf;
}

/* HELP text escapes backslash and newline (format 0.0.4). */
static void text_help(ts_text *t, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            text_printf(t, "\\\\");
        else if (*p == '\n')
            text_printf(t, "\\n");
        else
            text_printf(t, "%c", *p);
    }
}

static void render_histogram(ts_text *t, const char *name, ts_metric *m)
{
    /* Copy under the lock, format outside it, so that observers wait only
     * for a memcpy. */
    size_t nb = m->nbounds + 1;
    uint64_t *buckets = xcalloc(nb, sizeof(uint64_t));
    pthread_mutex_lock(&m->lock);
    memcpy(buckets, m->buckets, nb * sizeof(uint64_t));
    uint64_t count = m->count;
    double sum = m->sum;
    pthread_mutex_unlock(&m->lock);

    const char *labels = m->labels ? m->labels : "";
    const char *sep = m->labels ? "," : "";
    char num[64];
    uint64_t cumulative = 0;
    for (size_t i = 0; i < nb; i++) {
        cumulative += buckets[i];
        const char *le = i < m->nbounds ? fmt_double(num, sizeof(num), m->bounds[i]) : "+Inf";
        text_printf(t, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le,
                    (unsigned long long)cumulative);
    }
    if (m->labels) {
        text_printf(t, "%s_sum{%s} %s\n", name, labels, fmt_double(num, sizeof(num), sum));
        text_printf(t, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
    } else {
        text_printf(t, "%s_sum %s\n", name, fmt_double(num, sizeof(num), sum));
        text_printf(t, "%s_count %llu\n", name, (unsigned long long)count);
    }
    free(buckets);
}

char *ts_metrics_render(void)
{
    ts_text t = {.buf = malloc(4096), .len = 0, .cap = 4096};
    if (!t.buf)
        abort();
    t.buf[0] = '\0';
    char num[64];
    pthread_mutex_lock(&registry_lock);
    for (ts_family *fam = registry_head; fam; fam = fam->next) {
        text_printf(&t, "# HELP %s ", fam->name);
        text_help(&t, fam->help);
        text_printf(&t, "\n# TYPE %s %s\n", fam->name, kind_names[fam->kind]);
        for (ts_metric *m = fam->metrics; m; m = m->next) {
            if (fam->kind == TS_METRIC_HISTOGRAM) {
                render_histogram(&t, fam->name, m);
                continue;
            }
            const char *v = fmt_double(num, sizeof(num), from_bits(atomic_load(&m->bits)));
            if (m->labels)
                text_printf(&t, "%s{%s} %s\n", fam->name, m->labels, v);
            else
                text_printf(&t, "%s %s\n", fam->name, v);
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return t.buf;
}

struct ts_metrics_server {
    struct MHD_Daemon *daemon;
    ts_health_fn health;
    void *user;
};

static ts_mhd_result answer(struct MHD_Connection *conn, unsigned status, char *body,
                            const char *content_type, bool allow_get)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (allow_get)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
    ts_mhd_result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static char *text_dup(const char *s)
{
    return xstrdup(s);
}

static ts_mhd_result handle(void *cls, struct MHD_Connection *conn, const char *url,
                            const char *method, const char *version, const char *upload_data,
                            size_t *upload_data_size, void **con_cls)
{
    ts_metrics_server *srv = cls;
    static const char *const plain = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text_dup("method not allowed\n"), plain,
                      true);
    if (strcmp(url, "/metrics") == 0)
        return answer(conn, MHD_HTTP_OK, ts_metrics_render(), "text/plain; version=0.0.4", false);
    if (strcmp(url, "/health") == 0) {
        char reason[512] = "";
        if (!srv->health || srv->health(srv->user, reason, sizeof(reason)))
            return answer(conn, MHD_HTTP_OK, text_dup("ok\n"), plain, false);
        reason[sizeof(reason) - 1] = '\0';
        size_t n = strlen(reason);
        char *body = malloc(n + 16);
        if (!body)
            abort();
        snprintf(body, n + 16, "%s\n", n ? reason : "unhealthy");
        return answer(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body, plain, false);
    }
    return answer(conn, MHD_HTTP_NOT_FOUND, text_dup("not found\n"), plain, false);
}

int ts_metrics_serve(int port, ts_health_fn health, void *user, ts_metrics_server **out,
                     ts_err *err)
{
    *out = NULL;
    if (port < 0 || port > 65535)
        return ts_err_set(err, TS_EINVAL, "metrics port %d: not between 0 and 65535", port);

    /* The socket is ours, not libmicrohttpd's, so that "address in use" reaches
     * the user as a message naming the port instead of a bare failure. */
    int rc;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ts_err_set(err, TS_EIO, "metrics port %d: socket: %m", port);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        rc = ts_err_set(err, TS_EIO, "metrics port %d: bind 0.0.0.0: %m", port);
        goto out_close_fd;
    }
    if (listen(fd, 64) != 0) {
        rc = ts_err_set(err, TS_EIO, "metrics port %d: listen: %m", port);
        goto out_close_fd;
    }

    ts_metrics_server *srv = xcalloc(1, sizeof(*srv));
    srv->health = health;
    srv->user = user;
    /* MHD_USE_AUTO picks epoll or poll: a busy service holds more than the
     * FD_SETSIZE descriptors that select() could watch. */
    /* The logger comes first so that start-up messages go through it too. */
    srv->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO, (uint16_t)port, NULL,
        NULL, handle, srv, MHD_OPTION_EXTERNAL_LOGGER, ts_log_external, (void *)"metrics server",
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
        MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
    if (!srv->daemon) {
        rc = ts_err_set(err, TS_EIO,
                        "metrics port %d: cannot start the HTTP server (see the log above)", port);
        goto out_free_srv;
    }
    *out = srv;
    return 0;

out_free_srv:
    /* Whether a failed MHD_start_daemon already closed the socket depends on
     * how far it got; closing it again could close another thread's new
     * descriptor, so the socket is left open (the service stops anyway). */
    free(srv);
    return rc;
out_close_fd:
    close(fd);
    return rc;
}

void ts_metrics_server_free(ts_metrics_server *srv)
{
    if (!srv)
        return;
    /* MHD_stop_daemon joins the polling thread and closes the listen socket. */
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
