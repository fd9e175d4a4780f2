#include "io/bus.h"

#include <netdb.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

uint8_t *ts_bus_pack(const ProtobufCMessage *msg, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    *len = protobuf_c_message_pack(msg, buf);
    return buf;
}

/* ---- REP ------------------------------------------------------------------ */

/* One context and one aio per worker, opened and closed by the owner of the
 * server, not by the workers: at stop the contexts are closed first (pending
 * receives and sends end with NNG_ECLOSED), the workers joined, and only then
 * the socket closed. Closing the socket under a context that is sending made
 * nng 1.5.2 panic (a destroyed mutex) under load. */
typedef struct bus_worker {
    struct ts_bus_server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    pthread_t thread;
} bus_worker;

struct ts_bus_server {
    nng_socket sock;
    int nworkers;
    bus_worker *workers;
    ts_bus_handler handler;
    void *user;
};

static void *serve_loop(void *arg)
{
    bus_worker *w = arg;
    ts_bus_server *srv = w->srv;
    nng_ctx ctx = w->ctx;
    nng_aio *aio = w->aio;
    for (;;) {
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        if (rv == NNG_ECLOSED)
            break;
        if (rv != 0)
            continue;
        nng_msg *msg = nng_aio_get_msg(aio);
        uint8_t *reply = NULL;
        size_t reply_len = 0;
        int rc = srv->handler(srv->user, nng_msg_body(msg), nng_msg_len(msg), &reply, &reply_len);
        nng_msg_free(msg);
        if (rc != 0) {
            free(reply);
            continue;
        }
        nng_msg *out;
        if (nng_msg_alloc(&out, reply_len) != 0)
            abort();
        memcpy(nng_msg_body(out), reply, reply_len);
        free(reply);
        nng_aio_set_msg(aio, out);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        if (rv != 0)
            nng_msg_free(out); /* the requester is gone; it resends elsewhere */
        if (rv == NNG_ECLOSED)
            break;
    }
    return NULL;
}

int ts_bus_server_start(const char *url, size_t max_msg, int workers, ts_bus_handler handler,
                        void *user, ts_bus_server **out, ts_err *err)
{
    *out = NULL;
    ts_bus_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        abort();
    srv->handler = handler;
    srv->user = user;
    int rv = nng_rep0_open(&srv->sock);
    if (rv != 0) {
        free(srv);
        return ts_err_set(err, TS_EBUS, "open REP socket: %s", nng_strerror(rv));
    }
    nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, max_msg);
    rv = nng_listen(srv->sock, url, NULL, 0);
    if (rv != 0) {
        nng_close(srv->sock);
        free(srv);
        return ts_err_set(err, TS_EBUS, "listen on %s: %s", url, nng_strerror(rv));
    }
    srv->workers = calloc((size_t)workers, sizeof(bus_worker));
    if (!srv->workers)
        abort();
    for (int i = 0; i < workers; i++) {
        bus_worker *w = &srv->workers[i];
        w->srv = srv;
        rv = nng_ctx_open(&w->ctx, srv->sock);
        if (rv == 0) {
            rv = nng_aio_alloc(&w->aio, NULL, NULL);
            if (rv != 0)
                nng_ctx_close(w->ctx);
        }
        if (rv != 0) {
            srv->nworkers = i; /* the ones started so far are stopped below */
            ts_bus_server_free(srv);
            return ts_err_set(err, TS_EBUS, "bus context: %s", nng_strerror(rv));
        }
        pthread_create(&w->thread, NULL, serve_loop, w);
        srv->nworkers = i + 1;
    }
    *out = srv;
    return 0;
}

void ts_bus_server_free(ts_bus_server *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->nworkers; i++)
        nng_ctx_close(srv->workers[i].ctx);
    for (int i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i].thread, NULL);
        nng_aio_free(srv->workers[i].aio);
    }
    nng_close(srv->sock);
    free(srv->workers);
    free(srv);
}

/* ---- REQ with replica discovery ----------------------------------------- */

#define MAX_PEERS 64

typedef struct peer {
    char url[128];
    nng_dialer dialer;
    bool seen; /* in the latest resolution */
} peer;

struct ts_bus_client {
    nng_socket sock;
    size_t max_msg;
    char host[256];
    char port[16];
    bool discover;
    int interval_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    peer peers[MAX_PEERS];
    int npeers;
};

