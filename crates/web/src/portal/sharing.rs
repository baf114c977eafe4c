//! The share pages: a patient makes a link to one study (`/portal/share`), sees and revokes
//! their links (`/portal/shares`); whoever holds a link opens it at `/s/{secret}` (with its
//! PIN when it needs one) and lands in the viewer on that study, seeing nothing else
//! ([`super::share`] keeps the links; the session it opens sees one study). Each of these
//! is an audit event the patient reads in their access log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use radveil_access::{Action as AccessAction, PatientRef, Principal};
use radveil_audit::Action;
use radveil_store::{Handle, Level};

use super::pages::{self, message, Page};
use super::session::{self, constant_time_eq, now, set_cookie, Session, SHARE_COOKIE};
use super::share::{Refused, Share, Shares, DEFAULT_DAYS};
use crate::app::AppState;
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

/// The signed-in patient of a request, with their store handle.
fn patient(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Session, PatientRef, Handle), Response> {
    let Some(s) = state.portal.sessions.of(headers) else {
        return Err(pages::signed_out(state));
    };
    let Some(p) = pages::patient_of(&s) else {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not for staff accounts",
            "Links are made by patients on their own account.",
            false,
        ));
    };
    let h = state.store.patient(p.id(), p.issuer());
    Ok((s, p, h))
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
    let (s, _, h) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let study = state.store.uid(Level::Study, &q.study);
    if state
        .catalogue
        .patient_of(&study)
        .is_none_or(|(owner, ..)| owner != h)
    {
        return message(
            StatusCode::NOT_FOUND,
            "No such study",
            "There is no such study of yours.",
            false,
        );
    }
    let (modality, date, description) = state.catalogue.describe(&study);
    let name = format!(
        "{} {}",
        modality.unwrap_or_default(),
        date.as_deref().map(pages::date).unwrap_or_default()
    );
    Page::new("Share a study")
        .session(&s)
        .body(html! {
            h1 { "Share a study" }
            p { "Make a link that lets someone (another doctor, a relative) look at this study, and nothing else, without an account. Anyone who has the link can open it until it ends, so send it only to the person you mean. You can stop it at any time." }
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
        .render()
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
    let (s, p, h) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
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
    let study = state.store.uid(Level::Study, &f.study);
    if state
        .catalogue
        .patient_of(&study)
        .is_none_or(|(owner, ..)| owner != h)
    {
        return message(
            StatusCode::NOT_FOUND,
            "No such study",
            "There is no such study of yours.",
            false,
        );
    }
    let days = f.days.unwrap_or(DEFAULT_DAYS);
    let pin = f.pin.filter(|p| !p.is_empty());
    let uid = f.study.clone();
    let who = (p.id().to_string(), p.issuer().to_string());
    let made = tokio::task::spawn_blocking(move || {
        shares.create(
            h,
            (&who.0, &who.1),
            study,
            &uid,
            days,
            pin.as_deref(),
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
            p { "This is the only time the link is shown. You can stop it on " a href="/portal/shares" { "your links" } " page." }
        })
        .render();
    let mut r = what(&state, &h, &f.study, detail).attach(page);
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::Read));
    r
}

/// `GET /portal/shares`: the patient's links.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (s, _, h) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let shares = match shares(&state) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let links = match tokio::task::spawn_blocking(move || shares.list(&h)).await {
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
    Page::new("Your links")
        .session(&s)
        .body(html! {
            h1 { "Your links" }
            @if links.is_empty() {
                p { "You have not shared any study." }
            } @else {
                table {
                    caption { "Links you made, newest first" }
                    thead { tr { th scope="col" { "Study" } th scope="col" { "Made" } th scope="col" { "State" } th scope="col" { "Stop" } } }
                    tbody {
                        @for sh in &links {
                            tr {
                                td { (describe(sh)) }
                                td { (when(sh.created)) }
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
    let (s, _, h) = match patient(&state, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
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
    let done = tokio::task::spawn_blocking(move || {
        let study = shares
            .list(&h)?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.study_uid);
        let revoked = shares.revoke(&h, &id, now())?;
        Ok::<_, super::share::ShareError>((revoked, study))
    })
    .await;
    match done {
        Ok(Ok((true, Some(study_uid)))) => {
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
    let principal = Arc::new(Principal {
        issuer: SHARE_ISSUER.into(),
        subject: format!("share-link:{}", share.id),
        client: Some("share-link".into()),
        roles: Vec::new(),
        scopes: radveil_access::smart::Scopes::parse(["patient/ImagingStudy.rs"]),
        patient: Some(patient_ref),
        name: Some(SHARE_NAME.into()),
    });
    let opened = state.portal.sessions.open_scoped(
        Arc::clone(&principal),
        Some(SHARE_NAME.into()),
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
