"""Who may see what over HTTP: roles (admin, write, read), label-scoped read
grants, HTTP Basic users and API keys (rest_auth.c). Orthanc 1.10.1 has none of
this (its users are all-powerful; per-label access needs its authorization
plugin), so there is nothing to compare with: these tests state the contract.

- No or wrong credentials: 401, the same answer for a wrong password as for an
  unknown user.
- A role too low for the route: 403 with Orthanc's error body.
- A caller restricted to labels sees only the studies carrying one of them
  (with their series and instances, and a patient all of whose studies it
  sees): any other resource answers exactly what an unknown id answers (404), so
  ids do not leak; lists, /tools/find and QIDO-RS leave the others out; routes
  that cannot be filtered (changes, statistics, bulk routes, jobs...) answer 403.
"""
import base64
import json
import subprocess

import pytest

from conftest import ROOT, Cluster
from orthanc import http

DATA = ROOT / "tests/data/dicom"
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
ZERO = "00000000-00000000-00000000-00000000-00000000"
USERS = "admin:adminpw,alice:alicepw,bob:bobpw,reader:readpw,writer:writepw"
ROLES = "alice=read:groupA,bob=read:groupB|other,reader=read,writer=write"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN = basic("admin", "adminpw")
ALICE = basic("alice", "alicepw")
BOB = basic("bob", "bobpw")
READER = basic("reader", "readpw")
WRITER = basic("writer", "writepw")


def call(url, method, path, who, body=None, headers=None):
    h = dict(who or {})
    h.update(headers or {})
    s, data, hdrs = http(url, method, path, body, headers=h)
    return s, data, hdrs


def js(url, path, who):
    s, data, _ = call(url, "GET", path, who)
    assert s == 200, (path, s, data)
    return json.loads(data)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    base.chmod(0o755)
    c = Cluster(postgres, base)
    try:
        ing = c.start_ingest()
        q = c.start_query()
        rest = c.start_rest(ing, TESSERA_QUERY_BUS=q.bus, TESSERA_HTTP_AUTH="on",
                            TESSERA_HTTP_USERS=USERS, TESSERA_HTTP_USER_ROLES=ROLES,
                            TESSERA_HTTP_API_KEY_CACHE="0")
        url = rest.url
        up = []
        for name in FILES:
            s, body, _ = call(url, "POST", "/instances", ADMIN, (DATA / name).read_bytes())
            assert s == 200, body
            up.append(json.loads(body))
        a, b, n = (u["ParentStudy"] for u in up)
        assert call(url, "PUT", f"/studies/{a}/labels/groupA", ADMIN)[0] == 200
        assert call(url, "PUT", f"/studies/{b}/labels/groupB", ADMIN)[0] == 200
        uids = {sid: js(url, f"/studies/{sid}", ADMIN)["MainDicomTags"]["StudyInstanceUID"]
                for sid in (a, b, n)}
        yield c, rest, up, (a, b, n), uids
    finally:
        c.stop()


def test_no_or_wrong_credentials(server):
    _, rest, _, (a, _, _), _ = server
    s, body, h = call(rest.url, "GET", "/studies", None)
    assert s == 401 and h.get("WWW-Authenticate", "").startswith("Basic")
    wrong = call(rest.url, "GET", "/studies", basic("alice", "nope"))
    unknown = call(rest.url, "GET", "/studies", basic("nobody", "nope"))
    assert wrong[0] == unknown[0] == 401 and wrong[1] == unknown[1]
    # a bearer that is neither a valid key nor a token (no issuer configured)
    s, _, h = call(rest.url, "GET", "/studies", {"Authorization": "Bearer abc.def.ghi"})
    assert s == 401 and 'error="invalid_token"' in h.get("WWW-Authenticate", "")
    s, _, _ = call(rest.url, "GET", "/studies", {"Authorization": "Bearer tsk_123"})
    assert s == 401
    assert "kind=basic" in rest.read_log() and "http authentication refused" in rest.read_log()


def test_roles(server):
    _, rest, up, (a, b, n), _ = server
    url = rest.url
    # an unrestricted reader sees everything and changes nothing
    assert set(js(url, "/studies", READER)) == {a, b, n}
    for method, path in (("PUT", f"/studies/{n}/labels/x"), ("DELETE", f"/studies/{n}"),
                         ("POST", "/instances"), ("PUT", "/modalities/m")):
        s, body, _ = call(url, method, path, READER, b"{}")
        assert s == 403, (method, path, body)
        assert json.loads(body)["OrthancError"].startswith("Bad credentials")
    # a writer labels and deletes, but configures nothing
    assert call(url, "PUT", f"/studies/{n}/labels/w", WRITER)[0] == 200
    assert call(url, "DELETE", f"/studies/{n}/labels/w", WRITER)[0] == 200
    s, _, _ = call(url, "PUT", "/modalities/m", WRITER,
                   json.dumps({"AET": "M", "Host": "127.0.0.1", "Port": 104}).encode())
    assert s == 403
    assert call(url, "GET", "/tessera/api-keys", WRITER)[0] == 403
    # Basic users not named in TESSERA_HTTP_USER_ROLES stay admins
    s, _, _ = call(url, "PUT", "/modalities/m", ADMIN,
                   json.dumps({"AET": "M", "Host": "127.0.0.1", "Port": 104}).encode())
    assert s == 200
    assert call(url, "DELETE", "/modalities/m", ADMIN)[0] == 200


