//! RFC 3161 certified timestamps on DICOM signatures (PS3.15 C.12.1.1.3, Certified Timestamp
//! Type "CMS_TSP"), interoperable with DCMTK `dcmsign` (`+ts`, `--insert-timestamp`,
//! `--verify-ts`).
//!
//! A timestamp authority (TSA) signs the digest of the Signature (0400,0120) value together
//! with the time; the token (a CMS SignedData whose content is a TSTInfo) is stored in
//! Certified Timestamp (0400,0310) of the signature's Digital Signatures Sequence item. It
//! proves the signature existed at that time, independently of the signer's own clock, so
//! the signer certificate's validity is checked at the TSA's time.
//!
//! As in dcmsign, the imprint is over the Signature bytes as stored, except that a DSA or
//! ECDSA signature (DER, possibly padded to even length) is first cut to its DER length.

use cms::cert::CertificateChoices;
use cms::content_info::CmsVersion;
use cms::content_info::ContentInfo;
use cms::revocation::RevocationInfoChoice;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier, SignerInfo};
use der::asn1::{Int, ObjectIdentifier, OctetString};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag,
    Writer,
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_tsp::{MessageImprint, TimeStampReq, TspVersion, TstInfo};

use crate::crypto::{MacAlgorithm, Public};
use crate::trust::TrustStore;

pub use radveil_standard::tags::{CERTIFIED_TIMESTAMP, CERTIFIED_TIMESTAMP_TYPE};
/// The only Certified Timestamp Type the standard defines.
pub const CMS_TSP: &str = "CMS_TSP";

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TSTINFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// Why a timestamp could not be requested, inserted or verified.
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    /// The query, reply or token is not what RFC 3161 defines.
    #[error("{0}")]
    Malformed(String),
    /// The TSA did not grant the request.
    #[error("the timestamp authority refused the request: {0}")]
    Refused(String),
    /// The reply does not answer the query or does not match the signature.
    #[error("{0}")]
    Mismatch(String),
}

fn malformed(what: &str, e: impl std::fmt::Display) -> TimestampError {
    TimestampError::Malformed(format!("{what}: {e}"))
}

/// The OID of a MAC algorithm's digest.
pub fn digest_oid(mac: MacAlgorithm) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(match mac {
        MacAlgorithm::Ripemd160 => "1.3.36.3.2.1",
        MacAlgorithm::Md5 => "1.2.840.113549.2.5",
        MacAlgorithm::Sha1 => "1.3.14.3.2.26",
        MacAlgorithm::Sha256 => "2.16.840.1.101.3.4.2.1",
        MacAlgorithm::Sha384 => "2.16.840.1.101.3.4.2.2",
        MacAlgorithm::Sha512 => "2.16.840.1.101.3.4.2.3",
    })
}

/// The MAC algorithm of a digest OID.
pub fn digest_for_oid(oid: &ObjectIdentifier) -> Option<MacAlgorithm> {
    [
        MacAlgorithm::Ripemd160,
        MacAlgorithm::Md5,
        MacAlgorithm::Sha1,
        MacAlgorithm::Sha256,
        MacAlgorithm::Sha384,
        MacAlgorithm::Sha512,
    ]
    .into_iter()
    .find(|m| digest_oid(*m) == *oid)
}

/// The bytes a timestamp's imprint is computed over: the Signature value, cut to its DER
/// length when the signer's key is DSA or ECDSA (their signatures are DER and may carry a
/// DICOM pad byte).
pub fn imprinted_signature<'s>(signature: &'s [u8], signer: &Public) -> &'s [u8] {
    match signer {
        Public::Rsa(_) => signature,
        _ => der_prefix(signature),
    }
}

