#!/usr/bin/env python3
"""How `radveil serve`'s memory grows with the store (the issue's "memory flat as the store
grows").

Starts `radveil serve --dev` on a data folder under /dev/shm (tmpfs: the disk is not what
is measured), indexes N small instances over STOW-RS the way bench.py's QIDO part does
(pydicom's SC_rgb_rle.dcm, 2 KB, with patched UIDs and patient attributes; 10 instances per
study, 2 studies per patient, 50 instances per request), and prints the server's peak
(VmHWM) and current (VmRSS) resident memory at each checkpoint. With --restart it then
restarts the server on the same folder and prints its memory once the index is loaded and
after a few searches (what a server that starts with a full store holds).

    .venv/bin/python bench/gateway/memory.py --bin target/release/radveil \
        --checkpoints 10000,50000,100000 --restart --qido 5

With --qido S it then times each kind of search with wrk (one connection, S seconds each,
cycling through 300 different ones): bench.py's three (by Patient ID, a week of StudyDate,
a study's series) and three at the instance level (a series' instances, a study's
instances, one instance by SOP Instance UID), printing requests/s, p50 and p99.

The server is not pinned to a core and nothing else is measured: for the comparison with
Orthanc, run bench.py (run.sh).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import bench  # bench/gateway/bench.py: the corpus, the STOW-RS client and the server start


def status(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) / 1024
    return out


def searches(server: bench.Server, q: list) -> float:
    """Runs a few searches at each level; returns their total seconds."""
    st, se = q[0][0]["study"], q[0][0]["series"]
    pid = q[-1][0]["pid"]
    paths = [f"/studies?PatientID={pid}", "/studies?StudyDate=20200101-20200107&limit=100",
             f"/studies/{st}/series", f"/studies/{st}/series/{se}/instances", f"/studies/{st}/instances",
             f"/instances?SOPInstanceUID={q[len(q) // 2][0]['sop']}", "/instances?limit=100"]
    t0 = time.perf_counter()
    for p in paths:
        c, root = bench.conn(server.base)
        c.request("GET", root + p, headers={**server.headers, "Accept": "application/dicom+json"})
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            raise SystemExit(f"search {p.split('?')[0]} answered {r.status}")
    return time.perf_counter() - t0


def qido(server: bench.Server, q: list, seconds: int, tmp: Path) -> None:
    """Requests/s, p50 and p99 of each kind of search, by wrk on one connection."""
    import datetime

    studies = sorted({(v["study"], v["series"], v["pid"], v["date"]) for v, _ in q})
    kinds: dict[str, list[str]] = {k: [] for k in (
        "by Patient ID", "a week of StudyDate", "a study's series",
        "a series' instances", "a study's instances", "an instance by SOP Instance UID")}
    for i in range(300):
        st, se, pid, date = studies[(i * 7919) % len(studies)]
        end = (datetime.datetime.strptime(date, "%Y%m%d") + datetime.timedelta(days=6)).strftime("%Y%m%d")
        sop = q[(i * 7919) % len(q)][0]["sop"]
        for k, p in zip(kinds, [f"/studies?PatientID={pid}", f"/studies?StudyDate={date}-{end}",
                                f"/studies/{st}/series", f"/studies/{st}/series/{se}/instances",
                                f"/studies/{st}/instances", f"/instances?SOPInstanceUID={sop}"]):
            kinds[k].append(p)
    for k, paths in kinds.items():
        r = bench.wrk(server, paths, "application/dicom+json", seconds, 1, 1, tmp)
        print(f"QIDO {k}: {r['rps']:,.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
              f"non-200: {r['bad']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the radveil binary")
    ap.add_argument("--checkpoints", default="10000,50000,100000",
                    help="instance counts at which memory is printed (comma-separated, ascending)")
    ap.add_argument("--connections", type=int, default=2, help="concurrent STOW-RS connections")
    ap.add_argument("--restart", action="store_true", help="also measure a restart on the full store")
    ap.add_argument("--qido", type=int, default=0, metavar="S", help="time each kind of search for S seconds")
    a = ap.parse_args()
    marks = [int(x) for x in a.checkpoints.split(",")]
    n = marks[-1]
    t0 = time.perf_counter()
    q = bench.corpus("SC_rgb_rle.dcm", n, 10, 2)
    print(f"corpus: {n:,} x {len(q[0][1]):,} B made in {time.perf_counter() - t0:.1f} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="radveil-memory-", dir="/dev/shm"))
    server = None
    try:
        data = tmp / "data"
        server = bench.Radveil(a.bin, data, 0)
        m = status(server.proc.pid)
        print(f"{0:>8,} instances: VmHWM {m['VmHWM']:6.0f} MiB, VmRSS {m['VmRSS']:6.0f} MiB", flush=True)
        done = 0
        for mark in marks:
            batches = [[b for _, b in q[i:min(i + 50, mark)]] for i in range(done, mark, 50)]
            r = bench.stow(server, batches, a.connections)
            if r["errors"]:
                raise SystemExit("some STOW-RS requests failed")
            done = mark
            m = status(server.proc.pid)
            took = searches(server, q[:mark])
            m2 = status(server.proc.pid)
            print(f"{mark:>8,} instances: VmHWM {m['VmHWM']:6.0f} MiB, VmRSS {m['VmRSS']:6.0f} MiB "
                  f"(indexed at {len(batches) * 50 / r['wall']:,.0f}/s; after 7 searches in {took * 1000:.0f} ms: "
                  f"VmHWM {m2['VmHWM']:.0f}, VmRSS {m2['VmRSS']:.0f} MiB)", flush=True)
        if a.restart:
            server.stop()
            t1 = time.perf_counter()
            server = bench.Radveil(a.bin, data, 0)
            started = time.perf_counter() - t1
            m = status(server.proc.pid)
            took = searches(server, q)
            m2 = status(server.proc.pid)
            print(f"restarted on {n:,} instances in {started:.1f} s: VmHWM {m['VmHWM']:.0f} MiB, "
                  f"VmRSS {m['VmRSS']:.0f} MiB; after 7 searches in {took * 1000:.0f} ms: "
                  f"VmHWM {m2['VmHWM']:.0f}, VmRSS {m2['VmRSS']:.0f} MiB", flush=True)
        if a.qido:
            qido(server, q, a.qido, tmp)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
