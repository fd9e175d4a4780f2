// JPEG 2000 over OpenJPEG as a dcmtk codec (see codecs_j2k.hh). Modelled on
// dcmtk's own dcmjpls codec: whole-image decode, per-frame decode, reversible
// encode with one fragment per frame and a basic offset table.
#include "codecs_j2k.hh"

#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcswap.h>
#include <dcmtk/dcmdata/dcvrpobw.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <openjpeg.h>

#include <cstring>
#include <vector>

namespace ts_j2k
{

namespace
{

makeOFConditionConst(C_J2K_BAD_IMAGE, OFM_dcmdata, 0x7f01, OF_error,
                     "JPEG 2000: unsupported or inconsistent image attributes");
const OFCondition J2K_BAD_IMAGE(C_J2K_BAD_IMAGE);
makeOFConditionConst(C_J2K_DECODE_FAILED, OFM_dcmdata, 0x7f02, OF_error,
                     "JPEG 2000: the code stream does not decode");
const OFCondition J2K_DECODE_FAILED(C_J2K_DECODE_FAILED);
makeOFConditionConst(C_J2K_MISMATCH, OFM_dcmdata, 0x7f03, OF_error,
                     "JPEG 2000: the decoded image does not match the data set");
const OFCondition J2K_MISMATCH(C_J2K_MISMATCH);
makeOFConditionConst(C_J2K_ENCODE_FAILED, OFM_dcmdata, 0x7f04, OF_error,
                     "JPEG 2000: encoding failed");
const OFCondition J2K_ENCODE_FAILED(C_J2K_ENCODE_FAILED);
makeOFConditionConst(C_J2K_NO_FRAME, OFM_dcmdata, 0x7f05, OF_error,
                     "JPEG 2000: frame not found in the pixel sequence");
const OFCondition J2K_NO_FRAME(C_J2K_NO_FRAME);

// The Image Pixel module attributes a codec needs.
struct Info {
    Uint16 rows = 0, cols = 0, spp = 0, bits_allocated = 0, bits_stored = 0, high_bit = 0;
    Uint16 pixel_rep = 0, planar = 0;
    Uint32 frames = 1;
    OFString photometric;

