"""QIDO-RS series matching on the keys of PS3.18 Table 10.6.1-5 that are no Orthanc
main tags: PerformedProcedureStepStartDate (0040,0244), PerformedProcedureStepStartTime
(0040,0245) and RequestAttributesSequence (0040,0275) > ScheduledProcedureStepID
(0040,0009) / RequestedProcedureID (0040,1001). Kept at ingest in columns of their own
(0038_series_request_attributes.sql), matched by the query service's one matcher, so
C-FIND at SERIES level (findscu, on the query service and relayed by ingest) gets the
same answers. Side by side with Orthanc 1.10.1's DICOMweb plugin where it has the key;
where it departs from the standard the test says so and follows PS3.18/PS3.4."""
import subprocess

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import PYDICOM_FILES, ROOT as REPO, Cluster
from orthanc import http
from test_dicomweb import dicomweb_orthanc, qido, value

ROOT = "2.25.8150"
STUDY = f"{ROOT}.1"
# series: PPS start date, PPS start time, RequestAttributesSequence items (SPS ID, RP ID)
SERIES = {
    "A": ("20200115", "101500", [("SPS1", "RP1"), ("SPS2", "RP2")]),
    "B": ("20210301", "090000", [("SPS3", "RP1")]),
    "C": ("20220610", "153000", None),
    "D": (None, None, [(None, "RP9")]),  # an item without ScheduledProcedureStepID
}
NUMBERS = {"A": 1, "B": 2, "C": 3, "D": 4}


def series_uid(s):
    return f"{ROOT}.2.{NUMBERS[s]}"


def make_files(out):
    files = []
    for s, (date, tm, items) in SERIES.items():
        ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
        ds.PatientID, ds.PatientName = "QIDO2", "KEYS^SERIES"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyID = STUDY, "20200101", "Q2"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid(s), NUMBERS[s], "CT"
        ds.SOPInstanceUID = f"{ROOT}.3.{NUMBERS[s]}.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = 1
        if date:
            ds.PerformedProcedureStepStartDate = date
            ds.PerformedProcedureStepStartTime = tm
        if items:
            seq = []
            for sps, rp in items:
                it = Dataset()
                if sps:
                    it.ScheduledProcedureStepID = sps
                if rp:
                    it.RequestedProcedureID = rp
                seq.append(it)
            ds.RequestAttributesSequence = Sequence(seq)
        p = out / f"{s}.dcm"
        ds.save_as(p)
        files.append(p)
    return files


@pytest.fixture(scope="module")
def env(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("qido2")
    base.chmod(0o755)
    (base / "data").mkdir()
    files = make_files(base / "data")
    o = dicomweb_orthanc(base / "orthanc").start()
    (base / "tessera").mkdir()
    c = Cluster(postgres, base / "tessera")
    try:
        q = c.start_query()
        ing = c.start_ingest(TESSERA_QUERY_BUS=q.bus)
        rest = c.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
        for f in files:
            body = f.read_bytes()
            assert http(o.url, "POST", "/instances", body)[0] == 200
            assert http(rest.url, "POST", "/instances", body)[0] == 200
        c.o, c.rest, c.q, c.ing, c.tmp = o, rest, q, ing, base
        yield c
    finally:
        c.stop()
        o.stop()
        for s in c.ingests + c.rests + getattr(c, "queries", []):
            log = s.read_log()
            assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


def series_of(results):
    by_uid = {series_uid(s): s for s in SERIES}
    return sorted(by_uid[value(r, "0020000E")] for r in results or [] if
                  value(r, "0020000E") in by_uid)


# every query at series level: the series PS3.4 C.2.2.2 matching gives
QUERIES = [
    ({"PerformedProcedureStepStartDate": "20210301"}, ["B"]),
    ({"00400244": "20200101-20211231"}, ["A", "B"]),
    ({"PerformedProcedureStepStartDate": "-20200115"}, ["A"]),
    ({"PerformedProcedureStepStartDate": "20220101-"}, ["C"]),
    ({"PerformedProcedureStepStartTime": "153000"}, ["C"]),
    ({"PerformedProcedureStepStartTime": "090000-120000"}, ["A", "B"]),
    ({"PerformedProcedureStepStartTime": "-1015"}, ["A", "B"]),  # to 10:15:59.999999
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS2"}, ["A"]),
    ({"00400275.00400009": "SPS3"}, ["B"]),
    ({"RequestAttributesSequence.RequestedProcedureID": "RP1"}, ["A", "B"]),
    ({"RequestAttributesSequence.RequestedProcedureID": "RP9"}, ["D"]),
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS*"}, ["A", "B"]),
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1\\SPS3"}, ["A", "B"]),
    # both keys on one item (PS3.4 C.2.2.2.6): SPS1 and RP1 share A's first item...
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1",
      "RequestAttributesSequence.RequestedProcedureID": "RP1"}, ["A"]),
    # ...SPS1 and RP2 are in two items of A: no item matches both
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1",
      "RequestAttributesSequence.RequestedProcedureID": "RP2"}, []),
    # universal matching in the item: a return key, every series
    ({"RequestAttributesSequence.ScheduledProcedureStepID": ""}, ["A", "B", "C", "D"]),
    ({"PerformedProcedureStepStartDate": "20200101-20211231",
      "RequestAttributesSequence.RequestedProcedureID": "RP1"}, ["A", "B"]),
    ({"PerformedProcedureStepStartDate": "20210101-",
      "RequestAttributesSequence.RequestedProcedureID": "RP2"}, []),
]


