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
#include "dicom/dicom_modify.h"
#include "domain/changes.h"
#include "domain/delete.h"
#include "domain/exports.h"
#include "domain/lua_scripts.h"
#include "tessera.pb-c.h"

#define CLAIM_BATCH 2048  /* pending deliveries claimed per pass */
#define JOB_MAX 1024      /* instances' deliveries per store job (one association) */
#define JOB_MIN 32        /* ... unless fewer are waiting */
#define JOB_SPREAD 4      /* route jobs kept queued; a claim is spread to make up */
#define CHECK_BATCH 512   /* running jobs looked at per pass */
#define SWEEP_BATCH 1000  /* resources marked stable per sweep transaction */
#define DISPATCH_MAX 1000 /* changes dispatched per transaction */
#define HOLD_LOOK_MS 50   /* the pause between passes while store steps are held */
#define CLAIM_LEASE_S 10  /* a claimed delivery is left alone this long */
#define RETRY_CAP_S 300   /* back-off doubles up to this */

struct jobs_router {
    jobs_service *svc;
    ts_jobs *redis;
    pthread_t thread;
    int interval_ms;
    int stable_age_s;
    int retry_delay_s;
    int max_attempts;
    int dicom_timeout_s;
    ts_lua *lua;         /* TESSERA_LUA_SCRIPTS, NULL when none */
    char lua_types[160]; /* the change types its callbacks take, as a text[] literal */
    char lua_jobs[96];   /* its OnJob* callbacks, a text[] literal ("{}": none) */
    int queued;          /* route jobs waiting for a worker, as the pass saw them */
};

static const ts_db_stmt emit_stable = {"router_emit_stable",
                                       "SELECT tessera_emit_stable($1::integer, $2::integer)", 2};
/* the numbered changes the cursor has not passed yet */
static const ts_db_stmt behind = {
    "router_behind",
    "SELECT (SELECT last_seq FROM change_counter) - (SELECT last_seq FROM router_cursor)", 0};
static const ts_db_stmt dispatch = {"router_dispatch",
                                    "SELECT tessera_route_dispatch($2::integer, $1::text[])", 2};
static const ts_db_stmt claim = {
    "router_claim",
    "UPDATE route_deliveries d SET not_before = now() + make_interval(secs => $1::integer),"
    "  updated_at = now()"
    " FROM (SELECT id FROM route_deliveries WHERE state = 'pending' AND not_before <= now()"
    "       AND ($3::boolean OR actions->step->>'Type' NOT IN ('StoreToModality', 'StoreToPeer'))"
    "       ORDER BY not_before LIMIT $2::integer FOR UPDATE SKIP LOCKED) c"
    " WHERE d.id = c.id"
    " RETURNING d.id::text, d.state, (d.actions->d.step)::text, d.job_id, d.level::text,"
    "  d.public_id, d.route_id",
    3};
static const ts_db_stmt set_running = {
    "router_set_running",
    "UPDATE route_deliveries SET state = 'running', job_id = $2,"
    " not_before = now() + interval '300 milliseconds', updated_at = now()"
    " WHERE id = ANY ($1::bigint[])",
    2};
/* the jobs out (state running): each is looked at once a pass in Redis, from
 * its submission on (a job still queued holds the next claim of store steps),
 * and nothing is written while it runs */
