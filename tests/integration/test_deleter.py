"""Deletions: the DELETE routes of tessera-rest (compared with a real Orthanc 1.10.1),
the deletion queue drained by tessera-deleter processes, and tessera-fsck.

Differences from Orthanc, on purpose:
- /changes: Orthanc 1.10.1 drops the changes of a deleted resource from its log and
  records no "Deleted" change; Tessera keeps the log as it was (no holes in Seq) and
  appends a "Deleted" change for the resource deleted and for each ancestor removed
  because it became empty (not one per descendant). Once the last patient is gone,
  both logs are empty and keep their Last (test_rest.py).
- The files of deleted resources are removed by the deleter service after the DELETE
  has answered, not during it.
"""
import json
import random
import signal
import subprocess
import threading
import time
import urllib.request
import uuid as uuidlib
from types import SimpleNamespace

import pytest

from conftest import storescu
from orthanc import http, orthanc  # noqa: F401  (orthanc is a fixture)
from test_ingest import make_series


def rest_json(rest, method, path, body=None):
    status, data, headers = http(rest.url, method, path, body)
    return status, (json.loads(data) if data and headers.get("Content-Type", "").startswith(
        "application/json") else data)


def make_study(base, study, patient, series_counts):
    """Files of one study: len(series_counts) series with that many instances each."""
    files = []
    for k, n in enumerate(series_counts):
        files += make_series(base / f"{study}-{k}", n, study_uid=f"1.2.826.0.1.3680043.8.498.{study}",
                             series_uid=f"1.2.826.0.1.3680043.8.498.{study}.{k + 1}",
                             patient=patient)
    return files


def pending_files(cluster):
    """Files waiting for the deleter: queued, or of removed resources not yet
    purged (db/functions/delete.sql)."""
    return cluster.sql("SELECT length FROM tessera_deletion_queue_status()")[0][0]


def wait_drained(cluster, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pending_files(cluster) == 0 and \
                cluster.sql("SELECT count(*) FROM deletion_purge")[0][0] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the deletion queue did not drain: "
                         + str(cluster.sql("SELECT count(*), max(last_error) FROM deletion_queue")))


def assert_consistent(cluster):
    """Every attachment row has its file and every file has its row; fsck agrees."""
    rows = {r[0] for r in cluster.sql("SELECT uuid::text FROM attachments")}
    files = {p.name for p in cluster.stored_files()}
    assert files == rows, (sorted(files - rows)[:5], sorted(rows - files)[:5])
    rc, out = cluster.fsck("--min-age", "0")
    assert rc == 0, out
    assert "orphan_files=0 missing_files=0" in out, out


