//! `radveil face-check`: is there a face to be found on a head scan's skin surface?

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
