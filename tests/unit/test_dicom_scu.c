/* The DICOM SCU (lib/dicom/dicom_scu.cc) against dcmtk's own storescp: C-ECHO, C-STORE
 * of files in several transfer syntaxes (sent unchanged when the peer accepts
 * their syntax, converted to Implicit VR LE when it accepts only that, not sent
 * when compressed and refused), the DIMSE statuses the caller gets back, and
 * the errors a user sees for a closed port, a silent peer and a rejection (the
 * last two against our own SCP, which can be told to misbehave). Skips (77)
 * when storescp is not installed. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom/dicom.h"
#include "unit_fs.h"

#define DICOM_DIR TS_TEST_DATA "/dicom"

/* Three files, three SOP classes, three transfer syntaxes. */
#define CT_FILE DICOM_DIR "/CT_small.dcm" /* CT, Explicit VR LE */
#define CT_UID "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
#define MR_BE_FILE DICOM_DIR "/MR_small_bigendian.dcm" /* MR, Explicit VR BE */
#define MR_UID "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"
#define JPEG_FILE DICOM_DIR "/JPEG-lossy.dcm" /* SC, JPEG process 2+4 */
#define JPEG_UID "1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457"

#define UID_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define UID_IMPLICIT_LE "1.2.840.10008.1.2"
#define UID_EXPLICIT_BE "1.2.840.10008.1.2.2"
#define UID_JPEG_2_4 "1.2.840.10008.1.2.4.51"

typedef struct {
    char base[PATH_MAX]; /* mkdtemp directory */
    char out[PATH_MAX];  /* where storescp writes */
    pid_t pid;           /* storescp, 0 when not running */
    int port;
} fixture;

/* A loopback port nobody listens on now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char *copy = strdup(path), *save = NULL;
    bool found = false;
    for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char p[PATH_MAX];
        if (snprintf(p, sizeof(p), "%s/%s", dir, prog) < (int)sizeof(p))
            found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* Starts storescp with the given transfer syntax option ("+xa", "+xi") and one
 * more option (or NULL) on a free port, writing into f->out, and waits until it
 * listens. */
static void start_storescp2(fixture *f, const char *syntax_option, const char *extra)
{
    f->port = free_port();
    char port[16], log[PATH_MAX];
    snprintf(port, sizeof(port), "%d", f->port);
    xsnprintf(log, sizeof(log), "%s/storescp.log", f->base);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("TCP_NODELAY", "1", 1);
        if (extra)
            execlp("storescp", "storescp", "-v", "-aet", "STORESCP", syntax_option, extra, "-od",
                   f->out, port, (char *)NULL);
        else
            execlp("storescp", "storescp", "-v", "-aet", "STORESCP", syntax_option, "-od", f->out,
                   port, (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 100; i++) {
        if (port_open(f->port))
            return;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            f->pid = 0;
            fail_msg("storescp exited at start; see %s", log);
        }
        usleep(50 * 1000);
    }
    fail_msg("storescp did not listen on port %d within 5 s", f->port);
}

static void start_storescp(fixture *f, const char *syntax_option)
{
    start_storescp2(f, syntax_option, NULL);
}

static void stop_storescp(fixture *f)
{
    if (f->pid <= 0)
        return;
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    xsnprintf(f->base, sizeof(f->base), "/tmp/ts-dicom-scu-XXXXXX");
    if (!mkdtemp(f->base)) {
        free(f);
        return -1;
    }
    xsnprintf(f->out, sizeof(f->out), "%s/out", f->base);
    mkdir(f->out, 0755);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    stop_storescp(f);
    rm_rf(f->base);
    free(f);
    return 0;
}

static ts_dicom_peer peer_of(const char *aet, int port)
{
    ts_dicom_peer p = {
        .our_aet = "TESSERA", .aet = aet, .host = "127.0.0.1", .port = port, .timeout_s = 10};
    return p;
}

/* What storescp wrote: SOP instance UID and transfer syntax of each file. */
typedef struct {
    size_t count;
    char sop_uid[8][128];
    char syntax[8][128];
} received;

static void read_received(const fixture *f, received *r)
{
    memset(r, 0, sizeof(*r));
    DIR *d = opendir(f->out);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        assert_true(r->count < 8);
        char path[PATH_MAX];
        xsnprintf(path, sizeof(path), "%s/%s", f->out, e->d_name);
        ts_dicom *dcm = NULL;
        ts_err err = {0};
        if (ts_dicom_open_file(path, &dcm, &err) != 0)
            fail_msg("storescp wrote %s, which we cannot read: %s", path, err.msg);
        char *uid = ts_dicom_get_string(dcm, TS_TAG_SOP_INSTANCE_UID, false);
        assert_non_null(uid);
        snprintf(r->sop_uid[r->count], sizeof(r->sop_uid[0]), "%s", uid);
        snprintf(r->syntax[r->count], sizeof(r->syntax[0]), "%s", ts_dicom_transfer_syntax(dcm));
        free(uid);
        ts_dicom_free(dcm);
        r->count++;
    }
    closedir(d);
}

