// The DICOM upper layer under dcmtk: the PDV-splitting transport layer and the
// accept loop of every DICOM port (see dicom_net.hh for why each exists).
#include "dicom_net.hh"

#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmtls/tlslayer.h>

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"

namespace
{

const unsigned char PDU_ASSOCIATE_RQ = 0x01;
const unsigned char PDU_P_DATA_TF = 0x04;
// An A-ASSOCIATE-RQ larger than this is not a real one: 128 presentation
// contexts of ten transfer syntaxes each take about 40 KB.
const uint32_t MAX_ASSOCIATE_RQ = 1u << 20;
// A DIMSE command set is a few hundred bytes; an N-ACTION's is the largest.
const size_t MAX_COMMAND_SET = 1u << 16;

uint32_t get_le32(const unsigned char *p)
{
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// A command set is implicit VR little endian, group 0000, no sequences
// (PS3.7 6.3.1), at most MAX_COMMAND_SET bytes: no element may claim more.
// dcmtk parses a command as its fragments arrive and allocates an element's
// declared length before it has the bytes, so a 4 GB length in a 20-byte
// command cost a 4 GB allocation. Checked on every fragment (the elements
// whose headers have arrived), and on the last one that the elements fill
// the command set exactly.
const char *command_set_fault(const std::string &cmd, bool last)
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(cmd.data());
    size_t n = cmd.size(), off = 0;
    while (off + 8 <= n) {
        uint32_t len = get_le32(p + off + 4);
        if (len > MAX_COMMAND_SET - off - 8)
            return "command element longer than a command set may be";
        off += 8 + size_t(len);
    }
    if (!last)
        return nullptr;
    if (off < n)
        return "command set ends inside an element header";
    if (off > n)
        return "command element longer than its command set";
    return nullptr;
}

uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = static_cast<unsigned char>(v >> 24);
    p[1] = static_cast<unsigned char>(v >> 16);
    p[2] = static_cast<unsigned char>(v >> 8);
    p[3] = static_cast<unsigned char>(v);
}

// Reads exactly n bytes, waiting at most until `deadline`, and no longer once
// *stop is set (a service that stops does not wait for a silent peer). false on
// end of stream, error, timeout or stop (errno says which).
bool read_full(int fd, unsigned char *buf, size_t n, std::chrono::steady_clock::time_point deadline,
               const std::atomic<bool> *stop)
{
    size_t got = 0;
    while (got < n) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return false;
        }
        if (stop->load()) {
            errno = ECANCELED;
            return false;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, static_cast<int>(std::min<long long>(left, 500)));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return false;
        if (r == 0)
            continue; /* look at the deadline and the stop flag again */
        ssize_t k = recv(fd, buf + got, n - got, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = ECONNRESET;
            return false;
        }
        got += static_cast<size_t>(k);
    }
    return true;
}

// The same over a TLS connection (dcmtls): its networkDataAvailable() also
// sees the bytes OpenSSL already holds. A record cut short is bounded by the
// socket's receive timeout (tls_accept).
bool read_full_tls(DcmTransportConnection *c, unsigned char *buf, size_t n,
                   std::chrono::steady_clock::time_point deadline, const std::atomic<bool> *stop)
{
    size_t got = 0;
    while (got < n) {
        if (std::chrono::steady_clock::now() >= deadline) {
            errno = ETIMEDOUT;
            return false;
        }
        if (stop->load()) {
            errno = ECANCELED;
            return false;
        }
        if (!c->networkDataAvailable(1))
            continue; /* look at the deadline and the stop flag again */
        ssize_t k = c->read(buf + got, n - got);
        if (k <= 0) {
            if (k == 0)
                errno = ECONNRESET;
            return false;
        }
        got += static_cast<size_t>(k);
    }
    return true;
}