static const ts_db_stmt running_jobs = {
    "router_running_jobs",
    "SELECT job_id FROM route_deliveries WHERE state = 'running'"
    " GROUP BY job_id ORDER BY min(not_before) LIMIT $1::integer",
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
/* the job of running deliveries succeeded: all of them at once. The rows are
 * locked first, so that of two routers that both saw the job end, the second
 * finds them no longer running and does nothing. */
static const ts_db_stmt advance_job = {
    "router_advance_job",
    "WITH d AS (SELECT id FROM route_deliveries WHERE job_id = $1 AND state = 'running'"
    "   FOR UPDATE),"
    " over AS (DELETE FROM route_deliveries r USING d"
    "  WHERE r.id = d.id AND r.step + 1 >= jsonb_array_length(r.actions)"
    "  RETURNING r.id, r.route_id, r.public_id),"
    " next AS (UPDATE route_deliveries r SET step = step + 1, state = 'pending', job_id = NULL,"
    "  attempts = 0, last_error = NULL, not_before = now(), updated_at = now() FROM d"
    "  WHERE r.id = d.id AND r.step + 1 < jsonb_array_length(r.actions)"
    "  RETURNING r.id, r.route_id, r.public_id)"
    " SELECT id::text, route_id, public_id FROM over UNION ALL"
    " SELECT id::text, route_id, public_id FROM next",
    1};
/* the step failed: retried after a doubling delay, or dead */
#define FAIL_SET                                                                                   \
    "UPDATE route_deliveries SET attempts = attempts + 1, last_error = $2, updated_at = now(),"    \
    "  state = CASE WHEN $5::boolean OR attempts + 1 >= $3::integer THEN 'dead' ELSE 'pending'"    \
    "  END,"                                                                                       \
    "  not_before = now() + make_interval(secs => least($4::integer * 2 ^ attempts, $6::integer))"
static const ts_db_stmt fail = {
    "router_fail", FAIL_SET " WHERE id = $1::bigint RETURNING state, attempts::text, id::text", 6};
/* ... every running delivery of a job that failed (the job id is kept: the
 * retry resubmits it) */
static const ts_db_stmt fail_job = {"router_fail_job",
                                    FAIL_SET " WHERE job_id = $1 AND state = 'running'"
                                             " RETURNING state, attempts::text, id::text,"
                                             " route_id, public_id",
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
    ", m.use_dicom_tls::text FROM modalities m WHERE m.name = $1",
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

/* Fails the step of the delivery `key` (fail) or of the deliveries running
 * job `key` (fail_job), with a log line each. */
static void fail_rows(jobs_router *r, const ts_db_stmt *stmt, const char *key, const char *route,
                      const char *resource, const char *why, bool fatal)
{
    char delay[16], max[16], cap[16];
    snprintf(delay, sizeof(delay), "%d", r->retry_delay_s);
    snprintf(max, sizeof(max), "%d", r->max_attempts);
    snprintf(cap, sizeof(cap), "%d", RETRY_CAP_S);
    const char *params[] = {key, why, max, delay, fatal ? "true" : "false", cap};
    ts_err err;
    PGresult *res = one(r, TS_DB_WRITE_READ_COMMITTED, stmt, params, &err);
    if (!res) {
        ts_warn("router statement failed", "stmt=%s error=\"%s\"", stmt->name, err.msg);
        return;
    }
    char q[600];
    for (int i = 0; i < PQntuples(res); i++)
        ts_warn("route step failed", "delivery=%s route=%s resource=%s state=%s attempts=%s why=%s",
                PQgetvalue(res, i, 2), route ? route : PQgetvalue(res, i, 3),
                resource ? resource : PQgetvalue(res, i, 4), PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), ts_log_quote(q, sizeof(q), why));
    PQclear(res);
}

static void step_failed(jobs_router *r, const delivery *d, const char *why, bool fatal)
{
    fail_rows(r, &fail, d->id, d->route_id, d->public_id, why, fatal);
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
    /* a Lua script's SendTo* may name another resource than the event's */
    const char *other = json_string_value(json_object_get(ds[0]->action, "Resource"));
    char *resources = other ? NULL : array_of(ds, n, true);
    if (other) {
        resources = malloc(strlen(other) + 3);
        if (!resources)
            abort();
        sprintf(resources, "{%s}", other);
    }
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
    for (size_t i = 0; i < n && !other; i++)
        json_array_append_new(parents, json_string(ds[i]->public_id));
    if (other)
        json_array_append_new(parents, json_string(other));
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
        const char *local_over = json_string_value(json_object_get(ds[0]->action, "LocalAet"));
        if (local_over)
            local = local_over;
        *content = json_pack("{s:s, s:i, s:I, s:s, s:o, s:s}", "Description", description,
                             "FailedInstancesCount", 0, "InstancesCount", (json_int_t)count,
                             "LocalAet", local && *local ? local : r->svc->our_aet,
                             "ParentResources", parents, "RemoteAet", aet);
        const char *tls = col(res, 0, 6);
        *input = json_pack("{s:o, s:s, s:s, s:i, s:b, s:s, s:i, s:b}", "Instances", instances,
                           "AET", aet, "Host", col(res, 0, 1), "Port", atoi(col(res, 0, 2)),
                           "UseDicomTls", tls && !strcmp(tls, "true"), "LocalAet",
                           local ? local : "", "Timeout", atoi(col(res, 0, 4)), "Permissive", 0);
    }
    PQclear(res);
    /* the action's transcoding and modification, applied by the job to what
     * it sends (the stored instances stay as they are) */
    const json_t *ts = json_object_get(ds[0]->action, "Transcode");
    if (ts) {
        json_object_set(*input, "Transcode", (json_t *)ts);
        json_object_set(*content, "Transcode", (json_t *)ts);
    }
    const json_t *anon = json_object_get(ds[0]->action, "Anonymize");
    const json_t *mod = anon ? anon : json_object_get(ds[0]->action, "Modify");
    if (mod)
        json_object_set_new(*input, "Modification",
                            json_pack("{s:O, s:b, s:O}", "Body", mod, "Anonymize", anon != NULL,
                                      "Secret", json_object_get(ds[0]->action, "Secret")));
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
        /* Orthanc's /exports: the resources, as a REST store request logs them */
        const char *dest = json_string_value(json_object_get(
            fresh[0]->action, strcmp(type, "OrthancPeerStore") == 0 ? "Peer" : "Modality"));
        if (ts_exports_log(r->svc->db, dest ? dest : "",
                           json_object_get(content, "ParentResources"), &err))
            ts_warn("cannot log the export", "error=\"%s\"", err.msg);
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

/* The store jobs out (deliveries in state running), job by job: a job that
 * succeeded moves all its deliveries to their next step (or ends them), one
 * that failed fails them (retry or dead), one still queued or running costs
 * one Redis look and no write. Any router may do this for any job: the
 * statements act on the deliveries still running that job only. Returns the
 * number of jobs that ended; *queued: those still waiting for a worker. */
static int check_jobs(jobs_router *r, int *queued)
{
    *queued = 0;
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", CHECK_BATCH);
    const char *params[] = {batch};
    ts_err err;
    PGresult *res = one(r, TS_DB_READ, &running_jobs, params, &err);
    if (!res) {
        ts_warn("router statement failed", "stmt=%s error=\"%s\"", running_jobs.name, err.msg);
        return 0;
    }
    int ended = 0;
    for (int i = 0; i < PQntuples(res) && !atomic_load(&r->svc->stopping); i++) {
        const char *job = PQgetvalue(res, i, 0);
        char state[32];
        int rc = ts_jobs_state(r->redis, job, state, sizeof(state), &err);
        if (rc && rc != TS_ENOTFOUND) {
            ts_warn("cannot read a route job", "job=%s error=\"%s\"", job, err.msg);
            break; /* Redis away: the next pass */
        }
        if (rc == TS_ENOTFOUND) {
            fail_rows(r, &fail_job, job, NULL, NULL, "the job left the registry before it finished",
                      false);
        } else if (strcmp(state, "Success") == 0) {
            const char *p[] = {job};
            PGresult *done = one(r, TS_DB_WRITE_READ_COMMITTED, &advance_job, p, &err);
            if (!done) {
                ts_warn("router statement failed", "stmt=%s error=\"%s\"", advance_job.name,
                        err.msg);
                continue;
            }
            for (int k = 0; k < PQntuples(done); k++)
                ts_info("route step done", "delivery=%s route=%s resource=%s job=%s",
                        PQgetvalue(done, k, 0), PQgetvalue(done, k, 1), PQgetvalue(done, k, 2),
                        job);
            PQclear(done);
        } else if (strcmp(state, "Failure") == 0) {
            char why[600];
            snprintf(why, sizeof(why), "job %s failed", job);
            json_t *j = NULL;
            if (ts_jobs_get(r->redis, job, &j, &err) == 0) {
                const char *details = json_string_value(json_object_get(j, "ErrorDetails"));
                const char *desc = json_string_value(json_object_get(j, "ErrorDescription"));
                snprintf(why, sizeof(why), "job %s failed: %s%s%s", job, desc ? desc : "",
                         details && *details ? ": " : "", details ? details : "");
            }
            json_decref(j);
            fail_rows(r, &fail_job, job, NULL, NULL, why, false);
        } else {
            if (strcmp(state, "Pending") == 0)
                (*queued)++;
            continue; /* still queued, running or paused */
        }
        ended++;
    }
    PQclear(res);
    return ended;
}

static void delete_step(jobs_router *r, delivery *d, delivery **succeeded, size_t *nsucceeded)
{
    ts_err err;
    ts_deleted del;
    const char *other = json_string_value(json_object_get(d->action, "Resource"));
    int rc = ts_delete_resource(r->svc->db, other ? other : d->public_id, other ? -1 : d->level,
                                &del, &err);
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

/* ---- Lua callbacks (TESSERA_LUA_SCRIPTS) ------------------------------------ */

/* The event's resource as Orthanc hands it to a callback: its main tags over
 * those of its ancestors, and its metadata. No row: the resource is gone. */
static const ts_db_stmt lua_input = {
    "router_lua_input",
    "WITH RECURSIVE up AS (SELECT id, parent_id, level FROM resources WHERE public_id = $1"
    "  UNION ALL SELECT r.id, r.parent_id, r.level FROM resources r JOIN up ON r.id = up.parent_id)"
    " SELECT (SELECT coalesce(jsonb_object_agg(e.key, e.value ORDER BY up.level), '{}')"
    "   FROM up CROSS JOIN LATERAL jsonb_each(coalesce(CASE up.level"
    "     WHEN 0 THEN (SELECT main_tags FROM patients WHERE resource_id = up.id)"
    "     WHEN 1 THEN (SELECT main_tags FROM studies WHERE resource_id = up.id)"
    "     WHEN 2 THEN (SELECT main_tags FROM series WHERE resource_id = up.id)"
    "     ELSE (SELECT main_tags FROM instances WHERE resource_id = up.id) END, '{}')) e)::text,"
    "  (SELECT coalesce(jsonb_object_agg(m.name, m.value), '{}') FROM metadata m"
    "   WHERE m.resource_id = r.id)::text"
    " FROM resources r WHERE r.public_id = $1",
    1};
static const ts_db_stmt lua_target = {
    "router_lua_target",
    "SELECT 1 FROM modalities WHERE name = $1 AND NOT $2::boolean"
    " UNION ALL SELECT 1 FROM peers WHERE name = $1 AND $2::boolean",
    2};
/* the callback's steps after it, then the delivery goes on (advance) */
static const ts_db_stmt lua_append = {
    "router_lua_append",
    "UPDATE route_deliveries SET actions = actions || $2::jsonb WHERE id = $1::bigint", 2};

typedef struct lua_ctx {
    jobs_router *r;
    const delivery *d;
    json_t *steps; /* what SendTo*, Delete asked for, run after the callback */
} lua_ctx;

/* A public id (hex groups and dashes), so that it can go in an array literal. */
static bool public_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    return strspn(s, "0123456789abcdef-") == n;
}

static int lua_send(void *arg, bool peer, const char *resource, const char *target,
                    const char *local_aet, const json_t *modify, ts_err *err)
{
    lua_ctx *c = arg;
    if (!public_id_ok(resource))
        return ts_err_set(err, TS_EINVAL, "%s is not a resource id", resource);
    const char *params[] = {target, peer ? "true" : "false"};
    PGresult *res = one(c->r, TS_DB_READ, &lua_target, params, err);
    if (!res)
        return err->code;
    int found = PQntuples(res);
    PQclear(res);
    if (!found) /* refused now, as Orthanc: a step that cannot succeed is no retry */
        return ts_err_set(err, TS_ENOTFOUND, "unknown %s %s", peer ? "peer" : "modality", target);
    json_t *step = json_pack("{s:s, s:s}", "Type", peer ? "StoreToPeer" : "StoreToModality",
                             peer ? "Peer" : "Modality", target);
    /* the event's own resource is left implicit: such steps of many
     * deliveries go out as one job */
    if (strcmp(resource, c->d->public_id) != 0)
        json_object_set_new(step, "Resource", json_string(resource));
    if (local_aet && *local_aet)
        json_object_set_new(step, "LocalAet", json_string(local_aet));
    if (modify) {
        /* ModifyInstance then SendTo*: the store job modifies what it sends;
         * the secret, kept in the step, makes a retry send the same UIDs */
        char secret[80];
        ts_dicom_generate_uid(secret, sizeof(secret));
        json_object_set(step, "Modify", (json_t *)modify);
        json_object_set_new(step, "Secret", json_string(secret));
    }
    json_array_append_new(c->steps, step);
    return 0;
}

static int lua_delete(void *arg, const char *resource, ts_err *err)
{
    lua_ctx *c = arg;
    if (!public_id_ok(resource))
        return ts_err_set(err, TS_EINVAL, "%s is not a resource id", resource);
    json_t *step = json_pack("{s:s}", "Type", "Delete");
    if (strcmp(resource, c->d->public_id) != 0)
        json_object_set_new(step, "Resource", json_string(resource));
    json_array_append_new(c->steps, step);
    return 0;
}

typedef struct lua_done_arg {
    const char *id;
    const char *steps;
} lua_done_arg;

static int lua_done_txn(ts_db *db, void *arg, ts_err *err)
{
    lua_done_arg *a = arg;
    PGresult *res = NULL;
    char ids[40];
    snprintf(ids, sizeof(ids), "{%s}", a->id);
    const char *p1[] = {a->id, a->steps};
    const char *p2[] = {ids};
    int rc = ts_db_exec(db, &lua_append, p1, &res, err);
    if (res)
        PQclear(res);
    res = NULL;
    if (!rc)
        rc = ts_db_exec(db, &advance, p2, &res, err);
    if (res)
        PQclear(res);
    return rc;
}

/* The object Orthanc passes as OnStoredInstance's origin
 * (DicomInstanceOrigin::Format), from the reception metadata. */
static json_t *origin_of(const json_t *meta)
{
    const char *o = json_string_value(json_object_get(meta, "Origin"));
    json_t *out = json_pack("{s:s}", "RequestOrigin", o ? o : "Unknown");
    static const char *const dicom[][2] = {
        {"RemoteIP", "RemoteIp"}, {"RemoteAET", "RemoteAet"}, {"CalledAET", "CalledAet"}};
    static const char *const rest[][2] = {{"RemoteIP", "RemoteIp"}, {"HttpUsername", "Username"}};
    bool is_dicom = o && strcmp(o, "DicomProtocol") == 0, is_rest = o && strcmp(o, "RestApi") == 0;
    for (size_t i = 0; is_dicom && i < 3; i++) {
        const char *v = json_string_value(json_object_get(meta, dicom[i][0]));
        json_object_set_new(out, dicom[i][1], json_string(v ? v : ""));
    }
    for (size_t i = 0; is_rest && i < 2; i++) {
        const char *v = json_string_value(json_object_get(meta, rest[i][0]));
        json_object_set_new(out, rest[i][1], json_string(v ? v : ""));
    }
    return out;
}

/* A Lua delivery: the callback runs here, then the steps it asked for join
 * the delivery and run as a rule's (jobs, retries, dead letters). An error of
 * the script, or its instruction or memory limit, kills the delivery with the
 * reason (no retry: it would fail the same way); the router goes on. The
 * claim's lease covers the callback: a process killed mid-way leaves it to
 * the next, which runs it again from the start. */
static void lua_step(jobs_router *r, delivery *d)
{
    const char *callback = json_string_value(json_object_get(d->action, "Callback"));
    if (!callback)
        callback = "?";
    if (!r->lua || !ts_lua_has(r->lua, callback)) {
        char why[200];
        snprintf(why, sizeof(why), "this jobs process has no %s (TESSERA_LUA_SCRIPTS differ?)",
                 callback);
        step_failed(r, d, why, false);
        return;
    }
    json_t *args = json_array();
    ts_err err;
    if (strncmp(callback, "OnJob", 5) == 0) {
        json_array_append_new(args, json_string(d->public_id));
    } else {
        const char *params[] = {d->public_id};
        PGresult *res = one(r, TS_DB_READ, &lua_input, params, &err);
        if (!res) {
            step_failed(r, d, err.msg, false);
            json_decref(args);
            return;
        }
        if (PQntuples(res) != 1) { /* deleted since: nothing to tell about */
            PQclear(res);
            json_decref(args);
            steps_done(r, &d, 1);
            return;
        }
        json_t *tags = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        json_t *meta = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
        PQclear(res);
        json_array_append_new(args, json_string(d->public_id));
        json_array_append_new(args, tags ? tags : json_object());
        if (strcmp(callback, "OnStoredInstance") == 0)
            json_array_append_new(args, origin_of(meta));
        json_array_insert_new(args, 2, meta ? meta : json_object());
    }
    lua_ctx ctx = {r, d, json_array()};
    ts_lua_host host = {&ctx, lua_send, lua_delete};
    ts_lua_set_host(r->lua, &host);
    int rc = ts_lua_call(r->lua, callback, args, NULL, &err);
    ts_lua_set_host(r->lua, NULL);
    json_decref(args);
    if (rc) {
        step_failed(r, d, err.msg, true);
    } else {
        char *steps = json_dumps(ctx.steps, JSON_COMPACT);
        lua_done_arg a = {d->id, steps};
        if (ts_db_transaction(r->svc->db, TS_DB_WRITE_READ_COMMITTED, lua_done_txn, &a, &err))
            ts_warn("router statement failed", "stmt=%s error=\"%s\"", lua_append.name, err.msg);
        else
            ts_info("lua callback done", "delivery=%s callback=%s resource=%s steps=%zu", d->id,
                    callback, d->public_id, json_array_size(ctx.steps));
        free(steps);
    }
    json_decref(ctx.steps);
}

/* The job events of the registry (ts_jobs_events) as deliveries of route
 * 'lua-job', numbered by the event: recorded idempotently, then acknowledged,
 * so a router killed in between records nothing twice and loses nothing. */
static const ts_db_stmt lua_job_events = {
    "router_lua_job_events",
    "INSERT INTO route_deliveries (route_id, change_seq, change_type, level, public_id, actions)"
    " SELECT 'lua-job', (e->>'Seq')::bigint, 'Job' || (e->>'Kind'), 0, e->>'ID',"
    "  jsonb_build_array(jsonb_build_object('Type', 'Lua', 'Callback', 'OnJob' || (e->>'Kind')))"
    " FROM jsonb_array_elements($1::jsonb) e WHERE 'OnJob' || (e->>'Kind') = ANY ($2::text[])"
    " ON CONFLICT (route_id, change_seq) DO NOTHING",
    2};

static int lua_jobs_pass(jobs_router *r)
{
    if (strcmp(r->lua_jobs, "{}") == 0)
        return 0;
    json_t *events = NULL;
    ts_err err;
    if (ts_jobs_events(r->redis, 500, &events, &err)) {
        ts_warn("cannot read job events", "error=\"%s\"", err.msg);
        return 0;
    }
    size_t n = json_array_size(events);
    if (n) {
        char *text = json_dumps(events, JSON_COMPACT);
        const char *params[] = {text, r->lua_jobs};
        long long last = json_integer_value(json_object_get(json_array_get(events, n - 1), "Seq"));
        if (one_ok(r, &lua_job_events, params) && ts_jobs_events_ack(r->redis, last, &err))
            ts_warn("cannot acknowledge job events", "error=\"%s\"", err.msg);
        free(text);
    }
    json_decref(events);
    return (int)n;
}

/* Loads TESSERA_LUA_SCRIPTS and notes which changes its callbacks take. */
static int lua_load(jobs_router *r, ts_err *err)
{
    snprintf(r->lua_types, sizeof(r->lua_types), "{}");
    snprintf(r->lua_jobs, sizeof(r->lua_jobs), "{}");
    if (!ts_cfg_str(TESSERA_LUA_SCRIPTS)[0])
        return 0;
    r->lua = ts_lua_new();
    int rc = ts_lua_load_configured(r->lua, err);
    if (rc)
        return rc;
    static const char *const types[][2] = {{"NewInstance", "OnStoredInstance"},
                                           {"StableSeries", "OnStableSeries"},
                                           {"StableStudy", "OnStableStudy"},
                                           {"StablePatient", "OnStablePatient"}};
    size_t off = 0;
    r->lua_types[off++] = '{';
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (ts_lua_has(r->lua, types[i][1]))
            off += (size_t)snprintf(r->lua_types + off, sizeof(r->lua_types) - off, "%s%s",
                                    off > 1 ? "," : "", types[i][0]);
    snprintf(r->lua_types + off, sizeof(r->lua_types) - off, "}");
    static const char *const jobs[] = {"OnJobSubmitted", "OnJobSuccess", "OnJobFailure"};
    off = 0;
    r->lua_jobs[off++] = '{';
    for (size_t i = 0; i < 3; i++)
        if (ts_lua_has(r->lua, jobs[i]))
            off += (size_t)snprintf(r->lua_jobs + off, sizeof(r->lua_jobs) - off, "%s%s",
                                    off > 1 ? "," : "", jobs[i]);
    snprintf(r->lua_jobs + off, sizeof(r->lua_jobs) - off, "}");
    ts_info("lua callbacks", "changes=%s jobs=%s", r->lua_types, r->lua_jobs);
    return 0;
}

/* Drives the claimed (pending) deliveries one step each. The store steps
 * with the same action (destination) go out together, in jobs of JOB_MIN to
 * JOB_MAX deliveries spread over JOB_SPREAD jobs at least: one association
 * each, run side by side by the workers of the cluster. */
static void drive(jobs_router *r, delivery *ds, size_t n)
{
    delivery **succeeded = calloc(n + 1, sizeof(*succeeded));
    delivery **group = calloc(n + 1, sizeof(*group));
    if (!succeeded || !group)
        abort();
    size_t nsucceeded = 0;
    for (size_t i = 0; i < n && !atomic_load(&r->svc->stopping); i++) {
        delivery *d = &ds[i];
        const char *type = job_type(d);
        const char *name = json_string_value(json_object_get(d->action, "Type"));
        if (d->grouped) {
            continue;
        } else if (type) {
            size_t ngroup = 0;
            for (size_t k = i; k < n; k++) {
                delivery *o = &ds[k];
                if (!o->grouped && o->action_text && strcmp(o->action_text, d->action_text) == 0) {
                    o->grouped = true;
                    group[ngroup++] = o;
                }
            }
            /* as many jobs as the queue lacks of JOB_SPREAD (one while
             * three wait: what piled up during a hold is one association) */
            size_t spread = r->queued < JOB_SPREAD ? (size_t)(JOB_SPREAD - r->queued) : 1;
            size_t per = (ngroup + spread - 1) / spread;
            per = per < JOB_MIN ? JOB_MIN : per > JOB_MAX ? JOB_MAX : per;
            for (size_t k = 0; k < ngroup && !atomic_load(&r->svc->stopping); k += per)
                start_stores(r, group + k, ngroup - k < per ? ngroup - k : per, type);
        } else if (name && strcmp(name, "Delete") == 0) {
            delete_step(r, d, succeeded, &nsucceeded);
        } else if (name && strcmp(name, "Lua") == 0) {
            lua_step(r, d);
        } else {
            step_failed(r, d, "unknown action (REST validates rules: a row written by hand?)",
                        true);
        }
    }
    steps_done(r, succeeded, nsucceeded);
    free(succeeded);
    free(group);
}

/* Claims the due deliveries and drives each one step; the number claimed.
 * stores: whether store steps are claimed too (see router_main). */
static int deliveries(jobs_router *r, bool stores)
{
    char lease[16], batch[16];
    snprintf(lease, sizeof(lease), "%d", CLAIM_LEASE_S);
    snprintf(batch, sizeof(batch), "%d", CLAIM_BATCH);
    const char *params[] = {lease, batch, stores ? "true" : "false"};
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
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", DISPATCH_MAX);
    const char *dispatch_params[] = {r->lua_types, limit};
    while (!atomic_load(&r->svc->stopping)) {
        long stable = scalar(r, &emit_stable, age_params);
        if (stable > 0)
            ts_info("stable resources", "changes=%ld", stable);
        ts_err err;
        /* numbers our Stable* changes (and anybody's) for the dispatch below */
        if (ts_changes_sequence(r->svc->db, false, NULL, &err))
            ts_warn("cannot number changes", "error=\"%s\"", err.msg);
        /* A backlog is dispatched in whole batches, not a small first one:
         * its deliveries are claimed together into as few jobs as the
         * workers can run side by side (a ramp of 128, 256, ... changes made
         * 16 jobs of a backlog of 1,000 instead of 4). */
        long waiting = scalar(r, &behind, NULL);
        long made = 0;
        if (waiting > 0) {
            made = scalar(r, &dispatch, dispatch_params);
            if (made > 0)
                ts_info("changes dispatched", "deliveries=%ld", made);
        }
        bool more = waiting > DISPATCH_MAX; /* go on at once */
        made += lua_jobs_pass(r);
        /* jobs that ended first: their next steps (a Delete) are claimed below */
        int queued = 0;
        check_jobs(r, &queued);
        /* While JOB_SPREAD route jobs wait for a worker, the store steps stay
         * pending: a job submitted now would wait behind them anyway, and a
         * later claim takes what piled up into fewer, larger jobs (fewer
         * associations, each with a cost at the destination: a process per
         * association for `storescp --fork`). Fewer than that: topped up at
         * once, so that a worker that ends its job always finds the next
         * (holding until the queue is empty left workers idle in waves). */
        bool hold = queued >= JOB_SPREAD;
        r->queued = queued;
        int claimed = deliveries(r, !hold);
        /* a full batch, sweep or dispatch: more may wait, go on at once; a
         * job waiting: look again soon, to claim the next ones as it starts */
        if (claimed < CLAIM_BATCH && !more && made < DISPATCH_MAX && stable < SWEEP_BATCH)
            sleep_ms(hold && r->interval_ms > HOLD_LOOK_MS ? HOLD_LOOK_MS : r->interval_ms);
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
    int rc = lua_load(r, err);
    if (!rc)
        rc = ts_jobs_connect(svc->redis_url, 5000, &r->redis, err);
    if (rc) {
        ts_lua_free(r->lua);
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
    ts_lua_free(r->lua);
    free(r);
}