def deleter_metric(deleter, name):
    with urllib.request.urlopen(deleter.url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


@pytest.fixture
def pair(cluster, orthanc, tmp_path):  # noqa: F811
    """Orthanc and Tessera (ingest, rest, one deleter) holding the same two studies of
    one patient (2 series of 2 instances each) and a second patient (1 instance)."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    deleter = cluster.start_deleter()
    files = (make_study(tmp_path / "gen", 10, "PAT-A", [2, 2])
             + make_study(tmp_path / "gen", 11, "PAT-A", [2, 2])
             + make_study(tmp_path / "gen", 12, "PAT-B", [1]))
    for f in files:
        data = f.read_bytes()
        assert http(rest.url, "POST", "/instances", data)[0] == 200
        assert orthanc.upload(data)[0] == 200
    return SimpleNamespace(rest=rest, ref=orthanc, cluster=cluster, deleter=deleter, files=files)


def both(pair, method, path, body=None):
    """The same request to both servers: ((status, body) of Orthanc, of Tessera)."""
    a = http(pair.ref.url, method, path, body)
    b = http(pair.rest.url, method, path, body)
    return (a[0], a[1]), (b[0], b[1])


def test_delete_each_level_like_orthanc(pair):
    c = pair.cluster
    pat = pair.ref.get_json("/patients?expand")
    pat_a = next(p for p in pat if p["MainDicomTags"]["PatientID"] == "PAT-A")
    pat_b = next(p for p in pat if p["MainDicomTags"]["PatientID"] == "PAT-B")
    study = pair.ref.get_json(f"/studies/{pat_a['Studies'][0]}")
    series = pair.ref.get_json(f"/series/{study['Series'][0]}")
    files_before = len(c.stored_files())
    last_before = rest_json(pair.rest, "GET", "/changes?last")[1]["Last"]

    steps = [
        ("DELETE", f"/instances/{series['Instances'][0]}"),   # -> series remains
        ("DELETE", f"/series/{series['ID']}"),                # -> study remains
        ("DELETE", f"/series/{study['Series'][1]}"),          # study emptied -> patient remains
        ("DELETE", f"/studies/{study['ID']}"),                # gone already: 404
        ("DELETE", f"/instances/{pat_b['ID']}"),              # a patient id at instance level: 404
        ("DELETE", f"/patients/{pat_b['ID']}"),               # -> nothing remains (null)
        ("DELETE", "/patients/nonexistent"),
    ]
    for method, path in steps:
        (sa, ba), (sb, bb) = both(pair, method, path)
        assert sb == sa, (path, sa, ba, sb, bb)
        if sa == 200:
            assert json.loads(bb) == json.loads(ba), (path, ba, bb)
        else:
            assert bb == ba == b"", (path, ba, bb)

    for level in ("patients", "studies", "series", "instances"):
        ref = sorted(pair.ref.get_json(f"/{level}"))
        assert sorted(rest_json(pair.rest, "GET", f"/{level}")[1]) == ref, level
    ref_stats = pair.ref.get_json("/statistics")
    stats = rest_json(pair.rest, "GET", "/statistics")[1]
    for k in ("CountPatients", "CountStudies", "CountSeries", "CountInstances"):
        assert stats[k] == ref_stats[k], (k, stats, ref_stats)

    # 1 + 1 + 2 instances of study 10 and the instance of PAT-B: 5 files queued,
    # removed by the deleter; the other study's 4 files stay.
    wait_drained(c)
    assert len(c.stored_files()) == files_before - 5 == 4
    assert_consistent(c)
    assert int(stats["TotalDiskSize"]) == sum(p.stat().st_size for p in c.stored_files())

    changes = rest_json(pair.rest, "GET", f"/changes?since={last_before}&limit=100")[1]["Changes"]
    deleted = [(ch["ChangeType"], ch["ResourceType"], ch["ID"]) for ch in changes]
    assert deleted == [
        ("Deleted", "Instance", series["Instances"][0]),
        ("Deleted", "Series", series["ID"]),
        ("Deleted", "Series", study["Series"][1]),
        ("Deleted", "Study", study["ID"]),
        ("Deleted", "Patient", pat_b["ID"]),
    ], deleted
    # the log keeps its earlier entries: no holes in Seq
    seqs = [ch["Seq"] for ch in rest_json(pair.rest, "GET", "/changes?limit=1000")[1]["Changes"]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_bulk_delete_like_orthanc(pair):
    pat = pair.ref.get_json("/patients?expand")
    pat_a = next(p for p in pat if p["MainDicomTags"]["PatientID"] == "PAT-A")
    pat_b = next(p for p in pat if p["MainDicomTags"]["PatientID"] == "PAT-B")
    inst = pair.ref.get_json(f"/studies/{pat_a['Studies'][1]}/instances")[0]["ID"]
    body = json.dumps({"Resources": [pat_a["Studies"][0], inst, "unknown-id",
                                     pat_b["ID"]]}).encode()
    (sa, ba), (sb, bb) = both(pair, "POST", "/tools/bulk-delete", body)
    assert (sa, ba) == (200, b"") and (sb, bb) == (200, b""), (sa, ba, sb, bb)
    for level in ("patients", "studies", "series", "instances"):
        ref = sorted(pair.ref.get_json(f"/{level}"))
        assert sorted(rest_json(pair.rest, "GET", f"/{level}")[1]) == ref, level
    wait_drained(pair.cluster)
    assert_consistent(pair.cluster)
    assert len(pair.cluster.stored_files()) == 3


@pytest.mark.parametrize("body,status,orthanc_status", [
    (b"not json", 400, 8), (b"[1, 2]", 400, 8), (b'{"x": 1}', 400, 15),
    (b'{"Resources": "abc"}', 400, 15), (b'{"Resources": [1]}', 400, 15)])
def test_bulk_delete_bad_bodies(pair, body, status, orthanc_status):
    (sa, ba), (sb, bb) = both(pair, "POST", "/tools/bulk-delete", body)
    assert sa == sb == status
    a, b = json.loads(ba), json.loads(bb)
    assert a["OrthancStatus"] == b["OrthancStatus"] == orthanc_status, (a, b)
    assert a["Details"] == b["Details"]
    # nothing was deleted
    assert len(rest_json(pair.rest, "GET", "/instances")[1]) == 9


def test_queue_status_route_and_metrics(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    files = make_study(tmp_path / "gen", 20, "PAT-Q", [30])
    kept = make_study(tmp_path / "gen", 21, "PAT-KEPT", [3])
    rc, out = storescu(ing, files + kept)
    assert rc == 0, out
    studies = rest_json(rest, "GET", "/studies?expand")[1]
    study = [s["ID"] for s in studies if s["PatientMainDicomTags"]["PatientID"] == "PAT-Q"][0]
    kept_study = [s["ID"] for s in studies if s["ID"] != study][0]
    kept_size = rest_json(rest, "GET", f"/studies/{kept_study}/statistics")[1]["DiskSize"]
    doomed_instances = rest_json(rest, "GET", f"/studies/{study}/instances")[1]
    status, answer = rest_json(rest, "DELETE", f"/studies/{study}")
    assert status == 200 and answer == {"RemainingAncestor": None}, answer
    # No deleter yet: the files wait, their attachment rows not yet purged; the
    # index shows only the live study already (counts, sizes, lookups).
    stats = rest_json(rest, "GET", "/statistics")[1]
    assert stats["CountInstances"] == 3 and stats["CountStudies"] == 1, stats
    assert stats["TotalDiskSize"] == kept_size, (stats, kept_size)
    for inst in doomed_instances[:3]:
        assert rest_json(rest, "GET", f"/instances/{inst['ID']}")[0] == 404
        assert rest_json(rest, "GET", f"/instances/{inst['ID']}/metadata")[0] == 404
    assert len(cluster.stored_files()) == 33
    q = rest_json(rest, "GET", "/tessera/deletion-queue")[1]
    assert q["Length"] == 30 and q["OldestAgeSeconds"] >= 0 and q["Failing"] == 0, q
    d = cluster.start_deleter()
    wait_drained(cluster)
    assert len(cluster.stored_files()) == 3
    assert_consistent(cluster)
    q = rest_json(rest, "GET", "/tessera/deletion-queue")[1]
    assert q["Length"] == 0 and q["RemovalRate"] > 0, q
    time.sleep(1.5)  # the deleter refreshes its gauges at least once a second when idle
    assert deleter_metric(d, "tessera_deleter_files_removed_total") == 30
    assert deleter_metric(d, "tessera_deletion_queue_length") == 0
    with urllib.request.urlopen(d.url + "/health", timeout=10) as r:
        assert r.status == 200


def test_nudge_starts_a_pass_before_the_poll_interval(cluster, tmp_path):
    ing = cluster.start_ingest()
    # the deleter first: rest's nudges are dropped while it has no deleter
    # connected, and a rest started earlier redials only every 2 s at most
    cluster.start_deleter(TESSERA_DELETER_POLL_INTERVAL=3600)
    rest = cluster.start_rest(ing)
    rc, out = storescu(ing, make_study(tmp_path / "gen", 21, "PAT-N", [3]))
    assert rc == 0, out
    time.sleep(0.5)  # the deleter's first (empty) pass is over; it now waits for an hour
    study = rest_json(rest, "GET", "/studies")[1][0]
    assert rest_json(rest, "DELETE", f"/studies/{study}")[0] == 200
    wait_drained(cluster, timeout=10)
    assert cluster.stored_files() == []


def test_two_deleters_remove_every_file_once(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    files = make_study(tmp_path / "gen", 30, "PAT-2D", [150, 150])
    rc, out = storescu(ing, files)
    assert rc == 0, out
    study = rest_json(rest, "GET", "/studies")[1][0]
    assert rest_json(rest, "DELETE", f"/studies/{study}")[0] == 200
    deleters = [cluster.start_deleter(TESSERA_DELETER_BATCH=20) for _ in range(2)]
    wait_drained(cluster)
    time.sleep(1.5)
    removed = [deleter_metric(d, "tessera_deleter_files_removed_total") for d in deleters]
    assert sum(removed) == 300, removed
    for d in deleters:
        assert deleter_metric(d, "tessera_deleter_remove_failures_total") == 0
        log = d.read_log()
        assert "level=warn" not in log and "level=error" not in log, log[-2000:]
    assert cluster.stored_files() == []
    assert_consistent(cluster)


def test_kill_9_deleter_in_the_middle_leaks_nothing(cluster, tmp_path):
    """A study of 2,000 instances deleted; deleters started and killed with SIGKILL
    at random moments; then one runs to the end. Another study, still live, keeps
    every file."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    doomed = make_study(tmp_path / "gen", 40, "PAT-K", [1000, 1000])
    kept = make_study(tmp_path / "gen", 41, "PAT-L", [20])
    rc, out = storescu(ing, doomed + kept)
    assert rc == 0, out[-2000:]
    doomed_study = [s for s in rest_json(rest, "GET", "/studies?expand")[1]
                    if s["PatientMainDicomTags"]["PatientID"] == "PAT-K"][0]["ID"]
    assert rest_json(rest, "DELETE", f"/studies/{doomed_study}")[0] == 200
    rng = random.Random(7)
    killed_mid_batch = 0
    for _ in range(20):
        d = cluster.start_deleter(TESSERA_DELETER_BATCH=300)
        time.sleep(rng.uniform(0, 0.08))
        d.stop(sig=signal.SIGKILL)
        queued = pending_files(cluster)
        on_disk = len(cluster.stored_files()) - 20
        if on_disk < queued:  # files removed whose rows were not yet deleted
            killed_mid_batch += 1
        if queued == 0 or killed_mid_batch >= 3:
            break
    # the point of the test: some kills did land between the removals and the commit
    assert killed_mid_batch >= 1
    cluster.start_deleter()
    wait_drained(cluster)
    assert len(cluster.stored_files()) == 20
    assert_consistent(cluster)
    assert len(rest_json(rest, "GET", "/instances")[1]) == 20


def test_instances_arriving_during_deletion(cluster, tmp_path):
    """Repeated: a study is deleted while more instances of it arrive over C-STORE.
    Each arriving instance is either deleted with the study or stays fully indexed
    with its file; after the queue drains, rows and files match exactly."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    cluster.start_deleter()
    for round_ in range(5):
        first = make_series(tmp_path / f"r{round_}a", 30, study_uid=f"1.2.3.99.{round_}",
                            patient=f"PAT-R{round_}")
        late = make_series(tmp_path / f"r{round_}b", 30, study_uid=f"1.2.3.99.{round_}",
                           patient=f"PAT-R{round_}", first=31)
        rc, out = storescu(ing, first)
        assert rc == 0, out
        study = rest_json(rest, "GET", "/studies")[1][0]
        result = {}
        t = threading.Thread(target=lambda: result.update(s=storescu(ing, late)))
        t.start()
        time.sleep(0.05 * round_)
        status, _ = rest_json(rest, "DELETE", f"/studies/{study}")
        t.join()
        assert status == 200
        assert result["s"][0] == 0, result["s"][1][-2000:]
        wait_drained(cluster)
        assert_consistent(cluster)
        survivors = cluster.sql("SELECT count(*) FROM instances")[0][0]
        # every survivor is a late instance that arrived after the deletion
        assert survivors <= 30
        if survivors:
            assert rest_json(rest, "DELETE", f"/studies/{study}")[0] == 200
            wait_drained(cluster)
        assert cluster.stored_files() == []


def test_fsck_reports_and_repairs(cluster, tmp_path):
    ing = cluster.start_ingest()
    rc, out = storescu(ing, make_series(tmp_path / "gen", 3))
    assert rc == 0, out
    rc, out = cluster.fsck("--min-age", "0")
    assert rc == 0 and "orphan_files=0 missing_files=0" in out, out

    # a row without its file
    lost = cluster.stored_files()[0]
    lost.unlink()
    # a file without a row (as a crash between placing it and indexing it, with
    # its intent lost too, would leave it)
    orphan = str(uuidlib.uuid4())
    d = cluster.storage / orphan[:2] / orphan[2:4]
    d.mkdir(parents=True, exist_ok=True)
    (d / orphan).write_bytes(b"x" * 10)
    # a stray file that is not Tessera's
    (cluster.storage / "ab" / "cd").mkdir(parents=True, exist_ok=True)
    (cluster.storage / "ab" / "cd" / "README").write_text("not ours")

    rc, out = cluster.fsck()  # default --min-age 3600: the fresh orphan is too young
    assert rc == 1 and "orphan_files=0 missing_files=1" in out and "young_files_skipped=1" in out, out
    rc, out = cluster.fsck("--min-age", "0")
    assert rc == 1, out
    assert f"orphan-file uuid={orphan}" in out and f"missing-file uuid={lost.name}" in out, out
    assert "foreign-file" in out and "foreign_files=1" in out, out
    rc, out = cluster.fsck("--min-age", "0", "--repair")
    assert rc == 1 and "repaired=1" in out, out
    assert cluster.sql("SELECT uuid::text FROM deletion_queue") == [(orphan,)]
    cluster.start_deleter()
    wait_drained(cluster)
    assert not (d / orphan).exists()
    rc, out = cluster.fsck("--min-age", "0")
    assert "orphan_files=0 missing_files=1" in out, out


def test_deleter_never_removes_a_referenced_file(cluster, tmp_path):
    """A queue entry for a file that an attachment still references (only a mistake
    could put it there) is dropped with a warning; the file stays."""
    ing = cluster.start_ingest()
    rc, out = storescu(ing, make_series(tmp_path / "gen", 1))
    assert rc == 0, out
    (live,), = cluster.sql("SELECT uuid::text FROM attachments")
    cluster.sql("INSERT INTO deletion_queue (uuid) VALUES (%s)", (live,))
    d = cluster.start_deleter()
    wait_drained(cluster)
    assert [p.name for p in cluster.stored_files()] == [live]
    assert "queued file is referenced by an attachment" in d.read_log()


def test_unremovable_file_is_postponed_not_lost(cluster, tmp_path):
    """A removal that fails (here: a directory where the file should be) is retried
    later with its error recorded; the queue entry is kept."""
    bad = str(uuidlib.uuid4())
    path = cluster.storage / bad[:2] / bad[2:4] / bad
    (path / "sub").mkdir(parents=True)
    d = cluster.start_deleter()  # applies the schema
    cluster.sql("INSERT INTO deletion_queue (uuid) VALUES (%s)", (bad,))
    deadline = time.time() + 10
    while time.time() < deadline:
        rows = cluster.sql("SELECT attempts, last_error FROM deletion_queue")
        if rows and rows[0][0] > 0:
            break
        time.sleep(0.1)
    assert rows[0][0] == 1 and rows[0][1], rows
    assert "cannot remove a file, retried later" in d.read_log()
    assert path.exists()
