"""GET /{level}/{id}/shared-tags and /instances/{id}/content/... compared with a live
Orthanc 1.10.1 holding the same files (test_rest.py's `pair` data set). Nothing is
normalised: status, Content-Type and body must be Orthanc's (JSON compared parsed)."""
import json

import pytest

from conftest import PYDICOM_FILES, ROOT
from orthanc import orthanc  # noqa: F401  (fixture)
from test_rest import ZERO_ID, assert_same_error, diff, fresh, pair  # noqa: F401  (fixtures)

DATA = ROOT / "tests/data/dicom"


def answer(server, path, method="GET"):
    status, body, headers = server.req(method, path)
    ctype = headers.get("Content-Type")
    if status >= 400:
        # Orthanc sends its error bodies without Content-Type: compared as JSON only
        return status, None, json.loads(body) if body else body
    if ctype and ctype.startswith("application/json"):
        body = json.loads(body)
    return status, ctype, body


def assert_same(pair, path, method="GET"):
    a, b = answer(pair.ref, path, method), answer(pair.t, path, method)
    assert b[:2] == a[:2], (path, a[:2], b[:2], str(b[2])[:300])
    assert b[2] == a[2], (path, diff(a[2], b[2]) if isinstance(a[2], dict) else
                          (a[2][:200], b[2][:200]))
    return a


@pytest.mark.parametrize("level", ["patients", "studies", "series"])
@pytest.mark.parametrize("query", ["", "?simplify", "?short", "?simplify&short",
                                   "?simplify=false"])
def test_shared_tags(pair, level, query):
    ids = pair.ref.get("/" + level)
    assert ids
    for rid in ids:
        status, _, body = assert_same(pair, f"/{level}/{rid}/shared-tags{query}")
        assert status == 200 and body, (level, rid)


def test_shared_tags_of_a_series_leave_out_what_differs(pair):
    # the generated 5-instance series: SOPInstanceUID differs, PatientID is shared
    series = [s for s in pair.ref.get("/series?expand") if len(s["Instances"]) == 5]
    assert len(series) == 1
    tags = pair.t.get(f"/series/{series[0]['ID']}/shared-tags?simplify")
    assert "SOPInstanceUID" not in tags and "InstanceNumber" not in tags
    assert tags["PatientID"] == "PAT-REST"


@pytest.mark.parametrize("path", [
    *(f"/{level}/{ZERO_ID}/shared-tags" for level in ("patients", "studies", "series")),
    "/studies/abc/shared-tags", f"/instances/{ZERO_ID}/shared-tags",
    f"/instances/{ZERO_ID}/content", f"/instances/{ZERO_ID}/content/0010-0010",
    "/instances/abc/content",
])
def test_errors(pair, path):
    status, _ = assert_same_error(pair.ref, pair.t, "GET", path)
    assert status == 404


def walk(pair, iid, path, budget):
    """Compares every node under path (depth first) until budget runs out."""
    if budget[0] <= 0:
        return
    budget[0] -= 1
    status, ctype, body = assert_same(pair, f"/instances/{iid}/content{path}")
    if status == 200 and isinstance(body, list):
        for child in body:
            walk(pair, iid, f"{path}/{child}", budget)


def test_content_walk(pair):
    """Every tag, sequence item, nested value and pixel data fragment of every
    instance (up to 400 answers per instance)."""
    seen_values = seen_items = 0
    for iid in pair.ref.get("/instances"):
        budget = [400]
        walk(pair, iid, "", budget)
        listing = pair.t.get(f"/instances/{iid}/content")
        seen_values += len(listing)
        seen_items += budget[0] < 400 - len(listing)
    assert seen_values > 100 and seen_items


def ids_of(pair, name):
    return pair.answers[name][1]["ID"]


