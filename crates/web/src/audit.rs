//! The audit trail of the gateway: one `radveil-audit` event per request on the DICOMweb
//! routes and the audit routes, written by a middleware ([`record`]) around access control,
//! so that handlers only say what they touched ([`What`], a response extension).
//!
//! **No unaudited access.** The event of a request is appended (sealed, fsynced) before its
//! response leaves the server. When the audit log cannot be written, the response is
//! replaced by a 500: data is never released, and a store or deletion is never
//! acknowledged, without its event on disk.
//!
//! Each append takes the log's lock, reads what other processes added since and fsyncs (the
//! ledger's appends are safe against other writers), so the events of concurrent requests
//! go through a channel to one writer thread ([`Auditor`]) that appends whatever has queued
//! up as one batch with one fsync, and only then lets each waiting response go.
//!
//! A read streams the whole log's file (each line hashed, each event opened): seconds on a
//! long log. It is never done by the writer, which every response waits on: the writer only
//! takes in what other processes appended (`radveil audit export`'s own event, at the cost
//! of those lines) and hands out a read-only view of the log as it stands
//! ([`radveil_audit::log::AuditReader`]), which is read on a blocking task, at most
//! [`MAX_READS`] at once (further reads wait their turn), while appends go on. The writer signs a checkpoint when it has been idle for a
//! second, after every [`CHECKPOINT_EVERY`] events, and when the server stops.
//!
//! Logs name requests by action and outcome only; events hold identifying data and are
//! only ever written sealed.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use radveil_access::{Compartment, Role as AccessRole};
use radveil_audit::log::AuditReader;
use radveil_audit::{
    Action, Actor, AuditLog, Event, Filter, Outcome, PatientAccess, PurposeOfUse, Role, StudyRef,
};
use radveil_store::{Handle, Level};

use crate::app::AppState;
use crate::auth::Caller;
use crate::scope::Scope;

/// Events between two signed checkpoints at most.
pub const CHECKPOINT_EVERY: u64 = 1000;
/// Most events appended as one batch.
const MAX_BATCH: usize = 512;
/// Audit reads running at once at most (each streams the whole log); more wait.
pub const MAX_READS: usize = 2;
/// How often, at most, an idle writer has the log's file checked against what it read and
/// wrote ([`recheck`]).
const RECHECK_EVERY: Duration = Duration::from_secs(600);

/// Why an event could not be recorded (no value from the event).
#[derive(Debug, thiserror::Error)]
pub enum AuditFailed {
    /// The writer thread is gone.
    #[error("the audit writer has stopped")]
    Stopped,
    /// The log refused the append.
    #[error("the audit log could not be appended: {0}")]
    Log(String),
    /// The log could not be read (or its entries did not verify).
    #[error("the audit log could not be read: {0}")]
    Read(String),
}

/// A request to the writer thread.
enum Job {
    Append(Box<Event>, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// A read-only view of the log as it stands, with what other processes appended, and,
    /// for a patient (ID and issuer), the places of their entries in it.
    View(
        Option<(String, Option<String>)>,
        tokio::sync::oneshot::Sender<Result<View, String>>,
    ),
}

/// A view for a read: the reader, and the places of the patient's entries when the read
/// is for one patient.
type View = (AuditReader, Option<Vec<radveil_ledger::At>>);

/// What an audit read asks for: a filter, the patient given by ID.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Patient ID and issuer, when only one patient's events are wanted.
    pub patient: Option<(String, Option<String>)>,
    /// The rest of the filter (its `patient` is filled from the field above).
    pub filter: Filter,
    /// For one patient's events: only the newest this many entries are read (a page that
    /// shows the newest; `None`: all).
    pub newest: Option<usize>,
}

/// The handle to the audit writer: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Job>,
    /// Permits for reads ([`MAX_READS`]).
    reads: Arc<tokio::sync::Semaphore>,
    /// The audit source's id in exports (`radveil@host`).
    pub source: String,
}

