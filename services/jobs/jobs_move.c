/* DicomMoveScu (see jobs_move.h). Each C-MOVE runs to its end before a pause
 * or cancel is looked at: a C-MOVE cannot be resumed half-way, and the one
 * asked again after a resubmit costs duplicates, never losses. */
#include "jobs_move.h"

#include <stdio.h>
#include <string.h>

#include "dicom/dicom_qr_scu.h"
#include "base/log.h"

void jobs_move_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    json_t *resources = json_object_get(c->input, "Resources");
    const char *aet = json_string_value(json_object_get(c->input, "AET"));
    const char *host = json_string_value(json_object_get(c->input, "Host"));
    int port = (int)json_integer_value(json_object_get(c->input, "Port"));
    const char *local = json_string_value(json_object_get(c->input, "LocalAet"));
    const char *target = json_string_value(json_object_get(c->input, "TargetAet"));
    int timeout = (int)json_integer_value(json_object_get(c->input, "Timeout"));
    bool permissive = json_is_true(json_object_get(c->input, "Permissive"));
    json_t *done = NULL;

    memset(out, 0, sizeof(*out));
    if (!json_is_array(resources) || !aet || !host || port <= 0 || !target) {
        jobs_fail(out, TS_OE_BAD_FILE_FORMAT, "malformed job input");
        goto out;
    }
    ts_dicom_peer peer = {.our_aet = local && *local ? local : w->svc->our_aet,
                          .aet = aet,
                          .host = host,
                          .port = port,
                          .timeout_s = timeout > 0 ? timeout : w->svc->dicom_timeout_s,
                          .tls = json_is_true(json_object_get(c->input, "UseDicomTls"))};
    if (!(done = jobs_done_items(w, c))) {
        out->interrupted = true;
        goto out;
    }
    size_t total = json_array_size(resources), ndone = json_object_size(done);
    if (c->taken_over || ndone)
        ts_info("move job resumed", "job=%s moved=%zu total=%zu taken_over=%d", c->id, ndone, total,
                c->taken_over);
    for (size_t i = 0; i < total; i++) {
        char item[24];
        snprintf(item, sizeof(item), "%zu", i);
        if (json_object_get(done, item))
            continue;
        if (jobs_worker_interrupted(w)) {
            out->interrupted = true;
            goto out;
        }
        ts_err err;
        if (ts_dicom_move_scu(&peer, target, json_array_get(resources, i), &err)) {
            ts_warn("C-MOVE failed", "job=%s remote=%s target=%s error=\"%s\"", c->id, aet, target,
                    err.msg);
            if (!permissive) {
                jobs_fail(out, TS_OE_NETWORK_PROTOCOL, err.msg);
                goto out;
            }
        }
        ndone++;
        const char *items[] = {item};
        if (!jobs_record(w, c, items, 1, (int)(ndone * 100 / total))) {
            out->interrupted = true;
            goto out;
        }
    }
out:
    json_decref(done);
}
