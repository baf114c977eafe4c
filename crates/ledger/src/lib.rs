//! radveil's transparency ledger: an append-only RFC 9162 Merkle log of image ingest records,
//! kept in a directory, with signed checkpoints (C2SP tlog-checkpoint in a signed note,
//! Ed25519) and inclusion and consistency proofs.
//!
//! Layout of a ledger directory:
//! - `origin`: the log's origin line (its unique name);
//! - `entries.jsonl`: one record per line, in order; the leaf data of entry *i* is line *i*
//!   without its newline;
//! - `checkpoint`: the latest signed checkpoint; `checkpoints/<size>`: every one issued;
//! - `verifier.pub`: the checkpoint verifier key (public).
//!
//! Records hold no PHI: instance identity is a keyed hash, images are identified by hashes.
//! Appends take an exclusive lock on the directory (`.lock`), held from reading the entries,
//! through deciding what to add ([`Ledger::append_with`]), to the fsync of the new lines;
//! readers take a shared lock, so they never see half an append. An entry is never
//! rewritten: a deletion is a tombstone record.
//!
//! A torn last line (a crash in the middle of an append) is reported ([`Ledger::torn_tail`]);
//! an append refuses to write after it unless asked to repair it ([`TornRepair`]).

#![forbid(unsafe_code)]

pub mod merkle;
pub mod note;
pub mod verdict;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use merkle::Hash;
use note::{Checkpoint, NoteError, Signer, Verifier};
use serde::{Deserialize, Serialize};
pub use verdict::{
    admit, Admission, EquipmentAdvisory, Intent, Observation, Status, Verdict, Verification,
};

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The directory is not a ledger, or is one already.
    #[error("{0}")]
    Layout(String),
    /// A record line that does not parse.
    #[error("entry {index}: {what}")]
    Record {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        what: String,
    },
    /// Checkpoint or key trouble.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// `entries.jsonl` ends with an incomplete line (an append that crashed); appending
    /// after it is refused until it is repaired ([`TornRepair::Truncate`]).
    #[error("{path}: ends with a torn line ({} bytes at offset {}) after entry {}: an append crashed; \
             nothing is appended after it until it is repaired", .torn.len, .torn.offset, .torn.entries)]
    TornTail {
        /// The entries file.
        path: PathBuf,
        /// Where the torn line is.
        torn: TornTail,
    },
    /// The latest checkpoint is older than one the caller trusts.
    #[error("the trusted checkpoint (size {trusted}) is newer than the ledger's latest (size {latest}): checkpoints were rolled back")]
    RolledBack {
        /// The trusted checkpoint's size.
        trusted: u64,
        /// The latest checkpoint's size.
        latest: u64,
    },
    /// The ledger contradicts a checkpoint: an entry was rewritten, removed or reordered.
    #[error("ledger inconsistent with the checkpoint of size {size}: {what}")]
    Inconsistent {
        /// The checkpoint's tree size.
        size: u64,
        /// What differs.
        what: String,
    },
}

type Result<T> = std::result::Result<T, LedgerError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// An image was ingested.
    Ingest,
    /// An image was deleted; the earlier ingest stays in the log.
    Tombstone,
}

/// One ledger record. Hashes are lowercase hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Ingest or tombstone.
    pub kind: RecordKind,
    /// Keyed hash (HMAC-SHA-256 under the site key) of the SOP Instance UID: lets the site
    /// find an image's entries without the log revealing UIDs.
    pub instance: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Transfer-syntax-independent binding hash (pixels, geometry, identity), when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// SHA-256 fingerprint of the signer's certificate, when the image was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Keyed hash of the Series Instance UID, to compare an image with its series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Keyed hash of the equipment (manufacturer, model, serial number, station name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equipment: Option<String>,
    /// Outcome of signature verification at ingest.
    pub verification: Verification,
    /// Time of the record, RFC 3339 UTC.
    pub time: String,
}

/// Hex encoding of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current time as RFC 3339 UTC, to the second (the time of a record).
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    rfc3339_at(secs)
}

