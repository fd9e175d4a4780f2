// The DICOM upper layer under dcmtk, shared by the SCPs (dicom_scp.cc,
// dicom_find.cc) and the SCUs (dicom_scu.cc, dicom_qr_scu.cc): one accept loop
// for every DICOM port, and the transport layer that every dcmtk network of the
// process reads through. Shared by dicom_*.cc only.
//
// Why the transport layer: dcmtk 3.6.7's DUL_NextPDV walks the PDVs of one
// P-DATA-TF wrongly (it advances by the length of the next PDV instead of the
// current one), so a legal PDU holding a command PDV and several data PDVs
// makes it read past its buffer (SIGSEGV with ten PDVs, "Different PresIDs"
// with two). The layer hands dcmtk each PDV as a P-DATA-TF of its own, which
// PS3.8 makes equivalent, so dcmtk only ever sees one PDV per PDU; PDV items
// that do not add up to their PDU's length end the connection. Command sets are
// checked whole before dcmtk parses them (at most 64 KiB, every element within
// the set): dcmtk allocates an element's declared length before checking it,
// so a 20-byte command declaring a 4 GB element cost a 4 GB allocation (found
// by tests/fuzz/fuzz_dul.c).
//
// Why the accept loop: ASC_receiveAssociation accepts and then reads the
// A-ASSOCIATE-RQ on the calling thread, so one silent connection held up every
// other peer. Here the listening thread only accepts; each connection's thread
// reads its A-ASSOCIATE-RQ (bounded in time and size, with limits on the
// connections still negotiating per peer address and in total) and only then
// gives it to dcmtk, whose read can no longer block.
//
// DICOM TLS: with a certificate, each connection's thread first does the TLS
// handshake through dcmtls (DcmTLSTransportLayer, OpenSSL), reads the
// A-ASSOCIATE-RQ through that session, and the PDV-splitting connection then
// reads and writes through it: the same checks hold over TLS.
#ifndef TS_DICOM_NET_HH
#define TS_DICOM_NET_HH

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmlayer.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

class DcmTLSTransportLayer;

#include "dicom/dicom.h"
#include "base/err.h"

namespace tsnet
{

// Makes every connection of `net` read through the PDV-splitting layer (the
// network owns the layer). Call once per network, right after creating it.
// timeout_s bounds the wait for the rest of a PDU or PDV header once its first
// byte came.
OFCondition use_pdv_splitting_layer(T_ASC_Network *net, int timeout_s);
// The layer of one DcmSCU association to peer (the caller owns it and keeps it
// until the DcmSCU is gone: DcmSCU does not own it). It is given through the
// protected useSecureConnection(), between initNetwork() and
// negotiateAssociation(). When peer->tls the connection speaks DICOM TLS with
// our certificate and key (TESSERA_DICOM_TLS_CERTIFICATE/_PRIVATE_KEY, the
// same as our ports') and refuses a peer whose certificate no CA of
// TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES signed; nullptr and err when a setting
// is missing or a file cannot be used.
DcmTransportLayer *scu_layer(const ts_dicom_peer *peer, ts_err *err);

// Whether an association failed in DICOM TLS (the handshake: a peer that
// speaks no TLS, a certificate refused on either side), not in DICOM.
bool is_tls_failure(const OFCondition &cond);
// What an SCU's error says then, before dcmtk's words.
#define TSNET_TLS_FAILED                                                                           \
    "DICOM TLS handshake failed (is the peer's port DICOM TLS, and is its certificate signed "     \
    "by a CA of TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES, and ours by one it trusts?)"

// Owns an SCU's layer: a base class listed before DcmSCU, so that the layer
// outlives the association that DcmSCU's destructor may still close.
struct ScuLayerOwner {
    std::unique_ptr<DcmTransportLayer> scu_layer_;
};

struct ListenerConfig {
    int port;
    int max_pdu;              // our maximum receive PDU length (dcmtk's association buffer)
    int timeout_s;            // for the A-ASSOCIATE-RQ to arrive whole
    int max_associations;     // associations served at once; more are rejected (transient)
    int max_pending;          // connections whose A-ASSOCIATE-RQ is still arriving, in total
    int max_pending_per_peer; // the same per peer address
    // DICOM TLS: a certificate makes the port TLS only (ts_dicom_scp_config says more)
    std::string tls_certificate, tls_private_key, tls_trusted;
    bool tls_client_cert_required = true;
};

// The listener's part of an SCP's configuration.
ListenerConfig listener_config(const ts_dicom_scp_config &cfg);

class Listener
{
  public:
    // Serves one association on the thread that received it; returns when it ended.
    using Serve = std::function<void(T_ASC_Association *assoc)>;

    // Opens the port (a port in use fails here, at start).
    static int open(const ListenerConfig &cfg, Listener **out, ts_err *err);
    ~Listener();

    // Accepts until stop(), then waits for every connection it gave out to end.
    void run(const Serve &serve);
    void stop();
    // Connections being negotiated or served.
    int connections();

  private:
    Listener() = default;
    void handle(int fd, std::string peer, const Serve &serve);
    bool read_request(int fd, DcmTransportConnection *tls, const std::string &peer,
                      std::string *pdu);
    DcmTransportConnection *tls_accept(int fd, const std::string &peer);
    void release_pending(const std::string &peer);

    ListenerConfig cfg_{};
    int listen_fd_ = -1;
    T_ASC_Network *net_ = nullptr;
    DcmTLSTransportLayer *tls_ = nullptr; // the TLS context, when the port speaks TLS
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable idle_;
    int threads_ = 0; // connection threads still running
    int active_ = 0;  // associations being served
    int pending_ = 0; // connections still sending their A-ASSOCIATE-RQ
    std::map<std::string, int> pending_by_peer_;
};

} // namespace tsnet

#endif
