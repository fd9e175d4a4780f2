"""Orthanc's Lua scripts in the router (issue 23, lib/domain/lua_scripts.c).

The scripts named by TESSERA_LUA_SCRIPTS are loaded by every tessera-jobs
process; their callbacks run once per event for the whole cluster, on the
router's durable cursor and deliveries (a route 'lua' delivery per event). The
same script runs unchanged against Orthanc 1.10.1 (its LuaScripts option) and
routes the same instances to a storescp.
"""
import http.server
import json
import signal
import subprocess
import threading
import time

import pytest

from conftest import BUILD, free_port, storescu
from orthanc import Orthanc
from orthanc import http as request
from test_jobs import StoreScp, call  # noqa: F401
from test_routing import make_files, sop_uids, wait_for

# The Orthanc Book's auto-routing sample (Lua scripting, "Auto-routing of
# studies"), filtered on CT as its "Filtering" variant: send, then delete once
# sent. Run as is by Tessera and by Orthanc.
AUTOROUTING = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   -- Only route the CT instances (the others stay)
   if tags['Modality'] == 'CT' then
      Delete(SendToModality(instanceId, 'sample'))
   end
end
"""


def deliveries(rest, state=None):
    status, body, _ = call(rest, "GET", "/tessera/route-deliveries"
                           + (f"?state={state}" if state else ""))
    assert status == 200, body
    return body


@pytest.fixture
def scp(tmp_path):
    s = StoreScp(tmp_path / "scp").start()
    yield s
    s.stop()


def lua_cluster(cluster, script_path, jobs=1, **jobs_env):
    redis = cluster.start_redis()
    ing = cluster.start_ingest()
    cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)
    rest = cluster.rests[0]
    env = dict(TESSERA_LUA_SCRIPTS=str(script_path), TESSERA_ROUTER_INTERVAL=100,
               TESSERA_LUA_REST_URL=rest.url)
    env.update(jobs_env)
    for _ in range(jobs):
        cluster.start_jobs(**env)
    return ing, rest


def add_modality(rest, name, port):
    status, body, _ = call(rest, "PUT", f"/modalities/{name}", ["STORESCP", "127.0.0.1", port])
    assert status == 200, body


def test_book_autorouting_sample_routes_the_same_instances_as_orthanc(cluster, tmp_path):
    script = tmp_path / "autorouting.lua"
    script.write_text(AUTOROUTING)
    study = "1.2.826.0.1.3680043.8.498.23.100"
    ct = make_files(tmp_path / "f", 5, study, study + ".1", modality="CT")
    mr = make_files(tmp_path / "f", 3, study, study + ".2", modality="MR")

    # Orthanc 1.10.1 with the same script and a "sample" modality
    scp_o = StoreScp(tmp_path / "scp-orthanc").start()
    o = Orthanc(tmp_path / "orthanc", LuaScripts=[str(script)],
                DicomModalities={"sample": ["STORESCP", "127.0.0.1", scp_o.port]}).start()
    # Tessera
    scp_t = StoreScp(tmp_path / "scp-tessera").start()
    try:
        ing, rest = lua_cluster(cluster, script)
        add_modality(rest, "sample", scp_t.port)
        rc, out = storescu(ing, ct + mr)
        assert rc == 0, out
        p = subprocess.run(["storescu", "-aec", "ORTHANC", "127.0.0.1", str(o.dicom_port)]
                           + [str(f) for f in ct + mr], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        want = sop_uids(ct)
        wait_for(lambda: scp_o.received() == want, 60, "Orthanc's CT instances at storescp")
        wait_for(lambda: scp_t.received() == want, 60, "Tessera's CT instances at storescp")
        # then deleted by both: the MR instances stay
        wait_for(lambda: len(o.get_json("/instances")) == len(mr), 30, "Orthanc's deletions")
        wait_for(lambda: len(call(rest, "GET", "/instances")[1]) == len(mr), 30,
                 "Tessera's deletions")
        wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")
        time.sleep(1)  # anything extra would have come by now
        assert scp_t.received() == scp_o.received() == want
        assert scp_t.store_requests() == scp_o.store_requests() == len(ct)
        left_o = {o.get_json(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
                  for i in o.get_json("/instances")}
        left_t = {call(rest, "GET", f"/instances/{i}/simplified-tags")[1]["SOPInstanceUID"]
                  for i in call(rest, "GET", "/instances")[1]}
        assert left_t == left_o == sop_uids(mr)
    finally:
        o.stop()
        scp_o.stop()
        scp_t.stop()


def run_jobs_until_exit(cluster, script, timeout=60):
    """A jobs process with the script: expected to stop at start."""
    env = cluster.ingest_env(TESSERA_METRICS_PORT=free_port(), TESSERA_LUA_SCRIPTS=str(script),
                             TESSERA_REDIS_URL=cluster.start_redis().url,
                             TESSERA_INGEST_BUS_LISTEN="", TESSERA_EVENTS_LISTEN="")
    return subprocess.run([str(BUILD / "services/jobs/tessera-jobs")], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_syntax_error_refused_at_load_with_its_line(cluster, tmp_path):
    cluster.start_ingest()  # the index exists (a jobs process waits for its migrations)
    bad = tmp_path / "bad.lua"
    bad.write_text("function OnStoredInstance(id)\n  print(id)\n  if then\nend\n")
    p = run_jobs_until_exit(cluster, bad)
    assert p.returncode != 0
    assert "bad.lua:3: unexpected symbol near 'then'" in p.stderr, p.stderr[-3000:]
    assert f"TESSERA_LUA_SCRIPTS {bad}" in p.stderr
    # a script that is not there: refused too, naming it
    p = run_jobs_until_exit(cluster, tmp_path / "missing.lua")
    assert p.returncode != 0 and "missing.lua" in p.stderr, p.stderr[-3000:]


LIMITS = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   if tags['PatientID'] == 'LOOP' then
      while true do
         pcall(function() while true do end end)  -- catching the limit does not help
      end
   elseif tags['PatientID'] == 'BOMB' then
      local t = {}
      local i = 0
      while true do
         i = i + 1
         t[i] = string.rep('x', 1000) .. i
      end
   end
   -- the helpers: Tessera's REST, JSON both ways, PrintRecursive
   local instance = ParseJson(RestApiGet('/instances/' .. instanceId))
   assert(instance['ID'] == instanceId)
   assert(ParseJson(DumpJson({a = {1, 2}}))['a'][2] == 2)
   PrintRecursive(origin)
   print('metadata ' .. DumpJson(metadata))
   SendToModality(instanceId, 'sample')
end
"""


