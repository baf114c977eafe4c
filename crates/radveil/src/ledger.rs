//! `radveil ledger`: the transparency ledger of image hashes from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use radveil_deid::Key;
use radveil_ledger::note::{Checkpoint, Signer, Verifier};
use radveil_ledger::{Intent, Ledger, LedgerError, Status, TornRepair};
use radveil_part10::MemoryBudget;
use radveil_pipeline::ledger::{append_files, consistency_proof, inclusion_proof, Verified};
use radveil_pipeline::observe::ImageCheck;
use radveil_pipeline::ordered::for_each_in_order;
use radveil_pipeline::pool::Pool;
use zeroize::Zeroizing;

use crate::key::KeyPolicy;

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
            let intent = if tombstone {
                Intent::Tombstone
            } else {
                Intent::Ingest { allow_changed }
            };
            let repair = if repair_torn {
                TornRepair::Truncate
            } else {
                TornRepair::Refuse
            };
            let key = crate::key::load_with(key_file.as_deref(), keys)?;
            append(&dir, &inputs, &key, intent, repair)
        }
        LedgerCommand::Checkpoint {
            dir,
            signer_key,
            keys,
        } => {
            let signer = read_signer(&signer_key, keys)?;
            let mut ledger = Ledger::open(&dir)?;
            report_torn(&ledger);
            if signer.verifier() != ledger.stored_verifier()? {
                bail!(
                    "{} is not this ledger's checkpoint key",
                    signer_key.display()
                );
            }
            out!("{}", ledger.checkpoint(&signer)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Prove {
            dir,
            input,
            key_file,
            consistency_from,
            keys,
        } => prove(
            &dir,
            input.as_deref(),
            key_file.as_deref(),
            consistency_from,
            keys,
        ),
        LedgerCommand::Verify {
            dir,
            inputs,
            trusted,
            verifier,
            key_file,
            json,
            keys,
        } => {
            let verified =
                match VerifiedLedger::open(&dir, verifier.as_deref(), trusted.as_deref())? {
                    Ok(v) => v,
                    Err(why) => {
                        eprintln!("radveil: ledger invalid: {why}");
                        return Ok(ExitCode::from(LEDGER_INVALID));
                    }
                };
            if inputs.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            let key = crate::key::load_with(key_file.as_deref(), keys)?;
            verify_images(&verified, &inputs, &key, json)
        }
    }
}

fn read_signer(path: &Path, keys: KeyPolicy) -> Result<Signer> {
    let bytes = crate::key::read_secret(path, "checkpoint signer key", keys)?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("checkpoint signer key {} is not text", path.display()))?;
    Ok(Signer::parse(text)?)
}

fn load_or_create_signer(path: &Path, origin: &str, keys: KeyPolicy) -> Result<Signer> {
    if path.exists() {
        return read_signer(path, keys);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut())
        .map_err(|e| anyhow::anyhow!("system random source: {e}"))?;
    // A key name may not contain spaces or '+'.
    let name: String = origin
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let signer = Signer::from_seed(&name, &seed)?;
    crate::key::write_private(path, |f| {
        use std::io::Write;
        f.write_all(signer.to_secret_string().as_bytes())?;
        f.write_all(b"\n")
    })?;
    eprintln!(
        "radveil: wrote a new checkpoint signing key to {} (mode 0600)",
        path.display()
    );
    Ok(signer)
}

/// Prints what opening a ledger has to tell on standard error.
fn notice(n: radveil_pipeline::ledger::Notice) {
    eprintln!("radveil: {}: {n}", n.kind());
}

/// Warns about a torn last line of the ledger's entries.
fn report_torn(ledger: &Ledger) {
    if let Some(n) = radveil_pipeline::ledger::torn_notice(ledger) {
        notice(n);
    }
}

