/* Attachments of every level, with Orthanc's revisions: the DICOM file of an
 * instance ("dicom", content type 1) and user attachments (1024..65535, or
 * names from TESSERA_USER_CONTENT_TYPES). Data lives in the storage area; a
 * write stores the new file first, then checks the revision and swaps the row
 * in one transaction, which also queues the old file for the deleter. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/config.h"
#include "base/ids.h"
#include "base/log.h"
#include "rest_attachments.h"
#include "rest_delete.h"
#include "rest_common.h"

static const struct {
    const char *name;
    int type;
} builtin_types[] = {{"dicom", 1}, {"dicom-as-json", 2}, {"dicom-until-pixel-data", 3}};

/* Name or number -> content type; 0 if unknown. */
static int content_type_of(const char *given)
{
    for (size_t i = 0; i < sizeof(builtin_types) / sizeof(builtin_types[0]); i++)
        if (strcmp(given, builtin_types[i].name) == 0)
            return builtin_types[i].type;
    char *end;
    long number = strtol(given, &end, 10);
    bool numeric = *given && !*end;
    size_t n;
    const ts_cfg_pair *user = ts_cfg_pairs(TESSERA_USER_CONTENT_TYPES, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(given, user[i].name) == 0 || (numeric && user[i].number == number))
            return (int)user[i].number;
    if (numeric && number >= 1 && number <= 65535)
        return (int)number;
    return 0;
}

/* Content type -> the name Orthanc lists. */
static void name_of(int type, char *out, size_t size)
{
    for (size_t i = 0; i < sizeof(builtin_types) / sizeof(builtin_types[0]); i++) {
        if (builtin_types[i].type == type) {
            snprintf(out, size, "%s", builtin_types[i].name);
            return;
        }
    }
    size_t n;
    const ts_cfg_pair *user = ts_cfg_pairs(TESSERA_USER_CONTENT_TYPES, &n);
    for (size_t i = 0; i < n; i++) {
        if (user[i].number == type) {
            snprintf(out, size, "%s", user[i].name);
            return;
        }
    }
    snprintf(out, size, "%d", type);
}

static const ts_db_stmt list_attachments = {
    "rest_list_attachments",
    "SELECT (r.id IS NOT NULL)::text, coalesce(jsonb_agg(a.content_type ORDER BY a.content_type)"
    "   FILTER (WHERE a.content_type IS NOT NULL), '[]')::text"
    " FROM (SELECT 1) one LEFT JOIN resources r ON r.public_id = $1 AND r.level = $2::smallint"
    " LEFT JOIN attachments a ON a.resource_id = r.id GROUP BY r.id",
    2};

static const ts_db_stmt attachment_info = {
    "rest_attachment_info",
    "SELECT (r.id IS NOT NULL)::text, a.uuid::text, a.uncompressed_size::text, a.md5,"
    " a.revision::text"
    " FROM (SELECT 1) one LEFT JOIN resources r ON r.public_id = $1 AND r.level = $2::smallint"
    " LEFT JOIN attachments a ON a.resource_id = r.id AND a.content_type = $3::integer",
    3};

static const ts_db_stmt put_attachment = {
    "rest_put_attachment",
    "SELECT status, revision::text, old_uuid::text FROM tessera_put_attachment($1,"
    " $2::smallint, $3::integer, $4::uuid, $5::bigint, $6, $7::integer, $8)",
    8};

static const ts_db_stmt delete_attachment = {
    "rest_delete_attachment",
    "SELECT status, old_uuid::text FROM tessera_delete_attachment($1, $2::smallint,"
    " $3::integer, $4::integer, $5)",
    5};

