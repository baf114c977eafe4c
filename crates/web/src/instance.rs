//! What the gateway reads of an instance it receives: its identifiers, its transfer syntax
//! and the attributes QIDO-RS searches, from one parse of the Part 10 bytes, with reasons
//! (never values) when they are missing or invalid.

use radveil_part10::{self as p10, DataSet, Limits};
use radveil_standard::tags;

/// The identifiers of a received instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// SOP Class UID.
    pub sop_class: String,
    /// SOP Instance UID.
    pub sop_instance: String,
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// Patient ID (may be empty: Type 2).
    pub patient_id: String,
    /// Issuer of Patient ID (empty when absent).
    pub issuer: String,
    /// The Transfer Syntax UID of the data set.
    pub transfer_syntax: String,
    /// The attributes QIDO-RS matches and returns (from the same parse).
    pub attributes: crate::dicom_json::Attrs,
}

/// Why a received part is not stored: a PS3.18 failure reason and words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Failure Reason (0008,1197) for the store response.
    pub reason: u16,
    /// What was wrong, naming tags only.
    pub why: String,
}

/// Failure Reason: the part cannot be understood (not DICOM, truncated, malformed).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Failure Reason: a processing failure (identifiers missing or not matching the request).
pub const PROCESSING_FAILURE: u16 = 0x0110;
/// Failure Reason: the store has no room or no memory for it now.
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Failure Reason: another object with this SOP Instance UID is stored.
pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;

fn refuse(reason: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        why: why.into(),
    }
}

/// Reads the identifiers of a Part 10 file.
pub fn identify(bytes: &[u8]) -> Result<Identified, Refusal> {
    identify_with(bytes, |_, _, _| ()).map(|(id, ())| id)
}

/// Reads the identifiers of a Part 10 file like [`identify`], then hands the same parse
/// (the data set and its encoding) to `inspect`, so that what else is
/// read of the instance (its signatures, binding hash and advisories at ingest) costs no
/// second parse. `inspect` runs only for an instance whose identifiers are valid, and gets
/// them.
pub fn identify_with<T>(
    bytes: &[u8],
    inspect: impl FnOnce(&Identified, &DataSet<'_>, p10::Encoding) -> T,
) -> Result<(Identified, T), Refusal> {
    let mut inflated = Vec::new();
    let (meta, ds, encoding) = p10::read_file(bytes, &mut inflated, Limits::default())
        .map_err(|e| refuse(CANNOT_UNDERSTAND, format!("not a readable DICOM file: {e}")))?;
    let uid = |ds: &DataSet<'_>, tag: u32| -> Result<String, Refusal> {
        let v = ds.string(tag).unwrap_or_default();
        let v = v.trim_end_matches(['\0', ' ']).to_string();
        if radveil_deid::values::is_valid_uid(&v) {
            Ok(v)
        } else {
            Err(refuse(
                PROCESSING_FAILURE,
                format!("{} is missing or not a valid UID", p10::tag_name(tag)),
            ))
        }
    };
    let sop_class = uid(&ds, tags::SOP_CLASS_UID)?;
    let sop_instance = uid(&ds, tags::SOP_INSTANCE_UID)?;
    // (0002,0003) should equal (0008,0018) (PS3.10 §7.1); real files disagree at times
    // (pydicom's rtplan.dcm). The data set's own UID names the instance.
    let text = |tag: u32| {
        ds.string(tag)
            .map(|s| s.trim_matches([' ', '\0']).to_string())
            .unwrap_or_default()
    };
    let transfer_syntax = meta
        .transfer_syntax
        .trim_end_matches(['\0', ' '])
        .to_string();
    let attributes = crate::dicom_json::extract(&ds, encoding, &transfer_syntax);
    let id = Identified {
        sop_class,
        sop_instance,
        study: uid(&ds, tags::STUDY_INSTANCE_UID)?,
        series: uid(&ds, tags::SERIES_INSTANCE_UID)?,
        patient_id: text(tags::PATIENT_ID),
        issuer: text(tags::ISSUER_OF_PATIENT_ID),
        transfer_syntax,
        attributes,
    };
    let found = inspect(&id, &ds, encoding);
    Ok((id, found))
}
