/* Metrics as Prometheus and an operator see them: the rendered text, parsed
 * line by line, and the HTTP answers of /metrics and /health. The registry is
 * one per process, so every test uses metric names of its own. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/metrics.h"

/* The rendered line that starts with prefix (up to the value), or NULL. */
static const char *find_line(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0)
            return p;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NULL;
}

/* The value of the sample whose name and labels are exactly series. */
static bool sample_value(const char *text, const char *series, char *value, size_t size)
{
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%s ", series);
    const char *line = find_line(text, prefix);
    if (!line)
        return false;
    line += strlen(prefix);
    size_t n = strcspn(line, "\n");
    if (n >= size)
        return false;
    memcpy(value, line, n);
    value[n] = '\0';
    return true;
}

static void assert_sample(const char *text, const char *series, const char *expect)
{
    char value[128];
    if (!sample_value(text, series, value, sizeof(value)))
        fail_msg("no sample \"%s\" in:\n%s", series, text);
    if (strcmp(value, expect) != 0)
        fail_msg("%s is %s, expected %s", series, value, expect);
}

static size_t count_lines_starting(const char *text, const char *prefix)
{
    size_t count = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, n) == 0)
            count++;
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
    return count;
}

static void test_counter(void **state)
{
    ts_metric *m = ts_metrics_counter("t_counter_total", NULL, "things counted");
    assert_non_null(m);
    assert_true(ts_metric_value(m) == 0.0);
    ts_metric_inc(m);
    ts_metric_add(m, 2.5);
    /* a counter never goes down: a negative or NaN add is ignored */
    ts_metric_add(m, -10);
    ts_metric_add(m, 0.0 / 0.0);
    ts_metric_set(m, 100); /* set is for gauges */
    assert_true(ts_metric_value(m) == 3.5);

    char *text = ts_metrics_render();
    assert_non_null(find_line(text, "# HELP t_counter_total things counted\n"));
    assert_non_null(find_line(text, "# TYPE t_counter_total counter\n"));
    assert_sample(text, "t_counter_total", "3.5");
    free(text);

    /* integral values print without a fraction */
    ts_metric_add(m, 0.5);
    text = ts_metrics_render();
    assert_sample(text, "t_counter_total", "4");
    free(text);
}

static void test_same_name_same_metric(void **state)
{
    ts_metric *a = ts_metrics_counter("t_stores_total", "status=\"stored\"", "stores");
    ts_metric *b = ts_metrics_counter("t_stores_total", "status=\"failed\"", "stores");
    ts_metric *a2 = ts_metrics_counter("t_stores_total", "status=\"stored\"", "ignored help");
    ts_metric *none = ts_metrics_counter("t_stores_total", NULL, "stores");
    ts_metric *empty = ts_metrics_counter("t_stores_total", "", "stores");
    assert_ptr_equal(a, a2);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(none, empty); /* "" and NULL both mean no labels */
    ts_metric_inc(a);
    ts_metric_inc(a2);
    ts_metric_add(b, 7);

    char *text = ts_metrics_render();
    assert_int_equal(count_lines_starting(text, "# HELP t_stores_total "), 1);
    assert_int_equal(count_lines_starting(text, "# TYPE t_stores_total "), 1);
    assert_non_null(find_line(text, "# HELP t_stores_total stores\n"));
    assert_sample(text, "t_stores_total{status=\"stored\"}", "2");
    assert_sample(text, "t_stores_total{status=\"failed\"}", "7");
    assert_sample(text, "t_stores_total", "0");
    free(text);
}

static void test_gauge(void **state)
{
    ts_metric *g = ts_metrics_gauge("t_queue_depth", "queue=\"delete\"", "files waiting");
    ts_metric_set(g, 10);
    ts_metric_inc(g);
    ts_metric_add(g, -13.25);
    ts_metric_observe(g, 5); /* observe is for histograms */
    assert_true(ts_metric_value(g) == -2.25);
    char *text = ts_metrics_render();
    assert_non_null(find_line(text, "# TYPE t_queue_depth gauge\n"));
    assert_sample(text, "t_queue_depth{queue=\"delete\"}", "-2.25");
    free(text);

    ts_metric_set(g, 1.0 / 0.0);
    text = ts_metrics_render();
    assert_sample(text, "t_queue_depth{queue=\"delete\"}", "+Inf");
    free(text);
    ts_metric_set(g, 0.1);
    text = ts_metrics_render();
    assert_sample(text, "t_queue_depth{queue=\"delete\"}", "0.1");
    free(text);
}

