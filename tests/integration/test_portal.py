"""The patient portal over HTTP (issue 15, item 1): signing in with the real OpenID provider
(npm oidc-provider, authorization code + PKCE), the session cookie, the study list of the
signed-in patient only, the access log in words with an access made by a clinician a moment
earlier, the session standing for the token on DICOMweb reads (what the viewer uses) and
never for writes, CSRF on sign-out, and the portal's pages being audited."""

from __future__ import annotations

import re
import subprocess

import pytest

from gateway import auth, new_uid, planted, requests, token
from portal import Portal, sign_in
from test_audit import fhir_schema  # noqa: F401 (fixture)


@pytest.fixture
def portal(radveil_bin, tmp_path):
    p = Portal(radveil_bin, tmp_path / "data")
    yield p
    p.stop()


def stow(p: Portal, patient: str, description: str, modality="CT", body_part="HEAD") -> str:
    """Stores a two-instance study of `patient` with the admin token; gives its UID."""
    from gateway import multipart
    import io
    study = new_uid()
    blobs = []
    for i in (1, 2):
        ds = planted(i, study, patient=patient)
        ds.StudyDescription = description
        ds.Modality = modality
        ds.BodyPartExamined = body_part
        ds.StudyDate = "20260303"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    body, ctype = multipart(blobs)
    r = requests.post(f"{p.url}/studies", data=body, timeout=60,
                      headers=auth(p.admin, **{"Content-Type": ctype}))
    assert r.status_code == 200, r.text
    return study


def test_a_patient_signs_in_and_sees_only_their_studies(portal):
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    theirs = stow(portal, "PID-PORTAL-B", "MR KNEE BOB", modality="MR", body_part="KNEE")
    s = sign_in(portal.base, "alice")
    page = s.get(portal.base + "/portal", timeout=30)
    assert page.status_code == 200
    assert "CT HEAD ALICE" in page.text
    assert "3 March 2026" in page.text and "HEAD" in page.text
    assert "MR KNEE BOB" not in page.text and theirs not in page.text
    # Strict security headers; the session cookie is HttpOnly and SameSite=Strict.
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.headers["Cache-Control"] == "no-store"
    # The other patient sees only theirs.
    b = sign_in(portal.base, "bob")
    other = b.get(portal.base + "/portal", timeout=30).text
    assert "MR KNEE BOB" in other and "CT HEAD ALICE" not in other


def test_the_session_stands_for_the_token_on_reads_only(portal):
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    theirs = stow(portal, "PID-PORTAL-B", "MR KNEE BOB")
    s = sign_in(portal.base, "alice")
    # DICOMweb with the cookie alone (the viewer's requests): the patient's own study...
    found = s.get(f"{portal.url}/studies", headers={"Accept": "application/dicom+json"},
                  timeout=30)
    assert found.status_code == 200
    assert {r["0020000D"]["Value"][0] for r in found.json()} == {mine}
    assert s.get(f"{portal.url}/studies/{mine}/metadata", timeout=30).status_code == 200
    # ...never another's (as missing), never a write.
    assert s.get(f"{portal.url}/studies/{theirs}/metadata", timeout=30).status_code == 404
    assert s.delete(f"{portal.url}/studies/{mine}", timeout=30).status_code == 401
    # Without the cookie: nothing.
    assert requests.get(f"{portal.url}/studies/{mine}/metadata",
                        timeout=30).status_code == 401
    # A forged or stale cookie: nothing.
    forged = requests.get(f"{portal.url}/studies/{mine}/metadata", timeout=30,
                          cookies={"radveil-session": "A" * 43})
    assert forged.status_code == 401


