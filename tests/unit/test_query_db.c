/* services/query against a real PostgreSQL (TESSERA_TEST_DB_URL, set by
 * scripts/test; skipped without one): query_run's matches and computed keys on
 * a small index written in SQL, and the bus endpoint `find` (query_bus_handle)
 * with packed requests as REST will send them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/bus.h"
#include "io/db.h"
#include "dicom/dicom.h"
#include "base/log.h"
#include "io/migrate.h"
#include "query_bus.h"
#include "query_match.h"
#include "tessera.pb-c.h"
#include "unit_pg.h"

#define PATIENT_NAME TS_TAG(0x0010, 0x0010)
#define PATIENT_ID TS_TAG(0x0010, 0x0020)
#define STUDY_DATE TS_TAG(0x0008, 0x0020)
#define STUDY_UID TS_TAG(0x0020, 0x000d)
#define MODALITIES TS_TAG(0x0008, 0x0061)
#define N_STUDY_SERIES TS_TAG(0x0020, 0x1206)
#define N_STUDY_INSTANCES TS_TAG(0x0020, 0x1208)
#define SOP_CLASSES TS_TAG(0x0008, 0x0062)
#define SOP_UID TS_TAG(0x0008, 0x0018)

static ts_db_pool *pool;
static char db_url[512];

/* Two patients; patient 1 has study A (2020, CT + MR series, 3 instances) and
 * study B (2021, CT, 1 instance); patient 2 has study C (2022, MR, 2). */
static const char *DATA =
    "INSERT INTO resources (id, level, public_id, parent_id) VALUES"
    " (1,0,'p1',NULL),(2,0,'p2',NULL),"
    " (10,1,'sa',1),(11,1,'sb',1),(12,1,'sc',2),"
    " (20,2,'sea1',10),(21,2,'sea2',10),(22,2,'seb',11),(23,2,'sec',12),"
    " (30,3,'i1',20),(31,3,'i2',20),(32,3,'i3',21),(33,3,'i4',22),(34,3,'i5',23),(35,3,'i6',23);"
    "INSERT INTO patients (resource_id, patient_id, patient_name, patient_name_norm) VALUES"
    " (1,'P1','Doe^John','DOE^JOHN'),(2,'P2','Roe^Jane','ROE^JANE');"
    "INSERT INTO studies (resource_id, study_instance_uid, study_date, modalities_in_study) VALUES"
    " (10,'1.1','20200301','{CT,MR}'),(11,'1.2','20210301','{CT}'),(12,'1.3','20220301','{MR}');"
    "INSERT INTO series (resource_id, series_instance_uid, modality) VALUES"
    " (20,'1.1.1','CT'),(21,'1.1.2','MR'),(22,'1.2.1','CT'),(23,'1.3.1','MR');"
    "INSERT INTO instances (resource_id, sop_instance_uid, sop_class_uid) VALUES"
    " (30,'1.1.1.1','1.2.840.10008.5.1.4.1.1.2'),(31,'1.1.1.2','1.2.840.10008.5.1.4.1.1.2'),"
    " (32,'1.1.2.1','1.2.840.10008.5.1.4.1.1.4'),(33,'1.2.1.1','1.2.840.10008.5.1.4.1.1.2'),"
    " (34,'1.3.1.1','1.2.840.10008.5.1.4.1.1.4'),(35,'1.3.1.2','1.2.840.10008.5.1.4.1.1.4');";

static int setup(void **state)
{
    char url[512];
    if (unit_pg_new_database("unit_query", url, sizeof(url)))
        return -1;
    static char url_copy[512];
    snprintf(url_copy, sizeof(url_copy), "%s", url);
    snprintf(db_url, sizeof(db_url), "%s", url);
    if (unit_pg_pool(url_copy, 2, "read-committed", &pool))
        return -1;
    return unit_pg_exec(url, DATA);
}

static int teardown(void **state)
{
    ts_db_pool_free(pool);
    return 0;
}

static void run(ts_level level, const query_key *keys, size_t n, long limit, query_result *res)
{
    query_spec spec = {.level = level, .keys = keys, .nkeys = n, .limit = limit};
    ts_err err;
    ts_err_clear(&err);
    if (query_run(pool, &spec, res, &err))
        fail_msg("query_run: %s", err.msg);
}

