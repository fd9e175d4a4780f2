"""Jobs and modalities (issue 6): the job registry in a real Redis (unix socket,
AOF on), two REST and two tessera-jobs processes, dcmtk's storescp as the
receiving modality, and a live Orthanc 1.10.1 as the reference for the shapes of
the /modalities and /jobs answers.

Differences from Orthanc that these tests accept, and why:
- GET /modalities/{id} lists the operations Tessera serves (configuration, echo,
  store), a subset of Orthanc's list.
- POST /jobs/{id}/{action} on an unknown job or a job in the wrong state: Orthanc
  answers 400 with an empty body; Tessera answers 400 with an error body that says
  why. Only the status is compared.
- An instance named twice in a store request (by itself and within its series) is
  sent once and counted once in InstancesCount; Orthanc sends and counts it twice.
- Permissive store to a modality that is down: Orthanc 1.10.1 answers Success with
  FailedInstancesCount 0 (its permissive mode skips failures that are exceptions
  without counting them); Tessera counts every instance it could not send.
- Job ids, times (CreationTime, CompletionTime, Timestamp, EffectiveRuntime) and
  ErrorDetails (dcmtk's wording of the failure differs from Orthanc's) are not
  compared, only their presence and types.
"""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port
from orthanc import http, orthanc  # noqa: F401  (orthanc is a fixture)
from test_ingest import make_series

TIME_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}$")
JOB_KEYS = {"CompletionTime", "Content", "CreationTime", "EffectiveRuntime", "ErrorCode",
            "ErrorDescription", "ErrorDetails", "ID", "Priority", "Progress", "State",
            "Timestamp", "Type"}


def call(base, method, path, body=None):
    """(status, parsed JSON or raw bytes, headers) of one request to a REST base URL."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    status, data, headers = http(base.url if hasattr(base, "url") else base, method, path, body)
    if data and headers.get("Content-Type", "").startswith("application/json"):
        data = json.loads(data)
    return status, data, headers


def js(resp):
    """The body of a call() answer as JSON when it is JSON text (Orthanc sends its
    error bodies without a Content-Type)."""
    data = resp[1]
    if isinstance(data, bytes) and data.strip():
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, dict) else d


class StoreScp:
    """dcmtk's storescp on a free port, writing each instance to a file named by its
    SOP instance UID (a duplicate overwrites the same file)."""

    def __init__(self, out_dir, aet="STORESCP", sleep_after=0, port=None, extra=()):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.port = port or free_port()
        self.sleep_after = sleep_after
        self.extra = list(extra)
        self.proc = None

    def start(self):
        cmd = ["storescp", "-v", "-aet", self.aet, "-od", str(self.dir), "-uf"]
        if self.sleep_after:
            cmd += ["--sleep-after", str(self.sleep_after)]
        cmd += self.extra
        self.log = open(self.dir.parent / f"storescp-{self.port}.log", "ab")
        self.proc = subprocess.Popen(cmd + [str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            p = subprocess.run(["echoscu", "-aec", self.aet, "127.0.0.1", str(self.port)],
                               capture_output=True, text=True)
            if p.returncode == 0 or "Rejected" in p.stderr + p.stdout:
                return self
            time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def store_requests(self):
        """C-STORE requests received so far (duplicates included)."""
        return (self.dir.parent / f"storescp-{self.port}.log").read_text().count(
            "Received Store Request")

    def received(self):
        """SOP instance UIDs of the files received (names without the modality prefix)."""
        return {p.name.split(".", 1)[1] for p in self.dir.iterdir() if p.is_file()}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.log.close()


@pytest.fixture
def scps(tmp_path):
    started = []

    def make(**kw):
        s = StoreScp(tmp_path / f"scp-{len(started)}", **kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def jobs_cluster(cluster):
    """Redis, one ingest, two REST processes and two jobs processes."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs()
    cluster.start_jobs()
    return cluster


def upload(rest, files):
    ids = []
    for f in files:
        status, body, _ = call(rest, "POST", "/instances", Path(f).read_bytes())
        assert status == 200, body
        ids.append(body)
    return ids