def test_sign_out_needs_the_form_value_and_ends_the_session(portal):
    s = sign_in(portal.base, "alice")
    page = s.get(portal.base + "/portal", timeout=30).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    # Another site's form (no CSRF value, or a wrong one) does not sign the user out.
    assert s.post(portal.base + "/portal/logout", data={"csrf": "x"},
                  timeout=30).status_code == 403
    assert "Sign out" in s.get(portal.base + "/portal", timeout=30).text
    r = s.post(portal.base + "/portal/logout", data={"csrf": csrf}, timeout=30)
    assert r.status_code == 200 and "Sign in" in r.text
    # The browser is told to forget the origin's storage (a viewer token) and cache.
    assert r.history[0].headers["Clear-Site-Data"] == '"cache", "storage"'
    assert s.get(f"{portal.url}/studies", timeout=30).status_code == 401


def test_a_sign_in_not_started_here_is_refused(portal):
    s = requests.Session()
    r = s.get(portal.base + "/portal/callback?code=x&state=y", timeout=30)
    assert r.status_code == 400
    # A started sign-in whose state does not match.
    s.get(portal.base + "/portal/login", timeout=30, allow_redirects=False)
    r = s.get(portal.base + "/portal/callback?code=x&state=not-it", timeout=30)
    assert r.status_code == 400
    assert "radveil-session" not in s.cookies


def test_the_access_log_lists_a_clinicians_access_in_words(portal, radveil_bin):
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    # A clinician (through the provider) views the study a moment earlier.
    dr = sign_in(portal.base, "drsmith")
    assert dr.get(f"{portal.url}/studies/{mine}/metadata", timeout=30).status_code == 200
    # A break-glass read by a dev clinician token.
    bg = token(radveil_bin, portal.gateway.data, "--role", "clinician",
               "--scope", "patient/ImagingStudy.rs", "--patient", "PID-OTHER")
    r = requests.get(f"{portal.url}/studies/{mine}/metadata", timeout=30,
                     headers=auth(bg, **{"Break-Glass-Reason": "unconscious in ED"}))
    assert r.status_code == 200
    s = sign_in(portal.base, "alice")
    log = s.get(portal.base + "/portal/access-log", timeout=30)
    assert log.status_code == 200
    # In plain words, newest first: the break-glass read, marked, then the clinician's.
    assert "Dr A. Smith (clinician) viewed your CT study of 3 March 2026" in log.text
    assert "emergency access" in log.text and "unconscious in ED" in log.text
    assert "Emergency access (break-glass)" in log.text
    assert log.text.index("unconscious in ED") < log.text.index("Dr A. Smith")
    # Bob's log says nothing of Alice's study.
    b = sign_in(portal.base, "bob")
    assert "CT study of 3 March 2026" not in b.get(portal.base + "/portal/access-log",
                                                   timeout=30).text
    # Reading the pages is audited: the access log read is in the patient's own log.
    again = s.get(portal.base + "/portal/access-log", timeout=30).text
    assert "read the record of who has seen your images" in again


def night_around_now(offset_hours: int = 0) -> tuple[str, ...]:
    """Serve arguments whose night hours hold the present moment (two hours either side),
    written at a UTC offset of `offset_hours`."""
    import datetime as dt
    local = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=offset_hours)
    a, b = local - dt.timedelta(hours=2), local + dt.timedelta(hours=2)
    return ("--night-hours", f"{a:%H:%M}-{b:%H:%M}", "--utc-offset", f"{offset_hours:+03d}:00")


