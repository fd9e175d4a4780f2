// The Query/Retrieve handling of an association (C-FIND, C-MOVE, C-GET handed
// to the C callbacks of dicom_find.h), as a DcmThreadSCP that other SCPs of
// the wrapper extend: tessera-query's own port (dicom_find.cc) and ingest's
// (dicom_scp.cc, C-FIND only, relayed to query). Shared by dicom_*.cc only.
#ifndef TS_DICOM_QR_HH
#define TS_DICOM_QR_HH

#include "dicom_internal.hh"

#include "dicom/dicom_find.h"

#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scpthrd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/log.h"

namespace tsqr
{

// An identifier with more top-level elements than this is cut (and logged).
const size_t MAX_KEYS = 256;

// Storage syntaxes accepted for C-GET sub-operations: files go out as stored,
// or converted to another uncompressed syntax.
const char *const GET_STORAGE_SYNTAXES[] = {
    UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,         UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,     UID_JPEGLSLosslessTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax,
    UID_RLELosslessTransferSyntax,
};

class QrWorker;

} // namespace tsqr

struct ts_dicom_find_out {
    tsqr::QrWorker *worker;
    T_ASC_PresentationContextID pres_id;
    T_DIMSE_C_FindRQ *rq;
    DcmDataset *templ;           // the identifier as received, sequences emptied
    std::vector<DcmTagKey> tags; // keys[i]'s tag
    bool utf8;                   // the request had a character set: answers say UTF-8
};

struct ts_dicom_retrieve_out {
    tsqr::QrWorker *worker;
    T_ASC_PresentationContextID pres_id;
    Uint16 msg_id;           // of the C-MOVE/C-GET request
    std::string sop_class;   // its affected SOP class
    bool get;                // C-GET (else C-MOVE)
    std::string failed_uids; // C-GET: gathered by ts_dicom_get_send()
    Uint16 next_id = 1;      // C-GET: message ids of the C-STORE sub-operations
};

namespace tsqr
{

inline std::string element_text(DcmElement *el)
{
    OFString v;
    if (el->getOFStringArray(v, OFTrue).bad())
        return "";
    // trailing/leading padding of each value
    std::string s = v.c_str();
    size_t b = s.find_first_not_of(' ');
    if (b == std::string::npos)
        return "";
    size_t e = s.find_last_not_of(" ");
    return s.substr(b, e - b + 1);
}

// ErrorComment (0000,0902) is LO: 64 characters at most.
inline void put_comment(DcmDataset &detail, const char *comment)
{
    detail.putAndInsertString(DCM_ErrorComment, std::string(comment).substr(0, 64).c_str());
}

// A received identifier taken apart for the C callbacks (values UTF-8).
struct Identifier {
    std::string level;
    std::vector<std::string> values;
    std::vector<ts_dicom_find_key> keys;
    std::vector<DcmTagKey> tags;
    size_t dropped = 0;
};

class QrWorker : public DcmThreadSCP
{
  public:
    QrWorker(const ts_dicom_qr_callbacks &cb, const std::string &our_aet, bool check_called,
             long long max_dataset)
        : cb_(cb), our_aet_(our_aet), check_called_(check_called), max_dataset_(max_dataset)
    {
        memset(&assoc_, 0, sizeof(assoc_));
    }

    OFCondition sendPending(ts_dicom_find_out *out, DcmDataset *ds, uint16_t status)
    {
        return sendFINDResponse(out->pres_id, out->rq->MessageID, out->rq->AffectedSOPClassUID, ds,
                                status);
    }

    // Our AE title: the Retrieve AE Title (0008,0054) of every C-FIND answer.
    const std::string &ourAETitle() const
    {
        return our_aet_;
    }

    bool cancelled(ts_dicom_find_out *out)
    {
        return checkCancel(out->pres_id, out->rq->MessageID);
    }

  protected:
    OFBool checkCalledAETitleAccepted(const OFString &called) override
    {
        return !check_called_ || called == our_aet_.c_str();
    }

    OFBool checkCallingAETitleAccepted(const OFString &calling) override
    {
        snprintf(assoc_.calling_aet, sizeof(assoc_.calling_aet), "%s", calling.c_str());
        snprintf(assoc_.called_aet, sizeof(assoc_.called_aet), "%s", getCalledAETitle().c_str());
        snprintf(assoc_.peer_ip, sizeof(assoc_.peer_ip), "%s", getPeerIP().c_str());
        if (!cb_.accept || cb_.accept(cb_.user, &assoc_))
            return OFTrue;
        ts_warn("association rejected: calling AE title not accepted", "calling_aet=%s peer=%s",
                assoc_.calling_aet, assoc_.peer_ip);
        return OFFalse;
    }

