/* libFuzzer target: the DICOM upper layer of ingest's and query's SCPs
 * (lib/dicom/dicom_net.cc, lib/dicom/dicom_scp.cc, lib/dicom/dicom_find.cc and dcmtk under them)
 * on arbitrary byte streams sent over a real loopback connection, as a peer
 * that is not dcmtk would send them. Both SCPs run in this process on free
 * ports. Nothing may crash, hang or read out of bounds; closing the connection
 * is a fine answer.
 *
 * Input: one mode byte, then the stream. Mode bit 0: the stream follows a
 * canned A-ASSOCIATE-RQ (verification, CT storage, Study Root C-FIND/C-GET),
 * so that the fuzzer spends its time on P-DATA and what DIMSE makes of it;
 * bit 1: to query's SCP instead of ingest's. Seeds: tests/fuzz/corpus/dul/
 * (tests/fuzz/make_dul_seeds.py writes them). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "base/log.h"

static char tmpdir[] = "/tmp/fuzz-dul-XXXXXX";
static int ingest_port, query_port;
static ts_dicom_scp *ingest_scp;
static ts_dicom_qr_scp *query_scp;

static bool on_accept(void *user, const ts_dicom_assoc *assoc)
{
    (void)user;
    (void)assoc;
    return true;
}

static int on_temp_path(void *user, char *path, size_t size, ts_err *err)
{
    (void)user;
    snprintf(path, size, "%s/in-XXXXXX", tmpdir);
    int fd = mkstemp(path);
    if (fd < 0)
        return ts_err_set(err, TS_EIO, "mkstemp");
    close(fd);
    return 0;
}

/* As ingest: parse what came, then let it go. */
static uint16_t on_store(void *user, const ts_dicom_assoc *assoc, const ts_dicom_store_rq *rq,
                         char *comment, size_t comment_size)
{
    (void)user;
    (void)assoc;
    (void)comment;
    (void)comment_size;
    ts_dicom *d;
    ts_err err;
    uint16_t status = 0xc000;
    if (ts_dicom_open_file(rq->path, &d, &err) == 0) {
        status = 0;
        ts_dicom_free(d);
    }
    unlink(rq->path);
    return status;
}

/* One answer with every key empty, as a match would come. */
static uint16_t on_find(void *user, const ts_dicom_assoc *assoc, const ts_dicom_find_rq *rq,
                        ts_dicom_find_out *out, char *comment, size_t comment_size)
{
    (void)user;
    (void)assoc;
    (void)comment;
    (void)comment_size;
    const char **values = calloc(rq->nkeys + 1, sizeof(*values));
    if (!values)
        abort();
    ts_err err;
    int rc = ts_dicom_find_pending(out, values, TS_QR_PENDING, &err);
    free(values);
    return rc == TS_ECANCELED ? TS_QR_CANCEL : TS_QR_SUCCESS;
}

static uint16_t on_retrieve(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                            ts_dicom_retrieve_out *out, ts_dicom_move_result *res, char *comment,
                            size_t comment_size)
{
    (void)user;
    (void)assoc;
    (void)rq;
    (void)res;
    (void)comment;
    (void)comment_size;
    ts_err err;
    ts_dicom_move_result none = {0};
    if (ts_dicom_retrieve_pending(out, 0, &none, &err) == TS_ECANCELED)
        return TS_QR_CANCEL;
    return rq->destination ? TS_QR_DEST_UNKNOWN : TS_QR_SUCCESS;
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(s, (struct sockaddr *)&a, &len))
        abort();
    close(s);
    return ntohs(a.sin_port);
}

static void *run_ingest_scp(void *scp)
{
    ts_err err;
    ts_dicom_scp_run(scp, &err);
    return NULL;
}

static void *run_query_scp(void *scp)
{
    ts_err err;
    ts_dicom_qr_scp_run(scp, &err);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_init("fuzz", TS_LOG_ERROR);
    ts_err err;
    if (ts_dicom_global_init(&err) || !mkdtemp(tmpdir))
        abort();
    ts_dicom_scp_config cfg = {.aet = "TESSERA",
                               .max_associations = 64,
                               .max_pdu = 16384,
                               .timeout_s = 2,
                               .max_dataset = 1 << 20,
                               .max_pending = 256,
                               .max_pending_per_peer = 256};
    cfg.port = ingest_port = free_port();
    ts_dicom_scp_callbacks cb = {.accept = on_accept,
                                 .temp_path = on_temp_path,
                                 .store = on_store,
                                 .find = on_find,
                                 .move = on_retrieve,
                                 .get = on_retrieve};
    ts_dicom_scp *scp;
    if (ts_dicom_scp_new(&cfg, &cb, &scp, &err))
        abort();
    ingest_scp = scp;
    cfg.port = query_port = free_port();
    ts_dicom_qr_callbacks qcb = {.find = on_find, .move = on_retrieve, .get = on_retrieve};
    ts_dicom_qr_scp *qscp;
    if (ts_dicom_qr_scp_new(&cfg, &qcb, &qscp, &err))
        abort();
    query_scp = qscp;
    pthread_t t;
    if (pthread_create(&t, NULL, run_ingest_scp, scp) ||
        pthread_create(&t, NULL, run_query_scp, qscp))
        abort();
    return 0;
}

