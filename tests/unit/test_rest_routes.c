/* The REST service's route table (services/rest/main.c, included below for its
 * static `routes`) served in this process by rest_http.c on a loopback port,
 * over a real PostgreSQL (TESSERA_TEST_DB_URL) with an empty index: no other
 * service, no subprocess, so a change to a route is checked in seconds
 * (`ctest -R rest_routes`).
 *
 * 1. Every case of tests/data/orthanc/errors.json (recorded from Orthanc 1.10.1
 *    by tests/data/orthanc/record_errors.py) is sent over HTTP and Tessera's
 *    status, Allow header and body are compared with Orthanc's: the whole error
 *    body (HttpError, HttpStatus, Message, Method, OrthancError, OrthancStatus,
 *    Uri, and Details where Orthanc sends them), or the JSON answer. A case may
 *    hold "tessera": {"status", "answer"?, "why"} where Tessera knowingly
 *    answers otherwise; the test then checks that answer instead.
 * 2. The table itself: every route's pattern is well formed, no route is
 *    shadowed by an earlier one, and a known path with each other method gets
 *    405 with an Allow header that lists exactly the methods that have a route.
 * 3. Query arguments and path normalisation as rest_http.c parses them.
 * Skips (77) without PostgreSQL. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_pg.h"

/* The service's own main.c: its routes and handlers, its main() renamed. */
#define main rest_service_main
#include "../../services/rest/main.c"
#undef main

static struct {
    char db_url[512];
    rest_ctx ctx;
    rest_server *srv;
    char base_url[64];
    char store_dir[64];
} g;

typedef struct {
    long status;
    char *body;
    size_t len;
    char allow[256];
    char content_type[128];
} answer;

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    answer *a = user;
    a->body = realloc(a->body, a->len + size * n + 1);
    memcpy(a->body + a->len, data, size * n);
    a->len += size * n;
    a->body[a->len] = '\0';
    return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    answer *a = user;
    size_t len = size * n;
    char *target = NULL;
    size_t skip = 0, tsize = 0;
    if (len > 6 && strncasecmp(data, "Allow:", 6) == 0) {
        target = a->allow;
        tsize = sizeof(a->allow);
        skip = 6;
    } else if (len > 13 && strncasecmp(data, "Content-Type:", 13) == 0) {
        target = a->content_type;
        tsize = sizeof(a->content_type);
        skip = 13;
    }
    if (target) {
        const char *v = data + skip;
        size_t vlen = len - skip;
        while (vlen && (*v == ' '))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
            vlen--;
        snprintf(target, tsize, "%.*s", (int)vlen, v);
    }
    return len;
}

