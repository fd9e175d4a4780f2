/* The router thread (see jobs_router.h). Delivery is at least once: a process
 * killed between submitting a step's job and recording its id leaves the
 * delivery to be claimed again when its lease runs out, and the step is
 * submitted a second time. Store steps are idempotent at the destination (the
 * same SOP instance sent twice is the same instance), which is why this is
 * acceptable; a Delete step of a resource already deleted does nothing. */
#include "jobs_router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "domain/changes.h"
#include "domain/delete.h"
#include "tessera.pb-c.h"

#define CLAIM_BATCH 16
#define CLAIM_LEASE_S 10 /* a claimed delivery is left alone this long */
#define RETRY_CAP_S 300  /* back-off doubles up to this */

struct jobs_router {
    jobs_service *svc;
    ts_jobs *redis;
    pthread_t thread;
    int interval_ms;
    int stable_age_s;
    int retry_delay_s;
    int max_attempts;
    int dicom_timeout_s;
};

static const ts_db_stmt emit_stable = {"router_emit_stable",
                                       "SELECT tessera_emit_stable($1::integer, 1000)", 1};
static const ts_db_stmt dispatch = {"router_dispatch", "SELECT tessera_route_dispatch(1000)", 0};
static const ts_db_stmt claim = {
    "router_claim",
    "UPDATE route_deliveries d SET not_before = now() + make_interval(secs => $1::integer),"
    "  updated_at = now()"
    " FROM (SELECT id FROM route_deliveries WHERE state <> 'dead' AND not_before <= now()"
    "       ORDER BY not_before LIMIT $2::integer FOR UPDATE SKIP LOCKED) c"
    " WHERE d.id = c.id"
    " RETURNING d.id::text, d.state, (d.actions->d.step)::text, d.job_id, d.level::text,"
    "  d.public_id, d.route_id",
    2};
static const ts_db_stmt set_running = {
    "router_set_running",
    "UPDATE route_deliveries SET state = 'running', job_id = $2,"
    " not_before = now() + interval '300 milliseconds', updated_at = now() WHERE id = $1::bigint",
    2};
static const ts_db_stmt wait_job = {
    "router_wait_job",
    "UPDATE route_deliveries SET not_before = now() + interval '300 milliseconds'"
    " WHERE id = $1::bigint",
    1};
/* the step succeeded: the next one, or the delivery is over */
static const ts_db_stmt advance = {
    "router_advance",
    "WITH over AS (DELETE FROM route_deliveries"
    "  WHERE id = $1::bigint AND step + 1 >= jsonb_array_length(actions))"
    " UPDATE route_deliveries SET step = step + 1, state = 'pending', job_id = NULL,"
    "  attempts = 0, last_error = NULL, not_before = now(), updated_at = now()"
    " WHERE id = $1::bigint AND step + 1 < jsonb_array_length(actions)",
    1};
/* the step failed: retried after a doubling delay, or dead */
static const ts_db_stmt fail = {
    "router_fail",
    "UPDATE route_deliveries SET attempts = attempts + 1, last_error = $2, updated_at = now(),"
    "  state = CASE WHEN $5::boolean OR attempts + 1 >= $3::integer THEN 'dead' ELSE 'pending'"
    "  END,"
    "  not_before = now() + make_interval(secs => least($4::integer * 2 ^ attempts, $6::integer))"
    " WHERE id = $1::bigint RETURNING state, attempts::text",
    6};
/* what a store step needs: the destination and the instances of the resource */
#define INSTANCES_OF_2                                                                             \
    "(WITH RECURSIVE d AS (SELECT id, level FROM resources WHERE public_id = $2"                   \
    "  UNION ALL SELECT r.id, r.level FROM resources r JOIN d ON r.parent_id = d.id"               \
    "  WHERE d.level < 3)"                                                                         \
    " SELECT json_agg(r.public_id ORDER BY r.id) FROM d JOIN resources r ON r.id = d.id"           \
    " WHERE d.level = 3)::text"
static const ts_db_stmt modality_input = {
    "router_modality_input",
    "SELECT m.aet, m.host, m.port::text, m.local_aet, m.timeout::text, " INSTANCES_OF_2
    " FROM modalities m WHERE m.name = $1",
    2};
static const ts_db_stmt peer_input = {
    "router_peer_input",
    "SELECT p.url, p.username, p.password, " INSTANCES_OF_2 " FROM peers p WHERE p.name = $1", 2};

/* ---- one statement in a transaction of its own --------------------------- */

