"""Defacing on the way through de-identification (`radveil deid --option
clean-recognizable-visual-features`) and multi-frame (enhanced) head images.

Oracles nobody here wrote: highdicom writes the Legacy Converted Enhanced MR image from a
single-frame series; pydicom reads every output; dciodvfy judges them; the brain mask comes
from brainextractor (BET), as in test_deface.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import require_module
from heads import FACE_THRESHOLD, HEADS, brain_lost, changed_world, dciodvfy_errors, fixture

np = require_module("numpy")
pydicom = require_module("pydicom")
OPTION = ("--option", "clean-recognizable-visual-features")


@pytest.fixture(scope="module")
def head_series(tmp_path_factory) -> list[Path]:
    """The real head as an axial single-frame MR series."""
    import headseries

    return headseries.write_series(fixture(HEADS["real"]), tmp_path_factory.mktemp("head") / "series")


@pytest.fixture(scope="module")
def enhanced(head_series, tmp_path_factory) -> Path:
    """The same head as one multi-frame Legacy Converted Enhanced MR image (highdicom)."""
    import headseries

    require_module("highdicom")
    return headseries.write_enhanced(head_series, tmp_path_factory.mktemp("enhanced") / "enhanced.dcm")


def codes(ds) -> list[str]:
    return [i.CodeValue for i in ds.get("DeidentificationMethodCodeSequence", [])]


def ball_series(out: Path) -> list[Path]:
    """A 12 cm ball of tissue in a 256 mm field: a volume, but no head and no face."""
    import headseries

    nib = require_module("nibabel")
    g = np.mgrid[:96, :96, :40].astype(np.float32)
    r = np.sqrt((g[0] - 48) ** 2 + (g[1] - 48) ** 2 + ((g[2] - 20) * 2.5) ** 2)
    vol = np.where(r < 24, 400.0, 2.0).astype(np.int16)
    src = out.parent / "ball.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.5, 2.5, 2.5, 1.0])), src)
    return headseries.write_series(src, out)


def test_deid_defaces_head_series_and_records_the_option(radveil, key_file, brain_masks, head_series,
                                                          tmp_path):
    """A head series is defaced as one volume on the way through: every slice is written with
    its face removed (the face check finds none, no voxel of the BET brain mask changed),
    Recognizable Visual Features NO and code 113102; a ball volume and single images pass
    without a claim; the outputs add no dciodvfy error."""
    small = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    balls = ball_series(tmp_path / "ball")
    out = tmp_path / "out"
    r, recs = radveil.deid([head_series[0].parent, tmp_path / "ball", small], out, key_file, *OPTION)
    assert r.returncode == 0, r.stdout + r.stderr
    by = {Path(x["input"]).resolve(): x for x in recs}
    assert len(by) == len(head_series) + len(balls) + 1
    assert all(by[p.resolve()]["visual_features"] == "cleaned" for p in head_series)
    assert all(by[p.resolve()]["visual_features"] == "none-found" for p in balls)
    assert "visual_features" not in by[small.resolve()]

    # The head: only the face and ears changed; the record says so.
    changed = []
    outputs = []
    for p in head_series:
        a, b = pydicom.dcmread(p), pydicom.dcmread(by[p.resolve()]["output"])
        assert b.RecognizableVisualFeatures == "NO"
        assert codes(b) == ["113100", "113102"], codes(b)
        assert "clean-recognizable-visual-features" in str(b.DeidentificationMethod)
        changed.append(changed_world(a, b))
        outputs.append(Path(by[p.resolve()]["output"]))
    world = np.concatenate(changed)
    assert len(world) > 100_000
    assert brain_lost(brain_masks, "real", world) == (0, 0)
    fc = radveil.run("face-check", outputs[0].parent, "--json")
    assert json.loads(fc.stdout)["status"] == "no-face", fc.stdout
    for k in (len(head_series) // 3, len(head_series) // 2):
        assert dciodvfy_errors(outputs[k]) <= dciodvfy_errors(head_series[k]), outputs[k]

    # No face on the ball: its pixels pass unchanged and nothing is claimed.
    for p in balls:
        a, b = pydicom.dcmread(p), pydicom.dcmread(by[p.resolve()]["output"])
        assert np.array_equal(a.pixel_array, b.pixel_array)
        assert codes(b) == ["113100"] and "RecognizableVisualFeatures" not in b


def test_deid_output_matches_radveil_deface(radveil, key_file, head_series, tmp_path):
    """De-identification with the option removes exactly what `radveil deface` removes."""
    r = radveil.run("deface", head_series[0].parent, "--out", tmp_path / "defaced", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r, recs = radveil.deid([head_series[0].parent], tmp_path / "out", key_file, *OPTION)
    assert r.returncode == 0, r.stdout + r.stderr
    by = {Path(x["input"]).name: x for x in recs}
    for p in head_series[::10]:
        a = pydicom.dcmread(tmp_path / "defaced" / p.name).pixel_array
        b = pydicom.dcmread(by[p.name]["output"]).pixel_array
        assert np.array_equal(a, b), p.name


def test_without_the_option_pixels_pass_untouched(radveil, key_file, head_series, tmp_path):
    r, recs = radveil.deid([head_series[0].parent], tmp_path / "out", key_file)
    assert r.returncode == 0, r.stdout + r.stderr
    for x in recs[::32]:
        a, b = pydicom.dcmread(x["input"]), pydicom.dcmread(x["output"])
        assert a.PixelData == b.PixelData and "113102" not in codes(b)
        assert "visual_features" not in x


def test_a_head_that_cannot_be_checked_is_held_back_whole(radveil, key_file, head_series, tmp_path):
    """A series missing a slice is not a regular volume: nothing of it is written, and the
    report says why; other inputs of the batch are still written."""
    gap = tmp_path / "gap"
    gap.mkdir()
    kept = [p for i, p in enumerate(head_series) if i != 100]
    for p in kept:
        shutil.copy(p, gap / p.name)
    small = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    out = tmp_path / "out"
    r, recs = radveil.deid([gap, small], out, key_file, *OPTION)
    assert r.returncode == 1, r.stdout + r.stderr
    held = [x for x in recs if x["status"] == "held"]
    assert len(held) == len(kept), recs[:3]
    assert all("evenly spaced" in x["reason"] for x in held), held[0]
    written = [x for x in recs if x["status"] == "written"]
    assert [Path(x["input"]).name for x in written] == ["CT_small.dcm"]


def test_recognizable_visual_features_yes_outside_a_volume_is_held_back(radveil, key_file, tmp_path):
    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    src.RecognizableVisualFeatures = "YES"
    p = tmp_path / "in" / "face.dcm"
    p.parent.mkdir()
    src.save_as(p)
    r, recs = radveil.deid([p], tmp_path / "out", key_file, *OPTION)
    assert r.returncode == 1 and recs[0]["status"] == "held", recs
    assert "Recognizable Visual Features" in recs[0]["reason"]
    # Without the option, the object is not the option's business.
    r, recs = radveil.deid([p], tmp_path / "out2", key_file)
    assert r.returncode == 0 and recs[0]["status"] == "written", recs


def test_keep_ears_needs_the_option(radveil, key_file, tmp_path):
    small = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    r, _ = radveil.deid([small], tmp_path / "out", key_file, "--keep-ears")
    assert r.returncode == 2 and "clean-recognizable-visual-features" in r.stderr


def test_enhanced_multiframe_image_is_defaced_like_its_series(radveil, key_file, head_series, enhanced,
                                                             tmp_path):
    """A Legacy Converted Enhanced MR image (highdicom) of the head is assembled from its
    functional groups and defaced frame by frame, removing exactly what the single-frame
    series loses; it keeps every attribute but the pixels and the record, adds no dciodvfy
    error, and goes through `deid` the same way."""
    r = radveil.run("deface", enhanced, "--out", tmp_path / "mf", "--json", timeout=600)
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["status"] == "defaced", r.stdout + r.stderr
    r = radveil.run("deface", head_series[0].parent, "--out", tmp_path / "sf", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = pydicom.dcmread(enhanced), pydicom.dcmread(tmp_path / "mf" / enhanced.name)
    ignore = {0x7FE00010, 0x00280302, 0x00120063, 0x00120064}
    assert {e.tag for e in a if e.tag not in ignore} == {e.tag for e in b if e.tag not in ignore}
    assert b.RecognizableVisualFeatures == "NO" and "113102" in codes(b)
    frames = b.pixel_array
    assert frames.shape[0] == len(head_series)
    # Each frame is compared with the slice of the series at its position.
    def key(ipp):
        return tuple(round(float(v), 2) for v in ipp)

    slice_at = {key(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient): p for p in head_series}
    for n in range(0, len(head_series), 8):
        pos = a.PerFrameFunctionalGroupsSequence[n].PlanePositionSequence[0].ImagePositionPatient
        p = slice_at[key(pos)]
        assert np.array_equal(frames[n], pydicom.dcmread(tmp_path / "sf" / p.name).pixel_array), n
    assert not np.array_equal(a.pixel_array, frames)
    assert dciodvfy_errors(tmp_path / "mf" / enhanced.name) <= dciodvfy_errors(enhanced)

    r, recs = radveil.deid([enhanced], tmp_path / "deid", key_file, *OPTION)
    assert r.returncode == 0 and recs[0]["visual_features"] == "cleaned", r.stderr + str(recs)
    c = pydicom.dcmread(recs[0]["output"])
    assert np.array_equal(c.pixel_array, frames)
    assert codes(c) == ["113100", "113102"]


def dual_echo(head_series: list[Path], tmp_path: Path) -> tuple[Path, Path]:
    """The head as one series of two echoes at the same positions (`dual/e1-*`, `dual/e2-*`,
    the second at half the signal), and a second copy of one slice of the first echo
    (`copy/again.dcm`)."""
    src = tmp_path / "dual"
    src.mkdir()
    for p in head_series:
        ds = pydicom.dcmread(p)
        ds.EchoNumbers = 1
        ds.save_as(src / f"e1-{p.name}")
        ds.EchoNumbers = 2
        ds.EchoTime = "90"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = ds.InstanceNumber + len(head_series)
        arr = ds.pixel_array
        ds.PixelData = (arr // 2).astype(arr.dtype).tobytes()
        ds.save_as(src / f"e2-{p.name}")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(head_series[120], copy / "again.dcm")
    return src, copy


def test_two_echoes_in_one_series_and_duplicate_copies(radveil, key_file, head_series, tmp_path):
    """A series holding two volumes at the same positions (a dual echo) is split by Echo
    Numbers and both are defaced; a second copy of a slice in the batch is reported as a
    duplicate and never written undefaced."""
    src, copy = dual_echo(head_series, tmp_path)
    r, recs = radveil.deid([src, copy], tmp_path / "out", key_file, *OPTION)
    by = {Path(x["input"]).name: x for x in recs}
    assert len(by) == 2 * len(head_series) + 1
    written = [x for x in recs if x["status"] == "written"]
    assert len(written) == 2 * len(head_series), r.stderr
    assert all(x["visual_features"] == "cleaned" for x in written)
    pair = sorted(by[n]["status"] for n in ("again.dcm", f"e1-{head_series[120].name}"))
    assert pair == ["duplicate", "written"], pair
    assert r.returncode == 1  # the duplicate is not written
    for echo in ("e1", "e2"):
        # Both echoes land in one output series; each is checked on its own.
        out = tmp_path / f"check-{echo}"
        out.mkdir()
        for x in written:
            if Path(x["input"]).name.startswith(echo) or (echo == "e1" and x["input"].endswith("again.dcm")):
                shutil.copy(x["output"], out)
        assert len(list(out.iterdir())) == len(head_series)
        fc = radveil.run("face-check", out, "--json")
        assert json.loads(fc.stdout)["status"] == "no-face", (echo, fc.stdout)


def test_deface_groups_images_as_deid_does(radveil, head_series, tmp_path):
    """`radveil deface` groups DICOM images into volumes as de-identification does
    (series::group_volumes): the two echoes of one series are two volumes, both defaced;
    the second copy of a slice is declined, not written, and the run exits 1."""
    src, copy = dual_echo(head_series, tmp_path)
    out = tmp_path / "out"
    r = radveil.run("deface", src, copy, "--out", out, "--json", timeout=600)
    res = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert r.returncode == 1, r.stdout + r.stderr
    defaced = [x for x in res if x["status"] == "defaced"]
    declined = [x for x in res if x["status"] != "defaced"]
    assert len(defaced) == 2 and all(x["face_score_before"] >= FACE_THRESHOLD > x["face_score_after"] for x in defaced), res
    assert len(declined) == 1 and "same SOP Instance UID" in declined[0]["detail"], declined
    # One of the two copies was written (defaced), the other not at all.
    twin = f"e1-{head_series[120].name}"
    assert {Path(declined[0]["input"]).name} < {"again.dcm", twin}
    assert (out / "again.dcm").exists() != (out / twin).exists()
    assert len(list(out.iterdir())) == 2 * len(head_series)
    for echo in ("e1", "e2"):
        check = tmp_path / f"check-{echo}"
        check.mkdir()
        for f in out.iterdir():
            if f.name.startswith(echo) or (echo == "e1" and f.name == "again.dcm"):
                shutil.copy(f, check)
        assert len(list(check.iterdir())) == len(head_series)
        fc = radveil.run("face-check", check, "--json")
        assert json.loads(fc.stdout)["status"] == "no-face", (echo, fc.stdout)
