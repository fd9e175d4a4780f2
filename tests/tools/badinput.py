#!/usr/bin/python3
"""A corpus of broken DICOM files, made from one good file, for the bad-input tests
(tests/integration/test_bad_input.py) and as fuzzing seeds (scripts/fuzz).

    /usr/bin/python3 tests/tools/badinput.py OUT_DIR [GOOD_FILE]

Every case is a file named after what is wrong with it; the same input always gives
the same bytes."""
import struct
import sys
from pathlib import Path

GOOD = Path("/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm")


def element(group, elem, vr, value, explicit=True):
    tag = struct.pack("<HH", group, elem)
    if not explicit:
        return tag + struct.pack("<I", len(value)) + value
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def cases(good):
    # Part 10: 128-byte preamble, "DICM", meta group; CT_small's dataset is explicit LE
    meta_len = struct.unpack("<I", good[140:144])[0]
    body = 144 + meta_len  # first dataset element
    pixel = good.rindex(b"\xe0\x7f\x10\x00")  # (7FE0,0010)
    yield "empty", b""
    yield "preamble-only", good[:128]
    yield "dicm-only", good[:132]
    yield "not-dicom", b"%PDF-1.4 this is not DICOM at all\n" * 20
    yield "meta-truncated", good[:150]
    yield "cut-after-meta", good[:body]
    yield "cut-mid-element", good[:body + 3]
    yield "cut-mid-pixels", good[:pixel + 12 + 1000]
    # the length of the first dataset element made to run past the end of the file
    first_vr = good[body + 4:body + 6]
    broken = bytearray(good)
    if first_vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        struct.pack_into("<I", broken, body + 8, 0x7FFFFFF0)
    else:
        struct.pack_into("<H", broken, body + 6, 0xFFF0)
    yield "length-past-end", bytes(broken)
    # pixel data declaring 4 GB
    broken = bytearray(good)
    struct.pack_into("<I", broken, pixel + 8, 0xFFFFFFF0)
    yield "huge-pixel-length", bytes(broken)
    # an element with a VR that does not exist
    broken = bytearray(good)
    broken[body + 4:body + 6] = b"Z!"
    yield "bogus-vr", bytes(broken)
    # 5,000 nested sequences of undefined length, never closed
    head = good[:body]
    deep = b""
    for _ in range(5000):
        deep += struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
        deep += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    yield "deep-undefined-sequences", head + deep
    # one undefined-length sequence that is never delimited, then the end of the file
    yield "undelimited-sequence", head + struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + \
        struct.pack("<I", 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + \
        element(0x0010, 0x0010, b"PN", b"DOE^JOHN")
    # the dataset without its identifying UIDs (only a patient name)
    yield "no-uids", head + element(0x0010, 0x0010, b"PN", b"DOE^JOHN")
    # a meta group whose declared length is wrong
    broken = bytearray(good)
    struct.pack_into("<I", broken, 140, 0xFFFFFF00)
    yield "meta-length-wrong", bytes(broken)


def main():
    out = Path(sys.argv[1])
    good = Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else GOOD.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in cases(good):
        (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
