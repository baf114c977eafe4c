//! Hashes, keys and certificates for DICOM digital signatures: the MAC algorithms of
//! PS3.3 C.12.1.1.3, RSA PKCS#1 v1.5 signing and verification, and ECDSA verification.

use der::{Decode, DecodePem, Encode};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Digest;
use x509_cert::Certificate;

use crate::SignatureError;

/// A MAC algorithm of PS3.3 C.12.1.1.3.1 (the MAC Algorithm (0400,0015) defined terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    /// RIPEMD-160.
    Ripemd160,
    /// MD5 (verification only: it is broken for signatures).
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl MacAlgorithm {
    /// The defined term written in MAC Algorithm (0400,0015).
    pub fn term(self) -> &'static str {
        match self {
            MacAlgorithm::Ripemd160 => "RIPEMD160",
            MacAlgorithm::Md5 => "MD5",
            MacAlgorithm::Sha1 => "SHA1",
            MacAlgorithm::Sha256 => "SHA256",
            MacAlgorithm::Sha384 => "SHA384",
            MacAlgorithm::Sha512 => "SHA512",
        }
    }

    /// Parses a defined term (or a lowercase command-line name such as `sha256`).
    pub fn from_term(term: &str) -> Option<MacAlgorithm> {
        Some(
            match term.trim().to_ascii_uppercase().replace('-', "").as_str() {
                "RIPEMD160" => MacAlgorithm::Ripemd160,
                "MD5" => MacAlgorithm::Md5,
                "SHA1" => MacAlgorithm::Sha1,
                "SHA256" => MacAlgorithm::Sha256,
                "SHA384" => MacAlgorithm::Sha384,
                "SHA512" => MacAlgorithm::Sha512,
                _ => return None,
            },
        )
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            MacAlgorithm::Ripemd160 => ripemd::Ripemd160::digest(data).to_vec(),
            MacAlgorithm::Md5 => md5::Md5::digest(data).to_vec(),
            MacAlgorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
            MacAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            MacAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            MacAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn pkcs1(self) -> Pkcs1v15Sign {
        match self {
            MacAlgorithm::Ripemd160 => Pkcs1v15Sign::new::<ripemd::Ripemd160>(),
            MacAlgorithm::Md5 => Pkcs1v15Sign::new::<md5::Md5>(),
            MacAlgorithm::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            MacAlgorithm::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            MacAlgorithm::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            MacAlgorithm::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
}

/// A signer: an RSA private key with its X.509 certificate.
pub struct SignerIdentity {
    key: RsaPrivateKey,
    /// The same key for `ring`, whose RSA is several times faster, for the SHA-2 MACs.
    fast: Option<ring::signature::RsaKeyPair>,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for SignerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignerIdentity(<RSA key>)")
    }
}

fn der_or_pem_cert(bytes: &[u8]) -> Result<Certificate, SignatureError> {
    Certificate::from_der(bytes)
        .or_else(|_| Certificate::from_pem(bytes))
        .map_err(|e| SignatureError::Key(format!("certificate: {e}")))
}

impl SignerIdentity {
    /// Loads a PKCS#8 or PKCS#1 RSA private key (PEM or DER) and a certificate (PEM or DER),
    /// and checks that they belong together.
    pub fn load(key: &[u8], certificate: &[u8]) -> Result<SignerIdentity, SignatureError> {
        let key = parse_rsa_private(key)?;
        let cert = der_or_pem_cert(certificate)?;
        let public = Public::from_certificate(&cert)?;
        match public {
            Public::Rsa(p) if p == key.to_public_key() => {}
            _ => {
                return Err(SignatureError::Key(
                    "the certificate is not for this private key".into(),
                ))
            }
        }
        let certificate = cert
            .to_der()
            .map_err(|e| SignatureError::Key(format!("certificate: {e}")))?;
        let fast = {
            use rsa::pkcs8::EncodePrivateKey;
            key.to_pkcs8_der()
                .ok()
                .and_then(|der| ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).ok())
        };
        Ok(SignerIdentity {
            key,
            fast,
            certificate,
        })
    }

    /// The signer's certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// RSA PKCS#1 v1.5 signature of the digest of `stream` made with `mac`.
    pub fn sign_stream(&self, mac: MacAlgorithm, stream: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let padding: Option<&'static dyn ring::signature::RsaEncoding> = match mac {
            MacAlgorithm::Sha256 => Some(&ring::signature::RSA_PKCS1_SHA256),
            MacAlgorithm::Sha384 => Some(&ring::signature::RSA_PKCS1_SHA384),
            MacAlgorithm::Sha512 => Some(&ring::signature::RSA_PKCS1_SHA512),
            _ => None,
        };
        if let (Some(fast), Some(padding)) = (&self.fast, padding) {
            let mut sig = vec![0; fast.public().modulus_len()];
            let rng = ring::rand::SystemRandom::new();
            if fast.sign(padding, &rng, stream, &mut sig).is_ok() {
                return Ok(sig);
            }
        }
        self.key
            .sign(mac.pkcs1(), &mac.digest(stream))
            .map_err(|e| SignatureError::Key(format!("RSA signing: {e}")))
    }
}

