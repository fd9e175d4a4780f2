"""The batch store path: a jobs worker hands ingest a chunk of modified copies in
one StoreBatchRequest (proto/tessera.proto), and ingest writes each through its
one write path. What these tests prove:

- a batch with bad items (not DICOM, truncated, too large) stores every good
  item and answers each bad one with its own error, as single requests would;
  nothing of the bad ones is left in the index or the storage area;
- a study-level job whose copy ingest refuses fails naming that instance, the
  other copies are written once, and a resubmit finishes the job;
- ingest killed (SIGKILL) while it stores a job's batch: the job fails saying
  ingest did not answer, what was written stays written once, a deleter settles
  what the dead ingest left in flight, and a resubmit finishes the job with each
  copy once, index and storage area agreeing.
"""
import signal
import subprocess
import time

import pydicom

from conftest import BUILD, PYDICOM_FILES
from test_faults import assert_index_and_storage_agree, settle_intents
from test_ingest import expected_ids, make_series
from test_jobs import call, upload, wait_job

CLIENT = BUILD / "tools/store-client/tessera-store-client"


def store_batch(ing, files):
    p = subprocess.run([str(CLIENT), ing.bus, "--batch", *map(str, files)], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, [line.split(" ", 3) for line in p.stdout.splitlines()]


def big_instance(path, study_uid, series_uid, patient, n):
    """CT_small.dcm at 256x256 (about 130 kB) in the given study: make_series' copy,
    its pixels tiled four times."""
    src = make_series(path.parent / f"big-{n}", 1, study_uid, series_uid, patient, first=n)[0]
    ds = pydicom.dcmread(src)
    ds.Rows = ds.Columns = 256
    ds.PixelData = ds.PixelData * 4
    ds.save_as(path)
    return path


def test_batch_with_bad_items(cluster, tmp_path):
    ing = cluster.start_ingest(TESSERA_MAX_INSTANCE_SIZE=100000)
    good = make_series(tmp_path / "s", 3, study_uid="1.2.826.0.1.3680043.8.498.71", patient="B71")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a DICOM file at all" * 100)
    truncated = tmp_path / "truncated.dcm"
    whole = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    big = big_instance(tmp_path / "big.dcm", "1.2.826.0.1.3680043.8.498.71",
                       "1.2.826.0.1.3680043.8.498.71.1", "B71", 99)
    files = [good[0], junk, good[1], truncated, big, good[2], good[0]]
    rc, lines = store_batch(ing, files)
    assert rc == 1 and len(lines) == len(files), lines
    by_file = [(line[1], line[2]) for line in lines]
    # answers in the request's order, each good item with its own id
    for k in (2, 5):
        assert by_file[k] == ("Success", expected_ids(files[k])[3]), lines
    assert by_file[1][0] == by_file[3][0] == "InvalidDicom", lines
    assert "DICOM" in lines[1][3] and "DICOM" in lines[3][3]
    assert by_file[4] == ("TooLarge", "-"), lines
    # the same file twice in one batch (its items run at once): stored once,
    # both answers carry its id
    ins = expected_ids(good[0])[3]
    assert {by_file[0], by_file[6]} <= {("Success", ins), ("AlreadyStored", ins)}, lines
    assert ("Success", ins) in {by_file[0], by_file[6]}, lines
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 3
    assert len(cluster.stored_files()) == 3
    assert cluster.temp_files() == []
    # the same batch again: every good item AlreadyStored, nothing more written
    rc, lines = store_batch(ing, [good[0], junk, good[1]])
    assert [line[1] for line in lines] == ["AlreadyStored", "InvalidDicom", "AlreadyStored"]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 3
    assert_index_and_storage_agree(cluster)
    assert ing.proc.poll() is None


def test_batch_of_large_items(cluster, tmp_path):
    """Three 40 MB instances in one batch: more than ingest writes at once
    (64 MB of files), so the later ones wait for the earlier ones; all are
    stored, each with its own answer."""
    ing = cluster.start_ingest()
    files = []
    for k in range(3):
        ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.74.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows, ds.Columns = 4096, 5120
        ds.PixelData = bytes([k + 1]) * (4096 * 5120 * 2)
        ds.save_as(tmp_path / f"large{k}.dcm")
        files.append(tmp_path / f"large{k}.dcm")
    rc, lines = store_batch(ing, files)
    assert rc == 0, lines
    assert [(line[1], line[2]) for line in lines] == [("Success", expected_ids(f)[3])
                                                      for f in files]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 3
    assert_index_and_storage_agree(cluster)


def new_study_instances(rest, before):
    """Instances of studies that were not in `before`: the job's copies."""
    out = []
    for s in call(rest, "GET", "/studies")[1]:
        if s not in before:
            out += call(rest, "GET", f"/studies/{s}/instances")[1]
    return out


def sop_uids(rest, instances):
    return [call(rest, "GET", f"/instances/{i['ID']}")[1]["MainDicomTags"]["SOPInstanceUID"]
            for i in instances]


def test_job_with_a_copy_ingest_refuses(cluster, tmp_path):
    """The last instance's copy is too large for the ingest the jobs process
    uses: its batch stores the other copies, the job fails naming it; with a
    jobs process on an ingest that takes it, a resubmit finishes the job."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    strict = cluster.start_ingest(TESSERA_MAX_INSTANCE_SIZE=100000)
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    jobs = cluster.start_jobs(TESSERA_INGEST_BUS=strict.bus)
    n = 100
    uid = "1.2.826.0.1.3680043.8.498.72"
    files = make_series(tmp_path / "s", n - 1, study_uid=uid, patient="B72")
    files.append(big_instance(tmp_path / "big.dcm", uid, uid + ".1", "B72", n))
    answers = upload(rest, files)
    study, victim = answers[0]["ParentStudy"], answers[-1]["ID"]
    before = set(call(rest, "GET", "/studies")[1])
    status, started, _ = call(rest, "POST", f"/studies/{study}/anonymize", {"Asynchronous": True})
    assert status == 200
    job = wait_job(rest, started["ID"], {"Success", "Failure"}, timeout=120)
    assert job["State"] == "Failure", job
    assert victim in job["ErrorDetails"] and "larger than" in job["ErrorDetails"], job
    written = new_study_instances(rest, before)
    assert len(written) == n - 1  # every other copy of the batch was stored
    assert len(set(sop_uids(rest, written))) == n - 1
    assert cluster.temp_files() == []
    # a jobs process on an ingest without that limit takes the resubmitted job
    jobs.stop()
    cluster.start_jobs(TESSERA_INGEST_BUS=ing.bus)
    assert call(rest, "POST", f"/jobs/{started['ID']}/resubmit", {})[0] == 200
    job = wait_job(rest, started["ID"], {"Success", "Failure"}, timeout=120)
    assert job["State"] == "Success", job
    new = call(rest, "GET", f"/studies/{job['Content']['ID']}/instances")[1]
    assert len(new) == n and len(set(sop_uids(rest, new))) == n
    assert len(call(rest, "GET", "/instances")[1]) == 2 * n  # nothing twice
    assert_index_and_storage_agree(cluster)


def test_ingest_killed_during_a_batch(cluster, tmp_path):
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs(TESSERA_BUS_TIMEOUT=5)
    n = 400
    files = make_series(tmp_path / "s", n, study_uid="1.2.826.0.1.3680043.8.498.73", patient="B73")
    answers = upload(rest, files)
    study = answers[0]["ParentStudy"]
    before = set(call(rest, "GET", "/studies")[1])
    status, started, _ = call(rest, "POST", f"/studies/{study}/anonymize", {"Asynchronous": True})
    assert status == 200
    job_id = started["ID"]
    deadline = time.time() + 120
    while time.time() < deadline:
        job = call(rest, "GET", f"/jobs/{job_id}")[1]
        if job["State"] == "Running" and job["Progress"] > 0:
            break  # a first chunk recorded, the next ones at ingest
        assert job["State"] in {"Pending", "Running"}, job
        time.sleep(0.01)
    else:
        raise AssertionError(f"job never started: {job}")
    ing.stop(signal.SIGKILL)
    job = wait_job(rest, job_id, {"Success", "Failure"}, timeout=120)
    if job["State"] == "Success":
        # the machine was fast enough to finish before the kill landed
        print("job finished before ingest died")
    else:
        assert "ingest did not answer" in job["ErrorDetails"], job
        written = new_study_instances(rest, before)
        assert 0 < len(written) < n
        print(f"ingest killed at {len(written)} copies of {n}")
        assert len(set(sop_uids(rest, written))) == len(written)  # none twice
        # what the dead ingest had in flight is settled; then a resubmit
        # (ingest back on the same socket) finishes the job
        settler = settle_intents(cluster, timeout=30)
        settler.stop()
        ing.start()
        assert call(rest, "POST", f"/jobs/{job_id}/resubmit", {})[0] == 200
        job = wait_job(rest, job_id, {"Success", "Failure"}, timeout=120)
        assert job["State"] == "Success", job
    new = call(rest, "GET", f"/studies/{job['Content']['ID']}/instances")[1]
    assert len(new) == n and len(set(sop_uids(rest, new))) == n
    assert len(call(rest, "GET", "/instances")[1]) == 2 * n  # nothing twice
    assert cluster.temp_files() == []
    assert_index_and_storage_agree(cluster)
