#include "base/orthanc_errors.h"

/* A switch without default: the compiler names a code left out of either table. */
const char *ts_oe_description(ts_oe code)
{
    switch (code) {
    case TS_OE_INTERNAL_ERROR:
        return "Internal error";
    case TS_OE_SUCCESS:
        return "Success";
    case TS_OE_PLUGIN:
        return "Error encountered within the plugin engine";
    case TS_OE_NOT_IMPLEMENTED:
        return "Not implemented yet";
    case TS_OE_PARAMETER_OUT_OF_RANGE:
        return "Parameter out of range";
    case TS_OE_NOT_ENOUGH_MEMORY:
        return "The server hosting Orthanc is running out of memory";
    case TS_OE_BAD_PARAMETER_TYPE:
        return "Bad type for a parameter";
    case TS_OE_BAD_SEQUENCE_OF_CALLS:
        return "Bad sequence of calls";
    case TS_OE_INEXISTENT_ITEM:
        return "Accessing an inexistent item";
    case TS_OE_BAD_REQUEST:
        return "Bad request";
    case TS_OE_NETWORK_PROTOCOL:
        return "Error in the network protocol";
    case TS_OE_SYSTEM_COMMAND:
        return "Error while calling a system command";
    case TS_OE_DATABASE:
        return "Error with the database engine";
    case TS_OE_URI_SYNTAX:
        return "Badly formatted URI";
    case TS_OE_INEXISTENT_FILE:
        return "Inexistent file";
    case TS_OE_CANNOT_WRITE_FILE:
        return "Cannot write to file";
    case TS_OE_BAD_FILE_FORMAT:
        return "Bad file format";
    case TS_OE_TIMEOUT:
        return "Timeout";
    case TS_OE_UNKNOWN_RESOURCE:
        return "Unknown resource";
    case TS_OE_INCOMPATIBLE_DATABASE_VERSION:
        return "Incompatible version of the database";
    case TS_OE_FULL_STORAGE:
        return "The file storage is full";
    case TS_OE_CORRUPTED_FILE:
        return "Corrupted file (e.g. inconsistent MD5 hash)";
    case TS_OE_INEXISTENT_TAG:
        return "Inexistent tag";
    case TS_OE_READ_ONLY:
        return "Cannot modify a read-only data structure";
    case TS_OE_INCOMPATIBLE_IMAGE_FORMAT:
        return "Incompatible format of the images";
    case TS_OE_INCOMPATIBLE_IMAGE_SIZE:
        return "Incompatible size of the images";
    case TS_OE_UNKNOWN_DICOM_TAG:
        return "Unknown DICOM tag";
    case TS_OE_BAD_JSON:
        return "Cannot parse a JSON document";
    case TS_OE_UNAUTHORIZED:
        return "Bad credentials were provided to an HTTP request";
    case TS_OE_EMPTY_REQUEST:
        return "The request is empty";
    case TS_OE_NOT_ACCEPTABLE:
        return "Cannot send a response which is acceptable according to the Accept HTTP header";
    case TS_OE_DATABASE_UNAVAILABLE:
        return "The database is currently not available (probably a transient situation)";
    case TS_OE_CANCELED_JOB:
        return "This job was canceled";
    case TS_OE_BAD_RANGE:
        return "Incorrect range request";
    case TS_OE_DATABASE_CANNOT_SERIALIZE:
        return "Database could not serialize access due to concurrent update, the transaction "
               "should be retried";
    case TS_OE_REVISION:
        return "A bad revision number was provided, which might indicate conflict between "
               "multiple writers";
    case TS_OE_FILE_STORAGE_CANNOT_WRITE:
        return "Unable to create a subdirectory or a file in the file storage";
    case TS_OE_BAD_APPLICATION_ENTITY_TITLE:
        return "An application entity title (AET) cannot be empty or be longer than 16 "
               "characters";
    case TS_OE_NO_SOP_CLASS_OR_INSTANCE:
        return "DicomUserConnection: Unable to find the SOP class and instance";
    case TS_OE_NO_PRESENTATION_CONTEXT:
        return "DicomUserConnection: No acceptable presentation context for modality";
    case TS_OE_DICOM_FIND_UNAVAILABLE:
        return "DicomUserConnection: The C-FIND command is not supported by the remote SCP";
    case TS_OE_DICOM_MOVE_UNAVAILABLE:
        return "DicomUserConnection: The C-MOVE command is not supported by the remote SCP";
    case TS_OE_CANNOT_STORE_INSTANCE:
        return "Cannot store an instance";
    case TS_OE_CREATE_DICOM_NOT_STRING:
        return "Only string values are supported when creating DICOM instances";
    case TS_OE_CREATE_DICOM_OVERRIDE_TAG:
        return "Trying to override a value inherited from a parent module";
    case TS_OE_CREATE_DICOM_USE_CONTENT:
        return "Use \"Content\" to inject an image into a new DICOM instance";
    case TS_OE_CREATE_DICOM_NO_PAYLOAD:
        return "No payload is present for one instance in the series";
    case TS_OE_CREATE_DICOM_USE_DATA_URI_SCHEME:
        return "The payload of the DICOM instance must be specified according to Data URI scheme";
    case TS_OE_CREATE_DICOM_BAD_PARENT:
        return "Trying to attach a new DICOM instance to an inexistent resource";
    case TS_OE_CREATE_DICOM_PARENT_IS_INSTANCE:
        return "Trying to attach a new DICOM instance to an instance (must be a series, study "
               "or patient)";
    case TS_OE_UNKNOWN_MODALITY:
        return "Unknown modality";
    case TS_OE_CANNOT_EXECUTE_LUA:
        return "Cannot execute a Lua command";
    case TS_OE_ALREADY_EXISTING_TAG:
        return "Cannot override the value of a tag that already exists";
    case TS_OE_UNSUPPORTED_MEDIA_TYPE:
        return "Unsupported media type";
    }
    return "Unknown error code";
}

