#include "domain/retrieve.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/orthanc_errors.h"
#include "base/xalloc.h"
#include "domain/jobs.h"

void ts_retrieve_list_add(ts_retrieve_list *l, const char *sop_uid, const char *file)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->sop_uids = xrealloc(l->sop_uids, l->cap * sizeof(*l->sop_uids));
        l->files = xrealloc(l->files, l->cap * sizeof(*l->files));
    }
    l->sop_uids[l->n] = xstrdup(sop_uid);
    l->files[l->n] = xstrdup(file);
    l->n++;
}

void ts_retrieve_list_clear(ts_retrieve_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->sop_uids[i]);
        free(l->files[i]);
    }
    free(l->sop_uids);
    free(l->files);
    memset(l, 0, sizeof(*l));
}

/* ---- the destination -------------------------------------------------------- */

static const ts_db_stmt find_destination = {
    "retrieve_find_destination",
    "SELECT host, port, use_dicom_tls FROM modalities WHERE aet = $1 AND allow_move"
    " ORDER BY name LIMIT 1",
    1};

typedef struct destination {
    const char *aet;
    char host[256];
    int port;
    bool tls; /* UseDicomTls */
    bool found;
} destination;

static int destination_txn(ts_db *db, void *arg, ts_err *err)
{
    destination *d = arg;
    const char *params[] = {d->aet};
    PGresult *res;
    int rc = ts_db_exec(db, &find_destination, params, &res, err);
    if (rc)
        return rc;
    d->found = PQntuples(res) > 0;
    if (d->found) {
        snprintf(d->host, sizeof(d->host), "%s", PQgetvalue(res, 0, 0));
        d->port = atoi(PQgetvalue(res, 0, 1));
        d->tls = !strcmp(PQgetvalue(res, 0, 2), "t");
    }
    PQclear(res);
    return 0;
}

/* ---- counting sub-operations ------------------------------------------------- */

static void add_failed_uid(char **list, size_t *len, const char *uid)
{
    size_t n = strlen(uid);
    char *l = xrealloc(*list, *len + n + 2);
    if (*len)
        l[(*len)++] = '\\';
    memcpy(l + *len, uid, n + 1);
    *len += n;
    *list = l;
}

/* Counts one sub-operation's status in res (the failed list too). */
static void count_status(ts_dicom_move_result *res, size_t *failed_len, uint16_t st,
                         const char *sop_uid)
{
    if (st == 0)
        res->completed++;
    else if ((st & 0xf000) == 0xb000 || st == 0x0107 || st == 0x0116)
        res->warning++;
    else {
        res->failed++;
        add_failed_uid(&res->failed_uids, failed_len, sop_uid);
    }
}

static uint16_t final_status(const ts_dicom_move_result *res)
{
    if (res->failed && !res->completed && !res->warning)
        return TS_QR_UNABLE_SUBOPS;
    if (res->failed || res->warning)
        return TS_QR_SOME_FAILED;
    return TS_QR_SUCCESS;
}

/* ---- the C-MOVE's entry in /jobs ---------------------------------------------- */

/* Orthanc 1.10.1 (SynchronousCMove false) shows an incoming C-MOVE as a
 * DicomModalityStore job with this Content. Every call is best effort: once
 * Redis fails, the C-MOVE goes on without its entry. */
typedef struct move_job {
    ts_jobs *jobs; /* NULL: no entry */
    ts_job_claim claim;
    char owner[128];
    int lease_ms;
    long long last_ms; /* of the last renewal */
    json_t *content;
} move_job;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void move_job_drop(move_job *mj, const char *what, const ts_err *err)
{
    ts_warn("C-MOVE: its /jobs entry is given up (the C-MOVE goes on)", "step=%s error=\"%s\"",
            what, err->msg);
    ts_jobs_free(mj->jobs);
    mj->jobs = NULL;
}

