//! DICOM standard tables for radveil, generated from the standard itself.
//!
//! Everything here comes from `tools/gen_standard.py`, which reads `../shared/standard`
//! (PS3.15 Table E.1-1, the PS3.6 data dictionary, the PS3.3 IOD/module requirements and the
//! TCIA private tag knowledge base) and writes [`generated`]. The generated file is committed,
//! so a build never needs the source tables. This crate adds typed look-ups over them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The tables themselves, as `tools/gen_standard.py` writes them.
// Thousands of generated constants and rows, documented by the generator's header and by the
// typed look-ups below rather than one by one.
#[allow(missing_docs)]
pub mod generated;

pub mod civil;
pub mod tags;

pub use generated::ANNEX_E_REVISION;

/// A DICOM Value Representation (PS3.5 §6.2).
// The variants are the standard's own two-letter codes (PS3.5 Table 6.2-1).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vr {
    AE,
    AS,
    AT,
    CS,
    DA,
    DS,
    DT,
    FD,
    FL,
    IS,
    LO,
    LT,
    OB,
    OD,
    OF,
    OL,
    OV,
    OW,
    PN,
    SH,
    SL,
    SQ,
    SS,
    ST,
    SV,
    TM,
    UC,
    UI,
    UL,
    UN,
    UR,
    US,
    UT,
    UV,
}

impl Vr {
    /// Parses the two-letter code; `None` for anything that is not a VR of PS3.5.
    pub fn from_bytes(code: [u8; 2]) -> Option<Vr> {
        use Vr::*;
        Some(match &code {
            b"AE" => AE,
            b"AS" => AS,
            b"AT" => AT,
            b"CS" => CS,
            b"DA" => DA,
            b"DS" => DS,
            b"DT" => DT,
            b"FD" => FD,
            b"FL" => FL,
            b"IS" => IS,
            b"LO" => LO,
            b"LT" => LT,
            b"OB" => OB,
            b"OD" => OD,
            b"OF" => OF,
            b"OL" => OL,
            b"OV" => OV,
            b"OW" => OW,
            b"PN" => PN,
            b"SH" => SH,
            b"SL" => SL,
            b"SQ" => SQ,
            b"SS" => SS,
            b"ST" => ST,
            b"SV" => SV,
            b"TM" => TM,
            b"UC" => UC,
            b"UI" => UI,
            b"UL" => UL,
            b"UN" => UN,
            b"UR" => UR,
            b"US" => US,
            b"UT" => UT,
            b"UV" => UV,
            _ => return None,
        })
    }

    /// The two-letter code as written in explicit VR encodings.
    pub fn code(self) -> [u8; 2] {
        const CODES: [&[u8; 2]; 34] = [
            b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
            b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
            b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
        ];
        *CODES[self as usize]
    }

    /// Whether explicit VR encodings give this VR a 4-byte length after two reserved bytes
    /// (PS3.5 §7.1.2), rather than a 2-byte length.
    pub fn has_long_length(self) -> bool {
        use Vr::*;
        matches!(
            self,
            OB | OD | OF | OL | OV | OW | SQ | UC | UN | UR | UT | SV | UV
        )
    }

    /// Whether values of this VR are character strings (padded with a space, or NUL for UI).
    pub fn is_text(self) -> bool {
        use Vr::*;
        matches!(
            self,
            AE | AS | CS | DA | DS | DT | IS | LO | LT | PN | SH | ST | TM | UC | UI | UR | UT
        )
    }

    /// Whether the value is one free-text string in which a backslash is not a separator.
    pub fn is_single_valued_text(self) -> bool {
        matches!(self, Vr::LT | Vr::ST | Vr::UT | Vr::UR)
    }

    /// The largest number of bytes one value may take (PS3.5 Table 6.2-1), where the VR has one.
    pub fn max_value_len(self) -> Option<usize> {
        use Vr::*;
        Some(match self {
            AE | CS | SH | DS | TM => 16,
            AS => 4,
            DA => 8,
            DT => 26,
            IS => 12,
            LO => 64,
            PN => 64,
            UI => 64,
            ST => 1024,
            LT => 10240,
            _ => return None,
        })
    }

