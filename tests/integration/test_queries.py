"""Query/retrieve as an SCU (issue 6): POST /modalities/{id}/query, /queries/...,
retrieve and POST /modalities/{id}/move as DicomMoveScu jobs.

The remote modality is a second Tessera: its own database, storage, ingest
(C-STORE) and query service (C-FIND/C-MOVE SCP, AE title REMOTE) whose modalities
table names the local Tessera (TESSERA) and the reference Orthanc 1.10.1
(ORTHANC) as move destinations. The local Tessera (two REST processes, Redis, a
jobs process) and the reference Orthanc query the same remote, and their answers
are compared.

Differences from Orthanc 1.10.1 that these tests accept, and why:
- GET /queries/{id}/answers/{n} of a patient lists "query-study", as Orthanc
  1.10.1 does, but the route is query-studies (as in Orthanc).
- POST /modalities/{id}/move is a DicomMoveScu job: synchronous by default with
  Orthanc's answers ({} or its error body), and "Asynchronous": true answers
  {"ID", "Path"} (Orthanc 1.10.1 ignores Asynchronous there and moves within the
  request).
- A retrieve whose body is JSON but no object: a JSON string is the target AE
  title, anything else 400; Orthanc 1.10.1 answers 500 "Internal error" to both.
- Content-Type of text answers (level, modality, DELETE) says charset=utf-8.
"""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Cluster, free_port, storescu
from orthanc import orthanc  # noqa: F401  (fixture)
from test_ingest import make_series
from test_jobs import call, js, upload, wait_job, without

STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.3.4.5"


class Remote:
    """A second Tessera: ingest (to fill it) and query (its Q/R SCP, AE REMOTE)."""

    def __init__(self, postgres, base):
        base.mkdir()
        self.cluster = Cluster(postgres, base)
        self.ingest = self.cluster.start_ingest(TESSERA_DICOM_AET="REMOTE")
        self.query = self.cluster.start_query(TESSERA_DICOM_AET="REMOTE")
        self.aet = "REMOTE"
        self.port = self.query.port

    def add_destination(self, name, aet, port):
        self.cluster.sql(
            "INSERT INTO modalities (name, aet, host, port) VALUES (%s, %s, '127.0.0.1', %s)",
            (name, aet, port))

    def stop(self):
        self.cluster.stop()