static void test_histogram(void **state)
{
    static const double bounds[] = {0.1, 1, 10};
    ts_metric *h =
        ts_metrics_histogram("t_latency_seconds", "route=\"store\"", "time to store", bounds, 3);
    ts_metric *plain = ts_metrics_histogram("t_latency_seconds", NULL, "time to store", bounds, 3);
    static const double obs[] = {0.05, 0.5, 0.5, 1 /* on a bound: le is inclusive */, 5, 50};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        ts_metric_observe(h, obs[i]);
    ts_metric_inc(h); /* inc is for counters and gauges */
    ts_metric_observe(plain, 0.25);
    assert_true(ts_metric_value(h) == 6.0);

    char *text = ts_metrics_render();
    assert_non_null(find_line(text, "# TYPE t_latency_seconds histogram\n"));
    assert_int_equal(count_lines_starting(text, "# TYPE t_latency_seconds "), 1);
    /* cumulative, labels merged with le, +Inf last and equal to the count */
    assert_sample(text, "t_latency_seconds_bucket{route=\"store\",le=\"0.1\"}", "1");
    assert_sample(text, "t_latency_seconds_bucket{route=\"store\",le=\"1\"}", "4");
    assert_sample(text, "t_latency_seconds_bucket{route=\"store\",le=\"10\"}", "5");
    assert_sample(text, "t_latency_seconds_bucket{route=\"store\",le=\"+Inf\"}", "6");
    assert_sample(text, "t_latency_seconds_sum{route=\"store\"}", "57.05");
    assert_sample(text, "t_latency_seconds_count{route=\"store\"}", "6");
    assert_sample(text, "t_latency_seconds_bucket{le=\"0.1\"}", "0");
    assert_sample(text, "t_latency_seconds_bucket{le=\"1\"}", "1");
    assert_sample(text, "t_latency_seconds_bucket{le=\"+Inf\"}", "1");
    assert_sample(text, "t_latency_seconds_sum", "0.25");
    assert_sample(text, "t_latency_seconds_count", "1");
    /* buckets come in ascending order */
    const char *b01 = find_line(text, "t_latency_seconds_bucket{route=\"store\",le=\"0.1\"}");
    const char *b10 = find_line(text, "t_latency_seconds_bucket{route=\"store\",le=\"10\"}");
    const char *binf = find_line(text, "t_latency_seconds_bucket{route=\"store\",le=\"+Inf\"}");
    assert_true(b01 < b10 && b10 < binf);
    free(text);
}

static void test_histogram_without_bounds(void **state)
{
    ts_metric *h = ts_metrics_histogram("t_only_inf", NULL, "one bucket", NULL, 0);
    ts_metric_observe(h, 3);
    char *text = ts_metrics_render();
    assert_sample(text, "t_only_inf_bucket{le=\"+Inf\"}", "1");
    assert_sample(text, "t_only_inf_sum", "3");
    assert_sample(text, "t_only_inf_count", "1");
    free(text);
}

static void test_help_escaped(void **state)
{
    ts_metrics_gauge("t_escaped", NULL, "line one\nback\\slash");
    char *text = ts_metrics_render();
    assert_non_null(find_line(text, "# HELP t_escaped line one\\nback\\\\slash\n"));
    free(text);
}

/* Families must not be split even when registrations interleave. */
static void test_families_grouped(void **state)
{
    ts_metrics_counter("t_group_a_total", "k=\"1\"", "a");
    ts_metrics_counter("t_group_b_total", NULL, "b");
    ts_metrics_counter("t_group_a_total", "k=\"2\"", "a");
    char *text = ts_metrics_render();
    const char *type_a = find_line(text, "# TYPE t_group_a_total counter");
    const char *a1 = find_line(text, "t_group_a_total{k=\"1\"} ");
    const char *a2 = find_line(text, "t_group_a_total{k=\"2\"} ");
    const char *type_b = find_line(text, "# TYPE t_group_b_total counter");
    assert_non_null(type_a);
    assert_non_null(type_b);
    assert_true(type_a < a1 && a1 < a2 && a2 < type_b);
    free(text);
}

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parses the whole exposition as a scraper would: every line is a HELP, a
 * TYPE or a sample of the family announced last; HELP and TYPE once per name;
 * the text ends with a newline. */
