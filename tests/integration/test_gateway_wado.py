"""WADO-RS metadata, bulk data, frames, rendered images and thumbnails on `radveil serve`
(PS3.18 §10.4, §9), tested with `dicomweb-client` and raw HTTP on real pydicom test files.

What is checked: the metadata of a study, a series and an instance is DICOM JSON that
pydicom's `Dataset.from_json` reads back to the values pydicom reads from the original
file (nested sequences, person names with their three groups, numbers, inline binary),
with a BulkDataURI for pixel data and long binary values that gives those bytes back;
it is answered from the sealed metadata copy (an altered copy is reported and never
served), leaves nothing identifying on disk in plaintext, and a patient token gets, for
another patient's study, exactly the 404 of a missing one on every route.
"""

from __future__ import annotations

import io
import math
import re
import sqlite3

import numpy as np
from PIL import Image

from pydicom.encaps import generate_frames

from gateway import (  # noqa: F401  (serve is a fixture)
    PLANTED, assert_no_plaintext, auth, get_parts, new_uid, planted, post, pydicom, real, requests,
    serve, to_bytes, token,
)

BULK_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
MULTIPART_ANY = 'multipart/related; type="*/*"'


def stored(g, names: list[str]) -> list:
    """Stores the pydicom test files `names` (as they are); returns them read by pydicom."""
    dss = [real(n) for n in names]
    r = post(g.url, [to_bytes(d) for d in dss])
    assert r.status_code == 200, r.text
    return dss


def ids(ds):
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def empty(v) -> bool:
    return v is None or v == "" or v == b"" or (isinstance(v, list) and not v)


def same_value(vr: str, a, b) -> bool:
    if empty(a) and empty(b):
        return True
    if vr in ("DS", "FL", "FD", "OF", "OD") and not isinstance(a, (bytes, str)):
        xs = list(a) if isinstance(a, (list, pydicom.multival.MultiValue)) else [a]
        ys = list(b) if isinstance(b, (list, pydicom.multival.MultiValue)) else [b]
        return len(xs) == len(ys) and all(
            (x is None and y is None) or math.isclose(float(x), float(y), rel_tol=1e-9)
            for x, y in zip(xs, ys))
    return a == b


def assert_same(orig, back, js: dict, path=""):
    """Every attribute of `orig` (pydicom, from the file) is in `back` (from the JSON `js`)
    with the same value, bulk data excepted (it must have a BulkDataURI instead)."""
    for elem in orig:
        tag = int(elem.tag)
        # Group lengths, the file meta and Data Set Trailing Padding are encoding, not
        # content: DICOM JSON leaves them out.
        if elem.tag.element == 0 or elem.tag.group == 2 or tag == 0xFFFCFFFC:
            continue
        key = f"{tag:08X}"
        assert key in js, f"{path}{key} missing"
        if "BulkDataURI" in js[key]:
            assert tag in BULK_TAGS or len(elem.value or b"") > 1024 or elem.VR == "SQ", \
                f"{path}{key} given as bulk data"
            continue
        assert tag not in BULK_TAGS, f"{path}{key} pixel data inline"
        got = back[tag]
        if elem.VR == "SQ":
            assert len(elem.value) == len(got.value), f"{path}{key} items"
            for n, (x, y) in enumerate(zip(elem.value, got.value)):
                assert_same(x, y, js[key]["Value"][n], f"{path}{key}/{n + 1}/")
            continue
        assert same_value(elem.VR, elem.value, got.value), \
            f"{path}{key} ({elem.VR}): {elem.value!r} != {got.value!r}"


def at(g, uri: str) -> str:
    """A BulkDataURI as reached on the gateway `g`. The server builds it from the Host header,
    as Orthanc and dcm4chee do; dicomweb-client sends `Host` without the port (its
    `headers['Host'] = self.host`), so the URIs it is given lack it: the test puts the port
    back, as a client on port 80 would not need to."""
    path = uri.split("/dicom-web", 1)[1]
    return g.url + path


def from_json(js: dict):
    return pydicom.Dataset.from_json(js, bulk_data_uri_handler=lambda *_: b"")


META_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "JPEG2000.dcm",
              "SC_rgb_rle.dcm", "emri_small.dcm"]


def test_instance_metadata_reads_back_as_the_original_file(serve):
    g = serve()
    dss = stored(g, META_FILES)
    c = g.client()
    for name, ds in zip(META_FILES, dss):
        js = c.retrieve_instance_metadata(*ids(ds))
        assert_same(ds, from_json(js), js, f"{name}: ")
        if "PixelData" in ds:
            assert "/studies/" in js["7FE00010"]["BulkDataURI"], name


