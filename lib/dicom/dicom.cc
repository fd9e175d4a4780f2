// Parsing and tag access over dcmtk (see dicom.h).
#include "dicom_internal.hh"

#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcdicent.h>
#include <jansson.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>

#include "base/log.h"
#include "dicom/codecs.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iconv.h>
#include <new>
#include <sys/mman.h>
#include <unistd.h>
#include <string>
#include <vector>

// Elements longer than this stay on disk until someone asks for them, so that
// parsing a 500 MB multi-frame file for its tags costs a few kilobytes.
static const Uint32 LAZY_LOAD_THRESHOLD = 4096;

namespace
{

// dcmtk's own log lines (oflog) as Tessera's logfmt lines: its default
// appender wrote "E: ..." lines that no log collector could parse, with text
// from the network in them.
class LogfmtAppender : public dcmtk::log4cplus::Appender
{
  public:
    ~LogfmtAppender() override
    {
        destructorImpl();
    }
    void close() override {}

  protected:
    void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &event) override
    {
        dcmtk::log4cplus::LogLevel l = event.getLogLevel();
        // dcmtk's errors are mostly a peer's doing (an abort, a broken data
        // set): warnings for an operator, who gets Tessera's own line as well.
        ts_log_level level = l >= dcmtk::log4cplus::FATAL_LOG_LEVEL  ? TS_LOG_ERROR
                             : l >= dcmtk::log4cplus::WARN_LOG_LEVEL ? TS_LOG_WARN
                             : l >= dcmtk::log4cplus::INFO_LOG_LEVEL ? TS_LOG_INFO
                                                                     : TS_LOG_DEBUG;
        ts_log_(level, "dcmtk", "detail=\"%s\"", event.getMessage().c_str());
    }
};

} // namespace

extern "C" int ts_dicom_global_init(ts_err *err)
{
    // Debian's dcmtk leaves Nagle on unless this is set: every DIMSE round trip
    // would then stall ~40 ms on delayed ACKs (docs/development.md, "dcmtk").
    setenv("TCP_NODELAY", "1", 0);
    // dcmtk logs through oflog; we log ourselves.
    OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
    dcmtk::log4cplus::Logger root = dcmtk::log4cplus::Logger::getRoot();
    root.removeAllAppenders();
    root.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new LogfmtAppender()));
    if (!dcmDataDict.isDictionaryLoaded())
        return ts_err_set(err, TS_EINVAL,
                          "dcmtk data dictionary not loaded (check DCMDICTPATH or "
                          "/usr/share/libdcmtk17/dicom.dic)");
    ts_dicom_codecs_init();
    return 0;
}

extern "C" int ts_dicom_dictionary_add(const char *json_text, ts_err *err)
{
    if (!json_text || !*json_text)
        return 0;
    json_error_t jerr;
    json_t *root = json_loads(json_text, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return ts_err_set(err, TS_EINVAL, "the dictionary is not a JSON object: %s", jerr.text);
    }
    std::vector<DcmDictEntry *> entries;
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v)
    {
        unsigned g, e;
        char extra;
        size_t n = json_array_size(v);
        const char *vr = json_string_value(json_array_get(v, 0));
        const char *name = json_string_value(json_array_get(v, 1));
        json_t *jmin = json_array_get(v, 2), *jmax = json_array_get(v, 3);
        json_t *jcreator = json_array_get(v, 4);
        if (std::sscanf(key, "%4x,%4x%c", &g, &e, &extra) != 2 || std::strlen(key) != 9) {
            rc = ts_err_set(err, TS_EINVAL, "dictionary entry \"%.40s\": not a tag (gggg,eeee)",
                            key);
            break;
        }
        DcmVR dvr(vr ? vr : "");
        if (!json_is_array(v) || n < 2 || n > 5 || !vr || !name || !*name || !dvr.isStandard() ||
            std::strlen(vr) != 2 || (jmin && !json_is_integer(jmin)) ||
            (jmax && !json_is_integer(jmax)) || (jcreator && !json_is_string(jcreator))) {
            rc = ts_err_set(err, TS_EINVAL,
                            "dictionary entry \"%s\": expected [VR, Name, MinMultiplicity, "
                            "MaxMultiplicity, PrivateCreator] (the last three optional)",
                            key);
            break;
        }
        int vm_min = jmin ? (int)json_integer_value(jmin) : 1;
        int vm_max = jmax ? (int)json_integer_value(jmax) : 1;
        if (vm_min < 0 || vm_max < 0 || (vm_max && vm_max < vm_min)) {
            rc = ts_err_set(err, TS_EINVAL, "dictionary entry \"%s\": bad multiplicity", key);
            break;
        }
        const char *creator = jcreator ? json_string_value(jcreator) : nullptr;
        entries.push_back(new DcmDictEntry(static_cast<Uint16>(g), static_cast<Uint16>(e), dvr,
                                           name, vm_min, vm_max ? vm_max : DcmVariableVM, "private",
                                           OFTrue, creator && *creator ? creator : nullptr));
    }
    json_decref(root);
    if (rc) {
        for (DcmDictEntry *x : entries)
            delete x;
        return rc;
    }
    DcmDataDictionary &dict = dcmDataDict.wrlock();
    for (DcmDictEntry *x : entries)
        dict.addEntry(x); // the dictionary owns it
    dcmDataDict.wrunlock();
    ts_info("dictionary entries added", "count=%zu", entries.size());
    return 0;
}

