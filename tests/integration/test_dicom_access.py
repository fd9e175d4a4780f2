"""DICOM access per calling AE title (issue 19, lib/domain/dicom_access.h): whether an
AE may store, find, move and get (the modalities table's AllowStore/AllowFind/AllowMove/
AllowGet, Orthanc's fields, managed over /modalities), which labels' studies it sees over
C-FIND, C-MOVE and C-GET (Tessera's AllowedLabels), what AE titles not in the table may
do (TESSERA_DICOM_ALWAYS_ALLOW_*, Orthanc's DicomAlwaysAllow*), and one audit row per
DIMSE request. Driven with dcmtk's storescu, findscu, movescu and getscu against real
ingest (its C-FIND/C-MOVE/C-GET relayed to query) and query processes.

A refused request is answered 0x0124 "Refused: Not Authorized" (PS3.7 C.5.4) in its
own response; the association stays up."""
import json
import os
import subprocess
import time
from types import SimpleNamespace

import pydicom
import pytest

from conftest import free_port, storescu
from orthanc import http
from test_deleter import make_study
from test_ingest import make_series
import test_query

STUDY = "1.2.826.0.1.3680043.8.498.{}"
NOT_AUTHORIZED = 0x0124


def put_modality(rest, name, **conf):
    body = json.dumps(conf).encode()
    status, out, _ = http(rest.url, "PUT", f"/modalities/{name}", body)
    assert status == 200, out
    return json.loads(http(rest.url, "GET", f"/modalities/{name}/configuration")[1])


def study_id(rest, uid):
    status, body, _ = http(rest.url, "POST", "/tools/lookup", uid.encode())
    assert status == 200, body
    return json.loads(body)[0]["ID"]


def findscu(port, aet, level, keys, base):
    """findscu from aet (Study Root unless PATIENT); returns (final status, responses, output)."""
    model = "-P" if level == "PATIENT" else "-S"
    return test_query.findscu(SimpleNamespace(base=base), level, keys, model=model, port=port,
                              aet=aet)


def find_uids(port, aet, base, level="STUDY"):
    key = "PatientID" if level == "PATIENT" else "StudyInstanceUID"
    final, rsps, out = findscu(port, aet, level, [key], base)
    return final, sorted(str(r.get(key, "")) for r in rsps), out


@pytest.fixture
def site(cluster, tmp_path):
    """ingest (relaying to query), query and rest on one database; three studies:
    1 labelled A (patient PAT-A), 2 labelled B (PAT-B), 3 without a label (PAT-C);
    AE_A may see A and not store, AE_B may see B, AE_NONE may do nothing but store,
    DEST is a storescp for C-MOVE."""
    q = cluster.start_query()
    ing = cluster.start_ingest(TESSERA_QUERY_BUS=q.bus, TESSERA_DICOM_ALWAYS_ALLOW_STORE="false")
    rest = cluster.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
    files = {}
    for n, patient in ((1, "PAT-A"), (2, "PAT-B"), (3, "PAT-C")):
        files[n] = make_study(tmp_path / "gen", n, patient, [2])
    # AE_LOADER is registered with every right: the studies go in through it
    put_modality(rest, "loader", AET="AE_LOADER", Host="127.0.0.1", Port=104)
    assert storescu(ing, files[1] + files[2] + files[3], aet="AE_LOADER")[0] == 0
    for n, label in ((1, "A"), (2, "B")):
        sid = study_id(rest, STUDY.format(n))
        assert http(rest.url, "PUT", f"/studies/{sid}/labels/{label}")[0] == 200
    conf = put_modality(rest, "groupa", AET="AE_A", Host="127.0.0.1", Port=104,
                        AllowStore=False, AllowedLabels=["A"])
    assert conf["AllowedLabels"] == ["A"] and conf["AllowStore"] is False
    put_modality(rest, "groupb", AET="AE_B", Host="127.0.0.1", Port=104, AllowedLabels=["B"])
    put_modality(rest, "none", AET="AE_NONE", Host="127.0.0.1", Port=104, AllowFind=False,
                 AllowMove=False, AllowGet=False)
    dest_port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    log = open(tmp_path / "storescp.log", "w")
    scp = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(received), str(dest_port)],
                           stdout=log, stderr=subprocess.STDOUT)
    put_modality(rest, "dest", AET="DEST", Host="127.0.0.1", Port=dest_port)
    try:
        yield dict(cluster=cluster, q=q, ing=ing, rest=rest, files=files, received=received,
                   base=tmp_path)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
        log.close()


