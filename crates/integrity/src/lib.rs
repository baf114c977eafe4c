//! DICOM digital signatures (PS3.15 Annex C, PS3.3 C.12.1.1.3 Digital Signatures Macro),
//! interoperable with DCMTK's `dcmsign`.
//!
//! A signature covers a list of Data Elements of one data set level (Data Elements Signed in
//! the MAC Parameters Sequence), encoded in the MAC Calculation Transfer Syntax in the
//! "signature format" of PS3.15 (sequence and item lengths and delimiters left out), followed
//! by attributes of the signature's own Digital Signatures Sequence item. Nothing of that is
//! stored: a verifier recomputes the stream from the data set as it is.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod advisory;
pub mod binding;
pub mod crypto;
pub mod envelope;
pub mod profile;
mod stream;
pub mod timestamp;
pub mod trust;

use std::borrow::Cow;

use radveil_part10::{DataSet, Element, Encoding, Value, Vr};
use radveil_standard::tags;

pub use binding::{binding_hash, binding_hash_with_budget, BindingError};
pub use crypto::{MacAlgorithm, Public, SignerCertificate, SignerIdentity};
pub use profile::SignatureProfile;
/// The pixel codecs, now in `radveil-pixeldata` (re-exported for existing callers).
pub use radveil_pixeldata::{codec, jpegls};
pub use stream::{signature_stream, StreamContext};
pub use timestamp::{TimestampOutcome, TimestampReport};
pub use trust::TrustStore;

/// Digital Signatures Sequence (FFFA,FFFA).
pub const DIGITAL_SIGNATURES_SEQUENCE: u32 = tags::DIGITAL_SIGNATURES_SEQUENCE;
/// MAC Parameters Sequence (4FFE,0001).
pub const MAC_PARAMETERS_SEQUENCE: u32 = tags::MAC_PARAMETERS_SEQUENCE;

/// Why signing or verification could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A key or certificate that cannot be used.
    #[error("{0}")]
    Key(String),
    /// The data set's signature attributes are malformed.
    #[error("malformed signature attributes: {0}")]
    Malformed(String),
}

/// The first group a signature may cover: groups 0000-0006 (command, file meta, directory)
/// are not part of a data set that is signed (PS3.3 C.12.1.1.3.1.1).
const FIRST_SIGNABLE_GROUP: u32 = 0x0008;

/// Whether a tag may be covered by a signature at all (PS3.3 C.12.1.1.3.1.1).
pub fn signable(tag: u32) -> bool {
    let group = tag >> 16;
    !(group < FIRST_SIGNABLE_GROUP
        || tag & 0xFFFF == 0
        || tag == tags::LENGTH_TO_END
        || group == DIGITAL_SIGNATURES_SEQUENCE >> 16
        || tag == MAC_PARAMETERS_SEQUENCE
        || tag == tags::DATA_SET_TRAILING_PADDING
        || group == radveil_part10::ITEM_GROUP)
}

fn contains_un(el: &Element<'_>) -> bool {
    match &el.value {
        Value::Sequence(items) => items.iter().any(|i| i.elements.iter().any(contains_un)),
        _ => el.vr == Vr::UN,
    }
}

fn contains_un_tag(ds: &DataSet<'_>, tag: u32) -> bool {
    ds.get(tag).is_some_and(contains_un)
}