namespace
{

// The ISO 2022 code elements of PS3.3 C.12.1.1.2 (Tables C.12-3 and C.12-4).
enum class Code { none, ascii, katakana, single, jis0208, jis0212, ksx1001, gb2312 };

struct Element {
    Code code;
    const char *iconv_name; // the charset whose bytes the code units become
};

// Designation escape sequences (PS3.5 6.1.2.5.1) and the code element each designates.
struct Escape {
    const char *seq; // after ESC
    int g;           // 0: G0 (GL), 1: G1 (GR)
    Element element;
};

const Escape escapes[] = {
    {"(B", 0, {Code::ascii, nullptr}},
    // JIS X 0201 Romaji: read as ASCII, 0x5C being the value delimiter
    {"(J", 0, {Code::ascii, nullptr}},
    {")I", 1, {Code::katakana, nullptr}},
    {"-A", 1, {Code::single, "ISO-8859-1"}},
    {"-B", 1, {Code::single, "ISO-8859-2"}},
    {"-C", 1, {Code::single, "ISO-8859-3"}},
    {"-D", 1, {Code::single, "ISO-8859-4"}},
    {"-L", 1, {Code::single, "ISO-8859-5"}},
    {"-G", 1, {Code::single, "ISO-8859-6"}},
    {"-F", 1, {Code::single, "ISO-8859-7"}},
    {"-H", 1, {Code::single, "ISO-8859-8"}},
    {"-M", 1, {Code::single, "ISO-8859-9"}},
    {"-b", 1, {Code::single, "ISO-8859-15"}},
    {"-T", 1, {Code::single, "TIS-620"}},
    {"$B", 0, {Code::jis0208, "EUC-JP"}},
    {"$(D", 0, {Code::jis0212, "EUC-JP"}},
    {"$)C", 1, {Code::ksx1001, "EUC-KR"}},
    {"$)A", 1, {Code::gb2312, "GB2312"}},
};

// Defined terms with code extensions and the escape each designates at the
// start of a value when it is value 1 of Specific Character Set.
struct Term {
    const char *name;
    const char *g0; // NULL: ASCII
    const char *g1; // NULL: none
};

const Term terms[] = {
    {"ISO 2022 IR 6", nullptr, nullptr}, {"ISO 2022 IR 100", nullptr, "-A"},
    {"ISO 2022 IR 101", nullptr, "-B"},  {"ISO 2022 IR 109", nullptr, "-C"},
    {"ISO 2022 IR 110", nullptr, "-D"},  {"ISO 2022 IR 144", nullptr, "-L"},
    {"ISO 2022 IR 127", nullptr, "-G"},  {"ISO 2022 IR 126", nullptr, "-F"},
    {"ISO 2022 IR 138", nullptr, "-H"},  {"ISO 2022 IR 148", nullptr, "-M"},
    {"ISO 2022 IR 203", nullptr, "-b"},  {"ISO 2022 IR 166", nullptr, "-T"},
    {"ISO 2022 IR 13", "(J", ")I"},      {"ISO 2022 IR 87", "$B", nullptr},
    {"ISO 2022 IR 159", "$(D", nullptr}, {"ISO 2022 IR 149", nullptr, "$)C"},
    {"ISO 2022 IR 58", nullptr, "$)A"},
};

const Escape *find_escape(const char *seq)
{
    for (const Escape &e : escapes)
        if (strcmp(e.seq, seq) == 0)
            return &e;
    return nullptr;
}

const Term *find_term(const std::string &name)
{
    for (const Term &t : terms)
        if (name == t.name)
            return &t;
    return nullptr;
}

// Decodes text in ISO 2022 with the code extensions of PS3.5 6.1.2.5 to UTF-8:
// code units are gathered per charset and converted by glibc's iconv (EUC forms
// for the multi-byte sets, ISO-8859-x and TIS-620 for the single-byte ones).
class Iso2022Decoder
{
  public:
    Iso2022Decoder(const Term *initial) : initial_(initial) {}

