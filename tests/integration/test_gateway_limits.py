"""`radveil serve`'s settings file and its limits on what clients may hold.

- `DATA/radveil.toml` is written on first run (mode 0600) with every setting commented with its
  default and meaning; a value in it takes effect, a flag overrides it, an unknown key or a bad
  value stops the start with the key's name.
- Slow clients (slowloris: headers or a body trickled a byte a second) are cut off within the
  configured timeouts, while other clients are served promptly; an oversized body is refused
  413 before it is sent.
- A full disk (a small tmpfs mounted for the test) refuses stores with a clear reason, loses
  nothing acknowledged, keeps serving reads, and stores work again once space is freed; the
  server's log names no patient.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import pytest

from conftest import clean_env, missing_peer
from gateway import (  # noqa: F401  (serve is a fixture)
    PLANTED, assert_no_plaintext, auth, get_parts, multipart, new_uid, planted, post, real,
    requests, serve, to_bytes, token,
)

KEYS = ["listen", "cert", "key", "dev", "oidc_issuer", "jwks", "issuer", "audience",
        "roles_claim", "kek_file", "audit_key_file", "max_request", "max_parts",
        "header_timeout", "body_timeout", "send_timeout", "max_connections", "min_free_disk"]


def audit_events(radveil_bin, data: Path) -> list[dict]:
    """The audit trail of a stopped server, as FHIR AuditEvents."""
    r = subprocess.run([str(radveil_bin), "audit", "export", "--data", str(data), "--format", "fhir"],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def refused_stores(events: list[dict], status: int) -> int:
    """How many stores (subtype "create") were refused with HTTP `status`."""
    return sum(1 for e in events if e["subtype"][0]["code"] == "create"
               and e["outcome"] != "0" and e.get("outcomeDesc") == f"HTTP {status}")


def start_fails(radveil_bin, data: Path, *args: str) -> str:
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(data), "--listen", "127.0.0.1:0",
                        *args], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode != 0, r.stderr
    assert "panicked" not in r.stderr, r.stderr
    return r.stderr


def host_port(g) -> tuple[str, int]:
    hp = g.url.split("//")[1].split("/")[0]
    h, p = hp.rsplit(":", 1)
    return h, int(p)


# --- the settings file ------------------------------------------------------------------------

def test_first_run_writes_every_setting_commented_with_its_default(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    conf = data / "radveil.toml"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    for key in KEYS:
        assert f"\n# {key} = " in text, key
    for default in ('# listen = "127.0.0.1:8042"', '# max_request = "512M"',
                    "# max_parts = 10000", '# header_timeout = "30s"', '# body_timeout = "5m"',
                    '# send_timeout = "1m"', "# max_connections = 512", '# min_free_disk = "256M"', '# audience = "radveil"', "# dev = false"):
        assert default in text, default
    # Everything is commented out: the file as written sets nothing.
    assert all(v == {} for v in tomllib.loads(text).values())
    assert g.stop() == 0
    # A later run reads it and leaves it as it is.
    conf.write_text(text + "\n# the site's own note\n")
    g = serve(data)
    assert requests.get(g.url + "/studies", timeout=10).status_code == 200
    assert conf.read_text().endswith("# the site's own note\n")


def test_a_setting_in_the_file_takes_effect_and_a_flag_overrides_it(serve, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "radveil.toml").write_text('[limits]\nmax_request = "64K"\n')
    two = [to_bytes(planted(i, new_uid())) for i in range(2)]
    assert sum(map(len, two)) > 64 << 10 > len(two[0])
    g = serve(data)
    r = post(g.url, two)
    assert r.status_code == 413, (r.status_code, r.text)
    assert "limit" in r.text
    assert post(g.url, two[:1]).status_code == 200
    assert g.stop() == 0
    # The flag wins over the file.
    g = serve(data, "--max-request", "1M")
    assert post(g.url, two[1:] + [to_bytes(planted(9, new_uid()))]).status_code == 200


def test_an_unknown_key_or_a_bad_value_stops_the_start_naming_the_key(radveil_bin, tmp_path):
    for i, (text, key) in enumerate([
        ('[limits]\nmax_requst = "1M"\n', "max_requst"),
        ('listn = "127.0.0.1:9"\n', "listn"),
        ('[limits]\nmax_request = "lots"\n', "max_request"),
        ('[limits]\nheader_timeout = "-3s"\n', "header_timeout"),
        ("[limits]\nmax_connections = 0\n", "max_connections"),
        ('[tls]\ncert = "c.pem"\n', "key"),
        ("[limits\n", "limits"),
    ]):
        data = tmp_path / f"d{i}"
        data.mkdir(mode=0o700)
        (data / "radveil.toml").write_text(text)
        err = start_fails(radveil_bin, data)
        assert key in err and "radveil.toml" in err, (text, err)


# --- slow and oversized requests --------------------------------------------------------------

def trickle(host: str, port: int, head: bytes, byte: bytes, out: dict, name: str, cap: float = 30):
    """Sends `head`, then `byte` once a second until the server closes the connection (or `cap`
    seconds pass); records in `out[name]` how long the server took to cut it off."""
    t0 = time.monotonic()
    s = socket.create_connection((host, port))
    s.settimeout(1.0)
    try:
        if head:
            s.sendall(head)
        while time.monotonic() - t0 < cap:
            try:
                got = s.recv(4096)
            except socket.timeout:
                try:
                    s.sendall(byte)
                except OSError:
                    break
                continue
            except OSError:
                break
            if not got:
                break
            out.setdefault(name + ":answer", b"")
            out[name + ":answer"] += got
        out[name] = time.monotonic() - t0
    finally:
        s.close()


def test_slow_clients_are_cut_off_while_others_are_served(serve, tmp_path):
    g = serve(tmp_path / "data", "--header-timeout", "2s", "--body-timeout", "4s")
    host, port = host_port(g)
    out: dict = {}
    threads = []
    # Ten clients trickling their headers, ten trickling a STOW body, two saying nothing.
    for i in range(10):
        threads.append(threading.Thread(target=trickle, args=(
            host, port, b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a", out,
            f"head{i}")))
        threads.append(threading.Thread(target=trickle, args=(
            host, port,
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n\r\n',
            b"-", out, f"body{i}")))
    for i in range(2):
        threads.append(threading.Thread(target=trickle, args=(host, port, b"", b"", out, f"mute{i}")))
    for t in threads:
        t.start()
    # Meanwhile others are served promptly, again and again.
    deadline = time.monotonic() + 6
    served = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        r = requests.get(g.url + "/studies", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 1.0, time.monotonic() - t0
        served += 1
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=40)
    assert served >= 10
    for i in range(10):
        assert 1.5 <= out[f"head{i}"] <= 5, out
        assert 3.5 <= out[f"body{i}"] <= 8, out
        # A body cut off is answered as refused (never stored), not acknowledged.
        answer = out.get(f"body{i}:answer", b"")
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    for i in range(2):
        assert 1.5 <= out[f"mute{i}"] <= 5, out
    assert g.proc.poll() is None
    assert requests.get(g.url + "/studies", timeout=5).status_code == 200


def big(n: int, study: str):
    """A planted instance with 8 MiB of (incompressible) pixels."""
    ds = planted(n, study)
    ds.Rows = ds.Columns = 2048
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = os.urandom(2048 * 2048 * 2)
    return ds


def test_a_client_that_stops_reading_is_cut_off_while_others_are_served(serve, tmp_path):
    g = serve(tmp_path / "data", "--send-timeout", "2s")
    study = new_uid()
    ds = [big(i, study) for i in range(2)]
    assert post(g.url, [to_bytes(d) for d in ds]).status_code == 200
    host, port = host_port(g)
    # A client asks for the study (16 MiB) with a tiny receive window, and reads nothing.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(f"GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: x\r\n"
              'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n\r\n'
              .encode())
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        t1 = time.monotonic()
        assert requests.get(g.url + "/studies", timeout=5).status_code == 200
        assert time.monotonic() - t1 < 1
        time.sleep(0.2)
    # Now it reads: what the buffers held, then the end, well short of the response.
    s.settimeout(10)
    got = b""
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    # The study is streamed an instance at a time (chunked, no Content-Length): the body
    # stops well short of the 16 MiB and never gets its last chunk.
    assert b"transfer-encoding: chunked" in head.lower(), head[:400]
    assert not body.endswith(b"0\r\n\r\n")
    assert len(body) < 12 << 20, len(body)
    # A client that reads gets all of it.
    r, parts = get_parts(f"{g.url}/studies/{study}")
    assert r.status_code == 200 and sorted(parts) == sorted(to_bytes(d) for d in ds)


def test_connections_beyond_the_cap_wait_until_one_is_cut_off(serve, tmp_path):
    g = serve(tmp_path / "data", "--max-connections", "3", "--header-timeout", "2s")
    host, port = host_port(g)
    mute = [socket.create_connection((host, port)) for _ in range(3)]
    time.sleep(0.3)
    # A fourth client is accepted only when a mute one is cut off at its header timeout.
    t0 = time.monotonic()
    r = requests.get(g.url + "/studies", timeout=20)
    waited = time.monotonic() - t0
    assert r.status_code == 200
    assert 1.2 <= waited <= 5, waited
    for s in mute:
        s.settimeout(5)
        assert s.recv(1) == b""  # closed by the server
        s.close()
    t0 = time.monotonic()
    assert requests.get(g.url + "/studies", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 1


def test_an_oversized_body_is_refused_before_it_is_sent(serve, tmp_path, radveil_bin):
    g = serve(tmp_path / "data", "--max-request", "1M")
    host, port = host_port(g)
    s = socket.create_connection((host, port), timeout=5)
    # Ten gigabytes announced, none sent: the answer comes at once.
    s.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n"
              b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
              b"Expect: 100-continue\r\n\r\n")
    t0 = time.monotonic()
    answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"100 Continue" not in answer
    assert time.monotonic() - t0 < 2
    s.close()
    # A chunked body (no length announced) is cut off at the limit.
    body = b"x" * (2 << 20)
    r = requests.post(g.url + "/studies", data=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                      headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
                      timeout=30)
    assert r.status_code == 413, r.status_code
    assert requests.get(g.url + "/studies", timeout=5).status_code == 200
    # Both refusals are in the audit trail, with the client's address.
    assert g.stop() == 0
    events = audit_events(radveil_bin, tmp_path / "data")
    assert refused_stores(events, 413) == 2, events


# --- a full disk ------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs to fill (mounting needs root, as in CI's container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(disk)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        missing_peer(f"a small filesystem to fill (mount -t tmpfs, as root: {r.stderr.strip()})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def free_bytes(p: Path) -> int:
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def wado(g, ds):
    return get_parts(f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                     f"/instances/{ds.SOPInstanceUID}")


def assert_all_there(g, acked):
    for ds in acked:
        r, parts = wado(g, ds)
        assert r.status_code == 200, (r.status_code, r.text[:200])
        assert parts == [to_bytes(ds)]
    r = requests.get(g.url + "/studies", timeout=30)
    assert r.status_code == 200
    assert {s["0020000D"]["Value"][0] for s in r.json()} == {d.StudyInstanceUID for d in acked}


def store_until_refused(g, start: int = 0):
    """Stores studies of five planted instances until a request is refused; returns the
    acknowledged instances and the refusing response."""
    acked = []
    for i in range(start, start + 200):
        study = new_uid()
        ds = [planted(j, study, patient=f"PID-QZ-{i}") for j in range(5)]
        r = post(g.url, [to_bytes(d) for d in ds])
        if r.status_code != 200:
            return acked, r
        acked += ds
    raise AssertionError("the disk never filled")


def test_a_full_disk_refuses_stores_clearly_loses_nothing_and_keeps_serving(serve, small_disk,
                                                                           radveil_bin):
    data = small_disk / "data"
    g = serve(data, "--min-free-disk", "3M")
    # Something else takes most of the disk; the gateway's stores take the rest.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free_bytes(small_disk) - (5 << 20)))
    acked, refused = store_until_refused(g)
    assert acked, "nothing could be stored at all"
    assert refused.status_code == 507, (refused.status_code, refused.text[:300])
    assert "insufficient storage" in refused.text and "filesystem" in refused.text
    assert g.wait_for_log("store refused: the data directory's filesystem is (nearly) full")
    # Refused again while full; meanwhile everything acknowledged is served, byte-identical,
    # and searched; the server is up.
    again, refused = store_until_refused(g, 1000)
    assert not again and refused.status_code == 507
    assert_all_there(g, acked)
    # A delete goes on too (crypto-shredding writes to the key store and the index).
    gone = acked[:5]
    r = requests.delete(f"{g.url}/studies/{gone[0].StudyInstanceUID}", timeout=30)
    assert r.status_code == 204, (r.status_code, r.text[:200])
    acked = acked[5:]
    assert wado(g, gone[0])[0].status_code == 404
    assert_all_there(g, acked)
    # Once space is freed stores work again, with nothing to reset.
    filler.unlink()
    study = new_uid()
    late = [planted(j, study, patient="PID-QZ-late") for j in range(5)]
    r = post(g.url, [to_bytes(d) for d in late])
    assert r.status_code == 200, (r.status_code, r.text[:300])
    acked += late
    assert_all_there(g, acked)
    assert g.stop() == 0
    log = "".join(g.log)
    assert_no_plaintext(data, log, [PLANTED["name"].encode(), PLANTED["accession"].encode(),
                                    PLANTED["institution"].encode(), PLANTED["birth"].encode(),
                                    b"PID-QZ-"])
    # The two refused stores are in the audit trail.
    assert refused_stores(audit_events(radveil_bin, data), 507) == 2
    # And after a restart, all of it is still there.
    g = serve(data, "--min-free-disk", "3M")
    assert_all_there(g, acked)


def test_after_a_disk_filled_by_another_process_is_freed_requests_are_served_again(
        serve, small_disk):
    data = small_disk / "data"
    g = serve(data, "--min-free-disk", "0")
    ds = [planted(j, new_uid()) for j in range(3)]
    assert post(g.url, [to_bytes(d) for d in ds]).status_code == 200
    # Another process takes every last byte.
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        for chunk in (b"\0" * 65536, b"\0"):
            try:
                while f.write(chunk):
                    pass
            except OSError:
                pass
    r = post(g.url, [to_bytes(planted(9, new_uid()))])
    assert r.status_code != 200
    # A read now has nowhere to write its audit event: refused rather than unaudited. The
    # audit log's last page has some room left: enough reads that one event's line crosses
    # into a page the disk no longer has, so its write is cut short.
    for _ in range(30):
        r, _parts = wado(g, ds[0])
        assert r.status_code in (200, 500)
    filler.unlink()
    r, parts = wado(g, ds[0])
    assert r.status_code == 200 and parts == [to_bytes(ds[0])], (r.status_code, r.text[:200])


def test_the_disk_and_size_refusals_come_after_access_control_and_name_the_caller(
        serve, radveil_bin, tmp_path):
    # A reserve no disk here has: every store is refused for room, but only once the token is
    # checked (an anonymous client learns nothing of the disk), and the refusal is audited
    # under the caller's name like any other request.
    data = tmp_path / "data"
    g = serve(data, "--dev", "--min-free-disk", "1000P", "--max-request", "1M")
    body, ct = multipart([to_bytes(planted(0, new_uid()))])
    r = requests.post(g.url + "/studies", data=body, headers={"Content-Type": ct}, timeout=60)
    assert r.status_code == 401, r.status_code
    t = token(radveil_bin, data, "--scope", "user/ImagingStudy.cruds", "--role", "admin",
              "--subject", "modality-7")
    r = requests.post(g.url + "/studies", data=body,
                      headers=auth(t, **{"Content-Type": ct}), timeout=60)
    assert r.status_code == 507, r.status_code
    big = b"\0" * (2 << 20)
    r = requests.post(g.url + "/studies", data=big, headers={"Content-Type": ct}, timeout=60)
    assert r.status_code == 401, r.status_code
    r = requests.post(g.url + "/studies", data=big,
                      headers=auth(t, **{"Content-Type": ct}), timeout=60)
    assert r.status_code == 413, r.status_code
    assert g.stop() == 0
    events = audit_events(radveil_bin, data)
    for status in (507, 413):
        refused = [e for e in events if e["subtype"][0]["code"] == "create"
                   and e.get("outcomeDesc") == f"HTTP {status}"]
        assert len(refused) == 1, (status, len(refused))
        who = {a["who"].get("identifier", {}).get("value")
               for a in refused[0]["agent"] if a.get("requestor")}
        assert who == {"modality-7"}, who