@pytest.mark.parametrize("name,paths", [
    ("rtplan.dcm", ["/300a-0010", "/300a-0010/0", "/300a-0010/0/300a-0012", "/300a-0010/-1",
                    "/300a-0010/+0", "/300a-0010/00", "/300a-0010/-0", "/300a-0010/-2",
                    "/300a-0010/2", "/300a-0010/x", "/300a-0010/1x",
                    "/300a-0010/99999999999999999999999", "/300A-0010", "/300a,0010",
                    "/300a0010", "/DoseReferenceSequence",
                    "/DoseReferenceSequence/0/DoseReferenceNumber", "/0010-0010/0",
                    "/0010-0010/x", "/0010-0010/0/0010-0010", "/300a-0010/0/300a-0012/0",
                    "/300a-0010/9/foo", "/7fe0-0010", "/7fe0-0010/0", "/0008-1150",
                    "/300a-0070/0/300a-0080", "/PatientName", "/0002-0010"]),
    ("CT_small.dcm", ["/7fe0-0010", "/7fe0-0010/0", "/7fe0-0010/1", "/7fe0-0010/00",
                      "/7fe0-0010/+0", "/7fe0-0010/x", "/7FE0,0010/0", "/0028-0010",
                      "/0010-0010", "/7fe0-0010/0/0", "/7fe0-0010/-0",
                      "/7fe0-0010/-1"]),
    ("JPEG2000.dcm", ["/7fe0-0010", "/7fe0-0010/0", "/7fe0-0010/1", "/7fe0-0010/2",
                      "/7fe0-0010/-1", "/7fe0-0010/+1", "/7fe0-0010/x", "/7fe0-0010/1/2"]),
    ("chrRuss.dcm", ["/0010-0010", "/0008-0005"]),
])
def test_content_paths(pair, name, paths):
    iid = ids_of(pair, name)
    for p in paths:
        assert_same(pair, f"/instances/{iid}/content{p}")


@pytest.mark.parametrize("path", ["/foo", "/1234-zzzz", "/300a-0010/0/foo", "/foo/0",
                                  "/300a-0010/0/foo/0"])
def test_content_unknown_tag(pair, path):
    iid = ids_of(pair, "rtplan.dcm")
    status, err = assert_same_error(pair.ref, pair.t, "GET", f"/instances/{iid}/content{path}")
    assert status == 500 and err["OrthancError"] == "Unknown DICOM tag"


def test_content_raw_bytes(pair):
    # text as stored in the file (ISO_IR 144 here, with its padding), numbers as bytes
    iid = ids_of(pair, "chrRuss.dcm")
    status, body, headers = pair.t.req("GET", f"/instances/{iid}/content/0010-0010")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(body)
    assert body.decode("iso8859_5").rstrip() == "Люкceмбypг"
    iid = ids_of(pair, "CT_small.dcm")
    status, body, _ = pair.t.req("GET", f"/instances/{iid}/content/0028-0010")
    assert body == (128).to_bytes(2, "little")


def test_content_other_methods(pair):
    iid = ids_of(pair, "rtplan.dcm")
    for method in ("DELETE", "PUT", "POST"):
        assert_same_error(pair.ref, pair.t, method, f"/instances/{iid}/content/0010-0010",
                          body=None if method == "DELETE" else b"")


FRAME_FILES = [DATA / "CT_small.dcm", DATA / "rtplan.dcm", DATA / "JPEG-lossy.dcm",
               DATA / "MR_small_bigendian.dcm", DATA / "ExplVR_BigEnd.dcm",
               *(PYDICOM_FILES / f for f in [
                   "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm",
                   "rtdose.dcm", "SC_rgb_rle_32bit_2frame.dcm", "SC_rgb_small_odd.dcm", "liver_1frame.dcm",
                   "MR_small_jp2klossless.dcm", "SC_rgb_rle_16bit_2frame.dcm",
                   "JPGExtended.dcm", "MR_small_RLE.dcm"])]


def test_frames(fresh):
    """/frames and /frames/{n}/raw of files with one or more frames, uncompressed
    (little and big endian), RLE, JPEG, JPEG 2000, and without pixel data."""
    ids = []
    for f in FRAME_FILES:
        data = f.read_bytes()
        a, b = fresh.ref.upload(data), fresh.t.upload(data)
        assert a == b, f
        ids.append(a["ID"])
    pair_like = type("P", (), {"ref": fresh.ref, "t": fresh.t})
    multi = 0
    for iid in dict.fromkeys(ids):
        _, _, frames = assert_same(pair_like, f"/instances/{iid}/frames")
        multi += len(frames) > 1
        for n in [*frames, len(frames), "-1", "+0", "00", "x", "99999999999", "4294967295"]:
            assert_same(pair_like, f"/instances/{iid}/frames/{n}/raw")
    assert multi >= 2


@pytest.mark.parametrize("path", [f"/instances/{ZERO_ID}/frames",
                                  f"/instances/{ZERO_ID}/frames/0/raw",
                                  "/instances/abc/frames/0/raw"])
def test_frames_errors(pair, path):
    status, _ = assert_same_error(pair.ref, pair.t, "GET", path)
    assert status == 404
