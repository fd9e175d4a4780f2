"""Archive and BulkDelete jobs, and job priorities (issue 6): two REST and two
tessera-jobs processes on one Redis, and a live Orthanc 1.10.1 as the reference
for routes, bodies, job Content and error answers.

Differences from Orthanc that these tests accept, and why:
- Tessera's ZIPs are stored, Orthanc's deflated: ArchiveSize and the bytes of the
  ZIP differ; entry names and contents are compared.
- A synchronous archive is streamed while it is written and is not a job, so it
  does not show in /jobs (Orthanc runs it as a job and lists it).
- POST /tools/bulk-delete with "Asynchronous": true is a BulkDelete job, Tessera's
  own type (Orthanc deletes synchronously and ignores the field).
"""
import io
import json
import re
import time
import zipfile
from pathlib import Path

import pytest

from orthanc import orthanc  # noqa: F401  (a fixture)
from test_ingest import make_series
from test_jobs import call, js, jobs_cluster, upload, wait_job, without  # noqa: F401

ARCHIVE_CONTENT_KEYS = {"ArchiveSize", "ArchiveSizeMB", "Description", "InstancesCount",
                        "UncompressedSize", "UncompressedSizeMB"}
UNKNOWN_ID = "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917a0"


def two_studies(tmp_path):
    """Files of two studies of two patients: 3 + 2 instances."""
    a = make_series(tmp_path / "a", 3, study_uid="1.2.826.0.1.3680043.8.498.71", patient="PA")
    b = make_series(tmp_path / "b", 2, study_uid="1.2.826.0.1.3680043.8.498.72", patient="PB")
    return a, b


def zip_of(resp):
    status, body, headers = resp
    assert status == 200, (status, body[:300] if isinstance(body, bytes) else body)
    assert headers.get("Content-Type") == "application/zip", headers
    z = zipfile.ZipFile(io.BytesIO(body))
    assert z.testzip() is None
    return z, headers


def contents(z):
    return {n: z.read(n) for n in z.namelist()}


def job_outputs(cluster):
    d = cluster.storage / "jobs"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_async_archive_downloaded_through_the_other_rest(jobs_cluster, orthanc, tmp_path):  # noqa: F811
    rest, other = jobs_cluster.rests
    a, b = two_studies(tmp_path)
    answers = upload(rest, a + b)
    orthanc.upload_all(a + b)
    study = answers[0]["ParentStudy"]
    for level, rid in (("studies", study), ("patients", answers[3]["ParentPatient"]),
                       ("series", answers[0]["ParentSeries"])):
        sync, _ = zip_of(call(other, "GET", f"/{level}/{rid}/archive"))
        status, started, _ = call(rest, "POST", f"/{level}/{rid}/archive", {"Asynchronous": True})
        assert status == 200 and set(started) == {"ID", "Path"}, started
        assert started["Path"] == f"/jobs/{started['ID']}"
        job = wait_job(other, started["ID"], {"Success", "Failure"})
        assert job["State"] == "Success", job
        assert job["Type"] == "Archive" and job["Progress"] == 100
        z, headers = zip_of(call(other, "GET", f"/jobs/{started['ID']}/archive"))
        assert headers.get("Content-Disposition") == 'filename="archive.zip"'
        assert z.namelist() == sync.namelist() and contents(z) == contents(sync)
        assert f"{started['ID']}.zip" in job_outputs(jobs_cluster)
        # Orthanc's job for the same resource: the same fields and Content (but the size
        # of its deflated ZIP)
        ostarted = call(orthanc, "POST", f"/{level}/{rid}/archive", {"Asynchronous": True})[1]
        ojob = wait_job(orthanc, ostarted["ID"], {"Success", "Failure"})
        assert set(job) == set(ojob)
        assert set(job["Content"]) == set(ojob["Content"]) == ARCHIVE_CONTENT_KEYS
        assert without(job["Content"], "ArchiveSize") == without(ojob["Content"], "ArchiveSize")
        assert int(job["Content"]["ArchiveSize"]) == len(call(rest, "GET", f"/jobs/{started['ID']}/archive")[1])
        for k in ("State", "ErrorCode", "ErrorDescription", "ErrorDetails", "Type", "Progress",
                  "Priority"):
            assert job[k] == ojob[k], k
        oz = zipfile.ZipFile(io.BytesIO(call(orthanc, "GET", f"/jobs/{ostarted['ID']}/archive")[1]))
        assert oz.namelist() == z.namelist()
    # Synchronous: the ZIP itself, as GET gives it, and Orthanc's name for it
    for body in ({}, {"Synchronous": True}, {"Asynchronous": False}, [1]):
        z, headers = zip_of(call(rest, "POST", f"/studies/{study}/archive", body))
        assert headers.get("Content-Disposition") == f'filename="{study}.zip"'
        assert len(z.namelist()) == 3
    # an output that the job does not have
    a_ = call(rest, "GET", f"/jobs/{started['ID']}/nope")
    b_ = call(orthanc, "GET", f"/jobs/{ostarted['ID']}/nope")
    assert a_[0] == b_[0] == 404 and js(a_)["Details"] == js(b_)["Details"] == "Job has no such output: nope"


