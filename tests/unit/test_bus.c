/* lib/bus: REQ/REP round trips carrying protobuf messages, replica discovery
 * by host name, the message size limit, a call with no replica, and PUSH/PULL
 * nudges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/bus.h"
#include "base/log.h"
#include "tessera.pb-c.h"

/* Answers a StoreRequest with the request's origin in the error field and the
 * server's name in instance_id, so tests see which replica answered. */
static int echo_handler(void *user, const uint8_t *buf, size_t len, uint8_t **reply,
                        size_t *reply_len)
{
    Tessera__StoreRequest *req = tessera__store_request__unpack(NULL, len, buf);
    if (!req)
        return -1;
    Tessera__StoreReply rep = TESSERA__STORE_REPLY__INIT;
    rep.status = TESSERA__STORE_STATUS__STORE_STORED;
    rep.error = req->origin;
    rep.instance_id = (char *)user;
    *reply = ts_bus_pack(&rep.base, reply_len);
    tessera__store_request__free_unpacked(req, NULL);
    return 0;
}

/* A server listening on 127.0.0.1 at a port of 20000-31999 (below the kernel's
 * ephemeral ports, which outgoing connections take), the next one tried when
 * another process holds it; the port in *port. */
static ts_bus_server *start_on_free_tcp_port(int *port)
{
    for (int k = 0; k < 100; k++) {
        *port = 20000 + (int)((getpid() + 7919 * k) % 12000);
        char url[64];
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", *port);
        ts_bus_server *srv;
        ts_err err;
        if (ts_bus_server_start(url, 1 << 20, 2, echo_handler, "B", &srv, &err) == 0)
            return srv;
    }
    return NULL;
}

static int call(ts_bus_client *c, const char *origin, size_t payload, char *who, size_t who_size,
                ts_err *err)
{
    Tessera__StoreRequest req = TESSERA__STORE_REQUEST__INIT;
    req.origin = (char *)origin;
    uint8_t *data = calloc(1, payload ? payload : 1);
    req.dicom.data = data;
    req.dicom.len = payload;
    ProtobufCMessage *reply;
    int rc = ts_bus_call(c, &req.base, &tessera__store_reply__descriptor, &reply, 2000, err);
    free(data);
    if (rc) {
        fprintf(stderr, "call %s: %s\n", origin, err->msg);
        return rc;
    }
    Tessera__StoreReply *r = (Tessera__StoreReply *)reply;
    assert_string_equal(r->error, origin);
    snprintf(who, who_size, "%s", r->instance_id);
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

static void test_round_trip_over_ipc(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "ipc:///tmp/ts-bus-test-%d.sock", (int)getpid());
    ts_bus_server *srv;
    ts_err err;
    assert_int_equal(ts_bus_server_start(url, 1 << 20, 2, echo_handler, "A", &srv, &err), 0);
    ts_bus_client *c;
    assert_int_equal(ts_bus_client_new(url, 1, 1 << 20, &c, &err), 0);
    char who[8];
    for (int i = 0; i < 20; i++)
        assert_int_equal(call(c, "RestApi", 100, who, sizeof(who), &err), 0);
    assert_string_equal(who, "A");
    ts_bus_client_free(c);
    ts_bus_server_free(srv);
}

static void test_push_pull_nudges(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "ipc:///tmp/ts-bus-nudge-%d.sock", (int)getpid());
    ts_err err;
    ts_bus_client *pusher;
    /* the pusher may start first: a nudge with no puller is dropped, not queued forever */
    assert_int_equal(ts_bus_pusher_new(url, 1, &pusher, &err), 0);
    Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
    assert_int_not_equal(ts_bus_push(pusher, &nudge.base), 0);
    ts_bus_puller *puller;
    assert_int_equal(ts_bus_puller_open(url, &puller, &err), 0);
    assert_int_equal(ts_bus_puller_wait(puller, 50), 0); /* nothing yet: timeout */
    int sent = 0;
    for (int i = 0; i < 100 && sent < 3; i++) { /* until the dialer has connected */
        if (ts_bus_push(pusher, &nudge.base) == 0)
            sent++;
        else
            usleep(20000);
    }
    assert_int_equal(sent, 3);
    /* three nudges, one wake-up: the extra ones ask for the same pass */
    usleep(200000); /* all three delivered */
    assert_int_equal(ts_bus_puller_wait(puller, 2000), 1);
    assert_int_equal(ts_bus_puller_wait(puller, 50), 0);
    ts_bus_client_free(pusher);
    ts_bus_puller_free(puller);
}

