//! The secure upload's pages. A patient sends the images on a disc or drive they were given
//! elsewhere (`/portal/upload`: a whole folder, DICOMDIR and all, or chosen files); each
//! file is read as the gateway reads what it receives, the DICOM ones kept sealed apart
//! ([`super::upload`]), the rest (viewer programs, the DICOMDIR index, documents) left out
//! and counted. Staff who may store images for any patient see the uploads waiting
//! (`/portal/uploads`), compare what the files say with who sent them, and attach them
//! (reconciled to the patient's ID here, then stored through the STOW-RS path with every
//! ingest check: signatures, binding hash, ledger) or decline them (deleted). The sending,
//! the staff's look, and the decision are audit events the patient reads in their access log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::html;
use radveil_access::{Action as AccessAction, PatientRef};
use radveil_audit::{Action, PatientAccess};
use radveil_store::{Handle, Level};

use super::pages::{self, message, Page};
use super::session::{constant_time_eq, now, Session};
use super::sharing::when;
use super::upload::{FoundStudy, Status, Summary, Upload, UploadError, Uploads};
use crate::app::AppState;
use crate::audit::What;
use crate::instance::{self, Identified};
use crate::multipart;
use crate::scope::Scope;
use crate::stow::Stored;

/// The SOP Class of a DICOMDIR (Media Storage Directory Storage): an index of a disc's
/// patients, never kept.
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

fn uploads(state: &AppState) -> Result<Arc<Uploads>, Response> {
    state.portal.uploads.clone().ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            "Uploads are not set up",
            "This server does not take uploads.",
            false,
        )
    })
}

/// The signed-in patient, or the page refusing the request.
fn patient(state: &AppState, headers: &HeaderMap) -> Result<(Session, PatientRef), Response> {
    let Some(s) = state.portal.sessions.of(headers) else {
        return Err(pages::signed_out(state));
    };
    match pages::patient_of(&s) {
        Some(p) => Ok((s, p)),
        None => Err(message(
            StatusCode::FORBIDDEN,
            "Not for staff accounts",
            "Images are sent by patients on their own account.",
            false,
        )),
    }
}

