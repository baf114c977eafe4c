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
//! An open log keeps where its last read of `entries.jsonl` stopped ([`Log::refresh`]): an
//! append reads only the lines added since, after checking that the file is still the same
//! one (device and inode) and still holds, where it ended, the last line read (its leaf
//! hash); a file that shrank, was replaced or differs there is read again whole. So an
//! append costs the same whatever the log's size.
//!
//! **Memory does not grow with the log.** An open log keeps no record and no leaf hash:
//! only the frontier of its tree ([`merkle::Frontier`], the roots of its complete subtrees,
//! one per set bit of the size), the last line's leaf hash and a few roots of smaller trees
//! (the checkpoints it signed, the latest one's when it opened): what appending and signing
//! a checkpoint need ([`Log::held`] counts it). A checkpoint signs the entries this handle
//! read and wrote, brought up to date the same way, in O(log n) hashes; [`Log::verify_latest`]
//! and each [`Log::checkpoint_extending`] compare the latest checkpoint's root with one the
//! handle knows (in the usual case) or else with one computed by a pass over the file.
//! Records, the root of another size and the proofs are read from the file when asked for
//! ([`Log::entries`], [`Log::entries_since`], [`Log::root_at`], [`Log::prove_inclusion`],
//! [`Log::prove_consistency`]): streamed, O(n) reads and O(log n) memory, each line checked
//! against the handle's tree, so what is handed on is what its checkpoints sign. The whole
//! file is read and hashed when a log is opened. A [`Snapshot`] of an open log checks the
//! file whole against what it read and wrote, away from the handle and without the lock (an
//! edit behind an open log, which no checkpoint endorses, found while it runs).
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

/// An open log of records of type `R` (one JSON line each). It keeps no record and no leaf
/// hash in memory: only the frontier of its Merkle tree (the roots of the complete
/// subtrees, at most one hash per bit of the size), the last line's leaf hash (to re-check
/// it before reading past it) and a few roots of smaller trees it signed or read through,
/// so what it holds does not grow with the log ([`Log::held`]). Records are read from the
/// file when asked for ([`Log::entries`], streamed and checked against the tree). The same
/// files, locking, torn-line handling, checkpoints and proofs serve any record type:
/// [`Ledger`] is the log of image records, and other logs (the gateway's audit trail) keep
/// their own records in a `Log` of their own type.
#[derive(Debug)]
pub struct Log<R> {
    dir: PathBuf,
    origin: String,
    /// The frontier of the leaf hashes this handle computed from the lines it read or
    /// wrote: what its checkpoints sign.
    frontier: merkle::Frontier,
    /// The leaf hash of the last line read or written (a refresh re-checks that line).
    last_leaf: Option<Hash>,
    /// Roots of smaller trees of this handle's leaves, known without reading the file
    /// again (sizes it signed, the latest checkpoint's size when it read past it): a
    /// checkpoint's check against the latest costs nothing more in the usual case. At most
    /// [`KEPT_ROOTS`], newest last.
    roots: Vec<(u64, Hash)>,
    torn: Option<TornTail>,
    mark: Mark,
    stats: ReadStats,
    /// Set when a read found that entries this handle had read were rewritten or removed:
    /// how many it had read then.
    diverged: Option<u64>,
    records: std::marker::PhantomData<fn() -> R>,
}

/// How many roots of smaller trees an open log keeps ([`Log`]'s `roots`).
const KEPT_ROOTS: usize = 8;

/// Where the last read of `entries.jsonl` stopped: the file read (device and inode), the
/// end of its last complete line and where that line starts (its leaf hash is the log's
/// `last_leaf`). A refresh re-checks that line, then reads only past `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    file: (u64, u64),
    end: u64,
    last_start: u64,
}

/// What the reads of `entries.jsonl` cost (kept to check that an append's stays flat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReadStats {
    /// Whole-file reads since the log was opened (the open itself counts).
    full_reads: u64,
    /// Bytes the latest read took from `entries.jsonl` (re-check included).
    last_bytes: u64,
}

/// The identity of an open file: device and inode.
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Without device and inode numbers, only the last line's re-check tells a replaced file.
#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Lines read past a mark: the frontier with their leaf hashes added, the roots captured
/// on the way, where they end, and a torn line. Nothing of the records is kept.
struct Lines {
    frontier: merkle::Frontier,
    last_leaf: Option<Hash>,
    captured: Vec<(u64, Hash)>,
    end: u64,
    last_start: u64,
    torn: Option<TornTail>,
    bytes: u64,
}

/// The transparency ledger: the log of image [`Record`]s.
pub type Ledger = Log<Record>;

/// Where an entry is: its index, and where its line starts in `entries.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct At {
    /// The entry's index.
    pub index: u64,
    /// The byte offset of its line.
    pub offset: u64,
}

/// A place in an open log (after its first [`Position::index`] entries), to read the
/// entries added since from ([`Log::entries_since`]): a caller that folds the records into
/// tables of its own reads each line once, without the log keeping any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    at: At,
    /// The log's whole-file reads when the position was taken: a file read again whole
    /// (cut, replaced, changed where it had been read) invalidates it.
    generation: u64,
    /// The frontier of the entries before it, so that what is read past it is checked
    /// against the handle's tree.
    frontier: merkle::Frontier,
}

impl Default for Position {
    /// The start of a log.
    fn default() -> Position {
        Position::start()
    }
}

impl Position {
    /// The start of a log.
    pub fn start() -> Position {
        Position {
            at: At {
                index: 0,
                offset: 0,
            },
            generation: 0,
            frontier: merkle::Frontier::new(),
        }
    }

    /// How many entries come before it.
    pub fn index(&self) -> u64 {
        self.at.index
    }
}

/// The lines of `entries.jsonl` an open log read, read again in order from a position,
/// each hashed into a frontier which must end at the handle's tree: what is handed on is
/// what the handle's checkpoints sign, or an error.
struct Replay {
    reader: BufReader<std::io::Take<File>>,
    path: PathBuf,
    line: Vec<u8>,
    at: At,
    frontier: merkle::Frontier,
    /// The handle's size and root.
    size: u64,
    head: Hash,
}

impl Replay {
    fn differs(&self, what: &str) -> LedgerError {
        LedgerError::Inconsistent {
            size: self.size,
            what: format!("{}: {what}", self.path.display()),
        }
    }

    /// The next line (without its newline, in [`Replay::line`]) and where it is; `None` at
    /// the end, once the lines read are found to hash to the handle's tree.
    fn next(&mut self) -> Result<Option<At>> {
        self.line.clear();
        let n = std::io::Read::take(&mut self.reader, MAX_LINE + 1)
            .read_until(b'\n', &mut self.line)
            .map_err(io(&self.path))?;
        if n == 0 {
            if self.frontier.len() < self.size {
                return Err(self.differs("entries this log had read were removed"));
            }
            if self.frontier.root() != self.head {
                return Err(self.differs("entries this log had read were rewritten or reordered"));
            }
            return Ok(None);
        }
        if n as u64 > MAX_LINE || self.line.pop() != Some(b'\n') {
            return Err(self.differs("an entry this log had read is cut or too long"));
        }
        self.frontier.push(merkle::leaf_hash(&self.line));
        if self.frontier.len() > self.size {
            return Err(self.differs("more entries than this log had read: lines were split"));
        }
        let at = self.at;
        self.at = At {
            index: at.index + 1,
            offset: at.offset + n as u64,
        };
        Ok(Some(at))
    }

