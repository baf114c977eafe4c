"""End-to-end tests of ``radveil ledger`` on real DICOM files: an inserted image, an altered
image, a rewritten or removed entry, and a rolled-back checkpoint are each detected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import require_module

require_module("pydicom")

import corpus  # noqa: E402

LEDGER_INVALID = 3


@pytest.fixture
def images(tmp_path) -> list[Path]:
    d = tmp_path / "images"
    d.mkdir()
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"]
    for n in names:
        shutil.copy(corpus.pydicom_test_dir() / n, d / n)
    return [d / n for n in names]


@pytest.fixture
def ledger(radveil, key_file, tmp_path, images):
    """A ledger holding the first three images, with a checkpoint of them."""
    dir_, signer = tmp_path / "ledger", tmp_path / "signer.key"
    r = radveil.run("ledger", "init", dir_, "--origin", "radveil.test/ledger", "--signer-key", signer)
    assert r.returncode == 0, r.stderr
    verifier = r.stdout.strip()
    assert (signer.stat().st_mode & 0o777) == 0o600
    r = radveil.run("ledger", "append", dir_, *images[:3], "--key-file", key_file)
    assert r.returncode == 0, r.stderr
    r = radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer)
    assert r.returncode == 0, r.stderr
    trusted = tmp_path / "trusted.checkpoint"
    trusted.write_text(r.stdout)
    return {"dir": dir_, "signer": signer, "verifier": verifier, "trusted": trusted}


def verify(radveil, ledger, key_file, *images, trusted=True):
    args = ["ledger", "verify", ledger["dir"], *images, "--key-file", key_file,
            "--verifier", ledger["verifier"], "--json"]
    if trusted:
        args += ["--trusted", ledger["trusted"]]
    r = radveil.run(*args)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return r, {Path(x["input"]).name: x for x in lines}


def test_logged_images_are_proven_and_others_flagged(radveil, key_file, ledger, images, tmp_path):
    r, res = verify(radveil, ledger, key_file, *images)
    assert r.returncode == 1, r.stderr
    for img in images[:3]:
        assert res[img.name]["status"] == "proven", res[img.name]
    assert res[images[3].name]["status"] == "unknown", "an image the ledger never saw must be flagged"
    import pydicom

    altered = tmp_path / "altered.dcm"
    ds = pydicom.dcmread(images[0])
    px = bytearray(ds.PixelData)
    px[-10] ^= 0x01  # one pixel bit
    ds.PixelData = bytes(px)
    ds.save_as(altered)
    r, res = verify(radveil, ledger, key_file, altered)
    assert r.returncode == 1 and res["altered.dcm"]["status"] == "altered"
    r, res = verify(radveil, ledger, key_file, *images[:3])
    assert r.returncode == 0, r.stdout + r.stderr


def test_inclusion_proof_checks_out(radveil, key_file, ledger, images):
    """The printed proof verifies with an independent RFC 9162 implementation (here, Python's
    hashlib following RFC 9162 §2.1.3.2)."""
    import base64
    import hashlib

    r = radveil.run("ledger", "prove", ledger["dir"], images[1], "--key-file", key_file)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    p = out["inclusion"]
    fn, sn = p["index"], p["size"] - 1
    h = bytes.fromhex(p["leaf"])
    for c in map(bytes.fromhex, p["proof"]):
        if fn & 1 or fn == sn:
            h = hashlib.sha256(b"\x01" + c + h).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            h = hashlib.sha256(b"\x01" + h + c).digest()
        fn >>= 1
        sn >>= 1
    body = out["checkpoint"].split("\n\n")[0].split("\n")
    assert body[1] == str(p["size"])
    assert base64.b64decode(body[2]) == h


def test_rewritten_or_removed_entries_are_detected(radveil, key_file, ledger):
    entries = ledger["dir"] / "entries.jsonl"
    original = entries.read_text()
    lines = original.splitlines()
    rec = json.loads(lines[1])
    rec["sha256"] = "0" * 64  # an attacker records a forged image's hash
    entries.write_text("\n".join([lines[0], json.dumps(rec, separators=(",", ":")), lines[2]]) + "\n")
    r, _ = verify(radveil, ledger, key_file)
    assert r.returncode == LEDGER_INVALID, r.stderr
    entries.write_text("\n".join(lines[:2]) + "\n")
    r, _ = verify(radveil, ledger, key_file)
    assert r.returncode == LEDGER_INVALID, r.stderr
    entries.write_text(original)
    r, _ = verify(radveil, ledger, key_file)
    assert r.returncode == 0, r.stderr


def test_rolled_back_or_foreign_checkpoint_is_detected(radveil, key_file, ledger, images, tmp_path):
    # The log grows and is checkpointed; a verifier that trusts the newer checkpoint then sees
    # the ledger's checkpoint rolled back to the older one.
    older = (ledger["dir"] / "checkpoint").read_text()
    assert radveil.run("ledger", "append", ledger["dir"], images[3], "--key-file", key_file).returncode == 0
    r = radveil.run("ledger", "checkpoint", ledger["dir"], "--signer-key", ledger["signer"])
    newer = tmp_path / "newer.checkpoint"
    newer.write_text(r.stdout)
    (ledger["dir"] / "checkpoint").write_text(older)
    r = radveil.run("ledger", "verify", ledger["dir"], "--verifier", ledger["verifier"], "--trusted", newer)
    assert r.returncode == LEDGER_INVALID, r.stderr
    # A checkpoint signed by another key is refused.
    other = tmp_path / "other"
    r = radveil.run("ledger", "init", other, "--origin", "radveil.test/other", "--signer-key", tmp_path / "o.key")
    r = radveil.run("ledger", "verify", ledger["dir"], "--verifier", r.stdout.strip())
    assert r.returncode == LEDGER_INVALID, r.stderr


def test_changed_image_is_refused_unless_allowed_and_tombstones(radveil, key_file, ledger, images, tmp_path):
    changed = tmp_path / "changed.dcm"
    data = bytearray(images[0].read_bytes())
    data[-4] ^= 0x01
    changed.write_bytes(bytes(data))
    r = radveil.run("ledger", "append", ledger["dir"], changed, "--key-file", key_file)
    assert r.returncode == 1 and "differ" in r.stderr
    r = radveil.run("ledger", "append", ledger["dir"], images[2], "--tombstone", "--key-file", key_file)
    assert r.returncode == 0
    assert radveil.run("ledger", "checkpoint", ledger["dir"], "--signer-key", ledger["signer"]).returncode == 0
    r, res = verify(radveil, ledger, key_file, images[2])
    assert r.returncode == 1 and res[images[2].name]["status"] == "deleted"


def test_verify_with_ledger_and_signed_ingest(radveil, key_file, ledger, images, tmp_path):
    """`radveil verify --ledger` combines both checks; a signed image's ledger record keeps
    its signer's fingerprint and the verification outcome at ingest."""
    import subprocess

    from conftest import require_tool

    openssl = require_tool("openssl")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=radveil ledger test"], check=True, capture_output=True)
    signed_dir = tmp_path / "signed"
    assert radveil.run("sign", images[3], "--key", key, "--cert", cert, "--out", signed_dir).returncode == 0
    signed = signed_dir / images[3].name
    assert radveil.run("ledger", "append", ledger["dir"], signed, "--key-file", key_file).returncode == 0
    assert radveil.run("ledger", "checkpoint", ledger["dir"], "--signer-key", ledger["signer"]).returncode == 0
    last = json.loads((ledger["dir"] / "entries.jsonl").read_text().splitlines()[-1])
    assert last["verification"] == "valid" and len(last["signer"]) == 64, last
    r = radveil.run("verify", signed, images[0], "--ledger", ledger["dir"], "--key-file", key_file,
                    "--verifier", ledger["verifier"], "--allow-unsigned", "--json")
    res = [json.loads(x) for x in r.stdout.splitlines()]
    by = {(Path(x["input"]).name, x["status"]) for x in res}
    assert (signed.name, "ledger-proven") in by and (signed.name, "valid") in by, res
    assert (images[0].name, "ledger-proven") in by, res
    assert r.returncode == 0, res
    r = radveil.run("verify", images[3], "--ledger", ledger["dir"], "--key-file", key_file,
                    "--verifier", ledger["verifier"], "--allow-unsigned", "--json")
    res = [json.loads(x) for x in r.stdout.splitlines()]
    # The unsigned original holds the same pixels, geometry and identity (JPEG 2000, decoded
    # for the binding hash): its content is proven, and the lost signature is named.
    (led,) = [x for x in res if x["status"].startswith("ledger-")]
    assert led["status"] == "ledger-proven" and "signature it had when logged is gone" in led["detail"], res
    # Moved to another patient: altered.
    import pydicom

    ds = pydicom.dcmread(signed)
    ds.PatientID = "SOMEONE-ELSE"
    edited = tmp_path / "edited.dcm"
    ds.save_as(edited)
    r = radveil.run("verify", edited, "--ledger", ledger["dir"], "--key-file", key_file,
                    "--verifier", ledger["verifier"], "--allow-unsigned", "--json")
    res = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and any(x["status"] == "ledger-altered" for x in res), res


