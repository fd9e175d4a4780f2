/* OrthancPeerStore (see jobs_peer.h): each instance is one POST /instances
 * of its file to the peer, over one kept-alive libcurl connection. Confirmed
 * instances (HTTP 200) are recorded in the job's done set every 16 instances
 * or half a second, so a resubmitted or taken-over job sends only the rest. */
#include "jobs_peer.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "jobs_modify.h"
#include "dicom/codecs.h"

#define LOOKUP 64 /* instances whose files are looked up at once */
#define RECORD_EVERY 16
#define ANSWER_MAX 65536

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The peer's answer is not needed, only its status: keep a bounded amount. */
static size_t discard(char *ptr, size_t size, size_t nmemb, void *user)
{
    size_t *total = user;
    *total += size * nmemb;
    return *total > ANSWER_MAX ? 0 : size * nmemb;
}

/* POSTs one file; 0 when the peer answered 200, else fills details. */
static int post_instance(CURL *curl, const char *url, const void *data, size_t len, char *details,
                         size_t size)
{
    size_t answered = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answered);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(details, size, "libCURL error: %s", curl_easy_strerror(cc));
        return -1;
    }
    if (status != 200) {
        snprintf(details, size, "the peer answered HTTP status %ld to POST %.150s", status, url);
        return -1;
    }
    return 0;
}

/* A route's anonymize/modify then store: *data (the stored file) becomes the
 * modified copy (jobs_route_modified_file), read back from its temporary file. */
static int modified(jobs_worker *w, ts_modify *m, const char *uuid, void **data, size_t *len,
                    ts_oe *oe, ts_err *err)
{
    char file[4096], copy[4096];
    int rc = ts_store_path(w->svc->store, uuid, file, sizeof(file), err);
    if (!rc)
        rc = jobs_route_modified_file(w, m, file, copy, sizeof(copy), oe, err);
    if (rc)
        return rc;
    FILE *f = fopen(copy, "rb");
    void *buf = NULL;
    long size = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) != NULL &&
        fread(buf, 1, (size_t)size, f) == (size_t)size) {
        free(*data);
        *data = buf;
        *len = (size_t)size;
    } else {
        free(buf);
        rc = ts_err_set(err, TS_EIO, "cannot read the modified copy %s", copy);
    }
    if (f)
        fclose(f);
    unlink(copy);
    return rc;
}

