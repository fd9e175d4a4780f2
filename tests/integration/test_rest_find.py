"""POST /tools/find through the query service, compared with a real Orthanc 1.10.1
holding the same generated data set (tests/tools/gendicom.py). Ids are compared as
sets (each server lists matches in its own order)."""
import json
import subprocess

import pytest

from conftest import ROOT
from orthanc import beside_orthanc, http


@pytest.fixture(scope="module")
def pair(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("find")
    base.chmod(0o755)
    data = base / "data"
    subprocess.run(["/usr/bin/python3", str(ROOT / "tests/tools/gendicom.py"), "--out", str(data),
                    "--patients", "6", "--studies-per-patient", "2", "--series-per-study", "2",
                    "--instances-per-series", "2", "--modalities", "CT,MR", "--seed", "5", "-q"],
                   check=True)
    with beside_orthanc(postgres, base) as p:
        for f in sorted(data.rglob("*.dcm")):
            body = f.read_bytes()
            assert http(p.orthanc.url, "POST", "/instances", body)[0] == 200
            assert http(p.rest.url, "POST", "/instances", body)[0] == 200
        manifest = json.loads((data / "manifest.json").read_text())
        yield p.orthanc, p.rest, manifest


def find(url, body):
    status, data, _ = http(url, "POST", "/tools/find", json.dumps(body).encode()
                           if not isinstance(body, bytes) else body)
    return status, json.loads(data) if data else None


QUERIES = [
    {"Level": "Patient", "Query": {}},
    {"Level": "Study", "Query": {}},
    {"Level": "Series", "Query": {"Modality": "CT"}},
    {"Level": "Instance", "Query": {}},
    {"Level": "Patient", "Query": {"PatientID": "TS000003"}},
    {"Level": "Patient", "Query": {"PatientID": "TS00000*"}},
    {"Level": "Patient", "Query": {"PatientID": "TS00000?"}},
    {"Level": "Study", "Query": {"PatientID": "TS000001\\TS000002"}},
    {"Level": "Study", "Query": {"StudyDate": "20200101-"}},
    {"Level": "Study", "Query": {"StudyDate": "-20200301"}},
    {"Level": "Study", "Query": {"StudyDate": "20200101-20200201"}},
    {"Level": "Study", "Query": {"AccessionNumber": "A*"}},
    {"Level": "Series", "Query": {"Modality": "MR", "PatientID": "TS000004"}},
    {"Level": "study", "Query": {"PatientID": "*"}, "Limit": 3},
    {"Level": "Study", "Query": {"PatientID": "nobody"}},
]


@pytest.mark.parametrize("body", QUERIES, ids=[json.dumps(q) for q in QUERIES])
def test_find_ids_like_orthanc(pair, body):
    o, rest, _ = pair
    s1, a = find(o.url, body)
    s2, b = find(rest.url, body)
    assert s1 == s2 == 200, (s1, a, s2, b)
    if "Limit" in body:
        assert len(a) == len(b) == body["Limit"]
    else:
        assert sorted(a) == sorted(b), body


@pytest.mark.parametrize("lower", [False, True], ids=["as-stored", "lower-case"])
def test_find_person_names(pair, lower):
    """PatientName prefixes, CaseSensitive absent (false: Orthanc's default), true and
    false."""
    o, rest, manifest = pair
    for family in manifest["names"]["family"][:6]:
        pattern = family[:3] + "*"
        if lower:
            pattern = pattern.lower()
        for cs in (None, True, False):
            body = {"Level": "Patient", "Query": {"PatientName": pattern}}
            if cs is not None:
                body["CaseSensitive"] = cs
            s1, a = find(o.url, body)
            s2, b = find(rest.url, body)
            assert s1 == s2 == 200
            assert sorted(a) == sorted(b), (body, a, b)


def test_find_expand_like_orthanc(pair):
    o, rest, _ = pair
    body = {"Level": "Series", "Query": {"PatientID": "TS000002"}, "Expand": True}
    s1, a = find(o.url, body)
    s2, b = find(rest.url, body)
    assert s1 == s2 == 200
    volatile = {"LastUpdate", "IsStable"}
    # "Labels" ([] here) is Orthanc 1.12's field (test_labels.py); 1.10.1 has none
    strip = lambda lst: sorted(({k: v for k, v in r.items()
                                 if k not in volatile and not (k == "Labels" and v == [])}
                                for r in lst),
                               key=lambda r: r["ID"])
    assert strip(a) == strip(b)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"Level": "Study"}',
                                  b'{"Level": "Nowhere", "Query": {}}',
                                  b'{"Level": "Study", "Query": {"NoSuchTag": "x"}}'])
def test_find_bad_bodies(pair, body):
    o, rest, _ = pair
    s1, a = find(o.url, body)
    s2, b = find(rest.url, body)
    assert s1 == s2 and s1 >= 400, (body, s1, a, s2, b)
    assert b["HttpStatus"] == s2


def test_find_requested_tags(pair):
    """RequestedTags (Orthanc 1.11's field; 1.10.1 ignores it): with Expand, each
    resource carries the values the index holds for the requested tags."""
    _, rest, _ = pair
    body = {"Level": "Study", "Query": {"PatientID": "TS00000*"}, "Expand": True,
            "RequestedTags": ["PatientName", "StudyDate", "0008,0050"]}
    status, studies = find(rest.url, body)
    assert status == 200 and studies
    for s in studies:
        tags = s["RequestedTags"]
        assert tags["PatientName"] == s["PatientMainDicomTags"]["PatientName"], s
        assert tags["StudyDate"] == s["MainDicomTags"]["StudyDate"], s
        assert tags["AccessionNumber"] == s["MainDicomTags"]["AccessionNumber"], s
    status, err = find(rest.url, dict(body, RequestedTags=["NoSuchTag"]))
    assert status == 500 and err["OrthancError"] == "Unknown DICOM tag"