@pytest.fixture
def qr(cluster, postgres, tmp_path):
    """The local Tessera (Redis, one ingest, two REST, one jobs process) and a
    remote Tessera holding two studies (3 + 2 instances)."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs()
    remote = Remote(postgres, tmp_path / "remote")
    files = make_series(tmp_path / "a", 3) + make_series(tmp_path / "b", 2, study_uid=STUDY_B,
                                                          patient="PAT-2")
    rc, out = storescu(remote.ingest, files)
    assert rc == 0, out
    remote.add_destination("tessera", "TESSERA", ing.port)
    for rest in cluster.rests[:1]:
        assert call(rest, "PUT", "/modalities/remote", ["REMOTE", "127.0.0.1", remote.port])[0] == 200
    cluster.remote = remote
    cluster.remote_files = files
    yield cluster
    remote.stop()


def dump(*what):
    """What a failed comparison shows (pytest cuts long dicts)."""
    return "\n" + "\n".join(json.dumps(w, sort_keys=True) for w in what)


def with_ref(qr, orthanc):  # noqa: F811
    """The reference Orthanc knows the same remote, which may move to it."""
    qr.remote.add_destination("orthanc", orthanc.aet, orthanc.dicom_port)
    assert call(orthanc, "PUT", "/modalities/remote", ["REMOTE", "127.0.0.1", qr.remote.port])[0] == 200


def test_query_study_and_series_like_orthanc(qr, orthanc):  # noqa: F811
    """A query created on one REST process is read on the other; every route's answer
    is the reference's."""
    rest, other = qr.rests
    with_ref(qr, orthanc)
    for body in ({"Level": "Study", "Query": {"PatientName": "", "StudyDate": "", "ModalitiesInStudy": ""}},
                 {"Level": "Series", "Query": {"StudyInstanceUID": STUDY_B, "Modality": "", "SeriesDescription": ""}},
                 {"Level": "study", "Query": {"0010,0010": "DOE*", "SeriesDescription": "x"}},
                 {"Level": "Study", "Query": {"SeriesDescription": "x"}, "Normalize": False},
                 # (0010,1000): dcmtk 3.6.7's dictionary names it RETIRED_OtherPatientIDs
                 # (so neither system accepts "OtherPatientIDs" as a key), Orthanc's
                 # answers name it OtherPatientIDs
                 {"Level": "Patient", "Query": {"0010,1000": ""}},
                 {"Level": "Instance", "Query": {"StudyInstanceUID": STUDY_A}}):
        a, b = call(rest, "POST", "/modalities/remote/query", body), call(orthanc, "POST", "/modalities/remote/query", body)
        assert a[0] == b[0] == 200, (body, a, b)
        assert set(a[1]) == {"ID", "Path"} and a[1]["Path"] == "/queries/" + a[1]["ID"]
        qa, qb = a[1]["Path"], b[1]["Path"]
        for sub in ("", "/answers", "/answers?expand", "/answers?expand&simplify",
                    "/answers?expand&short", "/answers?full", "/level", "/modality", "/query",
                    "/query?simplify", "/query?short"):
            x, y = call(other, "GET", qa + sub), call(orthanc, "GET", qb + sub)
            assert x[0] == y[0] == 200 and x[1] == y[1], dump(body, sub, x[1], y[1])
        n = len(call(other, "GET", qa + "/answers")[1])
        assert n == {"Study": 2, "Series": 1, "study": 2, "Patient": 2, "Instance": 3}.get(
            body["Level"], 0) or body.get("Normalize") is False
        for i in range(n):
            for sub in ("/content", "/content?simplify", "/content?short", "/content?full"):
                x = call(other, "GET", f"{qa}/answers/{i}{sub}")
                y = call(orthanc, "GET", f"{qb}/answers/{i}{sub}")
                assert x[0] == y[0] == 200 and x[1] == y[1], (body, i, sub, x, y)
                if body["Level"] == "Patient" and sub == "/content?simplify":
                    assert "OtherPatientIDs" in x[1], x
            x, y = call(other, "GET", f"{qa}/answers/{i}"), call(orthanc, "GET", f"{qb}/answers/{i}")
            assert x[0] == y[0] == 200 and x[1] == y[1], (x, y)
        for sub in (f"/answers/{n}/content", "/answers/x/content", "/answers/-1/content",
                    f"/answers/{n}"):
            x, y = call(other, "GET", qa + sub), call(orthanc, "GET", qb + sub)
            assert x[0] == y[0] == 400 and without(js(x), "Uri") == without(js(y), "Uri"), (sub, x, y)
    # both processes list the same queries, sorted
    ids = call(rest, "GET", "/queries")[1]
    assert ids == sorted(ids) and len(ids) == 6 and call(other, "GET", "/queries")[1] == ids
    assert len(ids) == len(call(orthanc, "GET", "/queries")[1])
    # sub-queries of an answer, one level down, from the other process
    pa = call(rest, "POST", "/modalities/remote/query", {"Level": "Patient", "Query": {"PatientID": "PAT-2"}})[1]["Path"]
    pb = call(orthanc, "POST", "/modalities/remote/query", {"Level": "Patient", "Query": {"PatientID": "PAT-2"}})[1]["Path"]
    for sub, body in (("/answers/0/query-studies", {}), ("/answers/0/query-series", {"Query": {"Modality": "CT"}}),
                      ("/answers/0/query-instances", {"Query": {"InstanceNumber": ""}})):
        x, y = call(other, "POST", pa + sub, body), call(orthanc, "POST", pb + sub, body)
        assert x[0] == y[0] == 200, (x, y)
        for what in ("/query", "/answers?expand", "/level", "/modality"):
            x2, y2 = call(rest, "GET", x[1]["Path"] + what), call(orthanc, "GET", y[1]["Path"] + what)
            assert x2[0] == y2[0] == 200 and x2[1] == y2[1], dump(sub, what, x2[1], y2[1])
    for sub, body in (("/answers/0/query-series", b""), ("/answers/0/query-series", b"garbage"),
                      ("/answers/0/query-instances", {"Query": []}), ("/answers/5/query-instances", {}),
                      ("/answers/x/query-instances", {})):
        x, y = call(other, "POST", pa + sub, body), call(orthanc, "POST", pb + sub, body)
        assert x[0] == y[0] == 400 and without(js(x), "Uri") == without(js(y), "Uri"), (sub, x, y)
    # a study answer has no studies below it (qa, qb: the last queries, of instances)
    x = call(other, "POST", qa + "/answers/0/query-studies", {})
    y = call(orthanc, "POST", qb + "/answers/0/query-studies", {})
    assert x[0] == y[0] == 404 and without(js(x), "Uri") == without(js(y), "Uri"), (x, y)
    ids = call(rest, "GET", "/queries")[1]
    # unknown queries, and DELETE (of an unknown one too) as Orthanc
    for method, path in (("GET", "/queries/nope"), ("GET", "/queries/nope/answers"),
                         ("GET", "/queries/nope/level"), ("GET", "/queries/nope/answers/0/content"),
                         ("POST", "/queries/nope/retrieve"), ("DELETE", "/queries/nope")):
        x, y = call(other, method, path, b"" if method == "POST" else None), call(orthanc, method, path, b"" if method == "POST" else None)
        assert x[0] == y[0] and js(x) == js(y), (path, x, y)
    assert call(other, "DELETE", "/queries/" + ids[0])[:2] == (200, b"")
    assert call(rest, "GET", "/queries/" + ids[0])[0] == 404
    assert call(rest, "GET", "/queries")[1] == ids[1:]
    assert qr.redis.cli("ZCARD", "tessera:queries") == str(len(ids) - 1)
    assert 0 < int(qr.redis.cli("PTTL", "tessera:query:" + ids[1])) <= 3600 * 1000


