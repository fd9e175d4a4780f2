/* ResourceModification (see jobs_modify.h). */
#include "jobs_modify.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/parallel.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "dicom/dicom_modify.h"
#include "domain/delete.h"
#include "tessera.pb-c.h"

#define CHUNK 64

/* one instance of a merge's target study, whose patient and study tags the copies take */
static const ts_db_stmt target_instance = {
    "modify_target_instance",
    "SELECT i.public_id FROM resources s JOIN resources se ON se.parent_id = s.id"
    " JOIN resources i ON i.parent_id = se.id"
    " WHERE s.public_id = $1 AND s.level = 1 ORDER BY i.id LIMIT 1",
    1};

typedef struct one_q {
    const char *id;
    char *out;
} one_q;

static int one_txn(ts_db *db, void *arg, ts_err *err)
{
    one_q *q = arg;
    const char *params[] = {q->id};
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &target_instance, params, &res, err);
    if (rc == 0 && PQntuples(res) == 1)
        q->out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* MergeStudy: the target's patient and study modules for every copy. false
 * after jobs_fail. */
static bool merge_target(jobs_worker *w, ts_modify *m, const char *target, jobs_outcome *out)
{
    one_q q = {target, NULL};
    ts_err err;
    char details[200];
    if (ts_db_transaction(w->svc->db, TS_DB_READ, one_txn, &q, &err)) {
        jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
        return false;
    }
    char *uuid = NULL;
    bool ok = false;
    char path[4096];
    ts_dicom *d = NULL;
    if (q.out) {
        const char *ids[] = {q.out};
        if (jobs_instance_files(w, ids, 1, &uuid, &err)) {
            jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
            goto done;
        }
    }
    if (!uuid || ts_store_path(w->svc->store, uuid, path, sizeof(path), &err) ||
        ts_dicom_open_file(path, &d, &err)) {
        snprintf(details, sizeof(details), "the target study %s is gone", target);
        jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, details);
        goto done;
    }
    for (int module = 0; module < 2; module++) {
        size_t n;
        const uint32_t *tags = ts_dicom_module_tags(module, &n);
        ts_modify_copy_from(m, d, tags, n);
    }
    ok = true;
done:
    ts_dicom_free(d);
    free(uuid);
    free(q.out);
    return ok;
}

static const char *const LEVEL_TYPE[] = {"Patient", "Study", "Series", "Instance"};
static const char *const LEVEL_PLURAL[] = {"patients", "studies", "series", "instances"};

/* Orthanc's metadata of copies, for a whole chunk in one statement: set (or
 * overwritten) without a revision check; a parent shared by several copies is
 * written once (ON CONFLICT may not touch a row twice) */
static const ts_db_stmt put_metadata = {
    "modify_put_metadata",
    "INSERT INTO metadata (resource_id, name, value)"
    " SELECT DISTINCT ON (r.id) r.id, $4, u.v"
    " FROM unnest($1::text[], $2::smallint[], $3::text[]) AS u(pid, lvl, v)"
    " JOIN resources r ON r.public_id = u.pid AND r.level = u.lvl"
    " ORDER BY r.id"
    " ON CONFLICT (resource_id, name) DO UPDATE SET value = EXCLUDED.value,"
    " revision = metadata.revision + 1"
    " WHERE metadata.value IS DISTINCT FROM EXCLUDED.value",
    4};

typedef struct meta_q {
    const char *name;
    char *ids, *levels, *from; /* PostgreSQL array literals */
} meta_q;

static int meta_txn(ts_db *db, void *arg, ts_err *err)
{
    meta_q *q = arg;
    const char *params[] = {q->ids, q->levels, q->from, q->name};
    PGresult *res = NULL;
    int rc = ts_db_exec(db, &put_metadata, params, &res, err);
    PQclear(res);
    return rc;
}

