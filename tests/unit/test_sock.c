/* Writing to a non-blocking socket (lib/io/sock.c) over a real loopback TCP
 * connection: a file sent from its mapping arrives whole (an offset that is not
 * a page's, across the 4 MiB window), a file shorter than said is refused
 * before anything is sent, a reader that takes nothing times out, a reader
 * gone is an error, and only a peer on this host is "same host". */
#include <arpa/inet.h>
#include <fcntl.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/sock.h"

/* A connected loopback pair: *srv non-blocking (as libmicrohttpd's), *cli blocking. */
static void tcp_pair(int *srv, int *cli)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    *cli = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*cli, (struct sockaddr *)&a, sizeof(a)), 0);
    *srv = accept(l, NULL, NULL);
    assert_true(*srv >= 0);
    close(l);
    fcntl(*srv, F_SETFL, fcntl(*srv, F_GETFL) | O_NONBLOCK);
}

typedef struct reader {
    int fd;
    unsigned char *buf;
    size_t len;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    size_t cap = 16u << 20;
    r->buf = malloc(cap);
    ssize_t n;
    while ((n = read(r->fd, r->buf + r->len, cap - r->len)) > 0)
        r->len += (size_t)n;
    return NULL;
}

static void test_send_mapped_whole(void **state)
{
    (void)state;
    char path[] = "/tmp/test_sock_XXXXXX";
    int fd = mkstemp(path);
    size_t size = (5u << 20) + 4321;
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    assert_int_equal(write(fd, data, size), (ssize_t)size);
    int srv, cli;
    tcp_pair(&srv, &cli);
    assert_true(ts_sock_same_host(srv));
    reader r = {.fd = cli};
    pthread_t t;
    pthread_create(&t, NULL, read_all, &r);
    ts_err err = {0};
    assert_int_equal(ts_sock_send(srv, "head", 4, true, 5000, &err), 0);
    off_t off = 1234; /* not a page's start; the rest crosses the 4 MiB window */
    assert_int_equal(ts_sock_send_mapped(srv, fd, off, size - 1234, 5000, &err), 0);
    /* asked for more than the file holds: refused, nothing sent */
    int rc = ts_sock_send_mapped(srv, fd, 10, size, 5000, &err);
    assert_int_equal(rc, TS_ENOTFOUND);
    assert_non_null(strstr(err.msg, "bytes"));
    close(srv);
    pthread_join(t, NULL);
    assert_int_equal(r.len, 4 + size - 1234);
    assert_memory_equal(r.buf, "head", 4);
    assert_memory_equal(r.buf + 4, data + 1234, size - 1234);
    free(r.buf);
    free(data);
    close(cli);
    close(fd);
    unlink(path);
}

static void test_send_timeout_and_peer_gone(void **state)
{
    (void)state;
    int srv, cli;
    tcp_pair(&srv, &cli);
    size_t len = 64u << 20; /* more than both sockets' buffers hold */
    char *big = calloc(1, len);
    ts_err err = {0};
    /* a client that reads nothing: no progress for 200 ms */
    assert_int_equal(ts_sock_send(srv, big, len, false, 200, &err), TS_ETIMEOUT);
    /* a client gone: an error, not a signal (SIGPIPE would end the test) */
    close(cli);
    int rc = ts_sock_send(srv, big, len, false, 2000, &err);
    assert_true(rc == TS_EIO);
    close(srv);
    free(big);
}

static void test_same_host_only_for_ip_sockets(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_false(ts_sock_same_host(sv[0])); /* not TCP/IP: nothing to compare */
    close(sv[0]);
    close(sv[1]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_false(ts_sock_same_host(s)); /* not connected */
    close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_mapped_whole),
        cmocka_unit_test(test_send_timeout_and_peer_gone),
        cmocka_unit_test(test_same_host_only_for_ip_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
