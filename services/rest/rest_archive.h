/* GET /{patients,studies,series}/{id}/archive: a ZIP of the resource's DICOM
 * files in Orthanc's layout, written while the files are read, so that memory
 * does not grow with the size of the files. */
#ifndef REST_ARCHIVE_H
#define REST_ARCHIVE_H

#include "rest_http.h"

void rest_archive(rest_request *req);

#endif