BAD_QUERY_BODIES = [b"garbage", b"", b"[]", {}, {"Level": 3}, {"Level": "Bogus"},
                    {"Level": "STUDY", "Query": []}, {"Level": "Study", "Normalize": 1},
                    {"Level": "Study", "Query": {"Bogus": "x"}},
                    {"Level": "Study", "Query": {"PatientName": 3}},
                    {"Level": "Study", "Timeout": "x"}]


def test_query_errors_like_orthanc(qr, orthanc):  # noqa: F811
    rest = qr.rests[1]
    with_ref(qr, orthanc)
    for body in BAD_QUERY_BODIES:
        a, b = call(rest, "POST", "/modalities/remote/query", body), call(orthanc, "POST", "/modalities/remote/query", body)
        assert a[0] == b[0] == 400 and js(a) == js(b), (body, a, b)
    a, b = (call(t, "POST", "/modalities/nope/query", {"Level": "Study"}) for t in (rest, orthanc))
    assert a[0] == b[0] == 404 and js(a) == js(b), (a, b)
    # a remote that is down: Orthanc's error, its Details word for word
    port = free_port()
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/down", ["NOBODY", "127.0.0.1", port])
    a, b = (call(t, "POST", "/modalities/down/query", {"Level": "Study"}) for t in (rest, orthanc))
    assert a[0] == b[0] == 500 and js(a) == js(b), (a, b)
    assert call(rest, "GET", "/queries")[1] == []