/// The audit record naming the patient `(id, issuer)`.
fn what_for(action: Action, id: &str, issuer: &str, detail: String) -> What {
    let mut w = What {
        action: Some(action),
        detail: Some(detail),
        ..What::default()
    };
    w.patients.push(PatientAccess {
        id: id.to_string(),
        issuer: (!issuer.is_empty()).then(|| issuer.to_string()),
        ..PatientAccess::default()
    });
    w
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn attr(id: &Identified, tag: u32) -> String {
    id.attributes
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, a)| {
            a.values
                .iter()
                .map(|v| v.split('=').next().unwrap_or_default().replace('^', " "))
                .collect::<Vec<_>>()
                .join(", ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// What a form with files held: the DICOM files kept, what the kept files describe, and
/// the rest counted by reason.
struct Sorted {
    csrf: Option<String>,
    kept: Vec<Bytes>,
    studies: Vec<FoundStudy>,
    left_out: Vec<(String, usize)>,
}

/// Reads every file part of a form: each is parsed as the gateway parses what it receives;
/// the DICOMDIR index, files that are not DICOM and repeats of an instance already in the
/// upload are left out (counted, never named).
fn sort(parts: Vec<multipart::Part>) -> Sorted {
    use radveil_standard::tags;
    let mut out = Sorted {
        csrf: None,
        kept: Vec::new(),
        studies: Vec::new(),
        left_out: Vec::new(),
    };
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut studies: BTreeMap<String, FoundStudy> = BTreeMap::new();
    for part in parts {
        match part.field().as_deref() {
            Some("csrf") if part.file_name().is_none() => {
                out.csrf = std::str::from_utf8(&part.body).ok().map(str::to_string);
                continue;
            }
            Some("files") => {}
            _ => continue,
        }
        let name = part.file_name().unwrap_or_default();
        let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
        if base.eq_ignore_ascii_case("DICOMDIR") {
            *reasons.entry("the disc's index (DICOMDIR)").or_default() += 1;
            continue;
        }
        if part.body.is_empty() && base.is_empty() {
            // A file input left empty.
            continue;
        }
        let id = match instance::identify(&part.body) {
            Ok(id) => id,
            Err(_) => {
                *reasons.entry("not DICOM images").or_default() += 1;
                continue;
            }
        };
        if id.sop_class == MEDIA_STORAGE_DIRECTORY {
            *reasons.entry("the disc's index (DICOMDIR)").or_default() += 1;
            continue;
        }
        if !seen.insert(id.sop_instance.clone()) {
            *reasons.entry("the same image twice").or_default() += 1;
            continue;
        }
        let s = studies
            .entry(id.study.clone())
            .or_insert_with(|| FoundStudy {
                uid: id.study.clone(),
                patient_name: attr(&id, tags::PATIENT_NAME),
                patient_id: id.patient_id.clone(),
                issuer: id.issuer.clone(),
                birth_date: attr(&id, tags::PATIENT_BIRTH_DATE),
                sex: attr(&id, tags::PATIENT_SEX),
                date: attr(&id, tags::STUDY_DATE),
                description: attr(&id, tags::STUDY_DESCRIPTION),
                ..FoundStudy::default()
            });
        s.instances += 1;
        let m = attr(&id, tags::MODALITY);
        if !m.is_empty() && !s.modalities.contains(&m) {
            s.modalities.push(m);
        }
        out.kept.push(part.body);
    }
    out.studies = studies.into_values().collect();
    out.left_out = reasons
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    out
}

fn describe(s: &FoundStudy) -> String {
    let mut t = s.modalities.join("/");
    if !s.date.is_empty() {
        t.push_str(" of ");
        t.push_str(&pages::date(&s.date));
    }
    if !s.description.is_empty() {
        t.push_str(", ");
        t.push_str(&s.description);
    }
    format!(
        "{} ({} image{})",
        t.trim_start_matches(" of "),
        s.instances,
        if s.instances == 1 { "" } else { "s" }
    )
}

/// `GET /portal/upload`: the form to send images, and the patient's uploads.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (s, p) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let up = match uploads(&state) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let h = state.store.patient(p.id(), p.issuer());
    let Ok(Ok(mine)) = tokio::task::spawn_blocking(move || up.of_patient(&h)).await else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Your uploads could not be listed just now. Please try again later.",
            false,
        );
    };
    let page = Page::new("Send us your images")
        .session(&s)
        .body(html! {
            h1 { "Send us your images" }
            p { "If another hospital or clinic gave you your images on a disc or a USB drive, you can send them here. Choose the whole folder of the disc (or the image files on it). Staff will check that the images are yours before they are added to your record; until then nobody else can see them." }
            form method="post" action="/portal/upload" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(s.csrf);
                p {
                    label for="folder" { "The disc's folder" }
                    " "
                    input id="folder" type="file" name="files" webkitdirectory multiple;
                }
                p {
                    label for="files" { "Or image files" }
                    " "
                    input id="files" type="file" name="files" multiple;
                }
                button type="submit" { "Send" }
            }
            h2 { "What you have sent" }
            @if mine.is_empty() {
                p { "Nothing yet." }
            } @else {
                table {
                    caption { "Your uploads, newest first" }
                    thead { tr { th scope="col" { "Sent" } th scope="col" { "Studies" } th scope="col" { "Where it stands" } } }
                    tbody {
                        @for u in &mine {
                            tr {
                                td { (when(u.created)) }
                                td { ul { @for st in &u.summary.studies { li { (describe(st)) } } } }
                                td { (u.status.words()) }
                            }
                        }
                    }
                }
            }
        })
        .render();
    let mut w = what_for(
        Action::Query,
        p.id(),
        p.issuer(),
        "listed your uploads".into(),
    );
    w.query = Some("uploads".into());
    let mut r = w.attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Read));
    r
}