def test_loop_and_allocation_bomb_fail_their_event_and_the_next_is_handled(cluster, tmp_path,
                                                                           scp):
    script = tmp_path / "limits.lua"
    script.write_text(LIMITS)
    ing, rest = lua_cluster(cluster, script, TESSERA_LUA_MAX_INSTRUCTIONS=20000000,
                            TESSERA_LUA_MAX_MEMORY=16)
    add_modality(rest, "sample", scp.port)
    loop = make_files(tmp_path / "l", 1, "1.2.826.0.1.3680043.8.498.23.110",
                      "1.2.826.0.1.3680043.8.498.23.110.1", patient="LOOP")
    bomb = make_files(tmp_path / "b", 1, "1.2.826.0.1.3680043.8.498.23.111",
                      "1.2.826.0.1.3680043.8.498.23.111.1", patient="BOMB")
    good = make_files(tmp_path / "g", 2, "1.2.826.0.1.3680043.8.498.23.112",
                      "1.2.826.0.1.3680043.8.498.23.112.1", patient="GOOD")
    for f in (loop, bomb, good):
        rc, out = storescu(ing, f)
        assert rc == 0, out
    wait_for(lambda: scp.received() == sop_uids(good), 60, "the good instances")
    dead = wait_for(lambda: len(deliveries(rest, "dead")) == 2 and deliveries(rest, "dead"),
                    30, "two dead deliveries")
    errors = sorted(d["LastError"] for d in dead)
    assert all(d["Route"] == "lua" and d["Action"] == {"Type": "Lua",
                                                        "Callback": "OnStoredInstance"}
               for d in dead), dead
    assert any("TESSERA_LUA_MAX_MEMORY" in e for e in errors), errors
    assert any("instructions (TESSERA_LUA_MAX_INSTRUCTIONS)" in e for e in errors), errors
    assert all(d["Attempts"] == 1 for d in dead)  # a script error is not retried
    log = cluster.jobs[0].read_log()
    assert "[RequestOrigin], string, DicomProtocol" in log  # PrintRecursive(origin)
    assert "RemoteAET" in log  # the instance's metadata
    assert cluster.jobs[0].proc.poll() is None  # the router went on
    wait_for(lambda: len(deliveries(rest)) == 2, 20, "only the dead deliveries left")


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records the events the script posts; holds the first one `hold` seconds."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        srv = self.server
        with srv.lock:
            srv.calls.append(body)
            first = len(srv.calls) == 1
        if first:
            srv.first_arrived.set()
            time.sleep(srv.hold)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            with srv.lock:
                srv.answered.append(body)
        except OSError:
            pass

    def log_message(self, *a):
        pass


