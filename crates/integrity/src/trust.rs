//! Trust in a signer: the signer's certificate must be a trust anchor or be issued by one,
//! be valid at the signature's date and time, and allow digital signatures.

use der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::Certificate;

use crate::crypto::{MacAlgorithm, Public};
use crate::SignatureError;

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
        self.chain(signer, at, 0)
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
    /// at `at` and each verifying the signature of the one below.
    fn chain(&self, cert: &Certificate, at: i64, depth: usize) -> Result<(), String> {
        const MAX_DEPTH: usize = 8;
        let der = cert.to_der().map_err(|e| e.to_string())?;
        if self
            .anchors
            .iter()
            .any(|a| a.to_der().ok().as_deref() == Some(&der[..]))
        {
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Err("certificate chain too long".into());
        }
        let issuer = &cert.tbs_certificate.issuer;
        for anchor in self
            .anchors
            .iter()
            .filter(|a| &a.tbs_certificate.subject == issuer)
        {
            if issued_by(cert, anchor) {
                return valid_at(anchor, at).map_err(|e| format!("issuer: {e}"));
            }
        }
        let mut last = None;
        for ca in self
            .intermediates
            .iter()
            .filter(|c| &c.tbs_certificate.subject == issuer)
        {
            if !is_ca(ca) || !issued_by(cert, ca) {
                continue;
            }
            match valid_at(ca, at).and_then(|()| self.chain(ca, at, depth + 1)) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "not issued by a trusted certificate".into()))
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

/// Parses a DICOM DT (`YYYYMMDDHHMMSS[.F][+/-ZZZZ]`) into Unix seconds.
pub fn parse_dt(dt: &str) -> Option<i64> {
    let dt = dt.trim();
    let digits = |a: usize, b: usize| -> Option<i64> { dt.get(a..b)?.parse().ok() };
    let (y, mo, d) = (digits(0, 4)?, digits(4, 6)?, digits(6, 8)?);
    let (h, mi, s) = (
        digits(8, 10).unwrap_or(0),
        digits(10, 12).unwrap_or(0),
        digits(12, 14).unwrap_or(0),
    );
    let offset = dt
        .rfind(['+', '-'])
        .filter(|&i| i >= 8)
        .and_then(|i| {
            let sign = if dt.as_bytes()[i] == b'-' { -1 } else { 1 };
            let hh: i64 = dt.get(i + 1..i + 3)?.parse().ok()?;
            let mm: i64 = dt.get(i + 3..i + 5)?.parse().ok()?;
            Some(sign * (hh * 3600 + mm * 60))
        })
        .unwrap_or(0);
    // Days since 1970-01-01 (H. Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signature_datetimes() {
        assert_eq!(parse_dt("19700101000000"), Some(0));
        assert_eq!(parse_dt("20261123123806.660693+0000"), Some(1_795_437_486));
        assert_eq!(parse_dt("20261123133806+0100"), Some(1_795_437_486));
        assert_eq!(parse_dt("nonsense"), None);
    }
}
