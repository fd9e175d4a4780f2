"""HTTPS in rest (libmicrohttpd with GnuTLS): TESSERA_HTTP_TLS_CERT and
TESSERA_HTTP_TLS_KEY, certificates made here with openssl, checked with curl
--cacert; a renewed certificate is taken on SIGHUP without a restart (new
handshakes get it), and a broken one is refused while the old one keeps
serving."""
import json
import signal
import subprocess
import time

import pytest

from conftest import BUILD, ROOT

DATA = ROOT / "tests/data/dicom"


def make_ca(d, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem")],
                   check=True, capture_output=True)
    return d / f"{name}.pem", d / f"{name}.key"


def make_server_cert(d, ca, ca_key, name, key_type=("rsa:2048",)):
    """A server certificate for 127.0.0.1 and localhost signed by ca."""
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", "-newkey", *key_type, "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey",
                    str(ca_key), "-CAcreateserial", "-days", "1", "-out", str(crt),
                    "-extfile", str(ext)], check=True, capture_output=True)
    return crt, key


def curl(url, *args):
    p = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
                        *args, url], capture_output=True)
    body, _, code = p.stdout.rpartition(b"\n")
    return p.returncode, code.decode(), body, p.stderr.decode(errors="replace")


@pytest.fixture
def tls(cluster, tmp_path):
    ca1, ca1_key = make_ca(tmp_path, "ca1")
    crt, key = make_server_cert(tmp_path, ca1, ca1_key, "server1")
    live_crt, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_crt.write_bytes(crt.read_bytes())
    live_key.write_bytes(key.read_bytes())
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing, TESSERA_HTTP_TLS_CERT=live_crt, TESSERA_HTTP_TLS_KEY=live_key,
                              TESSERA_HTTP_AUTH="on", TESSERA_HTTP_USERS="admin:s3cret")
    url = f"https://127.0.0.1:{rest.port}"
    return cluster, rest, url, tmp_path, ca1, ca1_key, live_crt, live_key


def test_https_with_curl(tls):
    _, rest, url, d, ca1, _, _, _ = tls
    rc, code, body, err = curl(url + "/system", "--cacert", str(ca1), "-u", "admin:s3cret")
    assert rc == 0 and code == "200", err
    assert "ApiVersion" in json.loads(body)
    # an upload and a read over HTTPS
    rc, code, body, err = curl(url + "/instances", "--cacert", str(ca1), "-u", "admin:s3cret",
                               "--data-binary", f"@{DATA / 'CT_small.dcm'}")
    assert code == "200", (body, err)
    iid = json.loads(body)["ID"]
    rc, code, body, _ = curl(url + f"/instances/{iid}/file", "--cacert", str(ca1), "-u",
                             "admin:s3cret")
    assert code == "200" and body[128:132] == b"DICM"
    # without the CA the server is not trusted; plain HTTP on the port gets no answer
    rc, code, _, err = curl(url + "/system")
    assert rc == 60, err  # CURLE_PEER_FAILED_VERIFICATION
    rc, code, _, _ = curl(f"http://127.0.0.1:{rest.port}/system")
    assert code != "200"
    assert "tls=on" in rest.read_log()


def test_https_large_retrieve_goes_through_tls(tls):
    """A WADO-RS retrieve of files as stored, which libmicrohttpd sends from mappings
    of the files over plain HTTP (test_dicomweb.py), is read into its buffer and
    encrypted by GnuTLS over HTTPS (nothing mapped: GnuTLS would touch the pages
    itself): the whole multipart, the files as stored, Content-Length right, the
    connection kept."""
    import os

    import pydicom
    _, rest, url, d, ca1, _, _, _ = tls
    ds = pydicom.dcmread(DATA / "CT_small.dcm")
    ds.Rows = ds.Columns = 1448
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 16, 15, 1
    files = []
    for n in range(2):
        ds.PixelData = os.urandom(1448 * 1448 * 2)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.4711.99.{n}"
        f = d / f"big{n}.dcm"
        ds.save_as(f)
        files.append(f.read_bytes())
        rc, code, body, err = curl(url + "/instances", "--cacert", str(ca1), "-u",
                                   "admin:s3cret", "--data-binary", f"@{f}")
        assert code == "200", (body, err)
    p = subprocess.run(["curl", "-sS", "-D", str(d / "h"), "-o", str(d / "b"), "--max-time", "60",
                        "--cacert", str(ca1), "-u", "admin:s3cret",
                        f"{url}/dicom-web/studies/{ds.StudyInstanceUID}"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    head = (d / "h").read_text().lower()
    assert "connection: close" not in head, head
    body = (d / "b").read_bytes()
    assert int(head.split("content-length:")[1].split()[0]) == len(body)
    for content in files:
        assert content in body
    assert body.endswith(b"--\r\n")


def test_reload_on_sighup(tls):
    _, rest, url, d, ca1, ca1_key, live_crt, live_key = tls
    ca2, ca2_key = make_ca(d, "ca2")
    crt2, key2 = make_server_cert(d, ca2, ca2_key, "server2", key_type=("ec", "-pkeyopt", "ec_paramgen_curve:P-256"))
    # a broken pair first (the new certificate with the old key): refused, the old stays
    live_crt.write_bytes(crt2.read_bytes())
    rest.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "not the key of" in rest.read_log()
    assert curl(url + "/system", "--cacert", str(ca1), "-u", "admin:s3cret")[1] == "200"
    # now the matching key: new handshakes get the new certificate
    live_key.write_bytes(key2.read_bytes())
    rest.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and \
            curl(url + "/system", "--cacert", str(ca2), "-u", "admin:s3cret")[1] != "200":
        time.sleep(0.2)
    assert curl(url + "/system", "--cacert", str(ca2), "-u", "admin:s3cret")[1] == "200"
    assert curl(url + "/system", "--cacert", str(ca1), "-u", "admin:s3cret")[0] == 60
    assert rest.proc.poll() is None  # the same process all along
    assert rest.read_log().count("https certificate loaded") == 1


def test_bad_certificate_refuses_to_start(cluster, tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    ing = cluster.start_ingest()
    with pytest.raises(RuntimeError) as e:
        cluster.start_rest(ing, TESSERA_HTTP_TLS_CERT=tmp_path / "bad.pem",
                           TESSERA_HTTP_TLS_KEY=tmp_path / "bad.pem")
    assert "TESSERA_HTTP_TLS_CERT" in str(e.value)
    with pytest.raises(RuntimeError) as e:
        cluster.start_rest(ing, TESSERA_HTTP_TLS_CERT=tmp_path / "bad.pem")
    assert "both" in str(e.value)
