"""`radveil serve` refuses to start on a tampered audit trail or ledger.

What is checked: a gateway that served requests and stopped cleanly starts again; after its
audit trail (DATA/audit) had a record edited, deleted, reordered or cut off, after the
whole trail was put back from an older copy (a rollback behind the checkpoint the gateway
kept of it in its --kept-checkpoints folder), after the trail was deleted (with that folder),
or after its ledger (DATA/ledger) had a record edited, `radveil serve` exits non-zero before it listens, saying what is wrong
(by entry index, never by a value) and the command that shows it; `radveil audit verify`
agrees. Without --kept-checkpoints a data directory put back from a backup starts (the
crypto-shredding tests rely on it). Before, the gateway started and found out only at its
first checkpoint.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import clean_env, require_module
from gateway import READY, Gateway, new_uid, planted, post, to_bytes

requests = require_module("requests")


def kept(data: Path) -> Path:
    """The folder of kept checkpoints: apart from the data directory."""
    return data.parent / "kept"


def served(radveil_bin, data: Path, requests_made: int = 4) -> Gateway:
    """A gateway on `data` that stored an instance and answered a few searches, stopped
    cleanly (its last checkpoints signed and kept)."""
    g = Gateway(radveil_bin, data, "--kept-checkpoints", str(kept(data)))
    study = new_uid()
    assert post(g.url, [to_bytes(planted(1, study))]).status_code == 200
    for _ in range(requests_made):
        r = requests.get(g.url + "/studies", timeout=30,
                         headers={"Accept": "application/dicom+json"})
        assert r.status_code == 200
    assert g.stop() == 0, "".join(g.log)
    return g


def refused(radveil_bin, data: Path, keep: bool = True) -> str:
    """Starts `radveil serve` on `data` (with the kept checkpoints unless `keep` is false)
    and returns its log, asserting that it exited non-zero without listening (a gateway
    that starts is stopped and fails the test)."""
    more = ["--kept-checkpoints", str(kept(data))] if keep else []
    p = subprocess.Popen(
        [str(radveil_bin), "serve", "--data", str(data), "--listen", "127.0.0.1:0", *more],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=clean_env())
    lines: list[str] = []

    def read():
        for line in p.stderr:
            lines.append(line)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        if any(READY.search(line) for line in list(lines)):
            p.kill()
            p.wait()
            pytest.fail("radveil serve started on a tampered trail:\n" + "".join(lines))
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
        p.wait()
        pytest.fail("radveil serve neither started nor stopped:\n" + "".join(lines))
    t.join(10)
    log = "".join(lines)
    assert p.returncode != 0, log
    assert not any(READY.search(line) for line in lines), log
    return log


def entries(data: Path) -> Path:
    return data / "audit" / "entries.jsonl"


def rewrite(path: Path, change):
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))


def verify(radveil_bin, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(radveil_bin), "audit", "verify", "--data", str(data), *extra],
                          capture_output=True, text=True, env=clean_env(), timeout=120)


def says_how_to_inspect(log: str, data: Path):
    assert f"radveil audit verify --data {data}" in log, log
    assert "does not verify" in log, log


@pytest.fixture
def data(radveil_bin, tmp_path) -> Path:
    d = tmp_path / "data"
    served(radveil_bin, d)
    assert len(entries(d).read_bytes().splitlines()) >= 5
    return d


def test_a_clean_restart_starts(radveil_bin, data):
    # Twice: the checkpoint kept at the first stop is extended by the second run.
    for _ in range(2):
        g = served(radveil_bin, data, requests_made=1)
        assert not any("does not verify" in line for line in g.log), g.log
    assert (kept(data) / "audit-checkpoint").is_file()
    assert (kept(data) / "ledger-checkpoint").is_file()
    r = verify(radveil_bin, data, "--trusted", str(kept(data) / "audit-checkpoint"))
    assert r.returncode == 0, r.stderr


def test_an_edited_record_stops_the_start(radveil_bin, data):
    def edit(lines):
        i = lines[2].index(b'"sealed":"') + 20
        b = bytearray(lines[2])
        b[i] = ord("A") if b[i] != ord("A") else ord("B")
        lines[2] = bytes(b)
        return lines

    rewrite(entries(data), edit)
    log = refused(radveil_bin, data)
    says_how_to_inspect(log, data)
    assert "entry 2 does not open" in log, log
    assert verify(radveil_bin, data).returncode != 0


def test_a_deleted_record_stops_the_start(radveil_bin, data):
    rewrite(entries(data), lambda lines: lines[:1] + lines[2:])
    log = refused(radveil_bin, data)
    says_how_to_inspect(log, data)
    assert "entries were removed" in log or "does not open" in log, log


def test_reordered_records_stop_the_start(radveil_bin, data):
    rewrite(entries(data), lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])
    log = refused(radveil_bin, data)
    says_how_to_inspect(log, data)
    assert "entry 1 does not open" in log, log


def test_a_truncated_trail_stops_the_start(radveil_bin, data):
    rewrite(entries(data), lambda lines: lines[:-2])
    log = refused(radveil_bin, data)
    says_how_to_inspect(log, data)
    assert "entries were removed" in log, log


def test_a_trail_rolled_back_behind_the_kept_checkpoint_stops_the_start(radveil_bin, data, tmp_path):
    # A copy of the whole trail (its checkpoints with it), consistent in itself.
    old = tmp_path / "audit-before"
    shutil.copytree(data / "audit", old)
    served(radveil_bin, data, requests_made=3)
    shutil.rmtree(data / "audit")
    shutil.copytree(old, data / "audit")
    # The copy verifies alone; only the checkpoint kept apart tells.
    assert verify(radveil_bin, data).returncode == 0
    log = refused(radveil_bin, data)
    says_how_to_inspect(log, data)
    assert f"--trusted {kept(data) / 'audit-checkpoint'}" in log, log
    assert "older copy" in log, log
    # Without a folder of kept checkpoints, a data directory put back from a copy starts.
    g = Gateway(radveil_bin, data)
    assert g.stop() == 0


def test_a_deleted_trail_stops_the_start(radveil_bin, data):
    shutil.rmtree(data / "audit")
    log = refused(radveil_bin, data)
    assert "missing" in log, log
    assert "audit-checkpoint" in log, log


def test_an_edited_ledger_record_stops_the_start(radveil_bin, data):
    ledger = data / "ledger" / "entries.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    assert lines, "the stored instance is in the ledger"

    def edit(lines):
        # A hex digit of the first entry's hashes changed: still a record, not the one
        # the checkpoints cover.
        b = bytearray(lines[0])
        i = b.index(b'"sha256":"') + 12
        b[i] = ord("0") if b[i] != ord("0") else ord("1")
        lines[0] = bytes(b)
        return lines

    rewrite(ledger, edit)
    log = refused(radveil_bin, data)
    assert "the ledger in" in log, log
    assert f"radveil ledger verify {data / 'ledger'}" in log, log


def test_a_ledger_without_its_checkpoint_key_stops_the_start(radveil_bin, data):
    """A ledger whose checkpoint key is gone cannot be checked (its own verifier.pub is
    whatever whoever wrote the folder chose): the start is refused, not given a new key."""
    key = data / "keys" / "ledger-signer.key"
    assert key.exists()
    key.unlink()
    log = refused(radveil_bin, data, keep=False)
    assert "ledger-signer.key is missing" in log, log
    assert not key.exists()
