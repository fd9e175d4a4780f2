/* services/query/query_match.c: the SQL a query becomes. Values never reach
 * the SQL text (parameters only); each matching form of PS3.4 C.2.2.2 gives
 * its condition; malformed values are refused. No database needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dicom.h"
#include "query_match.h"

#define PATIENT_NAME TS_TAG(0x0010, 0x0010)
#define PATIENT_ID TS_TAG(0x0010, 0x0020)
#define STUDY_DATE TS_TAG(0x0008, 0x0020)
#define STUDY_TIME TS_TAG(0x0008, 0x0030)
#define STUDY_UID TS_TAG(0x0020, 0x000d)
#define MODALITIES TS_TAG(0x0008, 0x0061)
#define N_STUDY_INSTANCES TS_TAG(0x0020, 0x1208)
#define SOP_UID TS_TAG(0x0008, 0x0018)
#define ACCESSION TS_TAG(0x0008, 0x0050)

static query_sql build_ok(ts_level level, const query_key *keys, size_t n, query_case cm)
{
    query_spec spec = {.level = level, .keys = keys, .nkeys = n, .case_matching = cm};
    query_sql q;
    ts_err err;
    ts_err_clear(&err);
    int rc = query_build(&spec, &q, &err);
    if (rc)
        fail_msg("query_build: %s", err.msg);
    return q;
}

static int build_fails(ts_level level, const query_key *keys, size_t n, char *msg, size_t size)
{
    query_spec spec = {.level = level, .keys = keys, .nkeys = n};
    query_sql q;
    ts_err err;
    ts_err_clear(&err);
    int rc = query_build(&spec, &q, &err);
    if (rc == 0)
        query_sql_clear(&q);
    snprintf(msg, size, "%s", err.msg);
    return rc;
}

static void assert_contains(const char *sql, const char *part)
{
    if (!strstr(sql, part))
        fail_msg("'%s' not in: %s", part, sql);
}

static void assert_lacks(const char *sql, const char *part)
{
    if (strstr(sql, part))
        fail_msg("'%s' unexpectedly in: %s", part, sql);
}

static void test_universal_keys_are_return_keys_only(void **state)
{
    query_key keys[] = {{PATIENT_ID, ""},
                        {STUDY_UID, ""},
                        {TS_TAG(0x0009, 0x0010), ""},
                        {SOP_UID, ""},
                        {STUDY_DATE, "*"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, keys, 5, QUERY_CASE_FOLD_PN);
    assert_int_equal(q.nparams, 0);
    assert_contains(q.sql, "SELECT rst.public_id, pa.patient_id, st.study_instance_uid");
    assert_contains(q.sql, "WHERE true ORDER BY rst.id");
    assert_int_equal(q.key_col[0], 1);
    assert_int_equal(q.key_col[1], 2);
    assert_int_equal(q.key_col[2], -1); /* unknown tag: returned empty */
    assert_int_equal(q.key_col[3], -1); /* below the level: neither matched nor returned */
    assert_int_equal(q.key_col[4], 3);  /* "*" is universal */
    assert_int_equal(q.ncols, 4);
    query_sql_clear(&q);
}

static void test_single_value_is_a_parameter(void **state)
{
    query_key keys[] = {{PATIENT_ID, "x'); DROP TABLE resources; --"}};
    query_sql q = build_ok(TS_LEVEL_PATIENT, keys, 1, QUERY_CASE_FOLD_PN);
    assert_int_equal(q.nparams, 1);
    assert_string_equal(q.params[0], "x'); DROP TABLE resources; --");
    assert_contains(q.sql, "AND pa.patient_id = $1");
    assert_lacks(q.sql, "DROP");
    query_sql_clear(&q);
}

static void test_like_pattern_escapes_sql_wildcards(void **state)
{
    char *p = query_like_pattern("a_b%c*d?e\\f");
    assert_string_equal(p, "a\\_b\\%c%d_e\\\\f");
    free(p);
}

