//! The privacy officer's research export from the portal (`/portal/privacy/export`): the
//! same consent-checked, de-identified export as `radveil export` ([`radveil_export::run`]),
//! started from a form. The site sets what cannot be chosen in a browser: the
//! de-identification profile and its key (`radveil serve --export-profile`, `[export]` in
//! `DATA/radveil.toml`). The privacy officer chooses the studies (date range, modality,
//! description, body part), the purpose, the recipient and project, and optionally the
//! recipient's certificate (every output then CMS EnvelopedData to it, nothing written in
//! the clear). Consent is decided per patient and study when the export runs; the export's
//! lineage and its audit events (through the gateway's own audit writer, so each
//! patient's access log shows it) are recorded as for the command. Outputs go to a new
//! folder under `DATA/exports/` with the report (counts, no patient named) beside it, for
//! the privacy office to send. One export runs at a time.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use radveil_access::Action as AccessAction;
use radveil_audit::{Action, AuditError, Event};
use radveil_consent::Purpose;
use radveil_export::run::{AuditSink, Report};
use zeroize::Zeroizing;

use super::pages::{self, message, Page};
use super::session::{constant_time_eq, Session};
use super::staff::staff;
use crate::app::AppState;
use crate::audit::{Auditor, What};

/// The folder of `DATA` exports started in the portal go to.
pub const EXPORTS_DIR: &str = "exports";
/// Exports the page remembers (the newest); older ones stay on disk and in the lineage.
const REMEMBERED: usize = 50;
/// Longest recipient, project or search value (LO: 64 characters).
const MAX_TEXT: usize = 64;
/// Largest recipient certificate pasted into the form.
const MAX_CERTIFICATE: usize = 64 * 1024;
/// Largest export report read back from `DATA/exports`.
const MAX_REPORT: u64 = 1 << 20;

/// What the site set for exports: the de-identifier made from its profile, where outputs go.
pub struct ExportSite {
    /// The de-identifier of the site's profile, made once at start (every export uses the
    /// profile the gateway started with).
    recipe: radveil_export::recipe::Recipe,
    /// `DATA/exports`.
    out: PathBuf,
    /// The lineage database and its key (each export opens its own connection).
    lineage: (PathBuf, radveil_store::Key),
    memory_limit: u64,
    jobs: usize,
    started: Mutex<Vec<Started>>,
}

impl std::fmt::Debug for ExportSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSite")
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

/// The settings of [`ExportSite::new`].
pub struct SiteSettings {
    /// The de-identification profile (its file's bytes).
    pub profile: Vec<u8>,
    /// Annex E options added to the profile.
    pub options: Vec<String>,
    /// The de-identification key.
    pub key: radveil_deid::Key,
    /// Where outputs go (`DATA/exports`).
    pub out: PathBuf,
    /// The lineage database (`DATA/lineage.db`) and its key.
    pub lineage: (PathBuf, radveil_store::Key),
    /// Memory an export's workers share.
    pub memory_limit: u64,
    /// Worker threads.
    pub jobs: usize,
}

impl ExportSite {
    /// The site's export settings, the profile checked now (a profile that cannot be used
    /// stops the gateway's start, not the first export).
    pub fn new(s: SiteSettings) -> Result<ExportSite, radveil_export::recipe::RecipeError> {
        Ok(ExportSite {
            recipe: radveil_export::recipe::recipe(&s.profile, &s.options, s.key)?,
            out: s.out,
            lineage: s.lineage,
            memory_limit: s.memory_limit,
            jobs: s.jobs.max(1),
            started: Mutex::new(Vec::new()),
        })
    }

    /// Records `s` as running, unless an export is running already (checked and recorded
    /// under one lock, so two forms sent at once start one export).
    fn try_start(&self, s: Started) -> bool {
        let Ok(mut list) = self.started.lock() else {
            return false;
        };
        if list.iter().any(|s| matches!(s.status, Status::Running)) {
            return false;
        }
        list.push(s);
        let extra = list.len().saturating_sub(REMEMBERED);
        list.drain(..extra);
        true
    }

