//! `radveil serve` refuses to start on a tampered audit trail or ledger.
//!
//! Before the gateway adds a line to its audit trail (`DATA/audit`) or its transparency
//! ledger (`DATA/ledger`), each is verified as `radveil audit verify` and `radveil ledger
//! verify` do (the verification is `radveil-audit`'s [`radveil_audit::verify`] and the
//! ledger's [`radveil_ledger::Log::verify_latest`]; nothing is re-implemented here): an
//! edited, deleted, reordered or truncated entry, a checkpoint not signed by the gateway's
//! key, or a log rolled back behind the checkpoint kept of it stops the start, with what is
//! wrong and the command that shows it. Without this the gateway found out only at its first
//! checkpoint, after it had served requests and added to a trail nobody could trust.
//!
//! A rollback (the whole `DATA/audit` or `DATA/ledger` put back from an older copy, its
//! checkpoints with it) is consistent in itself; it is caught only by a checkpoint kept
//! elsewhere. With `--kept-checkpoints DIR` (a folder apart from the data and its backups)
//! the gateway keeps the latest checkpoint of each there (`DIR/audit-checkpoint`,
//! `DIR/ledger-checkpoint`) at every start and clean stop, never moving it backwards, and
//! each log must extend it: a trail rolled back or deleted stops the start. Without it a
//! data directory restored from a backup starts (the crypto-shredding of item 3 relies on
//! that: a copy taken before a deletion, put back beside the current keys).
//!
//! Both checks run on threads of their own while the store opens; the audit trail's costs
//! one pass over its entries (each opened under the audit key at its position).

use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use anyhow::{bail, Context, Result};
use radveil_audit::{AuditKey, AUDIT_DIR};
use radveil_ledger::note::{Checkpoint, Verifier};

/// The audit trail's checkpoint in the folder of kept checkpoints.
pub const KEPT_AUDIT: &str = "audit-checkpoint";
/// The ledger's checkpoint in the folder of kept checkpoints.
pub const KEPT_LEDGER: &str = "ledger-checkpoint";
/// The ledger's folder under a data directory.
const LEDGER_DIR: &str = "ledger";
/// The largest checkpoint note read (a few lines).
const MAX_NOTE: u64 = 64 * 1024;

/// One of the gateway's two logs, as far as starting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trail {
    /// The audit trail, `DATA/audit`.
    Audit,
    /// The transparency ledger, `DATA/ledger`.
    Ledger,
}

impl Trail {
    /// The log's folder under `data`.
    fn dir(self, data: &Path) -> PathBuf {
        data.join(match self {
            Trail::Audit => AUDIT_DIR,
            Trail::Ledger => LEDGER_DIR,
        })
    }

    /// Where its checkpoint is kept in the folder `kept`.
    pub fn kept(self, kept: &Path) -> PathBuf {
        kept.join(match self {
            Trail::Audit => KEPT_AUDIT,
            Trail::Ledger => KEPT_LEDGER,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Trail::Audit => "audit trail",
            Trail::Ledger => "ledger",
        }
    }

    /// The name with its indefinite article.
    fn a(self) -> &'static str {
        match self {
            Trail::Audit => "an audit trail",
            Trail::Ledger => "a ledger",
        }
    }

    /// The command that shows an operator what is wrong with the log (with the kept
    /// checkpoint when there is one).
    fn command(self, data: &Path, kept: Option<&Path>) -> String {
        let trusted = kept
            .map(|k| format!(" --trusted {}", self.kept(k).display()))
            .unwrap_or_default();
        match self {
            Trail::Audit => format!("radveil audit verify --data {}{trusted}", data.display()),
            Trail::Ledger => format!(
                "radveil ledger verify {}{trusted}",
                self.dir(data).display()
            ),
        }
    }