    size_t frame_size() const
    {
        return size_t(rows) * cols * spp * (bits_allocated / 8);
    }
};

OFCondition read_info(DcmItem *ds, Info &i)
{
    if (ds->findAndGetUint16(DCM_Rows, i.rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, i.cols).bad() ||
        ds->findAndGetUint16(DCM_SamplesPerPixel, i.spp).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, i.bits_allocated).bad() ||
        ds->findAndGetUint16(DCM_BitsStored, i.bits_stored).bad() ||
        ds->findAndGetUint16(DCM_PixelRepresentation, i.pixel_rep).bad())
        return J2K_BAD_IMAGE;
    if (ds->findAndGetUint16(DCM_HighBit, i.high_bit).bad())
        i.high_bit = Uint16(i.bits_stored - 1);
    (void)ds->findAndGetUint16(DCM_PlanarConfiguration, i.planar);
    (void)ds->findAndGetOFString(DCM_PhotometricInterpretation, i.photometric);
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
        frames = 1;
    i.frames = Uint32(frames);
    if (i.rows == 0 || i.cols == 0 || (i.spp != 1 && i.spp != 3) ||
        (i.bits_allocated != 8 && i.bits_allocated != 16) || i.bits_stored == 0 ||
        i.bits_stored > i.bits_allocated)
        return J2K_BAD_IMAGE;
    return EC_Normal;
}

// The item (data set) that holds the pixel data element on top of the stack.
DcmItem *owning_item(const DcmStack &objStack)
{
    DcmStack st(objStack);
    (void)st.pop();
    DcmObject *o = st.pop();
    if (!o || (o->ident() != EVR_dataset && o->ident() != EVR_item))
        return nullptr;
    return static_cast<DcmItem *>(o);
}

// The colour model after decoding: OpenJPEG undoes the multi-component
// transform, so YBR_ICT/YBR_RCT come out as RGB (PS3.5 8.2.4).
OFString decoded_color_model(const OFString &photometric)
{
    if (photometric == "YBR_ICT" || photometric == "YBR_RCT")
        return "RGB";
    return photometric;
}

bool ends_with_eoc(const Uint8 *p, Uint32 n)
{
    // EOC is FF D9; an odd-length stream was padded with one zero byte.
    if (n >= 3 && p[n - 1] == 0 && p[n - 3] == 0xff && p[n - 2] == 0xd9)
        return true;
    return n >= 2 && p[n - 2] == 0xff && p[n - 1] == 0xd9;
}

OFCondition fragment(DcmPixelSequence *seq, Uint32 idx, Uint8 *&p, Uint32 &n)
{
    DcmPixelItem *item = nullptr;
    OFCondition c = seq->getItem(item, idx);
    if (c.bad() || !item)
        return J2K_NO_FRAME;
    n = item->getLength();
    p = nullptr;
    if (n == 0)
        return EC_Normal;
    c = item->getUint8Array(p);
    return c.bad() || !p ? J2K_NO_FRAME : EC_Normal;
}

// The code stream of one frame, from startFragment; startFragment then
// points at the next frame's first fragment. Item 0 is the offset table.
OFCondition frame_stream(DcmPixelSequence *seq, Uint32 frames, Uint32 frameNo,
                         Uint32 &startFragment, std::vector<Uint8> &out)
{
    Uint32 items = Uint32(seq->card());
    if (items < 2)
        return J2K_NO_FRAME;
    if (startFragment == 0 || startFragment >= items) {
        if (DcmCodec::determineStartFragment(frameNo, Sint32(frames), seq, startFragment).bad()) {
            // No usable offset table: count frames by their end-of-codestream markers.
            Uint32 idx = 1;
            for (Uint32 f = 0; f < frameNo && idx < items; idx++) {
                Uint8 *p;
                Uint32 n;
                if (fragment(seq, idx, p, n).bad())
                    return J2K_NO_FRAME;
                if (ends_with_eoc(p, n))
                    f++;
            }
            startFragment = idx;
        }
    }
    out.clear();
    Uint32 idx = startFragment;
    for (; idx < items; idx++) {
        Uint8 *p;
        Uint32 n;
        if (fragment(seq, idx, p, n).bad())
            return J2K_NO_FRAME;
        out.insert(out.end(), p, p + n);
        // One frame: all fragments are its. One fragment per frame: just this one.
        if (frames == 1)
            continue;
        if (items - 1 == frames || ends_with_eoc(p, n)) {
            idx++;
            break;
        }
    }
    startFragment = idx;
    return out.empty() ? J2K_NO_FRAME : EC_Normal;
}

struct MemIn {
    const Uint8 *data;
    OPJ_SIZE_T size, pos;
};

OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T n, void *u)
{
    MemIn *m = static_cast<MemIn *>(u);
    if (m->pos >= m->size)
        return OPJ_SIZE_T(-1);
    if (n > m->size - m->pos)
        n = m->size - m->pos;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return n;
}

OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *u)
{
    MemIn *m = static_cast<MemIn *>(u);
    if (n < 0) {
        if (OPJ_SIZE_T(-n) > m->pos)
            return -1;
    } else if (OPJ_SIZE_T(n) > m->size - m->pos) {
        n = OPJ_OFF_T(m->size - m->pos);
    }
    m->pos = OPJ_SIZE_T(OPJ_OFF_T(m->pos) + n);
    return n;
}

OPJ_BOOL mem_seek(OPJ_OFF_T n, void *u)
{
    MemIn *m = static_cast<MemIn *>(u);
    if (n < 0 || OPJ_SIZE_T(n) > m->size)
        return OPJ_FALSE;
    m->pos = OPJ_SIZE_T(n);
    return OPJ_TRUE;
}

struct MemOut {
    std::vector<Uint8> data;
    size_t pos = 0;
};

OPJ_SIZE_T out_write(void *buf, OPJ_SIZE_T n, void *u)
{
    MemOut *m = static_cast<MemOut *>(u);
    if (m->pos + n > m->data.size())
        m->data.resize(m->pos + n);
    memcpy(m->data.data() + m->pos, buf, n);
    m->pos += n;
    return n;
}

OPJ_OFF_T out_skip(OPJ_OFF_T n, void *u)
{
    MemOut *m = static_cast<MemOut *>(u);
    if (n < 0 && OPJ_SIZE_T(-n) > m->pos)
        return -1;
    m->pos = size_t(OPJ_OFF_T(m->pos) + n);
    if (m->pos > m->data.size())
        m->data.resize(m->pos);
    return n;
}

OPJ_BOOL out_seek(OPJ_OFF_T n, void *u)
{
    MemOut *m = static_cast<MemOut *>(u);
    if (n < 0)
        return OPJ_FALSE;
    m->pos = size_t(n);
    if (m->pos > m->data.size())
        m->data.resize(m->pos);
    return OPJ_TRUE;
}

// OpenJPEG reports through callbacks; the condition we return says enough.
void opj_quiet(const char *, void *) {}

