//! `/fhir/Consent`: patients' consent to research, AI training and commercial use as FHIR R4
//! Consent resources ([`radveil_consent`]), for an EHR that already records consent and for
//! staff tools.
//!
//! - `GET /fhir/Consent?patient=[system|]value` (also `patient:identifier=`): a `searchset`
//!   Bundle with the patient's current Consent (none: an empty Bundle). The patient is named
//!   by identifier: Patient ID as value, the issuer as system (`urn:oid:` for an OID). A
//!   patient token may leave the patient out (its own).
//! - `GET /fhir/Consent/{id}`: the current version; `GET /fhir/Consent/{id}/_history`: every
//!   version (a `history` Bundle, newest first); `GET /fhir/Consent/{id}/_history/{vid}`: one.
//!   Each with `ETag: W/"version"`.
//! - `PUT /fhir/Consent/{id}`: records a new version (201 for the first, 200 after), the
//!   body's id equal to the URL's; `If-Match: W/"n"` must name the current version (412
//!   otherwise). Answers the version recorded.
//!
//! Access (`crate::auth`): a patient token (`patient/Consent.r`, `.s`, `.u`) reaches its own
//! patient only, and another patient's Consent answers 404 exactly as a missing one; an
//! `admin` or `privacy-officer` with `user/Consent.*` any patient; clinicians, researchers
//! and auditors none (403). Without access control every local caller may do everything.
//! Every request is audited (`crate::audit`): a change as `consent-change` with what changed
//! in words ("version 2: ai-training: withdrawn"), a read as a query; the patient is named
//! in the event's patients only when the caller may see them.
//!
//! Errors are FHIR OperationOutcomes naming elements, never values.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_access::{Action as AccessAction, Compartment, Role as AccessRole};
use radveil_audit::PatientAccess;
use radveil_consent::fhir::{self, FHIR_JSON};
use radveil_consent::{Consent, ConsentError, Consents, PatientId, Recorder, Source};
use radveil_store::Handle;
use serde_json::Value;

use crate::app::AppState;
use crate::audit::What;
use crate::auth::Caller;
use crate::scope::Scope;

/// The access-control action of a request under `/fhir`: `PUT` records, a `GET` of the
/// Consent collection searches, any other request reads.
pub fn action_of(method: &Method, path: &str) -> AccessAction {
    if path == "/fhir/CareTeam" || path.starts_with("/fhir/CareTeam/") {
        return crate::fhir_careteam::action_of(method);
    }
    if method == Method::PUT {
        AccessAction::WriteConsent
    } else if path.trim_end_matches('/') == "/fhir/Consent" {
        AccessAction::SearchConsent
    } else {
        AccessAction::ReadConsent
    }
}

/// A FHIR JSON answer.
pub(crate) fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// The 415 answer naming the resource `kind` expected, unless the request says it sends
/// FHIR JSON (or JSON).
pub(crate) fn not_fhir_json(headers: &HeaderMap, kind: &str) -> Option<Response> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    (!matches!(media.as_deref(), Some(FHIR_JSON | "application/json"))).then(|| {
        outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            &format!("a {kind} is sent as application/fhir+json"),
        )
    })
}

/// The body of a PUT of a `kind` resource, at most `max` bytes; else the 413 answer.
pub(crate) async fn fhir_body(
    body: Body,
    max: usize,
    kind: &str,
) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, max).await.map_err(|_| {
        outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            &format!("a {kind} is at most {} KiB", max / 1024),
        )
    })
}

/// An OperationOutcome answer.
pub(crate) fn outcome(status: StatusCode, code: &str, why: &str) -> Response {
    fhir_json(status, &fhir::operation_outcome(code, why))
}

fn not_found() -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", "no such Consent")
}

/// The answer to a failure of the consent store (logged by kind, never with a value).
fn failed(e: &ConsentError) -> Response {
    match e {
        ConsentError::VersionMismatch { .. } => outcome(
            StatusCode::PRECONDITION_FAILED,
            "conflict",
            "If-Match does not name the current version",
        ),
        ConsentError::IdTaken | ConsentError::OtherId => {
            outcome(StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        ConsentError::Invalid(why) => outcome(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why),
        _ => {
            tracing::error!(error = %e, "the consent store failed");
            outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "the consent store failed",
            )
        }
    }
}

/// Runs `f` on the consent store off the runtime's threads (SQLite, fsync).
async fn blocking<T: Send + 'static>(
    consents: &Arc<Consents>,
    f: impl FnOnce(&Consents) -> Result<T, ConsentError> + Send + 'static,
) -> Result<T, Response> {
    let c = Arc::clone(consents);
    match tokio::task::spawn_blocking(move || f(&c)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&e)),
        Err(_) => Err(outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "the consent store failed",
        )),
    }
}

