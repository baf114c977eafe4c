//! `radveil audit verify` and `radveil audit export`: the gateway's audit trail from the
//! command line. The work is `radveil-audit`'s (its `verify` and `Export`, which records the
//! export itself as an audit read before handing anything out); this module parses the
//! arguments, finds the log and its key, and prints.
//!
//! The audit key (64 hex digits) is read from `--audit-key-file`, else `RADVEIL_AUDIT_KEY`,
//! else `DATA/keys/audit-key` (mode 0600, beside the key store, kept apart from the data
//! and its backups; the gateway makes it on first run). The log is `DATA/audit/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use radveil_audit::fhir::Source;
use radveil_audit::{Action, Actor, AuditKey, AuditLog, Export, Role, AUDIT_DIR, AUDIT_KEY_FILE};
use zeroize::Zeroizing;

use crate::key::{self, KeyPolicy};

/// The environment variable that may hold the audit key (64 hex digits).
const AUDIT_KEY_ENV: &str = "RADVEIL_AUDIT_KEY";

/// Where the audit log and its key are.
#[derive(clap::Args)]
pub struct Place {
    /// The gateway's data directory (the log is DATA/audit).
    #[arg(long)]
    data: PathBuf,
    /// File holding the audit key (64 hex digits). Default: RADVEIL_AUDIT_KEY, else
    /// DATA/keys/audit-key.
    #[arg(long)]
    audit_key_file: Option<PathBuf>,
    #[command(flatten)]
    keys: KeyPolicy,
}

/// Export formats.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// FHIR R4 AuditEvent resources following IHE BALP, one JSON resource a line (NDJSON),
    /// one per patient touched.
    Fhir,
    /// DICOM PS3.15 A.5 audit messages (XML), one a line.
    Dicom,
    /// RFC 5424 syslog lines carrying the A.5 messages.
    Syslog,
    /// The patient's access log in plain words (needs --patient).
    Text,
}

impl From<Format> for radveil_audit::export::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Fhir => Self::Fhir,
            Format::Dicom => Self::Dicom,
            Format::Syslog => Self::Syslog,
            Format::Text => Self::Text,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail: signed checkpoints, consistency proofs, every entry opening at
    /// its place; with --trusted, no rollback behind a checkpoint kept elsewhere.
    Verify {
        #[command(flatten)]
        place: Place,
        /// A checkpoint kept apart from the log (a copy of DATA/audit/checkpoint taken
        /// earlier): the log must extend it.
        #[arg(long)]
        trusted: Option<PathBuf>,
    },
    /// Print audit events (all, or those matching the filters). The export is itself
    /// recorded in the audit trail as an audit read.
    Export {
        #[command(flatten)]
        place: Place,
        /// Output format.
        #[arg(long, value_enum)]
        format: Format,
        /// Only events about this patient (Patient ID).
        #[arg(long)]
        patient: Option<String>,
        /// The patient's Issuer of Patient ID, where the site uses it.
        #[arg(long, requires = "patient")]
        issuer: Option<String>,
        /// Only events by this user (token subject).
        #[arg(long)]
        user: Option<String>,
        /// Only events at or after this time (RFC 3339 UTC or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only events at or before this time (RFC 3339 UTC, or YYYY-MM-DD for the whole day).
        #[arg(long)]
        until: Option<String>,
        /// Only events of this action: store, query, retrieve, delete, token-refused,
        /// audit-read.
        #[arg(long)]
        action: Option<Action>,
    },
}

/// The audit key from the file given, the environment, or DATA/keys/audit-key.
fn load_key(place: &Place) -> Result<AuditKey> {
    audit_key(
        &place.data,
        place.audit_key_file.as_deref(),
        place.keys,
        false,
    )
}

/// The audit key of DATA: from `file` when given, else `RADVEIL_AUDIT_KEY`, else
/// `DATA/keys/audit-key`, made (mode 0600) when `make` and missing (the gateway on its
/// first run). Shared by `radveil audit` and `radveil serve`.
pub fn audit_key(
    data: &Path,
    file: Option<&Path>,
    policy: KeyPolicy,
    make: bool,
) -> Result<AuditKey> {
    let text: Zeroizing<Vec<u8>> = if let Some(f) = file {
        key::read_secret(f, "audit key", policy)?
    } else if let Some(v) = std::env::var_os(AUDIT_KEY_ENV) {
        Zeroizing::new(v.into_encoded_bytes())
    } else {
        let default = data.join(AUDIT_KEY_FILE);
        if !make && !default.exists() {
            bail!(
                "no audit key: {} does not exist (give --audit-key-file or {AUDIT_KEY_ENV})",
                default.display()
            );
        }
        let k = key::key_file(&default, "audit key", policy, make)
            .context("keep a copy of the audit key apart from the data")?;
        return Ok(AuditKey::new(&k)?);
    };
    Ok(AuditKey::from_hex(&text)?)
}

/// The machine's name, for the audit source and syslog lines.
pub fn hostname() -> String {
    let mut s = String::new();
    let _ = std::fs::File::open("/proc/sys/kernel/hostname")
        .and_then(|f| f.take(256).read_to_string(&mut s));
    let s = s.trim();
    if s.is_empty() {
        "localhost".into()
    } else {
        s.to_string()
    }
}

/// The audit log's folder under DATA, which must hold one.
fn log_dir(data: &Path) -> Result<PathBuf> {
    let dir = data.join(AUDIT_DIR);
    if !dir.join("origin").exists() {
        bail!(
            "no audit trail in {} (the gateway makes it on first run)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Reads a checkpoint note file (a few lines).
fn read_note(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if !meta.is_file() || meta.len() > 64 * 1024 {
        bail!("{}: not a checkpoint file", path.display());
    }
    std::fs::read_to_string(path).with_context(|| path.display().to_string())
}

pub fn run(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { place, trusted } => {
            let key = load_key(&place)?;
            let note = trusted.as_deref().map(read_note).transpose()?;
            match radveil_audit::verify(&log_dir(&place.data)?, key, note.as_deref()) {
                Ok(v) => {
                    outln!("{}", v.summary());
                    if let Some(uncovered) = v.uncovered() {
                        outln!("{uncovered}");
                    }
                    if let Some(torn) = v.torn_warning() {
                        eprintln!("radveil audit verify: warning: {torn}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("radveil audit verify: FAILED: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Export {
            place,
            format,
            patient,
            issuer,
            user,
            since,
            until,
            action,
        } => {
            let format = format.into();
            if radveil_audit::export::Format::needs_patient(format) && patient.is_none() {
                bail!("--format text tells one patient what happened: give --patient");
            }
            let key = load_key(&place)?;
            let mut log = AuditLog::open(&log_dir(&place.data)?, key)?;
            let export = Export {
                patient,
                issuer,
                user,
                since,
                until,
                action,
            };
            // Reading the audit trail is audited: recorded (and checkpointed) before any of
            // it is printed, or nothing is printed.
            let reader = Actor {
                subject: Some(
                    std::env::var("USER")
                        .unwrap_or_else(|_| format!("uid:{}", rustix::process::getuid().as_raw())),
                ),
                client: Some("radveil audit export".into()),
                role: Some(Role::Admin),
                ..Actor::default()
            };
            let events = export.read(&mut log, reader)?;
            let host = hostname();
            let source = Source {
                id: format!("radveil@{host}"),
                site: None,
            };
            for (index, e) in &events {
                for line in export.render(format, *index, e, &source, &host) {
                    outln!("{line}");
                }
            }
            eprintln!(
                "radveil audit export: {} events; this export is recorded in the audit trail",
                events.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
