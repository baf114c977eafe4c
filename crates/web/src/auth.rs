//! Access control on the DICOMweb routes: a middleware that turns the `Authorization:
//! Bearer` header into a [`Principal`], decides the request's action with it, and hands the
//! handlers the [`Scope`] (and the [`Caller`], for the audit trail). Refusals of the token
//! are 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1; no error
//! code when there is no token at all); actions the token does not grant are 403
//! `insufficient_scope`. A patient token asking for another patient's study is not refused
//! here: the handlers answer exactly as for a missing study (404).
//!
//! The action follows PS3.18's resource structure: `POST` stores, `DELETE` deletes, a `GET`
//! of a collection (`…/studies`, `…/series`, `…/instances`) searches (QIDO-RS), any other
//! `GET` reads (WADO-RS). `/healthz` and `/metrics` (counts only) are open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use radveil_access::{Action, Compartment, Grant, Principal, Refusal, Verifier};

use crate::app::AppState;
use crate::scope::Scope;

/// How requests are checked.
#[derive(Debug, Clone, Default)]
pub enum AccessControl {
    /// No issuer configured: every request may do everything. [`crate::serve`] then
    /// listens on loopback only.
    #[default]
    Open,
    /// A bearer token from a trusted issuer is required on every DICOMweb route.
    Tokens(Arc<Verifier>),
}

/// The request header in which a clinician gives the reason for a break-glass access.
pub const BREAK_GLASS_HEADER: &str = "break-glass-reason";

/// Failure reason "Refused: Not Authorized" (PS3.7 Annex C, 0124H) for a stored part the
/// token may not store (another patient's, under a patient scope).
pub const NOT_AUTHORIZED: u16 = 0x0124;

/// Who made a request and what they were granted, put in the request's extensions by
/// [`check`] for the handlers and the audit trail.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified principal; `None` when access control is off.
    pub principal: Option<Arc<Principal>>,
    /// The action decided.
    pub action: Action,
    /// The grant; its `break_glass` is set when a clinician broke the glass.
    pub grant: Option<Grant>,
}

/// The action a request asks for.
pub fn action_of(method: &Method, path: &str) -> Action {
    if method == Method::POST {
        Action::Store
    } else if method == Method::DELETE {
        Action::Delete
    } else {
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if matches!(last, "studies" | "series" | "instances") {
            Action::Search
        } else {
            Action::Read
        }
    }
}

fn challenge(status: StatusCode, value: &str, why: &str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{why}\n"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn unauthorized(refusal: Refusal) -> Response {
    let value = match refusal {
        Refusal::NoToken => "Bearer realm=\"radveil\"".to_string(),
        other => format!(
            "Bearer realm=\"radveil\", error=\"invalid_token\", error_description=\"{other}\""
        ),
    };
    challenge(StatusCode::UNAUTHORIZED, &value, &refusal.to_string())
}

/// The bearer token of the request: exactly one `Authorization` header with the `Bearer`
/// scheme (any case, RFC 6750 §2.1).
fn bearer(req: &Request) -> Result<&str, Refusal> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(if req.headers().contains_key(header::AUTHORIZATION) {
            Refusal::Malformed
        } else {
            Refusal::NoToken
        });
    };
    let v = v.to_str().map_err(|_| Refusal::Malformed)?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(Refusal::NoToken)
            } else {
                Ok(token)
            }
        }
        _ => Err(Refusal::Malformed),
    }
}

