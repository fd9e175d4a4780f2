/* The C API over dcmtk, the only C++ in the tree (dicom_*.cc): parse a file or a
 * buffer, read tags, produce Orthanc's JSON forms and the DICOM JSON model, run a
 * concurrent SCP that hands each request to C callbacks, and act as an SCU. */
#ifndef TS_DICOM_H
#define TS_DICOM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/ids.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_TAG(g, e) ((uint32_t)(((uint32_t)(g) << 16) | (uint32_t)(e)))

#define TS_TAG_PATIENT_ID TS_TAG(0x0010, 0x0020)
#define TS_TAG_PATIENT_NAME TS_TAG(0x0010, 0x0010)
#define TS_TAG_STUDY_INSTANCE_UID TS_TAG(0x0020, 0x000d)
#define TS_TAG_SERIES_INSTANCE_UID TS_TAG(0x0020, 0x000e)
#define TS_TAG_SOP_INSTANCE_UID TS_TAG(0x0008, 0x0018)
#define TS_TAG_SOP_CLASS_UID TS_TAG(0x0008, 0x0016)

/* The transfer syntaxes the storage SCP accepts, as a sorted JSON array of UIDs
 * (Orthanc's /tools/accepted-transfer-syntaxes). */
json_t *ts_dicom_storage_syntaxes(void);
/* Those of them that patterns names, as Orthanc 1.10.1 reads the body of PUT
 * /tools/accepted-transfer-syntaxes: a JSON string or list of strings, each a UID
 * with Orthanc's wildcards ('*', '?'); a pattern that matches nothing adds nothing.
 * *out: a sorted JSON array (the caller decrefs). TS_EINVAL for another JSON type. */
int ts_dicom_storage_syntaxes_match(const json_t *patterns, json_t **out, ts_err *err);

/* Loads the data dictionary and sets process-wide dcmtk options (TCP_NODELAY,
 * log level). Call once at start, before any other call. Fails if the
 * dictionary cannot be loaded (tag names would come out empty). */
int ts_dicom_global_init(ts_err *err);

/* ---- parsed datasets ---------------------------------------------------- */

typedef struct ts_dicom ts_dicom;

/* Parses a DICOM file (Part 10 with meta header, or a bare dataset). Large
 * elements (pixel data) are left on disk and read only if asked for. Fails
 * with TS_EDICOM on input that is not DICOM or is truncated; the message does
 * not name the file (callers add it where it helps: it may be a temporary path
 * that must not reach clients). */
int ts_dicom_open_file(const char *path, ts_dicom **out, ts_err *err);

/* Same from memory; the buffer is copied. */
int ts_dicom_open_buffer(const void *data, size_t len, ts_dicom **out, ts_err *err);

void ts_dicom_free(ts_dicom *d);

/* The value of a top-level tag as UTF-8 text, padding removed, multiple values
 * joined by '\'. NULL if absent (or empty when allow_empty is false). The caller
 * frees the result. */
char *ts_dicom_get_string(const ts_dicom *d, uint32_t tag, bool allow_empty);

/* Transfer syntax UID of the file: its meta header's, or for a bare dataset
 * (no meta header) the one its encoding was recognised as (Orthanc records
 * that one too, e.g. 1.2.840.10008.1.2 for implicit VR little endian). */
const char *ts_dicom_transfer_syntax(const ts_dicom *d);

/* The file offset of the first byte of the top-level Pixel Data (7FE0,0010)
 * element's tag, as Orthanc 1.10.1 records it in its PixelDataOffset metadata;
 * -1 when the file has none, has no meta header or is deflated (Orthanc then
 * records none either). Reads element headers only (lib/dicom/dicom_offset.c). */
long long ts_dicom_pixel_data_offset(const char *path);
/* The same for a file in memory. */
long long ts_dicom_pixel_data_offset_buffer(const void *data, size_t len);

/* The four identifying UIDs and the public ids. Fails with TS_EDICOM, naming the
 * missing tag, if StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID is
 * missing (PatientID may be empty, as in Orthanc). */
typedef struct ts_dicom_identity {
    char *patient_id;
    char *study_uid;
    char *series_uid;
    char *sop_uid;
    char *sop_class_uid;
    ts_ids ids;
} ts_dicom_identity;
int ts_dicom_identity_get(const ts_dicom *d, ts_dicom_identity *out, ts_err *err);
void ts_dicom_identity_clear(ts_dicom_identity *id);

/* ---- JSON forms (dicom_json.cc) ------------------------------------------ */

/* Orthanc's GET /instances/{id}/tags: {"0010,0010": {"Name": "PatientName",
 * "Type": "String", "Value": "..."}, ...}, the same as Orthanc 1.10.1. */
