#include "ingest_find.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "tessera.pb-c.h"
#include "base/xalloc.h"

/* Matches asked of query per bus request. */
#define PAGE 500

#define TAG_RETRIEVE_AET TS_TAG(0x0008, 0x0054)
#define TAG_INSTANCE_AVAILABILITY TS_TAG(0x0008, 0x0056)

int ingest_find_init(ingest_find *f, ts_err *err)
{
    memset(f, 0, sizeof(*f));
    f->aet = ts_cfg_str(TESSERA_DICOM_AET);
    f->limit = ts_cfg_int(TESSERA_QUERY_LIMIT);
    f->case_sensitive = ts_cfg_bool(TESSERA_QUERY_CASE_SENSITIVE_PN);
    f->timeout_ms = (int)ts_cfg_int(TESSERA_BUS_TIMEOUT) * 1000;
    const char *target = ts_cfg_str(TESSERA_QUERY_BUS);
    if (!*target)
        return 0;
    return ts_bus_client_new(target, (int)ts_cfg_int(TESSERA_BUS_RESOLVE_INTERVAL),
                             (size_t)ts_cfg_int(TESSERA_BUS_MAX_MESSAGE), &f->query, err);
}

void ingest_find_clear(ingest_find *f)
{
    if (!f)
        return;
    ts_bus_client_free(f->query);
    f->query = NULL;
}

/* C-FIND's matching: person names without case unless
 * TESSERA_QUERY_CASE_SENSITIVE_PN. */
static Tessera__CaseMatching case_matching(const ingest_find *f)
{
    return f->case_sensitive ? TESSERA__CASE_MATCHING__CASE_EXACT
                             : TESSERA__CASE_MATCHING__CASE_FOLD_PERSON_NAMES;
}

static bool parse_level(const char *s, Tessera__ResourceLevel *out)
{
    static const char *const names[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (Tessera__ResourceLevel)i;
            return true;
        }
    return false;
}

/* The level of a C-FIND/C-MOVE/C-GET identifier, valid in its model; false
 * (comment filled, logged) if it is not. */
static bool relay_level(ts_qr_model m, const char *level, const ts_dicom_assoc *assoc,
                        const char *op, Tessera__ResourceLevel *out, char *comment,
                        size_t comment_size)
{
    const char *model = m == TS_QR_PATIENT_ROOT ? "patient-root" : "study-root";
    if (parse_level(level, out) &&
        !(m == TS_QR_STUDY_ROOT && *out == TESSERA__RESOURCE_LEVEL__LEVEL_PATIENT))
        return true;
    snprintf(comment, comment_size, "QueryRetrieveLevel '%s' invalid in the %s model", level,
             model);
    ts_warn("request refused", "op=%s calling_aet=%s model=%s level=\"%s\" status=a900", op,
            assoc->calling_aet, model, level);
    return false;
}

/* The DIMSE status for a failed reply of query (the same for the three
 * operations: 0xA900 identifier does not match, 0xA700 out of resources,
 * 0xC000 unable to process). */
static uint16_t relay_status(Tessera__FindStatus st)
{
    return st == TESSERA__FIND_STATUS__FIND_BAD_REQUEST      ? TS_QR_IDENTIFIER_MISMATCH
           : st == TESSERA__FIND_STATUS__FIND_DB_UNAVAILABLE ? TS_QR_OUT_OF_RESOURCES
                                                             : TS_QR_UNABLE_TO_PROCESS;
}

/* The matching keys of an identifier (those with a value) into req->query;
 * *tvs and *tv_ptrs hold them, the caller frees both. */
