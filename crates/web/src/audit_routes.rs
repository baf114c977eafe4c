//! Reading the audit trail over HTTP (issue 14, item 6). Both reads are audit events
//! themselves (recorded by [`crate::audit::record`] before the answer goes).
//!
//! - `GET /audit` (an `auditor` or `admin` token with an `AuditEvent` read scope, or any
//!   local caller when access control is off): FHIR R4 AuditEvent resources following IHE
//!   BALP, as NDJSON (`application/fhir+ndjson`, one resource a line, one per patient an
//!   event touched, as `radveil audit export --format fhir` writes them). Filters, as query
//!   parameters: `patient` (Patient ID, with `issuer` where the site uses it), `user` (token
//!   subject), `since`, `until` (RFC 3339 UTC or `YYYY-MM-DD`), `action` (store, query,
//!   retrieve, delete, token-refused, audit-read). An unknown parameter or a bad value is a
//!   400 that repeats no value.
//! - `GET /me/access-log` (a patient token): the patient's access log in plain words
//!   (`text/plain`, one sentence a line, `radveil_audit::words`), their patient's events
//!   only. Other tokens: 403.

use axum::extract::{Extension, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_access::Compartment;
use radveil_audit::fhir::Source;
use radveil_audit::{Action, Filter, PatientAccess, StudyRef};

use crate::app::AppState;
use crate::audit::What;
use crate::auth::Caller;

fn text(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The answer of a server that keeps no audit trail (only tests build one).
fn no_trail() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "this server keeps no audit trail",
    )
}

/// Whether `t` is a time filter: `YYYY-MM-DD` or RFC 3339 UTC to the second.
/// The events a query selects, or the 500 to answer when the trail cannot be read.
async fn read(
    auditor: &crate::audit::Auditor,
    query: crate::audit::Query,
) -> Result<Vec<(u64, radveil_audit::Event)>, Response> {
    auditor.read(query).await.map_err(|e| {
        tracing::error!(error = %e, "the audit trail could not be read");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the audit trail could not be read",
        )
    })
}

fn is_time(t: &str) -> bool {
    let date = |d: &str| {
        let b = d.as_bytes();
        b.len() == 10
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                _ => c.is_ascii_digit(),
            })
    };
    date(t) || radveil_audit::event::is_event_time(t)
}

/// The filter of an `/audit` request.
pub(crate) fn parse(params: &[(String, String)]) -> Result<(crate::audit::Query, String), String> {
    let mut q = crate::audit::Query::default();
    let mut issuer = None;
    let mut words = Vec::new();
    for (k, v) in params {
        let once = |slot: bool| {
            if slot {
                Err(format!("{k} given twice"))
            } else {
                Ok(())
            }
        };
        match k.as_str() {
            "patient" => {
                once(q.patient.is_some())?;
                if v.is_empty() || v.len() > 64 {
                    return Err("patient: a Patient ID of 1 to 64 characters".into());
                }
                q.patient = Some((v.clone(), None));
                words.push("patient".to_string());
            }
            "issuer" => {
                once(issuer.is_some())?;
                if v.len() > 64 {
                    return Err("issuer: at most 64 characters".into());
                }
                issuer = Some(v.clone());
            }
            "user" => {
                once(q.filter.user.is_some())?;
                q.filter.user = Some(v.clone());
                words.push(format!("user={v}"));
            }
            "since" | "until" => {
                if !is_time(v) {
                    return Err(format!(
                        "{k}: RFC 3339 UTC (like 2026-12-03T12:00:00Z) or YYYY-MM-DD"
                    ));
                }
                let slot = if k == "since" {
                    &mut q.filter.since
                } else {
                    &mut q.filter.until
                };
                once(slot.is_some())?;
                *slot = Some(v.clone());
                words.push(format!("{k}={v}"));
            }
            "action" => {
                once(q.filter.action.is_some())?;
                q.filter.action = Some(v.parse::<Action>()?);
                words.push(format!("action={v}"));
            }
            _ => {
                return Err(
                    "unknown parameter (patient, issuer, user, since, until, action)".into(),
                )
            }
        }
    }
    match (&mut q.patient, issuer) {
        (Some(p), Some(i)) => p.1 = (!i.is_empty()).then_some(i),
        (None, Some(_)) => return Err("issuer needs patient".into()),
        _ => {}
    }
    let words = if words.is_empty() {
        "all".to_string()
    } else {
        words.join("&")
    };
    Ok((q, words))
}