/// `POST /portal/upload` (multipart/form-data): keeps the DICOM files sent, apart.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, p) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let up = match uploads(&state) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let bad = |why: &str| message(StatusCode::BAD_REQUEST, "Nothing was sent", why, false);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(boundary) = multipart::form_data(ct) else {
        return bad("The form was not sent as a form with files. Please use the page's form.");
    };
    let Ok(parts) = multipart::parts(&body, &boundary, state.limits.max_parts) else {
        return bad("The files did not arrive whole, or there were too many. Please try again, or send fewer at a time.");
    };
    drop(body);
    let Ok(sorted) = tokio::task::spawn_blocking(move || sort(parts)).await else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Please try again later.",
            false,
        );
    };
    if !sorted
        .csrf
        .as_deref()
        .is_some_and(|c| constant_time_eq(s.csrf.as_bytes(), c.as_bytes()))
    {
        return message(
            StatusCode::FORBIDDEN,
            "Nothing was sent",
            "This form is out of date. Please go back, reload the page and try again.",
            false,
        );
    }
    if sorted.kept.is_empty() {
        return bad("No medical images (DICOM files) were found in what you chose. On a disc they are usually in a folder named DICOM, or in the whole disc's folder.");
    }
    let summary = Summary {
        patient_id: p.id().to_string(),
        issuer: p.issuer().to_string(),
        patient_name: s.name.clone(),
        studies: sorted.studies,
        left_out: sorted.left_out,
        decided_by: None,
        outcome: None,
    };
    let h = state.store.patient(p.id(), p.issuer());
    let kept = sorted.kept;
    let made = {
        let summary = summary.clone();
        tokio::task::spawn_blocking(move || up.create(h, &summary, &kept, now())).await
    };
    let upload = match made {
        Ok(Ok(u)) => u,
        Ok(Err(UploadError::Invalid(why))) => {
            return message(StatusCode::BAD_REQUEST, "Nothing was sent", why, false)
        }
        _ => {
            tracing::error!("an upload could not be kept");
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Nothing was sent",
                "Your images could not be kept just now. Please try again later.",
                false,
            );
        }
    };
    let n = upload.files;
    let detail = format!(
        "sent {n} image{} from a disc or drive (upload {}), held apart until staff check they are yours",
        if n == 1 { "" } else { "s" },
        short(&upload.id)
    );
    let page = Page::new("Images received")
        .session(&s)
        .body(html! {
            h1 { "Images received" }
            p { "We received " (n) " image" @if n != 1 { "s" } ". Staff will check that they are yours before they are added to your record." }
            ul { @for st in &summary.studies { li { (describe(st)) } } }
            @if !summary.left_out.is_empty() {
                p { "Left out:" }
                ul { @for (why, count) in &summary.left_out { li { (count) " file" @if *count != 1 { "s" } ": " (why) } } }
            }
            p { a href="/portal/upload" { "Back to your uploads" } }
        })
        .render();
    let mut r = what_for(Action::Upload, p.id(), p.issuer(), detail).attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Read));
    r
}

/// The signed-in member of staff who may attach images to any patient's record.
fn reconciler(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    super::staff::staff(state, headers, AccessAction::Store)
}

/// `GET /portal/uploads`: the uploads waiting, oldest first.
pub async fn waiting(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match reconciler(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let up = match uploads(&state) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(Ok(list)) = tokio::task::spawn_blocking(move || up.pending()).await else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The uploads could not be listed.",
            false,
        );
    };
    let mut w = What {
        action: Some(Action::Query),
        query: Some("uploads waiting".into()),
        ..What::default()
    };
    for u in &list {
        w.patients.push(PatientAccess {
            id: u.summary.patient_id.clone(),
            issuer: (!u.summary.issuer.is_empty()).then(|| u.summary.issuer.clone()),
            ..PatientAccess::default()
        });
    }
    let page = Page::new("Images sent by patients")
        .session(&s)
        .body(html! {
            h1 { "Images sent by patients" }
            p { "Check that each upload's images are of the patient who sent them, then add them to the patient's record or decline them." }
            @if list.is_empty() {
                p { "No upload is waiting." }
            } @else {
                table {
                    caption { "Waiting, oldest first" }
                    thead { tr { th scope="col" { "Sent" } th scope="col" { "By patient" } th scope="col" { "Images" } th scope="col" { "Check" } } }
                    tbody {
                        @for u in &list {
                            tr {
                                td { (when(u.created)) }
                                td { (u.summary.patient_id) @if let Some(n) = &u.summary.patient_name { " (" (n) ")" } }
                                td { (u.files) }
                                td { a href={ "/portal/uploads/" (u.id) } { "Check upload " (short(&u.id)) } }
                            }
                        }
                    }
                }
            }
        })
        .render();
    let mut r = w.attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Search));
    r
}

fn found(up: &Uploads, id: &str) -> Result<Upload, Response> {
    match up.get(id) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(message(
            StatusCode::NOT_FOUND,
            "No such upload",
            "There is no such upload.",
            false,
        )),
        Err(_) => Err(message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The upload could not be read.",
            false,
        )),
    }
}

