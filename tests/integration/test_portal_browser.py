"""The portal in a real browser (issue 15, Tests): Debian's Chromium, headless, driven by
WebDriver, signs in as a patient through the real OpenID provider's login page, sees exactly
their studies, opens one in OHIF (a frame renders: the canvas is not blank), reads the access
log (an access made by a clinician's token a moment earlier is listed), withdraws AI-training
consent; as a second patient sees none of the first's studies, and the first's study does
not open in the viewer for them. The portal's pages pass axe-core (WCAG 2.0/2.1 A and AA)
with no violation at all; screenshots of each page are kept as test artefacts
(target/test-artefacts/browser/portal-*.png)."""

from __future__ import annotations

import io
import time

import pytest

from browser import axe, browser, painted, require_viewer, shot  # noqa: F401 (fixture)
from gateway import auth, multipart, new_uid, planted, requests, token
from portal import Portal

pytest.importorskip  # (keeps the import list honest for linters)


def stow(p: Portal, patient: str, description: str) -> str:
    study = new_uid()
    blobs = []
    for i in (1, 2):
        ds = planted(i, study, patient=patient)
        ds.StudyDescription = description
        ds.BodyPartExamined = "HEAD"
        ds.StudyDate = "20260303"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    body, ctype = multipart(blobs)
    r = requests.post(f"{p.url}/studies", data=body, timeout=60,
                      headers=auth(p.admin, **{"Content-Type": ctype}))
    assert r.status_code == 200, r.text
    return study


@pytest.fixture
def portal(radveil_bin, key_file, tmp_path):
    viewer = require_viewer()
    profile = tmp_path / "site.toml"
    profile.write_text("options = []\n")
    p = Portal(radveil_bin, tmp_path / "data", "--viewer", str(viewer),
               "--export-profile", str(profile), "--export-key-file", str(key_file))
    yield p
    p.stop()


def wait(driver, cond, timeout=60, what="a condition"):
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.support.ui import WebDriverWait
    # A page being replaced (a form's answer loading) leaves stale elements: try again.
    return WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(cond, message=what)


def sign_in(driver, base: str, login: str):
    from selenium.webdriver.common.by import By
    driver.delete_all_cookies()
    driver.get(base + "/portal")
    driver.find_element(By.LINK_TEXT, "Sign in").click()
    # The provider's own pages (oidc-provider's devInteractions): its login form (any
    # password), then its consent page ("Continue"), then back to the portal.
    def step(d):
        if d.current_url.rstrip("/") == base + "/portal" and d.find_elements(By.TAG_NAME, "h1"):
            return "portal"
        if d.find_elements(By.NAME, "login"):
            d.find_element(By.NAME, "login").send_keys(login)
            d.find_element(By.NAME, "password").send_keys("any password")
            d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        elif d.find_elements(By.CSS_SELECTOR, "input[name=prompt][value=consent]"):
            d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        return False

    wait(driver, step, what="the portal after sign-in")


def no_violations(driver, name: str):
    found = axe(driver, name=name)
    assert found == [], found