    fn line(&self) -> &[u8] {
        &self.line
    }
}

/// The records of an open log, read from its file in order ([`Log::entries`],
/// [`Log::entries_since`]), each with where it is. The lines are checked against the
/// handle's tree as they are read: when the file no longer holds what the handle read (an
/// entry edited, removed or moved behind it), the last item is
/// [`LedgerError::Inconsistent`]; a line that does not parse is [`LedgerError::Record`].
/// Nothing comes after an error.
pub struct Entries<R> {
    replay: std::result::Result<Replay, Option<LedgerError>>,
    restarted: bool,
    records: std::marker::PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Entries<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("restarted", &self.restarted)
            .finish_non_exhaustive()
    }
}

impl<R> Entries<R> {
    /// Whether the position read from was one the log no longer extends (its file was read
    /// again whole since): the entries then start from the first, and whatever the caller
    /// folded in before must be forgotten.
    pub fn restarted(&self) -> bool {
        self.restarted
    }
}

impl<R: serde::de::DeserializeOwned> Iterator for Entries<R> {
    type Item = Result<(At, R)>;

    fn next(&mut self) -> Option<Self::Item> {
        let replay = match &mut self.replay {
            Ok(r) => r,
            Err(e) => return e.take().map(Err),
        };
        let result = match replay.next() {
            Ok(Some(at)) => serde_json::from_slice(replay.line())
                .map(|r| (at, r))
                .map_err(|e| LedgerError::Record {
                    index: at.index,
                    what: e.to_string(),
                }),
            Ok(None) => {
                self.replay = Err(None);
                return None;
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Nothing comes after an error.
            self.replay = Err(None);
        }
        Some(result)
    }
}

/// What an open log has read and written, to check the file against later, away from the
/// handle and without the log's lock ([`Snapshot::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    path: PathBuf,
    end: u64,
    size: u64,
    root: Hash,
}

/// The record of the line at `at` in the entries file `path`, of a log of `size` entries
/// whose lines end at byte `end`: one seek and one bounded line read. The line is not
/// checked against the tree here: callers whose records seal their own position (the
/// audit trail's) find a line edited or moved there when they open it.
fn record_at<R: serde::de::DeserializeOwned>(
    path: &Path,
    at: At,
    size: u64,
    end: u64,
) -> Result<R> {
    let not_there = || LedgerError::Record {
        index: at.index,
        what: "no entry there".into(),
    };
    if at.index >= size || at.offset >= end {
        return Err(not_there());
    }
    let mut f = open_regular(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(at.offset)).map_err(io(path))?;
    let mut line = Vec::new();
    BufReader::new(f.take((end - at.offset).min(MAX_LINE)))
        .read_until(b'\n', &mut line)
        .map_err(io(path))?;
    if line.pop() != Some(b'\n') {
        return Err(not_there());
    }
    serde_json::from_slice(&line).map_err(|e| LedgerError::Record {
        index: at.index,
        what: e.to_string(),
    })
}

impl Snapshot {
    /// The record at `at` (a place this snapshot covers, as [`Log::entry_at`] reads it).
    pub fn entry_at<R: serde::de::DeserializeOwned>(&self, at: At) -> Result<R> {
        record_at(&self.path, at, self.size, self.end)
    }

    /// The number of entries the snapshot covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the entries the snapshot covers again, whole (the file's first bytes, up to
    /// the end of the last line the handle had read or written), and checks that they
    /// still hash to the handle's tree: an entry edited, removed or moved in the middle of
    /// the file behind an open log, which its reads never look at again, is found here
    /// rather than only at the next verification. Takes no lock: appends only add after
    /// those bytes, so an appending writer is never held up. Fails with
    /// [`LedgerError::Inconsistent`] when the file no longer holds those entries.
    pub fn check(&self) -> Result<()> {
        let mut replay = Replay::open(
            &self.path,
            &Position::start(),
            self.end,
            self.size,
            self.root,
        )?;
        while replay.next()?.is_some() {}
        Ok(())
    }

    /// The records the snapshot covers, in log order, read from the file and each line
    /// checked against the handle's tree as [`Log::entries`] does, but away from the
    /// handle: a long read on another thread does not hold up the handle's appends.
    pub fn entries<R>(&self) -> Entries<R> {
        let replay = Replay::open(
            &self.path,
            &Position::start(),
            self.end,
            self.size,
            self.root,
        );
        Entries {
            replay: replay.map_err(Some),
            restarted: false,
            records: std::marker::PhantomData,
        }
    }
}

impl Replay {
    /// Reads `path` from `from` up to `end` (the end of the last line the handle read),
    /// against the handle's `size` and `head`.
    fn open(path: &Path, from: &Position, end: u64, size: u64, head: Hash) -> Result<Replay> {
        let mut f = open_regular(path).map_err(io(path))?;
        f.seek(SeekFrom::Start(from.at.offset)).map_err(io(path))?;
        Ok(Replay {
            reader: BufReader::new(f.take(end.saturating_sub(from.at.offset))),
            path: path.to_path_buf(),
            line: Vec::new(),
            at: from.at,
            frontier: from.frontier.clone(),
            size,
            head,
        })
    }
}

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