int ts_oe_http_status(ts_oe code)
{
    switch (code) {
    case TS_OE_SUCCESS:
        return 200;
    case TS_OE_NOT_IMPLEMENTED:
        return 501;
    case TS_OE_PARAMETER_OUT_OF_RANGE:
    case TS_OE_BAD_PARAMETER_TYPE:
    case TS_OE_BAD_SEQUENCE_OF_CALLS:
    case TS_OE_BAD_REQUEST:
    case TS_OE_URI_SYNTAX:
    case TS_OE_BAD_FILE_FORMAT:
    case TS_OE_INCOMPATIBLE_IMAGE_FORMAT:
    case TS_OE_INCOMPATIBLE_IMAGE_SIZE:
    case TS_OE_BAD_JSON:
    case TS_OE_EMPTY_REQUEST:
    /* Orthanc 1.10.1 answers its create-dicom errors with 400 */
    case TS_OE_CREATE_DICOM_NOT_STRING:
    case TS_OE_CREATE_DICOM_OVERRIDE_TAG:
    case TS_OE_CREATE_DICOM_USE_CONTENT:
    case TS_OE_CREATE_DICOM_NO_PAYLOAD:
    case TS_OE_CREATE_DICOM_USE_DATA_URI_SCHEME:
    case TS_OE_CREATE_DICOM_BAD_PARENT:
    case TS_OE_CREATE_DICOM_PARENT_IS_INSTANCE:
        return 400;
    case TS_OE_UNAUTHORIZED:
        return 401;
    case TS_OE_CANNOT_WRITE_FILE:
    case TS_OE_READ_ONLY:
        return 403;
    case TS_OE_INEXISTENT_ITEM:
    case TS_OE_INEXISTENT_FILE:
    case TS_OE_UNKNOWN_RESOURCE:
    case TS_OE_INEXISTENT_TAG:
        return 404;
    case TS_OE_NOT_ACCEPTABLE:
        return 406;
    case TS_OE_TIMEOUT:
        return 408;
    case TS_OE_REVISION:
        return 409;
    case TS_OE_UNSUPPORTED_MEDIA_TYPE:
        return 415;
    case TS_OE_BAD_RANGE:
        return 416;
    case TS_OE_FULL_STORAGE:
        return 507;
    case TS_OE_DATABASE_UNAVAILABLE:
    case TS_OE_DATABASE_CANNOT_SERIALIZE:
        return 503;
    case TS_OE_INTERNAL_ERROR:
    case TS_OE_PLUGIN:
    case TS_OE_NOT_ENOUGH_MEMORY:
    case TS_OE_NETWORK_PROTOCOL:
    case TS_OE_SYSTEM_COMMAND:
    case TS_OE_DATABASE:
    case TS_OE_INCOMPATIBLE_DATABASE_VERSION:
    case TS_OE_CORRUPTED_FILE:
    case TS_OE_CANCELED_JOB:
    case TS_OE_FILE_STORAGE_CANNOT_WRITE:
    case TS_OE_BAD_APPLICATION_ENTITY_TITLE:
    case TS_OE_NO_SOP_CLASS_OR_INSTANCE:
    case TS_OE_NO_PRESENTATION_CONTEXT:
    case TS_OE_DICOM_FIND_UNAVAILABLE:
    case TS_OE_DICOM_MOVE_UNAVAILABLE:
    case TS_OE_CANNOT_STORE_INSTANCE:
    case TS_OE_UNKNOWN_MODALITY:
    case TS_OE_CANNOT_EXECUTE_LUA:
    case TS_OE_ALREADY_EXISTING_TAG:
    case TS_OE_UNKNOWN_DICOM_TAG:
        return 500;
    }
    return 500;
}