    fn finish(&self, folder: &str, status: Status) {
        if let Ok(mut list) = self.started.lock() {
            if let Some(s) = list.iter_mut().find(|s| s.folder == folder) {
                s.status = status;
            }
        }
    }

    /// The exports started since the gateway started, newest first, then the earlier ones
    /// whose reports are in `DATA/exports` (at most [`REMEMBERED`] in all).
    fn list(&self) -> Vec<Started> {
        let mut list: Vec<Started> = self
            .started
            .lock()
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default();
        let known: Vec<String> = list.iter().map(|s| s.folder.clone()).collect();
        for (folder, report) in self.earlier() {
            if list.len() >= REMEMBERED {
                break;
            }
            if known.contains(&folder) {
                continue;
            }
            list.push(Started {
                folder,
                by: String::new(),
                time: report.time.clone(),
                purpose: report.purpose,
                recipient: report.recipient.clone(),
                project: report.project.clone(),
                encrypted: report.encrypted,
                status: Status::Done(Box::new(report)),
            });
        }
        list
    }

    /// The reports in `DATA/exports` (`FOLDER.json` beside each folder), newest first: only
    /// names this page makes, regular files of at most 1 MiB that read as a report.
    fn earlier(&self) -> Vec<(String, Report)> {
        let Ok(dir) = std::fs::read_dir(&self.out) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        names
            .into_iter()
            .take(REMEMBERED)
            .filter_map(|n| {
                let bytes = read_report(&self.out.join(format!("{n}.json")))?;
                let report: Report = serde_json::from_slice(&bytes).ok()?;
                Some((n, report))
            })
            .collect()
    }
}

/// An export started here.
#[derive(Clone)]
struct Started {
    folder: String,
    by: String,
    time: String,
    purpose: Purpose,
    recipient: String,
    project: Option<String>,
    encrypted: bool,
    status: Status,
}

#[derive(Clone)]
enum Status {
    Running,
    Done(Box<Report>),
    /// Why it stopped (no patient named).
    Failed(String),
}

/// The gateway's audit writer as the export's audit sink: the events sent together and
/// waited for (fsynced) before the export is reported done.
struct Writer<'a>(&'a Auditor);

impl AuditSink for Writer<'_> {
    fn append_durably(&mut self, events: &[Event]) -> Result<(), AuditError> {
        self.0.append_all_blocking(events.to_vec()).map_err(|_| {
            AuditError::Invalid("the gateway's audit writer did not record the export")
        })
    }
}

fn site(state: &AppState) -> Result<Arc<ExportSite>, Response> {
    state.portal.exports.clone().ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            "Exports are not set up",
            "This server has no de-identification profile for exports (radveil serve --export-profile).",
            false,
        )
    })
}

fn purpose_words(p: Purpose) -> &'static str {
    radveil_export::purpose_words(p)
}

/// `GET /portal/privacy/export`: the form and the exports started here.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match staff(&state, &headers, AccessAction::Export) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let site = match site(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    form_page(&s, &site, StatusCode::OK, None)
}

