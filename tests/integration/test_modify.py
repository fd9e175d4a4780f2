"""/modify and /anonymize (issue 22) beside a live Orthanc 1.10.1 loaded with the
same files: the tags of the outputs, the answers' shape, the metadata, the error
bodies of bad requests; and the ResourceModification job of Tessera's Redis
registry: it survives a killed jobs worker and is cancelled from another REST
replica.

Differences from Orthanc that these tests accept, and why:
- New UIDs differ by design (Orthanc's random ones under its root, Tessera's
  2.25.<SHA-256 of a job secret and the original>, the same on every worker):
  they are compared for consistency, not equality.
- DeidentificationMethod says "Tessera - ..." instead of "Orthanc 1.10.1 - ...";
  the anonymized PatientID is a random UUID and PatientName "Anonymized<N>" in
  both, from each server's own counter.
- The anonymization profile also applies inside sequences (PS3.15 E.1: every
  attribute, nested ones too); Orthanc 1.10.1 applies it to the top level only.
  Top-level tags are compared; nested ones are not.
- The meta header's ImplementationClassUID/VersionName are each server's.
- A merge copies the target study's patient and study modules whole, sequences
  included (OtherPatientIDsSequence); Orthanc 1.10.1 copies their text values and
  drops the sequences.
- Transcode: test_modify_transcode.py (beside Orthanc with its GDCM plugin).
"""
import io
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pydicom
import pytest

from orthanc import orthanc  # noqa: F401  (a fixture)
from test_ingest import make_series
from test_jobs import call, js, upload, wait_job

DATA = Path(__file__).resolve().parent.parent / "data" / "dicom"
FILES = ["CT_small.dcm", "MR_small.dcm", "rtstruct.dcm", "test-SR.dcm", "chrGerm.dcm"]
UNKNOWN_ID = "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917a0"
ANSWER_KEYS = {"Description", "FailedInstancesCount", "ID", "InstancesCount", "IsAnonymization",
               "Path", "PatientID", "Type"}
# values that legitimately differ between the two servers' outputs
DIFFERING = {"DeidentificationMethod", "PatientID", "PatientName"}


@pytest.fixture
def mcluster(cluster):
    """Redis, one ingest, two REST processes, one jobs process (tests add more)."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    cluster.start_jobs()
    return cluster


def load_both(rest, orthanc, files):  # noqa: F811
    ours = upload(rest, files)
    theirs = [orthanc.upload(f)[1] for f in files]
    assert [a["ID"] for a in ours] == [b["ID"] for b in theirs]
    return ours


def parse(data):
    return pydicom.dcmread(io.BytesIO(data), force=True)


def flat(ds, nested=True, prefix=""):
    """{path: value} of a dataset; UIDs (VR UI) as "<UI>" so that new UIDs compare equal."""
    out = {}
    for el in ds:
        key = prefix + el.keyword if el.keyword else prefix + str(el.tag)
        if el.VR == "SQ":
            out[key] = f"<SQ {len(el.value)}>"
            if nested:
                for i, item in enumerate(el.value):
                    out.update(flat(item, nested, f"{key}[{i}]."))
        elif el.tag == 0x7FE00010:
            out[key] = len(el.value)
        elif el.VR == "UI":
            out[key] = "<UI>" if el.value else ""
        else:
            out[key] = str(el.value)
    return out


def uid_map(before, after, prefix="", acc=None):
    """Pairs original -> new of every UID found at the same path in both datasets;
    fails if one original became two different UIDs (an inconsistent mapping)."""
    acc = {} if acc is None else acc
    for el in before:
        if el.tag not in after:
            continue
        other = after[el.tag]
        if el.VR == "SQ" and other.VR == "SQ":
            for a, b in zip(el.value, other.value):
                uid_map(a, b, prefix + el.keyword + ".", acc)
        elif el.VR == "UI" and el.value and other.value and el.tag != 0x00080016:
            for o, n in zip(str(el.value).split("\\"), str(other.value).split("\\")):
                if o in acc:
                    assert acc[o] == n, (prefix + el.keyword, o, acc[o], n)
                acc[o] = n
    return acc


def dcmdump_ok(data):
    """dcmtk's dcmdump reads the whole file without an error or warning."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        p = subprocess.run(["dcmdump", "-q", f.name], capture_output=True, text=True,
                           errors="replace")
    return p.returncode == 0 and not p.stderr.strip()


def modified_file(server, path, body):
    status, data, headers = call(server, "POST", path, body)
    assert status == 200, (path, body, data)
    assert headers.get("Content-Type") == "application/dicom"
    assert dcmdump_ok(data), (path, body)
    return parse(data)