static void move_job_begin(move_job *mj, const ts_retrieve *r, const ts_dicom_assoc *assoc,
                           const ts_dicom_move_rq *rq, size_t count)
{
    memset(mj, 0, sizeof(*mj));
    if (!r->jobs_url || !*r->jobs_url)
        return;
    ts_err err;
    ts_err_clear(&err);
    /* a sub-operation may take up to the DICOM timeout: the lease outlives it */
    mj->lease_ms = (r->timeout_s * 2 + 10) * 1000;
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(mj->owner, sizeof(mj->owner), "scp:%s:%ld", host, (long)getpid());
    mj->content =
        json_pack("{s:s, s:i, s:I, s:s, s:s, s:I, s:s}", "Description", "C-MOVE",
                  "FailedInstancesCount", 0, "InstancesCount", (json_int_t)count, "LocalAet",
                  r->our_aet, "MoveOriginatorAET", assoc->calling_aet, "MoveOriginatorID",
                  (json_int_t)rq->message_id, "RemoteAet", rq->destination);
    if (!mj->content)
        abort();
    /* a short timeout: a Redis that does not answer must not hold up the C-MOVE */
    if (ts_jobs_connect(r->jobs_url, 1000, &mj->jobs, &err)) {
        mj->jobs = NULL;
        ts_warn("C-MOVE: no /jobs entry, the job registry is unreachable (the C-MOVE goes on)",
                "error=\"%s\"", err.msg);
        return;
    }
    if (ts_jobs_begin_scp(mj->jobs, "DicomModalityStore", mj->owner, mj->lease_ms, mj->content,
                          &mj->claim, &err)) {
        move_job_drop(mj, "register", &err);
        return;
    }
    mj->last_ms = mono_ms();
    ts_info("C-MOVE job", "job=%s calling_aet=%s destination=%s count=%zu", mj->claim.id,
            assoc->calling_aet, rq->destination, count);
}

/* Progress after a sub-operation; false when the job was canceled from REST.
 * At most five Redis round trips a second, and always the last one. */
static bool move_job_step(move_job *mj, const ts_dicom_move_result *res, size_t total, bool last)
{
    if (!mj->jobs)
        return true;
    long long now = mono_ms();
    if (!last && now - mj->last_ms < 200)
        return true;
    mj->last_ms = now;
    ts_err err;
    ts_err_clear(&err);
    int rc = ts_jobs_renew(mj->jobs, mj->owner, &mj->claim, mj->lease_ms, &err);
    if (rc == 0) {
        ts_info("C-MOVE canceled through its job", "job=%s completed=%u", mj->claim.id,
                res->completed);
        return false;
    }
    if (rc < 0) {
        move_job_drop(mj, "renew", &err);
        return true;
    }
    unsigned done = res->completed + res->failed + res->warning;
    json_object_set_new(mj->content, "FailedInstancesCount", json_integer(res->failed));
    if (ts_jobs_progress(mj->jobs, &mj->claim, total ? (int)(done * 100 / total) : 100, mj->content,
                         &err))
        move_job_drop(mj, "progress", &err);
    return true;
}

/* Ends the entry: Success when every sub-operation succeeded, Failure
 * otherwise (Orthanc's DicomModalityStore fails on a failed instance);
 * canceled_by_rest: the job is Failure already, only let it go. */
static void move_job_end(move_job *mj, const ts_retrieve *r, const ts_dicom_move_result *res,
                         uint16_t status, bool canceled_by_rest, const char *comment)
{
    if (mj->jobs) {
        ts_err err;
        ts_err_clear(&err);
        int rc;
        json_object_set_new(mj->content, "FailedInstancesCount", json_integer(res->failed));
        if (canceled_by_rest) {
            rc = ts_jobs_release(mj->jobs, mj->owner, &mj->claim, &err);
        } else if (status == TS_QR_SUCCESS) {
            rc = ts_jobs_finish(mj->jobs, mj->owner, &mj->claim, 0, NULL, NULL, mj->content,
                                r->jobs_history, &err);
        } else {
            char details[512];
            ts_oe code = TS_OE_NETWORK_PROTOCOL;
            if (status == TS_QR_CANCEL) {
                code = TS_OE_CANCELED_JOB;
                snprintf(details, sizeof(details), "the move originator canceled the C-MOVE");
            } else {
                snprintf(details, sizeof(details),
                         "C-MOVE to %s: status 0x%04x, %u completed, %u failed, %u warning%s%s",
                         json_string_value(json_object_get(mj->content, "RemoteAet")), status,
                         res->completed, res->failed, res->warning, *comment ? ": " : "", comment);
            }
            rc = ts_jobs_finish(mj->jobs, mj->owner, &mj->claim, code, ts_oe_description(code),
                                details, mj->content, r->jobs_history, &err);
        }
        if (rc)
            ts_warn("C-MOVE: cannot end its /jobs entry", "job=%s error=\"%s\"", mj->claim.id,
                    err.msg);
        ts_jobs_free(mj->jobs);
    }
    ts_job_claim_clear(&mj->claim);
    json_decref(mj->content);
    memset(mj, 0, sizeof(*mj));
}

/* ---- C-MOVE ------------------------------------------------------------------- */