typedef struct {
    const ts_db_stmt *stmt;
    const char *const *params;
    PGresult *res;
} one_arg;

static int one_txn(ts_db *db, void *arg, ts_err *err)
{
    one_arg *a = arg;
    if (a->res) { /* a replay */
        PQclear(a->res);
        a->res = NULL;
    }
    return ts_db_exec(db, a->stmt, a->params, &a->res, err);
}

/* The result (the caller PQclears it), or NULL with err set. */
static PGresult *one(jobs_router *r, ts_db_mode mode, const ts_db_stmt *stmt,
                     const char *const *params, ts_err *err)
{
    one_arg a = {stmt, params, NULL};
    if (ts_db_transaction(r->svc->db, mode, one_txn, &a, err)) {
        if (a.res)
            PQclear(a.res);
        return NULL;
    }
    return a.res;
}

static bool one_ok(jobs_router *r, const ts_db_stmt *stmt, const char *const *params)
{
    ts_err err;
    PGresult *res = one(r, TS_DB_WRITE_READ_COMMITTED, stmt, params, &err);
    if (!res) {
        ts_warn("router statement failed", "stmt=%s error=\"%s\"", stmt->name, err.msg);
        return false;
    }
    PQclear(res);
    return true;
}

static const char *col(PGresult *res, int row, int c)
{
    return PQgetisnull(res, row, c) ? NULL : PQgetvalue(res, row, c);
}

/* ---- the steps of a delivery ---------------------------------------------- */

typedef struct delivery {
    const char *id, *state, *job_id, *public_id, *route_id;
    int level;
    json_t *action;
} delivery;

static void step_failed(jobs_router *r, const delivery *d, const char *why, bool fatal)
{
    char delay[16], max[16];
    snprintf(delay, sizeof(delay), "%d", r->retry_delay_s);
    snprintf(max, sizeof(max), "%d", r->max_attempts);
    char cap[16];
    snprintf(cap, sizeof(cap), "%d", RETRY_CAP_S);
    const char *params[] = {d->id, why, max, delay, fatal ? "true" : "false", cap};
    ts_err err;
    PGresult *res = one(r, TS_DB_WRITE_READ_COMMITTED, &fail, params, &err);
    if (!res) {
        ts_warn("router statement failed", "stmt=%s error=\"%s\"", fail.name, err.msg);
        return;
    }
    char q[600];
    if (PQntuples(res) == 1)
        ts_warn("route step failed", "delivery=%s route=%s resource=%s state=%s attempts=%s why=%s",
                d->id, d->route_id, d->public_id, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                ts_log_quote(q, sizeof(q), why));
    PQclear(res);
}

static void step_done(jobs_router *r, const delivery *d)
{
    const char *params[] = {d->id};
    if (one_ok(r, &advance, params))
        ts_info("route step done", "delivery=%s route=%s resource=%s", d->id, d->route_id,
                d->public_id);
}

/* Builds the store job of the step; false (and the delivery failed) when it
 * cannot be built. */
static bool store_job(jobs_router *r, const delivery *d, const char *type, json_t **content,
                      json_t **input)
{
    bool peer = strcmp(type, "OrthancPeerStore") == 0;
    const char *name = json_string_value(json_object_get(d->action, peer ? "Peer" : "Modality"));
    const char *params[] = {name ? name : "", d->public_id};
    ts_err err;
    PGresult *res = one(r, TS_DB_READ, peer ? &peer_input : &modality_input, params, &err);
    char why[300];
    if (!res) {
        step_failed(r, d, err.msg, false);
        return false;
    }
    if (PQntuples(res) != 1) {
        snprintf(why, sizeof(why), "the %s %s no longer exists", peer ? "peer" : "modality",
                 params[0]);
        PQclear(res);
        step_failed(r, d, why, true);
        return false;
    }
    const char *list = col(res, 0, peer ? 3 : 5);
    json_t *instances = list ? json_loads(list, 0, NULL) : NULL;
    if (!json_is_array(instances)) {
        json_decref(instances);
        PQclear(res);
        snprintf(why, sizeof(why), "the resource %s no longer exists", d->public_id);
        step_failed(r, d, why, true);
        return false;
    }
    char description[96];
    snprintf(description, sizeof(description), "Route %s", d->route_id);
    size_t n = json_array_size(instances);
    if (peer) {
        const char *url = col(res, 0, 0);
        *content = json_pack("{s:b, s:s, s:i, s:I, s:[s], s:[s]}", "Compress", 0, "Description",
                             description, "FailedInstancesCount", 0, "InstancesCount",
                             (json_int_t)n, "ParentResources", d->public_id, "Peer", url);
        *input = json_pack("{s:o, s:s, s:i, s:b}", "Instances", instances, "Url", url, "Timeout",
                           r->dicom_timeout_s, "Permissive", 0);
        if (col(res, 0, 1)) {
            json_object_set_new(*input, "Username", json_string(col(res, 0, 1)));
            json_object_set_new(*input, "Password",
                                json_string(col(res, 0, 2) ? col(res, 0, 2) : ""));
        }
    } else {
        const char *aet = col(res, 0, 0), *local = col(res, 0, 3);
        *content = json_pack("{s:s, s:i, s:I, s:s, s:[s], s:s}", "Description", description,
                             "FailedInstancesCount", 0, "InstancesCount", (json_int_t)n, "LocalAet",
                             local && *local ? local : r->svc->our_aet, "ParentResources",
                             d->public_id, "RemoteAet", aet);
        *input = json_pack("{s:o, s:s, s:s, s:i, s:s, s:i, s:b}", "Instances", instances, "AET",
                           aet, "Host", col(res, 0, 1), "Port", atoi(col(res, 0, 2)), "LocalAet",
                           local ? local : "", "Timeout", atoi(col(res, 0, 4)), "Permissive", 0);
    }
    PQclear(res);
    return true;
}

/* A store step to start (or to retry: the failed job is resubmitted, so the
 * instances it sent are not sent again). */
static void start_store(jobs_router *r, const delivery *d, const char *type)
{
    ts_err err;
    char id[TS_JOB_ID_LEN + 1];
    if (d->job_id && strlen(d->job_id) == TS_JOB_ID_LEN &&
        ts_jobs_control(r->redis, d->job_id, TS_JOB_RESUBMIT, r->svc->history, &err) == 0) {
        snprintf(id, sizeof(id), "%s", d->job_id);
    } else {
        json_t *content = NULL, *input = NULL;
        if (!store_job(r, d, type, &content, &input))
            return;
        int rc = ts_jobs_submit(r->redis, type, 0, content, input, id, &err);
        json_decref(content);
        json_decref(input);
        if (rc) {
            /* Redis away: the claim's lease runs out and the step is tried again */
            ts_warn("cannot submit a route job", "delivery=%s error=\"%s\"", d->id, err.msg);
            return;
        }
    }
    const char *params[] = {d->id, id};
    if (one_ok(r, &set_running, params))
        ts_info("route job submitted", "delivery=%s route=%s resource=%s job=%s type=%s", d->id,
                d->route_id, d->public_id, id, type);
}

/* A store step whose job is out: done, failed, or still to wait for. */
static void check_store(jobs_router *r, const delivery *d)
{
    ts_err err;
    char state[32];
    int rc = ts_jobs_state(r->redis, d->job_id, state, sizeof(state), &err);
    const char *params[] = {d->id};
    if (rc == TS_ENOTFOUND) {
        step_failed(r, d, "the job left the registry before it finished", false);
    } else if (rc) {
        ts_warn("cannot read a route job", "delivery=%s job=%s error=\"%s\"", d->id, d->job_id,
                err.msg);
    } else if (strcmp(state, "Success") == 0) {
        step_done(r, d);
    } else if (strcmp(state, "Failure") == 0) {
        json_t *job = NULL;
        char why[600];
        snprintf(why, sizeof(why), "job %s failed", d->job_id);
        if (ts_jobs_get(r->redis, d->job_id, &job, &err) == 0) {
            const char *details = json_string_value(json_object_get(job, "ErrorDetails"));
            const char *desc = json_string_value(json_object_get(job, "ErrorDescription"));
            snprintf(why, sizeof(why), "job %s failed: %s%s%s", d->job_id, desc ? desc : "",
                     details && *details ? ": " : "", details ? details : "");
        }
        json_decref(job);
        step_failed(r, d, why, false);
    } else {
        one_ok(r, &wait_job, params);
    }
}

static void delete_step(jobs_router *r, const delivery *d)
{
    ts_err err;
    ts_deleted del;
    int rc = ts_delete_resource(r->svc->db, d->public_id, d->level, &del, &err);
    if (rc < 0) {
        step_failed(r, d, err.msg, false);
        return;
    }
    if (rc == 1) {
        ts_info("route deleted a resource", "delivery=%s resource=%s removed=%lld", d->id,
                d->public_id, del.removed);
        if (del.removed && r->svc->deleters) {
            Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
            ts_bus_push(r->svc->deleters, &nudge.base);
        }
    }
    step_done(r, d);
}

