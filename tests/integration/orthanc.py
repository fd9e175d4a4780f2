"""A real Orthanc 1.10.1 (Debian package `orthanc`, /usr/sbin/Orthanc) for side-by-side
tests: throwaway configuration, storage and SQLite index; free HTTP and DICOM ports
on loopback only. Used as the reference that Tessera's REST answers are compared
with (test_rest.py).

    with Orthanc(tmp_path) as o:
        o.upload(path)          # POST /instances -> (status, parsed JSON)
        o.get_json("/studies")

The pytest fixture `orthanc` gives a fresh, empty server to every test that asks for
it; startup costs ~0.3 s (SQLite index in a temporary directory)."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import Cluster, free_port

ORTHANC_BIN = Path(os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc"))




def http(base_url, method, path, body=None, headers=None, timeout=60):
    """One HTTP request; returns (status, body bytes, headers dict). Never raises on
    an HTTP error status."""
    req = urllib.request.Request(base_url + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class Orthanc:
    """One Orthanc process with a configuration of its own."""

    def __init__(self, base=None, aet="ORTHANC", name="OrthancRef", **config):
        if not ORTHANC_BIN.exists():
            raise RuntimeError(f"{ORTHANC_BIN} is missing: apt-get install orthanc")
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="orthanc-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = aet
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = {
            "Name": name,
            "StorageDirectory": str(self.base / "storage"),
            "IndexDirectory": str(self.base / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowFind": True,
            "Plugins": [],
            "ConcurrentJobs": 1,
            # Tessera always checks revisions (docs/design.md); make the reference do so too
            "CheckRevisions": True,
            # keep the reference quiet and quick
            "StableAge": 60,
            "HttpsVerifyPeers": False,
        }
        self.config.update(config)
        self.config_path = self.base / "orthanc.json"
        self.log_path = self.base / "orthanc.log"
        self.proc = None

    # -- process -----------------------------------------------------------------
    def start(self, timeout=30):
        self.config_path.write_text(json.dumps(self.config, indent=2))
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(ORTHANC_BIN), str(self.config_path)], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(self.base))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n"
                                   + self.read_log()[-4000:])
            try:
                status, _, _ = http(self.url, "GET", "/system", timeout=1)
                if status == 200 or (status == 401 and self.config["AuthenticationEnabled"]):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not answer GET /system:\n" + self.read_log()[-4000:])

    def read_log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
            self.proc = None
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP --------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None):
        return http(self.url, method, path, body, headers)

    def get_json(self, path):
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def upload(self, path_or_bytes):
        """POST /instances; returns (status, JSON answer or None)."""
        data = (path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray))
                else Path(path_or_bytes).read_bytes())
        status, body, _ = self.request("POST", "/instances", data)
        return status, (json.loads(body) if body else None)

    def upload_all(self, paths):
        out = []
        for p in paths:
            status, answer = self.upload(p)
            assert status == 200, (p, status, answer)
            out.append(answer)
        return out


@pytest.fixture
def orthanc(tmp_path_factory):
    """A fresh, empty Orthanc 1.10.1 for one test."""
    o = Orthanc(tmp_path_factory.mktemp("orthanc"))
    o.start()
    yield o
    o.stop()


@contextlib.contextmanager
def beside_orthanc(postgres, base):
    """An Orthanc 1.10.1 and a Tessera cluster (query, ingest, and rest relaying
    /tools/find to that query) side by side under base, for the tests that
    compare answers. Yields SimpleNamespace(orthanc, cluster, rest, query);
    stops both, then fails on a sanitizer report in a service's log."""
    base.chmod(0o755)
    o = Orthanc(base / "orthanc").start()
    (base / "tessera").mkdir()
    cluster = Cluster(postgres, base / "tessera")
    try:
        q = cluster.start_query()
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
        yield SimpleNamespace(orthanc=o, cluster=cluster, rest=rest, query=q)
    finally:
        cluster.stop()
        o.stop()
    for s in cluster.ingests + cluster.rests + cluster.queries:
        log = s.read_log()
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log[-4000:]
