#include "io/sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP_WINDOW (4u << 20) /* bytes of a file mapped at a time */

bool ts_sock_same_host(int sock)
{
    struct sockaddr_storage a = {0}, b = {0};
    socklen_t la = sizeof(a), lb = sizeof(b);
    if (getsockname(sock, (struct sockaddr *)&a, &la) ||
        getpeername(sock, (struct sockaddr *)&b, &lb))
        return false;
    if (a.ss_family != b.ss_family)
        return false;
    if (a.ss_family == AF_INET)
        return ((struct sockaddr_in *)&a)->sin_addr.s_addr ==
               ((struct sockaddr_in *)&b)->sin_addr.s_addr;
    if (a.ss_family == AF_INET6)
        return memcmp(&((struct sockaddr_in6 *)&a)->sin6_addr,
                      &((struct sockaddr_in6 *)&b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

/* Waits until sock has room; 0, TS_ETIMEOUT or TS_EIO (the peer is gone). */
static int wait_room(int sock, int timeout_ms, ts_err *err)
{
    struct pollfd p = {.fd = sock, .events = POLLOUT};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ts_err_set(err, TS_EIO, "poll: %s", strerror(errno));
        if (n == 0)
            return ts_err_set(err, TS_ETIMEOUT, "the client took nothing for %d ms", timeout_ms);
        if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
            return ts_err_set(err, TS_EIO, "the client closed the connection");
        return 0;
    }
}

int ts_sock_send(int sock, const void *buf, size_t len, bool more, int timeout_ms, ts_err *err)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(sock, p, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_room(sock, timeout_ms, err);
            if (rc)
                return rc;
            continue;
        }
        return ts_err_set(err, TS_EIO, "send: %s", n < 0 ? strerror(errno) : "nothing sent");
    }
    return 0;
}

int ts_sock_send_mapped(int sock, int fd, off_t off, size_t len, int timeout_ms, ts_err *err)
{
    struct stat st;
    if (fstat(fd, &st))
        return ts_err_set(err, TS_EIO, "fstat: %s", strerror(errno));
    /* (a mapping read past the end of its file faults: never map beyond it) */
    if (off < 0 || st.st_size < off || (size_t)(st.st_size - off) < len)
        return ts_err_set(err, TS_ENOTFOUND, "the file has %lld bytes, %lld expected",
                          (long long)st.st_size, (long long)off + (long long)len);
    long page = sysconf(_SC_PAGESIZE);
    while (len > 0) {
        off_t base = off - off % page;
        size_t skip = (size_t)(off - base);
        size_t n = len < MAP_WINDOW ? len : MAP_WINDOW;
        void *m = mmap(NULL, skip + n, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, base);
        if (m == MAP_FAILED)
            return ts_err_set(err, TS_EIO, "mmap: %s", strerror(errno));
        int rc = ts_sock_send(sock, (char *)m + skip, n, true, timeout_ms, err);
        munmap(m, skip + n);
        if (rc)
            return rc;
        off += (off_t)n;
        len -= n;
    }
    return 0;
}