def test_create_archive_sync_and_async(jobs_cluster, orthanc, tmp_path):  # noqa: F811
    rest, other = jobs_cluster.rests
    a, b = two_studies(tmp_path)
    answers = upload(rest, a + b)
    orthanc.upload_all(a + b)
    study_a, series_b = answers[0]["ParentStudy"], answers[3]["ParentSeries"]
    bodies = [{"Resources": [study_a, series_b]}, [study_a, series_b],
              # an instance within a study given too counts once
              {"Resources": [study_a, answers[1]["ID"], series_b]}]
    for body in bodies:
        z, headers = zip_of(call(rest, "POST", "/tools/create-archive", body))
        oz, oheaders = zip_of(call(orthanc, "POST", "/tools/create-archive", body))
        assert headers.get("Content-Disposition") == oheaders.get("Content-Disposition") == \
            'filename="Archive.zip"'
        assert z.namelist() == oz.namelist() and len(z.namelist()) == 5, (z.namelist(), oz.namelist())
        async_body = dict(body) if isinstance(body, dict) else {"Resources": body}
        async_body["Asynchronous"] = True
        started = call(other, "POST", "/tools/create-archive", async_body)[1]
        job = wait_job(rest, started["ID"], {"Success", "Failure"})
        assert job["State"] == "Success" and job["Content"]["InstancesCount"] == 5, job
        jz, _ = zip_of(call(rest, "GET", f"/jobs/{started['ID']}/archive"))
        assert contents(jz) == contents(z)
        ostarted = call(orthanc, "POST", "/tools/create-archive", async_body)[1]
        ojob = wait_job(orthanc, ostarted["ID"], {"Success", "Failure"})
        assert without(job["Content"], "ArchiveSize") == without(ojob["Content"], "ArchiveSize")
    # an empty list: an empty archive, as Orthanc's
    z, _ = zip_of(call(rest, "POST", "/tools/create-archive", {"Resources": []}))
    assert z.namelist() == []


