/* The job registry against a real redis-server, started by the test on a unix
 * socket in a temporary directory (skipped when redis-server is missing): the
 * fields a REST process reads, the transitions, the queue, leases and the
 * take-over of a job whose worker stopped renewing. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "domain/jobs.h"
#include "unit_redis.h"

/* a raw connection for what the API does not show (flush, TTLs) */
static redisReply *raw(const char *fmt, ...)
{
    redisContext *c = redisConnectUnix(redis_sock);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(r);
    return r;
}

static long long raw_int(const char *fmt, const char *arg)
{
    redisReply *r = raw(fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* entries of the queue, waiting or taken */
static long long pending(void)
{
    return raw_int("ZCARD %s", "tessera:jobs:pending") +
           raw_int("ZCARD %s", "tessera:jobs:running");
}

static int setup(void **state)
{
    freeReplyObject(raw("FLUSHALL"));
    ts_jobs *j = NULL;
    ts_err err;
    if (ts_jobs_connect(redis_url, 2000, &j, &err) != 0)
        return -1;
    if (ts_jobs_prepare(j, &err) != 0)
        return -1;
    *state = j;
    return 0;
}

static int teardown(void **state)
{
    ts_jobs_free(*state);
    return 0;
}

static void submit_priority(ts_jobs *j, char id[TS_JOB_ID_LEN + 1], int priority)
{
    ts_err err;
    json_t *content = json_pack("{s:s, s:i}", "Description", "REST API", "InstancesCount", 2);
    json_t *input = json_pack("{s:[s, s]}", "Instances", "a", "b");
    assert_int_equal(ts_jobs_submit(j, "DicomModalityStore", priority, content, input, id, &err),
                     0);
    json_decref(content);
    json_decref(input);
}

static void submit(ts_jobs *j, char id[TS_JOB_ID_LEN + 1])
{
    submit_priority(j, id, 3);
}

static const char *state_of(ts_jobs *j, const char *id)
{
    static char st[32];
    ts_err err;
    assert_int_equal(ts_jobs_state(j, id, st, sizeof(st), &err), 0);
    return st;
}

static void test_bad_urls(void **state)
{
    ts_jobs *j = NULL;
    ts_err err;
    assert_int_equal(ts_jobs_connect("http://x", 500, &j, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "TESSERA_REDIS_URL"));
    assert_int_equal(ts_jobs_connect("redis://:0", 500, &j, &err), TS_EINVAL);
    assert_int_equal(ts_jobs_connect("unix:///nonexistent/redis.sock", 500, &j, &err), TS_EIO);
    assert_null(j);
}

static void test_submit_and_read(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    json_t *job = NULL;
    ts_err err;
    assert_int_equal(ts_jobs_get(j, id, &job, &err), 0);
    assert_string_equal(json_string_value(json_object_get(job, "ID")), id);
    assert_string_equal(json_string_value(json_object_get(job, "State")), "Pending");
    assert_string_equal(json_string_value(json_object_get(job, "Type")), "DicomModalityStore");
    assert_string_equal(json_string_value(json_object_get(job, "ErrorDescription")), "Success");
    assert_int_equal(json_integer_value(json_object_get(job, "Priority")), 3);
    assert_int_equal(json_integer_value(json_object_get(job, "Progress")), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(job, "Content"), "InstancesCount")), 2);
    assert_null(json_object_get(job, "CompletionTime"));
    assert_null(json_object_get(job, "Input")); /* private */
    assert_int_equal(strlen(json_string_value(json_object_get(job, "CreationTime"))), 22);
    json_decref(job);
    json_t *list = NULL;
    assert_int_equal(ts_jobs_list(j, &list, &err), 0);
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_array_get(list, 0)), id);
    json_decref(list);
    assert_int_equal(ts_jobs_get(j, "00000000-0000-0000-0000-000000000000", &job, &err),
                     TS_ENOTFOUND);
    assert_int_equal(ts_jobs_get(j, "../../etc", &job, &err), TS_ENOTFOUND);
}

/* Jobs record their submitter (REST's caller); listed by it, and those
 * submitted by nobody (the cluster's own) belong to no caller. */
