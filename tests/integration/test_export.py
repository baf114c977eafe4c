"""Consent-checked research exports with lineage (issue 15, item 3): `radveil export` and
`radveil lineage` against a gateway's data folder.

A cohort of four patients (real pydicom files, each patient's own planted name and ID,
several studies) is stored through `radveil serve --dev`; consents are recorded through
`PUT /fhir/Consent/{id}`: ALICE and DAVE consent to AI training, CAROL refuses it, BOB says
nothing (the site's default, opt-in, leaves him out). `radveil export` runs while the
gateway serves the same folder. Checked: only ALICE's and DAVE's images are in the output,
de-identified (no planted value of anyone in any output byte; dciodvfy finds no error an
input did not have); the summary and report count patients, studies and instances and the
two left out; after DAVE withdraws, `radveil lineage` lists the export for him and his
withdrawal notice holds exactly the de-identified SOP Instance UIDs of his exported files
(read with pydicom), none of ALICE's, and nothing naming him; DAVE's access log tells of the
export in words, BOB's does not. An encrypted export (`--encrypt-to`) writes only
`.dcm.p7m` files that `openssl cms -decrypt` opens with the recipient's key and not with
another.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, missing_peer, require_module
from gateway import Gateway, auth, multipart, new_uid, real, to_bytes, token

requests = require_module("requests")
pydicom = require_module("pydicom")

PATIENTS = {
    # id: (name, consent to ai-training: True/False/None = nothing recorded, studies)
    "PID-ALICE-QZ11": ("QZALICE^LIDDELL", True, 2),
    "PID-BOB-QZ22": ("QZBOB^BUILDER", None, 1),
    "PID-CAROL-QZ33": ("QZCAROL^SINGER", False, 1),
    "PID-DAVE-QZ44": ("QZDAVE^GROHL", True, 2),
}
PLANTED_INSTITUTION = "QZ PLANTED HOSPITAL"
PER_STUDY = 2


def run(binary, *args, timeout=300):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)


def root(g: Gateway) -> str:
    return g.url.removesuffix("/dicom-web")


def instance(pid: str, name: str, study: str, n: int, base: int):
    ds = real("CT_small.dcm")
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19230405"
    ds.InstitutionName = PLANTED_INSTITUTION
    ds.AccessionNumber = "ACC" + pid[-4:]
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.SOPInstanceUID = f"{study}.1.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # Kept by de-identification: tells whose an exported file is.
    ds.InstanceNumber = base + n
    ds.StudyDate = "20240301"
    return ds


def consent(cid: str, pid: str, permit: bool) -> dict:
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"value": pid}},
        "dateTime": "2026-12-01T10:00:00Z",
        "provision": {"provision": [{
            "type": "permit" if permit else "deny",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                         "code": "MLTRAINING"}],
        }]},
    }


def put_consent(g: Gateway, t: str, cid: str, pid: str, permit: bool):
    r = requests.put(f"{root(g)}/fhir/Consent/{cid}", json=consent(cid, pid, permit), timeout=30,
                     headers=auth(t, **{"Content-Type": "application/fhir+json"}))
    if r.status_code in (404, 405) and "fhir" not in r.text.lower():
        pytest.skip("PUT /fhir/Consent is not served by this build (the consent routes)")
    assert r.status_code in (200, 201), (r.status_code, r.text)


def dicom_files(root_dir: Path, suffix=".dcm"):
    return sorted(p for p in root_dir.rglob("*" + suffix) if p.is_file())


def error_lines(text: str) -> set[str]:
    return {re.sub(r"\s+", " ", line.strip()) for line in text.splitlines()
            if line.strip().startswith("Error")}


def store_cohort(url: str, admin: str, tmp_path: Path, put) -> dict[str, list[Path]]:
    """Stores the cohort through STOW-RS at `url` (the gateway's DICOMweb root) and records
    the consents with `put(cid, pid, permit)`; gives the input files by patient id."""
    inputs: dict[str, list[Path]] = {}
    src = tmp_path / "inputs"
    src.mkdir()
    for k, (pid, (name, _, studies)) in enumerate(PATIENTS.items()):
        inputs[pid] = []
        for s in range(studies):
            study = new_uid()
            parts = []
            for n in range(PER_STUDY):
                ds = instance(pid, name, study, n, base=100 * (k + 1) + 10 * s)
                b = to_bytes(ds)
                p = src / f"{pid}-{s}-{n}.dcm"
                p.write_bytes(b)
                inputs[pid].append(p)
                parts.append(b)
            body, ct = multipart(parts)
            r = requests.post(url + "/studies", data=body, timeout=60,
                              headers={"Content-Type": ct, **auth(admin)})
            assert r.status_code == 200, r.text
    for pid, (_, permit, _) in PATIENTS.items():
        if permit is not None:
            put("c-" + pid.lower(), pid, permit)
    return inputs


@pytest.fixture
def cohort(radveil_bin, tmp_path):
    """The gateway with the cohort stored and consents recorded: (gateway, inputs by
    patient id, admin token)."""
    g = Gateway(radveil_bin, tmp_path / "data", "--dev")
    try:
        admin = token(radveil_bin, g.data, "--role", "admin", "--subject", "adm",
                      "--scope", "user/ImagingStudy.cruds", "--scope", "user/Consent.cruds")
        inputs = store_cohort(g.url, admin, tmp_path,
                              lambda cid, pid, permit: put_consent(g, admin, cid, pid, permit))
        yield g, inputs, admin
    finally:
        if g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait()


def export(radveil_bin, data: Path, out: Path, key_file: Path, tmp_path: Path, *extra):
    profile = tmp_path / "site.toml"
    if not profile.exists():
        profile.write_text('options = []\n')
    return run(radveil_bin, "export", "--data", data, "--query", "ModalitiesInStudy=CT",
               "--purpose", "ai-training", "--recipient", "Acme Labs", "--project", "Project X",
               "--profile", profile, "--key-file", key_file, "--out", out, *extra)


def planted_needles() -> list[bytes]:
    """The identifying values planted in the cohort, none of which an export may hold."""
    planted = [pid for pid in PATIENTS] + [n for n, _, _ in PATIENTS.values()]
    needles = [v.encode() for v in planted]
    needles += [n.split("^")[0].encode() for n, _, _ in PATIENTS.values()]
    return needles + [PLANTED_INSTITUTION.encode(), b"19230405", b"ACC"]


def owner(path: Path) -> str:
    """Whose an exported file is, from its Instance Number (kept by de-identification)."""
    n = int(pydicom.dcmread(path).InstanceNumber)
    return list(PATIENTS)[n // 100 - 1]


def test_only_consenting_patients_are_exported_with_lineage_and_notices(
        cohort, radveil_bin, key_file, tmp_path):
    g, inputs, admin = cohort
    data, out = g.data, tmp_path / "out"
    report = tmp_path / "report.json"
    # While the gateway serves the same folder.
    r = export(radveil_bin, data, out, key_file, tmp_path, "--report", report)
    assert r.returncode == 0, r.stderr
    assert "panicked" not in r.stderr
    export_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", export_id), r.stdout
    rep = json.loads(report.read_text())
    c = rep["counts"]
    assert (c["patients"], c["studies"], c["instances"]) == (2, 4, 8), rep
    assert (c["left_out_no_consent"], c["left_out_withdrawn"]) == (1, 1), rep
    assert (c["held_back"], c["failed"]) == (0, 0), rep
    assert "2 patients, 4 studies, 8 instances exported" in r.stderr, r.stderr
    assert "1 patients without consent, 1 who withdrew or refused" in r.stderr, r.stderr

    # Only ALICE's and DAVE's images, de-identified.
    files = dicom_files(out)
    assert len(files) == 8
    owners = [owner(f) for f in files]
    assert sorted(set(owners)) == ["PID-ALICE-QZ11", "PID-DAVE-QZ44"]
    needles = planted_needles()
    originals = {pydicom.dcmread(p).SOPInstanceUID for ps in inputs.values() for p in ps}
    for f in files:
        b = f.read_bytes()
        for n in needles:
            assert n not in b, f"{n!r} in {f.relative_to(out)}"
        ds = pydicom.dcmread(f)
        assert ds.SOPInstanceUID not in originals
        assert ds.PatientIdentityRemoved == "YES"
    # Nothing planted in the report either (counts only).
    for n in needles:
        assert n not in report.read_bytes()
        assert n.decode() not in r.stderr

    # dciodvfy: no error an input did not have.
    dciodvfy = shutil.which("dciodvfy")
    if not dciodvfy:
        missing_peer("peer tool 'dciodvfy'")
    src_errors = error_lines(subprocess.run([dciodvfy, inputs["PID-ALICE-QZ11"][0]],
                                            capture_output=True, text=True).stderr)
    for f in files:
        out_errors = error_lines(subprocess.run([dciodvfy, f], capture_output=True,
                                                text=True).stderr)
        assert out_errors <= src_errors, (f, out_errors - src_errors)

    # The lineage: ALICE's and DAVE's export; none for BOB or CAROL.
    for pid, expected in [("PID-ALICE-QZ11", 4), ("PID-DAVE-QZ44", 4)]:
        r = run(radveil_bin, "lineage", "--data", data, "--patient", pid)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith(export_id), lines
        assert "Acme Labs (Project X)" in lines[0] and "ai-training" in lines[0]
        assert f"{expected} instances" in lines[0], lines
    for pid in ["PID-BOB-QZ22", "PID-CAROL-QZ33"]:
        r = run(radveil_bin, "lineage", "--data", data, "--patient", pid)
        assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)

    # DAVE withdraws; his notice holds exactly his exported files' de-identified UIDs.
    put_consent(g, admin, "c-pid-dave-qz44", "PID-DAVE-QZ44", False)
    notices = tmp_path / "notices"
    r = run(radveil_bin, "lineage", "--data", data, "--patient", "PID-DAVE-QZ44",
            "--withdrawal-notices", notices)
    assert r.returncode == 0, r.stderr
    written = sorted(notices.glob("*.json"))
    assert len(written) == 1, r.stdout
    notice = json.loads(written[0].read_text())
    assert notice["export"] == export_id and notice["purpose"] == "ai-training"
    assert notice["recipient"] == "Acme Labs" and notice["project"] == "Project X"
    dave = {pydicom.dcmread(f).SOPInstanceUID for f, o in zip(files, owners)
            if o == "PID-DAVE-QZ44"}
    dave_studies = {pydicom.dcmread(f).StudyInstanceUID for f, o in zip(files, owners)
                    if o == "PID-DAVE-QZ44"}
    assert {u["instance"] for u in notice["instances"]} == dave
    assert {u["study"] for u in notice["instances"]} == dave_studies
    text = written[0].read_bytes()
    for n in needles:
        assert n not in text
    # ALICE still consents: no notice for her.
    r = run(radveil_bin, "lineage", "--data", data, "--patient", "PID-ALICE-QZ11",
            "--withdrawal-notices", tmp_path / "alice-notices")
    assert r.returncode == 0 and not list((tmp_path / "alice-notices").glob("*.json"))

    # The patients' access logs.
    dave_token = token(radveil_bin, data, "--patient", "PID-DAVE-QZ44")
    log = requests.get(root(g) + "/me/access-log", headers=auth(dave_token), timeout=30)
    assert log.status_code == 200, log.text
    said = [line for line in log.text.splitlines() if "de-identified dataset" in line]
    assert len(said) == 1, log.text
    assert "for Project X (AI training), sent to Acme Labs" in said[0], said
    bob_token = token(radveil_bin, data, "--patient", "PID-BOB-QZ22")
    log = requests.get(root(g) + "/me/access-log", headers=auth(bob_token), timeout=30)
    assert log.status_code == 200 and "de-identified dataset" not in log.text, log.text

    # The gateway went on serving, and its audit trail still verifies.
    assert g.stop() == 0, "".join(g.log)
    r = run(radveil_bin, "audit", "verify", "--data", data)
    assert r.returncode == 0, r.stderr


def test_an_encrypted_export_opens_only_with_the_recipients_key(
        cohort, radveil_bin, key_file, tmp_path):
    g, _, _ = cohort
    openssl = shutil.which("openssl")
    if not openssl:
        missing_peer("peer tool 'openssl'")
    keys = {}
    for who in ["recipient", "other"]:
        k, c = tmp_path / f"{who}.key", tmp_path / f"{who}.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k,
                        "-out", c, "-subj", f"/CN={who}", "-days", "2"],
                       check=True, capture_output=True)
        keys[who] = (k, c)
    out = tmp_path / "sealed"
    r = export(radveil_bin, g.data, out, key_file, tmp_path,
               "--encrypt-to", keys["recipient"][1])
    assert r.returncode == 0, r.stderr
    sealed = dicom_files(out, ".p7m")
    assert len(sealed) == 8
    assert dicom_files(out) == [], "a clear copy was written"
    for f in sealed:
        opened = subprocess.run([openssl, "cms", "-decrypt", "-inform", "DER", "-in", f,
                                 "-inkey", keys["recipient"][0], "-recip", keys["recipient"][1]],
                                capture_output=True)
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout[128:132] == b"DICM"
        assert b"QZALICE" not in opened.stdout and b"QZDAVE" not in opened.stdout
        wrong = subprocess.run([openssl, "cms", "-decrypt", "-inform", "DER", "-in", f,
                                "-inkey", keys["other"][0], "-recip", keys["other"][1]],
                               capture_output=True)
        assert wrong.returncode != 0
        assert not wrong.stdout.startswith(b"\0" * 128 + b"DICM")


def test_a_head_series_is_defaced_in_memory_as_radveil_deid_defaces_it(
        radveil_bin, radveil, key_file, tmp_path):
    """Under clean-recognizable-visual-features, the CT and MR series of an export are
    defaced as the volumes they make, in memory: the real head series, stored in the
    gateway, comes out of `radveil export` with exactly the pixels `radveil deid --option
    clean-recognizable-visual-features` writes for the same files (the same key gives the
    same new SOP Instance UIDs, which pair them), Recognizable Visual Features NO and the
    option's code recorded."""
    import headseries
    from heads import HEADS, fixture

    np = require_module("numpy")
    series = headseries.write_series(fixture(HEADS["real"]), tmp_path / "head")
    g = Gateway(radveil_bin, tmp_path / "data")
    try:
        parts = [p.read_bytes() for p in series]
        for i in range(0, len(parts), 64):
            body, ct = multipart(parts[i:i + 64])
            r = requests.post(g.url + "/studies", data=body, timeout=120,
                              headers={"Content-Type": ct})
            assert r.status_code == 200, r.text
    finally:
        assert g.stop() == 0
    # The site's default for research: opt-out (HEAD-1 said nothing, so is included).
    conf = g.data / "radveil.toml"
    text = conf.read_text()
    if "\n[consent]\n" in text:
        text = text.replace("\n[consent]\n", '\n[consent]\nresearch = "opt-out"\n', 1)
    else:
        text += '\n[consent]\nresearch = "opt-out"\n'
    conf.write_text(text)
    profile = tmp_path / "site.toml"
    profile.write_text('options = ["clean-recognizable-visual-features"]\n')
    out = tmp_path / "out"
    r = run(radveil_bin, "export", "--data", g.data, "--query", "PatientID=HEAD-1",
            "--purpose", "research", "--recipient", "Lab", "--profile", profile,
            "--key-file", key_file, "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"{len(series)} instances exported" in r.stderr, r.stderr
    exported = {pydicom.dcmread(p).SOPInstanceUID: p for p in dicom_files(out)}
    assert len(exported) == len(series)
    r, recs = radveil.deid([series[0].parent], tmp_path / "deid", key_file,
                           "--option", "clean-recognizable-visual-features")
    assert r.returncode == 0, r.stdout + r.stderr
    changed = 0
    for rec in recs:
        want = pydicom.dcmread(rec["output"])
        got = pydicom.dcmread(exported[want.SOPInstanceUID])
        assert got.RecognizableVisualFeatures == "NO"
        assert "113102" in [i.CodeValue for i in got.DeidentificationMethodCodeSequence]
        assert np.array_equal(got.pixel_array, want.pixel_array), rec["output"]
        src = pydicom.dcmread(rec["input"])
        changed += int(not np.array_equal(src.pixel_array, got.pixel_array))
    assert changed > len(series) // 4, "the face was not removed"


def test_a_privacy_officer_exports_from_the_portal_as_the_command_does(
        radveil_bin, key_file, tmp_path):
    """Issue 15, item 3, "the same from the portal for a privacy officer": the site's
    profile and key are the gateway's (--export-profile, --export-key-file); the privacy
    officer chooses studies, purpose and recipient in a form; consent is checked per
    patient at export time, the lineage and each patient's access log record it; a
    clinician may not export."""
    from portal import Portal, sign_in
    profile = tmp_path / "site.toml"
    profile.write_text('options = []\n')
    p = Portal(radveil_bin, tmp_path / "data", "--export-profile", str(profile),
               "--export-key-file", str(key_file))
    try:
        data = p.gateway.data
        admin = token(radveil_bin, data, "--role", "admin", "--subject", "adm",
                      "--scope", "user/ImagingStudy.cruds", "--scope", "user/Consent.cruds")
        g = p.gateway
        store_cohort(p.url, admin, tmp_path,
                     lambda cid, pid, permit: put_consent(g, admin, cid, pid, permit))
        page = p.base + "/portal/privacy/export"
        # A clinician may read images but not export them.
        dr = sign_in(p.base, "drsmith")
        assert dr.get(page, timeout=30).status_code == 403
        assert "Research export" not in dr.get(p.base + "/portal", timeout=30).text
        priya = sign_in(p.base, "priya")
        form = priya.get(page, timeout=30)
        assert form.status_code == 200 and "Research export" in form.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        fields = {"csrf": csrf, "purpose": "ai-training", "recipient": "Acme Labs",
                  "project": "Project X", "modality": "CT", "from": "2024-01-01",
                  "to": "2024-12-31"}
        # Refused forms: out-of-date token, no recipient, a date that is none.
        assert priya.post(page, data={**fields, "csrf": "x"}, timeout=30).status_code == 403
        assert priya.post(page, data={**fields, "recipient": " "}, timeout=30).status_code == 400
        assert priya.post(page, data={**fields, "from": "soon"}, timeout=30).status_code == 400
        assert not (data / "exports").exists() or not any((data / "exports").iterdir())
        r = priya.post(page, data=fields, timeout=30)
        assert r.status_code == 200 and r.history and r.history[0].status_code == 303, r.text[:300]
        import time
        deadline = time.monotonic() + 180
        while "running" in r.text and time.monotonic() < deadline:
            time.sleep(0.5)
            r = priya.get(page, timeout=30)
        assert "done: export" in r.text, r.text
        export_id = re.search(r"done: export ([0-9a-f]{32})", r.text).group(1)
        assert ("2 patients, 4 studies, 8 instances; left out: 1 patients without consent, "
                "1 who withdrew or refused") in r.text
        # The folder and its report, beside it.
        reports = sorted((data / "exports").glob("*.json"))
        assert len(reports) == 1
        rep = json.loads(reports[0].read_text())
        assert rep["export"] == export_id and rep["purpose"] == "ai-training"
        out = reports[0].with_suffix("")
        files = dicom_files(out)
        assert len(files) == 8
        assert sorted({owner(f) for f in files}) == ["PID-ALICE-QZ11", "PID-DAVE-QZ44"]
        needles = planted_needles()
        for f in [*files, reports[0]]:
            b = f.read_bytes()
            for n in needles:
                assert n not in b, f"{n!r} in {f.name}"
        assert (out.stat().st_mode & 0o077) == 0 and ((data / "exports").stat().st_mode & 0o077) == 0
        # The lineage, as for the command.
        r = run(radveil_bin, "lineage", "--data", data, "--patient", "PID-ALICE-QZ11")
        assert r.returncode == 0 and r.stdout.startswith(export_id), (r.stdout, r.stderr)
        assert "Acme Labs (Project X)" in r.stdout and "ai-training" in r.stdout
        r = run(radveil_bin, "lineage", "--data", data, "--patient", "PID-BOB-QZ22")
        assert r.returncode == 0 and r.stdout == ""
        # Alice reads it in her access log; Bob (no consent) does not.
        alice = token(radveil_bin, data, "--patient", "PID-ALICE-QZ11")
        log = requests.get(p.base + "/me/access-log", headers=auth(alice), timeout=30).text
        said = [line for line in log.splitlines() if "de-identified dataset" in line]
        assert len(said) == 1 and "for Project X (AI training), sent to Acme Labs" in said[0], log
        bob = token(radveil_bin, data, "--patient", "PID-BOB-QZ22")
        log = requests.get(p.base + "/me/access-log", headers=auth(bob), timeout=30).text
        assert "de-identified dataset" not in log
        # Encrypted to a recipient's certificate pasted in the form: nothing in the clear.
        openssl = shutil.which("openssl")
        if not openssl:
            missing_peer("peer tool 'openssl'")
        k, c = tmp_path / "recipient.key", tmp_path / "recipient.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k,
                        "-out", c, "-subj", "/CN=recipient", "-days", "2"],
                       check=True, capture_output=True)
        assert priya.post(page, data={**fields, "certificate": "not a certificate"},
                          timeout=30).status_code == 400
        r = priya.post(page, data={**fields, "certificate": c.read_text()}, timeout=30)
        deadline = time.monotonic() + 180
        while "running" in r.text and time.monotonic() < deadline:
            time.sleep(0.5)
            r = priya.get(page, timeout=30)
        assert r.text.count("done: export") == 2, r.text
        second = [d for d in (data / "exports").iterdir() if d.is_dir() and d != out]
        assert len(second) == 1
        assert dicom_files(second[0]) == [] and len(dicom_files(second[0], ".p7m")) == 8
        opened = subprocess.run([openssl, "cms", "-decrypt", "-inform", "DER", "-in",
                                 dicom_files(second[0], ".p7m")[0], "-inkey", k, "-recip", c],
                                capture_output=True)
        assert opened.returncode == 0 and opened.stdout[128:132] == b"DICM", opened.stderr
        # After a restart the page still lists both, from their reports.
        p.restart()
        priya = sign_in(p.base, "priya")
        listed = priya.get(page, timeout=30).text
        assert listed.count("done: export") == 2 and export_id in listed, listed
        assert "(before the server last started)" in listed
        # The audit trail verifies, with the exports in it.
        assert p.gateway.stop() == 0
        r = run(radveil_bin, "audit", "verify", "--data", data)
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