/// Whether a valid signature satisfies `profile` for the data set it signs: made at the top
/// level with an RSA key and an allowed MAC, and covering every attribute the profile
/// requires. `Err` lists what is missing.
pub fn satisfies(
    report: &SignatureReport,
    ds: &DataSet<'_>,
    profile: SignatureProfile,
) -> Result<(), String> {
    if report.outcome != Outcome::Valid {
        return Err("the signature is not valid".into());
    }
    if !report.location.is_empty() {
        return Err("the signature is inside a sequence item, not on the object".into());
    }
    if let Some(mac) = report.mac {
        if !profile.allows(mac) {
            return Err(format!(
                "{} is not allowed by the {} profile",
                mac.term(),
                profile.name()
            ));
        }
    }
    let rsa = report
        .certificate
        .as_ref()
        .and_then(|c| Public::from_certificate(c).ok())
        .is_some_and(|p| matches!(p, Public::Rsa(_)));
    if !rsa {
        return Err(format!(
            "the {} profile requires an RSA signature",
            profile.name()
        ));
    }
    if let Some(why) = profile.inapplicable(ds) {
        return Err(format!(
            "{why}; the {} profile does not apply",
            profile.name()
        ));
    }
    let mut required = profile.required(ds);
    required.extend(profile.unconditional());
    required.sort_unstable();
    required.dedup();
    let missing: Vec<String> = required
        .into_iter()
        .filter(|t| !report.covered.contains(t))
        .map(|t| format!("({:04X},{:04X})", t >> 16, t & 0xFFFF))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "covers too little for the {} profile: missing {}",
            profile.name(),
            missing.join(" ")
        ))
    }
}

/// The tags a signature of "all elements" covers at the top level of `ds`: every signable
/// element, leaving out UN elements and sequences containing UN anywhere.
pub fn all_signable_tags(ds: &DataSet<'_>) -> Vec<u32> {
    ds.elements
        .iter()
        .filter(|e| signable(e.tag) && !contains_un(e))
        .map(|e| e.tag)
        .collect()
}

/// What a new signature should be.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The MAC algorithm.
    pub mac: MacAlgorithm,
    /// The tags to sign (top level); `None` signs every signable element.
    pub tags: Option<Vec<u32>>,
    /// The Digital Signature UID (a new UID).
    pub uid: String,
    /// The signature date and time (DT).
    pub datetime: String,
    /// A Digital Signature Purpose code (CID 7007 code value, scheme ASTM-sigpurpose).
    pub purpose: Option<String>,
    /// A PS3.15 Annex C profile whose required attributes are added to the signed ones.
    pub profile: Option<SignatureProfile>,
}

fn text(tag: u32, vr: Vr, v: &str) -> Element<'static> {
    Element::text(tag, vr, v)
}

fn bytes(tag: u32, vr: Vr, v: Vec<u8>) -> Element<'static> {
    let mut v = v;
    if v.len() % 2 == 1 {
        v.push(0);
    }
    Element {
        tag,
        vr,
        value: Value::Bytes(Cow::Owned(v)),
    }
}

fn us(tag: u32, v: u16, enc: Encoding) -> Element<'static> {
    let b = if enc == Encoding::ExplicitBig {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    };
    bytes(tag, Vr::US, b.to_vec())
}

fn items<'d, 'a>(ds: &'d DataSet<'a>, tag: u32) -> &'d [DataSet<'a>] {
    match ds.get(tag).map(|e| &e.value) {
        Some(Value::Sequence(items)) => items,
        _ => &[],
    }
}