typedef struct move_progress {
    ts_dicom_retrieve_out *out;
    ts_dicom_move_result *res;
    const ts_retrieve_list *list;
    const size_t *items; /* per path: its instance in list */
    bool *reported;      /* per path */
    size_t *failed_len;
    unsigned remaining;
    bool cancelled; /* by the client (C-CANCEL) */
    move_job *job;
    bool job_cancelled; /* from REST, through the job */
} move_progress;

/* After each file sent to the C-MOVE destination: count it, tell the client,
 * stop if it cancelled. */
static bool on_move_progress(void *user, size_t i, uint16_t status)
{
    move_progress *p = user;
    ts_err err;
    p->reported[i] = true;
    count_status(p->res, p->failed_len, status, p->list->sop_uids[p->items[i]]);
    p->remaining--;
    int rc = ts_dicom_retrieve_pending(p->out, p->remaining, p->res, &err);
    if (rc == TS_ECANCELED)
        p->cancelled = true;
    if (rc == 0 && !move_job_step(p->job, p->res, p->list->n, p->remaining == 0)) {
        p->job_cancelled = true;
        return false;
    }
    return rc == 0;
}

static uint16_t retrieve_move(const ts_retrieve *r, const ts_dicom_grant *grant,
                              const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                              ts_dicom_retrieve_out *rout, ts_dicom_move_result *out, char *comment,
                              size_t comment_size)
{
    ts_retrieve_list list = {0};
    char **paths = NULL;
    uint16_t *statuses = NULL;
    size_t *items = NULL;
    bool *reported = NULL;
    size_t npaths = 0;
    size_t failed_len = 0;
    bool job_cancelled = false;
    move_job job = {0};
    ts_err err;
    ts_err_clear(&err);

    destination dest = {.aet = rq->destination};
    if (ts_db_transaction(r->db, TS_DB_READ, destination_txn, &dest, &err)) {
        snprintf(comment, comment_size, "%s", err.msg);
        ts_warn("C-MOVE failed", "calling_aet=%s error=\"%s\"", assoc->calling_aet, err.msg);
        return TS_QR_OUT_OF_RESOURCES;
    }
    if (!dest.found) {
        snprintf(comment, comment_size, "move destination '%s' is not registered", rq->destination);
        ts_warn("C-MOVE refused: unknown destination", "calling_aet=%s destination=%s status=a801",
                assoc->calling_aet, rq->destination);
        return TS_QR_DEST_UNKNOWN;
    }
    uint16_t status = r->find(r->user, assoc, rq, "move", grant, &list, comment, comment_size);
    if (status != TS_QR_SUCCESS)
        goto done;
    move_job_begin(&job, r, assoc, rq, list.n);
    paths = xcalloc(list.n + 1, sizeof(*paths));
    statuses = xcalloc(list.n + 1, sizeof(*statuses));
    items = xcalloc(list.n + 1, sizeof(*items));
    reported = xcalloc(list.n + 1, sizeof(*reported));
    for (size_t i = 0; i < list.n; i++) {
        char path[4096];
        if (!*list.files[i] || ts_store_path(r->store, list.files[i], path, sizeof(path), &err)) {
            count_status(out, &failed_len, TS_QR_UNABLE_SUBOPS, list.sop_uids[i]);
            continue;
        }
        paths[npaths] = xstrdup(path);
        items[npaths++] = i;
    }
    if (npaths) {
        ts_dicom_peer peer = {.our_aet = r->our_aet,
                              .aet = rq->destination,
                              .host = dest.host,
                              .port = dest.port,
                              .timeout_s = r->timeout_s,
                              .move_originator_aet = assoc->calling_aet,
                              .move_originator_msg_id = rq->message_id,
                              .tls = dest.tls};
        move_progress prog = {.out = rout,
                              .res = out,
                              .list = &list,
                              .items = items,
                              .reported = reported,
                              .failed_len = &failed_len,
                              .remaining = (unsigned)npaths,
                              .job = &job};
        int rc = ts_dicom_store_files_progress(&peer, (const char *const *)paths, npaths, statuses,
                                               on_move_progress, &prog, &err);
        job_cancelled = prog.job_cancelled;
        if (rc && !prog.cancelled && !prog.job_cancelled) {
            ts_warn("C-MOVE: cannot send to the destination", "destination=%s error=\"%s\"",
                    rq->destination, err.msg);
            snprintf(comment, comment_size, "%s", err.msg);
        }
        if (prog.cancelled || prog.job_cancelled) {
            ts_info("C-MOVE cancelled", "calling_aet=%s destination=%s completed=%u by=%s",
                    assoc->calling_aet, rq->destination, out->completed,
                    prog.job_cancelled ? "rest" : "client");
            status = TS_QR_CANCEL;
            goto done;
        }
        /* files never tried (unreadable, or the association broke first) */
        for (size_t i = 0; i < npaths; i++)
            if (!reported[i])
                count_status(out, &failed_len, statuses[i], list.sop_uids[items[i]]);
    }
    status = final_status(out);
    ts_info("C-MOVE", "calling_aet=%s destination=%s level=%s completed=%u failed=%u warning=%u",
            assoc->calling_aet, rq->destination, rq->level, out->completed, out->failed,
            out->warning);
done:
    if (job.content) /* made once find named the instances */
        move_job_end(&job, r, out, status, job_cancelled, comment);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    free(statuses);
    free(items);
    free(reported);
    ts_retrieve_list_clear(&list);
    return status;
}

