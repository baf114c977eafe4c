//! Encryption to a recipient: CMS EnvelopedData (RFC 5652 § 6) that `openssl cms -decrypt`
//! opens, for a research export sent to a recipient who holds an RSA key (issue 15, item 3).
//!
//! The content is encrypted with AES-256-CBC (RFC 3565) under a random key that is used for
//! this message only and wiped from memory once the recipients' copies of it are made. Each
//! recipient gets a KeyTransRecipientInfo: that key encrypted to the RSA key of their
//! certificate with RSAES-OAEP, SHA-256 and MGF1 with SHA-256 (RFC 8017, RFC 4055), the
//! recipient named by the certificate's issuer and serial number. PKCS#1 v1.5 key transport
//! (what the `cms` crate's own builder writes) is not used: it is open to padding-oracle
//! attacks. AES-GCM (AuthEnvelopedData) is not used either: OpenSSL's support of it has had
//! interoperability bugs. CBC gives no integrity: sign the content first where tampering
//! matters.
//!
//! Elliptic-curve recipients are refused: ECDH key agreement (KeyAgreeRecipientInfo) needs
//! a key-derivation and key-wrap scheme that `cms` 0.2 does not build and that is not worth
//! hand-rolling here; a recipient with only an EC key gets an RSA certificate instead.

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use spki::AlgorithmIdentifierOwned;
/// A recipient's X.509 certificate (as [`certificates_from_pem`] reads them).
pub use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::trust::TrustStore;

/// id-envelopedData (RFC 5652 § 6.1).
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// id-data (RFC 5652 § 4): the type of the encrypted content.
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-aes256-CBC (RFC 3565 § 4.1).
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
/// id-RSAES-OAEP (RFC 8017 A.2.1, RFC 4055 § 4.1).
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// rsaEncryption: the algorithm of an RSA certificate's subject public key.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey: an elliptic-curve subject public key.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// RSAES-OAEP-params for SHA-256 and MGF1 with SHA-256, the label left empty (the default
/// pSourceFunc, so absent), encoded as OpenSSL encodes them (`-keyopt rsa_oaep_md:sha256
/// -keyopt rsa_mgf1_md:sha256`): the hash AlgorithmIdentifiers without a NULL parameter.
///
/// ```text
/// SEQUENCE {
///   [0] { SEQUENCE { OID 2.16.840.1.101.3.4.2.1 } }                        -- sha256
///   [1] { SEQUENCE { OID 1.2.840.113549.1.1.8,                             -- id-mgf1
///                    SEQUENCE { OID 2.16.840.1.101.3.4.2.1 } } } }         -- sha256
/// ```
const OAEP_SHA256_PARAMS: [u8; 45] = [
    0x30, 0x2b, // RSAES-OAEP-params
    0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0xa1,
    0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0b,
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

/// The smallest RSA modulus a recipient may have, in bits (NIST SP 800-57: 112-bit security).
pub const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus accepted, in bits: a hostile certificate's huge modulus would
/// otherwise cost unbounded time in the encryption.
pub const MAX_RSA_BITS: usize = 16384;

/// The most recipients one message is encrypted to (each costs an RSA encryption).
pub const MAX_RECIPIENTS: usize = 64;

/// Why a message could not be encrypted to its recipients.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// No recipient was given.
    #[error("no recipient certificate was given")]
    NoRecipient,
    /// More recipients than [`MAX_RECIPIENTS`].
    #[error("{0} recipient certificates; at most {MAX_RECIPIENTS} are allowed")]
    TooManyRecipients(usize),
    /// A recipient's certificate holds an elliptic-curve key (ECDH is not supported).
    #[error(
        "recipient {0}: the certificate holds an elliptic-curve key; encryption needs an RSA \
         key (ECDH key agreement is not supported)"
    )]
    EllipticCurve(usize),
    /// A recipient's certificate holds a key that is neither RSA nor elliptic-curve, or an
    /// RSA key that does not parse.
    #[error("recipient {0}: the certificate's key is not an RSA key")]
    NotRsa(usize),
    /// A recipient's RSA key is shorter than [`MIN_RSA_BITS`] or longer than [`MAX_RSA_BITS`].
    #[error(
        "recipient {index}: an RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits \
         are accepted"
    )]
    KeySize {
        /// The recipient's position in the list (0-based).
        index: usize,
        /// The modulus size.
        bits: usize,
    },
    /// A certificate file that holds no certificate, or one that does not parse.
    #[error("certificate file: {0}")]
    Certificate(String),
    /// The system's random source failed.
    #[error("the random source failed")]
    Random,
    /// The RSA encryption of the content key failed.
    #[error("recipient {0}: encrypting the content key failed")]
    KeyTransport(usize),
    /// The message could not be DER-encoded (for example content too long for DER).
    #[error("encoding the EnvelopedData: {0}")]
    Encoding(#[from] der::Error),
}