// The smallest Maximum Length Received we accept from a peer (0: no limit).
// dcmtk cannot cut messages into PDVs for a peer that takes a handful of
// bytes per PDU: it accepted 1 and aborted the association at the first
// answer. Real implementations announce 4 KiB or more.
const uint32_t MIN_PEER_MAX_PDU = 256;

// What PS3.8 9.3.2 forbids in an A-ASSOCIATE-RQ that dcmtk lets through, or
// NULL. pdu is the whole PDU (6-byte header, 68 fixed bytes, variable items).
const char *associate_rq_fault(const std::string &pdu)
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(pdu.data());
    size_t n = pdu.size(), off = 6 + 68;
    bool seen[256] = {false};
    while (off + 4 <= n) {
        unsigned type = p[off];
        size_t len = (size_t(p[off + 2]) << 8) | p[off + 3];
        if (off + 4 + len > n)
            return nullptr; // dcmtk refuses a broken item list itself
        const unsigned char *body = p + off + 4;
        if (type == 0x20 && len >= 1) {
            unsigned id = body[0];
            if (id % 2 == 0)
                return "presentation context id is not odd";
            if (seen[id])
                return "two presentation contexts have the same id";
            seen[id] = true;
        } else if (type == 0x50) {
            for (size_t u = 0; u + 4 <= len;) {
                size_t ulen = (size_t(body[u + 2]) << 8) | body[u + 3];
                if (body[u] == 0x51 && ulen == 4 && u + 8 <= len) {
                    uint32_t max = get_be32(body + u + 4);
                    if (max != 0 && max < MIN_PEER_MAX_PDU)
                        return "maximum PDU length too small";
                }
                u += 4 + ulen;
            }
        }
        off += 4 + len;
    }
    return nullptr;
}

// A-ASSOCIATE-RJ: rejected permanently by the service user, no reason given.
void send_reject(int fd, DcmTransportConnection *tls)
{
    static const unsigned char rj[10] = {0x03, 0, 0, 0, 0, 4, 0, 1, 1, 1};
    if (tls) {
        unsigned char copy[sizeof(rj)];
        memcpy(copy, rj, sizeof(rj));
        tls->write(copy, sizeof(copy));
        return;
    }
    ssize_t k = send(fd, rj, sizeof(rj), MSG_NOSIGNAL);
    (void)k;
}

