"""/statistics from maintained counters (db/migrations/0025_statistics_counters.sql):
the answer must equal a full count of the index at every quiet point, whatever ran
concurrently before it: C-STORE over several associations into two ingest processes,
uploads over REST, deletions of studies and instances, attachments added, replaced
and removed, the deleter purging what deletions left."""
import concurrent.futures
import threading

from conftest import storescu
from orthanc import http
from test_deleter import make_study, rest_json, wait_drained

# The full count /statistics answered before the counters existed.
FULL_COUNT = """
SELECT (SELECT count(*) FROM resources WHERE level = 0),
       (SELECT count(*) FROM resources WHERE level = 1),
       (SELECT count(*) FROM resources WHERE level = 2),
       (SELECT count(*) FROM resources WHERE level = 3),
       (SELECT coalesce(sum(a.compressed_size), 0) FROM attachments a
         JOIN resources r ON r.id = a.resource_id),
       (SELECT coalesce(sum(a.uncompressed_size), 0) FROM attachments a
         JOIN resources r ON r.id = a.resource_id)
"""


def assert_matches_full_count(cluster, rest):
    stats = rest_json(rest, "GET", "/statistics")[1]
    p, st, se, i, disk, raw = cluster.sql(FULL_COUNT)[0]
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"],
            stats["CountInstances"]) == (p, st, se, i), (stats, p, st, se, i)
    assert (int(stats["TotalDiskSize"]), int(stats["TotalUncompressedSize"])) == (disk, raw), \
        (stats, disk, raw)
    assert stats["TotalDiskSizeMB"] == disk // 1048576
    return stats


def test_statistics_match_a_full_count_after_concurrent_writes_and_deletes(cluster, tmp_path):
    ing1, ing2 = cluster.start_ingest(), cluster.start_ingest()
    rest = cluster.start_rest(ing1)
    cluster.start_deleter()
    empty = assert_matches_full_count(cluster, rest)
    assert empty["CountInstances"] == 0 and empty["TotalDiskSize"] == "0"

    # 8 studies of 3 patients over 8 associations, half to each ingest process.
    studies = [make_study(tmp_path / "gen", 100 + k, f"PAT-{k % 3}", [6, 4]) for k in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda kv: storescu((ing1, ing2)[kv[0] % 2], kv[1]),
                                enumerate(studies)))
    assert all(rc == 0 for rc, _ in results), [out for rc, out in results if rc]
    stats = assert_matches_full_count(cluster, rest)
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountInstances"]) == (3, 8, 80)

    # Deletions of whole studies while other studies arrive, and attachments
    # written on the instances that stay.
    ids = {s["MainDicomTags"]["StudyInstanceUID"]: s["ID"]
           for s in rest_json(rest, "GET", "/studies?expand")[1]}
    doomed = [ids[f"1.2.826.0.1.3680043.8.498.{100 + k}"] for k in (0, 1, 2)]
    more = [make_study(tmp_path / "gen2", 200 + k, f"PAT-{k}", [5]) for k in range(4)]
    kept_instance = rest_json(rest, "GET",
                              f"/studies/{ids['1.2.826.0.1.3680043.8.498.107']}/instances")[1][0]["ID"]
    errors = []

    def delete_studies():
        for sid in doomed:
            status, body = rest_json(rest, "DELETE", f"/studies/{sid}")
            if status != 200:
                errors.append(("delete", status, body))

    def attachments():
        base = f"/instances/{kept_instance}/attachments"
        for n in range(10):  # new attachments
            status, body = rest_json(rest, "PUT", f"{base}/{1100 + n}", b"x" * (100 * (n + 1)))
            if status != 200:
                errors.append(("attachment", status, body))
        for n in range(5):  # replaced, with their revision
            etag = http(rest.url, "GET", f"{base}/{1100 + n}")[2].get("ETag")
            status, body, _ = http(rest.url, "PUT", f"{base}/{1100 + n}", b"y" * (7000 + n),
                                   {"If-Match": etag})
            if status != 200:
                errors.append(("replace", status, body))

    threads = [threading.Thread(target=delete_studies), threading.Thread(target=attachments)]
    for t in threads:
        t.start()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kv: storescu((ing1, ing2)[kv[0] % 2], kv[1]),
                                enumerate(more)))
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(rc == 0 for rc, _ in results), [out for rc, out in results if rc]
    stats = assert_matches_full_count(cluster, rest)
    assert stats["CountStudies"] == 8 - 3 + 4 and stats["CountInstances"] == 80 - 30 + 20, stats

    # One instance deleted, one attachment removed; then the deleter purges the
    # rows the deletions left, which must not change the answer.
    some_instance = rest_json(rest, "GET",
                              f"/studies/{ids['1.2.826.0.1.3680043.8.498.106']}/instances")[1][0]["ID"]
    assert rest_json(rest, "DELETE", f"/instances/{some_instance}")[0] == 200
    etag = http(rest.url, "GET", f"/instances/{kept_instance}/attachments/1101")[2].get("ETag")
    assert http(rest.url, "DELETE", f"/instances/{kept_instance}/attachments/1101",
                headers={"If-Match": etag})[0] == 200
    before_purge = assert_matches_full_count(cluster, rest)
    wait_drained(cluster)
    after_purge = assert_matches_full_count(cluster, rest)
    assert before_purge == after_purge

    # Everything deleted: back to zero.
    for p in rest_json(rest, "GET", "/patients")[1]:
        assert rest_json(rest, "DELETE", f"/patients/{p}")[0] == 200
    wait_drained(cluster)
    stats = assert_matches_full_count(cluster, rest)
    assert stats["CountInstances"] == 0 and stats["TotalDiskSize"] == "0", stats
