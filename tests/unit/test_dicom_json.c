/* The JSON forms of a DICOM file (lib/dicom/dicom_json.cc) compared with what Orthanc
 * 1.10.1 and its DICOMweb plugin answered for the same file: every file in
 * tests/data/dicom against its answers in tests/data/orthanc/<name>/, recorded
 * by tests/data/orthanc/record.sh. A few hand-checked values then pin the rules
 * of the DICOM JSON model (PS3.18 F.2) that the comparison relies on. */
#include <dirent.h>
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

#define DICOM_DIR TS_TEST_DATA "/dicom"
#define ORTHANC_DIR TS_TEST_DATA "/orthanc"

/* Where the recorded DICOMweb answers point their BulkDataURIs (record.sh sets
 * the plugin's Host to orthanc.test). */
#define ORTHANC_WADO_ROOT "http://orthanc.test/dicom-web"

/* A diff larger than this is written to files instead of the terminal. */
#define PRINT_LIMIT 2000

typedef struct {
    char names[256][NAME_MAX + 1]; /* file names without ".dcm", sorted */
    size_t count;
} file_list;

static int compare_names(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void path_of(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void path_of(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "path too long for the test's buffer\n");
        abort();
    }
}

static int setup(void **state)
{
    ts_err err = {0};
    if (ts_dicom_global_init(&err) != 0) {
        fprintf(stderr, "dicom init: %s\n", err.msg);
        return -1;
    }
    file_list *files = calloc(1, sizeof(*files));
    DIR *dir = opendir(DICOM_DIR);
    if (!files || !dir) {
        fprintf(stderr, "cannot list %s\n", DICOM_DIR);
        free(files);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".dcm") != 0)
            continue;
        if (files->count == sizeof(files->names) / sizeof(files->names[0])) {
            fprintf(stderr, "more test files than the test can hold\n");
            abort();
        }
        memcpy(files->names[files->count], e->d_name, len - 4);
        files->names[files->count][len - 4] = '\0';
        files->count++;
    }
    closedir(dir);
    qsort(files->names, files->count, sizeof(files->names[0]), compare_names);
    *state = files;
    return files->count > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static ts_dicom *open_test_file(const char *name)
{
    char path[PATH_MAX];
    path_of(path, sizeof(path), "%s/%s.dcm", DICOM_DIR, name);
    ts_dicom *d = NULL;
    ts_err err = {0};
    if (ts_dicom_open_file(path, &d, &err) != 0)
        fail_msg("open %s: %s", path, err.msg);
    return d;
}

static json_t *load_reference(const char *name, const char *what)
{
    char path[PATH_MAX];
    path_of(path, sizeof(path), "%s/%s/%s", ORTHANC_DIR, name, what);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        fail_msg("%s: %s (line %d); run tests/data/orthanc/record.sh after adding a file", path,
                 jerr.text, jerr.line);
    return j;
}

static void print_json(const char *label, const json_t *j)
{
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    fprintf(stderr, "    %s: %s\n", label, s ? s : "(nothing)");
    free(s);
}

/* Prints where two documents differ, down to the smallest differing values. */
static void print_differences(const char *path, const json_t *ours, const json_t *ref)
{
    if (json_is_object(ours) && json_is_object(ref)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)ref, key, v)
        {
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s/%s", path, key);
            print_differences(sub, json_object_get(ours, key), v);
        }
        json_object_foreach((json_t *)ours, key, v)
        {
            if (!json_object_get(ref, key)) {
                fprintf(stderr, "  %s/%s: only in ours\n", path, key);
                print_json("ours", v);
            }
        }
        return;
    }
    if (json_is_array(ours) && json_is_array(ref) &&
        json_array_size(ours) == json_array_size(ref)) {
        for (size_t i = 0; i < json_array_size(ref); i++) {
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            print_differences(sub, json_array_get(ours, i), json_array_get(ref, i));
        }
        return;
    }
    if (json_equal(ours, ref))
        return;
    fprintf(stderr, "  %s:\n", path);
    print_json("ours   ", ours);
    print_json("orthanc", ref);
}

/* Compares and, on a mismatch, prints both documents (or writes them to files
 * when they are large) and the differences. Returns true if equal. */
