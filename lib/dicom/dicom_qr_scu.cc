// C-FIND and C-MOVE as an SCU over DcmSCU (see dicom_qr_scu.h). Queries and
// identifiers are built as Orthanc 1.10.1's DicomControlUserConnection builds
// them, and failures are worded as its DicomAssociation words them, because
// clients compare Details with what Orthanc says.
#include "dicom_internal.hh"
#include "dicom_net.hh"

#include "dicom/dicom_qr_scu.h"

#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scu.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "base/log.h"

namespace
{

const char *aet_of(const ts_dicom_peer *peer)
{
    return peer->aet ? peer->aet : "";
}

// Orthanc's DicomAssociation::CheckCondition: a multi-line dcmtk text on one line.
std::string one_line(const char *text)
{
    std::string s(text ? text : ""), info;
    bool multiline = false;
    for (char c : s) {
        if (c == '\r')
            continue;
        if (c == '\n') {
            info += multiline ? "; " : " (";
            multiline = true;
        } else {
            info.push_back(c);
        }
    }
    if (multiline)
        info += ")";
    return info;
}

int association_error(ts_err *err, const ts_dicom_peer *peer, const char *command,
                      const OFCondition &cond)
{
    int code = (cond == DUL_READTIMEOUT || cond == DIMSE_NODATAAVAILABLE) ? TS_ETIMEOUT : TS_EIO;
    if (peer->tls && tsnet::is_tls_failure(cond))
        return ts_err_set(err, code,
                          "DicomAssociation - %s to AET \"%s\": " TSNET_TLS_FAILED ": %s", command,
                          aet_of(peer), one_line(cond.text()).c_str());
    return ts_err_set(err, code, "DicomAssociation - %s to AET \"%s\": %s", command, aet_of(peer),
                      one_line(cond.text()).c_str());
}

const char *const MEDIA_SOP_INSTANCE[] = {"0008,0018", "0002,0003"};
const char *const MEDIA_SOP_CLASS[] = {"0008,0016", "0002,0002"};

class QrScu : private tsnet::ScuLayerOwner, public DcmSCU
{
  public:
    // dcmtk gets one PDV per PDU from the peer (dicom_net.hh says why), over
    // DICOM TLS when the peer is marked so. nullptr and err naming what is missing.
    DcmTransportLayer *makeLayer(const ts_dicom_peer *peer, ts_err *err)
    {
        scu_layer_.reset(tsnet::scu_layer(peer, err));
        return scu_layer_.get();
    }

    OFCondition useLayer()
    {
        return useSecureConnection(scu_layer_.get());
    }

    QrScu(const ts_dicom_peer *peer, json_t *answers, size_t max_answers, const char *level)
        : answers_(answers), max_answers_(max_answers), level_(level)
    {
        setAETitle(peer->our_aet && *peer->our_aet ? peer->our_aet : "TESSERA");
        setPeerAETitle(aet_of(peer));
        setPeerHostName(peer->host ? peer->host : "");
        setPeerPort(static_cast<Uint16>(peer->port));
        Uint32 timeout = static_cast<Uint32>(peer->timeout_s > 0 ? peer->timeout_s : 30);
        setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        setDIMSETimeout(timeout);
        setACSETimeout(timeout);
        setConnectionTimeout(static_cast<Sint32>(timeout));
        setProgressNotificationMode(OFFalse);
    }

    Uint16 final_status = 0xFFFF;
    size_t dropped = 0;

  protected:
    OFCondition handleFINDResponse(const T_ASC_PresentationContextID, QRResponse *rsp,
                                   OFBool &wait) override
    {
        final_status = rsp->m_status;
        wait = DICOM_PENDING_STATUS(rsp->m_status) ? OFTrue : OFFalse;
        if (rsp->m_dataset && answers_) {
            if (max_answers_ && json_array_size(answers_) >= max_answers_)
                dropped++;
            else
                json_array_append_new(answers_, answer_of(rsp->m_dataset));
        }
        return EC_Normal;
    }