/// The audit record of what a request touched: the patient (when the caller may see them)
/// and the kind of request.
pub(crate) fn what(patient: Option<&PatientId>, query: &str) -> What {
    let mut w = What {
        query: Some(query.to_string()),
        ..What::default()
    };
    if let Some(p) = patient {
        w.patients.push(PatientAccess {
            id: p.id.clone(),
            issuer: (!p.issuer.is_empty()).then(|| p.issuer.clone()),
            ..PatientAccess::default()
        });
    }
    w
}

/// The answer of a server that keeps no consents.
fn no_store() -> Response {
    outcome(
        StatusCode::NOT_FOUND,
        "not-supported",
        "this server keeps no consents",
    )
}

/// The patient whose Consent has the id `id`, if the caller may see them.
async fn visible(
    consents: &Arc<Consents>,
    scope: &Scope,
    id: &str,
) -> Result<Option<Handle>, Response> {
    if !radveil_consent::is_fhir_id(id) {
        return Err(outcome(StatusCode::BAD_REQUEST, "invalid", "not a FHIR id"));
    }
    let id = id.to_string();
    let h = blocking(consents, move |c| c.patient_of(&id)).await?;
    Ok(h.filter(|h| scope.sees(h)))
}

fn with_etag(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn resource(c: &Consent, consents: &Consents, status: StatusCode) -> Response {
    with_etag(
        fhir_json(status, &fhir::to_fhir(c, &consents.defaults())),
        c.version,
    )
}

/// The patient named by a search's `patient` value: `[system|]value`, the system an issuer
/// (`urn:oid:` stripped from an OID).
fn searched_patient(v: &str) -> Option<PatientId> {
    let (system, value) = match v.split_once('|') {
        Some((s, v)) => (s, v),
        None => ("", v),
    };
    let issuer = match system.strip_prefix("urn:oid:") {
        Some(oid) if !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit() || b == b'.') => oid,
        _ => system,
    };
    radveil_access::PatientRef::new(value, issuer).map(|p| PatientId {
        id: p.id().to_string(),
        issuer: p.issuer().to_string(),
    })
}

/// `GET /fhir/Consent?patient=…`.
pub async fn search(
    State(state): State<AppState>,
    scope: Option<Extension<Scope>>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let Some(Extension(scope)) = scope else {
        return not_found();
    };
    let Some(consents) = state.portal.consents.clone() else {
        return no_store();
    };
    let mut patient = None;
    for (k, v) in &params {
        match k.as_str() {
            "patient" | "patient:identifier" if patient.is_none() => match searched_patient(v) {
                Some(p) => patient = Some(p),
                None => {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "patient: [system|]Patient ID expected",
                    )
                }
            },
            "_format" if v == "json" || v == FHIR_JSON || v == "application/json" => {}
            _ => {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    "unknown or repeated search parameter (patient expected)",
                )
            }
        }
    }
    // A patient token's own patient by default.
    let own =
        caller.as_ref().and_then(
            |Extension(c)| match c.grant.as_ref().map(|g| &g.compartment) {
                Some(Compartment::Patient(p)) => Some(PatientId {
                    id: p.id().to_string(),
                    issuer: p.issuer().to_string(),
                }),
                _ => None,
            },
        );
    let Some(patient) = patient.or(own) else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "patient is required (Consent?patient=[system|]Patient ID)",
        );
    };
    let h = state.store.patient(&patient.id, &patient.issuer);
    if !scope.sees(&h) {
        // Another patient's: exactly what a patient with no consent gets, and no patient
        // named in the audit trail.
        let empty = fhir::bundle("searchset", Vec::new());
        return what(None, "Consent search").attach(fhir_json(StatusCode::OK, &empty));
    }
    let current = match blocking(&consents, move |c| c.current(&h)).await {
        Ok(c) => c,
        Err(r) => return what(Some(&patient), "Consent search").attach(r),
    };
    let found: Vec<Value> = current
        .iter()
        .map(|c| fhir::to_fhir(c, &consents.defaults()))
        .collect();
    what(Some(&patient), "Consent search")
        .attach(fhir_json(StatusCode::OK, &fhir::bundle("searchset", found)))
}

