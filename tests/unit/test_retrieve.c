/* C-MOVE and C-GET as lib/domain/retrieve.c answers them, end to end but in
 * one process: our own Q/R SCP (lib/dicom) on a free port with ts_retrieve_move
 * and ts_retrieve_get as its callbacks, the destinations in the modalities table
 * of a real PostgreSQL (TESSERA_TEST_DB_URL), the instances in a storage area
 * of the test's own, and dcmtk's storescp as the C-MOVE destination and getscu
 * as the C-GET client. The instances a request names come from the test (the
 * find callback), so each case says exactly what is asked: all sent, some
 * files missing, none readable, an unknown or refused destination, a
 * destination that is down, a find that fails. Skips (77) without PostgreSQL
 * or the dcmtk tools. */
#include <arpa/inet.h>
#include <dirent.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "dicom/dicom_qr_scu.h"
#include "domain/retrieve.h"
#include "unit_fs.h"
#include "unit_pg.h"

#define DICOM_DIR TS_TEST_DATA "/dicom"
#define CT_FILE DICOM_DIR "/CT_small.dcm"
#define CT_UID "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
#define MR_FILE DICOM_DIR "/MR_small.dcm"
#define STUDY_UID "1.2.3.4.5.6"

/* An instance the find callback names: its SOP UID and file in the store. */
typedef struct {
    char sop_uid[128];
    char file[TS_UUID_LEN + 1];
} named;

static struct {
    char base[PATH_MAX];
    char dest_dir[PATH_MAX]; /* where storescp writes */
    char db_url[512];
    ts_db_pool *db;
    ts_store *store;
    ts_dicom_qr_scp *scp;
    pthread_t scp_thread;
    int scp_port;
    pid_t storescp;
    int storescp_port;
    ts_retrieve retrieve;
    /* what the next request's find answers */
    named names[4];
    size_t nnames;
    uint16_t find_status;
    /* what the last find was asked */
    char last_op[8];
    char last_level[16];
    char last_destination[17];
} g;

static char mr_uid[128];

/* ---- helpers ------------------------------------------------------------------ */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static bool on_path(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Copies a test file into the store; writes its uuid. */
static void store_file(const char *path, char uuid[TS_UUID_LEN + 1])
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    ts_err err;
    assert_int_equal(ts_store_write(g.store, buf, (size_t)len, uuid, &err), 0);
    free(buf);
}

static void name_instances(const named *n, size_t count, uint16_t find_status)
{
    if (count)
        memcpy(g.names, n, count * sizeof(*n));
    g.nnames = count;
    g.find_status = find_status;
}

/* The find callback: the instances the test set, whatever the keys. */
static uint16_t test_find(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                          const char *op, const ts_dicom_grant *grant, ts_retrieve_list *list,
                          char *comment, size_t comment_size)
{
    (void)user;
    (void)assoc;
    snprintf(g.last_op, sizeof(g.last_op), "%s", op);
    snprintf(g.last_level, sizeof(g.last_level), "%s", rq->level);
    snprintf(g.last_destination, sizeof(g.last_destination), "%s",
             rq->destination ? rq->destination : "");
    if (g.find_status != TS_QR_SUCCESS) {
        snprintf(comment, comment_size, "the test's find refused");
        return g.find_status;
    }
    for (size_t i = 0; i < g.nnames; i++)
        ts_retrieve_list_add(list, g.names[i].sop_uid, g.names[i].file);
    return TS_QR_SUCCESS;
}

static void *run_scp(void *arg)
{
    ts_err err;
    ts_dicom_qr_scp_run(arg, &err);
    return NULL;
}

static void start_storescp(void)
{
    g.storescp_port = free_port();
    char port[16], log[PATH_MAX];
    snprintf(port, sizeof(port), "%d", g.storescp_port);
    xsnprintf(log, sizeof(log), "%s/storescp.log", g.base);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("storescp", "storescp", "-aet", "DEST", "-od", g.dest_dir, port, (char *)NULL);
        _exit(127);
    }
    g.storescp = pid;
    for (int i = 0; i < 100 && !port_open(g.storescp_port); i++)
        usleep(50 * 1000);
    assert_true(port_open(g.storescp_port));
}

static void stop_storescp(void)
{
    if (g.storescp > 0) {
        kill(g.storescp, SIGTERM);
        waitpid(g.storescp, NULL, 0);
        g.storescp = 0;
    }
}

/* The SOP Instance UIDs of the files in dir (sorted is not needed: callers
 * look for one). Removes the files. */
