"""Builds DICOM MR series from NIfTI head volumes, for the defacing tests: each slice along
the volume's third voxel axis becomes one MR Image Storage file whose Image Position and
Orientation (Patient) and Pixel Spacing carry the volume's geometry (RAS converted to LPS),
so a reoriented volume gives a series acquired in another direction."""

from __future__ import annotations

import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_series(nii: Path, out: Path, transfer_syntax=ExplicitVRLittleEndian) -> list[Path]:
    img = nib.load(nii)
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3:
        data = data[..., 0]
    data = np.clip(np.rint(data.astype(np.float64)), -32768, 32767).astype(np.int16)
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
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = transfer_syntax
        path = out / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
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
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
