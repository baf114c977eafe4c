#!/usr/bin/env python3
"""Gateway benchmark driver (run by bench/gateway/run.sh inside a private network namespace).

Starts `radveil serve --dev` (access control, audit trail and encryption on; every request
carries a bearer token from `radveil token`) and Orthanc with its DICOMweb plugin
(`TCP_NODELAY=1`, SQLite index, no compression), both pinned to one core, with their data
under the same folder; this driver and wrk are pinned to another core. Both servers get the
very same bytes: real pydicom test files whose UIDs, patient and study attributes are
rewritten (fresh UIDs every run) by patching a template's bytes.

Figures, each for radveil and Orthanc with the ratio:
  STOW-RS      one instance per request over keep-alive connections (a Python client with
               --connections threads): instances/s and MB/s for CT_small.dcm (39 KB) and
               693_UNCI.dcm (526 KB); the client's own ceiling is printed (requests per
               client CPU-second).
  WADO-RS      instance requests (and frame requests where both answer them) by wrk with a
               Lua script cycling through the stored small instances: requests/s, p50, p99.
  QIDO-RS      after indexing --qido-n small instances (SC_rgb_rle.dcm, 2 KB; 10 per study,
               2 studies per patient; STOW-RS of 50 per request, time and rate printed):
               wrk cycling through three searches (a Patient ID, a week of StudyDate, a study's
               series): requests/s, p50, p99.
Server CPU-seconds per operation come from /proc/PID/stat (utime + stime), peak memory from
/proc/PID/status (VmHWM). Ratios say how many times better radveil is: its rate over
Orthanc's, and Orthanc's latency or CPU over radveil's.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

TICK = os.sysconf("SC_CLK_TCK")
DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FIRST_DAY = datetime.date(2020, 1, 1)
READY = re.compile(r"DICOMweb on (http://\S+)/dicom-web")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- servers ----------------------------------------------------------------------------------

class Server:
    name: str
    proc: subprocess.Popen
    base: str  # the DICOMweb root, like http://127.0.0.1:PORT/dicom-web
    headers: dict

    def cpu(self) -> float:
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


class Radveil(Server):
    name = "radveil"

    def __init__(self, binary: str, data: Path, cpu: int):
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), binary, "serve", "--data", str(data), "--listen", "127.0.0.1:0", "--dev"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.log: list[str] = []
        deadline = time.time() + 60
        self.base = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = READY.search(line)
            if m:
                self.base = m.group(1) + "/dicom-web"
                break
        if not self.base:
            sys.exit("radveil serve did not start:\n" + "".join(self.log))
        threading.Thread(target=lambda: [self.log.append(x) for x in self.proc.stderr], daemon=True).start()
        t = subprocess.run([binary, "token", "--data", str(data), "--role", "admin",
                            "--scope", "user/ImagingStudy.cruds", "--expires", "12h", "--subject", "bench"],
                           capture_output=True, text=True, check=True).stdout.strip()
        self.headers = {"Authorization": f"Bearer {t}"}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


class OrthancServer(Server):
    name = "Orthanc"

    def __init__(self, root: Path, cpu: int):
        from gateway import Orthanc

        self.o = Orthanc(root, cpu=cpu)
        self.proc = self.o.proc
        self.base = self.o.dicomweb
        self.headers = {}

    def stop(self):
        self.o.stop(timeout=60)


# --- the corpus: a template's bytes with its UIDs and attributes patched ---------------------------

def template(name: str, run: str):
    """Part 10 bytes of pydicom test file `name` with fixed-width placeholders, and a function
    making instance n of it (UIDs, patient, study date and description patched)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    # UID components take no leading zero (PS3.5 9.1): counters are written as 1NNNNNNNN.
    ph = {"study": f"{run}.1.999999991", "series": f"{run}.2.999999992", "sop": f"{run}.3.999999993",
          "pid": "PID99999994", "name": "NAME^P99999995", "date": "19000101"}
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = ph["study"], ph["series"], ph["sop"]
    ds.file_meta.MediaStorageSOPInstanceUID = ph["sop"]
    ds.PatientID, ds.PatientName, ds.StudyDate = ph["pid"], ph["name"], ph["date"]
    ds.PatientBirthDate = "19450302"
    ds.StudyDescription = "BENCH"
    for kw in ("SeriesDate", "ContentDate", "AcquisitionDate", "InstanceCreationDate"):
        if kw in ds:
            setattr(ds, kw, "20200101")
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    blob = buf.getvalue()
    for k, v in ph.items():
        assert blob.count(v.encode()) >= 1, (name, k)

    def make(n: int, per_study: int, studies_per_patient: int):
        s = n // per_study
        p = s // studies_per_patient
        d = (FIRST_DAY + datetime.timedelta(days=s % 1000)).strftime("%Y%m%d")  # 2020..2022
        vals = {"study": f"{run}.1.1{s:08d}", "series": f"{run}.2.1{s:08d}", "sop": f"{run}.3.1{n:08d}",
                "pid": f"PID{p:08d}", "name": f"NAME^P{p:08d}", "date": d}
        b = blob
        for k, v in vals.items():
            b = b.replace(ph[k].encode(), v.encode())
        return vals, b

    return make


