"""Names and dates in the forms people write them (issue 17, classes 1-3).

Files are built with pydicom in each Specific Character Set: the patient's name (and
birth name, mother's birth name, other names) written into descriptors kept under Clean
Descriptors in upper case, without accents, as parts of a double-barrelled name, joined by
``_``, inverted, possessive, CJK without separators or in the phonetic group; the birth
date in written forms; the phone number with other separators. pydicom (a different
decoder from radveil's) reads the outputs and every text value is checked, folded the same
way a reader would: NFKD, marks dropped, case folded.

Precision: clinical words stay, and common words that are also surnames stay when they are
not the patient's name.
"""

from __future__ import annotations

import shutil
import unicodedata
import warnings
from pathlib import Path

import pytest

from conftest import require_module

pydicom = require_module("pydicom")

from pydicom.data import get_charset_files, get_testdata_file  # noqa: E402


def fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.casefold()
    for a, b in (("ł", "l"), ("ø", "o"), ("đ", "d")):
        s = s.replace(a, b)
    # katakana as hiragana
    return "".join(chr(ord(c) - 0x60) if "\u30a1" <= c <= "\u30f6" else c for c in s)


def words(s: str) -> str:
    """Letters and digits only, folded (what the planted strings are compared as)."""
    return "".join(c for c in fold(s) if c.isalnum())


# Each case: a character set, the identifying attributes, and descriptors (kept and
# cleaned under Clean Descriptors) holding them in the written forms; `secret` are the
# strings that must not survive (compared on letters and digits, folded), `clinical` the
# words that must.
CASES = {
    "latin1-case-accents": dict(
        charset="ISO_IR 100",
        attrs={"PatientName": "Lefèvre^Zoë", "PatientBirthDate": "19580312"},
        desc=["MR LEFEVRE ZOE HEAD", "zoë lefèvre SAG T2", "born 12-Mar-1958 CT"],
        secret=["lefevre", "zoe", "12mar1958"],
        clinical=["HEAD", "SAG T2", "CT"],
    ),
    "latin2-upper-and-stripped": dict(
        charset="ISO_IR 101",
        attrs={"PatientName": "Grześkowiak^Łucja", "PatientBirthName": "Nowak^Maria",
               "PatientMotherBirthName": "Dąbrowska^Ewa"},
        desc=["TK JAMY BRZUSZNEJ GRZEŚKOWIAK", "grzeskowiak LUCJA", "NOWAK DABROWSKA kolano"],
        secret=["grzeskowiak", "lucja", "nowak", "dabrowska"],
        clinical=["TK JAMY BRZUSZNEJ", "kolano"],
    ),
    "utf8-parts-and-joins": dict(
        charset="ISO_IR 192",
        attrs={"PatientName": "Kowalczyk-Ashby^Anna", "OtherPatientNames": "Ashby^Annie",
               "PatientTelephoneNumbers": "555-123-4567"},
        desc=["Ashby knee", "ANNA_KOWALCZYK brain", "Kowalczyk-Ashby, Anna's scan",
              "Annie call 555.123.4567"],
        secret=["ashby", "kowalczyk", "anna", "annie", "5551234567"],
        clinical=["knee", "brain", "scan", "call"],
    ),
    "utf8-dates": dict(
        charset="ISO_IR 192",
        attrs={"PatientName": "Smith^John", "PatientBirthDate": "19580312"},
        desc=["DOB 12.03.1958 HEAD", "born March 12, 1958", "1958/03/12 Brown White Head",
              "12th March 1958 chest"],
        secret=["12031958", "march121958", "19580312", "12thmarch1958", "smith", "john"],
        clinical=["HEAD", "Brown White Head", "chest"],
    ),
    "japanese-iso2022": dict(
        charset=["", "ISO 2022 IR 87"],
        attrs={"PatientName": "Yamada^Hanako=山田^花子=やまだ^はなこ"},
        desc=["山田花子 頭部", "ヤマダ ハナコ MR", "YAMADA HANAKO CT"],
        secret=["山田", "花子", "やまだ", "はなこ", "yamada", "hanako"],
        clinical=["頭部", "MR", "CT"],
    ),
    "korean-iso2022": dict(
        charset=["", "ISO 2022 IR 149"],
        attrs={"PatientName": "Hong^Gildong=洪^吉洞=홍^길동"},
        desc=["홍길동 두부", "洪吉洞 CT", "HONG GILDONG MR"],
        secret=["홍길동", "洪吉洞", "hong", "gildong"],
        clinical=["두부", "CT", "MR"],
    ),
    "chinese-gb18030": dict(
        charset="GB18030",
        attrs={"PatientName": "Wang^XiaoDong=王^小东"},
        desc=["王小东 头部", "WANG XIAODONG CT"],
        secret=["王小东", "xiaodong", "wang"],
        clinical=["头部", "CT"],
    ),
}

DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ImageComments", "ProtocolName")


def build(case: dict, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SpecificCharacterSet = case["charset"]
        for k, v in case["attrs"].items():
            setattr(ds, k, v)
        for kw, text in zip(DESCRIPTORS, case["desc"]):
            setattr(ds, kw, text)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)


def texts(path: Path) -> list[tuple[str, str]]:
    """Every text value of the file as pydicom decodes it (all depths)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    ds.decode()
    out: list[tuple[str, str]] = []

    def walk(d, prefix=""):
        for el in d:
            if el.VR == "SQ":
                for item in el.value:
                    walk(item, prefix + el.keyword + ">")
            elif el.VR in ("LO", "SH", "LT", "ST", "UT", "UC", "PN", "AE", "CS"):
                v = el.value
                vals = v if isinstance(v, (list, pydicom.multival.MultiValue)) else [v]
                for x in vals:
                    out.append((prefix + (el.keyword or str(el.tag)), str(x)))

    walk(ds)
    return out


@pytest.fixture(scope="module")
def cleaned(radveil, key_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    src = root / "in"
    src.mkdir()
    for name, case in CASES.items():
        build(case, src / f"{name}.dcm")
    out = root / "out"
    r, recs = radveil.deid([src], out, key_file, "--option", "clean-descriptors")
    assert "panicked" not in r.stderr
    by_name = {Path(rec["input"]).stem: rec for rec in recs}
    return src, out, by_name


@pytest.mark.parametrize("name", sorted(CASES))
def test_inputs_hold_what_is_planted(cleaned, name):
    src, _, _ = cleaned
    found = " ".join(words(t) for _, t in texts(src / f"{name}.dcm"))
    for s in CASES[name]["secret"]:
        assert words(s) in found, f"{name}: the input does not carry {s!r} (pydicom could not encode it?)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_names_and_dates_do_not_survive_clean_descriptors(cleaned, name):
    _, _, recs = cleaned
    rec = recs[name]
    assert rec["status"] == "written", f"{name}: {rec['status']} {rec.get('reason')}"
    values = texts(Path(rec["output"]))
    leaks = []
    for kw, t in values:
        w = words(t)
        for s in CASES[name]["secret"]:
            if words(s) and words(s) in w:
                leaks.append(f"{kw} holds {s!r}")
    assert not leaks, f"{name}: " + "; ".join(leaks)


@pytest.mark.parametrize("name", sorted(CASES))
def test_clinical_words_stay(cleaned, name):
    _, _, recs = cleaned
    rec = recs[name]
    assert rec["status"] == "written", f"{name}: {rec['status']} {rec.get('reason')}"
    kept = " ".join(t for kw, t in texts(Path(rec["output"])) if kw in DESCRIPTORS)
    for w in CASES[name]["clinical"]:
        assert w in kept, f"{name}: the clinical words {w!r} were removed: {kept!r}"


CHARSET_FILES = ["chrH31.dcm", "chrH32.dcm", "chrX1.dcm", "chrX2.dcm", "chrI2.dcm",
                 "chrKoreanMulti.dcm", "chrJapMulti.dcm", "chrGerm.dcm", "chrFren.dcm",
                 "chrRuss.dcm", "chrGreek.dcm", "chrHbrw.dcm", "chrArab.dcm", "chrFrenMulti.dcm"]


def test_pydicom_charset_files(radveil, key_file, tmp_path):
    """pydicom's own character-set files, each name written into a descriptor as pydicom
    encodes it: the name's every component is gone from the output, in every set."""
    src = tmp_path / "in"
    src.mkdir()
    planted: dict[str, list[str]] = {}
    for f in CHARSET_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(get_charset_files(f)[0], force=True)
        ds.decode()
        pn = str(ds.get("PatientName", "") or "")
        comps = [c for g in pn.split("=") for c in g.replace("^", " ").split() if len(words(c)) >= 2]
        if not comps:
            continue
        ds.SOPInstanceUID = pydicom.uid.generate_uid()  # some of these files share one
        if "SOPClassUID" not in ds:
            ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
        for k in ("StudyInstanceUID", "SeriesInstanceUID"):
            if k not in ds:
                setattr(ds, k, pydicom.uid.generate_uid())
        ds.ImageComments = "seen: " + " ".join(c.upper() for c in comps) + " knee"
        ds.file_meta = getattr(ds, "file_meta", pydicom.dataset.FileMetaDataset())
        ds.file_meta.TransferSyntaxUID = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(src / f, enforce_file_format=True)
        planted[f] = comps
    assert len(planted) >= 10, f"too few charset files usable: {sorted(planted)}"
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file, "--option", "clean-descriptors")
    assert "panicked" not in r.stderr
    problems = []
    for rec in recs:
        f = Path(rec["input"]).name
        if f not in planted:
            continue
        if rec["status"] != "written":
            problems.append(f"{f}: {rec['status']} {rec.get('reason')}")
            continue
        for kw, t in texts(Path(rec["output"])):
            for c in planted[f]:
                if words(c) in words(t):
                    problems.append(f"{f}: {kw} holds a component of the patient's name")
        comments = [t for kw, t in texts(Path(rec["output"])) if kw == "ImageComments"]
        if comments and "knee" not in comments[0]:
            problems.append(f"{f}: the clinical word went")
    assert not problems, "; ".join(problems)


