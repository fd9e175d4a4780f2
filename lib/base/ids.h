/* Public ids, computed as Orthanc computes them so that one file gets the same
 * ids in both systems: SHA-1 of the identifying values joined by '|', written as
 * 40 hex digits in five groups of eight joined by '-'. */
#ifndef TS_IDS_H
#define TS_IDS_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TS_ID_LEN 44 /* 40 hex digits and 4 dashes */

typedef enum { TS_LEVEL_PATIENT = 0, TS_LEVEL_STUDY, TS_LEVEL_SERIES, TS_LEVEL_INSTANCE } ts_level;

typedef struct ts_ids {
    char patient[TS_ID_LEN + 1];
    char study[TS_ID_LEN + 1];
    char series[TS_ID_LEN + 1];
    char instance[TS_ID_LEN + 1];
} ts_ids;

/* patient = SHA1(PatientID), study = SHA1(PatientID|StudyInstanceUID),
 * series = SHA1(...|SeriesInstanceUID), instance = SHA1(...|SOPInstanceUID).
 * Values are taken as given (the caller strips DICOM padding). */
void ts_ids_compute(const char *patient_id, const char *study_uid, const char *series_uid,
                    const char *sop_uid, ts_ids *out);

/* True if s has the shape of a public id. */
bool ts_id_is_valid(const char *s);

/* True if s has the shape of the ids of jobs and /queries entries: a UUID as
 * uuid_unparse_lower writes it (36 characters of [0-9a-f-]). Anything else is
 * unknown without asking Redis. */
bool ts_id_is_lower_uuid(const char *s);

/* "Patient", "Study", "Series", "Instance" (Orthanc's ResourceType names). */
const char *ts_level_name(ts_level level);

#ifdef __cplusplus
}
#endif

#endif
