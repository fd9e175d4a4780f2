/* Orthanc-style modification and anonymization of one dataset (dicom_modify.cc):
 * the body of POST /{level}/{id}/modify|anonymize parsed once into a ts_modify,
 * checked against Orthanc 1.10.1's rules, then applied to any number of
 * instances. New UIDs are derived from a secret of the job and the original
 * UID (2.25.<128 bits of SHA-256>), so the same original UID gets the same new
 * one in every instance of one job, on whichever worker and after a restart,
 * without any shared map; references in sequences (SR, RT) follow. */
#ifndef TS_DICOM_MODIFY_H
#define TS_DICOM_MODIFY_H

#include <jansson.h>
#include <stdbool.h>

#include "base/err.h"
#include "base/orthanc_errors.h"
#include "dicom/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_modify ts_modify;

/* Parses Orthanc's body of /modify (anonymize false: Replace, Remove, Keep,
 * RemovePrivateTags, Force, PrivateCreator) or /anonymize (the profile of
 * DicomVersion, "2021b" by default, or "2017c"/"2008", then Replace, Remove,
 * Keep, KeepPrivateTags, Force, PrivateCreator). Other members (Synchronous,
 * Priority, KeepSource, Transcode ...) are the caller's. On failure returns
 * TS_EINVAL, *oe is Orthanc's error code and err->msg its details (may be
 * empty, as Orthanc gives none for some). */
int ts_modify_parse(const json_t *body, bool anonymize, ts_modify **out, ts_oe *oe, ts_err *err);
void ts_modify_free(ts_modify *m);

/* The level (0 patient .. 3 instance) the modification applies at: the UIDs
 * of this level and below get new values. Anonymization is always at the
 * patient level (as Orthanc). */
void ts_modify_set_level(ts_modify *m, int level);
int ts_modify_level(const ts_modify *m);
/* The level Orthanc picks for POST /instances/{id}/modify: patient when
 * PatientID is replaced, else study/series when their UID is, else instance. */
int ts_modify_instance_level(const ts_modify *m);
bool ts_modify_is_anonymization(const ts_modify *m);

/* Orthanc's checks of a modification against its level ("When modifying a
 * study, the parent PatientID cannot be manually modified", an identifying tag
 * removed ...). 0, or TS_EINVAL with *oe and the details in err. */
int ts_modify_check(const ts_modify *m, ts_oe *oe, ts_err *err);

/* The secret new UIDs are derived from (any text; one per job). */
void ts_modify_set_secret(ts_modify *m, const char *secret);
/* Anonymization: the PatientID and PatientName given to every instance of the
 * job unless the body replaces them (Orthanc: a UUID and "Anonymized<N>"). */
void ts_modify_set_anonymous_patient(ts_modify *m, const char *patient_id,
                                     const char *patient_name);

/* The new UID for an original one under this modification's secret. */
void ts_modify_map_uid(const ts_modify *m, const char *original, char *out, size_t size);

/* Applies the modification to d in memory. TS_EINVAL for a replacement the
 * dataset cannot take (bad value for the tag's VR, a private tag without a
 * private creator), with *oe and details. */
int ts_modify_apply(const ts_modify *m, ts_dicom *d, ts_oe *oe, ts_err *err);

/* ---- split and merge of studies (Orthanc's /studies/{id}/split and /merge) ---- */

/* Orthanc's "Patient Module" (module 0), "General Study Module" (1) and
 * "General Series Module" (2) tags: the ones a split may change, a merge copies
 * from its target, a created instance inherits from its parent. */
const uint32_t *ts_dicom_module_tags(int module, size_t *n);

/* The copies get the values these tags have in src (a merge's target study),
 * and lose the ones src does not have. */
void ts_modify_copy_from(ts_modify *m, const ts_dicom *src, const uint32_t *tags, size_t n);

/* Converts d's pixel data to transfer syntax to_uid in memory, with the rules
 * and errors of ts_dicom_transcode_file (codecs.h: TS_EINVAL for an unknown
 * UID, TS_EUNSUPPORTED, TS_EDICOM); ts_dicom_save_file then writes d in it.
 * keep_sop: the SOPInstanceUID stays what it was even when a lossy encoder
 * made a new one (Orthanc's modification jobs do so, to keep the references
 * between the copies). On failure d is still written in its own syntax. */
int ts_dicom_transcode(ts_dicom *d, const char *to_uid, unsigned flags, bool keep_sop, ts_err *err);

/* Writes d as a Part 10 file in its transfer syntax (or ts_dicom_transcode's), the meta header
 * updated (MediaStorageSOPInstanceUID follows SOPInstanceUID); SpecificCharacterSet becomes ISO_IR
 * 192 when a text value is not ASCII (datasets are UTF-8 in memory). */
int ts_dicom_save_file(ts_dicom *d, const char *path, ts_err *err);

/* A new UID under Tessera's root for /tools/generate-uid (2.25.<random 128 bits>). */
void ts_dicom_generate_uid(char *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif
