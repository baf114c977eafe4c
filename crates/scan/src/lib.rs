//! Residual risk of a de-identified DICOM set, whoever made it (`radveil scan`).
//!
//! Every element of every file is read (file meta, all sequence depths, private elements,
//! UN values the dictionary says are sequences, encapsulated documents); text is decoded in
//! its data set's Specific Character Set and checked with the detectors radveil's own
//! cleaning uses ([`radveil_deid::clean`]) and a few a reviewer needs besides:
//!
//! - person names: PN values that are not dummies or pseudonyms, a title followed by a
//!   name (`Dr Smith`), and names or IDs of the object's own PN and ID values found in
//!   other text;
//! - dates (written in any order, with month names, or as digits), phone numbers, street
//!   addresses, e-mail addresses, runs of five or more digits (record numbers);
//! - attributes PS3.15 Annex E says must be removed or emptied (X and Z) under the options
//!   the file itself declares (De-identification Method Code Sequence), present with a value;
//! - UIDs under a known vendor or organisation root (unless Retain UIDs is declared).
//!
//! A finding names the element by its tag path and the kind of what was found, never the
//! value. [`quasi`] computes the k-anonymity of the quasi-identifiers across patients.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod quasi;

use std::borrow::Cow;
use std::collections::BTreeSet;

use radveil_deid::clean::{self, PhiTokens};
use radveil_part10::charset::CharacterSet;
use radveil_part10::{self as part10, DataSet, Element, Encoding, Limits, Value, Vr};
use radveil_standard::{self as standard, tags, BasicAction, OptionAction, ProfileOption};
use serde::Serialize;

/// What kind of residual identifier a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A person's name.
    PersonName,
    /// A date.
    Date,
    /// A phone number.
    Phone,
    /// A street address.
    Address,
    /// An e-mail address.
    Email,
    /// A record number or other identifier.
    Identifier,
    /// An attribute Annex E says must be removed (X) or emptied (Z), with a value.
    MustGo,
    /// A UID under a known vendor or organisation root.
    VendorUid,
    /// Text that does not decode in its character set (cannot be checked).
    Undecodable,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 9] = [
        Kind::PersonName,
        Kind::Date,
        Kind::Phone,
        Kind::Address,
        Kind::Email,
        Kind::Identifier,
        Kind::MustGo,
        Kind::VendorUid,
        Kind::Undecodable,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PersonName => "person-name",
            Kind::Date => "date",
            Kind::Phone => "phone",
            Kind::Address => "address",
            Kind::Email => "email",
            Kind::Identifier => "identifier",
            Kind::MustGo => "must-go",
            Kind::VendorUid => "vendor-uid",
            Kind::Undecodable => "undecodable",
        }
    }
}

/// One residual identifier: where (tag path) and what kind; never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Tag path, items numbered from 1: `(0040,A730)[2]>(0040,A160)`; `meta>` for the file
    /// meta group.
    pub path: String,
    /// What was found.
    pub kind: Kind,
}

/// Why a file could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Not a DICOM Part 10 file, or malformed.
    #[error("not a readable DICOM file: {0}")]
    Read(#[from] part10::Error),
}

/// What one file holds.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Residual identifiers, sorted.
    pub findings: Vec<Finding>,
    /// The file's quasi-identifiers, for [`quasi::k_anonymity`].
    pub quasi: quasi::Record,
}

/// Known roots of vendors and organisations whose UIDs reveal where an object was made
/// (and link it to the original): device makers, PACS and toolkit roots, and the IANA
/// private-enterprise arc. UIDs made from UUIDs (`2.25.`) and the standard's own
/// (`1.2.840.10008.`) are not listed.
pub const VENDOR_ROOTS: &[&str] = &[
    "1.2.840.113619.",      // GE Healthcare
    "1.3.12.2.1107.",       // Siemens
    "1.3.46.670589.",       // Philips
    "1.2.840.113704.",      // Philips (Picker, Marconi)
    "1.2.392.200036.",      // Japanese vendors (Canon/Toshiba, Hitachi, Fujifilm, Konica)
    "1.2.124.113532.",      // Agfa
    "1.2.840.113564.",      // Agfa (Mitra)
    "1.2.840.113681.",      // Hologic
    "1.2.840.113663.",      // Carestream / Kodak
    "1.2.246.352.",         // Varian
    "1.3.46.423632.",       // Elekta
    "1.2.840.113669.",      // Merge
    "1.2.826.0.1.3680043.", // Medical Connections (pydicom's default root among others)
    "1.2.276.0.7230010.",   // OFFIS (DCMTK)
    "1.2.40.0.13.",         // dcm4che
    "1.3.6.1.4.1.",         // IANA private enterprises
];

