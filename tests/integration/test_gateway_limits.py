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
    PLANTED, assert_no_plaintext, get_parts, new_uid, planted, post, real, requests, serve,
    to_bytes,
)

KEYS = ["listen", "cert", "key", "dev", "oidc_issuer", "jwks", "issuer", "audience",
        "roles_claim", "kek_file", "audit_key_file", "max_request", "max_parts",
        "header_timeout", "body_timeout", "max_connections"]


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
                    "# max_connections = 512", '# audience = "radveil"', "# dev = false"):
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


def test_an_oversized_body_is_refused_before_it_is_sent(serve, tmp_path):
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
