// The Query/Retrieve SCP: C-ECHO, C-FIND, C-MOVE, C-GET (Patient Root, Study Root). The
// accept loop is dicom_net.cc's (one thread per connection, bounded, stoppable); each association
// is a DcmThreadSCP whose C-FIND requests go to a C callback that streams matches with
// ts_dicom_find_pending(). The per-association handling is tsqr::QrWorker (dicom_qr.hh).
#include "dicom_net.hh"
#include "dicom_qr.hh"

#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scpthrd.h>

#include <jansson.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "base/log.h"

using tsqr::QrWorker;

// A sequence's items from the index's JSON array of {"ggggeeee": value}
// objects (services/query: series.request_attributes); true when a value is
// not ASCII.
static bool fill_items(DcmSequenceOfItems &sq, const char *stored)
{
    bool non_ascii = false;
    json_t *items = *stored ? json_loads(stored, 0, nullptr) : nullptr;
    size_t i;
    json_t *obj;
    json_array_foreach(items, i, obj)
    {
        DcmItem *item = new DcmItem();
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            unsigned g, e;
            if (!json_is_string(v) || sscanf(key, "%4x%4x", &g, &e) != 2)
                continue;
            const char *text = json_string_value(v);
            for (const char *p = text; *p; p++)
                non_ascii = non_ascii || static_cast<unsigned char>(*p) >= 0x80;
            item->putAndInsertString(DcmTagKey(static_cast<Uint16>(g), static_cast<Uint16>(e)),
                                     text);
        }
        if (sq.insert(item).bad())
            delete item;
    }
    json_decref(items);
    return non_ascii;
}

extern "C" int ts_dicom_find_pending(ts_dicom_find_out *out, const char *const *values,
                                     uint16_t status, ts_err *err)
{
    if (out->worker->cancelled(out))
        return ts_err_set(err, TS_ECANCELED, "C-FIND cancelled by the client");
    DcmDataset rsp(*out->templ);
    bool non_ascii = false;
    for (size_t i = 0; i < out->tags.size(); i++) {
        DcmElement *el = nullptr;
        if (rsp.findAndGetElement(out->tags[i], el, OFFalse).bad() || !el)
            continue;
        const char *v = values[i] ? values[i] : "";
        if (el->ident() == EVR_SQ) {
            if (fill_items(*static_cast<DcmSequenceOfItems *>(el), v))
                non_ascii = true;
            continue;
        }
        for (const char *p = v; *p; p++)
            if (static_cast<unsigned char>(*p) >= 0x80)
                non_ascii = true;
        if (el->putString(v).bad())
            el->putString("");
    }
    // Where to retrieve it from (PS3.4 C.4.1.2.2.1), as Orthanc answers: workstations
    // read it to know which AE to send the C-MOVE to.
    rsp.putAndInsertString(DCM_RetrieveAETitle, out->worker->ourAETitle().c_str());
    rsp.findAndDeleteElement(DCM_SpecificCharacterSet);
    if (non_ascii || out->utf8)
        rsp.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    OFCondition cond = out->worker->sendPending(out, &rsp, status);
    if (cond.bad())
        return ts_err_set(err, TS_EIO, "send C-FIND response: %s", cond.text());
    return 0;
}