static void resolve_and_dial(ts_bus_client *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(c->host, c->port, &hints, &res);
    if (gai != 0) {
        ts_warn("cannot resolve bus peer", "host=%s error=\"%s\"", c->host, gai_strerror(gai));
        return; /* keep the dialers we have: a DNS hiccup is not a dead replica */
    }
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->npeers; i++)
        c->peers[i].seen = false;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST))
            continue;
        char url[128];
        if (ai->ai_family == AF_INET6)
            snprintf(url, sizeof(url), "tcp://[%s]:%s", ip, c->port);
        else
            snprintf(url, sizeof(url), "tcp://%s:%s", ip, c->port);
        int found = -1;
        for (int i = 0; i < c->npeers; i++)
            if (strcmp(c->peers[i].url, url) == 0)
                found = i;
        if (found >= 0) {
            c->peers[found].seen = true;
            continue;
        }
        if (c->npeers == MAX_PEERS)
            continue;
        peer *p = &c->peers[c->npeers];
        /* Non-blocking: the dialer keeps reconnecting by itself while the
         * replica is down. */
        if (nng_dial(c->sock, url, &p->dialer, NNG_FLAG_NONBLOCK) != 0)
            continue;
        snprintf(p->url, sizeof(p->url), "%s", url);
        p->seen = true;
        c->npeers++;
        ts_info("bus peer added", "url=%s", url);
    }
    /* Replicas that are gone from the name: stop dialling them. */
    for (int i = 0; i < c->npeers;) {
        if (!c->peers[i].seen) {
            ts_info("bus peer removed", "url=%s", c->peers[i].url);
            nng_dialer_close(c->peers[i].dialer);
            c->peers[i] = c->peers[--c->npeers];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&c->mu);
    freeaddrinfo(res);
}

static void *discovery_loop(void *arg)
{
    ts_bus_client *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += c->interval_s;
        pthread_cond_timedwait(&c->cv, &c->mu, &until);
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->mu);
        resolve_and_dial(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int client_new(const char *target, int resolve_interval_s, size_t max_msg,
                      int (*open_socket)(nng_socket *), const char *kind, ts_bus_client **out,
                      ts_err *err)
{
    *out = NULL;
    ts_bus_client *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->interval_s = resolve_interval_s > 0 ? resolve_interval_s : 5;
    c->max_msg = max_msg;
    int rv = open_socket(&c->sock);
    if (rv != 0) {
        free(c);
        return ts_err_set(err, TS_EBUS, "open %s socket: %s", kind, nng_strerror(rv));
    }
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, max_msg);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 100);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 2000);
    if (strstr(target, "://")) {
        rv = nng_dial(c->sock, target, &c->peers[0].dialer, NNG_FLAG_NONBLOCK);
        if (rv != 0) {
            nng_close(c->sock);
            free(c);
            return ts_err_set(err, TS_EBUS, "dial %s: %s", target, nng_strerror(rv));
        }
        snprintf(c->peers[0].url, sizeof(c->peers[0].url), "%s", target);
        c->npeers = 1;
        *out = c;
        return 0;
    }
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || !colon[1] || (size_t)(colon - target) >= sizeof(c->host) ||
        strlen(colon + 1) >= sizeof(c->port)) {
        nng_close(c->sock);
        free(c);
        return ts_err_set(err, TS_EINVAL, "bus target '%s' is not host:port or a URL", target);
    }
    memcpy(c->host, target, (size_t)(colon - target));
    /* [v6]:port */
    if (c->host[0] == '[') {
        memmove(c->host, c->host + 1, strlen(c->host));
        c->host[strcspn(c->host, "]")] = '\0';
    }
    snprintf(c->port, sizeof(c->port), "%s", colon + 1);
    c->discover = true;
    resolve_and_dial(c);
    pthread_create(&c->thread, NULL, discovery_loop, c);
    *out = c;
    return 0;
}

int ts_bus_client_new(const char *target, int resolve_interval_s, size_t max_msg,
                      ts_bus_client **out, ts_err *err)
{
    return client_new(target, resolve_interval_s, max_msg, nng_req0_open, "REQ", out, err);
}

int ts_bus_pusher_new(const char *target, int resolve_interval_s, ts_bus_client **out, ts_err *err)
{
    return client_new(target, resolve_interval_s, 4096, nng_push0_open, "PUSH", out, err);
}

int ts_bus_push(ts_bus_client *c, const ProtobufCMessage *msg)
{
    size_t len;
    uint8_t *buf = ts_bus_pack(msg, &len);
    /* Non-blocking: with no puller connected the nudge is dropped; pullers poll too. */
    int rv = nng_send(c->sock, buf, len, NNG_FLAG_NONBLOCK);
    free(buf);
    return rv == 0 ? 0 : TS_EBUS;
}