static void test_matches_and_computed_keys(void **state)
{
    query_key keys[] = {{PATIENT_NAME, "doe*"}, {STUDY_UID, ""},         {MODALITIES, ""},
                        {N_STUDY_SERIES, ""},   {N_STUDY_INSTANCES, ""}, {SOP_CLASSES, ""}};
    query_result res;
    run(TS_LEVEL_STUDY, keys, 6, 0, &res);
    assert_int_equal(res.nrows, 2);
    assert_false(res.truncated);
    assert_string_equal(query_result_id(&res, 0), "sa");
    assert_string_equal(query_result_value(&res, 0, 1), "1.1");
    assert_string_equal(query_result_value(&res, 0, 2), "CT\\MR");
    assert_string_equal(query_result_value(&res, 0, 3), "2");
    assert_string_equal(query_result_value(&res, 0, 4), "3");
    assert_string_equal(query_result_value(&res, 0, 5),
                        "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4");
    assert_string_equal(query_result_id(&res, 1), "sb");
    assert_string_equal(query_result_value(&res, 1, 4), "1");
    query_result_clear(&res);
}

static void test_ranges_lists_and_limit(void **state)
{
    query_key range[] = {{STUDY_DATE, "20210101-"}};
    query_result res;
    run(TS_LEVEL_STUDY, range, 1, 0, &res);
    assert_int_equal(res.nrows, 2);
    query_result_clear(&res);

    query_key list[] = {{SOP_UID, "1.1.1.2\\1.3.1.1\\9.9"}};
    run(TS_LEVEL_INSTANCE, list, 1, 0, &res);
    assert_int_equal(res.nrows, 2);
    assert_string_equal(query_result_id(&res, 0), "i2");
    assert_string_equal(query_result_id(&res, 1), "i5");
    query_result_clear(&res);

    query_key all[] = {{SOP_UID, ""}};
    run(TS_LEVEL_INSTANCE, all, 1, 4, &res);
    assert_int_equal(res.nrows, 4);
    assert_true(res.truncated);
    query_result_clear(&res);
    run(TS_LEVEL_INSTANCE, all, 1, 6, &res);
    assert_int_equal(res.nrows, 6);
    assert_false(res.truncated);
    query_result_clear(&res);
}

static Tessera__FindReply *call_bus(Tessera__FindRequest *req)
{
    query_bus_ctx ctx = {.db = pool, .limit = 100};
    size_t len, rlen;
    uint8_t *buf = ts_bus_pack(&req->base, &len);
    uint8_t *reply = NULL;
    assert_int_equal(query_bus_handle(&ctx, buf, len, &reply, &rlen), 0);
    Tessera__FindReply *rep = tessera__find_reply__unpack(NULL, rlen, reply);
    assert_non_null(rep);
    free(buf);
    free(reply);
    return rep;
}

static void test_bus_find(void **state)
{
    Tessera__FindTagValue q1 = TESSERA__FIND_TAG_VALUE__INIT;
    q1.tag = MODALITIES;
    q1.value = "MR";
    Tessera__FindTagValue *qs[] = {&q1};
    uint32_t requested[] = {STUDY_UID, PATIENT_ID};
    Tessera__FindRequest req = TESSERA__FIND_REQUEST__INIT;
    req.level = TESSERA__RESOURCE_LEVEL__LEVEL_STUDY;
    req.n_query = 1;
    req.query = qs;
    req.n_requested_tags = 2;
    req.requested_tags = requested;
    Tessera__FindReply *rep = call_bus(&req);
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_OK);
    assert_int_equal(rep->n_matches, 2);
    assert_string_equal(rep->matches[0]->public_id, "sa");
    assert_int_equal(rep->matches[0]->n_tags, 3);
    assert_int_equal(rep->matches[0]->tags[0]->tag, MODALITIES);
    assert_string_equal(rep->matches[0]->tags[0]->value, "CT\\MR");
    assert_string_equal(rep->matches[0]->tags[1]->value, "1.1");
    assert_string_equal(rep->matches[0]->tags[2]->value, "P1");
    assert_string_equal(rep->matches[1]->public_id, "sc");
    tessera__find_reply__free_unpacked(rep, NULL);

    /* paging: limit 1 from the second match */
    req.limit = 1;
    req.since = 1;
    rep = call_bus(&req);
    assert_int_equal(rep->n_matches, 1);
    assert_string_equal(rep->matches[0]->public_id, "sc");
    assert_false(rep->truncated);
    tessera__find_reply__free_unpacked(rep, NULL);

    /* expand: every known tag of the level and above */
    req.limit = 0;
    req.since = 0;
    req.n_requested_tags = 0;
    req.expand = true;
    rep = call_bus(&req);
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_OK);
    assert_true(rep->matches[0]->n_tags > 15);
    tessera__find_reply__free_unpacked(rep, NULL);
}