static ts_oe store_status_oe(int status)
{
    switch (status) {
    case TESSERA__STORE_STATUS__STORE_INVALID_DICOM:
        return TS_OE_BAD_FILE_FORMAT;
    case TESSERA__STORE_STATUS__STORE_DB_UNAVAILABLE:
        return TS_OE_DATABASE_UNAVAILABLE;
    case TESSERA__STORE_STATUS__STORE_STORAGE_ERROR:
        return TS_OE_FILE_STORAGE_CANNOT_WRITE;
    case TESSERA__STORE_STATUS__STORE_TOO_LARGE:
        return TS_OE_BAD_REQUEST;
    default:
        return TS_OE_INTERNAL_ERROR;
    }
}

/* A copy being made: its temporary file, then ingest's answer. */
typedef struct copy_result {
    bool ok;         /* stored (or already was) */
    char temp[4096]; /* the modified file under the storage area's tmp/ ("" none) */
    ts_ids copy, orig;
    jobs_outcome out; /* why not, when !ok (interrupted: paused, canceled, stopping) */
} copy_result;

/* One instance: its modified copy written to a temporary file (r->temp) and
 * the original's ids in r->orig. false after jobs_fail. */
static bool make_copy(jobs_worker *w, ts_job_claim *c, const ts_modify *m, const char *transcode,
                      const char *id, const char *file, copy_result *r)
{
    ts_err err;
    ts_oe oe = TS_OE_SUCCESS;
    ts_dicom *d = NULL;
    char details[600];
    bool ok = false;
    ts_dicom_identity identity = {0};
    if (ts_dicom_open_file(file, &d, &err) || ts_dicom_identity_get(d, &identity, &err)) {
        snprintf(details, sizeof(details), "instance %s: %s", id, err.msg);
        jobs_fail(&r->out, TS_OE_BAD_FILE_FORMAT, details);
        goto out;
    }
    r->orig = identity.ids;
    if (ts_modify_apply(m, d, &oe, &err)) {
        snprintf(details, sizeof(details), "instance %s: %s", id, err.msg);
        jobs_fail(&r->out, oe, details);
        goto out;
    }
    /* as Orthanc: lossy allowed but the copy keeps its new SOPInstanceUID (the
     * references between copies hold), and a copy that cannot be converted is
     * stored in its own syntax */
    if (transcode && ts_dicom_transcode(d, transcode, TS_TRANSCODE_ALLOW_LOSSY, true, &err))
        ts_warn("cannot transcode instance, keeping its transfer syntax",
                "job=%s instance=%s to=%s error=\"%s\"", c->id, id, transcode, err.msg);
    if (ts_store_temp_path(w->svc->store, r->temp, sizeof(r->temp), &err) ||
        ts_dicom_save_file(d, r->temp, &err)) {
        jobs_fail(&r->out, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        if (r->temp[0])
            unlink(r->temp);
        r->temp[0] = '\0';
        goto out;
    }
    ok = true;
out:
    ts_dicom_identity_clear(&identity);
    ts_dicom_free(d);
    return ok;
}

/* The chunk's temporary files handed to ingest in one StoreBatchRequest (the
 * one write path: ingest parses, places, fsyncs and indexes each); each
 * result gets its copy's ids or its failure. The temporary files are gone
 * afterwards in every case. */
static void store_copies(jobs_worker *w, copy_result *res, size_t n)
{
    Tessera__StoreRequest items[CHUNK], *ptrs[CHUNK];
    size_t at[CHUNK], nitems = 0;
    for (size_t k = 0; k < n; k++) {
        if (!res[k].temp[0])
            continue;
        tessera__store_request__init(&items[nitems]);
        const char *slash = strrchr(res[k].temp, '/');
        items[nitems].temp_file = (char *)(slash ? slash + 1 : res[k].temp);
        items[nitems].origin = "RestApi"; /* Orthanc's Origin of a modified copy */
        ptrs[nitems] = &items[nitems];
        at[nitems++] = k;
    }
    if (!nitems)
        return;
    Tessera__StoreBatchRequest req = TESSERA__STORE_BATCH_REQUEST__INIT;
    req.n_items = nitems;
    req.items = ptrs;
    ProtobufCMessage *reply = NULL;
    ts_err err;
    char details[600];
    int rc = ts_bus_call(w->svc->ingest, &req.base, &tessera__store_batch_reply__descriptor, &reply,
                         w->svc->bus_timeout_ms, &err);
    Tessera__StoreBatchReply *r = (Tessera__StoreBatchReply *)reply;
    if (!rc && r->n_replies != nitems)
        rc = ts_err_set(&err, TS_EBUS, "%zu answers for %zu copies", r->n_replies, nitems);
    for (size_t i = 0; i < nitems; i++) {
        copy_result *cr = &res[at[i]];
        unlink(cr->temp); /* ingest took it over, or it failed: nothing to keep */
        cr->temp[0] = '\0';
        if (rc) {
            snprintf(details, sizeof(details), "ingest did not answer: %s", err.msg);
            jobs_fail(&cr->out, TS_OE_INTERNAL_ERROR, details);
            continue;
        }
        const Tessera__StoreReply *one = r->replies[i];
        if (one->status != TESSERA__STORE_STATUS__STORE_STORED &&
            one->status != TESSERA__STORE_STATUS__STORE_ALREADY_STORED) {
            snprintf(details, sizeof(details), "storing the copy of instance %s: %s",
                     cr->orig.instance, one->error);
            jobs_fail(&cr->out, store_status_oe(one->status), details);
            continue;
        }
        snprintf(cr->copy.patient, sizeof(cr->copy.patient), "%s", one->patient_id);
        snprintf(cr->copy.study, sizeof(cr->copy.study), "%s", one->study_id);
        snprintf(cr->copy.series, sizeof(cr->copy.series), "%s", one->series_id);
        snprintf(cr->copy.instance, sizeof(cr->copy.instance), "%s", one->instance_id);
        cr->ok = true;
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
}

/* Appends "v" to a PostgreSQL array literal being built in *buf (ids and
 * levels only: no quote or backslash in them). */
static void array_add(char **buf, size_t *len, size_t *cap, const char *v)
{
    size_t n = strlen(v) + 4;
    if (*len + n + 2 > *cap) {
        *cap = (*len + n + 2) * 2;
        *buf = xrealloc(*buf, *cap);
    }
    *len += (size_t)sprintf(*buf + *len, "%s\"%s\"", *len > 1 ? "," : "", v);
}

/* Orthanc's metadata: on each copy always, on its series, study and patient
 * when they differ from the original's; one transaction for the chunk's copies
 * (a commit per copy was as costly as ingest's own). */
static bool set_metadata(jobs_worker *w, const ts_modify *m, const copy_result *res, size_t n,
                         jobs_outcome *out)
{
    size_t cap = 256, lens[3] = {1, 1, 1}, caps[3] = {cap, cap, cap};
    char *bufs[3] = {xmalloc(cap), xmalloc(cap), xmalloc(cap)};
    for (int i = 0; i < 3; i++)
        strcpy(bufs[i], "{");
    for (size_t k = 0; k < n; k++) {
        if (!res[k].ok)
            continue;
        const ts_ids *copy = &res[k].copy, *orig = &res[k].orig;
        const char *c[] = {copy->patient, copy->study, copy->series, copy->instance};
        const char *o[] = {orig->patient, orig->study, orig->series, orig->instance};
        for (int level = 0; level < 4; level++) {
            if (level != 3 && strcmp(c[level], o[level]) == 0)
                continue;
            char l[4];
            snprintf(l, sizeof(l), "%d", level);
            array_add(&bufs[0], &lens[0], &caps[0], c[level]);
            array_add(&bufs[1], &lens[1], &caps[1], l);
            array_add(&bufs[2], &lens[2], &caps[2], o[level]);
        }
    }
    for (int i = 0; i < 3; i++)
        strcat(bufs[i], "}");
    meta_q q = {ts_modify_is_anonymization(m) ? "AnonymizedFrom" : "ModifiedFrom", bufs[0], bufs[1],
                bufs[2]};
    ts_err err;
    bool ok = true;
    if (lens[0] > 1 && ts_db_transaction(w->svc->db, TS_DB_WRITE, meta_txn, &q, &err)) {
        jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
        ok = false;
    }
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    return ok;
}

/* Copies made at once (the modification is CPU: the machine's cores). */
#define PARALLEL 4

/* A chunk of the job's instances: their files, then their copies. DEPTH are
 * alive at once: ingest stores up to DEPTH - 1 (a thread waits for each batch;
 * ingest serves TESSERA_BUS_WORKERS requests at a time) while the next one's
 * copies are made. A batch took 2 to 4 times as long as making its copies,
 * yet 3 (two batches at ingest) was no faster than 2 in bench/anonymize
 * (probably because a study's copies share their series and study rows, which
 * each batch's transaction locks: not verified). */
#ifndef DEPTH
#define DEPTH 2
#endif
typedef struct chunk {
    jobs_worker *w;
    size_t n;
    const char *ids[CHUNK];
    char *uuids[CHUNK];
    char paths[CHUNK][4096];
    copy_result res[CHUNK];
    pthread_t storer;
    bool storing;
} chunk;

typedef struct par_ctx {
    ts_job_claim *c;
    const ts_modify *m; /* read only while the threads run */
    const char *transcode;
    chunk *ch;
    atomic_size_t next;
} par_ctx;

static void *par_main(void *arg)
{
    par_ctx *p = arg;
    for (;;) {
        size_t k = atomic_fetch_add(&p->next, 1);
        if (k >= p->ch->n)
            return NULL;
        copy_result *r = &p->ch->res[k];
        if (jobs_worker_interrupted(p->ch->w)) {
            r->out.interrupted = true;
            continue;
        }
        make_copy(p->ch->w, p->c, p->m, p->transcode, p->ch->ids[k], p->ch->paths[k], r);
    }
}

static void make_copies(ts_job_claim *c, const ts_modify *m, const char *transcode, chunk *ch)
{
    par_ctx par = {c, m, transcode, ch, 0};
    ts_parallel_run(par_main, &par, ch->n < PARALLEL ? ch->n : PARALLEL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *storer_main(void *arg)
{
    chunk *ch = arg;
    double t0 = now_ms();
    store_copies(ch->w, ch->res, ch->n);
    ts_debug("chunk stored by ingest", "copies=%zu ms=%.1f", ch->n, now_ms() - t0);
    return NULL;
}

/* Ingest's batch for ch, in a thread (ch->storing); without one, at once. */
static void start_storing(chunk *ch)
{
    ch->storing = pthread_create(&ch->storer, NULL, storer_main, ch) == 0;
    if (!ch->storing)
        store_copies(ch->w, ch->res, ch->n);
}

/* Forgets a chunk: temporary files never handed to ingest are removed. */
static void chunk_reset(chunk *ch)
{
    for (size_t k = 0; k < CHUNK; k++) {
        if (ch->res[k].temp[0])
            unlink(ch->res[k].temp);
        free(ch->uuids[k]);
        ch->uuids[k] = NULL;
        memset(&ch->res[k], 0, sizeof(ch->res[k]));
    }
    ch->n = 0;
}

typedef struct run_state {
    jobs_worker *w;
    ts_job_claim *c;
    const ts_modify *m;
    int level;
    bool modify;
    json_t *done;
    size_t ndone, total;
    ts_ids last_copy;
} run_state;

/* Once ingest answered a chunk's batch: Orthanc's metadata, then the chunk
 * recorded in the done set with the progress. false (*out set) when the job
 * stops here: a copy failed (what was stored is recorded first), or
 * PostgreSQL or Redis stayed away. */
static bool finish_chunk(run_state *st, chunk *ch, jobs_outcome *out)
{
    if (ch->storing) {
        pthread_join(ch->storer, NULL);
        ch->storing = false;
    }
    ts_job_claim *c = st->c;
    size_t n = ch->n;
    if (st->modify && !set_metadata(st->w, st->m, ch->res, n, out))
        return false; /* the chunk's copies are stored, not recorded: a resubmit finds them */
    const char *items[2 * CHUNK];
    char out_keys[CHUNK][TS_ID_LEN + 8];
    size_t nitems = 0, k_fail = n;
    for (size_t k = 0; k < n; k++) {
        if (!ch->res[k].ok) {
            if (k_fail == n)
                k_fail = k;
            continue;
        }
        ts_ids *copy = &ch->res[k].copy;
        if (st->modify && !json_object_get(c->content, "ID")) {
            const char *cid[] = {copy->patient, copy->study, copy->series};
            char p[80];
            snprintf(p, sizeof(p), "/%s/%s", LEVEL_PLURAL[st->level], cid[st->level]);
            json_object_set_new(c->content, "ID", json_string(cid[st->level]));
            json_object_set_new(c->content, "Path", json_string(p));
            json_object_set_new(c->content, "PatientID", json_string(copy->patient));
            json_object_set_new(c->content, "Type", json_string(LEVEL_TYPE[st->level]));
        }
        st->last_copy = *copy;
        snprintf(out_keys[k], sizeof(out_keys[k]), "out:%s", copy->instance);
        items[nitems++] = ch->ids[k];
        items[nitems++] = out_keys[k];
        st->ndone++;
    }
    int progress = (int)(st->ndone * 100 / st->total);
    if (nitems && !jobs_record(st->w, c, items, nitems, progress > 99 ? 99 : progress)) {
        out->interrupted = true;
        return false;
    }
    for (size_t i = 0; i < nitems; i++)
        json_object_set_new(st->done, items[i], json_true());
    if (k_fail < n) {
        /* what was stored is recorded; the first failure ends the run */
        if (ch->res[k_fail].out.interrupted)
            out->interrupted = true;
        else
            *out = ch->res[k_fail].out;
        return false;
    }
    return true;
}

/* The oldest of the chunks at ingest (chunks[(first + i) % DEPTH], i < npending),
 * taken off the ring. */
static chunk *pop_oldest(chunk *chunks[DEPTH], size_t *first, size_t *npending)
{
    chunk *oldest = chunks[*first];
    *first = (*first + 1) % DEPTH;
    (*npending)--;
    return oldest;
}

/* KeepSource false: the originals go once every copy is stored (a copy that
 * kept its original's id, e.g. with Keep SOPInstanceUID, is not deleted). */
static void delete_sources(jobs_worker *w, ts_job_claim *c, const json_t *instances,
                           const json_t *done, jobs_outcome *out)
{
    size_t i;
    const json_t *v;
    long long removed = 0;
    json_array_foreach(instances, i, v)
    {
        const char *id = json_string_value(v);
        char out_key[TS_ID_LEN + 8];
        snprintf(out_key, sizeof(out_key), "out:%s", id);
        if (json_object_get(done, out_key))
            continue;
        ts_err err;
        ts_deleted del;
        int rc = ts_delete_resource(w->svc->db, id, 3, &del, &err);
        if (rc < 0) {
            jobs_fail(out, rc == TS_EDB_BUSY ? TS_OE_DATABASE_UNAVAILABLE : TS_OE_INTERNAL_ERROR,
                      err.msg);
            return;
        }
        if (rc == 1)
            removed += del.removed;
    }
    if (removed && w->svc->deleters) {
        Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
        ts_bus_push(w->svc->deleters, &nudge.base);
    }
    ts_info("modification sources deleted", "job=%s resources_removed=%lld", c->id, removed);
}

void jobs_modify_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    const json_t *body = json_object_get(c->input, "Body");
    const json_t *instances = json_object_get(c->input, "Instances");
    bool anonymize = json_is_true(json_object_get(c->input, "Anonymize"));
    int level = (int)json_integer_value(json_object_get(c->input, "Level"));
    const char *secret = json_string_value(json_object_get(c->input, "Secret"));
    bool keep_source = !json_is_false(json_object_get(c->input, "KeepSource"));
    const char *transcode = json_string_value(json_object_get(c->input, "Transcode"));
    /* SplitStudy and MergeStudy are modifications at the series level whose
     * StudyInstanceUID and patient/study tags REST (split) or the target study
     * (merge) give; Orthanc sets no metadata on their copies */
    bool modify = strcmp(c->type, "ResourceModification") == 0;
    bool merge = strcmp(c->type, "MergeStudy") == 0;
    ts_modify *m = NULL;
    json_t *done = NULL;
    /* chunks[(first + i) % DEPTH], i < npending: at ingest, oldest first */
    chunk *chunks[DEPTH] = {NULL};
    size_t first = 0, npending = 0;
    bool failed_chunk = false; /* *out is a chunk's failure (older than any still pending) */
    run_state st = {.w = w, .c = c, .level = level, .modify = modify};
    memset(out, 0, sizeof(*out));
    if (!json_is_array(instances) || !secret || level < 0 || level > 2 || !w->svc->ingest ||
        (merge && !json_is_string(json_object_get(c->input, "Target")))) {
        jobs_fail(out, TS_OE_BAD_FILE_FORMAT,
                  w->svc->ingest ? "malformed job input" : "TESSERA_INGEST_BUS is not set");
        goto out;
    }
    ts_oe oe = TS_OE_SUCCESS;
    ts_err err;
    ts_err_clear(&err);
    if (ts_modify_parse(body, anonymize, &m, &oe, &err)) {
        jobs_fail(out, oe, err.msg);
        goto out;
    }
    ts_modify_set_level(m, level);
    ts_modify_set_secret(m, secret);
    ts_modify_set_anonymous_patient(m, json_string_value(json_object_get(c->input, "PatientID")),
                                    json_string_value(json_object_get(c->input, "PatientName")));
    /* Orthanc checks these when it applies the modification: the job fails */
    if (modify && ts_modify_check(m, &oe, &err)) {
        jobs_fail(out, oe, err.msg);
        goto out;
    }
    if (merge && !merge_target(w, m, json_string_value(json_object_get(c->input, "Target")), out))
        goto out;
    if (!(done = jobs_done_items(w, c))) {
        out->interrupted = true;
        goto out;
    }
    size_t total = json_array_size(instances);
    if (c->taken_over)
        ts_info("modification resumed", "job=%s done=%zu total=%zu", c->id,
                json_object_size(done) / 2, total);
    st.m = m;
    st.done = done;
    st.total = total;
    for (int i = 0; i < DEPTH; i++) {
        chunks[i] = xcalloc(1, sizeof(chunk));
        chunks[i]->w = w;
    }
    for (size_t pos = 0; pos < total; pos += CHUNK) {
        size_t n = total - pos < CHUNK ? total - pos : CHUNK;
        chunk *cur = chunks[(first + npending) % DEPTH];
        chunk_reset(cur);
        for (size_t k = 0; k < n; k++) {
            const char *id = json_string_value(json_array_get(instances, pos + k));
            if (!id || !ts_id_is_valid(id)) {
                jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed instance id in job input");
                goto out;
            }
            if (json_object_get(done, id))
                st.ndone++;
            else
                cur->ids[cur->n++] = id;
        }
        if (!cur->n)
            continue;
        if (jobs_instance_files(w, cur->ids, cur->n, cur->uuids, &err)) {
            jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
            goto out;
        }
        for (size_t k = 0; k < cur->n; k++) {
            if (!cur->uuids[k] || ts_store_path(w->svc->store, cur->uuids[k], cur->paths[k],
                                                sizeof(cur->paths[k]), &err)) {
                char details[200];
                snprintf(details, sizeof(details),
                         "instance %s is no longer stored (deleted while the job ran)",
                         cur->ids[k]);
                jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, details);
                goto out;
            }
        }
        /* this chunk's copies are made while ingest stores the previous ones
         * (its fsyncs and commits are most of an instance's time), then each
         * chunk is one batch for ingest and recorded in one go, in order */
        double t0 = now_ms();
        make_copies(c, m, transcode, cur);
        ts_debug("chunk copies made", "copies=%zu ms=%.1f", cur->n, now_ms() - t0);
        if (npending == DEPTH - 1) {
            chunk *oldest = pop_oldest(chunks, &first, &npending);
            if (!finish_chunk(&st, oldest, out)) {
                failed_chunk = true;
                goto out;
            }
        }
        if (jobs_worker_interrupted(w)) {
            /* paused or canceled while this chunk was made: it is not sent
             * (chunk_reset removes its files) */
            out->interrupted = true;
            goto out;
        }
        start_storing(cur);
        npending++;
    }
    while (npending) {
        chunk *oldest = pop_oldest(chunks, &first, &npending);
        if (!finish_chunk(&st, oldest, out)) {
            failed_chunk = true;
            goto out;
        }
    }
    if (!keep_source)
        delete_sources(w, c, instances, done, out);
    ts_info("modification done", "job=%s instances=%zu last_copy=%s", c->id, total,
            st.last_copy.instance);
out:
    /* chunks still at ingest are waited for and recorded in order; the first
     * failure of a chunk is the job's (it is older than what stopped the run,
     * unless that was a chunk's failure) */
    while (npending) {
        chunk *oldest = pop_oldest(chunks, &first, &npending);
        jobs_outcome o;
        memset(&o, 0, sizeof(o));
        if (!finish_chunk(&st, oldest, &o) && !failed_chunk) {
            *out = o;
            failed_chunk = true;
        }
    }
    for (int i = 0; i < DEPTH; i++) {
        if (chunks[i])
            chunk_reset(chunks[i]);
        free(chunks[i]);
    }
    json_decref(done);
    ts_modify_free(m);
}

ts_modify *jobs_route_modification(const json_t *input, bool *bad, jobs_outcome *out)
{
    const json_t *spec = json_object_get(input, "Modification");
    *bad = false;
    if (!spec)
        return NULL;
    const char *secret = json_string_value(json_object_get(spec, "Secret"));
    bool anonymize = json_is_true(json_object_get(spec, "Anonymize"));
    ts_modify *m = NULL;
    ts_oe oe = TS_OE_BAD_FILE_FORMAT;
    ts_err err;
    ts_err_clear(&err);
    int rc = secret ? ts_modify_parse(json_object_get(spec, "Body"), anonymize, &m, &oe, &err)
                    : ts_err_set(&err, TS_EINVAL, "no Secret in the job's Modification");
    if (!rc) {
        ts_modify_set_secret(m, secret);
        if (!anonymize) {
            ts_modify_set_level(m, ts_modify_instance_level(m));
            rc = ts_modify_check(m, &oe, &err);
        }
    }
    if (rc) {
        ts_modify_free(m);
        *bad = true;
        jobs_fail(out, oe, err.msg);
        return NULL;
    }
    return m;
}

int jobs_route_modified_file(jobs_worker *w, ts_modify *m, const char *file, char *path,
                             size_t size, ts_oe *oe, ts_err *err)
{
    ts_dicom *d = NULL;
    *oe = TS_OE_BAD_FILE_FORMAT;
    path[0] = '\0';
    int rc = ts_dicom_open_file(file, &d, err);
    if (!rc && ts_modify_is_anonymization(m)) {
        char *pid = ts_dicom_get_string(d, 0x00100020, true);
        char key[300], uid[80], name[32];
        snprintf(key, sizeof(key), "PatientID:%s", pid ? pid : "");
        free(pid);
        ts_modify_map_uid(m, key, uid, sizeof(uid));
        size_t n = strlen(uid);
        snprintf(name, sizeof(name), "Anonymized%.8s", n > 8 ? uid + n - 8 : uid);
        ts_modify_set_anonymous_patient(m, uid, name);
    }
    if (!rc)
        rc = ts_modify_apply(m, d, oe, err);
    if (!rc)
        rc = ts_store_temp_path(w->svc->store, path, size, err);
    if (!rc && (rc = ts_dicom_save_file(d, path, err)) != 0) {
        unlink(path);
        path[0] = '\0';
    }
    if (rc && path[0]) {
        unlink(path);
        path[0] = '\0';
    }
    ts_dicom_free(d);
    return rc;
}
