"""`radveil deid` against hostile values: kept attributes whose values are not valid for their
VR (free text in a code, a number or a UID), blank UIDs, values that must never be echoed in
messages or the report, and a deflated data set of millions of tiny elements among good files
under an address-space limit.

Run with::

    RADVEIL_BIN=target/release/radveil .venv/bin/python -m pytest -q tests/integration/test_hostile_deid.py
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import warnings
import zlib
from pathlib import Path

import pytest

from conftest import clean_env, require_module, require_tool

pydicom = require_module("pydicom")

import corpus  # noqa: E402  (needs pydicom)
from pydicom.dataelem import RawDataElement  # noqa: E402
from pydicom.datadict import DicomDictionary  # noqa: E402
from pydicom.tag import Tag  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

# Not valid in any coded VR (lowercase, a caret, too long for AS/DA...), and unique.
MARKER = "Qzx^Mark7731^q"
UID_ROOT = "1.2.826.0.1.3680043.8.498."
VALID_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def run_deid(radveil_bin, inputs, out, key, *extra, report, timeout=300, prefix=()):
    """Runs `radveil deid`; returns (CompletedProcess, report records)."""
    args = [*map(str, prefix), str(radveil_bin), "deid", *map(str, inputs), "--out", str(out),
            "--key-file", str(key), "--jobs", "2", "--report", str(report), *map(str, extra)]
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"radveil deid did not finish in {timeout} s")
    recs = []
    if Path(report).exists():
        recs = [json.loads(ln) for ln in Path(report).read_text().splitlines() if ln.strip()]
    return r, recs


def no_crash(r, what):
    assert "panicked" not in r.stderr, f"{what}: radveil panicked:\n{r.stderr[-4000:]}"
    assert r.returncode in (0, 1), f"{what}: exit {r.returncode}\n{r.stderr[-4000:]}"


def by_name(recs) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in recs}


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element written exactly as given (pydicom does not check or convert it)."""
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A valid CT image (planted copy of a real file) to mutate."""
    d = tmp_path_factory.mktemp("base")
    corpus.make_bench_corpus(1, d, seed=31, patients=1, studies=1, series=1, source="CT_small.dcm")
    return next(d.glob("*.dcm"))


def mutate(base: Path, dst: Path, elements: dict[int, tuple[str, bytes]], sop: str | None = None):
    """Writes a copy of `base` with a new SOP Instance UID and the raw `elements` set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(base)
        sop = sop or generate_uid(UID_ROOT)
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        for tag, (vr, value) in elements.items():
            ds._dict[Tag(tag)] = raw(tag, vr, value)
        ds.save_as(dst, enforce_file_format=True)
    return dst


def walk_uids(ds, where=""):
    """(path, value) of every UI value in a pydicom data set, nested ones included."""
    for el in ds:
        if el.VR == "SQ":
            for i, item in enumerate(el.value):
                yield from walk_uids(item, f"{where}{el.tag}[{i}].")
        elif el.VR == "UI" and el.value:
            for v in (el.value if isinstance(el.value, pydicom.multival.MultiValue) else [el.value]):
                yield f"{where}{el.tag}", str(v)


# ---------------------------------------------------------------------------
# malformed kept values
# ---------------------------------------------------------------------------

HELD = {
    # name: (elements, the tag the reason names)
    "frames.dcm": ({0x00280008: ("IS", b"1A")}, "(0028,0008)"),
    "bia-name.dcm": ({0x00280301: ("CS", b"DOE^JOHN")}, "(0028,0301)"),
    "bia-lower.dcm": ({0x00280301: ("CS", b"no")}, "(0028,0301)"),
    "charset.dcm": ({0x00080005: ("CS", b"JOHN DOE")}, "(0008,0005)"),
    "image-type.dcm": ({0x00080008: ("CS", b"ORIGINAL\\PRIMARY\\Doe^John")}, "(0008,0008)"),
    "sop-class.dcm": ({0x00080016: ("UI", b"1.2.840.10008.5.1.4.1.1.2 DOE")}, "(0008,0016)"),
    "spacing.dcm": ({0x00280030: ("DS", b"DOE\\JOHN")}, "(0028,0030)"),
    "series-blank.dcm": ({0x0020000E: ("UI", b"        ")}, "(0020,000E)"),
    "study-blank.dcm": ({0x0020000D: ("UI", b"  \0\0")}, "(0020,000D)"),
}