json_t *ts_dicom_to_orthanc_json(const ts_dicom *d);
/* The same with the values of these n tags shown whatever their length, also in
 * sequence items (Orthanc's ?ignore-length=...), where others longer than 256
 * bytes are "TooLong". */
json_t *ts_dicom_to_orthanc_json_full(const ts_dicom *d, const uint32_t *tags, size_t n);
/* Orthanc's GET /instances/{id}/header: the file meta information (group 0002)
 * in the same form; an empty object for a file without one. */
json_t *ts_dicom_header_to_orthanc_json(const ts_dicom *d);
/* The ?simplify form of any JSON in the /tags form. */
json_t *ts_dicom_orthanc_simplify(const json_t *full);
/* Orthanc's ?simplify / /simplified-tags: {"PatientName": "...", ...}. */
json_t *ts_dicom_to_simplified_json(const ts_dicom *d);
/* The DICOM JSON model (PS3.18 F.2) as DICOMweb returns it; bulk data elements
 * get a BulkDataURI under bulk_uri_prefix, or are left out when it is NULL. */
json_t *ts_dicom_to_dicomweb_json(const ts_dicom *d, const char *bulk_uri_prefix);
/* The same with bulk data inline (InlineBinary, base64), as Orthanc 1.10.1
 * answers /instances/{id}/file to Accept: application/dicom+json. */
json_t *ts_dicom_to_dicom_json_inline(const ts_dicom *d);
/* One attribute of the DICOM JSON model from a value as the index keeps it
 * (text, multiple values joined by '\'), converted as ts_dicom_to_dicomweb_json
 * converts elements: {"vr": vr, "Value": [...]} (PN as objects, IS/DS and the
 * binary numeric VRs as numbers), or {"vr": vr} alone for an empty value. */
json_t *ts_dicomweb_attribute(const char *vr, const char *value);
/* Orthanc's MainDicomTags of one level, e.g. {"PatientID": "..", "PatientName": ".."}. */
json_t *ts_dicom_main_tags(const ts_dicom *d, ts_level level);
/* The series' query keys of PS3.18 Table 10.6.1-5 that are no main tags:
 * {"PerformedProcedureStepStartDate": .., "PerformedProcedureStepStartTime": ..,
 *  "RequestAttributesSequence": [{"00400009": SPS ID, "00401001": RP ID}, ...]},
 * each only when present (0038_series_request_attributes.sql keeps them). */
json_t *ts_dicom_series_query_tags(const ts_dicom *d);

/* Adds tags to dcmtk's data dictionary, as Orthanc's "Dictionary" option: a JSON
 * object {"gggg,eeee": [VR, Name, MinMultiplicity, MaxMultiplicity (0: any),
 * PrivateCreator]}, the last three optional (1, 1, none). From then on the tags
 * have that name and VR everywhere (/tags, ?simplify, tag paths). Call once at
 * start, before any thread reads the dictionary. TS_EINVAL, saying which entry
 * and why, for anything malformed (nothing is added then). "" adds nothing. */
int ts_dicom_dictionary_add(const char *json_text, ts_err *err);

/* Whether tag is one of Orthanc's MainDicomTags at some level (the tags the
 * index keeps and the router's conditions can test). */
bool ts_dicom_is_main_tag(uint32_t tag);

/* ---- tag paths and frames (dicom_content.cc) -------------------------------- */

/* A tag as Orthanc's REST API names it: "gggg-eeee", "gggg,eeee", "ggggeeee" or
 * a dictionary name ("PatientName"). false when it is none of these. */
bool ts_dicom_parse_tag(const char *s, uint32_t *tag);
/* A tag's VR as the data dictionary has it ("UN" when unknown), NUL-terminated. */
void ts_dicom_tag_vr(uint32_t tag, char vr[3]);
/* A tag's name as Orthanc writes it ("PatientName"), or "gggg,eeee" when unknown. */
void ts_dicom_tag_name(uint32_t tag, char *out, size_t size);

/* The bytes of a value (or of several: the fragments of a frame) read from the
 * file only as they are asked for, so that sending a 1 GB pixel data element
 * costs one buffer. It keeps the file open until freed. */
typedef struct ts_dicom_reader ts_dicom_reader;

/* Total bytes the reader gives. */
size_t ts_dicom_reader_size(const ts_dicom_reader *r);
/* Copies up to max of the next bytes into buf; *got is 0 at the end. */
int ts_dicom_reader_read(ts_dicom_reader *r, void *buf, size_t max, size_t *got, ts_err *err);
void ts_dicom_reader_free(ts_dicom_reader *r);