    OFCondition handleMOVEResponse(const T_ASC_PresentationContextID, RetrieveResponse *rsp,
                                   OFBool &wait) override
    {
        final_status = rsp->m_status;
        wait = DICOM_PENDING_STATUS(rsp->m_status) ? OFTrue : OFFalse;
        return EC_Normal;
    }

  private:
    // One answer as Orthanc keeps it: top-level values in UTF-8, sequences
    // and binary values left out.
    json_t *answer_of(DcmDataset *ds)
    {
        OFString charset;
        bool has_charset = ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good();
        if (has_charset && !charset.empty() && !ts_dataset_to_utf8(ds))
            ts_warn("C-FIND answer in an unsupported character set, values kept as sent",
                    "charset=\"%s\"", charset.c_str());
        std::map<std::string, json_t *> values;
        for (unsigned long i = 0; i < ds->card(); i++) {
            DcmElement *el = ds->getElement(i);
            DcmTagKey key = el->getTag().getXTag();
            if (el->ident() == EVR_SQ || key.getGroup() == 0x0000)
                continue;
            DcmEVR vr = el->getTag().getEVR();
            if (vr == EVR_OB || vr == EVR_OW || vr == EVR_OF || vr == EVR_OD || vr == EVR_OL ||
                vr == EVR_UN || vr == EVR_ox || vr == EVR_px)
                continue;
            char k[10];
            ts_dicom_tag_key(TS_TAG(key.getGroup(), key.getElement()), k);
            OFString v;
            std::string s;
            if (el->getLength() > 0 && el->getOFStringArray(v, OFTrue).good()) {
                s = v.c_str();
                size_t b = s.find_first_not_of(' ');
                size_t e = s.find_last_not_of(' ');
                s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
            }
            values[k] = json_string(s.c_str());
        }
        // Orthanc keeps each answer in its default encoding (Latin-1) and
        // shows that, whatever the peer sent; values here stay in UTF-8
        json_decref(values["0008,0005"]);
        values["0008,0005"] = json_string("ISO_IR 100");
        // Orthanc keeps answers as files whose meta header follows the SOP
        // instance and class UIDs, and shows that header too
        for (const char *const *m : {MEDIA_SOP_INSTANCE, MEDIA_SOP_CLASS})
            if (values.count(m[0]) && json_is_string(values[m[0]])) {
                json_decref(values[m[1]]);
                values[m[1]] = json_copy(values[m[0]]);
            }
        if (!values.count("0008,0052"))
            values["0008,0052"] = json_string(level_);
        json_t *o = json_object();
        for (auto &kv : values)
            json_object_set_new(o, kv.first.c_str(), kv.second);
        return o;
    }