/* The transfer syntax storescp wrote the instance with, or NULL if it has none. */
static const char *syntax_of(const received *r, const char *sop_uid)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->sop_uid[i], sop_uid) == 0)
            return r->syntax[i];
    return NULL;
}

/* ---- against storescp ------------------------------------------------------ */

static void test_echo(void **state)
{
    fixture *f = *state;
    start_storescp(f, "+xa");
    ts_dicom_peer peer = peer_of("STORESCP", f->port);
    ts_err err = {0};
    int rc = ts_dicom_echo(&peer, &err);
    if (rc)
        fail_msg("echo failed: %s", err.msg);
    /* Twice: each call is an association of its own. */
    assert_int_equal(ts_dicom_echo(&peer, &err), 0);
}

/* A peer that accepts every syntax receives each file as it is on disk. */
static void test_store_keeps_each_files_syntax(void **state)
{
    fixture *f = *state;
    start_storescp(f, "+xa");
    ts_dicom_peer peer = peer_of("STORESCP", f->port);
    const char *paths[] = {CT_FILE, MR_BE_FILE, JPEG_FILE};
    uint16_t statuses[3] = {0x1234, 0x1234, 0x1234};
    ts_err err = {0};
    int rc = ts_dicom_store_files(&peer, paths, 3, statuses, &err);
    if (rc)
        fail_msg("store failed: %s", err.msg);
    assert_int_equal(statuses[0], 0);
    assert_int_equal(statuses[1], 0);
    assert_int_equal(statuses[2], 0);
    received r;
    read_received(f, &r);
    assert_int_equal(r.count, 3);
    assert_non_null(syntax_of(&r, CT_UID));
    assert_string_equal(syntax_of(&r, CT_UID), UID_EXPLICIT_LE);
    assert_non_null(syntax_of(&r, MR_UID));
    assert_string_equal(syntax_of(&r, MR_UID), UID_EXPLICIT_BE);
    assert_non_null(syntax_of(&r, JPEG_UID));
    assert_string_equal(syntax_of(&r, JPEG_UID), UID_JPEG_2_4);
}

/* A peer that accepts Implicit VR LE only: uncompressed files go over the
 * fallback context, converted; so does the JPEG file, decoded (issue 21: it
 * was not sent before); a file that is not DICOM is not sent (0xFFFF), and the
 * call still succeeds. */
static void test_store_falls_back_to_implicit_le(void **state)
{
    fixture *f = *state;
    start_storescp(f, "+xi");
    ts_dicom_peer peer = peer_of("STORESCP", f->port);
    const char *paths[] = {CT_FILE, JPEG_FILE, TS_TEST_DATA "/README.md", MR_BE_FILE};
    uint16_t statuses[4];
    ts_err err = {0};
    int rc = ts_dicom_store_files(&peer, paths, 4, statuses, &err);
    if (rc)
        fail_msg("store failed: %s", err.msg);
    assert_int_equal(statuses[0], 0);
    assert_int_equal(statuses[1], 0);
    assert_int_equal(statuses[2], 0xFFFF);
    assert_int_equal(statuses[3], 0);
    received r;
    read_received(f, &r);
    assert_int_equal(r.count, 3);
    assert_non_null(syntax_of(&r, CT_UID));
    assert_string_equal(syntax_of(&r, CT_UID), UID_IMPLICIT_LE);
    assert_non_null(syntax_of(&r, MR_UID));
    assert_string_equal(syntax_of(&r, MR_UID), UID_IMPLICIT_LE);
    assert_non_null(syntax_of(&r, JPEG_UID));
    assert_string_equal(syntax_of(&r, JPEG_UID), UID_IMPLICIT_LE);
}

static void test_store_nothing_to_send(void **state)
{
    (void)state;
    /* Nobody listens there: no file means no association is attempted. */
    ts_dicom_peer peer = peer_of("NOBODY", free_port());
    const char *paths[] = {TS_TEST_DATA "/README.md"};
    uint16_t statuses[1] = {0};
    ts_err err = {0};
    assert_int_equal(ts_dicom_store_files(&peer, NULL, 0, NULL, &err), 0);
    assert_int_equal(ts_dicom_store_files(&peer, paths, 1, statuses, &err), 0);
    assert_int_equal(statuses[0], 0xFFFF);
}

