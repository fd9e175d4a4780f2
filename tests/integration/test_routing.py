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
import signal
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
    """A series that receives an instance about every second (less than the
    stable age apart) is not stable until they stop."""
    rest = routing.rests[0]
    study = "1.2.826.0.1.3680043.8.498.23.2"
    files = make_files(tmp_path / "t", 5, study, study + ".1")
    start = time.time()
    for i, f in enumerate(files):
        rc, out = storescu(routing.ingests[i % 2], [f])
        assert rc == 0, out
        time.sleep(0.5)
    last = time.time()
    assert not [c for c in changes(rest) if c["ChangeType"].startswith("Stable")], \
        "stable while instances were arriving"
    wait_for(lambda: [c for c in changes(rest) if c["ChangeType"] == "StableSeries"], AGE + 10,
             "StableSeries")
    assert time.time() - last >= AGE - 0.3 and last - start > AGE


# ---- the router ----------------------------------------------------------------------

@pytest.fixture
def scp_factory(tmp_path):
    started = []

    def make(**kw):
        s = StoreScp(tmp_path / f"scp-{len(started)}", **kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


def add_modality(rest, name, port, aet="STORESCP"):
    status, body, _ = call(rest, "PUT", f"/modalities/{name}", [aet, "127.0.0.1", port])
    assert status == 200, body


def create_route(rest, rule):
    status, body, headers = call(rest, "POST", "/tessera/routes", rule)
    assert status == 200, body
    assert body["Revision"] == 0 and body["ID"]
    return body


def deliveries(rest, state=None):
    status, body, _ = call(rest, "GET", "/tessera/route-deliveries"
                           + (f"?state={state}" if state else ""))
    assert status == 200, body
    return body


def send_split(ingests, files):
    """Stores files through the ingest processes in turn, at the same time."""
    results = []

    def send(ing, part):
        results.append(storescu(ing, part))
    threads = [threading.Thread(target=send, args=(ing, files[i::len(ingests)]))
               for i, ing in enumerate(ingests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rc, out in results:
        assert rc == 0, out


CT_RULE = {"Name": "every CT to X", "Trigger": "NewInstance",
           "Conditions": {"Modality": "CT"},
           "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}


def test_every_ct_to_storescp_exactly_once_and_no_mr(routing, scp_factory, tmp_path):
    rest = routing.rests[0]
    scp = scp_factory()
    add_modality(rest, "x", scp.port)
    create_route(rest, CT_RULE)
    study = "1.2.826.0.1.3680043.8.498.23.10"
    ct = make_files(tmp_path / "f", 12, study, study + ".1", modality="CT")
    mr = make_files(tmp_path / "f", 6, study, study + ".2", modality="MR")
    send_split(routing.ingests, ct + mr)
    want = sop_uids(ct)
    wait_for(lambda: scp.received() >= want, 60, "the CT instances at storescp")
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    time.sleep(1)  # anything extra would have come by now
    assert scp.received() == want  # every CT, no MR
    assert scp.store_requests() == len(ct)  # and each once (no process was killed)
    status, jobs, _ = call(rest, "GET", "/jobs?expand")
    stores = [j for j in jobs if j["Type"] == "DicomModalityStore"]
    # the deliveries due together go out as one job (one association)
    assert 1 <= len(stores) <= len(ct) and {j["State"] for j in stores} == {"Success"}
    assert sum(j["Content"]["InstancesCount"] for j in stores) == len(ct)
    assert all(j["Content"]["Description"].startswith("Route ") for j in stores)
    # both jobs processes ran some of them: the registry shares the work
    logs = [j.read_log() for j in routing.jobs]
    assert all("route job submitted" in log or "job succeeded" in log for log in logs)


def test_stable_study_rule_sends_a_split_study_once(routing, scp_factory, tmp_path):
    """'StableStudy with Modality CT -> store': a study received by two ingest
    processes is sent once, after it is stable; an MR study is not sent."""
    rest = routing.rests[0]
    scp = scp_factory()
    add_modality(rest, "x", scp.port)
    create_route(rest, dict(CT_RULE, Trigger="StableStudy"))
    ct_study, mr_study = "1.2.826.0.1.3680043.8.498.23.20", "1.2.826.0.1.3680043.8.498.23.21"
    ct = make_files(tmp_path / "f", 10, ct_study, ct_study + ".1", modality="CT")
    mr = make_files(tmp_path / "f", 4, mr_study, mr_study + ".1", modality="MR",
                    patient="PAT-MR")
    send_split(routing.ingests, ct + mr)
    done = time.time()
    time.sleep(AGE - 0.5)
    assert scp.received() == set(), "sent before the study was stable"
    wait_for(lambda: scp.received() >= sop_uids(ct), AGE + 30, "the CT study at storescp")
    assert time.time() - done >= AGE
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    time.sleep(1.5)
    assert scp.received() == sop_uids(ct)
    assert scp.store_requests() == len(ct)
    stable = [c for c in changes(rest) if c["ChangeType"] == "StableStudy"]
    assert len(stable) == 2  # the CT study and the MR study, once each


def test_destination_down_retries_then_dead_then_resubmit_delivers(routing, scp_factory,
                                                                    tmp_path):
    from conftest import free_port
    rest = routing.rests[0]
    port = free_port()  # nothing listens there yet
    add_modality(rest, "x", port)
    create_route(rest, CT_RULE)
    study = "1.2.826.0.1.3680043.8.498.23.30"
    ct = make_files(tmp_path / "f", 3, study, study + ".1")
    send_split(routing.ingests, ct)
    # TESSERA_ROUTER_MAX_ATTEMPTS=3, TESSERA_ROUTER_RETRY_DELAY=1: 1 + 2 s of back-off
    dead = wait_for(lambda: len(deliveries(rest, "dead")) == 3 and deliveries(rest, "dead"),
                    60, "three dead deliveries")
    for d in dead:
        assert d["Attempts"] == 3 and d["State"] == "dead", d
        assert d["Action"] == {"Type": "StoreToModality", "Modality": "x"}
        assert "failed" in d["LastError"] and d["Job"], d
        assert d["ResourceType"] == "Instance" and d["ChangeType"] == "NewInstance"
    # each retry resubmitted the same job (instances already sent are not sent again)
    status, job, _ = call(rest, "GET", f"/jobs/{dead[0]['Job']}")
    assert status == 200 and job["State"] == "Failure", job
    # a delivery that is not dead cannot be resubmitted; unknown ones are 404
    assert call(rest, "POST", "/tessera/route-deliveries/999999/resubmit")[0] == 404
    scp = scp_factory(port=port)
    for d in dead:
        status, body, _ = call(rest, "POST", f"/tessera/route-deliveries/{d['ID']}/resubmit")
        assert status == 200, body
    status, body, _ = call(rest, "POST", f"/tessera/route-deliveries/{dead[0]['ID']}/resubmit")
    assert status in (200, 400)  # 400 once it left the dead state: it says which it is in
    wait_for(lambda: scp.received() == sop_uids(ct), 60, "the instances after the resubmit")
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    assert scp.store_requests() == len(ct)


def test_store_steps_wait_while_route_jobs_are_queued_then_go_out_together(cluster,
                                                                           scp_factory,
                                                                           tmp_path):
    """The hold: while four route jobs wait in the queue for a worker, the
    router claims no store steps; what piles up goes out as one job (one
    association) once a queued job is taken, instead of one job per router pass.
    Nothing is lost or sent twice."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest(TESSERA_STABLE_AGE=60)
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, TESSERA_STABLE_AGE=60)
    cluster.start_jobs(TESSERA_STABLE_AGE=60, TESSERA_JOBS_WORKERS=1,
                       TESSERA_ROUTER_INTERVAL=100)
    # the one worker busy with a slow store (storescp sleeps 4 s in each C-STORE)
    slow = scp_factory(extra=["--sleep-during", "4"])
    add_modality(rest, "slow", slow.port)
    study = "1.2.826.0.1.3680043.8.498.23.70"
    mr = make_files(tmp_path / "mr", 3, study, study + ".9", modality="MR")
    assert storescu(ing, mr)[0] == 0
    status, body, _ = call(rest, "POST", "/modalities/slow/store",
                           {"Resources": [study_id(rest, study)], "Asynchronous": True})
    assert status == 200, body
    blocker = body["ID"]
    wait_for(lambda: call(rest, "GET", f"/jobs/{blocker}")[1]["State"] == "Running", 20,
             "the slow store to run")
    scp = scp_factory()
    add_modality(rest, "x", scp.port)
    create_route(rest, CT_RULE)
    ct = []
    for k in range(8):  # bursts, router passes apart
        part = make_files(tmp_path / "ct", 2, study, study + ".1", first=1 + 2 * k)
        assert storescu(ing, part)[0] == 0
        ct += part
        time.sleep(0.3)
    wait_for(lambda: len(deliveries(rest)) == len(ct), 20, "every delivery")
    held = deliveries(rest)
    assert call(rest, "GET", f"/jobs/{blocker}")[1]["State"] == "Running"
    # four jobs wait behind the slow store; the later bursts are not claimed
    queued = {d["Job"] for d in held if d["State"] == "running"}
    assert len(queued) == 4, held
    assert all(call(rest, "GET", f"/jobs/{j}")[1]["State"] == "Pending" for j in queued)
    pending = [d for d in held if d["State"] == "pending"]
    assert pending and all(d["Attempts"] == 0 for d in pending), held
    wait_for(lambda: scp.received() == sop_uids(ct), 90, "the CT instances at storescp")
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    assert scp.store_requests() == len(ct)  # each once
    status, jobs, _ = call(rest, "GET", "/jobs?expand")
    routed = [j for j in jobs if j["Content"].get("Description", "").startswith("Route ")]
    # the four queued first, then one job for all the held ones
    assert len(routed) == 5 and {j["State"] for j in routed} == {"Success"}, routed
    assert sum(j["Content"]["InstancesCount"] for j in routed) == len(ct)


def test_router_killed_midway_loses_nothing(routing, scp_factory, tmp_path):
    """Both jobs processes killed -9 while instances are being routed, more
    instances stored while no router runs, then one jobs process started: every
    CT arrives (the cursor and the deliveries are in PostgreSQL). Delivery is at
    least once: a step whose job id was not recorded is sent again, to the same
    file name at the destination, so the files are exactly the CT instances and
    the C-STORE requests are counted, not required to be one each."""
    rest = routing.rests[0]
    scp = scp_factory(sleep_after=1)  # a slow destination: a second per association
    add_modality(rest, "x", scp.port)
    create_route(rest, CT_RULE)
    study = "1.2.826.0.1.3680043.8.498.23.40"
    first = make_files(tmp_path / "f", 30, study, study + ".1")
    send_split(routing.ingests, first)
    wait_for(lambda: len(scp.received()) >= 3, 30, "the first instances at storescp")
    for j in routing.jobs:
        j.stop(signal.SIGKILL)
    # killed mid-way: deliveries were in flight, running or waiting
    in_flight = routing.sql("SELECT state, count(*) FROM route_deliveries GROUP BY state")
    print("deliveries when killed:", in_flight, "received:", len(scp.received()))
    assert sum(n for _, n in in_flight) > 0 and len(scp.received()) < len(first)
    second = make_files(tmp_path / "f", 10, study, study + ".2")
    send_split(routing.ingests, second)  # no router is running now
    assert len(scp.received()) < len(first) + len(second)
    routing.start_jobs(TESSERA_STABLE_AGE=AGE, TESSERA_ROUTER_RETRY_DELAY=1,
                       TESSERA_ROUTER_MAX_ATTEMPTS=3, TESSERA_ROUTER_INTERVAL=100)
    want = sop_uids(first + second)
    # claims of the killed processes are taken again when their 10 s lease ends
    wait_for(lambda: scp.received() >= want, 90, "every CT after the restart")
    wait_for(lambda: not deliveries(rest), 30, "the deliveries to finish")
    assert scp.received() == want
    requests = scp.store_requests()
    assert requests >= len(want)
    print(f"C-STORE requests: {requests} for {len(want)} instances")
    assert not deliveries(rest, "dead")


# ---- rules over REST --------------------------------------------------------------------

def error(resp):
    status, body = resp[0], js(resp)
    assert isinstance(body, dict), body
    return status, body


BAD_RULES = [
    (b"{not json", "not JSON: line 1"),
    (b"[]", "a rule is a JSON object"),
    ({"Trigger": "StableStudy"}, "\"Actions\" must be a list"),
    ({"Trigger": "Whenever", "Actions": [{"Type": "StoreToModality", "Modality": "x"}]},
     "\"Trigger\" must be one of"),
    ({"Trigger": "NewInstance", "Conditions": {"Modalty": "CT"},
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "\"Modalty\": not a DICOM tag"),
    ({"Trigger": "NewInstance", "Conditions": {"PixelData": "*"},
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "not one of the main DICOM"),
    ({"Trigger": "NewInstance", "Conditions": {"Modality": []},
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "condition \"Modality\""),
    ({"Trigger": "NewInstance", "Conditions": {"Modality": 3},
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "condition \"Modality\""),
    ({"Trigger": "NewInstance", "Actions": []}, "\"Actions\" must be a list of 1 to 16"),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "StoreToModality", "Modality": "nope"}]},
     "unknown modality \"nope\""),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "StoreToPeer", "Peer": "nope"}]},
     "unknown peer \"nope\""),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "Modify", "Replace": {}}]},
     "Modify is a field of the store action"),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "Anonymize"}]},
     "Anonymize is a field of the store action"),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x", "Transcode": "1.2.3.4"}]},
     "\"Transcode\" must be a transfer syntax UID Tessera knows (1.2.3.4 is not)"),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x", "Transcode": 12}]},
     "\"Transcode\" must be a transfer syntax UID (text)"),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x", "Anonymize": "yes"}]},
     "\"Anonymize\" is an object"),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x", "Anonymize": {},
                   "Modify": {"Replace": {"PatientName": "A"}}}]},
     "\"Anonymize\" or \"Modify\", not both"),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x",
                   "Modify": {"Replace": {"NoSuchTag": "A"}}}]},
     "Actions[0]: \"Modify\": "),
    ({"Trigger": "NewInstance",
      "Actions": [{"Type": "StoreToModality", "Modality": "x", "Secret": "0123456789abcdef"}]},
     "\"Secret\""),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "Delete"}]}, "Delete is the last action"),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "Delete"},
                                             {"Type": "StoreToModality", "Modality": "x"}]},
     "Delete is the last action"),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "Forward"}]}, "unknown action type"),
    ({"Trigger": "NewInstance", "Actions": [{"Type": "StoreToModality"}]},
     "needs \"Modality\""),
    ({"Trigger": "NewInstance", "Enabled": "yes",
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "\"Enabled\" is true or false"),
    ({"Trigger": "NewInstance", "Colour": "red",
      "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}, "unknown field \"Colour\""),
]


def test_bad_rules_get_400_with_what_is_wrong_and_create_nothing(routing):
    rest = routing.rests[0]
    add_modality(rest, "x", 11112)
    for body, words in BAD_RULES:
        status, err = error(call(rest, "POST", "/tessera/routes", body))
        assert status == 400, (body, err)
        assert err["HttpStatus"] == 400 and words in err["Details"], (body, err)
    assert call(rest, "GET", "/tessera/routes")[1] == []
    # the same checks on an update
    route = create_route(rest, CT_RULE)
    status, err = error(call(rest, "PUT", f"/tessera/routes/{route['ID']}", BAD_RULES[5][0]))
    assert status == 400 and "not one of the main DICOM" in err["Details"]


def test_rules_crud_with_revisions(routing):
    rest = routing.rests[0]
    add_modality(rest, "x", 11112)
    created = create_route(rest, dict(CT_RULE, Conditions={"0008,0060": "CT",
                                                           "StudyDescription": ["HEAD*", "A?"]}))
    rid = created["ID"]
    # normalised: the tag by name, one pattern as a list of one, Enabled filled in
    assert created == {"ID": rid, "Revision": 0, "Name": "every CT to X", "Enabled": True,
                       "Trigger": "NewInstance",
                       "Conditions": {"Modality": ["CT"], "StudyDescription": ["HEAD*", "A?"]},
                       "Actions": [{"Type": "StoreToModality", "Modality": "x"}]}
    status, got, headers = call(rest, "GET", f"/tessera/routes/{rid}")
    assert status == 200 and got == created and headers["ETag"].startswith('"0-')
    assert call(rest, "GET", "/tessera/routes")[1] == [created]
    changed = dict(CT_RULE, Name="renamed", Enabled=False)
    status, err = error(call(rest, "PUT", f"/tessera/routes/{rid}", changed))
    assert status == 409 and "If-Match" in err["Details"]
    # If-Match gives back the whole ETag, as for metadata (a bare revision is malformed)
    etag0 = headers["ETag"]
    status, body, _ = http_with(rest, "PUT", f"/tessera/routes/{rid}", changed, {"If-Match": "0"})
    assert status == 400, body
    stale = etag0.replace('"0-', '"7-')
    status, body, _ = http_with(rest, "PUT", f"/tessera/routes/{rid}", changed, {"If-Match": stale})
    assert status == 409, body
    status, body, _ = http_with(rest, "PUT", f"/tessera/routes/{rid}", changed, {"If-Match": etag0})
    assert status == 200 and body["Revision"] == 1 and body["Name"] == "renamed"
    assert body["Enabled"] is False
    assert call(rest, "GET", "/tessera/routes/nope")[0] == 404
    assert call(rest, "DELETE", f"/tessera/routes/{rid}")[0] == 409
    assert http_with(rest, "DELETE", f"/tessera/routes/{rid}", None, {"If-Match": etag0})[0] == 409
    etag1 = call(rest, "GET", f"/tessera/routes/{rid}")[2]["ETag"]
    assert http_with(rest, "DELETE", f"/tessera/routes/{rid}", None, {"If-Match": etag1})[0] == 200
    assert call(rest, "GET", f"/tessera/routes/{rid}")[0] == 404


def http_with(rest, method, path, body, headers):
    from orthanc import http
    data = json.dumps(body).encode() if body is not None else None
    status, raw, h = http(rest.url, method, path, data, headers)
    return status, (json.loads(raw) if raw else None), h


def test_dry_run_against_a_resource(routing, tmp_path):
    rest = routing.rests[0]
    add_modality(rest, "x", 11112)
    rid = create_route(rest, dict(CT_RULE, Conditions={"Modality": "CT",
                                                       "CallingAet": ["SCANNER*", "STORE?CU"]}))["ID"]
    study = "1.2.826.0.1.3680043.8.498.23.50"
    ct = make_files(tmp_path / "f", 1, study, study + ".1")
    mr = make_files(tmp_path / "f", 1, study, study + ".2", modality="MR")
    rc, out = storescu(routing.ingests[0], ct + mr)  # calling AET STORESCU
    assert rc == 0, out
    status, found, _ = call(rest, "POST", "/tools/lookup", str(sop_uids(ct).pop()).encode())
    ct_id = found[0]["ID"]
    status, found, _ = call(rest, "POST", "/tools/lookup", str(sop_uids(mr).pop()).encode())
    mr_id = found[0]["ID"]
    status, r, _ = call(rest, "POST", f"/tessera/routes/{rid}/test", ct_id.encode())
    assert status == 200 and r["Matches"] is True, r
    assert r["Actions"] == [{"Type": "StoreToModality", "Modality": "x"}]
    status, r, _ = call(rest, "POST", f"/tessera/routes/{rid}/test", {"Resource": mr_id})
    assert status == 200 and r["Matches"] is False and r["ConditionsMatch"] is False, r
    sid = study_id(rest, study)
    status, r, _ = call(rest, "POST", f"/tessera/routes/{rid}/test", sid.encode())
    # the study has a CT instance, but the trigger is NewInstance
    assert r["ConditionsMatch"] is True and r["Matches"] is False and "Reason" in r, r
    # a calling AET outside the list: no match
    rid2 = create_route(rest, dict(CT_RULE, Conditions={"CallingAet": "SCANNER*"}))["ID"]
    assert call(rest, "POST", f"/tessera/routes/{rid2}/test", ct_id.encode())[1]["Matches"] is False
    assert call(rest, "POST", f"/tessera/routes/{rid}/test", b"not-an-id")[0] == 400
    assert call(rest, "POST", f"/tessera/routes/{rid}/test",
                b"00000000-00000000-00000000-00000000-00000000")[0] == 404
    assert call(rest, "POST", "/tessera/routes/nope/test", ct_id.encode())[0] == 404


# ---- beside Orthanc 1.10.1 ---------------------------------------------------------------

def test_stable_changes_like_orthanc_and_store_to_orthanc_peer_then_delete(routing, tmp_path):
    """The same study into Orthanc (StableAge 2) and into Tessera: the same Stable*
    changes in /changes (Seq and Date aside) and IsStable; then a rule
    'StableSeries with Modality CT -> store to the Orthanc peer, then delete'
    sends the series to Orthanc over HTTP (an OrthancPeerStore job) and deletes it
    here once Orthanc has it."""
    from orthanc import Orthanc
    rest = routing.rests[0]
    study = "1.2.826.0.1.3680043.8.498.23.60"
    files = make_files(tmp_path / "f", 3, study, study + ".1")
    with Orthanc(tmp_path / "orthanc", StableAge=AGE) as ref:
        for f in files:
            assert ref.upload(f)[0] == 200
        send_split(routing.ingests, files)

        def stable_of(base):
            status, body, _ = call(base, "GET", "/changes?limit=1000")
            got = js((status, body))
            return sorted(((c["ChangeType"], c["ResourceType"], c["ID"], c["Path"])
                           for c in got["Changes"] if c["ChangeType"].startswith("Stable")))
        want = wait_for(lambda: len(stable_of(ref)) == 3 and stable_of(ref), AGE + 20,
                        "Orthanc's stable changes")
        got = wait_for(lambda: len(stable_of(rest)) == 3 and stable_of(rest), AGE + 20,
                       "Tessera's stable changes")
        assert got == want
        sid = study_id(rest, study)
        assert js(call(ref, "GET", f"/studies/{sid}"))["IsStable"] is True
        assert call(rest, "GET", f"/studies/{sid}")[1]["IsStable"] is True

        # the peer, and a rule that sends a series there and deletes it after
        status, body, _ = call(rest, "PUT", "/peers/ref", {"Url": ref.url})
        assert status == 200, body
        create_route(rest, {"Trigger": "StableSeries", "Conditions": {"Modality": "CT"},
                            "Actions": [{"Type": "StoreToPeer", "Peer": "ref"},
                                        {"Type": "Delete"}]})
        study2 = "1.2.826.0.1.3680043.8.498.23.61"
        more = make_files(tmp_path / "g", 4, study2, study2 + ".1", patient="PAT-PEER")
        send_split(routing.ingests, more)
        sid2 = study_id(rest, study2)
        wait_for(lambda: call(rest, "GET", f"/studies/{sid2}")[0] == 404, AGE + 30,
                 "the series sent to the peer and deleted here")
        status, body, _ = call(ref, "POST", "/tools/lookup", study2.encode())
        study_ref = [r for r in js((status, body)) if r["Type"] == "Study"][0]["ID"]
        assert study_ref == sid2
        assert len(js(call(ref, "GET", f"/studies/{sid2}/instances"))) == 4
        # the delivery row goes in the router's next statement, after the deletion
        wait_for(lambda: not deliveries(rest), 10, "the delivery to finish")
        # the first study was not touched: it was stable before the rule existed
        assert call(rest, "GET", f"/studies/{sid}")[0] == 200
        peer_jobs = [j for j in call(rest, "GET", "/jobs?expand")[1]
                     if j["Type"] == "OrthancPeerStore"]
        assert len(peer_jobs) == 1 and peer_jobs[0]["State"] == "Success", peer_jobs


def test_modality_removed_after_the_rule_makes_the_delivery_dead_at_once(routing, tmp_path):
    """A destination deleted after the rule was made: no retries (they cannot
    help), the delivery is dead with the reason; once the modality is back, a
    resubmit delivers."""
    rest = routing.rests[0]
    add_modality(rest, "gone", 11112)
    create_route(rest, dict(CT_RULE, Actions=[{"Type": "StoreToModality", "Modality": "gone"}]))
    assert call(rest, "DELETE", "/modalities/gone")[0] == 200
    study = "1.2.826.0.1.3680043.8.498.23.70"
    ct = make_files(tmp_path / "f", 1, study, study + ".1")
    rc, out = storescu(routing.ingests[0], ct)
    assert rc == 0, out
    dead = wait_for(lambda: deliveries(rest, "dead"), 20, "a dead delivery")
    assert dead[0]["Attempts"] == 1 and "the modality gone no longer exists" in dead[0]["LastError"]
    assert dead[0]["Job"] is None
    # a rule naming it now is refused
    status, err = error(call(rest, "POST", "/tessera/routes",
                             dict(CT_RULE, Actions=[{"Type": "StoreToModality",
                                                     "Modality": "gone"}])))
    assert status == 400 and "unknown modality \"gone\"" in err["Details"]
    # back, with a receiver: the resubmitted delivery goes through
    from test_jobs import StoreScp as Scp
    scp = Scp(tmp_path / "scp").start()
    try:
        add_modality(rest, "gone", scp.port)
        assert call(rest, "POST", f"/tessera/route-deliveries/{dead[0]['ID']}/resubmit")[0] == 200
        wait_for(lambda: scp.received() == sop_uids(ct), 30, "the instance after the resubmit")
        wait_for(lambda: not deliveries(rest), 20, "the delivery to finish")
    finally:
        scp.stop()


# ---- transcoding and modification before a store ------------------------------------------

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def received_files(scp):
    return sorted(p for p in scp.dir.iterdir() if p.is_file())


def test_transcode_rule_sends_jpeg2000_as_explicit_little_endian(routing, scp_factory):
    """Two rules on the same JPEG 2000 instance: the one with "Transcode" delivers it in
    Explicit VR Little Endian (the job proposes that syntax and converts the pixel data),
    the other as stored; both storescps accept any syntax (+xa), so the difference is the
    rule's. The stored instance keeps its syntax."""
    rest = routing.rests[0]
    plain, le = scp_factory(extra=["+xa"]), scp_factory(extra=["+xa"])
    add_modality(rest, "plain", plain.port)
    add_modality(rest, "le", le.port)
    create_route(rest, {"Trigger": "NewInstance",
                        "Actions": [{"Type": "StoreToModality", "Modality": "plain"}]})
    route = create_route(rest, {"Trigger": "NewInstance",
                                "Actions": [{"Type": "StoreToModality", "Modality": "le",
                                             "Transcode": EXPLICIT_LE}]})
    assert route["Actions"][0]["Transcode"] == EXPLICIT_LE
    src = PYDICOM_FILES / "JPEG2000.dcm"
    original = pydicom.dcmread(src)
    j2k = str(original.file_meta.TransferSyntaxUID)
    assert j2k.startswith("1.2.840.10008.1.2.4.9")
    status, body, _ = call(rest, "POST", "/instances", src.read_bytes())
    assert status == 200, body
    wait_for(lambda: received_files(plain) and received_files(le), 60, "both storescps")
    got_plain = pydicom.dcmread(received_files(plain)[0])
    got_le = pydicom.dcmread(received_files(le)[0])
    assert str(got_plain.file_meta.TransferSyntaxUID) == j2k
    assert str(got_le.file_meta.TransferSyntaxUID) == EXPLICIT_LE
    assert got_le.SOPInstanceUID == original.SOPInstanceUID  # lossless: the same instance
    frames = int(getattr(original, "NumberOfFrames", 1) or 1)
    want = (original.Rows * original.Columns * original.SamplesPerPixel
            * (original.BitsAllocated // 8) * frames)
    assert len(got_le.PixelData) in (want, want + 1)  # native pixels (padded to even length)
    status, ts, _ = call(rest, "GET", f"/instances/{body['ID']}/metadata/TransferSyntax")
    assert status == 200 and ts.decode() == j2k  # what is stored is unchanged
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    status, jobs, _ = call(rest, "GET", "/jobs?expand")
    le_jobs = [j for j in jobs if j["Content"].get("RemoteAet") == "STORESCP"
               and j["Content"].get("Transcode") == EXPLICIT_LE]
    assert len(le_jobs) == 1 and le_jobs[0]["State"] == "Success"


def test_anonymize_then_store_sends_the_anonymized_copy_and_keeps_the_original(
        routing, scp_factory, tmp_path):
    """'Anonymize then store to modality X' (Orthanc's Lua ModifyInstance + SendToModality):
    the anonymized instance is sent, nothing new is stored, the original stays. The rule's
    secret maps UIDs the same way in every job, so a study routed instance by instance stays
    one anonymized study (and one anonymized patient) at the destination. A second rule
    modifies (Replace PatientName) before its store: new SOPInstanceUIDs, the study kept,
    as Orthanc's instance-level modification."""
    rest = routing.rests[0]
    anon_scp, mod_scp = scp_factory(), scp_factory()
    add_modality(rest, "anon", anon_scp.port)
    add_modality(rest, "mod", mod_scp.port)
    route = create_route(rest, {"Trigger": "NewInstance", "Conditions": {"Modality": "CT"},
                                "Actions": [{"Type": "StoreToModality", "Modality": "anon",
                                             "Anonymize": {}}]})
    secret = route["Actions"][0]["Secret"]
    assert len(secret) == 64
    create_route(rest, {"Trigger": "NewInstance",
                        "Actions": [{"Type": "StoreToModality", "Modality": "mod",
                                     "Modify": {"Replace": {"PatientName": "MOD^IFIED"}}}]})
    study = "1.2.826.0.1.3680043.8.498.23.40"
    files = make_files(tmp_path / "f", 4, study, study + ".1")
    originals = sop_uids(files)
    # two rounds: the deliveries of each go out in separate jobs
    for n in (2, 4):
        rc, out = storescu(routing.ingests[0], files[n - 2:n])
        assert rc == 0, out
        wait_for(lambda: len(received_files(anon_scp)) >= n, 60, "the anonymized instances")
    wait_for(lambda: len(received_files(mod_scp)) >= 4, 60, "the modified instances")
    anon = [pydicom.dcmread(p) for p in received_files(anon_scp)]
    assert len(anon) == 4
    assert all(str(d.PatientName).startswith("Anonymized") for d in anon)
    assert {str(d.PatientName) for d in anon} != {"ROUTE^TEST"}
    assert len({str(d.PatientName) for d in anon}) == 1
    assert len({d.PatientID for d in anon}) == 1 and anon[0].PatientID != "PAT-R"
    assert {d.SOPInstanceUID for d in anon}.isdisjoint(originals)
    assert len({d.SOPInstanceUID for d in anon}) == 4
    assert len({d.StudyInstanceUID for d in anon}) == 1 and anon[0].StudyInstanceUID != study
    assert anon[0].SeriesInstanceUID != study + ".1"
    assert all(d.get("PatientIdentityRemoved") == "YES" for d in anon)
    mod = [pydicom.dcmread(p) for p in received_files(mod_scp)]
    assert len(mod) == 4 and {str(d.PatientName) for d in mod} == {"MOD^IFIED"}
    assert {d.SOPInstanceUID for d in mod}.isdisjoint(originals)
    assert {d.StudyInstanceUID for d in mod} == {study} and {d.PatientID for d in mod} == {"PAT-R"}
    # the originals stay, unmodified, and no copy was stored
    wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
    status, stats, _ = call(rest, "GET", "/statistics")
    assert stats["CountInstances"] == 4
    sid = study_id(rest, study)
    status, tags, _ = call(rest, "GET", f"/studies/{sid}")
    assert tags["PatientMainDicomTags"]["PatientName"] == "ROUTE^TEST"
    status, kept, _ = call(rest, "GET", f"/studies/{sid}/instances")
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in kept} == originals
    # a PUT that sends the rule back keeps its secret; the same original maps the same way
    status, body, _ = call(rest, "GET", f"/tessera/routes/{route['ID']}")
    assert body["Actions"][0]["Secret"] == secret


def test_anonymize_and_transcode_then_store_to_orthanc_peer_as_orthanc_anonymizes(
        routing, tmp_path):
    """StoreToPeer with "Anonymize" and "Transcode": Orthanc 1.10.1 (the peer) receives the
    anonymized instances in the syntax asked for, nothing else is stored here, and each
    received instance has the tags Orthanc's own POST /instances/{id}/anonymize gives the
    same original (same tags, same values apart from the new UIDs and the anonymized
    patient's ID and name, which Tessera derives from the rule's secret so that a patient
    stays one patient across deliveries)."""
    from orthanc import Orthanc
    import io
    rest = routing.rests[0]
    study = "1.2.826.0.1.3680043.8.498.23.70"
    files = make_files(tmp_path / "f", 2, study, study + ".1", patient="PAT-ANON")
    implicit = "1.2.840.10008.1.2"
    with Orthanc(tmp_path / "orthanc") as ref:
        status, body, _ = call(rest, "PUT", "/peers/ref", {"Url": ref.url})
        assert status == 200, body
        create_route(rest, {"Trigger": "NewInstance",
                            "Actions": [{"Type": "StoreToPeer", "Peer": "ref", "Anonymize": {},
                                         "Transcode": implicit}]})
        send_split(routing.ingests, files)
        got = wait_for(lambda: len(js(call(ref, "GET", "/instances"))) == 2
                       and js(call(ref, "GET", "/instances")), 60, "the anonymized instances")
        wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
        assert call(rest, "GET", "/statistics")[1]["CountInstances"] == 2  # the originals only
        received = []
        for i in got:
            ts = call(ref, "GET", f"/instances/{i}/metadata/TransferSyntax")[1]
            assert ts == implicit.encode(), ts
            received.append(pydicom.dcmread(io.BytesIO(call(ref, "GET", f"/instances/{i}/file")[1])))
        assert len({d.PatientID for d in received}) == 1
        assert {d.PatientID for d in received} != {"PAT-ANON"}
        # Orthanc's anonymization of the same originals
        by_number = {int(d.InstanceNumber): d for d in received}
        # new UIDs (InstanceCreatorUID included) differ by nature; DeidentificationMethod
        # names the product before the profile
        skip = {"PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
                "SOPInstanceUID", "FrameOfReferenceUID", "InstanceCreatorUID",
                "DeidentificationMethod"}
        for f in files:
            status, up, _ = call(ref, "POST", "/instances", f.read_bytes())
            oid = js((status, up))["ID"]
            status, data, _ = call(ref, "POST", f"/instances/{oid}/anonymize", {})
            assert status == 200
            want = pydicom.dcmread(io.BytesIO(data))
            have = by_number[int(want.InstanceNumber)]
            want_tags = {e.keyword or str(e.tag): e.value for e in want if e.keyword not in skip
                         and e.tag != 0x7FE00010}
            have_tags = {e.keyword or str(e.tag): e.value for e in have if e.keyword not in skip
                         and e.tag != 0x7FE00010}
            assert have_tags == want_tags
            assert set(have.dir()) == set(want.dir())
            assert have.DeidentificationMethod.split(" - ", 1)[1] == \
                want.DeidentificationMethod.split(" - ", 1)[1]
            assert have.SOPInstanceUID != want.SOPInstanceUID != f.name
            assert str(have.PatientName).startswith("Anonymized")


def test_a_modification_the_instance_cannot_take_fails_the_step_and_sends_nothing(
        routing, scp_factory, tmp_path):
    """A "Modify" that passes the rule's checks but not an instance (a value the tag's VR
    cannot hold): the store job fails with the instance and the reason, the step is retried
    and then dead with that reason; nothing reaches the destination and the original stays."""
    rest = routing.rests[0]
    scp = scp_factory()
    add_modality(rest, "x", scp.port)
    create_route(rest, {"Trigger": "NewInstance",
                        "Actions": [{"Type": "StoreToModality", "Modality": "x",
                                     "Modify": {"Replace": {"Rows": "many"}}}]})
    study = "1.2.826.0.1.3680043.8.498.23.80"
    files = make_files(tmp_path / "f", 1, study, study + ".1")
    rc, out = storescu(routing.ingests[0], files)
    assert rc == 0, out
    dead = wait_for(lambda: deliveries(rest, "dead"), 60, "the dead delivery")
    assert len(dead) == 1 and dead[0]["Attempts"] == 3, dead
    assert "modifying instance" in dead[0]["LastError"], dead
    assert "0028,0010" in dead[0]["LastError"], dead  # the tag that cannot take it
    assert scp.received() == set() and scp.store_requests() == 0
    assert call(rest, "GET", "/statistics")[1]["CountInstances"] == 1
