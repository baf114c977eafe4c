//! The staff's pages: the auditor's (`/portal/audit`: search the audit trail, and the
//! unusual-access report: break-glass, bulk, night-time and refused accesses) and the
//! privacy officer's (`/portal/privacy`: a patient's consent history, the research exports
//! that hold their images, and the withdrawal notices written). Each read is an audit
//! event like `GET /audit` (an audit read) or a consent search.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use radveil_access::{Action as AccessAction, Principal};
use radveil_audit::{Action, Event, PatientAccess};

use super::pages::{self, message, Page};
use super::session::Session;
use crate::app::AppState;
use crate::audit::What;

/// Most events one audit page shows (the newest).
pub const MAX_ROWS: usize = 500;

/// The signed-in staff member allowed `action`, or the page refusing them.
pub(super) fn staff(
    state: &AppState,
    headers: &HeaderMap,
    action: AccessAction,
) -> Result<Session, Response> {
    let Some(s) = state.portal.sessions.of(headers) else {
        return Err(pages::signed_out(state));
    };
    if s.principal.decide(action, None).is_err() || pages::patient_of(&s).is_some() {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This page is for staff with the right role.",
            false,
        ));
    }
    Ok(s)
}

fn who(e: &Event) -> String {
    let a = &e.actor;
    let mut s = a
        .name
        .clone()
        .or_else(|| a.subject.clone())
        .unwrap_or_else(|| "unauthenticated".into());
    if let Some(r) = a.role {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(c) = &a.client {
        s.push_str(&format!(" via {c}"));
    }
    s
}

fn patients(e: &Event) -> String {
    let ids: Vec<String> = e
        .patients
        .iter()
        .map(|p| match &p.issuer {
            Some(i) => format!(
                "{} ({i}): {} stud{}",
                p.id,
                p.studies.len(),
                if p.studies.len() == 1 { "y" } else { "ies" }
            ),
            None => format!(
                "{}: {} stud{}",
                p.id,
                p.studies.len(),
                if p.studies.len() == 1 { "y" } else { "ies" }
            ),
        })
        .collect();
    ids.join("; ")
}

/// `GET /portal/audit?patient=&user=&action=&since=&until=&unusual=on`.
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let s = match staff(&state, &headers, AccessAction::ReadAudit) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let only_unusual = params.iter().any(|(k, v)| k == "unusual" && v == "on");
    // The filter fields left empty are not filters.
    let filters: Vec<(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "unusual" && !v.is_empty())
        .cloned()
        .collect();
    let value = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut what = What {
        action: Some(Action::AuditRead),
        ..What::default()
    };
    let (query, words) = match crate::audit_routes::parse(&filters) {
        Ok(q) => q,
        Err(why) => {
            return what.attach(
                Page::new("Audit trail")
                    .session(&s)
                    .status(StatusCode::BAD_REQUEST)
                    .body(html! { h1 { "Audit trail" } p role="alert" { (why) } p { a href="/portal/audit" { "Start again" } } })
                    .render(),
            )
        }
    };
    what.query = Some(if only_unusual {
        format!("{words} (unusual)")
    } else {
        words
    });
    if let Some((id, issuer)) = &query.patient {
        what.patients.push(PatientAccess {
            id: id.clone(),
            issuer: issuer.clone(),
            ..PatientAccess::default()
        });
    }
    let Some(auditor) = state.auditor.as_ref() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No audit trail",
            "This server keeps no audit trail.",
            false,
        );
    };
    let events = match auditor.read(query).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the audit trail could not be read");
            return what.attach(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The audit trail could not be read.",
                false,
            ));
        }
    };
    let care = super::unusual::CareTeamCheck::of(&state, &events, None).await;
    let mut rows: Vec<(&Event, Vec<&str>)> = events
        .iter()
        .rev()
        .map(|(_, e)| {
            let marks = super::unusual::marks(e, None, &state.portal.night, &care);
            (
                e,
                marks
                    .into_iter()
                    .map(super::unusual::Mark::for_staff)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, m)| !only_unusual || !m.is_empty())
        .collect();
    let total = rows.len();
    rows.truncate(MAX_ROWS);
    let page = Page::new("Audit trail").session(&s).body(html! {
        h1 { "Audit trail" }
        form method="get" action="/portal/audit" class="filters" {
            p {
                label for="patient" { "Patient ID" } " " input id="patient" name="patient" type="text" value=(value("patient"));
                " " label for="user" { "User" } " " input id="user" name="user" type="text" value=(value("user"));
            }
            p {
                label for="action" { "Action" } " "
                select id="action" name="action" {
                    option value="" { "any" }
                    @for a in Action::ALL {
                        option value=(a.as_str()) selected[value("action") == a.as_str()] { (a.as_str()) }
                    }
                }
                " " label for="since" { "From (YYYY-MM-DD)" } " " input id="since" name="since" type="text" value=(value("since"));
                " " label for="until" { "To (YYYY-MM-DD)" } " " input id="until" name="until" type="text" value=(value("until"));
            }
            p {
                input id="unusual" name="unusual" type="checkbox" checked[only_unusual];
                " " label for="unusual" { "Only unusual access (break-glass, bulk, night-time staff access, refused)" }
            }
            button type="submit" { "Search" }
        }
        p { (total) " event" @if total != 1 { "s" } " found" @if total > MAX_ROWS { "; the newest " (MAX_ROWS) " are shown" } "." }
        @if !rows.is_empty() {
            table {
                caption { "Events, newest first" }
                thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Outcome" } th scope="col" { "Patients" } th scope="col" { "Marks" } } }
                tbody {
                    @for (e, m) in &rows {
                        tr {
                            td { (e.time) }
                            td { (who(e)) }
                            td { (e.action.as_str()) @if let Some(d) = &e.detail { br; span class="note" { (d) } } }
                            td { (format!("{:?}", e.outcome)) }
                            td { (patients(e)) }
                            td {
                                @for mark in m { strong class="mark" { (mark) } " " }
                                @if let Some(r) = &e.break_glass { br; "Reason: " (r) }
                            }
                        }
                    }
                }
            }
        }
    });
    let mut r = what.attach(page.render());
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::ReadAudit));
    r
}