def audit_rows(cluster, who, n, timeout=20):
    """The audit rows of AE title `who`, once there are n of them."""
    deadline = time.time() + timeout
    while True:
        rows = cluster.sql("SELECT service, who_kind, action, resources, source, request, outcome"
                           " FROM audit_log WHERE who = %s ORDER BY id", (who,))
        if len(rows) >= n or time.time() > deadline:
            return rows
        time.sleep(0.1)


def instance_count(cluster):
    return cluster.sql("SELECT count(*) FROM instances")[0][0]


def test_modalities_keep_allowed_labels_and_refuse_bad_ones(site):
    rest = site["rest"]
    conf = json.loads(http(rest.url, "GET", "/modalities/groupb/configuration")[1])
    assert conf["AllowedLabels"] == ["B"]
    # without AllowedLabels the configuration is Orthanc's exactly (no new key)
    conf = json.loads(http(rest.url, "GET", "/modalities/none/configuration")[1])
    assert "AllowedLabels" not in conf and conf["AllowFind"] is False
    # a bad label or type: refused, and the modality is unchanged
    for bad in (["a b"], "A", [""], [7]):
        body = json.dumps({"AET": "AE_B", "Host": "h", "Port": 1, "AllowedLabels": bad})
        status, out, _ = http(rest.url, "PUT", "/modalities/groupb", body.encode())
        assert status == 400, (bad, out)
    conf = json.loads(http(rest.url, "GET", "/modalities/groupb/configuration")[1])
    assert conf["AllowedLabels"] == ["B"] and conf["Host"] == "127.0.0.1"
    # an empty list is kept as such: the AE then sees no study
    put_modality(rest, "empty", AET="AE_EMPTY", Host="h", Port=1, AllowedLabels=[])
    conf = json.loads(http(rest.url, "GET", "/modalities/empty/configuration")[1])
    assert conf["AllowedLabels"] == []


def test_store_refused_and_allowed_per_ae(site, tmp_path):
    """ingest runs with TESSERA_DICOM_ALWAYS_ALLOW_STORE=false: AE_A (AllowStore false)
    and an unregistered AE are refused with 0x0124 and nothing is kept; AE_B stores."""
    cluster, ing = site["cluster"], site["ing"]
    before = instance_count(cluster)
    new = make_study(tmp_path / "new", 7, "PAT-N", [2])
    for aet in ("AE_A", "UNKNOWN_AE"):
        rc, out = storescu(ing, new, aet=aet)
        # dcmtk knows 0x0124 as a general status only: storescu prints it as
        # "Unknown Status", counts a failure and stops sending
        assert "Received Store Response (Unknown Status: 0x124)" in out, out
        assert rc != 0 or "Success" not in out
        assert instance_count(cluster) == before
    assert cluster.temp_files() == []
    rc, out = storescu(ing, new, aet="AE_B")
    assert rc == 0 and "Success" in out, out
    assert instance_count(cluster) == before + 2
    assert "DICOM request refused: not authorized" in ing.read_log()
    # the audit: one row per C-STORE, refused ones included
    rows = audit_rows(cluster, "AE_A", 1)
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [("ingest", "aet", "store", NOT_AUTHORIZED)]
    assert rows[0][4] == "127.0.0.1" and rows[0][5] == "C-STORE"
    assert rows[0][3] == [str(pydicom.dcmread(new[0]).SOPInstanceUID)]
    rows = audit_rows(cluster, "AE_B", 2)
    assert [r[6] for r in rows] == [0, 0]
    sop = str(pydicom.dcmread(new[0]).SOPInstanceUID)
    # the stored instance is named by its UID and its public id
    assert any(r[3][0] == sop and len(r[3]) == 2 for r in rows), rows


