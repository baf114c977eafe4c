"""RFC 3161 certified timestamps on DICOM signatures, against DCMTK's dcmsign and OpenSSL's
timestamp authority (`openssl ts -reply`): timestamps made by radveil pass
`dcmsign --verify --require-ts`, timestamps made with dcmsign (`+ts`, `--insert-timestamp`)
verify in radveil, and a changed, misplaced, stale or untrusted timestamp is caught."""

from __future__ import annotations

import http.server
import json
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import require_module, require_tool

import corpus

pydicom = require_module("pydicom")

SRC = "CT_small.dcm"


def tsa_reply(keys, query: Path, reply: Path, config="tsa.cnf"):
    tsa = keys["tsa"]
    r = subprocess.run([require_tool("openssl"), "ts", "-reply", "-config", tsa / config, "-queryfile", query,
                        "-out", reply], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def dcmsign_verify(dcmsign, keys, path, *extra):
    cert = keys["rsa"][1]
    return subprocess.run([dcmsign, "--verify", "--require-sig", "+cf", str(cert), "+cf",
                           str(keys["tsa"] / "tsaca.pem"), *extra, str(path)], capture_output=True, text=True)


def verify(radveil, keys, *paths, trust_tsa=True, extra=()):
    trust = ["--trust", keys["rsa"][1], "--trust", keys["p256"][1]]
    if trust_tsa:
        trust += ["--trust", keys["tsa"] / "tsaca.pem"]
    r = radveil.run("verify", *paths, "--json", *trust, *extra)
    return r, [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


def signed(radveil, keys, tmp_path, name="signed") -> Path:
    key, cert = keys["rsa"]
    out = tmp_path / name
    r = radveil.run("sign", corpus.pydicom_test_dir() / SRC, "--key", key, "--cert", cert, "--out", out)
    assert r.returncode == 0, r.stderr
    return out / SRC


def stamp_offline(radveil, keys, tmp_path, file: Path, config="tsa.cnf") -> Path:
    q = tmp_path / "queries"
    r = radveil.run("timestamp", "query", file, "--out", q)
    assert r.returncode == 0, r.stderr
    query = q / f"{file.name}.tsq"
    reply = tmp_path / "reply.tsr"
    tsa_reply(keys, query, reply, config)
    out = tmp_path / "stamped"
    r = radveil.run("timestamp", "insert", file, "--reply", reply, "--query", query, "--out", out)
    assert r.returncode == 0, r.stderr
    return out / file.name


@pytest.mark.parametrize("config", ["tsa.cnf", "tsa-v1.cnf"])
def test_radveil_timestamps_pass_dcmsign(radveil, dcmsign, keys, tmp_path, config):
    stamped = stamp_offline(radveil, keys, tmp_path, signed(radveil, keys, tmp_path), config)
    v = dcmsign_verify(dcmsign, keys, stamped, "--require-ts")
    assert v.returncode == 0 and "Timestamp Verification : OK" in v.stdout + v.stderr, v.stdout + v.stderr
    r, res = verify(radveil, keys, stamped, extra=("--require-timestamp",))
    assert r.returncode == 0, res
    (sig,) = res
    assert sig["status"] == "valid" and sig["timestamp"]["status"] == "valid", sig
    assert sig["timestamp"]["tsa"] == "CN=radveil test TSA" and sig["timestamp"]["policy"] == "1.2.3.4.1"


def test_radveil_queries_are_valid_rfc3161_for_openssl(radveil, keys, tmp_path):
    openssl = require_tool("openssl")
    file = signed(radveil, keys, tmp_path)
    q = tmp_path / "q"
    r = radveil.run("timestamp", "query", file, "--out", q, "--ts-mac", "sha512", "--ts-policy", "1.2.3.4.5")
    assert r.returncode == 0, r.stderr
    text = subprocess.run([openssl, "ts", "-query", "-in", q / f"{SRC}.tsq", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "Hash Algorithm: sha512" in text and "Policy OID: 1.2.3.4.5" in text
    assert "Nonce: 0x" in text and "Certificate required: yes" in text
    reply = tmp_path / "r.tsr"
    tsa_reply(keys, q / f"{SRC}.tsq", reply)
    v = subprocess.run([openssl, "ts", "-verify", "-queryfile", q / f"{SRC}.tsq", "-in", reply, "-CAfile",
                        keys["tsa"] / "tsaca.pem"], capture_output=True, text=True)
    assert v.returncode == 0 and "Verification: OK" in v.stdout, v.stdout + v.stderr


@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_dcmsign_timestamps_verify_in_radveil(radveil, dcmsign, keys, tmp_path, kind):
    key, cert = keys[kind]
    src = corpus.pydicom_test_dir() / SRC
    sig, tsq, uid, tsr, out = (tmp_path / n for n in ("s.dcm", "q.tsq", "uid.dcm", "r.tsr", "st.dcm"))
    r = subprocess.run([dcmsign, "--sign", str(key), str(cert), "+ts", str(tsq), str(uid), str(src), str(sig)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tsa_reply(keys, tsq, tsr)
    r = subprocess.run([dcmsign, "--insert-timestamp", str(tsq), str(tsr), str(uid), str(sig), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r, res = verify(radveil, keys, out, extra=("--require-timestamp",))
    assert r.returncode == 0 and res[0]["timestamp"]["status"] == "valid", res
    # The TSA's CA is not trusted: the signature is valid but untrusted.
    r, res = verify(radveil, keys, out, trust_tsa=False)
    assert r.returncode == 1 and res[0]["status"] == "untrusted" and "timestamp authority" in res[0]["detail"], res


def test_changed_timestamp_is_invalid(radveil, dcmsign, keys, tmp_path):
    stamped = stamp_offline(radveil, keys, tmp_path, signed(radveil, keys, tmp_path))
    ds = pydicom.dcmread(stamped)
    item = ds.DigitalSignaturesSequence[0]
    token = bytes(item[0x0400, 0x0310].value)
    year = token.index(b"2026")  # the TSTInfo genTime (GeneralizedTime): the only four-digit year
    item[0x0400, 0x0310].value = token[:year] + b"2025" + token[year + 4:]
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    r, res = verify(radveil, keys, bad)
    assert r.returncode == 1 and res[0]["status"] == "invalid" and "timestamp" in res[0]["detail"], res
    v = dcmsign_verify(dcmsign, keys, bad)
    assert v.returncode != 0, "dcmsign should reject the changed timestamp too"


def test_timestamp_moved_to_another_signature_is_invalid(radveil, dcmsign, keys, tmp_path):
    a = stamp_offline(radveil, keys, tmp_path / "a", signed(radveil, keys, tmp_path / "a"))
    b = signed(radveil, keys, tmp_path / "b")
    ds_a, ds_b = pydicom.dcmread(a), pydicom.dcmread(b)
    item = ds_b.DigitalSignaturesSequence[0]
    item[0x0400, 0x0305] = ds_a.DigitalSignaturesSequence[0][0x0400, 0x0305]
    item[0x0400, 0x0310] = ds_a.DigitalSignaturesSequence[0][0x0400, 0x0310]
    moved = tmp_path / "moved.dcm"
    ds_b.save_as(moved)
    r, res = verify(radveil, keys, moved)
    assert r.returncode == 1 and res[0]["status"] == "invalid" and "imprint" in res[0]["detail"], res
    assert dcmsign_verify(dcmsign, keys, moved).returncode != 0


def test_insert_refuses_foreign_or_stale_replies(radveil, keys, tmp_path):
    a = signed(radveil, keys, tmp_path, "a")
    b = signed(radveil, keys, tmp_path, "b")
    q1, q2 = tmp_path / "q1", tmp_path / "q2"
    assert radveil.run("timestamp", "query", a, "--out", q1).returncode == 0
    assert radveil.run("timestamp", "query", a, "--out", q2).returncode == 0
    reply = tmp_path / "r.tsr"
    tsa_reply(keys, q1 / f"{SRC}.tsq", reply)
    # A reply to a query made for file a does not stamp file b's signature.
    r = radveil.run("timestamp", "insert", b, "--reply", reply, "--out", tmp_path / "o1")
    assert r.returncode == 2 and "imprint" in r.stderr, r.stderr
    # The same signature, but another query (its nonce differs): a stale or replayed reply.
    r = radveil.run("timestamp", "insert", a, "--reply", reply, "--query", q2 / f"{SRC}.tsq", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "nonce" in r.stderr, r.stderr
    assert not (tmp_path / "o1" / SRC).exists() and not (tmp_path / "o2" / SRC).exists()
    # Garbage is refused with a message, not a crash.
    junk = tmp_path / "junk.tsr"
    junk.write_bytes(b"\x30\x03\x02\x01\x00")
    r = radveil.run("timestamp", "insert", a, "--reply", junk, "--out", tmp_path / "o3")
    assert r.returncode == 2 and "timestamp reply" in r.stderr, r.stderr


def test_require_timestamp_fails_unstamped_signatures_like_dcmsign(radveil, dcmsign, keys, tmp_path):
    file = signed(radveil, keys, tmp_path)
    r, res = verify(radveil, keys, file, extra=("--require-timestamp",))
    assert r.returncode == 1 and res[0]["status"] == "unstamped", res
    assert dcmsign_verify(dcmsign, keys, file, "--require-ts").returncode != 0
    r, res = verify(radveil, keys, file)
    assert r.returncode == 0 and res[0]["status"] == "valid", res


class _Tsa(http.server.BaseHTTPRequestHandler):
    """An RFC 3161 HTTP timestamp authority (§3.4) around `openssl ts -reply`. openssl's
    serial-number file does not survive concurrent runs (it refuses with "Error during
    serial number generation"), so requests are answered one at a time."""

    keys: dict = {}
    seen: list = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.headers["Content-Type"])
        with tempfile.TemporaryDirectory() as d, self.lock:
            q, r = Path(d) / "q.tsq", Path(d) / "r.tsr"
            q.write_bytes(body)
            tsa_reply(self.keys, q, r)
            reply = r.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def tsa_url(keys):
    _Tsa.keys, _Tsa.seen = keys, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tsa)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    server.shutdown()


def test_online_tsa_at_signing_and_for_dcmsign_signatures(radveil, dcmsign, keys, tmp_path, tsa_url):
    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir()
    files = [src / f for f in ("CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm")]
    out = tmp_path / "signed"
    r = radveil.run("sign", *files, "--key", key, "--cert", cert, "--tsa", tsa_url, "--out", out)
    assert r.returncode == 0, r.stderr
    assert _Tsa.seen == ["application/timestamp-query"] * 3
    for f in files:
        v = dcmsign_verify(dcmsign, keys, out / f.name, "--require-ts")
        assert v.returncode == 0, f"{f.name}: {v.stdout}{v.stderr}"
    r, res = verify(radveil, keys, *[out / f.name for f in files], extra=("--require-timestamp",))
    assert r.returncode == 0 and all(x["timestamp"]["status"] == "valid" for x in res), res
    # A dcmsign signature stamped afterwards (`radveil timestamp stamp`).
    theirs = tmp_path / "theirs.dcm"
    subprocess.run([dcmsign, "--sign", str(key), str(cert), str(src / SRC), str(theirs)], check=True,
                   capture_output=True)
    r = radveil.run("timestamp", "stamp", theirs, "--tsa", tsa_url, "--out", tmp_path / "st")
    assert r.returncode == 0, r.stderr
    assert dcmsign_verify(dcmsign, keys, tmp_path / "st" / "theirs.dcm", "--require-ts").returncode == 0
    # Stamping again finds nothing left to stamp; nothing is overwritten.
    r = radveil.run("timestamp", "stamp", tmp_path / "st" / "theirs.dcm", "--tsa", tsa_url, "--out", tmp_path / "st")
    assert r.returncode == 1 and "no signature without a timestamp" in r.stderr


def test_unreachable_tsa_fails_the_file_and_writes_nothing(radveil, keys, tmp_path):
    key, cert = keys["rsa"]
    out = tmp_path / "signed"
    r = radveil.run("sign", corpus.pydicom_test_dir() / SRC, "--key", key, "--cert", cert, "--tsa",
                    "http://127.0.0.1:9/tsa", "--out", out)
    assert r.returncode == 1 and "timestamp authority" in r.stderr, r.stderr
    assert not (out / SRC).exists()
