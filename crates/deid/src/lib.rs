//! The PS3.15 Annex E de-identification engine.
//!
//! [`Deidentifier::deidentify`] takes the bytes of a DICOM Part 10 file and returns the bytes
//! of its de-identified form, with the identity (pseudonyms and new UIDs) the caller needs to
//! name the output, and counts of what was done, free of PHI.
//!
//! What the engine guarantees:
//! - every attribute of Table E.1-1 gets its Basic Profile action, or the action of the options
//!   chosen; combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) resolve by the attribute's Type in
//!   the object's IOD at that place in the tree, so required attributes stay present;
//! - names and IDs become keyed pseudonyms, UIDs keyed `2.25.` UIDs (everywhere they occur),
//!   dates a dummy or, with Modified Dates, a per-patient keyed shift;
//! - every sequence is walked, private ones included; private attributes are removed unless
//!   the Retain Safe Private option keeps what the TCIA knowledge base marks safe;
//! - text that is kept is searched for identifying values found elsewhere in the object;
//! - pixel data is never decoded: it is copied as encoded;
//! - objects that may show identifying text in their pixels are held back, not passed.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use radveil_part10::{self as part10, DataSet, Element, Encoding, Grant, Value};
use radveil_standard::{
    self as standard, tags, AttributeType, BasicAction, IodRequirements, OptionAction,
    PrivateDisposition, Vr,
};

pub mod clean;
pub mod dates;
pub mod keyed;
pub mod profile;
pub mod values;

pub use keyed::{Key, KeyTooShort, MIN_KEY_LEN};
pub use profile::{Override, Profile, ProfileError};
pub use radveil_standard::ProfileOption;

use clean::PhiTokens;
use part10::charset::CharacterSet;

/// The version recorded in De-identification Method.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Implementation Class UID written in the file meta of every output (radveil's own, a
/// UUID-derived UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.180939398471032768542105324128493460049";
/// Implementation Version Name written in the file meta of every output.
pub const IMPLEMENTATION_VERSION_NAME: &str = "RADVEIL_0_1";

/// SOP Class UID of a Media Storage Directory (DICOMDIR).
pub const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// Masks the repeating part of an overlay group (60xx) but keeps the group's lowest bit:
/// `tag & OVERLAY_GROUP_MASK` is the pattern (6000,eeee) for every even group 6000-60FE
/// (overlays are even groups; odd groups are private) and something else otherwise.
const OVERLAY_GROUP_MASK: u32 = 0xFF01_FFFF;

/// How to treat objects whose Burned In Annotation (0028,0301) is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BurnedInPolicy {
    /// Only objects that say YES are held back.
    #[default]
    OnlyWhenYes,
    /// Also hold back objects of modalities that often burn text in (US, SC, OT, XC, ES, GM,
    /// SM, DOC, and Secondary Capture SOP classes) unless they say NO.
    UnlessNo,
}

/// What the caller did to an object's pixels about recognizable visual features (a face)
/// before handing it over: the engine never decodes pixels itself, but records this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VisualFeatures {
    /// Nothing was done. Under the Clean Recognizable Visual Features option, an object whose
    /// Recognizable Visual Features (0028,0302) is YES is then held back.
    #[default]
    Untouched,
    /// The face was removed (defaced): Recognizable Visual Features becomes NO and the
    /// option's code (CID 7050, 113102) is recorded.
    Cleaned,
    /// The object was looked at and shows no face (not a head, or the face is outside the
    /// field of view); nothing is recorded as cleaned.
    NoneFound,
}

/// Everything a run needs besides the key.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Options, UID root and site rules.
    pub profile: Profile,
    /// The burned-in text policy.
    pub burned_in: BurnedInPolicy,
    /// Whether to return original-to-pseudonym pairs (PHI) for a crosswalk.
    pub crosswalk: bool,
}

/// Why an object was not de-identified.
#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    /// The bytes are not a readable DICOM file.
    #[error("{0}")]
    Read(#[from] part10::Error),
    /// A DICOMDIR: it holds PHI of every object it lists and is never copied.
    #[error("DICOMDIR left out: it lists patient identities; its referenced files are de-identified on their own")]
    Dicomdir,
    /// The object is not passed: it may carry identifying text in its pixels and pixel
    /// cleaning is not available, or a kept attribute holds a value that is not valid for its
    /// VR where it cannot be cleaned. The reason names elements by tag, never a value.
    #[error("held back: {0}")]
    HeldBack(String),
    /// A required attribute is missing, so the object cannot be named or remapped.
    #[error("missing {0}")]
    Missing(&'static str),
}

/// Counts of what was done to one object (no PHI).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActionCounts {
    /// Attributes removed (X).
    pub removed: u32,
    /// Attributes emptied (Z).
    pub emptied: u32,
    /// Attributes replaced with a dummy value (D).
    pub dummied: u32,
    /// Names and IDs replaced with keyed pseudonyms.
    pub pseudonymized: u32,
    /// UID values remapped (U).
    pub uids_remapped: u32,
    /// Date and date-time values shifted.
    pub dates_shifted: u32,
    /// Text values cleaned (C, or identifying values found in kept text).
    pub cleaned: u32,
    /// Private attributes removed.
    pub private_removed: u32,
    /// Private attributes kept by the Retain Safe Private option.
    pub private_kept: u32,
    /// Site rules applied.
    pub overridden: u32,
    /// Standard (even-group) attributes the data dictionary does not know, removed: what
    /// they hold cannot be judged.
    pub unknown_removed: u32,
    /// Unknown standard attributes kept by a site rule (their text scrubbed).
    pub unknown_kept: u32,
}

/// The de-identified identity of an object: what the caller names its output after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The patient's pseudonym (the new Patient ID).
    pub patient: String,
    /// New Study Instance UID.
    pub study_uid: String,
    /// New Series Instance UID.
    pub series_uid: String,
    /// New SOP Instance UID.
    pub sop_instance_uid: String,
}

/// One original-to-pseudonym pair, for the crosswalk (PHI: only returned when asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrosswalkEntry {
    /// `patient_id` or `uid`.
    pub kind: &'static str,
    /// The original value.
    pub old: String,
    /// Its replacement.
    pub new: String,
}

/// A de-identified data set with its new file meta, before encoding.
struct Transformed<'b> {
    meta: DataSet<'static>,
    dataset: DataSet<'b>,
    identity: Identity,
    counts: ActionCounts,
    crosswalk: Vec<CrosswalkEntry>,
}

/// Refuses a file whose Transfer Syntax UID is not a valid UID (it would be written out).
fn check_transfer_syntax(meta: &part10::FileMeta<'_>) -> Result<(), DeidError> {
    if !values::is_valid_uid(&meta.transfer_syntax) {
        return Err(DeidError::HeldBack(
            "Transfer Syntax UID (0002,0010) is not a valid UID".into(),
        ));
    }
    Ok(())
}

/// Encodes a de-identified data set as a Part 10 file in `transfer_syntax`: into one owned
/// buffer when the syntax is deflated, else in pieces that borrow large values.
fn encode<'b>(done: Transformed<'b>, transfer_syntax: &str, deflated: bool) -> Outcome<'b> {
    if deflated {
        let mut bytes = Vec::new();
        part10::write_file(&done.meta, &done.dataset, transfer_syntax, &mut bytes);
        done.into_outcome(part10::Encoded::from_vec(bytes))
    } else {
        let mut encoded = part10::Encoded::default();
        part10::write_file(&done.meta, &done.dataset, transfer_syntax, &mut encoded);
        done.into_outcome(encoded)
    }
}

