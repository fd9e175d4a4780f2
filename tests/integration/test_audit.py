"""The audit trail (issue 19): every access to patient data over REST and DICOMweb is
one row of audit_log (who, what, when, from where, outcome) and one log line, read by
admins at GET /tessera/audit; recording never delays an answer, also while the table
cannot be written; the deleter prunes rows past TESSERA_AUDIT_RETENTION_DAYS."""
import base64
import json
import time

from orthanc import http
from test_deleter import make_study, rest_json
from conftest import storescu

USER = ("alice", "secret-1")
AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(USER).encode()).decode()}


def wait_rows(cluster, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        c = cluster.sql("SELECT count(*) FROM audit_log")[0][0]
        if c >= n:
            return c
        time.sleep(0.1)
    raise AssertionError(f"audit_log has {c} rows, expected {n}")


def settled(cluster, quiet=0.6):
    """The row count once no batch has arrived for longer than a flush interval
    (TESSERA_AUDIT_FLUSH_MS, 200 ms): the events of earlier requests are in."""
    last, since = None, time.time()
    while True:
        c = cluster.sql("SELECT count(*) FROM audit_log")[0][0]
        if c != last:
            last, since = c, time.time()
        elif time.time() - since > quiet:
            return c
        time.sleep(0.05)


def get(rest, path, method="GET", body=None):
    return http(rest.url, method, path, body, headers=AUTH)


def test_each_access_is_one_row_with_who_what_outcome(cluster, tmp_path):
    q = cluster.start_query()
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS=":".join(USER),
                              TESSERA_QUERY_BUS=q.bus)
    files = make_study(tmp_path / "gen", 1, "PAT-A", [3])
    assert storescu(ing, files)[0] == 0
    study = json.loads(get(rest, "/studies")[1])[0]
    instance = json.loads(get(rest, f"/studies/{study}/instances")[1])[0]["ID"]
    base = settled(cluster)

    calls = [("GET", f"/studies/{study}", None, "read", 200),
             ("GET", f"/instances/{instance}/file", None, "export", 200),
             ("GET", f"/studies/{study}/archive", None, "export", 200),
             ("POST", "/tools/find", b'{"Level":"Study","Query":{}}', "query", 200),
             ("GET", "/studies/00000000-00000000-00000000-00000000-00000000", None, "read", 404),
             ("GET", "/dicom-web/studies", None, "query", 200),
             ("DELETE", f"/instances/{instance}", None, "delete", 200),
             ("GET", "/system", None, None, 200)]  # no patient data: no row
    for method, path, body, _, status in calls:
        assert get(rest, path, method, body)[0] == status, path
    expected = [c for c in calls if c[3]]
    wait_rows(cluster, base + len(expected))
    status, body, _ = get(rest, f"/tessera/audit?since=0&limit=1000")
    assert status == 200, body
    rows = json.loads(body)[-len(expected):]
    for row, (method, path, _, action, status) in zip(rows, expected):
        assert (row["Who"], row["WhoKind"], row["Action"], row["Outcome"], row["Service"]) == \
            ("alice", "user", action, status, "rest"), (row, path)
        assert row["Request"] == f"{method} {path}" and row["Source"] == "127.0.0.1", row
        assert row["Time"].endswith("Z")
    assert rows[0]["Resources"] == [study]
    assert rows[1]["Resources"] == [instance], rows
    # "who touched this study": filtered by resource, by user, by action
    by_study = json.loads(get(rest, f"/tessera/audit?resource={study}")[1])
    assert {r["Action"] for r in by_study} >= {"read", "export"}
    assert all(study in r["Resources"] for r in by_study)
    assert json.loads(get(rest, "/tessera/audit?action=delete")[1])[-1]["Resources"] == [instance]
    assert json.loads(get(rest, "/tessera/audit?who=nobody")[1]) == []
    # and each event is a log line too
    assert 'msg="audit" who=alice who_kind=user action=export' in rest.read_log()
    # bad arguments
    assert get(rest, "/tessera/audit?since=-3")[0] == 400


