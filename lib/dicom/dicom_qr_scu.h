/* C-FIND and C-MOVE as an SCU (dicom_qr_scu.cc): what POST /modalities/{id}/query
 * and the DicomMoveScu job send to another modality, built and read as Orthanc
 * 1.10.1 builds and reads them, so that answers and error details match. */
#ifndef TS_DICOM_QR_SCU_H
#define TS_DICOM_QR_SCU_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dicom.h"
#include "base/err.h"
#include "base/ids.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One key of a query: a top-level tag and its value (UTF-8). */
typedef struct ts_dicom_qr_key {
    uint32_t tag;
    const char *value;
} ts_dicom_qr_key;

/* A JSON object of "gggg,eeee" keys (Orthanc's "Short" form, lower-case hex). */
void ts_dicom_tag_key(uint32_t tag, char out[10]);

/* True when Orthanc's normalised C-FIND keeps the tag at that level (the main
 * tags of the level and of the levels above, and the level's counters). */
bool ts_dicom_qr_allowed(ts_level level, uint32_t tag);

/* C-FIND at `level` (Patient Root information model for patients, Study Root
 * otherwise). Orthanc's query: with normalize, the keys not allowed at the
 * level are left out; QueryRetrieveLevel and the identifying keys of the level
 * and those above are added empty when missing. *answers receives an array of
 * objects "gggg,eeee" -> UTF-8 text (sequences left out), sorted by tag, with
 * QueryRetrieveLevel and SpecificCharacterSet ("ISO_IR 100", Orthanc's default
 * encoding, whatever the peer sent) as Orthanc shows them; the caller decrefs it. At most
 * max_answers are kept (0: no limit). Errors say what Orthanc says in its Details:
 * 'DicomAssociation - connecting to AET "X": ...' (TS_EIO, TS_ETIMEOUT). */
int ts_dicom_find_scu(const ts_dicom_peer *peer, ts_level level, const ts_dicom_qr_key *keys,
                      size_t nkeys, bool normalize, size_t max_answers, json_t **answers,
                      ts_err *err);

/* C-MOVE of one identifier (an object "gggg,eeee" -> text that holds
 * QueryRetrieveLevel, 0008,0052) to the AE title `target`. Only the keys that
 * identify the resource at its level are sent, as Orthanc does. TS_EIO /
 * TS_ETIMEOUT: the association failed ('DicomAssociation - ...'); TS_EDICOM:
 * the peer's final status was not success ('C-MOVE SCU to AET "X" has failed
 * with DIMSE status 0x....'); TS_EINVAL: the identifier has no usable level. */
int ts_dicom_move_scu(const ts_dicom_peer *peer, const char *target, const json_t *identifier,
                      ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
