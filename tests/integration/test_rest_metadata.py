"""Metadata with revisions: ETag on read, If-Match to change or delete, 409 on
a stale or missing revision; twenty clients over two rest processes racing on
one metadata: every update applied exactly once or refused."""
import json
import time
import threading

from conftest import PYDICOM_FILES
from test_rest_smoke import get_json, http


def upload(rest):
    status, body, _ = http(rest, "POST", "/instances", (PYDICOM_FILES / "CT_small.dcm").read_bytes())
    assert status == 200, body
    return json.loads(body)


def test_metadata_revisions(cluster):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_USER_METADATA="Comment=1024")
    up = upload(rest)
    base = f"/instances/{up['ID']}/metadata"
    names = get_json(rest, base)
    assert "ReceptionDate" in names and "IndexInSeries" in names
    assert get_json(rest, base + "?expand")["Origin"] == "RestApi"

    status, body, h = http(rest, "PUT", base + "/Comment", b"first")
    assert status == 200 and h["ETag"].startswith('"0-'), (status, body, h)
    status, body, h = http(rest, "GET", base + "/1024")  # by number, too
    assert (status, body) == (200, b"first") and h["ETag"].startswith('"0-')
    # changing without If-Match, or with a stale one: 409 and nothing changes
    status, body, _ = http(rest, "PUT", base + "/Comment", b"second")
    assert status == 409 and json.loads(body)["HttpStatus"] == 409
    etag = http(rest, "GET", base + "/Comment")[2]["ETag"]
    md5 = etag.strip('"').split("-", 1)[1]
    status, _, _ = http(rest, "PUT", base + "/Comment", b"second", {"If-Match": f'"7-{md5}"'})
    assert status == 409
    # the whole ETag, as Orthanc: a bare revision is malformed (400)
    status, _, _ = http(rest, "PUT", base + "/Comment", b"second", {"If-Match": '"0"'})
    assert status == 400
    assert http(rest, "GET", base + "/Comment")[1] == b"first"
    status, _, h = http(rest, "PUT", base + "/Comment", b"second", {"If-Match": etag})
    assert status == 200 and h["ETag"].startswith('"1-')
    etag = http(rest, "GET", base + "/Comment")[2]["ETag"]
    status, _, _ = http(rest, "DELETE", base + "/Comment")
    assert status == 409
    status, _, _ = http(rest, "DELETE", base + "/Comment", headers={"If-Match": etag})
    assert status == 200
    assert http(rest, "GET", base + "/Comment")[0] == 404
    # system metadata are read-only; unknown names and resources are errors
    assert http(rest, "PUT", base + "/ReceptionDate", b"x")[0] == 400
    assert http(rest, "GET", base + "/NoSuchName")[0] == 404
    assert http(rest, "PUT", base + "/Comment", b"x", {"If-Match": "abc"})[0] == 400
    assert http(rest, "GET", "/instances/" + "0" * 8 + "-00000000" * 4 + "/metadata")[0] == 404
    study_meta = get_json(rest, f"/studies/{up['ParentStudy']}/metadata?expand")
    assert len(study_meta["LastUpdate"]) == 15


def test_twenty_clients_race_on_one_metadata(cluster):
    ing = cluster.start_ingest()
    rests = [cluster.start_rest(ing, TESSERA_USER_METADATA="Comment=1024") for _ in range(2)]
    up = upload(rests[0])
    path = f"/series/{up['ParentSeries']}/metadata/Comment"
    assert http(rests[0], "PUT", path, b"start")[0] == 200
    applied, refused, other = [], [], []
    lock = threading.Lock()

    def client(n):
        rest = rests[n % 2]
        for attempt in range(5):
            status, _, headers = http(rest, "GET", path)
            status, body, _ = http(rest, "PUT", path, f"client {n} try {attempt}".encode(),
                                   {"If-Match": headers["ETag"]})
            with lock:
                (applied if status == 200 else refused if status == 409 else other).append(
                    (status, body))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert len(applied) + len(refused) == 100
    assert len(applied) >= 1
    status, body, headers = http(rests[0], "GET", path)
    assert int(headers["ETag"].strip('"').split("-")[0]) == len(applied)
    print(f"applied {len(applied)}, refused {len(refused)}")


def test_attachments_revisions_and_files(cluster):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_USER_CONTENT_TYPES="report=1024")
    up = upload(rest)
    base = f"/studies/{up['ParentStudy']}/attachments"
    assert get_json(rest, base) == []
    assert get_json(rest, f"/instances/{up['ID']}/attachments") == ["dicom"]
    dicom_size = http(rest, "GET", f"/instances/{up['ID']}/attachments/dicom/size")[1]
    assert int(dicom_size) == len((PYDICOM_FILES / "CT_small.dcm").read_bytes())
    files_before = set(cluster.stored_files())

    status, _, h = http(rest, "PUT", base + "/report", b"version one")
    assert status == 200 and h["ETag"].startswith('"0-')
    assert get_json(rest, base + "?full") == {"report": 1024}
    status, body, h = http(rest, "GET", base + "/1024/data")
    assert (status, body) == (200, b"version one") and h["ETag"].startswith('"0-')
    assert http(rest, "PUT", base + "/report", b"v2")[0] == 409
    status, _, h = http(rest, "PUT", base + "/report", b"version two", {"If-Match": h["ETag"]})
    assert status == 200 and h["ETag"].startswith('"1-')
    assert http(rest, "GET", base + "/report/data")[1] == b"version two"
    # the replaced file was queued for the deleter in the same transaction
    (queued,), = cluster.sql("SELECT uuid::text FROM deletion_queue")
    added = set(cluster.stored_files()) - files_before
    assert sorted(p.read_bytes() for p in added) == [b"version one", b"version two"]
    etag = h["ETag"]  # of version two, revision 1
    md5 = etag.strip('"').split("-", 1)[1]
    assert http(rest, "DELETE", base + "/report", headers={"If-Match": '"1"'})[0] == 400
    assert http(rest, "DELETE", base + "/report", headers={"If-Match": f'"0-{md5}"'})[0] == 409
    assert http(rest, "DELETE", base + "/report", headers={"If-Match": etag})[0] == 200
    assert cluster.sql("SELECT count(*) FROM deletion_queue")[0][0] == 2
    # a deleter removes both: the storage area is back to the DICOM file alone
    cluster.start_deleter()
    deadline = time.time() + 20
    while cluster.sql("SELECT count(*) FROM deletion_queue")[0][0] and time.time() < deadline:
        time.sleep(0.1)
    assert set(cluster.stored_files()) == files_before
    assert queued not in {p.name for p in cluster.stored_files()}
    assert http(rest, "GET", base + "/report/data")[0] == 404
    # the DICOM file is not an attachment one can replace or drop
    assert http(rest, "DELETE", f"/instances/{up['ID']}/attachments/dicom",
                headers={"If-Match": '"0-00000000000000000000000000000000"'})[0] == 400