extern "C" int ts_dicom_get_send(ts_dicom_retrieve_out *out, const char *path, const char *sop_uid,
                                 unsigned remaining, ts_dicom_move_result *res, ts_err *err)
{
    QrWorker *w = out->worker;
    if (w->cancelledRetrieve(out))
        return ts_err_set(err, TS_ECANCELED, "C-GET cancelled by the client");
    T_ASC_Association *assoc = w->association();
    uint16_t status = 0xa702;
    DcmFileFormat file;
    OFString sop_class, sop_inst;
    T_ASC_PresentationContextID pid = 0;
    if (file.loadFile(path).good() &&
        file.getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class).good() &&
        file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop_inst).good()) {
        DcmDataset *ds = file.getDataset();
        E_TransferSyntax xfer = ds->getOriginalXfer();
        DcmXfer x(xfer);
        pid = ASC_findAcceptedPresentationContextID(assoc, sop_class.c_str(), x.getXferID());
        // The client did not accept the stored syntax for this class: Explicit
        // or Implicit VR Little Endian if it accepted one (Orthanc's fallback).
        for (const char *le :
             {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax})
            if (pid == 0)
                pid = ASC_findAcceptedPresentationContextID(assoc, sop_class.c_str(), le);
        T_ASC_PresentationContext pc;
        bool ok = pid != 0 && ASC_findAcceptedPresentationContext(assoc->params, pid, &pc).good();
        if (ok) {
            E_TransferSyntax want = DcmXfer(pc.acceptedTransferSyntax).getXfer();
            ts_err terr = {0, ""};
            if (want != xfer &&
                ts_transcode_dataset(ds, xfer, pc.acceptedTransferSyntax, 0, &terr)) {
                ts_warn("C-GET: instance not sent: no conversion to the accepted syntax",
                        "sop=%s syntax=%s to=%s error=\"%s\"", sop_uid, x.getXferID(),
                        pc.acceptedTransferSyntax, terr.msg);
                ok = false;
            }
        }
        if (ok) {
            T_DIMSE_C_StoreRQ rq;
            memset(&rq, 0, sizeof(rq));
            rq.MessageID = out->next_id++;
            OFStandard::strlcpy(rq.AffectedSOPClassUID, sop_class.c_str(),
                                sizeof(rq.AffectedSOPClassUID));
            OFStandard::strlcpy(rq.AffectedSOPInstanceUID, sop_inst.c_str(),
                                sizeof(rq.AffectedSOPInstanceUID));
            rq.DataSetType = DIMSE_DATASET_PRESENT;
            rq.Priority = DIMSE_PRIORITY_MEDIUM;
            T_DIMSE_C_StoreRSP rsp;
            memset(&rsp, 0, sizeof(rsp));
            DcmDataset *detail = nullptr;
            OFCondition cond = DIMSE_storeUser(assoc, pid, &rq, nullptr, ds, nullptr, nullptr,
                                               DIMSE_NONBLOCKING, w->timeout(), &rsp, &detail);
            delete detail;
            if (cond.bad())
                return ts_err_set(err, TS_EIO, "C-GET sub-operation: %s", cond.text());
            status = rsp.DimseStatus;
        } else {
            ts_warn("C-GET: no accepted storage context for an instance", "sop_class=%s",
                    sop_class.c_str());
        }
    } else {
        ts_warn("C-GET: cannot read a stored file", "sop=%s", sop_uid);
    }
    if (status == 0)
        res->completed++;
    else if ((status & 0xf000) == 0xb000)
        res->warning++;
    else {
        res->failed++;
        if (!out->failed_uids.empty())
            out->failed_uids += "\\";
        out->failed_uids += sop_uid;
    }
    OFCondition cond = w->sendRetrieveResponse(
        true, out->pres_id, out->msg_id, out->sop_class.c_str(), 0xff00, remaining, *res, nullptr);
    if (cond.bad())
        return ts_err_set(err, TS_EIO, "send C-GET response: %s", cond.text());
    return 0;
}

extern "C" int ts_dicom_retrieve_pending(ts_dicom_retrieve_out *out, unsigned remaining,
                                         const ts_dicom_move_result *res, ts_err *err)
{
    QrWorker *w = out->worker;
    if (w->cancelledRetrieve(out))
        return ts_err_set(err, TS_ECANCELED, "%s cancelled by the client",
                          out->get ? "C-GET" : "C-MOVE");
    OFCondition cond =
        w->sendRetrieveResponse(out->get, out->pres_id, out->msg_id, out->sop_class.c_str(), 0xff00,
                                remaining, *res, nullptr);
    if (cond.bad())
        return ts_err_set(err, TS_EIO, "send pending response: %s", cond.text());
    return 0;
}

struct ts_dicom_qr_scp {
    ts_dicom_scp_config cfg;
    std::string aet;
    ts_dicom_qr_callbacks cb;
    DcmSharedSCPConfig shared;
    tsnet::Listener *listener = nullptr;
};

