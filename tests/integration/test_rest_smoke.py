"""The REST service end to end: upload through ingest's bus, read back,
navigate, errors. (Answers compared field by field with a real Orthanc live
in test_rest.py.)"""
import json
import urllib.error
import urllib.request

import pytest

from conftest import PYDICOM_FILES, storescu


def http(rest, method, path, body=None, headers=None):
    req = urllib.request.Request(rest.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get_json(rest, path):
    status, body, _ = http(rest, "GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def test_upload_read_navigate(cluster):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    status, body, _ = http(rest, "POST", "/instances", data)
    assert status == 200, body
    up = json.loads(body)
    assert up["Status"] == "Success" and up["Path"] == "/instances/" + up["ID"]
    status, body, _ = http(rest, "POST", "/instances", data)
    assert json.loads(body)["Status"] == "AlreadyStored"

    assert get_json(rest, "/instances") == [up["ID"]]
    inst = get_json(rest, "/instances/" + up["ID"])
    assert inst["Type"] == "Instance" and inst["ParentSeries"] == up["ParentSeries"]
    assert inst["FileSize"] == len(data) and inst["IndexInSeries"] == 1
    study = get_json(rest, "/studies/" + up["ParentStudy"])
    assert study["ParentPatient"] == up["ParentPatient"] and study["Series"] == [up["ParentSeries"]]
    assert study["PatientMainDicomTags"]["PatientID"]
    assert [s["ID"] for s in get_json(rest, f"/studies/{up['ParentStudy']}/series")] == [
        up["ParentSeries"]]
    assert get_json(rest, f"/instances/{up['ID']}/patient")["ID"] == up["ParentPatient"]
    assert get_json(rest, f"/instances/{up['ID']}/series")["ID"] == up["ParentSeries"]
    assert [i["ID"] for i in get_json(rest, f"/patients/{up['ParentPatient']}/instances")] == [
        up["ID"]]

    status, body, headers = http(rest, "GET", f"/instances/{up['ID']}/file")
    assert status == 200 and body == data and headers["Content-Type"] == "application/dicom"
    tags = get_json(rest, f"/instances/{up['ID']}/tags")
    assert tags["0010,0010"]["Name"] == "PatientName"
    simple = get_json(rest, f"/instances/{up['ID']}/simplified-tags")
    assert simple["SOPInstanceUID"] == inst["MainDicomTags"]["SOPInstanceUID"]
    assert get_json(rest, f"/instances/{up['ID']}/tags?simplify") == simple

    stats = get_json(rest, "/statistics")
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"],
            stats["CountInstances"]) == (1, 1, 1, 1)
    assert stats["TotalDiskSize"] == str(len(data))
    changes = get_json(rest, "/changes")
    assert [c["ChangeType"] for c in changes["Changes"]] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient"]
    assert changes["Done"] is True and changes["Last"] == changes["Changes"][-1]["Seq"]
    st = get_json(rest, f"/studies/{up['ParentStudy']}/statistics")
    assert (st["CountSeries"], st["CountInstances"], st["DiskSize"]) == (1, 1, str(len(data)))
    assert "CountStudies" not in st
    assert get_json(rest, f"/patients/{up['ParentPatient']}/statistics")["CountStudies"] == 1
    import pydicom
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm", stop_before_pixels=True)
    status, body, _ = http(rest, "POST", "/tools/lookup", ds.StudyInstanceUID.encode())
    assert status == 200 and json.loads(body) == [
        {"ID": up["ParentStudy"], "Path": "/studies/" + up["ParentStudy"], "Type": "Study"}]
    system = get_json(rest, "/system")
    assert system["CheckRevisions"] is True and system["DicomAet"] == "TESSERA"


def test_lists_expand_since_limit(cluster, tmp_path):
    from test_ingest import make_series
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    rc, out = storescu(ing, make_series(tmp_path, 5))
    assert rc == 0, out
    ids = get_json(rest, "/instances")
    assert len(ids) == 5
    assert get_json(rest, "/instances?since=1&limit=2") == ids[1:3]
    expanded = get_json(rest, "/instances?expand")
    assert [i["ID"] for i in expanded] == ids
    assert sorted(i["IndexInSeries"] for i in expanded) == [1, 2, 3, 4, 5]
    status, body, _ = http(rest, "GET", "/instances?limit=abc")
    assert status == 400


def test_errors_look_like_orthancs(cluster):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    unknown = "0" * 8 + "-00000000" * 4
    # as Orthanc: an unknown resource is an empty 404, its sub-routes a JSON one
    assert http(rest, "GET", "/studies/" + unknown)[:2] == (404, b"")
    status, body, _ = http(rest, "GET", f"/studies/{unknown}/series")
    err = json.loads(body)
    assert err["HttpStatus"] == 404 and err["OrthancError"] == "Unknown resource"
    assert err["Method"] == "GET" and err["Uri"] == f"/studies/{unknown}/series"
    status, body, _ = http(rest, "GET", "/studies/../../etc/passwd")
    assert status == 404 and json.loads(body)["Uri"] == "/etc/passwd"
    status, _, headers = http(rest, "DELETE", "/system")
    assert status == 405 and headers["Allow"] == "GET"
    status, body, _ = http(rest, "POST", "/instances", b"not dicom at all" * 10)
    assert status == 400 and json.loads(body)["OrthancError"] == "Bad file format"
    status, body, _ = http(rest, "POST", "/instances", b"")
    assert status == 400
    assert cluster.sql("SELECT count(*) FROM resources")[0][0] == 0
    assert cluster.stored_files() == [] and cluster.temp_files() == []


def test_upload_over_the_size_limit_is_refused(cluster):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_MAX_INSTANCE_SIZE=20000)
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    assert len(data) > 20000
    status, body, _ = http(rest, "POST", "/instances", data)
    assert status == 413, body
    assert cluster.sql("SELECT count(*) FROM resources")[0][0] == 0


