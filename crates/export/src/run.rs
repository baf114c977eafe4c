//! One export: select, decide consent per patient and study, de-identify what is allowed,
//! record lineage and audit events, count what was left out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use radveil_audit::{Action, Actor, AuditLog, Event, Outcome as AuditOutcome, PatientAccess};
use radveil_audit::{PurposeOfUse, StudyRef};
use radveil_deid::VisualFeatures;
use radveil_part10::DEFAULT_WAIT;
use radveil_pipeline::sealed::Sealing;
use radveil_pipeline::{Outcome, Run};
use radveil_standard::tags;
use radveil_store::{Row, Store};
use serde::{Deserialize, Serialize};

use crate::lineage::{DeidUids, ExportRecord, Item, Lineage, LineageError};
use crate::query::Query;
use crate::select::{self, Study};
use crate::{purpose_words, ConsentCheck, Counts, Purpose};

/// Lineage rows written in one transaction at most while the export runs.
const LINEAGE_BATCH: usize = 256;
/// Studies named in one audit event at most (an event line is bounded; a patient with more
/// studies in one export gets several events).
const STUDIES_PER_EVENT: usize = 100;
/// Bytes a sealed object adds to the instance (magic, nonce, tag): reserved with it.
pub(crate) const SEALED_OVERHEAD: u64 = 64;

/// Why an export stopped. Never names a patient or holds a value of theirs.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] radveil_store::StoreError),
    /// Consent could not be decided: nothing is exported without a decision.
    #[error("deciding consent: {0}")]
    Consent(String),
    /// The lineage could not be recorded.
    #[error(transparent)]
    Lineage(#[from] LineageError),
    /// The audit events could not be appended.
    #[error("recording the export in the audit trail: {0}")]
    Audit(#[from] radveil_audit::AuditError),
}

/// What an export is, besides where it reads and writes.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    /// What the data is for.
    pub purpose: Purpose,
    /// Who receives it (a name, shown to patients in their access log).
    pub recipient: &'a str,
    /// The project it is for, when named.
    pub project: Option<&'a str>,
    /// SHA-256 (hex) of the de-identification profile and options.
    pub profile_digest: &'a str,
    /// Worker threads.
    pub jobs: usize,
    /// Who runs it (for the audit trail).
    pub actor: &'a Actor,
    /// Outputs sealed to the recipients (CMS EnvelopedData) instead of written in the clear.
    pub sealing: Option<Sealing<'a>>,
    /// The profile asks for Clean Recognizable Visual Features: the CT and MR images of each
    /// series are defaced together as the volumes they make ([`crate::volume`]), a volume
    /// that shows a face and cannot be defaced held back.
    pub clean_visual_features: bool,
}

/// Where an export's audit events go: the audit log itself (`radveil export`, beside a
/// running gateway), or the gateway's own audit writer (an export started in the portal).
pub trait AuditSink {
    /// Appends `events` durably, covered by a signed checkpoint where the sink signs them
    /// itself; the export is reported done only after this returns.
    fn append_durably(&mut self, events: &[Event]) -> Result<(), radveil_audit::AuditError>;
}

impl AuditSink for AuditLog {
    fn append_durably(&mut self, events: &[Event]) -> Result<(), radveil_audit::AuditError> {
        self.append(events)?;
        self.checkpoint()?;
        Ok(())
    }
}

/// Where an export reads and writes.
pub struct Places<'a> {
    /// The gateway's store (read only).
    pub store: &'a Store,
    /// The runtime the store's reads run on.
    pub runtime: &'a tokio::runtime::Handle,
    /// Consent, decided at export time.
    pub consents: &'a dyn ConsentCheck,
    /// The lineage database.
    pub lineage: &'a mut Lineage,
    /// The gateway's audit trail.
    pub audit: &'a mut dyn AuditSink,
    /// The de-identification run (profile, key, memory budget, output folder).
    pub run: &'a Run,
}

/// One reason instances were held back or failed, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The reason, as the pipeline words it (tags and positions, never values).
    pub reason: String,
    /// Instances.
    pub count: u64,
}

/// What an export did: the report (JSON) and the summary line. No patient is named.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The export's id.
    pub export: String,
    /// When it started, RFC 3339 UTC.
    pub time: String,
    /// Who receives it.
    pub recipient: String,
    /// The project, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// What it is for.
    pub purpose: Purpose,
    /// The profile's digest.
    pub profile: String,
    /// Whether outputs are encrypted to recipients.
    pub encrypted: bool,
    /// The counts.
    pub counts: Counts,
    /// Why instances were held back.
    pub held_back: Vec<Reason>,
    /// Why instances failed.
    pub failures: Vec<Reason>,
}

