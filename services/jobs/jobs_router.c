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

#define CLAIM_BATCH 256
#define SWEEP_BATCH 1000 /* resources marked stable per sweep transaction */
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
                                       "SELECT tessera_emit_stable($1::integer, $2::integer)", 2};
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
    " not_before = now() + interval '300 milliseconds', updated_at = now()"
    " WHERE id = ANY ($1::bigint[])",
    2};
static const ts_db_stmt wait_job = {
    "router_wait_job",
    "UPDATE route_deliveries SET not_before = now() + interval '300 milliseconds'"
    " WHERE id = ANY ($1::bigint[])",
    1};
/* the step succeeded: the next one, or the delivery is over */
static const ts_db_stmt advance = {
    "router_advance",
    "WITH over AS (DELETE FROM route_deliveries"
    "  WHERE id = ANY ($1::bigint[]) AND step + 1 >= jsonb_array_length(actions))"
    " UPDATE route_deliveries SET step = step + 1, state = 'pending', job_id = NULL,"
    "  attempts = 0, last_error = NULL, not_before = now(), updated_at = now()"
    " WHERE id = ANY ($1::bigint[]) AND step + 1 < jsonb_array_length(actions)",
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
/* what a store step needs: the destination and the instances of the resources */
#define INSTANCES_OF_2                                                                             \
    "(WITH RECURSIVE d AS (SELECT id, level FROM resources"                                        \
    "  WHERE public_id = ANY ($2::text[])"                                                         \
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
    const char *id, *state, *job_id, *public_id, *route_id, *action_text;
    int level;
    json_t *action;
    bool grouped;
} delivery;

/* A PostgreSQL array literal of the ids (bigint or public ids: no quoting needed). */
static char *array_of(delivery **ds, size_t n, bool public_ids)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += strlen(public_ids ? ds[i]->public_id : ds[i]->id) + 1;
    char *out = malloc(len);
    if (!out)
        abort();
    size_t off = 0;
    out[off++] = '{';
    for (size_t i = 0; i < n; i++)
        off += (size_t)sprintf(out + off, "%s%s", i ? "," : "",
                               public_ids ? ds[i]->public_id : ds[i]->id);
    out[off++] = '}';
    out[off] = '\0';
    return out;
}

/* One statement over a set of deliveries ($1 their ids; extra: $2). */
static bool on_all(jobs_router *r, const ts_db_stmt *stmt, delivery **ds, size_t n,
                   const char *extra)
{
    if (!n)
        return true;
    char *ids = array_of(ds, n, false);
    const char *params[] = {ids, extra};
    bool ok = one_ok(r, stmt, params);
    free(ids);
    return ok;
}

