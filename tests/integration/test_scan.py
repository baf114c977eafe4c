"""`radveil scan`: the residual risk of a de-identified set, whoever made it (issue 17).

Real files from pydicom with identifiers planted where people leave them (a comment with a
doctor's name, a written date, a phone number and a record number; the patient's name in a
private element and in a nested sequence item); scanned as they are, after `radveil deid`
(with and without Clean Descriptors) and after dicognito (pip), the peer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import require_module

pydicom = require_module("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402

SOURCES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb.dcm",
           "emri_small.dcm", "MR_small_RLE.dcm", "693_UNCI.dcm"]
COMMENT = "Seen by Dr. Watson on 12-Mar-2021, call (555) 123-4567, MRN 8812345"
PLANTED = ["Watson", "12-Mar-2021", "123-4567", "8812345", "Ferreira", "Joana"]


def build(root: Path) -> Path:
    src = root / "in"
    src.mkdir()
    for i, name in enumerate(SOURCES):
        path = get_testdata_file(name)
        if path is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        ds.PatientName = "Ferreira^Joana"
        ds.PatientID = f"PID{i:05d}"
        ds.ImageComments = COMMENT
        block = ds.private_block(0x0029, "RADVEIL TEST", create=True)
        block.add_new(0x01, "LO", "FERREIRA JOANA")
        item = pydicom.Dataset()
        item.TextValue = "patient Joana Ferreira"
        ds.ContentSequence = [item]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(src / f"{i:02d}.dcm", enforce_file_format=True)
    return src


def scan(radveil, target: Path, report: Path, *extra):
    r = radveil.run("scan", target, "--report", report, *extra)
    assert "panicked" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), f"scan failed ({r.returncode}): {r.stderr}"
    return r, json.loads(report.read_text())


def kinds(rep) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in rep["per_file"]:
        for x in f["findings"]:
            out.setdefault(x["kind"], set()).add(x["path"])
    return out


@pytest.fixture(scope="module")
def sets(radveil, key_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    src = build(root)
    plain = root / "radveil"
    r, _ = radveil.deid([src], plain, key_file)
    assert "panicked" not in r.stderr
    clean = root / "radveil-clean"
    r, _ = radveil.deid([src], clean, key_file, "--option", "clean-descriptors",
                        "--option", "retain-safe-private")
    assert "panicked" not in r.stderr
    peer = root / "dicognito"
    try:
        import dicognito  # noqa: F401
    except ImportError:
        from conftest import missing_peer
        missing_peer("dicognito (pip install dicognito==0.19.0; tools/setup-peers installs it)")
    d = subprocess.run([sys.executable, "-m", "dicognito", "--output-directory", str(peer), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert d.returncode == 0, d.stderr
    return root, src, plain, clean, peer


def test_planted_inputs_are_found(radveil, sets):
    root, src, *_ = sets
    r, rep = scan(radveil, src, root / "in.json")
    assert r.returncode == 1
    k = kinds(rep)
    for kind in ("person-name", "date", "phone", "identifier", "must-go"):
        assert kind in k, f"{kind} not found in the planted inputs: {sorted(k)}"
    # Where: the comment, the private element, the nested item, the patient's name.
    assert "(0020,4000)" in k["phone"]
    assert any(p.startswith("(0029,") for p in k["person-name"]), k["person-name"]
    assert any(p.startswith("(0040,A730)[1]>") for p in k["person-name"]), k["person-name"]
    assert "(0010,0010)" in k["person-name"]
    # The report names elements, never values.
    text = (root / "in.json").read_text()
    for v in PLANTED:
        assert v not in text, f"the report quotes a value ({v!r})"
    assert str(len(rep["per_file"])) in r.stdout


def test_radveil_outputs_are_clean(radveil, sets):
    root, _, plain, clean, _ = sets
    for name, out in (("default", plain), ("clean-descriptors", clean)):
        r, rep = scan(radveil, out, root / f"{name}.json")
        assert rep["files"] >= len(SOURCES) - 1
        assert r.returncode == 0, f"{name}: {kinds(rep)}"
        assert rep["files_with_findings"] == 0


def test_dicognito_outputs_are_not(radveil, sets):
    """The peer: fake names look like names, and the comment, private element and nested
    item it keeps still hold the planted identifiers."""
    root, _, plain, _, peer = sets
    r, rep = scan(radveil, peer, root / "peer.json")
    assert r.returncode == 1
    k = kinds(rep)
    print("dicognito:", {kind: len(paths) for kind, paths in k.items()}, "files with findings",
          rep["files_with_findings"], "of", rep["files"])
    assert rep["files_with_findings"] == rep["files"]
    _, mine = scan(radveil, plain, root / "plain2.json")
    assert sum(rep["totals"].values()) > sum(mine["totals"].values())


def test_k_anonymity(radveil, sets):
    root, src, *_ = sets
    r, rep = scan(radveil, src, root / "quasi.json", "--quasi", "--min-k", "2")
    k = rep["k_anonymity"]
    assert k["patients"] == len({f"PID{i:05d}" for i in range(len(SOURCES))}) or k["patients"] >= 5
    assert k["k"] == 1 and k["smallest_class"], k
    assert "k-anonymity: k = 1" in r.stdout
    assert r.returncode == 1


def test_unreadable_files_are_counted(radveil, tmp_path):
    (tmp_path / "not.dcm").write_bytes(b"not dicom at all")
    r, rep = scan(radveil, tmp_path, tmp_path / "r.json")
    assert rep["unreadable"] == 1