/* ---- C-GET -------------------------------------------------------------------- */

static uint16_t retrieve_get(const ts_retrieve *r, const ts_dicom_grant *grant,
                             const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                             ts_dicom_retrieve_out *get, ts_dicom_move_result *out, char *comment,
                             size_t comment_size)
{
    ts_retrieve_list list = {0};
    ts_err err;
    ts_err_clear(&err);
    uint16_t status = r->find(r->user, assoc, rq, "get", grant, &list, comment, comment_size);
    if (status != TS_QR_SUCCESS)
        goto done;
    for (size_t i = 0; i < list.n; i++) {
        char path[4096] = "";
        if (*list.files[i] && ts_store_path(r->store, list.files[i], path, sizeof(path), &err))
            path[0] = '\0'; /* counted as a failed sub-operation */
        int rc =
            ts_dicom_get_send(get, path, list.sop_uids[i], (unsigned)(list.n - i - 1), out, &err);
        if (rc == TS_ECANCELED) {
            ts_info("C-GET cancelled", "calling_aet=%s completed=%u", assoc->calling_aet,
                    out->completed);
            status = TS_QR_CANCEL;
            goto done;
        }
        if (rc) {
            ts_warn("C-GET stopped", "calling_aet=%s error=\"%s\"", assoc->calling_aet, err.msg);
            status = TS_QR_UNABLE_TO_PROCESS;
            goto done;
        }
    }
    status = final_status(out);
    ts_info("C-GET", "calling_aet=%s level=%s completed=%u failed=%u warning=%u",
            assoc->calling_aet, rq->level, out->completed, out->failed, out->warning);
done:
    ts_retrieve_list_clear(&list);
    return status;
}

/* ---- access: the calling AE's grant, and the audit of each request -------------- */

static void audit_retrieve(const ts_retrieve *r, const ts_dicom_assoc *assoc, ts_dicom_op op,
                           const ts_dicom_move_rq *rq, uint16_t status)
{
    char resources[1024], request[128];
    ts_dicom_access_keys(rq->keys, rq->nkeys, resources, sizeof(resources));
    if (op == TS_DICOM_OP_MOVE)
        snprintf(request, sizeof(request), "%.16s to %.16s", rq->level, rq->destination);
    else
        snprintf(request, sizeof(request), "%.16s", rq->level);
    ts_dicom_access_audit(r->access, assoc, op, request, resources, status);
}

typedef uint16_t (*retrieve_fn)(const ts_retrieve *r, const ts_dicom_grant *grant,
                                const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                                ts_dicom_retrieve_out *o, ts_dicom_move_result *out, char *comment,
                                size_t comment_size);

/* A C-MOVE or C-GET: the calling AE's grant checked first, the request audited after */
static uint16_t checked(const ts_retrieve *r, ts_dicom_op op, retrieve_fn run,
                        const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                        ts_dicom_retrieve_out *o, ts_dicom_move_result *out, char *comment,
                        size_t comment_size)
{
    ts_dicom_grant grant;
    uint16_t status = ts_dicom_access_check(r->access, assoc, op, &grant, comment, comment_size);
    if (status == TS_QR_SUCCESS)
        status = run(r, &grant, assoc, rq, o, out, comment, comment_size);
    audit_retrieve(r, assoc, op, rq, status);
    ts_dicom_grant_clear(&grant);
    return status;
}

uint16_t ts_retrieve_move(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                          ts_dicom_retrieve_out *rout, ts_dicom_move_result *out, char *comment,
                          size_t comment_size)
{
    return checked(user, TS_DICOM_OP_MOVE, retrieve_move, assoc, rq, rout, out, comment,
                   comment_size);
}

uint16_t ts_retrieve_get(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                         ts_dicom_retrieve_out *get, ts_dicom_move_result *out, char *comment,
                         size_t comment_size)
{
    return checked(user, TS_DICOM_OP_GET, retrieve_get, assoc, rq, get, out, comment, comment_size);
}