/// A Unix time as RFC 3339 UTC, to the second.
pub fn rfc3339_at(secs: i64) -> String {
    let t = radveil_standard::civil::DateTime::from_unix_seconds(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Parses a lowercase or uppercase hex SHA-256 hash.
pub fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let v: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect();
    v?.try_into().ok()
}

/// An incomplete last line of `entries.jsonl`: bytes after the last newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of the torn line (the length of the complete entries).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// How many complete entries come before it.
    pub entries: u64,
}

/// What an append does with a torn last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornRepair {
    /// Refuse to append ([`LedgerError::TornTail`]); the file is left as it is.
    Refuse,
    /// Under the lock, copy the torn bytes to `entries.jsonl.torn-<offset>` (kept as
    /// evidence), cut them off, then append.
    Truncate,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The indexes of the new entries.
    pub range: std::ops::Range<u64>,
    /// The torn line cut off first, with where its bytes were kept.
    pub repaired: Option<(TornTail, PathBuf)>,
}

/// An open log of records of type `R` (one JSON line each): its entries' leaf hashes and
/// records in memory. The same files, locking, torn-line handling, checkpoints and proofs
/// serve any record type: [`Ledger`] is the log of image records, and other logs (the
/// gateway's audit trail) keep their own records in a `Log` of their own type.
#[derive(Debug)]
pub struct Log<R> {
    dir: PathBuf,
    origin: String,
    leaves: Vec<Hash>,
    records: Vec<R>,
    torn: Option<TornTail>,
}

/// The transparency ledger: the log of image [`Record`]s.
pub type Ledger = Log<Record>;

/// An inclusion proof of one entry against a tree size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// The entry's leaf hash (hex).
    pub leaf: String,
    /// The audit path (hex hashes).
    pub proof: Vec<String>,
    /// The tree's root (hex).
    pub root: String,
}

const ENTRIES: &str = "entries.jsonl";
/// The longest entry line read (with its newline): records are a few hundred bytes, so a
/// longer line is not one, and is never buffered whole.
const MAX_LINE: u64 = 64 * 1024;
const ORIGIN: &str = "origin";
const CHECKPOINT: &str = "checkpoint";
const VERIFIER: &str = "verifier.pub";
const LOCK: &str = ".lock";

