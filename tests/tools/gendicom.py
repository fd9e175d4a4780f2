#!/usr/bin/python3
"""Deterministic DICOM data sets for tests and benchmarks.

Writes PATIENTS x STUDIES x SERIES x INSTANCES Part 10 files under --out and a
manifest.json that lists every file with the tags a query matches on, so that a
test can compute the number of hits of any query from the manifest (or from the
rules below) instead of hard-coding them. The same arguments always give the
same bytes.

Run with Debian's python (python3-pydicom): /usr/bin/python3 gendicom.py ...

How values are chosen (p = patient index, g = global study index, q = global
series index, i = instance index in its series; all from 0):

  PatientID        TS<p, zero-padded to 6 digits or more>
  PatientName      FAMILY[p % 20] ^ GIVEN[(p // 20) % 13]  (the two lists are
                   shuffled by --seed; see the manifest's "names")
  PatientSex       M for even p, F for odd p
  StudyDate        --date-from + floor(g * --date-days / total studies) days:
                   spread evenly over the range, in study order
  AccessionNumber  A<g, zero-padded>
  StudyDescription BODY_PARTS[g % 7] (also BodyPartExamined)
  Modality         --modalities[q % len] (or the SOP class's modality with
                   --sop-classes mixed, which cycles SOP classes by q)
  SeriesNumber     series index in its study + 1
  InstanceNumber   i + 1
  UIDs             <root>.1.P.S / .2.P.S.R / .3.P.S.R.I, root = 2.25.<digits
                   derived from --seed>

Only the files differ from one another in those values: the dataset is encoded
once per SOP class and each file is that template with its values written over
fixed-width slots, which is what makes 100,000 files a matter of seconds.
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import sys
import time
import zlib

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence

SYNTAXES = {
    "explicit": ("1.2.840.10008.1.2.1", True, False),
    "implicit": ("1.2.840.10008.1.2", True, True),
    "bigendian": ("1.2.840.10008.1.2.2", False, False),
    # The dataset is written as Explicit VR LE, then deflated (PS3.5 A.5).
    "deflate": ("1.2.840.10008.1.2.1.99", True, False),
}

# name -> (SOP class UID, Modality, bits allocated, enhanced multi-frame)
SOP_CLASSES = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "CT", 16, False),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "MR", 16, False),
    "SC": ("1.2.840.10008.5.1.4.1.1.7", "OT", 16, False),
    "US": ("1.2.840.10008.5.1.4.1.1.6.1", "US", 8, False),
    "CR": ("1.2.840.10008.5.1.4.1.1.1", "CR", 16, False),
    "DX": ("1.2.840.10008.5.1.4.1.1.1.1", "DX", 16, False),
    "MG": ("1.2.840.10008.5.1.4.1.1.1.2", "MG", 16, False),
    "PT": ("1.2.840.10008.5.1.4.1.1.128", "PT", 16, False),
    "NM": ("1.2.840.10008.5.1.4.1.1.20", "NM", 16, False),
    "XA": ("1.2.840.10008.5.1.4.1.1.12.1", "XA", 16, False),
    "ENHANCED_CT": ("1.2.840.10008.5.1.4.1.1.2.1", "CT", 16, True),
    "ENHANCED_MR": ("1.2.840.10008.5.1.4.1.1.4.1", "MR", 16, True),
}

# --sop-classes mixed: series q uses MIXED_CYCLE[q % len].
MIXED_CYCLE = ["CT", "MR", "SC", "US", "CR", "DX", "PT", "NM", "ENHANCED_CT", "ENHANCED_MR"]

# Modality (from --modalities) -> SOP class; others become Secondary Capture.
MODALITY_SOP = {"CT": "CT", "MR": "MR", "US": "US", "CR": "CR", "DX": "DX", "MG": "MG",
                "PT": "PT", "NM": "NM", "XA": "XA", "OT": "SC", "SC": "SC"}

FAMILY = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
          "MARTIN", "LOPEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON",
          "WHITE", "HARRIS", "CLARK", "LEWIS"]
GIVEN = ["JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL", "LINDA",
         "DAVID", "ELIZABETH", "WILLIAM", "BARBARA", "RICHARD"]
BODY_PARTS = ["CHEST", "HEAD", "ABDOMEN", "PELVIS", "SPINE", "KNEE", "HAND"]

# Slots that vary from file to file: field -> [(tag, VR)]. A field may fill
# several elements (StudyDate also goes into SeriesDate, ContentDate...).
FIELDS = {
    "patient_id": [((0x0010, 0x0020), "LO")],
    "patient_name": [((0x0010, 0x0010), "PN")],
    "birth_date": [((0x0010, 0x0030), "DA")],
    "sex": [((0x0010, 0x0040), "CS")],
    "study_uid": [((0x0020, 0x000D), "UI")],
    "study_date": [((0x0008, 0x0020), "DA"), ((0x0008, 0x0021), "DA"), ((0x0008, 0x0023), "DA")],
    "study_time": [((0x0008, 0x0030), "TM"), ((0x0008, 0x0031), "TM"), ((0x0008, 0x0033), "TM")],
    "accession": [((0x0008, 0x0050), "SH")],
    "study_id": [((0x0020, 0x0010), "SH")],
    "study_desc": [((0x0008, 0x1030), "LO")],
    "body_part": [((0x0018, 0x0015), "CS")],
    "series_uid": [((0x0020, 0x000E), "UI")],
    "frame_uid": [((0x0020, 0x0052), "UI")],
    "series_number": [((0x0020, 0x0011), "IS")],
    "series_desc": [((0x0008, 0x103E), "LO")],
    "sop_uid": [((0x0002, 0x0003), "UI"), ((0x0008, 0x0018), "UI")],
    "instance_number": [((0x0020, 0x0013), "IS")],
    "position": [((0x0020, 0x0032), "DS")],
}
PATIENT_FIELDS = ["patient_id", "patient_name", "birth_date", "sex"]
STUDY_FIELDS = ["study_uid", "study_date", "study_time", "accession", "study_id", "study_desc",
                "body_part"]
SERIES_FIELDS = ["series_uid", "frame_uid", "series_number", "series_desc"]
INSTANCE_FIELDS = ["sop_uid", "instance_number", "position"]

# VRs whose length field is 4 bytes in explicit VR (the others have 2).
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def die(msg):
    print(f"gendicom: {msg}", file=sys.stderr)
    sys.exit(2)


def uid_root(seed):
    """2.25.<20 digits> derived from the seed: reproducible, and distinct seeds
    give distinct UIDs."""
    digest = hashlib.sha256(f"tessera-gendicom-{seed}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:8], "big") | (1 << 63))


def comp(index, count):
    """A UID component of fixed width for 0 <= index < count (no leading zero)."""
    return str(10 ** len(str(max(count - 1, 1))) + index)


class Plan:
    """Every value of every file, computed from the arguments alone."""

    def __init__(self, a):
        self.a = a
        rng = random.Random(a.seed)
        self.family = FAMILY[:]
        self.given = GIVEN[:]
        rng.shuffle(self.family)
        rng.shuffle(self.given)
        self.root = uid_root(a.seed)
        self.n_studies = a.patients * a.studies_per_patient
        self.n_series = self.n_studies * a.series_per_study
        self.n_instances = self.n_series * a.instances_per_series
        self.pid_digits = max(6, len(str(a.patients - 1)))
        self.g_digits = max(8, len(str(self.n_studies - 1)))
        try:
            self.date_from = datetime.datetime.strptime(a.date_from, "%Y%m%d").date()
        except ValueError:
            die(f"--date-from {a.date_from}: not a date YYYYMMDD")
        self.name_width = max(len(f) for f in self.family) + 1 + max(len(g) for g in self.given)
        self.body_width = max(len(b) for b in BODY_PARTS)
        self.modalities = [m.strip().upper() for m in a.modalities.split(",") if m.strip()]
        if not self.modalities:
            die("--modalities: empty list")
        if any(len(m) > 16 or not m.replace("_", "").isalnum() for m in self.modalities):
            die("--modalities: each is a DICOM code string (letters, digits, _; 16 at most)")
        names = self.modalities if a.sop_classes == "single" else [
            SOP_CLASSES[k][1] for k in MIXED_CYCLE]
        self.series_desc_width = (max(len(m) for m in names) + 1 + self.body_width + 1
                                  + len(str(a.series_per_study)))
        # The UID widths are fixed by the counts; check the longest against 64.
        longest = self.sop_uid(a.patients - 1, a.studies_per_patient - 1,
                               a.series_per_study - 1, a.instances_per_series - 1)
        if len(longest) > 64:
            die(f"UIDs would be {len(longest)} characters long (> 64): fewer of each level")

    def sop_kind(self, q):
        if self.a.sop_classes == "mixed":
            return MIXED_CYCLE[q % len(MIXED_CYCLE)]
        return MODALITY_SOP.get(self.modalities[q % len(self.modalities)], "SC")

    def modality(self, q):
        if self.a.sop_classes == "mixed":
            return SOP_CLASSES[self.sop_kind(q)][1]
        return self.modalities[q % len(self.modalities)]

    def _c(self, p, s=None, r=None, i=None):
        a = self.a
        parts = [comp(p, a.patients)]
        if s is not None:
            parts.append(comp(s, a.studies_per_patient))
        if r is not None:
            parts.append(comp(r, a.series_per_study))
        if i is not None:
            parts.append(comp(i, a.instances_per_series))
        return ".".join(parts)

    def study_uid(self, p, s):
        return f"{self.root}.1.{self._c(p, s)}"

    def series_uid(self, p, s, r):
        return f"{self.root}.2.{self._c(p, s, r)}"

    def frame_uid(self, p, s, r):
        return f"{self.root}.4.{self._c(p, s, r)}"

    def sop_uid(self, p, s, r, i):
        return f"{self.root}.3.{self._c(p, s, r, i)}"

    def patient(self, p):
        nf = len(self.family)
        name = f"{self.family[p % nf]}^{self.given[(p // nf) % len(self.given)]}"
        birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=(p * 7919) % 25000)
        return {
            "patient_id": f"TS{p:0{self.pid_digits}d}",
            "patient_name": name.ljust(self.name_width),
            "birth_date": birth.strftime("%Y%m%d"),
            "sex": "M" if p % 2 == 0 else "F",
        }

    def study(self, p, s):
        g = p * self.a.studies_per_patient + s
        day = self.date_from + datetime.timedelta(days=g * self.a.date_days // self.n_studies)
        seconds = (g * 137) % 86400
        body = BODY_PARTS[g % len(BODY_PARTS)]
        return {
            "study_uid": self.study_uid(p, s),
            "study_date": day.strftime("%Y%m%d"),
            "study_time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
            "accession": f"A{g:0{self.g_digits}d}",
            "study_id": f"S{g:0{self.g_digits}d}",
            "study_desc": body.ljust(self.body_width),
            "body_part": body.ljust(self.body_width),
        }

    def series(self, p, s, r, q):
        body = BODY_PARTS[(p * self.a.studies_per_patient + s) % len(BODY_PARTS)]
        desc = f"{self.modality(q)} {body} {r + 1}"
        return {
            "series_uid": self.series_uid(p, s, r),
            "frame_uid": self.frame_uid(p, s, r),
            "series_number": str(r + 1).ljust(len(str(self.a.series_per_study))),
            "series_desc": desc.ljust(self.series_desc_width),
        }

    def instance(self, p, s, r, i):
        half = self.a.size // 2
        z = i * 2.5
        return {
            "sop_uid": self.sop_uid(p, s, r, i),
            "instance_number": str(i + 1).ljust(len(str(self.a.instances_per_series))),
            "position": f"-{half}\\-{half}\\{z:011.2f}",
        }


def pixel_bytes(size, bits, little_endian):
    """A gradient with a cross, the same in every file."""
    y, x = np.mgrid[0:size, 0:size]
    if bits == 8:
        img = ((x + y) * 255 // max(2 * size - 2, 1)).astype(np.uint8)
        img[size // 2, :] = 255
        return img.tobytes()
    img = ((x * 4095) // max(size - 1, 1) + y).astype(np.uint16)
    img[size // 2, :] = 4095
    img[:, size // 2] = 4095
    return img.astype("<u2" if little_endian else ">u2").tobytes()


class Template:
    """One encoded file of a SOP class and the offsets of its slots."""

    def __init__(self, plan, kind, modality, syntax):
        self.plan = plan
        sop_class, _, bits, enhanced = SOP_CLASSES[kind]
        self.sop_class = sop_class
        ts_uid, little, implicit = SYNTAXES[syntax]
        self.deflate = syntax == "deflate"
        a = plan.a
        # The first file's values fix every slot's width.
        v = {}
        v.update(plan.patient(0))
        v.update(plan.study(0, 0))
        v.update(plan.series(0, 0, 0, 0))
        v.update(plan.instance(0, 0, 0, 0))
        self.widths = {f: len(v[f]) for f in v}

        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] + (["NONE"] if enhanced else [])
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = v["sop_uid"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = v["study_date"]
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = v["study_time"]
        ds.AccessionNumber = v["accession"]
        ds.Modality = modality
        ds.Manufacturer = "TESSERA GENDICOM"
        ds.InstitutionName = "TESSERA TEST HOSPITAL"
        ds.ReferringPhysicianName = "REFERRER^TEST"
        ds.StudyDescription = v["study_desc"]
        ds.SeriesDescription = v["series_desc"]
        ds.PatientName = v["patient_name"]
        ds.PatientID = v["patient_id"]
        ds.PatientBirthDate = v["birth_date"]
        ds.PatientSex = v["sex"]
        ds.BodyPartExamined = v["body_part"]
        if modality == "CT":
            ds.KVP = "120"
        if not enhanced:
            ds.SliceThickness = "2.5"
        ds.StudyInstanceUID = v["study_uid"]
        ds.SeriesInstanceUID = v["series_uid"]
        ds.StudyID = v["study_id"]
        # IS values are re-formatted by pydicom ("1  " is written "1 "): the
        # template holds digits of the slot's full width; fill() writes the values
        ds.SeriesNumber = "9" * self.widths["series_number"]
        ds.InstanceNumber = "9" * self.widths["instance_number"]
        if not enhanced:
            ds.ImagePositionPatient = v["position"].split("\\")
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = v["frame_uid"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if enhanced:
            ds.NumberOfFrames = "1"
            shared = Dataset()
            measures = Dataset()
            measures.PixelSpacing = ["0.5", "0.5"]
            measures.SliceThickness = "2.5"
            shared.PixelMeasuresSequence = Sequence([measures])
            orient = Dataset()
            orient.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            shared.PlaneOrientationSequence = Sequence([orient])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
            frame = Dataset()
            pos = Dataset()
            pos.ImagePositionPatient = v["position"].split("\\")
            frame.PlanePositionSequence = Sequence([pos])
            ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
        ds.Rows = a.size
        ds.Columns = a.size
        if not enhanced:
            ds.PixelSpacing = ["0.5", "0.5"]
        ds.BitsAllocated = bits
        ds.BitsStored = 8 if bits == 8 else 12
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if modality == "CT":
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
        if bits == 16:
            ds.WindowCenter = "1024"
            ds.WindowWidth = "4096"
        pixels = pixel_bytes(a.size, bits, little)
        ds.PixelData = pixels
        ds["PixelData"].VR = "OB" if bits == 8 else "OW"

        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = v["sop_uid"]
        meta.TransferSyntaxUID = ts_uid
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1475.1"
        meta.ImplementationVersionName = "TS_GENDICOM"
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        head.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(head, meta, enforce_standard=True)
        body = DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = little, (implicit and not self.deflate)
        write_dataset(body, ds)
        self.head = bytes(head.getvalue())
        self.body = bytes(body.getvalue())
        # Slots: (offset in head+body, width, field). The meta group is always
        # Explicit VR LE; the dataset is in the file's encoding.
        self.slots = {}
        # Pixel data is the last element: the slots are all before it.
        before_pixels = self.body[:len(self.body) - len(pixels)]
        for field, elements in FIELDS.items():
            for tag, vr in elements:
                # ImagePositionPatient of an enhanced image is nested in the
                # per-frame group; it is found the same way.
                w = self.widths[field]
                if tag[0] == 0x0002:
                    hdr = self._header(tag, vr, w, True, False)
                    region, base = self.head, 0
                else:
                    hdr = self._header(tag, vr, w, little, implicit and not self.deflate)
                    region, base = before_pixels, len(self.head)
                n = region.count(hdr)
                if n != 1:
                    raise RuntimeError(f"slot {field} {tag}: {n} matches in the template")
                at = region.find(hdr) + len(hdr)
                self.slots.setdefault(field, []).append((base + at, w))
        for field in FIELDS:
            if field not in self.slots:
                raise RuntimeError(f"slot {field}: not found in the template")

    @staticmethod
    def _header(tag, vr, width, little, implicit):
        """The bytes before an element's value, as encoded."""
        order = "little" if little else "big"
        out = tag[0].to_bytes(2, order) + tag[1].to_bytes(2, order)
        length = width + (width & 1)
        if implicit:
            return out + length.to_bytes(4, order)
        if vr in LONG_VRS:
            return out + vr.encode() + b"\x00\x00" + length.to_bytes(4, order)
        return out + vr.encode() + length.to_bytes(2, order)

    def fill(self, buf, values):
        for field, value in values.items():
            raw = value.encode("ascii")
            for at, w in self.slots[field]:
                if len(raw) != w:
                    raise RuntimeError(f"{field}: '{value}' is not {w} characters long")
                buf[at:at + w] = raw

    def encode(self, buf):
        if not self.deflate:
            return buf
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        body = c.compress(bytes(buf[len(self.head):])) + c.flush()
        if len(body) & 1:
            body += b"\x00"
        return bytes(buf[:len(self.head)]) + body


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--studies-per-patient", type=int, default=1)
    ap.add_argument("--series-per-study", type=int, default=1)
    ap.add_argument("--instances-per-series", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="rows = columns (default 64)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modalities", default="CT",
                    help="comma-separated, series q gets the (q %% n)-th (default CT)")
    ap.add_argument("--sop-classes", choices=["single", "mixed"], default="single",
                    help="single: the modality's usual SOP class; mixed: cycle through "
                    + ", ".join(MIXED_CYCLE))
    ap.add_argument("--syntax", choices=sorted(SYNTAXES), default="explicit",
                    help="transfer syntax of every file (default explicit = Explicit VR LE)")
    ap.add_argument("--date-from", default="20100101", help="first StudyDate (YYYYMMDD)")
    ap.add_argument("--date-days", type=int, default=3650,
                    help="StudyDates spread over this many days (default 3650)")
    ap.add_argument("--no-manifest", action="store_true", help="do not write manifest.json")
    ap.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    a = ap.parse_args()
    for name in ("patients", "studies_per_patient", "series_per_study", "instances_per_series",
                 "date_days"):
        if getattr(a, name) < 1:
            die(f"--{name.replace('_', '-')} must be at least 1")
    if not 2 <= a.size <= 4096:
        die("--size must be between 2 and 4096")

    plan = Plan(a)
    templates = {}
    os.makedirs(a.out, exist_ok=True)
    manifest = None if a.no_manifest else Manifest(a, plan)
    t0 = time.monotonic()
    nbytes = 0
    q = 0
    for p in range(a.patients):
        pv = plan.patient(p)
        pdir = os.path.join(a.out, pv["patient_id"])
        for s in range(a.studies_per_patient):
            sv = plan.study(p, s)
            for r in range(a.series_per_study):
                kind, modality = plan.sop_kind(q), plan.modality(q)
                tpl = templates.get((kind, modality))
                if tpl is None:
                    tpl = templates[(kind, modality)] = Template(plan, kind, modality, a.syntax)
                rv = plan.series(p, s, r, q)
                os.makedirs(os.path.join(pdir, f"st{s + 1:03d}", f"se{r + 1:03d}"), exist_ok=True)
                series_buf = bytearray(tpl.head + tpl.body)
                tpl.fill(series_buf, pv)
                tpl.fill(series_buf, sv)
                tpl.fill(series_buf, rv)
                for i in range(a.instances_per_series):
                    iv = plan.instance(p, s, r, i)
                    buf = bytearray(series_buf)
                    tpl.fill(buf, iv)
                    data = tpl.encode(buf)
                    rel = os.path.join(pv["patient_id"], f"st{s + 1:03d}", f"se{r + 1:03d}",
                                       f"{i + 1:05d}.dcm")
                    fd = os.open(os.path.join(a.out, rel),
                                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        if os.write(fd, data) != len(data):
                            die(f"{rel}: short write")
                    finally:
                        os.close(fd)
                    nbytes += len(data)
                    if manifest:
                        manifest.add({
                            "path": rel,
                            "PatientID": pv["patient_id"],
                            "PatientName": pv["patient_name"].rstrip(),
                            "PatientSex": pv["sex"],
                            "StudyInstanceUID": sv["study_uid"],
                            "StudyDate": sv["study_date"],
                            "AccessionNumber": sv["accession"],
                            "StudyDescription": sv["study_desc"].rstrip(),
                            "SeriesInstanceUID": rv["series_uid"],
                            "SeriesNumber": r + 1,
                            "Modality": modality,
                            "SOPInstanceUID": iv["sop_uid"],
                            "SOPClassUID": tpl.sop_class,
                            "InstanceNumber": i + 1,
                        })
                q += 1
    if manifest:
        manifest.close()
    elapsed = time.monotonic() - t0
    if not a.quiet:
        rate = plan.n_instances / elapsed if elapsed > 0 else float("inf")
        print(f"gendicom: {plan.n_instances} files, {nbytes / 1e6:.1f} MB in {elapsed:.2f} s "
              f"({rate:.0f} files/s) under {a.out}", file=sys.stderr)


class Manifest:
    """manifest.json, written as the files are (one entry a line), renamed into
    place when complete."""

    def __init__(self, a, plan):
        params = {k: getattr(a, k) for k in ("patients", "studies_per_patient", "series_per_study",
                                             "instances_per_series", "size", "seed", "modalities",
                                             "sop_classes", "syntax", "date_from", "date_days")}
        head = {
            "generator": "tests/tools/gendicom.py",
            "parameters": params,
            "uid_root": plan.root,
            "names": {"family": plan.family, "given": plan.given, "body_parts": BODY_PARTS},
            "counts": {"patients": a.patients, "studies": plan.n_studies,
                       "series": plan.n_series, "instances": plan.n_instances},
        }
        self.path = os.path.join(a.out, "manifest.json")
        self.tmp = self.path + ".tmp"
        self.f = open(self.tmp, "w")
        self.f.write(json.dumps(head)[:-1] + ', "files": [')
        self.sep = "\n"

    def add(self, entry):
        self.f.write(self.sep + json.dumps(entry))
        self.sep = ",\n"

    def close(self):
        self.f.write("\n]}\n")
        self.f.close()
        os.replace(self.tmp, self.path)


if __name__ == "__main__":
    main()