def test_person_names_keep_their_three_groups_and_nested_sequences_their_items(serve):
    g = serve()
    ds = real("rtplan.dcm")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.OperatorsName = ["A^B", "", "C^D"]
    ds.StudyInstanceUID = new_uid()
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    js = g.client().retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                 ds.SOPInstanceUID)
    assert js["00100010"]["Value"] == [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                                        "Phonetic": "やまだ^たろう"}]
    assert js["00081070"]["Value"] == [{"Alphabetic": "A^B"}, None, {"Alphabetic": "C^D"}]
    # Beam Sequence > Control Point Sequence, two levels deep, as pydicom reads them.
    beams = js["300A00B0"]["Value"]
    assert len(beams) == len(ds.BeamSequence)
    assert len(beams[0]["300A0111"]["Value"]) == len(ds.BeamSequence[0].ControlPointSequence)
    assert_same(ds, from_json(js), js)


def test_study_and_series_metadata_list_each_instance_once(serve):
    g = serve()
    study, series = new_uid(), new_uid()
    dss = [planted(n, study, series) for n in range(3)]
    other = planted(9, study, new_uid())
    assert post(g.url, [to_bytes(d) for d in dss + [other]]).status_code == 200
    c = g.client()
    whole = c.retrieve_study_metadata(study)
    assert sorted(j["00080018"]["Value"][0] for j in whole) == \
        sorted(d.SOPInstanceUID for d in dss + [other])
    part = c.retrieve_series_metadata(study, series)
    assert sorted(j["00080018"]["Value"][0] for j in part) == sorted(d.SOPInstanceUID for d in dss)
    for j in part:
        back = from_json(j)
        orig = next(d for d in dss if d.SOPInstanceUID == back.SOPInstanceUID)
        assert_same(orig, back, j)
    r = requests.get(f"{g.url}/studies/{new_uid()}/metadata", timeout=30)
    assert r.status_code == 404
    r = requests.get(f"{g.url}/studies/{study}/metadata",
                     headers={"Accept": "application/dicom+xml"}, timeout=30)
    assert r.status_code == 406