static void test_exposition_is_valid(void **state)
{
    char *text = ts_metrics_render();
    size_t len = strlen(text);
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');

    char family[128] = "";
    char type[32] = "";
    char seen[64][128];
    size_t nseen = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            for (size_t i = 0; i < nseen; i++)
                if (strcmp(seen[i], name) == 0)
                    fail_msg("HELP for %s twice", name);
            assert_true(nseen < 64);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", name);
            snprintf(family, sizeof(family), "%s", name);
            type[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, family);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            continue;
        }
        assert_true(line[0] != '#');
        assert_true(type[0] != '\0'); /* a sample comes after its TYPE */
        size_t n = 0;
        while (name_char(line[n], n == 0))
            n++;
        assert_true(n > 0);
        char name[128];
        assert_true(n < sizeof(name));
        memcpy(name, line, n);
        name[n] = '\0';
        if (strcmp(type, "histogram") == 0) {
            size_t fl = strlen(family);
            assert_memory_equal(name, family, fl);
            const char *suffix = name + fl;
            assert_true(strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
                        strcmp(suffix, "_count") == 0);
            if (strcmp(suffix, "_bucket") == 0)
                assert_non_null(strstr(line, "le=\""));
        } else {
            assert_string_equal(name, family);
        }
        const char *rest = line + n;
        if (*rest == '{') {
            const char *close = strchr(rest, '}');
            assert_non_null(close);
            rest = close + 1;
        }
        assert_int_equal(*rest, ' ');
        rest++;
        if (strcmp(rest, "+Inf") != 0 && strcmp(rest, "-Inf") != 0 && strcmp(rest, "NaN") != 0) {
            char *end;
            strtod(rest, &end);
            if (end == rest || *end != '\0')
                fail_msg("value \"%s\" of %s is not a number", rest, name);
        }
    }
    free(text);
}

#define N_THREADS 4
#define N_ROUNDS 20000

static void *hammer(void *arg)
{
    static const double bounds[] = {1, 2};
    ts_metric *c = ts_metrics_counter("t_concurrent_total", NULL, "concurrent");
    ts_metric *g = ts_metrics_gauge("t_concurrent_gauge", NULL, "concurrent");
    ts_metric *h = ts_metrics_histogram("t_concurrent_seconds", NULL, "concurrent", bounds, 2);
    for (int i = 0; i < N_ROUNDS; i++) {
        ts_metric_inc(c);
        ts_metric_add(g, 0.5);
        ts_metric_observe(h, (double)(i % 3));
        if (i % 5000 == 0)
            free(ts_metrics_render()); /* scrapes while the values move */
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    char *text = ts_metrics_render();
    char expect[64];
    snprintf(expect, sizeof(expect), "%d", N_THREADS * N_ROUNDS);
    assert_sample(text, "t_concurrent_total", expect);
    assert_sample(text, "t_concurrent_seconds_count", expect);
    assert_sample(text, "t_concurrent_seconds_bucket{le=\"+Inf\"}", expect);
    snprintf(expect, sizeof(expect), "%d", N_THREADS * N_ROUNDS / 2);
    assert_sample(text, "t_concurrent_gauge", expect);
    free(text);
}

/* --- HTTP ---------------------------------------------------------------- */

typedef struct {
    int status;
    char head[4096]; /* status line and headers */
    char body[65536];
} http_answer;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        fail_msg("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(sa.sin_port);
}

/* A tiny HTTP/1.0 client: the server closes the connection after answering. */
static void http(int port, const char *method, const char *path, http_answer *ans)
{
    memset(ans, 0, sizeof(*ans));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        fail_msg("connect to port %d: %s", port, strerror(errno));
    char req[512];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
                 method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);

    static char raw[sizeof(ans->head) + sizeof(ans->body)];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, raw + got, sizeof(raw) - 1 - got);
        if (r < 0)
            fail_msg("read from port %d: %s", port, strerror(errno));
        if (r == 0)
            break;
        got += (size_t)r;
        assert_true(got < sizeof(raw) - 1);
    }
    close(fd);
    raw[got] = '\0';

    char *sep = strstr(raw, "\r\n\r\n");
    if (!sep)
        fail_msg("no end of headers in: %s", raw);
    size_t hl = (size_t)(sep - raw);
    assert_true(hl < sizeof(ans->head));
    memcpy(ans->head, raw, hl);
    snprintf(ans->body, sizeof(ans->body), "%s", sep + 4);
    if (sscanf(raw, "HTTP/1.%*d %d", &ans->status) != 1)
        fail_msg("bad status line: %s", raw);
}