def test_staff_reading_in_the_sites_night_hours_is_marked_and_stores_are_not(portal, radveil_bin):
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    # Daytime (a night that ends two hours before now, at the site's offset): nothing marked.
    import datetime as dt
    early = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5)
    day = ("--night-hours", f"{early - dt.timedelta(hours=9):%H:%M}-{early - dt.timedelta(hours=7):%H:%M}",
           "--utc-offset", "+05:00")
    portal.restart(extra=day)
    dr = sign_in(portal.base, "drsmith")
    assert dr.get(f"{portal.url}/studies/{mine}/metadata", timeout=30).status_code == 200
    alice = sign_in(portal.base, "alice")
    assert "Night-time access" not in alice.get(portal.base + "/portal/access-log", timeout=30).text
    audrey = sign_in(portal.base, "audrey")
    assert "Night-time access" not in audrey.get(portal.base + "/portal/audit?unusual=on",
                                                 timeout=30).text
    # The site's night now (written at UTC-3): marks follow the site's hours as set now, so
    # both of the clinician's reads (the earlier one too) are marked for the patient and the
    # auditor; the admin's store (routine at any hour) and the patient's own reads are not.
    portal.restart(extra=night_around_now(-3))
    dr = sign_in(portal.base, "drsmith")
    assert dr.get(f"{portal.url}/studies/{mine}/metadata", timeout=30).status_code == 200
    alice = sign_in(portal.base, "alice")
    assert alice.get(f"{portal.url}/studies/{mine}/metadata", timeout=30).status_code == 200
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    entries = re.findall(r"<li[^>]*>(.*?)</li>", log.split('<ol class="log"')[1])
    marked = [e for e in entries if "Night-time access" in e]
    assert len(marked) == 2 and all(e.startswith("Dr A. Smith") for e in marked), entries
    assert any(e.startswith("You viewed") for e in entries)
    assert any(e.startswith("An administrator added") for e in entries)
    audrey = sign_in(portal.base, "audrey")
    rows = audrey.get(portal.base + "/portal/audit?unusual=on", timeout=30).text.split("<tbody>")[1]
    assert "Night-time access" in rows and "<td>store" not in rows
    # Hours that are no clock stop the start, naming the setting.
    portal.gateway.stop()
    bad = subprocess.run([str(radveil_bin), "serve", "--data", str(portal.gateway.data),
                          "--listen", "127.0.0.1:0", *portal.args, "--night-hours", "22-6"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "night" in bad.stderr.lower()


def form_csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_a_patient_withdraws_ai_training_consent(portal, radveil_bin):
    s = sign_in(portal.base, "alice")
    page = s.get(portal.base + "/portal/consent", timeout=30)
    assert page.status_code == 200
    # The site's default (opt-in): nothing said yet, so not used until the patient says yes.
    assert page.text.count("You have not said yet: until you say yes") == 3
    csrf = form_csrf(page.text)
    # Without the form's CSRF value nothing changes.
    r = s.post(portal.base + "/portal/consent", timeout=30,
               data={"csrf": "forged", "research": "yes", "ai-training": "yes"})
    assert r.status_code == 403
    r = s.post(portal.base + "/portal/consent", timeout=30,
               data={"csrf": csrf, "research": "yes", "ai-training": "yes", "commercial": "no"})
    assert r.status_code == 200 and r.url.endswith("/portal/consent")
    assert "You said yes on" in r.text and "You said no on" in r.text
    # Withdraw AI training only.
    r = s.post(portal.base + "/portal/consent", timeout=30,
               data={"csrf": csrf, "research": "yes", "ai-training": "no", "commercial": "no"})
    assert r.status_code == 200
    ai = r.text.split("Training AI")[1].split("</fieldset>")[0]
    assert "You said no on" in ai and 'value="no" checked' in ai
    research = r.text.split("<legend>Research</legend>")[1].split("</fieldset>")[0]
    assert "You said yes on" in research
    # The same consent over FHIR (a privacy officer's token): version 2, AI training denied.
    po = token(radveil_bin, portal.gateway.data, "--role", "privacy-officer",
               "--scope", "user/Consent.rs")
    bundle = requests.get(portal.base + "/fhir/Consent?patient=PID-PORTAL-A", timeout=30,
                          headers=auth(po, Accept="application/fhir+json"))
    assert bundle.status_code == 200, bundle.text
    consent = bundle.json()["entry"][0]["resource"]
    assert consent["meta"]["versionId"] == "2"
    denied = [p for p in consent["provision"]["provision"] if p["type"] == "deny"]
    assert any(c["code"] == "MLTRAINING" for p in denied for pu in [p.get("purpose", [])]
               for c in pu), consent["provision"]
    # Each change is in the patient's access log, in words.
    log = s.get(portal.base + "/portal/access-log", timeout=30).text
    assert "recorded a change to your consent: version 2: ai-training: withdrawn" in log
    # "Remove my images from future research and AI-training datasets".
    r = s.post(portal.base + "/portal/consent/withdraw", data={"csrf": csrf}, timeout=30)
    assert r.status_code == 200
    assert "You said yes" not in r.text and r.text.count("You said no on") == 3
    # Another patient's page is untouched.
    b = sign_in(portal.base, "bob")
    assert b.get(portal.base + "/portal/consent",
                 timeout=30).text.count("You have not said yet") == 3


def make_link(s, base: str, study: str, **form) -> str:
    page = s.get(f"{base}/portal/share?study={study}", timeout=30)
    assert page.status_code == 200, page.text
    r = s.post(base + "/portal/share", timeout=30,
               data={"csrf": form_csrf(page.text), "study": study, **form})
    assert r.status_code == 200, r.text
    return re.search(r'id="link" type="text" readonly value="([^"]+)"', r.text).group(1)


def test_a_share_link_shows_one_study_until_revoked(portal):
    shared = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    other = stow(portal, "PID-PORTAL-A", "CT CHEST ALICE")
    alice = sign_in(portal.base, "alice")
    link = make_link(alice, portal.base, shared)
    assert link.startswith(portal.base + "/s/")
    # Someone without an account opens it: a page on to the viewer, and a cookie.
    friend = requests.Session()
    r = friend.get(link, timeout=30)
    assert r.status_code == 200 and f"StudyInstanceUIDs={shared}" in r.text
    assert "radveil-share" in friend.cookies
    # They see that study, and nothing else of hers.
    found = friend.get(f"{portal.url}/studies", timeout=30,
                       headers={"Accept": "application/dicom+json"})
    assert [x["0020000D"]["Value"][0] for x in found.json()] == [shared]
    by_patient = friend.get(f"{portal.url}/studies?PatientID=PID-PORTAL-A", timeout=30,
                            headers={"Accept": "application/dicom+json"})
    assert [x["0020000D"]["Value"][0] for x in by_patient.json()] == [shared]
    assert friend.get(f"{portal.url}/studies/{shared}/metadata", timeout=30).status_code == 200
    assert friend.get(f"{portal.url}/studies/{other}/metadata", timeout=30).status_code == 404
    assert friend.get(f"{portal.url}/studies/{other}/series", timeout=30,
                      headers={"Accept": "application/dicom+json"}).json() in ([], None)
    # Not the portal, not the patient's own routes, not the consent, never a write.
    assert "CT CHEST ALICE" not in friend.get(portal.base + "/portal", timeout=30).text
    assert friend.get(portal.base + "/me/access-log", timeout=30).status_code == 401
    assert friend.get(portal.base + "/fhir/Consent?patient=PID-PORTAL-A",
                      timeout=30).status_code == 401
    assert friend.delete(f"{portal.url}/studies/{shared}", timeout=30).status_code == 401
    # The patient's access log says who did what.
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "You made a link (good until" in log
    assert "Someone you shared a link with opened the link to your CT study of 3 March 2026" in log
    assert "Someone you shared a link with viewed your CT study of 3 March 2026" in log
    # She stops it: the friend's session ends, the link no longer opens.
    page = alice.get(portal.base + "/portal/shares", timeout=30).text
    link_id = re.search(r'name="id" value="([0-9a-f]+)"', page).group(1)
    r = alice.post(portal.base + "/portal/shares/revoke", timeout=30,
                   data={"csrf": form_csrf(page), "id": link_id})
    assert r.status_code == 200 and "Stopped on" in r.text
    assert friend.get(f"{portal.url}/studies/{shared}/metadata", timeout=30).status_code == 401
    assert requests.get(link, timeout=30).status_code == 410
    # Bob cannot stop (or see) Alice's links, nor share her study.
    bob = sign_in(portal.base, "bob")
    assert link_id not in bob.get(portal.base + "/portal/shares", timeout=30).text
    assert bob.get(f"{portal.base}/portal/share?study={shared}", timeout=30).status_code == 404


def test_a_clinician_shares_a_patients_study_and_either_of_them_stops_it(portal):
    """Issue 15, item 4: "a patient (or clinician) makes a link for one study"."""
    shared = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    dr = sign_in(portal.base, "drsmith")
    assert "Share a study" in dr.get(portal.base + "/portal", timeout=30).text
    found = dr.get(portal.base + "/portal/patient?patient=PID-PORTAL-A", timeout=30)
    assert found.status_code == 200 and "CT HEAD ALICE" in found.text
    assert f"/portal/share?study={shared}" in found.text
    assert dr.get(f"{portal.base}/portal/share?study={new_uid()}", timeout=30).status_code == 404
    link = make_link(dr, portal.base, shared, days="3")
    friend = requests.Session()
    assert friend.get(link, timeout=30).status_code == 200
    assert friend.get(f"{portal.url}/studies/{shared}/metadata", timeout=30).status_code == 200
    # Listed for the clinician (with the Patient ID) and for the patient (with its maker).
    mine = dr.get(portal.base + "/portal/shares", timeout=30).text
    assert "Links you made" in mine and "PID-PORTAL-A" in mine and "Works until" in mine
    alice = sign_in(portal.base, "alice")
    hers = alice.get(portal.base + "/portal/shares", timeout=30).text
    assert "by Dr A. Smith (clinician)" in hers
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "Dr A. Smith (clinician) made a link (good until" in log, log
    assert "Someone Dr A. Smith (clinician) shared a link with viewed your CT study" in log, log
    assert "Dr A. Smith (clinician) searched the records and found your CT study" in log, log
    # Neither a patient nor an auditor finds other patients' studies to share.
    assert alice.get(portal.base + "/portal/patient?patient=PID-PORTAL-B",
                     timeout=30).status_code == 403
    audrey = sign_in(portal.base, "audrey")
    assert audrey.get(portal.base + "/portal/patient?patient=PID-PORTAL-A",
                      timeout=30).status_code == 403
    assert "PID-PORTAL-A" not in audrey.get(portal.base + "/portal/shares", timeout=30).text
    # The clinician stops it: the friend's session ends, the link no longer opens.
    link_id = re.search(r'name="id" value="([0-9a-f]+)"', mine).group(1)
    r = dr.post(portal.base + "/portal/shares/revoke", timeout=30,
                data={"csrf": form_csrf(mine), "id": link_id})
    assert r.status_code == 200 and "Stopped on" in r.text
    assert friend.get(f"{portal.url}/studies/{shared}/metadata", timeout=30).status_code == 401
    assert requests.get(link, timeout=30).status_code == 410
    # Another of the clinician's links, stopped by the patient.
    link = make_link(dr, portal.base, shared)
    hers = alice.get(portal.base + "/portal/shares", timeout=30).text
    live = re.findall(r'name="id" value="([0-9a-f]+)"', hers)
    assert len(live) == 1
    r = alice.post(portal.base + "/portal/shares/revoke", timeout=30,
                   data={"csrf": form_csrf(hers), "id": live[0]})
    assert r.status_code == 200 and "Stopped on" in r.text
    assert requests.get(link, timeout=30).status_code == 410
    # A patient's own link is not the clinician's to stop.
    own = make_link(alice, portal.base, shared)
    hers = alice.get(portal.base + "/portal/shares", timeout=30).text
    own_id = re.findall(r'name="id" value="([0-9a-f]+)"', hers)[0]
    mine = dr.get(portal.base + "/portal/shares", timeout=30).text
    assert own_id not in mine
    assert dr.post(portal.base + "/portal/shares/revoke", timeout=30,
                   data={"csrf": form_csrf(mine), "id": own_id}).status_code == 404
    assert requests.get(own, timeout=30).status_code == 200


def test_a_share_link_with_a_pin_locks_after_five_wrong_ones(portal):
    shared = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    alice = sign_in(portal.base, "alice")
    link = make_link(alice, portal.base, shared, pin="482916", days="1")
    friend = requests.Session()
    r = friend.get(link, timeout=30)
    assert r.status_code == 200 and 'name="pin"' in r.text and "radveil-share" not in friend.cookies
    r = friend.post(link, data={"pin": "482916"}, timeout=30)
    assert r.status_code == 200 and "radveil-share" in friend.cookies
    stranger = requests.Session()
    for left in (4, 3, 2, 1):
        r = stranger.post(link, data={"pin": "000000"}, timeout=30)
        assert r.status_code == 403 and f"{left} tr" in r.text
    assert stranger.post(link, data={"pin": "000000"}, timeout=30).status_code == 403
    r = stranger.post(link, data={"pin": "482916"}, timeout=30)
    assert r.status_code == 403 and "locked" in r.text and "radveil-share" not in stranger.cookies


def test_a_share_link_ends_when_it_expires(portal):
    import shutil as _shutil
    if not _shutil.which("faketime"):
        from conftest import missing_peer
        missing_peer("faketime (Debian package faketime; tools/setup-peers)")
    shared = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    alice = sign_in(portal.base, "alice")
    link = make_link(alice, portal.base, shared, days="1")
    assert requests.get(link, timeout=30).status_code == 200
    # The same gateway two days later (its clock moved by libfaketime).
    portal.restart(wrap=("faketime", "+2 days"))
    r = requests.get(link, timeout=30)
    assert r.status_code == 410 and "ended" in r.text


def test_the_auditor_searches_the_trail_and_sees_unusual_access(portal, radveil_bin):
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    bg = token(radveil_bin, portal.gateway.data, "--role", "clinician",
               "--scope", "patient/ImagingStudy.rs", "--patient", "PID-OTHER")
    assert requests.get(f"{portal.url}/studies/{mine}/metadata", timeout=30,
                        headers=auth(bg, **{"Break-Glass-Reason": "trauma call"})).status_code == 200
    audrey = sign_in(portal.base, "audrey")
    home = audrey.get(portal.base + "/portal", timeout=30).text
    assert "/portal/audit" in home and "/portal/privacy" not in home
    page = audrey.get(portal.base + "/portal/audit?patient=PID-PORTAL-A", timeout=30)
    assert page.status_code == 200
    assert "PID-PORTAL-A" in page.text and "retrieve" in page.text and "store" in page.text
    unusual = audrey.get(portal.base + "/portal/audit?unusual=on", timeout=30).text
    assert "Break-glass" in unusual and "trauma call" in unusual
    rows = unusual.split("<tbody>")[1]
    assert "<td>store" not in rows and "<td>retrieve" in rows
    # A bad filter is refused in words, naming no value.
    bad = audrey.get(portal.base + "/portal/audit?since=yesterday", timeout=30)
    assert bad.status_code == 400 and "yesterday" not in bad.text
    # Patients and other staff may not.
    assert sign_in(portal.base, "alice").get(portal.base + "/portal/audit",
                                             timeout=30).status_code == 403
    assert sign_in(portal.base, "priya").get(portal.base + "/portal/audit",
                                             timeout=30).status_code == 403
    # The auditor's reads are audit events themselves.
    again = audrey.get(portal.base + "/portal/audit?action=audit-read", timeout=30).text
    assert "Audrey Auditor" in again


def test_the_privacy_officer_sees_consents_and_withdrawals(portal):
    alice = sign_in(portal.base, "alice")
    csrf = form_csrf(alice.get(portal.base + "/portal/consent", timeout=30).text)
    alice.post(portal.base + "/portal/consent", timeout=30,
               data={"csrf": csrf, "research": "yes", "ai-training": "yes", "commercial": "no"})
    alice.post(portal.base + "/portal/consent/withdraw", data={"csrf": csrf}, timeout=30)
    priya = sign_in(portal.base, "priya")
    page = priya.get(portal.base + "/portal/privacy?patient=PID-PORTAL-A", timeout=30)
    assert page.status_code == 200
    text = re.sub(r"<[^>]+>", " ", page.text)
    assert "Consent history" in text and "portal (patient)" in text
    assert re.search(r"\b2\s+\S+\s+portal \(patient\)\s+no since", text), text
    assert sign_in(portal.base, "bob").get(portal.base + "/portal/privacy",
                                           timeout=30).status_code == 403
    # Alice's access log names the privacy office's look at her records, and says what the
    # consent reads were (her own, over FHIR) rather than "searched the records".
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "Priya Privacy (privacy officer) searched the records" in log
    mine = token(portal.radveil_bin, portal.gateway.data, "--patient", "PID-PORTAL-A",
                 "--scope", "patient/Consent.rs")
    r = requests.get(portal.base + "/fhir/Consent?patient=PID-PORTAL-A", timeout=30,
                     headers=auth(mine, Accept="application/fhir+json"))
    assert r.status_code == 200, r.text
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "You read your consent choices" in log


def test_the_portal_links_the_patients_copy_of_their_images(portal):
    import io as _io
    import zipfile
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    s = sign_in(portal.base, "alice")
    page = s.get(portal.base + "/portal", timeout=30).text
    assert 'href="/me/download"' in page and f'href="/me/download?study={mine}"' in page
    # The link works with the session cookie alone.
    r = s.get(f"{portal.base}/me/download?study={mine}", timeout=60)
    assert r.status_code == 200, r.text[:200]
    names = zipfile.ZipFile(_io.BytesIO(r.content)).namelist()
    assert sum(n.endswith(".dcm") for n in names) == 2


def careteam(cid: str, pid: str, members: list[str], status: str = "active") -> dict:
    return {
        "resourceType": "CareTeam", "id": cid, "status": status, "name": "Neurology",
        "subject": {"identifier": {"value": pid}},
        "participant": [{"role": [{"text": "attending"}],
                         "member": {"identifier": {"value": m}, "display": "a clinician"}}
                        for m in members],
    }


def test_a_clinician_outside_the_patients_care_team_is_marked(portal, radveil_bin, tmp_path,
                                                               fhir_schema):
    """Issue 15, item 1: "unusual access (someone outside the care team …) marked"; the care
    team is the EHR's (FHIR CareTeam, PUT by its service), and a patient without one is not
    marked."""
    import json
    from conftest import require_module
    jsonschema = require_module("jsonschema")
    alices = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    bobs = stow(portal, "PID-PORTAL-B", "CT HEAD BOB")
    data = portal.gateway.data
    ehr = token(radveil_bin, data, "--subject", "ehr-interface", "--scope", "system/CareTeam.ru")
    url = f"{portal.base}/fhir/CareTeam/ct-alice"
    fhir = {"Content-Type": "application/fhir+json"}
    r = requests.put(url, json=careteam("ct-alice", "PID-PORTAL-A", ["drsmith"]), timeout=30,
                     headers=auth(ehr, **fhir))
    assert r.status_code == 201, r.text
    # What it answers is a FHIR R4 CareTeam (the schema can fail: a bad status does).
    full = json.loads(fhir_schema.read_text())
    schema = {"$schema": full["$schema"], "definitions": full["definitions"],
              "$ref": "#/definitions/CareTeam"}
    v = jsonschema.validators.validator_for(full)(schema)
    assert [e.message for e in v.iter_errors(r.json())] == []
    assert list(v.iter_errors({**r.json(), "status": "maybe"}))
    got = requests.get(url, timeout=30, headers=auth(ehr))
    assert got.status_code == 200 and got.json()["participant"][0]["member"]["identifier"][
        "value"] == "drsmith"
    # Refused: a clinician or a patient writing it, a team by reference, a body for another id.
    dr_token = token(radveil_bin, data, "--role", "clinician", "--scope", "user/*.cruds")
    pt_token = token(radveil_bin, data, "--patient", "PID-PORTAL-A", "--scope", "patient/*.cruds")
    for t in (dr_token, pt_token):
        assert requests.put(url, json=careteam("ct-alice", "PID-PORTAL-A", ["x"]), timeout=30,
                            headers=auth(t, **fhir)).status_code == 403
    by_ref = careteam("ct-alice", "PID-PORTAL-A", [])
    by_ref["participant"] = [{"member": {"reference": "Practitioner/1"}}]
    assert requests.put(url, json=by_ref, timeout=30, headers=auth(ehr, **fhir)).status_code == 422
    assert requests.put(url, json=careteam("other", "PID-PORTAL-A", []), timeout=30,
                        headers=auth(ehr, **fhir)).status_code == 400
    # Dr Smith (on Alice's team) and Dr Jones (not) read Alice's study; Dr Jones reads Bob's
    # (who has no care team recorded).
    smith = sign_in(portal.base, "drsmith")
    jones = sign_in(portal.base, "drjones")
    assert smith.get(f"{portal.url}/studies/{alices}/metadata", timeout=30).status_code == 200
    assert jones.get(f"{portal.url}/studies/{alices}/metadata", timeout=30).status_code == 200
    assert jones.get(f"{portal.url}/studies/{bobs}/metadata", timeout=30).status_code == 200
    alice = sign_in(portal.base, "alice")
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    entries = re.findall(r"<li[^>]*>(.*?)</li>", log.split('<ol class="log"')[1])
    marked = [e for e in entries if "Someone outside your care team" in e]
    assert len(marked) == 1 and marked[0].startswith("Dr B. Jones"), entries
    assert any(e.startswith("Dr A. Smith") and "outside" not in e for e in entries)
    assert any("recorded who is on your care team: 1 member" in e for e in entries), entries
    bob = sign_in(portal.base, "bob")
    assert "outside your care team" not in bob.get(portal.base + "/portal/access-log",
                                                   timeout=30).text
    audrey = sign_in(portal.base, "audrey")
    rows = audrey.get(portal.base + "/portal/audit?unusual=on", timeout=30).text.split("<tbody>")[1]
    outside = [r for r in rows.split("<tr") if "Outside the care team" in r]
    assert len(outside) == 1 and "Dr B. Jones" in outside[0], rows
    # The team ends (a new version, a second later than the reads: times are to the
    # second). Reads are judged against the teams in force when they happened: Dr Jones's
    # earlier read stays marked, his read now is not (no active team: nothing is known).
    import time
    time.sleep(1.1)
    r = requests.put(url, json=careteam("ct-alice", "PID-PORTAL-A", ["drsmith"], "inactive"),
                     timeout=30, headers=auth(ehr, **fhir))
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    time.sleep(1.1)
    assert jones.get(f"{portal.url}/studies/{alices}/metadata", timeout=30).status_code == 200
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    entries = re.findall(r"<li[^>]*>(.*?)</li>", log.split('<ol class="log"')[1])
    jones_reads = [e for e in entries if e.startswith("Dr B. Jones")]
    assert len(jones_reads) == 2, entries
    assert "outside your care team" not in jones_reads[0] and "outside your care team" in jones_reads[1]
    # Nothing of the team at rest in the clear.
    for f in data.glob("careteam.db*"):
        raw = f.read_bytes()
        for secret in (b"PID-PORTAL-A", b"drsmith", b"ct-alice"):
            assert secret not in raw, (f.name, secret)