/* Replaces every occurrence of from by to (same length) in buf. */
static void patch_all(char *buf, size_t len, const char *from, const char *to, size_t n)
{
    for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), from, n)); p += n)
        memcpy(p, to, n);
}

/* More SOP classes than one association can carry contexts for (each
 * uncompressed file needs 2 of the 128): the files go over two associations,
 * and every one arrives. The files are CT_small with its SOP class and
 * instance UIDs rewritten in place (same lengths); storescp -pm accepts any
 * SOP class. */
static void test_store_more_contexts_than_one_association_holds(void **state)
{
    fixture *f = *state;
    enum { N = 65 };
    FILE *in = fopen(CT_FILE, "rb");
    assert_non_null(in);
    static char orig[1 << 16], buf[1 << 16];
    size_t len = fread(orig, 1, sizeof(orig), in);
    fclose(in);
    assert_true(len > 0 && len < sizeof(orig));
    char paths_buf[N][PATH_MAX];
    const char *paths[N];
    for (int i = 0; i < N; i++) {
        memcpy(buf, orig, len);
        char cls[27], uid[49];
        snprintf(cls, sizeof(cls), "1.2.840.99999.1.1.1.1.1.%02d", 10 + i);
        patch_all(buf, len, "1.2.840.10008.5.1.4.1.1.2", cls, 26); /* with its NUL pad */
        snprintf(uid, sizeof(uid), "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.123%02d", 10 + i);
        patch_all(buf, len, CT_UID, uid, 48);
        xsnprintf(paths_buf[i], sizeof(paths_buf[i]), "%s/in-%02d.dcm", f->base, i);
        FILE *out = fopen(paths_buf[i], "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(buf, 1, len, out), len);
        fclose(out);
        paths[i] = paths_buf[i];
    }
    start_storescp2(f, "+xa", "-pm");
    ts_dicom_peer peer = peer_of("STORESCP", f->port);
    uint16_t statuses[N];
    ts_err err = {0};
    int rc = ts_dicom_store_files(&peer, paths, N, statuses, &err);
    if (rc)
        fail_msg("store failed: %s", err.msg);
    for (int i = 0; i < N; i++)
        if (statuses[i] != 0)
            fail_msg("file %d: status 0x%04x", i, statuses[i]);
    size_t files = 0;
    DIR *d = opendir(f->out);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        files += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(files, N);
    /* storescp logs one "Association Acknowledged" per association it accepted. */
    char log[PATH_MAX], line[512];
    xsnprintf(log, sizeof(log), "%s/storescp.log", f->base);
    FILE *lf = fopen(log, "r");
    assert_non_null(lf);
    int assocs = 0;
    while (fgets(line, sizeof(line), lf))
        assocs += strstr(line, "Association Acknowledged") != NULL;
    fclose(lf);
    assert_int_equal(assocs, 2);
}

/* ---- errors a user sees ---------------------------------------------------- */

static void test_echo_closed_port(void **state)
{
    (void)state;
    int port = free_port();
    ts_dicom_peer peer = peer_of("TESSERA", port);
    ts_err err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(ts_dicom_echo(&peer, &err), TS_EIO);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    char want[64];
    snprintf(want, sizeof(want), "echo TESSERA@127.0.0.1:%d: cannot connect", port);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        fail_msg("unexpected message: %s", err.msg);
    /* Refused at once, not after the timeout. */
    assert_true(t1.tv_sec - t0.tv_sec < 5);
}

static void test_store_closed_port(void **state)
{
    (void)state;
    int port = free_port();
    ts_dicom_peer peer = peer_of("ARCHIVE", port);
    const char *paths[] = {CT_FILE, MR_BE_FILE};
    uint16_t statuses[2] = {0, 0};
    ts_err err = {0};
    assert_int_equal(ts_dicom_store_files(&peer, paths, 2, statuses, &err), TS_EIO);
    char want[64];
    snprintf(want, sizeof(want), "store ARCHIVE@127.0.0.1:%d: cannot connect", port);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        fail_msg("unexpected message: %s", err.msg);
    assert_int_equal(statuses[0], 0xFFFF);
    assert_int_equal(statuses[1], 0xFFFF);
}

/* A peer that accepts the TCP connection and never answers: the call gives up
 * after peer->timeout_s. */
static void test_echo_silent_peer_times_out(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0); /* the kernel completes the handshake; nobody reads */
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    ts_dicom_peer peer = peer_of("SILENT", ntohs(a.sin_port));
    peer.timeout_s = 1;
    ts_err err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = ts_dicom_echo(&peer, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    if (rc != TS_ETIMEOUT)
        fail_msg("expected a timeout, got %d: %s", rc, err.msg);
    assert_non_null(strstr(err.msg, "echo SILENT@127.0.0.1:"));
    assert_non_null(strstr(err.msg, "no answer within 1 s"));
    assert_true(t1.tv_sec - t0.tv_sec < 5);
}

/* ---- against our own SCP: rejection and non-success statuses --------------- */

typedef struct {
    char dir[PATH_MAX];
    int counter;
    unsigned sleep_ms; /* before answering a C-STORE */
    uint16_t status;   /* what C-STORE answers */
    ts_dicom_scp *scp;
    pthread_t thread;
} own_scp;

static int own_temp_path(void *user, char *path, size_t size, ts_err *err)
{
    own_scp *s = user;
    snprintf(path, size, "%s/rx-%d", s->dir, __atomic_add_fetch(&s->counter, 1, __ATOMIC_SEQ_CST));
    return 0;
}

static uint16_t own_store(void *user, const ts_dicom_assoc *assoc, const ts_dicom_store_rq *rq,
                          char *comment, size_t comment_size)
{
    own_scp *s = user;
    unlink(rq->path);
    if (s->sleep_ms)
        usleep(s->sleep_ms * 1000);
    snprintf(comment, comment_size, "test says no");
    return s->status;
}

static void *own_run(void *arg)
{
    own_scp *s = arg;
    ts_err err;
    ts_dicom_scp_run(s->scp, &err);
    return NULL;
}

static int own_start(own_scp *s, const fixture *f, int port)
{
    xsnprintf(s->dir, sizeof(s->dir), "%s", f->base);
    ts_dicom_scp_config cfg = {.aet = "OWNSCP",
                               .port = port,
                               .max_associations = 4,
                               .max_pdu = 65536,
                               .timeout_s = 10,
                               .check_called_aet = true};
    ts_dicom_scp_callbacks cb = {.user = s, .temp_path = own_temp_path, .store = own_store};
    ts_err err = {0};
    if (ts_dicom_scp_new(&cfg, &cb, &s->scp, &err) != 0) {
        fprintf(stderr, "our SCP: %s\n", err.msg);
        return -1;
    }
    return pthread_create(&s->thread, NULL, own_run, s);
}

static void own_stop(own_scp *s)
{
    ts_dicom_scp_stop(s->scp);
    pthread_join(s->thread, NULL);
    ts_dicom_scp_free(s->scp);
}

static void test_rejection_and_statuses(void **state)
{
    fixture *f = *state;
    own_scp s = {.status = 0xA700};
    int port = free_port();
    assert_int_equal(own_start(&s, f, port), 0);

    /* Called AE title that is not the SCP's: rejected, and the message says so. */
    ts_dicom_peer wrong = peer_of("WRONG", port);
    ts_err err = {0};
    assert_int_equal(ts_dicom_echo(&wrong, &err), TS_EIO);
    char want[64];
    snprintf(want, sizeof(want), "echo WRONG@127.0.0.1:%d: association rejected", port);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        fail_msg("unexpected message: %s", err.msg);

    /* The peer's own status reaches the caller, file by file. */
    ts_dicom_peer peer = peer_of("OWNSCP", port);
    const char *paths[] = {CT_FILE, JPEG_FILE};
    uint16_t statuses[2];
    int rc = ts_dicom_store_files(&peer, paths, 2, statuses, &err);
    if (rc)
        fail_msg("store failed: %s", err.msg);
    assert_int_equal(statuses[0], 0xA700);
    assert_int_equal(statuses[1], 0xA700);

    /* A C-STORE answered later than peer->timeout_s: the association is given
     * up with a timeout error; the file's status stays "not sent". */
    s.sleep_ms = 2500;
    peer.timeout_s = 1;
    statuses[0] = 0;
    rc = ts_dicom_store_files(&peer, paths, 1, statuses, &err);
    if (rc != TS_ETIMEOUT)
        fail_msg("expected a timeout, got %d: %s", rc, err.msg);
    snprintf(want, sizeof(want), "store OWNSCP@127.0.0.1:%d: no answer within 1 s", port);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        fail_msg("unexpected message: %s", err.msg);
    assert_int_equal(statuses[0], 0xFFFF);
    own_stop(&s);
}

int main(void)
{
    if (!on_path("storescp")) {
        fprintf(stderr, "storescp (dcmtk) is not on PATH: skipped\n");
        return 77;
    }
    setenv("TCP_NODELAY", "1", 0);
    signal(SIGPIPE, SIG_IGN);
    ts_err err = {0};
    if (ts_dicom_global_init(&err) != 0) {
        fprintf(stderr, "dicom init: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_keeps_each_files_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_falls_back_to_implicit_le, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_more_contexts_than_one_association_holds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_nothing_to_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_closed_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_closed_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_silent_peer_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejection_and_statuses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