def wait_job(rest, job_id, states, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, job, _ = call(rest, "GET", f"/jobs/{job_id}")
        assert status == 200, job
        if job["State"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['State']} after {timeout} s: {job}")


def sop_uids(files):
    import pydicom
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def assert_job_shape(job):
    assert set(job) == JOB_KEYS or set(job) == JOB_KEYS - {"CompletionTime"}, job
    for k in ("CreationTime", "Timestamp") + (("CompletionTime",) if "CompletionTime" in job else ()):
        assert TIME_RE.match(job[k]), (k, job[k])
    assert isinstance(job["EffectiveRuntime"], (int, float))
    assert isinstance(job["Progress"], int) and 0 <= job["Progress"] <= 100
    assert job["State"] in {"Pending", "Running", "Success", "Failure", "Paused", "Retry"}


# ---- modalities ------------------------------------------------------------------

MODALITY_BODIES = [
    ["STORESCP", "127.0.0.1", 104],
    ["STORESCP", "127.0.0.1", 104, "GE"],
    {"AET": "X2", "Host": "localhost", "Port": 104, "Manufacturer": "GE"},
    {"AET": "X3", "Host": "h", "Port": "105"},
    {"AET": "X4", "Host": "h", "Port": 106, "AllowStore": False},
]

BAD_MODALITY_BODIES = [
    b"garbage",
    {"AET": "X3", "Host": "localhost"},
    {"AET": "X3", "Port": 104},
    {"AET": "X3", "Host": "h", "Port": 70000},
    {"AET": "X3", "Host": "h", "Port": 0},
    ["A", "h", 104, "Bogus"],
    ["A", "h"],
    42,
]


def test_modalities_like_orthanc(jobs_cluster, orthanc):  # noqa: F811
    rest, other = jobs_cluster.rests
    for i, body in enumerate(MODALITY_BODIES):
        a = call(rest, "PUT", f"/modalities/m{i}", body)
        b = call(orthanc, "PUT", f"/modalities/m{i}", body)
        assert a[0] == b[0] == 200, (body, a, b)
        assert a[1] == b[1] == b""
    for body in BAD_MODALITY_BODIES:
        a = call(rest, "PUT", "/modalities/bad", body)
        b = call(orthanc, "PUT", "/modalities/bad", body)
        assert a[0] == b[0], (body, a, b)
        # Orthanc's error body, Details included where Orthanc gives one
        assert js(a) == js(b), (body, a, b)
    # the other REST process sees the same table
    for path in ("/modalities", "/modalities?expand", "/modalities/m2/configuration",
                 "/modalities/m4/configuration"):
        a, b = call(other, "GET", path), call(orthanc, "GET", path)
        assert a[0] == b[0] == 200 and a[1] == b[1], (path, a, b)
    a, b = call(other, "GET", "/modalities/m0"), call(orthanc, "GET", "/modalities/m0")
    assert a[0] == 200 and set(a[1]) <= set(b[1]) and {"echo", "store"} <= set(a[1])
    for path in ("/modalities/nope", "/modalities/nope/configuration"):
        a, b = call(other, "GET", path), call(orthanc, "GET", path)
        assert a[0] == b[0] == 404 and js(a) == js(b), (path, a, b)
    # replacing keeps one entry
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/m1", ["NEW", "10.0.0.1", 11112])[0] == 200
    a, b = call(other, "GET", "/modalities?expand"), call(orthanc, "GET", "/modalities?expand")
    assert a[1] == b[1] and a[1]["m1"]["AET"] == "NEW"
    for name in ("m3", "nope"):
        a, b = call(other, "DELETE", f"/modalities/{name}"), call(orthanc, "DELETE", f"/modalities/{name}")
        assert a[0] == b[0] and js(a) == js(b), (name, a, b)
    assert call(rest, "GET", "/modalities")[1] == call(orthanc, "GET", "/modalities")[1]
    assert jobs_cluster.sql("SELECT count(*) FROM modalities")[0][0] == len(MODALITY_BODIES) - 1


def test_modality_options_kept_like_orthanc(jobs_cluster, orthanc):  # noqa: F811
    """The other fields of Orthanc's object form (AllowFindWorklist, AllowNAction,
    AllowEventReport, AllowStorageCommitment, AllowTranscoding) are stored and echoed
    back as Orthanc 1.10.1 does (they were dropped: GET answered the defaults);
    AllowStorageCommitment is read last, over AllowNAction and AllowEventReport, as
    Orthanc reads it. UseDicomTls is kept too, true as well as false (the associations
    over DICOM TLS are tested in test_dicom_tls_out.py)."""
    rest, other = jobs_cluster.rests
    full = {"AET": "X", "Host": "127.0.0.1", "Port": 104, "UseDicomTls": False,
            "AllowTranscoding": False, "AllowFindWorklist": False, "AllowNAction": False,
            "AllowEventReport": True, "AllowEcho": False, "AllowGet": False}
    bodies = [full,
              {"AET": "X", "Host": "h", "Port": 104, "AllowStorageCommitment": False},
              {"AET": "X", "Host": "h", "Port": 104, "AllowStorageCommitment": False,
               "AllowNAction": True},
              {"AET": "X", "Host": "h", "Port": 104, "AllowStorageCommitment": True,
               "AllowEventReport": False},
              ["X", "h", 104]]
    for body in bodies:
        for t in (rest, orthanc):
            assert call(t, "PUT", "/modalities/m", body)[0] == 200, (body, t)
        for path in ("/modalities/m/configuration", "/modalities?expand"):
            a, b = call(other, "GET", path), call(orthanc, "GET", path)
            assert a[0] == b[0] == 200 and a[1] == b[1], (body, path, a, b)
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/m", full)[0] == 200
    a = call(other, "GET", "/modalities/m/configuration")[1]
    assert (a["AllowTranscoding"], a["AllowFindWorklist"], a["AllowNAction"],
            a["AllowEventReport"], a["UseDicomTls"]) == (False, False, False, True, False), a
    for bad in ({"UseDicomTls": "yes"}, {"AllowTranscoding": 0}, {"AllowFindWorklist": None},
                {"AllowStorageCommitment": "x"}, {"AllowNAction": 1}, {"AllowEventReport": []}):
        b2 = dict(full, **bad)
        a, b = call(rest, "PUT", "/modalities/bad", b2), call(orthanc, "PUT", "/modalities/bad", b2)
        assert a[0] == b[0] == 400 and js(a) == js(b), (bad, a, b)
    tls = dict(full, UseDicomTls=True)
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/tls", tls)[0] == 200
    a, b = (call(t, "GET", "/modalities/tls/configuration") for t in (other, orthanc))
    assert a[:2] == b[:2] and a[1]["UseDicomTls"] is True, (a, b)


def test_modality_store_straight_like_orthanc(jobs_cluster, orthanc, scps, tmp_path):  # noqa: F811
    """POST /modalities/{id}/store-straight: the body goes to the modality with C-STORE
    at once (no job, nothing stored here) and the answer names it, as Orthanc 1.10.1;
    a body that is not DICOM, a modality that is down and an unknown one get
    Orthanc's errors (the text of dcmtk's connection error aside)."""
    rest = jobs_cluster.rests[0]
    scp = scps()
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/m1", [scp.aet, "127.0.0.1", scp.port])[0] == 200
        assert call(t, "PUT", "/modalities/down", ["X", "127.0.0.1", free_port()])[0] == 200
    a, b = call(rest, "GET", "/modalities/m1"), call(orthanc, "GET", "/modalities/m1")
    assert "store-straight" in a[1] and set(a[1]) <= set(b[1]), (a, b)
    files = make_series(tmp_path / "s", 2)
    for f in files:
        data = f.read_bytes()
        a = call(rest, "POST", "/modalities/m1/store-straight", data)
        b = call(orthanc, "POST", "/modalities/m1/store-straight", data)
        assert a[0] == b[0] == 200 and a[1] == b[1], (a, b)
        assert a[1]["SOPInstanceUID"] in scp.received()
    assert scp.store_requests() == 4  # two each
    assert call(rest, "GET", "/instances")[1] == []
    assert jobs_cluster.stored_files() == [] and jobs_cluster.temp_files() == []
    for name, body in (("m1", b"garbage"), ("m1", b""), ("nope", files[0].read_bytes())):
        a = call(rest, "POST", f"/modalities/{name}/store-straight", body)
        b = call(orthanc, "POST", f"/modalities/{name}/store-straight", body)
        assert a[0] == b[0] and js(a) == js(b), (name, body[:10], a, b)
    a = call(rest, "POST", "/modalities/down/store-straight", files[0].read_bytes())
    b = call(orthanc, "POST", "/modalities/down/store-straight", files[0].read_bytes())
    assert a[0] == b[0] == 500 and without(js(a), "Details") == without(js(b), "Details")


def test_modality_local_aet_and_timeout_like_orthanc(jobs_cluster, orthanc, scps):  # noqa: F811
    """PUT /modalities keeps a modality's LocalAet and Timeout (they were answered ""
    and 0 whatever had been sent) and checks them as Orthanc does; the modality's
    LocalAet is then the calling AE title of every association with it, over a
    request's LocalAet too, as in Orthanc 1.10.1. Orthanc accepts a LocalAet of 17
    characters or more, which no peer accepts: Tessera refuses it, as it refuses such
    an AET."""
    rest, other = jobs_cluster.rests
    body = {"AET": "X", "Host": "127.0.0.1", "Port": 104, "LocalAet": "MODLOCAL", "Timeout": 7}
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/m", body)[0] == 200
    for path in ("/modalities/m/configuration", "/modalities?expand"):
        a, b = call(other, "GET", path), call(orthanc, "GET", path)
        assert a[0] == b[0] == 200 and a[1] == b[1], (path, a, b)
    assert a[1]["m"]["LocalAet"] == "MODLOCAL" and a[1]["m"]["Timeout"] == 7
    # the array form, or an object without them, sets none
    for b2 in (["X", "127.0.0.1", 104], {"AET": "X", "Host": "h", "Port": 104, "LocalAet": ""}):
        for t in (rest, orthanc):
            assert call(t, "PUT", "/modalities/m", b2)[0] == 200
        a, b = call(other, "GET", "/modalities/m/configuration"), call(
            orthanc, "GET", "/modalities/m/configuration")
        assert a[1] == b[1] and (a[1]["LocalAet"], a[1]["Timeout"]) == ("", 0), (a, b)
    for bad in ({"LocalAet": None}, {"LocalAet": 3}, {"Timeout": "5"}, {"Timeout": 5.5},
                {"Timeout": -1}):
        b2 = dict(body, **bad)
        a, b = call(rest, "PUT", "/modalities/bad", b2), call(orthanc, "PUT", "/modalities/bad", b2)
        assert a[0] == b[0] == 400 and js(a) == js(b), (bad, a, b)
    long_aet = dict(body, LocalAet="A" * 17)
    assert call(orthanc, "PUT", "/modalities/long", long_aet)[0] == 200
    a = call(rest, "PUT", "/modalities/long", long_aet)
    assert a[0] == 400 and "16 characters" in a[1]["Details"], a
    assert call(rest, "GET", "/modalities/long/configuration")[0] == 404

    # the calling AE title of echo, store and query, as storescp sees it
    scp = scps(extra=("-d",))
    log = scp.dir.parent / f"storescp-{scp.port}.log"

    def calling_aet():
        names = re.findall(r"Calling Application Name: +(\S+)", log.read_text(errors="replace"))
        return names[-1] if names else None
    data = (Path(__file__).parent.parent / "data/dicom/CT_small.dcm").read_bytes()
    iid = call(rest, "POST", "/instances", data)[1]["ID"]
    assert call(orthanc, "POST", "/instances", data)[1]["ID"] == iid
    seen = {}
    for mod_local in ("", "MODLOCAL"):
        config = {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port, "LocalAet": mod_local}
        for route, req in (("echo", {}), ("store", {"Resources": [iid]}),
                           ("store", {"Resources": [iid], "LocalAet": "REQLOCAL"}),
                           ("query", {"Level": "Study", "Query": {}, "LocalAet": "REQLOCAL"}),
                           *((("echo", {"LocalAet": "REQLOCAL"}),) if mod_local else ())):
            for name, t, own in (("orthanc", orthanc, orthanc.aet), ("tessera", rest, "TESSERA")):
                assert call(t, "PUT", "/modalities/scp", config)[0] == 200
                before = log.read_text(errors="replace").count("Calling Application Name")
                answer = call(t, "POST", f"/modalities/scp/{route}", req)
                assert log.read_text(errors="replace").count("Calling Application Name") > before
                aet = calling_aet()
                seen[(name, mod_local, route, json.dumps(req))] = "<own>" if aet == own else aet
                if route == "store":
                    assert answer[0] == 200, answer
                    content_aet = answer[1]["LocalAet"]
                    seen[(name, mod_local, route, json.dumps(req), "Content")] = (
                        "<own>" if content_aet == own else content_aet)
    ref = {k[1:]: v for k, v in seen.items() if k[0] == "orthanc"}
    got = {k[1:]: v for k, v in seen.items() if k[0] == "tessera"}
    assert got == ref, (ref, got)
    # the associations (not the Contents, which show what the request asked for)
    assert {v for k, v in got.items() if k[0] == "MODLOCAL" and len(k) == 3} == {"MODLOCAL"}
    assert got[("", "store", json.dumps({"Resources": [iid], "LocalAet": "REQLOCAL"}))] == \
        "REQLOCAL"


def test_echo_like_orthanc(jobs_cluster, orthanc, scps):  # noqa: F811
    rest = jobs_cluster.rests[1]
    scp = scps()
    down = free_port()
    for t in (rest, orthanc):
        assert call(t, "PUT", "/modalities/up", [scp.aet, "127.0.0.1", scp.port])[0] == 200
        assert call(t, "PUT", "/modalities/down", ["NOBODY", "127.0.0.1", down])[0] == 200
    for body in (b"", b"{}", {"Timeout": 5}):
        a, b = call(rest, "POST", "/modalities/up/echo", body), call(orthanc, "POST", "/modalities/up/echo", body)
        assert a[0] == b[0] == 200 and a[1] == b[1] == {}, (a, b)
    a, b = call(rest, "POST", "/modalities/down/echo", b""), call(orthanc, "POST", "/modalities/down/echo", b"")
    assert a[0] == b[0] == 500, (a, b)
    assert without(js(a), "Details") == without(js(b), "Details")
    assert "Connection refused" in a[1]["Details"] or "refused" in a[1]["Details"].lower(), a[1]
    a, b = call(rest, "POST", "/modalities/nope/echo", b""), call(orthanc, "POST", "/modalities/nope/echo", b"")
    assert a[0] == b[0] == 404 and js(a) == js(b), (a, b)


# ---- store jobs ----------------------------------------------------------------------

def put_modality(rests, name, scp_or_port, aet="STORESCP"):
    port = scp_or_port if isinstance(scp_or_port, int) else scp_or_port.port
    status, _, _ = call(rests[0], "PUT", f"/modalities/{name}", [aet, "127.0.0.1", port])
    assert status == 200


def test_store_synchronous_and_asynchronous(jobs_cluster, scps, tmp_path, orthanc):  # noqa: F811
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 5)
    answers = upload(rest, files)
    study = answers[0]["ParentStudy"]
    scp = scps()
    put_modality(jobs_cluster.rests, "scp", scp)
    # Synchronous (the default): the answer is the job's Content, as Orthanc's
    status, content, _ = call(rest, "POST", "/modalities/scp/store", {"Resources": [study]})
    assert status == 200, content
    assert content == {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 5,
                       "LocalAet": "TESSERA", "ParentResources": [study], "RemoteAet": "STORESCP"}
    assert scp.received() == sop_uids(files)
    # the same answer from Orthanc (its own AET), for the same files
    oscp = scps()
    orthanc.upload_all(files)
    call(orthanc, "PUT", "/modalities/scp", ["STORESCP", "127.0.0.1", oscp.port])
    b = call(orthanc, "POST", "/modalities/scp/store", {"Resources": [study]})
    assert b[0] == 200 and without(b[1], "LocalAet") == without(content, "LocalAet")
    # a bare id (white space around it ignored), as Orthanc accepts it, and a JSON list
    for body in (f" {answers[0]['ID']}\n".encode(), [answers[1]["ID"], answers[2]["ID"]]):
        a, b = call(rest, "POST", "/modalities/scp/store", body), call(orthanc, "POST", "/modalities/scp/store", body)
        assert a[0] == b[0] == 200 and without(a[1], "LocalAet") == without(b[1], "LocalAet"), (a, b)
    # an instance given twice (itself and within its series) is sent once
    a = call(rest, "POST", "/modalities/scp/store", [answers[1]["ID"], answers[2]["ParentSeries"]])
    assert a[0] == 200 and a[1]["InstancesCount"] == 5
    # Asynchronous through one REST process, followed through the other
    status, started, _ = call(rest, "POST", "/modalities/scp/store",
                              {"Resources": [study], "Asynchronous": True})
    assert status == 200 and set(started) == {"ID", "Path"} and started["Path"] == f"/jobs/{started['ID']}"
    job = wait_job(other, started["ID"], {"Success"})
    assert_job_shape(job)
    assert job["Type"] == "DicomModalityStore" and job["Progress"] == 100
    assert job["ErrorCode"] == 0 and job["ErrorDescription"] == "Success" and job["ErrorDetails"] == ""
    assert job["Content"] == content
    ref = call(orthanc, "POST", "/modalities/scp/store", {"Resources": [study], "Synchronous": False})[1]
    ojob = wait_job(orthanc, ref["ID"], {"Success"})
    assert set(ojob) == set(job)
    assert without(job, "ID", "CreationTime", "CompletionTime", "Timestamp", "EffectiveRuntime", "Content") == \
        without(ojob, "ID", "CreationTime", "CompletionTime", "Timestamp", "EffectiveRuntime", "Content")
    # both REST processes list every job, ?expand included
    for r in (rest, other):
        ids = call(r, "GET", "/jobs")[1]
        assert started["ID"] in ids and len(ids) == 5 and ids == sorted(ids)
        expanded = call(r, "GET", "/jobs?expand")[1]
        assert [j["ID"] for j in expanded] == ids
        assert all(j["State"] == "Success" for j in expanded)