    std::string decode(const std::string &in, bool person_name)
    {
        out_.clear();
        reset();
        for (size_t i = 0; i < in.size(); i++) {
            unsigned char c = static_cast<unsigned char>(in[i]);
            if (c == 0x1b) {
                i += escape(in, i + 1);
                continue;
            }
            if (c < 0x80) {
                bool two_byte = g0_.code == Code::jis0208 || g0_.code == Code::jis0212;
                if (two_byte && c > 0x20 && c < 0x7f && i + 1 < in.size()) {
                    if (g0_.code == Code::jis0212)
                        put(g0_.iconv_name, 0x8f);
                    put(g0_.iconv_name, c | 0x80);
                    put(g0_.iconv_name, static_cast<unsigned char>(in[++i]) | 0x80);
                    continue;
                }
                put(nullptr, c);
                // An encoder returns to the initial state before these (PS3.5
                // 6.1.2.5.3): a value that does not still decodes its next part.
                if (c == '\\' || c == '\r' || c == '\n' || c == '\f' ||
                    (person_name && (c == '^' || c == '=')))
                    reset();
                continue;
            }
            switch (g1_.code) {
            case Code::katakana:
                if (c >= 0xa1 && c <= 0xdf)
                    put_utf8(0xff61 + (c - 0xa1));
                else
                    put_utf8(0xfffd);
                break;
            case Code::ksx1001:
            case Code::gb2312:
                put(g1_.iconv_name, c);
                if (i + 1 < in.size())
                    put(g1_.iconv_name, static_cast<unsigned char>(in[++i]));
                break;
            case Code::single:
                put(g1_.iconv_name, c);
                break;
            default:
                put_utf8(0xfffd); // no G1 designated: the value is not in its character set
                break;
            }
        }
        flush();
        return out_;
    }

  private:
    void reset()
    {
        g0_ = {Code::ascii, nullptr};
        g1_ = {Code::none, nullptr};
        if (initial_ && initial_->g0)
            g0_ = find_escape(initial_->g0)->element;
        if (initial_ && initial_->g1)
            g1_ = find_escape(initial_->g1)->element;
    }

    // The escape sequence starting at in[at] (after ESC); returns the bytes used.
    size_t escape(const std::string &in, size_t at)
    {
        for (size_t n = 2; n <= 3 && at + n <= in.size(); n++) {
            const Escape *e = find_escape(in.substr(at, n).c_str());
            if (e) {
                (e->g == 0 ? g0_ : g1_) = e->element;
                return n;
            }
        }
        put_utf8(0xfffd); // an escape sequence of no character set DICOM knows
        return 0;
    }

    void put(const char *charset, unsigned char c)
    {
        if (charset != pending_charset_)
            flush();
        pending_charset_ = charset;
        pending_ += static_cast<char>(c);
    }

    void put_utf8(unsigned cp)
    {
        flush();
        if (cp < 0x800) {
            out_ += static_cast<char>(0xc0 | (cp >> 6));
        } else {
            out_ += static_cast<char>(0xe0 | (cp >> 12));
            out_ += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        }
        out_ += static_cast<char>(0x80 | (cp & 0x3f));
    }

