"""DICOMweb Studies service (PS3.18) under /dicom-web/: QIDO-RS, WADO-RS (instances,
metadata, bulk data, frames) and STOW-RS, driven with raw HTTP (multipart built and
read here, as curl would send it), compared with what findscu sees through the same
query service, with npm's dicomweb-client (the library OHIF uses), and side by side
with Orthanc 1.10.1's DICOMweb plugin (Debian's orthanc-dicomweb) holding the same
files. Where the plugin departs from PS3.18, the test says so and follows the
standard."""
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pydicom
import pytest

from conftest import PYDICOM_FILES, Cluster, npm_ci
from orthanc import Orthanc, http

DW_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ROOT_UID = "2.25.4711"

PATIENTS = {"PID1": ("DOE^JOHN", "19700101", "M"), "PID2": ("SMITH^ANNA", "19800202", "F")}
# study: patient, date, time, accession, description, referring physician
STUDIES = {
    "1": ("PID1", "20200115", "101500", "ACC1", "CHEST", "HOUSE^GREG"),
    "2": ("PID1", "20210301", "090000", "ACC2", "KNEE", "WILSON^JAMES"),
    "3": ("PID2", "20220610", "153000", "ACC3", "HEAD", "HOUSE^GREG"),
}
# series: study, modality, instances
SERIES = {"1.1": ("1", "CT", 2), "1.2": ("1", "MR", 1), "2.1": ("2", "CT", 2),
          "3.1": ("3", "MR", 3)}
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def study_uid(s):
    return f"{ROOT_UID}.1.{s}"


def series_uid(se):
    return f"{ROOT_UID}.2.{se}"


def sop_uid(se, i):
    return f"{ROOT_UID}.3.{se}.{i}"


def make_dataset(out):
    """CT_small.dcm (explicit little endian, 128x128 16-bit) rewritten per instance."""
    files = []
    for se, (st, modality, count) in SERIES.items():
        pid, date, tm, acc, desc, ref = STUDIES[st]
        name, birth, sex = PATIENTS[pid]
        for i in range(1, count + 1):
            ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
            ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = pid, name, birth, sex
            ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid(st), date, tm
            ds.AccessionNumber, ds.StudyDescription, ds.ReferringPhysicianName = acc, desc, ref
            ds.StudyID = f"ST{st}"
            ds.SeriesInstanceUID, ds.Modality = series_uid(se), modality
            ds.SeriesNumber = int(se.split(".")[1])
            ds.SOPClassUID = CT_CLASS if modality == "CT" else MR_CLASS
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.SOPInstanceUID = sop_uid(se, i)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i
            p = out / f"{se}-{i}.dcm"
            ds.save_as(p)
            files.append(p)
    return files


def dicomweb_orthanc(base):
    return Orthanc(base, Plugins=[DW_PLUGIN], DicomWeb={"Enable": True, "Root": "/dicom-web/"})


@pytest.fixture(scope="module")
def dw(postgres, tmp_path_factory):
    """The same files in Tessera (ingest, query, rest) and in Orthanc with its DICOMweb
    plugin; a second rest whose query service caps answers at 3 (TESSERA_QUERY_LIMIT)."""
    base = tmp_path_factory.mktemp("dicomweb")
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    files = make_dataset(data)
    o = dicomweb_orthanc(base / "orthanc").start()
    (base / "tessera").mkdir()
    c = Cluster(postgres, base / "tessera")
    try:
        q = c.start_query()
        ing = c.start_ingest()
        rest = c.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
        q3 = c.start_query(TESSERA_QUERY_LIMIT=3)
        rest3 = c.start_rest(ing, TESSERA_QUERY_BUS=q3.bus)
        for f in files:
            body = f.read_bytes()
            assert http(o.url, "POST", "/instances", body)[0] == 200
            assert http(rest.url, "POST", "/instances", body)[0] == 200
        c.o, c.rest, c.rest3, c.q, c.files, c.data = o, rest, rest3, q, files, data
        yield c
    finally:
        c.stop()
        o.stop()
        for s in c.ingests + c.rests + getattr(c, "queries", []):
            log = s.read_log()
            assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


def get(url, path, accept=None):
    """GET; returns (status, body bytes, headers)."""
    return http(url, "GET", path, headers={"Accept": accept} if accept else {})


def qido(url, path, **params):
    """A QIDO-RS search; returns (status, list of result objects, headers)."""
    query = urllib.parse.urlencode(params, doseq=True, quote_via=urllib.parse.quote)
    status, body, headers = get(url, f"/dicom-web/{path}" + (f"?{query}" if query else ""),
                                "application/dicom+json")
    return status, (json.loads(body) if body else None), headers


def value(obj, tag):
    """The first value of a DICOM JSON attribute (PN as its Alphabetic text)."""
    v = obj.get(tag, {}).get("Value")
    if not v:
        return None
    return v[0]["Alphabetic"] if isinstance(v[0], dict) and "Alphabetic" in v[0] else v[0]


def uids(results, tag="0020000D"):
    return sorted(value(r, tag) for r in results or [])


# ---- QIDO-RS ---------------------------------------------------------------------


def test_qido_all_studies_as_orthanc(dw):
    status, mine, headers = qido(dw.rest.url, "studies")
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"
    status, theirs, _ = qido(dw.o.url, "studies")
    assert status == 200
    assert uids(mine) == uids(theirs) == sorted(study_uid(s) for s in STUDIES)
    by_uid = {value(r, "0020000D"): r for r in theirs}
    for r in mine:
        ref = by_uid[value(r, "0020000D")]
        for tag in ("00100020", "00100010", "00080020", "00080030", "00080050", "00200010",
                    "00080090", "00100030", "00100040"):
            assert r[tag] == ref[tag], (tag, r[tag], ref[tag])
        assert sorted(r["00080061"]["Value"]) == sorted(ref["00080061"]["Value"])
        for tag in ("00201206", "00201208"):  # numbers of related series and instances
            assert r[tag]["Value"] == ref[tag]["Value"], tag
        assert r["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{value(r, '0020000D')}")
        assert value(r, "00081030") == STUDIES[value(r, "0020000D").split(".")[-1]][4]


# every query: the studies (1, 2, 3) PS3.4 C.2.2.2 matching gives
STUDY_QUERIES = [
    ({"PatientID": "PID1"}, ["1", "2"]),
    ({"00100020": "PID2"}, ["3"]),                      # a key given as its tag
    ({"PatientName": "DOE*"}, ["1", "2"]),
    ({"PatientName": "DOE^JOHN"}, ["1", "2"]),          # '^' percent-encoded by qido()
    ({"StudyDate": "20210101-"}, ["2", "3"]),
    ({"StudyDate": "-20210301"}, ["1", "2"]),
    ({"StudyDate": "20200101-20201231"}, ["1"]),
    ({"StudyDate": "20220610"}, ["3"]),
    ({"StudyTime": "090000-120000"}, ["1", "2"]),
    ({"AccessionNumber": "ACC3"}, ["3"]),
    ({"AccessionNumber": "ACC?"}, ["1", "2", "3"]),
    ({"ModalitiesInStudy": "MR"}, ["1", "3"]),
    ({"ModalitiesInStudy": "CT,MR"}, ["1", "2", "3"]),
    ({"StudyInstanceUID": f"{study_uid('1')},{study_uid('3')}"}, ["1", "3"]),
    ({"StudyInstanceUID": f"{study_uid('2')}\\{study_uid('3')}"}, ["2", "3"]),
    ({"ReferringPhysicianName": "HOUSE^GREG"}, ["1", "3"]),
    ({"StudyID": "ST2"}, ["2"]),
    ({"PatientID": "PID1", "StudyDate": "20210101-"}, ["2"]),
]


@pytest.mark.parametrize("params,expected", STUDY_QUERIES)
def test_qido_study_matching(dw, params, expected):
    status, mine, _ = qido(dw.rest.url, "studies", **params)
    assert status == 200, mine
    assert uids(mine) == [study_uid(s) for s in expected]


