/* The job registry in Redis (see jobs.h). Keys:
 *   tessera:job:<id>          hash: Orthanc's fields (ID, Type, State, Priority,
 *                             Progress, ErrorCode, ErrorDescription, ErrorDetails,
 *                             Content) and private ones (Input, created_ms,
 *                             completed_ms, runtime_ms, started_ms, owner, entry,
 *                             submitter: who asked for it over REST, absent for
 *                             the cluster's own jobs; "owner" is the worker)
 *   tessera:job:<id>:lease    the running worker's name, with a TTL
 *   tessera:job:<id>:done     set of completed items
 *   tessera:jobs:all          zset id -> creation time (ms)
 *   tessera:jobs:finished     zset id -> completion time (ms), the history
 *   tessera:jobs:pending      zset of queue entries waiting for a worker, score
 *                             -Priority: the highest priority first, and among
 *                             equals (same score, members compared as strings)
 *                             the oldest entry first
 *   tessera:jobs:running      zset of the entries that workers took, score the
 *                             time they took them (ms)
 *   tessera:jobs:seq          counter numbering the entries
 *   tessera:jobs:wake         list an idle worker waits on (BLPOP), pushed by
 *                             every enqueue; polled as well, so a lost push
 *                             costs a delay only
 *   tessera:jobs:processes    zset jobs process -> last heartbeat (ms)
 *   tessera:jobs:scp          zset of the jobs run by a DICOM SCP (hash field
 *                             runner = "scp"), id -> creation time: never in
 *                             the queue; swept to Failure once their lease is
 *                             gone (the SCP's process died)
 * A queue entry is "<16-digit seq>:<job id>"; the job's hash field "entry"
 * names its current one: entries left over from before a pause/resume or
 * resubmit are recognised as stale and dropped. An entry moves from pending to
 * running when a worker takes it, and leaves running when the worker releases
 * it; an entry in running whose job has no lease any more belongs to a worker
 * that died, and the next worker to look takes the job over.
 * (Before the priorities, the queue was the stream tessera:jobs:queue with a
 * consumer group: ts_jobs_prepare moves what waits there to the new queue.) */
#include "domain/jobs.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <uuid/uuid.h>

#include "base/ids.h"
#include "base/orthanc_errors.h"
#include "io/redis.h"

#define KEY_PREFIX "tessera:job:"
#define KEY_ALL "tessera:jobs:all"
#define KEY_FINISHED "tessera:jobs:finished"
#define KEY_PENDING "tessera:jobs:pending"
#define KEY_RUNNING "tessera:jobs:running"
#define KEY_SEQ "tessera:jobs:seq"
#define KEY_WAKE "tessera:jobs:wake"
#define KEY_LEGACY_QUEUE "tessera:jobs:queue"
#define KEY_PROCESSES "tessera:jobs:processes"
#define KEY_SCP "tessera:jobs:scp"
#define KEY_EVENTS "tessera:jobs:events"       /* "seq kind id" for OnJob* (ts_jobs_events) */
#define KEY_EVENT_SEQ "tessera:jobs:event_seq" /* their numbering */
#define EVENTS_KEPT "10000"                    /* the newest kept when nobody reads them */
/* entries of the pending queue one take looks at, at most: stale ones are
 * dropped on the way, and entries of a job still held by a live worker (a
 * pause at once followed by a resume) are skipped */
#define TAKE_SCAN "32"
/* Orthanc's ErrorCode_CanceledJob */
#define CANCELED_CODE "37"