    /// Byte size of one binary value, for VRs whose byte order matters when swapping endianness.
    pub fn swap_unit(self) -> usize {
        use Vr::*;
        match self {
            AT | OW | SS | US => 2,
            FL | OF | OL | SL | UL => 4,
            FD | OD | OV | SV | UV => 8,
            _ => 1,
        }
    }
}

/// One PS3.6 data dictionary entry. `mask` has zero nibbles where the tag has `xx`
/// (repeating groups such as `(60xx,3000)`).
#[derive(Debug, Clone, Copy)]
pub struct DictionaryEntry {
    /// The tag, `(group << 16) | element`, with masked nibbles zero.
    pub tag: u32,
    /// Which bits of a tag must equal `tag` for the entry to apply.
    pub mask: u32,
    /// The attribute keyword, e.g. `PatientName`.
    pub keyword: &'static str,
    /// The VR (the first one, where the dictionary allows several).
    pub vr: Vr,
    /// Value multiplicity as written in PS3.6, e.g. `1-n`.
    pub vm: &'static str,
    /// Whether the attribute is retired.
    pub retired: bool,
}

/// Looks a standard tag up in the data dictionary.
pub fn dictionary_entry(tag: u32) -> Option<&'static DictionaryEntry> {
    let d = generated::DICTIONARY;
    let exact_len = d.partition_point(|e| e.mask == u32::MAX);
    let exact = &d[..exact_len];
    if let Ok(i) = exact.binary_search_by_key(&tag, |e| e.tag) {
        return Some(&exact[i]);
    }
    d[exact_len..].iter().find(|e| tag & e.mask == e.tag)
}

/// Whether PS3.6 gives the tag the VR "US or SS" (resolved by Pixel Representation).
pub fn is_us_or_ss(tag: u32) -> bool {
    generated::US_OR_SS.binary_search(&tag).is_ok()
}

/// Looks a keyword up in the data dictionary (linear; meant for tests and profile files).
pub fn tag_for_keyword(keyword: &str) -> Option<u32> {
    generated::DICTIONARY
        .iter()
        .find(|e| e.keyword == keyword && e.mask == u32::MAX)
        .map(|e| e.tag)
}

/// The Basic Profile action of Table E.1-1, with the combined codes kept apart so that
/// the engine can resolve them by the attribute's Type in the object's IOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicAction {
    /// Replace with a non-zero-length dummy value consistent with the VR.
    D,
    /// Replace with a zero-length value, or a dummy value.
    Z,
    /// Remove.
    X,
    /// Keep.
    K,
    /// Clean: replace identifying information, keep meaning.
    C,
    /// Replace the UID with a non-identifying one, consistently within the set of instances.
    U,
    /// X unless D is needed for the IOD to stay valid.
    XD,
    /// X unless Z is needed for the IOD to stay valid.
    XZ,
    /// X unless Z or D is needed for the IOD to stay valid.
    XZD,
    /// Z unless D is needed for the IOD to stay valid.
    ZD,
    /// X unless Z or replacement of contained UIDs (U) is needed.
    XZU,
}

/// The action an option column of Table E.1-1 prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionAction {
    /// Keep the attribute.
    K,
    /// Clean the attribute (for dates under Modified Dates: shift them).
    C,
}

/// The options of PS3.15 Annex E, in the column order of Table E.1-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileOption {
    /// Retain Safe Private Option.
    RetainSafePrivate,
    /// Retain UIDs Option.
    RetainUids,
    /// Retain Device Identity Option.
    RetainDeviceIdentity,
    /// Retain Institution Identity Option.
    RetainInstitutionIdentity,
    /// Retain Patient Characteristics Option.
    RetainPatientCharacteristics,
    /// Retain Longitudinal Temporal Information With Full Dates Option.
    RetainLongFullDates,
    /// Retain Longitudinal Temporal Information With Modified Dates Option.
    RetainLongModifiedDates,
    /// Clean Descriptors Option.
    CleanDescriptors,
    /// Clean Structured Content Option.
    CleanStructuredContent,
    /// Clean Graphics Option.
    CleanGraphics,
}