static void qr_configure(ts_dicom_qr_scp *scp)
{
    DcmSCPConfig &c = *scp->shared;
    c.setAETitle(scp->aet.c_str());
    c.setPort(static_cast<Uint16>(scp->cfg.port));
    c.setMaxReceivePDULength(static_cast<Uint32>(scp->cfg.max_pdu));
    c.setACSETimeout(static_cast<Uint32>(scp->cfg.timeout_s));
    c.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    c.setDIMSETimeout(static_cast<Uint32>(scp->cfg.timeout_s));
    c.setHostLookupEnabled(OFFalse);
    c.setProgressNotificationMode(OFTrue); // for the identifier size limit
    c.setRespondWithCalledAETitle(OFTrue);
    OFList<OFString> syntaxes;
    syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
    syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
    syntaxes.push_back(UID_BigEndianExplicitTransferSyntax);
    c.addPresentationContext(UID_VerificationSOPClass, syntaxes);
    c.addPresentationContext(UID_FINDPatientRootQueryRetrieveInformationModel, syntaxes);
    c.addPresentationContext(UID_FINDStudyRootQueryRetrieveInformationModel, syntaxes);
    if (scp->cb.move) {
        c.addPresentationContext(UID_MOVEPatientRootQueryRetrieveInformationModel, syntaxes);
        c.addPresentationContext(UID_MOVEStudyRootQueryRetrieveInformationModel, syntaxes);
    }
    if (scp->cb.get) {
        c.addPresentationContext(UID_GETPatientRootQueryRetrieveInformationModel, syntaxes);
        c.addPresentationContext(UID_GETStudyRootQueryRetrieveInformationModel, syntaxes);
        // C-GET sends the instances back on the same association: the client
        // proposes storage contexts in which it is the SCP (role selection).
        OFList<OFString> storage;
        for (const char *ts : tsqr::GET_STORAGE_SYNTAXES)
            storage.push_back(ts);
        for (int i = 0; i < numberOfDcmLongSCUStorageSOPClassUIDs; i++)
            c.addPresentationContext(dcmLongSCUStorageSOPClassUIDs[i], storage, ASC_SC_ROLE_SCUSCP);
    }
}

extern "C" int ts_dicom_qr_scp_new(const ts_dicom_scp_config *cfg, const ts_dicom_qr_callbacks *cb,
                                   ts_dicom_qr_scp **out, ts_err *err)
{
    *out = nullptr;
    ts_dicom_qr_scp *scp = new ts_dicom_qr_scp();
    scp->cfg = *cfg;
    scp->aet = cfg->aet;
    scp->cfg.aet = scp->aet.c_str();
    scp->cb = *cb;
    qr_configure(scp);
    int rc = tsnet::Listener::open(tsnet::listener_config(scp->cfg), &scp->listener, err);
    if (rc != 0) {
        delete scp;
        return rc;
    }
    *out = scp;
    return 0;
}

extern "C" int ts_dicom_qr_scp_run(ts_dicom_qr_scp *scp, ts_err *err)
{
    ts_info("Q/R SCP listening", "aet=\"%s\" port=%d max_associations=%d", scp->aet.c_str(),
            scp->cfg.port, scp->cfg.max_associations);
    scp->listener->run([scp](T_ASC_Association *assoc) {
        QrWorker worker(scp->cb, scp->aet, scp->cfg.check_called_aet, scp->cfg.max_dataset);
        worker.setSharedConfig(scp->shared);
        worker.setAssociation(assoc);
        worker.setTimeout(scp->cfg.timeout_s);
        OFCondition cond = worker.run(assoc);
        if (cond.bad() && cond != DUL_PEERREQUESTEDRELEASE && cond != DUL_PEERABORTEDASSOCIATION)
            ts_debug("association ended", "reason=\"%s\"", cond.text());
    });
    (void)err;
    return 0;
}

extern "C" void ts_dicom_qr_scp_stop(ts_dicom_qr_scp *scp)
{
    if (scp)
        scp->listener->stop();
}

extern "C" int ts_dicom_qr_scp_active(ts_dicom_qr_scp *scp)
{
    return scp->listener->connections();
}

extern "C" void ts_dicom_qr_scp_free(ts_dicom_qr_scp *scp)
{
    if (!scp)
        return;
    delete scp->listener;
    delete scp;
}
