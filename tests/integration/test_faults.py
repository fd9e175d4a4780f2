"""Many writers and faults: nothing acknowledged is lost, nothing is half-stored.

Each test prints the figures it saw (run pytest with -s to read them)."""
import io
import json
import random
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

from conftest import PYDICOM_FILES, free_port, storescu
from orthanc import http
from test_ingest import make_series


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return 0.0


def sop_uids(files):
    import pydicom
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]


def settle_intents(cluster, timeout=20):
    """A deleter with no grace period (TESSERA_STORE_INTENT_AGE=0) settles what dead
    writers left in flight: waits until no intent is left, asserts it, and returns the
    deleter (running: with a grace of 0 it would also take a live writer's files)."""
    settler = cluster.start_deleter(TESSERA_STORE_INTENT_AGE=0)
    deadline = time.time() + timeout
    while list((cluster.storage / "tmp").glob("*.intent")) and time.time() < deadline:
        time.sleep(0.1)
    assert list((cluster.storage / "tmp").glob("*.intent")) == []
    return settler


def assert_index_and_storage_agree(cluster):
    rows = dict(cluster.sql("SELECT uuid::text, compressed_size FROM attachments"))
    files = {p.name: p.stat().st_size for p in cluster.stored_files()}
    assert set(files) == set(rows), (sorted(set(files) - set(rows))[:5],
                                     sorted(set(rows) - set(files))[:5])
    for name, size in files.items():
        assert rows[name] == size, name
    rc, out = cluster.fsck("--min-age", "0")
    assert rc == 0 and "orphan_files=0 missing_files=0" in out and "in_flight=0" in out, out


