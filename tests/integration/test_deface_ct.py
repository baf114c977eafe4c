"""Defacing CT (issue 4): `radveil deface` on CT-like heads, as NIfTI volumes in Hounsfield
units and as DICOM CT Image Storage series (unsigned 12-bit, Rescale Intercept -1024).

The CT heads are synthetic, made by `headseries.synthetic_ct` from the two MR test heads
(the real 3 T MPRAGE and the pydeface population mean) and their BET brain masks: air at
-1000 HU, skin and soft tissue at -100..40 HU, brain 20..45 HU, a skull of bone
(700..1400 HU) above the skull base, mild noise. They are built per session under pytest's
temporary directory. The properties checked are those test_deface.py checks on MR: a face
found before and none after, not one voxel removed from the (eroded) brain mask, the ears
removed, DICOM slices changed only in their pixels and de-identification record, no new
dciodvfy error; and for CT, that removed voxels hold air (-1000 HU), never a tissue value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require_module
from heads import (
    FACE_THRESHOLD,
    HEADS,
    MIN_EAR_VOXELS,
    MIN_EAR_VOXELS_EACH_SIDE,
    MIN_FACE_VOXELS,
    brain_lost,
    changed_world,
    dciodvfy_errors,
    ears_removed,
    fixture,
    removed_world,
    reoriented,
    run_deface,
)

nib = require_module("nibabel")
np = require_module("numpy")
require_module("scipy")
import scipy.ndimage as ndi  # noqa: E402

AIR_HU = -1000.0


@pytest.fixture(scope="session")
def ct_heads(brain_masks, tmp_path_factory) -> dict:
    """Synthetic CT heads (int16 NIfTI, HU) made from the MR test heads."""
    import headseries

    d = tmp_path_factory.mktemp("ct-heads")
    return {key: headseries.synthetic_ct(fixture(name), brain_masks[key], d / f"{key}_ct.nii.gz", seed=4)
            for key, name in HEADS.items()}


def ct_input(ct_heads, head: str, how: str, tmp_path: Path) -> Path:
    src = ct_heads[head]
    if how != "as-is":
        # The background outside the old grid is air, as on a CT.
        src = reoriented(src, how, tmp_path / f"{head}_ct_{how}.nii.gz", cval=AIR_HU)
    return src


def assert_air(fill_hu: float, input_hu: np.ndarray):
    """The fill is air: a value the input's air holds (-1000 HU with its noise)."""
    air = input_hu[input_hu < -900]
    assert air.min() <= fill_hu <= air.max() and abs(fill_hu - AIR_HU) <= 30, (
        f"removed voxels hold {fill_hu} HU; the air around the head is {air.min()}..{air.max()} HU")


@pytest.mark.parametrize("head", ["real", "mean"])
def test_synthetic_ct_head_is_ct_like(ct_heads, brain_masks, head):
    """The test material itself: air at -1000 HU, soft tissue within -100..100 HU, a skull of
    bone, the brain inside it at brain HU."""
    img = nib.load(ct_heads[head])
    hu = np.asanyarray(img.dataobj).astype(np.float64)
    ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    assert img.get_data_dtype() == np.int16
    assert abs(np.median(hu[hu < -500]) - AIR_HU) <= 2
    # Soft tissue, 2 voxels away from air and bone (partial volume lies between).
    tissue = hu[ndi.binary_erosion((hu > -500) & (hu < 300), iterations=2)]
    assert np.mean((tissue >= -110) & (tissue <= 110)) > 0.99, np.percentile(tissue, [1, 50, 99])
    assert np.mean(tissue < -50) > 0.01, "some fat"
    bone_ml = np.sum(hu >= 600) * ml
    assert 150 <= bone_ml <= 900, bone_ml
    brain = np.asanyarray(nib.load(brain_masks[head]).dataobj) > 0.5
    core = hu[ndi.binary_erosion(brain, iterations=5)]
    assert 15 <= np.median(core) <= 50 and np.mean(core > 300) < 0.001, np.percentile(core, [1, 50, 99])


@pytest.mark.parametrize("how", ["as-is", "oblique"])
@pytest.mark.parametrize("head", ["real", "mean"])
def test_ct_nifti_face_and_ears_removed_no_brain(radveil, ct_heads, brain_masks, tmp_path, head, how):
    src = ct_input(ct_heads, head, how, tmp_path)
    r, res = run_deface(radveil, src, tmp_path / "out")
    assert r.returncode == 0 and res.get("status") == "defaced", r.stdout + r.stderr
    out = tmp_path / "out" / src.name
    # A face before (as on MR, the blurred mean on an oblique grid may score below the
    # threshold even before), none after.
    assert res["face_score_after"] < FACE_THRESHOLD, res
    if head == "real" or how == "as-is":
        assert res["face_score_before"] >= FACE_THRESHOLD, res
    fc = radveil.run("face-check", out, "--json")
    assert fc.returncode == 0 and json.loads(fc.stdout)["status"] == "no-face", fc.stdout
    # Not one voxel of the brain (BET's mask, 2 voxels in) went.
    world, fill = removed_world(src, out)
    assert len(fill) == 1, f"removed voxels hold several values: {fill[:5]}"
    assert brain_lost(brain_masks, head, world) == (0, 0)
    # Removed voxels hold air.
    assert_air(float(fill[0]), np.asanyarray(nib.load(src).dataobj))
    # The face and both ears lost tissue.
    assert res["face_voxels"] > MIN_FACE_VOXELS and res["ear_voxels"] > MIN_EAR_VOXELS, res
    left, right = ears_removed(brain_masks[head], world)
    assert left > MIN_EAR_VOXELS_EACH_SIDE and right > MIN_EAR_VOXELS_EACH_SIDE, (left, right)
    # The header is kept byte for byte.
    assert nib.load(src).header.binaryblock == nib.load(out).header.binaryblock


