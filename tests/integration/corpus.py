"""Test corpora for the radveil integration tests and benchmarks.

Three things live here:

* :func:`real_files` lists the real DICOM files shipped with pydicom
  (``pydicom/data/test_files``) and pydicom-data (``data_store/data``) that
  pydicom reads without ``force`` and that carry file meta information and a
  SOP Instance UID.  Nothing is downloaded: pydicom's ``get_testdata_files``
  tries to fetch external files over the network, so the folders are globbed
  directly.
* :func:`plant_phi` copies a file and plants unique, recognisable PHI tokens
  into many attributes (standard, nested in sequences, and private).  Every
  planted value is recorded so a test can prove none of it survives.
* :func:`make_bench_corpus` writes ``n`` planted copies of ``693_UNCI.dcm``
  arranged as patients / studies / series with distinct UIDs.

Tokens look like ``PHI`` + 5..9 uppercase alphanumerics (8-12 characters in
all) and are unique within the process.  Dates are real, unique calendar dates
(checked as their ``YYYYMMDD`` string); they are drawn from 1901-1989 so they
are unlikely to collide with dates a de-identifier derives from the real
study dates of the test files.

Command line (handy for the benchmark and for poking at things by hand)::

    python corpus.py list                     # print the real input files
    python corpus.py plant OUTDIR [--seed N]  # planted copy of every real file
    python corpus.py bench N OUTDIR [--seed N]
    (the manifest goes to OUTDIR.manifest.json, beside the folder)
"""

from __future__ import annotations

import copy
import datetime as _dt
import glob
import json
import os
import random
import string
import sys
import warnings
from pathlib import Path
from typing import Iterable

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

TOKEN_PREFIX = "PHI"
_ALNUM = string.ascii_uppercase + string.digits

# Private creators used for planting.  The creator strings themselves are
# not secrets (they are not recorded as tokens); the values under them are.
PRIVATE_CREATOR_FLAT = "RADVEIL PHI TEST"
PRIVATE_CREATOR_SQ = "RADVEIL PHI SQ"
PRIVATE_CREATOR_INNER = "RADVEIL PHI INNER"

_used_tokens: set[str] = set()
_used_dates: set[str] = set()


# --------------------------------------------------------------------------
# Locating the real files
# --------------------------------------------------------------------------

def pydicom_test_dir() -> Path:
    import pydicom.data as pdd

    return Path(pdd.__file__).parent / "test_files"


def pydicom_data_dir() -> Path | None:
    """Folder holding pydicom-data's files (package ``data_store``)."""
    try:
        import data_store  # provided by the pydicom-data distribution
    except ImportError:
        return None
    d = Path(data_store.__file__).parent / "data"
    return d if d.is_dir() else None


def find_data_file(name: str) -> Path:
    """Locate a file by name in pydicom's or pydicom-data's folders."""
    for d in (pydicom_data_dir(), pydicom_test_dir()):
        if d is None:
            continue
        for p in d.rglob(name):
            if p.is_file():
                return p
    raise FileNotFoundError(name)


def _read_ok(path: Path) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            return None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "MediaStorageSOPClassUID" not in meta or "TransferSyntaxUID" not in meta:
        return None
    if "SOPInstanceUID" not in ds or not ds.SOPInstanceUID:
        return None
    return ds


def _truncated_ds(ds: Dataset) -> bool:
    from pydicom.dataelem import RawDataElement

    for raw in list(ds._dict.values()):
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None \
                and len(raw.value) < raw.length:
            return True
    for el in ds:
        if el.VR == "SQ" and el.value:
            if any(_truncated_ds(item) for item in el.value):
                return True
    return False