fn form_page(s: &Session, site: &ExportSite, status: StatusCode, alert: Option<&str>) -> Response {
    let list = site.list();
    Page::new("Research export")
        .session(s)
        .status(status)
        .body(html! {
            h1 { "Research export" }
            p { "Images of the studies chosen below are de-identified with the site's profile and written for the recipient. Each patient's consent to the purpose is checked now, study by study: patients who have not agreed, or who withdrew, are left out and counted. Every patient included sees the export in their access log." }
            @if let Some(a) = alert { p role="alert" { (a) } }
            form method="post" action="/portal/privacy/export" {
                input type="hidden" name="csrf" value=(s.csrf);
                fieldset {
                    legend { "What for, and for whom" }
                    p {
                        label for="purpose" { "Purpose" } " "
                        select id="purpose" name="purpose" {
                            @for p in Purpose::ALL { option value=(p.as_str()) { (purpose_words(p)) } }
                        }
                    }
                    p { label for="recipient" { "Recipient" } " " input id="recipient" name="recipient" type="text" required maxlength="64"; }
                    p { label for="project" { "Project (optional)" } " " input id="project" name="project" type="text" maxlength="64"; }
                }
                fieldset {
                    legend { "Which studies (all when left empty)" }
                    p {
                        label for="from" { "Study date from" } " " input id="from" name="from" type="date";
                        " " label for="to" { "to" } " " input id="to" name="to" type="date";
                    }
                    p { label for="modality" { "Modality (like CT or MR)" } " " input id="modality" name="modality" type="text" maxlength="16"; }
                    p { label for="description" { "Study description (* and ? match any text)" } " " input id="description" name="description" type="text" maxlength="64"; }
                    p { label for="body_part" { "Body part (like HEAD)" } " " input id="body_part" name="body_part" type="text" maxlength="16"; }
                }
                fieldset {
                    legend { "Encryption (optional)" }
                    p {
                        label for="certificate" { "The recipient's certificate (PEM): every file is encrypted to it, nothing is written in the clear" }
                        br;
                        textarea id="certificate" name="certificate" rows="4" cols="64" {}
                    }
                }
                p { button type="submit" { "Start the export" } }
            }
            h2 { "Exports started here" }
            @if list.is_empty() {
                p { "None yet." }
            } @else {
                table {
                    caption { "Newest first; outputs in the data folder's exports/ for the privacy office to send (all exports, whoever made them, are in the lineage: radveil lineage)" }
                    thead { tr { th scope="col" { "Folder" } th scope="col" { "Started" } th scope="col" { "By" } th scope="col" { "Recipient" } th scope="col" { "Purpose" } th scope="col" { "Result" } } }
                    tbody {
                        @for e in &list {
                            tr {
                                td { (e.folder) @if e.encrypted { " (encrypted)" } }
                                td { (e.time) }
                                td { @if e.by.is_empty() { "(before the server last started)" } @else { (e.by) } }
                                td { (e.recipient) @if let Some(p) = &e.project { " — " (p) } }
                                td { (purpose_words(e.purpose)) }
                                td {
                                    @match &e.status {
                                        Status::Running => { "running: reload this page to see when it is done" }
                                        Status::Done(r) => {
                                            (format!(
                                                "done: export {}; {} patients, {} studies, {} instances; left out: {} patients without consent, {} who withdrew or refused; {} instances held back, {} failed",
                                                r.export, r.counts.patients, r.counts.studies, r.counts.instances,
                                                r.counts.left_out_no_consent, r.counts.left_out_withdrawn,
                                                r.counts.held_back, r.counts.failed
                                            ))
                                        }
                                        Status::Failed(why) => { "stopped: " (why) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
        .render()
}

/// The export form.
#[derive(serde::Deserialize)]
pub struct ExportForm {
    csrf: String,
    purpose: String,
    recipient: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    modality: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    body_part: String,
    #[serde(default)]
    certificate: String,
}

/// A form text: trimmed, at most [`MAX_TEXT`] characters, no control characters and no
/// backslash (which would make a list of a query value).
fn text(value: &str, what: &str) -> Result<String, String> {
    let v = value.trim();
    if v.chars().count() > MAX_TEXT || v.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "The {what} is at most 64 characters of text, without a backslash."
        ));
    }
    Ok(v.to_string())
}

/// An HTML date (`YYYY-MM-DD`) as a DICOM DA, or empty.
fn da(value: &str, what: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    let d: String = v.chars().filter(|c| *c != '-').collect();
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("The {what} date is a date like 2026-03-01."));
    }
    Ok(d)
}

/// The form's search as `radveil export --query` keys.
fn keys(f: &ExportForm) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let (from, to) = (da(&f.from, "first")?, da(&f.to, "last")?);
    if !from.is_empty() || !to.is_empty() {
        keys.push(if from == to {
            format!("StudyDate={from}")
        } else {
            format!("StudyDate={from}-{to}")
        });
    }
    for (name, value, what) in [
        ("ModalitiesInStudy", &f.modality, "modality"),
        ("StudyDescription", &f.description, "study description"),
        ("BodyPartExamined", &f.body_part, "body part"),
    ] {
        let v = text(value, what)?;
        if !v.is_empty() {
            keys.push(format!("{name}={v}"));
        }
    }
    Ok(keys)
}

/// A folder name for a new export: the time and 8 random hex digits.
fn new_folder(time: &str) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::getrandom(&mut r);
    let t: String = time.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{t}-{}", radveil_store::Handle::hex_of(&r))
}

/// `POST /portal/privacy/export`: checks the form and starts the export.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<ExportForm>,
) -> Response {
    let s = match staff(&state, &headers, AccessAction::Export) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes()) {
        return message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This form is out of date. Go back, reload the page and try again.",
            false,
        );
    }
    let site = match site(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(auditor) = state.auditor.clone() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Exports need the audit trail",
            "This server records no audit trail, so it cannot record an export.",
            false,
        );
    };
    let Some(consents) = state.portal.consents.clone() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Exports need consents",
            "This server keeps no consents, so no export can be checked against them.",
            false,
        );
    };
    let bad = |why: &str| form_page(&s, &site, StatusCode::BAD_REQUEST, Some(why));
    let Ok(purpose) = f.purpose.parse::<Purpose>() else {
        return bad("Choose a purpose.");
    };
    let recipient = match text(&f.recipient, "recipient") {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return bad("Name the recipient."),
        Err(why) => return bad(&why),
    };
    let project = match text(&f.project, "project") {
        Ok(p) => (!p.is_empty()).then_some(p),
        Err(why) => return bad(&why),
    };
    let query = match keys(&f).and_then(|k| {
        radveil_export::query::Query::parse(&k).map_err(|e| format!("The search: {e}."))
    }) {
        Ok(q) => q,
        Err(why) => return bad(&why),
    };
    let pem = f.certificate.trim();
    if pem.len() > MAX_CERTIFICATE {
        return bad("The certificate is too long.");
    }
    let certs = if pem.is_empty() {
        Vec::new()
    } else {
        match radveil_integrity::envelope::certificates_from_pem(pem.as_bytes()) {
            Ok(c) if !c.is_empty() => c,
            _ => return bad("The certificate is not a PEM certificate the export can encrypt to."),
        }
    };
    let caller = pages::caller(&s, AccessAction::Export);
    let actor = crate::audit::actor_of(&caller);
    let time = radveil_ledger::rfc3339_now();
    let folder = new_folder(&time);
    let started = site.try_start(Started {
        folder: folder.clone(),
        by: s
            .name
            .clone()
            .unwrap_or_else(|| s.principal.subject.clone()),
        time,
        purpose,
        recipient: recipient.clone(),
        project: project.clone(),
        encrypted: !certs.is_empty(),
        status: Status::Running,
    });
    if !started {
        return form_page(
            &s,
            &site,
            StatusCode::CONFLICT,
            Some("An export is running: start the next one when it is done."),
        );
    }
    let work = {
        let (site, folder, store) = (Arc::clone(&site), folder.clone(), state.store.clone());
        let runtime = tokio::runtime::Handle::current();
        move || {
            let status = match run(Job {
                site: &site,
                folder: &folder,
                store: &store,
                runtime: &runtime,
                consents: consents.as_ref(),
                auditor: &auditor,
                actor: &actor,
                purpose,
                recipient: &recipient,
                project: project.as_deref(),
                query: &query,
                certs: &certs,
            }) {
                Ok(report) => Status::Done(Box::new(report)),
                Err(why) => {
                    tracing::error!(export = %folder, error = %why, "a portal export stopped");
                    Status::Failed(why)
                }
            };
            site.finish(&folder, status);
        }
    };
    tokio::task::spawn_blocking(work);
    // The start itself is in the audit trail (whose events name each patient included).
    let what = What {
        action: Some(Action::Export),
        detail: Some(format!("started export folder {folder}")),
        ..What::default()
    };
    let mut r = what.attach(Redirect::to("/portal/privacy/export").into_response());
    r.extensions_mut().insert(caller);
    r
}

