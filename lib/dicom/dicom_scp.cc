// The DICOM SCP of ingest: each association, on its own thread from the accept
// loop of dicom_net.cc, is served by a DcmThreadSCP that hands requests to C
// callbacks.
//
// We run our own accept loop instead of DcmSCPPool because the pool creates its
// workers with a default constructor (no way to pass the callbacks but a global)
// and cannot be stopped from outside while it waits for a connection.
#include "dicom_internal.hh"
#include "dicom_net.hh"
#include "dicom_qr.hh"

#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scpthrd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <iterator>
#include <vector>
#include <algorithm>
#include <fcntl.h>
#include <unistd.h>

#include "base/log.h"

namespace
{

// Transfer syntaxes accepted for storage, in our order of preference when a
// client proposes several in one context. Instances are stored as received.
const char *const STORAGE_SYNTAXES[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG2MainProfileAtHighLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
    UID_MPEG4StereoHighProfileLevel4_2TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
    UID_HEVCMain10ProfileLevel5_1TransferSyntax,
};

} // namespace

namespace
{

// by their numbers, component after component, as Orthanc lists them
json_t *sorted_uids(std::vector<std::string> uids)
{
    std::sort(uids.begin(), uids.end(), [](const std::string &a, const std::string &b) {
        const char *p = a.c_str(), *q = b.c_str();
        while (*p && *q) {
            char *pe, *qe;
            unsigned long x = strtoul(p, &pe, 10), y = strtoul(q, &qe, 10);
            if (x != y)
                return x < y;
            p = *pe ? pe + 1 : pe;
            q = *qe ? qe + 1 : qe;
        }
        return *p == '\0' && *q != '\0';
    });
    json_t *out = json_array();
    for (const std::string &uid : uids)
        json_array_append_new(out, json_string(uid.c_str()));
    return out;
}

// Orthanc's wildcards (Toolbox::WildcardToRegularExpression): '*' any run of
// characters, '?' one character, everything else literal; the whole UID must match.
bool wildcard_match(const char *pat, const char *s)
{
    if (*pat == '\0')
        return *s == '\0';
    if (*pat == '*')
        return wildcard_match(pat + 1, s) || (*s && wildcard_match(pat, s + 1));
    return *s && (*pat == '?' || *pat == *s) && wildcard_match(pat + 1, s + 1);
}

bool json_has_string(const json_t *arr, const char *value)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), value) == 0)
            return true;
    }
    return false;
}

} // namespace

extern "C" json_t *ts_dicom_storage_syntaxes(void)
{
    return sorted_uids(
        std::vector<std::string>(std::begin(STORAGE_SYNTAXES), std::end(STORAGE_SYNTAXES)));
}

extern "C" int ts_dicom_storage_syntaxes_match(const json_t *patterns, json_t **out, ts_err *err)
{
    std::vector<const char *> list;
    if (json_is_string(patterns)) {
        list.push_back(json_string_value(patterns));
    } else if (json_is_array(patterns)) {
        size_t i;
        const json_t *v;
        json_array_foreach(patterns, i, v)
        {
            if (!json_is_string(v))
                return ts_err_set(err, TS_EINVAL, "item %zu of the list is not a string", i);
            list.push_back(json_string_value(v));
        }
    } else {
        return ts_err_set(err, TS_EINVAL, "expected a string or a list of strings");
    }
    std::vector<std::string> uids;
    for (const char *uid : STORAGE_SYNTAXES) {
        for (const char *pat : list) {
            if (wildcard_match(pat, uid)) {
                uids.push_back(uid);
                break;
            }
        }
    }
    *out = sorted_uids(uids);
    return 0;
}

