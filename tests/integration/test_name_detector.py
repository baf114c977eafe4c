"""The person-name detector of cleaning and `radveil scan`, measured (issue 17, class 5).

Labelled set built from public data in the test:
- negatives: every distinct text value (LO, SH, LT, ST, UT, UC: descriptors, comments,
  protocol and device names, institutions) of every real file shipped by pydicom and
  pydicom-data, less the values that hold the file's own person names and code values;
- positives: people named in the forms descriptors carry (`Anna Smith`, `SMITH^ANNA`,
  `Smith, Anna`, `plan Anna Smith v2`), with first names and surnames from dicognito's own
  lists (pip), a source independent of radveil's lexicon (US Census 1990).

Each text is put in a file's Image Comments and `radveil scan` judges it; precision and
recall are printed (and recorded in docs/DEID.md) and must stay above a floor.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from conftest import require_module

pydicom = require_module("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402

TEMPLATES = ["{F} {L}", "{L}^{F}", "{L}, {F}", "plan {F} {L} v2", "per {F} {L}",
             "{FU} {LU}", "{LU}^{FU}", "RT {LU} {FU}"]
TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC"}
CODES = {"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
         "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID"}


def negatives() -> list[str]:
    import data_store  # pydicom-data
    roots = [Path(pydicom.__file__).parent / "data", Path(data_store.__file__).parent]
    seen: set[str] = set()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if not p.is_file() or p.stat().st_size > 50_000_000:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:
                continue
            own = set()
            for el in ds.iterall():
                if el.VR == "PN" and el.value:
                    for v in (el.value if isinstance(el.value, (list, pydicom.multival.MultiValue)) else [el.value]):
                        own.update(w.lower() for w in str(v).replace("^", " ").split() if len(w) > 1)
            for el in ds.iterall():
                if el.keyword in CODES or el.tag.is_private:
                    continue
                if el.VR in TEXT_VRS and el.value:
                    for v in (el.value if isinstance(el.value, (list, pydicom.multival.MultiValue)) else [el.value]):
                        s = str(v).strip()
                        if s and not any(w.lower() in own for w in s.replace("^", " ").split()) and s.isprintable():
                            seen.add(s[:60])
    return sorted(seen)


def positives(n: int = 400) -> list[str]:
    from dicognito.pnanonymizer import PNAnonymizer
    firsts = list(PNAnonymizer._female_first_names) + list(PNAnonymizer._male_first_names)
    lasts = list(PNAnonymizer._last_names)
    rnd = random.Random(17)
    out = []
    for i in range(n):
        f, l = rnd.choice(firsts).title(), rnd.choice(lasts).title()
        t = TEMPLATES[i % len(TEMPLATES)]
        out.append(t.format(F=f, L=l, FU=f.upper(), LU=l.upper()))
    return out


def judge(radveil, texts: list[str], root: Path) -> list[bool]:
    root.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i, t in enumerate(texts):
        base.ImageComments = t
        base.SOPInstanceUID = f"2.25.{i + 1}"
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.save_as(root / f"{i:05d}.dcm", enforce_file_format=True)
    report = root.parent / f"{root.name}.json"
    r = radveil.run("scan", root, "--report", report, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    found = {}
    for f in json.loads(report.read_text())["per_file"]:
        found[Path(f["file"]).stem] = any(
            x["kind"] == "person-name" and x["path"] == "(0020,4000)" for x in f["findings"])
    return [found.get(f"{i:05d}", False) for i in range(len(texts))]


def test_precision_and_recall(radveil, tmp_path):
    try:
        import dicognito  # noqa: F401
        import data_store  # noqa: F401
    except ImportError as e:
        from conftest import missing_peer
        missing_peer(f"{e.name} (tools/setup-peers installs it)")
    neg = negatives()
    pos = positives()
    assert len(neg) >= 300, f"too few real descriptors to measure on: {len(neg)}"
    fp_flags = judge(radveil, neg, tmp_path / "neg")
    tp_flags = judge(radveil, pos, tmp_path / "pos")
    fp = [t for t, f in zip(neg, fp_flags) if f]
    tp = sum(tp_flags)
    missed = [t for t, f in zip(pos, tp_flags) if not f]
    precision = tp / (tp + len(fp)) if tp + len(fp) else 1.0
    recall = tp / len(pos)
    print(f"\nname detector: {len(pos)} positives, {len(neg)} real descriptors; "
          f"recall {recall:.3f} ({tp}/{len(pos)}), false positives {len(fp)} "
          f"({len(fp) / len(neg):.3%} of descriptors), precision {precision:.3f}")
    print("false positives (first 10):", fp[:10])
    print("missed (first 10):", missed[:10])
    assert precision >= 0.95, fp[:20]
    assert recall >= 0.80, missed[:20]