impl ProfileOption {
    /// All options, in the column order of Table E.1-1 (the index into `ProfileRow::options`).
    pub const ALL: [ProfileOption; 10] = [
        ProfileOption::RetainSafePrivate,
        ProfileOption::RetainUids,
        ProfileOption::RetainDeviceIdentity,
        ProfileOption::RetainInstitutionIdentity,
        ProfileOption::RetainPatientCharacteristics,
        ProfileOption::RetainLongFullDates,
        ProfileOption::RetainLongModifiedDates,
        ProfileOption::CleanDescriptors,
        ProfileOption::CleanStructuredContent,
        ProfileOption::CleanGraphics,
    ];

    /// The option's name on the command line and in profile files.
    pub fn name(self) -> &'static str {
        match self {
            ProfileOption::RetainSafePrivate => "retain-safe-private",
            ProfileOption::RetainUids => "retain-uids",
            ProfileOption::RetainDeviceIdentity => "retain-device-identity",
            ProfileOption::RetainInstitutionIdentity => "retain-institution-identity",
            ProfileOption::RetainPatientCharacteristics => "retain-patient-characteristics",
            ProfileOption::RetainLongFullDates => "retain-long-full-dates",
            ProfileOption::RetainLongModifiedDates => "retain-long-modified-dates",
            ProfileOption::CleanDescriptors => "clean-descriptors",
            ProfileOption::CleanStructuredContent => "clean-structured-content",
            ProfileOption::CleanGraphics => "clean-graphics",
        }
    }

    /// Parses an option name as printed by [`ProfileOption::name`].
    pub fn from_name(name: &str) -> Option<ProfileOption> {
        ProfileOption::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The CID 7050 code value (scheme DCM) recorded in De-identification Method Code Sequence.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            ProfileOption::RetainSafePrivate => ("113111", "Retain Safe Private Option"),
            ProfileOption::RetainUids => ("113110", "Retain UIDs Option"),
            ProfileOption::RetainDeviceIdentity => ("113109", "Retain Device Identity Option"),
            ProfileOption::RetainInstitutionIdentity => {
                ("113112", "Retain Institution Identity Option")
            }
            ProfileOption::RetainPatientCharacteristics => {
                ("113108", "Retain Patient Characteristics Option")
            }
            ProfileOption::RetainLongFullDates => (
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            ProfileOption::RetainLongModifiedDates => (
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            ProfileOption::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            ProfileOption::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
            ProfileOption::CleanGraphics => ("113103", "Clean Graphics Option"),
        }
    }
}

/// The CID 7050 code of the Basic Application Confidentiality Profile itself.
pub const BASIC_PROFILE_CODE: (&str, &str) =
    ("113100", "Basic Application Confidentiality Profile");

/// The CID 7050 code of the Clean Recognizable Visual Features Option (PS3.15 E.3.2): faces
/// and other visual features that could identify the patient removed from the pixels. It
/// has no column in Table E.1-1, since it acts on pixels, not attributes.
pub const CLEAN_RECOGNIZABLE_VISUAL_FEATURES_CODE: (&str, &str) =
    ("113102", "Clean Recognizable Visual Features Option");

/// The option's name on the command line and in profile files.
pub const CLEAN_RECOGNIZABLE_VISUAL_FEATURES_NAME: &str = "clean-recognizable-visual-features";

/// One row of PS3.15 Table E.1-1.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRow {
    /// The tag, with masked nibbles zero.
    pub tag: u32,
    /// Which bits of a tag must equal `tag` (repeating groups such as `(50xx,xxxx)`).
    pub mask: u32,
    /// The attribute name as printed in the table.
    pub name: &'static str,
    /// The Basic Profile action.
    pub basic: BasicAction,
    /// The action of each option column, in [`ProfileOption::ALL`] order.
    pub options: [Option<OptionAction>; 10],
    /// Whether the table marks the attribute as used in a standard composite IOD.
    pub in_standard_composite_iod: bool,
}

/// Looks a tag up in Table E.1-1.
pub fn profile_row(tag: u32) -> Option<&'static ProfileRow> {
    let rows = generated::PROFILE;
    let exact_len = rows.partition_point(|r| r.mask == u32::MAX);
    let exact = &rows[..exact_len];
    if let Ok(i) = exact.binary_search_by_key(&tag, |r| r.tag) {
        return Some(&exact[i]);
    }
    rows[exact_len..].iter().find(|r| tag & r.mask == r.tag)
}

/// Module usage within an IOD (PS3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Mandatory.
    M,
    /// Conditional.
    C,
    /// User option.
    U,
}

