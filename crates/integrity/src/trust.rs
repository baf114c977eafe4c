//! Trust in a signer: the signer's certificate must be a trust anchor or be issued by one,
//! be valid at the signature's date and time, and allow digital signatures.
//!
//! The path search is bounded as rustls-webpki bounds it: at most [`MAX_SIGNATURE_CHECKS`]
//! signature verifications and [`MAX_PATH_BUILD_CALLS`] steps per search, paths of at most
//! [`MAX_DEPTH`] intermediates, and no certificate twice in one path (by subject and key).
//! A bundle of duplicated, cross-signed intermediates therefore costs milliseconds, not an
//! exponential number of signature checks.

use der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::KeyUsage;

use crate::crypto::{MacAlgorithm, Public};

use crate::SignatureError;
/// The X.509 certificate type trust is decided on.
pub use x509_cert::Certificate;

/// The certificates a verifier trusts (root or intermediate CAs, or signer certificates).
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Certificate>,
    intermediates: Vec<Certificate>,
}

impl TrustStore {
    /// Adds every certificate of a PEM bundle (or one DER certificate).
    pub fn add(&mut self, bytes: &[u8]) -> Result<usize, SignatureError> {
        let before = self.anchors.len();
        if let Ok(c) = Certificate::from_der(bytes) {
            self.anchors.push(c);
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| SignatureError::Key("trust file: neither DER nor PEM".into()))?;
            let mut rest = text;
            while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
                let end_marker = "-----END CERTIFICATE-----";
                let end = rest[start..].find(end_marker).ok_or_else(|| {
                    SignatureError::Key("trust file: unterminated PEM certificate".into())
                })? + start
                    + end_marker.len();
                let cert = Certificate::from_pem(&rest[start..end])
                    .map_err(|e| SignatureError::Key(format!("trust file: {e}")))?;
                self.anchors.push(cert);
                rest = &rest[end..];
            }
        }
        if self.anchors.len() == before {
            return Err(SignatureError::Key(
                "trust file holds no certificate".into(),
            ));
        }
        Ok(self.anchors.len() - before)
    }

    /// Every certificate given, anchors and intermediates (a timestamp token that leaves out
    /// its TSA's certificate may be verified with one of these).
    pub fn certificates(&self) -> Vec<Certificate> {
        self.anchors
            .iter()
            .chain(self.intermediates.iter())
            .cloned()
            .collect()
    }

    /// Whether no anchor was configured.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Checks `signer` against the anchors at `at` (Unix seconds: the signature's time).
    pub fn check(&self, signer: &Certificate, at: i64) -> Result<(), String> {
        valid_at(signer, at)?;
        if let Ok(Some((_, usage))) = signer.tbs_certificate.get::<KeyUsage>() {
            if !usage.digital_signature() && !usage.non_repudiation() {
                return Err("the certificate's key usage does not allow digital signatures".into());
            }
        }
        let mut budget = Budget::default();
        self.chain(signer, at, &mut Vec::new(), &mut budget)
            .map_err(|e| match e {
                PathError::Failed(why) | PathError::Exhausted(why) => why,
            })
    }

    /// Adds intermediate certificates (PEM bundle or DER), used to build a chain from a
    /// signer to an anchor but not trusted themselves.
    pub fn add_intermediates(&mut self, bytes: &[u8]) -> Result<usize, SignatureError> {
        let mut tmp = TrustStore::default();
        let n = tmp.add(bytes)?;
        self.intermediates.extend(tmp.anchors);
        Ok(n)
    }

    /// Finds a path from `cert` to an anchor, through intermediates that are CAs, each valid
    /// at `at` and each verifying the signature of the one below. `path` holds the
    /// intermediates above the signer so far; `budget` bounds the whole search.
    fn chain<'s>(
        &'s self,
        cert: &Certificate,
        at: i64,
        path: &mut Vec<&'s Certificate>,
        budget: &mut Budget,
    ) -> Result<(), PathError> {
        budget.step()?;
        if self.anchors.iter().any(|a| a == cert) {
            return Ok(());
        }
        let issuer = &cert.tbs_certificate.issuer;
        for anchor in self
            .anchors
            .iter()
            .filter(|a| &a.tbs_certificate.subject == issuer)
        {
            budget.signature()?;
            if issued_by(cert, anchor) {
                return valid_at(anchor, at).map_err(|e| PathError::Failed(format!("issuer: {e}")));
            }
        }
        let mut last = None;
        for ca in self
            .intermediates
            .iter()
            .filter(|c| &c.tbs_certificate.subject == issuer)
        {
            // A certificate already in the path (same subject and key) would loop.
            if !is_ca(ca) || path.iter().any(|p| same_subject_and_key(p, ca)) {
                continue;
            }
            budget.signature()?;
            if !issued_by(cert, ca) {
                continue;
            }
            if let Err(e) = valid_at(ca, at) {
                last = Some(e);
                continue;
            }
            if path.len() >= MAX_DEPTH {
                last = Some("certificate chain too long".into());
                continue;
            }
            path.push(ca);
            let found = self.chain(ca, at, path, budget);
            path.pop();
            match found {
                Ok(()) => return Ok(()),
                Err(e @ PathError::Exhausted(_)) => return Err(e),
                Err(PathError::Failed(e)) => last = Some(e),
            }
        }
        Err(PathError::Failed(last.unwrap_or_else(|| {
            "not issued by a trusted certificate".into()
        })))
    }
}

