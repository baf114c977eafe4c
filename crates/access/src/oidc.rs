//! Signing in to the portal with OpenID Connect: radveil as a confidential client of the
//! site's OpenID provider, by the authorization code flow with PKCE (RFC 6749 §4.1,
//! RFC 7636 S256) and `state`, as the OAuth 2.0 Security BCP (RFC 9700) asks of a web
//! application.
//!
//! The provider's endpoints come from its discovery document. The access token the code
//! buys is verified like any bearer token the gateway receives ([`crate::Verifier`]:
//! issuer, audience, signature, expiry), so the portal's session holds exactly the rights
//! the same token would have on DICOMweb. The ID token is not needed for that and is not
//! used: PKCE binds the code to this browser's sign-in, and `state` to this session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::verifier::{acceptable_url, Fetch, FetchError};

/// Why signing in failed (never holding a code, a token or a secret).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider's discovery document could not be read or is not usable.
    #[error("the OpenID provider's configuration: {0}")]
    Discovery(&'static str),
    /// Talking to the provider failed.
    #[error("the OpenID provider could not be reached: {0}")]
    Fetch(#[from] FetchError),
    /// The token endpoint refused the code or answered something unusable.
    #[error("the OpenID provider refused the sign-in: {0}")]
    Refused(String),
    /// No randomness from the operating system.
    #[error("no randomness from the operating system")]
    Random,
}

/// How the portal is registered with the provider.
#[derive(Clone)]
pub struct ClientConfig {
    /// The provider (its `iss`); its discovery document names the endpoints.
    pub issuer: String,
    /// This client's `client_id`.
    pub client_id: String,
    /// This client's secret (sent by HTTP Basic to the token endpoint).
    pub client_secret: Zeroizing<String>,
    /// Where the provider sends the browser back: `https://HOST/portal/callback`.
    pub redirect_uri: String,
    /// The scopes asked for (`openid` and the SMART scopes the portal needs).
    pub scope: String,
    /// The resource indicator (RFC 8707) of the gateway, when the provider wants one to
    /// issue an access token for it.
    pub resource: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// The portal as an OpenID Connect client, with its provider's endpoints found.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    config: ClientConfig,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// A sign-in under way: what the browser's return must match. Kept by the server (never
/// sent to the browser but for `state`).
#[derive(Clone)]
pub struct Pending {
    /// The `state` sent to the provider and expected back.
    pub state: String,
    /// The PKCE code verifier (RFC 7636 §4.1: 43 characters of base64url).
    pub verifier: Zeroizing<String>,
}

/// What the token endpoint gave for a code.
pub struct Tokens {
    /// The access token (a JWT the gateway verifies).
    pub access_token: Zeroizing<String>,
    /// Its lifetime in seconds, when the provider said.
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `n` random bytes as base64url.
pub fn random_text(n: usize) -> Result<String, OidcError> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|_| OidcError::Random)?;
    let t = URL_SAFE_NO_PAD.encode(&b);
    zeroize::Zeroize::zeroize(&mut b);
    Ok(t)
}

/// Percent-encodes `s` for a query string or a form body (RFC 3986 unreserved kept).
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl RelyingParty {
    /// Reads the provider's discovery document (`ISSUER/.well-known/openid-configuration`):
    /// its issuer must be the one configured, its endpoints https (http only on loopback),
    /// and it must support the code flow with S256.
    pub fn discover(config: ClientConfig, fetch: &dyn Fetch) -> Result<RelyingParty, OidcError> {
        if !acceptable_url(&config.issuer) || !acceptable_url(&config.redirect_uri) {
            return Err(OidcError::Discovery(
                "the issuer and the redirect URI must be https URLs (http only on loopback)",
            ));
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        );
        let doc: Value = serde_json::from_slice(&fetch.get(&url, 256 << 10)?)
            .map_err(|_| OidcError::Discovery("not JSON"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(config.issuer.as_str()) {
            return Err(OidcError::Discovery(
                "its issuer differs from the one configured",
            ));
        }
        let endpoint = |name: &'static str| -> Result<String, OidcError> {
            let u = doc
                .get(name)
                .and_then(Value::as_str)
                .ok_or(OidcError::Discovery("an endpoint is missing"))?;
            if !acceptable_url(u) {
                return Err(OidcError::Discovery(
                    "an endpoint is not https (http only on loopback)",
                ));
            }
            Ok(u.to_string())
        };
        // Absent means "plain only" (RFC 8414 §2): S256 must be listed.
        let s256 = doc
            .get("code_challenge_methods_supported")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "S256"));
        if !s256 {
            return Err(OidcError::Discovery(
                "the provider does not offer PKCE S256",
            ));
        }
        Ok(RelyingParty {
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            config,
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts a sign-in: the URL to send the browser to, and what its return must match.
    pub fn start(&self) -> Result<(String, Pending), OidcError> {
        let state = random_text(32)?;
        let verifier = Zeroizing::new(random_text(32)?);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("scope", self.config.scope.as_str()),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if let Some(r) = &self.config.resource {
            pairs.push(("resource", r.as_str()));
        }
        let sep = if self.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}{}", self.authorization_endpoint, form(&pairs));
        Ok((url, Pending { state, verifier }))
    }

    /// Exchanges the code the browser brought back for tokens (blocking: call it off the
    /// async runtime's threads).
    pub fn exchange(
        &self,
        code: &str,
        pending: &Pending,
        fetch: &dyn Fetch,
    ) -> Result<Tokens, OidcError> {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(r) = &self.config.resource {
            pairs.push(("resource", r.as_str()));
        }
        let body = Zeroizing::new(form(&pairs));
        let basic = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&self.config.client_id),
                enc(&self.config.client_secret)
            ))
        ));
        let (status, answer) = fetch.post_form(&self.token_endpoint, &basic, &body, 64 << 10)?;
        let doc: Value = serde_json::from_slice(&answer)
            .map_err(|_| OidcError::Refused(format!("HTTP {status}, not JSON")))?;
        if status != 200 {
            // RFC 6749 §5.2: the error code is safe to repeat; the description may not be.
            let code = doc
                .get("error")
                .and_then(Value::as_str)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or("unknown");
            return Err(OidcError::Refused(format!("HTTP {status}, {code}")));
        }
        if !doc
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(OidcError::Refused("not a bearer token".into()));
        }
        let access_token = doc
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= crate::MAX_TOKEN)
            .ok_or_else(|| OidcError::Refused("no usable access token".into()))?;
        Ok(Tokens {
            access_token: Zeroizing::new(access_token.to_string()),
            expires_in: doc.get("expires_in").and_then(Value::as_u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Provider {
        doc: Value,
        token_answer: (u16, Value),
        posted: Mutex<Vec<(String, String, String)>>,
    }

    impl Fetch for Provider {
        fn get(&self, _url: &str, _max: usize) -> Result<Vec<u8>, FetchError> {
            Ok(serde_json::to_vec(&self.doc).unwrap())
        }
        fn post_form(
            &self,
            url: &str,
            authorization: &str,
            body: &str,
            _max: usize,
        ) -> Result<(u16, Vec<u8>), FetchError> {
            self.posted.lock().unwrap().push((
                url.to_string(),
                authorization.to_string(),
                body.to_string(),
            ));
            Ok((
                self.token_answer.0,
                serde_json::to_vec(&self.token_answer.1).unwrap(),
            ))
        }
    }

    const ISS: &str = "http://127.0.0.1:9000";

    fn config() -> ClientConfig {
        ClientConfig {
            issuer: ISS.into(),
            client_id: "portal".into(),
            client_secret: Zeroizing::new("s3cret:x".into()),
            redirect_uri: "http://127.0.0.1:8042/portal/callback".into(),
            scope: "openid patient/ImagingStudy.rs".into(),
            resource: Some("urn:radveil:gateway".into()),
        }
    }

    fn provider() -> Provider {
        Provider {
            doc: serde_json::json!({
                "issuer": ISS,
                "authorization_endpoint": format!("{ISS}/auth"),
                "token_endpoint": format!("{ISS}/token"),
                "code_challenge_methods_supported": ["S256"],
            }),
            token_answer: (
                200,
                serde_json::json!({"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 600}),
            ),
            ..Provider::default()
        }
    }

    fn query(url: &str, key: &str) -> Option<String> {
        url.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    #[test]
    fn the_code_flow_uses_pkce_s256_and_state() {
        let p = provider();
        let rp = RelyingParty::discover(config(), &p).unwrap();
        let (url, pending) = rp.start().unwrap();
        assert!(url.starts_with(&format!("{ISS}/auth?")), "{url}");
        assert_eq!(query(&url, "state").unwrap(), pending.state);
        assert_eq!(query(&url, "code_challenge_method").unwrap(), "S256");
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        assert_eq!(query(&url, "code_challenge").unwrap(), challenge);
        assert_eq!(
            query(&url, "redirect_uri").unwrap(),
            "http%3A%2F%2F127.0.0.1%3A8042%2Fportal%2Fcallback"
        );
        // Two sign-ins never share a state or a verifier.
        let (_, other) = rp.start().unwrap();
        assert_ne!(other.state, pending.state);
        assert_ne!(*other.verifier, *pending.verifier);
        assert_eq!(pending.verifier.len(), 43);

        let t = rp.exchange("the-code", &pending, &p).unwrap();
        assert_eq!(t.access_token.as_str(), "a.b.c");
        assert_eq!(t.expires_in, Some(600));
        let posted = p.posted.lock().unwrap();
        let (url, auth, body) = &posted[0];
        assert_eq!(url, &format!("{ISS}/token"));
        // client_secret_basic with the form-encoded id and secret (RFC 6749 §2.3.1).
        let expected = base64::engine::general_purpose::STANDARD.encode("portal:s3cret%3Ax");
        assert_eq!(auth, &format!("Basic {expected}"));
        assert!(body.contains("grant_type=authorization_code"));
        assert!(body.contains("code=the-code"));
        assert!(body.contains(&format!("code_verifier={}", pending.verifier.as_str())));
    }

    #[test]
    fn a_provider_that_is_not_usable_is_refused() {
        let mut p = provider();
        p.doc["issuer"] = "http://127.0.0.1:9001".into();
        assert!(RelyingParty::discover(config(), &p).is_err());
        let mut p = provider();
        p.doc["code_challenge_methods_supported"] = serde_json::json!(["plain"]);
        assert!(RelyingParty::discover(config(), &p).is_err());
        let mut p = provider();
        p.doc["token_endpoint"] = "http://idp.example/token".into();
        assert!(RelyingParty::discover(config(), &p).is_err());
        let mut c = config();
        c.redirect_uri = "http://portal.example/portal/callback".into();
        assert!(RelyingParty::discover(c, &provider()).is_err());
    }

    #[test]
    fn refusals_by_the_token_endpoint_repeat_only_the_error_code() {
        let mut p = provider();
        p.token_answer = (
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "code a-secret-code was used"}),
        );
        let rp = RelyingParty::discover(config(), &p).unwrap();
        let (_, pending) = rp.start().unwrap();
        let e = rp.exchange("a-secret-code", &pending, &p).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(!text.contains("a-secret-code"), "{text}");
        let mut p = provider();
        p.token_answer = (
            200,
            serde_json::json!({"access_token": "x", "token_type": "mac"}),
        );
        let rp = RelyingParty::discover(config(), &p).unwrap();
        assert!(rp.exchange("c", &pending, &p).is_err());
    }
}
