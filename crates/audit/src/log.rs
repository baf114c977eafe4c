//! The audit log: sealed events appended to a `radveil-ledger` [`Log`] with signed
//! checkpoints, patient handles beside them, reading with filters, and verification.

use std::path::Path;

use base64::Engine;
use radveil_ledger::note::{Signer, Verifier};
use radveil_ledger::{LedgerError, Log, TornRepair, TornTail};
use radveil_store::{Handle, Key};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::event::{is_event_time, Action, Event};
use crate::AuditError;

/// The log's folder under a gateway data directory.
pub const AUDIT_DIR: &str = "audit";
/// The audit key's file under a gateway data directory (64 hex digits, mode 0600), beside
/// the key store in `keys/`, kept apart from the data and its backups.
pub const AUDIT_KEY_FILE: &str = "keys/audit-key";
/// The origin line of an audit log (also its checkpoint key's name).
pub const ORIGIN: &str = "radveil/audit";
/// Version of the entry format.
const FORMAT: u32 = 1;
/// The longest entry line written: the ledger reads lines of at most 64 KiB, so a longer
/// one would make the log unreadable. Events count instances rather than list them.
const MAX_ENTRY: usize = 60 * 1024;

/// The audit key: one secret from which the sealing key, the patient-index key and the
/// checkpoint signing key are derived (HMAC-SHA-256 under distinct labels).
pub struct AuditKey {
    seal: Key,
    index: Key,
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// Derives the audit keys from the 32-byte audit key.
    pub fn new(master: &Key) -> Result<AuditKey, AuditError> {
        let derive = |label: &str| Zeroizing::new(master.blind(label, &[]).0);
        let key = |label: &str| {
            Key::from_slice(derive(label).as_ref()).map_err(|e| AuditError::Crypto(e.to_string()))
        };
        Ok(AuditKey {
            seal: key("radveil/audit/seal/v1")?,
            index: key("radveil/audit/patient-index/v1")?,
            seed: derive("radveil/audit/checkpoint-key/v1"),
        })
    }

    /// Parses an audit key file's text: 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &[u8]) -> Result<AuditKey, AuditError> {
        let key = Key::from_hex(text)
            .map_err(|_| AuditError::Crypto("an audit key is 64 hex digits".into()))?;
        AuditKey::new(&key)
    }

    /// The keyed blind index of a patient (Patient ID with its issuer), as kept beside each
    /// event that touches them.
    pub fn patient(&self, id: &str, issuer: Option<&str>) -> Handle {
        self.index.blind(
            "audit-patient",
            &[issuer.unwrap_or("").as_bytes(), id.as_bytes()],
        )
    }

    /// The checkpoint signer.
    pub fn signer(&self) -> Result<Signer, AuditError> {
        Ok(Signer::from_seed(ORIGIN, &self.seed).map_err(radveil_ledger::LedgerError::from)?)
    }

    /// The checkpoint verifier (public): hand it to whoever keeps checkpoints elsewhere.
    pub fn verifier(&self) -> Result<Verifier, AuditError> {
        Ok(self.signer()?.verifier())
    }
}

/// One line of the log: the sealed event and the handles of the patients it touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry format version.
    pub v: u32,
    /// Keyed blind indexes of the patients touched (hex), in the event's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// The event, JSON sealed with AES-256-GCM (`nonce || ciphertext || tag`), base64.
    pub sealed: String,
}

/// Associated data of entry `index`: the format, the origin, the position and the patient
/// handles, so a sealed event opens only where and as it was written.
fn aad(index: u64, patients: &[String]) -> Vec<u8> {
    let mut a = format!("radveil/audit/entry/v{FORMAT}\n{ORIGIN}\n{index}\n").into_bytes();
    for p in patients {
        a.extend_from_slice(p.as_bytes());
        a.push(b'\n');
    }
    a
}

