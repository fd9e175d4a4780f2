"""DICOM TLS on outgoing associations (issue 19): a modality with Orthanc's
"UseDicomTls": true is reached over DICOM TLS (dcmtk's dcmtls over OpenSSL) by every
SCU of Tessera: C-ECHO (/modalities/{id}/echo), store jobs (/modalities/{id}/store),
C-FIND and C-MOVE (/modalities/{id}/query and /move) and the C-STORE sub-operations
of a C-MOVE served by query (lib/domain/retrieve.c). Our certificate and key are
TESSERA_DICOM_TLS_CERTIFICATE/_PRIVATE_KEY (as Orthanc, the same for both directions)
and the peer's certificate must be signed by a CA of
TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES. The peers are dcmtk's storescp with +tls
and Tessera's own query service on a DICOM TLS port; certificates are made with
openssl by the test (test_dicom_access.py's pki fixture)."""
import json
import subprocess
import time

import pytest

from conftest import free_port
from orthanc import http
from test_deleter import make_study
from test_dicom_access import pki  # noqa: F401  (a fixture)
from test_dicom_access import tls_env
from test_jobs import wait_job

STUDY = "1.2.826.0.1.3680043.8.498.{}"


def call(rest, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, out, _ = http(rest.url, method, path, data)
    try:
        return status, json.loads(out)
    except ValueError:
        return status, out


class Scp:
    """dcmtk's storescp on a free port, over DICOM TLS when tls=(key, cert, ca): it
    requires a client certificate signed by ca (-rc) and shows its own cert."""

    def __init__(self, out_dir, tls=None, aet="TLSSCP"):
        self.dir = out_dir
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.aet = aet
        cmd = ["storescp", "-v", "-aet", aet, "-od", str(self.dir), "-uf"]
        if tls:
            key, cert, ca = tls
            cmd += ["+tls", str(key), str(cert), "-rc", "+cf", str(ca)]
        self.logfile = out_dir.parent / f"storescp-{self.port}.log"
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(cmd + [str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        import socket
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def received(self):
        return {p.name.split(".", 1)[1] for p in self.dir.iterdir() if p.is_file()}

    def log_text(self):
        return self.logfile.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def scps(tmp_path):
    started = []

    def make(**kw):
        s = Scp(tmp_path / f"scp-{len(started)}", **kw)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def tls_out_env(pki):
    """Our certificate (server.pem, signed by the test CA) for outgoing associations."""
    env = tls_env(pki)
    return {k: v for k, v in env.items() if k != "TESSERA_DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED"}


@pytest.fixture
def site(cluster, pki, tmp_path):  # noqa: F811
    """A plain ingest, and rest and jobs processes with our certificate; one study
    of two instances uploaded over REST."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, **tls_out_env(pki))
    cluster.start_jobs(**tls_out_env(pki))
    files = make_study(tmp_path / "gen", 1, "PAT-TLS", [2])
    for f in files:
        status, out = call(rest, "POST", "/instances", f.read_bytes())
        assert status == 200, out
    status, ids = call(rest, "POST", "/tools/lookup", STUDY.format(1).encode())
    assert status == 200 and len(ids) == 1, ids
    return rest, ids[0]["ID"], files


def put_modality(rest, name, scp, tls=True):
    body = {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port, "UseDicomTls": tls}
    assert call(rest, "PUT", f"/modalities/{name}", body)[0] == 200
    conf = call(rest, "GET", f"/modalities/{name}/configuration")[1]
    assert conf["UseDicomTls"] is tls, conf


def store(rest, name, study):
    status, out = call(rest, "POST", f"/modalities/{name}/store",
                       {"Resources": [study], "Asynchronous": True})
    assert status == 200, out
    return wait_job(rest, out["ID"], {"Success", "Failure"})


def sop_uids(files):
    import pydicom
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def test_echo_and_store_over_tls(site, scps, pki):  # noqa: F811
    """A storescp +tls that requires a client certificate of our CA receives the
    instances of a store job, and answers C-ECHO, both over TLS."""
    rest, study, files = site
    scp = scps(tls=(pki / "client.key", pki / "client.pem", pki / "ca.pem"))
    put_modality(rest, "tls", scp)
    status, out = call(rest, "POST", "/modalities/tls/echo", {})
    assert status == 200, out
    job = store(rest, "tls", study)
    assert job["State"] == "Success", job
    assert scp.received() == sop_uids(files)
    # storescp saw a TLS session with our certificate (CN=server)
    log = scp.log_text()
    assert "Received Store Request" in log, log
    # store-straight (one file, no job) goes over TLS too
    status, out = call(rest, "POST", "/modalities/tls/store-straight", files[0].read_bytes())
    assert status == 200 and {out["SOPInstanceUID"]} == sop_uids(files[:1]), out
    assert scp.log_text().count("Received Store Request") == 3
    # POST /tools/dicom-echo with UseDicomTls goes over TLS too
    body = {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port, "UseDicomTls": True}
    status, out = call(rest, "POST", "/tools/dicom-echo", body)
    assert status == 200, out
    # the same peer without UseDicomTls: a plain association to a TLS port fails
    body["UseDicomTls"] = False
    status, out = call(rest, "POST", "/tools/dicom-echo", body)
    assert status == 500, out


def test_plain_peer_marked_tls_fails_clearly(site, scps):
    """A plain storescp marked UseDicomTls: the store job fails with an error that
    names the TLS handshake; echo answers 500 with the same; nothing is received."""
    rest, study, _ = site
    scp = scps()
    put_modality(rest, "plain", scp)
    job = store(rest, "plain", study)
    assert job["State"] == "Failure", job
    assert "DICOM TLS handshake failed" in job["ErrorDetails"], job
    assert scp.received() == set()
    status, out = call(rest, "POST", "/modalities/plain/echo", {})
    assert status == 500 and "DICOM TLS handshake failed" in out["Details"], out


def test_untrusted_peer_certificate_refused(site, scps, pki):  # noqa: F811
    """A TLS storescp whose certificate no trusted CA signed (self-signed "rogue"):
    Tessera ends the handshake, sends nothing, and the job says why."""
    rest, study, _ = site
    scp = scps(tls=(pki / "rogue.key", pki / "rogue.pem", pki / "ca.pem"))
    put_modality(rest, "rogue", scp)
    job = store(rest, "rogue", study)
    assert job["State"] == "Failure", job
    details = job["ErrorDetails"]
    assert "DICOM TLS handshake failed" in details and "certificate verify failed" in details, job
    assert scp.received() == set()
    assert "Received Store Request" not in scp.log_text()


def test_tls_modality_without_our_settings(cluster, scps, pki, tmp_path):  # noqa: F811
    """A rest process without TESSERA_DICOM_TLS_*: UseDicomTls is stored, and an echo
    to it answers 500 naming the missing settings (no plain association instead)."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    scp = scps(tls=(pki / "client.key", pki / "client.pem", pki / "ca.pem"))
    put_modality(rest, "tls", scp)
    status, out = call(rest, "POST", "/modalities/tls/echo", {})
    assert status == 500 and "TESSERA_DICOM_TLS_CERTIFICATE" in out["Details"], out
    assert "Association Received" not in scp.log_text()


def test_find_move_and_move_suboperations_over_tls(cluster, scps, pki, tmp_path):  # noqa: F811
    """Tessera's query service on a DICOM TLS port is the remote Q/R SCP of
    /modalities/{id}/query and /move (C-FIND and C-MOVE SCU over TLS); the C-MOVE's
    destination is a storescp +tls registered with UseDicomTls, which query reaches
    over TLS for the C-STORE sub-operations (lib/domain/retrieve.c)."""
    redis = cluster.start_redis()
    env = tls_out_env(pki)
    q = cluster.start_query(**tls_env(pki))
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, **env)
    cluster.start_jobs(**env)
    files = make_study(tmp_path / "gen", 2, "PAT-QR", [2])
    for f in files:
        assert call(rest, "POST", "/instances", f.read_bytes())[0] == 200
    dest = scps(tls=(pki / "client.key", pki / "client.pem", pki / "ca.pem"), aet="TLSDEST")
    put_modality(rest, "dest", dest)
    body = {"AET": "TESSERA", "Host": "127.0.0.1", "Port": q.port, "UseDicomTls": True}
    assert call(rest, "PUT", "/modalities/qr", body)[0] == 200
    status, out = call(rest, "POST", "/modalities/qr/query",
                       {"Level": "Study", "Query": {"StudyInstanceUID": STUDY.format(2)}})
    assert status == 200, out
    path = out["Path"]
    answers = call(rest, "GET", f"{path}/answers?expand&simplify")[1]
    assert [a["StudyInstanceUID"] for a in answers] == [STUDY.format(2)], answers
    status, out = call(rest, "POST", "/modalities/qr/move",
                       {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY.format(2)}],
                        "TargetAet": "TLSDEST"})
    assert status == 200, out
    assert dest.received() == sop_uids(files)
    # the stored query's retrieve (/queries/{id}/retrieve) keeps UseDicomTls
    dest2 = scps(tls=(pki / "client.key", pki / "client.pem", pki / "ca.pem"), aet="TLSDEST2")
    put_modality(rest, "dest2", dest2)
    status, out = call(rest, "POST", f"{path}/retrieve", {"TargetAet": "TLSDEST2"})
    assert status == 200, out
    assert dest2.received() == sop_uids(files)
    # the same move to a destination marked TLS that is a plain storescp: the
    # sub-operations fail and the move says so
    plain = scps(aet="PLAINDEST")
    put_modality(rest, "plaindest", plain)
    status, out = call(rest, "POST", "/modalities/qr/move",
                       {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY.format(2)}],
                        "TargetAet": "PLAINDEST"})
    assert status != 200, out
    assert plain.received() == set()
    assert "DICOM TLS handshake failed" in q.read_log()


