//! The transparency ledger's commands, as library calls the binary prints the results of:
//! appending images ([`append`], [`AppendReport`]), signing a checkpoint
//! ([`sign_checkpoint`]; checkpoint signer keys: [`parse_signer`], [`create_signer`]), proofs
//! ([`Prover`]), and opening a ledger for verification: its latest checkpoint checked
//! against a verifier key (one held elsewhere, or the ledger's own `verifier.pub`) and, when
//! given, a checkpoint trusted from an earlier verification, which it must extend, then
//! images checked against it ([`Verified::check_inputs`]). What the caller should be told
//! on the way (a torn last line, a verifier taken from the ledger itself) comes as
//! [`Notice`]s, in order; the summary is the [`Verified`] ledger's `Display`.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_deid::Key;
use radveil_ledger::note::{Checkpoint, Signer, Verifier};
use radveil_ledger::{Ledger, LedgerError, Observation};
use radveil_part10::MemoryBudget;

use crate::observe::{check_image, observe, ImageCheck};
use crate::ordered::Tally;
use crate::pool::Pool;
use crate::secret::SecretError;
use crate::verify::chain;

/// Something to tell the operator while a ledger is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `entries.jsonl` ends with a torn line (an append crashed): a warning.
    Torn(String),
    /// No verifier key was given: the ledger's own `verifier.pub` is used (a note).
    OwnVerifier,
}

impl Notice {
    /// `warning` or `note`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Torn(_) => "warning",
            Notice::OwnVerifier => "note",
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Torn(s) => f.write_str(s),
            Notice::OwnVerifier => f.write_str(
                "using the ledger's own verifier.pub; pass --verifier with a key held elsewhere to detect a replaced key",
            ),
        }
    }
}

/// The warning about a torn last line of `ledger`'s entries, if it has one.
pub fn torn_notice(ledger: &Ledger) -> Option<Notice> {
    ledger.torn_tail().map(|t| {
        Notice::Torn(format!(
            "{} ends with a torn line ({} bytes at offset {}, after entry {}): an append crashed before it finished; it is not an entry and is not verified. `radveil ledger append --repair-torn` keeps its bytes aside and cuts it off",
            ledger.entries_path().display(),
            t.len,
            t.offset,
            t.entries
        ))
    })
}

