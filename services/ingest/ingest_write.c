#include "ingest_write.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dicom/codecs.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "domain/store_index.h"
#include "tessera.pb-c.h"

void ingest_ctx_init_metrics(ingest_ctx *ctx)
{
    const char *name = "tessera_ingest_instances_total";
    const char *help = "instances received, by outcome";
    ctx->m_stored = ts_metrics_counter(name, "status=\"stored\"", help);
    ctx->m_already = ts_metrics_counter(name, "status=\"already_stored\"", help);
    ctx->m_invalid = ts_metrics_counter(name, "status=\"invalid\"", help);
    ctx->m_db_busy = ts_metrics_counter(name, "status=\"db_busy\"", help);
    ctx->m_storage = ts_metrics_counter(name, "status=\"storage_error\"", help);
    ctx->m_failed = ts_metrics_counter(name, "status=\"failed\"", help);
    const char *rname = "tessera_ingest_received_total";
    const char *rhelp = "instances ingested, by where they came: in memory (received or sent "
                        "whole, up to TESSERA_INGEST_MEMORY_THRESHOLD) or in a temporary file";
    ctx->m_in_memory = ts_metrics_counter(rname, "into=\"memory\"", rhelp);
    ctx->m_in_file = ts_metrics_counter(rname, "into=\"file\"", rhelp);
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5};
    ctx->m_seconds = ts_metrics_histogram("tessera_ingest_seconds", NULL,
                                          "time to parse, store and index one instance", bounds,
                                          sizeof(bounds) / sizeof(bounds[0]));
}

unsigned ingest_dimse_status(ingest_status status)
{
    switch (status) {
    case INGEST_STORED:
    case INGEST_ALREADY_STORED:
    case INGEST_FILTERED_OUT: /* Orthanc 1.10.1 answers Success to what its filter drops */
        return 0x0000;
    case INGEST_INVALID:
        return 0xC000; /* Error: cannot understand */
    case INGEST_WRONG_CLASS:
        return 0xA900; /* Error: data set does not match SOP class */
    case INGEST_DB_BUSY:
    case INGEST_STORAGE_ERROR:
        return 0xA700; /* Refused: out of resources */
    case INGEST_FAILED:
        break;
    }
    return 0xC001; /* Error: processing failure (0xC0xx: cannot understand family) */
}

static int file_md5(const char *path, char out[33], long long *size, ts_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ts_err_set(err, TS_EIO, "open %s: %s", path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort();
    EVP_DigestInit_ex(md, EVP_md5(), NULL);
    unsigned char buf[65536];
    long long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        total += n;
    }
    int rc = 0;
    if (n < 0)
        rc = ts_err_set(err, TS_EIO, "read %s: %s", path, strerror(errno));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, digest, &len);
    EVP_MD_CTX_free(md);
    close(fd);
    for (unsigned i = 0; i < len && i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    *size = total;
    return rc;
}

static void buffer_md5(const void *data, size_t len, char out[33])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(data, len, digest, &n, EVP_md5(), NULL))
        abort();
    for (unsigned i = 0; i < n && i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* Reads a temporary file of at most max bytes into memory (NULL: larger,
 * empty or unreadable: the caller goes on from the file). */
static void *read_small(const char *path, long long max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    void *buf = NULL;
    if (fstat(fd, &sb) == 0 && sb.st_size > 0 && sb.st_size <= max) {
        buf = malloc((size_t)sb.st_size);
        if (!buf)
            abort();
        size_t got = 0;
        while (got < (size_t)sb.st_size) {
            ssize_t n = read(fd, (char *)buf + got, (size_t)sb.st_size - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got != (size_t)sb.st_size) {
            free(buf);
            buf = NULL;
        }
        *len = got;
    }
    close(fd);
    return buf;
}

/* Orthanc's ReceptionDate: local time as YYYYMMDDTHHMMSS. */
static void reception_date(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, 32, "%Y%m%dT%H%M%S", &tm);
}

/* Publishes the changes the transaction appended; best effort (subscribers
 * also poll the changes table). */
static void publish_changes(ingest_ctx *ctx, const char *changes_json)
{
    if (!ctx->events || !changes_json)
        return;
    json_t *arr = json_loads(changes_json, 0, NULL);
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c)
    {
        Tessera__ChangeEvent ev = TESSERA__CHANGE_EVENT__INIT;
        ev.seq = 0; /* numbered after commit by the sequencer; subscribers read /changes */
        ev.change_type = (char *)json_string_value(json_object_get(c, "type"));
        ev.level = (Tessera__ResourceLevel)json_integer_value(json_object_get(c, "level"));
        ev.public_id = (char *)json_string_value(json_object_get(c, "id"));
        ts_err ignored;
        ts_bus_publish(ctx->events, &ev.base, &ignored);
    }
    json_decref(arr);
}