/// What a pass over the file computed for a proof ([`Log::replay_for`]).
struct Replayed {
    /// The roots of the trees of the sizes asked for, in their order (`None` beyond the log).
    roots: Vec<Option<Hash>>,
    /// The MTH of the ranges asked for.
    ranges: Option<Vec<Hash>>,
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
        let mut ledger = Self::read(dir, &[])?;
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
        Self::read(dir, &[])
    }

    /// Reads the ledger, keeping the roots of the trees of sizes `also` on the way; the
    /// caller holds a lock.
    fn read(dir: &Path, also: &[u64]) -> Result<Self> {
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
        let meta = f.metadata().map_err(io(&path))?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            origin,
            frontier: merkle::Frontier::new(),
            last_leaf: None,
            roots: Vec::new(),
            torn: None,
            mark: Mark {
                file: identity(&meta),
                end: 0,
                last_start: 0,
            },
            stats: ReadStats::default(),
            diverged: None,
            records: std::marker::PhantomData,
        };
        // The root at the latest checkpoint's size (read, not verified: only which root to
        // keep), so that the first check against it needs no second pass over the file.
        let mut capture: Vec<u64> = log
            .latest_checkpoint()
            .ok()
            .and_then(|note| Checkpoint::parse(&note).ok())
            .map(|cp| cp.size)
            .into_iter()
            .collect();
        capture.extend_from_slice(also);
        let lines = log.read_lines(f, &path, &capture)?;
        log.stats = ReadStats {
            full_reads: 1,
            last_bytes: lines.bytes,
        };
        log.take(lines);
        Ok(log)
    }

    /// Reads the lines of `f` (positioned at the mark's end) up to its end or a torn line,
    /// hashing them into a copy of the frontier and keeping the roots at the sizes in
    /// `capture` as it passes them. Each line is at most [`MAX_LINE`] bytes and parses as a
    /// record (which is then dropped), else the read fails and the log is left as it was.
    fn read_lines(&self, f: File, path: &Path, capture: &[u64]) -> Result<Lines> {
        let mut reader = BufReader::new(f);
        let mut out = Lines {
            frontier: self.frontier.clone(),
            last_leaf: self.last_leaf,
            captured: Vec::new(),
            end: self.mark.end,
            last_start: self.mark.last_start,
            torn: None,
            bytes: 0,
        };
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = std::io::Read::take(&mut reader, MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(io(path))?;
            if n == 0 {
                break;
            }
            out.bytes += n as u64;
            let index = out.frontier.len();
            if n as u64 > MAX_LINE {
                return Err(LedgerError::Record {
                    index,
                    what: format!("longer than {MAX_LINE} bytes: not a ledger record"),
                });
            }
            if line.last() != Some(&b'\n') {
                out.torn = Some(TornTail {
                    offset: out.end,
                    len: n as u64,
                    entries: index,
                });
                break;
            }
            let data = &line[..line.len() - 1];
            serde_json::from_slice::<R>(data).map_err(|e| LedgerError::Record {
                index,
                what: e.to_string(),
            })?;
            let leaf = merkle::leaf_hash(data);
            out.frontier.push(leaf);
            out.last_leaf = Some(leaf);
            if capture.contains(&out.frontier.len()) {
                out.captured.push((out.frontier.len(), out.frontier.root()));
            }
            out.last_start = out.end;
            out.end += n as u64;
        }
        Ok(out)
    }

    /// Adds lines read past the mark to the log, and moves the mark past them.
    fn take(&mut self, lines: Lines) {
        self.frontier = lines.frontier;
        self.last_leaf = lines.last_leaf;
        for (size, root) in lines.captured {
            self.keep_root(size, root);
        }
        self.mark.end = lines.end;
        self.mark.last_start = lines.last_start;
        self.torn = lines.torn;
    }

    /// Keeps the root of the tree of `size` leaves (of this handle's), dropping the oldest
    /// beyond [`KEPT_ROOTS`].
    fn keep_root(&mut self, size: u64, root: Hash) {
        self.roots.retain(|(s, _)| *s != size);
        if self.roots.len() >= KEPT_ROOTS {
            self.roots.remove(0);
        }
        self.roots.push((size, root));
    }

    /// Reads what other handles (other processes) appended since this one last read the
    /// entries, under a shared lock. Only the lines past the last one read are read, after
    /// checking that the file is the same and still holds that line where it was; a file
    /// that shrank, was replaced or changed there is read again whole.
    pub fn refresh(&mut self) -> Result<()> {
        let lock_path = self.dir.join(LOCK);
        let lock = open_regular(&lock_path).ok();
        if let Some(lock) = &lock {
            lock.lock_shared().map_err(io(&lock_path))?;
        }
        self.refresh_locked()
    }

    /// [`Log::refresh`], the caller holding a lock.
    fn refresh_locked(&mut self) -> Result<()> {
        let path = self.dir.join(ENTRIES);
        let mut f = open_regular(&path).map_err(io(&path))?;
        let meta = f.metadata().map_err(io(&path))?;
        match self.recheck(&mut f, &meta).map_err(io(&path))? {
            Some(checked) => {
                let lines = self.read_lines(f, &path, &[])?;
                self.stats.last_bytes = checked + lines.bytes;
                self.take(lines);
            }
            None => self.read_again()?,
        }
        Ok(())
    }

    /// Whether `f` still holds what this log read: the same file, at least as long, with
    /// the last line read (after a newline) where it was and hashing to the last leaf.
    /// Returns the bytes read to check it, with `f` positioned at the mark's end, or `None`
    /// when the file must be read again whole.
    fn recheck(&self, f: &mut File, meta: &std::fs::Metadata) -> std::io::Result<Option<u64>> {
        let mark = self.mark;
        if !meta.is_file() || identity(meta) != mark.file || meta.len() < mark.end {
            return Ok(None);
        }
        let Some(last) = &self.last_leaf else {
            // Nothing was read: there is no line to check.
            return Ok((mark.end == 0).then_some(0));
        };
        // The newline before the last line (when it is not the first), then the line.
        let from = mark.last_start.saturating_sub(1);
        let len = mark.end - from;
        if mark.end <= mark.last_start || len > MAX_LINE + 1 {
            return Ok(None);
        }
        let mut bytes = vec![0; len as usize];
        f.seek(SeekFrom::Start(from))?;
        match f.read_exact(&mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let line = if mark.last_start > 0 {
            match bytes.split_first() {
                Some((b'\n', line)) => line,
                _ => return Ok(None),
            }
        } else {
            &bytes[..]
        };
        match line.split_last() {
            Some((b'\n', data)) if merkle::leaf_hash(data) == *last => Ok(Some(len)),
            _ => Ok(None),
        }
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
        self.frontier.len()
    }

    /// What the handle holds in memory of its entries, in hashes: the frontier, the last
    /// leaf and the few roots kept. Bounded whatever the log's length (no record, no leaf
    /// list).
    pub fn held(&self) -> usize {
        self.frontier.held() + usize::from(self.last_leaf.is_some()) + self.roots.len()
    }

    /// The records, in log order, read from the file ([`Entries`]: streamed, each line
    /// checked against the handle's tree): the entries this handle read and wrote.
    pub fn entries(&self) -> Entries<R> {
        self.entries_since(&Position::start())
    }

    /// Where the entries this handle read and wrote end: read what is added after it with
    /// [`Log::entries_since`].
    pub fn position(&self) -> Position {
        Position {
            at: At {
                index: self.size(),
                offset: self.mark.end,
            },
            generation: self.stats.full_reads,
            frontier: self.frontier.clone(),
        }
    }

    /// The records after `from` (a [`Log::position`] of this handle), up to what this
    /// handle has read and written, read from the file and checked against its tree. When
    /// the file was read again whole since `from` was taken (it was cut, replaced or
    /// changed where it had been read), the entries start from the first instead
    /// ([`Entries::restarted`]).
    pub fn entries_since(&self, from: &Position) -> Entries<R> {
        let start = Position::start();
        let restarted = (from.at.index > 0 && from.generation != self.stats.full_reads)
            || from.at.index > self.size();
        let from = if restarted { &start } else { from };
        let replay = Replay::open(
            &self.entries_path(),
            from,
            self.mark.end,
            self.size(),
            self.frontier.root(),
        );
        Entries {
            replay: replay.map_err(Some),
            restarted,
            records: std::marker::PhantomData,
        }
    }

    /// The record of the entry at `at` (as [`Entries`] gave it), read from the file alone:
    /// a look-up for a caller that kept where an entry is, not a proof (the line is not
    /// hashed against the tree; [`Log::entries`] checks what it reads).
    pub fn entry_at(&self, at: At) -> Result<R> {
        record_at(&self.entries_path(), at, self.size(), self.mark.end)
    }

    /// The root hash of the first `size` entries (`None` beyond the log): the handle's own
    /// tree, or a root it kept, else computed from a pass over the file checked against the
    /// handle's tree (O(n) reads, O(log n) memory).
    pub fn root_at(&self, size: u64) -> Result<Option<Hash>> {
        if size > self.size() {
            return Ok(None);
        }
        if let Some(root) = self.known_root(size) {
            return Ok(Some(root));
        }
        Ok(self.replay_for(&[size], Vec::new())?.roots[0])
    }

    /// The root of the first `size` entries when known without reading the file.
    fn known_root(&self, size: u64) -> Option<Hash> {
        if size == self.size() {
            return Some(self.frontier.root());
        }
        if size == 0 {
            return Some(merkle::empty_root());
        }
        self.roots.iter().find(|(s, _)| *s == size).map(|(_, r)| *r)
    }

    /// One pass over the entries this handle read, checked against its tree: the roots of
    /// the trees of `sizes` and the MTH of `ranges`, keeping O(log n) hashes a range.
    fn replay_for(&self, sizes: &[u64], ranges: Vec<std::ops::Range<u64>>) -> Result<Replayed> {
        let mut replay = Replay::open(
            &self.entries_path(),
            &Position::start(),
            self.mark.end,
            self.size(),
            self.frontier.root(),
        )?;
        let mut out = Replayed {
            roots: sizes
                .iter()
                .map(|&s| (s == 0).then(merkle::empty_root))
                .collect(),
            ranges: None,
        };
        let mut ranges = merkle::Ranges::new(ranges);
        while let Some(at) = replay.next()? {
            let hash = merkle::leaf_hash(replay.line());
            ranges.push(hash);
            for (s, root) in sizes.iter().zip(out.roots.iter_mut()) {
                if *s == at.index + 1 {
                    *root = Some(replay.frontier.root());
                }
            }
        }
        out.ranges = ranges.roots();
        Ok(out)
    }

    /// Appends records durably (see [`Ledger::append_with`]); a torn last line is refused.
    pub fn append(&mut self, new: &[R]) -> Result<std::ops::Range<u64>> {
        Ok(self
            .append_with(TornRepair::Refuse, |_| new.to_vec())?
            .range)
    }

    /// Appends the records `decide` returns, in one critical section: under an exclusive
    /// lock of the ledger, the entries are brought up to date (another process may have
    /// appended since this ledger was read: [`Log::refresh`], which reads only what was
    /// added), `decide` sees that fresh ledger and chooses what to add (e.g. with
    /// [`admit`]), and the lines are written and fsynced before the lock is released. Two
    /// appends never both decide on the same old state.
    ///
    /// Every line is checked before any is written: a record whose line (with its newline)
    /// is longer than the 64 KiB a read accepts is refused ([`LedgerError::Record`]), and
    /// nothing is appended.
    pub fn append_with(
        &mut self,
        repair: TornRepair,
        decide: impl FnOnce(&Self) -> Vec<R>,
    ) -> Result<Appended> {
        let lock = self.lock_exclusive()?;
        self.refresh_locked()?;
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
        let start = self.size();
        let mut buf = Vec::new();
        let mut leaves = Vec::with_capacity(new.len());
        let mut last_start = self.mark.last_start;
        for (i, r) in new.iter().enumerate() {
            let index = start + i as u64;
            let line = serde_json::to_vec(r).map_err(|e| LedgerError::Record {
                index,
                what: e.to_string(),
            })?;
            if line.len() as u64 >= MAX_LINE {
                return Err(LedgerError::Record {
                    index,
                    what: format!(
                        "{} bytes with its newline: longer than the {MAX_LINE} a ledger line may be",
                        line.len() + 1
                    ),
                });
            }
            leaves.push(merkle::leaf_hash(&line));
            last_start = self.mark.end + buf.len() as u64;
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        if !buf.is_empty() {
            let mut f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            // The file appended to must be the one just read, ending where it was read: no
            // writer that keeps to the lock can have changed it since.
            let meta = f.metadata().map_err(io(&path))?;
            if identity(&meta) != self.mark.file || meta.len() != self.mark.end {
                return Err(LedgerError::Io {
                    path,
                    source: std::io::Error::other(
                        "replaced or written to under the ledger's lock: not appended",
                    ),
                });
            }
            if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_all()) {
                // A write cut short (a full disk) must not leave a torn line that refuses
                // every later append: what was not acknowledged is taken back off the file.
                let _ = f.set_len(self.mark.end).and_then(|()| f.sync_all());
                return Err(LedgerError::Io { path, source: e });
            }
            self.last_leaf = leaves.last().copied().or(self.last_leaf);
            self.frontier.extend(leaves);
            self.mark.end += buf.len() as u64;
            self.mark.last_start = last_start;
        }
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

    /// Signs and writes a checkpoint of the whole ledger as this handle knows it, brought up
    /// to date under the exclusive lock (the lines other processes appended are read and
    /// hashed: [`Log::refresh`]), as `checkpoint` and `checkpoints/<size>`; returns the
    /// signed note.
    ///
    /// What is signed is the tree of the leaf hashes this handle computed from the lines it
    /// read (the whole file when it was opened, then each line as it was added) and wrote,
    /// kept with its subtrees' roots ([`merkle::Tree`]): the root costs O(log n), and the
    /// file is not read again. A line edited in the middle of the file behind an open handle
    /// is therefore not endorsed: the checkpoint commits to the line as it was read, and
    /// the edit is reported by whoever verifies the file against it
    /// ([`Log::verify_against`] on a log opened anew). A file cut short, replaced, or
    /// changed at the last line read is read again whole, and what it holds is signed.
    pub fn checkpoint(&mut self, signer: &Signer) -> Result<String> {
        // Under the exclusive lock, on the entries as they are now: two checkpoints at once
        // never interleave their files, and the latest never covers fewer entries than one
        // written before it.
        let lock = self.lock_exclusive()?;
        self.refresh_locked()?;
        let note = self.sign_checkpoint(signer)?;
        drop(lock);
        Ok(note)
    }

    /// As [`Log::checkpoint`], but only over a log that extends both its latest checkpoint
    /// (which must verify with `signer`'s key: a consistency proof from it to this handle's
    /// tree, O(log n) hashes) and everything this handle has read since it was opened (a
    /// file found cut, replaced or rewritten at the last line read, which is then read
    /// again whole, must still hold every line read before). So a truncated or rewritten
    /// log is never covered by a new checkpoint, and a line edited in the middle of the
    /// file behind the handle, which no read looks at, is not endorsed either: the
    /// checkpoint commits to the line as it was read (see [`Log::checkpoint`]), and a
    /// verification of the file against it reports the edit. Fails with
    /// [`LedgerError::Inconsistent`] (or the latest checkpoint's error), signing nothing; a
    /// handle that once saw entries it had read change keeps refusing (open the log anew,
    /// after looking into it, to checkpoint again).
    pub fn checkpoint_extending(&mut self, signer: &Signer) -> Result<String> {
        let lock = self.lock_exclusive()?;
        self.refresh_locked()?;
        if let Some(size) = self.diverged {
            return Err(LedgerError::Inconsistent {
                size,
                what: format!(
                    "the first {size} entries, as this log read them, were rewritten or removed since"
                ),
            });
        }
        self.verify_latest(&signer.verifier(), None)?;
        let note = self.sign_checkpoint(signer)?;
        drop(lock);
        Ok(note)
    }

    /// Reads the whole log again (the caller holds a lock), noting whether it still extends
    /// what this handle had read ([`Log::checkpoint_extending`] refuses when not). Done when
    /// a refresh finds the file cut, replaced or changed at the last line read.
    fn read_again(&mut self) -> Result<()> {
        let mut fresh = Self::read(&self.dir, &[self.size()])?;
        fresh.stats.full_reads += self.stats.full_reads;
        let extends = fresh.known_root(self.size()) == Some(self.frontier.root());
        fresh.diverged = self.diverged.or_else(|| (!extends).then_some(self.size()));
        if extends {
            // The roots this handle kept are those of the same leaves.
            for (size, root) in std::mem::take(&mut self.roots) {
                if fresh.known_root(size).is_none() {
                    fresh.keep_root(size, root);
                }
            }
        }
        *self = fresh;
        Ok(())
    }

    /// Signs a checkpoint of this log and writes it (the caller holds the exclusive lock).
    fn sign_checkpoint(&mut self, signer: &Signer) -> Result<String> {
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: self.frontier.root(),
        };
        let note = signer.sign(&cp.text())?;
        let numbered = self.dir.join("checkpoints").join(cp.size.to_string());
        if !numbered.exists() {
            write_new(&numbered, note.as_bytes())?;
        }
        replace_atomically(&self.dir.join(CHECKPOINT), note.as_bytes())?;
        // Its root is checked against by the next checkpoint: kept, so that costs nothing.
        self.keep_root(cp.size, cp.root);
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

    /// What this handle has read and written, to check the file against later
    /// ([`Snapshot::check`], e.g. on another thread while this handle goes on appending).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            path: self.dir.join(ENTRIES),
            end: self.mark.end,
            size: self.size(),
            root: self.frontier.root(),
        }
    }

    /// The verifier key stored beside the ledger (convenient, but a verifier should hold its
    /// own copy: whoever can rewrite the ledger can rewrite this file too).
    pub fn stored_verifier(&self) -> Result<Verifier> {
        let p = self.dir.join(VERIFIER);
        Ok(Verifier::parse(&read_small(&p).map_err(io(&p))?)?)
    }
}