def test_zip_upload(cluster, tmp_path):
    import io
    import zipfile
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(PYDICOM_FILES / "CT_small.dcm", "a/ct.dcm")
        z.write(PYDICOM_FILES / "MR_small.dcm", "b/mr.dcm")
        z.writestr("readme.txt", "not dicom")
    status, body, _ = http(rest, "POST", "/instances", buf.getvalue())
    assert status == 200, body
    results = json.loads(body)
    assert [r["Status"] for r in results] == ["Success", "Success", "Failure"]
    assert len(get_json(rest, "/instances")) == 2
    status, body, _ = http(rest, "POST", "/instances", b"PK\x03\x04 truncated zip")
    assert status == 400


def test_database_restart_answers_503_then_recovers(cluster, postgres):
    ing = cluster.start_ingest(TESSERA_DB_MAX_RETRIES=1)
    rest = cluster.start_rest(ing, TESSERA_DB_MAX_RETRIES=1)
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    assert http(rest, "POST", "/instances", data)[0] == 200
    postgres.stop()
    try:
        status, body, _ = http(rest, "GET", "/studies")
        assert status == 503, body
        err = json.loads(body)
        assert err["HttpStatus"] == 503 and err["Details"]
        status, body, _ = http(rest, "POST", "/instances",
                               (PYDICOM_FILES / "MR_small.dcm").read_bytes())
        assert status == 503, body
    finally:
        postgres.start()
    assert len(get_json(rest, "/studies")) == 1
    assert http(rest, "POST", "/instances", (PYDICOM_FILES / "MR_small.dcm").read_bytes())[0] == 200
    assert len(get_json(rest, "/studies")) == 2
    assert cluster.temp_files() == []


