"""The web UI (issue 18): /ui/ served by rest, driven in Debian's chromium by
puppeteer-core (tests/integration/browser/ui.js) with real clicks and keys,
against real services: ingest, query (for /tools/find), rest, jobs with Redis,
a deleter, and dcmtk's storescp as the modality a study is sent to.

Screenshots of every page go to $TESSERA_UI_SHOTS (default: the test's tmp_path
under ui-shots/), as artefacts for a reviewer; they are not committed.

Orthanc Explorer is served by Orthanc's own HTTP server under the same HTTP Basic
authentication as the API (its files are refused with 401 like any route): the UI
here is protected the same way, through rest's route table.
"""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
import pytest

from conftest import PYDICOM_FILES, npm_ci
from orthanc import http
from test_dicomweb import BROWSER

from test_jobs import StoreScp, call

USER = ("admin", "s3cret-pass")


def make_study(out_dir, patient_id, name, study_uid, series=2, per_series=3, description="CHEST"):
    """A study of `series` series of `per_series` CT images (CT_small.dcm's pixels)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    files = []
    for s in range(1, series + 1):
        for i in range(1, per_series + 1):
            src.PatientID, src.PatientName = patient_id, name
            src.StudyInstanceUID, src.StudyDescription = study_uid, description
            src.AccessionNumber = "ACC" + patient_id
            src.SeriesInstanceUID = f"{study_uid}.{s}"
            src.SeriesNumber, src.InstanceNumber = s, i
            src.SOPInstanceUID = f"{study_uid}.{s}.{i}"
            src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
            ref = Dataset()  # a sequence, for the tag tree
            ref.ReferencedSOPClassUID = src.SOPClassUID
            ref.ReferencedSOPInstanceUID = f"{study_uid}.{s}.1"
            src.ReferencedImageSequence = [ref]
            p = out_dir / f"{patient_id}-{s}-{i}.dcm"
            src.save_as(p)
            files.append(p)
    return files


@pytest.fixture
def ui(cluster, tmp_path):
    """The services behind the UI; ui.rest is the rest process the browser talks to."""
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    q = cluster.start_query()
    cluster.start_deleter()
    cluster.start_jobs()
    cluster.rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url, TESSERA_QUERY_BUS=q.bus)
    cluster.q = q
    cluster.redis_url = redis.url
    return cluster


@pytest.fixture(scope="session")
def drive():
    """run(scenario, **args): one scenario of browser/ui.js; returns what it saw."""
    assert Path("/usr/bin/chromium").exists(), "chromium is needed (PKGS_TEST)"
    npm_ci(BROWSER)

    def run(scenario, shots, expect_failed=None, **args):
        args["shots"] = str(Path(os.environ.get("TESSERA_UI_SHOTS", shots)) / scenario)
        p = subprocess.run(["node", str(BROWSER / "ui.js"), scenario, json.dumps(args)],
                           capture_output=True, text=True, timeout=180)
        lines = p.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if lines else {"fatal": p.stderr[-2000:]}
        assert p.returncode == 0 and "fatal" not in out, (out, p.stderr[-2000:])
        assert out["errors"] == [], out["errors"]  # no script error
        # no request failed but the previews of a rest without rendering and the
        # look for OHIF of a rest without it
        assert all((f.endswith("/preview") and f[:3] in ("404", "415"))
                   or f == "404 /viewer/app-config.js" for f in out["failed"]
                   if not expect_failed or not re.search(expect_failed, f)), out["failed"]
        return out
    return run


def upload(rest, files):
    for f in files:
        status, body, _ = call(rest, "POST", "/instances", Path(f).read_bytes())
        assert status == 200, body


def lookup_id(rest, uid):
    """The public id of the resource with this DICOM UID (/tools/lookup)."""
    status, got, _ = call(rest, "POST", "/tools/lookup", uid.encode())
    assert status == 200 and got, got
    return got[0]["ID"]


def test_static_files_and_redirects(ui):
    """/ and /ui redirect to /ui/ (relative Location, so a proxy prefix works);
    every file of ui/ is served with its type; unknown and dot paths are 404."""
    rest = ui.rest
    for path in ("/", "/ui"):
        req = urllib.request.Request(rest.url + path)
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(req)
        assert e.value.code == 302 and e.value.headers["Location"] == "ui/"
    root = Path(__file__).resolve().parents[2] / "ui"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) >= 9
    for f in files:
        rel = f.relative_to(root).as_posix()
        status, body, headers = call(rest, "GET", "/ui/" + rel)
        assert status == 200, rel
        raw = body if isinstance(body, bytes) else f.read_bytes()
        assert raw == f.read_bytes(), rel
        assert headers["Content-Type"].split(";")[0] == {
            ".html": "text/html", ".js": "text/javascript", ".css": "text/css"}[f.suffix]
        assert headers["Cache-Control"] == "no-cache"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, body, headers = call(rest, "GET", "/ui/")
    assert status == 200 and b'src="app.js"' in body
    for bad in ("/ui/nope.js", "/ui/.hidden", "/ui/pages/../../etc/passwd"):
        assert call(rest, "GET", bad)[0] == 404, bad
    # a method the UI does not serve
    assert call(rest, "POST", "/ui/app.js", b"")[0] in (404, 405)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def test_search_drill_down_instance_and_viewer(ui, drive, tmp_path):
    rest = ui.rest
    upload(rest, make_study(tmp_path / "a", "UI-P1", "SMITH^ANNA", "1.2.826.0.1.3680043.8.498.71",
                            series=2, per_series=3, description="CHEST CT"))
    upload(rest, make_study(tmp_path / "b", "UI-P2", "JONES^BOB", "1.2.826.0.1.3680043.8.498.72",
                            series=1, per_series=1, description="HEAD"))
    got = drive("browse", tmp_path / "ui-shots", base=rest.url, name="smith")
    assert got["landed"] == "/ui/" and got["status"] == 200
    # the search is case-insensitive and matches a part of the name: one study
    assert len(got["search"]) == 1, got["search"]
    row = got["search"][0]
    assert row[:4] == ["SMITH ANNA", "UI-P1", "2004-01-19", "CHEST CT"] and row[-1] == "2", row
    # drill-down: 2 series of 3 instances, then the instances of series 1
    assert [r[0] for r in got["series"]] == ["1", "2"] and [r[4] for r in got["series"]] == ["3", "3"]
    assert (got["focusAfterDown"], got["focusAfterUp"]) == (2, 1)  # rows of the table, by key
    assert [r[0] for r in got["instances"]] == ["1", "2", "3"]
    assert "1.2.826.0.1.3680043.8.498.71.1.1" in got["instances"][0][1]
    # the instance's tags, its sequences as a tree; the preview: the image when
    # rest renders (200), a placeholder that says why otherwise (404/415)
    assert "0010,0010" in got["tagsText"] and "SMITH^ANNA" in got["tagsText"]
    assert got["sequence"] == "0008,1140ReferencedImageSequence (1 item)", got["sequence"]
    assert "0008,1155" in got["sequenceOpen"] and "1.2.826.0.1.3680043.8.498.71.1.1" in got["sequenceOpen"]
    status = call(rest, "GET", f"/instances/{lookup_id(rest, '1.2.826.0.1.3680043.8.498.71.1.1')}/preview")[0]
    if status == 200:
        assert got["preview"]["id"] == "preview-image" and got["preview"]["w"] > 0
    else:
        assert status in (404, 415)
        assert got["preview"]["id"] == "preview-placeholder"
        assert f"HTTP {status}" in got["preview"]["text"], got["preview"]
    # the viewer drew CT_small's 128x128 pixels with many grey levels, the
    # arrow key moved to image 2, a drag to the right widened the window
    assert got["viewer"]["w"] == 128 and got["viewer"]["h"] == 128 and not got["viewer"]["hidden"]
    assert got["viewer"]["levels"] > 50, got["viewer"]
    assert got["viewerPos"] == "1 / 3" and got["viewerPos2"] == "2 / 3"
    assert float(got["window2"][1]) > float(got["window"][1]), (got["window"], got["window2"])


def test_upload_by_drop_with_broken_files(ui, drive, tmp_path):
    """20 files dropped, 2 of them not DICOM (a text file, a DICOM file cut short):
    18 stored, 2 failed, each with the reason rest gave; dropping 3 of the good
    ones again: 3 already stored."""
    rest = ui.rest
    good = make_study(tmp_path / "up", "UI-UP", "UP^LOAD", "1.2.826.0.1.3680043.8.498.73",
                      series=2, per_series=9)
    text = tmp_path / "up" / "notes.txt"
    text.write_text("this is not a DICOM file\n")
    cut = tmp_path / "up" / "cut.dcm"
    cut.write_bytes(good[0].read_bytes()[:1000])
    files = [str(f) for f in good[:9]] + [str(text)] + [str(f) for f in good[9:]] + [str(cut)]
    got = drive("upload", tmp_path / "ui-shots", expect_failed=r"^400 /instances$", base=rest.url,
                files=files)
    assert got["summary"] == "18 stored, 0 already stored, 2 failed", got
    by_name = {r[0]: r[3] for r in got["rows"]}
    assert len(by_name) == 20
    assert all(by_name[f.name] == "stored" for f in good)
    # what rest answers for each broken file, shown as it is
    for broken in (text, cut):
        status, body, _ = call(rest, "POST", "/instances", broken.read_bytes())
        assert status == 400
        shown = by_name[broken.name]
        assert shown.startswith("failed: HTTP 400"), by_name
        reason = body.get("Details") or body.get("Message")
        assert reason and reason in shown, (shown, body)
    assert got["progress"] == [1] * 20
    assert ui.sql("SELECT count(*) FROM instances")[0][0] == 18
    got = drive("upload", tmp_path / "ui-shots2", base=rest.url, files=files[:3])
    assert got["summary"] == "0 stored, 3 already stored, 0 failed", got


def test_upload_a_folder(ui, drive, tmp_path):
    """A CD's folder chosen with the folder input: every file under it, subfolders
    included, sent; the rows name the files by their path in the folder."""
    rest = ui.rest
    cd = tmp_path / "CD"
    make_study(cd / "DICOM" / "ST1", "UI-CD", "C^D", "1.2.826.0.1.3680043.8.498.93",
               series=1, per_series=3)
    make_study(cd / "DICOM" / "ST2", "UI-CD", "C^D", "1.2.826.0.1.3680043.8.498.94",
               series=1, per_series=2)
    (cd / "README.TXT").write_text("viewer on this CD\n")
    got = drive("uploadFolder", tmp_path / "ui-shots", expect_failed=r"^400 /instances$",
                base=rest.url, folder=str(cd))
    assert got["summary"] == "5 stored, 0 already stored, 1 failed", got
    names = sorted(r[0] for r in got["rows"])
    assert names[0] == "CD/DICOM/ST1/UI-CD-1-1.dcm" and "CD/README.TXT" in names, names
    assert ui.sql("SELECT count(*) FROM instances")[0][0] == 5


def test_drop_a_folder_from_the_disk(ui, drive, tmp_path):
    """A CD's folder and a loose file dragged from the disk onto the drop zone by
    chromium's own drag and drop (CDP Input.dispatchDragEvent with their paths,
    what the desktop hands over): the page gets a directory entry
    (webkitGetAsEntry) and walks it, subfolders included; the rows name each file
    by its path in the dropped folder; the non-DICOM README fails with rest's
    reason and the rest is stored."""
    rest = ui.rest
    cd = tmp_path / "CD"
    make_study(cd / "DICOM" / "ST1", "UI-DROP", "D^ROP", "1.2.826.0.1.3680043.8.498.95",
               series=1, per_series=3)
    make_study(cd / "DICOM" / "ST2" / "SE1", "UI-DROP", "D^ROP", "1.2.826.0.1.3680043.8.498.96",
               series=1, per_series=2)
    (cd / "README.TXT").write_text("viewer on this CD\n")
    loose = make_study(tmp_path / "loose", "UI-DROP", "D^ROP", "1.2.826.0.1.3680043.8.498.97",
                       series=1, per_series=1)[0]
    got = drive("dropFolder", tmp_path / "ui-shots", expect_failed=r"^400 /instances$",
                base=rest.url, paths=[str(cd), str(loose)])
    assert got["summary"] == "6 stored, 0 already stored, 1 failed", got
    rows = {r[0]: r[3] for r in got["rows"]}
    assert sorted(rows) == sorted(
        ["CD/DICOM/ST1/UI-DROP-1-1.dcm", "CD/DICOM/ST1/UI-DROP-1-2.dcm", "CD/DICOM/ST1/UI-DROP-1-3.dcm",
         "CD/DICOM/ST2/SE1/UI-DROP-1-1.dcm", "CD/DICOM/ST2/SE1/UI-DROP-1-2.dcm", "CD/README.TXT",
         loose.name]), rows
    assert rows["CD/README.TXT"].startswith("failed: HTTP 400"), rows
    assert ui.sql("SELECT count(*) FROM instances")[0][0] == 6


def test_delete_with_confirmation(ui, drive, tmp_path):
    rest = ui.rest
    upload(rest, make_study(tmp_path / "d", "UI-DEL", "DEL^ETE", "1.2.826.0.1.3680043.8.498.74",
                            series=1, per_series=2))
    upload(rest, make_study(tmp_path / "k", "UI-DEL", "DEL^ETE", "1.2.826.0.1.3680043.8.498.75",
                            series=1, per_series=1))
    sid = lookup_id(rest, "1.2.826.0.1.3680043.8.498.74")
    got = drive("delete", tmp_path / "ui-shots", base=rest.url, study=sid)
    assert "cannot be undone" in got["question"]
    assert got["afterEscape"] == "#/study/" + sid  # Escape deleted nothing
    assert got["hash"].startswith("#/patient/") and "Deleted study" in got["status"]
    assert call(rest, "GET", "/studies/" + sid)[0] == 404
    # the other study of the patient stays
    assert call(rest, "GET", "/studies/" + lookup_id(rest, "1.2.826.0.1.3680043.8.498.75"))[0] == 200


def test_send_to_modality_job_reaches_success(ui, drive, tmp_path):
    rest = ui.rest
    files = make_study(tmp_path / "s", "UI-SEND", "SEND^IT", "1.2.826.0.1.3680043.8.498.76",
                       series=2, per_series=5)
    upload(rest, files)
    scp = StoreScp(tmp_path / "scp").start()
    try:
        assert call(rest, "PUT", "/modalities/ws1", ["STORESCP", "127.0.0.1", scp.port])[0] == 200
        got = drive("send", tmp_path / "ui-shots", base=rest.url,
                    study=lookup_id(rest, "1.2.826.0.1.3680043.8.498.76"), modality="ws1")
        assert any("Success 100%" in s for s in got["seen"]), got["seen"]
        assert len(scp.received()) == 10
        row = got["jobs"][0]
        assert row[1] == "DicomModalityStore" and row[2] == "Success" and row[3] == "100%", got["jobs"]
    finally:
        scp.stop()


def test_send_to_a_modality_that_is_down_shows_the_error(ui, drive, tmp_path):
    rest = ui.rest
    upload(rest, make_study(tmp_path / "s", "UI-DOWN", "DOWN^IT", "1.2.826.0.1.3680043.8.498.77",
                            series=1, per_series=1))
    from conftest import free_port
    port = free_port()
    assert call(rest, "PUT", "/modalities/gone", ["NOBODY", "127.0.0.1", port])[0] == 200
    got = drive("send", tmp_path / "ui-shots", base=rest.url,
                study=lookup_id(rest, "1.2.826.0.1.3680043.8.498.77"), modality="gone")
    assert any("Failure" in s for s in got["seen"]), got["seen"]
    row = got["jobs"][0]
    assert row[2] == "Failure" and row[5], row  # the job's error is on the jobs page
    assert "resubmit" in row[6]
    # the modality comes up; "resubmit" on the jobs page sends it again
    scp = StoreScp(tmp_path / "scp", aet="NOBODY", port=port).start()
    try:
        got = drive("jobcontrol", tmp_path / "ui-shots", base=rest.url,
                    steps=[["resubmit", "^Success$"]])
        assert got["row"][3] == "100%" and got["row"][5] == "", got
        assert len(scp.received()) == 1
    finally:
        scp.stop()


def test_jobs_page_pause_resume_cancel(ui, drive, tmp_path):
    """A slow send (storescp sleeps 1 s after each instance): paused, resumed and
    cancelled from the jobs page's buttons."""
    rest = ui.rest
    upload(rest, make_study(tmp_path / "s", "UI-SLOW", "SLOW^IT", "1.2.826.0.1.3680043.8.498.92",
                            series=1, per_series=30))
    scp = StoreScp(tmp_path / "scp", sleep_after=1).start()
    try:
        assert call(rest, "PUT", "/modalities/slow", ["STORESCP", "127.0.0.1", scp.port])[0] == 200
        status, job, _ = call(rest, "POST", "/modalities/slow/store",
                              {"Resources": [lookup_id(rest, "1.2.826.0.1.3680043.8.498.92")],
                               "Asynchronous": True})
        assert status == 200
        got = drive("jobcontrol", tmp_path / "ui-shots", base=rest.url,
                    steps=[["pause", "^Paused$"], ["resume", "^(Pending|Running)$"],
                           ["cancel", "^Failure$"]])
        assert [s[0] for s in got["steps"]] == ["pause", "resume", "cancel"]
        status, j, _ = call(rest, "GET", "/jobs/" + job["ID"])
        assert j["State"] == "Failure" and j["Progress"] < 100, j
        assert got["row"][0] == job["ID"][:8] and "resubmit" in got["row"][6]
    finally:
        scp.stop()


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)])
def test_paging_layout_and_zip(ui, drive, tmp_path, viewport):
    """30 studies: 25 on page 1, 5 on page 2, back again; no page is wider than a
    1280x800 or a 390x844 screen; the study's ZIP link gives a ZIP."""
    rest = ui.rest
    for k in range(30):
        upload(rest, make_study(tmp_path / f"p{k}", f"UI-PG{k:02d}", f"PAGE^P{k:02d}",
                                f"1.2.826.0.1.3680043.8.498.8{k:02d}", series=1, per_series=1))
    w, h = viewport
    got = drive("paging", tmp_path / f"ui-shots-{w}", base=rest.url,
                viewport={"width": w, "height": h})
    assert got["page1"] == 25 and got["count1"] == "Studies 1–25 (more on the next page)"
    assert got["page2"] == 5 and got["count2"] == "Studies 26–30" and got["nextDisabled"]
    assert got["back"] == 25
    assert got["overflow"] == [0] * 5, got["overflow"]
    assert got["unlabelled"] == [], got["unlabelled"]  # search, study, upload, jobs, system
    assert got["zipHref"].startswith("/studies/") and got["zipHref"].endswith("/archive")
    magic, size = got["zipMagic"].split()
    assert magic == "PK" and int(size) > 39140, got["zipMagic"]
    print(f"viewport {w}x{h}: opening /ui/ to the first results: {got['firstResultsMs']} ms")


