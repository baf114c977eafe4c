//! `radveil-audit`: the gateway's audit trail (issue 14, item 6).
//!
//! Every store, query, retrieve, delete, token refusal, break-glass access and audit read is
//! one [`Event`]: who (subject, client, role, source address), what (the patients and their
//! studies), when, the outcome, the purpose of use and the break-glass reason.
//!
//! - **Confidential**: each event is serialized as JSON and sealed (AES-256-GCM, through
//!   `radveil-store`'s [`Key`](radveil_store::Key)) under a key derived from the audit key;
//!   beside it, only keyed blind indexes ([`Handle`](radveil_store::Handle)s) of the patients
//!   it touches, so "events about this patient" needs no identifier in plaintext.
//! - **Tamper-evident**: the sealed events are the leaves of an RFC 9162 Merkle log with
//!   signed checkpoints, `radveil-ledger`'s [`Log`](radveil_ledger::Log) (its files, locking,
//!   fsynced appends and torn-line handling). A sealed event's associated data names its
//!   position and its patient handles, so an event edited, moved, deleted from the middle or
//!   given another patient's handle no longer opens; truncation and rewrites are caught by
//!   the checkpoints' consistency proofs, a rollback by a checkpoint kept elsewhere
//!   ([`verify`]).
//! - **Exports**: FHIR R4 AuditEvent following IHE BALP ([`fhir`]), DICOM PS3.15 A.5 audit
//!   messages ([`dicom`]), RFC 5424 syslog lines carrying them ([`syslog`]); and a rendering
//!   in plain words for the patient ([`words`]). An [`Export`] reads events by filter, in
//!   any of these formats, and records the read in the trail before handing anything out
//!   ([`export`], what `radveil audit export` runs).
//!
//! Layout of a gateway data directory as far as the audit trail goes: `audit/` (the log:
//! `origin`, `entries.jsonl`, `checkpoint`, `checkpoints/<size>`, `verifier.pub`) and
//! `keys/audit-key` (64 hex digits, mode 0600), kept with the key store apart from the data
//! and its backups. Deleting a patient does not shred their audit events: the trail must
//! outlive what it records.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dicom;
pub mod event;
pub mod export;
pub mod fhir;
pub mod log;
pub mod syslog;
pub mod words;

#[cfg(test)]
mod sample;

pub use event::{Action, Actor, Event, Outcome, PatientAccess, PurposeOfUse, Role, StudyRef};
pub use export::Export;
pub use log::{verify, AuditKey, AuditLog, Filter, Verified, AUDIT_DIR, AUDIT_KEY_FILE};

/// Why an audit operation failed. Messages name entries by index and files by path, never
/// a value from an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log itself (files, checkpoints, consistency) failed; see the ledger's error.
    #[error(transparent)]
    Log(#[from] radveil_ledger::LedgerError),
    /// Key derivation or sealing failed.
    #[error("encryption: {0}")]
    Crypto(String),
    /// An entry does not open under the audit key with its position: it was edited, moved,
    /// or entries before it were removed or reordered (or the key is not this log's).
    #[error("entry {index} does not open under the audit key at its position: it was edited, moved, or entries before it were removed or reordered")]
    Tampered {
        /// The entry's index.
        index: u64,
    },
    /// An entry opens but its content is not an event, or its patient handles differ from
    /// the patients it names.
    #[error("entry {index}: {what}")]
    Corrupt {
        /// The entry's index.
        index: u64,
        /// What is wrong (no value from the event).
        what: &'static str,
    },
    /// The verifier key stored beside the log is not the one the audit key gives.
    #[error("the log's verifier.pub is not the audit key's checkpoint key: replaced?")]
    ForeignVerifier,
    /// An event that cannot be recorded (bad time, too large).
    #[error("event not recorded: {0}")]
    Invalid(&'static str),
    /// An export's own audit read could not be recorded, so nothing of it was given out
    /// ([`Export::read`]).
    #[error("recording this export in the audit trail")]
    NotRecorded(#[source] Box<AuditError>),
}
