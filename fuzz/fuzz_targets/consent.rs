//! Parses arbitrary bytes as a FHIR R4 Consent (`PUT /fhir/Consent`'s body) and as the
//! portal's cookies: never panics; a Consent accepted names at most one choice per purpose
//! and a patient; a cookie value found is only what the server ever issues (base64url, at
//! most 64 characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_web::portal::session::{cookie, COOKIE};

fuzz_target!(|data: &[u8]| {
    if let Ok(draft) = radveil_consent::fhir::parse(data) {
        let mut seen = std::collections::HashSet::new();
        for c in &draft.choices {
            assert!(seen.insert(c.purpose), "two choices for one purpose");
        }
        assert!(!draft.patient.id.is_empty(), "a Consent with no patient");
    }
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, v);
        if let Some(found) = cookie(&headers, COOKIE) {
            assert!(found.len() <= 64);
            assert!(found
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
});