ONCE = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   -- the process that runs the callback names itself
   local r = HttpPost('%s', instanceId .. ' ' .. os.getenv('TESSERA_METRICS_PORT'))
   if r ~= nil then
      SendToModality(instanceId, 'sample')
   end
end
"""


def test_two_routers_each_event_once_and_a_killed_router_is_resumed(cluster, tmp_path, scp):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.calls, srv.answered, srv.lock = [], [], threading.Lock()
    srv.first_arrived, srv.hold = threading.Event(), 8
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        script = tmp_path / "once.lua"
        script.write_text(ONCE % f"http://127.0.0.1:{srv.server_address[1]}/event")
        ing, rest = lua_cluster(cluster, script, jobs=2)
        add_modality(rest, "sample", scp.port)
        files = make_files(tmp_path / "f", 12, "1.2.826.0.1.3680043.8.498.23.120",
                           "1.2.826.0.1.3680043.8.498.23.120.1")
        rc, out = storescu(ing, files[:1])
        assert rc == 0, out
        assert srv.first_arrived.wait(30)
        # the process running the first callback, killed -9 in the middle of it
        first_id, port = srv.calls[0].split()
        victim = [j for j in cluster.jobs if j.env["TESSERA_METRICS_PORT"] == port][0]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        rc, out = storescu(ing, files[1:])
        assert rc == 0, out
        want = sop_uids(files)
        wait_for(lambda: scp.received() == want, 60, "every instance at storescp")
        wait_for(lambda: not deliveries(rest), 30, "the deliveries to finish")
        time.sleep(1)
        # every event's callback completed exactly once (the killed process's
        # answer went nowhere)
        ids = [c.split()[0] for c in srv.answered if c.split()[1] != port]
        assert len(ids) == len(files) and len(set(ids)) == len(files), srv.answered
        # the killed one's was run again by the other process, the others once each
        called = [c.split()[0] for c in srv.calls]
        assert called.count(first_id) == 2
        assert all(called.count(i) == 1 for i in set(called) - {first_id})
        assert scp.store_requests() == len(files)
    finally:
        srv.shutdown()


JOB_EVENTS = """
function OnJobSubmitted(jobId)
   HttpPost('%(url)s', 'Submitted ' .. jobId)
end
function OnJobSuccess(jobId)
   local job = ParseJson(RestApiGet('/jobs/' .. jobId))
   HttpPost('%(url)s', 'Success ' .. jobId .. ' ' .. job['State'])
end
function OnJobFailure(jobId)
   HttpPost('%(url)s', 'Failure ' .. jobId)
