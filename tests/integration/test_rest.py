"""Tessera's REST answers compared with a real Orthanc 1.10.1 (orthanc.py) that holds
the same files, stored in the same order: POST /instances to both for most files,
storescu to both (ingest's DICOM port / Orthanc's DICOM port) for some.

Differences from Orthanc that these tests normalise, and why:
- LastUpdate (patients, studies, series) and the "Date" of each change: wall-clock
  times of the two servers' own receptions, never equal.
- FileUuid (instances) and the filename="<uuid>.dcm" of Content-Disposition on
  /instances/{id}/file: each server names its stored file with a random UUID.
- IsStable: depends on the time since the last instance arrived (StableAge); the two
  servers received the files at different moments. Only its presence and its type
  (bool) are compared.
- Seq in /changes (and hence the value of "Last"): sequence numbers come from each
  server's own change log (a PostgreSQL sequence in Tessera); only their order and
  their consistency with "Last" are compared, never their values.
- Order of the keys of every JSON object (compared as dicts), the order of the
  child lists Studies / Series / Instances and of the top-level lists /patients,
  /studies, /series, /instances (compared as sets; paging with since/limit is
  compared by page sizes and by consistency with the server's own full list).
- "Details" of error bodies: compared only where it is a fixed sentence of Orthanc's
  (missing since/limit, empty upload, unparsable upload); elsewhere only its
  presence is compared.
- /statistics sizes (TotalDiskSize...): only their types; Count* are compared.
- /system: only the keys and types listed in the brief, plus CheckRevisions true
  (the reference Orthanc is started with CheckRevisions true as well).
- Instances received by C-STORE: the file meta header is written by the receiver.
  Orthanc 1.10.1 writes ImplementationVersionName "OFFIS_DCMTK_367" and no
  (0002,0016) SourceApplicationEntityTitle; Tessera's ingest writes its own version
  name and (0002,0016) = the caller's AET, so its files are 16 bytes longer. FileSize
  (only its type) and the bytes of /file are not compared for those instances; /file
  must still hold the same dataset, and FileSize must equal the length of /file.
- Where Orthanc's "Details" is a fixed sentence, Tessera's must start with it and
  may go on with the reason (e.g. dcmtk's parse error), which helps the user.
- Allow of a 405 on /changes: compared without DELETE, which Orthanc lists there
  (clearing the change log) and Tessera does not serve.
- POST of 200 zero bytes: Orthanc answers 404 "Inexistent tag"; Tessera answers
  400 "Bad file format" on purpose (see test_post_zeros).
Nothing else is normalised: everything else must be byte-for-byte Orthanc's JSON.
"""
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest

from conftest import PYDICOM_FILES, ROOT, Cluster, storescu
from orthanc import Orthanc, http, orthanc  # noqa: F401  (orthanc is a fixture)
from test_ingest import expected_ids, make_series

DATA = ROOT / "tests/data/dicom"
UPLOADED = [DATA / "CT_small.dcm", DATA / "MR_small.dcm", DATA / "rtplan.dcm",
            PYDICOM_FILES / "JPEG2000.dcm", DATA / "chrRuss.dcm"]
ZERO_ID = "00000000-00000000-00000000-00000000-00000000"
LEVELS = ["patients", "studies", "series", "instances"]
VOLATILE = {"LastUpdate", "FileUuid", "IsStable"}
# Instances received by C-STORE in the shared data set: their FileSize depends on the
# file meta header each receiver writes (see the top of the file).
CSTORED_IDS = set()


# ----------------------------------------------------------------------------------
# Servers


class Server:
    """A uniform face over Orthanc and tessera-rest."""

    def __init__(self, name, url):
        self.name, self.url = name, url

    def req(self, method, path, body=None, headers=None):
        return http(self.url, method, path, body, headers)

    def get(self, path):
        status, body, _ = self.req("GET", path)
        assert status == 200, (self.name, path, status, body[:2000])
        return json.loads(body)

    def upload(self, data):
        status, body, _ = self.req("POST", "/instances", data)
        assert status == 200, (self.name, status, body[:2000])
        return json.loads(body)


# TESSERA_REST_AGAINST=orthanc puts a second Orthanc where Tessera would be: every
# test must then pass, which checks the tests themselves (their Orthanc half).
AGAINST_ORTHANC = os.environ.get("TESSERA_REST_AGAINST") == "orthanc"


def start_tessera(cluster):
    """(object with .aet/.port for storescu, Server) of the system under test."""
    if AGAINST_ORTHANC:
        o = Orthanc(cluster.base / "orthanc-as-tessera", aet="TESSERA", name="Tessera").start()
        cluster.rests.append(SimpleNamespace(stop=o.stop, read_log=lambda: ""))
        return SimpleNamespace(aet=o.aet, port=o.dicom_port), Server("tessera", o.url)
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    return ing, Server("tessera", rest.url)


def check_logs(cluster):
    for proc in cluster.ingests + cluster.rests:
        log = proc.read_log()
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


@pytest.fixture(scope="module")
def pair(postgres, tmp_path_factory):
    """Orthanc and Tessera holding the same data set, stored in the same order:
    5 files by POST, then a generated 5-instance series (2 by POST, 3 by C-STORE)."""
    base = tmp_path_factory.mktemp("rest-pair")
    base.chmod(0o755)
    o = Orthanc(base / "orthanc").start()
    (base / "tessera").mkdir()
    cluster = Cluster(postgres, base / "tessera")
    try:
        ing, t = start_tessera(cluster)
        ref = Server("orthanc", o.url)
        series = make_series(base / "gen", 5, study_uid="1.2.826.0.1.3680043.8.498.77",
                             patient="PAT-REST")
        posted = UPLOADED + series[:2]
        answers = {}
        for f in posted:
            data = f.read_bytes()
            a, b = ref.upload(data), t.upload(data)
            answers[f.name] = (a, b)
        rc, out = storescu(SimpleNamespace(aet=o.aet, port=o.dicom_port), series[2:])
        assert rc == 0, out
        rc, out = storescu(ing, series[2:])
        assert rc == 0, out
        for f in series[2:]:
            CSTORED_IDS.add(expected_ids(f)[3])
        yield SimpleNamespace(ref=ref, t=t, orthanc=o, cluster=cluster, posted=posted,
                              stored=series[2:], answers=answers)
    finally:
        cluster.stop()
        o.stop()
    check_logs(cluster)