impl<R: Serialize + serde::de::DeserializeOwned + Clone> Log<R> {
    /// Creates a new ledger in `dir` (which must not hold one) with this origin and
    /// checkpoint signer; writes the empty tree's checkpoint.
    pub fn init(dir: &Path, origin: &str, signer: &Signer) -> Result<Self> {
        if origin.is_empty() || origin.contains('\n') {
            return Err(LedgerError::Layout(
                "the origin must be one non-empty line".into(),
            ));
        }
        std::fs::create_dir_all(dir.join("checkpoints")).map_err(io(dir))?;
        let origin_path = dir.join(ORIGIN);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&origin_path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    LedgerError::Layout(format!("{} already holds a ledger", dir.display()))
                }
                _ => LedgerError::Io {
                    path: origin_path.clone(),
                    source: e,
                },
            })?;
        writeln!(f, "{origin}").map_err(io(&origin_path))?;
        f.sync_all().map_err(io(&origin_path))?;
        write_new(&dir.join(ENTRIES), b"")?;
        // The lock file readers take a shared lock on (kept if it is there already).
        let lock_path = dir.join(LOCK);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        std::fs::write(dir.join(VERIFIER), format!("{}\n", signer.verifier()))
            .map_err(io(&dir.join(VERIFIER)))?;
        let mut ledger = Log {
            dir: dir.to_path_buf(),
            origin: origin.to_string(),
            leaves: Vec::new(),
            records: Vec::new(),
            torn: None,
        };
        ledger.checkpoint(signer)?;
        Ok(ledger)
    }

    /// Opens a ledger, reading every entry under a shared lock (an append in progress is
    /// waited for). A torn last line (a crash during an append that never returned) is not
    /// an entry: it is reported by [`Ledger::torn_tail`].
    pub fn open(dir: &Path) -> Result<Self> {
        let lock_path = dir.join(LOCK);
        // A reader may lack write access: lock when the lock file can be opened at all.
        let lock = open_regular(&lock_path).ok();
        if let Some(lock) = &lock {
            lock.lock_shared().map_err(io(&lock_path))?;
        }
        Self::read(dir)
    }

    /// Reads the ledger; the caller holds a lock.
    fn read(dir: &Path) -> Result<Self> {
        let origin_path = dir.join(ORIGIN);
        let origin = read_small(&origin_path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LedgerError::Layout(format!(
                    "{} is not a ledger (no origin file; create one with `radveil ledger init`)",
                    dir.display()
                )),
                _ => LedgerError::Io {
                    path: origin_path.clone(),
                    source: e,
                },
            })?
            .trim_end_matches('\n')
            .to_string();
        let path = dir.join(ENTRIES);
        let f = open_regular(&path).map_err(io(&path))?;
        let mut reader = BufReader::new(f);
        let mut leaves = Vec::new();
        let mut records = Vec::new();
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut torn = None;
        loop {
            line.clear();
            let n = std::io::Read::take(&mut reader, MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(io(&path))?;
            if n == 0 {
                break;
            }
            if n as u64 > MAX_LINE {
                return Err(LedgerError::Record {
                    index: leaves.len() as u64,
                    what: format!("longer than {MAX_LINE} bytes: not a ledger record"),
                });
            }
            if line.last() != Some(&b'\n') {
                torn = Some(TornTail {
                    offset,
                    len: n as u64,
                    entries: leaves.len() as u64,
                });
                break;
            }
            offset += n as u64;
            let data = &line[..line.len() - 1];
            let index = leaves.len() as u64;
            let record: R = serde_json::from_slice(data).map_err(|e| LedgerError::Record {
                index,
                what: e.to_string(),
            })?;
            leaves.push(merkle::leaf_hash(data));
            records.push(record);
        }
        Ok(Log {
            dir: dir.to_path_buf(),
            origin,
            leaves,
            records,
            torn,
        })
    }

    /// The torn last line of `entries.jsonl`, if there is one (a crash during an append).
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.torn
    }

    /// The entries file.
    pub fn entries_path(&self) -> PathBuf {
        self.dir.join(ENTRIES)
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The records, in log order.
    pub fn records(&self) -> &[R] {
        &self.records
    }

    /// The root hash of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size <= self.size()).then(|| merkle::root(&self.leaves[..size as usize]))
    }

    /// Appends records durably (see [`Ledger::append_with`]); a torn last line is refused.
    pub fn append(&mut self, new: &[R]) -> Result<std::ops::Range<u64>> {
        Ok(self
            .append_with(TornRepair::Refuse, |_| new.to_vec())?
            .range)
    }

    /// Appends the records `decide` returns, in one critical section: under an exclusive
    /// lock of the ledger, the entries are read again (another process may have appended
    /// since this ledger was opened), `decide` sees that fresh ledger and chooses what to
    /// add (e.g. with [`admit`]), and the lines are written and fsynced before the lock is
    /// released. Two appends never both decide on the same old state.
    pub fn append_with(
        &mut self,
        repair: TornRepair,
        decide: impl FnOnce(&Self) -> Vec<R>,
    ) -> Result<Appended> {
        let lock = self.lock_exclusive()?;
        *self = Self::read(&self.dir)?;
        let path = self.dir.join(ENTRIES);
        let mut repaired = None;
        if let Some(torn) = self.torn {
            if repair == TornRepair::Refuse {
                return Err(LedgerError::TornTail { path, torn });
            }
            repaired = Some((torn, self.cut_torn_tail(torn)?));
            self.torn = None;
        }
        let new = decide(self);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let start = self.size();
        let mut buf = Vec::new();
        for r in &new {
            let line = serde_json::to_vec(r).map_err(|e| LedgerError::Record {
                index: self.size(),
                what: e.to_string(),
            })?;
            self.leaves.push(merkle::leaf_hash(&line));
            self.records.push(r.clone());
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        f.write_all(&buf).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        drop(lock);
        Ok(Appended {
            range: start..self.size(),
            repaired,
        })
    }

    /// Keeps the bytes of a torn last line in `entries.jsonl.torn-<offset>` and cuts them
    /// off the entries file (the caller holds the exclusive lock).
    fn cut_torn_tail(&self, torn: TornTail) -> Result<PathBuf> {
        let path = self.dir.join(ENTRIES);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        f.seek(SeekFrom::Start(torn.offset)).map_err(io(&path))?;
        let mut tail = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut tail).map_err(io(&path))?;
        let kept = self.dir.join(format!("{ENTRIES}.torn-{}", torn.offset));
        write_new(&kept, &tail)?;
        f.set_len(torn.offset).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        Ok(kept)
    }

    /// Signs and writes a checkpoint of the whole ledger, re-read under the exclusive lock
    /// (entries other processes appended are covered), as `checkpoint` and
    /// `checkpoints/<size>`; returns the signed note.
    pub fn checkpoint(&mut self, signer: &Signer) -> Result<String> {
        // Under the exclusive lock, on the entries as they are now: two checkpoints at once
        // never interleave their files, and the latest never covers fewer entries than one
        // written before it.
        let lock = self.lock_exclusive()?;
        *self = Self::read(&self.dir)?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: merkle::root(&self.leaves),
        };
        let note = signer.sign(&cp.text())?;
        let numbered = self.dir.join("checkpoints").join(cp.size.to_string());
        if !numbered.exists() {
            write_new(&numbered, note.as_bytes())?;
        }
        replace_atomically(&self.dir.join(CHECKPOINT), note.as_bytes())?;
        drop(lock);
        Ok(note)
    }

    /// Takes the exclusive lock of the ledger directory (released when the file is dropped).
    fn lock_exclusive(&self) -> Result<File> {
        let lock_path = self.dir.join(LOCK);
        // Opening a FIFO planted as the lock file for writing would wait for a reader.
        if let Ok(meta) = std::fs::metadata(&lock_path) {
            if !meta.is_file() {
                return Err(LedgerError::Io {
                    path: lock_path,
                    source: not_regular(),
                });
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        Ok(lock)
    }

    /// The latest checkpoint note as written.
    pub fn latest_checkpoint(&self) -> Result<String> {
        let p = self.dir.join(CHECKPOINT);
        read_small(&p).map_err(io(&p))
    }

    /// The verifier key stored beside the ledger (convenient, but a verifier should hold its
    /// own copy: whoever can rewrite the ledger can rewrite this file too).
    pub fn stored_verifier(&self) -> Result<Verifier> {
        let p = self.dir.join(VERIFIER);
        Ok(Verifier::parse(&read_small(&p).map_err(io(&p))?)?)
    }
}

impl Log<Record> {
    /// Index of the last entry whose record matches `instance` (keyed UID hash).
    pub fn find_instance(&self, instance: &str) -> Option<(u64, &Record)> {
        self.records
            .iter()
            .enumerate()
            .rev()
            .find(|(_, r)| r.instance == instance)
            .map(|(i, r)| (i as u64, r))
    }

    /// The equipment hashes recorded for a series (keyed series hash), in log order.
    pub fn series_equipment<'s>(&'s self, series: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.records
            .iter()
            .filter(move |r| r.kind == RecordKind::Ingest && r.series.as_deref() == Some(series))
            .filter_map(|r| r.equipment.as_deref())
    }

    /// The signer fingerprints recorded for images from one piece of equipment (keyed
    /// equipment hash), in log order: which keys that device's images were signed with.
    pub fn equipment_signers<'s>(
        &'s self,
        equipment: &'s str,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.records
            .iter()
            .filter(move |r| {
                r.kind == RecordKind::Ingest && r.equipment.as_deref() == Some(equipment)
            })
            .filter_map(|r| r.signer.as_deref())
    }
}

