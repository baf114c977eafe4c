//! `radveil deface` and `radveil face-check`: remove the face and ears from head scans, and
//! look for a face on a scan's skin surface. The work is `radveil_pipeline::deface`'s; this
//! is the command line and the printing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use radveil_part10::MemoryBudget;
use radveil_pipeline::deface as pipeline;

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
    let budget = MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let mut bad = 0;
    for input in &args.inputs {
        let check = pipeline::face_check(input, args.render.as_deref(), &budget);
        bad += usize::from(check.failed());
        if args.json {
            outln!("{}", check.to_json());
        } else {
            outln!("{check}");
        }
    }
    Ok(status(bad))
}

/// What replaces the face.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Background (air).
    Deface,
    /// A smooth surface of one tissue value.
    Reface,
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
    let options = pipeline::Options {
        out: args.out,
        keep_ears: args.keep_ears,
        mode: match args.mode {
            Mode::Deface => pipeline::Mode::Deface,
            Mode::Reface => pipeline::Mode::Reface,
        },
        render: args.render,
    };
    let budget = MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let mut bad = 0;
    pipeline::deface_all(&args.inputs, &options, &budget, |line| {
        bad += usize::from(line.failed());
        if args.json {
            outln!("{}", line.to_json());
        } else {
            outln!("{line}");
        }
    });
    Ok(status(bad))
}

/// 0 when nothing failed, else 1.
fn status(bad: usize) -> ExitCode {
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
