"""The gateway's audit trail: `radveil serve` records one event per DICOMweb request.

What is checked: a store, a search, a retrieve and a delete by a clinician's token, a
refused bad token and a break-glass read each appear once in `GET /audit` (read as an
auditor) and in `radveil audit export --format fhir` after the server stopped, with the
right action, outcome and who; a patient's `GET /me/access-log` tells of reads of their
study and nothing of another patient; other roles get 403 and no token 401; `radveil audit
verify` passes on the server's log and fails once a byte of it is edited; the plaintext grep
of the data folder still finds no planted value with the audit log there; and a request
whose event cannot be appended is refused with 500.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from conftest import clean_env, require_module
from gateway import (
    PLANTED, Gateway, assert_no_plaintext, auth, multipart, new_uid, planted, to_bytes,
    token,
)

requests = require_module("requests")

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def gateway(radveil_bin, tmp_path):
    g = Gateway(radveil_bin, tmp_path / "data", "--dev")
    yield g
    if g.proc.poll() is None:
        g.proc.kill()
        g.proc.wait()


def stow(url: str, t: str, parts: list[bytes]):
    body, ct = multipart(parts)
    return requests.post(url + "/studies", data=body, timeout=60,
                         headers={"Content-Type": ct, **auth(t)})


def wado(url: str, study: str, headers: dict):
    return requests.get(f"{url}/studies/{study}", timeout=60, headers={"Accept": ACCEPT, **headers})


def root(g: Gateway) -> str:
    return g.url.removesuffix("/dicom-web")


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def who(ev: dict) -> str | None:
    for a in ev.get("agent", []):
        if a.get("requestor"):
            return a["who"].get("identifier", {}).get("value")
    return None


def studies_of(ev: dict) -> set[str]:
    return {e["what"]["identifier"]["value"].removeprefix("urn:oid:")
            for e in ev.get("entity", []) if e.get("what", {}).get("type") == "ImagingStudy"}


def kind(ev: dict) -> str:
    return ev["subtype"][0]["code"]


def run(radveil_bin, *args):
    return subprocess.run([str(radveil_bin), *args], capture_output=True, text=True,
                          env=clean_env(), timeout=120)


def test_every_access_is_audited_once(gateway, radveil_bin, tmp_path):
    g, data = gateway, gateway.data
    clinician = token(radveil_bin, data, "--role", "clinician", "--subject", "dr-cl",
                      "--scope", "user/ImagingStudy.crs")
    admin = token(radveil_bin, data, "--role", "admin", "--subject", "adm",
                  "--scope", "user/ImagingStudy.cruds")
    auditor = token(radveil_bin, data, "--role", "auditor", "--subject", "aud",
                    "--scope", "user/AuditEvent.rs")
    study, gone = new_uid(), new_uid()
    # Store (the clinician), search, retrieve; delete (the admin: clinicians do not delete).
    assert stow(g.url, clinician, [to_bytes(planted(n, study)) for n in range(3)]).status_code == 200
    assert stow(g.url, admin, [to_bytes(planted(1, gone))]).status_code == 200
    r = requests.get(f"{g.url}/studies", params={"StudyInstanceUID": study}, timeout=30,
                     headers={"Accept": "application/dicom+json", **auth(clinician)})
    assert r.status_code == 200 and len(r.json()) == 1
    assert wado(g.url, study, auth(clinician)).status_code == 200
    assert requests.delete(f"{g.url}/studies/{gone}", headers=auth(admin), timeout=30).status_code == 204
    # A bad token; a break-glass read by a clinician whose scope is another patient.
    bad = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.QZBADSIGNATURE"
    assert wado(g.url, study, auth(bad)).status_code == 401
    glass = token(radveil_bin, data, "--role", "clinician", "--subject", "dr-glass",
                  "--patient", "PID-OTHER", "--scope", "patient/ImagingStudy.rs")
    r = wado(g.url, study, auth(glass, **{"Break-Glass-Reason": "unconscious in ER"}))
    assert r.status_code == 200

    # Who may read the audit trail.
    assert requests.get(root(g) + "/audit", timeout=30).status_code == 401
    assert requests.get(root(g) + "/audit", headers=auth(clinician), timeout=30).status_code == 403
    assert requests.get(root(g) + "/audit?since=soon", headers=auth(auditor), timeout=30).status_code == 400
    r = requests.get(root(g) + "/audit", headers=auth(auditor), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/fhir+ndjson")
    live = ndjson(r.text)
    assert bad not in r.text and "QZBADSIGNATURE" not in r.text

    def check(events: list[dict]):
        def one(pred) -> dict:
            found = [e for e in events if pred(e)]
            assert len(found) == 1, json.dumps(found, indent=1)
            return found[0]
        s = one(lambda e: kind(e) == "create" and who(e) == "dr-cl")
        assert s["action"] == "C" and s["outcome"] == "0" and study in studies_of(s)
        # (The clinician's refused read of /audit is a "search" too, with no study.)
        q = one(lambda e: kind(e) == "search" and who(e) == "dr-cl" and studies_of(e))
        assert q["outcome"] == "0" and study in studies_of(q)
        rd = one(lambda e: kind(e) == "read" and who(e) == "dr-cl")
        assert rd["action"] == "R" and rd["outcome"] == "0" and study in studies_of(rd)
        d = one(lambda e: kind(e) == "delete" and who(e) == "adm")
        assert d["action"] == "D" and d["outcome"] == "0" and gone in studies_of(d)
        # (The request to /audit without any token is a refusal too: "no bearer token".)
        t = one(lambda e: e["type"]["code"] == "110113" and e.get("outcomeDesc") != "no bearer token")
        assert t["outcome"] == "4" and who(t) is None
        assert t["outcomeDesc"].startswith("the token"), t["outcomeDesc"]
        bg = one(lambda e: kind(e) == "read" and who(e) == "dr-glass")
        assert bg["outcome"] == "0" and study in studies_of(bg)
        purposes = [c["code"] for p in bg["purposeOfEvent"] for c in p["coding"]]
        assert "BTG" in purposes and "ETREAT" in purposes
        assert any(p.get("text") == "unconscious in ER" for p in bg["purposeOfEvent"])
        # Every agent of a request names its network address.
        assert any(a.get("network", {}).get("address") == "127.0.0.1" for a in s["agent"])

    check(live)
    # The clinician's and the unauthenticated reads of /audit were recorded too (refused).
    assert sum(1 for e in live if who(e) == "dr-cl" and e["outcome"] == "4") >= 1

    assert g.stop() == 0, "".join(g.log)
    r = run(radveil_bin, "audit", "export", "--data", str(data), "--format", "fhir")
    assert r.returncode == 0, r.stderr
    exported = ndjson(r.stdout)
    check(exported)
    # The auditor's successful read of /audit is in the trail.
    assert any(who(e) == "aud" and e["outcome"] == "0" for e in exported)

    # verify passes, and fails once a byte of an entry is edited.
    r = run(radveil_bin, "audit", "verify", "--data", str(data))
    assert r.returncode == 0, r.stderr
    entries = data / "audit" / "entries.jsonl"
    b = bytearray(entries.read_bytes())
    i = b.index(b'"sealed":"') + 20
    b[i] = ord("A") if b[i] != ord("A") else ord("B")
    entries.write_bytes(bytes(b))
    r = run(radveil_bin, "audit", "verify", "--data", str(data))
    assert r.returncode != 0
    assert "FAILED" in r.stderr


def test_a_patient_reads_their_access_log_only(gateway, radveil_bin):
    g, data = gateway, gateway.data
    admin = token(radveil_bin, data, "--role", "admin", "--subject", "adm",
                  "--scope", "user/ImagingStudy.cruds")
    clinician = token(radveil_bin, data, "--role", "clinician", "--subject", "dr-cl",
                      "--scope", "user/ImagingStudy.rs")
    mine, theirs = new_uid(), new_uid()
    assert stow(g.url, admin, [to_bytes(planted(1, mine, patient="PID-MINE"))]).status_code == 200
    assert stow(g.url, admin, [to_bytes(planted(1, theirs, patient="PID-THEIRS"))]).status_code == 200
    assert wado(g.url, mine, auth(clinician)).status_code == 200
    assert wado(g.url, theirs, auth(clinician)).status_code == 200
    assert wado(g.url, theirs, auth(clinician)).status_code == 200
    patient = token(radveil_bin, data, "--patient", "PID-MINE")
    r = requests.get(root(g) + "/me/access-log", headers=auth(patient), timeout=30)
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    # Stored once, viewed once by the clinician.
    viewed = [line for line in lines if "dr-cl" in line or "clinician" in line]
    assert len(viewed) == 1, lines
    # Exactly their study's store and view: the other patient's store and two views
    # would add three lines.
    assert len(lines) == 2, lines
    assert any(line.startswith("An administrator added your study") for line in lines), lines
    assert not any(theirs in line or "PID-THEIRS" in line for line in lines), lines
    # Other tokens: 403; none: 401.
    assert requests.get(root(g) + "/me/access-log", headers=auth(clinician), timeout=30).status_code == 403
    assert requests.get(root(g) + "/me/access-log", timeout=30).status_code == 401
    # The patient's read is itself in their log now.
    r = requests.get(root(g) + "/me/access-log", headers=auth(patient), timeout=30)
    assert len(r.text.splitlines()) == len(lines) + 1, r.text


def test_nothing_identifying_is_in_plaintext_with_the_audit_log(gateway, radveil_bin, tmp_path):
    g, data = gateway, gateway.data
    admin = token(radveil_bin, data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    study, series = new_uid(), new_uid()
    instances = [planted(n, study, series) for n in range(3)]
    assert stow(g.url, admin, [to_bytes(d) for d in instances]).status_code == 200
    r = requests.get(f"{g.url}/studies", params={"PatientID": PLANTED["id"]}, timeout=30,
                     headers={"Accept": "application/dicom+json", **auth(admin)})
    assert r.status_code == 200 and len(r.json()) == 1
    assert wado(g.url, study, auth(admin)).status_code == 200
    glass = token(radveil_bin, data, "--role", "clinician", "--patient", "PID-OTHER",
                  "--scope", "patient/ImagingStudy.rs")
    assert wado(g.url, study, auth(glass, **{"Break-Glass-Reason": "QZREASON planted"})).status_code == 200
    assert g.stop() == 0, "".join(g.log)
    assert (data / "audit" / "entries.jsonl").stat().st_size > 0
    needles = [v.encode() for v in PLANTED.values()] + [study.encode(), series.encode(), b"QZREASON"]
    needles += [d.SOPInstanceUID.encode() for d in instances]
    needles += [b"PLANTEDNAME", base64.b64encode(PLANTED["id"].encode())[:12]]
    assert_no_plaintext(data, "".join(g.log), needles)


def test_a_request_is_refused_when_its_event_cannot_be_written(gateway, radveil_bin):
    g, data = gateway, gateway.data
    admin = token(radveil_bin, data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    study = new_uid()
    assert stow(g.url, admin, [to_bytes(planted(1, study))]).status_code == 200
    assert wado(g.url, study, auth(admin)).status_code == 200
    # The entries file replaced by a folder: no append can succeed (root or not).
    entries = data / "audit" / "entries.jsonl"
    entries.rename(data / "audit" / "entries.moved")
    entries.mkdir()
    r = wado(g.url, study, auth(admin))
    assert r.status_code == 500
    assert b"DICM" not in r.content
    r = requests.get(f"{g.url}/studies", timeout=30,
                     headers={"Accept": "application/dicom+json", **auth(admin)})
    assert r.status_code == 500
    assert g.wait_for_log("audit"), g.log
    # Put back, the trail takes events again.
    entries.rmdir()
    (data / "audit" / "entries.moved").rename(entries)
    assert wado(g.url, study, auth(admin)).status_code == 200