end
"""


def test_job_callbacks_once_each_across_two_routers(cluster, tmp_path, scp):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.calls, srv.answered, srv.lock = [], [], threading.Lock()
    srv.first_arrived, srv.hold = threading.Event(), 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        script = tmp_path / "jobs.lua"
        script.write_text(JOB_EVENTS % {"url": f"http://127.0.0.1:{srv.server_address[1]}/e"})
        ing, rest = lua_cluster(cluster, script, jobs=2)
        add_modality(rest, "sample", scp.port)
        add_modality(rest, "down", free_port())  # nothing listens there
        files = make_files(tmp_path / "f", 2, "1.2.826.0.1.3680043.8.498.23.130",
                           "1.2.826.0.1.3680043.8.498.23.130.1")
        rc, out = storescu(ing, files)
        assert rc == 0, out
        ids = call(rest, "GET", "/instances")[1]
        ok = call(rest, "POST", "/modalities/sample/store",
                  {"Resources": ids, "Asynchronous": True})[1]["ID"]
        bad = call(rest, "POST", "/modalities/down/store",
                   {"Resources": ids, "Asynchronous": True})[1]["ID"]
        want = sorted([f"Submitted {ok}", f"Submitted {bad}", f"Success {ok} Success",
                       f"Failure {bad}"])
        wait_for(lambda: sorted(srv.calls) == want, 60, "the four job events")
        time.sleep(1.5)  # the other router would have run its copy by now
        assert sorted(srv.calls) == want
        assert call(rest, "GET", f"/jobs/{bad}")[1]["State"] == "Failure"
    finally:
        srv.shutdown()


# The Orthanc Book's "Filtering incoming DICOM instances" sample, as is.
FILTER = """
function ReceivedInstanceFilter(dicom, origin, info)
   -- Only allow incoming MR images
   if dicom.Modality == 'MR' then
      return true
   else
      return false
   end
end
"""


def test_received_instance_filter_as_orthanc(cluster, tmp_path):
    script = tmp_path / "filter.lua"
    script.write_text(FILTER)
    study = "1.2.826.0.1.3680043.8.498.23.140"
    ct = make_files(tmp_path / "f", 2, study, study + ".1", modality="CT")
    mr = make_files(tmp_path / "f", 2, study, study + ".2", modality="MR")
    o = Orthanc(tmp_path / "orthanc", LuaScripts=[str(script)]).start()
    try:
        ing = cluster.start_ingest(TESSERA_LUA_SCRIPTS=str(script))
        rest = cluster.start_rest(ing)
        # C-STORE: Orthanc 1.10.1 answers Success to what the filter drops (the
        # standard lets an SCP decide what it keeps); so does Tessera
        for port, aec in ((ing.port, "TESSERA"), (o.dicom_port, "ORTHANC")):
            p = subprocess.run(["storescu", "-v", "-aec", aec, "127.0.0.1", str(port)]
                               + [str(f) for f in ct[:1] + mr[:1]], capture_output=True,
                               text=True)
            assert p.returncode == 0, p.stderr
            assert p.stderr.count("Received Store Response (Success)") == 2, p.stderr
        # REST: 200 with Status FilteredOut and the ids, as Orthanc
        for f in (ct[1], mr[1]):
            data = f.read_bytes()
            st_o, body_o, _ = o.request("POST", "/instances", data)
            st_t, body_t, _ = call(rest, "POST", "/instances", data)
            assert st_t == st_o == 200
            assert body_t == json.loads(body_o), (body_t, body_o)
        assert call(rest, "POST", "/instances", ct[1].read_bytes())[1]["Status"] == "FilteredOut"
        # only the MR instances were stored, by both
        left_o = {o.get_json(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
                  for i in o.get_json("/instances")}
        left_t = {call(rest, "GET", f"/instances/{i}/simplified-tags")[1]["SOPInstanceUID"]
                  for i in call(rest, "GET", "/instances")[1]}
        assert left_t == left_o == sop_uids(mr)
        # nothing of the refused ones in the storage area
        assert len(cluster.stored_files()) == len(mr)
    finally:
        o.stop()


def test_execute_script_off_by_default_and_as_orthanc_when_on(cluster, tmp_path):
    ing = cluster.start_ingest()
    rest_off = cluster.start_rest(ing)
    o_off = Orthanc(tmp_path / "o1").start()
    try:
        st_t, body_t, _ = call(rest_off, "POST", "/tools/execute-script", b"print(1)")
        st_o, body_o, _ = o_off.request("POST", "/tools/execute-script", b"print(1)")
        assert st_t == st_o == 403 and body_t == body_o == b""
    finally:
        o_off.stop()
    rest_on = cluster.start_rest(ing, TESSERA_EXECUTE_LUA_ENABLED="true")
    o = Orthanc(tmp_path / "o2", ExecuteLuaEnabled=True).start()
    try:
        for script in (b"print(1+1)\nprint('a', 'b')", b"print(DumpJson({1, 2}))",
                       b"PrintRecursive({x = {1}})",
                       b"print(ParseJson(RestApiGet('/system'))['ApiVersion'] ~= nil)",
                       b"if then", b"error('boom')"):
            st_t, body_t, h_t = call(rest_on, "POST", "/tools/execute-script", script)
            st_o, body_o, h_o = o.request("POST", "/tools/execute-script", script)
            assert st_t == st_o, (script, st_t, st_o, body_t, body_o)
            if st_o == 200:
                assert body_t == body_o, (script, body_t, body_o)
                assert h_t["Content-Type"] == h_o["Content-Type"] == "text/plain"
            else:
                bt, bo = body_t if isinstance(body_t, dict) else json.loads(body_t), \
                    json.loads(body_o)
                for k in ("Details", "HttpStatus", "Message", "OrthancError", "OrthancStatus"):
                    assert bt[k] == bo[k], (script, k, bt, bo)
        # a loop is stopped by the instruction limit (Orthanc would hang here)
        st, body, _ = call(rest_on, "POST", "/tools/execute-script", b"while true do end")
        assert st == 500 and "TESSERA_LUA_MAX_INSTRUCTIONS" in str(body), body
    finally:
        o.stop()


# The Orthanc Book's IncomingHttpRequestFilter sample, with a header check.
HTTP_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
   if httpHeaders['x-block'] == 'yes' or string.find(uri, '/forbidden') then
      return false
   end
   -- Only allow GET requests for non-admin users
   if method == 'GET' then
      return true
   elseif username == 'admin' then
      return true
   else
      return false
   end
end
"""


