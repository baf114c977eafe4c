"""Consent as FHIR R4 Consent resources (issue 15, item 2), against `radveil serve`.

What is checked: a Consent PUT and read back (`/fhir/Consent/{id}`, the `searchset` Bundle of
`?patient=`), versions that increment with `If-Match` honoured and old versions read back
from `_history`; every Consent, Bundle and OperationOutcome returned validates against the
FHIR R4 JSON schema; a patient's token reaches only its own patient's consent (another
patient's answers exactly as a missing one), an admin and a privacy officer any, clinicians,
researchers and auditors none; bodies this service would not enforce as written are refused;
every change is in the audit trail (`/audit` as FHIR AuditEvents that validate, with what
changed in words) and in the patient's `/me/access-log`; the site's defaults from
`radveil.toml`; the routes work without access control; and no identifying value is in
plaintext anywhere under the data folder.
"""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest

from conftest import REPO_ROOT, missing_peer, require_module
from gateway import Gateway, assert_no_plaintext, auth, token

requests = require_module("requests")

FHIR = "application/fhir+json"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SITE = "urn:radveil:purpose"
SCHEMA = REPO_ROOT / ".radveil" / "fixtures" / "fhir" / "package" / "fhir.schema.json"


@pytest.fixture(scope="module")
def validate():
    """`validate(resource)`: the FHIR R4 JSON schema's errors for a resource of its type."""
    jsonschema = require_module("jsonschema")
    path = os.environ.get("RADVEIL_FHIR_SCHEMA") or SCHEMA
    if not os.path.isfile(path):
        missing_peer(f"the FHIR R4 JSON schema ({path}; tools/setup-peers unpacks it)")
    full = json.load(open(path))
    validators = {}

    def errors(resource: dict) -> list[str]:
        kind = resource["resourceType"]
        if kind not in validators:
            schema = {"$schema": full["$schema"], "definitions": full["definitions"],
                      "$ref": f"#/definitions/{kind}"}
            validators[kind] = jsonschema.validators.validator_for(full)(schema)
        return [f"{list(e.absolute_path)}: {e.message[:200]}"
                for e in validators[kind].iter_errors(resource)]

    def check(resource: dict):
        found = errors(resource)
        assert not found, (resource.get("resourceType"), found)
        return resource

    # The check can fail: a Consent without its scope, with a bad status, does not pass.
    assert errors({"resourceType": "Consent", "status": "maybe", "category": []})
    return check


@pytest.fixture
def gateway(radveil_bin, tmp_path):
    g = Gateway(radveil_bin, tmp_path / "data", "--dev")
    yield g
    if g.proc.poll() is None:
        g.proc.kill()
        g.proc.wait()


def root(g: Gateway) -> str:
    return g.url.removesuffix("/dicom-web")


def consent(cid: str, patient: str, research: bool | None = True, ai: bool | None = False,
            issuer: str | None = "1.2.840.99.7", data_period: dict | None = None) -> dict:
    """A Consent as an EHR would send it."""
    nested = []
    for permit, system, code in ((research, ACT_REASON, "HRESCH"), (ai, ACT_REASON, "MLTRAINING")):
        if permit is None:
            continue
        p = {"type": "permit" if permit else "deny", "purpose": [{"system": system, "code": code}]}
        if data_period and code == "HRESCH":
            p["dataPeriod"] = data_period
        nested.append(p)
    ident = {"value": patient}
    if issuer:
        ident["system"] = f"urn:oid:{issuer}"
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": ident},
        "dateTime": "2026-03-01",
        "provision": {"provision": nested},
    }


def put(g: Gateway, t: str | None, c: dict, cid: str | None = None, **headers):
    h = {"Content-Type": FHIR, **headers}
    if t:
        h.update(auth(t))
    return requests.put(f"{root(g)}/fhir/Consent/{cid or c['id']}", data=json.dumps(c),
                        headers=h, timeout=30)


def get(g: Gateway, t: str | None, path: str, **params):
    return requests.get(f"{root(g)}/fhir/{path}", params=params,
                        headers=auth(t) if t else {}, timeout=30)


def purposes(resource: dict) -> dict[str, str]:
    return {p["purpose"][0]["code"]: p["type"]
            for p in resource.get("provision", {}).get("provision", [])}