    json_t *answers_;
    size_t max_answers_;
    const char *level_;
};

int open_association(QrScu &scu, const ts_dicom_peer *peer, const char *sop_class, ts_err *err)
{
    OFList<OFString> syntaxes;
    syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
    syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
    scu.addPresentationContext(sop_class, syntaxes);
    OFCondition cond = scu.initNetwork();
    if (cond.good()) {
        ts_err why = {0, ""};
        if (!scu.makeLayer(peer, &why))
            return ts_err_set(err, why.code ? why.code : TS_EINVAL,
                              "DicomAssociation - connecting to AET \"%s\": %s", aet_of(peer),
                              why.msg);
        cond = scu.useLayer();
    }
    if (cond.good())
        cond = scu.negotiateAssociation();
    if (cond.bad())
        return association_error(err, peer, "connecting", cond);
    return 0;
}

const char *dicom_level(ts_level level)
{
    switch (level) {
    case TS_LEVEL_PATIENT:
        return "PATIENT";
    case TS_LEVEL_STUDY:
        return "STUDY";
    case TS_LEVEL_SERIES:
        return "SERIES";
    default:
        return "IMAGE";
    }
}

// Orthanc 1.10.1's main DICOM tags of each level (DicomMap.cpp).
const uint32_t PATIENT_TAGS[] = {TS_TAG(0x0010, 0x0010), TS_TAG(0x0010, 0x0030),
                                 TS_TAG(0x0010, 0x0040), TS_TAG(0x0010, 0x1000),
                                 TS_TAG(0x0010, 0x0020)};
const uint32_t STUDY_TAGS[] = {
    TS_TAG(0x0008, 0x0020), TS_TAG(0x0008, 0x0030), TS_TAG(0x0020, 0x0010), TS_TAG(0x0008, 0x1030),
    TS_TAG(0x0008, 0x0050), TS_TAG(0x0020, 0x000d), TS_TAG(0x0032, 0x1060), TS_TAG(0x0008, 0x0080),
    TS_TAG(0x0032, 0x1032), TS_TAG(0x0008, 0x0090)};
const uint32_t SERIES_TAGS[] = {
    TS_TAG(0x0008, 0x0021), TS_TAG(0x0008, 0x0031), TS_TAG(0x0008, 0x0060), TS_TAG(0x0008, 0x0070),
    TS_TAG(0x0008, 0x1010), TS_TAG(0x0008, 0x103e), TS_TAG(0x0018, 0x0015), TS_TAG(0x0018, 0x0024),
    TS_TAG(0x0018, 0x1030), TS_TAG(0x0020, 0x0011), TS_TAG(0x0018, 0x1090), TS_TAG(0x0020, 0x1002),
    TS_TAG(0x0020, 0x0105), TS_TAG(0x0054, 0x0081), TS_TAG(0x0054, 0x0101), TS_TAG(0x0020, 0x000e),
    TS_TAG(0x0020, 0x0037), TS_TAG(0x0054, 0x1000), TS_TAG(0x0008, 0x1070), TS_TAG(0x0040, 0x0254),
    TS_TAG(0x0018, 0x1400), TS_TAG(0x0018, 0x0010)};
const uint32_t INSTANCE_TAGS[] = {
    TS_TAG(0x0008, 0x0012), TS_TAG(0x0008, 0x0013), TS_TAG(0x0020, 0x0012), TS_TAG(0x0054, 0x1330),
    TS_TAG(0x0020, 0x0013), TS_TAG(0x0028, 0x0008), TS_TAG(0x0020, 0x0100), TS_TAG(0x0008, 0x0018),
    TS_TAG(0x0020, 0x0032), TS_TAG(0x0020, 0x4000), TS_TAG(0x0020, 0x0037)};

template <size_t N> bool in(const uint32_t (&tags)[N], uint32_t tag)
{
    for (uint32_t t : tags)
        if (t == tag)
            return true;
    return false;
}

} // namespace

extern "C" void ts_dicom_tag_key(uint32_t tag, char out[10])
{
    snprintf(out, 10, "%04x,%04x", (unsigned)(tag >> 16) & 0xffffu, (unsigned)tag & 0xffffu);
}

extern "C" bool ts_dicom_qr_allowed(ts_level level, uint32_t tag)
{
    if (tag == TS_TAG(0x0008, 0x0005))
        return true;
    switch (level) {
    case TS_LEVEL_PATIENT:
        if (tag == TS_TAG(0x0020, 0x1200) || tag == TS_TAG(0x0020, 0x1202) ||
            tag == TS_TAG(0x0020, 0x1204))
            return true;
        break;
    case TS_LEVEL_STUDY:
        if (tag == TS_TAG(0x0008, 0x0061) || tag == TS_TAG(0x0020, 0x1206) ||
            tag == TS_TAG(0x0020, 0x1208) || tag == TS_TAG(0x0008, 0x0062))
            return true;
        break;
    case TS_LEVEL_SERIES:
        if (tag == TS_TAG(0x0020, 0x1209))
            return true;
        break;
    default:
        break;
    }
    // the main tags of the level and of every level above
    return in(PATIENT_TAGS, tag) || (level >= TS_LEVEL_STUDY && in(STUDY_TAGS, tag)) ||
           (level >= TS_LEVEL_SERIES && in(SERIES_TAGS, tag)) ||
           (level >= TS_LEVEL_INSTANCE && in(INSTANCE_TAGS, tag));
}

