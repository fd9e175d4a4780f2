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
  that cannot be filtered (changes, statistics, bulk routes...) answer 403; jobs
  are the caller's own (test_job_owner.py).
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
    # paging: offsets count in the caller's own list, never from a paging cursor
    # that an unrestricted caller left in this process (lib/base/offset_cursors.h)
    assert js(url, "/studies?since=0&limit=1", ADMIN) == [a]
    assert js(url, "/studies?since=1&limit=1", ADMIN) == [b]
    assert js(url, "/studies?since=1&limit=1", BOB) == []
    assert js(url, "/studies?since=0&limit=1", BOB) == [b]


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
                               ("GET", "/tools/labels", None),
                               ("POST", "/tools/create-archive",
                                json.dumps({"Resources": [b]}).encode()),
                               ("POST", "/tools/lookup", b"1.2.3")):
        s, data, _ = call(rest.url, method, path, ALICE, body)
        assert s == 403, (path, data)
    assert call(rest.url, "GET", "/system", ALICE)[0] == 200
    # jobs are filtered instead, to the caller's own (test_job_owner.py): no
    # 403 (this server has no Redis, so the registry is unavailable)
    assert call(rest.url, "GET", "/jobs", ALICE)[0] == 503
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


# ----------------------------------------------------------------------------------
# JWT bearer tokens (rest_jwt.c), minted here with Debian's python3-jwt and
# python3-cryptography, checked by rest against a local JWKS file and URL.

import hashlib  # noqa: E402
import hmac  # noqa: E402
from http.server import BaseHTTPRequestHandler, HTTPServer  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import jwt as pyjwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

ISSUER = "https://idp.example.test/realms/tessera"
AUDIENCE = "tessera"


def jwk_of(key, kid):
    """The public JWK of a private key, as an OpenID provider publishes it."""
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        d = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(pub))
    else:
        d = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(pub))
    d.update({"kid": kid, "use": "sig"})
    return d


class Keys:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, alg="RS256", kid=None, **claims):
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "someone", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key = self.rsa if alg == "RS256" else self.ec
        return pyjwt.encode(body, key, algorithm=alg,
                            headers={"kid": kid or ("rsa1" if alg == "RS256" else "ec1")})


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def jwt_server(server, tmp_path_factory):
    c, rest, up, studies, uids = server
    keys = Keys()
    d = tmp_path_factory.mktemp("jwks")
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys.rsa, "rsa1"), jwk_of(keys.ec, "ec1")]}))
    r = c.start_rest(c.ingests[0], TESSERA_QUERY_BUS=rest.env["TESSERA_QUERY_BUS"],
                     TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS="", TESSERA_HTTP_USER_ROLES="",
                     TESSERA_JWT_JWKS_FILE=str(jwks), TESSERA_JWT_ISSUER=ISSUER,
                     TESSERA_JWT_AUDIENCE=AUDIENCE, TESSERA_JWT_LEEWAY="60")
    yield r, keys, studies, uids


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_jwt_roles_and_labels(jwt_server):
    r, keys, (a, b, n), uids = jwt_server
    t = keys.token(tessera_role="read", tessera_labels=["groupA"])
    assert js(r.url, "/studies", bearer(t)) == [a]
    assert call(r.url, "GET", f"/studies/{b}", bearer(t))[0] == 404
    # ES256 too; a list of roles: the highest counts; no labels claim: every study
    t = keys.token(alg="ES256", tessera_role=["read", "write"])
    assert set(js(r.url, "/studies", bearer(t))) == {a, b, n}
    assert call(r.url, "PUT", f"/studies/{n}/labels/jwt", bearer(t))[0] == 200
    assert call(r.url, "DELETE", f"/studies/{n}/labels/jwt", bearer(t))[0] == 200
    assert call(r.url, "GET", "/tessera/api-keys", bearer(t))[0] == 403
    # a valid token without a known role opens nothing
    t = keys.token(tessera_role="superuser")
    assert call(r.url, "GET", "/studies", bearer(t))[0] == 403
    # an admin token makes API keys, recorded as made by its subject
    t = keys.token(tessera_role="admin", sub="carol")
    s, data, _ = call(r.url, "POST", "/tessera/api-keys", bearer(t),
                      json.dumps({"Name": "from-jwt", "Role": "read"}).encode())
    assert s == 200
    assert [k["CreatedBy"] for k in js(r.url, "/tessera/api-keys", bearer(t))
            if k["Name"] == "from-jwt"] == ["jwt:carol"]
    # Basic is refused on this replica: it has no users
    assert call(r.url, "GET", "/studies", ADMIN)[0] == 401