/// A DER structure padded for DICOM: cut to the length its outer header declares.
pub(crate) fn der_prefix(der: &[u8]) -> &[u8] {
    if der.len() < 2 {
        return der;
    }
    let (header, len) = if der[1] & 0x80 == 0 {
        (2, der[1] as usize)
    } else {
        let n = (der[1] & 0x7F) as usize;
        if !(1..=4).contains(&n) || der.len() < 2 + n {
            return der;
        }
        (
            2 + n,
            der[2..2 + n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | b as usize),
        )
    };
    match header.checked_add(len) {
        Some(total) if total <= der.len() => &der[..total],
        _ => der,
    }
}

/// What to ask a TSA for.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Digest algorithm of the imprint (dcmsign's default: SHA-256).
    pub mac: MacAlgorithm,
    /// Include a random 64-bit nonce, so a stale reply cannot be passed off as fresh.
    pub nonce: bool,
    /// Ask the TSA to include its certificate in the token.
    pub cert_req: bool,
    /// A TSA policy OID to request.
    pub policy: Option<String>,
}

impl Default for QueryOptions {
    fn default() -> QueryOptions {
        QueryOptions {
            mac: MacAlgorithm::Sha256,
            nonce: true,
            cert_req: true,
            policy: None,
        }
    }
}

/// Makes a DER TimeStampReq for the imprint of `imprinted` (see [`imprinted_signature`]).
pub fn query(imprinted: &[u8], options: &QueryOptions) -> Result<Vec<u8>, TimestampError> {
    if options.mac == MacAlgorithm::Md5 {
        return Err(TimestampError::Malformed(
            "MD5 is not accepted for new timestamps".into(),
        ));
    }
    let nonce = if options.nonce {
        use ring::rand::SecureRandom;
        let mut n = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut n)
            .map_err(|_| TimestampError::Malformed("no random source for the nonce".into()))?;
        n[0] &= 0x7F; // a positive INTEGER
        n[0] |= 0x01; // and minimally encoded in all eight bytes
        Some(Int::new(&n).map_err(|e| malformed("nonce", e))?)
    } else {
        None
    };
    let policy = match &options.policy {
        Some(p) => {
            Some(ObjectIdentifier::new(p).map_err(|e| malformed(&format!("policy OID {p}"), e))?)
        }
        None => None,
    };
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(options.mac, imprinted)?,
        req_policy: policy,
        nonce,
        cert_req: options.cert_req,
        extensions: None,
    };
    req.to_der().map_err(|e| malformed("timestamp query", e))
}

fn imprint(mac: MacAlgorithm, data: &[u8]) -> Result<MessageImprint, TimestampError> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: digest_oid(mac),
            parameters: Some(der::Any::null()),
        },
        hashed_message: OctetString::new(mac.digest(data)).map_err(|e| malformed("imprint", e))?,
    })
}

/// TimeStampResp (RFC 3161 §2.4.2), read leniently: the status as a plain integer and the
/// failure information as raw bits, so every refusal a TSA sends can be reported.
#[derive(Debug, Sequence)]
struct Reply {
    status: StatusInfo,
    #[asn1(optional = "true")]
    token: Option<ContentInfo>,
}

/// PKIStatusInfo.
#[derive(Debug, Sequence)]
struct StatusInfo {
    status: u8,
    #[asn1(optional = "true")]
    text: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<der::asn1::BitString>,
}

/// The names of the PKIFailureInfo bits RFC 3161 defines.
fn failure_names(bits: &der::asn1::BitString) -> Vec<String> {
    const NAMES: [(usize, &str); 8] = [
        (0, "unrecognized or unsupported algorithm"),
        (2, "transaction not permitted or supported"),
        (5, "the data submitted has the wrong format"),
        (14, "the TSA's time source is not available"),
        (15, "the requested TSA policy is not supported"),
        (16, "the requested extension is not supported"),
        (17, "the additional information requested is not available"),
        (25, "the request cannot be handled due to system failure"),
    ];
    let raw = bits.raw_bytes();
    NAMES
        .iter()
        .filter(|(bit, _)| {
            raw.get(bit / 8)
                .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0)
        })
        .map(|(_, name)| name.to_string())
        .collect()
}