impl Log<Record> {
    /// The last entry whose record matches `instance` (keyed UID hash), with its index: one
    /// pass over the file ([`Log::entries`]).
    pub fn find_instance(&self, instance: &str) -> Result<Option<(u64, Record)>> {
        let mut found = None;
        for entry in self.entries() {
            let (at, r) = entry?;
            if r.instance == instance {
                found = Some((at.index, r));
            }
        }
        Ok(found)
    }
}

impl<R: Serialize + serde::de::DeserializeOwned + Clone> Log<R> {
    /// Inclusion proof of entry `index` in the tree of the first `size` entries (`None` out
    /// of range), from one pass over the file checked against the handle's tree.
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Result<Option<InclusionProof>> {
        Ok(self.prove_inclusions(&[index], size)?.pop().flatten())
    }

    /// Inclusion proofs of several entries in the tree of the first `size` entries, in the
    /// order of `indexes` (each `None` out of range), from one pass over the file checked
    /// against the handle's tree, keeping O(log n) hashes a proof.
    pub fn prove_inclusions(
        &self,
        indexes: &[u64],
        size: u64,
    ) -> Result<Vec<Option<InclusionProof>>> {
        if size > self.size() || indexes.iter().all(|&i| i >= size) {
            return Ok(vec![None; indexes.len()]);
        }
        // The ranges of every proof, hashed together: those the proofs share (the large
        // subtrees near the root) once.
        let per_proof: Vec<Option<Vec<std::ops::Range<u64>>>> = indexes
            .iter()
            .map(|&i| merkle::inclusion_ranges(i, size))
            .collect();
        let mut ranges =
            merkle::Ranges::new(per_proof.iter().flatten().flatten().cloned().collect());
        let mut wanted: std::collections::HashMap<u64, Vec<usize>> = Default::default();
        for (k, &i) in indexes.iter().enumerate() {
            wanted.entry(i).or_default().push(k);
        }
        let mut leaves: Vec<Option<Hash>> = vec![None; indexes.len()];
        let mut root = None;
        let mut replay = Replay::open(
            &self.entries_path(),
            &Position::start(),
            self.mark.end,
            self.size(),
            self.frontier.root(),
        )?;
        while let Some(at) = replay.next()? {
            if at.index >= size {
                // Past the tree: read on only for the check against the handle's tree.
                continue;
            }
            let hash = merkle::leaf_hash(replay.line());
            ranges.push(hash);
            for &k in wanted.get(&at.index).into_iter().flatten() {
                leaves[k] = Some(hash);
            }
            if at.index + 1 == size {
                root = Some(replay.frontier.root());
            }
        }
        let mut roots = ranges.roots().unwrap_or_default().into_iter();
        Ok(indexes
            .iter()
            .zip(per_proof)
            .zip(leaves)
            .map(|((&index, ranges), leaf)| {
                let n = ranges?.len();
                let proof: Vec<Hash> = roots.by_ref().take(n).collect();
                if proof.len() != n {
                    return None;
                }
                Some(InclusionProof {
                    index,
                    size,
                    leaf: hex(&leaf?),
                    proof: proof.iter().map(|h| hex(h)).collect(),
                    root: hex(&root?),
                })
            })
            .collect())
    }

