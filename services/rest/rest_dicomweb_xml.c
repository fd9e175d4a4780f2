/* DICOMweb answers as XML (see rest_dicomweb_xml.h). */
#include "rest_dicomweb_xml.h"

#include <libxml/xmlwriter.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/xalloc.h"
#include "dicom/dicom.h"

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A value of the JSON model as text: strings as they are, numbers as JSON
 * writes them (what the DS/IS/decimal text was). malloc'd. */
static char *value_text(const json_t *v)
{
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!t)
        abort();
    return t;
}

/* PS3.19 A.1.1: the five components of each of a person name's groups. */
static void write_name_group(xmlTextWriterPtr w, const char *group, const char *value)
{
    static const char *const parts[] = {"FamilyName", "GivenName", "MiddleName", "NamePrefix",
                                        "NameSuffix"};
    xmlTextWriterStartElement(w, BAD_CAST group);
    const char *p = value;
    for (int k = 0; k < 5 && p; k++) {
        const char *caret = strchr(p, '^');
        size_t n = caret ? (size_t)(caret - p) : strlen(p);
        if (n) {
            char *part = xmalloc(n + 1);
            memcpy(part, p, n);
            part[n] = '\0';
            xmlTextWriterWriteElement(w, BAD_CAST parts[k], BAD_CAST part);
            free(part);
        }
        p = caret ? caret + 1 : NULL;
    }
    xmlTextWriterEndElement(w);
}

static void write_attributes(xmlTextWriterPtr w, const json_t *dataset);

static void write_attribute(xmlTextWriterPtr w, const char *tag, const json_t *attr)
{
    const char *vr = json_string_value(json_object_get(attr, "vr"));
    xmlTextWriterStartElement(w, BAD_CAST "DicomAttribute");
    xmlTextWriterWriteAttribute(w, BAD_CAST "tag", BAD_CAST tag);
    if (vr)
        xmlTextWriterWriteAttribute(w, BAD_CAST "vr", BAD_CAST vr);
    uint32_t t = (uint32_t)strtoul(tag, NULL, 16);
    char keyword[80];
    ts_dicom_tag_name(t, keyword, sizeof(keyword));
    if (!strchr(keyword, ',')) /* "gggg,eeee": not in the dictionary, no keyword */
        xmlTextWriterWriteAttribute(w, BAD_CAST "keyword", BAD_CAST keyword);

    const json_t *values = json_object_get(attr, "Value");
    const json_t *bulk = json_object_get(attr, "BulkDataURI");
    const json_t *inline_binary = json_object_get(attr, "InlineBinary");
    if (json_is_string(bulk)) {
        xmlTextWriterStartElement(w, BAD_CAST "BulkData");
        xmlTextWriterWriteAttribute(w, BAD_CAST "uri", BAD_CAST json_string_value(bulk));
        xmlTextWriterEndElement(w);
    } else if (json_is_string(inline_binary)) {
        xmlTextWriterWriteElement(w, BAD_CAST "InlineBinary",
                                  BAD_CAST json_string_value(inline_binary));
    } else if (json_is_array(values)) {
        size_t i;
        const json_t *v;
        json_array_foreach(values, i, v)
        {
            char number[24];
            snprintf(number, sizeof(number), "%zu", i + 1);
            if (vr && strcmp(vr, "SQ") == 0) {
                xmlTextWriterStartElement(w, BAD_CAST "Item");
                xmlTextWriterWriteAttribute(w, BAD_CAST "number", BAD_CAST number);
                if (json_is_object(v))
                    write_attributes(w, v);
                xmlTextWriterEndElement(w);
            } else if (vr && strcmp(vr, "PN") == 0) {
                xmlTextWriterStartElement(w, BAD_CAST "PersonName");
                xmlTextWriterWriteAttribute(w, BAD_CAST "number", BAD_CAST number);
                static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
                for (int g = 0; g < 3; g++) {
                    const char *s = json_string_value(json_object_get(v, groups[g]));
                    if (s)
                        write_name_group(w, groups[g], s);
                }
                xmlTextWriterEndElement(w);
            } else {
                xmlTextWriterStartElement(w, BAD_CAST "Value");
                xmlTextWriterWriteAttribute(w, BAD_CAST "number", BAD_CAST number);
                if (!json_is_null(v)) { /* null: an empty value among others */
                    char *text = value_text(v);
                    xmlTextWriterWriteString(w, BAD_CAST text);
                    free(text);
                }
                xmlTextWriterEndElement(w);
            }
        }
    }
    xmlTextWriterEndElement(w);
}

