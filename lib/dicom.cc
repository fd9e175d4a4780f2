// Parsing and tag access over dcmtk (see dicom.h).
#include "dicom_internal.hh"

#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>

#include "log.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iconv.h>
#include <new>
#include <sys/mman.h>
#include <unistd.h>
#include <string>

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
    return 0;
}

// Japanese ISO 2022 (ISO 2022 IR 87), which dcmtk's iconv backend refuses:
// decode the text VRs with glibc's ISO-2022-JP-2, which handles the escapes.
static void iso2022jp_to_utf8(DcmDataset *ds)
{
    iconv_t cd = iconv_open("UTF-8", "ISO-2022-JP-2");
    if (cd == (iconv_t)-1)
        return;
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmObject *obj = stack.top();
        DcmEVR vr = obj->getVR();
        if (vr != EVR_SH && vr != EVR_LO && vr != EVR_ST && vr != EVR_LT && vr != EVR_UT &&
            vr != EVR_PN && vr != EVR_UC)
            continue;
        DcmElement *el = static_cast<DcmElement *>(obj);
        OFString v;
        if (el->getOFStringArray(v).bad() || v.empty())
            continue;
        iconv(cd, nullptr, nullptr, nullptr, nullptr); // reset the shift state
        std::string out(v.size() * 4 + 16, '\0');
        char *in = const_cast<char *>(v.c_str());
        size_t inleft = v.size(), outleft = out.size();
        char *o = &out[0];
        if (iconv(cd, &in, &inleft, &o, &outleft) != (size_t)-1) {
            out.resize(out.size() - outleft);
            el->putOFStringArray(OFString(out.c_str()));
        }
    }
    iconv_close(cd);
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
        if (ds->convertToUTF8().good())
            ds->putAndInsertOFStringArray(DCM_SpecificCharacterSet, charset);
        else if (charset.find("ISO 2022 IR 87") != OFString_npos)
            iso2022jp_to_utf8(ds);
    }
    return 0;
}

extern "C" int ts_dicom_open_file(const char *path, ts_dicom **out, ts_err *err)
{
    *out = nullptr;
    ts_dicom *d = new ts_dicom();
    OFCondition cond = d->file.loadFile(path, EXS_Unknown, EGL_noChange, LAZY_LOAD_THRESHOLD,
                                        ERM_autoDetect);
    int rc = finish_open(d, cond, err);
    if (rc) {
        delete d;
        return rc;
    }
    *out = d;
    return 0;
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
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ts_dicom *d = new ts_dicom();
    OFCondition cond = d->file.loadFile(path, EXS_Unknown, EGL_noChange, LAZY_LOAD_THRESHOLD,
                                        ERM_autoDetect);
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