impl Transformed<'_> {
    fn into_outcome<'a>(self, file: part10::Encoded<'a>) -> Outcome<'a> {
        Outcome {
            file,
            identity: self.identity,
            counts: self.counts,
            crosswalk: self.crosswalk,
        }
    }
}

/// A de-identified object.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The complete output file, in pieces that may borrow large values from the input.
    pub file: part10::Encoded<'a>,
    /// Pseudonyms and new UIDs.
    pub identity: Identity,
    /// Counts of actions.
    pub counts: ActionCounts,
    /// Original-to-new pairs, when [`Config::crosswalk`] is set.
    pub crosswalk: Vec<CrosswalkEntry>,
}

/// The resolved action for one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Keep,
    Remove,
    Empty,
    Dummy,
    Clean,
    Uid,
    /// Dates under Modified Dates.
    Shift,
}

/// What kind of content a sequence holds, which decides what happens to text nobody listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// The top level, or a sequence kept as it is.
    Plain,
    /// A sequence whose content is replaced (D): unlisted free text becomes a dummy.
    Dummy,
    /// A sequence being cleaned (C): unlisted free text is cleaned.
    Clean,
}

/// A configured de-identifier; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Deidentifier {
    key: Key,
    config: Arc<Config>,
}

impl Deidentifier {
    /// Builds a de-identifier, refusing contradictory options.
    pub fn new(key: Key, config: Config) -> Result<Deidentifier, ProfileError> {
        config.profile.check()?;
        Ok(Deidentifier {
            key,
            config: Arc::new(config),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn has(&self, o: ProfileOption) -> bool {
        self.config.profile.options.contains(&o)
    }

    /// The text recorded in De-identification Method (0012,0063), one value per line of
    /// what was applied to an object whose pixels were treated as `visual` says.
    pub fn method_description(&self, visual: VisualFeatures) -> Vec<String> {
        let mut v = vec![format!(
            "radveil {VERSION} PS3.15 E.1-1 {} Basic Profile",
            standard::ANNEX_E_REVISION
        )];
        for o in &self.config.profile.options {
            v.push(format!("option {}", o.name()));
        }
        if visual == VisualFeatures::Cleaned {
            v.push(format!(
                "option {} (radveil deface)",
                standard::CLEAN_RECOGNIZABLE_VISUAL_FEATURES_NAME
            ));
        }
        if !self.config.profile.overrides.is_empty() {
            v.push(format!(
                "site rules {}",
                self.config.profile.overrides.len()
            ));
        }
        v
    }

    /// De-identifies one Part 10 file whose pixels nobody has looked at.
    pub fn deidentify<'a>(&self, file: &'a [u8]) -> Result<Outcome<'a>, DeidError> {
        self.deidentify_with(file, VisualFeatures::Untouched)
    }

    /// De-identifies one Part 10 file, recording what the caller did to its pixels.
    ///
    /// Memory is bounded by [`part10::Limits::default`] only; a run of many workers should use
    /// [`Deidentifier::deidentify_in`] with its budget.
    pub fn deidentify_with<'a>(
        &self,
        file: &'a [u8],
        visual: VisualFeatures,
    ) -> Result<Outcome<'a>, DeidError> {
        self.deidentify_charged(file, visual, None)
    }

    /// De-identifies one Part 10 file like [`Deidentifier::deidentify_with`], charging what
    /// it allocates (the inflated data set of a deflated file, the element tree, sequences
    /// kept as bytes and parsed, the encoded output of a deflated file) to `grant`, which
    /// grows without waiting. The caller reserves the grant from the run's
    /// [`part10::MemoryBudget`] and keeps it until the [`Outcome`] is written and dropped.
    /// A refusal is `DeidError::Read(part10::Error::Budget(_))`: that file fails, the run goes
    /// on.
    pub fn deidentify_in<'a>(
        &self,
        file: &'a [u8],
        visual: VisualFeatures,
        grant: &mut Grant<'_>,
    ) -> Result<Outcome<'a>, DeidError> {
        self.deidentify_charged(file, visual, Some(grant))
    }

    /// De-identifies a Part 10 file that the caller has already read (its file meta, its data
    /// set and the encoding the data set was read in), so that a caller that works on the data
    /// set first (defacing puts new pixel data into it) parses and encodes the file once. The
    /// output is written in `meta.transfer_syntax`, as [`Deidentifier::deidentify_in`] writes
    /// the file it parses: the bytes entry points are a parse followed by this. What the
    /// de-identification allocates is charged to `grant` (which grows without waiting); the
    /// data set's own tree is the caller's to account for.
    pub fn deidentify_parsed<'b>(
        &self,
        meta: &part10::FileMeta<'_>,
        dataset: DataSet<'b>,
        visual: VisualFeatures,
        grant: &mut Grant<'_>,
    ) -> Result<Outcome<'b>, DeidError> {
        check_transfer_syntax(meta)?;
        let ts = part10::TransferSyntax::from_uid(&meta.transfer_syntax);
        let done = self.transform_dataset(meta, dataset, visual, Some(&mut *grant))?;
        if ts.deflated {
            // The encoded body and its deflated copy, as the bytes path charges them (the
            // parsed body's size stands for the inflated one, which the caller holds).
            grant
                .grow((meta.body.len() as u64).saturating_mul(2))
                .map_err(part10::Error::from)?;
        }
        Ok(encode(done, &meta.transfer_syntax, ts.deflated))
    }

    fn deidentify_charged<'a>(
        &self,
        file: &'a [u8],
        visual: VisualFeatures,
        mut grant: Option<&mut Grant<'_>>,
    ) -> Result<Outcome<'a>, DeidError> {
        let meta = part10::read_file_meta(file)?;
        check_transfer_syntax(&meta)?;
        let ts = part10::TransferSyntax::from_uid(&meta.transfer_syntax);
        let limits = part10::Limits::default();
        if ts.deflated {
            // The data set lives in a buffer of ours: the output is encoded (and deflated)
            // into one owned buffer.
            let inflated = match grant.as_deref_mut() {
                Some(g) => part10::inflate_in(meta.body, limits.max_inflated, g)?,
                None => part10::inflate(meta.body, limits.max_inflated)?,
            };
            let done = self.transform(&meta, &inflated, ts, visual, grant.as_deref_mut())?;
            if let Some(g) = grant {
                // The encoded body and its deflated copy.
                g.grow((inflated.len() as u64).saturating_mul(2))
                    .map_err(part10::Error::from)?;
            }
            let mut bytes = Vec::with_capacity(inflated.len() / 2);
            part10::write_file(&done.meta, &done.dataset, &meta.transfer_syntax, &mut bytes);
            Ok(done.into_outcome(part10::Encoded::from_vec(bytes)))
        } else {
            // Large values (pixel data) are referenced from the input, not copied.
            let done = self.transform(&meta, meta.body, ts, visual, grant)?;
            Ok(encode(done, &meta.transfer_syntax, false))
        }
    }

    /// Reads the data set from `body` and de-identifies it, with the new file meta.
    fn transform<'b>(
        &self,
        meta: &part10::FileMeta<'_>,
        body: &'b [u8],
        ts: part10::TransferSyntax,
        visual: VisualFeatures,
        mut grant: Option<&mut Grant<'_>>,
    ) -> Result<Transformed<'b>, DeidError> {
        let encoding = part10::effective_encoding(body, ts.encoding);
        // The output keeps the declared transfer syntax; a body that was really implicit VR
        // (a known writer bug) is written in the encoding the syntax declares.
        let limits = part10::Limits::default();
        let ds = match grant.as_deref_mut() {
            Some(g) => part10::read_dataset_in(body, encoding, limits, g)?,
            None => part10::read_dataset(body, encoding, limits)?,
        };
        self.transform_dataset(meta, ds, visual, grant)
    }

    /// De-identifies a data set read from a file with file meta `meta`, with the new file
    /// meta.
    fn transform_dataset<'b>(
        &self,
        meta: &part10::FileMeta<'_>,
        mut ds: DataSet<'b>,
        visual: VisualFeatures,
        grant: Option<&mut Grant<'_>>,
    ) -> Result<Transformed<'b>, DeidError> {
        let sop_class = ds
            .string(tags::SOP_CLASS_UID)
            .or_else(|| meta.elements.string(tags::MEDIA_STORAGE_SOP_CLASS_UID))
            .filter(|s| !s.is_empty());
        if sop_class.as_deref() == Some(MEDIA_STORAGE_DIRECTORY)
            || meta
                .elements
                .string(tags::MEDIA_STORAGE_SOP_CLASS_UID)
                .as_deref()
                == Some(MEDIA_STORAGE_DIRECTORY)
            || ds.get(tags::DIRECTORY_RECORD_SEQUENCE).is_some()
        {
            return Err(DeidError::Dicomdir);
        }
        let sop_class = sop_class.ok_or(DeidError::Missing("SOP Class UID (0008,0016)"))?;
        if !values::is_valid_uid(&sop_class) {
            let tag = if ds.get(tags::SOP_CLASS_UID).is_some() {
                "SOP Class UID (0008,0016)"
            } else {
                "Media Storage SOP Class UID (0002,0002)"
            };
            return Err(DeidError::HeldBack(format!("{tag} is not a valid UID")));
        }
        if ds
            .string(tags::SOP_INSTANCE_UID)
            .filter(|s| !s.is_empty())
            .is_none()
        {
            return Err(DeidError::Missing("SOP Instance UID (0008,0018)"));
        }
        self.check_burned_in(&ds, &sop_class)?;
        if self.config.profile.clean_visual_features
            && visual == VisualFeatures::Untouched
            && ds
                .string(tags::RECOGNIZABLE_VISUAL_FEATURES)
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("YES"))
        {
            return Err(DeidError::HeldBack(
                "Recognizable Visual Features is YES and the object is not part of a head volume that could be defaced".into(),
            ));
        }

        let mut run = Run::new(self, &ds, &sop_class, grant);
        let mut path = Vec::with_capacity(8);
        run.dataset(&mut ds, &mut path, Context::Plain);
        if let Some(e) = run.failure.take() {
            return Err(DeidError::Read(e));
        }
        if let Some(why) = run.unclear.take() {
            return Err(DeidError::HeldBack(why));
        }
        // Every value that leaves is valid for its VR: what was kept as it came is checked,
        // cleaned where that keeps its meaning, else removed, emptied or held back.
        run.validate(&mut ds, &mut path)?;
        self.record(&mut ds, visual);

        let identity = Identity {
            patient: ds.string(tags::PATIENT_ID).unwrap_or_default(),
            study_uid: ds.string(tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            series_uid: ds.string(tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            sop_instance_uid: ds.string(tags::SOP_INSTANCE_UID).unwrap_or_default(),
        };

        let mut out_meta = DataSet::default();
        out_meta.put(Element {
            tag: tags::FILE_META_INFORMATION_VERSION,
            vr: Vr::OB,
            value: Value::Bytes(Cow::Borrowed(&[0, 1])),
        });
        out_meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            Vr::UI,
            &sop_class,
        ));
        out_meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            Vr::UI,
            &identity.sop_instance_uid,
        ));
        out_meta.put(Element::text(
            tags::TRANSFER_SYNTAX_UID,
            Vr::UI,
            &meta.transfer_syntax,
        ));
        out_meta.put(Element::text(
            tags::IMPLEMENTATION_CLASS_UID,
            Vr::UI,
            IMPLEMENTATION_CLASS_UID,
        ));
        out_meta.put(Element::text(
            tags::IMPLEMENTATION_VERSION_NAME,
            Vr::SH,
            IMPLEMENTATION_VERSION_NAME,
        ));
        let mut crosswalk = run.crosswalk;
        crosswalk.sort_by(|a, b| (a.kind, &a.old).cmp(&(b.kind, &b.old)));
        crosswalk.dedup();
        Ok(Transformed {
            meta: out_meta,
            dataset: ds,
            identity,
            counts: run.counts,
            crosswalk,
        })
    }

    fn check_burned_in(&self, ds: &DataSet<'_>, sop_class: &str) -> Result<(), DeidError> {
        // Burned In Annotation has two enumerated values; anything else (a name, free text,
        // lowercase) cannot be trusted to mean NO and is treated as YES. An empty value says
        // nothing, like an absent one.
        match ds.get(tags::BURNED_IN_ANNOTATION).and_then(|e| e.trimmed()) {
            Some(b"NO") => return Ok(()),
            Some(b"YES") => {
                return Err(DeidError::HeldBack(
                    "Burned In Annotation (0028,0301) is YES and pixel cleaning is not enabled"
                        .into(),
                ))
            }
            Some(v) if !v.is_empty() => {
                return Err(DeidError::HeldBack(
                    "Burned In Annotation (0028,0301) is neither YES nor NO: treated as YES, and pixel cleaning is not enabled"
                        .into(),
                ))
            }
            _ => {}
        }
        if self.config.burned_in == BurnedInPolicy::UnlessNo {
            let modality = ds
                .string(tags::MODALITY)
                .unwrap_or_default()
                .to_ascii_uppercase();
            let risky_modality = matches!(
                modality.as_str(),
                "US" | "SC" | "OT" | "XC" | "ES" | "GM" | "SM" | "DOC" | "IVUS" | "OP"
            );
            let secondary_capture = sop_class.starts_with("1.2.840.10008.5.1.4.1.1.7");
            if risky_modality || secondary_capture {
                // The Modality value itself is not quoted: messages never echo input values.
                return Err(DeidError::HeldBack(if secondary_capture {
                    "a Secondary Capture SOP Class (0008,0016) often has text burned into its pixels and Burned In Annotation (0028,0301) is not NO".into()
                } else {
                    "the Modality (0008,0060) is one that often burns text into pixels and Burned In Annotation (0028,0301) is not NO".into()
                }));
            }
        }
        Ok(())
    }

    /// Adds the attributes that record what was done (PS3.15 E.1.1, CID 7050).
    fn record(&self, ds: &mut DataSet<'_>, visual: VisualFeatures) {
        ds.put(Element::text(tags::PATIENT_IDENTITY_REMOVED, Vr::CS, "YES"));
        ds.put(Element::text(
            tags::DEIDENTIFICATION_METHOD,
            Vr::LO,
            &self.method_description(visual).join("\\"),
        ));
        let mut items = Vec::new();
        let mut codes = vec![standard::BASIC_PROFILE_CODE];
        codes.extend(self.config.profile.options.iter().map(|o| o.code()));
        if visual == VisualFeatures::Cleaned {
            codes.push(standard::CLEAN_RECOGNIZABLE_VISUAL_FEATURES_CODE);
            ds.put(Element::text(
                tags::RECOGNIZABLE_VISUAL_FEATURES,
                Vr::CS,
                "NO",
            ));
        }
        for (value, meaning) in codes {
            items.push(DataSet::code_item(value, "DCM", meaning));
        }
        ds.put(Element {
            tag: tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(items),
        });
        let temporal = if self.has(ProfileOption::RetainLongFullDates) {
            "UNMODIFIED"
        } else if self.has(ProfileOption::RetainLongModifiedDates) {
            "MODIFIED"
        } else {
            "REMOVED"
        };
        ds.put(Element::text(
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            Vr::CS,
            temporal,
        ));
    }
}

