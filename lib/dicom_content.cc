// Tag paths inside an instance, as Orthanc 1.10.1's /instances/{id}/content
// follows them (its ParsedDicomFile::SendPathValue); see dicom.h.
#include "dicom_internal.hh"

#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// Elements longer than this stay on disk until their value is asked for.
static const Uint32 CONTENT_LAZY_LOAD = 4096;

// Orthanc's FromDcmtkBridge::ParseTag: "gggg-eeee", "gggg,eeee", "ggggeeee" or a
// name of the dictionary.
static bool parse_tag(const char *s, DcmTagKey &key)
{
    auto hex = [](const char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
            if (!isxdigit(static_cast<unsigned char>(p[i])))
                return false;
        return true;
    };
    size_t n = strlen(s);
    unsigned g, e;
    if (n == 9 && hex(s, 4) && (s[4] == '-' || s[4] == ',') && hex(s + 5, 4) &&
        sscanf(s, "%4x", &g) == 1 && sscanf(s + 5, "%4x", &e) == 1) {
        key.set(static_cast<Uint16>(g), static_cast<Uint16>(e));
        return true;
    }
    if (n == 8 && hex(s, 8) && sscanf(s, "%4x%4x", &g, &e) == 2) {
        key.set(static_cast<Uint16>(g), static_cast<Uint16>(e));
        return true;
    }
    DcmTag tag;
    if (n > 0 && DcmTag::findTagFromName(s, tag).good()) {
        key = tag;
        return true;
    }
    return false;
}

// Orthanc reads item numbers with boost::lexical_cast<size_t>: an optional sign,
// digits, nothing else; "-1" wraps round to the last item for dcmtk.
static bool parse_index(const char *s, long &out)
{
    bool neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    if (!*s)
        return false;
    unsigned long long v = 0;
    for (; *s; s++) {
        if (!isdigit(static_cast<unsigned char>(*s)) || v > (ULLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + static_cast<unsigned>(*s - '0');
    }
    if (v > SIZE_MAX)
        return false;
    size_t wrapped = neg ? static_cast<size_t>(0) - static_cast<size_t>(v) : static_cast<size_t>(v);
    out = static_cast<long>(wrapped);
    return true;
}

static json_t *numbered_list(unsigned long n)
{
    json_t *a = json_array();
    for (unsigned long i = 0; i < n; i++) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lu", i);
        json_array_append_new(a, json_string(buf));
    }
    return a;
}

static json_t *tag_list(DcmItem *item)
{
    json_t *a = json_array();
    for (unsigned long i = 0; i < item->card(); i++) {
        DcmElement *el = item->getElement(i);
        if (!el)
            continue;
        char buf[16];
        snprintf(buf, sizeof(buf), "%04x-%04x", el->getGTag(), el->getETag());
        json_array_append_new(a, json_string(buf));
    }
    return a;
}

static int element_value(DcmElement *el, E_TransferSyntax xfer, ts_dicom_content *out,
                         ts_err *err)
{
    Uint32 len = el->getLength(xfer);
    if (len == 0)
        return 0;
    out->data = malloc(len);
    if (!out->data)
        abort();
    OFCondition cond = el->getPartialValue(out->data, 0, len);
    if (cond.bad()) {
        free(out->data);
        out->data = nullptr;
        return ts_err_set(err, TS_EDICOM, "cannot read the value of (%04x,%04x): %s",
                          el->getGTag(), el->getETag(), cond.text());
    }
    out->len = len;
    return 0;
}

static int pixel_data(DcmDataset *ds, E_TransferSyntax xfer, const char *block,
                      ts_dicom_content *out, ts_err *err)
{
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return ts_err_set(err, TS_ENOTFOUND, "no pixel data");
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(el);
    DcmPixelSequence *seq = nullptr;
    if (pd && pd->getEncapsulatedRepresentation(xfer, nullptr, seq).good() && seq) {
        if (!block) {
            out->list = numbered_list(seq->card());
            return 0;
        }
        long n;
        if (!parse_index(block, n) || n < 0 || static_cast<unsigned long>(n) >= seq->card())
            return ts_err_set(err, TS_ENOTFOUND, "no such fragment");
        DcmPixelItem *item = nullptr;
        if (seq->getItem(item, static_cast<unsigned long>(n)).bad() || !item)
            return ts_err_set(err, TS_ENOTFOUND, "no such fragment");
        return element_value(item, xfer, out, err);
    }
    if (!block) {
        out->list = numbered_list(1);
        return 0;
    }
    long n;
    if (!parse_index(block, n) || n != 0)
        return ts_err_set(err, TS_ENOTFOUND, "no such frame");
    return element_value(el, xfer, out, err);
}

extern "C" int ts_dicom_content_get(const char *file, const char *const *path, size_t npath,
                                    ts_dicom_content *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    DcmFileFormat ff;
    OFCondition cond =
        ff.loadFile(file, EXS_Unknown, EGL_noChange, CONTENT_LAZY_LOAD, ERM_autoDetect);
    if (cond.bad())
        return ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", cond.text());
    DcmDataset *ds = ff.getDataset();
    E_TransferSyntax xfer = ds->getCurrentXfer();
    DcmTagKey key;
    if (npath == 1 || npath == 2) {
        if (!parse_tag(path[0], key))
            return ts_err_set(err, TS_EINVAL, "unknown DICOM tag: %s", path[0]);
        if (key == DCM_PixelData)
            return pixel_data(ds, xfer, npath == 2 ? path[1] : nullptr, out, err);
    }
    DcmItem *item = ds;
    for (size_t pos = 0; pos < npath / 2; pos++) {
        if (!parse_tag(path[2 * pos], key))
            return ts_err_set(err, TS_EINVAL, "unknown DICOM tag: %s", path[2 * pos]);
        long index;
        DcmItem *child = nullptr;
        if (!parse_index(path[2 * pos + 1], index) ||
            item->findAndGetSequenceItem(key, child, index).bad() || !child)
            return ts_err_set(err, TS_ENOTFOUND, "no item %s in %s", path[2 * pos + 1],
                              path[2 * pos]);
        item = child;
    }
    if (npath % 2 == 0) {
        out->list = tag_list(item);
        return 0;
    }
    if (!parse_tag(path[npath - 1], key))
        return ts_err_set(err, TS_EINVAL, "unknown DICOM tag: %s", path[npath - 1]);
    DcmElement *el = nullptr;
    if (item->findAndGetElement(key, el).bad() || !el)
        return ts_err_set(err, TS_ENOTFOUND, "no %s", path[npath - 1]);
    if (el->isLeaf())
        return element_value(el, xfer, out, err);
    DcmSequenceOfItems *seq = dynamic_cast<DcmSequenceOfItems *>(el);
    out->list = numbered_list(seq ? seq->card() : 0);
    return 0;
}

extern "C" void ts_dicom_content_clear(ts_dicom_content *c)
{
    if (!c)
        return;
    json_decref(c->list);
    free(c->data);
    memset(c, 0, sizeof(*c));
}
