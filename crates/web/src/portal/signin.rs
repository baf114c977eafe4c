//! Signing in and out of the portal: `/portal/login` sends the browser to the site's
//! OpenID provider (authorization code with PKCE, [`radveil_access::oidc`]),
//! `/portal/callback` takes the code back, buys the access token, verifies it as every
//! bearer token is verified, and opens a session ([`super::session`]); `/portal/logout`
//! closes it. Nothing of the code, the token or the provider's error description is logged
//! or shown.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use radveil_access::oidc::RelyingParty;
use radveil_access::{Fetch, Principal};
use serde_json::Value;

use super::pages::{self, Page};
use super::session::{self, constant_time_eq, set_cookie, COOKIE, SIGNIN_COOKIE};
use crate::app::AppState;
use crate::auth::AccessControl;

/// The portal's client of the OpenID provider.
pub struct SignIn {
    /// The client, with the provider's endpoints.
    pub rp: RelyingParty,
    /// How the token endpoint is reached.
    pub fetch: Arc<dyn Fetch>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").field("rp", &self.rp).finish()
    }
}

fn with_cookies(mut r: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A page saying why signing in did not work (the reason in our words only).
fn failed(status: StatusCode, why: &str) -> Response {
    pages::message(status, "Signing in did not work", why, true)
}

/// `GET /portal/login`: to the provider.
pub async fn login(State(state): State<AppState>) -> Response {
    let Some(signin) = state.portal.signin.clone() else {
        return failed(
            StatusCode::NOT_FOUND,
            "This server has no sign-in configured. Ask the site's administrator.",
        );
    };
    let (url, pending) = match signin.rp.start() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "a sign-in could not start");
            return failed(StatusCode::INTERNAL_SERVER_ERROR, "Please try again.");
        }
    };
    let value = match state.portal.sessions.begin(pending) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "a sign-in was refused");
            return failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many people are signing in right now. Please try again in a minute.",
            );
        }
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_cookies(
        r,
        &[set_cookie(
            SIGNIN_COOKIE,
            &value,
            "Lax",
            session::SIGNIN_LIFETIME,
            state.https,
        )],
    )
}

/// The `exp` and `name` claims of a token already verified (its payload is read again,
/// not trusted on its own).
fn claims(token: &str) -> (Option<u64>, Option<String>) {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some(p) = payload else {
        return (None, None);
    };
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control))
        .map(str::to_string);
    (p.get("exp").and_then(Value::as_u64), name)
}

/// `GET /portal/callback?code=…&state=…`: the provider's answer.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let Some(signin) = state.portal.signin.clone() else {
        return failed(
            StatusCode::NOT_FOUND,
            "This server has no sign-in configured.",
        );
    };
    let clear = set_cookie(SIGNIN_COOKIE, "", "Lax", 0, state.https);
    let get = |k: &str| {
        let mut it = params.iter().filter(|(key, _)| key == k);
        match (it.next(), it.next()) {
            (Some((_, v)), None) if v.len() <= 2048 => Some(v.clone()),
            _ => None,
        }
    };
    let Some(value) = session::cookie(&headers, SIGNIN_COOKIE) else {
        return with_cookies(
            failed(
                StatusCode::BAD_REQUEST,
                "This sign-in was not started in this browser, or took too long. Please start again.",
            ),
            &[clear],
        );
    };
    let Some(pending) = get("state").and_then(|s| state.portal.sessions.finish(value, &s)) else {
        return with_cookies(
            failed(
                StatusCode::BAD_REQUEST,
                "This sign-in does not match the one this browser started, or took too long. Please start again.",
            ),
            &[clear],
        );
    };
    let Some(code) = get("code") else {
        // The provider said no (the user cancelled, or the client is not allowed).
        return with_cookies(
            failed(
                StatusCode::FORBIDDEN,
                "The sign-in was cancelled or refused.",
            ),
            &[clear],
        );
    };
    let AccessControl::Tokens(verifier) = state.access.clone() else {
        return failed(
            StatusCode::NOT_FOUND,
            "This server has no sign-in configured.",
        );
    };
    let fetch = Arc::clone(&signin.fetch);
    let done = tokio::task::spawn_blocking(move || {
        let tokens = signin.rp.exchange(&code, &pending, fetch.as_ref())?;
        let principal = verifier
            .verify(&tokens.access_token)
            .map_err(|r| radveil_access::oidc::OidcError::Refused(r.to_string()))?;
        Ok::<_, radveil_access::oidc::OidcError>((principal, claims(&tokens.access_token)))
    })
    .await;
    let (principal, (exp, name)): (Principal, _) = match done {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a portal sign-in failed");
            return with_cookies(
                failed(
                    StatusCode::FORBIDDEN,
                    "The sign-in could not be completed. Please start again.",
                ),
                &[clear],
            );
        }
        Err(_) => return failed(StatusCode::INTERNAL_SERVER_ERROR, "Please try again."),
    };
    let expires = exp.unwrap_or_else(|| session::now() + 300);
    let (value, _) = match state
        .portal
        .sessions
        .open(Arc::new(principal), name, expires)
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "a portal session was refused");
            return failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many people are signed in right now. Please try again in a minute.",
            );
        }
    };
    let max_age = expires.saturating_sub(session::now());
    // A page, not a redirect: the session cookie is SameSite=Strict, and a browser coming
    // back from the provider (another site) would not send it on a redirect chain it
    // started; the page's own navigation to /portal is same-site.
    let page = Page::new("Signed in")
        .refresh("/portal")
        .body(maud::html! {
            h1 { "You are signed in" }
            p { a href="/portal" { "Continue to your portal" } }
        })
        .render();
    with_cookies(
        page,
        &[
            clear,
            set_cookie(COOKIE, &value, "Strict", max_age, state.https),
        ],
    )
}

/// The form of `POST /portal/logout`.
#[derive(serde::Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /portal/logout`: ends the session.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(s) = state.portal.sessions.of(&headers) {
        if !constant_time_eq(s.csrf.as_bytes(), form.csrf.as_bytes()) {
            return pages::message(
                StatusCode::FORBIDDEN,
                "Not signed out",
                "This form is out of date. Please go back, reload the page and try again.",
                true,
            );
        }
        state.portal.sessions.close(&headers);
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/portal"));
    // The browser forgets what this origin kept: a token the viewer was handed in
    // sessionStorage (`radveil.token`), cached pages and images (Clear-Site-Data, W3C).
    r.headers_mut().insert(
        HeaderName::from_static("clear-site-data"),
        HeaderValue::from_static("\"cache\", \"storage\""),
    );
    with_cookies(r, &[set_cookie(COOKIE, "", "Strict", 0, state.https)])
}