/// Why a ledger could not be read (as opposed to read and found invalid).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The ledger, or its verifier key, could not be read or parsed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The verifier key given as a file could not be read.
    #[error(transparent)]
    Verifier(std::io::Error),
    /// The verifier key does not parse.
    #[error(transparent)]
    Note(#[from] radveil_ledger::note::NoteError),
    /// The trusted checkpoint could not be read.
    #[error("reading {path}")]
    Trusted {
        /// The file named.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A ledger whose latest checkpoint (and a trusted one, if given) verified.
#[derive(Debug)]
pub struct Verified {
    ledger: Ledger,
    checkpoint: Checkpoint,
    signed_by: String,
    extends_trusted: bool,
}

impl Verified {
    /// Opens and checks the ledger in `dir` against `verifier` (a key, or a file holding
    /// one; the ledger's own when `None`) and the checkpoint in the file `trusted`.
    /// `Ok(Err(why))` means the ledger itself is invalid (rewritten, truncated, badly
    /// signed, rolled back); `Err` means it could not be read.
    pub fn open(
        dir: &Path,
        verifier: Option<&str>,
        trusted: Option<&Path>,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<Result<Verified, String>, OpenError> {
        let ledger = match Ledger::open(dir) {
            Ok(l) => l,
            Err(e @ LedgerError::Record { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        if let Some(n) = torn_notice(&ledger) {
            notice(n);
        }
        let verifier = match verifier {
            Some(v) if Path::new(v).is_file() => {
                Verifier::parse(&std::fs::read_to_string(v).map_err(OpenError::Verifier)?)?
            }
            Some(v) => Verifier::parse(v)?,
            None => {
                notice(Notice::OwnVerifier);
                ledger.stored_verifier()?
            }
        };
        let trusted_note = match trusted {
            Some(t) => Some(
                std::fs::read_to_string(t).map_err(|source| OpenError::Trusted {
                    path: t.to_path_buf(),
                    source,
                })?,
            ),
            None => None,
        };
        let checkpoint = match ledger.verify_latest(&verifier, trusted_note.as_deref()) {
            Ok(cp) => cp,
            Err(e) => return Ok(Err(e.to_string())),
        };
        Ok(Ok(Verified {
            ledger,
            checkpoint,
            signed_by: verifier.name().to_string(),
            extends_trusted: trusted.is_some(),
        }))
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Its verified latest checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// What the ledger says of one image, with any equipment advisory.
    pub fn image_status(&self, path: &Path, key: &Key, budget: &MemoryBudget) -> ImageCheck {
        check_image(&self.ledger, &self.checkpoint, path, key, budget)
    }
}

impl fmt::Display for Verified {
    /// `N entries; latest checkpoint (size S) signed by NAME and consistent[; extends the
    /// trusted checkpoint]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries; latest checkpoint (size {}) signed by {} and consistent{}",
            self.ledger.size(),
            self.checkpoint.size,
            self.signed_by,
            if self.extends_trusted {
                "; extends the trusted checkpoint"
            } else {
                ""
            }
        )
    }
}

/// Why a proof could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The ledger has no tree of that size below its latest checkpoint.
    #[error("no tree of size {old} within the checkpoint of size {size}")]
    NoTree {
        /// The size asked for.
        old: u64,
        /// The latest checkpoint's size.
        size: u64,
    },
    /// The image could not be read.
    #[error("{}", .path.display())]
    Observe {
        /// The image.
        path: PathBuf,
        /// Why.
        source: crate::observe::ObserveError,
    },
    /// The image is not in the ledger as it is.
    #[error("{}: {status}: {reason}", .path.display())]
    NotProven {
        /// The image.
        path: PathBuf,
        /// What the ledger says of it.
        status: radveil_ledger::Status,
        /// Why, in words.
        reason: String,
    },
    /// The ledger's entries could not be read again to make the proof (its records are not
    /// kept in memory).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The proof that the checkpoint `cp` (the note `note`) extends the ledger's tree of size
/// `old`, as the JSON `radveil ledger prove --consistency-from` prints.
pub fn consistency_proof(
    ledger: &Ledger,
    note: &str,
    cp: &Checkpoint,
    old: u64,
) -> Result<serde_json::Value, ProveError> {
    use radveil_ledger::hex;
    let proof = ledger
        .prove_consistency(old, cp.size)?
        .ok_or(ProveError::NoTree { old, size: cp.size })?;
    Ok(serde_json::json!({
        "size1": old,
        "size2": cp.size,
        "root1": ledger.root_at(old)?.map(|h| hex(&h)),
        "root2": hex(&cp.root),
        "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
        "checkpoint": note,
    }))
}

/// The proof that the image `path`, as it is, is in the tree of the checkpoint `cp` (the
/// note `note`), as the JSON `radveil ledger prove` prints.
pub fn inclusion_proof(
    ledger: &Ledger,
    note: &str,
    cp: &Checkpoint,
    path: &Path,
    key: &Key,
    budget: &MemoryBudget,
) -> Result<serde_json::Value, ProveError> {
    let obs = crate::observe::observe(path, key, budget).map_err(|source| ProveError::Observe {
        path: path.to_path_buf(),
        source,
    })?;
    let p = ledger
        .prove_observed(&obs, cp)
        .map_err(|v| ProveError::NotProven {
            path: path.to_path_buf(),
            status: v.status,
            reason: v.reason,
        })?;
    Ok(serde_json::json!({ "inclusion": p, "checkpoint": note }))
}

/// What appending a batch of images did.
#[derive(Debug)]
pub struct AppendReport {
    /// The indexes of the new entries.
    pub range: std::ops::Range<u64>,
    /// The torn line cut off first, with where its bytes were kept.
    pub repaired: Option<(radveil_ledger::TornTail, PathBuf)>,
    /// Images whose bytes were already logged: nothing added.
    pub skipped: usize,
    /// Images refused: their bytes differ from their last ingest (altered?).
    pub refused: Vec<PathBuf>,
    /// Inputs not logged because they could not be read.
    pub unreadable: usize,
}

impl AppendReport {
    /// Images refused or unreadable.
    pub fn problems(&self) -> usize {
        self.refused.len() + self.unreadable
    }

    /// The warnings to give before the summary: the torn line repaired, then each image
    /// refused.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some((t, kept)) = &self.repaired {
            w.push(format!(
                "warning: cut a torn line ({} bytes at offset {}, after entry {}) off the ledger's entries; its bytes are kept in {}",
                t.len,
                t.offset,
                t.entries,
                kept.display()
            ));
        }
        for f in &self.refused {
            w.push(format!(
                "{}: refused: its bytes differ from its ledger entry (altered?); --allow-changed records a legitimate update",
                f.display()
            ));
        }
        w
    }
}

impl fmt::Display for AppendReport {
    /// `N appended (entries A..B), S already logged, P refused or unreadable`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} appended (entries {}..{}), {} already logged, {} refused or unreadable",
            self.range.end - self.range.start,
            self.range.start,
            self.range.end,
            self.skipped,
            self.problems()
        )
    }
}

/// Reads and hashes `files` on every core (before the ledger's lock), then appends
/// what `intent` calls for under it, against the ledger as it is then. Each file that
/// cannot be read is passed to `unreadable` with the reason, in input order, and is not
/// logged.
pub fn append_files(
    ledger: &mut Ledger,
    files: &[PathBuf],
    key: &Key,
    intent: radveil_ledger::Intent,
    repair: radveil_ledger::TornRepair,
    budget: &MemoryBudget,
    unreadable: &mut (dyn FnMut(&Path, String) + Send),
) -> Result<AppendReport, LedgerError> {
    let mut observed = Vec::new();
    let mut failed = 0;
    crate::ordered::for_each_in_order(
        &Pool::all_cores(),
        files,
        || (),
        |(), f| crate::observe::observe(f, key, budget),
        |f, result| match result {
            Ok(Ok(o)) => observed.push((f, o)),
            Ok(Err(e)) => {
                failed += 1;
                unreadable(f, chain(&e));
            }
            Err(p) => {
                failed += 1;
                unreadable(f, chain(&p));
            }
        },
    );
    let now = radveil_ledger::rfc3339_now();
    let a = crate::observe::append_observed(ledger, &observed, intent, repair, &now)?;
    Ok(AppendReport {
        range: a.appended.range,
        repaired: a.appended.repaired,
        skipped: a.skipped,
        refused: a.refused.into_iter().map(|f| f.to_path_buf()).collect(),
        unreadable: failed,
    })
}

/// An input an append did not log, and why (the reason names no value from the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotLogged {
    /// Refused while walking the inputs (missing, a FIFO, a dangling link...).
    Input(String),
    /// A file that could not be read as an image.
    Unreadable(String),
}

