/* Orthanc's error codes: the numbers, names and HTTP statuses of Orthanc 1.10.1
 * (OrthancFramework's ErrorCodes.json), so that a client that reads
 * "OrthancStatus" or a job's "ErrorCode" sees what Orthanc would send. Every
 * REST route and job uses these names, never a literal number.
 *
 * ts_oe_description() is Orthanc's text for the code (the "Message" and
 * "OrthancError" of an error body, the "ErrorDescription" of a job);
 * ts_oe_http_status() the HTTP status Orthanc answers with it. */
#ifndef TS_ORTHANC_ERRORS_H
#define TS_ORTHANC_ERRORS_H

typedef enum ts_oe {
    TS_OE_INTERNAL_ERROR = -1,
    TS_OE_SUCCESS = 0,
    TS_OE_PLUGIN = 1,
    TS_OE_NOT_IMPLEMENTED = 2,
    TS_OE_PARAMETER_OUT_OF_RANGE = 3,
    TS_OE_NOT_ENOUGH_MEMORY = 4,
    TS_OE_BAD_PARAMETER_TYPE = 5,
    TS_OE_BAD_SEQUENCE_OF_CALLS = 6,
    TS_OE_INEXISTENT_ITEM = 7,
    TS_OE_BAD_REQUEST = 8,
    TS_OE_NETWORK_PROTOCOL = 9,
    TS_OE_SYSTEM_COMMAND = 10,
    TS_OE_DATABASE = 11,
    TS_OE_URI_SYNTAX = 12,
    TS_OE_INEXISTENT_FILE = 13,
    TS_OE_CANNOT_WRITE_FILE = 14,
    TS_OE_BAD_FILE_FORMAT = 15,
    TS_OE_TIMEOUT = 16,
    TS_OE_UNKNOWN_RESOURCE = 17,
    TS_OE_INCOMPATIBLE_DATABASE_VERSION = 18,
    TS_OE_FULL_STORAGE = 19,
    TS_OE_CORRUPTED_FILE = 20,
    TS_OE_INEXISTENT_TAG = 21,
    TS_OE_READ_ONLY = 22,
    TS_OE_INCOMPATIBLE_IMAGE_FORMAT = 23,
    TS_OE_INCOMPATIBLE_IMAGE_SIZE = 24,
    TS_OE_UNKNOWN_DICOM_TAG = 27,
    TS_OE_BAD_JSON = 28,
    TS_OE_UNAUTHORIZED = 29,
    TS_OE_EMPTY_REQUEST = 33,
    TS_OE_NOT_ACCEPTABLE = 34,
    TS_OE_DATABASE_UNAVAILABLE = 36,
    TS_OE_CANCELED_JOB = 37,
    TS_OE_BAD_RANGE = 41,
    TS_OE_DATABASE_CANNOT_SERIALIZE = 42,
    TS_OE_REVISION = 43,
    TS_OE_FILE_STORAGE_CANNOT_WRITE = 2001,
    TS_OE_BAD_APPLICATION_ENTITY_TITLE = 2009,
    TS_OE_NO_SOP_CLASS_OR_INSTANCE = 2014,
    TS_OE_NO_PRESENTATION_CONTEXT = 2015,
    TS_OE_DICOM_FIND_UNAVAILABLE = 2016,
    TS_OE_DICOM_MOVE_UNAVAILABLE = 2017,
    TS_OE_CANNOT_STORE_INSTANCE = 2018,
    TS_OE_CREATE_DICOM_NOT_STRING = 2019,
    TS_OE_CREATE_DICOM_OVERRIDE_TAG = 2020,
    TS_OE_CREATE_DICOM_USE_CONTENT = 2021,
    TS_OE_CREATE_DICOM_NO_PAYLOAD = 2022,
    TS_OE_CREATE_DICOM_USE_DATA_URI_SCHEME = 2023,
    TS_OE_CREATE_DICOM_BAD_PARENT = 2024,
    TS_OE_CREATE_DICOM_PARENT_IS_INSTANCE = 2025,
    TS_OE_UNKNOWN_MODALITY = 2027,
    TS_OE_CANNOT_EXECUTE_LUA = 2031,
    TS_OE_ALREADY_EXISTING_TAG = 2042,
    TS_OE_UNSUPPORTED_MEDIA_TYPE = 3000,
} ts_oe;

/* Orthanc's description of code; "Unknown error code" for one not in the table. */
const char *ts_oe_description(ts_oe code);
/* The HTTP status Orthanc answers with code (500 for one not in the table). */
int ts_oe_http_status(ts_oe code);

#endif