    // A client may send its A-RELEASE-RQ right behind a request (PS3.8 allows
    // it once the request is sent); the check for a C-CANCEL between answers
    // then reads the release. It is remembered, the request is answered to the
    // end, and the association is released instead of waiting for a PDU that
    // already came.
    OFCondition handleIncomingCommand(T_DIMSE_Message *msg,
                                      const DcmPresentationContextInfo &info) override
    {
        OFCondition cond = dispatchCommand(msg, info);
        if (cond.good() && release_requested_)
            return DUL_PEERREQUESTEDRELEASE;
        return cond;
    }

    OFCondition dispatchCommand(T_DIMSE_Message *msg, const DcmPresentationContextInfo &info)
    {
        if (msg->CommandField == DIMSE_C_FIND_RQ && cb_.find)
            return handleFind(msg->msg.CFindRQ, info.presentationContextID);
        if (msg->CommandField == DIMSE_C_MOVE_RQ && cb_.move)
            return handleMove(msg->msg.CMoveRQ, info.presentationContextID);
        if (msg->CommandField == DIMSE_C_GET_RQ && cb_.get)
            return handleGet(msg->msg.CGetRQ, info.presentationContextID);
        // A C-CANCEL that crossed our final response on the wire: nothing left to stop.
        if (msg->CommandField == DIMSE_C_CANCEL_RQ)
            return EC_Normal;
        return DcmThreadSCP::handleIncomingCommand(msg, info);
    }

    void notifyRECEIVEProgress(const unsigned long byte_count) override
    {
        if (max_dataset_ > 0 && !aborted_ && static_cast<long long>(byte_count) > max_dataset_) {
            aborted_ = true;
            ts_warn("C-FIND identifier over the size limit, association aborted",
                    "calling_aet=%s limit=%lld", assoc_.calling_aet, max_dataset_);
            abortAssociation();
        }
    }

  private:
    // true when the client sent a C-CANCEL for this request. Reads nothing once
    // the client asked for the release.
    bool checkCancel(T_ASC_PresentationContextID pres_id, Uint16 msg_id)
    {
        if (release_requested_)
            return false;
        OFCondition cond = checkForCANCEL(pres_id, msg_id);
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            release_requested_ = true;
            return false;
        }
        return cond.good();
    }

    bool release_requested_ = false;

    // Converts ds to UTF-8 and collects its keys; sequences are emptied in ds
    // (sequence matching is not supported). False on an unsupported character set.
    bool parseIdentifier(DcmDataset *ds, Identifier &id, bool &had_charset)
    {
        had_charset = ds->tagExists(DCM_SpecificCharacterSet);
        if (had_charset && !ts_dataset_to_utf8(ds)) {
            ts_warn("identifier in an unsupported character set", "calling_aet=%s",
                    assoc_.calling_aet);
            return false;
        }
        // File meta (0002) and command (0000) elements are no keys, and an
        // answer must not echo them.
        for (unsigned long i = ds->card(); i-- > 0;) {
            Uint16 group = ds->getElement(i)->getTag().getGroup();
            if (group == 0x0000 || group == 0x0002)
                delete ds->remove(i);
        }
        std::vector<DcmElement *> kept;
        for (unsigned long i = 0; i < ds->card(); i++) {
            DcmElement *el = ds->getElement(i);
            DcmTagKey key = el->getTag().getXTag();
            if (key == DCM_QueryRetrieveLevel) {
                id.level = element_text(el);
                // Orthanc takes IMAGES for IMAGE (PS3.4 C.6 has IMAGE only); the
                // answers say IMAGE.
                if (id.level == "IMAGES") {
                    id.level = "IMAGE";
                    el->putString("IMAGE");
                }
                continue;
            }
            if (key == DCM_SpecificCharacterSet)
                continue;
            if (kept.size() >= MAX_KEYS) {
                id.dropped++;
                continue;
            }
            kept.push_back(el);
        }
        // The leaf elements of each sequence's first item, read before the
        // sequences are emptied; they follow the top-level keys.
        std::vector<ts_dicom_find_key> item_keys;
        std::vector<std::string> item_values;
        for (DcmElement *el : kept) {
            DcmSequenceOfItems *sq =
                el->ident() == EVR_SQ ? static_cast<DcmSequenceOfItems *>(el) : nullptr;
            if (!sq || sq->card() == 0)
                continue;
            DcmTagKey sk = el->getTag().getXTag();
            DcmItem *item = sq->getItem(0);
            for (unsigned long i = 0; i < item->card(); i++) {
                DcmElement *leaf = item->getElement(i);
                if (!leaf->isLeaf())
                    continue;
                if (kept.size() + item_keys.size() >= MAX_KEYS) {
                    id.dropped++;
                    continue;
                }
                DcmTagKey lk = leaf->getTag().getXTag();
                ts_dicom_find_key k;
                k.tag = TS_TAG(lk.getGroup(), lk.getElement());
                k.is_sequence = false;
                k.sequence = TS_TAG(sk.getGroup(), sk.getElement());
                item_keys.push_back(k);
                item_values.push_back(element_text(leaf));
            }
        }
        id.values.reserve(kept.size() + item_keys.size());
        for (DcmElement *el : kept) {
            DcmTagKey key = el->getTag().getXTag();
            ts_dicom_find_key k;
            k.tag = TS_TAG(key.getGroup(), key.getElement());
            k.is_sequence = el->ident() == EVR_SQ;
            k.sequence = 0;
            if (k.is_sequence) {
                // the answers' items come from the index (ts_dicom_find_pending)
                static_cast<DcmSequenceOfItems *>(el)->clear();
                id.values.emplace_back("");
            } else {
                id.values.push_back(element_text(el));
            }
            id.tags.push_back(key);
            id.keys.push_back(k);
        }
        id.keys.insert(id.keys.end(), item_keys.begin(), item_keys.end());
        id.values.insert(id.values.end(), item_values.begin(), item_values.end());
        for (size_t i = 0; i < id.keys.size(); i++)
            id.keys[i].value = id.values[i].c_str();
        return true;
    }

