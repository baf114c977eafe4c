//! Parses arbitrary bytes as a FHIR R4 Consent (`PUT /fhir/Consent`'s body), as a FHIR R4
//! CareTeam (`PUT /fhir/CareTeam`'s) and as the portal's cookies: never panics; a Consent
//! accepted names at most one choice per purpose and a patient; a CareTeam accepted names a
//! patient and at most 500 distinct members of at most 255 bytes; a cookie value found is only what the server ever issues (base64url, at
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
    if let Ok(team) = radveil_consent::careteam::parse(data) {
        assert!(!team.patient.id.is_empty(), "a CareTeam with no patient");
        assert!(team.members.len() <= radveil_consent::careteam::MAX_MEMBERS);
        let distinct: std::collections::HashSet<_> = team.members.iter().collect();
        assert_eq!(distinct.len(), team.members.len(), "a member twice");
        assert!(team
            .members
            .iter()
            .all(|m| !m.is_empty() && m.len() <= radveil_consent::careteam::MAX_MEMBER));
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

