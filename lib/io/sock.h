/* Writing to a TCP socket that is non-blocking (libmicrohttpd's) from a
 * thread that may wait: each send waits for room with poll(), giving up after
 * timeout_ms without progress (TS_ETIMEOUT). Nothing here raises SIGPIPE. */
#ifndef TS_SOCK_H
#define TS_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether the peer of a connected socket is this host: its address is the
 * socket's own (loopback, or a client on the host calling its own address). */
bool ts_sock_same_host(int sock);

/* Sends the len bytes of buf; more: more follows at once (MSG_MORE: the
 * kernel may hold them for the next write). */
int ts_sock_send(int sock, const void *buf, size_t len, bool more, int timeout_ms, ts_err *err);

/* Sends len bytes of the file fd from offset off through a read-only mapping
 * of it (a window at a time): the page cache's pages are copied into the
 * socket once, with no read() into a buffer first. The file must hold
 * off + len bytes (checked first: TS_ENOTFOUND otherwise, e.g. a file
 * replaced by a shorter one since its size was indexed). */
int ts_sock_send_mapped(int sock, int fd, off_t off, size_t len, int timeout_ms, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
