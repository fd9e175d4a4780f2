"""Bad input: broken DICOM files (tests/tools/badinput.py) and malformed HTTP. Every
case gets a clear error, nothing crashes, nothing is stored."""
import json
import socket
import subprocess

import pytest

from conftest import ROOT
from orthanc import http

REFUSED = ["empty", "preamble-only", "dicm-only", "not-dicom", "meta-truncated",
           "cut-after-meta", "cut-mid-element", "cut-mid-pixels", "length-past-end",
           "huge-pixel-length", "deep-undefined-sequences", "undelimited-sequence",
           "no-uids", "meta-length-wrong"]
# An element with a VR that does not exist is read as UN by dcmtk; Orthanc 1.10.1
# accepts the file too. It must then be stored whole.
TOLERATED = ["bogus-vr"]
CASES = REFUSED + TOLERATED


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad")
    subprocess.run(["/usr/bin/python3", str(ROOT / "tests/tools/badinput.py"), str(out)],
                   check=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(CASES)
    return out


@pytest.fixture
def rest(cluster):
    ing = cluster.start_ingest()
    r = cluster.start_rest(ing)
    r.ingest = ing
    return r


def assert_nothing_stored(cluster):
    assert cluster.sql("SELECT count(*) FROM resources")[0][0] == 0
    assert cluster.stored_files() == []
    assert cluster.temp_files() == []


@pytest.mark.parametrize("case", REFUSED)
def test_broken_dicom_upload_is_refused(cluster, rest, corpus, case):
    status, body, _ = http(rest.url, "POST", "/instances", (corpus / case).read_bytes())
    assert status == 400, (case, status, body[:500])
    err = json.loads(body)
    assert err["OrthancError"] == "Bad file format" and err["Details"], err
    assert_nothing_stored(cluster)
    # the service is still there and still right
    status, body, _ = http(rest.url, "GET", "/statistics")
    assert status == 200 and json.loads(body)["CountInstances"] == 0
    assert rest.ingest.proc.poll() is None and rest.proc.poll() is None


@pytest.mark.parametrize("case", TOLERATED)
def test_tolerated_oddity_is_stored_whole(cluster, rest, corpus, case):
    data = (corpus / case).read_bytes()
    status, body, _ = http(rest.url, "POST", "/instances", data)
    assert status == 200, body
    ins = json.loads(body)["ID"]
    status, got, _ = http(rest.url, "GET", f"/instances/{ins}/file")
    assert status == 200 and got == data
    rc, out = cluster.fsck("--min-age", "0")
    assert rc == 0, out


@pytest.mark.parametrize("case", ["not-dicom", "cut-mid-pixels", "deep-undefined-sequences",
                                  "no-uids"])
def test_broken_dicom_over_c_store_is_refused(cluster, rest, corpus, case):
    """The same bytes as the dataset of a C-STORE (raw DICOM UL client): a failure
    status, the association and the service still up, nothing stored."""
    import dul
    data = (corpus / case).read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little") if len(data) > 144 else 0
    dataset = data[meta_end:] or b"\0" * 16
    a = dul.Association(rest.ingest.port)
    try:
        status = a.store(dul.CT_IMAGE_STORAGE, "1.2.3.4.5.6.7.8.9", dataset)
        assert status != 0x0000, hex(status)
        # the association survived: it still answers the next request
        assert a.store(dul.CT_IMAGE_STORAGE, "1.2.3.4.5.6.7.8.10", b"") != 0x0000
    finally:
        released = a.release()
    assert released
    assert_nothing_stored(cluster)


@pytest.mark.parametrize("method,path,body,headers,expect", [
    ("GET", "/" + "a" * 20000, None, {}, (404, 414, 400)),
    ("GET", "/system", None, {"X-Huge": "x" * 100000}, (413, 431, 400)),
    ("POST", "/tools/bulk-delete", b"{not json", {}, (400,)),
    ("POST", "/tools/lookup", b"", {}, (400,)),
    ("GET", "/instances/../../../etc/passwd", None, {}, (404,)),
    ("GET", "/instances/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file", None, {}, (404,)),
    ("GET", "/patients/not-an-id", None, {}, (404,)),
    ("PUT", "/patients/not-an-id/metadata/1024", b"x", {}, (404,)),
    ("POST", "/instances", b"\x00" * 1000, {"Content-Type": "application/json"}, (400,)),
    ("DELETE", "/studies/../system", None, {}, (405,)),
])
def test_malformed_http(cluster, rest, method, path, body, headers, expect):
    status, data, _ = raw_http(rest.port, method, path, body, headers)
    assert status in expect, (method, path[:80], status, data[:300])
    assert rest.proc.poll() is None
    status, _, _ = http(rest.url, "GET", "/system")
    assert status == 200
    assert_nothing_stored(cluster)


def raw_http(port, method, path, body, headers):
    """One request over a plain socket (urllib would normalise the path)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    req = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
    raw = b"".join(chunks)
    if not raw:
        return 0, b"", {}
    head, _, rest_ = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, rest_, {}