/// VRs whose values are free text that may mention a person (codes, numbers and UIDs are
/// left alone by text cleaning).
fn is_free_text(vr: Vr) -> bool {
    matches!(
        vr,
        Vr::LO | Vr::SH | Vr::ST | Vr::LT | Vr::UT | Vr::UC | Vr::PN
    )
}

/// Names the element at `path` for a message: its keyword where the dictionary has one, and
/// its tags from the top level. Never a value.
fn element_name(path: &[u32]) -> String {
    let tags: Vec<String> = path.iter().map(|&t| part10::tag_name(t)).collect();
    let last = path.last().copied().unwrap_or(0);
    match standard::dictionary_entry(last) {
        Some(e) if last >> 16 & 1 == 0 => format!("{} {}", e.keyword, tags.join(" > ")),
        _ => tags.join(" > "),
    }
}

/// Attributes that say how the pixel data and the text are to be read: a malformed one is
/// never removed or emptied (the object would be read differently), the object is held back.
fn describes_pixels(tag: u32) -> bool {
    matches!(
        tag,
        tags::SPECIFIC_CHARACTER_SET
            | tags::SAMPLES_PER_PIXEL
            | tags::PHOTOMETRIC_INTERPRETATION
            | tags::PLANAR_CONFIGURATION
            | tags::NUMBER_OF_FRAMES
            | tags::ROWS
            | tags::COLUMNS
            | tags::BITS_ALLOCATED
            | tags::BITS_STORED
            | tags::HIGH_BIT
            | tags::PIXEL_REPRESENTATION
            | tags::BURNED_IN_ANNOTATION
            | tags::RECOGNIZABLE_VISUAL_FEATURES
    )
}