/// `GET /fhir/Consent/{id}`.
pub async fn read(
    State(state): State<AppState>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
) -> Response {
    read_version(state, scope, id, None).await
}

/// `GET /fhir/Consent/{id}/_history/{vid}`.
pub async fn vread(
    State(state): State<AppState>,
    scope: Option<Extension<Scope>>,
    Path((id, vid)): Path<(String, String)>,
) -> Response {
    let v = match vid.parse::<u64>() {
        Ok(v) if vid.bytes().all(|b| b.is_ascii_digit()) && v > 0 => v,
        _ => return not_found(),
    };
    read_version(state, scope, id, Some(v)).await
}

async fn read_version(
    state: AppState,
    scope: Option<Extension<Scope>>,
    id: String,
    version: Option<u64>,
) -> Response {
    let Some(Extension(scope)) = scope else {
        return not_found();
    };
    let Some(consents) = state.portal.consents.clone() else {
        return no_store();
    };
    let Some(h) = (match visible(&consents, &scope, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    }) else {
        return what(None, "Consent read").attach(not_found());
    };
    let found = blocking(&consents, move |c| match version {
        None => c.current(&h),
        Some(v) => c.version(&h, v),
    })
    .await;
    match found {
        Ok(Some(c)) => {
            what(Some(&c.patient), "Consent read").attach(resource(&c, &consents, StatusCode::OK))
        }
        Ok(None) => what(None, "Consent read").attach(not_found()),
        Err(r) => what(None, "Consent read").attach(r),
    }
}

/// `GET /fhir/Consent/{id}/_history`: every version, newest first.
pub async fn history(
    State(state): State<AppState>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
) -> Response {
    let Some(Extension(scope)) = scope else {
        return not_found();
    };
    let Some(consents) = state.portal.consents.clone() else {
        return no_store();
    };
    let Some(h) = (match visible(&consents, &scope, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    }) else {
        return what(None, "Consent history").attach(not_found());
    };
    match blocking(&consents, move |c| c.history(&h)).await {
        Ok(versions) if !versions.is_empty() => {
            let patient = versions[versions.len() - 1].patient.clone();
            let all = versions
                .iter()
                .rev()
                .map(|c| fhir::to_fhir(c, &consents.defaults()))
                .collect();
            what(Some(&patient), "Consent history")
                .attach(fhir_json(StatusCode::OK, &fhir::bundle("history", all)))
        }
        Ok(_) => what(None, "Consent history").attach(not_found()),
        Err(r) => what(None, "Consent history").attach(r),
    }
}

/// The version an `If-Match` header names (`W/"3"` or `"3"`); `Err` when malformed.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut all = headers.get_all(header::IF_MATCH).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return if headers.contains_key(header::IF_MATCH) {
            Err(())
        } else {
            Ok(None)
        };
    };
    let v = v.to_str().map_err(|_| ())?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or(())?;
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    v.parse().map(Some).map_err(|_| ())
}

/// Who is recording, for the version (sealed, never logged).
fn recorder(caller: Option<&Caller>) -> Recorder {
    let Some(c) = caller else {
        return Recorder {
            subject: None,
            role: "local".into(),
        };
    };
    let Some(p) = &c.principal else {
        return Recorder {
            subject: None,
            role: "local".into(),
        };
    };
    let patient = matches!(
        c.grant.as_ref().map(|g| &g.compartment),
        Some(Compartment::Patient(_))
    );
    let role = if p.has(AccessRole::Admin) {
        "admin"
    } else if p.has(AccessRole::PrivacyOfficer) {
        "privacy-officer"
    } else if patient {
        "patient"
    } else {
        "system"
    };
    Recorder {
        subject: Some(p.subject.clone()),
        role: role.into(),
    }
}

