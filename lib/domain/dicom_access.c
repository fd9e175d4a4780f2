/* Grants of calling AE titles and the audit of DICOM requests (see dicom_access.h). */
#include "domain/dicom_access.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "base/xalloc.h"

/* AE titles cached at once; past it the oldest entry goes. */
#define CACHE_SIZE 64

static const char *const op_names[TS_DICOM_OP_COUNT] = {"C-STORE", "C-FIND", "C-MOVE", "C-GET"};
static const char *const op_actions[TS_DICOM_OP_COUNT] = {"store", "query", "export", "export"};

typedef struct cache_entry {
    char aet[17];
    double expires; /* monotonic seconds; 0: empty slot */
    ts_dicom_grant grant;
} cache_entry;

struct ts_dicom_access {
    ts_db_pool *db;
    ts_dicom_access_config cfg;
    ts_audit *audit;
    pthread_mutex_t mu;
    cache_entry cache[CACHE_SIZE];
};

/* One row per modality with this AE title: its four flags and its labels
 * ('{}' or NULL as "" / no restriction). */
static const ts_db_stmt grants_stmt = {
    "dicom_access_grants",
    "SELECT allow_store::text, allow_find::text, allow_move::text, allow_get::text,"
    " (allowed_labels IS NULL)::text, coalesce(array_to_string(allowed_labels, ','), '')"
    " FROM modalities WHERE aet = $1",
    1};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ts_dicom_access_config_from_settings(ts_dicom_access_config *cfg)
{
    cfg->always_allow[TS_DICOM_OP_STORE] = ts_cfg_bool(TESSERA_DICOM_ALWAYS_ALLOW_STORE);
    cfg->always_allow[TS_DICOM_OP_FIND] = ts_cfg_bool(TESSERA_DICOM_ALWAYS_ALLOW_FIND);
    cfg->always_allow[TS_DICOM_OP_MOVE] = ts_cfg_bool(TESSERA_DICOM_ALWAYS_ALLOW_MOVE);
    cfg->always_allow[TS_DICOM_OP_GET] = ts_cfg_bool(TESSERA_DICOM_ALWAYS_ALLOW_GET);
    cfg->cache_s = (int)ts_cfg_int(TESSERA_DICOM_GRANTS_CACHE);
}

