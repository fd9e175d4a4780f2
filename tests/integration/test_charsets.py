"""Character sets with ISO 2022 code extensions (issue 16, item 10; PS3.5 6.1.2.5,
Annexes H, I, J and K): every reader of Tessera (GET /instances/{id}/tags,
/simplified-tags, the study's JSON, C-FIND) sees the values in UTF-8, compared with
Orthanc 1.10.1 where it is right and with the standard's own text where it is not.

The files are written with their raw encoded bytes (the examples of the standard,
escape sequences included), so nothing depends on pydicom's encoder."""
import fnmatch
import subprocess
import time
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian

from orthanc import beside_orthanc, http
from test_rest import Server

ROOT_UID = "1.2.826.0.1.3680043.8.498.517"
ESC = b"\x1b"

# name: (Specific Character Set, PatientName bytes, PatientName in UTF-8, Orthanc's
# PatientName when Orthanc 1.10.1 departs from the standard)
EXAMPLES = {
    # PS3.5 H.3.1: JIS X 0208 (kanji, hiragana) in G0, ASCII otherwise
    "H.3.1 ISO 2022 IR 87": (
        "\\ISO 2022 IR 87",
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
        "Yamada^Tarou=山田^太郎=やまだ^たろう", None),
    # PS3.5 H.3.2: half-width katakana (JIS X 0201) in G1, kanji after ESC $ B
    "H.3.2 ISO 2022 IR 13 and IR 87": (
        "ISO 2022 IR 13\\ISO 2022 IR 87",
        b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J="
        b"\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
        "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
        # Orthanc 1.10.1 gets the katakana and drops the escapes of the kanji
        # (the report), leaving their 7-bit bytes as ASCII
        "ﾔﾏﾀﾞ^ﾀﾛｳ=;3ED^B@O:=$d$^$@^$?$m$&"),
    # PS3.5 I.2: KS X 1001 in G1 (Korean)
    "I.2 ISO 2022 IR 149": (
        "\\ISO 2022 IR 149",
        b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
        "Hong^Gildong=洪^吉洞=홍^길동", None),
    # PS3.5 J.3: GB18030 (no code extensions)
    "J.3 GB18030": (
        "GB18030", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=", "Wang^XiaoDong=王^小东=", None),
    # PS3.5 K.2: GB 2312 in G1
    "K.2 ISO 2022 IR 58": (
        "\\ISO 2022 IR 58",
        b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=",
        "Zhang^XiaoDong=张^小东=", None),
    # PS3.5 K.3: GBK (no code extensions)
    "K.3 GBK": ("GBK", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=", "Wang^XiaoDong=王^小东=", None),
}

# The single-byte sets with code extensions (PS3.3 Table C.12-3): the term, its
# escape sequence to G1, the Python codec of its G1 half, and a name in it.
SINGLE_BYTE = {
    "ISO 2022 IR 100": (b"-A", "latin_1", "Buc^Jérôme"),
    "ISO 2022 IR 101": (b"-B", "iso8859_2", "Wałęsa^Lech"),
    "ISO 2022 IR 109": (b"-C", "iso8859_3", "Ġużeppi^Ħaġar"),
    "ISO 2022 IR 110": (b"-D", "iso8859_4", "Šķēle^Andris"),
    "ISO 2022 IR 144": (b"-L", "iso8859_5", "Иванов^Пётр"),
    "ISO 2022 IR 127": (b"-G", "iso8859_6", "قباني^لنزار"),
    "ISO 2022 IR 126": (b"-F", "iso8859_7", "Διονυσιος^Ελένη"),
    "ISO 2022 IR 138": (b"-H", "iso8859_8", "שרון^דבורה"),
    "ISO 2022 IR 148": (b"-M", "iso8859_9", "Çavuşoğlu^Ayşe"),
    "ISO 2022 IR 203": (b"-b", "iso8859_15", "Œuvre^Žofie€"),
    "ISO 2022 IR 166": (b"-T", "tis_620", "ภาษา^ไทย"),
}


def orthanc_drops(raw):
    """What Orthanc 1.10.1 shows of a value whose escape sequences it does not
    follow, or of a character set it does not know (ISO 2022 IR 203): the ESC
    bytes and every byte above 0x7F left out."""
    return bytes(b for b in raw if b != 0x1b and b < 0x80).decode("ascii")


def single_byte_cases():
    """Each set twice: as value 1 (G1 designated from the start, no escapes) and
    after ISO 2022 IR 6 (the value designates it with its escape sequence, before
    each component as PS3.5 6.1.2.5.3 has it). Orthanc 1.10.1 reads the first
    form (but for IR 203, which it does not know) and not the second."""
    cases = {}
    for term, (esc, codec, text) in SINGLE_BYTE.items():
        raw = text.encode(codec)
        cases[term] = (term, raw, text, orthanc_drops(raw) if term.endswith("203") else None)
        raw = b"^".join(ESC + esc + part.encode(codec) for part in text.split("^"))
        cases[f"ISO 2022 IR 6\\{term}"] = (f"ISO 2022 IR 6\\{term}", raw, text, orthanc_drops(raw))
    return cases


# Two more Japanese forms: JIS X 0212 (ISO 2022 IR 159, ESC $ ( D), and a value
# that goes back to the initial set only at its end.
EXTRA = {
    "ISO 2022 IR 159": ("\\ISO 2022 IR 87\\ISO 2022 IR 159",
                        b"Suzuki^\x1b$(D" + "鍈".encode("iso2022_jp_2")[4:6] + b"\x1b(B",
                        "Suzuki^鍈", None),
}

CASES = {**EXAMPLES, **single_byte_cases(), **EXTRA}


def dicom_file(n, charset, name):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.{n}.1.1"
    ds.add_new(0x00080005, "CS", charset)
    ds.add_new(0x00100010, "PN", name)  # bytes: written as they are
    ds.PatientID = f"CS{n}"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID = f"{ROOT_UID}.{n}"
    ds.SeriesInstanceUID = f"{ROOT_UID}.{n}.1"
    ds.SOPInstanceUID = f"{ROOT_UID}.{n}.1.1"
    fp = DicomBytesIO()
    ds.save_as(fp, write_like_original=False)
    return fp.getvalue()


@pytest.fixture(scope="module")
def pair(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("charsets")
    with beside_orthanc(postgres, base) as p:
        o, rest = p.orthanc, p.rest
        ids = {}
        for n, (key, (charset, raw, _, _)) in enumerate(CASES.items(), 1):
            data = dicom_file(n, charset, raw)
            ref, got = Server("orthanc", o.url).upload(data), Server("t", rest.url).upload(data)
            assert ref["ID"] == got["ID"]
            ids[key] = SimpleNamespace(instance=got["ID"], study=got["ParentStudy"], pid=f"CS{n}")
        yield SimpleNamespace(ref=Server("orthanc", o.url), t=Server("tessera", rest.url),
                              orthanc=o, query=p.query, base=base, ids=ids)


def names_seen(server, ids):
    """PatientName as /tags, /simplified-tags and the study's JSON show it."""
    tags = server.get(f"/instances/{ids.instance}/tags")
    return (tags["0010,0010"]["Value"],
            server.get(f"/instances/{ids.instance}/simplified-tags")["PatientName"],
            server.get(f"/studies/{ids.study}")["PatientMainDicomTags"]["PatientName"])


@pytest.mark.parametrize("case", list(CASES))
def test_patient_name_in_utf8(pair, case):
    """The standard's text in the three JSON forms; the Specific Character Set
    shown as the file has it (as Orthanc shows it)."""
    charset, _, expected, orthanc_wrong = CASES[case]
    ids = pair.ids[case]
    got = names_seen(pair.t, ids)
    ref = names_seen(pair.ref, ids)
    assert got == (expected,) * 3, (case, got)
    assert pair.t.get(f"/instances/{ids.instance}/tags")["0008,0005"]["Value"] == charset
    if orthanc_wrong is None:
        assert got == ref, (case, "orthanc", ref)
    else:
        assert ref == (orthanc_wrong,) * 3, (case, "orthanc", ref)


def cfind(pair, aec, port, key_file):
    """findscu (Study Root, STUDY level) with the query data set in key_file; the
    sorted PatientIDs of the answers."""
    outdir = pair.base / f"rsp-{time.monotonic_ns()}"
    outdir.mkdir()
    cmd = ["findscu", "-S", "-aet", "FINDSCU", "-aec", aec, "-X", "-od", str(outdir),
           "127.0.0.1", str(port), str(key_file)]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")
    return sorted(str(pydicom.dcmread(f).PatientID) for f in outdir.glob("rsp*.dcm"))


def query_file(pair, charset, name):
    """A C-FIND identifier with PatientName as these bytes, in charset."""
    ds = Dataset()
    ds.add_new(0x00080005, "CS", charset)
    ds.add_new(0x00080052, "CS", "STUDY")
    ds.add_new(0x00100010, "PN", name)
    ds.add_new(0x00100020, "LO", "")
    ds.add_new(0x0020000D, "UI", "")
    path = pair.base / f"q-{time.monotonic_ns()}.dcm"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, ds)
    path.write_bytes(fp.getvalue())
    return path


def cfind_both(pair, charset, name):
    f = query_file(pair, charset, name)
    return (cfind(pair, pair.orthanc.aet, pair.orthanc.dicom_port, f),
            cfind(pair, "TESSERA", pair.query.port, f))


@pytest.mark.parametrize("case", list(EXAMPLES))
def test_cfind_patient_name_in_utf8(pair, case):
    """A query in UTF-8 finds the study by the name as the standard writes it, and
    by a wildcard on its ideographic or Hangul part. Orthanc 1.10.1 finds those it
    decoded right and not the H.3.2 one."""
    expected = EXAMPLES[case][2]
    part = "*" + expected.split("=")[1].split("^")[0] + "*"
    for pattern in (expected, part):
        ref, got = cfind_both(pair, "ISO_IR 192", pattern.encode())
        assert got == matching(pair, pattern), (case, pattern, got)
        assert ref == matching(pair, pattern, orthanc=True), (case, pattern, "orthanc", ref)


def matching(pair, pattern, orthanc=False):
    """The PatientIDs of the examples whose name matches pattern (the standard's
    text, or what Orthanc 1.10.1 made of it)."""
    return sorted(pair.ids[k].pid for k, (_, _, text, wrong) in EXAMPLES.items()
                  if fnmatch.fnmatchcase((wrong or text) if orthanc else text, pattern))


@pytest.mark.parametrize("case", list(EXAMPLES))
def test_cfind_query_in_the_files_character_set(pair, case):
    """The query written in the example's own encoding, escape sequences included,
    finds the same study (the query's identifier is decoded as files are).
    Orthanc 1.10.1 finds only those whose query and file it decodes alike."""
    charset, raw, text, orthanc_wrong = EXAMPLES[case]
    ref, got = cfind_both(pair, charset, raw)
    assert got == matching(pair, text), (case, got)
    if orthanc_wrong is None:
        assert ref == got, (case, "orthanc", ref)
