"""Integrity at ingest: every instance `radveil serve` stores has its digital signatures
verified against the site's trusted signers (`--trust`), its ledger entry appended to
DATA/ledger before the STOW-RS response, and the advisory checks run; what was found is
kept with the instance in radveil's private block (Private Creator (0009,0010)
"RADVEIL INGEST 1") and shown by QIDO-RS `includefield` and WADO-RS metadata.

What is checked, on real pydicom files signed by `radveil sign` and DCMTK's `dcmsign` with
certificates made by openssl: unsigned, valid from a trusted signer (the certificate's
SHA-256 fingerprint, not a name), valid from an untrusted one, tampered after signing
(invalid); a Synthetic Data flag, geometry that disagrees with its series (stored earlier
and in the same request) and equipment foreign to its series as advisories, counted in
/metrics; `--require-signed CLIENT` refusing unsigned and untrusted instances from that
client (Failure Reason 0124H with the reason in words) and audited as a refusal, while
another client's are stored; `radveil verify --ledger` proving a file retrieved by WADO-RS
and flagging a modified copy; `radveil ledger verify/checkpoint` on the gateway's ledger;
the plaintext grep of the data folder with the ledger there.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, require_module, require_tool
from gateway import (
    PLANTED, assert_no_plaintext, auth, get_parts, multipart, new_uid, planted, post, real,
    serve, to_bytes, token,
)

requests = require_module("requests")
pydicom = require_module("pydicom")

__all__ = ["serve"]

STATUS, SIGNER, INDEX, ADVISORIES, DETAIL = "00091010", "00091011", "00091012", "00091013", "00091014"
LEAF = """
[ leaf ]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature,nonRepudiation
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
"""


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> dict:
    """A site CA and a signer it issued (trusted), and a self-signed signer (untrusted)."""
    import pki

    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("pki")
    ca = pki.self_signed(openssl, d, "site-ca", ["-newkey", "rsa:2048"], "/CN=radveil test site CA")
    leaf = pki.issue(openssl, d, "modality", ["-newkey", "rsa:2048"], "/CN=radveil test modality", ca,
                     LEAF, "leaf")
    stranger = pki.self_signed(openssl, d, "stranger", ["-newkey", "rsa:2048"], "/CN=radveil test stranger")
    trust = d / "trust"
    trust.mkdir()
    (trust / "site-ca.pem").write_bytes(ca[1].read_bytes())
    der = subprocess.run([openssl, "x509", "-in", str(leaf[1]), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return {"trust": trust, "leaf": leaf, "stranger": stranger, "ca": ca,
            "fingerprint": hashlib.sha256(der).hexdigest()}


def run(radveil_bin, *args, timeout=120):
    return subprocess.run([str(radveil_bin), *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)


def sign(radveil_bin, tmp: Path, name: str, ds, signer: tuple[Path, Path]) -> bytes:
    """`ds` signed whole by `radveil sign` with `signer` (key, certificate)."""
    src = tmp / f"{name}.in" / "x.dcm"
    src.parent.mkdir(parents=True)
    ds.save_as(src, enforce_file_format=True)
    out = tmp / f"{name}.out"
    r = run(radveil_bin, "sign", src, "--key", signer[0], "--cert", signer[1], "--out", out)
    assert r.returncode == 0, r.stderr
    return (out / "x.dcm").read_bytes()


def instance(study: str, n: int, series: str | None = None, **attrs):
    ds = planted(n, study, series)
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def found(url: str, study: str, headers: dict | None = None) -> dict[str, dict]:
    """The study's instances by SOP Instance UID, with the ingest attributes."""
    r = requests.get(f"{url}/studies/{study}/instances", timeout=30,
                     params=[("includefield", t) for t in (STATUS, SIGNER, INDEX, ADVISORIES)],
                     headers={"Accept": "application/dicom+json", **(headers or {})})
    assert r.status_code == 200, r.text
    return {i["00080018"]["Value"][0]: i for i in r.json()}


def value(item: dict, tag: str):
    return item.get(tag, {}).get("Value")


def metrics(url: str) -> str:
    return requests.get(url.removesuffix("/dicom-web") + "/metrics", timeout=30).text


def counter(text: str, line_start: str) -> int:
    return next(int(x.split()[-1]) for x in text.splitlines() if x.startswith(line_start))