def test_changes_in_commit_order_without_holes(cluster):
    """A writer that commits late must not be skipped by a client polling
    /changes?since=Last, and a rolled-back writer leaves no hole."""
    import psycopg2
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    slow = psycopg2.connect(cluster.db_url)  # a writer that inserted a change, not committed
    slow.cursor().execute("INSERT INTO changes (change_type, level, public_id) "
                          "VALUES ('NewInstance', 3, 'slow-writer')")
    failed = psycopg2.connect(cluster.db_url)  # a writer that will roll back
    failed.cursor().execute("INSERT INTO changes (change_type, level, public_id) "
                            "VALUES ('NewInstance', 3, 'rolled-back')")
    assert http(rest, "POST", "/instances", (PYDICOM_FILES / "CT_small.dcm").read_bytes())[0] == 200
    first = get_json(rest, "/changes")
    assert [c["ChangeType"] for c in first["Changes"]] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient"]
    failed.rollback()
    slow.commit()
    later = get_json(rest, f"/changes?since={first['Last']}")
    assert [c["ID"] for c in later["Changes"]] == ["slow-writer"]
    everything = get_json(rest, "/changes?limit=100")["Changes"]
    assert [c["Seq"] for c in everything] == list(range(1, 6))  # no holes
    assert "rolled-back" not in [c["ID"] for c in everything]
    slow.close()
    failed.close()


def test_basic_authentication(cluster):
    """On by default beyond loopback: no users is a start-up error; with users, 401
    without or with wrong credentials, 200 with the right ones."""
    import base64
    import urllib.request
    ing = cluster.start_ingest()
    with pytest.raises(RuntimeError) as e:
        cluster.start_rest(ing, TESSERA_HTTP_BIND="0.0.0.0")
    assert "no users" in str(e.value) and "TESSERA_HTTP_USERS" in str(e.value)
    users = cluster.base / "users"
    users.write_text("# REST users\nalice:s3cret\nbob:other\n")
    rest = cluster.start_rest(ing, TESSERA_HTTP_BIND="0.0.0.0", TESSERA_HTTP_USERS_FILE=users)

    def get(auth=None):
        req = urllib.request.Request(rest.url + "/system")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers)
    status, headers = get()
    assert status == 401 and "Basic" in headers.get("WWW-Authenticate", ""), headers
    assert get("alice:wrong")[0] == 401
    assert get("alice:s3cret")[0] == 200
    assert get("bob:other")[0] == 200
    assert get("carol:s3cret")[0] == 401
    # an upload without credentials is refused before its body is read; nothing stored
    status, _, _ = http(rest, "POST", "/instances", (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    assert status == 401
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 0


def test_read_routes_take_one_database_round_trip(cluster):
    """The route metrics count PostgreSQL round trips per route: every read route
    below answers with one (after a warm-up request per route, which also prepares
    the statement on its connection)."""
    import re
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_DB_POOL_SIZE=1)
    up = json.loads(http(rest, "POST", "/instances",
                         (PYDICOM_FILES / "CT_small.dcm").read_bytes())[1])
    routes = {
        "GET /patients": "/patients",
        "GET /studies": "/studies?expand",
        "GET /studies/*": f"/studies/{up['ParentStudy']}",
        "GET /series/*": f"/series/{up['ParentSeries']}",
        "GET /instances/*": f"/instances/{up['ID']}",
        "GET /patients/*": f"/patients/{up['ParentPatient']}",
        "GET /studies/*/series": f"/studies/{up['ParentStudy']}/series",
        "GET /instances/*/metadata": f"/instances/{up['ID']}/metadata",
        "GET /statistics": "/statistics",
        "GET /studies/*/statistics": f"/studies/{up['ParentStudy']}/statistics",
    }

    def trips():
        text = http(rest, "GET", "/tools/metrics-prometheus")[1].decode()
        got = {}
        for m in re.finditer(r'tessera_http_db_round_trips_total\{route="([^"]+)"\} (\S+)', text):
            got[m.group(1)] = float(m.group(2))
        return got
    for path in routes.values():
        assert http(rest, "GET", path)[0] == 200, path  # warm-up
    before = trips()
    for path in routes.values():
        for _ in range(3):
            assert http(rest, "GET", path)[0] == 200, path
    after = trips()
    for route in routes:
        assert after[route] - before[route] == 3, (route, after[route] - before[route])
    text = http(rest, "GET", "/tools/metrics-prometheus")[1].decode()
    assert 'tessera_http_request_seconds_count{route="GET /studies/*"}' in text