impl Report {
    /// The summary line.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "export {}: {} patients, {} studies, {} instances exported; left out: {} patients without consent, {} who withdrew or refused ({} studies); {} instances held back, {} failed",
            self.export,
            c.patients,
            c.studies,
            c.instances,
            c.left_out_no_consent,
            c.left_out_withdrawn,
            c.studies_left_out,
            c.held_back,
            c.failed
        )
    }
}

/// What became of one instance.
pub(crate) enum Done {
    Written(DeidUids),
    Held(String),
    Failed(String),
}

/// One instance to export: its study (index into the selection) and row.
struct Job<'s> {
    study: usize,
    row: &'s Row,
    consent: u64,
}

/// A piece of work for one worker: one instance, or the CT or MR instances of one series
/// (defaced together under Clean Recognizable Visual Features). Indexes into the jobs.
enum Unit {
    One(usize),
    Series(Vec<usize>),
}

/// Opens (decrypts) one instance into memory; the caller has reserved its bytes.
/// (Not wiped after use: the pipeline's own buffers of the same images are not either, and
/// wiping half a megabyte a byte at a time costs a tenth of an export.)
pub(crate) fn open(shared: &Shared<'_>, row: &Row) -> Result<Vec<u8>, Done> {
    let _entered = shared.runtime.enter();
    match shared.store.open_row_here(row) {
        Ok(b) => Ok(b),
        // Names the object by its handle only.
        Err(e) => Err(Done::Failed(format!(
            "the stored instance does not open: {e}"
        ))),
    }
}

/// De-identifies one instance held in memory (counted in the budget by the caller) through
/// the run: only de-identified bytes are written (sealed first when asked).
pub(crate) fn deidentify(
    shared: &Shared<'_>,
    settings: &Settings<'_>,
    bytes: &[u8],
    visual: VisualFeatures,
) -> Done {
    let (outcome, identity) = shared.run.deidentify_with(bytes, visual, settings.sealing);
    match (outcome, identity) {
        (Outcome::Written { .. }, Some(id)) => Done::Written(DeidUids {
            study: id.study_uid,
            series: id.series_uid,
            instance: id.sop_instance_uid,
        }),
        (Outcome::Held(why), _) => Done::Held(why),
        (Outcome::Failed(why), _) | (Outcome::Skipped(why), _) => Done::Failed(why),
        (Outcome::Duplicate, _) => Done::Failed(radveil_pipeline::DUPLICATE_REASON.into()),
        (Outcome::Written { .. } | Outcome::Kept { .. }, _) => {
            Done::Failed("internal error: an output without its identity".into())
        }
    }
}

/// Opens one instance into memory (its bytes reserved from the run's budget first) and
/// de-identifies it.
fn one(shared: &Shared<'_>, settings: &Settings<'_>, row: &Row) -> Done {
    let budget = shared.run.budget();
    let _grant = match budget.reserve(row.size.saturating_add(SEALED_OVERHEAD), DEFAULT_WAIT) {
        Ok(g) => g,
        Err(e) => return Done::Failed(e.to_string()),
    };
    match open(shared, row) {
        Ok(bytes) => deidentify(shared, settings, &bytes, VisualFeatures::Untouched),
        Err(d) => d,
    }
}

/// A fresh export id: 16 random bytes, hex.
fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // Unique enough without randomness: the time and the process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ u128::from(std::process::id())).to_be_bytes();
    }
    radveil_store::Handle::hex_of(&b)
}

/// The audit detail: "Project X (AI training), sent to Acme Labs", or "Acme Labs (research)".
pub fn detail(recipient: &str, project: Option<&str>, purpose: Purpose) -> String {
    match project {
        Some(p) => format!("{p} ({}), sent to {recipient}", purpose_words(purpose)),
        None => format!("{recipient} ({})", purpose_words(purpose)),
    }
}

fn reasons(map: BTreeMap<String, u64>) -> Vec<Reason> {
    map.into_iter()
        .map(|(reason, count)| Reason { reason, count })
        .collect()
}

/// What the consent decisions left to export.
struct Allowed<'s> {
    jobs: Vec<Job<'s>>,
    units: Vec<Unit>,
    counts: Counts,
}