namespace
{

// Where a C-STORE's file goes while it arrives: memory up to a threshold, so
// that a small instance costs no temporary file (created, written, read back
// to be parsed, hashed, renamed); past it, a temporary file that gets what
// was in memory and the rest (a large instance is not held in memory).
class SpoolConsumer : public DcmConsumer
{
  public:
    SpoolConsumer(size_t threshold, const ts_dicom_scp_callbacks &cb)
        : threshold_(threshold), cb_(cb)
    {
    }
    ~SpoolConsumer() override
    {
        discard();
        free(buf_);
    }
    OFBool good() const override
    {
        return status_.good();
    }
    OFCondition status() const override
    {
        return status_;
    }
    OFBool isFlushed() const override
    {
        return OFTrue;
    }
    offile_off_t avail() const override
    {
        return status_.good() ? 0x40000000 : 0;
    }
    offile_off_t write(const void *data, offile_off_t n) override
    {
        if (status_.bad() || n <= 0)
            return 0;
        size_t len = static_cast<size_t>(n);
        if (fd_ < 0 && len_ + len > threshold_ && !spill())
            return 0;
        if (fd_ >= 0)
            return writeFile(data, len) ? n : 0;
        if (len_ + len > cap_) {
            size_t cap = cap_ ? cap_ : 65536;
            while (cap < len_ + len)
                cap *= 2;
            char *b = static_cast<char *>(realloc(buf_, cap));
            if (!b) {
                fail("out of memory");
                return 0;
            }
            buf_ = b;
            cap_ = cap;
        }
        memcpy(buf_ + len_, data, len);
        len_ += len;
        return n;
    }
    void flush() override {}

    // Completely received: the file is either in memory or in path().
    bool inMemory() const
    {
        return fd_ < 0 && path_.empty();
    }
    const char *data() const
    {
        return buf_;
    }
    size_t size() const
    {
        return len_;
    }
    // The temporary file, closed and handed over (the caller owns it now).
    const char *release()
    {
        if (fd_ >= 0 && close(fd_) != 0)
            fail(strerror(errno));
        fd_ = -1;
        released_ = true;
        return path_.c_str();
    }
    // Drops what was received (a failed receive): memory, partial file.
    void discard()
    {
        if (fd_ >= 0)
            close(fd_);
        fd_ = -1;
        if (!path_.empty() && !released_)
            unlink(path_.c_str());
        path_.clear();
        len_ = 0;
    }
    const std::string &error() const
    {
        return error_;
    }

  private:
    bool spill()
    {
        char path[4096];
        ts_err err;
        ts_err_clear(&err);
        if (!cb_.temp_path || cb_.temp_path(cb_.user, path, sizeof(path), &err) != 0)
            return fail(err.msg);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return fail(strerror(errno));
        fd_ = fd;
        path_ = path;
        bool ok = writeFile(buf_, len_);
        free(buf_);
        buf_ = nullptr;
        cap_ = 0;
        return ok;
    }
    bool writeFile(const void *data, size_t len)
    {
        const char *p = static_cast<const char *>(data);
        while (len > 0) {
            ssize_t w = ::write(fd_, p, len);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return fail(strerror(errno));
            p += w;
            len -= static_cast<size_t>(w);
        }
        return true;
    }
    bool fail(const char *why)
    {
        error_ = why ? why : "";
        status_ = makeOFCondition(OFM_dcmnet, DIMSEC_OUTOFRESOURCES, OF_error,
                                  "cannot keep the data set");
        return false;
    }

    size_t threshold_;
    const ts_dicom_scp_callbacks &cb_;
    char *buf_ = nullptr;
    size_t len_ = 0, cap_ = 0;
    int fd_ = -1;
    std::string path_;
    bool released_ = false;
    OFCondition status_ = EC_Normal;
    std::string error_;
};

class SpoolStream : public DcmOutputStream
{
  public:
    explicit SpoolStream(SpoolConsumer *c) : DcmOutputStream(c) {}
};

void copy_aet(char *dst, size_t size, const OFString &src)
{
    snprintf(dst, size, "%s", src.c_str());
}

ts_dicom_qr_callbacks qr_callbacks(const ts_dicom_scp_callbacks &cb)
{
    ts_dicom_qr_callbacks qr = {cb.user, cb.retrieve_user, cb.accept, cb.find, cb.move, cb.get};
    return qr;
}

// C-FIND, C-MOVE and C-GET (when their callbacks are set) are handled by the
// Q/R base class.
class Worker : public tsqr::QrWorker
{
  public:
    Worker(const ts_dicom_scp_callbacks &cb, const std::string &our_aet, bool check_called,
           long long max_dataset, long long memory_threshold)
        : tsqr::QrWorker(qr_callbacks(cb), our_aet, check_called, max_dataset), cb_(cb),
          our_aet_(our_aet), check_called_(check_called), max_dataset_(max_dataset),
          memory_threshold_(memory_threshold)
    {
        memset(&assoc_, 0, sizeof(assoc_));
    }

  protected:
    OFBool checkCalledAETitleAccepted(const OFString &called) override
    {
        return !check_called_ || called == our_aet_.c_str();
    }

