//! `radveil ledger`: the transparency ledger of image hashes from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use radveil_ledger::note::Signer;
use radveil_ledger::{Intent, Ledger, TornRepair};
use radveil_pipeline::ledger::{self as lib, Notice, Prover, Verified};

use crate::dicom_file::default_budget;
use crate::key::{load_with, KeyPolicy};

/// Exit status when the ledger itself fails verification (rewritten, truncated, bad
/// signature): distinct from 1, which flags images.
pub const LEDGER_INVALID: u8 = 3;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Create a ledger in DIR with its checkpoint signing key.
    Init {
        /// The ledger directory (created; must not hold a ledger).
        dir: PathBuf,
        /// The log's origin line, unique to this ledger (e.g. `hospital.example/radveil/ct`).
        #[arg(long)]
        origin: String,
        /// The checkpoint signing key: read if the file exists, else created (mode 0600).
        #[arg(long)]
        signer_key: PathBuf,
        #[command(flatten)]
        keys: KeyPolicy,
    },
    /// Record images (ingest) or their deletion (--tombstone).
    Append {
        /// The ledger directory.
        dir: PathBuf,
        /// DICOM files or directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The site key: instance UIDs are logged only as keyed hashes.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Record deletions instead of ingests.
        #[arg(long)]
        tombstone: bool,
        /// Record an image whose bytes differ from its last entry (a legitimate update);
        /// without it such an image is refused, since it looks altered.
        #[arg(long)]
        allow_changed: bool,
        /// Repair a torn last line of entries.jsonl (an append that crashed) first: its
        /// bytes are kept in entries.jsonl.torn-OFFSET and cut off. Without it, an append
        /// after a torn line is refused.
        #[arg(long)]
        repair_torn: bool,
        #[command(flatten)]
        keys: KeyPolicy,
    },
    /// Sign a checkpoint of the whole ledger.
    Checkpoint {
        /// The ledger directory.
        dir: PathBuf,
        /// The checkpoint signing key.
        #[arg(long)]
        signer_key: PathBuf,
        #[command(flatten)]
        keys: KeyPolicy,
    },
    /// Print an inclusion proof for an image, or a consistency proof from an older size,
    /// against the latest checkpoint (JSON).
    Prove {
        /// The ledger directory.
        dir: PathBuf,
        /// The image to prove.
        #[arg(required_unless_present = "consistency_from")]
        input: Option<PathBuf>,
        /// The site key (to find the image's entry).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Prove that the latest checkpoint extends the tree of this size.
        #[arg(long)]
        consistency_from: Option<u64>,
        #[command(flatten)]
        keys: KeyPolicy,
    },
    /// Verify the ledger (signatures, consistency with a trusted checkpoint) and, given
    /// images, that each is in it unaltered.
    Verify {
        /// The ledger directory.
        dir: PathBuf,
        /// Images to check against the ledger.
        inputs: Vec<PathBuf>,
        /// A checkpoint kept outside the ledger, from an earlier verification: the ledger
        /// must extend it.
        #[arg(long)]
        trusted: Option<PathBuf>,
        /// The checkpoint verifier key (string or file); default: the ledger's verifier.pub.
        #[arg(long)]
        verifier: Option<String>,
        /// The site key (needed with images).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print one JSON line per image.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        keys: KeyPolicy,
    },
}

/// Runs a `radveil ledger` subcommand.
pub fn run(cmd: LedgerCommand) -> Result<ExitCode> {
    match cmd {
        LedgerCommand::Init {
            dir,
            origin,
            signer_key,
            keys,
        } => {
            let signer = load_or_create_signer(&signer_key, &origin, keys)?;
            Ledger::init(&dir, &origin, &signer)?;
            outln!("{}", signer.verifier());
            eprintln!(
                "radveil: ledger {} created; its checkpoint verifier key is above (also in verifier.pub): give it to whoever verifies",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Append {
            dir,
            inputs,
            key_file,
            tombstone,
            allow_changed,
            repair_torn,
            keys,
        } => {
            let intent = match tombstone {
                true => Intent::Tombstone,
                false => Intent::Ingest { allow_changed },
            };
            let repair = match repair_torn {
                true => TornRepair::Truncate,
                false => TornRepair::Refuse,
            };
            let key = load_with(key_file.as_deref(), keys)?;
            let report = lib::append(&dir, &inputs, &key, intent, repair, &default_budget(), {
                &mut |f, why| eprintln!("radveil: {}: {why}", f.display())
            })?;
            for w in report.warnings() {
                eprintln!("radveil: {w}");
            }
            eprintln!("radveil ledger: {report}");
            Ok(ExitCode::from(u8::from(report.problems() != 0)))
        }
        LedgerCommand::Checkpoint {
            dir,
            signer_key,
            keys,
        } => {
            let signer = read_signer(&signer_key, keys)?;
            out!(
                "{}",
                lib::sign_checkpoint(&dir, &signer, &signer_key, &mut notice)?
            );
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Prove {
            dir,
            input,
            key_file,
            consistency_from,
            keys,
        } => {
            let prover = Prover::open(&dir, &mut notice)?;
            let proof = match consistency_from {
                Some(old) => prover.consistency(old)?,
                None => {
                    let key = load_with(key_file.as_deref(), keys)?;
                    let path = input.as_deref().context("an image to prove")?;
                    prover.inclusion(path, &key, &default_budget())?
                }
            };
            outln!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Verify {
            dir,
            inputs,
            trusted,
            verifier,
            key_file,
            json,
            keys,
        } => {
            let verified = match open_verified(&dir, verifier.as_deref(), trusted.as_deref())? {
                Ok(v) => v,
                Err(why) => {
                    eprintln!("radveil: ledger invalid: {why}");
                    return Ok(ExitCode::from(LEDGER_INVALID));
                }
            };
            if inputs.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            let key = load_with(key_file.as_deref(), keys)?;
            let tally = verified.check_inputs(&inputs, &key, &default_budget(), {
                &mut |f, check| outln!("{}", check.lines(f, json))
            });
            Ok(ExitCode::from(u8::from(!tally.all_done())))
        }
    }
}

fn read_signer(path: &Path, keys: KeyPolicy) -> Result<Signer> {
    let secret = crate::key::read_secret(path, "checkpoint signer key", keys)?;
    Ok(lib::parse_signer(&secret, path)?)
}

/// The signer in `path`, or a new one for `origin` written there (mode 0600).
fn load_or_create_signer(path: &Path, origin: &str, keys: KeyPolicy) -> Result<Signer> {
    if path.exists() {
        return read_signer(path, keys);
    }
    let signer = lib::create_signer(path, origin)?;
    let path = path.display();
    eprintln!("radveil: wrote a new checkpoint signing key to {path} (mode 0600)");
    Ok(signer)
}

/// Prints what opening a ledger has to tell on standard error.
fn notice(n: Notice) {
    eprintln!("radveil: {}: {n}", n.kind());
}

/// Opens and checks a ledger (see `Verified::open`). `Ok(Err(why))` means the ledger itself
/// is invalid; `Err` means it could not be read. What it has to tell, and the summary, are
/// printed on standard error.
pub fn open_verified(
    dir: &Path,
    verifier: Option<&str>,
    trusted: Option<&Path>,
) -> Result<std::result::Result<Verified, String>> {
    let opened = Verified::open(dir, verifier, trusted, &mut notice)?;
    if let Ok(v) = &opened {
        eprintln!("radveil ledger: {v}");
    }
    Ok(opened)
}
