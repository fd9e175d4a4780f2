// Tag paths inside an instance, as Orthanc 1.10.1's /instances/{id}/content
// follows them (its ParsedDicomFile::SendPathValue); see dicom.h.
#include "dicom_internal.hh"

#include <dcmtk/dcmdata/dcfcache.h>
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

extern "C" void ts_dicom_tag_name(uint32_t tag, char *out, size_t size)
{
    DcmTag t(static_cast<Uint16>(tag >> 16), static_cast<Uint16>(tag & 0xffff));
    /* Orthanc's names, not the dictionary's alone: dcmtk 3.6.7 calls
     * (0010,1000) RETIRED_OtherPatientIDs, Orthanc OtherPatientIDs */
    std::string name = ts_orthanc_tag_name(t);
    if (name != DcmTag_ERROR_TagName)
        snprintf(out, size, "%s", name.c_str());
    else
        snprintf(out, size, "%04x,%04x", tag >> 16, tag & 0xffff);
}

extern "C" void ts_dicom_tag_vr(uint32_t tag, char vr[3])
{
    DcmTag t(static_cast<Uint16>(tag >> 16), static_cast<Uint16>(tag & 0xffff));
    snprintf(vr, 3, "%s", t.getVR().getValidVRName());
}

extern "C" bool ts_dicom_parse_tag(const char *s, uint32_t *tag)
{
    DcmTagKey key;
    if (!s || !parse_tag(s, key))
        return false;
    *tag = (static_cast<uint32_t>(key.getGroup()) << 16) | key.getElement();
    return true;
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

// One piece of a reader: length bytes of an element from offset on.
struct reader_part {
    DcmElement *el;
    Uint32 offset;
    Uint32 length;
};

struct ts_dicom_reader {
    DcmFileFormat ff; // owns the elements of parts
    DcmFileCache cache;
    std::vector<reader_part> parts;
    size_t size = 0;
    size_t part = 0; // next part to read
    Uint32 done = 0; // bytes of that part already read
};

static void reader_add(ts_dicom_reader *r, DcmElement *el, Uint32 offset, Uint32 length)
{
    if (length == 0)
        return;
    r->parts.push_back({el, offset, length});
    r->size += length;
}

extern "C" size_t ts_dicom_reader_size(const ts_dicom_reader *r)
{
    return r->size;
}

extern "C" int ts_dicom_reader_read(ts_dicom_reader *r, void *buf, size_t max, size_t *got,
                                    ts_err *err)
{
    *got = 0;
    // getPartialValue swaps 16-bit words of big-endian files: keep pieces even
    if (max >= 2)
        max &= ~static_cast<size_t>(1);
    while (*got < max && r->part < r->parts.size()) {
        reader_part &p = r->parts[r->part];
        size_t n = p.length - r->done;
        if (n > max - *got)
            n = max - *got;
        if (n == 0)
            break;
        OFCondition cond = p.el->getPartialValue(
            static_cast<char *>(buf) + *got, p.offset + r->done, static_cast<Uint32>(n), &r->cache);
        if (cond.bad())
            return ts_err_set(err, TS_EIO, "cannot read the value of (%04x,%04x): %s",
                              p.el->getGTag(), p.el->getETag(), cond.text());
        *got += n;
        r->done += static_cast<Uint32>(n);
        if (r->done == p.length) {
            r->part++;
            r->done = 0;
        }
    }
    return 0;
}

extern "C" void ts_dicom_reader_free(ts_dicom_reader *r)
{
    delete r;
}

static int element_value(DcmElement *el, E_TransferSyntax xfer, ts_dicom_reader *r,
                         ts_dicom_content *out)
{
    reader_add(r, el, 0, el->getLength(xfer));
    out->value = r;
    return 0;
}

static int pixel_data(DcmDataset *ds, E_TransferSyntax xfer, const char *block, ts_dicom_reader *r,
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
        return element_value(item, xfer, r, out);
    }
    if (!block) {
        out->list = numbered_list(1);
        return 0;
    }
    long n;
    if (!parse_index(block, n) || n != 0)
        return ts_err_set(err, TS_ENOTFOUND, "no such frame");
    return element_value(el, xfer, r, out);
}