/// `GET /portal/uploads/{id}`: what the files say beside who sent them, and the decision.
pub async fn check(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match reconciler(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let up = match uploads(&state) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let u = match found(&up, &id) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let sm = &u.summary;
    let page = Page::new("Check an upload")
        .session(&s)
        .body(html! {
            h1 { "Check upload " (short(&u.id)) }
            p { "Sent " (when(u.created)) " by the patient signed in as " strong { (sm.patient_id) } @if !sm.issuer.is_empty() { " (issuer " (sm.issuer) ")" } @if let Some(n) = &sm.patient_name { ", " (n) } "." }
            table {
                caption { "What the files say" }
                thead { tr { th scope="col" { "Study" } th scope="col" { "Patient's name" } th scope="col" { "Patient ID" } th scope="col" { "Birth date" } th scope="col" { "Sex" } } }
                tbody {
                    @for st in &sm.studies {
                        tr {
                            td { (describe(st)) }
                            td { (st.patient_name) }
                            td { (st.patient_id) @if !st.issuer.is_empty() { " (" (st.issuer) ")" } }
                            td { @if !st.birth_date.is_empty() { (pages::date(&st.birth_date)) } }
                            td { (st.sex) }
                        }
                    }
                }
            }
            @if !sm.left_out.is_empty() {
                p { "Left out when received: " @for (i, (why, n)) in sm.left_out.iter().enumerate() { @if i > 0 { "; " } (n) " " (why) } "." }
            }
            @if u.status == Status::Pending {
                form method="post" action={ "/portal/uploads/" (u.id) } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    p { "Adding them gives the images this patient's ID here; the IDs they came with are kept in the images as other IDs of the patient." }
                    p {
                        button type="submit" name="decision" value="attach" { "They are this patient's: add them to the record" }
                    }
                    p {
                        label for="reason" { "Reason for declining (shown to the patient)" }
                        " "
                        select id="reason" name="reason" {
                            option value="not-theirs" { "They are not this patient's images" }
                            option value="unreadable" { "They cannot be used" }
                        }
                        " "
                        button type="submit" name="decision" value="decline" { "Decline and delete them" }
                    }
                }
            } @else {
                p { "Decided " @if let Some(d) = u.decided { (when(d)) } @if let Some(b) = &sm.decided_by { " by " (b) } ": " (sm.outcome.as_deref().unwrap_or(u.status.words())) }
            }
        })
        .render();
    let w = what_for(
        Action::Upload,
        &sm.patient_id,
        &sm.issuer,
        format!(
            "looked at the images you sent (upload {}) to check they are yours",
            short(&u.id)
        ),
    );
    let mut r = w.attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Read));
    r
}

/// The form of `POST /portal/uploads/{id}`.
#[derive(serde::Deserialize)]
pub struct Decision {
    csrf: String,
    decision: String,
    reason: Option<String>,
}

/// `POST /portal/uploads/{id}`: attaches the upload to its patient (reconciled, then stored
/// with every ingest check) or declines it; either way its files leave the quarantine.
pub async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Decision>,
) -> Response {
    let s = match reconciler(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes()) {
        return message(
            StatusCode::FORBIDDEN,
            "Nothing was done",
            "This form is out of date. Please go back, reload the page and try again.",
            false,
        );
    }
    let up = match uploads(&state) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let u = match found(&up, &id) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if u.status != Status::Pending {
        return message(
            StatusCode::CONFLICT,
            "Already decided",
            "Someone has already decided on this upload.",
            false,
        );
    }
    let by = s
        .name
        .clone()
        .unwrap_or_else(|| s.principal.subject.clone());
    let (patient_id, issuer) = (u.summary.patient_id.clone(), u.summary.issuer.clone());
    match f.decision.as_str() {
        "decline" => {
            let why = match f.reason.as_deref() {
                Some("unreadable") => "they cannot be used",
                _ => "they are not your images, as far as staff could tell",
            };
            let words = format!("not added: {why}; deleted");
            let uid = u.id.clone();
            let done = {
                let (up, by) = (up.clone(), by.clone());
                tokio::task::spawn_blocking(move || {
                    up.decide(&uid, Status::Declined, &by, words, now())
                })
                .await
            };
            if !matches!(done, Ok(Ok(_))) {
                return message(
                    StatusCode::CONFLICT,
                    "Nothing was done",
                    "The upload could not be declined (perhaps someone decided meanwhile).",
                    false,
                );
            }
            let page = Page::new("Upload declined")
                .session(&s)
                .body(html! {
                    h1 { "Upload declined" }
                    p { "The images were deleted. The patient sees that they were not added, and why." }
                    p { a href="/portal/uploads" { "Back to the uploads waiting" } }
                })
                .render();
            let detail = format!(
                "did not add the images you sent (upload {}) to your record ({why}); they were deleted",
                short(&u.id)
            );
            let mut r = what_for(Action::Upload, &patient_id, &issuer, detail).attach(page);
            r.extensions_mut()
                .insert(pages::caller(&s, AccessAction::Store));
            r
        }
        "attach" => attach(state, s, up, u, by).await,
        _ => message(
            StatusCode::BAD_REQUEST,
            "Nothing was done",
            "Choose to add or to decline.",
            false,
        ),
    }
}