/// The writer thread; [`Writer::finish`] waits for it once every [`Auditor`] is dropped.
#[derive(Debug)]
pub struct Writer(std::thread::JoinHandle<Result<(), radveil_audit::AuditError>>);

impl Writer {
    /// Waits until every [`Auditor`] is gone and the writer has signed its last checkpoint.
    pub fn finish(self) -> Result<(), radveil_audit::AuditError> {
        self.0
            .join()
            .unwrap_or(Err(radveil_audit::AuditError::Invalid(
                "the audit writer stopped unexpectedly: the last checkpoint was not signed",
            )))
    }
}

impl Auditor {
    /// Starts the writer thread on an open log. `source` names this gateway in exports.
    pub fn start(log: AuditLog, source: String) -> std::io::Result<(Auditor, Writer)> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(log, rx))?;
        let reads = Arc::new(tokio::sync::Semaphore::new(MAX_READS));
        Ok((Auditor { tx, reads, source }, Writer(handle)))
    }

    /// Appends `event` durably; returns once it is fsynced.
    pub async fn append(&self, event: Event) -> Result<(), AuditFailed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Append(Box::new(event), tx))
            .map_err(|_| AuditFailed::Stopped)?;
        rx.await
            .map_err(|_| AuditFailed::Stopped)?
            .map_err(AuditFailed::Log)
    }

    /// Appends `events` durably from a blocking thread (never from async code): all sent
    /// at once, so the writer appends them as one batch, then each fsync waited for.
    pub fn append_all_blocking(&self, events: Vec<Event>) -> Result<(), AuditFailed> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.tx
                .send(Job::Append(Box::new(e), tx))
                .map_err(|_| AuditFailed::Stopped)?;
            acks.push(rx);
        }
        for rx in acks {
            rx.blocking_recv()
                .map_err(|_| AuditFailed::Stopped)?
                .map_err(AuditFailed::Log)?;
        }
        Ok(())
    }

    /// The events matching `query`, in log order: the log as it stands when the read's turn
    /// comes, read off the writer thread (appends are not held up), at most [`MAX_READS`]
    /// at once.
    pub async fn read(&self, query: Query) -> Result<Vec<(u64, Event)>, AuditFailed> {
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(|_| AuditFailed::Stopped)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::View(query.patient.clone(), tx))
            .map_err(|_| AuditFailed::Stopped)?;
        let (reader, places) = rx
            .await
            .map_err(|_| AuditFailed::Stopped)?
            .map_err(AuditFailed::Read)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut filter = query.filter;
            filter.patient = query
                .patient
                .as_ref()
                .map(|(id, issuer)| reader.key().patient(id, issuer.as_deref()));
            match places {
                // One patient: only their entries are read, one seek each.
                Some(places) => {
                    let skip = query.newest.map_or(0, |n| places.len().saturating_sub(n));
                    reader.read_at(&places[skip..], &filter)
                }
                None => reader.read(&filter),
            }
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| AuditFailed::Read("the read stopped unexpectedly".into()))?
        .map_err(AuditFailed::Read)
    }
}

fn checkpoint(log: &mut AuditLog, pending: &mut u64) {
    if *pending == 0 {
        return;
    }
    match log.checkpoint() {
        Ok(_) => *pending = 0,
        Err(e) => tracing::error!(error = %e, "the audit log could not be checkpointed"),
    }
}

/// The last background check of the log's file: when it started (`None`: due now), and
/// its thread, which says whether the file held.
struct Recheck {
    at: Option<std::time::Instant>,
    running: Option<std::thread::JoinHandle<bool>>,
}

