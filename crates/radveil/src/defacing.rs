//! `radveil deface` and `radveil face-check`: remove the face and ears from head scans, and
//! look for a face on a scan's skin surface.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use radveil_part10::{Grant, MemoryBudget, DEFAULT_WAIT};

/// `radveil face-check` arguments.
#[derive(clap::Args)]
pub struct FaceCheckArgs {
    /// Head volumes: NIfTI-1 files (.nii, .nii.gz), or directories holding one DICOM
    /// series each.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Save the renders as PNG files into this directory (NAME.VIEW.png; never overwritten).
    #[arg(long, value_name = "DIR")]
    render: Option<PathBuf>,
    /// One JSON line per input.
    #[arg(long)]
    json: bool,
}

/// Runs the face check on each input. Exit status 0 when no face was found in any, 1 when
/// one was (or an input could not be checked).
pub fn face_check(args: FaceCheckArgs) -> Result<ExitCode> {
    let mut bad = 0;
    for input in &args.inputs {
        match check_one(input, args.render.as_deref()) {
            Ok(fc) => {
                if fc.face_found {
                    bad += 1;
                }
                let verdict = if fc.face_found { "face" } else { "no-face" };
                if args.json {
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
                    outln!(
                        "{}",
                        serde_json::json!({"input": input.display().to_string(), "status": verdict,
                            "score": (fc.score * 100.0).round() / 100.0,
                            "threshold": radveil_deface::FACE_THRESHOLD, "views": views})
                    );
                } else {
                    let views: Vec<String> = fc
                        .views
                        .iter()
                        .map(|v| format!("{}={:.1}", v.view.name, v.score))
                        .collect();
                    outln!(
                        "{verdict}\t{}\tbest score {:.1} (threshold {}); {}",
                        input.display(),
                        fc.score,
                        radveil_deface::FACE_THRESHOLD,
                        views.join(" ")
                    );
                }
            }
            Err(e) => {
                bad += 1;
                if args.json {
                    outln!(
                        "{}",
                        serde_json::json!({"input": input.display().to_string(), "status": "unreadable", "detail": format!("{e:#}")})
                    );
                } else {
                    outln!("unreadable\t{}\t{e:#}", input.display());
                }
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_one(input: &Path, render_dir: Option<&Path>) -> Result<radveil_deface::FaceCheck> {
    let budget = MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let volume = if input.is_dir() {
        let (files, _) = crate::inputs::collect(&[input.to_path_buf()]);
        assemble(&files, &budget)?.volume
    } else {
        let raw = read_file(input, &budget)?;
        radveil_deface::nifti_io::read_bytes_with_budget(&raw.0, &budget)?.0
    };
    let fc = radveil_deface::face_check(&volume)?;
    if let Some(dir) = render_dir {
        let name = input.file_name().context("input without a file name")?;
        save_renders(dir, &name.to_string_lossy(), "", &fc)?;
    }
    Ok(fc)
}

/// Reads a whole input file: a regular file only (a FIFO or device named as an input is
/// refused, never waited on), its size granted from `budget` first (the grant is returned
/// with the bytes).
fn read_file<'b>(path: &Path, budget: &'b MemoryBudget) -> Result<(Vec<u8>, Grant<'b>)> {
    let len = radveil_pipeline::input::Input::open(path)?.len();
    let grant = budget.reserve(len, DEFAULT_WAIT)?;
    let bytes = radveil_pipeline::input::read_regular(path, len)?;
    Ok((bytes, grant))
}

/// Assembles a DICOM series from regular files, read one at a time (the largest granted
/// first) and decoded within `budget`.
fn assemble(
    files: &[PathBuf],
    budget: &MemoryBudget,
) -> Result<radveil_deface::series::SeriesVolume> {
    let largest = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .max()
        .unwrap_or(0);
    let _reading = budget.reserve(largest, DEFAULT_WAIT)?;
    Ok(radveil_deface::series::assemble_with_budget(
        files,
        |p| radveil_pipeline::input::read_regular(p, largest),
        budget,
    )?)
}

/// What replaces the face.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Background (air).
    Deface,
    /// A smooth surface of one tissue value.
    Reface,
}

/// A defaced (and perhaps refaced) volume.
struct Done {
    defaced: radveil_deface::Defaced,
    refaced: Option<radveil_deface::Refaced>,
}

impl Done {
    /// The face check that decided the result.
    fn after(&self) -> Option<&radveil_deface::FaceCheck> {
        match &self.refaced {
            Some(r) => Some(&r.after),
            None => self.defaced.after.as_ref(),
        }
    }
}

/// Defaces `volume` in place, then refaces it when asked.
fn run_mode(
    volume: &mut radveil_deface::Volume,
    args: &DefaceArgs,
    budget: &MemoryBudget,
) -> Result<Done> {
    let options = radveil_deface::DefaceOptions {
        ears: !args.keep_ears,
        verify: true,
    };
    // The volume (4 bytes a voxel), the mask of removed voxels, and the copy `reface` keeps.
    let per_voxel = if args.mode == Mode::Reface { 9 } else { 5 };
    let _volume = budget.reserve(
        (volume.data.len() as u64).saturating_mul(per_voxel),
        DEFAULT_WAIT,
    )?;
    let original = (args.mode == Mode::Reface).then(|| volume.clone());
    let defaced = radveil_deface::deface(volume, options)?;
    let refaced = match original {
        Some(o) => Some(radveil_deface::reface(volume, &o, &defaced).context("refacing")?),
        None => None,
    };
    Ok(Done { defaced, refaced })
}

/// `radveil deface` arguments.
#[derive(clap::Args)]
pub struct DefaceArgs {
    /// Head volumes: NIfTI-1 files (.nii, .nii.gz), or DICOM files and directories (grouped
    /// into volumes: the single-frame slices of a series with one orientation and matrix, or
    /// one multi-frame image).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory (files keep their names; never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Leave the ears on.
    #[arg(long)]
    keep_ears: bool,
    /// `deface` leaves background where the face was; `reface` fills it with a smooth,
    /// non-identifying surface (for tools that expect a whole head).
    #[arg(long, value_enum, default_value = "deface")]
    mode: Mode,
    /// Save renders of the result as PNG files into this directory.
    #[arg(long, value_name = "DIR")]
    render: Option<PathBuf>,
    /// One JSON line per input.
    #[arg(long)]
    json: bool,
}

/// Defaces each input; a volume that is not a head, or where a face would remain, is
/// declined (not written) with the reason. Exit status 0 when all were defaced, 1 otherwise.
pub fn deface(args: DefaceArgs) -> Result<ExitCode> {
    let is_nifti = |p: &Path| {
        let n = p.to_string_lossy().to_ascii_lowercase();
        n.ends_with(".nii") || n.ends_with(".nii.gz")
    };
    let (nifti, dicom): (Vec<PathBuf>, Vec<PathBuf>) = args
        .inputs
        .iter()
        .cloned()
        .partition(|p| p.is_file() && is_nifti(p));
    let budget = MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let mut bad = 0;
    for input in &nifti {
        let started = std::time::Instant::now();
        let result = deface_one(input, &args, &budget).map(|(t, d)| (t.display().to_string(), d));
        bad += report(&args, &input.display().to_string(), result, started) as usize;
    }
    if !dicom.is_empty() {
        let (files, errors) = crate::inputs::collect(&dicom);
        for (p, why) in errors {
            bad += 1;
            report(
                &args,
                &p.display().to_string(),
                Err(anyhow::anyhow!(why)),
                std::time::Instant::now(),
            );
        }
        // Volumes are grouped as `radveil deid` groups them (`series::group_volumes`).
        let mut images = Vec::new();
        let mut scratch = radveil_pipeline::Scratch::new();
        for f in files {
            // The header only (up to the pixel data), from a regular file, within the budget.
            let header = radveil_pipeline::input::Input::open(&f)
                .ok()
                .and_then(|i| radveil_pipeline::input::load(i, &mut scratch, &budget, 0).ok())
                .and_then(|l| radveil_deface::series::image_header(l.bytes));
            scratch.release();
            match header {
                Some(h) => images.push((f, h)),
                None => {
                    bad += 1;
                    report_declined(&args, &f, "not a DICOM image");
                }
            }
        }
        let (groups, loose) = radveil_deface::series::group_volumes(images);
        for f in loose {
            bad += 1;
            report_declined(
                &args,
                &f,
                "a DICOM image without a Series Instance UID or plane geometry (Image Position and Orientation (Patient))",
            );
        }
        for (n, group) in groups.iter().enumerate() {
            let started = std::time::Instant::now();
            let files = &group.images;
            let label = format!(
                "volume {} ({} files, first {})",
                n + 1,
                files.len(),
                files[0].display()
            );
            let result = deface_series(files, &dicom, &args, &budget);
            bad += report(&args, &label, result, started) as usize;
            for f in &group.duplicates {
                bad += 1;
                report_declined(
                    &args,
                    f,
                    "a second copy of an image of this volume (same SOP Instance UID); not written",
                );
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reports a file that is not defaced, with the reason.
fn report_declined(args: &DefaceArgs, path: &Path, why: &str) {
    report(
        args,
        &path.display().to_string(),
        Err(anyhow::anyhow!("{why}")),
        std::time::Instant::now(),
    );
}

/// Prints one result line; returns whether it was a failure.
fn report(
    args: &DefaceArgs,
    input: &str,
    result: Result<(String, Done)>,
    started: std::time::Instant,
) -> bool {
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok((target, done)) => {
            let d = &done.defaced;
            let before = d.before.as_ref().map_or(0.0, |c| c.score);
            let after = done.after().map_or(0.0, |c| c.score);
            let status = if done.refaced.is_some() {
                "refaced"
            } else {
                "defaced"
            };
            if args.json {
                let mut line = serde_json::json!({
                    "input": input, "status": status, "output": target,
                    "face_voxels": d.face_voxels, "ear_voxels": d.ear_voxels,
                    "cut_depth_mm": d.depth,
                    "nasion_ras_mm": d.nasion.map(|v| (v * 10.0).round() / 10.0),
                    "nose_tip_ras_mm": d.nose_tip.map(|v| (v * 10.0).round() / 10.0),
                    "face_score_before": (before * 100.0).round() / 100.0,
                    "face_score_after": (after * 100.0).round() / 100.0,
                    "seconds": (secs * 100.0).round() / 100.0});
                if let Some(r) = &done.refaced {
                    line["refaced_voxels"] = r.filled_voxels.into();
                }
                outln!("{line}");
            } else {
                let reface = done.refaced.as_ref().map_or(String::new(), |r| {
                    format!(", {} voxels refaced", r.filled_voxels)
                });
                outln!(
                    "{status}\t{input}\t{target}\tface {} tissue voxels, ears {} tissue voxels, cut {:.0} mm behind the nasion{reface}; face score {:.1} before, {:.1} after (threshold {}); {:.2} s",
                    d.face_voxels, d.ear_voxels, d.depth, before, after, radveil_deface::FACE_THRESHOLD, secs
                );
            }
            false
        }
        Err(e) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({"input": input, "status": "declined", "detail": format!("{e:#}")})
                );
            } else {
                outln!("declined\t{input}\t{e:#}");
            }
            true
        }
    }
}

/// Defaces one DICOM series and writes every slice (under the output directory, at its
/// path relative to the input directory it came from).
fn deface_series(
    files: &[PathBuf],
    roots: &[PathBuf],
    args: &DefaceArgs,
    budget: &MemoryBudget,
) -> Result<(String, Done)> {
    let mut series = assemble(files, budget)?;
    let done = run_mode(&mut series.volume, args, budget)?;
    let defaced = &done.defaced;
    // Encode every file first: nothing is written unless all can be.
    let out = radveil_pipeline::Dir::create(&args.out)?;
    let mut outputs = Vec::with_capacity(series.files.len());
    for (n, f) in series.files.iter().enumerate() {
        let bytes = radveil_deface::series::rewrite_with_budget(
            &series,
            n,
            &defaced.removed,
            &series.volume.data,
            budget,
        )?;
        let relative = roots
            .iter()
            .filter(|r| r.is_dir())
            .find_map(|r| f.strip_prefix(r).ok())
            .map(Path::to_path_buf)
            .or_else(|| f.file_name().map(PathBuf::from))
            .context("input without a file name")?;
        // A link (even a dangling one) counts as existing: nothing is written unless all
        // the names are free.
        let target = args.out.join(&relative);
        if std::fs::symlink_metadata(&target).is_ok() {
            anyhow::bail!("output {} exists; not overwritten", target.display());
        }
        outputs.push((relative, bytes));
    }
    // Written below the opened output directory, never through a link planted in it.
    let mut first = None;
    for (relative, bytes) in &outputs {
        let written = out.write_bytes_at(relative, bytes)?;
        first.get_or_insert(written);
    }
    let dir = first
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(String::new, |p| p.display().to_string());
    Ok((dir, done))
}

fn deface_one(input: &Path, args: &DefaceArgs, budget: &MemoryBudget) -> Result<(PathBuf, Done)> {
    let (raw, _raw_grant) = read_file(input, budget)?;
    let file = radveil_deface::nifti_io::NiftiFile::from_bytes_with_budget(raw, budget)?;
    let (mut volume, header) = file.volume_with_budget(budget)?;
    let done = run_mode(&mut volume, args, budget)?;
    let bytes = file.defaced(&header, &done.defaced.removed, &volume.data)?;
    let name = input.file_name().context("input without a file name")?;
    let target =
        radveil_pipeline::Dir::create(&args.out)?.write_bytes_at(Path::new(name), &bytes)?;
    if let (Some(dir), Some(after)) = (&args.render, done.after()) {
        let suffix = if done.refaced.is_some() {
            ".refaced"
        } else {
            ".defaced"
        };
        save_renders(dir, &name.to_string_lossy(), suffix, after)?;
    }
    Ok((target, done))
}

/// Writes a face check's renders as `STEM{suffix}.VIEW.png` (STEM: the input's name without
/// `.nii`/`.nii.gz`); never overwrites.
fn save_renders(
    dir: &Path,
    name: &str,
    suffix: &str,
    fc: &radveil_deface::FaceCheck,
) -> Result<()> {
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    let dir = radveil_pipeline::Dir::create(dir)?;
    for v in &fc.views {
        let name = format!("{stem}{suffix}.{}.png", v.view.name);
        dir.write_bytes_at(Path::new(&name), &v.render.to_png())?;
    }
    Ok(())
}
