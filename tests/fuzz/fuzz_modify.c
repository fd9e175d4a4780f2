/* libFuzzer target: the body of POST /{level}/{id}/modify and /anonymize
 * (lib/dicom/dicom_modify.cc): arbitrary bytes parsed as JSON, then as Orthanc's
 * modification and anonymization bodies (Replace, Remove, Keep with sequence
 * paths, Force, PrivateCreator, DicomVersion ...); a body that parses is checked
 * at every level and applied to test files with sequences, private tags and
 * references (RT structure set, SR, CT), then written. Nothing may crash, leak
 * or read out of bounds; an Orthanc error is a fine answer. Seeds:
 * tests/fuzz/corpus/modify/. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"
#include "dicom/dicom.h"
#include "dicom/dicom_modify.h"

static const char *const FILES[] = {"rtstruct.dcm", "test-SR.dcm", "CT_small.dcm"};
#define NFILES (sizeof(FILES) / sizeof(FILES[0]))
static void *file_data[NFILES];
static size_t file_len[NFILES];

static void load(size_t i)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", FUZZ_DATA_DIR, FILES[i]);
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    file_len[i] = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    file_data[i] = malloc(file_len[i]);
    if (!file_data[i] || fread(file_data[i], 1, file_len[i], f) != file_len[i])
        abort();
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ts_log_init("fuzz", TS_LOG_ERROR);
    ts_err err;
    if (ts_dicom_global_init(&err))
        abort();
    for (size_t i = 0; i < NFILES; i++)
        load(i);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    if (!body)
        return 0;
    for (int anonymize = 0; anonymize < 2; anonymize++) {
        ts_modify *m = NULL;
        ts_oe oe;
        ts_err err;
        if (ts_modify_parse(body, anonymize, &m, &oe, &err))
            continue;
        ts_modify_set_secret(m, "fuzz");
        ts_modify_set_anonymous_patient(m, "b5c1e9a0-0000-4000-8000-000000000000", "Anonymized1");
        /* the level an instance call picks, then every level a job may run at */
        ts_modify_set_level(m, ts_modify_instance_level(m));
        for (int level = 0; level < 4; level++) {
            if (level > 0)
                ts_modify_set_level(m, level - 1);
            (void)ts_modify_check(m, &oe, &err);
            /* the first input file at every level, the others once */
            for (size_t i = 0; i < (level == 0 ? NFILES : 1); i++) {
                ts_dicom *d = NULL;
                if (ts_dicom_open_buffer(file_data[i], file_len[i], &d, &err))
                    abort();
                if (ts_modify_apply(m, d, &oe, &err) == 0)
                    (void)ts_dicom_save_file(d, "/dev/null", &err);
                ts_dicom_free(d);
            }
        }
        ts_modify_free(m);
    }
    json_decref(body);
    return 0;
}