fn append(
    dir: &Path,
    inputs: &[PathBuf],
    key: &Key,
    intent: Intent,
    repair: TornRepair,
) -> Result<ExitCode> {
    let mut ledger = Ledger::open(dir)?;
    if let (Some(torn), TornRepair::Refuse) = (ledger.torn_tail(), repair) {
        // Said before any image is read; checked again under the lock.
        let e = LedgerError::TornTail {
            path: ledger.entries_path(),
            torn,
        };
        bail!("{e}; `radveil ledger append --repair-torn` keeps its bytes aside, cuts it off and appends");
    }
    let (files, errors) = crate::inputs::collect(inputs);
    let budget = crate::dicom_file::default_budget();
    let problems = errors.len();
    for (p, reason) in &errors {
        eprintln!("radveil: {}: {reason}", p.display());
    }
    // Reading and hashing the images happens before the lock; deciding what to record and
    // writing it happen under it, against the ledger as it is then.
    let report = match append_files(
        &mut ledger,
        &files,
        key,
        intent,
        repair,
        &budget,
        &mut |f, e| eprintln!("radveil: {}: not logged: {e}", f.display()),
    ) {
        Ok(mut r) => {
            r.unreadable += problems;
            r
        }
        Err(e @ LedgerError::TornTail { .. }) => {
            bail!("{e}; `radveil ledger append --repair-torn` keeps its bytes aside, cuts it off and appends")
        }
        Err(e) => return Err(e.into()),
    };
    for w in report.warnings() {
        eprintln!("radveil: {w}");
    }
    eprintln!("radveil ledger: {report}");
    Ok(if report.problems() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn latest(ledger: &Ledger, verifier: &Verifier) -> Result<(String, Checkpoint)> {
    let note = ledger.latest_checkpoint()?;
    let cp = ledger.verify_against(&note, verifier)?;
    Ok((note, cp))
}

fn prove(
    dir: &Path,
    input: Option<&Path>,
    key_file: Option<&Path>,
    from: Option<u64>,
    keys: KeyPolicy,
) -> Result<ExitCode> {
    let ledger = Ledger::open(dir)?;
    report_torn(&ledger);
    let verifier = ledger.stored_verifier()?;
    let (note, cp) = latest(&ledger, &verifier)?;
    let out = if let Some(old) = from {
        consistency_proof(&ledger, &note, &cp, old)?
    } else {
        let key = crate::key::load_with(key_file, keys)?;
        let path = input.context("an image to prove")?;
        let budget = crate::dicom_file::default_budget();
        inclusion_proof(&ledger, &note, &cp, path, &key, &budget)?
    };
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// A ledger whose latest checkpoint (and a trusted one, if given) verified.
pub struct VerifiedLedger(Verified);

impl VerifiedLedger {
    /// Opens and checks a ledger (see `radveil_pipeline::ledger::Verified::open`).
    /// `Ok(Err(why))` means the ledger itself is invalid; `Err` means it could not be read.
    /// What it has to tell, and the summary, are printed on standard error.
    pub fn open(
        dir: &Path,
        verifier: Option<&str>,
        trusted: Option<&Path>,
    ) -> Result<std::result::Result<VerifiedLedger, String>> {
        Ok(
            Verified::open(dir, verifier, trusted, &mut notice)?.map(|v| {
                eprintln!("radveil ledger: {v}");
                VerifiedLedger(v)
            }),
        )
    }

    /// What the ledger says of one image, with any equipment advisory.
    pub fn image_status(&self, path: &Path, key: &Key, budget: &MemoryBudget) -> ImageCheck {
        self.0.image_status(path, key, budget)
    }
}

/// Worker threads for reading images: all cores.
fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn verify_images(
    verified: &VerifiedLedger,
    inputs: &[PathBuf],
    key: &Key,
    json: bool,
) -> Result<ExitCode> {
    let (files, errors) = crate::inputs::collect(inputs);
    let budget = crate::dicom_file::default_budget();
    let mut flagged = errors.len();
    for (p, reason) in errors {
        outln!("{}", ImageCheck::unreadable(reason).lines(&p, json));
    }
    for_each_in_order(
        &Pool::new(jobs()),
        &files,
        || (),
        |(), f| verified.image_status(f, key, &budget),
        |f, check| {
            let check = check.unwrap_or_else(|p| ImageCheck::unreadable(p.to_string()));
            if check.verdict.status != Status::Proven {
                flagged += 1;
            }
            outln!("{}", check.lines(f, json));
        },
    );
    Ok(if flagged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