static bool same_json(const char *name, const char *what, json_t *ours, json_t *ref)
{
    if (json_equal(ours, ref))
        return true;
    fprintf(stderr, "%s.dcm, %s: differs from Orthanc's answer\n", name, what);
    char *a = json_dumps(ours, JSON_INDENT(1));
    char *b = json_dumps(ref, JSON_INDENT(1));
    if (a && b && strlen(a) + strlen(b) < PRINT_LIMIT) {
        fprintf(stderr, "ours:\n%s\northanc:\n%s\n", a, b);
    } else {
        char pa[PATH_MAX], pb[PATH_MAX];
        path_of(pa, sizeof(pa), "/tmp/ts-dicom-json-%s-%s-ours.json", name, what);
        path_of(pb, sizeof(pb), "/tmp/ts-dicom-json-%s-%s-orthanc.json", name, what);
        json_dump_file(ours, pa, JSON_INDENT(1));
        json_dump_file(ref, pb, JSON_INDENT(1));
        fprintf(stderr, "both written: diff %s %s\n", pa, pb);
    }
    free(a);
    free(b);
    print_differences("", ours, ref);
    return false;
}

/* ---- what the JSON forms need from the parser ------------------------------------ */

/* The forms show strings in UTF-8 and SpecificCharacterSet as the file has it,
 * as Orthanc does: the parser (lib/dicom/dicom.cc) must convert the values and leave
 * SpecificCharacterSet alone, ISO 2022 code extensions included. When this test
 * fails, the comparisons below fail on the same files for the same reason. */