@pytest.mark.parametrize("params,expected", QUERIES)
def test_qido_series_keys(env, params, expected):
    status, r, _ = qido(env.rest.url, f"studies/{STUDY}/series", **params)
    assert status == (200 if expected else 204), r
    assert series_of(r) == expected
    # the same from /series (the study not in the path)
    status, r, _ = qido(env.rest.url, "series", **params)
    assert series_of(r) == expected


@pytest.mark.parametrize("params,expected", [q for q in QUERIES if not any(
    "." in k for k in q[0])])
def test_qido_series_dates_as_orthanc(env, params, expected):
    """Orthanc's plugin matches the date and time keys too (Orthanc reads them from its
    stored JSON, not being main tags): the same series, but for an upper end of a time
    range with less than full precision. PS3.4 C.2.2.2.5: "-1015" reaches 10:15:59.999999
    (as Tessera's StudyTime); Orthanc compares the text "1015" and leaves 101500 out."""
    status, theirs, _ = qido(env.o.url, f"studies/{STUDY}/series", **params)
    assert status == 200
    if params == {"PerformedProcedureStepStartTime": "-1015"}:
        assert series_of(theirs) == ["B"]  # Orthanc's text comparison, not the standard
    else:
        assert series_of(theirs) == expected


def test_qido_series_sequence_key_orthanc_differs(env):
    """Orthanc 1.10.1's plugin takes no "Sequence.Attribute" key (PS3.18 8.3.4.1 attribute
    paths): it does not match on the item and answers every series, or refuses. Tessera
    matches the items (PS3.4 C.2.2.2.6)."""
    status, theirs, _ = qido(env.o.url, f"studies/{STUDY}/series",
                             **{"RequestAttributesSequence.ScheduledProcedureStepID": "SPS2"})
    assert status != 200 or series_of(theirs) != ["A"], (status, theirs)
    status, mine, _ = qido(env.rest.url, f"studies/{STUDY}/series",
                           **{"RequestAttributesSequence.ScheduledProcedureStepID": "SPS2"})
    assert status == 200 and series_of(mine) == ["A"]


def test_qido_series_returns_the_keys(env):
    """PS3.18 Table 10.6.3-4: a series answer carries the three attributes (empty when the
    series has none), the sequence with its items. Orthanc's plugin returns the same date
    and time, but no RequestAttributesSequence at all (it departs from the table)."""
    status, mine, _ = qido(env.rest.url, f"studies/{STUDY}/series")
    assert status == 200
    by = {s: r for s in SERIES for r in mine if value(r, "0020000E") == series_uid(s)}
    assert by["A"]["00400244"] == {"vr": "DA", "Value": ["20200115"]}
    assert by["A"]["00400245"] == {"vr": "TM", "Value": ["101500"]}
    assert by["A"]["00400275"] == {"vr": "SQ", "Value": [
        {"00400009": {"vr": "SH", "Value": ["SPS1"]}, "00401001": {"vr": "SH", "Value": ["RP1"]}},
        {"00400009": {"vr": "SH", "Value": ["SPS2"]}, "00401001": {"vr": "SH", "Value": ["RP2"]}}]}
    assert by["D"]["00400275"] == {"vr": "SQ", "Value": [
        {"00401001": {"vr": "SH", "Value": ["RP9"]}}]}
    assert "Value" not in by["C"]["00400275"] and "Value" not in by["D"]["00400244"]

    status, theirs, _ = qido(env.o.url, f"studies/{STUDY}/series")
    assert status == 200
    for r in theirs:
        s = series_of([r])[0]
        for tag in ("00400244", "00400245"):
            assert by[s][tag].get("Value") == r.get(tag, {}).get("Value"), (s, tag)
        assert "00400275" not in r  # Orthanc: not even for A, B and D that have items

    # includefield at instance level brings the series' attributes (by keyword and by
    # "Sequence.Attribute", which names the sequence)
    status, r, _ = qido(env.rest.url, "instances", SeriesInstanceUID=series_uid("B"),
                        includefield=["PerformedProcedureStepStartDate",
                                      "RequestAttributesSequence.RequestedProcedureID"])
    assert status == 200 and len(r) == 1
    assert r[0]["00400244"] == {"vr": "DA", "Value": ["20210301"]}
    assert r[0]["00400275"]["Value"][0]["00401001"] == {"vr": "SH", "Value": ["RP1"]}


