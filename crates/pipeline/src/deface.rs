//! Defacing and the face check, one input at a time: a NIfTI-1 file, or a DICOM volume (the
//! single-frame slices of a series, or one multi-frame image). Every input is read from a
//! regular file only (a FIFO or device is refused, never waited on), within the memory
//! budget; outputs and renders are written through [`Dir`], never over an existing file
//! or through a link. Each input comes to one [`Line`] (or [`Check`]) whose `Display` is
//! the tab-separated line `radveil deface` (`radveil face-check`) prints and whose
//! `to_json` is its `--json` line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use radveil_deface::{Defaced, FaceCheck, Refaced, Volume, FACE_THRESHOLD};
use radveil_part10::{Grant, MemoryBudget, DEFAULT_WAIT};

use crate::input::{self, Input, Scratch};
use crate::Dir;

/// Why an input was not defaced (or not checked): the whole chain of causes, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Declined(pub String);

impl Declined {
    /// `e` and each of its sources, joined by ": ".
    fn of(e: &(dyn std::error::Error + 'static)) -> Declined {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Declined(text)
    }

    /// `e`'s chain after `what` (what was being done).
    fn during(what: &str, e: &(dyn std::error::Error + 'static)) -> Declined {
        Declined(format!("{what}: {}", Declined::of(e).0))
    }
}

/// Converts any error into its [`Declined`] line.
fn why<E: std::error::Error + 'static>(e: E) -> Declined {
    Declined::of(&e)
}

/// What replaces the face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Background (air).
    Deface,
    /// A smooth surface of one tissue value.
    Reface,
}

/// How inputs are defaced.
#[derive(Debug, Clone)]
pub struct Options {
    /// The output directory (made when missing).
    pub out: PathBuf,
    /// Leave the ears on.
    pub keep_ears: bool,
    /// What replaces the face.
    pub mode: Mode,
    /// Where renders of the result are saved as PNG files, if anywhere.
    pub render: Option<PathBuf>,
}

/// A defaced (and perhaps refaced) volume.
#[derive(Debug)]
pub struct Done {
    /// What defacing removed, and the face checks before and after.
    pub defaced: Defaced,
    /// What refacing filled in, when asked.
    pub refaced: Option<Refaced>,
}

impl Done {
    /// The face check that decided the result.
    pub fn after(&self) -> Option<&FaceCheck> {
        match &self.refaced {
            Some(r) => Some(&r.after),
            None => self.defaced.after.as_ref(),
        }
    }
}

/// The status of one defacing result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Defaced and written.
    Defaced,
    /// Defaced, refaced and written.
    Refaced,
    /// Not written, with the reason.
    Declined,
}

impl Status {
    /// The status as printed.
    pub fn name(self) -> &'static str {
        match self {
            Status::Defaced => "defaced",
            Status::Refaced => "refaced",
            Status::Declined => "declined",
        }
    }
}

/// What became of one input.
#[derive(Debug)]
pub enum Fate {
    /// Written: `output` is the file (a NIfTI input) or the directory of the first file (a
    /// DICOM volume).
    Written {
        /// Where it was written.
        output: String,
        /// What was done.
        done: Box<Done>,
    },
    /// Not written.
    Declined(Declined),
}

/// One result line of `radveil deface`.
#[derive(Debug)]
pub struct Line {
    /// The input (a file, or a DICOM volume's label), as printed.
    pub input: String,
    /// What became of it.
    pub fate: Fate,
    /// Seconds it took.
    pub seconds: f64,
}

impl Line {
    fn new(input: String, result: Result<(String, Done), Declined>, started: Instant) -> Line {
        let seconds = started.elapsed().as_secs_f64();
        let fate = match result {
            Ok((output, done)) => Fate::Written {
                output,
                done: Box::new(done),
            },
            Err(d) => Fate::Declined(d),
        };
        Line {
            input,
            fate,
            seconds,
        }
    }

