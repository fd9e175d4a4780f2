/* Orthanc's log of exported resources (/exports, its LogExportedResources):
 * one row of the table exports (0029_exports.sql) per resource sent to a
 * modality or a peer, written when the store job is submitted (as Orthanc),
 * only when TESSERA_LOG_EXPORTED_RESOURCES is on. */
#ifndef TS_EXPORTS_H
#define TS_EXPORTS_H

#include <jansson.h>

#include "base/err.h"
#include "io/db.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Logs the resources ids (a JSON array of public ids, in order; unknown ones
 * are skipped) as exported to remote (the modality's or peer's name). 0 when
 * the setting is off. */
int ts_exports_log(ts_db_pool *db, const char *remote, const json_t *ids, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