def test_compared_with_orthanc(site, scps, pki, tmp_path):  # noqa: F811
    """Orthanc 1.10.1 with the same certificate (DicomTlsCertificate/PrivateKey/
    TrustedCertificates, its DICOM port left plain) and the same modalities: echo and
    a store job succeed to the storescp +tls, and both fail towards a plain storescp
    marked UseDicomTls and towards one with an untrusted certificate. The outcomes
    (status, job state, instances received) are compared; the error wording is
    dcmtk's in both but not compared."""
    from orthanc import Orthanc
    rest, study, files = site
    good = (pki / "client.key", pki / "client.pem", pki / "ca.pem")
    bad = (pki / "rogue.key", pki / "rogue.pem", pki / "ca.pem")
    with Orthanc(tmp_path / "orthanc", DicomTlsEnabled=False,
                 DicomTlsCertificate=str(pki / "server.pem"),
                 DicomTlsPrivateKey=str(pki / "server.key"),
                 DicomTlsTrustedCertificates=str(pki / "ca.pem")) as ref:
        for f in files:
            assert ref.upload(f)[0] == 200
        ref_study = json.loads(ref.request("POST", "/tools/lookup",
                                           STUDY.format(1).encode())[1])[0]["ID"]
        for name, tls in (("good", good), ("plain", None), ("rogue", bad)):
            outcome = {}
            for who, server, sid in (("tessera", rest, study), ("orthanc", ref, ref_study)):
                scp = scps(tls=tls)
                put_modality(server, name, scp)
                echo = call(server, "POST", f"/modalities/{name}/echo", {})[0]
                job = store(server, name, sid)
                outcome[who] = (echo, job["State"], scp.received() == sop_uids(files))
            assert outcome["tessera"] == outcome["orthanc"], (name, outcome)
            assert outcome["tessera"] == ((200, "Success", True) if name == "good"
                                          else (500, "Failure", False)), (name, outcome)


def test_route_to_a_tls_modality(site, scps, pki, tmp_path):  # noqa: F811
    """The router's store steps (jobs_router.c builds their input from the modality's
    row) carry UseDicomTls: a NewInstance rule delivers to a storescp +tls."""
    rest, _, _ = site
    scp = scps(tls=(pki / "client.key", pki / "client.pem", pki / "ca.pem"))
    put_modality(rest, "routed", scp)
    rule = {"Name": "all to routed", "Trigger": "NewInstance", "Conditions": {},
            "Actions": [{"Type": "StoreToModality", "Modality": "routed"}]}
    status, out = call(rest, "POST", "/tessera/routes", rule)
    assert status == 200, out
    files = make_study(tmp_path / "routed", 3, "PAT-ROUTE", [2])
    for f in files:
        assert call(rest, "POST", "/instances", f.read_bytes())[0] == 200
    want = sop_uids(files)
    deadline = time.time() + 60
    while time.time() < deadline and not scp.received() >= want:
        time.sleep(0.2)
    assert scp.received() >= want, (scp.received(), scp.log_text()[-2000:])