    void flush()
    {
        const char *charset = pending_charset_;
        std::string bytes;
        bytes.swap(pending_);
        pending_charset_ = nullptr;
        if (bytes.empty())
            return;
        if (!charset) {
            out_ += bytes;
            return;
        }
        iconv_t cd = iconv_open("UTF-8", charset);
        if (cd == (iconv_t)-1) {
            put_utf8(0xfffd);
            return;
        }
        char *in = &bytes[0];
        size_t inleft = bytes.size();
        while (inleft > 0) {
            char buf[256];
            char *o = buf;
            size_t outleft = sizeof(buf);
            size_t rc = iconv(cd, &in, &inleft, &o, &outleft);
            out_.append(buf, sizeof(buf) - outleft);
            if (rc == (size_t)-1 && errno != E2BIG) {
                // bytes the set does not have: a replacement character for each
                out_ += "\xef\xbf\xbd";
                if (errno == EINVAL)
                    break; // a character cut at the end of the value
                in++;
                inleft--;
            }
        }
        iconv_close(cd);
    }

    const Term *initial_;
    Element g0_{Code::ascii, nullptr};
    Element g1_{Code::none, nullptr};
    const char *pending_charset_ = nullptr;
    std::string pending_;
    std::string out_;
};

bool is_text_vr(DcmEVR vr)
{
    return vr == EVR_SH || vr == EVR_LO || vr == EVR_ST || vr == EVR_LT || vr == EVR_UT ||
           vr == EVR_PN || vr == EVR_UC;
}

} // namespace

// Every reader of a dataset wants UTF-8. dcmtk 3.6.7 converts the character sets
// without code extensions, but with glibc's iconv it refuses ISO 2022 IR 87 and
// IR 159 (it looks for iconv charsets glibc does not have) and so whole datasets
// in Japanese; the ISO 2022 forms are decoded here instead, one value at a time,
// following their escape sequences.
bool ts_dataset_to_utf8(DcmDataset *ds)
{
    OFString charset;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).bad() || charset.empty() ||
        charset == "ISO_IR 192")
        return true;
    if (charset.find("ISO 2022") == OFString_npos)
        return ds->convertToUTF8().good();
    std::vector<std::string> names;
    std::string all(charset.c_str());
    for (size_t b = 0;;) {
        size_t e = all.find('\\', b);
        std::string name = all.substr(b, e == std::string::npos ? std::string::npos : e - b);
        size_t first = name.find_first_not_of(' '), last = name.find_last_not_of(' ');
        names.push_back(first == std::string::npos ? "" : name.substr(first, last - first + 1));
        if (e == std::string::npos)
            break;
        b = e + 1;
    }
    for (size_t i = 0; i < names.size(); i++)
        if (!names[i].empty() && !find_term(names[i]))
            return false;
    Iso2022Decoder decoder(names[0].empty() ? nullptr : find_term(names[0]));
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmObject *obj = stack.top();
        if (!is_text_vr(obj->getVR()))
            continue;
        DcmElement *el = static_cast<DcmElement *>(obj);
        OFString v;
        if (el->getOFStringArray(v).bad() || v.empty())
            continue;
        std::string raw(v.c_str(), v.length());
        el->putOFStringArray(OFString(decoder.decode(raw, obj->getVR() == EVR_PN).c_str()));
    }
    ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    return true;
}

static int finish_open(ts_dicom *d, OFCondition cond, ts_err *err)
{
    if (cond.bad())
        return ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", cond.text());
    DcmDataset *ds = d->file.getDataset();
    if (!ds || ds->card() == 0)
        return ts_err_set(err, TS_EDICOM, "no DICOM dataset in the input");
    OFString ts;
    if (d->file.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, ts).good() && !ts.empty())
        d->transfer_syntax = ts.c_str();
    else if (ds->getOriginalXfer() != EXS_Unknown)
        d->transfer_syntax = DcmXfer(ds->getOriginalXfer()).getXferID();
    // Tags are read as UTF-8 everywhere; a dataset in an unknown character set
    // keeps its bytes (Orthanc does the same, with a warning).
    OFString charset;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good() && !charset.empty() &&
        charset != "ISO_IR 192") {
        // convertToUTF8() rewrites SpecificCharacterSet to ISO_IR 192; readers
        // show the value the file has (Orthanc does), so put it back.
        if (ts_dataset_to_utf8(ds))
            ds->putAndInsertOFStringArray(DCM_SpecificCharacterSet, charset);
    }
    return 0;
}

extern "C" int ts_dicom_open_file(const char *path, ts_dicom **out, ts_err *err)
{
    *out = nullptr;
    ts_dicom *d = new ts_dicom();
    OFCondition cond =
        d->file.loadFile(path, EXS_Unknown, EGL_noChange, LAZY_LOAD_THRESHOLD, ERM_autoDetect);
    int rc = finish_open(d, cond, err);
    if (rc) {
        delete d;
        return rc;
    }
    *out = d;
    return 0;
}