/// One export's inputs.
struct Job<'a> {
    site: &'a ExportSite,
    folder: &'a str,
    store: &'a radveil_store::Store,
    runtime: &'a tokio::runtime::Handle,
    consents: &'a radveil_consent::Consents,
    auditor: &'a Auditor,
    actor: &'a radveil_audit::Actor,
    purpose: Purpose,
    recipient: &'a str,
    project: Option<&'a str>,
    query: &'a radveil_export::query::Query,
    certs: &'a [radveil_integrity::envelope::Certificate],
}

/// Runs one export (on a blocking thread): the output folder, the lineage connection, then
/// [`radveil_export::run::export`]; the report written beside the folder.
fn run(j: Job<'_>) -> Result<Report, String> {
    let recipe = &j.site.recipe;
    make_private_dir(&j.site.out)?;
    let out = j.site.out.join(j.folder);
    let run = radveil_pipeline::Run::new(
        recipe.deidentifier.clone(),
        &out,
        &radveil_pipeline::Settings {
            memory_limit: j.site.memory_limit,
            resume: false,
        },
    )
    .map_err(|e| format!("the output folder: {e}"))?;
    let mut lineage =
        radveil_export::lineage::Lineage::open(&j.site.lineage.0, j.site.lineage.1.clone())
            .map_err(|e| format!("the lineage: {e}"))?;
    let seal = |bytes: &[u8]| -> Result<Vec<u8>, String> {
        radveil_integrity::envelope::encrypt_to(j.certs, bytes).map_err(|e| e.to_string())
    };
    let sealing = (!j.certs.is_empty()).then_some(radveil_pipeline::sealed::Sealing {
        seal: &seal,
        suffix: ".p7m",
    });
    let settings = radveil_export::run::Settings {
        purpose: j.purpose,
        recipient: j.recipient,
        project: j.project,
        profile_digest: &recipe.digest,
        jobs: j.site.jobs,
        actor: j.actor,
        sealing,
        clean_visual_features: recipe.clean_visual_features,
    };
    let mut sink = Writer(j.auditor);
    let report = radveil_export::run::export(
        radveil_export::run::Places {
            store: j.store,
            runtime: j.runtime,
            consents: j.consents,
            lineage: &mut lineage,
            audit: &mut sink,
            run: &run,
        },
        j.query,
        &settings,
    )
    .map_err(|e| format!("{e} (the folder is incomplete: do not send it)"))?;
    let json = Zeroizing::new(serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?);
    radveil_pipeline::write_new_file(&j.site.out.join(format!("{}.json", j.folder)), &json)
        .map_err(|e| format!("the report: {e}"))?;
    Ok(report)
}