/// Checkpoints sign the entries as the writer read and wrote them, so an entry edited in the
/// file behind it is not endorsed, but nor is it noticed there: every [`RECHECK_EVERY`] at
/// most, one at a time and only when idle, a thread of its own reads the file whole and
/// checks it against what the writer read and wrote (`radveil_ledger::Snapshot::check`,
/// which takes no lock: appends go on), and logs an error when it no longer holds it.
fn recheck(log: &AuditLog, last: &mut Recheck) {
    if last.at.is_some_and(|at| at.elapsed() < RECHECK_EVERY)
        || last.running.as_ref().is_some_and(|t| !t.is_finished())
    {
        return;
    }
    let snapshot = log.snapshot();
    last.at = Some(std::time::Instant::now());
    last.running = std::thread::Builder::new()
        .name("audit-recheck".into())
        .spawn(move || {
            let checked = snapshot.check();
            if let Err(e) = &checked {
                tracing::error!(error = %e, "the audit log's file no longer holds the entries the server read and wrote");
            }
            checked.is_ok()
        })
        .ok();
}

fn write_loop(mut log: AuditLog, rx: mpsc::Receiver<Job>) -> Result<(), radveil_audit::AuditError> {
    // The patients' places, indexed once now (a pass over the log) rather than at the
    // first patient's read; kept up to date from the entries added since.
    if let Err(e) = log.places_of(&radveil_store::Handle([0; 32])) {
        tracing::error!(error = %e, "the audit log's patient index could not be built");
    }
    let mut pending = 0u64;
    let mut rechecked = Recheck {
        at: Some(std::time::Instant::now()),
        running: None,
    };
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                checkpoint(&mut log, &mut pending);
                recheck(&log, &mut rechecked);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut events = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(e, ack) => {
                    events.push(*e);
                    acks.push(ack);
                }
                Job::View(patient, reply) => {
                    let view = log.refresh().and_then(|()| {
                        let places = match &patient {
                            Some((id, issuer)) => {
                                let h = log.key().patient(id, issuer.as_deref());
                                Some(log.places_of(&h)?)
                            }
                            None => None,
                        };
                        Ok((log.reader(), places))
                    });
                    let _ = reply.send(view.map_err(|e| e.to_string()));
                }
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if events.is_empty() {
            continue;
        }
        let result = log.append(&events).map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, events = events.len(), "audit events could not be appended");
        } else {
            pending += events.len() as u64;
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
        if pending >= CHECKPOINT_EVERY {
            checkpoint(&mut log, &mut pending);
        }
    }
    if pending > 0 {
        log.checkpoint()?;
    }
    Ok(())
}

/// What a handler touched, put in its response's extensions for [`record`].
#[derive(Debug, Clone, Default)]
pub struct What {
    /// The patients, each with their studies.
    pub patients: Vec<PatientAccess>,
    /// The search or filter, for queries and audit reads.
    pub query: Option<String>,
    /// The action, when the request's method and path do not tell it (the audit routes).
    pub action: Option<Action>,
    /// What a successful request did, in words holding no identifying value (a consent
    /// change: "version 2: ai-training: withdrawn"); the event's detail.
    pub detail: Option<String>,
}

impl What {
    /// Adds `study` of a patient (Patient ID and issuer, empty when not used), merging
    /// with what is already there.
    pub fn add(&mut self, id: &str, issuer: &str, study: StudyRef) {
        let issuer = (!issuer.is_empty()).then(|| issuer.to_string());
        let p = match self
            .patients
            .iter_mut()
            .position(|p| p.id == id && p.issuer == issuer)
        {
            Some(i) => &mut self.patients[i],
            None => {
                self.patients.push(PatientAccess {
                    id: id.to_string(),
                    issuer,
                    ..PatientAccess::default()
                });
                let last = self.patients.len() - 1;
                &mut self.patients[last]
            }
        };
        match p.studies.iter_mut().find(|s| {
            s.uid == study.uid && s.series == study.series && s.instance == study.instance
        }) {
            Some(s) => {
                if let Some(n) = study.instances {
                    s.instances = Some(s.instances.unwrap_or(0).saturating_add(n));
                }
            }
            None => p.studies.push(study),
        }
    }