def corpus(name: str, n: int, per_study: int, studies_per_patient: int):
    run = "2.25." + str(uuid.uuid4().int)[:24]
    make = template(name, run)
    return [make(i, per_study, studies_per_patient) for i in range(n)]


# --- clients ---------------------------------------------------------------------------------------

def conn(base: str) -> tuple[http.client.HTTPConnection, str]:
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", base)
    c = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=300)
    return c, m.group(3)


def stow(server: Server, bodies: list[list[bytes]], connections: int) -> dict:
    """STOW-RS of each list of Part 10 files as one request, over `connections` keep-alive
    connections. Returns wall seconds, server CPU-seconds, client CPU-seconds, latencies."""
    work: queue.Queue = queue.Queue()
    for b in bodies:
        work.put(b)
    lat: list[float] = []
    done: list[float] = []
    errors: list[str] = []
    boundary = "benchBoundary" + uuid.uuid4().hex[:12]
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'

    def worker():
        c, root = conn(server.base)
        while True:
            try:
                parts = work.get_nowait()
            except queue.Empty:
                break
            body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                            for p in parts) + f"--{boundary}--\r\n".encode()
            t0 = time.perf_counter()
            c.request("POST", root + "/studies", body=body, headers={
                **server.headers, "Content-Type": ctype, "Accept": "application/dicom+json"})
            r = c.getresponse()
            body_text = r.read()
            done.append(time.perf_counter())
            lat.append(done[-1] - t0)
            if r.status != 200:
                errors.append(f"{r.status}")
                if len(errors) == 1:
                    log(f"  {server.name}: STOW answered {r.status}: {body_text[:600]!r}")
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    cpu0, ccpu0, t0 = server.cpu(), time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out = {"wall": wall, "server_cpu": server.cpu() - cpu0, "client_cpu": time.process_time() - ccpu0,
           "lat": sorted(lat), "errors": errors, "done": [d - t0 for d in sorted(done)]}
    if errors:
        log(f"  {server.name}: {len(errors)} STOW requests failed (statuses {sorted(set(errors))})")
    return out


WRK_LUA = """
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("WRK p50_us=%d p99_us=%d requests=%d\\n",
    latency:percentile(50), latency:percentile(99), summary.requests))
end
"""