def test_qido_study_matching_as_findscu(dw):
    """The same matcher answers C-FIND on the query service's port."""
    for params, expected in STUDY_QUERIES:
        keys = [f"{k}={v}" for k, v in params.items() if not k[0].isdigit()]
        if len(keys) != len(params):
            continue
        keys = [k.replace(",", "\\") if k.split("=")[0] in ("StudyInstanceUID",
                                                            "ModalitiesInStudy") else k
                for k in keys]
        p = subprocess.run(["findscu", "-S", "-aet", "FINDSCU", "-aec", "TESSERA", "-X", "-od",
                            str(dw.base), "-k", "QueryRetrieveLevel=STUDY", "-k",
                            "StudyInstanceUID", *sum((["-k", k] for k in keys), []),
                            "127.0.0.1", str(dw.q.port)], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        found = sorted(str(pydicom.dcmread(f).StudyInstanceUID) for f in dw.base.glob("rsp*.dcm"))
        for f in dw.base.glob("rsp*.dcm"):
            f.unlink()
        assert found == [study_uid(s) for s in expected], (params, p.stdout + p.stderr)


def test_qido_orthanc_plugin_does_not_percent_decode(dw):
    """PatientName=DOE%5EJOHN is DOE^JOHN (RFC 3986); the plugin matches the encoded text
    and finds nothing, Tessera decodes it (docs/development.md, "Browsers and viewers")."""
    path = "/dicom-web/studies?PatientName=DOE%5EJOHN"
    status, body, _ = get(dw.rest.url, path)
    assert status == 200 and uids(json.loads(body)) == [study_uid("1"), study_uid("2")]
    status, body, _ = get(dw.o.url, path)
    assert status == 200 and json.loads(body) == []


def test_qido_series_and_instances_levels(dw):
    s1 = study_uid("1")
    status, r, _ = qido(dw.rest.url, f"studies/{s1}/series")
    assert status == 200 and uids(r, "0020000E") == [series_uid("1.1"), series_uid("1.2")]
    assert all(value(x, "0020000D") == s1 for x in r)
    assert all(x["00081190"]["Value"][0].endswith(
        f"/studies/{s1}/series/{value(x, '0020000E')}") for x in r)
    status, theirs, _ = qido(dw.o.url, f"studies/{s1}/series")
    assert uids(theirs, "0020000E") == uids(r, "0020000E")
    by_uid = {value(x, "0020000E"): x for x in theirs}
    for x in r:
        for tag in ("00080060", "00200011", "00201209"):
            assert x[tag]["Value"] == by_uid[value(x, "0020000E")][tag]["Value"], tag

    status, r, _ = qido(dw.rest.url, "series", Modality="CT")
    assert uids(r, "0020000E") == [series_uid("1.1"), series_uid("2.1")]
    # /series answers the study's attributes too (PS3.18 10.6.3.3.2)
    assert sorted(value(x, "00100020") for x in r) == ["PID1", "PID1"]

    status, r, _ = qido(dw.rest.url, f"studies/{s1}/series/{series_uid('1.1')}/instances")
    assert status == 200 and uids(r, "00080018") == [sop_uid("1.1", 1), sop_uid("1.1", 2)]
    for x in r:  # Rows, Columns, BitsAllocated come from the metadata stored at ingest
        assert x["00280010"] == {"vr": "US", "Value": [128]}
        assert x["00280011"] == {"vr": "US", "Value": [128]}
        assert x["00280100"] == {"vr": "US", "Value": [16]}
        assert x["00080016"]["Value"] == [CT_CLASS]
    status, theirs, _ = qido(dw.o.url, f"studies/{s1}/series/{series_uid('1.1')}/instances")
    assert uids(theirs, "00080018") == uids(r, "00080018")

    status, r, _ = qido(dw.rest.url, f"studies/{s1}/instances")
    assert uids(r, "00080018") == sorted([sop_uid("1.1", 1), sop_uid("1.1", 2), sop_uid("1.2", 1)])
    status, r, _ = qido(dw.rest.url, "instances", SOPInstanceUID=sop_uid("3.1", 2))
    assert uids(r, "00080018") == [sop_uid("3.1", 2)]
    assert value(r[0], "00100020") == "PID2" and value(r[0], "00080060") == "MR"
    status, r, _ = qido(dw.rest.url, "instances", SOPClassUID=MR_CLASS, InstanceNumber="3")
    assert uids(r, "00080018") == [sop_uid("3.1", 3)]


def test_qido_includefield(dw):
    # a keyword, a tag, a comma-separated list and a repeated parameter
    status, r, _ = qido(dw.rest.url, "series", SeriesInstanceUID=series_uid("1.1"),
                        includefield=["Manufacturer,00180015", "ProtocolName"])
    assert status == 200 and len(r) == 1
    ref = pydicom.dcmread(dw.files[0])
    assert value(r[0], "00080070") == ref.Manufacturer
    assert "00180015" in r[0] and "00181030" in r[0]
    # not asked for: not there
    status, r, _ = qido(dw.rest.url, "series", SeriesInstanceUID=series_uid("1.1"))
    assert "00080070" not in r[0]
    # instance level: an attribute the index does not keep comes from the stored metadata
    status, r, _ = qido(dw.rest.url, "instances", SOPInstanceUID=sop_uid("1.1", 1),
                        includefield="00280030,KVP")
    assert r[0]["00280030"]["vr"] == "DS" and len(r[0]["00280030"]["Value"]) == 2
    assert r[0]["00180060"]["Value"] == [float(ref.KVP)]
    # all: every attribute but bulk data
    status, r, _ = qido(dw.rest.url, "instances", SOPInstanceUID=sop_uid("1.1", 1),
                        includefield="all")
    assert "00180060" in r[0] and "00080070" in r[0] and "7FE00010" not in r[0]
    # the plugin ignores includefield=all (docs/development.md, "Browsers and viewers")
    status, theirs, _ = qido(dw.o.url, "instances", SOPInstanceUID=sop_uid("1.1", 1),
                             includefield="all")
    assert "00180060" not in theirs[0]


def test_qido_limit_offset(dw):
    status, everything, _ = qido(dw.rest.url, "instances")
    assert len(everything) == 8
    pages = []
    for offset in (0, 3, 6):
        status, r, headers = qido(dw.rest.url, "instances", limit=3, offset=offset)
        assert status == 200 and "Warning" not in headers  # the client's own limit
        pages.append(uids(r, "00080018"))
    assert [len(p) for p in pages] == [3, 3, 2]
    assert sorted(sum(pages, [])) == uids(everything, "00080018")


def test_qido_warning_when_the_server_caps(dw):
    status, r, headers = qido(dw.rest3.url, "instances")
    assert status == 200 and len(r) == 3
    assert headers["Warning"].startswith("299 ") and "Additional results" in headers["Warning"]
    status, r, headers = qido(dw.rest3.url, "studies")  # 3 studies, cap 3: nothing cut
    assert len(r) == 3 and "Warning" not in headers


def test_qido_no_match_is_204(dw):
    """PS3.18 8.3.4.4.1 (2024e): no match is 204 No Content with an empty payload (the
    plugin answers 200 with []; CP-2473, not final text, would make it 200)."""
    status, body, _ = get(dw.rest.url, "/dicom-web/studies?PatientID=NOBODY")
    assert status == 204 and body == b""
    status, body, _ = get(dw.o.url, "/dicom-web/studies?PatientID=NOBODY")
    assert status == 200 and json.loads(body) == []


def test_qido_fuzzymatching_folds_case(dw):
    status, r, _ = qido(dw.rest.url, "studies", PatientName="smith*", fuzzymatching="true")
    assert uids(r) == [study_uid("3")]
    status, r, _ = qido(dw.rest.url, "studies", PatientName="smith*", fuzzymatching="false")
    # without it, person names follow C-FIND's TESSERA_QUERY_CASE_SENSITIVE_PN (off)
    assert uids(r) == [study_uid("3")]


@pytest.mark.parametrize("path,message", [
    ("studies?StudyDate=20201345", "StudyDate"),
    ("studies?StudyDate=2020-01-01", "StudyDate"),
    ("studies?StudyDate=20200101-20201301", "StudyDate"),
    ("studies?FooBar=1", "FooBar"),
    ("studies?00191234=1", "is not an attribute Tessera matches on"),
    ("studies?Modality=CT", "not an attribute of the level"),
    ("studies?includefield=NoSuchKeyword", "NoSuchKeyword"),
    ("studies?limit=-1", "limit"),
    ("studies?offset=x", "offset"),
    ("studies?fuzzymatching=maybe", "fuzzymatching"),
    ("studies/not-a-uid/series", "not a UID"),
])
def test_qido_bad_requests(dw, path, message):
    status, body, _ = get(dw.rest.url, f"/dicom-web/{path}")
    assert status == 400, body
    assert message in json.loads(body)["Details"]


def test_qido_invalid_date_orthanc_plugin_answers_200(dw):
    """The plugin takes an impossible date and answers 200 (notes); PS3.18 wants 400."""
    status, _, _ = get(dw.o.url, "/dicom-web/studies?StudyDate=20201345")
    assert status == 200


def test_qido_accept_it_cannot_serve(dw):
    status, body, _ = get(dw.rest.url, "/dicom-web/studies", "text/html")
    assert status == 406, body
    status, body, _ = get(dw.rest.url, "/dicom-web/studies", "application/json, */*;q=0.1")
    assert status == 200


# ---- WADO-RS ---------------------------------------------------------------------


def multipart(body, content_type):
    """The parts of a multipart body: [(headers dict with lower-case names, bytes)]."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    chunks = body.split(delim)
    assert chunks[-1].strip() in (b"--", b"--\r\n".strip()), "no close delimiter"
    out = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n"), chunk[:80]
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                       (line.decode().partition(":") for line in head.split(b"\r\n")))
        out.append((headers, content))
    return out


def files_of(dw, *prefixes):
    return sorted(f.read_bytes() for f in dw.files if f.name.startswith(prefixes))


def test_wado_retrieve_study_series_instance(dw):
    s1, se = study_uid("1"), series_uid("1.1")
    for path, expected in [(f"studies/{s1}", files_of(dw, "1.1-", "1.2-")),
                           (f"studies/{s1}/series/{se}", files_of(dw, "1.1-")),
                           (f"studies/{s1}/series/{se}/instances/{sop_uid('1.1', 2)}",
                            files_of(dw, "1.1-2"))]:
        status, body, headers = get(dw.rest.url, f"/dicom-web/{path}",
                                    'multipart/related; type="application/dicom"')
        assert status == 200, body
        assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
        parts = multipart(body, headers["Content-Type"])
        assert sorted(p[1] for p in parts) == expected
        assert all(p[0]["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
                   for p in parts)
        status, body, headers = get(dw.o.url, f"/dicom-web/{path}")
        assert sorted(p[1] for p in multipart(body, headers["Content-Type"])) == expected
    # no Accept, */* and transfer-syntax=* are served as stored
    for accept in (None, "*/*", 'multipart/related; type="application/dicom"; transfer-syntax=*',
                   'multipart/related; type="application/dicom"; '
                   'transfer-syntax=1.2.840.10008.1.2.1'):
        status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{s1}/series/{se}", accept)
        assert status == 200 and len(multipart(body, headers["Content-Type"])) == 2


def test_wado_retrieve_length_known_or_chunked(dw, tmp_path):
    """Files sent as stored (no transfer-syntax asked for, or the one they are in):
    Content-Length from the index's sizes (so that MHD reads into its block-sized
    buffer, not chunks of what is left of a connection's 32 KiB pool:
    bench/wado-retrieve), the very length of the body. Converted files: chunked, their
    size unknown until made."""
    s1 = study_uid("1")
    for accept in ("*/*", 'multipart/related; type="application/dicom"; '
                   "transfer-syntax=1.2.840.10008.1.2.1"):
        p = subprocess.run(["curl", "-sS", "-D", "-", "-o", str(tmp_path / "b"), "-H",
                            f"Accept: {accept}", f"{dw.rest.url}/dicom-web/studies/{s1}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        head = p.stdout.lower()
        assert "transfer-encoding" not in head, head
        m = re.search(r"content-length: (\d+)", head)
        assert m, head
        assert int(m.group(1)) == (tmp_path / "b").stat().st_size
        ct = re.search(r"^content-type: (.*)$", p.stdout, re.I | re.M).group(1).strip()
        parts = multipart((tmp_path / "b").read_bytes(), ct)
        assert sorted(c for _, c in parts) == files_of(dw, "1.1-", "1.2-")
    p = subprocess.run(["curl", "-sS", "-D", "-", "-o", str(tmp_path / "c"), "-H",
                        'Accept: multipart/related; type="application/dicom"; '
                        "transfer-syntax=1.2.840.10008.1.2",
                        f"{dw.rest.url}/dicom-web/studies/{s1}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "transfer-encoding: chunked" in p.stdout.lower(), p.stdout


def test_wado_retrieve_file_gone_cuts_the_answer(dw, tmp_path):
    """A file listed by the index but gone from the storage area when its turn comes
    (deleted meanwhile, or lost): the answer, whose length was announced, is cut short
    (curl: error 18, partial file) rather than sent without the instance as if whole;
    rest logs which file. The other retrieves are unaffected."""
    study = study_uid("60")
    files = new_instances(tmp_path, study, 3)
    for f in files:
        assert http(dw.rest.url, "POST", "/instances", f.read_bytes())[0] == 200
    uuid = dw.sql("SELECT a.uuid::text FROM attachments a JOIN instances i ON "
                  "i.resource_id = a.resource_id WHERE i.sop_instance_uid = %s "
                  "AND a.content_type = 1", (f"{study}.1.2",))[0][0]
    stored = next(p for p in dw.stored_files() if p.name == uuid)
    moved = tmp_path / "moved"
    stored.rename(moved)
    try:
        p = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "b"),
                            f"{dw.rest.url}/dicom-web/studies/{study}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 18, (p.returncode, p.stderr)  # CURLE_PARTIAL_FILE
        got = (tmp_path / "b").read_bytes() if (tmp_path / "b").exists() else b""
        assert not got.endswith(b"--\r\n")  # no close delimiter
        assert uuid in dw.rest.read_log()
    finally:
        moved.rename(stored)
    status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{study}")
    assert status == 200 and len(multipart(body, headers["Content-Type"])) == 3


def store_big_study(dw, tmp_path, study, count, side=1448):
    """count instances of side x side 16-bit random pixels (4 MiB at 1448) in a new
    study (one series); returns their files' bytes, sorted."""
    src = pydicom.dcmread(dw.files[0])
    src.Rows = src.Columns = side
    out = []
    for n in range(count):
        src.PixelData = os.urandom(side * side * 2)
        src.StudyInstanceUID, src.SeriesInstanceUID = study, f"{study}.1"
        src.SOPInstanceUID = src.file_meta.MediaStorageSOPInstanceUID = f"{study}.1.{n}"
        p = tmp_path / f"big{n}.dcm"
        src.save_as(p)
        assert http(dw.rest.url, "POST", "/instances", p.read_bytes())[0] == 200
        out.append(p.read_bytes())
        p.unlink()
    return sorted(out)


