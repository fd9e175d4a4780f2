// Codec registration (see codecs.h).
#include "dicom/codecs.h"
#include "codecs_j2k.hh"

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmjpls/djencode.h>

#include <mutex>

namespace
{
std::once_flag once;
// Registered for the life of the process (dcmtk keeps pointers to them).
ts_j2k::Codec *j2k_codec;
ts_j2k::Parameter *j2k_param;
ts_j2k::RepresentationParameter *j2k_rep;
} // namespace

extern "C" void ts_dicom_codecs_init(void)
{
    std::call_once(once, [] {
        // Decoding never invents a SOP Instance UID: the instance is the same
        // image, only its encoding changes. Lossy *encoding* keeps dcmtk's
        // default (a new UID, as PS3.3 C.7.6.1.1.5 asks of a lossy derivative).
        DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation, EUC_never);
        // pUsePixelValues off: by default dcmjpeg's lossy encoder stretches the
        // image's [min, max] over the full sample range, shifting every stored
        // value (an 8-bit MR came back 15 lower) with no rescale to undo it.
        DJEncoderRegistration::registerCodecs(ECC_lossyYCbCr, EUC_default, OFFalse, 0, 0, 0, OFTrue,
                                              ESS_422, OFTrue, OFFalse, 0, 0, 0.0, 0.0, 0, 0, 0, 0,
                                              OFFalse);
        DJLSDecoderRegistration::registerCodecs(EJLSUC_never);
        // Raw mode, as dcmcjpls does by default: the "cooked" mode hands
        // CharLS sign-extended 12-bit samples and it aborts on an assertion.
        DJLSEncoderRegistration::registerCodecs(0, 0, 0, 0, OFFalse);
        DcmRLEDecoderRegistration::registerCodecs();
        DcmRLEEncoderRegistration::registerCodecs();
        // JPEG 2000: dcmtk 3.6.7 has no codec, OpenJPEG does the work.
        j2k_codec = new ts_j2k::Codec();
        j2k_param = new ts_j2k::Parameter();
        j2k_rep = new ts_j2k::RepresentationParameter();
        (void)DcmCodecList::registerCodec(j2k_codec, j2k_rep, j2k_param);
    });
}
