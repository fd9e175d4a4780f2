/* The matching engine of the query service: turns a query (level, keys with
 * DICOM matching values, PS3.4 C.2.2.2) into one parameterised SQL statement
 * over the index, runs it in a read-only transaction and hands back the rows.
 * Shared by the C-FIND SCP and the bus endpoint `find`; no DICOM networking here. */
#ifndef QUERY_MATCH_H
#define QUERY_MATCH_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/db.h"
#include "base/err.h"
#include "base/ids.h"

/* A query key: value "" is universal matching (a return key only). */
typedef struct query_key {
    uint32_t tag;
    const char *value;
} query_key;

/* How values are compared with the stored ones. Without case, both sides are
 * folded with Unicode's rules (tessera_fold: accents kept). */
typedef enum query_case {
    QUERY_CASE_FOLD_PN = 0, /* person names without case, every other VR exactly:
                               C-FIND (PS3.4 C.2.2.2.1 allows it for PN only) */
    QUERY_CASE_EXACT,       /* every value exactly */
    QUERY_CASE_FOLD_TEXT,   /* every text value without case (/tools/find's default) */
} query_case;

/* Orthanc 1.12's LabelsConstraint: the resource carries all, any or none of the labels. */
typedef enum query_labels_constraint {
    QUERY_LABELS_ALL = 0,
    QUERY_LABELS_ANY,
    QUERY_LABELS_NONE,
} query_labels_constraint;

typedef struct query_spec {
    ts_level level;
    const query_key *keys;
    size_t nkeys;
    /* NULL, or per key the sequence whose items it is an attribute of (0: a
     * top-level key). The keys of one sequence match together within one
     * item, and the sequence matches when any item does (PS3.4 C.2.2.2.6);
     * they are matched only: the sequence's own key returns the items. */
    const uint32_t *key_sequences;
    query_case case_matching;
    long limit;     /* rows at most (0: no limit); one more is fetched to tell truncation */
    long since;     /* rows to skip (the bus's paging) */
    bool with_file; /* INSTANCE level: also the uuid of the DICOM file (C-MOVE) */
    /* labels of the matched resource itself (none: no condition); names must
     * be [A-Za-z0-9_-]{1,64}, else TS_EINVAL */
    const char *const *labels;
    size_t nlabels;
    query_labels_constraint labels_constraint;
    /* when set, only studies carrying one of `visible` match, with their
     * series, instances and patients (rest's label-scoped grants) */
    bool restrict_to_labels;
    const char *const *visible;
    size_t nvisible;
} query_spec;

/* The SQL of a query: text with $n placeholders, the n values, and where each
 * key's value is in a result row. */
typedef struct query_sql {
    char *sql;
    char **params;
    int nparams;
    int *key_col;    /* per spec key: result column of its value, or -1 (not known: empty) */
    int ncols;       /* column 0 is the matched resource's public id */
    int file_col;    /* the file's uuid (with_file), or -1 */
    bool no_seqscan; /* run with enable_seqscan off (the label restriction alone) */
} query_sql;

/* What a tag is to the matcher, for return keys and for tests. */
typedef struct query_tag_info {
    uint32_t tag;
    const char *keyword;
    ts_level level;
    char vr[3];
} query_tag_info;

/* The tag's entry, or NULL if the index knows nothing of it. */
const query_tag_info *query_tag_lookup(uint32_t tag);
/* The entry of attribute `tag` in the items of sequence `sequence`, or NULL. */
const query_tag_info *query_item_tag_lookup(uint32_t sequence, uint32_t tag);
/* The known tags, by index 0..query_tag_count()-1 (for the bus's `expand`). */
size_t query_tag_count(void);
const query_tag_info *query_tag_at(size_t i);

/* Builds the statement. TS_EINVAL (message for the client's log) on a
 * malformed value, e.g. a date range that is not one. */
int query_build(const query_spec *spec, query_sql *out, ts_err *err);
void query_sql_clear(query_sql *q);

/* Escapes a DICOM wildcard value ('*', '?') into a LIKE pattern with '\' as
 * the escape character. The caller frees the result. */
char *query_like_pattern(const char *value);

typedef struct query_result {
    query_sql q;
    PGresult *res;
    int nrows;      /* at most spec->limit */
    bool truncated; /* more rows matched than the limit */
} query_result;

/* Builds and runs the query in a read-only transaction. */
int query_run(ts_db_pool *pool, const query_spec *spec, query_result *out, ts_err *err);
/* The instances a C-MOVE/C-GET at `level` names: the level's unique key
 * (PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) must have a
 * value, else TS_EINVAL, for a retrieve without it would send everything.
 * Matched at INSTANCE level with the files (with_file); the result's key
 * `nkeys` is the SOPInstanceUID. No limit. */
int query_retrieve_run(ts_db_pool *pool, ts_level level, const query_key *keys, size_t nkeys,
                       query_case case_matching, query_result *out, ts_err *err);
/* The same among the studies carrying one of `visible` (a calling AE's
 * label grant), filtered as query_spec's restrict_to_labels. */
int query_retrieve_run_visible(ts_db_pool *pool, ts_level level, const query_key *keys,
                               size_t nkeys, query_case case_matching, bool restrict_to_labels,
                               const char *const *visible, size_t nvisible, query_result *out,
                               ts_err *err);
/* Public id of row `row`. */
const char *query_result_id(const query_result *r, int row);
/* The value of spec key `key` in row `row`: "" when absent or unknown. */
const char *query_result_value(const query_result *r, int row, size_t key);
/* The uuid of the instance's DICOM file (with_file), or "" if it has none. */
const char *query_result_file(const query_result *r, int row);
void query_result_clear(query_result *r);

#endif