/// Adds a signature to `ds` (the top level of an object, or a sequence item): a MAC
/// Parameters item and a Digital Signatures item with the signer's certificate.
/// `enc` is the encoding of the data set as stored (for binary values we write).
pub fn sign(
    ds: &mut DataSet<'_>,
    signer: &SignerIdentity,
    request: &SignRequest,
    enc: Encoding,
    transfer_syntax: &str,
) -> Result<(), SignatureError> {
    let tags = match &request.tags {
        Some(t) => {
            let mut t: Vec<u32> = t
                .iter()
                .copied()
                .filter(|&t| signable(t) && ds.get(t).is_some())
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        }
        None => all_signable_tags(ds),
    };
    let tags = match request.profile {
        Some(p) => {
            if let Some(why) = p.inapplicable(ds) {
                return Err(SignatureError::Malformed(format!(
                    "{why}; the {} profile does not apply",
                    p.name()
                )));
            }
            if !p.allows(request.mac) {
                return Err(SignatureError::Key(format!(
                    "the {} profile does not allow {}",
                    p.name(),
                    request.mac.term()
                )));
            }
            // The Creator, Authorization and SR profiles sign every signable attribute: always
            // a superset of what they require, and what dcmsign's profile checks accept.
            let mut t = tags;
            if p != SignatureProfile::Base {
                t.extend(all_signable_tags(ds));
            }
            t.extend(
                p.required(ds)
                    .into_iter()
                    .filter(|t| !contains_un_tag(ds, *t)),
            );
            t.sort_unstable();
            t.dedup();
            t
        }
        None => tags,
    };
    if tags.is_empty() {
        return Err(SignatureError::Malformed("nothing to sign".into()));
    }
    // The next free MAC ID Number.
    let mac_id = items(ds, MAC_PARAMETERS_SEQUENCE)
        .iter()
        .filter_map(|i| i.u16_value(tags::MACID_NUMBER, enc))
        .max()
        .map_or(0, |m| m + 1);
    let mut mac_item = DataSet::default();
    mac_item.put(us(tags::MACID_NUMBER, mac_id, enc));
    mac_item.put(text(
        tags::MAC_CALCULATION_TRANSFER_SYNTAX_UID,
        Vr::UI,
        mac_transfer_syntax(transfer_syntax),
    ));
    mac_item.put(text(tags::MAC_ALGORITHM, Vr::CS, request.mac.term()));
    let mut at = Vec::with_capacity(tags.len() * 4);
    for t in &tags {
        let (g, e) = ((t >> 16) as u16, *t as u16);
        if enc == Encoding::ExplicitBig {
            at.extend_from_slice(&g.to_be_bytes());
            at.extend_from_slice(&e.to_be_bytes());
        } else {
            at.extend_from_slice(&g.to_le_bytes());
            at.extend_from_slice(&e.to_le_bytes());
        }
    }
    mac_item.put(bytes(tags::DATA_ELEMENTS_SIGNED, Vr::AT, at));

    let mut sig_item = DataSet::default();
    sig_item.put(us(tags::MACID_NUMBER, mac_id, enc));
    sig_item.put(text(tags::DIGITAL_SIGNATURE_UID, Vr::UI, &request.uid));
    sig_item.put(text(
        tags::DIGITAL_SIGNATURE_DATE_TIME,
        Vr::DT,
        &request.datetime,
    ));
    sig_item.put(text(tags::CERTIFICATE_TYPE, Vr::CS, "X509_1993_SIG"));
    sig_item.put(bytes(
        tags::CERTIFICATE_OF_SIGNER,
        Vr::OB,
        signer.certificate().to_vec(),
    ));
    if let Some(code) = &request.purpose {
        let mut c = DataSet::default();
        c.put(text(tags::CODE_VALUE, Vr::SH, code));
        c.put(text(
            tags::CODING_SCHEME_DESIGNATOR,
            Vr::SH,
            "ASTM-sigpurpose",
        ));
        c.put(text(tags::CODE_MEANING, Vr::LO, purpose_meaning(code)));
        sig_item.put(Element {
            tag: tags::DIGITAL_SIGNATURE_PURPOSE_CODE_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(vec![c]),
        });
    }
    let stream = signature_stream(ds, &tags, &sig_item, StreamContext::of(ds, enc))?;
    let signature = signer.sign_stream(request.mac, &stream)?;
    sig_item.put(bytes(tags::SIGNATURE, Vr::OB, signature));

    append_item(ds, MAC_PARAMETERS_SEQUENCE, mac_item);
    append_item(ds, DIGITAL_SIGNATURES_SEQUENCE, sig_item);
    Ok(())
}

