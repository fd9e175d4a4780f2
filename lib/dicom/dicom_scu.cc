// The DICOM SCU: C-ECHO and C-STORE to a peer over DcmSCU (see dicom.h).
//
// A store call reads each file's SOP class and transfer syntax first and proposes
// exactly the presentation contexts those files need: one per (SOP class, the
// file's own syntax), so that files travel unchanged, one per (SOP class, the
// syntax the caller asked for) when it asked for one, plus one per SOP class with
// Explicit/Implicit VR Little Endian for every file we can decode, in case the
// peer refuses their own syntax (big endian, deflated, JPEG 2000 ...): Orthanc
// proposes the same. A file is then converted to what the peer accepted.
#include "dicom_internal.hh"
#include "dicom_net.hh"

#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scu.h>

#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "dicom/codecs.h"

namespace
{

// Odd presentation context ids 1..255: an association carries 128 at most.
const size_t MAX_CONTEXTS = 128;

const uint16_t NOT_SENT = 0xFFFF;

// The peer as it appears in every message: "TESSERA@127.0.0.1:4242".
std::string peer_name(const ts_dicom_peer *peer)
{
    return std::string(peer->aet ? peer->aet : "") + "@" + (peer->host ? peer->host : "") + ":" +
           std::to_string(peer->port);
}

// peer->timeout_s, or 30 s when it is not set.
int timeout_of(const ts_dicom_peer *peer)
{
    return peer->timeout_s > 0 ? peer->timeout_s : 30;
}

bool is_timeout(const OFCondition &cond)
{
    return cond == DUL_READTIMEOUT || cond == DIMSE_NODATAAVAILABLE;
}

class Scu : private tsnet::ScuLayerOwner, public DcmSCU
{
  public:
    // dcmtk gets one PDV per PDU from the peer (dicom_net.hh says why), over
    // DICOM TLS when the peer is marked so. 0, or err naming what is missing.
    int useLayer(const ts_dicom_peer *peer, ts_err *err)
    {
        scu_layer_.reset(tsnet::scu_layer(peer, err));
        if (!scu_layer_)
            return err->code ? err->code : TS_EINVAL;
        OFCondition cond = useSecureConnection(scu_layer_.get());
        if (cond.bad())
            return ts_err_set(err, TS_EIO, "cannot set up the association: %s", cond.text());
        return 0;
    }

    explicit Scu(const ts_dicom_peer *peer)
    {
        setAETitle(peer->our_aet && *peer->our_aet ? peer->our_aet : "TESSERA");
        setPeerAETitle(peer->aet ? peer->aet : "");
        setPeerHostName(peer->host ? peer->host : "");
        setPeerPort(static_cast<Uint16>(peer->port));
        Uint32 timeout = static_cast<Uint32>(timeout_of(peer));
        // Without non-blocking mode DIMSE reads ignore the timeout and a silent
        // peer would hold us forever.
        setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        setDIMSETimeout(timeout);
        setACSETimeout(timeout);
        // dcmtk keeps the connect timeout in a process-wide variable; every
        // caller sets it from its own peer, which is the best dcmtk allows.
        setConnectionTimeout(static_cast<Sint32>(timeout));
        // Lets sendSTORERequest() convert an uncompressed file to the syntax of the
        // fallback context; it does nothing when the syntaxes already match.
        setDatasetConversionMode(OFTrue);
        setProgressNotificationMode(OFFalse);
    }

