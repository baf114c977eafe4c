//! `radveil deface` and `radveil face-check`: remove the face and ears from head scans, and
//! look for a face on a scan's skin surface.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

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
    let volume = if input.is_dir() {
        let (files, _) = crate::inputs::collect(&[input.to_path_buf()]);
        radveil_deface::series::assemble(&files)?.volume
    } else {
        radveil_deface::nifti_io::read(input)?.0
    };
    let fc = radveil_deface::face_check(&volume)?;
    if let Some(dir) = render_dir {
        let name = input.file_name().context("input without a file name")?;
        save_renders(dir, &name.to_string_lossy(), "", &fc)?;
    }
    Ok(fc)
}

/// `radveil deface` arguments.
#[derive(clap::Args)]
pub struct DefaceArgs {
    /// Head volumes: NIfTI-1 files (.nii, .nii.gz), or DICOM files and directories (grouped
    /// into series by Series Instance UID; each series is one volume).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory (files keep their names; never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Leave the ears on.
    #[arg(long)]
    keep_ears: bool,
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
    let mut bad = 0;
    for input in &nifti {
        let started = std::time::Instant::now();
        let result = deface_one(input, &args).map(|(t, d)| (t.display().to_string(), d));
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
        let mut series: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
        for f in files {
            let uid = std::fs::read(&f)
                .ok()
                .and_then(|b| radveil_deface::series::series_uid(&b));
            match uid {
                Some(uid) => series.entry(uid).or_default().push(f),
                None => {
                    bad += 1;
                    report(
                        &args,
                        &f.display().to_string(),
                        Err(anyhow::anyhow!(
                            "not a DICOM image with a Series Instance UID"
                        )),
                        std::time::Instant::now(),
                    );
                }
            }
        }
        for (n, files) in series.values().enumerate() {
            let started = std::time::Instant::now();
            let label = format!(
                "series {} ({} files, first {})",
                n + 1,
                files.len(),
                files[0].display()
            );
            let result = deface_series(files, &dicom, &args);
            bad += report(&args, &label, result, started) as usize;
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints one result line; returns whether it was a failure.
fn report(
    args: &DefaceArgs,
    input: &str,
    result: Result<(String, radveil_deface::Defaced)>,
    started: std::time::Instant,
) -> bool {
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok((target, d)) => {
            let before = d.before.as_ref().map_or(0.0, |c| c.score);
            let after = d.after.as_ref().map_or(0.0, |c| c.score);
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                    "input": input, "status": "defaced", "output": target,
                    "face_voxels": d.face_voxels, "ear_voxels": d.ear_voxels,
                    "cut_depth_mm": d.depth,
                    "face_score_before": (before * 100.0).round() / 100.0,
                    "face_score_after": (after * 100.0).round() / 100.0,
                    "seconds": (secs * 100.0).round() / 100.0})
                );
            } else {
                outln!(
                    "defaced\t{input}\t{target}\tface {} tissue voxels, ears {} tissue voxels, cut {:.0} mm behind the nasion; face score {:.1} before, {:.1} after (threshold {}); {:.2} s",
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
) -> Result<(String, radveil_deface::Defaced)> {
    let mut series = radveil_deface::series::assemble(files)?;
    let options = radveil_deface::DefaceOptions {
        ears: !args.keep_ears,
        verify: true,
    };
    let defaced = radveil_deface::deface(&mut series.volume, options)?;
    // Encode every slice first: nothing is written unless all can be.
    let mut outputs = Vec::with_capacity(series.files.len());
    for k in 0..series.files.len() {
        let bytes =
            radveil_deface::series::rewrite_slice(&series, k, &defaced.removed, defaced.fill)?;
        let f = &series.files[k];
        let relative = roots
            .iter()
            .filter(|r| r.is_dir())
            .find_map(|r| f.strip_prefix(r).ok())
            .map(Path::to_path_buf)
            .or_else(|| f.file_name().map(PathBuf::from))
            .context("input without a file name")?;
        let target = args.out.join(relative);
        if target.exists() {
            anyhow::bail!("output {} exists; not overwritten", target.display());
        }
        outputs.push((target, bytes));
    }
    for (target, bytes) in &outputs {
        crate::output::write_new(target, bytes)?;
    }
    let dir = outputs
        .first()
        .and_then(|(t, _)| t.parent())
        .map_or_else(String::new, |p| p.display().to_string());
    Ok((dir, defaced))
}

fn deface_one(input: &Path, args: &DefaceArgs) -> Result<(PathBuf, radveil_deface::Defaced)> {
    let file = radveil_deface::nifti_io::NiftiFile::open(input)?;
    let (mut volume, header) = file.volume()?;
    let options = radveil_deface::DefaceOptions {
        ears: !args.keep_ears,
        verify: true,
    };
    let defaced = radveil_deface::deface(&mut volume, options)?;
    let bytes = file.defaced(&header, &defaced.removed, defaced.fill)?;
    let name = input.file_name().context("input without a file name")?;
    let target = args.out.join(name);
    crate::output::write_new(&target, &bytes)?;
    if let (Some(dir), Some(after)) = (&args.render, &defaced.after) {
        save_renders(dir, &name.to_string_lossy(), ".defaced", after)?;
    }
    Ok((target, defaced))
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
    for v in &fc.views {
        let target = dir.join(format!("{stem}{suffix}.{}.png", v.view.name));
        crate::output::write_new(&target, &v.render.to_png())?;
    }
    Ok(())
}