/// A parsed TimeStampReq.
pub fn parse_query(der: &[u8]) -> Result<TimeStampReq, TimestampError> {
    TimeStampReq::from_der(der).map_err(|e| malformed("timestamp query", e))
}

/// Takes the token out of a DER TimeStampResp after checking that it was granted and, like
/// dcmsign's `--insert-timestamp`, that it answers `query` (same imprint, nonce and policy)
/// and, when given, stamps `imprinted`. Returns the token's DER, for Certified Timestamp (0400,0310).
pub fn token_from_reply(
    reply: &[u8],
    query: Option<&TimeStampReq>,
    imprinted: Option<&[u8]>,
) -> Result<Vec<u8>, TimestampError> {
    let resp = Reply::from_der(reply).map_err(|e| malformed("timestamp reply", e))?;
    if resp.status.status > 1 {
        // 2 rejection, 3 waiting, 4 revocation warning, 5 revocation notification.
        let mut why: Vec<String> = resp.status.text.unwrap_or_default();
        if let Some(bits) = &resp.status.fail_info {
            why.extend(failure_names(bits));
        }
        return Err(TimestampError::Refused(format!(
            "status {}{}{}",
            resp.status.status,
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        )));
    }
    let token = resp
        .token
        .ok_or_else(|| TimestampError::Malformed("the reply holds no token".into()))?;
    let der = token.to_der().map_err(|e| malformed("token", e))?;
    let info = Token::parse(&der)?.info;
    if let Some(q) = query {
        if q.message_imprint != info.message_imprint {
            return Err(TimestampError::Mismatch(
                "the reply's imprint is not the query's".into(),
            ));
        }
        if let Some(n) = &q.nonce {
            if info.nonce.as_ref() != Some(n) {
                return Err(TimestampError::Mismatch(
                    "the reply's nonce is not the query's (a stale or foreign reply)".into(),
                ));
            }
        }
        if let Some(p) = &q.req_policy {
            if &info.policy != p {
                return Err(TimestampError::Mismatch(
                    "the reply's policy is not the one requested".into(),
                ));
            }
        }
    }
    if let Some(imprinted) = imprinted {
        check_imprint(&info, imprinted)?;
    }
    Ok(der)
}

fn check_imprint(info: &TstInfo, imprinted: &[u8]) -> Result<(), TimestampError> {
    let mac = digest_for_oid(&info.message_imprint.hash_algorithm.oid).ok_or_else(|| {
        TimestampError::Malformed(format!(
            "unknown imprint algorithm {}",
            info.message_imprint.hash_algorithm.oid
        ))
    })?;
    if mac.digest(imprinted) != info.message_imprint.hashed_message.as_bytes() {
        return Err(TimestampError::Mismatch(
            "the timestamp's imprint is not the digest of this signature".into(),
        ));
    }
    Ok(())
}

/// The elements of a SET OF as they come, in their order, duplicates included: what CMS
/// accepts as input (RFC 5652 §5.1 decodes BER, and real TSAs send DER sets with repeated
/// members), where `der::asn1::SetOfVec` refuses a repeated member.
#[derive(Debug, Clone)]
struct SetOfAny<T>(Vec<T>);

impl<T> FixedTag for SetOfAny<T> {
    const TAG: Tag = Tag::Set;
}

impl<'a, T: Decode<'a>> DecodeValue<'a> for SetOfAny<T> {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        reader.read_nested(header.length, |reader| {
            let mut items = Vec::new();
            while !reader.is_finished() {
                items.push(T::decode(reader)?);
            }
            Ok(SetOfAny(items))
        })
    }
}

impl<T: Encode> EncodeValue for SetOfAny<T> {
    fn value_len(&self) -> der::Result<Length> {
        self.0
            .iter()
            .try_fold(Length::ZERO, |len, item| len + item.encoded_len()?)
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.iter().try_for_each(|item| item.encode(writer))
    }
}