def test_each_signature_status_is_kept_and_shown(serve, radveil_bin, pki_dir, tmp_path):
    dcmsign = require_tool("dcmsign")
    g = serve(tmp_path / "data", "--trust", pki_dir["trust"])
    study = new_uid()
    unsigned = to_bytes(instance(study, 1))
    trusted = sign(radveil_bin, tmp_path, "trusted", instance(study, 2), pki_dir["leaf"])
    untrusted = sign(radveil_bin, tmp_path, "untrusted", instance(study, 3), pki_dir["stranger"])
    # Tampered after signing: one pixel value changed (the signature covers Pixel Data).
    bad = pydicom.dcmread(__import__("io").BytesIO(
        sign(radveil_bin, tmp_path, "bad", instance(study, 4), pki_dir["leaf"])))
    px = bytearray(bad.PixelData)
    px[100] ^= 0x55
    bad.PixelData = bytes(px)
    tampered = to_bytes(bad)
    # DCMTK's dcmsign, with the same trusted signer.
    src = tmp_path / "dcmtk.in.dcm"
    instance(study, 5).save_as(src, enforce_file_format=True)
    theirs = tmp_path / "dcmtk.out.dcm"
    key, cert = pki_dir["leaf"]
    subprocess.run([dcmsign, "--sign", str(key), str(cert), "--mac-sha256", str(src), str(theirs)],
                   check=True, capture_output=True)
    r = post(g.url, [unsigned, trusted, untrusted, tampered, theirs.read_bytes()])
    assert r.status_code == 200, r.text
    got = found(g.url, study)
    sop = lambda n: f"{study}.1.{n}"  # noqa: E731
    assert value(got[sop(1)], STATUS) == ["UNSIGNED"]
    assert value(got[sop(2)], STATUS) == ["TRUSTED"]
    assert value(got[sop(3)], STATUS) == ["UNTRUSTED"]
    assert value(got[sop(4)], STATUS) == ["INVALID"]
    assert value(got[sop(5)], STATUS) == ["TRUSTED"]
    # The trusted signer is named by its certificate's fingerprint, never by a name.
    for n in (2, 5):
        assert value(got[sop(n)], SIGNER) == [pki_dir["fingerprint"]], got[sop(n)]
    for n in (1, 3, 4):
        assert SIGNER not in got[sop(n)] or not value(got[sop(n)], SIGNER)
    # Each has its own ledger entry.
    indexes = sorted(value(got[sop(n)], INDEX)[0] for n in range(1, 6))
    assert indexes == list(range(5)), got
    m = metrics(g.url)
    assert counter(m, 'radveil_ingest_signatures_total{status="trusted"}') == 2, m
    assert counter(m, 'radveil_ingest_signatures_total{status="untrusted"}') == 1, m
    assert counter(m, 'radveil_ingest_signatures_total{status="invalid"}') == 1, m
    assert counter(m, 'radveil_ingest_signatures_total{status="unsigned"}') == 1, m
    # What the instance itself claims in the block is never believed: a forged status.
    forged = instance(study, 6)
    block = forged.private_block(0x0009, "RADVEIL INGEST 1", create=True)
    block.add_new(0x10, "CS", "TRUSTED")
    assert post(g.url, [to_bytes(forged)]).status_code == 200
    assert value(found(g.url, study)[sop(6)], STATUS) == ["UNSIGNED"]
    # The metadata (WADO-RS) shows the block too, and never the forged one.
    for n, status in [(2, "TRUSTED"), (4, "INVALID"), (6, "UNSIGNED")]:
        r = requests.get(f"{g.url}/studies/{study}/series/{study}.1/instances/{sop(n)}/metadata",
                         headers={"Accept": "application/dicom+json"}, timeout=30)
        assert r.status_code == 200, r.text
        meta = r.json()[0]
        # CT_small.dcm has GE's block at (0009,0010): it is kept, and radveil's block is
        # found by its creator, in the next free slot.
        assert value(meta, "00090010") == ["GEMS_IDEN_01"]
        slots = [t[-2:] for t in meta if t.startswith("000900") and value(meta, t) == ["RADVEIL INGEST 1"]]
        assert slots == ["11"], slots
        assert value(meta, "00091110") == [status], (n, meta.get("00091110"))
        assert value(meta, "00100010") is not None  # the instance's own attributes are there
    assert value(meta, "00091111") is None
    r = requests.get(f"{g.url}/studies/{study}/series/{study}.1/instances/{sop(2)}/metadata",
                     headers={"Accept": "application/dicom+json"}, timeout=30)
    assert value(r.json()[0], "00091111") == [pki_dir["fingerprint"]]
    # The status survives a restart (it is sealed with the instance's attributes).
    g.stop()
    g2 = serve(tmp_path / "data", "--trust", pki_dir["trust"])
    again = found(g2.url, study)
    assert value(again[sop(2)], STATUS) == ["TRUSTED"] and value(again[sop(4)], STATUS) == ["INVALID"]


