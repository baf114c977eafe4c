"""The patient's copy of their images: `GET /me/download` on `radveil serve` (issue 15, item 1).

What is checked: a patient's token downloads a zip that Python's zipfile opens, with a plain
README, every instance of their studies under DICOM/ byte for byte as the gateway stored it
(as WADO-RS returns it), and under JPEG/ one picture per frame that Pillow decodes with the
image's rows and columns (a multi-frame image gives `<n>-<frame>.jpg`); folder names from
hostile descriptions stay one harmless path component; another patient's studies are not in
it; `?study=UID` holds that study only, and another patient's study is exactly a missing one
(404); staff tokens get 403 and no token 401; the download is in the patient's own access log
and in the audit trail as a retrieve of their studies; a larger study is streamed with the
server's memory bounded.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import PurePosixPath

import pytest

from conftest import require_module
from gateway import Gateway, auth, multipart, new_uid, real, to_bytes, token

requests = require_module("requests")
pydicom = require_module("pydicom")
np = require_module("numpy")
PIL = require_module("PIL")
from PIL import Image  # noqa: E402

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def gateway(radveil_bin, tmp_path):
    g = Gateway(radveil_bin, tmp_path / "data", "--dev")
    yield g
    if g.proc.poll() is None:
        g.proc.kill()
        g.proc.wait()


def root(g: Gateway) -> str:
    return g.url.removesuffix("/dicom-web")


def stow(url: str, t: str, parts: list[bytes]):
    body, ct = multipart(parts)
    r = requests.post(url + "/studies", data=body, timeout=120,
                      headers={"Content-Type": ct, **auth(t)})
    assert r.status_code == 200, r.text
    return r


def ct(patient: str, study: str, series: str, n: int, description: str = "CT HEAD"):
    ds = real("CT_small.dcm")
    ds.PatientID = patient
    ds.PatientName = f"{patient}^TEST"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = f"{series}.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate = "20260303"
    ds.StudyDescription = description
    ds.SeriesNumber = 2
    ds.InstanceNumber = n
    return ds


def multiframe(patient: str, study: str):
    ds = real("emri_small.dcm")
    ds.PatientID = patient
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".7"
    ds.SOPInstanceUID = study + ".7.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = "20250101"
    ds.StudyDescription = "MR knee"
    return ds


def download(g: Gateway, t: str, query: str = "", stream: bool = False):
    return requests.get(root(g) + "/me/download" + query, headers=auth(t), timeout=300,
                        stream=stream)


def stored(g: Gateway, admin: str, study: str) -> dict[str, bytes]:
    """The instances of `study` as the gateway returns them (WADO-RS, stored syntax), by
    SOP Instance UID."""
    resp = requests.get(f"{g.url}/studies/{study}", timeout=120,
                        headers={"Accept": ACCEPT, **auth(admin)})
    assert resp.status_code == 200, resp.text
    m = re.search(r'boundary="?([^";]+)', resp.headers["Content-Type"])
    b = m.group(1).encode()
    out = {}
    for c in resp.content.split(b"--" + b)[1:-1]:
        _, _, body = c.partition(b"\r\n\r\n")
        body = body[:-2] if body.endswith(b"\r\n") else body
        out[pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID] = body
    return out


@pytest.fixture
def planted_studies(gateway, radveil_bin):
    g = gateway
    admin = token(radveil_bin, g.data, "--role", "admin", "--subject", "adm",
                  "--scope", "user/ImagingStudy.cruds")
    head, knee, theirs = new_uid(), new_uid(), new_uid()
    # A hostile description: path tricks, a control character, a direction override.
    hostile = "../../etc\x07 CT/HEAD\u202egpj.exe"
    # Sent out of order: the zip numbers them by Instance Number.
    head_parts = [to_bytes(ct("PID-DL-A", head, head + ".1", n, hostile))
                  for n in (4, 2, 6, 1, 5, 3)]
    stow(g.url, admin, head_parts)
    stow(g.url, admin, [to_bytes(multiframe("PID-DL-A", knee))])
    stow(g.url, admin, [to_bytes(ct("PID-DL-B", theirs, theirs + ".1", 1, "THEIRS"))])
    return g, admin, {"head": head, "knee": knee, "theirs": theirs}, head_parts


def open_zip(r) -> zipfile.ZipFile:
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert r.headers.get("Cache-Control") == "no-store"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.testzip() is None, "a CRC does not match"
    return z


def check_names(z: zipfile.ZipFile):
    for name in z.namelist():
        p = PurePosixPath(name)
        assert not p.is_absolute() and ".." not in p.parts, name
        assert not any(ord(c) < 0x20 or c in "\\:\u202e" for c in name), repr(name)
        assert name == "README.txt" or p.parts[0] in ("DICOM", "JPEG"), name
        # Every folder name is one harmless component (no dot files, no dot-dot).
        for part in p.parts[:-1]:
            assert not part.startswith("."), name


def test_a_patient_downloads_their_images(planted_studies, radveil_bin):
    g, admin, uids, head_parts = planted_studies
    patient = token(radveil_bin, g.data, "--patient", "PID-DL-A", "--subject", "pat-a")
    z = open_zip(download(g, patient))
    check_names(z)
    names = z.namelist()
    readme = z.read("README.txt").decode()
    assert "DICOM" in readme and "JPEG" in readme and "viewer" in readme, readme

    # DICOM: every instance of both studies, byte for byte as stored, nothing of patient B.
    want = {**stored(g, admin, uids["head"]), **stored(g, admin, uids["knee"])}
    dicoms = [n for n in names if n.startswith("DICOM/")]
    got = {}
    for n in dicoms:
        assert n.endswith(".dcm"), n
        b = z.read(n)
        ds = pydicom.dcmread(io.BytesIO(b))
        assert ds.PatientID == "PID-DL-A", n
        got[ds.SOPInstanceUID] = b
    assert got == want
    # What was stored is what was sent.
    for p in head_parts:
        uid = pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID
        assert got[uid] == p
    assert not any(uids["theirs"].encode() in z.read(n) for n in names)
    # One study folder per study, the CT's three instances in one series folder.
    studies = {PurePosixPath(n).parts[1] for n in dicoms}
    assert len(studies) == 2, studies
    head_folder = next(s for s in studies if s.startswith("2026-03-03"))
    assert "CT" in head_folder, head_folder
    head_files = sorted(n for n in dicoms if PurePosixPath(n).parts[1] == head_folder)
    assert len(head_files) == 6 and len({PurePosixPath(n).parent for n in head_files}) == 1
    numbers = [int(pydicom.dcmread(io.BytesIO(z.read(n))).InstanceNumber) for n in head_files]
    assert numbers == [1, 2, 3, 4, 5, 6], (head_files, numbers)

    # JPEG: one per frame, decodable, of the image's size.
    jpegs = [n for n in names if n.startswith("JPEG/") and n.endswith(".jpg")]
    by_folder = {}
    for n in jpegs:
        im = Image.open(io.BytesIO(z.read(n)))
        im.load()
        assert im.format == "JPEG"
        by_folder.setdefault(PurePosixPath(n).parent, []).append((n, im.size))
    dicom_of = {PurePosixPath(n).parent.relative_to("DICOM"): pydicom.dcmread(io.BytesIO(z.read(n)))
                for n in dicoms}
    assert len(jpegs) == 6 + int(multiframe("x", "1.2").NumberOfFrames), jpegs
    for folder, files in by_folder.items():
        ds = dicom_of[folder.relative_to("JPEG")]
        for n, size in files:
            assert size == (ds.Columns, ds.Rows), (n, size)
    frames = sorted(n for n in jpegs if re.search(r"/\d+-\d+\.jpg$", n))
    assert len(frames) == int(multiframe("x", "1.2").NumberOfFrames), jpegs
    assert "JPEG/not-rendered.txt" not in names


def test_one_study_and_another_patients_study(planted_studies, radveil_bin):
    g, admin, uids, _ = planted_studies
    patient = token(radveil_bin, g.data, "--patient", "PID-DL-A")
    z = open_zip(download(g, patient, f"?study={uids['knee']}"))
    dicoms = [n for n in z.namelist() if n.startswith("DICOM/")]
    assert len(dicoms) == 1
    assert pydicom.dcmread(io.BytesIO(z.read(dicoms[0]))).StudyInstanceUID == uids["knee"]
    # Another patient's study reads exactly as a missing one.
    other = download(g, patient, f"?study={uids['theirs']}")
    missing = download(g, patient, f"?study={new_uid()}")
    assert other.status_code == missing.status_code == 404
    assert other.text == missing.text
    assert download(g, patient, "?study=../1").status_code == 400
    assert download(g, patient, "?patient=PID-DL-B").status_code == 400
    # Patient B gets only theirs.
    b = token(radveil_bin, g.data, "--patient", "PID-DL-B")
    zb = open_zip(download(g, b))
    dicoms = [n for n in zb.namelist() if n.startswith("DICOM/")]
    assert len(dicoms) == 1
    assert pydicom.dcmread(io.BytesIO(zb.read(dicoms[0]))).StudyInstanceUID == uids["theirs"]
    # A patient without images: 404.
    nobody = token(radveil_bin, g.data, "--patient", "PID-DL-NONE")
    assert download(g, nobody).status_code == 404


def test_staff_are_refused_and_the_download_is_audited(planted_studies, radveil_bin):
    g, admin, uids, _ = planted_studies
    clinician = token(radveil_bin, g.data, "--role", "clinician", "--subject", "dr-dl",
                      "--scope", "user/ImagingStudy.rs")
    assert download(g, clinician).status_code == 403
    assert download(g, admin).status_code == 403
    assert requests.get(root(g) + "/me/download", timeout=30).status_code == 401

    patient = token(radveil_bin, g.data, "--patient", "PID-DL-A", "--subject", "pat-dl")
    log = requests.get(root(g) + "/me/access-log", headers=auth(patient), timeout=30)
    before = log.text.splitlines()
    open_zip(download(g, patient))
    after = requests.get(root(g) + "/me/access-log", headers=auth(patient), timeout=30)
    lines = after.text.splitlines()
    # The earlier access-log read and the download are new.
    new = lines[len(before):]
    assert len(new) == 2, (before, lines)
    assert any("viewed" in line for line in new), new

    auditor = token(radveil_bin, g.data, "--role", "auditor", "--subject", "aud",
                    "--scope", "user/AuditEvent.rs")
    r = requests.get(root(g) + "/audit", params={"user": "pat-dl", "action": "retrieve"},
                     headers=auth(auditor), timeout=30)
    assert r.status_code == 200, r.text
    events = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    assert events, r.text
    studies = {e["what"]["identifier"]["value"].removeprefix("urn:oid:")
               for ev in events for e in ev.get("entity", [])
               if e.get("what", {}).get("type") == "ImagingStudy"}
    assert studies == {uids["head"], uids["knee"]}, studies
    # The staff refusals are audited too (403, a retrieve by the clinician).
    r = requests.get(root(g) + "/audit", params={"user": "dr-dl", "action": "retrieve"},
                     headers=auth(auditor), timeout=30)
    assert r.status_code == 200 and r.text.strip(), r.text


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_large_download_is_streamed_in_bounded_memory(gateway, radveil_bin):
    """About 120 MiB of instances: the server's resident memory grows by well under the
    download's size while a slow client reads it."""
    g = gateway
    admin = token(radveil_bin, g.data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    study = new_uid()
    big = 4 << 20
    n = 30
    for batch in range(0, n, 5):
        parts = []
        for i in range(batch, batch + 5):
            ds = ct("PID-DL-BIG", study, study + ".1", i + 1)
            # 1024 x 2048 16-bit: 4 MiB of pixels each.
            ds.Rows, ds.Columns = 1024, 2048
            ds.PixelData = (np.arange(1024 * 2048, dtype=np.uint16) * (i + 1)).tobytes()
            parts.append(to_bytes(ds))
        stow(g.url, admin, parts)
    patient = token(radveil_bin, g.data, "--patient", "PID-DL-BIG")
    pid = g.proc.pid
    start = rss_kib(pid)
    peak = start
    got = 0
    with download(g, patient, stream=True) as r:
        assert r.status_code == 200
        body = io.BytesIO()
        for chunk in r.iter_content(1 << 16):
            body.write(chunk)
            got += len(chunk)
            if got % (8 << 20) < (1 << 16):
                time.sleep(0.05)
                peak = max(peak, rss_kib(pid))
    z = zipfile.ZipFile(body)
    assert len([x for x in z.namelist() if x.startswith("DICOM/")]) == n
    total = n * big
    assert got > total
    grown = (peak - start) * 1024
    print(f"server RSS grew {grown >> 20} MiB for {total >> 20} MiB")
    assert grown < total // 3, f"server grew {grown >> 20} MiB for a {total >> 20} MiB download"