def test_many_writers_overlapping_studies(cluster, tmp_path):
    """Three ingest processes (C-STORE) and two REST processes (POST /instances)
    store overlapping parts of the same four studies at once."""
    ingests = [cluster.start_ingest() for _ in range(3)]
    rests = [cluster.start_rest(ingests[i]) for i in range(2)]
    files = []
    for s in range(4):
        files += make_series(tmp_path / f"s{s}", 60, study_uid=f"1.2.826.0.1.3680043.8.498.5{s}",
                             patient=f"PAT-MW{s}")
    rng = random.Random(11)
    shares = [[] for _ in range(5)]
    for f in files:
        # every file goes to one writer at least, and to a second one half of the time
        for w in rng.sample(range(5), rng.choice([1, 2])):
            shares[w].append(f)
    results = {}

    def c_store(i):
        results[f"ingest{i}"] = storescu(ingests[i], shares[i])

    def upload(j):
        bad = []
        for f in shares[3 + j]:
            status, body, _ = http(rests[j].url, "POST", "/instances", f.read_bytes())
            if status != 200:
                bad.append((f.name, status, body[:200]))
        results[f"rest{j}"] = bad

    t0 = time.time()
    threads = [threading.Thread(target=c_store, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=upload, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    sent = sum(len(s) for s in shares)
    print(f"many writers: {sent} stores ({len(files)} distinct instances) by 5 writers "
          f"in {elapsed:.1f} s, {sent / elapsed:.0f} stores/s")
    for i in range(3):
        rc, out = results[f"ingest{i}"]
        assert rc == 0 and "Store Failed" not in out, out[-2000:]
    assert results["rest0"] == [] and results["rest1"] == []

    # one row per patient, study and series; every instance once, with its file
    assert cluster.sql("SELECT count(*), count(DISTINCT patient_id) FROM patients") == [(4, 4)]
    assert cluster.sql("SELECT count(*), count(DISTINCT study_instance_uid) FROM studies") == [(4, 4)]
    assert cluster.sql("SELECT count(*), count(DISTINCT series_instance_uid) FROM series") == [(4, 4)]
    assert cluster.sql("SELECT count(*), count(DISTINCT sop_instance_uid) FROM instances") == \
        [(240, 240)]
    assert_index_and_storage_agree(cluster)
    stats = json_get(rests[1], "/statistics")
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"],
            stats["CountInstances"]) == (4, 4, 4, 240)
    changes = json_get(rests[0], "/changes?limit=10000")["Changes"]
    assert [c["Seq"] for c in changes] == list(range(1, len(changes) + 1))
    kinds = [c["ChangeType"] for c in changes]
    assert (kinds.count("NewInstance"), kinds.count("NewSeries"), kinds.count("NewStudy"),
            kinds.count("NewPatient")) == (240, 4, 4, 4)


def json_get(rest, path):
    import json
    status, body, _ = http(rest.url, "GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def same_series_from_three_ingests(cluster, tmp_path, tag, **settings):
    """Three ingest processes store 3 x 40 instances of one new series at once.
    Returns (ingests, storescu results, sop uids sent by each)."""
    ingests = [cluster.start_ingest(TESSERA_METRICS_PORT=free_port(), **settings)
               for _ in range(3)]
    parts = [make_series(tmp_path / f"{tag}{i}", 40, study_uid=f"1.2.826.0.1.3680043.8.498.9{tag}",
                         patient=f"PAT-{tag}", first=1 + 40 * i) for i in range(3)]
    results = [None] * 3

    def send(i):
        results[i] = storescu(ingests[i], parts[i])
    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ingests, results, parts


def test_conflicts_are_replayed_not_failed(cluster, tmp_path):
    """Serializable transactions, three writers on one series: conflicts happen and
    are replayed (tessera_db_replays_total); no store fails."""
    ingests, results, parts = same_series_from_three_ingests(
        cluster, tmp_path, "1", TESSERA_DB_ISOLATION="serializable")
    replays = sum(metric(int(i.env["TESSERA_METRICS_PORT"]), "tessera_db_replays_total")
                  for i in ingests)
    print(f"serializable, 3 writers x 40 instances of one series: {replays:.0f} replays")
    for rc, out in results:
        assert rc == 0 and "Store Failed" not in out, out[-2000:]
    assert replays > 0
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 120
    assert_index_and_storage_agree(cluster)


def test_without_replays_conflicts_answer_a700_and_503_and_leave_nothing_half_written(
        cluster, tmp_path):
    """The same load with TESSERA_DB_MAX_RETRIES=0, plus REST uploads of the same
    series: conflicting stores are refused with 0xA700 over DICOM and with 503 and
    Orthanc's error body over HTTP; each instance is either fully stored (row and
    file) or absent. Rounds with new series until both refusals were seen (at most 8)."""
    settings = dict(TESSERA_DB_ISOLATION="serializable", TESSERA_DB_MAX_RETRIES=0)
    ingests = [cluster.start_ingest(**settings) for _ in range(3)]
    rest = cluster.start_rest(ingests[0], **settings)
    refused_dicom, http_bodies, total = 0, [], 0
    for rnd in range(8):
        uid = f"1.2.826.0.1.3680043.8.498.92.{rnd}"
        parts = [make_series(tmp_path / f"r{rnd}-{i}", 30, study_uid=uid, patient=f"PAT-Z{rnd}",
                             first=1 + 30 * i) for i in range(4)]
        total += 120
        results = [None] * 3

        def send(i):
            results[i] = storescu(ingests[i], parts[i])

        def upload(k):
            for f in parts[3][k::4]:
                status, body, _ = http(rest.url, "POST", "/instances", f.read_bytes())
                if status != 200:
                    http_bodies.append((status, body))
        # the uploads first: they race the C-STOREs for the creation of the new series
        threads = [threading.Thread(target=upload, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused_dicom += sum(len(re.findall(r"0xa700|OutOfResources", out, re.I))
                             for _, out in results)
        if refused_dicom and http_bodies:
            break
    stored = cluster.sql("SELECT count(*) FROM instances")[0][0]
    print(f"retries 0: {refused_dicom} C-STOREs refused with 0xA700, {len(http_bodies)} uploads "
          f"refused over HTTP, {stored} of {total} stored")
    assert refused_dicom > 0 and http_bodies
    for status, body in http_bodies:
        err = json.loads(body)
        assert status == 503 and err["HttpStatus"] == 503 and err["OrthancStatus"] == 42, err
        assert set(err) >= {"HttpError", "Message", "Method", "OrthancError", "Uri"}, err
    assert stored < total
    assert_index_and_storage_agree(cluster)
    assert cluster.temp_files() == []


def test_kill_9_ingest_during_transfer(cluster, tmp_path):
    """kill -9 of an ingest process in the middle of a transfer: every instance the
    client was told was stored is stored; the file of the instance being indexed at
    the moment of the kill is settled by a deleter (removed: it has no row)."""
    ing = cluster.start_ingest()
    files = make_series(tmp_path / "k", 400, study_uid="1.2.826.0.1.3680043.8.498.66",
                        patient="PAT-K9")
    sops = sop_uids(files)
    out = {}

    def send():
        out["r"] = storescu(ing, files)
    t = threading.Thread(target=send)
    t.start()
    deadline = time.time() + 60
    while cluster.sql("SELECT count(*) FROM instances")[0][0] < 100 and time.time() < deadline:
        time.sleep(0.01)
    ing.stop(sig=signal.SIGKILL)
    t.join()
    rc, text = out["r"]
    assert rc != 0  # the association broke
    acked = text.count("Received Store Response (Success")
    indexed = {r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")}
    print(f"kill -9 after {acked} acknowledged stores; {len(indexed)} indexed")
    assert acked >= 100
    # storescu sends in order on one association: the first `acked` were confirmed
    assert set(sops[:acked]) <= indexed
    # a deleter settles what the dead writer left in flight
    settler = settle_intents(cluster)
    assert_index_and_storage_agree(cluster)
    # With a grace period of 0 it would also take the live writer's files in the
    # instant between their rename and their transaction (a store refused with
    # 0xA700, which is what that grace period, 60 s by default, prevents).
    settler.stop()
    # a new ingest takes the rest; everything ends stored once
    ing2 = cluster.start_ingest()
    rc, text = storescu(ing2, files)
    assert rc == 0, text[-2000:]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 400
    assert_index_and_storage_agree(cluster)


def test_kill_9_ingest_during_group_commit(cluster, tmp_path):
    """kill -9 of ingest while its committers index the instances of four associations
    together (several instances per transaction, one commit: ingest_commit.h): every
    instance acknowledged to any client is indexed after the kill, and its file reads
    back whole, byte for byte, through a new ingest and rest; what was in flight is
    settled by a deleter."""
    metrics_port = free_port()
    ing = cluster.start_ingest(TESSERA_METRICS_PORT=metrics_port)
    parts = [make_series(tmp_path / f"g{i}", 150, study_uid=f"1.2.826.0.1.3680043.8.498.67{i}",
                         patient=f"PAT-GC{i}") for i in range(4)]
    out = [None] * 4

    def send(i):
        out[i] = storescu(ing, parts[i])
    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # kill once transactions of several instances have been seen, mid-load
    deadline = time.time() + 60
    grouped = 0.0
    while time.time() < deadline:
        stored = cluster.sql("SELECT count(*) FROM instances")[0][0]
        txns = metric(metrics_port, "tessera_ingest_commit_instances_count")
        grouped = metric(metrics_port, "tessera_ingest_commit_instances_sum") - txns
        if stored >= 150 and grouped > 0:
            break
        time.sleep(0.01)
    ing.stop(sig=signal.SIGKILL)
    for t in threads:
        t.join()
    # instances beyond the first of their transaction: batches of more than one happened
    assert grouped > 0
    indexed = {r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")}
    acked_files = []
    for i, (rc, text) in enumerate(out):
        assert rc != 0, text[-2000:]  # every association broke: the kill was mid-load
        acked = text.count("Received Store Response (Success")
        # storescu sends in order on one association: the first `acked` were confirmed
        assert set(sop_uids(parts[i][:acked])) <= indexed, i
        acked_files += parts[i][:acked]
    print(f"kill -9 during group commits: {len(acked_files)} acknowledged, {len(indexed)} "
          f"indexed, {grouped:.0f} instances shared a transaction with another")
    assert 150 <= len(acked_files) < 600
    settler = settle_intents(cluster)
    settler.stop()
    assert_index_and_storage_agree(cluster)
    # after the restart, every acknowledged instance reads back whole
    import pydicom
    ing2 = cluster.start_ingest()
    rest = cluster.start_rest(ing2)
    ids = dict(cluster.sql("SELECT i.sop_instance_uid, r.public_id FROM instances i "
                           "JOIN resources r ON r.id = i.resource_id"))
    for f, sop in zip(acked_files, sop_uids(acked_files)):
        status, body, _ = http(rest.url, "GET", f"/instances/{ids[sop]}/file")
        assert status == 200, (f, status)
        got, sent = pydicom.dcmread(io.BytesIO(body)), pydicom.dcmread(f)
        # storescu may send it in another transfer syntax: compare values, not bytes
        for kw in ("SOPInstanceUID", "SeriesInstanceUID", "PatientID", "InstanceNumber"):
            assert got.get(kw) == sent.get(kw), (f, kw)
        assert got.pixel_array.tobytes() == sent.pixel_array.tobytes(), f
    # and the rest of the load goes in once
    for part in parts:
        rc, text = storescu(ing2, part)
        assert rc == 0, text[-2000:]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 600
    assert_index_and_storage_agree(cluster)


def test_kill_9_rest_during_uploads(cluster, tmp_path):
    """kill -9 of a REST process while clients upload: every upload answered 200 is
    stored; the others are absent or complete, never half-stored."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    files = make_series(tmp_path / "r", 300, study_uid="1.2.826.0.1.3680043.8.498.67",
                        patient="PAT-R9")
    sops = sop_uids(files)
    answered = []

    def upload(part):
        for i in part:
            try:
                status, _, _ = http(rest.url, "POST", "/instances", files[i].read_bytes(),
                                    timeout=10)
            except OSError:
                return
            if status == 200:
                answered.append(i)
    threads = [threading.Thread(target=upload, args=(range(k, 300, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    # killed once 80 uploads were answered: with group commit an instance is indexed a
    # moment before its answer reaches the client, so counting index rows raced
    deadline = time.time() + 60
    while len(answered) < 80 and time.time() < deadline:
        time.sleep(0.01)
    rest.stop(sig=signal.SIGKILL)
    for t in threads:
        t.join()
    indexed = {r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")}
    print(f"kill -9 of rest: {len(answered)} uploads answered 200, {len(indexed)} indexed")
    assert len(answered) >= 80
    assert {sops[i] for i in answered} <= indexed
    time.sleep(0.5)  # ingest finishes what rest had already handed over
    settle_intents(cluster)
    assert_index_and_storage_agree(cluster)
    assert ing.proc.poll() is None


def vm_hwm_kb(proc):
    """Peak resident memory of a process so far (VmHWM), in kB."""
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def big_instance(tmp_path, rows=5120):
    """A 16-bit CT image of rows x rows (5120: 52 MB) as Part 10 bytes, and the offset
    and length of its SOPInstanceUID value (patched per upload)."""
    import pydicom
    import numpy as np
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.Rows = ds.Columns = rows
    ds.PixelData = np.zeros((rows, rows), dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.88.1.00000"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.88"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.88.1"
    path = tmp_path / "big.dcm"
    ds.save_as(path)
    data = path.read_bytes()
    path.unlink()
    return data


def test_memory_of_50_concurrent_50mb_uploads(cluster, tmp_path):
    """50 clients upload a 52 MB instance each at once. Uploads are spooled to the
    storage area and handed to ingest by name, so neither process holds them in
    memory: the bounds checked are 64 MB peak RSS for rest and 160 MB for ingest
    (whose bus workers parse up to 4 files at once; dcmtk loads pixel data lazily)."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    data = big_instance(tmp_path)
    uid = b"1.2.826.0.1.3680043.8.498.88.1.00000"
    first = data.index(uid)  # file meta (0002,0003)
    second = data.index(uid, first + 1)  # dataset (0008,0018)
    results = []

    def upload(i):
        mine = str(i).zfill(5).encode()
        patched = uid[:-5] + mine
        body = [data[:first], patched, data[first + len(uid):second], patched,
                data[second + len(uid):]]
        req = urllib.request.Request(rest.url + "/instances", data=iter(body), method="POST",
                                     headers={"Content-Length": str(len(data))})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                results.append(r.status)
        except urllib.error.HTTPError as e:
            results.append((e.code, e.read()[:300]))

    t0 = time.time()
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    rest_kb, ing_kb = vm_hwm_kb(rest.proc), vm_hwm_kb(ing.proc)
    print(f"50 x {len(data) / 1e6:.0f} MB uploads in {elapsed:.1f} s: peak RSS rest "
          f"{rest_kb / 1024:.1f} MB, ingest {ing_kb / 1024:.1f} MB")
    assert results == [200] * 50, [r for r in results if r != 200][:3]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 50
    assert rest_kb < 64 * 1024
    assert ing_kb < 160 * 1024
    assert cluster.temp_files() == []
    shutil.rmtree(cluster.storage)  # 2.6 GB: not kept for pytest's last runs


def test_upload_cut_short_leaves_nothing(cluster):
    """A client that announces 1 MB and hangs up after 100 kB: nothing indexed,
    nothing left in the storage area, and the next upload works."""
    import socket
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    with socket.create_connection(("127.0.0.1", rest.port)) as s:
        s.sendall(b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        s.sendall(b"\0" * 100000)
        time.sleep(0.3)
    deadline = time.time() + 10
    while cluster.temp_files() and time.time() < deadline:
        time.sleep(0.1)
    assert cluster.temp_files() == []
    assert cluster.stored_files() == []
    status, body, _ = http(rest.url, "POST", "/instances",
                           (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    assert status == 200, body
    assert cluster.temp_files() == [] and len(cluster.stored_files()) == 1


def test_postgres_restart_under_load(cluster, postgres, tmp_path):
    """PostgreSQL stopped for a few seconds while two ingest processes and a REST
    process store: stores in the outage are refused (0xA700 / 503), the services
    stay up and recover by themselves, and everything acknowledged is stored."""
    ingests = [cluster.start_ingest(TESSERA_DB_MAX_RETRIES=2) for _ in range(2)]
    rest = cluster.start_rest(ingests[0], TESSERA_DB_MAX_RETRIES=2)
    files = make_series(tmp_path / "pg", 240, study_uid="1.2.826.0.1.3680043.8.498.68",
                        patient="PAT-PG")
    sops = sop_uids(files)
    acked, refused = set(), []
    lock = threading.Lock()
    stop = threading.Event()

    def c_store(part):
        # one instance per association, so that a refusal does not end the rest
        for i in part:
            rc, out = storescu(ingests[i % 2], [files[i]])
            with lock:
                if rc == 0 and "Store Failed" not in out:
                    acked.add(sops[i])
                else:
                    refused.append(out[-300:])
            if stop.is_set():
                return

    def upload(part):
        for i in part:
            try:
                status, _, _ = http(rest.url, "POST", "/instances", files[i].read_bytes(),
                                    timeout=60)
            except OSError as e:
                status = str(e)
            with lock:
                if status == 200:
                    acked.add(sops[i])
                else:
                    refused.append(status)

    threads = [threading.Thread(target=c_store, args=(range(0, 160),)),
               threading.Thread(target=upload, args=(range(160, 240),))]
    for t in threads:
        t.start()
    time.sleep(1.5)
    postgres.stop()
    time.sleep(4)
    postgres.start()
    for t in threads:
        t.join()
    indexed = {r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")}
    print(f"PostgreSQL restarted under load: {len(acked)} acknowledged, {len(refused)} refused, "
          f"{len(indexed)} indexed")
    assert refused, "the outage refused nothing: it did not overlap the load"
    assert acked <= indexed
    assert all(p.proc.poll() is None for p in ingests + [rest])
    # recovered: everything goes in now
    rc, out = storescu(ingests[1], files)
    assert rc == 0 and "Store Failed" not in out, out[-2000:]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 240
    settle_intents(cluster)
    assert_index_and_storage_agree(cluster)


def store_outcomes(output):
    """storescu -v output -> {file path: True (Success) / False (refused or failed)}."""
    outcomes, current = {}, None
    for line in output.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response" in line and current:
            outcomes[current] = "(Success" in line
            current = None
    return outcomes


def test_deleters_reclaiming_during_live_stores(cluster, tmp_path):
    """Two deleters with a grace period of 0 settle intents while two associations
    store (the case lib/domain/store_index.h guards: a deleter may take a live writer's
    file between its link and its transaction). A taken file makes that store fail
    with 0xA700; never a row without its file. Every store answered Success is
    indexed with its file; every refused one is absent."""
    ing = cluster.start_ingest()
    for _ in range(2):
        cluster.start_deleter(TESSERA_STORE_INTENT_AGE=0)
    groups = [make_series(tmp_path / f"g{k}", 150, study_uid=f"1.2.826.0.1.3680043.8.498.7{k}",
                          patient=f"PAT-RC{k}") for k in range(2)]
    results = {}

    def send(k):
        results[k] = storescu(ing, groups[k], extra=("-nh",))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = {}
    for k in range(2):
        outcomes.update(store_outcomes(results[k][1]))
    files = groups[0] + groups[1]
    assert len(outcomes) == len(files), (len(outcomes), results[0][1][-1500:])
    uid_of = dict(zip(map(str, files), sop_uids(files)))
    indexed = {r[0] for r in cluster.sql("SELECT sop_instance_uid FROM instances")}
    stored = {uid_of[f] for f, ok in outcomes.items() if ok}
    refused = {uid_of[f] for f, ok in outcomes.items() if not ok}
    print(f"{len(stored)} stored, {len(refused)} refused while deleters reclaimed")
    assert stored == indexed
    assert not refused & indexed
    for d in cluster.deleters:
        d.stop()
    assert_index_and_storage_agree(cluster)