static json_t *build_tags(const ts_dicom *d)
{
    json_t *tags = json_object();
    json_object_set_new(tags, "patient", ts_dicom_main_tags(d, TS_LEVEL_PATIENT));
    json_object_set_new(tags, "study", ts_dicom_main_tags(d, TS_LEVEL_STUDY));
    json_object_set_new(tags, "series", ts_dicom_main_tags(d, TS_LEVEL_SERIES));
    json_object_set_new(tags, "instance", ts_dicom_main_tags(d, TS_LEVEL_INSTANCE));
    /* apart from "series": main_tags stays Orthanc's MainDicomTags */
    json_object_set_new(tags, "series_query", ts_dicom_series_query_tags(d));
    return tags;
}

static void set_if(json_t *obj, const char *key, const char *value)
{
    if (value && *value)
        json_object_set_new(obj, key, json_string(value));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static ingest_status status_of_db_error(int rc)
{
    /* TS_ENOTFOUND: the file was reclaimed while the transaction waited, which
     * takes a database in trouble; the client may try again, as for busy */
    return rc == TS_EDB_BUSY || rc == TS_EDB_INDOUBT || rc == TS_ENOTFOUND ? INGEST_DB_BUSY
                                                                           : INGEST_FAILED;
}

int ingest_write_temp(ts_store *st, const uint8_t *data, size_t len, char *path, size_t size,
                      ts_err *err)
{
    int rc = ts_store_temp_path(st, path, size, err);
    if (rc)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return ts_err_set(err, errno == ENOSPC ? TS_ENOSPACE : TS_EIO, "create %s: %s", path,
                          strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return ts_err_set(err, e == ENOSPC ? TS_ENOSPACE : TS_EIO, "write %s: %s", path,
                              strerror(e));
        }
        off += (size_t)n;
    }
    close(fd);
    return 0;
}

/* TESSERA_INGEST_TRANSCODING: the received file is written again in the chosen
 * syntax, as a new temporary file that takes its place (*temp_path, *d and *id
 * are replaced). One that cannot be converted is kept as received, with a log
 * line that says why, as Orthanc's IngestTranscoding does. A lossy target gives
 * the instance a new SOP Instance UID, hence new ids. */