/// The MAC Calculation Transfer Syntax for an object stored in `transfer_syntax`: Explicit
/// VR Little Endian for native syntaxes; the object's own syntax when its pixel data is
/// encapsulated (which Explicit VR Little Endian cannot represent), as dcmsign does.
pub fn mac_transfer_syntax(transfer_syntax: &str) -> &str {
    use radveil_part10::{
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    };
    match transfer_syntax {
        IMPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_LITTLE_ENDIAN
        | EXPLICIT_VR_BIG_ENDIAN
        | DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => EXPLICIT_VR_LITTLE_ENDIAN,
        other => other,
    }
}

fn append_item(ds: &mut DataSet<'_>, tag: u32, item: DataSet<'static>) {
    match ds.get_mut(tag) {
        Some(Element {
            value: Value::Sequence(items),
            ..
        }) => items.push(item),
        _ => ds.put(Element {
            tag,
            vr: Vr::SQ,
            value: Value::Sequence(vec![item]),
        }),
    }
}

/// CID 7007 Signature Purpose code meanings (ASTM E1762).
pub fn purpose_meaning(code: &str) -> &'static str {
    match code {
        "1" => "Author's Signature",
        "2" => "Coauthor's Signature",
        "3" => "Co-participant's Signature",
        "4" => "Transcriptionist/Recorder Signature",
        "5" => "Verification Signature",
        "6" => "Validation Signature",
        "7" => "Consent Signature",
        "8" => "Signature Witness Signature",
        "9" => "Event Witness Signature",
        "10" => "Identity Witness Signature",
        "11" => "Consent Witness Signature",
        "12" => "Interpreter Signature",
        "13" => "Review Signature",
        "14" => "Source Signature",
        "15" => "Addendum Signature",
        "16" => "Modification Signature",
        "17" => "Administrative (Error/Edit) Signature",
        "18" => "Timestamp Signature",
        _ => "Signature",
    }
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The signature verifies over the data set as it is (and its signer is trusted, when
    /// trust anchors were given).
    Valid,
    /// The signature verifies, but its signer is not trusted: why.
    Untrusted(String),
    /// The signature does not verify: something it covers changed.
    Invalid(String),
}

/// What one signature covers and whether it verifies.
#[derive(Debug, Clone)]
pub struct SignatureReport {
    /// Path of sequence tags/item indexes to the signed level ("" for the top level).
    pub location: String,
    /// Digital Signature UID.
    pub uid: String,
    /// MAC algorithm.
    pub mac: Option<MacAlgorithm>,
    /// Digital Signature DateTime.
    pub datetime: String,
    /// The tags covered at that level.
    pub covered: Vec<u32>,
    /// The signer's certificate subject.
    pub signer: String,
    /// SHA-256 fingerprint of the signer certificate.
    pub fingerprint: String,
    /// The signer certificate, when it parsed.
    pub certificate: Option<x509_cert::Certificate>,
    /// Purpose code value, if any.
    pub purpose: Option<String>,
    /// The signature's certified timestamp (RFC 3161), when it has one.
    pub timestamp: Option<TimestampReport>,
    /// Whether it verifies (a certified timestamp that fails makes the signature fail).
    pub outcome: Outcome,
}

/// Verifies every signature in `ds` and in its sequence items, recursively, with their
/// certified timestamps.
pub fn verify(ds: &DataSet<'_>, enc: Encoding) -> Vec<SignatureReport> {
    let mut out = Vec::new();
    verify_level(ds, enc, StreamContext::of(ds, enc), "", &[], &mut out);
    out
}

