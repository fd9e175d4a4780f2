/* libFuzzer target: the DICOM parsing wrapper (lib/dicom/dicom*.cc) on arbitrary
 * bytes, as ingest and REST receive them: parse, identify, and build every JSON
 * form a route serves. Nothing may crash, leak or read out of bounds; a
 * refusal is a fine answer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "dicom/dicom.h"
#include "base/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ts_log_init("fuzz", TS_LOG_ERROR);
    ts_err err;
    if (ts_dicom_global_init(&err))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_dicom *d;
    ts_err err;
    if (ts_dicom_open_buffer(data, size, &d, &err))
        return 0;
    ts_dicom_identity id = {0};
    if (ts_dicom_identity_get(d, &id, &err) == 0)
        ts_dicom_identity_clear(&id);
    json_t *full = ts_dicom_to_orthanc_json(d);
    json_t *simple = full ? ts_dicom_orthanc_simplify(full) : NULL;
    json_t *header = ts_dicom_header_to_orthanc_json(d);
    json_t *simplified = ts_dicom_to_simplified_json(d);
    json_t *web = ts_dicom_to_dicomweb_json(d, "http://localhost/bulk");
    for (int level = 0; level <= 3; level++)
        json_decref(ts_dicom_main_tags(d, (ts_level)level));
    char *text = full ? json_dumps(full, JSON_COMPACT) : NULL;
    free(text);
    json_decref(full);
    json_decref(simple);
    json_decref(header);
    json_decref(simplified);
    json_decref(web);
    free(ts_dicom_get_string(d, 0x00100010, true));
    (void)ts_dicom_transfer_syntax(d);
    ts_dicom_free(d);
    return 0;
}
