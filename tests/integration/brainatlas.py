"""Where a test head's brain can be, from an expert-drawn template instead of from BET: the
ICBM 2009a nonlinear symmetric template (McConnell Brain Imaging Centre, fetched from the
nilearn wheel by tools/setup-peers) registered onto the head by elastix (Debian), an affine
fit of the template's T1 onto the head's BET-masked T1.

BET alone leaks on the test heads: below the skull base into the neck and the parotid
region, tissue that a synthetic contrast made from its mask would paint brain-like. Where
BET and the registered template agree, the tissue is brain."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi

from conftest import require_tool

PARAMS = Path(__file__).with_name("icbm-affine.txt")


def first_volume(img) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    return data[..., 0] if data.ndim > 3 else data


def registered_brain(head: Path, bet_mask: Path, fixtures: Path, out: Path, height_mm: float | None = None) -> Path:
    """The template's brain (grey plus white matter probability of at least one half) on the
    head's grid, saved as a uint8 mask at `out`. `bet_mask` only guides the registration
    (the template is a brain without scalp): it must keep out of the neck, or the template
    is stretched into it; `height_mm` keeps only that much of it under its top."""
    elastix, transformix = require_tool("elastix"), require_tool("transformix")
    img = nib.load(head)
    t1 = first_volume(img).astype(np.float32)
    bet = first_volume(nib.load(bet_mask)) > 0.5
    if height_mm is not None:
        ijk = np.argwhere(bet)
        up = nib.affines.apply_affine(img.affine, ijk)[:, 2]
        low = ijk[up <= up.max() - height_mm]
        bet[tuple(low.T)] = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nib.save(nib.Nifti1Image(t1 * bet, img.affine), tmp / "fixed.nii.gz")
        gm, wm = (nib.load(fixtures / f"icbm152_{k}.nii.gz") for k in ("gm", "wm"))
        prob = (first_volume(gm).astype(np.float32) + first_volume(wm)) / 255.0
        nib.save(nib.Nifti1Image(prob, gm.affine), tmp / "prob.nii.gz")
        for cmd in (
            [elastix, "-f", tmp / "fixed.nii.gz", "-m", fixtures / "icbm152_t1.nii.gz", "-p", PARAMS, "-out", tmp],
            [transformix, "-in", tmp / "prob.nii.gz", "-tp", tmp / "TransformParameters.0.txt", "-out", tmp],
        ):
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"{Path(cmd[0]).name} failed:\n{r.stdout[-2000:]}"
        res = nib.load(tmp / "result.nii.gz")
        warped = first_volume(res)
        assert warped.shape == t1.shape and np.allclose(res.affine, img.affine, atol=1e-2), (
            "transformix's result is not on the head's grid"
        )
        brain = (warped >= 0.5).astype(np.uint8)
    part = out.with_name(out.name + ".part.nii.gz")
    nib.save(nib.Nifti1Image(brain, img.affine), part)
    part.replace(out)
    return out


def agreed_brain(bet_mask: Path, atlas: Path, out: Path, margin_mm: float = 6.0) -> Path:
    """BET's mask where the registered template's brain lies within `margin_mm` (which
    absorbs the affine fit's error at the cortex): BET's outline, without its leaks."""
    m = nib.load(bet_mask)
    bet = first_volume(m) > 0.5
    a = nib.load(atlas)
    brain = first_volume(a) > 0.5
    assert brain.shape == bet.shape and np.allclose(a.affine, m.affine, atol=1e-3)
    zooms = np.asarray(m.header.get_zooms()[:3], dtype=float)
    r = np.ceil(margin_mm / zooms).astype(int)
    grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    ball = sum((g * z) ** 2 for g, z in zip(grid, zooms)) <= margin_mm**2
    near = ndi.binary_dilation(brain, structure=ball)
    part = out.with_name(out.name + ".part.nii.gz")
    nib.save(nib.Nifti1Image((bet & near).astype(np.uint8), m.affine), part)
    part.replace(out)
    return out