def test_ui_dir_serves_the_files_on_disk(ui, tmp_path):
    """TESSERA_UI_DIR: rest serves that folder instead of its compiled-in copy."""
    site = tmp_path / "site"
    (site / "pages").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>dev copy</title>")
    (site / "pages" / "x.js").write_text("export const x = 1;\n")
    rest = ui.start_rest(ui.ingests[0], TESSERA_UI_DIR=site)
    status, body, headers = call(rest, "GET", "/ui/")
    assert status == 200 and b"dev copy" in body and headers["Content-Type"].startswith("text/html")
    status, body, headers = call(rest, "GET", "/ui/pages/x.js")
    assert status == 200 and body == b"export const x = 1;\n"
    assert headers["Content-Type"].startswith("text/javascript")
    assert call(rest, "GET", "/ui/app.js")[0] == 404  # not the compiled-in one
    assert call(rest, "GET", "/ui/pages")[0] == 404  # a folder is no file


@pytest.fixture(scope="session")
def ohif_dir():
    """scripts/fetch-viewer into the build directory (the pinned @ohif/app, its
    SHA-512 checked; the tarball cached in ~/.cache/tessera)."""
    from conftest import BUILD
    out = BUILD / "viewer"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([str(root / "scripts/fetch-viewer"), str(out)], check=True, timeout=900)
    return out