@pytest.mark.parametrize("port_of", ["query", "ingest"])
def test_find_sees_the_studies_of_its_labels(site, port_of):
    """On query's port and over ingest's relay alike: AE_A finds study 1 (label A),
    AE_B study 2, an unregistered AE all three (today's behaviour,
    TESSERA_DICOM_ALWAYS_ALLOW_FIND=true), AE_NONE is refused."""
    port = site["q"].port if port_of == "query" else site["ing"].port
    base = site["base"]
    final, uids, out = find_uids(port, "AE_A", base)
    assert final.startswith("Success") and uids == [STUDY.format(1)], out
    assert find_uids(port, "AE_B", base)[1] == [STUDY.format(2)]
    assert find_uids(port, "OTHER", base)[1] == [STUDY.format(n) for n in (1, 2, 3)]
    # series and instances of other groups' studies are not found either
    final, rsps, out = findscu(port, "AE_A", "IMAGE",
                               [f"StudyInstanceUID={STUDY.format(2)}", "SOPInstanceUID"], base)
    assert final.startswith("Success") and rsps == [], out
    final, rsps, out = findscu(port, "AE_A", "SERIES",
                               [f"StudyInstanceUID={STUDY.format(1)}", "SeriesInstanceUID"], base)
    assert len(rsps) == 1, out
    # the patient level: a patient whose studies are all visible
    assert find_uids(port, "AE_B", base, "PATIENT")[1] == ["PAT-B"]
    final, uids, out = find_uids(port, "AE_NONE", base)
    assert uids == [] and "Unknown Status: 0x124" in final, out
    # the audit: who, from where, what was asked, outcome
    service = "query" if port_of == "query" else "ingest"
    rows = audit_rows(site["cluster"], "AE_NONE", 1)
    assert [(r[0], r[2], r[5], r[6]) for r in rows] == [(service, "query", "C-FIND STUDY",
                                                         NOT_AUTHORIZED)]
    rows = audit_rows(site["cluster"], "AE_A", 3)
    assert [r[6] for r in rows] == [0, 0, 0] and rows[1][3] == [STUDY.format(2)], rows


def test_an_empty_label_list_sees_nothing(site):
    put_modality(site["rest"], "empty", AET="AE_EMPTY", Host="h", Port=1, AllowedLabels=[])
    final, uids, out = find_uids(site["q"].port, "AE_EMPTY", site["base"])
    assert final.startswith("Success") and uids == [], out


