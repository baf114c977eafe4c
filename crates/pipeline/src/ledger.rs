//! Opening a transparency ledger for verification: its latest checkpoint checked against a
//! verifier key (one held elsewhere, or the ledger's own `verifier.pub`) and, when given, a
//! checkpoint trusted from an earlier verification, which it must extend. What the caller
//! should be told on the way (a torn last line, a verifier taken from the ledger itself)
//! comes as [`Notice`]s, in order; the summary is the [`Verified`] ledger's `Display`.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_deid::Key;
use radveil_ledger::note::{Checkpoint, Verifier};
use radveil_ledger::{Ledger, LedgerError};
use radveil_part10::MemoryBudget;

use crate::observe::{check_image, ImageCheck};

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
        .prove_consistency(old, cp.size)
        .ok_or(ProveError::NoTree { old, size: cp.size })?;
    Ok(serde_json::json!({
        "size1": old,
        "size2": cp.size,
        "root1": ledger.root_at(old).map(|h| hex(&h)),
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

/// `e` and each of its sources, joined by ": ".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
        &crate::pool::Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use radveil_ledger::note::Signer;

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
}
