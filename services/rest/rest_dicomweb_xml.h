/* DICOMweb answers as XML: the Native DICOM Model of PS3.19 A.1, written from
 * the DICOM JSON model (PS3.18 F.2) that QIDO-RS and the metadata routes build
 * anyway, and sent as multipart/related; type="application/dicom+xml" with one
 * part per data set (PS3.18 8.7.3.4 and 10.4.3). libxml2's writer does the
 * escaping and the encoding. */
#ifndef REST_DICOMWEB_XML_H
#define REST_DICOMWEB_XML_H

#include <jansson.h>
#include <stddef.h>

#include "rest_http.h"

#define DW_XML "application/dicom+xml"

/* One data set of the DICOM JSON model as a NativeDicomModel document (UTF-8,
 * malloc'd, *len bytes); NULL if the JSON is not a DICOM JSON object. */
char *dw_xml_dataset(const json_t *dataset, size_t *len);

/* 200 with the data sets of a JSON array, each as an XML part of one
 * multipart/related body. Does not steal datasets. */
void dw_reply_xml(rest_request *req, const json_t *datasets);

/* status with one data set as a single application/dicom+xml document (the
 * STOW-RS response, PS3.18 10.5.3). Steals dataset. */
void dw_reply_xml_dataset(rest_request *req, int status, json_t *dataset);

#endif