/// The most signature verifications one path search may make (as rustls-webpki).
pub const MAX_SIGNATURE_CHECKS: usize = 100;
/// The most path-building steps one search may take (as rustls-webpki).
pub const MAX_PATH_BUILD_CALLS: usize = 200;
/// The most intermediates in a path between a signer and an anchor.
pub const MAX_DEPTH: usize = 8;

/// What is left of one path search's work.
#[derive(Debug, Default)]
struct Budget {
    signatures: usize,
    steps: usize,
}

impl Budget {
    fn signature(&mut self) -> Result<(), PathError> {
        self.signatures += 1;
        if self.signatures > MAX_SIGNATURE_CHECKS {
            return Err(PathError::Exhausted(format!(
                "no certificate path found within {MAX_SIGNATURE_CHECKS} signature checks (too many candidate issuers)"
            )));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), PathError> {
        self.steps += 1;
        if self.steps > MAX_PATH_BUILD_CALLS {
            return Err(PathError::Exhausted(format!(
                "no certificate path found within {MAX_PATH_BUILD_CALLS} steps (too many candidate paths)"
            )));
        }
        Ok(())
    }
}

/// Why a path search failed: this branch fails (try the next candidate), or the search's
/// budget is spent (stop).
#[derive(Debug)]
enum PathError {
    Failed(String),
    Exhausted(String),
}

/// Whether two certificates have the same subject and public key.
fn same_subject_and_key(a: &Certificate, b: &Certificate) -> bool {
    a.tbs_certificate.subject == b.tbs_certificate.subject
        && a.tbs_certificate.subject_public_key_info == b.tbs_certificate.subject_public_key_info
}

/// A certificate for `subject` issued by `issuer` (common names), ECDSA P-256 signed with
/// the key derived from `seed` and holding that same key, valid from 2020-09-13 to
/// 2033-05-18, a CA when `ca`. For tests and fuzzing of the path search only: every such
/// certificate verifies every other one made with the same seed. `None` when a name is not
/// a valid common name.
#[doc(hidden)]
pub fn synthetic_certificate(
    subject: &str,
    issuer: &str,
    serial: u32,
    ca: bool,
    seed: u8,
) -> Option<Certificate> {
    use der::asn1::{BitString, OctetString, UtcTime};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::EncodePublicKey;
    use std::str::FromStr;
    use std::time::Duration;
    use x509_cert::ext::pkix::BasicConstraints;
    use x509_cert::ext::Extension;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use x509_cert::time::{Time, Validity};
    use x509_cert::TbsCertificate;

    let build = || -> Option<Certificate> {
        let key = SigningKey::from_slice(&[seed.max(1); 32]).ok()?;
        let time = |secs: u64| {
            UtcTime::from_unix_duration(Duration::from_secs(secs))
                .ok()
                .map(Time::UtcTime)
        };
        let spki = key.verifying_key().to_public_key_der().ok()?;
        let algorithm = AlgorithmIdentifierOwned {
            oid: der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
            parameters: None,
        };
        let extensions = if ca {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: None,
            };
            Some(vec![Extension {
                extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19"),
                critical: true,
                extn_value: OctetString::new(bc.to_der().ok()?).ok()?,
            }])
        } else {
            None
        };
        let name = |cn: &str| Name::from_str(&format!("CN={cn}")).ok();
        let tbs = TbsCertificate {
            version: x509_cert::Version::V3,
            serial_number: SerialNumber::new(&serial.to_be_bytes()).ok()?,
            signature: algorithm.clone(),
            issuer: name(issuer)?,
            validity: Validity {
                not_before: time(1_600_000_000)?,
                not_after: time(2_000_000_000)?,
            },
            subject: name(subject)?,
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki.as_bytes()).ok()?,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions,
        };
        let signature: Signature = key.sign(&tbs.to_der().ok()?);
        Some(Certificate {
            tbs_certificate: tbs,
            signature_algorithm: algorithm,
            signature: BitString::from_bytes(signature.to_der().as_bytes()).ok()?,
        })
    };
    build()
}