def stored_path(dw, sop):
    uuid = dw.sql("SELECT a.uuid::text FROM attachments a JOIN instances i ON "
                  "i.resource_id = a.resource_id WHERE i.sop_instance_uid = %s "
                  "AND a.content_type = 1", (sop,))[0][0]
    return next(p for p in dw.stored_files() if p.name == uuid)


def mapped_files(dw):
    """Names of the storage area's files that rest has mapped now (/proc/PID/maps)."""
    names = {p.name for p in dw.stored_files()}
    maps = Path(f"/proc/{dw.rest.proc.pid}/maps").read_text().splitlines()
    return {line.split()[-1].rsplit("/", 1)[-1] for line in maps
            if len(line.split()) >= 6 and line.split()[-1].rsplit("/", 1)[-1] in names}


def wait_unmapped(dw, timeout=10):
    deadline = time.monotonic() + timeout
    while mapped_files(dw) and time.monotonic() < deadline:
        time.sleep(0.05)
    return mapped_files(dw)


def stalled_get(url, source=None):
    """A GET on a raw socket whose tiny receive buffer the test does not read yet: the
    answer waits in rest, mid-body (mapped, if it is). source: the client's address."""
    u = urllib.parse.urlsplit(url)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (set before connecting)
    if source:
        s.bind((source, 0))
    s.connect((u.hostname, u.port))
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.5)
    return s