static size_t put_item(uint8_t *p, uint8_t type, const void *body, size_t len)
{
    p[0] = type;
    p[1] = 0;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    memcpy(p + 4, body, len);
    return 4 + len;
}

/* A presentation context item: id, abstract syntax, transfer syntaxes. */
static size_t put_context(uint8_t *p, uint8_t id, const char *abstract, const char *const *ts,
                          int nts)
{
    uint8_t body[512];
    size_t n = 0;
    body[n++] = id;
    body[n++] = 0;
    body[n++] = 0;
    body[n++] = 0;
    n += put_item(body + n, 0x30, abstract, strlen(abstract));
    for (int i = 0; i < nts; i++)
        n += put_item(body + n, 0x40, ts[i], strlen(ts[i]));
    return put_item(p, 0x20, body, n);
}

static size_t canned_associate_rq(uint8_t *out)
{
    static const char *const ts[] = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"};
    uint8_t body[2048];
    size_t n = 0;
    body[n++] = 0;
    body[n++] = 1; /* protocol version */
    body[n++] = 0;
    body[n++] = 0;
    memcpy(body + n, "TESSERA         FUZZ            ", 32);
    n += 32;
    memset(body + n, 0, 32);
    n += 32;
    n += put_item(body + n, 0x10, "1.2.840.10008.3.1.1.1", 21);
    n += put_context(body + n, 1, "1.2.840.10008.1.1", ts, 2);
    n += put_context(body + n, 3, "1.2.840.10008.5.1.4.1.1.2", ts, 2);
    n += put_context(body + n, 5, "1.2.840.10008.5.1.4.1.2.2.1", ts, 2);
    n += put_context(body + n, 7, "1.2.840.10008.5.1.4.1.2.2.3", ts, 2);
    uint8_t user[64];
    size_t u = 0;
    const uint8_t max_len[4] = {0, 0, 0x40, 0}; /* 16384 */
    u += put_item(user + u, 0x51, max_len, 4);
    u += put_item(user + u, 0x52, "1.2.3.4", 7);
    n += put_item(body + n, 0x50, user, u);
    out[0] = 0x01;
    out[1] = 0;
    out[2] = (uint8_t)(n >> 24);
    out[3] = (uint8_t)(n >> 16);
    out[4] = (uint8_t)(n >> 8);
    out[5] = (uint8_t)n;
    memcpy(out + 6, body, n);
    return 6 + n;
}

/* Sends the stream while reading whatever comes back (so that neither side
 * blocks on a full socket buffer), then half-closes and reads until the server
 * closes or 5 s pass. */
static void converse(int port, const uint8_t *data, size_t size)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
        abort(); /* the SCP is gone: that is a finding */
    size_t sent = 0;
    bool half_closed = false;
    char buf[65536];
    for (;;) {
        if (sent == size && !half_closed) {
            shutdown(s, SHUT_WR);
            half_closed = true;
        }
        struct pollfd p = {s, (short)(POLLIN | (half_closed ? 0 : POLLOUT)), 0};
        int r = poll(&p, 1, 5000);
        if (r <= 0)
            break; /* the server waits for more than we send: its timeout ends it */
        if (p.revents & POLLIN) {
            ssize_t k = recv(s, buf, sizeof(buf), 0);
            if (k <= 0)
                break;
        }
        if (!half_closed && (p.revents & POLLOUT)) {
            ssize_t k = send(s, data + sent, size - sent, MSG_NOSIGNAL);
            if (k <= 0)
                break;
            sent += (size_t)k;
        }
        if (p.revents & (POLLERR | POLLHUP) && !(p.revents & POLLIN))
            break;
    }
    close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 262144)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    uint8_t *stream = malloc(size + 4096);
    if (!stream)
        abort();
    size_t n = 0;
    if (mode & 1)
        n = canned_associate_rq(stream);
    memcpy(stream + n, data, size);
    converse(mode & 2 ? query_port : ingest_port, stream, n + size);
    free(stream);
    /* The SCP's threads are done with this input before the next one (and
     * before libFuzzer looks for leaks): within its 2 s timeout plus margin. */
    for (int i = 0;
         i < 1000 && (ts_dicom_scp_active(ingest_scp) || ts_dicom_qr_scp_active(query_scp)); i++)
        usleep(5000);
    if (ts_dicom_scp_active(ingest_scp) || ts_dicom_qr_scp_active(query_scp))
        abort(); /* a connection the SCP never let go of: a finding */
    return 0;
}