def is_truncated(path) -> bool:
    """Whether the file ends inside an element value.  pydicom reads such
    files without complaint (e.g. MR_truncated.dcm, rtplan_truncated.dcm),
    so they are in :func:`real_files`; a de-identifier should refuse them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _truncated_ds(pydicom.dcmread(path))
        except Exception:
            return True


_real_cache: list[Path] | None = None


def real_files() -> list[Path]:
    """All real files pydicom reads (no force) that have file meta and a SOP
    Instance UID.  Sorted, absolute paths."""
    global _real_cache
    if _real_cache is not None:
        return list(_real_cache)
    cands: list[Path] = []
    for d in (pydicom_test_dir(), pydicom_data_dir()):
        if d is None:
            continue
        cands += [Path(p) for p in glob.glob(str(d / "**" / "*"), recursive=True) if os.path.isfile(p)]
    out = sorted({p.resolve() for p in cands if _read_ok(p) is not None})
    _real_cache = out
    return list(out)


def batches_unique_sop(files: Iterable[Path]) -> list[list[Path]]:
    """Split files into batches in which no SOP Instance UID repeats (the test
    files reuse UIDs a lot; one radveil run would report them as duplicates)."""
    batches: list[tuple[set[str], list[Path]]] = []
    for f in files:
        ds = _read_ok(Path(f))
        uid = str(ds.SOPInstanceUID) if ds is not None else f"?{f}"
        for seen, items in batches:
            if uid not in seen:
                seen.add(uid)
                items.append(Path(f))
                break
        else:
            batches.append(({uid}, [Path(f)]))
    return [items for _, items in batches]


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

def token(rng: random.Random) -> str:
    """Unique text token, 'PHI' + 5..9 uppercase alnum (8-12 chars)."""
    while True:
        t = TOKEN_PREFIX + "".join(rng.choice(_ALNUM) for _ in range(rng.randint(5, 9)))
        if t not in _used_tokens:
            _used_tokens.add(t)
            return t


def date_token(rng: random.Random, first_year: int = 1901, last_year: int = 1989) -> str:
    """Unique real calendar date as 'YYYYMMDD'."""
    start = _dt.date(first_year, 1, 1).toordinal()
    end = _dt.date(last_year, 12, 31).toordinal()
    while True:
        d = _dt.date.fromordinal(rng.randint(start, end)).strftime("%Y%m%d")
        if d not in _used_dates:
            _used_dates.add(d)
            return d


class _Planter:
    def __init__(self, rng: random.Random, fixed: dict | None):
        self.rng = rng
        self.fixed = fixed or {}
        self.entries: list[dict] = []

    def _rec(self, path: str, tok: str, kind: str) -> None:
        self.entries.append({"path": path, "token": tok, "kind": kind})

    def text(self, path: str) -> str:
        if path in self.fixed:
            t = self.fixed[path]
        else:
            t = token(self.rng)
        self._rec(path, t, "text")
        return t

    def ref(self, path: str, tok: str) -> str:
        """Record an already planted token reused in ``path`` (free text)."""
        self._rec(path, tok, "text")
        return tok

    def pn(self, path: str) -> str:
        if path in self.fixed:
            v = self.fixed[path]
        else:
            v = f"{token(self.rng)}^{token(self.rng)}"
        for i, part in enumerate(v.split("^")):
            self._rec(f"{path}[{'family' if i == 0 else 'given'}]", part, "text")
        return v

    def date(self, path: str) -> str:
        d = self.fixed[path] if path in self.fixed else date_token(self.rng)
        self._rec(path, d, "date")
        return d

    def datetime(self, path: str) -> str:
        d = self.fixed[path] if path in self.fixed else date_token(self.rng)
        self._rec(path, d, "date")
        return d + "101500"


def _plant_into(ds: Dataset, p: _Planter) -> None:
    # Free-text descriptors (StudyDescription, SeriesDescription, ImageComments,
    # PatientComments, ...) carry an identifier that is also planted in an
    # identifying attribute of the same object (the patient's name, ID, ...),
    # the way real descriptors leak PHI.  A unique random word in a description
    # could not be recognised by any cleaner short of dropping the text, so
    # that would test nothing useful for the clean-descriptors option.

    # A planted copy is identified again: drop any "already de-identified"
    # marks (gdcmanon, for one, refuses objects that carry them).
    for kw in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if kw in ds:
            delattr(ds, kw)

    # --- Patient ---
    ds.PatientName = p.pn("PatientName")
    pat_family, pat_given = str(ds.PatientName).split("^")
    ds.PatientID = p.text("PatientID")
    ds.PatientBirthDate = p.date("PatientBirthDate")
    other = Dataset()
    other.PatientID = p.text("OtherPatientIDsSequence[0].PatientID")
    other.IssuerOfPatientID = p.text("OtherPatientIDsSequence[0].IssuerOfPatientID")
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientAddress = f"{p.text('PatientAddress')} STREET 12"
    ds.PatientTelephoneNumbers = p.text("PatientTelephoneNumbers")
    ds.PatientComments = f"lives with {p.ref('PatientComments', pat_given)}"

    # --- Study ---
    ds.StudyID = p.text("StudyID")
    ds.AccessionNumber = p.text("AccessionNumber")
    ds.ReferringPhysicianName = p.pn("ReferringPhysicianName")
    ds.StudyDescription = f"CT HEAD {p.ref('StudyDescription', pat_family)}"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Mgmt (retired), just a class UID
    ref.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=[repr(p.rng.random())])
    ref.PhysiciansOfRecord = p.pn("ReferencedStudySequence[0].PhysiciansOfRecord")
    ref.StudyComments = "ordered by " + p.ref("ReferencedStudySequence[0].StudyComments",
                                              str(ds.ReferringPhysicianName).split("^")[0])
    ds.ReferencedStudySequence = Sequence([ref])
    req = Dataset()
    req.RequestedProcedureID = p.text("RequestAttributesSequence[0].RequestedProcedureID")
    req.ScheduledProcedureStepID = p.text("RequestAttributesSequence[0].ScheduledProcedureStepID")
    req.RequestedProcedureDescription = "HEAD " + p.ref(
        "RequestAttributesSequence[0].RequestedProcedureDescription", str(ds.AccessionNumber))
    req.ScheduledPerformingPhysicianName = p.pn("RequestAttributesSequence[0].ScheduledPerformingPhysicianName")
    ds.RequestAttributesSequence = Sequence([req])

    # --- Series / equipment ---
    ds.OperatorsName = p.pn("OperatorsName")
    ds.SeriesDescription = f"AXIAL {p.ref('SeriesDescription', str(ds.OperatorsName).split('^')[0])}"
    ds.PerformingPhysicianName = p.pn("PerformingPhysicianName")
    ds.InstitutionName = p.text("InstitutionName")
    ds.InstitutionAddress = f"{p.text('InstitutionAddress')} AVENUE 5"
    ds.StationName = p.text("StationName")
    ds.DeviceSerialNumber = p.text("DeviceSerialNumber")
    contrib = Dataset()
    contrib.Manufacturer = "RADVEIL TEST"
    contrib.InstitutionName = p.text("ContributingEquipmentSequence[0].InstitutionName")
    contrib.StationName = p.text("ContributingEquipmentSequence[0].StationName")
    contrib.ContributionDateTime = p.datetime("ContributingEquipmentSequence[0].ContributionDateTime")
    purpose = Dataset()
    purpose.CodeValue = "109103"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Modifying Equipment"
    contrib.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.ContributingEquipmentSequence = Sequence([contrib])

    # --- Instance ---
    ds.ContentCreatorName = p.pn("ContentCreatorName")
    ds.ImageComments = f"seen for {p.ref('ImageComments', str(ds.PatientID))}"
    ds.InstanceCreationDate = p.date("InstanceCreationDate")
    obs = Dataset()
    obs.VerifyingObserverName = p.pn("VerifyingObserverSequence[0].VerifyingObserverName")
    obs.VerifyingOrganization = p.text("VerifyingObserverSequence[0].VerifyingOrganization")
    obs.VerificationDateTime = p.datetime("VerifyingObserverSequence[0].VerificationDateTime")
    obs.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([obs])

    # --- Private: flat block in group 0x0009 ---
    blk = ds.private_block(0x0009, PRIVATE_CREATOR_FLAT, create=True)
    blk.add_new(0x01, "LO", p.text("(0009,xx01) LO"))
    blk.add_new(0x02, "PN", p.pn("(0009,xx02) PN"))

    # --- Private: SQ in an odd group whose item holds another private block ---
    item = Dataset()
    iblk = item.private_block(0x0013, PRIVATE_CREATOR_INNER, create=True)
    iblk.add_new(0x01, "LO", p.text("(0011,xx01)[0].(0013,yy01) LO"))
    iblk.add_new(0x02, "PN", p.pn("(0011,xx01)[0].(0013,yy02) PN"))
    sblk = ds.private_block(0x0011, PRIVATE_CREATOR_SQ, create=True)
    sblk.add_new(0x01, "SQ", Sequence([item]))


def plant_phi(src, dst, rng: random.Random, fixed: dict | None = None,
              new_sop_uid: str | None = None, uids: dict | None = None) -> list[dict]:
    """Copy ``src`` to ``dst`` with PHI tokens planted; return manifest entries.

    ``fixed`` maps a manifest path (e.g. ``"PatientName"``,
    ``"PatientBirthDate"``) to the value to use instead of a fresh token, so
    copies belonging to the same patient/study/series stay consistent.
    ``new_sop_uid`` replaces the SOP Instance UID (and the file meta copy);
    ``uids`` may set ``StudyInstanceUID`` / ``SeriesInstanceUID`` /
    ``FrameOfReferenceUID``.

    The file keeps its transfer syntax (``enforce_file_format=True``).
    Raises on failure; the caller decides whether to skip the file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
    return plant_phi_ds(ds, dst, rng, fixed=fixed, new_sop_uid=new_sop_uid, uids=uids)