    /// Consistency proof from the tree of `old` entries to the tree of `new` entries
    /// (`None` out of range), from one pass over the file checked against the handle's
    /// tree (none when there is nothing to prove).
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<Option<Vec<Hash>>> {
        if new > self.size() {
            return Ok(None);
        }
        let Some(ranges) = merkle::consistency_ranges(old, new) else {
            return Ok(None);
        };
        if ranges.is_empty() {
            return Ok(Some(Vec::new()));
        }
        Ok(self.replay_for(&[], ranges)?.ranges)
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
    /// root (so the current tree, which holds those entries, extends it). Returns the
    /// checked checkpoint. The root is the handle's own when the checkpoint covers every
    /// entry it read, or one it kept (a checkpoint it signed, or the latest when it was
    /// opened); else a pass over the file, checked against the handle's tree, gives it.
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
        let root = match self.root_at(cp.size) {
            Ok(root) => root,
            Err(LedgerError::Inconsistent { what, .. }) => {
                return Err(LedgerError::Inconsistent {
                    size: cp.size,
                    what,
                })
            }
            Err(e) => return Err(e),
        };
        if root != Some(cp.root) {
            return Err(LedgerError::Inconsistent {
                size: cp.size,
                what: "entries before it were rewritten or reordered".into(),
            });
        }
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

    /// Every record of an open log, read from its file.
    fn all<R: Serialize + serde::de::DeserializeOwned + Clone>(log: &Log<R>) -> Vec<R> {
        log.entries().map(|e| e.unwrap().1).collect()
    }

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
        let p = l.prove_inclusion(3, 9).unwrap().unwrap();
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
                        if fresh.find_instance(&r.instance).unwrap().is_some() {
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
        assert_eq!(all(&log)[3], note(3));
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

    /// A record of about the size of a sealed audit event.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Padded {
        n: u64,
        text: String,
    }

    fn padded(n: u64, len: usize) -> Padded {
        Padded {
            n,
            text: "x".repeat(len),
        }
    }

    #[test]
    fn an_append_longer_than_a_line_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut log = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        log.append(&[padded(0, 10)]).unwrap();
        let path = dir.path().join(ENTRIES);
        let before = std::fs::read(&path).unwrap();
        // The second record's line is one byte over the limit (its newline included).
        let empty_len = serde_json::to_vec(&padded(1, 0)).unwrap().len();
        let over = padded(1, MAX_LINE as usize - empty_len);
        assert!(matches!(
            log.append(&[padded(1, 1), over.clone()]),
            Err(LedgerError::Record { index: 2, .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!((log.size(), all(&log).len()), (1, 1));
        // One byte less fits, and the log still opens.
        let fits = padded(1, MAX_LINE as usize - empty_len - 1);
        log.append(std::slice::from_ref(&fits)).unwrap();
        let log = Log::<Padded>::open(dir.path()).unwrap();
        assert_eq!(all(&log), &[padded(0, 10), fits]);
    }

    /// The bytes of a record's line, its newline included.
    fn line_len(r: &Padded) -> u64 {
        serde_json::to_vec(r).unwrap().len() as u64 + 1
    }

    #[test]
    fn appends_by_another_handle_are_read_past_the_last_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        a.append(&(10..60).map(|n| padded(n, 100)).collect::<Vec<_>>())
            .unwrap();
        // Another process's view appends two records.
        let mut b = Log::<Padded>::open(dir.path()).unwrap();
        b.append(&[padded(60, 100), padded(61, 100)]).unwrap();
        let full = a.stats.full_reads;
        a.refresh().unwrap();
        assert_eq!(all(&a), all(&b));
        assert_eq!(a.size(), 52);
        assert_eq!(a.root_at(52).unwrap(), b.root_at(52).unwrap());
        // Read: the newline before the last line read, that line, and the two new ones.
        let line = line_len(&padded(10, 100));
        assert_eq!(a.stats.last_bytes, 1 + line + 2 * line);
        assert_eq!(a.stats.full_reads, full);
        // An append decides on what the other handle wrote since.
        b.append(&[padded(62, 100)]).unwrap();
        let done = a
            .append_with(TornRepair::Refuse, |fresh| {
                assert_eq!(all(fresh).last(), Some(&padded(62, 100)));
                vec![padded(63, 100)]
            })
            .unwrap();
        assert_eq!(done.range, 53..54);
        assert_eq!(a.stats.full_reads, full);
        // Nothing new: only the last line is read again.
        a.refresh().unwrap();
        assert_eq!(a.stats.last_bytes, 1 + line);
        let reopened = Log::<Padded>::open(dir.path()).unwrap();
        assert_eq!(all(&reopened), all(&a));
        assert_eq!(reopened.root_at(54).unwrap(), a.root_at(54).unwrap());
    }

    #[test]
    fn a_log_file_cut_replaced_or_changed_at_its_last_line_is_read_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let path = dir.path().join(ENTRIES);
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        a.append(&(10..20).map(|n| padded(n, 50)).collect::<Vec<_>>())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let joined = |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        // Refreshes `a`, and says whether it read the whole file again.
        let reread = |a: &mut Log<Padded>| {
            let before = a.stats.full_reads;
            a.refresh().unwrap();
            let full = a.stats.full_reads - before;
            assert!(full <= 1);
            full == 1
        };
        assert!(!reread(&mut a));

        // Cut short (in place): read again whole, and the log is what the file holds.
        std::fs::write(&path, joined(&lines[..5])).unwrap();
        assert!(reread(&mut a));
        assert_eq!(a.size(), 5);
        assert!(!reread(&mut a));

        // Replaced by another file holding the same lines and one more.
        std::fs::write(&path, joined(&lines[..5])).unwrap();
        let mut more = lines[..5].to_vec();
        let extra = serde_json::to_string(&padded(99, 50)).unwrap();
        more.push(&extra);
        let tmp = dir.path().join("replacement");
        std::fs::write(&tmp, joined(&more)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(reread(&mut a));
        assert_eq!(a.size(), 6);
        assert_eq!(all(&a)[5], padded(99, 50));

        // The last line read changed in place (same length, same file): read again whole.
        let changed = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&extra, &extra.replace(&"x".repeat(50), &"y".repeat(50)));
        std::fs::write(&path, &changed).unwrap();
        assert!(reread(&mut a));
        assert_eq!(all(&a)[5].text, "y".repeat(50));

        // A line slipped in before the last one (the file grows, the last line moves).
        let mut shifted: Vec<&str> = changed.lines().collect();
        shifted.insert(4, lines[7]);
        std::fs::write(&path, joined(&shifted)).unwrap();
        assert!(reread(&mut a));
        assert_eq!(a.size(), 7);
        assert_eq!(all(&a)[4], padded(17, 50));

        // Emptied: read again whole, and empty.
        std::fs::write(&path, b"").unwrap();
        assert!(reread(&mut a));
        assert_eq!(a.size(), 0);
        assert!(!reread(&mut a));
    }

    #[test]
    fn an_append_reads_the_same_bytes_whatever_the_log_size() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut log = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        let mut other = Log::<Padded>::open(dir.path()).unwrap();
        let full = log.stats.full_reads;
        // Records of one width, so that every line has the same length.
        let rec = |n: u64| padded(1_000_000 + n, 300);
        let mut read = Vec::new();
        for size in [100, 3_000] {
            let batch: Vec<_> = (log.size()..size).map(rec).collect();
            log.append(&batch).unwrap();
            // Our own append, then one appended by another handle before ours.
            log.append(&[rec(size)]).unwrap();
            let own = log.stats.last_bytes;
            other.append(&[rec(size + 1)]).unwrap();
            log.append(&[rec(size + 2)]).unwrap();
            read.push((own, log.stats.last_bytes));
        }
        let line = line_len(&rec(0));
        assert_eq!(read, vec![(1 + line, 1 + 2 * line); 2]);
        assert_eq!(log.stats.full_reads, full);
    }

    #[test]
    fn a_checkpoint_signs_what_the_handle_read_and_never_endorses_an_edit_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let v = signer.verifier();
        let path = dir.path().join(ENTRIES);
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        a.append(&(10..20).map(|n| padded(n, 50)).collect::<Vec<_>>())
            .unwrap();
        let first = a.checkpoint_extending(&signer).unwrap();
        a.append(&(20..25).map(|n| padded(n, 50)).collect::<Vec<_>>())
            .unwrap();
        // Entry 2, checkpointed, rewritten in place: neither an append nor a checkpoint
        // reads there.
        let text = std::fs::read_to_string(&path).unwrap();
        let line12 = serde_json::to_string(&padded(12, 50)).unwrap();
        let edited12 = line12.replace(&"x".repeat(50), &"y".repeat(50));
        std::fs::write(&path, text.replace(&line12, &edited12)).unwrap();
        a.append(&[padded(25, 50)]).unwrap();
        let full = a.stats.full_reads;
        let signed = a.checkpoint_extending(&signer).unwrap();
        assert_eq!(a.stats.full_reads, full);
        // What is signed is the entry as `a` read it, not as the file now holds it.
        let cp = Checkpoint::open(&signed, &v).unwrap();
        assert_eq!((cp.size, Some(cp.root)), (16, a.root_at(16).unwrap()));
        // Its records, read back from the file, are checked against what it signed: the
        // edit is reported after the last entry.
        let read: Vec<_> = a.entries().collect();
        assert_eq!(read.len(), 17);
        assert!(read[..16].iter().all(|r| r.is_ok()));
        assert!(matches!(
            read[16],
            Err(LedgerError::Inconsistent { size: 16, .. })
        ));
        // A handle reading the file reports the edit against it (and against the first),
        // and refuses to sign over it.
        let mut fresh = Log::<Padded>::open(dir.path()).unwrap();
        assert_ne!(fresh.root_at(16).unwrap(), a.root_at(16).unwrap());
        assert!(matches!(
            fresh.verify_latest(&v, None),
            Err(LedgerError::Inconsistent { size: 16, .. })
        ));
        assert!(matches!(
            fresh.verify_against(&first, &v),
            Err(LedgerError::Inconsistent { size: 10, .. })
        ));
        assert!(matches!(
            fresh.checkpoint_extending(&signer),
            Err(LedgerError::Inconsistent { size: 16, .. })
        ));
        assert_eq!(fresh.latest_checkpoint().unwrap(), signed);
        // Put back, the file is what was signed: it verifies, and `a` goes on.
        std::fs::write(&path, &text).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(format!("{}\n", serde_json::to_string(&padded(25, 50)).unwrap()).as_bytes())
            .unwrap();
        let mut b = Log::<Padded>::open(dir.path()).unwrap();
        assert_eq!(b.verify_latest(&v, Some(&first)).unwrap().size, 16);
        b.append(&[padded(26, 50)]).unwrap();
        let second = b.checkpoint_extending(&signer).unwrap();
        a.append(&[padded(27, 50)]).unwrap();
        a.checkpoint_extending(&signer).unwrap();
        assert_eq!(a.stats.full_reads, full);
        // Entry 17, just signed by `a`, edited in place. `b` has not read it yet and takes it
        // as it is, but the latest checkpoint, which `a` signed over the entry as written,
        // stops `b` from signing over the edit.
        let text = std::fs::read_to_string(&path).unwrap();
        let line27 = serde_json::to_string(&padded(27, 50)).unwrap();
        let edited = line27.replace(&"x".repeat(50), &"y".repeat(50));
        std::fs::write(&path, text.replace(&line27, &edited)).unwrap();
        let latest = a.latest_checkpoint().unwrap();
        assert_ne!(latest, second);
        b.append(&[padded(28, 50)]).unwrap();
        assert!(matches!(
            b.checkpoint_extending(&signer),
            Err(LedgerError::Inconsistent { size: 18, .. })
        ));
        // It is the last line `a` read: its next append reads the log again whole, sees the
        // line changed, and `a` refuses from then on.
        a.append(&[padded(29, 50)]).unwrap();
        assert_eq!(a.stats.full_reads, full + 1);
        assert!(matches!(
            a.checkpoint_extending(&signer),
            Err(LedgerError::Inconsistent { size: 18, .. })
        ));
        assert_eq!(a.latest_checkpoint().unwrap(), latest);
    }