def read_answer(s, timeout=60):
    """The answer on s: (lower-cased head, body): the body ends at Content-Length or
    where rest closed the connection."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.decode().lower()
    length = int(re.search(r"content-length: (\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return head, body


def curl_head_body(tmp_path, name, url, *args):
    """curl -D/-o into tmp_path; returns (exit code, lower-cased headers, body, stderr)."""
    h, b = tmp_path / f"{name}.h", tmp_path / f"{name}.b"
    p = subprocess.run(["curl", "-sS", "-D", str(h), "-o", str(b), *args, url],
                       capture_output=True, text=True, timeout=120)
    return (p.returncode, h.read_text().lower() if h.exists() else "",
            b.read_bytes() if b.exists() else b"", p.stderr)


@pytest.fixture(scope="module")
def big(dw, tmp_path_factory):
    """A study of three 4 MiB instances: (study UID, the files' bytes sorted)."""
    study = study_uid("61")
    return study, store_big_study(dw, tmp_path_factory.mktemp("big"), study, 3)


def test_wado_retrieve_mapped_keeps_the_connection(dw, big, tmp_path):
    """Files as stored over plain HTTP are sent by libmicrohttpd from read-only
    mappings of them (MHD_create_response_from_iovec: copied once, page cache to
    socket; bench/wado-retrieve): seen in rest's /proc/PID/maps while a client that
    reads nothing yet holds the answer, released when the answer ends. For any client
    (not only one on this host), with the same bytes and Content-Length as the read()
    way, and the connection kept for the next request (curl reuses it). Clients at
    once get whole answers. For a client on this host the socket's send buffer is
    small (128 KiB: loopback, rest_http.c)."""
    study, expected = big
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    slow = stalled_get(url)
    seen = mapped_files(dw)
    # rest's end of it (the one whose peer is our socket): a client on this host
    # gets a 128 KiB send buffer (the kernel shows it doubled), rest_http.c says why
    ss = subprocess.run(["ss", "-tmnH", "dst", f"127.0.0.1:{slow.getsockname()[1]}"],
                        capture_output=True, text=True, check=True).stdout
    assert re.search(r"\btb262144\b", ss), ss
    fast = [curl_head_body(tmp_path, f"f{i}", url) for i in range(2)]
    assert {stored_path(dw, f"{study}.1.{n}").name for n in range(3)} <= seen, seen
    head, body = read_answer(slow)
    slow.close()
    assert wait_unmapped(dw) == set()
    for rc, head, body, err in fast + [(0, head, body, "")]:
        assert rc == 0, err
        assert "connection: close" not in head, head
        assert int(re.search(r"content-length: (\d+)", head).group(1)) == len(body)
        ct = re.search(r"^content-type: (.*)$", head, re.M).group(1).strip()
        parts = multipart(body, ct)
        assert [h["content-type"] for h, _ in parts] == [
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"] * 3
        assert sorted(c for _, c in parts) == expected
    # one connection, two answers: mapped, then read() (converted: chunked)
    conv = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'
    p = subprocess.run(["curl", "-sS", "-v", "-o", str(tmp_path / "k1"), url,
                        "-o", str(tmp_path / "k2"), "-H", f"Accept: {conv}", url],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Re-using existing connection") == 1, p.stderr
    assert "connection: close" not in p.stderr.lower()
    for k in ("k1", "k2"):
        body = (tmp_path / k).read_bytes()
        boundary = re.match(rb"--([^\r]+)\r\n", body).group(1).decode()
        assert len(multipart(body, f"boundary={boundary}")) == 3


def test_wado_retrieve_mapped_for_a_client_at_another_address(dw, big, tmp_path):
    """A client whose address is not rest's own (127.0.0.2 against rest's 127.0.0.1:
    what a viewer on another machine looks like to the socket) gets the mapped answer
    too, the same bytes; only its send buffer is left to the kernel's autotuning
    (not the 128 KiB of a client on this host)."""
    study, expected = big
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    slow = stalled_get(url, source="127.0.0.2")
    assert {stored_path(dw, f"{study}.1.{n}").name for n in range(3)} <= mapped_files(dw)
    ss = subprocess.run(["ss", "-tmnH", "dst", f"127.0.0.2:{slow.getsockname()[1]}"],
                        capture_output=True, text=True, check=True).stdout
    assert "skmem" in ss and not re.search(r"\btb262144\b", ss), ss
    head, body = read_answer(slow)
    slow.close()
    assert int(re.search(r"content-length: (\d+)", head).group(1)) == len(body)
    ct = re.search(r"^content-type: (.*)$", head, re.M).group(1).strip()
    assert sorted(c for _, c in multipart(body, ct)) == expected
    assert wait_unmapped(dw) == set()
    rc, _, body, err = curl_head_body(tmp_path, "other", url, "--interface", "127.0.0.2")
    assert rc == 0, err
    assert len(multipart(body, "boundary=" + re.match(rb"--([^\r]+)", body).group(1).decode())) == 3


def test_wado_retrieve_mapped_http10_head_range(dw, big, tmp_path):
    """What libmicrohttpd does for any answer, it does for a mapped one: an HTTP/1.0
    client gets the whole body and the connection closed; HEAD is not a method of the
    route (405 with Allow, no body, as before: rest_http.c would not map for a HEAD
    anyway); Range is not implemented by rest (RFC 9110 lets a server ignore it): 200
    and the whole answer, as with the read() way."""
    study, expected = big
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    rc, head, body, err = curl_head_body(tmp_path, "get", url)
    assert rc == 0, err
    length = int(re.search(r"content-length: (\d+)", head).group(1))
    assert length == len(body)
    rc, head10, body10, err = curl_head_body(tmp_path, "h10", url, "--http1.0")
    assert rc == 0, err
    # (MHD answers with its own version, 1.1, as RFC 9110 6.2 allows)
    assert head10.startswith("http/1.1 200") and "connection: close" in head10, head10
    ct = re.search(r"^content-type: (.*)$", head10, re.M).group(1).strip()
    assert sorted(c for _, c in multipart(body10, ct)) == expected
    rc, headh, bodyh, err = curl_head_body(tmp_path, "head", url, "-I")
    assert rc == 0, err
    assert headh.startswith("http/1.1 405") and "allow: get" in headh, headh
    assert "content-length: 0" in headh and bodyh.endswith(b"\r\n\r\n")  # (-o: the head)
    assert wait_unmapped(dw) == set()
    rc, headr, bodyr, err = curl_head_body(tmp_path, "range", url, "-r", "0-99")
    assert rc == 0, err
    assert headr.startswith("http/1.1 200") and len(bodyr) == length


def test_wado_retrieve_mapped_client_gone_or_stalled(dw, big, tmp_path):
    """A client that hangs up in the middle of a mapped answer, or that stops reading:
    rest is unaffected (other clients are served meanwhile, one thread per connection)
    and the mappings are released as soon as libmicrohttpd drops the connection."""
    study, expected = big
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    p = subprocess.run(["curl", "-sS", "--limit-rate", "1M", "--max-time", "1", "-o",
                        "/dev/null", url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 28, p.stderr  # CURLE_OPERATION_TIMEDOUT: curl hung up
    assert wait_unmapped(dw) == set()
    s = stalled_get(url)
    assert mapped_files(dw), "the stalled answer is not mapped"
    rc, head, body, err = curl_head_body(tmp_path, "other", url)
    assert rc == 0, err
    ct = re.search(r"^content-type: (.*)$", head, re.M).group(1).strip()
    assert sorted(c for _, c in multipart(body, ct)) == expected
    s.close()
    assert wait_unmapped(dw) == set()
    assert dw.rest.proc.poll() is None


def test_wado_retrieve_file_truncated_in_place_while_sent(dw, tmp_path):
    """A stored file truncated in place (behind Tessera's back) while its mapping is
    being sent: the kernel's copy fails (EFAULT; no SIGBUS, rest never touches the
    pages itself), the answer is cut (the connection closed before Content-Length), rest
    goes on serving."""
    study = study_uid("63")
    expected = store_big_study(dw, tmp_path, study, 3)
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    victim = stored_path(dw, f"{study}.1.2")
    keep = victim.read_bytes()
    slow = stalled_get(url)
    try:
        assert victim.name in mapped_files(dw)
        os.truncate(victim, 1000)
        head, body = read_answer(slow)
        slow.close()
    finally:
        with open(victim, "r+b") as f:  # the same inode, whole again
            f.write(keep)
    length = int(re.search(r"content-length: (\d+)", head).group(1))
    assert len(body) < length and not body.endswith(b"--\r\n"), (len(body), length)
    assert dw.rest.proc.poll() is None
    assert wait_unmapped(dw) == set()
    status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{study}")
    assert status == 200
    assert sorted(c for _, c in multipart(body, headers["Content-Type"])) == expected


def test_wado_retrieve_large_file_gone_or_short_cuts_the_answer(dw, tmp_path):
    """A file gone from the storage area, or shorter than the index says (replaced
    behind Tessera's back), when the answer is made: nothing is mapped and the read()
    way sends the answer, cut where that file comes (curl: error 18), as it always
    did; rest logs why. The next retrieve of the whole study is complete again."""
    study = study_uid("62")
    expected = store_big_study(dw, tmp_path, study, 3)
    stored = stored_path(dw, f"{study}.1.1")
    uuid = stored.name
    moved = tmp_path / "moved"
    url = f"{dw.rest.url}/dicom-web/studies/{study}"
    stored.rename(moved)
    try:
        for case in ("gone", "short"):
            if case == "short":
                stored.write_bytes(moved.read_bytes()[:1000])
            p = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "b"), url],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 18, (case, p.returncode, p.stderr)  # CURLE_PARTIAL_FILE
            got = (tmp_path / "b").read_bytes()
            assert not got.endswith(b"--\r\n")  # no close delimiter
            why = "file gone" if case == "gone" else "file shorter than indexed"
            assert any(why in line for line in dw.rest.read_log().splitlines())
            assert wait_unmapped(dw) == set()
    finally:
        stored.unlink(missing_ok=True)
        moved.rename(stored)
    status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{study}")
    assert status == 200
    assert sorted(c for _, c in multipart(body, headers["Content-Type"])) == expected


def test_wado_frames_transfer_syntax_any_sends_them_as_stored(dw, tmp_path):
    """Frames of a JPEG 2000 instance with Accept ...; transfer-syntax=* (PS3.18
    8.7.3.5.2: any syntax the server likes): sent as stored, each part typed with the
    code stream's media type and syntax (PS3.18 Table 8.7.3-5), the multipart's type
    being the parts'; without the parameter, octet-stream asks for native pixels
    (decoded). An RLE frame is image/x-dicom-rle (it used to go out as
    application/octet-stream, which a client takes for pixels)."""
    src = PYDICOM_FILES / "MR_small_jp2klossless.dcm"
    ds = pydicom.dcmread(src)
    assert http(dw.rest.url, "POST", "/instances", src.read_bytes())[0] == 200
    path = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
            f"instances/{ds.SOPInstanceUID}/frames/1")
    status, body, headers = get(dw.rest.url, path, 'multipart/related; '
                                'type="application/octet-stream"; transfer-syntax=*')
    assert status == 200, body
    assert headers["Content-Type"].startswith('multipart/related; type="image/jp2"'), headers
    (ph, data), = multipart(body, headers["Content-Type"])
    assert ph["content-type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90", ph
    assert data.startswith(b"\xff\x4f\xff\x51")  # SOC, SIZ: a J2K code stream
    status, body, headers = get(dw.rest.url, path,
                                'multipart/related; type="application/octet-stream"')
    assert status == 200, body
    (ph, data), = multipart(body, headers["Content-Type"])
    assert ph["content-type"] == "application/octet-stream", ph
    assert data == ds.pixel_array.tobytes()
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small_RLE.dcm")  # the same UIDs as the J2K one
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.70.1"
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle)
    assert http(dw.rest.url, "POST", "/instances", rle.read_bytes())[0] == 200
    status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                                f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1",
                                "multipart/related; type=\"application/octet-stream\"; "
                                "transfer-syntax=*")
    assert status == 200, body
    (ph, data), = multipart(body, headers["Content-Type"])
    assert ph["content-type"] == "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5", ph
    from pydicom.encaps import generate_pixel_data_frame
    assert data == next(generate_pixel_data_frame(ds.PixelData))  # the stored fragment


@pytest.mark.parametrize("path,status", [
    (f"studies/{ROOT_UID}.9", 404),
    (f"studies/{ROOT_UID}.1.1/series/{ROOT_UID}.9", 404),
    (f"studies/{ROOT_UID}.1.1/series/{ROOT_UID}.2.1.1/instances/{ROOT_UID}.9", 404),
    (f"studies/{ROOT_UID}.1.2/series/{ROOT_UID}.2.1.1", 404),  # a series of another study
    ("studies/1.2.x", 400),
    (f"studies/{ROOT_UID}.9/metadata", 404),
    (f"studies/{ROOT_UID}.1.1/series/{ROOT_UID}.9/metadata", 404),
])
def test_wado_unknown_uids(dw, path, status):
    got, body, _ = get(dw.rest.url, f"/dicom-web/{path}")
    assert got == status, body


@pytest.mark.parametrize("accept", [
    "application/dicom+json",
    'multipart/related; type="application/octet-stream"',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
])
def test_wado_retrieve_not_acceptable(dw, accept):
    status, body, _ = get(dw.rest.url, f"/dicom-web/studies/{study_uid('2')}", accept)
    assert status == 406, body
    assert json.loads(body)["Details"]


def strip_bulk_uris(meta):
    return {k: ({"vr": v["vr"], "BulkDataURI": "..."} if "BulkDataURI" in v else v)
            for k, v in meta.items()}


def test_wado_metadata_as_orthanc(dw):
    s1 = study_uid("1")
    status, body, headers = get(dw.rest.url, f"/dicom-web/studies/{s1}/metadata")
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"
    mine = {value(m, "00080018"): m for m in json.loads(body)}
    status, body, _ = get(dw.o.url, f"/dicom-web/studies/{s1}/metadata")
    theirs = {value(m, "00080018"): m for m in json.loads(body)}
    assert sorted(mine) == sorted(theirs) == sorted(
        [sop_uid("1.1", 1), sop_uid("1.1", 2), sop_uid("1.2", 1)])
    for uid, m in mine.items():
        assert strip_bulk_uris(m) == strip_bulk_uris(theirs[uid]), uid
        se = value(m, "0020000E")
        assert m["7FE00010"]["BulkDataURI"].endswith(
            f"/dicom-web/studies/{s1}/series/{se}/instances/{uid}/bulk/7fe00010")
    for path in (f"studies/{s1}/series/{series_uid('1.1')}/metadata",
                 f"studies/{s1}/series/{series_uid('1.1')}/instances/{sop_uid('1.1', 1)}/metadata"):
        status, body, _ = get(dw.rest.url, f"/dicom-web/{path}", "application/dicom+json")
        got = json.loads(body)
        assert status == 200 and len(got) == (2 if path.count("/") == 4 else 1)
        assert all(g == mine[value(g, "00080018")] for g in got)
    # XML: test_dicomweb_xml.py


def test_wado_series_metadata_reads_no_file(dw):
    """The metadata of a series comes from the index: with its files moved away it is
    the same; an instance without stored metadata (stored before the column) is read
    from its file."""
    s3, se = study_uid("3"), series_uid("3.1")
    path = f"/dicom-web/studies/{s3}/series/{se}/metadata"
    before = json.loads(get(dw.rest.url, path)[1])
    rows = dw.sql("SELECT a.uuid::text FROM attachments a JOIN instances i ON i.resource_id ="
                  " a.resource_id WHERE i.sop_instance_uid LIKE %s", (sop_uid("3.1", "%"),))
    files = [f for f in dw.stored_files() if f.name in {r[0] for r in rows}]
    assert len(files) == 3
    for f in files:
        f.rename(f.with_suffix(".away"))
    try:
        status, body, _ = get(dw.rest.url, path)
        assert status == 200 and json.loads(body) == before
    finally:
        for f in files:
            f.with_suffix(".away").rename(f)
    dw.sql("UPDATE instances SET dicomweb = NULL WHERE sop_instance_uid = %s", (sop_uid("3.1", 2),))
    status, body, _ = get(dw.rest.url, path)
    assert status == 200 and json.loads(body) == before


def test_wado_bulk_data_and_frames(dw):
    s2, se, i = study_uid("2"), series_uid("2.1"), sop_uid("2.1", 1)
    ds = pydicom.dcmread(dw.data / "2.1-1.dcm")
    meta = json.loads(get(dw.rest.url, f"/dicom-web/studies/{s2}/series/{se}/instances/{i}/metadata")[1])
    uri = meta[0]["7FE00010"]["BulkDataURI"]
    path = uri[uri.index("/dicom-web/"):]
    status, body, headers = get(dw.rest.url, path)
    assert status == 200 and 'type="application/octet-stream"' in headers["Content-Type"]
    parts = multipart(body, headers["Content-Type"])
    assert [p[1] for p in parts] == [ds.PixelData]
    base = f"/dicom-web/studies/{s2}/series/{se}/instances/{i}"
    status, body, headers = get(dw.rest.url, f"{base}/frames/1",
                                'multipart/related; type="application/octet-stream"')
    assert status == 200 and [p[1] for p in multipart(body, headers["Content-Type"])] == [ds.PixelData]
    assert get(dw.rest.url, f"{base}/frames/2")[0] == 404
    assert get(dw.rest.url, f"{base}/frames/0")[0] == 400
    assert get(dw.rest.url, f"{base}/frames/1,x")[0] == 400
    assert get(dw.rest.url, f"{base}/bulk/00100010/1/00100020")[0] == 404
    assert get(dw.rest.url, f"{base}/frames/1", "image/jpeg")[0] == 406


def rss_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_wado_study_is_streamed_with_flat_memory(dw, tmp_path):
    """A study of 24 instances of 4 MiB (96 MiB) read in 1 MiB steps: rest's own
    (anonymous) memory grows far less than the study (the ZIP archive's rule),
    sampled at each step. The files are sent from mappings of them: their pages are
    the page cache's, shared with every reader of the files and dropped by the kernel
    like any cached file (counted in RssFile while mapped, not in RssAnon)."""
    src = pydicom.dcmread(dw.files[0])
    src.Rows = src.Columns = 1448
    src.PixelData = os.urandom(1448 * 1448 * 2)
    big = study_uid("99")
    for n in range(24):
        src.StudyInstanceUID, src.SeriesInstanceUID = big, f"{big}.1"
        src.SOPInstanceUID = src.file_meta.MediaStorageSOPInstanceUID = f"{big}.1.{n}"
        p = tmp_path / f"big{n}.dcm"
        src.save_as(p)
        assert http(dw.rest.url, "POST", "/instances", p.read_bytes())[0] == 200
        p.unlink()
    pid = dw.rest.proc.pid
    anon0, file0 = rss_kb(pid, "RssAnon"), rss_kb(pid, "RssFile")
    anon, file = anon0, file0
    import urllib.request
    total = 0
    with urllib.request.urlopen(dw.rest.url + f"/dicom-web/studies/{big}", timeout=120) as r:
        while chunk := r.read(1 << 20):
            total += len(chunk)
            anon, file = max(anon, rss_kb(pid, "RssAnon")), max(file, rss_kb(pid, "RssFile"))
    assert total > 24 * 1448 * 1448 * 2
    print(f"streamed {total} bytes; rest RssAnon {anon0} kB, peak +{anon - anon0} kB; "
          f"RssFile {file0} kB, peak +{file - file0} kB")
    assert anon - anon0 < 16 * 1024, anon - anon0


# ---- STOW-RS -----------------------------------------------------------------------

BOUNDARY = "tessera-test-boundary-0123456789"


def multipart_body(parts, boundary=BOUNDARY, close=True):
    """parts: [(content type or None, bytes)]."""
    out = b""
    for ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return out


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow(url, path, body, content_type=STOW_TYPE):
    status, data, headers = http(url, "POST", f"/dicom-web/{path}", body,
                                 {"Content-Type": content_type,
                                  "Accept": "application/dicom+json"})
    return status, (json.loads(data) if data else None), headers


def new_instances(tmp_path, study, count, series=None):
    """count files of a new study (from CT_small.dcm)."""
    out = []
    for i in range(count):
        ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        ds.PatientID = "STOW"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series or f"{study}.1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{study}.1.{i + 1}"
        p = tmp_path / f"{study}-{i}.dcm"
        ds.save_as(p)
        out.append(p)
    return out


def referenced(rsp):
    return sorted(value(i, "00081155") for i in rsp.get("00081199", {}).get("Value", []))


def failed(rsp):
    return [(value(i, "00081155"), value(i, "00081197"))
            for i in rsp.get("00081198", {}).get("Value", [])]


def test_stow_ten_parts_three_bad(dw, tmp_path):
    """7 good parts are stored, the 3 bad ones listed with their reasons: 202 (PS3.18
    10.5.3: some stored, some failed). Sent with curl, as a client would."""
    study = study_uid("10")
    good = new_instances(tmp_path, study, 7)
    other = new_instances(tmp_path, study_uid("11"), 1)[0]
    parts = [("application/dicom", p.read_bytes()) for p in good[:3]]
    parts.append(("application/dicom", b"this is not DICOM at all" * 20))
    parts += [("application/dicom", p.read_bytes()) for p in good[3:5]]
    parts.append(("application/dicom", other.read_bytes()))   # another study than the URL's
    parts.append(("application/dicom", good[0].read_bytes()[:300]))  # a cut file
    parts += [("application/dicom", p.read_bytes()) for p in good[5:]]
    assert len(parts) == 10
    body = tmp_path / "body"
    body.write_bytes(multipart_body(parts))
    p = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "rsp"), "-w", "%{http_code}",
                        "-H", f"Content-Type: {STOW_TYPE}", "-H", "Accept: application/dicom+json",
                        "--data-binary", f"@{body}", f"{dw.rest.url}/dicom-web/studies/{study}"],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout == "202", p.stdout + p.stderr
    rsp = json.loads((tmp_path / "rsp").read_text())
    assert referenced(rsp) == sorted(f"{study}.1.{i}" for i in range(1, 8))
    assert failed(rsp) == [(None, 0xC000), (f"{study_uid('11')}.1.1", 0x0110), (None, 0xC000)]
    assert rsp["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study}")
    for item in rsp["00081199"]["Value"]:
        assert item["00081190"]["Value"][0].endswith(f"/instances/{value(item, '00081155')}")
        assert value(item, "00081150") == CT_CLASS
    status, r, _ = qido(dw.rest.url, f"studies/{study}/instances")
    assert len(r) == 7
    assert dw.sql("SELECT count(*) FROM studies WHERE study_instance_uid = %s",
                  (study_uid("11"),))[0][0] == 0
    assert dw.temp_files() == []
    # what C-FIND sees through the query service
    q = subprocess.run(["findscu", "-S", "-aet", "FINDSCU", "-aec", "TESSERA", "-X", "-od",
                        str(tmp_path), "-k", "QueryRetrieveLevel=IMAGE", "-k",
                        f"StudyInstanceUID={study}", "-k", "SeriesInstanceUID", "-k",
                        "SOPInstanceUID", "127.0.0.1", str(dw.q.port)],
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0
    assert sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in tmp_path.glob("rsp*.dcm")) == \
        referenced(rsp)