static void transcode_received(ingest_ctx *ctx, const char **temp_path, char *path, size_t size,
                               ts_dicom **d, ts_dicom_identity *id)
{
    if (!ctx->transcode_to)
        return;
    /* a copy: *d goes once the converted file replaces it */
    char from[80];
    snprintf(from, sizeof(from), "%s",
             ts_dicom_transfer_syntax(*d) ? ts_dicom_transfer_syntax(*d) : "");
    if (strcmp(from, ctx->transcode_to) == 0)
        return;
    void *data = NULL;
    size_t len = 0;
    ts_dicom *nd = NULL;
    ts_dicom_identity nid = {0};
    ts_err e;
    ts_err_clear(&e);
    if (ts_dicom_transcode_file(*temp_path, ctx->transcode_to, TS_TRANSCODE_ALLOW_LOSSY, &data,
                                &len, &e))
        goto kept;
    if (!data)
        return; /* already in that syntax */
    int rc = ingest_write_temp(ctx->store, data, len, path, size, &e);
    free(data);
    if (rc)
        goto kept;
    if (ts_dicom_open_file(path, &nd, &e) || ts_dicom_identity_get(nd, &nid, &e)) {
        unlink(path);
        ts_dicom_identity_clear(&nid);
        ts_dicom_free(nd);
        goto kept;
    }
    unlink(*temp_path);
    *temp_path = path;
    ts_dicom_free(*d);
    ts_dicom_identity_clear(id);
    *d = nd;
    *id = nid;
    ts_debug("instance transcoded on ingest", "instance=%s from=%s to=%s", id->ids.instance, from,
             ctx->transcode_to);
    return;
kept:
    ts_warn("cannot transcode on ingest, stored as received",
            "instance=%s from=%s to=%s error=\"%s\"", id->ids.instance, from, ctx->transcode_to,
            e.msg);
}

/* Orthanc's ReceivedInstanceFilter(dicom, origin, info): 1 when it answers
 * false (the instance is not stored), 0 to store it, or a script error. */
static int run_filter(ingest_ctx *ctx, const ts_dicom *d, const ingest_origin *origin,
                      bool has_pixels, ts_err *err)
{
    bool rest = origin->origin && strcmp(origin->origin, "RestApi") == 0;
    json_t *who = json_pack("{s:s, s:s}", "RequestOrigin", origin->origin ? origin->origin : "",
                            "RemoteIp", origin->remote_ip ? origin->remote_ip : "");
    if (rest) {
        json_object_set_new(who, "Username",
                            json_string(origin->http_username ? origin->http_username : ""));
    } else {
        json_object_set_new(who, "RemoteAet",
                            json_string(origin->remote_aet ? origin->remote_aet : ""));
        json_object_set_new(who, "CalledAet",
                            json_string(origin->called_aet ? origin->called_aet : ""));
    }
    const char *syntax = ts_dicom_transfer_syntax(d);
    json_t *args = json_pack("[o, o, {s:b, s:s}]", ts_dicom_to_simplified_json(d), who,
                             "HasPixelData", has_pixels, "TransferSyntaxUID", syntax ? syntax : "");
    json_t *result = NULL;
    pthread_mutex_lock(&ctx->lua_lock);
    int rc = ts_lua_call(ctx->lua, "ReceivedInstanceFilter", args, &result, err);
    pthread_mutex_unlock(&ctx->lua_lock);
    json_decref(args);
    if (rc) {
        json_decref(result);
        return ts_err_prefix(err, "ReceivedInstanceFilter");
    }
    /* Orthanc: anything but a boolean is an error */
    if (!json_is_boolean(result)) {
        json_decref(result);
        return ts_err_set(err, TS_EINVAL, "ReceivedInstanceFilter must return a boolean");
    }
    rc = json_is_false(result) ? 1 : 0;
    json_decref(result);
    return rc;
}

/* The instance: in a temporary file (temp_path), in memory (data), or both (a
 * small spooled upload read into memory). What comes from memory is parsed,
 * hashed and walked there; a file is placed by renaming temp_path, or written
 * from data when there is none. */