/// The middleware: authenticates and authorises each DICOMweb request, then passes it on
/// with its [`Scope`] and [`Caller`].
///
/// The audit routes are checked here too: `/audit` asks for [`Action::ReadAudit`] (an
/// `auditor` or `admin` role with an `AuditEvent` read scope), `/me/access-log` for
/// [`Action::Read`] (the handler then wants a patient compartment). Every answer carries
/// the [`Caller`] (or, for a refusal, [`crate::audit::Refused`]) in its extensions for the
/// audit middleware outside this one.
pub async fn check(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let action = if path == "/audit" {
        Action::ReadAudit
    } else if path == "/me/access-log" || path == "/me/download" {
        Action::Read
    } else if path == "/fhir" || path.starts_with("/fhir/") {
        crate::fhir_consent::action_of(req.method(), path)
    } else if path == "/dicom-web" || path.starts_with("/dicom-web/") {
        action_of(req.method(), path)
    } else {
        return next.run(req).await;
    };
    let verifier = match &state.access {
        AccessControl::Open => {
            let caller = Caller {
                principal: None,
                action,
                grant: None,
            };
            req.extensions_mut().insert(Scope::All);
            req.extensions_mut().insert(caller.clone());
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(caller);
            return resp;
        }
        AccessControl::Tokens(v) => Arc::clone(v),
    };
    // A signed-in portal session stands for its token on reads and searches (the viewer's
    // requests carry the session cookie, never the token). Stores and deletes need the
    // bearer token itself.
    // A share link's session (one study, DICOMweb reads only) likewise.
    let read_only = matches!(action, Action::Read | Action::Search);
    let dicom_web = req.uri().path().starts_with("/dicom-web/");
    let session = if read_only && !req.headers().contains_key(header::AUTHORIZATION) {
        let sessions = &state.portal.sessions;
        sessions.of(req.headers()).or_else(|| {
            dicom_web
                .then(|| sessions.share_of(req.headers()))
                .flatten()
        })
    } else {
        None
    };
    let shared_study = session.as_ref().and_then(|s| s.study);
    let token = match (&session, bearer(&req)) {
        (Some(_), _) => String::new(),
        (None, Ok(t)) => t.to_string(),
        (None, Err(r)) => return refused_token(r),
    };
    let verified = if let Some(s) = session {
        Ok(Arc::unwrap_or_clone(s.principal))
    } else if verifier.is_remote() {
        // Verifying may fetch the issuer's keys: not on the runtime's threads.
        match tokio::task::spawn_blocking(move || verifier.verify(&token)).await {
            Ok(v) => v,
            Err(_) => return challenge(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error"),
        }
    } else {
        verifier.verify(&token)
    };
    let principal = match verified {
        Ok(p) => Arc::new(p),
        Err(r) => {
            tracing::info!(refusal = %r, "a token was refused");
            return refused_token(r);
        }
    };
    // A reason that is not UTF-8 counts as none (refused if break-glass is asked).
    let reason = req
        .headers()
        .get(BREAK_GLASS_HEADER)
        .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("").to_string());
    let grant = match principal.decide(action, reason.as_deref()) {
        Ok(g) => g,
        Err(d) => {
            tracing::info!(subject = %principal.subject, denied = %d, "an action was denied");
            let mut resp = challenge(
                StatusCode::FORBIDDEN,
                "Bearer realm=\"radveil\", error=\"insufficient_scope\"",
                &d.to_string(),
            );
            resp.extensions_mut().insert(Caller {
                principal: Some(principal),
                action,
                grant: None,
            });
            resp.extensions_mut().insert(crate::audit::Refused {
                token: false,
                why: format!("denied: {d}"),
            });
            return resp;
        }
    };
    if grant.break_glass.is_some() {
        tracing::warn!(subject = %principal.subject, "break-glass access");
    }
    let scope = match (&grant.compartment, shared_study) {
        (Compartment::All, None) => Scope::All,
        (Compartment::Patient(p), None) => Scope::Patient(state.store.patient(p.id(), p.issuer())),
        (Compartment::Patient(p), Some(study)) => Scope::Study {
            patient: state.store.patient(p.id(), p.issuer()),
            study,
        },
        // A share session always speaks for one patient; anything else sees nothing.
        (Compartment::All, Some(study)) => Scope::Study {
            patient: radveil_store::Handle([0; 32]),
            study,
        },
    };
    let caller = Caller {
        principal: Some(principal),
        action,
        grant: Some(grant),
    };
    req.extensions_mut().insert(scope);
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(caller);
    resp
}

