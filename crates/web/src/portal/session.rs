//! The portal's sessions: a signed-in browser holds a random session cookie (256 bits,
//! `HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS); the server keeps, under the
//! SHA-256 of that value, the verified [`Principal`] of the access token the sign-in
//! bought, until that token expires (and at most [`MAX_LIFETIME`]). The token itself is not
//! kept: the session grants what the token granted and no longer.
//!
//! A sign-in under way is bound to the browser that started it by a second cookie (`Lax`,
//! so that it comes back with the provider's redirect) whose value keys the [`Pending`]
//! state and PKCE verifier; the provider's `state` must match it (no login CSRF).
//! Both maps are bounded; expired entries are swept when they fill.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap};
use radveil_access::oidc::{random_text, Pending};
use radveil_access::Principal;
use sha2::{Digest, Sha256};

/// The session cookie's name (`__Host-` prefixed over HTTPS).
pub const COOKIE: &str = "radveil-session";
/// The cookie of someone who opened a patient's share link: a session that sees one study.
pub const SHARE_COOKIE: &str = "radveil-share";
/// The cookie of a sign-in under way.
pub const SIGNIN_COOKIE: &str = "radveil-signin";
/// The longest a session lives, whatever the token's lifetime (8 hours).
pub const MAX_LIFETIME: u64 = 8 * 3600;
/// How long a sign-in may take at the provider (10 minutes).
pub const SIGNIN_LIFETIME: u64 = 600;
/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 100_000;
/// Most sign-ins under way at once.
pub const MAX_PENDING: usize = 10_000;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in, as their access token said.
    pub principal: Arc<Principal>,
    /// The token's display name claim (`name`), when it had one.
    pub name: Option<String>,
    /// When the session ends (Unix seconds).
    pub expires: u64,
    /// The value forms must carry back (`csrf`), so that another site cannot post for the
    /// user even where `SameSite` is not honoured.
    pub csrf: String,
    /// For a share link's session, the one study it shows (its scope is that study, on
    /// DICOMweb reads only; the portal's pages are not for it). `None`: a signed-in user.
    pub study: Option<radveil_store::Handle>,
    /// For a share link's session, the link's id (so revoking it ends the session).
    pub link: Option<String>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<[u8; 32], Session>,
    pending: HashMap<[u8; 32], (Pending, u64)>,
}

/// The sessions and sign-ins of one server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// Why a session or a sign-in could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Too many at once (a flood): refused rather than grown without bound.
    #[error("too many sessions or sign-ins at once")]
    Full,
    /// No randomness from the operating system.
    #[error("no randomness from the operating system")]
    Random,
}