impl fmt::Display for NotLogged {
    /// The walker's reason as it is; `not logged: REASON` for an unreadable file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotLogged::Input(why) => f.write_str(why),
            NotLogged::Unreadable(why) => write!(f, "not logged: {why}"),
        }
    }
}

/// Why an append failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The entries end with a torn line and no repair was asked for (a
    /// [`LedgerError::TornTail`]): the message says how to repair it.
    #[error(
        "{0}; `radveil ledger append --repair-torn` keeps its bytes aside, cuts it off and appends"
    )]
    Torn(LedgerError),
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(LedgerError),
}

impl From<LedgerError> for AppendError {
    fn from(e: LedgerError) -> AppendError {
        match e {
            e @ LedgerError::TornTail { .. } => AppendError::Torn(e),
            e => AppendError::Ledger(e),
        }
    }
}

/// `radveil ledger append`: opens the ledger in `dir`, refuses at once (before any image is
/// read) when its entries end with a torn line and `repair` is
/// [`TornRepair::Refuse`](radveil_ledger::TornRepair::Refuse), walks `inputs` and appends
/// what `intent` calls for ([`append_files`]). Each input not logged is passed to
/// `not_logged`, in order: those the walk refused first, then files that could not be
/// read; both count in the report's `unreadable`.
pub fn append(
    dir: &Path,
    inputs: &[PathBuf],
    key: &Key,
    intent: radveil_ledger::Intent,
    repair: radveil_ledger::TornRepair,
    budget: &MemoryBudget,
    not_logged: &mut (dyn FnMut(&Path, NotLogged) + Send),
) -> Result<AppendReport, AppendError> {
    let mut ledger = Ledger::open(dir)?;
    if let (Some(torn), radveil_ledger::TornRepair::Refuse) = (ledger.torn_tail(), repair) {
        // Checked again under the lock.
        return Err(AppendError::Torn(LedgerError::TornTail {
            path: ledger.entries_path(),
            torn,
        }));
    }
    let walked = crate::walk::collect(inputs, budget);
    for r in walked.refused.iter() {
        not_logged(&r.path, NotLogged::Input(r.reason.clone()));
    }
    let mut report = append_files(
        &mut ledger,
        &walked.files,
        key,
        intent,
        repair,
        budget,
        &mut |f, why| not_logged(f, NotLogged::Unreadable(why)),
    )?;
    report.unreadable += walked.refused.len();
    Ok(report)
}

/// Why a checkpoint was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The signer is not the one whose verifier the ledger holds.
    #[error("{} is not this ledger's checkpoint key", .path.display())]
    WrongKey {
        /// The signer key file.
        path: PathBuf,
    },
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// `radveil ledger checkpoint`: signs a checkpoint of the whole ledger in `dir` with
/// `signer` (read from the file `signer_key`, which errors name) and returns the signed
/// note. A signer other than the ledger's own is refused. A torn last line is passed to
/// `notice` first.
pub fn sign_checkpoint(
    dir: &Path,
    signer: &Signer,
    signer_key: &Path,
    notice: &mut dyn FnMut(Notice),
) -> Result<String, CheckpointError> {
    let mut ledger = Ledger::open(dir)?;
    if let Some(n) = torn_notice(&ledger) {
        notice(n);
    }
    if signer.verifier() != ledger.stored_verifier()? {
        return Err(CheckpointError::WrongKey {
            path: signer_key.to_path_buf(),
        });
    }
    Ok(ledger.checkpoint(signer)?)
}