    /// The refusal to start: what is wrong, the command that shows it, and what not to do.
    /// `kept` is the kept checkpoint's file, when one was checked.
    fn refusal(
        self,
        data: &Path,
        kept: Option<&Path>,
        what: impl std::fmt::Display,
    ) -> anyhow::Error {
        anyhow::anyhow!(
            "the {name} in {dir} does not verify: {what}. radveil serve does not add to {a} that was tampered with: inspect it with `{cmd}`; keep the folder as evidence and start on a copy of it only once you know what happened{rollback}",
            name = self.name(),
            a = self.a(),
            dir = self.dir(data).display(),
            cmd = self.command(data, kept),
            rollback = kept
                .map(|k| format!(
                    " ({} put back from an older copy is refused while {} records a later one)",
                    self.a(),
                    self.kept(k).display()
                ))
                .unwrap_or_default()
        )
    }
}

/// Reads a checkpoint note: a small regular file, `None` when there is none.
fn read_note(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    if !meta.is_file() || meta.len() > MAX_NOTE {
        bail!("{}: not a checkpoint file", path.display());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_NOTE).read_to_string(&mut text))
        .with_context(|| path.display().to_string())?;
    Ok(Some(text))
}

/// The checkpoint of `trail` kept in the folder `kept`, when there is one; an unreadable
/// one stops the start.
fn kept_note(trail: Trail, kept: Option<&Path>) -> Result<Option<String>> {
    match kept {
        Some(k) => read_note(&trail.kept(k)).context("reading the checkpoint kept of the log"),
        None => Ok(None),
    }
}

/// A log that is gone while a checkpoint of it is kept: deleted (or moved) behind the
/// gateway's back.
fn missing(trail: Trail, data: &Path, kept: &Path) -> anyhow::Error {
    trail.refusal(
        data,
        Some(kept),
        format!(
            "the folder (or its origin file) is missing, but {} records a checkpoint of it: deleted?",
            trail.kept(kept).display()
        ),
    )
}

/// A trail to check: its folder, the checkpoint kept of it (text), and where that was
/// kept (for the refusal's words).
struct Found {
    dir: PathBuf,
    note: Option<String>,
    checked: Option<PathBuf>,
}

/// The trail of `data` to check, or `None` when there is none yet (a first run) and no
/// checkpoint of one is kept in `kept`; a trail gone while its checkpoint is kept is
/// refused.
fn found(trail: Trail, data: &Path, kept: Option<&Path>) -> Result<Option<Found>> {
    let dir = trail.dir(data);
    let note = kept_note(trail, kept)?;
    let checked = kept.filter(|_| note.is_some()).map(|k| trail.kept(k));
    if dir.join("origin").exists() {
        return Ok(Some(Found { dir, note, checked }));
    }
    match (kept, &note) {
        (Some(k), Some(_)) => Err(missing(trail, data, k)),
        _ => Ok(None),
    }
}

/// Verifies the audit trail of `data` with its key (as `radveil audit verify` does, with
/// `--trusted` the checkpoint kept in the folder `kept` when there is one) and keeps its
/// latest checkpoint there. A data directory with no trail yet (first run) passes, unless a
/// checkpoint of one is kept; `key` is loaded only when there is a trail. A torn last line
/// (an append that crashed before it was acknowledged) is no tampering: the log's opening
/// repairs it and says so.
pub fn check_audit(
    data: &Path,
    kept: Option<&Path>,
    key: impl FnOnce() -> Result<AuditKey>,
) -> Result<()> {
    let trail = Trail::Audit;
    let Some(Found { dir, note, checked }) = found(trail, data, kept)? else {
        return Ok(());
    };
    let key = key()?;
    let verifier = key.verifier().context("the audit key")?;
    radveil_audit::verify(&dir, key, note.as_deref())
        .map_err(|e| trail.refusal(data, checked.as_deref(), e))?;
    match kept {
        Some(k) => keep(trail, data, k, &verifier),
        None => Ok(()),
    }
}

/// The verifier of the ledger's checkpoints: from its signer key
/// (`DATA/keys/ledger-signer.key`), `None` when there is none yet.
fn ledger_verifier(
    data: &Path,
    policy: radveil_pipeline::secret::PermissionPolicy,
) -> Result<Option<Verifier>> {
    let paths = radveil_web::ingest::Paths::under(data);
    if std::fs::symlink_metadata(&paths.signer).is_err() {
        return Ok(None);
    }
    let s = radveil_pipeline::secret::read_secret(
        &paths.signer,
        "ledger checkpoint signer key",
        policy,
    )?;
    Ok(Some(
        radveil_pipeline::ledger::parse_signer(&s.bytes, &paths.signer)?.verifier(),
    ))
}

