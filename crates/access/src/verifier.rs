//! Bearer token verification: the token's shape and size, its issuer among the trusted
//! ones, its key in that issuer's key set (fetched again, at most once per
//! [`Settings::min_refresh`], when a token names an unknown key or the set is old), the one
//! algorithm that key allows, the signature, then `exp`, `nbf`, `iss` and `aud`, then the
//! claims the gateway reads. Every refusal is a typed [`Refusal`] that never holds the
//! token or a claim's value. A token verified once is answered from a bounded cache until
//! its `exp` or until its issuer's key set changes ([`crate::cache`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::jwks::{alg_named, JwksError, KeySet, PublicKey, MAX_JWKS};
use crate::principal::{PatientRef, Principal, Role};
use crate::smart::Scopes;

/// Largest token accepted (bytes): real access tokens are well under this.
pub const MAX_TOKEN: usize = 8 << 10;

/// Why a token is refused (HTTP 401, `error="invalid_token"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No bearer token in the request.
    #[error("no bearer token")]
    NoToken,
    /// Larger than [`MAX_TOKEN`].
    #[error("the token is too large")]
    TooLarge,
    /// Not a signed JWT (three base64url parts, JSON header and claims).
    #[error("the token is malformed")]
    Malformed,
    /// `alg: none` or no signature.
    #[error("the token is unsigned")]
    Unsigned,
    /// The header names an algorithm the key does not allow (HMAC with a public key…).
    #[error("the token's algorithm is not its key's")]
    Algorithm,
    /// The issuer has no key of that `kid` (even after fetching its keys again).
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Not for this service (`aud`).
    #[error("the token is for another audience")]
    WrongAudience,
    /// From an issuer that is not trusted (`iss`).
    #[error("the token's issuer is not trusted")]
    WrongIssuer,
    /// A claim the gateway reads is missing or invalid (named, not shown).
    #[error("the token's {0} claim is missing or invalid")]
    Claim(&'static str),
}

/// Fetches a document over HTTP(S) (the issuer's discovery document and key set).
pub trait Fetch: Send + Sync {
    /// The body of `url`, at most `max` bytes.
    fn get(&self, url: &str, max: usize) -> Result<Vec<u8>, FetchError>;

    /// POSTs a form (`application/x-www-form-urlencoded`) with an `Authorization` header
    /// value, and gives the status and at most `max` bytes of the answer (an OAuth token
    /// endpoint). Fetchers that only read documents refuse.
    fn post_form(
        &self,
        url: &str,
        authorization: &str,
        body: &str,
        max: usize,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let _ = (url, authorization, body, max);
        Err(FetchError::Http("this fetcher cannot post".into()))
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed.
    #[error("{0}")]
    Http(String),
    /// The body was larger than allowed.
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
}

/// [`Fetch`] with `ureq` (rustls): 10 s timeouts, no redirects.
pub struct HttpFetch {
    agent: ureq::Agent,
}

impl Default for HttpFetch {
    fn default() -> Self {
        HttpFetch {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .redirects(0)
                .build(),
        }
    }
}

impl Fetch for HttpFetch {
    fn get(&self, url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        use std::io::Read;
        let resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if body.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        Ok(body)
    }

