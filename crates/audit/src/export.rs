//! Reading the audit trail out, as `radveil audit export` and `radveil audit verify` do:
//! an [`Export`] reads the events a filter selects, records that read in the trail (an
//! [`Action::AuditRead`] event, checkpointed) before it hands any of them out, and renders
//! them in one of the [`Format`]s; [`Verified`]'s methods put a verification in words.
//!
//! The caller only parses its arguments, finds the log and its key, and prints the lines.

use crate::event::{Action, Actor, Event, Outcome, PatientAccess, PurposeOfUse};
use crate::fhir::Source;
use crate::log::{AuditKey, AuditLog, Filter, Verified};
use crate::AuditError;

/// The formats an export renders events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FHIR R4 AuditEvent resources following IHE BALP, one JSON resource a line (NDJSON),
    /// one per patient touched ([`crate::fhir`]).
    Fhir,
    /// DICOM PS3.15 A.5 audit messages (XML), one a line ([`crate::dicom`]).
    Dicom,
    /// RFC 5424 syslog lines carrying the A.5 messages ([`crate::syslog`]).
    Syslog,
    /// One patient's access log in plain words ([`crate::words`]); needs a patient.
    Text,
}

impl Format {
    /// Whether the format tells one patient what happened, and so needs one.
    pub fn needs_patient(self) -> bool {
        self == Format::Text
    }
}

/// What an export reads: the events of one patient, one user, a time span, one action, or
/// all of them (fields left empty match everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The patient's Patient ID, when only their events are wanted.
    pub patient: Option<String>,
    /// Their Issuer of Patient ID, where the site uses it.
    pub issuer: Option<String>,
    /// Only events by this user (token subject).
    pub user: Option<String>,
    /// Only events at or after this time (RFC 3339 UTC or `YYYY-MM-DD`).
    pub since: Option<String>,
    /// Only events at or before this time (RFC 3339 UTC, or `YYYY-MM-DD` for the whole
    /// day).
    pub until: Option<String>,
    /// Only events of this action.
    pub action: Option<Action>,
}

impl Export {
    /// The log filter this export reads with (the patient as their keyed handle).
    pub fn filter(&self, key: &AuditKey) -> Filter {
        Filter {
            patient: self
                .patient
                .as_deref()
                .map(|p| key.patient(p, self.issuer.as_deref())),
            user: self.user.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            action: self.action,
        }
    }

    /// The filter in words, kept as the query of the export's own audit event: `all`, or
    /// `patient&user=…&since=…&until=…&action=…` for the fields given. The patient is
    /// named only as `patient`: who they are is in the event's patients, sealed.
    pub fn words(&self) -> String {
        let mut parts = Vec::new();
        if self.patient.is_some() {
            parts.push("patient".to_string());
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={u}"));
        }
        if let Some(s) = &self.since {
            parts.push(format!("since={s}"));
        }
        if let Some(u) = &self.until {
            parts.push(format!("until={u}"));
        }
        if let Some(a) = self.action {
            parts.push(format!("action={a}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join("&")
        }
    }

    /// The event recording this export, made now by `reader`: an audit read for compliance,
    /// with the filter in words and the patient read about.
    pub fn read_event(&self, reader: Actor) -> Event {
        let mut read = Event::now(Action::AuditRead, Outcome::Success, reader);
        read.purpose = Some(PurposeOfUse::Compliance);
        read.query = Some(self.words());
        if let Some(id) = &self.patient {
            read.patients = vec![PatientAccess {
                id: id.clone(),
                issuer: self.issuer.clone(),
                ..PatientAccess::default()
            }];
        }
        read
    }

    /// Reads the matching events, in log order with their indexes, and records the read:
    /// the export's event ([`Export::read_event`]) is appended and a checkpoint signed
    /// before the events are returned, so nothing is read out of the trail unrecorded.
    /// Fails, returning nothing, when an event does not open or the read cannot be
    /// recorded ([`AuditError::NotRecorded`]) or checkpointed.
    pub fn read(&self, log: &mut AuditLog, reader: Actor) -> Result<Vec<(u64, Event)>, AuditError> {
        let events = log.read(&self.filter(log.key()))?;
        log.append(&[self.read_event(reader)])
            .map_err(|e| AuditError::NotRecorded(Box::new(e)))?;
        log.checkpoint()?;
        Ok(events)
    }

    /// Event `e` (at `index` in the log) in `format`, as the lines to print: for FHIR, one
    /// AuditEvent per patient touched (only this export's patient, when it has one); for
    /// the plain words, the patient's sentence, or nothing when the event does not concern
    /// them (or the export has no patient). `source` names the gateway, `host` the machine
    /// in syslog lines.
    pub fn render(
        &self,
        format: Format,
        index: u64,
        e: &Event,
        source: &Source,
        host: &str,
    ) -> Vec<String> {
        match format {
            Format::Fhir => {
                let mine = |p: &PatientAccess| {
                    self.patient.as_deref() == Some(p.id.as_str()) && p.issuer == self.issuer
                };
                let only: Option<&dyn Fn(&PatientAccess) -> bool> = self
                    .patient
                    .is_some()
                    .then_some(&mine as &dyn Fn(&PatientAccess) -> bool);
                crate::fhir::audit_events(e, index, source, only)
                    .into_iter()
                    .map(|r| r.to_string())
                    .collect()
            }
            Format::Dicom => vec![crate::dicom::message(e, source)],
            Format::Syslog => vec![crate::syslog::line(e, source, host)],
            Format::Text => self
                .patient
                .as_deref()
                .and_then(|id| crate::words::for_patient(e, id, self.issuer.as_deref()))
                .into_iter()
                .collect(),
        }
    }
}

impl Verified {
    /// What was verified, in one line: the entries, the latest checkpoint and, when one
    /// was given, the trusted checkpoint the log extends.
    pub fn summary(&self) -> String {
        format!(
            "audit trail verified: {} entries open at their places; latest checkpoint (size {}) signed and consistent{}",
            self.entries,
            self.checkpointed,
            self.trusted
                .map(|t| format!("; trusted checkpoint (size {t}) extended"))
                .unwrap_or_default()
        )
    }

    /// The entries after the latest checkpoint, in words, when there are any (they open
    /// at their places, but no signed checkpoint covers them yet).
    pub fn uncovered(&self) -> Option<String> {
        let unchecked = self.entries.saturating_sub(self.checkpointed);
        (unchecked > 0).then(|| {
            format!("{unchecked} entries after the latest checkpoint are not yet covered by one")
        })
    }

    /// The torn last line, in words, when there is one (an append that crashed before it
    /// was acknowledged: a warning, not a failure).
    pub fn torn_warning(&self) -> Option<String> {
        self.torn.map(|t| {
            format!(
                "a torn last line ({} bytes at offset {}): an append crashed before it was acknowledged",
                t.len, t.offset
            )
        })
    }
}

#[cfg(test)]
mod tests;
