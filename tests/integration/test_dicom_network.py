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