    #[test]
    fn a_checkpoint_reads_only_what_was_added_and_covers_what_others_appended() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let v = signer.verifier();
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        let rec = |n: u64| padded(1_000_000 + n, 200);
        let line = line_len(&rec(0));
        a.append(&(0..50).map(rec).collect::<Vec<_>>()).unwrap();
        let full = a.stats.full_reads;
        a.checkpoint_extending(&signer).unwrap();
        // Nothing new: the last line is read again, and nothing else.
        assert_eq!((a.stats.full_reads, a.stats.last_bytes), (full, 1 + line));
        // Another process appends, and signs a checkpoint of its own.
        let mut b = Log::<Padded>::open(dir.path()).unwrap();
        b.append(&[rec(50), rec(51)]).unwrap();
        let theirs = b.checkpoint_extending(&signer).unwrap();
        b.append(&[rec(52)]).unwrap();
        // Both kinds of checkpoint read their lines (and only those) and cover them.
        for (n, extending) in [(53, true), (54, false)] {
            a.append(&[rec(n)]).unwrap();
            b.append(&[rec(n + 100)]).unwrap();
            let note = if extending {
                a.checkpoint_extending(&signer).unwrap()
            } else {
                a.checkpoint(&signer).unwrap()
            };
            assert_eq!(a.stats.full_reads, full);
            assert_eq!(a.stats.last_bytes, 1 + 2 * line);
            let reader = Log::<Padded>::open(dir.path()).unwrap();
            assert_eq!(all(&reader), all(&a));
            let cp = reader.verify_latest(&v, Some(&theirs)).unwrap();
            assert_eq!(
                (cp.size, Some(cp.root)),
                (reader.size(), reader.root_at(cp.size).unwrap())
            );
            assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
        }
        assert_eq!(a.size(), 57);
        // Proofs from a pass over the file are those of the leaf list.
        let leaves: Vec<Hash> = std::fs::read_to_string(dir.path().join(ENTRIES))
            .unwrap()
            .lines()
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        assert_eq!(leaves.len(), 57);
        for (old, new) in [(1, 57), (13, 40), (32, 57), (57, 57)] {
            assert_eq!(
                a.prove_consistency(old, new).unwrap(),
                merkle::consistency_proof(old as usize, &leaves[..new as usize])
            );
        }
        let p = a.prove_inclusion(17, 57).unwrap().unwrap();
        assert_eq!(
            p.proof,
            merkle::inclusion_proof(17, &leaves)
                .unwrap()
                .iter()
                .map(|h| hex(h))
                .collect::<Vec<_>>()
        );
        let proof: Vec<Hash> = p.proof.iter().map(|h| unhex(h).unwrap()).collect();
        merkle::verify_inclusion(
            17,
            57,
            &unhex(&p.leaf).unwrap(),
            &proof,
            &unhex(&p.root).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn a_snapshot_finds_an_edit_behind_an_open_log_without_taking_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let path = dir.path().join(ENTRIES);
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        a.append(&(10..30).map(|n| padded(n, 50)).collect::<Vec<_>>())
            .unwrap();
        let snapshot = a.snapshot();
        assert_eq!(snapshot.size(), 20);
        // Another handle appends, then holds the exclusive lock (an append under way): the
        // check neither waits for it nor minds the lines past what `a` had read.
        let mut b = Log::<Padded>::open(dir.path()).unwrap();
        b.append(&[padded(30, 50)]).unwrap();
        let lock = b.lock_exclusive().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = snapshot.clone();
        std::thread::spawn(move || {
            let _ = tx.send(s.check().is_ok());
        });
        let checked = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the check waited for the log's lock");
        assert!(checked);
        drop(lock);
        let text = std::fs::read_to_string(&path).unwrap();
        let line = |n| serde_json::to_string(&padded(n, 50)).unwrap();
        let edit =
            |from: &str, to: &str| std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let refused =
            |s: &Snapshot| matches!(s.check(), Err(LedgerError::Inconsistent { size: 20, .. }));
        // Entry 3 edited in place, removed, or swapped with entry 4: found each time.
        let edited = line(13).replace(&"x".repeat(50), &"y".repeat(50));
        edit(&line(13), &edited);
        assert!(refused(&snapshot));
        edit(&format!("{}\n", line(13)), "");
        assert!(refused(&snapshot));
        edit(
            &format!("{}\n{}\n", line(13), line(14)),
            &format!("{}\n{}\n", line(14), line(13)),
        );
        assert!(refused(&snapshot));
        // A line split in two, or cut short.
        edit(&line(13), &line(13).replacen(',', "\n", 1));
        assert!(refused(&snapshot));
        std::fs::write(&path, &text[..100]).unwrap();
        assert!(refused(&snapshot));
        // Put back: it holds again, and so does `a`'s next snapshot.
        std::fs::write(&path, &text).unwrap();
        snapshot.check().unwrap();
        a.append(&[padded(31, 50)]).unwrap();
        a.snapshot().check().unwrap();
    }

