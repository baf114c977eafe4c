//! The Digital Signature profiles of PS3.15 Annex C: which attributes a signature must cover.
//!
//! - Base RSA (C.1): an RSA signature with a sound MAC; no attribute is required.
//! - Creator RSA (C.2): the instance's identity (SOP Class and Instance, Study and Series
//!   Instance UIDs, creation date and time) and every attribute present of the modules that
//!   make up what was created: equipment, image and acquisition, pixels, overlays and
//!   graphics, SR content, waveforms, multi-frame functional groups, and the image modules
//!   of the enhanced IODs, encapsulated documents, segmentations, surfaces, structured
//!   displays and implant templates. Whole modules are required, so a signature that passes
//!   here also passes DCMTK's attribute lists (`dcmsign --require-creator`); the integration
//!   tests check that on real files.
//! - Authorization RSA (C.3): what the Creator profile covers plus the displayed identity of
//!   the patient and study, since an authorizer approves what they saw.
//! - Structured Report RSA (C.4): the SR document's identity, the equipment that made it,
//!   its verification, and its content tree.
//!
//! Module membership comes from the standard's tables (`radveil-standard`).

use radveil_part10::DataSet;
use radveil_standard::tags;

use crate::{crypto::MacAlgorithm, signable};

/// A PS3.15 Annex C digital signature profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProfile {
    /// Base RSA Digital Signature Profile.
    Base,
    /// Creator RSA Digital Signature Profile.
    Creator,
    /// Authorization RSA Digital Signature Profile.
    Authorization,
    /// Structured Report RSA Digital Signature Profile.
    StructuredReport,
}

const IDENTITY: [u32; 6] = [
    tags::INSTANCE_CREATION_DATE,
    tags::INSTANCE_CREATION_TIME,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
];

/// Clears the low byte of the group number, which is the part of an overlay group
/// (60xx,eeee) that repeats: a tag of any overlay group becomes the first group's
/// (6000,eeee), as the standard's module tables list it.
const REPEATING_GROUP_MASK: u32 = 0xFF00_FFFF;

const CREATOR_MODULES: [&str; 34] = [
    "general-equipment",
    "enhanced-general-equipment",
    "general-image",
    "general-acquisition",
    "image-pixel",
    "image-plane",
    "overlay-plane",
    "graphic-annotation",
    "sr-document-general",
    "sr-document-content",
    "waveform",
    "waveform-annotation",
    "multi-frame-functional-groups",
    "frame-of-reference",
    // The modality image modules of the enhanced and newer IODs that C.2 names.
    "enhanced-ct-image",
    "enhanced-mr-image",
    "mr-spectroscopy",
    "enhanced-xa-xrf-image",
    "enhanced-us-image",
    "enhanced-mammography-image",
    "x-ray-3d-image",
    "raw-data",
    "encapsulated-document",
    "segmentation-image",
    "surface-mesh",
    "point-cloud",
    "tractography-results",
    "volumetric-graphic-annotation",
    "structured-display",
    "structured-display-annotation",
    "structured-display-image-box",
    "generic-implant-template-description",
    "implant-assembly-template",
    "implant-template-group",
];

const AUTHORIZATION_MODULES: [&str; 3] = ["patient", "general-study", "general-series"];

const SR_MODULES: [&str; 3] = [
    "general-equipment",
    "sr-document-general",
    "sr-document-content",
];