static void relay_query_keys(const ts_dicom_find_key *keys, size_t n, Tessera__FindRequest *req,
                             Tessera__FindTagValue **tvs, Tessera__FindTagValue ***tv_ptrs)
{
    *tvs = xcalloc(n + 1, sizeof(**tvs));
    *tv_ptrs = xcalloc(n + 1, sizeof(**tv_ptrs));
    for (size_t i = 0; i < n; i++) {
        if (keys[i].is_sequence || !*keys[i].value)
            continue;
        Tessera__FindTagValue *tv = &(*tvs)[req->n_query];
        tessera__find_tag_value__init(tv);
        tv->tag = keys[i].tag;
        tv->value = (char *)keys[i].value;
        tv->sequence = keys[i].sequence; /* an item's key: sequence matching */
        (*tv_ptrs)[req->n_query++] = tv;
    }
    req->query = *tv_ptrs;
}

/* Sends req to query. TS_QR_SUCCESS with *rep (the caller frees it), or the
 * status to answer with (comment filled, logged). */
static uint16_t relay_call(ingest_find *f, const Tessera__FindRequest *req,
                           const ts_dicom_assoc *assoc, const char *op, const char *level,
                           Tessera__FindReply **rep, char *comment, size_t comment_size)
{
    ts_err err;
    ts_err_clear(&err);
    ProtobufCMessage *reply = NULL;
    *rep = NULL;
    if (ts_bus_call(f->query, &req->base, &tessera__find_reply__descriptor, &reply, f->timeout_ms,
                    &err)) {
        snprintf(comment, comment_size, "query service unavailable");
        ts_warn("relay failed", "op=%s calling_aet=%s status=a700 error=\"%s\"", op,
                assoc->calling_aet, err.msg);
        return TS_QR_OUT_OF_RESOURCES;
    }
    Tessera__FindReply *r = (Tessera__FindReply *)reply;
    if (r->status != TESSERA__FIND_STATUS__FIND_OK) {
        uint16_t status = relay_status(r->status);
        snprintf(comment, comment_size, "%s", r->error);
        ts_warn("relayed request failed", "op=%s calling_aet=%s level=%s status=%04x error=\"%s\"",
                op, assoc->calling_aet, level, status, r->error);
        tessera__find_reply__free_unpacked(r, NULL);
        return status;
    }
    *rep = r;
    return TS_QR_SUCCESS;
}

/* The calling AE's label grant as the request's visibility (rest's form). */
static void relay_grant(const ts_dicom_grant *grant, Tessera__FindRequest *req)
{
    req->restrict_to_labels = grant->restricted;
    req->n_visible_labels = grant->nlabels;
    req->visible_labels = (char **)grant->labels;
}

