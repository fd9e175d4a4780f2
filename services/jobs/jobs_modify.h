/* The ResourceModification job (Orthanc's type): POST /{patients,studies,
 * series}/{id}/modify|anonymize. Input: {"Body": the request, "Anonymize",
 * "Level", "Secret" (new UIDs derive from it, so any worker gives the same
 * ones), "PatientID"/"PatientName" (anonymization), "KeepSource", "Resource",
 * "Instances": [public ids]}. Each instance is read, modified
 * (lib/dicom/dicom_modify.h), written to the storage area's tmp/ and stored
 * through ingest's one write path (the `store` bus, as REST uploads); then its
 * AnonymizedFrom/ModifiedFrom metadata are set as Orthanc sets them. Each
 * done instance goes into the job's done set with the id of its copy, so a
 * job taken over after a worker died goes on with the others (a copy stored
 * twice is "AlreadyStored", never a duplicate). KeepSource false: once all are
 * stored, the originals are deleted through lib/domain/delete.h.
 *
 * SplitStudy and MergeStudy (POST /studies/{id}/split and /merge) run here too:
 * series-level modifications whose StudyInstanceUID and patient/study tags
 * come from REST (split: a new study UID and the body's Replace/Remove) or from
 * one instance of the target study (merge: input "Target"); no metadata, and
 * KeepSource is false unless asked, as in Orthanc. */
#ifndef JOBS_MODIFY_H
#define JOBS_MODIFY_H

#include "dicom/dicom_modify.h"
#include "jobs_worker.h"

void jobs_modify_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

/* A route's "anonymize/modify then store" (the router's store jobs, input
 * "Modification": {"Body", "Anonymize", "Secret"}): as Orthanc's Lua
 * ModifyInstance + SendToModality, the modified instance is sent and not
 * stored. The modification is at the instance level (Orthanc's pick for
 * /instances/{id}/modify; an anonymization at the patient level) with the
 * rule's secret, so an original UID gets the same new one in every job of
 * the rule; an anonymized PatientID ("2.25.<...>") and PatientName
 * ("Anonymized<8 digits>") are derived from the original PatientID under
 * the same secret, so one patient stays one patient. NULL when the job has
 * none; *bad set (and the job failed) when it is malformed. */
ts_modify *jobs_route_modification(const json_t *input, bool *bad, jobs_outcome *out);
/* The modified copy of the stored file in a new temporary file (path, the
 * caller unlinks it), or TS_E* with err and *oe Orthanc's error for it. */
int jobs_route_modified_file(jobs_worker *w, ts_modify *m, const char *file, char *path,
                             size_t size, ts_oe *oe, ts_err *err);

#endif