    fn post_form(
        &self,
        url: &str,
        authorization: &str,
        body: &str,
        max: usize,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        use std::io::Read;
        let resp = match self
            .agent
            .post(url)
            .set("Authorization", authorization)
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("Accept", "application/json")
            .send_string(body)
        {
            Ok(r) => r,
            // An OAuth error answer (4xx) still has a body worth reading.
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(FetchError::Http(e.kind().to_string())),
        };
        let status = resp.status();
        let mut answer = Vec::new();
        resp.into_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut answer)
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if answer.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        Ok((status, answer))
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A fixed set (a JWKS file, or the dev issuer's key).
    Keys(KeySet),
    /// A JWKS URL (from OpenID Connect discovery), fetched and cached.
    Url(String),
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Its `iss`, exactly.
    pub issuer: String,
    /// The audiences (`aud`) accepted: this service's names.
    pub audience: Vec<String>,
    /// Its keys.
    pub keys: KeySource,
}

/// Verification settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Least time between two fetches of one issuer's keys.
    pub min_refresh: Duration,
    /// Age after which an issuer's keys are fetched again (so that a withdrawn key stops
    /// verifying).
    pub max_age: Duration,
    /// The claim holding roles: a name, or a dotted path into objects
    /// (`realm_access.roles` for Keycloak). Its value is a string or an array of strings.
    pub roles_claim: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            leeway: 30,
            min_refresh: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            roles_claim: "roles".into(),
        }
    }
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Fetching the discovery document or the key set failed.
    #[error("fetching {what}: {source}")]
    Fetch {
        /// What was fetched.
        what: &'static str,
        /// Why it failed.
        source: FetchError,
    },
    /// The key set is unusable.
    #[error("the issuer's key set: {0}")]
    Jwks(#[from] JwksError),
    /// The discovery document is not what OpenID Connect Discovery 1.0 says.
    #[error("the OpenID configuration: {0}")]
    Discovery(&'static str),
    /// No issuer to trust.
    #[error("no issuer configured")]
    NoIssuer,
}

struct Trusted {
    issuer: String,
    audience: Vec<String>,
    url: Option<String>,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped each time `keys` is replaced: cached tokens verified against an older set
    /// no longer count.
    generation: AtomicU64,
    fetched: Mutex<Instant>,
    refreshing: Mutex<()>,
}

/// Verifies bearer tokens from the trusted issuers into [`Principal`]s.
pub struct Verifier {
    issuers: Vec<Trusted>,
    fetch: Arc<dyn Fetch>,
    settings: Settings,
    cache: TokenCache,
}

/// The clock, in Unix seconds (as `exp` and `nbf` are).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn fetch_keys(fetch: &dyn Fetch, url: &str) -> Result<KeySet, SetupError> {
    let body = fetch
        .get(url, MAX_JWKS)
        .map_err(|source| SetupError::Fetch {
            what: "the key set",
            source,
        })?;
    Ok(KeySet::from_jwks(&body)?)
}

/// Whether `url` may be fetched: HTTPS, or HTTP to a loopback host (tests, a provider on
/// the same machine).
pub(crate) fn acceptable_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// OpenID Connect Discovery: fetches `ISSUER/.well-known/openid-configuration`, checks that
/// it names the same issuer, and returns its `jwks_uri`. Only HTTPS (or HTTP on loopback).
pub fn discover(issuer: &str, fetch: &dyn Fetch) -> Result<String, SetupError> {
    if !acceptable_url(issuer) {
        return Err(SetupError::Discovery(
            "the issuer must be an https URL (http only on loopback)",
        ));
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let body = fetch
        .get(&url, 256 << 10)
        .map_err(|source| SetupError::Fetch {
            what: "the OpenID configuration",
            source,
        })?;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|_| SetupError::Discovery("not JSON"))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(SetupError::Discovery(
            "its issuer differs from the one configured",
        ));
    }
    let jwks = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or(SetupError::Discovery("no jwks_uri"))?;
    if !acceptable_url(jwks) {
        return Err(SetupError::Discovery(
            "jwks_uri must be an https URL (http only on loopback)",
        ));
    }
    Ok(jwks.to_string())
}

/// Decodes one base64url part of a compact JWS (no padding, nothing else).
fn part(text: &str) -> Result<Vec<u8>, Refusal> {
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Refusal::Malformed);
    }
    URL_SAFE_NO_PAD.decode(text).map_err(|_| Refusal::Malformed)
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Refusal::Malformed),
    }
}

/// A short text claim: at most 256 bytes, no control characters.
fn text_claim(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    (!s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)).then(|| s.to_string())
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

