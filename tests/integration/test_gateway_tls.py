"""`radveil serve --tls-cert --tls-key`: HTTPS with TLS 1.2 and 1.3 only and the cipher
suites of BCP 195 (RFC 9325), checked with the peers a site would use: `openssl s_client`
(refused versions and suites), curl and the Python `dicomweb-client` (storing and
retrieving real instances over HTTPS, verifying the server against the test's own CA).

Certificates are made here with `openssl req -x509` (ECDSA P-256 and RSA 2048).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import gateway
from conftest import clean_env, require_tool
from gateway import (  # noqa: F401  (serve is a fixture)
    dicomweb_client, get_testdata_file, multipart, real, requests, serve, to_bytes,
)

READY_ANY = re.compile(r"DICOMweb on (https?://\S+)/dicom-web")


@pytest.fixture(autouse=True)
def _https_ready_line(monkeypatch):
    # The server announces https:// when it serves TLS; gateway.Gateway waits for http://.
    monkeypatch.setattr(gateway, "READY", READY_ANY)


def make_cert(d: Path, kind: str) -> tuple[Path, Path]:
    """A self-signed server certificate for localhost and 127.0.0.1 (it is its own CA) and its
    key (mode 0600)."""
    openssl = require_tool("openssl")
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / f"{kind}-cert.pem", d / f"{kind}-key.pem"
    new_key = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec"
               else ["-newkey", "rsa:2048"])
    r = subprocess.run(
        [openssl, "req", "-x509", *new_key, "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    return cert, key


def tls_args(cert: Path, key: Path) -> tuple[str, ...]:
    return ("--tls-cert", str(cert), "--tls-key", str(key))


def s_client(port: int, *args: str) -> subprocess.CompletedProcess:
    """One handshake with `openssl s_client` (security level 0, so that the client itself
    offers old versions and weak suites: any refusal is the server's)."""
    return subprocess.run(
        [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
         "-servername", "localhost", *args],
        input="", capture_output=True, text=True, timeout=60)


def verifying(ca: Path):
    """A requests session that trusts `ca` only (trust_env off: REQUESTS_CA_BUNDLE in the
    environment would replace the session's CA)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca)
    return s


def handshake_ok(r: subprocess.CompletedProcess) -> bool:
    return r.returncode == 0 and re.search(r"Cipher is (?!\(NONE\))", r.stdout) is not None


def port_of(g) -> int:
    return int(g.url.split(":")[2].split("/")[0])


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_curl_and_dicomweb_client_store_and_retrieve_over_https(serve, tmp_path, kind):
    cert, key = make_cert(tmp_path / "pki", kind)
    g = serve(tmp_path / "data", *tls_args(cert, key))
    assert g.url.startswith("https://127.0.0.1:"), g.url
    url = g.url.replace("127.0.0.1", "localhost")

    # dicomweb-client, verifying the server against the test CA.
    client = dicomweb_client.DICOMwebClient(url=url, session=verifying(cert))
    ds = [real("CT_small.dcm"), real("MR_small.dcm")]
    resp = client.store_instances(ds)
    assert len(resp.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in resp, resp
    for d in ds:
        got = client.retrieve_instance(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID,
                                       media_types=(("application/dicom", "*"),))
        assert got.SOPInstanceUID == d.SOPInstanceUID and got.PixelData == d.PixelData
    assert {s["0020000D"]["Value"][0] for s in client.search_for_studies()} == \
        {d.StudyInstanceUID for d in ds}

    # curl: STOW-RS of a Part 10 file, then WADO-RS of it, byte-identical.
    curl = require_tool("curl")
    rt = real("rtplan.dcm")
    body, ct = multipart([to_bytes(rt)])
    (tmp_path / "body").write_bytes(body)
    r = subprocess.run(
        [curl, "-sS", "--fail", "--cacert", str(cert), "-H", f"Content-Type: {ct}",
         "--data-binary", f"@{tmp_path / 'body'}", f"{url}/studies"],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # The URLs the gateway writes are https URLs (RetrieveURL of the store response).
    stored = json.loads(r.stdout)
    assert stored["00081190"]["Value"][0].startswith("https://localhost:"), stored["00081190"]
    inst = f"{url}/studies/{rt.StudyInstanceUID}/series/{rt.SeriesInstanceUID}/instances/{rt.SOPInstanceUID}"
    r = subprocess.run(
        [curl, "-sS", "--fail", "--cacert", str(cert), "-D", str(tmp_path / "head"),
         "-H", 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*', inst],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert to_bytes(rt) in r.stdout

    # Without the CA the certificate is not trusted; plain HTTP on the port gets no answer.
    r = subprocess.run([curl, "-sS", f"{url}/studies"], capture_output=True, timeout=60)
    assert r.returncode != 0
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url.replace("https://", "http://") + "/studies", timeout=10)
    assert g.proc.poll() is None
    # SIGTERM stops it cleanly; its log names no patient of what it stored.
    assert g.stop() == 0
    log = "".join(g.log)
    assert "\x1b[" not in log, "colour escapes in a log that is not a terminal"
    for d in ds + [rt]:
        for v in (str(d.PatientName), str(d.PatientID)):
            assert not v or v not in log, v


def test_only_tls_1_2_and_1_3_with_bcp_195_suites(serve, tmp_path):
    cert, key = make_cert(tmp_path / "pki", "rsa")
    g = serve(tmp_path / "data", *tls_args(cert, key))
    port = port_of(g)
    low = "DEFAULT:@SECLEVEL=0"

    # TLS 1.0 and 1.1 are refused by the server (the client offers them at level 0).
    for version in ("-tls1", "-tls1_1"):
        r = s_client(port, version, "-cipher", low)
        assert not handshake_ok(r), (version, r.stdout[-2000:])
        assert "no protocols available" not in r.stderr, r.stderr  # the client did offer it
        # The server answered with an alert (not a client-side refusal).
        assert re.search(r"alert (protocol version|handshake failure)", r.stderr, re.I), r.stderr
    # TLS 1.2 and 1.3 are accepted, with forward secrecy and an AEAD cipher.
    r = s_client(port, "-tls1_2")
    assert handshake_ok(r), r.stdout[-2000:] + r.stderr
    assert "Protocol  : TLSv1.2" in r.stdout or "TLSv1.2" in r.stdout
    assert re.search(r"Cipher is ECDHE-RSA-(AES\d+-GCM|CHACHA20-POLY1305)", r.stdout), r.stdout
    r = s_client(port, "-tls1_3")
    assert handshake_ok(r), r.stdout[-2000:] + r.stderr
    assert re.search(r"Cipher is TLS_(AES_\d+_GCM|CHACHA20_POLY1305)", r.stdout), r.stdout

    # TLS 1.2 suites outside BCP 195 are refused: static RSA key exchange, CBC, SHA-1 MACs,
    # finite-field DHE, 3DES, RC4, NULL.
    for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA",
                 "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256", "DES-CBC3-SHA",
                 "RC4-SHA", "NULL-SHA256"):
        r = s_client(port, "-tls1_2", "-cipher", f"{weak}:@SECLEVEL=0")
        assert not handshake_ok(r), (weak, r.stdout[-1500:])
    # Each BCP 195 suite for an RSA certificate is accepted.
    for good in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                 "ECDHE-RSA-CHACHA20-POLY1305"):
        r = s_client(port, "-tls1_2", "-cipher", good)
        assert handshake_ok(r) and f"Cipher is {good}" in r.stdout, (good, r.stdout[-1500:])
    # The server is still serving.
    assert verifying(cert).get(g.url.replace("127.0.0.1", "localhost")[: -len("/dicom-web")] + "/healthz",
                 timeout=10).status_code == 200


def start_fails(radveil_bin, data: Path, *args: str) -> str:
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(data), "--listen", "127.0.0.1:0",
                        *args], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode != 0, r.stderr
    return r.stderr


def test_a_key_others_may_read_or_a_wrong_key_stops_the_start(radveil_bin, tmp_path):
    cert, key = make_cert(tmp_path / "pki", "ec")
    os.chmod(key, 0o644)
    err = start_fails(radveil_bin, tmp_path / "data", *tls_args(cert, key))
    assert "TLS private key" in err and "0644" in err, err
    # The key of another certificate, a certificate that is not one, a missing file.
    os.chmod(key, 0o600)
    _, other = make_cert(tmp_path / "other", "ec")
    err = start_fails(radveil_bin, tmp_path / "data", *tls_args(cert, other))
    assert "does not belong to the certificate" in err, err
    err = start_fails(radveil_bin, tmp_path / "data", *tls_args(key, key))
    assert "no readable PEM certificate" in err, err
    err = start_fails(radveil_bin, tmp_path / "data", "--tls-cert", str(cert))
    assert "--tls-key" in err, err
    # Nothing of the key is ever printed.
    body = b"".join(key.read_bytes().splitlines()[1:-1]).decode()
    assert body[:40] not in err


def test_https_beyond_loopback_still_needs_access_control(radveil_bin, tmp_path):
    cert, key = make_cert(tmp_path / "pki", "ec")
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(tmp_path / "data"),
                        "--listen", "0.0.0.0:0", *tls_args(cert, key)],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode != 0 and "loopback" in r.stderr, r.stderr


def test_a_stalled_tls_handshake_is_cut_off_while_others_are_served(serve, tmp_path):
    import socket
    import time
    cert, key = make_cert(tmp_path / "pki", "ec")
    g = serve(tmp_path / "data", *tls_args(cert, key), "--header-timeout", "2s")
    port = port_of(g)
    # One client says nothing; another sends the first bytes of a ClientHello and stalls.
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    stalled[1].sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
    t0 = time.monotonic()
    s = verifying(cert)
    healthz = g.url.replace("127.0.0.1", "localhost")[: -len("/dicom-web")] + "/healthz"
    while time.monotonic() - t0 < 1.5:
        t1 = time.monotonic()
        assert s.get(healthz, timeout=5).status_code == 200
        assert time.monotonic() - t1 < 1
        s.close()  # a new connection, and handshake, each time
        time.sleep(0.1)
    # The server closes both: reading ends (an alert may come first); a socket left open
    # would raise socket.timeout here.
    for c in stalled:
        c.settimeout(6)
        try:
            while c.recv(4096):
                pass
        except ConnectionResetError:
            pass
        c.close()
    assert 1.5 <= time.monotonic() - t0 <= 6


def test_https_from_the_settings_file_with_paths_relative_to_it(serve, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    cert, key = make_cert(data / "tls", "ec")
    (data / "radveil.toml").write_text('[tls]\ncert = "tls/ec-cert.pem"\nkey = "tls/ec-key.pem"\n')
    g = serve(data)
    assert g.url.startswith("https://"), g.url
    healthz = g.url.replace("127.0.0.1", "localhost")[: -len("/dicom-web")] + "/healthz"
    assert verifying(cert).get(healthz, timeout=10).status_code == 200
