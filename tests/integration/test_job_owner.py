"""Jobs belong to whoever submitted them (issue 19): the registry records the
caller that submitted each job (a Basic user, "key:<id>" for an API key,
"jwt:<subject>" for a token), and a caller that is not an admin lists, reads,
downloads and controls only its own jobs; an admin sees and controls every job.
Another's job answers exactly what an unknown id answers (GET: an empty 404;
the actions: Orthanc's 400 for an unknown job, with the same body), so job ids
do not leak. The registry is in Redis, so this holds whichever REST replica is
asked: here every job is submitted through one replica and looked at through
the other.

Orthanc 1.10.1 has no users beyond its all-powerful ones, so there is nothing
to compare with; these tests state the contract.
"""
import base64
import io
import json
import time
import uuid
import zipfile

import pytest

from conftest import ROOT, Cluster
from orthanc import http

DATA = ROOT / "tests/data/dicom"
FILES = ["CT_small.dcm", "MR_small.dcm"]
USERS = "admin:adminpw,alice:alicepw,bob:bobpw,carol:carolpw"
# alice and bob write everywhere; carol reads only the studies labelled groupB
ROLES = "alice=write,bob=write,carol=read:groupB"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN = basic("admin", "adminpw")
ALICE = basic("alice", "alicepw")
BOB = basic("bob", "bobpw")
CAROL = basic("carol", "carolpw")


