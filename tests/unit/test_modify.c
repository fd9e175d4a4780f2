/* Orthanc-style modification and anonymization (lib/dicom/dicom_modify.cc): the
 * request rules and error codes of Orthanc 1.10.1, the tags of a modified and of
 * an anonymized file read back from disk, and UIDs mapped consistently (the same
 * original UID gives the same new one for one secret, references in the
 * sequences of an RT structure set follow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom/dicom.h"
#include "dicom/dicom_modify.h"

#define DICOM_DIR TS_TEST_DATA "/dicom"

static int setup(void **state)
{
    (void)state;
    ts_err err;
    return ts_dicom_global_init(&err);
}

/* Parses body and expects a refusal with Orthanc's code and details. */
static void expect_refused(bool anonymize, const char *body, ts_oe code, const char *details)
{
    json_error_t jerr;
    json_t *j = json_loads(body, JSON_DECODE_ANY, &jerr);
    assert_non_null(j);
    ts_modify *m = NULL;
    ts_oe oe = TS_OE_SUCCESS;
    ts_err err;
    ts_err_clear(&err);
    assert_int_equal(ts_modify_parse(j, anonymize, &m, &oe, &err), TS_EINVAL);
    assert_null(m);
    assert_int_equal(oe, code);
    assert_string_equal(err.msg, details);
    json_decref(j);
}

static ts_modify *parse_ok(bool anonymize, const char *body)
{
    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    assert_non_null(j);
    ts_modify *m = NULL;
    ts_oe oe;
    ts_err err;
    assert_int_equal(ts_modify_parse(j, anonymize, &m, &oe, &err), 0);
    json_decref(j);
    return m;
}