@pytest.mark.parametrize("how", ["as-is", "oblique"])
@pytest.mark.parametrize("head", ["real", "mean"])
def test_ct_dicom_series_defaced(radveil, ct_heads, brain_masks, dciodvfy, tmp_path, head, how):
    """The CT head as a DICOM CT series: defaced as one volume; every slice keeps every
    attribute but its pixels and the de-identification record; removed pixels hold air."""
    import headseries

    pydicom = require_module("pydicom")
    src = ct_input(ct_heads, head, how, tmp_path)
    series_dir = tmp_path / "series"
    slices = headseries.write_series(src, series_dir, modality="CT")
    r = radveil.run("deface", series_dir, "--out", tmp_path / "out", "--json", timeout=600)
    res = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 0 and len(res) == 1 and res[0]["status"] == "defaced", r.stdout + r.stderr
    res = res[0]
    assert res["face_score_after"] < FACE_THRESHOLD, res
    if head == "real" or how == "as-is":
        assert res["face_score_before"] >= FACE_THRESHOLD, res
    assert res["face_voxels"] > MIN_FACE_VOXELS and res["ear_voxels"] > MIN_EAR_VOXELS, res
    outs = [tmp_path / "out" / p.name for p in slices]
    assert all(p.exists() for p in outs)
    fc = radveil.run("face-check", tmp_path / "out", "--json")
    assert json.loads(fc.stdout)["status"] == "no-face", fc.stdout
    ignore = {0x7FE00010, 0x00280302, 0x00120063, 0x00120064}
    world, fills, air, defaced = [], set(), [], []
    for k, (a_path, b_path) in enumerate(zip(slices, outs)):
        a, b = pydicom.dcmread(a_path), pydicom.dcmread(b_path)
        assert b.SOPClassUID == headseries.CT_IMAGE_STORAGE
        # Only the pixels and the de-identification record differ (the CT module, Rescale
        # Intercept and Slope, Bits Stored included).
        assert {e.tag for e in a if e.tag not in ignore} == {e.tag for e in b if e.tag not in ignore}
        for e in a:
            if e.tag not in ignore:
                assert b[e.tag].value == e.value, (b_path.name, e.tag)
        assert b.RecognizableVisualFeatures == "NO"
        assert "113102" in [i.CodeValue for i in b.DeidentificationMethodCodeSequence]
        pa, pb = a.pixel_array, b.pixel_array
        assert pb.dtype == np.uint16 and int(pb.max()) < 1 << int(b.BitsStored)
        changed = pa != pb
        if changed.any():
            world.append(changed_world(a, b))
            fills.update(np.unique(pb[changed]).tolist())
            defaced.append(k)
        air.append(pa[pa < 124])  # stored values below -900 HU
    assert len(fills) == 1, f"removed pixels hold several values: {sorted(fills)[:5]}"
    slope, intercept = float(a.RescaleSlope), float(a.RescaleIntercept)
    air_hu = np.concatenate(air).astype(np.float64) * slope + intercept
    assert_air(fills.pop() * slope + intercept, air_hu)
    world = np.concatenate(world)
    assert len(world) > 100_000
    assert brain_lost(brain_masks, head, world) == (0, 0)
    left, right = ears_removed(brain_masks[head], world)
    assert left > MIN_EAR_VOXELS_EACH_SIDE and right > MIN_EAR_VOXELS_EACH_SIDE, (left, right)
    # The input is a plausible CT to dciodvfy, and defacing adds no error.
    for k in sorted({len(slices) // 3, len(slices) // 2, defaced[len(defaced) // 2]}):
        before = dciodvfy_errors(slices[k])
        assert before == set(), before
        assert dciodvfy_errors(outs[k]) <= before, outs[k]


@pytest.mark.parametrize("head", ["real", "mean"])
def test_ct_with_padding_outside_the_reconstruction_circle(radveil, ct_heads, brain_masks, tmp_path, head):
    """Many CT scanners store -3024 HU (or another padding value) outside the reconstruction
    circle, and converters to NIfTI keep it. The head lies wholly inside the circle; the
    face must go, the brain stay, and removed voxels hold air, never tissue or the padding
    (radveil leaves the padding out when it looks for the skin and the background)."""
    img = nib.load(ct_heads[head])
    hu = np.asanyarray(img.dataobj).copy()
    ni, nj = hu.shape[:2]
    ii, jj = np.mgrid[:ni, :nj]
    r2 = (ii - ni / 2) ** 2 + (jj - nj / 2) ** 2
    radius2 = (np.sqrt(r2[(hu > -500).any(axis=2)].max()) + 3.0) ** 2  # the head 3 voxels inside
    hu[r2 > radius2] = -3024
    src = tmp_path / f"{head}_ct_padded.nii.gz"
    nib.save(nib.Nifti1Image(hu, img.affine, header=img.header), src)
    r, res = run_deface(radveil, src, tmp_path / "out")
    assert r.returncode == 0 and res.get("status") == "defaced", r.stdout + r.stderr
    assert res["face_score_before"] >= FACE_THRESHOLD > res["face_score_after"], res
    assert res["face_voxels"] > MIN_FACE_VOXELS and res["ear_voxels"] > MIN_EAR_VOXELS, res
    world, fill = removed_world(src, tmp_path / "out" / src.name)
    assert len(fill) == 1 and abs(fill[0] - AIR_HU) <= 30, fill
    assert brain_lost(brain_masks, head, world) == (0, 0)
