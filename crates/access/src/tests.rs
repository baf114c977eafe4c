//! One test per verification rule, with tokens made by the dev issuer (and by hand where
//! the dev issuer would never make them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::dev::{DevIssuer, DEV_ISSUER};
use crate::*;

/// Serves fixed documents by URL and counts the fetches.
#[derive(Default)]
struct FakeFetch {
    docs: Mutex<HashMap<String, Vec<u8>>>,
    count: AtomicUsize,
}

impl FakeFetch {
    fn put(&self, url: &str, doc: &Value) {
        self.docs
            .lock()
            .unwrap()
            .insert(url.into(), doc.to_string().into_bytes());
    }
}

impl Fetch for FakeFetch {
    fn get(&self, url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        let d = self.docs.lock().unwrap().get(url).cloned();
        match d {
            Some(d) if d.len() > max => Err(FetchError::TooLarge(max)),
            Some(d) => Ok(d),
            None => Err(FetchError::Http("404".into())),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn issuer(n: u8) -> DevIssuer {
    DevIssuer::from_seed(&[n; 32]).unwrap()
}

fn verifier(dev: &DevIssuer) -> Verifier {
    Verifier::new(
        vec![dev.config("radveil")],
        Arc::new(FakeFetch::default()),
        Settings::default(),
    )
    .unwrap()
}

fn claims() -> Value {
    let t = now();
    json!({
        "iss": DEV_ISSUER, "sub": "user-1", "aud": "radveil",
        "iat": t, "nbf": t, "exp": t + 600,
        "scope": "openid user/ImagingStudy.rs", "roles": ["clinician"],
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn a_good_token_gives_its_principal() {
    let dev = issuer(1);
    let token = dev.sign(&claims()).unwrap();
    let p = verifier(&dev).verify(&token).unwrap();
    assert_eq!(p.subject, "user-1");
    assert_eq!(p.roles, vec![Role::Clinician]);
    assert_eq!(p.scopes.resource.len(), 1);
    assert!(p.patient.is_none());
    assert_eq!(
        p.decide(Action::Read, None).unwrap().compartment,
        Compartment::All
    );
}

#[test]
fn expired() {
    let dev = issuer(1);
    let t = dev
        .sign(&with(claims(), "exp", json!(now() - 3600)))
        .unwrap();
    assert_eq!(verifier(&dev).verify(&t), Err(Refusal::Expired));
    // Within the leeway it is still good.
    let t = dev.sign(&with(claims(), "exp", json!(now() - 5))).unwrap();
    assert!(verifier(&dev).verify(&t).is_ok());
}

#[test]
fn not_yet_valid() {
    let dev = issuer(1);
    let t = dev
        .sign(&with(claims(), "nbf", json!(now() + 3600)))
        .unwrap();
    assert_eq!(verifier(&dev).verify(&t), Err(Refusal::NotYetValid));
}

#[test]
fn wrong_audience() {
    let dev = issuer(1);
    let v = verifier(&dev);
    let t = dev
        .sign(&with(claims(), "aud", json!("another-service")))
        .unwrap();
    assert_eq!(v.verify(&t), Err(Refusal::WrongAudience));
    let t = dev
        .sign(&with(claims(), "aud", json!(["x", "radveil"])))
        .unwrap();
    assert!(v.verify(&t).is_ok());
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        v.verify(&dev.sign(&c).unwrap()),
        Err(Refusal::WrongAudience)
    );
}

#[test]
fn wrong_issuer() {
    let dev = issuer(1);
    let t = dev
        .sign(&with(claims(), "iss", json!("https://evil.example")))
        .unwrap();
    assert_eq!(verifier(&dev).verify(&t), Err(Refusal::WrongIssuer));
    // The trusted issuer's name with another key: that key is unknown.
    let other = issuer(2);
    let t = other.sign(&claims()).unwrap();
    assert_eq!(verifier(&dev).verify(&t), Err(Refusal::UnknownKey));
}

#[test]
fn alg_none_is_refused() {
    let dev = issuer(1);
    let v = verifier(&dev);
    for alg in ["none", "None", "NONE"] {
        let h = b64(&json!({"alg": alg, "typ": "JWT"}));
        let p = b64(&claims());
        assert_eq!(
            v.verify(&format!("{h}.{p}.")),
            Err(Refusal::Unsigned),
            "{alg}"
        );
        assert_eq!(
            v.verify(&format!("{h}.{p}.AAAA")),
            Err(Refusal::Unsigned),
            "{alg}"
        );
    }
    // EdDSA named but no signature.
    let h = b64(&json!({"alg": "EdDSA", "kid": dev.kid()}));
    let p = b64(&claims());
    assert_eq!(v.verify(&format!("{h}.{p}.")), Err(Refusal::Unsigned));
}

#[test]
fn hmac_with_the_public_key_is_refused() {
    let dev = issuer(1);
    // The classic confusion: sign with HS256 using the public key as the secret.
    let x = URL_SAFE_NO_PAD
        .decode(dev.jwks()["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(dev.kid().into());
    let t = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&x).unwrap(),
    )
    .unwrap();
    assert_eq!(verifier(&dev).verify(&t), Err(Refusal::Algorithm));
}

#[test]
fn tampered_payload() {
    let dev = issuer(1);
    let t = dev.sign(&claims()).unwrap();
    let (h, rest) = t.split_once('.').unwrap();
    let (_, s) = rest.split_once('.').unwrap();
    let forged = b64(&with(claims(), "scope", json!("user/ImagingStudy.cruds")));
    assert_eq!(
        verifier(&dev).verify(&format!("{h}.{forged}.{s}")),
        Err(Refusal::BadSignature)
    );
    // Even an expired forgery is refused for its signature first.
    let forged = b64(&with(claims(), "exp", json!(1)));
    assert_eq!(
        verifier(&dev).verify(&format!("{h}.{forged}.{s}")),
        Err(Refusal::BadSignature)
    );
}

#[test]
fn tampered_signature() {
    let dev = issuer(1);
    let t = dev.sign(&claims()).unwrap();
    let (m, s) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    sig[0] ^= 1;
    let bad = format!("{m}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(verifier(&dev).verify(&bad), Err(Refusal::BadSignature));
    // A signature of the wrong length.
    let short = format!("{m}.{}", URL_SAFE_NO_PAD.encode(&sig[..10]));
    assert_eq!(verifier(&dev).verify(&short), Err(Refusal::BadSignature));
}

#[test]
fn unknown_kid_then_refreshed() {
    let (a, b) = (issuer(1), issuer(2));
    let url = "https://idp.example/jwks";
    let fetch = Arc::new(FakeFetch::default());
    fetch.put(url, &a.jwks());
    let config = IssuerConfig {
        issuer: DEV_ISSUER.into(),
        audience: vec!["radveil".into()],
        keys: KeySource::Url(url.into()),
    };
    let settings = Settings {
        min_refresh: Duration::ZERO,
        ..Settings::default()
    };
    let v = Verifier::new(vec![config.clone()], fetch.clone(), settings).unwrap();
    assert!(v.is_remote());
    assert_eq!(fetch.count.load(Ordering::SeqCst), 1);
    assert!(v.verify(&a.sign(&claims()).unwrap()).is_ok());
    assert_eq!(
        fetch.count.load(Ordering::SeqCst),
        1,
        "a known key is not fetched"
    );
    // The issuer rotates to key b: the first token with b's kid fetches the set again.
    fetch.put(url, &b.jwks());
    assert!(v.verify(&b.sign(&claims()).unwrap()).is_ok());
    assert_eq!(fetch.count.load(Ordering::SeqCst), 2);

    // Rate-limited: within min_refresh an unknown kid does not fetch again.
    let fetch = Arc::new(FakeFetch::default());
    fetch.put(url, &a.jwks());
    let v = Verifier::new(vec![config], fetch.clone(), Settings::default()).unwrap();
    fetch.put(url, &b.jwks());
    for _ in 0..5 {
        assert_eq!(
            v.verify(&b.sign(&claims()).unwrap()),
            Err(Refusal::UnknownKey)
        );
    }
    assert_eq!(fetch.count.load(Ordering::SeqCst), 1);
}

#[test]
fn oversize_token() {
    let dev = issuer(1);
    let v = verifier(&dev);
    let t = dev
        .sign(&with(claims(), "padding", json!("x".repeat(MAX_TOKEN))))
        .unwrap();
    assert!(t.len() > MAX_TOKEN);
    assert_eq!(v.verify(&t), Err(Refusal::TooLarge));
}

#[test]
fn malformed_and_missing() {
    let dev = issuer(1);
    let v = verifier(&dev);
    assert_eq!(v.verify(""), Err(Refusal::NoToken));
    for bad in ["abc", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
        let r = v.verify(bad);
        assert!(
            matches!(r, Err(Refusal::Malformed | Refusal::WrongIssuer)),
            "{bad}: {r:?}"
        );
    }
    // A header with `crit` is refused.
    let h = b64(&json!({"alg": "EdDSA", "kid": dev.kid(), "crit": ["exp"]}));
    assert_eq!(
        v.verify(&format!("{h}.{}.AAAA", b64(&claims()))),
        Err(Refusal::Malformed)
    );
    // No subject.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(v.verify(&dev.sign(&c).unwrap()), Err(Refusal::Claim("sub")));
}

#[test]
fn patient_claim_shapes() {
    let dev = issuer(1);
    let v = verifier(&dev);
    let c = with(claims(), "scope", json!("patient/ImagingStudy.rs"));
    let p = v
        .verify(
            &dev.sign(&with(c.clone(), "patient", json!("PID-1")))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(p.patient, PatientRef::new("PID-1", ""));
    let p = v
        .verify(
            &dev.sign(&with(
                c.clone(),
                "patient",
                json!({"id": "PID-1", "issuer": "HOSP"}),
            ))
            .unwrap(),
        )
        .unwrap();
    assert_eq!(p.patient, PatientRef::new("PID-1", "HOSP"));
    for bad in [
        json!(12),
        json!(""),
        json!({"issuer": "HOSP"}),
        json!("A\\B"),
    ] {
        assert_eq!(
            v.verify(&dev.sign(&with(c.clone(), "patient", bad)).unwrap()),
            Err(Refusal::Claim("patient"))
        );
    }
}

#[test]
fn roles_from_a_nested_claim() {
    let dev = issuer(1);
    let v = Verifier::new(
        vec![dev.config("radveil")],
        Arc::new(FakeFetch::default()),
        Settings {
            roles_claim: "realm_access.roles".into(),
            ..Settings::default()
        },
    )
    .unwrap();
    let c = with(
        claims(),
        "realm_access",
        json!({"roles": ["researcher", "other"]}),
    );
    let p = v.verify(&dev.sign(&c).unwrap()).unwrap();
    assert_eq!(p.roles, vec![Role::Researcher]);
    assert_eq!(p.decide(Action::Read, None), Err(Denied::Role));
}

#[test]
fn discovery() {
    let fetch = FakeFetch::default();
    let iss = "https://idp.example/realms/x";
    fetch.put(
        &format!("{iss}/.well-known/openid-configuration"),
        &json!({"issuer": iss, "jwks_uri": "https://idp.example/certs"}),
    );
    assert_eq!(discover(iss, &fetch).unwrap(), "https://idp.example/certs");
    // The document must name the same issuer.
    fetch.put(
        "https://other.example/.well-known/openid-configuration",
        &json!({"issuer": iss, "jwks_uri": "https://idp.example/certs"}),
    );
    assert!(discover("https://other.example", &fetch).is_err());
    // Plain HTTP only on loopback.
    assert!(matches!(
        discover("http://idp.example", &fetch),
        Err(SetupError::Discovery(_))
    ));
    fetch.put(
        "http://127.0.0.1:9/.well-known/openid-configuration",
        &json!({"issuer": "http://127.0.0.1:9", "jwks_uri": "http://127.0.0.1:9/jwks"}),
    );
    assert!(discover("http://127.0.0.1:9", &fetch).is_ok());
}

#[test]
fn dev_tokens_verify_and_carry_the_request() {
    let dev = issuer(3);
    let req = dev::TokenRequest {
        subject: "alice".into(),
        audience: "radveil".into(),
        scopes: vec!["patient/ImagingStudy.rs".into()],
        roles: vec![],
        patient: PatientRef::new("PID-9", "HOSP"),
        lifetime: 600,
    };
    let p = verifier(&dev)
        .verify(&dev.token(&req, now()).unwrap())
        .unwrap();
    assert_eq!(p.patient, PatientRef::new("PID-9", "HOSP"));
    assert!(matches!(
        p.decide(Action::Read, None).unwrap().compartment,
        Compartment::Patient(_)
    ));
    let long = dev::TokenRequest {
        lifetime: dev::MAX_LIFETIME + 1,
        ..req
    };
    assert!(dev.token(&long, now()).is_err());
}

/// The verified-token cache never outlives the token: past its `exp` a cached token is
/// refused as expired, exactly as one never seen.
#[test]
fn a_cached_token_past_its_exp_is_refused() {
    let dev = issuer(1);
    let v = Verifier::new(
        vec![dev.config("radveil")],
        Arc::new(FakeFetch::default()),
        Settings {
            leeway: 0,
            ..Settings::default()
        },
    )
    .unwrap();
    let exp = now() + 1;
    let t = dev.sign(&with(claims(), "exp", json!(exp))).unwrap();
    assert!(v.verify(&t).is_ok());
    assert!(v.verify(&t).is_ok(), "cached");
    while now() <= exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(v.verify(&t), Err(Refusal::Expired));
}

/// A cached token whose key the issuer has rotated away is verified again against the new
/// key set, and refused: when another token makes the set be fetched again, and when the
/// set is fetched again for its age.
#[test]
fn a_cached_token_is_refused_once_its_key_is_rotated_away() {
    let (a, b) = (issuer(1), issuer(2));
    let url = "https://idp.example/jwks";
    let config = IssuerConfig {
        issuer: DEV_ISSUER.into(),
        audience: vec!["radveil".into()],
        keys: KeySource::Url(url.into()),
    };
    for by_age in [false, true] {
        let fetch = Arc::new(FakeFetch::default());
        fetch.put(url, &a.jwks());
        let settings = Settings {
            min_refresh: Duration::ZERO,
            max_age: if by_age {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3600)
            },
            ..Settings::default()
        };
        let v = Verifier::new(vec![config.clone()], fetch.clone(), settings).unwrap();
        let old = a.sign(&claims()).unwrap();
        assert!(v.verify(&old).is_ok());
        assert!(v.verify(&old).is_ok(), "cached");
        fetch.put(url, &b.jwks());
        if by_age {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            // A token of the new key: the set is fetched again.
            assert!(v.verify(&b.sign(&claims()).unwrap()).is_ok());
        }
        assert_eq!(v.verify(&old), Err(Refusal::UnknownKey), "by age: {by_age}");
    }
}

/// A token is cached by all of its text: one that shares all but its last bytes with a
/// cached token (another signature, other claims under the same signature, a byte added)
/// is verified in full and refused.
#[test]
fn a_tampered_token_sharing_a_cached_tokens_prefix_is_not_a_cache_hit() {
    let dev = issuer(1);
    let v = verifier(&dev);
    let good = dev.sign(&claims()).unwrap();
    assert!(v.verify(&good).is_ok());
    assert!(v.verify(&good).is_ok(), "cached");
    let (m, sig) = good.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let flipped = format!("{m}.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(v.verify(&flipped), Err(Refusal::BadSignature));
    let (h, _) = m.split_once('.').unwrap();
    let other = b64(&with(claims(), "roles", json!(["admin"])));
    assert_eq!(
        v.verify(&format!("{h}.{other}.{sig}")),
        Err(Refusal::BadSignature)
    );
    assert!(v.verify(&format!("{good}A")).is_err());
    assert!(v.verify(&good).is_ok());
}
