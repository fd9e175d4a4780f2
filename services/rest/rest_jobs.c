/* Jobs routes (see rest_jobs.h). Orthanc's answers: GET /jobs lists the ids
 * (?expand: the jobs); GET /jobs/{id} of an unknown id is an empty 404; the
 * actions answer 200 "{}", and 400 for an unknown job or a job whose state
 * does not allow the action (Orthanc's body is empty there; ours says why). */
#include "rest_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "rest_archive.h"

/* Each request has its own connection: requests run on their own threads, a
 * unix or loopback connect costs less than the request itself. */
static ts_jobs *open_registry(rest_request *req)
{
    ts_jobs *j = NULL;
    ts_err err;
    if (ts_jobs_connect(ts_cfg_str(TESSERA_REDIS_URL), 5000, &j, &err)) {
        rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err.msg);
        return NULL;
    }
    return j;
}

static void reply_redis_failure(rest_request *req, const ts_err *err)
{
    rest_reply_oe(req, TS_OE_DATABASE_UNAVAILABLE, err->msg);
}

/* Jobs belong to whoever submitted them: NULL when the caller sees and
 * controls every job (admins, and everyone when authentication is off), else
 * the name its own jobs carry. */
static const char *own_jobs_only(const rest_request *req)
{
    if (!req->who || req->who->role == REST_ROLE_ADMIN)
        return NULL;
    return req->who->name;
}

/* 0 when the caller may see job id; TS_ENOTFOUND (err says "unknown job",
 * exactly as for an id that does not exist, so ids do not leak) when it is
 * another's; another negative code when Redis failed. */
static int check_owner(rest_request *req, ts_jobs *j, const char *id, ts_err *err)
{
    const char *mine = own_jobs_only(req);
    if (!mine)
        return 0;
    char submitter[sizeof(req->who->name)];
    int rc = ts_jobs_submitter(j, id, submitter, sizeof(submitter), err);
    if (rc == 0 && strcmp(submitter, mine) != 0) {
        ts_info("http access refused", "who=\"%s\" not-own-job job=%s method=%s", mine, id,
                req->method);
        rc = ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    }
    return rc;
}

void rest_jobs_list(rest_request *req)
{
    ts_jobs *j = open_registry(req);
    if (!j)
        return;
    ts_err err;
    json_t *ids = NULL;
    if (ts_jobs_list_by(j, own_jobs_only(req), &ids, &err)) {
        reply_redis_failure(req, &err);
        goto out;
    }
    if (!rest_flag(req, "expand")) {
        rest_reply_json(req, 200, ids);
        ids = NULL;
        goto out;
    }
    json_t *jobs = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        json_t *job = NULL;
        int rc = ts_jobs_get(j, json_string_value(v), &job, &err);
        if (rc == TS_ENOTFOUND) /* left the history meanwhile */
            continue;
        if (rc) {
            json_decref(jobs);
            reply_redis_failure(req, &err);
            goto out;
        }
        json_array_append_new(jobs, job);
    }
    rest_reply_json(req, 200, jobs);
out:
    json_decref(ids);
    ts_jobs_free(j);
}

void rest_jobs_get(rest_request *req)
{
    ts_jobs *j = open_registry(req);
    if (!j)
        return;
    ts_err err;
    json_t *job = NULL;
    int rc = check_owner(req, j, req->seg[1], &err);
    if (rc == 0)
        rc = ts_jobs_get(j, req->seg[1], &job, &err);
    if (rc == TS_ENOTFOUND)
        rest_reply_empty(req, 404);
    else if (rc)
        reply_redis_failure(req, &err);
    else
        rest_reply_json(req, 200, job);
    ts_jobs_free(j);
}

void rest_jobs_output(rest_request *req)
{
    ts_jobs *j = open_registry(req);
    if (!j)
        return;
    ts_err err;
    json_t *job = NULL;
    int rc = check_owner(req, j, req->seg[1], &err);
    if (rc == 0)
        rc = ts_jobs_get(j, req->seg[1], &job, &err);
    if (rc == TS_ENOTFOUND) {
        rest_reply_empty(req, 404);
    } else if (rc) {
        reply_redis_failure(req, &err);
    } else if (strcmp(req->seg[2], "archive") == 0) {
        rest_archive_job_output(req, job);
    } else {
        char details[160];
        snprintf(details, sizeof(details), "Job has no such output: %.100s", req->seg[2]);
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, details);
    }
    json_decref(job);
    ts_jobs_free(j);
}

