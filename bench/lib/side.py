"""What the side-by-side benchmarks share (bench/run, bench/dicomweb): prerequisites,
the servers (one PostgreSQL with a database per system, Tessera's services, Orthanc
1.10.1 with its PostgreSQL index plugin and optionally more plugins), the ingest
clients (storescu, POST /instances), HTTP helpers, cells "median (slow end)" and the
run's description (machine, load, commit).

Set TESSERA_BUILD_DIR before importing this module: tests/integration/conftest.py,
which starts the services, reads it at import."""
import datetime
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/integration"))
import conftest  # noqa: E402,F401  (reads TESSERA_BUILD_DIR)
from conftest import Cluster, Postgres  # noqa: E402
from orthanc import Orthanc  # noqa: E402

PG_PLUGIN = "/usr/lib/orthanc/libOrthancPostgreSQLIndex.so.4.0"
DW_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
SERVICES = ("services/ingest/tessera-ingest", "services/rest/tessera-rest",
            "services/query/tessera-query", "services/deleter/tessera-deleter")


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def check_built(build):
    missing = [b for b in SERVICES if not (Path(build) / b).exists()]
    if missing:
        sys.exit(f"not built: {', '.join(missing)} under {build}\n"
                 f"build first: cmake -S . -B build && cmake --build build -j  (or --build DIR)")


def ensure_packages(packages):
    """Installs what is missing (scripts/lib/common.sh; root or sudo only then)."""
    subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/lib/common.sh" && ensure_packages '
                    + " ".join(packages)], check=True)


def pct(xs, p):
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def http_req(url, method="GET", path="/", body=None, timeout=600, headers=None):
    """One request on its own connection: (status, body bytes)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = {"Content-Type": "application/json"} if body else {}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def json_req(url, method, path, body=None):
    status, data = http_req(url, method, path,
                            None if body is None else json.dumps(body).encode())
    if status != 200:
        raise RuntimeError(f"{method} {url}{path}: {status} {data[:300]!r}")
    return json.loads(data)


def lookup(url, uid):
    """The Orthanc id of a resource by its UID (/tools/lookup)."""
    status, body = http_req(url, "POST", "/tools/lookup", uid.encode())
    if status != 200 or not json.loads(body):
        raise RuntimeError(f"{url}: /tools/lookup {uid}: {status} {body[:200]!r}")
    return json.loads(body)[0]["ID"]


class Systems:
    """PostgreSQL (fsync on), Tessera (query, ingest, rest, deleter at log level
    info, storage tree prepared) on one database and Orthanc with the PostgreSQL
    index plugin (+ `plugins`, `config`) on a second one, all under base."""

    def __init__(self, base, plugins=(), **config):
        self.pg = Postgres(base / "pgdir", fsync="on")
        (base / "tessera").mkdir()
        self.cluster = Cluster(self.pg, base / "tessera")
        self.orthanc = None
        try:
            c = self.cluster
            self.query = c.start_query(TESSERA_LOG_LEVEL="info")
            # TESSERA_STORAGE_PREPARE: the services' default, which the test clusters turn off
            self.ingest = c.start_ingest(TESSERA_QUERY_BUS=self.query.bus, TESSERA_LOG_LEVEL="info",
                                         TESSERA_STORAGE_PREPARE="true")
            self.rest = c.start_rest(self.ingest, TESSERA_LOG_LEVEL="info")
            c.start_deleter(TESSERA_LOG_LEVEL="info")
            odb = self.pg.create_db()
            self.orthanc_db = odb
            self.orthanc = Orthanc(base / "orthanc", Plugins=[PG_PLUGIN, *plugins], PostgreSQL={
                "EnableIndex": True, "EnableStorage": False,
                "ConnectionUri": f"postgresql:///{odb}?host={self.pg.sock}&port={self.pg.port}"
                                 "&user=tessera",
                # the plugin's advisory lock (one Orthanc per database) is not needed
                "Lock": False}, **config)
            self.orthanc.start(timeout=60)
            if "PostgreSQL" not in self.orthanc.read_log():
                log("WARNING: Orthanc's log does not mention PostgreSQL; see", self.orthanc.log_path)
        except BaseException:
            self.stop()
            raise
        self.urls = {"Orthanc": self.orthanc.url, "Tessera": self.rest.url}
        self.dicom = {"Orthanc": (self.orthanc.aet, self.orthanc.dicom_port),
                      "Tessera": (self.ingest.aet, self.ingest.port)}
        self.pids = {"Orthanc": [self.orthanc.proc.pid],
                     "Tessera": [s.proc.pid for s in c.ingests + c.rests + c.queries + c.deleters]}

    def stop(self):
        if self.orthanc:
            self.orthanc.stop()
        self.cluster.stop()
        self.pg.stop()


def storescu(aet, port, dirs, k, errors, label):
    """k storescu processes at once, one association each, over the directories
    (recursively); returns seconds. Failures are appended to errors."""
    chunks = [c for c in (dirs[i::k] for i in range(k)) if c]
    t = time.perf_counter()
    ps = [subprocess.Popen(["storescu", "-nh", "-aet", "BENCH", "-aec", aet, "+sd", "+r",
                            "127.0.0.1", str(port), *map(str, c)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in chunks]
    outs = [p.communicate()[0].decode(errors="replace") for p in ps]
    el = time.perf_counter() - t
    for p, o in zip(ps, outs):
        bad = [line for line in o.splitlines() if line.startswith(("E:", "F:"))]
        if p.returncode or bad:
            errors.append(f"storescu -> {label}: rc {p.returncode}: {' / '.join(bad[:3])}")
    return el


def post_all(url, files, errors, label, k=4):
    """POST /instances of the files from k keep-alive clients; returns seconds."""
    u = urllib.parse.urlsplit(url)
    bodies = [Path(f).read_bytes() for f in files]
    chunks = [bodies[i::k] for i in range(k)]
    bad = []

    def client(chunk):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        for b in chunk:
            c.request("POST", "/instances", body=b, headers={"Content-Type": "application/dicom"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                bad.append(r.status)
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        c.close()

    t = time.perf_counter()
    with ThreadPoolExecutor(k) as ex:
        list(ex.map(client, chunks))
    el = time.perf_counter() - t
    if bad:
        errors.append(f"POST /instances -> {label}: {len(bad)} answers not 200 ({bad[:3]})")
    return el


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def cell(xs, rate):
    """'median (slow end)' of samples, and the median: the slow end is the 95th
    percentile of times, the 5th of rates. ('-', None) without samples."""
    if not xs:
        return "-", None
    med = statistics.median(xs)
    slow = pct(xs, 5) if rate else pct(xs, 95)
    return f"{fmt(med)} ({fmt(slow)})", med


def machine():
    """CPUs, model, memory and platform, as one phrase."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_gb:.0f} GB, {platform.platform()}"


def commit():
    """The short commit of the tree, +dirty when it has changes."""
    c = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True).stdout.strip() or "?"
    if subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode:
        c += "+dirty"
    return c


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def replace_between(path, begin, end, text, template):
    """Replaces the part of the file between the markers begin and end with text
    (markers kept); a file without them gets template(marked text) appended, or
    written when it does not exist."""
    marked = f"{begin}\n\n{text}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + marked + old[old.index(end) + len(end):]
    else:
        new = old + template(marked)
    path.write_text(new)