static void drive(jobs_router *r, const delivery *d)
{
    const char *type = json_string_value(json_object_get(d->action, "Type"));
    const char *job = NULL;
    if (type && strcmp(type, "StoreToModality") == 0)
        job = "DicomModalityStore";
    else if (type && strcmp(type, "StoreToPeer") == 0)
        job = "OrthancPeerStore";
    if (job && strcmp(d->state, "running") == 0 && d->job_id)
        check_store(r, d);
    else if (job)
        start_store(r, d, job);
    else if (type && strcmp(type, "Delete") == 0)
        delete_step(r, d);
    else
        step_failed(r, d, "unknown action (REST validates rules: a row written by hand?)", true);
}

/* Claims the due deliveries and drives each one step; the number claimed. */
static int deliveries(jobs_router *r)
{
    char lease[16], batch[16];
    snprintf(lease, sizeof(lease), "%d", CLAIM_LEASE_S);
    snprintf(batch, sizeof(batch), "%d", CLAIM_BATCH);
    const char *params[] = {lease, batch};
    ts_err err;
    PGresult *res = one(r, TS_DB_WRITE_READ_COMMITTED, &claim, params, &err);
    if (!res) {
        ts_warn("cannot claim deliveries", "error=\"%s\"", err.msg);
        return 0;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n && !atomic_load(&r->svc->stopping); i++) {
        delivery d = {.id = col(res, i, 0),
                      .state = col(res, i, 1),
                      .job_id = col(res, i, 3),
                      .level = atoi(col(res, i, 4)),
                      .public_id = col(res, i, 5),
                      .route_id = col(res, i, 6)};
        d.action = col(res, i, 2) ? json_loads(col(res, i, 2), 0, NULL) : NULL;
        drive(r, &d);
        json_decref(d.action);
    }
    PQclear(res);
    return n;
}

/* ---- the loop ---------------------------------------------------------------- */

static long scalar(jobs_router *r, const ts_db_stmt *stmt, const char *const *params)
{
    ts_err err;
    PGresult *res = one(r, TS_DB_WRITE_READ_COMMITTED, stmt, params, &err);
    if (!res) {
        ts_warn("router statement failed", "stmt=%s error=\"%s\"", stmt->name, err.msg);
        return -1;
    }
    long v = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *router_main(void *arg)
{
    jobs_router *r = arg;
    char age[16];
    snprintf(age, sizeof(age), "%d", r->stable_age_s);
    const char *age_params[] = {age};
    while (!atomic_load(&r->svc->stopping)) {
        long stable = scalar(r, &emit_stable, age_params);
        if (stable > 0)
            ts_info("stable resources", "changes=%ld", stable);
        ts_err err;
        /* numbers our Stable* changes (and anybody's) for the dispatch below */
        if (ts_changes_sequence(r->svc->db, false, NULL, &err))
            ts_warn("cannot number changes", "error=\"%s\"", err.msg);
        long made = scalar(r, &dispatch, NULL);
        if (made > 0)
            ts_info("changes dispatched", "deliveries=%ld", made);
        int claimed = deliveries(r);
        /* a full batch or a full dispatch: more may wait, go on at once */
        if (claimed < CLAIM_BATCH && made < 1000)
            sleep_ms(r->interval_ms);
    }
    return NULL;
}

int jobs_router_start(jobs_service *svc, jobs_router **out, ts_err *err)
{
    *out = NULL;
    if (!ts_config_bool("TESSERA_ROUTER"))
        return 0;
    jobs_router *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->svc = svc;
    r->interval_ms = (int)ts_config_int("TESSERA_ROUTER_INTERVAL");
    r->stable_age_s = (int)ts_config_int("TESSERA_STABLE_AGE");
    r->retry_delay_s = (int)ts_config_int("TESSERA_ROUTER_RETRY_DELAY");
    r->max_attempts = (int)ts_config_int("TESSERA_ROUTER_MAX_ATTEMPTS");
    r->dicom_timeout_s = svc->dicom_timeout_s;
    int rc = ts_jobs_connect(svc->redis_url, 5000, &r->redis, err);
    if (rc) {
        free(r);
        return rc;
    }
    pthread_create(&r->thread, NULL, router_main, r);
    *out = r;
    return 0;
}

void jobs_router_stop(jobs_router *r)
{
    if (!r)
        return;
    pthread_join(r->thread, NULL);
    ts_jobs_free(r->redis);
    free(r);
}