def test_values_with_copy_and_array_special_characters_arrive_unchanged(cluster):
    """Rows travel as COPY's text format with the resources as an array literal: a
    request whose path holds a tab, a backslash, a double quote, braces and a newline
    (each percent-encoded) is recorded with those characters, not cut nor shifted
    into another column, and the rows after it are intact."""
    ing = cluster.start_ingest(TESSERA_AUDIT="false")  # (rest takes ingest's settings)
    rest = cluster.start_rest(ing, TESSERA_AUDIT="true")
    odd = 'a\tb\\c"d{e}f\ng'
    encoded = "".join(c if c.isalnum() else "%%%02X" % ord(c) for c in odd)
    assert http(rest.url, "GET", f"/studies/{encoded}")[0] == 404
    assert http(rest.url, "GET", "/studies/plain-after")[0] == 404
    wait_rows(cluster, 2)
    rows = cluster.sql("SELECT request, resources, outcome, who_kind FROM audit_log ORDER BY id")
    assert rows == [(f"GET /studies/{odd}", [odd], 404, "anonymous"),
                    ("GET /studies/plain-after", ["plain-after"], 404, "anonymous")], rows


def test_recording_never_delays_an_answer_while_the_table_is_locked(cluster, tmp_path):
    """The table is locked by another transaction: answers come at their usual speed,
    events wait in memory, and all arrive once the lock is gone."""
    import psycopg2
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    assert storescu(ing, make_study(tmp_path / "gen", 2, "PAT-B", [2]))[0] == 0
    study = rest_json(rest, "GET", "/studies")[1][0]
    base = wait_rows(cluster, 3)  # the two C-STOREs (ingest) and the list just read
    conn = psycopg2.connect(cluster.db_url)
    cur = conn.cursor()
    cur.execute("BEGIN; LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
    try:
        t = time.time()
        for _ in range(50):
            assert rest_json(rest, "GET", f"/studies/{study}")[0] == 200
        elapsed = time.time() - t
        assert elapsed < 10, elapsed  # 50 reads; a blocked writer would hang the first
        assert cluster.sql("SELECT 1")  # (other connections are fine)
    finally:
        conn.rollback()
        conn.close()
    assert wait_rows(cluster, base + 50) == base + 50


def test_deleter_prunes_past_retention(cluster):
    ing = cluster.start_ingest()
    cluster.start_rest(ing)
    cluster.sql("INSERT INTO audit_log (at, service, who, who_kind, action, outcome) VALUES"
                " (now() - interval '400 days', 'rest', 'old', 'user', 'read', 200),"
                " (now() - interval '10 days', 'rest', 'recent', 'user', 'read', 200)")
    cluster.start_deleter(TESSERA_AUDIT_RETENTION_DAYS="365")
    deadline = time.time() + 20
    while time.time() < deadline:
        who = [r[0] for r in cluster.sql("SELECT who FROM audit_log ORDER BY id")]
        if "old" not in who:
            break
        time.sleep(0.2)
    assert who == ["recent"], who


def test_audit_off_records_nothing(cluster, tmp_path):
    ing = cluster.start_ingest(TESSERA_AUDIT="false")  # its C-STOREs are audited too
    rest = cluster.start_rest(ing, TESSERA_AUDIT="false")
    assert storescu(ing, make_study(tmp_path / "gen", 3, "PAT-C", [1]))[0] == 0
    study = rest_json(rest, "GET", "/studies")[1][0]
    assert rest_json(rest, "GET", f"/studies/{study}")[0] == 200
    time.sleep(1)
    assert cluster.sql("SELECT count(*) FROM audit_log")[0][0] == 0


def burst(rest, study, n, threads=8):
    """n reads of the study from a few threads at once; their statuses"""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: rest_json(rest, "GET", f"/studies/{study}")[0], range(n)))