impl Verifier {
    /// A verifier trusting `issuers`; keys given by URL are fetched now (a failure stops
    /// the setup: better no server than one that refuses every token).
    pub fn new(
        issuers: Vec<IssuerConfig>,
        fetch: Arc<dyn Fetch>,
        settings: Settings,
    ) -> Result<Verifier, SetupError> {
        if issuers.is_empty() {
            return Err(SetupError::NoIssuer);
        }
        let mut trusted = Vec::with_capacity(issuers.len());
        for c in issuers {
            let (keys, url) = match c.keys {
                KeySource::Keys(k) => (k, None),
                KeySource::Url(u) => (fetch_keys(fetch.as_ref(), &u)?, Some(u)),
            };
            trusted.push(Trusted {
                issuer: c.issuer,
                audience: c.audience,
                url,
                keys: RwLock::new(Arc::new(keys)),
                generation: AtomicU64::new(0),
                fetched: Mutex::new(Instant::now()),
                refreshing: Mutex::new(()),
            });
        }
        Ok(Verifier {
            issuers: trusted,
            fetch,
            settings,
            cache: TokenCache::default(),
        })
    }

    /// Whether verifying may fetch keys (then call [`Verifier::verify`] off the async
    /// runtime's threads).
    pub fn is_remote(&self) -> bool {
        self.issuers.iter().any(|i| i.url.is_some())
    }

    /// Verifies a bearer token (the text after `Bearer `). A token verified before is
    /// answered from the cache while it is before its `exp` and its issuer's key set is the
    /// one it was verified against (and, for a fetched set, not older than
    /// [`Settings::max_age`]); otherwise it is verified in full.
    pub fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        if token.is_empty() {
            return Err(Refusal::NoToken);
        }
        if token.len() > MAX_TOKEN {
            return Err(Refusal::TooLarge);
        }
        let key = crate::cache::hash(token);
        let now = unix_now();
        let current = |i: usize| {
            let t = self.issuers.get(i)?;
            // A fetched set past its age is fetched again by a full verification.
            let fresh = t.url.is_none()
                || t.fetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
                    < self.settings.max_age;
            fresh.then(|| t.generation.load(Ordering::Acquire))
        };
        if let Some(p) = self.cache.get(&key, now, current) {
            return Ok(p);
        }
        let (issuer, generation, exp, principal) = self.verify_in_full(token)?;
        if let Some(exp) = exp {
            self.cache
                .put(key, &principal, exp, issuer, generation, now);
        }
        Ok(principal)
    }

    /// Verifies a token without the cache: its issuer's position and key-set generation,
    /// its `exp`, and its principal.
    fn verify_in_full(&self, token: &str) -> Result<(usize, u64, Option<u64>, Principal), Refusal> {
        let mut it = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(Refusal::Malformed);
        };
        let header = object(&part(h)?)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Refusal::Malformed)?;
        if alg.eq_ignore_ascii_case("none") || s.is_empty() {
            return Err(Refusal::Unsigned);
        }
        // Extensions the gateway does not understand must not be ignored (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(Refusal::Malformed);
        }
        let alg = alg_named(alg).ok_or(Refusal::Algorithm)?;
        let kid = match header.get("kid") {
            None => None,
            Some(k) => Some(k.as_str().ok_or(Refusal::Malformed)?),
        };
        let claims = object(&part(p)?)?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(Refusal::WrongIssuer)?;
        let (issuer, trusted) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, t)| t.issuer == iss)
            .ok_or(Refusal::WrongIssuer)?;
        // Read before the key: a set replaced meanwhile makes the entry stale, never fresh.
        let generation = trusted.generation.load(Ordering::Acquire);
        let key = self.key(trusted, kid, alg)?;
        if key.alg != alg {
            return Err(Refusal::Algorithm);
        }
        let mut v = Validation::new(key.alg);
        v.leeway = self.settings.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[&trusted.issuer]);
        v.set_audience(&trusted.audience);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| match e
                .kind()
            {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_) => Refusal::BadSignature,
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                ErrorKind::InvalidAudience => Refusal::WrongAudience,
                ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
                ErrorKind::InvalidAlgorithm => Refusal::Algorithm,
                ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                    "aud" => Refusal::WrongAudience,
                    "iss" => Refusal::WrongIssuer,
                    "exp" => Refusal::Claim("exp"),
                    "sub" => Refusal::Claim("sub"),
                    _ => Refusal::Malformed,
                },
                _ => Refusal::Malformed,
            })?;
        let exp = data.claims.get("exp").and_then(Value::as_u64);
        let principal = self.principal(&trusted.issuer, &data.claims)?;
        Ok((issuer, generation, exp, principal))
    }

    /// The key of `kid` (or the only one of `alg`), fetching the issuer's keys again when
    /// it is unknown or the set is old, at most once per `min_refresh`.
    fn key(&self, t: &Trusted, kid: Option<&str>, alg: Algorithm) -> Result<PublicKey, Refusal> {
        let lookup = || {
            let keys = Arc::clone(&t.keys.read().unwrap_or_else(|p| p.into_inner()));
            keys.find(kid, alg).cloned()
        };
        let found = lookup();
        let Some(url) = &t.url else {
            return found.ok_or(Refusal::UnknownKey);
        };
        let age = || {
            t.fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
        };
        let a = age();
        if (found.is_some() && a < self.settings.max_age) || a < self.settings.min_refresh {
            return found.ok_or(Refusal::UnknownKey);
        }
        // One fetch at a time; while one runs, a request whose key is known goes on with it.
        let _guard = match t.refreshing.try_lock() {
            Ok(g) => g,
            Err(_) if found.is_some() => return found.ok_or(Refusal::UnknownKey),
            Err(_) => t.refreshing.lock().unwrap_or_else(|p| p.into_inner()),
        };
        if age() < self.settings.min_refresh {
            // Fetched while this request waited.
            return lookup().ok_or(Refusal::UnknownKey);
        }
        *t.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        match fetch_keys(self.fetch.as_ref(), url) {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *t.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&keys);
                t.generation.fetch_add(1, Ordering::AcqRel);
                keys.find(kid, alg).cloned().ok_or(Refusal::UnknownKey)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the issuer's keys again; keeping the ones known");
                found.ok_or(Refusal::UnknownKey)
            }
        }
    }

    fn principal(&self, issuer: &str, c: &Map<String, Value>) -> Result<Principal, Refusal> {
        let subject = c
            .get("sub")
            .and_then(text_claim)
            .ok_or(Refusal::Claim("sub"))?;
        let client = match c.get("client_id").or_else(|| c.get("azp")) {
            None => None,
            Some(v) => Some(text_claim(v).ok_or(Refusal::Claim("client_id"))?),
        };
        let scopes = match (c.get("scope"), c.get("scp")) {
            (Some(Value::String(s)), _) => Scopes::parse(s.split(' ')),
            (Some(_), _) => return Err(Refusal::Claim("scope")),
            (None, Some(v)) => Scopes::parse(strings(v)),
            (None, None) => Scopes::default(),
        };
        let mut at = Some(c);
        let mut roles_value = None;
        let mut path = self.settings.roles_claim.split('.').peekable();
        while let (Some(name), Some(obj)) = (path.next(), at) {
            let v = obj.get(name);
            if path.peek().is_none() {
                roles_value = v;
            }
            at = v.and_then(Value::as_object);
        }
        let mut roles = Vec::new();
        for r in roles_value.map(strings).unwrap_or_default() {
            if let Some(r) = Role::from_name(r) {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
        }
        let patient = match c.get("patient") {
            None => None,
            Some(Value::String(id)) => {
                Some(PatientRef::new(id, "").ok_or(Refusal::Claim("patient"))?)
            }
            Some(Value::Object(o)) => {
                let id = o.get("id").and_then(Value::as_str);
                let issuer = match o.get("issuer") {
                    None => Some(""),
                    Some(v) => v.as_str(),
                };
                Some(
                    id.zip(issuer)
                        .and_then(|(id, issuer)| PatientRef::new(id, issuer))
                        .ok_or(Refusal::Claim("patient"))?,
                )
            }
            Some(_) => return Err(Refusal::Claim("patient")),
        };
        Ok(Principal {
            issuer: issuer.to_string(),
            subject,
            client,
            roles,
            scopes,
            patient,
            // Shown only: a name that is not a short plain text is left out, not refused.
            name: c.get("name").and_then(text_claim),
        })
    }
}