/// CMS SignedData (RFC 5652 §5.1) as a timestamp token holds it. The same fields as
/// `cms::signed_data::SignedData`, but its SET OFs accept repeated members: `openssl ts`
/// lists the TSA's certificate twice when its `certs` file holds it too.
#[derive(Debug, Clone, Sequence)]
struct TokenSignedData {
    version: CmsVersion,
    digest_algorithms: SetOfAny<AlgorithmIdentifierOwned>,
    encap_content_info: EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<SetOfAny<CertificateChoices>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    crls: Option<SetOfAny<RevocationInfoChoice>>,
    signer_infos: SetOfAny<SignerInfo>,
}

/// A parsed timestamp token: the CMS SignedData and its TSTInfo.
#[derive(Debug, Clone)]
pub struct Token {
    signer_infos: Vec<SignerInfo>,
    /// The X.509 certificates the token carries, each once (in DER order).
    certificates: Vec<Certificate>,
    econtent: Vec<u8>,
    /// The TSTInfo.
    pub info: TstInfo,
}

impl Token {
    /// Parses a token (ContentInfo DER, possibly padded to even length).
    pub fn parse(der: &[u8]) -> Result<Token, TimestampError> {
        let ci = ContentInfo::from_der(der_prefix(der)).map_err(|e| malformed("token", e))?;
        if ci.content_type != ID_SIGNED_DATA {
            return Err(TimestampError::Malformed(
                "the token is not CMS SignedData".into(),
            ));
        }
        let signed: TokenSignedData = ci
            .content
            .decode_as()
            .map_err(|e| malformed("token SignedData", e))?;
        if signed.encap_content_info.econtent_type != ID_CT_TSTINFO {
            return Err(TimestampError::Malformed(
                "the token's content is not a TSTInfo".into(),
            ));
        }
        let econtent = signed
            .encap_content_info
            .econtent
            .as_ref()
            .ok_or_else(|| TimestampError::Malformed("the token has no TSTInfo".into()))?
            .decode_as::<OctetString>()
            .map_err(|e| malformed("token content", e))?
            .into_bytes();
        let info = TstInfo::from_der(&econtent).map_err(|e| malformed("TSTInfo", e))?;
        if info.version != TspVersion::V1 {
            return Err(TimestampError::Malformed(
                "unsupported TSTInfo version".into(),
            ));
        }
        // Repeated certificates are harmless but kept once, so whatever searches them does
        // not repeat its work. Their DER is sorted (as DER orders a SET OF), then deduplicated.
        let mut certificates: Vec<(Vec<u8>, Certificate)> = Vec::new();
        for choice in signed.certificates.map(|set| set.0).unwrap_or_default() {
            if let CertificateChoices::Certificate(c) = choice {
                certificates.push((
                    c.to_der().map_err(|e| malformed("token certificate", e))?,
                    c,
                ));
            }
        }
        certificates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        certificates.dedup_by(|a, b| a.0 == b.0);
        Ok(Token {
            signer_infos: signed.signer_infos.0,
            certificates: certificates.into_iter().map(|(_, c)| c).collect(),
            econtent,
            info,
        })
    }

    /// The TSA's time, Unix seconds.
    pub fn time(&self) -> i64 {
        self.info.gen_time.to_unix_duration().as_secs() as i64
    }

    /// The TSA's time as RFC 3339 (UTC, seconds).
    pub fn time_text(&self) -> String {
        self.info.gen_time.to_date_time().to_string()
    }