/// A report file's bytes: a regular file (never through a link) of at most
/// [`MAX_REPORT`] bytes.
fn read_report(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_REPORT {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_REPORT + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_REPORT).then_some(bytes)
}

/// `DATA/exports`, made 0700 when missing.
fn make_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(format!("making the exports folder: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(from: &str, to: &str, modality: &str) -> ExportForm {
        ExportForm {
            csrf: String::new(),
            purpose: "research".into(),
            recipient: "Acme".into(),
            project: String::new(),
            from: from.into(),
            to: to.into(),
            modality: modality.into(),
            description: String::new(),
            body_part: String::new(),
            certificate: String::new(),
        }
    }

    #[test]
    fn the_form_becomes_the_commands_query_keys() {
        assert_eq!(keys(&form("", "", "")).unwrap(), Vec::<String>::new());
        assert_eq!(
            keys(&form("2026-01-01", "2026-03-31", "CT")).unwrap(),
            ["StudyDate=20260101-20260331", "ModalitiesInStudy=CT"]
        );
        assert_eq!(
            keys(&form("2026-01-01", "", "")).unwrap(),
            ["StudyDate=20260101-"]
        );
        assert_eq!(
            keys(&form("2026-02-03", "2026-02-03", "")).unwrap(),
            ["StudyDate=20260203"]
        );
    }

    #[test]
    fn hostile_form_values_are_refused() {
        assert!(keys(&form("yesterday", "", "")).is_err());
        assert!(keys(&form("", "", "CT\\MR")).is_err());
        assert!(keys(&form("", "", "CT\nMR")).is_err());
        assert!(keys(&form("", "", &"C".repeat(65))).is_err());
        assert!(text(" Acme Labs ", "recipient").unwrap() == "Acme Labs");
    }

    /// An export site writing below `dir`, with an empty profile.
    fn test_site(dir: &std::path::Path) -> ExportSite {
        ExportSite::new(SiteSettings {
            profile: Vec::new(),
            options: Vec::new(),
            key: radveil_deid::Key::new(Zeroizing::new(vec![3u8; 32])).unwrap(),
            out: dir.to_path_buf(),
            lineage: (
                dir.join("lineage.db"),
                radveil_store::Key::from_slice(&[4; 32]).unwrap(),
            ),
            memory_limit: 1 << 20,
            jobs: 1,
        })
        .unwrap()
    }

    #[test]
    fn earlier_reports_are_read_only_from_plain_files_that_are_reports() {
        let dir = tempfile::tempdir().unwrap();
        let site = test_site(dir.path());
        let report = serde_json::json!({
            "export": "ab", "time": "2026-12-04T15:00:00Z", "recipient": "Acme",
            "purpose": "research", "profile": "00", "encrypted": false,
            "counts": radveil_export::Counts::default(), "held_back": [], "failures": []
        });
        std::fs::write(
            dir.path().join("20261204T150000Z-00000001.json"),
            report.to_string(),
        )
        .unwrap();
        // Not a report, a link to one, a name this page never makes: left out.
        std::fs::write(dir.path().join("20261204T160000Z-00000002.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("20261204T150000Z-00000001.json"),
            dir.path().join("20261204T170000Z-00000003.json"),
        )
        .unwrap();
        std::fs::write(dir.path().join("../x.json"), b"{}").ok();
        std::fs::write(dir.path().join("a b.json"), report.to_string()).unwrap();
        let found = site.earlier();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "20261204T150000Z-00000001");
        assert_eq!(site.list().len(), 1);
    }

    #[test]
    fn one_export_runs_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let site = test_site(dir.path());
        let started = |folder: &str| Started {
            folder: folder.into(),
            by: "Priya".into(),
            time: "2026-12-04T15:00:00Z".into(),
            purpose: Purpose::Research,
            recipient: "Acme".into(),
            project: None,
            encrypted: false,
            status: Status::Running,
        };
        assert!(site.try_start(started("a")));
        assert!(!site.try_start(started("b")));
        site.finish("a", Status::Failed("stopped".into()));
        assert!(site.try_start(started("c")));
        assert_eq!(site.list().len(), 2);
    }

    #[test]
    fn folder_names_are_plain_and_distinct() {
        let a = new_folder("2026-12-04T15:00:00Z");
        let b = new_folder("2026-12-04T15:00:00Z");
        assert!(a.starts_with("20261204T150000Z-"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(a, b);
    }
}