static void test_bus_bad_requests(void **state)
{
    Tessera__FindTagValue q1 = TESSERA__FIND_TAG_VALUE__INIT;
    q1.tag = STUDY_DATE;
    q1.value = "2020-2021";
    Tessera__FindTagValue *qs[] = {&q1};
    Tessera__FindRequest req = TESSERA__FIND_REQUEST__INIT;
    req.level = TESSERA__RESOURCE_LEVEL__LEVEL_STUDY;
    req.n_query = 1;
    req.query = qs;
    Tessera__FindReply *rep = call_bus(&req);
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_BAD_REQUEST);
    assert_non_null(strstr(rep->error, "StudyDate"));
    tessera__find_reply__free_unpacked(rep, NULL);

    req.n_query = 0;
    req.level = 9;
    rep = call_bus(&req);
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_BAD_REQUEST);
    tessera__find_reply__free_unpacked(rep, NULL);

    query_bus_ctx ctx = {.db = pool, .limit = 100};
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *reply = NULL;
    size_t rlen;
    assert_int_equal(query_bus_handle(&ctx, junk, sizeof(junk), &reply, &rlen), 0);
    rep = tessera__find_reply__unpack(NULL, rlen, reply);
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_BAD_REQUEST);
    tessera__find_reply__free_unpacked(rep, NULL);
    free(reply);
}

/* The same endpoint behind a real REP socket, called as REST will call it. */
static void test_bus_find_over_a_socket(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "ipc:///tmp/test_query_db_%d.sock", (int)getpid());
    query_bus_ctx ctx = {.db = pool, .limit = 100};
    ts_bus_server *srv = NULL;
    ts_bus_client *c = NULL;
    ts_err err;
    assert_int_equal(ts_bus_server_start(url, 1 << 20, 2, query_bus_handle, &ctx, &srv, &err), 0);
    assert_int_equal(ts_bus_client_new(url, 1, 1 << 20, &c, &err), 0);
    Tessera__FindTagValue q1 = TESSERA__FIND_TAG_VALUE__INIT;
    q1.tag = PATIENT_NAME;
    q1.value = "ROE*";
    Tessera__FindTagValue *qs[] = {&q1};
    Tessera__FindRequest req = TESSERA__FIND_REQUEST__INIT;
    req.level = TESSERA__RESOURCE_LEVEL__LEVEL_INSTANCE;
    req.n_query = 1;
    req.query = qs;
    ProtobufCMessage *reply = NULL;
    assert_int_equal(
        ts_bus_call(c, &req.base, &tessera__find_reply__descriptor, &reply, 5000, &err), 0);
    Tessera__FindReply *rep = (Tessera__FindReply *)reply;
    assert_int_equal(rep->status, TESSERA__FIND_STATUS__FIND_OK);
    assert_int_equal(rep->n_matches, 2);
    assert_string_equal(rep->matches[0]->public_id, "i5");
    assert_string_equal(rep->matches[1]->public_id, "i6");
    assert_string_equal(rep->matches[0]->tags[0]->value, "Roe^Jane");
    protobuf_c_message_free_unpacked(reply, NULL);
    ts_bus_client_free(c);
    ts_bus_server_free(srv);
}

