"""GET/PUT /tools/accepted-transfer-syntaxes (Orthanc 1.9+, issue 21): what ingest
accepts for storage in association negotiation, changed at run time. The list is
kept in PostgreSQL (db/migrations/0030) and read by every ingest replica at each
association, so a PUT on any rest replica applies to the whole cluster.

Compared with a live Orthanc 1.10.1: the same answers (status, JSON) to the same
bodies, and the same storescu outcome after the same PUT. One difference, on
purpose: Orthanc lists every transfer syntax it knows, Tessera only those its
storage SCP can store (not the retired JPEG processes Orthanc still lists), so
Tessera's list is Orthanc's with those left out, in Orthanc's order."""
import json
import subprocess

import pytest

from conftest import ROOT
from orthanc import Orthanc, http

DATA = ROOT / "tests/data/dicom"
RLE = "1.2.840.10008.1.2.5"


def req(server, method, path, body=None):
    status, data, _ = http(server.url, method, path, body)
    return status, json.loads(data) if data else None


@pytest.fixture
def pair(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    with Orthanc(tmp_path / "orthanc") as ref:
        yield rest, ref


# bodies as Orthanc reads them: JSON string, JSON list, a bare pattern (a body
# that is not JSON), wildcards '*' and '?', patterns matching nothing, an empty
# list, an empty body (matches nothing)
BODIES = [
    b'"1.2.840.10008.1.2.4.9?"',
    b'["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"]',
    b"*",
    b'"1.2.840.10008.1.2.4.*" ',
    b"abc",
    b"",
    b'["1.2.840.10008.1.2.1", "1.2.3.4", "nope"]',
    b'"1.2.840.10008.1.2.?"',
    b"[]",
    b'"*"',
]


def test_put_and_get_like_orthanc(pair):
    t, ref = pair
    # defaults: Orthanc's full list, Tessera's storable ones in the same order
    _, default_ref = req(ref, "GET", "/tools/accepted-transfer-syntaxes")
    s, default_t = req(t, "GET", "/tools/accepted-transfer-syntaxes")
    assert s == 200 and default_t == [u for u in default_ref if u in default_t]
    storable = set(default_t)
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90", RLE} <= storable
    for body in BODIES:
        rs, rj = req(ref, "PUT", "/tools/accepted-transfer-syntaxes", body)
        ts, tj = req(t, "PUT", "/tools/accepted-transfer-syntaxes", body)
        assert rs == ts == 200, (body, rs, rj, ts, tj)
        assert tj == [u for u in rj if u in storable], (body, rj, tj)
        # and GET reads back what PUT answered
        assert req(t, "GET", "/tools/accepted-transfer-syntaxes") == (200, tj)
        assert req(ref, "GET", "/tools/accepted-transfer-syntaxes") == (200, rj)
    # bad bodies: JSON that is neither a string nor a list of strings; a bare UID
    # pattern is one too, for Orthanc's JSON reader takes its start for the number 1.2
    for body in (b"[1]", b'{"a": 1}', b'["1.2.840.10008.1.2", null]', b"12",
                 b"1.2.840.10008.1.2.4.*"):
        rs, rj = req(ref, "PUT", "/tools/accepted-transfer-syntaxes", body)
        ts, tj = req(t, "PUT", "/tools/accepted-transfer-syntaxes", body)
        assert (ts, tj["OrthancError"]) == (rs, rj["OrthancError"]), (body, rj, tj)
    # a refused body changed nothing
    assert req(t, "GET", "/tools/accepted-transfer-syntaxes")[1] == sorted(storable, key=lambda u: [int(x) for x in u.split(".")])


def store(port, aet, f):
    """dcmtk's storescu; (exit status, output)."""
    # -xi: Implicit VR Little Endian is the only syntax proposed
    p = subprocess.run(["storescu", "-v", "-xi", "-aec", aet, "127.0.0.1", str(port), str(f)],
                       capture_output=True, text=True, timeout=60, env={"TCP_NODELAY": "1"})
    return p.returncode, p.stdout + p.stderr


def test_removed_syntax_refused_then_accepted_on_two_ingests(cluster, tmp_path):
    """storescu proposes Implicit VR Little Endian only: once it is removed through one
    rest replica, both ingest replicas refuse it; once it is added back (through the other
    rest replica), both accept it, without a restart. Orthanc does the same."""
    ingests = [cluster.start_ingest(), cluster.start_ingest()]
    rests = [cluster.start_rest(ingests[0]), cluster.start_rest(ingests[1])]
    f = DATA / "CT_small.dcm"
    with Orthanc(tmp_path / "orthanc") as ref:
        targets = [(i.port, i.aet) for i in ingests] + [(ref.dicom_port, ref.aet)]
        for ing in targets:  # accepted by default
            rc, out = store(*ing, f)
            assert rc == 0, out
        body = b'["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"]'
        assert req(rests[0], "PUT", "/tools/accepted-transfer-syntaxes", body)[0] == 200
        assert req(ref, "PUT", "/tools/accepted-transfer-syntaxes", body)[0] == 200
        assert req(rests[1], "GET", "/tools/accepted-transfer-syntaxes")[1] == [
            "1.2.840.10008.1.2.1", RLE]
        for ing in targets:
            rc, out = store(*ing, f)
            assert rc != 0, out
            # Orthanc 1.10.1 accepts the association with no context (storescu then
            # says so); Tessera's SCP rejects an association it can do nothing with
            # (permanent, as for every association without an accepted context)
            refused = ("No Acceptable Presentation Contexts" if ing[1] == ref.aet
                       else "Association Rejected")
            assert refused in out, (ing, ref.aet, out)
        assert req(rests[1], "PUT", "/tools/accepted-transfer-syntaxes", b'"1.2.840.10008.1.2*"')[0] == 200
        assert req(ref, "PUT", "/tools/accepted-transfer-syntaxes", b'"1.2.840.10008.1.2*"')[0] == 200
        for ing in targets:
            rc, out = store(*ing, f)
            assert rc == 0, out
    # the instance went in through both ingests (stored once: the same instance)
    s, ids = req(rests[0], "GET", "/instances")
    assert s == 200 and len(ids) == 1
    for ing in ingests:
        assert "instance stored" in ing.read_log()