fn key(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

/// The current time in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4), when
/// present once and made only of base64url characters (ours never hold anything else).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        let Ok(h) = h.to_str() else { continue };
        for pair in h.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            let k = k.strip_prefix("__Host-").unwrap_or(k);
            if k == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found.filter(|v| {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A `Set-Cookie` value: `HttpOnly`, `Path=/`, the given `SameSite`, `Secure` and the
/// `__Host-` prefix over HTTPS; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, same_site: &str, max_age: u64, https: bool) -> String {
    let (prefix, secure) = if https {
        ("__Host-", "; Secure")
    } else {
        ("", "")
    };
    format!(
        "{prefix}{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
}

impl Sessions {
    fn sweep(inner: &mut Inner, now: u64) {
        inner.live.retain(|_, s| s.expires > now);
        inner
            .pending
            .retain(|_, (_, started)| now.saturating_sub(*started) < SIGNIN_LIFETIME);
    }

    /// Keeps a sign-in under way; gives the value of its browser cookie.
    pub fn begin(&self, pending: Pending) -> Result<String, SessionError> {
        let value = random_text(32).map_err(|_| SessionError::Random)?;
        let now = now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.pending.len() >= MAX_PENDING {
            Self::sweep(&mut inner, now);
            if inner.pending.len() >= MAX_PENDING {
                return Err(SessionError::Full);
            }
        }
        inner.pending.insert(key(&value), (pending, now));
        Ok(value)
    }

    /// Takes back the sign-in of the browser cookie `value`, if it is still fresh and the
    /// provider's `state` is the one it was sent. A sign-in is used once.
    pub fn finish(&self, value: &str, state: &str) -> Option<Pending> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (pending, started) = inner.pending.remove(&key(value))?;
        let fresh = now().saturating_sub(started) < SIGNIN_LIFETIME;
        let same = constant_time_eq(pending.state.as_bytes(), state.as_bytes());
        (fresh && same).then_some(pending)
    }

    /// Opens a session for `principal` until `token_expires` (at most [`MAX_LIFETIME`]
    /// from now); gives the cookie's value.
    pub fn open(
        &self,
        principal: Arc<Principal>,
        name: Option<String>,
        token_expires: u64,
    ) -> Result<(String, Session), SessionError> {
        self.open_scoped(principal, name, token_expires, None)
    }

    /// Opens a session like [`Sessions::open`] that sees only `study` when given (a share
    /// link's; found by [`Sessions::share_of`], never by [`Sessions::of`]).
    pub fn open_scoped(
        &self,
        principal: Arc<Principal>,
        name: Option<String>,
        token_expires: u64,
        share: Option<(radveil_store::Handle, String)>,
    ) -> Result<(String, Session), SessionError> {
        let (study, link) = share.map_or((None, None), |(s, l)| (Some(s), Some(l)));
        let value = random_text(32).map_err(|_| SessionError::Random)?;
        let csrf = random_text(32).map_err(|_| SessionError::Random)?;
        let now = now();
        let session = Session {
            principal,
            name,
            expires: token_expires.min(now.saturating_add(MAX_LIFETIME)),
            csrf,
            study,
            link,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.live.len() >= MAX_SESSIONS {
            Self::sweep(&mut inner, now);
            if inner.live.len() >= MAX_SESSIONS {
                return Err(SessionError::Full);
            }
        }
        inner.live.insert(key(&value), session.clone());
        Ok((value, session))
    }

    /// The live session of the request's session cookie, if any (a signed-in user's).
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        self.find(headers, COOKIE, false)
    }

    /// The live share-link session of the request's share cookie, if any.
    pub fn share_of(&self, headers: &HeaderMap) -> Option<Session> {
        self.find(headers, SHARE_COOKIE, true)
    }

    fn find(&self, headers: &HeaderMap, name: &str, share: bool) -> Option<Session> {
        let value = cookie(headers, name)?;
        let k = key(value);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.live.get(&k) {
            // A share session's value in the user's cookie (or the reverse) is no session.
            Some(s) if s.study.is_some() != share => None,
            Some(s) if s.expires > now() => Some(s.clone()),
            Some(_) => {
                inner.live.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends every session opened with the share link `link` (it was revoked).
    pub fn close_link(&self, link: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.live.retain(|_, s| s.link.as_deref() != Some(link));
    }

    /// Ends the session of the request's cookie.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(value) = cookie(headers, COOKIE) {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.live.remove(&key(value));
        }
    }
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use zeroize::Zeroizing;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            issuer: "i".into(),
            subject: "s".into(),
            client: None,
            roles: Vec::new(),
            scopes: Default::default(),
            patient: None,
            name: None,
        })
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires_or_closes() {
        let s = Sessions::default();
        let (value, session) = s.open(principal(), None, now() + 60).unwrap();
        assert!(session.expires <= now() + 60);
        let h = with_cookie(&format!("other=1; {COOKIE}={value}"));
        assert_eq!(s.of(&h).unwrap().principal.subject, "s");
        // Another value, a tampered one, or two cookies of the name: no session.
        assert!(s.of(&with_cookie(&format!("{COOKIE}=x{value}"))).is_none());
        assert!(s
            .of(&with_cookie(&format!("{COOKIE}={value}; {COOKIE}={value}")))
            .is_none());
        s.close(&h);
        assert!(s.of(&h).is_none());
        // Expired with its token.
        let (value, _) = s.open(principal(), None, now() - 1).unwrap();
        assert!(s.of(&with_cookie(&format!("{COOKIE}={value}"))).is_none());
        // Never longer than MAX_LIFETIME.
        let (_, long) = s.open(principal(), None, u64::MAX).unwrap();
        assert!(long.expires <= now() + MAX_LIFETIME);
    }

    #[test]
    fn a_sign_in_finishes_once_and_only_with_its_state() {
        let s = Sessions::default();
        let pending = || Pending {
            state: "the-state".into(),
            verifier: Zeroizing::new("v".into()),
        };
        let value = s.begin(pending()).unwrap();
        assert!(s.finish(&value, "another-state").is_none());
        // A wrong state used it up: a second try with the right one fails too.
        assert!(s.finish(&value, "the-state").is_none());
        let value = s.begin(pending()).unwrap();
        assert!(s.finish(&value, "the-state").is_some());
        assert!(s.finish(&value, "the-state").is_none());
    }

    #[test]
    fn cookies_are_set_strictly() {
        let c = set_cookie(COOKIE, "v", "Strict", 60, true);
        assert_eq!(
            c,
            "__Host-radveil-session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie(COOKIE, "v", "Lax", 0, false).contains("Secure"));
        // The __Host- name is read back as the plain name.
        let h = with_cookie("__Host-radveil-session=abc");
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(
            cookie(&with_cookie("radveil-session=a;b"), COOKIE),
            Some("a")
        );
        assert_eq!(cookie(&with_cookie("radveil-session=a%20b"), COOKIE), None);
    }
}
