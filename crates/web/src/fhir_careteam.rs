//! `GET/PUT /fhir/CareTeam/{id}`: the EHR tells the gateway who treats a patient (FHIR R4
//! `CareTeam`, kept by [`radveil_consent::careteam`]), so that a clinician reading the
//! images of a patient whose care teams do not include them is marked "outside the care
//! team" ([`crate::portal::unusual`]). Written by an administrator or the EHR's service
//! (`system/CareTeam.u`), never by a patient; each change is an audit event the patient
//! reads in their access log.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use radveil_access::Action as AccessAction;
use radveil_audit::Action;
use radveil_consent::careteam::{self, CareTeamError};

use crate::app::AppState;
use crate::fhir_consent::{fhir_body, fhir_json, not_fhir_json, outcome, what};

/// The access-control action of a request under `/fhir/CareTeam`.
pub fn action_of(method: &Method) -> AccessAction {
    if method == Method::PUT {
        AccessAction::WriteCareTeam
    } else {
        AccessAction::ReadCareTeam
    }
}

fn no_store() -> Response {
    outcome(
        StatusCode::NOT_FOUND,
        "not-supported",
        "this server keeps no care teams",
    )
}

fn not_found() -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", "no such CareTeam")
}

fn failed(e: &CareTeamError) -> Response {
    match e {
        CareTeamError::OtherPatient | CareTeamError::TooMany => {
            outcome(StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "the care-team store failed");
            outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "the care-team store failed",
            )
        }
    }
}

/// `GET /fhir/CareTeam/{id}`.
pub async fn read(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(teams) = state.portal.careteams.clone() else {
        return no_store();
    };
    if !radveil_consent::is_fhir_id(&id) {
        return not_found();
    }
    match tokio::task::spawn_blocking(move || teams.get(&id)).await {
        Ok(Ok(Some(t))) => {
            let w = what(Some(&t.patient), "CareTeam read");
            let mut r = fhir_json(StatusCode::OK, &careteam::to_fhir(&t));
            if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", t.version)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            w.attach(r)
        }
        Ok(Ok(None)) => not_found(),
        Ok(Err(e)) => failed(&e),
        Err(_) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "the care-team store failed",
        ),
    }
}

/// `PUT /fhir/CareTeam/{id}`: records the team (a new version when the id exists).
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(teams) = state.portal.careteams.clone() else {
        return no_store();
    };
    if !radveil_consent::is_fhir_id(&id) {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "not a FHIR id");
    }
    if let Some(r) = not_fhir_json(&headers, "CareTeam") {
        return r;
    }
    let bytes = match fhir_body(body, careteam::MAX_BODY, "CareTeam").await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let draft = match careteam::parse(&bytes) {
        Ok(d) => d,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            return outcome(status, "invalid", &e.why);
        }
    };
    if draft.id.as_deref() != Some(id.as_str()) {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the CareTeam's id must be the id in the URL",
        );
    }
    let patient = draft.patient.clone();
    let h = state.store.patient(&patient.id, &patient.issuer);
    let detail = format!(
        "{} member{}{}",
        draft.members.len(),
        if draft.members.len() == 1 { "" } else { "s" },
        if draft.active {
            ""
        } else {
            " (the team has ended)"
        }
    );
    let recorded = radveil_ledger::rfc3339_now();
    let done = tokio::task::spawn_blocking(move || teams.put(&id, &h, draft, recorded)).await;
    let mut w = what(Some(&patient), "CareTeam update");
    w.action = Some(Action::CareTeamChange);
    w.detail = Some(detail);
    match done {
        Ok(Ok(t)) => {
            let status = if t.version == 1 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut r = fhir_json(status, &careteam::to_fhir(&t));
            if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", t.version)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            w.attach(r)
        }
        Ok(Err(e)) => w.attach(failed(&e)),
        Err(_) => w.attach(outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "the care-team store failed",
        )),
    }
}