struct ts_jobs {
    ts_redis *redis;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One command; *out is a reply that is not an error (the caller frees it). */
static int run(ts_jobs *j, int argc, const char **argv, redisReply **out, ts_err *err)
{
    return ts_redis_run(j->redis, argc, argv, 0, out, err);
}

int ts_jobs_connect(const char *url, int timeout_ms, ts_jobs **out, ts_err *err)
{
    ts_jobs *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    int rc = ts_redis_open(url, timeout_ms, &j->redis, err);
    if (rc) {
        free(j);
        return rc;
    }
    *out = j;
    return 0;
}

void ts_jobs_free(ts_jobs *j)
{
    if (!j)
        return;
    ts_redis_free(j->redis);
    free(j);
}

static void job_key(char *buf, size_t size, const char *id, const char *suffix)
{
    snprintf(buf, size, KEY_PREFIX "%s%s", id, suffix);
}

static int eval(ts_jobs *j, const char *script, int nkeys, const char **keys, int nargs,
                const char **args, redisReply **out, ts_err *err)
{
    const char *argv[32];
    char nk[16];
    if (3 + nkeys + nargs > 32)
        abort();
    snprintf(nk, sizeof(nk), "%d", nkeys);
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    return run(j, argc, argv, out, err);
}

/* ---- submit, read, control ------------------------------------------------ */

/* Logs a job's Submitted, Success or Failure for the Lua scripts' OnJob*
 * callbacks, in the script that changes its state. */
/* clang-format off */
#define EVENT_LUA                                                                                  \
    "local function job_event(kind, id)\n"                                                         \
    "  local n = redis.call('INCR', '" KEY_EVENT_SEQ "')\n"                                        \
    "  redis.call('RPUSH', '" KEY_EVENTS "', n .. ' ' .. kind .. ' ' .. id)\n"                     \
    "  redis.call('LTRIM', '" KEY_EVENTS "', -" EVENTS_KEPT ", -1)\n"                              \
    "end\n"
/* clang-format on */

/* Ends the SCP-run jobs whose SCP died (no lease left) as Failure with code
 * and desc; forgets those that ended otherwise. */
/* clang-format off */
#define SWEEP_SCP_LUA                                                                              \
    EVENT_LUA                                                                                      \
    "local function sweep_scp(now, code, desc)\n"                                                  \
    "  for _, id in ipairs(redis.call('ZRANGE', '" KEY_SCP "', 0, -1)) do\n"                       \
    "    local job = '" KEY_PREFIX "' .. id\n"                                                     \
    "    local st = redis.call('HGET', job, 'State')\n"                                            \
    "    if st ~= 'Running' then\n"                                                                \
    "      redis.call('ZREM', '" KEY_SCP "', id)\n"                                                \
    "    elseif redis.call('EXISTS', job .. ':lease') == 0 then\n"                                 \
    "      redis.call('HSET', job, 'State', 'Failure', 'ErrorCode', code, 'ErrorDescription',"     \
    "                 desc, 'ErrorDetails', 'the DICOM SCP that served this job stopped',"         \
    "                 'completed_ms', now)\n"                                                      \
    "      redis.call('HDEL', job, 'owner', 'started_ms')\n"                                       \
    "      redis.call('ZADD', '" KEY_FINISHED "', now, id)\n"                                      \
    "      redis.call('ZREM', '" KEY_SCP "', id)\n"                                                \
    "      job_event('Failure', id)\n"                                                          \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"
/* clang-format on */

/* Queues the job (hash key job, id) as a new pending entry after every entry
 * of its priority, and wakes a waiting worker. */
/* clang-format off */
#define ENQUEUE_LUA                                                                                \
    "local function enqueue(job, id)\n"                                                            \
    "  local seq = redis.call('INCR', '" KEY_SEQ "')\n"                                            \
    "  local e = string.format('%016d', seq) .. ':' .. id\n"                                       \
    "  local prio = tonumber(redis.call('HGET', job, 'Priority') or '0') or 0\n"                   \
    "  redis.call('ZADD', '" KEY_PENDING "', -prio, e)\n"                                          \
    "  redis.call('HSET', job, 'entry', e)\n"                                                      \
    "  redis.call('LPUSH', '" KEY_WAKE "', '1')\n"                                                 \
    "  redis.call('LTRIM', '" KEY_WAKE "', 0, 63)\n"                                               \
    "  return e\n"                                                                                 \
    "end\n"
/* clang-format on */

/* clang-format off */
static const char submit_script[] =
    ENQUEUE_LUA EVENT_LUA
    "redis.call('HSET', KEYS[1], 'ID', ARGV[1], 'Type', ARGV[2], 'State', 'Pending',"
    " 'Priority', ARGV[3], 'Progress', '0', 'ErrorCode', '0', 'ErrorDescription', 'Success',"
    " 'ErrorDetails', '', 'Content', ARGV[4], 'Input', ARGV[5], 'created_ms', ARGV[6],"
    " 'runtime_ms', '0')\n"
    "if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'submitter', ARGV[7]) end\n"
    "redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])\n"
    "job_event('Submitted', ARGV[1])\n"
    "return enqueue(KEYS[1], ARGV[1])\n";
/* clang-format on */

int ts_jobs_submit(ts_jobs *j, const char *type, int priority, const json_t *content,
                   const json_t *input, char id[TS_JOB_ID_LEN + 1], ts_err *err)
{
    return ts_jobs_submit_by(j, NULL, type, priority, content, input, id, err);
}

int ts_jobs_submit_by(ts_jobs *j, const char *submitter, const char *type, int priority,
                      const json_t *content, const json_t *input, char id[TS_JOB_ID_LEN + 1],
                      ts_err *err)
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
    char key[128], prio[16], now[32];
    job_key(key, sizeof(key), id, "");
    snprintf(prio, sizeof(prio), "%d", priority);
    snprintf(now, sizeof(now), "%lld", now_ms());
    char *content_text = json_dumps(content, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *input_text = json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!content_text || !input_text)
        abort();
    const char *keys[] = {key, KEY_ALL};
    const char *args[] = {
        id, type, prio, content_text, input_text, now, submitter ? submitter : ""};
    redisReply *r = NULL;
    int rc = eval(j, submit_script, 2, keys, 7, args, &r, err);
    free(content_text);
    free(input_text);
    if (rc)
        return ts_err_prefix(err, "submit job");
    freeReplyObject(r);
    return 0;
}

/* Orthanc's time format: 20261125T093541.990919 (UTC). */
static json_t *orthanc_time(long long ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[48];
    size_t n = strftime(buf, sizeof(buf), "%Y%m%dT%H%M%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%06lld", (ms % 1000) * 1000);
    return json_string(buf);
}

