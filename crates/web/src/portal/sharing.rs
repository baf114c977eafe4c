//! The share pages: a patient makes a link to one study (`/portal/share`), sees and revokes
//! their links (`/portal/shares`); a member of staff who may read images does the same for
//! a study their access reaches, found by the patient's ID (`/portal/patient`), sees and
//! stops the links they made, and the patient sees those links among theirs and can stop
//! them too; whoever holds a link opens it at `/s/{secret}` (with its
//! PIN when it needs one) and lands in the viewer on that study, seeing nothing else
//! ([`super::share`] keeps the links; the session it opens sees one study). Each of these
//! is an audit event the patient reads in their access log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use radveil_access::{Action as AccessAction, Compartment, PatientRef, Principal};
use radveil_audit::Action;
use radveil_store::{Handle, Level};

use super::pages::{self, message, Page};
use super::session::{self, constant_time_eq, now, set_cookie, Session, SHARE_COOKIE};
use super::share::{maker_key, Maker, NewLink, Refused, Share, Shares, DEFAULT_DAYS};
use crate::app::AppState;
use crate::audit::PatientOf;
use crate::audit::What;
use crate::auth::Caller;
use crate::scope::Scope;

/// The `iss` of the principal a share session acts as (not a token issuer: no token
/// names it, so none is ever verified as coming from it).
pub const SHARE_ISSUER: &str = "urn:radveil:share-link";
/// How a share link's user is named in the audit trail and the patient's access log.
pub const SHARE_NAME: &str = "Someone you shared a link with";

fn shares(state: &AppState) -> Result<Arc<Shares>, Response> {
    state.portal.shares.clone().ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            "Sharing is not set up",
            "This server does not make share links.",
            false,
        )
    })
}

/// "10 December 2026 at 14:02 UTC" from Unix seconds.
pub(crate) fn when(t: u64) -> String {
    let days = (t / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let secs = t % 86_400;
    format!(
        "{} at {:02}:{:02} UTC",
        pages::date(&format!("{y:04}{m:02}{d:02}")),
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Who makes and stops links: a patient, for their own studies, or a member of staff who
/// may read images, for the studies their access reaches.
enum Who {
    Patient(Session, Handle),
    Staff(Session, Compartment),
}

impl Who {
    fn session(&self) -> &Session {
        match self {
            Who::Patient(s, _) | Who::Staff(s, _) => s,
        }
    }

    /// A member of staff's key for their links, and their name as the patient reads it.
    fn maker(&self) -> Option<([u8; 32], String)> {
        let Who::Staff(s, _) = self else {
            return None;
        };
        let p = &s.principal;
        let name = s.name.clone().unwrap_or_else(|| p.subject.clone());
        let role = p.roles.first().map(|r| r.name()).unwrap_or("staff");
        Some((maker_key(&p.issuer, &p.subject), format!("{name} ({role})")))
    }
}

/// The signed-in patient, or staff allowed to read images, or the page refusing them.
fn who(state: &AppState, headers: &HeaderMap) -> Result<Who, Response> {
    let Some(s) = state.portal.sessions.of(headers) else {
        return Err(pages::signed_out(state));
    };
    if let Some(p) = pages::patient_of(&s) {
        let h = state.store.patient(p.id(), p.issuer());
        return Ok(Who::Patient(s, h));
    }
    match s.principal.decide(AccessAction::Read, None) {
        Ok(g) => Ok(Who::Staff(s, g.compartment)),
        Err(_) => Err(message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Links are made by patients, and by staff who may read images.",
            false,
        )),
    }
}

/// The study `uid` when `who` may share it: its handle and its patient's (handle, ID,
/// issuer).
fn shareable(state: &AppState, who: &Who, uid: &str) -> Option<(Handle, PatientOf)> {
    let study = state.store.uid(Level::Study, uid);
    let owner = state.catalogue.patient_of(&study)?;
    let allowed = match who {
        Who::Patient(_, h) => owner.0 == *h,
        Who::Staff(_, Compartment::All) => true,
        Who::Staff(_, Compartment::Patient(p)) => {
            state.store.patient(p.id(), p.issuer()) == owner.0
        }
    };
    allowed.then_some((study, owner))
}

fn no_such_study() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "No such study",
        "There is no such study you may share.",
        false,
    )
}

/// The audit record of a share event on `study` of the signed-in patient `p`.
fn what(state: &AppState, p: &Handle, study_uid: &str, detail: String) -> What {
    let mut w = crate::audit::study(state, &Scope::Patient(*p), study_uid, None, None, None);
    w.action = Some(Action::Share);
    w.detail = Some(detail);
    w
}

