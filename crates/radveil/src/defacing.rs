//! `radveil deface` and `radveil face-check`: remove the face and ears from head scans, and
//! look for a face on a scan's skin surface.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// `radveil face-check` arguments.
#[derive(clap::Args)]
pub struct FaceCheckArgs {
    /// Head volumes: NIfTI-1 files (.nii, .nii.gz).
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
    let (volume, _) = radveil_deface::nifti_io::read(input)?;
    let fc = radveil_deface::face_check(&volume)?;
    if let Some(dir) = render_dir {
        let stem = input
            .file_name()
            .context("input without a file name")?
            .to_string_lossy()
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .to_string();
        for v in &fc.views {
            let target = dir.join(format!("{stem}.{}.png", v.view.name));
            crate::output::write_new(&target, &v.render.to_png())?;
        }
    }
    Ok(fc)
}

/// `radveil deface` arguments.
#[derive(clap::Args)]
pub struct DefaceArgs {
    /// Head volumes: NIfTI-1 files (.nii, .nii.gz).
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
    let mut bad = 0;
    for input in &args.inputs {
        let started = std::time::Instant::now();
        let result = deface_one(input, &args);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok((target, d)) => {
                let before = d.before.as_ref().map_or(0.0, |c| c.score);
                let after = d.after.as_ref().map_or(0.0, |c| c.score);
                if args.json {
                    outln!(
                        "{}",
                        serde_json::json!({
                        "input": input.display().to_string(), "status": "defaced",
                        "output": target.display().to_string(),
                        "face_voxels": d.face_voxels, "ear_voxels": d.ear_voxels,
                        "cut_depth_mm": d.depth,
                        "face_score_before": (before * 100.0).round() / 100.0,
                        "face_score_after": (after * 100.0).round() / 100.0,
                        "seconds": (secs * 100.0).round() / 100.0})
                    );
                } else {
                    outln!(
                        "defaced\t{}\t{}\tface {} tissue voxels, ears {} tissue voxels, cut {:.0} mm behind the nasion; face score {:.1} before, {:.1} after (threshold {}); {:.2} s",
                        input.display(), target.display(), d.face_voxels, d.ear_voxels, d.depth,
                        before, after, radveil_deface::FACE_THRESHOLD, secs
                    );
                }
            }
            Err(e) => {
                bad += 1;
                if args.json {
                    outln!(
                        "{}",
                        serde_json::json!({"input": input.display().to_string(), "status": "declined", "detail": format!("{e:#}")})
                    );
                } else {
                    outln!("declined\t{}\t{e:#}", input.display());
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

fn deface_one(input: &Path, args: &DefaceArgs) -> Result<(PathBuf, radveil_deface::Defaced)> {
    let (mut volume, header) = radveil_deface::nifti_io::read(input)?;
    let options = radveil_deface::DefaceOptions {
        ears: !args.keep_ears,
        verify: true,
    };
    let defaced = radveil_deface::deface(&mut volume, options)?;
    let bytes =
        radveil_deface::nifti_io::write_defaced(input, &header, &defaced.removed, defaced.fill)?;
    let name = input.file_name().context("input without a file name")?;
    let target = args.out.join(name);
    crate::output::write_new(&target, &bytes)?;
    if let (Some(dir), Some(after)) = (&args.render, &defaced.after) {
        let stem = name
            .to_string_lossy()
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .to_string();
        for v in &after.views {
            crate::output::write_new(
                &dir.join(format!("{stem}.defaced.{}.png", v.view.name)),
                &v.render.to_png(),
            )?;
        }
    }
    Ok((target, defaced))
}