extern "C" int ts_dicom_find_scu(const ts_dicom_peer *peer, ts_level level,
                                 const ts_dicom_qr_key *keys, size_t nkeys, bool normalize,
                                 size_t max_answers, json_t **answers, ts_err *err)
{
    const char *sop_class = level == TS_LEVEL_PATIENT
                                ? UID_FINDPatientRootQueryRetrieveInformationModel
                                : UID_FINDStudyRootQueryRetrieveInformationModel;
    const char *clevel = dicom_level(level);
    DcmDataset query;
    bool ascii = true;
    for (size_t i = 0; i < nkeys; i++) {
        if (normalize && !ts_dicom_qr_allowed(level, keys[i].tag))
            continue;
        if (keys[i].tag == TS_TAG(0x0008, 0x0005))
            continue;
        for (const char *p = keys[i].value; *p; p++)
            if ((unsigned char)*p >= 0x80)
                ascii = false;
        DcmTag tag(static_cast<Uint16>(keys[i].tag >> 16), static_cast<Uint16>(keys[i].tag));
        if (query.putAndInsertString(tag, keys[i].value).bad())
            return ts_err_set(err, TS_EINVAL, "C-FIND: cannot put the value of tag %04x,%04x",
                              (unsigned)(keys[i].tag >> 16), (unsigned)(keys[i].tag & 0xffff));
    }
    // Orthanc sends Latin-1 (its default encoding); UTF-8 only when needed
    query.putAndInsertString(DCM_SpecificCharacterSet, ascii ? "ISO_IR 100" : "ISO_IR 192");
    query.putAndInsertString(DCM_QueryRetrieveLevel, clevel);
    // the identifying keys of the level and those above, as Orthanc adds them
    if (level >= TS_LEVEL_INSTANCE && !query.tagExists(DCM_SOPInstanceUID))
        query.putAndInsertString(DCM_SOPInstanceUID, "");
    if (level >= TS_LEVEL_SERIES && !query.tagExists(DCM_SeriesInstanceUID))
        query.putAndInsertString(DCM_SeriesInstanceUID, "");
    if (level >= TS_LEVEL_STUDY && !query.tagExists(DCM_AccessionNumber))
        query.putAndInsertString(DCM_AccessionNumber, "");
    if (level >= TS_LEVEL_STUDY && !query.tagExists(DCM_StudyInstanceUID))
        query.putAndInsertString(DCM_StudyInstanceUID, "");
    if (!query.tagExists(DCM_PatientID))
        query.putAndInsertString(DCM_PatientID, "");

    json_t *out = json_array();
    QrScu scu(peer, out, max_answers, clevel);
    int rc = open_association(scu, peer, sop_class, err);
    if (rc) {
        json_decref(out);
        return rc;
    }
    T_ASC_PresentationContextID pcid = scu.findAnyPresentationContextID(sop_class, "");
    if (pcid == 0) {
        scu.releaseAssociation();
        json_decref(out);
        return ts_err_set(err, TS_EIO,
                          "DicomAssociation - C-FIND to AET \"%s\": the peer accepted no "
                          "presentation context for %s",
                          aet_of(peer), sop_class);
    }
    OFCondition cond = scu.sendFINDRequest(pcid, &query, nullptr);
    if (cond.bad()) {
        scu.abortAssociation();
        json_decref(out);
        return association_error(err, peer, "C-FIND", cond);
    }
    scu.releaseAssociation();
    Uint16 st = scu.final_status;
    if (st != 0x0000 && st != 0xFF00 && st != 0xFF01) {
        json_decref(out);
        if (st == STATUS_FIND_Failed_UnableToProcess)
            return ts_err_set(err, TS_EDICOM,
                              "C-FIND SCU to AET \"%s\" has failed with DIMSE status 0x%04X "
                              "(unable to process - invalid query ?)",
                              aet_of(peer), st);
        return ts_err_set(err, TS_EDICOM,
                          "C-FIND SCU to AET \"%s\" has failed with DIMSE status 0x%04X",
                          aet_of(peer), st);
    }
    if (scu.dropped)
        ts_warn("C-FIND answers over the limit left out", "peer=%s kept=%zu dropped=%zu",
                aet_of(peer), json_array_size(out), scu.dropped);
    *answers = out;
    return 0;
}