impl SignatureProfile {
    /// Parses `base`, `creator`, `authorization` (or `auth`), `sr`.
    pub fn from_name(name: &str) -> Option<SignatureProfile> {
        Some(match name {
            "base" => SignatureProfile::Base,
            "creator" => SignatureProfile::Creator,
            "authorization" | "auth" => SignatureProfile::Authorization,
            "sr" => SignatureProfile::StructuredReport,
            _ => return None,
        })
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SignatureProfile::Base => "base",
            SignatureProfile::Creator => "creator",
            SignatureProfile::Authorization => "authorization",
            SignatureProfile::StructuredReport => "sr",
        }
    }

    /// Whether the MAC algorithm is acceptable for the profile (all profiles exclude MD5).
    pub fn allows(self, mac: MacAlgorithm) -> bool {
        mac != MacAlgorithm::Md5
    }

    /// Tags a signature of this profile must cover whether or not the data set has them
    /// (PS3.15 C.2-C.4: the object's identity), so a data set lacking one cannot satisfy it.
    pub fn unconditional(self) -> &'static [u32] {
        match self {
            SignatureProfile::Base => &[],
            SignatureProfile::Creator | SignatureProfile::Authorization => &[
                tags::SOP_CLASS_UID,
                tags::SOP_INSTANCE_UID,
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID,
            ],
            SignatureProfile::StructuredReport => &[
                tags::SOP_CLASS_UID,
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID,
            ],
        }
    }

    /// Why `ds` cannot carry a signature of this profile at all, if it cannot: the SR
    /// profile applies to SR documents only (Value Type, Concept Name Code Sequence and
    /// Content Sequence present), as dcmsign checks.
    pub fn inapplicable(self, ds: &DataSet<'_>) -> Option<&'static str> {
        let sr = [
            tags::VALUE_TYPE,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            tags::CONTENT_SEQUENCE,
        ]
        .iter()
        .all(|t| ds.get(*t).is_some());
        (self == SignatureProfile::StructuredReport && !sr)
            .then_some("the data set is not a structured report document")
    }

    /// The top-level tags of `ds` that a signature of this profile must cover.
    pub fn required(self, ds: &DataSet<'_>) -> Vec<u32> {
        let modules: &[&str] = match self {
            SignatureProfile::Base => return Vec::new(),
            SignatureProfile::Creator => &CREATOR_MODULES,
            SignatureProfile::Authorization => &CREATOR_MODULES,
            SignatureProfile::StructuredReport => &SR_MODULES,
        };
        let extra: &[&str] = if self == SignatureProfile::Authorization {
            &AUTHORIZATION_MODULES
        } else {
            &[]
        };
        let mut module_tags: Vec<u32> = modules
            .iter()
            .chain(extra)
            .flat_map(|m| radveil_standard::module_attributes(m).iter().copied())
            .collect();
        module_tags.sort_unstable();
        module_tags.dedup();
        let in_modules = |tag: u32| {
            // Overlay groups repeat: (60xx,eeee) matches the module's (6000,eeee).
            let base = if tag >> 24 == 0x60 && (tag >> 16).is_multiple_of(2) {
                tag & REPEATING_GROUP_MASK
            } else {
                tag
            };
            module_tags.binary_search(&base).is_ok()
        };
        ds.elements
            .iter()
            .map(|e| e.tag)
            .filter(|&t| signable(t) && (IDENTITY.contains(&t) || in_modules(t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use radveil_part10::{Element, Vr};

    #[test]
    fn creator_requires_identity_pixels_and_equipment_but_not_the_patient() {
        // Overlay Data of the second overlay group.
        const OVERLAY_DATA_6002: u32 =
            tags::repeating::in_group(tags::repeating::OVERLAY_DATA, 0x6002);
        let mut ds = DataSet::default();
        for (tag, vr) in [
            (tags::SOP_CLASS_UID, Vr::UI),
            (tags::SOP_INSTANCE_UID, Vr::UI),
            (tags::MANUFACTURER, Vr::LO), // General Equipment
            (tags::PATIENT_NAME, Vr::PN), // Patient
            (tags::ROWS, Vr::US),         // Image Pixel
            (OVERLAY_DATA_6002, Vr::OW),
        ] {
            ds.put(Element::text(tag, vr, "1"));
        }
        let creator = SignatureProfile::Creator.required(&ds);
        assert_eq!(
            creator,
            vec![
                tags::SOP_CLASS_UID,
                tags::SOP_INSTANCE_UID,
                tags::MANUFACTURER,
                tags::ROWS,
                OVERLAY_DATA_6002
            ]
        );
        let auth = SignatureProfile::Authorization.required(&ds);
        assert!(auth.contains(&tags::PATIENT_NAME));
        assert!(SignatureProfile::Base.required(&ds).is_empty());
    }
}