def test_undecodable_text_is_held_back(radveil, key_file, tmp_path):
    """Text that does not decode in its declared set cannot be called clean."""
    src = tmp_path / "in"
    src.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Nowak^Jan"
    ds.StudyDescription = "x"
    ds.save_as(src / "bad.dcm", enforce_file_format=True)
    raw = (src / "bad.dcm").read_bytes()
    # StudyDescription's value, one byte made invalid UTF-8 (same length).
    i = raw.index(b"LO\x02\x00x\x20") if b"LO\x02\x00x\x20" in raw else raw.index(b"x\x20")
    j = raw.index(b"x\x20", i)
    (src / "bad.dcm").write_bytes(raw[:j] + b"\xff" + raw[j + 1:])
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file, "--option", "clean-descriptors")
    assert "panicked" not in r.stderr
    assert recs and recs[0]["status"] == "held", recs
    assert "Specific Character Set" in recs[0]["reason"]


def test_unknown_standard_attribute_is_removed(radveil, key_file, tmp_path):
    """An even-group element missing from the dictionary, in implicit VR (so it arrives as
    UN), holding the patient's name: removed, and the report says so."""
    src = tmp_path / "in"
    src.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Ferreira^Joana"
    ds.add_new(0x00109999, "LO", "FERREIRA JOANA follow-up")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(src / "unknown.dcm", enforce_file_format=True)
    assert b"FERREIRA JOANA" in (src / "unknown.dcm").read_bytes()
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file)
    assert "panicked" not in r.stderr
    assert recs and recs[0]["status"] == "written", recs
    data = Path(recs[0]["output"]).read_bytes()
    assert b"FERREIRA" not in data.upper() and b"JOANA" not in data.upper()
    assert recs[0]["actions"]["unknown_removed"] >= 1, recs[0]["actions"]


def test_rt_and_waveform_text_name_nobody(radveil, key_file, tmp_path):
    """Class 5: staff named nowhere else in the object, in RT descriptors (Clean
    Descriptors), a TEXT item of Acquisition Context and a waveform annotation (Clean
    Structured Content): their names go, the clinical words stay."""
    src = tmp_path / "in"
    src.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
        ecg = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    rt.PatientName = "Doe^Jane"
    rt.RTPlanLabel = "Anna Nowak v2"
    rt.RTPlanName = "PROSTATE IMRT"
    rt.RTPlanDescription = "reviewed by Dr. Kowalski, boost 2 Gy"
    item = pydicom.Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "approved John Smith, left breast"
    item.ConceptNameCodeSequence = [pydicom.Dataset()]
    item.ConceptNameCodeSequence[0].CodeValue = "121106"
    item.ConceptNameCodeSequence[0].CodingSchemeDesignator = "DCM"
    item.ConceptNameCodeSequence[0].CodeMeaning = "Comment"
    rt.AcquisitionContextSequence = [item]
    rt.save_as(src / "rt.dcm", enforce_file_format=True)
    ecg.PatientName = "Roe^Richard"
    ann = pydicom.Dataset()
    ann.UnformattedTextValue = "per Mary Johnson: sinus rhythm"
    ann.ReferencedWaveformChannels = [1, 1]
    ecg.WaveformAnnotationSequence = [ann]
    ecg.save_as(src / "ecg.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    r, recs = radveil.deid([src], out, key_file, "--option", "clean-descriptors",
                           "--option", "clean-structured-content")
    assert "panicked" not in r.stderr
    by = {Path(rec["input"]).stem: rec for rec in recs}
    staff = ["nowak", "kowalski", "smith", "johnson", "anna", "mary"]
    for name, clinical in (("rt", ["v2", "PROSTATE IMRT", "boost 2 Gy", "left breast"]),
                           ("ecg", ["sinus rhythm"])):
        rec = by[name]
        assert rec["status"] == "written", f"{name}: {rec['status']} {rec.get('reason')}"
        values = texts(Path(rec["output"]))
        for kw, t in values:
            for s in staff:
                assert s not in words(t).lower() or s not in fold(t).split(), f"{name}: {kw} names {s}"
        joined = " ".join(t for _, t in values)
        for w in clinical:
            assert w in joined, f"{name}: the clinical words {w!r} went: {joined[:300]}"