def test_bad_input_like_orthanc(jobs_cluster, scps, tmp_path, orthanc):  # noqa: F811
    rest = jobs_cluster.rests[1]
    answers = upload(rest, make_series(tmp_path / "s", 1))
    orthanc.upload_all(make_series(tmp_path / "s", 1))
    scp = scps()
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/scp", ["STORESCP", "127.0.0.1", scp.port])
    unknown_id = "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917a0"
    cases = [
        ("/modalities/nope/store", {"Resources": [answers[0]["ID"]]}),
        ("/modalities/scp/store", b"garbage"),
        ("/modalities/scp/store", b"{}"),
        ("/modalities/scp/store", {"Resources": "x"}),
        ("/modalities/scp/store", {"Resources": ["x"], "Asynchronous": True}),
        ("/modalities/scp/store", {"Resources": [unknown_id]}),
        ("/modalities/scp/store", {"Resources": [answers[0]["ID"], unknown_id]}),
    ]
    for path, body in cases:
        a, b = call(rest, "POST", path, body), call(orthanc, "POST", path, body)
        assert a[0] == b[0] and a[0] in (400, 404), (path, body, a, b)
        assert js(a) == js(b), (path, body, a, b)
    # unknown job ids
    for path, method in (("/jobs/nope", "GET"), ("/jobs/0c2056b2-6bec-4af7-8fa9-6590a7c5d63a", "GET")):
        a, b = call(rest, method, path), call(orthanc, method, path)
        assert a[0] == b[0] == 404 and a[1] == b[1] == b"", (a, b)
    for action in ("cancel", "pause", "resume", "resubmit"):
        path = f"/jobs/0c2056b2-6bec-4af7-8fa9-6590a7c5d63a/{action}"
        a, b = call(rest, "POST", path, b""), call(orthanc, "POST", path, b"")
        assert a[0] == b[0] == 400, (a, b)
        assert "unknown job" in a[1]["Details"]
    # a finished job: resume and resubmit refused, cancel and pause ignored (Orthanc's rules)
    status, job, _ = call(rest, "POST", "/modalities/scp/store",
                          {"Resources": [answers[0]["ID"]], "Asynchronous": True})
    wait_job(rest, job["ID"], {"Success"})
    for action, expected in (("resume", 400), ("resubmit", 400), ("cancel", 200), ("pause", 200)):
        a = call(rest, "POST", f"/jobs/{job['ID']}/{action}", b"")
        assert a[0] == expected, (action, a)
        if expected == 200:
            assert a[1] == {}
    assert call(rest, "GET", f"/jobs/{job['ID']}")[1]["State"] == "Success"
    a = call(rest, "GET", f"/jobs/{job['ID']}/nope")
    assert a[0] == 404 and a[1]["Details"] == "Job has no such output: nope"


