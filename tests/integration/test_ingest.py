"""ingest: C-ECHO, C-STORE of varied SOP classes and transfer syntaxes, the
index and files that result, the bus store path, and every bad input of the
foundation issue: each gets a clear failure and leaves nothing behind."""
import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

import dul
from conftest import BUILD, PYDICOM_FILES, storescu

# Distinct instances covering several SOP classes and transfer syntaxes.
VARIED = ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "rtplan.dcm",
          "image_dfl.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm", "SC_rgb_jpeg_dcmtk.dcm",
          "rtdose.dcm"]


UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def orthanc_id(*parts):
    h = hashlib.sha1("|".join(parts).encode()).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def expected_ids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    pid = str(ds.get("PatientID", "")).strip()
    st, se, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    return (orthanc_id(pid), orthanc_id(pid, st), orthanc_id(pid, st, se),
            orthanc_id(pid, st, se, sop))


def make_series(out_dir, n, study_uid="1.2.826.0.1.3680043.8.498.1", series_uid=None,
                patient="PAT-1", first=1):
    """n copies of CT_small.dcm with new UIDs in one study/series."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or study_uid + ".1"
    src = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    files = []
    for i in range(first, first + n):
        src.PatientID = patient
        src.PatientName = "DOE^JANE"
        src.StudyInstanceUID = study_uid
        src.SeriesInstanceUID = series_uid
        src.SOPInstanceUID = f"{series_uid}.{i}"
        src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
        src.InstanceNumber = i
        p = out_dir / f"{i:05d}.dcm"
        src.save_as(p)
        files.append(p)
    return files


def echoscu(ingest, aet="ECHOSCU"):
    return subprocess.run(["echoscu", "-aet", aet, "-aec", ingest.aet, "127.0.0.1",
                           str(ingest.port)], capture_output=True, text=True, timeout=60)


def test_echo(cluster):
    ing = cluster.start_ingest()
    p = echoscu(ing)
    assert p.returncode == 0, p.stderr


def test_store_varied_set_indexes_and_files_match(cluster, tmp_path):
    ing = cluster.start_ingest()
    files = [PYDICOM_FILES / f for f in VARIED]
    # dcmsend proposes each file's own transfer syntax (storescu would propose
    # uncompressed syntaxes only, and fail on the compressed files)
    p = subprocess.run(["dcmsend", "-v", "--decompress-never", "-aec", ing.aet, "127.0.0.1",
                        str(ing.port), *map(str, files)], capture_output=True, text=True,
                       timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert f"with status SUCCESS  : {len(files)}" in out, out

    for f in files:
        pat, stu, ser, ins = expected_ids(f)
        rows = cluster.sql(
            "SELECT r.level, r.public_id FROM resources r WHERE r.public_id = ANY(%s)",
            ([pat, stu, ser, ins],))
        assert {lvl for lvl, _ in rows} == {0, 1, 2, 3}, (f, rows)
        # The stored file holds the same dataset, in the transfer syntax it came in.
        (uuid, size, md5), = cluster.sql(
            "SELECT a.uuid::text, a.uncompressed_size, a.md5 FROM attachments a "
            "JOIN resources r ON r.id = a.resource_id WHERE r.public_id = %s", (ins,))
        stored = cluster.storage / uuid[0:2] / uuid[2:4] / uuid
        assert stored.stat().st_size == size
        assert hashlib.md5(stored.read_bytes()).hexdigest() == md5
        sent, got = pydicom.dcmread(f), pydicom.dcmread(stored)
        assert got.SOPInstanceUID == sent.SOPInstanceUID
        assert got.get("PatientName") == sent.get("PatientName")
        if sent.file_meta.TransferSyntaxUID in UNCOMPRESSED:
            # the client may pick any uncompressed syntax we accept: same values
            assert got.file_meta.TransferSyntaxUID in UNCOMPRESSED
            if "PixelData" in sent:
                assert (got.pixel_array == sent.pixel_array).all(), f
        else:
            # compressed data is stored as received, not transcoded
            assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, f
            assert got.PixelData == sent.PixelData, f
        (ts,), = cluster.sql("SELECT m.value FROM metadata m JOIN resources r ON r.id = "
                             "m.resource_id WHERE r.public_id = %s AND m.name = "
                             "'TransferSyntax'", (ins,))
        assert ts == got.file_meta.TransferSyntaxUID

    n_inst = cluster.sql("SELECT count(*) FROM instances")[0][0]
    assert n_inst == len(files)
    assert len(cluster.stored_files()) == len(files)
    assert cluster.temp_files() == []


def test_typed_columns_metadata_and_changes(cluster):
    ing = cluster.start_ingest()
    f = PYDICOM_FILES / "CT_small.dcm"
    rc, out = storescu(ing, [f], aet="MODALITY1")
    assert rc == 0, out
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    pat, stu, ser, ins = expected_ids(f)

    (pid, pname, pnorm), = cluster.sql(
        "SELECT patient_id, patient_name, patient_name_norm FROM patients")
    assert pid == ds.PatientID and pname == str(ds.PatientName)
    assert pnorm == str(ds.PatientName).upper()
    (suid, sdate, mods), = cluster.sql(
        "SELECT study_instance_uid, study_date, modalities_in_study FROM studies")
    assert (suid, sdate, mods) == (ds.StudyInstanceUID, ds.StudyDate, ["CT"])
    (modality, number), = cluster.sql("SELECT modality, series_number FROM series")
    assert modality == "CT" and number == int(ds.SeriesNumber)
    (sop, sop_class, inum, idx), = cluster.sql(
        "SELECT sop_instance_uid, sop_class_uid, instance_number, index_in_series FROM instances")
    assert (sop, sop_class, inum, idx) == (ds.SOPInstanceUID, ds.SOPClassUID,
                                           int(ds.InstanceNumber), 1)

    meta = dict(cluster.sql(
        "SELECT m.name, m.value FROM metadata m JOIN resources r ON r.id = m.resource_id "
        "WHERE r.public_id = %s", (ins,)))
    assert meta["RemoteAET"] == "MODALITY1"
    assert meta["CalledAET"] == "TESSERA"
    assert meta["RemoteIP"] == "127.0.0.1"
    assert meta["Origin"] == "DicomProtocol"
    assert meta["TransferSyntax"] == "1.2.840.10008.1.2.1"
    assert meta["SopClassUid"] == ds.SOPClassUID
    assert meta["IndexInSeries"] == "1"
    assert len(meta["ReceptionDate"]) == 15 and meta["ReceptionDate"][8] == "T"

    # numbered after commit by ingest's sequencer thread, within a moment
    deadline = time.time() + 10
    while cluster.sql("SELECT count(*) FROM changes WHERE seq IS NULL")[0][0] and \
            time.time() < deadline:
        time.sleep(0.05)
    changes = cluster.sql("SELECT change_type, level, public_id FROM changes ORDER BY seq")
    assert changes == [("NewInstance", 3, ins), ("NewSeries", 2, ser), ("NewStudy", 1, stu),
                       ("NewPatient", 0, pat)]


def test_already_stored_is_success_and_keeps_one_copy(cluster):
    ing = cluster.start_ingest()
    f = PYDICOM_FILES / "CT_small.dcm"
    for _ in range(2):
        rc, out = storescu(ing, [f])
        assert rc == 0, out
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 1
    assert len(cluster.stored_files()) == 1
    assert cluster.sql("SELECT count(*) FROM changes WHERE change_type = 'NewInstance'")[0][0] == 1


def test_overwrite_setting_replaces_the_file(cluster):
    ing = cluster.start_ingest(TESSERA_OVERWRITE_INSTANCES="true")
    f = PYDICOM_FILES / "CT_small.dcm"
    for _ in range(2):
        rc, out = storescu(ing, [f])
        assert rc == 0, out
    uuids = cluster.sql("SELECT a.uuid::text FROM attachments a "
                        "JOIN resources r ON r.id = a.resource_id")
    assert len(uuids) == 1
    # the replaced row was handed to the deleter in the same transaction
    (old,), = cluster.sql("SELECT a.uuid::text FROM deletion_purge p, unnest(p.resource_ids) r(id) "
                          "JOIN attachments a ON a.resource_id = r.id")
    assert sorted(p.name for p in cluster.stored_files()) == sorted([uuids[0][0], old])
    cluster.start_deleter()
    deadline = time.time() + 20
    while cluster.sql("SELECT length FROM tessera_deletion_queue_status()")[0][0] \
            and time.time() < deadline:
        time.sleep(0.1)
    assert [p.name for p in cluster.stored_files()] == [uuids[0][0]]
    assert cluster.sql("SELECT uuid::text FROM attachments") == uuids


def test_prepared_storage_tree(cluster):
    """TESSERA_STORAGE_PREPARE (on by default outside the tests): ingest makes
    every aa/bb at its first start, writes make no directory, and removals keep
    them."""
    ing = cluster.start_ingest(TESSERA_STORAGE_PREPARE="true", TESSERA_OVERWRITE_INSTANCES="true")
    assert (cluster.storage / ".tessera-tree-prepared").is_file()
    aa = sorted(p.name for p in cluster.storage.iterdir() if p.is_dir() and p.name != "tmp")
    assert aa == [f"{i:02x}" for i in range(256)]
    for name in ("00", "7f", "ff"):
        assert sorted(p.name for p in (cluster.storage / name).iterdir()) == \
            [f"{i:02x}" for i in range(256)]
    assert "directories_made=65792" in ing.read_log()

    f = PYDICOM_FILES / "CT_small.dcm"
    for _ in range(2):  # the second replaces the first: the first file goes to the deleter
        rc, out = storescu(ing, [f])
        assert rc == 0, out
    (old,), = cluster.sql("SELECT a.uuid::text FROM deletion_purge p, unnest(p.resource_ids) r(id) "
                          "JOIN attachments a ON a.resource_id = r.id")
    old_dir = cluster.storage / old[:2] / old[2:4]
    assert (old_dir / old).is_file()
    cluster.start_deleter()
    deadline = time.time() + 20
    while (old_dir / old).exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not (old_dir / old).exists()
    assert old_dir.is_dir()  # an emptied aa/bb stays in a prepared tree
    assert len(cluster.stored_files()) == 1

    # the marker says it is done: a restart makes nothing
    ing.stop()
    again = cluster.start_ingest(TESSERA_STORAGE_PREPARE="true")
    rc, out = storescu(again, [PYDICOM_FILES / "MR_small.dcm"])
    assert rc == 0, out
    assert "storage tree prepared" not in again.read_log()


def test_bus_store_path(cluster):
    """The write path that REST uploads use: same ids, Origin RestApi."""
    ing = cluster.start_ingest()
    client = BUILD / "tools/store-client/tessera-store-client"
    f = PYDICOM_FILES / "MR_small.dcm"
    p = subprocess.run([str(client), ing.bus, str(f), str(f)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    ins = expected_ids(f)[3]
    assert lines[0].split()[1:3] == ["Success", ins]
    assert lines[1].split()[1:3] == ["AlreadyStored", ins]
    (origin,), = cluster.sql("SELECT value FROM metadata WHERE name = 'Origin'")
    assert origin == "RestApi"


def assert_nothing_stored(cluster):
    assert cluster.sql("SELECT count(*) FROM resources")[0][0] == 0
    assert cluster.stored_files() == []
    assert cluster.temp_files() == []


def test_bus_rejects_non_dicom_and_truncated(cluster, tmp_path):
    ing = cluster.start_ingest()
    client = BUILD / "tools/store-client/tessera-store-client"
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not a DICOM file at all" * 100)
    truncated = tmp_path / "truncated.dcm"
    whole = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    for f in (junk, truncated):
        p = subprocess.run([str(client), ing.bus, str(f)], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 1
        assert p.stdout.split()[1] == "InvalidDicom", p.stdout
        assert "DICOM" in p.stdout  # the reason says what is wrong
    assert_nothing_stored(cluster)
    assert ing.proc.poll() is None


def test_c_store_of_bytes_that_are_not_dicom(cluster):
    ing = cluster.start_ingest()
    a = dul.Association(ing.port)
    assert a.accepted
    status = a.store(dul.CT_IMAGE_STORAGE, "1.2.3.4", b"\x01\x02garbage that is no dataset")
    assert status == 0xC000
    comment = a.last_response.get((0, 0x0902), b"").decode(errors="replace")
    assert comment, "the failure carries an ErrorComment"
    assert a.release()
    assert_nothing_stored(cluster)
    assert "C-STORE failed" in ing.read_log()


def test_c_store_without_identifiers(cluster, tmp_path):
    ing = cluster.start_ingest()
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del ds.StudyInstanceUID
    p = tmp_path / "nostudy.dcm"
    ds.save_as(p)
    a = dul.Association(ing.port)
    status = a.store(dul.CT_IMAGE_STORAGE, ds.SOPInstanceUID, dul.dataset_bytes(p))
    a.release()
    assert status == 0xC000
    assert "StudyInstanceUID" in a.last_response[(0, 0x0902)].decode()
    assert_nothing_stored(cluster)


def test_c_store_truncated_dataset(cluster):
    ing = cluster.start_ingest()
    data = dul.dataset_bytes(PYDICOM_FILES / "CT_small.dcm")
    a = dul.Association(ing.port)
    status = a.store(dul.CT_IMAGE_STORAGE, "1.2.3.4.5", data[:len(data) - 5000])
    a.release()
    assert status == 0xC000
    assert_nothing_stored(cluster)


@pytest.mark.parametrize("how", ["abort", "drop"])
@pytest.mark.parametrize("into", ["memory", "file"])
def test_association_broken_mid_instance_stores_nothing(cluster, how, into):
    # CT_small is 39 KB: under the default TESSERA_INGEST_MEMORY_THRESHOLD it
    # arrives in memory; with 8 KB, the half that is sent goes to a temporary file
    ing = cluster.start_ingest(**({"TESSERA_INGEST_MEMORY_THRESHOLD": 8192}
                                  if into == "file" else {}))
    data = dul.dataset_bytes(PYDICOM_FILES / "CT_small.dcm")
    a = dul.Association(ing.port)
    a.send_dataset(dul.CT_IMAGE_STORAGE, "1.2.3.4.6", data, complete=False, fragment=4000)
    deadline = time.time() + 10
    while into == "file" and time.time() < deadline and not cluster.temp_files():
        time.sleep(0.05)
    time.sleep(0.3)
    # in memory, nothing of it touches the disk; past the threshold, its file
    assert len(cluster.temp_files()) == (1 if into == "file" else 0)
    getattr(a, how)()
    # the service notices, removes the partial file and goes on serving
    deadline = time.time() + 10
    while time.time() < deadline and cluster.temp_files():
        time.sleep(0.1)
    assert_nothing_stored(cluster)
    assert echoscu(ing).returncode == 0


def received_into(port):
    """tessera_ingest_received_total by where the instances came: memory, file."""
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for into in ("memory", "file"):
        line = next(x for x in body.splitlines()
                    if x.startswith(f'tessera_ingest_received_total{{into="{into}"}}'))
        out[into] = int(float(line.split()[-1]))
    return out


def test_memory_threshold_small_in_memory_large_through_a_file(cluster, tmp_path):
    """Up to TESSERA_INGEST_MEMORY_THRESHOLD an instance is received into memory
    and written once in its place; a larger one goes through a temporary file.
    Both end the same: the file as received (dcmtk's meta header, the data set
    as sent), its md5 and size in the index, no temporary file left."""
    from conftest import free_port
    port = free_port()
    ing = cluster.start_ingest(TESSERA_INGEST_MEMORY_THRESHOLD=16384, TESSERA_METRICS_PORT=port)
    small, large = PYDICOM_FILES / "MR_small.dcm", PYDICOM_FILES / "CT_small.dcm"  # 9.7, 39 KB
    rc, out = storescu(ing, [small])
    assert rc == 0, out
    assert received_into(port) == {"memory": 1, "file": 0}
    rc, out = storescu(ing, [large])
    assert rc == 0, out
    assert received_into(port) == {"memory": 1, "file": 1}
    # the bus's bytes (REST uploads, tessera-store-client): the same threshold
    copy = pydicom.dcmread(large)
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.7"
    copy.save_as(tmp_path / "copy.dcm")
    client = BUILD / "tools/store-client/tessera-store-client"
    p = subprocess.run([str(client), ing.bus, str(tmp_path / "copy.dcm")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert received_into(port) == {"memory": 1, "file": 2}

    rows = cluster.sql("SELECT a.uuid::text, a.uncompressed_size, a.md5 FROM attachments a")
    assert len(rows) == 3
    for uuid, size, md5 in rows:
        stored = cluster.storage / uuid[0:2] / uuid[2:4] / uuid
        data = stored.read_bytes()
        assert len(data) == size and hashlib.md5(data).hexdigest() == md5
        got = pydicom.dcmread(stored)
        sent = pydicom.dcmread(large if got.SOPInstanceUID != small_uid(small) else small)
        assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
        assert (got.pixel_array == sent.pixel_array).all()
        if got.SOPInstanceUID != "1.2.3.4.7":  # C-STORE: dcmtk's meta header names the sender
            assert got.file_meta.SourceApplicationEntityTitle.strip() == "STORESCU"
    assert cluster.temp_files() == []


def small_uid(path):
    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_registered_aes_only(cluster):
    ing = cluster.start_ingest(TESSERA_DICOM_REGISTERED_AES_ONLY="true")
    assert echoscu(ing, aet="STRANGER").returncode != 0
    cluster.sql("INSERT INTO modalities (name, aet, host, port) VALUES ('ct1', 'KNOWN', "
                "'127.0.0.1', 104)")
    assert echoscu(ing, aet="KNOWN").returncode == 0
    assert "calling AE title not registered" in ing.read_log()


def test_storage_unwritable_fails_and_indexes_nothing(cluster):
    ing = cluster.start_ingest()
    # Replace the two-level directory the next file would need with a file:
    # any commit into it fails. Simplest: make every aa/ level a file.
    for i in range(256):
        (cluster.storage / f"{i:02x}").write_bytes(b"")
    f = PYDICOM_FILES / "CT_small.dcm"
    rc, out = storescu(ing, [f])
    assert "Refused: OutOfResources" in out or "0xa700" in out.lower(), out
    assert cluster.sql("SELECT count(*) FROM resources")[0][0] == 0
    assert cluster.temp_files() == []


def test_database_down_answers_a700_then_recovers(cluster, postgres):
    ing = cluster.start_ingest(TESSERA_DB_MAX_RETRIES="2")
    f = PYDICOM_FILES / "CT_small.dcm"
    postgres.stop()
    try:
        rc, out = storescu(ing, [f])
        assert "0xa700" in out.lower() or "OutOfResources" in out, out
        assert cluster.stored_files() == [] and cluster.temp_files() == []
    finally:
        postgres.start()
    rc, out = storescu(ing, [f])
    assert rc == 0 and "Store Failed" not in out, out
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 1
    assert ing.proc.poll() is None


def test_two_ingest_processes_same_study_at_once(cluster, tmp_path):
    a = cluster.start_ingest()
    b = cluster.start_ingest()
    # the same 40 instances sent to both at once, and 40 more split between them
    shared = make_series(tmp_path / "shared", 40)
    extra = make_series(tmp_path / "extra", 40, first=100)
    results = []

    def send(ing, files):
        results.append(storescu(ing, files))

    threads = [threading.Thread(target=send, args=(a, shared + extra[:20])),
               threading.Thread(target=send, args=(b, shared + extra[20:]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rc, out in results:
        assert rc == 0 and "Store Failed" not in out, out
    counts = cluster.sql("SELECT level, count(*) FROM resources GROUP BY level ORDER BY level")
    assert counts == [(0, 1), (1, 1), (2, 1), (3, 80)]
    assert len(cluster.stored_files()) == 80
    assert cluster.sql("SELECT count(*) FROM changes WHERE change_type = 'NewStudy'")[0][0] == 1
    assert cluster.temp_files() == []


def test_sigterm_stops_cleanly(cluster):
    ing = cluster.start_ingest()
    assert ing.stop() == 0
    assert "stopped" in ing.read_log()


def test_bad_configuration_names_the_setting(cluster):
    env = cluster.ingest_env(TESSERA_DICOM_PORT="notaport")
    p = subprocess.run([str(BUILD / "services/ingest/tessera-ingest")], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "TESSERA_DICOM_PORT" in p.stderr and "notaport" in p.stderr


def test_metrics_and_health(cluster, postgres):
    import urllib.error
    import urllib.request
    from conftest import free_port
    port = free_port()
    ing = cluster.start_ingest(TESSERA_METRICS_PORT=port)
    rc, out = storescu(ing, [PYDICOM_FILES / "CT_small.dcm"])
    assert rc == 0, out
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'tessera_ingest_instances_total{status="stored"} 1' in body, body
    assert "tessera_ingest_seconds_count 1" in body, body
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).status == 200
    postgres.stop()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30)
        assert e.value.code == 503
        reason = e.value.read()
        assert b"unreachable" in reason or b"closed the connection" in reason, reason
    finally:
        postgres.start()
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).status == 200


def test_sigterm_while_waiting_for_the_database(cluster):
    """Stopping a service that is still waiting for PostgreSQL exits cleanly."""
    ing = cluster.start_ingest(wait=False, TESSERA_DB_URL="host=/nonexistent port=1 dbname=x",
                               TESSERA_DB_CONNECT_TIMEOUT=1)
    time.sleep(1.5)
    assert ing.proc.poll() is None  # still waiting, not crashed
    assert ing.stop() == 0
    assert "database not ready" in ing.read_log()


def test_silent_connections_do_not_block_associations(cluster):
    """Sockets that never send an association request are dropped after a few
    seconds each instead of holding up everyone else for the DIMSE timeout."""
    import socket
    ing = cluster.start_ingest()
    silent = [socket.create_connection(("127.0.0.1", ing.port)) for _ in range(2)]
    started = time.time()
    p = echoscu(ing)
    assert p.returncode == 0, p.stderr
    assert time.time() - started < 15  # 30 s each before the fix
    for s in silent:
        s.close()


def test_c_store_over_the_size_limit_aborts_and_keeps_nothing(cluster, tmp_path):
    ing = cluster.start_ingest(TESSERA_MAX_INSTANCE_SIZE=1048576)
    big = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    big.Rows, big.Columns = 2048, 2048
    big.PixelData = b"\0\1" * (2048 * 2048)  # 8 MB
    p = tmp_path / "big.dcm"
    big.save_as(p)
    a = dul.Association(ing.port)
    # the service aborts: the client sees an A-ABORT PDU (0x07) or a closed connection
    outcome = None
    try:
        outcome = a.store(dul.CT_IMAGE_STORAGE, big.SOPInstanceUID, dul.dataset_bytes(p))
    except (ConnectionError, OSError):
        outcome = "connection closed"
    except AssertionError as e:
        outcome = "A-ABORT" if "unexpected PDU 0x7" in str(e) else str(e)
    assert outcome in ("connection closed", "A-ABORT"), outcome
    deadline = time.time() + 10
    while time.time() < deadline and cluster.temp_files():
        time.sleep(0.1)
    assert_nothing_stored(cluster)
    assert "over the size limit" in ing.read_log()
    assert echoscu(ing).returncode == 0


def test_every_storage_sop_class_is_accepted(cluster, tmp_path):
    """dcmtk keeps 128 presentation contexts per profile and there are 186 storage
    SOP classes: the late ones in its list (ultrasound, VL, X-ray angiography, ...)
    were refused before ingest negotiated them itself."""
    ing = cluster.start_ingest(TESSERA_QUERY_BUS="")
    classes = {
        "1.2.840.10008.5.1.4.1.1.6.1": "US",       # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1": "US",       # Ultrasound Multi-frame
        "1.2.840.10008.5.1.4.1.1.77.1.4": "XC",    # VL Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.12.1": "XA",      # X-Ray Angiographic Image Storage
        "1.2.840.10008.5.1.4.1.1.88.33": "SR",     # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.2": "CT",         # CT Image Storage
    }
    files = []
    for i, (uid, modality) in enumerate(classes.items()):
        ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.71.{i}"
        ds.Modality = modality
        p = tmp_path / f"{i}.dcm"
        ds.save_as(p)
        files.append(p)
    rc, out = storescu(ing, files)
    assert rc == 0 and "Store Failed" not in out, out[-3000:]
    got = {r[0] for r in cluster.sql("SELECT sop_class_uid FROM instances")}
    assert got == set(classes)