BODIES = [
    {"Replace": {"PatientName": "Doe^John", "InstitutionName": "Other clinic",
                 "StudyDescription": "modified"}, "Remove": ["StudyDate", "AccessionNumber"]},
    {"Replace": {"ReferencedStudySequence": [{"ReferencedSOPClassUID": "1.2.840.10008.3.1.2.3.1",
                                              "ReferencedSOPInstanceUID": "1.2.3.4.5"}]},
     "RemovePrivateTags": True},
    {"Replace": {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242"}, "Force": True},
    # Orthanc's paths into sequence items
    {"Remove": ["OtherPatientIDsSequence[0].PatientID"],
     "Replace": {"OtherPatientIDsSequence[*].TypeOfPatientID": "RFID",
                 "ReferencedImageSequence[1].ReferencedSOPClassUID": "1.2.3"}},
]


def test_instance_modify_like_orthanc(mcluster, orthanc):  # noqa: F811
    rest = mcluster.rests[0]
    answers = load_both(rest, orthanc, [DATA / f for f in FILES])
    for a, name in zip(answers, FILES):
        src = parse((DATA / name).read_bytes())
        for body in BODIES:
            path = f"/instances/{a['ID']}/modify"
            ours, theirs = modified_file(rest, path, body), modified_file(orthanc, path, body)
            assert flat(ours) == flat(theirs), (name, body)
            assert ours.SOPInstanceUID != src.SOPInstanceUID
            assert ours.file_meta.MediaStorageSOPInstanceUID == ours.SOPInstanceUID
            if "OtherPatientIDsSequence[0].PatientID" in body.get("Remove", []) and \
                    "OtherPatientIDsSequence" in src:
                items = ours.OtherPatientIDsSequence
                assert "PatientID" not in items[0] and "PatientID" in items[1]
                assert {str(i.TypeOfPatientID) for i in items} == {"RFID"}
            # the level follows the UIDs the body replaces, as in Orthanc
            if "StudyInstanceUID" in body["Replace"]:
                assert ours.StudyInstanceUID == body["Replace"]["StudyInstanceUID"]
                assert ours.SeriesInstanceUID != src.SeriesInstanceUID
            else:
                assert ours.StudyInstanceUID == src.StudyInstanceUID
                assert ours.SeriesInstanceUID == src.SeriesInstanceUID
    # nothing was stored by these calls, as in Orthanc
    assert len(call(rest, "GET", "/instances")[1]) == len(FILES)
    assert len(call(orthanc, "GET", "/instances")[1]) == len(FILES)


@pytest.mark.parametrize("version", [None, "2021b", "2017c", "2008"])
def test_instance_anonymize_like_orthanc(mcluster, orthanc, version):  # noqa: F811
    rest = mcluster.rests[0]
    answers = load_both(rest, orthanc, [DATA / f for f in FILES])
    body = {} if version is None else {"DicomVersion": version}
    for a, name in zip(answers, FILES):
        src = parse((DATA / name).read_bytes())
        path = f"/instances/{a['ID']}/anonymize"
        ours, theirs = modified_file(rest, path, body), modified_file(orthanc, path, body)
        fo, ft = flat(ours, nested=False), flat(theirs, nested=False)
        assert {k: v for k, v in fo.items() if k not in DIFFERING} == \
            {k: v for k, v in ft.items() if k not in DIFFERING}, (name, version)
        assert str(ours.PatientName).startswith("Anonymized")
        assert str(uuid.UUID(str(ours.PatientID))) == str(ours.PatientID)
        assert ours.PatientIdentityRemoved == "YES"
        assert (version or "2021b") in ours.DeidentificationMethod
        # every UID the profile replaces is new, and one original gives one new UID
        # everywhere in the file (references in sequences included)
        mapping = uid_map(src, ours)
        for tag in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert getattr(ours, tag) != getattr(src, tag)
        assert len(set(mapping.values())) == len(mapping)
    # the body replaces PatientName/PatientID, and Keep keeps a tag
    body = {"Replace": {"PatientName": "Research^Subject", "PatientID": "R-1"},
            "Keep": ["StudyDescription"], "Force": True}  # PatientID needs Force, as in Orthanc
    ours = modified_file(rest, f"/instances/{answers[0]['ID']}/anonymize", body)
    theirs = modified_file(orthanc, f"/instances/{answers[0]['ID']}/anonymize", body)
    assert (ours.PatientName, ours.PatientID) == ("Research^Subject", "R-1")
    assert ours.StudyDescription == theirs.StudyDescription == \
        parse((DATA / FILES[0]).read_bytes()).StudyDescription


# where Keep names something inside sequences of rtstruct.dcm, and what it names
RT_PROBES = [
    ("ReferencedFrameOfReferenceSequence", 0, "FrameOfReferenceUID"),
    ("ReferencedFrameOfReferenceSequence", 0, "RTReferencedStudySequence", 0,
     "ReferencedSOPInstanceUID"),
    ("ReferencedFrameOfReferenceSequence", 0, "RTReferencedStudySequence", 0,
     "RTReferencedSeriesSequence", 0, "SeriesInstanceUID"),
    ("StructureSetROISequence", 0, "ReferencedFrameOfReferenceUID"),
    ("StructureSetROISequence", 1, "ReferencedFrameOfReferenceUID"),
]
KEEP_PATHS = [
    ["ReferencedFrameOfReferenceSequence[*].FrameOfReferenceUID"],
    ["(3006,0010)[0].(0020,0052)"],
    ["ReferencedFrameOfReferenceSequence"],  # a tag: everything inside it too
    ["ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[*].ReferencedSOPInstanceUID"],
    ["ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence"],
    ["ReferencedFrameOfReferenceSequence[1].FrameOfReferenceUID"],  # no such item
    ["StructureSetROISequence[1].ReferencedFrameOfReferenceUID", "3006,0039"],
]


def probe(ds, path):
    for i in range(0, len(path) - 1, 2):
        ds = getattr(ds, path[i])[path[i + 1]]
    return str(getattr(ds, path[-1]))


def test_keep_paths_inside_sequences_like_orthanc(mcluster, orthanc):  # noqa: F811
    """Keep with paths into sequences (Orthanc 1.9.4+): the anonymization leaves what a
    path names (a tag: all it contains) as it was, in both; a modification accepts
    the paths and changes nothing inside sequences, in both."""
    rest = mcluster.rests[0]
    a = load_both(rest, orthanc, [DATA / "rtstruct.dcm"])[0]
    src = parse((DATA / "rtstruct.dcm").read_bytes())
    seen = set()
    for op in ("anonymize", "modify"):
        for keep in KEEP_PATHS:
            body = {"Keep": keep}
            path = f"/instances/{a['ID']}/{op}"
            ours, theirs = modified_file(rest, path, body), modified_file(orthanc, path, body)
            kept = [[probe(ds, p) == probe(src, p) for p in RT_PROBES] for ds in (ours, theirs)]
            assert kept[0] == kept[1], (op, keep, kept)
            seen.add((op, tuple(kept[0])))
            if op == "anonymize":
                assert ours.SOPInstanceUID != src.SOPInstanceUID
                assert ours.DeidentificationMethod  # still an anonymization
    # the cases differ from each other (the probes can tell kept from changed)
    assert len({k for op, k in seen if op == "anonymize"}) >= 5
    assert {k for op, k in seen if op == "modify"} == {(True,) * len(RT_PROBES)}


def test_rtstruct_references_follow(mcluster, orthanc):  # noqa: F811
    """In an RT structure set the frame of reference is referenced from sequences:
    after anonymization the references equal the new FrameOfReferenceUID."""
    rest = mcluster.rests[0]
    a = load_both(rest, orthanc, [DATA / "rtstruct.dcm"])[0]
    ours = modified_file(rest, f"/instances/{a['ID']}/anonymize", {})
    frame = ours.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    src = parse((DATA / "rtstruct.dcm").read_bytes())
    assert frame != src.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    refs = {str(r.ReferencedFrameOfReferenceUID) for r in ours.StructureSetROISequence}
    assert refs == {str(frame)}


def test_resource_modify_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest, other = mcluster.rests
    files = make_series(tmp_path / "s", 3, study_uid="1.2.826.0.1.3680043.8.498.91", patient="P91")
    answers = load_both(rest, orthanc, files)
    study, series, patient = (answers[0]["ParentStudy"], answers[0]["ParentSeries"],
                              answers[0]["ParentPatient"])
    cases = [("studies", study, "modify", {"Replace": {"StudyDescription": "new"}}),
             ("series", series, "modify", {"Replace": {"SeriesDescription": "s2"}}),
             ("patients", patient, "modify", {"Replace": {"PatientID": "P92"}, "Force": True}),
             ("studies", study, "anonymize", {}),
             ("series", series, "anonymize", {"DicomVersion": "2017c"})]
    for level, rid, op, body in cases:
        expected = len(call(rest, "GET", f"/{level}/{rid}/instances")[1])
        a = call(rest, "POST", f"/{level}/{rid}/{op}", body)
        b = call(orthanc, "POST", f"/{level}/{rid}/{op}", body)
        assert a[0] == b[0] == 200, (level, op, a, b)
        ours, theirs = a[1], b[1]
        assert set(ours) == set(theirs) == ANSWER_KEYS, (ours, theirs)
        assert without_ids(ours) == without_ids(theirs)
        assert ours["Path"] == f"/{level}/{ours['ID']}"
        # the new resource: same number of instances, tags as Orthanc's but the UIDs
        new_instances = call(other, "GET", f"/{level}/{ours['ID']}/instances")[1]
        their_instances = call(orthanc, "GET", f"/{level}/{theirs['ID']}/instances")[1]
        assert len(new_instances) == len(their_instances) == expected
        fo = sorted(json.dumps(without(flat(parse(call(other, "GET", f"/instances/{i['ID']}/file")[1]),
                                            nested=False), DIFFERING), sort_keys=True)
                    for i in new_instances)
        ft = sorted(json.dumps(without(flat(parse(call(orthanc, "GET", f"/instances/{i['ID']}/file")[1]),
                                            nested=False), DIFFERING), sort_keys=True)
                    for i in their_instances)
        assert fo == ft, (level, op)
        # metadata, as Orthanc sets them: the copy points at its source, and so does
        # each parent of the copy that differs from the source's parent
        name = "AnonymizedFrom" if op == "anonymize" else "ModifiedFrom"
        pattern = [metadata_pattern(server, insts[0]["ID"], name)
                   for server, insts in ((other, new_instances), (orthanc, their_instances))]
        assert pattern[0] == pattern[1], (level, op, pattern)
    # the sources were kept (KeepSource defaults to true)
    assert call(rest, "GET", f"/studies/{study}")[0] == 200


def without(d, keys):
    return {k: v for k, v in d.items() if k not in keys}


def without_ids(answer):
    return without(answer, {"ID", "Path", "PatientID"})


def metadata_pattern(server, copy, name):
    """Which levels of a copy carry `name` (checked to be the id of the source's
    resource at that level) and which do not."""
    status, source, _ = call(server, "GET", f"/instances/{copy}/metadata/{name}")
    assert status == 200, source
    source = source.decode()
    pattern = {}
    for level, parent in (("patients", "patient"), ("studies", "study"), ("series", "series")):
        mine = call(server, "GET", f"/instances/{copy}/{parent}")[1]["ID"]
        theirs = call(server, "GET", f"/instances/{source}/{parent}")[1]["ID"]
        status, value, _ = call(server, "GET", f"/{level}/{mine}/metadata/{name}")
        if mine == theirs:
            pattern[level] = status  # unchanged level: no metadata (404)
        else:
            assert status == 200 and value.decode() == theirs, (level, status, value)
            pattern[level] = "source"
    return pattern


def test_keep_source_false_deletes_the_source(mcluster, orthanc, tmp_path):  # noqa: F811
    rest = mcluster.rests[0]
    mcluster.start_deleter()
    files = make_series(tmp_path / "k", 2, study_uid="1.2.826.0.1.3680043.8.498.93", patient="P93")
    answers = load_both(rest, orthanc, files)
    study = answers[0]["ParentStudy"]
    body = {"Replace": {"StudyDescription": "moved"}, "KeepSource": False}
    a, b = call(rest, "POST", f"/studies/{study}/modify", body), \
        call(orthanc, "POST", f"/studies/{study}/modify", body)
    assert a[0] == b[0] == 200
    assert call(rest, "GET", f"/studies/{study}")[0] == call(orthanc, "GET", f"/studies/{study}")[0] == 404
    assert len(call(rest, "GET", f"/studies/{a[1]['ID']}/instances")[1]) == 2


BAD = [
    ("studies", "modify", {"Replace": {"StudyInstanceUID": "1.2.3"}}),
    ("studies", "modify", {"Remove": ["StudyInstanceUID"]}),
    ("studies", "modify", {"Keep": ["SOPInstanceUID"]}),
    ("studies", "modify", {"Remove": ["SeriesInstanceUID"], "Force": True}),
    ("studies", "modify", {"Replace": {"PatientID": "x"}, "Force": True}),
    ("series", "modify", {"Replace": {"StudyInstanceUID": "1.2"}, "Force": True}),
    ("patients", "modify", {"Replace": {"PatientName": "x"}}),
    ("studies", "modify", {"Replace": {"NoSuchTag": "x"}}),
    ("studies", "modify", b"{bad json"),
    ("studies", "modify", [1]),
    ("studies", "modify", {"Replace": ["a"]}),
    ("studies", "modify", {"Remove": "PatientName"}),
    ("studies", "modify", {"Replace": {"StudyDescription": 5}}),
    ("studies", "modify", {"Priority": "a"}),
    ("studies", "modify", {"Synchronous": "a"}),
    ("studies", "anonymize", {"DicomVersion": "2099"}),
    ("instances", "modify", {"Replace": {"SOPInstanceUID": "1.2"}}),
    ("instances", "modify", {"Remove": ["SOPInstanceUID"], "Force": True}),
    ("instances", "anonymize", b"{bad json"),
    # malformed paths into sequences: Orthanc's DicomPath errors
    ("instances", "modify", {"Keep": ["ReferencedImageSequence[x].ReferencedSOPInstanceUID"]}),
    ("instances", "anonymize", {"Keep": ["StudyDate.PatientID"]}),
    ("studies", "modify", {"Remove": ["ReferencedImageSequence[-1].ReferencedSOPInstanceUID"]}),
    ("studies", "anonymize", {"Keep": ["ReferencedImageSequence[0]"]}),
    ("instances", "modify", {"Replace": {"[0].PatientName": "x"}}),
    ("instances", "modify", {"Replace": {"ReferencedImageSequence[0.PatientName": "x"}}),
    ("instances", "anonymize", {"Keep": ["(0008,1140)[*].(PatientName)"]}),
    ("instances", "anonymize", {"Keep": ["NoSuchSequence[*].PatientName"]}),
    ("instances", "anonymize", {"Keep": [""]}),
]


def test_bad_requests_like_orthanc(mcluster, orthanc):  # noqa: F811
    """Orthanc's status and error body for each bad request; nothing is written."""
    rest = mcluster.rests[0]
    a = load_both(rest, orthanc, [DATA / "CT_small.dcm"])[0]
    ids = {"studies": a["ParentStudy"], "series": a["ParentSeries"],
           "patients": a["ParentPatient"], "instances": a["ID"]}
    for level, op, body in BAD:
        path = f"/{level}/{ids[level]}/{op}"
        ours, theirs = call(rest, "POST", path, body), call(orthanc, "POST", path, body)
        assert ours[0] == theirs[0], (path, body, ours, theirs)
        assert js(ours) == js(theirs), (path, body, ours, theirs)
    for level in ("studies", "series", "patients", "instances"):
        for op in ("modify", "anonymize"):
            path = f"/{level}/{UNKNOWN_ID}/{op}"
            ours, theirs = call(rest, "POST", path, {}), call(orthanc, "POST", path, {})
            assert ours[0] == theirs[0] == 404 and js(ours) == js(theirs), (path, ours, theirs)
    # nothing was written by any of them
    assert len(call(rest, "GET", "/instances")[1]) == 1
    assert len(call(orthanc, "GET", "/instances")[1]) == 1


def test_async_job_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest, other = mcluster.rests
    files = make_series(tmp_path / "a", 2, study_uid="1.2.826.0.1.3680043.8.498.94", patient="P94")
    answers = load_both(rest, orthanc, files)
    study = answers[0]["ParentStudy"]
    for body in ({"Asynchronous": True}, {"Synchronous": False, "Priority": 5},
                 {"Asynchronous": True, "Replace": {"PatientID": "x"}, "Force": True}):
        a, b = call(rest, "POST", f"/studies/{study}/anonymize" if "Priority" in body
                    else f"/studies/{study}/modify", body), \
            call(orthanc, "POST", f"/studies/{study}/anonymize" if "Priority" in body
                 else f"/studies/{study}/modify", body)
        assert a[0] == b[0] == 200 and set(a[1]) == set(b[1]) == {"ID", "Path"}
        ours = wait_job(other, a[1]["ID"], {"Success", "Failure"})
        theirs = wait_job(orthanc, b[1]["ID"], {"Success", "Failure"})
        assert ours["Type"] == theirs["Type"] == "ResourceModification"
        assert ours["State"] == theirs["State"], (ours, theirs)
        assert ours["ErrorCode"] == theirs["ErrorCode"]
        assert set(ours["Content"]) == set(theirs["Content"]), (ours, theirs)
        assert ours["Priority"] == theirs["Priority"]
        if ours["State"] == "Failure":
            # Orthanc leaves ErrorDetails empty; Tessera says why
            assert "PatientID" in ours["ErrorDetails"]


def copies(rest, level, rid):
    status, body, _ = call(rest, "GET", f"/{level}/{rid}/instances")
    return body if status == 200 else []


def big_study(tmp_path, rest, n, uid):
    files = make_series(tmp_path / "big", n, study_uid=uid, patient="PBIG")
    return upload(rest, files)


def test_job_survives_a_killed_worker(mcluster, tmp_path):
    """A 500-instance study anonymized by one of two jobs processes, killed with
    SIGKILL half-way: the other takes the job over when its lease runs out and
    finishes it; the new study has each instance once, in one anonymized patient."""
    rest, other = mcluster.rests
    mcluster.start_jobs()
    n = 500
    answers = big_study(tmp_path, rest, n, "1.2.826.0.1.3680043.8.498.95")
    study = answers[0]["ParentStudy"]
    status, started, _ = call(rest, "POST", f"/studies/{study}/anonymize", {"Asynchronous": True})
    assert status == 200
    job_id = started["ID"]
    deadline = time.time() + 120
    while time.time() < deadline:
        job = call(other, "GET", f"/jobs/{job_id}")[1]
        if job["State"] == "Running" and 5 <= job["Progress"] <= 60:
            break
        assert job["State"] in {"Pending", "Running"}, job
        time.sleep(0.02)
    else:
        raise AssertionError(f"job never half-way: {job}")
    running = [j for j in mcluster.jobs if f"job={job_id}" in j.read_log()]
    assert len(running) == 1, "one jobs process runs the job"
    running[0].stop(signal.SIGKILL)
    killed_at = job["Progress"]
    job = wait_job(other, job_id, {"Success", "Failure"}, timeout=300)
    assert job["State"] == "Success", job
    assert 0 < killed_at < 100
    survivor = [j for j in mcluster.jobs if j is not running[0]][0]
    assert f"job={job_id}" in survivor.read_log()  # the other process finished it
    new = copies(other, "studies", job["Content"]["ID"])
    assert len(new) == n
    sops = {call(other, "GET", f"/instances/{i['ID']}")[1]["MainDicomTags"]["SOPInstanceUID"]
            for i in new}
    assert len(sops) == n
    # the sources plus exactly one copy of each: nothing stored twice
    assert len(call(other, "GET", "/instances")[1]) == 2 * n
    # one anonymized patient for the whole job, whichever worker made the copy
    assert len(call(other, "GET", "/patients")[1]) == 2


def test_cancel_from_another_rest(mcluster, tmp_path):
    rest, other = mcluster.rests
    n = 150
    answers = big_study(tmp_path, rest, n, "1.2.826.0.1.3680043.8.498.96")
    study = answers[0]["ParentStudy"]
    # ingest held still: the job's first copies wait in its store calls, so the
    # cancel arrives mid-way however fast or loaded the machine is; the copies in
    # flight complete once ingest goes on, then the worker stops
    for ing in mcluster.ingests:
        ing.proc.send_signal(signal.SIGSTOP)
    try:
        status, started, _ = call(rest, "POST", f"/studies/{study}/modify",
                                  {"Replace": {"StudyDescription": "c"}, "Asynchronous": True})
        assert status == 200
        deadline = time.time() + 60
        while time.time() < deadline:
            if call(other, "GET", f"/jobs/{started['ID']}")[1]["State"] == "Running":
                break
            time.sleep(0.02)
        time.sleep(1)  # the worker reads the study and sends its first copies
        assert call(other, "POST", f"/jobs/{started['ID']}/cancel", {})[0] == 200
        # the jobs process's keeper sees the cancel within half a second (the
        # lease renewal) and tells the worker, still waiting on ingest
        time.sleep(1.5)
    finally:
        for ing in mcluster.ingests:
            ing.proc.send_signal(signal.SIGCONT)
    job = wait_job(rest, started["ID"], {"Failure"}, timeout=30)
    assert job["ErrorDescription"] == "Canceled job"
    # the chunk that was at ingest (one batch of up to 64 copies) is stored,
    # then the worker stops without sending the next one
    deadline = time.time() + 30
    while time.time() < deadline:
        if any("job stopped" in line and f"job={started['ID']}" in line
               for j in mcluster.jobs for line in j.read_log().splitlines()):
            break
        time.sleep(0.1)
    time.sleep(1.5)
    total = len(call(rest, "GET", "/instances")[1])
    time.sleep(1.5)
    assert len(call(rest, "GET", "/instances")[1]) == total  # the worker stopped
    assert n < total < 2 * n


def test_generate_uid_like_orthanc(mcluster, orthanc):  # noqa: F811
    rest = mcluster.rests[0]
    seen = set()
    for level in ("patient", "study", "series", "instance"):
        ours = call(rest, "GET", f"/tools/generate-uid?level={level}")
        theirs = call(orthanc, "GET", f"/tools/generate-uid?level={level}")
        assert ours[0] == theirs[0] == 200
        value = ours[1].decode()
        assert value not in seen
        seen.add(value)
        if level == "patient":
            assert str(uuid.UUID(value)) == value
        else:
            assert value.startswith("2.25.") and len(value) <= 64
            assert all(p.isdigit() and (p == "0" or not p.startswith("0"))
                       for p in value.split("."))
    for q in ("?level=bogus", ""):
        ours = call(rest, "GET", f"/tools/generate-uid{q}")
        theirs = call(orthanc, "GET", f"/tools/generate-uid{q}")
        assert ours[0] == theirs[0] == 404


IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
               "InstitutionAddress", "ReferringPhysicianName", "OtherPatientIDs")


def identifying_values(ds, acc):
    """The values of identifying attributes anywhere in a dataset (sequences too)."""
    for el in ds:
        if el.VR == "SQ":
            for item in el.value:
                identifying_values(item, acc)
        elif el.keyword in IDENTIFYING and el.value not in (None, ""):
            for v in (el.value if el.VM > 1 else [el.value]):
                text = str(v)
                # shorter values could match other bytes by chance; "Anonym..." is
                # what the anonymized name starts with anyway
                if len(text) >= 4 and not text.startswith("Anonym"):
                    acc.add(text)
    return acc


def test_anonymized_bytes_hold_no_identifying_value(mcluster):
    """De-identification proof: no original PatientName, PatientID, birth date or
    institution string (from any depth of the source) appears in the bytes of the
    anonymized files, in the source's encoding or in UTF-8."""
    rest = mcluster.rests[0]
    files = sorted(DATA.glob("*.dcm"))
    answers = upload(rest, files)
    checked = 0
    for a, f in zip(answers, files):
        src = pydicom.dcmread(f, force=True)
        # an institution named like the scanner's Manufacturer ("TOSHIBA" in
        # "TOSHIBA_MEC"), which the profile keeps, is not looked for
        maker = str(getattr(src, "Manufacturer", ""))
        values = {v for v in identifying_values(src, set()) if v not in maker}
        status, data, _ = call(rest, "POST", f"/instances/{a['ID']}/anonymize", {})
        assert status == 200, (f.name, data)
        encodings = {"utf-8", "latin-1"} | set(getattr(src, "_character_set", []) or [])
        for v in values:
            for enc in encodings:
                try:
                    needle = v.encode(enc)
                except (LookupError, UnicodeEncodeError):
                    continue
                assert needle not in data, (f.name, v, enc)
            checked += 1
        parse(data)  # still a DICOM file
    assert checked >= 20  # the check saw real values


def two_series_and_another_study(tmp_path):
    a = make_series(tmp_path / "s1", 2, study_uid="1.2.826.0.1.3680043.8.498.97",
                    series_uid="1.2.826.0.1.3680043.8.498.97.1", patient="P97")
    b = make_series(tmp_path / "s2", 2, study_uid="1.2.826.0.1.3680043.8.498.97",
                    series_uid="1.2.826.0.1.3680043.8.498.97.2", patient="P97")
    src = pydicom.dcmread(DATA / "CT_small.dcm")
    other = []
    for i in (1, 2):
        src.PatientID, src.PatientName = "P98", "OTHER^PATIENT"
        src.StudyInstanceUID, src.StudyDescription = "1.2.826.0.1.3680043.8.498.98", "target"
        src.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.98.1"
        src.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.98.1.{i}"
        src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
        p = tmp_path / f"o{i}.dcm"
        src.save_as(p)
        other.append(p)
    return a, b, other


def tags_of_study(server, study, drop=()):
    out = []
    for i in call(server, "GET", f"/studies/{study}/instances")[1]:
        ds = parse(call(server, "GET", f"/instances/{i['ID']}/file")[1])
        out.append(json.dumps(without(flat(ds, nested=False), drop), sort_keys=True))
    return sorted(out)


def test_split_and_merge_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest = mcluster.rests[0]
    mcluster.start_deleter()
    a, b, other = two_series_and_another_study(tmp_path)
    ans = load_both(rest, orthanc, a + b + other)
    study, series2, target = ans[0]["ParentStudy"], ans[2]["ParentSeries"], ans[4]["ParentStudy"]
    # split, keeping the source
    body = {"Series": [series2], "Replace": {"StudyDescription": "split"}, "KeepSource": True}
    ours, theirs = call(rest, "POST", f"/studies/{study}/split", body), \
        call(orthanc, "POST", f"/studies/{study}/split", body)
    assert ours[0] == theirs[0] == 200, (ours, theirs)
    assert set(ours[1]) == set(theirs[1]) == {"Description", "FailedInstancesCount",
                                              "InstancesCount", "TargetStudy", "TargetStudyUID"}
    assert ours[1]["InstancesCount"] == theirs[1]["InstancesCount"] == 2
    new = call(rest, "GET", f"/studies/{ours[1]['TargetStudy']}")[1]
    assert new["MainDicomTags"]["StudyInstanceUID"] == ours[1]["TargetStudyUID"]
    assert new["MainDicomTags"]["StudyDescription"] == "split"
    assert tags_of_study(rest, ours[1]["TargetStudy"]) == \
        tags_of_study(orthanc, theirs[1]["TargetStudy"])
    assert len(call(rest, "GET", f"/studies/{study}/instances")[1]) == 4
    # merge the other patient's study into the split one: the copies take the
    # target's patient and study tags, the source goes (KeepSource false by default)
    tgt_ours, tgt_theirs = ours[1]["TargetStudy"], theirs[1]["TargetStudy"]
    body = {"Resources": [target]}
    ours, theirs = call(rest, "POST", f"/studies/{tgt_ours}/merge", body), \
        call(orthanc, "POST", f"/studies/{tgt_theirs}/merge", body)
    assert ours[0] == theirs[0] == 200, (ours, theirs)
    assert set(ours[1]) == set(theirs[1]) == {"Description", "FailedInstancesCount",
                                              "InstancesCount", "TargetStudy"}
    assert ours[1]["TargetStudy"] == tgt_ours
    # the target's sequences of the patient and study modules are copied too
    # (Orthanc 1.10.1 copies their text values only and drops the sequences)
    drop = {"OtherPatientIDsSequence"}
    assert tags_of_study(rest, tgt_ours, drop) == tags_of_study(orthanc, tgt_theirs, drop)
    merged = call(rest, "GET", f"/studies/{tgt_ours}/instances")[1]
    assert len(merged) == 4
    assert {call(rest, "GET", f"/instances/{i['ID']}/study")[1]["ID"] for i in merged} == {tgt_ours}
    assert call(rest, "GET", f"/studies/{target}")[0] == \
        call(orthanc, "GET", f"/studies/{target}")[0] == 404
    # split without KeepSource moves the series out of the source study
    body = {"Instances": [ans[0]["ID"]]}
    ours, theirs = call(rest, "POST", f"/studies/{study}/split", body), \
        call(orthanc, "POST", f"/studies/{study}/split", body)
    assert ours[0] == theirs[0] == 200
    assert len(call(rest, "GET", f"/studies/{study}/instances")[1]) == \
        len(call(orthanc, "GET", f"/studies/{study}/instances")[1]) == 3


def test_split_and_merge_bad_requests_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest = mcluster.rests[0]
    a, b, other = two_series_and_another_study(tmp_path)
    ans = load_both(rest, orthanc, a + b + other)
    study, target = ans[0]["ParentStudy"], ans[4]["ParentStudy"]
    cases = [
        (f"/studies/{study}/split", {}),
        (f"/studies/{study}/split", {"Series": "x"}),
        (f"/studies/{study}/split", {"Series": [UNKNOWN_ID]}),
        (f"/studies/{study}/split", {"Series": [ans[4]["ParentSeries"]]}),
        (f"/studies/{study}/split", {"Series": [ans[2]["ParentSeries"]],
                                     "Replace": {"Modality": "MR"}}),
        (f"/studies/{study}/split", {"Series": [ans[2]["ParentSeries"]],
                                     "Replace": {"StudyInstanceUID": "1.2"}}),
        (f"/studies/{study}/split", {"Series": [ans[2]["ParentSeries"]], "Remove": ["Modality"]}),
        (f"/studies/{UNKNOWN_ID}/split", {"Series": []}),
        (f"/studies/{target}/merge", {}),
        (f"/studies/{target}/merge", {"Resources": [ans[0]["ParentPatient"]]}),
        (f"/studies/{target}/merge", {"Resources": [target]}),
        (f"/studies/{target}/merge", {"Resources": [ans[4]["ID"]]}),
        (f"/studies/{target}/merge", {"Resources": [UNKNOWN_ID]}),
        (f"/studies/{UNKNOWN_ID}/merge", {"Resources": [study]}),
    ]
    for path, body in cases:
        ours, theirs = call(rest, "POST", path, body), call(orthanc, "POST", path, body)
        assert ours[0] == theirs[0], (path, body, ours, theirs)
        assert js(ours) == js(theirs), (path, body, ours, theirs)
    assert len(call(rest, "GET", "/instances")[1]) == len(a + b + other)


def image_uri(mode, fmt, size=(5, 3)):
    """A small image made with Pillow, as a data URI."""
    import base64
    from PIL import Image
    img = Image.new(mode, size)
    top = 65535 if mode == "I;16" else 255
    for x in range(size[0]):
        for y in range(size[1]):
            v = (x * 37 + y * 91) % top
            img.putpixel((x, y), (v, 255 - v % 256, (v * 3) % 256) if mode == "RGB" else v)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


PDF = ("data:application/pdf;base64,JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK"
       "dHJhaWxlcgo8PC9Sb290IDEgMCBSPj4KJSVFT0YK")
NOW = {"InstanceCreationDate", "InstanceCreationTime", "StudyDate", "StudyTime", "SeriesDate",
       "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime",
       "PatientID"}


def created(server, body):
    status, answer, _ = call(server, "POST", "/tools/create-dicom", body)
    assert status == 200, (body, answer)
    assert set(answer) == {"ID", "ParentPatient", "ParentSeries", "ParentStudy", "Path", "Status"}
    ds = parse(call(server, "GET", f"/instances/{answer['ID']}/file")[1])
    return answer, ds


def test_create_dicom_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest = mcluster.rests[0]
    files = make_series(tmp_path / "p", 1, study_uid="1.2.826.0.1.3680043.8.498.99", patient="P99")
    parent = load_both(rest, orthanc, files)[0]
    bodies = [
        {"Tags": {"PatientName": "Create^Test", "StudyDescription": "created"}},
        {"PatientName": "First^Form", "Modality": "OT"},  # Orthanc's first form: no defaults
        {"Tags": {"PatientName": "Pdf"}, "Content": PDF},
        {"Tags": {"PatientName": "Rgb"}, "Content": image_uri("RGB", "PNG")},
        {"Tags": {"PatientName": "Gray"}, "Content": image_uri("L", "PNG")},
        {"Tags": {"PatientName": "Gray16"}, "Content": image_uri("I;16", "PNG")},
        {"Tags": {"PatientName": "Jpeg"}, "Content": image_uri("RGB", "JPEG", (16, 8))},
        {"Tags": {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.991"}, "Force": True},
        {"Tags": {"SeriesDescription": "under a study"}, "Parent": parent["ParentStudy"]},
        {"Tags": {"InstanceNumber": "7"}, "Parent": parent["ParentSeries"]},
        {"Tags": {"StudyDescription": "under a patient"}, "Parent": parent["ParentPatient"]},
        {"Tags": {"ReferencedStudySequence": [{"ReferencedSOPClassUID": "1.2.3"}]}},
    ]
    for body in bodies:
        (a, ours), (b, theirs) = created(rest, body), created(orthanc, body)
        # a parent's sequences are inherited too (Orthanc 1.10.1 drops them)
        fo = {k: v for k, v in without(flat(ours), NOW).items()
              if not k.startswith("OtherPatientIDsSequence")}
        ft = without(flat(theirs), NOW)
        assert fo == ft, {k: (fo.get(k), ft.get(k)) for k in set(fo) | set(ft)
                          if fo.get(k) != ft.get(k)}
        if "PixelData" in ours:
            assert ours.PixelData == theirs.PixelData  # the same decoded pixels
        if "Parent" in body:
            level = {parent["ParentStudy"]: "ParentStudy", parent["ParentSeries"]: "ParentSeries",
                     parent["ParentPatient"]: "ParentPatient"}[body["Parent"]]
            assert a[level] == b[level] == body["Parent"]
        if "Force" in body:
            assert ours.StudyInstanceUID == body["Tags"]["StudyInstanceUID"]
    # the audit trail records each creation as a store, as an upload
    deadline = time.time() + 20
    while time.time() < deadline:
        rows = mcluster.sql("SELECT action FROM audit_log WHERE request LIKE "
                            "'POST /tools/create-dicom%'")
        if len(rows) >= len(bodies):
            break
        time.sleep(0.1)
    assert [r[0] for r in rows] == ["store"] * len(bodies)


def test_create_dicom_bad_requests_like_orthanc(mcluster, orthanc, tmp_path):  # noqa: F811
    rest = mcluster.rests[0]
    files = make_series(tmp_path / "p", 1, study_uid="1.2.826.0.1.3680043.8.498.990", patient="P990")
    parent = load_both(rest, orthanc, files)[0]
    cases = [
        {"Tags": {"PatientName": "x"}, "Parent": parent["ParentStudy"]},
        {"Tags": {"Modality": "CT"}, "Parent": parent["ParentSeries"]},
        {"Tags": {"SOPInstanceUID": "1.2.3"}},
        {"Tags": {"StudyInstanceUID": "1.2"}},
        {"Tags": {"PixelData": "x"}},
        {"Tags": "x"},
        {"Tags": {"NoSuch": "x"}},
        {"Tags": {"PatientName": 5}},
        {"Tags": {"Modality": "CT"}, "Parent": parent["ID"]},
        {"Tags": {"Modality": "CT"}, "Parent": UNKNOWN_ID},
        {"Tags": {"PatientName": "x"}, "Content": "data:image/gif;base64,R0lGOD"},
        [1],
        b"{bad json",
    ]
    for body in cases:
        ours = call(rest, "POST", "/tools/create-dicom", body)
        theirs = call(orthanc, "POST", "/tools/create-dicom", body)
        assert ours[0] == theirs[0], (body, ours, theirs)
        assert js(ours) == js(theirs), (body, ours, theirs)
    # content that is no data URI, or an image that does not decode: Orthanc's
    # status and error, and Tessera says why
    for content in ("hello", "data:image/png;base64,AAAA", "data:image/jpeg;base64,AAAA"):
        body = {"Tags": {"PatientName": "x"}, "Content": content}
        ours = js(call(rest, "POST", "/tools/create-dicom", body))
        theirs = js(call(orthanc, "POST", "/tools/create-dicom", body))
        assert ours["HttpStatus"] == 400 and ours["OrthancStatus"] == 15 and ours["Details"]
        # Orthanc answers a JPEG that does not decode with 500 (internal error):
        # it is the client's bad input, so Tessera answers 400 as for a bad PNG
        expected = (500, -1) if "jpeg" in content else (400, 15)
        assert (theirs["HttpStatus"], theirs["OrthancStatus"]) == expected
    assert len(call(rest, "GET", "/instances")[1]) == 1  # nothing stored by any of them


def test_source_deleted_halfway_then_resubmitted(mcluster, tmp_path):
    """A source instance deleted while the job runs: the job fails naming it, the
    copies made so far stay (once each); with the instance back, a resubmit
    finishes the job without making any copy twice."""
    rest, other = mcluster.rests
    n = 200
    files = make_series(tmp_path / "d", n, study_uid="1.2.826.0.1.3680043.8.498.88", patient="P88")
    answers = upload(rest, files)
    study = answers[0]["ParentStudy"]
    victim, victim_file = answers[-1]["ID"], files[-1]  # the last one the job reaches
    status, started, _ = call(rest, "POST", f"/studies/{study}/modify",
                              {"Replace": {"StudyDescription": "d"}, "Asynchronous": True})
    assert status == 200
    job_id = started["ID"]
    # deleted as soon as the job runs: the job looks up each chunk's files
    # only once the chunks before it are made and the oldest one stored
    deadline = time.time() + 60
    while time.time() < deadline:
        job = call(other, "GET", f"/jobs/{job_id}")[1]
        if job["State"] == "Running":
            break
        time.sleep(0.01)
    assert call(other, "DELETE", f"/instances/{victim}")[0] == 200
    job = wait_job(other, job_id, {"Success", "Failure"}, timeout=120)
    assert job["State"] == "Failure", job
    assert job["ErrorCode"] == 17 and victim in job["ErrorDetails"], job
    written = len(call(rest, "GET", "/instances")[1]) - (n - 1)
    assert 0 < written < n
    # the instance comes back (same file, same id); the resubmitted job goes on
    upload(rest, [victim_file])
    assert call(rest, "POST", f"/jobs/{job_id}/resubmit", {})[0] == 200
    job = wait_job(other, job_id, {"Success", "Failure"}, timeout=120)
    assert job["State"] == "Success", job
    new = copies(other, "studies", job["Content"]["ID"])
    assert len(new) == n
    assert len(call(rest, "GET", "/instances")[1]) == 2 * n