def test_modality_down_then_resubmit(jobs_cluster, scps, tmp_path, orthanc):  # noqa: F811
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 3)
    answers = upload(rest, files)
    orthanc.upload_all(files)
    port = free_port()
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/down", ["STORESCP", "127.0.0.1", port])
    series = answers[0]["ParentSeries"]
    # Synchronous: Orthanc's error for a peer that is down
    a, b = (call(t, "POST", "/modalities/down/store", {"Resources": [series]}) for t in (rest, orthanc))
    assert a[0] == b[0] == 500
    assert without(js(a), "Details") == without(js(b), "Details")
    assert "refused" in js(a)["Details"].lower()
    # the failed job's fields, beside Orthanc's
    job_id = [j for j in call(other, "GET", "/jobs?expand")[1] if j["State"] == "Failure"][0]["ID"]
    job = call(other, "GET", f"/jobs/{job_id}")[1]
    ojob = [j for j in call(orthanc, "GET", "/jobs?expand")[1] if j["State"] == "Failure"][0]
    assert_job_shape(job)
    assert set(job) == set(ojob)
    for k in ("State", "ErrorCode", "ErrorDescription", "Type", "Progress", "Priority"):
        assert job[k] == ojob[k], k
    assert without(job["Content"], "LocalAet") == without(ojob["Content"], "LocalAet")
    assert job["ErrorDetails"]
    # the modality comes up: resubmit through the other REST process works
    scp = scps(port=port)
    a = call(other, "POST", f"/jobs/{job_id}/resubmit", b"")
    assert a[0] == 200 and a[1] == {}
    job = wait_job(rest, job_id, {"Success", "Failure"})
    assert job["State"] == "Success" and job["ErrorCode"] == 0 and "CompletionTime" in job
    assert scp.received() == sop_uids(files)


