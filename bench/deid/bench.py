#!/usr/bin/env python3
"""De-identification benchmark driver (called by bench/deid/run.sh).

Times each tool over the same planted corpus (copies of 693_UNCI.dcm), on
the same file system, output into a fresh folder per run:

  cp -r            the floor: just copying the bytes, one process
  cp-parallel      the floor on all cores: cp by xargs -P $(nproc)
  radveil          radveil deid --jobs $(nproc)
  gdcmanon -e      GDCM's PS3.15 E.1.1 Basic Profile (needs an X.509
                   certificate; a throwaway self-signed one is made with openssl)
  gdcmanon --dumb  GDCM's rule-less mode (only the few tags given; no cert)
  dicognito        python -m dicognito -o OUT (its console script is broken in 0.19)
  dcmanon          from `cargo install dicom-anonymization`, when on PATH

Reports median seconds (of --runs; 1 run for the slow Python tool), files/s,
MB/s (input bytes), ratio to cp and to radveil, peak RSS (/usr/bin/time -v)
and how many distinct planted PHI tokens survive in the tool's output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

GNU_TIME = "/usr/bin/time"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_corpus(n: int, root: Path, seed: int) -> tuple[Path, Path]:
    """Reuse root/corpus-N if complete, else build it.  Returns (dir, manifest)."""
    import corpus

    d = root / f"corpus-{n}-s{seed}"
    man = root / f"corpus-{n}-s{seed}.manifest.json"
    if d.is_dir() and man.is_file() and len(list(d.glob("*.dcm"))) == n:
        log(f"reusing corpus {d}")
        return d, man
    if d.exists():
        shutil.rmtree(d)
    log(f"building corpus of {n} planted copies of 693_UNCI.dcm in {d} ...")
    t0 = time.perf_counter()
    m = corpus.make_bench_corpus(n, d, seed=seed)
    man.write_text(json.dumps(m))
    log(f"  built in {time.perf_counter() - t0:.1f} s")
    return d, man


def timed(cmd: list[str], env=None) -> tuple[float, int | None, subprocess.CompletedProcess]:
    """Run cmd; return (wall seconds, peak RSS KiB or None, process)."""
    full = cmd
    use_time = os.access(GNU_TIME, os.X_OK)
    if use_time:
        full = [GNU_TIME, "-v", *cmd]
    t0 = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    rss = None
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        rss = int(m.group(1)) if m else None
    return dt, rss, p


def leak_count(out: Path, man_path: Path) -> tuple[int, int]:
    """(distinct planted text tokens found, files with any) in out."""
    import corpus

    man = json.loads(man_path.read_text())
    tokens = {e["token"] for ents in man.values() for e in ents if e["kind"] == "text"}
    found, files = set(), 0
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        hits = corpus.scan_for_tokens(corpus.scannable_bytes(p), [], tokens)
        if hits:
            files += 1
            found.update(h.split()[0] for h in hits)
    return len(found), files


def count_files(out: Path) -> int:
    return sum(1 for p in out.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--radveil", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mem-scale", type=int, default=0,
                    help="also measure radveil peak RSS on a corpus this many times larger")
    ap.add_argument("--no-leaks", action="store_true", help="skip the PHI leak scan of outputs")
    ap.add_argument("--only", default="", help="comma list of tools to run")
    a = ap.parse_args()

    a.root.mkdir(parents=True, exist_ok=True)
    src, man = build_corpus(a.n, a.root, a.seed)
    in_bytes = sum(p.stat().st_size for p in src.glob("*.dcm"))
    key = a.root / "bench.key"
    if not key.exists():
        subprocess.run([a.radveil, "keygen", str(key)], check=True, capture_output=True)

    cert = a.root / "gdcm-cert.pem"
    if shutil.which("openssl") and not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(a.root / "gdcm-key.pem"), "-out", str(cert),
                        "-subj", "/CN=radveil-bench", "-days", "30"], check=True, capture_output=True)

    py = os.environ.get("BENCH_PYTHON", sys.executable)
    have_dicognito = subprocess.run([py, "-c", "import dicognito"], capture_output=True).returncode == 0

    # name -> (argv builder taking out dir, runs, available?, note)
    tools = {
        "cp": (lambda o: ["cp", "-r", str(src), str(o)], a.runs, True, ""),
        # The floor on all cores: the kernel copying the same bytes with --jobs workers
        # (radveil copies each file's pixel data with copy_file_range, as cp does).
        "cp-parallel": (lambda o: ["sh", "-c", f"find '{src}' -type f -print0 | "
                                   f"xargs -0 -P {a.jobs} -n 64 cp -t '{o}'"],
                        a.runs, True, f"cp by xargs -P {a.jobs}"),
        "radveil": (lambda o: [a.radveil, "deid", str(src), "--out", str(o), "--key-file", str(key),
                               "--jobs", str(a.jobs)], a.runs, True, f"--jobs {a.jobs}"),
        # The research configuration's text cleaning: names and dates in written forms,
        # phones, addresses, titled names in every descriptor (issue 17).
        "radveil-clean": (lambda o: [a.radveil, "deid", str(src), "--out", str(o), "--key-file", str(key),
                                     "--jobs", str(a.jobs), "--option", "clean-descriptors"],
                          a.runs, True, f"--jobs {a.jobs} --option clean-descriptors"),
        "gdcmanon-e": (lambda o: ["gdcmanon", "-e", "-r", "--continue", "-c", str(cert),
                                  "-i", str(src), "-o", str(o)],
                       a.runs, bool(shutil.which("gdcmanon")) and cert.exists(), "basic profile, throwaway cert"),
        "gdcmanon-dumb": (lambda o: ["gdcmanon", "--dumb", "-r", "--continue",
                                     "--empty", "10,10", "--empty", "10,20", "--remove", "10,30",
                                     "-i", str(src), "-o", str(o)],
                          a.runs, bool(shutil.which("gdcmanon")), "3 tags only, no profile"),
        "dicognito": (lambda o: [py, "-m", "dicognito", "--quiet", "-o", str(o), str(src)],
                      1, have_dicognito, "slow; run once"),
        "dcmanon": (lambda o: ["dcmanon", "anonymize", "-r", "--continue", "-i", str(src), "-o", str(o)],
                    a.runs, bool(shutil.which("dcmanon")), "dicom-anonymization 0.3 (Rust), default config"),
    }
    only = {t for t in a.only.split(",") if t}
    results = []
    for name, (argv, runs, ok, note) in tools.items():
        if only and name not in only:
            continue
        if not ok:
            results.append({"tool": name, "missing": True, "note": note})
            log(f"{name}: missing")
            continue
        times, rsss, last = [], [], None
        out = a.root / f"out-{name}"
        for i in range(runs):
            if out.exists():
                shutil.rmtree(out)
            if name.startswith("gdcmanon") or name in ("dcmanon", "cp-parallel"):
                out.mkdir()  # these want an existing output folder
            dt, rss, p = timed(argv(out))
            last = p
            times.append(dt)
            if rss:
                rsss.append(rss)
            log(f"{name} run {i + 1}/{runs}: {dt:.2f} s, exit {p.returncode}, "
                f"rss {rss} KiB, files {count_files(out)}")
        res = {"tool": name, "seconds": statistics.median(times), "runs": runs,
               "rss_kib": max(rsss) if rsss else None, "exit": last.returncode,
               "files_out": count_files(out), "note": note}
        if last.returncode != 0:
            res["stderr_tail"] = last.stderr[-500:]
        if not a.no_leaks:
            res["leaked_tokens"], res["leaky_files"] = leak_count(out, man)
        results.append(res)
        shutil.rmtree(out, ignore_errors=True)

    mem = None
    if a.mem_scale and a.mem_scale > 1:
        big, _ = build_corpus(a.n * a.mem_scale, a.root, a.seed + 1)
        out = a.root / "out-radveil-big"
        shutil.rmtree(out, ignore_errors=True)
        dt, rss, p = timed([a.radveil, "deid", str(big), "--out", str(out), "--key-file", str(key),
                            "--jobs", str(a.jobs)])
        mem = {"n": a.n * a.mem_scale, "seconds": dt, "rss_kib": rss, "exit": p.returncode}
        shutil.rmtree(out, ignore_errors=True)

    # ---- table ----
    base = {r["tool"]: r for r in results if not r.get("missing")}
    cp_s = base.get("cp", {}).get("seconds")
    rv_s = base.get("radveil", {}).get("seconds")
    mb = in_bytes / 1e6
    print(f"\nCorpus: {a.n} files, {mb:.1f} MB, in {src} ({'tmpfs' if str(src).startswith('/dev/shm') else 'disk'}); "
          f"{os.cpu_count()} CPUs")
    hdr = f"{'tool':<14} {'seconds':>8} {'files/s':>9} {'MB/s':>8} {'x cp':>7} {'x radveil':>9} " \
          f"{'peak RSS MiB':>12} {'exit':>4} {'out files':>9} {'PHI tokens left':>15}  note"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if r.get("missing"):
            print(f"{r['tool']:<14} {'missing':>8}")
            continue
        s = r["seconds"]
        rss = f"{r['rss_kib'] / 1024:.0f}" if r.get("rss_kib") else "-"
        leak = f"{r.get('leaked_tokens', '-')}" + (f" ({r['leaky_files']} files)" if r.get("leaky_files") else "")
        print(f"{r['tool']:<14} {s:8.2f} {a.n / s:9.0f} {mb / s:8.1f} "
              f"{(s / cp_s if cp_s else float('nan')):7.2f} {(s / rv_s if rv_s else float('nan')):9.2f} "
              f"{rss:>12} {r['exit']:>4} {r['files_out']:>9} {leak:>15}  "
              f"{'median of ' + str(r['runs']) if r['runs'] > 1 else '1 run'}; {r['note']}")
    if mem:
        print(f"\nradveil at {mem['n']} files: {mem['seconds']:.2f} s, peak RSS "
              f"{(mem['rss_kib'] or 0) / 1024:.0f} MiB (exit {mem['exit']}); "
              f"at {a.n}: {(base.get('radveil', {}).get('rss_kib') or 0) / 1024:.0f} MiB")
    (a.root / "results.json").write_text(json.dumps({"n": a.n, "bytes": in_bytes, "results": results,
                                                      "mem": mem}, indent=1))
    for r in results:
        if r.get("stderr_tail"):
            print(f"\n{r['tool']} exit {r['exit']}, stderr tail:\n{r['stderr_tail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