/// The 401 for a refused token, marked for the audit trail (the refusal in words, never
/// the token).
fn refused_token(r: Refusal) -> Response {
    let mut resp = unauthorized(r);
    resp.extensions_mut().insert(crate::audit::Refused {
        token: true,
        why: r.to_string(),
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_resource_structure() {
        let get = Method::GET;
        assert_eq!(action_of(&get, "/dicom-web/studies"), Action::Search);
        assert_eq!(
            action_of(&get, "/dicom-web/studies/1.2/series"),
            Action::Search
        );
        assert_eq!(
            action_of(&get, "/dicom-web/studies/1.2/series/3/instances/"),
            Action::Search
        );
        assert_eq!(action_of(&get, "/dicom-web/studies/1.2"), Action::Read);
        assert_eq!(
            action_of(&get, "/dicom-web/studies/1.2/metadata"),
            Action::Read
        );
        assert_eq!(
            action_of(&Method::POST, "/dicom-web/studies"),
            Action::Store
        );
        assert_eq!(
            action_of(&Method::DELETE, "/dicom-web/studies/1.2"),
            Action::Delete
        );
    }

    use axum::body::Body;
    use radveil_access::dev::DevIssuer;
    use tower::ServiceExt;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn app(dir: &std::path::Path, dev: &DevIssuer) -> axum::Router {
        let store = radveil_store::Store::open(
            &radveil_store::Layout::under(dir),
            radveil_store::Key::random().unwrap(),
        )
        .unwrap();
        let verifier = radveil_access::Verifier::new(
            vec![dev.config("radveil")],
            Arc::new(radveil_access::HttpFetch::default()),
            radveil_access::Settings::default(),
        )
        .unwrap();
        crate::router(AppState {
            store,
            limits: Default::default(),
            metrics: Default::default(),
            access: AccessControl::Tokens(Arc::new(verifier)),
            catalogue: Default::default(),
            auditor: None,
            ingest: None,
            https: false,
            disk: None,
            portal: Default::default(),
        })
    }

    async fn get(app: &axum::Router, uri: &str, token: Option<&str>) -> Response {
        let mut req = axum::http::Request::get(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn token(dev: &DevIssuer, scope: &str, roles: &[&str], lifetime: i64) -> String {
        let t = now() as i64;
        dev.sign(&serde_json::json!({
            "iss": radveil_access::dev::DEV_ISSUER, "sub": "s", "aud": "radveil",
            "nbf": t - 60, "exp": t + lifetime, "scope": scope, "roles": roles,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn tokens_are_checked_before_any_route() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevIssuer::from_seed(&[5; 32]).unwrap();
        let app = app(dir.path(), &dev);
        // No token: 401 with a bare challenge.
        let r = get(&app, "/dicom-web/studies/1.2.3", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"radveil\""
        );
        // An expired token: 401 invalid_token.
        let expired = token(&dev, "user/ImagingStudy.rs", &["admin"], -3600);
        let r = get(&app, "/dicom-web/studies/1.2.3", Some(&expired)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        // A good token without the right: 403 insufficient_scope.
        let researcher = token(&dev, "user/*.cruds", &["researcher"], 600);
        let r = get(&app, "/dicom-web/studies/1.2.3", Some(&researcher)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // A good token with it: through to the handler (a missing study).
        let admin = token(&dev, "user/ImagingStudy.rs", &["admin"], 600);
        let r = get(&app, "/dicom-web/studies/1.2.3", Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Unknown paths under /dicom-web are checked too; health is open.
        let r = get(&app, "/dicom-web/nothing", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(get(&app, "/healthz", None).await.status(), StatusCode::OK);
    }
}
