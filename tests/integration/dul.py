"""A minimal DICOM Upper Layer client (PS3.8) for tests that need what no
well-behaved client sends: a dataset that is not DICOM, a truncated dataset,
an association that breaks in the middle of an instance. dcmtk's tools are
used for everything else."""
import socket
import struct

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def _uid(u):
    b = u.encode() if isinstance(u, str) else u
    return b + b"\0" if len(b) % 2 else b


def _item(kind, payload):
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _elem(group, element, value):
    # implicit VR little endian, as every DIMSE command set is encoded
    return struct.pack("<HHI", group, element, len(value)) + value


def c_store_command(sop_class, sop_instance, message_id=1):
    body = (_elem(0, 0x0002, _uid(sop_class)) + _elem(0, 0x0100, struct.pack("<H", 0x0001))
            + _elem(0, 0x0110, struct.pack("<H", message_id)) + _elem(0, 0x0700, struct.pack("<H", 0))
            + _elem(0, 0x0800, struct.pack("<H", 0x0000)) + _elem(0, 0x1000, _uid(sop_instance)))
    return _elem(0, 0x0000, struct.pack("<I", len(body))) + body


def c_find_command(sop_class, message_id=1):
    body = (_elem(0, 0x0002, _uid(sop_class)) + _elem(0, 0x0100, struct.pack("<H", 0x0020))
            + _elem(0, 0x0110, struct.pack("<H", message_id)) + _elem(0, 0x0700, struct.pack("<H", 0))
            + _elem(0, 0x0800, struct.pack("<H", 0x0000)))
    return _elem(0, 0x0000, struct.pack("<I", len(body))) + body


def c_echo_command(message_id=1):
    body = (_elem(0, 0x0002, _uid(VERIFICATION)) + _elem(0, 0x0100, struct.pack("<H", 0x0030))
            + _elem(0, 0x0110, struct.pack("<H", message_id))
            + _elem(0, 0x0800, struct.pack("<H", 0x0101)))
    return _elem(0, 0x0000, struct.pack("<I", len(body))) + body


def explicit_le(elements):
    """An explicit VR little endian data set of short-VR elements:
    [(group, element, vr, bytes)] (values padded to even length here)."""
    out = b""
    for group, element, vr, value in sorted(elements):
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        out += struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value
    return out


def parse_command(data):
    """Implicit VR LE command set -> {(group, element): bytes}."""
    out, i = {}, 0
    while i + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, i)
        out[(g, e)] = data[i + 8:i + 8 + n]
        i += 8 + n
    return out


def dataset_bytes(path):
    """The dataset of a Part 10 file, without preamble and meta header."""
    raw = open(path, "rb").read()
    assert raw[128:132] == b"DICM", path
    # (0002,0000) UL is explicit VR: tag 4 + VR 2 + length 2 + value 4
    meta_len = struct.unpack_from("<I", raw, 132 + 8)[0]
    return raw[132 + 12 + meta_len:]


class AssociationRejected(Exception):
    pass