/// `PUT /fhir/Consent/{id}`.
pub async fn put(
    State(state): State<AppState>,
    scope: Option<Extension<Scope>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(Extension(scope)) = scope else {
        return not_found();
    };
    let Some(consents) = state.portal.consents.clone() else {
        return no_store();
    };
    if !radveil_consent::is_fhir_id(&id) {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "not a FHIR id");
    }
    if let Some(r) = not_fhir_json(&headers, "Consent") {
        return r;
    }
    let Ok(expected) = if_match(&headers) else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "If-Match: W/\"version\" expected",
        );
    };
    let bytes = match fhir_body(body, fhir::MAX_BODY, "Consent").await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let draft = match fhir::parse(&bytes) {
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
            "the Consent's id must be the id in the URL",
        );
    }
    let h = state
        .store
        .patient(&draft.patient.id, &draft.patient.issuer);
    // Another patient's (by the body, or by the id): as if there were no such Consent.
    let owner = {
        let id = id.clone();
        match blocking(&consents, move |c| c.patient_of(&id)).await {
            Ok(o) => o,
            Err(r) => return r,
        }
    };
    if !scope.sees(&h) || owner.is_some_and(|o| !scope.sees(&o)) {
        return what(None, "Consent update").attach(not_found());
    }
    let patient = draft.patient.clone();
    let who = recorder(caller.as_ref().map(|Extension(c)| c));
    let recorded = blocking(&consents, move |c| {
        c.record(&h, draft, who, Source::Fhir, expected)
    })
    .await;
    let mut w = what(Some(&patient), "Consent update");
    match recorded {
        Ok(change) => {
            w.detail = Some(change.words());
            if !change.withdrawn.is_empty() {
                crate::portal::notices::after_withdrawal(&state, &h, &change).await;
            }
            let status = if change.version == 1 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut resp = resource(&change.consent, &consents, status);
            let location = format!(
                "/fhir/Consent/{}/_history/{}",
                change.consent.id, change.version
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            w.attach(resp)
        }
        Err(r) => w.attach(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_fhir_interactions() {
        assert_eq!(
            action_of(&Method::GET, "/fhir/Consent"),
            AccessAction::SearchConsent
        );
        assert_eq!(
            action_of(&Method::GET, "/fhir/Consent/"),
            AccessAction::SearchConsent
        );
        assert_eq!(
            action_of(&Method::GET, "/fhir/Consent/c-1"),
            AccessAction::ReadConsent
        );
        assert_eq!(
            action_of(&Method::GET, "/fhir/Consent/c-1/_history/2"),
            AccessAction::ReadConsent
        );
        assert_eq!(
            action_of(&Method::PUT, "/fhir/Consent/c-1"),
            AccessAction::WriteConsent
        );
        // Anything else under /fhir is checked as a read (and answered 404).
        assert_eq!(
            action_of(&Method::POST, "/fhir/Patient"),
            AccessAction::ReadConsent
        );
    }

    #[test]
    fn if_match_names_one_version() {
        let h = |v: &[&str]| {
            let mut m = HeaderMap::new();
            for x in v {
                m.append(header::IF_MATCH, HeaderValue::from_str(x).unwrap());
            }
            if_match(&m)
        };
        assert_eq!(h(&[]), Ok(None));
        assert_eq!(h(&["W/\"3\""]), Ok(Some(3)));
        assert_eq!(h(&["\"0\""]), Ok(Some(0)));
        for bad in [
            &["3"][..],
            &["W/\"\""],
            &["W/\"x\""],
            &["*"],
            &["\"1\"", "\"2\""],
        ] {
            assert_eq!(h(bad), Err(()), "{bad:?}");
        }
        assert_eq!(h(&["\"99999999999999999999\""]), Err(()));
    }

    #[test]
    fn a_searched_patient_is_system_and_value() {
        let p = searched_patient("urn:oid:1.2.3|PID-1").unwrap();
        assert_eq!((p.id.as_str(), p.issuer.as_str()), ("PID-1", "1.2.3"));
        let p = searched_patient("HOSP|PID-1").unwrap();
        assert_eq!((p.id.as_str(), p.issuer.as_str()), ("PID-1", "HOSP"));
        let p = searched_patient("PID-1").unwrap();
        assert_eq!((p.id.as_str(), p.issuer.as_str()), ("PID-1", ""));
        assert!(searched_patient("HOSP|").is_none());
        assert!(searched_patient(&"9".repeat(65)).is_none());
    }
}
