//! HTTPS: the rustls server configuration of `radveil serve --tls-cert --tls-key`.
//!
//! TLS 1.2 and 1.3 only, with the cipher suites BCP 195 (RFC 9325 §4.2) recommends: for
//! TLS 1.2 only ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305), for
//! TLS 1.3 its AEAD suites; key exchange over X25519, P-256 or P-384. rustls offers no
//! renegotiation, no compression and no export or CBC suites at all. The crypto is `ring`'s.
//!
//! The private key's bytes are the caller's (read with its permissions checked) and are
//! zeroized here after the signing key is made from them.

use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use rustls::ServerConfig;
use zeroize::Zeroizing;

/// Why the TLS configuration could not be made. Never carries the key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("the certificate file holds no readable PEM certificate (BEGIN CERTIFICATE)")]
    NoCertificate,
    /// The key file holds no PEM private key, or a malformed one.
    #[error("the key file holds no readable PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)")]
    NoKey,
    /// The key is of a kind the provider cannot sign with.
    #[error("the private key is not usable: {0} (RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519 expected)")]
    UnusableKey(rustls::Error),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate's public key")]
    Mismatch,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The cipher suites offered, strongest first (RFC 9325 §4.2; all ECDHE + AEAD).
pub fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use provider::cipher_suite::*;
    vec![
        TLS13_AES_256_GCM_SHA384,
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The server configuration for the certificate chain `cert_pem` (the server's certificate
/// first) and the private key `key_pem`.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &Zeroizing<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    // The DER copy of the key is zeroized when dropped (at the end of this function).
    let der = Zeroizing::new(PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey)?);
    let signer = provider::sign::any_supported_type(&der).map_err(TlsError::UnusableKey)?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|_| TlsError::Mismatch)?;
    let crypto = CryptoProvider {
        cipher_suites: cipher_suites(),
        kx_groups: vec![
            provider::kx_group::X25519,
            provider::kx_group::SECP256R1,
            provider::kx_group::SECP384R1,
        ],
        ..provider::default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCertificate(Arc::new(certified))));
    // The gateway speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Always the one certificate (whatever name the client asks for).
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key made by `openssl req -x509` (as a site would).
    fn pair(dir: &std::path::Path, name: &str, key: &[&str]) -> (Vec<u8>, Zeroizing<Vec<u8>>) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(key)
            .arg("-keyout")
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .output()
            .expect("openssl (a peer the integration tests use too)")
            .status
            .success();
        assert!(ok);
        (
            std::fs::read(c).unwrap(),
            Zeroizing::new(std::fs::read(k).unwrap()),
        )
    }

    #[test]
    fn ecdsa_and_rsa_certificates_load_and_a_foreign_key_or_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let (ec_cert, ec_key) = pair(dir.path(), "ec", &ec);
        let (rsa_cert, rsa_key) = pair(dir.path(), "rsa", &["-newkey", "rsa:2048"]);
        let (_, other_key) = pair(dir.path(), "other", &ec);
        let config = server_config(&ec_cert, &ec_key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        server_config(&rsa_cert, &rsa_key).unwrap();
        assert!(matches!(
            server_config(&ec_cert, &other_key),
            Err(TlsError::Mismatch)
        ));
        assert!(matches!(
            server_config(&ec_cert, &rsa_key),
            Err(TlsError::Mismatch)
        ));
        assert!(matches!(
            server_config(b"not a certificate", &ec_key),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            server_config(&ec_key, &ec_key),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            server_config(&ec_cert, &Zeroizing::new(ec_cert.clone())),
            Err(TlsError::NoKey)
        ));
    }

    #[test]
    fn only_tls_1_3_suites_and_ecdhe_aead_tls_1_2_suites_are_offered() {
        for s in cipher_suites() {
            let name = format!("{:?}", s.suite());
            let tls13 = name.starts_with("TLS13_");
            let ecdhe = name.starts_with("TLS_ECDHE_");
            let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
            assert!((tls13 || ecdhe) && aead, "{name}");
        }
        assert_eq!(cipher_suites().len(), 9);
    }
}