/* The attributes in tag order (PS3.19 A.1: as in the data set). */
static void write_attributes(xmlTextWriterPtr w, const json_t *dataset)
{
    size_t n = json_object_size(dataset), k = 0;
    const char **keys = xcalloc(n ? n : 1, sizeof(*keys));
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)dataset, key, value) keys[k++] = key;
    qsort(keys, k, sizeof(*keys), cmp_keys);
    for (size_t i = 0; i < k; i++) {
        const json_t *attr = json_object_get(dataset, keys[i]);
        if (json_is_object(attr) && strlen(keys[i]) == 8)
            write_attribute(w, keys[i], attr);
    }
    free(keys);
}

char *dw_xml_dataset(const json_t *dataset, size_t *len)
{
    if (!json_is_object(dataset))
        return NULL;
    xmlBufferPtr buf = xmlBufferCreate();
    if (!buf)
        abort();
    xmlTextWriterPtr w = xmlNewTextWriterMemory(buf, 0);
    if (!w)
        abort();
    xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL);
    xmlTextWriterStartElement(w, BAD_CAST "NativeDicomModel");
    xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns",
                                BAD_CAST "http://dicom.nema.org/PS3.19/models/NativeDICOM");
    xmlTextWriterWriteAttribute(w, BAD_CAST "xml:space", BAD_CAST "preserve");
    write_attributes(w, dataset);
    xmlTextWriterEndDocument(w);
    xmlFreeTextWriter(w); /* flushes into buf */
    *len = (size_t)xmlBufferLength(buf);
    char *out = xmalloc(*len + 1);
    memcpy(out, xmlBufferContent(buf), *len);
    out[*len] = '\0';
    xmlBufferFree(buf);
    return out;
}

void dw_reply_xml(rest_request *req, const json_t *datasets)
{
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    char boundary[48];
    int bn = snprintf(boundary, sizeof(boundary), "tessera-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        bn += snprintf(boundary + bn, sizeof(boundary) - (size_t)bn, "%02x", rnd[i]);

    size_t cap = 4096, used = 0;
    char *body = xmalloc(cap);
    size_t i;
    const json_t *ds;
    json_array_foreach(datasets, i, ds)
    {
        size_t n;
        char *xml = dw_xml_dataset(ds, &n);
        if (!xml)
            continue;
        size_t need = used + n + 2 * sizeof(boundary) + 80;
        if (need > cap) {
            cap = need * 2;
            body = xrealloc(body, cap);
        }
        used += (size_t)snprintf(body + used, cap - used,
                                 "--%s\r\nContent-Type: " DW_XML "\r\n\r\n", boundary);
        memcpy(body + used, xml, n);
        used += n;
        memcpy(body + used, "\r\n", 2);
        used += 2;
        free(xml);
    }
    if (used + sizeof(boundary) + 8 > cap)
        body = xrealloc(body, cap = used + sizeof(boundary) + 8);
    used += (size_t)snprintf(body + used, cap - used, "--%s--\r\n", boundary);
    rest_reply_text(req, 200, body, used);
    free(body);
    char ct[128];
    snprintf(ct, sizeof(ct), "multipart/related; type=\"" DW_XML "\"; boundary=%s", boundary);
    req->content_type = NULL; /* the header below, which must outlive this frame */
    rest_add_header(req, "Content-Type", ct);
}

void dw_reply_xml_dataset(rest_request *req, int status, json_t *dataset)
{
    size_t n = 0;
    char *xml = dw_xml_dataset(dataset, &n);
    json_decref(dataset);
    if (!xml)
        abort(); /* the callers build an object */
    rest_reply_owned(req, status, xml, n, DW_XML);
}
