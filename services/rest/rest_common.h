/* Helpers shared by the route modules: level names, revisions (ETag and
 * If-Match), one-row queries in a transaction, and request bodies. */
#ifndef REST_COMMON_H
#define REST_COMMON_H

#include "rest_http.h"

/* "patients" -> 0 ... "instances" -> 3; -1 if unknown. */
int rest_level_of_plural(const char *s);

/* The MD5 of data in lower-case hex, as Orthanc writes it in ETags. */
void rest_md5_hex(const void *data, size_t len, char out[33]);

/* ETag "<revision>-<md5 of data>", as Orthanc writes it. */
void rest_set_etag(rest_request *req, const char *revision, const void *data, size_t len);

/* A metadata or attachment being read: sets its ETag "<revision>-<md5>" (md5 in
 * hex) and answers If-None-Match as Orthanc 1.10.1 does: 304 with an empty body
 * when it names this revision and MD5, 400 when it is not an ETag. Returns true
 * when the request has been answered so (the caller answers nothing more). */
bool rest_etag_read(rest_request *req, const char *revision, const char *md5);

/* If-Match, read as Orthanc 1.10.1 reads it: the whole ETag given back,
 * "<revision>-<md5>" (quotes and surrounding spaces optional). A bare revision,
 * a weak or a list of ETags is malformed. */
typedef struct rest_if_match_t {
    bool given;
    char revision[16]; /* the SQL parameter: "-1" (matches none) if out of range */
    char md5[72];      /* what follows the first '-', cut (then matches none) */
} rest_if_match_t;

/* 0 with *m filled (m->given false when absent); -1 when malformed: the
 * request has then been answered with 400. */
int rest_if_match(rest_request *req, rest_if_match_t *m);

/* The answer to a write refused for its revision (409, as Orthanc). */
void rest_reply_revision_conflict(rest_request *req, bool if_match_given);

/* Runs one statement in a transaction and keeps the first row's columns
 * (NULL for SQL NULL or no row). On failure the request is answered and
 * false returned. */
#define REST_ROW_MAX_COLS 6
typedef struct rest_row {
    const ts_db_stmt *stmt;
    const char *const *params;
    int ncols;
    char *col[REST_ROW_MAX_COLS];
} rest_row;
bool rest_row_query(rest_request *req, ts_db_mode mode, rest_row *row);
void rest_row_clear(rest_row *row);
/* rest_row_query for a statement that indexes a file just written: the file
 * is held first in the same transaction (lib/domain/store_index.h). */
bool rest_row_query_holding(rest_request *req, ts_db_mode mode, rest_row *row, const char *uuid);
/* The same without answering: 0 or a negative TS_E* code. */
int rest_row_run(ts_db_pool *db, ts_db_mode mode, rest_row *row, ts_err *err);

/* Runs one read statement (one round trip) and hands back its whole result,
 * which the caller PQclear()s. On failure the request is answered and NULL
 * returned. */
PGresult *rest_rows_query(rest_request *req, const ts_db_stmt *stmt, const char *const *params);

/* A JSON body of a route that takes small ones: true when it has at most max
 * bytes, else answers 413 with Orthanc's error body and returns false. */
bool rest_body_within(rest_request *req, size_t max);

/* A text body (a bare id or AE title, as Orthanc takes them) without its
 * leading and trailing white space: returns where it starts and sets *len;
 * nothing is copied, so the text is not NUL-terminated. */
const char *rest_body_trimmed(const rest_request *req, size_t *len);

/* Orthanc's ?short form of JSON in the /tags form: {"gggg,eeee": value}, null for
 * binary and too long values, arrays of the same for sequences. */
json_t *rest_short_tags(const json_t *full);

/* A query argument that lists tags by comma ("0010,0010" or "0010-0010" or
 * "PatientName"), as Orthanc's ?ignore-length: *tags (freed by the caller) and
 * *n, none when absent. An unknown (or empty) tag is answered with Orthanc's error
 * and false returned. */
bool rest_arg_tags(rest_request *req, const char *name, uint32_t **tags, size_t *n);

#endif
