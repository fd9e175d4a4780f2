"""`Transcode` in the bodies of /modify and /anonymize (issue 22), beside Orthanc 1.10.1
with its GDCM plugin (the reference of test_transcode.py, whose samples and decoding
helpers this file uses): the same transfer syntax, the same pixels for lossless targets
(decoded independently by gdcmconv), the same answers to bad values.

What Orthanc 1.10.1 does, and Tessera with it:
- POST /instances/{id}/modify transcodes the modified file; a lossy target gives the
  encoder's new SOP Instance UID; an unknown UID is 400 ParameterOutOfRange "Unknown
  transfer syntax: X", a conversion that cannot be made 500 InternalError.
- POST /instances/{id}/anonymize ignores Transcode (even a malformed one).
- Study/series/patient jobs transcode every copy; Content says "Transcode"; a lossy
  encoder's new SOP Instance UID is replaced by the copy's own (references between
  copies hold); a copy that cannot be converted is stored in its own syntax, the job
  succeeds. An unknown UID is 400 BadFileFormat "Unknown transfer syntax UID: X".
- A Transcode that is not a string is 400 BadFileFormat at every level (but an
  instance's anonymization).
"""
import io
import urllib.error

import numpy as np
import pydicom
import pytest

from test_ingest import make_series
from test_jobs import call, js
from test_modify import load_both, mcluster  # noqa: F401  (a fixture)
from test_transcode import (EXPLICIT, IMPLICIT, J2K_LOSSLESS, JPEG_BASELINE, JPEG_SV1,  # noqa: F401
                            decoded, reference, samples, sop, syntax)

pytestmark = pytest.mark.skipif(not __import__("shutil").which("gdcmconv"),
                                reason="gdcmconv missing (apt-get install libgdcm-tools)")


def orthanc_call(reference, method, path, body=None):  # noqa: F811
    """call() to Orthanc, which dies now and then inside a conversion (see
    test_transcode.py): restarted and asked again (its data are on disk)."""
    for _ in range(6):
        try:
            return call(reference, method, path, body)
        except (ConnectionError, urllib.error.URLError):
            reference.stop()
            reference.start()
    pytest.fail(f"Orthanc crashed six times on {method} {path}")


def upload_both(rest, reference, path):  # noqa: F811
    data = path.read_bytes()
    a = call(rest, "POST", "/instances", data)
    b = orthanc_call(reference, "POST", "/instances", data)
    assert a[0] == b[0] == 200 and a[1]["ID"] == b[1]["ID"], (a, b)
    return a[1]


# (sample, target) that Orthanc 1.10.1 with GDCM converts without crashing
INSTANCE_CASES = [("ct", JPEG_SV1), ("ct", J2K_LOSSLESS), ("ct_j2k", EXPLICIT),
                  ("ct_j2k", IMPLICIT), ("mr8", JPEG_BASELINE)]


@pytest.mark.parametrize("source,target", INSTANCE_CASES)
def test_instance_modify_transcode_like_orthanc(mcluster, reference, samples, tmp_path,  # noqa: F811
                                                source, target):
    rest = mcluster.rests[0]
    a = upload_both(rest, reference, samples[source])
    body = {"Transcode": target, "Replace": {"StudyDescription": "transcoded"}}
    ours = call(rest, "POST", f"/instances/{a['ID']}/modify", body)
    theirs = orthanc_call(reference, "POST", f"/instances/{a['ID']}/modify", body)
    assert ours[0] == theirs[0] == 200, (ours[1][:300], theirs[1][:300])
    assert ours[2]["Content-Type"] == "application/dicom"
    assert syntax(ours[1]) == syntax(theirs[1]) == target
    ds = pydicom.dcmread(io.BytesIO(ours[1]), stop_before_pixels=True)
    assert ds.StudyDescription == "transcoded"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    original = samples[source].read_bytes()
    assert sop(ours[1]) != sop(original)  # an instance-level modification: a new instance
    opx, _ = decoded(original, tmp_path)
    tpx, _ = decoded(ours[1], tmp_path)
    rpx, _ = decoded(theirs[1], tmp_path)
    if target == JPEG_BASELINE:
        # lossy at quality 90 in both: close to the original, no bias
        for px in (tpx, rpx):
            d = px.astype(int) - opx.astype(int)
            assert np.abs(d).max() <= 16 and abs(d.mean()) < 1
    else:
        assert np.array_equal(tpx, opx) and np.array_equal(rpx, opx), (source, target)
    # nothing was stored by the call, as in Orthanc
    assert len(call(rest, "GET", "/instances")[1]) == 1


def test_instance_anonymize_ignores_transcode_like_orthanc(mcluster, reference, samples):  # noqa: F811
    rest = mcluster.rests[0]
    a = upload_both(rest, reference, samples["ct"])
    stored = syntax(samples["ct"].read_bytes())
    for value in (JPEG_SV1, "1.2.3", 5):
        ours = call(rest, "POST", f"/instances/{a['ID']}/anonymize", {"Transcode": value})
        theirs = orthanc_call(reference, "POST", f"/instances/{a['ID']}/anonymize",
                              {"Transcode": value})
        assert ours[0] == theirs[0] == 200, (value, ours[1][:300])
        assert syntax(ours[1]) == syntax(theirs[1]) == stored, value


def oe(resp):
    j = js(resp)
    return resp[0], j["OrthancStatus"], j.get("Details", "")