static void test_parser_gives_utf8_and_the_files_character_set(void **state)
{
    (void)state;
    static const struct {
        const char *file, *charset, *patient_name;
    } cases[] = {
        {"chrRuss", "ISO_IR 144", "Люкceмбypг"},
        {"chrGerm", "ISO_IR 100", "Äneas^Rüdiger"},
        {"chrX2", "GB18030", "Wang^XiaoDong=王^小东="},
        {"chrH31", "\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ts_dicom *d = open_test_file(cases[i].file);
        char *charset = ts_dicom_get_string(d, TS_TAG(0x0008, 0x0005), false);
        char *name = ts_dicom_get_string(d, TS_TAG_PATIENT_NAME, false);
        if (!charset || strcmp(charset, cases[i].charset) != 0) {
            fprintf(stderr, "%s.dcm: SpecificCharacterSet is \"%s\", the file has \"%s\"\n",
                    cases[i].file, charset ? charset : "(none)", cases[i].charset);
            failures++;
        }
        if (!name || strcmp(name, cases[i].patient_name) != 0) {
            fprintf(stderr, "%s.dcm: PatientName is \"%s\", expected \"%s\"\n", cases[i].file,
                    name ? name : "(none)", cases[i].patient_name);
            failures++;
        }
        free(charset);
        free(name);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

/* A bare explicit VR little endian dataset with SpecificCharacterSet and
 * PatientName as these bytes (and a StudyInstanceUID), in buf; its length. */
static size_t charset_dataset(unsigned char *buf, const char *charset, const char *name,
                              size_t name_len)
{
    size_t n = 0;
    const struct {
        uint16_t group, element;
        const char *vr, *value;
        size_t len;
    } elements[] = {
        {0x0008, 0x0005, "CS", charset, strlen(charset)},
        {0x0010, 0x0010, "PN", name, name_len},
        {0x0020, 0x000d, "UI", "1.2.3.4", 7},
    };
    for (size_t i = 0; i < sizeof(elements) / sizeof(elements[0]); i++) {
        size_t len = elements[i].len + (elements[i].len & 1);
        buf[n++] = elements[i].group & 0xff;
        buf[n++] = (unsigned char)(elements[i].group >> 8);
        buf[n++] = elements[i].element & 0xff;
        buf[n++] = (unsigned char)(elements[i].element >> 8);
        memcpy(buf + n, elements[i].vr, 2);
        n += 2;
        buf[n++] = len & 0xff;
        buf[n++] = (unsigned char)(len >> 8);
        memcpy(buf + n, elements[i].value, elements[i].len);
        if (elements[i].len & 1)
            buf[n + elements[i].len] = elements[i].vr[0] == 'U' ? '\0' : ' ';
        n += len;
    }
    return n;
}

/* ISO 2022 code extensions, decoded by lib/dicom/dicom.cc itself (PS3.5 6.1.2.5):
 * the standard's examples, and broken values that must not read past their end
 * (a cut escape sequence, a cut two-byte character, a byte no set holds). */
static void test_iso2022_values(void **state)
{
    (void)state;
    static const struct {
        const char *charset, *bytes, *utf8;
    } cases[] = {
        {"ISO 2022 IR 13\\ISO 2022 IR 87",
         "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^"
         "\x1b$B$?$m$&\x1b(J",
         "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"},
        {"\\ISO 2022 IR 149",
         "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6"
         "\xb5\xbf",
         "Hong^Gildong=洪^吉洞=홍^길동"},
        {"\\ISO 2022 IR 58",
         "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=", "Zhang^XiaoDong=张^小东="},
        {"ISO 2022 IR 6\\ISO 2022 IR 144", "\x1b-L\xb8\xd2\xd0\xdd\xde\xd2", "Иванов"},
        {"ISO 2022 IR 166", "\xc0\xd2\xc9\xd2", "ภาษา"},
        {"\\ISO 2022 IR 87", "A\x1b$", "A\xef\xbf\xbd$"},
        {"\\ISO 2022 IR 87", "A\x1b$B;", "A;"},
        {"\\ISO 2022 IR 149", "A\x1b$)C\xfb", "A\xef\xbf\xbd"},
        {"\\ISO 2022 IR 87", "A\xe9", "A\xef\xbf\xbd"},
        {"\\ISO 2022 IR 87", "A\x1b%GB", "A\xef\xbf\xbd%GB"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char buf[512];
        size_t n = charset_dataset(buf, cases[i].charset, cases[i].bytes, strlen(cases[i].bytes));
        ts_dicom *d;
        ts_err err = {0};
        assert_int_equal(ts_dicom_open_buffer(buf, n, &d, &err), 0);
        char *name = ts_dicom_get_string(d, TS_TAG_PATIENT_NAME, false);
        char *charset = ts_dicom_get_string(d, TS_TAG(0x0008, 0x0005), false);
        if (!name || strcmp(name, cases[i].utf8) != 0) {
            fprintf(stderr, "case %zu (%s): PatientName is \"%s\", expected \"%s\"\n", i,
                    cases[i].charset, name ? name : "(none)", cases[i].utf8);
            failures++;
        }
        if (!charset || strcmp(charset, cases[i].charset) != 0) {
            fprintf(stderr, "case %zu: SpecificCharacterSet is \"%s\"\n", i,
                    charset ? charset : "(none)");
            failures++;
        }
        free(name);
        free(charset);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

/* ---- Orthanc's forms ---------------------------------------------------------- */

static void test_tags_equal_orthanc(void **state)
{
    const file_list *files = *state;
    int failures = 0;
    for (size_t i = 0; i < files->count; i++) {
        ts_dicom *d = open_test_file(files->names[i]);
        json_t *ours = ts_dicom_to_orthanc_json(d);
        json_t *ref = load_reference(files->names[i], "tags.json");
        failures += !same_json(files->names[i], "tags", ours, ref);
        json_decref(ours);
        json_decref(ref);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

static void test_simplified_tags_equal_orthanc(void **state)
{
    const file_list *files = *state;
    int failures = 0;
    for (size_t i = 0; i < files->count; i++) {
        ts_dicom *d = open_test_file(files->names[i]);
        json_t *ours = ts_dicom_to_simplified_json(d);
        json_t *ref = load_reference(files->names[i], "simplified-tags.json");
        failures += !same_json(files->names[i], "simplified-tags", ours, ref);
        json_decref(ours);
        json_decref(ref);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

static void test_main_tags_equal_orthanc(void **state)
{
    const file_list *files = *state;
    int failures = 0;
    for (size_t i = 0; i < files->count; i++) {
        ts_dicom *d = open_test_file(files->names[i]);
        json_t *ref = load_reference(files->names[i], "main-tags.json");
        for (ts_level level = TS_LEVEL_PATIENT; level <= TS_LEVEL_INSTANCE; level++) {
            json_t *ours = ts_dicom_main_tags(d, level);
            char what[64];
            snprintf(what, sizeof(what), "main-tags-%s", ts_level_name(level));
            failures +=
                !same_json(files->names[i], what, ours, json_object_get(ref, ts_level_name(level)));
            json_decref(ours);
        }
        json_decref(ref);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

/* The rules Orthanc's answers showed, checked by hand on a few values. */
static void test_tags_hand_checked(void **state)
{
    (void)state;
    ts_dicom *d = open_test_file("CT_small");
    json_t *tags = ts_dicom_to_orthanc_json(d);
    /* a private tag: named from the private dictionary, with its creator */
    json_t *t = json_object_get(tags, "0009,1001");
    assert_string_equal(json_string_value(json_object_get(t, "Name")), "FullFidelity");
    assert_string_equal(json_string_value(json_object_get(t, "PrivateCreator")), "GEMS_IDEN_01");
    /* an FL as 17 significant digits; an OB as Null; a sequence */
    t = json_object_get(tags, "0027,1041");
    assert_string_equal(json_string_value(json_object_get(t, "Value")), "-77.204063415527344");
    t = json_object_get(tags, "0043,1028");
    assert_string_equal(json_string_value(json_object_get(t, "Type")), "Null");
    assert_true(json_is_null(json_object_get(t, "Value")));
    t = json_object_get(tags, "0010,1002");
    assert_string_equal(json_string_value(json_object_get(t, "Type")), "Sequence");
    assert_int_equal(json_array_size(json_object_get(t, "Value")), 2);
    /* nothing after PixelData: the trailing padding (fffc,fffc) is left out */
    assert_non_null(json_object_get(tags, "7fe0,0010"));
    assert_null(json_object_get(tags, "fffc,fffc"));
    json_decref(tags);
    ts_dicom_free(d);

    /* strings over 256 bytes are TooLong, and left out of the main tags */
    d = open_test_file("long_values");
    tags = ts_dicom_to_orthanc_json(d);
    t = json_object_get(tags, "0008,1030");
    assert_string_equal(json_string_value(json_object_get(t, "Type")), "TooLong");
    json_t *study = ts_dicom_main_tags(d, TS_LEVEL_STUDY);
    assert_null(json_object_get(study, "StudyDescription"));
    assert_non_null(json_object_get(study, "StudyInstanceUID"));
    json_decref(study);
    json_decref(tags);
    ts_dicom_free(d);
}

/* ---- DICOM JSON model ------------------------------------------------------------ */

/* The plugin's bulk root for the instance: <root>/studies/../series/../instances/../bulk */
static void bulk_prefix_of(const ts_dicom *d, char *buf, size_t size)
{
    char *study = ts_dicom_get_string(d, TS_TAG_STUDY_INSTANCE_UID, false);
    char *series = ts_dicom_get_string(d, TS_TAG_SERIES_INSTANCE_UID, false);
    char *sop = ts_dicom_get_string(d, TS_TAG_SOP_INSTANCE_UID, false);
    assert_non_null(study);
    assert_non_null(series);
    assert_non_null(sop);
    path_of(buf, size, "%s/studies/%s/series/%s/instances/%s/bulk", ORTHANC_WADO_ROOT, study,
            series, sop);
    free(study);
    free(series);
    free(sop);
}

/* The one difference from the plugin we keep on purpose: Orthanc leaves out
 * compressed (encapsulated) PixelData, PS3.18 wants its BulkDataURI. Drops ours
 * after checking it, when the reference has none. */
static void drop_encapsulated_pixel_data(json_t *ours, const json_t *ref, const char *prefix)
{
    json_t *px = json_object_get(ours, "7FE00010");
    if (!px || json_object_get(ref, "7FE00010"))
        return;
    char uri[PATH_MAX];
    path_of(uri, sizeof(uri), "%s/7fe00010", prefix);
    const char *vr = json_string_value(json_object_get(px, "vr"));
    const char *got = json_string_value(json_object_get(px, "BulkDataURI"));
    assert_non_null(vr);
    assert_non_null(got);
    assert_string_equal(vr, "OB");
    assert_string_equal(got, uri);
    json_object_del(ours, "7FE00010");
}

static void test_dicomweb_equals_orthanc_plugin(void **state)
{
    const file_list *files = *state;
    int failures = 0;
    for (size_t i = 0; i < files->count; i++) {
        ts_dicom *d = open_test_file(files->names[i]);
        char prefix[PATH_MAX];
        bulk_prefix_of(d, prefix, sizeof(prefix));
        json_t *ours = ts_dicom_to_dicomweb_json(d, prefix);
        json_t *ref = load_reference(files->names[i], "dicomweb.json");
        drop_encapsulated_pixel_data(ours, ref, prefix);
        failures += !same_json(files->names[i], "dicomweb", ours, ref);
        json_decref(ours);
        json_decref(ref);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

/* Removes every element that has a BulkDataURI, at every depth. */
static void drop_bulk_data(json_t *dataset)
{
    const char *key;
    json_t *node, *tmp;
    json_object_foreach_safe(dataset, tmp, key, node)
    {
        if (json_object_get(node, "BulkDataURI")) {
            json_object_del(dataset, key);
            continue;
        }
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(node, "Value"), i, item)
        {
            if (json_is_object(item) && !json_object_get(item, "Alphabetic") &&
                !json_object_get(item, "Ideographic") && !json_object_get(item, "Phonetic"))
                drop_bulk_data(item);
        }
    }
}

static void test_dicomweb_without_prefix_leaves_bulk_data_out(void **state)
{
    const file_list *files = *state;
    int failures = 0;
    for (size_t i = 0; i < files->count; i++) {
        ts_dicom *d = open_test_file(files->names[i]);
        json_t *ours = ts_dicom_to_dicomweb_json(d, NULL);
        json_t *ref = load_reference(files->names[i], "dicomweb.json");
        drop_bulk_data(ref);
        failures += !same_json(files->names[i], "dicomweb-no-bulk", ours, ref);
        json_decref(ours);
        json_decref(ref);
        ts_dicom_free(d);
    }
    assert_int_equal(failures, 0);
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        fail_msg("bad expected JSON %s: %s", text, jerr.text);
    return j;
}

/* Asserts that element `tag` of `dataset` is exactly `expected` (JSON text). */
static void assert_element(const json_t *dataset, const char *tag, const char *expected)
{
    json_t *want = parse(expected);
    json_t *got = json_object_get(dataset, tag);
    if (!json_equal(got, want)) {
        print_json("got     ", got);
        print_json("expected", want);
        fail_msg("element %s", tag);
    }
    json_decref(want);
}

/* Values checked by hand against PS3.18 F.2 and dcmdump of the files. */
static void test_dicomweb_hand_checked(void **state)
{
    (void)state;
    ts_dicom *d = open_test_file("CT_small");
    json_t *j = ts_dicom_to_dicomweb_json(d, "http://x/bulk");
    assert_element(j, "00100010",
                   "{\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": \"CompressedSamples^CT1\"}]}");
    assert_element(j, "00080008",
                   "{\"vr\": \"CS\", \"Value\": [\"ORIGINAL\", \"PRIMARY\", \"AXIAL\"]}");
    assert_element(j, "00101030", "{\"vr\": \"DS\", \"Value\": [0]}");    /* DS "0.000000" */
    assert_element(j, "00181150", "{\"vr\": \"IS\", \"Value\": [1601]}"); /* IS "1601" */
    assert_element(j, "00191002", "{\"vr\": \"SL\", \"Value\": [912]}");  /* private SL */
    assert_element(j, "00080050", "{\"vr\": \"SH\"}");                    /* empty: no Value */
    assert_element(j, "7FE00010", "{\"vr\": \"OW\", \"BulkDataURI\": \"http://x/bulk/7fe00010\"}");
    assert_null(json_object_get(j, "00020010")); /* no meta header */
    json_decref(j);
    ts_dicom_free(d);

    d = open_test_file("JPEG-lossy");
    j = ts_dicom_to_dicomweb_json(d, "http://x/bulk");
    assert_element(j, "00280009", "{\"vr\": \"AT\", \"Value\": [\"00540010\", \"00540020\"]}");
    assert_element(j, "7FE00010", "{\"vr\": \"OB\", \"BulkDataURI\": \"http://x/bulk/7fe00010\"}");
    json_decref(j);
    ts_dicom_free(d);

    d = open_test_file("waveform_ecg");
    j = ts_dicom_to_dicomweb_json(d, "http://x/bulk");
    json_t *item = json_array_get(json_object_get(json_object_get(j, "54000100"), "Value"), 1);
    assert_element(item, "54001010",
                   "{\"vr\": \"OW\", \"BulkDataURI\": \"http://x/bulk/54000100/2/54001010\"}");
    json_decref(j);
    ts_dicom_free(d);

    d = open_test_file("chrH31");
    j = ts_dicom_to_dicomweb_json(d, NULL);
    assert_element(j, "00080005", "{\"vr\": \"CS\", \"Value\": [\"ISO 2022 IR 87\"]}");
    assert_element(j, "00100010",
                   "{\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": \"Yamada^Tarou\", "
                   "\"Ideographic\": \"山田^太郎\", \"Phonetic\": \"やまだ^たろう\"}]}");
    assert_null(json_object_get(j, "7FE00010")); /* no prefix: bulk data left out */
    json_decref(j);
    ts_dicom_free(d);

    d = open_test_file("reportsi_with_empty_number_tags");
    j = ts_dicom_to_dicomweb_json(d, "http://x/bulk");
    assert_element(j, "00081161", "{\"vr\": \"UL\"}");
    assert_element(j, "00189218", "{\"vr\": \"FD\"}");
    assert_element(j, "00640009", "{\"vr\": \"OF\"}"); /* empty bulk data: no URI */
    json_decref(j);
    ts_dicom_free(d);

    d = open_test_file("rtplan");
    j = ts_dicom_to_dicomweb_json(d, NULL);
    item = json_array_get(json_object_get(json_object_get(j, "300A0010"), "Value"), 0);
    assert_element(item, "300A0018",
                   "{\"vr\": \"DS\", \"Value\": [239.53125, 239.53125, -741.87]}");
    json_decref(j);
    ts_dicom_free(d);

    /* group lengths are not part of the model */
    d = open_test_file("ExplVR_BigEnd");
    j = ts_dicom_to_dicomweb_json(d, NULL);
    assert_null(json_object_get(j, "00080000"));
    assert_element(j, "00280010", "{\"vr\": \"US\", \"Value\": [60]}");
    json_decref(j);
    ts_dicom_free(d);
}

/* One attribute from an index value (QIDO answers), as elements are converted */
static void test_dicomweb_attribute_from_index_values(void **state)
{
    (void)state;
    static const struct {
        const char *vr, *value, *json;
    } cases[] = {
        {"PN", "DOE^JOHN", "{\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": \"DOE^JOHN\"}]}"},
        {"CS", "CT\\MR", "{\"vr\": \"CS\", \"Value\": [\"CT\", \"MR\"]}"},
        {"IS", "12", "{\"vr\": \"IS\", \"Value\": [12]}"},
        {"DS", "0.5\\2", "{\"vr\": \"DS\", \"Value\": [0.5, 2]}"},
        {"US", "512", "{\"vr\": \"US\", \"Value\": [512]}"},
        {"UI", "1.2.3", "{\"vr\": \"UI\", \"Value\": [\"1.2.3\"]}"},
        {"DA", "", "{\"vr\": \"DA\"}"},
        {"LO", NULL, "{\"vr\": \"LO\"}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *got = ts_dicomweb_attribute(cases[i].vr, cases[i].value);
        json_t *want = json_loads(cases[i].json, 0, NULL);
        assert_non_null(want);
        if (!json_equal(got, want)) {
            char *text = json_dumps(got, JSON_COMPACT);
            fail_msg("%s %s: got %s, want %s", cases[i].vr, cases[i].value ? cases[i].value : "",
                     text, cases[i].json);
        }
        json_decref(got);
        json_decref(want);
    }
    char vr[3];
    ts_dicom_tag_vr(TS_TAG(0x0028, 0x0010), vr);
    assert_string_equal(vr, "US");
    ts_dicom_tag_vr(TS_TAG(0x0019, 0x1234), vr);
    assert_string_equal(vr, "UN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_gives_utf8_and_the_files_character_set),
        cmocka_unit_test(test_iso2022_values),
        cmocka_unit_test(test_tags_equal_orthanc),
        cmocka_unit_test(test_simplified_tags_equal_orthanc),
        cmocka_unit_test(test_main_tags_equal_orthanc),
        cmocka_unit_test(test_tags_hand_checked),
        cmocka_unit_test(test_dicomweb_equals_orthanc_plugin),
        cmocka_unit_test(test_dicomweb_without_prefix_leaves_bulk_data_out),
        cmocka_unit_test(test_dicomweb_hand_checked),
        cmocka_unit_test(test_dicomweb_attribute_from_index_values),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