# ---- control, take-over, Redis restarts -------------------------------------------------

def running_owner(cluster, job_id):
    """The tessera-jobs process whose worker holds the job's lease."""
    owner = cluster.redis.cli("GET", f"tessera:job:{job_id}:lease")
    assert owner, "no lease"
    pid = int(owner.split("-")[-2])
    procs = [j for j in cluster.jobs if j.proc.pid == pid]
    assert procs, (owner, [j.proc.pid for j in cluster.jobs])
    return procs[0]


def test_followed_paused_resumed_canceled_through_the_other_rest(jobs_cluster, scps, tmp_path):
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 12)
    answers = upload(rest, files)
    scp = scps(sleep_after=1)  # one instance a second: a long job
    put_modality(jobs_cluster.rests, "slow", scp)
    status, started, _ = call(rest, "POST", "/modalities/slow/store",
                              {"Resources": [answers[0]["ParentSeries"]], "Asynchronous": True})
    assert status == 200
    job_id = started["ID"]
    assert job_id in call(other, "GET", "/jobs")[1]
    job = wait_job(other, job_id, {"Running"}, timeout=10)
    deadline = time.time() + 20
    while job["Progress"] == 0 and time.time() < deadline:
        time.sleep(0.2)
        job = call(other, "GET", f"/jobs/{job_id}")[1]
    assert 0 < job["Progress"] < 100, job
    # pause through the other process: the worker lets it go within about a second
    assert call(other, "POST", f"/jobs/{job_id}/pause", b"")[:2] == (200, {})
    assert call(rest, "GET", f"/jobs/{job_id}")[1]["State"] == "Paused"
    time.sleep(3)  # the chunk on the wire ends (one instance a second)
    assert jobs_cluster.redis.cli("EXISTS", f"tessera:job:{job_id}:lease") == "0"
    paused = len(scp.received())
    time.sleep(2)
    assert len(scp.received()) == paused, "a paused job went on sending"
    assert call(rest, "GET", f"/jobs/{job_id}")[1]["State"] == "Paused"
    # resume: it goes on where it stopped
    assert call(rest, "POST", f"/jobs/{job_id}/resume", b"")[:2] == (200, {})
    wait_job(other, job_id, {"Running"}, timeout=10)
    time.sleep(1.5)
    # cancel through the other process
    t0 = time.time()
    assert call(other, "POST", f"/jobs/{job_id}/cancel", b"")[:2] == (200, {})
    job = call(rest, "GET", f"/jobs/{job_id}")[1]
    assert job["State"] == "Failure" and job["ErrorCode"] == 37
    assert job["ErrorDescription"] == "Canceled job" and "CompletionTime" in job
    while jobs_cluster.redis.cli("EXISTS", f"tessera:job:{job_id}:lease") != "0":
        assert time.time() - t0 < 5, "the worker did not let the canceled job go"
        time.sleep(0.1)
    canceled_after = len(scp.received())
    assert canceled_after < len(files)
    # resubmit: only what was not confirmed is sent
    assert call(rest, "POST", f"/jobs/{job_id}/resubmit", b"")[:2] == (200, {})
    job = wait_job(other, job_id, {"Success", "Failure"}, timeout=60)
    assert job["State"] == "Success", job
    assert scp.received() == sop_uids(files)
    # what was confirmed before the pause and the cancel was not sent again: at most
    # the instance on the wire when each was noticed
    assert len(files) <= scp.store_requests() <= len(files) + 2, scp.store_requests()


