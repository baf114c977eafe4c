//! The portal's pages, rendered on the server ([`maud`] escapes every value), with no
//! script of their own: a strict Content Security Policy (`default-src 'none'`, the
//! stylesheet from `'self'`) and forms that carry the session's CSRF value.
//!
//! Every page that shows a patient's data is an audit event, like the DICOMweb request
//! that would show the same (the study list a query, the access log an audit read).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use radveil_access::{Action as AccessAction, Compartment, PatientRef, Principal};
use radveil_audit::{Action, Filter, PatientAccess};
use serde_json::Value;

use super::session::Session;
use crate::app::AppState;
use crate::audit::What;
use crate::auth::Caller;
use crate::scope::Scope;

/// The Content Security Policy of every portal page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The portal's stylesheet (served at `/portal/style.css`).
const STYLE: &str = include_str!("style.css");

/// A page being built.
pub struct Page {
    title: String,
    refresh: Option<String>,
    session: Option<Session>,
    body: Markup,
    status: StatusCode,
}

impl Page {
    /// A page titled `title`.
    pub fn new(title: &str) -> Page {
        Page {
            title: title.to_string(),
            refresh: None,
            session: None,
            body: html! {},
            status: StatusCode::OK,
        }
    }

    /// Goes on to `url` at once (a same-site navigation).
    pub fn refresh(mut self, url: &str) -> Page {
        self.refresh = Some(url.to_string());
        self
    }

    /// The signed-in user's navigation and sign-out button.
    pub fn session(mut self, s: &Session) -> Page {
        self.session = Some(s.clone());
        self
    }

    /// The page's main content.
    pub fn body(mut self, body: Markup) -> Page {
        self.body = body;
        self
    }

    /// The status the page is sent with.
    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    /// The response: HTML with the portal's security headers, never cached.
    pub fn render(self) -> Response {
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(u) = &self.refresh {
                        meta http-equiv="refresh" content={ "0;url=" (u) };
                    }
                    title { (self.title) " · radveil" }
                    link rel="stylesheet" href="/portal/style.css";
                }
                body {
                    a class="skip" href="#main" { "Skip to content" }
                    header {
                        p class="brand" { "radveil · your images" }
                        @if let Some(s) = &self.session {
                            nav aria-label="Portal" {
                                ul {
                                    @for (href, label) in links(&s.principal) {
                                        li { a href=(href) { (label) } }
                                    }
                                }
                            }
                            form method="post" action="/portal/logout" class="signout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                @if let Some(n) = &s.name {
                                    span { "Signed in as " (n) " " }
                                }
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main id="main" { (self.body) }
                }
            }
        };
        let mut r = (self.status, markup.into_string()).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        security_headers(h);
        r
    }
}

/// The headers every portal response carries.
fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The navigation a user gets, by who they are.
fn links(p: &Principal) -> Vec<(&'static str, &'static str)> {
    let mut l = vec![("/portal", "Home")];
    if p.patient.is_some() {
        l.push(("/portal/access-log", "Who has seen my images"));
        l.push(("/portal/consent", "My choices"));
        l.push(("/portal/shares", "My links"));
        l.push(("/portal/upload", "Send us images"));
    } else {
        l.extend(super::staff::links(p));
    }
    l
}

/// A page with a heading and one paragraph; `sign_in` adds a link to sign in again.
pub fn message(status: StatusCode, title: &str, text: &str, sign_in: bool) -> Response {
    Page::new(title)
        .status(status)
        .body(html! {
            h1 { (title) }
            p { (text) }
            @if sign_in {
                p { a href="/portal/login" { "Sign in" } }
            }
        })
        .render()
}

