"""Matching without case (issue 16), compared with a real Orthanc 1.10.1 that holds
the same files: C-FIND on tessera-query's DICOM port and on Orthanc's, /tools/find
and /tools/lookup on both REST APIs. One matcher serves them all (services/query).

- C-FIND matches person names without case (PS3.4 C.2.2.2.1 allows it for PN
  only; Orthanc's CaseSensitivePN and Tessera's TESSERA_QUERY_CASE_SENSITIVE_PN
  are false by default) and every other VR exactly.
- /tools/find matches every text tag without case unless the body says
  "CaseSensitive": true, which makes every tag exact, person names included
  (Orthanc's rule; CaseSensitive is false when absent).
- /tools/lookup finds a PatientID without case.
- Case is folded with Unicode's rules, not only ASCII's: 'É' and 'é', 'Ё' and 'ё'
  are the same letter; accents are kept: 'E' is not 'É'. Orthanc 1.10.1 does the
  same (ToUpperCaseWithAccents).
"""
import io
import json
import subprocess
import time

import pydicom
import pytest

from conftest import PYDICOM_FILES
from orthanc import beside_orthanc, http

ROOT_UID = "1.2.826.0.1.3680043.8.498.516"
# PatientID, PatientName, StudyDescription
PATIENTS = [
    ("OZP00SjY2xG", "DOE^JOHN", "CT HEAD"),
    ("P2", "TEST-ÉLODIE^A", "ct head"),
    ("P3", "test-élodie^b", "Ct Héad"),
    ("P4", "TEST-ELODIE^C", "Brain"),
    ("P5", "Иванов^Пётр", "МРТ головы"),
    ("P6", "ИВАНОВ^ПЁТР", "мрт ГОЛОВЫ"),
    ("Éva-7", "NAGY^ÉVA", "CT HEAD"),
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
    with beside_orthanc(postgres, base) as p:
        for n, (pid, name, description) in enumerate(PATIENTS, 1):
            data = instance(n, pid, name, description)
            assert http(p.orthanc.url, "POST", "/instances", data)[0] == 200
            assert http(p.rest.url, "POST", "/instances", data)[0] == 200
        p.base = base
        yield p


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
    ("StudyDescription", "CT*", ["OZP00SjY2xG", "Éva-7"]),
    ("StudyDescription", "мрт*", ["P6"]),
    ("PatientID", "ozp00sjy2xg", []),
    ("PatientID", "OZP00SjY2xG", ["OZP00SjY2xG"]),
])
def test_cfind_other_vrs_are_exact(pair, key, value, expected):
    assert cfind_both(pair, key, value) == expected


# ----------------------------------------------------------------------------------
# /tools/find and /tools/lookup


def rest_ids(url, method, path, body):
    status, data, _ = http(url, method, path, body)
    assert status == 200, (path, body, status, data[:300])
    answer = json.loads(data)
    return sorted(a if isinstance(a, str) else a["ID"] for a in answer)


def patient_ids(pair, ids, level):
    """The PatientIDs of resources (for readable assertions)."""
    out = []
    for rid in ids:
        status, data, _ = http(pair.rest.url, "GET", f"/{level}/{rid}/patient" if level != "patients"
                               else f"/patients/{rid}")
        out.append(json.loads(data)["MainDicomTags"]["PatientID"])
    return sorted(out)


FIND = [
    ("Patient", {"PatientName": "doe^*"}, ["OZP00SjY2xG"], ["OZP00SjY2xG"], []),
    ("Patient", {"PatientName": "TeSt-É*"}, ["P2", "P3"], ["P2", "P3"], []),
    ("Patient", {"PatientName": "TEST-É*"}, ["P2", "P3"], ["P2", "P3"], ["P2"]),
    ("Patient", {"PatientName": "иванов^пётр"}, ["P5", "P6"], ["P5", "P6"], []),
    ("Patient", {"PatientID": "ozp00sjy2xg"}, ["OZP00SjY2xG"], ["OZP00SjY2xG"], []),
    ("Patient", {"PatientID": "éva-*"}, ["Éva-7"], ["Éva-7"], []),
    ("Study", {"StudyDescription": "ct head"}, ["Éva-7", "OZP00SjY2xG", "P2"],
     ["Éva-7", "OZP00SjY2xG", "P2"], ["P2"]),
    ("Study", {"StudyDescription": "CT H*"}, ["Éva-7", "OZP00SjY2xG", "P2", "P3"],
     ["Éva-7", "OZP00SjY2xG", "P2", "P3"], ["Éva-7", "OZP00SjY2xG"]),
    ("Study", {"StudyDescription": "ct héad"}, ["P3"], ["P3"], []),
    ("Study", {"StudyDescription": "МРТ ГОЛОВЫ\\brain"}, ["P4", "P5", "P6"],
     ["P4", "P5", "P6"], []),
    ("Study", {"ModalitiesInStudy": "ct"}, [p[0] for p in PATIENTS], [p[0] for p in PATIENTS],
     []),
    ("Study", {"StudyInstanceUID": ROOT_UID + ".1"}, ["OZP00SjY2xG"], ["OZP00SjY2xG"],
     ["OZP00SjY2xG"]),
]


@pytest.mark.parametrize("level,query,absent,insensitive,sensitive", FIND,
                         ids=[json.dumps(f[1], ensure_ascii=False) for f in FIND])
def test_tools_find_case_sensitive_like_orthanc(pair, level, query, absent, insensitive,
                                                sensitive):
    """CaseSensitive absent, false and true: the same resources as Orthanc's."""
    plural = {"Patient": "patients", "Study": "studies"}[level]
    for cs, expected in ((None, absent), (False, insensitive), (True, sensitive)):
        body = {"Level": level, "Query": query}
        if cs is not None:
            body["CaseSensitive"] = cs
        data = json.dumps(body).encode()
        ref = rest_ids(pair.orthanc.url, "POST", "/tools/find", data)
        got = rest_ids(pair.rest.url, "POST", "/tools/find", data)
        assert got == ref, (body, ref, got)
        assert patient_ids(pair, got, plural) == sorted(expected), body


@pytest.mark.parametrize("value,found", [
    ("OZP00SjY2xG", ["Patient"]),
    ("ozp00sjy2xg", ["Patient"]),
    (" OZP00SJY2XG \n", ["Patient"]),
    ("éva-7", ["Patient"]),
    (ROOT_UID + ".2", ["Study"]),
    (ROOT_UID + ".2.1.1\n", ["Instance"]),
    ("nobody", []),
])
def test_tools_lookup_without_case_like_orthanc(pair, value, found):
    ref = http(pair.orthanc.url, "POST", "/tools/lookup", value.encode())
    got = http(pair.rest.url, "POST", "/tools/lookup", value.encode())
    assert got[0] == ref[0] == 200
    assert json.loads(got[1]) == json.loads(ref[1]), (value, ref[1], got[1])
    assert [r["Type"] for r in json.loads(got[1])] == found


def test_tools_lookup_keeps_letters_orthanc_drops(pair):
    """Orthanc 1.10.1 drops every non-ASCII letter of an identifier before it looks
    it up, so that 'va-7' finds the patient 'Éva-7'; Tessera compares the whole
    identifier (without case) and finds nothing."""
    ref = http(pair.orthanc.url, "POST", "/tools/lookup", b"va-7")
    got = http(pair.rest.url, "POST", "/tools/lookup", b"va-7")
    assert [r["Type"] for r in json.loads(ref[1])] == ["Patient"]
    assert got[0] == 200 and json.loads(got[1]) == []