def test_retrieve_one_answer_into_tessera(qr, orthanc):  # noqa: F811
    """Retrieve: the remote sends the study to our AE title; ingest stores and indexes it."""
    rest, other = qr.rests
    with_ref(qr, orthanc)
    body = {"Level": "Study", "Query": {"PatientID": "PAT-2"}}
    qa = call(rest, "POST", "/modalities/remote/query", body)[1]
    qb = call(orthanc, "POST", "/modalities/remote/query", body)[1]
    assert call(rest, "GET", "/studies")[1] == []
    # synchronous by default: the job's Content, as Orthanc's (but for our AE titles)
    a = call(other, "POST", qa["Path"] + "/answers/0/retrieve", b"")
    b = call(orthanc, "POST", qb["Path"] + "/answers/0/retrieve", {"TargetAet": "ORTHANC"})
    assert a[0] == b[0] == 200, (a, b)
    assert a[1] == {"Description": "REST API", "LocalAet": "TESSERA", "RemoteAet": "REMOTE",
                    "Query": [{"0008,0050": "", "0008,0052": "STUDY", "0010,0020": "PAT-2",
                               "0020,000d": STUDY_B}]}, a
    assert without(a[1], "LocalAet") == without(b[1], "LocalAet")
    studies = call(rest, "GET", "/studies?expand")[1]
    assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [STUDY_B]
    assert qr.sql("SELECT count(*) FROM resources WHERE level = 3")[0][0] == 2
    assert len(call(orthanc, "GET", "/instances")[1]) == 2
    # the job is in the registry, seen from both processes, with Orthanc's fields
    jobs = call(rest, "GET", "/jobs?expand")[1]
    assert len(jobs) == 1 and jobs[0]["Type"] == "DicomMoveScu" and jobs[0]["State"] == "Success"
    ojob = call(orthanc, "GET", "/jobs?expand")[1][0]
    assert set(jobs[0]) == set(ojob)
    for k in ("Type", "State", "Progress", "ErrorCode", "ErrorDescription", "Priority"):
        assert jobs[0][k] == ojob[k], k
    # asynchronous retrieve of every answer, body options in Orthanc's forms
    for body in ({"Asynchronous": True, "Priority": 3}, {"Synchronous": False, "Simplify": True}):
        started = call(rest, "POST", qa["Path"] + "/retrieve", body)
        assert started[0] == 200 and set(started[1]) == {"ID", "Path"}, started
        job = wait_job(other, started[1]["ID"], {"Success", "Failure"})
        assert job["State"] == "Success", job
        assert job["Priority"] == body.get("Priority", 0)
    assert "StudyInstanceUID" in job["Content"]["Query"][0]  # Simplify
    # a bare AE title as the body, white space around it ignored
    assert call(rest, "POST", qa["Path"] + "/retrieve", b" TESSERA\r\n")[0] == 200
    a, b = (call(t, "POST", q["Path"] + "/retrieve", {"TargetAet": 3})
            for t, q in ((rest, qa), (orthanc, qb)))
    assert a[0] == b[0] == 400 and without(js(a), "Uri") == without(js(b), "Uri"), (a, b)
    for sub in ("/answers/7/retrieve", "/answers/x/retrieve"):
        a, b = call(rest, "POST", qa["Path"] + sub, b""), call(orthanc, "POST", qb["Path"] + sub, b"")
        assert a[0] == b[0] == 400 and without(js(a), "Uri") == without(js(b), "Uri"), (a, b)
    for body in ({"Asynchronous": "x"}, {"Priority": "x"}):
        a, b = call(rest, "POST", qa["Path"] + "/retrieve", body), call(orthanc, "POST", qb["Path"] + "/retrieve", body)
        assert a[0] == b[0] == 400 and without(js(a), "Uri") == without(js(b), "Uri"), (a, b)


