// JPEG 2000 (1.2.840.10008.1.2.4.90/.91) as a dcmtk codec over OpenJPEG:
// dcmtk 3.6.7 has none. Private to lib/dicom (codecs.cc registers it).
#ifndef TS_DICOM_CODECS_J2K_HH
#define TS_DICOM_CODECS_J2K_HH

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcpixel.h>

namespace ts_j2k
{

class Parameter : public DcmCodecParameter
{
  public:
    DcmCodecParameter *clone() const override
    {
        return new Parameter(*this);
    }
    const char *className() const override
    {
        return "ts_j2k::Parameter";
    }
};

class RepresentationParameter : public DcmRepresentationParameter
{
  public:
    DcmRepresentationParameter *clone() const override
    {
        return new RepresentationParameter(*this);
    }
    const char *className() const override
    {
        return "ts_j2k::RepresentationParameter";
    }
    OFBool operator==(const DcmRepresentationParameter &arg) const override
    {
        return strcmp(arg.className(), className()) == 0;
    }
};

// Decodes both syntaxes (reversible and irreversible) to native pixel data and
// encodes native pixel data reversibly (lossless) to either of them.
class Codec : public DcmCodec
{
  public:
    OFCondition decode(const DcmRepresentationParameter *fromRepParam, DcmPixelSequence *pixSeq,
                       DcmPolymorphOBOW &uncompressedPixelData, const DcmCodecParameter *cp,
                       const DcmStack &objStack, OFBool &removeOldRep) const override;
    OFCondition decodeFrame(const DcmRepresentationParameter *fromParam,
                            DcmPixelSequence *fromPixSeq, const DcmCodecParameter *cp,
                            DcmItem *dataset, Uint32 frameNo, Uint32 &startFragment, void *buffer,
                            Uint32 bufSize, OFString &decompressedColorModel) const override;
    OFCondition encode(const Uint16 *pixelData, const Uint32 length,
                       const DcmRepresentationParameter *toRepParam, DcmPixelSequence *&pixSeq,
                       const DcmCodecParameter *cp, DcmStack &objStack,
                       OFBool &removeOldRep) const override;
    OFCondition encode(const E_TransferSyntax fromRepType,
                       const DcmRepresentationParameter *fromRepParam, DcmPixelSequence *fromPixSeq,
                       const DcmRepresentationParameter *toRepParam, DcmPixelSequence *&toPixSeq,
                       const DcmCodecParameter *cp, DcmStack &objStack,
                       OFBool &removeOldRep) const override;
    OFBool canChangeCoding(const E_TransferSyntax oldRepType,
                           const E_TransferSyntax newRepType) const override;
    OFCondition determineDecompressedColorModel(const DcmRepresentationParameter *fromParam,
                                                DcmPixelSequence *fromPixSeq,
                                                const DcmCodecParameter *cp, DcmItem *dataset,
                                                OFString &decompressedColorModel) const override;
};

} // namespace ts_j2k

#endif