static void test_wildcard_becomes_like(void **state)
{
    query_key keys[] = {{ACCESSION, "AC_1*"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, keys, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.accession_number LIKE $1");
    assert_string_equal(q.params[0], "AC\\_1%");
    query_sql_clear(&q);
}

static void test_person_name_case_insensitive_by_default(void **state)
{
    query_key keys[] = {{PATIENT_NAME, "doe*"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, keys, 1, QUERY_CASE_FOLD_PN);
    /* at study level and below, the studies' copy of the name (0046): no patient join */
    assert_contains(q.sql, "AND st.patient_name_norm LIKE tessera_fold($1)");
    assert_lacks(q.sql, "patients pa");
    assert_string_equal(q.params[0], "doe%");
    query_sql_clear(&q);
    q = build_ok(TS_LEVEL_STUDY, keys, 1, QUERY_CASE_EXACT);
    assert_contains(q.sql, "AND st.patient_name LIKE $1");
    assert_lacks(q.sql, "tessera_fold($1)");
    query_sql_clear(&q);
    query_key exact[] = {{PATIENT_NAME, "Doe^John"}};
    q = build_ok(TS_LEVEL_PATIENT, exact, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND pa.patient_name_norm = tessera_fold($1)");
    query_sql_clear(&q);
}

static void test_every_text_value_without_case(void **state)
{
    /* /tools/find's default: text folded on both sides, in the indexed expression */
    query_key keys[] = {{TS_TAG(0x0008, 0x1030), "ct h*"},
                        {ACCESSION, "acc1"},
                        {PATIENT_NAME, "doe"},
                        {MODALITIES, "ct\\mr"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, keys, 4, QUERY_CASE_FOLD_TEXT);
    assert_contains(q.sql, "AND tessera_fold(st.study_description) LIKE tessera_fold($1)");
    assert_contains(q.sql, "AND tessera_fold(st.accession_number) = tessera_fold($2)");
    assert_contains(q.sql, "AND st.patient_name_norm = tessera_fold($3)");
    assert_contains(q.sql, "WHERE tessera_fold(m) = ANY (string_to_array(tessera_fold($4)");
    query_sql_clear(&q);
    /* values without letters (UIDs, numbers) match the same folded or not: the
     * plain column, and its index, serve */
    query_key plain[] = {{STUDY_UID, "1.2.3*"}, {ACCESSION, "12-34"}, {PATIENT_ID, "7?"}};
    q = build_ok(TS_LEVEL_STUDY, plain, 3, QUERY_CASE_FOLD_TEXT);
    assert_contains(q.sql, "AND st.study_instance_uid LIKE $1");
    assert_contains(q.sql, "AND st.accession_number = $2");
    /* '?' is one character, and a folded one may be two ('ß' is 'SS') */
    assert_contains(q.sql, "AND tessera_fold(pa.patient_id) LIKE tessera_fold($3)");
    query_sql_clear(&q);
    /* C-FIND's default: person names only */
    q = build_ok(TS_LEVEL_STUDY, keys, 4, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_description LIKE $1");
    assert_contains(q.sql, "AND st.patient_name_norm = tessera_fold($3)");
    assert_contains(q.sql, "AND st.modalities_in_study && string_to_array($4, chr(92))");
    query_sql_clear(&q);
}

static void test_uid_list_is_one_array_parameter(void **state)
{
    query_key keys[] = {{STUDY_UID, "1.2.3\\1.2.4\\1.2.5"}};
    query_sql q = build_ok(TS_LEVEL_SERIES, keys, 1, QUERY_CASE_FOLD_PN);
    assert_int_equal(q.nparams, 1);
    assert_contains(q.sql, "AND st.study_instance_uid = ANY (string_to_array($1, chr(92)))");
    assert_string_equal(q.params[0], "1.2.3\\1.2.4\\1.2.5");
    assert_contains(q.sql, "SELECT rse.public_id");
    query_sql_clear(&q);
}

static void test_date_ranges(void **state)
{
    query_key both[] = {{STUDY_DATE, "20200101-20201231"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, both, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_date >= $1 AND st.study_date <= $2");
    assert_string_equal(q.params[0], "20200101");
    assert_string_equal(q.params[1], "20201231");
    query_sql_clear(&q);

    query_key from[] = {{STUDY_DATE, "20200101-"}};
    q = build_ok(TS_LEVEL_STUDY, from, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_date >= $1");
    assert_lacks(q.sql, "<=");
    assert_int_equal(q.nparams, 1);
    query_sql_clear(&q);

    query_key until[] = {{STUDY_DATE, "-20200101"}};
    q = build_ok(TS_LEVEL_STUDY, until, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_date <= $1");
    assert_lacks(q.sql, ">=");
    query_sql_clear(&q);

    /* an upper end of lower precision reaches the end of what it names
     * (PS3.4 C.2.2.2.5), compared as text: padded with nines */
    query_key times[] = {{STUDY_TIME, "100000-1015"}};
    q = build_ok(TS_LEVEL_STUDY, times, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_time >= $1 AND st.study_time <= $2");
    assert_string_equal(q.params[0], "100000");
    assert_string_equal(q.params[1], "101599.999999");
    query_sql_clear(&q);
    query_key frac[] = {{STUDY_TIME, "-101500.5"}};
    q = build_ok(TS_LEVEL_STUDY, frac, 1, QUERY_CASE_FOLD_PN);
    assert_string_equal(q.params[0], "101500.599999");
    query_sql_clear(&q);

    query_key single[] = {{STUDY_DATE, "20200101"}, {STUDY_TIME, "101500.5-"}};
    q = build_ok(TS_LEVEL_STUDY, single, 2, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "AND st.study_date = $1 AND st.study_time >= $2");
    query_sql_clear(&q);
}

static void test_malformed_values_are_refused(void **state)
{
    const char *bad_dates[] = {"2020-01-01",         "-",       "20200101-2021", "2020*",
                               "20200101\\20200102", "2020010", "abcdefgh"};
    char msg[512];
    for (size_t i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
        query_key k[] = {{STUDY_DATE, bad_dates[i]}};
        assert_int_equal(build_fails(TS_LEVEL_STUDY, k, 1, msg, sizeof(msg)), TS_EINVAL);
        assert_non_null(strstr(msg, "StudyDate"));
    }
    const char *bad_times[] = {"1", "25x", "101500.1234567", "1015-99"};
    for (size_t i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]); i++) {
        query_key k[] = {{STUDY_TIME, bad_times[i]}};
        assert_int_equal(build_fails(TS_LEVEL_STUDY, k, 1, msg, sizeof(msg)), TS_EINVAL);
    }
    query_key list_wild[] = {{STUDY_UID, "1.2*\\1.3"}};
    assert_int_equal(build_fails(TS_LEVEL_STUDY, list_wild, 1, msg, sizeof(msg)), TS_EINVAL);
    query_spec spec = {.level = (ts_level)7};
    query_sql q;
    ts_err err;
    assert_int_equal(query_build(&spec, &q, &err), TS_EINVAL);
}

static void test_computed_keys_are_not_matched(void **state)
{
    query_key keys[] = {{N_STUDY_INSTANCES, "5"}, {MODALITIES, "CT\\MR"}};
    query_sql q = build_ok(TS_LEVEL_STUDY, keys, 2, QUERY_CASE_FOLD_PN);
    assert_int_equal(q.nparams, 1); /* the count's value is ignored */
    assert_contains(q.sql, "AND st.modalities_in_study && string_to_array($1, chr(92))");
    assert_contains(q.sql, "(SELECT count(*) FROM resources x1 JOIN resources x2");
    query_sql_clear(&q);
}

static void test_limit_fetches_one_more_and_since_skips(void **state)
{
    query_key keys[] = {{SOP_UID, ""}};
    query_spec spec = {
        .level = TS_LEVEL_INSTANCE, .keys = keys, .nkeys = 1, .limit = 10, .since = 20};
    query_sql q;
    ts_err err;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_contains(q.sql, "ORDER BY ri.id LIMIT 11 OFFSET 20");
    query_sql_clear(&q);
}

static void test_duplicate_keys_share_a_column(void **state)
{
    query_key keys[] = {{PATIENT_ID, "A*"}, {PATIENT_ID, ""}};
    query_sql q = build_ok(TS_LEVEL_PATIENT, keys, 2, QUERY_CASE_FOLD_PN);
    assert_int_equal(q.key_col[0], q.key_col[1]);
    assert_int_equal(q.ncols, 2);
    query_sql_clear(&q);
}

static void test_joins_only_the_levels_the_keys_need(void **state)
{
    query_key own[] = {{SOP_UID, "1.2.3"}};
    query_sql q = build_ok(TS_LEVEL_INSTANCE, own, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, " FROM instances i JOIN resources ri ON ri.id = i.resource_id WHERE");
    assert_lacks(q.sql, "series se");
    query_sql_clear(&q);
    query_key study[] = {{SOP_UID, ""}, {STUDY_UID, "1.2"}};
    q = build_ok(TS_LEVEL_INSTANCE, study, 2, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "JOIN series se ON se.resource_id = ri.parent_id"
                           " JOIN resources rse ON rse.id = se.resource_id"
                           " JOIN studies st ON st.resource_id = rse.parent_id"
                           " CROSS JOIN LATERAL (SELECT st.resource_id AS id) rst WHERE");
    /* the highest level is not joined to resources: nothing above it to reach */
    assert_lacks(q.sql, "JOIN resources rst");
    assert_lacks(q.sql, "patients");
    query_sql_clear(&q);
    query_key patient[] = {{SOP_UID, ""}, {PATIENT_ID, "X*"}};
    q = build_ok(TS_LEVEL_INSTANCE, patient, 2, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "JOIN patients pa ON pa.resource_id = rst.parent_id");
    assert_contains(q.sql, "JOIN resources rst ON rst.id = st.resource_id");
    assert_lacks(q.sql, "JOIN resources rpa");
    query_sql_clear(&q);
    /* the patient's name is in studies (0046): joined up to studies only */
    query_key name[] = {{SOP_UID, ""}, {PATIENT_NAME, "X*"}};
    q = build_ok(TS_LEVEL_INSTANCE, name, 2, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "JOIN studies st ON st.resource_id = rse.parent_id"
                           " CROSS JOIN LATERAL (SELECT st.resource_id AS id) rst WHERE");
    assert_lacks(q.sql, "patients");
    query_sql_clear(&q);
    /* at patient level, the patients table's */
    q = build_ok(TS_LEVEL_PATIENT, name + 1, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "pa.patient_name_norm LIKE");
    query_sql_clear(&q);
}

static void test_a_find_of_ids_only_reads_resources_alone(void **state)
{
    /* /tools/find {"Level": "Study", "Query": {}}: no key, only the ids */
    query_sql q = build_ok(TS_LEVEL_STUDY, NULL, 0, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, "SELECT rst.public_id FROM resources rst WHERE true AND rst.level = 1"
                           " ORDER BY rst.id");
    assert_lacks(q.sql, "studies");
    query_sql_clear(&q);
    /* the caller's labels alone (an InitPlan of the visible studies' ids) */
    const char *labels[] = {"groupA"};
    query_spec spec = {
        .level = TS_LEVEL_SERIES, .restrict_to_labels = true, .visible = labels, .nvisible = 1};
    ts_err err;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_contains(q.sql, " FROM resources rse WHERE true AND rse.parent_id = ANY (ARRAY(");
    assert_contains(q.sql, " AND rse.level = 2 ORDER BY rse.id");
    assert_lacks(q.sql, "series se");
    query_sql_clear(&q);
    /* at study level, the study's labels on its resources row (0048) */
    spec.level = TS_LEVEL_STUDY;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_contains(q.sql, " FROM resources rst WHERE true AND rst.labels && $1::text[]"
                           " AND rst.level = 1 ORDER BY rst.id");
    assert_false(q.no_seqscan);
    query_sql_clear(&q);
    spec.level = TS_LEVEL_SERIES;
    /* with Labels, the level's table is kept to start from (query_build says why) */
    spec.labels = labels;
    spec.nlabels = 1;
    spec.labels_constraint = QUERY_LABELS_ANY;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_contains(q.sql, " FROM series se JOIN resources rse ON rse.id = se.resource_id");
    assert_lacks(q.sql, "rse.level");
    query_sql_clear(&q);
    /* a return key is read from the level's table: joined as before */
    query_key ret[] = {{STUDY_DATE, ""}};
    q = build_ok(TS_LEVEL_STUDY, ret, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, " FROM studies st JOIN resources rst ON rst.id = st.resource_id");
    assert_lacks(q.sql, "rst.level");
    query_sql_clear(&q);
    /* a matching key too, even when nothing is returned of it */
    query_key match[] = {{STUDY_UID, "1.2"}};
    q = build_ok(TS_LEVEL_STUDY, match, 1, QUERY_CASE_FOLD_PN);
    assert_contains(q.sql, " FROM studies st JOIN resources rst ON rst.id = st.resource_id");
    query_sql_clear(&q);
}

static void test_tag_lookup(void **state)
{
    assert_null(query_tag_lookup(TS_TAG(0x0008, 0x002a)));
    assert_non_null(query_tag_lookup(STUDY_DATE));
    assert_string_equal(query_tag_lookup(STUDY_DATE)->keyword, "StudyDate");
    assert_string_equal(query_tag_lookup(PATIENT_NAME)->vr, "PN");
    assert_int_equal(query_tag_lookup(SOP_UID)->level, TS_LEVEL_INSTANCE);
}

/* Keys in sequence items (PS3.4 C.2.2.2.6): every key of one sequence on
 * the same item, one EXISTS per sequence; a key at top level with the same
 * tag is another key; universal item keys add no condition. */
static void test_sequence_item_keys_match_one_item(void **state)
{
    (void)state;
    const uint32_t ras = TS_TAG(0x0040, 0x0275);
    query_key keys[] = {{TS_TAG(0x0040, 0x0009), "SPS*"},
                        {TS_TAG(0x0040, 0x1001), "RP1\\RP2"},
                        {ras, ""},
                        {TS_TAG(0x0040, 0x0244), "20200101-"},
                        {TS_TAG(0x0040, 0x1001), "TOP"}};
    uint32_t seqs[] = {ras, ras, 0, 0, 0};
    query_spec spec = {.level = TS_LEVEL_SERIES, .keys = keys, .nkeys = 5, .key_sequences = seqs};
    query_sql q;
    ts_err err;
    ts_err_clear(&err);
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_contains(q.sql, " AND EXISTS (SELECT 1 FROM jsonb_array_elements(se.request_attributes)"
                           " it WHERE true AND (it->>'00400009') LIKE $");
    assert_contains(q.sql, " AND (it->>'00401001') = ANY (string_to_array($");
    assert_contains(q.sql, "se.pps_start_date >= $");
    /* one EXISTS for the sequence; the top-level (0040,1001) is no key Tessera knows */
    assert_non_null(strstr(q.sql, "jsonb_array_elements"));
    assert_null(strstr(strstr(q.sql, "jsonb_array_elements") + 1, "jsonb_array_elements"));
    assert_int_equal(q.nparams, 3);
    assert_int_equal(q.key_col[0], -1); /* an item's key: matched, not returned */
    assert_true(q.key_col[2] > 0);      /* the sequence: its items */
    assert_int_equal(q.key_col[4], -1);
    query_sql_clear(&q);

    /* universal item keys: no condition; a bad date in an item key: refused */
    query_key universal[] = {{TS_TAG(0x0040, 0x0009), ""}, {TS_TAG(0x0040, 0x1001), "*"}};
    spec.keys = universal;
    spec.nkeys = 2;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_lacks(q.sql, "jsonb_array_elements");
    query_sql_clear(&q);
    query_key bad[] = {{TS_TAG(0x0040, 0x0245), "2500"}};
    spec.keys = bad;
    spec.nkeys = 1;
    spec.key_sequences = NULL;
    assert_int_equal(query_build(&spec, &q, &err), TS_EINVAL);
    assert_non_null(strstr(err.msg, "PerformedProcedureStepStartTime"));
    /* at study level the series' item keys are neither matched nor returned */
    spec.keys = keys;
    spec.nkeys = 5;
    spec.key_sequences = seqs;
    spec.level = TS_LEVEL_STUDY;
    assert_int_equal(query_build(&spec, &q, &err), 0);
    assert_lacks(q.sql, "jsonb_array_elements");
    assert_lacks(q.sql, "pps_start_date");
    query_sql_clear(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence_item_keys_match_one_item),
        cmocka_unit_test(test_universal_keys_are_return_keys_only),
        cmocka_unit_test(test_single_value_is_a_parameter),
        cmocka_unit_test(test_like_pattern_escapes_sql_wildcards),
        cmocka_unit_test(test_wildcard_becomes_like),
        cmocka_unit_test(test_person_name_case_insensitive_by_default),
        cmocka_unit_test(test_every_text_value_without_case),
        cmocka_unit_test(test_uid_list_is_one_array_parameter),
        cmocka_unit_test(test_date_ranges),
        cmocka_unit_test(test_malformed_values_are_refused),
        cmocka_unit_test(test_computed_keys_are_not_matched),
        cmocka_unit_test(test_limit_fetches_one_more_and_since_skips),
        cmocka_unit_test(test_duplicate_keys_share_a_column),
        cmocka_unit_test(test_joins_only_the_levels_the_keys_need),
        cmocka_unit_test(test_a_find_of_ids_only_reads_resources_alone),
        cmocka_unit_test(test_tag_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