def test_advisories_are_kept_and_counted_without_refusing(serve, tmp_path):
    g = serve(tmp_path / "data")
    study = new_uid()
    series = study + ".1"
    # CT_small is 128 x 128; 64 x 256 keeps the pixel data's length.
    first = [to_bytes(instance(study, n, series, ImagePositionPatient=[0, 0, n])) for n in (1, 2)]
    assert post(g.url, first).status_code == 200
    later = [
        to_bytes(instance(study, 3, series, Rows=64, Columns=256, ImagePositionPatient=[0, 0, 3])),
        to_bytes(instance(study, 4, series, SyntheticData="YES", ImagePositionPatient=[0, 0, 4])),
        to_bytes(instance(study, 5, series, Manufacturer="QZ OTHER VENDOR", ImagePositionPatient=[0, 0, 5])),
        # Where instance 1 is.
        to_bytes(instance(study, 6, series, ImagePositionPatient=[0, 0, 1])),
        # Disagrees with instance 3 only, stored in this same request: nothing more to say
        # than for 3 (both differ from the series).
        to_bytes(instance(study, 7, series, PixelSpacing=[0.25, 0.25], ImagePositionPatient=[0, 0, 7])),
    ]
    r = post(g.url, later)
    assert r.status_code == 200, r.text
    got = found(g.url, study)
    adv = {uid.rsplit(".", 1)[1]: value(i, ADVISORIES) or [] for uid, i in got.items()}
    assert adv["1"] == [] and adv["2"] == [], adv
    assert adv["3"] == ["SERIES_GEOMETRY"], adv
    assert adv["4"] == ["SYNTHETIC"], adv
    assert adv["5"] == ["FOREIGN_DEVICE"], adv
    assert adv["6"] == ["SERIES_POSITION"], adv
    assert adv["7"] == ["SERIES_GEOMETRY"], adv
    m = metrics(g.url)
    for name, n in [("synthetic", 1), ("series_geometry", 2), ("series_position", 1), ("foreign_device", 1)]:
        assert counter(m, f'radveil_ingest_advisories_total{{advisory="{name}"}}') == n, m
    # A geometry disagreement inside one request, in a new series, is found too.
    other = new_uid()
    r = post(g.url, [to_bytes(instance(other, 1, other + ".1", ImagePositionPatient=[0, 0, 1])),
                     to_bytes(instance(other, 2, other + ".1", Rows=64, Columns=256,
                                       ImagePositionPatient=[0, 0, 2]))])
    assert r.status_code == 200
    adv = {uid.rsplit(".", 1)[1]: value(i, ADVISORIES) or [] for uid, i in found(g.url, other).items()}
    assert adv == {"1": [], "2": ["SERIES_GEOMETRY"]}, adv


