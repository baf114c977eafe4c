"""`radveil serve --dev` and `radveil token`: access control on the DICOMweb gateway.

What is checked: without a token every DICOMweb route answers 401 (`WWW-Authenticate:
Bearer`); malformed, unsigned (`alg: none`), tampered, expired, not-yet-valid, wrong-audience,
wrong-issuer and foreign-key tokens are refused with 401 `error="invalid_token"` and never
echoed; a patient token reads its own study and gets, for another patient's study on WADO-RS
and DELETE, exactly the 404 of a missing study; staff tokens store and read; a clinician
deletes nothing and breaks the glass only with a reason; a researcher has no identified
access; without access control the server refuses to listen beyond loopback.

Tokens radveil would never make are signed here with the dev issuer's own key by a small
pure-Python Ed25519 (RFC 8032 §6), so that each refusal is for the one rule broken. The same
signer makes a minimal OpenID provider (discovery document and JWKS over HTTP on loopback)
for `--oidc-issuer`'s refresh rules; a real one (npm `oidc-provider`, `oidc/provider.mjs`,
installed by tools/setup-peers) issues JWT access tokens by the client credentials grant.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import clean_env, missing_peer, require_module
from gateway import Gateway, auth, token

pydicom = require_module("pydicom")
requests = require_module("requests")
from pydicom.data import get_testdata_file  # noqa: E402

DEV_ISSUER = "urn:radveil:dev"


@pytest.fixture
def gateway(radveil_bin, tmp_path):
    g = Gateway(radveil_bin, tmp_path / "data", "--dev")
    yield g
    g.stop()


# --- DICOM helpers -------------------------------------------------------------------------

def new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def instance(patient: str, study: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = patient
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.SOPInstanceUID = study + ".1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def stow(url: str, headers: dict, parts: list[bytes]):
    boundary = "radveilAccessBoundary"
    body = b""
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return requests.post(url + "/studies", data=body, timeout=60,
                         headers={"Content-Type": ct, **headers})


def wado(url: str, study: str, headers: dict):
    return requests.get(f"{url}/studies/{study}", timeout=60, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*', **headers})


# --- Ed25519 (RFC 8032 §6) and JWS, for the tokens radveil would not make ------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(a, b):
    A, B = (a[1] - a[0]) * (b[1] - b[0]) % _P, (a[1] + a[0]) * (b[1] + b[0]) % _P
    C, D = 2 * a[3] * b[3] * _D % _P, 2 * a[2] * b[2] % _P
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % _P, G * H % _P, F * G % _P, E * H % _P)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _compress(pt) -> bytes:
    zinv = pow(pt[2], _P - 2, _P)
    x, y = pt[0] * zinv % _P, pt[1] * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _base():
    y = 4 * pow(5, _P - 2, _P) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if x & 1:
        x = _P - x
    return (x, y, 1, x * y % _P)


_G = _base()


def ed25519(seed: bytes, msg: bytes) -> tuple[bytes, bytes]:
    """(public key, signature) of `msg` under `seed`."""
    h = hashlib.sha512(seed).digest()
    a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    pub = _compress(_mul(a, _G))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % _L
    big_r = _compress(_mul(r, _G))
    k = int.from_bytes(hashlib.sha512(big_r + pub + msg).digest(), "little") % _L
    return pub, big_r + int.to_bytes((r + k * a) % _L, 32, "little")


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jws(seed: bytes, claims: dict, header: dict | None = None) -> str:
    pub, _ = ed25519(seed, b"")
    header = header or {"alg": "EdDSA", "typ": "JWT", "kid": "dev-" + pub[:8].hex()}
    msg = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    return msg.decode() + "." + b64(ed25519(seed, msg)[1])


def dev_seed(data: Path) -> bytes:
    return bytes.fromhex((data / "keys" / "dev-issuer.key").read_text().strip())


def claims(**over) -> dict:
    now = int(time.time())
    c = {"iss": DEV_ISSUER, "sub": "tester", "aud": "radveil", "iat": now, "nbf": now,
         "exp": now + 600, "scope": "user/ImagingStudy.cruds", "roles": ["admin"]}
    c.update(over)
    return c


# --- tests ---------------------------------------------------------------------------------

def test_no_token_is_401_on_every_dicomweb_route(gateway):
    study = new_uid()
    for method, path in [("GET", f"/studies/{study}"), ("GET", "/studies"),
                         ("DELETE", f"/studies/{study}"), ("POST", "/studies"),
                         ("GET", f"/studies/{study}/series/1/instances/2"),
                         ("GET", "/no-such-route")]:
        r = requests.request(method, gateway.url + path, timeout=30)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error=" not in r.headers["WWW-Authenticate"]
    # A scheme other than Bearer is no token either.
    r = requests.get(gateway.url + f"/studies/{study}", headers={"Authorization": "Basic eDp5"},
                     timeout=30)
    assert r.status_code == 401
    # Health and metrics stay open (no PHI there).
    assert requests.get(gateway.url.replace("/dicom-web", "/healthz"), timeout=30).ok


def test_bad_tokens_are_401_and_never_echoed(gateway, radveil_bin, tmp_path):
    seed = dev_seed(gateway.data)
    now = int(time.time())
    good = jws(seed, claims())
    # The hand-made signer agrees with the server: a good token passes.
    assert wado(gateway.url, new_uid(), auth(good)).status_code == 404
    h, p, s = good.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[0] ^= 1
    other = Gateway(radveil_bin, tmp_path / "other", "--dev")
    try:
        foreign = token(radveil_bin, other.data, "--role", "admin",
                        "--scope", "user/ImagingStudy.cruds")
    finally:
        other.stop()
    bad = {
        "garbage": "not-a-token",
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + p + ".",
        "tampered payload": h + "." + b64(json.dumps(claims(sub="someone-else")).encode()) + "." + s,
        "tampered signature": h + "." + p + "." + b64(bytes(sig)),
        "expired": jws(seed, claims(exp=now - 3600)),
        "not yet valid": jws(seed, claims(nbf=now + 3600)),
        "wrong audience": jws(seed, claims(aud="another-service")),
        "wrong issuer": jws(seed, claims(iss="https://evil.example")),
        "another issuer's key": foreign,
        "oversize": jws(seed, claims(pad="x" * 9000)),
        "hmac": b64(b'{"alg":"HS256","typ":"JWT"}') + "." + p + "." + b64(b"x" * 32),
    }
    for why, t in bad.items():
        r = wado(gateway.url, new_uid(), auth(t))
        assert r.status_code == 401, (why, r.status_code)
        challenge = r.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in challenge, why
        # The token (or any part of it) is never echoed.
        for piece in t.split("."):
            if len(piece) > 8:
                assert piece not in r.text and piece not in challenge, why
        assert not any(piece in line for line in gateway.log for piece in t.split(".")
                       if len(piece) > 8), why


def test_patient_token_sees_only_its_patient(gateway, radveil_bin):
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    mine, theirs, missing = new_uid(), new_uid(), new_uid()
    r = stow(gateway.url, auth(admin), [instance("PID-A1", mine), instance("PID-B2", theirs)])
    assert r.status_code == 200, r.text
    patient = token(radveil_bin, gateway.data, "--patient", "PID-A1")
    assert wado(gateway.url, mine, auth(patient)).status_code == 200
    other = wado(gateway.url, theirs, auth(patient))
    absent = wado(gateway.url, missing, auth(patient))
    assert other.status_code == absent.status_code == 404
    assert other.text == absent.text and other.headers.get("Content-Type") == \
        absent.headers.get("Content-Type")
    series = requests.get(f"{gateway.url}/studies/{theirs}/series/{theirs}.1/instances/{theirs}.1.1",
                          headers=auth(patient), timeout=30)
    assert series.status_code == 404
    # DELETE: no delete scope, so refused before any lookup (403 either way, no difference
    # between studies).
    d1 = requests.delete(f"{gateway.url}/studies/{theirs}", headers=auth(patient), timeout=30)
    d2 = requests.delete(f"{gateway.url}/studies/{missing}", headers=auth(patient), timeout=30)
    assert d1.status_code == d2.status_code == 403
    # Even with a delete scope, another patient's study is exactly a missing one.
    deleter = token(radveil_bin, gateway.data, "--patient", "PID-A1",
                    "--scope", "patient/ImagingStudy.rds")
    d1 = requests.delete(f"{gateway.url}/studies/{theirs}", headers=auth(deleter), timeout=30)
    d2 = requests.delete(f"{gateway.url}/studies/{missing}", headers=auth(deleter), timeout=30)
    assert d1.status_code == d2.status_code == 404 and d1.text == d2.text
    assert wado(gateway.url, theirs, auth(admin)).status_code == 200, "still there"
    # A patient token cannot store (no c scope), and with one, only its own patient's.
    assert stow(gateway.url, auth(patient), [instance("PID-A1", new_uid())]).status_code == 403
    writer = token(radveil_bin, gateway.data, "--patient", "PID-A1",
                   "--scope", "patient/ImagingStudy.crs")
    r = stow(gateway.url, auth(writer), [instance("PID-B2", new_uid())])
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0124]
    # Its own study deletes.
    assert requests.delete(f"{gateway.url}/studies/{mine}", headers=auth(deleter),
                           timeout=30).status_code == 204
    assert wado(gateway.url, mine, auth(admin)).status_code == 404


def test_patient_claim_with_issuer(gateway, radveil_bin):
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    ds = pydicom.dcmread(io.BytesIO(instance("PID-C3", study := new_uid())))
    ds.IssuerOfPatientID = "HOSP-X"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert stow(gateway.url, auth(admin), [buf.getvalue()]).status_code == 200
    same_id_no_issuer = token(radveil_bin, gateway.data, "--patient", "PID-C3")
    with_issuer = token(radveil_bin, gateway.data, "--patient", "PID-C3",
                        "--issuer-of-patient-id", "HOSP-X")
    assert wado(gateway.url, study, auth(same_id_no_issuer)).status_code == 404
    assert wado(gateway.url, study, auth(with_issuer)).status_code == 200


def test_staff_store_and_read(gateway, radveil_bin):
    clinician = token(radveil_bin, gateway.data, "--role", "clinician",
                      "--scope", "user/ImagingStudy.crs")
    study = new_uid()
    assert stow(gateway.url, auth(clinician), [instance("PID-D4", study)]).status_code == 200
    r = wado(gateway.url, study, auth(clinician))
    assert r.status_code == 200 and len(r.content) > 1000
    # Clinicians do not delete, whatever the scope.
    wide = token(radveil_bin, gateway.data, "--role", "clinician",
                 "--scope", "user/ImagingStudy.cruds")
    r = requests.delete(f"{gateway.url}/studies/{study}", headers=auth(wide), timeout=30)
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    assert requests.delete(f"{gateway.url}/studies/{study}", headers=auth(admin),
                           timeout=30).status_code == 204
    # A service token (system/, no role) reads.
    service = token(radveil_bin, gateway.data, "--scope", "system/*.rs")
    assert wado(gateway.url, study, auth(service)).status_code == 404


def test_break_glass_needs_a_reason(gateway, radveil_bin):
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    study = new_uid()
    assert stow(gateway.url, auth(admin), [instance("PID-E5", study)]).status_code == 200
    clinician = token(radveil_bin, gateway.data, "--role", "clinician", "--patient", "PID-OTHER",
                      "--scope", "patient/ImagingStudy.rs")
    assert wado(gateway.url, study, auth(clinician)).status_code == 404
    r = wado(gateway.url, study, auth(clinician, **{"Break-Glass-Reason": ""}))
    assert r.status_code == 403
    r = wado(gateway.url, study, auth(clinician, **{"Break-Glass-Reason": "unconscious in ER"}))
    assert r.status_code == 200
    assert gateway.wait_for_log("break-glass"), gateway.log
    # Only clinicians break the glass.
    patient = token(radveil_bin, gateway.data, "--patient", "PID-OTHER")
    r = wado(gateway.url, study, auth(patient, **{"Break-Glass-Reason": "curious"}))
    assert r.status_code == 403


def test_researcher_has_no_identified_access(gateway, radveil_bin):
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    study = new_uid()
    assert stow(gateway.url, auth(admin), [instance("PID-F6", study)]).status_code == 200
    for role in ["researcher", "auditor"]:
        t = token(radveil_bin, gateway.data, "--role", role, "--scope", "user/*.cruds")
        assert wado(gateway.url, study, auth(t)).status_code == 403, role
        assert stow(gateway.url, auth(t), [instance("PID-F6", new_uid())]).status_code == 403
        assert requests.get(f"{gateway.url}/studies", headers=auth(t),
                            timeout=30).status_code == 403, role
        assert requests.delete(f"{gateway.url}/studies/{study}", headers=auth(t),
                               timeout=30).status_code == 403, role


def test_listening_beyond_loopback_needs_access_control(radveil_bin, tmp_path):
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(tmp_path / "open"),
                        "--listen", "0.0.0.0:0"], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert r.returncode != 0 and "loopback" in r.stderr
    assert not (tmp_path / "open" / "keys" / "kek").exists()
    g = Gateway(radveil_bin, tmp_path / "dev", "--dev", listen="0.0.0.0:0")
    try:
        assert requests.get(g.url + "/studies", timeout=30).status_code == 401
    finally:
        g.stop()


def test_token_needs_the_dev_issuer(radveil_bin, tmp_path):
    r = subprocess.run([str(radveil_bin), "token", "--data", str(tmp_path / "none")],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode != 0 and "--dev" in r.stderr
    assert not (tmp_path / "none").exists()


class Provider:
    """A minimal OpenID provider on loopback: the discovery document and one Ed25519 JWKS,
    counting the requests for each path."""

    def __init__(self, name_issuer: str | None = None):
        self.seed = os.urandom(32)
        self.kid = "k1"
        self.hits: dict[str, int] = {}
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                provider.hits[self.path] = provider.hits.get(self.path, 0) + 1
                if self.path == "/.well-known/openid-configuration":
                    doc = {"issuer": name_issuer or provider.url,
                           "jwks_uri": provider.url + "/jwks"}
                elif self.path == "/jwks":
                    pub, _ = ed25519(provider.seed, b"")
                    doc = {"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig",
                                     "alg": "EdDSA", "kid": provider.kid, "x": b64(pub)}]}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, seed: bytes | None = None, **over) -> str:
        c = claims(iss=self.url, aud="radveil-test", roles=None,
                   realm_access={"roles": ["admin"]})
        c.update(over)
        return jws(seed or self.seed, c, {"alg": "EdDSA", "typ": "JWT", "kid": self.kid})

    def close(self):
        self.server.shutdown()


def test_oidc_issuer_by_discovery(radveil_bin, tmp_path):
    idp = Provider()
    g = Gateway(radveil_bin, tmp_path / "data", "--oidc-issuer", idp.url,
                "--audience", "radveil-test", "--roles-claim", "realm_access.roles")
    try:
        assert idp.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
        admin = idp.token()
        study = new_uid()
        assert stow(g.url, auth(admin), [instance("PID-G7", study)]).status_code == 200
        assert wado(g.url, study, auth(admin)).status_code == 200
        # The role comes from the nested claim: a researcher there reads nothing.
        researcher = idp.token(realm_access={"roles": ["researcher"]})
        assert wado(g.url, study, auth(researcher)).status_code == 403
        # Signed by a key the provider does not publish, under its kid: bad signature.
        forged = idp.token(seed=os.urandom(32))
        assert wado(g.url, study, auth(forged)).status_code == 401
        # An unknown kid is refused; within 30 s of the last fetch the keys are not fetched
        # again, however many such tokens come.
        idp.kid = "k2"
        for _ in range(5):
            r = wado(g.url, study, auth(idp.token()))
            assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
        assert idp.hits["/jwks"] == 1
        # The dev issuer is not trusted here, nor another audience.
        assert wado(g.url, study, auth(jws(idp.seed, claims()))).status_code == 401
        idp.kid = "k1"
        assert wado(g.url, study, auth(idp.token(aud="radveil"))).status_code == 401
    finally:
        g.stop()
        idp.close()


def test_oidc_issuer_must_name_itself(radveil_bin, tmp_path):
    idp = Provider(name_issuer="https://someone-else.example")
    try:
        r = subprocess.run([str(radveil_bin), "serve", "--data", str(tmp_path / "d"),
                            "--listen", "127.0.0.1:0", "--oidc-issuer", idp.url],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
        assert r.returncode != 0 and "issuer differs" in r.stderr
        # Plain HTTP is for loopback only.
        r = subprocess.run([str(radveil_bin), "serve", "--data", str(tmp_path / "d"),
                            "--listen", "127.0.0.1:0", "--oidc-issuer", "http://idp.example"],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
        assert r.returncode != 0 and "https" in r.stderr
    finally:
        idp.close()


def studies_seen(url: str, headers: dict, query: str = "") -> set[str]:
    r = requests.get(f"{url}/studies{query}", headers={"Accept": "application/dicom+json",
                                                       **headers}, timeout=30)
    assert r.status_code in (200, 204), r.status_code
    return {s["0020000D"]["Value"][0] for s in (r.json() if r.content else [])}


def test_patient_token_searches_only_its_patient(gateway, radveil_bin):
    admin = token(radveil_bin, gateway.data, "--role", "admin",
                  "--scope", "user/ImagingStudy.cruds")
    mine, theirs, missing = new_uid(), new_uid(), new_uid()
    assert stow(gateway.url, auth(admin),
                [instance("PID-H8", mine), instance("PID-J9", theirs)]).status_code == 200
    patient = token(radveil_bin, gateway.data, "--patient", "PID-H8")
    assert studies_seen(gateway.url, auth(patient)) == {mine}
    assert studies_seen(gateway.url, auth(patient), f"?StudyInstanceUID={theirs}") == set()
    assert studies_seen(gateway.url, auth(admin)) >= {mine, theirs}
    # Nested searches under another patient's study look like those under a missing one.
    a = requests.get(f"{gateway.url}/studies/{theirs}/series", headers=auth(patient), timeout=30)
    b = requests.get(f"{gateway.url}/studies/{missing}/series", headers=auth(patient), timeout=30)
    assert (a.status_code, a.content) == (b.status_code, b.content)


# --- RS256 (RSA PKCS #1 v1.5), the usual algorithm of OpenID providers ---------------------

def _probable_prime(bits: int) -> int:
    import secrets
    while True:
        n = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if all(n % p for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            d, r = n - 1, 0
            while d % 2 == 0:
                d, r = d // 2, r + 1
            for _ in range(32):
                x = pow(secrets.randbelow(n - 3) + 2, d, n)
                if x in (1, n - 1):
                    continue
                for _ in range(r - 1):
                    x = pow(x, 2, n)
                    if x == n - 1:
                        break
                else:
                    break
            else:
                return n


def rsa_key(bits=2048) -> tuple[int, int, int]:
    """(n, e, d)."""
    e = 65537
    while True:
        p, q = _probable_prime(bits // 2), _probable_prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            return p * q, e, pow(e, -1, phi)


def rs256(key: tuple[int, int, int], claims_: dict, kid: str) -> str:
    n, _, d = key
    k = (n.bit_length() + 7) // 8
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    msg = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims_).encode())).encode()
    info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(msg).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(info) - 3) + b"\x00" + info
    sig = pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
    return msg.decode() + "." + b64(sig)


def test_rs256_from_a_jwks_file(radveil_bin, tmp_path):
    key = rsa_key()
    n, e, _ = key
    size = (n.bit_length() + 7) // 8
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{
        "kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256",
        "n": b64(n.to_bytes(size, "big")), "e": b64(e.to_bytes(3, "big"))}]}))
    iss = "https://idp.example/realms/radveil"
    g = Gateway(radveil_bin, tmp_path / "data", "--jwks", str(jwks), "--issuer", iss)
    try:
        good = rs256(key, claims(iss=iss), "rsa1")
        study = new_uid()
        assert stow(g.url, auth(good), [instance("PID-K1", study)]).status_code == 200
        assert wado(g.url, study, auth(good)).status_code == 200
        assert wado(g.url, study, auth(rs256(key, claims(iss=iss, exp=int(time.time()) - 3600),
                                              "rsa1"))).status_code == 401
        assert wado(g.url, study, auth(rs256(key, claims(iss="https://other.example"),
                                              "rsa1"))).status_code == 401
        h, p, s = good.split(".")
        tampered = h + "." + b64(json.dumps(claims(iss=iss, sub="x")).encode()) + "." + s
        assert wado(g.url, study, auth(tampered)).status_code == 401
        # The RSA key is no HMAC secret.
        hs = b64(b'{"alg":"HS256","typ":"JWT","kid":"rsa1"}') + "." + p + "."
        hs += b64(hmac_sha256(jwks.read_bytes(), (hs[:-1]).encode()))
        assert wado(g.url, study, auth(hs)).status_code == 401
    finally:
        g.stop()


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    import hmac
    return hmac.new(key, msg, hashlib.sha256).digest()


OIDC_DIR = Path(__file__).resolve().parent / "oidc"


@pytest.fixture
def openid_provider():
    """The real OpenID provider (oidc/provider.mjs) on a free loopback port: its issuer URL."""
    node = shutil.which("node")
    if not node or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        missing_peer("the npm package oidc-provider (tools/setup-peers runs "
                     "`npm ci --prefix tests/integration/oidc`)")
    proc = subprocess.Popen([node, str(OIDC_DIR / "provider.mjs")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**clean_env(), "PATIENT": "PID-OP1"})
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    try:
        assert found and found[0].startswith("READY "), "oidc-provider did not start"
        yield found[0].split()[1]
    finally:
        proc.kill()
        proc.wait()


def test_real_openid_provider(openid_provider, radveil_bin, tmp_path):
    iss = openid_provider

    def grant(client: str, scope: str) -> str:
        r = requests.post(iss + "/token", auth=(client, client + "-secret"), timeout=30,
                          data={"grant_type": "client_credentials", "scope": scope})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    g = Gateway(radveil_bin, tmp_path / "data", "--oidc-issuer", iss)
    try:
        admin = grant("admin-service", "system/ImagingStudy.cruds")
        mine, theirs = new_uid(), new_uid()
        assert stow(g.url, auth(admin),
                    [instance("PID-OP1", mine), instance("PID-OP2", theirs)]).status_code == 200
        patient = grant("patient-app", "patient/ImagingStudy.rs")
        assert wado(g.url, mine, auth(patient)).status_code == 200
        assert wado(g.url, theirs, auth(patient)).status_code == 404
        assert studies_seen(g.url, auth(patient)) == {mine}
        assert requests.delete(f"{g.url}/studies/{theirs}", headers=auth(patient),
                               timeout=30).status_code == 403
        # The provider's token with its payload changed is refused.
        h, p, s = patient.split(".")
        body = json.loads(base64.urlsafe_b64decode(p + "=="))
        body["patient"] = "PID-OP2"
        forged = h + "." + b64(json.dumps(body).encode()) + "." + s
        r = wado(g.url, theirs, auth(forged))
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        # A read-only service token neither stores nor deletes.
        reader = grant("admin-service", "system/ImagingStudy.rs")
        assert wado(g.url, theirs, auth(reader)).status_code == 200
        assert requests.delete(f"{g.url}/studies/{theirs}", headers=auth(reader),
                               timeout=30).status_code == 403
        assert requests.delete(f"{g.url}/studies/{theirs}", headers=auth(admin),
                               timeout=30).status_code == 204
    finally:
        g.stop()