    // C-ECHO that also returns the peer's status (DcmSCU::sendECHORequest drops it).
    OFCondition echo(T_ASC_PresentationContextID pcid, Uint16 &status)
    {
        T_DIMSE_Message msg;
        memset(&msg, 0, sizeof(msg));
        msg.CommandField = DIMSE_C_ECHO_RQ;
        T_DIMSE_C_EchoRQ &rq = msg.msg.CEchoRQ;
        rq.MessageID = 1;
        rq.DataSetType = DIMSE_DATASET_NULL;
        OFStandard::strlcpy(rq.AffectedSOPClassUID, UID_VerificationSOPClass,
                            sizeof(rq.AffectedSOPClassUID));
        OFCondition cond = sendDIMSEMessage(pcid, &msg, nullptr);
        if (cond.bad())
            return cond;
        T_DIMSE_Message rsp;
        memset(&rsp, 0, sizeof(rsp));
        DcmDataset *detail = nullptr;
        cond = receiveDIMSECommand(&pcid, &rsp, &detail, nullptr);
        delete detail;
        if (cond.bad())
            return cond;
        if (rsp.CommandField != DIMSE_C_ECHO_RSP)
            return DIMSE_BADCOMMANDTYPE;
        status = rsp.msg.CEchoRSP.DimseStatus;
        return EC_Normal;
    }
};

// Connects and negotiates; on failure fills err with a message naming the peer.
int open_association(Scu &scu, const char *what, const ts_dicom_peer *peer, ts_err *err)
{
    OFCondition cond = scu.initNetwork();
    if (cond.bad())
        return ts_err_set(err, TS_EIO, "%s %s: cannot set up the association: %s", what,
                          peer_name(peer).c_str(), cond.text());
    ts_err why = {0, ""};
    int rc = scu.useLayer(peer, &why);
    if (rc)
        return ts_err_set(err, rc, "%s %s: %s", what, peer_name(peer).c_str(), why.msg);
    cond = scu.negotiateAssociation();
    if (cond.good())
        return 0;
    if (peer->tls && tsnet::is_tls_failure(cond))
        return ts_err_set(err, TS_EIO, "%s %s: " TSNET_TLS_FAILED ": %s", what,
                          peer_name(peer).c_str(), cond.text());
    if (cond == DUL_ASSOCIATIONREJECTED)
        return ts_err_set(err, TS_EIO,
                          "%s %s: association rejected (check that the peer knows AE title "
                          "'%s' and that its AE title is '%s')",
                          what, peer_name(peer).c_str(),
                          peer->our_aet && *peer->our_aet ? peer->our_aet : "TESSERA",
                          peer->aet ? peer->aet : "");
    if (cond == NET_EC_NoAcceptablePresentationContexts)
        return ts_err_set(err, TS_EIO,
                          "%s %s: the peer accepted none of the proposed presentation contexts",
                          what, peer_name(peer).c_str());
    if (is_timeout(cond))
        return ts_err_set(err, TS_ETIMEOUT, "%s %s: no answer within %d s", what,
                          peer_name(peer).c_str(), timeout_of(peer));
    return ts_err_set(err, TS_EIO, "%s %s: cannot connect: %s", what, peer_name(peer).c_str(),
                      cond.text());
}

// What a store needs to know of a file before the association is negotiated.
struct FileInfo {
    bool readable = false;
    std::string sop_class;
    std::string syntax;        // transfer syntax UID as stored
    bool uncompressed = false; // dcmtk converts it to Explicit/Implicit VR LE itself
    bool decodable = false;    // may be converted to Explicit/Implicit VR LE
};

// Reads the meta header and the start of the dataset only (up to SOPInstanceUID).
void read_file_info(const char *path, FileInfo &info)
{
    DcmFileFormat ff;
    OFCondition cond = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange, 256, ERM_autoDetect,
                                           DcmTagKey(0x0008, 0x0019));
    if (cond.bad()) {
        ts_warn("cannot send file: not readable DICOM", "path=\"%s\" error=\"%s\"", path,
                cond.text());
        return;
    }
    DcmDataset *ds = ff.getDataset();
    OFString sop_class, sop_uid;
    if (ds->findAndGetOFString(DCM_SOPClassUID, sop_class).bad() || sop_class.empty() ||
        ds->findAndGetOFString(DCM_SOPInstanceUID, sop_uid).bad() || sop_uid.empty()) {
        ts_warn("cannot send file: no SOPClassUID or SOPInstanceUID", "path=\"%s\"", path);
        return;
    }
    DcmXfer xfer(ds->getOriginalXfer());
    if (xfer.getXfer() == EXS_Unknown) {
        ts_warn("cannot send file: unknown transfer syntax", "path=\"%s\"", path);
        return;
    }
    info.sop_class = sop_class.c_str();
    info.syntax = xfer.getXferID();
    info.uncompressed = !xfer.isEncapsulated();
    info.decodable =
        ts_transcode_possible(info.syntax.c_str(), UID_LittleEndianExplicitTransferSyntax, 0);
    info.readable = true;
}

// A presentation context we propose: abstract syntax and its transfer syntaxes.
// The fallback context of a SOP class has the key (class, "").
typedef std::pair<std::string, std::string> ContextKey;

// The syntax the caller asked for, if it differs from f's and can be made.
const char *wanted(const ts_dicom_peer *peer, const FileInfo &f)
{
    const char *t = peer->transcode;
    if (!t || !*t || f.syntax == t ||
        !ts_transcode_possible(f.syntax.c_str(), t, TS_TRANSCODE_ALLOW_LOSSY))
        return nullptr;
    return t;
}

