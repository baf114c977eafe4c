//! `radveil ledger`: the transparency ledger of image hashes from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use radveil_deid::Key;
use radveil_ledger::merkle::{self, Hash};
use radveil_ledger::note::{Checkpoint, Signer, Verifier};
use radveil_ledger::{hex, unhex, Ledger, Record, RecordKind};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

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
    },
    /// Sign a checkpoint of the whole ledger.
    Checkpoint {
        /// The ledger directory.
        dir: PathBuf,
        /// The checkpoint signing key.
        #[arg(long)]
        signer_key: PathBuf,
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
    },
}

pub fn run(cmd: LedgerCommand) -> Result<ExitCode> {
    match cmd {
        LedgerCommand::Init {
            dir,
            origin,
            signer_key,
        } => {
            let signer = load_or_create_signer(&signer_key, &origin)?;
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
        } => append(&dir, &inputs, key_file.as_deref(), tombstone, allow_changed),
        LedgerCommand::Checkpoint { dir, signer_key } => {
            let signer = read_signer(&signer_key)?;
            let mut ledger = Ledger::open(&dir)?;
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
        } => prove(
            &dir,
            input.as_deref(),
            key_file.as_deref(),
            consistency_from,
        ),
        LedgerCommand::Verify {
            dir,
            inputs,
            trusted,
            verifier,
            key_file,
            json,
        } => verify(
            &dir,
            &inputs,
            trusted.as_deref(),
            verifier.as_deref(),
            key_file.as_deref(),
            json,
        ),
    }
}

fn read_signer(path: &Path) -> Result<Signer> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading signer key {}", path.display()))?,
    );
    Ok(Signer::parse(&text)?)
}