def test_archive_bad_bodies_like_orthanc(jobs_cluster, orthanc, tmp_path):  # noqa: F811
    rest = jobs_cluster.rests[0]
    files = make_series(tmp_path / "s", 1)
    answers = upload(rest, files)
    orthanc.upload_all(files)
    study, instance = answers[0]["ParentStudy"], answers[0]["ID"]
    cases = [
        (f"/studies/{study}/archive", b""),
        (f"/studies/{study}/archive", b"garbage"),
        (f"/studies/{study}/archive", {"Asynchronous": 3}),
        (f"/studies/{study}/archive", {"Synchronous": "no"}),
        (f"/studies/{study}/archive", {"Priority": "x"}),
        ("/studies/0000/archive", {"Asynchronous": True}),
        (f"/studies/{UNKNOWN_ID}/archive", {"Asynchronous": True}),
        (f"/instances/{instance}/archive", {"Asynchronous": True}),
        ("/tools/create-archive", b""),
        ("/tools/create-archive", b"garbage"),
        ("/tools/create-archive", b"42"),
        ("/tools/create-archive", {}),
        ("/tools/create-archive", {"Resources": "x"}),
        ("/tools/create-archive", {"Resources": [1]}),
        ("/tools/create-archive", {"Resources": ["nope"]}),
        ("/tools/create-archive", {"Resources": [UNKNOWN_ID], "Asynchronous": True}),
        ("/tools/create-archive", {"Resources": [study, UNKNOWN_ID]}),
        ("/tools/create-archive", {"Resources": [study], "Asynchronous": "yes"}),
        ("/tools/create-archive", {"Resources": [study], "Priority": 1.5}),
    ]
    for path, body in cases:
        a, b = call(rest, "POST", path, body), call(orthanc, "POST", path, body)
        assert a[0] == b[0] and a[0] in (400, 404), (path, body, a, b)
        assert js(a) == js(b), (path, body, a, b)
    # none of them left a job behind
    assert [j for j in call(rest, "GET", "/jobs?expand")[1] if j["Type"] == "Archive"] == []
    # Orthanc 1.10.1 archives the resource of the id whatever the route's level says
    for t in (rest, orthanc):
        started = call(t, "POST", f"/patients/{study}/archive", {"Asynchronous": True})[1]
        job = wait_job(t, started["ID"], {"Success", "Failure"})
        assert job["State"] == "Success" and job["Content"]["InstancesCount"] == 1, job


def test_bulk_delete_job(jobs_cluster, tmp_path):
    rest, other = jobs_cluster.rests
    jobs_cluster.start_deleter()
    a, b = two_studies(tmp_path)
    keep = make_series(tmp_path / "c", 2, study_uid="1.2.826.0.1.3680043.8.498.73", patient="PC")
    answers = upload(rest, a + b + keep)
    assert len(jobs_cluster.stored_files()) == 7
    doomed = [answers[0]["ParentStudy"], answers[3]["ParentPatient"], UNKNOWN_ID]
    for body in ({"Resources": doomed, "Asynchronous": "x"}, {"Resources": "x", "Asynchronous": True},
                 {"Resources": doomed, "Asynchronous": True, "Priority": "high"}):
        resp = call(rest, "POST", "/tools/bulk-delete", body)
        assert resp[0] == 400 and js(resp)["OrthancStatus"] == 15, resp
    # a Priority that would wrap to 1 as a C int is refused, as for every job route
    for path, body in (("/tools/bulk-delete", {"Resources": doomed, "Asynchronous": True,
                                               "Priority": 2 ** 32 + 1}),
                       (f"/studies/{doomed[0]}/archive", {"Asynchronous": True,
                                                          "Priority": -(2 ** 40)})):
        resp = call(rest, "POST", path, body)
        assert resp[0] == 400 and js(resp)["Details"] == \
            "Priority must be between -1000000000 and 1000000000", (path, resp)
    assert [j for j in call(rest, "GET", "/jobs?expand")[1] if j["Type"] == "BulkDelete"] == []
    status, started, _ = call(rest, "POST", "/tools/bulk-delete",
                              {"Resources": doomed, "Asynchronous": True})
    assert status == 200 and set(started) == {"ID", "Path"}, started
    job = wait_job(other, started["ID"], {"Success", "Failure"})
    assert job["State"] == "Success", job
    assert job["Type"] == "BulkDelete" and job["Progress"] == 100
    assert job["Content"] == {"Description": "REST API", "ResourcesCount": 3,
                              "DeletedResourcesCount": 2}
    for rid in doomed[:2]:
        assert call(other, "GET", f"/studies/{rid}")[0] == 404
    assert call(other, "GET", f"/patients/{doomed[1]}")[0] == 404
    assert call(other, "GET", "/patients")[1] == [answers[5]["ParentPatient"]]
    # the deleter removes the files (the job nudges it, as a DELETE does)
    deadline = time.time() + 20
    while len(jobs_cluster.stored_files()) != 2:
        assert time.time() < deadline, jobs_cluster.stored_files()
        time.sleep(0.2)
    assert jobs_cluster.sql("SELECT count(*) FROM deletion_queue")[0][0] == 0