/// Builds a store from parsed certificates (for tests and fuzzing of the path search).
#[doc(hidden)]
pub fn synthetic_store(anchors: Vec<Certificate>, intermediates: Vec<Certificate>) -> TrustStore {
    TrustStore {
        anchors,
        intermediates,
    }
}

fn is_ca(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    matches!(cert.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

/// Whether `cert` was within its validity period at `at` (Unix seconds).
pub(crate) fn valid_at(cert: &Certificate, at: i64) -> Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let from = v.not_before.to_unix_duration().as_secs() as i64;
    let to = v.not_after.to_unix_duration().as_secs() as i64;
    if at < from {
        Err("the certificate was not yet valid when the signature was made".into())
    } else if at > to {
        Err("the certificate had expired when the signature was made".into())
    } else {
        Ok(())
    }
}

/// Whether `anchor`'s key verifies `cert`'s signature.
fn issued_by(cert: &Certificate, anchor: &Certificate) -> bool {
    let Ok(public) = Public::from_certificate(anchor) else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let mac = match cert.signature_algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => MacAlgorithm::Sha1,
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => MacAlgorithm::Sha256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => MacAlgorithm::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => MacAlgorithm::Sha512,
        _ => return false,
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    public.verify_digest(mac, &mac.digest(&tbs), sig)
}

/// Parses a DICOM DT with at least a full date (`YYYYMMDD[HH[MM[SS[.F]]]][&ZZXX]`, PS3.5
/// Table 6.2-1) into Unix seconds; `None` unless it names a real date and time. Missing
/// time fields are zero; the fraction is ignored; no offset is UTC.
pub fn parse_dt(dt: &str) -> Option<i64> {
    let dt = dt.trim();
    // The offset, if any, follows the last sign after the date.
    let (body, offset) = match dt.rfind(['+', '-']).filter(|&i| i >= 8) {
        Some(i) => {
            let zone = dt.get(i + 1..)?;
            let (hh, mm) = (number(zone.get(..2)?)?, number(zone.get(2..)?)?);
            if zone.len() != 4 || hh > 14 || mm > 59 {
                return None;
            }
            let zone = i64::from(hh * 3600 + mm * 60);
            (
                &dt[..i],
                if dt.as_bytes()[i] == b'-' {
                    -zone
                } else {
                    zone
                },
            )
        }
        None => (dt, 0),
    };
    let body = body
        .split_once('.')
        .map_or(body, |(whole, _fraction)| whole);
    if !body.is_ascii() || !(8..=14).contains(&body.len()) || body.len() % 2 == 1 {
        return None;
    }
    let field = |at: usize| body.get(at..at + 2).map_or(Some(0), number);
    let time = radveil_standard::civil::DateTime {
        year: i64::from(number(body.get(..4)?)?),
        month: field(4)?,
        day: field(6)?,
        hour: field(8)?,
        minute: field(10)?,
        second: field(12)?,
    };
    time.unix_seconds()?.checked_sub(offset)
}

/// A number written in ASCII digits only (no sign, no space).
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const AT: i64 = 1_795_437_486; // 2026-11-23

    fn key() -> u8 {
        7
    }

    fn cert(subject: &str, issuer: &str, serial: u32, ca: bool, key: &u8) -> Certificate {
        synthetic_certificate(subject, issuer, serial, ca, *key).unwrap()
    }

    #[test]
    fn chains_through_intermediates_to_an_anchor() {
        let k = key();
        let mut store = TrustStore::default();
        store.anchors.push(cert("Root", "Root", 1, true, &k));
        store.intermediates.push(cert("Mid", "Root", 2, true, &k));
        store.intermediates.push(cert("Low", "Mid", 3, true, &k));
        assert_eq!(store.check(&cert("Leaf", "Low", 4, false, &k), AT), Ok(()));
        // Not a CA: no chain through it.
        store
            .intermediates
            .push(cert("NotCa", "Root", 5, false, &k));
        assert!(store
            .check(&cert("Leaf", "NotCa", 6, false, &k), AT)
            .is_err());
        // Nothing above this issuer.
        assert!(store
            .check(&cert("Leaf", "Nobody", 7, false, &k), AT)
            .is_err());
    }

    #[test]
    fn paths_hold_at_most_max_depth_intermediates() {
        let k = key();
        let store = |n: usize| {
            let mut store = TrustStore::default();
            store.anchors.push(cert("Root", "Root", 1, true, &k));
            for i in 0..n {
                let issuer = if i == 0 {
                    "Root".to_string()
                } else {
                    format!("I{}", i - 1)
                };
                store
                    .intermediates
                    .push(cert(&format!("I{i}"), &issuer, 10 + i as u32, true, &k));
            }
            (store, cert("Leaf", &format!("I{}", n - 1), 99, false, &k))
        };
        let (ok, leaf) = store(MAX_DEPTH);
        assert_eq!(ok.check(&leaf, AT), Ok(()));
        let (long, leaf) = store(MAX_DEPTH + 1);
        assert_eq!(
            long.check(&leaf, AT),
            Err("certificate chain too long".into())
        );
    }

    #[test]
    fn a_loop_of_cross_signed_intermediates_ends() {
        let k = key();
        let mut store = TrustStore::default();
        store.anchors.push(cert("Root", "Root", 1, true, &k));
        store.intermediates.push(cert("A", "B", 2, true, &k));
        store.intermediates.push(cert("B", "A", 3, true, &k));
        let err = store
            .check(&cert("Leaf", "A", 4, false, &k), AT)
            .unwrap_err();
        assert!(err.contains("not issued"), "{err}");
    }

    #[test]
    fn a_hostile_bundle_of_duplicated_cross_signed_intermediates_finishes_fast() {
        // Eight levels of six duplicates each, every duplicate issued by every one of the
        // level above, and no anchor at the top: 6^8 paths to try without a budget.
        let k = key();
        let mut store = TrustStore::default();
        store.anchors.push(cert("Root", "Root", 1, true, &k));
        let (levels, copies) = (8u32, 6u32);
        for level in 0..levels {
            let issuer = if level == 0 {
                "Elsewhere".to_string()
            } else {
                format!("L{}", level - 1)
            };
            for copy in 0..copies {
                let serial = 100 + level * copies + copy;
                store
                    .intermediates
                    .push(cert(&format!("L{level}"), &issuer, serial, true, &k));
            }
        }
        let leaf = cert("Leaf", &format!("L{}", levels - 1), 9999, false, &k);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let outcome = store.check(&leaf, AT);
            let _ = tx.send((outcome, start.elapsed()));
        });
        let (outcome, took) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the path search did not finish: it is unbounded");
        let err = outcome.unwrap_err();
        assert!(err.contains("within"), "{err}");
        // 100 P-256 verifications take milliseconds optimised; allow for debug builds.
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn parses_signature_datetimes() {
        assert_eq!(parse_dt("19700101000000"), Some(0));
        assert_eq!(parse_dt("20261123123806.660693+0000"), Some(1_795_437_486));
        assert_eq!(parse_dt("20261123133806+0100"), Some(1_795_437_486));
        assert_eq!(parse_dt("20261123073806-0500"), Some(1_795_437_486));
        assert_eq!(parse_dt(" 20261123123806 "), Some(1_795_437_486));
        assert_eq!(parse_dt("nonsense"), None);
    }

    /// Time fields are read where they are, not from the offset: a DT without its time is
    /// midnight in its zone.
    #[test]
    fn datetimes_with_fewer_time_fields() {
        let midnight = 1_795_437_486 - (12 * 3600 + 38 * 60 + 6);
        assert_eq!(parse_dt("20261123"), Some(midnight));
        assert_eq!(parse_dt("20261123+0100"), Some(midnight - 3600));
        assert_eq!(
            parse_dt("2026112312-0030"),
            Some(midnight + 12 * 3600 + 1800)
        );
        assert_eq!(
            parse_dt("202611231238"),
            Some(midnight + 12 * 3600 + 38 * 60)
        );
    }

    /// A DT that names no real time is not a time: the caller falls back to now.
    #[test]
    fn invalid_datetimes_are_refused() {
        for dt in [
            "20261301000000",
            "20260230000000",
            "20261100000000",
            "20261123240000",
            "20261123006000",
            "20261123000061",
            "-0010101000000",
            "+0260101000000",
            "2026112",
            "202611231",
            "20261123123806123",
            "20261123123806+01",
            "20261123123806+1500",
            "20261123123806+01\u{e9}",
            "2026\u{e9}1123",
            "202611231\u{e9}1",
            "",
        ] {
            assert_eq!(parse_dt(dt), None, "{dt}");
        }
    }
}