def test_transcode_errors_like_orthanc(mcluster, reference, samples):  # noqa: F811
    rest = mcluster.rests[0]
    a = upload_both(rest, reference, samples["ct"])
    cases = [
        (f"/instances/{a['ID']}/modify", {"Transcode": 5}),           # 400 BadFileFormat
        (f"/instances/{a['ID']}/modify", {"Transcode": "1.2.3"}),     # 400 ParameterOutOfRange
        (f"/studies/{a['ParentStudy']}/modify", {"Transcode": 5}),   # 400 BadFileFormat
        (f"/studies/{a['ParentStudy']}/modify", {"Transcode": "1.2.3"}),
        (f"/series/{a['ParentSeries']}/anonymize", {"Transcode": "1.2.3"}),
        (f"/studies/{a['ParentStudy']}/modify", {"Transcode": "1.2.3", "Asynchronous": True}),
    ]
    for path, body in cases:
        ours, theirs = call(rest, "POST", path, body), orthanc_call(reference, "POST", path, body)
        assert ours[0] == 400 and oe(ours) == oe(theirs), (path, body, js(ours), js(theirs))
    # a conversion that cannot be made (JPEG baseline of 16-bit pixels): 500 InternalError
    path, body = f"/instances/{a['ID']}/modify", {"Transcode": JPEG_BASELINE}
    ours, theirs = call(rest, "POST", path, body), orthanc_call(reference, "POST", path, body)
    assert ours[0] == theirs[0] == 500 and oe(ours)[1] == oe(theirs)[1]
    assert JPEG_BASELINE in oe(ours)[2] and "BitsStored" in oe(ours)[2]
    # nothing was written by any of them
    assert len(call(rest, "GET", "/instances")[1]) == 1
    assert len(call(reference, "GET", "/instances")[1]) == 1


def files_of(server, level, rid):
    insts = call(server, "GET", f"/{level}/{rid}/instances")[1]
    return [orthanc_call(server, "GET", f"/instances/{i['ID']}/file")[1] for i in insts]


@pytest.mark.parametrize("op,target", [("modify", J2K_LOSSLESS), ("anonymize", JPEG_SV1)])
def test_study_job_transcodes_like_orthanc(mcluster, reference, samples, tmp_path,  # noqa: F811
                                           op, target):
    rest, other = mcluster.rests
    files = make_series(tmp_path / "s", 3, study_uid="1.2.826.0.1.3680043.8.498.95", patient="P95")
    for f in files:
        upload_both(rest, reference, f)
    study = call(rest, "GET", "/studies")[1][0]
    body = {"Transcode": target}
    if op == "modify":
        body["Replace"] = {"StudyDescription": "transcoded"}
    ours = call(rest, "POST", f"/studies/{study}/{op}", body)
    theirs = orthanc_call(reference, "POST", f"/studies/{study}/{op}", body)
    assert ours[0] == theirs[0] == 200, (js(ours), js(theirs))
    assert set(ours[1]) == set(theirs[1]) and ours[1]["Transcode"] == theirs[1]["Transcode"] == target
    opx, _ = decoded(files[0].read_bytes(), tmp_path)  # the three copies share CT_small's pixels
    mine, yours = files_of(other, "studies", ours[1]["ID"]), \
        files_of(reference, "studies", theirs[1]["ID"])
    assert len(mine) == len(yours) == 3
    for data in mine + yours:
        assert syntax(data) == target
        px, _ = decoded(data, tmp_path)
        assert np.array_equal(px, opx)


def test_study_job_lossy_and_impossible_like_orthanc(mcluster, reference, samples, tmp_path):  # noqa: F811
    """A lossy target in a job: the copy keeps its own SOP Instance UID (here the
    original's, kept with Keep), not the encoder's new one; a target the pixels cannot
    take (JPEG baseline of 16-bit CT): the copy is stored in its own syntax and the job
    succeeds. Both as Orthanc."""
    rest, other = mcluster.rests
    mr8 = upload_both(rest, reference, samples["mr8"])
    ct = upload_both(rest, reference, samples["ct"])
    for src, expected in ((mr8, JPEG_BASELINE), (ct, syntax(samples["ct"].read_bytes()))):
        body = {"Transcode": JPEG_BASELINE, "Keep": ["SOPInstanceUID"], "Force": True}
        ours = call(rest, "POST", f"/studies/{src['ParentStudy']}/modify", body)
        theirs = orthanc_call(reference, "POST", f"/studies/{src['ParentStudy']}/modify", body)
        assert ours[0] == theirs[0] == 200, (js(ours), js(theirs))
        assert ours[1]["ID"] != src["ParentStudy"]
        (mine,), (yours,) = files_of(other, "studies", ours[1]["ID"]), \
            files_of(reference, "studies", theirs[1]["ID"])
        source_sop = sop(call(rest, "GET", f"/instances/{src['ID']}/file")[1])
        assert syntax(mine) == syntax(yours) == expected
        assert sop(mine) == sop(yours) == source_sop
        # the index agrees with the file (the copy's id is that of its SOP Instance UID)
        copy = call(other, "GET", f"/studies/{ours[1]['ID']}/instances")[1][0]
        assert copy["MainDicomTags"]["SOPInstanceUID"] == source_sop
        assert ours[1]["FailedInstancesCount"] == 0
