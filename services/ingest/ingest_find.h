/* C-FIND on ingest's association, relayed to the query service over the bus
 * (`find`), page by page: answers go out as each page arrives, so that a large
 * result is never held whole, and C-CANCEL is honoured between two answers. */
#ifndef INGEST_FIND_H
#define INGEST_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "dicom.h"
#include "dicom_find.h"

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

/* The find callback of ts_dicom_scp_callbacks. */
uint16_t ingest_find_relay(ingest_find *f, const ts_dicom_assoc *assoc, const ts_dicom_find_rq *rq,
                           ts_dicom_find_out *out, char *comment, size_t comment_size);

#endif