@pytest.fixture
def fresh(postgres, tmp_path, orthanc):  # noqa: F811
    """An empty Orthanc and an empty Tessera (ingest + rest)."""
    tmp_path.chmod(0o755)
    cluster = Cluster(postgres, tmp_path)
    try:
        ing, t = start_tessera(cluster)
        yield SimpleNamespace(ref=Server("orthanc", orthanc.url), t=t, ing=ing,
                              orthanc=orthanc, cluster=cluster)
    finally:
        cluster.stop()
    check_logs(cluster)


# ----------------------------------------------------------------------------------
# Normalisation


def norm(obj):
    """A resource object with the volatile fields checked for type and removed, and
    child lists sorted."""
    assert isinstance(obj, dict), obj
    out = {}
    for k, v in obj.items():
        if k in VOLATILE:
            continue
        if k == "Labels" and v == []:
            continue  # Orthanc 1.12's field (test_labels.py); 1.10.1 has none
        if k == "FileSize" and obj.get("ID") in CSTORED_IDS:
            assert isinstance(v, int) and v > 0, obj
            continue
        if k in ("Studies", "Series", "Instances") and isinstance(v, list):
            v = sorted(v)
        out[k] = v
    return out


def volatile_shape(obj):
    """Which volatile fields exist, with their types (compared, the values are not)."""
    return {k: type(obj[k]).__name__ for k in VOLATILE if k in obj}


def assert_same_resource(a, b, what):
    assert volatile_shape(b) == volatile_shape(a), (what, volatile_shape(a), volatile_shape(b))
    if "LastUpdate" in b:
        assert re.fullmatch(r"\d{8}T\d{6}", b["LastUpdate"]), (what, b["LastUpdate"])
    assert norm(b) == norm(a), (what, diff(norm(a), norm(b)))


def assert_same_resource_list(a, b, what):
    assert isinstance(b, list), (what, b)
    assert all(isinstance(x, dict) for x in b), (what, "expected objects", b[:3])
    assert sorted(x["ID"] for x in b) == sorted(x["ID"] for x in a), what
    by_id = {x["ID"]: x for x in b}
    for x in a:
        assert_same_resource(x, by_id[x["ID"]], f"{what} {x['ID']}")