impl<R: Serialize + serde::de::DeserializeOwned + Clone> Log<R> {
    /// Inclusion proof of entry `index` in the tree of the first `size` entries.
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Option<InclusionProof> {
        if size > self.size() {
            return None;
        }
        let leaves = &self.leaves[..size as usize];
        let proof = merkle::inclusion_proof(index as usize, leaves)?;
        Some(InclusionProof {
            index,
            size,
            leaf: hex(&leaves[index as usize]),
            proof: proof.iter().map(|h| hex(h)).collect(),
            root: hex(&merkle::root(leaves)),
        })
    }

    /// Consistency proof from the tree of `old` entries to the tree of `new` entries.
    pub fn prove_consistency(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if new > self.size() {
            return None;
        }
        merkle::consistency_proof(old as usize, &self.leaves[..new as usize])
    }

    /// Verifies the ledger itself: its latest checkpoint (signature, origin, consistency
    /// with the entries) and, given one, a checkpoint the caller trusts, which the latest
    /// must not be older than (else checkpoints were rolled back). Returns the latest.
    pub fn verify_latest(&self, verifier: &Verifier, trusted: Option<&str>) -> Result<Checkpoint> {
        let latest = self.verify_against(&self.latest_checkpoint()?, verifier)?;
        if let Some(note) = trusted {
            let t = self.verify_against(note, verifier)?;
            if t.size > latest.size {
                return Err(LedgerError::RolledBack {
                    trusted: t.size,
                    latest: latest.size,
                });
            }
        }
        Ok(latest)
    }