/// Which events to read. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events touching this patient (their handle, [`AuditKey::patient`]).
    pub patient: Option<Handle>,
    /// Events by this user (token subject).
    pub user: Option<String>,
    /// Events at or after this time (RFC 3339 UTC, or a date `YYYY-MM-DD`).
    pub since: Option<String>,
    /// Events at or before this time (RFC 3339 UTC, or a date `YYYY-MM-DD`, which includes
    /// that whole day).
    pub until: Option<String>,
    /// Events of this action.
    pub action: Option<Action>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        if let Some(a) = self.action {
            if e.action != a {
                return false;
            }
        }
        if let Some(u) = &self.user {
            if e.actor.subject.as_deref() != Some(u.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.since {
            if e.time.as_str() < s.as_str() {
                return false;
            }
        }
        if let Some(u) = &self.until {
            let t = if u.len() == 10 {
                e.time.get(..10).unwrap_or(&e.time)
            } else {
                &e.time
            };
            if t > u.as_str() {
                return false;
            }
        }
        true
    }
}

/// An open audit log with its key.
pub struct AuditLog {
    log: Log<Entry>,
    key: AuditKey,
    /// Where each patient's events are (built on the first patient read, then kept up to
    /// date from the entries added since).
    patients: Option<PatientIndex>,
}

/// The places of each patient's entries in the log, by the patient's handle (hex, as the
/// entries name them): 16 bytes an entry and patient, so that a patient's events are read
/// with one seek each instead of a pass over the whole log.
struct PatientIndex {
    places: std::collections::HashMap<String, Vec<radveil_ledger::At>>,
    synced: radveil_ledger::Position,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({} entries)", self.log.size())
    }
}

impl AuditLog {
    /// Creates the audit log in `dir` (which must not hold one).
    pub fn init(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        let log = Log::init(dir, ORIGIN, &key.signer()?)?;
        Ok(AuditLog {
            log,
            key,
            patients: None,
        })
    }