def test_a_client_that_must_sign_is_refused_unsigned_and_untrusted_instances(
        serve, radveil_bin, pki_dir, tmp_path):
    data = tmp_path / "data"
    g = serve(data, "--dev", "--trust", pki_dir["trust"], "--require-signed", "modality-a")
    scope = ("--scope", "user/ImagingStudy.cruds")
    a = token(radveil_bin, data, "--subject", "modality-a", *scope)
    b = token(radveil_bin, data, "--subject", "modality-b", *scope)
    auditor = token(radveil_bin, data, "--role", "auditor", "--subject", "aud", "--scope", "user/AuditEvent.rs")
    study = new_uid()
    trusted = sign(radveil_bin, tmp_path, "t", instance(study, 1), pki_dir["leaf"])
    untrusted = sign(radveil_bin, tmp_path, "u", instance(study, 2), pki_dir["stranger"])
    unsigned = to_bytes(instance(study, 3))
    body, ct = multipart([unsigned, trusted, untrusted])
    r = requests.post(g.url + "/studies", data=body, headers={"Content-Type": ct, **auth(a)}, timeout=60)
    assert r.status_code == 202, r.text
    res = r.json()
    assert [x["00081155"]["Value"][0] for x in res["00081199"]["Value"]] == [f"{study}.1.1"]
    failed = {x["00081155"]["Value"][0]: x for x in res["00081198"]["Value"]}
    assert set(failed) == {f"{study}.1.2", f"{study}.1.3"}
    for x in failed.values():
        assert x["00081197"]["Value"] == [0x0124], x
        assert "trusted signer" in x[DETAIL]["Value"][0], x
    assert "unsigned" in failed[f"{study}.1.3"][DETAIL]["Value"][0]
    # Another client stores the same unsigned and untrusted instances.
    body, ct = multipart([unsigned, untrusted])
    r = requests.post(g.url + "/studies", data=body, headers={"Content-Type": ct, **auth(b)}, timeout=60)
    assert r.status_code == 200, r.text
    assert set(found(g.url, study, auth(b))) == {f"{study}.1.{n}" for n in (1, 2, 3)}
    # The refusal is in the audit trail: a store by modality-a whose outcome is a failure.
    events = [json.loads(x) for x in requests.get(g.url.removesuffix("/dicom-web") + "/audit", timeout=30,
                                                  headers=auth(auditor)).text.splitlines() if x.strip()]
    refused = [e for e in events if e["action"] == "C" and e["outcome"] == "4"]
    assert len(refused) == 1, events
    assert "refused" in refused[0]["outcomeDesc"] and "trusted signer" in refused[0]["outcomeDesc"]
    whos = [a["who"].get("identifier", {}).get("value") for a in refused[0]["agent"] if a.get("requestor")]
    assert whos == ["modality-a"], refused[0]
    assert counter(metrics(g.url), "radveil_ingest_refused_unsigned_total") == 2


def test_every_client_must_sign_with_a_star(serve, radveil_bin, pki_dir, tmp_path):
    g = serve(tmp_path / "data", "--trust", pki_dir["trust"], "--require-signed", "*")
    study = new_uid()
    trusted = sign(radveil_bin, tmp_path, "t", instance(study, 1), pki_dir["leaf"])
    r = post(g.url, [to_bytes(instance(study, 2)), trusted])
    assert r.status_code == 202, r.text
    r = post(g.url, [to_bytes(instance(study, 3))])
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0124]


