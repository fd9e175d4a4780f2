"""Integration fixtures: a real PostgreSQL server (throwaway data directory,
unix socket only), the real services built in $TESSERA_BUILD_DIR (default
build/), and real dcmtk clients. Every test gets its own database and storage
area; every port is picked free so that two runs never collide."""
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TESSERA_BUILD_DIR", ROOT / "build"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PYDICOM_FILES = Path("/usr/lib/python3/dist-packages/pydicom/data/test_files")

# dcmtk stalls ~40 ms per round trip without it (docs/development.md, "dcmtk")
os.environ["TCP_NODELAY"] = "1"


def _ephemeral_range():
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Ports for test servers come from below the ephemeral range: a port the kernel
# picks for bind(0) is one it may hand, a moment later, to any outgoing
# connection (a storescu, an HTTP client) or to another pytest-xdist worker's
# bind(0) before the service binds it (seen in CI: "listen on DICOM port 34335:
# Address already in use"). Below the range, only other test processes choose,
# and they agree through a lock file per port held until the process exits.
PORT_LOCK_DIR = Path(tempfile.gettempdir()) / "tessera-test-ports"
_PORT_LOW = 12000
_PORT_HIGH = min(_ephemeral_range()[0], 32768)
_port_locks = {}


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _kernel_port():
    """The old way, where no lock directory serves: a port bind(0) gave."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _port_locks:
            _port_locks[port] = None
            return port


def _lock_dir():
    """The lock files' directory, shared by every user's test runs (as /tmp is)."""
    try:
        PORT_LOCK_DIR.mkdir(exist_ok=True)
        if PORT_LOCK_DIR.stat().st_uid == os.getuid():
            PORT_LOCK_DIR.chmod(0o1777)
        return os.access(PORT_LOCK_DIR, os.W_OK)
    except OSError:
        return False


def free_port():
    """A TCP port nobody listens on now, that no other test process on this
    machine holds, and never one this process gave before."""
    if _PORT_HIGH - _PORT_LOW < 1000 or not _lock_dir():  # an odd port range, or no lock dir
        return _kernel_port()
    for _ in range(10000):
        port = random.randrange(_PORT_LOW, _PORT_HIGH)
        if port in _port_locks:
            continue
        try:
            lock = open(PORT_LOCK_DIR / str(port), "a")
        except OSError:  # another user's lock file
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if not _bindable(port):
            lock.close()
            continue
        _port_locks[port] = lock
        return port
    raise RuntimeError(f"no free port in {_PORT_LOW}-{_PORT_HIGH}")


def npm_ci(folder):
    """Installs the npm packages pinned by folder's package-lock.json (the Node.js
    peers and clients of the integration tests), unless node_modules is already
    newer than the lock file. No browser download: Debian's chromium serves."""
    npm = shutil.which("npm")
    assert npm, "npm is needed for the Node.js clients (scripts/test installs Node.js)"
    stamp = folder / "node_modules" / ".package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < (folder / "package-lock.json").stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True,
                       capture_output=True, timeout=600,
                       env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"})


def as_pg(cmd, **kw):
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Postgres:
    def __init__(self, base, fsync="off"):
        self.fsync = fsync  # off for tests; benchmarks measure with it on
        self.data = base / "pg"
        self.sock = base / "pg-run"
        self.port = free_port()
        for d in (self.data, self.sock):
            d.mkdir(parents=True)
            if os.getuid() == 0:
                shutil.chown(d, "postgres")
        os.chmod(self.data, 0o700)
        as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "tessera", "-A", "trust",
               "-E", "UTF8", "--no-locale"])
        self.start()

    def start(self):
        as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"),
               "-w", "-t", "60", "-o",
               f"-c listen_addresses='' -k {self.sock} -p {self.port} -c fsync={self.fsync} "
               f"-c max_connections=300", "start"])

    def stop(self, mode="fast"):
        as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def url(self, db):
        return f"host={self.sock} port={self.port} dbname={db} user=tessera"

    def create_db(self):
        name = "t_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {name}")
        conn.close()
        return name


@pytest.fixture(scope="session")
def workdir():
    base = Path(tempfile.mkdtemp(prefix="tessera-it-"))
    os.chmod(base, 0o755)  # PostgreSQL runs as another user and must reach its dirs
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(workdir):
    pg = Postgres(workdir)
    yield pg
    try:
        pg.stop()
    except subprocess.CalledProcessError:
        pass