    /// Opens the audit log in `dir`.
    pub fn open(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {
            log: Log::open(dir)?,
            key,
            patients: None,
        })
    }

    /// Opens the audit log in `dir`, creating it on first use.
    pub fn open_or_init(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        if dir.join("origin").exists() {
            AuditLog::open(dir, key)
        } else {
            AuditLog::init(dir, key)
        }
    }

    /// The key.
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// A torn last line (an append that crashed), if any.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.log.torn_tail()
    }

    /// Appends events durably (sealed, fsynced, under the log's exclusive lock); returns
    /// their indexes. Call [`AuditLog::checkpoint`] to cover them by a signed checkpoint.
    pub fn append(&mut self, events: &[Event]) -> Result<std::ops::Range<u64>, AuditError> {
        for e in events {
            if !is_event_time(&e.time) {
                return Err(AuditError::Invalid(
                    "the time is not RFC 3339 UTC to the second",
                ));
            }
        }
        let handles: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                e.patients
                    .iter()
                    .map(|p| self.key.patient(&p.id, p.issuer.as_deref()).hex())
                    .collect()
            })
            .collect();
        let plain: Vec<Zeroizing<Vec<u8>>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).map(Zeroizing::new))
            .collect::<Result<_, _>>()
            .map_err(|_| AuditError::Invalid("the event does not serialize"))?;
        let mut failure = None;
        let key = &self.key;
        let done = self.log.append_with(TornRepair::Refuse, |fresh| {
            // Sealed here, under the lock, where the entries' positions are known.
            let start = fresh.size();
            let mut out = Vec::with_capacity(events.len());
            for (i, (plain, patients)) in plain.iter().zip(&handles).enumerate() {
                let index = start.saturating_add(i as u64);
                let sealed = match key.seal.seal(plain, &aad(index, patients)) {
                    Ok(s) => s,
                    Err(e) => {
                        failure = Some(AuditError::Crypto(e.to_string()));
                        return Vec::new();
                    }
                };
                let entry = Entry {
                    v: FORMAT,
                    patients: patients.clone(),
                    sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
                };
                if serde_json::to_vec(&entry).map_or(usize::MAX, |l| l.len()) > MAX_ENTRY {
                    failure = Some(AuditError::Invalid(
                        "the event is too large for one log entry",
                    ));
                    return Vec::new();
                }
                out.push(entry);
            }
            out
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(done.range),
        }
    }

    /// Reads the events other processes (another gateway's writer, `radveil audit export`)
    /// appended since this log was last read, so that [`AuditLog::read`] and
    /// [`AuditLog::event`] see them. Costs what was added, not the whole log (the ledger's
    /// [`Log::refresh`]); an append does it anyway.
    pub fn refresh(&mut self) -> Result<(), AuditError> {
        Ok(self.log.refresh()?)
    }

    /// What this handle has read and written, to check the file against later without
    /// holding up appends (the ledger's [`radveil_ledger::Snapshot::check`]: an entry edited
    /// behind the open log, which its checkpoints do not endorse, is found there).
    pub fn snapshot(&self) -> radveil_ledger::Snapshot {
        self.log.snapshot()
    }

    /// Cuts a torn last line off the log (an append that crashed before it was
    /// acknowledged), keeping its bytes beside the log as evidence; returns where they were
    /// kept, or `None` when there was none. Appends are refused until this is done.
    pub fn repair_torn(&mut self) -> Result<Option<std::path::PathBuf>, AuditError> {
        let done = self.log.append_with(TornRepair::Truncate, |_| Vec::new())?;
        Ok(done.repaired.map(|(_, kept)| kept))
    }

    /// Signs a checkpoint of the whole log; returns the signed note (keep a copy apart from
    /// the log: [`verify`] against it detects a rollback).
    ///
    /// What is signed is the entries as this handle read and wrote them, brought up to date
    /// with what other processes appended (the ledger's [`Log::checkpoint_extending`]: the
    /// root costs O(log n), the file is not read again). The log must extend its latest
    /// checkpoint and what this handle has read: a log truncated, replaced or rewritten at
    /// the last entry read is refused; an entry edited in place before it is not looked at,
    /// and not endorsed either: the checkpoint commits to the entry as written, and
    /// [`verify`] names the edited one.
    pub fn checkpoint(&mut self) -> Result<String, AuditError> {
        let signer = self.key.signer()?;
        Ok(self.log.checkpoint_extending(&signer)?)
    }

    /// Opens entry `index` (its position is checked by the associated data). The log keeps
    /// no entry in memory: this reads the file up to it.
    pub fn event(&self, index: u64) -> Result<Event, AuditError> {
        for item in self.log.entries() {
            let (at, entry) = item?;
            if at.index == index {
                return self.open_entry(index, &entry);
            }
        }
        Err(AuditError::Corrupt {
            index,
            what: "no such entry",
        })
    }

    fn open_entry(&self, index: u64, entry: &Entry) -> Result<Event, AuditError> {
        open_entry(&self.key, index, entry)
    }

    /// A read-only view of the log as this handle has read and written it, to read on
    /// another thread ([`AuditReader::read`]) while this handle goes on appending: a read
    /// streams the whole file, and appends must not wait for it. Call
    /// [`AuditLog::refresh`] first for what other processes appended.
    pub fn reader(&self) -> AuditReader {
        AuditReader {
            snapshot: self.log.snapshot(),
            key: AuditKey {
                seal: self.key.seal.clone(),
                index: self.key.index.clone(),
                seed: self.key.seed.clone(),
            },
        }
    }

    /// The events that match `filter`, with their indexes, in log order. The entries are
    /// read from the log's file one at a time (none is kept in memory; each line is checked
    /// against the log's tree). A patient filter is answered from the handles: only that
    /// patient's events are opened.
    pub fn read(&self, filter: &Filter) -> Result<Vec<(u64, Event)>, AuditError> {
        read_entries(&self.key, self.log.entries(), filter)
    }

    /// The places of `patient`'s entries among those this handle has read and written, in
    /// log order, for [`AuditReader::read_at`]. The first call reads the whole log to index
    /// every patient; later ones read only the entries added since (the whole log again
    /// when its file was read again whole).
    pub fn places_of(&mut self, patient: &Handle) -> Result<Vec<radveil_ledger::At>, AuditError> {
        let mut index = self.patients.take().unwrap_or_else(|| PatientIndex {
            places: std::collections::HashMap::new(),
            synced: radveil_ledger::Position::start(),
        });
        let entries = self.log.entries_since(&index.synced);
        if entries.restarted() {
            index.places.clear();
        }
        for item in entries {
            let (at, entry) = item?;
            for p in entry.patients {
                index.places.entry(p).or_default().push(at);
            }
        }
        index.synced = self.log.position();
        let found = index
            .places
            .get(&patient.hex())
            .cloned()
            .unwrap_or_default();
        self.patients = Some(index);
        Ok(found)
    }

    /// What the open log holds in memory of its entries, in hashes (the ledger's
    /// [`Log::held`]): bounded whatever the number of events.
    pub fn held(&self) -> usize {
        self.log.held()
    }
}