class Association:
    def __init__(self, port, called="TESSERA", calling="DULTEST", host="127.0.0.1",
                 abstract=CT_IMAGE_STORAGE, syntax=EXPLICIT_LE, timeout=30, contexts=None,
                 max_pdu=16384):
        """contexts: [(id, abstract syntax, transfer syntax)], default one context
        (1, abstract, syntax)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        pcs = b""
        for pcid, abs_, ts in contexts or [(1, abstract, syntax)]:
            pc = _item(0x30, abs_.encode()) + _item(0x40, ts.encode())
            pcs += struct.pack(">BBHBBBB", 0x20, 0, 4 + len(pc), pcid, 0, 0, 0) + pc
        user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4.5.6.7")
        body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
                + b"\0" * 32 + _item(0x10, APP_CONTEXT) + pcs + _item(0x50, user))
        self._send_pdu(0x01, body)
        kind, payload = self._recv_pdu()
        if kind == 0x03:
            raise AssociationRejected(payload.hex())
        assert kind == 0x02, f"unexpected PDU {kind:#x}"
        self.pcid = 1
        self.accepted = self._pc_result(payload) == 0
        self.results = self._pc_results(payload)

    def _pc_results(self, payload):
        """{presentation context id: result} of an A-ASSOCIATE-AC (0: accepted)."""
        out, i = {}, 68
        while i + 4 <= len(payload):
            kind, _, n = struct.unpack_from(">BBH", payload, i)
            if kind == 0x21:
                out[payload[i + 4]] = payload[i + 6]
            i += 4 + n
        return out

    def _pc_result(self, payload):
        i = 68  # fixed part of A-ASSOCIATE-AC
        while i + 4 <= len(payload):
            kind, _, n = struct.unpack_from(">BBH", payload, i)
            if kind == 0x21:
                return payload[i + 6]
            i += 4 + n
        return None

    def _send_pdu(self, kind, body):
        self.sock.sendall(struct.pack(">BBI", kind, 0, len(body)) + body)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return buf

    def recv_pdu(self):
        return self._recv_pdu()

    def _recv_pdu(self):
        kind, _, n = struct.unpack(">BBI", self._recv_exact(6))
        return kind, self._recv_exact(n)

    def _pdv(self, data, command, last):
        self._send_pdu(0x04, self.pdv_item(data, command, last))

    def pdv_item(self, data, command, last, pcid=None):
        """One PDV item (PS3.8 9.3.5.1): length, presentation context id, control header."""
        control = (1 if command else 0) | (2 if last else 0)
        return struct.pack(">IBB", len(data) + 2, self.pcid if pcid is None else pcid,
                           control) + data

    def send_pdvs(self, items):
        """Several PDV items in one P-DATA-TF PDU, as PS3.8 annex E allows."""
        self._send_pdu(0x04, b"".join(items))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_response(self):
        """Reads PDUs until a whole command set arrives: {(group, element): bytes}.
        Data set PDVs (C-FIND answers' identifiers) are gathered in self.last_data."""
        command, data, fields = b"", b"", None
        while True:
            kind, payload = self._recv_pdu()
            assert kind == 0x04, f"unexpected PDU {kind:#x}: {payload.hex()}"
            i = 0
            while i < len(payload):
                n, _, control = struct.unpack_from(">IBB", payload, i)
                if control & 1:
                    command += payload[i + 6:i + 4 + n]
                else:
                    data += payload[i + 6:i + 4 + n]
                i += 4 + n
                if control & 3 == 3:
                    fields = parse_command(command)
                    # (0000,0800) 0x0101: no data set follows
                    if fields.get((0, 0x0800)) == struct.pack("<H", 0x0101):
                        self.last_data = b""
                        return fields
                elif control & 3 == 2 and fields is not None:
                    self.last_data = data
                    return fields

    def send_dataset(self, sop_class, sop_instance, data, complete=True, fragment=8000):
        """Sends a C-STORE-RQ and its dataset; with complete=False the last
        fragment is never sent."""
        self._pdv(c_store_command(sop_class, sop_instance), command=True, last=True)
        chunks = [data[i:i + fragment] for i in range(0, len(data), fragment)] or [b""]
        if not complete:
            chunks = chunks[:max(1, len(chunks) // 2)]
        for i, chunk in enumerate(chunks):
            self._pdv(chunk, command=False, last=complete and i == len(chunks) - 1)

    def store(self, sop_class, sop_instance, data):
        """Sends a whole C-STORE and returns the response's status."""
        self.send_dataset(sop_class, sop_instance, data)
        self.last_response = self.read_response()
        return struct.unpack("<H", self.last_response[(0, 0x0900)])[0]

    def abort(self):
        self._send_pdu(0x07, b"\0\0\0\0")
        self.sock.close()

    def drop(self):
        """Closes the TCP connection without any DICOM goodbye."""
        self.sock.close()

    def release(self):
        self._send_pdu(0x05, b"\0\0\0\0")
        kind, _ = self._recv_pdu()
        self.sock.close()
        return kind == 0x06