/* One request; the caller frees a->body. */
static void request(const char *method, const char *path, const char *body,
                    const char *content_type, answer *a)
{
    memset(a, 0, sizeof(*a));
    CURL *c = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", g.base_url, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* "..", "//" reach the server unchanged */
    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
    if (content_type) {
        char h[160];
        snprintf(h, sizeof(h), "Content-Type: %s", content_type);
        headers = curl_slist_append(headers, h);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
}

/* ---- set-up ---------------------------------------------------------------------- */

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int group_setup(void **state)
{
    (void)state;
    ts_err err;
    /* loopback only, so no authentication; a bus nobody listens on: a route
     * that needs ingest or query answers as when they are down */
    char ingest[64];
    snprintf(ingest, sizeof(ingest), "TESSERA_INGEST_BUS=127.0.0.1:%d", free_tcp_port());
    char *envp[] = {"TESSERA_HTTP_BIND=127.0.0.1", "TESSERA_LOG_LEVEL=error", ingest, NULL};
    if (ts_config_load(envp, &err) || ts_dicom_global_init(&err))
        return -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(g.store_dir, sizeof(g.store_dir), "/tmp/ts-rest-routes-XXXXXX");
    if (!mkdtemp(g.store_dir) || ts_store_open(g.store_dir, &g.ctx.store, &err))
        return -1;
    if (unit_pg_new_database("unit_rest_routes", g.db_url, sizeof(g.db_url)) ||
        unit_pg_pool(g.db_url, 4, "read-committed", &g.ctx.db))
        return -1;
    if (ts_bus_client_new(ts_cfg_str(TESSERA_INGEST_BUS), 5, 1 << 20, &g.ctx.ingest, &err))
        return -1;
    g.ctx.stable_age_s = 60;
    g.ctx.max_body = 1 << 20;
    g.ctx.bus_timeout_ms = 1000;
    int port = free_tcp_port();
    if (rest_server_start(&g.ctx, port, 8, routes, sizeof(routes) / sizeof(routes[0]), &g.srv,
                          &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    snprintf(g.base_url, sizeof(g.base_url), "http://127.0.0.1:%d", port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rest_server_stop(g.srv);
    ts_bus_client_free(g.ctx.ingest);
    ts_db_pool_free(g.ctx.db);
    ts_store_free(g.ctx.store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g.store_dir);
    if (system(cmd) != 0)
        return -1;
    curl_global_cleanup();
    return 0;
}

/* ---- 1. answers compared with Orthanc's ------------------------------------------- */

/* Orthanc's error bodies: the keys compared one by one. */
static const char *const error_keys[] = {"HttpError",    "HttpStatus",    "Message", "Method",
                                         "OrthancError", "OrthancStatus", "Uri"};

/* Compares one answer with the expected one; appends what differs to report. */
static void compare(const json_t *c, const answer *a, FILE *report)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const json_t *t = json_object_get(c, "tessera");
    long want_status = json_integer_value(json_object_get(t ? t : c, "status"));
    const json_t *want = json_object_get(t && json_object_get(t, "answer") ? t : c, "answer");
    const char *allow = json_string_value(json_object_get(c, "allow"));
    if (a->status != want_status)
        fprintf(report, "%s: status %ld, Orthanc %ld (%.200s)\n", name, a->status, want_status,
                a->body ? a->body : "");
    if (allow && strcmp(a->allow, allow) != 0)
        fprintf(report, "%s: Allow '%s', Orthanc '%s'\n", name, a->allow, allow);
    if (json_is_null(want) || !want) {
        if (a->len && a->body[0] == '{')
            fprintf(report, "%s: a JSON body where Orthanc sends none: %.200s\n", name, a->body);
        return;
    }
    json_error_t jerr;
    json_t *got = a->len ? json_loads(a->body, 0, &jerr) : NULL;
    if (!got) {
        fprintf(report, "%s: body is not JSON: '%.200s'\n", name, a->body ? a->body : "");
        return;
    }
    if (json_is_object(want) && json_object_get(want, "OrthancStatus")) {
        for (size_t i = 0; i < sizeof(error_keys) / sizeof(error_keys[0]); i++) {
            if (!json_equal(json_object_get(got, error_keys[i]),
                            json_object_get(want, error_keys[i]))) {
                char *g1 = json_dumps(json_object_get(got, error_keys[i]), JSON_ENCODE_ANY);
                char *w1 = json_dumps(json_object_get(want, error_keys[i]), JSON_ENCODE_ANY);
                fprintf(report, "%s: %s %s, Orthanc %s\n", name, error_keys[i], g1 ? g1 : "none",
                        w1 ? w1 : "none");
                free(g1);
                free(w1);
            }
        }
        /* Details: present when Orthanc has them (the wording is ours) */
        if (json_object_get(want, "Details") && !json_is_string(json_object_get(got, "Details")))
            fprintf(report, "%s: no Details, Orthanc '%s'\n", name,
                    json_string_value(json_object_get(want, "Details")));
    } else if (!json_equal(got, want)) {
        char *w1 = json_dumps(want, JSON_COMPACT);
        fprintf(report, "%s: answer %.200s, Orthanc %s\n", name, a->body, w1);
        free(w1);
    }
    json_decref(got);
}

static void test_answers_match_orthanc(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *cases = json_load_file(TS_TEST_DATA "/orthanc/errors.json", 0, &jerr);
    if (!cases)
        fail_msg("errors.json: %s", jerr.text);
    assert_true(json_array_size(cases) >= 30);
    char *text = NULL;
    size_t len = 0;
    FILE *report = open_memstream(&text, &len);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        answer a;
        request(json_string_value(json_object_get(c, "method")),
                json_string_value(json_object_get(c, "path")),
                json_string_value(json_object_get(c, "body")),
                json_string_value(json_object_get(c, "content_type")), &a);
        compare(c, &a, report);
        free(a.body);
    }
    fclose(report);
    json_decref(cases);
    if (len) {
        /* all of them at once (fail_msg cuts long messages) */
        fprintf(stderr,
                "answers that differ from Orthanc 1.10.1's (tests/data/orthanc/"
                "errors.json):\n%s",
                text);
        fail_msg("%zu bytes of differences above", len);
    }
    free(text);
}

/* ---- 2. the table ------------------------------------------------------------------- */

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* A path that the pattern matches: "*" becomes an id-like segment, a last "**"
 * becomes two segments. */
static void path_of(const char *pattern, char *out, size_t size)
{
    out[0] = '\0';
    size_t n = 0;
    for (const char *p = pattern; *p; p++) {
        const char *add = NULL;
        char one[2] = {*p, 0};
        if (p[0] == '*' && p[1] == '*') {
            add = "a/b";
            p++;
        } else if (*p == '*') {
            add = "x1";
        } else {
            add = one;
        }
        n += (size_t)snprintf(out + n, size - n, "%s", add);
    }
}

static void test_every_route_is_reachable(void **state)
{
    (void)state;
    char path[512];
    for (size_t i = 0; i < NROUTES; i++) {
        const rest_route *r = &routes[i];
        assert_true(r->pattern[0] == '/');
        assert_null(strstr(r->pattern, "//"));
        assert_non_null(r->handler);
        path_of(r->pattern, path, sizeof(path));
        const rest_route *found = rest_route_find(routes, NROUTES, r->method, path);
        /* the first route that matches is the one that answers: an earlier
         * pattern that also matches must be meant (a fixed segment before "*") */
        if (found != r &&
            !(found && strcmp(found->pattern, r->pattern) == 0 && found->handler == r->handler))
            fail_msg("%s %s (as %s) reaches %s %s instead", r->method, r->pattern, path,
                     found ? found->method : "-", found ? found->pattern : "nothing");
    }
}

static bool method_listed(const char *allow, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)); p += n)
        if ((p == allow || p[-1] == ' ' || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

/* For a sample of fixed routes: each method without a route gets 405 with an
 * Allow that names exactly the methods that have one. */
static void test_405_and_allow(void **state)
{
    (void)state;
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    static const char *const paths[] = {"/system",  "/patients",        "/tools/find",
                                        "/changes", "/tools/log-level", "/modalities"};
    for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
        bool has[4];
        for (int m = 0; m < 4; m++)
            has[m] = rest_route_find(routes, NROUTES, methods[m], paths[p]) != NULL;
        for (int m = 0; m < 4; m++) {
            if (has[m])
                continue;
            answer a;
            request(methods[m], paths[p], methods[m][0] == 'P' ? "{}" : NULL, NULL, &a);
            if (a.status != 405)
                fail_msg("%s %s: %ld, expected 405", methods[m], paths[p], a.status);
            for (int k = 0; k < 4; k++)
                if (method_listed(a.allow, methods[k]) != has[k])
                    fail_msg("%s %s: Allow '%s' and %s", methods[m], paths[p], a.allow,
                             has[k] ? "it has a route" : "it has none");
            free(a.body);
        }
    }
}

/* ---- 3. arguments and paths ----------------------------------------------------------- */

static void test_paths_are_normalised(void **state)
{
    (void)state;
    /* Orthanc's path rules: empty segments and "." dropped, ".." goes up */
    static const char *const same_as_system[] = {"/system", "//system", "/./system",
                                                 "/patients/../system", "/system/"};
    for (size_t i = 0; i < sizeof(same_as_system) / sizeof(same_as_system[0]); i++) {
        answer a;
        request("GET", same_as_system[i], NULL, NULL, &a);
        if (a.status != 200 || !strstr(a.body, "\"DicomAet\""))
            fail_msg("GET %s: %ld %.200s", same_as_system[i], a.status, a.body);
        free(a.body);
    }
}

static void test_list_arguments(void **state)
{
    (void)state;
    answer a;
    request("GET", "/patients?expand&limit=5&since=0", NULL, NULL, &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "[]");
    free(a.body);
    /* an empty index: /changes says where it is */
    request("GET", "/changes?limit=1", NULL, NULL, &a);
    assert_int_equal(a.status, 200);
    json_t *j = json_loads(a.body, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_array(json_object_get(j, "Changes")));
    assert_int_equal(json_array_size(json_object_get(j, "Changes")), 0);
    assert_true(json_is_true(json_object_get(j, "Done")));
    json_decref(j);
    free(a.body);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_match_orthanc),
        cmocka_unit_test(test_every_route_is_reachable),
        cmocka_unit_test(test_405_and_allow),
        cmocka_unit_test(test_paths_are_normalised),
        cmocka_unit_test(test_list_arguments),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