/// An attribute's Type within a module (PS3.3 §5.4); Type 3 is represented by absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttributeType {
    /// Required, non-empty.
    One,
    /// Required, non-empty, when a condition holds.
    OneC,
    /// Required, may be empty.
    Two,
    /// Required, may be empty, when a condition holds.
    TwoC,
}

impl AttributeType {
    /// Whether the attribute must have a value (Type 1 or 1C), not only be present.
    pub fn needs_value(self) -> bool {
        matches!(self, AttributeType::One | AttributeType::OneC)
    }
}

/// The TCIA knowledge base's verdict on one private element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateDisposition {
    /// Safe to keep (`k`).
    Keep,
    /// Must be removed (`d`, and anything not otherwise classified).
    Remove,
    /// Keep only after transformation (`h`): dates shifted, UIDs remapped.
    Transform,
}

/// One signature of the TCIA private tag knowledge base.
#[derive(Debug, Clone, Copy)]
pub struct PrivateTag {
    /// The odd group.
    pub group: u16,
    /// The Private Creator string, trimmed.
    pub creator: &'static str,
    /// The low byte of the element number (`xxEE` in the block).
    pub element: u8,
    /// The VR the knowledge base records for this element.
    pub vr: Vr,
    /// What to do with it.
    pub disposition: PrivateDisposition,
}

/// All knowledge-base rows for one private element, whatever their VR.
pub fn private_tags(group: u16, creator: &str, element: u8) -> &'static [PrivateTag] {
    let kb = generated::PRIVATE_TAGS;
    let key = (group, creator, element);
    let start = kb.partition_point(|t| (t.group, t.creator, t.element) < key);
    let end = start + kb[start..].partition_point(|t| (t.group, t.creator, t.element) == key);
    &kb[start..end]
}

/// The top-level attributes of a module (by its key, e.g. `general-equipment`), of every
/// Type; empty for an unknown key.
pub fn module_attributes(module: &str) -> &'static [u32] {
    let t = generated::MODULE_ATTRIBUTES;
    t.binary_search_by_key(&module, |(k, _)| k)
        .map_or(&[][..], |i| t[i].1)
}

/// The IOD key (e.g. `ct-image`) of a SOP Class UID, if the standard defines one.
pub fn iod_for_sop_class(uid: &str) -> Option<&'static str> {
    let t = generated::SOP_CLASS_IODS;
    t.binary_search_by_key(&uid, |(u, _)| u)
        .ok()
        .map(|i| t[i].1)
}

/// Which attributes an IOD requires, by path of tags from the top level (PS3.3).
///
/// Built once per IOD from the generated module tables and shared; an attribute listed in
/// several modules takes its strictest Type.
#[derive(Debug, Default)]
pub struct IodRequirements {
    types: HashMap<Box<[u32]>, AttributeType>,
}

impl IodRequirements {
    /// The Type of the attribute at `path` (sequence tags from the top level, ending with the
    /// attribute's own tag); `None` means Type 3 or not part of the IOD.
    pub fn attribute_type(&self, path: &[u32]) -> Option<AttributeType> {
        self.types.get(path).copied()
    }

    /// Number of required attribute paths known for this IOD.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether no requirement is known.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    fn build(iod: &str) -> Option<IodRequirements> {
        let mods = generated::IOD_MODULES;
        let i = mods.binary_search_by_key(&iod, |(k, _)| k).ok()?;
        let mut types: HashMap<Box<[u32]>, AttributeType> = HashMap::new();
        for (module, _usage) in mods[i].1 {
            let reqs = generated::MODULE_REQUIREMENTS;
            let Ok(j) = reqs.binary_search_by_key(module, |(k, _)| k) else {
                continue;
            };
            for entry in reqs[j].1.split(';').filter(|e| !e.is_empty()) {
                let Some((path, ty)) = entry.split_once('=') else {
                    continue;
                };
                let ty = match ty {
                    "1" => AttributeType::One,
                    "1C" => AttributeType::OneC,
                    "2" => AttributeType::Two,
                    "2C" => AttributeType::TwoC,
                    _ => continue,
                };
                let path: Option<Vec<u32>> = path
                    .split('/')
                    .map(|t| u32::from_str_radix(t, 16).ok())
                    .collect();
                let Some(path) = path else { continue };
                let slot = types.entry(path.into_boxed_slice()).or_insert(ty);
                if ty < *slot {
                    *slot = ty;
                }
            }
        }
        Some(IodRequirements { types })
    }
}