def movescu(port, aet, uid, base):
    p = subprocess.run(["movescu", "-v", "-S", "-aet", aet, "-aec", "TESSERA", "-aem", "DEST",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                        "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def getscu(port, aet, uid, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["getscu", "-v", "-S", "-aet", aet, "-aec", "TESSERA", "-od", str(out_dir),
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                        "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def received_studies(folder):
    return sorted({str(pydicom.dcmread(f).StudyInstanceUID) for f in folder.iterdir()})


@pytest.mark.parametrize("port_of", ["query", "ingest"])
def test_move_and_get_send_only_the_studies_of_its_labels(site, port_of):
    port = site["q"].port if port_of == "query" else site["ing"].port
    base, received = site["base"], site["received"]
    # AE_A asks for B's study: nothing matches for it, nothing is sent
    rc, out = movescu(port, "AE_A", STUDY.format(2), base)
    assert "Completed Suboperations       : 0" in out or "Completed Suboperations" not in out, out
    time.sleep(0.5)
    assert list(received.iterdir()) == []
    rc, out = movescu(port, "AE_A", STUDY.format(1), base)
    assert rc == 0, out
    deadline = time.time() + 10
    while len(list(received.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert received_studies(received) == [STUDY.format(1)]
    # C-GET likewise
    got = base / f"get-{port_of}"
    getscu(port, "AE_B", STUDY.format(1), got / "b1")
    assert list((got / "b1").iterdir()) == []
    rc, out = getscu(port, "AE_B", STUDY.format(2), got / "b2")
    assert rc == 0 and received_studies(got / "b2") == [STUDY.format(2)], out
    # AE_NONE may neither move nor get
    rc, out = movescu(port, "AE_NONE", STUDY.format(3), base)
    assert "Unknown Status: 0x124" in out, out
    rc, out = getscu(port, "AE_NONE", STUDY.format(3), got / "none")
    assert "Unknown Status: 0x124" in out and list((got / "none").iterdir()) == [], out
    # the audit: the C-MOVE with its destination and the study asked for
    service = "query" if port_of == "query" else "ingest"
    rows = audit_rows(site["cluster"], "AE_A", 2)
    assert [(r[0], r[2], r[3], r[5]) for r in rows[:2]] == [
        (service, "export", [STUDY.format(n)], "C-MOVE STUDY to DEST") for n in (2, 1)], rows
    rows = audit_rows(site["cluster"], "AE_NONE", 2)
    assert [(r[5], r[6]) for r in rows] == [("C-MOVE STUDY to DEST", NOT_AUTHORIZED),
                                           ("C-GET STUDY", NOT_AUTHORIZED)], rows


def test_unknown_aes_refused_when_the_settings_say_so(cluster, tmp_path):
    """Orthanc's defaults for find/move/get (DicomAlwaysAllow*=false): an AE title
    that is not in the modalities table is refused; a registered one is served."""
    q = cluster.start_query(TESSERA_DICOM_ALWAYS_ALLOW_FIND="false",
                            TESSERA_DICOM_ALWAYS_ALLOW_MOVE="false",
                            TESSERA_DICOM_ALWAYS_ALLOW_GET="false")
    ing = cluster.start_ingest(TESSERA_QUERY_BUS=q.bus)
    assert storescu(ing, make_study(tmp_path / "g", 1, "PAT-A", [1]), aet="ANYONE")[0] == 0
    final, uids, out = find_uids(q.port, "STRANGER", tmp_path)
    assert uids == [] and "Unknown Status: 0x124" in final, out
    rc, out = getscu(q.port, "STRANGER", STUDY.format(1), tmp_path / "get")
    assert "Unknown Status: 0x124" in out, out
    cluster.sql("INSERT INTO modalities (name, aet, host, port) VALUES ('k', 'KNOWN', 'h', 1)")
    assert find_uids(q.port, "KNOWN", tmp_path)[1] == [STUDY.format(1)]


@pytest.mark.skipif(not os.environ.get("TESSERA_BENCH"), reason="a measure: TESSERA_BENCH=1")
def test_label_filter_cost_on_c_find(cluster, tmp_path):
    """The cost of the per-AE label filter on C-FIND, same run: 1000 studies labelled
    L0..L9 (100 each); an unregistered AE (no filter) and AE_ALL granted the ten
    labels (the filter, the same 1000 answers) alternate findscu --repeat 20 on
    query's port; AE_ONE (one label, 100 answers) for scale. Prints the figures."""
    q = cluster.start_query()
    ing = cluster.start_ingest()
    files = []
    for n in range(1000):
        files += make_series(tmp_path / "g" / str(n), 1, study_uid=STUDY.format(10000 + n),
                             patient=f"PAT-{n}")
    rc, out = storescu(ing, files, aet="LOADER")
    assert rc == 0, out[-2000:]
    cluster.sql("INSERT INTO labels (resource_id, label) SELECT id,"
                " 'L' || (row_number() OVER (ORDER BY id) % 10) FROM resources WHERE level = 1")
    all_labels = "{" + ",".join(f"L{i}" for i in range(10)) + "}"
    cluster.sql("INSERT INTO modalities (name, aet, host, port, allowed_labels) VALUES"
                " ('all', 'AE_ALL', 'h', 1, %s::text[]), ('one', 'AE_ONE', 'h', 1, '{L0}')",
                (all_labels,))
    repeat = 20

    def run(aet):
        cmd = ["findscu", "-S", "--repeat", str(repeat), "-aet", aet, "-aec", "TESSERA",
               "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
               "127.0.0.1", str(q.port)]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        return (time.monotonic() - t0) / repeat * 1000

    assert len(find_uids(q.port, "AE_ALL", tmp_path)[1]) == 1000
    assert len(find_uids(q.port, "AE_ONE", tmp_path)[1]) == 100
    times = {"OTHER": [], "AE_ALL": [], "AE_ONE": []}
    for _ in range(5):
        for aet in times:
            times[aet].append(run(aet))
    # the query's own figures, by calling AE, from its C-FIND log lines: ms (the
    # whole request) and, where the line has it, matcher_ms (the SQL's share)
    server = {aet: {"ms": [], "matcher_ms": []} for aet in times}
    for line in q.read_log().splitlines():
        if 'msg="C-FIND"' not in line or "matches=" not in line:
            continue
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("calling_aet") in server:
            for key in ("ms", "matcher_ms"):
                if key in fields:
                    server[fields["calling_aet"]][key].append(float(fields[key]))

    def median(v):
        return f"{sorted(v)[len(v) // 2]:.2f}" if v else "-"
    for aet in times:
        print(f"BENCH {aet}: client ms/C-FIND median {sorted(times[aet])[2]:.1f} "
              f"(rounds {', '.join(f'{t:.1f}' for t in times[aet])}); server ms median "
              f"{median(server[aet]['ms'])}, matcher_ms median "
              f"{median(server[aet]['matcher_ms'])} over {len(server[aet]['ms'])}")


# ---- DICOM TLS (dcmtk's dcmtls over OpenSSL) on ingest and query ------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate and a client certificate it signed, and a client
    certificate signed by nobody we trust; made with openssl for the test."""
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=Tessera test CA", cwd=d)
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out",
            "rogue.pem", "-days", "2", "-subj", "/CN=rogue", cwd=d)
    return d


def tls_env(pki, required=True):
    return dict(TESSERA_DICOM_TLS_CERTIFICATE=pki / "server.pem",
                TESSERA_DICOM_TLS_PRIVATE_KEY=pki / "server.key",
                TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES=pki / "ca.pem",
                TESSERA_DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED=str(required).lower())


def tls_args(pki, who="client"):
    """dcmtk's client options: our certificate (or none) and the CA that signed the
    server's (the client checks the server, +rc being the default)."""
    cert = ["+tla"] if who is None else ["+tls", str(pki / f"{who}.key"), str(pki / f"{who}.pem")]
    return [*cert, "+cf", str(pki / "ca.pem")]


def dcmtk(tool, port, *args, aet="TLSCLIENT", files=()):
    p = subprocess.run([tool, "-v", "-aet", aet, "-aec", "TESSERA", *args, "127.0.0.1", str(port),
                        *map(str, files)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def test_tls_with_and_without_a_client_certificate(cluster, pki, tmp_path):
    q = cluster.start_query(**tls_env(pki))
    ing = cluster.start_ingest(TESSERA_QUERY_BUS=q.bus, **tls_env(pki))
    files = make_study(tmp_path / "g", 1, "PAT-A", [2])
    # a client with a certificate of our CA: echo, store, find on both ports
    assert dcmtk("echoscu", ing.port, *tls_args(pki))[0] == 0
    rc, out = dcmtk("storescu", ing.port, *tls_args(pki), files=files)
    assert rc == 0 and out.count("Received Store Response (Success)") == 2, out
    for port in (q.port, ing.port):
        rc, out = dcmtk("findscu", port, *tls_args(pki), "-S", "-k", "QueryRetrieveLevel=STUDY",
                        "-k", "StudyInstanceUID")
        assert rc == 0 and STUDY.format(1) in out, out
    # without a certificate, with one of an unknown CA, or without TLS at all: refused
    # before any association, nothing is stored
    new = make_study(tmp_path / "n", 2, "PAT-B", [1])
    for args in (tls_args(pki, None), tls_args(pki, "rogue"), []):
        rc, out = dcmtk("storescu", ing.port, *args, files=new)
        assert rc != 0 and "Association Accepted" not in out, (args, out)
        rc, out = dcmtk("echoscu", q.port, *args)
        assert rc != 0, (args, out)
    assert instance_count(cluster) == 2
    assert "DICOM TLS handshake failed, connection closed" in ing.read_log()
    assert "DICOM TLS handshake failed, connection closed" in q.read_log()
    # a plain TCP client's association request is no TLS handshake: refused as well
    assert "association rejected" not in ing.read_log()


def test_tls_client_certificate_optional(cluster, pki, tmp_path):
    """TESSERA_DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED=false: a client without a
    certificate is served over TLS; one with an untrusted certificate still is not."""
    ing = cluster.start_ingest(**tls_env(pki, required=False))
    files = make_study(tmp_path / "g", 1, "PAT-A", [1])
    rc, out = dcmtk("storescu", ing.port, *tls_args(pki, None), files=files)
    assert rc == 0 and "Received Store Response (Success)" in out, out
    assert dcmtk("echoscu", ing.port, *tls_args(pki, "rogue"))[0] != 0
    assert instance_count(cluster) == 1


def test_tls_bad_settings_stop_the_start(cluster, pki):
    """A key that does not match the certificate, a missing file, or required client
    certificates without trusted ones: the service does not start, and says why."""
    cases = [(dict(TESSERA_DICOM_TLS_PRIVATE_KEY=pki / "client.key"), "does not match"),
             (dict(TESSERA_DICOM_TLS_CERTIFICATE=pki / "missing.pem"), "missing.pem"),
             (dict(TESSERA_DICOM_TLS_TRUSTED_CERTIFICATES=""), "no trusted certificates")]
    for override, message in cases:
        env = tls_env(pki)
        env.update(override)
        with pytest.raises(RuntimeError) as e:
            cluster.start_ingest(**env)
        assert message in str(e.value), str(e.value)[-2000:]


def test_store_grants_compared_with_orthanc(cluster, tmp_path):
    """Orthanc 1.10.1 with the same modalities: with DicomAlwaysAllowStore false both
    refuse an unknown AE and AE_A (AllowStore false) and serve AE_B, but Orthanc aborts
    the association (A-ABORT, no status) where Tessera answers the standard 0x0124
    "Refused: Not Authorized" (PS3.7 C.5.4) and keeps the association. With
    DicomAlwaysAllowStore true Orthanc lets AE_A store regardless of its AllowStore
    (its documented rule); Tessera keeps a registered AE's own refusal."""
    from orthanc import Orthanc
    f = make_study(tmp_path / "g", 1, "PAT-A", [1])
    modalities = {"b": ["AE_B", "127.0.0.1", 104],
                  "a": {"AET": "AE_A", "Host": "127.0.0.1", "Port": 104, "AllowStore": False}}
    results = {}
    for always in (False, True):
        ing = cluster.start_ingest(TESSERA_DICOM_ALWAYS_ALLOW_STORE=str(always).lower())
        cluster.sql("INSERT INTO modalities (name, aet, host, port, allow_store) VALUES"
                    " ('b', 'AE_B', '127.0.0.1', 104, true), ('a', 'AE_A', '127.0.0.1', 104, false)"
                    " ON CONFLICT DO NOTHING")
        with Orthanc(base=tmp_path / f"orthanc-{always}", DicomAlwaysAllowStore=always,
                     DicomModalities=modalities) as o:
            for aet in ("UNKNOWN", "AE_A", "AE_B"):
                p = subprocess.run(["storescu", "-v", "-aet", aet, "-aec", "ORTHANC", "127.0.0.1",
                                    str(o.dicom_port), *map(str, f)], capture_output=True,
                                   text=True, timeout=60)
                theirs = p.stdout + p.stderr
                ours = storescu(ing, f, aet=aet)[1]
                results[(always, aet)] = (
                    "Success" if "Store Response (Success)" in theirs else
                    "aborted" if "Store Response" not in theirs else theirs,
                    "Success" if "Store Response (Success)" in ours else
                    "0x0124" if "Unknown Status: 0x124" in ours else ours)
        ing.stop()
    assert results == {
        (False, "UNKNOWN"): ("aborted", "0x0124"),
        (False, "AE_A"): ("aborted", "0x0124"),
        (False, "AE_B"): ("Success", "Success"),
        (True, "UNKNOWN"): ("Success", "Success"),
        (True, "AE_A"): ("Success", "0x0124"),  # Tessera keeps the modality's refusal
        (True, "AE_B"): ("Success", "Success")}, results
