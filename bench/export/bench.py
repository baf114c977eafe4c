#!/usr/bin/env python3
"""Research export benchmark driver (called by bench/export/run.sh).

Builds a corpus of N planted copies of 693_UNCI.dcm, one instance per study (N studies of
N/10 patients), stores it in a fresh gateway data folder through `radveil serve` (STOW-RS),
stops the gateway, sets the site's research default to opt-out (every patient's consent is
still decided per study, none recorded), and times, each into a fresh output folder:

  deid     radveil deid --jobs J CORPUS --out OUT            (the instances as files)
  export   radveil export --data DATA --purpose research ... --out OUT --jobs J
           (the store walked and opened, consent decided per study, de-identified through
           the same pipeline, lineage rows and one audit event per patient written)

Reports the median seconds of --runs, per instance, and export / deid. The issue asks for
the export within 10 % of deid alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def corpus_dir(n: int, root: Path) -> Path:
    import corpus

    d = root / f"corpus-{n}"
    if d.is_dir() and len(list(d.glob("*.dcm"))) == n:
        log(f"reusing corpus {d}")
        return d
    if d.exists():
        shutil.rmtree(d)
    log(f"building corpus of {n} planted copies of 693_UNCI.dcm (one study each) in {d} ...")
    corpus.make_bench_corpus(n, d, seed=7, patients=max(1, n // 10), studies=10, series=1)
    return d


def store(binary: str, corpus: Path, data: Path) -> None:
    """Stores the corpus into a fresh gateway folder, then stops the gateway."""
    import requests
    from gateway import Gateway, multipart

    if data.exists():
        shutil.rmtree(data)
    g = Gateway(Path(binary), data)
    try:
        files = sorted(corpus.glob("*.dcm"))
        for i in range(0, len(files), 50):
            body, ct = multipart([p.read_bytes() for p in files[i:i + 50]])
            r = requests.post(g.url + "/studies", data=body, headers={"Content-Type": ct}, timeout=600)
            r.raise_for_status()
    finally:
        assert g.stop() == 0
    conf = data / "radveil.toml"
    text = conf.read_text()
    if "\n[consent]\n" in text:
        text = text.replace("\n[consent]\n", '\n[consent]\nresearch = "opt-out"\n', 1)
    else:
        text += '\n[consent]\nresearch = "opt-out"\n'
    conf.write_text(text)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        log(p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd[:2])}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--radveil", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    corpus = corpus_dir(a.n, a.root)
    data = a.root / "data"
    log(f"storing {a.n} instances through radveil serve ...")
    store(a.radveil, corpus, data)
    key = a.root / "deid.key"
    if not key.exists():
        subprocess.run([a.radveil, "keygen", str(key)], check=True, capture_output=True)
    profile = a.root / "site.toml"
    profile.write_text("options = []\n")
    times: dict[str, list[float]] = {"deid": [], "export": []}
    for run in range(a.runs):
        for name in ("deid", "export"):
            out = a.root / f"out-{name}"
            if out.exists():
                shutil.rmtree(out)
            if name == "deid":
                cmd = [a.radveil, "deid", "--jobs", str(a.jobs), "--key-file", str(key),
                       "--profile", str(profile), "--out", str(out), str(corpus)]
            else:
                cmd = [a.radveil, "export", "--data", str(data), "--purpose", "research",
                       "--recipient", "Bench", "--profile", str(profile), "--key-file", str(key),
                       "--jobs", str(a.jobs), "--out", str(out)]
            dt = timed(cmd)
            times[name].append(dt)
            log(f"run {run + 1}: {name} {dt:.2f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"instances: {a.n} (one study each), jobs {a.jobs}, load average {load:.2f}")
    print("| command | median s | ms per instance |")
    print("|---|---:|---:|")
    for k in ("deid", "export"):
        print(f"| {k} | {med[k]:.2f} | {1000 * med[k] / a.n:.2f} |")
    print(f"export / deid: {med['export'] / med['deid']:.3f}")
    print(json.dumps({"n": a.n, "jobs": a.jobs, "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