    fn declined(path: &Path, why: &str) -> Line {
        Line::new(
            path.display().to_string(),
            Err(Declined(why.to_string())),
            Instant::now(),
        )
    }

    /// The status.
    pub fn status(&self) -> Status {
        match &self.fate {
            Fate::Written { done, .. } if done.refaced.is_some() => Status::Refaced,
            Fate::Written { .. } => Status::Defaced,
            Fate::Declined(_) => Status::Declined,
        }
    }

    /// Whether the input was not defaced.
    pub fn failed(&self) -> bool {
        matches!(self.fate, Fate::Declined(_))
    }

    /// The `--json` line.
    pub fn to_json(&self) -> serde_json::Value {
        let input = &self.input;
        let status = self.status().name();
        match &self.fate {
            Fate::Written { output, done } => {
                let d = &done.defaced;
                let (before, after) = scores(done);
                let mut line = serde_json::json!({
                    "input": input, "status": status, "output": output,
                    "face_voxels": d.face_voxels, "ear_voxels": d.ear_voxels,
                    "cut_depth_mm": d.depth,
                    "nasion_ras_mm": d.nasion.map(|v| (v * 10.0).round() / 10.0),
                    "nose_tip_ras_mm": d.nose_tip.map(|v| (v * 10.0).round() / 10.0),
                    "face_score_before": (before * 100.0).round() / 100.0,
                    "face_score_after": (after * 100.0).round() / 100.0,
                    "seconds": (self.seconds * 100.0).round() / 100.0});
                if let Some(r) = &done.refaced {
                    line["refaced_voxels"] = r.filled_voxels.into();
                }
                line
            }
            Fate::Declined(e) => {
                serde_json::json!({"input": input, "status": status, "detail": e.0})
            }
        }
    }
}

/// The face scores before and after (0 where not measured).
fn scores(done: &Done) -> (f64, f64) {
    let before = done.defaced.before.as_ref().map_or(0.0, |c| c.score);
    let after = done.after().map_or(0.0, |c| c.score);
    (before, after)
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (input, status) = (&self.input, self.status().name());
        match &self.fate {
            Fate::Written { output, done } => {
                let d = &done.defaced;
                let (before, after) = scores(done);
                let reface = done.refaced.as_ref().map_or(String::new(), |r| {
                    format!(", {} voxels refaced", r.filled_voxels)
                });
                write!(
                    f,
                    "{status}\t{input}\t{output}\tface {} tissue voxels, ears {} tissue voxels, cut {:.0} mm behind the nasion{reface}; face score {:.1} before, {:.1} after (threshold {}); {:.2} s",
                    d.face_voxels, d.ear_voxels, d.depth, before, after, FACE_THRESHOLD, self.seconds
                )
            }
            Fate::Declined(e) => write!(f, "{status}\t{input}\t{e}"),
        }
    }
}

/// Whether `p` is named as a NIfTI-1 file.
fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// Defaces every input, calling `emit` with each result line as it comes: NIfTI files
/// first, then DICOM files and directories, grouped into volumes as `radveil deid` groups
/// them (`series::group_volumes`). A volume that is not a head, or where a face would
/// remain, is declined (not written) with the reason.
pub fn deface_all(
    inputs: &[PathBuf],
    options: &Options,
    budget: &MemoryBudget,
    mut emit: impl FnMut(Line),
) {
    let (nifti, dicom): (Vec<PathBuf>, Vec<PathBuf>) = inputs
        .iter()
        .cloned()
        .partition(|p| p.is_file() && is_nifti(p));
    for input in &nifti {
        emit(deface_nifti(input, options, budget));
    }
    if dicom.is_empty() {
        return;
    }
    let walked = crate::walk::collect(&dicom, budget);
    for r in walked.refused {
        emit(Line::declined(&r.path, &r.reason));
    }
    let mut images = Vec::new();
    let mut scratch = Scratch::new();
    for f in walked.files {
        // The header only (up to the pixel data), from a regular file, within the budget.
        let header = Input::open(&f)
            .ok()
            .and_then(|i| input::load(i, &mut scratch, budget, 0).ok())
            .and_then(|l| radveil_deface::series::image_header(l.bytes));
        scratch.release();
        match header {
            Some(h) => images.push((f, h)),
            None => emit(Line::declined(&f, "not a DICOM image")),
        }
    }
    let (groups, loose) = radveil_deface::series::group_volumes(images);
    for f in loose {
        emit(Line::declined(
            &f,
            "a DICOM image without a Series Instance UID or plane geometry (Image Position and Orientation (Patient))",
        ));
    }
    for (n, group) in groups.iter().enumerate() {
        let started = Instant::now();
        let files = &group.images;
        let label = format!(
            "volume {} ({} files, first {})",
            n + 1,
            files.len(),
            files[0].display()
        );
        let result = deface_series(files, &dicom, options, budget);
        emit(Line::new(label, result, started));
        for f in &group.duplicates {
            emit(Line::declined(
                f,
                "a second copy of an image of this volume (same SOP Instance UID); not written",
            ));
        }
    }
}

