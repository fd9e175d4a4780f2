#!/usr/bin/python3
"""Writes the seed corpus of fuzz_dul (tests/fuzz/corpus/dul/): DICOM upper
layer streams after fuzz_dul's canned A-ASSOCIATE-RQ (mode byte 1: ingest's
SCP, 3: query's), built with tests/integration/dul.py. Run it again after
changing dul.py; the files are committed."""
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/integration"))
import dul  # noqa: E402

OUT = ROOT / "tests/fuzz/corpus/dul"
CT = dul.CT_IMAGE_STORAGE
FIND = dul.STUDY_ROOT_FIND


def item(data, pcid, command, last):
    return struct.pack(">IBB", len(data) + 2, pcid, (1 if command else 0) | (2 if last else 0)) + data


def pdu(*items):
    body = b"".join(items)
    return struct.pack(">BBI", 4, 0, len(body)) + body


# a small explicit VR little endian CT-like data set
DATASET = dul.explicit_le([
    (0x0008, 0x0016, "UI", CT.encode()), (0x0008, 0x0018, "UI", b"1.2.3.4.5.6.7.8"),
    (0x0008, 0x0060, "CS", b"CT"), (0x0010, 0x0010, "PN", b"DOE^JOHN"),
    (0x0010, 0x0020, "LO", b"PID1"), (0x0020, 0x000D, "UI", b"1.2.3.4"),
    (0x0020, 0x000E, "UI", b"1.2.3.4.5"), (0x0028, 0x0010, "US", struct.pack("<H", 2)),
])
IDENT = dul.explicit_le([(0x0008, 0x0052, "CS", b"STUDY"), (0x0010, 0x0010, "PN", b"DOE*"),
                         (0x0020, 0x000D, "UI", b"")])
RELEASE = dul.RELEASE_RQ

seeds = {
    "echo": b"\x01" + pdu(item(dul.c_echo_command(), 1, True, True)) + RELEASE,
    "store": b"\x01" + pdu(item(dul.c_store_command(CT, "1.2.3.4.5.6.7.8"), 3, True, True))
             + pdu(item(DATASET, 3, False, True)) + RELEASE,
    "store-many-pdvs": b"\x01" + pdu(item(dul.c_store_command(CT, "1.2.3.4.5.6.7.8"), 3, True, True),
                                     *[item(DATASET[i:i + 16], 3, False, i + 16 >= len(DATASET))
                                       for i in range(0, len(DATASET), 16)]) + RELEASE,
    "find-ingest": b"\x01" + pdu(item(dul.c_find_command(FIND), 5, True, True),
                                 item(IDENT, 5, False, True)) + RELEASE,
    "find-query": b"\x03" + pdu(item(dul.c_find_command(FIND), 5, True, True),
                                item(IDENT, 5, False, True)) + RELEASE,
    "abort": b"\x01" + b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00",
    "bad-pdv-length": b"\x01" + struct.pack(">BBI", 4, 0, 12) + struct.pack(">IBB", 100, 3, 1) + b"\0" * 6,
}
OUT.mkdir(parents=True, exist_ok=True)
for name, data in seeds.items():
    (OUT / name).write_bytes(data)
print(f"{len(seeds)} seeds in {OUT}")