def test_jwt_ec_key_with_short_coordinates(server, tmp_path):
    """A JWKS whose P-256 key has a coordinate written without its leading zero
    bytes (RFC 7518 asks for 32; PyJWT 2.6, Debian 12's, drops them, one key in about
    120): the key is read as the same point and its ES256 tokens pass. Before, the
    key was refused and every ES256 token of it answered 401."""
    c, rest, up, studies, uids = server
    while True:  # a key whose x has a leading zero byte (1 in 256)
        key = ec.generate_private_key(ec.SECP256R1())
        x = key.public_key().public_numbers().x
        if x < 1 << 248:
            break
    nums = key.public_key().public_numbers()

    def short(v):  # big-endian, no leading zero byte
        return b64(v.to_bytes((v.bit_length() + 7) // 8, "big"))
    jwk = {"kty": "EC", "crv": "P-256", "x": short(nums.x), "y": short(nums.y),
           "kid": "short", "use": "sig"}
    assert len(base64.urlsafe_b64decode(jwk["x"] + "==")) < 32
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    r = c.start_rest(c.ingests[0], TESSERA_QUERY_BUS=rest.env["TESSERA_QUERY_BUS"],
                     TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS="", TESSERA_HTTP_USER_ROLES="",
                     TESSERA_JWT_JWKS_FILE=str(tmp_path / "jwks.json"), TESSERA_JWT_ISSUER=ISSUER,
                     TESSERA_JWT_AUDIENCE=AUDIENCE)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "short", "iat": now, "exp": now + 300,
              "tessera_role": "read"}
    token = pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": "short"})
    assert call(r.url, "GET", "/studies", bearer(token))[0] == 200
    # still the key: a token of another key with the same kid is refused
    other = pyjwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                         headers={"kid": "short"})
    assert call(r.url, "GET", "/studies", bearer(other))[0] == 401


def bad_tokens(keys):
    now = int(time.time())
    good = keys.token(tessera_role="admin")
    h, p, s = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    pem = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_head = b64(json.dumps({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}).encode())
    hs_sig = b64(hmac.new(pem, f"{hs_head}.{p}".encode(), hashlib.sha256).digest())
    tampered = dict(claims, sub="mallory")
    return {
        "expired": keys.token(tessera_role="admin", exp=now - 120, iat=now - 600),
        "not yet valid": keys.token(tessera_role="admin", nbf=now + 600),
        "wrong issuer": keys.token(tessera_role="admin", iss="https://evil.example.test"),
        "wrong audience": keys.token(tessera_role="admin", aud="another-app"),
        "no expiry": keys.token(tessera_role="admin", exp=None),
        "expiry as text": keys.token(tessera_role="admin", exp=str(now + 300)),
        "alg none": b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + p + ".",
        "alg none signed": b64(json.dumps({"alg": "none"}).encode()) + "." + p + "." + s,
        "HS256 with the public key": f"{hs_head}.{p}.{hs_sig}",
        "tampered claims": h + "." + b64(json.dumps(tampered).encode()) + "." + s,
        "other key": pyjwt.encode(claims, keys.other, algorithm="RS256", headers={"kid": "rsa1"}),
        "unknown kid": keys.token(tessera_role="admin", kid="nope"),
        "RSA key claimed as ES256": h.replace(h, b64(json.dumps(
            {"alg": "ES256", "kid": "rsa1"}).encode())) + "." + p + "." + s,
        "garbage": "a.b.c",
        "two parts": h + "." + p,
    }


@pytest.mark.parametrize("case", list(bad_tokens(Keys()).keys()))
def test_jwt_attacks(jwt_server, case):
    r, keys, (a, b, n), uids = jwt_server
    token = bad_tokens(keys)[case]
    seen = len(r.read_log().splitlines())
    s, body, h = call(r.url, "GET", f"/studies/{a}", bearer(token))
    assert s == 401, (case, body)
    assert body == b"" and 'error="invalid_token"' in h["WWW-Authenticate"]
    # refused for the right reason (the log line says which)
    why = {"expired": "expired", "not yet valid": "not valid yet", "wrong issuer": "wrong issuer",
           "wrong audience": "wrong audience", "no expiry": "no expiry",
           "expiry as text": "no expiry", "alg none": "none",
           "alg none signed": "none", "HS256 with the public key": "HS256",
           "tampered claims": "bad signature", "other key": "bad signature",
           "unknown kid": "unknown key id", "RSA key claimed as ES256": "bad signature",
           "garbage": "undecodable", "two parts": "not a JWS"}[case]
    lines = [line for line in r.read_log().splitlines()[seen:] if "kind=jwt" in line]
    assert any(why in line for line in lines), (case, lines[-3:])


def test_jwt_clock_skew(jwt_server):
    r, keys, (a, b, n), uids = jwt_server
    now = int(time.time())
    # expired 30 s ago, within the 60 s allowed: accepted; 90 s: refused
    assert call(r.url, "GET", "/studies", bearer(keys.token(tessera_role="read", exp=now - 30)))[0] \
        == 200
    assert call(r.url, "GET", "/studies", bearer(keys.token(tessera_role="read", exp=now - 90)))[0] \
        == 401
    # aud as a list holding ours
    t = keys.token(tessera_role="read", aud=["other", AUDIENCE])
    assert call(r.url, "GET", "/studies", bearer(t))[0] == 200