static const char *field(const redisReply *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

static long long field_ll(const redisReply *r, const char *name)
{
    const char *v = field(r, name);
    return v ? strtoll(v, NULL, 10) : 0;
}

int ts_jobs_get(ts_jobs *j, const char *id, json_t **out, ts_err *err)
{
    if (!ts_id_is_lower_uuid(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    char key[128];
    job_key(key, sizeof(key), id, "");
    const char *argv[] = {"HGETALL", key};
    redisReply *r = NULL;
    int rc = run(j, 2, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 || !field(r, "State")) {
        freeReplyObject(r);
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    }
    const char *state = field(r, "State");
    long long now = now_ms();
    long long runtime = field_ll(r, "runtime_ms");
    if (strcmp(state, "Running") == 0 && field(r, "started_ms"))
        runtime += now - field_ll(r, "started_ms");
    json_error_t jerr;
    const char *content_text = field(r, "Content");
    json_t *content = content_text ? json_loads(content_text, 0, &jerr) : NULL;
    json_t *o = json_object();
    if (field(r, "completed_ms"))
        json_object_set_new(o, "CompletionTime", orthanc_time(field_ll(r, "completed_ms")));
    json_object_set_new(o, "Content", content ? content : json_object());
    json_object_set_new(o, "CreationTime", orthanc_time(field_ll(r, "created_ms")));
    json_object_set_new(o, "EffectiveRuntime", json_real((double)runtime / 1000.0));
    json_object_set_new(o, "ErrorCode", json_integer(field_ll(r, "ErrorCode")));
    const char *desc = field(r, "ErrorDescription");
    json_object_set_new(o, "ErrorDescription", json_string(desc ? desc : "Success"));
    const char *details = field(r, "ErrorDetails");
    json_object_set_new(o, "ErrorDetails", json_string(details ? details : ""));
    json_object_set_new(o, "ID", json_string(id));
    json_object_set_new(o, "Priority", json_integer(field_ll(r, "Priority")));
    json_object_set_new(o, "Progress", json_integer(field_ll(r, "Progress")));
    json_object_set_new(o, "State", json_string(state));
    json_object_set_new(o, "Timestamp", orthanc_time(now));
    const char *type = field(r, "Type");
    json_object_set_new(o, "Type", json_string(type ? type : ""));
    freeReplyObject(r);
    *out = o;
    return 0;
}

int ts_jobs_state(ts_jobs *j, const char *id, char *state, size_t size, ts_err *err)
{
    if (!ts_id_is_lower_uuid(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    char key[128];
    job_key(key, sizeof(key), id, "");
    const char *argv[] = {"HGET", key, "State"};
    redisReply *r = NULL;
    int rc = run(j, 3, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    }
    snprintf(state, size, "%s", r->str);
    freeReplyObject(r);
    return 0;
}

int ts_jobs_submitter(ts_jobs *j, const char *id, char *out, size_t size, ts_err *err)
{
    if (!ts_id_is_lower_uuid(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    char key[128];
    job_key(key, sizeof(key), id, "");
    const char *argv[] = {"HMGET", key, "State", "submitter"};
    redisReply *r = NULL;
    int rc = run(j, 4, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        rc = ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    else
        snprintf(out, size, "%s",
                 r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "");
    freeReplyObject(r);
    return rc;
}

/* The ids of KEYS[1] whose job's submitter is ARGV[1]: one round trip, and
 * the history is bounded (TESSERA_JOBS_HISTORY) */
/* clang-format off */
static const char list_by_script[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  if redis.call('HGET', '" KEY_PREFIX "' .. id, 'submitter') == ARGV[1] then\n"
    "    out[#out + 1] = id\n"
    "  end\n"
    "end\n"
    "return out\n";
/* clang-format on */

int ts_jobs_list(ts_jobs *j, json_t **out, ts_err *err)
{
    return ts_jobs_list_by(j, NULL, out, err);
}

int ts_jobs_list_by(ts_jobs *j, const char *submitter, json_t **out, ts_err *err)
{
    const char *argv[] = {"ZRANGE", KEY_ALL, "0", "-1"};
    const char *keys[] = {KEY_ALL};
    redisReply *r = NULL;
    int rc = submitter ? eval(j, list_by_script, 1, keys, 1, &submitter, &r, err)
                       : run(j, 4, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return ts_err_set(err, TS_EIO, "redis ZRANGE: unexpected reply type %d", r->type);
    }
    *out = ts_redis_sorted_strings(r);
    freeReplyObject(r);
    return 0;
}

/* Drops the oldest finished jobs beyond ARGV[keep_arg] (KEYS[fin], KEYS[all]). */
/* clang-format off */
#define TRIM_LUA                                                                                   \
    "local function trim(fin, all, keep)\n"                                                        \
    "  local n = redis.call('ZCARD', fin) - keep\n"                                                \
    "  if n <= 0 then return end\n"                                                                \
    "  local old = redis.call('ZRANGE', fin, 0, n - 1)\n"                                          \
    "  for _, id in ipairs(old) do\n"                                                              \
    "    redis.call('DEL', '" KEY_PREFIX "' .. id, '" KEY_PREFIX "' .. id .. ':done',"             \
    "               '" KEY_PREFIX "' .. id .. ':lease')\n"                                         \
    "    redis.call('ZREM', all, id)\n"                                                            \
    "  end\n"                                                                                      \
    "  redis.call('ZREMRANGEBYRANK', fin, 0, n - 1)\n"                                             \
    "end\n"
/* clang-format on */

/* KEYS: job, pending, finished, all. ARGV: action, now, history */
/* clang-format off */
static const char control_script[] =
    TRIM_LUA ENQUEUE_LUA EVENT_LUA
    "local st = redis.call('HGET', KEYS[1], 'State')\n"
    "if not st then return 'unknown' end\n"
    "local a = ARGV[1]\n"
    "if (a == 'pause' or a == 'resubmit') and redis.call('HGET', KEYS[1], 'runner') == 'scp' then\n"
    "  return 'scp'\n"
    "end\n"
    "local function requeue()\n"
    "  redis.call('HSET', KEYS[1], 'State', 'Pending')\n"
    "  enqueue(KEYS[1], redis.call('HGET', KEYS[1], 'ID'))\n"
    "end\n"
    /* a job that waits leaves the queue at once (a running one leaves it when
     * its worker lets it go) */
    "if (a == 'cancel' or a == 'pause') and st == 'Pending' then\n"
    "  local e = redis.call('HGET', KEYS[1], 'entry')\n"
    "  if e then redis.call('ZREM', KEYS[2], e) end\n"
    "end\n"
    "if a == 'cancel' then\n"
    "  if st == 'Pending' or st == 'Running' or st == 'Paused' or st == 'Retry' then\n"
    "    redis.call('HSET', KEYS[1], 'State', 'Failure', 'ErrorCode', '" CANCELED_CODE "',"
    "               'ErrorDescription', 'Canceled job', 'ErrorDetails', '', 'completed_ms', ARGV[2])\n"
    "    redis.call('ZADD', KEYS[3], ARGV[2], redis.call('HGET', KEYS[1], 'ID'))\n"
    "    job_event('Failure', redis.call('HGET', KEYS[1], 'ID'))\n"
    "    trim(KEYS[3], KEYS[4], tonumber(ARGV[3]))\n"
    "  end\n"
    "  return 'ok'\n"
    "elseif a == 'pause' then\n"
    "  if st == 'Pending' or st == 'Running' or st == 'Retry' then\n"
    "    redis.call('HSET', KEYS[1], 'State', 'Paused')\n"
    "  end\n"
    "  return 'ok'\n"
    "elseif a == 'resume' then\n"
    "  if st ~= 'Paused' then return st end\n"
    "  requeue()\n"
    "  return 'ok'\n"
    "elseif a == 'resubmit' then\n"
    "  if st ~= 'Failure' then return st end\n"
    "  redis.call('HSET', KEYS[1], 'ErrorCode', '0', 'ErrorDescription', 'Success',"
    "             'ErrorDetails', '')\n"
    "  redis.call('HDEL', KEYS[1], 'completed_ms')\n"
    "  redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'ID'))\n"
    "  requeue()\n"
    "  return 'ok'\n"
    "end\n"
    "return 'unknown action'\n";
/* clang-format on */

int ts_jobs_control(ts_jobs *j, const char *id, ts_job_action action, int history, ts_err *err)
{
    static const char *const names[] = {"cancel", "pause", "resume", "resubmit"};
    if (!ts_id_is_lower_uuid(id))
        return ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    char key[128], now[32], hist[16];
    job_key(key, sizeof(key), id, "");
    snprintf(now, sizeof(now), "%lld", now_ms());
    snprintf(hist, sizeof(hist), "%d", history);
    const char *keys[] = {key, KEY_PENDING, KEY_FINISHED, KEY_ALL};
    const char *args[] = {names[action], now, hist};
    redisReply *r = NULL;
    int rc = eval(j, control_script, 4, keys, 3, args, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        rc = ts_err_set(err, TS_EIO, "redis: unexpected reply type %d", r->type);
    else if (strcmp(r->str, "unknown") == 0)
        rc = ts_err_set(err, TS_ENOTFOUND, "unknown job: %s", id);
    else if (strcmp(r->str, "scp") == 0)
        rc = ts_err_set(err, TS_EINVAL,
                        "cannot %s job %s: it is a C-MOVE served by a DICOM SCP, whose association "
                        "can be neither held nor replayed (cancel it instead)",
                        names[action], id);
    else if (strcmp(r->str, "ok") != 0)
        rc = ts_err_set(err, TS_EINVAL, "cannot %s job %s: its state is %s", names[action], id,
                        r->str);
    freeReplyObject(r);
    return rc;
}

/* ---- workers ------------------------------------------------------------- */

void ts_job_claim_clear(ts_job_claim *c)
{
    free(c->type);
    json_decref(c->input);
    json_decref(c->content);
    memset(c, 0, sizeof(*c));
}

/* Moves what waits in the queue of the versions before the priorities (a
 * stream) to the pending queue, then drops the stream. KEYS: stream. */
/* clang-format off */
static const char migrate_script[] =
    ENQUEUE_LUA
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "if redis.call('TYPE', KEYS[1]).ok ~= 'stream' then return 0 end\n"
    "local n = 0\n"
    "for _, ent in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do\n"
    "  local f, id = ent[2], nil\n"
    "  for i = 1, #f, 2 do if f[i] == 'job' then id = f[i + 1] end end\n"
    "  if id then\n"
    "    local job = '" KEY_PREFIX "' .. id\n"
    "    local st = redis.call('HGET', job, 'State')\n"
    /* a Running job's worker, if alive, keeps its lease: the new entry waits
     * for it to end (see start below) */
    "    if redis.call('HGET', job, 'entry') == ent[1] and (st == 'Pending' or st == 'Running') then\n"
    "      enqueue(job, id)\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";
/* clang-format on */

int ts_jobs_prepare(ts_jobs *j, ts_err *err)
{
    const char *keys[] = {KEY_LEGACY_QUEUE};
    redisReply *r = NULL;
    int rc = eval(j, migrate_script, 1, keys, 0, NULL, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    return 0;
}

/* Takes one job for worker ARGV[1]: first the job of a running entry whose
 * lease ran out (its worker died), then the first pending entry that can
 * start (after sweep_scp). KEYS: pending, running. ARGV: consumer, now,
 * lease_ms, and the ErrorCode and ErrorDescription of an SCP's dead job.
 * Returns {'run', id, entry, Type, Input, Content, was} or {'none'}; was is
 * 'taken' when another worker ran the job before. */
/* clang-format off */
static const char take_script[] =
    SWEEP_SCP_LUA
    "sweep_scp(ARGV[2], ARGV[4], ARGV[5])\n"
    "local function start(e, id, job, st)\n"
    "  redis.call('ZREM', KEYS[1], e)\n"
    "  redis.call('ZADD', KEYS[2], ARGV[2], e)\n"
    "  redis.call('SET', '" KEY_PREFIX "' .. id .. ':lease', ARGV[1], 'PX', ARGV[3])\n"
    "  redis.call('HSET', job, 'State', 'Running', 'owner', ARGV[1], 'started_ms', ARGV[2])\n"
    "  local f = redis.call('HMGET', job, 'Type', 'Input', 'Content')\n"
    "  return {'run', id, e, f[1], f[2], f[3], st == 'Running' and 'taken' or 'new'}\n"
    "end\n"
    "for _, e in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "  local id = string.sub(e, 18)\n"
    "  local job = '" KEY_PREFIX "' .. id\n"
    "  if redis.call('EXISTS', job .. ':lease') == 0 then\n"
    "    local st = redis.call('HGET', job, 'State')\n"
    "    if st == 'Running' and redis.call('HGET', job, 'entry') == e then\n"
    "      return start(e, id, job, st)\n"
    "    end\n"
    /* paused, canceled or finished after its worker died: nothing to run */
    "    redis.call('ZREM', KEYS[2], e)\n"
    "  end\n"
    "end\n"
    "for _, e in ipairs(redis.call('ZRANGE', KEYS[1], 0, " TAKE_SCAN " - 1)) do\n"
    "  local id = string.sub(e, 18)\n"
    "  local job = '" KEY_PREFIX "' .. id\n"
    "  local st = redis.call('HGET', job, 'State')\n"
    "  if not st or redis.call('HGET', job, 'entry') ~= e"
    "     or (st ~= 'Pending' and st ~= 'Running') then\n"
    "    redis.call('ZREM', KEYS[1], e)\n"
    "  else\n"
    /* a live worker still lets the job go after a pause or cancel that was
     * followed at once by a resume or resubmit: wait for it, so as not to run
     * the job twice at once */
    "    local l = redis.call('GET', job .. ':lease')\n"
    "    if not l or l == ARGV[1] then return start(e, id, job, st) end\n"
    "  end\n"
    "end\n"
    "return {'none'}\n";
/* clang-format on */

/* One look at the queue: 1 started (c filled), 0 nothing to run. */
static int take_once(ts_jobs *j, const char *consumer, int lease_ms, ts_job_claim *c, ts_err *err)
{
    char now[32], lms[16];
    snprintf(now, sizeof(now), "%lld", now_ms());
    snprintf(lms, sizeof(lms), "%d", lease_ms);
    char code[16];
    snprintf(code, sizeof(code), "%d", TS_OE_INTERNAL_ERROR);
    const char *keys[] = {KEY_PENDING, KEY_RUNNING};
    const char *args[] = {consumer, now, lms, code, ts_oe_description(TS_OE_INTERNAL_ERROR)};
    redisReply *r = NULL;
    int rc = eval(j, take_script, 2, keys, 5, args, &r, err);
    if (rc)
        return rc;
    int result = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 7 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "run") == 0 &&
        r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING) {
        json_error_t jerr;
        memset(c, 0, sizeof(*c));
        snprintf(c->id, sizeof(c->id), "%s", r->element[1]->str);
        snprintf(c->entry, sizeof(c->entry), "%s", r->element[2]->str);
        c->type = strdup(r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "");
        c->input = r->element[4]->type == REDIS_REPLY_STRING
                       ? json_loads(r->element[4]->str, 0, &jerr)
                       : NULL;
        c->content = r->element[5]->type == REDIS_REPLY_STRING
                         ? json_loads(r->element[5]->str, 0, &jerr)
                         : NULL;
        if (!c->type)
            abort();
        if (!c->input)
            c->input = json_object();
        if (!c->content)
            c->content = json_object();
        c->taken_over =
            r->element[6]->type == REDIS_REPLY_STRING && strcmp(r->element[6]->str, "taken") == 0;
        result = 1;
    }
    freeReplyObject(r);
    return result;
}

int ts_jobs_take(ts_jobs *j, const char *consumer, int block_ms, int lease_ms, ts_job_claim *c,
                 ts_err *err)
{
    int rc = take_once(j, consumer, lease_ms, c, err);
    if (rc != 0 || block_ms <= 0)
        return rc;
    /* nothing now: wait for an enqueue's wake-up (or block_ms), look again */
    char block[32];
    snprintf(block, sizeof(block), "%.3f", block_ms / 1000.0);
    const char *wait[] = {"BLPOP", KEY_WAKE, block};
    redisReply *r = NULL;
    rc = ts_redis_run(j->redis, 3, wait, block_ms, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    return take_once(j, consumer, lease_ms, c, err);
}

/* KEYS: job, lease. ARGV: consumer, lease_ms */
/* clang-format off */
static const char renew_script[] =
    "local st = redis.call('HGET', KEYS[1], 'State')\n"
    "if not st then return 'gone' end\n"
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 'lost' end\n"
    "local l = redis.call('GET', KEYS[2])\n"
    "if l and l ~= ARGV[1] then return 'lost' end\n"
    /* held until the worker releases the job, even paused or canceled: it may
     * still be sending, and a resume must not start a second sender meanwhile */
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
    "if st ~= 'Running' then return st end\n"
    "return 'Running'\n";
/* clang-format on */

int ts_jobs_renew(ts_jobs *j, const char *consumer, const ts_job_claim *c, int lease_ms,
                  ts_err *err)
{
    char key[128], lease[128], lms[16];
    job_key(key, sizeof(key), c->id, "");
    job_key(lease, sizeof(lease), c->id, ":lease");
    snprintf(lms, sizeof(lms), "%d", lease_ms);
    const char *keys[] = {key, lease};
    const char *args[] = {consumer, lms};
    redisReply *r = NULL;
    int rc = eval(j, renew_script, 2, keys, 2, args, &r, err);
    if (rc)
        return rc;
    int result = r->type == REDIS_REPLY_STRING && strcmp(r->str, "Running") == 0;
    freeReplyObject(r);
    return result;
}

/* KEYS: job. ARGV: progress, content */
/* clang-format off */
static const char progress_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'Progress', ARGV[1], 'Content', ARGV[2])\n"
    "return 1\n";
/* clang-format on */

int ts_jobs_progress(ts_jobs *j, const ts_job_claim *c, int progress, const json_t *content,
                     ts_err *err)
{
    char key[128], p[16];
    job_key(key, sizeof(key), c->id, "");
    snprintf(p, sizeof(p), "%d", progress);
    char *text = json_dumps(content, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        abort();
    const char *keys[] = {key};
    const char *args[] = {p, text};
    redisReply *r = NULL;
    int rc = eval(j, progress_script, 1, keys, 2, args, &r, err);
    free(text);
    if (rc == 0)
        freeReplyObject(r);
    return rc;
}

/* KEYS: job, done. ARGV: items */
/* clang-format off */
static const char mark_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "return redis.call('SADD', KEYS[2], unpack(ARGV))\n";
/* clang-format on */

int ts_jobs_mark_done(ts_jobs *j, const ts_job_claim *c, const char *const *items, size_t n,
                      ts_err *err)
{
    char key[128], done[128];
    job_key(key, sizeof(key), c->id, "");
    job_key(done, sizeof(done), c->id, ":done");
    const char *keys[] = {key, done};
    /* the script's arguments are bounded by eval(): a few at a time */
    for (size_t i = 0; i < n; i += 24) {
        size_t m = n - i < 24 ? n - i : 24;
        redisReply *r = NULL;
        int rc = eval(j, mark_script, 2, keys, (int)m, (const char **)items + i, &r, err);
        if (rc)
            return rc;
        freeReplyObject(r);
    }
    return 0;
}

int ts_jobs_done_items(ts_jobs *j, const ts_job_claim *c, json_t **out, ts_err *err)
{
    char done[128];
    job_key(done, sizeof(done), c->id, ":done");
    const char *argv[] = {"SMEMBERS", done};
    redisReply *r = NULL;
    int rc = run(j, 2, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return ts_err_set(err, TS_EIO, "redis SMEMBERS: unexpected reply type %d", r->type);
    }
    json_t *set = json_object();
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            json_object_set_new(set, r->element[i]->str, json_true());
    freeReplyObject(r);
    *out = set;
    return 0;
}

/* What finish and release share: the entry acknowledged, the lease dropped,
 * the run's time added. KEYS: job, lease, running. ARGV: consumer, entry, now */
/* clang-format off */
#define RELEASE_LUA                                                                                \
    "local function release()\n"                                                                   \
    "  redis.call('ZREM', KEYS[3], ARGV[2])\n"                                                    \
    "  if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end\n"             \
    "  if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then\n"                                  \
    "    local s = tonumber(redis.call('HGET', KEYS[1], 'started_ms') or ARGV[3])\n"               \
    "    redis.call('HINCRBY', KEYS[1], 'runtime_ms', tonumber(ARGV[3]) - s)\n"                    \
    "    redis.call('HDEL', KEYS[1], 'owner', 'started_ms')\n"                                     \
    "  end\n"                                                                                      \
    "end\n"
/* clang-format on */

/* clang-format off */
static const char release_script[] = RELEASE_LUA "release()\nreturn 1\n";
/* clang-format on */

/* Runs a script of KEYS job, lease, running and ARGV consumer, entry, now. */
static int eval_on_lease(ts_jobs *j, const char *script, const char *consumer,
                         const ts_job_claim *c, ts_err *err)
{
    char key[128], lease[128], now[32];
    job_key(key, sizeof(key), c->id, "");
    job_key(lease, sizeof(lease), c->id, ":lease");
    snprintf(now, sizeof(now), "%lld", now_ms());
    const char *keys[] = {key, lease, KEY_RUNNING};
    const char *args[] = {consumer, c->entry, now};
    redisReply *r = NULL;
    int rc = eval(j, script, 3, keys, 3, args, &r, err);
    if (rc == 0)
        freeReplyObject(r);
    return rc;
}

int ts_jobs_release(ts_jobs *j, const char *consumer, const ts_job_claim *c, ts_err *err)
{
    return eval_on_lease(j, release_script, consumer, c, err);
}

/* KEYS: job, lease, running. ARGV: consumer, entry, now */
/* clang-format off */
static const char requeue_script[] =
    RELEASE_LUA ENQUEUE_LUA
    "local mine = redis.call('HGET', KEYS[1], 'owner') == ARGV[1]\n"
    "local st = redis.call('HGET', KEYS[1], 'State')\n"
    "release()\n"
    "if not mine or st ~= 'Running' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'State', 'Pending')\n"
    "enqueue(KEYS[1], redis.call('HGET', KEYS[1], 'ID'))\n"
    "return 1\n";
/* clang-format on */

int ts_jobs_requeue(ts_jobs *j, const char *consumer, const ts_job_claim *c, ts_err *err)
{
    return eval_on_lease(j, requeue_script, consumer, c, err);
}

/* KEYS: job, lease, running, finished, all. ARGV: consumer, entry, now, code,
 * description, details, content, history */
/* clang-format off */
static const char finish_script[] =
    RELEASE_LUA TRIM_LUA EVENT_LUA
    "if redis.call('HGET', KEYS[1], 'State') ~= 'Running'"
    "   or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then\n"
    "  release()\n"
    "  return 0\n"
    "end\n"
    "release()\n"
    "local ok = ARGV[4] == '0'\n"
    "redis.call('HSET', KEYS[1], 'State', ok and 'Success' or 'Failure', 'ErrorCode', ARGV[4],"
    "           'ErrorDescription', ARGV[5], 'ErrorDetails', ARGV[6], 'Content', ARGV[7],"
    "           'completed_ms', ARGV[3])\n"
    "if ok then redis.call('HSET', KEYS[1], 'Progress', '100') end\n"
    "redis.call('ZADD', KEYS[4], ARGV[3], redis.call('HGET', KEYS[1], 'ID'))\n"
    "job_event(ok and 'Success' or 'Failure', redis.call('HGET', KEYS[1], 'ID'))\n"
    "trim(KEYS[4], KEYS[5], tonumber(ARGV[8]))\n"
    "return 1\n";
/* clang-format on */

int ts_jobs_finish(ts_jobs *j, const char *consumer, const ts_job_claim *c, int error_code,
                   const char *error_description, const char *details, const json_t *content,
                   int history, ts_err *err)
{
    char key[128], lease[128], now[32], code[16], hist[16];
    job_key(key, sizeof(key), c->id, "");
    job_key(lease, sizeof(lease), c->id, ":lease");
    snprintf(now, sizeof(now), "%lld", now_ms());
    snprintf(code, sizeof(code), "%d", error_code);
    snprintf(hist, sizeof(hist), "%d", history);
    char *text = json_dumps(content, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        abort();
    const char *keys[] = {key, lease, KEY_RUNNING, KEY_FINISHED, KEY_ALL};
    if (error_code == 0) {
        error_description = "Success";
        details = "";
    }
    const char *args[] = {consumer,
                          c->entry,
                          now,
                          code,
                          error_description ? error_description : "",
                          details ? details : "",
                          text,
                          hist};
    redisReply *r = NULL;
    int rc = eval(j, finish_script, 5, keys, 8, args, &r, err);
    free(text);
    if (rc == 0)
        freeReplyObject(r);
    return rc;
}

/* KEYS: job, lease, all. ARGV: id, type, content, now, owner, lease_ms, and
 * the ErrorCode and ErrorDescription of an SCP's dead job */
/* clang-format off */
static const char begin_scp_script[] =
    SWEEP_SCP_LUA
    "sweep_scp(ARGV[4], ARGV[7], ARGV[8])\n"
    "redis.call('HSET', KEYS[1], 'ID', ARGV[1], 'Type', ARGV[2], 'State', 'Running',"
    " 'Priority', '0', 'Progress', '0', 'ErrorCode', '0', 'ErrorDescription', 'Success',"
    " 'ErrorDetails', '', 'Content', ARGV[3], 'Input', '{}', 'created_ms', ARGV[4],"
    " 'runtime_ms', '0', 'started_ms', ARGV[4], 'owner', ARGV[5], 'runner', 'scp', 'entry', '')\n"
    "redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])\n"
    "redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])\n"
    "job_event('Submitted', ARGV[1])\n"
    "redis.call('ZADD', '" KEY_SCP "', ARGV[4], ARGV[1])\n"
    "return 1\n";
/* clang-format on */

int ts_jobs_begin_scp(ts_jobs *j, const char *type, const char *owner, int lease_ms,
                      const json_t *content, ts_job_claim *c, ts_err *err)
{
    memset(c, 0, sizeof(*c));
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, c->id);
    char key[128], lease[128], now[32], lms[16], code[16];
    job_key(key, sizeof(key), c->id, "");
    job_key(lease, sizeof(lease), c->id, ":lease");
    snprintf(now, sizeof(now), "%lld", now_ms());
    snprintf(lms, sizeof(lms), "%d", lease_ms);
    snprintf(code, sizeof(code), "%d", TS_OE_INTERNAL_ERROR);
    char *text = json_dumps(content, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        abort();
    const char *keys[] = {key, lease, KEY_ALL};
    const char *args[] = {c->id, type, text, now,
                          owner, lms,  code, ts_oe_description(TS_OE_INTERNAL_ERROR)};
    redisReply *r = NULL;
    int rc = eval(j, begin_scp_script, 3, keys, 8, args, &r, err);
    free(text);
    if (rc)
        return ts_err_prefix(err, "register the C-MOVE job");
    freeReplyObject(r);
    c->type = strdup(type);
    c->input = json_object();
    c->content = json_deep_copy(content);
    if (!c->type || !c->content)
        abort();
    return 0;
}

int ts_jobs_heartbeat(ts_jobs *j, const char *process, ts_err *err)
{
    char now[32];
    snprintf(now, sizeof(now), "%lld", now_ms());
    const char *argv[] = {"ZADD", KEY_PROCESSES, now, process};
    redisReply *r = NULL;
    int rc = run(j, 4, argv, &r, err);
    if (rc)
        return rc;
    freeReplyObject(r);
    /* forget processes silent for a day */
    char old[32];
    snprintf(old, sizeof(old), "%lld", now_ms() - 86400000LL);
    const char *trim[] = {"ZREMRANGEBYSCORE", KEY_PROCESSES, "-inf", old};
    rc = run(j, 4, trim, &r, err);
    if (rc == 0)
        freeReplyObject(r);
    return rc;
}

int ts_jobs_live_processes(ts_jobs *j, int within_ms, long long *count, ts_err *err)
{
    char since[32];
    snprintf(since, sizeof(since), "%lld", now_ms() - within_ms);
    const char *argv[] = {"ZCOUNT", KEY_PROCESSES, since, "+inf"};
    redisReply *r = NULL;
    int rc = run(j, 4, argv, &r, err);
    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return ts_err_set(err, TS_EIO, "redis ZCOUNT: unexpected reply type %d", r->type);
    }
    *count = r->integer;
    freeReplyObject(r);
    return 0;
}

/* ---- the job events of the Lua scripts ----------------------------------- */

int ts_jobs_events(ts_jobs *j, size_t max, json_t **out, ts_err *err)
{
    *out = NULL;
    char stop[32];
    snprintf(stop, sizeof(stop), "%zu", max ? max - 1 : 0);
    const char *argv[] = {"LRANGE", KEY_EVENTS, "0", stop};
    redisReply *r = NULL;
    int rc = run(j, 4, argv, &r, err);
    if (rc)
        return ts_err_prefix(err, "read job events");
    json_t *list = json_array();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long seq;
        char kind[16], id[64];
        if (e->type == REDIS_REPLY_STRING && sscanf(e->str, "%lld %15s %63s", &seq, kind, id) == 3)
            json_array_append_new(
                list, json_pack("{s:I, s:s, s:s}", "Seq", (json_int_t)seq, "Kind", kind, "ID", id));
    }
    freeReplyObject(r);
    *out = list;
    return 0;
}

/* Drops the head entries numbered up to ARGV[1] (another reader may have
 * dropped some already: nothing newer goes). */
static const char events_ack_script[] =
    "while true do\n"
    "  local e = redis.call('LINDEX', KEYS[1], 0)\n"
    "  if not e or tonumber(string.match(e, '^%d+')) > tonumber(ARGV[1]) then return 1 end\n"
    "  redis.call('LPOP', KEYS[1])\n"
    "end\n";

int ts_jobs_events_ack(ts_jobs *j, long long upto, ts_err *err)
{
    char n[32];
    snprintf(n, sizeof(n), "%lld", upto);
    const char *keys[] = {KEY_EVENTS};
    const char *args[] = {n};
    redisReply *r = NULL;
    int rc = eval(j, events_ack_script, 1, keys, 1, args, &r, err);
    if (rc)
        return ts_err_prefix(err, "acknowledge job events");
    freeReplyObject(r);
    return 0;
}
