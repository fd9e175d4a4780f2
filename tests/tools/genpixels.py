#!/usr/bin/python3
"""DICOM files with known pixels, one per image variant, for the image tests and
benchmarks (gendicom.py makes many files of few kinds; this makes few files of
many kinds). Deterministic: the same arguments give the same bytes.

    /usr/bin/python3 genpixels.py --out DIR [--size N] [--only NAME,...]

Writes DIR/<variant>.dcm (Explicit VR Little Endian) and DIR/manifest.json, which
lists each file's variant, SOPInstanceUID and the attributes the tests need.
Variants (VARIANTS below): monochrome 1/2 at 8, 12 and 16 bits, signed and
unsigned, with and without rescale/window; RGB (interleaved and planar);
YBR_FULL; YBR_FULL_422; palette colour; a multi-frame; big endian/implicit
copies are made by the tests with dcmconv."""

import argparse
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ROOT = "2.25.4242"


def mono(size, bits_stored, signed, frames=1, seed=0):
    """A gradient with a cross and noise that spans the stored range."""
    rng = np.random.default_rng(seed)
    lo = -(1 << (bits_stored - 1)) if signed else 0
    hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    out = []
    for f in range(frames):
        y, x = np.mgrid[0:size, 0:size]
        v = lo + (x + y + 7 * f) * (hi - lo) // max(2 * size - 2 + 7 * frames, 1)
        v = v + rng.integers(-3, 4, size=v.shape)
        v[size // 2, :] = hi
        v[:, size // 3] = lo
        out.append(np.clip(v, lo, hi))
    return np.stack(out) if frames > 1 else out[0]


def rgb(size, seed=0):
    y, x = np.mgrid[0:size, 0:size]
    r = (x * 255) // max(size - 1, 1)
    g = (y * 255) // max(size - 1, 1)
    b = ((x + y) * 3) % 256
    img = np.stack([r, g, b], axis=-1).astype(np.uint8)
    img[size // 2, :, :] = [255, 255, 0]
    return img


def rgb_to_ybr_full(img):
    """PS3.3 C.7.6.3.1.2 YBR_FULL from RGB, rounded."""
    r, g, b = [img[..., i].astype(np.float64) for i in range(3)]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def base(name, idx, modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7"):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.3.{idx}"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.SeriesInstanceUID = f"{ROOT}.2.{idx}"
    ds.PatientID = "PIXELS"
    ds.PatientName = "PIXELS^TEST"
    ds.StudyDate = "20260101"
    ds.Modality = modality
    ds.SeriesNumber = idx
    ds.InstanceNumber = 1
    ds.SeriesDescription = name
    return ds


def set_mono(ds, arr, bits_alloc, bits_stored, signed, photometric="MONOCHROME2"):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    frames = arr.shape[0] if arr.ndim == 3 else 1
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    if frames > 1:
        ds.NumberOfFrames = frames
    dt = {8: (np.int8 if signed else np.uint8), 16: (np.int16 if signed else np.uint16)}
    raw = arr.astype(dt[bits_alloc])
    if signed and bits_stored < bits_alloc:
        # the bits above HighBit are the sign's copy (two's complement in the cell)
        pass
    ds.PixelData = raw.astype("<" + raw.dtype.str[1:]).tobytes()


def make(name, idx, size):
    """One variant: (dataset, description for the manifest)."""
    if name == "mono2_u8":
        ds = base(name, idx)
        set_mono(ds, mono(size, 8, False), 8, 8, False)
    elif name == "mono2_u12":
        ds = base(name, idx, "MR", "1.2.840.10008.5.1.4.1.1.4")
        set_mono(ds, mono(size, 12, False), 16, 12, False)
        ds.WindowCenter = 1500
        ds.WindowWidth = 2000
    elif name == "mono2_s16_ct":
        # a CT slice: signed, rescale to Hounsfield units, a soft-tissue window
        ds = base(name, idx, "CT", "1.2.840.10008.5.1.4.1.1.2")
        set_mono(ds, mono(size, 16, True) // 8, 16, 16, True)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = [40, 400]
        ds.WindowWidth = [400, 1500]
    elif name == "mono2_s12":
        ds = base(name, idx, "CT", "1.2.840.10008.5.1.4.1.1.2")
        set_mono(ds, mono(size, 12, True), 16, 12, True)
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 2
    elif name == "mono2_u16":
        ds = base(name, idx, "CR", "1.2.840.10008.5.1.4.1.1.1")
        set_mono(ds, mono(size, 16, False), 16, 16, False)
    elif name == "mono1_u16":
        ds = base(name, idx, "CR", "1.2.840.10008.5.1.4.1.1.1")
        set_mono(ds, mono(size, 14, False), 16, 14, False, "MONOCHROME1")
        ds.WindowCenter = 8000
        ds.WindowWidth = 12000
    elif name == "mono1_u8":
        ds = base(name, idx)
        set_mono(ds, mono(size, 8, False), 8, 8, False, "MONOCHROME1")
    elif name == "multiframe_u16":
        ds = base(name, idx, "XA", "1.2.840.10008.5.1.4.1.1.12.1")
        set_mono(ds, mono(size, 10, False, frames=5), 16, 10, False)
        ds.FrameIncrementPointer = (0x0018, 0x1063)
        ds.FrameTime = 33.3
    elif name in ("rgb", "rgb_planar"):
        ds = base(name, idx)
        img = rgb(size)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.Rows = ds.Columns = size
        ds.PlanarConfiguration = 1 if name == "rgb_planar" else 0
        ds.PixelData = (img.transpose(2, 0, 1) if name == "rgb_planar" else img).tobytes()
    elif name == "ybr_full":
        ds = base(name, idx, "US", "1.2.840.10008.5.1.4.1.1.6.1")
        img = rgb_to_ybr_full(rgb(size))
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.Rows = ds.Columns = size
        ds.PlanarConfiguration = 0
        ds.PixelData = img.tobytes()
    elif name == "ybr_full_422":
        # PS3.3 C.7.6.3.1.2: two luminance samples share one Cb and one Cr:
        # Y1 Y2 Cb Cr per pair of columns
        ds = base(name, idx, "US", "1.2.840.10008.5.1.4.1.1.6.1")
        ybr = rgb_to_ybr_full(rgb(size)).astype(np.int32)
        out = np.empty((size, size // 2, 4), dtype=np.uint8)
        out[..., 0] = ybr[:, 0::2, 0]
        out[..., 1] = ybr[:, 1::2, 0]
        out[..., 2] = (ybr[:, 0::2, 1] + ybr[:, 1::2, 1]) // 2
        out[..., 3] = (ybr[:, 0::2, 2] + ybr[:, 1::2, 2]) // 2
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.Rows = ds.Columns = size
        ds.PlanarConfiguration = 0
        ds.PixelData = out.tobytes()
    elif name == "palette":
        ds = base(name, idx, "NM", "1.2.840.10008.5.1.4.1.1.20")
        set_mono(ds, mono(size, 8, False), 8, 8, False, "PALETTE COLOR")
        n = 256
        i = np.arange(n)
        # 16-bit LUT entries (PS3.3 C.7.6.3.1.5): a "hot iron" like ramp
        red = np.clip(i * 3, 0, 255) * 257
        green = np.clip(i * 3 - 255, 0, 255) * 257
        blue = np.clip(i * 3 - 510, 0, 255) * 257
        for tag, lut in (("Red", red), ("Green", green), ("Blue", blue)):
            setattr(ds, f"{tag}PaletteColorLookupTableDescriptor", [n, 0, 16])
            setattr(ds, f"{tag}PaletteColorLookupTableData",
                    lut.astype("<u2").tobytes())
    else:
        raise KeyError(name)
    return ds


VARIANTS = ["mono2_u8", "mono2_u12", "mono2_s16_ct", "mono2_s12", "mono2_u16", "mono1_u16",
            "mono1_u8", "multiframe_u16", "rgb", "rgb_planar", "ybr_full", "ybr_full_422",
            "palette"]


def write(ds, path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"{ROOT}.9"
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(path, write_like_original=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64, help="rows = columns (even)")
    ap.add_argument("--only", default="", help="comma-separated variants")
    ap.add_argument("--uid-suffix", type=int, default=0,
                    help="added to the UIDs, to make several distinct copies")
    a = ap.parse_args()
    if a.size % 2:
        sys.exit("genpixels: --size must be even (YBR_FULL_422)")
    os.makedirs(a.out, exist_ok=True)
    names = [n for n in a.only.split(",") if n] or VARIANTS
    manifest = {}
    for n in names:
        idx = VARIANTS.index(n) + 1 + 100 * a.uid_suffix
        ds = make(n, idx, a.size)
        path = os.path.join(a.out, n + ".dcm")
        write(ds, path)
        manifest[n] = {"file": path, "sop_uid": ds.SOPInstanceUID,
                       "photometric": ds.PhotometricInterpretation,
                       "bits_stored": int(ds.BitsStored),
                       "signed": bool(ds.PixelRepresentation),
                       "frames": int(getattr(ds, "NumberOfFrames", 1))}
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