def test_metadata_copies_leave_nothing_identifying_on_disk(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study, series = new_uid(), new_uid()
    dss = [planted(n, study, series) for n in range(3)]
    assert post(g.url, [to_bytes(d) for d in dss]).status_code == 200
    assert len(g.client().retrieve_study_metadata(study)) == 3
    con = sqlite3.connect(data / "index.db")
    assert con.execute("SELECT count(*) FROM metadata").fetchone()[0] == 3
    con.close()
    needles = [v.encode() for v in PLANTED.values()] + [study.encode(), series.encode()]
    needles += [d.SOPInstanceUID.encode() for d in dss]
    needles += [b"PLANTEDNAME", b"00100010"]
    assert g.stop() == 0, "".join(g.log)
    assert_no_plaintext(data, "".join(g.log), needles)


def test_an_altered_metadata_copy_is_reported_and_never_served(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    ds = planted(1, study)
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    con = sqlite3.connect(data / "index.db", timeout=30)
    [(handle, sealed)] = con.execute("SELECT handle, sealed FROM metadata").fetchall()
    b = bytearray(sealed)
    b[len(b) // 2] ^= 0x01
    con.execute("UPDATE metadata SET sealed = ? WHERE handle = ?", (bytes(b), handle))
    con.commit()
    con.close()
    r = requests.get(f"{g.url}/studies/{study}/metadata", timeout=30)
    assert r.status_code == 500, r.status_code
    assert PLANTED["name"].encode() not in r.content and b"00100010" not in r.content
    assert g.wait_for_log("metadata copy"), g.log


def test_instances_stored_without_a_copy_are_read_from_their_object(serve, tmp_path):
    """Instances stored before metadata copies were kept (no row in `metadata`)."""
    data = tmp_path / "data"
    g = serve(data)
    ds = real("CT_small.dcm")
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    assert g.stop() == 0
    con = sqlite3.connect(data / "index.db")
    con.execute("DELETE FROM metadata")
    con.commit()
    con.close()
    g = serve(data)
    js = g.client().retrieve_instance_metadata(*ids(ds))
    assert_same(ds, from_json(js), js)
    # The copy made from the object is kept: the next answer comes from it.
    con = sqlite3.connect(data / "index.db", timeout=30)
    assert con.execute("SELECT count(*) FROM metadata").fetchone()[0] == 1
    con.close()
    assert g.client().retrieve_instance_metadata(*ids(ds)) == js


def test_a_patient_token_gets_404_for_another_patients_study_on_every_wado_route(
        serve, radveil_bin, tmp_path):
    data = tmp_path / "data"
    g = serve(data, "--dev")
    admin = token(radveil_bin, data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    mine, theirs = new_uid(), new_uid()
    a, b = planted(1, mine, patient="PID-W1"), planted(1, theirs, patient="PID-W2")
    body = [to_bytes(a), to_bytes(b)]
    from gateway import multipart
    payload, ct = multipart(body)
    r = requests.post(g.url + "/studies", data=payload, timeout=60,
                      headers=auth(admin, **{"Content-Type": ct}))
    assert r.status_code == 200, r.text
    patient = token(radveil_bin, data, "--patient", "PID-W1")
    missing = new_uid()

    def routes(ds, study):
        i = f"{g.url}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        return [f"{g.url}/studies/{study}/metadata",
                f"{g.url}/studies/{study}/series/{ds.SeriesInstanceUID}/metadata",
                f"{i}/metadata"] + ROUTES_OF_AN_INSTANCE(i)

    for mine_url, theirs_url, missing_url in zip(routes(a, mine), routes(b, theirs),
                                                 routes(b, missing)):
        ok = requests.get(mine_url, headers=auth(patient), timeout=30)
        assert ok.status_code == 200, (mine_url, ok.status_code, ok.text)
        other = requests.get(theirs_url, headers=auth(patient), timeout=30)
        absent = requests.get(missing_url, headers=auth(patient), timeout=30)
        assert other.status_code == absent.status_code == 404, theirs_url
        assert other.content == absent.content
        assert other.headers.get("Content-Type") == absent.headers.get("Content-Type")


def ROUTES_OF_AN_INSTANCE(i: str) -> list[str]:  # noqa: N802 (grows with the routes)
    """The per-instance WADO-RS routes besides metadata."""
    return [f"{i}/frames/1", f"{i}/bulkdata/7FE00010", f"{i}/rendered", f"{i}/thumbnail",
            f"{i}/frames/1/rendered", i.rsplit("/instances/", 1)[0] + "/thumbnail",
            i.rsplit("/series/", 1)[0] + "/thumbnail"]


# --- bulk data -------------------------------------------------------------------------------

def test_bulk_data_uris_give_the_values_they_stand_for(serve):
    g = serve()
    ds = real("CT_small.dcm")
    ds.StudyInstanceUID = new_uid()
    long_value = bytes(range(256)) * 8
    ds.add_new(0x00091010, "LO", "RADVEIL TEST")  # private creator of block 10
    ds.add_new(0x00091011 + 0x00, "OB", long_value)
    icon = pydicom.Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.BitsAllocated = 32, 32, 1, 8
    icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 7, 0
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.PixelData = bytes(range(256)) * 4
    ds.IconImageSequence = [icon]
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    c = g.client()
    js = c.retrieve_instance_metadata(*ids(ds))
    assert "BulkDataURI" in js["00091011"] and "InlineBinary" not in js["00091011"]
    assert c.retrieve_bulkdata(at(g, js["00091011"]["BulkDataURI"])) == [long_value]
    assert c.retrieve_bulkdata(at(g, js["7FE00010"]["BulkDataURI"])) == [ds.PixelData]
    nested = js["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    assert nested.endswith("/bulkdata/00880200/1/7FE00010"), nested
    assert c.retrieve_bulkdata(at(g, nested)) == [icon.PixelData]
    base = at(g, js["7FE00010"]["BulkDataURI"]).rsplit("/", 1)[0]
    for bad in ["00100010/1/00100020", "7FE0001", "00880200/2/7FE00010", "00880200"]:
        assert requests.get(f"{base}/{bad}", timeout=30).status_code == 404, bad
    r = requests.get(f"{base}/7FE00010", headers={"Accept": 'multipart/related; type="image/jpeg"'},
                     timeout=30)
    assert r.status_code == 406


def test_the_bulk_pixel_data_of_a_compressed_image_is_its_frames(serve):
    g = serve()
    [ds] = stored(g, ["emri_small_jpeg_ls_lossless.dcm"])
    js = g.client().retrieve_instance_metadata(*ids(ds))
    uri = at(g, js["7FE00010"]["BulkDataURI"])
    r, parts = get_parts(uri, MULTIPART_ANY)
    assert r.status_code == 200
    assert parts == list(generate_frames(ds.PixelData, number_of_frames=10))
    assert re.search(r'type="?image/jls', r.headers["Content-Type"])


# --- frames ----------------------------------------------------------------------------------

def test_native_frames_are_the_exact_bytes_of_each_frame(serve):
    g = serve()
    [ds] = stored(g, ["emri_small.dcm"])
    frames = ds.pixel_array
    got = g.client().retrieve_instance_frames(*ids(ds), frame_numbers=[1, 5, 10])
    assert got == [frames[0].tobytes(), frames[4].tobytes(), frames[9].tobytes()]
    i = f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/" \
        f"{ds.SOPInstanceUID}"
    r, parts = get_parts(f"{i}/frames/2,3", 'multipart/related; type="application/octet-stream"')
    assert r.status_code == 200 and parts == [frames[1].tobytes(), frames[2].tobytes()]
    assert 'type="application/octet-stream"' in r.headers["Content-Type"]
    for bad, status in [("11", 404), ("1,11", 404), ("0", 400), ("x", 400), ("1,,2", 400)]:
        r = requests.get(f"{i}/frames/{bad}", timeout=30)
        assert r.status_code == status, (bad, r.status_code)
    # Native pixel data is not offered as JPEG.
    r = requests.get(f"{i}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'},
                     timeout=30)
    assert r.status_code == 406
    assert requests.get(f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                        f"/instances/{new_uid()}/frames/1", timeout=30).status_code == 404


COMPRESSED = [
    # file, its media type, the native file with the same pixels
    ("emri_small_jpeg_ls_lossless.dcm", "image/jls", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "image/jp2", "emri_small.dcm"),
    ("emri_small_RLE.dcm", "image/dicom-rle", "emri_small.dcm"),
    ("MR_small_RLE.dcm", "image/dicom-rle", "MR_small.dcm"),
    ("SC_rgb_rle.dcm", "image/dicom-rle", "SC_rgb.dcm"),
]


def test_compressed_frames_are_their_bitstreams_or_decoded_on_request(serve):
    g = serve()
    c = g.client()
    for name, media, native in COMPRESSED:
        ds = real(name)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
        assert post(g.url, [to_bytes(ds)]).status_code == 200, name
        n = int(ds.get("NumberOfFrames", 1))
        bitstreams = list(generate_frames(ds.PixelData, number_of_frames=n))
        want = [n, 1] if n > 1 else [1]
        # Any type: the stored bitstreams, with their media type and transfer syntax.
        i = f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/" \
            f"{ds.SOPInstanceUID}"
        r, parts = get_parts(f"{i}/frames/{','.join(map(str, want))}", MULTIPART_ANY)
        assert r.status_code == 200, (name, r.status_code, r.text)
        assert parts == [bitstreams[k - 1] for k in want], name
        assert f'type="{media}"' in r.headers["Content-Type"], (name, r.headers)
        assert f"transfer-syntax={ds.file_meta.TransferSyntaxUID}".encode() in r.content, name
        # Asked for by media type, through dicomweb-client.
        got = c.retrieve_instance_frames(*ids(ds), frame_numbers=want, media_types=(media,))
        assert got == [bitstreams[k - 1] for k in want], name
        # Decoded: the pixels of the same image stored uncompressed.
        pixels = real(native).pixel_array
        if n == 1:
            pixels = pixels[None, ...]
        got = c.retrieve_instance_frames(*ids(ds), frame_numbers=want,
                                         media_types=("application/octet-stream",))
        assert got == [pixels[k - 1].tobytes() for k in want], name


# --- rendered and thumbnails -----------------------------------------------------------------

def first(v) -> float:
    return float(v[0] if isinstance(v, (list, pydicom.multival.MultiValue)) else v)


def windowed(ds, frame=0, window=None) -> np.ndarray:
    """The 8-bit image PS3.3 C.11 gives: Modality LUT, then the VOI window (asked for, else
    the image's own, else the frame's min/max, LINEAR_EXACT), MONOCHROME1 inverted."""
    a = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1)) > 1:
        a = a[frame]
    x = a.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if window:
        c, w, f = window
    elif "WindowCenter" in ds:
        c, w, f = first(ds.WindowCenter), first(ds.WindowWidth), "linear"
    else:
        lo, hi = x.min(), x.max()
        c, w, f = (lo + hi) / 2, max(hi - lo, 1), "linear-exact"
    if f == "linear":
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0,
                     np.where(x > c - 0.5 + (w - 1) / 2, 255.0, ((x - (c - 0.5)) / (w - 1) + 0.5) * 255))
    else:
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255))
    y = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return y


