//! The development issuer behind `radveil serve --dev` and `radveil token`: one Ed25519 key
//! (its 32-byte seed kept by the caller, mode 0600), trusted by the server and signing
//! tokens for trying things out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::jwks::{KeySet, PublicKey};
use crate::principal::PatientRef;
use crate::verifier::{IssuerConfig, KeySource};

/// The dev issuer's `iss`.
pub const DEV_ISSUER: &str = "urn:radveil:dev";
/// The audience the dev issuer's tokens name, and the server's default `aud`.
pub const DEFAULT_AUDIENCE: &str = "radveil";
/// Longest life of a dev token (24 hours).
pub const MAX_LIFETIME: u64 = 24 * 3600;

/// Why a dev token was not made.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The seed is not 32 bytes.
    #[error("the dev issuer's key is 32 bytes (64 hex digits)")]
    Seed,
    /// Signing failed.
    #[error("signing the token: {0}")]
    Sign(String),
    /// A lifetime of zero or longer than [`MAX_LIFETIME`].
    #[error("a dev token lives from 1 second to 24 hours")]
    Lifetime,
}

/// The dev issuer's key.
pub struct DevIssuer {
    pkcs8: Zeroizing<Vec<u8>>,
    public: [u8; 32],
    verifying: DecodingKey,
    kid: String,
}

/// What a dev token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// `aud`.
    pub audience: String,
    /// `scope` (space-separated in the token).
    pub scopes: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// `patient`: a string (Patient ID) when it has no issuer, else `{"id", "issuer"}`.
    pub patient: Option<PatientRef>,
    /// Seconds from now to `exp`.
    pub lifetime: u64,
}

impl DevIssuer {
    /// The issuer of this Ed25519 seed.
    pub fn from_seed(seed: &[u8]) -> Result<DevIssuer, DevError> {
        let seed: &[u8; 32] = seed.try_into().map_err(|_| DevError::Seed)?;
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = signing.verifying_key().to_bytes();
        // PKCS #8 v1 for Ed25519 (RFC 8410 §7): a fixed prefix and the seed.
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]);
        pkcs8.extend_from_slice(seed);
        let kid = format!(
            "dev-{}",
            public[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let verifying = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
            .map_err(|_| DevError::Seed)?;
        Ok(DevIssuer {
            pkcs8,
            public,
            verifying,
            kid,
        })
    }

    /// The key's ID in tokens.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a key set.
    pub fn key_set(&self) -> KeySet {
        KeySet::of(vec![PublicKey {
            kid: Some(self.kid.clone()),
            alg: Algorithm::EdDSA,
            key: self.verifying.clone(),
        }])
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.public),
        }]})
    }

    /// The issuer to trust, with `audience`.
    pub fn config(&self, audience: &str) -> IssuerConfig {
        IssuerConfig {
            issuer: DEV_ISSUER.into(),
            audience: vec![audience.into()],
            keys: KeySource::Keys(self.key_set()),
        }
    }

    /// Signs `claims` as they are (EdDSA, this key's `kid`).
    pub fn sign(&self, claims: &Value) -> Result<String, DevError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| DevError::Sign(e.to_string()))
    }

    /// A token for `req`, issued at `now` (seconds since the epoch).
    pub fn token(&self, req: &TokenRequest, now: u64) -> Result<String, DevError> {
        if req.lifetime == 0 || req.lifetime > MAX_LIFETIME {
            return Err(DevError::Lifetime);
        }
        let mut claims = json!({
            "iss": DEV_ISSUER,
            "sub": req.subject,
            "aud": req.audience,
            "iat": now,
            "nbf": now,
            "exp": now + req.lifetime,
            "client_id": "radveil-token",
            "scope": req.scopes.join(" "),
        });
        if !req.roles.is_empty() {
            claims["roles"] = json!(req.roles);
        }
        if let Some(p) = &req.patient {
            claims["patient"] = if p.issuer().is_empty() {
                json!(p.id())
            } else {
                json!({"id": p.id(), "issuer": p.issuer()})
            };
        }
        self.sign(&claims)
    }
}