/// Why a checkpoint signer key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SignerKeyError {
    /// The key file's bytes are not UTF-8.
    #[error("checkpoint signer key {} is not text", .path.display())]
    NotText {
        /// The key file.
        path: PathBuf,
        /// Where the bytes stop being UTF-8.
        source: std::str::Utf8Error,
    },
    /// The key does not parse, or the origin makes no key name.
    #[error(transparent)]
    Note(#[from] radveil_ledger::note::NoteError),
    /// No random seed could be had.
    #[error("system random source: {0}")]
    Random(getrandom::Error),
    /// The key file could not be written.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The checkpoint signer in `secret`, the bytes of the key file `path` (named in errors).
pub fn parse_signer(secret: &[u8], path: &Path) -> Result<Signer, SignerKeyError> {
    let text = std::str::from_utf8(secret).map_err(|source| SignerKeyError::NotText {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Signer::parse(text)?)
}

/// Makes a checkpoint signer for the ledger `origin` from a random seed (see
/// [`Signer::for_origin`]) and writes it to the new file `path`, mode 0600, whole or not at
/// all; an existing file is never replaced ([`crate::secret::write_private`]).
pub fn create_signer(path: &Path, origin: &str) -> Result<Signer, SignerKeyError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut()).map_err(SignerKeyError::Random)?;
    let signer = Signer::for_origin(origin, &seed)?;
    crate::secret::write_private(path, |f| {
        use std::io::Write;
        f.write_all(signer.to_secret_string().as_bytes())?;
        f.write_all(b"\n")
    })?;
    Ok(signer)
}

/// How many files [`Verified::check_inputs`] checks against the ledger at once.
const CHECK_CHUNK: usize = 512;

/// A ledger opened to give proofs from: its latest checkpoint, verified against the
/// ledger's own verifier key (a prover vouches for its own log; a verifier checks with a
/// key held elsewhere).
#[derive(Debug)]
pub struct Prover {
    ledger: Ledger,
    note: String,
    checkpoint: Checkpoint,
}

impl Prover {
    /// Opens the ledger in `dir` and verifies its latest checkpoint. A torn last line is
    /// passed to `notice`.
    pub fn open(dir: &Path, notice: &mut dyn FnMut(Notice)) -> Result<Prover, LedgerError> {
        let ledger = Ledger::open(dir)?;
        if let Some(n) = torn_notice(&ledger) {
            notice(n);
        }
        let verifier = ledger.stored_verifier()?;
        let note = ledger.latest_checkpoint()?;
        let checkpoint = ledger.verify_against(&note, &verifier)?;
        Ok(Prover {
            ledger,
            note,
            checkpoint,
        })
    }

    /// The proof that the latest checkpoint extends the tree of size `old`
    /// ([`consistency_proof`]).
    pub fn consistency(&self, old: u64) -> Result<serde_json::Value, ProveError> {
        consistency_proof(&self.ledger, &self.note, &self.checkpoint, old)
    }

    /// The proof that the image `path`, as it is, is in the latest checkpoint's tree
    /// ([`inclusion_proof`]).
    pub fn inclusion(
        &self,
        path: &Path,
        key: &Key,
        budget: &MemoryBudget,
    ) -> Result<serde_json::Value, ProveError> {
        inclusion_proof(
            &self.ledger,
            &self.note,
            &self.checkpoint,
            path,
            key,
            budget,
        )
    }
}

