"""Cluster-wide stable events and the router (issue 23).

Stable events: StableSeries/StableStudy/StablePatient are logged by a sweep in
every tessera-jobs process over the shared index (db/functions/stable.sql), once
per resource, TESSERA_STABLE_AGE seconds after its last instance wherever it was
received, and again after a late instance.

The router: rules in PostgreSQL (/tessera/routes), dispatched once from a durable
cursor on the change log, each store step a job in the Redis registry run by any
tessera-jobs process, retried with back-off, dead after the attempts allowed,
resubmitted over REST. Delivery is at least once; store steps are idempotent at
the destination (storescp -uf writes one file per SOP instance UID), so these
tests count files for "exactly one copy of each" and report the C-STORE requests
(duplicates included) where a process is killed.
"""
import json
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

from conftest import storescu
from test_ingest import PYDICOM_FILES
from test_jobs import StoreScp, call, js  # noqa: F401

AGE = 2  # TESSERA_STABLE_AGE of these tests


def make_files(out_dir, n, study_uid, series_uid, modality="CT", patient="PAT-R", first=1):
    """n copies of CT_small.dcm with new UIDs in one series of the given modality."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    files = []
    for i in range(first, first + n):
        src.PatientID = patient
        src.PatientName = "ROUTE^TEST"
        src.StudyInstanceUID = study_uid
        src.SeriesInstanceUID = series_uid
        src.Modality = modality
        src.SOPInstanceUID = f"{series_uid}.{i}"
        src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
        src.InstanceNumber = i
        p = out_dir / f"{series_uid}-{i:05d}.dcm"
        src.save_as(p)
        files.append(p)
    return files


def sop_uids(files):
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def changes(rest, since=0):
    out = []
    while True:
        status, body, _ = call(rest, "GET", f"/changes?since={since}&limit=1000")
        assert status == 200, body
        out += body["Changes"]
        since = body["Last"]
        if body["Done"]:
            return out


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def routing(cluster):
    """Redis, two ingest processes, one REST process, two jobs processes (each
    runs the stable sweep and the router), all with the stable age of the tests."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest(TESSERA_STABLE_AGE=AGE)
    cluster.start_ingest(TESSERA_STABLE_AGE=AGE)
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, TESSERA_STABLE_AGE=AGE)
    for _ in range(2):
        cluster.start_jobs(TESSERA_STABLE_AGE=AGE, TESSERA_ROUTER_RETRY_DELAY=1,
                           TESSERA_ROUTER_MAX_ATTEMPTS=3, TESSERA_ROUTER_INTERVAL=100)
    return cluster


def study_id(rest, study_uid):
    status, body, _ = call(rest, "POST", "/tools/lookup", study_uid.encode())
    assert status == 200 and body, body
    return [r["ID"] for r in body if r["Type"] == "Study"][0]


# ---- stable events -------------------------------------------------------------------

def test_stable_study_once_across_two_ingests_and_again_after_a_late_instance(routing, tmp_path):
    rest = routing.rests[0]
    ing_a, ing_b = routing.ingests
    study = "1.2.826.0.1.3680043.8.498.23.1"
    files = make_files(tmp_path / "s", 10, study, study + ".1")
    files += make_files(tmp_path / "s", 10, study, study + ".2", modality="MR")
    # halves of each series through each ingest process, at the same time
    results = {}

    def send(name, ing, part):
        results[name] = storescu(ing, part)
    threads = [threading.Thread(target=send, args=("a", ing_a, files[0::2])),
               threading.Thread(target=send, args=("b", ing_b, files[1::2]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = time.time()
    for rc, out in results.values():
        assert rc == 0, out
    sid = study_id(rest, study)
    status, st, _ = call(rest, "GET", f"/studies/{sid}")
    assert status == 200 and st["IsStable"] is False, st

    def stable_changes():
        return [c for c in changes(rest) if c["ChangeType"].startswith("Stable")]
    got = wait_for(lambda: [c for c in stable_changes() if c["ChangeType"] == "StableStudy"],
                   AGE + 10, "StableStudy")
    seen = time.time()
    # not before the stable age, and no later than age + 1 s (last_update's
    # granularity) + a sweep interval + polling
    assert seen - done >= AGE - 0.3, seen - done
    assert seen - done <= AGE + 3, seen - done
    time.sleep(1.5)  # a second sweeper would have logged its copy by now
    stable = stable_changes()
    kinds = sorted(c["ChangeType"] for c in stable)
    assert kinds == ["StablePatient", "StableSeries", "StableSeries", "StableStudy"], stable
    study_change = [c for c in stable if c["ChangeType"] == "StableStudy"][0]
    assert study_change["ID"] == sid and study_change["ResourceType"] == "Study"
    assert study_change["Path"] == f"/studies/{sid}"
    assert got[0]["Seq"] == study_change["Seq"]
    status, st, _ = call(rest, "GET", f"/studies/{sid}")
    assert st["IsStable"] is True, st
    for ser in st["Series"]:
        assert call(rest, "GET", f"/series/{ser}")[1]["IsStable"] is True
    status, pat, _ = call(rest, "GET", f"/patients/{st['ParentPatient']}")
    assert pat["IsStable"] is True

    # a late instance: unstable again at once, and a second StableStudy after the age
    late = make_files(tmp_path / "late", 1, study, study + ".1", first=99)
    rc, out = storescu(ing_b, late)
    assert rc == 0, out
    status, st, _ = call(rest, "GET", f"/studies/{sid}")
    assert st["IsStable"] is False, st
    wait_for(lambda: len([c for c in stable_changes() if c["ChangeType"] == "StableStudy"]) == 2,
             AGE + 10, "the second StableStudy")
    time.sleep(1.5)
    kinds = sorted(c["ChangeType"] for c in stable_changes())
    # the late instance's series, study and patient again; the MR series stayed stable
    assert kinds == ["StablePatient", "StablePatient", "StableSeries", "StableSeries",
                     "StableSeries", "StableStudy", "StableStudy"], kinds
    assert call(rest, "GET", f"/studies/{sid}")[1]["IsStable"] is True


def test_no_stable_event_while_instances_keep_coming(routing, tmp_path):
    """A series that receives an instance every second (less than the stable
    age apart) is not stable until they stop."""
    rest = routing.rests[0]
    study = "1.2.826.0.1.3680043.8.498.23.2"
    files = make_files(tmp_path / "t", 5, study, study + ".1")
    start = time.time()
    for i, f in enumerate(files):
        rc, out = storescu(routing.ingests[i % 2], [f])
        assert rc == 0, out
        time.sleep(1)
    last = time.time()
    assert not [c for c in changes(rest) if c["ChangeType"].startswith("Stable")], \
        "stable while instances were arriving"
    wait_for(lambda: [c for c in changes(rest) if c["ChangeType"] == "StableSeries"], AGE + 10,
             "StableSeries")
    assert time.time() - last >= AGE - 0.3 and last - start > AGE