    /// Checks the ledger against a checkpoint the caller trusts (held outside the ledger):
    /// its signature, origin, and that the ledger's first `size` entries still hash to its
    /// root and the current tree extends it (consistency proof generated and verified).
    /// Returns the checked checkpoint.
    pub fn verify_against(&self, note: &str, verifier: &Verifier) -> Result<Checkpoint> {
        let cp = Checkpoint::open(note, verifier)?;
        if cp.origin != self.origin {
            return Err(LedgerError::Inconsistent {
                size: cp.size,
                what: format!("checkpoint is for another log ({:?})", cp.origin),
            });
        }
        if cp.size > self.size() {
            return Err(LedgerError::Inconsistent {
                size: cp.size,
                what: format!(
                    "the ledger has only {} entries: entries were removed",
                    self.size()
                ),
            });
        }
        if cp.size == 0 {
            // Every tree extends the empty one; only the root can be wrong.
            return if cp.root == merkle::empty_root() {
                Ok(cp)
            } else {
                Err(LedgerError::Inconsistent {
                    size: 0,
                    what: "not the empty tree's root".into(),
                })
            };
        }
        let proof = self
            .prove_consistency(cp.size, self.size())
            .unwrap_or_default();
        let current = merkle::root(&self.leaves);
        merkle::verify_consistency(cp.size, self.size(), &proof, &cp.root, &current).map_err(
            |_| LedgerError::Inconsistent {
                size: cp.size,
                what: "entries before it were rewritten or reordered".into(),
            },
        )?;
        Ok(cp)
    }
}

/// The largest origin, checkpoint or verifier file read: each is a few lines.
const MAX_SMALL: u64 = 64 * 1024;

fn not_regular() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file")
}

/// Opens a file of the ledger for reading, only when it is a regular file: a FIFO or device
/// planted in a ledger directory is refused before it is opened, never waited on.
fn open_regular(path: &Path) -> std::io::Result<File> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    File::open(path)
}

