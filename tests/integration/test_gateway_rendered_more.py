"""WADO-RS rendered studies and series, float pixel data, and four-component JPEG.

What is checked, with pydicom + numpy (and Pillow for JPEG) as the oracle:
- `/studies/{s}/rendered` and `/studies/{s}/series/{se}/rendered` (PS3.18 §10.4.1.1.3) are
  `multipart/related` responses of every frame of every instance, each part the PNG (or
  JPEG) the instance's own rendered route gives, with the Content-Location of that frame
  rendered alone; a single-part media type is refused (406, PS3.18 §10.4.4); another
  patient's study is the missing study's 404; dicomweb-client reads a rendered series.
- Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009): frames are their
  exact bytes (`application/octet-stream`), and the rendered PNG is the image windowed from
  its values' range or from the window asked for.
- A four-component baseline JPEG: its frames decode to the samples Pillow decodes,
  interleaved by pixel; one with an Adobe APP14 marker (inverted CMYK / YCCK) is refused
  with why rather than decoded to wrong pixels.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from gateway import (  # noqa: F401  (serve is a fixture)
    auth, multipart, new_uid, planted, post, pydicom, real, requests, serve, to_bytes, token,
)

PNG_PARTS = 'multipart/related; type="image/png"'
OCTETS = 'multipart/related; type="application/octet-stream"'


def parts_of(r) -> list[tuple[dict, bytes]]:
    """The parts of a multipart response: (headers, body) each."""
    m = re.search(r'boundary="?([^";]+)', r.headers["Content-Type"])
    assert m, r.headers
    b = m.group(1).encode()
    assert r.content.rstrip().endswith(b"--" + b + b"--"), "the response ends with its closing boundary"
    out = []
    for c in r.content.split(b"--" + b)[1:-1]:
        head, _, body = c.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().strip().splitlines():
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        out.append((headers, body[:-2] if body.endswith(b"\r\n") else body))
    return out


def image(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255))
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                 np.where(x > c - 0.5 + (w - 1) / 2, 255.0, ((x - (c - 0.5)) / (w - 1) + 0.5) * 255))
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def windowed(ds, frame=0) -> np.ndarray:
    """PS3.3 C.11 for an integer image: Modality LUT, the image's window or the frame's
    range (LINEAR_EXACT)."""
    a = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1)) > 1:
        a = a[frame]
    x = a.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if "WindowCenter" in ds:
        first = lambda v: float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)  # noqa: E731
        return linear(x, first(ds.WindowCenter), first(ds.WindowWidth))
    lo, hi = x.min(), x.max()
    return linear_exact(x, (lo + hi) / 2, max(hi - lo, 1))


def assert_close(got: np.ndarray, want: np.ndarray, why: str, tolerance: int = 1):
    assert got.shape == want.shape, (why, got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= tolerance, (why, int(diff.max()), int((diff > tolerance).sum()))


def a_study(g, t: str | None = None):
    """A study of two series: three CT slices, and a ten-frame MR, stored (with token `t`);
    returns (study, the CT series' data sets, the MR)."""
    study, ct_series, mr_series = new_uid(), new_uid(), new_uid()
    cts = [planted(n, study, ct_series) for n in range(3)]
    for n, ds in enumerate(cts):
        # Distinct pixels per slice, so that parts cannot be told apart only by order.
        ds.PixelData = (ds.pixel_array + np.int16(n * 40)).astype(ds.pixel_array.dtype).tobytes()
    mr = real("emri_small.dcm")
    mr.StudyInstanceUID, mr.SeriesInstanceUID = study, mr_series
    mr.SOPInstanceUID = new_uid()
    mr.file_meta.MediaStorageSOPInstanceUID = mr.SOPInstanceUID
    mr.PatientID = cts[0].PatientID
    body, ct = multipart([to_bytes(d) for d in [*cts, mr]])
    r = requests.post(g.url + "/studies", data=body, timeout=60,
                      headers={"Content-Type": ct, **(auth(t) if t else {})})
    assert r.status_code == 200, r.text
    return study, cts, mr


def by_location(parts) -> dict[str, bytes]:
    out = {}
    for headers, body in parts:
        loc = headers.get("content-location", "")
        assert loc not in out, loc
        out[loc] = body
    return out


def test_a_rendered_study_is_every_frame_of_every_instance(serve):
    g = serve()
    study, cts, mr = a_study(g)
    r = requests.get(f"{g.url}/studies/{study}/rendered", headers={"Accept": PNG_PARTS}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith('multipart/related; type="image/png"'), r.headers
    parts = parts_of(r)
    assert all(h.get("content-type") == "image/png" for h, _ in parts), [h for h, _ in parts]
    got = by_location(parts)
    assert len(got) == 3 + 10, list(got)

    def where(ds) -> str:
        return f"/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    for ds in cts:
        (loc,) = [k for k in got if k.endswith(where(ds) + "/rendered")]
        assert_close(image(got[loc]), windowed(ds), loc)
    for f in range(10):
        (loc,) = [k for k in got if k.endswith(where(mr) + f"/frames/{f + 1}/rendered")]
        assert_close(image(got[loc]), windowed(mr, f), loc)
        # The same image as the frame's own rendered route.
        alone = requests.get(f"{g.url}{where(mr)}/frames/{f + 1}/rendered",
                             headers={"Accept": "image/png"}, timeout=30)
        assert alone.status_code == 200
        assert np.array_equal(image(alone.content), image(got[loc]))


def test_a_rendered_series_is_its_instances_only(serve):
    g = serve()
    study, cts, mr = a_study(g)
    series = cts[0].SeriesInstanceUID
    r = requests.get(f"{g.url}/studies/{study}/series/{series}/rendered",
                     headers={"Accept": PNG_PARTS}, params={"viewport": "64,64"}, timeout=60)
    assert r.status_code == 200, r.text
    parts = parts_of(r)
    assert len(parts) == 3
    for (h, body), ds in zip(sorted(parts, key=lambda p: p[0]["content-location"]),
                             sorted(cts, key=lambda d: d.SOPInstanceUID)):
        assert h["content-location"].endswith(f"/instances/{ds.SOPInstanceUID}/rendered"), h
        assert image(body).shape == (64, 64)
    # dicomweb-client (no media type: the server's default, JPEG parts).
    body = g.client().retrieve_series_rendered(study, series)
    m = re.search(rb"--(radveil-[0-9a-f-]+)", body)
    assert m, body[:200]
    jpegs = [p for p in body.split(b"--" + m.group(1)) if b"image/jpeg" in p[:200]]
    assert len(jpegs) == 3
    for p in jpegs:
        got = image(p.partition(b"\r\n\r\n")[2].rstrip(b"\r\n"))
        assert got.shape == (128, 128)
        assert min(np.abs(got.astype(int) - windowed(ds).astype(int)).mean() for ds in cts) < 3


def test_rendered_studies_refuse_what_they_cannot_give(serve, radveil_bin, tmp_path):
    g = serve(tmp_path / "d", "--dev")
    admin = token(radveil_bin, g.data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    study, cts, mr = a_study(g, admin)
    url = f"{g.url}/studies/{study}/rendered"
    # Single-part media types are for single images (PS3.18 10.4.4).
    r = requests.get(url, headers=auth(admin, Accept="image/png"), timeout=30)
    assert r.status_code == 406, r.text
    assert "multipart/related" in r.text
    # Another patient's study is as absent as a missing one.
    other = token(radveil_bin, g.data, "--patient", "PID-SOMEONE-ELSE")
    r = requests.get(url, headers=auth(other, Accept=PNG_PARTS), timeout=30)
    missing = requests.get(f"{g.url}/studies/{new_uid()}/rendered",
                           headers=auth(other, Accept=PNG_PARTS), timeout=30)
    assert (r.status_code, r.text) == (missing.status_code, missing.text) == (404, missing.text)
    mine = token(radveil_bin, g.data, "--patient", cts[0].PatientID)
    r = requests.get(url, headers=auth(mine, Accept=PNG_PARTS), timeout=60)
    assert r.status_code == 200 and len(parts_of(r)) == 13
    r = requests.get(url, headers=auth(admin, Accept=PNG_PARTS), params={"window": "40,0"}, timeout=30)
    assert r.status_code == 400


# --- Float and Double Float Pixel Data ------------------------------------------------------

def float_image(kind: str, values: np.ndarray) -> Dataset:
    """A parametric map of `values` (frames × rows × columns) as Float (`OF`) or Double Float
    (`OD`) Pixel Data, explicit VR little endian."""
    frames, rows, cols = values.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "PID-FLOAT", "FLOAT^MAP", "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if kind == "OF":
        ds.BitsAllocated = 32
        ds.FloatPixelData = values.astype("<f4").tobytes()
    else:
        ds.BitsAllocated = 64
        ds.DoubleFloatPixelData = values.astype("<f8").tobytes()
    return ds


def float_values(frames=2, rows=6, cols=9, seed=7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(0.0, 0.01, (frames, rows, cols)) + np.linspace(-0.02, 0.03, cols)
    v[0, 0, 0] = 0.5  # the range's top in frame 1 only
    return v


def test_float_frames_are_their_exact_bytes_and_render_from_their_range(serve):
    g = serve()
    for kind, dtype in [("OF", "<f4"), ("OD", "<f8")]:
        v = float_values()
        ds = float_image(kind, v)
        r = post(g.url, [to_bytes(ds)])
        assert r.status_code == 200, r.text
        url = (f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        stored = v.astype(dtype)
        r = requests.get(f"{url}/frames/2,1", headers={"Accept": OCTETS}, timeout=30)
        assert r.status_code == 200, (kind, r.text)
        parts = parts_of(r)
        assert [h["content-type"] for h, _ in parts] == ["application/octet-stream"] * 2
        assert parts[0][1] == stored[1].tobytes(), kind
        assert parts[1][1] == stored[0].tobytes(), kind
        # dicomweb-client reads the same bytes.
        (f1,) = g.client().retrieve_instance_frames(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1],
            media_types=("application/octet-stream",))
        assert f1 == stored[0].tobytes()
        # Rendered from the frame's range (LINEAR_EXACT), or from the window asked for.
        for f in (1, 2):
            x = stored[f - 1].astype(np.float64)
            lo, hi = x.min(), x.max()
            r = requests.get(f"{url}/frames/{f}/rendered", headers={"Accept": "image/png"}, timeout=30)
            assert r.status_code == 200, (kind, r.text)
            assert_close(image(r.content), linear_exact(x, lo + (hi - lo) / 2, hi - lo), f"{kind} {f}")
        r = requests.get(f"{url}/rendered", headers={"Accept": "image/png"},
                         params={"window": "0.01,0.04,linear-exact"}, timeout=30)
        assert r.status_code == 200, r.text
        assert_close(image(r.content), linear_exact(stored[0].astype(np.float64), 0.01, 0.04), kind)
        # The study's thumbnail and rendered study now find an image in it.
        r = requests.get(f"{g.url}/studies/{ds.StudyInstanceUID}/rendered",
                         headers={"Accept": PNG_PARTS}, timeout=30)
        assert r.status_code == 200 and len(parts_of(r)) == 2, r.text


def test_float_frames_refuse_a_compressed_media_type(serve):
    g = serve()
    ds = float_image("OF", float_values(frames=1))
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    url = (f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/1")
    r = requests.get(url, headers={"Accept": 'multipart/related; type="image/jls"'}, timeout=30)
    assert r.status_code == 406, r.text
    r = requests.get(url.replace("/frames/1", "/frames/2"), headers={"Accept": OCTETS}, timeout=30)
    assert r.status_code == 404, r.text


# --- Four-component JPEG ------------------------------------------------------------------

def cmyk_jpeg(adobe: bool) -> tuple[bytes, np.ndarray]:
    """A baseline JPEG of four components made by Pillow (libjpeg), with or without its
    Adobe APP14 marker, and the samples as coded: Pillow writes and reads four-component
    JPEG in Adobe's inverted convention ("CMYK;I") whether or not the marker is there, so
    the coded samples are 255 minus what it decodes."""
    h, w = 16, 24
    yy, xx = np.mgrid[0:h, 0:w]
    cmyk = np.stack([xx * 10, yy * 15, 255 - xx * 10, (xx + yy) * 5], axis=-1).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buf, "JPEG", quality=100, subsampling=0)
    data = buf.getvalue()
    if not adobe:
        at = data.index(b"\xff\xee")
        n = int.from_bytes(data[at + 2:at + 4], "big")
        assert data[at + 4:at + 9] == b"Adobe"
        data = data[:at] + data[at + 2 + n:]
    coded = 255 - np.asarray(Image.open(io.BytesIO(data)).convert("CMYK"))
    assert np.abs(coded.astype(int) - (255 - cmyk.astype(int))).max() <= 3
    return data, coded


def cmyk_dicom(jpeg: bytes, h=16, w=24) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.PatientID, ds.Modality = "PID-CMYK", "OT"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 4, "CMYK", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    return ds


def test_four_component_jpeg_frames_are_the_coded_samples_or_refused(serve):
    g = serve()
    for adobe in (False, True):
        jpeg, want = cmyk_jpeg(adobe)
        ds = cmyk_dicom(jpeg)
        r = post(g.url, [to_bytes(ds)])
        assert r.status_code == 200, r.text
        url = (f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        r = requests.get(f"{url}/frames/1", headers={"Accept": OCTETS}, timeout=30)
        if adobe:
            # Adobe's inverted CMYK or YCCK: not decoded to pixels that may be wrong.
            assert r.status_code == 406, r.text
            assert "Adobe" in r.text, r.text
        else:
            assert r.status_code == 200, r.text
            (part,) = parts_of(r)
            got = np.frombuffer(part[1], np.uint8).reshape(16, 24, 4)
            assert_close(got, want, "four-component JPEG", tolerance=2)
        # The bitstream itself is given as stored either way (an odd one with its padding).
        r = requests.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'},
                         timeout=30)
        assert r.status_code == 200
        assert parts_of(r)[0][1] in (jpeg, jpeg + b"\0")
        # Never rendered to wrong colours: four samples are not rendered, alone or as the
        # study's only image (refused with why before any part is sent).
        r = requests.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=30)
        assert r.status_code == 406, r.text
        r = requests.get(f"{g.url}/studies/{ds.StudyInstanceUID}/rendered",
                         headers={"Accept": PNG_PARTS}, timeout=30)
        assert r.status_code == 406, r.text
        assert "not rendered" in r.text or "Adobe" in r.text, r.text


def test_a_rendered_study_with_an_image_that_cannot_be_rendered_is_never_complete(serve):
    """Five CT slices and a four-component JPEG with an Adobe marker in one series: the
    response is refused (406) when that image comes first (the index's order), else the
    connection is cut (no closing boundary): never a complete response with an image left
    out."""
    g = serve()
    study, series = new_uid(), new_uid()
    cts = [planted(n, study, series) for n in range(5)]
    jpeg, _ = cmyk_jpeg(adobe=True)
    bad = cmyk_dicom(jpeg)
    bad.StudyInstanceUID, bad.SeriesInstanceUID, bad.PatientID = study, series, cts[0].PatientID
    assert post(g.url, [to_bytes(d) for d in [*cts, bad]]).status_code == 200
    for url in [f"{g.url}/studies/{study}/rendered", f"{g.url}/studies/{study}/series/{series}/rendered"]:
        try:
            r = requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            # Cut after the first parts (or, when the failure follows them at once, before
            # the buffered head was written).
            continue
        assert r.status_code == 406, (r.status_code, r.content[-200:])
        assert "Adobe" in r.text
    # The server goes on serving.
    r = requests.get(f"{g.url}/studies/{study}/series/{series}/instances/{cts[0].SOPInstanceUID}/rendered",
                     headers={"Accept": "image/png"}, timeout=30)
    assert r.status_code == 200