def wrk(server: Server, paths: list[str], accept: str, seconds: int, connections: int,
        cpu: int, tmp: Path) -> dict:
    """wrk -t1 -c C cycling through `paths` (under the server's root)."""
    root = re.match(r"http://[^/]+(/.*)", server.base).group(1)
    pf = tmp / f"paths-{server.name}.txt"
    pf.write_text("".join(root + p + "\n" for p in paths))
    lua = tmp / "cycle.lua"
    lua.write_text(WRK_LUA)
    hostport = re.match(r"(http://[^/]+)", server.base).group(1)
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
           "-s", str(lua), "-H", f"Accept: {accept}"]
    for k, v in server.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(hostport + "/")
    cpu0 = server.cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WRK_PATHS": str(pf)})
    scpu = server.cpu() - cpu0
    m = re.search(r"WRK p50_us=(\d+) p99_us=(\d+) requests=(\d+)", r.stdout)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
    if not m or not rps:
        sys.exit(f"wrk failed: {r.stdout}\n{r.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    n = int(m.group(3))
    return {"rps": float(rps.group(1)), "p50": int(m.group(1)) / 1000, "p99": int(m.group(2)) / 1000,
            "requests": n, "server_cpu": scpu, "bad": int(non2xx.group(1)) if non2xx else 0}


def probe(server: Server, path: str, accept: str) -> int:
    c, root = conn(server.base)
    c.request("GET", root + path, headers={**server.headers, "Accept": accept})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


# --- the report ------------------------------------------------------------------------------------

ROWS: list[tuple] = []


def row(figure: str, rv, ov, unit: str, higher_is_better=True, fmt="{:,.0f}"):
    if rv is None or ov is None or rv <= 0 or ov <= 0:
        ratio = "n/a"
    else:
        x = rv / ov if higher_is_better else ov / rv
        ratio = f"{x:.2f}x"
    f = (lambda v: "n/a" if v is None else fmt.format(v))
    ROWS.append((figure, f(rv), f(ov), unit, ratio))
    log(f"  {figure}: radveil {f(rv)} {unit}, Orthanc {f(ov)} {unit}, radveil better by {ratio}")


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--radveil", required=True)
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--qido-n", type=int, default=100000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--only", default="stow,wado,qido")
    a = ap.parse_args()
    only = set(a.only.split(","))
    os.sched_setaffinity(0, {a.client_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    t_start = time.perf_counter()

    log(f"radveil {subprocess.run([a.radveil, '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"Orthanc {subprocess.run(['dpkg-query', '-W', '-f', '${Version}', 'orthanc'], capture_output=True, text=True).stdout}, "
        f"orthanc-dicomweb {subprocess.run(['dpkg-query', '-W', '-f', '${Version}', 'orthanc-dicomweb'], capture_output=True, text=True).stdout}, "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    log(f"servers on core {a.server_cpu}, client on core {a.client_cpu}; data under {a.root}; "
        f"{a.connections} connections; load average {os.getloadavg()[0]:.2f}")
    servers = [Radveil(a.radveil, a.root / "radveil", a.server_cpu),
               OrthancServer(a.root / "orthanc", a.server_cpu)]
    rv, ot = servers
    try:
        small = large = None
        if only & {"stow", "wado"}:
            t0 = time.perf_counter()
            small = corpus("CT_small.dcm", a.small, 100, 1)
            large = corpus("693_UNCI.dcm", a.large, 100, 1)
            log(f"corpus: {a.small} x {len(small[0][1]):,} B and {a.large} x {len(large[0][1]):,} B, "
                f"made in {time.perf_counter() - t0:.1f} s")
            res = {}
            for what, c in (("small", small), ("large", large)):
                for s in servers:
                    res[what, s.name] = r = stow(s, [[b] for _, b in c], a.connections)
                    mb = sum(len(b) for _, b in c) / 1e6
                    log(f"STOW {what} {s.name}: {len(c) / r['wall']:.0f}/s, {mb / r['wall']:.1f} MB/s, "
                        f"server {r['server_cpu']:.2f} CPU-s, client {r['client_cpu']:.2f} CPU-s, "
                        f"p50 {pct(r['lat'], 50) * 1000:.1f} ms, p99 {pct(r['lat'], 99) * 1000:.1f} ms")
            for what, c in (("small", small), ("large", large)):
                size = len(c[0][1]) / 1000
                mb = sum(len(b) for _, b in c) / 1e6
                r1, r2 = res[what, "radveil"], res[what, "Orthanc"]
                row(f"STOW-RS {len(c)} x {size:.0f} KB, instances/s", len(c) / r1["wall"], len(c) / r2["wall"], "/s")
                row(f"STOW-RS {len(c)} x {size:.0f} KB, MB/s", mb / r1["wall"], mb / r2["wall"], "MB/s",
                    fmt="{:,.1f}")
                row(f"STOW-RS {len(c)} x {size:.0f} KB, server ms CPU per instance",
                    r1["server_cpu"] / len(c) * 1000, r2["server_cpu"] / len(c) * 1000, "ms",
                    higher_is_better=False, fmt="{:.2f}")
            cc = sum(res[k]["client_cpu"] for k in res)
            nreq = 2 * (len(small) + len(large))
            log(f"  the STOW client's own ceiling: {nreq / cc:,.0f} requests per client CPU-second")

        if "wado" in only:
            paths = [f"/studies/{v['study']}/series/{v['series']}/instances/{v['sop']}" for v, _ in small]
            res = {s.name: wrk(s, paths, DICOM, a.seconds, a.connections, a.client_cpu, tmp) for s in servers}
            for s in servers:
                r = res[s.name]
                log(f"WADO instance {s.name}: {r['rps']:.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                    f"{r['server_cpu'] / max(r['requests'], 1) * 1000:.2f} ms CPU/req, non-200: {r['bad']}")
            r1, r2 = res["radveil"], res["Orthanc"]
            row("WADO-RS instance, requests/s", r1["rps"], r2["rps"], "/s")
            row("WADO-RS instance, p50", r1["p50"], r2["p50"], "ms", False, "{:.1f}")
            row("WADO-RS instance, p99", r1["p99"], r2["p99"], "ms", False, "{:.1f}")
            row("WADO-RS instance, server ms CPU per request", r1["server_cpu"] / r1["requests"] * 1000,
                r2["server_cpu"] / r2["requests"] * 1000, "ms", False, "{:.2f}")
            fpaths = [p + "/frames/1" for p in paths]
            st = {s.name: probe(s, fpaths[0], FRAMES) for s in servers}
            if all(v == 200 for v in st.values()):
                res = {s.name: wrk(s, fpaths, FRAMES, a.seconds, a.connections, a.client_cpu, tmp) for s in servers}
                r1, r2 = res["radveil"], res["Orthanc"]
                row("WADO-RS frame, requests/s", r1["rps"], r2["rps"], "/s")
                row("WADO-RS frame, p50", r1["p50"], r2["p50"], "ms", False, "{:.1f}")
                row("WADO-RS frame, p99", r1["p99"], r2["p99"], "ms", False, "{:.1f}")
            else:
                log(f"  WADO-RS frames not measured: a frame request answered {st}")

        if "qido" in only:
            t0 = time.perf_counter()
            q = corpus("SC_rgb_rle.dcm", a.qido_n, 10, 2)
            log(f"QIDO corpus: {a.qido_n:,} x {len(q[0][1]):,} B made in {time.perf_counter() - t0:.1f} s")
            batches = [[b for _, b in q[i:i + 50]] for i in range(0, len(q), 50)]
            before = {s.name: s.peak_rss_mib() for s in servers}
            idx = {}
            for s in servers:
                idx[s.name] = r = stow(s, batches, a.connections)
                log(f"indexing {a.qido_n:,} into {s.name}: {r['wall']:.1f} s ({a.qido_n / r['wall']:.0f}/s, "
                    f"{r['server_cpu']:.1f} server CPU-s), peak RSS {before[s.name]:.0f} MiB before, "
                    f"{s.peak_rss_mib():.0f} MiB after")
            row(f"indexing {a.qido_n:,} x 2 KB (STOW-RS, 50 per request), seconds", idx["radveil"]["wall"],
                idx["Orthanc"]["wall"], "s", False, "{:.1f}")

            def tenth(r, last: bool) -> float:
                """Instances/s over the first or the last tenth of the requests."""
                d = r["done"]
                k = max(1, len(d) // 10)
                span = (d[-1] - d[-k - 1]) if last else d[k - 1]
                return k * 50 / span if span > 0 else float("nan")

            for last in (False, True):
                row(f"indexing, instances/s over the {'last' if last else 'first'} tenth",
                    tenth(idx["radveil"], last), tenth(idx["Orthanc"], last), "/s")
            row(f"peak RSS before indexing {a.qido_n:,}", before["radveil"], before["Orthanc"], "MiB", False,
                "{:.0f}")
            row(f"peak RSS after indexing {a.qido_n:,}", rv.peak_rss_mib(), ot.peak_rss_mib(), "MiB", False,
                "{:.0f}")
            studies = sorted({(v["study"], v["series"], v["pid"], v["date"]) for v, _ in q})
            paths = []
            for i in range(0, 300):
                st, se, pid, date = studies[(i * 7919) % len(studies)]
                end = (datetime.datetime.strptime(date, "%Y%m%d") + datetime.timedelta(days=6)).strftime("%Y%m%d")
                paths += [f"/studies?PatientID={pid}", f"/studies?StudyDate={date}-{end}", f"/studies/{st}/series"]
            res = {s.name: wrk(s, paths, "application/dicom+json", a.seconds, a.connections, a.client_cpu, tmp)
                   for s in servers}
            for s in servers:
                r = res[s.name]
                log(f"QIDO {s.name}: {r['rps']:.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                    f"{r['server_cpu'] / max(r['requests'], 1) * 1000:.2f} ms CPU/req, non-200: {r['bad']}")
            r1, r2 = res["radveil"], res["Orthanc"]
            row(f"QIDO-RS over {a.qido_n:,} instances, requests/s", r1["rps"], r2["rps"], "/s")
            row(f"QIDO-RS over {a.qido_n:,} instances, p50", r1["p50"], r2["p50"], "ms", False, "{:.1f}")
            row(f"QIDO-RS over {a.qido_n:,} instances, p99", r1["p99"], r2["p99"], "ms", False, "{:.1f}")
            row(f"QIDO-RS over {a.qido_n:,} instances, server ms CPU per request",
                r1["server_cpu"] / r1["requests"] * 1000, r2["server_cpu"] / r2["requests"] * 1000, "ms",
                False, "{:.2f}")
            # Each kind of search alone, for where the time goes.
            for k, kind in enumerate(["by Patient ID", "a week of StudyDate", "a study's series"]):
                sub = paths[k::3]
                res = {s.name: wrk(s, sub, "application/dicom+json", max(2, a.seconds // 2), a.connections,
                                   a.client_cpu, tmp) for s in servers}
                r1, r2 = res["radveil"], res["Orthanc"]
                row(f"QIDO-RS {kind}, requests/s", r1["rps"], r2["rps"], "/s")
                row(f"QIDO-RS {kind}, p99", r1["p99"], r2["p99"], "ms", False, "{:.1f}")
        row("peak RSS at the end", rv.peak_rss_mib(), ot.peak_rss_mib(), "MiB", False, "{:.0f}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| figure | radveil | Orthanc | unit | radveil better by |")
    print("|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s; load average at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