class Service:
    """One process of a Tessera service, its log in a file."""

    binary = None

    def __init__(self, env, log_path):
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BUILD / self.binary)], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        """Until the service's port accepts connections."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}:\n"
                                   + self.read_log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not open port {self.port}:\n" + self.read_log())

    def read_log(self):
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None


class Ingest(Service):
    """One tessera-ingest process."""

    binary = "services/ingest/tessera-ingest"

    def __init__(self, env, log_path):
        super().__init__(env, log_path)
        self.port = int(env["TESSERA_DICOM_PORT"])
        self.aet = env.get("TESSERA_DICOM_AET", "TESSERA")
        self.bus = env["TESSERA_INGEST_BUS_LISTEN"]


class Rest(Service):
    """One tessera-rest process."""

    binary = "services/rest/tessera-rest"

    def __init__(self, env, log_path):
        super().__init__(env, log_path)
        self.port = int(env["TESSERA_HTTP_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"


class Deleter(Service):
    """One tessera-deleter process (ready when its metrics port answers)."""

    binary = "services/deleter/tessera-deleter"

    def __init__(self, env, log_path):
        super().__init__(env, log_path)
        self.port = int(env["TESSERA_METRICS_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"


class Query(Service):
    """One tessera-query process."""

    binary = "services/query/tessera-query"

    def __init__(self, env, log_path):
        super().__init__(env, log_path)
        self.port = int(env["TESSERA_QUERY_DICOM_PORT"])
        self.aet = env.get("TESSERA_DICOM_AET", "TESSERA")
        self.bus = env["TESSERA_QUERY_BUS_LISTEN"]


class Redis:
    """A throwaway redis-server as scripts/lib/common.sh's redis_start runs it:
    unix socket only, AOF on (appendfsync everysec), no RDB snapshots."""

    def __init__(self, base):
        self.dir = Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "redis.sock"
        self.url = f"unix://{self.sock}"
        self.proc = None

    def start(self, timeout=20):
        self.log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm",
             "700", "--dir", str(self.dir), "--appendonly", "yes", "--save", ""],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: see " + str(self.dir / "redis.log"))
            if self.sock.exists() and self.cli("PING") == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        p = subprocess.run(["redis-cli", "-s", str(self.sock), *map(str, args)],
                           capture_output=True, text=True, timeout=30)
        return p.stdout.strip()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
            self.proc = None


class Jobs(Service):
    """One tessera-jobs process (ready when its metrics port answers)."""

    binary = "services/jobs/tessera-jobs"

    def __init__(self, env, log_path):
        super().__init__(env, log_path)
        self.port = int(env["TESSERA_METRICS_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"


class Cluster:
    """A database, a storage area and the ingest processes of one test."""

    def __init__(self, postgres, base):
        self.pg = postgres
        self.base = base
        self.db_name = postgres.create_db()
        self.db_url = postgres.url(self.db_name)
        self.storage = base / "storage"
        self.storage.mkdir()
        self.ingests = []
        self.rests = []
        self.deleters = []
        self.jobs = []
        self.redis = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))

    def ingest_env(self, **overrides):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        # unix socket paths must stay under ~100 characters: not under tmp_path
        run = self.run_dir
        n = len(self.ingests)
        env.update({
            "TESSERA_DB_URL": self.db_url,
            "TESSERA_STORAGE_DIR": str(self.storage),
            "TESSERA_DICOM_PORT": str(free_port()),
            "TESSERA_INGEST_BUS_LISTEN": f"ipc://{run}/ingest-{n}.sock",
            "TESSERA_EVENTS_LISTEN": f"ipc://{run}/events-{n}.sock",
            # nudges after deletions go to the first deleter; the others poll
            "TESSERA_DELETER_BUS": f"ipc://{run}/deleter-0.sock",
            "TESSERA_QUERY_BUS": "",  # no C-FIND relay unless a test starts query
            # the cluster's own Redis (start_redis), never a server of the machine's:
            # ingest's and query's C-MOVEs list themselves in /jobs once it runs
            "TESSERA_REDIS_URL": f"unix://{run}/redis/redis.sock",
            "TESSERA_LOG_LEVEL": "debug",
            "TCP_NODELAY": "1",
            # 65,536 directories (1.5 s, 270 MB) per cluster would dominate the
            # suite; test_ingest's test_prepared_storage_tree runs with it on
            "TESSERA_STORAGE_PREPARE": "false",
        })
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def start_ingest(self, wait=True, **overrides):
        ing = Ingest(self.ingest_env(**overrides), self.base / f"ingest-{len(self.ingests)}.log")
        self.ingests.append(ing)
        return ing.start(wait=wait)

    def start_rest(self, ingest, **overrides):
        """A rest process whose uploads go to `ingest`."""
        env = dict(ingest.env)
        env.update({"TESSERA_HTTP_PORT": str(free_port()), "TESSERA_HTTP_BIND": "127.0.0.1",
                    "TESSERA_INGEST_BUS": ingest.bus,
                    "TESSERA_INGEST_BUS_LISTEN": "", "TESSERA_EVENTS_LISTEN": ""})
        env.update({k: str(v) for k, v in overrides.items()})
        rest = Rest(env, self.base / f"rest-{len(self.rests)}.log")
        self.rests.append(rest)
        return rest.start()

    def start_deleter(self, **overrides):
        n = len(self.deleters)
        env = self.ingest_env()
        env.update({"TESSERA_METRICS_PORT": str(free_port()),
                    "TESSERA_DELETER_BUS_LISTEN": f"ipc://{self.run_dir}/deleter-{n}.sock",
                    "TESSERA_DELETER_POLL_INTERVAL": "1",
                    "TESSERA_INGEST_BUS_LISTEN": "", "TESSERA_EVENTS_LISTEN": ""})
        env.update({k: str(v) for k, v in overrides.items()})
        d = Deleter(env, self.base / f"deleter-{n}.log")
        self.deleters.append(d)
        return d.start()

    # -- jobs: a Redis of this cluster and tessera-jobs processes ------------------
    def start_redis(self):
        """The cluster's Redis (started once); its URL is self.redis.url."""
        if not getattr(self, "redis", None):
            self.redis = Redis(self.run_dir / "redis").start()
        return self.redis

    def start_jobs(self, **overrides):
        n = len(self.jobs)
        env = self.ingest_env()
        env.update({"TESSERA_METRICS_PORT": str(free_port()),
                    "TESSERA_REDIS_URL": self.start_redis().url,
                    "TESSERA_JOBS_LEASE": "2",
                    "TESSERA_INGEST_BUS_LISTEN": "", "TESSERA_EVENTS_LISTEN": ""})
        if self.ingests:  # ResourceModification stores its copies through ingest
            env["TESSERA_INGEST_BUS"] = self.ingests[0].bus
        env.update({k: str(v) for k, v in overrides.items()})
        j = Jobs(env, self.base / f"jobs-{n}.log")
        self.jobs.append(j)
        return j.start()

    def fsck(self, *args):
        """Runs tessera-fsck on this cluster; returns (exit status, stdout)."""
        env = self.ingest_env()
        p = subprocess.run([str(BUILD / "tools/fsck/tessera-fsck"), *args], env=env,
                           capture_output=True, text=True, timeout=300)
        return p.returncode, p.stdout + p.stderr

    def start_query(self, **overrides):
        """A query process on this cluster's database, with its own DICOM port and bus socket."""
        self.queries = getattr(self, "queries", [])
        n = len(self.queries)
        env = self.ingest_env()
        env.update({"TESSERA_QUERY_DICOM_PORT": str(free_port()),
                    "TESSERA_QUERY_BUS_LISTEN": f"ipc://{self.run_dir}/query-{n}.sock",
                    "TESSERA_INGEST_BUS_LISTEN": "", "TESSERA_EVENTS_LISTEN": ""})
        env.update({k: str(v) for k, v in overrides.items()})
        q = Query(env, self.base / f"query-{n}.log")
        self.queries.append(q)
        return q.start()

    def sql(self, query, args=None):
        conn = psycopg2.connect(self.db_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def stored_files(self):
        """Files in the storage area, without the temporary ones and the
        prepared tree's marker."""
        return sorted(p for p in self.storage.rglob("*")
                      if p.is_file() and p.parent.name != "tmp" and p.parent != self.storage)

    def temp_files(self):
        tmp = self.storage / "tmp"
        return sorted(tmp.iterdir()) if tmp.exists() else []

    def stop(self):
        for rest in self.rests:
            rest.stop()
        for ing in self.ingests + getattr(self, "queries", []):
            ing.stop()
        for d in self.deleters:
            d.stop()
        for j in self.jobs:
            j.stop()
        if self.redis:
            self.redis.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def cluster(postgres, tmp_path):
    os.chmod(tmp_path, 0o755)
    c = Cluster(postgres, tmp_path)
    yield c
    c.stop()
    for ing in c.ingests + c.rests + c.deleters + c.jobs + getattr(c, "queries", []):
        log = ing.read_log()
        # A sanitizer or a crash in a service is a failure of the test that saw it.
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
        # Every line a service writes is a logfmt line (dcmtk's own "E: ..." lines
        # and values with newlines broke that).
        stray = [line for line in log.splitlines() if line and not line.startswith("ts=")]
        assert not stray, stray[:5]


def storescu(ingest, files, aet="STORESCU", extra=()):
    """Runs dcmtk's storescu; returns (returncode, combined output)."""
    cmd = ["storescu", "-v", "-aet", aet, "-aec", ingest.aet, *extra, "127.0.0.1",
           str(ingest.port), *map(str, files)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr
