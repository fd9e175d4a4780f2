// Changing the transfer syntax of a data set (see codecs.h): dcmtk's
// chooseRepresentation() over the codecs codecs.cc registers, with Orthanc's
// rules for lossy targets.
#include "dicom_internal.hh"

#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djrparam.h>

#include "dicom/codecs.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace
{

bool uncompressed(E_TransferSyntax x)
{
    return x == EXS_LittleEndianImplicit || x == EXS_LittleEndianExplicit ||
           x == EXS_BigEndianExplicit || x == EXS_DeflatedLittleEndianExplicit;
}

// What the registered codecs read (dcmjpeg: baseline, extended, spectral
// selection, progressive, lossless; dcmjpls; RLE; ours for JPEG 2000).
bool decodable(E_TransferSyntax x)
{
    switch (x) {
    case EXS_JPEGProcess1:
    case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess6_8:
    case EXS_JPEGProcess10_12:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_JPEGLSLossy:
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_RLELossless:
        return true;
    default:
        return uncompressed(x);
    }
}

// What they write (Orthanc's set for JPEG, plus JPEG 2000 and RLE).
bool encodable(E_TransferSyntax x)
{
    switch (x) {
    case EXS_JPEGProcess1:
    case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_JPEGLSLossy:
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_RLELossless:
        return true;
    default:
        return uncompressed(x);
    }
}

// Lossy as we encode it: our JPEG 2000 encoder is reversible for .91 too.
bool lossy_target(E_TransferSyntax x)
{
    return x == EXS_JPEGProcess1 || x == EXS_JPEGProcess2_4 || x == EXS_JPEGLSLossy;
}

E_TransferSyntax xfer_of(const char *uid)
{
    if (!uid || !*uid)
        return EXS_Unknown;
    DcmXfer x(uid);
    // DcmXfer answers EXS_Unknown for a UID it does not know.
    return strcmp(x.getXferID(), uid) == 0 ? x.getXfer() : EXS_Unknown;
}

} // namespace

extern "C" bool ts_transfer_syntax_known(const char *uid)
{
    return xfer_of(uid) != EXS_Unknown;
}

extern "C" bool ts_transcode_possible(const char *from, const char *to, unsigned flags)
{
    E_TransferSyntax f = xfer_of(from), t = xfer_of(to);
    if (f == EXS_Unknown || t == EXS_Unknown)
        return false;
    if (f == t)
        return true;
    if (lossy_target(t) && !(flags & TS_TRANSCODE_ALLOW_LOSSY))
        return false;
    return decodable(f) && encodable(t);
}

namespace
{

// The rules, before any pixel is touched: 0, or why not (see codecs.h).
int check(DcmDataset *ds, E_TransferSyntax from, E_TransferSyntax to, unsigned flags,
          bool &has_pixels, ts_err *err)
{
    DcmXfer fx(from), tx(to);
    // Without pixel data only the encoding of the elements changes (Orthanc
    // writes an RT plan "in" JPEG lossless too); any syntax will do.
    DcmElement *pixels = nullptr;
    has_pixels =
        ds->findAndGetElement(DCM_PixelData, pixels).good() && pixels && pixels->getLength() > 0;
    if (!has_pixels)
        return 0;
    if (!decodable(from))
        return ts_err_set(err, TS_EUNSUPPORTED, "no decoder for transfer syntax %s (%s)",
                          fx.getXferID(), fx.getXferName());
    if (!encodable(to))
        return ts_err_set(err, TS_EUNSUPPORTED, "no encoder for transfer syntax %s (%s)",
                          tx.getXferID(), tx.getXferName());
    if (lossy_target(to) && !(flags & TS_TRANSCODE_ALLOW_LOSSY))
        return ts_err_set(err, TS_EUNSUPPORTED,
                          "transcoding to %s is lossy and would need a new SOP Instance UID",
                          tx.getXferID());
    Uint16 bits = 0;
    bool has_bits = ds->findAndGetUint16(DCM_BitsStored, bits).good();
    // Orthanc's limits: dcmtk would otherwise cut the samples down.
    if (to == EXS_JPEGProcess1 && has_bits && bits != 8)
        return ts_err_set(err, TS_EUNSUPPORTED,
                          "cannot transcode to %s if BitsStored != 8 (it is %u)", tx.getXferID(),
                          bits);
    if (to == EXS_JPEGProcess2_4 && has_bits && bits > 12)
        return ts_err_set(err, TS_EUNSUPPORTED,
                          "cannot transcode to %s if BitsStored > 12 (it is %u)", tx.getXferID(),
                          bits);
    return 0;
}

} // namespace

int ts_transcode_dataset(DcmDataset *ds, E_TransferSyntax from, const char *to_uid, unsigned flags,
                         ts_err *err)
{
    E_TransferSyntax to = xfer_of(to_uid);
    if (to == EXS_Unknown)
        return ts_err_set(err, TS_EINVAL, "unknown transfer syntax UID: %s", to_uid ? to_uid : "");
    if (from == EXS_Unknown)
        from = ds->getOriginalXfer();
    if (from == to)
        return 0;
    DcmXfer fx(from), tx(to);
    bool has_pixels = false;
    int rc = check(ds, from, to, flags, has_pixels, err);
    if (rc)
        return rc;
    OFCondition c = EC_Normal;
    // Compressed to other compressed goes through native pixels.
    if (has_pixels && fx.isEncapsulated() && tx.isEncapsulated())
        c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    DJ_RPLossy jpeg_lossy(90); // Orthanc's default quality
    DJLSRepresentationParameter jls_near(2, OFFalse);
    const DcmRepresentationParameter *param = nullptr;
    if (to == EXS_JPEGProcess1 || to == EXS_JPEGProcess2_4)
        param = &jpeg_lossy;
    else if (to == EXS_JPEGLSLossy)
        param = &jls_near;
    if (c.good())
        c = ds->chooseRepresentation(to, param);
    if (c.bad() || !ds->canWriteXfer(to, from))
        return ts_err_set(err, TS_EDICOM, "cannot transcode from %s to %s: %s", fx.getXferID(),
                          tx.getXferID(),
                          c.bad() ? c.text() : "the pixel data cannot be written in it");
    return 0;
}

namespace
{

// Loads without converting character sets (unlike ts_dicom_open_file: the
// bytes of the text elements must stay as they are).
int load(const char *path, DcmFileFormat &ff, ts_err *err)
{
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (c.bad()) {
        if (access(path, R_OK) != 0)
            return ts_err_set(err, TS_EIO, "cannot read the file: %s", strerror(errno));
        return ts_err_set(err, TS_EDICOM, "not a readable DICOM file: %s", c.text());
    }
    if (!ff.getDataset() || ff.getDataset()->card() == 0)
        return ts_err_set(err, TS_EDICOM, "no DICOM dataset in the input");
    return 0;
}

// The syntax the file says it is in: its meta header's, else what was read.
E_TransferSyntax stored_xfer(DcmFileFormat &ff)
{
    OFString uid;
    if (ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, uid).good() && !uid.empty()) {
        E_TransferSyntax x = xfer_of(uid.c_str());
        if (x != EXS_Unknown)
            return x;
    }
    return ff.getDataset()->getOriginalXfer();
}

// Writes ff in `to` through a memfd (deflate makes the size unknowable
// beforehand) into a malloc'd buffer.
int save(DcmFileFormat &ff, E_TransferSyntax to, void **out, size_t *out_len, ts_err *err)
{
    int fd = ts_memfd_from("", 0, err);
    if (fd < 0)
        return fd;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    OFCondition c =
        ff.saveFile(path, to, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0, EWM_updateMeta);
    if (c.bad()) {
        close(fd);
        return ts_err_set(err, TS_EDICOM, "cannot write the data set in %s: %s",
                          DcmXfer(to).getXferID(), c.text());
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ts_err_set(err, TS_EIO, "fstat: %s", strerror(e));
    }
    size_t n = size_t(st.st_size);
    char *buf = static_cast<char *>(malloc(n ? n : 1));
    if (!buf)
        abort();
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, off_t(got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return ts_err_set(err, TS_EIO, "memfd read: %s", r < 0 ? strerror(e) : "short");
        }
        got += size_t(r);
    }
    close(fd);
    *out = buf;
    *out_len = n;
    return 0;
}

int transcode_loaded(DcmFileFormat &ff, const char *to_uid, unsigned flags, void **out,
                     size_t *out_len, ts_err *err)
{
    E_TransferSyntax to = xfer_of(to_uid);
    if (to == EXS_Unknown)
        return ts_err_set(err, TS_EINVAL, "unknown transfer syntax UID: %s", to_uid ? to_uid : "");
    E_TransferSyntax from = stored_xfer(ff);
    if (from == to)
        return 0; // the input is the answer: *out stays NULL
    int rc = ts_transcode_dataset(ff.getDataset(), from, to_uid, flags, err);
    if (rc)
        return rc;
    return save(ff, to, out, out_len, err);
}

} // namespace

extern "C" int ts_dicom_transcode_file(const char *path, const char *to_uid, unsigned flags,
                                       void **out, size_t *out_len, ts_err *err)
{
    *out = nullptr;
    *out_len = 0;
    if (!ts_transfer_syntax_known(to_uid))
        return ts_err_set(err, TS_EINVAL, "unknown transfer syntax UID: %s", to_uid ? to_uid : "");
    DcmFileFormat ff;
    int rc = load(path, ff, err);
    return rc ? rc : transcode_loaded(ff, to_uid, flags, out, out_len, err);
}

extern "C" int ts_dicom_transcode_check(const char *path, const char *to_uid, unsigned flags,
                                        ts_err *err)
{
    E_TransferSyntax to = xfer_of(to_uid);
    if (to == EXS_Unknown)
        return ts_err_set(err, TS_EINVAL, "unknown transfer syntax UID: %s", to_uid ? to_uid : "");
    DcmFileFormat ff;
    int rc = load(path, ff, err); // (the pixel data stay on disk)
    if (rc)
        return rc;
    E_TransferSyntax from = stored_xfer(ff);
    bool has_pixels = false;
    return from == to ? 0 : check(ff.getDataset(), from, to, flags, has_pixels, err);
}

extern "C" int ts_dicom_transcode_buffer(const void *data, size_t len, const char *to_uid,
                                         unsigned flags, void **out, size_t *out_len, ts_err *err)
{
    *out = nullptr;
    *out_len = 0;
    if (!ts_transfer_syntax_known(to_uid))
        return ts_err_set(err, TS_EINVAL, "unknown transfer syntax UID: %s", to_uid ? to_uid : "");
    if (len < 8)
        return ts_err_set(err, TS_EDICOM, "input of %zu bytes is not DICOM", len);
    // Read through a memfd for the same reason as ts_dicom_open_buffer.
    int fd = ts_memfd_from(data, len, err);
    if (fd < 0)
        return fd;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    DcmFileFormat ff;
    int rc = load(path, ff, err);
    // (the memfd stays open while dcmtk may still read elements left on "disk")
    if (rc == 0)
        rc = transcode_loaded(ff, to_uid, flags, out, out_len, err);
    close(fd);
    return rc;
}