    /// The token's serial number, hex.
    pub fn serial(&self) -> String {
        self.info
            .serial_number
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The TSA policy OID.
    pub fn policy(&self) -> String {
        self.info.policy.to_string()
    }

    /// Verifies the token: its CMS signature by the TSA certificate (taken from the token
    /// or from `extra`), the ESS signing-certificate binding, the TSA certificate's
    /// time-stamping key purpose and validity at the TSA's time, and that it stamps
    /// `imprinted`. Returns the TSA certificate.
    pub fn verify(&self, imprinted: &[u8], extra: &[Certificate]) -> Result<Certificate, String> {
        check_imprint(&self.info, imprinted).map_err(|e| e.to_string())?;
        let mut infos = self.signer_infos.iter();
        let si = match (infos.next(), infos.next()) {
            (Some(si), None) => si,
            _ => return Err("a timestamp token must have exactly one signer".into()),
        };
        let tsa = self
            .certificates
            .iter()
            .chain(extra.iter())
            .find(|c| identifies(&si.sid, c))
            .cloned()
            .ok_or("the timestamp authority's certificate is neither in the token nor given")?;
        verify_signer_info(si, &self.econtent, &tsa)?;
        check_tsa_certificate(&tsa, self.time())?;
        Ok(tsa)
    }
}

fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == cert.tbs_certificate.issuer
                && ias.serial_number == cert.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            use x509_cert::ext::pkix::SubjectKeyIdentifier;
            matches!(cert.tbs_certificate.get::<SubjectKeyIdentifier>(),
                Ok(Some((_, own))) if own == *ski)
        }
    }
}

/// ESSCertID / ESSCertIDv2 (RFC 2634, RFC 5035), with the hash algorithm made explicit.
#[derive(Debug, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<der::Any>,
}

#[derive(Debug, Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<der::Any>,
}

fn verify_signer_info(si: &SignerInfo, econtent: &[u8], tsa: &Certificate) -> Result<(), String> {
    let digest = digest_for_oid(&si.digest_alg.oid)
        .ok_or_else(|| format!("unknown digest algorithm {}", si.digest_alg.oid))?;
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or("the token's signer has no signed attributes")?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let content_type = attr(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or("the token's signer has no content-type attribute")?;
    if content_type != ID_CT_TSTINFO {
        return Err("the token's content-type attribute is not TSTInfo".into());
    }
    let md = attr(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("the token's signer has no message-digest attribute")?;
    if md.as_bytes() != digest.digest(econtent) {
        return Err("the TSTInfo was changed after the TSA signed it".into());
    }
    // The ESS signing-certificate attribute binds the signature to the TSA's certificate.
    let cert_der = tsa.to_der().map_err(|e| e.to_string())?;
    let (ess, default_hash) = match (
        attr(ID_SIGNING_CERTIFICATE_V2),
        attr(ID_SIGNING_CERTIFICATE),
    ) {
        (Some(v), _) => (v, MacAlgorithm::Sha256),
        (None, Some(v)) => (v, MacAlgorithm::Sha1),
        (None, None) => return Err("the token has no ESS signing-certificate attribute".into()),
    };
    let ess: SigningCertificate = ess
        .decode_as()
        .map_err(|e| format!("ESS signing-certificate: {e}"))?;
    let first = ess
        .certs
        .first()
        .ok_or("the ESS signing-certificate attribute is empty")?;
    let hash = match &first.hash_algorithm {
        Some(a) => {
            digest_for_oid(&a.oid).ok_or_else(|| format!("unknown ESS hash algorithm {}", a.oid))?
        }
        None => default_hash,
    };
    if first.cert_hash.as_bytes() != hash.digest(&cert_der) {
        return Err("the token names another certificate than the one that signed it".into());
    }
    let signed = attrs.to_der().map_err(|e| e.to_string())?;
    let public = Public::from_certificate(tsa).map_err(|e| e.to_string())?;
    let alg = si.signature_algorithm.oid.to_string();
    let mac = match alg.as_str() {
        // rsaEncryption, id-dsa, id-ecPublicKey: the digest is the signer info's.
        "1.2.840.113549.1.1.1" | "1.2.840.10040.4.1" | "1.2.840.10045.2.1" => digest,
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" => MacAlgorithm::Sha1,
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" | "2.16.840.1.101.3.4.3.2" => {
            MacAlgorithm::Sha256
        }
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => MacAlgorithm::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => MacAlgorithm::Sha512,
        other => return Err(format!("unsupported TSA signature algorithm {other}")),
    };
    if public.verify_digest(mac, &mac.digest(&signed), si.signature.as_bytes()) {
        Ok(())
    } else {
        Err("the timestamp authority's signature does not verify".into())
    }
}

/// RFC 3161 §2.3: the TSA certificate has the time-stamping extended key purpose (and only
/// it), and it was valid at the time it stamped.
fn check_tsa_certificate(tsa: &Certificate, at: i64) -> Result<(), String> {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    match tsa.tbs_certificate.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if eku.0.contains(&ID_KP_TIME_STAMPING) => {}
        _ => {
            return Err(
                "the timestamp authority's certificate lacks the time-stamping key purpose".into(),
            )
        }
    }
    crate::trust::valid_at(tsa, at).map_err(|_| {
        "the timestamp authority's certificate was not valid at the stamped time".to_string()
    })
}

