"""The REST service end to end: upload through ingest's bus, read back,
navigate, errors. (Answers compared field by field with a real Orthanc live
in test_rest.py.)"""
import base64
import io
import json
import os
import socket
import urllib.error
import urllib.request
from http.client import HTTPConnection

import pydicom
import pytest

from conftest import PYDICOM_FILES, storescu
from orthanc import Orthanc


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
    # the text file is skipped, as Orthanc skips it (test_rest.py compares)
    assert [r["Status"] for r in results] == ["Success", "Success"]
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
    # an upload without credentials is refused; nothing stored
    status, _, _ = http(rest, "POST", "/instances", (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    assert status == 401
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 0


# ----------------------------------------------------------------------------------
# Refused requests keep the connection (issue 16): a request answered with an error
# has its body read first, so that the client's next request on the same keep-alive
# connection works. Compared with Orthanc 1.10.1, which keeps the connection too.

USER = ("alice", "s3cret")
AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(USER).encode()).decode()}


def big_instance(size=2 * 1024 * 1024):
    """CT_small.dcm with a private OB element of `size` bytes: larger than the
    socket buffers, so that a server that stops reading breaks the upload."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.add_new(0x00090010, "LO", "TESSERA TEST")
    ds.add_new(0x00091010, "OB", os.urandom(size))
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def connection(url):
    host, port = url.rsplit("/", 1)[1].split(":")
    return HTTPConnection(host, int(port), timeout=60)


def exchange(conn, method, path, body=None, headers=None):
    """One request on an open connection: (status, body, headers, connection kept)."""
    sock = conn.sock
    conn.request(method, path, body, headers or {})
    r = conn.getresponse()
    data = r.read()
    kept = not r.will_close and conn.sock is not None and (sock is None or conn.sock is sock)
    return r.status, data, dict(r.getheaders()), kept


def test_refused_upload_keeps_the_connection(cluster, tmp_path):
    """An upload without credentials, then the same upload with them on the same
    connection (httplib2's and browsers' way): 401 without a broken pipe, then
    stored. Unknown routes and wrong methods with a body keep the connection too."""
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=":".join(USER))
    ref = Orthanc(tmp_path / "orthanc", AuthenticationEnabled=True,
                  RegisteredUsers={USER[0]: USER[1]}).start()
    data = big_instance()
    seen = {}
    try:
        for name, url in (("orthanc", ref.url), ("tessera", rest.url)):
            c = connection(url)
            steps = [exchange(c, "POST", "/instances", data),
                     exchange(c, "POST", "/instances", data, AUTH),
                     exchange(c, "POST", "/no-such-route", data, AUTH),
                     exchange(c, "PUT", "/system", data, AUTH),
                     exchange(c, "GET", "/statistics", None, AUTH)]
            c.close()
            seen[name] = steps
            (s1, _, h1, kept1), (s2, b2, _, kept2) = steps[:2]
            assert s1 == 401 and h1.get("WWW-Authenticate", "").startswith("Basic "), (name, h1)
            assert kept1, (name, "the 401 closed the connection")
            assert s2 == 200 and json.loads(b2)["Status"] == "Success", (name, s2, b2[:300])
            assert kept2, name
            assert [s[0] for s in steps[2:]] == [404, 405, 200], (name, steps[2:])
            assert all(s[3] for s in steps), (name, [s[3] for s in steps])
            assert json.loads(steps[4][1])["CountInstances"] == 1, name
    finally:
        ref.stop()
    assert [s[0] for s in seen["tessera"]] == [s[0] for s in seen["orthanc"]]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 1


def raw_request(url, head, body=b""):
    """Sends a request head (and body) on a raw socket; returns everything the
    server sends until it closes the connection or stays silent for 5 s, and
    whether it closed."""
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.replace(b"\n", b"\r\n") + b"\r\n" + body)
        s.settimeout(5)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except ConnectionResetError:
            return out, True
        except socket.timeout:
            return out, False


def test_refused_bodies_past_the_limit_are_not_read(cluster):
    """Nothing is read past TESSERA_MAX_INSTANCE_SIZE, whoever sends it: a
    Content-Length over it is answered (401 or 413) before any body arrives and the
    connection closes; a chunked body that grows past it has its connection closed;
    a client that waits for "100 Continue" gets its 401 at once. Within the limit,
    a refused chunked body is read and the connection kept."""
    ing = cluster.start_ingest()
    limit = 100000
    rest = cluster.start_rest(ing, TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=":".join(USER),
                              TESSERA_MAX_INSTANCE_SIZE=limit)
    auth = AUTH["Authorization"].encode()
    too_long = f"Content-Length: {limit + 1}\n".encode()
    # headers only: the answers come without the body
    out, closed = raw_request(rest.url, b"POST /instances HTTP/1.1\nHost: x\n" + too_long)
    assert out.startswith(b"HTTP/1.1 401") and closed, out[:200]
    out, closed = raw_request(rest.url, b"POST /instances HTTP/1.1\nHost: x\nAuthorization: "
                              + auth + b"\n" + too_long)
    assert out.startswith(b"HTTP/1.1 413") and closed, out[:200]
    assert b'"the body is larger than 100000 bytes"' in out
    out, closed = raw_request(rest.url, b"POST /instances HTTP/1.1\nHost: x\n"
                              b"Content-Length: 5000\nExpect: 100-continue\n")
    assert out.startswith(b"HTTP/1.1 401") and b"100 Continue" not in out, out[:200]

    def chunked(n):
        return b"%x\r\n" % n + b"x" * n + b"\r\n0\r\n\r\n"
    head = b"POST /instances HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n"
    out, closed = raw_request(rest.url, head + b"Authorization: " + auth + b"\n",
                              chunked(limit + 1))
    assert out == b"" and closed, out[:200]
    out, closed = raw_request(rest.url, head, chunked(limit - 1))
    assert out.startswith(b"HTTP/1.1 401") and not closed, out[:200]
    assert cluster.sql("SELECT count(*) FROM instances")[0][0] == 0
    assert cluster.temp_files() == []


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
        # the instance file's lookup (one statement, no BEGIN/COMMIT), and the
        # recursive one under a study
        "GET /instances/*/rendered": f"/instances/{up['ID']}/rendered",
        "GET /instances/*/frames": f"/instances/{up['ID']}/frames",
        "GET /studies/*/shared-tags": f"/studies/{up['ParentStudy']}/shared-tags",
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


def test_each_route_bounds_its_body_before_reading_it(cluster):
    """A route's largest body is known from the request line: a route that takes
    JSON refuses a Content-Length over 1 MiB before any body arrives (rest held
    up to TESSERA_MAX_INSTANCE_SIZE, 1 GiB by default, before the handler said
    413), a chunked body that grows past it has its connection closed, and the
    routes that take instances or attachments still take large bodies. A path no
    route serves has its body read and dropped (test_refused_upload_keeps_the_connection)."""
    ing = cluster.start_ingest()
    limit = 8 * 1024 * 1024
    rest = cluster.start_rest(ing, TESSERA_MAX_INSTANCE_SIZE=limit)
    up = json.loads(http(rest, "POST", "/instances",
                         (PYDICOM_FILES / "CT_small.dcm").read_bytes())[1])
    small_routes = ["POST /tools/find", "PUT /instances/%s/metadata/1024" % up["ID"],
                    "POST /tools/lookup", "PUT /modalities/x"]
    for route in small_routes:
        head = f"{route} HTTP/1.1\nHost: x\nContent-Length: {2 * 1024 * 1024}\n".encode()
        out, closed = raw_request(rest.url, head)
        assert out.startswith(b"HTTP/1.1 413") and closed, (route, out[:300])
        assert b'"the body is larger than 1048576 bytes"' in out, (route, out[:600])
    # chunked past the route's limit: the connection is closed, nothing answered
    big = 1024 * 1024 + 1
    head = b"POST /tools/find HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n"
    out, closed = raw_request(rest.url, head, b"%x\r\n" % big + b" " * big + b"\r\n0\r\n\r\n")
    assert out == b"" and closed, out[:300]
    # a long list of resources to archive or send: 4 MiB
    head = f"POST /tools/create-archive HTTP/1.1\nHost: x\nContent-Length: {5 << 20}\n"
    out, closed = raw_request(rest.url, head.encode())
    assert b'"the body is larger than 4194304 bytes"' in out and closed, out[:300]
    # attachments and instances: up to TESSERA_MAX_INSTANCE_SIZE
    blob = os.urandom(3 * 1024 * 1024)
    status, body, _ = http(rest, "PUT", f"/instances/{up['ID']}/attachments/1025", blob)
    assert status == 200, body[:300]
    status, body, _ = http(rest, "GET", f"/instances/{up['ID']}/attachments/1025/data")
    assert status == 200 and body == blob
    status, _, _ = http(rest, "PUT", f"/instances/{up['ID']}/metadata/1024", b"v" * 1000)
    assert status == 200
    assert http(rest, "GET", f"/instances/{up['ID']}/metadata/1024")[1] == b"v" * 1000