    OFCondition handleMove(T_DIMSE_C_MoveRQ &rq, T_ASC_PresentationContextID pres_id)
    {
        DcmDataset *ds = nullptr;
        OFString dest;
        OFCondition cond = receiveMOVERequest(rq, pres_id, ds, dest);
        if (cond.bad()) {
            delete ds;
            return cond;
        }
        ts_dicom_move_rq req;
        memset(&req, 0, sizeof(req));
        std::string sop = rq.AffectedSOPClassUID;
        req.model = sop == UID_MOVEPatientRootQueryRetrieveInformationModel ? TS_QR_PATIENT_ROOT
                                                                            : TS_QR_STUDY_ROOT;
        Identifier ident;
        bool had_charset = false;
        ts_dicom_move_result res;
        memset(&res, 0, sizeof(res));
        uint16_t status;
        char comment[128] = "";
        if (!parseIdentifier(ds, ident, had_charset)) {
            status = STATUS_MOVE_Failed_UnableToProcess;
            snprintf(comment, sizeof(comment), "unsupported character set");
        } else {
            req.level = ident.level.c_str();
            req.keys = ident.keys.data();
            req.nkeys = ident.keys.size();
            req.max_keys_hit = ident.dropped;
            req.destination = dest.c_str();
            req.message_id = rq.MessageID;
            ts_dicom_retrieve_out out;
            out.worker = this;
            out.pres_id = pres_id;
            out.msg_id = rq.MessageID;
            out.sop_class = rq.AffectedSOPClassUID;
            out.get = false;
            status = cb_.move(retrieveUser(), &assoc_, &req, &out, &res, comment, sizeof(comment));
        }
        delete ds;
        if (aborted_ || !isConnected()) {
            free(res.failed_uids);
            return DUL_PEERABORTEDASSOCIATION;
        }
        // PS3.4 C.4.2.3.1: the final response carries the counts; remaining is absent
        T_DIMSE_C_MoveRSP rsp;
        memset(&rsp, 0, sizeof(rsp));
        DcmDataset detail;
        DcmDataset *pdetail = nullptr;
        if (res.failed_uids && *res.failed_uids) {
            detail.putAndInsertString(DCM_FailedSOPInstanceUIDList, res.failed_uids);
            pdetail = &detail;
        } else if (*comment && status != STATUS_Success) {
            put_comment(detail, comment);
            pdetail = &detail;
        }
        free(res.failed_uids);
        return sendRetrieveResponse(false, pres_id, rq.MessageID, rq.AffectedSOPClassUID, status, 0,
                                    res, pdetail);
    }

    void *retrieveUser() const
    {
        return cb_.retrieve_user ? cb_.retrieve_user : cb_.user;
    }

    static Uint16 u16(unsigned n)
    {
        return static_cast<Uint16>(n > 65535 ? 65535 : n);
    }

