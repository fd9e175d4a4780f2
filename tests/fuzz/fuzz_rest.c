/* libFuzzer target: the REST request parsing of services/rest/rest_http.c on
 * arbitrary method and path bytes (input: METHOD, a newline, the path): path
 * splitting and normalisation as Orthanc does it ("..", ".", empty segments),
 * route matching with "*" and "**", the 404/405 answers with their Allow
 * header, and Orthanc's error bodies that echo the path. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "rest_http.h"

static int handled;

static void handler(rest_request *req)
{
    handled++;
    rest_reply_text(req, 200, req->seg[req->nseg ? req->nseg - 1 : 0] ? "x" : "", 1);
}

static void failing_handler(rest_request *req)
{
    rest_reply_oe(req, TS_OE_BAD_REQUEST, req->url);
}

/* A sample of main.c's shapes: fixed, one-wildcard, nested, trailing "**". */
static const rest_route routes[] = {
    {"GET", "/system", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"GET", "/patients", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"POST", "/instances", failing_handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"GET", "/instances/*", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"DELETE", "/instances/*", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"GET", "/instances/*/file", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"GET", "/studies/*/series", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"PUT", "/studies/*/metadata/*", failing_handler, REST_BODY_SMALL, REST_ROLE_UNSET,
     REST_SCOPE_NONE},
    {"GET", "/instances/*/content/**", handler, REST_BODY_SMALL, REST_ROLE_UNSET, REST_SCOPE_NONE},
    {"GET", "/instances/*/frames/*/raw", handler, REST_BODY_SMALL, REST_ROLE_UNSET,
     REST_SCOPE_NONE},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ts_log_init("fuzz", TS_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl || size > 8192)
        return 0;
    char *method = strndup((const char *)data, (size_t)(nl - data));
    char *url = strndup((const char *)nl + 1, size - (size_t)(nl - data) - 1);
    if (!method || !url)
        abort();
    rest_request req = {.method = method, .url = url, .content_fd = -1};
    rest_dispatch(routes, sizeof(routes) / sizeof(routes[0]), &req);
    if (req.status < 100 || req.status > 599)
        abort(); /* every request gets an answer */
    free(req.content);
    free((void *)req.allow);
    free(method);
    free(url);
    return 0;
}