def call(url, method, path, who, body=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return http(url, method, path, body, headers=dict(who))


def js(url, path, who):
    s, data, _ = call(url, "GET", path, who)
    assert s == 200, (path, s, data)
    return json.loads(data)


def archive_job(url, who, study):
    s, data, _ = call(url, "POST", f"/studies/{study}/archive", who, {"Asynchronous": True})
    assert s == 200, data
    return json.loads(data)["ID"]


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """Two REST replicas on one Redis and one database; no jobs process, so
    the jobs stay Pending until test_runs_and_downloads starts one."""
    base = tmp_path_factory.mktemp("jobowner")
    base.chmod(0o755)
    c = Cluster(postgres, base)
    try:
        redis = c.start_redis()
        ing = c.start_ingest()
        env = dict(TESSERA_REDIS_URL=redis.url, TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=USERS,
                   TESSERA_HTTP_USER_ROLES=ROLES, TESSERA_HTTP_API_KEY_CACHE="0")
        r1 = c.start_rest(ing, **env)
        r2 = c.start_rest(ing, **env)
        studies = []
        for name in FILES:
            s, body, _ = call(r1.url, "POST", "/instances", ADMIN, (DATA / name).read_bytes())
            assert s == 200, body
            studies.append(json.loads(body)["ParentStudy"])
        a, b = studies
        assert call(r1.url, "PUT", f"/studies/{b}/labels/groupB", ADMIN)[0] == 200
        s, data, _ = call(r1.url, "POST", "/tessera/api-keys", ADMIN,
                          {"Name": "robot", "Role": "write"})
        assert s == 200, data
        made = json.loads(data)
        key = {"Authorization": "Bearer " + made["Key"]}
        # every job submitted through replica 1
        jobs = {
            "alice": [archive_job(r1.url, ALICE, a), archive_job(r1.url, ALICE, b)],
            "bob": [archive_job(r1.url, BOB, a)],
            "carol": [archive_job(r1.url, CAROL, b)],
            "key": [archive_job(r1.url, key, a)],
            "admin": [archive_job(r1.url, ADMIN, b)],
        }
        yield c, r1, r2, (a, b), key, made["ID"], jobs
    finally:
        c.stop()


def test_each_lists_its_own_jobs_on_the_other_replica(server):
    _, r1, r2, _, key, key_id, jobs = server
    who = {"alice": ALICE, "bob": BOB, "carol": CAROL, "key": key}
    for name, cred in who.items():
        for url in (r2.url, r1.url):
            assert sorted(js(url, "/jobs", cred)) == sorted(jobs[name]), (name, url)
            expanded = js(url, "/jobs?expand", cred)
            assert sorted(j["ID"] for j in expanded) == sorted(jobs[name])
            assert all(j["Type"] == "Archive" and j["State"] == "Pending" for j in expanded)
    # the admin sees every job; the submitter is not part of Orthanc's JSON
    every = sorted(i for ids in jobs.values() for i in ids)
    assert sorted(js(r2.url, "/jobs", ADMIN)) == every
    one = js(r2.url, f"/jobs/{jobs['alice'][0]}", ADMIN)
    assert "alice" not in json.dumps(one)
    # the registry records the caller as rest names it
    rows = {}
    for name, ids in jobs.items():
        for i in ids:
            rows[i] = server[0].redis.cli("HGET", f"tessera:job:{i}", "submitter").strip()
    assert {rows[i] for i in jobs["alice"]} == {"alice"}
    assert {rows[i] for i in jobs["key"]} == {f"key:{key_id}"}
    assert {rows[i] for i in jobs["carol"]} == {"carol"}


def test_anothers_job_is_an_unknown_job(server):
    _, r1, r2, _, key, _, jobs = server
    unknown = str(uuid.uuid4())
    theirs = jobs["bob"][0]
    for url in (r1.url, r2.url):
        # GET: the empty 404 of an unknown id
        s_unknown, body_unknown, _ = call(url, "GET", f"/jobs/{unknown}", ALICE)
        s, body, _ = call(url, "GET", f"/jobs/{theirs}", ALICE)
        assert (s, body) == (s_unknown, body_unknown) == (404, b"")
        s, body, _ = call(url, "GET", f"/jobs/{theirs}/archive", ALICE)
        assert (s, body) == (404, b"")
        # the actions: Orthanc answers 400 for an unknown job; so does another's
        for action in ("cancel", "pause", "resume", "resubmit"):
            su, bu, _ = call(url, "POST", f"/jobs/{unknown}/{action}", ALICE, b"{}")
            st, bt, _ = call(url, "POST", f"/jobs/{theirs}/{action}", ALICE, b"{}")
            assert su == st == 400, (action, st, bt)
            assert json.loads(bt) == json.loads(bu.replace(unknown.encode(), theirs.encode()))
        # a label-scoped caller and an API key likewise
        for cred in (CAROL, key):
            assert call(url, "GET", f"/jobs/{theirs}", cred)[:2] == (404, b"")
    # nothing happened to bob's job
    assert js(r2.url, f"/jobs/{theirs}", BOB)["State"] == "Pending"
    assert "not-own-job" in r1.read_log()


def test_own_job_controlled_across_replicas(server):
    _, r1, r2, _, key, _, jobs = server
    mine = jobs["alice"][1]
    assert call(r2.url, "POST", f"/jobs/{mine}/pause", ALICE, b"{}")[0] == 200
    assert js(r1.url, f"/jobs/{mine}", ALICE)["State"] == "Paused"
    assert call(r1.url, "POST", f"/jobs/{mine}/resume", ALICE, b"{}")[0] == 200
    assert js(r2.url, f"/jobs/{mine}", ALICE)["State"] == "Pending"
    assert call(r2.url, "POST", f"/jobs/{mine}/cancel", ALICE, b"{}")[0] == 200
    job = js(r1.url, f"/jobs/{mine}", ALICE)
    assert job["State"] == "Failure" and job["ErrorDescription"] == "Canceled job"
    assert call(r1.url, "POST", f"/jobs/{mine}/resubmit", ALICE, b"{}")[0] == 200
    assert js(r2.url, f"/jobs/{mine}", ALICE)["State"] == "Pending"
    # the API key controls its own job too
    k = jobs["key"][0]
    assert call(r2.url, "POST", f"/jobs/{k}/pause", key, b"{}")[0] == 200
    assert js(r1.url, f"/jobs/{k}", key)["State"] == "Paused"
    assert call(r1.url, "POST", f"/jobs/{k}/resume", key, b"{}")[0] == 200
    # a resubmitted job is still its submitter's
    assert mine in js(r2.url, "/jobs", ALICE) and mine not in js(r2.url, "/jobs", BOB)


def test_admin_controls_every_job(server):
    _, r1, r2, _, _, _, jobs = server
    bobs = jobs["bob"][0]
    assert call(r2.url, "POST", f"/jobs/{bobs}/pause", ADMIN, b"{}")[0] == 200
    assert js(r1.url, f"/jobs/{bobs}", BOB)["State"] == "Paused"
    assert call(r1.url, "POST", f"/jobs/{bobs}/resume", ADMIN, b"{}")[0] == 200
    assert js(r2.url, f"/jobs/{bobs}", ADMIN)["State"] == "Pending"
    # the admin's own job is not the others'
    assert jobs["admin"][0] not in js(r2.url, "/jobs", ALICE)


def test_label_scoped_caller(server):
    """carol reads only groupB's studies: she may archive those and follow her
    job (the jobs routes were closed to label-scoped callers before jobs had
    owners); a read role still may not cancel."""
    _, r1, r2, (a, b), _, _, jobs = server
    assert js(r2.url, "/jobs", CAROL) == jobs["carol"]
    # the study she cannot see is unknown to her, so is an archive of it
    assert call(r1.url, "POST", f"/studies/{a}/archive", CAROL, {"Asynchronous": True})[0] == 404
    s, body, _ = call(r2.url, "POST", f"/jobs/{jobs['carol'][0]}/cancel", CAROL, b"{}")
    assert s == 403, body


def test_runs_and_downloads(server):
    """Once a jobs process runs them, each downloads its own archive through
    the replica it did not submit to; nobody else's."""
    c, r1, r2, (a, b), _, _, jobs = server
    c.start_jobs(TESSERA_REDIS_URL=c.redis.url)
    mine = jobs["alice"][0]
    deadline = time.time() + 60
    while js(r2.url, f"/jobs/{mine}", ALICE)["State"] != "Success":
        assert time.time() < deadline, js(r2.url, f"/jobs/{mine}", ALICE)
        time.sleep(0.2)
    s, data, _ = call(r2.url, "GET", f"/jobs/{mine}/archive", ALICE)
    assert s == 200 and len(zipfile.ZipFile(io.BytesIO(data)).namelist()) == 1
    assert call(r2.url, "GET", f"/jobs/{mine}/archive", BOB)[:2] == (404, b"")
    assert call(r1.url, "GET", f"/jobs/{mine}/archive", CAROL)[:2] == (404, b"")
    assert call(r1.url, "GET", f"/jobs/{mine}/archive", ADMIN)[1] == data
