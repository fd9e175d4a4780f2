"""Orthanc clients that broke on Tessera (issue 16): instance metadata written at
reception, series completeness, small routes and options, compared side by side
with Orthanc 1.10.1 (test_rest.py's `fresh` pair: an empty Orthanc and an empty
Tessera). Where Orthanc departs from the DICOM standard, the test says so and
asserts the standard."""
import json
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from conftest import PYDICOM_FILES, storescu
from orthanc import orthanc  # noqa: F401  (a fixture of fresh)
from test_rest import diff, fresh  # noqa: F401  (fresh is a fixture)


def both(pair, method, path, body=None, headers=None):
    """(Orthanc's answer, Tessera's answer), each (status, body, headers)."""
    return (pair.ref.req(method, path, body, headers), pair.t.req(method, path, body, headers))


def upload_both(pair, data):
    a, b = pair.ref.upload(data), pair.t.upload(data)
    assert a["ID"] == b["ID"], (a, b)
    return a


# ----------------------------------------------------------------------------------
# Item 1: metadata written at reception


def bare_dataset(src, uid_suffix, implicit):
    """src's data set without a file meta header (no preamble, no "DICM"), encoded
    implicit or explicit VR little endian, with a SOP Instance UID of its own."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID += uid_suffix
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    pydicom.filewriter.write_dataset(fp, ds)
    return fp.getvalue()


def with_uid(src, uid_suffix):
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID += uid_suffix
    fp = DicomBytesIO()
    ds.save_as(fp, write_like_original=True)
    return fp.getvalue()


def pixel_tag_offset(data):
    """Where the last (7FE0,0010) tag starts in data, either byte order; -1 if none."""
    return max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))


METADATA_FILES = {
    # name: (bytes, expected TransferSyntax, expected PixelDataOffset or None)
    "CT_small": lambda: (PYDICOM_FILES / "CT_small.dcm").read_bytes(),
    "JPEG2000": lambda: (PYDICOM_FILES / "JPEG2000.dcm").read_bytes(),
    "rtplan (no pixel data)": lambda: (PYDICOM_FILES / "rtplan.dcm").read_bytes(),
    "big endian": lambda: with_uid(PYDICOM_FILES / "MR_small_bigendian.dcm", ".78"),
    "deflated": lambda: (PYDICOM_FILES / "image_dfl.dcm").read_bytes(),
    "bare implicit": lambda: bare_dataset(PYDICOM_FILES / "MR_small_implicit.dcm", ".77", True),
    "bare explicit": lambda: bare_dataset(PYDICOM_FILES / "CT_small.dcm", ".79", False),
    "bare explicit, no pixel data": lambda: (PYDICOM_FILES / "ExplVR_LitEndNoMeta.dcm").read_bytes(),
}


def test_upload_metadata_as_orthanc(fresh):
    """Every REST upload gets Orthanc's metadata: TransferSyntax also for a file
    without a meta header (the encoding it was read in: 1.2.840.10008.1.2 for
    implicit VR little endian), PixelDataOffset (where the top-level Pixel Data
    element's tag starts: Orthanc's value, not where its value starts; none for a
    file without pixel data, without a meta header, or deflated, as in Orthanc),
    RemoteIP, and RemoteAET and HttpUsername empty. Orthanc writes no CalledAET for
    REST uploads, and neither does Tessera."""
    seen = {}
    for name, make in METADATA_FILES.items():
        data = make()
        up = upload_both(fresh, data)
        path = f"/instances/{up['ID']}/metadata?expand"
        ref, got = fresh.ref.get(path), fresh.t.get(path)
        for m in (ref, got):
            m.pop("ReceptionDate")
        assert got == ref, (name, diff(ref, got))
        seen[name] = got
    assert seen["bare implicit"]["TransferSyntax"] == "1.2.840.10008.1.2"
    assert seen["CT_small"]["PixelDataOffset"] == str(
        pixel_tag_offset((PYDICOM_FILES / "CT_small.dcm").read_bytes()))
    assert seen["big endian"]["PixelDataOffset"] == str(
        pixel_tag_offset(METADATA_FILES["big endian"]()))
    assert "PixelDataOffset" not in seen["rtplan (no pixel data)"]
    assert seen["CT_small"]["RemoteIP"] == "127.0.0.1"
    assert seen["CT_small"]["RemoteAET"] == "" and seen["CT_small"]["HttpUsername"] == ""
    assert "CalledAET" not in seen["CT_small"]


def test_c_store_metadata_has_pixel_data_offset(fresh, tmp_path):
    """A C-STOREd file is written by the receiver (its meta header differs between
    the two servers: test_rest.py's header), so its PixelDataOffset is compared with
    the stored file's own bytes; the other keys with Orthanc."""
    f = tmp_path / "ct.dcm"
    f.write_bytes(with_uid(PYDICOM_FILES / "CT_small.dcm", ".81"))
    rc, out = storescu(SimpleNamespace(aet=fresh.orthanc.aet, port=fresh.orthanc.dicom_port), [f])
    assert rc == 0, out
    rc, out = storescu(fresh.ing, [f])
    assert rc == 0, out
    iid = fresh.t.get("/instances")[0]
    ref = fresh.ref.get(f"/instances/{iid}/metadata?expand")
    got = fresh.t.get(f"/instances/{iid}/metadata?expand")
    stored = fresh.t.req("GET", f"/instances/{iid}/file")[1]
    assert got["PixelDataOffset"] == str(pixel_tag_offset(stored))
    assert set(got) == set(ref), diff(ref, got)
    for k in ("Origin", "RemoteIP", "TransferSyntax", "SopClassUid", "IndexInSeries"):
        assert got[k] == ref[k], k
