/* The BulkDelete job (see jobs_bulk_delete.h). */
#include "jobs_bulk_delete.h"

#include <stdio.h>
#include <string.h>

#include "domain/delete.h"
#include "base/log.h"
#include "tessera.pb-c.h"

void jobs_bulk_delete_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out)
{
    const json_t *list = json_object_get(c->input, "Resources");
    size_t n = json_array_size(list);
    json_t *done = jobs_done_items(w, c);
    if (!done) {
        out->interrupted = true; /* Redis away: left to be taken over */
        return;
    }
    json_int_t deleted = json_integer_value(json_object_get(c->content, "DeletedResourcesCount"));
    for (size_t i = 0; i < n; i++) {
        if (jobs_worker_interrupted(w)) {
            out->interrupted = true;
            break;
        }
        const char *id = json_string_value(json_array_get(list, i));
        if (!id || json_object_get(done, id))
            continue;
        ts_err err;
        ts_deleted d;
        int rc = ts_delete_resource(w->svc->db, id, -1, &d, &err);
        if (rc < 0) {
            jobs_fail(out, rc == TS_EDB_BUSY ? TS_OE_DATABASE_UNAVAILABLE : TS_OE_INTERNAL_ERROR,
                      err.msg);
            break;
        }
        if (rc == 1) {
            deleted++;
            ts_info("deleted", "job=%s id=%s resources_removed=%lld", c->id, id, d.removed);
            if (d.removed && w->svc->deleters) {
                Tessera__DeletionNudge nudge = TESSERA__DELETION_NUDGE__INIT;
                ts_bus_push(w->svc->deleters, &nudge.base);
            }
        }
        json_object_set_new(c->content, "DeletedResourcesCount", json_integer(deleted));
        const char *items[] = {id};
        int progress = (int)((i + 1) * 100 / n);
        if (!jobs_record(w, c, items, 1, progress > 99 ? 99 : progress)) {
            out->interrupted = true;
            break;
        }
        json_object_set_new(done, id, json_true());
    }
    json_decref(done);
}