/* What GET /instances/{id}/content/{path} answers in Orthanc 1.10.1: a JSON array
 * of strings (the tags of an item as "gggg-eeee", the item numbers of a sequence,
 * the fragments of encapsulated pixel data) or the bytes of a value as they are
 * held in memory (text in the file's character set with its padding, numbers
 * little-endian). Exactly one of list and value is set. */
typedef struct ts_dicom_content {
    json_t *list;
    ts_dicom_reader *value;
} ts_dicom_content;

/* Follows path in the file: tags ("0010-0010", "0010,0010", "00100010" or a
 * dictionary name) alternating with item numbers; (7fe0,0010) then a number is a
 * fragment (or, uncompressed, "0" the whole value). The file is read as stored:
 * no character set conversion. TS_ENOTFOUND when the path leads nowhere;
 * TS_EINVAL for a segment that is no DICOM tag (the message names it); TS_EDICOM
 * when the file cannot be read. */
int ts_dicom_content_get(const char *file, const char *const *path, size_t npath,
                         ts_dicom_content *out, ts_err *err);
void ts_dicom_content_clear(ts_dicom_content *c);

/* Orthanc's frames of an instance (its DicomFrameIndex): NumberOfFrames, 1 when
 * absent or unreadable. */
int ts_dicom_frame_count(const char *file, unsigned *count, ts_err *err);

/* The raw bytes of one frame, as Orthanc's /frames/{n}/raw: for encapsulated
 * pixel data the frame's fragments joined, else the frame's slice of the pixel
 * data (little-endian). *mime is "image/jpeg" (JPEG baseline), "image/jp2" (JPEG
 * 2000) or "application/octet-stream". The caller frees *out.
 * TS_ENOTFOUND: no such frame (Orthanc: 400 "Parameter out of range");
 * TS_EINVAL: pixel data without the tags to cut it into frames (Orthanc: 500
 * "Not implemented yet"); TS_EDICOM: fragments that do not match the frames,
 * pixel data shorter than the frames, or an unreadable file. */
int ts_dicom_frame_raw(const char *file, unsigned index, ts_dicom_reader **out, const char **mime,
                       ts_err *err);

/* ---- SCP (dicom_scp.cc) --------------------------------------------------- */

typedef struct ts_dicom_assoc {
    char calling_aet[17];
    char called_aet[17];
    char peer_ip[64];
} ts_dicom_assoc;

typedef struct ts_dicom_store_rq {
    const char *sop_class_uid;
    const char *sop_instance_uid;
    /* The received file (Part 10: dcmtk's meta header, then the data set as sent).
     * Up to the config's memory_threshold it is in memory: data and len, valid
     * during the callback only, path NULL. A larger one is in path, a temporary
     * file owned by the callback now, data NULL. */
    const char *path;
    const void *data;
    size_t len;
} ts_dicom_store_rq;

struct ts_dicom_find_rq; /* dicom_find.h */
struct ts_dicom_find_out;
struct ts_dicom_move_rq;
struct ts_dicom_retrieve_out;
struct ts_dicom_move_result;

typedef struct ts_dicom_scp_callbacks {
    void *user;
    void *retrieve_user; /* given to move and get instead of user when set */
    /* May the association go on? On false, it is rejected (calling AE not recognised). */
    bool (*accept)(void *user, const ts_dicom_assoc *assoc);
    /* Where to write the next received dataset: a new temporary path. */
    int (*temp_path)(void *user, char *path, size_t size, ts_err *err);
    /* The transfer syntaxes accepted for storage, asked at each association: a
     * JSON array of UIDs (a new reference), or NULL for all the SCP can store
     * (also when the callback is NULL). */
    json_t *(*storage_syntaxes)(void *user);
    /* A dataset was received completely, into memory or into rq->path. Returns
     * the DIMSE status (0 success, 0xA700 out of resources, 0xC000 cannot
     * understand, ...); the callback owns rq->path. comment (may stay empty) goes
     * into the response's ErrorComment. A receive that failed never reaches this:
     * the wrapper drops what it had received (memory, partial file) itself. */
    uint16_t (*store)(void *user, const ts_dicom_assoc *assoc, const ts_dicom_store_rq *rq,
                      char *comment, size_t comment_size);
    /* C-FIND on the same association (NULL: not offered), as the find callback
     * of dicom_find.h (ingest relays it to the query service). */
    uint16_t (*find)(void *user, const ts_dicom_assoc *assoc, const struct ts_dicom_find_rq *rq,
                     struct ts_dicom_find_out *out, char *comment, size_t comment_size);
    /* C-MOVE and C-GET on the same association (NULL: not offered), as the
     * callbacks of dicom_find.h (lib/domain/retrieve.h has them). With get set, the
     * storage contexts also accept the client as SCP (role selection), for the
     * C-STOREs of C-GET go back to it. */
    uint16_t (*move)(void *user, const ts_dicom_assoc *assoc, const struct ts_dicom_move_rq *rq,
                     struct ts_dicom_retrieve_out *out, struct ts_dicom_move_result *res,
                     char *comment, size_t comment_size);
    uint16_t (*get)(void *user, const ts_dicom_assoc *assoc, const struct ts_dicom_move_rq *rq,
                    struct ts_dicom_retrieve_out *out, struct ts_dicom_move_result *res,
                    char *comment, size_t comment_size);
} ts_dicom_scp_callbacks;