def diff(a, b, path=""):
    """Readable differences between two JSON values (for assertion messages)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}/{k}: missing in tessera (orthanc: {a[k]!r:.200})")
            elif k not in a:
                out.append(f"{path}/{k}: extra in tessera ({b[k]!r:.200})")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
    elif a != b:
        out.append(f"{path}: orthanc {a!r:.300} != tessera {b!r:.300}")
    return out[:40]


def error_body(status, body):
    """An error answer as (status, parsed JSON or raw bytes)."""
    if not body:
        return status, b""
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def assert_same_error(ref, t, method, path, body=None, compare_details=False):
    s1, b1, h1 = ref.req(method, path, body)
    s2, b2, h2 = t.req(method, path, body)
    what = (method, path)
    assert s2 == s1, (what, s1, b1[:500], s2, b2[:500])
    e1, e2 = error_body(s1, b1)[1], error_body(s2, b2)[1]
    if isinstance(e1, dict):
        assert isinstance(e2, dict), (what, e1, b2[:500])
        assert sorted(e2) == sorted(e1), (what, e1, e2)
        if compare_details and "Details" in e1:
            # Tessera may say more than Orthanc, after Orthanc's own words
            assert str(e2.get("Details", "")).startswith(e1["Details"]), (what, e1, e2)
        e1 = {k: v for k, v in e1.items() if k != "Details"}
        e2 = {k: v for k, v in e2.items() if k != "Details"}
        assert e2 == e1, (what, diff(e1, e2))
    else:
        # Orthanc answers some errors (unknown id on /{level}/{id}, 405) with no body
        assert b2 == b1, (what, b1[:500], b2[:500])
    if s1 == 405:
        # Tessera lists the methods it implements; DELETE /changes (clearing the
        # log) is not one of them
        def methods(h):
            return sorted(m for m in (h.get("Allow") or "").split(",")
                          if not (m == "DELETE" and path == "/changes"))
        assert methods(h2) == methods(h1), (what, h1.get("Allow"), h2.get("Allow"))
    return s1, e1


# ----------------------------------------------------------------------------------
# /system, /statistics


def test_system(pair):
    ref, t = pair.ref.get("/system"), pair.t.get("/system")
    for key, typ in [("Name", str), ("Version", str), ("ApiVersion", int), ("DicomAet", str),
                     ("DicomPort", int), ("HttpPort", int), ("CheckRevisions", bool)]:
        assert isinstance(ref[key], typ), (key, ref)
        assert isinstance(t.get(key), typ), (key, t)
    assert t["CheckRevisions"] is True
    assert t["HttpPort"] == int(pair.t.url.rsplit(":", 1)[1])


def test_statistics(pair):
    ref, t = pair.ref.get("/statistics"), pair.t.get("/statistics")
    for k in ("CountPatients", "CountStudies", "CountSeries", "CountInstances"):
        assert t[k] == ref[k], (k, ref, t)
    assert ref["CountInstances"] == len(pair.posted) + len(pair.stored)
    assert {k: type(v) for k, v in t.items()} == {k: type(v) for k, v in ref.items()}, (ref, t)
    assert int(t["TotalDiskSize"]) > 0 and int(t["TotalUncompressedSize"]) > 0


# ----------------------------------------------------------------------------------
# Lists


@pytest.mark.parametrize("level", LEVELS)
def test_list_ids(pair, level):
    ref, t = pair.ref.get("/" + level), pair.t.get("/" + level)
    assert all(isinstance(x, str) for x in t), t
    assert len(t) == len(set(t))
    assert set(t) == set(ref), (level, sorted(ref), sorted(t))


@pytest.mark.parametrize("level", LEVELS)
def test_list_expand(pair, level):
    ref, t = pair.ref.get(f"/{level}?expand"), pair.t.get(f"/{level}?expand")
    assert_same_resource_list(ref, t, level + "?expand")
    # Orthanc expands whenever the argument is there, whatever its value
    assert_same_resource_list(pair.ref.get(f"/{level}?expand=false"),
                              pair.t.get(f"/{level}?expand=false"), level + "?expand=false")


@pytest.mark.parametrize("level", LEVELS)
def test_list_since_limit(pair, level):
    full_ref, full_t = pair.ref.get("/" + level), pair.t.get("/" + level)
    n = len(full_ref)
    for since, limit in [(0, 1), (0, 2), (1, 2), (2, 100), (n - 1, 5), (n, 5), (n + 3, 1),
                         (0, 0)]:
        path = f"/{level}?since={since}&limit={limit}"
        page_ref, page_t = pair.ref.get(path), pair.t.get(path)
        assert len(page_t) == len(page_ref), (path, page_ref, page_t)
        # since is an offset into the server's own list
        assert page_t == full_t[since:since + limit], (path, full_t, page_t)
    # pages of 2 cover the whole list once
    pages = []
    for since in range(0, n, 2):
        pages += pair.t.get(f"/{level}?since={since}&limit=2")
    assert pages == full_t
    # with expand
    path = f"/{level}?expand&since=1&limit=2"
    page_ref, page_t = pair.ref.get(path), pair.t.get(path)
    assert len(page_t) == len(page_ref)
    assert [x["ID"] for x in page_t] == full_t[1:3]
    by_id = {x["ID"]: x for x in pair.ref.get(f"/{level}?expand")}
    for x in page_t:
        assert_same_resource(by_id[x["ID"]], x, path)


@pytest.mark.parametrize("query", ["limit=abc", "since=abc", "since=1", "limit=1",
                                   "since=abc&limit=2", "since=1&limit=abc", "expand&limit=1",
                                   "since=0x1&limit=2", "since=0&limit=2.5", "since=&limit="])
def test_list_bad_paging_arguments(pair, query):
    # Orthanc 1.10.1: since and limit only work together; a bad number is a 400
    for level in ("instances", "studies"):
        assert_same_error(pair.ref, pair.t, "GET", f"/{level}?{query}", compare_details=True)


# ----------------------------------------------------------------------------------
# One resource and navigation


def all_ids(pair):
    return {level: pair.ref.get("/" + level) for level in LEVELS}


@pytest.mark.parametrize("level", LEVELS)
def test_resource(pair, level):
    for rid in pair.ref.get("/" + level):
        ref, t = pair.ref.get(f"/{level}/{rid}"), pair.t.get(f"/{level}/{rid}")
        assert_same_resource(ref, t, f"/{level}/{rid}")


NAVIGATION = {
    "patients": ["studies", "series", "instances"],
    "studies": ["patient", "series", "instances"],
    "series": ["patient", "study", "instances"],
    "instances": ["patient", "study", "series"],
}


@pytest.mark.parametrize("level,child", [(lvl, c) for lvl, cs in NAVIGATION.items() for c in cs])
def test_navigation(pair, level, child):
    for rid in pair.ref.get("/" + level):
        path = f"/{level}/{rid}/{child}"
        ref, t = pair.ref.get(path), pair.t.get(path)
        if isinstance(ref, list):
            assert_same_resource_list(ref, t, path)
        else:
            assert_same_resource(ref, t, path)


def test_instance_index_in_series_and_parents(pair):
    inst = pair.t.get("/instances?expand")
    gen = sorted((i for i in inst if i["MainDicomTags"].get("SOPInstanceUID", "").startswith(
        "1.2.826.0.1.3680043.8.498.77.")), key=lambda i: i["IndexInSeries"])
    assert [i["IndexInSeries"] for i in gen] == [1, 2, 3, 4, 5]
    assert len({i["ParentSeries"] for i in gen}) == 1


# ----------------------------------------------------------------------------------
# Routes that Orthanc Explorer 2 and pyorthanc call (issue 16, item 3): statistics of a
# resource, its metadata and its attachments


TIMES = {"LastUpdate", "ReceptionDate"}  # each server's own clock


def answer(server, method, path, body=None):
    """(status, parsed JSON or raw bytes) of one request, the Uri of an error left out."""
    status, data, _ = server.req(method, path, body)
    try:
        data = json.loads(data) if data else data
    except ValueError:
        pass
    if isinstance(data, dict):
        data.pop("Uri", None)
    return status, data


@pytest.mark.parametrize("level", LEVELS)
def test_resource_statistics(pair, level):
    """Orthanc 1.10.1 answers DicomDiskSize, DicomUncompressedSize (and their MB)
    beside DiskSize; Tessera did not. (The files received by C-STORE are 16 bytes
    longer in Tessera: see the top of the file.)"""
    sizes = ("DiskSize", "UncompressedSize", "DicomDiskSize", "DicomUncompressedSize")
    for rid in pair.ref.get("/" + level):
        path = f"/{level}/{rid}/statistics"
        ref, t = pair.ref.get(path), pair.t.get(path)
        inst = {rid} if level == "instances" else {i["ID"] for i in pair.ref.get(
            f"/{level}/{rid}/instances")}
        extra = 16 * len(inst & CSTORED_IDS)
        assert {k: int(t[k]) for k in sizes} == {k: int(ref[k]) + extra for k in sizes}, path
        assert {k: v for k, v in t.items() if k not in sizes} == {
            k: v for k, v in ref.items() if k not in sizes}, (path, diff(ref, t))
        assert ref["DicomDiskSize"] == ref["DiskSize"]  # no other attachment here


@pytest.mark.parametrize("level", LEVELS)
def test_metadata_like_orthanc(pair, level):
    """The names in Orthanc's order (its numbers: RemoteAET 3 before LastUpdate 7...),
    the series' RemoteAET (the last sender's), ?expand, each value by name and by
    number, LastUpdate readable where it is listed, and Orthanc's answers for a name it
    knows that the resource has not (an empty 404) and for one it does not know."""
    for rid in pair.ref.get("/" + level):
        base = f"/{level}/{rid}/metadata"
        ref, t = pair.ref.get(base), pair.t.get(base)
        assert t == ref, (base, ref, t)
        ref, t = pair.ref.get(base + "?expand"), pair.t.get(base + "?expand")
        assert set(t) == set(ref), (base, ref, t)
        if rid in CSTORED_IDS:  # each receiver's AET and file meta header (see the top)
            assert (ref["CalledAET"], t["CalledAET"]) == ("ORTHANC", "TESSERA")
            assert int(t["PixelDataOffset"]) == int(ref["PixelDataOffset"]) + 16
            varying = TIMES | {"CalledAET", "PixelDataOffset"}
        else:
            varying = TIMES
        assert {k: v for k, v in t.items() if k not in varying} == {
            k: v for k, v in ref.items() if k not in varying}, (base, ref, t)
        for name in ["IndexInSeries", "ReceptionDate", "RemoteAET", "LastUpdate", "Origin",
                     "TransferSyntax", "SopClassUid", "RemoteIP", "HttpUsername",
                     "PixelDataOffset", "ExpectedNumberOfInstances", "ModifiedFrom",
                     "CalledAET", "Nope", "9999", "2000"] + [str(n) for n in range(1, 16)]:
            path = f"{base}/{name}"
            (s1, b1), (s2, b2) = answer(pair.ref, "GET", path), answer(pair.t, "GET", path)
            assert s1 == s2, (path, s1, b1, s2, b2)
            if s1 == 200 and rid in CSTORED_IDS and name in ("CalledAET", "12",
                                                             "PixelDataOffset", "14"):
                continue  # compared above
            if s1 == 200 and name not in TIMES and name not in ("2", "7"):
                assert b1 == b2, (path, b1, b2)
            elif s1 == 200:
                assert re.fullmatch(rb"\d{8}T\d{6}", b2), (path, b2)
            else:
                assert b1 == b2, (path, b1, b2)


def test_attachments_like_orthanc(pair):
    """The list of an attachment's operations, its info, and the error of every
    operation on a name that is missing, unknown, or a number out of range."""
    iid = pair.ref.get("/instances")[0]
    sid = pair.ref.get("/studies")[0]
    for base in (f"/instances/{iid}", f"/studies/{sid}"):
        for suffix in ("", "?full"):
            path = f"{base}/attachments{suffix}"
            assert answer(pair.t, "GET", path) == answer(pair.ref, "GET", path), path
        for name in ("dicom", "1", "1024", "nope", "dicom-as-json", "2", "0", "99999"):
            for op in ("", "/data", "/size", "/md5", "/info", "/compressed-data",
                       "/compressed-size", "/compressed-md5", "/is-compressed",
                       "/uncompressed-size", "/bogus", "/verify-md5"):
                path = f"{base}/attachments/{name}{op}"
                (s1, b1), (s2, b2) = answer(pair.ref, "GET", path), answer(pair.t, "GET", path)
                what = (path, s1, str(b1)[:300], s2, str(b2)[:300])
                assert s1 == s2, what
                if op == "/info" and s1 == 200:
                    assert {k: v for k, v in b2.items() if k != "Uuid"} == {
                        k: v for k, v in b1.items() if k != "Uuid"}, what
                    assert re.fullmatch(r"[0-9a-f-]{36}", b2["Uuid"]), what
                elif op not in ("/data", "/compressed-data"):
                    assert b1 == b2, what


def test_attachment_operations_like_orthanc(fresh):
    """PUT answers {}; info, verify-md5 of an intact and of a corrupted file (an empty
    400, as Orthanc), uncompress ({}: stored uncompressed already). compress: Orthanc
    compresses; Tessera stores attachments as they are and answers NotImplemented
    (docs/conformance.md)."""
    data = (DATA / "CT_small.dcm").read_bytes()
    iid = fresh.ref.upload(data)["ID"]
    assert fresh.t.upload(data)["ID"] == iid
    base = f"/instances/{iid}/attachments"
    for server in (fresh.ref, fresh.t):
        assert answer(server, "PUT", base + "/1024", b"hello") == (200, {}), server.name
    info = {}
    for server in (fresh.ref, fresh.t):
        s, b = answer(server, "GET", base + "/1024/info")
        assert s == 200, (server.name, b)
        info[server.name] = b
    assert {k: v for k, v in info["tessera"].items() if k != "Uuid"} == {
        k: v for k, v in info["orthanc"].items() if k != "Uuid"} == {
        "CompressedMD5": "5d41402abc4b2a76b9719d911017c592", "CompressedSize": 5,
        "ContentType": 1024, "UncompressedMD5": "5d41402abc4b2a76b9719d911017c592",
        "UncompressedSize": 5}
    for name in ("1024", "dicom"):
        for server in (fresh.ref, fresh.t):
            assert answer(server, "POST", f"{base}/{name}/verify-md5", b"") == (200, {})
            assert answer(server, "POST", f"{base}/{name}/uncompress", b"") == (200, {})
    for server in (fresh.ref, fresh.t):
        assert answer(server, "POST", f"{base}/nope/verify-md5", b"")[0] == 404
        s, _, h = server.req("GET", f"{base}/1024/verify-md5")
        assert s == 405 and h.get("Allow") == "POST", (server.name, s, h)
    assert answer(fresh.ref, "POST", f"{base}/1024/compress", b"") == (200, {})
    s, b = answer(fresh.t, "POST", f"{base}/1024/compress", b"")
    assert (s, b["OrthancStatus"]) == (501, 2), (s, b)
    assert answer(fresh.ref, "POST", f"{base}/1024/uncompress", b"") == (200, {})
    # a file changed on disk behind the server's back (Orthanc's is a new one since
    # its compress and uncompress)
    u = fresh.ref.get(base + "/1024/info")["Uuid"]
    ofile = Path(fresh.orthanc.config["StorageDirectory"]) / u[:2] / u[2:4] / u
    u = info["tessera"]["Uuid"]
    tfile = fresh.cluster.storage / u[:2] / u[2:4] / u
    for f in (ofile, tfile):
        assert f.read_bytes() == b"hello", f
        f.write_bytes(b"jello")
    fresh.orthanc.stop()  # its storage cache would answer from memory
    fresh.orthanc.start()
    for server in (fresh.ref, fresh.t):
        s, raw, _ = server.req("POST", f"{base}/1024/verify-md5", b"")
        assert (s, raw) == (400, b""), (server.name, s, raw)


# ----------------------------------------------------------------------------------
# Files and tags


def test_file_is_the_uploaded_bytes(pair):
    for f in pair.posted:
        a, b = pair.answers[f.name]
        data = f.read_bytes()
        s1, body1, h1 = pair.ref.req("GET", f"/instances/{a['ID']}/file")
        s2, body2, h2 = pair.t.req("GET", f"/instances/{b['ID']}/file")
        assert (s1, s2) == (200, 200), (f, s1, s2, body2[:300])
        assert body1 == data
        assert body2 == data, f
        assert h2.get("Content-Type") == h1.get("Content-Type") == "application/dicom"
        pat = r'filename="[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.dcm"'
        assert re.fullmatch(pat, h1.get("Content-Disposition", "")), h1
        assert re.fullmatch(pat, h2.get("Content-Disposition", "")), h2


def test_file_of_c_stored_instances_holds_the_dataset(pair):
    for f in pair.stored:
        sop = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        iid = next(i["ID"] for i in pair.ref.get("/instances?expand")
                   if i["MainDicomTags"]["SOPInstanceUID"] == sop)
        s, body, h = pair.t.req("GET", f"/instances/{iid}/file")
        assert s == 200 and h.get("Content-Type") == "application/dicom"
        tmp = Path(tempfile.mkdtemp())
        try:
            (tmp / "x.dcm").write_bytes(body)
            got, sent = pydicom.dcmread(tmp / "x.dcm"), pydicom.dcmread(f)
        finally:
            shutil.rmtree(tmp)
        assert got.SOPInstanceUID == sop
        assert (got.pixel_array == sent.pixel_array).all()
        t_size = pair.t.get(f"/instances/{iid}")["FileSize"]
        assert t_size == len(body)


@pytest.mark.parametrize("route", ["tags", "tags?simplify", "simplified-tags", "tags?short"])
def test_tags(pair, route):
    for iid in pair.ref.get("/instances"):
        path = f"/instances/{iid}/{route}"
        ref, t = pair.ref.get(path), pair.t.get(path)
        assert t == ref, (path, diff(ref, t))


@pytest.mark.parametrize("route", ["header", "header?simplify"])
def test_header_of_posted_files(pair, route):
    # the meta header of a POSTed file is the sender's, byte for byte, in both servers
    # (C-STORE'd files get each receiver's own header: not compared)
    assert pair.posted
    for f in pair.posted:
        iid = pair.answers[f.name][1]["ID"]
        path = f"/instances/{iid}/{route}"
        ref, t = pair.ref.get(path), pair.t.get(path)
        assert ref, path
        assert t == ref, (path, diff(ref, t))


@pytest.mark.parametrize("path", ["/system/", "/instances/", "//studies", "/statistics/"])
def test_extra_slashes_are_ignored(pair, path):
    # Orthanc's router ignores empty path components
    s1, b1, _ = pair.ref.req("GET", path)
    s2, b2, _ = pair.t.req("GET", path)
    assert s2 == s1 == 200, (path, s1, s2, b2[:300])
    if path == "/system/":
        assert json.loads(b2)["CheckRevisions"] is True
    elif path == "/studies" or path == "//studies" or path == "/instances/":
        assert set(json.loads(b2)) == set(json.loads(b1))
    else:
        assert json.loads(b2)["CountInstances"] == json.loads(b1)["CountInstances"]


def test_json_content_type(pair):
    for path in ["/system", "/statistics", "/instances", "/changes"]:
        _, _, h1 = pair.ref.req("GET", path)
        _, _, h2 = pair.t.req("GET", path)
        assert h2.get("Content-Type") == h1.get("Content-Type"), (path, h1, h2)


# ----------------------------------------------------------------------------------
# Uploads


def test_post_answers(pair):
    for f in pair.posted:
        a, b = pair.answers[f.name]
        assert set(b) == set(a) == {"ID", "ParentPatient", "ParentStudy", "ParentSeries",
                                    "Path", "Status"}, (a, b)
        assert b == a, (f, a, b)
        assert a["Status"] == "Success"


def test_post_again_is_already_stored(pair):
    for f in pair.posted[:2] + pair.stored[:1]:
        data = f.read_bytes()
        a, b = pair.ref.upload(data), pair.t.upload(data)
        assert b == a, (f, a, b)
        assert a["Status"] == "AlreadyStored"
    # nothing new was logged
    assert pair.t.get("/statistics")["CountInstances"] == len(pair.posted) + len(pair.stored)


@pytest.mark.parametrize("body", [b"not dicom at all" * 10, b"", b"DICM", b"\0" * 128 + b"DICM",
                                  b"x" * 200], ids=["text", "empty", "DICM", "preamble", "x200"])
def test_post_not_dicom(pair, body):
    status, err = assert_same_error(pair.ref, pair.t, "POST", "/instances", body,
                                    compare_details=True)
    assert status == 400 and err["OrthancError"] == "Bad file format"


def test_post_zeros(pair):
    # dcmtk reads 200 zero bytes as a dataset of (0000,0000) elements, and Orthanc
    # then answers 404 "Inexistent tag" (OrthancStatus 21). A 404 for a bad upload
    # misleads clients: Tessera deliberately answers 400 "Bad file format".
    s1, b1, _ = pair.ref.req("POST", "/instances", b"\0" * 200)
    assert s1 == 404 and json.loads(b1)["OrthancError"] == "Inexistent tag"
    s2, b2, _ = pair.t.req("POST", "/instances", b"\0" * 200)
    assert s2 == 400 and json.loads(b2)["OrthancError"] == "Bad file format", b2
    assert pair.t.get("/statistics")["CountInstances"] == len(pair.posted) + len(pair.stored)


def test_post_zip_skips_what_is_not_dicom(fresh, tmp_path):
    """A ZIP of instances with a README, a DICOMDIR index, an empty file, a truncated
    instance and a directory: Orthanc 1.10.1 stores the instances and lists only
    them; the rest is skipped, not reported as failures."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(DATA / "CT_small.dcm", "a/ct.dcm")
        z.writestr("README", "These are the images of the study.\n")
        z.write(PYDICOM_FILES / "dicomdirtests/DICOMDIR", "DICOMDIR")
        z.writestr("empty.dcm", b"")
        z.writestr("cut.dcm", (DATA / "MR_small.dcm").read_bytes()[:3000])
        z.writestr("b/", b"")
        z.write(DATA / "MR_small.dcm", "b/mr.dcm")
    s1, b1, _ = fresh.ref.req("POST", "/instances", buf.getvalue())
    s2, b2, _ = fresh.t.req("POST", "/instances", buf.getvalue())
    assert s1 == s2 == 200, (s1, b1[:500], s2, b2[:500])
    assert json.loads(b2) == json.loads(b1), (b1, b2)
    assert [r["Status"] for r in json.loads(b2)] == ["Success", "Success"]
    assert sorted(fresh.t.get("/instances")) == sorted(fresh.ref.get("/instances"))