// An anonymous file holding a copy of data (see ts_dicom_open_buffer for why).
int ts_memfd_from(const void *data, size_t len, ts_err *err)
{
    int fd = memfd_create("ts-dicom", MFD_CLOEXEC);
    if (fd < 0)
        return ts_err_set(err, TS_EIO, "memfd_create: %s", strerror(errno));
    const char *p = static_cast<const char *>(data);
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            return ts_err_set(err, TS_EIO, "memfd write: %s", strerror(e));
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
    return fd;
}

extern "C" int ts_dicom_open_buffer(const void *data, size_t len, ts_dicom **out, ts_err *err)
{
    *out = nullptr;
    if (len < 8)
        return ts_err_set(err, TS_EDICOM, "input of %zu bytes is not DICOM", len);
    // Parsed from an anonymous file, as ingest parses its files: dcmtk then
    // checks declared lengths against what is there before allocating (from a
    // memory stream it allocates whatever an element declares, 4 GB included;
    // found by tests/fuzz/fuzz_dicom).
    int fd = ts_memfd_from(data, len, err);
    if (fd < 0)
        return fd;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ts_dicom *d = new ts_dicom();
    OFCondition cond =
        d->file.loadFile(path, EXS_Unknown, EGL_noChange, LAZY_LOAD_THRESHOLD, ERM_autoDetect);
    // The caller's bytes are gone after this call: load what was left lazy.
    if (cond.good())
        cond = d->file.loadAllDataIntoMemory();
    close(fd);
    int rc = finish_open(d, cond, err);
    if (rc) {
        delete d;
        return rc;
    }
    *out = d;
    return 0;
}

extern "C" void ts_dicom_free(ts_dicom *d)
{
    delete d;
}

extern "C" char *ts_dicom_get_string(const ts_dicom *d, uint32_t tag, bool allow_empty)
{
    DcmDataset *ds = const_cast<DcmFileFormat &>(d->file).getDataset();
    OFString value;
    DcmTagKey key(static_cast<Uint16>(tag >> 16), static_cast<Uint16>(tag & 0xffff));
    if (ds->findAndGetOFStringArray(key, value).bad())
        return nullptr;
    if (value.empty() && !allow_empty)
        return nullptr;
    char *s = strdup(value.c_str());
    if (!s)
        abort();
    return s;
}

extern "C" const char *ts_dicom_transfer_syntax(const ts_dicom *d)
{
    return d->transfer_syntax.c_str();
}

extern "C" void ts_dicom_identity_clear(ts_dicom_identity *id)
{
    if (!id)
        return;
    free(id->patient_id);
    free(id->study_uid);
    free(id->series_uid);
    free(id->sop_uid);
    free(id->sop_class_uid);
    memset(id, 0, sizeof(*id));
}

extern "C" int ts_dicom_identity_get(const ts_dicom *d, ts_dicom_identity *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    out->patient_id = ts_dicom_get_string(d, TS_TAG_PATIENT_ID, true);
    out->study_uid = ts_dicom_get_string(d, TS_TAG_STUDY_INSTANCE_UID, false);
    out->series_uid = ts_dicom_get_string(d, TS_TAG_SERIES_INSTANCE_UID, false);
    out->sop_uid = ts_dicom_get_string(d, TS_TAG_SOP_INSTANCE_UID, false);
    out->sop_class_uid = ts_dicom_get_string(d, TS_TAG_SOP_CLASS_UID, true);
    const char *missing = !out->study_uid    ? "StudyInstanceUID (0020,000D)"
                          : !out->series_uid ? "SeriesInstanceUID (0020,000E)"
                          : !out->sop_uid    ? "SOPInstanceUID (0008,0018)"
                                             : nullptr;
    if (missing) {
        ts_dicom_identity_clear(out);
        return ts_err_set(err, TS_EDICOM, "the dataset has no %s", missing);
    }
    if (!out->patient_id) {
        out->patient_id = strdup("");
        if (!out->patient_id)
            abort();
    }
    if (!out->sop_class_uid) {
        out->sop_class_uid = strdup("");
        if (!out->sop_class_uid)
            abort();
    }
    ts_ids_compute(out->patient_id, out->study_uid, out->series_uid, out->sop_uid, &out->ids);
    return 0;
}