/// The form of `GET /portal/share?study=…`.
#[derive(serde::Deserialize)]
pub struct StudyQuery {
    study: String,
}

/// `GET /portal/share?study=UID`: the form to make a link.
pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StudyQuery>,
) -> Response {
    let who = match who(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((study, owner)) = shareable(&state, &who, &q.study) else {
        return no_such_study();
    };
    let s = who.session();
    let staff = matches!(who, Who::Staff(..));
    let (modality, date, description) = state.catalogue.describe(&study);
    let name = format!(
        "{} {}",
        modality.unwrap_or_default(),
        date.as_deref().map(pages::date).unwrap_or_default()
    );
    let page = Page::new("Share a study")
        .session(s)
        .body(html! {
            h1 { "Share a study" }
            @if staff {
                p { "Make a link that lets someone (a colleague elsewhere, the patient, their family) look at this study, and nothing else, without an account. Anyone who has the link can open it until it ends, so send it only to the person you mean. The patient sees the link among theirs and can stop it; so can you, on " a href="/portal/shares" { "the links you made" } "." }
                p { "Patient ID " strong { (owner.1) } @if !owner.2.is_empty() { " (" (owner.2) ")" } }
            } @else {
                p { "Make a link that lets someone (another doctor, a relative) look at this study, and nothing else, without an account. Anyone who has the link can open it until it ends, so send it only to the person you mean. You can stop it at any time." }
            }
            p { strong { (name) } " " (description.unwrap_or_default()) }
            form method="post" action="/portal/share" {
                input type="hidden" name="csrf" value=(s.csrf);
                input type="hidden" name="study" value=(q.study);
                p {
                    label for="days" { "The link works for" }
                    " "
                    select id="days" name="days" {
                        @for d in [1u64, 2, 3, 7, 14, 30] {
                            option value=(d) selected[d == DEFAULT_DAYS] { (d) @if d == 1 { " day" } @else { " days" } }
                        }
                    }
                }
                p {
                    label for="pin" { "PIN (optional, 4 to 12 digits; tell it to the person separately)" }
                    " "
                    input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="off" pattern="[0-9]{4,12}";
                }
                button type="submit" { "Make the link" }
            }
        })
        .render();
    if !staff {
        return page;
    }
    // Staff looking at a patient's study: in the audit trail and the patient's log.
    let mut w = crate::audit::study(&state, &Scope::Patient(owner.0), &q.study, None, None, None);
    w.action = Some(Action::Query);
    let mut r = w.attach(page);
    r.extensions_mut()
        .insert(pages::caller(s, AccessAction::Search));
    r
}

/// The form of `GET /portal/patient`.
#[derive(serde::Deserialize)]
pub struct PatientQuery {
    #[serde(default)]
    patient: String,
    #[serde(default)]
    issuer: String,
}

/// `GET /portal/patient?patient=ID&issuer=`: for staff who may read images, a patient's
/// studies (within their access) with a link to share each; the search is audited as a
/// query of that patient, so it is in the patient's access log.
pub async fn find(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PatientQuery>,
) -> Response {
    let who = match who(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Who::Staff(s, compartment) = &who else {
        return message(
            StatusCode::FORBIDDEN,
            "Not for patients",
            "Your own studies are on your home page.",
            false,
        );
    };
    let (patient, issuer) = (q.patient.trim(), q.issuer.trim());
    let form = html! {
        form method="get" action="/portal/patient" {
            p {
                label for="patient" { "Patient ID" } " " input id="patient" name="patient" type="text" required maxlength="64" value=(patient);
                " " label for="issuer" { "Issuer (optional)" } " " input id="issuer" name="issuer" type="text" maxlength="64" value=(issuer);
                " " button type="submit" { "Find" }
            }
        }
    };
    let page = |body: maud::Markup, status: StatusCode| {
        Page::new("Share a patient's study")
            .session(s)
            .status(status)
            .body(html! { h1 { "Share a patient's study" } (form) (body) })
            .render()
    };
    if patient.is_empty() {
        return page(html! {}, StatusCode::OK);
    }
    let Some(pr) = PatientRef::new(patient, issuer) else {
        return page(
            html! { p role="alert" { "A Patient ID and issuer are at most 64 characters of text." } },
            StatusCode::BAD_REQUEST,
        );
    };
    let h = state.store.patient(pr.id(), pr.issuer());
    if let Compartment::Patient(mine) = compartment {
        if state.store.patient(mine.id(), mine.issuer()) != h {
            return page(
                html! { p { "Your access does not reach this patient's images." } },
                StatusCode::FORBIDDEN,
            );
        }
    }
    let scope = Scope::Patient(h);
    let Ok((rows, results)) = pages::studies(&state, &scope).await else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The studies could not be listed just now.",
            false,
        );
    };
    let body = html! {
        @if rows.is_empty() {
            p { "No studies of this patient are here." }
        } @else {
            table {
                caption { "The patient's studies, newest first" }
                thead { tr { th scope="col" { "Date" } th scope="col" { "Type" } th scope="col" { "Body part" } th scope="col" { "Description" } th scope="col" { "Images" } th scope="col" { "Share" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.date.as_deref().map(pages::date).unwrap_or_default()) }
                            td { (r.modalities.as_deref().unwrap_or("")) }
                            td { (r.body_parts.join(", ")) }
                            td { (r.description.as_deref().unwrap_or("")) }
                            td { (r.images.as_deref().unwrap_or("")) }
                            td {
                                a href={ "/portal/share?study=" (r.uid) } {
                                    "Make a link" span class="visually-hidden" { " to the study of " (r.date.as_deref().map(pages::date).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut what = crate::qido::searched(
        &state,
        &scope,
        &[("portal".to_string(), "patient's studies".to_string())],
        &results,
    );
    what.action = Some(Action::Query);
    if what.patients.is_empty() {
        what.patients.push(radveil_audit::PatientAccess {
            id: pr.id().to_string(),
            issuer: (!pr.issuer().is_empty()).then(|| pr.issuer().to_string()),
            ..radveil_audit::PatientAccess::default()
        });
    }
    let mut r = what.attach(page(body, StatusCode::OK));
    r.extensions_mut()
        .insert(pages::caller(s, AccessAction::Search));
    r
}

/// The form of `POST /portal/share`.
#[derive(serde::Deserialize)]
pub struct CreateForm {
    csrf: String,
    study: String,
    days: Option<u64>,
    pin: Option<String>,
}

/// The public URL of the link `secret`.
fn link_url(state: &AppState, headers: &HeaderMap, secret: &str) -> String {
    let base = crate::app::base_url(state, headers);
    let origin = base.trim_end_matches("/dicom-web");
    format!("{origin}/s/{secret}")
}

/// `POST /portal/share`: makes the link and shows it, once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Response {
    let who = match who(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let s = who.session().clone();
    if !constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes()) {
        return message(
            StatusCode::FORBIDDEN,
            "No link made",
            "This form is out of date. Please go back, reload the page and try again.",
            false,
        );
    }
    let shares = match shares(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((study, (h, patient_id, issuer))) = shareable(&state, &who, &f.study) else {
        return no_such_study();
    };
    let days = f.days.unwrap_or(DEFAULT_DAYS);
    let pin = f.pin.filter(|p| !p.is_empty());
    let uid = f.study.clone();
    let maker = who.maker();
    let made = tokio::task::spawn_blocking(move || {
        shares.make(
            &NewLink {
                patient: h,
                patient_id: (&patient_id, &issuer),
                study,
                study_uid: &uid,
                days,
                pin: pin.as_deref(),
                maker: maker.as_ref().map(|(key, name)| Maker { key: *key, name }),
            },
            now(),
        )
    })
    .await;
    let (secret, share) = match made {
        Ok(Ok(x)) => x,
        Ok(Err(super::share::ShareError::Invalid(why))) => {
            return message(StatusCode::BAD_REQUEST, "No link made", why, false)
        }
        _ => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No link made",
                "Please try again later.",
                false,
            )
        }
    };
    let staff = matches!(who, Who::Staff(..));
    let url = link_url(&state, &headers, &secret);
    let detail = format!(
        "made a link{} (good until {}) to share",
        if share.pin { " with a PIN" } else { "" },
        when(share.expires)
    );
    let page = Page::new("Your link")
        .session(&s)
        .body(html! {
            h1 { "Your link" }
            p { "Send this link to the person you want to show the study to. It works until " (when(share.expires)) "." @if share.pin { " They also need the PIN you chose." } }
            p { label for="link" { "Link" } " " input id="link" type="text" readonly value=(url) size="80"; }
            @if staff {
                p { "This is the only time the link is shown. The patient sees it among their links and can stop it; you can stop it on " a href="/portal/shares" { "the links you made" } "." }
            } @else {
                p { "This is the only time the link is shown. You can stop it on " a href="/portal/shares" { "your links" } " page." }
            }
        })
        .render();
    let mut r = what(&state, &h, &f.study, detail).attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Read));
    r
}

/// `GET /portal/shares`: the patient's links (theirs and those staff made to their
/// studies), or the links a member of staff made.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let who = match who(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let shares = match shares(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let s = who.session().clone();
    let staff = matches!(who, Who::Staff(..));
    let found = match (&who, who.maker()) {
        (Who::Patient(_, h), _) => {
            let h = *h;
            tokio::task::spawn_blocking(move || shares.list(&h)).await
        }
        (_, Some((key, _))) => tokio::task::spawn_blocking(move || shares.made_by(&key)).await,
        (Who::Staff(..), None) => return no_such_study(),
    };
    let links = match found {
        Ok(Ok(l)) => l,
        _ => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your links could not be listed just now.",
                false,
            )
        }
    };
    let t = now();
    let describe = |sh: &Share| {
        let st = state.store.uid(Level::Study, &sh.study_uid);
        let (m, d, desc) = state.catalogue.describe(&st);
        format!(
            "{} {} {}",
            m.unwrap_or_default(),
            d.as_deref().map(pages::date).unwrap_or_default(),
            desc.unwrap_or_default()
        )
    };
    let title = if staff {
        "Links you made"
    } else {
        "Your links"
    };
    Page::new(title)
        .session(&s)
        .body(html! {
            h1 { (title) }
            @if links.is_empty() {
                @if staff {
                    p { "You have not shared any study. To share one, " a href="/portal/patient" { "find the patient's studies" } "." }
                } @else {
                    p { "You have not shared any study." }
                }
            } @else {
                table {
                    caption { @if staff { "Links you made, newest first" } @else { "Links to your studies, newest first" } }
                    thead { tr { @if staff { th scope="col" { "Patient ID" } } th scope="col" { "Study" } th scope="col" { "Made" } th scope="col" { "State" } th scope="col" { "Stop" } } }
                    tbody {
                        @for sh in &links {
                            tr {
                                @if staff { td { (sh.patient_id.0) } }
                                td { (describe(sh)) }
                                td {
                                    (when(sh.created))
                                    @if !staff { @if let Some(by) = &sh.made_by { " by " (by) } }
                                }
                                td {
                                    @if let Some(r) = sh.revoked { "Stopped on " (when(r)) }
                                    @else if t >= sh.expires { "Ended on " (when(sh.expires)) }
                                    @else if !sh.live(t) { "Locked after wrong PINs" }
                                    @else { "Works until " (when(sh.expires)) @if sh.pin { " (with PIN)" } }
                                }
                                td {
                                    @if sh.live(t) {
                                        form method="post" action="/portal/shares/revoke" {
                                            input type="hidden" name="csrf" value=(s.csrf);
                                            input type="hidden" name="id" value=(sh.id);
                                            button type="submit" class="secondary" { "Stop this link" span class="visually-hidden" { " made " (when(sh.created)) } }
                                        }
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

/// The form of `POST /portal/shares/revoke`.
#[derive(serde::Deserialize)]
pub struct RevokeForm {
    csrf: String,
    id: String,
}

/// `POST /portal/shares/revoke`: stops a link (and every session opened with it).
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let who = match who(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let s = who.session().clone();
    if !constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes()) {
        return message(
            StatusCode::FORBIDDEN,
            "Not stopped",
            "This form is out of date. Please go back, reload the page and try again.",
            false,
        );
    }
    let shares = match shares(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = f.id.clone();
    let patient = match &who {
        Who::Patient(_, h) => Some(*h),
        Who::Staff(..) => None,
    };
    let maker = who.maker().map(|(key, _)| key);
    let done = tokio::task::spawn_blocking(move || {
        let (mine, revoked) = match (patient, maker) {
            (Some(h), _) => (shares.list(&h)?, shares.revoke(&h, &id, now())?),
            (None, Some(key)) => (
                shares.made_by(&key)?,
                shares.revoke_made_by(&key, &id, now())?,
            ),
            (None, None) => (Vec::new(), false),
        };
        let found = mine
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| (x.patient, x.study_uid));
        Ok::<_, super::share::ShareError>((revoked, found))
    })
    .await;
    match done {
        Ok(Ok((true, Some((h, study_uid))))) => {
            state.portal.sessions.close_link(&f.id);
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/portal/shares"));
            let mut r = what(
                &state,
                &h,
                &study_uid,
                "stopped the link that shared".into(),
            )
            .attach(r);
            r.extensions_mut()
                .insert(pages::caller(&s, AccessAction::Read));
            r
        }
        Ok(Ok(_)) => message(
            StatusCode::NOT_FOUND,
            "No such link",
            "You have no such link.",
            false,
        ),
        _ => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not stopped",
            "Please try again later.",
            false,
        ),
    }
}

/// The page asking for a link's PIN.
fn pin_page(secret: &str, why: Option<&str>, status: StatusCode) -> Response {
    Page::new("A shared study")
        .status(status)
        .body(html! {
            h1 { "A shared study" }
            p { "The person who shared this study with you chose a PIN. They should have told you it separately." }
            @if let Some(w) = why { p role="alert" { strong { (w) } } }
            form method="post" action={ "/s/" (secret) } {
                p {
                    label for="pin" { "PIN" } " "
                    input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="off" required;
                }
                button type="submit" { "Open the study" }
            }
        })
        .render()
}

/// The form of `POST /s/{secret}`.
#[derive(serde::Deserialize)]
pub struct PinForm {
    pin: String,
}

/// `GET /s/{secret}`: opens a link (or asks for its PIN).
pub async fn open(State(state): State<AppState>, Path(secret): Path<String>) -> Response {
    redeem(state, secret, None).await
}

/// `POST /s/{secret}`: opens a link with its PIN.
pub async fn open_with_pin(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    Form(f): Form<PinForm>,
) -> Response {
    redeem(state, secret, Some(f.pin)).await
}

async fn redeem(state: AppState, secret: String, pin: Option<String>) -> Response {
    let shares = match shares(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let s2 = secret.clone();
    let done = tokio::task::spawn_blocking(move || shares.redeem(&s2, pin.as_deref(), now())).await;
    let share = match done {
        Ok(Ok(Ok(share))) => share,
        Ok(Ok(Err(refused))) => {
            return match refused {
                Refused::PinNeeded => pin_page(&secret, None, StatusCode::OK),
                Refused::WrongPin(left) => pin_page(
                    &secret,
                    Some(&format!("That PIN is not right. {left} tr{} left.", if left == 1 { "y" } else { "ies" })),
                    StatusCode::FORBIDDEN,
                ),
                Refused::Locked => message(StatusCode::FORBIDDEN, "This link is locked", "The PIN was wrong too many times. Ask the person who shared it for a new link.", false),
                Refused::Expired => message(StatusCode::GONE, "This link has ended", "Ask the person who shared it for a new link.", false),
                Refused::Revoked => message(StatusCode::GONE, "This link was stopped", "The person who shared it stopped it.", false),
                Refused::Unknown => message(StatusCode::NOT_FOUND, "No such link", "Check that you copied the whole link.", false),
            };
        }
        _ => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again later.",
                false,
            )
        }
    };
    let Some(patient_ref) = PatientRef::new(&share.patient_id.0, &share.patient_id.1) else {
        return message(
            StatusCode::NOT_FOUND,
            "No such link",
            "This link does not open.",
            false,
        );
    };
    // In the patient's log: "Someone you shared a link with", or the staff member's.
    let name = match &share.made_by {
        Some(by) => format!("Someone {by} shared a link with"),
        None => SHARE_NAME.to_string(),
    };
    let principal = Arc::new(Principal {
        issuer: SHARE_ISSUER.into(),
        subject: format!("share-link:{}", share.id),
        client: Some("share-link".into()),
        roles: Vec::new(),
        scopes: radveil_access::smart::Scopes::parse(["patient/ImagingStudy.rs"]),
        patient: Some(patient_ref),
        name: Some(name.clone()),
    });
    let opened = state.portal.sessions.open_scoped(
        Arc::clone(&principal),
        Some(name),
        share.expires,
        Some((share.study, share.id.clone())),
    );
    let (value, _) = match opened {
        Ok(x) => x,
        Err(_) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "Too many people are opening links right now.",
                false,
            )
        }
    };
    let viewer = format!("/viewer/viewer?StudyInstanceUIDs={}", share.study_uid);
    let max_age = share
        .expires
        .saturating_sub(now())
        .min(session::MAX_LIFETIME);
    // A page, not a redirect: the share cookie is SameSite=Strict and the link usually comes
    // from another site (an e-mail); the page's own navigation is same-site.
    let page = Page::new("A shared study")
        .refresh(&viewer)
        .body(html! {
            h1 { "A shared study" }
            p { a href=(viewer) { "Open the study in the viewer" } }
        })
        .render();
    let mut r = page;
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SHARE_COOKIE,
        &value,
        "Strict",
        max_age,
        state.https,
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    let mut w = what(
        &state,
        &share.patient,
        &share.study_uid,
        "opened the link to".into(),
    );
    w.action = Some(Action::Share);
    let mut r = w.attach(r);
    r.extensions_mut().insert(Caller {
        principal: Some(principal),
        action: AccessAction::Read,
        grant: None,
    });
    r
}