/// `GET /audit`: the audit events matching the filters, as FHIR R4 AuditEvent NDJSON.
pub async fn audit(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut what = What {
        action: Some(Action::AuditRead),
        ..What::default()
    };
    let (query, words) = match parse(&params) {
        Ok(q) => q,
        Err(why) => return what.attach(text(StatusCode::BAD_REQUEST, &why)),
    };
    what.query = Some(words);
    if let Some((id, issuer)) = &query.patient {
        what.patients.push(PatientAccess {
            id: id.clone(),
            issuer: issuer.clone(),
            ..PatientAccess::default()
        });
    }
    let Some(auditor) = state.auditor.as_ref() else {
        return what.attach(no_trail());
    };
    let only_patient = query.patient.clone();
    let events = match read(auditor, query).await {
        Ok(e) => e,
        Err(r) => return what.attach(r),
    };
    let source = Source {
        id: auditor.source.clone(),
        site: None,
    };
    let mine = |p: &PatientAccess| {
        only_patient
            .as_ref()
            .is_some_and(|(id, issuer)| &p.id == id && &p.issuer == issuer)
    };
    let only: Option<&dyn Fn(&PatientAccess) -> bool> = only_patient
        .is_some()
        .then_some(&mine as &dyn Fn(&PatientAccess) -> bool);
    let mut body = String::new();
    for (index, e) in &events {
        for r in radveil_audit::fhir::audit_events(e, *index, &source, only) {
            body.push_str(&r.to_string());
            body.push('\n');
        }
    }
    what.attach(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/fhir+ndjson")],
            body,
        )
            .into_response(),
    )
}

/// `GET /me/access-log`: a patient's access log in words, their events only.
pub async fn access_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut what = What {
        action: Some(Action::AuditRead),
        query: Some("access log".into()),
        ..What::default()
    };
    let Some(Compartment::Patient(p)) = caller.grant.as_ref().map(|g| &g.compartment) else {
        return what.attach(text(
            StatusCode::FORBIDDEN,
            "the access log is for a patient's token",
        ));
    };
    let issuer = (!p.issuer().is_empty()).then(|| p.issuer().to_string());
    what.patients.push(PatientAccess {
        id: p.id().to_string(),
        issuer: issuer.clone(),
        studies: Vec::<StudyRef>::new(),
        ..PatientAccess::default()
    });
    let Some(auditor) = state.auditor.as_ref() else {
        return what.attach(no_trail());
    };
    let query = crate::audit::Query {
        patient: Some((p.id().to_string(), issuer.clone())),
        filter: Filter::default(),
        newest: None,
    };
    let events = match read(auditor, query).await {
        Ok(e) => e,
        Err(r) => return what.attach(r),
    };
    let mut body = String::new();
    for (_, e) in &events {
        if let Some(line) = radveil_audit::words::for_patient(e, p.id(), issuer.as_deref()) {
            body.push_str(&line);
            body.push('\n');
        }
    }
    what.attach(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn audit_filters_are_parsed_and_bad_ones_refused() {
        let (q, words) = parse(&p(&[
            ("patient", "PID-1"),
            ("issuer", "HOSP"),
            ("user", "dr"),
            ("since", "2026-12-01"),
            ("until", "2026-12-03T10:00:00Z"),
            ("action", "retrieve"),
        ]))
        .unwrap();
        assert_eq!(
            q.patient,
            Some(("PID-1".to_string(), Some("HOSP".to_string())))
        );
        assert_eq!(q.filter.action, Some(Action::Retrieve));
        assert_eq!(q.filter.user.as_deref(), Some("dr"));
        // The filter's words name no patient.
        assert!(!words.contains("PID-1"), "{words}");
        assert_eq!(parse(&[]).unwrap().1, "all");
        for bad in [
            p(&[("since", "yesterday")]),
            p(&[("until", "2026-12-03T10:00:00+01:00")]),
            p(&[("action", "look")]),
            p(&[("issuer", "HOSP")]),
            p(&[("patient", "")]),
            p(&[("user", "a"), ("user", "b")]),
            p(&[("limit", "5")]),
        ] {
            let why = parse(&bad).unwrap_err();
            // A refusal repeats no value of the request.
            for (_, v) in &bad {
                assert!(v.is_empty() || !why.contains(v.as_str()), "{why}");
            }
        }
    }
}