def test_kill_9_worker_the_other_finishes(jobs_cluster, scps, tmp_path):
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 10)
    answers = upload(rest, files)
    scp = scps(sleep_after=1)
    put_modality(jobs_cluster.rests, "slow", scp)
    status, started, _ = call(rest, "POST", "/modalities/slow/store",
                              {"Resources": [answers[0]["ParentStudy"]], "Asynchronous": True})
    job_id = started["ID"]
    wait_job(other, job_id, {"Running"}, timeout=10)
    time.sleep(2.5)
    victim = running_owner(jobs_cluster, job_id)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_at = time.time()
    job = wait_job(other, job_id, {"Success", "Failure"}, timeout=90)
    assert job["State"] == "Success", job
    survivor = [j for j in jobs_cluster.jobs if j is not victim][0]
    assert f"job={job_id}" in survivor.read_log() and "taken_over=1" in survivor.read_log()
    assert scp.received() == sop_uids(files), "an instance was lost"
    print(f"C-STORE requests: {scp.store_requests()} for {len(files)} instances")
    print(f"taken over and finished {time.time() - killed_at:.1f} s after kill -9")
    jobs_cluster.jobs.remove(victim)  # its log holds no sanitizer report to check


def test_redis_restart_during_a_job(jobs_cluster, scps, tmp_path):
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 8)
    answers = upload(rest, files)
    scp = scps(sleep_after=1)
    put_modality(jobs_cluster.rests, "slow", scp)
    # a finished job and a running one
    done = call(rest, "POST", "/modalities/slow/store", {"Resources": [answers[0]["ID"]]})
    assert done[0] == 200
    status, started, _ = call(rest, "POST", "/modalities/slow/store",
                              {"Resources": [answers[0]["ParentSeries"]], "Asynchronous": True})
    job_id = started["ID"]
    wait_job(other, job_id, {"Running"}, timeout=10)
    before = {j["ID"]: j for j in call(other, "GET", "/jobs?expand")[1]}
    time.sleep(1.5)
    jobs_cluster.redis.stop()
    a = call(rest, "GET", "/jobs")
    assert a[0] == 503, a  # the registry is unreachable: said so, not an empty list
    assert http(jobs_cluster.jobs[0].url, "GET", "/health")[0] == 503
    time.sleep(1)
    jobs_cluster.redis.start()
    assert http(jobs_cluster.jobs[0].url, "GET", "/health")[0] == 200
    after = {j["ID"]: j for j in call(other, "GET", "/jobs?expand")[1]}
    assert set(after) == set(before)
    finished = [i for i, j in before.items() if j["State"] == "Success"][0]
    assert without(after[finished], "Timestamp") == without(before[finished], "Timestamp")
    job = wait_job(rest, job_id, {"Success", "Failure"}, timeout=90)
    assert job["State"] == "Success", job
    assert scp.received() == sop_uids(files)


def test_history_is_trimmed(cluster, tmp_path):
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, TESSERA_JOBS_HISTORY=2)
    cluster.start_jobs(TESSERA_JOBS_HISTORY=2)
    answers = upload(rest, make_series(tmp_path / "s", 1))
    call(rest, "PUT", "/modalities/down", ["X", "127.0.0.1", free_port()])
    for _ in range(4):
        a = call(rest, "POST", "/modalities/down/store", [answers[0]["ID"]])
        assert a[0] == 500
    jobs = call(rest, "GET", "/jobs?expand")[1]
    assert len(jobs) == 2 and all(j["State"] == "Failure" for j in jobs)
    assert redis.cli("ZCARD", "tessera:jobs:all") == "2"
    assert redis.cli("KEYS", "tessera:job:*").count("\n") + 1 == 2