def test_post_truncated_dicom(pair):
    data = (DATA / "CT_small.dcm").read_bytes()[:3000]
    assert_same_error(pair.ref, pair.t, "POST", "/instances", data)


# ----------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("path", [
    *(f"/{level}/{ZERO_ID}" for level in LEVELS),
    *(f"/{level}/{ZERO_ID}/{c}" for level, cs in NAVIGATION.items() for c in cs),
    f"/instances/{ZERO_ID}/file", f"/instances/{ZERO_ID}/tags",
    f"/instances/{ZERO_ID}/simplified-tags", f"/instances/{ZERO_ID}/tags?simplify",
    "/studies/abc", "/studies/abc/series", "/instances/abc/file", "/patients/0/studies",
    "/foo/bar", "/systemx", "/studies/../../etc/passwd", "/instances/x/y/z/w",
])
def test_get_errors(pair, path):
    status, _ = assert_same_error(pair.ref, pair.t, "GET", path)
    assert status == 404


def test_unknown_resource_error_body(pair):
    status, err = assert_same_error(pair.ref, pair.t, "GET", f"/studies/{ZERO_ID}/series")
    assert status == 404
    assert set(err) == {"HttpError", "HttpStatus", "Message", "Method", "OrthancError",
                        "OrthancStatus", "Uri"}


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/system"), ("POST", "/system"), ("PUT", "/instances"),
    ("DELETE", "/statistics"), ("POST", "/changes"), ("PUT", "/studies"),
    ("POST", f"/studies/{ZERO_ID}/series"), ("DELETE", f"/instances/{ZERO_ID}/tags"),
    ("PUT", f"/studies/{ZERO_ID}"), ("POST", f"/instances/{ZERO_ID}"),
])
def test_wrong_method(pair, method, path):
    status, _ = assert_same_error(pair.ref, pair.t, method, path, body=b"" if method != "DELETE"
                                  else None)
    assert status == 405