/// Decides consent for every selected study, patient by patient.
fn decide<'s>(
    studies: &'s [Study],
    consents: &dyn ConsentCheck,
    purpose: Purpose,
    clean_visual_features: bool,
) -> Result<Allowed<'s>, ExportError> {
    let mut counts = Counts::default();
    let mut jobs = Vec::new();
    let mut units = Vec::new();
    let mut at = 0;
    while at < studies.len() {
        let patient = studies[at].patient;
        let end = studies[at..]
            .iter()
            .position(|s| s.patient != patient)
            .map_or(studies.len(), |n| at + n);
        let (mut allowed, mut recorded_no) = (false, false);
        for (i, s) in studies.iter().enumerate().take(end).skip(at) {
            let d = consents
                .decide(&patient, purpose, s.date())
                .map_err(ExportError::Consent)?;
            if d.permitted {
                allowed = true;
                // CT and MR images by series, to be defaced as the volumes they make.
                let mut volumes: BTreeMap<radveil_store::Handle, Vec<usize>> = BTreeMap::new();
                for (row, m) in s.rows.iter().zip(&s.modality) {
                    let at = jobs.len();
                    jobs.push(Job {
                        study: i,
                        row,
                        consent: d.version,
                    });
                    if clean_visual_features && matches!(m.as_str(), "CT" | "MR") {
                        volumes.entry(row.series).or_default().push(at);
                    } else {
                        units.push(Unit::One(at));
                    }
                }
                units.extend(volumes.into_values().map(Unit::Series));
            } else {
                counts.studies_left_out = counts.studies_left_out.saturating_add(1);
                recorded_no |= d.version > 0;
            }
        }
        if !allowed {
            if recorded_no {
                counts.left_out_withdrawn = counts.left_out_withdrawn.saturating_add(1);
            } else {
                counts.left_out_no_consent = counts.left_out_no_consent.saturating_add(1);
            }
        }
        at = end;
    }
    Ok(Allowed {
        jobs,
        units,
        counts,
    })
}

/// What the workers share.
pub(crate) struct Shared<'a> {
    pub(crate) store: &'a Store,
    pub(crate) runtime: &'a tokio::runtime::Handle,
    pub(crate) run: &'a Run,
}