/// Defaces one NIfTI-1 file and writes it (same name) into the output directory; saves
/// renders of the result when asked.
pub fn deface_nifti(input: &Path, options: &Options, budget: &MemoryBudget) -> Line {
    let started = Instant::now();
    let result = nifti(input, options, budget).map(|(t, d)| (t.display().to_string(), d));
    Line::new(input.display().to_string(), result, started)
}

fn nifti(
    input: &Path,
    options: &Options,
    budget: &MemoryBudget,
) -> Result<(PathBuf, Done), Declined> {
    let (raw, _raw_grant) = read_file(input, budget)?;
    let file =
        radveil_deface::nifti_io::NiftiFile::from_bytes_with_budget(raw, budget).map_err(why)?;
    let (mut volume, header) = file.volume_with_budget(budget).map_err(why)?;
    let done = run_mode(&mut volume, options, budget)?;
    let bytes = file
        .defaced(&header, &done.defaced.removed, &volume.data)
        .map_err(why)?;
    let name = input.file_name().ok_or_else(no_name)?;
    let target = Dir::create(&options.out)
        .and_then(|d| d.write_bytes_at(Path::new(name), &bytes))
        .map_err(why)?;
    if let (Some(dir), Some(after)) = (&options.render, done.after()) {
        let suffix = if done.refaced.is_some() {
            ".refaced"
        } else {
            ".defaced"
        };
        save_renders(dir, &name.to_string_lossy(), suffix, after)?;
    }
    Ok((target, done))
}

fn no_name() -> Declined {
    Declined("input without a file name".into())
}

/// Defaces one DICOM volume and writes every file (under the output directory, at its
/// path relative to the input directory it came from); nothing is written unless every
/// file can be. Returns the directory of the first file written.
pub fn deface_series(
    files: &[PathBuf],
    roots: &[PathBuf],
    options: &Options,
    budget: &MemoryBudget,
) -> Result<(String, Done), Declined> {
    let mut series = assemble(files, budget)?;
    let done = run_mode(&mut series.volume, options, budget)?;
    let defaced = &done.defaced;
    // Encode every file first: nothing is written unless all can be.
    let out = Dir::create(&options.out).map_err(why)?;
    let mut outputs = Vec::with_capacity(series.files.len());
    for (n, f) in series.files.iter().enumerate() {
        let bytes = radveil_deface::series::rewrite_with_budget(
            &series,
            n,
            &defaced.removed,
            &series.volume.data,
            budget,
        )
        .map_err(why)?;
        let relative = roots
            .iter()
            .filter(|r| r.is_dir())
            .find_map(|r| f.strip_prefix(r).ok())
            .map(Path::to_path_buf)
            .or_else(|| f.file_name().map(PathBuf::from))
            .ok_or_else(no_name)?;
        // A link (even a dangling one) counts as existing: nothing is written unless all
        // the names are free.
        let target = options.out.join(&relative);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(Declined(format!(
                "output {} exists; not overwritten",
                target.display()
            )));
        }
        outputs.push((relative, bytes));
    }
    // Written below the opened output directory, never through a link planted in it.
    let mut first = None;
    for (relative, bytes) in &outputs {
        let written = out.write_bytes_at(relative, bytes).map_err(why)?;
        first.get_or_insert(written);
    }
    let dir = first
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(String::new, |p| p.display().to_string());
    Ok((dir, done))
}