std::vector<ContextKey> contexts_of(const ts_dicom_peer *peer, const FileInfo &f)
{
    std::vector<ContextKey> keys;
    keys.emplace_back(f.sop_class, f.syntax);
    if (const char *t = wanted(peer, f))
        keys.emplace_back(f.sop_class, t);
    if (f.decodable)
        keys.emplace_back(f.sop_class, "");
    return keys;
}

// Sends f converted to `to` on pcid: 0 and *status, or a dcmdata condition
// (the file not sent, the association still usable) with a log line.
OFCondition send_converted(Scu &scu, const ts_dicom_peer *peer, T_ASC_PresentationContextID pcid,
                           const char *path, const FileInfo &f, const char *to, Uint16 &status)
{
    DcmFileFormat ff;
    OFCondition cond = ff.loadFile(path);
    ts_err err = {0, ""};
    if (cond.good()) {
        unsigned flags = peer->transcode && !strcmp(peer->transcode, to)
                             ? static_cast<unsigned>(TS_TRANSCODE_ALLOW_LOSSY)
                             : 0u;
        if (ts_transcode_dataset(ff.getDataset(), EXS_Unknown, to, flags, &err)) {
            ts_warn("file not sent: no conversion to a syntax the peer accepted",
                    "peer=%s path=\"%s\" syntax=%s to=%s error=\"%s\"", peer_name(peer).c_str(),
                    path, f.syntax.c_str(), to, err.msg);
            return EC_CannotChangeRepresentation;
        }
        ts_debug("file converted for the peer", "peer=%s path=\"%s\" syntax=%s to=%s",
                 peer_name(peer).c_str(), path, f.syntax.c_str(), to);
        cond = scu.sendSTORERequest(pcid, "", ff.getDataset(), status,
                                    peer->move_originator_aet ? peer->move_originator_aet : "",
                                    peer->move_originator_msg_id);
    }
    return cond;
}

// Sends the files of one batch (indices into paths) over one association.
int store_batch(const ts_dicom_peer *peer, const char *const *paths,
                const std::vector<FileInfo> &infos, const std::vector<size_t> &files,
                const std::vector<ContextKey> &contexts, uint16_t *statuses,
                bool (*progress)(void *, size_t, uint16_t), void *user, ts_err *err)
{
    Scu scu(peer);
    for (const ContextKey &c : contexts) {
        OFList<OFString> syntaxes;
        if (c.second.empty()) {
            syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
            syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
        } else {
            syntaxes.push_back(c.second.c_str());
        }
        scu.addPresentationContext(c.first.c_str(), syntaxes);
    }
    int rc = open_association(scu, "store", peer, err);
    if (rc)
        return rc;
    size_t last = files.front();
    for (size_t i : files) {
        if (progress && i != files.front() && !progress(user, last, statuses[last])) {
            scu.releaseAssociation();
            return ts_err_set(err, TS_ECANCELED, "store %s: cancelled", peer_name(peer).c_str());
        }
        last = i;
        const FileInfo &f = infos[i];
        // The syntax asked for, the stored one, then what we can convert to.
        const char *to = wanted(peer, f);
        T_ASC_PresentationContextID pcid =
            to ? scu.findPresentationContextID(f.sop_class.c_str(), to) : 0;
        if (pcid == 0) {
            to = nullptr;
            pcid = scu.findPresentationContextID(f.sop_class.c_str(), f.syntax.c_str());
        }
        for (const char *le :
             {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}) {
            if (pcid == 0 && f.decodable) {
                pcid = scu.findPresentationContextID(f.sop_class.c_str(), le);
                to = le;
            }
        }
        if (pcid == 0) {
            ts_warn("file not sent: the peer accepted neither its SOP class with its transfer "
                    "syntax nor one it can be converted to",
                    "peer=%s path=\"%s\" sop_class=%s syntax=%s", peer_name(peer).c_str(), paths[i],
                    f.sop_class.c_str(), f.syntax.c_str());
            continue;
        }
        Uint16 status = NOT_SENT;
        // Uncompressed to uncompressed: dcmtk's own conversion (setDatasetConversionMode).
        bool convert = to && !(f.uncompressed && DcmXfer(to).isNotEncapsulated());
        OFCondition cond =
            convert
                ? send_converted(scu, peer, pcid, paths[i], f, to, status)
                : scu.sendSTORERequest(pcid, paths[i], nullptr, status,
                                       peer->move_originator_aet ? peer->move_originator_aet : "",
                                       peer->move_originator_msg_id);
        if (cond.good()) {
            statuses[i] = status;
            continue;
        }
        // A file that could not be read or converted fails in dcmdata before
        // anything goes on the wire; the association is still usable.
        if (cond.module() == OFM_dcmdata) {
            ts_warn("file not sent", "peer=%s path=\"%s\" error=\"%s\"", peer_name(peer).c_str(),
                    paths[i], cond.text());
            continue;
        }
        scu.abortAssociation();
        if (is_timeout(cond))
            return ts_err_set(err, TS_ETIMEOUT, "store %s: no answer within %d s while sending %s",
                              peer_name(peer).c_str(), timeout_of(peer), paths[i]);
        return ts_err_set(err, TS_EIO, "store %s: association broken while sending %s: %s",
                          peer_name(peer).c_str(), paths[i], cond.text());
    }
    if (progress && !progress(user, last, statuses[last])) {
        scu.releaseAssociation();
        return ts_err_set(err, TS_ECANCELED, "store %s: cancelled", peer_name(peer).c_str());
    }
    OFCondition cond = scu.releaseAssociation();
    if (cond.bad())
        ts_debug("association release failed", "peer=%s error=\"%s\"", peer_name(peer).c_str(),
                 cond.text());
    return 0;
}

} // namespace