/* The plan and estimated cost of spec's statement on db_url. */
static double explain(const query_spec *spec, char *plan, size_t size)
{
    query_sql q;
    ts_err err;
    if (query_build(spec, &q, &err))
        fail_msg("query_build: %s", err.msg);
    char *sql = malloc(strlen(q.sql) + 16);
    sprintf(sql, "EXPLAIN %s", q.sql);
    PGconn *c = PQconnectdb(db_url);
    if (q.no_seqscan) /* as the runner does (run_txn) */
        PQclear(PQexec(c, "SET enable_mergejoin = off; SET enable_hashjoin = off;"
                          " SET enable_seqscan = off"));
    PGresult *res =
        PQexecParams(c, sql, q.nparams, NULL, (const char *const *)q.params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    size_t n = 0;
    plan[0] = '\0';
    for (int i = 0; i < PQntuples(res); i++)
        n += (size_t)snprintf(plan + n, n < size ? size - n : 0, "%s\n", PQgetvalue(res, i, 0));
    const char *cost = strstr(PQgetvalue(res, 0, 0), "..");
    double total = cost ? strtod(cost + 2, NULL) : -1;
    PQclear(res);
    PQfinish(c);
    free(sql);
    query_sql_clear(&q);
    return total;
}

/* The restriction alone on a small index (this file's 15 resources). At series
 * and instance level the planner takes the visible ids for 10 and would compare
 * every resource with every one of them in a sequential scan; the runner turns
 * sequential scans off for that statement, so the ids go through the primary
 * key, and the answer is the same (bench/auth-overhead: a C-FIND answering 1,000
 * granted studies spent half its time in that scan). At study level the test is
 * on the study's own row (resources.labels, 0048, kept from labels by a
 * trigger: the rows below are inserted into labels only), and the planner
 * chooses. */
static void test_restriction_alone_uses_the_index_on_a_small_table(void **state)
{
    assert_int_equal(unit_pg_exec(db_url, "INSERT INTO labels VALUES (10, 'ga'), (12, 'ga'),"
                                          " (11, 'gb'); ANALYZE resources; ANALYZE labels;"),
                     0);
    const char *ga[] = {"ga"};
    static const ts_level levels[] = {TS_LEVEL_STUDY, TS_LEVEL_SERIES, TS_LEVEL_INSTANCE};
    static const char *const expected[][5] = {
        {"sa", "sc"}, {"sea1", "sea2", "sec"}, {"i1", "i2", "i3", "i5", "i6"}};
    static const int counts[] = {2, 3, 5};
    for (int l = 0; l < 3; l++) {
        query_spec alone = {
            .level = levels[l], .restrict_to_labels = true, .visible = ga, .nvisible = 1};
        query_sql q;
        ts_err err;
        assert_int_equal(query_build(&alone, &q, &err), 0);
        assert_int_equal(q.no_seqscan, levels[l] != TS_LEVEL_STUDY);
        query_sql_clear(&q);
        char plan[8192];
        explain(&alone, plan, sizeof(plan));
        print_message("small table, restricted, alone, level %d:\n%s\n", (int)levels[l], plan);
        if (levels[l] != TS_LEVEL_STUDY)
            assert_null(strstr(plan, "Seq Scan on resources"));
        query_result res;
        assert_int_equal(query_run(pool, &alone, &res, &err), 0);
        assert_int_equal(res.nrows, counts[l]);
        for (int i = 0; i < counts[l]; i++)
            assert_string_equal(query_result_id(&res, i), expected[l][i]);
        query_result_clear(&res);
    }
    /* with a condition besides, the planner chooses (a semi-join) */
    query_key date[] = {{STUDY_DATE, "20200101-20221231"}};
    query_spec with_key = {.level = TS_LEVEL_STUDY,
                           .keys = date,
                           .nkeys = 1,
                           .restrict_to_labels = true,
                           .visible = ga,
                           .nvisible = 1};
    query_sql q;
    ts_err err;
    assert_int_equal(query_build(&with_key, &q, &err), 0);
    assert_false(q.no_seqscan);
    query_sql_clear(&q);
    assert_int_equal(unit_pg_exec(db_url, "DELETE FROM labels"), 0);
}

/* Filtering by a label costs no more than filtering by an indexed tag: on
 * 20,000 studies, one of which carries the label "rare" (and all "common"),
 * the plan reaches the study through labels_label (an index scan), as a
 * StudyDate match goes through studies_date, and the planner's cost is of the
 * same order. */
static void test_labels_use_the_index(void **state)
{
    assert_int_equal(
        unit_pg_exec(
            db_url,
            "INSERT INTO resources (id, level, public_id, parent_id)"
            " SELECT g, 1, 'gen' || g, 2 FROM generate_series(1000, 20999) g;"
            "INSERT INTO studies (resource_id, study_instance_uid, study_date)"
            " SELECT g, '2.' || g, (19000101 + g)::text FROM generate_series(1000, 20999) g;"
            "INSERT INTO labels SELECT g, 'common' FROM generate_series(1000, 20999) g;"
            "INSERT INTO labels VALUES (1000, 'rare');"
            "ANALYZE resources; ANALYZE studies; ANALYZE labels;"),
        0);
    const char *rare[] = {"rare"};
    query_key uid[] = {{STUDY_UID, ""}};
    query_spec by_label = {
        .level = TS_LEVEL_STUDY, .keys = uid, .nkeys = 1, .labels = rare, .nlabels = 1};
    query_key date[] = {{STUDY_DATE, "19001101"}};
    query_spec by_tag = {.level = TS_LEVEL_STUDY, .keys = date, .nkeys = 1};
    char plan_label[8192], plan_tag[8192];
    double cost_label = explain(&by_label, plan_label, sizeof(plan_label));
    double cost_tag = explain(&by_tag, plan_tag, sizeof(plan_tag));
    print_message("label plan (cost %.2f):\n%s\ntag plan (cost %.2f):\n%s\n", cost_label,
                  plan_label, cost_tag, plan_tag);
    assert_non_null(strstr(plan_label, "labels_label"));
    assert_null(strstr(plan_label, "Seq Scan"));
    assert_non_null(strstr(plan_tag, "studies_date"));
    assert_true(cost_label > 0 && cost_tag > 0 && cost_label <= 2 * cost_tag);
    /* and the answers */
    query_result res;
    ts_err err;
    assert_int_equal(query_run(pool, &by_label, &res, &err), 0);
    assert_int_equal(res.nrows, 1);
    assert_string_equal(query_result_id(&res, 0), "gen1000");
    query_result_clear(&res);
    const char *both[] = {"rare", "common"};
    query_spec none = {.level = TS_LEVEL_STUDY,
                       .keys = uid,
                       .nkeys = 1,
                       .labels = both,
                       .nlabels = 2,
                       .labels_constraint = QUERY_LABELS_NONE};
    assert_int_equal(query_run(pool, &none, &res, &err), 0);
    assert_int_equal(res.nrows, 3); /* the three studies of DATA */
    query_result_clear(&res);
    const char *bad[] = {"no way"};
    query_spec invalid = {.level = TS_LEVEL_STUDY, .labels = bad, .nlabels = 1};
    assert_int_equal(query_run(pool, &invalid, &res, &err), TS_EINVAL);
}

/* A caller restricted to a label that 1 of 20,000 studies carries, with
 * nothing else to match: the study comes from the GIN index of the study rows'
 * labels (0048), no relation is added to the join search, and nothing reads the
 * 20,000 studies; with a tag condition the planner may start from either. Both
 * answer the same (runs after test_labels_use_the_index, on its rows). */
static void test_restriction_alone_reads_the_label_index(void **state)
{
    const char *rare[] = {"rare"};
    query_spec alone = {
        .level = TS_LEVEL_STUDY, .restrict_to_labels = true, .visible = rare, .nvisible = 1};
    char plan[8192];
    explain(&alone, plan, sizeof(plan));
    print_message("restricted, alone:\n%s\n", plan);
    assert_non_null(strstr(plan, "resources_labels"));
    assert_null(strstr(plan, "Seq Scan"));
    assert_null(strstr(plan, "Join"));
    query_key date[] = {{STUDY_DATE, "19001101-19001102"}};
    query_spec with_key = alone;
    with_key.keys = date;
    with_key.nkeys = 1;
    explain(&with_key, plan, sizeof(plan));
    assert_null(strstr(plan, "Seq Scan"));
    query_result res;
    ts_err err;
    assert_int_equal(query_run(pool, &alone, &res, &err), 0);
    assert_int_equal(res.nrows, 1);
    assert_string_equal(query_result_id(&res, 0), "gen1000");
    query_result_clear(&res);
    assert_int_equal(query_run(pool, &with_key, &res, &err), 0);
    assert_int_equal(res.nrows, 1);
    assert_string_equal(query_result_id(&res, 0), "gen1000");
    query_result_clear(&res);
    /* no label granted: nothing visible */
    alone.nvisible = 0;
    assert_int_equal(query_run(pool, &alone, &res, &err), 0);
    assert_int_equal(res.nrows, 0);
    query_result_clear(&res);
}

int main(void)
{
    if (!unit_pg_available())
        return 77;
    ts_log_init("test_query_db", TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_and_computed_keys),
        cmocka_unit_test(test_ranges_lists_and_limit),
        cmocka_unit_test(test_bus_find),
        cmocka_unit_test(test_bus_bad_requests),
        cmocka_unit_test(test_bus_find_over_a_socket),
        cmocka_unit_test(test_restriction_alone_uses_the_index_on_a_small_table),
        cmocka_unit_test(test_labels_use_the_index),
        cmocka_unit_test(test_restriction_alone_reads_the_label_index),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