void rest_jobs_control(rest_request *req)
{
    static const struct {
        const char *name;
        ts_job_action action;
    } actions[] = {{"cancel", TS_JOB_CANCEL},
                   {"pause", TS_JOB_PAUSE},
                   {"resume", TS_JOB_RESUME},
                   {"resubmit", TS_JOB_RESUBMIT}};
    int a = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(req->seg[2], actions[i].name) == 0)
            a = i;
    if (a < 0) {
        rest_reply_unknown_resource(req);
        return;
    }
    ts_jobs *j = open_registry(req);
    if (!j)
        return;
    ts_err err;
    /* the submitter never changes: checked first, then the action */
    int rc = check_owner(req, j, req->seg[1], &err);
    if (rc == 0)
        rc = ts_jobs_control(j, req->seg[1], actions[a].action,
                             (int)ts_cfg_int(TESSERA_JOBS_HISTORY), &err);
    if (rc == 0) {
        ts_info("job control", "job=%s action=%s who=\"%s\"", req->seg[1], actions[a].name,
                req->who ? req->who->name : "");
        rest_reply_json(req, 200, json_object());
    } else if (rc == TS_ENOTFOUND) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, err.msg);
    } else if (rc == TS_EINVAL) {
        rest_reply_oe(req, TS_OE_BAD_REQUEST, err.msg);
    } else {
        reply_redis_failure(req, &err);
    }
    ts_jobs_free(j);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Orthanc's HTTP status of an ErrorCode (the ones our jobs produce). */
bool rest_job_priority(rest_request *req, const json_t *body, int *priority)
{
    *priority = 0;
    const json_t *p = json_is_object(body) ? json_object_get(body, "Priority") : NULL;
    if (!p)
        return true;
    if (!json_is_integer(p)) {
        rest_reply_oe(req, TS_OE_BAD_FILE_FORMAT, "Integer value expected in field: Priority");
        return false;
    }
    if (json_integer_value(p) < -1000000000 || json_integer_value(p) > 1000000000) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "Priority must be between -1000000000 and 1000000000");
        return false;
    }
    *priority = (int)json_integer_value(p);
    return true;
}

void rest_jobs_submit(rest_request *req, const char *type, int priority, const json_t *content,
                      const json_t *input, bool asynchronous)
{
    ts_jobs *j = open_registry(req);
    if (!j)
        return;
    ts_err err;
    char id[TS_JOB_ID_LEN + 1];
    json_t *job = NULL;
    if (ts_jobs_submit_by(j, req->who ? req->who->name : NULL, type, priority, content, input, id,
                          &err)) {
        reply_redis_failure(req, &err);
        goto out;
    }
    ts_info("job submitted", "job=%s type=%s synchronous=%d who=\"%s\"", id, type, !asynchronous,
            req->who ? req->who->name : "");
    if (asynchronous) {
        char path[64];
        snprintf(path, sizeof(path), "/jobs/%s", id);
        rest_reply_json(req, 200, json_pack("{s:s, s:s}", "ID", id, "Path", path));
        goto out;
    }
    /* Synchronous: wait as Orthanc does, however long the job takes; a Redis
     * that went away for a while (restart) is waited for as well. */
    int wait = 20, failures = 0, waited = 0, next_check = 5000;
    for (;;) {
        char state[32];
        int rc = ts_jobs_state(j, id, state, sizeof(state), &err);
        if (rc == 0 && strcmp(state, "Pending") == 0 && waited >= next_check) {
            /* still queued: is there a jobs process at all? */
            long long live = 1;
            next_check += 5000;
            if (ts_jobs_live_processes(j, 5000, &live, &err) == 0 && live == 0) {
                char details[200];
                snprintf(details, sizeof(details),
                         "no tessera-jobs process is running: the job stays queued "
                         "(GET /jobs/%s)",
                         id);
                rest_reply_oe_status(req, 503, TS_OE_INTERNAL_ERROR,
                                     details); /* Orthanc has no code for "no worker" */
                goto out;
            }
        }
        if (rc == TS_ENOTFOUND) {
            rest_reply_oe(req, TS_OE_INTERNAL_ERROR, "the job left the registry");
            goto out;
        }
        if (rc && ++failures > 100) {
            reply_redis_failure(req, &err);
            goto out;
        }
        if (rc == 0 && (strcmp(state, "Success") == 0 || strcmp(state, "Failure") == 0))
            break;
        sleep_ms(wait);
        waited += wait;
        if (wait < 200)
            wait += 20;
    }
    if (ts_jobs_get(j, id, &job, &err)) {
        reply_redis_failure(req, &err);
        goto out;
    }
    int code = (int)json_integer_value(json_object_get(job, "ErrorCode"));
    if (code == 0) {
        rest_reply_json(req, 200, json_incref(json_object_get(job, "Content")));
    } else {
        const char *details = json_string_value(json_object_get(job, "ErrorDetails"));
        rest_reply_oe(req, (ts_oe)code, details);
    }
out:
    json_decref(job);
    ts_jobs_free(j);
}
