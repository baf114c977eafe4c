"""Secure upload (issue 15, item 4): a patient sends the images of a disc from another
hospital (a real DICOMDIR written by pydicom's FileSet, with a README beside it) through the
portal; they are held apart, sealed, seen by nobody, until a clinician compares what the
files say with who sent them and attaches them (IHE IRWF.b reconciliation: the site's
Patient ID, the disc's ID kept in Other Patient IDs Sequence and Original Attributes
Sequence; dciodvfy finds no new error) or declines them (deleted). Every step is in the
patient's access log."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from gateway import auth, new_uid, planted, requests
from heads import dciodvfy_errors
from portal import Portal, sign_in

OUTSIDE_ID = "OUTSIDE-77123"
OUTSIDE_NAME = "DOE^JANE^Q"


@pytest.fixture
def portal(radveil_bin, tmp_path):
    p = Portal(radveil_bin, tmp_path / "data")
    yield p
    p.stop()


def disc(tmp: Path, images: int = 3) -> tuple[Path, str]:
    """A disc as another hospital burns it: DICOMDIR, the images under it, a README."""
    study = new_uid()
    fs = FileSet()
    for i in range(1, images + 1):
        ds = planted(i, study, patient=OUTSIDE_ID)
        ds.PatientName = OUTSIDE_NAME
        ds.IssuerOfPatientID = "OTHER HOSPITAL"
        ds.StudyDescription = "CT CHEST OUTSIDE"
        fs.add(ds)
    root = tmp / "disc"
    fs.write(root)
    (root / "README.TXT").write_text("Images from Other Hospital. Open with the viewer.\n")
    return root, study


def form_files(root: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Every file under `root` as a browser sends a chosen folder: name="files", the
    relative path as the file name."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out.append(("files", (f"disc/{p.relative_to(root)}", p.read_bytes(),
                                  "application/octet-stream")))
    return out


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def send(session: requests.Session, base: str, root: Path):
    page = session.get(base + "/portal/upload", timeout=30)
    assert page.status_code == 200, page.text[:300]
    return session.post(base + "/portal/upload", data={"csrf": csrf_of(page.text)},
                        files=form_files(root), timeout=120)


def upload_id(staff: requests.Session, base: str) -> str:
    page = staff.get(base + "/portal/uploads", timeout=30)
    assert page.status_code == 200
    ids = re.findall(r'href="/portal/uploads/([0-9a-f]{32})"', page.text)
    assert ids, page.text[:500]
    return ids[0]


def not_stored(portal, study):
    """True when a search of the store by the administrator finds no such study."""
    r = requests.get(f"{portal.url}/studies?StudyInstanceUID={study}", timeout=30,
                     headers=auth(portal.admin))
    return r.status_code == 204 or (r.status_code == 200 and r.json() == [])


def test_a_patients_disc_is_held_apart_then_attached_after_staff_check_the_match(
        portal, tmp_path):
    root, study = disc(tmp_path)
    original = next(p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "DICOMDIR"
                    and p.suffix != ".TXT")
    alice = sign_in(portal.base, "alice")
    r = send(alice, portal.base, root)
    assert r.status_code == 200, r.text[:500]
    assert "We received 3 images" in r.text
    assert "the disc&#39;s index (DICOMDIR)" in r.text or "the disc's index (DICOMDIR)" in r.text
    assert "1 file: not DICOM images" in r.text
    # Held apart: not in the store, not in Alice's studies, and sealed at rest.
    assert not_stored(portal, study)
    assert "CT CHEST OUTSIDE" not in alice.get(portal.base + "/portal", timeout=30).text
    data = portal.gateway.data
    for f in data.glob("uploads.db*"):
        raw = f.read_bytes()
        for secret in (OUTSIDE_ID.encode(), b"DOE^JANE", b"PID-PORTAL-A", study.encode()):
            assert secret not in raw, (f.name, secret)
    assert "waiting for staff to check" in alice.get(portal.base + "/portal/upload",
                                                     timeout=30).text
    # Nobody else sees it: another patient, or a patient on the staff's pages.
    bob = sign_in(portal.base, "bob")
    assert "CT CHEST OUTSIDE" not in bob.get(portal.base + "/portal/upload", timeout=30).text
    assert alice.get(portal.base + "/portal/uploads", timeout=30).status_code == 403
    assert sign_in(portal.base, "audrey").get(portal.base + "/portal/uploads",
                                              timeout=30).status_code == 403
    # The clinician compares what the files say with who sent them.
    dr = sign_in(portal.base, "drsmith")
    assert "/portal/uploads" in dr.get(portal.base + "/portal", timeout=30).text
    uid = upload_id(dr, portal.base)
    check = dr.get(f"{portal.base}/portal/uploads/{uid}", timeout=30)
    assert check.status_code == 200
    assert "DOE JANE Q" in check.text and OUTSIDE_ID in check.text
    assert "PID-PORTAL-A" in check.text and "Alice Example" in check.text
    # A form from elsewhere (no CSRF value) does nothing.
    assert dr.post(f"{portal.base}/portal/uploads/{uid}",
                   data={"csrf": "forged", "decision": "attach"}, timeout=30).status_code == 403
    done = dr.post(f"{portal.base}/portal/uploads/{uid}",
                   data={"csrf": csrf_of(check.text), "decision": "attach"}, timeout=120)
    assert done.status_code == 200, done.text[:500]
    assert "added all 3 images" in done.text
    # Decided once.
    again = dr.post(f"{portal.base}/portal/uploads/{uid}",
                    data={"csrf": csrf_of(check.text), "decision": "decline"}, timeout=30)
    assert again.status_code == 409
    # Now the patient's: in their studies, with the site's ID and the disc's kept.
    assert "CT CHEST OUTSIDE" in alice.get(portal.base + "/portal", timeout=30).text
    sop = pydicom.dcmread(original, stop_before_pixels=True).SOPInstanceUID
    r = requests.get(f"{portal.url}/studies/{study}/series/{study}.1/instances/{sop}",
                     headers=auth(portal.admin, Accept='multipart/related; type="application/dicom"; transfer-syntax=*'),
                     timeout=60)
    assert r.status_code == 200
    boundary = re.search(r'boundary="?([^";]+)', r.headers["Content-Type"]).group(1).encode()
    body = r.content.split(b"--" + boundary)[1].partition(b"\r\n\r\n")[2].rstrip(b"\r\n")
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.PatientID == "PID-PORTAL-A"
    assert "IssuerOfPatientID" not in ds
    # The disc's own items are kept; the disc's ID is added after them.
    was = pydicom.dcmread(original, stop_before_pixels=True)
    before = list(getattr(was, "OtherPatientIDsSequence", []))
    assert len(ds.OtherPatientIDsSequence) == len(before) + 1
    assert [i.PatientID for i in ds.OtherPatientIDsSequence[:-1]] == [i.PatientID for i in before]
    other = ds.OtherPatientIDsSequence[-1]
    assert other.PatientID == OUTSIDE_ID and other.IssuerOfPatientID == "OTHER HOSPITAL"
    assert other.TypeOfPatientID == "TEXT"
    orig = ds.OriginalAttributesSequence[-1]
    assert orig.ReasonForTheAttributeModification == "COERCE"
    assert orig.ModifyingSystem == "RADVEIL PORTAL UPLOAD"
    assert orig.ModifiedAttributesSequence[0].PatientID == OUTSIDE_ID
    assert ds.PatientName == OUTSIDE_NAME and ds.StudyInstanceUID == study
    # Valid DICOM still: dciodvfy finds nothing the disc's own file did not have.
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(body)
    assert dciodvfy_errors(stored) - dciodvfy_errors(original) == set()
    # The patient reads each step in their access log.
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "You sent 3 images from a disc or drive" in log
    assert "Dr A. Smith (clinician) looked at the images you sent" in log
    assert re.search(r"Dr A\. Smith \(clinician\) added your CT study[^<]*from the images you sent", log)
    assert "Added to your record".lower() in alice.get(portal.base + "/portal/upload",
                                                       timeout=30).text.lower()


def test_a_declined_upload_is_deleted_and_the_patient_is_told(portal, tmp_path):
    root, study = disc(tmp_path, images=1)
    alice = sign_in(portal.base, "alice")
    assert send(alice, portal.base, root).status_code == 200
    dr = sign_in(portal.base, "drsmith")
    uid = upload_id(dr, portal.base)
    check = dr.get(f"{portal.base}/portal/uploads/{uid}", timeout=30)
    r = dr.post(f"{portal.base}/portal/uploads/{uid}", timeout=30,
                data={"csrf": csrf_of(check.text), "decision": "decline", "reason": "not-theirs"})
    assert r.status_code == 200 and "deleted" in r.text
    assert "No upload is waiting" in dr.get(portal.base + "/portal/uploads", timeout=30).text
    assert not_stored(portal, study)
    assert "not added (deleted)" in alice.get(portal.base + "/portal/upload", timeout=30).text
    log = alice.get(portal.base + "/portal/access-log", timeout=30).text
    assert "did not add the images you sent" in log and "not your images" in log


def test_what_is_not_a_disc_of_images_is_refused_in_words(portal, tmp_path):
    alice = sign_in(portal.base, "alice")
    page = alice.get(portal.base + "/portal/upload", timeout=30).text
    r = alice.post(portal.base + "/portal/upload", data={"csrf": csrf_of(page)}, timeout=30,
                   files=[("files", ("notes.txt", b"not an image", "text/plain"))])
    assert r.status_code == 400 and "No medical images" in r.text
    root, _ = disc(tmp_path, images=1)
    r = alice.post(portal.base + "/portal/upload", data={"csrf": "forged"}, timeout=30,
                   files=form_files(root))
    assert r.status_code == 403
    # Only for a signed-in patient.
    r = requests.post(portal.base + "/portal/upload", files=form_files(root), timeout=30,
                      allow_redirects=False)
    assert "Sign in" in r.text and "Images received" not in r.text
    # Truncated files are not DICOM images either.
    dcm = next(p for p in root.rglob("*") if p.is_file() and p.name not in ("DICOMDIR", "README.TXT"))
    r = alice.post(portal.base + "/portal/upload", data={"csrf": csrf_of(page)}, timeout=30,
                   files=[("files", ("IM1", dcm.read_bytes()[:600], "application/octet-stream"))])
    assert r.status_code == 400