@pytest.mark.parametrize("path,message", [
    ("series?PerformedProcedureStepStartDate=2020", "not a valid DA"),
    ("series?PerformedProcedureStepStartTime=25", "not a valid TM"),
    ("series?PerformedProcedureStepStartDate=20200101-2021", "not a valid DA range"),
    ("series?RequestAttributesSequence=SPS1", "is a sequence"),
    ("series?RequestAttributesSequence.PatientName=X", "not an attribute Tessera matches on"),
    ("series?RequestAttributesSequence.NoSuchKeyword=X", "neither a DICOM attribute"),
    ("studies?RequestAttributesSequence.RequestedProcedureID=RP1",
     "not an attribute of the level searched"),
    ("studies?PerformedProcedureStepStartDate=20200115", "not an attribute of the level"),
])
def test_qido_series_keys_bad_requests(env, path, message):
    status, body, _ = http(env.rest.url, "GET", f"/dicom-web/{path}",
                           headers={"Accept": "application/dicom+json"})
    assert status == 400 and message in body.decode(), body


def findscu(env, port, keys):
    """C-FIND at SERIES level (Study Root); the matched series and the answers."""
    out = env.tmp / "rsp"
    out.mkdir(exist_ok=True)
    for f in out.glob("*.dcm"):
        f.unlink()
    p = subprocess.run(["findscu", "-S", "-aet", "FINDSCU", "-aec", "TESSERA", "-X", "-od",
                        str(out), "-k", "QueryRetrieveLevel=SERIES", "-k",
                        f"StudyInstanceUID={STUDY}", "-k", "SeriesInstanceUID",
                        *sum((["-k", k] for k in keys), []), "127.0.0.1", str(port)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    answers = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    by_uid = {series_uid(s): s for s in SERIES}
    return sorted(by_uid[str(a.SeriesInstanceUID)] for a in answers), answers, p.stderr


# the QIDO queries in findscu's -k form (sequence items as Sequence[0].Attribute)
def findscu_keys(params):
    keys = []
    for k, v in params.items():
        k = {"00400244": "PerformedProcedureStepStartDate"}.get(k, k)
        k = k.replace("00400275.00400009", "RequestAttributesSequence.ScheduledProcedureStepID")
        if "." in k:
            seq, attr = k.split(".")
            k = f"{seq}[0].{attr}"
        keys.append(f"{k}={v}")
    return keys


@pytest.mark.parametrize("via", ["query", "ingest"])
def test_cfind_series_keys(env, via):
    """The same matcher at SERIES level over C-FIND, on the query service's port and
    relayed over the bus by ingest's."""
    port = env.q.port if via == "query" else env.ing.port
    for params, expected in QUERIES:
        found, _, log = findscu(env, port, findscu_keys(params))
        assert found == expected, (params, log)


def test_cfind_series_returns_the_keys(env):
    """Return keys: the date, the time and the sequence with the stored items."""
    found, answers, _ = findscu(env, env.q.port, [
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
        "RequestAttributesSequence[0].ScheduledProcedureStepID=SPS2",
        "RequestAttributesSequence[0].RequestedProcedureID"])
    assert found == ["A"]
    a = answers[0]
    assert a.PerformedProcedureStepStartDate == "20200115"
    assert a.PerformedProcedureStepStartTime == "101500"
    assert [(i.ScheduledProcedureStepID, i.RequestedProcedureID)
            for i in a.RequestAttributesSequence] == [("SPS1", "RP1"), ("SPS2", "RP2")]
    found, answers, _ = findscu(env, env.q.port, ["PerformedProcedureStepStartDate=20220610",
                                                  "RequestAttributesSequence"])
    assert found == ["C"] and len(answers[0].RequestAttributesSequence) == 0


def test_cfind_series_bad_date(env):
    """A malformed range is refused with 0xA900 (Identifier does not match SOP class)."""
    for key in ("PerformedProcedureStepStartDate=2020-", "PerformedProcedureStepStartTime=2500"):
        p = subprocess.run(["findscu", "-v", "-S", "-aet", "FINDSCU", "-aec", "TESSERA", "-k",
                            "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY}",
                            "-k", key, "127.0.0.1", str(env.q.port)],
                           capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in out, out
        assert "Received Find Response" not in out, out  # no match sent before it


def test_series_stored_before_the_migration_are_filled(env):
    """0038 fills the columns of series stored before it from their first instance's
    DICOM JSON: the same statement run again on emptied columns gives them back."""
    env.sql("UPDATE series SET pps_start_date = NULL, pps_start_time = NULL,"
            " request_attributes = NULL")
    status, r, _ = qido(env.rest.url, "series", PerformedProcedureStepStartDate="20210301")
    assert status == 204
    migration = (REPO / "db/migrations/0038_series_request_attributes.sql").read_text()
    env.sql(migration[migration.index("UPDATE series s"):])
    for params, expected in QUERIES:
        status, r, _ = qido(env.rest.url, f"studies/{STUDY}/series", **params)
        assert series_of(r) == expected, params