def plant_phi_ds(ds: Dataset, dst, rng: random.Random, fixed: dict | None = None,
                 new_sop_uid: str | None = None, uids: dict | None = None) -> list[dict]:
    p = _Planter(rng, fixed)
    _plant_into(ds, p)
    if new_sop_uid:
        ds.SOPInstanceUID = new_sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = new_sop_uid
    for k, v in (uids or {}).items():
        setattr(ds, k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(dst, enforce_file_format=True)
        # Read back: planting must survive a round trip or the test proves nothing.
        back = pydicom.dcmread(dst)
        if str(back.PatientID) != str(ds.PatientID):
            raise RuntimeError("planted PatientID did not round-trip")
    return p.entries


def build_planted_corpus(files: Iterable[Path], dst: Path, rng: random.Random,
                         unique_sop: bool = True, log=print) -> tuple[dict, list[tuple[str, str]]]:
    """Planted copy of every file into ``dst`` (flat, ``NNN_name``).

    With ``unique_sop`` each copy gets a fresh SOP Instance UID, so the whole
    corpus can go through one radveil run without duplicate-instance holds.
    Returns (manifest, skipped) where manifest maps the planted file's path
    to its entries and skipped lists (src, error) for files that failed.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, list[dict]] = {}
    skipped: list[tuple[str, str]] = []
    for i, src in enumerate(files):
        out = dst / f"{i:03d}_{Path(src).name}"
        if not out.name.endswith(".dcm"):
            out = out.with_name(out.name + ".dcm")
        sop = generate_uid(entropy_srcs=[f"planted-{rng.random()}-{i}"]) if unique_sop else None
        try:
            manifest[str(out)] = plant_phi(src, out, rng, new_sop_uid=sop)
        except Exception as e:  # noqa: BLE001 - skipping is the documented behaviour
            skipped.append((str(src), f"{type(e).__name__}: {e}"))
            if out.exists():
                out.unlink()
    if skipped:
        log(f"corpus: planting/saving failed for {len(skipped)} of {len(manifest) + len(skipped)} files "
            f"(skipped): " + ", ".join(Path(s).name for s, _ in skipped))
    return manifest, skipped


# --------------------------------------------------------------------------
# Benchmark corpus
# --------------------------------------------------------------------------

def _level_fixed(rng: random.Random, keys_pn: list[str], keys_text: list[str], keys_date: list[str]) -> dict:
    f: dict[str, str] = {}
    for k in keys_pn:
        f[k] = f"{token(rng)}^{token(rng)}"
    for k in keys_text:
        f[k] = token(rng)
    for k in keys_date:
        f[k] = date_token(rng)
    return f


_PATIENT_LEVEL = (["PatientName"],
                  ["PatientID", "OtherPatientIDsSequence[0].PatientID",
                   "OtherPatientIDsSequence[0].IssuerOfPatientID", "PatientAddress",
                   "PatientTelephoneNumbers"],
                  ["PatientBirthDate"])
_STUDY_LEVEL = (["ReferringPhysicianName"],
                ["StudyID", "AccessionNumber"],
                [])
_SERIES_LEVEL = (["OperatorsName", "PerformingPhysicianName"],
                 ["InstitutionName", "InstitutionAddress", "StationName",
                  "DeviceSerialNumber"],
                 [])


def make_bench_corpus(n: int, dst, seed: int = 1, source: str = "693_UNCI.dcm",
                      patients: int = 10, studies: int = 10, series: int = 10) -> dict:
    """Write ``n`` planted copies of ``source`` into ``dst``.

    Layout: ``per = ceil(n / (patients*studies*series))`` instances per
    series; file i goes to series slot ``s = i // per``: patient
    ``s % patients``, study ``(s // patients) % studies``, series
    ``s // (patients*studies)`` (so 1000 files = 10 patients x 10 studies x
    10 series x 1 instance).  Patient/study/series level PHI is
    consistent within its level; instance level PHI is unique per file.
    Returns the manifest (file path -> entries); nothing but .dcm files is
    written into ``dst``.
    """
    rng = random.Random(seed)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = pydicom.dcmread(find_data_file(source))
    root = "1.2.826.0.1.3680043.8.498."  # pydicom's root, fine for test data
    pat_fixed: dict[int, dict] = {}
    study_fixed: dict[tuple, dict] = {}
    series_fixed: dict[tuple, dict] = {}
    study_uid: dict[tuple, str] = {}
    series_uid: dict[tuple, str] = {}
    manifest: dict[str, list[dict]] = {}
    width = max(4, len(str(n - 1)))
    per = max(1, -(-n // (patients * studies * series)))
    for i in range(n):
        slot, ii = divmod(i, per)
        pi = slot % patients
        si = (slot // patients) % studies
        ri = (slot // (patients * studies)) % series
        if pi not in pat_fixed:
            pat_fixed[pi] = _level_fixed(rng, *_PATIENT_LEVEL)
        sk, rk = (pi, si), (pi, si, ri)
        if sk not in study_fixed:
            study_fixed[sk] = _level_fixed(rng, *_STUDY_LEVEL)
            study_uid[sk] = generate_uid(root, entropy_srcs=[f"bench-{seed}-study-{sk}"])
        if rk not in series_fixed:
            series_fixed[rk] = _level_fixed(rng, *_SERIES_LEVEL)
            series_uid[rk] = generate_uid(root, entropy_srcs=[f"bench-{seed}-series-{rk}"])
        fixed = {**pat_fixed[pi], **study_fixed[sk], **series_fixed[rk]}
        uids = {"StudyInstanceUID": study_uid[sk], "SeriesInstanceUID": series_uid[rk],
                "FrameOfReferenceUID": generate_uid(root, entropy_srcs=[f"bench-{seed}-for-{sk}"]),
                "InstanceNumber": ii + 1, "SeriesNumber": ri + 1}
        sop = generate_uid(root, entropy_srcs=[f"bench-{seed}-sop-{i}"])
        out = dst / f"{i:0{width}d}.dcm"
        manifest[str(out)] = plant_phi_ds(copy.deepcopy(base), out, rng, fixed=fixed,
                                          new_sop_uid=sop, uids=uids)
    return manifest


# --------------------------------------------------------------------------
# Leak scanning
# --------------------------------------------------------------------------

DEFLATED_TS = "1.2.840.10008.1.2.1.99"


def scannable_bytes(path) -> bytes:
    """The raw bytes of a file, plus - for Deflated Explicit VR Little Endian -
    the inflated data set appended, so text hidden by compression is seen."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    if DEFLATED_TS.encode() not in data[:2048]:
        return data
    extra = b""
    try:
        if data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL":
            meta_len = struct.unpack("<I", data[140:144])[0]
            extra = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[144 + meta_len:])
    except zlib.error:
        extra = b""
    if not extra:  # no group length or odd layout: let pydicom decode and re-encode
        import io

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            buf = io.BytesIO()
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
            ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
        extra = buf.getvalue()
    return data + b"\0INFLATED\0" + extra