/// Person-name values that stand for nobody.
const DUMMY_NAMES: &[&str] = &[
    "anon",
    "anonymous",
    "anonymized",
    "anonymised",
    "removed",
    "deidentified",
    "unknown",
    "none",
    "patient",
    "redacted",
    "test",
];

/// Scans one Part 10 file's bytes (the part before a trailing Pixel Data element is
/// enough: pixel data is not text), with the reader's default limits.
pub fn scan(file: &[u8]) -> Result<Scanned, ScanError> {
    let mut inflated = Vec::new();
    let (meta, ds, _) = part10::read_file(file, &mut inflated, Limits::default())?;
    Ok(scan_parsed(&meta.elements, &ds))
}

/// [`scan`], charging an inflated data set and the element tree to `grant` (a deflate
/// bomb or a tree of tiny elements fails its file instead of exhausting memory).
pub fn scan_in(file: &[u8], grant: &mut part10::Grant<'_>) -> Result<Scanned, ScanError> {
    let mut inflated = Vec::new();
    let (meta, ds, _) = part10::read_file_in(file, &mut inflated, Limits::default(), grant)?;
    Ok(scan_parsed(&meta.elements, &ds))
}

fn scan_parsed(meta: &DataSet<'_>, ds: &DataSet<'_>) -> Scanned {
    let options = declared_options(ds);
    let mut s = Scanner {
        findings: BTreeSet::new(),
        options,
        tokens: PhiTokens::default(),
        id_tokens: PhiTokens::default(),
        charset: CharacterSet::default(),
        path: Vec::new(),
    };
    s.collect(ds);
    s.charset = CharacterSet::default();
    s.path.push("meta".into());
    s.dataset(meta);
    s.path.clear();
    s.dataset(ds);
    Scanned {
        findings: s.findings.into_iter().collect(),
        quasi: quasi::Record::of(ds),
    }
}

/// The Annex E options the object says were applied (CID 7050 codes in De-identification
/// Method Code Sequence).
fn declared_options(ds: &DataSet<'_>) -> BTreeSet<ProfileOption> {
    let mut out = BTreeSet::new();
    if let Some(Value::Sequence(items)) = ds
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .map(|e| &e.value)
    {
        for item in items {
            let code = item.string(tags::CODE_VALUE).unwrap_or_default();
            if let Some(o) = ProfileOption::ALL
                .into_iter()
                .find(|o| o.code().0 == code.trim())
            {
                out.insert(o);
            }
        }
    }
    out
}

struct Scanner {
    findings: BTreeSet<Finding>,
    options: BTreeSet<ProfileOption>,
    /// Names in the object's PN values that look real.
    tokens: PhiTokens,
    /// The object's IDs (Patient ID, Other Patient IDs, Accession Number).
    id_tokens: PhiTokens,
    charset: CharacterSet,
    path: Vec<String>,
}

impl Scanner {
    fn find(&mut self, kind: Kind) {
        self.findings.insert(Finding {
            path: self.path.join(">"),
            kind,
        });
    }

    /// The object's own names and IDs, to find them again in other text.
    fn collect(&mut self, ds: &DataSet<'_>) {
        let here = CharacterSet::of(ds, &self.charset);
        let outer = std::mem::replace(&mut self.charset, here);
        for el in &ds.elements {
            match &el.value {
                Value::Sequence(items) => items.iter().for_each(|i| self.collect(i)),
                Value::Bytes(b) if el.vr == Vr::PN => {
                    let text = clean::decode_for_cleaning(&self.charset, b).text();
                    for v in text.split('\\').filter(|v| looks_like_a_name(v)) {
                        self.tokens.add_person_name(v);
                    }
                }
                Value::Bytes(b)
                    if matches!(
                        el.tag,
                        tags::PATIENT_ID | tags::OTHER_PATIENT_IDS | tags::ACCESSION_NUMBER
                    ) =>
                {
                    let text = clean::decode_for_cleaning(&self.charset, b).text();
                    for v in text.split('\\') {
                        if v.trim().chars().filter(char::is_ascii_digit).count() >= 3 {
                            self.id_tokens.add(v, false);
                        }
                    }
                }
                _ => {}
            }
        }
        self.charset = outer;
    }