@pytest.mark.parametrize("options", [[], ["--option", "retain-uids"]])
def test_malformed_kept_values_are_held_back_naming_the_tag(radveil_bin, key_file, base, tmp_path,
                                                            options):
    d = tmp_path / "in"
    d.mkdir()
    for name, (elements, _) in HELD.items():
        mutate(base, d / name, elements)
    # Transfer Syntax UID replaced by text of the same length (pydicom would not write it).
    ts = mutate(base, d / "ts.dcm", {})
    b = ts.read_bytes()
    old = b"1.2.840.10008.1.2.1\0"
    assert old in b[:400], "the base file is expected in Explicit VR Little Endian"
    ts.write_bytes(b.replace(old, b"DOE^JOHN^Q.Z.X.Y.W\0\0", 1))
    good = mutate(base, d / "good.dcm", {})
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file, *options,
                       report=tmp_path / "r.jsonl")
    no_crash(r, "malformed values")
    assert r.returncode == 1
    m = by_name(recs)
    problems = []
    expected = {name: tag for name, (_, tag) in HELD.items()} | {"ts.dcm": "(0002,0010)"}
    for name, tag in expected.items():
        rec = m.get(name) or {}
        reason = rec.get("reason") or ""
        if rec.get("status") != "held" or tag not in reason or rec.get("output"):
            problems.append(f"{name}: {rec}")
        for word in ("DOE", "JOHN", "John", "Q.Z"):
            if word in reason:
                problems.append(f"{name}: the reason quotes the value: {reason}")
    if (m.get("bia-name.dcm") or {}).get("reason", "").find("treated as YES") < 0:
        problems.append(f"bia-name.dcm: {m.get('bia-name.dcm')}")
    if (m.get(good.name) or {}).get("status") != "written":
        problems.append(f"{good.name}: {m.get(good.name)}")
    assert not problems, "\n".join(problems)


def test_malformed_optional_values_are_removed_and_uids_made_valid(radveil_bin, key_file, base,
                                                                   tmp_path, dciodvfy):
    d = tmp_path / "in"
    d.mkdir()
    src = mutate(base, d / "optional.dcm", {
        0x00180022: ("CS", b"Doe^John"),             # Scan Options, Type 3: removed
        0x00180050: ("DS", b"JOHN DOE"),             # Slice Thickness, Type 2: emptied
        0x00200052: ("UI", b"1.2.0123.4 DOE"),       # Frame of Reference UID: a keyed UID
    })
    for options in ([], ["--option", "retain-uids"]):
        out = tmp_path / f"out{len(options)}"
        r, recs = run_deid(radveil_bin, [src], out, key_file, *options,
                           report=tmp_path / f"r{len(options)}.jsonl")
        no_crash(r, "optional")
        assert r.returncode == 0 and recs[0]["status"] == "written", recs
        o = pydicom.dcmread(recs[0]["output"])
        assert "ScanOptions" not in o
        assert o.SliceThickness in ("", None)
        bad = [(p, v) for p, v in walk_uids(o) if len(v) > 64 or not VALID_UID.match(v)]
        assert not bad, bad
        assert b"DOE" not in Path(recs[0]["output"]).read_bytes().upper()
        v = subprocess.run([dciodvfy, recs[0]["output"]], capture_output=True, text=True)
        errors = [ln for ln in (v.stdout + v.stderr).splitlines()
                  if ln.startswith("Error") and ("ScanOptions" in ln or "SliceThickness" in ln
                                                 or "FrameOfReferenceUID" in ln)]
        assert not errors, errors


