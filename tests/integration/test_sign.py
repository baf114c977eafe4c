"""DICOM digital signatures against DCMTK's dcmsign, both ways, on real files: radveil's
signatures pass `dcmsign --verify`, dcmsign's (every MAC algorithm, RSA and ECDSA keys,
selective tags, purpose codes) verify in radveil, and tampering is detected."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import require_tool

import corpus

FILES = ["CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
         "MR_small_implicit.dcm", "MR_small_RLE.dcm", "rtdose.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm"]


def dcmsign_verify(dcmsign, cert, path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([dcmsign, "--verify", "--require-sig", "+cf", str(cert), *extra, str(path)],
                          capture_output=True, text=True)


def radveil_verify(radveil, *paths, extra=()):
    r = radveil.run("verify", *paths, "--json", *extra)
    return r, [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


@pytest.mark.parametrize("mac", ["sha256", "sha384", "sha512", "sha1", "ripemd160"])
def test_radveil_signatures_pass_dcmsign(radveil, dcmsign, keys, tmp_path, mac):
    key, cert = keys["rsa"]
    inputs = [corpus.pydicom_test_dir() / f for f in FILES]
    out = tmp_path / "signed"
    r = radveil.run("sign", *inputs, "--key", key, "--cert", cert, "--mac", mac, "--out", out)
    assert r.returncode == 0, r.stderr
    for f in FILES:
        v = dcmsign_verify(dcmsign, cert, out / f)
        assert v.returncode == 0 and "Signature Verification : OK" in v.stdout + v.stderr, f"{f}: {v.stdout}{v.stderr}"
    r, res = radveil_verify(radveil, *[out / f for f in FILES])
    assert r.returncode == 0 and all(x["status"] == "valid" for x in res), res


@pytest.mark.parametrize("kind,mac", [("rsa", "ripemd160"), ("rsa", "sha1"), ("rsa", "md5"), ("rsa", "sha256"),
                                      ("rsa", "sha384"), ("rsa", "sha512"), ("p256", "sha256"), ("p384", "sha384"),
                                      ("dsa", "sha256")])
def test_dcmsign_signatures_verify_in_radveil(radveil, dcmsign, keys, tmp_path, kind, mac):
    key, cert = keys[kind]
    out = []
    for f in ["CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm"]:
        dst = tmp_path / f
        r = subprocess.run([dcmsign, "--sign", str(key), str(cert), f"--mac-{mac}",
                            str(corpus.pydicom_test_dir() / f), str(dst)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out.append(dst)
    r, res = radveil_verify(radveil, *out)
    assert r.returncode == 0, res
    assert [x["status"] for x in res] == ["valid"] * len(out)
    assert all(x["mac"] == mac.upper() for x in res)


def test_selective_signature_reports_what_it_covers(radveil, dcmsign, keys, tmp_path):
    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    signed = tmp_path / "sel.dcm"
    r = subprocess.run([dcmsign, "--sign", str(key), str(cert), "--tag", "PixelData", "--tag", "StudyInstanceUID",
                        "--sig-purpose", "14", str(src), str(signed)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r, res = radveil_verify(radveil, signed)
    assert r.returncode == 0
    assert res[0]["covered"] == ["0020,000D", "7FE0,0010"], res
    assert "PatientName NO" in res[0]["detail"] and "PixelData yes" in res[0]["detail"]
    assert res[0]["purpose"] == "14"
    # Changing an attribute the signature does not cover leaves it valid, and says so.
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(signed)
    ds.PatientName = "SOMEONE^ELSE"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    r, res = radveil_verify(radveil, moved)
    assert r.returncode == 0 and res[0]["status"] == "valid" and "PatientName NO" in res[0]["detail"]


def test_tampering_is_detected(radveil, dcmsign, keys, tmp_path):
    """A changed pixel and a changed PatientName each break a full signature, in radveil and
    in dcmsign alike."""
    import pydicom

    key, cert = keys["rsa"]
    out = tmp_path / "signed"
    assert radveil.run("sign", corpus.pydicom_test_dir() / "CT_small.dcm", "--key", key, "--cert", cert,
                       "--out", out).returncode == 0
    signed = out / "CT_small.dcm"
    for what in ["pixel", "name"]:
        ds = pydicom.dcmread(signed)
        if what == "pixel":
            px = bytearray(ds.PixelData)
            px[100] ^= 0x01
            ds.PixelData = bytes(px)
        else:
            ds.PatientName = "SOMEONE^ELSE"
        bad = tmp_path / f"{what}.dcm"
        ds.save_as(bad)
        r, res = radveil_verify(radveil, bad)
        assert r.returncode == 1 and res[0]["status"] == "invalid", (what, res)
        v = dcmsign_verify(dcmsign, cert, bad)
        assert v.returncode != 0, f"dcmsign accepted tampered {what}"


def test_unsigned_files_fail_unless_allowed(radveil):
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    r, res = radveil_verify(radveil, src)
    assert r.returncode == 1 and res[0]["status"] == "unsigned"
    r, res = radveil_verify(radveil, src, extra=["--allow-unsigned"])
    assert r.returncode == 0


def test_lossless_transcode_breaks_the_signature(radveil, keys, tmp_path):
    """PS3.15 signatures cover the encoded pixel data, so a lossless transcode (here GDCM to
    JPEG-LS) breaks them, as the standard implies."""
    gdcmconv = require_tool("gdcmconv")
    key, cert = keys["rsa"]
    out = tmp_path / "signed"
    assert radveil.run("sign", corpus.pydicom_test_dir() / "CT_small.dcm", "--key", key, "--cert", cert,
                       "--out", out).returncode == 0
    jls = tmp_path / "jls.dcm"
    r = subprocess.run([gdcmconv, "--jpegls", str(out / "CT_small.dcm"), str(jls)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r, res = radveil_verify(radveil, jls)
    assert r.returncode == 1 and res[0]["status"] == "invalid", res


def test_trust_anchors_decide_trusted_or_untrusted(radveil, keys, tmp_path):
    """A signer issued by a trusted CA is trusted; a self-signed signer not among the
    anchors is reported as untrusted (its signature still verifies)."""
    openssl = require_tool("openssl")
    run = lambda *a: subprocess.run([openssl, *map(str, a)], check=True, capture_output=True)  # noqa: E731
    ca_key, ca = tmp_path / "ca.key", tmp_path / "ca.pem"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "30",
        "-subj", "/CN=radveil test CA")

    def issue(name, issuer, issuer_key, *extra):
        """A new key and a certificate for it, issued by `issuer`."""
        key, csr, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.csr", tmp_path / f"{name}.pem"
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN=radveil {name}")
        run("x509", "-req", "-in", csr, "-CA", issuer, "-CAkey", issuer_key, "-CAcreateserial", "-out", cert,
            "-days", "10", *extra)
        return key, cert

    leaf_key, leaf = issue("leaf", ca, ca_key)
    out = tmp_path / "signed"
    assert radveil.run("sign", corpus.pydicom_test_dir() / "CT_small.dcm", "--key", leaf_key, "--cert", leaf,
                       "--out", out).returncode == 0
    r, res = radveil_verify(radveil, out / "CT_small.dcm", extra=["--trust", ca])
    assert r.returncode == 0 and res[0]["status"] == "valid", res
    other = keys["rsa"][1]
    r, res = radveil_verify(radveil, out / "CT_small.dcm", extra=["--trust", other])
    assert r.returncode == 1 and res[0]["status"] == "untrusted", res
    # A leaf issued by an intermediate CA: trusted only with the intermediate given.
    ext = tmp_path / "ca.ext"
    ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign\n")
    int_key, inter = issue("int", ca, ca_key, "-extfile", ext)
    leaf2_key, leaf2 = issue("leaf2", inter, int_key)
    out2 = tmp_path / "signed2"
    assert radveil.run("sign", corpus.pydicom_test_dir() / "CT_small.dcm", "--key", leaf2_key, "--cert", leaf2,
                       "--out", out2).returncode == 0
    r, res = radveil_verify(radveil, out2 / "CT_small.dcm", extra=["--trust", ca])
    assert r.returncode == 1 and res[0]["status"] == "untrusted", res
    r, res = radveil_verify(radveil, out2 / "CT_small.dcm", extra=["--trust", ca, "--intermediate", inter])
    assert r.returncode == 0 and res[0]["status"] == "valid", res


def binding_of(radveil, *paths) -> dict:
    r = radveil.run("verify", *paths, "--binding", "--allow-unsigned", "--json")
    return {Path(x["input"]).name: x["detail"] for x in map(json.loads, r.stdout.splitlines())
            if x["status"] == "binding"}


def test_binding_hash_is_transfer_syntax_independent(radveil):
    """Real files that hold the same image in different encodings (made by other tools:
    pydicom's and pydicom-data's test sets) share one binding hash."""
    t, d = corpus.pydicom_test_dir(), corpus.pydicom_data_dir()
    assert d is not None, "pydicom-data is missing"
    groups = [
        [t / "MR_small.dcm", t / "MR_small_RLE.dcm", t / "MR_small_bigendian.dcm", t / "MR_small_implicit.dcm"],
        [d / "SC_rgb.dcm", d / "SC_rgb_expb.dcm", t / "SC_rgb_rle.dcm"],
        [d / "SC_rgb_16bit.dcm", d / "SC_rgb_expb_16bit.dcm", t / "SC_rgb_rle_16bit.dcm"],
        [d / "SC_rgb_32bit.dcm", t / "SC_rgb_rle_32bit.dcm"],
        [d / "SC_rgb_2frame.dcm", t / "SC_rgb_rle_2frame.dcm"],
    ]
    seen = set()
    for g in groups:
        hashes = binding_of(radveil, *g)
        assert len(hashes) == len(g), f"binding missing for some of {g}: {hashes}"
        assert len(set(hashes.values())) == 1, hashes
        seen |= set(hashes.values())
    assert len(seen) == len(groups), "different images must not share a binding hash"


def test_transcode_keeps_binding_but_breaks_signature_and_edits_break_both(radveil, keys, tmp_path):
    import pydicom

    gdcmconv = require_tool("gdcmconv")
    key, cert = keys["rsa"]
    out = tmp_path / "signed"
    assert radveil.run("sign", corpus.pydicom_test_dir() / "CT_small.dcm", "--key", key, "--cert", cert,
                       "--out", out).returncode == 0
    signed = out / "CT_small.dcm"
    rle = tmp_path / "rle.dcm"
    subprocess.run([gdcmconv, "--rle", str(signed), str(rle)], check=True, capture_output=True)
    r, res = radveil_verify(radveil, rle)
    assert any(x["status"] == "invalid" for x in res), res
    b = binding_of(radveil, signed, rle)
    assert b["CT_small.dcm"] == b["rle.dcm"]
    ds = pydicom.dcmread(signed)
    px = bytearray(ds.PixelData)
    px[1000] ^= 0x04
    ds.PixelData = bytes(px)
    ds.save_as(tmp_path / "pixel.dcm")
    ds = pydicom.dcmread(signed)
    ds.PatientID = "SOMEONE-ELSE"
    ds.save_as(tmp_path / "moved.dcm")
    b2 = binding_of(radveil, tmp_path / "pixel.dcm", tmp_path / "moved.dcm")
    assert b2["pixel.dcm"] != b["CT_small.dcm"] and b2["moved.dcm"] != b["CT_small.dcm"]


def test_advisory_checks(radveil, tmp_path):
    """verify reports (without failing on them) a Synthetic Data flag, pixel data that
    contradicts its description, and a series whose images disagree."""
    import pydicom

    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    d = pydicom.dcmread(src)
    d.SyntheticData = "YES"
    d.save_as(tmp_path / "synth.dcm")
    d = pydicom.dcmread(src)
    d.PixelData = d.PixelData[:-200]
    d.save_as(tmp_path / "short.dcm")
    d = pydicom.dcmread(src)
    d.SOPInstanceUID = d.SOPInstanceUID + ".9"
    d.Rows, d.Columns = 64, 32
    d.save_as(tmp_path / "other.dcm")
    r = radveil.run("verify", tmp_path / "synth.dcm", tmp_path / "short.dcm", tmp_path / "other.dcm",
                    "--allow-unsigned", "--json")
    adv = [x for x in map(json.loads, r.stdout.splitlines()) if x["status"] == "advisory"]
    text = "\n".join(f"{Path(x['input']).name}: {x['detail']}" for x in adv)
    assert "synth.dcm: Synthetic Data" in text, text
    assert "short.dcm: Pixel Data holds" in text, text
    assert "different matrix sizes" in text and "same position" in text, text
    r = radveil.run("verify", src, "--allow-unsigned", "--json")
    assert not [x for x in map(json.loads, r.stdout.splitlines()) if x["status"] == "advisory"]


@pytest.mark.parametrize("profile,flag,name", [("creator", "--require-creator", "CT_small.dcm"),
                                                ("authorization", "--require-auth", "rtplan.dcm"),
                                                ("sr", "--require-sr", "reportsi.dcm")])
def test_profiles_interoperate(radveil, dcmsign, keys, tmp_path, profile, flag, name):
    """radveil's Creator, Authorization and SR signatures satisfy dcmsign's profile checks,
    and dcmsign's satisfy radveil's --require-profile."""
    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir() / name
    out = tmp_path / "signed"
    r = radveil.run("sign", src, "--key", key, "--cert", cert, "--profile", profile, "--tag", "StudyInstanceUID",
                    "--out", out)
    assert r.returncode == 0, r.stderr
    v = dcmsign_verify(dcmsign, cert, out / name, flag)
    assert v.returncode == 0, v.stdout + v.stderr
    theirs = tmp_path / "theirs.dcm"
    dflag = {"creator": "--profile-creator", "authorization": "--profile-auth", "sr": "--profile-sr"}[profile]
    r = subprocess.run([dcmsign, "--sign", str(key), str(cert), dflag, str(src), str(theirs)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    for f in (out / name, theirs):
        r, res = radveil_verify(radveil, f, extra=["--require-profile", profile])
        assert r.returncode == 0 and any(x["status"] == "profile" for x in res), res


def test_selective_signature_is_insufficient_for_creator(radveil, dcmsign, keys, tmp_path):
    key, cert = keys["rsa"]
    signed = tmp_path / "sel.dcm"
    subprocess.run([dcmsign, "--sign", str(key), str(cert), "--tag", "PixelData",
                    str(corpus.pydicom_test_dir() / "CT_small.dcm"), str(signed)], check=True, capture_output=True)
    r, res = radveil_verify(radveil, signed, extra=["--require-profile", "creator"])
    assert r.returncode == 1
    bad = [x for x in res if x["status"] == "insufficient"]
    assert bad and "(0008,0018)" in bad[0]["detail"], res


def test_signatures_inside_sequence_items(radveil, dcmsign, keys, tmp_path):
    """A signature on one SR content item, made by either tool, verifies in the other and is
    reported at its location."""
    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir() / "reportsi.dcm"
    out = tmp_path / "signed"
    r = radveil.run("sign", src, "--key", key, "--cert", cert, "--item", "ContentSequence[0]", "--out", out)
    assert r.returncode == 0, r.stderr
    v = dcmsign_verify(dcmsign, cert, out / "reportsi.dcm")
    assert v.returncode == 0 and "Verification : OK" in v.stdout + v.stderr, v.stdout + v.stderr
    theirs = tmp_path / "theirs.dcm"
    subprocess.run([dcmsign, "--sign-item", str(key), str(cert), "ContentSequence[1]", str(src), str(theirs)],
                   check=True, capture_output=True)
    for f, loc in [(out / "reportsi.dcm", "(0040,A730)[0]/"), (theirs, "(0040,A730)[1]/")]:
        r, res = radveil_verify(radveil, f)
        assert r.returncode == 0 and res[0]["status"] == "valid" and res[0]["location"] == loc, res


PROFILE_FLAGS = {"creator": "--require-creator", "authorization": "--require-auth", "sr": "--require-sr"}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm",
                                  "JPEG2000.dcm", "rtdose.dcm", "rtstruct.dcm", "liver_1frame.dcm"])
@pytest.mark.parametrize("profile", ["creator", "authorization", "sr"])
def test_required_profile_is_never_weaker_than_dcmsign(radveil, dcmsign, keys, tmp_path, name, profile):
    """A signature covering exactly what radveil's --require-profile demands (no more) must
    pass dcmsign's profile check too, and radveil must refuse where dcmsign refuses."""
    import re

    key, cert = keys["rsa"]
    src = corpus.pydicom_test_dir() / name
    one = tmp_path / "one.dcm"
    subprocess.run([dcmsign, "--sign", str(key), str(cert), "--tag", "SOPInstanceUID", str(src), str(one)],
                   check=True, capture_output=True)
    r = radveil.run("verify", one, "--require-profile", profile)
    assert r.returncode == 1, r.stdout
    detail = next(x for x in r.stdout.splitlines() if x.startswith("insufficient"))
    if "does not apply" in detail:
        # Not an SR document: dcmsign must refuse its SR profile too.
        assert dcmsign_verify(dcmsign, cert, one, PROFILE_FLAGS[profile]).returncode != 0
        return
    tags = [t.replace("(", "").replace(")", "") for t in re.findall(r"\([0-9A-F]{4},[0-9A-F]{4}\)", detail)]
    exact = tmp_path / "exact.dcm"
    args = [x for t in ["SOPInstanceUID", *tags] for x in ("--tag", t)]
    subprocess.run([dcmsign, "--sign", str(key), str(cert), *args, str(src), str(exact)], check=True,
                   capture_output=True)
    r = radveil.run("verify", exact, "--require-profile", profile)
    assert r.returncode == 0, r.stdout
    v = dcmsign_verify(dcmsign, cert, exact, PROFILE_FLAGS[profile])
    assert v.returncode == 0, f"radveil accepts what dcmsign rejects: {v.stdout}{v.stderr}"