def test_sigterm_hands_the_job_over_at_once(cluster, scps, tmp_path):
    """A jobs process asked to stop puts its running job back in the queue: the
    other process goes on with it without waiting for the lease (30 s here)."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs(TESSERA_JOBS_LEASE=30)
    cluster.start_jobs(TESSERA_JOBS_LEASE=30)
    files = make_series(tmp_path / "s", 8)
    answers = upload(rest, files)
    scp = scps(sleep_after=1)
    put_modality([rest], "slow", scp)
    started = call(rest, "POST", "/modalities/slow/store",
                   {"Resources": [answers[0]["ParentSeries"]], "Asynchronous": True})[1]
    job_id = started["ID"]
    wait_job(rest, job_id, {"Running"}, timeout=10)
    time.sleep(2)
    leaving = running_owner(cluster, job_id)
    t0 = time.time()
    assert leaving.stop() == 0
    survivor = [j for j in cluster.jobs if j is not leaving][0]
    deadline = time.time() + 10
    while f"job started\" job={job_id}" not in survivor.read_log():
        assert time.time() < deadline, "the other process did not go on with the job"
        time.sleep(0.1)
    print(f"handed over {time.time() - t0:.1f} s after SIGTERM")
    job = wait_job(rest, job_id, {"Success", "Failure"}, timeout=60)
    assert job["State"] == "Success", job
    assert scp.received() == sop_uids(files)
    assert "job requeued for another worker" in leaving.read_log()


def test_permissive_counts_failures_like_orthanc(jobs_cluster, scps, tmp_path, orthanc):  # noqa: F811
    rest = jobs_cluster.rests[0]
    files = make_series(tmp_path / "s", 3)
    answers = upload(rest, files)
    orthanc.upload_all(files)
    port = free_port()
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/down", ["STORESCP", "127.0.0.1", port])
    body = {"Resources": [answers[0]["ParentSeries"]], "Permissive": True}
    a, b = call(rest, "POST", "/modalities/down/store", body), call(orthanc, "POST", "/modalities/down/store", body)
    assert a[0] == b[0], (a, b)
    assert without(js(a), "LocalAet", "FailedInstancesCount") == \
        without(js(b), "LocalAet", "FailedInstancesCount"), (a, b)
    assert js(a)["FailedInstancesCount"] == 3
    job = call(rest, "GET", "/jobs?expand")[1][0]
    assert job["State"] == "Success" and job["Content"]["FailedInstancesCount"] == 3


def test_modality_that_refuses(jobs_cluster, scps, tmp_path, orthanc):  # noqa: F811
    """A modality that refuses the association: the job fails with Orthanc's fields."""
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 2)
    answers = upload(rest, files)
    orthanc.upload_all(files)
    scp = scps(extra=["--refuse"])
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/refuses", ["STORESCP", "127.0.0.1", scp.port])
    body = {"Resources": [answers[0]["ParentStudy"]]}
    a, b = (call(t, "POST", "/modalities/refuses/store", body) for t in (rest, orthanc))
    assert a[0] == b[0] == 500, (a, b)
    assert without(js(a), "Details") == without(js(b), "Details")
    assert "rejected" in js(a)["Details"], js(a)
    job = call(other, "GET", "/jobs?expand")[1][0]
    assert (job["State"], job["ErrorCode"], job["ErrorDescription"]) == \
        ("Failure", 9, "Error in the network protocol")
    assert call(other, "POST", "/modalities/refuses/echo", b"")[0] == 500


# ---- peers ----------------------------------------------------------------------------

def test_peers_like_orthanc(jobs_cluster, orthanc, tmp_path):  # noqa: F811
    """Tessera and a reference Orthanc both use the `orthanc` fixture as their peer."""
    from orthanc import Orthanc
    rest, other = jobs_cluster.rests
    target = orthanc
    ref = Orthanc(tmp_path / "ref", aet="REF").start()
    try:
        down = f"http://127.0.0.1:{free_port()}"
        bodies = {"p0": [target.url], "p1": [target.url, "user", "pw"],
                  "p2": {"Url": target.url + "/", "Username": "u", "Password": "secret"},
                  "down": {"Url": down}}
        for name, body in bodies.items():
            a, b = call(rest, "PUT", f"/peers/{name}", body), call(ref, "PUT", f"/peers/{name}", body)
            assert a[0] == b[0] == 200 and a[1] == b[1] == b"", (name, a, b)
        a, b = call(rest, "PUT", "/peers/bad", {"Username": "u"}), call(ref, "PUT", "/peers/bad", {"Username": "u"})
        assert a[0] == b[0] == 400 and js(a) == js(b), (a, b)
        for path in ("/peers", "/peers?expand", "/peers/p1/configuration", "/peers/nope",
                     "/peers/nope/configuration", "/peers/nope/system", "/peers/p0/system",
                     "/peers/down/system"):
            a, b = call(other, "GET", path), call(ref, "GET", path)
            assert a[0] == b[0] and js(a) == js(b), (path, a, b)
        assert "secret" not in json.dumps(call(other, "GET", "/peers?expand")[1])
        a, b = call(other, "GET", "/peers/p0"), call(ref, "GET", "/peers/p0")
        assert a[0] == 200 and set(a[1]) <= set(b[1]) and "store" in a[1]

        files = make_series(tmp_path / "s", 4)
        answers = upload(rest, files)
        ref.upload_all(files)
        study = answers[0]["ParentStudy"]
        for body in ({"Resources": [study]}, [answers[0]["ID"]]):
            a, b = call(rest, "POST", "/peers/p2/store", body), call(ref, "POST", "/peers/p2/store", body)
            assert a[0] == b[0] == 200 and a[1] == b[1], (body, a, b)
        assert len(call(target, "GET", "/instances")[1]) == 4
        started = call(other, "POST", "/peers/p0/store", {"Resources": [study], "Asynchronous": True})[1]
        job = wait_job(rest, started["ID"], {"Success", "Failure"})
        ostarted = call(ref, "POST", "/peers/p0/store", {"Resources": [study], "Asynchronous": True})[1]
        ojob = wait_job(ref, ostarted["ID"], {"Success", "Failure"})
        assert set(job) == set(ojob) and job["Content"] == ojob["Content"]
        for k in ("State", "ErrorCode", "ErrorDescription", "Type", "Progress"):
            assert job[k] == ojob[k], k
        for path, body in (("/peers/down/store", {"Resources": [study]}),
                           ("/peers/nope/store", {"Resources": [study]}),
                           ("/peers/p0/store", {"Resources": ["x"]})):
            a, b = call(rest, "POST", path, body), call(ref, "POST", path, body)
            assert a[0] == b[0] and js(a) == js(b), (path, a, b)
        for name in ("p1", "nope"):
            a, b = call(other, "DELETE", f"/peers/{name}"), call(ref, "DELETE", f"/peers/{name}")
            assert a[0] == b[0] and js(a) == js(b), (name, a, b)
        assert call(rest, "GET", "/peers")[1] == call(ref, "GET", "/peers")[1]
    finally:
        ref.stop()