# ---------------------------------------------------------------------------
# no value of the input in messages or the report
# ---------------------------------------------------------------------------

def coded_tags(step: int = 9) -> list[tuple[int, str]]:
    """A spread of standard attributes of the coded VRs (codes, numbers, dates, UIDs)."""
    out = []
    for tag, (vr, _vm, _name, retired, _kw) in sorted(DicomDictionary.items()):
        if retired or tag >> 16 in (0x0000, 0x0002, 0x0004, 0x7FE0, 0xFFFE) or vr not in ("CS", "DS", "IS", "DA", "TM",
                                                                   "DT", "AS", "UI"):
            continue
        out.append((tag, vr))
    return out[::step]


def test_no_value_of_the_input_in_messages_report_or_outputs(radveil_bin, key_file, base, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    value = MARKER.encode()
    tags = coded_tags()
    assert len(tags) > 40
    # One file per attribute, and one with all of them.
    for tag, vr in tags:
        mutate(base, d / f"m{tag:08X}.dcm", {tag: (vr, value)})
    mutate(base, d / "all.dcm", {tag: (vr, value) for tag, vr in tags})
    # The marker as a VR code, in a value the file then cuts short, and as Modality under the
    # strict burned-in policy.
    src = mutate(base, d / "vr.dcm", {0x00081030: ("LO", value)})
    b = src.read_bytes()
    at = b.index(value) - 4
    src.write_bytes(b[:at] + b"Qz" + b[at + 2:])
    cut = mutate(base, d / "cut.dcm", {0x00180015: ("CS", value)})
    b = cut.read_bytes()
    cut.write_bytes(b[:b.index(value) + 4])
    mutate(base, d / "modality.dcm", {0x00080060: ("CS", b"US"), 0x00280301: ("CS", b"")})
    report = tmp_path / "r.jsonl"
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file,
                       "--assume-burned-in", "unless-no", report=report)
    no_crash(r, "marker")
    texts = {"stdout": r.stdout, "stderr": r.stderr, "report": report.read_text()}
    leaks = [f"{k}: ...{t[max(0, t.find('Qzx') - 200):t.find('Qzx') + 50]}..."
             for k, t in texts.items() if "Qzx" in t or "Mark7731" in t or "Qz" in t]
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file() and b"Mark7731" in p.read_bytes():
            leaks.append(f"output {p.name}")
    assert not leaks, "\n".join(leaks)
    m = by_name(recs)
    assert len(m) == len(list(d.iterdir()))
    not_written = [n for n, rec in m.items() if rec["status"] != "written"]
    assert "vr.dcm" in not_written and "cut.dcm" in not_written and "modality.dcm" in not_written
    assert " US " not in m["modality.dcm"]["reason"] and "(0008,0060)" in m["modality.dcm"]["reason"]
    # Most attributes are simply removed or emptied: the run still writes most files.
    assert sum(rec["status"] == "written" for rec in recs) > len(tags) // 2, recs


# ---------------------------------------------------------------------------
# a deflate bomb of tiny elements among good files
# ---------------------------------------------------------------------------