    OFBool checkCallingAETitleAccepted(const OFString &calling) override
    {
        copy_aet(assoc_.calling_aet, sizeof(assoc_.calling_aet), calling);
        copy_aet(assoc_.called_aet, sizeof(assoc_.called_aet), getCalledAETitle());
        copy_aet(assoc_.peer_ip, sizeof(assoc_.peer_ip), getPeerIP());
        setAssocInfo(assoc_);
        if (!cb_.accept || cb_.accept(cb_.user, &assoc_))
            return OFTrue;
        ts_warn("association rejected: calling AE title not registered", "calling_aet=%s peer=%s",
                assoc_.calling_aet, assoc_.peer_ip);
        return OFFalse;
    }

    // dcmtk's profiles hold 128 presentation contexts at most and drop the rest
    // without a word, but there are 186 storage SOP classes: contexts are
    // accepted here instead, as storescp does, from the complete lists (no
    // limit there), and the profile-based negotiation is skipped.
    void notifyAssociationRequest(const T_ASC_Parameters &params,
                                  DcmSCPActionType &desired) override
    {
        T_ASC_Parameters *p = const_cast<T_ASC_Parameters *>(&params);
        const char *uncompressed[] = {UID_LittleEndianExplicitTransferSyntax,
                                      UID_LittleEndianImplicitTransferSyntax,
                                      UID_BigEndianExplicitTransferSyntax};
        const char *verification[] = {UID_VerificationSOPClass};
        const char *find[] = {UID_FINDPatientRootQueryRetrieveInformationModel,
                              UID_FINDStudyRootQueryRetrieveInformationModel};
        const char *move[] = {UID_MOVEPatientRootQueryRetrieveInformationModel,
                              UID_MOVEStudyRootQueryRetrieveInformationModel};
        const char *get[] = {UID_GETPatientRootQueryRetrieveInformationModel,
                             UID_GETStudyRootQueryRetrieveInformationModel};
        // Each call only looks at the contexts of its abstract syntaxes; one that
        // finds none to accept is not an error for us. With no context accepted
        // at all, DcmSCP refuses the association itself.
        // (abstract syntaxes first, then the transfer syntaxes in our order of preference)
        ASC_acceptContextsWithPreferredTransferSyntaxes(p, verification, 1, uncompressed, 3);
        if (cb_.find)
            ASC_acceptContextsWithPreferredTransferSyntaxes(p, find, 2, uncompressed, 3);
        if (cb_.move)
            ASC_acceptContextsWithPreferredTransferSyntaxes(p, move, 2, uncompressed, 3);
        if (cb_.get)
            ASC_acceptContextsWithPreferredTransferSyntaxes(p, get, 2, uncompressed, 3);
        // C-GET sends its instances back on this association: a client that
        // proposes to be the storage SCP (role selection) is granted it, one
        // that proposes nothing (storescu) keeps the default roles.
        // The accepted list may change at run time (PUT /tools/accepted-transfer-
        // syntaxes on any rest replica): asked for at each association.
        std::vector<const char *> storage;
        json_t *accepted = cb_.storage_syntaxes ? cb_.storage_syntaxes(cb_.user) : NULL;
        for (const char *uid : STORAGE_SYNTAXES)
            if (!accepted || json_has_string(accepted, uid))
                storage.push_back(uid);
        if (!storage.empty())
            ASC_acceptContextsWithPreferredTransferSyntaxes(
                p, dcmAllStorageSOPClassUIDs, numberOfDcmAllStorageSOPClassUIDs, storage.data(),
                static_cast<int>(storage.size()),
                cb_.get ? ASC_SC_ROLE_SCUSCP : ASC_SC_ROLE_DEFAULT);
        json_decref(accepted);
        (void)desired;
    }

    OFCondition negotiateAssociation() override
    {
        return EC_Normal; /* done in notifyAssociationRequest */
    }

    OFCondition handleIncomingCommand(T_DIMSE_Message *msg,
                                      const DcmPresentationContextInfo &info) override
    {
        if (msg->CommandField == DIMSE_C_STORE_RQ)
            return handleStore(msg->msg.CStoreRQ, info.presentationContextID);
        // C-FIND, C-MOVE, C-GET, C-ECHO and everything we do not serve
        // (answered as unsupported).
        return tsqr::QrWorker::handleIncomingCommand(msg, info);
    }

