//! An issuer's public keys from a JSON Web Key Set (RFC 7517), each with the one algorithm
//! it may verify. Symmetric keys (`kty: oct`) are never loaded: a public key must not be
//! usable as an HMAC secret. Lengths are checked here, before the keys reach the
//! verification code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Largest JWKS document read (bytes).
pub const MAX_JWKS: usize = 1 << 20;
/// Most keys kept from one set.
const MAX_KEYS: usize = 100;
/// Smallest RSA modulus accepted (bits).
const MIN_RSA_BITS: usize = 2048;

/// One public key and the algorithm it verifies.
#[derive(Clone)]
pub struct PublicKey {
    /// Its key ID.
    pub kid: Option<String>,
    /// The only algorithm a token verified by this key may name.
    pub alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Why a key set is unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Larger than [`MAX_JWKS`].
    #[error("the key set is larger than {MAX_JWKS} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("not a JSON Web Key Set")]
    NotJwks,
    /// No key in it can verify signatures (every one was symmetric, unsupported or bad).
    #[error("no usable signing key in the key set ({0} skipped)")]
    NoUsableKey(usize),
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

fn b64(v: &Value, name: &str) -> Option<Vec<u8>> {
    let s = v.get(name)?.as_str()?;
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

pub(crate) fn alg_named(name: &str) -> Option<Algorithm> {
    Some(match name {
        "EdDSA" => Algorithm::EdDSA,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        // HMAC and `none` are never a public key's algorithm.
        _ => return None,
    })
}

/// One JWK as a verification key, or `None` when it cannot be one.
fn key_of(v: &Value) -> Option<PublicKey> {
    if v.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    let kid = match v.get("kid") {
        None => None,
        Some(k) => Some(k.as_str()?.to_string()),
    };
    let named = match v.get("alg") {
        None => None,
        Some(a) => Some(alg_named(a.as_str()?)?),
    };
    let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let (alg, key) = match (
        v.get("kty")?.as_str()?,
        v.get("crv").and_then(Value::as_str),
    ) {
        ("OKP", Some("Ed25519")) => {
            let x = b64(v, "x")?;
            (x.len() == 32).then_some(())?;
            (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(&enc(&x)).ok()?,
            )
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (alg, len) = if crv == "P-256" {
                (Algorithm::ES256, 32)
            } else {
                (Algorithm::ES384, 48)
            };
            let (x, y) = (b64(v, "x")?, b64(v, "y")?);
            (x.len() == len && y.len() == len).then_some(())?;
            (
                alg,
                DecodingKey::from_ec_components(&enc(&x), &enc(&y)).ok()?,
            )
        }
        ("RSA", _) => {
            let (n, e) = (b64(v, "n")?, b64(v, "e")?);
            let n_bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            (n_bits >= MIN_RSA_BITS && n.len() <= 2048 && !e.is_empty() && e.len() <= 8)
                .then_some(())?;
            (
                named.unwrap_or(Algorithm::RS256),
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        _ => return None,
    };
    // A named algorithm must be of the key's type (an RSA key may name any RSA one).
    let alg = match named {
        Some(n) if n == alg => n,
        Some(n)
            if alg == Algorithm::RS256
                && matches!(
                    n,
                    Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ) =>
        {
            n
        }
        Some(_) => return None,
        None => alg,
    };
    Some(PublicKey { kid, alg, key })
}

impl KeySet {
    /// Reads a JWKS document, keeping the keys that can verify signatures.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, JwksError> {
        if json.len() > MAX_JWKS {
            return Err(JwksError::TooLarge);
        }
        let doc: Value = serde_json::from_slice(json).map_err(|_| JwksError::NotJwks)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotJwks)?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for k in list {
            match key_of(k) {
                Some(key) if keys.len() < MAX_KEYS => keys.push(key),
                _ => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped));
        }
        Ok(KeySet { keys })
    }

    /// A set of the given keys.
    pub fn of(keys: Vec<PublicKey>) -> KeySet {
        KeySet { keys }
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The key a token names: by `kid`, or, for a token without one, the only key of its
    /// algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&PublicKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut of_alg = self.keys.iter().filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_short_and_mismatched_keys_are_skipped() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"},
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([7u8; 5]), "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "ES256", "kid": "mismatch"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc", "kid": "enc"},
            {"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB", "kid": "rsa1024"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "good"},
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys().len(), 1);
        assert_eq!(set.keys()[0].alg, Algorithm::EdDSA);
        assert!(set.find(Some("good"), Algorithm::EdDSA).is_some());
        assert!(set.find(Some("h"), Algorithm::HS256).is_none());
        assert!(set.find(None, Algorithm::EdDSA).is_some());
        let only_bad = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            KeySet::from_jwks(only_bad.to_string().as_bytes()),
            Err(JwksError::NoUsableKey(1))
        ));
        assert!(matches!(KeySet::from_jwks(b"[]"), Err(JwksError::NotJwks)));
        assert!(matches!(
            KeySet::from_jwks(&vec![b' '; MAX_JWKS + 1]),
            Err(JwksError::TooLarge)
        ));
    }
}
