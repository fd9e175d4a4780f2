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
#include <string>
#include <vector>

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

// ---- frames (Orthanc's DicomFrameIndex) ------------------------------------------

static int load_dataset(const char *file, DcmFileFormat &ff, ts_err *err)
{
    OFCondition cond =
        ff.loadFile(file, EXS_Unknown, EGL_noChange, CONTENT_LAZY_LOAD, ERM_autoDetect);
    if (cond.bad())
        return ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", cond.text());
    return 0;
}

// NumberOfFrames read as boost::lexical_cast<unsigned int> would; 1 otherwise.
static unsigned frames_of(DcmDataset *ds)
{
    const char *tmp = nullptr;
    if (ds->findAndGetString(DCM_NumberOfFrames, tmp).bad() || !tmp)
        return 1;
    std::string v(tmp);
    while (!v.empty() && v.back() == ' ')
        v.pop_back();
    long n;
    if (!parse_index(v.c_str(), n))
        return 1;
    unsigned long u = static_cast<unsigned long>(n);
    if (v[0] == '-' ? (0 - u) > UINT_MAX : u > UINT_MAX)
        return 1;
    return static_cast<unsigned>(u);
}

static DcmPixelSequence *pixel_sequence(DcmDataset *ds)
{
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return nullptr;
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(el);
    DcmPixelSequence *seq = nullptr;
    if (!pd || pd->getEncapsulatedRepresentation(ds->getCurrentXfer(), nullptr, seq).bad())
        return nullptr;
    return seq;
}

extern "C" int ts_dicom_frame_count(const char *file, unsigned *count, ts_err *err)
{
    DcmFileFormat ff;
    int rc = load_dataset(file, ff, err);
    if (rc)
        return rc;
    *count = frames_of(ff.getDataset());
    return 0;
}

static void *copy_out(const Uint8 *src, size_t len)
{
    if (len == 0)
        return nullptr;
    void *p = malloc(len);
    if (!p)
        abort();
    memcpy(p, src, len);
    return p;
}

// One frame of encapsulated pixel data: one fragment per frame, or the basic
// offset table says where each frame starts.
static int fragments_frame(DcmPixelSequence *seq, unsigned count, unsigned index, void **data,
                           size_t *len, ts_err *err)
{
    unsigned long nfrag = seq->card();
    if (nfrag < static_cast<unsigned long>(count) + 1)
        return ts_err_set(err, TS_EDICOM, "%lu fragments for %u frames", nfrag, count);
    unsigned long first, n;
    if (nfrag == static_cast<unsigned long>(count) + 1) {
        if (index >= count)
            return ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
        first = index + 1;
        n = 1;
    } else {
        DcmPixelItem *table = nullptr;
        if (seq->getItem(table, 0).bad() || !table)
            return ts_err_set(err, TS_EDICOM, "no basic offset table");
        Uint32 tlen = table->getLength();
        Uint8 *t = nullptr;
        if (tlen % 4 != 0 || tlen / 4 != count || (tlen && (table->getUint8Array(t).bad() || !t)))
            return ts_err_set(err, TS_EDICOM, "basic offset table does not match %u frames", count);
        std::vector<Uint32> offsets(count);
        for (unsigned i = 0; i < count; i++)
            offsets[i] = static_cast<Uint32>(t[4 * i]) | static_cast<Uint32>(t[4 * i + 1]) << 8 |
                         static_cast<Uint32>(t[4 * i + 2]) << 16 |
                         static_cast<Uint32>(t[4 * i + 3]) << 24;
        if (count == 0 || offsets[0] != 0)
            return ts_err_set(err, TS_EDICOM, "basic offset table does not start at 0");
        // walk the fragments: which ones belong to which frame
        std::vector<unsigned long> start(count, 0), nf(count, 0);
        start[0] = 1;
        unsigned frame = 0;
        Uint32 offset = 0;
        for (unsigned long i = 1; i < nfrag; i++) {
            DcmPixelItem *item = nullptr;
            if (seq->getItem(item, i).bad() || !item)
                return ts_err_set(err, TS_EDICOM, "fragment %lu unreadable", i);
            if (frame + 1 < count && offset == offsets[frame + 1]) {
                frame++;
                start[frame] = i;
            }
            nf[frame]++;
            offset += item->getLength() + 8;
        }
        if (frame + 1 != count)
            return ts_err_set(err, TS_EDICOM, "basic offset table does not match the fragments");
        if (index >= count)
            return ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
        first = start[index];
        n = nf[index];
    }
    std::string out;
    for (unsigned long i = first; i < first + n; i++) {
        DcmPixelItem *item = nullptr;
        Uint8 *bytes = nullptr;
        if (seq->getItem(item, i).bad() || !item)
            return ts_err_set(err, TS_EDICOM, "fragment %lu unreadable", i);
        if (item->getLength() == 0)
            continue;
        if (item->getUint8Array(bytes).bad() || !bytes)
            return ts_err_set(err, TS_EDICOM, "fragment %lu unreadable", i);
        out.append(reinterpret_cast<const char *>(bytes), item->getLength());
    }
    *data = copy_out(reinterpret_cast<const Uint8 *>(out.data()), out.size());
    *len = out.size();
    return 0;
}

static int uncompressed_frame(DcmDataset *ds, unsigned count, unsigned index, void **data,
                              size_t *len, ts_err *err)
{
    Uint16 rows, cols, bits, spp = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, bits).bad())
        return ts_err_set(err, TS_EINVAL, "no Rows, Columns or BitsAllocated");
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    size_t frame_size;
    if (bits == 1)
        frame_size = (static_cast<size_t>(rows) * cols + 7) / 8;
    else if (bits % 8 == 0)
        frame_size = static_cast<size_t>(rows) * cols * spp * (bits / 8);
    else
        return ts_err_set(err, TS_EINVAL, "BitsAllocated %u", bits);
    DcmElement *el = nullptr;
    size_t size = 0;
    Uint8 *pixels = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).good() && el) {
        size = el->getLength();
        if (size > 0 && (el->getUint8Array(pixels).bad() || !pixels))
            return ts_err_set(err, TS_EDICOM, "pixel data unreadable");
    }
    if (size < frame_size * count)
        return ts_err_set(err, TS_EDICOM, "pixel data of %zu bytes for %u frames of %zu", size,
                          count, frame_size);
    if (index >= count)
        return ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
    *data = copy_out(pixels + frame_size * index, frame_size);
    *len = frame_size;
    return 0;
}

extern "C" int ts_dicom_frame_raw(const char *file, unsigned index, void **data, size_t *len,
                                  const char **mime, ts_err *err)
{
    *data = nullptr;
    *len = 0;
    *mime = "application/octet-stream";
    DcmFileFormat ff;
    int rc = load_dataset(file, ff, err);
    if (rc)
        return rc;
    DcmDataset *ds = ff.getDataset();
    unsigned count = frames_of(ds);
    if (count == 0)
        return ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
    DcmPixelSequence *seq = pixel_sequence(ds);
    rc = seq ? fragments_frame(seq, count, index, data, len, err)
             : uncompressed_frame(ds, count, index, data, len, err);
    if (rc)
        return rc;
    switch (ds->getCurrentXfer()) {
    case EXS_JPEGProcess1:
        *mime = "image/jpeg";
        break;
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
        *mime = "image/jp2";
        break;
    default:
        break;
    }
    return 0;
}