void ts_bus_client_free(ts_bus_client *c)
{
    if (!c)
        return;
    if (c->discover) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    nng_close(c->sock);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

int ts_bus_client_peers(ts_bus_client *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->npeers;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int ts_bus_call(ts_bus_client *c, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply,
                int timeout_ms, ts_err *err)
{
    *reply = NULL;
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    int rc = 0;
    int rv = nng_ctx_open(&ctx, c->sock);
    if (rv != 0)
        return ts_err_set(err, TS_EBUS, "bus context: %s", nng_strerror(rv));
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        abort();
    nng_aio_set_timeout(aio, timeout_ms);

    size_t len = protobuf_c_message_get_packed_size(req);
    /* Refused here rather than by the server: a server drops the connection of
     * an oversized message, and nng 1.5.2 can then hang when the socket is
     * closed (nanomsg/nng#1543, #1813). Both sides use TESSERA_BUS_MAX_MESSAGE. */
    if (len > c->max_msg) {
        rc = ts_err_set(err, TS_ETOOBIG, "message of %zu bytes is larger than the bus limit of %zu",
                        len, c->max_msg);
        goto out_close;
    }
    if (nng_msg_alloc(&msg, len) != 0)
        abort();
    protobuf_c_message_pack(req, nng_msg_body(msg));
    nng_aio_set_msg(aio, msg);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(msg);
        rc = ts_err_set(err, rv == NNG_ETIMEDOUT ? TS_ETIMEOUT : TS_EBUS, "bus send: %s",
                        nng_strerror(rv));
        goto out_close;
    }
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        rc = ts_err_set(err, rv == NNG_ETIMEDOUT ? TS_ETIMEOUT : TS_EBUS,
                        "no answer on the bus: %s", nng_strerror(rv));
        goto out_close;
    }
    msg = nng_aio_get_msg(aio);
    *reply = protobuf_c_message_unpack(reply_desc, NULL, nng_msg_len(msg), nng_msg_body(msg));
    nng_msg_free(msg);
    if (!*reply)
        rc = ts_err_set(err, TS_EBUS, "undecodable %s on the bus", reply_desc->name);
out_close:
    nng_aio_free(aio);
    nng_ctx_close(ctx);
    return rc;
}

/* ---- PUB ---------------------------------------------------------------- */

struct ts_bus_pub {
    nng_socket sock;
};

int ts_bus_pub_open(const char *url, ts_bus_pub **out, ts_err *err)
{
    *out = NULL;
    ts_bus_pub *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    int rv = nng_pub0_open(&p->sock);
    if (rv == 0)
        rv = nng_listen(p->sock, url, NULL, 0);
    if (rv != 0) {
        nng_close(p->sock);
        free(p);
        return ts_err_set(err, TS_EBUS, "publish on %s: %s", url, nng_strerror(rv));
    }
    *out = p;
    return 0;
}

int ts_bus_publish(ts_bus_pub *p, const ProtobufCMessage *msg, ts_err *err)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    nng_msg *m;
    if (nng_msg_alloc(&m, len) != 0)
        abort();
    protobuf_c_message_pack(msg, nng_msg_body(m));
    int rv = nng_sendmsg(p->sock, m, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        nng_msg_free(m);
        return ts_err_set(err, TS_EBUS, "publish: %s", nng_strerror(rv));
    }
    return 0;
}

void ts_bus_pub_free(ts_bus_pub *p)
{
    if (!p)
        return;
    nng_close(p->sock);
    free(p);
}

/* ---- PULL: nudges -------------------------------------------------------- */

struct ts_bus_puller {
    nng_socket sock;
};

int ts_bus_puller_open(const char *url, ts_bus_puller **out, ts_err *err)
{
    *out = NULL;
    ts_bus_puller *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    int rv = nng_pull0_open(&p->sock);
    if (rv != 0) {
        free(p);
        return ts_err_set(err, TS_EBUS, "open PULL socket: %s", nng_strerror(rv));
    }
    nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, 4096);
    rv = nng_listen(p->sock, url, NULL, 0);
    if (rv != 0) {
        nng_close(p->sock);
        free(p);
        return ts_err_set(err, TS_EBUS, "listen on %s: %s", url, nng_strerror(rv));
    }
    *out = p;
    return 0;
}

int ts_bus_puller_wait(ts_bus_puller *p, int timeout_ms)
{
    nng_socket_set_ms(p->sock, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_msg *m;
    int rv = nng_recvmsg(p->sock, &m, 0);
    if (rv == NNG_ETIMEDOUT)
        return 0;
    if (rv != 0)
        return TS_EBUS;
    nng_msg_free(m);
    /* Nudges that queued up meanwhile ask for the same pass. A non-blocking
     * receive would not see them (pull0 reads a pipe only while a receive is
     * pending), hence a short timeout. */
    nng_socket_set_ms(p->sock, NNG_OPT_RECVTIMEO, 5);
    while (nng_recvmsg(p->sock, &m, 0) == 0)
        nng_msg_free(m);
    return 1;
}

void ts_bus_puller_free(ts_bus_puller *p)
{
    if (!p)
        return;
    nng_close(p->sock);
    free(p);
}
