"""TESSERA_DB_READ_URL: query's matching and rest's reads go to a read replica.
A real streaming replica (pg_basebackup -R, hot standby) of a primary of this
test's own; the proof that reads go there is that they keep being answered
once the primary is stopped, while a query service without the setting fails."""
import json
import os
import shutil
import subprocess
import time

import psycopg2
import pytest

from conftest import PG_BIN, Cluster, Postgres, as_pg, free_port, storescu
from test_query import findscu, make_dataset, study_uid
from test_rest_smoke import http


class Replica(Postgres):
    """A hot standby of `primary`, streaming from it (pg_basebackup -R)."""

    def __init__(self, primary, base):
        self.fsync = "off"
        self.data = base / "pg"
        self.sock = base / "pg-run"
        self.port = free_port()
        for d in (self.data.parent, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0:
                shutil.chown(d, "postgres")
        as_pg([str(PG_BIN / "pg_basebackup"), "-D", str(self.data), "-h", str(primary.sock),
               "-p", str(primary.port), "-U", "tessera", "-R", "-X", "stream"])
        self.start()


def replica_value(replica, db, sql):
    conn = psycopg2.connect(replica.url(db))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def replicated(workdir, tmp_path):
    # PostgreSQL runs as another user: its directories go under the session's
    # workdir (pytest's own tmp_path root is private to us)
    os.chmod(tmp_path, 0o755)
    base = workdir / f"replica-{os.getpid()}-{time.monotonic_ns()}"
    primary = Postgres(base / "primary")
    replica = Replica(primary, base / "replica")
    (tmp_path / "c").mkdir()
    c = Cluster(primary, tmp_path / "c")
    yield c, primary, replica
    c.stop()
    for pg in (replica, primary):
        try:
            pg.stop(mode="immediate")
        except subprocess.CalledProcessError:
            pass


def test_reads_go_to_the_replica(replicated, tmp_path):
    c, primary, replica = replicated
    ing = c.start_ingest()
    data = tmp_path / "data"
    data.mkdir()
    rc, out = storescu(ing, make_dataset(data))
    assert rc == 0, out
    # the standby is read-only and streams from the primary
    assert replica_value(replica, c.db_name, "SELECT pg_is_in_recovery()::int") == 1
    deadline = time.time() + 30
    while replica_value(replica, c.db_name,
                        "SELECT count(*) FROM resources WHERE level = 3") < 11:
        assert time.time() < deadline, "the replica did not catch up"
        time.sleep(0.1)

    read_url = replica.url(c.db_name)
    q = c.start_query(TESSERA_DB_READ_URL=read_url)
    # the same, without a replica: everything on the primary
    plain = c.start_query(TESSERA_DB_MAX_RETRIES=0, TESSERA_DB_CONNECT_TIMEOUT=1)
    rest = c.start_rest(ing, TESSERA_DB_READ_URL=read_url)
    assert "read-only transactions go to the read URL" in q.read_log()
    final, rsps, out = findscu(c, "STUDY", ["StudyInstanceUID"], port=plain.port)
    assert final == "Success" and len(rsps) == 4, out

    primary.stop(mode="fast")

    # query's matching and rest's reads are answered by the replica alone
    final, rsps, out = findscu(c, "STUDY", ["PatientID=PID-001", "StudyInstanceUID"], port=q.port)
    assert final == "Success", out
    assert sorted(str(r.StudyInstanceUID) for r in rsps) == [study_uid("S1"), study_uid("S2")]
    status, body, _ = http(rest, "GET", "/studies")
    assert status == 200, body
    studies = json.loads(body)
    assert len(studies) == 4
    status, body, _ = http(rest, "GET", f"/studies/{studies[0]}")
    assert status == 200 and json.loads(body)["ID"] == studies[0], body
    # while a query service without TESSERA_DB_READ_URL has nowhere to read
    final, rsps, out = findscu(c, "STUDY", ["StudyInstanceUID"], port=plain.port)
    assert final is not None and "OutOfResources" in final, out
    # and writes still go to the primary only: REST's upload fails
    status, body, _ = http(rest, "POST", "/instances", (data / "S1.1-1.dcm").read_bytes())
    assert status >= 500, body