/* Parses /{level}/{id}/attachments/{name}; answers errors itself. */
static bool parse(rest_request *req, char lv[4], char type_s[12], bool need_name)
{
    snprintf(lv, 4, "%d", rest_level_of_plural(req->seg[0]));
    if (!ts_id_is_valid(req->seg[1])) {
        rest_reply_unknown_resource(req);
        return false;
    }
    if (need_name) {
        int type = content_type_of(req->seg[3]);
        if (!type) {
            /* as Orthanc 1.10.1: a number out of range is an unknown resource,
             * a name it does not know an inexistent item */
            char *end;
            (void)strtol(req->seg[3], &end, 10);
            if (*req->seg[3] && !*end)
                rest_reply_unknown_resource(req);
            else
                rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, NULL);
            return false;
        }
        snprintf(type_s, 12, "%d", type);
    }
    return true;
}

/* GET /{level}/{id}/attachments [?full] */
void rest_list_attachments(rest_request *req)
{
    char lv[4], type_s[12];
    if (!parse(req, lv, type_s, false))
        return;
    const char *params[] = {req->seg[1], lv};
    rest_row r = {&list_attachments, params, 2, {0}};
    if (!rest_row_query(req, TS_DB_READ, &r))
        return;
    if (!r.col[0] || strcmp(r.col[0], "true") != 0) {
        rest_reply_unknown_resource(req);
    } else {
        json_t *types = json_loads(r.col[1], 0, NULL);
        bool full = rest_flag(req, "full");
        json_t *out = full ? json_object() : json_array();
        size_t i;
        json_t *t;
        json_array_foreach(types, i, t)
        {
            char name[64];
            name_of((int)json_integer_value(t), name, sizeof(name));
            if (full)
                json_object_set_new(out, name, json_integer(json_integer_value(t)));
            else
                json_array_append_new(out, json_string(name));
        }
        json_decref(types);
        rest_reply_json(req, 200, out);
    }
    rest_row_clear(&r);
}

/* Looks up one attachment: col[0] whether the resource exists, col[1] uuid,
 * col[2] size, col[3] md5, col[4] revision. Answers 404s itself, and, as every
 * read of an attachment has its ETag, If-None-Match (304, or 400 when
 * malformed): false when the request has been answered. */
static bool lookup(rest_request *req, const char *lv, const char *type_s, rest_row *r)
{
    const char *params[] = {req->seg[1], lv, type_s};
    memset(r, 0, sizeof(*r));
    r->stmt = &attachment_info;
    r->params = params;
    r->ncols = 5;
    if (!rest_row_query(req, TS_DB_READ, r))
        return false;
    /* an attachment the resource does not have: Orthanc's unknown resource */
    if (!r->col[0] || strcmp(r->col[0], "true") != 0 || !r->col[1])
        rest_reply_unknown_resource(req);
    else if (!rest_etag_read(req, r->col[4] ? r->col[4] : "0", r->col[3] ? r->col[3] : ""))
        return true;
    rest_row_clear(r); /* answered */
    return false;
}

/* GET /{level}/{id}/attachments/{name}: the operations Orthanc lists. */
void rest_attachment_operations(rest_request *req)
{
    char lv[4], type_s[12];
    if (!parse(req, lv, type_s, true))
        return;
    rest_row r;
    if (!lookup(req, lv, type_s, &r))
        return;
    rest_row_clear(&r);
    /* Orthanc 1.10.1's list as it is (its "uuid" is listed and not served) */
    json_t *ops = json_pack("[s,s,s,s,s,s,s,s,s,s,s,s]", "compress", "compressed-data",
                            "compressed-md5", "compressed-size", "data", "info", "is-compressed",
                            "md5", "size", "uncompress", "verify-md5", "uuid");
    rest_reply_json(req, 200, ops);
}

