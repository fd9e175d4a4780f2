/* ResourceModification (see jobs_modify.h). */
#include "jobs_modify.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* One instance: modified copy stored through ingest; new->ids gets its ids.
 * false after jobs_fail. */
static bool modify_one(jobs_worker *w, ts_job_claim *c, const ts_modify *m, const char *transcode,
                       const char *id, const char *file, ts_ids *copy, ts_ids *orig,
                       jobs_outcome *out)
{
    ts_err err;
    ts_oe oe = TS_OE_SUCCESS;
    ts_dicom *d = NULL;
    char temp[4096] = "";
    char details[600];
    bool ok = false;
    ts_dicom_identity identity = {0};
    if (ts_dicom_open_file(file, &d, &err) || ts_dicom_identity_get(d, &identity, &err)) {
        snprintf(details, sizeof(details), "instance %s: %s", id, err.msg);
        jobs_fail(out, TS_OE_BAD_FILE_FORMAT, details);
        goto out;
    }
    *orig = identity.ids;
    if (ts_modify_apply(m, d, &oe, &err)) {
        snprintf(details, sizeof(details), "instance %s: %s", id, err.msg);
        jobs_fail(out, oe, details);
        goto out;
    }
    /* as Orthanc: lossy allowed but the copy keeps its new SOPInstanceUID (the
     * references between copies hold), and a copy that cannot be converted is
     * stored in its own syntax */
    if (transcode && ts_dicom_transcode(d, transcode, TS_TRANSCODE_ALLOW_LOSSY, true, &err))
        ts_warn("cannot transcode instance, keeping its transfer syntax",
                "job=%s instance=%s to=%s error=\"%s\"", c->id, id, transcode, err.msg);
    if (ts_store_temp_path(w->svc->store, temp, sizeof(temp), &err) ||
        ts_dicom_save_file(d, temp, &err)) {
        jobs_fail(out, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        goto out;
    }
    ts_dicom_free(d);
    d = NULL;
    Tessera__StoreRequest sr = TESSERA__STORE_REQUEST__INIT;
    const char *slash = strrchr(temp, '/');
    sr.temp_file = (char *)(slash ? slash + 1 : temp);
    sr.origin = "RestApi"; /* Orthanc's Origin of a modified copy */
    ProtobufCMessage *reply = NULL;
    if (ts_bus_call(w->svc->ingest, &sr.base, &tessera__store_reply__descriptor, &reply,
                    w->svc->bus_timeout_ms, &err)) {
        snprintf(details, sizeof(details), "ingest did not answer: %s", err.msg);
        jobs_fail(out, TS_OE_INTERNAL_ERROR, details);
        goto out;
    }
    Tessera__StoreReply *r = (Tessera__StoreReply *)reply;
    if (r->status != TESSERA__STORE_STATUS__STORE_STORED &&
        r->status != TESSERA__STORE_STATUS__STORE_ALREADY_STORED) {
        snprintf(details, sizeof(details), "storing the copy of instance %s: %s", id, r->error);
        jobs_fail(out, store_status_oe(r->status), details);
    } else {
        snprintf(copy->patient, sizeof(copy->patient), "%s", r->patient_id);
        snprintf(copy->study, sizeof(copy->study), "%s", r->study_id);
        snprintf(copy->series, sizeof(copy->series), "%s", r->series_id);
        snprintf(copy->instance, sizeof(copy->instance), "%s", r->instance_id);
        ok = true;
    }
    protobuf_c_message_free_unpacked(reply, NULL);
out:
    if (temp[0])
        unlink(temp); /* ingest took it over, or it failed: nothing to keep */
    ts_dicom_identity_clear(&identity);
    ts_dicom_free(d);
    return ok;
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

typedef struct copy_result {
    bool ok;
    ts_ids copy, orig;
    jobs_outcome out; /* why not, when !ok (interrupted: paused, canceled, stopping) */
} copy_result;

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

/* Copies made at once within a chunk: ingest serves TESSERA_BUS_WORKERS (4 by
 * default) requests at a time. */
#define PARALLEL 4

typedef struct par_ctx {
    jobs_worker *w;
    ts_job_claim *c;
    const ts_modify *m; /* read only while the threads run */
    const char *transcode;
    const char *const *ids;
    char (*paths)[4096];
    size_t n;
    atomic_size_t next;
    copy_result *res;
} par_ctx;

static void *par_main(void *arg)
{
    par_ctx *p = arg;
    for (;;) {
        size_t k = atomic_fetch_add(&p->next, 1);
        if (k >= p->n)
            return NULL;
        copy_result *r = &p->res[k];
        if (jobs_worker_interrupted(p->w)) {
            r->out.interrupted = true;
            continue;
        }
        r->ok = modify_one(p->w, p->c, p->m, p->transcode, p->ids[k], p->paths[k], &r->copy,
                           &r->orig, &r->out);
    }
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
    char *uuids[CHUNK] = {0};
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
    size_t total = json_array_size(instances), ndone = 0;
    if (c->taken_over)
        ts_info("modification resumed", "job=%s done=%zu total=%zu", c->id,
                json_object_size(done) / 2, total);
    ts_ids last_copy = {0};
    for (size_t pos = 0; pos < total; pos += CHUNK) {
        size_t n = total - pos < CHUNK ? total - pos : CHUNK;
        const char *ids[CHUNK];
        size_t m_todo = 0;
        for (size_t k = 0; k < n; k++) {
            const char *id = json_string_value(json_array_get(instances, pos + k));
            if (!id || !ts_id_is_valid(id)) {
                jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed instance id in job input");
                goto out;
            }
            if (json_object_get(done, id))
                ndone++;
            else
                ids[m_todo++] = id;
        }
        if (!m_todo)
            continue;
        if (jobs_instance_files(w, ids, m_todo, uuids, &err)) {
            jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
            goto out;
        }
        /* the chunk's copies in parallel (ingest's fsyncs and commits are most
         * of an instance's time), then recorded in one go */
        char paths[CHUNK][4096];
        for (size_t k = 0; k < m_todo; k++) {
            if (!uuids[k] ||
                ts_store_path(w->svc->store, uuids[k], paths[k], sizeof(paths[k]), &err)) {
                char details[200];
                snprintf(details, sizeof(details),
                         "instance %s is no longer stored (deleted while the job ran)", ids[k]);
                jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, details);
                goto out;
            }
        }
        copy_result res[CHUNK];
        memset(res, 0, sizeof(res));
        par_ctx par = {w, c, m, transcode, ids, paths, m_todo, 0, res};
        pthread_t threads[PARALLEL];
        size_t nthreads = m_todo < PARALLEL ? m_todo : PARALLEL;
        for (size_t t = 1; t < nthreads; t++)
            if (pthread_create(&threads[t], NULL, par_main, &par))
                nthreads = t; /* fewer threads: the others do their share */
        par_main(&par);
        for (size_t t = 1; t < nthreads; t++)
            pthread_join(threads[t], NULL);
        if (modify && !set_metadata(w, m, res, m_todo, out))
            goto out; /* the chunk's copies are stored, not recorded: a resubmit finds them */
        const char *items[2 * CHUNK];
        char out_keys[CHUNK][TS_ID_LEN + 8];
        size_t nitems = 0, k_fail = m_todo;
        for (size_t k = 0; k < m_todo; k++) {
            if (!res[k].ok) {
                if (k_fail == m_todo)
                    k_fail = k;
                continue;
            }
            ts_ids *copy = &res[k].copy;
            if (modify && !json_object_get(c->content, "ID")) {
                const char *cid[] = {copy->patient, copy->study, copy->series};
                char p[80];
                snprintf(p, sizeof(p), "/%s/%s", LEVEL_PLURAL[level], cid[level]);
                json_object_set_new(c->content, "ID", json_string(cid[level]));
                json_object_set_new(c->content, "Path", json_string(p));
                json_object_set_new(c->content, "PatientID", json_string(copy->patient));
                json_object_set_new(c->content, "Type", json_string(LEVEL_TYPE[level]));
            }
            last_copy = *copy;
            snprintf(out_keys[k], sizeof(out_keys[k]), "out:%s", copy->instance);
            items[nitems++] = ids[k];
            items[nitems++] = out_keys[k];
            ndone++;
        }
        int progress = (int)(ndone * 100 / total);
        if (nitems && !jobs_record(w, c, items, nitems, progress > 99 ? 99 : progress)) {
            out->interrupted = true;
            goto out;
        }
        for (size_t i = 0; i < nitems; i++)
            json_object_set_new(done, items[i], json_true());
        if (k_fail < m_todo) {
            /* what was stored is recorded; the first failure ends the run */
            if (res[k_fail].out.interrupted)
                out->interrupted = true;
            else
                *out = res[k_fail].out;
            goto out;
        }
    }
    if (!keep_source)
        delete_sources(w, c, instances, done, out);
    ts_info("modification done", "job=%s instances=%zu last_copy=%s", c->id, total,
            last_copy.instance);
out:
    for (size_t k = 0; k < CHUNK; k++)
        free(uuids[k]);
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