def test_incoming_http_request_filter_as_orthanc(cluster, tmp_path):
    script = tmp_path / "http-filter.lua"
    script.write_text(HTTP_FILTER)
    o = Orthanc(tmp_path / "orthanc", LuaScripts=[str(script)]).start()
    try:
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_LUA_SCRIPTS=str(script))
        cases = [("GET", "/system", None, {}), ("GET", "/patients", None, {}),
                 ("POST", "/tools/lookup", b"1.2.3", {}),
                 ("DELETE", "/patients/0946fcb6-cf12ab43-bad958c1-bf057ad5-0fc6f54c", None, {}),
                 ("GET", "/system", None, {"X-Block": "yes"}),
                 ("GET", "/forbidden/thing", None, {})]
        for method, path, body, headers in cases:
            st_t, body_t, _ = request(rest.url, method, path, body, headers)
            st_o, body_o, _ = request(o.url, method, path, body, headers)
            assert st_t == st_o, (method, path, headers, st_t, st_o)
            if st_o == 403:
                assert body_t == body_o == b""
        assert request(rest.url, "POST", "/tools/lookup", b"1.2.3")[0] == 403
    finally:
        o.stop()


# The Orthanc Book's "modify then send" sample (Lua scripting, "Modifying
# instances"): as is, against both.
MODIFY_THEN_SEND = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   -- Do not make any modification on instances that have been modified
   if origin['RequestOrigin'] ~= 'Lua' then
      local replace = {}
      replace['StationName'] = 'My Medical Device'
      local remove = { 'MilitaryRank' }
      -- Modify the instance, send it, then delete the modified instance
      Delete(SendToModality(ModifyInstance(instanceId, replace, remove, true), 'sample'))
      -- Delete the original instance
      Delete(instanceId)
   end