/// The outcome of checking a signature's certified timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampOutcome {
    /// The token verifies and stamps this signature (and its TSA is trusted, when trust
    /// anchors were given).
    Valid,
    /// The token verifies but its TSA is not trusted: why.
    Untrusted(String),
    /// The token is malformed, does not verify, or stamps something else: why.
    Invalid(String),
}

/// A signature's certified timestamp, as checked.
#[derive(Debug, Clone)]
pub struct TimestampReport {
    /// Whether it verifies.
    pub outcome: TimestampOutcome,
    /// The TSA's time (Unix seconds), when the token parsed.
    pub time: Option<i64>,
    /// The TSA's time as text.
    pub time_text: String,
    /// The TSA certificate's subject.
    pub tsa: String,
    /// The token's serial number (hex).
    pub serial: String,
    /// The TSA policy OID.
    pub policy: String,
    /// The TSA certificate, when one verified the token (for trust checks).
    pub certificate: Option<Certificate>,
}

/// Checks a Certified Timestamp against the signature it stamps. `kind` is Certified
/// Timestamp Type; `extra` are certificates the verifier was given (a TSA certificate a
/// token left out may be among them).
pub fn check(kind: &str, token: &[u8], imprinted: &[u8], extra: &[Certificate]) -> TimestampReport {
    let mut report = TimestampReport {
        outcome: TimestampOutcome::Invalid(String::new()),
        time: None,
        time_text: String::new(),
        tsa: String::new(),
        serial: String::new(),
        policy: String::new(),
        certificate: None,
    };
    if kind.trim() != CMS_TSP {
        report.outcome =
            TimestampOutcome::Invalid("Certified Timestamp Type (0400,0305) is not CMS_TSP".into());
        return report;
    }
    let parsed = match Token::parse(token) {
        Ok(t) => t,
        Err(e) => {
            report.outcome = TimestampOutcome::Invalid(e.to_string());
            return report;
        }
    };
    report.time = Some(parsed.time());
    report.time_text = parsed.time_text();
    report.serial = parsed.serial();
    report.policy = parsed.policy();
    match parsed.verify(imprinted, extra) {
        Ok(cert) => {
            report.tsa = cert.tbs_certificate.subject.to_string();
            report.certificate = Some(cert);
            report.outcome = TimestampOutcome::Valid;
        }
        Err(why) => report.outcome = TimestampOutcome::Invalid(why),
    }
    report
}