def test_ledger_accepts_a_lossless_transcode_but_not_an_edit(radveil, key_file, ledger, images, tmp_path):
    import subprocess

    from conftest import require_tool

    gdcmconv = require_tool("gdcmconv")
    rle = tmp_path / "rle.dcm"
    subprocess.run([gdcmconv, "--rle", str(images[0]), str(rle)], check=True, capture_output=True)
    r, res = verify(radveil, ledger, key_file, rle)
    assert r.returncode == 0 and res["rle.dcm"]["status"] == "proven", res
    assert "binding hash matches" in res["rle.dcm"]["reason"]


def test_foreign_equipment_in_a_series_is_flagged(radveil, key_file, ledger, images, tmp_path):
    """An image that claims a logged series but comes from other equipment (a fake slipped
    into a real series) is flagged as advisory, besides being unknown to the ledger."""
    import pydicom

    ds = pydicom.dcmread(images[0])
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".77"
    ds.Manufacturer = "SOMEONE ELSE"
    fake = tmp_path / "fake.dcm"
    ds.save_as(fake)
    r, res = verify(radveil, ledger, key_file, fake)
    assert r.returncode == 1 and res["fake.dcm"]["status"] == "unknown", res
    r2 = radveil.run("ledger", "verify", ledger["dir"], fake, "--key-file", key_file,
                     "--verifier", ledger["verifier"], "--json")
    statuses = [json.loads(x)["status"] for x in r2.stdout.splitlines()]
    assert "advisory" in statuses, r2.stdout
    same = tmp_path / "same.dcm"
    ds = pydicom.dcmread(images[0])
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".78"
    ds.save_as(same)
    r3 = radveil.run("ledger", "verify", ledger["dir"], same, "--key-file", key_file,
                     "--verifier", ledger["verifier"], "--json")
    assert "advisory" not in [json.loads(x)["status"] for x in r3.stdout.splitlines()], r3.stdout