def test_retrieve_to_unknown_target_and_remote_down(qr, orthanc):  # noqa: F811
    """Failures of the C-MOVE: the job fails with Orthanc's ErrorCode and description."""
    rest, other = qr.rests
    with_ref(qr, orthanc)
    body = {"Level": "Series", "Query": {"StudyInstanceUID": STUDY_B}}
    qa = call(rest, "POST", "/modalities/remote/query", body)[1]
    qb = call(orthanc, "POST", "/modalities/remote/query", body)[1]
    # the remote does not know the target: it refuses the C-MOVE
    a = call(rest, "POST", qa["Path"] + "/retrieve", {"TargetAet": "NOWHERE"})
    assert a[0] == 500 and js(a)["OrthancStatus"] == 9, a
    assert js(a)["Message"] == "Error in the network protocol"
    assert js(a)["Details"] == 'C-MOVE SCU to AET "REMOTE" has failed with DIMSE status 0xA801', a
    # Permissive: the job succeeds all the same, as Orthanc's
    a = call(rest, "POST", qa["Path"] + "/retrieve", {"TargetAet": "NOWHERE", "Permissive": True})
    b = call(orthanc, "POST", qb["Path"] + "/retrieve", {"TargetAet": "NOWHERE", "Permissive": True})
    assert a[0] == b[0] == 200 and without(a[1], "LocalAet") == without(b[1], "LocalAet"), (a, b)
    # the remote goes down after the query
    qr.remote.query.stop()
    started = call(rest, "POST", qa["Path"] + "/retrieve", {"Asynchronous": True})[1]
    job = wait_job(other, started["ID"], {"Success", "Failure"})
    ostarted = call(orthanc, "POST", qb["Path"] + "/retrieve", {"Asynchronous": True})[1]
    ojob = wait_job(orthanc, ostarted["ID"], {"Success", "Failure"})
    for k in ("State", "ErrorCode", "ErrorDescription", "Type", "Progress"):
        assert job[k] == ojob[k], (k, job, ojob)
    assert job["ErrorCode"] == 9 and job["ErrorDetails"].startswith(
        'DicomAssociation - connecting to AET "REMOTE": '), job
    assert "Connection refused" in job["ErrorDetails"]
    a, b = call(rest, "POST", qa["Path"] + "/retrieve", b""), call(orthanc, "POST", qb["Path"] + "/retrieve", b"")
    assert a[0] == b[0] == 500 and without(js(a), "Uri", "Details") == without(js(b), "Uri", "Details")
    # back up: resubmit through the other process moves the series
    qr.remote.query.start()
    assert call(other, "POST", f"/jobs/{job['ID']}/resubmit", b"")[:2] == (200, {})
    job = wait_job(rest, job["ID"], {"Success", "Failure"})
    assert job["State"] == "Success", job
    assert qr.sql("SELECT count(*) FROM resources WHERE level = 3")[0][0] == 2