TRANSCODES = {
    "j2k-gdcm": lambda src, dst: ["gdcmconv", "--j2k", src, dst],
    "jpeg-lossless-gdcm": lambda src, dst: ["gdcmconv", "--jpeg", src, dst],
    "jpegls-gdcm": lambda src, dst: ["gdcmconv", "--jpegls", src, dst],
    "rle-gdcm": lambda src, dst: ["gdcmconv", "--rle", src, dst],
    "jpeg-sv1-dcmtk": lambda src, dst: ["dcmcjpeg", "+e1", src, dst],
    "jpegls-dcmtk": lambda src, dst: ["dcmcjpls", src, dst],
    "jpegls-line-dcmtk": lambda src, dst: ["dcmcjpls", "+il", src, dst],
    "deflate-dcmtk": lambda src, dst: ["dcmconv", "+td", src, dst],
}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "SC_rgb_16bit.dcm"])
def test_lossless_transcodes_by_peers_keep_the_binding_hash(radveil, tmp_path, name):
    """GDCM and DCMTK transcode a real file to JPEG 2000, JPEG lossless (process 14 and SV1),
    JPEG-LS (sample and line interleaved), RLE and deflate: every encoding decodes to the same
    binding hash as the original (signed 16-bit CT, MR, 8- and 16-bit RGB)."""
    t, d = corpus.pydicom_test_dir(), corpus.pydicom_data_dir()
    src = t / name if (t / name).exists() else d / name
    made = []
    for label, cmd in TRANSCODES.items():
        dst = tmp_path / f"{label}.dcm"
        argv = cmd(str(src), str(dst))
        require_tool(argv[0])
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0, f"{label}: {r.stderr}"
        made.append(dst)
    hashes = binding_of(radveil, src, *made)
    assert len(hashes) == len(made) + 1, f"binding unavailable for some encodings: {hashes}"
    assert len(set(hashes.values())) == 1, hashes


def test_binding_matches_across_real_jpeg2000_and_jpegls_files(radveil, tmp_path):
    """Files made by other tools (pydicom's set, pydicom-data) holding the same pixels in JPEG
    2000, JPEG-LS and native encodings bind alike once their SOP Instance UIDs agree."""
    import pydicom

    t, d = corpus.pydicom_test_dir(), corpus.pydicom_data_dir()
    same = binding_of(radveil, t / "MR_small.dcm", t / "MR_small_jp2klossless.dcm", t / "MR_small_jpeg_ls_lossless.dcm")
    assert len(same) == 3 and len(set(same.values())) == 1, same
    for stem in ("MR2", "RG1"):
        native = pydicom.dcmread(d / f"{stem}_UNCR.dcm")
        j2k = pydicom.dcmread(d / f"{stem}_J2KR.dcm")
        j2k.SOPInstanceUID = native.SOPInstanceUID
        j2k.save_as(tmp_path / f"{stem}_J2KR.dcm")
        b = binding_of(radveil, d / f"{stem}_UNCR.dcm", tmp_path / f"{stem}_J2KR.dcm")
        assert len(b) == 2 and len(set(b.values())) == 1, (stem, b)