/// Defaces `volume` in place, then refaces it when asked; the memory both take is granted
/// from `budget` first.
fn run_mode(
    volume: &mut Volume,
    options: &Options,
    budget: &MemoryBudget,
) -> Result<Done, Declined> {
    let deface_options = radveil_deface::DefaceOptions {
        ears: !options.keep_ears,
        verify: true,
    };
    let reface = options.mode == Mode::Reface;
    // The volume (4 bytes a voxel), the mask of removed voxels, and the copy `reface` keeps.
    let per_voxel = if reface { 9 } else { 5 };
    let _volume = budget
        .reserve(
            (volume.data.len() as u64).saturating_mul(per_voxel),
            DEFAULT_WAIT,
        )
        .map_err(why)?;
    let original = reface.then(|| volume.clone());
    let defaced = radveil_deface::deface(volume, deface_options).map_err(why)?;
    let refaced = match original {
        Some(o) => Some(
            radveil_deface::reface(volume, &o, &defaced)
                .map_err(|e| Declined::during("refacing", &e))?,
        ),
        None => None,
    };
    Ok(Done { defaced, refaced })
}

/// Reads a whole input file: a regular file only (a FIFO or device named as an input is
/// refused, never waited on), its size granted from `budget` first (the grant is returned
/// with the bytes).
fn read_file<'b>(path: &Path, budget: &'b MemoryBudget) -> Result<(Vec<u8>, Grant<'b>), Declined> {
    let len = Input::open(path).map_err(why)?.len();
    let grant = budget.reserve(len, DEFAULT_WAIT).map_err(why)?;
    let bytes = input::read_regular(path, len).map_err(why)?;
    Ok((bytes, grant))
}

/// Assembles a DICOM series from regular files, read one at a time (the largest granted
/// first) and decoded within `budget`.
fn assemble(
    files: &[PathBuf],
    budget: &MemoryBudget,
) -> Result<radveil_deface::series::SeriesVolume, Declined> {
    let largest = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .max()
        .unwrap_or(0);
    let _reading = budget.reserve(largest, DEFAULT_WAIT).map_err(why)?;
    radveil_deface::series::assemble_with_budget(files, |p| input::read_regular(p, largest), budget)
        .map_err(why)
}

/// Writes a face check's renders as `STEM{suffix}.VIEW.png` (STEM: the input's name without
/// `.nii`/`.nii.gz`); never overwrites.
fn save_renders(dir: &Path, name: &str, suffix: &str, fc: &FaceCheck) -> Result<(), Declined> {
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    let dir = Dir::create(dir).map_err(why)?;
    for v in &fc.views {
        let name = format!("{stem}{suffix}.{}.png", v.view.name);
        dir.write_bytes_at(Path::new(&name), &v.render.to_png())
            .map_err(why)?;
    }
    Ok(())
}

/// One result line of `radveil face-check`.
#[derive(Debug)]
pub struct Check {
    /// The input, as printed.
    pub input: String,
    /// The face check, or why the input could not be checked.
    pub result: Result<FaceCheck, Declined>,
}

impl Check {
    /// Whether a face was found, or the input could not be checked.
    pub fn failed(&self) -> bool {
        self.result.as_ref().map_or(true, |fc| fc.face_found)
    }

