"""Hostile pixel descriptions and decompression bombs (issue 13, part 1 items 4 and 8).

Each hostile file must give its own error line and never a crash (a panic, an abort on a
failed allocation), the good files of the same run must still be processed, and nothing
may be allocated before the claimed size was checked: the runs that meet a bomb are made
under an address-space limit that an allocation of the claimed size would exceed.
"""

from __future__ import annotations

import gzip
import json
import resource
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, require_module

require_module("pydicom")
require_module("numpy")

import corpus  # noqa: E402

# 2^61 frames of 128 x 128 x 2 bytes: 2^76 bytes, 0 modulo 2^64.
FRAMES_2_61 = str(1 << 61)
FRAMES_2_63 = str(1 << 63)
# Address space for runs that meet a bomb: far above what the good files need, far below
# what the bombs claim.
ADDRESS_SPACE = 6 << 30


def run_limited(radveil, *args, timeout=240):
    """Runs radveil with its address space limited (an allocation of a bomb's claimed size
    fails, which aborts a process that does not check first)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    return subprocess.run([str(radveil.binary), *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout, preexec_fn=limit)


def not_a_crash(r: subprocess.CompletedProcess):
    assert r.returncode in (0, 1), f"exit status {r.returncode} (a crash?)\n{r.stdout}\n{r.stderr}"
    assert "panicked" not in r.stderr and "memory allocation" not in r.stderr, r.stderr


def json_lines(r) -> list[dict]:
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip().startswith("{")]


def with_frames(src: Path, dst: Path, frames: str, flip_pixel: bool = False) -> Path:
    """A copy of `src` claiming `frames` frames (written as raw bytes: pydicom would check
    the IS range)."""
    import pydicom
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(src)
    if flip_pixel:
        px = bytearray(ds.PixelData)
        px[len(px) // 2] ^= 0x01
        ds.PixelData = bytes(px)
    value = frames.encode() + (b" " if len(frames) % 2 else b"")
    ds[0x00280008] = RawDataElement(0x00280008, "IS", len(value), value, 0, False, True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_overflowing_frame_count_gives_no_binding_hash(radveil, tmp_path):
    """NumberOfFrames = 2^61 made the pixel byte count wrap to 0: the binding hash covered no
    pixel, so an edited image kept it. Now it is an error, and a good file still binds."""
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    good = tmp_path / "good.dcm"
    shutil.copy(src, good)
    hostile = with_frames(src, tmp_path / "hostile.dcm", FRAMES_2_61)
    edited = with_frames(src, tmp_path / "edited.dcm", FRAMES_2_61, flip_pixel=True)
    r = radveil.run("verify", good, hostile, edited, "--binding", "--allow-unsigned", "--json")
    not_a_crash(r)
    lines = json_lines(r)
    by = {}
    for x in lines:
        by.setdefault(Path(x["input"]).name, {}).setdefault(x["status"], []).append(x.get("detail", ""))
    assert "binding" in by["good.dcm"], by
    for name in ("hostile.dcm", "edited.dcm"):
        assert "binding" not in by[name], f"{name} got a binding hash: {by[name]}"
        assert "binding-unavailable" in by[name], by[name]
        assert any("Number of Frames" in d or "describe" in d for d in by[name]["binding-unavailable"]), by[name]
        # The advisory check reads the same description.
        assert "advisory" in by[name], by[name]


def test_overflowing_frame_count_is_not_proven_by_the_ledger(radveil, key_file, tmp_path):
    """An image logged with NumberOfFrames = 2^61 and then edited must not be `proven`."""
    src = corpus.pydicom_test_dir() / "CT_small.dcm"
    hostile = with_frames(src, tmp_path / "hostile.dcm", FRAMES_2_61)
    dir_, signer = tmp_path / "ledger", tmp_path / "signer.key"
    r = radveil.run("ledger", "init", dir_, "--origin", "radveil.test/hostile", "--signer-key", signer)
    assert r.returncode == 0, r.stderr
    verifier = r.stdout.strip()
    r = radveil.run("ledger", "append", dir_, hostile, "--key-file", key_file)
    not_a_crash(r)
    r = radveil.run("ledger", "checkpoint", dir_, "--signer-key", signer)
    assert r.returncode == 0, r.stderr
    edited_dir = tmp_path / "edited"
    edited_dir.mkdir()
    edited = with_frames(src, edited_dir / "hostile.dcm", FRAMES_2_61, flip_pixel=True)
    r = radveil.run("ledger", "verify", dir_, edited, "--key-file", key_file, "--verifier", verifier, "--json")
    not_a_crash(r)
    res = {Path(x["input"]).name: x for x in json_lines(r) if "input" in x}
    assert res["hostile.dcm"]["status"] != "proven", res
    assert r.returncode == 1


def jpegls_bomb(path: Path, frames: int) -> Path:
    """A JPEG-LS Lossless image of `frames` frames of 8192 x 16384 8-bit samples (128 MiB
    each decoded), every frame a flat codestream of about 1 KB."""
    import jpeg_ls
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    codestream = bytes(jpeg_ls.encode(np.zeros((8192, 16384), np.uint8)))
    src = pydicom.dcmread(corpus.pydicom_test_dir() / "CT_small.dcm")
    ds = pydicom.Dataset()
    for kw in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality"):
        setattr(ds, kw, getattr(src, kw))
    ds.SOPInstanceUID = src.SOPInstanceUID + ".77"
    ds.Rows, ds.Columns = 8192, 16384
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([codestream] * frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_jpegls_bomb_is_refused_before_decoding(radveil, tmp_path):
    """A few hundred KB of JPEG-LS claiming 32 GiB of pixels: refused (checked against the
    memory budget before anything is allocated), while a good file of the run binds."""
    bomb = jpegls_bomb(tmp_path / "bomb.dcm", 256)
    assert bomb.stat().st_size < 1 << 20
    good = tmp_path / "good.dcm"
    shutil.copy(corpus.pydicom_test_dir() / "CT_small.dcm", good)
    r = run_limited(radveil, "verify", bomb, good, "--binding", "--allow-unsigned", "--json")
    not_a_crash(r)
    statuses = {}
    for x in json_lines(r):
        statuses.setdefault(Path(x["input"]).name, {})[x["status"]] = x.get("detail", "")
    assert "binding" in statuses["good.dcm"], statuses
    assert "binding" not in statuses["bomb.dcm"], statuses
    assert "memory" in statuses["bomb.dcm"].get("binding-unavailable", ""), statuses


def nifti_header(dims, datatype=4, bitpix=16, vox_offset=352.0) -> bytes:
    """A NIfTI-1 header (348 bytes) and the 4-byte extension flag."""
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    dim = [len(dims), *dims] + [1] * (7 - len(dims))
    struct.pack_into("<8h", h, 40, *dim)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", h, 108, vox_offset)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0"


def ball_volume(n=48):
    import numpy as np

    z, y, x = np.mgrid[:n, :n, :n]
    r = np.sqrt((x - n / 2) ** 2 + (y - n / 2) ** 2 + (z - n / 2) ** 2)
    return np.where(r < n / 3, 1000, 0).astype("<i2")


def test_nifti_gz_bomb_is_not_inflated_past_its_header(radveil, tmp_path):
    """A .nii.gz whose header needs 221 KB but whose gzip stream inflates to 8 GiB: refused
    after inflating what the header describes (plus a margin), never 4 GiB; the good
    volume of the same run is processed."""
    vol = ball_volume()
    good = tmp_path / "good.nii.gz"
    good.write_bytes(gzip.compress(nifti_header(vol.shape) + vol.tobytes(order="F"), 1))
    bomb = tmp_path / "bomb.nii.gz"
    with open(bomb, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(nifti_header(vol.shape) + vol.tobytes(order="F"))
        zeros = bytes(64 << 20)
        for _ in range(128):
            gz.write(zeros)
    assert bomb.stat().st_size < 16 << 20
    r = run_limited(radveil, "deface", good, bomb, "--out", tmp_path / "out", "--json")
    not_a_crash(r)
    res = {Path(x["input"]).name: x for x in json_lines(r)}
    assert set(res) == {"good.nii.gz", "bomb.nii.gz"}, r.stdout + r.stderr
    assert res["bomb.nii.gz"]["status"] == "declined"
    assert "header" in res["bomb.nii.gz"]["detail"], res["bomb.nii.gz"]
    # The ball is no head; it was read and judged, not lost to the bomb.
    assert "not a head" in res["good.nii.gz"].get("detail", ""), res["good.nii.gz"]
    assert r.returncode == 1


def series(dst: Path, n_slices=12, size=48, series_uid="1.2.826.0.1.3680043.8.498.1") -> list[Path]:
    """A single-frame DICOM series of a ball: `n_slices` CT slices."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dst.mkdir(parents=True, exist_ok=True)
    vol = ball_volume(size)
    out = []
    for k in range(n_slices):
        ds = pydicom.Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.SeriesInstanceUID = series_uid
        ds.Modality, ds.PatientID = "CT", "P"
        ds.ImagePositionPatient = [0, 0, k * 2.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [2.0, 2.0]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
        ds.PixelData = vol[:, :, k * size // n_slices].astype("<i2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        p = dst / f"s{k:03}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def test_dicom_frame_count_of_2_63_is_an_error_in_deface(radveil, tmp_path):
    """A multi-frame image claiming 2^63 frames panicked (capacity overflow) in the series
    reader, or aborted on the allocation; now it is declined, and the good series of the
    same run is still read and judged."""
    good = series(tmp_path / "in" / "good")
    hostile = with_frames(good[0], tmp_path / "in" / "hostile.dcm", FRAMES_2_63)
    import pydicom

    ds = pydicom.dcmread(hostile)
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(hostile, enforce_file_format=True)
    r = run_limited(radveil, "deface", tmp_path / "in", "--out", tmp_path / "out", "--json")
    not_a_crash(r)
    lines = json_lines(r)
    hostile_lines = [x for x in lines if "hostile.dcm" in x["input"]]
    good_lines = [x for x in lines if "good" in x["input"]]
    assert hostile_lines and all(x["status"] == "declined" for x in hostile_lines), lines
    assert good_lines, f"the good series was not reached: {lines}"
    assert r.returncode == 1


def test_dicom_frame_count_of_2_63_is_held_back_in_deid(radveil, key_file, tmp_path):
    """The same image through `radveil deid` with the Clean Recognizable Visual Features
    option (volumes are assembled and face-checked inside the workers): a per-file outcome,
    never an abort of the batch."""
    good = series(tmp_path / "in" / "good")
    hostile = with_frames(good[0], tmp_path / "in" / "hostile.dcm", FRAMES_2_63)
    import pydicom

    ds = pydicom.dcmread(hostile)
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(hostile, enforce_file_format=True)
    r = run_limited(radveil, "deid", tmp_path / "in", "--out", tmp_path / "out", "--key-file", key_file,
                    "--option", "clean-recognizable-visual-features")
    assert r.returncode in (0, 1), f"exit status {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "panicked" not in r.stderr and "memory allocation" not in r.stderr, r.stderr
    # The good series (no head: face-checked, no face) is written; the hostile image is
    # held back as a unit that cannot be assembled, not lost to a panic ("failed").
    assert "12 written, 1 held back, 0 failed" in r.stderr, r.stderr


def test_a_panicking_third_party_decoder_does_not_end_the_run(radveil, tmp_path):
    """jpeg-decoder unwraps on these real YBR_FULL_422 JPEG files when asked for the stored
    samples; that ended `radveil verify` (exit 101) before the files after it were read.
    Now the file gets its own error and the next file still binds."""
    t = corpus.pydicom_test_dir()
    names = ["SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm", "CT_small.dcm"]
    for n in names:
        shutil.copy(t / n, tmp_path / n)
    r = radveil.run("verify", *(tmp_path / n for n in names), "--binding", "--allow-unsigned", "--json")
    # The panic inside the decoder is still reported by the default hook on stderr; what
    # matters is that it is contained.
    assert r.returncode in (0, 1), f"exit status {r.returncode}\n{r.stderr}"
    statuses = {}
    for x in json_lines(r):
        statuses.setdefault(Path(x["input"]).name, set()).add(x["status"])
    assert "binding" in statuses.get("CT_small.dcm", set()), statuses
    for n in names[:2]:
        assert statuses.get(n, set()) & {"binding", "binding-unavailable"}, statuses