static void test_submitter(void **state)
{
    ts_jobs *j = *state;
    char mine[TS_JOB_ID_LEN + 1], theirs[TS_JOB_ID_LEN + 1], nobodys[TS_JOB_ID_LEN + 1];
    json_t *content = json_object(), *input = json_object();
    ts_err err;
    assert_int_equal(ts_jobs_submit_by(j, "alice", "Archive", 0, content, input, mine, &err), 0);
    assert_int_equal(
        ts_jobs_submit_by(j, "key:0123456789abcdef", "Archive", 0, content, input, theirs, &err),
        0);
    assert_int_equal(ts_jobs_submit(j, "Archive", 0, content, input, nobodys, &err), 0);
    json_decref(content);
    json_decref(input);
    char who[128];
    assert_int_equal(ts_jobs_submitter(j, mine, who, sizeof(who), &err), 0);
    assert_string_equal(who, "alice");
    assert_int_equal(ts_jobs_submitter(j, theirs, who, sizeof(who), &err), 0);
    assert_string_equal(who, "key:0123456789abcdef");
    assert_int_equal(ts_jobs_submitter(j, nobodys, who, sizeof(who), &err), 0);
    assert_string_equal(who, "");
    assert_int_equal(
        ts_jobs_submitter(j, "00000000-0000-0000-0000-000000000000", who, sizeof(who), &err),
        TS_ENOTFOUND);
    json_t *list = NULL;
    assert_int_equal(ts_jobs_list_by(j, "alice", &list, &err), 0);
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_array_get(list, 0)), mine);
    json_decref(list);
    assert_int_equal(ts_jobs_list_by(j, "bob", &list, &err), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_int_equal(ts_jobs_list_by(j, NULL, &list, &err), 0);
    assert_int_equal(json_array_size(list), 3);
    json_decref(list);
    /* not in Orthanc's JSON */
    json_t *job = NULL;
    assert_int_equal(ts_jobs_get(j, mine, &job, &err), 0);
    char *text = json_dumps(job, 0);
    assert_null(strstr(text, "alice"));
    free(text);
    json_decref(job);
}

static void test_run_to_success(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    ts_job_claim c;
    ts_err err;
    assert_int_equal(ts_jobs_take(j, "w1", 100, 5000, &c, &err), 1);
    assert_string_equal(c.id, id);
    assert_string_equal(c.type, "DicomModalityStore");
    assert_false(c.taken_over);
    assert_int_equal(json_array_size(json_object_get(c.input, "Instances")), 2);
    assert_string_equal(state_of(j, id), "Running");
    /* nobody else gets it */
    ts_job_claim other;
    assert_int_equal(ts_jobs_take(j, "w2", 100, 5000, &other, &err), 0);
    assert_int_equal(ts_jobs_renew(j, "w1", &c, 5000, &err), 1);
    const char *items[] = {"a"};
    assert_int_equal(ts_jobs_mark_done(j, &c, items, 1, &err), 0);
    assert_int_equal(ts_jobs_progress(j, &c, 50, c.content, &err), 0);
    json_t *done = NULL;
    assert_int_equal(ts_jobs_done_items(j, &c, &done, &err), 0);
    assert_true(json_is_true(json_object_get(done, "a")));
    assert_null(json_object_get(done, "b"));
    json_decref(done);
    assert_int_equal(ts_jobs_finish(j, "w1", &c, 0, NULL, NULL, c.content, 10, &err), 0);
    json_t *job = NULL;
    assert_int_equal(ts_jobs_get(j, id, &job, &err), 0);
    assert_string_equal(json_string_value(json_object_get(job, "State")), "Success");
    assert_int_equal(json_integer_value(json_object_get(job, "Progress")), 100);
    assert_non_null(json_object_get(job, "CompletionTime"));
    json_decref(job);
    char lease[128];
    snprintf(lease, sizeof(lease), "tessera:job:%s:lease", id);
    assert_int_equal(raw_int("EXISTS %s", lease), 0);
    assert_int_equal(pending(), 0);
    /* finished: resume and resubmit refused, cancel and pause ignored */
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_RESUME, 10, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "Success"));
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_RESUBMIT, 10, &err), TS_EINVAL);
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_CANCEL, 10, &err), 0);
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_PAUSE, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Success");
    ts_job_claim_clear(&c);
}