static void step_failed(jobs_router *r, const delivery *d, const char *why, bool fatal)
{
    char delay[16], max[16], cap[16];
    snprintf(delay, sizeof(delay), "%d", r->retry_delay_s);
    snprintf(max, sizeof(max), "%d", r->max_attempts);
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

static void steps_done(jobs_router *r, delivery **ds, size_t n)
{
    if (on_all(r, &advance, ds, n, NULL))
        for (size_t i = 0; i < n; i++)
            ts_info("route step done", "delivery=%s route=%s resource=%s", ds[i]->id,
                    ds[i]->route_id, ds[i]->public_id);
}

/* Builds the one store job of deliveries that share a destination. Returns 0,
 * 1 when none of their resources is left (nothing to send), or -1 when the
 * job cannot be built (the deliveries have been failed). */
static int store_job(jobs_router *r, delivery **ds, size_t n, const char *type, json_t **content,
                     json_t **input)
{
    bool peer = strcmp(type, "OrthancPeerStore") == 0;
    const char *name =
        json_string_value(json_object_get(ds[0]->action, peer ? "Peer" : "Modality"));
    char *resources = array_of(ds, n, true);
    const char *params[] = {name ? name : "", resources};
    ts_err err;
    PGresult *res = one(r, TS_DB_READ, peer ? &peer_input : &modality_input, params, &err);
    free(resources);
    char why[300];
    if (!res || PQntuples(res) != 1) {
        if (res)
            snprintf(why, sizeof(why), "the %s %s no longer exists", peer ? "peer" : "modality",
                     params[0]);
        for (size_t i = 0; i < n; i++)
            step_failed(r, ds[i], res ? why : err.msg, res != NULL);
        if (res)
            PQclear(res);
        return -1;
    }
    const char *list = col(res, 0, peer ? 3 : 5);
    json_t *instances = list ? json_loads(list, 0, NULL) : NULL;
    if (!json_array_size(instances)) {
        /* deleted before their turn: nothing left to send */
        json_decref(instances);
        PQclear(res);
        return 1;
    }
    char description[96];
    snprintf(description, sizeof(description), "Route %s", ds[0]->route_id);
    json_t *parents = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(parents, json_string(ds[i]->public_id));
    size_t count = json_array_size(instances);
    if (peer) {
        const char *url = col(res, 0, 0);
        *content = json_pack("{s:b, s:s, s:i, s:I, s:o, s:[s]}", "Compress", 0, "Description",
                             description, "FailedInstancesCount", 0, "InstancesCount",
                             (json_int_t)count, "ParentResources", parents, "Peer", url);
        *input = json_pack("{s:o, s:s, s:i, s:b}", "Instances", instances, "Url", url, "Timeout",
                           r->dicom_timeout_s, "Permissive", 0);
        if (col(res, 0, 1)) {
            json_object_set_new(*input, "Username", json_string(col(res, 0, 1)));
            json_object_set_new(*input, "Password",
                                json_string(col(res, 0, 2) ? col(res, 0, 2) : ""));
        }
    } else {
        const char *aet = col(res, 0, 0), *local = col(res, 0, 3);
        *content = json_pack("{s:s, s:i, s:I, s:s, s:o, s:s}", "Description", description,
                             "FailedInstancesCount", 0, "InstancesCount", (json_int_t)count,
                             "LocalAet", local && *local ? local : r->svc->our_aet,
                             "ParentResources", parents, "RemoteAet", aet);
        *input = json_pack("{s:o, s:s, s:s, s:i, s:s, s:i, s:b}", "Instances", instances, "AET",
                           aet, "Host", col(res, 0, 1), "Port", atoi(col(res, 0, 2)), "LocalAet",
                           local ? local : "", "Timeout", atoi(col(res, 0, 4)), "Permissive", 0);
    }
    PQclear(res);
    return 0;
}

/* Starts the store steps of deliveries that share one action (the same
 * destination). A step retried after a failure resubmits its job, so the
 * instances that job sent are not sent again; when a delivery of the same
 * job resubmitted it first (or it succeeded since), the step follows that
 * job. The others go out together as one job: one association carries the
 * instances of many NewInstance deliveries. */
static void start_stores(jobs_router *r, delivery **ds, size_t n, const char *type)
{
    delivery **fresh = calloc(n, sizeof(*fresh));
    if (!fresh)
        abort();
    size_t nfresh = 0;
    for (size_t i = 0; i < n; i++) {
        delivery *d = ds[i];
        ts_err err;
        if (d->job_id && strlen(d->job_id) == TS_JOB_ID_LEN) {
            int rc = ts_jobs_control(r->redis, d->job_id, TS_JOB_RESUBMIT, r->svc->history, &err);
            if (rc == 0 || rc == TS_EINVAL) {
                if (on_all(r, &set_running, &ds[i], 1, d->job_id))
                    ts_info("route job resubmitted", "delivery=%s job=%s", d->id, d->job_id);
                continue;
            }
            if (rc != TS_ENOTFOUND) {
                /* Redis away: the claim's lease runs out and the step is tried again */
                ts_warn("cannot resubmit a route job", "delivery=%s error=\"%s\"", d->id, err.msg);
                continue;
            }
        }
        fresh[nfresh++] = d;
    }
    json_t *content = NULL, *input = NULL;
    int built = nfresh ? store_job(r, fresh, nfresh, type, &content, &input) : -1;
    if (built == 1) {
        steps_done(r, fresh, nfresh);
    } else if (built == 0) {
        ts_err err;
        char id[TS_JOB_ID_LEN + 1];
        if (ts_jobs_submit(r->redis, type, 0, content, input, id, &err))
            ts_warn("cannot submit a route job", "deliveries=%zu error=\"%s\"", nfresh, err.msg);
        else if (on_all(r, &set_running, fresh, nfresh, id))
            ts_info("route job submitted", "job=%s type=%s deliveries=%zu route=%s", id, type,
                    nfresh, fresh[0]->route_id);
    }
    json_decref(content);
    json_decref(input);
    free(fresh);
}

/* A store step whose job is out: done, failed, or still to wait for. The
 * state of the last job read is kept for the deliveries that share it. */
typedef struct job_cache {
    char id[TS_JOB_ID_LEN + 1];
    int rc;
    char state[32];
    char why[600];
} job_cache;

static void check_store(jobs_router *r, delivery *d, job_cache *cache, delivery **succeeded,
                        size_t *nsucceeded, delivery **waiting, size_t *nwaiting)
{
    if (strcmp(cache->id, d->job_id) != 0) {
        ts_err err;
        snprintf(cache->id, sizeof(cache->id), "%s", d->job_id);
        cache->rc = ts_jobs_state(r->redis, d->job_id, cache->state, sizeof(cache->state), &err);
        if (cache->rc && cache->rc != TS_ENOTFOUND) {
            ts_warn("cannot read a route job", "delivery=%s job=%s error=\"%s\"", d->id, d->job_id,
                    err.msg);
            cache->id[0] = '\0';
            return;
        }
        snprintf(cache->why, sizeof(cache->why), "job %s failed", d->job_id);
        json_t *job = NULL;
        if (cache->rc == 0 && strcmp(cache->state, "Failure") == 0 &&
            ts_jobs_get(r->redis, d->job_id, &job, &err) == 0) {
            const char *details = json_string_value(json_object_get(job, "ErrorDetails"));
            const char *desc = json_string_value(json_object_get(job, "ErrorDescription"));
            snprintf(cache->why, sizeof(cache->why), "job %s failed: %s%s%s", d->job_id,
                     desc ? desc : "", details && *details ? ": " : "", details ? details : "");
        }
        json_decref(job);
    }
    if (cache->rc == TS_ENOTFOUND)
        step_failed(r, d, "the job left the registry before it finished", false);
    else if (strcmp(cache->state, "Success") == 0)
        succeeded[(*nsucceeded)++] = d;
    else if (strcmp(cache->state, "Failure") == 0)
        step_failed(r, d, cache->why, false);
    else
        waiting[(*nwaiting)++] = d;
}

static void delete_step(jobs_router *r, delivery *d, delivery **succeeded, size_t *nsucceeded)
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
    succeeded[(*nsucceeded)++] = d;
}