/// A standard (even-group) attribute the data dictionary does not know (group lengths
/// aside, which are dropped anyway).
fn is_unknown(el: &Element<'_>) -> bool {
    !el.is_private() && el.tag & 0xFFFF != 0 && standard::dictionary_entry(el.tag).is_none()
}

/// Attributes of code sequences: controlled vocabulary, never replaced with dummies.
fn is_code_attribute(tag: u32) -> bool {
    matches!(
        tag,
        tags::CODE_VALUE
            | tags::CODING_SCHEME_DESIGNATOR
            | tags::CODING_SCHEME_VERSION
            | tags::MAPPING_RESOURCE
            | tags::CONTEXT_GROUP_VERSION
            | tags::CONTEXT_GROUP_LOCAL_VERSION
            | tags::CONTEXT_GROUP_EXTENSION_FLAG
            | tags::CONTEXT_GROUP_EXTENSION_CREATOR_UID
            | tags::CONTEXT_IDENTIFIER
            | tags::CONTEXT_UID
            | tags::MAPPING_RESOURCE_UID
            | tags::LONG_CODE_VALUE
            | tags::URN_CODE_VALUE
            | tags::EQUIVALENT_CODE_SEQUENCE
            | tags::MAPPING_RESOURCE_NAME
            | tags::CONTEXT_GROUP_IDENTIFICATION_SEQUENCE
            | tags::MAPPING_RESOURCE_IDENTIFICATION_SEQUENCE
    )
}

/// Per-object state of one de-identification.
struct Run<'d, 'g, 'm> {
    d: &'d Deidentifier,
    /// Where memory for sequences parsed from bytes is charged, when the caller gave a grant.
    grant: Option<&'g mut Grant<'m>>,
    /// A failure that must fail the whole object (the memory budget refused).
    failure: Option<part10::Error>,
    requirements: Option<Arc<IodRequirements>>,
    tokens: PhiTokens,
    /// The Specific Character Set of the data set being walked (an item's own, else its
    /// parent's): how its text is read when cleaned.
    charset: CharacterSet,
    /// The first text that could not be cleaned with certainty (bytes that do not decode):
    /// the object is held back.
    unclear: Option<String>,
    date_offset: i64,
    patient_pseudonym: String,
    counts: ActionCounts,
    crosswalk: Vec<CrosswalkEntry>,
    uid_cache: HashMap<String, String>,
}