# ----------------------------------------------------------------------------------
# Changes


def changes_of(server, path="/changes?since=0&limit=100"):
    return server.get(path)


def assert_changes_match(ref_server, t_server, path):
    ref, t = changes_of(ref_server, path), changes_of(t_server, path)
    assert set(t) == set(ref) == {"Changes", "Done", "Last"}, (ref.keys(), t.keys())
    key = lambda c: (c["ChangeType"], c["ResourceType"], c["ID"], c["Path"])  # noqa: E731
    assert [key(c) for c in t["Changes"]] == [key(c) for c in ref["Changes"]], path
    for c in t["Changes"]:
        assert set(c) == {"ChangeType", "Date", "ID", "Path", "ResourceType", "Seq"}, c
        assert isinstance(c["Seq"], int) and re.fullmatch(r"\d{8}T\d{6}", c["Date"]), c
    seqs = [c["Seq"] for c in t["Changes"]]
    assert seqs == sorted(set(seqs)), seqs
    assert t["Done"] is ref["Done"], (path, ref["Done"], t["Done"])
    if ref["Changes"]:
        assert t["Last"] == seqs[-1], (path, t)
    return ref, t


def test_changes(pair):
    ref, t = assert_changes_match(pair.ref, pair.t, "/changes?since=0&limit=100")
    assert ref["Done"] is True
    assert len(ref["Changes"]) > 10
    last = t["Last"]
    assert_changes_match(pair.ref, pair.t, "/changes")
    # paging: since is a Seq (exclusive), so walk both logs page by page
    ref_since = t_since = 0
    while True:
        ref_page = changes_of(pair.ref, f"/changes?since={ref_since}&limit=3")
        t_page = changes_of(pair.t, f"/changes?since={t_since}&limit=3")
        assert [(c["ChangeType"], c["ID"]) for c in t_page["Changes"]] == [
            (c["ChangeType"], c["ID"]) for c in ref_page["Changes"]]
        assert t_page["Done"] is ref_page["Done"]
        if ref_page["Done"]:
            break
        assert t_page["Last"] == t_page["Changes"][-1]["Seq"]
        ref_since, t_since = ref_page["Last"], t_page["Last"]
    # past the end: empty, Done, Last is the newest Seq
    ref_end = changes_of(pair.ref, "/changes?since=100000")
    t_end = changes_of(pair.t, "/changes?since=100000000")
    assert ref_end["Changes"] == t_end["Changes"] == []
    assert t_end["Done"] is ref_end["Done"] is True
    assert t_end["Last"] == last
    # limit=0: empty, not Done, Last is the newest Seq
    ref0, t0 = changes_of(pair.ref, "/changes?limit=0"), changes_of(pair.t, "/changes?limit=0")
    assert t0["Changes"] == ref0["Changes"] == []
    assert t0["Done"] is ref0["Done"]
    assert t0["Last"] == last