def image(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def instance_url(g, ds) -> str:
    return f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/" \
        f"{ds.SOPInstanceUID}"


def assert_close(got: np.ndarray, want: np.ndarray, why: str, tolerance: int = 1):
    assert got.shape == want.shape, (why, got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= tolerance, (why, int(diff.max()), int((diff > tolerance).sum()))


RENDERED = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "SC_rgb.dcm", "emri_small.dcm"]


def test_rendered_png_is_the_windowed_image_pydicom_computes(serve):
    g = serve()
    dss = stored(g, RENDERED)
    c = g.client()
    for name, ds in zip(RENDERED, dss):
        body = c.retrieve_instance_rendered(*ids(ds), media_types=("image/png",))
        want = ds.pixel_array if ds.SamplesPerPixel == 3 else windowed(ds)
        assert_close(image(body), want, name)
    # A window asked for (linear, and linear-exact), on an image with a Rescale Intercept.
    ct = dss[0]
    for window in [(40, 400, "linear"), (-300, 1500.5, "linear-exact")]:
        r = requests.get(f"{instance_url(g, ct)}/rendered", timeout=30,
                         params={"window": ",".join(map(str, window))},
                         headers={"Accept": "image/png"})
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text
        assert_close(image(r.content), windowed(ct, window=window), str(window))
    # One frame of a multi-frame image, through dicomweb-client.
    mf = dss[-1]
    body = c.retrieve_instance_frames_rendered(*ids(mf), frame_numbers=[5], media_types=("image/png",))
    assert_close(image(body), windowed(mf, frame=4), "frame 5")


def test_rendered_jpeg_is_close_to_the_windowed_image(serve):
    g = serve()
    dss = stored(g, ["CT_small.dcm", "SC_rgb.dcm"])
    for ds in dss:
        r = requests.get(f"{instance_url(g, ds)}/rendered", timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
        got = image(r.content).astype(float)
        want = (ds.pixel_array if ds.SamplesPerPixel == 3 else windowed(ds)).astype(float)
        assert got.shape == want.shape
        assert np.abs(got - want).mean() < 3, np.abs(got - want).mean()
    low = requests.get(f"{instance_url(g, dss[0])}/rendered", params={"quality": "5"}, timeout=30)
    assert low.status_code == 200 and len(low.content) < len(r.content)


def test_thumbnails_and_viewports_fit_and_keep_the_aspect(serve):
    g = serve()
    [ct, wide] = stored(g, ["CT_small.dcm", "JPEG2000.dcm"])
    r = requests.get(f"{instance_url(g, ct)}/rendered", params={"viewport": "32,32"},
                     headers={"Accept": "image/png"}, timeout=30)
    assert image(r.content).shape == (32, 32)
    # 1024 rows by 256 columns fit 128 x 128 as 128 by 32.
    for url in [f"{instance_url(g, wide)}/thumbnail",
                f"{g.url}/studies/{wide.StudyInstanceUID}/series/{wide.SeriesInstanceUID}/thumbnail",
                f"{g.url}/studies/{wide.StudyInstanceUID}/thumbnail"]:
        r = requests.get(url, headers={"Accept": "image/png"}, timeout=30)
        assert r.status_code == 200, (url, r.status_code, r.text)
        assert image(r.content).shape == (128, 32), url


def test_rendered_requests_that_cannot_be_met_are_refused(serve):
    g = serve()
    [ct, rtplan, mf] = stored(g, ["CT_small.dcm", "rtplan.dcm", "emri_small.dcm"])
    i = instance_url(g, ct)
    for params, headers, status in [
            ({}, {"Accept": "image/gif"}, 406),
            ({"window": "40"}, {}, 400),
            ({"window": "40,0"}, {}, 400),
            ({"window": "40,400,cubic"}, {}, 400),
            ({"viewport": "0,10"}, {}, 400),
            ({"viewport": "100000,10"}, {}, 400),
            ({"quality": "0"}, {}, 400)]:
        r = requests.get(f"{i}/rendered", params=params, headers=headers, timeout=30)
        assert r.status_code == status, (params, headers, r.status_code)
    m = instance_url(g, mf)
    assert requests.get(f"{m}/frames/11/rendered", timeout=30).status_code == 404
    assert requests.get(f"{m}/frames/1,2/rendered", timeout=30).status_code == 400
    # An instance without pixel data has nothing to render.
    r = requests.get(f"{instance_url(g, rtplan)}/rendered", timeout=30)
    assert r.status_code == 404


# --- audit -----------------------------------------------------------------------------------

def test_each_wado_route_is_audited_as_a_read_of_its_study(serve, radveil_bin, tmp_path):
    import json
    data = tmp_path / "data"
    g = serve(data, "--dev")
    reader = token(radveil_bin, data, "--role", "clinician", "--subject", "dr-wado",
                   "--scope", "user/ImagingStudy.crs")
    auditor = token(radveil_bin, data, "--role", "auditor", "--subject", "aud",
                    "--scope", "user/AuditEvent.rs")
    study = new_uid()
    ds = planted(1, study)
    from gateway import multipart
    payload, ct = multipart([to_bytes(ds)])
    r = requests.post(g.url + "/studies", data=payload, timeout=60,
                      headers=auth(reader, **{"Content-Type": ct}))
    assert r.status_code == 200, r.text
    i = instance_url(g, ds)
    urls = [f"{g.url}/studies/{study}/metadata", f"{i}/metadata"] + ROUTES_OF_AN_INSTANCE(i)
    for u in urls:
        assert requests.get(u, headers=auth(reader), timeout=30).status_code == 200, u
    r = requests.get(g.url.removesuffix("/dicom-web") + "/audit", headers=auth(auditor), timeout=30)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def who(ev):
        return next((a["who"].get("identifier", {}).get("value") for a in ev.get("agent", [])
                     if a.get("requestor")), None)

    reads = [e for e in events if e["subtype"][0]["code"] == "read" and who(e) == "dr-wado"]
    assert len(reads) == len(urls), json.dumps(reads, indent=1)
    for e in reads:
        assert e["action"] == "R" and e["outcome"] == "0"
        assert any(x["what"]["identifier"]["value"].removeprefix("urn:oid:") == study
                   for x in e.get("entity", []) if x.get("what", {}).get("type") == "ImagingStudy")


JPEG_COLOUR = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_jpeg_no_color_transform.dcm"]


def test_jpeg_colour_images_render_as_rgb(serve):
    """YBR_FULL, YBR_FULL_422 and RGB JPEG baseline images render to the RGB pydicom
    decodes (another JPEG decoder: small differences allowed)."""
    g = serve()
    dss = stored(g, JPEG_COLOUR)
    for name, ds in zip(JPEG_COLOUR, dss):
        body = g.client().retrieve_instance_rendered(*ids(ds), media_types=("image/png",))
        got, want = image(body).astype(float), ds.pixel_array.astype(float)
        assert got.shape == want.shape, name
        assert np.abs(got - want).mean() < 2, (name, np.abs(got - want).mean())


def test_a_deleted_instances_metadata_copy_does_not_open_from_a_copy_of_the_data_taken_before(
        serve, tmp_path):
    """Crypto-shredding reaches the metadata copies: deleting one instance of a study, then
    putting back the data as it was before beside the current key store, its metadata (and
    its frames) are not served, while the study's other instance's are."""
    import shutil
    data = tmp_path / "data"
    g = serve(data)
    study, series = new_uid(), new_uid()
    gone, kept = planted(1, study, series), planted(2, study, series)
    assert post(g.url, [to_bytes(gone), to_bytes(kept)]).status_code == 200
    assert g.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(data, backup, ignore=shutil.ignore_patterns("keys"))
    g = serve(data)
    assert requests.delete(instance_url(g, gone), timeout=30).status_code == 204
    assert g.stop() == 0
    restored = tmp_path / "restored"
    shutil.copytree(backup, restored)
    shutil.copytree(data / "keys", restored / "keys")
    con = sqlite3.connect(restored / "index.db")
    assert con.execute("SELECT count(*) FROM metadata").fetchone()[0] == 2, "the copy is back"
    con.close()
    g = serve(restored)
    for url in [f"{instance_url(g, gone)}/metadata", f"{instance_url(g, gone)}/frames/1"]:
        r = requests.get(url, timeout=30)
        assert r.status_code != 200, url
        assert PLANTED["name"].encode() not in r.content and b"00100010" not in r.content
    whole = g.client().retrieve_study_metadata(study)
    assert [j["00080018"]["Value"][0] for j in whole] == [kept.SOPInstanceUID]
    assert from_json(whole[0]).PatientName == PLANTED["name"]