static void test_pause_resume_cancel_resubmit(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    ts_job_claim c, c2;
    ts_err err;
    assert_int_equal(ts_jobs_take(j, "w1", 100, 5000, &c, &err), 1);
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_PAUSE, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Paused");
    /* the worker hears it at its renewal; the lease stays until it lets go */
    assert_int_equal(ts_jobs_renew(j, "w1", &c, 5000, &err), 0);
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_RESUME, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Pending");
    assert_int_equal(ts_jobs_take(j, "w2", 100, 5000, &c2, &err), 0); /* w1 still holds it */
    assert_int_equal(ts_jobs_release(j, "w1", &c, &err), 0);
    ts_job_claim_clear(&c);
    /* the entry w2 read comes back once idle for a lease (here 200 ms) */
    unit_sleep_ms(250);
    assert_int_equal(ts_jobs_take(j, "w2", 100, 200, &c2, &err), 1);
    assert_string_equal(state_of(j, id), "Running");
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_CANCEL, 10, &err), 0);
    json_t *job = NULL;
    assert_int_equal(ts_jobs_get(j, id, &job, &err), 0);
    assert_string_equal(json_string_value(json_object_get(job, "State")), "Failure");
    assert_int_equal(json_integer_value(json_object_get(job, "ErrorCode")), 37);
    assert_string_equal(json_string_value(json_object_get(job, "ErrorDescription")),
                        "Canceled job");
    json_decref(job);
    /* a finish after the cancel leaves the Failure as it is */
    assert_int_equal(ts_jobs_finish(j, "w2", &c2, 0, NULL, NULL, c2.content, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Failure");
    ts_job_claim_clear(&c2);
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_RESUBMIT, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Pending");
    assert_int_equal(ts_jobs_take(j, "w3", 100, 5000, &c, &err), 1);
    assert_string_equal(c.id, id);
    ts_job_claim_clear(&c);
    assert_int_equal(
        ts_jobs_control(j, "00000000-0000-0000-0000-000000000000", TS_JOB_CANCEL, 10, &err),
        TS_ENOTFOUND);
}

static void test_canceled_before_running_is_not_run(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    ts_err err;
    assert_int_equal(ts_jobs_control(j, id, TS_JOB_CANCEL, 10, &err), 0);
    ts_job_claim c;
    assert_int_equal(ts_jobs_take(j, "w1", 100, 5000, &c, &err), 0);
    assert_int_equal(pending(), 0);
}

static void test_take_over_after_the_lease(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    ts_job_claim dead, c;
    ts_err err;
    assert_int_equal(ts_jobs_take(j, "dead", 100, 300, &dead, &err), 1);
    const char *items[] = {"a"};
    assert_int_equal(ts_jobs_mark_done(j, &dead, items, 1, &err), 0);
    /* while the lease lasts, nobody takes it */
    assert_int_equal(ts_jobs_take(j, "w2", 50, 300, &c, &err), 0);
    unit_sleep_ms(400);
    assert_int_equal(ts_jobs_take(j, "w2", 50, 300, &c, &err), 1);
    assert_string_equal(c.id, id);
    assert_true(c.taken_over);
    json_t *done = NULL;
    assert_int_equal(ts_jobs_done_items(j, &c, &done, &err), 0);
    assert_int_equal(json_object_size(done), 1);
    json_decref(done);
    /* the first worker, back to life, learns that the job is no longer its own */
    assert_int_equal(ts_jobs_renew(j, "dead", &dead, 300, &err), 0);
    assert_int_equal(ts_jobs_finish(j, "dead", &dead, 9, "x", "y", dead.content, 10, &err), 0);
    assert_string_equal(state_of(j, id), "Running");
    assert_int_equal(ts_jobs_renew(j, "w2", &c, 300, &err), 1);
    assert_int_equal(ts_jobs_finish(j, "w2", &c, 9, "Error in the network protocol", "refused",
                                    c.content, 10, &err),
                     0);
    json_t *job = NULL;
    assert_int_equal(ts_jobs_get(j, id, &job, &err), 0);
    assert_string_equal(json_string_value(json_object_get(job, "State")), "Failure");
    assert_string_equal(json_string_value(json_object_get(job, "ErrorDetails")), "refused");
    json_decref(job);
    ts_job_claim_clear(&dead);
    ts_job_claim_clear(&c);
}

/* A job run by a DICOM SCP (an incoming C-MOVE): listed Running, never taken
 * by a worker, progress and cancel through renew, pause and resubmit refused,
 * and ended as Failure by a worker's take once its SCP died (lease gone). */
static void test_scp_job(void **state)
{
    ts_jobs *j = *state;
    ts_err err;
    json_t *content = json_pack("{s:s, s:i}", "Description", "C-MOVE", "InstancesCount", 4);
    ts_job_claim c, w, dead;
    assert_int_equal(ts_jobs_begin_scp(j, "DicomModalityStore", "scp:a", 300, content, &c, &err),
                     0);
    assert_string_equal(state_of(j, c.id), "Running");
    assert_int_equal(pending(), 0); /* not in the queue */
    assert_int_equal(ts_jobs_take(j, "w1", 50, 300, &w, &err), 0);
    assert_int_equal(ts_jobs_renew(j, "scp:a", &c, 300, &err), 1);
    assert_int_equal(ts_jobs_progress(j, &c, 50, content, &err), 0);
    json_t *job = NULL;
    assert_int_equal(ts_jobs_get(j, c.id, &job, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(job, "Progress")), 50);
    assert_string_equal(json_string_value(json_object_get(job, "Type")), "DicomModalityStore");
    json_decref(job);
    json_t *list = NULL;
    assert_int_equal(ts_jobs_list(j, &list, &err), 0);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    assert_int_equal(ts_jobs_control(j, c.id, TS_JOB_PAUSE, 10, &err), TS_EINVAL);
    assert_string_equal(state_of(j, c.id), "Running");
    /* a cancel reaches the SCP at its next renewal; it lets the job go */
    assert_int_equal(ts_jobs_control(j, c.id, TS_JOB_CANCEL, 10, &err), 0);
    assert_int_equal(ts_jobs_renew(j, "scp:a", &c, 300, &err), 0);
    assert_int_equal(ts_jobs_release(j, "scp:a", &c, &err), 0);
    assert_string_equal(state_of(j, c.id), "Failure");
    assert_int_equal(ts_jobs_control(j, c.id, TS_JOB_RESUBMIT, 10, &err), TS_EINVAL);
    /* finished normally: Success, progress 100 */
    ts_job_claim ok;
    assert_int_equal(ts_jobs_begin_scp(j, "DicomModalityStore", "scp:a", 300, content, &ok, &err),
                     0);
    assert_int_equal(ts_jobs_finish(j, "scp:a", &ok, 0, NULL, NULL, content, 10, &err), 0);
    assert_string_equal(state_of(j, ok.id), "Success");
    /* an SCP that dies: its lease runs out and a worker's take ends the job */
    assert_int_equal(ts_jobs_begin_scp(j, "DicomModalityStore", "scp:b", 200, content, &dead, &err),
                     0);
    assert_int_equal(ts_jobs_take(j, "w1", 0, 300, &w, &err), 0);
    assert_string_equal(state_of(j, dead.id), "Running");
    unit_sleep_ms(300);
    assert_int_equal(ts_jobs_take(j, "w1", 0, 300, &w, &err), 0);
    assert_string_equal(state_of(j, dead.id), "Failure");
    assert_int_equal(ts_jobs_get(j, dead.id, &job, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(job, "ErrorCode")), -1);
    json_decref(job);
    /* the SCP, back to life, cannot make it Success */
    assert_int_equal(ts_jobs_finish(j, "scp:b", &dead, 0, NULL, NULL, content, 10, &err), 0);
    assert_string_equal(state_of(j, dead.id), "Failure");
    json_decref(content);
    ts_job_claim_clear(&c);
    ts_job_claim_clear(&ok);
    ts_job_claim_clear(&dead);
}

static void test_history_trimmed(void **state)
{
    ts_jobs *j = *state;
    char ids[4][TS_JOB_ID_LEN + 1];
    ts_err err;
    for (int i = 0; i < 4; i++) {
        submit(j, ids[i]);
        ts_job_claim c;
        assert_int_equal(ts_jobs_take(j, "w", 100, 5000, &c, &err), 1);
        assert_int_equal(ts_jobs_finish(j, "w", &c, 0, NULL, NULL, c.content, 2, &err), 0);
        ts_job_claim_clear(&c);
        unit_sleep_ms(2); /* distinct completion times */
    }
    json_t *list = NULL;
    assert_int_equal(ts_jobs_list(j, &list, &err), 0);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    char st[32];
    assert_int_equal(ts_jobs_state(j, ids[0], st, sizeof(st), &err), TS_ENOTFOUND);
    assert_int_equal(ts_jobs_state(j, ids[3], st, sizeof(st), &err), 0);
}

static void test_reconnects_after_a_restart(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    freeReplyObject(raw("CLIENT KILL TYPE normal"));
    ts_err err;
    char st[32];
    /* the first call after the loss may fail; the next one reconnects */
    if (ts_jobs_state(j, id, st, sizeof(st), &err) != 0)
        assert_int_equal(ts_jobs_state(j, id, st, sizeof(st), &err), 0);
    assert_string_equal(st, "Pending");
}

/* the waiting job of the highest priority first, the oldest among equals */
static void test_priorities(void **state)
{
    ts_jobs *j = *state;
    static const int prio[] = {0, -5, 10, 0, 10, 3};
    char ids[6][TS_JOB_ID_LEN + 1];
    for (int i = 0; i < 6; i++)
        submit_priority(j, ids[i], prio[i]);
    ts_err err;
    /* by priority: 2 4 5 0 3 1; a paused job leaves the queue, and resumed it
     * waits behind its equals */
    assert_int_equal(ts_jobs_control(j, ids[2], TS_JOB_PAUSE, 10, &err), 0);
    assert_int_equal(ts_jobs_control(j, ids[2], TS_JOB_RESUME, 10, &err), 0);
    static const int after_resume[] = {4, 2, 5, 0, 3, 1};
    for (int i = 0; i < 6; i++) {
        ts_job_claim c;
        assert_int_equal(ts_jobs_take(j, "w", 0, 5000, &c, &err), 1);
        assert_string_equal(c.id, ids[after_resume[i]]);
        assert_int_equal(ts_jobs_finish(j, "w", &c, 0, NULL, NULL, c.content, 10, &err), 0);
        ts_job_claim_clear(&c);
    }
    ts_job_claim c;
    assert_int_equal(ts_jobs_take(j, "w", 50, 5000, &c, &err), 0);
    assert_int_equal(pending(), 0);
}

/* a job that waited in the stream of earlier versions is run */
static void test_legacy_queue_migrated(void **state)
{
    ts_jobs *j = *state;
    char id[TS_JOB_ID_LEN + 1];
    submit(j, id);
    /* as an earlier version left it: the job in the stream, not in the new queue */
    freeReplyObject(raw("DEL tessera:jobs:pending"));
    redisReply *r = raw("XADD tessera:jobs:queue * job %s", id);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(raw("HSET tessera:job:%s entry %s", id, r->str));
    freeReplyObject(r);
    ts_err err;
    assert_int_equal(ts_jobs_prepare(j, &err), 0);
    assert_int_equal(raw_int("EXISTS %s", "tessera:jobs:queue"), 0);
    ts_job_claim c;
    assert_int_equal(ts_jobs_take(j, "w", 100, 5000, &c, &err), 1);
    assert_string_equal(c.id, id);
    ts_job_claim_clear(&c);
    assert_int_equal(ts_jobs_prepare(j, &err), 0); /* nothing to do any more */
}

int main(void)
{
    if (!unit_redis_available())
        return 77;
    /* as every service does (lib/base/service.c): a write to a connection Redis
     * closed must fail, not kill the process */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test_setup_teardown(test_submit_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_to_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_cancel_resubmit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canceled_before_running_is_not_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_over_after_the_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_trimmed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_after_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priorities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_queue_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scp_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submitter, setup, teardown),
    };
    return cmocka_run_group_tests(tests, unit_redis_start, unit_redis_stop);
}