/// Runs one export: see the crate's documentation. Returns its report; an error after
/// files were written leaves the export recorded as incomplete in the lineage.
pub fn export(
    places: Places<'_>,
    query: &Query,
    settings: &Settings<'_>,
) -> Result<Report, ExportError> {
    let Places {
        store,
        runtime,
        consents,
        lineage,
        audit,
        run,
    } = places;
    let selected = select::studies(store, runtime, query)?;
    let Allowed {
        jobs,
        units,
        mut counts,
    } = decide(
        &selected.studies,
        consents,
        settings.purpose,
        settings.clean_visual_features,
    )?;
    counts.failed = selected.unreadable;
    let mut record = ExportRecord {
        id: new_id(),
        time: radveil_ledger::rfc3339_now(),
        recipient: settings.recipient.to_string(),
        project: settings.project.map(str::to_string),
        purpose: settings.purpose,
        profile: settings.profile_digest.to_string(),
        counts: counts.clone(),
        complete: false,
    };
    lineage.begin(&record)?;
    // Instances exported per study (index into the selection).
    let mut per_study: BTreeMap<usize, u32> = BTreeMap::new();
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let shared = Shared {
        store,
        runtime,
        run,
    };
    let next = AtomicUsize::new(0);
    // Set when the lineage cannot be written: no more instances go out unrecorded.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let workers = settings.jobs.clamp(1, units.len().max(1));
    let (tx, rx) = mpsc::sync_channel::<(usize, Done)>(workers.saturating_mul(4));
    let recorded: Result<(), LineageError> = std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, jobs, units, shared, stop) = (&next, &jobs, &units, &shared, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let u = next.fetch_add(1, Ordering::Relaxed);
                let Some(unit) = units.get(u) else { break };
                let members: &[usize] = match unit {
                    Unit::One(i) => std::slice::from_ref(i),
                    Unit::Series(v) => v,
                };
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match unit {
                    Unit::One(i) => vec![one(shared, settings, jobs[*i].row)],
                    Unit::Series(v) => {
                        let rows: Vec<&Row> = v.iter().map(|&i| jobs[i].row).collect();
                        crate::volume::series(shared, settings, &rows)
                    }
                }))
                .unwrap_or_default();
                let mut done = done.into_iter();
                for &i in members {
                    let d = done.next().unwrap_or_else(|| {
                        Done::Failed("internal error: the instance's work panicked".into())
                    });
                    if tx.send((i, d)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut batch: Vec<Item> = Vec::with_capacity(LINEAGE_BATCH);
        let mut result = Ok(());
        for (i, done) in rx {
            let job = &jobs[i];
            match done {
                Done::Written(uids) => {
                    let n = per_study.entry(job.study).or_default();
                    *n = n.saturating_add(1);
                    batch.push(Item {
                        instance: job.row.instance,
                        patient: job.row.patient,
                        content: job.row.content,
                        consent: job.consent,
                        uids,
                    });
                    if batch.len() >= LINEAGE_BATCH && result.is_ok() {
                        result = lineage.add(&record.id, &batch);
                        batch.clear();
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                Done::Held(why) => *held.entry(why).or_default() += 1,
                Done::Failed(why) => *failed.entry(why).or_default() += 1,
            }
        }
        if result.is_ok() && !batch.is_empty() {
            result = lineage.add(&record.id, &batch);
        }
        result
    });
    recorded?;
    counts.held_back = held.values().fold(0u64, |a, n| a.saturating_add(*n));
    counts.failed = failed
        .values()
        .fold(counts.failed, |a, n| a.saturating_add(*n));
    // Patients and studies that went out, and one audit event per patient.
    let mut events = Vec::new();
    let mut patients: Vec<&radveil_store::Handle> = Vec::new();
    let event_detail = detail(settings.recipient, settings.project, settings.purpose);
    let mut by_patient: BTreeMap<radveil_store::Handle, Vec<(usize, u32)>> = BTreeMap::new();
    for (&study, &n) in &per_study {
        counts.studies = counts.studies.saturating_add(1);
        counts.instances = counts.instances.saturating_add(u64::from(n));
        by_patient
            .entry(selected.studies[study].patient)
            .or_default()
            .push((study, n));
    }
    for (patient, studies) in &by_patient {
        patients.push(patient);
        for chunk in studies.chunks(STUDIES_PER_EVENT) {
            events.push(export_event(
                settings,
                &event_detail,
                &selected.studies,
                chunk,
            ));
        }
    }
    counts.patients = patients.len() as u64;
    // The patients' access logs show the export before it is reported done.
    if !events.is_empty() {
        audit.append_durably(&events)?;
    }
    record.counts = counts.clone();
    record.complete = true;
    lineage.finish(&record)?;
    Ok(Report {
        export: record.id,
        time: record.time,
        recipient: record.recipient,
        project: record.project,
        purpose: record.purpose,
        profile: record.profile,
        encrypted: settings.sealing.is_some(),
        counts,
        held_back: reasons(held),
        failures: reasons(failed),
    })
}

/// The audit event of one patient's studies (`chunk`: indexes into `studies` with the
/// instances exported of each) going out.
fn export_event(
    settings: &Settings<'_>,
    detail: &str,
    studies: &[Study],
    chunk: &[(usize, u32)],
) -> Event {
    let first = &studies[chunk[0].0];
    let mut e = Event::now(
        Action::Export,
        AuditOutcome::Success,
        settings.actor.clone(),
    );
    e.purpose = match settings.purpose {
        Purpose::Research | Purpose::AiTraining => Some(PurposeOfUse::Research),
        Purpose::Commercial => None,
    };
    e.detail = Some(detail.to_string());
    e.patients = vec![PatientAccess {
        id: first.patient_id().to_string(),
        issuer: first.issuer().map(str::to_string),
        name: None,
        studies: chunk
            .iter()
            .map(|&(i, n)| {
                let s = &studies[i];
                let modalities = s.attrs.get(tags::MODALITIES_IN_STUDY);
                StudyRef {
                    uid: s
                        .attrs
                        .first(tags::STUDY_INSTANCE_UID)
                        .unwrap_or("")
                        .to_string(),
                    instances: Some(n),
                    modality: (!modalities.is_empty()).then(|| modalities.join("/")),
                    date: s.date().map(str::to_string),
                    description: s.attrs.first(tags::STUDY_DESCRIPTION).map(str::to_string),
                    ..StudyRef::default()
                }
            })
            .collect(),
    }];
    e
}
