/* Public ids (lib/base/ids.c) against the ids Orthanc 1.10.1 gave the files in
 * tests/data/dicom (tests/data/orthanc/ids.json, recorded by
 * tests/data/orthanc/record.sh): from the identifying values Orthanc itself
 * recorded, and from the same values read by the parser. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dicom/dicom.h"
#include "base/ids.h"

#define ORTHANC_DIR TS_TEST_DATA "/orthanc"

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

/* ids.json: {"NAME.dcm": {"Patient": id, "Study": id, "Series": id, "Instance": id}, ...} */
static int setup(void **state)
{
    ts_err err = {0};
    if (ts_dicom_global_init(&err) != 0) {
        fprintf(stderr, "dicom init: %s\n", err.msg);
        return -1;
    }
    json_error_t jerr;
    json_t *ids = json_load_file(ORTHANC_DIR "/ids.json", 0, &jerr);
    if (!ids || json_object_size(ids) == 0) {
        fprintf(stderr, "%s/ids.json: %s\n", ORTHANC_DIR, ids ? "empty" : jerr.text);
        json_decref(ids);
        return -1;
    }
    *state = ids;
    return 0;
}

static int teardown(void **state)
{
    json_decref(*state);
    return 0;
}

static void assert_ids_equal(const char *file, const ts_ids *got, const json_t *want)
{
    const char *levels[] = {"Patient", "Study", "Series", "Instance"};
    const char *ours[] = {got->patient, got->study, got->series, got->instance};
    for (int i = 0; i < 4; i++) {
        const char *expected = json_string_value(json_object_get(want, levels[i]));
        assert_non_null(expected);
        if (strcmp(ours[i], expected) != 0)
            fail_msg("%s: %s id %s, Orthanc gave %s", file, levels[i], ours[i], expected);
    }
}

/* A main tag Orthanc recorded for the file, "" when it has none (a missing
 * PatientID is hashed as the empty string). */
static const char *recorded_tag(const json_t *main_tags, const char *level, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(main_tags, level), name));
    return v ? v : "";
}

static void test_ids_from_recorded_uids_equal_orthanc(void **state)
{
    const json_t *ids = *state;
    const char *file;
    json_t *want;
    json_object_foreach((json_t *)ids, file, want)
    {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof(path), "%s/%.*s/main-tags.json", ORTHANC_DIR,
                         (int)(strlen(file) - 4), file);
        assert_true(n > 0 && (size_t)n < sizeof(path));
        json_t *main_tags = load_json(path);
        ts_ids got;
        ts_ids_compute(recorded_tag(main_tags, "Patient", "PatientID"),
                       recorded_tag(main_tags, "Study", "StudyInstanceUID"),
                       recorded_tag(main_tags, "Series", "SeriesInstanceUID"),
                       recorded_tag(main_tags, "Instance", "SOPInstanceUID"), &got);
        assert_ids_equal(file, &got, want);
        json_decref(main_tags);
    }
}

static void test_ids_from_parsed_files_equal_orthanc(void **state)
{
    const json_t *ids = *state;
    const char *file;
    json_t *want;
    json_object_foreach((json_t *)ids, file, want)
    {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof(path), "%s/dicom/%s", TS_TEST_DATA, file);
        assert_true(n > 0 && (size_t)n < sizeof(path));
        ts_dicom *d = NULL;
        ts_err err = {0};
        if (ts_dicom_open_file(path, &d, &err) != 0)
            fail_msg("open %s: %s", path, err.msg);
        ts_dicom_identity identity;
        if (ts_dicom_identity_get(d, &identity, &err) != 0)
            fail_msg("%s: %s", file, err.msg);
        assert_ids_equal(file, &identity.ids, want);
        ts_dicom_identity_clear(&identity);
        ts_dicom_free(d);
    }
}

/* Known values: SHA-1 of "" and of "1CT1|<study>" in Orthanc's shape. */
static void test_ids_known_values(void **state)
{
    (void)state;
    ts_ids ids;
    ts_ids_compute("", "1.2.3", "1.2.3.4", "1.2.3.4.5", &ids);
    assert_string_equal(ids.patient, "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709");
    ts_ids_compute("1CT1", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
                   "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
                   "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322", &ids);
    assert_string_equal(ids.patient, "fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718");
    assert_string_equal(ids.study, "8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d");
    assert_string_equal(ids.series, "93034833-163e42c3-bc9a428b-194620cf-2c5799e5");
    assert_string_equal(ids.instance, "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af");
}

static void test_lower_uuid_shape(void **state)
{
    (void)state;
    assert_true(ts_id_is_lower_uuid("0f4a7e8e-f83d-4d14-aae0-f5215bf5a59b"));
    assert_false(ts_id_is_lower_uuid("0F4A7E8E-F83D-4D14-AAE0-F5215BF5A59B"));
    assert_false(ts_id_is_lower_uuid("0f4a7e8e-f83d-4d14-aae0-f5215bf5a59"));
    assert_false(ts_id_is_lower_uuid("0f4a7e8e-f83d-4d14-aae0-f5215bf5a59bb"));
    assert_false(ts_id_is_lower_uuid("0f4a7e8e/f83d-4d14-aae0-f5215bf5a59b"));
    assert_false(ts_id_is_lower_uuid(""));
    assert_false(ts_id_is_lower_uuid(NULL));
}

static void test_id_shape(void **state)
{
    (void)state;
    assert_true(ts_id_is_valid("fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c5718"));
    assert_false(ts_id_is_valid(NULL));
    assert_false(ts_id_is_valid(""));
    assert_false(ts_id_is_valid("FA558BCE-587A86D3-AD0DA9B3-9D043D9D-4F5C5718"));  /* upper case */
    assert_false(ts_id_is_valid("fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c571"));   /* short */
    assert_false(ts_id_is_valid("fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c57180")); /* long */
    assert_false(ts_id_is_valid("fa558bce0587a86d3-ad0da9b3-9d043d9d-4f5c5718"));  /* no dash */
    assert_false(ts_id_is_valid("fa558bce-587a86d3-ad0da9b3-9d043d9d-4f5c571g"));  /* not hex */
    assert_string_equal(ts_level_name(TS_LEVEL_PATIENT), "Patient");
    assert_string_equal(ts_level_name(TS_LEVEL_INSTANCE), "Instance");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_from_recorded_uids_equal_orthanc),
        cmocka_unit_test(test_ids_from_parsed_files_equal_orthanc),
        cmocka_unit_test(test_ids_known_values),
        cmocka_unit_test(test_id_shape),
        cmocka_unit_test(test_lower_uuid_shape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
