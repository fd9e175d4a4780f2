"""Matching without case (issue 16), compared with a real Orthanc 1.10.1 that holds
the same files: C-FIND on tessera-query's DICOM port and on Orthanc's.

- C-FIND matches person names without case (PS3.4 C.2.2.2.1 allows it for PN
  only; Orthanc's CaseSensitivePN and Tessera's TESSERA_QUERY_CASE_SENSITIVE_PN
  are false by default) and every other VR exactly.
- Case is folded with Unicode's rules, not only ASCII's: 'É' and 'é', 'Ё' and 'ё'
  are the same letter; accents are kept: 'E' is not 'É'. Orthanc 1.10.1 does the
  same (ToUpperCaseWithAccents).
"""
import io
import os
import subprocess
import time
from types import SimpleNamespace

import pydicom
import pytest

from conftest import PYDICOM_FILES, Cluster
from orthanc import Orthanc, http

ROOT_UID = "1.2.826.0.1.3680043.8.498.516"
# PatientID, PatientName, StudyDescription
PATIENTS = [
    ("OZP00SjY2xG", "DOE^JOHN", "CT HEAD"),
    ("P2", "TEST-ÉLODIE^A", "ct head"),
    ("P3", "test-élodie^b", "Ct Héad"),
    ("P4", "TEST-ELODIE^C", "Brain"),
    ("P5", "Иванов^Пётр", "МРТ головы"),
    ("P6", "ИВАНОВ^ПЁТР", "мрт ГОЛОВЫ"),
]


def instance(n, pid, name, description):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = pid
    ds.PatientName = name
    ds.StudyDescription = description
    ds.StudyInstanceUID = f"{ROOT_UID}.{n}"
    ds.SeriesInstanceUID = f"{ROOT_UID}.{n}.1"
    ds.SOPInstanceUID = f"{ROOT_UID}.{n}.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pair(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("case")
    base.chmod(0o755)
    o = Orthanc(base / "orthanc").start()
    (base / "tessera").mkdir()
    cluster = Cluster(postgres, base / "tessera")
    try:
        q = cluster.start_query()
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
        for n, (pid, name, description) in enumerate(PATIENTS, 1):
            data = instance(n, pid, name, description)
            assert http(o.url, "POST", "/instances", data)[0] == 200
            assert http(rest.url, "POST", "/instances", data)[0] == 200
        yield SimpleNamespace(orthanc=o, rest=rest, query=q, base=base, cluster=cluster)
    finally:
        cluster.stop()
        o.stop()
    for s in cluster.ingests + cluster.rests + cluster.queries:
        log = s.read_log()
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


def cfind(base, aec, port, level, key, value):
    """findscu (Study Root) with one matching key in UTF-8; returns the sorted
    PatientIDs of the answers."""
    outdir = base / f"rsp-{time.monotonic_ns()}"
    outdir.mkdir()
    cmd = ["findscu", "-S", "-aet", "FINDSCU", "-aec", aec, "-X", "-od", str(outdir),
           "-k", f"QueryRetrieveLevel={level}", "-k", "SpecificCharacterSet=ISO_IR 192",
           "-k", f"{key}={value}", *([] if key == "PatientID" else ["-k", "PatientID"]),
           "127.0.0.1", str(port)]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")
    return sorted(str(pydicom.dcmread(f).PatientID) for f in outdir.glob("rsp*.dcm"))


def cfind_both(pair, key, value, level="STUDY", orthanc=None):
    """The answers of Tessera, which must be Orthanc's (or `orthanc`, where Orthanc
    departs from the standard)."""
    ref = cfind(pair.base, pair.orthanc.aet, pair.orthanc.dicom_port, level, key, value)
    got = cfind(pair.base, "TESSERA", pair.query.port, level, key, value)
    if orthanc is not None:
        assert ref == orthanc and got != ref, (key, value, "orthanc", ref, "tessera", got)
    else:
        assert got == ref, (key, value, "orthanc", ref, "tessera", got)
    return got


@pytest.mark.parametrize("pattern,expected", [
    ("doe^*", ["OZP00SjY2xG"]),
    ("Doe^John", ["OZP00SjY2xG"]),
    ("TeSt-É*", ["P2", "P3"]),        # both cases of É, not the E without accent
    ("test-élodie^B", ["P3"]),
    ("TEST-E*", ["P4"]),
    ("иванов^пётр", ["P5", "P6"]),
    ("ИВАНОВ^ПЁТР\\doe^john", ["OZP00SjY2xG", "P5", "P6"]),
])
def test_cfind_person_names_without_case(pair, pattern, expected):
    assert cfind_both(pair, "PatientName", pattern) == expected


def test_cfind_question_mark_is_one_character(pair):
    """'?' matches any single character (PS3.4 C.2.2.2.4), 'É' included. Orthanc
    1.10.1 matches one byte of the UTF-8 value instead, so that 'test-?lodie*'
    misses 'TEST-ÉLODIE' and 'test-élodie': there Tessera follows the standard."""
    assert cfind_both(pair, "PatientName", "test-?lodie*",
                      orthanc=["P4"]) == ["P2", "P3", "P4"]


@pytest.mark.parametrize("key,value,expected", [
    ("StudyDescription", "ct head", ["P2"]),
    ("StudyDescription", "CT*", ["OZP00SjY2xG"]),
    ("StudyDescription", "мрт*", ["P6"]),
    ("PatientID", "ozp00sjy2xg", []),
    ("PatientID", "OZP00SjY2xG", ["OZP00SjY2xG"]),
])
def test_cfind_other_vrs_are_exact(pair, key, value, expected):
    assert cfind_both(pair, key, value) == expected