    /// The status as printed: `face`, `no-face` or `unreadable`.
    pub fn status(&self) -> &'static str {
        match &self.result {
            Ok(fc) if fc.face_found => "face",
            Ok(_) => "no-face",
            Err(_) => "unreadable",
        }
    }

    /// The `--json` line.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.result {
            Ok(fc) => {
                let views: serde_json::Map<String, serde_json::Value> = fc
                    .views
                    .iter()
                    .map(|v| {
                        (
                            v.view.name.to_string(),
                            serde_json::json!((v.score * 100.0).round() / 100.0),
                        )
                    })
                    .collect();
                serde_json::json!({"input": self.input, "status": self.status(),
                    "score": (fc.score * 100.0).round() / 100.0,
                    "threshold": FACE_THRESHOLD, "views": views})
            }
            Err(e) => {
                serde_json::json!({"input": self.input, "status": self.status(), "detail": e.0})
            }
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, input) = (self.status(), &self.input);
        match &self.result {
            Ok(fc) => {
                let views: Vec<String> = fc
                    .views
                    .iter()
                    .map(|v| format!("{}={:.1}", v.view.name, v.score))
                    .collect();
                write!(
                    f,
                    "{status}\t{input}\tbest score {:.1} (threshold {}); {}",
                    fc.score,
                    FACE_THRESHOLD,
                    views.join(" ")
                )
            }
            Err(e) => write!(f, "{status}\t{input}\t{e}"),
        }
    }
}

/// Looks for a face on the skin surface of one input: a NIfTI-1 file, or a directory
/// holding one DICOM series. Saves the renders into `render` when given.
pub fn face_check(input: &Path, render: Option<&Path>, budget: &MemoryBudget) -> Check {
    Check {
        input: input.display().to_string(),
        result: check_one(input, render, budget),
    }
}