static int ingest_instance(ingest_ctx *ctx, const char *temp_path, const void *data, size_t len,
                           const ingest_origin *origin, ingest_result *out, ts_err *err)
{
    double t0 = now_s();
    ts_dicom *d = NULL;
    ts_dicom_identity id = {0};
    json_t *tags = NULL, *instance = NULL, *meta = NULL;
    char *tags_s = NULL, *instance_s = NULL, *meta_s = NULL, *ids_s = NULL, *dicomweb_s = NULL;
    char *changes = NULL;
    char uuid[TS_UUID_LEN + 1] = "";
    bool file_in_place = false;
    int fd = -1; /* the file written from memory, open until its fsync */
    int rc;

    memset(out, 0, sizeof(*out));
    out->status = INGEST_FAILED;

    /* parsed from the file when there is one: dcmtk leaves large values there.
     * One in memory is written in its place first and parsed from there: a
     * copy into a memfd (ts_dicom_open_buffer) cost ingest 0.1 ms of CPU more
     * per instance than the file (bench/ingest-cpu); what is refused below is
     * removed again (fail). */
    if (temp_path) {
        rc = ts_dicom_open_file(temp_path, &d, err);
    } else {
        char placed[PATH_MAX];
        rc = ts_store_place_data(ctx->store, data, len, uuid, &fd, err);
        if (rc) {
            out->status = INGEST_STORAGE_ERROR;
            goto fail;
        }
        file_in_place = true;
        rc = ts_store_path(ctx->store, uuid, placed, sizeof(placed), err);
        if (rc == 0)
            rc = ts_dicom_open_file(placed, &d, err);
    }
    if (rc) {
        struct stat st;
        long long n = data                        ? (long long)len
                      : stat(temp_path, &st) == 0 ? (long long)st.st_size
                                                  : -1;
        ts_err_prefix(err, "Cannot parse an invalid DICOM file (size: %lld bytes)", n);
    } else {
        rc = ts_dicom_identity_get(d, &id, err);
    }
    if (rc) {
        out->status = INGEST_INVALID;
        goto fail;
    }
    out->ids = id.ids;
    if (origin->sop_class_uid &&
        strcmp(origin->sop_class_uid, id.sop_class_uid ? id.sop_class_uid : "")) {
        out->status = INGEST_WRONG_CLASS;
        rc = ts_err_set(err, TS_EINVAL, "data set of SOP class %s sent as %s",
                        id.sop_class_uid ? id.sop_class_uid : "(none)", origin->sop_class_uid);
        goto fail;
    }
    if (origin->sop_instance_uid && strcmp(origin->sop_instance_uid, id.sop_uid)) {
        out->status = INGEST_INVALID;
        rc = ts_err_set(err, TS_EINVAL, "data set's SOP Instance UID is not the C-STORE's");
        goto fail;
    }

    char converted[4096];
    if (ctx->transcode_to && temp_path) {
        const char *received = temp_path;
        transcode_received(ctx, &temp_path, converted, sizeof(converted), &d, &id);
        if (temp_path != received)
            data = NULL; /* the bytes in memory are the received file's */
    }
    out->ids = id.ids;

    /* before the file moves: Orthanc's PixelDataOffset, read off the file's bytes */
    long long pixel_offset = data || !temp_path ? ts_dicom_pixel_data_offset_buffer(data, len)
                                                : ts_dicom_pixel_data_offset(temp_path);
    if (ctx->lua) {
        rc = run_filter(ctx, d, origin, pixel_offset >= 0, err);
        if (rc == 1) {
            out->status = INGEST_FILTERED_OUT;
            if (temp_path) {
                unlink(temp_path);
            } else {
                ts_err ignored;
                ts_store_remove(ctx->store, uuid, &ignored);
            }
            rc = 0;
            goto out_free;
        }
        if (rc) {
            out->status = INGEST_FAILED;
            goto fail;
        }
    }
    char md5[33] = "";
    long long size = 0;
    if (data || !temp_path) {
        buffer_md5(data, len, md5);
        size = (long long)len;
    } else if ((rc = file_md5(temp_path, md5, &size, err))) {
        out->status = INGEST_STORAGE_ERROR;
        goto fail;
    }
    /* In place without its fsync: the writer syncs it while the committer
     * runs the index statement, which commits only once it is on disk. */
    if (temp_path) {
        if ((rc = ts_store_place_file(ctx->store, temp_path, uuid, err))) {
            out->status = INGEST_STORAGE_ERROR;
            goto fail;
        }
        file_in_place = true;
    }
    ts_metric_inc(temp_path ? ctx->m_in_file : ctx->m_in_memory);

    tags = build_tags(d);
    instance = json_object();
    set_if(instance, "sop_class_uid", id.sop_class_uid);
    json_object_set_new(instance, "uuid", json_string(uuid));
    json_object_set_new(instance, "size", json_integer(size));
    json_object_set_new(instance, "md5", json_string(md5));
    /* WADO-RS metadata without a file parse per instance; bulk data URIs
     * relative to the instance (0011_instance_dicomweb.sql), sent as its own
     * json parameter: PostgreSQL keeps the text (0012) */
    json_t *dicomweb = ts_dicom_to_dicomweb_json(d, "");
    dicomweb_s = json_dumps(dicomweb, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(dicomweb);
    if (dicomweb_s && strstr(dicomweb_s, "\\u0000")) {
        /* no NUL character in PostgreSQL's text: such an instance's metadata
         * is read from its file instead */
        free(dicomweb_s);
        dicomweb_s = NULL;
    }
    meta = json_object();
    char received[32];
    reception_date(received);
    json_object_set_new(meta, "ReceptionDate", json_string(received));
    set_if(meta, "Origin", origin->origin);
    if (origin->origin && strcmp(origin->origin, "RestApi") == 0) {
        /* Orthanc 1.10.1 writes these three for every REST upload, empty
         * when unknown: RemoteAET "", HttpUsername "" without authentication */
        json_object_set_new(meta, "RemoteAET", json_string(""));
        json_object_set_new(meta, "RemoteIP",
                            json_string(origin->remote_ip ? origin->remote_ip : ""));
        json_object_set_new(meta, "HttpUsername",
                            json_string(origin->http_username ? origin->http_username : ""));
    } else {
        set_if(meta, "RemoteAET", origin->remote_aet);
        set_if(meta, "RemoteIP", origin->remote_ip);
        set_if(meta, "CalledAET", origin->called_aet);
        set_if(meta, "HttpUsername", origin->http_username);
    }
    set_if(meta, "TransferSyntax", ts_dicom_transfer_syntax(d));
    if (pixel_offset >= 0) {
        char offset_s[24];
        snprintf(offset_s, sizeof(offset_s), "%lld", pixel_offset);
        json_object_set_new(meta, "PixelDataOffset", json_string(offset_s));
    }
    set_if(meta, "SopClassUid", id.sop_class_uid);

    tags_s = json_dumps(tags, JSON_COMPACT);
    instance_s = json_dumps(instance, JSON_COMPACT);
    meta_s = json_dumps(meta, JSON_COMPACT);
    /* Public ids are hex and dashes: no quoting needed in the array literal. */
    if (asprintf(&ids_s, "{%s,%s,%s,%s}", id.ids.patient, id.ids.study, id.ids.series,
                 id.ids.instance) < 0)
        abort();
    ingest_job job = {.params = {ids_s, tags_s, instance_s, meta_s,
                                 ctx->overwrite ? "true" : "false",
                                 dicomweb_s /* NULL: SQL NULL */},
                      .uuid = uuid};
    /* The committer runs the index statement (with other writers' in one
     * transaction: ingest_commit.h) while the disk syncs the file; it commits
     * only once the file is on disk. */
    ingest_commit_submit(ctx->commit, &job);
    ts_err sync_err;
    ts_err_clear(&sync_err);
    /* the file here, its directory by the committer meanwhile */
    bool synced = fd >= 0 ? ts_store_sync_fd(fd, uuid, &sync_err) == 0
                          : ts_store_sync_data(ctx->store, uuid, &sync_err) == 0;
    fd = -1;
    ingest_commit_synced(ctx->commit, &job, synced);
    ingest_commit_wait(ctx->commit, &job);
    changes = job.changes;
    rc = job.rc;
    if (rc == TS_EDB_INDOUBT) {
        /* The index may refer to the file: keeping it can leak a file (which
         * tessera-fsck finds), removing it could leave a row without its file. */
        ts_warn("commit in doubt, file kept", "uuid=%s instance=%s", uuid, id.ids.instance);
        /* its intent stays: a deleter's reclaim pass settles it either way */
        file_in_place = false;
        temp_path = NULL;
    }
    if (rc) {
        if (err)
            *err = job.sync_failed ? sync_err : job.err;
        out->status = job.sync_failed ? INGEST_STORAGE_ERROR : status_of_db_error(rc);
        goto fail;
    }

    if (strcmp(job.status, "already_stored") == 0) {
        /* Orthanc keeps the first copy; ours goes. */
        ts_err ignored;
        ts_store_remove(ctx->store, uuid, &ignored);
        out->status = INGEST_ALREADY_STORED;
        ts_metric_inc(ctx->m_already);
    } else {
        ts_store_settle(ctx->store, uuid);
        /* An overwritten file was queued for the deleter by the same transaction. */
        if (job.old_uuid[0])
            ts_debug("instance overwritten", "old_uuid=%s", job.old_uuid);
        out->status = INGEST_STORED;
        ts_metric_inc(ctx->m_stored);
        ts_change_sequencer_nudge(ctx->sequencer);
        publish_changes(ctx, changes);
    }
    ts_metric_observe(ctx->m_seconds, now_s() - t0);
    ts_debug("instance stored", "instance=%s status=%s uuid=%s", id.ids.instance, job.status, uuid);
    rc = 0;
    goto out_free;

fail:
    /* Nothing half-stored: the file goes when the index did not take it. */
    if (file_in_place) {
        ts_err ignored;
        ts_store_remove(ctx->store, uuid, &ignored);
    } else if (temp_path) {
        unlink(temp_path);
    }
    switch (out->status) {
    case INGEST_INVALID:
    case INGEST_WRONG_CLASS:
        ts_metric_inc(ctx->m_invalid);
        break;
    case INGEST_DB_BUSY:
        ts_metric_inc(ctx->m_db_busy);
        break;
    case INGEST_STORAGE_ERROR:
        ts_metric_inc(ctx->m_storage);
        break;
    default:
        ts_metric_inc(ctx->m_failed);
        break;
    }
out_free:
    if (fd >= 0)
        close(fd);
    free(changes);
    free(ids_s);
    free(tags_s);
    free(instance_s);
    free(meta_s);
    free(dicomweb_s);
    json_decref(tags);
    json_decref(instance);
    json_decref(meta);
    ts_dicom_identity_clear(&id);
    ts_dicom_free(d);
    return rc;
}

int ingest_file(ingest_ctx *ctx, const char *temp_path, const ingest_origin *origin,
                ingest_result *out, ts_err *err)
{
    /* a small file (a spooled upload) is read once; the rest from memory */
    size_t len = 0;
    void *data = ctx->memory_threshold > 0 && !ctx->transcode_to
                     ? read_small(temp_path, ctx->memory_threshold, &len)
                     : NULL;
    int rc = ingest_instance(ctx, temp_path, data, len, origin, out, err);
    free(data);
    return rc;
}

int ingest_data(ingest_ctx *ctx, const void *data, size_t len, const ingest_origin *origin,
                ingest_result *out, ts_err *err)
{
    if (ctx->transcode_to || (long long)len > ctx->memory_threshold) {
        /* through a temporary file, as before: what transcoding reads */
        char path[4096];
        int rc = ingest_write_temp(ctx->store, data, len, path, sizeof(path), err);
        if (rc) {
            memset(out, 0, sizeof(*out));
            out->status = INGEST_STORAGE_ERROR;
            ts_metric_inc(ctx->m_storage);
            return rc;
        }
        return ingest_file(ctx, path, origin, out, err);
    }
    return ingest_instance(ctx, NULL, data, len, origin, out, err);
}
