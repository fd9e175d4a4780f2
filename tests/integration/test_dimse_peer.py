"""Tessera's DICOM services driven by a peer that is not dcmtk: npm's dcmjs-dimse
(tests/integration/dimse_peer/peer.js), an independent DIMSE implementation
(issue 15 found what dcmtk's own tools never send). C-ECHO, C-STORE, C-FIND,
C-MOVE and C-GET on ingest's and query's ports."""
import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from conftest import PYDICOM_FILES, npm_ci

PEER = Path(__file__).resolve().parent / "dimse_peer"
FILES = [PYDICOM_FILES / n for n in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm",
                                     "rtplan.dcm")]


@pytest.fixture(scope="session")
def dimse_peer():
    """npm ci of the pinned dcmjs-dimse (package-lock.json), once per run."""
    npm_ci(PEER)

    def run(port, op, *args, called="TESSERA"):
        p = subprocess.run(["node", str(PEER / "peer.js"), str(port), called, op, *map(str, args)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])
    return run


def statuses(out):
    return [r["status"] for r in out["responses"]]


def test_echo_store_find_get_move(cluster, dimse_peer, tmp_path):
    ing = cluster.start_ingest()
    out = dimse_peer(ing.port, "echo")
    assert statuses(out) == [0] and "networkError" not in out, out
    out = dimse_peer(ing.port, "store", *FILES)
    assert statuses(out) == [0] * len(FILES), out
    uids = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in FILES)
    assert sorted(r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")) == uids

    q = cluster.start_query()
    assert statuses(dimse_peer(q.port, "echo")) == [0]
    ct = pydicom.dcmread(FILES[0], stop_before_pixels=True)
    out = dimse_peer(q.port, "find-studies", f"PatientID={ct.PatientID}", "StudyInstanceUID=")
    assert statuses(out) == [0xFF00, 0], out
    assert out["responses"][0]["dataset"]["StudyInstanceUID"] == str(ct.StudyInstanceUID)

    out = dimse_peer(q.port, "get-study", ct.StudyInstanceUID)
    assert out["received"] == [str(ct.SOPInstanceUID)], out
    assert statuses(out)[-1] == 0, out

    # C-MOVE to a destination that is not registered: refused as PS3.4 says (0xA801)
    out = dimse_peer(q.port, "move-study", "NOWHERE", ct.StudyInstanceUID)
    assert statuses(out) == [0xA801], out
    assert ing.proc.poll() is None and q.proc.poll() is None