void jobs_peer_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    json_t *instances = json_object_get(c->input, "Instances");
    const char *base = json_string_value(json_object_get(c->input, "Url"));
    const char *user = json_string_value(json_object_get(c->input, "Username"));
    const char *password = json_string_value(json_object_get(c->input, "Password"));
    long timeout = (long)json_integer_value(json_object_get(c->input, "Timeout"));
    bool permissive = json_is_true(json_object_get(c->input, "Permissive"));
    const char *transcode = json_string_value(json_object_get(c->input, "Transcode"));
    json_t *done = NULL;
    const char **todo = NULL;
    const char *sent[RECORD_EVERY];
    size_t nsent = 0, failed = 0, total = 0, ntodo = 0, ndone = 0;
    char *uuids[LOOKUP] = {0};
    struct curl_slist *headers = NULL;
    CURL *curl = NULL;
    ts_modify *m = NULL;

    memset(out, 0, sizeof(*out));
    bool bad = false;
    if (!(m = jobs_route_modification(c->input, &bad, out)) && bad)
        goto out;
    if (!json_is_array(instances) || !base) {
        jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed job input");
        goto out;
    }
    if (!(done = jobs_done_items(w, c))) {
        out->interrupted = true;
        goto out;
    }
    total = json_array_size(instances);
    todo = calloc(total + 1, sizeof(*todo));
    if (!todo)
        abort();
    size_t i;
    json_t *v;
    json_array_foreach(instances, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !ts_id_is_valid(id)) {
            jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed instance id in job input");
            goto out;
        }
        if (json_object_get(done, id))
            ndone++;
        else
            todo[ntodo++] = id;
    }
    if (c->taken_over || ndone)
        ts_info("peer store job resumed", "job=%s confirmed=%zu remaining=%zu taken_over=%d", c->id,
                ndone, ntodo, c->taken_over);
    char url[1200];
    snprintf(url, sizeof(url), "%sinstances", base);
    curl = curl_easy_init();
    if (!curl)
        abort();
    headers = curl_slist_append(headers, "Content-Type: application/dicom");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout > 0 ? timeout : 60L);
    if (user) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, password ? password : "");
    }
    json_object_set_new(c->content, "FailedInstancesCount", json_integer(0));
    double last_record = now_s();
    for (size_t pos = 0; pos < ntodo; pos += LOOKUP) {
        size_t n = ntodo - pos < LOOKUP ? ntodo - pos : LOOKUP;
        ts_err err;
        if (jobs_instance_files(w, todo + pos, n, uuids, &err)) {
            jobs_fail(out, TS_OE_DATABASE_UNAVAILABLE, err.msg);
            goto out;
        }
        for (size_t k = 0; k < n; k++) {
            if (jobs_worker_interrupted(w)) {
                out->interrupted = true;
                goto out;
            }
            char details[256];
            void *data = NULL;
            size_t len = 0;
            int rc =
                uuids[k] ? ts_store_read(w->svc->store, uuids[k], &data, &len, &err) : TS_ENOTFOUND;
            ts_oe oe = TS_OE_BAD_FILE_FORMAT;
            if (!rc && m && (rc = modified(w, m, uuids[k], &data, &len, &oe, &err)) != 0) {
                free(data);
                data = NULL;
                char why[600];
                snprintf(why, sizeof(why), "modifying instance %s: %s", todo[pos + k], err.msg);
                jobs_fail(out, oe, why);
                goto out;
            }
            if (rc) {
                snprintf(details, sizeof(details), "instance %s is no longer stored",
                         todo[pos + k]);
                if (!permissive) {
                    jobs_fail(out, TS_OE_UNKNOWN_RESOURCE, details);
                    goto out;
                }
                failed++;
                continue;
            }
            if (transcode) {
                /* Orthanc's rule: what cannot be converted goes as stored */
                void *conv = NULL;
                size_t clen = 0;
                if (ts_dicom_transcode_buffer(data, len, transcode, TS_TRANSCODE_ALLOW_LOSSY, &conv,
                                              &clen, &err))
                    ts_warn("peer store: sending the instance as stored",
                            "job=%s instance=%s transcode=%s error=\"%s\"", c->id, todo[pos + k],
                            transcode, err.msg);
                if (conv) {
                    free(data);
                    data = conv;
                    len = clen;
                }
            }
            rc = post_instance(curl, url, data, len, details, sizeof(details));
            free(data);
            if (rc && !permissive) {
                jobs_fail(out, TS_OE_NETWORK_PROTOCOL, details);
                goto out;
            }
            if (rc) {
                failed++;
                continue;
            }
            sent[nsent++] = todo[pos + k];
            if (nsent == RECORD_EVERY || now_s() - last_record > 0.5) {
                ndone += nsent;
                json_object_set_new(c->content, "FailedInstancesCount",
                                    json_integer((json_int_t)failed));
                if (!jobs_record(w, c, sent, nsent, (int)((ndone + failed) * 100 / total))) {
                    out->interrupted = true;
                    nsent = 0;
                    goto out;
                }
                nsent = 0;
                last_record = now_s();
            }
        }
    }
out:
    /* what was confirmed before a failure or an interruption is kept */
    if (nsent) {
        ndone += nsent;
        json_object_set_new(c->content, "FailedInstancesCount", json_integer((json_int_t)failed));
        jobs_record(w, c, sent, nsent, (int)(ndone * 100 / (total ? total : 1)));
    } else if (c->content && !out->interrupted) {
        json_object_set_new(c->content, "FailedInstancesCount", json_integer((json_int_t)failed));
    }
    for (size_t k = 0; k < LOOKUP; k++)
        free(uuids[k]);
    ts_modify_free(m);
    curl_slist_free_all(headers);
    if (curl)
        curl_easy_cleanup(curl);
    free(todo);
    json_decref(done);
}