def test_changes_same_sequence_for_same_uploads(fresh, tmp_path):
    """The exact sequence of change types for uploads in a known order, on empty servers."""
    empty_ref, empty_t = changes_of(fresh.ref), changes_of(fresh.t)
    assert empty_t == empty_ref  # {"Changes": [], "Done": true, "Last": 0}
    series = make_series(tmp_path / "gen", 3, study_uid="1.2.826.0.1.3680043.8.498.88",
                         patient="PAT-CHG")
    for f in [DATA / "CT_small.dcm", series[0], series[1], DATA / "MR_small.dcm",
              DATA / "CT_small.dcm"]:
        data = f.read_bytes()
        assert fresh.t.upload(data) == fresh.ref.upload(data)
    rc, out = storescu(SimpleNamespace(aet=fresh.orthanc.aet, port=fresh.orthanc.dicom_port),
                       series[2:])
    assert rc == 0, out
    rc, out = storescu(fresh.ing, series[2:])
    assert rc == 0, out
    ref, t = assert_changes_match(fresh.ref, fresh.t, "/changes?since=0&limit=100")
    assert [c["ChangeType"] for c in ref["Changes"]] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient",
        "NewInstance", "NewSeries", "NewStudy", "NewPatient",
        "NewInstance",
        "NewInstance", "NewSeries", "NewStudy", "NewPatient",
        "NewInstance"]
    assert_changes_match(fresh.ref, fresh.t, "/changes?since=0&limit=5")