static void test_request_rules(void **state)
{
    (void)state;
    expect_refused(false, "{\"Replace\":{\"StudyInstanceUID\":\"1.2.3\"}}", TS_OE_BAD_REQUEST,
                   "Marking tag \"StudyInstanceUID\" as to be replaced requires the \"Force\" "
                   "option to be set to true");
    expect_refused(false, "{\"Remove\":[\"PatientID\"]}", TS_OE_BAD_REQUEST,
                   "Marking tag \"PatientID\" as to be removed requires the \"Force\" option to "
                   "be set to true");
    expect_refused(false, "{\"Keep\":[\"SOPInstanceUID\"]}", TS_OE_BAD_REQUEST,
                   "Marking tag \"SOPInstanceUID\" as to be kept requires the \"Force\" option "
                   "to be set to true");
    expect_refused(false, "{\"Replace\":{\"NoSuchTag\":\"x\"}}", TS_OE_UNKNOWN_DICOM_TAG, "");
    expect_refused(false, "{\"Remove\":\"PatientName\"}", TS_OE_BAD_REQUEST, "");
    expect_refused(false, "{\"Replace\":[\"a\"]}", TS_OE_BAD_REQUEST, "");
    expect_refused(false, "[1]", TS_OE_BAD_FILE_FORMAT, "");
    expect_refused(false, "{\"Replace\":{\"StudyDescription\":5}}", TS_OE_BAD_PARAMETER_TYPE,
                   "Bad Parameter type for tag 0008,1030");
    expect_refused(true, "{\"DicomVersion\":\"2099\"}", TS_OE_PARAMETER_OUT_OF_RANGE,
                   "Unknown specific version of the DICOM standard: 2099");

    /* with Force, the identifying UIDs may be replaced; the level decides */
    ts_modify *m = parse_ok(false, "{\"Replace\":{\"PatientID\":\"x\"},\"Force\":true}");
    ts_oe oe;
    ts_err err;
    ts_modify_set_level(m, 1);
    assert_int_equal(ts_modify_check(m, &oe, &err), TS_EINVAL);
    assert_string_equal(err.msg,
                        "When modifying a study, the parent PatientID cannot be manually modified");
    ts_modify_set_level(m, 0);
    assert_int_equal(ts_modify_check(m, &oe, &err), 0);
    assert_int_equal(ts_modify_instance_level(m), 0);
    ts_modify_free(m);

    m = parse_ok(false, "{\"Replace\":{\"PatientName\":\"x\"}}");
    ts_modify_set_level(m, 0);
    assert_int_equal(ts_modify_check(m, &oe, &err), TS_EINVAL);
    assert_string_equal(err.msg,
                        "When modifying a patient, her PatientID is required to be modified");
    assert_int_equal(ts_modify_instance_level(m), 3);
    ts_modify_free(m);

    m = parse_ok(false, "{\"Remove\":[\"SeriesInstanceUID\"],\"Force\":true}");
    ts_modify_set_level(m, 1);
    assert_int_equal(ts_modify_check(m, &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_BAD_REQUEST);
    ts_modify_free(m);
}

static char *tag_of(const char *path, uint32_t tag)
{
    ts_dicom *d;
    ts_err err;
    assert_int_equal(ts_dicom_open_file(path, &d, &err), 0);
    char *v = ts_dicom_get_string(d, tag, true);
    ts_dicom_free(d);
    return v;
}

static void modify_file(ts_modify *m, const char *in, const char *out)
{
    ts_dicom *d;
    ts_err err;
    ts_oe oe;
    assert_int_equal(ts_dicom_open_file(in, &d, &err), 0);
    int rc = ts_modify_apply(m, d, &oe, &err);
    if (rc)
        print_error("apply: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(ts_dicom_save_file(d, out, &err), 0);
    ts_dicom_free(d);
}

static void test_modify_study_level(void **state)
{
    (void)state;
    const char *in = DICOM_DIR "/CT_small.dcm";
    char out[] = "/tmp/ts-modify-XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    ts_modify *m =
        parse_ok(false, "{\"Replace\":{\"StudyDescription\":\"hello\","
                        "\"InstitutionName\":\"Clinic\"},\"Remove\":[\"PatientBirthDate\"]}");
    ts_modify_set_level(m, 1);
    ts_modify_set_secret(m, "job-1");
    modify_file(m, in, out);

    char *desc = tag_of(out, TS_TAG(0x0008, 0x1030));
    assert_string_equal(desc, "hello");
    free(desc);
    assert_null(tag_of(out, TS_TAG(0x0010, 0x0030)));
    char *pid_in = tag_of(in, TS_TAG_PATIENT_ID), *pid_out = tag_of(out, TS_TAG_PATIENT_ID);
    assert_string_equal(pid_in, pid_out); /* the parent patient stays */
    free(pid_in);
    free(pid_out);
    /* study, series and instance UIDs: new, and the mapping of this secret */
    const uint32_t uids[] = {TS_TAG_STUDY_INSTANCE_UID, TS_TAG_SERIES_INSTANCE_UID,
                             TS_TAG_SOP_INSTANCE_UID};
    for (int i = 0; i < 3; i++) {
        char *a = tag_of(in, uids[i]), *b = tag_of(out, uids[i]);
        char expected[80];
        ts_modify_map_uid(m, a, expected, sizeof(expected));
        assert_string_not_equal(a, b);
        assert_string_equal(b, expected);
        assert_true(strncmp(b, "2.25.", 5) == 0 && strlen(b) <= 64);
        free(a);
        free(b);
    }
    /* the same UID maps the same way for one secret, differently for another */
    char u1[80], u2[80], u3[80];
    ts_modify_map_uid(m, "1.2.3", u1, sizeof(u1));
    ts_modify_map_uid(m, "1.2.3", u2, sizeof(u2));
    ts_modify_set_secret(m, "job-2");
    ts_modify_map_uid(m, "1.2.3", u3, sizeof(u3));
    assert_string_equal(u1, u2);
    assert_string_not_equal(u1, u3);
    ts_modify_free(m);

    /* a series-level modification keeps the study */
    m = parse_ok(false, "{\"Replace\":{\"SeriesDescription\":\"s\"}}");
    ts_modify_set_level(m, 2);
    ts_modify_set_secret(m, "job-3");
    modify_file(m, in, out);
    char *a = tag_of(in, TS_TAG_STUDY_INSTANCE_UID), *b = tag_of(out, TS_TAG_STUDY_INSTANCE_UID);
    assert_string_equal(a, b);
    free(a);
    free(b);
    ts_modify_free(m);
    unlink(out);
}

/* every value of `tag` anywhere in a DICOM JSON model, into set (an object) */
static void collect(const json_t *model, const char *tag, json_t *set)
{
    const char *key;
    json_t *attr;
    json_object_foreach((json_t *)model, key, attr)
    {
        json_t *values = json_object_get(attr, "Value");
        size_t i;
        json_t *v;
        json_array_foreach(values, i, v)
        {
            if (json_is_object(v))
                collect(v, tag, set);
            else if (strcmp(key, tag) == 0 && json_is_string(v))
                json_object_set_new(set, json_string_value(v), json_true());
        }
    }
}

static json_t *values_in(const char *path, const char *tag)
{
    ts_dicom *d;
    ts_err err;
    assert_int_equal(ts_dicom_open_file(path, &d, &err), 0);
    json_t *model = ts_dicom_to_dicomweb_json(d, NULL);
    json_t *set = json_object();
    collect(model, tag, set);
    json_decref(model);
    ts_dicom_free(d);
    return set;
}

static void test_anonymize_references(void **state)
{
    (void)state;
    const char *in = DICOM_DIR "/rtstruct.dcm";
    char out[] = "/tmp/ts-anon-XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    ts_modify *m = parse_ok(true, "{}");
    ts_modify_set_secret(m, "job-anon");
    ts_modify_set_anonymous_patient(m, "new-id", "Anonymized7");
    modify_file(m, in, out);

    /* references inside the sequences point at the new UIDs of the originals */
    const char *tags[] = {"00081155", "30060024", "00200052"};
    for (size_t t = 0; t < 3; t++) {
        json_t *before = values_in(in, tags[t]), *after = values_in(out, tags[t]);
        assert_true(json_object_size(before) > 0);
        json_t *expected = json_object();
        const char *uid;
        json_t *v;
        json_object_foreach(before, uid, v)
        {
            char mapped[80];
            ts_modify_map_uid(m, uid, mapped, sizeof(mapped));
            json_object_set_new(expected, mapped, json_true());
        }
        assert_true(json_equal(expected, after));
        json_decref(expected);
        json_decref(before);
        json_decref(after);
    }
    char *name = tag_of(out, TS_TAG_PATIENT_NAME), *id = tag_of(out, TS_TAG_PATIENT_ID);
    assert_string_equal(name, "Anonymized7");
    assert_string_equal(id, "new-id");
    free(name);
    free(id);
    char *removed = tag_of(out, TS_TAG(0x0012, 0x0062));
    assert_string_equal(removed, "YES");
    free(removed);
    ts_modify_free(m);

    /* CT_small: dates emptied, institution removed, private tags gone */
    m = parse_ok(true, "{\"Replace\":{\"PatientName\":\"Research^One\"}}");
    ts_modify_set_secret(m, "job-anon-2");
    ts_modify_set_anonymous_patient(m, "pid", "Anonymized8");
    modify_file(m, DICOM_DIR "/CT_small.dcm", out);
    name = tag_of(out, TS_TAG_PATIENT_NAME);
    assert_string_equal(name, "Research^One"); /* the body's PatientName wins */
    free(name);
    char *birth = tag_of(out, TS_TAG(0x0010, 0x0030));
    assert_string_equal(birth, "");
    free(birth);
    assert_null(tag_of(out, TS_TAG(0x0008, 0x0080)));
    assert_null(tag_of(out, TS_TAG(0x0009, 0x0010)));
    assert_null(tag_of(out, TS_TAG(0x0009, 0x1001)));
    char *method = tag_of(out, TS_TAG(0x0012, 0x0063));
    assert_non_null(strstr(method, "PS 3.15-2021b"));
    free(method);
    ts_modify_free(m);

    /* KeepPrivateTags and 2008 */
    m = parse_ok(true, "{\"KeepPrivateTags\":true,\"DicomVersion\":\"2008\"}");
    ts_modify_set_secret(m, "job-anon-3");
    ts_modify_set_anonymous_patient(m, "pid", "Anonymized9");
    modify_file(m, DICOM_DIR "/CT_small.dcm", out);
    char *priv = tag_of(out, TS_TAG(0x0009, 0x1001));
    assert_non_null(priv);
    free(priv);
    assert_null(tag_of(out, TS_TAG(0x0010, 0x0030))); /* 2008 removes the birth date */
    ts_modify_free(m);
    unlink(out);
}

static void test_replace_sequence_and_private(void **state)
{
    (void)state;
    char out[] = "/tmp/ts-modseq-XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    ts_modify *m = parse_ok(
        false, "{\"Replace\":{\"ReferencedStudySequence\":[{\"ReferencedSOPClassUID\":\"1.2.3\","
               "\"ReferencedSOPInstanceUID\":\"1.2.3.4\"}],\"0011,1001\":\"private value\"},"
               "\"PrivateCreator\":\"Tessera test\"}");
    ts_modify_set_level(m, 3);
    ts_modify_set_secret(m, "s");
    modify_file(m, DICOM_DIR "/MR_small.dcm", out);
    json_t *refs = values_in(out, "00081155");
    assert_non_null(json_object_get(refs, "1.2.3.4"));
    json_decref(refs);
    char *creator = tag_of(out, TS_TAG(0x0011, 0x0010)),
         *value = tag_of(out, TS_TAG(0x0011, 0x1001));
    assert_string_equal(creator, "Tessera test");
    assert_non_null(value);
    /* an unknown private tag is UN (as Orthanc): its bytes, padded to an even length */
    assert_string_equal(value, "70\\72\\69\\76\\61\\74\\65\\20\\76\\61\\6c\\75\\65\\00");
    free(creator);
    free(value);
    ts_modify_free(m);

    /* Orthanc's paths into sequence items */
    m = parse_ok(false,
                 "{\"Replace\":{\"ReferencedStudySequence[*].ReferencedSOPInstanceUID\":"
                 "\"9.9\"},\"Remove\":[\"ReferencedStudySequence[0].ReferencedSOPClassUID\"]}");
    ts_modify_set_secret(m, "s");
    char out2[] = "/tmp/ts-modseq2-XXXXXX";
    fd = mkstemp(out2);
    assert_true(fd >= 0);
    close(fd);
    modify_file(m, out, out2); /* not onto itself: pixel data is read from the source lazily */
    rename(out2, out);
    refs = values_in(out, "00081155");
    assert_non_null(json_object_get(refs, "9.9"));
    assert_null(json_object_get(refs, "1.2.3.4"));
    json_decref(refs);
    json_t *classes = values_in(out, "00081150");
    assert_int_equal(json_object_size(classes), 0);
    json_decref(classes);
    ts_modify_free(m);
    expect_refused(false, "{\"Remove\":[\"ReferencedStudySequence[x].Foo\"]}",
                   TS_OE_UNKNOWN_DICOM_TAG, "");

    /* a private tag without any creator is refused at apply */
    m = parse_ok(false, "{\"Replace\":{\"0011,1001\":\"x\"}}");
    ts_dicom *d;
    ts_err err;
    ts_oe oe;
    assert_int_equal(ts_dicom_open_file(DICOM_DIR "/MR_small.dcm", &d, &err), 0);
    assert_int_equal(ts_modify_apply(m, d, &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_BAD_REQUEST);
    ts_dicom_free(d);
    ts_modify_free(m);
    unlink(out);
}

/* Orthanc's DicomPath errors for Remove/Keep/Replace paths, and paths it accepts. */
static void test_path_errors(void **state)
{
    (void)state;
    expect_refused(false, "{\"Keep\": [\"StudyDate.PatientID\"]}", TS_OE_PARAMETER_OUT_OF_RANGE,
                   "Parent path doesn't contain an index");
    expect_refused(true, "{\"Remove\": [\"[0].PatientID\"]}", TS_OE_PARAMETER_OUT_OF_RANGE,
                   "Parent path doesn't contain a tag");
    expect_refused(false, "{\"Replace\": {\"ReferencedImageSequence[0.PatientName\": \"x\"}}",
                   TS_OE_PARAMETER_OUT_OF_RANGE,
                   "Parent path doesn't contain the end of the index");
    expect_refused(false, "{\"Keep\": [\"ReferencedImageSequence[x].PatientID\"]}",
                   TS_OE_PARAMETER_OUT_OF_RANGE, "Not a valid index in parent path: [x]");
    expect_refused(true, "{\"Keep\": [\"ReferencedImageSequence[-1].PatientID\"]}",
                   TS_OE_PARAMETER_OUT_OF_RANGE, "Negative index in parent path: -1");
    /* the final tag is read first */
    expect_refused(true, "{\"Keep\": [\"A[x].NoSuchTag\"]}", TS_OE_UNKNOWN_DICOM_TAG, "");
    expect_refused(true, "{\"Keep\": [\"(0008,1140)[*].(PatientName)\"]}", TS_OE_UNKNOWN_DICOM_TAG,
                   "Cannot parse tag: (PatientName)");
    expect_refused(true, "{\"Keep\": [\"ReferencedImageSequence[0]\"]}", TS_OE_UNKNOWN_DICOM_TAG,
                   "");
    /* Force is for top-level identifiers only, "(gggg,eeee)" is a tag too */
    expect_refused(false, "{\"Keep\": [\"(0020,000d)\"]}", TS_OE_BAD_REQUEST,
                   "Marking tag \"(0020,000d)\" as to be kept requires the \"Force\" option to be "
                   "set to true");
    ts_modify_free(parse_ok(false,
                            "{\"Keep\": [\"(0008,1140)[*].(0020,000d)\", \"(0010,0010)\"],"
                            " \"Remove\": [\" ReferencedImageSequence [ 1 ] . PatientID \"]}"));
}

static void test_generate_uid(void **state)
{
    (void)state;
    char a[80], b[80];
    ts_dicom_generate_uid(a, sizeof(a));
    ts_dicom_generate_uid(b, sizeof(b));
    assert_true(strncmp(a, "2.25.", 5) == 0);
    assert_string_not_equal(a, b);
    for (const char *p = a; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || *p == '.');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_rules),
        cmocka_unit_test(test_modify_study_level),
        cmocka_unit_test(test_anonymize_references),
        cmocka_unit_test(test_replace_sequence_and_private),
        cmocka_unit_test(test_path_errors),
        cmocka_unit_test(test_generate_uid),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
