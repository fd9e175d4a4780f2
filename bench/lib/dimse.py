"""A small DICOM Upper Layer client for benchmarks: one association that stays
open for many C-FIND requests, so that each measured query costs one DIMSE
exchange and nothing else (no process start, no association set-up).

Derived from tests/integration/dul.py (raw PS3.8 PDUs); identifiers are encoded
with pydicom (Debian's python3-pydicom) in Implicit VR Little Endian. Answers are
counted, not decoded: the client does the same small amount of work for both
servers.

    a = FindAssociation(port, called="ORTHANC")
    n = a.find({"QueryRetrieveLevel": "STUDY", "PatientID": "TS000001",
                "StudyInstanceUID": ""})
    a.release()
"""
import socket
import struct

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PENDING = (0xFF00, 0xFF01)


def _uid(u):
    b = u.encode() if isinstance(u, str) else u
    return b + b"\0" if len(b) % 2 else b


def _item(kind, payload):
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _elem(group, element, value):
    return struct.pack("<HHI", group, element, len(value)) + value


def _command(fields):
    body = b"".join(_elem(0, e, v) for e, v in fields)
    return _elem(0, 0x0000, struct.pack("<I", len(body))) + body


def _parse_command(data):
    out, i = {}, 0
    while i + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, i)
        out[(g, e)] = data[i + 8:i + 8 + n]
        i += 8 + n
    return out


def encode_identifier(values):
    """{keyword: value} -> Implicit VR LE dataset bytes."""
    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


class AssociationRejected(Exception):
    pass


class FindAssociation:
    def __init__(self, port, called, calling="BENCHFIND", host="127.0.0.1", timeout=600,
                 max_pdu=65536):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pc = _item(0x30, STUDY_ROOT_FIND.encode()) + _item(0x40, IMPLICIT_LE)
        user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4.5.6.7")
        body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
                + b"\0" * 32 + _item(0x10, APP_CONTEXT)
                + struct.pack(">BBHBBBB", 0x20, 0, 4 + len(pc), 1, 0, 0, 0) + pc
                + _item(0x50, user))
        self._send_pdu(0x01, body)
        kind, payload = self._recv_pdu()
        if kind != 0x02:
            raise AssociationRejected(f"PDU {kind:#x}: {payload.hex()}")
        self.pcid = 1
        self.peer_max = 16384
        i = 68
        while i + 4 <= len(payload):
            k, _, n = struct.unpack_from(">BBH", payload, i)
            if k == 0x21 and payload[i + 6] != 0:
                raise AssociationRejected("presentation context refused")
            if k == 0x50:  # user information: max PDU length of the peer
                j = i + 4
                while j + 4 <= i + 4 + n:
                    sk, _, sn = struct.unpack_from(">BBH", payload, j)
                    if sk == 0x51:
                        self.peer_max = struct.unpack_from(">I", payload, j + 4)[0] or (1 << 31)
                    j += 4 + sn
            i += 4 + n
        self.message_id = 0

    def _send_pdu(self, kind, body):
        self.sock.sendall(struct.pack(">BBI", kind, 0, len(body)) + body)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv_pdu(self):
        kind, _, n = struct.unpack(">BBI", self._recv_exact(6))
        return kind, self._recv_exact(n)

    def _send_pdvs(self, data, command):
        room = max(self.peer_max - 6, 256)
        chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
        for k, chunk in enumerate(chunks):
            control = (1 if command else 0) | (2 if k == len(chunks) - 1 else 0)
            self._send_pdu(0x04, struct.pack(">IBB", len(chunk) + 2, self.pcid, control) + chunk)

    def find(self, identifier):
        """Sends one C-FIND-RQ; returns the number of pending answers. Raises on a
        final status other than success."""
        self.message_id += 1
        cmd = _command([(0x0002, _uid(STUDY_ROOT_FIND)), (0x0100, struct.pack("<H", 0x0020)),
                        (0x0110, struct.pack("<H", self.message_id)),
                        (0x0700, struct.pack("<H", 0)), (0x0800, struct.pack("<H", 0x0000))])
        self._send_pdvs(cmd, True)
        self._send_pdvs(encode_identifier(identifier), False)
        matches = 0
        command = b""
        while True:
            kind, payload = self._recv_pdu()
            if kind != 0x04:
                raise ConnectionError(f"unexpected PDU {kind:#x} during C-FIND")
            i = 0
            while i < len(payload):
                n, _, control = struct.unpack_from(">IBB", payload, i)
                if control & 1:
                    command += payload[i + 6:i + 4 + n]
                    if control & 2:
                        fields = _parse_command(command)
                        command = b""
                        status = struct.unpack("<H", fields[(0, 0x0900)])[0]
                        if status in PENDING:
                            matches += 1  # its identifier follows in data PDVs: skipped
                        elif status == 0x0000:
                            return matches  # the final response carries no dataset
                        else:
                            raise RuntimeError(f"C-FIND status {status:#06x}")
                i += 4 + n

    def release(self):
        try:
            self._send_pdu(0x05, b"\0\0\0\0")
            self._recv_pdu()
        finally:
            self.sock.close()
