/* The bus: nng sockets that carry one protobuf-c message per nng message.
 * Request/reply (REQ/REP) with replica discovery on the client side: the
 * service's host name is resolved to all its addresses, each is dialled, and it
 * is resolved again periodically (compose gives one address per replica).
 * Change events: PUB/SUB. Every listener has a message size limit. */
#ifndef TS_BUS_H
#define TS_BUS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---- REP: serve requests ------------------------------------------------- */

/* Handles one request. It must fill *reply with a packed protobuf message
 * (malloc'd; the server frees it). A non-zero return drops the request without
 * an answer (the client times out): use it only for undecodable input. */
typedef int (*ts_bus_handler)(void *user, const uint8_t *req, size_t len, uint8_t **reply,
                              size_t *reply_len);

typedef struct ts_bus_server ts_bus_server;

/* Listens on url ("tcp://0.0.0.0:7410") and serves with `workers` threads. */
int ts_bus_server_start(const char *url, size_t max_msg, int workers, ts_bus_handler handler,
                        void *user, ts_bus_server **out, ts_err *err);
/* Stops listening, waits for the workers, frees. Accepts NULL. */
void ts_bus_server_free(ts_bus_server *srv);

/* ---- REQ: call a service ------------------------------------------------- */

typedef struct ts_bus_client ts_bus_client;

/* target is "host:port" (every address of host is dialled, re-resolved every
 * resolve_interval_s) or a full nng URL ("tcp://1.2.3.4:7410", "ipc:///path"),
 * dialled as is. */
int ts_bus_client_new(const char *target, int resolve_interval_s, size_t max_msg,
                      ts_bus_client **out, ts_err *err);
void ts_bus_client_free(ts_bus_client *c);

/* Sends req and waits up to timeout_ms for the reply, unpacked with
 * reply_desc; the caller frees *reply with protobuf_c_message_free_unpacked.
 * Thread-safe: each call has its own nng context. TS_ETIMEOUT when no replica
 * answered in time; TS_ETOOBIG, without sending, for a request over the
 * client's max_msg. */
int ts_bus_call(ts_bus_client *c, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply,
                int timeout_ms, ts_err *err);

/* Number of addresses currently dialled (for tests and /health). */
int ts_bus_client_peers(ts_bus_client *c);

/* ---- PUSH/PULL: work nudges --------------------------------------------- */

/* A PUSH client with the same replica discovery as ts_bus_client_new: each
 * nudge goes to one of the pullers (free with ts_bus_client_free). */
int ts_bus_pusher_new(const char *target, int resolve_interval_s, ts_bus_client **out, ts_err *err);
/* Best effort and non-blocking: a lost nudge costs a delay, pullers also poll. */
int ts_bus_push(ts_bus_client *c, const ProtobufCMessage *msg);

typedef struct ts_bus_puller ts_bus_puller;
int ts_bus_puller_open(const char *url, ts_bus_puller **out, ts_err *err);
/* Waits up to timeout_ms for a nudge: 1 when one (or more) came, 0 on
 * timeout, a negative TS_E* code when the socket is closed. */
int ts_bus_puller_wait(ts_bus_puller *p, int timeout_ms);
void ts_bus_puller_free(ts_bus_puller *p);

/* ---- PUB: change events --------------------------------------------------- */

typedef struct ts_bus_pub ts_bus_pub;
int ts_bus_pub_open(const char *url, ts_bus_pub **out, ts_err *err);
/* Best effort: a lost event costs subscribers a delay, never data. */
int ts_bus_publish(ts_bus_pub *p, const ProtobufCMessage *msg, ts_err *err);
void ts_bus_pub_free(ts_bus_pub *p);

/* Packs a message into a malloc'd buffer. */
uint8_t *ts_bus_pack(const ProtobufCMessage *msg, size_t *len);

#endif