struct Decoded {
    opj_codec_t *codec = nullptr;
    opj_stream_t *stream = nullptr;
    opj_image_t *image = nullptr;
    ~Decoded()
    {
        if (image)
            opj_image_destroy(image);
        if (stream)
            opj_stream_destroy(stream);
        if (codec)
            opj_destroy_codec(codec);
    }
};

// Decodes one code stream (raw J2K, or a JP2 file as some writers wrap it)
// into `out`: interleaved samples, bytes for 8-bit data and native 16-bit
// words otherwise, as dcmtk's codecs deliver frames.
OFCondition decode_stream(const std::vector<Uint8> &in, const Info &info, Uint8 *out)
{
    static const Uint8 jp2_sig[] = {0, 0, 0, 0x0c, 'j', 'P', ' ', ' '};
    bool jp2 = in.size() >= sizeof jp2_sig && memcmp(in.data(), jp2_sig, sizeof jp2_sig) == 0;
    MemIn mem = {in.data(), in.size(), 0};
    Decoded d;
    d.codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    d.stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    if (!d.codec || !d.stream)
        return EC_MemoryExhausted;
    opj_set_error_handler(d.codec, opj_quiet, nullptr);
    opj_set_warning_handler(d.codec, opj_quiet, nullptr);
    opj_set_info_handler(d.codec, opj_quiet, nullptr);
    opj_stream_set_user_data(d.stream, &mem, nullptr);
    opj_stream_set_user_data_length(d.stream, in.size());
    opj_stream_set_read_function(d.stream, mem_read);
    opj_stream_set_skip_function(d.stream, mem_skip);
    opj_stream_set_seek_function(d.stream, mem_seek);
    opj_dparameters_t p;
    opj_set_default_decoder_parameters(&p);
    if (!opj_setup_decoder(d.codec, &p) || !opj_read_header(d.stream, d.codec, &d.image) ||
        !d.image || !opj_decode(d.codec, d.stream, d.image) ||
        !opj_end_decompress(d.codec, d.stream))
        return J2K_DECODE_FAILED;
    const opj_image_t *img = d.image;
    if (img->numcomps != info.spp)
        return J2K_MISMATCH;
    for (Uint16 c = 0; c < info.spp; c++) {
        const opj_image_comp_t &comp = img->comps[c];
        if (comp.w != info.cols || comp.h != info.rows || comp.dx != 1 || comp.dy != 1 ||
            !comp.data || comp.prec > info.bits_allocated)
            return J2K_MISMATCH;
    }
    size_t n = size_t(info.rows) * info.cols;
    if (info.bits_allocated == 8) {
        for (Uint16 c = 0; c < info.spp; c++) {
            const OPJ_INT32 *src = img->comps[c].data;
            for (size_t i = 0; i < n; i++)
                out[i * info.spp + c] = Uint8(src[i]);
        }
    } else {
        Uint16 *out16 = reinterpret_cast<Uint16 *>(out);
        for (Uint16 c = 0; c < info.spp; c++) {
            const OPJ_INT32 *src = img->comps[c].data;
            for (size_t i = 0; i < n; i++)
                out16[i * info.spp + c] = Uint16(src[i]);
        }
    }
    return EC_Normal;
}