static const char *job_type(const delivery *d)
{
    const char *type = json_string_value(json_object_get(d->action, "Type"));
    if (type && strcmp(type, "StoreToModality") == 0)
        return "DicomModalityStore";
    if (type && strcmp(type, "StoreToPeer") == 0)
        return "OrthancPeerStore";
    return NULL;
}

/* Drives the claimed deliveries one step each. */
static void drive(jobs_router *r, delivery *ds, size_t n)
{
    delivery **succeeded = calloc(n + 1, sizeof(*succeeded));
    delivery **waiting = calloc(n + 1, sizeof(*waiting));
    delivery **group = calloc(n + 1, sizeof(*group));
    if (!succeeded || !waiting || !group)
        abort();
    size_t nsucceeded = 0, nwaiting = 0;
    job_cache cache = {.id = ""};
    for (size_t i = 0; i < n && !atomic_load(&r->svc->stopping); i++) {
        delivery *d = &ds[i];
        const char *type = job_type(d);
        const char *name = json_string_value(json_object_get(d->action, "Type"));
        if (d->grouped) {
            continue;
        } else if (type && strcmp(d->state, "running") == 0 && d->job_id) {
            check_store(r, d, &cache, succeeded, &nsucceeded, waiting, &nwaiting);
        } else if (type) {
            /* every pending store step of this pass with the same action: one job */
            size_t ngroup = 0;
            for (size_t k = i; k < n; k++) {
                delivery *o = &ds[k];
                if (!o->grouped && strcmp(o->state, "pending") == 0 && o->action_text &&
                    strcmp(o->action_text, d->action_text) == 0) {
                    o->grouped = true;
                    group[ngroup++] = o;
                }
            }
            start_stores(r, group, ngroup, type);
        } else if (name && strcmp(name, "Delete") == 0) {
            delete_step(r, d, succeeded, &nsucceeded);
        } else {
            step_failed(r, d, "unknown action (REST validates rules: a row written by hand?)",
                        true);
        }
    }
    steps_done(r, succeeded, nsucceeded);
    on_all(r, &wait_job, waiting, nwaiting, NULL);
    free(succeeded);
    free(waiting);
    free(group);
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
    delivery *ds = calloc((size_t)n + 1, sizeof(*ds));
    if (!ds)
        abort();
    for (int i = 0; i < n; i++) {
        delivery *d = &ds[i];
        d->id = col(res, i, 0);
        d->state = col(res, i, 1);
        d->action_text = col(res, i, 2);
        d->job_id = col(res, i, 3);
        d->level = atoi(col(res, i, 4));
        d->public_id = col(res, i, 5);
        d->route_id = col(res, i, 6);
        d->action = d->action_text ? json_loads(d->action_text, 0, NULL) : NULL;
    }
    drive(r, ds, (size_t)n);
    for (int i = 0; i < n; i++)
        json_decref(ds[i].action);
    free(ds);
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
    char age[16], batch[16];
    snprintf(age, sizeof(age), "%d", r->stable_age_s);
    snprintf(batch, sizeof(batch), "%d", SWEEP_BATCH);
    const char *age_params[] = {age, batch};
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
        /* a full batch, sweep or dispatch: more may wait, go on at once */
        if (claimed < CLAIM_BATCH && made < 1000 && stable < SWEEP_BATCH)
            sleep_ms(r->interval_ms);
    }
    return NULL;
}

int jobs_router_start(jobs_service *svc, jobs_router **out, ts_err *err)
{
    *out = NULL;
    if (!ts_cfg_bool(TESSERA_ROUTER))
        return 0;
    jobs_router *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->svc = svc;
    r->interval_ms = (int)ts_cfg_int(TESSERA_ROUTER_INTERVAL);
    r->stable_age_s = (int)ts_cfg_int(TESSERA_STABLE_AGE);
    r->retry_delay_s = (int)ts_cfg_int(TESSERA_ROUTER_RETRY_DELAY);
    r->max_attempts = (int)ts_cfg_int(TESSERA_ROUTER_MAX_ATTEMPTS);
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