def tokens(radveil_bin, data):
    t = lambda *a: token(radveil_bin, data, *a)  # noqa: E731
    return {
        "admin": t("--role", "admin", "--subject", "adm", "--scope", "user/Consent.rus",
                   "--scope", "user/ImagingStudy.cruds"),
        "officer": t("--role", "privacy-officer", "--subject", "po-1", "--scope", "user/Consent.rus"),
        "a": t("--patient", "PID-CONSENT-A", "--issuer-of-patient-id", "1.2.840.99.7",
               "--subject", "pat-a", "--scope", "patient/Consent.rus"),
        "b": t("--patient", "PID-CONSENT-B", "--issuer-of-patient-id", "1.2.840.99.7",
               "--subject", "pat-b", "--scope", "patient/Consent.rus"),
        "clinician": t("--role", "clinician", "--subject", "dr-c", "--scope", "user/*.cruds"),
        "researcher": t("--role", "researcher", "--subject", "res", "--scope", "user/*.cruds"),
        "auditor": t("--role", "auditor", "--subject", "aud", "--scope", "user/AuditEvent.rs",
                     "--scope", "user/Consent.rus"),
    }


def test_a_consent_round_trips_and_every_change_is_a_new_version(gateway, radveil_bin, validate):
    g = gateway
    tk = tokens(radveil_bin, g.data)
    a = consent("consent-a", "PID-CONSENT-A", research=True, ai=True,
                data_period={"start": "2020-01-01", "end": "2022-12-31"})
    r = put(g, tk["a"], a)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith(FHIR)
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"] == "/fhir/Consent/consent-a/_history/1"
    v1 = validate(r.json())
    assert v1["id"] == "consent-a" and v1["meta"]["versionId"] == "1"
    assert v1["patient"]["identifier"] == {"system": "urn:oid:1.2.840.99.7", "value": "PID-CONSENT-A"}
    assert v1["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert purposes(v1) == {"HRESCH": "permit", "MLTRAINING": "permit"}
    research = [p for p in v1["provision"]["provision"] if p["purpose"][0]["code"] == "HRESCH"][0]
    assert research["dataPeriod"] == {"start": "2020-01-01", "end": "2022-12-31"}
    assert research["period"]["start"]  # the date it was given
    # Read back, by id and by search.
    r = get(g, tk["a"], "Consent/consent-a")
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"1"'
    assert validate(r.json()) == v1
    r = get(g, tk["a"], "Consent", patient="urn:oid:1.2.840.99.7|PID-CONSENT-A")
    assert r.status_code == 200, r.text
    bundle = validate(r.json())
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    assert bundle["entry"][0]["resource"] == v1
    # A patient token may leave the patient out: its own.
    assert validate(get(g, tk["a"], "Consent").json())["total"] == 1
    # A new version: AI training withdrawn; If-Match names the current version.
    a["provision"]["provision"][1]["type"] = "deny"
    r = put(g, tk["a"], a, **{"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    v2 = validate(r.json())
    assert v2["meta"]["versionId"] == "2" and r.headers["ETag"] == 'W/"2"'
    assert purposes(v2) == {"HRESCH": "permit", "MLTRAINING": "deny"}
    # A stale If-Match records nothing.
    r = put(g, tk["a"], a, **{"If-Match": 'W/"1"'})
    assert r.status_code == 412
    validate(r.json())
    assert get(g, tk["a"], "Consent/consent-a").json()["meta"]["versionId"] == "2"
    # Without If-Match: version 3.
    assert put(g, tk["a"], a).json()["meta"]["versionId"] == "3"
    # The old versions stay readable.
    r = get(g, tk["a"], "Consent/consent-a/_history/1")
    assert r.status_code == 200
    assert validate(r.json()) == v1
    assert get(g, tk["a"], "Consent/consent-a/_history/2").json() == v2
    assert get(g, tk["a"], "Consent/consent-a/_history/4").status_code == 404
    r = get(g, tk["a"], "Consent/consent-a/_history")
    history = validate(r.json())
    assert history["type"] == "history" and history["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]


def test_a_patient_reaches_only_their_own_consent_and_roles_decide_the_rest(
        gateway, radveil_bin, validate):
    g = gateway
    tk = tokens(radveil_bin, g.data)
    assert put(g, tk["a"], consent("consent-a", "PID-CONSENT-A")).status_code == 201
    missing = get(g, tk["b"], "Consent/no-such-consent")
    assert missing.status_code == 404
    validate(missing.json())
    # B asks for A's: exactly what a missing one gives.
    theirs = get(g, tk["b"], "Consent/consent-a")
    assert (theirs.status_code, theirs.json()) == (404, missing.json())
    assert get(g, tk["b"], "Consent/consent-a/_history/1").status_code == 404
    assert get(g, tk["b"], "Consent/consent-a/_history").status_code == 404
    r = get(g, tk["b"], "Consent", patient="urn:oid:1.2.840.99.7|PID-CONSENT-A")
    assert r.status_code == 200 and validate(r.json())["total"] == 0
    # B may not write A's: neither A's id, nor a body naming A.
    r = put(g, tk["b"], consent("consent-a", "PID-CONSENT-B", research=False))
    assert r.status_code == 404
    r = put(g, tk["b"], consent("consent-x", "PID-CONSENT-A", research=False))
    assert r.status_code == 404
    assert get(g, tk["a"], "Consent/consent-a").json()["meta"]["versionId"] == "1"
    # B writes its own.
    assert put(g, tk["b"], consent("consent-b", "PID-CONSENT-B")).status_code == 201
    # Staff: admin and privacy officer reach both, and record for a patient.
    for who in ("admin", "officer"):
        for cid in ("consent-a", "consent-b"):
            assert get(g, tk[who], f"Consent/{cid}").status_code == 200, who
    r = put(g, tk["officer"], consent("consent-a", "PID-CONSENT-A", research=False))
    assert r.status_code == 200 and validate(r.json())["meta"]["versionId"] == "2"
    # Clinicians, researchers and auditors: none (403); no token: 401.
    for who in ("clinician", "researcher", "auditor"):
        assert get(g, tk[who], "Consent/consent-a").status_code == 403, who
        assert get(g, tk[who], "Consent", patient="PID-CONSENT-A").status_code == 403, who
        assert put(g, tk[who], consent("consent-a", "PID-CONSENT-A")).status_code == 403, who
    assert get(g, None, "Consent/consent-a").status_code == 401
    assert put(g, None, consent("consent-a", "PID-CONSENT-A")).status_code == 401
    # An image-only patient token is no consent token.
    images = token(radveil_bin, g.data, "--patient", "PID-CONSENT-A",
                   "--issuer-of-patient-id", "1.2.840.99.7")
    assert get(g, images, "Consent/consent-a").status_code == 403
    # Nothing was changed by the refusals.
    assert get(g, tk["admin"], "Consent/consent-a").json()["meta"]["versionId"] == "2"


def test_what_could_not_be_enforced_is_refused(gateway, radveil_bin, validate):
    g = gateway
    tk = tokens(radveil_bin, g.data)
    ok = consent("consent-a", "PID-CONSENT-A")

    def refused(body, status, cid="consent-a", **headers):
        h = {"Content-Type": FHIR, **auth(tk["admin"]), **headers}
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        r = requests.put(f"{root(g)}/fhir/Consent/{cid}", data=data, headers=h, timeout=30)
        assert r.status_code == status, (status, r.status_code, r.text)
        out = validate(r.json())
        assert out["resourceType"] == "OperationOutcome"
        assert "PID-CONSENT" not in r.text
        return out

    unknown = json.loads(json.dumps(ok))
    unknown["provision"]["provision"][0]["purpose"][0] = {"system": ACT_REASON, "code": "HMARKT"}
    refused(unknown, 422)
    by_actor = json.loads(json.dumps(ok))
    by_actor["provision"]["provision"][0]["actor"] = [{"role": {"text": "x"}, "reference": {"display": "y"}}]
    refused(by_actor, 422)
    refused(b"{not json", 400)
    refused({**ok, "resourceType": "Patient"}, 400)
    refused({**ok, "status": "proposed"}, 422)
    refused({**ok, "unknownElement": 1}, 400)
    refused(ok, 400, cid="another-id")
    refused(ok, 400, cid="bad$id")
    refused(ok, 415, **{"Content-Type": "text/plain"})
    refused(ok, 400, **{"If-Match": "soon"})
    refused(json.dumps(ok) + " " * (64 * 1024), 413)
    # The site code system's three purposes are taken; commercial is written with it.
    c = json.loads(json.dumps(ok))
    c["provision"]["provision"].append({"type": "permit", "purpose": [{"system": SITE, "code": "commercial"}]})
    r = put(g, tk["admin"], c)
    assert r.status_code == 201, r.text
    assert purposes(validate(r.json()))["commercial"] == "permit"
    # Nothing else was recorded.
    assert get(g, tk["admin"], "Consent/consent-a/_history").json()["total"] == 1


def test_every_change_is_audited_and_told_to_the_patient(gateway, radveil_bin, validate):
    g = gateway
    tk = tokens(radveil_bin, g.data)
    a = consent("consent-a", "PID-CONSENT-A", research=True, ai=True)
    assert put(g, tk["a"], a).status_code == 201
    a["provision"]["provision"][1]["type"] = "deny"
    assert put(g, tk["a"], a).status_code == 200
    assert put(g, tk["officer"], consent("consent-a", "PID-CONSENT-A", research=False, ai=False)).status_code == 200
    assert get(g, tk["a"], "Consent/consent-a").status_code == 200
    # A refused change is audited too, without naming the other patient.
    assert put(g, tk["b"], consent("consent-a", "PID-CONSENT-B")).status_code == 404
    r = requests.get(f"{root(g)}/audit", params={"action": "consent-change"},
                     headers=auth(tk["auditor"]), timeout=30)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    for e in events:
        validate(e)
    def patient_of(e):
        return [x["what"]["identifier"]["value"] for x in e.get("entity", [])
                if x.get("what", {}).get("type") == "Patient"]
    mine = [e for e in events if patient_of(e) == ["PID-CONSENT-A"]]
    assert len(mine) == 3, json.dumps(events, indent=1)
    assert all(e["action"] == "U" and e["outcome"] == "0" for e in mine)
    details = json.dumps(mine)
    assert "ai-training: withdrawn" in details and "research: withdrawn" in details
    refusals = [e for e in events if e["outcome"] != "0"]
    assert len(refusals) == 1 and patient_of(refusals[0]) == []
    assert "PID-CONSENT-B" not in r.text
    # Reads are audited too (as queries of the patient's records).
    r = requests.get(f"{root(g)}/audit", params={"patient": "PID-CONSENT-A", "issuer": "1.2.840.99.7",
                                                 "action": "query"},
                     headers=auth(tk["auditor"]), timeout=30)
    assert r.status_code == 200 and len(r.text.splitlines()) >= 1, r.text
    # The patient reads it in words.
    patient_log = token(radveil_bin, g.data, "--patient", "PID-CONSENT-A",
                        "--issuer-of-patient-id", "1.2.840.99.7")
    r = requests.get(f"{root(g)}/me/access-log", headers=auth(patient_log), timeout=30)
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    changes = [line for line in lines if "change to your consent" in line]
    assert len(changes) == 3, lines
    assert any(line.startswith("You recorded a change to your consent: version 2: ai-training: withdrawn")
               for line in changes), changes
    assert any("version 3: research: withdrawn" in line for line in changes), changes


def test_site_defaults_come_from_the_settings_file(radveil_bin, tmp_path, validate):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "radveil.toml").write_text(
        '[access]\ndev = true\n[consent]\nresearch = "opt-out"\nai_training = "opt-out"\n'
        'commercial = "opt-out"\n')
    os.chmod(data / "radveil.toml", 0o600)
    g = Gateway(radveil_bin, data)
    try:
        tk = tokens(radveil_bin, data)
        r = put(g, tk["admin"], consent("c-1", "PID-CONSENT-A", research=False, ai=None))
        assert r.status_code == 201, r.text
        c = validate(r.json())
        assert c["policyRule"]["coding"][0]["code"] == "OPTOUT"
        assert c["provision"]["type"] == "permit"
        assert purposes(c) == {"HRESCH": "deny"}
    finally:
        g.stop()
    (data / "radveil.toml").write_text('[consent]\nresearch = "sometimes"\n')
    import subprocess
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "research" in r.stderr, r.stderr


def test_consent_works_without_access_control(radveil_bin, tmp_path, validate):
    g = Gateway(radveil_bin, tmp_path / "data")
    try:
        r = put(g, None, consent("local-1", "PID-CONSENT-A"))
        assert r.status_code == 201, r.text
        validate(r.json())
        r = get(g, None, "Consent", patient="urn:oid:1.2.840.99.7|PID-CONSENT-A")
        assert validate(r.json())["total"] == 1
        # Staff must name the patient.
        r = get(g, None, "Consent")
        assert r.status_code == 400
        validate(r.json())
    finally:
        g.stop()


def test_nothing_identifying_is_in_plaintext_under_the_data_folder(gateway, radveil_bin):
    g, data = gateway, gateway.data
    tk = tokens(radveil_bin, data)
    planted = consent("cons-QZPLANTED-77", "PID-QZCONSENT-5521", issuer=None)
    planted["patient"]["identifier"]["assigner"] = {"display": "QZ CONSENT ISSUER"}
    assert put(g, tk["admin"], planted).status_code == 201
    planted["provision"]["provision"][0]["type"] = "deny"
    assert put(g, tk["admin"], planted).status_code == 200
    assert get(g, tk["admin"], "Consent/cons-QZPLANTED-77").status_code == 200
    assert g.stop() == 0
    key = data / "keys" / "consent-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "consent.db").stat().st_mode) & 0o077 == 0
    assert_no_plaintext(data, "".join(g.log),
                        [b"QZPLANTED", b"PID-QZCONSENT-5521", b"QZ CONSENT ISSUER", b"HRESCH"])
