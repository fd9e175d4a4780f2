/* C-FIND on ingest's association, relayed to the query service over the bus
 * (`find`), page by page: answers go out as each page arrives, so that a large
 * result is never held whole, and C-CANCEL is honoured between two answers.
 * C-MOVE and C-GET ask query the same way for the instances they name (one
 * reply: the counts need the total), then lib/domain/retrieve.c sends them from here.
 * Why the bus and not the index directly: matching stays in one service (one
 * matcher, its limits and read replica), ingest needs no copy of it, and a
 * retrieve behaves exactly as on query's own port. */
#ifndef INGEST_FIND_H
#define INGEST_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/bus.h"
#include "dicom/dicom.h"
#include "dicom/dicom_find.h"
#include "domain/retrieve.h"

typedef struct ingest_find {
    ts_bus_client *query; /* NULL: C-FIND is not offered */
    const char *aet;
    long limit;          /* TESSERA_QUERY_LIMIT */
    bool case_sensitive; /* TESSERA_QUERY_CASE_SENSITIVE_PN */
    int timeout_ms;
} ingest_find;

/* Reads the configuration and dials TESSERA_QUERY_BUS (empty: no relay). */
int ingest_find_init(ingest_find *f, ts_err *err);
void ingest_find_clear(ingest_find *f);

/* The find callback of ts_dicom_scp_callbacks, among the studies grant may
 * see (query applies the label filter of /tools/find). */
uint16_t ingest_find_relay(ingest_find *f, const ts_dicom_assoc *assoc, const ts_dicom_grant *grant,
                           const ts_dicom_find_rq *rq, ts_dicom_find_out *out, char *comment,
                           size_t comment_size);

/* A ts_retrieve_find_fn (user: the ingest_find): the instances a C-MOVE or
 * C-GET names, with their files, from query's `find` (retrieve form). Query
 * unreachable: 0xA700 "query service unavailable". */
uint16_t ingest_find_instances(void *user, const ts_dicom_assoc *assoc, const ts_dicom_move_rq *rq,
                               const char *op, const ts_dicom_grant *grant, ts_retrieve_list *list,
                               char *comment, size_t comment_size);

#endif
