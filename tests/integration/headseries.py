"""Builds DICOM MR and CT series from NIfTI head volumes, for the defacing tests: each slice
along the volume's third voxel axis becomes one MR (or CT) Image Storage file whose Image
Position and Orientation (Patient) and Pixel Spacing carry the volume's geometry (RAS
converted to LPS), so a reoriented volume gives a series acquired in another direction.

`synthetic_ct` makes a CT-like head (Hounsfield units) from an MR head and its brain mask:
air -1000, soft tissue -100..45 from the MR intensities, a skull of bone around the brain."""

from __future__ import annotations

import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# CT slices store HU + 1024 as unsigned 12-bit values (the common scanner encoding).
CT_RESCALE_INTERCEPT = -1024
CT_BITS_STORED = 12


def write_series(nii: Path, out: Path, transfer_syntax=ExplicitVRLittleEndian, modality: str = "MR") -> list[Path]:
    """Writes the volume as a series of single-frame slices. `modality="MR"`: MR Image Storage,
    the values as signed 16-bit. `modality="CT"`: CT Image Storage, the values taken as
    Hounsfield units and stored unsigned (12 bits stored) with Rescale Intercept -1024 and
    Rescale Slope 1."""
    if modality not in ("MR", "CT"):
        raise ValueError(f"modality {modality!r}: MR or CT")
    ct = modality == "CT"
    img = nib.load(nii)
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3:
        data = data[..., 0]
    if ct:
        hu = np.rint(data.astype(np.float64))
        top = (1 << CT_BITS_STORED) - 1
        data = np.clip(hu - CT_RESCALE_INTERCEPT, 0, top).astype(np.uint16)
    else:
        data = np.clip(np.rint(data.astype(np.float64)), -32768, 32767).astype(np.int16)
    sop_class = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # RAS -> LPS
    col0, col1, col2 = aff[:3, 0], aff[:3, 1], aff[:3, 2]
    ps_i, ps_j = np.linalg.norm(col0), np.linalg.norm(col1)
    row_dir, col_dir = col0 / ps_i, col1 / ps_j
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    today = datetime.date(2026, 1, 2).strftime("%Y%m%d")
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = transfer_syntax
        path = out / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = "Test^Head"
        ds.PatientID = "HEAD-1"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.ContentTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "radveil test"
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        if ct:
            # CT Image module (C.8.2.1).
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.BodyPartExamined = "HEAD"  # unpaired: Laterality (2C) is then not needed
            ds.AcquisitionNumber = 1
            ds.KVP = "120"
            ds.XRayTubeCurrent = 200
            ds.ExposureTime = 1000
            ds.ConvolutionKernel = "STANDARD"
            ds.GantryDetectorTilt = "0"
            ds.RescaleIntercept = str(CT_RESCALE_INTERCEPT)
            ds.RescaleSlope = "1"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "SP"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = "3"
            ds.RepetitionTime = "2000"
            ds.EchoTrainLength = "1"
            ds.MagneticFieldStrength = "3"
        ds.SliceThickness = f"{np.linalg.norm(col2):.6g}"
        ds.ImagePositionPatient = [f"{v:.6f}" for v in aff[:3, :3] @ [0, 0, k] + aff[:3, 3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{ps_j:.6g}", f"{ps_i:.6g}"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        if ct:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
                16, CT_BITS_STORED, CT_BITS_STORED - 1, 0)
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def head_mask(data: np.ndarray, zooms) -> np.ndarray:
    """The head in an MR volume, solid. Its surface is the MR's at 15 % of the way from the
    1st to the 99th percentile (largest connected part): where renders of the MR head show
    the skin (the blurred population mean's face is recognisable at that level only: at
    10 % or 12 % its eyes and nose are smoothed over and the face check scores it 3-12).
    Inside, what lies more than 5 mm under the skin after a 4 mm closing is head too: the
    dark skull and CSF of a T1 image, open to the outside through the ear canals and the
    sinuses, would otherwise stay air between scalp and brain."""
    import scipy.ndimage as ndi

    p1, p99 = np.percentile(data, 1), np.percentile(data, 99)
    lab, n = ndi.label(data > p1 + 0.15 * (p99 - p1))
    if n == 0:
        raise ValueError("no head in the MR volume")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    m = lab == int(np.argmax(sizes))
    zooms = np.asarray(zooms, dtype=float)
    r, pad = 4.0, int(np.ceil(6.0 / zooms.min()))
    dilated = ndi.distance_transform_edt(~np.pad(m, pad), sampling=zooms) <= r
    solid = ndi.binary_fill_holes(dilated)
    interior = ndi.distance_transform_edt(solid, sampling=zooms) > 2 * r + 1
    return ndi.binary_fill_holes(m | interior[pad:-pad, pad:-pad, pad:-pad])


def mr_head_and_brain(mr: Path, brain_mask: Path):
    """An MR head and its brain mask, as the synthetic contrasts start from them: the image
    (nibabel), its first volume (float32), voxel sizes, the solid head (`head_mask`) and the
    brain mask within it. The mask must be on the MR volume's grid."""
    img = nib.load(mr)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if data.ndim > 3:
        data = data[..., 0]
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    bm = nib.load(brain_mask)
    if bm.shape[:3] != data.shape or not np.allclose(bm.affine, img.affine, atol=1e-3):
        raise ValueError("the brain mask must be on the MR volume's grid")
    brain = np.asanyarray(bm.dataobj)
    brain = (brain[..., 0] if brain.ndim > 3 else brain) > 0.5
    head = head_mask(data, zooms)
    return img, data, zooms, head, brain & head


def synthetic_ct(mr: Path, brain_mask: Path, out: Path, seed: int = 0) -> Path:
    """A CT-like head in Hounsfield units (int16 NIfTI, same grid as `mr`) made from an MR
    head (T1-weighted: fat bright) and its brain mask (BET; same grid):

    * air -1000 HU outside the head (`head_mask`);
    * soft tissue from the MR intensity r (relative to the head's 99th percentile): in the
      brain mask 20..45 HU (darker CSF lower), elsewhere 40 HU (muscle, skin, dark MR)
      going down to -100 HU (fat, the brightest MR);
    * a skull: bone 700..1400 HU (cortical tables outside, diploe between) in a shell 3 to
      9 mm outside the brain mask, kept 3 mm under the skin, only above the skull base
      (a plane 85 mm below the top of the brain at its front, 120 mm at its back);
    * partial volume (a 0.6-voxel Gaussian blur) and noise (sigma 6 HU, seeded)."""
    import scipy.ndimage as ndi

    img, mri, zooms, head, brain = mr_head_and_brain(mr, brain_mask)
    r = np.clip(mri / np.percentile(mri[head], 99), 0.0, 1.2)
    hu = np.full(mri.shape, -1000.0, dtype=np.float32)
    hu[head] = 40.0 - 140.0 * np.clip((r[head] - 0.35) / 0.5, 0.0, 1.0)
    hu[brain] = 20.0 + 25.0 * np.clip(r[brain], 0.0, 1.0)
    # The skull: a shell outside the brain, under the scalp, above the skull base.
    outside = ndi.distance_transform_edt(~brain, sampling=zooms)
    under_skin = ndi.distance_transform_edt(head, sampling=zooms) > 3.0
    shell = (outside > 3.0) & (outside <= 9.0) & under_skin
    world = nib.affines.apply_affine(img.affine, np.argwhere(brain))
    top = world[:, 2].max()
    front, back = world[:, 1].max(), world[:, 1].min()
    ijk = np.argwhere(shell)
    w = nib.affines.apply_affine(img.affine, ijk)
    t = np.clip((w[:, 1] - back) / max(front - back, 1.0), 0.0, 1.0)
    base = top - (120.0 - 35.0 * t)
    ijk = ijk[w[:, 2] >= base]
    depth = (outside[tuple(ijk.T)] - 3.0) / 6.0  # 0 at the inner table, 1 at the outer
    hu[tuple(ijk.T)] = 700.0 + 700.0 * np.abs(2.0 * depth - 1.0)
    hu = ndi.gaussian_filter(hu, 0.6)
    hu += np.random.default_rng(seed).normal(0.0, 6.0, hu.shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    aff = img.affine
    nii = nib.Nifti1Image(ct, aff)
    nii.set_sform(aff, code=1)
    nii.set_qform(aff, code=1)
    nii.header.set_xyzt_units("mm", "sec")
    nib.save(nii, out)
    return out


def synthetic_t2(mr: Path, brain_mask: Path, out: Path, fat: float = 0.8) -> Path:
    """A T2-like head (float32 NIfTI, same grid) made from a T1-weighted one and its brain
    mask: inside the brain the contrast is inverted (CSF brightest, white matter darkest, as
    on T2); outside it, skin, fat and muscle keep their T1 order (fat is bright on fast spin
    echo T2 too), scaled so the brightest fat reaches `fat` times the brightest CSF. With a
    low `fat` the scalp is dimmer than on real T2 and the skin is hard to find."""
    img, t1, _, head, brain = mr_head_and_brain(mr, brain_mask)
    top = np.percentile(t1[brain], 99)
    t2 = t1.copy()
    t2[brain] = 0.3 * top + 1.2 * np.clip(top - t1[brain], 0.0, None)
    csf = np.percentile(t2[brain], 99)
    scalp = head & ~brain
    t2[scalp] = t1[scalp] * (fat * csf / np.percentile(t1[scalp], 99))
    nii = nib.Nifti1Image(t2.astype(np.float32), img.affine)
    nii.set_sform(img.affine, code=1)
    nii.set_qform(img.affine, code=1)
    nib.save(nii, out)
    return out


def synthetic_flair(mr: Path, brain_mask: Path, out: Path, fat: float = 0.9) -> Path:
    """A FLAIR-like head (float32 NIfTI, same grid) made from a T1-weighted one and its brain
    mask: inside the brain, CSF is suppressed (dark), grey matter brightest and white matter
    a little darker (the T1 order of grey and white matter inverted); outside it, the scalp
    keeps its T1 order (fat is bright on FLAIR too), scaled so the brightest fat reaches
    `fat` times the brightest grey matter."""
    img, t1, _, head, brain = mr_head_and_brain(mr, brain_mask)
    top = np.percentile(t1[brain], 99)
    flair = t1.copy()
    # T1 relative to the brightest white matter: CSF up to a quarter, grey matter about half.
    rel = t1[brain] / top
    flair[brain] = top * np.interp(rel, [0.0, 0.25, 0.55, 1.0], [0.1, 0.1, 1.0, 0.7])
    grey = np.percentile(flair[brain], 99)
    scalp = head & ~brain
    flair[scalp] = t1[scalp] * (fat * grey / np.percentile(t1[scalp], 99))
    nii = nib.Nifti1Image(flair.astype(np.float32), img.affine)
    nii.set_sform(img.affine, code=1)
    nii.set_qform(img.affine, code=1)
    nib.save(nii, out)
    return out


def write_enhanced(slices: list[Path], out: Path) -> Path:
    """Converts a single-frame MR series into one multi-frame Legacy Converted Enhanced MR
    image with highdicom (an independent writer of enhanced objects: per-frame Plane
    Position, shared Plane Orientation and Pixel Measures functional groups)."""
    import logging

    import highdicom as hd

    logging.getLogger("highdicom").setLevel(logging.ERROR)
    datasets = [pydicom.dcmread(p) for p in slices]
    image = hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(out)
    return out