def test_the_ledger_proves_what_the_gateway_stored(serve, radveil_bin, pki_dir, tmp_path):
    data = tmp_path / "data"
    g = serve(data, "--trust", pki_dir["trust"])
    study = new_uid()
    signed = sign(radveil_bin, tmp_path, "s", instance(study, 1), pki_dir["leaf"])
    ds = real("MR_small.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, study + ".2"
    ds.PatientID = PLANTED["id"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = study + ".2.1"
    plain = to_bytes(ds)
    assert post(g.url, [signed, plain]).status_code == 200
    retrieved = []
    for series, sop in [(study + ".1", study + ".1.1"), (study + ".2", study + ".2.1")]:
        r, parts = get_parts(f"{g.url}/studies/{study}/series/{series}/instances/{sop}")
        assert r.status_code == 200 and len(parts) == 1
        retrieved.append(parts[0])
    assert retrieved == [signed, plain]
    # Stopped, the gateway signs its last checkpoint.
    assert g.stop() == 0
    files = []
    for n, b in enumerate(retrieved):
        f = tmp_path / f"retrieved{n}.dcm"
        f.write_bytes(b)
        files.append(f)
    ledger, key = data / "ledger", data / "keys" / "ledger-key"
    r = run(radveil_bin, "verify", "--ledger", ledger, "--key-file", key, "--allow-unsigned",
            "--trust", pki_dir["trust"] / "site-ca.pem", "--json", *files)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 0, r.stdout + r.stderr
    proven = [Path(x["input"]).name for x in lines if x["status"] == "ledger-proven"]
    assert proven == ["retrieved0.dcm", "retrieved1.dcm"], lines
    # A modified copy: one pixel changed.
    mod = pydicom.dcmread(files[1])
    px = bytearray(mod.PixelData)
    px[10] ^= 1
    mod.PixelData = bytes(px)
    changed = tmp_path / "changed.dcm"
    mod.save_as(changed)
    r = run(radveil_bin, "verify", "--ledger", ledger, "--key-file", key, "--allow-unsigned", "--json", changed)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode != 0 and "ledger-altered" in [x["status"] for x in lines], lines
    # An instance the gateway never stored is unknown to it.
    stranger = tmp_path / "never.dcm"
    instance(new_uid(), 1).save_as(stranger, enforce_file_format=True)
    r = run(radveil_bin, "verify", "--ledger", ledger, "--key-file", key, "--allow-unsigned", "--json", stranger)
    assert r.returncode != 0 and "ledger-unknown" in r.stdout, r.stdout
    # The ledger commands work on the gateway's ledger.
    assert run(radveil_bin, "ledger", "verify", ledger).returncode == 0
    r = run(radveil_bin, "ledger", "checkpoint", ledger, "--signer-key", data / "keys" / "ledger-signer.key")
    assert r.returncode == 0, r.stderr
    r = run(radveil_bin, "ledger", "verify", ledger, files[0], "--key-file", key)
    assert r.returncode == 0 and "proven" in r.stdout, r.stdout + r.stderr
    # Restarted, it goes on appending to the same ledger; a second copy of a stored
    # instance keeps its entry.
    g2 = serve(data, "--trust", pki_dir["trust"])
    assert post(g2.url, [signed, to_bytes(instance(study, 3))]).status_code == 200
    got = found(g2.url, study)
    assert value(got[study + ".1.3"], INDEX) == [2], got
    assert value(got[study + ".1.1"], INDEX) == [0], got


def test_nothing_identifying_is_in_plaintext_with_the_ledger(serve, radveil_bin, pki_dir, tmp_path):
    data = tmp_path / "data"
    g = serve(data, "--trust", pki_dir["trust"])
    study = new_uid()
    parts = [to_bytes(planted(1, study)),
             sign(radveil_bin, tmp_path, "p", planted(2, study), pki_dir["leaf"])]
    assert post(g.url, parts).status_code == 200
    assert found(g.url, study)
    g.stop()
    assert (data / "ledger" / "entries.jsonl").stat().st_size > 0
    needles = [v.encode() for v in PLANTED.values()] + [study.encode(), f"{study}.1.1".encode()]
    needles += [PLANTED["name"].split("^")[0].encode()]
    assert_no_plaintext(data, "".join(g.log), needles)


def test_an_instance_deleted_then_stored_again_with_other_bytes_is_logged_anew(serve, radveil_bin, tmp_path):
    """The ledger refuses other bytes for a logged instance only while the store holds it:
    after a DELETE, a corrected copy under the same SOP Instance UID is stored and logged,
    and the ledger then proves the new copy and calls the old one altered."""
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    old = instance(study, 1)
    new = instance(study, 1)
    px = bytearray(new.PixelData)
    px[200] ^= 0x21  # a corrected pixel: other pixels, so another binding hash
    new.PixelData = bytes(px)
    old_b, new_b = to_bytes(old), to_bytes(new)
    assert post(g.url, [old_b]).status_code == 200
    # Another copy while the first is stored: refused (0111H), whatever refuses it.
    r = post(g.url, [new_b])
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111], r.text
    assert requests.delete(f"{g.url}/studies/{study}", timeout=30).status_code == 204
    r = post(g.url, [new_b])
    assert r.status_code == 200, r.text
    # Entry 0: the first copy; 1: its tombstone (the DELETE); 2: the corrected copy.
    assert value(found(g.url, study)[f"{study}.1.1"], INDEX) == [2]
    assert g.stop() == 0
    files = {}
    for name, b in [("old", old_b), ("new", new_b)]:
        files[name] = tmp_path / f"{name}.dcm"
        files[name].write_bytes(b)
    key = data / "keys" / "ledger-key"
    r = run(radveil_bin, "verify", "--ledger", data / "ledger", "--key-file", key, "--allow-unsigned",
            "--json", files["new"], files["old"])
    got = [(Path(x["input"]).stem, x["status"]) for x in map(json.loads, r.stdout.splitlines())
           if x["status"].startswith("ledger-")]
    assert got == [("new", "ledger-proven"), ("old", "ledger-altered")], r.stdout


def test_a_named_client_cannot_be_required_to_sign_without_access_control(radveil_bin, tmp_path):
    # Without tokens no client has a name: the policy would silently do nothing.
    r = subprocess.run(
        [str(radveil_bin), "serve", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
         "--require-signed", "modality-1"],
        capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode != 0 and "--require-signed modality-1" in r.stderr, r.stderr