typedef struct ts_dicom_scp_config {
    const char *aet;
    int port;
    int max_associations;
    int max_pdu;
    int timeout_s;
    bool check_called_aet;
    long long max_dataset; /* bytes; a C-STORE dataset past it aborts the association (0: none) */
    /* bytes; a C-STORE's file up to this size is received into memory, a larger
     * one into a temporary file (temp_path) once it grows past it (0: always a file) */
    long long memory_threshold;
    /* connections whose A-ASSOCIATE-RQ is still arriving (within timeout_s), in
     * total and per peer address; more are closed at once */
    int max_pending;
    int max_pending_per_peer;
    /* DICOM TLS (dcmtk's dcmtls over OpenSSL, PS3.15 B.1): with a certificate
     * the port speaks TLS only. PEM files; trusted: the CAs a client
     * certificate is checked against ("" none); a client without a valid
     * certificate is refused when client_cert_required. */
    const char *tls_certificate;
    const char *tls_private_key;
    const char *tls_trusted;
    bool tls_client_cert_required;
} ts_dicom_scp_config;

typedef struct ts_dicom_scp ts_dicom_scp;

/* Opens the listening port (so that a port in use fails here, at start). */
int ts_dicom_scp_new(const ts_dicom_scp_config *cfg, const ts_dicom_scp_callbacks *cb,
                     ts_dicom_scp **out, ts_err *err);
/* Serves associations, each on its own thread, until ts_dicom_scp_stop(); then
 * waits for the running associations to end. */
int ts_dicom_scp_run(ts_dicom_scp *scp, ts_err *err);
/* Asks run() to return; safe to call from another thread (not from a signal handler). */
void ts_dicom_scp_stop(ts_dicom_scp *scp);
/* Connections being negotiated or served right now (a test waits for 0 to know
 * that the SCP is done with everything it was sent). */
int ts_dicom_scp_active(ts_dicom_scp *scp);
void ts_dicom_scp_free(ts_dicom_scp *scp);

/* ---- SCU (dicom_scu.cc) --------------------------------------------------- */

typedef struct ts_dicom_peer {
    const char *our_aet;
    const char *aet;
    const char *host;
    int port;
    int timeout_s;
    /* For the C-STORE sub-operations of a C-MOVE (PS3.7 9.1.1.1.5): the AE title
     * that asked for the move and its C-MOVE-RQ's message id; NULL/0 otherwise. */
    const char *move_originator_aet;
    uint16_t move_originator_msg_id;
    /* A transfer syntax to send the files in when the peer accepts it (a store
     * job's Transcode; lossy allowed, as asked); NULL: as stored. */
    const char *transcode;
    /* DICOM TLS (a modality's UseDicomTls): our certificate and key and the
     * trusted CAs come from the TESSERA_DICOM_TLS_* settings (dicom_net.hh). */
    bool tls;
} ts_dicom_peer;

/* C-ECHO; 0 when the peer answered success. */
int ts_dicom_echo(const ts_dicom_peer *peer, ts_err *err);

/* Sends files over one association with C-STORE. statuses[i] receives the DIMSE
 * status of file i (0xFFFF if it was not sent). Returns 0 if the association
 * worked, even if some statuses are failures.
 * Each SOP class is proposed with the file's own syntax, peer->transcode if
 * set, and Explicit/Implicit VR Little Endian when the file can be decoded
 * (Orthanc's proposal); a file goes in peer->transcode if accepted, else as
 * stored, else converted to what the peer accepted (lib/dicom/transcode.cc).
 * A file for which none works is not sent (0xFFFF, and a log line says why). */
int ts_dicom_store_files(const ts_dicom_peer *peer, const char *const *paths, size_t n,
                         uint16_t *statuses, ts_err *err);

/* The same, calling progress(user, i, statuses[i]) after each file (sent or
 * not); when progress returns false the association is released and the call
 * returns TS_ECANCELED (a C-MOVE cancelled by its client). */
int ts_dicom_store_files_progress(const ts_dicom_peer *peer, const char *const *paths, size_t n,
                                  uint16_t *statuses,
                                  bool (*progress)(void *user, size_t i, uint16_t status),
                                  void *user, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
