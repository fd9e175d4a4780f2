"""GET /{patients,studies,series}/{id}/archive compared with a live Orthanc 1.10.1
holding the same files (test_rest.py's `pair` data set, and a set made here to
exercise Orthanc's folder naming: duplicate names, empty tags, odd characters).

Compared: status, Content-Type, Content-Disposition, the ZIP's entry names in
order. Not compared: the bytes of the ZIP itself (Orthanc deflates, Tessera stores)
and entry timestamps. Each entry of Tessera's ZIP must be, byte for byte, the file
Tessera stored (GET /instances/{id}/file), and for POSTed files the file sent."""
from http.client import IncompleteRead
import io
import json
import os
import socket
import subprocess
import time
import urllib.request
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest

from conftest import PYDICOM_FILES, ROOT, storescu
from orthanc import http, orthanc  # noqa: F401  (orthanc is a fixture)
from test_ingest import make_series
from test_rest import LEVELS, ZERO_ID, assert_same_error, fresh, pair  # noqa: F401  (fixtures)

ARCHIVE_LEVELS = LEVELS[:3]


def get_zip(server, path):
    status, body, headers = server.req("GET", path)
    assert status == 200, (server.name, path, status, body[:500])
    return zipfile.ZipFile(io.BytesIO(body)), headers


def sop_of(data):
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID


def instance_files(server):
    """SOPInstanceUID -> bytes of GET /instances/{id}/file, for every instance."""
    out = {}
    for inst in server.get("/instances?expand"):
        status, body, _ = server.req("GET", f"/instances/{inst['ID']}/file")
        assert status == 200
        out[inst["MainDicomTags"]["SOPInstanceUID"]] = body
    return out


def compare_archives(ref, t, level, rid, stored):
    path = f"/{level}/{rid}/archive"
    z1, h1 = get_zip(ref, path)
    z2, h2 = get_zip(t, path)
    assert h2.get("Content-Type") == h1.get("Content-Type") == "application/zip", (h1, h2)
    assert h2.get("Content-Disposition") == h1.get("Content-Disposition") == \
        f'filename="{rid}.zip"', (h1, h2)
    assert z2.testzip() is None
    names1, names2 = z1.namelist(), z2.namelist()
    assert names2 == names1, (path, names1, names2)
    for info in z2.infolist():
        data = z2.read(info)
        assert info.file_size == len(data)
        assert data == stored[sop_of(data)], (path, info.filename)
        # the same instance under the same name in Orthanc's archive
        assert sop_of(z1.read(info.filename)) == sop_of(data), (path, info.filename)
    return names2


def test_archives_match_orthanc(pair):
    stored = instance_files(pair.t)
    total = 0
    for level in ARCHIVE_LEVELS:
        for rid in pair.ref.get("/" + level):
            names = compare_archives(pair.ref, pair.t, level, rid, stored)
            if level == "patients":
                total += len(names)
    # every instance is in exactly one patient archive
    assert total == len(stored) == len(pair.posted) + len(pair.stored)


def test_archive_holds_the_posted_bytes(pair):
    for f in pair.posted:
        series_id = pair.answers[f.name][1]["ParentSeries"]
        z, _ = get_zip(pair.t, f"/series/{series_id}/archive")
        data = f.read_bytes()
        assert data in [z.read(n) for n in z.namelist()], f


@pytest.mark.parametrize("path", [
    *(f"/{level}/{ZERO_ID}/archive" for level in ARCHIVE_LEVELS),
    "/studies/abc/archive", f"/instances/{ZERO_ID}/archive",
])
def test_archive_errors(pair, path):
    status, _ = assert_same_error(pair.ref, pair.t, "GET", path)
    assert status == 404


def make(out, name, patient, study, series, sop, modality="CT", accession="",
         study_desc="", series_desc="", number=1):
    d = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    d.PatientID, d.PatientName = patient
    d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID = study, series, sop
    d.file_meta.MediaStorageSOPInstanceUID = sop
    for keyword, value in [("Modality", modality), ("AccessionNumber", accession),
                           ("StudyDescription", study_desc),
                           ("SeriesDescription", series_desc)]:
        if value is None:
            if keyword in d:
                delattr(d, keyword)
        else:
            with warnings.catch_warnings():  # 'm', 'R-X': not valid CS values, on purpose
                warnings.simplefilter("ignore")
                setattr(d, keyword, value)
    d.InstanceNumber = number
    p = Path(out) / name
    d.save_as(p)
    return p