ts_dicom_access *ts_dicom_access_new(ts_db_pool *db, const ts_dicom_access_config *cfg,
                                     ts_audit *audit)
{
    ts_dicom_access *a = xcalloc(1, sizeof(*a));
    a->db = db;
    a->cfg = *cfg;
    a->audit = audit;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void ts_dicom_grant_clear(ts_dicom_grant *g)
{
    free(g->labels);
    free(g->buf);
    memset(g, 0, sizeof(*g));
}

void ts_dicom_access_free(ts_dicom_access *a)
{
    if (!a)
        return;
    for (int i = 0; i < CACHE_SIZE; i++)
        ts_dicom_grant_clear(&a->cache[i].grant);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* Makes g's label list from buf, a comma-separated list (taken over). */
static void grant_set_labels(ts_dicom_grant *g, char *buf)
{
    g->buf = buf;
    size_t n = *buf ? 1 : 0;
    for (const char *p = buf; *p; p++)
        n += *p == ',';
    g->labels = xcalloc(n + 1, sizeof(*g->labels));
    g->nlabels = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        g->labels[g->nlabels++] = t;
}

static void grant_copy(ts_dicom_grant *dst, const ts_dicom_grant *src)
{
    *dst = *src;
    dst->buf = NULL;
    dst->labels = NULL;
    /* rebuilt from the names joined again */
    size_t len = 1;
    for (size_t i = 0; i < src->nlabels; i++)
        len += strlen(src->labels[i]) + 1;
    char *buf = xcalloc(len, 1);
    for (size_t i = 0, off = 0; i < src->nlabels; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", src->labels[i]);
    grant_set_labels(dst, buf);
}

typedef struct lookup_arg {
    const char *aet;
    ts_dicom_grant g;
} lookup_arg;

static int lookup_txn(ts_db *db, void *arg, ts_err *err)
{
    lookup_arg *l = arg;
    ts_dicom_grant_clear(&l->g); /* a replay starts again */
    const char *params[] = {l->aet};
    PGresult *res;
    int rc = ts_db_exec(db, &grants_stmt, params, &res, err);
    if (rc)
        return rc;
    int rows = PQntuples(res);
    l->g.known = rows > 0;
    l->g.restricted = rows > 0;
    size_t len = 1;
    for (int r = 0; r < rows; r++)
        len += strlen(PQgetvalue(res, r, 5)) + 1;
    char *labels = xcalloc(len, 1);
    size_t off = 0;
    for (int r = 0; r < rows; r++) {
        for (int op = 0; op < TS_DICOM_OP_COUNT; op++)
            if (strcmp(PQgetvalue(res, r, op), "true") == 0)
                l->g.allow[op] = true;
        if (strcmp(PQgetvalue(res, r, 4), "true") == 0)
            l->g.restricted = false; /* one row without labels: every study */
        const char *v = PQgetvalue(res, r, 5);
        if (*v)
            off += (size_t)snprintf(labels + off, len - off, "%s%s", off ? "," : "", v);
    }
    PQclear(res);
    if (!l->g.restricted)
        labels[0] = '\0';
    grant_set_labels(&l->g, labels);
    return 0;
}

bool ts_dicom_access_registered(ts_dicom_access *a, const char *aet)
{
    ts_dicom_grant g;
    ts_err err;
    if (ts_dicom_access_lookup(a, aet, &g, &err)) {
        ts_warn("cannot check the calling AE title; association rejected", "error=\"%s\"", err.msg);
        return false;
    }
    bool known = g.known;
    ts_dicom_grant_clear(&g);
    return known;
}

int ts_dicom_access_lookup(ts_dicom_access *a, const char *aet, ts_dicom_grant *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    double now = now_s();
    if (a->cfg.cache_s > 0) {
        pthread_mutex_lock(&a->mu);
        for (int i = 0; i < CACHE_SIZE; i++) {
            cache_entry *e = &a->cache[i];
            if (e->expires > now && strcmp(e->aet, aet) == 0) {
                grant_copy(out, &e->grant);
                pthread_mutex_unlock(&a->mu);
                return 0;
            }
        }
        pthread_mutex_unlock(&a->mu);
    }
    lookup_arg l = {.aet = aet};
    int rc = ts_db_transaction(a->db, TS_DB_READ_SINGLE, lookup_txn, &l, err);
    if (rc) {
        ts_dicom_grant_clear(&l.g);
        return rc;
    }
    *out = l.g;
    if (a->cfg.cache_s > 0) {
        pthread_mutex_lock(&a->mu);
        /* the same AE title's slot, else an expired one, else the oldest */
        cache_entry *slot = &a->cache[0];
        for (int i = 0; i < CACHE_SIZE; i++) {
            cache_entry *e = &a->cache[i];
            if (strcmp(e->aet, aet) == 0) {
                slot = e;
                break;
            }
            if (e->expires < slot->expires)
                slot = e;
        }
        ts_dicom_grant_clear(&slot->grant);
        snprintf(slot->aet, sizeof(slot->aet), "%s", aet);
        slot->expires = now + a->cfg.cache_s;
        grant_copy(&slot->grant, out);
        pthread_mutex_unlock(&a->mu);
    }
    return 0;
}

uint16_t ts_dicom_access_check(ts_dicom_access *a, const ts_dicom_assoc *assoc, ts_dicom_op op,
                               ts_dicom_grant *g, char *comment, size_t comment_size)
{
    memset(g, 0, sizeof(*g));
    if (!a) {
        for (int i = 0; i < TS_DICOM_OP_COUNT; i++)
            g->allow[i] = true;
        return TS_QR_SUCCESS;
    }
    ts_err err;
    ts_err_clear(&err);
    if (ts_dicom_access_lookup(a, assoc->calling_aet, g, &err)) {
        snprintf(comment, comment_size, "cannot read the grants of the calling AE title");
        ts_warn("DICOM request refused: grants unreadable",
                "op=%s calling_aet=%s peer=%s status=a700 error=\"%s\"", op_names[op],
                assoc->calling_aet, assoc->peer_ip, err.msg);
        return TS_QR_OUT_OF_RESOURCES;
    }
    bool allowed = g->known ? g->allow[op] : a->cfg.always_allow[op];
    if (allowed)
        return TS_QR_SUCCESS;
    snprintf(comment, comment_size, "%s not allowed for AE title %s", op_names[op],
             assoc->calling_aet);
    ts_warn("DICOM request refused: not authorized",
            "op=%s calling_aet=%s peer=%s registered=%d status=0124", op_names[op],
            assoc->calling_aet, assoc->peer_ip, g->known);
    return TS_DIMSE_NOT_AUTHORIZED;
}

void ts_dicom_access_audit(ts_dicom_access *a, const ts_dicom_assoc *assoc, ts_dicom_op op,
                           const char *request, const char *resources, uint16_t status)
{
    if (!a || !a->audit)
        return;
    char req[256];
    snprintf(req, sizeof(req), "%s%s%.200s", op_names[op], *request ? " " : "", request);
    ts_audit_event e = {.who = assoc->calling_aet,
                        .who_kind = "aet",
                        .action = op_actions[op],
                        .resources = resources ? resources : "",
                        .source = assoc->peer_ip,
                        .request = req,
                        .outcome = status};
    ts_audit_record(a->audit, &e);
}

void ts_dicom_access_keys(const ts_dicom_find_key *keys, size_t n, char *buf, size_t size)
{
    static const uint32_t unique[] = {TS_TAG(0x0010, 0x0020), TS_TAG(0x0020, 0x000D),
                                      TS_TAG(0x0020, 0x000E), TS_TAG(0x0008, 0x0018),
                                      TS_TAG(0x0008, 0x0050)};
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 1 < size; i++) {
        bool wanted = false;
        for (size_t u = 0; u < sizeof(unique) / sizeof(unique[0]); u++)
            wanted = wanted || keys[i].tag == unique[u];
        if (!wanted || keys[i].is_sequence || keys[i].sequence || !*keys[i].value)
            continue;
        /* a list of UIDs (value multiplicity) becomes one resource each */
        for (const char *p = keys[i].value; *p && off + 1 < size; p++)
            buf[off++] = *p == '\\' ? ',' : *p;
        if (off + 1 < size)
            buf[off++] = ',';
    }
    if (off > 0 && buf[off - 1] == ',')
        off--;
    buf[off < size ? off : size - 1] = '\0';
}