impl<'d, 'g, 'm> Run<'d, 'g, 'm> {
    fn new(
        d: &'d Deidentifier,
        ds: &DataSet<'_>,
        sop_class: &str,
        grant: Option<&'g mut Grant<'m>>,
    ) -> Run<'d, 'g, 'm> {
        let patient_id = ds
            .get(tags::PATIENT_ID)
            .and_then(|e| e.trimmed())
            .unwrap_or(b"");
        // The patient's identity for pseudonyms and the date offset: the Patient ID, or the
        // name and birth date when there is none.
        let identity: Vec<u8> = if !patient_id.is_empty() {
            patient_id.to_vec()
        } else {
            let mut v = b"name:".to_vec();
            v.extend_from_slice(
                ds.get(tags::PATIENT_NAME)
                    .and_then(|e| e.trimmed())
                    .unwrap_or(b""),
            );
            v.push(b'|');
            v.extend_from_slice(
                ds.get(tags::PATIENT_BIRTH_DATE)
                    .and_then(|e| e.trimmed())
                    .unwrap_or(b""),
            );
            v
        };
        let patient_pseudonym = format!("RV{}", d.key.token("patient-id", &identity, 12));
        let mut run = Run {
            d,
            grant,
            failure: None,
            requirements: standard::iod_requirements(sop_class),
            tokens: PhiTokens::default(),
            charset: CharacterSet::of(ds, &CharacterSet::default()),
            unclear: None,
            date_offset: d.key.date_offset_days(&identity),
            patient_pseudonym,
            counts: ActionCounts::default(),
            crosswalk: Vec::new(),
            uid_cache: HashMap::new(),
        };
        if d.config.crosswalk {
            run.crosswalk.push(CrosswalkEntry {
                kind: "patient_id",
                old: String::from_utf8_lossy(patient_id).into_owned(),
                new: run.patient_pseudonym.clone(),
            });
        }
        run.collect_tokens(ds);
        run
    }

    /// Gathers the identifying values of the object (anything the profile does not keep, of
    /// a VR that names, identifies or dates someone) to clean them out of kept text.
    fn collect_tokens(&mut self, ds: &DataSet<'_>) {
        let here = CharacterSet::of(ds, &self.charset);
        let outer = std::mem::replace(&mut self.charset, here);
        for el in &ds.elements {
            match &el.value {
                Value::Sequence(items) => {
                    for item in items {
                        self.collect_tokens(item);
                    }
                }
                Value::Bytes(b) => {
                    if el.is_private() || is_code_attribute(el.tag) {
                        continue;
                    }
                    let vr = self.semantic_vr(el);
                    let row = standard::profile_row(el.tag);
                    let kept = row.is_some_and(|row| {
                        let (act, _) = self.table_action(row);
                        act == TableAct::Basic(BasicAction::K)
                            || act == TableAct::Option(OptionAction::K)
                    });
                    if kept || (row.is_none() && vr != Vr::PN) {
                        continue;
                    }
                    if !matches!(
                        vr,
                        Vr::PN
                            | Vr::DA
                            | Vr::DT
                            | Vr::LO
                            | Vr::SH
                            | Vr::LT
                            | Vr::ST
                            | Vr::UT
                            | Vr::UC
                            | Vr::AE
                    ) {
                        continue;
                    }
                    // Identifiers and addresses, not descriptions (which are cleaned
                    // themselves and would otherwise blank ordinary words).
                    if matches!(
                        vr,
                        Vr::LO | Vr::SH | Vr::LT | Vr::ST | Vr::UT | Vr::UC | Vr::AE
                    ) && row.is_some_and(|r| r.options[7].is_some())
                    {
                        continue;
                    }
                    let text = clean::decode_for_cleaning(&self.charset, b).text();
                    for v in text.split('\\') {
                        match vr {
                            Vr::PN => self.tokens.add_person_name(v),
                            Vr::DA | Vr::DT => self.tokens.add_date(v),
                            _ => self.tokens.add(v, false),
                        }
                    }
                }
                Value::Fragments(_) => {}
            }
        }
        self.charset = outer;
    }

    /// The VR that says what a value means: the dictionary's where the element was read as UN.
    fn semantic_vr(&self, el: &Element<'_>) -> Vr {
        if el.vr == Vr::UN && !el.is_private() {
            standard::dictionary_entry(el.tag).map_or(Vr::UN, |e| e.vr)
        } else {
            el.vr
        }
    }

    /// The table's action for a row under the chosen options: an option column wins over the
    /// basic profile; among option columns, K (retain) wins over C (clean).
    fn table_action(&self, row: &standard::ProfileRow) -> (TableAct, Option<ProfileOption>) {
        let mut chosen: Option<(OptionAction, ProfileOption)> = None;
        for (i, o) in ProfileOption::ALL.iter().enumerate() {
            if !self.d.has(*o) {
                continue;
            }
            if let Some(a) = row.options[i] {
                match (chosen, a) {
                    (None, _) | (Some((OptionAction::C, _)), OptionAction::K) => {
                        chosen = Some((a, *o))
                    }
                    _ => {}
                }
            }
        }
        match chosen {
            Some((a, o)) => (TableAct::Option(a), Some(o)),
            None => (TableAct::Basic(row.basic), None),
        }
    }

    fn attribute_type(&self, path: &[u32]) -> Option<AttributeType> {
        self.requirements
            .as_ref()
            .and_then(|r| r.attribute_type(path))
    }

    /// Resolves an action to one the IOD allows: an attribute required at this place is never
    /// removed (emptied if Type 2, given a dummy if Type 1).
    fn floor(&self, act: Act, path: &[u32]) -> Act {
        match (act, self.attribute_type(path)) {
            (Act::Remove, Some(t)) if t.needs_value() => Act::Dummy,
            (Act::Remove, Some(_)) => Act::Empty,
            (Act::Empty, Some(t)) if t.needs_value() => Act::Dummy,
            (a, _) => a,
        }
    }

    fn resolve(&mut self, el: &Element<'_>, path: &[u32], ctx: Context) -> Act {
        let vr = self.semantic_vr(el);
        let Some(row) = standard::profile_row(el.tag) else {
            return self.unlisted(el, vr, path, ctx);
        };
        let ty = self.attribute_type(path);
        let act = match self.table_action(row).0 {
            TableAct::Option(OptionAction::K) => Act::Keep,
            TableAct::Option(OptionAction::C) => {
                if matches!(vr, Vr::DA | Vr::DT | Vr::TM)
                    && self.d.has(ProfileOption::RetainLongModifiedDates)
                {
                    Act::Shift
                } else {
                    Act::Clean
                }
            }
            TableAct::Basic(b) => match b {
                BasicAction::D => Act::Dummy,
                BasicAction::Z => Act::Empty,
                BasicAction::X => Act::Remove,
                BasicAction::K => Act::Keep,
                BasicAction::C => Act::Clean,
                BasicAction::U => Act::Uid,
                BasicAction::XD => match ty {
                    Some(_) => Act::Dummy,
                    None => Act::Remove,
                },
                BasicAction::XZ => match ty {
                    Some(t) if t.needs_value() => Act::Dummy,
                    Some(_) => Act::Empty,
                    None => Act::Remove,
                },
                BasicAction::XZD => match ty {
                    Some(t) if t.needs_value() => Act::Dummy,
                    Some(_) => Act::Empty,
                    None => Act::Remove,
                },
                BasicAction::ZD => match ty {
                    Some(t) if t.needs_value() => Act::Dummy,
                    _ => Act::Empty,
                },
                // Where the IOD has the sequence at all, U* (keep the items, remap their
                // UIDs) rather than Z: an emptied reference breaks the cross-references
                // other modules make to the same instances.
                BasicAction::XZU => match ty {
                    Some(_) => Act::Uid,
                    None => Act::Remove,
                },
            },
        };
        self.floor(act, path)
    }

    /// Attributes Table E.1-1 does not list: kept, except that the long tail of names and
    /// dates is treated like the listed ones, and free text inside replaced or cleaned
    /// sequences follows its sequence.
    fn unlisted(&mut self, el: &Element<'_>, vr: Vr, path: &[u32], ctx: Context) -> Act {
        if is_unknown(el) {
            // Not in the data dictionary (a newer edition's, or made up): removed unless a
            // site rule keeps it (see `element`).
            self.counts.unknown_removed += 1;
            return self.floor(Act::Remove, path);
        }
        // Waveform annotations are structured content the table does not list (free text
        // such as "per Dr …: sinus rhythm"): cleaned under Clean Structured Content, like
        // the Acquisition Context Sequence.
        if el.tag == tags::WAVEFORM_ANNOTATION_SEQUENCE
            && self.d.has(ProfileOption::CleanStructuredContent)
        {
            return self.floor(Act::Clean, path);
        }
        let act = match vr {
            Vr::PN => Act::Dummy,
            Vr::DA | Vr::DT => {
                if self.d.has(ProfileOption::RetainLongFullDates) {
                    Act::Keep
                } else if self.d.has(ProfileOption::RetainLongModifiedDates) {
                    Act::Shift
                } else {
                    let ty = self.attribute_type(path);
                    match ty {
                        Some(t) if t.needs_value() => Act::Dummy,
                        Some(_) => Act::Empty,
                        None => Act::Remove,
                    }
                }
            }
            Vr::LO | Vr::SH | Vr::LT | Vr::ST | Vr::UT | Vr::UC if !is_code_attribute(el.tag) => {
                match ctx {
                    Context::Plain => Act::Keep,
                    Context::Dummy => {
                        if el.tag == tags::CODE_MEANING {
                            Act::Clean
                        } else {
                            Act::Dummy
                        }
                    }
                    Context::Clean => Act::Clean,
                }
            }
            _ => Act::Keep,
        };
        self.floor(act, path)
    }

    fn dataset(&mut self, ds: &mut DataSet<'_>, path: &mut Vec<u32>, ctx: Context) {
        let here = CharacterSet::of(ds, &self.charset);
        let outer = std::mem::replace(&mut self.charset, here);
        // Private creators of this data set, by (group, block).
        let mut creators: HashMap<(u16, u8), String> = HashMap::new();
        for el in &ds.elements {
            let e = el.tag & 0xFFFF;
            if el.is_private() && (0x10..=0xFF).contains(&e) {
                if let Some(s) = el.to_str() {
                    creators.insert((el.group(), e as u8), s.trim().to_string());
                }
            }
        }
        let mut kept_blocks: BTreeSet<(u16, u8)> = BTreeSet::new();
        let overlays: Vec<u32> = ds
            .elements
            .iter()
            .filter(|el| el.tag & OVERLAY_GROUP_MASK == tags::repeating::OVERLAY_DATA)
            .map(|el| el.tag >> 16)
            .collect();
        let mut elements = std::mem::take(&mut ds.elements);
        let mut out = Vec::with_capacity(elements.len());
        for mut el in elements.drain(..) {
            if el.tag & 0xFFFF == 0 {
                continue; // group lengths would be stale
            }
            if el.is_private() {
                let e = el.tag & 0xFFFF;
                if (0x10..=0xFF).contains(&e) {
                    out.push(el); // creators: decided after their blocks
                    continue;
                }
                if self.private(&mut el, &creators, path, ctx) {
                    kept_blocks.insert((el.group(), (e >> 8) as u8));
                    out.push(el);
                }
                continue;
            }
            path.push(el.tag);
            let keep = self.element(&mut el, path, ctx);
            path.pop();
            if keep {
                out.push(el);
            }
        }
        out.retain(|el| {
            let e = el.tag & 0xFFFF;
            !(el.is_private() && (0x10..=0xFF).contains(&e))
                || kept_blocks.contains(&(el.group(), e as u8))
        });
        // An overlay whose Overlay Data (60xx,3000) went loses its whole group: the rest of
        // the Overlay Plane module is not valid without it.
        for group in overlays {
            let data = tags::repeating::in_group(tags::repeating::OVERLAY_DATA, group as u16);
            if !out.iter().any(|el| el.tag == data) {
                out.retain(|el| el.tag >> 16 != group);
            }
        }
        ds.elements = out;
        self.charset = outer;
    }

    /// Applies the Retain Safe Private option to one private data element; returns whether
    /// it stays.
    fn private(
        &mut self,
        el: &mut Element<'_>,
        creators: &HashMap<(u16, u8), String>,
        path: &mut Vec<u32>,
        ctx: Context,
    ) -> bool {
        let e = el.tag & 0xFFFF;
        let block = (e >> 8) as u8;
        let disposition = if self.d.has(ProfileOption::RetainSafePrivate) && e >= 0x1000 {
            creators.get(&(el.group(), block)).and_then(|creator| {
                let rows = standard::private_tags(el.group(), creator, e as u8);
                let matching: Vec<_> = rows
                    .iter()
                    .filter(|r| {
                        r.vr == el.vr || el.vr == Vr::UN || (el.vr == Vr::SQ && r.vr == Vr::SQ)
                    })
                    .collect();
                if matching.is_empty() {
                    return None;
                }
                // The most conservative of the matching rows.
                let d = if matching
                    .iter()
                    .any(|r| r.disposition == PrivateDisposition::Remove)
                {
                    PrivateDisposition::Remove
                } else if matching
                    .iter()
                    .any(|r| r.disposition == PrivateDisposition::Transform)
                {
                    PrivateDisposition::Transform
                } else {
                    PrivateDisposition::Keep
                };
                Some((d, matching[0].vr))
            })
        } else {
            None
        };
        let Some((disposition, kb_vr)) = disposition else {
            self.counts.private_removed += 1;
            return false;
        };
        if el.vr == Vr::UN && kb_vr != Vr::UN {
            el.vr = kb_vr;
        }
        let keep = match disposition {
            PrivateDisposition::Remove => false,
            PrivateDisposition::Keep => {
                if kb_vr == Vr::SQ {
                    path.push(el.tag);
                    let ok = self.sequence(el, path, ctx);
                    path.pop();
                    ok
                } else {
                    if is_free_text(el.vr) {
                        self.scrub_kept(el);
                    }
                    true
                }
            }
            PrivateDisposition::Transform => match kb_vr {
                Vr::DA | Vr::DT if self.d.has(ProfileOption::RetainLongModifiedDates) => {
                    self.shift(el, kb_vr)
                }
                Vr::DA | Vr::DT | Vr::TM if self.d.has(ProfileOption::RetainLongFullDates) => true,
                Vr::TM if self.d.has(ProfileOption::RetainLongModifiedDates) => true,
                Vr::UI => {
                    self.remap_uids(el);
                    true
                }
                _ => false,
            },
        };
        if keep {
            self.counts.private_kept += 1;
        } else {
            self.counts.private_removed += 1;
        }
        keep
    }

    /// Applies the profile to one standard element; returns whether it stays.
    fn element(&mut self, el: &mut Element<'_>, path: &mut Vec<u32>, ctx: Context) -> bool {
        if let Some(o) = self.d.config.profile.overrides.get(&el.tag) {
            self.counts.overridden += 1;
            let act = match o {
                Override::Keep => {
                    if is_unknown(el) {
                        self.counts.unknown_kept += 1;
                    }
                    // Kept as the site asks, less the object's identifying values.
                    if matches!(el.value, Value::Bytes(_))
                        && (is_free_text(self.semantic_vr(el))
                            || matches!(self.semantic_vr(el), Vr::UN | Vr::OB))
                    {
                        self.scrub_kept(el);
                    }
                    return true;
                }
                Override::Remove => self.floor(Act::Remove, path),
                Override::Empty => self.floor(Act::Empty, path),
                Override::Replace(v) => {
                    let vr = self.semantic_vr(el);
                    *el = Element::text(el.tag, vr, v);
                    return true;
                }
            };
            return self.apply(el, act, path, ctx);
        }
        let act = self.resolve(el, path, ctx);
        self.apply(el, act, path, ctx)
    }

    fn apply(&mut self, el: &mut Element<'_>, act: Act, path: &mut Vec<u32>, ctx: Context) -> bool {
        let vr = self.semantic_vr(el);
        // Sequences (and UN values the dictionary says are sequences).
        if vr == Vr::SQ || matches!(el.value, Value::Sequence(_)) {
            return match act {
                Act::Remove => {
                    self.counts.removed += 1;
                    false
                }
                Act::Empty => {
                    self.counts.emptied += 1;
                    el.vr = Vr::SQ;
                    el.value = Value::Sequence(Vec::new());
                    true
                }
                Act::Keep | Act::Uid | Act::Shift => self.sequence(el, path, ctx),
                Act::Dummy => {
                    let inner = if ctx == Context::Clean {
                        Context::Clean
                    } else {
                        Context::Dummy
                    };
                    self.sequence(el, path, inner)
                }
                Act::Clean => self.sequence(el, path, Context::Clean),
            };
        }
        if matches!(el.value, Value::Fragments(_)) {
            // Encapsulated pixel data (or another encapsulated value): copied as encoded.
            return act != Act::Remove;
        }
        match act {
            Act::Keep => {
                if is_free_text(vr) {
                    self.scrub_kept(el);
                }
                true
            }
            Act::Remove => {
                self.counts.removed += 1;
                false
            }
            Act::Empty => {
                if el.tag == tags::PATIENT_NAME || el.tag == tags::PATIENT_ID {
                    self.set_pseudonym(el);
                } else if vr == Vr::PN
                    && !el.bytes().is_some_and(|b| part10::trim_text(b).is_empty())
                {
                    self.pseudonymize_names(el);
                } else {
                    self.counts.emptied += 1;
                    el.value = Value::Bytes(Cow::Borrowed(&[]));
                }
                true
            }
            Act::Dummy => {
                self.dummy(el, vr);
                true
            }
            Act::Uid => {
                self.remap_uids(el);
                true
            }
            Act::Shift => self.shift(el, vr),
            Act::Clean => {
                match vr {
                    Vr::DA | Vr::DT | Vr::TM => {
                        // Clean of a date outside Modified Dates: no meaning survives; dummy.
                        self.dummy(el, vr);
                    }
                    Vr::PN => self.pseudonymize_names(el),
                    Vr::UI => self.remap_uids(el),
                    _ if vr.is_text() => self.clean_text(el),
                    _ => {
                        // Binary values asked to be cleaned (overlay bitmaps, curve data under
                        // Clean Graphics): their content cannot be checked for burned-in text
                        // without pixel analysis, so they are removed.
                        self.counts.removed += 1;
                        return false;
                    }
                }
                true
            }
        }
    }

    fn sequence(&mut self, el: &mut Element<'_>, path: &mut Vec<u32>, ctx: Context) -> bool {
        if let Value::Bytes(b) = &el.value {
            // A sequence kept as opaque bytes (UN, or implicit VR with defined length).
            match self.read_items(b) {
                Ok(items) => el.value = Value::Sequence(items),
                Err(e @ part10::Error::Budget(_)) => {
                    self.failure.get_or_insert(e);
                    return false;
                }
                Err(_) => {
                    self.counts.removed += 1;
                    return false;
                }
            }
        }
        el.vr = Vr::SQ;
        if let Value::Sequence(items) = &mut el.value {
            for item in items.iter_mut() {
                self.dataset(item, path, ctx);
            }
        }
        true
    }

    fn set_pseudonym(&mut self, el: &mut Element<'_>) {
        self.counts.pseudonymized += 1;
        let vr = if el.tag == tags::PATIENT_NAME {
            Vr::PN
        } else {
            Vr::LO
        };
        *el = Element::text(el.tag, vr, &self.patient_pseudonym.clone());
    }

    /// Replaces each name with a keyed pseudonym of it, so one physician or operator keeps
    /// one pseudonym across objects.
    fn pseudonymize_names(&mut self, el: &mut Element<'_>) {
        let Some(b) = el.trimmed() else { return };
        let names: Vec<String> = b
            .split(|&c| c == b'\\')
            .map(|n| {
                let n = part10::trim_text(n);
                if n.is_empty() {
                    String::new()
                } else {
                    format!(
                        "ANON^{}",
                        self.d.key.token("person-name", &n.to_ascii_uppercase(), 10)
                    )
                }
            })
            .collect();
        self.counts.pseudonymized += 1;
        *el = Element::text(el.tag, Vr::PN, &names.join("\\"));
    }

    fn dummy(&mut self, el: &mut Element<'_>, vr: Vr) {
        if el.tag == tags::PATIENT_NAME || el.tag == tags::PATIENT_ID {
            self.set_pseudonym(el);
            return;
        }
        let text: Option<&str> = match vr {
            Vr::PN => {
                self.pseudonymize_names(el);
                if el.trimmed().is_some_and(|b| !b.is_empty()) {
                    return;
                }
                Some("ANONYMOUS")
            }
            Vr::UI => {
                self.remap_uids(el);
                return;
            }
            Vr::DA => Some("19000101"),
            Vr::DT => Some("19000101000000"),
            Vr::TM => Some("000000"),
            Vr::DS | Vr::IS => Some("0"),
            Vr::AS => Some("000Y"),
            Vr::CS | Vr::AE => Some("ANONYMIZED"),
            Vr::UR => Some("urn:radveil:anonymized"),
            Vr::LO | Vr::SH | Vr::LT | Vr::ST | Vr::UT | Vr::UC => Some("ANONYMIZED"),
            _ => None,
        };
        self.counts.dummied += 1;
        match text {
            Some(t) => *el = Element::text(el.tag, vr, t),
            None => {
                // Binary: zeros of one value's size.
                let n = vr.swap_unit().max(2);
                el.vr = if vr == Vr::UN { Vr::OB } else { vr };
                el.value = Value::Bytes(Cow::Owned(vec![0; n]));
            }
        }
    }

    /// Replaces each UID of the value with its keyed UID. Under Retain UIDs, and for the
    /// standard's own UIDs (classes, transfer syntaxes, coding schemes), only values that are
    /// not valid UIDs are replaced: every UID that leaves is valid.
    fn remap_uids(&mut self, el: &mut Element<'_>) {
        let retain = self.d.has(ProfileOption::RetainUids);
        let Some(b) = el.trimmed() else { return };
        let text = String::from_utf8_lossy(b).into_owned();
        if retain
            && text
                .split('\\')
                .all(|u| u.is_empty() || values::is_valid_uid(u))
        {
            return;
        }
        let mut out = Vec::new();
        for uid in text.split('\\') {
            let uid = uid.trim_matches(|c: char| c == ' ' || c == '\0');
            let valid = values::is_valid_uid(uid);
            if uid.is_empty() || (valid && (retain || uid.starts_with("1.2.840.10008."))) {
                out.push(uid.to_string());
                continue;
            }
            let new = self.new_uid(uid);
            self.counts.uids_remapped += 1;
            out.push(new);
        }
        *el = Element::text(el.tag, Vr::UI, &out.join("\\"));
    }

    /// The keyed UID that replaces `uid` (cached per object; recorded for the crosswalk).
    fn new_uid(&mut self, uid: &str) -> String {
        if let Some(n) = self.uid_cache.get(uid) {
            return n.clone();
        }
        let n = self
            .d
            .key
            .uid(uid, self.d.config.profile.uid_root.as_deref());
        self.uid_cache.insert(uid.to_string(), n.clone());
        if self.d.config.crosswalk {
            self.crosswalk.push(CrosswalkEntry {
                kind: "uid",
                old: uid.to_string(),
                new: n.clone(),
            });
        }
        n
    }

    /// Reads the items of a sequence value stored as bytes (implicit VR little endian), as
    /// owned data, charging the copy and the tree to the grant when there is one.
    fn read_items(&mut self, b: &[u8]) -> Result<Vec<DataSet<'static>>, part10::Error> {
        let limits = part10::Limits::default();
        let items = match self.grant.as_deref_mut() {
            Some(g) => {
                g.grow(b.len() as u64)?;
                part10::read_items_in(b, Encoding::ImplicitLittle, limits, g)?
            }
            None => part10::read_items(b, Encoding::ImplicitLittle, limits)?,
        };
        Ok(items.into_iter().map(into_owned).collect())
    }

    /// Checks every value left in the data set against its VR (and the values the standard
    /// allows for it): UIDs that are not valid get keyed UIDs; ACR-NEMA dates and times are
    /// written in the standard form; any other malformed value is removed where the IOD does
    /// not require the attribute, emptied where it is Type 2, and the object held back where
    /// it is Type 1 or describes the pixel data. Messages name the element by tag, never its
    /// value.
    fn validate(&mut self, ds: &mut DataSet<'_>, path: &mut Vec<u32>) -> Result<(), DeidError> {
        let mut keep = Vec::with_capacity(ds.elements.len());
        for el in ds.elements.iter_mut() {
            path.push(el.tag);
            let verdict = self.validate_element(el, path);
            path.pop();
            keep.push(verdict?);
        }
        let mut keep = keep.into_iter();
        ds.elements.retain(|_| keep.next().unwrap_or(true));
        Ok(())
    }

    /// Validates one element (recursing into sequences); returns whether it stays.
    fn validate_element(
        &mut self,
        el: &mut Element<'_>,
        path: &mut Vec<u32>,
    ) -> Result<bool, DeidError> {
        if let Value::Sequence(items) = &mut el.value {
            for item in items.iter_mut() {
                self.validate(item, path)?;
            }
            return Ok(true);
        }
        let Some(bytes) = el.bytes() else {
            return Ok(true);
        };
        let e = el.tag & 0xFFFF;
        if el.is_private() && (0x10..=0xFF).contains(&e) {
            return Ok(true); // private creators: free text
        }
        let vr = self.semantic_vr(el);
        let ty = self.attribute_type(path);
        if vr == Vr::UI {
            if part10::trim_text(bytes).is_empty() {
                if !bytes.is_empty() {
                    // Spaces are not UID padding: the value is written empty.
                    el.value = Value::Bytes(Cow::Borrowed(&[]));
                }
                if ty.is_some_and(|t| t.needs_value()) {
                    return Err(DeidError::HeldBack(format!(
                        "{} is empty or blank, but the IOD requires a UID there (Type 1)",
                        element_name(path)
                    )));
                }
                return Ok(true);
            }
            if values::check(el.tag, vr, bytes).is_err() {
                // Replaced like U, whatever the options: an invalid UID is no identifier a
                // receiver could keep, and may hold anything.
                self.remap_invalid_uids(el);
            }
            return Ok(true);
        }
        let Err(problem) = values::check(el.tag, vr, bytes) else {
            return Ok(true);
        };
        if let Some(fixed) = values::standard_form(vr, bytes) {
            self.counts.cleaned += 1;
            *el = Element::text(el.tag, vr, &fixed);
            return Ok(true);
        }
        if describes_pixels(el.tag) || ty.is_some_and(|t| t.needs_value()) {
            return Err(DeidError::HeldBack(format!(
                "{} {} (kept attributes must be valid for their VR)",
                element_name(path),
                problem.describe()
            )));
        }
        if ty.is_some() {
            self.counts.emptied += 1;
            el.value = Value::Bytes(Cow::Borrowed(&[]));
            return Ok(true);
        }
        self.counts.removed += 1;
        Ok(false)
    }

    /// Replaces the values of a UI element that are not valid UIDs with keyed UIDs, whatever
    /// the options.
    fn remap_invalid_uids(&mut self, el: &mut Element<'_>) {
        let Some(b) = el.trimmed() else { return };
        let text = String::from_utf8_lossy(b).into_owned();
        let mut out = Vec::new();
        for uid in text.split('\\') {
            let uid = uid.trim_matches(|c: char| c == ' ' || c == '\0');
            if uid.is_empty() || values::is_valid_uid(uid) {
                out.push(uid.to_string());
            } else {
                self.counts.uids_remapped += 1;
                out.push(self.new_uid(uid));
            }
        }
        *el = Element::text(el.tag, Vr::UI, &out.join("\\"));
    }

    /// Shifts every date in a DA or DT value by the patient's offset; a value that is not a
    /// valid date is emptied (or replaced with a dummy where the IOD needs a value).
    fn shift(&mut self, el: &mut Element<'_>, vr: Vr) -> bool {
        if vr == Vr::TM {
            return true; // whole-day shifts keep times
        }
        let Some(b) = el.trimmed() else { return true };
        let text = String::from_utf8_lossy(b).into_owned();
        let mut out = Vec::new();
        for v in text.split('\\') {
            let v = v.trim();
            if v.is_empty() {
                out.push(String::new());
                continue;
            }
            // Ranges (in query-like attributes) shift each end.
            let shifted: Option<Vec<String>> = v
                .split('-')
                .map(|part| {
                    if part.is_empty() {
                        Some(String::new())
                    } else if vr == Vr::DA {
                        dates::shift_da(part, self.date_offset)
                    } else {
                        dates::shift_dt(part, self.date_offset)
                    }
                })
                .collect();
            match shifted {
                Some(parts) if vr == Vr::DA || !v.contains('-') => out.push(parts.join("-")),
                Some(_) | None => {
                    // DT with a negative UTC offset, or an invalid date.
                    match (vr == Vr::DT)
                        .then(|| dates::shift_dt(v, self.date_offset))
                        .flatten()
                    {
                        Some(s) => out.push(s),
                        None => {
                            self.counts.emptied += 1;
                            el.value = Value::Bytes(Cow::Borrowed(&[]));
                            return true;
                        }
                    }
                }
            }
        }
        self.counts.dates_shifted += 1;
        *el = Element::text(el.tag, vr, &out.join("\\"));
        true
    }

    /// Cleans free text: identifying values of this object and identifying patterns blanked.
    fn clean_text(&mut self, el: &mut Element<'_>) {
        self.counts.cleaned += 1;
        self.scrub(el, true);
    }

    /// Kept text still loses identifying values found elsewhere in the object.
    fn scrub_kept(&mut self, el: &mut Element<'_>) {
        if self.tokens.is_empty() {
            return;
        }
        if self.scrub(el, false) {
            self.counts.cleaned += 1;
        }
    }

    /// Blanks the object's identifying values (and, with `patterns`, identifying patterns)
    /// in one text element, read in its data set's character set; returns whether anything
    /// changed. Text whose bytes do not decode cannot be called clean: the object is then
    /// held back (noted in `unclear`).
    fn scrub(&mut self, el: &mut Element<'_>, patterns: bool) -> bool {
        let Some(b) = el.bytes() else { return false };
        let mut v = b.to_vec();
        let tokens = (!self.tokens.is_empty()).then_some(&self.tokens);
        let r = clean::scrub(&mut v, &self.charset, tokens, patterns);
        if r.undecodable && self.unclear.is_none() {
            self.unclear = Some(format!(
                "{} holds text that does not decode in its Specific Character Set, so it cannot be cleaned",
                part10::tag_name(el.tag)
            ));
        }
        if r.changed {
            el.value = Value::Bytes(Cow::Owned(v));
        }
        r.changed
    }
}

fn into_owned(ds: DataSet<'_>) -> DataSet<'static> {
    DataSet {
        elements: ds
            .elements
            .into_iter()
            .map(|e| Element {
                tag: e.tag,
                vr: e.vr,
                value: match e.value {
                    Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
                    Value::Sequence(items) => {
                        Value::Sequence(items.into_iter().map(into_owned).collect())
                    }
                    Value::Fragments(f) => Value::Fragments(
                        f.into_iter().map(|x| Cow::Owned(x.into_owned())).collect(),
                    ),
                },
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableAct {
    Basic(BasicAction),
    Option(OptionAction),
}

#[cfg(test)]
mod tests;
