"""query: C-FIND through dcmtk's findscu against a real tessera-query, on an
index filled by a real tessera-ingest (storescu). Every matching form of
PS3.4 C.2.2.2 at each level, both information models, computed return keys,
the result limit, C-CANCEL, bad input (with the service still serving after),
and the bus endpoint `find`."""
import os
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from conftest import BUILD, PYDICOM_FILES, Cluster, storescu

ROOT_UID = "1.2.826.0.1.3680043.8.498.77"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"

# patient id, name, birth date, sex
PATIENTS = {
    "PID-001": ("Doe^John", "19700101", "M"),
    "PID-002": ("DOE^JANE", "19851231", "F"),
    "OTHER-3": ("Smith^Anna", "19600615", "F"),
}
# study key -> patient, date, time, accession, description, referring physician
STUDIES = {
    "S1": ("PID-001", "20200115", "101500", "ACC_1", "CT HEAD", "House^Greg"),
    "S2": ("PID-001", "20210610", "083000", "ACC%2", "CT CHEST", "House^Greg"),
    "S3": ("PID-002", "20221201", "140000", "X3", "MR KNEE", "Wilson^James"),
    "S4": ("OTHER-3", "20190301", "090000", "A4", "US ABD", ""),
}
# series key -> study, modality, SOP class, instances
SERIES = {
    "S1.1": ("S1", "CT", CT, 3),
    "S1.2": ("S1", "MR", MR, 2),
    "S2.1": ("S2", "CT", CT, 1),
    "S3.1": ("S3", "MR", MR, 4),
    "S4.1": ("S4", "US", CT, 1),
}


def study_uid(key):
    return f"{ROOT_UID}.{key[1:]}"


def series_uid(key):
    st, n = key.split(".")
    return f"{study_uid(st)}.{n}"


def make_dataset(out):
    src = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    files = []
    for skey, (st, modality, sop_class, count) in SERIES.items():
        pid, date, tm, acc, desc, ref = STUDIES[st]
        name, birth, sex = PATIENTS[pid]
        for i in range(1, count + 1):
            src.PatientID = pid
            src.PatientName = name
            src.PatientBirthDate = birth
            src.PatientSex = sex
            src.StudyInstanceUID = study_uid(st)
            src.StudyDate = date
            src.StudyTime = tm
            src.AccessionNumber = acc
            src.StudyDescription = desc
            src.ReferringPhysicianName = ref
            src.SeriesInstanceUID = series_uid(skey)
            src.Modality = modality
            src.SeriesNumber = int(skey.split(".")[1])
            src.SOPClassUID = sop_class
            src.file_meta.MediaStorageSOPClassUID = sop_class
            src.SOPInstanceUID = f"{series_uid(skey)}.{i}"
            src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
            src.InstanceNumber = i
            p = out / f"{skey}-{i}.dcm"
            src.save_as(p)
            files.append(p)
    return files


@pytest.fixture(scope="module")
def qr(postgres, tmp_path_factory):
    """One index with the data set above, one ingest, one query (limit 100)."""
    base = tmp_path_factory.mktemp("query")
    os.chmod(base, 0o755)
    c = Cluster(postgres, base)
    ing = c.start_ingest()
    data = base / "data"
    data.mkdir()
    rc, out = storescu(ing, make_dataset(data))
    assert rc == 0, out
    q = c.start_query(TESSERA_QUERY_LIMIT=100)
    # a second ingest that relays C-FIND on its association to this query
    c.start_ingest(TESSERA_QUERY_BUS=q.bus, TESSERA_QUERY_LIMIT=100)
    yield c
    stop_and_check(c)


def stop_and_check(c):
    """Stops the cluster; a sanitizer report or a crash in a service fails the test."""
    c.stop()
    for s in c.ingests + c.queries:
        log = s.read_log()
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]