static void test_discovery_dials_every_address_of_a_name(void **state)
{
    /* "localhost" resolves to 127.0.0.1 (and maybe ::1): a server listens on
     * the IPv4 address; the client finds it through the name. */
    int port;
    ts_bus_server *srv = start_on_free_tcp_port(&port);
    assert_non_null(srv);
    char target[64];
    snprintf(target, sizeof(target), "localhost:%d", port);
    ts_err err;
    ts_bus_client *c;
    assert_int_equal(ts_bus_client_new(target, 1, 1 << 20, &c, &err), 0);
    assert_true(ts_bus_client_peers(c) >= 1);
    char who[8];
    assert_int_equal(call(c, "DicomProtocol", 10, who, sizeof(who), &err), 0);
    assert_string_equal(who, "B");
    ts_bus_client_free(c);
    ts_bus_server_free(srv);
}

static void test_a_gone_replica_times_out_and_others_answer(void **state)
{
    char url1[128], url2[128];
    snprintf(url1, sizeof(url1), "ipc:///tmp/ts-bus-r1-%d.sock", (int)getpid());
    snprintf(url2, sizeof(url2), "ipc:///tmp/ts-bus-r2-%d.sock", (int)getpid());
    ts_bus_server *s1, *s2;
    ts_err err;
    assert_int_equal(ts_bus_server_start(url1, 1 << 20, 1, echo_handler, "1", &s1, &err), 0);
    assert_int_equal(ts_bus_server_start(url2, 1 << 20, 1, echo_handler, "2", &s2, &err), 0);
    /* one REQ socket dialled to both, as discovery does for two addresses */
    ts_bus_client *c;
    assert_int_equal(ts_bus_client_new(url1, 1, 1 << 20, &c, &err), 0);
    ts_bus_client *c2;
    assert_int_equal(ts_bus_client_new(url2, 1, 1 << 20, &c2, &err), 0);
    char who[8];
    assert_int_equal(call(c, "x", 1, who, sizeof(who), &err), 0);
    assert_string_equal(who, "1");
    /* when replica 1 goes away, its client gets no answer (TS_ETIMEOUT), and
     * the other replica still answers */
    ts_bus_server_free(s1);
    assert_int_equal(call(c, "x", 1, who, sizeof(who), &err), TS_ETIMEOUT);
    assert_int_equal(call(c2, "x", 1, who, sizeof(who), &err), 0);
    assert_string_equal(who, "2");
    ts_bus_client_free(c);
    ts_bus_client_free(c2);
    ts_bus_server_free(s2);
}

static void test_messages_over_the_limit_are_refused(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "ipc:///tmp/ts-bus-limit-%d.sock", (int)getpid());
    ts_bus_server *srv;
    ts_err err;
    assert_int_equal(ts_bus_server_start(url, 4096, 1, echo_handler, "L", &srv, &err), 0);
    ts_bus_client *c;
    assert_int_equal(ts_bus_client_new(url, 1, 4096, &c, &err), 0);
    char who[8];
    assert_int_equal(call(c, "small", 100, who, sizeof(who), &err), 0);
    assert_int_equal(call(c, "big", 100000, who, sizeof(who), &err), TS_ETOOBIG);
    assert_non_null(strstr(err.msg, "larger than the bus limit"));
    /* nothing was sent: the connection is intact and still serves */
    assert_int_equal(call(c, "small", 100, who, sizeof(who), &err), 0);
    ts_bus_client_free(c);
    ts_bus_server_free(srv);
}

static void test_bad_targets_are_errors(void **state)
{
    ts_bus_client *c;
    ts_err err;
    assert_int_equal(ts_bus_client_new("no-port-here", 1, 1024, &c, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "host:port"));
    ts_bus_server *srv;
    assert_int_equal(ts_bus_server_start("bogus://x", 1024, 1, echo_handler, NULL, &srv, &err),
                     TS_EBUS);
}

int main(void)
{
    ts_log_init("test_bus", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_over_ipc),
        cmocka_unit_test(test_push_pull_nudges),
        cmocka_unit_test(test_discovery_dials_every_address_of_a_name),
        cmocka_unit_test(test_a_gone_replica_times_out_and_others_answer),
        cmocka_unit_test(test_messages_over_the_limit_are_refused),
        cmocka_unit_test(test_bad_targets_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