fn parse_rsa_private(bytes: &[u8]) -> Result<RsaPrivateKey, SignatureError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let text = std::str::from_utf8(bytes).ok();
    let parsed = match text {
        Some(t) if t.contains("-----BEGIN") => RsaPrivateKey::from_pkcs8_pem(t)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_pem(t).ok()),
        _ => RsaPrivateKey::from_pkcs8_der(bytes)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_der(bytes).ok()),
    };
    parsed.ok_or_else(|| {
        SignatureError::Key(
            "private key: not an unencrypted RSA key in PKCS#8 or PKCS#1 (PEM or DER)".into(),
        )
    })
}

/// A public key taken from a certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum Public {
    /// RSA.
    Rsa(RsaPublicKey),
    /// ECDSA on P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA on P-384.
    P384(p384::ecdsa::VerifyingKey),
    /// DSA (verification only).
    Dsa(dsa::VerifyingKey),
}

impl Public {
    /// The subject public key of a certificate.
    pub fn from_certificate(cert: &Certificate) -> Result<Public, SignatureError> {
        use rsa::pkcs8::DecodePublicKey;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| SignatureError::Key(format!("certificate key: {e}")))?;
        if let Ok(k) = RsaPublicKey::from_public_key_der(&spki) {
            return Ok(Public::Rsa(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            return Ok(Public::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            return Ok(Public::P384(k));
        }
        if let Ok(k) = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice())
            .map_err(|_| ())
            .and_then(|info| dsa::VerifyingKey::try_from(info).map_err(|_| ()))
        {
            return Ok(Public::Dsa(k));
        }
        Err(SignatureError::Key(
            "certificate key is neither RSA, ECDSA P-256/P-384 nor DSA".into(),
        ))
    }

    /// Verifies `signature` over a digest made with `mac`. RSA: PKCS#1 v1.5; ECDSA: a DER
    /// `Ecdsa-Sig-Value`, or raw r||s.
    pub fn verify_digest(&self, mac: MacAlgorithm, digest: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        // Signature values may carry one byte of DICOM padding: try the value as stored and
        // without it.
        let unpadded = match self {
            Public::Rsa(_) => signature.strip_suffix(&[0]).unwrap_or(signature),
            _ => trim_der_padding(signature),
        };
        [signature, unpadded].into_iter().any(|s| match self {
            Public::Rsa(k) => k.verify(mac.pkcs1(), digest, s).is_ok(),
            Public::P256(k) => p256::ecdsa::Signature::from_der(s)
                .or_else(|_| p256::ecdsa::Signature::from_slice(s))
                .is_ok_and(|sig| k.verify_prehash(digest, &sig).is_ok()),
            Public::P384(k) => p384::ecdsa::Signature::from_der(s)
                .or_else(|_| p384::ecdsa::Signature::from_slice(s))
                .is_ok_and(|sig| k.verify_prehash(digest, &sig).is_ok()),
            Public::Dsa(k) => {
                dsa::Signature::try_from(s).is_ok_and(|sig| k.verify_prehash(digest, &sig).is_ok())
            }
        })
    }
}

/// A DER signature padded to even length for DICOM: cut to the length its header declares.
fn trim_der_padding(sig: &[u8]) -> &[u8] {
    if sig.len() >= 2 && sig[0] == 0x30 && sig[1] < 0x80 {
        let n = 2 + sig[1] as usize;
        if n <= sig.len() {
            return &sig[..n];
        }
    }
    sig
}

/// A parsed signer certificate with the facts a verifier reports.
#[derive(Debug, Clone)]
pub struct SignerCertificate {
    /// The certificate.
    pub certificate: Certificate,
    /// Its public key.
    pub public: Public,
}

impl SignerCertificate {
    /// Parses a DER certificate (as found in Certificate of Signer).
    pub fn from_der(der: &[u8]) -> Result<SignerCertificate, SignatureError> {
        // DICOM pads OB values to even length with a NUL; DER tolerates no trailing bytes.
        let cert = Certificate::from_der(der)
            .or_else(|_| Certificate::from_der(&trim_der_len(der)))
            .map_err(|e| SignatureError::Key(format!("Certificate of Signer: {e}")))?;
        let public = Public::from_certificate(&cert)?;
        Ok(SignerCertificate {
            certificate: cert,
            public,
        })
    }

    /// The subject distinguished name, as text.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate.subject.to_string()
    }

    /// SHA-256 fingerprint of the DER certificate, hex.
    pub fn fingerprint(&self) -> String {
        let der = self.certificate.to_der().unwrap_or_default();
        sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Cuts a DER structure to the length its outer header declares.
fn trim_der_len(der: &[u8]) -> Vec<u8> {
    if der.len() >= 4 && der[0] == 0x30 && der[1] & 0x80 != 0 {
        let n = (der[1] & 0x7F) as usize;
        if (1..=4).contains(&n) && der.len() >= 2 + n {
            let len = der[2..2 + n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | b as usize);
            let total = 2 + n + len;
            if total <= der.len() {
                return der[..total].to_vec();
            }
        }
    }
    der.to_vec()
}