static size_t take_received(const char *dir, char uids[][128], size_t max)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        xsnprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ts_dicom *dcm = NULL;
        ts_err err;
        if (ts_dicom_open_file(path, &dcm, &err))
            fail_msg("%s: %s", path, err.msg);
        char *uid = ts_dicom_get_string(dcm, TS_TAG_SOP_INSTANCE_UID, false);
        assert_true(n < max);
        snprintf(uids[n++], 128, "%s", uid ? uid : "");
        free(uid);
        ts_dicom_free(dcm);
        unlink(path);
    }
    closedir(d);
    return n;
}

static bool holds(char uids[][128], size_t n, const char *uid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(uids[i], uid) == 0)
            return true;
    return false;
}

/* C-MOVE of the study to destination, as POST /modalities/x/move sends it.
 * Returns 0 or the error (its message says the DIMSE status). */
static int move_to(const char *destination, ts_err *err)
{
    json_t *id = json_pack("{s:s, s:s}", "0008,0052", "STUDY", "0020,000d", STUDY_UID);
    ts_dicom_peer peer = {.our_aet = "CLIENT",
                          .aet = "TESSERA",
                          .host = "127.0.0.1",
                          .port = g.scp_port,
                          .timeout_s = 10};
    int rc = ts_dicom_move_scu(&peer, destination, id, err);
    json_decref(id);
    return rc;
}

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("\"%s\" does not contain \"%s\"", s, part);
}