  public:
    // A C-MOVE or C-GET response with the sub-operation counts: pending ones
    // carry `remaining`, the final one does not (PS3.4 C.4.2.3.1, C.4.3.3.1).
    OFCondition sendRetrieveResponse(bool get, T_ASC_PresentationContextID pres_id, Uint16 msg_id,
                                     const char *sop_class, uint16_t status, unsigned remaining,
                                     const ts_dicom_move_result &res, DcmDataset *detail)
    {
        T_DIMSE_Message msg;
        memset(&msg, 0, sizeof(msg));
        bool pending = status == 0xff00;
        if (get) {
            msg.CommandField = DIMSE_C_GET_RSP;
            T_DIMSE_C_GetRSP &r = msg.msg.CGetRSP;
            r.MessageIDBeingRespondedTo = msg_id;
            r.DimseStatus = status;
            r.DataSetType = DIMSE_DATASET_NULL;
            OFStandard::strlcpy(r.AffectedSOPClassUID, sop_class, sizeof(r.AffectedSOPClassUID));
            r.opts = O_GET_AFFECTEDSOPCLASSUID | O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS |
                     O_GET_NUMBEROFFAILEDSUBOPERATIONS | O_GET_NUMBEROFWARNINGSUBOPERATIONS |
                     (pending ? O_GET_NUMBEROFREMAININGSUBOPERATIONS : 0);
            r.NumberOfRemainingSubOperations = u16(remaining);
            r.NumberOfCompletedSubOperations = u16(res.completed);
            r.NumberOfFailedSubOperations = u16(res.failed);
            r.NumberOfWarningSubOperations = u16(res.warning);
        } else {
            msg.CommandField = DIMSE_C_MOVE_RSP;
            T_DIMSE_C_MoveRSP &r = msg.msg.CMoveRSP;
            r.MessageIDBeingRespondedTo = msg_id;
            r.DimseStatus = status;
            r.DataSetType = DIMSE_DATASET_NULL;
            OFStandard::strlcpy(r.AffectedSOPClassUID, sop_class, sizeof(r.AffectedSOPClassUID));
            r.opts = O_MOVE_AFFECTEDSOPCLASSUID | O_MOVE_NUMBEROFCOMPLETEDSUBOPERATIONS |
                     O_MOVE_NUMBEROFFAILEDSUBOPERATIONS | O_MOVE_NUMBEROFWARNINGSUBOPERATIONS |
                     (pending ? O_MOVE_NUMBEROFREMAININGSUBOPERATIONS : 0);
            r.NumberOfRemainingSubOperations = u16(remaining);
            r.NumberOfCompletedSubOperations = u16(res.completed);
            r.NumberOfFailedSubOperations = u16(res.failed);
            r.NumberOfWarningSubOperations = u16(res.warning);
        }
        // the failed UIDs go in the identifier of the final response
        if (detail && detail->tagExists(DCM_FailedSOPInstanceUIDList)) {
            if (get)
                msg.msg.CGetRSP.DataSetType = DIMSE_DATASET_PRESENT;
            else
                msg.msg.CMoveRSP.DataSetType = DIMSE_DATASET_PRESENT;
            return sendDIMSEMessage(pres_id, &msg, detail, nullptr);
        }
        return sendDIMSEMessage(pres_id, &msg, nullptr, detail);
    }

    bool cancelledRetrieve(ts_dicom_retrieve_out *out)
    {
        return checkCancel(out->pres_id, out->msg_id);
    }

    T_ASC_Association *association()
    {
        return net_assoc_;
    }
    // For a subclass that checks the calling AE title itself (ingest's SCP).
    void setAssocInfo(const ts_dicom_assoc &a)
    {
        assoc_ = a;
    }
    void setAssociation(T_ASC_Association *a)
    {
        net_assoc_ = a;
    }
    int timeout() const
    {
        return timeout_s_;
    }
    void setTimeout(int t)
    {
        timeout_s_ = t;
    }

  private:
    T_ASC_Association *net_assoc_ = nullptr;
    int timeout_s_ = 30;