// Send and receive timeouts of a socket (0: none); the TLS handshake and the
// association request are read with them, so a silent TLS peer cannot hold
// its thread.
void socket_timeouts(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Set by Listener::handle around ASC_receiveAssociation, read by the layer's
// createConnection on the same thread: the bytes the connection's thread read
// before dcmtk took the connection over (its A-ASSOCIATE-RQ), and whether a
// connection object now owns the socket.
struct Handover {
    std::string *prefix = nullptr;
    DcmTransportConnection *tls = nullptr; // the TLS connection, which the new one takes over
    bool taken = false;
};
thread_local Handover handover;

// dcmExternalSocketHandle is one global of dcmtk's: the connection threads take
// turns to hand their socket to ASC_receiveAssociation through it.
std::mutex external_socket_mu;

// A TCP connection that hands dcmtk one PDV per P-DATA-TF PDU. It rewrites the
// stream as it passes: other PDUs and the PDVs' data go through untouched and
// unbuffered; only PDU and PDV headers (6 bytes each) are read ahead. Over DICOM
// TLS, the bytes come from and go to dcmtls's connection (tls, owned).
class PdvSplitConnection : public DcmTCPConnection
{
  public:
    PdvSplitConnection(DcmNativeSocketType sock, std::string prefix, int timeout_s,
                       DcmTransportConnection *tls)
        : DcmTCPConnection(sock), prefix_(std::move(prefix)), timeout_s_(timeout_s), tls_(tls)
    {
    }

    ~PdvSplitConnection() override
    {
        delete tls_; // closes the TLS session (close_notify) and its own descriptor
    }

    ssize_t write(void *buf, size_t nbyte) override
    {
        return tls_ ? tls_->write(buf, nbyte) : DcmTCPConnection::write(buf, nbyte);
    }

    void close() override
    {
        if (tls_)
            tls_->close();
        DcmTCPConnection::close();
    }

    OFBool isTransparentConnection() override
    {
        return tls_ ? OFFalse : OFTrue;
    }

    // An SCU's TLS session starts here (dcmtk calls it right after connecting);
    // an SCP's was started before the connection was made (tls_accept).
    OFCondition clientSideHandshake() override
    {
        return tls_ ? tls_->clientSideHandshake() : DcmTCPConnection::clientSideHandshake();
    }

    ssize_t read(void *buf, size_t nbyte) override
    {
        unsigned char *out = static_cast<unsigned char *>(buf);
        if (nbyte == 0)
            return 0;
        for (;;) {
            if (out_pos_ < out_.size()) {
                size_t n = std::min(nbyte, out_.size() - out_pos_);
                memcpy(out, out_.data() + out_pos_, n);
                out_pos_ += n;
                return static_cast<ssize_t>(n);
            }
            switch (state_) {
            case PASS_PDU:
            case PASS_PDV:
                if (pass_ == 0) {
                    state_ = state_ == PASS_PDU ? PDU_HEADER : PDV_HEADER;
                    continue;
                }
                {
                    ssize_t r = raw_read(out, std::min<uint64_t>(nbyte, pass_));
                    if (r > 0)
                        pass_ -= static_cast<uint64_t>(r);
                    return r;
                }
            case PDU_HEADER: {
                unsigned char h[6];
                int r = read_header(h, sizeof(h), true);
                if (r <= 0)
                    return r;
                uint32_t len = get_be32(h + 2);
                if (h[0] == PDU_P_DATA_TF && len > 0) {
                    pdu_left_ = len;
                    state_ = PDV_HEADER;
                    continue;
                }
                out_.assign(reinterpret_cast<const char *>(h), 6);
                out_pos_ = 0;
                pass_ = len;
                state_ = PASS_PDU;
                continue;
            }
            case PDV_HEADER: {
                if (pdu_left_ == 0) {
                    state_ = PDU_HEADER;
                    continue;
                }
                if (pdu_left_ < 6)
                    return malformed("PDV item header runs past the end of its P-DATA-TF");
                unsigned char h[6];
                int r = read_header(h, sizeof(h), false);
                if (r <= 0)
                    return r < 0 ? r : malformed("connection closed inside a P-DATA-TF");
                uint32_t item = get_be32(h);
                if (item < 2)
                    return malformed("PDV item shorter than its context id and control header");
                if (uint64_t(item) + 4 > pdu_left_)
                    return malformed("PDV item runs past the end of its P-DATA-TF");
                // The PDV as a P-DATA-TF of its own: PDU header, then the item's header.
                unsigned char pdu[6] = {PDU_P_DATA_TF, 0};
                put_be32(pdu + 2, item + 4);
                out_.assign(reinterpret_cast<const char *>(pdu), 6);
                out_.append(reinterpret_cast<const char *>(h), 6);
                out_pos_ = 0;
                pdu_left_ -= uint64_t(item) + 4;
                if (!(h[5] & 1)) { // data set fragment: its bytes go through as they come
                    pass_ = item - 2;
                    state_ = PASS_PDV;
                    continue;
                }
                // A command fragment is read whole and the command set checked
                // before dcmtk sees its last fragment.
                if (cmd_.size() + item - 2 > MAX_COMMAND_SET)
                    return malformed("command set larger than 64 KiB");
                size_t at = cmd_.size();
                cmd_.resize(at + item - 2);
                if (item > 2) {
                    r = read_header(reinterpret_cast<unsigned char *>(&cmd_[at]), item - 2, false);
                    if (r <= 0)
                        return r < 0 ? r : malformed("connection closed inside a command");
                }
                out_.append(cmd_, at, std::string::npos);
                const char *fault = command_set_fault(cmd_, h[5] & 2);
                if (h[5] & 2)
                    cmd_.clear();
                if (fault)
                    return malformed(fault);
                continue;
            }
            }
        }
    }

    OFBool networkDataAvailable(int timeout) override
    {
        if (out_pos_ < out_.size() || prefix_pos_ < prefix_.size())
            return OFTrue;
        return raw_available(timeout);
    }

  private:
    enum State { PDU_HEADER, PASS_PDU, PDV_HEADER, PASS_PDV };

    ssize_t raw_read(unsigned char *buf, size_t n)
    {
        if (prefix_pos_ < prefix_.size()) {
            size_t k = std::min(n, prefix_.size() - prefix_pos_);
            memcpy(buf, prefix_.data() + prefix_pos_, k);
            prefix_pos_ += k;
            return static_cast<ssize_t>(k);
        }
        return tls_ ? tls_->read(buf, n) : DcmTCPConnection::read(buf, n);
    }

    OFBool raw_available(int timeout)
    {
        return tls_ ? tls_->networkDataAvailable(timeout)
                    : DcmTCPConnection::networkDataAvailable(timeout);
    }

    // Reads a whole header (or command fragment). The first byte of a PDU may be waited for as long
    // as dcmtk likes (it asked networkDataAvailable() first when it has a
    // timeout); the rest of a header must follow within timeout_s. Returns 1,
    // 0 when the stream ended before the first byte, -1 on error.
    int read_header(unsigned char *h, size_t n, bool pdu_start)
    {
        size_t got = 0;
        while (got < n) {
            if (got > 0 || !pdu_start) {
                if (prefix_pos_ >= prefix_.size() && !raw_available(timeout_s_)) {
                    ts_warn("DICOM peer stopped in the middle of a PDU header, connection closed",
                            "timeout_s=%d", timeout_s_);
                    errno = ETIMEDOUT;
                    return -1;
                }
            }
            ssize_t k = raw_read(h + got, n - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return -1;
            if (k == 0) {
                if (got == 0 && pdu_start)
                    return 0;
                errno = ECONNRESET;
                return -1;
            }
            got += static_cast<size_t>(k);
        }
        return 1;
    }

    ssize_t malformed(const char *why)
    {
        ts_warn("malformed P-DATA-TF from a DICOM peer, connection closed", "reason=\"%s\"", why);
        errno = EPROTO;
        return -1;
    }

    std::string prefix_;
    size_t prefix_pos_ = 0;
    int timeout_s_;
    DcmTransportConnection *tls_;
    State state_ = PDU_HEADER;
    std::string out_; // rewritten headers (and command fragments) to hand out first
    size_t out_pos_ = 0;
    std::string cmd_;       // the fragments of the command set being received
    uint64_t pass_ = 0;     // bytes to pass through untouched (PASS_* states)
    uint64_t pdu_left_ = 0; // bytes of the current P-DATA-TF not yet taken (PDV states)
};

class PdvSplitLayer : public DcmTransportLayer
{
  public:
    // tls: for an SCU's association over DICOM TLS, its TLS context (owned); an
    // SCP's TLS connection comes through the handover instead.
    explicit PdvSplitLayer(int timeout_s, DcmTLSTransportLayer *tls = nullptr)
        : timeout_s_(timeout_s > 0 ? timeout_s : 30), tls_(tls)
    {
    }

    ~PdvSplitLayer() override
    {
        delete tls_;
    }

    // useSecureLayer is ignored: DcmSCU can only be given a layer of its own
    // through useSecureConnection(), which sets the flag whether TLS or not.
    DcmTransportConnection *createConnection(DcmNativeSocketType sock, OFBool) override
    {
        if (tls_) {
            // The TLS connection gets a descriptor of its own, as in tls_accept;
            // the socket timeouts bound the handshake and a record cut short.
            int tls_fd = fcntl(sock, F_DUPFD_CLOEXEC, 3);
            if (tls_fd < 0)
                return nullptr;
            DcmTransportConnection *c = tls_->createConnection(tls_fd, OFTrue);
            if (!c) {
                ::close(tls_fd);
                return nullptr;
            }
            socket_timeouts(sock, timeout_s_);
            return new PdvSplitConnection(sock, std::string(), timeout_s_, c);
        }
        std::string prefix;
        if (handover.prefix)
            prefix.swap(*handover.prefix);
        handover.taken = true;
        DcmTransportConnection *tls = handover.tls;
        handover.tls = nullptr;
        return new PdvSplitConnection(sock, std::move(prefix), timeout_s_, tls);
    }

  private:
    int timeout_s_;
    DcmTLSTransportLayer *tls_;
};

// A TLS context: our certificate and key (both or neither), the CAs the peer's
// certificate must chain to, and dcmtk's default profile (non-downgrading BCP
// 195, as storescu's +tls). Fails on any unreadable or mismatched file.
int make_tls_context(T_ASC_NetworkRole role, const std::string &certificate,
                     const std::string &private_key, const std::string &trusted,
                     DcmCertificateVerification verify, DcmTLSTransportLayer **out, ts_err *err)
{
    auto *tls = new DcmTLSTransportLayer(role, nullptr, OFTrue);
    OFCondition c = tls->setTLSProfile(TSP_Profile_BCP195_ND);
    if (c.good())
        c = tls->activateCipherSuites();
    const char *what = "TLS profile";
    if (c.good() && !certificate.empty()) {
        what = private_key.c_str();
        c = tls->setPrivateKeyFile(what, DCF_Filetype_PEM);
        if (c.good()) {
            what = certificate.c_str();
            c = tls->setCertificateFile(what, DCF_Filetype_PEM);
        }
        if (c.good() && !tls->checkPrivateKeyMatchesCertificate()) {
            delete tls;
            return ts_err_set(err, TS_EINVAL, "DICOM TLS: the private key does not match %s",
                              certificate.c_str());
        }
    }
    if (c.good() && !trusted.empty()) {
        what = trusted.c_str();
        c = tls->addTrustedCertificateFile(what, DCF_Filetype_PEM);
    }
    if (c.bad()) {
        delete tls;
        return ts_err_set(err, TS_EINVAL, "DICOM TLS: %s: %s", what, c.text());
    }
    tls->setCertificateVerification(verify);
    *out = tls;
    return 0;
}

} // namespace

namespace tsnet
{

OFCondition use_pdv_splitting_layer(T_ASC_Network *net, int timeout_s)
{
    return ASC_setTransportLayer(net, new PdvSplitLayer(timeout_s), 1);
}

bool is_tls_failure(const OFCondition &cond)
{
    // dcmtk 3.6.7 returns dcmtls's own condition; DULC_TLSERROR is what others wrap it in
    return cond.module() == OFM_dcmtls ||
           (cond.module() == OFM_dcmnet && cond.code() == DULC_TLSERROR);
}

DcmTransportLayer *scu_layer(const ts_dicom_peer *peer, ts_err *err)
{
    int timeout_s = peer->timeout_s > 0 ? peer->timeout_s : 30;
    if (!peer->tls)
        return new PdvSplitLayer(timeout_s);
    // Read at each association: files replaced on disk are taken at the next one.
    struct {
        std::string certificate, private_key, trusted;
    } tls = {ts_cfg_str(TESSERA_DICOM_TLS_CERTIFICATE), ts_cfg_str(TESSERA_DICOM_TLS_PRIVATE_KEY),
             ts_cfg_str(TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES)};
    // As Orthanc: our certificate for both directions, and a peer whose
    // certificate no trusted CA signed is refused.
    if (tls.certificate.empty() || tls.private_key.empty())
        return ts_err_set(err, TS_EINVAL,
                          "DICOM TLS to %s: TESSERA_DICOM_TLS_CERTIFICATE and "
                          "TESSERA_DICOM_TLS_PRIVATE_KEY are not both set",
                          peer->aet ? peer->aet : ""),
               nullptr;
    if (tls.trusted.empty())
        return ts_err_set(err, TS_EINVAL,
                          "DICOM TLS to %s: TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES is not set "
                          "(the CAs the modality's certificate is checked against)",
                          peer->aet ? peer->aet : ""),
               nullptr;
    DcmTLSTransportLayer *ctx = nullptr;
    if (make_tls_context(NET_REQUESTOR, tls.certificate, tls.private_key, tls.trusted,
                         DCV_requireCertificate, &ctx, err))
        return nullptr;
    return new PdvSplitLayer(timeout_s, ctx);
}

ListenerConfig listener_config(const ts_dicom_scp_config &cfg)
{
    ListenerConfig l;
    l.port = cfg.port;
    l.max_pdu = cfg.max_pdu;
    l.timeout_s = cfg.timeout_s > 0 ? cfg.timeout_s : 30;
    l.max_associations = cfg.max_associations;
    l.max_pending = cfg.max_pending > 0 ? cfg.max_pending : 64;
    l.max_pending_per_peer = cfg.max_pending_per_peer > 0 ? cfg.max_pending_per_peer : 8;
    l.tls_certificate = cfg.tls_certificate ? cfg.tls_certificate : "";
    l.tls_private_key = cfg.tls_private_key ? cfg.tls_private_key : "";
    l.tls_trusted = cfg.tls_trusted ? cfg.tls_trusted : "";
    l.tls_client_cert_required = cfg.tls_client_cert_required;
    return l;
}

// The TLS context of a listener: a client certificate is checked against the
// trusted CAs when there are some, and required when asked.
static int make_tls_layer(const ListenerConfig &cfg, DcmTLSTransportLayer **out, ts_err *err)
{
    if (cfg.tls_private_key.empty())
        return ts_err_set(err, TS_EINVAL, "DICOM TLS: a certificate without its private key");
    if (cfg.tls_client_cert_required && cfg.tls_trusted.empty())
        return ts_err_set(err, TS_EINVAL,
                          "DICOM TLS: client certificates are required but no trusted "
                          "certificates (CA file) are given");
    return make_tls_context(NET_ACCEPTOR, cfg.tls_certificate, cfg.tls_private_key, cfg.tls_trusted,
                            cfg.tls_client_cert_required ? DCV_requireCertificate
                            : cfg.tls_trusted.empty()    ? DCV_ignoreCertificate
                                                         : DCV_checkCertificate,
                            out, err);
}

int Listener::open(const ListenerConfig &cfg, Listener **out, ts_err *err)
{
    *out = nullptr;
    // the TLS files first: a service that cannot use them never opens its port
    DcmTLSTransportLayer *tls = nullptr;
    if (!cfg.tls_certificate.empty()) {
        int rc = make_tls_layer(cfg, &tls, err);
        if (rc)
            return rc;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        delete tls;
        return ts_err_set(err, TS_EIO, "listen on DICOM port %d: socket: %s", cfg.port,
                          strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(cfg.port));
    if (bind(fd, reinterpret_cast<struct sockaddr *>(&addr), sizeof(addr)) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        delete tls;
        return ts_err_set(err, TS_EIO, "listen on DICOM port %d: %s", cfg.port, strerror(e));
    }
    Listener *l = new Listener();
    l->cfg_ = cfg;
    l->listen_fd_ = fd;
    l->tls_ = tls;
    // An acceptor network without a listening socket of dcmtk's own: dcmtk
    // makes none while dcmExternalSocketHandle is set.
    OFCondition cond;
    {
        std::lock_guard<std::mutex> lock(external_socket_mu);
        dcmExternalSocketHandle.set(fd);
        cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, cfg.timeout_s, &l->net_);
        dcmExternalSocketHandle.set(-1);
    }
    if (cond.good())
        cond = use_pdv_splitting_layer(l->net_, cfg.timeout_s);
    if (cond.bad()) {
        delete l;
        return ts_err_set(err, TS_EIO, "DICOM network on port %d: %s", cfg.port, cond.text());
    }
    *out = l;
    return 0;
}

Listener::~Listener()
{
    if (listen_fd_ >= 0)
        close(listen_fd_);
    if (net_)
        ASC_dropNetwork(&net_);
    delete tls_;
}

void Listener::stop()
{
    stop_.store(true);
}

int Listener::connections()
{
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
}

void Listener::run(const Serve &serve)
{
    while (!stop_.load()) {
        // A short wait lets the loop notice stop().
        struct pollfd p = {listen_fd_, POLLIN, 0};
        if (poll(&p, 1, 500) <= 0)
            continue;
        struct sockaddr_in from;
        socklen_t len = sizeof(from);
        int fd =
            accept4(listen_fd_, reinterpret_cast<struct sockaddr *>(&from), &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                ts_warn("cannot accept DICOM connections", "error=\"%s\"", strerror(errno));
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
            continue;
        }
        char ip[INET_ADDRSTRLEN] = "";
        inet_ntop(AF_INET, &from.sin_addr, ip, sizeof(ip));
        std::string peer = ip;
        bool refused;
        {
            std::lock_guard<std::mutex> lock(mu_);
            int &mine = pending_by_peer_[peer];
            refused = pending_ >= cfg_.max_pending || mine >= cfg_.max_pending_per_peer;
            if (refused) {
                if (mine == 0)
                    pending_by_peer_.erase(peer);
            } else {
                pending_++;
                mine++;
                threads_++;
            }
        }
        if (refused) {
            ts_warn("DICOM connection refused: too many connections still negotiating",
                    "peer=%s max_pending=%d max_pending_per_peer=%d", peer.c_str(),
                    cfg_.max_pending, cfg_.max_pending_per_peer);
            close(fd);
            continue;
        }
        std::thread([this, fd, peer, &serve] { handle(fd, peer, serve); }).detach();
    }
    // Stop accepting at once: new connections are refused while the running
    // ones finish.
    close(listen_fd_);
    listen_fd_ = -1;
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [this] { return threads_ == 0; });
}

void Listener::release_pending(const std::string &peer)
{
    std::lock_guard<std::mutex> lock(mu_);
    pending_--;
    auto it = pending_by_peer_.find(peer);
    if (it != pending_by_peer_.end() && --it->second <= 0)
        pending_by_peer_.erase(it);
}

// The TLS handshake of a new connection (dcmtls), bounded by timeout_s: the
// session, which owns a descriptor of its own, or nullptr (logged: a client
// without a certificate where one is required, an untrusted one, not TLS).
DcmTransportConnection *Listener::tls_accept(int fd, const std::string &peer)
{
    int tls_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (tls_fd < 0)
        return nullptr;
    DcmTransportConnection *c = tls_->createConnection(tls_fd, OFTrue);
    if (!c) {
        ::close(tls_fd);
        return nullptr;
    }
    socket_timeouts(fd, cfg_.timeout_s);
    OFCondition cond = c->serverSideHandshake();
    if (cond.bad()) {
        ts_warn("DICOM TLS handshake failed, connection closed", "peer=%s error=\"%s\"",
                peer.c_str(), cond.text());
        delete c;
        return nullptr;
    }
    ts_debug("DICOM TLS session", "peer=%s", peer.c_str());
    return c;
}

bool Listener::read_request(int fd, DcmTransportConnection *tls, const std::string &peer,
                            std::string *pdu)
{
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg_.timeout_s);
    auto read = [&](unsigned char *buf, size_t n) {
        return tls ? read_full_tls(tls, buf, n, deadline, &stop_)
                   : read_full(fd, buf, n, deadline, &stop_);
    };
    unsigned char h[6];
    if (!read(h, sizeof(h))) {
        ts_debug("DICOM connection closed before an association request", "peer=%s error=\"%s\"",
                 peer.c_str(), strerror(errno));
        return false;
    }
    uint32_t len = get_be32(h + 2);
    if (h[0] != PDU_ASSOCIATE_RQ || len > MAX_ASSOCIATE_RQ) {
        ts_warn("DICOM connection closed: it did not start with an A-ASSOCIATE-RQ",
                "peer=%s pdu_type=%u length=%u", peer.c_str(), h[0], len);
        return false;
    }
    pdu->assign(reinterpret_cast<const char *>(h), sizeof(h));
    pdu->resize(sizeof(h) + len);
    if (!read(reinterpret_cast<unsigned char *>(&(*pdu)[sizeof(h)]), len)) {
        ts_warn("DICOM connection closed: its A-ASSOCIATE-RQ did not arrive whole",
                "peer=%s length=%u timeout_s=%d error=\"%s\"", peer.c_str(), len, cfg_.timeout_s,
                strerror(errno));
        return false;
    }
    if (const char *fault = associate_rq_fault(*pdu)) {
        ts_warn("association rejected: the request breaks PS3.8", "peer=%s reason=\"%s\"",
                peer.c_str(), fault);
        send_reject(fd, tls);
        return false;
    }
    return true;
}