def started_order(cluster, ids):
    """The ids in the order the jobs processes' logs say they started."""
    order = []
    for j in cluster.jobs:
        for m in re.finditer(r'job started" job=(\S+)', j.read_log()):
            if m.group(1) in ids and m.group(1) not in order:
                order.append(m.group(1))
    return order


def test_priorities(cluster, tmp_path):
    """One worker, busy with a slow archive: the jobs queued meanwhile run by
    priority, the highest first, first come first served among equals."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs(TESSERA_JOBS_WORKERS=1, TESSERA_JOBS_ARCHIVE_MAX_RATE=64)
    answers = upload(rest, make_series(tmp_path / "s", 6))
    study = answers[0]["ParentStudy"]
    busy = call(rest, "POST", f"/studies/{study}/archive", {"Asynchronous": True})[1]["ID"]
    wait_job(rest, busy, {"Running"}, timeout=10)
    queued = []
    for priority in (0, 0, -3, 5, 10, 5, 0):
        body = {"Resources": [UNKNOWN_ID], "Asynchronous": True, "Priority": priority}
        status, started, _ = call(rest, "POST", "/tools/bulk-delete", body)
        assert status == 200, started
        queued.append((priority, started["ID"]))
    job = call(rest, "GET", f"/jobs/{queued[3][1]}")[1]
    assert job["State"] == "Pending" and job["Priority"] == 5
    assert call(rest, "GET", f"/jobs/{busy}")[1]["State"] == "Running"
    for _, jid in queued:
        assert wait_job(rest, jid, {"Success", "Failure"}, timeout=60)["State"] == "Success"
    expected = [jid for _, jid in sorted(queued, key=lambda pj: -pj[0])]  # stable: FIFO among equals
    assert started_order(cluster, {jid for _, jid in queued}) == expected


def test_cancel_removes_partial_output(cluster, tmp_path):
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, TESSERA_JOBS_HISTORY=1)
    cluster.start_jobs(TESSERA_JOBS_ARCHIVE_MAX_RATE=32, TESSERA_JOBS_HISTORY=1)
    answers = upload(rest, make_series(tmp_path / "s", 5))
    study = answers[0]["ParentStudy"]
    job_id = call(rest, "POST", f"/studies/{study}/archive", {"Asynchronous": True})[1]["ID"]
    wait_job(rest, job_id, {"Running"}, timeout=10)
    deadline = time.time() + 10
    while not any(n.endswith(".part") for n in job_outputs(cluster)):
        assert time.time() < deadline, job_outputs(cluster)
        time.sleep(0.1)
    job = call(rest, "GET", f"/jobs/{job_id}")[1]
    assert 0 <= job["Progress"] < 100 and job["Content"]["InstancesCount"] == 5, job
    assert call(rest, "POST", f"/jobs/{job_id}/cancel", b"")[:2] == (200, {})
    deadline = time.time() + 5
    while job_outputs(cluster):
        assert time.time() < deadline, f"partial output left: {job_outputs(cluster)}"
        time.sleep(0.1)
    job = call(rest, "GET", f"/jobs/{job_id}")[1]
    assert (job["State"], job["ErrorCode"]) == ("Failure", 37)
    resp = call(rest, "GET", f"/jobs/{job_id}/archive")
    assert resp[0] == 404 and js(resp)["Details"] == "Job has no such output: archive"
    # resubmitted, it writes the archive again, whole
    assert call(rest, "POST", f"/jobs/{job_id}/resubmit", b"")[:2] == (200, {})
    assert wait_job(rest, job_id, {"Success", "Failure"}, timeout=60)["State"] == "Success"
    z, _ = zip_of(call(rest, "GET", f"/jobs/{job_id}/archive"))
    assert len(z.namelist()) == 5
    assert job_outputs(cluster) == [f"{job_id}.zip"]
    # once the job leaves the history (1 job kept here), its ZIP goes too
    other = call(rest, "POST", "/tools/bulk-delete", {"Resources": [], "Asynchronous": True})[1]["ID"]
    wait_job(rest, other, {"Success"})
    assert call(rest, "GET", f"/jobs/{job_id}")[0] == 404
    deadline = time.time() + 20
    while job_outputs(cluster):
        assert time.time() < deadline, job_outputs(cluster)
        time.sleep(0.2)