/// Verifies the gateway's ledger of `data` (its latest checkpoint signed by the ledger's
/// checkpoint key `DATA/keys/ledger-signer.key` and consistent with the entries, and
/// extending the checkpoint kept in the folder `kept`, when there is one) and keeps its
/// latest checkpoint there. Costs one read of the ledger; a data directory with no ledger
/// yet passes, unless a checkpoint of one is kept; a ledger without its checkpoint key is
/// refused (the key is made before the ledger).
pub fn check_ledger(
    data: &Path,
    kept: Option<&Path>,
    policy: radveil_pipeline::secret::PermissionPolicy,
) -> Result<()> {
    let trail = Trail::Ledger;
    let Some(Found { dir, note, checked }) = found(trail, data, kept)? else {
        return Ok(());
    };
    let refuse = |e: &dyn std::fmt::Display| trail.refusal(data, checked.as_deref(), e);
    let ledger = radveil_ledger::Ledger::open(&dir).map_err(|e| refuse(&e))?;
    let stored = ledger.stored_verifier().map_err(|e| refuse(&e))?;
    // The signer key is made before the ledger, so a ledger without it lost its key, or
    // was put there by someone: checked against the verifier.pub beside it, which whoever
    // wrote the folder chose, it would pass whatever it holds.
    let Some(verifier) = ledger_verifier(data, policy)? else {
        return Err(refuse(&format!(
            "its checkpoint key {} is missing, so it cannot be checked: put the key store \
             back from its backup",
            radveil_web::ingest::Paths::under(data).signer.display()
        )));
    };
    if stored != verifier {
        return Err(refuse(&format!(
            "its verifier.pub is not the key of {}: replaced?",
            radveil_web::ingest::Paths::under(data).signer.display()
        )));
    }
    ledger
        .verify_latest(&verifier, note.as_deref())
        .map_err(|e| refuse(&e))?;
    drop(ledger);
    match kept {
        Some(k) => keep(trail, data, k, &verifier),
        None => Ok(()),
    }
}

/// After a clean stop: keeps the audit trail's latest checkpoint (signed with `key`) in
/// the folder `kept`.
pub fn keep_audit(data: &Path, kept: &Path, key: &AuditKey) -> Result<()> {
    keep(Trail::Audit, data, kept, &key.verifier()?)
}

/// After a clean stop: keeps the ledger's latest checkpoint in the folder `kept`.
pub fn keep_ledger(
    data: &Path,
    kept: &Path,
    policy: radveil_pipeline::secret::PermissionPolicy,
) -> Result<()> {
    match ledger_verifier(data, policy)? {
        Some(v) => keep(Trail::Ledger, data, kept, &v),
        None => Ok(()),
    }
}

/// Keeps the latest checkpoint of `trail` (its `checkpoint` file, when `verifier` opens it)
/// in the folder `kept` (made, owner only, when missing), replacing the kept one only with a
/// larger tree: the kept copy never moves backwards. Written whole (a new file renamed over
/// the old, fsynced).
fn keep(trail: Trail, data: &Path, kept: &Path, verifier: &Verifier) -> Result<()> {
    let Some(note) = read_note(&trail.dir(data).join("checkpoint"))? else {
        return Ok(());
    };
    let Ok(latest) = Checkpoint::open(&note, verifier) else {
        // Not ours: verification (at the next start) says what is wrong.
        return Ok(());
    };
    let path = trail.kept(kept);
    if let Some(old) = read_note(&path)? {
        if Checkpoint::open(&old, verifier).is_ok_and(|o| o.size >= latest.size) {
            return Ok(());
        }
    }
    let what = || format!("keeping a checkpoint in {}", kept.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(kept)
        .with_context(what)?;
    let mut tmp = tempfile::NamedTempFile::new_in(kept).with_context(what)?;
    std::io::Write::write_all(&mut tmp, note.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(what)?;
    tmp.persist(&path).with_context(what)?;
    std::fs::File::open(kept)
        .and_then(|d| d.sync_all())
        .with_context(what)?;
    Ok(())
}

#[cfg(test)]
mod tests;