/* getscu for the study into g.base/get; returns its output (caller frees). */
static char *get_study(void)
{
    char dir[PATH_MAX], cmd[PATH_MAX * 2];
    xsnprintf(dir, sizeof(dir), "%s/get", g.base);
    mkdir(dir, 0755);
    xsnprintf(cmd, sizeof(cmd),
              "getscu -v -aet CLIENT -aec TESSERA -od %s -k QueryRetrieveLevel=STUDY "
              "-k StudyInstanceUID=%s 127.0.0.1 %d 2>&1",
              dir, STUDY_UID, g.scp_port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
        fwrite(buf, 1, n, mem);
    pclose(p);
    fclose(mem);
    return out;
}

/* ---- set-up ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    ts_err err;
    xsnprintf(g.base, sizeof(g.base), "/tmp/ts-retrieve-XXXXXX");
    if (!mkdtemp(g.base))
        return -1;
    xsnprintf(g.dest_dir, sizeof(g.dest_dir), "%s/dest", g.base);
    mkdir(g.dest_dir, 0755);
    char root[PATH_MAX];
    xsnprintf(root, sizeof(root), "%s/store", g.base);
    if (ts_dicom_global_init(&err) || ts_store_open(root, &g.store, &err))
        return -1;
    if (unit_pg_new_database("unit_retrieve", g.db_url, sizeof(g.db_url)) ||
        unit_pg_pool(g.db_url, 2, "read-committed", &g.db))
        return -1;

    /* the MR file's SOP Instance UID, read rather than typed */
    ts_dicom *dcm = NULL;
    if (ts_dicom_open_file(MR_FILE, &dcm, &err))
        return -1;
    char *uid = ts_dicom_get_string(dcm, TS_TAG_SOP_INSTANCE_UID, false);
    snprintf(mr_uid, sizeof(mr_uid), "%s", uid);
    free(uid);
    ts_dicom_free(dcm);

    g.retrieve = (ts_retrieve){.db = g.db,
                               .store = g.store,
                               .our_aet = "TESSERA",
                               .timeout_s = 5,
                               .find = test_find,
                               .user = NULL};
    g.scp_port = free_port();
    ts_dicom_scp_config cfg = {.aet = "TESSERA",
                               .port = g.scp_port,
                               .max_associations = 4,
                               .max_pdu = 65536,
                               .timeout_s = 10,
                               .max_dataset = 1 << 20,
                               .max_pending = 8,
                               .max_pending_per_peer = 8};
    ts_dicom_qr_callbacks cb = {
        .retrieve_user = &g.retrieve, .move = ts_retrieve_move, .get = ts_retrieve_get};
    if (ts_dicom_qr_scp_new(&cfg, &cb, &g.scp, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    pthread_create(&g.scp_thread, NULL, run_scp, g.scp);
    start_storescp();
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO modalities (name, aet, host, port) VALUES ('dest', 'DEST', '127.0.0.1', "
             "%d); INSERT INTO modalities (name, aet, host, port, allow_move) VALUES "
             "('nomove', 'NOMOVE', '127.0.0.1', %d, false)",
             g.storescp_port, g.storescp_port);
    return unit_pg_exec(g.db_url, sql);
}

static int group_teardown(void **state)
{
    (void)state;
    stop_storescp();
    if (g.scp) {
        ts_dicom_qr_scp_stop(g.scp);
        pthread_join(g.scp_thread, NULL);
        ts_dicom_qr_scp_free(g.scp);
    }
    ts_db_pool_free(g.db);
    ts_store_free(g.store);
    rm_rf(g.base);
    return 0;
}

/* ---- the list ----------------------------------------------------------------------- */

static void test_list_grows_and_clears(void **state)
{
    (void)state;
    ts_retrieve_list l = {0};
    char uid[32];
    for (int i = 0; i < 200; i++) {
        snprintf(uid, sizeof(uid), "1.2.%d", i);
        ts_retrieve_list_add(&l, uid, i % 2 ? "" : "f");
    }
    assert_int_equal(l.n, 200);
    assert_true(l.cap >= 200);
    assert_string_equal(l.sop_uids[0], "1.2.0");
    assert_string_equal(l.sop_uids[199], "1.2.199");
    assert_string_equal(l.files[1], "");
    assert_string_equal(l.files[2], "f");
    ts_retrieve_list_clear(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.sop_uids);
    ts_retrieve_list_clear(NULL); /* like every _clear */
}

/* ---- C-MOVE --------------------------------------------------------------------------- */

static void test_move_sends_every_instance(void **state)
{
    (void)state;
    named n[2] = {{CT_UID, ""}, {"", ""}};
    snprintf(n[1].sop_uid, sizeof(n[1].sop_uid), "%s", mr_uid);
    store_file(CT_FILE, n[0].file);
    store_file(MR_FILE, n[1].file);
    name_instances(n, 2, TS_QR_SUCCESS);
    ts_err err = {0};
    if (move_to("DEST", &err))
        fail_msg("C-MOVE failed: %s", err.msg);
    assert_string_equal(g.last_op, "move");
    assert_string_equal(g.last_level, "STUDY");
    assert_string_equal(g.last_destination, "DEST");
    char got[4][128];
    assert_int_equal(take_received(g.dest_dir, got, 4), 2);
    assert_true(holds(got, 2, CT_UID));
    assert_true(holds(got, 2, mr_uid));
}

/* An instance whose file is gone is a failed sub-operation: the others still
 * go, and the final status is 0xB000 (some failed), not success. */
static void test_move_missing_file_is_a_failed_suboperation(void **state)
{
    (void)state;
    named n[3] = {{CT_UID, ""}, {"1.2.3.missing", ""}, {"1.2.3.nofile", ""}};
    store_file(CT_FILE, n[0].file);
    store_file(MR_FILE, n[1].file);
    char path[PATH_MAX];
    ts_err err = {0};
    assert_int_equal(ts_store_path(g.store, n[1].file, path, sizeof(path), &err), 0);
    assert_int_equal(unlink(path), 0);   /* indexed, but its file is gone */
    name_instances(n, 3, TS_QR_SUCCESS); /* and one with no file at all */
    assert_int_equal(move_to("DEST", &err), TS_EDICOM);
    assert_contains(err.msg, "0xB000");
    char got[4][128];
    assert_int_equal(take_received(g.dest_dir, got, 4), 1);
    assert_string_equal(got[0], CT_UID);
}

/* No instance could be read: 0xA702, nothing at the destination. */
static void test_move_nothing_readable(void **state)
{
    (void)state;
    named n[1] = {{"1.2.3.nofile", ""}};
    name_instances(n, 1, TS_QR_SUCCESS);
    ts_err err = {0};
    assert_int_equal(move_to("DEST", &err), TS_EDICOM);
    assert_contains(err.msg, "0xA702");
    char got[4][128];
    assert_int_equal(take_received(g.dest_dir, got, 4), 0);
}

/* An AE title not in the modalities table, or one whose allow_move is off:
 * 0xA801 before any instance is looked up. */
static void test_move_unknown_or_refused_destination(void **state)
{
    (void)state;
    named n[1] = {{CT_UID, ""}};
    store_file(CT_FILE, n[0].file);
    const char *dests[] = {"NOBODY", "NOMOVE"};
    for (int i = 0; i < 2; i++) {
        name_instances(n, 1, TS_QR_SUCCESS);
        g.last_op[0] = '\0';
        ts_err err = {0};
        assert_int_equal(move_to(dests[i], &err), TS_EDICOM);
        assert_contains(err.msg, "0xA801");
        assert_string_equal(g.last_op, ""); /* find never asked */
    }
    char got[4][128];
    assert_int_equal(take_received(g.dest_dir, got, 4), 0);
}

/* The find's own status (e.g. a bad identifier) is the C-MOVE's. */
static void test_move_find_status_is_the_answer(void **state)
{
    (void)state;
    name_instances(NULL, 0, TS_QR_IDENTIFIER_MISMATCH);
    ts_err err = {0};
    assert_int_equal(move_to("DEST", &err), TS_EDICOM);
    assert_contains(err.msg, "0xA900");
}

/* The destination is down: every sub-operation failed (0xA702), and the
 * files are still in the store (a retrieve never removes anything). */
static void test_move_destination_down(void **state)
{
    (void)state;
    named n[1] = {{CT_UID, ""}};
    store_file(CT_FILE, n[0].file);
    name_instances(n, 1, TS_QR_SUCCESS);
    stop_storescp();
    ts_err err = {0};
    int rc = move_to("DEST", &err);
    start_storescp(); /* on a new port: the table still names the old one */
    assert_int_equal(rc, TS_EDICOM);
    assert_contains(err.msg, "0xA702");
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(ts_store_read(g.store, n[0].file, &data, &len, &err), 0);
    assert_true(len > 0);
    free(data);
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE modalities SET port = %d", g.storescp_port);
    assert_int_equal(unit_pg_exec(g.db_url, sql), 0);
}

/* ---- C-GET ------------------------------------------------------------------------------ */

static void test_get_sends_every_instance(void **state)
{
    (void)state;
    named n[2] = {{CT_UID, ""}, {"", ""}};
    snprintf(n[1].sop_uid, sizeof(n[1].sop_uid), "%s", mr_uid);
    store_file(CT_FILE, n[0].file);
    store_file(MR_FILE, n[1].file);
    name_instances(n, 2, TS_QR_SUCCESS);
    char *out = get_study();
    assert_string_equal(g.last_op, "get");
    assert_string_equal(g.last_destination, "");
    char dir[PATH_MAX], got[4][128];
    xsnprintf(dir, sizeof(dir), "%s/get", g.base);
    size_t count = take_received(dir, got, 4);
    if (count != 2)
        fail_msg("getscu received %zu files:\n%s", count, out);
    assert_true(holds(got, 2, CT_UID));
    assert_true(holds(got, 2, mr_uid));
    assert_contains(out, "Received C-GET Response (Success)");
    assert_contains(out, "Number of Completed Suboperations : 2");
    free(out);
}

/* A missing file: the other instance still comes back, and the final
 * response counts one failed sub-operation (0xB000). (getscu then logs
 * "Association Release Failed: DUL P-Data PDU arrived": dcmtk's DcmSCU does
 * not read the identifier, the Failed SOP Instance UID List, that PS3.4
 * C.4.3.1.3 puts in that final response.) */
static void test_get_missing_file(void **state)
{
    (void)state;
    named n[2] = {{CT_UID, ""}, {"1.2.3.nofile", ""}};
    store_file(CT_FILE, n[0].file);
    name_instances(n, 2, TS_QR_SUCCESS);
    char *out = get_study();
    char dir[PATH_MAX], got[4][128];
    xsnprintf(dir, sizeof(dir), "%s/get", g.base);
    size_t count = take_received(dir, got, 4);
    if (count != 1)
        fail_msg("getscu received %zu files:\n%s", count, out);
    assert_string_equal(got[0], CT_UID);
    assert_contains(out,
                    "Received C-GET Response (Warning: SubOperationsCompleteOneOrMoreFailures)");
    assert_contains(out, "Number of Completed Suboperations : 1");
    assert_contains(out, "Number of Failed Suboperations    : 1");
    free(out);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    if (!on_path("storescp") || !on_path("getscu")) {
        fprintf(stderr, "storescp or getscu not installed: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_grows_and_clears),
        cmocka_unit_test(test_move_sends_every_instance),
        cmocka_unit_test(test_move_missing_file_is_a_failed_suboperation),
        cmocka_unit_test(test_move_nothing_readable),
        cmocka_unit_test(test_move_unknown_or_refused_destination),
        cmocka_unit_test(test_move_find_status_is_the_answer),
        cmocka_unit_test(test_move_destination_down),
        cmocka_unit_test(test_get_sends_every_instance),
        cmocka_unit_test(test_get_missing_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