def test_a_burst_is_fully_audited_after_the_flush(cluster, tmp_path):
    """Rows are written in batches (TESSERA_AUDIT_FLUSH_MS): a burst of 600 reads from 8
    clients is one row each once the interval has passed, none lost nor doubled, every
    row with its own time; the batches are few."""
    ing = cluster.start_ingest(TESSERA_AUDIT="false")
    rest = cluster.start_rest(ing, TESSERA_AUDIT="true", TESSERA_AUDIT_FLUSH_MS="300")
    assert storescu(ing, make_study(tmp_path / "gen", 4, "PAT-D", [1]))[0] == 0
    study = rest_json(rest, "GET", "/studies")[1][0]
    base = wait_rows(cluster, 1)
    assert burst(rest, study, 600) == [200] * 600
    assert wait_rows(cluster, base + 600) == base + 600
    time.sleep(1)  # and nothing more arrives
    rows = cluster.sql("SELECT request, resources, outcome, at FROM audit_log"
                       " WHERE request = %s", (f"GET /studies/{study}",))
    assert len(rows) == 600
    assert all(r[1] == [study] and r[2] == 200 for r in rows)
    # written together: far fewer distinct transactions than rows
    batches = cluster.sql("SELECT count(DISTINCT xmin::text) FROM audit_log")[0][0]
    assert batches < 100, batches
    assert rest.read_log().count('msg="audit"') >= 601


def test_queued_rows_are_written_at_sigterm_and_logged_at_kill(cluster, tmp_path):
    """SIGTERM: the rows still queued are written before rest exits (a flush interval
    of a minute would otherwise hold them). kill -9: the rows of the interval are
    lost from the table, but each event's log line was written when it happened."""
    ing = cluster.start_ingest(TESSERA_AUDIT="false")
    rest = cluster.start_rest(ing, TESSERA_AUDIT="true", TESSERA_AUDIT_FLUSH_MS="60000")
    assert storescu(ing, make_study(tmp_path / "gen", 5, "PAT-E", [1]))[0] == 0
    study = rest_json(rest, "GET", "/studies")[1][0]
    base = cluster.sql("SELECT count(*) FROM audit_log")[0][0]
    assert burst(rest, study, 200) == [200] * 200
    time.sleep(0.5)
    assert cluster.sql("SELECT count(*) FROM audit_log")[0][0] == base  # still queued
    rest.stop()
    assert cluster.sql("SELECT count(*) FROM audit_log")[0][0] == base + 201  # and the list

    rest2 = cluster.start_rest(ing, TESSERA_AUDIT="true", TESSERA_AUDIT_FLUSH_MS="60000")
    assert burst(rest2, study, 50) == [200] * 50
    import signal
    rest2.stop(signal.SIGKILL)
    time.sleep(0.5)
    assert cluster.sql("SELECT count(*) FROM audit_log")[0][0] == base + 201  # lost
    assert rest2.read_log().count(f'request="GET /studies/{study}"') == 50  # logged


def test_query_writes_its_queued_c_find_rows_at_sigterm(cluster, tmp_path):
    """The DICOM services share the writer (lib/domain/audit.c): query, stopped by SIGTERM
    with its C-FIND rows still queued (a one-minute flush interval), writes them all before
    it exits; each one is a row of service "query" naming the calling AE."""
    import subprocess
    ing = cluster.start_ingest(TESSERA_AUDIT="false")
    assert storescu(ing, make_study(tmp_path / "gen", 6, "PAT-F", [1]))[0] == 0
    q = cluster.start_query(TESSERA_AUDIT="true", TESSERA_AUDIT_FLUSH_MS="60000")
    p = subprocess.run(["findscu", "-S", "--repeat", "7", "-aet", "AUDITED", "-aec", "TESSERA",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                        "127.0.0.1", str(q.port)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)
    rows = "SELECT service, action, outcome FROM audit_log WHERE who = 'AUDITED'"
    assert cluster.sql(rows) == []  # still queued
    assert q.stop() == 0
    got = cluster.sql(rows)
    assert len(got) == 7 and {tuple(r) for r in got} == {("query", "query", 0)}, got
