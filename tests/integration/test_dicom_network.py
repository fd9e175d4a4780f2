"""The DICOM upper layer against peers that are not dcmtk (issue 15): raw PDUs from
tests/integration/dul.py. Every case ends with the service still up and a normal
C-ECHO and C-STORE (or C-FIND) answered on a new association."""
import struct
import subprocess

import pydicom
import pytest

import dul
from conftest import PYDICOM_FILES, storescu

CT_FILE = PYDICOM_FILES / "CT_small.dcm"


def echo(port, aet="TESSERA"):
    p = subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(port)],
                       capture_output=True, text=True, timeout=30)
    return p.returncode


def assert_alive(cluster, ing, port=None):
    """The service answers a C-ECHO and stores a file on new associations."""
    assert ing.proc.poll() is None, ing.read_log()[-3000:]
    assert echo(port or ing.port) == 0
    if port is None:
        rc, out = storescu(ing, [CT_FILE])
        assert rc == 0, out


def split(data, n):
    """n fragments of even length (dcmtk refuses odd ones: "Odd Fragment Length")."""
    size = -(-len(data) // n)
    size += size % 2
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("pdvs", [2, 10, 40])
def test_c_store_with_many_pdvs_in_one_pdu(cluster, pdvs):
    """PS3.8 annex E: a P-DATA-TF may carry several PDVs, of one message or of
    several. The command PDV and `pdvs` data PDVs of 300 bytes in one PDU crashed
    dcmtk 3.6.7's DUL_NextPDV (ingest died of SIGSEGV with 10; two gave an
    A-ABORT). Now the instance is stored whole."""
    ing = cluster.start_ingest()
    data = dul.dataset_bytes(CT_FILE)
    uid = str(pydicom.dcmread(CT_FILE).SOPInstanceUID)
    a = dul.Association(ing.port)
    head, rest = data[:300 * pdvs], data[300 * pdvs:]
    items = [a.pdv_item(dul.c_store_command(dul.CT_IMAGE_STORAGE, uid), True, True)]
    items += [a.pdv_item(chunk, False, False) for chunk in split(head, pdvs)]
    a.send_pdvs(items)
    a.send_pdvs([a.pdv_item(rest, False, True)])
    fields = a.read_response()
    assert struct.unpack("<H", fields[(0, 0x0900)])[0] == 0x0000
    assert a.release()
    stored = cluster.stored_files()
    assert len(stored) == 1
    # the stored file holds exactly the data set that was sent
    assert stored[0].read_bytes().endswith(data)
    assert_alive(cluster, ing)


def test_command_and_data_of_two_messages_in_one_pdu(cluster):
    """Two whole C-STORE messages (command + data set each) in one P-DATA-TF: both
    answered with success, in order."""
    ing = cluster.start_ingest()
    ds = pydicom.dcmread(CT_FILE)
    a = dul.Association(ing.port)
    items = []
    for n, uid in enumerate(["1.2.826.0.1.3680043.8.498.15.1", "1.2.826.0.1.3680043.8.498.15.2"]):
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = cluster.base / f"two-{n}.dcm"
        ds.save_as(path)
        items.append(a.pdv_item(dul.c_store_command(dul.CT_IMAGE_STORAGE, uid, n + 1), True, True))
        items.append(a.pdv_item(dul.dataset_bytes(path), False, True))
    a.send_pdvs(items)
    for n in (1, 2):
        fields = a.read_response()
        assert struct.unpack("<H", fields[(0, 0x0120)])[0] == n  # answers message n
        assert struct.unpack("<H", fields[(0, 0x0900)])[0] == 0x0000
    assert a.release()
    assert len(cluster.stored_files()) == 2
    assert_alive(cluster, ing)


@pytest.mark.parametrize("layout", ["length-past-pdu", "length-zero", "length-one",
                                    "trailing-bytes"])
def test_malformed_pdv_lengths_abort_only_that_association(cluster, layout):
    """A P-DATA-TF whose PDV items do not add up to the PDU's length is not DICOM
    (PS3.8 9.3.5): the association is aborted, nothing is stored, the service
    goes on."""
    ing = cluster.start_ingest()
    data = dul.dataset_bytes(CT_FILE)[:600]
    a = dul.Association(ing.port)
    cmd = a.pdv_item(dul.c_store_command(dul.CT_IMAGE_STORAGE, "1.2.3.4.15.9"), True, True)
    # the data set's PDV is not its last: no message is complete before the fault
    body = cmd + a.pdv_item(data, False, False)
    if layout == "length-past-pdu":
        body = cmd + struct.pack(">IBB", len(data) + 500, 1, 2) + data
    elif layout == "length-zero":
        body = cmd + struct.pack(">I", 0) + data
    elif layout == "length-one":
        body = cmd + struct.pack(">IB", 1, 1) + data
    elif layout == "trailing-bytes":
        body += b"\x00\x00\x00"
    a.send_raw(struct.pack(">BBI", 0x04, 0, len(body)) + body)
    with pytest.raises((ConnectionError, AssertionError, OSError)):
        # an A-ABORT (or the connection closed) instead of a C-STORE response
        a.read_response()
    a.drop()
    assert cluster.stored_files() == []
    assert_alive(cluster, ing)


def test_c_find_identifier_in_many_pdvs(cluster):
    """The same layout on the query service's own port: a C-FIND whose identifier
    comes in ten PDVs of one PDU (tessera-query died of SIGSEGV) is answered."""
    ing = cluster.start_ingest()
    rc, out = storescu(ing, [CT_FILE])
    assert rc == 0, out
    q = cluster.start_query()
    ds = pydicom.dcmread(CT_FILE)
    ident = dul.explicit_le([(0x0008, 0x0052, "CS", b"STUDY"),
                             (0x0010, 0x0010, "PN", b""),
                             (0x0010, 0x0020, "LO", str(ds.PatientID).encode()),
                             (0x0020, 0x000D, "UI", b"")])
    a = dul.Association(q.port, abstract=dul.STUDY_ROOT_FIND)
    assert a.accepted
    items = [a.pdv_item(dul.c_find_command(dul.STUDY_ROOT_FIND), True, True)]
    chunks = split(ident, 10)
    items += [a.pdv_item(c, False, i == len(chunks) - 1) for i, c in enumerate(chunks)]
    a.send_pdvs(items)
    pending = a.read_response()
    assert struct.unpack("<H", pending[(0, 0x0900)])[0] == 0xFF00
    assert str(ds.StudyInstanceUID).encode() in a.last_data
    final = a.read_response()
    assert struct.unpack("<H", final[(0, 0x0900)])[0] == 0x0000
    assert a.release()
    assert q.proc.poll() is None
    assert echo(q.port) == 0


def store_series(cluster, ing, count):
    """Stores `count` instances of one new series; returns (study, series) UIDs."""
    ds = pydicom.dcmread(CT_FILE)
    study, series = "1.2.826.0.1.3680043.8.498.15.7", "1.2.826.0.1.3680043.8.498.15.7.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    files = []
    for i in range(count):
        ds.SOPInstanceUID = f"{series}.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = cluster.base / f"series-{i}.dcm"
        ds.save_as(path)
        files.append(path)
    rc, out = storescu(ing, files)
    assert rc == 0, out
    return study, series


@pytest.mark.parametrize("port_of", ["query", "ingest"])
def test_release_right_behind_a_c_find(cluster, port_of):
    """C-FIND-RQ, its identifier and A-RELEASE-RQ written at once (PS3.8 lets a
    requestor ask for the release once its request is sent): every answer, the
    final status, then A-RELEASE-RP. The release used to be read by the check for
    a C-CANCEL between answers and lost: the association hung until its timeout."""
    ing = cluster.start_ingest()
    study, series = store_series(cluster, ing, 14)
    q = cluster.start_query()
    port = q.port if port_of == "query" else cluster.start_ingest(TESSERA_QUERY_BUS=q.bus).port
    a = dul.Association(port, abstract=dul.STUDY_ROOT_FIND, timeout=5)
    ident = dul.explicit_le([(0x0008, 0x0018, "UI", b""), (0x0008, 0x0052, "CS", b"IMAGE"),
                             (0x0020, 0x000D, "UI", study.encode()),
                             (0x0020, 0x000E, "UI", series.encode())])
    cmd = a.pdv_item(dul.c_find_command(dul.STUDY_ROOT_FIND), True, True)
    a.send_raw(struct.pack(">BBI", 4, 0, len(cmd)) + cmd
               + struct.pack(">BBI", 4, 0, len(ident) + 6) + a.pdv_item(ident, False, True)
               + dul.RELEASE_RQ)
    statuses = []
    while not statuses or statuses[-1] == 0xFF00:
        statuses.append(struct.unpack("<H", a.read_response()[(0, 0x0900)])[0])
    assert statuses == [0xFF00] * 14 + [0x0000]
    kind, _ = a.recv_pdu()  # within the 5 s socket timeout
    assert kind == 0x06, f"expected A-RELEASE-RP, got PDU {kind:#x}"
    a.drop()


def test_move_sub_operations_name_their_originator(cluster, tmp_path):
    """PS3.7 9.1.1.1.5 / 9.3.1.1: the C-STORE-RQs of a C-MOVE carry Move Originator
    AE Title (0000,1030) and Move Originator Message ID (0000,1031) (Orthanc sends
    both); destinations use them to tie the stores to the move."""
    from conftest import free_port
    ing = cluster.start_ingest()
    study, _ = store_series(cluster, ing, 2)
    q = cluster.start_query()
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    log = open(tmp_path / "storescp.log", "w")
    scp = subprocess.Popen(["storescp", "-d", "-aet", "DEST", "-od", str(received), str(port)],
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        cluster.sql("INSERT INTO modalities (name, aet, host, port) "
                    "VALUES ('dest', 'DEST', '127.0.0.1', %s)", (port,))
        for _ in range(100):
            if echo(port, "DEST") == 0:
                break
        p = subprocess.run(["movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "TESSERA",
                            "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(q.port)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        scp.terminate()
        scp.wait(timeout=10)
        log.close()
    assert len(list(received.iterdir())) == 2
    dump = (tmp_path / "storescp.log").read_text().replace("D: ", "")
    originators = [line.split(":", 1)[1].strip() for line in dump.splitlines()
                   if line.startswith("Move Originator AE Title")]
    ids = [line.split(":", 1)[1].strip() for line in dump.splitlines()
           if line.startswith("Move Originator ID")]
    assert originators == ["MOVESCU", "MOVESCU"], dump[-3000:]
    assert ids == ["1", "1"], dump[-3000:]  # movescu's C-MOVE-RQ is message 1


def test_idle_connections_do_not_hold_up_others(cluster):
    """Five connections that never send an A-ASSOCIATE-RQ, and one that sends a
    byte every second: a C-ECHO from the same host is still answered at once (it
    took 15 s when the accept thread read each request itself)."""
    import socket
    import time
    ing = cluster.start_ingest()
    idle = [socket.create_connection(("127.0.0.1", ing.port)) for _ in range(5)]
    dribble = socket.create_connection(("127.0.0.1", ing.port))
    dribble.sendall(b"\x01")
    t0 = time.monotonic()
    assert echo(ing.port) == 0
    dribble.sendall(b"\x00")
    assert echo(ing.port) == 0
    assert time.monotonic() - t0 < 2.0
    for s in idle + [dribble]:
        s.close()
    assert_alive(cluster, ing)


def test_connections_still_negotiating_are_bounded_per_peer(cluster):
    """Past TESSERA_DICOM_MAX_PENDING_PER_PEER silent connections from one address,
    the next is closed at once; another address is still served."""
    import socket
    ing = cluster.start_ingest(TESSERA_DICOM_MAX_PENDING_PER_PEER=3)
    silent = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", ing.port))
        silent.append(s)
    extra = socket.socket()
    extra.bind(("127.0.0.2", 0))
    extra.connect(("127.0.0.1", ing.port))
    extra.settimeout(5)
    assert extra.recv(1) == b""  # closed by the server, not left waiting
    assert echo(ing.port) == 0  # from 127.0.0.1
    assert "too many connections still negotiating" in ing.read_log()
    for s in silent + [extra]:
        s.close()


def test_command_element_longer_than_its_command_set(cluster):
    """A 20-byte command set whose element declares 4 GB (found by fuzz_dul): dcmtk
    would allocate the declared length first. The command set is checked whole
    before dcmtk parses it: the association is closed, the service goes on."""
    ing = cluster.start_ingest()
    a = dul.Association(ing.port)
    bad = struct.pack("<HHI", 0, 0x0100, 0xFFFDF804) + b"\x20\x00"
    a.send_pdvs([a.pdv_item(bad, True, True)])
    with pytest.raises((ConnectionError, AssertionError, OSError)):
        a.read_response()
    a.drop()
    assert "command element longer than a command set may be" in ing.read_log()
    assert_alive(cluster, ing)


@pytest.mark.parametrize("case", ["max-pdu-1", "duplicate-context-ids", "even-context-id"])
def test_association_requests_that_break_ps3_8_are_rejected(cluster, case):
    """PS3.8 9.3.2.2: presentation context ids are unique odd numbers. A peer that
    can take only a few bytes per PDU cannot be answered (dcmtk accepted a
    maximum length of 1, then aborted at the first answer). All three are
    rejected at once (A-ASSOCIATE-RJ permanent) instead."""
    ing = cluster.start_ingest()
    kw = {}
    if case == "max-pdu-1":
        kw["max_pdu"] = 1
    elif case == "duplicate-context-ids":
        kw["contexts"] = [(1, dul.VERIFICATION, dul.EXPLICIT_LE), (1, dul.CT_IMAGE_STORAGE, dul.EXPLICIT_LE)]
    else:
        kw["contexts"] = [(2, dul.VERIFICATION, dul.EXPLICIT_LE)]
    with pytest.raises(dul.AssociationRejected) as rj:
        dul.Association(ing.port, **kw)
    assert str(rj.value) == "00010101"  # result 1 (permanent), source 1, reason 1
    assert "the request breaks PS3.8" in ing.read_log()
    assert_alive(cluster, ing)
    # a maximum length of 0 means "no limit" (PS3.8 D.1), not "too small"
    a = dul.Association(ing.port, max_pdu=0)
    assert a.accepted and a.release()


@pytest.mark.parametrize("case", ["other-instance-uid", "mr-on-ct-context"])
def test_c_store_data_set_must_be_the_commands(cluster, case):
    """PS3.4 B.2.1.1 / PS3.7 9.1.1.1: the data set of a C-STORE is the instance
    the command names, of the command's SOP class. An MR data set on a CT
    context gets 0xA900 (data set does not match SOP class); a data set with
    another SOP Instance UID gets 0xC000. Nothing is stored. (Orthanc 1.10.1
    stores both; the standard is followed here.)"""
    ing = cluster.start_ingest()
    ds = pydicom.dcmread(CT_FILE)
    if case == "mr-on-ct-context":
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    path = cluster.base / "odd.dcm"
    ds.save_as(path)
    command_uid = str(ds.SOPInstanceUID) + (".9" if case == "other-instance-uid" else "")
    a = dul.Association(ing.port)
    status = a.store(dul.CT_IMAGE_STORAGE, command_uid, dul.dataset_bytes(path))
    assert status == (0xA900 if case == "mr-on-ct-context" else 0xC000), hex(status)
    assert a.release()
    assert cluster.stored_files() == [] and cluster.temp_files() == []
    assert_alive(cluster, ing)


# Storage SOP classes that are not negotiated: DICOMDIR is a file, never sent over
# C-STORE, and the non-patient objects (PS3.3 "Non-Patient" IODs) carry no
# patient, study or series, so there is nothing to index them under.
NOT_NEGOTIATED = {
    "1.2.840.10008.1.3.10",           # Media Storage Directory Storage
    "1.2.840.10008.5.1.4.1.1.200.1",  # CT Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.1.1.200.3",  # Protocol Approval Storage
    "1.2.840.10008.5.1.4.1.1.200.7",  # XA Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.38.1",       # Hanging Protocol Storage
    "1.2.840.10008.5.1.4.39.1",       # Color Palette Storage
    "1.2.840.10008.5.1.4.43.1",       # Generic Implant Template Storage
    "1.2.840.10008.5.1.4.44.1",       # Implant Assembly Template Storage
    "1.2.840.10008.5.1.4.45.1",       # Implant Template Group Storage
}


@pytest.mark.parametrize("syntax", [dul.EXPLICIT_LE, dul.IMPLICIT_LE])
def test_every_storage_sop_class_is_accepted(cluster, syntax):
    """Every current storage SOP class of pydicom's UID dictionary (an independent
    list) is accepted, 100 contexts per association, but the ones listed in
    NOT_NEGOTIATED, which are refused (docs/conformance.md says why)."""
    from pydicom._uid_dict import UID_dictionary
    sops = sorted(u for u, v in UID_dictionary.items()
                  if v[1] == "SOP Class" and "Storage" in v[0] and "Retired" not in v[3]
                  and "Commitment" not in v[0] and "Storage Management" not in v[0])
    assert len(sops) > 150
    ing = cluster.start_ingest()
    accepted, refused = set(), set()
    for start in range(0, len(sops), 100):
        chunk = sops[start:start + 100]
        a = dul.Association(ing.port, contexts=[(2 * i + 1, s, syntax) for i, s in enumerate(chunk)])
        for i, s in enumerate(chunk):
            (accepted if a.results.get(2 * i + 1) == 0 else refused).add(s)
        assert a.release()
    assert refused == NOT_NEGOTIATED & set(sops)
    assert len(accepted) == len(sops) - len(refused)


def test_stop_does_not_wait_for_a_silent_connection(cluster):
    """SIGTERM with a connection open that never sent its association request:
    ingest stops within seconds (it used to wait for the request's timeout,
    TESSERA_DICOM_TIMEOUT, 30 s by default, before it could stop)."""
    import signal
    import socket
    import time
    ing = cluster.start_ingest()
    silent = socket.create_connection(("127.0.0.1", ing.port))
    time.sleep(0.2)
    t0 = time.monotonic()
    ing.proc.send_signal(signal.SIGTERM)
    ing.proc.wait(timeout=20)
    assert time.monotonic() - t0 < 5
    assert ing.proc.returncode == 0
    silent.close()