def test_label_scoped_reads(server):
    _, rest, up, (a, b, n), uids = server
    url = rest.url
    assert js(url, "/studies", ALICE) == [a]
    assert js(url, "/studies", BOB) == [b]
    assert [r["ID"] for r in js(url, "/studies?expand", ALICE)] == [a]
    assert js(url, "/series", ALICE) == [up[0]["ParentSeries"]]
    assert js(url, "/instances", BOB) == [up[1]["ID"]]
    assert js(url, f"/studies/{a}", ALICE)["ID"] == a
    assert js(url, f"/instances/{up[0]['ID']}", ALICE)["ID"] == up[0]["ID"]
    assert call(url, "GET", f"/instances/{up[0]['ID']}/file", ALICE)[0] == 200
    # the patient of a study alice sees (its only study)
    assert js(url, f"/patients/{up[0]['ParentPatient']}", ALICE)["ID"] == up[0]["ParentPatient"]
    assert js(url, "/patients", ALICE) == [up[0]["ParentPatient"]]


@pytest.mark.parametrize("path", ["/studies/{b}", "/studies/{b}/series", "/studies/{b}/labels",
                                  "/studies/{b}/metadata", "/series/{sb}", "/instances/{ib}/file",
                                  "/instances/{ib}/tags", "/instances/{ib}/patient",
                                  "/patients/{pb}", "/studies/{b}/archive",
                                  "/studies/{b}/shared-tags"])
def test_invisible_is_unknown(server, path):
    """Another group's resource answers what an unknown id answers."""
    _, rest, up, (a, b, n), _ = server
    ids = {"b": b, "sb": up[1]["ParentSeries"], "ib": up[1]["ID"], "pb": up[1]["ParentPatient"]}
    real = path.format(**ids)
    level = path.split("/")[1]
    fake = real.replace(ids[path.split("{")[1].split("}")[0]], ZERO)
    s1, body1, _ = call(rest.url, "GET", real, ALICE)
    s2, body2, _ = call(rest.url, "GET", fake.replace(real.split("/")[2], ZERO), ADMIN)
    assert s1 == 404, (real, body1)
    assert s2 == 404
    # the same body, with the id replaced
    assert body1.replace(real.split("/")[2].encode(), ZERO.encode()) == body2, (level, body1, body2)
    # and bob does see it
    assert call(rest.url, "GET", real, BOB)[0] == 200


def test_invisible_writes(server):
    """Writing to another group's study is not possible either: a read grant
    writes nothing, and the answer is 403 before any lookup."""
    _, rest, up, (a, b, n), _ = server
    s, _, _ = call(rest.url, "PUT", f"/studies/{b}/labels/mine", ALICE)
    assert s == 403
    assert "mine" not in js(rest.url, f"/studies/{b}/labels", ADMIN)


def test_find_and_qido_filter(server):
    _, rest, up, (a, b, n), uids = server
    url = rest.url

    def find(who, body):
        s, data, _ = call(url, "POST", "/tools/find", who, json.dumps(body).encode())
        assert s == 200, data
        return json.loads(data)

    assert find(ALICE, {"Level": "Study", "Query": {}}) == [a]
    assert find(BOB, {"Level": "Study", "Query": {}}) == [b]
    assert set(find(ADMIN, {"Level": "Study", "Query": {}})) == {a, b, n}
    assert find(ALICE, {"Level": "Instance", "Query": {}}) == [up[0]["ID"]]
    assert find(ALICE, {"Level": "Series", "Query": {}}) == [up[0]["ParentSeries"]]
    assert find(ALICE, {"Level": "Patient", "Query": {}}) == [up[0]["ParentPatient"]]
    # asking for the other group's study by its UID finds nothing
    assert find(ALICE, {"Level": "Study", "Query": {"StudyInstanceUID": uids[b]}}) == []
    # Expand does not reach it either
    res = find(ALICE, {"Level": "Study", "Query": {}, "Expand": True})
    assert [r["ID"] for r in res] == [a]
    # a label the caller asks for but is not granted gives nothing more
    assert find(ALICE, {"Level": "Study", "Query": {}, "Labels": ["groupB"]}) == []
    # QIDO-RS
    s, data, _ = call(url, "GET", "/dicom-web/studies", ALICE,
                      headers={"Accept": "application/dicom+json"})
    assert s == 200
    assert [st["0020000D"]["Value"][0] for st in json.loads(data)] == [uids[a]]
    s, data, _ = call(url, "GET", f"/dicom-web/studies/{uids[b]}/series", ALICE,
                      headers={"Accept": "application/dicom+json"})
    assert s in (200, 204) and (not data or json.loads(data) == [])
    # WADO-RS of the other study: as an unknown study
    s1, body1, _ = call(url, "GET", f"/dicom-web/studies/{uids[b]}/metadata", ALICE)
    s2, body2, _ = call(url, "GET", "/dicom-web/studies/1.2.3.4.5/metadata", ADMIN)
    assert s1 == s2 == 404
    assert json.loads(body1)["Details"].replace(uids[b], "X") == \
        json.loads(body2)["Details"].replace("1.2.3.4.5", "X")
    assert call(url, "GET", f"/dicom-web/studies/{uids[a]}/metadata", ALICE)[0] == 200
    s, _, _ = call(url, "GET", f"/wado?requestType=WADO&studyUID={uids[b]}&seriesUID=1&objectUID=1",
                   ALICE)
    assert s == 404