/* GET /{level}/{id}/attachments/{name}/{data|size|md5|info|...} */
void rest_attachment_get(rest_request *req)
{
    static const char *const ops[] = {"size",
                                      "compressed-size",
                                      "md5",
                                      "compressed-md5",
                                      "is-compressed",
                                      "data",
                                      "compressed-data",
                                      "uncompressed-data",
                                      "info"};
    char lv[4], type_s[12];
    const char *op = req->seg[4];
    bool known = false;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        known = known || strcmp(op, ops[i]) == 0;
    if (strcmp(op, "verify-md5") == 0 || strcmp(op, "compress") == 0 ||
        strcmp(op, "uncompress") == 0) {
        req->allow = strdup("POST");
        if (!req->allow)
            abort();
        rest_reply_empty(req, 405);
        return;
    }
    if (!known) { /* no such route in Orthanc: whatever the name */
        rest_reply_unknown_resource(req);
        return;
    }
    if (!parse(req, lv, type_s, true))
        return;
    rest_row r;
    if (!lookup(req, lv, type_s, &r))
        return;
    if (strcmp(op, "size") == 0 || strcmp(op, "compressed-size") == 0) {
        rest_reply_text(req, 200, r.col[2], strlen(r.col[2]));
    } else if (strcmp(op, "md5") == 0 || strcmp(op, "compressed-md5") == 0) {
        const char *md5 = r.col[3] ? r.col[3] : "";
        rest_reply_text(req, 200, md5, strlen(md5));
    } else if (strcmp(op, "is-compressed") == 0) {
        rest_reply_text(req, 200, "0", 1); /* Tessera stores attachments uncompressed */
    } else if (strcmp(op, "info") == 0) {
        /* Orthanc's keys; compressed and uncompressed are the same here */
        const char *md5 = r.col[3] ? r.col[3] : "";
        json_int_t size = strtoll(r.col[2], NULL, 10);
        rest_reply_json(req, 200,
                        json_pack("{s:s, s:I, s:i, s:s, s:I, s:s}", "CompressedMD5", md5,
                                  "CompressedSize", size, "ContentType", atoi(type_s),
                                  "UncompressedMD5", md5, "UncompressedSize", size, "Uuid",
                                  r.col[1]));
    } else if (strcmp(op, "data") == 0 || strcmp(op, "compressed-data") == 0 ||
               strcmp(op, "uncompressed-data") == 0) {
        char path[4096];
        ts_err err;
        int fd = -1;
        struct stat st;
        if (ts_store_path(req->ctx->store, r.col[1], path, sizeof(path), &err) == 0)
            fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
            if (fd >= 0)
                close(fd);
            rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, "the attachment's file is gone");
        } else {
            /* the ETag (lookup's) is of the stored MD5: the data is not read twice */
            rest_reply_file(req, fd, (size_t)st.st_size,
                            strcmp(type_s, "1") == 0 ? "application/dicom"
                                                     : "application/octet-stream");
        }
    } else {
        rest_reply_unknown_resource(req);
    }
    rest_row_clear(&r);
}

/* PUT /{level}/{id}/attachments/{name}: the body is the data. */
void rest_attachment_put(rest_request *req)
{
    char lv[4], type_s[12];
    if (!parse(req, lv, type_s, true))
        return;
    if (atoi(type_s) < 1024) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "only user attachments (1024..65535) can be written");
        return;
    }
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    char uuid[TS_UUID_LEN + 1], md5[33] = "", size_s[24];
    ts_err err;
    if (ts_store_write(req->ctx->store, req->body ? req->body : "", req->body_len, uuid, &err)) {
        rest_reply_oe_status(req, 507, TS_OE_FILE_STORAGE_CANNOT_WRITE, err.msg);
        return;
    }
    rest_md5_hex(req->body ? req->body : "", req->body_len, md5);
    snprintf(size_s, sizeof(size_s), "%zu", req->body_len);
    const char *params[] = {req->seg[1],
                            lv,
                            type_s,
                            uuid,
                            size_s,
                            md5,
                            match.given ? match.revision : NULL,
                            match.given ? match.md5 : NULL};
    rest_row r = {&put_attachment, params, 3, {0}};
    bool ok = rest_row_query_holding(req, TS_DB_WRITE, &r, uuid);
    const char *status = ok && r.col[0] ? r.col[0] : "";
    if (strcmp(status, "ok") == 0) {
        ts_store_settle(req->ctx->store, uuid);
        /* the replaced file was queued for the deleter in the same transaction */
        rest_nudge_deleters(req->ctx);
        rest_set_etag(req, r.col[1], req->body ? req->body : "", req->body_len);
        rest_reply_json(req, 200, json_object()); /* Orthanc answers {} */
    } else if (ok) {
        /* committed without taking it: the new file goes */
        ts_err ignored;
        ts_store_remove(req->ctx->store, uuid, &ignored);
        if (strcmp(status, "unknown_resource") == 0)
            rest_reply_unknown_resource(req);
        else
            rest_reply_revision_conflict(req, match.given);
    }
    /* else the transaction failed (maybe with its commit in doubt): the file's
     * intent stays, and a deleter's reclaim pass removes it unless a row refers
     * to it */
    rest_row_clear(&r);
}