def test_changes_emptied_when_the_last_patient_goes(fresh, tmp_path):
    """Deleting the last patient empties the change log and keeps Last; the next
    change follows Last. (While resources remain, Tessera keeps the changes of
    deleted ones and logs "Deleted": test_deleter.py.)"""
    pids = []
    for f in [DATA / "CT_small.dcm", DATA / "MR_small.dcm"]:
        data = f.read_bytes()
        answer = fresh.ref.upload(data)
        assert fresh.t.upload(data) == answer
        pids.append(answer["ParentPatient"])
    s1, _, _ = fresh.ref.req("DELETE", f"/patients/{pids[0]}")
    s2, _, _ = fresh.t.req("DELETE", f"/patients/{pids[0]}")
    assert s1 == s2 == 200
    # one patient left: Tessera's log is kept, with its Deleted change once numbered
    deadline = time.time() + 10
    while fresh.t.get("/changes")["Changes"][-1]["ChangeType"] != "Deleted":
        assert time.time() < deadline, fresh.t.get("/changes")
        time.sleep(0.05)
    last = {s.name: s.get("/changes")["Last"] for s in (fresh.ref, fresh.t)}
    s1, b1, _ = fresh.ref.req("DELETE", f"/patients/{pids[1]}")
    s2, b2, _ = fresh.t.req("DELETE", f"/patients/{pids[1]}")
    assert (s1, json.loads(b1)) == (s2, json.loads(b2)) == (200, {"RemainingAncestor": None})
    for s in (fresh.ref, fresh.t):
        for path in ["/changes", "/changes?since=0&limit=100", "/changes?last",
                     "/changes?since=3&limit=2"]:
            assert s.get(path) == {"Changes": [], "Done": True, "Last": last[s.name]}, (
                s.name, path, s.get(path))
    # the next change follows the last Seq given (a change gets its Seq from a
    # sequencer pass, at most a few ms after its commit: wait for it)
    data = (DATA / "CT_small.dcm").read_bytes()
    assert fresh.t.upload(data) == fresh.ref.upload(data)
    for s in (fresh.ref, fresh.t):
        deadline = time.time() + 10
        while True:
            seqs = [c["Seq"] for c in s.get("/changes")["Changes"]]
            if len(seqs) == 4 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert seqs == list(range(last[s.name] + 1, last[s.name] + 5)), (s.name, seqs)


# ----------------------------------------------------------------------------------
# Revisions: ETag on every read of a metadata or an attachment, If-None-Match


def test_revisions_etag_and_if_none_match(fresh):
    """Every GET of an attachment (its operations, data, size, md5...) and of a
    metadata carries the ETag "<revision>-<md5>"; If-None-Match naming it gets 304,
    a malformed one 400, as in Orthanc 1.10.1 (which reads the revision up to the
    first '-' as an integer, the MD5 after it, the quotes around both optional)."""
    data = (DATA / "CT_small.dcm").read_bytes()
    iid = fresh.ref.upload(data)["ID"]
    assert fresh.t.upload(data)["ID"] == iid
    for server in (fresh.ref, fresh.t):
        for path, body in [(f"/instances/{iid}/attachments/1024", b"hello"),
                           (f"/instances/{iid}/metadata/1024", b"a value")]:
            status, _, _ = server.req("PUT", path, body)
            assert status == 200, (server.name, path)
    paths = [f"/instances/{iid}/attachments/{name}{op}" for name in ("dicom", "1024")
             for op in ("", "/data", "/size", "/md5", "/compressed-data", "/compressed-size",
                        "/compressed-md5", "/is-compressed")]
    paths.append(f"/instances/{iid}/metadata/1024")
    for path in paths:
        s1, plain1, h1 = fresh.ref.req("GET", path)
        s2, plain2, h2 = fresh.t.req("GET", path)
        assert s1 == s2 == 200, (path, s1, s2)
        etag = h1["ETag"]
        assert h2.get("ETag") == etag, (path, etag, h2)
        rev, md5 = etag.strip('"').split("-", 1)
        for inm in [etag, etag.strip('"'), f'"+{rev}-{md5}"', f'"{int(rev) + 1}-{md5}"',
                    f'"{rev}-{md5.upper()}"', f'"{rev}-"', f'{etag}, "1-x"', "garbage", '"0"',
                    "*", f"W/{etag}", f'"x-{md5}"', f'"-1-{md5}"', f'"{rev}-{md5}']:
            s1, b1, h1 = fresh.ref.req("GET", path, headers={"If-None-Match": inm})
            s2, b2, h2 = fresh.t.req("GET", path, headers={"If-None-Match": inm})
            what = (path, inm, s1, b1[:300], s2, b2[:300])
            assert s2 == s1, what
            assert h2.get("ETag") == h1.get("ETag") == etag, what
            if s1 == 304:
                assert b1 == b2 == b"", what
            elif s1 == 400:
                e1, e2 = json.loads(b1), json.loads(b2)
                assert sorted(e2) == sorted(e1), what
                assert {k: v for k, v in e2.items() if k != "Details"} == {
                    k: v for k, v in e1.items() if k != "Details"}, what
                prefix = e1["Details"].split(" but found:")[0]
                assert e2["Details"].startswith(prefix), what
            else:  # the full answer (the lists of operations differ: not compared)
                assert s1 == 200 and (b1, b2) == (plain1, plain2), what
    # lists have no ETag and ignore the header
    for path in [f"/instances/{iid}/attachments", f"/instances/{iid}/metadata?expand"]:
        s1, _, h1 = fresh.ref.req("GET", path, headers={"If-None-Match": "garbage"})
        s2, _, h2 = fresh.t.req("GET", path, headers={"If-None-Match": "garbage"})
        assert s1 == s2 == 200 and "ETag" not in h1 and "ETag" not in h2, (path, h1, h2)
    # a malformed If-Match: the same error as Orthanc's (test_revisions_if_match
    # compares every form)
    path = f"/instances/{iid}/metadata/1024"
    s1, b1, _ = fresh.ref.req("PUT", path, b"x", {"If-Match": "garbage"})
    s2, b2, _ = fresh.t.req("PUT", path, b"x", {"If-Match": "garbage"})
    e1, e2 = json.loads(b1), json.loads(b2)
    assert (s1, e1["OrthancStatus"], e1["Message"]) == (s2, e2["OrthancStatus"], e2["Message"]) \
        == (400, 3, "Parameter out of range"), (e1, e2)


