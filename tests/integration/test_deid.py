"""End-to-end tests of ``radveil deid`` on real DICOM files, checked by peers.

Peers: pydicom (parsing, planting PHI), dciodvfy and dcentvfy (dicom3tools).
Run with::

    RADVEIL_BIN=target/release/radveil .venv/bin/python -m pytest -q tests/integration

See conftest.py for how the binary is found and how missing peers behave.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import shutil
import subprocess
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import require_module

pydicom = require_module("pydicom")

import corpus  # noqa: E402  (needs pydicom)

STANDARD_UID_ROOT = "1.2.840.10008."
# UI attributes that name a class, syntax, scheme or implementation rather than
# an instance: they may keep their input value (or be 2.25 / standard).
NON_INSTANCE_UID_KEYWORDS = {
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "ReferencedSOPClassUIDInFile",
    "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile", "ImplementationClassUID",
    "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID", "ContextUID",
    "PrivateInformationCreatorUID", "AffectedSOPClassUID", "RequestedSOPClassUID",
    # names a software version (like ImplementationClassUID); not in PS3.15 Table E.1-1
    "CreatorVersionUID",
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def dcmread(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kw)


def real(p) -> str:
    return os.path.realpath(str(p))


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_no_panic(r: subprocess.CompletedProcess, what: str) -> None:
    assert "panicked" not in r.stderr, f"{what}: radveil panicked:\n{r.stderr[-4000:]}"
    assert r.returncode in (0, 1), f"{what}: exit {r.returncode}\nstderr:\n{r.stderr[-4000:]}"


def by_input(records: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for rec in records:
        out[real(rec["input"])] = rec
    return out


def walk_uids(ds, kw_path=""):
    """Yield (keyword-path, keyword, value) for every UI value, recursively."""
    for el in ds:
        kw = el.keyword or f"({el.tag.group:04X},{el.tag.element:04X})"
        if el.VR == "SQ":
            for i, item in enumerate(el.value or []):
                yield from walk_uids(item, f"{kw_path}{kw}[{i}].")
        elif el.VR == "UI" and el.value:
            vals = el.value if isinstance(el.value, (list, pydicom.multival.MultiValue)) else [el.value]
            for v in vals:
                if v:
                    yield f"{kw_path}{kw}", kw, str(v).strip("\0 ")


def private_tags(ds, path=""):
    for el in ds:
        if el.tag.is_private:
            yield f"{path}{el.tag}"
        if el.VR == "SQ":
            for i, item in enumerate(el.value or []):
                yield from private_tags(item, f"{path}{el.keyword or el.tag}[{i}].")


def fmt_problems(problems: list[str], limit: int = 60) -> str:
    head = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n  {head}{more}"


# dciodvfy / dcentvfy output: everything goes to stderr, one message per line,
# "Error - ..." / "Warning - ..." (dciodvfy may prefix a tag path).  Exit status
# 1 when any error was reported, 0 otherwise.
def norm_dicom3tools(line: str) -> str:
    s = line.strip()
    s = re.sub(r"for file <[^>]*> versus <[^>]*>", "for file <F> versus <F>", s)
    s = re.sub(r"Value (\d+) <.*?> versus <.*?>$", r"Value \1 <V> versus <V>", s)
    s = re.sub(r"\[\d+\] = <.*?>( - |$)", r"[n] = <V>\1", s)
    s = re.sub(r"Character invalid for this VR = '.*?' \(0x[0-9a-fA-F]+\)", "Character invalid for this VR", s)
    s = re.sub(r"enumerated value <[^>]*>", "enumerated value <V>", s)
    s = re.sub(r"values are .*$", "values are V", s)
    s = re.sub(r"\b\d+(\.\d+){2,}\b", "UID", s)
    s = re.sub(r"(UID) [0-9.]+$", r"\1 UID", s)
    s = re.sub(r"(specified as|actually) 0x[0-9a-fA-F]+", r"\1 N", s)
    return s


def error_lines(text: str) -> set[str]:
    return {norm_dicom3tools(ln) for ln in text.splitlines() if "Error" in ln}


def run_tool(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------
# corpora and runs (session scoped; every test reads them)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def real_inputs() -> list[Path]:
    files = corpus.real_files()
    assert len(files) >= 100, f"expected the pydicom + pydicom-data test files, found {len(files)}"
    return files


@pytest.fixture(scope="session")
def real_run(radveil, key_file, real_inputs, tmp_path_factory):
    """De-identify every real file once (default options).  The test files
    reuse SOP Instance UIDs, so they go in batches without repeats."""
    root = tmp_path_factory.mktemp("real")
    runs = []
    for i, batch in enumerate(corpus.batches_unique_sop(real_inputs)):
        out = root / f"b{i:02d}"
        r, recs = radveil.deid(batch, out, key_file, report=root / f"b{i:02d}.jsonl")
        runs.append({"inputs": batch, "out": out, "proc": r, "records": recs, "map": by_input(recs)})
    return runs


def written_pairs(real_run):
    for run in real_run:
        for inp in run["inputs"]:
            rec = run["map"].get(real(inp))
            if rec and rec.get("status") == "written" and rec.get("output"):
                yield Path(inp), Path(rec["output"]), run


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """Planted copies of every real file (fresh SOP Instance UIDs, so one run
    takes them all) plus a small consistent patient/study/series corpus."""
    root = tmp_path_factory.mktemp("planted")
    rng = random.Random(20240601)
    logs = []
    manifest, skipped = corpus.build_planted_corpus(corpus.real_files(), root / "real", rng, log=logs.append)
    for m in logs:
        print(m)
    manifest.update(corpus.make_bench_corpus(24, root / "series", seed=7, patients=2, studies=2, series=3))
    assert len(skipped) <= 5, f"planting failed for too many files: {skipped}"
    all_text = {e["token"] for ents in manifest.values() for e in ents if e["kind"] == "text"}
    return {"root": root, "dirs": [root / "real", root / "series"], "manifest": manifest,
            "all_text": all_text, "skipped": skipped}


# ---------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------

def test_real_files_no_crash(real_run, real_inputs):
    problems = []
    for run in real_run:
        r = run["proc"]
        if "panicked" in r.stderr or r.returncode not in (0, 1):
            problems.append(f"exit {r.returncode} on batch {run['out'].name}: {r.stderr[-2000:]}")
        for inp in run["inputs"]:
            if real(inp) not in run["map"]:
                problems.append(f"{inp.name}: no report line")
    assert not problems, fmt_problems(problems)
    total = sum(len(run["inputs"]) for run in real_run)
    assert total == len(real_inputs)


def invalid_for_its_vr(path: Path, reason: str) -> bool:
    """Whether the element a hold-back reason names, as "(gggg,eeee)", holds a value that
    pydicom (the oracle) also finds invalid for its VR: a kept attribute with a malformed
    value is held back, since free text could ride through in it."""
    import pydicom.config
    from pydicom.valuerep import validate_value

    m = re.search(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", reason)
    if not m:
        return False
    elem = dcmread(path, stop_before_pixels=True).get((int(m.group(1), 16), int(m.group(2), 16)))
    if elem is None or elem.VR == "SQ":
        return False
    values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for v in values:
                validate_value(elem.VR, v, pydicom.config.RAISE)
    except (ValueError, TypeError):
        return True
    return False


def test_real_files_statuses(real_run):
    """Real, valid files are written; only Burned In Annotation YES, or a kept
    attribute whose value pydicom also finds invalid for its VR, is held back (the
    default --assume-burned-in never); only truncated files (which pydicom reads
    leniently) fail."""
    problems, held, counts = [], [], defaultdict(int)
    for run in real_run:
        for inp in run["inputs"]:
            rec = run["map"].get(real(inp))
            if rec is None:
                continue
            counts[rec["status"]] += 1
            if rec["status"] != "written" and not rec.get("reason"):
                problems.append(f"{inp.name}: status {rec['status']} without a reason")
            if corpus.is_truncated(inp):
                if rec["status"] != "failed":
                    problems.append(f"{inp.name} is truncated but {rec['status']}: {rec.get('reason')}")
                continue
            if rec["status"] == "held":
                bia = str(dcmread(inp, stop_before_pixels=True).get("BurnedInAnnotation", "")).upper()
                held.append(f"{inp.name} ({rec.get('reason')})")
                if bia != "YES" and not invalid_for_its_vr(inp, rec.get("reason") or ""):
                    problems.append(f"{inp.name}: held although Burned In Annotation is {bia or 'absent'} "
                                    f"and pydicom finds the value named valid: {rec.get('reason')}")
            elif rec["status"] != "written":
                problems.append(f"{inp.name}: {rec['status']}: {rec.get('reason')}")
        if run["proc"].returncode != (0 if all(run["map"].get(real(i), {}).get("status") == "written"
                                               for i in run["inputs"]) else 1):
            problems.append(f"batch {run['out'].name}: exit {run['proc'].returncode} does not match statuses")
    print(f"real files: {dict(counts)}; held: {held}")
    assert not problems, fmt_problems(problems)


def test_real_outputs_valid(real_run):
    problems = []
    n = 0
    for inp, outp, run in written_pairs(real_run):
        n += 1
        name = inp.name
        try:
            o = dcmread(outp)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: output does not parse: {type(e).__name__}: {e}")
            continue
        i = dcmread(inp)
        if str(o.get("PatientIdentityRemoved", "")) != "YES":
            problems.append(f"{name}: PatientIdentityRemoved={o.get('PatientIdentityRemoved')!r}")
        if str(o.get("SOPClassUID")) != str(i.SOPClassUID):
            problems.append(f"{name}: SOPClassUID {o.get('SOPClassUID')} != input {i.SOPClassUID}")
        meta = o.file_meta
        if str(meta.get("MediaStorageSOPInstanceUID")) != str(o.get("SOPInstanceUID")):
            problems.append(f"{name}: MediaStorageSOPInstanceUID {meta.get('MediaStorageSOPInstanceUID')} "
                            f"!= SOPInstanceUID {o.get('SOPInstanceUID')}")
        if str(meta.get("MediaStorageSOPClassUID")) != str(o.get("SOPClassUID")):
            problems.append(f"{name}: MediaStorageSOPClassUID {meta.get('MediaStorageSOPClassUID')} "
                            f"!= SOPClassUID {o.get('SOPClassUID')}")
        # UIDs: instance UIDs become 2.25.<decimal>; class/syntax/scheme UIDs may be kept.
        in_vals = {v for _, _, v in walk_uids(i)} | {v for _, _, v in walk_uids(i.file_meta)}
        for path, kw, v in list(walk_uids(o)) + [(f"meta.{p}", k, v) for p, k, v in walk_uids(meta)]:
            if v.startswith(STANDARD_UID_ROOT):
                continue
            if kw in NON_INSTANCE_UID_KEYWORDS and (v in in_vals or kw == "ImplementationClassUID"):
                continue
            if not re.fullmatch(r"2\.25\.(0|[1-9]\d*)", v) or len(v) > 64:
                problems.append(f"{name}: {path} = {v!r} is not a 2.25 UID")
        # Layout OUT/<patient>/<study-uid>/<series-uid>/<sop-uid>.dcm
        # (a folder for an attribute the object lacks is named "_")
        rel = outp.resolve().relative_to(run["out"].resolve())
        parts = rel.parts
        if len(parts) != 4 or parts[1] != str(o.get("StudyInstanceUID") or "_") or \
                parts[2] != str(o.get("SeriesInstanceUID") or "_") or parts[3] != f"{o.get('SOPInstanceUID')}.dcm":
            problems.append(f"{name}: output path {rel} does not follow patient/study/series/sop.dcm")
        priv = list(private_tags(o))
        if priv:
            problems.append(f"{name}: private tags kept by default: {priv[:5]}")
    assert n > 0, "no output was written"
    print(f"checked {n} outputs")
    assert not problems, fmt_problems(problems)


def test_real_pixel_data_unchanged(real_run):
    problems, n = [], 0
    for inp, outp, _ in written_pairs(real_run):
        i = dcmread(inp)
        try:
            o = dcmread(outp)
        except Exception:  # noqa: BLE001 - reported by test_real_outputs_valid
            continue
        for kw in PIXEL_KEYWORDS:
            if kw not in i:
                continue
            n += 1
            if kw not in o:
                problems.append(f"{inp.name}: {kw} missing from output")
                continue
            ib, ob = i[kw].value, o[kw].value
            if ib == ob:
                continue
            its, ots = i.file_meta.TransferSyntaxUID, o.file_meta.TransferSyntaxUID
            detail = f"{len(ib)} vs {len(ob)} bytes"
            if its != ots:
                detail += f"; transfer syntax changed {its.name} -> {ots.name}"
            problems.append(f"{inp.name}: {kw} bytes differ ({detail})")
    assert n > 0
    print(f"compared pixel data of {n} outputs")
    assert not problems, fmt_problems(problems)


def test_dciodvfy_no_new_errors(real_run, dciodvfy):
    """Errors dciodvfy finds in an output must already be in its input (compared
    without values and UIDs); warnings are ignored."""
    problems, n, in_total, out_total, fixed, unreadable = [], 0, 0, 0, 0, []
    for inp, outp, _ in written_pairs(real_run):
        ri = run_tool(dciodvfy, inp)
        if "Dicom dataset read failed" in ri.stderr:
            # e.g. Deflated transfer syntax: this dciodvfy cannot inflate, so
            # neither input nor output can be judged.
            unreadable.append(inp.name)
            continue
        ro = run_tool(dciodvfy, outp)
        ei, eo = error_lines(ri.stderr + ri.stdout), error_lines(ro.stderr + ro.stdout)
        n += 1
        in_total += len(ei)
        out_total += len(eo)
        fixed += len(ei - eo)
        for e in sorted(eo - ei):
            problems.append(f"{inp.name}: {e}")
    print(f"dciodvfy: {n} pairs, {in_total} distinct input errors, {out_total} output errors, "
          f"{fixed} input errors gone, {len(problems)} new; inputs dciodvfy cannot read: {unreadable}")
    assert n > 0
    assert not problems, "new dciodvfy errors in outputs: " + fmt_problems(problems)


def test_dcentvfy_real_study_dirs(real_run, dcentvfy):
    """dcentvfy over each output study folder reports no error that dcentvfy
    over the matching inputs did not already report."""
    problems, dirs = [], 0
    for run in real_run:
        out_to_in = {real(rec["output"]): real(inp) for inp, rec in run["map"].items()
                     if rec.get("status") == "written" and rec.get("output")}
        for study in sorted(p for p in run["out"].glob("*/*") if p.is_dir()):
            outs = sorted(str(p) for p in study.rglob("*.dcm"))
            if len(outs) < 2:
                continue
            dirs += 1
            ins = [out_to_in[real(o)] for o in outs if real(o) in out_to_in]
            ro, ri = run_tool(dcentvfy, *outs), run_tool(dcentvfy, *ins)
            eo, ei = error_lines(ro.stderr + ro.stdout), error_lines(ri.stderr + ri.stdout)
            for e in sorted(eo - ei):
                problems.append(f"{study.relative_to(run['out'])} ({', '.join(Path(i).name for i in ins)}): {e}")
    print(f"dcentvfy: {dirs} multi-file study folders checked")
    assert not problems, fmt_problems(problems)


# ---------------------------------------------------------------------------
# planted PHI
# ---------------------------------------------------------------------------

def test_planted_tokens_detectable_in_inputs(planted):
    """The scanner must see every planted value in the inputs, or the leak
    tests below would prove nothing."""
    problems = []
    for f, ents in planted["manifest"].items():
        data = corpus.scannable_bytes(f)
        low = data.lower()
        for e in ents:
            if e["kind"] == "text" and e["token"].lower().encode() not in low:
                problems.append(f"{Path(f).name}: {e['path']} {e['token']}")
            if e["kind"] == "date" and e["token"].encode() not in data:
                problems.append(f"{Path(f).name}: {e['path']} {e['token']}")
    assert not problems, fmt_problems(problems)


def value_paths(ds, needle: str, prefix: str = "") -> set[str]:
    """Paths (tags and item indexes) of every element whose value contains ``needle``."""
    found = set()
    for el in ds:
        path = f"{prefix}{el.tag}"
        if el.VR == "SQ":
            for i, item in enumerate(el.value or []):
                found |= value_paths(item, needle, f"{path}[{i}].")
        elif needle in str(el.value):
            found.add(path)
    return found


def date_survived(src: str, out, date: str) -> bool:
    """Whether ``date`` sits in the output at a place where the input had it too."""
    return bool(value_paths(dcmread(out), date) & value_paths(dcmread(src), date))


@pytest.mark.parametrize("options", [[], ["clean-descriptors"], ["retain-long-modified-dates"]],
                         ids=["default", "clean-descriptors", "retain-long-modified-dates"])
def test_no_planted_phi_in_output(planted, radveil, key_file, tmp_path, options):
    out = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    extra = [a for o in options for a in ("--option", o)]
    r, recs = radveil.deid(planted["dirs"], out, key_file, *extra, report=report)
    assert_no_panic(r, f"deid {options}")
    manifest = planted["manifest"]
    recmap = by_input(recs)
    missing = [Path(f).name for f in manifest if real(f) not in recmap]
    assert not missing, f"inputs without a report line: {missing[:20]}"
    written = {real(rec["output"]): real(inp) for inp, rec in recmap.items()
               if rec.get("status") == "written" and rec.get("output")}
    not_written = [f"{Path(i).name}: {rec['status']} {rec.get('reason')}"
                   for i, rec in recmap.items() if rec.get("status") != "written"]
    print(f"{len(written)} written, not written: {not_written}")
    assert len(written) >= 0.9 * len(manifest), f"too few outputs to check: {not_written}"

    leaks = []
    shifted = "retain-long-modified-dates" in options
    man_by_real = {real(f): ents for f, ents in manifest.items()}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        for hit in corpus.scan_for_tokens(rel.encode(), [], planted["all_text"]):
            leaks.append(f"path {rel}: {hit}")
        if not p.is_file():
            continue
        src = written.get(real(p))
        ents = man_by_real.get(src, []) if src else []
        for hit in corpus.scan_for_tokens(corpus.scannable_bytes(p), ents, planted["all_text"]):
            where = next((e["path"] for e in ents if e["token"].lower() in hit.lower()), "?")
            if shifted and hit.startswith("date ") and src and not date_survived(src, p, hit.split()[1]):
                # Another date of the object, shifted, happens to equal a planted date: the
                # planted value itself did not survive where it was.
                continue
            leaks.append(f"{Path(src).name if src else rel}: {hit} [planted in {where}]")
    for hit in corpus.scan_for_tokens(report.read_bytes(), [], planted["all_text"]):
        leaks.append(f"report: {hit}")
    assert not leaks, f"planted PHI in output ({options}): " + fmt_problems(leaks)


def test_dcentvfy_consistent_series(planted, radveil, key_file, dcentvfy, tmp_path):
    """A consistent 2 patients x 2 studies x 3 series x 2 instances corpus stays
    consistent: dcentvfy reports no error over any output study folder."""
    src = planted["root"] / "series"
    rin = run_tool(dcentvfy, *sorted(src.glob("*.dcm")))
    assert rin.returncode == 0 and not error_lines(rin.stderr), f"input not consistent:\n{rin.stderr}"
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file)
    assert_no_panic(r, "deid")
    assert r.returncode == 0, r.stderr
    patients = sorted(p for p in out.iterdir() if p.is_dir())
    studies = sorted(p for p in out.glob("*/*") if p.is_dir())
    assert len(patients) == 2 and len(studies) == 4, f"{len(patients)} patient and {len(studies)} study folders"
    problems = []
    for study in studies:
        files = sorted(study.rglob("*.dcm"))
        assert len(files) == 6
        res = run_tool(dcentvfy, *files)
        errs = [ln for ln in res.stderr.splitlines() if "Error" in ln]
        if res.returncode != 0 or errs:
            problems.append(f"{study.relative_to(out)}: exit {res.returncode}: {errs}")
    res = run_tool(dcentvfy, *sorted(out.rglob("*.dcm")))
    errs = [ln for ln in res.stderr.splitlines() if "Error" in ln]
    if res.returncode != 0 or errs:
        problems.append(f"all outputs: exit {res.returncode}: {errs[:10]}")
    assert not problems, fmt_problems(problems)


# ---------------------------------------------------------------------------
# determinism and keys
# ---------------------------------------------------------------------------

def output_uids(root: Path) -> set[str]:
    uids = set()
    for p in root.rglob("*.dcm"):
        ds = dcmread(p, stop_before_pixels=True)
        for _, kw, v in list(walk_uids(ds)) + list(walk_uids(ds.file_meta)):
            if not v.startswith(STANDARD_UID_ROOT) and kw not in NON_INSTANCE_UID_KEYWORDS:
                uids.add(v)
    return uids


def test_deterministic_and_keyed(planted, radveil, key_file, other_key_file, tmp_path):
    dirs = planted["dirs"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ra, reca = radveil.deid(dirs, a, key_file)
    rb, _ = radveil.deid(dirs, b, key_file)
    rc, recc = radveil.deid(dirs, c, other_key_file)
    for r, w in ((ra, "a"), (rb, "b"), (rc, "c")):
        assert_no_panic(r, w)
    ta, tb = tree_hashes(a), tree_hashes(b)
    assert ta, "nothing written"
    only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
    differ = sorted(k for k in set(ta) & set(tb) if ta[k] != tb[k])
    assert not (only_a or only_b or differ), (
        f"same key, different trees: only in first {only_a[:5]}, only in second {only_b[:5]}, "
        f"different bytes {differ[:5]}")

    ua, uc = output_uids(a), output_uids(c)
    shared = ua & uc
    assert not shared, f"{len(shared)} UIDs identical under two keys, e.g. {sorted(shared)[:5]}"
    ma, mc = by_input(reca), by_input(recc)
    same_pid = []
    for inp, rec in ma.items():
        other = mc.get(inp)
        if rec.get("status") != "written" or not other or other.get("status") != "written":
            continue
        pa = dcmread(rec["output"], stop_before_pixels=True).get("PatientID")
        pc = dcmread(other["output"], stop_before_pixels=True).get("PatientID")
        if pa == pc:
            same_pid.append(f"{Path(inp).name}: {pa!r}")
    assert not same_pid, f"same PatientID under two keys: {same_pid[:10]}"


@pytest.mark.parametrize("how", ["no-key-file-option", "key-file-missing"])
def test_refuses_without_key(radveil, real_inputs, tmp_path, how):
    src = real_inputs[:2]
    out = tmp_path / "out"
    args = ["deid", *src, "--out", out]
    if how == "key-file-missing":
        args += ["--key-file", tmp_path / "nokey"]
    r = radveil.run(*args)  # RADVEIL_KEY is removed from the environment
    assert r.returncode == 2, f"{how}: exit {r.returncode}\n{r.stderr}"
    assert "radveil keygen" in (r.stderr + r.stdout), f"{how}: message does not mention `radveil keygen`: {r.stderr}"
    assert not (out.exists() and any(out.rglob("*.dcm"))), f"{how}: wrote output without a key"


def test_keygen_mode_0600(radveil, tmp_path):
    k = tmp_path / "k"
    r = radveil.run("keygen", k)
    assert r.returncode == 0, r.stderr
    assert k.stat().st_mode & 0o777 == 0o600, oct(k.stat().st_mode)
    before = k.read_bytes()
    assert len(before) >= 32
    r2 = radveil.run("keygen", k)
    assert r2.returncode != 0 and k.read_bytes() == before, "keygen overwrote an existing key"


# ---------------------------------------------------------------------------
# bad inputs, no overwrite, crosswalk
# ---------------------------------------------------------------------------

def small_real_files(n: int) -> list[Path]:
    """n real files with distinct SOP Instance UIDs, no burned-in annotation, small first."""
    seen, out = set(), []
    for f in sorted(corpus.real_files(), key=lambda p: p.stat().st_size):
        ds = dcmread(f, stop_before_pixels=True)
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" or ds.SOPInstanceUID in seen:
            continue
        if f.stat().st_size < 4000 or "PixelData" not in dcmread(f):
            continue
        seen.add(ds.SOPInstanceUID)
        out.append(f)
        if len(out) == n:
            break
    return out


def test_bad_inputs(radveil, key_file, tmp_path):
    good1, good2, dup, trunc_src = small_real_files(4)
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(good1, d / "good1.dcm")
    shutil.copy(good2, d / "good2.dcm")
    (d / "notes.txt").write_text("This is not DICOM.\n" * 20)
    (d / "empty.dcm").write_bytes(b"")
    (d / "truncated.dcm").write_bytes(trunc_src.read_bytes()[:1000])
    shutil.copy(dup, d / "dup_a.dcm")
    shutil.copy(dup, d / "dup_b.dcm")
    before = tree_hashes(d)
    out = tmp_path / "out"
    r, recs = radveil.deid([d], out, key_file)
    assert_no_panic(r, "bad inputs")
    assert tree_hashes(d) == before, "inputs were modified"
    m = {Path(k).name: v for k, v in by_input(recs).items()}
    assert set(m) == set(before), f"report lines for {sorted(m)} but inputs {sorted(before)}"
    problems = []
    for name in ("good1.dcm", "good2.dcm"):
        if m[name]["status"] != "written" or not Path(m[name]["output"] or "/nonexistent").is_file():
            problems.append(f"{name}: {m[name]}")
    for name in ("notes.txt", "empty.dcm", "truncated.dcm"):
        if m[name]["status"] == "written" or not m[name].get("reason") or m[name].get("output"):
            problems.append(f"{name} should not be written: {m[name]}")
    dups = [m["dup_a.dcm"], m["dup_b.dcm"]]
    if sum(x["status"] == "written" for x in dups) > 1:
        problems.append(f"both copies of one SOP instance written: {dups}")
    if not any(x["status"] == "duplicate" and x.get("reason") for x in dups):
        problems.append(f"no copy reported as duplicate with a reason: {dups}")
    assert not problems, fmt_problems(problems)
    assert r.returncode == 1, f"exit {r.returncode}, want 1"
    outs = sorted(out.rglob("*.dcm"))
    assert len(outs) == sum(x["status"] == "written" for x in m.values()), outs


def test_never_overwrites(radveil, key_file, tmp_path):
    files = small_real_files(3)
    out = tmp_path / "out"
    r1, recs1 = radveil.deid(files, out, key_file, report=tmp_path / "r1.jsonl")
    assert_no_panic(r1, "first run")
    assert r1.returncode == 0 and all(x["status"] == "written" for x in recs1), recs1
    first = tree_hashes(out)
    r2, recs2 = radveil.deid(files, out, key_file, report=tmp_path / "r2.jsonl")
    assert_no_panic(r2, "second run")
    bad = [x for x in recs2 if x["status"] not in ("failed", "duplicate")
           or "exist" not in (x.get("reason") or "").lower()]
    assert not bad, f"second run into the same --out: {bad}"
    assert r2.returncode == 1, f"exit {r2.returncode}, want 1"
    assert tree_hashes(out) == first, "first outputs changed"


def test_crosswalk(radveil, key_file, tmp_path, planted):
    cw = tmp_path / "cw"
    src = planted["root"] / "series"
    r, recs = radveil.deid([src], tmp_path / "out", key_file, "--crosswalk", cw)
    assert_no_panic(r, "crosswalk")
    csvs = sorted(cw.glob("*.csv"))
    assert csvs, f"no CSV in {cw}: {list(cw.iterdir()) if cw.exists() else 'missing'}"
    pairs = set()
    for f in csvs:
        assert f.stat().st_mode & 0o777 == 0o600, f"{f.name} mode {oct(f.stat().st_mode & 0o777)}"
        with f.open(newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows and rows[0] == ["id_old", "id_new"], f"{f.name} header {rows[:1]}"
        pairs |= {tuple(r) for r in rows[1:]}
    # the PatientID mapping of every written file is in the crosswalk
    missing = []
    for inp, rec in by_input(recs).items():
        if rec.get("status") != "written":
            continue
        old = str(dcmread(inp, stop_before_pixels=True).PatientID)
        new = str(dcmread(rec["output"], stop_before_pixels=True).PatientID)
        sop_old = str(dcmread(inp, stop_before_pixels=True).SOPInstanceUID)
        sop_new = str(dcmread(rec["output"], stop_before_pixels=True).SOPInstanceUID)
        if (old, new) not in pairs:
            missing.append(f"PatientID {old} -> {new}")
        if (sop_old, sop_new) not in pairs:
            missing.append(f"SOPInstanceUID {sop_old} -> {sop_new}")
    assert not missing, fmt_problems(sorted(set(missing)))


def test_dicomdir_is_followed_never_copied(radveil, key_file, tmp_path):
    """A DICOMDIR named on the command line is followed to the files it references (counted
    by pydicom's FileSet, the oracle); the DICOMDIR itself is never written, and one met while
    walking a directory is reported as skipped."""
    from pydicom.fileset import FileSet

    ddir = corpus.pydicom_test_dir() / "dicomdirtests"
    dicomdir = ddir / "DICOMDIR"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        referenced = {real(inst.path) for inst in FileSet(dcmread(dicomdir))}
    assert referenced, "pydicom found no referenced files"
    out = tmp_path / "out"
    r, recs = radveil.deid([dicomdir], out, key_file)
    assert_no_panic(r, "DICOMDIR")
    inputs = {real(rec["input"]) for rec in recs}
    assert inputs == referenced, f"radveil followed {len(inputs)} files, pydicom lists {len(referenced)}"
    assert all(rec["status"] == "written" for rec in recs), [rec for rec in recs if rec["status"] != "written"]
    for f in out.rglob("*"):
        if f.is_file():
            assert dcmread(f).file_meta.MediaStorageSOPClassUID != "1.2.840.10008.1.3.10", "a DICOMDIR was written"
    out2 = tmp_path / "walked"
    r2, recs2 = radveil.deid([ddir], out2, key_file)
    assert_no_panic(r2, "directory with DICOMDIRs")
    skipped = {Path(rec["input"]).name for rec in recs2 if rec["status"] == "skipped"}
    assert "DICOMDIR" in skipped, f"DICOMDIR not reported as skipped: {skipped}"


def test_profile_file_rules_options_and_uid_root(radveil, key_file, tmp_path):
    """A TOML profile's options, UID root and per-attribute rules reach the output (pydicom
    reads it back)."""
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    before = dcmread(src)
    root = "1.2.826.0.1.3680043.10.543"
    profile = tmp_path / "site.toml"
    profile.write_text(
        'options = ["retain-long-full-dates"]\n'
        f'uid_root = "{root}"\n'
        "[attributes]\n"
        'PatientSex = "keep"\n'
        'InstitutionName = { replace = "SITE 7" }\n'
    )
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file, "--profile", profile)
    assert_no_panic(r, "profile")
    assert r.returncode == 0 and recs[0]["status"] == "written", recs
    ds = dcmread(recs[0]["output"])
    assert ds.SOPInstanceUID.startswith(root + ".") and len(ds.SOPInstanceUID) <= 64
    assert ds.StudyInstanceUID.startswith(root + ".")
    assert ds.InstitutionName == "SITE 7"
    assert ds.PatientSex == before.PatientSex
    assert ds.StudyDate == before.StudyDate, "retain-long-full-dates keeps dates"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113106"], codes
    bad = tmp_path / "bad.toml"
    bad.write_text('options = ["retain-everything"]\n')
    r2, _ = radveil.deid([src], tmp_path / "out2", key_file, "--profile", bad, report=tmp_path / "r2.jsonl")
    assert r2.returncode == 2 and "retain-everything" in r2.stderr


def test_assume_burned_in_unless_no_holds_back_secondary_capture(radveil, key_file, tmp_path):
    """Secondary Capture without Burned In Annotation is written by default and held back
    with --assume-burned-in unless-no; one that says NO is written either way."""
    src = corpus.pydicom_test_dir() / "SC_rgb_gdcm_KY.dcm"
    ds = dcmread(src)
    assert "BurnedInAnnotation" not in ds
    no = tmp_path / "in" / "no.dcm"
    no.parent.mkdir()
    ds.BurnedInAnnotation = "NO"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(no, enforce_file_format=True)
    r, recs = radveil.deid([src, no], tmp_path / "a", key_file)
    assert r.returncode == 0, recs
    r, recs = radveil.deid([src, no], tmp_path / "b", key_file, "--assume-burned-in", "unless-no",
                           report=tmp_path / "b.jsonl")
    status = {Path(x["input"]).name: x for x in recs}
    assert r.returncode == 1
    assert status[src.name]["status"] == "held" and "burn" in status[src.name]["reason"]
    assert status["no.dcm"]["status"] == "written"
