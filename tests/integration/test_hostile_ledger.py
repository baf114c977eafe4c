"""Hostile conditions around the ledger, signing and key files: concurrent appends of an
altered copy, a torn last line, `sign DIR` trees whose files share names, key files that
others can read, and messages that must not echo values taken from the images."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, require_module, require_tool

require_module("pydicom")

import corpus  # noqa: E402

LEDGER_INVALID = 3


def _make_ledger(radveil, tmp_path):
    dir_, signer = tmp_path / "ledger", tmp_path / "signer.key"
    r = radveil.run("ledger", "init", dir_, "--origin", "radveil.test/hostile", "--signer-key", signer)
    assert r.returncode == 0, r.stderr
    return dir_, signer, r.stdout.strip()


def _variants(tmp_path, count):
    """`count` distinct images (own SOP Instance UIDs), each as an original and as an altered
    copy (same SOP Instance UID, other pixels)."""
    import pydicom

    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    orig, altered = tmp_path / "orig", tmp_path / "altered"
    orig.mkdir()
    altered.mkdir()
    pairs = []
    for i in range(count):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i + 1}"
        ds.save_as(orig / f"{i}.dcm")
        arr = bytearray(ds.PixelData)
        arr[100 + i] ^= 0x55
        ds.PixelData = bytes(arr)
        ds.save_as(altered / f"{i}.dcm")
        pairs.append((orig / f"{i}.dcm", altered / f"{i}.dcm"))
    return pairs


def _entries(dir_):
    return [json.loads(x) for x in (dir_ / "entries.jsonl").read_text().splitlines() if x.strip()]


def test_concurrent_appends_never_log_an_instance_twice(radveil, key_file, tmp_path):
    """Many processes append, at once, originals and altered copies of the same instances:
    the check (already logged / changed) and the append are one critical section, so each
    instance is logged once, and exactly one of its two versions verifies `proven`."""
    dir_, signer, verifier = _make_ledger(radveil, tmp_path)
    pairs = _variants(tmp_path, 24)
    procs = []
    for p in range(12):
        # Process p offers, for each instance, the original or the altered copy. Each waits
        # for a line on its standard input, so that all start at once.
        files = [pair[(p + i) % 2] for i, pair in enumerate(pairs)]
        argv = [str(radveil.binary), "ledger", "append", str(dir_), *map(str, files), "--key-file", str(key_file)]
        procs.append(subprocess.Popen(["sh", "-c", 'read go; exec "$@"', "sh", *argv], env=clean_env(),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, err))
    for rc, err in results:
        assert rc in (0, 1), err
    entries = _entries(dir_)
    instances = [e["instance"] for e in entries]
    assert len(instances) == len(set(instances)) == len(pairs), \
        f"{len(instances)} entries for {len(pairs)} instances: an instance was logged twice"
    assert radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer).returncode == 0
    for orig, altered in pairs:
        r = radveil.run("ledger", "verify", dir_, orig, altered, "--key-file", key_file,
                        "--verifier", verifier, "--json")
        statuses = sorted(json.loads(x)["status"] for x in r.stdout.splitlines() if x.strip())
        assert statuses == ["altered", "proven"], (orig.name, statuses, r.stderr)


def test_torn_last_line_is_reported_and_append_refuses_until_repaired(radveil, key_file, tmp_path):
    dir_, signer, verifier = _make_ledger(radveil, tmp_path)
    (a, _), (b, _) = _variants(tmp_path, 2)
    assert radveil.run("ledger", "append", dir_, a, "--key-file", key_file).returncode == 0
    assert radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer).returncode == 0
    entries = dir_ / "entries.jsonl"
    before = entries.read_bytes()
    with entries.open("ab") as f:
        f.write(b'{"kind":"ingest","instance":"ab')  # a crash in the middle of an append
    # verify reports it (the entries before it still verify).
    r = radveil.run("ledger", "verify", dir_, "--verifier", verifier)
    assert "torn" in r.stderr and "entries.jsonl" in r.stderr, r.stderr
    # append refuses to write after it, and changes nothing.
    r = radveil.run("ledger", "append", dir_, b, "--key-file", key_file)
    assert r.returncode == 2 and "torn" in r.stderr and "--repair-torn" in r.stderr, r.stderr
    assert entries.read_bytes().startswith(before) and len(entries.read_bytes()) > len(before)
    # --repair-torn cuts the torn tail (kept aside), says so, and appends.
    r = radveil.run("ledger", "append", dir_, b, "--key-file", key_file, "--repair-torn")
    assert r.returncode == 0, r.stderr
    assert "torn" in r.stderr, r.stderr
    assert len(_entries(dir_)) == 2
    kept = list(dir_.glob("entries.jsonl.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b'{"kind":"ingest","instance":"ab'
    r = radveil.run("ledger", "verify", dir_, "--verifier", verifier)
    assert r.returncode == 0 and "torn" not in r.stderr, r.stderr


def _self_signed(tmp_path, name):
    openssl = require_tool("openssl")
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", f"/CN=radveil test {name}"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return key, cert


def test_sign_dir_keeps_the_relative_tree(radveil, tmp_path):
    import pydicom

    key, cert = _self_signed(tmp_path, "signer")
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    tree = tmp_path / "tree"
    for i, sub in enumerate(["a", "b", "b/c"]):
        (tree / sub).mkdir(parents=True)
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID += f".{i + 1}"
        ds.save_as(tree / sub / "x.dcm")
    out = tmp_path / "signed"
    r = radveil.run("sign", tree, "--key", key, "--cert", cert, "--out", out)
    assert r.returncode == 0, r.stderr
    for sub in ["a", "b", "b/c"]:
        assert (out / sub / "x.dcm").is_file(), sorted(map(str, out.rglob("*")))
        assert pydicom.dcmread(out / sub / "x.dcm").SOPInstanceUID == pydicom.dcmread(tree / sub / "x.dcm").SOPInstanceUID
    # timestamp query keeps it too.
    q = tmp_path / "queries"
    r = radveil.run("timestamp", "query", out, "--out", q)
    assert r.returncode == 0, r.stderr
    for sub in ["a", "b", "b/c"]:
        assert (q / sub / "x.dcm.tsq").is_file(), sorted(map(str, q.rglob("*")))
    # Signatures are named by their order, never by their Digital Signature UID (0400,0100).
    uids = {str(x.DigitalSignatureUID) for sub in ["a", "b", "b/c"]
            for x in pydicom.dcmread(out / sub / "x.dcm").DigitalSignaturesSequence}
    assert uids and not any(u in r.stdout + r.stderr for u in uids), r.stdout
    assert "signature 1 of 1" in r.stdout, r.stdout


def test_sign_never_writes_through_a_link_planted_in_the_output_tree(radveil, tmp_path):
    import pydicom

    key, cert = _self_signed(tmp_path, "signer")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir(parents=True)
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    for i, sub in enumerate(["a", "b"]):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID += f".{i + 1}"
        ds.save_as(tree / sub / "x.dcm")
    out, elsewhere = tmp_path / "signed", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "a").symlink_to(elsewhere)
    r = radveil.run("sign", tree, "--key", key, "--cert", cert, "--out", out)
    assert r.returncode == 1, r.stderr
    assert not any(elsewhere.iterdir()), "wrote through the planted link"
    assert (out / "b" / "x.dcm").is_file(), r.stderr  # the rest of the batch goes on


def test_key_files_others_can_read_are_warned_and_refused_with_strict(radveil, tmp_path):
    import pydicom

    key_file = radveil.keygen(tmp_path / "site.key")
    assert (key_file.stat().st_mode & 0o777) == 0o600
    dir_, signer, _ = _make_ledger(radveil, tmp_path)
    assert (signer.stat().st_mode & 0o777) == 0o600
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    # Quiet when private.
    r = radveil.run("ledger", "append", dir_, src, "--key-file", key_file)
    assert r.returncode == 0 and "permissions" not in r.stderr, r.stderr
    os.chmod(key_file, 0o644)
    os.chmod(signer, 0o640)
    r = radveil.run("ledger", "append", dir_, src, "--key-file", key_file)
    assert r.returncode == 0 and "permissions" in r.stderr and "0644" in r.stderr, r.stderr
    r = radveil.run("ledger", "append", dir_, src, "--key-file", key_file, "--strict")
    assert r.returncode == 2 and "permissions" in r.stderr, r.stderr
    r = radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer)
    assert r.returncode == 0 and "permissions" in r.stderr and "0640" in r.stderr, r.stderr
    r = radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer, "--strict")
    assert r.returncode == 2 and "permissions" in r.stderr, r.stderr
    key, cert = _self_signed(tmp_path, "signer")
    os.chmod(key, 0o604)
    r = radveil.run("sign", src, "--key", key, "--cert", cert, "--out", tmp_path / "s1")
    assert r.returncode == 0 and "permissions" in r.stderr, r.stderr
    r = radveil.run("sign", src, "--key", key, "--cert", cert, "--out", tmp_path / "s2", "--strict")
    assert r.returncode == 2 and "permissions" in r.stderr, r.stderr
    assert not (tmp_path / "s2").exists() or not any((tmp_path / "s2").iterdir())
    # The de-identification key of `deid` too.
    out = tmp_path / "deid"
    r = radveil.run("deid", src, "--out", out, "--key-file", key_file)
    assert r.returncode == 0 and "permissions" in r.stderr, r.stderr
    r = radveil.run("deid", src, "--out", tmp_path / "deid2", "--key-file", key_file, "--strict")
    assert r.returncode == 2 and "permissions" in r.stderr, r.stderr
    del pydicom


def test_verify_messages_do_not_echo_series_or_position_values(radveil, tmp_path):
    """The series advisories name no Series Instance UID and no Image Position value."""
    import pydicom

    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    d = tmp_path / "series"
    d.mkdir()
    series_uid = "1.2.826.0.1.3680043.8.498.999111222333"
    position = "-158.135803\\-179.035797\\-75.699997"
    for i, rows in enumerate([128, 128]):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID += f".{i + 1}"
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = position.split("\\")
        ds.PixelSpacing = ["0.5", "0.5"] if i == 0 else ["0.7", "0.7"]
        ds.save_as(d / f"{i}.dcm")
    r = radveil.run("verify", d, "--allow-unsigned", "--json")
    advisories = [json.loads(x) for x in r.stdout.splitlines() if x.strip() and json.loads(x)["status"] == "advisory"]
    assert len(advisories) >= 2, r.stdout
    text = r.stdout + r.stderr
    assert series_uid not in text
    assert "-158.135803" not in text and "-179.0358" not in text
    assert any("(0020,000E)" in a["detail"] for a in advisories), advisories
    assert any("(0020,0032)" in a["detail"] for a in advisories), advisories


def test_hostile_intermediate_bundle_is_searched_within_a_budget(radveil, tmp_path):
    """Eight levels of six duplicated intermediates, each issued by every one above, none
    reaching the anchor: the path search gives up after its budget, in well under a second,
    instead of trying 6^8 paths."""
    import time

    openssl = require_tool("openssl")

    def run(*args):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)

    ca_key = tmp_path / "ca.key"
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key)
    ext = tmp_path / "ca.ext"
    ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
    root = tmp_path / "root.pem"
    run("req", "-x509", "-new", "-key", ca_key, "-subj", "/CN=Root", "-days", "30", "-out", root)
    top = tmp_path / "elsewhere.pem"  # issues level 0, and is not trusted
    run("req", "-x509", "-new", "-key", ca_key, "-subj", "/CN=Elsewhere", "-days", "30", "-out", top)
    bundle, issuer, serial = [], top, 100
    for level in range(8):
        csr = tmp_path / f"l{level}.csr"
        run("req", "-new", "-key", ca_key, "-subj", f"/CN=L{level}", "-out", csr)
        copies = []
        for copy in range(6):
            serial += 1
            cert = tmp_path / f"l{level}-{copy}.pem"
            run("x509", "-req", "-in", csr, "-CA", issuer, "-CAkey", ca_key, "-set_serial", serial,
                "-days", "30", "-extfile", ext, "-out", cert)
            copies.append(cert)
        bundle += copies
        issuer = copies[0]
    intermediates = tmp_path / "intermediates.pem"
    intermediates.write_text("".join(p.read_text() for p in bundle))
    leaf_key, leaf_csr, leaf = tmp_path / "leaf.key", tmp_path / "leaf.csr", tmp_path / "leaf.pem"
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", leaf_key, "-subj", "/CN=signer", "-out", leaf_csr)
    os.chmod(leaf_key, 0o600)
    run("x509", "-req", "-in", leaf_csr, "-CA", issuer, "-CAkey", ca_key, "-set_serial", 9999, "-days", "30",
        "-out", leaf)
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    r = radveil.run("sign", src, "--key", leaf_key, "--cert", leaf, "--out", tmp_path / "signed")
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    r = radveil.run("verify", tmp_path / "signed" / "CT_small.dcm", "--trust", root, "--intermediate", intermediates,
                    "--json", timeout=60)
    took = time.monotonic() - start
    res = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 1 and [x["status"] for x in res] == ["untrusted"], res
    assert "within" in res[0]["detail"], res
    assert took < 5, took


def test_timestamp_stamp_keeps_the_relative_tree(radveil, keys, tmp_path):
    """`timestamp stamp DIR` writes a/x.dcm and b/x.dcm apart (an RFC 3161 TSA over HTTP
    around `openssl ts -reply`, as test_timestamp's)."""
    import http.server
    import threading

    import pydicom

    openssl = require_tool("openssl")
    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    tree = tmp_path / "tree"
    for i, sub in enumerate(["a", "b"]):
        (tree / sub).mkdir(parents=True)
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID += f".{i + 1}"
        ds.save_as(tree / sub / "x.dcm")
    signed = tmp_path / "signed"
    r = radveil.run("sign", tree, "--key", key, "--cert", cert, "--out", signed)
    assert r.returncode == 0, r.stderr
    lock = threading.Lock()

    class Tsa(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                q, rep = tmp_path / "q.tsq", tmp_path / "r.tsr"
                q.write_bytes(body)
                subprocess.run([openssl, "ts", "-reply", "-config", keys["tsa"] / "tsa.cnf", "-queryfile", q,
                                "-out", rep], check=True, capture_output=True)
                reply = rep.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tsa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tsa"
        r = radveil.run("timestamp", "stamp", signed, "--tsa", url, "--out", tmp_path / "stamped")
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    for i, sub in enumerate(["a", "b"]):
        out = tmp_path / "stamped" / sub / "x.dcm"
        assert out.is_file(), r.stderr
        assert pydicom.dcmread(out).SOPInstanceUID.endswith(f".{i + 1}")