static int content_get(ts_dicom_reader *r, const char *const *path, size_t npath,
                       ts_dicom_content *out, ts_err *err)
{
    DcmDataset *ds = r->ff.getDataset();
    E_TransferSyntax xfer = ds->getCurrentXfer();
    DcmTagKey key;
    if (npath == 1 || npath == 2) {
        if (!parse_tag(path[0], key))
            return ts_err_set(err, TS_EINVAL, "unknown DICOM tag: %s", path[0]);
        if (key == DCM_PixelData)
            return pixel_data(ds, xfer, npath == 2 ? path[1] : nullptr, r, out, err);
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
        return element_value(el, xfer, r, out);
    DcmSequenceOfItems *seq = dynamic_cast<DcmSequenceOfItems *>(el);
    out->list = numbered_list(seq ? seq->card() : 0);
    return 0;
}

extern "C" int ts_dicom_content_get(const char *file, const char *const *path, size_t npath,
                                    ts_dicom_content *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    ts_dicom_reader *r = new ts_dicom_reader();
    OFCondition cond =
        r->ff.loadFile(file, EXS_Unknown, EGL_noChange, CONTENT_LAZY_LOAD, ERM_autoDetect);
    int rc = cond.bad() ? ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", cond.text())
                        : content_get(r, path, npath, out, err);
    if (rc || !out->value) // the reader is kept only when it is the answer
        delete r;
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

extern "C" void ts_dicom_content_clear(ts_dicom_content *c)
{
    if (!c)
        return;
    json_decref(c->list);
    ts_dicom_reader_free(c->value);
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

// One frame of encapsulated pixel data: one fragment per frame, or the basic
// offset table says where each frame starts.
static int fragments_frame(DcmPixelSequence *seq, unsigned count, unsigned index,
                           ts_dicom_reader *r, ts_err *err)
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
    for (unsigned long i = first; i < first + n; i++) {
        DcmPixelItem *item = nullptr;
        if (seq->getItem(item, i).bad() || !item)
            return ts_err_set(err, TS_EDICOM, "fragment %lu unreadable", i);
        reader_add(r, item, 0, item->getLength());
    }
    return 0;
}

static int uncompressed_frame(DcmDataset *ds, unsigned count, unsigned index, ts_dicom_reader *r,
                              ts_err *err)
{
    Uint16 rows, cols, bits, spp = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, cols).bad() ||
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
    OFString pi;
    // YBR_*_422 (PS3.3 C.7.6.3.1.2): two pixels share one Cb and one Cr, so a
    // frame holds 2 samples a pixel, not 3
    if (bits % 8 == 0 && ds->findAndGetOFString(DCM_PhotometricInterpretation, pi).good() &&
        pi.size() > 4 && pi.substr(pi.size() - 4) == "_422")
        frame_size = frame_size * 2 / 3;
    DcmElement *el = nullptr;
    size_t size = 0;
    if (ds->findAndGetElement(DCM_PixelData, el).good() && el)
        size = el->getLength();
    if (size < frame_size * count)
        return ts_err_set(err, TS_EDICOM, "pixel data of %zu bytes for %u frames of %zu", size,
                          count, frame_size);
    if (index >= count)
        return ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
    reader_add(r, el, static_cast<Uint32>(frame_size * index), static_cast<Uint32>(frame_size));
    return 0;
}

extern "C" int ts_dicom_frame_raw(const char *file, unsigned index, ts_dicom_reader **out,
                                  const char **mime, ts_err *err)
{
    *out = nullptr;
    *mime = "application/octet-stream";
    ts_dicom_reader *r = new ts_dicom_reader();
    int rc = load_dataset(file, r->ff, err);
    DcmDataset *ds = r->ff.getDataset();
    unsigned count = rc ? 0 : frames_of(ds);
    if (!rc && count == 0)
        rc = ts_err_set(err, TS_ENOTFOUND, "no frame %u", index);
    if (!rc) {
        DcmPixelSequence *seq = pixel_sequence(ds);
        rc = seq ? fragments_frame(seq, count, index, r, err)
                 : uncompressed_frame(ds, count, index, r, err);
    }
    if (rc) {
        delete r;
        return rc;
    }
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
    *out = r;
    return 0;
}
