"""The patient portal over HTTP (issue 15, item 1): signing in with the real OpenID provider
(npm oidc-provider, authorization code + PKCE), the session cookie, the study list of the
signed-in patient only, the access log in words with an access made by a clinician a moment
earlier, the session standing for the token on DICOMweb reads (what the viewer uses) and
never for writes, CSRF on sign-out, and the portal's pages being audited."""

from __future__ import annotations

import re

import pytest

from gateway import auth, new_uid, planted, requests, token
from portal import Portal, sign_in


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