/// The form of `GET /portal/privacy?patient=&issuer=`.
#[derive(serde::Deserialize)]
pub struct PatientQuery {
    #[serde(default)]
    patient: String,
    #[serde(default)]
    issuer: String,
}

fn yes_no(c: &radveil_consent::Consent, p: radveil_consent::Purpose) -> String {
    match c.choice(p) {
        Some(ch) if ch.permitted => {
            format!("yes since {}", &ch.since.get(..10).unwrap_or(&ch.since))
        }
        Some(ch) => format!("no since {}", &ch.since.get(..10).unwrap_or(&ch.since)),
        None => "default".into(),
    }
}

/// `GET /portal/privacy`: a patient's consents, the exports holding their images, and the
/// withdrawal notices written.
pub async fn privacy(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PatientQuery>,
) -> Response {
    let s = match staff(&state, &headers, AccessAction::SearchConsent) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let patient = q.patient.trim().to_string();
    let issuer = q.issuer.trim().to_string();
    if patient.len() > 64 || issuer.len() > 64 {
        return message(
            StatusCode::BAD_REQUEST,
            "Privacy office",
            "A Patient ID or issuer is at most 64 characters.",
            false,
        );
    }
    let mut what = What {
        action: Some(Action::Query),
        query: Some("privacy office".into()),
        ..What::default()
    };
    let mut history = Vec::new();
    let mut holdings = Vec::new();
    if !patient.is_empty() {
        what.patients.push(PatientAccess {
            id: patient.clone(),
            issuer: (!issuer.is_empty()).then(|| issuer.clone()),
            ..PatientAccess::default()
        });
        let h = state.store.patient(&patient, &issuer);
        let consents = state.portal.consents.clone();
        let notices = state.portal.notices.clone();
        let found = tokio::task::spawn_blocking(move || {
            let history = match consents {
                Some(c) => c.history(&h).map_err(|e| e.to_string())?,
                None => Vec::new(),
            };
            let holdings = match notices {
                Some(n) => n.holdings(&h)?,
                None => Vec::new(),
            };
            Ok::<_, String>((history, holdings))
        })
        .await;
        match found {
            Ok(Ok((c, e))) => {
                history = c;
                holdings = e;
            }
            _ => {
                return what.attach(message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The records could not be read.",
                    false,
                ));
            }
        }
    }
    let notices = state
        .portal
        .notices
        .as_ref()
        .map(|n| n.written())
        .unwrap_or_default();
    use radveil_consent::Purpose;
    let page = Page::new("Privacy office").session(&s).body(html! {
        h1 { "Privacy office" }
        form method="get" action="/portal/privacy" {
            p {
                label for="patient" { "Patient ID" } " " input id="patient" name="patient" type="text" value=(patient);
                " " label for="issuer" { "Issuer (optional)" } " " input id="issuer" name="issuer" type="text" value=(issuer);
                " " button type="submit" { "Look up" }
            }
        }
        @if !patient.is_empty() {
            h2 { "Consent history" }
            @if history.is_empty() {
                p { "No consent recorded: the site's defaults apply." }
            } @else {
                table {
                    caption { "Versions, newest first" }
                    thead { tr { th scope="col" { "Version" } th scope="col" { "Recorded" } th scope="col" { "From" } th scope="col" { "Research" } th scope="col" { "AI training" } th scope="col" { "Commercial" } } }
                    tbody {
                        @for c in history.iter().rev() {
                            tr {
                                td { (c.version) }
                                td { (c.recorded) }
                                td { (format!("{:?}", c.source).to_lowercase()) " (" (c.recorder.role) ")" }
                                td { (yes_no(c, Purpose::Research)) }
                                td { (yes_no(c, Purpose::AiTraining)) }
                                td { (yes_no(c, Purpose::Commercial)) }
                            }
                        }
                    }
                }
            }
            h2 { "Research exports holding this patient's images" }
            @if holdings.is_empty() {
                p { "None." }
            } @else {
                table {
                    caption { "Exports, oldest first" }
                    thead { tr { th scope="col" { "Export" } th scope="col" { "Made" } th scope="col" { "Recipient" } th scope="col" { "Purpose" } th scope="col" { "Instances" } } }
                    tbody {
                        @for h in &holdings {
                            tr {
                                td { (h.export.id) }
                                td { (h.export.time) }
                                td { (h.export.recipient) @if let Some(p) = &h.export.project { " — " (p) } }
                                td { (h.export.purpose.as_str()) }
                                td { (h.instances) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Withdrawal notices written" }
        @if notices.is_empty() {
            p { "None." }
        } @else {
            table {
                caption { "Notices to send to recipients (no identity in them)" }
                thead { tr { th scope="col" { "Export" } th scope="col" { "Recipient" } th scope="col" { "Purpose" } th scope="col" { "Instances to delete" } th scope="col" { "File" } } }
                tbody {
                    @for (file, n) in &notices {
                        tr {
                            td { (n.export) }
                            td { (n.recipient) }
                            td { (n.purpose.as_str()) }
                            td { (n.instances.len()) }
                            td { (file) }
                        }
                    }
                }
            }
        }
    });
    let mut r = what.attach(page.render());
    r.extensions_mut()
        .insert(pages::caller(&s, AccessAction::SearchConsent));
    r
}

/// Whether `p` may see the auditor's or the privacy officer's page (for the navigation).
pub fn links(p: &Principal) -> Vec<(&'static str, &'static str)> {
    let mut l = Vec::new();
    if p.decide(AccessAction::ReadAudit, None).is_ok() {
        l.push(("/portal/audit", "Audit trail"));
    }
    if p.decide(AccessAction::SearchConsent, None).is_ok() {
        l.push(("/portal/privacy", "Privacy office"));
    }
    if p.decide(AccessAction::Export, None).is_ok() {
        l.push(("/portal/privacy/export", "Research export"));
    }
    if p.decide(AccessAction::Store, None).is_ok() {
        l.push(("/portal/uploads", "Images sent by patients"));
    }
    if p.decide(AccessAction::Read, None).is_ok() {
        l.push(("/portal/patient", "Share a study"));
        l.push(("/portal/shares", "Links you made"));
    }
    l
}