def _self_signed(tmp_path, name, subject):
    import subprocess

    from conftest import require_tool

    openssl = require_tool("openssl")
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", subject], check=True, capture_output=True)
    return key, cert


def test_equipment_signed_by_another_key_is_flagged(radveil, key_file, tmp_path):
    """A device's images were logged signed with its key; an image naming that device but
    signed with another key (made elsewhere, passed off as the device's) is flagged."""
    import pydicom

    device = _self_signed(tmp_path, "device", "/CN=CT scanner 1")
    other = _self_signed(tmp_path, "other", "/CN=somewhere else")
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    r = radveil.run("sign", src, "--key", device[0], "--cert", device[1], "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    dir_, signer = tmp_path / "ledger", tmp_path / "ledger.key"
    verifier = radveil.run("ledger", "init", dir_, "--origin", "radveil.test/eq", "--signer-key", signer).stdout.strip()
    assert radveil.run("ledger", "append", dir_, tmp_path / "a" / "CT_small.dcm", "--key-file", key_file).returncode == 0
    assert radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer).returncode == 0
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID += ".9"
    fake_src = tmp_path / "fake_src"
    fake_src.mkdir()
    ds.save_as(fake_src / "second.dcm")
    for who, out in ((other, "b"), (device, "c")):
        r = radveil.run("sign", fake_src / "second.dcm", "--key", who[0], "--cert", who[1], "--out", tmp_path / out)
        assert r.returncode == 0, r.stderr

    def advisories(path):
        r = radveil.run("verify", path, "--ledger", dir_, "--key-file", key_file, "--verifier", verifier, "--json")
        return [json.loads(x)["detail"] for x in r.stdout.splitlines() if json.loads(x)["status"] == "advisory"]

    assert any("never signed this equipment" in a for a in advisories(tmp_path / "b" / "second.dcm"))
    assert advisories(tmp_path / "c" / "second.dcm") == []


def test_device_certificate_must_name_the_images_device(radveil, tmp_path):
    """A device certificate (subject serialNumber) signing an image whose Device Serial Number
    is another device's is flagged; the matching device is not."""
    import pydicom

    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    ds = pydicom.dcmread(src)
    ds.DeviceSerialNumber = "SN-1234"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "ct.dcm")
    for name, serial, flagged in (("right", "SN-1234", False), ("wrong", "SN-9999", True)):
        key, cert = _self_signed(tmp_path, name, f"/CN=CT scanner/serialNumber={serial}")
        r = radveil.run("sign", tmp_path / "in" / "ct.dcm", "--key", key, "--cert", cert, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
        r = radveil.run("verify", tmp_path / name / "ct.dcm", "--json")
        statuses = [json.loads(x)["status"] for x in r.stdout.splitlines()]
        assert ("advisory" in statuses) == flagged, r.stdout