def test_a_patient_in_a_real_browser(portal, browser, radveil_bin, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser.driver
    mine = stow(portal, "PID-PORTAL-A", "CT HEAD ALICE")
    theirs = stow(portal, "PID-PORTAL-B", "CT HEAD BOB")
    started = time.monotonic()

    # The sign-in page itself.
    d.delete_all_cookies()
    d.get(portal.base + "/portal")
    shot(d, "portal-signin")
    no_violations(d, "portal-signin")

    # Alice signs in and sees exactly her study.
    sign_in(d, portal.base, "alice")
    rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 1, [r.text for r in rows]
    assert "CT HEAD ALICE" in rows[0].text and "3 March 2026" in rows[0].text
    assert "BOB" not in d.page_source
    shot(d, "portal-studies")
    no_violations(d, "portal-studies")

    # She opens it in OHIF: a frame renders (the session cookie stands for her token).
    rows[0].find_element(By.PARTIAL_LINK_TEXT, "View").click()
    canvas = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "canvas.cornerstone-canvas"),
                  timeout=120, what="OHIF's viewport")[0]
    img = wait(d, lambda _: painted(canvas), timeout=120, what="a painted frame")
    img.save(str(shot(d, "portal-viewer").with_suffix(".viewport.png")))
    assert mine in d.current_url

    # A clinician's token reads her study a moment earlier; her access log lists it.
    clinician = token(radveil_bin, portal.gateway.data, "--role", "clinician",
                      "--scope", "user/ImagingStudy.rs")
    assert requests.get(f"{portal.url}/studies/{mine}/metadata", headers=auth(clinician),
                        timeout=30).status_code == 200
    d.get(portal.base + "/portal/access-log")
    entries = [li.text for li in d.find_elements(By.CSS_SELECTOR, "ol.log li")]
    assert entries and entries[0].startswith("A clinician viewed your CT study of 3 March 2026"), entries
    assert any(e.startswith("You viewed your CT study") for e in entries), entries
    shot(d, "portal-access-log")
    no_violations(d, "portal-access-log")

    # She withdraws consent to AI training.
    d.get(portal.base + "/portal/consent")
    no_violations(d, "portal-consent")
    save = "form[action='/portal/consent'] button[type=submit]"
    # She had said yes to research and AI training...
    d.find_element(By.ID, "research-yes").click()
    d.find_element(By.ID, "ai-training-yes").click()
    d.find_element(By.CSS_SELECTOR, save).click()
    wait(d, lambda d: "You said yes on" in d.page_source, what="the first saved consent")
    # ...and now takes AI training back.
    d.find_element(By.ID, "ai-training-no").click()
    d.find_element(By.CSS_SELECTOR, save).click()
    wait(d, lambda d: "You said no on" in d.find_element(
        By.XPATH, "//fieldset[legend='Training AI']").text, what="the withdrawal saved")
    ai = d.find_element(By.XPATH, "//fieldset[legend='Training AI']").text
    assert "You said no on" in ai, ai
    assert d.find_element(By.ID, "ai-training-no").is_selected()
    shot(d, "portal-consent")
    # The change is in her log.
    d.get(portal.base + "/portal/access-log")
    assert "ai-training: withdrawn" in d.page_source

    # She shares the study with a link; someone without an account opens it in the viewer.
    d.get(portal.base + "/portal")
    d.find_element(By.PARTIAL_LINK_TEXT, "Share").click()
    no_violations(d, "portal-share-form")
    d.find_element(By.CSS_SELECTOR, "form[action='/portal/share'] button[type=submit]").click()
    link = wait(d, lambda d: d.find_elements(By.ID, "link"), what="the link")[0].get_attribute("value")
    shot(d, "portal-share-link")
    no_violations(d, "portal-share-link")
    d.find_element(By.LINK_TEXT, "your links").click()
    no_violations(d, "portal-shares")
    d.delete_all_cookies()
    d.get(link)
    canvas = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "canvas.cornerstone-canvas"),
                  timeout=120, what="OHIF's viewport for the link")[0]
    wait(d, lambda _: painted(canvas), timeout=120, what="a painted frame for the link")
    shot(d, "portal-shared-viewer")
    # She stops the link (over HTTP, as herself): it no longer opens.
    from portal import sign_in as http_sign_in
    alice = http_sign_in(portal.base, "alice")
    page = alice.get(portal.base + "/portal/shares", timeout=30).text
    import re
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    link_id = re.search(r'name="id" value="([0-9a-f]+)"', page).group(1)
    assert alice.post(portal.base + "/portal/shares/revoke", timeout=30,
                      data={"csrf": csrf, "id": link_id}).status_code == 200
    d.get(link)
    assert "This link was stopped" in d.page_source
    shot(d, "portal-share-stopped")
    no_violations(d, "portal-share-stopped")

    # The staff's pages.
    for login, path in (("drsmith", "/portal/patient?patient=PID-PORTAL-A"),
                        ("audrey", "/portal/audit?unusual=on"),
                        ("priya", "/portal/privacy?patient=PID-PORTAL-A")):
        sign_in(d, portal.base, login)
        d.get(portal.base + path)
        assert d.find_elements(By.TAG_NAME, "h1")
        shot(d, f"portal-staff-{login}")
        no_violations(d, f"portal-staff-{login}")

    # The privacy officer starts a research export from its form and sees it done.
    d.get(portal.base + "/portal/privacy/export")
    shot(d, "portal-export")
    no_violations(d, "portal-export")
    d.find_element(By.ID, "recipient").send_keys("Acme Labs")
    d.find_element(By.CSS_SELECTOR, "form[action='/portal/privacy/export'] button[type=submit]").click()
    for _ in range(120):
        if "done: export" in d.page_source:
            break
        time.sleep(0.5)
        d.get(portal.base + "/portal/privacy/export")
    assert "done: export" in d.page_source
    shot(d, "portal-export-done")
    no_violations(d, "portal-export-done")

    # She sends a disc's images (chosen in the page's file input); a clinician finds them
    # waiting and opens the page comparing what the files say with who sent them.
    from test_upload import disc
    root, _ = disc(tmp_path / "upload", images=2)
    sign_in(d, portal.base, "alice")
    d.get(portal.base + "/portal/upload")
    shot(d, "portal-upload")
    no_violations(d, "portal-upload")
    chosen = [str(p) for p in sorted(root.rglob("*")) if p.is_file()]
    d.find_element(By.ID, "files").send_keys("\n".join(chosen))
    d.find_element(By.CSS_SELECTOR, "form[action='/portal/upload'] button[type=submit]").click()
    wait(d, lambda d: "Images received" in d.page_source, what="the upload's answer")
    assert "We received 2 images" in d.page_source
    shot(d, "portal-upload-received")
    no_violations(d, "portal-upload-received")
    sign_in(d, portal.base, "drsmith")
    d.get(portal.base + "/portal/uploads")
    shot(d, "portal-staff-uploads")
    no_violations(d, "portal-staff-uploads")
    d.find_element(By.PARTIAL_LINK_TEXT, "Check upload").click()
    wait(d, lambda d: "What the files say" in d.page_source, what="the upload's check page")
    shot(d, "portal-staff-upload-check")
    no_violations(d, "portal-staff-upload-check")

    # Bob sees none of her studies, and hers does not open for him in the viewer.
    sign_in(d, portal.base, "bob")
    rows = d.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 1 and "CT HEAD BOB" in rows[0].text
    assert "ALICE" not in d.page_source
    shot(d, "portal-studies-bob")
    before = len(browser.responses())
    d.get(f"{portal.base}/viewer/viewer?StudyInstanceUIDs={mine}")
    time.sleep(5)
    shot(d, "portal-viewer-bob-refused")
    seen = browser.responses()[before:]
    # Every DICOMweb answer about her study was "not found" or an empty search (replayed
    # with Bob's session cookie to read the body); no frame was sent.
    cookies = {c["name"]: c["value"] for c in d.get_cookies()}
    for url, status, ctype in seen:
        assert "/frames/" not in url and "/metadata" not in url, url
        if "/dicom-web/" not in url or mine not in url:
            continue
        if url.split("?")[0].rstrip("/").endswith(("/studies", "/series", "/instances")):
            again = requests.get(url, cookies=cookies, timeout=30,
                                 headers={"Accept": "application/dicom+json"})
            assert again.status_code in (200, 204), (url, again.status_code)
            assert again.status_code == 204 or again.json() == [], url
        else:
            assert status == 404, (url, status)
    assert theirs not in d.current_url

    # Nothing the portal or the viewer loaded came from anywhere but this gateway and the
    # provider (whose own login page asks for a web font: refused, as everything outside).
    outside = [u for u in browser.requests()
               if not u.startswith((portal.base, portal.provider.issuer, "data:", "blob:"))]
    assert all("fonts.googleapis.com" in u for u in outside), outside
    print(f"portal browser test: {time.monotonic() - started:.1f} s")