fn load_or_create_signer(path: &Path, origin: &str) -> Result<Signer> {
    if path.exists() {
        return read_signer(path);
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
    let mut f = crate::key::create_private(path)?;
    use std::io::Write;
    f.write_all(signer.to_secret_string().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    eprintln!(
        "radveil: wrote a new checkpoint signing key to {} (mode 0600)",
        path.display()
    );
    Ok(signer)
}

/// What the ledger knows of one DICOM file.
struct Identified {
    instance: String,
    sha256: String,
    /// Outcome of the object's own digital signatures at this moment.
    verification: &'static str,
    /// SHA-256 fingerprint of the first valid signature's signer certificate.
    signer: Option<String>,
    /// Transfer-syntax-independent binding hash, where the pixel data can be decoded.
    binding: Option<String>,
    /// Keyed hash of the Series Instance UID.
    series: Option<String>,
    /// Keyed hash of the equipment attributes.
    equipment: Option<String>,
}

fn identify(path: &Path, key: &Key) -> Result<Identified> {
    use radveil_part10 as p10;
    let bytes = std::fs::read(path).context("cannot read")?;
    let mut inflated = Vec::new();
    let (meta, ds, enc) = p10::read_file(&bytes, &mut inflated, p10::Limits::default())?;
    let reports = radveil_integrity::verify(&ds, enc);
    let valid = reports
        .iter()
        .find(|r| r.outcome == radveil_integrity::Outcome::Valid);
    let verification = match (reports.is_empty(), valid) {
        (true, _) => "unsigned",
        (false, Some(_))
            if reports
                .iter()
                .all(|r| r.outcome == radveil_integrity::Outcome::Valid) =>
        {
            "valid"
        }
        _ => "invalid",
    };
    let signer = valid.map(|r| r.fingerprint.clone());
    let binding = radveil_integrity::binding_hash(&ds, enc, &meta.transfer_syntax)
        .ok()
        .map(|h| hex(&h));
    let series = ds
        .string(0x0020_000E)
        .filter(|s| !s.is_empty())
        .map(|s| hex(&key.mac("series-instance", s.as_bytes())));
    let equipment_text: Vec<String> = [0x0008_0070u32, 0x0008_1090, 0x0018_1000, 0x0008_1010]
        .iter()
        .map(|t| ds.string(*t).unwrap_or_default())
        .collect();
    let equipment = equipment_text
        .iter()
        .any(|v| !v.is_empty())
        .then(|| hex(&key.mac("equipment", equipment_text.join("\\").as_bytes())));
    let uid = ds
        .string(0x0008_0018)
        .filter(|u| !u.is_empty())
        .context("no SOP Instance UID")?;
    Ok(Identified {
        instance: hex(&key.mac("sop-instance", uid.as_bytes())),
        sha256: hex(&Sha256::digest(&bytes)),
        verification,
        signer,
        binding,
        series,
        equipment,
    })
}

fn append(
    dir: &Path,
    inputs: &[PathBuf],
    key_file: Option<&Path>,
    tombstone: bool,
    allow_changed: bool,
) -> Result<ExitCode> {
    let key = crate::key::load(key_file)?;
    let mut ledger = Ledger::open(dir)?;
    let (files, errors) = crate::inputs::collect(inputs);
    let mut problems = errors.len();
    for (p, reason) in &errors {
        eprintln!("radveil: {}: {reason}", p.display());
    }
    let mut records = Vec::new();
    let mut skipped = 0;
    let now = rfc3339_now();
    for f in &files {
        let id = match identify(f, &key) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("radveil: {}: not logged: {e:#}", f.display());
                problems += 1;
                continue;
            }
        };
        let last = ledger
            .find_instance(&id.instance)
            .map(|(i, r)| (i, r.clone()));
        let pending = records
            .iter()
            .rev()
            .find(|r: &&Record| r.instance == id.instance)
            .cloned();
        let previous = pending.or(last.map(|(_, r)| r));
        if !tombstone {
            if let Some(prev) = previous.filter(|p| p.kind == RecordKind::Ingest) {
                if prev.sha256 == id.sha256 {
                    skipped += 1;
                    continue;
                }
                if !allow_changed {
                    eprintln!(
                        "radveil: {}: refused: its bytes differ from its ledger entry (altered?); --allow-changed records a legitimate update",
                        f.display()
                    );
                    problems += 1;
                    continue;
                }
            }
        }
        records.push(Record {
            kind: if tombstone {
                RecordKind::Tombstone
            } else {
                RecordKind::Ingest
            },
            instance: id.instance,
            sha256: id.sha256,
            binding: id.binding,
            signer: id.signer,
            series: id.series,
            equipment: id.equipment,
            verification: id.verification.into(),
            time: now.clone(),
        });
    }
    let range = ledger.append(&records)?;
    eprintln!(
        "radveil ledger: {} appended (entries {}..{}), {} already logged, {} refused or unreadable",
        records.len(),
        range.start,
        range.end,
        skipped,
        problems
    );
    Ok(if problems == 0 {
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
) -> Result<ExitCode> {
    let ledger = Ledger::open(dir)?;
    let verifier = ledger.stored_verifier()?;
    let (note, cp) = latest(&ledger, &verifier)?;
    let out = if let Some(old) = from {
        let proof = ledger.prove_consistency(old, cp.size).with_context(|| {
            format!(
                "no tree of size {old} within the checkpoint of size {}",
                cp.size
            )
        })?;
        serde_json::json!({
            "size1": old,
            "size2": cp.size,
            "root1": ledger.root_at(old).map(|h| hex(&h)),
            "root2": hex(&cp.root),
            "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "checkpoint": note,
        })
    } else {
        let key = crate::key::load(key_file)?;
        let path = input.context("an image to prove")?;
        let id = identify(path, &key).with_context(|| path.display().to_string())?;
        let (index, record) = ledger
            .find_instance(&id.instance)
            .with_context(|| format!("{} is not in the ledger", path.display()))?;
        if record.sha256 != id.sha256 {
            bail!(
                "{} differs from its ledger entry {index} (altered)",
                path.display()
            );
        }
        if index >= cp.size {
            bail!("entry {index} is newer than the latest checkpoint (size {}): run `radveil ledger checkpoint` first", cp.size);
        }
        let p = ledger.prove_inclusion(index, cp.size).context("proof")?;
        serde_json::json!({ "inclusion": p, "checkpoint": note })
    };
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// What the ledger says of one image.
pub struct ImageCheck {
    /// `proven`, `unknown`, `altered`, `deleted`, `unproven` or `unreadable`.
    pub status: &'static str,
    /// The image's entry, if any.
    pub index: Option<u64>,
    /// Why.
    pub reason: String,
    /// An advisory finding (equipment inconsistent with the series), if any.
    pub advisory: Option<String>,
}

/// A ledger whose latest checkpoint (and a trusted one, if given) verified.
pub struct VerifiedLedger {
    ledger: Ledger,
    checkpoint: Checkpoint,
}

impl VerifiedLedger {
    /// Opens and checks a ledger. `Ok(Err(why))` means the ledger itself is invalid
    /// (rewritten, truncated, badly signed, rolled back); `Err` means it could not be read.
    pub fn open(
        dir: &Path,
        verifier: Option<&str>,
        trusted: Option<&Path>,
    ) -> Result<std::result::Result<VerifiedLedger, String>> {
        let ledger = match Ledger::open(dir) {
            Ok(l) => l,
            Err(e @ radveil_ledger::LedgerError::Record { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let verifier = match verifier {
            Some(v) if Path::new(v).is_file() => Verifier::parse(&std::fs::read_to_string(v)?)?,
            Some(v) => Verifier::parse(v)?,
            None => {
                eprintln!("radveil: note: using the ledger's own verifier.pub; pass --verifier with a key held elsewhere to detect a replaced key");
                ledger.stored_verifier()?
            }
        };
        let cp = match latest(&ledger, &verifier) {
            Ok((_, cp)) => cp,
            Err(e) => return Ok(Err(format!("latest checkpoint: {e}"))),
        };
        if let Some(t) = trusted {
            let note =
                std::fs::read_to_string(t).with_context(|| format!("reading {}", t.display()))?;
            match ledger.verify_against(&note, &verifier) {
                Ok(tcp) if tcp.size <= cp.size => {}
                Ok(tcp) => {
                    return Ok(Err(format!(
                        "the trusted checkpoint (size {}) is newer than the ledger's latest (size {}): checkpoints were rolled back",
                        tcp.size, cp.size
                    )))
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        eprintln!(
            "radveil ledger: {} entries; latest checkpoint (size {}) signed by {} and consistent{}",
            ledger.size(),
            cp.size,
            verifier.name(),
            if trusted.is_some() {
                "; extends the trusted checkpoint"
            } else {
                ""
            }
        );
        Ok(Ok(VerifiedLedger {
            ledger,
            checkpoint: cp,
        }))
    }

    /// What the ledger says of one image: `proven`, `unknown`, `altered`, `deleted`,
    /// `unproven` or `unreadable`, with the entry index and a reason.
    pub fn image_status(&self, path: &Path, key: &Key) -> ImageCheck {
        let id = match identify(path, key) {
            Ok(id) => id,
            Err(e) => {
                return ImageCheck {
                    status: "unreadable",
                    index: None,
                    reason: format!("{e:#}"),
                    advisory: None,
                }
            }
        };
        let (status, index, reason) = self.status_of(&id, &self.ledger, &self.checkpoint);
        ImageCheck {
            status,
            index,
            reason,
            advisory: self.equipment_advisory(&id),
        }
    }

    /// Advisories: the image's equipment differs from what the ledger recorded for earlier
    /// images of its series (a foreign image slipped into a series), or the image is signed
    /// by a key that never signed this equipment's images before while another key did (an
    /// image made elsewhere and passed off as this device's).
    fn equipment_advisory(&self, id: &Identified) -> Option<String> {
        let equipment = id.equipment.as_deref()?;
        let mut found = Vec::new();
        if let Some(series) = id.series.as_deref() {
            let others: std::collections::BTreeSet<&str> =
                self.ledger.series_equipment(series).collect();
            if !others.is_empty() && !others.contains(equipment) {
                found.push("equipment (manufacturer, model, serial number, station) differs from the ledger's earlier images of this series");
            }
        }
        if let Some(signer) = id.signer.as_deref() {
            let signers: std::collections::BTreeSet<&str> =
                self.ledger.equipment_signers(equipment).collect();
            if !signers.is_empty() && !signers.contains(signer) {
                found.push("signed by a key that never signed this equipment's images in the ledger, while another key did");
            }
        }
        (!found.is_empty()).then(|| found.join("; "))
    }

    fn status_of(
        &self,
        id: &Identified,
        ledger: &Ledger,
        cp: &Checkpoint,
    ) -> (&'static str, Option<u64>, String) {
        let Some((index, record)) = ledger.find_instance(&id.instance) else {
            return (
                "unknown",
                None,
                "never recorded in the ledger (inserted?)".into(),
            );
        };
        if record.kind == RecordKind::Tombstone {
            return ("deleted", Some(index), "recorded as deleted".into());
        }
        let mut note = String::new();
        if record.sha256 != id.sha256 {
            match (&record.binding, &id.binding) {
                (Some(a), Some(b)) if a == b => {
                    // Same pixels, geometry and identity in another encoding.
                    note = " (re-encoded: bytes differ, binding hash matches)".into();
                    if record.verification == "valid" && id.verification != "valid"
                    {
                        note = " (bytes differ, binding hash matches; the signature it had when logged is gone or broken)".into();
                    }
                }
                _ => {
                    return (
                        "altered",
                        Some(index),
                        format!("bytes differ from ledger entry {index}, and so do the pixels, geometry or identity"),
                    )
                }
            }
        }
        if index >= cp.size {
            return (
                "unproven",
                Some(index),
                "recorded after the latest checkpoint".into(),
            );
        }
        let proven = ledger.prove_inclusion(index, cp.size).and_then(|p| {
            let proof: Vec<Hash> = p.proof.iter().map(|h| unhex(h)).collect::<Option<_>>()?;
            Some(merkle::verify_inclusion(
                index,
                cp.size,
                &unhex(&p.leaf)?,
                &proof,
                &cp.root,
            ))
        });
        match proven {
            Some(Ok(())) => (
                "proven",
                Some(index),
                format!(
                    "entry {index}, included in checkpoint of size {}{note}",
                    cp.size
                ),
            ),
            Some(Err(e)) => (
                "unproven",
                Some(index),
                format!("inclusion proof failed: {e}"),
            ),
            None => ("unproven", Some(index), "no inclusion proof".into()),
        }
    }
}

fn verify(
    dir: &Path,
    inputs: &[PathBuf],
    trusted: Option<&Path>,
    verifier: Option<&str>,
    key_file: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let verified = match VerifiedLedger::open(dir, verifier, trusted)? {
        Ok(v) => v,
        Err(why) => {
            eprintln!("radveil: ledger invalid: {why}");
            return Ok(ExitCode::from(LEDGER_INVALID));
        }
    };
    if inputs.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let key = crate::key::load(key_file)?;
    let (files, errors) = crate::inputs::collect(inputs);
    let mut flagged = errors.len();
    for (p, reason) in errors {
        report(json, &p, "unreadable", None, &reason);
    }
    for f in &files {
        let ImageCheck {
            status,
            index,
            reason,
            advisory,
        } = verified.image_status(f, &key);
        if let Some(advice) = advisory {
            report(json, f, "advisory", index, &advice);
        }
        if status != "proven" {
            flagged += 1;
        }
        report(json, f, status, index, &reason);
    }
    Ok(if flagged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report(json: bool, path: &Path, status: &str, index: Option<u64>, reason: &str) {
    if json {
        outln!(
            "{}",
            serde_json::json!({"input": path.display().to_string(), "status": status, "entry": index, "reason": reason})
        );
    } else {
        outln!("{status}\t{}\t{reason}", path.display());
    }
}

/// The current time as RFC 3339 UTC, to the second.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    rfc3339_at(secs)
}

/// A Unix time as RFC 3339 UTC, to the second.
pub fn rfc3339_at(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
