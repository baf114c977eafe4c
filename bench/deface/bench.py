"""bench/deface: radveil deface vs quickshear and elastix (affine) on the real head."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / ".radveil" / "fixtures" / "deface"
HEAD, MEAN = FIX / "sub-01_T1w.nii.gz", FIX / "mean_reg2mean.nii.gz"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ONE_CORE = ["taskset", "-c", "0"] if shutil.which("taskset") else []


def once(cmd, setup=None) -> float:
    if setup:
        setup()
    t = time.perf_counter()
    subprocess.run(ONE_CORE + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def best(cmd, setup=None) -> float:
    return min(once(cmd, setup) for _ in range(RUNS))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="radveil-bench-deface-"))
    mask = work / "bet.nii.gz"
    # What quickshear needs first: the brain mask, made by brainextractor (a pip port of FSL
    # BET), timed once (it takes tens of seconds); quickshear is then handed it.
    bet_cmd = [sys.executable, "-c",
               "import contextlib, io, sys, nibabel as nib\n"
               "from brainextractor import BrainExtractor\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    b = BrainExtractor(img=nib.load(sys.argv[1]), bt=0.5); b.run(); b.save_mask(sys.argv[2])",
               str(HEAD), str(mask)]
    bet = once(bet_cmd)
    out = work / "radveil"

    def clean():
        shutil.rmtree(out, ignore_errors=True)

    # radveil and quickshear take turns, so that the machine's drift (±15 % here) falls on
    # both alike.
    radveil_cmd = [str(ROOT / "target/release/radveil"), "deface", str(HEAD), "--out", str(out)]
    qs_cmd = [str(ROOT / ".venv/bin/quickshear"), str(HEAD), str(mask), str(work / "qs.nii.gz")]
    radveil, qs = float("inf"), float("inf")
    for _ in range(RUNS):
        radveil = min(radveil, once(radveil_cmd, clean))
        qs = min(qs, once(qs_cmd))
    el_out = work / "elastix"
    el_out.mkdir()
    elastix = best(["elastix", "-f", str(HEAD), "-m", str(MEAN), "-p", str(ROOT / "bench/deface/affine.txt"),
                    "-out", str(el_out), "-threads", "1"])
    # The same head as a DICOM MR series (256 slices): `radveil deface`, and `radveil deid`
    # with the Clean Recognizable Visual Features option (deface plus de-identification).
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import headseries

    series = work / "series"
    headseries.write_series(HEAD, series)
    key = work / "key"
    subprocess.run([str(ROOT / "target/release/radveil"), "keygen", str(key)], check=True,
                   stdout=subprocess.DEVNULL)
    dicom = best([str(ROOT / "target/release/radveil"), "deface", str(series), "--out", str(out)], clean)
    deid = best([str(ROOT / "target/release/radveil"), "deid", str(series), "--out", str(out), "--key-file",
                 str(key), "--jobs", "1", "--option", "clean-recognizable-visual-features"], clean)
    print(f"head: {HEAD.name} (208x256x256 MPRAGE), best of {RUNS}, one core")
    print(f"radveil deface (incl. face check before and after): {radveil:7.2f} s")
    print(f"quickshear (given a BET mask):                    {qs:7.2f} s   radveil {qs / radveil:5.2f}x")
    print(f"quickshear with its BET mask (brainextractor, 1 run): {bet + qs:7.2f} s   radveil {(bet + qs) / radveil:5.2f}x")
    print(f"elastix affine registration only:                 {elastix:7.2f} s   radveil {elastix / radveil:5.2f}x")
    print(f"radveil deface, DICOM series (256 slices):        {dicom:7.2f} s")
    print(f"radveil deid + defacing, DICOM series:            {deid:7.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
