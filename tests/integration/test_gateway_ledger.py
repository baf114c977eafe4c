"""The gateway's transparency ledger (DATA/ledger), completed: a DELETE of a study, a series
or an instance writes a tombstone after each deleted instance's ingest entry before it
answers, so `radveil verify --ledger` says a deleted instance's file was deleted (not
proven); the ledger and the audit trail keep working, and verify, across restarts, with
neither held in the server's memory (their records are read back from their files).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import clean_env, require_module
from gateway import new_uid, planted, post, serve, to_bytes

requests = require_module("requests")

__all__ = ["serve"]


def run(radveil_bin, *args, timeout=120):
    return subprocess.run([str(radveil_bin), *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)


def ledger_statuses(radveil_bin, data: Path, files: dict[str, Path]) -> dict[str, str]:
    """What `radveil verify --ledger` says of each file, by name."""
    r = run(radveil_bin, "verify", "--ledger", data / "ledger", "--key-file",
            data / "keys" / "ledger-key", "--allow-unsigned", "--json", *files.values())
    names = {str(p): n for n, p in files.items()}
    out = {}
    for line in r.stdout.splitlines():
        x = json.loads(line)
        if x["status"].startswith("ledger-"):
            out[names[x["input"]]] = x["status"]
    return out


def records(data: Path) -> list[dict]:
    text = (data / "ledger" / "entries.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_deleted_instances_are_recorded_deleted_in_the_ledger(serve, radveil_bin, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study, other = new_uid(), new_uid()
    a, b = study + ".1", study + ".2"
    instances = {
        "one": planted(1, study, a),
        "two": planted(2, study, a),
        "three": planted(3, study, b),
        "four": planted(4, study, b),
        "kept": planted(1, other),
    }
    files = {}
    for name, ds in instances.items():
        files[name] = tmp_path / f"{name}.dcm"
        files[name].write_bytes(to_bytes(ds))
    r = post(g.url, [f.read_bytes() for f in files.values()])
    assert r.status_code == 200, r.text
    assert len(records(data)) == 5
    # One instance, then a series, then what is left of the study.
    one = instances["one"].SOPInstanceUID
    assert requests.delete(f"{g.url}/studies/{study}/series/{a}/instances/{one}",
                           timeout=30).status_code == 204
    # The tombstone is in the ledger when the DELETE answers.
    logged = records(data)
    assert [r["kind"] for r in logged] == ["ingest"] * 5 + ["tombstone"]
    assert requests.delete(f"{g.url}/studies/{study}/series/{b}", timeout=30).status_code == 204
    assert requests.delete(f"{g.url}/studies/{study}", timeout=30).status_code == 204
    # Deleted again: nothing there (404), and no second tombstone.
    assert requests.delete(f"{g.url}/studies/{study}", timeout=30).status_code == 404
    logged = records(data)
    assert [r["kind"] for r in logged] == ["ingest"] * 5 + ["tombstone"] * 4
    # Each tombstone follows its instance's ingest entry, and names no UID.
    ingested = {r["instance"]: r for r in logged[:5]}
    for t in logged[5:]:
        assert ingested[t["instance"]]["sha256"] == t["sha256"]
    assert len({t["instance"] for t in logged[5:]}) == 4
    text = (data / "ledger" / "entries.jsonl").read_text()
    assert study not in text and one not in text
    # Stopped, the gateway signs its last checkpoint; the ledger says which were deleted.
    assert g.stop() == 0
    got = ledger_statuses(radveil_bin, data, files)
    assert got == {"one": "ledger-deleted", "two": "ledger-deleted", "three": "ledger-deleted",
                   "four": "ledger-deleted", "kept": "ledger-proven"}, got
    assert run(radveil_bin, "ledger", "verify", data / "ledger").returncode == 0


def test_an_instance_stored_again_after_its_deletion_is_proven_again(serve, radveil_bin, tmp_path):
    """After the tombstone, the same instance stored again is logged anew: the ledger
    proves it, and after a restart (the ledger read back from its file, not memory) the
    gateway still knows it."""
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    ds = planted(1, study)
    f = tmp_path / "x.dcm"
    f.write_bytes(to_bytes(ds))
    assert post(g.url, [f.read_bytes()]).status_code == 200
    assert requests.delete(f"{g.url}/studies/{study}", timeout=30).status_code == 204
    assert g.stop() == 0
    assert ledger_statuses(radveil_bin, data, {"x": f}) == {"x": "ledger-deleted"}
    g = serve(data)
    assert post(g.url, [f.read_bytes()]).status_code == 200
    # The same bytes again while stored: the same entry, nothing added.
    assert post(g.url, [f.read_bytes()]).status_code in (200, 409)
    assert [r["kind"] for r in records(data)] == ["ingest", "tombstone", "ingest"]
    assert g.stop() == 0
    assert ledger_statuses(radveil_bin, data, {"x": f}) == {"x": "ledger-proven"}
    r = run(radveil_bin, "audit", "verify", "--data", data)
    assert r.returncode == 0, r.stderr