async fn attach(state: AppState, s: Session, up: Arc<Uploads>, u: Upload, by: String) -> Response {
    let (patient_id, issuer) = (u.summary.patient_id.clone(), u.summary.issuer.clone());
    let handle: Handle = state.store.patient(&patient_id, &issuer);
    // The files, reconciled to the patient's ID here (CPU work: off the runtime's threads).
    let made = {
        let (up, uid, pid, iss) = (up.clone(), u.id.clone(), patient_id.clone(), issuer.clone());
        tokio::task::spawn_blocking(move || {
            // Attribute Modification DateTime (DT), in UTC.
            let mut stamp: String = radveil_ledger::rfc3339_now()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            stamp.push_str("+0000");
            up.files(&uid).map(|files| {
                files
                    .iter()
                    .map(|f| super::upload::reconcile(f, &pid, &iss, &stamp))
                    .collect::<Vec<_>>()
            })
        })
        .await
    };
    let Ok(Ok(reconciled)) = made else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Nothing was done",
            "The upload's images could not be read.",
            false,
        );
    };
    let total = reconciled.len();
    let mut bodies = Vec::with_capacity(total);
    let mut unreadable = 0usize;
    for r in reconciled {
        match r {
            Ok(b) => bodies.push(Bytes::from(b)),
            Err(_) => unreadable += 1,
        }
    }
    let results = crate::stow::store_made(&state, Scope::Patient(handle), bodies).await;
    if results
        .iter()
        .any(|r| matches!(r, Stored::Failed(_, why) if why.reason == instance::OUT_OF_RESOURCES))
    {
        // Transient: nothing is decided, the upload stays waiting for another try.
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not finished",
            "The store could not take every image just now. The upload is still waiting; please try again later.",
            false,
        );
    }
    let mut w = What {
        action: Some(Action::Store),
        ..What::default()
    };
    let mut added = 0usize;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        match r {
            Stored::Ok(id) => {
                added += 1;
                w.add(&id.patient_id, &id.issuer, crate::stow::study_ref(id));
            }
            Stored::Failed(_, why) => *refused.entry(why.why.clone()).or_default() += 1,
        }
    }
    if unreadable > 0 {
        refused.insert("could not be read again".into(), unreadable);
    }
    let not_added: usize = refused.values().sum();
    let words = if not_added == 0 {
        format!("added all {added} images to the record")
    } else {
        format!("added {added} of {total} images to the record; {not_added} could not be added")
    };
    let decided = {
        let (uid, words) = (u.id.clone(), words.clone());
        tokio::task::spawn_blocking(move || up.decide(&uid, Status::Attached, &by, words, now()))
            .await
    };
    if !matches!(decided, Ok(Ok(_))) {
        tracing::error!("an attached upload's decision could not be recorded");
    }
    if w.patients.is_empty() {
        w = what_for(Action::Store, &patient_id, &issuer, String::new());
    }
    // The studies as the patient knows them ("your CT study of 3 March 2026"), from the
    // catalogue that now holds them.
    for study in w.patients.iter_mut().flat_map(|p| p.studies.iter_mut()) {
        let h = state.store.uid(Level::Study, &study.uid);
        (study.modality, study.date, study.description) = state.catalogue.describe(&h);
    }
    w.detail = Some(format!(
        "from the images you sent (upload {}), after checking they are yours",
        short(&u.id)
    ));
    let page = Page::new("Upload added")
        .session(&s)
        .body(html! {
            h1 { "Upload added" }
            p { (words) "." }
            @if !refused.is_empty() {
                ul { @for (why, n) in &refused { li { (n) ": " (why) } } }
            }
            p { a href="/portal/uploads" { "Back to the uploads waiting" } }
        })
        .render();
    let mut r = w.attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Store));
    r
}