def test_revisions_if_match(fresh):
    """If-Match must give back the whole ETag, as Orthanc 1.10.1 reads it: quotes and
    surrounding spaces optional, the revision an integer up to the first '-', and
    both the revision and the MD5 after it those of the current value. A bare
    revision (quoted or not), a weak ETag, a list or '*' is a 400; a well-formed
    ETag with another revision or MD5 (even the same MD5 in capitals) a 409. Checked
    on metadata and attachments, PUT and DELETE, side by side. Orthanc's own SQLite
    index keeps no revisions (every GET says revision 0, whatever its PUT answered;
    its PostgreSQL index does keep them, as Tessera): each server is given the forms
    built from its own current ETag."""
    data = (DATA / "CT_small.dcm").read_bytes()
    iid = fresh.ref.upload(data)["ID"]
    assert fresh.t.upload(data)["ID"] == iid
    forms = [lambda e, r, m: r, lambda e, r, m: f'"{r}"', lambda e, r, m: f" {e} ",
             lambda e, r, m: e.strip('"'), lambda e, r, m: f"W/{e}",
             lambda e, r, m: f'"{int(r) + 1}-{m}"', lambda e, r, m: f'"{r}-{m.upper()}"',
             lambda e, r, m: f'"{r}-"', lambda e, r, m: f'"{r}-{"0" * 32}"',
             lambda e, r, m: f'"-1-{m}"', lambda e, r, m: f'"+{r}-{m}"',
             lambda e, r, m: f'"{r} -{m}"', lambda e, r, m: f'"{r}-{m}-x"',
             lambda e, r, m: f"{e}, {e}", lambda e, r, m: "*", lambda e, r, m: "",
             lambda e, r, m: "garbage", lambda e, r, m: f'"99999999999-{m}"',
             lambda e, r, m: e]
    for path in (f"/instances/{iid}/metadata/1024", f"/instances/{iid}/attachments/1024"):
        get_path = path + ("/data" if "attachments" in path else "")
        for server in (fresh.ref, fresh.t):
            assert server.req("PUT", path, b"value 0")[0] == 200, (server.name, path)

        def header(server, form):
            etag = server.req("GET", get_path)[2]["ETag"]
            return form(etag, *etag.strip('"').split("-", 1))

        statuses, value = [], b"value 0"
        for n, form in enumerate(forms, 1):
            body = f"value {n}".encode()
            im1, im2 = header(fresh.ref, form), header(fresh.t, form)
            s1, b1, _ = fresh.ref.req("PUT", path, body, {"If-Match": im1})
            s2, b2, _ = fresh.t.req("PUT", path, body, {"If-Match": im2})
            what = (path, im1, im2, s1, b1[:300], s2, b2[:300])
            assert s1 == s2, what
            statuses.append(s1)
            if s1 == 400:
                e1, e2 = json.loads(b1), json.loads(b2)
                assert (e1["OrthancStatus"], e1["Message"]) == (
                    e2["OrthancStatus"], e2["Message"]), what
                assert e2["Details"].split(" but found:")[0] == \
                    e1["Details"].split(" but found:")[0], what
            elif s1 == 409:
                assert json.loads(b2)["OrthancStatus"] == 43, what
            value = body if s1 == 200 else value  # a refused write changes nothing
            assert fresh.t.req("GET", get_path)[1] == value, what
        assert statuses.count(200) == 4 and statuses.count(409) == 7, statuses
        # DELETE: a bare revision is refused (400), another MD5 too (409), the whole
        # ETag deletes
        for form, want in [(forms[0], 400), (forms[1], 400), (forms[8], 409), (forms[-1], 200)]:
            s1 = fresh.ref.req("DELETE", path, None, {"If-Match": header(fresh.ref, form)})[0]
            s2 = fresh.t.req("DELETE", path, None, {"If-Match": header(fresh.t, form)})[0]
            assert s1 == s2 == want, (path, form, s1, s2)


def test_empty_server(fresh):
    for level in LEVELS:
        assert fresh.t.get("/" + level) == fresh.ref.get("/" + level) == []
        assert fresh.t.get(f"/{level}?expand") == []
    ref, t = fresh.ref.get("/statistics"), fresh.t.get("/statistics")
    assert t == ref, diff(ref, t)