    fn dataset(&mut self, ds: &DataSet<'_>) {
        let here = CharacterSet::of(ds, &self.charset);
        let outer = std::mem::replace(&mut self.charset, here);
        for el in &ds.elements {
            self.path.push(part10::tag_name(el.tag));
            self.element(el);
            self.path.pop();
        }
        self.charset = outer;
    }

    fn items(&mut self, items: &[DataSet<'_>]) {
        for (i, item) in items.iter().enumerate() {
            if let Some(last) = self.path.last_mut() {
                let base = last.split('[').next().unwrap_or_default().to_string();
                *last = format!("{base}[{}]", i + 1);
            }
            self.dataset(item);
        }
    }

    fn element(&mut self, el: &Element<'_>) {
        if el.tag & 0xFFFF == 0 || is_code_attribute(el.tag) {
            return;
        }
        let vr = semantic_vr(el);
        self.must_go(el);
        match &el.value {
            Value::Sequence(items) => self.items(items),
            Value::Fragments(_) => {}
            Value::Bytes(b) if vr == Vr::SQ => {
                // A sequence read as UN (implicit VR, or an unknown VR): its items parsed.
                if let Ok(items) =
                    part10::read_items(b, Encoding::ImplicitLittle, Limits::default())
                {
                    self.items(&items);
                }
            }
            Value::Bytes(b) => self.value(el, vr, b),
        }
    }

    /// Annex E's X and Z attributes, under the declared options, present with a value.
    fn must_go(&mut self, el: &Element<'_>) {
        let Some(row) = standard::profile_row(el.tag) else {
            return;
        };
        let empty = match &el.value {
            Value::Bytes(b) => part10::trim_text(b).is_empty(),
            Value::Sequence(items) => items.is_empty(),
            Value::Fragments(f) => f.is_empty(),
        };
        if empty {
            return;
        }
        let option = ProfileOption::ALL
            .iter()
            .enumerate()
            .filter(|(_, o)| self.options.contains(o))
            .filter_map(|(i, _)| row.options[i])
            .fold(None, |acc, a| match (acc, a) {
                (Some(OptionAction::K), _) | (_, OptionAction::K) => Some(OptionAction::K),
                _ => Some(a),
            });
        // X: removed whatever the IOD; present with a value, it should not be. (Z and D
        // allow a dummy value, which cannot be told from a real one here: their names,
        // dates and IDs are what the other detectors look for.)
        if option.is_none() && row.basic == BasicAction::X {
            self.find(Kind::MustGo);
        }
    }

    fn value(&mut self, el: &Element<'_>, vr: Vr, b: &[u8]) {
        let retained_dates = self.options.contains(&ProfileOption::RetainLongFullDates)
            || self
                .options
                .contains(&ProfileOption::RetainLongModifiedDates);
        match vr {
            Vr::UI => {
                // Instance UIDs (those Annex E replaces), private and unknown ones; class,
                // syntax and coding-scheme UIDs name no one.
                let instance = el.is_private()
                    || standard::dictionary_entry(el.tag).is_none()
                    || standard::profile_row(el.tag)
                        .is_some_and(|r| matches!(r.basic, BasicAction::U | BasicAction::XZU));
                if instance && !self.options.contains(&ProfileOption::RetainUids) {
                    let text = String::from_utf8_lossy(part10::trim_text(b)).into_owned();
                    if text
                        .split('\\')
                        .any(|u| VENDOR_ROOTS.iter().any(|r| u.trim().starts_with(r)))
                    {
                        self.find(Kind::VendorUid);
                    }
                }
            }
            Vr::DA | Vr::DT => {
                let text = String::from_utf8_lossy(part10::trim_text(b)).into_owned();
                let real = text.split('\\').any(|d| {
                    let d = d.trim();
                    !d.is_empty() && !d.starts_with("19000101") && !d.starts_with("00000000")
                });
                if real && !retained_dates {
                    self.find(Kind::Date);
                }
            }
            Vr::PN => {
                let text = clean::decode_for_cleaning(&self.charset, b).text();
                if text.split('\\').any(looks_like_a_name) {
                    self.find(Kind::PersonName);
                }
            }
            _ if is_text(vr) || el.tag == tags::ENCAPSULATED_DOCUMENT || printable(vr, b) => {
                self.text(el, vr, b);
            }
            _ => {}
        }
    }

    fn text(&mut self, el: &Element<'_>, vr: Vr, b: &[u8]) {
        // A PDF's text is mostly in Flate-compressed streams: those are read too.
        let inflated;
        let b = if el.tag == tags::ENCAPSULATED_DOCUMENT && b.starts_with(b"%PDF") {
            inflated = pdf_text(b);
            &inflated[..]
        } else {
            b
        };
        let decoded = if el.tag == tags::ENCAPSULATED_DOCUMENT {
            // A document (CDA, text, PDF): read as UTF-8 where it is, else Latin-1.
            let set = CharacterSet::from_terms([if std::str::from_utf8(b).is_ok() {
                "ISO_IR 192"
            } else {
                "ISO_IR 100"
            }])
            .unwrap_or_default();
            set.decode(b)
        } else {
            clean::decode_for_cleaning(&self.charset, b)
        };
        if decoded.undecodable > 0 && el.tag != tags::ENCAPSULATED_DOCUMENT {
            self.find(Kind::Undecodable);
        }
        if written_by_people(el, vr) {
            let found = clean::find_patterns(&decoded.chars);
            if found.dates {
                self.find(Kind::Date);
            }
            if found.emails {
                self.find(Kind::Email);
            }
            if found.phones {
                self.find(Kind::Phone);
            }
            if found.numbers {
                self.find(Kind::Identifier);
            }
            if found.addresses {
                self.find(Kind::Address);
            }
            if found.titled_names || found.names {
                self.find(Kind::PersonName);
            }
        }
        // The object's own names and IDs elsewhere.
        let is_source = el.vr == Vr::PN
            || matches!(
                el.tag,
                tags::PATIENT_ID | tags::OTHER_PATIENT_IDS | tags::ACCESSION_NUMBER
            );
        if !is_source {
            let mut copy = b.to_vec();
            if !self.tokens.is_empty()
                && clean::scrub(&mut copy, &self.charset, Some(&self.tokens), false).changed
            {
                self.find(Kind::PersonName);
            }
            let mut copy = b.to_vec();
            if !self.id_tokens.is_empty()
                && clean::scrub(&mut copy, &self.charset, Some(&self.id_tokens), false).changed
            {
                self.find(Kind::Identifier);
            }
        }
    }
}

/// Most bytes a PDF's streams may inflate to, all together (bounded work per file).
const PDF_INFLATE_LIMIT: u64 = 16 << 20;

/// A PDF's bytes followed by its Flate streams inflated (up to [`PDF_INFLATE_LIMIT`] in
/// all; a stream that does not inflate is skipped): text drawn with `(John Smith) Tj` is
/// then plain to the detectors.
fn pdf_text(pdf: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = pdf.to_vec();
    let mut left = PDF_INFLATE_LIMIT;
    let mut at = 0;
    while left > 0 {
        let Some(s) = find(&pdf[at..], b"stream") else {
            break;
        };
        let mut start = at + s + b"stream".len();
        if pdf.get(start) == Some(&b'\r') {
            start += 1;
        }
        if pdf.get(start) == Some(&b'\n') {
            start += 1;
        }
        let Some(e) = find(&pdf[start..], b"endstream") else {
            break;
        };
        let body = &pdf[start..start + e];
        at = start + e + b"endstream".len();
        let mut inflated = Vec::new();
        let mut z = flate2::read::ZlibDecoder::new(body).take(left);
        if z.read_to_end(&mut inflated).is_ok() {
            left = left.saturating_sub(inflated.len() as u64);
            out.push(b'\n');
            out.extend_from_slice(&inflated);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The VR that says what a value means: the dictionary's where it was read as UN.
fn semantic_vr(el: &Element<'_>) -> Vr {
    if el.vr == Vr::UN && !el.is_private() {
        standard::dictionary_entry(el.tag).map_or(Vr::UN, |e| e.vr)
    } else {
        el.vr
    }
}

/// Text people write, where patterns (dates, numbers, phones, addresses, titled names) are
/// looked for: free text, descriptors (the attributes of Annex E's Clean Descriptors
/// column), private and unknown elements, encapsulated documents. Device fields (software
/// versions, transducer data) carry dates and numbers that identify no one.
fn written_by_people(el: &Element<'_>, vr: Vr) -> bool {
    matches!(vr, Vr::LT | Vr::ST | Vr::UT | Vr::UC)
        || el.is_private()
        || el.tag == tags::ENCAPSULATED_DOCUMENT
        || standard::dictionary_entry(el.tag).is_none()
        || standard::profile_row(el.tag).is_some_and(|r| r.options[7].is_some())
}

/// Attributes of codes: controlled vocabulary (and the organisations that keep it).
fn is_code_attribute(tag: u32) -> bool {
    matches!(
        tag,
        tags::CODE_VALUE
            | tags::CODING_SCHEME_DESIGNATOR
            | tags::CODING_SCHEME_VERSION
            | tags::CODE_MEANING
            | tags::LONG_CODE_VALUE
            | tags::URN_CODE_VALUE
            | tags::CODING_SCHEME_UID
            | tags::CODING_SCHEME_NAME
            | tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION
            | tags::CODING_SCHEME_EXTERNAL_ID
            | tags::CODING_SCHEME_REGISTRY
            | tags::CONTEXT_IDENTIFIER
            | tags::CONTEXT_UID
            | tags::MAPPING_RESOURCE
            | tags::MAPPING_RESOURCE_UID
            | tags::MAPPING_RESOURCE_NAME
    )
}

fn is_text(vr: Vr) -> bool {
    matches!(
        vr,
        Vr::LO | Vr::SH | Vr::LT | Vr::ST | Vr::UT | Vr::UC | Vr::AE | Vr::UR
    )
}

/// A value of unknown meaning (UN, OB) that reads as text: mostly printable bytes.
fn printable(vr: Vr, b: &[u8]) -> bool {
    if !matches!(vr, Vr::UN | Vr::OB) || b.len() < 4 {
        return false;
    }
    let ok = b
        .iter()
        .filter(|&&c| {
            c == b'\t'
                || c == b'\n'
                || c == b'\r'
                || (0x20..0x7F).contains(&c)
                || c >= 0xA0
                || c == 0
        })
        .count();
    ok * 10 >= b.len() * 9
}

/// Whether a person-name value looks like a real name: letters, no digits, no dummy word.
pub fn looks_like_a_name(value: &str) -> bool {
    let v = value.trim();
    if v.is_empty() || v.chars().any(|c| c.is_ascii_digit()) {
        return false;
    }
    let letters = v.chars().filter(|c| c.is_alphabetic()).count();
    if letters < 2 {
        return false;
    }
    // One word of ten or more capitals: a pseudonym or code, not a name.
    if !v.contains(['^', ' ', '=', ','])
        && v.len() >= 10
        && v.chars().all(|c| c.is_ascii_uppercase())
    {
        return false;
    }
    let dummy = v
        .split(['^', '=', ' ', ',', '-'])
        .map(clean::folded_key)
        .any(|w| {
            DUMMY_NAMES.contains(&w.as_str()) || (!w.is_empty() && w.chars().all(|c| c == 'x'))
        });
    !dummy
}

/// Scans a value that is not a whole file: for tests of single elements.
#[doc(hidden)]
pub fn scan_text_for_tests(text: &str) -> Vec<Kind> {
    let mut s = Scanner {
        findings: BTreeSet::new(),
        options: BTreeSet::new(),
        tokens: PhiTokens::default(),
        id_tokens: PhiTokens::default(),
        charset: CharacterSet::from_terms(["ISO_IR 192"]).unwrap_or_default(),
        path: vec!["t".into()],
    };
    let el = Element {
        // An attribute no table lists (so only the text is judged).
        tag: 0x0010_9999,
        vr: Vr::LT,
        value: Value::Bytes(Cow::Owned(text.as_bytes().to_vec())),
    };
    s.element(&el);
    s.findings.into_iter().map(|f| f.kind).collect()
}

#[cfg(test)]
mod tests;