/// The requirements of the IOD that a SOP Class UID belongs to, built on first use and cached.
pub fn iod_requirements(sop_class_uid: &str) -> Option<Arc<IodRequirements>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<IodRequirements>>>> = OnceLock::new();
    let iod = iod_for_sop_class(sop_class_uid)?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().ok()?.get(iod) {
        return Some(r.clone());
    }
    let built = Arc::new(IodRequirements::build(iod)?);
    cache.lock().ok()?.insert(iod, built.clone());
    Some(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `pub const NAME: u32 = 0x....;` of tags.rs (rustfmt may wrap one over two
    /// lines), with whether it is in `repeating`.
    fn tag_constants() -> Vec<(&'static str, u32, bool)> {
        let mut repeating = false;
        let mut out = Vec::new();
        for statement in include_str!("tags.rs").split(';') {
            repeating |= statement.contains("pub mod repeating");
            let Some(at) = statement.rfind("pub const ") else {
                continue;
            };
            let Some((name, value)) = statement[at + "pub const ".len()..].split_once(": u32 =")
            else {
                continue;
            };
            let value = value.trim().trim_start_matches("0x").replace('_', "");
            let value = u32::from_str_radix(&value, 16).expect("a hexadecimal tag");
            out.push((name, value, repeating));
        }
        out
    }

    #[test]
    fn dictionary_finds_exact_and_repeating_tags() {
        let e = dictionary_entry(tags::PATIENT_NAME).unwrap();
        assert_eq!(e.keyword, "PatientName");
        assert_eq!(e.vr, Vr::PN);
        let overlay = dictionary_entry(tags::repeating::in_group(
            tags::repeating::OVERLAY_DATA,
            0x6002,
        ))
        .unwrap();
        assert_eq!(overlay.keyword, "OverlayData");
        // A private creator element has no keyword: not in the dictionary.
        const PRIVATE_CREATOR: u32 = 0x0009_0010;
        assert!(dictionary_entry(PRIVATE_CREATOR).is_none());
        assert_eq!(
            tag_for_keyword("StudyInstanceUID"),
            Some(tags::STUDY_INSTANCE_UID)
        );
    }

    #[test]
    fn tag_constants_match_the_dictionary() {
        assert_eq!(tags::PATIENT_NAME, 0x0010_0010);
        assert_eq!(tags::SOP_INSTANCE_UID, 0x0008_0018);
        assert_eq!(tags::PIXEL_DATA, 0x7FE0_0010);
        assert_eq!(tags::repeating::OVERLAY_DATA, 0x6000_3000);
        assert_eq!(
            tags::repeating::in_group(tags::repeating::OVERLAY_ROWS, 0x60FE),
            0x60FE_0010
        );
        for (tag, keyword) in [
            (tags::PATIENT_NAME, "PatientName"),
            (tags::OTHER_PATIENT_IDS_SEQUENCE, "OtherPatientIDsSequence"),
            (
                tags::REFERENCED_SOP_INSTANCE_UID,
                "ReferencedSOPInstanceUID",
            ),
            (
                tags::X_RAY_3D_ACQUISITION_SEQUENCE,
                "XRay3DAcquisitionSequence",
            ),
            (tags::CTDI_VOL, "CTDIvol"),
            (tags::DB_DT, "dBdt"),
            (
                tags::FILE_META_INFORMATION_GROUP_LENGTH,
                "FileMetaInformationGroupLength",
            ),
        ] {
            assert_eq!(dictionary_entry(tag).unwrap().keyword, keyword);
        }
        // Retired attributes are named too.
        assert!(dictionary_entry(tags::LENGTH_TO_END).unwrap().retired);
    }

    #[test]
    fn every_tag_constant_round_trips_through_its_keyword() {
        let constants = tag_constants();
        let exact: Vec<_> = constants.iter().filter(|c| !c.2).collect();
        let repeating: Vec<_> = constants.iter().filter(|c| c.2).collect();
        let dictionary_exact = generated::DICTIONARY
            .iter()
            .filter(|e| e.mask == u32::MAX)
            .count();
        assert_eq!(exact.len(), dictionary_exact, "one constant per exact tag");
        assert_eq!(
            repeating.len(),
            generated::DICTIONARY.len() - dictionary_exact,
            "one constant per repeating-group pattern"
        );
        for &&(name, tag, is_repeating) in exact.iter().chain(&repeating) {
            let e = if is_repeating {
                // The pattern's own row: with its nibbles zero, (0028,04x0) is (0028,0400),
                // an exact tag of its own.
                generated::DICTIONARY.iter().find(|e| {
                    e.mask != u32::MAX
                        && e.tag == tag
                        && e.keyword.eq_ignore_ascii_case(&name.replace('_', ""))
                })
            } else {
                dictionary_entry(tag).filter(|e| e.mask == u32::MAX)
            };
            let e = e.unwrap_or_else(|| panic!("{name} is not a dictionary tag"));
            assert_eq!(e.tag, tag, "{name}: the constant is the entry's tag");
            // The constant is the keyword in SCREAMING_SNAKE_CASE: the same letters and digits.
            assert_eq!(
                name.replace('_', ""),
                e.keyword.to_ascii_uppercase(),
                "{name} is not named after {}",
                e.keyword
            );
            if !is_repeating {
                assert_eq!(tag_for_keyword(e.keyword), Some(tag), "{name}");
            }
        }
        let mut names: Vec<_> = constants.iter().map(|c| (c.2, c.0)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), constants.len(), "constant names are unique");
    }

    #[test]
    fn profile_has_every_code_and_repeating_groups() {
        assert_eq!(
            profile_row(tags::PATIENT_NAME).unwrap().basic,
            BasicAction::Z
        );
        assert_eq!(
            profile_row(tags::ACCESSION_NUMBER).unwrap().basic,
            BasicAction::Z
        );
        assert_eq!(
            profile_row(tags::STUDY_INSTANCE_UID).unwrap().basic,
            BasicAction::U
        );
        assert_eq!(
            profile_row(tags::REFERENCED_IMAGE_SEQUENCE).unwrap().basic,
            BasicAction::XZU
        );
        // (50xx,2000) Audio Type in group 5004, a Curve group.
        let curve = profile_row(tags::repeating::in_group(
            tags::repeating::AUDIO_TYPE,
            0x5004,
        ))
        .unwrap();
        assert_eq!(curve.basic, BasicAction::X);
        assert_eq!(curve.options[9], Some(OptionAction::C));
        assert!(profile_row(tags::ROWS).is_none());
        assert!(generated::PROFILE.len() > 600);
    }

    #[test]
    fn ct_image_requires_patient_and_study_attributes() {
        let req = iod_requirements("1.2.840.10008.5.1.4.1.1.2").unwrap();
        assert_eq!(
            req.attribute_type(&[tags::PATIENT_NAME]),
            Some(AttributeType::Two)
        );
        assert_eq!(
            req.attribute_type(&[tags::STUDY_INSTANCE_UID]),
            Some(AttributeType::One)
        );
        assert_eq!(
            req.attribute_type(&[tags::SOP_INSTANCE_UID]),
            Some(AttributeType::One)
        );
        // Type 3 attributes are absent.
        assert_eq!(req.attribute_type(&[tags::PATIENT_ADDRESS]), None);
    }

    #[test]
    fn private_kb_lookup() {
        let rows = private_tags(0x0015, "GEMS_PETD_01", 0x33);
        assert!(!rows.is_empty());
        assert!(rows
            .iter()
            .all(|r| r.disposition == PrivateDisposition::Keep));
        assert!(private_tags(0x0015, "NO SUCH CREATOR", 0x33).is_empty());
    }

    #[test]
    fn vr_codes_round_trip() {
        for code in [b"PN", b"SQ", b"OB", b"UV"] {
            let vr = Vr::from_bytes(*code).unwrap();
            assert_eq!(&vr.code(), code);
        }
        assert!(Vr::from_bytes(*b"ZZ").is_none());
    }

    #[test]
    fn option_names_round_trip() {
        for o in ProfileOption::ALL {
            assert_eq!(ProfileOption::from_name(o.name()), Some(o));
        }
    }
}