impl Verified {
    /// Walks `inputs` and checks each file against the ledger on every core; `each` gets
    /// every input's check in order: the inputs the walk refused first (unreadable), then
    /// the files in the walk's order. A check that panics is reported unreadable. The
    /// tally counts proven images as done, every other status (unreadable included) as
    /// failed.
    pub fn check_inputs(
        &self,
        inputs: &[PathBuf],
        key: &Key,
        budget: &MemoryBudget,
        each: &mut (dyn FnMut(&Path, &ImageCheck) + Send),
    ) -> Tally {
        let walked = crate::walk::collect(inputs, budget);
        let mut tally = Tally::default();
        let mut count = |f: &Path, check: &ImageCheck| {
            match check.verdict.status {
                radveil_ledger::Status::Proven => tally.done += 1,
                _ => tally.failed += 1,
            }
            each(f, check);
        };
        for r in walked.refused {
            count(&r.path, &ImageCheck::unreadable(r.reason));
        }
        // The files are observed on every core, a chunk at a time; each chunk is then
        // checked against the ledger at once (two passes over its file for the chunk, not
        // two per image: the ledger's records are read from its file, not kept).
        let pool = Pool::all_cores();
        for chunk in walked.files.chunks(CHECK_CHUNK) {
            let mut observed: Vec<Result<Observation, ImageCheck>> =
                Vec::with_capacity(chunk.len());
            crate::ordered::for_each_in_order(
                &pool,
                chunk,
                || (),
                |(), f| observe(f, key, budget),
                |_, result| {
                    observed.push(match result {
                        Ok(Ok(o)) => Ok(o),
                        Ok(Err(e)) => Err(ImageCheck::unreadable(chain(&e))),
                        Err(p) => Err(ImageCheck::unreadable(chain(&p))),
                    })
                },
            );
            let images: Vec<&Observation> =
                observed.iter().filter_map(|o| o.as_ref().ok()).collect();
            let mut checked = match self.ledger.check_many(&images, &self.checkpoint) {
                Ok(checked) => checked.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => images
                    .iter()
                    .map(|_| Err(format!("the ledger could not be read: {e}")))
                    .collect(),
            }
            .into_iter();
            for (f, o) in chunk.iter().zip(observed) {
                let check = match o.map(|_| checked.next()) {
                    Ok(Some(Ok((verdict, advisories)))) => ImageCheck::of(verdict, &advisories),
                    Ok(Some(Err(why))) => ImageCheck {
                        verdict: radveil_ledger::Verdict {
                            status: radveil_ledger::Status::Unproven,
                            index: None,
                            reason: why,
                        },
                        advisory: None,
                    },
                    Ok(None) => ImageCheck::unreadable("not checked"),
                    Err(unreadable) => unreadable,
                };
                count(f, &check);
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(dir: &Path) -> (PathBuf, Signer) {
        let signer = Signer::from_seed("test-ledger", &[3; 32]).unwrap();
        let path = dir.join("ledger");
        Ledger::init(&path, "example.org/test", &signer).unwrap();
        Ledger::open(&path).unwrap().checkpoint(&signer).unwrap();
        (path, signer)
    }

    fn open(
        dir: &Path,
        verifier: Option<&str>,
        trusted: Option<&Path>,
    ) -> (Result<Result<Verified, String>, OpenError>, Vec<Notice>) {
        let mut notices = Vec::new();
        let r = Verified::open(dir, verifier, trusted, &mut |n| notices.push(n));
        (r, notices)
    }

    #[test]
    fn a_ledger_verifies_with_its_own_key_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, signer) = ledger(tmp.path());
        let (r, notices) = open(&path, None, None);
        let v = r.unwrap().unwrap();
        assert_eq!(notices, vec![Notice::OwnVerifier]);
        assert_eq!(notices[0].kind(), "note");
        assert_eq!(
            v.to_string(),
            "0 entries; latest checkpoint (size 0) signed by test-ledger and consistent"
        );
        // Given the key (as text, or as a file), no note; a trusted checkpoint is extended.
        let key = signer.verifier().to_string();
        let key_file = tmp.path().join("verifier.pub");
        std::fs::write(&key_file, &key).unwrap();
        let trusted = tmp.path().join("trusted");
        std::fs::write(
            &trusted,
            Ledger::open(&path).unwrap().latest_checkpoint().unwrap(),
        )
        .unwrap();
        for k in [key.as_str(), key_file.to_str().unwrap()] {
            let (r, notices) = open(&path, Some(k), Some(&trusted));
            assert!(notices.is_empty());
            assert!(r
                .unwrap()
                .unwrap()
                .to_string()
                .ends_with("and consistent; extends the trusted checkpoint"));
        }
        // A trusted checkpoint that cannot be read is an error, not an invalid ledger.
        let missing = tmp.path().join("missing");
        let (r, _) = open(&path, Some(&key), Some(&missing));
        let e = r.unwrap_err();
        assert!(matches!(e, OpenError::Trusted { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("reading {}", missing.display()));
    }

    #[test]
    fn proofs_are_given_for_trees_and_images_in_the_ledger_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = ledger(tmp.path());
        let l = Ledger::open(&path).unwrap();
        let note = l.latest_checkpoint().unwrap();
        let cp = l
            .verify_against(&note, &l.stored_verifier().unwrap())
            .unwrap();
        let c = consistency_proof(&l, &note, &cp, 0).unwrap();
        assert_eq!(c["size1"], 0);
        assert_eq!(c["size2"], cp.size);
        assert_eq!(c["checkpoint"], note.as_str());
        let e = consistency_proof(&l, &note, &cp, 5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no tree of size 5 within the checkpoint of size 0"
        );
        // An image never logged is not proven; one that cannot be read says why.
        let budget = MemoryBudget::new(64 << 20);
        let key = Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap();
        let image = tmp.path().join("image.dcm");
        std::fs::write(&image, crate::sign::testing::signed_file(&budget)).unwrap();
        let e = inclusion_proof(&l, &note, &cp, &image, &key, &budget).unwrap_err();
        assert!(matches!(e, ProveError::NotProven { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!("{}: ", image.display())),
            "{e}"
        );
        let missing = tmp.path().join("missing.dcm");
        let e = inclusion_proof(&l, &note, &cp, &missing, &key, &budget).unwrap_err();
        assert!(matches!(e, ProveError::Observe { .. }), "{e:?}");
        assert_eq!(e.to_string(), missing.display().to_string());
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn an_append_logs_readable_images_once_and_reports_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = ledger(tmp.path());
        let budget = MemoryBudget::new(64 << 20);
        let key = Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap();
        let image = tmp.path().join("image.dcm");
        std::fs::write(&image, crate::sign::testing::signed_file(&budget)).unwrap();
        let missing = tmp.path().join("missing.dcm");
        let files = vec![missing.clone(), image.clone()];
        let ingest = radveil_ledger::Intent::Ingest {
            allow_changed: false,
        };
        let refuse = radveil_ledger::TornRepair::Refuse;
        let mut l = Ledger::open(&path).unwrap();
        let mut bad = Vec::new();
        let r = append_files(
            &mut l,
            &files,
            &key,
            ingest,
            refuse,
            &budget,
            &mut |f, why| bad.push((f.to_path_buf(), why)),
        )
        .unwrap();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, missing);
        assert!(bad[0].1.starts_with("cannot read"), "{}", bad[0].1);
        assert_eq!(
            r.to_string(),
            "1 appended (entries 0..1), 0 already logged, 1 refused or unreadable"
        );
        assert!(r.warnings().is_empty());
        // Again: already logged. Changed: refused.
        let r = append_files(
            &mut l,
            &files[1..],
            &key,
            ingest,
            refuse,
            &budget,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(r.skipped, 1);
        assert_eq!(r.problems(), 0);
        let mut changed = std::fs::read(&image).unwrap();
        let n = changed.len();
        changed[n - 1] ^= 1;
        std::fs::write(&image, changed).unwrap();
        let r = append_files(
            &mut l,
            &files[1..],
            &key,
            ingest,
            refuse,
            &budget,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(r.refused, vec![image.clone()]);
        assert_eq!(r.warnings().len(), 1);
        assert!(r.warnings()[0].contains(": refused: its bytes differ"));
        assert_eq!(l.size(), 1);
    }

    #[test]
    fn another_key_makes_the_ledger_invalid_and_a_torn_line_is_warned_about() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = ledger(tmp.path());
        let other = Signer::from_seed("other", &[4; 32]).unwrap();
        let (r, _) = open(&path, Some(&other.verifier().to_string()), None);
        assert!(r.unwrap().is_err(), "verified with a foreign key");
        let entries = Ledger::open(&path).unwrap().entries_path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&entries)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"torn").unwrap();
        let (r, notices) = open(&path, None, None);
        assert!(r.unwrap().is_ok());
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].kind(), "warning");
        assert!(notices[0]
            .to_string()
            .contains("ends with a torn line (6 bytes at offset"));
        assert_eq!(notices[1], Notice::OwnVerifier);
    }

    /// The key, budget and intents the command tests share.
    fn key() -> Key {
        Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap()
    }

    fn budget() -> MemoryBudget {
        MemoryBudget::new(64 << 20)
    }

    const INGEST: radveil_ledger::Intent = radveil_ledger::Intent::Ingest {
        allow_changed: false,
    };

    /// [`crate::sign::testing::unsigned_file`] with another SOP Instance UID (same length).
    fn other_instance() -> Vec<u8> {
        let (old, new) = (b"1.2.826.0.1.3680043.10.1.1", b"1.2.826.0.1.3680043.10.1.9");
        let mut f = crate::sign::testing::unsigned_file();
        let mut at = 0;
        while let Some(i) = f[at..].windows(old.len()).position(|w| w == old) {
            f[at + i..at + i + old.len()].copy_from_slice(new);
            at += i + old.len();
        }
        assert_ne!(f, crate::sign::testing::unsigned_file());
        f
    }

    /// Runs [`append`], collecting what was not logged.
    fn append_all(
        path: &Path,
        inputs: &[PathBuf],
        intent: radveil_ledger::Intent,
        repair: radveil_ledger::TornRepair,
    ) -> (Result<AppendReport, AppendError>, Vec<(PathBuf, NotLogged)>) {
        let mut skipped = Vec::new();
        let r = append(
            path,
            inputs,
            &key(),
            intent,
            repair,
            &budget(),
            &mut |f, n| skipped.push((f.to_path_buf(), n)),
        );
        (r, skipped)
    }

    fn tear(path: &Path) {
        let entries = Ledger::open(path).unwrap().entries_path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(entries)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"torn").unwrap();
    }

    #[test]
    fn an_append_reports_what_it_did_not_log_in_order_and_logs_an_image_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = ledger(tmp.path());
        let images = tmp.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let image = images.join("a.dcm");
        std::fs::write(&image, crate::sign::testing::signed_file(&budget())).unwrap();
        std::fs::write(images.join("b.txt"), b"not DICOM").unwrap();
        let missing = tmp.path().join("missing.dcm");
        let refuse = radveil_ledger::TornRepair::Refuse;
        let (r, skipped) = append_all(&path, &[images.clone(), missing.clone()], INGEST, refuse);
        let r = r.unwrap();
        // The walk's refusals first, then the files that could not be read.
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0].0, missing);
        assert!(matches!(&skipped[0].1, NotLogged::Input(_)), "{skipped:?}");
        assert!(skipped[0].1.to_string().starts_with("cannot read: "));
        assert_eq!(skipped[1].0, images.join("b.txt"));
        assert!(matches!(&skipped[1].1, NotLogged::Unreadable(_)));
        assert!(skipped[1].1.to_string().starts_with("not logged: "));
        assert_eq!(
            r.to_string(),
            "1 appended (entries 0..1), 0 already logged, 2 refused or unreadable"
        );
        // The same image again is a no-op, reported as already logged.
        let (r, skipped) = append_all(&path, std::slice::from_ref(&image), INGEST, refuse);
        let r = r.unwrap();
        assert!(skipped.is_empty());
        assert_eq!(
            r.to_string(),
            "0 appended (entries 1..1), 1 already logged, 0 refused or unreadable"
        );
        // Altered, it is refused unless the change is declared; deleted, it is tombstoned.
        let mut altered = std::fs::read(&image).unwrap();
        let n = altered.len();
        altered[n - 1] ^= 1;
        std::fs::write(&image, altered).unwrap();
        let (r, _) = append_all(&path, std::slice::from_ref(&image), INGEST, refuse);
        let r = r.unwrap();
        assert_eq!(r.refused, vec![image.clone()]);
        assert_eq!(r.problems(), 1);
        assert_eq!(Ledger::open(&path).unwrap().size(), 1);
        let update = radveil_ledger::Intent::Ingest {
            allow_changed: true,
        };
        let (r, _) = append_all(&path, std::slice::from_ref(&image), update, refuse);
        assert_eq!(r.unwrap().range, 1..2);
        let tombstone = radveil_ledger::Intent::Tombstone;
        let (r, _) = append_all(&path, std::slice::from_ref(&image), tombstone, refuse);
        assert_eq!(r.unwrap().range, 2..3);
        let l = Ledger::open(&path).unwrap();
        let third = l.entries().nth(2).unwrap().unwrap().1;
        assert_eq!(third.kind, radveil_ledger::RecordKind::Tombstone);
    }

    #[test]
    fn an_append_after_a_torn_line_is_refused_before_reading_unless_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = ledger(tmp.path());
        let image = tmp.path().join("a.dcm");
        std::fs::write(&image, crate::sign::testing::signed_file(&budget())).unwrap();
        tear(&path);
        let missing = tmp.path().join("missing.dcm");
        let inputs = [missing, image];
        let (r, skipped) = append_all(&path, &inputs, INGEST, radveil_ledger::TornRepair::Refuse);
        let e = r.unwrap_err();
        assert!(matches!(e, AppendError::Torn(_)), "{e:?}");
        assert!(e.to_string().ends_with(
            "until it is repaired; `radveil ledger append --repair-torn` keeps its bytes aside, cuts it off and appends"
        ), "{e}");
        // Refused before the inputs were walked: the missing one was not reported.
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(std::error::Error::source(&e).is_none());
        let l = Ledger::open(&path).unwrap();
        assert_eq!((l.size(), l.torn_tail().is_some()), (0, true));
        let (r, skipped) = append_all(&path, &inputs, INGEST, radveil_ledger::TornRepair::Truncate);
        let r = r.unwrap();
        assert_eq!(skipped.len(), 1);
        let (torn, kept) = r.repaired.as_ref().unwrap();
        assert_eq!(torn.len, 6);
        assert_eq!(std::fs::read(kept).unwrap(), b"{\"torn");
        assert!(r.warnings()[0].starts_with("warning: cut a torn line (6 bytes at offset"));
        assert_eq!(r.range, 0..1);
        assert!(Ledger::open(&path).unwrap().torn_tail().is_none());
    }

    #[test]
    fn a_checkpoint_is_signed_by_the_ledgers_own_key_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, signer) = ledger(tmp.path());
        let key_file = tmp.path().join("other.key");
        let other = Signer::from_seed("test-ledger", &[4; 32]).unwrap();
        let mut notices = Vec::new();
        let e = sign_checkpoint(&path, &other, &key_file, &mut |n| notices.push(n)).unwrap_err();
        assert!(matches!(e, CheckpointError::WrongKey { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{} is not this ledger's checkpoint key", key_file.display())
        );
        tear(&path);
        let note = sign_checkpoint(&path, &signer, &key_file, &mut |n| notices.push(n)).unwrap();
        assert_eq!(notices.len(), 1);
        assert!(matches!(notices[0], Notice::Torn(_)));
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.latest_checkpoint().unwrap(), note);
        assert_eq!(l.verify_against(&note, &signer.verifier()).unwrap().size, 0);
        let e = sign_checkpoint(&tmp.path().join("none"), &signer, &key_file, &mut |_| {});
        assert!(matches!(e, Err(CheckpointError::Ledger(_))), "{e:?}");
    }

    #[test]
    fn a_prover_proves_logged_images_and_says_why_it_cannot_prove_others() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, signer) = ledger(tmp.path());
        let logged = tmp.path().join("logged.dcm");
        std::fs::write(&logged, crate::sign::testing::signed_file(&budget())).unwrap();
        let unknown = tmp.path().join("unknown.dcm");
        std::fs::write(&unknown, other_instance()).unwrap();
        let refuse = radveil_ledger::TornRepair::Refuse;
        append_all(&path, std::slice::from_ref(&logged), INGEST, refuse)
            .0
            .unwrap();
        // Logged after the latest checkpoint: not yet provable.
        let p = Prover::open(&path, &mut |_| {}).unwrap();
        let e = p.inclusion(&logged, &key(), &budget()).unwrap_err();
        assert!(
            matches!(
                e,
                ProveError::NotProven {
                    status: radveil_ledger::Status::Unproven,
                    ..
                }
            ),
            "{e:?}"
        );
        Ledger::open(&path).unwrap().checkpoint(&signer).unwrap();
        let p = Prover::open(&path, &mut |_| {}).unwrap();
        let proof = p.inclusion(&logged, &key(), &budget()).unwrap();
        assert_eq!(proof["inclusion"]["index"], 0);
        assert_eq!(proof["inclusion"]["size"], 1);
        assert!(proof["checkpoint"].as_str().unwrap().contains("\n1\n"));
        let e = p.inclusion(&unknown, &key(), &budget()).unwrap_err();
        assert!(
            matches!(
                e,
                ProveError::NotProven {
                    status: radveil_ledger::Status::Unknown,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(p.consistency(0).unwrap()["size2"], 1);
        assert!(matches!(
            p.consistency(2),
            Err(ProveError::NoTree { old: 2, size: 1 })
        ));
        // A checkpoint that no longer verifies: nothing is proven from it.
        let cp = path.join("checkpoint");
        let note = std::fs::read_to_string(&cp).unwrap();
        std::fs::write(&cp, note.replacen("\n1\n", "\n0\n", 1)).unwrap();
        assert!(Prover::open(&path, &mut |_| {}).is_err());
    }

    #[test]
    fn checking_inputs_gives_every_outcome_in_input_order_and_tallies_the_flagged() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, signer) = ledger(tmp.path());
        let dir = tmp.path().join("images");
        std::fs::create_dir(&dir).unwrap();
        let logged = dir.join("a.dcm");
        std::fs::write(&logged, crate::sign::testing::signed_file(&budget())).unwrap();
        let refuse = radveil_ledger::TornRepair::Refuse;
        append_all(&path, std::slice::from_ref(&logged), INGEST, refuse)
            .0
            .unwrap();
        Ledger::open(&path).unwrap().checkpoint(&signer).unwrap();
        // The same instance with other pixels, another instance, and not DICOM at all.
        let mut altered = crate::sign::testing::unsigned_file();
        let n = altered.len();
        altered[n - 1] ^= 1;
        std::fs::write(dir.join("b.dcm"), altered).unwrap();
        std::fs::write(dir.join("c.dcm"), other_instance()).unwrap();
        std::fs::write(dir.join("d.txt"), b"not DICOM").unwrap();
        let missing = tmp.path().join("missing.dcm");
        let (r, _) = open(&path, None, None);
        let v = r.unwrap().unwrap();
        let mut seen = Vec::new();
        let tally = v.check_inputs(&[dir.clone(), missing.clone()], &key(), &budget(), {
            &mut |f, c| seen.push((f.to_path_buf(), c.verdict.status))
        });
        use radveil_ledger::Status::*;
        assert_eq!(
            seen,
            vec![
                (missing, Unreadable),
                (logged, Proven),
                (dir.join("b.dcm"), Altered),
                (dir.join("c.dcm"), Unknown),
                (dir.join("d.txt"), Unreadable),
            ]
        );
        assert_eq!((tally.done, tally.failed), (1, 4));
        assert!(!tally.all_done());
        let tally = v.check_inputs(&[dir.join("a.dcm")], &key(), &budget(), &mut |_, _| {});
        assert!(tally.all_done());
    }

    #[test]
    fn signer_keys_are_made_private_once_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("signer.key");
        let signer = create_signer(&file, "hospital.example/a b").unwrap();
        assert_eq!(signer.verifier().name(), "hospital.example/a_b");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let bytes = std::fs::read(&file).unwrap();
        let again = parse_signer(&bytes, &file).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        // An existing key is never replaced.
        let e = create_signer(&file, "hospital.example/other").unwrap_err();
        assert!(matches!(e, SignerKeyError::Secret(_)), "{e:?}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
        // No key name can be made of an empty origin; nothing is written then.
        let empty = tmp.path().join("empty.key");
        assert!(matches!(
            create_signer(&empty, ""),
            Err(SignerKeyError::Note(_))
        ));
        assert!(!empty.exists());
        // Bytes that are not text, or text that is not a key.
        let e = parse_signer(b"\xff\xfe", &file).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("checkpoint signer key {} is not text", file.display())
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(matches!(
            parse_signer(b"garbage", &file),
            Err(SignerKeyError::Note(_))
        ));
    }
}
