"""`radveil deid` against a hostile file system: symbolic links planted in ``--out``, FIFOs,
sockets and devices among the inputs, reports and crosswalks that cannot be written, a run
killed with SIGKILL and run again, and memory bombs under an address-space limit.

Run with::

    RADVEIL_BIN=target/release/radveil .venv/bin/python -m pytest -q tests/integration/test_hostile_files.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import pytest

from conftest import clean_env, require_module, require_tool

pydicom = require_module("pydicom")

import corpus  # noqa: E402  (needs pydicom)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def run_deid(radveil_bin, inputs, out, key, *extra, report=None, timeout=120, umask=None,
             prefix=()):
    """Runs `radveil deid`; returns (CompletedProcess, report records or None)."""
    args = [*map(str, prefix), str(radveil_bin), "deid", *map(str, inputs), "--out", str(out),
            "--key-file", str(key), "--jobs", "2"]
    if report is not None:
        args += ["--report", str(report)]
    args += [str(e) for e in extra]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=timeout,
                           preexec_fn=pre)
    except subprocess.TimeoutExpired:
        pytest.fail(f"radveil deid did not finish in {timeout} s (hung on an input?)")
    recs = None
    if report is not None and Path(report).exists():
        try:
            recs = [json.loads(ln) for ln in Path(report).read_text().splitlines() if ln.strip()]
        except ValueError:
            recs = None  # a truncated report; the caller's assertions say what is wrong
    return r, recs


def no_panic(r, what):
    assert "panicked" not in r.stderr, f"{what}: radveil panicked:\n{r.stderr[-4000:]}"
    assert r.returncode >= 0, f"{what}: killed by signal {-r.returncode}\n{r.stderr[-4000:]}"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() or p.is_symlink()) \
        if Path(root).exists() else []


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def by_name(recs) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in recs}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> list[Path]:
    """Six planted copies of a real CT file (526 KB: read in two steps, the pixel data copied
    file to file), each its own SOP instance, in two series."""
    d = tmp_path_factory.mktemp("good")
    corpus.make_bench_corpus(6, d, seed=11, patients=1, studies=1, series=2)
    return sorted(d.glob("*.dcm"))


def expected_output(radveil_bin, key_file, src: Path, tmp: Path) -> Path:
    """Where `src` lands under --out (relative), from a clean run."""
    out = tmp / "probe-out"
    r, recs = run_deid(radveil_bin, [src], out, key_file, report=tmp / "probe.jsonl")
    assert r.returncode == 0, r.stderr
    return Path(recs[0]["output"]).relative_to(out)


# ---------------------------------------------------------------------------
# symbolic links planted in --out
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("level", [1, 2, 3])
def test_symlinked_directory_in_out_is_not_followed(radveil_bin, key_file, good, tmp_path, level):
    """A link planted where a PATIENT, STUDY or SERIES directory goes must not take the
    output outside --out: the file is reported failed, nothing lands in the link's target."""
    rel = expected_output(radveil_bin, key_file, good[0], tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    link = out.joinpath(*rel.parts[:level])
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    r, recs = run_deid(radveil_bin, [good[0]], out, key_file, report=tmp_path / "r.jsonl")
    no_panic(r, "planted link")
    assert list(outside.rglob("*")) == [], f"written through a link: {list(outside.rglob('*'))}"
    assert recs and recs[0]["status"] == "failed" and recs[0]["reason"], recs
    assert r.returncode == 1


def test_symlinked_output_file_is_not_followed(radveil_bin, key_file, good, tmp_path):
    rel = expected_output(radveil_bin, key_file, good[0], tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    (out / rel).parent.mkdir(parents=True)
    (out / rel).symlink_to(outside / "victim.dcm")
    r, recs = run_deid(radveil_bin, [good[0]], out, key_file, report=tmp_path / "r.jsonl")
    no_panic(r, "planted file link")
    assert not (outside / "victim.dcm").exists()
    assert recs[0]["status"] == "failed" and "exist" in recs[0]["reason"], recs


# ---------------------------------------------------------------------------
# FIFOs, sockets, devices
# ---------------------------------------------------------------------------

def make_special(d: Path) -> dict[str, str]:
    """A FIFO, a socket, a character device (or a link to one) and links in `d`; returns
    name -> what the report should call it."""
    made = {}
    os.mkfifo(d / "fifo.dcm")
    made["fifo.dcm"] = "fifo"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock.dcm"))
    s.close()
    made["sock.dcm"] = "socket"
    try:
        os.mknod(d / "null.dcm", 0o666 | 0o020000, os.makedev(1, 3))
        made["null.dcm"] = "device"
    except (PermissionError, OSError):
        pass
    (d / "zero.dcm").symlink_to("/dev/zero")
    made["zero.dcm"] = "device"
    (d / "dangling.dcm").symlink_to(d / "nowhere")
    made["dangling.dcm"] = "link"
    return made


def test_special_files_in_a_walked_directory_are_reported(radveil_bin, key_file, good, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(good[0], d / "good.dcm")
    made = make_special(d)
    report = tmp_path / "r.jsonl"
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file, report=report, timeout=60)
    no_panic(r, "walked specials")
    m = by_name(recs)
    assert m["good.dcm"]["status"] == "written", m
    problems = []
    for name, kind in made.items():
        rec = m.get(name)
        if rec is None:
            problems.append(f"{name}: skipped silently (no report line)")
        elif rec["status"] not in ("skipped", "failed") or kind not in (rec.get("reason") or "").lower():
            problems.append(f"{name}: {rec}")
    assert not problems, problems


def test_special_files_named_directly_do_not_hang(radveil_bin, key_file, good, tmp_path):
    d = tmp_path / "specials"
    d.mkdir()
    made = make_special(d)
    direct = [d / n for n in made] + [Path("/dev/zero")]
    report = tmp_path / "r.jsonl"
    started = time.monotonic()
    r, recs = run_deid(radveil_bin, [good[0], *direct], tmp_path / "out", key_file, report=report,
                       timeout=60)
    no_panic(r, "direct specials")
    assert time.monotonic() - started < 60
    m = {rec["input"]: rec for rec in recs}
    assert m[str(good[0])]["status"] == "written"
    for p in direct:
        rec = m.get(str(p))
        assert rec is not None, f"{p}: no report line"
        assert rec["status"] in ("skipped", "failed") and rec.get("reason") and not rec.get("output"), rec
    assert r.returncode == 1


def test_fifo_referenced_by_a_dicomdir(radveil_bin, key_file, good, tmp_path):
    from pydicom.fileset import FileSet
    fs = FileSet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, g in enumerate(good[:2]):
            ds = pydicom.dcmread(g)
            ds.StudyDate, ds.StudyTime, ds.StudyID = "20000101", "120000", "1"
            ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
            fs.add(ds)
        fs.write(tmp_path / "fs")
    referenced = sorted(p for p in (tmp_path / "fs").rglob("*") if p.is_file() and p.name != "DICOMDIR")
    assert len(referenced) == 2
    referenced[0].unlink()
    os.mkfifo(referenced[0])
    report = tmp_path / "r.jsonl"
    r, recs = run_deid(radveil_bin, [tmp_path / "fs" / "DICOMDIR"], tmp_path / "out", key_file,
                       report=report, timeout=60)
    no_panic(r, "DICOMDIR with a FIFO")
    m = {os.path.realpath(rec["input"]): rec for rec in recs}
    assert m[os.path.realpath(referenced[1])]["status"] == "written", m
    fifo = m[os.path.realpath(referenced[0])]
    assert fifo["status"] in ("skipped", "failed") and "fifo" in fifo["reason"].lower(), fifo


# ---------------------------------------------------------------------------
# reports and crosswalks
# ---------------------------------------------------------------------------

def test_crosswalk_to_dangling_link_fails_before_work(radveil_bin, key_file, good, tmp_path):
    cw = tmp_path / "cw"
    cw.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cw / "uids.csv").symlink_to(elsewhere / "uids.csv")
    out = tmp_path / "out"
    r, _ = run_deid(radveil_bin, good[:2], out, key_file, "--crosswalk", cw)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert not [p for p in files_under(out) if p.suffix == ".dcm"], "work was done before failing"
    assert not (elsewhere / "uids.csv").exists()
    assert not (cw / "patient_ids.csv").exists()


def test_report_to_dangling_link_fails_before_work(radveil_bin, key_file, good, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = tmp_path / "r.jsonl"
    report.symlink_to(elsewhere / "r.jsonl")
    out = tmp_path / "out"
    r, _ = run_deid(radveil_bin, good[:2], out, key_file, report=report)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert not files_under(out) and not (elsewhere / "r.jsonl").exists()


@pytest.mark.parametrize("where", ["report", "crosswalk"])
def test_unwritable_report_or_crosswalk_fails_before_work(radveil_bin, key_file, good, tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    out = tmp_path / "out"
    extra = ["--crosswalk", blocker / "cw"] if where == "crosswalk" else []
    report = blocker / "r.jsonl" if where == "report" else None
    r, _ = run_deid(radveil_bin, good[:2], out, key_file, *extra, report=report)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert not files_under(out)


def test_crosswalk_directory_is_private_whatever_the_umask(radveil_bin, key_file, good, tmp_path):
    cw = tmp_path / "new" / "cw"
    r, _ = run_deid(radveil_bin, good[:2], tmp_path / "out", key_file, "--crosswalk", cw,
                    report=tmp_path / "r.jsonl", umask=0)
    assert r.returncode == 0, r.stderr
    assert cw.stat().st_mode & 0o777 == 0o700, oct(cw.stat().st_mode & 0o777)
    for f in cw.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f"{f.name}: {oct(f.stat().st_mode & 0o777)}"
    # the report is not left beside its temporary
    assert not [p for p in tmp_path.rglob(".radveil-*")], list(tmp_path.rglob(".radveil-*"))


# ---------------------------------------------------------------------------
# kill -9, then run again
# ---------------------------------------------------------------------------

def test_rerun_after_kill_finishes_the_work(radveil_bin, key_file, tmp_path):
    src = tmp_path / "in"
    corpus.make_bench_corpus(400, src, seed=5, patients=2, studies=2, series=2)
    ref = tmp_path / "ref"
    started = time.monotonic()
    r, _ = run_deid(radveil_bin, [src], ref, key_file, report=tmp_path / "ref.jsonl", timeout=600)
    assert r.returncode == 0, r.stderr
    full = time.monotonic() - started
    reference = tree_hashes(ref)

    out = tmp_path / "out"
    report = tmp_path / "run.jsonl"
    args = [str(radveil_bin), "deid", str(src), "--out", str(out), "--key-file", str(key_file),
            "--jobs", "1", "--report", str(report)]
    for frac in (0.4, 0.2, 0.1, 0.05):
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen(args, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + full * frac * 2
        while time.monotonic() < deadline and p.poll() is None:
            if len([q for q in out.rglob("*.dcm")]) >= 4 and time.monotonic() > deadline - full * frac:
                break
            time.sleep(0.005)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            break
        report.unlink(missing_ok=True)
    else:
        pytest.skip("could not kill the run before it finished")
    # The report of a killed run is not left behind half written.
    assert not report.exists(), "a killed run left a truncated report"
    before = {q for q in out.rglob("*.dcm")}
    assert 0 < len(before) < len(reference), f"{len(before)} of {len(reference)} written before the kill"
    # A temporary as a run killed while writing leaves it.
    series_dir = sorted(before)[0].parent
    stale = series_dir / ".radveil-0123456789abcdef.part"
    stale.write_bytes(b"\0" * 1000)
    old = time.time() - 60
    os.utime(stale, (old, old))

    # Without --resume nothing is overwritten and finished outputs are failures.
    # With --resume, the run completes: finished outputs are kept and reported so.
    report2 = tmp_path / "rerun.jsonl"
    r2, recs = run_deid(radveil_bin, [src], out, key_file, "--resume", report=report2, timeout=600)
    assert r2.returncode == 0, f"exit {r2.returncode}: {r2.stderr[-3000:]}"
    statuses = {}
    for rec in recs:
        statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
    assert statuses.get("kept") == len(before), statuses
    assert statuses.get("written", 0) + statuses["kept"] == len(reference), statuses
    assert not list(out.rglob("*.part")), list(out.rglob("*.part"))
    got = tree_hashes(out)
    assert got.keys() == reference.keys()
    assert got == reference, "rerun outputs differ from a clean run"


def test_resume_never_overwrites_a_different_file(radveil_bin, key_file, good, tmp_path):
    out = tmp_path / "out"
    r, recs = run_deid(radveil_bin, good[:2], out, key_file, report=tmp_path / "a.jsonl")
    assert r.returncode == 0
    victim = Path({rec["input"]: rec for rec in recs}[str(good[0])]["output"])
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    r2, recs2 = run_deid(radveil_bin, good[:2], out, key_file, "--resume", report=tmp_path / "b.jsonl")
    assert r2.returncode == 1, r2.stderr
    m = {rec["input"]: rec for rec in recs2}
    assert m[str(good[0])]["status"] == "failed" and "exist" in m[str(good[0])]["reason"], m
    assert m[str(good[1])]["status"] == "kept", m
    assert victim.read_bytes() == bytes(data), "a different existing file was overwritten"


# ---------------------------------------------------------------------------
# memory bombs under an address-space limit
# ---------------------------------------------------------------------------

def element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return struct.pack("<HH2s2xI", group, elem, vr, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


def padded(s: str, pad=b" ") -> bytes:
    b = s.encode()
    return b + pad if len(b) % 2 else b


def part10(body: bytes, ts: str, sop: str) -> bytes:
    ct = "1.2.840.10008.5.1.4.1.1.2"
    meta = (element(0x00020001, b"OB", b"\0\1")
            + element(0x00020002, b"UI", padded(ct, b"\0"))
            + element(0x00020003, b"UI", padded(sop, b"\0"))
            + element(0x00020010, b"UI", padded(ts, b"\0")))
    return b"\0" * 128 + b"DICM" + element(0x00020000, b"UL", struct.pack("<I", len(meta))) + meta + body


def header(sop: str) -> bytes:
    return (element(0x00080016, b"UI", padded("1.2.840.10008.5.1.4.1.1.2", b"\0"))
            + element(0x00080018, b"UI", padded(sop, b"\0"))
            + element(0x00080060, b"CS", padded("CT"))
            + element(0x00090010, b"LO", padded("BOMB CREATOR")))


def deflate_bomb(path: Path, inflated: int):
    """Deflated Explicit VR Little Endian whose data set inflates to `inflated` bytes."""
    sop = "1.2.826.0.1.3680043.8.498.77"
    head = header(sop) + element(0x00091000, b"OB", b"", length=inflated - len(header(sop)) - 12)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = [c.compress(head)]
    zeros = b"\0" * (64 << 20)
    left = inflated - len(head)
    while left > 0:
        n = min(left, len(zeros))
        chunks.append(c.compress(zeros[:n]))
        left -= n
    chunks.append(c.flush())
    path.write_bytes(part10(b"".join(chunks), "1.2.840.10008.1.2.1.99", sop))


def sparse_claim(path: Path, size: int):
    """A sparse file of `size` bytes: a header, then one private OB element over the rest."""
    sop = "1.2.826.0.1.3680043.8.498.78"
    head = part10(header(sop), "1.2.840.10008.1.2.1", sop)
    head += element(0x00091000, b"OB", b"", length=size - len(head) - 12)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)


@pytest.mark.parametrize("limit", [None, "256M"])
def test_bombs_among_good_files_under_an_address_space_limit(radveil_bin, key_file, good, tmp_path, limit):
    prlimit = require_tool("prlimit")
    d = tmp_path / "in"
    d.mkdir()
    for g in good:
        shutil.copy(g, d / g.name)
    deflate_bomb(d / "bomb-deflate.dcm", 3 << 30)
    sparse_claim(d / "bomb-sparse.dcm", 3 << 30)
    extra = ["--memory-limit", limit] if limit else []
    report = tmp_path / "r.jsonl"
    r, recs = run_deid(radveil_bin, [d], tmp_path / "out", key_file, *extra, report=report,
                       timeout=300, prefix=[prlimit, f"--as={1 << 30}", "--"])
    no_panic(r, "bombs")
    assert r.returncode == 1, f"exit {r.returncode}: {r.stderr[-3000:]}"
    m = by_name(recs)
    problems = [f"{g.name}: {m.get(g.name)}" for g in good
                if (m.get(g.name) or {}).get("status") != "written"
                or not Path(m[g.name]["output"]).is_file()]
    for bomb in ("bomb-deflate.dcm", "bomb-sparse.dcm"):
        rec = m.get(bomb)
        if not rec or rec["status"] != "failed" or "memory" not in (rec.get("reason") or ""):
            problems.append(f"{bomb}: {rec}")
    assert not problems, problems


@pytest.mark.parametrize("bad", ["lots", "-1G", "0", "99999999999P"])
def test_memory_limit_is_checked(radveil_bin, key_file, good, tmp_path, bad):
    r, _ = run_deid(radveil_bin, good[:1], tmp_path / "out", key_file, f"--memory-limit={bad}")
    assert r.returncode == 2 and ("not a memory size" in r.stderr or "memory limit" in r.stderr), r.stderr
    assert "unexpected argument" not in r.stderr, r.stderr
    assert not files_under(tmp_path / "out")


def test_memory_limit_smaller_than_a_file_refuses_that_file_alone(radveil_bin, key_file, tmp_path):
    """A file that needs more than the whole budget is refused with the reason; the run goes on
    and the file that fits is written."""
    from pydicom.data import get_testdata_file

    small = Path(get_testdata_file("CT_small.dcm"))  # 39 KB
    big = Path(get_testdata_file("examples_overlay.dcm"))  # 322 KB, read whole
    # The small file's whole work fits in 300 KiB (its bytes, tree and output); the large
    # file's bytes alone do not.
    limit = 300 << 10
    assert big.stat().st_size > limit
    r, recs = run_deid(radveil_bin, [small, big], tmp_path / "out", key_file, f"--memory-limit={limit}",
                       report=tmp_path / "r.jsonl")
    no_panic(r, "memory limit")
    m = by_name(recs)
    assert r.returncode == 1, r.stderr
    assert m[small.name]["status"] == "written", m
    assert m[big.name]["status"] == "failed" and "memory budget" in m[big.name]["reason"], m


@pytest.fixture
def tiny_fs(tmp_path):
    """A 16 KiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


def test_report_on_a_full_disk_stops_the_run_and_leaves_no_truncated_report(
        radveil_bin, key_file, tmp_path, tiny_fs):
    src = tmp_path / "in"
    corpus.make_bench_corpus(300, src, seed=9, patients=1, studies=1, series=3)
    report = tiny_fs / "r.jsonl"
    out = tmp_path / "out"
    r, _ = run_deid(radveil_bin, [src], out, key_file, report=report, timeout=600)
    no_panic(r, "full disk")
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert "report" in r.stderr, r.stderr
    assert list(tiny_fs.iterdir()) == [], f"left on the full disk: {list(tiny_fs.iterdir())}"
    written = [p for p in out.rglob("*.dcm")]
    assert len(written) < 300, "the run went on to the end with a report it could not write"


@pytest.mark.parametrize("command", ["deface", "face-check"])
def test_deface_and_face_check_refuse_a_fifo(radveil_bin, tmp_path, command):
    """A FIFO named as a head volume is refused with the reason, never waited on."""
    fifo = tmp_path / "head.nii"
    os.mkfifo(fifo)
    args = [str(radveil_bin), command, str(fifo), "--json"]
    if command == "deface":
        args += ["--out", str(tmp_path / "out")]
    try:
        r = subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"radveil {command} waited on a FIFO")
    no_panic(r, command)
    assert r.returncode == 1, f"exit {r.returncode}: {r.stderr}"
    line = json.loads(r.stdout.splitlines()[0])
    assert line["status"] in ("declined", "unreadable"), line
    assert "fifo" in line["detail"].lower(), line