    /// Puts this into `resp`'s extensions.
    pub fn attach(self, mut resp: Response) -> Response {
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The study `study` (with a series and an instance, when one was asked for) as an audit
/// object, if the catalogue knows it and its patient is within `scope`; else nothing (so
/// a patient token probing another's study records no other patient).
pub fn study(
    state: &AppState,
    scope: &Scope,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
    instances: Option<u32>,
) -> What {
    let mut what = What::default();
    let h = state.store.uid(Level::Study, study);
    if let Some((patient, id, issuer)) = state.catalogue.patient_of(&h) {
        if scope.sees_study(&patient, &h) {
            let (modality, date, description) = state.catalogue.describe(&h);
            what.add(
                &id,
                &issuer,
                StudyRef {
                    uid: study.to_string(),
                    series: series.map(str::to_string),
                    instance: instance.map(str::to_string),
                    instances,
                    modality,
                    date,
                    description,
                },
            );
        }
    }
    what
}

/// The audit action of a request by method and path, or `None` for routes not audited
/// (`/healthz`, `/metrics`).
fn action_of(req: &Request) -> Option<Action> {
    let path = req.uri().path();
    if path == "/audit" || path == "/me/access-log" {
        return Some(Action::AuditRead);
    }
    if path == "/me/download" {
        return Some(Action::Retrieve);
    }
    // The portal's pages say what they showed (a `What` with its action); the others
    // (sign-in, the stylesheet) are not audited: see `record`.
    if path == "/portal" || path.starts_with("/portal/") || path.starts_with("/s/") {
        return Some(Action::Query);
    }
    // Consent: a PUT records a change, a GET reads (a search of the patient's records).
    if path == "/fhir" || path.starts_with("/fhir/") {
        return Some(match *req.method() {
            axum::http::Method::PUT if path.starts_with("/fhir/CareTeam") => Action::CareTeamChange,
            axum::http::Method::PUT => Action::ConsentChange,
            _ => Action::Query,
        });
    }
    if !(path == "/dicom-web" || path.starts_with("/dicom-web/")) {
        return None;
    }
    Some(match crate::auth::action_of(req.method(), path) {
        radveil_access::Action::Store => Action::Store,
        radveil_access::Action::Delete => Action::Delete,
        radveil_access::Action::Search => Action::Query,
        radveil_access::Action::Read | radveil_access::Action::ReadAudit => Action::Retrieve,
        radveil_access::Action::ReadConsent | radveil_access::Action::SearchConsent => {
            Action::Query
        }
        radveil_access::Action::WriteConsent => Action::ConsentChange,
        radveil_access::Action::Export => Action::Export,
        radveil_access::Action::ReadCareTeam => Action::Query,
        radveil_access::Action::WriteCareTeam => Action::CareTeamChange,
    })
}

/// Why a request was refused before it reached a handler, put in the response's
/// extensions by access control (words only: never token text).
#[derive(Debug, Clone)]
pub struct Refused {
    /// The token was refused (401), rather than the action denied (403).
    pub token: bool,
    /// Why, in words.
    pub why: String,
}

/// Who a caller is in the audit trail (subject, client, name, role; no address), for the
/// events the gateway records itself on a caller's behalf (an export started in the portal).
pub(crate) fn actor_of(caller: &Caller) -> Actor {
    let mut actor = Actor::default();
    if let Some(p) = &caller.principal {
        actor.subject = Some(p.subject.clone());
        actor.client = p.client.clone();
        actor.name = p.name.clone();
    }
    actor.role = role_of(caller).0;
    actor
}

fn role_of(caller: &Caller) -> (Option<Role>, Option<PurposeOfUse>) {
    let Some(p) = &caller.principal else {
        return (None, None);
    };
    // Someone holding a patient's share link: no role of ours, at the patient's request.
    if p.issuer == crate::portal::sharing::SHARE_ISSUER {
        return (None, Some(PurposeOfUse::PatientRequest));
    }
    let patient = matches!(
        caller.grant.as_ref().map(|g| &g.compartment),
        Some(Compartment::Patient(_))
    );
    let role = if p.has(AccessRole::Admin) {
        Some(Role::Admin)
    } else if p.has(AccessRole::Clinician) {
        Some(Role::Clinician)
    } else if p.has(AccessRole::Auditor) {
        Some(Role::Auditor)
    } else if p.has(AccessRole::PrivacyOfficer) {
        return (Some(Role::PrivacyOfficer), Some(PurposeOfUse::Compliance));
    } else if p.has(AccessRole::Researcher) {
        Some(Role::Researcher)
    } else if patient || p.patient.is_some() {
        Some(Role::Patient)
    } else {
        Some(Role::System)
    };
    let purpose = match role {
        Some(Role::Clinician) => PurposeOfUse::Treatment,
        Some(Role::Admin) => PurposeOfUse::SystemAdministration,
        Some(Role::Auditor) => PurposeOfUse::Compliance,
        Some(Role::Researcher) => PurposeOfUse::Research,
        Some(Role::Patient) => PurposeOfUse::PatientRequest,
        _ => PurposeOfUse::Operations,
    };
    (role, Some(purpose))
}

/// The event of a finished request.
pub(crate) fn event_of(
    action: Action,
    caller: Option<&Caller>,
    refused: Option<&Refused>,
    what: Option<&What>,
    status: StatusCode,
    address: Option<String>,
) -> Event {
    // A form's POST that succeeded answers 303 See Other (back to its page).
    let done = status.is_success() || status == StatusCode::SEE_OTHER;
    let outcome = if done {
        Outcome::Success
    } else if status.is_client_error() {
        Outcome::MinorFailure
    } else {
        Outcome::SeriousFailure
    };
    let action = match refused {
        Some(r) if r.token => Action::TokenRefused,
        _ => what.and_then(|w| w.action).unwrap_or(action),
    };
    let mut actor = caller.map(actor_of).unwrap_or_default();
    actor.address = address;
    let mut purpose = None;
    let mut break_glass = None;
    if let Some(c) = caller {
        purpose = role_of(c).1;
        if let Some(bg) = c.grant.as_ref().and_then(|g| g.break_glass.as_ref()) {
            break_glass = Some(bg.reason.clone());
            purpose = Some(PurposeOfUse::EmergencyTreatment);
        }
    }
    let mut e = Event::now(action, outcome, actor);
    e.purpose = purpose;
    e.break_glass = break_glass;
    if let Some(w) = what {
        e.patients = w.patients.clone();
        e.query = w.query.clone();
    }
    e.detail = match refused {
        Some(r) => Some(r.why.clone()),
        None if !done => Some(format!("HTTP {}", status.as_u16())),
        None => what.and_then(|w| w.detail.clone()),
    };
    e
}

/// The middleware: runs the request, then appends its event before the response goes. If
/// the event cannot be appended the client gets a 500 instead of the response: no access
/// is left unaudited.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (Some(auditor), Some(action)) = (state.auditor.clone(), action_of(&req)) else {
        return next.run(req).await;
    };
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let portal = req.uri().path().starts_with("/portal") || req.uri().path().starts_with("/s/");
    let resp = next.run(req).await;
    if portal && resp.extensions().get::<What>().is_none() {
        return resp;
    }
    let event = event_of(
        action,
        resp.extensions().get::<Caller>(),
        resp.extensions().get::<Refused>(),
        resp.extensions().get::<What>(),
        resp.status(),
        address,
    );
    let kind = event.action;
    match auditor.append(event).await {
        Ok(()) => resp,
        Err(e) => {
            tracing::error!(error = %e, action = %kind, "request refused: its audit event could not be written");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "the audit trail could not be written: the request is refused\n",
            )
                .into_response()
        }
    }
}

/// The patient handle's record in the catalogue, for [`study`].
pub(crate) type PatientOf = (Handle, String, String);

#[cfg(test)]
mod tests;