/// Reads a small text file of the ledger (origin, checkpoint, verifier key): at most
/// [`MAX_SMALL`] bytes, so an endless file is refused after a bounded read.
fn read_small(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    open_regular(path)?
        .take(MAX_SMALL + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SMALL {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {MAX_SMALL} bytes"),
        ));
    }
    Ok(text)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32) -> Record {
        Record {
            kind: RecordKind::Ingest,
            instance: format!("{i:064x}"),
            sha256: format!("{:064x}", i + 1000),
            binding: None,
            signer: None,
            series: None,
            equipment: None,
            verification: Verification::Unsigned,
            time: "2026-11-23T12:00:00Z".into(),
        }
    }

    #[test]
    fn append_checkpoint_prove_and_detect_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("radveil.test/ledger", &[3; 32]).unwrap();
        let mut l = Ledger::init(dir.path(), "radveil.test/ledger", &signer).unwrap();
        l.append(&(0..5).map(record).collect::<Vec<_>>()).unwrap();
        let trusted = l.checkpoint(&signer).unwrap();
        l.append(&(5..9).map(record).collect::<Vec<_>>()).unwrap();
        l.checkpoint(&signer).unwrap();

        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.size(), 9);
        let v = signer.verifier();
        assert_eq!(l.verify_against(&trusted, &v).unwrap().size, 5);
        let p = l.prove_inclusion(3, 9).unwrap();
        let unhex = |s: &str| unhex(s).unwrap();
        let proof: Vec<Hash> = p.proof.iter().map(|h| unhex(h)).collect();
        merkle::verify_inclusion(3, 9, &unhex(&p.leaf), &proof, &unhex(&p.root)).unwrap();

        // Rewrite entry 2 (as an attacker with write access would): the trusted checkpoint
        // no longer matches.
        let path = dir.path().join(ENTRIES);
        let text = std::fs::read_to_string(&path).unwrap();
        let forged = text.replacen(&format!("{:064x}", 1002), &format!("{:064x}", 6666), 1);
        std::fs::write(&path, forged).unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert!(matches!(
            l.verify_against(&trusted, &v),
            Err(LedgerError::Inconsistent { .. })
        ));

        // Removing entries is caught too.
        let lines: Vec<&str> = text.lines().take(3).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert!(matches!(
            l.verify_against(&trusted, &v),
            Err(LedgerError::Inconsistent { .. })
        ));
    }

    #[test]
    fn a_torn_append_is_reported_refused_then_cut_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut l = Ledger::init(dir.path(), "o", &signer).unwrap();
        l.append(&[record(1)]).unwrap();
        let path = dir.path().join(ENTRIES);
        let committed = std::fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"kind\":\"ing").unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.size(), 1);
        let torn = TornTail {
            offset: committed.len() as u64,
            len: 12,
            entries: 1,
        };
        assert_eq!(l.torn_tail(), Some(torn));
        // Refused, and nothing changes.
        assert!(matches!(
            l.append(&[record(2)]),
            Err(LedgerError::TornTail { torn: t, .. }) if t == torn
        ));
        assert_eq!(std::fs::read(&path).unwrap().len(), committed.len() + 12);
        // Repaired on request: the torn bytes are kept aside, then the record is appended.
        let done = l
            .append_with(TornRepair::Truncate, |_| vec![record(2)])
            .unwrap();
        let (t, kept) = done.repaired.unwrap();
        assert_eq!((t, done.range), (torn, 1..2));
        assert_eq!(std::fs::read(kept).unwrap(), b"{\"kind\":\"ing");
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!((l.size(), l.torn_tail()), (2, None));
    }

    #[test]
    fn concurrent_appends_decide_on_what_the_others_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        Ledger::init(dir.path(), "o", &signer).unwrap();
        // Every thread adds record 1 unless it is already there: exactly one does.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut l = Ledger::open(dir.path()).unwrap();
                    l.append_with(TornRepair::Refuse, |fresh| {
                        let r = record(1);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        if fresh.find_instance(&r.instance).is_some() {
                            vec![]
                        } else {
                            vec![r]
                        }
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(Ledger::open(dir.path()).unwrap().size(), 1);
    }

    #[test]
    fn latest_checkpoint_must_not_be_older_than_a_trusted_one() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[6; 32]).unwrap();
        let v = signer.verifier();
        let mut l = Ledger::init(dir.path(), "o", &signer).unwrap();
        l.append(&[record(1)]).unwrap();
        let first = l.checkpoint(&signer).unwrap();
        l.append(&[record(2)]).unwrap();
        let second = l.checkpoint(&signer).unwrap();
        assert_eq!(l.verify_latest(&v, Some(&first)).unwrap().size, 2);
        // Roll the latest checkpoint back to the first.
        std::fs::write(dir.path().join(CHECKPOINT), &first).unwrap();
        assert_eq!(l.verify_latest(&v, None).unwrap().size, 1);
        assert!(matches!(
            l.verify_latest(&v, Some(&second)),
            Err(LedgerError::RolledBack {
                trusted: 2,
                latest: 1
            })
        ));
        // A checkpoint signed by another key verifies nothing.
        let other = Signer::from_seed("o", &[7; 32]).unwrap();
        assert!(l.verify_latest(&other.verifier(), None).is_err());
    }

    #[test]
    fn concurrent_checkpoints_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        Ledger::init(dir.path(), "o", &signer).unwrap();
        std::thread::scope(|s| {
            for t in 0..6u32 {
                let (dir, signer) = (dir.path(), &signer);
                s.spawn(move || {
                    for i in 0..15 {
                        let mut l = Ledger::open(dir).unwrap();
                        l.append(&[record(t * 100 + i)]).unwrap();
                        std::thread::yield_now();
                        l.checkpoint(signer).unwrap();
                    }
                });
            }
        });
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.size(), 90);
        // The latest checkpoint covers every entry, and verifies.
        let v = signer.verifier();
        assert_eq!(l.verify_latest(&v, None).unwrap().size, 90);
        for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap() {
            let note = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            l.verify_against(&note, &v).unwrap();
        }
    }

    #[test]
    fn an_overlong_entry_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut l = Ledger::init(dir.path(), "o", &signer).unwrap();
        l.append(&[record(1)]).unwrap();
        let path = dir.path().join(ENTRIES);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // Valid JSON (a record after white space), but no record line is this long.
        f.write_all(&vec![b' '; 200_000]).unwrap();
        f.write_all(&serde_json::to_vec(&record(2)).unwrap())
            .unwrap();
        f.write_all(b"\n").unwrap();
        assert!(matches!(
            Ledger::open(dir.path()),
            Err(LedgerError::Record { index: 1, .. })
        ));
    }

    #[test]
    fn a_fifo_or_endless_file_in_the_ledger_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        Ledger::init(dir.path(), "o", &signer).unwrap();
        // The entries as a FIFO (no writer would ever come): refused at once.
        let entries = dir.path().join(ENTRIES);
        std::fs::remove_file(&entries).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&entries)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(Ledger::open(&path).is_err());
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a ledger whose entries are a FIFO hung");
        assert!(refused);
        // The latest checkpoint as an endless file: refused after a bounded read.
        let cp = dir.path().join(CHECKPOINT);
        std::fs::remove_file(&cp).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &cp).unwrap();
        std::fs::remove_file(&entries).unwrap();
        std::fs::write(&entries, b"").unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert!(l.latest_checkpoint().is_err());
    }

    #[test]
    fn formats_rfc3339_times() {
        assert_eq!(rfc3339_at(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_at(1_795_437_486), "2026-11-23T12:38:06Z");
        assert_eq!(rfc3339_at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_at(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_at(-62_167_219_200), "0000-01-01T00:00:00Z");
        // Every i64 has a time, even far outside RFC 3339's years.
        assert_eq!(rfc3339_at(i64::MAX), "292277026596-12-04T15:30:07Z");
        assert_eq!(rfc3339_at(i64::MIN), "-292277022657-01-27T08:29:52Z");
    }

    #[test]
    fn a_log_of_another_record_type_has_the_same_files_checkpoints_and_checks() {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Note {
            n: u32,
            text: String,
        }
        let note = |n: u32| Note {
            n,
            text: format!("note {n}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[8; 32]).unwrap();
        let v = signer.verifier();
        let mut log = Log::<Note>::init(dir.path(), "o", &signer).unwrap();
        // The decision sees the fresh log, as the ledger's does.
        let done = log
            .append_with(TornRepair::Refuse, |fresh| {
                (0..3).map(|i| note(fresh.size() as u32 + i)).collect()
            })
            .unwrap();
        assert_eq!(done.range, 0..3);
        let trusted = log.checkpoint(&signer).unwrap();
        log.append(&[note(3)]).unwrap();
        log.checkpoint(&signer).unwrap();
        let log = Log::<Note>::open(dir.path()).unwrap();
        assert_eq!(log.records()[3], note(3));
        assert_eq!(log.verify_latest(&v, Some(&trusted)).unwrap().size, 4);
        // A record of another type is not one of this log's records.
        assert!(matches!(
            Ledger::open(dir.path()),
            Err(LedgerError::Record { index: 0, .. })
        ));
        // Rewriting a line breaks the checkpoint, as in the ledger.
        let path = dir.path().join(ENTRIES);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("note 1", "note 9", 1)).unwrap();
        let log = Log::<Note>::open(dir.path()).unwrap();
        assert!(matches!(
            log.verify_against(&trusted, &v),
            Err(LedgerError::Inconsistent { .. })
        ));
    }

    #[test]
    fn init_refuses_an_existing_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        Ledger::init(dir.path(), "o", &signer).unwrap();
        assert!(matches!(
            Ledger::init(dir.path(), "o", &signer),
            Err(LedgerError::Layout(_))
        ));
    }
}