// One native frame as a reversible (lossless) J2K code stream.
OFCondition encode_frame(const Uint8 *frame, const Info &info, std::vector<Uint8> &out)
{
    opj_image_cmptparm_t parm[3];
    memset(parm, 0, sizeof parm);
    for (Uint16 c = 0; c < info.spp; c++) {
        parm[c].dx = parm[c].dy = 1;
        parm[c].w = info.cols;
        parm[c].h = info.rows;
        parm[c].prec = info.bits_stored;
        parm[c].sgnd = info.pixel_rep ? 1 : 0;
    }
    Decoded d; // (owns the encoder's codec, stream and image the same way)
    d.image = opj_image_create(info.spp, parm, info.spp == 1 ? OPJ_CLRSPC_GRAY : OPJ_CLRSPC_SRGB);
    if (!d.image)
        return EC_MemoryExhausted;
    d.image->x0 = d.image->y0 = 0;
    d.image->x1 = info.cols;
    d.image->y1 = info.rows;

    size_t n = size_t(info.rows) * info.cols;
    unsigned shift = 32u - info.bits_stored;
    Uint32 mask = info.bits_stored >= 32 ? 0xffffffffu : (1u << info.bits_stored) - 1u;
    // 8-bit samples sit in OW words in local byte order: on a big-endian host
    // byte i of the little-endian stream is byte i^1 in memory.
    size_t swap8 = gLocalByteOrder == EBO_BigEndian ? 1 : 0;
    for (Uint16 c = 0; c < info.spp; c++) {
        OPJ_INT32 *dst = d.image->comps[c].data;
        for (size_t i = 0; i < n; i++) {
            size_t at = info.planar ? size_t(c) * n + i : i * info.spp + c;
            Uint32 raw = info.bits_allocated == 8 ? frame[at ^ swap8]
                                                  : reinterpret_cast<const Uint16 *>(frame)[at];
            raw >>= (info.high_bit + 1u - info.bits_stored);
            if (info.pixel_rep)
                dst[i] = OPJ_INT32(Sint32(raw << shift) >> shift); // sign-extend
            else
                dst[i] = OPJ_INT32(raw & mask);
        }
    }

    opj_cparameters_t p;
    opj_set_default_encoder_parameters(&p);
    p.tcp_numlayers = 1;
    p.tcp_rates[0] = 0; // lossless
    p.cp_disto_alloc = 1;
    p.irreversible = 0;
    p.tcp_mct = 0; // RGB stays RGB: no YBR_RCT to explain to readers
    // Each resolution level halves the image; a small image allows fewer.
    Uint16 small = info.rows < info.cols ? info.rows : info.cols;
    while (p.numresolution > 1 && (small >> (p.numresolution - 1)) == 0)
        p.numresolution--;

    MemOut mem;
    d.codec = opj_create_compress(OPJ_CODEC_J2K);
    d.stream = opj_stream_create(1u << 20, OPJ_FALSE);
    if (!d.codec || !d.stream)
        return EC_MemoryExhausted;
    opj_set_error_handler(d.codec, opj_quiet, nullptr);
    opj_set_warning_handler(d.codec, opj_quiet, nullptr);
    opj_set_info_handler(d.codec, opj_quiet, nullptr);
    opj_stream_set_user_data(d.stream, &mem, nullptr);
    opj_stream_set_write_function(d.stream, out_write);
    opj_stream_set_skip_function(d.stream, out_skip);
    opj_stream_set_seek_function(d.stream, out_seek);
    if (!opj_setup_encoder(d.codec, &p, d.image) ||
        !opj_start_compress(d.codec, d.image, d.stream) || !opj_encode(d.codec, d.stream) ||
        !opj_end_compress(d.codec, d.stream))
        return J2K_ENCODE_FAILED;
    out.swap(mem.data);
    if (out.size() & 1)
        out.push_back(0);
    return EC_Normal;
}

} // namespace

OFCondition Codec::decode(const DcmRepresentationParameter *, DcmPixelSequence *pixSeq,
                          DcmPolymorphOBOW &uncompressedPixelData, const DcmCodecParameter *,
                          const DcmStack &objStack, OFBool &removeOldRep) const
{
    DcmItem *ds = owning_item(objStack);
    if (!ds || !pixSeq)
        return EC_InvalidTag;
    Info info;
    OFCondition c = read_info(ds, info);
    if (c.bad())
        return c;
    size_t frame_size = info.frame_size();
    unsigned long long total = (unsigned long long)frame_size * info.frames;
    if (total > 0xfffffffcull)
        return EC_ElemLengthExceeds32BitField;
    Uint32 padded = Uint32(total + (total & 1));
    Uint16 *words = nullptr;
    c = uncompressedPixelData.createUint16Array(padded / 2, words);
    if (c.bad())
        return c;
    Uint8 *bytes = reinterpret_cast<Uint8 *>(words);
    if (padded != total)
        bytes[padded - 1] = 0;
    std::vector<Uint8> stream;
    Uint32 start = 0;
    for (Uint32 f = 0; f < info.frames; f++) {
        c = frame_stream(pixSeq, info.frames, f, start, stream);
        if (c.good())
            c = decode_stream(stream, info, bytes + size_t(f) * frame_size);
        if (c.bad())
            return c;
    }
    // Bytes were written as a little-endian stream into words.
    if (info.bits_allocated == 8) {
        c = swapIfNecessary(gLocalByteOrder, EBO_LittleEndian, words, padded, sizeof(Uint16));
        if (c.bad())
            return c;
    }
    OFString model = decoded_color_model(info.photometric);
    if (model != info.photometric) {
        c = ds->putAndInsertString(DCM_PhotometricInterpretation, model.c_str());
        removeOldRep = OFTrue; // the J2K stream no longer matches the data set
    }
    if (c.good() && info.spp > 1 && info.planar != 0) {
        c = ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
        removeOldRep = OFTrue;
    }
    return c;
}