/* DELETE /{level}/{id}/attachments/{name} */
void rest_attachment_delete(rest_request *req)
{
    char lv[4], type_s[12];
    if (!parse(req, lv, type_s, true))
        return;
    if (atoi(type_s) < 1024) {
        rest_reply_oe(req, TS_OE_PARAMETER_OUT_OF_RANGE,
                      "the DICOM file of an instance goes with the instance (DELETE the instance)");
        return;
    }
    rest_if_match_t match;
    if (rest_if_match(req, &match))
        return;
    const char *params[] = {req->seg[1], lv, type_s, match.given ? match.revision : NULL,
                            match.given ? match.md5 : NULL};
    rest_row r = {&delete_attachment, params, 2, {0}};
    if (!rest_row_query(req, TS_DB_WRITE, &r))
        return;
    const char *status = r.col[0] ? r.col[0] : "";
    if (strcmp(status, "ok") == 0) {
        rest_nudge_deleters(req->ctx);
        rest_reply_text(req, 200, "", 0);
    } else if (strcmp(status, "unknown_resource") == 0) {
        rest_reply_unknown_resource(req);
    } else if (strcmp(status, "not_found") == 0) {
        rest_reply_oe(req, TS_OE_INEXISTENT_ITEM, NULL);
    } else {
        rest_reply_revision_conflict(req, match.given);
    }
    rest_row_clear(&r);
}

/* The MD5 of the file at path in hex; false if it cannot be read. */
static bool file_md5(const char *path, char out[33])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        abort();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    unsigned char *buf = malloc(1 << 16);
    if (!buf)
        abort();
    ssize_t n;
    while ((n = read(fd, buf, 1 << 16)) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    free(buf);
    close(fd);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (n < 0)
        return false;
    for (unsigned i = 0; i < len && i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return true;
}

/* POST /{level}/{id}/attachments/{name}/{verify-md5|compress|uncompress} */
void rest_attachment_post(rest_request *req)
{
    char lv[4], type_s[12];
    if (!parse(req, lv, type_s, true))
        return;
    const char *op = req->seg[4];
    rest_row r;
    if (!lookup(req, lv, type_s, &r))
        return;
    req->etag[0] = '\0'; /* a POST answer has none, as in Orthanc */
    if (strcmp(op, "verify-md5") == 0) {
        /* Orthanc: {} when the stored file has the recorded MD5, else an empty 400 */
        char path[4096], md5[33] = "";
        ts_err err;
        bool ok = ts_store_path(req->ctx->store, r.col[1], path, sizeof(path), &err) == 0 &&
                  file_md5(path, md5) && r.col[3] && strcmp(md5, r.col[3]) == 0;
        if (ok) {
            rest_reply_json(req, 200, json_object());
        } else {
            ts_warn("attachment corrupted", "resource=%s type=%s uuid=%s md5=%s recorded=%s",
                    req->seg[1], type_s, r.col[1], md5, r.col[3] ? r.col[3] : "");
            rest_reply_empty(req, 400);
        }
    } else if (strcmp(op, "uncompress") == 0) {
        rest_reply_json(req, 200, json_object()); /* stored uncompressed already */
    } else {
        /* compress: Tessera stores attachments as they are (docs/conformance.md) */
        rest_reply_oe(req, TS_OE_NOT_IMPLEMENTED,
                      "Tessera stores attachments uncompressed; compress is not served");
    }
    rest_row_clear(&r);
}