/// The audit log as an open handle had read and written it ([`AuditLog::reader`]): reads
/// without the handle (and without the log's lock), so that they can run beside appends.
/// Each entry read is checked against the handle's tree and opened under the key, as
/// [`AuditLog::read`] does: an edited entry is reported the same way.
#[derive(Debug)]
pub struct AuditReader {
    snapshot: radveil_ledger::Snapshot,
    key: AuditKey,
}

impl AuditReader {
    /// The key (for a patient filter's handle: [`AuditKey::patient`]).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Number of entries the view covers.
    pub fn size(&self) -> u64 {
        self.snapshot.size()
    }

    /// The events that match `filter`, with their indexes, in log order: what
    /// [`AuditLog::read`] gives on the handle the view was taken from.
    pub fn read(&self, filter: &Filter) -> Result<Vec<(u64, Event)>, AuditError> {
        read_entries(&self.key, self.snapshot.entries(), filter)
    }

    /// The events at `places` ([`AuditLog::places_of`] a patient, taken with this view)
    /// that match `filter`: one seek and one line each. Each entry is opened under the key
    /// at its index, so a line edited, moved or replaced there fails as
    /// [`AuditError::Tampered`]; one removed is found by the tree checks of full reads,
    /// verification and the writer's background recheck.
    pub fn read_at(
        &self,
        places: &[radveil_ledger::At],
        filter: &Filter,
    ) -> Result<Vec<(u64, Event)>, AuditError> {
        let wanted = filter.patient.map(|h| h.hex());
        let mut out = Vec::new();
        for at in places {
            if at.index >= self.snapshot.size() {
                continue;
            }
            let entry: Entry = self.snapshot.entry_at(*at)?;
            if let Some(h) = &wanted {
                if !entry.patients.iter().any(|p| p == h) {
                    return Err(AuditError::Corrupt {
                        index: at.index,
                        what: "the entry indexed for a patient does not name them",
                    });
                }
            }
            let e = open_entry(&self.key, at.index, &entry)?;
            if filter.matches(&e) {
                out.push((at.index, e));
            }
        }
        Ok(out)
    }
}

/// The events of `entries` that match `filter` (see [`AuditLog::read`]).
fn read_entries(
    key: &AuditKey,
    entries: impl Iterator<Item = Result<(radveil_ledger::At, Entry), LedgerError>>,
    filter: &Filter,
) -> Result<Vec<(u64, Event)>, AuditError> {
    let wanted = filter.patient.map(|h| h.hex());
    let mut out = Vec::new();
    for item in entries {
        let (at, entry) = item?;
        if let Some(h) = &wanted {
            if !entry.patients.iter().any(|p| p == h) {
                continue;
            }
        }
        let e = open_entry(key, at.index, &entry)?;
        if filter.matches(&e) {
            out.push((at.index, e));
        }
    }
    Ok(out)
}