def test_peer_store_straight_like_orthanc(jobs_cluster, orthanc, tmp_path):  # noqa: F811
    """POST /peers/{id}/store-straight (issue 16's small routes): the body goes to the
    peer's POST /instances at once and its answer is the answer; a body the peer
    refuses, a peer that is down and an unknown peer get Orthanc 1.10.1's errors."""
    from orthanc import Orthanc
    rest = jobs_cluster.rests[0]
    ref = Orthanc(tmp_path / "ref", aet="REF").start()
    try:
        down = f"http://127.0.0.1:{free_port()}"
        for t in (rest, ref):
            assert call(t, "PUT", "/peers/p0", [orthanc.url])[0] == 200
            assert call(t, "PUT", "/peers/down", [down])[0] == 200
        a, b = call(rest, "GET", "/peers/p0"), call(ref, "GET", "/peers/p0")
        assert a[1] == b[1], (a, b)
        data = make_series(tmp_path / "s", 1)[0].read_bytes()
        a = call(rest, "POST", "/peers/p0/store-straight", data)
        b = call(ref, "POST", "/peers/p0/store-straight", data)
        assert a[0] == b[0] == 200, (a, b)
        assert (a[1]["Status"], b[1]["Status"]) == ("Success", "AlreadyStored")
        assert without(a[1], "Status") == without(b[1], "Status")
        assert call(orthanc, "GET", "/instances")[1] == [a[1]["ID"]]
        assert call(rest, "GET", "/instances")[1] == []  # nothing stored on the way
        for peer, body in (("p0", data), ("p0", b"garbage"), ("p0", b""), ("down", data),
                           ("nope", data)):
            a = call(rest, "POST", f"/peers/{peer}/store-straight", body)
            b = call(ref, "POST", f"/peers/{peer}/store-straight", body)
            assert a[0] == b[0] and js(a) == js(b), (peer, body[:10], a, b)
        a, b = call(rest, "GET", "/peers/p0/store-straight"), call(ref, "GET", "/peers/p0/store-straight")
        assert a[0] == b[0] == 405 and a[2].get("Allow") == b[2].get("Allow") == "POST"
    finally:
        ref.stop()


def test_peer_down_then_resubmit(jobs_cluster, tmp_path):
    from orthanc import Orthanc
    rest, other = jobs_cluster.rests
    files = make_series(tmp_path / "s", 5)
    answers = upload(rest, files)
    port = free_port()
    call(rest, "PUT", "/peers/later", [f"http://127.0.0.1:{port}"])
    a = call(rest, "POST", "/peers/later/store", {"Resources": [answers[0]["ParentSeries"]]})
    assert a[0] == 500 and js(a)["OrthancStatus"] == 9, a
    assert js(a)["Details"] == "libCURL error: Couldn't connect to server"
    job = call(other, "GET", "/jobs?expand")[1][0]
    assert (job["State"], job["ErrorCode"], job["Type"]) == ("Failure", 9, "OrthancPeerStore")
    peer = Orthanc(tmp_path / "peer", aet="PEER")
    peer.http_port, peer.url = port, f"http://127.0.0.1:{port}"
    peer.config["HttpPort"] = port
    peer.start()
    try:
        assert call(other, "POST", f"/jobs/{job['ID']}/resubmit", b"")[:2] == (200, {})
        job = wait_job(rest, job["ID"], {"Success", "Failure"})
        assert job["State"] == "Success", job
        assert sorted(call(peer, "GET", "/instances")[1]) == sorted(x["ID"] for x in answers)
    finally:
        peer.stop()


def test_synchronous_store_without_any_jobs_process(cluster, scps, tmp_path):
    """No tessera-jobs process: a synchronous call says so instead of waiting forever,
    the job stays queued, and the first jobs process to start runs it."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    files = make_series(tmp_path / "s", 2)
    answers = upload(rest, files)
    scp = scps()
    put_modality([rest], "scp", scp)
    t0 = time.time()
    a = call(rest, "POST", "/modalities/scp/store", [answers[0]["ID"], answers[1]["ID"]])
    assert a[0] == 503 and "no tessera-jobs process is running" in a[1]["Details"], a
    assert time.time() - t0 < 15
    job = call(rest, "GET", "/jobs?expand")[1][0]
    assert job["State"] == "Pending"
    cluster.start_jobs()
    assert wait_job(rest, job["ID"], {"Success", "Failure"})["State"] == "Success"
    assert scp.received() == sop_uids(files)