def test_ohif_opens_a_ct_series(ui, drive, tmp_path, ohif_dir):
    """rest with TESSERA_VIEWER_DIR: the study row's OHIF link opens OHIF on the
    study through Tessera's /dicom-web/, and its viewport shows the pixels of the
    100-image CT."""
    # TESSERA_UI_OHIF_SLICES=500: the figure of the README (click to first image)
    slices = int(os.environ.get("TESSERA_UI_OHIF_SLICES", "100"))
    rest = ui.start_rest(ui.ingests[0], TESSERA_VIEWER_DIR=ohif_dir,
                         TESSERA_REDIS_URL=ui.redis_url, TESSERA_QUERY_BUS=ui.q.bus)
    upload(rest, make_study(tmp_path / "o", "UI-OHIF", "OHIF^CT", "1.2.826.0.1.3680043.8.498.90",
                            series=1, per_series=slices))
    # a path that names no file is OHIF's index.html; files keep their types
    status, body, headers = call(rest, "GET", "/viewer/viewer")
    assert status == 200 and b'window.PUBLIC_URL="/viewer/"' in body
    status, _, headers = call(rest, "GET", "/viewer/app-config.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert call(rest, "GET", "/viewer/nope.js")[0] == 404
    assert_gzip_answers(rest, ohif_dir, "1.2.826.0.1.3680043.8.498.90", slices)
    # three times: a first visit, then twice again from the search page with
    # the browser's cache as the visit before left it (the hashed bundles
    # cached for good, the rest revalidated: 304s); chromium keeps V8's
    # compiled code of the bundles from the second on
    log_before = len(rest.read_log())
    got = drive("ohif", tmp_path / "ui-shots", base=rest.url, name="OHIF", warm=True, hot=True)
    for run in (got, got["warm"], got["hot"]):
        assert run["href"] == "/viewer/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.8.498.90"
        assert run["levels"] > 20, run
        # the image was seen drawn in the page (cornerstone's render event)
        assert run["inPage"] and run["firstImageMs"] <= run["screenshotMs"], run
    # rest's log: in the three visits each of OHIF's files went out once (200);
    # the cached visits got a 304 for the entry points and nothing else (the
    # files with a hash in their name, workers' too, came from the cache)
    log = re.findall(r"uri=(/viewer/\S*) status=(\d+)", rest.read_log()[log_before:])
    sent = [u for u, s in log if s == "200"]
    assert len(sent) == len(set(sent)) and any(u.startswith("/viewer/app.bundle.") for u in sent), log
    assert len([u for u, s in log if s == "200" and re.search(r"\.[0-9a-f]{16}\.", u)]) > 20, log
    # (the UI's pages also ask for app-config.js: is OHIF there?)
    for entry in ("/viewer/viewer", "/viewer/app-config.js"):
        got_entry = [s for u, s in log if u.startswith(entry)]
        assert got_entry[0] == "200" and got_entry[1:] and set(got_entry[1:]) == {"304"}, (entry, log)
    for what, run in (("first visit", got), ("cached", got["warm"]), ("cached, third", got["hot"])):
        # Tessera's part of the way to the first image: the answers (request sent
        # to last byte) to the QIDOs, the metadata and the first image's frame
        # (instance 1, what the viewport shows first), as the page timed them
        path = [t for t in run["timing"] if "/frames/" not in t[0] or t[0].endswith(".1/frames/1")]
        frames = [i for i, t in enumerate(path) if "/frames/" in t[0]]
        path = path[:frames[0] + 1] if frames else path
        served = sum(t[4] - t[2] for t in path)
        print(f"OHIF, {slices} images, {what}: click to first image {run['firstImageMs']} ms "
              f"(seen by screenshot at {run['screenshotMs']} ms), of which Tessera answering "
              f"{served} ms ({len(path)} requests); {len(run['network'])} requests over the "
              f"network; first request of each kind and last answers (ms): {run['marks']}; "
              f"requests (path, start, sent, first byte, last byte): {path}")


@pytest.mark.parametrize("syntax,convert", [
    ("jpeg-ls", ["dcmcjpls"]), ("jpeg-lossless", ["dcmcjpeg", "+e1"]), ("rle", ["dcmcrle"]),
    ("jpeg2000", ["gdcmconv", "--j2k"])])
def test_ohif_decodes_compressed_frames(ui, drive, tmp_path, ohif_dir, syntax, convert):
    """OHIF's decoders run from the minified bundles scripts/fetch-viewer makes
    (their WebAssembly glue is among what esbuild rewrote): a series stored in a
    compressed transfer syntax, whose frames Tessera sends as stored
    (transfer-syntax=*), is decoded and drawn in the viewport."""
    rest = ui.start_rest(ui.ingests[0], TESSERA_VIEWER_DIR=ohif_dir,
                         TESSERA_REDIS_URL=ui.redis_url, TESSERA_QUERY_BUS=ui.q.bus)
    uid = "1.2.826.0.1.3680043.8.498.95"
    files = make_study(tmp_path / "c", "UI-C", "COMPRESSED^CT", uid, series=1, per_series=2)
    for f in files:
        subprocess.run(convert + [str(f), str(f) + ".x"], check=True, capture_output=True)
        os.replace(str(f) + ".x", f)
    upload(rest, files)
    status, _, headers = http(rest.url, "GET", f"/dicom-web/studies/{uid}/series/{uid}.1/instances/"
                              f"{uid}.1.1/frames/1",
                              headers={"Accept": "multipart/related; type=application/octet-stream;"
                                                 " transfer-syntax=*"})
    assert status == 200 and "application/octet-stream" not in headers["Content-Type"], headers
    got = drive("ohif", tmp_path / "ui-shots", base=rest.url, name="COMPRESSED")
    assert got["inPage"] and got["levels"] > 20, got


@pytest.mark.skipif(not os.environ.get("TESSERA_UI_OHIF_BASE"),
                    reason="a benchmark: TESSERA_UI_OHIF_BASE=<a build of another commit, "
                           "with its scripts/fetch-viewer output in viewer/>")
def test_ohif_ab(ui, drive, tmp_path, ohif_dir):
    """Click to first image, another build's rest and viewer folder (old) against
    this one's (new), in the same cluster, rounds interleaved (old, new, new,
    old, ...); each round a new browser: a first visit, then two cached ones.
    Prints every figure, the medians and the load average."""
    from conftest import Rest, free_port
    base = Path(os.environ["TESSERA_UI_OHIF_BASE"])
    slices = int(os.environ.get("TESSERA_UI_OHIF_SLICES", "500"))
    rounds = int(os.environ.get("TESSERA_UI_OHIF_ROUNDS", "6"))
    new = ui.start_rest(ui.ingests[0], TESSERA_VIEWER_DIR=ohif_dir,
                        TESSERA_REDIS_URL=ui.redis_url, TESSERA_QUERY_BUS=ui.q.bus)
    env = dict(new.env, TESSERA_HTTP_PORT=str(free_port()), TESSERA_VIEWER_DIR=str(base / "viewer"))
    old = Rest(env, tmp_path / "rest-old.log")
    old.binary = str(base / "services/rest/tessera-rest")
    ui.rests.append(old)
    old.start()
    upload(new, make_study(tmp_path / "o", "UI-OHIF", "OHIF^CT", "1.2.826.0.1.3680043.8.498.90",
                           series=1, per_series=slices))
    times = {"old": [], "new": []}
    loads = [os.getloadavg()[0]]
    for r in range(rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            got = drive("ohif", tmp_path / "ui-shots", base=(old if name == "old" else new).url,
                        name="OHIF", warm=True, hot=True)
            run = [got["firstImageMs"], got["warm"]["firstImageMs"], got["hot"]["firstImageMs"]]
            assert all(x > 0 for x in run)
            times[name].append(run)
            print(f"round {r} {name}: first visit, cached, cached again (ms): {run}", flush=True)
        loads.append(os.getloadavg()[0])
    import statistics
    for name, runs in times.items():
        med = [statistics.median(v[i] for v in runs) for i in range(3)]
        print(f"OHIF A/B, {slices} images, {name}: medians of {rounds} (first visit, cached, "
              f"cached again): {med} ms")
    print(f"load average (1 min) over the run: {min(loads):.1f}-{max(loads):.1f}")


def get_raw(rest, path, **headers):
    """(status, body as sent, headers): urllib leaves a gzip body compressed."""
    req = urllib.request.Request(rest.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def assert_gzip_answers(rest, ohif_dir, study_uid, slices):
    """scripts/fetch-viewer's gzip copies go to a client that takes gzip, the
    file itself to one that does not (or refuses gzip with q=0); a series'
    metadata is compressed on the fly; both say Vary: Accept-Encoding."""
    import gzip as gz
    bundle = next(ohif_dir.glob("app.bundle.*.js"))
    plain = bundle.read_bytes()
    status, body, headers = get_raw(rest, "/viewer/" + bundle.name, **{"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gz.decompress(body) == plain and len(body) < len(plain) / 3, (len(body), len(plain))
    assert headers["Content-Type"].startswith("text/javascript")
    # the bundle's name carries its hash: cached for good; an ETag of its own
    # per coding, and a 304 for it (weak or in a list too), 200 for another
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = headers["ETag"]
    assert re.fullmatch(r'"[^"]+-gz"', etag), etag
    status, _, identity = get_raw(rest, "/viewer/" + bundle.name)
    assert identity["ETag"] != etag and identity["ETag"].startswith('"')
    for match in (etag, "W/" + etag, '"nope", ' + etag, "*"):
        status, body, h = get_raw(rest, "/viewer/" + bundle.name,
                                  **{"Accept-Encoding": "gzip", "If-None-Match": match})
        assert status == 304 and body == b"" and h["ETag"] == etag, (match, status)
    status, body, _ = get_raw(rest, "/viewer/" + bundle.name,
                              **{"Accept-Encoding": "gzip", "If-None-Match": identity["ETag"]})
    assert status == 200 and gz.decompress(body) == plain
    # entry points revalidated each time, other files without a hash kept a
    # day; 304 for them too while unchanged
    for path, cache in (("/viewer/viewer", "no-cache"), ("/viewer/app-config.js", "no-cache"),
                        ("/viewer/manifest.json", "max-age=86400")):
        status, _, h = get_raw(rest, path)
        assert status == 200 and h["Cache-Control"] == cache and h["ETag"], path
        status, body, h2 = get_raw(rest, path, **{"If-None-Match": h["ETag"]})
        assert status == 304 and body == b"" and h2["ETag"] == h["ETag"], path
    # the preload hints of fetch-viewer name files that are there
    index = (ohif_dir / "index.html").read_text()
    hints = re.findall(r'<link rel="preload" as="(script|style|font)"[^>]* href="/viewer/([^"]+)"', index)
    assert len(hints) > 20 and all((ohif_dir / name).is_file() for _, name in hints), hints
    for refusal in ({}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0, br"}):
        status, body, headers = get_raw(rest, "/viewer/" + bundle.name, **refusal)
        assert status == 200 and body == plain and "Content-Encoding" not in headers, refusal
    # OHIF's routes are its index.html, compressed too
    status, body, headers = get_raw(rest, "/viewer/viewer", **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and b"window.PUBLIC_URL" in gz.decompress(body)
    series = f"/dicom-web/studies/{study_uid}/series/{study_uid}.1/metadata"
    status, plain, headers = get_raw(rest, series)
    assert status == 200 and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"
    status, body, headers = get_raw(rest, series, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/dicom+json")
    assert gz.decompress(body) == plain and len(json.loads(plain)) == slices
    print(f"metadata of {slices} instances: {len(plain)} bytes, {len(body)} gzipped")


def haproxy(tmp_path, rests):
    """HAProxy in HTTP mode, round robin over the rest processes, no stickiness:
    each request may land on another replica."""
    from conftest import free_port
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    servers = "\n".join(f"    server rest-{i} 127.0.0.1:{r.port}" for i, r in enumerate(rests))
    conf.write_text(f"""global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend http
    bind 127.0.0.1:{port}
    default_backend rest
backend rest
    balance roundrobin
{servers}
""")
    p = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/ui/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401: it answers
        except OSError:
            time.sleep(0.05)
    return p, url


def test_behind_haproxy_two_replicas_with_auth(ui, drive, tmp_path):
    """Two rest replicas with Basic auth behind HAProxy's round robin: signed in
    once, the UI searches, sends a study and follows its job to Success; the
    polling of the job went to both replicas (no sticky session needed)."""
    ing = ui.ingests[0]
    env = dict(TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=":".join(USER),
               TESSERA_REDIS_URL=ui.redis_url, TESSERA_QUERY_BUS=ui.q.bus)
    rests = [ui.start_rest(ing, **env), ui.start_rest(ing, **env)]
    upload(ui.rest, make_study(tmp_path / "s", "UI-HA", "HA^PROXY", "1.2.826.0.1.3680043.8.498.91",
                               series=2, per_series=10))
    scp = StoreScp(tmp_path / "scp").start()
    proxy, url = haproxy(tmp_path, rests)
    try:
        assert call(ui.rest, "PUT", "/modalities/ws1", ["STORESCP", "127.0.0.1", scp.port])[0] == 200
        got = drive("auth", tmp_path / "ui-shots", expect_failed=r"^401 /ui/$", base=url,
                    user=USER[0], password=USER[1])
        assert len(got["rows"]) == 1 and got["rows"][0][1] == "UI-HA", got
        got = drive("send", tmp_path / "ui-shots", base=url, user=USER[0], password=USER[1],
                    study=lookup_id(ui.rest, "1.2.826.0.1.3680043.8.498.91"), modality="ws1")
        assert any("Success 100%" in s for s in got["seen"]), got["seen"]
        assert len(scp.received()) == 20
        polled = [r.read_log().count("uri=/jobs/") for r in rests]
        assert all(n > 0 for n in polled), polled
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        scp.stop()


def test_system_page(ui, drive, tmp_path):
    rest = ui.rest
    upload(rest, make_study(tmp_path / "s", "UI-SYS", "SYS^TEM", "1.2.826.0.1.3680043.8.498.78",
                            series=1, per_series=2))
    got = drive("system", tmp_path / "ui-shots", base=rest.url)
    assert "CountInstances\n2" in got["text"] or "CountInstances\t2" in got["text"], got["text"]
    assert "TesseraVersion" in got["text"] and "answered in" in got["text"]


def test_system_page_lists_every_service_process(ui, drive, tmp_path):
    """Each service process writes a heartbeat in the database (lib/io/heartbeat.h):
    with two processes of each of ingest, query, rest, jobs and deleter,
    GET /tessera/services and the system page list all ten as up with their pid
    and version; one killed with -9 shows as down once it has missed three beats
    (TESSERA_HEARTBEAT_INTERVAL=1 for the second of each), one stopped with
    SIGTERM as stopped at once. Orthanc is a single process: it has no such list."""
    fast = dict(TESSERA_HEARTBEAT_INTERVAL=1)
    second = {
        "ingest": ui.start_ingest(**fast),
        "query": ui.start_query(**fast),
        "deleter": ui.start_deleter(**fast),
        "jobs": ui.start_jobs(**fast),
        "rest": ui.start_rest(ui.ingests[0], TESSERA_REDIS_URL=ui.redis_url, **fast),
    }
    first = {"ingest": ui.ingests[0], "query": ui.q, "deleter": ui.deleters[0],
             "jobs": ui.jobs[0], "rest": ui.rest}
    pids = {name: {first[name].proc.pid, second[name].proc.pid} for name in first}
    status, listed, _ = call(ui.rest, "GET", "/tessera/services")
    assert status == 200, listed
    # the cluster's database may hold rows of the fixture's earlier processes
    mine = [s for s in listed if s["Pid"] in set().union(*pids.values())]
    assert sorted((s["Service"], s["Pid"]) for s in mine) == sorted(
        (name, pid) for name, ps in pids.items() for pid in ps), listed
    for s in mine:
        assert s["State"] == "up" and s["Healthy"] is True and s["Version"] == "0.1.0", s
        assert s["SecondsSinceLastSeen"] < 15 and s["Host"], s
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["LastSeen"]), s
        assert s["IntervalSeconds"] == (1 if s["Pid"] == second[s["Service"]].proc.pid else 10)
    # any replica answers the same list: the second rest sees the first's processes
    status, other, _ = call(second["rest"], "GET", "/tessera/services")
    assert {(s["Service"], s["Pid"]) for s in other} >= {(s["Service"], s["Pid"]) for s in mine}

    got = drive("services", tmp_path / "ui-shots", base=ui.rest.url)
    shown = {(r[0], int(r[3])): r for r in got["rows"] if r[3].isdigit()}
    for name, ps in pids.items():
        for pid in ps:
            assert shown[(name, pid)][1] == "up" and shown[(name, pid)][4] == "0.1.0", got["rows"]
            assert shown[(name, pid)][6].endswith("s ago"), shown[(name, pid)]

    # kill -9: no clean stop, the row stays as it was and ages; SIGTERM: stopped
    victim = second["ingest"]
    victim.stop(signal.SIGKILL)
    assert second["query"].stop() == 0
    got = drive("services", tmp_path / "ui-shots-down", base=ui.rest.url, downPid=victim.proc.pid)
    after = {(r[0], int(r[3])): r[1] for r in got["rowsAfter"] if r[3].isdigit()}
    assert after[("ingest", victim.proc.pid)] == "down"
    assert after[("query", second["query"].proc.pid)] == "stopped"
    assert after[("ingest", first["ingest"].proc.pid)] == "up"
    assert all(after[(n, p)] == "up" for n in ("rest", "jobs", "deleter") for p in pids[n])
    status, listed, _ = call(ui.rest, "GET", "/tessera/services")
    dead = next(s for s in listed if s["Pid"] == victim.proc.pid)
    assert dead["State"] == "down" and dead["SecondsSinceLastSeen"] >= 3, dead


def test_basic_auth_protects_the_ui_like_the_api(ui, drive, tmp_path):
    """Authentication on: /ui/ and its files are 401 without credentials, exactly
    like /studies; the browser's sign-in (puppeteer's page.authenticate answers
    the Basic challenge) opens a working UI."""
    ing = ui.ingests[0]
    rest = ui.start_rest(ing, TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=":".join(USER),
                         TESSERA_REDIS_URL=ui.redis_url, TESSERA_QUERY_BUS=ui.q.bus)
    upload(ui.rest, make_study(tmp_path / "s", "UI-AUTH", "AUTH^ME", "1.2.826.0.1.3680043.8.498.79",
                               series=1, per_series=1))
    for path in ("/ui/", "/ui/app.js", "/ui/pages/search.js", "/", "/studies"):
        status, _, headers = call(rest, "GET", path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), path
    got = drive("auth", tmp_path / "ui-shots", expect_failed=r"^401 /ui/$", base=rest.url, user=USER[0], password=USER[1])
    assert "ERR_INVALID_AUTH_CREDENTIALS" in got["without"] and got["withStatus"] == 200
    assert len(got["rows"]) == 1 and got["rows"][0][1] == "UI-AUTH", got
