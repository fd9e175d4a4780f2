/* The DicomMoveScu job (Orthanc's type): C-MOVE requests sent to a modality,
 * one per identifier, asking it to send the resources to a target AE title
 * (by default ours, so they arrive through ingest). Input: {"AET", "Host",
 * "Port", "LocalAet", "Timeout", "TargetAet", "Permissive", "Resources": [
 * identifiers as {"gggg,eeee": value} with QueryRetrieveLevel]}. The indexes
 * of the identifiers moved are recorded in the job's done set, so a
 * resubmitted or taken-over job asks only for the others. */
#ifndef JOBS_MOVE_H
#define JOBS_MOVE_H

#include "jobs_worker.h"

void jobs_move_run(jobs_worker *w, ts_job_claim *c, jobs_outcome *out);

#endif