    /// Per-append time at 100 and at 10,000 entries (`cargo test -p radveil-ledger --release
    /// -- --ignored --nocapture per_append_time`).
    #[test]
    #[ignore]
    fn per_append_time_at_100_and_10000_entries() {
        for size in [100u64, 10_000] {
            let dir = tempfile::tempdir().unwrap();
            let signer = Signer::from_seed("o", &[4; 32]).unwrap();
            let mut log = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
            log.append(&(0..size).map(|n| padded(n, 600)).collect::<Vec<_>>())
                .unwrap();
            let rounds = 200;
            let start = std::time::Instant::now();
            for n in 0..rounds {
                log.append(&[padded(size + n, 600)]).unwrap();
            }
            let each = start.elapsed() / rounds as u32;
            println!("per append at {size} entries: {each:?}");
        }
    }

    /// Checkpoint time at 10,000 and 100,000 entries (`cargo test -p radveil-ledger --release
    /// -- --ignored --nocapture checkpoint_time`).
    #[test]
    #[ignore]
    fn checkpoint_time_at_10000_and_100000_entries() {
        for size in [10_000u64, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let signer = Signer::from_seed("o", &[4; 32]).unwrap();
            let mut log = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
            log.append(&(0..size).map(|n| padded(n, 600)).collect::<Vec<_>>())
                .unwrap();
            log.checkpoint_extending(&signer).unwrap();
            let rounds = 20;
            let mut signing = std::time::Duration::ZERO;
            let start = std::time::Instant::now();
            for n in 0..rounds {
                log.append(&[padded(size + n, 600)]).unwrap();
                let signed = std::time::Instant::now();
                log.checkpoint_extending(&signer).unwrap();
                signing += signed.elapsed();
            }
            let each = start.elapsed() / rounds as u32;
            let checkpoint = signing / rounds as u32;
            println!("append and checkpoint at {size} entries: {each:?} (the checkpoint: {checkpoint:?})");
            // The hashing and checking a checkpoint does, apart from its files and fsyncs.
            let checked = std::time::Instant::now();
            for _ in 0..rounds {
                log.verify_latest(&signer.verifier(), None).unwrap();
                assert!(log.root_at(log.size()).unwrap().is_some());
            }
            let each = checked.elapsed() / rounds as u32;
            println!("root and check against the latest checkpoint at {size} entries: {each:?}");
            // Opening reads and hashes the whole file; the first checkpoint then checks it
            // against the latest one.
            let opened = std::time::Instant::now();
            let mut fresh = Log::<Padded>::open(dir.path()).unwrap();
            fresh.checkpoint_extending(&signer).unwrap();
            println!(
                "open and first checkpoint at {size} entries: {:?}",
                opened.elapsed()
            );
        }
    }