    // Every input from the network has a limit: a dataset that grows past
    // TESSERA_MAX_INSTANCE_SIZE aborts the association; the receive then fails
    // and handleStore() removes the partial file.
    void notifyRECEIVEProgress(const unsigned long byte_count) override
    {
        if (max_dataset_ > 0 && !aborted_ && static_cast<long long>(byte_count) > max_dataset_) {
            aborted_ = true;
            ts_warn("C-STORE dataset over the size limit, association aborted",
                    "calling_aet=%s limit=%lld", assoc_.calling_aet, max_dataset_);
            abortAssociation();
        }
    }

  private:
    OFCondition handleStore(T_DIMSE_C_StoreRQ &rq, T_ASC_PresentationContextID pres_id)
    {
        if (rq.DataSetType == DIMSE_DATASET_NULL)
            return DIMSE_BADMESSAGE; // as DcmSCP::receiveSTORERequest
        SpoolConsumer spool(static_cast<size_t>(memory_threshold_ > 0 ? memory_threshold_ : 0),
                            cb_);
        OFCondition cond = receiveFile(rq, pres_id, spool);
        if (cond.bad()) {
            spool.discard();
            if (cond.code() == DIMSEC_OUTOFRESOURCES && cond.module() == OFM_dcmnet) {
                // the rest of the data set was read off the wire (DIMSE_ignoreDataSet):
                // the association stays usable, the client is told we are out of resources
                ts_error("cannot receive instance", "error=\"%s\"",
                         spool.error().empty() ? cond.text() : spool.error().c_str());
                return respond(pres_id, rq, STATUS_STORE_Refused_OutOfResources,
                               "storage unavailable");
            }
            // Aborted or broken association: nothing of the unfinished instance stays.
            ts_warn("instance not received completely, dropped",
                    "calling_aet=%s sop=%s error=\"%s\"", assoc_.calling_aet,
                    rq.AffectedSOPInstanceUID, cond.text());
            return cond;
        }
        ts_dicom_store_rq req = {rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID, nullptr,
                                 nullptr, 0};
        if (spool.inMemory()) {
            req.data = spool.data();
            req.len = spool.size();
        } else {
            req.path = spool.release();
        }
        char comment[128] = "";
        uint16_t status = cb_.store(cb_.user, &assoc_, &req, comment, sizeof(comment));
        return respond(pres_id, rq, status, comment);
    }

    static void onReceiveProgress(void *self, unsigned long bytes)
    {
        static_cast<Worker *>(self)->notifyRECEIVEProgress(bytes);
    }

    // What DcmSCP::receiveSTORERequest(filename) writes (dcmtk's meta header,
    // as DIMSE_createFilestream makes it, then the data set's bytes as they
    // come), into spool instead of a file.
    OFCondition receiveFile(T_DIMSE_C_StoreRQ &rq, T_ASC_PresentationContextID pres_id,
                            SpoolConsumer &spool)
    {
        T_ASC_Association *assoc = association();
        if (!assoc)
            return DIMSE_ILLEGALASSOCIATION;
        T_ASC_PresentationContext pc;
        OFCondition cond = ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc);
        if (cond.bad())
            return cond;
        SpoolStream out(&spool);
        {
            DcmMetaInfo meta;
            Uint8 version[2] = {0, 1};
            meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, 0);
            meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2);
            meta.putAndInsertString(DCM_MediaStorageSOPClassUID, rq.AffectedSOPClassUID);
            meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, rq.AffectedSOPInstanceUID);
            meta.putAndInsertString(DCM_TransferSyntaxUID, pc.acceptedTransferSyntax);
            meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID);
            meta.putAndInsertString(DCM_ImplementationVersionName,
                                    OFFIS_DTK_IMPLEMENTATION_VERSION_NAME2);
            meta.putAndInsertString(DCM_SourceApplicationEntityTitle,
                                    assoc->params->DULparams.callingAPTitle);
            cond = meta.computeGroupLengthAndPadding(
                EGL_withGL, EPD_noChange, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_UndefinedLength);
            if (cond.good()) {
                meta.transferInit();
                cond = meta.write(out, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength,
                                  nullptr);
                meta.transferEnd();
            }
            if (cond.bad())
                return makeDcmnetCondition(DIMSEC_OUTOFRESOURCES, OF_error, cond.text());
        }
        T_ASC_PresentationContextID data_pid = pres_id;
        cond = DIMSE_receiveDataSetInFile(
            assoc, getDIMSEBlockingMode(), static_cast<int>(getDIMSETimeout()), &data_pid, &out,
            getProgressNotificationMode() ? onReceiveProgress : nullptr, this);
        if (cond.good() && data_pid != pres_id)
            return makeDcmnetCondition(
                DIMSEC_INVALIDPRESENTATIONCONTEXTID, OF_error,
                "DIMSE: Presentation Contexts of Command and Data Set differ");
        if (cond.good() && spool.status().bad())
            return spool.status();
        return cond;
    }

    OFCondition respond(T_ASC_PresentationContextID pres_id, const T_DIMSE_C_StoreRQ &rq,
                        uint16_t status, const char *comment)
    {
        if (!comment || !*comment || status == STATUS_Success)
            return sendSTOREResponse(pres_id, rq, status);
        // ErrorComment (0000,0902) is LO: 64 characters at most.
        DcmDataset detail;
        char text[65];
        snprintf(text, sizeof(text), "%s", comment);
        detail.putAndInsertString(DCM_ErrorComment, text);
        return sendSTOREResponse(pres_id, rq.MessageID, rq.AffectedSOPClassUID,
                                 rq.AffectedSOPInstanceUID, status, &detail);
    }

    ts_dicom_scp_callbacks cb_;
    std::string our_aet_;
    bool check_called_;
    long long max_dataset_;
    long long memory_threshold_;
    bool aborted_ = false;
    ts_dicom_assoc assoc_;
};

} // namespace