extern "C" int ts_dicom_echo(const ts_dicom_peer *peer, ts_err *err)
{
    Scu scu(peer);
    OFList<OFString> syntaxes;
    syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
    syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
    scu.addPresentationContext(UID_VerificationSOPClass, syntaxes);
    int rc = open_association(scu, "echo", peer, err);
    if (rc)
        return rc;
    T_ASC_PresentationContextID pcid =
        scu.findAnyPresentationContextID(UID_VerificationSOPClass, "");
    Uint16 status = NOT_SENT;
    OFCondition cond = scu.echo(pcid, status);
    if (cond.bad()) {
        scu.abortAssociation();
        if (is_timeout(cond))
            return ts_err_set(err, TS_ETIMEOUT, "echo %s: no answer within %d s",
                              peer_name(peer).c_str(), timeout_of(peer));
        return ts_err_set(err, TS_EIO, "echo %s: %s", peer_name(peer).c_str(), cond.text());
    }
    scu.releaseAssociation();
    if (status != STATUS_Success)
        return ts_err_set(err, TS_EIO, "echo %s: the peer answered status 0x%04x",
                          peer_name(peer).c_str(), status);
    return 0;
}

extern "C" int ts_dicom_store_files(const ts_dicom_peer *peer, const char *const *paths, size_t n,
                                    uint16_t *statuses, ts_err *err)
{
    return ts_dicom_store_files_progress(peer, paths, n, statuses, nullptr, nullptr, err);
}

extern "C" int ts_dicom_store_files_progress(const ts_dicom_peer *peer, const char *const *paths,
                                             size_t n, uint16_t *statuses,
                                             bool (*progress)(void *, size_t, uint16_t), void *user,
                                             ts_err *err)
{
    for (size_t i = 0; i < n; i++)
        statuses[i] = NOT_SENT;
    std::vector<FileInfo> infos(n);
    for (size_t i = 0; i < n; i++)
        read_file_info(paths[i], infos[i]);

    // Usually one association; a set of files that needs more than 128 contexts
    // (dozens of SOP classes) goes over several, one after the other.
    std::vector<size_t> batch;
    std::vector<ContextKey> contexts;
    std::set<ContextKey> proposed;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !infos[i].readable)
            continue;
        std::vector<ContextKey> need;
        if (i < n)
            for (const ContextKey &k : contexts_of(peer, infos[i]))
                if (!proposed.count(k))
                    need.push_back(k);
        if (i == n || contexts.size() + need.size() > MAX_CONTEXTS) {
            if (!batch.empty()) {
                int rc =
                    store_batch(peer, paths, infos, batch, contexts, statuses, progress, user, err);
                if (rc)
                    return rc;
            }
            if (i == n)
                break;
            batch.clear();
            contexts.clear();
            proposed.clear();
            need = contexts_of(peer, infos[i]);
        }
        for (const ContextKey &k : need) {
            proposed.insert(k);
            contexts.push_back(k);
        }
        batch.push_back(i);
    }
    return 0;
}