end
"""


def test_book_modify_instance_sample_sends_the_same_modified_instances_as_orthanc(cluster,
                                                                                  tmp_path):
    """ModifyInstance + SendToModality: the modified instance is sent (Orthanc stores it with
    the origin 'Lua' first, then the script's Delete removes it; Tessera's router modifies it
    on the way out and never stores it, so that Delete has nothing to do), then the original
    is deleted. Both storescps get the same tags: StationName replaced, MilitaryRank and the
    private tags gone, a new SOPInstanceUID, the study and series kept."""
    import pydicom
    script = tmp_path / "modify.lua"
    script.write_text(MODIFY_THEN_SEND)
    study = "1.2.826.0.1.3680043.8.498.23.140"
    files = make_files(tmp_path / "f", 3, study, study + ".1")
    for f in files:
        d = pydicom.dcmread(f)
        d.MilitaryRank = "CAPTAIN"
        d.StationName = "OLD"
        d.add_new(0x00091001, "LO", "private value")
        d.add_new(0x00090010, "LO", "ACME")
        d.save_as(f)
    scp_o = StoreScp(tmp_path / "scp-orthanc").start()
    o = Orthanc(tmp_path / "orthanc", LuaScripts=[str(script)],
                DicomModalities={"sample": ["STORESCP", "127.0.0.1", scp_o.port]}).start()
    scp_t = StoreScp(tmp_path / "scp-tessera").start()
    try:
        ing, rest = lua_cluster(cluster, script)
        add_modality(rest, "sample", scp_t.port)
        rc, out = storescu(ing, files)
        assert rc == 0, out
        p = subprocess.run(["storescu", "-aec", "ORTHANC", "127.0.0.1", str(o.dicom_port)]
                           + [str(f) for f in files], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: len(scp_o.received()) == 3, 60, "Orthanc's modified instances")
        wait_for(lambda: len(scp_t.received()) == 3, 60, "Tessera's modified instances")
        wait_for(lambda: o.get_json("/instances") == [], 30, "Orthanc's deletions")
        wait_for(lambda: call(rest, "GET", "/instances")[1] == [], 30, "Tessera's deletions")
        wait_for(lambda: not deliveries(rest), 20, "the deliveries to finish")

        def summary(scp):
            out = []
            for f in sorted(p for p in scp.dir.iterdir() if p.is_file()):
                d = pydicom.dcmread(f)
                out.append((str(d.StationName), "MilitaryRank" in d, (0x0009, 0x1001) in d,
                            d.StudyInstanceUID, d.SeriesInstanceUID, d.PatientID))
            return sorted(out)
        assert summary(scp_t) == summary(scp_o)
        assert summary(scp_t)[0] == ("My Medical Device", False, False, study, study + ".1",
                                     "PAT-R")
        originals = sop_uids(files)
        assert scp_t.received().isdisjoint(originals) and scp_o.received().isdisjoint(originals)
        assert len(scp_t.received()) == len(scp_o.received()) == 3
    finally:
        o.stop()
        scp_o.stop()
        scp_t.stop()


BAD_MODIFY = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   if tags['PatientID'] == 'BADTAG' then
      SendToModality(ModifyInstance(instanceId, { NoSuchTag = 'x' }, {}, false), 'sample')
   elseif tags['PatientID'] == 'NOCHAIN' then
      SendToModality('', 'sample')   -- "" without a ModifyInstance before
   else
      SendToModality(ModifyInstance(instanceId, { StationName = 'GOOD' }), 'sample')
   end
end
"""


def test_modify_instance_errors_fail_their_event_and_the_next_is_handled(cluster, tmp_path, scp):
    """A ModifyInstance that Tessera cannot apply (an unknown tag) and a SendToModality('')
    without ModifyInstance are script errors: their delivery is dead at once with the
    reason and nothing is sent; the router goes on with the next event."""
    import pydicom
    script = tmp_path / "bad-modify.lua"
    script.write_text(BAD_MODIFY)
    ing, rest = lua_cluster(cluster, script)
    add_modality(rest, "sample", scp.port)
    base = "1.2.826.0.1.3680043.8.498.23.150"
    bad = make_files(tmp_path / "b", 1, base, base + ".1", patient="BADTAG")
    nochain = make_files(tmp_path / "n", 1, base, base + ".2", patient="NOCHAIN")
    good = make_files(tmp_path / "g", 1, base, base + ".3", patient="GOOD")
    for f in (bad, nochain, good):
        rc, out = storescu(ing, f)
        assert rc == 0, out
    wait_for(lambda: len(scp.received()) == 1, 60, "the good instance")
    dead = wait_for(lambda: len(deliveries(rest, "dead")) == 2 and deliveries(rest, "dead"),
                    30, "two dead deliveries")
    errors = sorted(d["LastError"] for d in dead)
    assert any("ModifyInstance:" in e and "NoSuchTag" in e for e in errors), errors
    assert any("SendToModality: no resource (and no ModifyInstance before)" in e
               for e in errors), errors
    assert all(d["Attempts"] == 1 for d in dead)
    got = pydicom.dcmread(next(p for p in scp.dir.iterdir() if p.is_file()))
    assert str(got.StationName) == "GOOD" and got.PatientID == "GOOD"
    assert len(call(rest, "GET", "/instances")[1]) == 3  # nothing deleted, nothing added