void Listener::handle(int fd, std::string peer, const Serve &serve)
{
    std::string pdu;
    T_ASC_Association *assoc = nullptr;
    OFCondition cond = EC_IllegalCall;
    DcmTransportConnection *tls = tls_ ? tls_accept(fd, peer) : nullptr;
    bool received = (!tls_ || tls) && read_request(fd, tls, peer, &pdu);
    if (tls)
        socket_timeouts(fd, 0); // dcmtk waits as long as it wants from here on
    if (received) {
        // dcmtk gets a descriptor of its own, which it closes when the
        // association ends; ours is closed below whatever dcmtk did. Never 0:
        // dcmtk takes dcmExternalSocketHandle 0 for "none" (a service whose
        // stdin is closed would get 0 from dup).
        int dcmtk_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dcmtk_fd >= 0) {
            std::lock_guard<std::mutex> lock(external_socket_mu);
            handover.prefix = &pdu;
            handover.tls = tls;
            handover.taken = false;
            dcmExternalSocketHandle.set(dcmtk_fd);
            cond = ASC_receiveAssociation(net_, &assoc, cfg_.max_pdu, nullptr, nullptr, OFFalse,
                                          DUL_NOBLOCK, cfg_.timeout_s);
            dcmExternalSocketHandle.set(-1);
            handover.prefix = nullptr;
            if (handover.taken)
                tls = nullptr; // the connection object owns it now
            handover.tls = nullptr;
            if (!handover.taken)
                close(dcmtk_fd); // no connection object took it over
        }
    }
    delete tls; // a session that never reached dcmtk
    release_pending(peer);
    if (received && cond.bad()) {
        ts_warn("association request failed", "peer=%s error=\"%s\"", peer.c_str(), cond.text());
        if (assoc) {
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        }
    } else if (received) {
        bool busy;
        {
            std::lock_guard<std::mutex> lock(mu_);
            busy = active_ >= cfg_.max_associations;
            if (!busy)
                active_++;
        }
        if (busy) {
            ts_warn("association rejected: too many at once", "peer=%s max_associations=%d",
                    peer.c_str(), cfg_.max_associations);
            T_ASC_RejectParameters rej = {ASC_RESULT_REJECTEDTRANSIENT,
                                          ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                          ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
            ASC_rejectAssociation(assoc, &rej);
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        } else {
            serve(assoc); // serves, releases and frees the association
            std::lock_guard<std::mutex> lock(mu_);
            active_--;
        }
    }
    close(fd);
    std::lock_guard<std::mutex> lock(mu_);
    threads_--;
    idle_.notify_all();
}

} // namespace tsnet