/// Opens entry `index` under `key` (its position is checked by the associated data).
fn open_entry(key: &AuditKey, index: u64, entry: &Entry) -> Result<Event, AuditError> {
    if entry.v != FORMAT {
        return Err(AuditError::Corrupt {
            index,
            what: "unknown entry format",
        });
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&entry.sealed)
        .map_err(|_| AuditError::Tampered { index })?;
    let plain = Zeroizing::new(
        key.seal
            .open(&sealed, &aad(index, &entry.patients))
            .ok_or(AuditError::Tampered { index })?,
    );
    let event: Event = serde_json::from_slice(&plain).map_err(|_| AuditError::Corrupt {
        index,
        what: "sealed content is not an event",
    })?;
    let expected: Vec<String> = event
        .patients
        .iter()
        .map(|p| key.patient(&p.id, p.issuer.as_deref()).hex())
        .collect();
    if expected != entry.patients {
        return Err(AuditError::Corrupt {
            index,
            what: "patient handles differ from the event's patients",
        });
    }
    Ok(event)
}

/// What [`verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the log, every one of which opens at its position.
    pub entries: u64,
    /// The size of the latest checkpoint, which verifies and which the entries extend.
    pub checkpointed: u64,
    /// The size of the trusted checkpoint checked, when one was given.
    pub trusted: Option<u64>,
    /// A torn last line (an append that crashed before it was acknowledged).
    pub torn: Option<TornTail>,
}

/// Verifies the audit log in `dir` with its key: the latest checkpoint is signed by the
/// audit key's checkpoint key and the entries still produce its root (a consistency proof to
/// the current tree: an edited, deleted, reordered or truncated entry breaks it); a
/// `trusted` checkpoint kept elsewhere must verify too and not be newer than the latest
/// (else the log was rolled back); and every entry must open under the audit key at its
/// position (an edit or a move after the latest checkpoint is caught too).
///
/// When entries a checkpoint covers no longer give its root and one of them no longer
/// opens (an edited entry, which the checkpoint, signed over the entry as written, does not
/// endorse), that entry is named ([`AuditError::Tampered`]) rather than the checkpoint.
pub fn verify(dir: &Path, key: AuditKey, trusted: Option<&str>) -> Result<Verified, AuditError> {
    let log = AuditLog::open(dir, key)?;
    let verifier = log.key.verifier()?;
    if log.log.stored_verifier()? != verifier {
        return Err(AuditError::ForeignVerifier);
    }
    let checked = log
        .log
        .verify_latest(&verifier, trusted)
        .and_then(|latest| {
            let trusted = match trusted {
                Some(note) => Some(log.log.verify_against(note, &verifier)?.size),
                None => None,
            };
            Ok((latest, trusted))
        });
    let opened = |log: &AuditLog| -> Result<(), AuditError> {
        for item in log.log.entries() {
            let (at, entry) = item?;
            log.open_entry(at.index, &entry)?;
        }
        Ok(())
    };
    let (latest, trusted) = match checked {
        Ok(checked) => checked,
        // Rewritten within the checkpoint (not removed): an entry that no longer opens says
        // which.
        Err(LedgerError::Inconsistent { size, what }) if size <= log.size() => {
            opened(&log)?;
            return Err(LedgerError::Inconsistent { size, what }.into());
        }
        Err(e) => return Err(e.into()),
    };
    opened(&log)?;
    Ok(Verified {
        entries: log.size(),
        checkpointed: latest.size,
        trusted,
        torn: log.torn_tail(),
    })
}

#[cfg(test)]
mod tests;