/// Reads the certificates of a PEM bundle, or one DER certificate (a recipient's
/// certificate file). Errors when it holds none.
pub fn certificates_from_pem(bytes: &[u8]) -> Result<Vec<Certificate>, EnvelopeError> {
    let mut store = TrustStore::default();
    store
        .add(bytes)
        .map_err(|e| EnvelopeError::Certificate(e.to_string()))?;
    Ok(store.certificates())
}

/// Encrypts `content` to every certificate in `recipients`: the DER of a ContentInfo of
/// type EnvelopedData, AES-256-CBC content encryption under a fresh random key (wiped after
/// use), one RSAES-OAEP (SHA-256, MGF1-SHA-256) KeyTransRecipientInfo per recipient. Any
/// one of the recipients' private keys opens it (`openssl cms -decrypt -inform DER -recip
/// CERT -inkey KEY`). Every recipient is checked before anything is encrypted.
pub fn encrypt_to(recipients: &[Certificate], content: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if recipients.is_empty() {
        return Err(EnvelopeError::NoRecipient);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(EnvelopeError::TooManyRecipients(recipients.len()));
    }
    let keys = recipients
        .iter()
        .enumerate()
        .map(|(i, c)| rsa_key(i, c))
        .collect::<Result<Vec<_>, _>>()?;

    let mut cek = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 16];
    fill_random(cek.as_mut_slice())?;
    fill_random(&mut iv)?;

    let mut rng = rand_core::OsRng;
    let mut infos = Vec::with_capacity(keys.len());
    for (i, (key, cert)) in keys.iter().zip(recipients).enumerate() {
        let enc_key = key
            .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), cek.as_slice())
            .map_err(|_| EnvelopeError::KeyTransport(i))?;
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: cert.tbs_certificate.issuer.clone(),
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: ID_RSAES_OAEP,
                parameters: Some(Any::from_der(&OAEP_SHA256_PARAMS)?),
            },
            enc_key: OctetString::new(enc_key)?,
        }));
    }

    let ciphertext = {
        // The cipher's key schedule is wiped when it is dropped (the `zeroize` features of
        // `aes` and `cbc`), the key itself when `cek` is.
        let cipher = cbc::Encryptor::<aes::Aes256>::new(cek.as_ref().into(), &iv.into());
        cipher.encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(content)
    };
    drop(cek);

    let enveloped = EnvelopedData {
        // Version 0: no originator info, no unprotected attributes, every RecipientInfo
        // version 0 (RFC 5652 § 6.1).
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos::try_from(infos)?,
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: ID_AES256_CBC,
                parameters: Some(Any::new(der::Tag::OctetString, iv.as_slice())?),
            },
            encrypted_content: Some(OctetString::new(ciphertext)?),
        },
        unprotected_attrs: None,
    };
    let info = ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped)?,
    };
    drop(enveloped);
    Ok(info.to_der()?)
}

/// The RSA key of recipient `index`'s certificate, its size checked.
fn rsa_key(index: usize, cert: &Certificate) -> Result<RsaPublicKey, EnvelopeError> {
    use rsa::pkcs8::DecodePublicKey;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        return Err(EnvelopeError::EllipticCurve(index));
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(EnvelopeError::NotRsa(index));
    }
    // The modulus size is read from the key's DER before the key is parsed into numbers:
    // the parse of a huge modulus is itself the cost to bound.
    let bits = spki.subject_public_key.raw_bytes().len().saturating_mul(8);
    if bits > MAX_RSA_BITS + 64 {
        return Err(EnvelopeError::KeySize { index, bits });
    }
    let der = spki.to_der()?;
    let key = RsaPublicKey::from_public_key_der(&der).map_err(|_| EnvelopeError::NotRsa(index))?;
    let bits = key.n().bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(EnvelopeError::KeySize { index, bits });
    }
    Ok(key)
}