def test_unfiltered_routes_refused_to_scoped_callers(server):
    _, rest, _, (a, b, n), _ = server
    for method, path, body in (("GET", "/changes", None), ("GET", "/statistics", None),
                               ("GET", "/jobs", None), ("GET", "/tools/labels", None),
                               ("POST", "/tools/create-archive",
                                json.dumps({"Resources": [b]}).encode()),
                               ("POST", "/tools/lookup", b"1.2.3")):
        s, data, _ = call(rest.url, method, path, ALICE, body)
        assert s == 403, (path, data)
    assert call(rest.url, "GET", "/system", ALICE)[0] == 200
    assert call(rest.url, "GET", "/changes", READER)[0] == 200


def test_api_keys(server):
    c, rest, up, (a, b, n), _ = server
    url = rest.url
    s, data, _ = call(url, "POST", "/tessera/api-keys", ADMIN,
                      json.dumps({"Name": "pacs-b", "Role": "read", "Labels": ["groupB"]}).encode())
    assert s == 200, data
    made = json.loads(data)
    key = made["Key"]
    assert key.startswith("tsk_" + made["ID"] + "_") and made["Labels"] == ["groupB"]
    bearer = {"Authorization": "Bearer " + key}
    assert js(url, "/studies", bearer) == [b]
    assert call(url, "GET", f"/studies/{a}", bearer)[0] == 404
    assert call(url, "PUT", f"/studies/{b}/labels/x", bearer)[0] == 403
    # an unrestricted write key
    s, data, _ = call(url, "POST", "/tessera/api-keys", ADMIN,
                      json.dumps({"Name": "robot", "Role": "write"}).encode())
    robot = {"Authorization": "Bearer " + json.loads(data)["Key"]}
    assert set(js(url, "/studies", robot)) == {a, b, n}
    assert call(url, "PUT", f"/studies/{n}/labels/robot", robot)[0] == 200
    assert call(url, "GET", "/tessera/api-keys", robot)[0] == 403
    # listed without secrets; only the hash is stored
    keys = js(url, "/tessera/api-keys", ADMIN)
    listed = {k["ID"]: k for k in keys}
    assert listed[made["ID"]]["Name"] == "pacs-b" and listed[made["ID"]]["CreatedBy"] == "admin"
    assert "Key" not in listed[made["ID"]] and key not in json.dumps(keys)
    stored = c.sql("SELECT secret_sha256 FROM api_keys WHERE id = %s", (made["ID"],))[0][0]
    import hashlib
    assert stored == hashlib.sha256(key.split("_")[2].encode()).hexdigest()
    assert key.split("_")[2] not in json.dumps(c.sql("SELECT * FROM api_keys", None), default=str)
    # a wrong secret of a known id; then revocation
    forged = key[:-4] + ("0000" if not key.endswith("0000") else "1111")
    assert call(url, "GET", "/studies", {"Authorization": "Bearer " + forged})[0] == 401
    assert call(url, "DELETE", f"/tessera/api-keys/{made['ID']}", ADMIN)[0] == 200
    assert call(url, "GET", "/studies", bearer)[0] == 401
    assert js(url, "/tessera/api-keys", ADMIN)[0]["Revoked"] is True
    assert call(url, "DELETE", "/tessera/api-keys/0123456789abcdef", ADMIN)[0] == 404
    # bad bodies: nothing created
    before = len(js(url, "/tessera/api-keys", ADMIN))
    for body in (b"", b"[]", b'{"Name": "x", "Role": "root"}', b'{"Role": "read"}',
                 b'{"Name": "x", "Role": "read", "Labels": ["a b"]}'):
        assert call(url, "POST", "/tessera/api-keys", ADMIN, body)[0] == 400, body
    assert len(js(url, "/tessera/api-keys", ADMIN)) == before
    assert call(url, "POST", "/tessera/api-keys", ALICE, b"{}")[0] == 403


def test_refuses_to_start_open_beyond_loopback(server, tmp_path):
    """Listening beyond loopback with authentication and no way in: no start."""
    c, rest, _, _, _ = server
    env = dict(rest.env)
    env.update({"TESSERA_HTTP_BIND": "0.0.0.0", "TESSERA_HTTP_AUTH": "auto",
                "TESSERA_HTTP_USERS": "", "TESSERA_HTTP_USER_ROLES": "",
                "TESSERA_METRICS_PORT": "0"})
    from conftest import BUILD
    p = subprocess.run([str(BUILD / "services/rest/tessera-rest")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0
    assert "no way in" in p.stdout + p.stderr