def test_jwks_url_and_rotation(server, tmp_path):
    """The JWKS from a URL (an OpenID provider's jwks_uri, here a local HTTP
    server), re-read when a token names a key it does not have yet."""
    c, rest, _, (a, b, n), _ = server
    keys = Keys()
    served = {"keys": [jwk_of(keys.rsa, "rsa1")]}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            data = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/certs"
        r = c.start_rest(c.ingests[0], TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS="",
                         TESSERA_JWT_JWKS_URL=url, TESSERA_JWT_ISSUER=ISSUER,
                         TESSERA_JWT_AUDIENCE=AUDIENCE)
        assert call(r.url, "GET", "/studies", bearer(keys.token(tessera_role="read")))[0] == 200
        # the provider rotates: a new EC key appears; a token signed with it is
        # refused until the keys are re-read, which that token itself triggers
        served["keys"].append(jwk_of(keys.ec, "ec1"))
        t = keys.token(alg="ES256", tessera_role="read")
        deadline = time.time() + 15
        status = None
        while time.time() < deadline:
            status = call(r.url, "GET", "/studies", bearer(t))[0]
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200
        assert r.read_log().count("jwks loaded") >= 2
    finally:
        httpd.shutdown()


def test_label_change_seen_at_once(server):
    """A label put or removed through a replica counts at once there (its cached
    visibility answers are dropped)."""
    _, rest, _, (a, b, n), _ = server
    url = rest.url
    assert call(url, "GET", f"/studies/{n}", ALICE)[0] == 404
    assert call(url, "PUT", f"/studies/{n}/labels/groupA", ADMIN)[0] == 200
    assert call(url, "GET", f"/studies/{n}", ALICE)[0] == 200
    assert call(url, "DELETE", f"/studies/{n}/labels/groupA", ADMIN)[0] == 200
    assert call(url, "GET", f"/studies/{n}", ALICE)[0] == 404


def test_reads_share_the_visibility_cache(server):
    """GET /{level}/{id} of a label-scoped caller checks visibility in its own statement
    when this replica does not know the answer, and remembers a resource found
    (TESSERA_HTTP_VISIBILITY_CACHE); the answers are shared with the other resource
    routes. Repeated reads answer as the first; a "not visible" learned by another
    route is a 404 for GET too, the same as an unknown id's; a label removed through the
    replica counts at once for both."""
    _, rest, _, (a, b, n), _ = server
    url = rest.url
    first = call(url, "GET", f"/studies/{a}", ALICE)
    assert first[0] == 200
    for _ in range(3):
        again = call(url, "GET", f"/studies/{a}", ALICE)
        assert again[0] == 200 and json.loads(again[1]) == json.loads(first[1])
    assert call(url, "GET", f"/studies/{a}/series", ALICE)[0] == 200
    # not visible, learned first by another route
    assert call(url, "GET", f"/studies/{b}/series", ALICE)[0] == 404
    s, body, _ = call(url, "GET", f"/studies/{b}", ALICE)
    unknown = call(url, "GET", "/studies/00000000-00000000-00000000-00000000-00000000", ALICE)
    assert s == unknown[0] == 404 and body == unknown[1]
    assert call(url, "DELETE", f"/studies/{a}/labels/groupA", ADMIN)[0] == 200
    try:
        assert call(url, "GET", f"/studies/{a}", ALICE)[0] == 404
        assert call(url, "GET", f"/studies/{a}/series", ALICE)[0] == 404
    finally:
        assert call(url, "PUT", f"/studies/{a}/labels/groupA", ADMIN)[0] == 200
    assert call(url, "GET", f"/studies/{a}", ALICE)[0] == 200


def test_audit_names_keys_tokens_and_refusals(server, jwt_server):
    """The audit trail (test_audit.py) with this file's callers: an API key is
    "key:<id>" (WhoKind api-key), a token "jwt:<subject>" (token); a resource a
    label-scoped caller may not see is recorded with its 404."""
    c, rest, up, (a, b, n), _ = server
    r, keys, _, _ = jwt_server
    s, data, _ = call(rest.url, "POST", "/tessera/api-keys", ADMIN,
                      json.dumps({"Name": "audited", "Role": "read"}).encode())
    made = json.loads(data)
    assert call(rest.url, "GET", f"/studies/{a}", bearer(made["Key"]))[0] == 200
    assert call(rest.url, "GET", f"/studies/{b}", ALICE)[0] == 404
    t = keys.token(tessera_role="read", sub="dave")
    assert call(r.url, "GET", f"/studies/{n}", bearer(t))[0] == 200
    deadline = time.time() + 10
    want = {(f"key:{made['ID']}", "api-key", a, 200), ("alice", "user", b, 404),
            ("jwt:dave", "token", n, 200)}
    got = set()
    while time.time() < deadline and not want <= got:
        rows = js(rest.url, "/tessera/audit?since=0&limit=1000", ADMIN)
        got = {(row["Who"], row["WhoKind"], res, row["Outcome"]) for row in rows
               for res in row["Resources"]}
        time.sleep(0.2)
    assert want <= got, want - got