/// `GET /portal/style.css`.
pub async fn style() -> Response {
    let mut r = STYLE.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// The page for a browser without a session.
pub(crate) fn signed_out(state: &AppState) -> Response {
    Page::new("Sign in")
        .body(html! {
            h1 { "See your medical images" }
            p { "Here you can see your scans, who has looked at them, and choose whether they may be used for research or to train AI." }
            @if state.portal.signin.is_some() {
                p { a class="button" href="/portal/login" { "Sign in" } }
            } @else {
                p { "Signing in is not set up on this server. Ask the site's administrator." }
            }
        })
        .render()
}

/// The caller of a portal request, for the audit trail, as access control would have
/// made it for the same token.
pub(crate) fn caller(s: &Session, action: AccessAction) -> Caller {
    Caller {
        principal: Some(Arc::clone(&s.principal)),
        action,
        grant: s.principal.decide(action, None).ok(),
    }
}

/// The patient a session's token speaks for, when it is a patient's token.
pub(crate) fn patient_of(s: &Session) -> Option<PatientRef> {
    match s.principal.decide(AccessAction::Search, None) {
        Ok(g) => match g.compartment {
            Compartment::Patient(p) => Some(p),
            Compartment::All => None,
        },
        Err(_) => None,
    }
}

fn text(v: &Value, tag: u32) -> Option<String> {
    let a = v.get(format!("{tag:08X}"))?.get("Value")?;
    let all: Vec<String> = a
        .as_array()?
        .iter()
        .filter_map(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// "3 March 2026" from a DICOM date.
pub(crate) fn date(d: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let b = d.as_bytes();
    if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        let m: usize = d[4..6].parse().unwrap_or(0);
        let day: u32 = d[6..8].parse().unwrap_or(0);
        if let Some(name) = m.checked_sub(1).and_then(|i| MONTHS.get(i)) {
            return format!("{day} {name} {}", &d[..4]);
        }
    }
    d.to_string()
}

/// One row of the study list.
pub(super) struct StudyRow {
    pub(super) uid: String,
    pub(super) date: Option<String>,
    pub(super) modalities: Option<String>,
    pub(super) body_parts: Vec<String>,
    pub(super) description: Option<String>,
    pub(super) images: Option<String>,
}

/// The patient's studies, newest first, from the QIDO catalogue (a study search and a
/// series search for the body parts, both within the patient's scope).
pub(super) async fn studies(
    state: &AppState,
    scope: &Scope,
) -> Result<(Vec<StudyRow>, Vec<Value>), ()> {
    use crate::qido::{SearchQuery, Target};
    let params = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let base = "/dicom-web";
    let sq = SearchQuery::parse(
        &params(&[
            ("includefield", "StudyDescription"),
            ("includefield", "ModalitiesInStudy"),
            ("includefield", "NumberOfStudyRelatedInstances"),
            ("limit", "1000"),
        ]),
        Target::Studies,
    )
    .map_err(|_| ())?;
    let found = state
        .catalogue
        .search(&state.store, scope, &sq, Target::Studies, base)
        .await
        .map_err(|_| ())?;
    let series_q = SearchQuery::parse(
        &params(&[("includefield", "BodyPartExamined"), ("limit", "10000")]),
        Target::Series { study: None },
    )
    .map_err(|_| ())?;
    let series = state
        .catalogue
        .search(
            &state.store,
            scope,
            &series_q,
            Target::Series { study: None },
            base,
        )
        .await
        .map_err(|_| ())?;
    use radveil_standard::tags;
    let mut rows: Vec<StudyRow> = found
        .results
        .iter()
        .filter_map(|v| {
            Some(StudyRow {
                uid: text(v, tags::STUDY_INSTANCE_UID)?,
                date: text(v, tags::STUDY_DATE),
                modalities: text(v, tags::MODALITIES_IN_STUDY),
                body_parts: Vec::new(),
                description: text(v, tags::STUDY_DESCRIPTION),
                images: text(v, tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
            })
        })
        .collect();
    for se in &series.results {
        let (Some(study), Some(part)) = (
            text(se, tags::STUDY_INSTANCE_UID),
            text(se, tags::BODY_PART_EXAMINED),
        ) else {
            continue;
        };
        if let Some(r) = rows.iter_mut().find(|r| r.uid == study) {
            if !r.body_parts.contains(&part) {
                r.body_parts.push(part);
            }
        }
    }
    rows.sort_by(|a, b| b.date.cmp(&a.date));
    Ok((rows, found.results))
}

/// `GET /portal`: the patient's studies, or the staff's start page, or the sign-in page.
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = state.portal.sessions.of(&headers) else {
        return signed_out(&state);
    };
    let Some(p) = patient_of(&s) else {
        let links = super::staff::links(&s.principal);
        return Page::new("Portal")
            .session(&s)
            .body(html! {
                h1 { "Staff portal" }
                @if links.is_empty() {
                    p { "You are signed in with a staff account that has no page here. The patient's pages are for patients' own accounts." }
                } @else {
                    ul { @for (href, label) in &links { li { a href=(href) { (label) } } } }
                }
            })
            .render();
    };
    let scope = Scope::Patient(state.store.patient(p.id(), p.issuer()));
    let Ok((rows, results)) = studies(&state, &scope).await else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Your studies could not be listed just now. Please try again later.",
            false,
        );
    };
    let viewer = state.portal.viewer.is_some();
    let share = state.portal.shares.is_some();
    let page = Page::new("Your images").session(&s).body(html! {
        h1 { "Your images" }
        @if rows.is_empty() {
            p { "There are no images of you here." }
        } @else {
            p {
                a href="/me/download" { "Download a copy of all your images" }
                " (a zip file with the DICOM files, which any medical image viewer opens, and plain JPEG pictures)."
            }
            table {
                caption { "Your studies, newest first" }
                thead {
                    tr {
                        th scope="col" { "Date" }
                        th scope="col" { "Type" }
                        th scope="col" { "Body part" }
                        th scope="col" { "Description" }
                        th scope="col" { "Images" }
                        th scope="col" { "Open" }
                        th scope="col" { "Share" }
                        th scope="col" { "Copy" }
                    }
                }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.date.as_deref().map(date).unwrap_or_default()) }
                            td { (r.modalities.as_deref().unwrap_or("")) }
                            td { (r.body_parts.join(", ")) }
                            td { (r.description.as_deref().unwrap_or("")) }
                            td { (r.images.as_deref().unwrap_or("")) }
                            td {
                                @if viewer {
                                    a href={ "/viewer/viewer?StudyInstanceUIDs=" (r.uid) } {
                                        "View" span class="visually-hidden" { " the study of " (r.date.as_deref().map(date).unwrap_or_default()) }
                                    }
                                }
                            }
                            td {
                                @if share {
                                    a href={ "/portal/share?study=" (r.uid) } {
                                        "Share" span class="visually-hidden" { " the study of " (r.date.as_deref().map(date).unwrap_or_default()) }
                                    }
                                }
                            }
                            td {
                                a href={ "/me/download?study=" (r.uid) } {
                                    "Download" span class="visually-hidden" { " the study of " (r.date.as_deref().map(date).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    let mut what = crate::qido::searched(
        &state,
        &scope,
        &[("portal".to_string(), "studies".to_string())],
        &results,
    );
    what.action = Some(Action::Query);
    let mut r = what.attach(page.render());
    r.extensions_mut().insert(caller(&s, AccessAction::Search));
    r
}

/// Most entries the access log page shows (the newest).
pub const MAX_LOG_LINES: usize = 1000;

/// `GET /portal/access-log`: who has seen the patient's images, in words, newest first.
pub async fn access_log(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = state.portal.sessions.of(&headers) else {
        return signed_out(&state);
    };
    let Some(p) = patient_of(&s) else {
        return message(
            StatusCode::FORBIDDEN,
            "Not for staff accounts",
            "The access log is for a patient's own account.",
            false,
        );
    };
    let issuer = (!p.issuer().is_empty()).then(|| p.issuer().to_string());
    let mut what = What {
        action: Some(Action::AuditRead),
        query: Some("access log".into()),
        ..What::default()
    };
    what.patients.push(PatientAccess {
        id: p.id().to_string(),
        issuer: issuer.clone(),
        ..PatientAccess::default()
    });
    let Some(auditor) = state.auditor.as_ref() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No access log",
            "This server keeps no audit trail.",
            false,
        );
    };
    let query = crate::audit::Query {
        patient: Some((p.id().to_string(), issuer.clone())),
        filter: Filter::default(),
        // One more than is shown, to know whether there are older ones.
        newest: Some(MAX_LOG_LINES + 1),
    };
    let events = match auditor.read(query).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the audit trail could not be read");
            return what.attach(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your access log could not be read just now. Please try again later.",
                false,
            ));
        }
    };
    let total = events.len();
    let night = state.portal.night;
    let care =
        super::unusual::CareTeamCheck::of(&state, &events, Some((p.id(), issuer.as_deref()))).await;
    let lines: Vec<(String, Vec<&str>)> = events
        .iter()
        .rev()
        .take(MAX_LOG_LINES)
        .filter_map(|(_, e)| {
            let line = radveil_audit::words::for_patient(e, p.id(), issuer.as_deref())?;
            let marks = super::unusual::marks(e, Some((p.id(), issuer.as_deref())), &night, &care);
            Some((
                line,
                marks
                    .into_iter()
                    .map(super::unusual::Mark::for_patient)
                    .collect(),
            ))
        })
        .collect();
    let page = Page::new("Who has seen your images")
        .session(&s)
        .body(html! {
            h1 { "Who has seen your images" }
            p { "Every time someone looks at, searches for, adds, shares or exports your images, it is written here. Entries marked below are worth a look: tell the privacy office if one surprises you." }
            @if total > MAX_LOG_LINES {
                p { "The newest " (MAX_LOG_LINES) " entries are shown. The privacy office can give you the whole record." }
            }
            @if lines.is_empty() {
                p { "Nobody has accessed your images yet." }
            } @else {
                ol class="log" reversed {
                    @for (line, m) in &lines {
                        li class=[(!m.is_empty()).then_some("marked")] {
                            (line)
                            @for mark in m {
                                " " strong class="mark" { (mark) }
                            }
                        }
                    }
                }
            }
        });
    let mut r = what.attach(page.render());
    r.extensions_mut().insert(caller(&s, AccessAction::Read));
    r
}

/// The page for paths under `/portal` that are not pages.
pub async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page.",
        false,
    )
}