def test_stow_all_stored_200_none_stored_409(dw, tmp_path):
    study = study_uid("12")
    files = new_instances(tmp_path, study, 2)
    status, rsp, headers = stow(dw.rest.url, "studies",
                                multipart_body([("application/dicom", f.read_bytes())
                                                for f in files]))
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"
    assert referenced(rsp) == [f"{study}.1.1", f"{study}.1.2"] and "00081198" not in rsp
    # again: already stored counts as stored
    status, rsp, _ = stow(dw.rest.url, f"studies/{study}",
                          multipart_body([("application/dicom", files[0].read_bytes())]))
    assert status == 200 and referenced(rsp) == [f"{study}.1.1"]
    # every part refused: 409
    status, rsp, _ = stow(dw.rest.url, f"studies/{study_uid('1')}",
                          multipart_body([("application/dicom", f.read_bytes()) for f in files]))
    assert status == 409 and referenced(rsp) == [] and len(failed(rsp)) == 2
    # a part that is not application/dicom is refused as a part
    status, rsp, _ = stow(dw.rest.url, "studies",
                          multipart_body([("application/dicom", files[0].read_bytes()),
                                          ("text/plain", b"hello")]))
    assert status == 202 and failed(rsp) == [(None, 0xC000)]


@pytest.mark.parametrize("content_type,body,status,message", [
    ('multipart/related; type="application/dicom"', multipart_body([(None, b"x")]), 400,
     "no boundary"),
    (STOW_TYPE, b"--some-other-boundary\r\n\r\nx\r\n--some-other-boundary--\r\n", 400,
     "never appears"),
    (STOW_TYPE, multipart_body([("application/dicom", b"DICM" * 100)], close=False)[:-2], 400,
     "truncated"),
    (STOW_TYPE, b"", 400, "empty"),
    (STOW_TYPE, f"--{BOUNDARY}--\r\n".encode(), 400, "no part"),
    ("application/dicom", b"DICM", 415, "multipart/related"),
    (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
     multipart_body([(None, b"{}")]), 415, "application/dicom+json"),
])
def test_stow_malformed(dw, content_type, body, status, message):
    got, rsp, _ = stow(dw.rest.url, "studies", body, content_type)
    assert got == status, rsp
    assert message in rsp["Details"]
    assert dw.temp_files() == []