impl TimestampReport {
    /// Checks the TSA certificate against `trust` at the stamped time; a TSA outside the
    /// trust anchors makes the outcome `Untrusted`.
    pub fn check_trust(&mut self, trust: &TrustStore) {
        if self.outcome != TimestampOutcome::Valid {
            return;
        }
        if let (Some(cert), Some(at)) = (&self.certificate, self.time) {
            if let Err(why) = trust.check(cert, at) {
                self.outcome = TimestampOutcome::Untrusted(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_prefix_cuts_padding_in_short_and_long_form() {
        assert_eq!(der_prefix(&[0x30, 0x01, 0x05, 0x00]), &[0x30, 0x01, 0x05]);
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        let mut padded = long.clone();
        padded.push(0);
        assert_eq!(der_prefix(&padded), &long[..]);
        // Truncated or odd headers are left alone.
        assert_eq!(der_prefix(&[0x30, 0x85, 1]), &[0x30, 0x85, 1]);
        assert_eq!(der_prefix(&[0x30, 0x09, 1]), &[0x30, 0x09, 1]);
    }

    #[test]
    fn query_carries_imprint_nonce_and_policy() {
        let der = query(
            b"signature",
            &QueryOptions {
                policy: Some("1.2.3.4".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let q = parse_query(&der).unwrap();
        assert_eq!(
            q.message_imprint.hashed_message.as_bytes(),
            MacAlgorithm::Sha256.digest(b"signature")
        );
        assert!(q.cert_req);
        assert_eq!(q.nonce.unwrap().as_bytes().len(), 8);
        assert_eq!(q.req_policy.unwrap().to_string(), "1.2.3.4");
        let again = parse_query(&query(b"signature", &QueryOptions::default()).unwrap()).unwrap();
        assert_ne!(again.nonce, parse_query(&der).unwrap().nonce);
    }

    #[test]
    fn a_refusal_is_reported_with_its_reasons() {
        // openssl ts -reply refusing under a concurrent serial-number update.
        let reply = [
            0x30, 0x35, 0x30, 0x33, 0x02, 0x01, 0x02, 0x30, 0x28, 0x0c, 0x26, b'E', b'r', b'r',
            b'o', b'r', b' ', b'd', b'u', b'r', b'i', b'n', b'g', b' ', b's', b'e', b'r', b'i',
            b'a', b'l', b' ', b'n', b'u', b'm', b'b', b'e', b'r', b' ', b'g', b'e', b'n', b'e',
            b'r', b'a', b't', b'i', b'o', b'n', b'.', 0x03, 0x04, 0x06, 0x00, 0x00, 0x40,
        ];
        match token_from_reply(&reply, None, None) {
            Err(TimestampError::Refused(why)) => {
                assert!(why.contains("status 2"), "{why}");
                assert!(why.contains("serial number generation"), "{why}");
                assert!(why.contains("additional information"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// `openssl ts -reply` lists the TSA's certificate twice when its `certs` file holds it
    /// too (see testdata/README.md). CMS permits that; the token is accepted and verifies,
    /// and its certificates are kept once each.
    #[test]
    fn a_token_listing_its_certificate_twice_is_accepted() {
        const STAMPED: &[u8] = b"radveil duplicate certificate regression";
        let reply = include_bytes!("testdata/duplicate-certificate.tsr");
        let query = parse_query(include_bytes!("testdata/duplicate-certificate.tsq")).unwrap();
        let token = token_from_reply(reply, Some(&query), Some(STAMPED)).unwrap();
        let parsed = Token::parse(&token).unwrap();
        let tsa = parsed.verify(STAMPED, &[]).unwrap();
        assert_eq!(
            tsa.tbs_certificate.subject.to_string(),
            "CN=radveil test TSA"
        );
        assert_eq!(
            parsed.certificates.len(),
            2,
            "the TSA's and its CA's, once each"
        );
        let report = check(CMS_TSP, &token, STAMPED, &[]);
        assert_eq!(report.outcome, TimestampOutcome::Valid);
        let mut trust = TrustStore::default();
        trust
            .add(include_bytes!("testdata/duplicate-certificate-ca.pem"))
            .unwrap();
        let mut report = report;
        report.check_trust(&trust);
        assert_eq!(report.outcome, TimestampOutcome::Valid);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Token::parse(b"").is_err());
        assert!(Token::parse(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(token_from_reply(b"\x30\x00", None, None).is_err());
        let r = check("CMS_TSP", b"junk", b"x", &[]);
        assert!(matches!(r.outcome, TimestampOutcome::Invalid(_)));
        let r = check("OTHER", b"junk", b"x", &[]);
        assert!(matches!(r.outcome, TimestampOutcome::Invalid(_)));
    }
}
