"""Orthanc's /exports (issue 23, lib/domain/exports.c): with
TESSERA_LOG_EXPORTED_RESOURCES on (Orthanc's LogExportedResources, off by
default in both), every resource of a store request to a modality or a peer,
and of a route's store step, is logged when its job is submitted; compared
with Orthanc 1.10.1's answers."""
import json
import time

from conftest import storescu
from orthanc import Orthanc
from test_jobs import StoreScp, call
from test_routing import make_files, wait_for


def without_date(body):
    for e in body["Exports"]:
        assert len(e.pop("Date")) == 15  # 20261207T035859
    return body


def test_exports_as_orthanc(cluster, tmp_path):
    study = "1.2.826.0.1.3680043.8.498.23.150"
    files = make_files(tmp_path / "f", 2, study, study + ".1")
    scp = StoreScp(tmp_path / "scp").start()
    o = Orthanc(tmp_path / "orthanc", LogExportedResources=True,
                DicomModalities={"sample": ["STORESCP", "127.0.0.1", scp.port]}).start()
    try:
        redis = cluster.start_redis()
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url,
                                  TESSERA_LOG_EXPORTED_RESOURCES="true")
        cluster.start_jobs()
        rc, out = storescu(ing, files)
        assert rc == 0, out
        ids = [o.upload(f)[1] for f in files]
        call(rest, "PUT", "/modalities/sample", ["STORESCP", "127.0.0.1", scp.port])
        body = {"Resources": [ids[0]["ParentStudy"], ids[1]["ID"]]}
        st_o, _, _ = o.request("POST", "/modalities/sample/store", json.dumps(body).encode())
        st_t, job, _ = call(rest, "POST", "/modalities/sample/store", body)
        assert st_t == st_o == 200, job
        for q in ("", "?since=1&limit=5", "?limit=1", "?since=2", "?since=x"):
            want = without_date(o.get_json("/exports" + q))
            st, got, _ = call(rest, "GET", "/exports" + q)
            assert st == 200 and without_date(got) == want, (q, got, want)
        assert len(want["Exports"]) == 2 and want["Exports"][0]["ResourceType"] == "Study"
        assert o.request("DELETE", "/exports")[0] == call(rest, "DELETE", "/exports")[0] == 200
        st, got, _ = call(rest, "GET", "/exports")
        assert got == o.get_json("/exports") == {"Done": True, "Exports": [], "Last": 0}
    finally:
        o.stop()
        scp.stop()


def test_exports_off_by_default_and_routes_logged_when_on(cluster, tmp_path):
    scp = StoreScp(tmp_path / "scp").start()
    try:
        redis = cluster.start_redis()
        ing = cluster.start_ingest()
        rest = cluster.start_rest(ing, TESSERA_REDIS_URL=redis.url)  # the setting off
        cluster.start_jobs(TESSERA_LOG_EXPORTED_RESOURCES="true", TESSERA_ROUTER_INTERVAL=100)
        call(rest, "PUT", "/modalities/x", ["STORESCP", "127.0.0.1", scp.port])
        study = "1.2.826.0.1.3680043.8.498.23.151"
        files = make_files(tmp_path / "f", 3, study, study + ".1")
        rc, out = storescu(ing, files[:1])
        assert rc == 0, out
        one = call(rest, "GET", "/instances")[1][0]
        assert call(rest, "POST", "/modalities/x/store", [one])[0] == 200
        assert call(rest, "GET", "/exports")[1]["Exports"] == []  # off in this rest
        time.sleep(1)  # its NewInstance dispatched before the rule exists: not routed
        st, rule, _ = call(rest, "POST", "/tessera/routes", {
            "Name": "all", "Trigger": "NewInstance",
            "Actions": [{"Type": "StoreToModality", "Modality": "x"}]})
        assert st == 200, rule
        rc, out = storescu(ing, files[1:])
        assert rc == 0, out
        got = wait_for(lambda: len(call(rest, "GET", "/exports")[1]["Exports"]) == 2
                       and call(rest, "GET", "/exports")[1]["Exports"], 30, "two exports")
        sops = {e["SOPInstanceUID"] for e in got}
        assert sops == {f"{study}.1.2", f"{study}.1.3"}
        assert {e["RemoteModality"] for e in got} == {"x"}
        assert {e["ResourceType"] for e in got} == {"Instance"}
    finally:
        scp.stop()