/// Verifies like [`verify`], then checks each valid signature's signer against `trust`:
/// at the certified timestamp's time when the signature has a valid one (the TSA's clock,
/// not the signer's), else at the signature's own date and time (or `now`, Unix seconds,
/// when it has none). A timestamp's TSA is checked against `trust` too.
pub fn verify_trusted(
    ds: &DataSet<'_>,
    enc: Encoding,
    trust: &TrustStore,
    now: i64,
) -> Vec<SignatureReport> {
    let mut reports = Vec::new();
    let extra = trust.certificates();
    verify_level(
        ds,
        enc,
        StreamContext::of(ds, enc),
        "",
        &extra,
        &mut reports,
    );
    for r in &mut reports {
        if r.outcome != Outcome::Valid {
            continue;
        }
        let stamped = r
            .timestamp
            .as_ref()
            .filter(|t| t.outcome == TimestampOutcome::Valid)
            .and_then(|t| t.time);
        let at = stamped
            .or_else(|| trust::parse_dt(&r.datetime))
            .unwrap_or(now);
        if let Some(cert) = &r.certificate {
            if let Err(why) = trust.check(cert, at) {
                r.outcome = Outcome::Untrusted(why);
                continue;
            }
        }
        if let Some(t) = &mut r.timestamp {
            t.check_trust(trust);
            if let TimestampOutcome::Untrusted(why) = &t.outcome {
                r.outcome = Outcome::Untrusted(format!("timestamp authority: {why}"));
            }
        }
    }
    reports
}

fn verify_level(
    ds: &DataSet<'_>,
    enc: Encoding,
    ctx: StreamContext,
    location: &str,
    extra: &[x509_cert::Certificate],
    out: &mut Vec<SignatureReport>,
) {
    let macs = items(ds, MAC_PARAMETERS_SEQUENCE);
    for sig in items(ds, DIGITAL_SIGNATURES_SEQUENCE) {
        let mut report = verify_one(ds, sig, macs, enc, ctx, location);
        check_timestamp(sig, extra, &mut report);
        out.push(report);
    }
    for el in &ds.elements {
        if el.tag == DIGITAL_SIGNATURES_SEQUENCE || el.tag == MAC_PARAMETERS_SEQUENCE {
            continue;
        }
        if let Value::Sequence(items) = &el.value {
            for (i, item) in items.iter().enumerate() {
                let loc = format!(
                    "{location}({:04X},{:04X})[{i}]/",
                    el.tag >> 16,
                    el.tag & 0xFFFF
                );
                verify_level(item, enc, ctx, &loc, extra, out);
            }
        }
    }
}

