"""The change log's retention (issue 20): a 10M-instance archive has a change log of
more than 10M rows, which Orthanc keeps forever. TESSERA_CHANGES_RETENTION_DAYS makes
the deleters remove changes older than that many days, in batches, never one the
router has not dispatched yet; DELETE /changes clears the log as Orthanc's does, with
the same exception. /changes' Last stays the newest Seq given, so a client paging with
since= goes on where it was."""
import json
import time

from conftest import storescu
from test_deleter import make_study, rest_json
from test_rest_clients import both
from test_rest import fresh  # noqa: F401  (a fixture)
from orthanc import orthanc  # noqa: F401  (a fixture of fresh)


def seqs(cluster):
    return [r[0] for r in cluster.sql("SELECT seq FROM changes WHERE seq IS NOT NULL ORDER BY seq")]


def test_deleter_prunes_old_changes_but_not_past_the_router(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    assert storescu(ing, make_study(tmp_path / "gen", 1, "PAT-R", [3, 2]))[0] == 0
    last = rest_json(rest, "GET", "/changes?limit=1000")[1]
    all_seqs = [c["Seq"] for c in last["Changes"]]
    assert len(all_seqs) >= 9  # 5 instances, 2 series, a study, a patient
    # every change ten days old; the router has passed the first four only
    cluster.sql("UPDATE changes SET created_at = now() - interval '10 days'")
    cluster.sql("UPDATE router_cursor SET last_seq = %s", (all_seqs[3],))
    cluster.start_deleter(TESSERA_CHANGES_RETENTION_DAYS="7")
    deadline = time.time() + 20
    while time.time() < deadline and seqs(cluster) != all_seqs[4:]:
        time.sleep(0.2)
    assert seqs(cluster) == all_seqs[4:]  # the undispatched ones are kept
    status, page = rest_json(rest, "GET", "/changes?since=0&limit=100")
    assert status == 200 and [c["Seq"] for c in page["Changes"]] == all_seqs[4:]
    assert page["Last"] == all_seqs[-1]
    # a change younger than the retention stays, whatever the router did
    cluster.sql("UPDATE router_cursor SET last_seq = %s", (all_seqs[-1],))
    cluster.sql("UPDATE changes SET created_at = now() WHERE seq = %s", (all_seqs[-1],))
    deadline = time.time() + 25
    while time.time() < deadline and seqs(cluster) != all_seqs[-1:]:
        time.sleep(0.2)
    assert seqs(cluster) == all_seqs[-1:]


def test_retention_off_keeps_everything(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    assert storescu(ing, make_study(tmp_path / "gen", 2, "PAT-K", [2]))[0] == 0
    rest_json(rest, "GET", "/changes")  # numbers them
    cluster.sql("UPDATE changes SET created_at = now() - interval '4000 days'")
    cluster.sql("UPDATE router_cursor SET last_seq = (SELECT max(seq) FROM changes)")
    before = seqs(cluster)
    d = cluster.start_deleter()  # TESSERA_CHANGES_RETENTION_DAYS=0, the default
    time.sleep(2)
    assert seqs(cluster) == before and len(before) >= 5
    assert "change log pruned" not in d.read_log()


def test_delete_changes_as_orthanc(fresh, tmp_path):  # noqa: F811
    """DELETE /changes answers as Orthanc's; both logs are empty afterwards, and the
    next change comes after the Last seen before (a client's since= still holds)."""
    files = make_study(tmp_path / "gen", 3, "PAT-D", [2])
    for f in files:
        fresh.ref.upload(f.read_bytes())
        fresh.t.upload(f.read_bytes())
    (_, _, _), (_, tb, _) = both(fresh, "GET", "/changes")
    last_before = json.loads(tb)["Last"]
    fresh.cluster.sql("UPDATE router_cursor SET last_seq = (SELECT max(seq) FROM changes)")
    (rs, rb, _), (ts, tbody, _) = both(fresh, "DELETE", "/changes")
    assert (rs, rb) == (ts, tbody), (rs, rb, ts, tbody)
    assert rs == 200
    for side in both(fresh, "GET", "/changes"):
        assert side[0] == 200 and json.loads(side[1])["Changes"] == [], side
    more = make_study(tmp_path / "gen2", 4, "PAT-E", [1])
    fresh.t.upload(more[0].read_bytes())
    page = json.loads(fresh.t.req("GET", f"/changes?since={last_before}")[1])
    assert page["Changes"] and all(c["Seq"] > last_before for c in page["Changes"])


def test_delete_changes_keeps_what_the_router_has_not_seen(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    assert storescu(ing, make_study(tmp_path / "gen", 5, "PAT-U", [3]))[0] == 0
    all_seqs = [c["Seq"] for c in rest_json(rest, "GET", "/changes")[1]["Changes"]]
    cluster.sql("UPDATE router_cursor SET last_seq = %s", (all_seqs[1],))
    status, _ = rest_json(rest, "DELETE", "/changes")
    assert status == 200
    assert seqs(cluster) == all_seqs[2:]