uint16_t ingest_find_relay(ingest_find *f, const ts_dicom_assoc *assoc, const ts_dicom_grant *grant,
                           const ts_dicom_find_rq *rq, ts_dicom_find_out *out, char *comment,
                           size_t comment_size)
{
    const char *model = rq->model == TS_QR_PATIENT_ROOT ? "patient-root" : "study-root";
    Tessera__FindRequest req = TESSERA__FIND_REQUEST__INIT;
    Tessera__FindTagValue *tvs = NULL, **tv_ptrs = NULL;
    uint32_t *requested = NULL;
    const char **values = NULL;
    Tessera__FindReply *rep = NULL;
    uint16_t status = TS_QR_SUCCESS;
    long sent = 0;
    bool cut = false;
    ts_err err;
    ts_err_clear(&err);

    if (!relay_level(rq->model, rq->level, assoc, "find", &req.level, comment, comment_size))
        return TS_QR_IDENTIFIER_MISMATCH;
    size_t n = rq->nkeys;
    relay_query_keys(rq->keys, n, &req, &tvs, &tv_ptrs);
    requested = xcalloc(n + 1, sizeof(*requested));
    values = xcalloc(n + 1, sizeof(*values));
    for (size_t i = 0; i < n; i++)
        requested[i] = rq->keys[i].tag;
    req.n_requested_tags = n;
    req.requested_tags = requested;
    req.case_matching = case_matching(f);
    relay_grant(grant, &req);

    for (;;) {
        long want = f->limit - sent < PAGE ? f->limit - sent : PAGE;
        if (want <= 0)
            break;
        req.limit = want;
        req.since = sent;
        status = relay_call(f, &req, assoc, "find", rq->level, &rep, comment, comment_size);
        if (status != TS_QR_SUCCESS)
            goto done;
        for (size_t m = 0; m < rep->n_matches; m++) {
            const Tessera__FindMatch *match = rep->matches[m];
            for (size_t i = 0; i < n; i++) {
                values[i] = "";
                if (rq->keys[i].tag == TAG_RETRIEVE_AET)
                    values[i] = f->aet;
                else if (rq->keys[i].tag == TAG_INSTANCE_AVAILABILITY)
                    values[i] = "ONLINE";
                else
                    for (size_t t = 0; t < match->n_tags; t++)
                        if (match->tags[t]->tag == rq->keys[i].tag)
                            values[i] = match->tags[t]->value;
            }
            int rc = ts_dicom_find_pending(out, values, TS_QR_PENDING, &err);
            if (rc == TS_ECANCELED) {
                ts_info("C-FIND cancelled", "calling_aet=%s sent=%ld", assoc->calling_aet, sent);
                status = TS_QR_CANCEL;
                goto done;
            }
            if (rc) {
                ts_warn("C-FIND answer not sent", "calling_aet=%s error=\"%s\"", assoc->calling_aet,
                        err.msg);
                status = TS_QR_UNABLE_TO_PROCESS;
                goto done;
            }
            sent++;
        }
        /* truncated: more matched than this page */
        bool last = !rep->truncated || rep->n_matches == 0;
        cut = rep->truncated && sent >= f->limit;
        tessera__find_reply__free_unpacked(rep, NULL);
        rep = NULL;
        if (last)
            break;
    }
    if (cut)
        ts_warn("C-FIND result limit reached, answers cut", "calling_aet=%s limit=%ld",
                assoc->calling_aet, f->limit);
    ts_info("C-FIND relayed", "calling_aet=%s model=%s level=%s matches=%ld", assoc->calling_aet,
            model, rq->level, sent);
done:
    if (rep)
        tessera__find_reply__free_unpacked(rep, NULL);
    free(tvs);
    free(tv_ptrs);
    free(requested);
    free(values);
    return status;
}

uint16_t ingest_find_instances(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                               const char *op, const ts_dicom_grant *grant, ts_retrieve_list *list,
                               char *comment, size_t comment_size)
{
    ingest_find *f = user;
    Tessera__FindRequest req = TESSERA__FIND_REQUEST__INIT;
    Tessera__FindTagValue *tvs = NULL, **tv_ptrs = NULL;
    Tessera__FindReply *rep = NULL;
    uint16_t status;

    if (!relay_level(rq->model, rq->level, assoc, op, &req.level, comment, comment_size))
        return TS_QR_IDENTIFIER_MISMATCH;
    relay_query_keys(rq->keys, rq->nkeys, &req, &tvs, &tv_ptrs);
    req.case_matching = case_matching(f);
    req.retrieve = true;
    relay_grant(grant, &req);
    status = relay_call(f, &req, assoc, op, rq->level, &rep, comment, comment_size);
    if (status != TS_QR_SUCCESS)
        goto done;
    for (size_t m = 0; m < rep->n_matches; m++) {
        const Tessera__FindMatch *match = rep->matches[m];
        const char *uid = "";
        for (size_t t = 0; t < match->n_tags; t++)
            if (match->tags[t]->tag == TS_TAG_SOP_INSTANCE_UID)
                uid = match->tags[t]->value;
        ts_retrieve_list_add(list, uid, match->file);
    }
    ts_debug("retrieve relayed", "op=%s calling_aet=%s level=%s instances=%zu", op,
             assoc->calling_aet, rq->level, list->n);
done:
    if (rep)
        tessera__find_reply__free_unpacked(rep, NULL);
    free(tvs);
    free(tv_ptrs);
    return status;
}
