"""bench/deface: radveil deface vs quickshear and elastix (affine) on the real head."""

from __future__ import annotations

import contextlib
import io
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
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ONE_CORE = ["taskset", "-c", "0"] if shutil.which("taskset") else []


def best(cmd, setup=None) -> float:
    times = []
    for _ in range(RUNS):
        if setup:
            setup()
        t = time.perf_counter()
        subprocess.run(ONE_CORE + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="radveil-bench-deface-"))
    mask = FIX / "real.brain-f0.5.nii.gz"
    if not mask.exists():
        import nibabel as nib
        from brainextractor import BrainExtractor

        with contextlib.redirect_stdout(io.StringIO()):
            bet = BrainExtractor(img=nib.load(HEAD))
            bet.run()
            bet.save_mask(str(mask))
    out = work / "radveil"

    def clean():
        shutil.rmtree(out, ignore_errors=True)

    radveil = best([str(ROOT / "target/release/radveil"), "deface", str(HEAD), "--out", str(out)], clean)
    qs = best([str(ROOT / ".venv/bin/quickshear"), str(HEAD), str(mask), str(work / "qs.nii.gz")])
    el_out = work / "elastix"
    el_out.mkdir()
    elastix = best(["elastix", "-f", str(HEAD), "-m", str(MEAN), "-p", str(ROOT / "bench/deface/affine.txt"),
                    "-out", str(el_out), "-threads", "1"])
    print(f"head: {HEAD.name} (208x256x256 MPRAGE), best of {RUNS}, one core")
    print(f"radveil deface (incl. face check before and after): {radveil:7.2f} s")
    print(f"quickshear (given a BET mask):                    {qs:7.2f} s   radveil {qs / radveil:5.2f}x")
    print(f"elastix affine registration only:                 {elastix:7.2f} s   radveil {elastix / radveil:5.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