    OFCondition handleGet(T_DIMSE_C_GetRQ &rq, T_ASC_PresentationContextID pres_id)
    {
        DcmDataset *ds = nullptr;
        T_ASC_PresentationContextID data_pid = pres_id;
        OFCondition cond = receiveDIMSEDataset(&data_pid, &ds);
        if (cond.bad()) {
            delete ds;
            return cond;
        }
        ts_dicom_move_rq req;
        memset(&req, 0, sizeof(req));
        std::string sop = rq.AffectedSOPClassUID;
        req.model = sop == UID_GETPatientRootQueryRetrieveInformationModel ? TS_QR_PATIENT_ROOT
                                                                           : TS_QR_STUDY_ROOT;
        Identifier ident;
        bool had_charset = false;
        ts_dicom_move_result res;
        memset(&res, 0, sizeof(res));
        uint16_t status;
        char comment[128] = "";
        ts_dicom_retrieve_out out;
        out.worker = this;
        out.pres_id = pres_id;
        out.msg_id = rq.MessageID;
        out.sop_class = rq.AffectedSOPClassUID;
        out.get = true;
        if (!parseIdentifier(ds, ident, had_charset)) {
            status = STATUS_GET_Failed_UnableToProcess;
            snprintf(comment, sizeof(comment), "unsupported character set");
        } else {
            req.level = ident.level.c_str();
            req.keys = ident.keys.data();
            req.nkeys = ident.keys.size();
            req.max_keys_hit = ident.dropped;
            status = cb_.get(retrieveUser(), &assoc_, &req, &out, &res, comment, sizeof(comment));
        }
        delete ds;
        free(res.failed_uids);
        if (aborted_ || !isConnected())
            return DUL_PEERABORTEDASSOCIATION;
        DcmDataset detail;
        DcmDataset *pdetail = nullptr;
        if (!out.failed_uids.empty()) {
            detail.putAndInsertString(DCM_FailedSOPInstanceUIDList, out.failed_uids.c_str());
            pdetail = &detail;
        } else if (*comment && status != STATUS_Success) {
            put_comment(detail, comment);
            pdetail = &detail;
        }
        return sendRetrieveResponse(true, pres_id, rq.MessageID, rq.AffectedSOPClassUID, status, 0,
                                    res, pdetail);
    }

  private:
    OFCondition finalResponse(T_ASC_PresentationContextID pres_id, const T_DIMSE_C_FindRQ &rq,
                              uint16_t status, const char *comment)
    {
        DcmDataset detail;
        DcmDataset *pdetail = nullptr;
        if (comment && *comment && status != STATUS_Success &&
            status != STATUS_FIND_Cancel_MatchingTerminatedDueToCancelRequest) {
            put_comment(detail, comment);
            pdetail = &detail;
        }
        return sendFINDResponse(pres_id, rq.MessageID, rq.AffectedSOPClassUID, nullptr, status,
                                pdetail);
    }

    OFCondition handleFind(T_DIMSE_C_FindRQ &rq, T_ASC_PresentationContextID pres_id)
    {
        DcmDataset *ds = nullptr;
        OFCondition cond = receiveFINDRequest(rq, pres_id, ds);
        if (cond.bad()) {
            delete ds;
            return cond;
        }
        ts_dicom_find_rq req;
        memset(&req, 0, sizeof(req));
        Identifier ident;
        std::string sop = rq.AffectedSOPClassUID;
        if (sop == UID_FINDPatientRootQueryRetrieveInformationModel)
            req.model = TS_QR_PATIENT_ROOT;
        else if (sop == UID_FINDStudyRootQueryRetrieveInformationModel)
            req.model = TS_QR_STUDY_ROOT;
        else {
            // negotiation only accepts the two models; a request on another
            // context's SOP class is the client's error
            ts_warn("C-FIND of an unsupported information model", "calling_aet=%s sop_class=%s",
                    assoc_.calling_aet, sop.c_str());
            delete ds;
            return finalResponse(pres_id, rq, STATUS_FIND_Refused_SOPClassNotSupported,
                                 "unsupported information model");
        }
        bool had_charset = false;
        if (!parseIdentifier(ds, ident, had_charset)) {
            delete ds;
            return finalResponse(pres_id, rq, STATUS_FIND_Failed_UnableToProcess,
                                 "unsupported character set");
        }
        ts_dicom_find_out out;
        out.worker = this;
        out.pres_id = pres_id;
        out.rq = &rq;
        out.templ = ds;
        out.utf8 = had_charset;
        out.tags = ident.tags;
        req.level = ident.level.c_str();
        req.keys = ident.keys.data();
        req.nkeys = ident.keys.size();
        req.max_keys_hit = ident.dropped;
        char comment[128] = "";
        uint16_t status = cb_.find(cb_.user, &assoc_, &req, &out, comment, sizeof(comment));
        delete ds;
        if (aborted_ || !isConnected())
            return DUL_PEERABORTEDASSOCIATION;
        return finalResponse(pres_id, rq, status, comment);
    }

    ts_dicom_qr_callbacks cb_;
    std::string our_aet_;
    bool check_called_;
    long long max_dataset_;
    bool aborted_ = false;
    ts_dicom_assoc assoc_;
};

} // namespace tsqr

#endif