extern "C" int ts_dicom_move_scu(const ts_dicom_peer *peer, const char *target,
                                 const json_t *identifier, ts_err *err)
{
    const char *lv = json_string_value(json_object_get(identifier, "0008,0052"));
    std::string up = lv ? lv : "";
    for (char &c : up)
        c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    ts_level level;
    if (up == "PATIENT")
        level = TS_LEVEL_PATIENT;
    else if (up == "STUDY")
        level = TS_LEVEL_STUDY;
    else if (up == "SERIES")
        level = TS_LEVEL_SERIES;
    else if (up == "IMAGE" || up == "INSTANCE")
        level = TS_LEVEL_INSTANCE;
    else
        return ts_err_set(err, TS_EINVAL, "C-MOVE: the identifier has no QueryRetrieveLevel");

    DcmDataset ds;
    ds.putAndInsertString(DCM_QueryRetrieveLevel, dicom_level(level));
    // what identifies the resource at its level (Orthanc's DicomControlUserConnection::Move)
    struct {
        const char *key;
        DcmTagKey tag;
        bool used;
    } ids[] = {{"0010,0020", DCM_PatientID, level == TS_LEVEL_PATIENT},
               {"0020,000d", DCM_StudyInstanceUID, level != TS_LEVEL_PATIENT},
               {"0020,000e", DCM_SeriesInstanceUID, level >= TS_LEVEL_SERIES},
               {"0008,0018", DCM_SOPInstanceUID, level == TS_LEVEL_INSTANCE}};
    for (auto &id : ids) {
        const char *v = json_string_value(json_object_get(identifier, id.key));
        if (id.used && v)
            ds.putAndInsertString(id.tag, v);
    }
    const char *sop_class = level == TS_LEVEL_PATIENT
                                ? UID_MOVEPatientRootQueryRetrieveInformationModel
                                : UID_MOVEStudyRootQueryRetrieveInformationModel;
    QrScu scu(peer, nullptr, 0, dicom_level(level));
    int rc = open_association(scu, peer, sop_class, err);
    if (rc)
        return rc;
    T_ASC_PresentationContextID pcid = scu.findAnyPresentationContextID(sop_class, "");
    if (pcid == 0) {
        scu.releaseAssociation();
        return ts_err_set(err, TS_EIO,
                          "DicomAssociation - C-MOVE to AET \"%s\": the peer accepted no "
                          "presentation context for %s",
                          aet_of(peer), sop_class);
    }
    OFCondition cond = scu.sendMOVERequest(pcid, target, &ds, nullptr);
    if (cond.bad()) {
        scu.abortAssociation();
        return association_error(err, peer, "C-MOVE", cond);
    }
    scu.releaseAssociation();
    Uint16 st = scu.final_status;
    if (st != 0x0000) {
        if (st == STATUS_MOVE_Failed_UnableToProcess)
            return ts_err_set(err, TS_EDICOM,
                              "C-MOVE SCU to AET \"%s\" has failed with DIMSE status 0x%04X "
                              "(unable to process - resource not found ?)",
                              aet_of(peer), st);
        return ts_err_set(err, TS_EDICOM,
                          "C-MOVE SCU to AET \"%s\" has failed with DIMSE status 0x%04X",
                          aet_of(peer), st);
    }
    return 0;
}