def findscu(q, level, keys, model="-S", extra=(), port=None, aet="FINDSCU"):
    """Runs findscu; returns (final status text, list of response datasets, output)."""
    outdir = Path(q.base) / f"rsp-{time.monotonic_ns()}"
    outdir.mkdir()
    cmd = ["findscu", "-v", model, "-aet", aet, "-aec", "TESSERA", "-X", "-od", str(outdir),
           "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        cmd += ["-k", k]
    cmd += [*extra, "127.0.0.1", str(port or q.queries[0].port)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    rsps = [pydicom.dcmread(f) for f in sorted(outdir.glob("rsp*.dcm"))]
    final = None
    for line in out.splitlines():
        if "Received Final Find Response" in line:
            final = line.split("Received Final Find Response", 1)[1].strip(" ()")
    return final, rsps, out


def values(rsps, keyword):
    return sorted(str(r.get(keyword, "")) for r in rsps)


def uids_of(rsps):
    return values(rsps, "StudyInstanceUID")


# ---- matching forms, study level --------------------------------------------


def test_study_universal_returns_all(qr):
    final, rsps, out = findscu(qr, "STUDY", ["StudyInstanceUID", "PatientID"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted(study_uid(k) for k in STUDIES)


def test_study_single_value_patient_id(qr):
    final, rsps, out = findscu(qr, "STUDY", ["PatientID=PID-001", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == [study_uid("S1"), study_uid("S2")]


def test_study_single_value_accession_with_underscore_is_literal(qr):
    # '_' and '%' are not DICOM wildcards: they must not match as LIKE would
    final, rsps, out = findscu(qr, "STUDY", ["AccessionNumber=ACC_1", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S1")], out
    final, rsps, out = findscu(qr, "STUDY", ["AccessionNumber=ACC%2", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S2")], out
    final, rsps, out = findscu(qr, "STUDY", ["AccessionNumber=ACC?1", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S1")], out
    final, rsps, out = findscu(qr, "STUDY", ["AccessionNumber=ACC\\%*", "StudyInstanceUID"])
    assert final is not None and final != "Success" or uids_of(rsps) == [], out


def test_study_wildcards(qr):
    final, rsps, out = findscu(qr, "STUDY", ["StudyDescription=CT*", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S1"), study_uid("S2")], out
    final, rsps, out = findscu(qr, "STUDY", ["StudyDescription=?R KNEE", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S3")], out
    final, rsps, out = findscu(qr, "STUDY", ["StudyDescription=*", "StudyInstanceUID"])
    assert len(rsps) == 4, out


def test_study_person_name_case_insensitive(qr):
    final, rsps, out = findscu(qr, "STUDY", ["PatientName=doe*", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted([study_uid("S1"), study_uid("S2"), study_uid("S3")])
    final, rsps, out = findscu(qr, "STUDY", ["PatientName=DOE^JOHN", "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S1"), study_uid("S2")], out
    final, rsps, out = findscu(qr, "STUDY", ["ReferringPhysicianName=house*",
                                             "StudyInstanceUID"])
    assert uids_of(rsps) == [study_uid("S1"), study_uid("S2")], out


def test_study_uid_list(qr):
    lst = "\\".join([study_uid("S1"), study_uid("S4"), "1.2.3.404"])
    final, rsps, out = findscu(qr, "STUDY", [f"StudyInstanceUID={lst}"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted([study_uid("S1"), study_uid("S4")])


@pytest.mark.parametrize("rng,expected", [
    ("20200101-20211231", ["S1", "S2"]),
    ("20210610-", ["S2", "S3"]),
    ("-20200115", ["S1", "S4"]),
    ("20221201", ["S3"]),
    ("20000101-20001231", []),
])
def test_study_date_ranges(qr, rng, expected):
    final, rsps, out = findscu(qr, "STUDY", [f"StudyDate={rng}", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted(study_uid(k) for k in expected)


def test_study_time_range(qr):
    final, rsps, out = findscu(qr, "STUDY", ["StudyTime=090000-120000", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted([study_uid("S1"), study_uid("S4")])


@pytest.mark.parametrize("rng,expected", [("100000-1015", ["S1"]), ("100000-1014", []),
                                          ("-10", ["S1", "S2", "S4"]), ("0900-0900", ["S4"])])
def test_study_time_range_upper_end_is_a_prefix(qr, rng, expected):
    """PS3.4 C.2.2.2.5: an upper end of lower precision reaches the end of its
    minute (or hour): "100000-1015" matches 101500 (S1 at 10:15:00), "-10" every
    time up to 10:59:59.999999."""
    final, rsps, out = findscu(qr, "STUDY", [f"StudyTime={rng}", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == sorted(study_uid(k) for k in expected)


def test_study_combined_keys(qr):
    final, rsps, out = findscu(qr, "STUDY", ["PatientName=doe*", "StudyDate=20210101-",
                                             "ModalitiesInStudy=MR", "StudyInstanceUID"])
    assert final == "Success", out
    assert uids_of(rsps) == [study_uid("S3")]


def test_study_modalities_in_study_matching(qr):
    final, rsps, out = findscu(qr, "STUDY", ["ModalitiesInStudy=MR", "StudyInstanceUID"])
    assert uids_of(rsps) == sorted([study_uid("S1"), study_uid("S3")]), out
    final, rsps, out = findscu(qr, "STUDY", ["ModalitiesInStudy=US\\CT", "StudyInstanceUID"])
    assert uids_of(rsps) == sorted([study_uid("S1"), study_uid("S2"), study_uid("S4")]), out


def test_study_computed_keys(qr):
    final, rsps, out = findscu(qr, "STUDY", [
        f"StudyInstanceUID={study_uid('S1')}", "ModalitiesInStudy", "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientName",
        "StudyDate", "AccessionNumber", "StudyDescription", "RetrieveAETitle"])
    assert final == "Success", out
    assert len(rsps) == 1
    r = rsps[0]
    assert sorted(r.ModalitiesInStudy) == ["CT", "MR"]
    assert sorted(r.SOPClassesInStudy) == sorted([CT, MR])
    assert int(r.NumberOfStudyRelatedSeries) == 2
    assert int(r.NumberOfStudyRelatedInstances) == 5
    assert str(r.PatientName) == "Doe^John"
    assert r.StudyDate == "20200115"
    assert r.AccessionNumber == "ACC_1"
    assert r.StudyDescription == "CT HEAD"
    assert r.RetrieveAETitle == "TESSERA"
    assert r.QueryRetrieveLevel == "STUDY"


def test_unknown_return_key_comes_back_empty(qr):
    final, rsps, out = findscu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S3')}",
                                             "(0008,1048)"])  # PhysiciansOfRecord
    assert final == "Success", out
    assert len(rsps) == 1 and "PhysiciansOfRecord" in rsps[0]
    assert str(rsps[0].PhysiciansOfRecord) == ""


# ---- patient level (Patient Root) ----------------------------------------------


def test_patient_level_patient_root(qr):
    final, rsps, out = findscu(qr, "PATIENT", [
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances"], model="-P")
    assert final == "Success", out
    by_id = {r.PatientID: r for r in rsps}
    assert sorted(by_id) == sorted(PATIENTS)
    r = by_id["PID-001"]
    assert str(r.PatientName) == "Doe^John" and r.PatientBirthDate == "19700101"
    assert r.PatientSex == "M"
    assert int(r.NumberOfPatientRelatedStudies) == 2
    assert int(r.NumberOfPatientRelatedSeries) == 3
    assert int(r.NumberOfPatientRelatedInstances) == 6
    assert int(by_id["PID-002"].NumberOfPatientRelatedInstances) == 4


def test_patient_level_forms(qr):
    final, rsps, out = findscu(qr, "PATIENT", ["PatientID=PID-*"], model="-P")
    assert values(rsps, "PatientID") == ["PID-001", "PID-002"], out
    final, rsps, out = findscu(qr, "PATIENT", ["PatientID=PID-00?", "PatientSex=F"], model="-P")
    assert values(rsps, "PatientID") == ["PID-002"], out
    final, rsps, out = findscu(qr, "PATIENT", ["PatientID", "PatientBirthDate=-19751231"],
                               model="-P")
    assert values(rsps, "PatientID") == ["OTHER-3", "PID-001"], out
    final, rsps, out = findscu(qr, "PATIENT", ["PatientID", "PatientName=smith^anna"],
                               model="-P")
    assert values(rsps, "PatientID") == ["OTHER-3"], out


def test_patient_root_study_level(qr):
    final, rsps, out = findscu(qr, "STUDY", ["PatientID=PID-002", "StudyInstanceUID"],
                               model="-P")
    assert final == "Success", out
    assert uids_of(rsps) == [study_uid("S3")]


# ---- series and image levels --------------------------------------------------


def test_series_level(qr):
    final, rsps, out = findscu(qr, "SERIES", [
        f"StudyInstanceUID={study_uid('S1')}", "SeriesInstanceUID", "Modality",
        "SeriesNumber", "NumberOfSeriesRelatedInstances"])
    assert final == "Success", out
    got = {str(r.SeriesInstanceUID): r for r in rsps}
    assert sorted(got) == [series_uid("S1.1"), series_uid("S1.2")]
    assert got[series_uid("S1.1")].Modality == "CT"
    assert int(got[series_uid("S1.1")].NumberOfSeriesRelatedInstances) == 3
    assert int(got[series_uid("S1.2")].NumberOfSeriesRelatedInstances) == 2
    assert int(got[series_uid("S1.2")].SeriesNumber) == 2


def test_series_level_forms(qr):
    final, rsps, out = findscu(qr, "SERIES", ["Modality=MR", "SeriesInstanceUID"])
    assert values(rsps, "SeriesInstanceUID") == sorted([series_uid("S1.2"),
                                                         series_uid("S3.1")]), out
    final, rsps, out = findscu(qr, "SERIES", ["Modality=?T", "SeriesInstanceUID"])
    assert values(rsps, "SeriesInstanceUID") == sorted([series_uid("S1.1"),
                                                         series_uid("S2.1")]), out
    lst = series_uid("S4.1") + "\\" + series_uid("S2.1")
    final, rsps, out = findscu(qr, "SERIES", [f"SeriesInstanceUID={lst}", "Modality"])
    assert values(rsps, "Modality") == ["CT", "US"], out
    final, rsps, out = findscu(qr, "SERIES", ["StudyDate=20220101-", "SeriesInstanceUID"])
    assert values(rsps, "SeriesInstanceUID") == [series_uid("S3.1")], out


def test_image_level(qr):
    final, rsps, out = findscu(qr, "IMAGE", [
        f"StudyInstanceUID={study_uid('S3')}", f"SeriesInstanceUID={series_uid('S3.1')}",
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber"])
    assert final == "Success", out
    assert values(rsps, "SOPInstanceUID") == sorted(f"{series_uid('S3.1')}.{i}"
                                                    for i in range(1, 5))
    assert set(values(rsps, "SOPClassUID")) == {MR}
    assert sorted(int(r.InstanceNumber) for r in rsps) == [1, 2, 3, 4]


def test_image_level_forms(qr):
    final, rsps, out = findscu(qr, "IMAGE", [f"SOPInstanceUID={series_uid('S1.1')}.2"])
    assert values(rsps, "SOPInstanceUID") == [f"{series_uid('S1.1')}.2"], out
    final, rsps, out = findscu(qr, "IMAGE", [f"SOPInstanceUID={series_uid('S1.1')}.*"])
    assert len(rsps) == 3, out
    final, rsps, out = findscu(qr, "IMAGE", [f"SOPClassUID={MR}", "SOPInstanceUID"])
    assert len(rsps) == 6, out
    final, rsps, out = findscu(qr, "IMAGE", ["PatientName=*JANE", "InstanceNumber=4",
                                             "SOPInstanceUID"])
    assert values(rsps, "SOPInstanceUID") == [f"{series_uid('S3.1')}.4"], out


# ---- limit, cancel, bad input ----------------------------------------------------


def test_limit_cuts_answers(postgres, tmp_path):
    os.chmod(tmp_path, 0o755)
    c = Cluster(postgres, tmp_path)
    try:
        ing = c.start_ingest()
        data = tmp_path / "data"
        data.mkdir()
        rc, out = storescu(ing, make_dataset(data))
        assert rc == 0, out
        c.start_query(TESSERA_QUERY_LIMIT=3)
        final, rsps, out = findscu(c, "IMAGE", ["SOPInstanceUID"])
        assert final == "Success", out
        assert len(rsps) == 3
        assert "result limit reached" in c.queries[0].read_log()
        final, rsps, out = findscu(c, "STUDY", ["StudyInstanceUID"])
        assert len(rsps) == 3
        final, rsps, out = findscu(c, "PATIENT", ["PatientID"], model="-P")
        assert len(rsps) == 3
    finally:
        stop_and_check(c)


def add_instances(c, n):
    """n more instances in the index under series S1.1, straight in SQL (no
    files: C-FIND reads the index only)."""
    c.sql("""
        WITH se AS (SELECT rse.id FROM series s JOIN resources rse ON rse.id = s.resource_id
                    WHERE s.series_instance_uid = %s),
        r AS (INSERT INTO resources (level, public_id, parent_id)
              SELECT 3, 'bulk-' || g, se.id FROM se, generate_series(1, %s) g
              RETURNING id, public_id)
        INSERT INTO instances (resource_id, sop_instance_uid, sop_class_uid, main_tags)
        SELECT r.id, %s || '.9.' || substr(r.public_id, 6), %s,
               jsonb_build_object('InstanceNumber', substr(r.public_id, 6))
        FROM r""", (series_uid("S1.1"), n, series_uid("S1.1"), CT))


@pytest.fixture(scope="module")
def big(postgres, tmp_path_factory):
    """The data set plus 20,000 instances in one series; limit 50,000."""
    base = tmp_path_factory.mktemp("query-big")
    os.chmod(base, 0o755)
    c = Cluster(postgres, base)
    ing = c.start_ingest()
    data = base / "data"
    data.mkdir()
    rc, out = storescu(ing, make_dataset(data))
    assert rc == 0, out
    add_instances(c, 20000)
    c.start_query(TESSERA_QUERY_LIMIT=50000)
    yield c
    stop_and_check(c)


def test_cancel_stops_answers(big):
    final, rsps, out = findscu(big, "IMAGE", [f"SeriesInstanceUID={series_uid('S1.1')}",
                                              "SOPInstanceUID"], extra=["--cancel", "2"])
    assert final is not None and "Cancel" in final, out[-2000:]
    assert len(rsps) < 20003, len(rsps)
    assert "C-FIND cancelled" in big.queries[0].read_log()
    # the association and the service go on
    final, rsps, out = findscu(big, "STUDY", ["StudyInstanceUID"])
    assert final == "Success" and len(rsps) == 4, out


def test_many_matches_in_one_series(big):
    t = time.monotonic()
    final, rsps, out = findscu(big, "IMAGE", [f"SeriesInstanceUID={series_uid('S1.1')}",
                                              "SOPInstanceUID"])
    assert final == "Success", out[-2000:]
    assert len(rsps) == 20003


@pytest.mark.parametrize("keys,model", [
    (["StudyDate=2020-01-01", "StudyInstanceUID"], "-S"),   # not a DA range
    (["StudyDate=20200101-2021", "StudyInstanceUID"], "-S"),
    (["StudyDate=-", "StudyInstanceUID"], "-S"),
    (["StudyTime=25x", "StudyInstanceUID"], "-S"),
])
def test_bad_values_get_a900_and_service_serves_on(qr, keys, model):
    final, rsps, out = findscu(qr, "STUDY", keys, model=model)
    assert final is not None and "DoesNotMatchSOPClass" in final, out
    assert rsps == []
    final, rsps, out = findscu(qr, "STUDY", ["StudyInstanceUID"])
    assert final == "Success" and len(rsps) == 4, out


@pytest.mark.parametrize("level,model", [("FOO", "-S"), ("PATIENT", "-S"), ("", "-P")])
def test_bad_level_gets_a900(qr, level, model):
    final, rsps, out = findscu(qr, level, ["PatientID"], model=model)
    assert final is not None and "DoesNotMatchSOPClass" in final, out
    assert "C-FIND refused" in qr.queries[0].read_log()


def test_unsupported_model_is_refused(qr):
    # the modality worklist model is not offered: the context is refused
    final, rsps, out = findscu(qr, "STUDY", ["PatientID"], model="-W")
    assert final is None and rsps == []
    assert "Association Rejected" in out, out
    final, rsps, out = findscu(qr, "STUDY", ["StudyInstanceUID"])
    assert final == "Success" and len(rsps) == 4, out


def test_echo(qr):
    p = subprocess.run(["echoscu", "-aec", "TESSERA", "127.0.0.1", str(qr.queries[0].port)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


# ---- C-MOVE ---------------------------------------------------------------------


def start_storescp(outdir):
    """A dcmtk storescp (AE title DEST) writing into outdir; returns (process, port)."""
    from conftest import free_port
    import socket
    port = free_port()
    outdir.mkdir()
    p = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(outdir), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, port


def register_dest(c, port):
    c.sql("INSERT INTO modalities (name, aet, host, port) VALUES ('dest', 'DEST', '127.0.0.1', %s)"
          " ON CONFLICT (name) DO UPDATE SET port = EXCLUDED.port", (port,))


@pytest.fixture
def storescp(qr, tmp_path):
    """A dcmtk storescp registered in the modalities table as DEST."""
    out = tmp_path / "received"
    p, port = start_storescp(out)
    register_dest(qr, port)
    yield out
    p.terminate()
    p.wait(timeout=10)


def movescu(q, level, keys, dest="DEST", model="-S", extra=(), port=None):
    cmd = ["movescu", "-v", model, "-aet", "MOVESCU", "-aec", "TESSERA", "-aem", dest,
           "-k", f"QueryRetrieveLevel={level}", *extra]
    for k in keys:
        cmd += ["-k", k]
    cmd += ["127.0.0.1", str(port or q.queries[0].port)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


def received_uids(out):
    return sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                  for f in out.iterdir())


def test_move_study_to_registered_destination(qr, storescp):
    out = movescu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S1')}"])
    assert "Move Response" in out and "Success" in out, out
    # one pending response per sub-operation, with the counts
    assert out.count("Pending") >= 5, out
    assert received_uids(storescp) == sorted(
        [f"{series_uid('S1.1')}.{i}" for i in range(1, 4)]
        + [f"{series_uid('S1.2')}.{i}" for i in range(1, 3)])
    assert "completed=5 failed=0" in qr.queries[0].read_log()


def test_move_series_and_image_patient_root(qr, storescp):
    out = movescu(qr, "SERIES", ["PatientID=PID-002", f"StudyInstanceUID={study_uid('S3')}",
                                 f"SeriesInstanceUID={series_uid('S3.1')}"], model="-P")
    assert "Success" in out, out
    assert len(received_uids(storescp)) == 4
    out = movescu(qr, "IMAGE", [f"StudyInstanceUID={study_uid('S2')}",
                                f"SeriesInstanceUID={series_uid('S2.1')}",
                                f"SOPInstanceUID={series_uid('S2.1')}.1"])
    assert "Success" in out, out
    assert len(received_uids(storescp)) == 5


def test_move_cancelled_stops_sending(qr, storescp):
    out = movescu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S1')}"], extra=["--cancel", "1"])
    assert "Received Final Move Response (Cancel" in out, out
    assert len(list(storescp.iterdir())) < 5
    assert "C-MOVE cancelled" in qr.queries[0].read_log()


def test_move_unknown_destination_refused(qr, storescp):
    out = movescu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S1')}"], dest="NOWHERE")
    assert "a801" in out.lower() or "MoveDestinationUnknown" in out, out
    assert list(storescp.iterdir()) == []
    assert "unknown destination" in qr.queries[0].read_log()


def test_move_without_unique_key_refused(qr, storescp):
    out = movescu(qr, "STUDY", ["PatientID=PID-001"])
    assert "a900" in out.lower() or "DoesNotMatchSOPClass" in out, out
    assert list(storescp.iterdir()) == []


# ---- C-GET ------------------------------------------------------------------------


def getscu(q, level, keys, outdir, model="-S", extra=(), port=None):
    cmd = ["getscu", "-v", model, "-aet", "GETSCU", "-aec", "TESSERA", "-od", str(outdir),
           "-k", f"QueryRetrieveLevel={level}", *extra]
    for k in keys:
        cmd += ["-k", k]
    cmd += ["127.0.0.1", str(port or q.queries[0].port)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


def test_get_study_on_the_same_association(qr, tmp_path):
    out = getscu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S3')}"], tmp_path)
    assert "Received C-GET Response (Success)" in out, out
    assert "Number of Completed Suboperations : 4" in out, out
    assert received_uids(tmp_path) == sorted(f"{series_uid('S3.1')}.{i}" for i in range(1, 5)), out
    assert "completed=4 failed=0" in qr.queries[0].read_log()


def test_get_series_patient_root(qr, tmp_path):
    out = getscu(qr, "SERIES", ["PatientID=PID-001", f"StudyInstanceUID={study_uid('S1')}",
                                f"SeriesInstanceUID={series_uid('S1.2')}"], tmp_path, model="-P")
    assert received_uids(tmp_path) == sorted(f"{series_uid('S1.2')}.{i}" for i in range(1, 3)), out


def test_get_without_unique_key_refused(qr, tmp_path):
    out = getscu(qr, "SERIES", ["Modality=CT"], tmp_path)
    assert "a900" in out.lower() or "DoesNotMatchSOPClass" in out, out
    assert list(tmp_path.iterdir()) == []


# ---- C-FIND relayed by ingest --------------------------------------------------------


RELAYED = [
    ("STUDY", "-S", ["PatientName=doe*", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy",
                     "NumberOfStudyRelatedInstances", "RetrieveAETitle", "(0008,1048)"]),
    ("STUDY", "-S", ["StudyDate=20200101-20211231", "StudyInstanceUID", "AccessionNumber"]),
    ("PATIENT", "-P", ["PatientID=PID-*", "PatientName", "NumberOfPatientRelatedInstances"]),
    ("SERIES", "-S", [f"StudyInstanceUID={study_uid('S1')}", "SeriesInstanceUID", "Modality"]),
    ("IMAGE", "-S", [f"SOPClassUID={MR}", "SOPInstanceUID", "InstanceNumber"]),
]


def answers(rsps):
    return sorted(sorted((str(e.tag), str(e.value)) for e in r) for r in rsps)


@pytest.mark.parametrize("level,model,keys", RELAYED)
def test_relay_through_ingest_gives_the_same_answers(qr, level, model, keys):
    relay = qr.ingests[1]
    final_q, rsps_q, out_q = findscu(qr, level, keys, model=model)
    final_i, rsps_i, out_i = findscu(qr, level, keys, model=model, port=relay.port)
    assert final_q == "Success" and final_i == "Success", out_i
    assert len(rsps_q) > 0
    assert answers(rsps_i) == answers(rsps_q)
    assert "C-FIND relayed" in relay.read_log()


def test_relay_bad_input_and_store_on_the_same_association(qr, tmp_path):
    relay = qr.ingests[1]
    final, rsps, out = findscu(qr, "STUDY", ["StudyDate=2020-01", "StudyInstanceUID"],
                               port=relay.port)
    assert final is not None and "DoesNotMatchSOPClass" in final, out
    final, rsps, out = findscu(qr, "PATIENT", ["PatientID"], port=relay.port)  # Study Root
    assert final is not None and "DoesNotMatchSOPClass" in final, out
    # the same port still stores
    rc, out = storescu(relay, [PYDICOM_FILES / "CT_small.dcm"])
    assert rc == 0, out


def test_relay_pages_past_one_bus_reply(big):
    ing = big.start_ingest(TESSERA_QUERY_BUS=big.queries[0].bus, TESSERA_QUERY_LIMIT=50000)
    final, rsps, out = findscu(big, "IMAGE", [f"SeriesInstanceUID={series_uid('S1.1')}",
                                              "SOPInstanceUID"], port=ing.port)
    assert final == "Success", out[-2000:]
    assert len(rsps) == 20003
    assert len(set(values(rsps, "SOPInstanceUID"))) == 20003


# ---- C-MOVE and C-GET through ingest's port (one AE for clients) --------------------


RETRIEVES = [
    ("STUDY", "-S", [f"StudyInstanceUID={study_uid('S1')}"]),
    ("SERIES", "-P", ["PatientID=PID-002", f"StudyInstanceUID={study_uid('S3')}",
                      f"SeriesInstanceUID={series_uid('S3.1')}"]),
    ("IMAGE", "-S", [f"StudyInstanceUID={study_uid('S2')}", f"SeriesInstanceUID={series_uid('S2.1')}",
                     f"SOPInstanceUID={series_uid('S2.1')}.1"]),
    ("PATIENT", "-P", ["PatientID=PID-001"]),
]


def final_response(out, what):
    """The last '<what> Response' line of a movescu/getscu run, and the counts it printed last."""
    lines = [ln for ln in out.splitlines() if what in ln]
    counts = {}
    for ln in out.splitlines():
        for name in ("Completed", "Failed", "Warning"):
            if f"Number of {name} Suboperations" in ln:
                counts[name] = ln.rsplit(":", 1)[1].strip()
    return (lines[-1].split("Response", 1)[1] if lines else None), counts


def empty(d):
    for f in d.iterdir():
        f.unlink()


def last_log_line(service, marker):
    """The service's last log line with marker: this test's own (the relay's log
    spans the module), not one left by an earlier test."""
    lines = [line for line in service.read_log().splitlines() if marker in line]
    assert lines, marker
    return lines[-1]


@pytest.mark.parametrize("level,model,keys", RETRIEVES)
def test_move_through_ingest_gives_the_same_results(qr, storescp, level, model, keys):
    relay = qr.ingests[1]
    out_q = movescu(qr, level, keys, model=model)
    got_q = received_uids(storescp)
    empty(storescp)
    out_i = movescu(qr, level, keys, model=model, port=relay.port)
    got_i = received_uids(storescp)
    assert "Success" in final_response(out_i, "Move Response")[0], out_i
    assert got_i and got_i == got_q, out_i
    assert final_response(out_i, "Move Response") == final_response(out_q, "Move Response")
    # streamed: one pending response per sub-operation, as they happen
    assert out_i.count("Pending") >= len(got_i), out_i
    assert last_log_line(relay, 'msg="C-MOVE"').endswith(
        f"level={level} completed={len(got_i)} failed=0 warning=0")


@pytest.mark.parametrize("level,model,keys", RETRIEVES)
def test_get_through_ingest_gives_the_same_results(qr, tmp_path, level, model, keys):
    relay = qr.ingests[1]
    (tmp_path / "q").mkdir()
    (tmp_path / "i").mkdir()
    out_q = getscu(qr, level, keys, tmp_path / "q", model=model)
    out_i = getscu(qr, level, keys, tmp_path / "i", model=model, port=relay.port)
    assert "Received C-GET Response (Success)" in out_i, out_i
    got = received_uids(tmp_path / "i")
    assert got and got == received_uids(tmp_path / "q"), out_i
    assert (f"Number of Completed Suboperations : {len(got)}") in out_i, out_i
    assert out_i.count("Pending") >= len(got), out_i
    assert last_log_line(relay, 'msg="C-GET"').endswith(
        f"level={level} completed={len(got)} failed=0 warning=0")


def test_move_cancelled_through_ingest(qr, storescp):
    relay = qr.ingests[1]
    out = movescu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S1')}"], extra=["--cancel", "1"],
                  port=relay.port)
    assert "Received Final Move Response (Cancel" in out, out
    assert len(list(storescp.iterdir())) < 5
    assert "C-MOVE cancelled" in relay.read_log()


def test_move_unknown_destination_refused_through_ingest(qr, storescp):
    relay = qr.ingests[1]
    out = movescu(qr, "STUDY", [f"StudyInstanceUID={study_uid('S1')}"], dest="NOWHERE",
                  port=relay.port)
    assert "a801" in out.lower() or "MoveDestinationUnknown" in out, out
    assert list(storescp.iterdir()) == []
    assert "unknown destination" in relay.read_log()


def test_retrieve_bad_identifiers_refused_through_ingest(qr, storescp, tmp_path):
    relay = qr.ingests[1]
    out = movescu(qr, "STUDY", ["PatientID=PID-001"], port=relay.port)  # no unique key
    assert "a900" in out.lower() or "DoesNotMatchSOPClass" in out, out
    got = tmp_path / "got"
    got.mkdir()
    out = getscu(qr, "SERIES", ["Modality=CT"], got, port=relay.port)
    assert "a900" in out.lower() or "DoesNotMatchSOPClass" in out, out
    out = movescu(qr, "PATIENT", ["PatientID=PID-001"], port=relay.port)  # Study Root
    assert "a900" in out.lower() or "DoesNotMatchSOPClass" in out, out
    assert list(storescp.iterdir()) == [] and list(got.iterdir()) == []


def test_store_then_get_on_one_association_port(qr, tmp_path):
    """A client stores and retrieves through the same AE and port."""
    relay = qr.ingests[1]
    rc, out = storescu(relay, [PYDICOM_FILES / "MR_small.dcm"])
    assert rc == 0, out
    uid = str(pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").SOPInstanceUID)
    study = str(pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").StudyInstanceUID)
    out = getscu(qr, "STUDY", [f"StudyInstanceUID={study}"], tmp_path, port=relay.port)
    assert "Received C-GET Response (Success)" in out, out
    assert received_uids(tmp_path) == [uid]


def test_relay_with_query_down_fails_clearly_and_ingest_serves_on(postgres, tmp_path):
    """C-FIND, C-MOVE and C-GET through ingest while query is down: 0xA700 with
    a comment that says why; ingest still stores, and relays again once query is back."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "down").mkdir()
    c = Cluster(postgres, tmp_path / "down")
    try:
        bus = f"ipc://{c.run_dir}/query-0.sock"
        ing = c.start_ingest(TESSERA_QUERY_BUS=bus, TESSERA_BUS_TIMEOUT=2)
        rc, out = storescu(ing, [PYDICOM_FILES / "CT_small.dcm"])
        assert rc == 0, out
        study = str(pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm").StudyInstanceUID)
        scp, port = start_storescp(tmp_path / "received")
        register_dest(c, port)
        c.queries = []
        final, rsps, out = findscu(c, "STUDY", ["StudyInstanceUID"], port=ing.port)
        assert final is not None and "OutOfResources" in final, out
        out = movescu(c, "STUDY", [f"StudyInstanceUID={study}"], port=ing.port, extra=["-d"])
        assert "a700" in out.lower() or "OutOfResources" in out, out
        assert "query service unavailable" in out, out  # the ErrorComment
        (tmp_path / "get").mkdir()
        out = getscu(c, "STUDY", [f"StudyInstanceUID={study}"], tmp_path / "get", port=ing.port)
        assert "a700" in out.lower() or "OutOfResources" in out, out
        assert 'msg="relay failed" op=get' in ing.read_log()
        # ingest serves on: it stores, and relays as soon as query is back
        rc, out = storescu(ing, [PYDICOM_FILES / "MR_small.dcm"])
        assert rc == 0, out
        c.start_query(TESSERA_QUERY_BUS_LISTEN=bus)
        final, rsps, out = findscu(c, "STUDY", ["StudyInstanceUID"], port=ing.port)
        assert final == "Success" and len(rsps) == 2, out
        out = movescu(c, "STUDY", [f"StudyInstanceUID={study}"], port=ing.port)
        assert "Success" in final_response(out, "Move Response")[0], out
        assert len(received_uids(tmp_path / "received")) == 1
        scp.terminate()
        scp.wait(timeout=10)
    finally:
        stop_and_check(c)


def test_images_level_group_0002_and_retrieve_ae_title(qr):
    """Orthanc takes QueryRetrieveLevel IMAGES for IMAGE; answers say IMAGE, do not
    echo file meta (0002) keys sent in the identifier, and carry Retrieve AE Title
    (0008,0054) without being asked, as Orthanc's do (workstations send their
    C-MOVE there)."""
    keys = [f"StudyInstanceUID={study_uid('S1')}", f"SeriesInstanceUID={series_uid('S1.1')}",
            "SOPInstanceUID", "(0002,0010)=1.2.840.10008.1.2.1"]
    final, rsps, out = findscu(qr, "IMAGES", keys)
    assert final == "Success", out
    assert values(rsps, "SOPInstanceUID") == [f"{series_uid('S1.1')}.{i}" for i in range(1, 4)]
    for r in rsps:
        assert r.QueryRetrieveLevel == "IMAGE"
        assert r.RetrieveAETitle == "TESSERA"
        assert not any(e.tag.group == 0x0002 for e in r), r
    # the same through ingest's port (relayed to query)
    final, rsps, out = findscu(qr, "STUDY", ["StudyInstanceUID", "PatientID=PID-002"],
                              port=qr.ingests[1].port)
    assert final == "Success", out
    assert [r.RetrieveAETitle for r in rsps] == ["TESSERA"]


def test_move_study_by_accession_number(qr, storescp):
    """A C-MOVE at STUDY level keyed by AccessionNumber alone: Orthanc 1.10.1 resolves
    it and Tessera does too (PS3.4 C.4.2.2.1 asks for StudyInstanceUID; this is a
    tolerance some workstations rely on). A wildcard accession number is still no
    key (0xA900)."""
    out = movescu(qr, "STUDY", ["AccessionNumber=ACC_1"])
    assert "Success" in out, out
    assert received_uids(storescp) == sorted(
        [f"{series_uid('S1.1')}.{i}" for i in range(1, 4)]
        + [f"{series_uid('S1.2')}.{i}" for i in range(1, 3)])
    out = movescu(qr, "STUDY", ["AccessionNumber=ACC*"])
    assert "Received Final Move Response (Error: DataSetDoesNotMatchSOPClass)" in out, out
