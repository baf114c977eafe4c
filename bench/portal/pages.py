#!/usr/bin/env python3
"""Portal benchmark (issue 15): the patient's pages with 10,000 studies and 1,000,000 audit
events in the store.

Starts `radveil serve` with the portal signing in through the real OpenID provider
(tests/integration/oidc/portal-provider.mjs, as the tests do) and the dev issuer for the
filling, on /dev/shm:
  1. stores --studies studies (one 2 KB instance each, SC_rgb_rle.dcm with fresh UIDs, five
     studies a patient) by STOW-RS, and five studies of the measured patient (alice);
  2. makes --events audit events: wrk reading another patient's study metadata with an admin
     token (one event a request) until the trail holds that many, plus a few clinician reads
     of alice's studies;
  3. restarts the server on that store (start-up time printed: the audit trail and the
     ledger are verified before it serves, and the patients' places indexed);
  4. signs alice in and times --n sequential requests of each page over one keep-alive
     connection: p50, p99 and max in ms; then the auditor's search for alice's events.

Usage: .venv/bin/python bench/portal/pages.py --bin target/release/radveil
       [--studies 10000] [--events 1000000] [--n 200]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench" / "gateway"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import bench  # noqa: E402  (bench/gateway/bench.py: corpus and STOW-RS client)
from gateway import auth, multipart, new_uid, planted, requests, token  # noqa: E402
from portal import Portal, sign_in  # noqa: E402


class Target(bench.Server):
    """What bench.stow and bench.wrk need of a server."""

    def __init__(self, p: Portal):
        self.base = p.url
        self.headers = {"Authorization": f"Bearer {p.admin}"}
        self.proc = p.gateway.proc
        self.name = "radveil"


def entries(data: Path) -> int:
    with open(data / "audit" / "entries.jsonl", "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def timed(s: requests.Session, url: str, n: int) -> dict:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(url, timeout=120)
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url} answered {r.status_code}")
    lat.sort()
    return {"p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max": lat[-1], "bytes": len(r.content)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args()
    binary = Path(a.bin).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="radveil-portal-bench-", dir="/dev/shm"))
    data = tmp / "data"
    p = Portal(binary, data)
    try:
        t = Target(p)
        q = bench.corpus("SC_rgb_rle.dcm", a.studies, 1, 5)
        t0 = time.perf_counter()
        bench.stow(t, [[b for _, b in q[i:i + 50]] for i in range(0, len(q), 50)], 2)
        print(f"stored {a.studies:,} studies in {time.perf_counter() - t0:.0f} s", flush=True)
        mine = []
        for k in range(5):
            study = new_uid()
            ds = planted(1, study, patient="PID-PORTAL-A")
            ds.StudyDate = f"2026030{k + 1}"
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            body, ctype = multipart([buf.getvalue()])
            r = requests.post(f"{p.url}/studies", data=body, timeout=60,
                              headers=auth(p.admin, **{"Content-Type": ctype}))
            assert r.status_code == 200, r.text
            mine.append(study)
        clinician = token(binary, data, "--role", "clinician", "--scope", "user/ImagingStudy.rs")
        for study in mine * 2:
            requests.get(f"{p.url}/studies/{study}/metadata", headers=auth(clinician), timeout=60)
        other = q[len(q) // 2][0]["study"]
        t0 = time.perf_counter()
        while (have := entries(data)) < a.events:
            need = a.events - have
            secs = max(5, min(60, need // 4000))
            bench.wrk(t, [f"/studies/{other}/metadata"], "application/dicom+json", secs, 4, 0, tmp)
            print(f"  audit trail: {entries(data):,} events", flush=True)
        print(f"filled the audit trail to {entries(data):,} events in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        p.restart()
        print(f"restart on {a.studies:,} studies and {entries(data):,} events: "
              f"{time.perf_counter() - t0:.2f} s to serve", flush=True)
        # A care team for the measured patient without the bench's clinician: the access log
        # then reads its history and marks those reads "outside the care team".
        ehr = token(binary, data, "--subject", "ehr", "--scope", "system/CareTeam.u")
        team = {"resourceType": "CareTeam", "id": "ct-bench", "status": "active",
                "subject": {"identifier": {"value": "PID-PORTAL-A"}},
                "participant": [{"member": {"identifier": {"value": "drsmith"}}}]}
        r = requests.put(p.base + "/fhir/CareTeam/ct-bench", json=team, timeout=60,
                         headers=auth(ehr, **{"Content-Type": "application/fhir+json"}))
        assert r.status_code in (200, 201), r.text
        s = sign_in(p.base, "alice")
        for path in ("/portal", "/portal/access-log", "/portal/consent", "/portal/shares",
                     "/portal/upload"):
            r = timed(s, p.base + path, a.n)
            print(f"{path:22} p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  max {r['max']:6.1f} ms  "
                  f"({r['bytes']:,} B)", flush=True)
        dr = sign_in(p.base, "drsmith")
        r = timed(dr, p.base + "/portal/patient?patient=PID-PORTAL-A", a.n)
        print(f"{'clinician, one patient':22} p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
              f"max {r['max']:6.1f} ms", flush=True)
        audrey = sign_in(p.base, "audrey")
        r = timed(audrey, p.base + "/portal/audit?patient=PID-PORTAL-A", max(10, a.n // 10))
        print(f"{'auditor, one patient':22} p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
              f"max {r['max']:6.1f} ms", flush=True)
        rss = [line for line in Path(f"/proc/{p.gateway.proc.pid}/status").read_text().splitlines()
               if line.startswith(("VmHWM", "VmRSS"))]
        print("server memory: " + ", ".join(" ".join(x.split()) for x in rss), flush=True)
    finally:
        p.stop()
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