def naming_set(out):
    """Files whose folder names exercise Orthanc's rules, in a fixed storing order."""
    out.mkdir(parents=True, exist_ok=True)
    doe = ("P1", "DOE^JOHN")
    u = "1.2.826.0.1.3680043.8.498.99"
    return [
        # instances stored out of InstanceNumber order: the archive keeps storing order
        make(out, "a3", doe, f"{u}.1", f"{u}.1.1", f"{u}.1.1.3", number=3),
        make(out, "a1", doe, f"{u}.1", f"{u}.1.1", f"{u}.1.1.1", number=1),
        make(out, "a2", doe, f"{u}.1", f"{u}.1.1", f"{u}.1.1.2", number=2),
        # three series named "CT" in one study
        make(out, "b1", doe, f"{u}.1", f"{u}.1.2", f"{u}.1.2.1"),
        make(out, "b2", doe, f"{u}.1", f"{u}.1.5", f"{u}.1.5.1"),
        # no modality, no description
        make(out, "c1", doe, f"{u}.1", f"{u}.1.3", f"{u}.1.3.1", modality=None,
             series_desc=None),
        # one-letter modality, control characters and punctuation in the description
        make(out, "c2", doe, f"{u}.1", f"{u}.1.4", f"{u}.1.4.1", modality="m",
             series_desc="a\tb  c--d.e_f/g^h"),
        # two studies without accession number or description
        make(out, "d1", doe, f"{u}.2", f"{u}.2.1", f"{u}.2.1.1"),
        make(out, "d2", doe, f"{u}.3", f"{u}.3.1", f"{u}.3.1.1", modality="R-X",
             accession="A-1", study_desc="x  y"),
        # no patient id or name; a name of punctuation only; non-ASCII
        make(out, "e1", ("", ""), f"{u}.4", f"{u}.4.1", f"{u}.4.1.1"),
        make(out, "f1", ("--", ""), f"{u}.5", f"{u}.5.1", f"{u}.5.1.1"),
        make(out, "g1", ("ÄÖ-7", "Müller^Jürgen"), f"{u}.6", f"{u}.6.1", f"{u}.6.1.1",
             modality="ÉCG", study_desc="Étude"),
    ]


def test_archive_names_follow_orthanc(fresh, tmp_path):
    for f in naming_set(tmp_path / "gen"):
        data = f.read_bytes()
        a, b = fresh.ref.upload(data), fresh.t.upload(data)
        assert a == b
    stored = instance_files(fresh.t)
    seen = set()
    for level in ARCHIVE_LEVELS:
        for rid in fresh.ref.get("/" + level):
            names = compare_archives(fresh.ref, fresh.t, level, rid, stored)
            seen.update(names)
    # the cases above were really exercised
    assert "P1 DOE JOHN/Unknown Study/CT/CT000002.dcm" in seen
    assert any("Unknown Study-2/" in n for n in seen), seen
    assert any("/CT-3/" in n for n in seen), seen
    assert any("/Unknown Series/00000000.dcm" in n for n in seen), seen
    assert any(n.startswith("Unknown Patient/") for n in seen), seen
    assert any(n.startswith("/") for n in seen), seen


def stored_path(cluster, instance_id):
    (uuid,), = cluster.sql("SELECT a.uuid::text FROM attachments a JOIN resources r"
                           " ON r.id = a.resource_id WHERE r.public_id = %s", (instance_id,))
    return next(p for p in cluster.stored_files() if p.name == uuid)


def upload_series(cluster, tmp_path, n=3):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    answers = []
    for f in make_series(tmp_path / "gen", n, study_uid="1.2.826.0.1.3680043.8.498.55"):
        status, body, _ = http(rest.url, "POST", "/instances", f.read_bytes())
        assert status == 200, body
        answers.append(json.loads(body))
    return rest, answers


def test_archive_skips_a_file_deleted_meanwhile(cluster, tmp_path):
    rest, answers = upload_series(cluster, tmp_path)
    stored_path(cluster, answers[1]["ID"]).unlink()
    status, body, _ = http(rest.url, "GET", f"/series/{answers[0]['ParentSeries']}/archive")
    assert status == 200
    z = zipfile.ZipFile(io.BytesIO(body))
    assert z.testzip() is None
    # CT_small.dcm's AccessionNumber is "e1"; PatientID "PAT-1" loses its "-"
    assert z.namelist() == ["PAT1 DOE JANE/e1/CT/CT000000.dcm", "PAT1 DOE JANE/e1/CT/CT000002.dcm"]
    assert z.read(z.namelist()[1]) == (tmp_path / "gen/00003.dcm").read_bytes()
    assert "archive: file gone" in rest.read_log()


def test_archive_aborts_on_a_damaged_file(cluster, tmp_path):
    # a file shorter than the index says: the transfer breaks off, no ZIP that looks whole
    rest, answers = upload_series(cluster, tmp_path)
    p = stored_path(cluster, answers[2]["ID"])
    os.truncate(p, p.stat().st_size - 10)
    req = urllib.request.Request(f"{rest.url}/series/{answers[0]['ParentSeries']}/archive")
    with pytest.raises((IncompleteRead, ConnectionError)):
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()
    assert "archive aborted" in rest.read_log()


def test_archive_client_gone_midway(cluster, tmp_path):
    # the client hangs up after the first bytes: the rest process drops the archive,
    # frees what it held and goes on serving
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    out = tmp_path / "big"
    subprocess.run(["/usr/bin/python3", str(ROOT / "tests/tools/gendicom.py"), "--out", str(out),
                    "--patients", "1", "--instances-per-series", "8", "--size", "1024",
                    "--no-manifest", "-q"], check=True)
    rc, log = storescu(ing, sorted(out.rglob("*.dcm")))
    assert rc == 0, log
    study = json.loads(http(rest.url, "GET", "/studies")[1])[0]
    conn = socket.create_connection(("127.0.0.1", rest.port))
    conn.sendall(f"GET /studies/{study}/archive HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    conn.close()
    deadline = time.time() + 20
    while "archive not completed" not in rest.read_log() and time.time() < deadline:
        time.sleep(0.1)
    assert "archive not completed" in rest.read_log()
    status, body, _ = http(rest.url, "GET", f"/studies/{study}/archive")
    assert status == 200 and len(zipfile.ZipFile(io.BytesIO(body)).namelist()) == 8