    #[test]
    fn an_open_log_holds_the_same_memory_whatever_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let mut log = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        let mut other = Log::<Padded>::open(dir.path()).unwrap();
        let mut held = Vec::new();
        for batch in 0..100u64 {
            let records: Vec<_> = (0..99).map(|n| padded(batch * 100 + n, 100)).collect();
            log.append(&records).unwrap();
            // Another handle's append, read by this one's next refresh.
            other.append(&[padded(batch * 100 + 99, 100)]).unwrap();
            log.refresh().unwrap();
            if batch % 10 == 9 {
                log.checkpoint_extending(&signer).unwrap();
            }
            held.push(log.held());
        }
        assert_eq!(log.size(), 10_000);
        // The frontier: one hash per complete subtree, at most one per bit of the size.
        assert!(held.iter().all(|&h| h <= 2 * 64), "{held:?}");
        // Opened anew, it holds as little.
        let reopened = Log::<Padded>::open(dir.path()).unwrap();
        assert!(reopened.held() <= 2 * 64);
    }

    #[test]
    fn entries_since_a_position_are_those_added_and_restart_when_the_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_seed("o", &[4; 32]).unwrap();
        let path = dir.path().join(ENTRIES);
        let mut a = Log::<Padded>::init(dir.path(), "o", &signer).unwrap();
        a.append(&(0..10).map(|n| padded(n, 20)).collect::<Vec<_>>())
            .unwrap();
        let pos = a.position();
        assert_eq!(pos.index(), 10);
        // Another handle's appends, then this one's.
        let mut b = Log::<Padded>::open(dir.path()).unwrap();
        b.append(&[padded(10, 20), padded(11, 20)]).unwrap();
        a.append(&[padded(12, 20)]).unwrap();
        let since = a.entries_since(&pos);
        assert!(!since.restarted());
        let got: Vec<(At, Padded)> = since.map(Result::unwrap).collect();
        let seen: Vec<(u64, u64)> = got.iter().map(|(at, r)| (at.index, r.n)).collect();
        assert_eq!(seen, [(10, 10), (11, 11), (12, 12)]);
        // Each entry is where it says, and reads alone from there.
        for (at, r) in &got {
            assert_eq!(&a.entry_at(*at).unwrap(), r);
        }
        assert!(a
            .entry_at(At {
                index: 13,
                offset: got[2].0.offset
            })
            .is_err());
        assert_eq!(a.entries_since(&a.position()).count(), 0);
        // The file cut short: the log reads it again whole, and a position from before
        // restarts from the first entry.
        let pos = a.position();
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, kept).unwrap();
        a.refresh().unwrap();
        let since = a.entries_since(&pos);
        assert!(since.restarted());
        let n: Vec<u64> = since.map(|e| e.unwrap().1.n).collect();
        assert_eq!(n, [0, 1, 2, 3, 4]);
        // A line that no longer parses is reported at its index, and nothing follows.
        let mut c = Log::<Padded>::open(dir.path()).unwrap();
        c.append(&[padded(5, 20)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"n\":2", "\"m\":2", 1)).unwrap();
        let read: Vec<_> = c.entries().collect();
        assert_eq!(read.len(), 3);
        assert!(matches!(read[2], Err(LedgerError::Record { index: 2, .. })));
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
