"""WADO-RS of a whole study or series is sent an instance at a time (PS3.18 §10.4): the
server holds a few instances' memory whatever the size of the study, the parts are the
stored bytes, each part names its transfer syntax, and an instance that fails its
integrity check after others were sent ends the response short instead of completing it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from gateway import (  # noqa: F401  (serve is a fixture)
    get_parts, new_uid, planted, post, requests, serve, to_bytes,
)

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def big(n: int, study: str, rows=1536, cols=2048):
    """A CT slice of `rows` x `cols` 16-bit pixels (6 MiB by default) with fresh UIDs."""
    ds = planted(n, study)
    ds.Rows, ds.Columns = rows, cols
    rng = np.random.default_rng(n)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    return ds


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_large_study_is_sent_an_instance_at_a_time(serve, tmp_path):
    g = serve(tmp_path / "data")
    study = new_uid()
    stored = []
    for first in range(0, 24, 4):
        parts = [to_bytes(big(n, study)) for n in range(first, first + 4)]
        r = post(g.url, parts)
        assert r.status_code == 200, r.text
        stored += parts
    total = sum(map(len, stored)) / 2**20
    assert total > 140
    time.sleep(0.5)
    before = rss_mib(g.proc.pid)
    # A slow client: the server must not read the study ahead of it.
    peak, got = before, bytearray()
    with requests.get(f"{g.url}/studies/{study}", headers={"Accept": ACCEPT},
                      stream=True, timeout=120) as r:
        assert r.status_code == 200
        ct = r.headers["Content-Type"]
        for chunk in r.iter_content(1 << 20):
            got += chunk
            peak = max(peak, rss_mib(g.proc.pid))
            time.sleep(0.01)
    grew = peak - before
    # Before: the whole study was opened into memory, then copied into one body (> 2x total).
    assert grew < 60, f"server memory grew by {grew:.0f} MiB sending a {total:.0f} MiB study"
    boundary = re.search(r'boundary="?([^";]+)', ct).group(1).encode()
    chunks = bytes(got).split(b"--" + boundary)
    assert chunks[-1] == b"--\r\n", "the response is complete"
    bodies, syntaxes = [], set()
    for c in chunks[1:-1]:
        head, _, body = c.partition(b"\r\n\r\n")
        m = re.search(rb"transfer-syntax=([0-9.]+)", head)
        assert m, head
        syntaxes.add(m.group(1))
        bodies.append(body[:-2])
    assert sorted(bodies) == sorted(stored)
    assert syntaxes == {b"1.2.840.10008.1.2.1"}


def test_an_instance_altered_after_others_were_sent_ends_the_response_short(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    sent = [to_bytes(planted(n, study)) for n in range(3)]
    files = []
    for b in sent:
        seen = set((data / "objects").rglob("*.*"))
        assert post(g.url, [b]).status_code == 200
        [new] = set((data / "objects").rglob("*.*")) - seen
        files.append(new)
    r, parts = get_parts(f"{g.url}/studies/{study}")
    assert r.status_code == 200 and sorted(parts) == sorted(sent)
    first = sent.index(parts[0])
    # Every instance but the one sent first fails its integrity check.
    for i, f in enumerate(files):
        if i != first:
            b = bytearray(f.read_bytes())
            b[len(b) // 2] ^= 0x01
            f.write_bytes(bytes(b))
    got, complete = b"", True
    try:
        with requests.get(f"{g.url}/studies/{study}", headers={"Accept": ACCEPT},
                          stream=True, timeout=60) as r:
            assert r.status_code == 200
            for chunk in r.iter_content(1 << 16):
                got += chunk
    except requests.exceptions.RequestException:
        complete = False
    # The client can tell: the body ends before its closing boundary, or the read fails
    # (hyper may drop what it had buffered when the body fails right after the first part).
    assert not complete or not got.rstrip().endswith(b"--"), got[-80:]
    assert not got or got.startswith(b"--")
    assert all(sent[i] not in got for i in range(3) if i != first)
    assert g.wait_for_log("integrity"), g.log
    # The instance sent first still comes alone; an altered one alone is a 500, unserved.
    assert get_parts(f"{g.url}/studies/{study}/series/{study}.1/instances/{study}.1.{first}")[1] \
        == [sent[first]]
    other = next(i for i in range(3) if i != first)
    r = requests.get(f"{g.url}/studies/{study}/series/{study}.1/instances/{study}.1.{other}",
                     headers={"Accept": ACCEPT}, timeout=30)
    assert r.status_code == 500 and b"DICM" not in r.content