def scan_for_tokens(data: bytes, entries: list[dict], all_text_tokens: set[str] | None = None) -> list[str]:
    """Planted values found in ``data``.

    Text tokens are searched case-insensitively (in ``entries`` and, when
    given, in the global set ``all_text_tokens``); date tokens of ``entries``
    are searched as their exact 'YYYYMMDD' string.
    """
    import re

    found: list[str] = []
    low = data.lower()
    texts = {e["token"].lower() for e in entries if e["kind"] == "text"}
    if all_text_tokens:
        texts |= {t.lower() for t in all_text_tokens}
    pfx = TOKEN_PREFIX.lower().encode()
    for m in re.finditer(re.escape(pfx) + rb"[0-9a-z]{5,9}", low):
        s = m.group().decode()
        for ln in range(8, min(12, len(s)) + 1):
            if s[:ln] in texts:
                found.append(f"{s[:ln]!r} at byte {m.start()}")
                break
    for e in entries:
        if e["kind"] == "date":
            at = data.find(e["token"].encode())
            if at >= 0:
                found.append(f"date {e['token']} ({e['path']}) at byte {at}")
    return found


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    pp = sub.add_parser("plant")
    pp.add_argument("outdir")
    pp.add_argument("--seed", type=int, default=1)
    bp = sub.add_parser("bench")
    bp.add_argument("n", type=int)
    bp.add_argument("outdir")
    bp.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for f in real_files():
            print(f)
    elif a.cmd == "plant":
        man, skipped = build_planted_corpus(real_files(), Path(a.outdir), random.Random(a.seed),
                                            log=lambda m: print(m, file=sys.stderr))
        Path(a.outdir.rstrip("/") + ".manifest.json").write_text(json.dumps(man, indent=1))
        print(f"planted {len(man)} files, skipped {len(skipped)}", file=sys.stderr)
    elif a.cmd == "bench":
        man = make_bench_corpus(a.n, a.outdir, seed=a.seed)
        Path(a.outdir.rstrip("/") + ".manifest.json").write_text(json.dumps(man))
        print(f"wrote {a.n} files to {a.outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