/* The value of a header, or NULL (names compare without case, as in HTTP). */
static const char *header(const http_answer *ans, const char *name, char *buf, size_t size)
{
    size_t n = strlen(name);
    for (const char *p = strstr(ans->head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r");
            if (vl >= size)
                vl = size - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
    }
    return NULL;
}

typedef struct {
    bool healthy;
    const char *reason;
    int calls;
} health_state;

static bool health_check(void *user, char *reason, size_t size)
{
    health_state *hs = user;
    hs->calls++;
    if (!hs->healthy)
        snprintf(reason, size, "%s", hs->reason);
    return hs->healthy;
}

static void test_http_metrics_and_errors(void **state)
{
    ts_metric *c = ts_metrics_counter("t_http_scraped_total", NULL, "seen over HTTP");
    ts_metric_add(c, 42);
    int port = free_port();
    ts_metrics_server *srv = NULL;
    ts_err err = {0};
    assert_int_equal(ts_metrics_serve(port, NULL, NULL, &srv, &err), 0);
    assert_non_null(srv);

    http_answer *ans = malloc(sizeof(*ans));
    char buf[256];
    http(port, "GET", "/metrics", ans);
    assert_int_equal(ans->status, 200);
    assert_non_null(header(ans, "Content-Type", buf, sizeof(buf)));
    assert_string_equal(buf, "text/plain; version=0.0.4");
    assert_non_null(find_line(ans->body, "# TYPE t_http_scraped_total counter\n"));
    assert_sample(ans->body, "t_http_scraped_total", "42");

    /* a query string does not change the route */
    http(port, "GET", "/metrics?x=1", ans);
    assert_int_equal(ans->status, 200);

    /* without a health function the process is healthy */
    http(port, "GET", "/health", ans);
    assert_int_equal(ans->status, 200);
    assert_string_equal(ans->body, "ok\n");

    http(port, "GET", "/nope", ans);
    assert_int_equal(ans->status, 404);
    http(port, "GET", "/metrics/", ans);
    assert_int_equal(ans->status, 404);

    http(port, "POST", "/metrics", ans);
    assert_int_equal(ans->status, 405);
    assert_non_null(header(ans, "Allow", buf, sizeof(buf)));
    assert_string_equal(buf, "GET");
    http(port, "DELETE", "/health", ans);
    assert_int_equal(ans->status, 405);

    /* a second server on the same port says which port is taken */
    ts_metrics_server *again = (ts_metrics_server *)1;
    assert_int_equal(ts_metrics_serve(port, NULL, NULL, &again, &err), TS_EIO);
    assert_null(again);
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    assert_non_null(strstr(err.msg, portstr));
    assert_non_null(strstr(err.msg, "Address already in use"));

    ts_metrics_server_free(srv);
    /* once stopped, nothing answers */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    free(ans);
}

static void test_http_health(void **state)
{
    health_state hs = {.healthy = true};
    int port = free_port();
    ts_metrics_server *srv = NULL;
    ts_err err = {0};
    assert_int_equal(ts_metrics_serve(port, health_check, &hs, &srv, &err), 0);
    http_answer *ans = malloc(sizeof(*ans));

    http(port, "GET", "/health", ans);
    assert_int_equal(ans->status, 200);
    assert_string_equal(ans->body, "ok\n");

    hs.healthy = false;
    hs.reason = "database unreachable: connection refused";
    http(port, "GET", "/health", ans);
    assert_int_equal(ans->status, 503);
    assert_string_equal(ans->body, "database unreachable: connection refused\n");

    /* unhealthy without a reason still says something */
    hs.reason = "";
    http(port, "GET", "/health", ans);
    assert_int_equal(ans->status, 503);
    assert_string_equal(ans->body, "unhealthy\n");
    assert_int_equal(hs.calls, 3);

    ts_metrics_server_free(srv);
    free(ans);
}

static void test_serve_bad_port(void **state)
{
    ts_metrics_server *srv = (ts_metrics_server *)1;
    ts_err err = {0};
    assert_int_equal(ts_metrics_serve(70000, NULL, NULL, &srv, &err), TS_EINVAL);
    assert_null(srv);
    assert_non_null(strstr(err.msg, "70000"));
    assert_int_equal(ts_metrics_serve(-1, NULL, NULL, &srv, &err), TS_EINVAL);
    ts_metrics_server_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter),
        cmocka_unit_test(test_same_name_same_metric),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_histogram_without_bounds),
        cmocka_unit_test(test_help_escaped),
        cmocka_unit_test(test_families_grouped),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_exposition_is_valid), /* after the others: parses them all */
        cmocka_unit_test(test_http_metrics_and_errors),
        cmocka_unit_test(test_http_health),
        cmocka_unit_test(test_serve_bad_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