OFCondition Codec::decodeFrame(const DcmRepresentationParameter *, DcmPixelSequence *fromPixSeq,
                               const DcmCodecParameter *, DcmItem *dataset, Uint32 frameNo,
                               Uint32 &startFragment, void *buffer, Uint32 bufSize,
                               OFString &decompressedColorModel) const
{
    if (!dataset || !fromPixSeq || !buffer)
        return EC_IllegalCall;
    Info info;
    OFCondition c = read_info(dataset, info);
    if (c.bad())
        return c;
    if (frameNo >= info.frames)
        return J2K_NO_FRAME;
    if (bufSize < info.frame_size())
        return EC_IllegalParameter;
    std::vector<Uint8> stream;
    c = frame_stream(fromPixSeq, info.frames, frameNo, startFragment, stream);
    if (c.good())
        c = decode_stream(stream, info, static_cast<Uint8 *>(buffer));
    if (c.good())
        decompressedColorModel = decoded_color_model(info.photometric);
    return c;
}

OFCondition Codec::encode(const Uint16 *pixelData, const Uint32 length,
                          const DcmRepresentationParameter *, DcmPixelSequence *&pixSeq,
                          const DcmCodecParameter *, DcmStack &objStack, OFBool &removeOldRep) const
{
    DcmItem *ds = owning_item(objStack);
    if (!ds || !pixelData)
        return EC_InvalidTag;
    Info info;
    OFCondition c = read_info(ds, info);
    if (c.bad())
        return c;
    // Native 4:2:2 data is subsampled in its own layout; the high bit must
    // be where BitsStored puts it.
    if (info.photometric.compare(0, 12, "YBR_FULL_422") == 0 ||
        info.photometric.compare(0, 15, "YBR_PARTIAL_422") == 0 ||
        info.high_bit >= info.bits_allocated || info.high_bit + 1 < info.bits_stored)
        return EC_CannotChangeRepresentation;
    size_t frame_size = info.frame_size();
    if ((unsigned long long)frame_size * info.frames > length)
        return EC_CannotChangeRepresentation;

    DcmPixelSequence *seq = new DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
    DcmPixelItem *offsets = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
    seq->insert(offsets);
    DcmOffsetList offset_list;
    std::vector<Uint8> stream;
    const Uint8 *bytes = reinterpret_cast<const Uint8 *>(pixelData);
    for (Uint32 f = 0; f < info.frames && c.good(); f++) {
        c = encode_frame(bytes + size_t(f) * frame_size, info, stream);
        if (c.good())
            c = seq->storeCompressedFrame(offset_list, stream.data(), Uint32(stream.size()), 0);
    }
    if (c.good())
        c = offsets->createOffsetTable(offset_list);
    if (c.bad()) {
        delete seq;
        return c;
    }
    pixSeq = seq;
    // Frames are interleaved again once decoded: say so now.
    if (info.spp > 1 && info.planar != 0) {
        c = ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
        removeOldRep = OFTrue;
    }
    return c;
}

OFCondition Codec::encode(const E_TransferSyntax, const DcmRepresentationParameter *,
                          DcmPixelSequence *, const DcmRepresentationParameter *,
                          DcmPixelSequence *&, const DcmCodecParameter *, DcmStack &,
                          OFBool &) const
{
    // Compressed to compressed goes through native data (dcmtk decodes first).
    return EC_IllegalCall;
}

OFBool Codec::canChangeCoding(const E_TransferSyntax oldRepType,
                              const E_TransferSyntax newRepType) const
{
    bool old_j2k = oldRepType == EXS_JPEG2000LosslessOnly || oldRepType == EXS_JPEG2000;
    bool new_j2k = newRepType == EXS_JPEG2000LosslessOnly || newRepType == EXS_JPEG2000;
    if (old_j2k && DcmXfer(newRepType).isNotEncapsulated())
        return OFTrue;
    return new_j2k && DcmXfer(oldRepType).isNotEncapsulated();
}

OFCondition Codec::determineDecompressedColorModel(const DcmRepresentationParameter *,
                                                   DcmPixelSequence *, const DcmCodecParameter *,
                                                   DcmItem *dataset,
                                                   OFString &decompressedColorModel) const
{
    if (!dataset)
        return EC_IllegalParameter;
    OFString photometric;
    OFCondition c = dataset->findAndGetOFString(DCM_PhotometricInterpretation, photometric);
    if (c.good())
        decompressedColorModel = decoded_color_model(photometric);
    return c;
}

} // namespace ts_j2k