def test_stow_truncated_body_stores_nothing(dw, tmp_path):
    study = study_uid("13")
    files = new_instances(tmp_path, study, 2)
    body = multipart_body([("application/dicom", f.read_bytes()) for f in files])
    status, rsp, _ = stow(dw.rest.url, "studies", body[:len(body) - 4000])
    assert status == 400 and "part 2 is truncated" in rsp["Details"]
    assert dw.sql("SELECT count(*) FROM studies WHERE study_instance_uid = %s", (study,))[0][0] == 0


def test_stow_orthanc_plugin_answers_200_to_a_missing_boundary(dw):
    """The plugin answers 200 to a body whose boundary never appears (notes); Tessera
    400 (above)."""
    status, _, _ = stow(dw.o.url, "studies",
                        b"--some-other-boundary\r\n\r\nx\r\n--some-other-boundary--\r\n")
    assert status == 200


# ---- npm's dicomweb-client ---------------------------------------------------------

CLIENT = Path(__file__).resolve().parent / "dicomweb_client"


@pytest.fixture(scope="session")
def dwclient():
    """npm ci of the pinned dicomweb-client and xhr2 (package-lock.json), once per run."""
    npm_ci(CLIENT)

    def run(url, op, **args):
        p = subprocess.run(["node", str(CLIENT / "client.js"), url + "/dicom-web", op,
                            json.dumps(args)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert "error" not in out, out
        return out["result"]
    return run


def test_dicomweb_client_store_search_retrieve(dw, dwclient, tmp_path):
    import hashlib
    study = study_uid("20")
    files = new_instances(tmp_path, study, 3)
    rsp = dwclient(dw.rest.url, "store", files=[str(f) for f in files], studyInstanceUID=study)
    assert referenced(rsp) == sorted(f"{study}.1.{i}" for i in (1, 2, 3))
    studies = dwclient(dw.rest.url, "searchForStudies", queryParams={"PatientID": "STOW"})
    assert study in uids(studies)
    series = dwclient(dw.rest.url, "searchForSeries", studyInstanceUID=study)
    assert uids(series, "0020000E") == [f"{study}.1"]
    inst = dwclient(dw.rest.url, "searchForInstances", studyInstanceUID=study,
                    seriesInstanceUID=f"{study}.1")
    assert uids(inst, "00080018") == referenced(rsp)
    meta = dwclient(dw.rest.url, "retrieveSeriesMetadata", studyInstanceUID=study,
                    seriesInstanceUID=f"{study}.1")
    assert sorted(value(m, "00080018") for m in meta) == referenced(rsp)
    # the same files to Orthanc's plugin through the same client: the same metadata
    dwclient(dw.o.url, "store", files=[str(f) for f in files])
    theirs = dwclient(dw.o.url, "retrieveSeriesMetadata", studyInstanceUID=study,
                      seriesInstanceUID=f"{study}.1")
    by_uid = {value(m, "00080018"): strip_bulk_uris(m) for m in theirs}
    assert all(strip_bulk_uris(m) == by_uid[value(m, "00080018")] for m in meta)
    digest = dwclient(dw.rest.url, "retrieveInstance", studyInstanceUID=study,
                      seriesInstanceUID=f"{study}.1", sopInstanceUID=f"{study}.1.2")
    assert digest == hashlib.sha256(files[1].read_bytes()).hexdigest()
    digests = dwclient(dw.rest.url, "retrieveSeries", studyInstanceUID=study,
                       seriesInstanceUID=f"{study}.1")
    assert digests == sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    frames = dwclient(dw.rest.url, "retrieveInstanceFrames", studyInstanceUID=study,
                      seriesInstanceUID=f"{study}.1", sopInstanceUID=f"{study}.1.1",
                      frameNumbers=[1])
    pixels = pydicom.dcmread(files[0]).PixelData
    assert frames == [hashlib.sha256(pixels).hexdigest()]
    bulk = dwclient(dw.rest.url, "retrieveBulkData",
                    BulkDataURI=[m for m in meta if value(m, "00080018") == f"{study}.1.1"][0]
                    ["7FE00010"]["BulkDataURI"])
    assert bulk == [hashlib.sha256(pixels).hexdigest()]


def test_dicomweb_client_transfer_syntax(dw, dwclient, tmp_path):
    """dicomweb-client's mediaTypes with a transferSyntaxUID (issue 21): frames asked
    for as JPEG 2000 come as J2K code streams; a syntax that cannot be made is refused
    (406). (The pinned dicomweb-client cannot ask for an instance in a transfer
    syntax: its _getCommonMediaType reduces "application/dicom" to "application/"
    and throws; tests/integration/test_transcode.py asks with curl.)"""
    uids = dict(studyInstanceUID=study_uid("1"), seriesInstanceUID=series_uid("1.1"),
                sopInstanceUID=sop_uid("1.1", 1))
    out = tmp_path / "frame.j2k"
    dwclient(dw.rest.url, "retrieveInstanceFrames", out=str(out), frameNumbers=[1],
             mediaTypes=[{"mediaType": "image/jp2",
                          "transferSyntaxUID": "1.2.840.10008.1.2.4.90"}], **uids)
    assert out.read_bytes().startswith(b"\xff\x4f\xff\x51")  # J2K SOC, SIZ
    dwclient(dw.rest.url, "retrieveInstanceFrames", out=str(out), frameNumbers=[1],
             mediaTypes=[{"mediaType": "image/jls",
                          "transferSyntaxUID": "1.2.840.10008.1.2.4.80"}], **uids)
    assert out.read_bytes().startswith(b"\xff\xd8\xff\xf7")  # SOI, JPEG-LS SOF55
    # JPEG baseline of this 16-bit CT cannot be made (Orthanc's rule): 406
    p = subprocess.run(["node", str(CLIENT / "client.js"), dw.rest.url + "/dicom-web",
                        "retrieveInstanceFrames", json.dumps(dict(frameNumbers=[1], mediaTypes=[
                            {"mediaType": "image/jpeg",
                             "transferSyntaxUID": "1.2.840.10008.1.2.4.50"}], **uids))],
                       capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout.strip().splitlines()[-1]).get("status") == 406, p.stdout


# ---- raw HTTP with curl --------------------------------------------------------


def curl(url, *args):
    """curl -si; returns (status, headers with lower-case names, body bytes)."""
    p = subprocess.run(["curl", "-si", "--max-time", "30", *args, url], capture_output=True,
                       check=True)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, v = line.partition(":")
        headers[name.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body

# ---- URLs behind a proxy -----------------------------------------------------------


def retrieve_urls(url, headers):
    """RetrieveURL of study 1 in a QIDO answer, and the first BulkDataURI of its
    metadata, with these request headers."""
    args = [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
    _, _, body = curl(url + f"/dicom-web/studies?StudyInstanceUID={study_uid('1')}", *args)
    qido_url = value(json.loads(body)[0], "00081190")
    _, _, body = curl(url + f"/dicom-web/studies/{study_uid('1')}/series/{series_uid('1.1')}"
                      f"/instances/{sop_uid('1.1', 1)}/metadata", *args)
    bulk = next(v["BulkDataURI"] for v in json.loads(body)[0].values() if "BulkDataURI" in v)
    return qido_url, bulk


@pytest.mark.parametrize("headers,root", [
    ({}, None),  # curl's Host: 127.0.0.1:<port>
    ({"Host": "pacs.example:8042"}, "http://pacs.example:8042"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"},
     "https://pacs.example.org"),
    ({"X-Forwarded-Proto": "HTTPS, http", "X-Forwarded-Host": "a.example:8443, proxy.local"},
     "https://a.example:8443"),
    # values that cannot be a scheme or an authority are ignored
    ({"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "evil.example/x?"}, None),
    ({"Host": "pacs.example", "X-Forwarded-Host": "a b"}, "http://pacs.example"),
])
def test_urls_follow_host_and_forwarded_headers(dw, headers, root):
    root = root or dw.rest.url
    qido_url, bulk = retrieve_urls(dw.rest.url, headers)
    assert qido_url == f"{root}/dicom-web/studies/{study_uid('1')}"
    assert bulk.startswith(f"{root}/dicom-web/studies/{study_uid('1')}/series/"), bulk


def test_stow_retrieve_url_behind_forwarded_headers(dw, tmp_path):
    study = study_uid("30")
    body = multipart_body([("application/dicom", p.read_bytes())
                           for p in new_instances(tmp_path, study, 1)])
    status, data, _ = http(dw.rest.url, "POST", "/dicom-web/studies", body,
                           {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json",
                            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"})
    rsp = json.loads(data)
    assert status == 200, rsp
    assert value(rsp, "00081190") == f"https://pacs.example.org/dicom-web/studies/{study}"
    item = rsp["00081199"]["Value"][0]
    assert value(item, "00081190").startswith(f"https://pacs.example.org/dicom-web/studies/{study}/")


def test_urls_behind_haproxy(dw, tmp_path):
    """HAProxy 2.6 in front of rest as compose/haproxy.cfg sets it up (HTTP mode,
    X-Forwarded-Proto and -Host set by the proxy, overriding the client's): the URLs
    name the proxy's address, not rest's."""
    from conftest import free_port
    port = free_port()
    cfg = Path(__file__).resolve().parents[2] / "compose/haproxy.cfg"
    forwarded = [ln.strip() for ln in cfg.read_text().splitlines()
                 if ln.strip().startswith("http-request set-header X-Forwarded-")]
    assert len(forwarded) == 2, "compose/haproxy.cfg sets X-Forwarded-Proto and -Host"
    u = urllib.parse.urlsplit(dw.rest.url)
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(f"""global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend http
    bind 127.0.0.1:{port}
    option forwardfor
    {forwarded[0]}
    {forwarded[1]}
    default_backend rest
backend rest
    server rest-1 {u.hostname}:{u.port}
""")
    p = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        proxy = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                curl(proxy + "/system")
                break
            except subprocess.CalledProcessError:
                import time
                time.sleep(0.05)
        # a client's own X-Forwarded-Proto does not reach rest
        qido_url, bulk = retrieve_urls(proxy, {"Host": "pacs.example:8042",
                                               "X-Forwarded-Proto": "https"})
        assert qido_url == f"http://pacs.example:8042/dicom-web/studies/{study_uid('1')}"
        assert bulk.startswith("http://pacs.example:8042/dicom-web/studies/")
        _, _, body = curl(proxy + f"/dicom-web/studies?StudyInstanceUID={study_uid('1')}")
        assert value(json.loads(body)[0], "00081190").startswith(proxy + "/dicom-web/")
    finally:
        p.terminate()
        p.wait(timeout=10)


# ---- WADO-URI --------------------------------------------------------------------


def wado_uri(study=None, series=None, sop=None, **more):
    params = {"requestType": "WADO"}
    params.update({k: v for k, v in (("studyUID", study), ("seriesUID", series),
                                     ("objectUID", sop)) if v})
    params.update(more)
    # '/' left as is: Orthanc's plugin does not percent-decode values (application%2Fdicom
    # is "unsupported" there); Tessera decodes them (test_wado_uri_percent_encoded)
    return "/wado?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None},
                                             safe="/")


def test_wado_uri_file_as_orthanc(dw):
    """The file as stored, from Tessera and from Orthanc's plugin, both at /wado (the
    plugin serves nothing at /dicom-web/wado; neither does Tessera)."""
    f = next(f for f in dw.files if f.name == "2.1-2.dcm")
    uids = (study_uid("2"), series_uid("2.1"), sop_uid("2.1", 2))
    for url in (dw.rest.url, dw.o.url):
        status, headers, body = curl(url + wado_uri(*uids, contentType="application/dicom"))
        assert status == 200 and headers["content-type"] == "application/dicom", (url, headers, body[:300])
        assert body == f.read_bytes(), url
        # objectUID alone, as the plugin allows; the stored transfer syntax asked by name
        status, _, body = curl(url + wado_uri(sop=uids[2], contentType="application/dicom",
                                              transferSyntax="1.2.840.10008.1.2.1"))
        assert status == 200 and body == f.read_bytes(), url
        status, _, _ = curl(url + "/dicom-web" + wado_uri(*uids, contentType="application/dicom"))
        assert status == 404, url


def test_wado_uri_percent_encoded(dw):
    uids = (study_uid("2"), series_uid("2.1"), sop_uid("2.1", 2))
    path = wado_uri(*uids, contentType="application/dicom").replace("/dicom", "%2Fdicom")
    assert "%2F" in path
    assert curl(dw.rest.url + path)[0] == 200
    status, _, body = curl(dw.o.url + path)
    assert status == 400 and b"Unsupported content type" in body


@pytest.mark.parametrize("case,params,mine,plugin", [
    ("unknown object", dict(sop=f"{ROOT_UID}.9"), 404, 404),
    ("object of another study", dict(study=study_uid("1")), 404, 404),
    ("object of another series", dict(series=series_uid("1.1")), 404, 404),
    ("no requestType", dict(requestType=None), 400, 404),
    ("no objectUID", dict(sop=""), 400, 404),
    ("bad objectUID", dict(sop="1.2.x"), 400, 404),
    ("anonymize", dict(anonymize="yes"), 400, None),
    # departures of the plugin: it ignores transferSyntax (image/jpeg and no contentType:
    # rendered, tests/integration/test_image.py)
    ("another transfer syntax", dict(transferSyntax="1.2.840.10008.1.2.4.50"), 406, 200),
])
def test_wado_uri_refusals(dw, case, params, mine, plugin):
    uids = dict(study=study_uid("2"), series=series_uid("2.1"), sop=sop_uid("2.1", 2))
    more = {"contentType": "application/dicom"}
    for k, v in params.items():
        if k in uids:
            uids[k] = v
        else:
            more[k] = v
    if "requestType" in params:
        path = "/wado?" + urllib.parse.urlencode(
            {"studyUID": uids["study"], "seriesUID": uids["series"], "objectUID": uids["sop"],
             "contentType": "application/dicom"}, safe="/")
    else:
        path = wado_uri(uids["study"], uids["series"], uids["sop"], **more)
    status, headers, body = curl(dw.rest.url + path)
    assert status == mine, (case, body)
    assert json.loads(body)["Details"]
    if plugin is not None:
        status, headers, _ = curl(dw.o.url + path)
        assert status == plugin, case


# ---- CORS --------------------------------------------------------------------------

VIEWER = "http://viewer.example:3000"


@pytest.fixture(scope="module")
def cors_rest(dw):
    """A rest whose CORS settings allow two origins."""
    return dw.start_rest(dw.ingests[0], TESSERA_QUERY_BUS=dw.q.bus,
                         TESSERA_HTTP_CORS_ORIGINS=f" {VIEWER}, https://ohif.example ")


def preflight(url, path, origin, method="GET", headers="accept"):
    return curl(url + path, "-X", "OPTIONS", "-H", f"Origin: {origin}",
                "-H", f"Access-Control-Request-Method: {method}",
                "-H", f"Access-Control-Request-Headers: {headers}")


def test_cors_preflight_and_requests_of_an_allowed_origin(dw, cors_rest):
    st = study_uid("1")
    for path, method, req_headers in [
            ("/dicom-web/studies", "GET", "accept"),
            (f"/dicom-web/studies/{st}/series/{series_uid('1.1')}/metadata", "GET", "accept"),
            ("/dicom-web/studies", "POST", "content-type,accept"),
            ("/wado", "GET", "accept")]:
        status, h, body = preflight(cors_rest.url, path, VIEWER, method, req_headers)
        assert status == 204 and body == b"", (path, status, body)
        assert h["access-control-allow-origin"] == VIEWER and h["vary"] == "Origin", h
        assert method in h["access-control-allow-methods"]
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        assert set(req_headers.split(",")) <= allowed, h
        assert h["access-control-max-age"] == "600"
    # the requests themselves: QIDO, metadata, retrieve, WADO-URI, STOW, an error
    for path in ("/dicom-web/studies", f"/dicom-web/studies/{st}/metadata",
                 f"/dicom-web/studies/{st}", f"/dicom-web/studies/{ROOT_UID}.9",
                 wado_uri(st, series_uid("1.1"), sop_uid("1.1", 1),
                          contentType="application/dicom")):
        status, h, _ = curl(cors_rest.url + path, "-H", "Origin: https://ohif.example")
        assert status in (200, 404), path
        assert h["access-control-allow-origin"] == "https://ohif.example", (path, h)
        assert "Warning" in h["access-control-expose-headers"]
        assert h["access-control-allow-credentials"] == "true"
    status, h, _ = curl(cors_rest.url + "/dicom-web/studies", "-X", "POST", "-H",
                        f"Origin: {VIEWER}", "-H", f"Content-Type: {STOW_TYPE}",
                        "--data-binary", multipart_body([]).decode())
    assert status == 400 and h["access-control-allow-origin"] == VIEWER, h


def test_cors_other_origins_and_default(dw, cors_rest):
    """An origin not listed, and a rest without the setting (the default): no CORS
    header at all, so a browser keeps the answer from the page."""
    for url, origin in ((cors_rest.url, "http://evil.example"),
                        (cors_rest.url, VIEWER + ".evil.example"),
                        (dw.rest.url, VIEWER)):
        status, h, _ = preflight(url, "/dicom-web/studies", origin)
        assert status == 204 and h["allow"] == "GET, POST, OPTIONS", h
        assert not any(k.startswith("access-control-") for k in h), (url, origin, h)
        status, h, _ = curl(url + "/dicom-web/studies", "-H", f"Origin: {origin}")
        assert status == 200 and not any(k.startswith("access-control-") for k in h), h
    # Orthanc 1.10.1's plugin has no CORS: its OPTIONS is 404
    assert preflight(dw.o.url, "/dicom-web/studies", VIEWER)[0] == 404


def test_cors_any_origin_and_authentication(dw):
    """'*' allows every origin; with HTTP authentication on, a preflight (which a
    browser sends without credentials) is answered, the request itself still needs
    them."""
    users = dw.base / "cors-users"
    users.write_text("alice:s3cret\n")
    rest = dw.start_rest(dw.ingests[0], TESSERA_QUERY_BUS=dw.q.bus, TESSERA_HTTP_BIND="0.0.0.0",
                         TESSERA_HTTP_USERS_FILE=users, TESSERA_HTTP_CORS_ORIGINS="*")
    status, h, _ = preflight(rest.url, "/dicom-web/studies", VIEWER, headers="authorization")
    assert status == 204 and h["access-control-allow-origin"] == "*", h
    assert "access-control-allow-credentials" not in h  # not allowed with *
    assert "authorization" in h["access-control-allow-headers"].lower()
    assert curl(rest.url + "/dicom-web/studies", "-H", f"Origin: {VIEWER}")[0] == 401
    status, h, _ = curl(rest.url + "/dicom-web/studies", "-u", "alice:s3cret", "-H",
                        f"Origin: {VIEWER}")
    assert status == 200 and h["access-control-allow-origin"] == "*"
    # a preflight of another route is no way around authentication
    assert curl(rest.url + "/studies", "-X", "OPTIONS")[0] in (404, 405)


def test_cors_on_answers_given_before_a_route(dw, tmp_path):
    """The answers that no DICOMweb handler gives carry the CORS headers too, so that
    a viewer of another origin sees why it failed rather than an opaque network
    error: 401 (no credentials), 413 (a STOW-RS body over the limit, answered before
    it is read), 404 and 405 under /dicom-web/ and /wado. Other routes get none."""
    users = tmp_path / "users"
    users.write_text("alice:s3cret\n")
    rest = dw.start_rest(dw.ingests[0], TESSERA_QUERY_BUS=dw.q.bus, TESSERA_HTTP_BIND="0.0.0.0",
                         TESSERA_HTTP_USERS_FILE=users, TESSERA_MAX_INSTANCE_SIZE=4096,
                         TESSERA_HTTP_CORS_ORIGINS=VIEWER)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20000)
    auth = ("-u", "alice:s3cret")
    for path, args, want in [
            ("/dicom-web/studies", (), 401),
            ("/wado", (), 401),
            ("/dicom-web/studies", ("-X", "POST", "-H", f"Content-Type: {STOW_TYPE}",
                                    "--data-binary", f"@{big}"), 401),
            ("/dicom-web/studies", auth + ("-X", "POST", "-H", f"Content-Type: {STOW_TYPE}",
                                           "--data-binary", f"@{big}"), 413),
            ("/dicom-web/no-such-resource", auth, 404),
            ("/dicom-web/studies", auth + ("-X", "DELETE"), 405)]:
        status, h, _ = curl(rest.url + path, "-H", f"Origin: {VIEWER}", *args)
        assert status == want, (path, args, status, h)
        assert h.get("access-control-allow-origin") == VIEWER, (path, status, h)
        assert h.get("vary") == "Origin" and "ETag" in h["access-control-expose-headers"], h
        if status == 401:
            assert h["www-authenticate"].startswith("Basic"), h
    # not DICOMweb: no CORS header, whatever the answer
    for path, args in [("/studies", ()), ("/instances", ("-X", "POST", "--data-binary",
                                                         f"@{big}"))]:
        status, h, _ = curl(rest.url + path, "-H", f"Origin: {VIEWER}", *args)
        assert status == 401 and not any(k.startswith("access-control-") for k in h), h
    # an origin not allowed gets none on those answers either
    status, h, _ = curl(rest.url + "/dicom-web/studies", "-H", "Origin: http://evil.example")
    assert status == 401 and not any(k.startswith("access-control-") for k in h), h


BROWSER = Path(__file__).resolve().parent / "browser"


@pytest.fixture(scope="session")
def browser():
    """npm ci of the pinned puppeteer-core (no browser download: Debian's chromium,
    PKGS_TEST); run(url) opens the page and returns what it saw."""
    assert Path("/usr/bin/chromium").exists(), "chromium is needed (PKGS_TEST)"
    npm_ci(BROWSER)

    def run(url):
        p = subprocess.run(["node", str(BROWSER / "viewer.js"), url], capture_output=True,
                           text=True, timeout=120)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert p.returncode == 0 and "fatal" not in out, (out, p.stderr[-2000:])
        return out
    return run


def test_cors_viewer_of_another_origin_in_a_browser(dw, dwclient, browser, tmp_path):
    """A page of another origin using dicomweb-client (OHIF's library) in chromium:
    refused by the browser when rest does not list the origin (nothing stored: the
    STOW's preflight fails), working when it does: QIDO, metadata, retrieve (whose
    Accept needs a preflight), STOW and WADO-URI."""
    import shutil
    import sys
    import time
    from conftest import free_port
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(BROWSER / "page.html", site)
    shutil.copy(CLIENT / "node_modules/dicomweb-client/build/dicomweb-client.js", site)
    stow_study = study_uid("40")
    stow_file = new_instances(tmp_path, stow_study, 1)[0]
    shutil.copy(stow_file, site / "stow.dcm")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(site)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if curl(origin + "/page.html")[0] == 200:
                    break
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        st, se, sop = study_uid("1"), series_uid("1.1"), sop_uid("1.1", 1)
        query = f"study={st}&series={se}&sop={sop}"

        def stored():
            return dw.sql("SELECT count(*) FROM studies WHERE study_instance_uid = %s",
                          (stow_study,))[0][0]

        got = browser(f"{origin}/page.html?root={dw.rest.url}&{query}")
        steps = ("studies", "metadata", "retrieve", "store", "wado_uri")
        assert all("error" in got[k] for k in steps), got
        assert stored() == 0
        rest = dw.start_rest(dw.ingests[0], TESSERA_QUERY_BUS=dw.q.bus,
                             TESSERA_HTTP_CORS_ORIGINS=origin)
        got = browser(f"{origin}/page.html?root={rest.url}&{query}")
        assert got["studies"] >= 3, got
        assert got["metadata"] == 2, got
        assert sorted(got["retrieve"]) == sorted(len(b) for b in files_of(dw, "1.1-")), got
        assert got["store"] == stow_file.stat().st_size, got
        assert stored() == 1
        assert got["wado_uri"] == len(files_of(dw, "1.1-1")[0]), got
    finally:
        server.terminate()
        server.wait(timeout=10)