def test_modality_move(qr, orthanc):  # noqa: F811
    rest, other = qr.rests
    with_ref(qr, orthanc)
    # synchronous: {} as Orthanc, the study indexed here
    body = {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY_A}]}
    a = call(rest, "POST", "/modalities/remote/move", body)
    b = call(orthanc, "POST", "/modalities/remote/move", dict(body, TargetAet="ORTHANC"))
    assert a[0] == b[0] == 200 and a[1] == b[1] == {}, (a, b)
    assert qr.sql("SELECT count(*) FROM resources WHERE level = 3")[0][0] == 3
    job = call(other, "GET", "/jobs?expand")[1][0]
    assert job["Type"] == "DicomMoveScu" and job["State"] == "Success"
    assert job["Content"]["Query"] == [{"0008,0052": "STUDY", "0020,000d": STUDY_A}]
    # asynchronous (Tessera's addition): a job followed through the other process
    body = {"Level": "Series", "Resources": [{"0020,000d": STUDY_B, "SeriesInstanceUID": STUDY_B + ".1"}],
            "Asynchronous": True}
    started = call(rest, "POST", "/modalities/remote/move", body)
    assert started[0] == 200 and set(started[1]) == {"ID", "Path"}, started
    assert wait_job(other, started[1]["ID"], {"Success", "Failure"})["State"] == "Success"
    assert qr.sql("SELECT count(*) FROM resources WHERE level = 3")[0][0] == 5
    # errors as Orthanc's
    port = free_port()
    for t in (rest, orthanc):
        call(t, "PUT", "/modalities/down", ["NOBODY", "127.0.0.1", port])
    cases = [
        ("/modalities/remote/move", b"garbage"),
        ("/modalities/remote/move", {}),
        ("/modalities/remote/move", {"Level": "Study"}),
        ("/modalities/remote/move", {"Level": "Bogus", "Resources": []}),
        ("/modalities/remote/move", {"Level": "Study", "Resources": ["1.2.3"]}),
        ("/modalities/remote/move", {"Level": "Study", "Resources": [{"Bogus": "1"}]}),
        ("/modalities/remote/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": 3}]}),
        ("/modalities/remote/move", {"Level": "Study", "Resources": [], "TargetAet": 5}),
        ("/modalities/remote/move", {"Level": "Study", "Resources": [], "Timeout": -1}),
        ("/modalities/nope/move", {"Level": "Study", "Resources": []}),
        ("/modalities/nope/move", b"garbage"),
        ("/modalities/remote/move", {"Level": "Study", "Resources": []}),
        ("/modalities/down/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY_A}]}),
    ]
    for path, body in cases:
        a, b = call(rest, "POST", path, body), call(orthanc, "POST", path, body)
        assert a[0] == b[0] and js(a) == js(b), (path, body, a, b)
    # the remote refuses the move (unknown destination): 500 with the DIMSE status
    a = call(rest, "POST", "/modalities/remote/move",
             {"Level": "Study", "Resources": [{"StudyInstanceUID": STUDY_A}], "TargetAet": "NOWHERE"})
    assert a[0] == 500 and js(a)["Details"] == \
        'C-MOVE SCU to AET "REMOTE" has failed with DIMSE status 0xA801', a
    # an unknown study: this remote (a Tessera query service) finds nothing to send
    # and ends the C-MOVE with success and no sub-operations; both answer the same.
    # (The 422 that Orthanc gives for a remote's 0xC000 refusal is not reached here.)
    b = call(orthanc, "POST", "/modalities/remote/move",
             {"Level": "Study", "Resources": [{"StudyInstanceUID": "9.9.9"}], "TargetAet": "ORTHANC"})
    a = call(rest, "POST", "/modalities/remote/move",
             {"Level": "Study", "Resources": [{"StudyInstanceUID": "9.9.9"}]})
    assert a[0] == b[0] == 200, (a, b)
    assert js(a) == js(b), (a, b)


def test_queries_history_and_expiry(qr):
    """At most TESSERA_QUERIES_HISTORY queries are kept (oldest dropped first, as
    Orthanc's QueryRetrieveSize), each for TESSERA_QUERIES_TTL seconds."""
    small = qr.start_rest(qr.ingests[0], TESSERA_REDIS_URL=qr.redis.url,
                          TESSERA_QUERIES_HISTORY=2, TESSERA_QUERIES_TTL=3)
    made = [call(small, "POST", "/modalities/remote/query", {"Level": "Study"})[1]["ID"]
            for _ in range(3)]
    assert call(qr.rests[0], "GET", "/queries")[1] == sorted(made[1:])
    assert call(qr.rests[0], "GET", f"/queries/{made[0]}")[0] == 404
    time.sleep(3.5)
    for rest in qr.rests:
        assert call(rest, "GET", "/queries")[1] == []
        assert call(rest, "GET", f"/queries/{made[2]}/answers")[0] == 404
    assert qr.redis.cli("ZCARD", "tessera:queries") == "0"