fn fill_random(out: &mut [u8]) -> Result<(), EnvelopeError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| EnvelopeError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockDecryptMut;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::RsaPrivateKey;

    const A_CRT: &[u8] = include_bytes!("testdata/envelope-a.crt");
    const A_KEY: &str = include_str!("testdata/envelope-a.key");
    const B_CRT: &[u8] = include_bytes!("testdata/envelope-b.crt");
    const B_KEY: &str = include_str!("testdata/envelope-b.key");
    const EC_CRT: &[u8] = include_bytes!("testdata/envelope-ec.crt");

    fn cert(pem: &[u8]) -> Certificate {
        certificates_from_pem(pem).unwrap().remove(0)
    }

    /// Opens `der` with `key` the way a CMS reader does: find the KeyTransRecipientInfo for
    /// `cert`, check its algorithm, unwrap the content key with OAEP-SHA-256, decrypt.
    fn open(der: &[u8], cert: &Certificate, key: &str) -> Result<Vec<u8>, String> {
        let info = ContentInfo::from_der(der).map_err(|e| e.to_string())?;
        assert_eq!(info.content_type, ID_ENVELOPED_DATA);
        let env: EnvelopedData = info.content.decode_as().map_err(|e| e.to_string())?;
        assert_eq!(env.version, CmsVersion::V0);
        let key = RsaPrivateKey::from_pkcs8_pem(key).unwrap();
        let ktri = env
            .recip_infos
            .0
            .iter()
            .find_map(|ri| match ri {
                RecipientInfo::Ktri(k)
                    if k.rid
                        == RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                            issuer: cert.tbs_certificate.issuer.clone(),
                            serial_number: cert.tbs_certificate.serial_number.clone(),
                        }) =>
                {
                    Some(k.clone())
                }
                _ => None,
            })
            .ok_or("no recipient info for this certificate")?;
        assert_eq!(ktri.key_enc_alg.oid, ID_RSAES_OAEP);
        assert_eq!(
            ktri.key_enc_alg
                .parameters
                .as_ref()
                .unwrap()
                .to_der()
                .unwrap(),
            OAEP_SHA256_PARAMS
        );
        let cek = key
            .decrypt(rsa::Oaep::new::<sha2::Sha256>(), ktri.enc_key.as_bytes())
            .map_err(|e| e.to_string())?;
        let eci = env.encrypted_content;
        assert_eq!(eci.content_type, ID_DATA);
        assert_eq!(eci.content_enc_alg.oid, ID_AES256_CBC);
        let iv = eci.content_enc_alg.parameters.unwrap();
        let iv = iv.decode_as::<OctetString>().unwrap();
        let d = cbc::Decryptor::<aes::Aes256>::new_from_slices(&cek, iv.as_bytes()).unwrap();
        d.decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(
            eci.encrypted_content.unwrap().as_bytes(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_recipient_opens_what_was_encrypted_to_them() {
        let a = cert(A_CRT);
        for len in [0usize, 1, 15, 16, 17, 100_000] {
            let content: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let der = encrypt_to(std::slice::from_ref(&a), &content).unwrap();
            assert_eq!(open(&der, &a, A_KEY).unwrap(), content, "length {len}");
        }
    }

    #[test]
    fn each_of_several_recipients_opens_it_and_keys_and_ivs_are_fresh() {
        let (a, b) = (cert(A_CRT), cert(B_CRT));
        let content = b"research export manifest".to_vec();
        let one = encrypt_to(&[a.clone(), b.clone()], &content).unwrap();
        assert_eq!(open(&one, &a, A_KEY).unwrap(), content);
        assert_eq!(open(&one, &b, B_KEY).unwrap(), content);
        let two = encrypt_to(&[a.clone(), b], &content).unwrap();
        assert_ne!(one, two, "a fresh key and IV each time");
    }

    #[test]
    fn another_key_does_not_open_it() {
        let (a, b) = (cert(A_CRT), cert(B_CRT));
        let der = encrypt_to(std::slice::from_ref(&a), b"secret").unwrap();
        // B is not a recipient at all, and B's key does not unwrap A's content key.
        assert!(open(&der, &b, B_KEY).is_err());
        assert!(open(&der, &a, B_KEY).is_err());
    }

    #[test]
    fn the_content_is_not_in_the_clear() {
        let a = cert(A_CRT);
        let content = b"PATIENT^PLANTED^NAME PATIENT^PLANTED^NAME PATIENT^PLANTED^NAME";
        let der = encrypt_to(&[a], content).unwrap();
        assert!(!der.windows(20).any(|w| w == &content[..20]));
    }

    #[test]
    fn an_elliptic_curve_recipient_is_refused_by_position() {
        let (a, ec) = (cert(A_CRT), cert(EC_CRT));
        let err = encrypt_to(&[a, ec], b"x").unwrap_err();
        assert!(matches!(err, EnvelopeError::EllipticCurve(1)), "{err}");
        assert!(err.to_string().contains("RSA"), "{err}");
    }

    #[test]
    fn no_recipients_or_too_many_are_refused() {
        assert!(matches!(
            encrypt_to(&[], b"x"),
            Err(EnvelopeError::NoRecipient)
        ));
        let many = vec![cert(A_CRT); MAX_RECIPIENTS + 1];
        assert!(matches!(
            encrypt_to(&many, b"x"),
            Err(EnvelopeError::TooManyRecipients(_))
        ));
    }

    #[test]
    fn a_short_rsa_key_is_refused() {
        use rsa::pkcs8::EncodePublicKey;
        let mut c = cert(A_CRT);
        let small = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let spki = small.to_public_key().to_public_key_der().unwrap();
        c.tbs_certificate.subject_public_key_info =
            spki::SubjectPublicKeyInfoOwned::from_der(spki.as_bytes()).unwrap();
        let err = encrypt_to(&[c], b"x").unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::KeySize {
                    index: 0,
                    bits: 1024
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_file_without_certificates_is_an_error() {
        assert!(certificates_from_pem(b"not a certificate").is_err());
        let bundle = [A_CRT, B_CRT].concat();
        assert_eq!(certificates_from_pem(&bundle).unwrap().len(), 2);
    }

    #[test]
    fn the_oaep_parameters_decode_as_sha256_with_mgf1_sha256() {
        let p = rsa::pkcs1::RsaOaepParams::try_from(OAEP_SHA256_PARAMS.as_slice()).unwrap();
        let sha256 = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
        assert_eq!(p.hash.oid, sha256);
        assert!(p.hash.parameters.is_none(), "no NULL, as OpenSSL writes it");
        assert_eq!(
            p.mask_gen.oid,
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8")
        );
        assert_eq!(p.mask_gen.parameters.unwrap().oid, sha256);
        // pSourceFunc left at its default: the empty label.
        assert_eq!(
            p.p_source.oid,
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9")
        );
    }

    /// The peer: `openssl cms -decrypt` opens the output with the recipient's key and not
    /// with another. With CI=true a missing openssl is a failure; elsewhere a loud skip.
    #[test]
    fn openssl_cms_decrypts_it_with_the_right_key_only() {
        use std::process::Command;
        let have = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl is missing (CI=true): install it with tools/setup-peers"
            );
            eprintln!("SKIPPED openssl_cms_decrypts_it_with_the_right_key_only: no openssl");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("a.crt"), A_CRT).unwrap();
        std::fs::write(path("a.key"), A_KEY).unwrap();
        std::fs::write(path("b.crt"), B_CRT).unwrap();
        std::fs::write(path("b.key"), B_KEY).unwrap();
        let content: Vec<u8> = (0..70_001u32)
            .map(|i| (i.wrapping_mul(31) >> 3) as u8)
            .collect();
        let der = encrypt_to(&[cert(A_CRT)], &content).unwrap();
        std::fs::write(path("m.p7m"), &der).unwrap();
        let decrypt = |crt: &str, key: &str, out: &str| {
            Command::new("openssl")
                .args(["cms", "-decrypt", "-binary", "-inform", "DER", "-in"])
                .arg(path("m.p7m"))
                .arg("-recip")
                .arg(path(crt))
                .arg("-inkey")
                .arg(path(key))
                .arg("-out")
                .arg(path(out))
                .output()
                .unwrap()
        };
        let ok = decrypt("a.crt", "a.key", "a.out");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(std::fs::read(path("a.out")).unwrap(), content);
        // The wrong key, named as the recipient or as itself: openssl must fail.
        for (crt, key) in [("a.crt", "b.key"), ("b.crt", "b.key")] {
            let bad = decrypt(crt, key, "b.out");
            let got = std::fs::read(path("b.out")).unwrap_or_default();
            assert!(
                !bad.status.success() && got != content,
                "{crt}/{key} opened it"
            );
        }
        // Without -recip openssl tries every recipient info with the key: still only A's.
        let any = Command::new("openssl")
            .args(["cms", "-decrypt", "-binary", "-inform", "DER", "-in"])
            .arg(path("m.p7m"))
            .arg("-inkey")
            .arg(path("a.key"))
            .arg("-out")
            .arg(path("c.out"))
            .output()
            .unwrap();
        assert!(any.status.success());
        assert_eq!(std::fs::read(path("c.out")).unwrap(), content);
    }
}
