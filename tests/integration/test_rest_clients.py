"""Orthanc clients that broke on Tessera (issue 16): instance metadata written at
reception, series completeness, small routes and options, compared side by side
with Orthanc 1.10.1 (test_rest.py's `fresh` pair: an empty Orthanc and an empty
Tessera). Where Orthanc departs from the DICOM standard, the test says so and
asserts the standard."""
import json
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from conftest import PYDICOM_FILES, storescu
from orthanc import orthanc  # noqa: F401  (a fixture of fresh)
from test_rest import diff, fresh  # noqa: F401  (fresh is a fixture)


def both(pair, method, path, body=None, headers=None):
    """(Orthanc's answer, Tessera's answer), each (status, body, headers)."""
    return (pair.ref.req(method, path, body, headers), pair.t.req(method, path, body, headers))


def upload_both(pair, data):
    a, b = pair.ref.upload(data), pair.t.upload(data)
    assert a["ID"] == b["ID"], (a, b)
    return a


# ----------------------------------------------------------------------------------
# Item 1: metadata written at reception


def bare_dataset(src, uid_suffix, implicit):
    """src's data set without a file meta header (no preamble, no "DICM"), encoded
    implicit or explicit VR little endian, with a SOP Instance UID of its own."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID += uid_suffix
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    pydicom.filewriter.write_dataset(fp, ds)
    return fp.getvalue()


def with_uid(src, uid_suffix):
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID += uid_suffix
    fp = DicomBytesIO()
    ds.save_as(fp, write_like_original=True)
    return fp.getvalue()


def pixel_tag_offset(data):
    """Where the last (7FE0,0010) tag starts in data, either byte order; -1 if none."""
    return max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))


METADATA_FILES = {
    # name: (bytes, expected TransferSyntax, expected PixelDataOffset or None)
    "CT_small": lambda: (PYDICOM_FILES / "CT_small.dcm").read_bytes(),
    "JPEG2000": lambda: (PYDICOM_FILES / "JPEG2000.dcm").read_bytes(),
    "rtplan (no pixel data)": lambda: (PYDICOM_FILES / "rtplan.dcm").read_bytes(),
    "big endian": lambda: with_uid(PYDICOM_FILES / "MR_small_bigendian.dcm", ".78"),
    "deflated": lambda: (PYDICOM_FILES / "image_dfl.dcm").read_bytes(),
    "bare implicit": lambda: bare_dataset(PYDICOM_FILES / "MR_small_implicit.dcm", ".77", True),
    "bare explicit": lambda: bare_dataset(PYDICOM_FILES / "CT_small.dcm", ".79", False),
    "bare explicit, no pixel data": lambda: (PYDICOM_FILES / "ExplVR_LitEndNoMeta.dcm").read_bytes(),
}


def test_upload_metadata_as_orthanc(fresh):
    """Every REST upload gets Orthanc's metadata: TransferSyntax also for a file
    without a meta header (the encoding it was read in: 1.2.840.10008.1.2 for
    implicit VR little endian), PixelDataOffset (where the top-level Pixel Data
    element's tag starts: Orthanc's value, not where its value starts; none for a
    file without pixel data, without a meta header, or deflated, as in Orthanc),
    RemoteIP, and RemoteAET and HttpUsername empty. Orthanc writes no CalledAET for
    REST uploads, and neither does Tessera."""
    seen = {}
    for name, make in METADATA_FILES.items():
        data = make()
        up = upload_both(fresh, data)
        path = f"/instances/{up['ID']}/metadata?expand"
        ref, got = fresh.ref.get(path), fresh.t.get(path)
        for m in (ref, got):
            m.pop("ReceptionDate")
        assert got == ref, (name, diff(ref, got))
        seen[name] = got
    assert seen["bare implicit"]["TransferSyntax"] == "1.2.840.10008.1.2"
    assert seen["CT_small"]["PixelDataOffset"] == str(
        pixel_tag_offset((PYDICOM_FILES / "CT_small.dcm").read_bytes()))
    assert seen["big endian"]["PixelDataOffset"] == str(
        pixel_tag_offset(METADATA_FILES["big endian"]()))
    assert "PixelDataOffset" not in seen["rtplan (no pixel data)"]
    assert seen["CT_small"]["RemoteIP"] == "127.0.0.1"
    assert seen["CT_small"]["RemoteAET"] == "" and seen["CT_small"]["HttpUsername"] == ""
    assert "CalledAET" not in seen["CT_small"]


def test_c_store_metadata_has_pixel_data_offset(fresh, tmp_path):
    """A C-STOREd file is written by the receiver (its meta header differs between
    the two servers: test_rest.py's header), so its PixelDataOffset is compared with
    the stored file's own bytes; the other keys with Orthanc."""
    f = tmp_path / "ct.dcm"
    f.write_bytes(with_uid(PYDICOM_FILES / "CT_small.dcm", ".81"))
    rc, out = storescu(SimpleNamespace(aet=fresh.orthanc.aet, port=fresh.orthanc.dicom_port), [f])
    assert rc == 0, out
    rc, out = storescu(fresh.ing, [f])
    assert rc == 0, out
    iid = fresh.t.get("/instances")[0]
    ref = fresh.ref.get(f"/instances/{iid}/metadata?expand")
    got = fresh.t.get(f"/instances/{iid}/metadata?expand")
    stored = fresh.t.req("GET", f"/instances/{iid}/file")[1]
    assert got["PixelDataOffset"] == str(pixel_tag_offset(stored))
    assert set(got) == set(ref), diff(ref, got)
    for k in ("Origin", "RemoteIP", "TransferSyntax", "SopClassUid", "IndexInSeries"):
        assert got[k] == ref[k], k


# ----------------------------------------------------------------------------------
# Item 2: series completeness


def series_file(series, i, **tags):
    """CT_small as instance i of series 1.2.826.0.1.3680043.8.498.901.<series>, with
    tags set (None deletes one)."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.901"
    ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.{series}"
    ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{i}"
    for k, v in tags.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    fp = DicomBytesIO()
    ds.save_as(fp)
    return fp.getvalue()


# series number: the tags of its instances, in the order they are stored
SERIES_CASES = {
    1: [dict(InstanceNumber=1, ImagesInAcquisition=2), dict(InstanceNumber=2)],
    2: [dict(InstanceNumber=1, ImagesInAcquisition=2, NumberOfTemporalPositions=2),
        dict(InstanceNumber=2)],
    3: [dict(InstanceNumber=1, CardiacNumberOfImages=3), dict(InstanceNumber=3)],
    4: [dict(InstanceNumber=1, NumberOfSlices=2), dict(InstanceNumber=2)],
    5: [dict(InstanceNumber=1, CardiacNumberOfImages=3), dict(InstanceNumber=2),
        dict(InstanceNumber=3)],
    6: [dict(InstanceNumber=1, ImagesInAcquisition=1, NumberOfTemporalPositions=2),
        dict(InstanceNumber=5)],
    7: [dict(InstanceNumber=1, CardiacNumberOfImages=2), dict(InstanceNumber=1)],
    8: [dict(InstanceNumber=1, CardiacNumberOfImages=2), dict(InstanceNumber=None)],
    9: [dict(InstanceNumber=1, ImagesInAcquisition=0, NumberOfTemporalPositions=2)],
    10: [dict(InstanceNumber=1, CardiacNumberOfImages=1, ImagesInAcquisition=2,
              NumberOfTemporalPositions=1), dict(InstanceNumber=2)],
    # complete, and the completing instance carries the tags: CompletedSeries
    11: [dict(InstanceNumber=2, CardiacNumberOfImages=2),
         dict(InstanceNumber=1, CardiacNumberOfImages=2)],
    12: [dict(InstanceNumber=1, CardiacNumberOfImages=1)],
}


def all_changes(server):
    out, since = [], 0
    while True:
        page = server.get(f"/changes?since={since}&limit=100")
        out += page["Changes"]
        since = page["Last"]
        if page["Done"]:
            return out


def test_series_expected_instances_status_and_completed_series(fresh):
    """ExpectedNumberOfInstances and Status of series as Orthanc 1.10.1 computes
    them (from the first instance's ImagesInAcquisition x NumberOfTemporalPositions,
    else CardiacNumberOfImages; Complete/Missing/Inconsistent/Unknown from the
    instances' indexes), the series metadata that holds the number, and the
    CompletedSeries changes Orthanc logs (when the instance that completes a series
    carries the tags itself)."""
    seen = {}
    for n, instances in SERIES_CASES.items():
        for i, tags in enumerate(instances):
            up = upload_both(fresh, series_file(n, i, **tags))
        sid = up["ParentSeries"]
        ref, got = fresh.ref.get(f"/series/{sid}"), fresh.t.get(f"/series/{sid}")
        for k in ("ExpectedNumberOfInstances", "Status"):
            assert got[k] == ref[k], (n, k, ref[k], got[k])
        seen[n] = got["Status"]
        meta_ref = fresh.ref.get(f"/series/{sid}/metadata?expand")
        meta_got = fresh.t.get(f"/series/{sid}/metadata?expand")
        assert (meta_got.get("ExpectedNumberOfInstances")
                == meta_ref.get("ExpectedNumberOfInstances")), (n, meta_ref, meta_got)
    # the test covers every status
    assert set(seen.values()) == {"Unknown", "Missing", "Complete", "Inconsistent"}, seen

    def completed(server):
        return [(c["ID"], c["ResourceType"], c["Path"]) for c in all_changes(server)
                if c["ChangeType"] == "CompletedSeries"]
    assert len(completed(fresh.ref)) == 2
    assert completed(fresh.t) == completed(fresh.ref)
    # where it comes: right after the changes of the instance that completes it
    types = [c["ChangeType"] for c in all_changes(fresh.t)]
    ref_types = [c["ChangeType"] for c in all_changes(fresh.ref)
                 if c["ChangeType"] not in ("NewChildInstance",)]
    types = [t for t in types if t != "NewChildInstance"]
    assert types == ref_types, diff(ref_types, types)


# test-SR.dcm and reportsi.dcm: one PatientID, other names and sexes
STUDY_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "test-SR.dcm",
               "waveform_ecg.dcm", "reportsi.dcm", "ExplVR_LitEndNoMeta.dcm", "JPEG2000.dcm"]


def test_study_patient_main_tags_as_orthanc(fresh):
    """GET /studies/{id} answers as PatientMainDicomTags the patient's tags of the
    study's own first instance, as Orthanc (which copies them into the study), not
    those of the patient's first instance: two studies of one PatientID with other
    names or sexes each show their own (reportsi.dcm after test-SR.dcm)."""
    for name in STUDY_FILES:
        up = upload_both(fresh, (PYDICOM_FILES / name).read_bytes())
        for path in (f"/studies/{up['ParentStudy']}", f"/patients/{up['ParentPatient']}",
                     f"/series/{up['ParentSeries']}", f"/instances/{up['ID']}"):
            ref, got = fresh.ref.get(path), fresh.t.get(path)
            for k in ("MainDicomTags", "PatientMainDicomTags"):
                assert got.get(k) == ref.get(k), (name, path, diff(ref.get(k), got.get(k)))


# ----------------------------------------------------------------------------------
# Item 3: small routes


def test_patient_protected(fresh):
    """GET/PUT /patients/{id}/protected as Orthanc: "0"/"1", PUT takes 0/1/true/false
    (white space around ignored), 400 "Bad file format" for anything else, 400
    "Parameter out of range" for an unknown patient; other levels have no such
    route (404)."""
    up = upload_both(fresh, (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    path = f"/patients/{up['ParentPatient']}/protected"
    steps = [("GET", path, None), ("PUT", path, b"1"), ("GET", path, None),
             ("PUT", path, b" false\n"), ("GET", path, None), ("PUT", path, b"true"),
             ("GET", path, None), ("PUT", path, b"yes"), ("PUT", path, b""),
             ("GET", path, None), ("PUT", path, b"0"), ("GET", path, None),
             ("GET", "/patients/" + "00000000-" * 4 + "00000000/protected", None),
             ("PUT", "/patients/" + "00000000-" * 4 + "00000000/protected", b"1"),
             ("GET", f"/studies/{up['ParentStudy']}/protected", None)]
    got_values = []
    for method, p, body in steps:
        (s1, b1, _), (s2, b2, _) = both(fresh, method, p, body)
        assert s2 == s1, (method, p, body, s1, b1[:300], s2, b2[:300])
        if s1 == 200:
            assert b2 == b1, (method, p, body, b1, b2)
            if method == "GET":
                got_values.append(b2)
        elif b1:
            e1, e2 = json.loads(b1), json.loads(b2)
            assert (e2["OrthancStatus"], e2["Message"]) == (e1["OrthancStatus"], e1["Message"])
    assert got_values == [b"0", b"1", b"0", b"1", b"1", b"0"], got_values


def test_count_resources_and_statistics_keys_as_orthanc_1_10_1(fresh):
    """POST /tools/count-resources and the DicomDiskSize keys of /statistics came
    with later Orthanc releases: Orthanc 1.10.1 answers 404 "Unknown resource" to
    the first and has none of the second, so Tessera does the same
    (docs/conformance.md); /statistics has Orthanc 1.10.1's keys, with its types."""
    upload_both(fresh, (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    body = b'{"Level": "Study", "Query": {}}'
    (s1, b1, _), (s2, b2, _) = both(fresh, "POST", "/tools/count-resources", body)
    assert (s1, s2) == (404, 404), (b1, b2)
    e1, e2 = json.loads(b1), json.loads(b2)
    assert {k: v for k, v in e2.items() if k != "Details"} == e1
    ref, got = fresh.ref.get("/statistics"), fresh.t.get("/statistics")
    assert "DicomDiskSize" not in ref
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in ref.items()}
    assert {k: v for k, v in got.items() if k.startswith("Count")} == \
        {k: v for k, v in ref.items() if k.startswith("Count")}


# ----------------------------------------------------------------------------------
# Small routes that Orthanc clients call (issue 16), most used first


def same_answer(pair, method, path, body=None, headers=None, json_body=True):
    """Both servers answer path alike: status, and body (JSON compared as JSON; in
    an error body Tessera's Details may say more than Orthanc's: they start with
    Orthanc's, or are left out of the comparison when Orthanc has none)."""
    (s1, b1, h1), (s2, b2, h2) = both(pair, method, path, body, headers)
    assert s1 == s2, (path, s1, b1[:400], s2, b2[:400])
    if not json_body or not b1:
        assert b2 == b1, (path, b1[:300], b2[:300])
        return s2, b2, h2
    e1, e2 = json.loads(b1), json.loads(b2)
    if s1 >= 400 and isinstance(e1, dict) and "Details" not in e1:
        e2.pop("Details", None)
    elif s1 >= 400 and isinstance(e2, dict) and str(e2.get("Details")).startswith(e1["Details"]):
        e2["Details"] = e1["Details"]
    assert e2 == e1, (path, diff(e1, e2))
    return s2, e2, h2


def long_values_file():
    """CT_small with two text values longer than Orthanc's 256 bytes (TooLong in
    /tags), one of them in a sequence item."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.SOPInstanceUID += ".91"
    ds.ImageComments = "x" * 300
    ds.StudyComments = "y" * 400
    item = pydicom.Dataset()
    item.ImageComments = "z" * 280
    ds.ReferencedImageSequence = [item]
    fp = DicomBytesIO()
    ds.save_as(fp)
    return fp.getvalue()


def test_tags_ignore_length(fresh):
    """?ignore-length=<tags> (by comma) shows those tags' long values (also in
    sequence items) in /tags, ?short, ?simplify and /simplified-tags; an unknown
    tag name is Orthanc's error (a 500 "Unknown DICOM tag": "0032,4000" is two
    tags to Orthanc, "0032" and "4000")."""
    iid = upload_both(fresh, long_values_file())["ID"]
    for q in ("", "?ignore-length=ImageComments", "?ignore-length=0020-4000,StudyComments",
              "?ignore-length=0032,4000&short", "?ignore-length=ImageComments&simplify",
              "?ignore-length=NoSuchTag", "?ignore-length="):
        same_answer(fresh, "GET", f"/instances/{iid}/tags{q}")
    same_answer(fresh, "GET", f"/instances/{iid}/simplified-tags?ignore-length=ImageComments")
    got = fresh.t.get(f"/instances/{iid}/tags?ignore-length=ImageComments")
    assert got["0020,4000"]["Value"] == "x" * 300
    assert got["0008,1140"]["Value"][0]["0020,4000"]["Value"] == "z" * 280
    assert got["0032,4000"]["Type"] == "TooLong"


def test_instances_tags(fresh):
    """GET /{level}/{id}/instances-tags: each instance's /tags by its id, with
    ?simplify, ?short and ?ignore-length; an unknown resource is Orthanc's 404."""
    up = upload_both(fresh, (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    upload_both(fresh, long_values_file())
    for level, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                       ("series", "ParentSeries")):
        for q in ("", "?simplify", "?short", "?ignore-length=ImageComments",
                  "?ignore-length=Nope"):
            s, body, _ = same_answer(fresh, "GET", f"/{level}/{up[key]}/instances-tags{q}")
            assert s >= 400 or len(body) == 2
        # Orthanc 1.10.1 does not check the level: it answers an instance's id
        # under /patients/ with that instance. Tessera answers 404, as for any
        # id of another level (and as Orthanc does for /{level}/{id}).
        (s1, _, _), (s2, b2, _) = both(fresh, "GET", f"/{level}/{up['ID']}/instances-tags")
        assert (s1, s2) == (200, 404), b2
        assert json.loads(b2)["OrthancError"] == "Unknown resource"
        same_answer(fresh, "GET", f"/{level}/{up['ID'][:-1]}0/instances-tags")


def test_file_as_dicom_json(fresh):
    """GET /instances/{id}/file with Accept: application/dicom+json answers the
    DICOM JSON model of the file (Orthanc's content type); other Accept values
    get the file."""
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    iid = upload_both(fresh, data)["ID"]
    _, body, headers = same_answer(fresh, "GET", f"/instances/{iid}/file",
                                   headers={"Accept": "application/dicom+json"})
    assert headers["Content-Type"] == "application/dicom+json"
    assert body["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    for accept in ("application/json", "*/*", "application/dicom"):
        s, b, h = fresh.t.req("GET", f"/instances/{iid}/file", headers={"Accept": accept})
        assert (s, b, h["Content-Type"]) == (200, data, "application/dicom"), accept


def test_http_method_override(fresh):
    """X-HTTP-Method-Override (any method) and ?_method= (on GET) make a request a
    PUT or a DELETE, in any case, as in Orthanc 1.10.1; another method is a 400."""
    up = upload_both(fresh, (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    iid = up["ID"]
    same_answer(fresh, "POST", f"/instances/{iid}/metadata/1024", b"one",
                {"X-HTTP-Method-Override": "put"})
    same_answer(fresh, "GET", f"/instances/{iid}/metadata/1024", json_body=False)
    # faked to a DELETE: without If-Match both refuse it (CheckRevisions)
    same_answer(fresh, "GET", f"/instances/{iid}/metadata/1024?_method=DELETE")
    same_answer(fresh, "GET", f"/instances/{iid}?_method=GET", json_body=False)
    same_answer(fresh, "POST", f"/instances/{iid}", b"", {"X-HTTP-Method-Override": "GET"},
                json_body=False)
    same_answer(fresh, "GET", "/system?_method=PATCH", json_body=False)
    same_answer(fresh, "POST", f"/instances/{iid}", b"", {"X-HTTP-Method-Override": "DELETE"})
    assert fresh.t.get("/instances") == fresh.ref.get("/instances") == []
    iid = upload_both(fresh, (PYDICOM_FILES / "CT_small.dcm").read_bytes())["ID"]
    same_answer(fresh, "GET", f"/instances/{iid}?_method=delete")
    assert fresh.t.get("/instances") == fresh.ref.get("/instances") == []


def test_upload_gzip(fresh):
    """POST /instances reads a body with Content-Encoding: gzip inflated; a body
    that is not gzip, and other encodings, get Orthanc's answers. Orthanc 1.10.1
    inflates no other route's body (a gzipped JSON body to /tools/lookup is a
    bad identifier there), nor does Tessera."""
    import gzip
    import zlib
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    _, body, _ = same_answer(fresh, "POST", "/instances", gzip.compress(data),
                             {"Content-Encoding": "gzip"})
    assert body["Status"] == "Success"
    iid = body["ID"]
    assert fresh.t.req("GET", f"/instances/{iid}/file")[1] == data
    (s1, b1, _), (s2, b2, _) = both(fresh, "POST", "/tools/lookup",
                                    # mtime=0: the same bytes at every run (a gzip header's
                                    # time can hold a '*' or '?', which Orthanc's lookup
                                    # refuses as a wildcard: a flaky 400)
                                    gzip.compress(iid.encode(), mtime=0), {"Content-Encoding": "gzip"})
    assert s1 == s2 and json.loads(b1) == json.loads(b2) == [], (s1, b1, s2, b2)
    # a body that is not gzip: Orthanc 1.10.1 answers 500 "Internal error" (zlib's
    # failure as its own); the client's mistake is a 400 Bad file format here
    (s1, b1, _), (s2, b2, _) = both(fresh, "POST", "/instances", data, {"Content-Encoding": "gzip"})
    assert (s1, json.loads(b1)["OrthancStatus"]) == (500, -1), b1
    assert (s2, json.loads(b2)["OrthancError"]) == (400, "Bad file format"), b2
    # truncated: Orthanc's 400 too
    same_answer(fresh, "POST", "/instances", gzip.compress(data)[:-100],
                {"Content-Encoding": "gzip"})
    same_answer(fresh, "POST", "/instances", zlib.compress(data), {"Content-Encoding": "deflate"})
    same_answer(fresh, "POST", "/instances", data, {"Content-Encoding": "br"})
    same_answer(fresh, "POST", "/instances", data, {"Content-Encoding": "identity"})


def test_upload_gzip_inflated_within_the_limit(fresh):
    """The inflated body is bounded as a plain one (TESSERA_MAX_INSTANCE_SIZE): a
    small gzip body that inflates past it is refused with 413, and leaves no
    file in the storage area's tmp/."""
    import gzip
    from orthanc import http
    if not hasattr(fresh.cluster, "start_rest"):
        pytest.skip("against Orthanc")
    rest = fresh.cluster.start_rest(fresh.ing, TESSERA_MAX_INSTANCE_SIZE=200000)
    bomb = gzip.compress(b"\0" * 5_000_000)
    assert len(bomb) < 200000
    status, body, _ = http(rest.url, "POST", "/instances", bomb, {"Content-Encoding": "gzip"})
    assert status == 413, body
    assert json.loads(body)["Details"] == "the inflated body is larger than 200000 bytes"
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    status, body, _ = http(rest.url, "POST", "/instances", gzip.compress(data),
                           {"Content-Encoding": "gzip"})
    assert status == 200, body
    assert fresh.cluster.temp_files() == []


def test_tools_settings_routes(fresh):
    """/tools/default-encoding, /tools/accepted-transfer-syntaxes,
    /tools/unknown-sop-class-accepted and /tools/log-level read as Orthanc 1.10.1
    answers them with its defaults (text/plain, JSON list), and each refuses a
    bad value with Orthanc's error. What Tessera leaves out on purpose (changing
    the encoding, the transfer syntaxes or the SOP class policy of a running
    cluster: docs/conformance.md) is Orthanc's 501 "Not implemented yet"."""
    for path in ("/tools/default-encoding", "/tools/unknown-sop-class-accepted",
                 "/tools/log-level"):
        _, body, headers = same_answer(fresh, "GET", path, json_body=False)
        assert headers["Content-Type"].startswith("text/plain"), path
    # the storage SCP's own list, in Orthanc's order: Orthanc's less those Tessera
    # does not accept (JPEG processes Orthanc lists though dcmtk retired them, HTJ2K)
    ref = fresh.ref.get("/tools/accepted-transfer-syntaxes")
    got = fresh.t.get("/tools/accepted-transfer-syntaxes")
    assert got == [uid for uid in ref if uid in got], (ref, got)
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5"} <= set(got)
    same_answer(fresh, "PUT", "/tools/default-encoding", b"Nope")
    same_answer(fresh, "PUT", "/tools/default-encoding", b"Latin1", json_body=False)
    s, b, _ = fresh.t.req("PUT", "/tools/default-encoding", b"Utf8")
    assert (s, json.loads(b)["OrthancError"]) == (501, "Not implemented yet"), b
    assert fresh.t.req("GET", "/tools/default-encoding")[1] == b"Latin1"
    same_answer(fresh, "PUT", "/tools/unknown-sop-class-accepted", b"0", json_body=False)
    same_answer(fresh, "PUT", "/tools/unknown-sop-class-accepted", b"maybe")
    s, b, _ = fresh.t.req("PUT", "/tools/unknown-sop-class-accepted", b"1")
    assert (s, json.loads(b)["OrthancError"]) == (501, "Not implemented yet"), b
    # PUT /tools/accepted-transfer-syntaxes changes the cluster's list:
    # test_accepted_syntaxes.py
    # log-level: Orthanc's three names, mapped to Tessera's levels (default: the
    # configured TESSERA_LOG_LEVEL, verbose and trace: debug) in the rest service;
    # the names are case-sensitive in Orthanc
    for level in ("verbose", "trace", "default"):
        same_answer(fresh, "PUT", "/tools/log-level", level.encode(), json_body=False)
        same_answer(fresh, "GET", "/tools/log-level", json_body=False)
    same_answer(fresh, "PUT", "/tools/log-level", b"bad")
    same_answer(fresh, "PUT", "/tools/log-level", b"TRACE")
    # the setting took: a debug line of the rest service
    fresh.t.req("PUT", "/tools/log-level", b"verbose")
    fresh.t.req("GET", "/system")
    fresh.t.req("PUT", "/tools/log-level", b"default")
    log = fresh.cluster.rests[0].read_log()
    assert 'level=debug' in log and 'uri=/system' in log


def test_tools_listing_and_plugins(fresh):
    """GET /tools lists the /tools routes Tessera serves: Orthanc's listing less
    what Tessera leaves out (docs/conformance.md), plus /tools/labels, which
    Orthanc lists from 1.12 on (the labels follow 1.12). GET /plugins is a 404, as in
    an Orthanc built without plugins, which /system says Tessera is."""
    ref, got = fresh.ref.get("/tools"), fresh.t.get("/tools")
    assert got == sorted(set(got)) and set(got) - set(ref) == {"labels"}, set(got) - set(ref)
    for name in ("find", "lookup", "default-encoding", "accepted-transfer-syntaxes",
                 "unknown-sop-class-accepted", "log-level", "dicom-echo", "create-archive",
                 "bulk-delete", "metrics-prometheus"):
        assert name in got, name
    assert fresh.t.get("/system")["PluginsEnabled"] is False
    s, b, _ = fresh.t.req("GET", "/plugins")
    assert (s, json.loads(b)["OrthancError"]) == (404, "Unknown resource")


def test_tools_dicom_echo(fresh):
    """POST /tools/dicom-echo with a modality in the body (object or array form):
    {} on success, Orthanc's errors for a peer that does not answer and for a
    malformed body."""
    port = fresh.orthanc.dicom_port
    for body in ({"AET": fresh.orthanc.aet, "Host": "127.0.0.1", "Port": port},
                 [fresh.orthanc.aet, "127.0.0.1", port],
                 {"AET": fresh.orthanc.aet, "Host": "127.0.0.1", "Port": str(port), "Timeout": 5}):
        same_answer(fresh, "POST", "/tools/dicom-echo", json.dumps(body).encode())
    for body in (b"{}", b"[1]", b"not json", b'{"AET": "X", "Host": "127.0.0.1", "Port": 0}'):
        same_answer(fresh, "POST", "/tools/dicom-echo", body)
    # nobody there: Orthanc's error, with Tessera's own words in Details (as for
    # /modalities/{id}/echo)
    (s1, b1, _), (s2, b2, _) = both(fresh, "POST", "/tools/dicom-echo",
                                    b'{"AET": "X", "Host": "127.0.0.1", "Port": 1}')
    e1, e2 = json.loads(b1), json.loads(b2)
    assert "Connection refused" in e1["Details"] and "Connection refused" in e2["Details"]
    e1.pop("Details"), e2.pop("Details")
    assert (s1, e1) == (s2, e2), (b1, b2)


def form_data(parts, boundary="XyZzy-7"):
    """A multipart/form-data body: (field name, file name or None, bytes) each."""
    out = b""
    for name, filename, data in parts:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"".encode()
        out += f"; filename=\"{filename}\"".encode() if filename else b""
        out += b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_upload_multipart_form_data(fresh):
    """POST /instances with multipart/form-data (an HTML form, curl -F): each part
    is uploaded as a body of its own (a ZIP too), the answer is Orthanc 1.10.1's
    empty 200, or the first failing part's error; a body without parts is a 200."""
    import io
    import zipfile
    a = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    b = (PYDICOM_FILES / "MR_small.dcm").read_bytes()
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rtplan.dcm", (PYDICOM_FILES / "rtplan.dcm").read_bytes())
    headers = {"Content-Type": "multipart/form-data; boundary=XyZzy-7"}
    quoted = {"Content-Type": 'multipart/form-data; boundary="XyZzy-7"'}
    same_answer(fresh, "POST", "/instances", form_data([("files[]", "a.dcm", a)]), headers,
                json_body=False)
    same_answer(fresh, "POST", "/instances",
                form_data([("files[]", "b.dcm", b), ("files[]", "p.zip", z.getvalue())]), quoted,
                json_body=False)
    assert sorted(fresh.t.get("/instances")) == sorted(fresh.ref.get("/instances"))
    assert len(fresh.t.get("/instances")) == 3
    same_answer(fresh, "POST", "/instances", form_data([("x", None, b"hello")]), headers)
    same_answer(fresh, "POST", "/instances", b"--XyZzy-7--\r\n", headers, json_body=False)
    same_answer(fresh, "POST", "/instances", b"garbage", headers, json_body=False)
    assert fresh.cluster.temp_files() == []


def test_module(fresh):
    """GET /{level}/{id}/module [?simplify|?short|?ignore-length] and
    /studies/{id}/module-patient: the module's tags of the resource's first
    instance, as Orthanc 1.10.1 answers them, except Largest Pixel Value in Series
    (0028,0109), which Orthanc 1.10.1 lists as (0029,0109) and so leaves out: PS3.3
    C.7-5 has it in the General Series module."""
    def instance(suffix):
        ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        ds.SOPInstanceUID += suffix
        ds.PatientComments = "c" * 300
        ds.add_new(0x00280108, "SS", -10)
        ds.add_new(0x00280109, "SS", 3000)
        fp = DicomBytesIO()
        ds.save_as(fp)
        return fp.getvalue()
    # two instances with the same module values: which one is "first" is the
    # server's business
    up = upload_both(fresh, instance(".93"))
    upload_both(fresh, instance(".94"))
    for level, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                       ("series", "ParentSeries"), ("instances", "ID")):
        for q in ("", "?simplify", "?short", "?ignore-length=PatientComments"):
            path = f"/{level}/{up[key]}/module{q}"
            if level == "series":
                ref, got = fresh.ref.get(path), fresh.t.get(path)
                largest = "LargestPixelValueInSeries" if q == "?simplify" else "0028,0109"
                assert largest in got and largest not in ref, (path, got)
                got.pop(largest)
                assert got == ref, (path, diff(ref, got))
            else:
                same_answer(fresh, "GET", path)
        same_answer(fresh, "GET", f"/{level}/{up[key][:-1]}0/module")
    s, body, _ = same_answer(fresh, "GET", f"/studies/{up['ParentStudy']}/module-patient")
    assert body["0010,0010"]["Value"] == "CompressedSamples^CT1"
    assert body["0010,4000"]["Type"] == "TooLong"


# ---- a private dictionary in the configuration (Orthanc's "Dictionary") ---------------

DICTIONARY = {"0041,1001": ["LO", "TesseraTestName", 1, 1, "TESSERA TEST"],
              "0041,1002": ["DS", "TesseraTestValues", 1, 0, "TESSERA TEST"]}


def with_private_tags(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    block = ds.private_block(0x0041, "TESSERA TEST", create=True)
    block.add_new(0x01, "LO", "hello")
    block.add_new(0x02, "DS", ["1.5", "2.5", "3"])
    path = tmp_path / "private.dcm"
    ds.save_as(path)
    return path.read_bytes()


def test_private_dictionary_like_orthanc(postgres, tmp_path):
    """TESSERA_DICOM_DICTIONARY is Orthanc's "Dictionary" option: the private tags it
    names get that name (and VR) in /tags and ?simplify, as in Orthanc 1.10.1 with the
    same entries; without it both show the tags without a name. A malformed entry
    stops the service at start with a message that says which and why."""
    from conftest import Cluster
    from orthanc import Orthanc
    from test_rest import Server
    tmp_path.chmod(0o755)
    data = with_private_tags(tmp_path)
    (tmp_path / "t").mkdir()
    cluster = Cluster(postgres, tmp_path / "t")
    o = Orthanc(tmp_path / "o", Dictionary=DICTIONARY).start()
    try:
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_DICOM_DICTIONARY=json.dumps(DICTIONARY))
        plain = cluster.start_rest(ing)
        t, ref, t_plain = (Server("tessera", rest.url), Server("orthanc", o.url),
                           Server("plain", plain.url))
        iid = t.upload(data)["ID"]
        assert ref.upload(data)["ID"] == iid
        for route in ("tags", "tags?simplify", "tags?short"):
            path = f"/instances/{iid}/{route}"
            a, b = t.get(path), ref.get(path)
            assert a == b, (path, diff(b, a))
        tags = t.get(f"/instances/{iid}/tags")
        assert tags["0041,1001"]["Name"] == "TesseraTestName", tags["0041,1001"]
        assert tags["0041,1002"]["Value"] == "1.5\\2.5\\3"
        assert t.get(f"/instances/{iid}/tags?simplify")["TesseraTestName"] == "hello"
        assert t_plain.get(f"/instances/{iid}/tags")["0041,1001"]["Name"] != "TesseraTestName"
        # malformed entries: the service does not start, and says why
        for bad, why in (("{", "not a JSON object"), ('{"0041-1001": ["LO", "X"]}', "not a tag"),
                         ('{"0041,1001": ["XX", "X"]}', "expected [VR"),
                         ('{"0041,1001": ["LO", "X", 2, 1]}', "bad multiplicity")):
            env = dict(rest.env, TESSERA_DICOM_DICTIONARY=bad)
            import subprocess
            from conftest import BUILD
            p = subprocess.run([str(BUILD / "services/rest/tessera-rest")], env=env,
                               capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 and why in p.stdout + p.stderr, (bad, p.stdout, p.stderr)
    finally:
        cluster.stop()
        o.stop()