fn check_one(
    input: &Path,
    render: Option<&Path>,
    budget: &MemoryBudget,
) -> Result<FaceCheck, Declined> {
    let volume = if input.is_dir() {
        let files = crate::walk::collect(&[input.to_path_buf()], budget).files;
        assemble(&files, budget)?.volume
    } else {
        let raw = read_file(input, budget)?;
        radveil_deface::nifti_io::read_bytes_with_budget(&raw.0, budget)
            .map_err(why)?
            .0
    };
    let fc = radveil_deface::face_check(&volume).map_err(why)?;
    if let Some(dir) = render {
        let name = input.file_name().ok_or_else(no_name)?;
        save_renders(dir, &name.to_string_lossy(), "", &fc)?;
    }
    Ok(fc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NIfTI-1 file of a 24 x 24 x 24 float32 volume with 8 mm voxels holding a ball of
    /// tissue: not a head.
    fn ball_nii() -> Vec<u8> {
        let n = 24usize;
        let mut h = vec![0u8; 352];
        h[0..4].copy_from_slice(&348i32.to_le_bytes());
        for (i, d) in [3i16, 24, 24, 24, 1, 1, 1, 1].iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[70..72].copy_from_slice(&16i16.to_le_bytes()); // float32
        h[72..74].copy_from_slice(&32i16.to_le_bytes());
        h[76..80].copy_from_slice(&1f32.to_le_bytes());
        for i in 1..4 {
            h[76 + 4 * i..80 + 4 * i].copy_from_slice(&8f32.to_le_bytes());
        }
        h[108..112].copy_from_slice(&352f32.to_le_bytes());
        h[344..348].copy_from_slice(b"n+1\0");
        for i in 0..n * n * n {
            let (x, y, z) = (i % n, (i / n) % n, i / (n * n));
            let r2: f64 = [x, y, z].iter().map(|&c| (c as f64 - 11.5).powi(2)).sum();
            let v: f32 = if r2 < 64.0 { 500.0 } else { (i % 7) as f32 };
            h.extend(v.to_le_bytes());
        }
        h
    }

    fn options(out: &Path) -> Options {
        Options {
            out: out.to_path_buf(),
            keep_ears: false,
            mode: Mode::Deface,
            render: None,
        }
    }

    #[test]
    fn a_ball_is_declined_as_not_a_head_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ball.nii");
        std::fs::write(&input, ball_nii()).unwrap();
        let out = dir.path().join("out");
        let budget = MemoryBudget::new(1 << 30);
        let mut lines = Vec::new();
        deface_all(std::slice::from_ref(&input), &options(&out), &budget, |l| {
            lines.push(l)
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.failed());
        assert_eq!(line.status(), Status::Declined);
        let text = line.to_string();
        assert!(
            text.starts_with(&format!("declined\t{}\tnot a head", input.display())),
            "{text}"
        );
        let json = line.to_json();
        assert_eq!(json["status"], "declined");
        assert_eq!(json["input"], input.display().to_string());
        assert!(json["detail"].as_str().unwrap().starts_with("not a head"));
        assert!(!out.join("ball.nii").exists());
        // Nothing was left held in the budget.
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_ball_shows_no_face_and_its_renders_are_saved_once() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ball.nii.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &ball_nii()).unwrap();
        std::fs::write(&input, gz.finish().unwrap()).unwrap();
        let renders = dir.path().join("renders");
        let budget = MemoryBudget::new(1 << 30);
        let check = face_check(&input, Some(&renders), &budget);
        assert!(!check.failed(), "{check}");
        assert_eq!(check.status(), "no-face");
        let text = check.to_string();
        assert!(
            text.starts_with(&format!("no-face\t{}\tbest score ", input.display())),
            "{text}"
        );
        assert!(text.contains(&format!("(threshold {FACE_THRESHOLD}); ")));
        let json = check.to_json();
        assert_eq!(json["status"], "no-face");
        assert_eq!(json["threshold"], serde_json::json!(FACE_THRESHOLD));
        let views = json["views"].as_object().unwrap();
        assert!(!views.is_empty());
        for v in views.keys() {
            assert!(renders.join(format!("ball.{v}.png")).is_file(), "{v}");
        }
        // A second check never overwrites the renders: it is reported unreadable.
        let again = face_check(&input, Some(&renders), &budget);
        assert!(again.failed());
        assert_eq!(again.status(), "unreadable");
        assert!(
            again.to_string().contains("exists; not overwritten"),
            "{again}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("head.nii");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let budget = MemoryBudget::new(1 << 30);
        let started = Instant::now();
        let check = face_check(&fifo, None, &budget);
        assert_eq!(check.status(), "unreadable");
        let json = check.to_json();
        assert_eq!(json["status"], "unreadable");
        let line = deface_nifti(&fifo, &options(&dir.path().join("out")), &budget);
        assert!(line.failed());
        assert!(
            line.to_string()
                .starts_with(&format!("declined\t{}\t", fifo.display())),
            "{line}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // As a DICOM input (not named .nii, so walked), it is declined too.
        let other = dir.path().join("fifo");
        std::process::Command::new("mkfifo")
            .arg(&other)
            .status()
            .unwrap();
        let mut lines = Vec::new();
        deface_all(
            std::slice::from_ref(&other),
            &options(&dir.path().join("out")),
            &budget,
            |l| lines.push(l),
        );
        assert_eq!(lines.len(), 1);
        assert!(lines[0].failed(), "{}", lines[0]);
        assert!(lines[0]
            .to_string()
            .starts_with(&format!("declined\t{}\t", other.display())));
    }

    #[test]
    fn a_file_larger_than_the_budget_is_declined_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ball.nii");
        std::fs::write(&input, ball_nii()).unwrap();
        let budget = MemoryBudget::new(1024);
        let line = deface_nifti(&input, &options(&dir.path().join("out")), &budget);
        assert!(line.failed());
        let check = face_check(&input, None, &budget);
        assert!(check.failed());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_chain_of_causes_is_one_line() {
        let inner = std::io::Error::other("inner");
        let outer = crate::OutputError::Io {
            what: "cannot write",
            path: PathBuf::from("/x"),
            source: inner,
        };
        assert_eq!(
            Declined::of(&outer).0,
            "cannot write /x: inner: inner",
            "as anyhow's {{:#}} prints it"
        );
        assert_eq!(
            Declined::during("refacing", &outer).0,
            "refacing: cannot write /x: inner: inner"
        );
    }
}