def element(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def tiny_element_bomb(path: Path, inflated: int):
    """Deflated Explicit VR Little Endian: a valid CT header, then empty private elements
    (8 bytes each) until the data set is `inflated` bytes long: a file of a few megabytes whose
    element tree, built naively, takes more than ten times the inflated size."""
    sop = generate_uid(UID_ROOT)
    ui = lambda s: s.encode() + (b"\0" if len(s) % 2 else b"")  # noqa: E731
    ct = "1.2.840.10008.5.1.4.1.1.2"
    head = (element(0x00080016, b"UI", ui(ct)) + element(0x00080018, b"UI", ui(sop))
            + element(0x00080060, b"CS", b"CT") + element(0x00090010, b"LO", b"BOMB"))
    one = element(0x00091001, b"LO", b"")
    chunk = one * ((8 << 20) // len(one))
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts = [c.compress(head)]
    left = inflated - len(head)
    while left > 0:
        n = min(left, len(chunk))
        parts.append(c.compress(chunk[:n]))
        left -= n
    parts.append(c.flush())
    meta = (element(0x00020002, b"UI", ui(ct)) + element(0x00020003, b"UI", ui(sop))
            + element(0x00020010, b"UI", ui("1.2.840.10008.1.2.1.99")))
    group = element(0x00020000, b"UL", struct.pack("<I", len(meta)))
    path.write_bytes(b"\0" * 128 + b"DICM" + group + meta + b"".join(parts))


@pytest.mark.parametrize("inflated_mb", [300, 1200])
def test_tiny_element_deflate_bomb_fails_alone_under_an_address_space_limit(radveil_bin, key_file,
                                                                            tmp_path, inflated_mb):
    """300 MB inflated is 39 million elements: small enough for the run's memory budget to let
    it be inflated, some 3 GB as a naive element tree (the element cap and the tree's charge
    to the budget stop it). 1.2 GB is 150 million elements, some 10 GB as a naive tree."""
    prlimit = require_tool("prlimit")
    d = tmp_path / "in"
    corpus.make_bench_corpus(4, d, seed=41, patients=1, studies=1, series=1)
    good = sorted(p.name for p in d.glob("*.dcm"))
    tiny_element_bomb(d / "bomb-tiny.dcm", inflated_mb << 20)
    assert (d / "bomb-tiny.dcm").stat().st_size < 16 << 20
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file, report=tmp_path / "r.jsonl",
                       timeout=300, prefix=[prlimit, f"--as={2 << 30}", "--"])
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-3000:]}"
    no_crash(r, "tiny-element bomb")
    assert r.returncode == 1, r.stderr[-3000:]
    m = by_name(recs)
    problems = [f"{n}: {m.get(n)}" for n in good
                if (m.get(n) or {}).get("status") != "written" or not Path(m[n]["output"]).is_file()]
    bomb = m.get("bomb-tiny.dcm") or {}
    if bomb.get("status") != "failed" or not bomb.get("reason") or bomb.get("output"):
        problems.append(f"bomb-tiny.dcm: {bomb}")
    assert not problems, problems


# ---------------------------------------------------------------------------
# --retain-uids: outputs are named by the UIDs as they are
# ---------------------------------------------------------------------------

def test_retain_uids_never_names_two_instances_alike(radveil_bin, key_file, base, tmp_path):
    """Under Retain UIDs the output is named by the original UIDs. Two different SOP Instance
    UIDs that only a file name could confuse (one not a valid UID) must not collide silently:
    the invalid one is replaced by a keyed UID, so both are written under distinct names."""
    d = tmp_path / "in"
    d.mkdir()
    uid = generate_uid(UID_ROOT)
    mutate(base, d / "a.dcm", {}, sop=uid)
    mutate(base, d / "b.dcm", {0x00080018: ("UI", (uid[:-1] + "/" + uid[-1]).encode())}, sop=uid)
    mutate(base, d / "c.dcm", {0x00080018: ("UI", (uid[:-1] + "_" + uid[-1]).encode())}, sop=uid)
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file, "--option", "retain-uids",
                       report=tmp_path / "r.jsonl")
    no_crash(r, "retain uids")
    m = by_name(recs)
    assert r.returncode == 0, (r.stderr[-2000:], recs)
    outs = {m[n]["output"] for n in ("a.dcm", "b.dcm", "c.dcm")}
    assert len(outs) == 3, recs
    assert Path(m["a.dcm"]["output"]).name == f"{uid}.dcm"
    for n in ("a.dcm", "b.dcm", "c.dcm"):
        o = pydicom.dcmread(m[n]["output"])
        assert VALID_UID.match(str(o.SOPInstanceUID)), o.SOPInstanceUID