struct ts_dicom_scp {
    ts_dicom_scp_config cfg;
    std::string aet;
    ts_dicom_scp_callbacks cb;
    DcmSharedSCPConfig shared;
    tsnet::Listener *listener = nullptr;
};

static void configure(ts_dicom_scp *scp)
{
    DcmSCPConfig &c = *scp->shared;
    c.setAETitle(scp->aet.c_str());
    c.setPort(static_cast<Uint16>(scp->cfg.port));
    c.setMaxReceivePDULength(static_cast<Uint32>(scp->cfg.max_pdu));
    c.setACSETimeout(static_cast<Uint32>(scp->cfg.timeout_s));
    c.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    c.setDIMSETimeout(static_cast<Uint32>(scp->cfg.timeout_s));
    c.setHostLookupEnabled(OFFalse);
    c.setProgressNotificationMode(OFTrue); // for the dataset size limit
    c.setRespondWithCalledAETitle(OFTrue);
    // No presentation contexts in the profile: Worker::notifyAssociationRequest
    // accepts them from the complete lists (a profile holds 128 at most).
}

extern "C" int ts_dicom_scp_new(const ts_dicom_scp_config *cfg, const ts_dicom_scp_callbacks *cb,
                                ts_dicom_scp **out, ts_err *err)
{
    *out = nullptr;
    ts_dicom_scp *scp = new ts_dicom_scp();
    scp->cfg = *cfg;
    scp->aet = cfg->aet;
    scp->cfg.aet = scp->aet.c_str();
    scp->cb = *cb;
    configure(scp);
    int rc = tsnet::Listener::open(tsnet::listener_config(scp->cfg), &scp->listener, err);
    if (rc != 0) {
        delete scp;
        return rc;
    }
    *out = scp;
    return 0;
}

extern "C" int ts_dicom_scp_run(ts_dicom_scp *scp, ts_err *err)
{
    ts_info("DICOM SCP listening", "aet=\"%s\" port=%d max_associations=%d", scp->aet.c_str(),
            scp->cfg.port, scp->cfg.max_associations);
    scp->listener->run([scp](T_ASC_Association *assoc) {
        Worker worker(scp->cb, scp->aet, scp->cfg.check_called_aet, scp->cfg.max_dataset,
                      scp->cfg.memory_threshold);
        worker.setSharedConfig(scp->shared);
        worker.setAssociation(assoc); // C-GET's sub-operations go out on it
        worker.setTimeout(scp->cfg.timeout_s);
        OFCondition cond = worker.run(assoc); // negotiates, serves, releases, frees assoc
        if (cond.bad() && cond != DUL_PEERREQUESTEDRELEASE && cond != DUL_PEERABORTEDASSOCIATION)
            ts_debug("association ended", "reason=\"%s\"", cond.text());
    });
    (void)err;
    return 0;
}

extern "C" void ts_dicom_scp_stop(ts_dicom_scp *scp)
{
    if (scp)
        scp->listener->stop();
}

extern "C" int ts_dicom_scp_active(ts_dicom_scp *scp)
{
    return scp->listener->connections();
}

extern "C" void ts_dicom_scp_free(ts_dicom_scp *scp)
{
    if (!scp)
        return;
    delete scp->listener;
    delete scp;
}