fn verify_one(
    ds: &DataSet<'_>,
    sig: &DataSet<'_>,
    macs: &[DataSet<'_>],
    enc: Encoding,
    ctx: StreamContext,
    location: &str,
) -> SignatureReport {
    let mut report = SignatureReport {
        location: location.to_string(),
        uid: sig.string(tags::DIGITAL_SIGNATURE_UID).unwrap_or_default(),
        mac: None,
        datetime: sig
            .string(tags::DIGITAL_SIGNATURE_DATE_TIME)
            .unwrap_or_default(),
        covered: Vec::new(),
        signer: String::new(),
        fingerprint: String::new(),
        certificate: None,
        purpose: items(sig, tags::DIGITAL_SIGNATURE_PURPOSE_CODE_SEQUENCE)
            .first()
            .and_then(|c| c.string(tags::CODE_VALUE)),
        timestamp: None,
        outcome: Outcome::Invalid(String::new()),
    };
    let result = (|| -> Result<(), String> {
        let id = sig
            .u16_value(tags::MACID_NUMBER, enc)
            .ok_or("no MAC ID Number")?;
        let mac_item = macs
            .iter()
            .find(|m| m.u16_value(tags::MACID_NUMBER, enc) == Some(id))
            .ok_or("no MAC Parameters item with its MAC ID Number")?;
        let mac = mac_item
            .string(tags::MAC_ALGORITHM)
            .and_then(|a| MacAlgorithm::from_term(&a))
            .ok_or("unknown MAC Algorithm")?;
        report.mac = Some(mac);
        let ts = mac_item
            .string(tags::MAC_CALCULATION_TRANSFER_SYNTAX_UID)
            .unwrap_or_default();
        let parsed = radveil_part10::TransferSyntax::from_uid(&ts);
        if ts.is_empty() || parsed.encoding != Encoding::ExplicitLittle || parsed.deflated {
            // The value itself is not echoed: it comes from the file.
            return Err(
                "MAC Calculation Transfer Syntax UID (0400,0010) is not Explicit VR Little Endian"
                    .into(),
            );
        }
        let at = mac_item
            .get(tags::DATA_ELEMENTS_SIGNED)
            .and_then(|e| e.bytes())
            .ok_or("no Data Elements Signed")?;
        let tags: Vec<u32> = at
            .chunks_exact(4)
            .map(|c| {
                if enc == Encoding::ExplicitBig {
                    ((u16::from_be_bytes([c[0], c[1]]) as u32) << 16)
                        | u16::from_be_bytes([c[2], c[3]]) as u32
                } else {
                    ((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)
                        | u16::from_le_bytes([c[2], c[3]]) as u32
                }
            })
            .collect();
        report.covered = tags.clone();
        let cert_der = sig
            .get(tags::CERTIFICATE_OF_SIGNER)
            .and_then(|e| e.bytes())
            .ok_or("no Certificate of Signer")?;
        let cert = SignerCertificate::from_der(cert_der).map_err(|e| e.to_string())?;
        report.signer = cert.subject();
        report.fingerprint = cert.fingerprint();
        report.certificate = Some(cert.certificate.clone());
        let signature = sig
            .get(tags::SIGNATURE)
            .and_then(|e| e.bytes())
            .ok_or("no Signature")?;
        let stream = signature_stream(ds, &tags, sig, ctx).map_err(|e| e.to_string())?;
        let digest = mac.digest(&stream);
        if cert.public.verify_digest(mac, &digest, signature) {
            Ok(())
        } else {
            Err("signature does not match the data set: a signed attribute was changed".into())
        }
    })();
    report.outcome = match result {
        Ok(()) => Outcome::Valid,
        Err(e) => Outcome::Invalid(e),
    };
    report
}

/// Checks the certified timestamp of a signature that verified: the token must stamp this
/// signature and fall within the signer certificate's validity (as dcmsign requires); one
/// that fails makes the signature fail.
fn check_timestamp(sig: &DataSet<'_>, extra: &[x509_cert::Certificate], r: &mut SignatureReport) {
    let kind = sig.string(timestamp::CERTIFIED_TIMESTAMP_TYPE);
    let token = sig
        .get(timestamp::CERTIFIED_TIMESTAMP)
        .and_then(|e| e.bytes());
    let (kind, token) = match (kind, token) {
        (None, None) => return,
        (k, t) => (k.unwrap_or_default(), t.unwrap_or_default()),
    };
    let (Some(cert), Some(signature)) = (
        &r.certificate,
        sig.get(tags::SIGNATURE).and_then(|e| e.bytes()),
    ) else {
        return;
    };
    let Ok(public) = Public::from_certificate(cert) else {
        return;
    };
    let imprinted = timestamp::imprinted_signature(signature, &public);
    let mut t = timestamp::check(&kind, token, imprinted, extra);
    if let (TimestampOutcome::Valid, Some(at)) = (&t.outcome, t.time) {
        if trust::valid_at(cert, at).is_err() {
            t.outcome = TimestampOutcome::Invalid(
                "stamped outside the signer certificate's validity".into(),
            );
        }
    }
    if r.outcome == Outcome::Valid {
        if let TimestampOutcome::Invalid(why) = &t.outcome {
            r.outcome = Outcome::Invalid(format!("certified timestamp: {why}"));
        }
    }
    r.timestamp = Some(t);
}

/// Inserts a certified timestamp `token` (DER) into the Digital Signatures item of `ds`
/// (searched at every level) whose signature it stamps, as dcmsign's `--insert-timestamp`
/// does. Returns the Digital Signature UID it went to. A signature that already has a
/// timestamp is left alone.
pub fn insert_timestamp(
    ds: &mut DataSet<'_>,
    token: &[u8],
) -> Result<String, timestamp::TimestampError> {
    let parsed = timestamp::Token::parse(token)?;
    let mut found = None;
    find_stamped(ds, &parsed, token, &mut found);
    found.ok_or_else(|| {
        timestamp::TimestampError::Mismatch(
            "no signature without a timestamp in this file has the reply's imprint".into(),
        )
    })
}

fn find_stamped(
    ds: &mut DataSet<'_>,
    token: &timestamp::Token,
    der: &[u8],
    found: &mut Option<String>,
) {
    for el in ds.elements.iter_mut() {
        if found.is_some() {
            return;
        }
        let Value::Sequence(items) = &mut el.value else {
            continue;
        };
        let is_sigs = el.tag == DIGITAL_SIGNATURES_SEQUENCE;
        for item in items.iter_mut() {
            if is_sigs && item.get(timestamp::CERTIFIED_TIMESTAMP).is_none() {
                if let Some(uid) = stamps(item, token) {
                    item.put(text(
                        timestamp::CERTIFIED_TIMESTAMP_TYPE,
                        Vr::CS,
                        timestamp::CMS_TSP,
                    ));
                    item.put(bytes(timestamp::CERTIFIED_TIMESTAMP, Vr::OB, der.to_vec()));
                    *found = Some(uid);
                    return;
                }
            }
            find_stamped(item, token, der, found);
        }
    }
}

/// The UID of the signature in `sig` when `token` stamps it.
fn stamps(sig: &DataSet<'_>, token: &timestamp::Token) -> Option<String> {
    let signature = sig.get(tags::SIGNATURE)?.bytes()?;
    let cert = SignerCertificate::from_der(sig.get(tags::CERTIFICATE_OF_SIGNER)?.bytes()?).ok()?;
    let imprinted = timestamp::imprinted_signature(signature, &cert.public);
    let mac = timestamp::digest_for_oid(&token.info.message_imprint.hash_algorithm.oid)?;
    (mac.digest(imprinted) == token.info.message_imprint.hashed_message.as_bytes())
        .then(|| sig.string(tags::DIGITAL_SIGNATURE_UID).unwrap_or_default())
}

/// Timestamp queries for the signatures in `ds` (at every level) that have no timestamp
/// yet: (Digital Signature UID, DER TimeStampReq).
pub fn timestamp_queries(
    ds: &DataSet<'_>,
    options: &timestamp::QueryOptions,
) -> Result<Vec<(String, Vec<u8>)>, timestamp::TimestampError> {
    let mut out = Vec::new();
    collect_queries(ds, options, &mut out)?;
    Ok(out)
}

fn collect_queries(
    ds: &DataSet<'_>,
    options: &timestamp::QueryOptions,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), timestamp::TimestampError> {
    for el in &ds.elements {
        let Value::Sequence(items) = &el.value else {
            continue;
        };
        for item in items {
            if el.tag == DIGITAL_SIGNATURES_SEQUENCE
                && item.get(timestamp::CERTIFIED_TIMESTAMP).is_none()
            {
                let signature = item.get(tags::SIGNATURE).and_then(|e| e.bytes());
                let cert = item
                    .get(tags::CERTIFICATE_OF_SIGNER)
                    .and_then(|e| e.bytes())
                    .and_then(|c| SignerCertificate::from_der(c).ok());
                if let (Some(signature), Some(cert)) = (signature, cert) {
                    let imprinted = timestamp::imprinted_signature(signature, &cert.public);
                    out.push((
                        item.string(tags::DIGITAL_SIGNATURE_UID).unwrap_or_default(),
                        timestamp::query(imprinted, options)?,
                    ));
                }
            }
            collect_queries(item, options, out)?;
        }
    }
    Ok(())
}
