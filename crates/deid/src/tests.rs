//! Tests of the engine: every action code of Table E.1-1, every option, the bookkeeping
//! attributes, determinism, key separation, and planted-PHI properties.

use super::*;
use proptest::prelude::*;
use radveil_part10::{Element, Value};
use zeroize::Zeroizing;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn key(b: u8) -> Key {
    Key::new(Zeroizing::new(vec![b; 40])).unwrap()
}

fn deid_with(options: &[ProfileOption]) -> Deidentifier {
    let mut config = Config::default();
    config.profile.options = options.iter().copied().collect();
    Deidentifier::new(key(7), config).unwrap()
}

fn text(tag: u32, value: &str) -> Element<'static> {
    let vr = standard::dictionary_entry(tag).map_or(Vr::LO, |e| e.vr);
    Element::text(tag, vr, value)
}

fn seq(tag: u32, items: Vec<DataSet<'static>>) -> Element<'static> {
    Element {
        tag,
        vr: Vr::SQ,
        value: Value::Sequence(items),
    }
}

fn ct() -> DataSet<'static> {
    let mut ds = DataSet::default();
    for (tag, v) in [
        (tags::SOP_CLASS_UID, CT),
        (tags::SOP_INSTANCE_UID, "1.2.3.4.5.6.7.1"),
        (tags::STUDY_DATE, "20210405"),
        (tags::ACQUISITION_DATE, "20210406"),
        (tags::STUDY_TIME, "101010"),
        (tags::ACCESSION_NUMBER, "ACC998877"),
        (tags::MODALITY, "CT"),
        (tags::REFERRING_PHYSICIAN_NAME, "WELBY^MARCUS"),
        (tags::PATIENT_NAME, "DOE^JANE"),
        (tags::PATIENT_ID, "MRN0042"),
        (tags::PATIENT_BIRTH_DATE, "19700101"),
        (tags::PATIENT_SEX, "F"),
        (tags::STUDY_INSTANCE_UID, "1.2.3.4.5.6"),
        (tags::SERIES_INSTANCE_UID, "1.2.3.4.5.6.7"),
        (tags::STUDY_ID, "STUDY77"),
        (tags::ROWS, "2"),
    ] {
        ds.put(text(tag, v));
    }
    ds.put(Element {
        tag: part10::PIXEL_DATA,
        vr: Vr::OW,
        value: Value::Bytes(Cow::Owned(vec![1, 2, 3, 4, 5, 6, 7, 8])),
    });
    ds
}

fn encode(ds: &DataSet<'_>, ts: &str) -> Vec<u8> {
    let mut meta = DataSet::default();
    meta.put(Element::text(
        tags::MEDIA_STORAGE_SOP_CLASS_UID,
        Vr::UI,
        &ds.string(tags::SOP_CLASS_UID).unwrap_or_default(),
    ));
    meta.put(Element::text(
        tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
        Vr::UI,
        &ds.string(tags::SOP_INSTANCE_UID).unwrap_or_default(),
    ));
    meta.put(Element::text(tags::TRANSFER_SYNTAX_UID, Vr::UI, ts));
    meta.put(Element::text(
        tags::SOURCE_APPLICATION_ENTITY_TITLE,
        Vr::AE,
        "MODALITY_AE",
    ));
    let mut out = Vec::new();
    part10::write_file(&meta, ds, ts, &mut out);
    out
}

fn decode(bytes: &[u8]) -> (DataSet<'static>, DataSet<'static>) {
    let meta = part10::read_file_meta(bytes).unwrap();
    let ts = part10::TransferSyntax::from_uid(&meta.transfer_syntax);
    let body = if ts.deflated {
        part10::inflate(meta.body, 1 << 30).unwrap()
    } else {
        meta.body.to_vec()
    };
    let ds = part10::read_dataset(&body, ts.encoding, part10::Limits::default()).unwrap();
    (into_owned(meta.elements), into_owned(ds))
}

/// What a test looks at after de-identifying: the output bytes, identity and counts.
struct Done {
    bytes: Vec<u8>,
    identity: Identity,
    counts: ActionCounts,
}

fn run(d: &Deidentifier, ds: &DataSet<'_>) -> (Done, DataSet<'static>) {
    let input = encode(ds, part10::EXPLICIT_VR_LITTLE_ENDIAN);
    let out = d.deidentify(&input).unwrap();
    let done = Done {
        bytes: out.file.to_vec(),
        identity: out.identity,
        counts: out.counts,
    };
    let (_, back) = decode(&done.bytes);
    (done, back)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.to_ascii_uppercase();
    hay.to_ascii_uppercase()
        .windows(n.len())
        .any(|w| w == n.as_bytes())
}

/// Every exact-tag text row of Table E.1-1, planted at the top level of a CT object, gets
/// the Basic Profile action the table gives, resolved by its Type in the CT Image IOD.
#[test]
fn every_basic_profile_row_gets_its_action() {
    let d = deid_with(&[]);
    let req = standard::iod_requirements(CT).unwrap();
    let mut checked = 0;
    for row in standard::generated::PROFILE
        .iter()
        .filter(|r| r.mask == u32::MAX)
    {
        let Some(entry) = standard::dictionary_entry(row.tag) else {
            continue;
        };
        let vr = entry.vr;
        if !vr.is_text()
            || row.tag >> 16 == part10::FILE_META_GROUP
            || matches!(
                row.tag,
                tags::SOP_CLASS_UID
                    | tags::SOP_INSTANCE_UID
                    | tags::STUDY_INSTANCE_UID
                    | tags::SERIES_INSTANCE_UID
            )
        {
            continue;
        }
        let planted = match vr {
            Vr::DA => "20010203".to_string(),
            Vr::DT => "20010203040506".to_string(),
            Vr::TM => "040506".to_string(),
            Vr::UI => "1.9.8.7.6".to_string(),
            Vr::DS | Vr::IS => "12345".to_string(),
            Vr::AS => "042Y".to_string(),
            _ => "PLANTEDQX".to_string(),
        };
        let mut ds = ct();
        ds.put(Element::text(row.tag, vr, &planted));
        let (_, out) = run(&d, &ds);
        let got = out.get(row.tag);
        let ty = req.attribute_type(&[row.tag]);
        let value = got.and_then(|e| e.to_str()).map(|s| s.into_owned());
        let ctx = format!(
            "{} ({:08X}) {:?} type {:?} -> {:?}",
            row.name, row.tag, row.basic, ty, value
        );
        use BasicAction::*;
        let expect_present = match row.basic {
            X => ty.is_some(),
            XZ | XD | XZD | XZU => ty.is_some(),
            K | C | D | Z | ZD | U => true,
        };
        assert_eq!(got.is_some(), expect_present, "{ctx}");
        if let Some(v) = value {
            match row.basic {
                K => assert_eq!(v, planted, "{ctx}"),
                _ => assert_ne!(v, planted, "{ctx}"),
            }
            let needs_value = ty.is_some_and(|t| t.needs_value());
            if matches!(row.basic, D | U) || needs_value {
                assert!(!v.is_empty(), "{ctx}");
            }
            if matches!(row.basic, Z | XZ)
                && !needs_value
                && vr != Vr::PN
                && row.tag != tags::PATIENT_ID
            {
                assert!(v.is_empty(), "{ctx}");
            }
        }
        checked += 1;
    }
    assert!(checked > 250, "only {checked} rows checked");
}

#[test]
fn required_attributes_survive_with_valid_values() {
    let d = deid_with(&[]);
    let (out, ds) = run(&d, &ct());
    // Type 2 in the CT Image IOD: present, emptied.
    assert_eq!(ds.string(tags::ACCESSION_NUMBER).unwrap(), "");
    assert_eq!(ds.string(tags::STUDY_DATE).unwrap(), "");
    assert_eq!(ds.string(tags::PATIENT_BIRTH_DATE).unwrap(), "");
    // Names and IDs are keyed pseudonyms.
    let pid = ds.string(tags::PATIENT_ID).unwrap();
    assert!(pid.starts_with("RV") && pid.len() == 14, "{pid}");
    assert_eq!(ds.string(tags::PATIENT_NAME).unwrap(), pid);
    assert!(ds
        .string(tags::REFERRING_PHYSICIAN_NAME)
        .unwrap()
        .starts_with("ANON^"));
    assert_eq!(out.identity.patient, pid);
    // Kept: Patient's Sex is not in the table's removal list for CT? It is X with
    // retain-patient-characteristics K, but Type 2 in the Patient module: emptied.
    assert_eq!(ds.string(tags::PATIENT_SEX).unwrap(), "");
    // Pixel data untouched.
    assert_eq!(
        ds.get(part10::PIXEL_DATA).unwrap().bytes().unwrap(),
        &[1, 2, 3, 4, 5, 6, 7, 8]
    );
}

#[test]
fn uids_are_remapped_everywhere_consistently() {
    let d = deid_with(&[]);
    let mut ds = ct();
    let mut item = DataSet::default();
    item.put(text(
        tags::REFERENCED_SOP_CLASS_UID,
        "1.2.840.10008.5.1.4.1.1.2",
    ));
    item.put(text(tags::REFERENCED_SOP_INSTANCE_UID, "1.2.3.4.5.6.7.1"));
    ds.put(seq(tags::REFERENCED_IMAGE_SEQUENCE, vec![item]));
    let (out, back) = run(&d, &ds);
    let sop = back.string(tags::SOP_INSTANCE_UID).unwrap();
    assert!(sop.starts_with("2.25."));
    let (meta, _) = decode(&out.bytes);
    assert_eq!(
        meta.string(tags::MEDIA_STORAGE_SOP_INSTANCE_UID).unwrap(),
        sop
    );
    assert_eq!(meta.string(tags::MEDIA_STORAGE_SOP_CLASS_UID).unwrap(), CT);
    assert!(
        meta.get(tags::SOURCE_APPLICATION_ENTITY_TITLE).is_none(),
        "source AE title must not survive"
    );
    // X/Z/U*: Referenced Image Sequence is Type 3 in CT: removed.
    assert!(back.get(tags::REFERENCED_IMAGE_SEQUENCE).is_none());
    // The same original UID maps to the same new one across objects.
    let (_, again) = run(&d, &ds);
    assert_eq!(again.string(tags::SOP_INSTANCE_UID).unwrap(), sop);
    assert_eq!(
        back.string(tags::SOP_CLASS_UID).unwrap(),
        CT,
        "standard UIDs are kept"
    );
}

#[test]
fn references_inside_kept_sequences_are_remapped_like_the_referenced_object() {
    let d = deid_with(&[ProfileOption::CleanStructuredContent]);
    let mut ds = ct();
    let mut item = DataSet::default();
    item.put(text(tags::REFERENCED_SOP_CLASS_UID, CT));
    item.put(text(tags::REFERENCED_SOP_INSTANCE_UID, "1.2.3.4.5.6.7.1"));
    // Source Image Sequence is kept with U on the contained UIDs where Type 1;
    // use Referenced Series? Check via Content Sequence cleaning path instead.
    let mut content = DataSet::default();
    content.put(seq(tags::REFERENCED_SOP_SEQUENCE, vec![item]));
    ds.put(seq(tags::CONTENT_SEQUENCE, vec![content]));
    let (_, back) = run(&d, &ds);
    let sop = back.string(tags::SOP_INSTANCE_UID).unwrap();
    let Some(Value::Sequence(items)) = back.get(tags::CONTENT_SEQUENCE).map(|e| &e.value) else {
        panic!("content kept")
    };
    let Some(Value::Sequence(refs)) = items[0]
        .get(tags::REFERENCED_SOP_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("refs kept")
    };
    assert_eq!(
        refs[0].string(tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
        sop
    );
}

#[test]
fn retain_uids_keeps_uids() {
    let d = deid_with(&[ProfileOption::RetainUids]);
    let (_, back) = run(&d, &ct());
    assert_eq!(
        back.string(tags::SOP_INSTANCE_UID).unwrap(),
        "1.2.3.4.5.6.7.1"
    );
    assert_eq!(
        back.string(tags::STUDY_INSTANCE_UID).unwrap(),
        "1.2.3.4.5.6"
    );
}

#[test]
fn retain_device_and_institution_identity() {
    let mut ds = ct();
    ds.put(text(tags::DEVICE_SERIAL_NUMBER, "SERIAL-4711"));
    ds.put(text(tags::INSTITUTION_NAME, "ST ELSEWHERE HOSPITAL"));
    ds.put(text(tags::STATION_NAME, "CTSTATION9"));
    let (_, plain) = run(&deid_with(&[]), &ds);
    assert_ne!(
        plain.string(tags::DEVICE_SERIAL_NUMBER).as_deref(),
        Some("SERIAL-4711")
    );
    assert_ne!(
        plain.string(tags::INSTITUTION_NAME).as_deref(),
        Some("ST ELSEWHERE HOSPITAL")
    );
    let (_, dev) = run(&deid_with(&[ProfileOption::RetainDeviceIdentity]), &ds);
    assert_eq!(
        dev.string(tags::DEVICE_SERIAL_NUMBER).unwrap(),
        "SERIAL-4711"
    );
    assert_eq!(dev.string(tags::STATION_NAME).unwrap(), "CTSTATION9");
    let (_, inst) = run(&deid_with(&[ProfileOption::RetainInstitutionIdentity]), &ds);
    assert_eq!(
        inst.string(tags::INSTITUTION_NAME).unwrap(),
        "ST ELSEWHERE HOSPITAL"
    );
}

#[test]
fn retain_patient_characteristics() {
    let mut ds = ct();
    ds.put(text(tags::PATIENT_AGE, "042Y"));
    ds.put(text(tags::PATIENT_WEIGHT, "71.5"));
    let (_, plain) = run(&deid_with(&[]), &ds);
    assert!(plain.get(tags::PATIENT_AGE).is_none());
    let (_, kept) = run(
        &deid_with(&[ProfileOption::RetainPatientCharacteristics]),
        &ds,
    );
    assert_eq!(kept.string(tags::PATIENT_AGE).unwrap(), "042Y");
    assert_eq!(kept.string(tags::PATIENT_WEIGHT).unwrap(), "71.5");
    assert_eq!(kept.string(tags::PATIENT_SEX).unwrap(), "F");
}

/// A DA value of eight bytes that are not eight ASCII digits (a UTF-8 character, or bytes
/// that are not UTF-8, across the year/month boundary) is emptied when dates are shifted:
/// never a panic.
#[test]
fn modified_dates_that_are_not_ascii_are_emptied() {
    let d = deid_with(&[ProfileOption::RetainLongModifiedDates]);
    for value in [&b"123\xC3\xA9567"[..], b"12\xFF\xFF567", b"12345\xFF78"] {
        let mut ds = ct();
        ds.put(Element {
            tag: tags::STUDY_DATE,
            vr: Vr::DA,
            value: Value::Bytes(Cow::Owned(value.to_vec())),
        });
        let (_, out) = run(&d, &ds);
        assert!(
            out.get(tags::STUDY_DATE)
                .and_then(|e| e.bytes())
                .is_none_or(|b| b.is_empty()),
            "{value:?}"
        );
    }
}

#[test]
fn full_dates_are_kept_and_modified_dates_shifted_per_patient() {
    let (_, full) = run(&deid_with(&[ProfileOption::RetainLongFullDates]), &ct());
    assert_eq!(full.string(tags::STUDY_DATE).unwrap(), "20210405");
    assert_eq!(
        full.string(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED)
            .unwrap(),
        "UNMODIFIED"
    );

    let d = deid_with(&[ProfileOption::RetainLongModifiedDates]);
    let (_, a) = run(&d, &ct());
    let study = a.string(tags::STUDY_DATE).unwrap();
    let acq = a.string(tags::ACQUISITION_DATE).unwrap();
    assert_ne!(study, "20210405");
    assert_eq!(study.len(), 8);
    // One day apart before, one day apart after.
    assert_eq!(dates::shift_da(&study, 1).unwrap(), acq);
    assert_eq!(
        a.string(tags::STUDY_TIME).unwrap(),
        "101010",
        "times are kept"
    );
    assert_eq!(
        a.string(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED)
            .unwrap(),
        "MODIFIED"
    );
    // Another object of the same patient: the same offset.
    let mut other = ct();
    other.put(text(tags::SOP_INSTANCE_UID, "1.2.3.99"));
    other.put(text(tags::STUDY_DATE, "20210406"));
    let (_, b) = run(&d, &other);
    assert_eq!(b.string(tags::STUDY_DATE).unwrap(), acq);
    // Dates in nested sequences are shifted too.
    let mut nested = ct();
    let mut item = DataSet::default();
    item.put(text(tags::CONTRIBUTION_DATE_TIME, "20210405120000"));
    item.put(text(tags::MANUFACTURER, "ACME"));
    nested.put(seq(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, vec![item]));
    let (out, c) = run(&d, &nested);
    assert!(!contains(&out.bytes, "20210405"));
    let Some(Value::Sequence(items)) = c
        .get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("kept")
    };
    assert_eq!(
        items[0].string(tags::CONTRIBUTION_DATE_TIME).unwrap(),
        format!("{study}120000")
    );
}

#[test]
fn dates_are_removed_without_a_date_option() {
    let (out, ds) = run(&deid_with(&[]), &ct());
    assert!(!contains(&out.bytes, "20210405") && !contains(&out.bytes, "19700101"));
    assert_eq!(
        ds.string(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED)
            .unwrap(),
        "REMOVED"
    );
}

#[test]
fn clean_descriptors_keeps_descriptions_without_identifiers() {
    let mut ds = ct();
    ds.put(text(
        tags::STUDY_DESCRIPTION,
        "CT HEAD FOR JANE DOE MRN0042",
    ));
    ds.put(text(tags::SERIES_DESCRIPTION, "AXIAL 5MM seen 2021-04-05"));
    let (_, plain) = run(&deid_with(&[]), &ds);
    assert!(plain.get(tags::STUDY_DESCRIPTION).is_none());
    let (out, clean) = run(&deid_with(&[ProfileOption::CleanDescriptors]), &ds);
    let s = clean.string(tags::STUDY_DESCRIPTION).unwrap();
    assert!(s.starts_with("CT HEAD FOR"), "{s}");
    for phi in ["JANE", "DOE", "MRN0042", "2021-04-05"] {
        assert!(!contains(&out.bytes, phi), "{phi} survived: {s}");
    }
    assert!(clean
        .string(tags::SERIES_DESCRIPTION)
        .unwrap()
        .starts_with("AXIAL 5MM"));
}

fn sr() -> DataSet<'static> {
    let mut ds = ct();
    ds.put(text(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.88.11"));
    ds.put(text(tags::MODALITY, "SR"));
    let mut concept = DataSet::default();
    concept.put(text(tags::CODE_VALUE, "121071"));
    concept.put(text(tags::CODING_SCHEME_DESIGNATOR, "DCM"));
    concept.put(text(tags::CODE_MEANING, "Finding"));
    let mut item = DataSet::default();
    item.put(text(tags::RELATIONSHIP_TYPE, "CONTAINS"));
    item.put(text(tags::VALUE_TYPE, "TEXT"));
    item.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]));
    item.put(text(
        tags::TEXT_VALUE,
        "Nodule in Jane Doe's left lung, MRN0042, see 04/05/2021",
    ));
    ds.put(seq(tags::CONTENT_SEQUENCE, vec![item]));
    ds
}

#[test]
fn structured_content_is_replaced_or_cleaned() {
    let (out, plain) = run(&deid_with(&[]), &sr());
    assert!(!contains(&out.bytes, "JANE") && !contains(&out.bytes, "Nodule"));
    let Some(Value::Sequence(items)) = plain.get(tags::CONTENT_SEQUENCE).map(|e| &e.value) else {
        panic!("content")
    };
    assert_eq!(
        items[0].string(tags::VALUE_TYPE).unwrap(),
        "TEXT",
        "value types are kept"
    );
    let (out, clean) = run(&deid_with(&[ProfileOption::CleanStructuredContent]), &sr());
    let Some(Value::Sequence(items)) = clean.get(tags::CONTENT_SEQUENCE).map(|e| &e.value) else {
        panic!("content")
    };
    let t = items[0].string(tags::TEXT_VALUE).unwrap();
    assert!(t.starts_with("Nodule in"), "{t}");
    for phi in ["JANE", "DOE", "MRN0042", "04/05/2021"] {
        assert!(!contains(&out.bytes, phi), "{phi} survived: {t}");
    }
    let Some(Value::Sequence(codes)) = items[0]
        .get(tags::CONCEPT_NAME_CODE_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("code")
    };
    assert_eq!(codes[0].string(tags::CODE_VALUE).unwrap(), "121071");
}

#[test]
fn clean_graphics_keeps_annotations_without_identifiers() {
    let mut ds = ct();
    let mut text_obj = DataSet::default();
    text_obj.put(text(tags::UNFORMATTED_TEXT_VALUE, "DOE JANE arrow"));
    let mut ann = DataSet::default();
    ann.put(seq(tags::TEXT_OBJECT_SEQUENCE, vec![text_obj]));
    ds.put(seq(tags::GRAPHIC_ANNOTATION_SEQUENCE, vec![ann]));
    ds.put(Element {
        tag: tags::repeating::OVERLAY_DATA,
        vr: Vr::OW,
        value: Value::Bytes(Cow::Owned(vec![0xFF; 8])),
    });
    let (out, g) = run(&deid_with(&[ProfileOption::CleanGraphics]), &ds);
    assert!(!contains(&out.bytes, "JANE"));
    let Some(Value::Sequence(items)) = g.get(tags::GRAPHIC_ANNOTATION_SEQUENCE).map(|e| &e.value)
    else {
        panic!("kept")
    };
    let Some(Value::Sequence(objs)) = items[0].get(tags::TEXT_OBJECT_SEQUENCE).map(|e| &e.value)
    else {
        panic!("kept")
    };
    assert!(objs[0]
        .string(tags::UNFORMATTED_TEXT_VALUE)
        .unwrap()
        .ends_with("arrow"));
    assert!(
        g.get(tags::repeating::OVERLAY_DATA).is_none(),
        "overlay bitmaps cannot be checked and are removed"
    );
}

// Private tags have no PS3.6 keyword: these are named after their block's creator.
/// (0015,0010): the creator GEMS_PETD_01 of block (0015,10xx).
const GEMS_PETD_CREATOR: u32 = 0x0015_0010;
/// (0015,1033) of GEMS_PETD_01: safe to keep in the private tag knowledge base.
const GEMS_PETD_SAFE: u32 = 0x0015_1033;
/// (0015,1036) of GEMS_PETD_01: to be removed in the private tag knowledge base.
const GEMS_PETD_UNSAFE: u32 = 0x0015_1036;
/// (0009,0010): the creator of block (0009,10xx), a creator no list knows.
const UNKNOWN_CREATOR: u32 = 0x0009_0010;
/// (0009,1001) in the unknown creator's block.
const UNKNOWN_PRIVATE: u32 = 0x0009_1001;
/// (0011,0010) and (0011,1001): a private block nested in a sequence item.
const NESTED_CREATOR: u32 = 0x0011_0010;
const NESTED_PRIVATE: u32 = 0x0011_1001;
/// (0029,0010): the creator SIEMENS CSA HEADER of block (0029,10xx), and (0029,1010), a
/// private sequence in it.
const SIEMENS_CSA_CREATOR: u32 = 0x0029_0010;
const SIEMENS_CSA_SEQUENCE: u32 = 0x0029_1010;
/// (0019,0010): the creator GEMS_ACQU_01 of block (0019,10xx), and (0019,10FE) in it.
const GEMS_ACQU_CREATOR: u32 = 0x0019_0010;
const GEMS_ACQU_ELEMENT: u32 = 0x0019_10FE;

fn with_private(ds: &mut DataSet<'static>) {
    ds.put(text(GEMS_PETD_CREATOR, "GEMS_PETD_01"));
    ds.put(Element::text(GEMS_PETD_SAFE, Vr::UN, "KEEPMEOK"));
    ds.put(Element::text(GEMS_PETD_UNSAFE, Vr::UL, "DROP"));
    ds.put(Element::text(UNKNOWN_CREATOR, Vr::LO, "UNKNOWN CREATOR"));
    ds.put(Element::text(UNKNOWN_PRIVATE, Vr::LO, "JANE DOE PRIVATE"));
}

#[test]
fn private_attributes_are_removed_unless_safe() {
    let mut ds = ct();
    with_private(&mut ds);
    let (out, plain) = run(&deid_with(&[]), &ds);
    assert!(plain.elements.iter().all(|e| !e.is_private()));
    assert_eq!(out.counts.private_removed, 3);
    let (_, safe) = run(&deid_with(&[ProfileOption::RetainSafePrivate]), &ds);
    assert_eq!(safe.string(GEMS_PETD_SAFE).unwrap(), "KEEPMEOK");
    assert_eq!(safe.string(GEMS_PETD_CREATOR).unwrap(), "GEMS_PETD_01");
    assert!(safe.get(GEMS_PETD_UNSAFE).is_none());
    assert!(safe.get(UNKNOWN_PRIVATE).is_none());
    assert!(
        safe.get(UNKNOWN_CREATOR).is_none(),
        "creators of emptied blocks go too"
    );
}

#[test]
fn private_sequences_are_walked() {
    let mut ds = ct();
    let mut inner = DataSet::default();
    inner.put(text(tags::PATIENT_NAME, "DOE^JANE"));
    inner.put(text(NESTED_CREATOR, "NESTED"));
    inner.put(Element::text(NESTED_PRIVATE, Vr::LO, "SECRET"));
    ds.put(text(SIEMENS_CSA_CREATOR, "SIEMENS CSA HEADER"));
    ds.put(seq(SIEMENS_CSA_SEQUENCE, vec![inner]));
    let (out, _) = run(&deid_with(&[ProfileOption::RetainSafePrivate]), &ds);
    assert!(!contains(&out.bytes, "SECRET") && !contains(&out.bytes, "JANE"));
}

#[test]
fn records_what_was_done() {
    let d = deid_with(&[
        ProfileOption::CleanDescriptors,
        ProfileOption::RetainLongModifiedDates,
    ]);
    let (_, ds) = run(&d, &ct());
    assert_eq!(ds.string(tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    let method = ds.string(tags::DEIDENTIFICATION_METHOD).unwrap();
    assert!(method.contains(standard::ANNEX_E_REVISION) && method.contains("clean-descriptors"));
    let Some(Value::Sequence(codes)) = ds
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("codes")
    };
    let values: Vec<String> = codes
        .iter()
        .map(|c| c.string(tags::CODE_VALUE).unwrap())
        .collect();
    assert_eq!(values, ["113100", "113107", "113105"]);
    assert!(codes
        .iter()
        .all(|c| c.string(tags::CODING_SCHEME_DESIGNATOR).unwrap() == "DCM"));
}

#[test]
fn defaced_objects_record_the_clean_recognizable_visual_features_option() {
    let mut config = Config::default();
    config.profile.clean_visual_features = true;
    let d = Deidentifier::new(key(7), config).unwrap();
    let mut input = ct();
    input.put(text(tags::RECOGNIZABLE_VISUAL_FEATURES, "YES"));
    let bytes = encode(&input, part10::EXPLICIT_VR_LITTLE_ENDIAN);
    // A face nobody removed is held back under the option.
    assert!(matches!(
        d.deidentify(&bytes),
        Err(DeidError::HeldBack(r)) if r.contains("Recognizable Visual Features")
    ));
    let codes = |ds: &DataSet<'_>| -> Vec<String> {
        let Some(Value::Sequence(items)) = ds
            .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .map(|e| &e.value)
        else {
            panic!("codes")
        };
        items
            .iter()
            .map(|c| c.string(tags::CODE_VALUE).unwrap())
            .collect()
    };
    let out = d
        .deidentify_with(&bytes, VisualFeatures::Cleaned)
        .unwrap()
        .file
        .to_vec();
    let (_, ds) = decode(&out);
    assert_eq!(codes(&ds), ["113100", "113102"]);
    assert_eq!(ds.string(tags::RECOGNIZABLE_VISUAL_FEATURES).unwrap(), "NO");
    assert!(ds
        .string(tags::DEIDENTIFICATION_METHOD)
        .unwrap()
        .contains("clean-recognizable-visual-features"));
    // Looked at and no face found: passed, but nothing is claimed.
    let out = d
        .deidentify_with(&bytes, VisualFeatures::NoneFound)
        .unwrap()
        .file
        .to_vec();
    let (_, ds) = decode(&out);
    assert_eq!(codes(&ds), ["113100"]);
    assert_eq!(
        ds.string(tags::RECOGNIZABLE_VISUAL_FEATURES).unwrap(),
        "YES"
    );
}

#[test]
fn burned_in_annotation_is_held_back() {
    let mut ds = ct();
    ds.put(text(tags::BURNED_IN_ANNOTATION, "YES"));
    let bytes = encode(&ds, part10::EXPLICIT_VR_LITTLE_ENDIAN);
    assert!(matches!(
        deid_with(&[]).deidentify(&bytes),
        Err(DeidError::HeldBack(_))
    ));
    let mut us = ct();
    us.put(text(tags::MODALITY, "US"));
    let bytes = encode(&us, part10::EXPLICIT_VR_LITTLE_ENDIAN);
    assert!(deid_with(&[]).deidentify(&bytes).is_ok());
    let strict = Deidentifier::new(
        key(7),
        Config {
            burned_in: BurnedInPolicy::UnlessNo,
            ..Config::default()
        },
    )
    .unwrap();
    assert!(matches!(
        strict.deidentify(&bytes),
        Err(DeidError::HeldBack(_))
    ));
    us.put(text(tags::BURNED_IN_ANNOTATION, "NO"));
    assert!(strict
        .deidentify(&encode(&us, part10::EXPLICIT_VR_LITTLE_ENDIAN))
        .is_ok());
}

#[test]
fn site_rules_override_the_table() {
    let config = Config {
        profile: Profile::from_toml(
            "[attributes]\nPatientSex = \"keep\"\nInstitutionName = { replace = \"SITE 7\" }\nModality = \"remove\"\n",
        )
        .unwrap(),
        ..Config::default()
    };
    let d = Deidentifier::new(key(7), config).unwrap();
    let mut ds = ct();
    ds.put(text(tags::INSTITUTION_NAME, "ST ELSEWHERE"));
    let (out, back) = run(&d, &ds);
    assert_eq!(back.string(tags::PATIENT_SEX).unwrap(), "F");
    assert_eq!(back.string(tags::INSTITUTION_NAME).unwrap(), "SITE 7");
    // Modality is Type 1 in CT: a removal rule still leaves a valid value.
    assert!(!back.string(tags::MODALITY).unwrap().is_empty());
    assert_eq!(out.counts.overridden, 3);
}

#[test]
fn every_transfer_syntax_round_trips_and_is_deterministic() {
    let d = deid_with(&[]);
    for ts in [
        part10::IMPLICIT_VR_LITTLE_ENDIAN,
        part10::EXPLICIT_VR_LITTLE_ENDIAN,
        part10::EXPLICIT_VR_BIG_ENDIAN,
        part10::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ] {
        let bytes = encode(&ct(), ts);
        let a = d.deidentify(&bytes).unwrap();
        let b = d.deidentify(&bytes).unwrap();
        let (a, b) = (a.file.to_vec(), b.file.to_vec());
        assert_eq!(a, b, "{ts}");
        let (meta, ds) = decode(&a);
        assert_eq!(meta.string(tags::TRANSFER_SYNTAX_UID).unwrap(), ts);
        assert_eq!(
            ds.get(part10::PIXEL_DATA).unwrap().bytes().unwrap(),
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert!(!contains(&a, "DOE"));
    }
}

#[test]
fn another_key_gives_unrelated_output() {
    let bytes = encode(&ct(), part10::EXPLICIT_VR_LITTLE_ENDIAN);
    let a = deid_with(&[]).deidentify(&bytes).unwrap();
    let b = Deidentifier::new(key(8), Config::default())
        .unwrap()
        .deidentify(&bytes)
        .unwrap();
    assert_ne!(a.identity.patient, b.identity.patient);
    assert_ne!(a.identity.sop_instance_uid, b.identity.sop_instance_uid);
    assert_ne!(a.identity.study_uid, b.identity.study_uid);
}

#[test]
fn bad_input_is_an_error() {
    let d = deid_with(&[]);
    assert!(d.deidentify(b"").is_err());
    assert!(d.deidentify(b"hello world, not dicom").is_err());
    let bytes = encode(&ct(), part10::EXPLICIT_VR_LITTLE_ENDIAN);
    for cut in [10, 131, 140, 200, bytes.len() - 3] {
        assert!(d.deidentify(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

/// Attributes a planted value may go into: listed text attributes the Basic Profile does
/// not keep, plus unlisted person names.
fn plantable() -> Vec<(u32, Vr)> {
    let mut v: Vec<(u32, Vr)> = standard::generated::PROFILE
        .iter()
        .filter(|r| {
            r.mask == u32::MAX
                && r.basic != BasicAction::K
                && r.tag >> 16 != part10::FILE_META_GROUP
        })
        .filter_map(|r| {
            let e = standard::dictionary_entry(r.tag)?;
            matches!(
                e.vr,
                Vr::LO | Vr::SH | Vr::PN | Vr::LT | Vr::ST | Vr::UT | Vr::UC
            )
            .then_some((r.tag, e.vr))
        })
        .collect();
    v.push((tags::PERSON_NAME, Vr::PN));
    v
}

fn phi_token() -> impl Strategy<Value = String> {
    "[A-Z]{4}[0-9]{2}[A-Z]{4}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random identifiers planted in random standard, private and nested attributes never
    /// survive, under
    /// any combination of the cleaning and retaining options, and the required attributes do.
    #[test]
    fn planted_phi_never_survives(
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), phi_token(), 0u8..4), 1..12),
        clean_desc in any::<bool>(),
        clean_sr in any::<bool>(),
        safe_private in any::<bool>(),
        modified_dates in any::<bool>(),
    ) {
        let targets = plantable();
        let mut opts = vec![];
        if clean_desc { opts.push(ProfileOption::CleanDescriptors); }
        if clean_sr { opts.push(ProfileOption::CleanStructuredContent); }
        if safe_private { opts.push(ProfileOption::RetainSafePrivate); }
        if modified_dates { opts.push(ProfileOption::RetainLongModifiedDates); }
        let d = deid_with(&opts);
        let mut ds = ct();
        let mut nested = DataSet::default();
        let mut private_item = DataSet::default();
        for (idx, token, place) in &picks {
            let (tag, vr) = targets[idx.index(targets.len())];
            let value = if vr == Vr::PN { format!("{token}^{token}") } else { token.clone() };
            match place {
                0 => ds.put(Element::text(tag, vr, &value)),
                1 => nested.put(Element::text(tag, vr, &value)),
                2 => {
                    ds.put(Element::text(GEMS_ACQU_CREATOR, Vr::LO, "GEMS_ACQU_01"));
                    ds.put(Element::text(GEMS_ACQU_ELEMENT, Vr::LO, &value));
                }
                _ => {
                    private_item.put(Element::text(tag, vr, &value));
                }
            }
        }
        // Cleaning keeps descriptions and removes what identifies: planted values are the
        // patient's identifiers, as in real leaks, recorded in Other Patient IDs Sequence.
        let ids = picks
            .iter()
            .map(|(_, token, _)| {
                let mut item = DataSet::default();
                item.put(Element::text(tags::PATIENT_ID, Vr::LO, token));
                item
            })
            .collect();
        ds.put(seq(tags::OTHER_PATIENT_IDS_SEQUENCE, ids));
        ds.put(seq(tags::CONTENT_SEQUENCE, vec![nested.clone()]));
        ds.put(seq(tags::REFERENCED_STUDY_SEQUENCE, vec![nested]));
        ds.put(Element::text(SIEMENS_CSA_CREATOR, Vr::LO, "SIEMENS CSA HEADER"));
        ds.put(seq(SIEMENS_CSA_SEQUENCE, vec![private_item]));
        let input = encode(&ds, part10::EXPLICIT_VR_LITTLE_ENDIAN);
        let out = d.deidentify(&input).unwrap().file.to_vec();
        for (_, token, _) in &picks {
            prop_assert!(!contains(&out, token), "{} survived", token);
        }
        let (_, back) = decode(&out);
        for tag in [
            tags::SOP_CLASS_UID,
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::MODALITY,
        ] {
            prop_assert!(back.get(tag).is_some(), "({:08X}) missing", tag);
        }
    }
}

#[test]
fn an_overlay_without_its_data_goes_whole() {
    use tags::repeating::{in_group, OVERLAY_DATA, OVERLAY_DESCRIPTION, OVERLAY_ROWS};
    let mut ds = ct();
    ds.put(Element::text(
        in_group(OVERLAY_ROWS, 0x6002),
        Vr::US,
        "\u{2c}\u{1}",
    ));
    ds.put(Element::text(
        in_group(OVERLAY_DESCRIPTION, 0x6002),
        Vr::LO,
        "DOE JANE overlay",
    ));
    ds.put(Element {
        tag: in_group(OVERLAY_DATA, 0x6002),
        vr: Vr::OW,
        value: Value::Bytes(Cow::Owned(vec![0xFF; 8])),
    });
    let (_, out) = run(&deid_with(&[]), &ds);
    assert!(
        out.elements.iter().all(|e| e.tag >> 16 != 0x6002),
        "overlay group left behind"
    );
}

#[test]
fn referencing_sequences_keep_their_items_where_the_iod_has_them() {
    // Source Image Sequence (X/Z/U*) inside the Derivation Image Sequence of a segmentation's
    // functional groups: kept with remapped UIDs, so cross-references stay intact.
    let mut ds = ct();
    ds.put(text(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.66.4"));
    let mut source = DataSet::default();
    source.put(text(tags::REFERENCED_SOP_CLASS_UID, CT));
    source.put(text(tags::REFERENCED_SOP_INSTANCE_UID, "1.2.3.4.5.6.7.1"));
    let mut derivation = DataSet::default();
    derivation.put(seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]));
    let mut frame = DataSet::default();
    frame.put(seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]));
    ds.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, vec![frame]));
    let (_, out) = run(&deid_with(&[]), &ds);
    let sop = out.string(tags::SOP_INSTANCE_UID).unwrap();
    let Some(Value::Sequence(frames)) = out
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("frames")
    };
    let Some(Value::Sequence(der)) = frames[0]
        .get(tags::DERIVATION_IMAGE_SEQUENCE)
        .map(|e| &e.value)
    else {
        panic!("derivation")
    };
    let Some(Value::Sequence(src)) = der[0].get(tags::SOURCE_IMAGE_SEQUENCE).map(|e| &e.value)
    else {
        panic!("source")
    };
    assert_eq!(src.len(), 1);
    assert_eq!(
        src[0].string(tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
        sop,
        "same UID, same remapping"
    );
}

// ---------------------------------------------------------------------------------------
// Kept values must be valid for their VR (issue 13): malformed values never ride through.
// ---------------------------------------------------------------------------------------

/// De-identifies `ds` and returns the error text, which must name `tag` and must not quote
/// any part of `secret`.
fn held_back(d: &Deidentifier, ds: &DataSet<'_>, tag: &str, secret: &str) -> String {
    let bytes = encode(ds, part10::EXPLICIT_VR_LITTLE_ENDIAN);
    let err = match d.deidentify(&bytes) {
        Err(e @ DeidError::HeldBack(_)) => e.to_string(),
        Err(e) => panic!("expected held back ({tag}), got: {e}"),
        Ok(o) => panic!(
            "expected held back ({tag}), got an output: {:?}",
            decode(&o.file.to_vec()).1.get(tags::IMAGE_TYPE)
        ),
    };
    assert!(err.contains(tag), "{err}");
    for part in secret.split(['^', ' ']).filter(|p| p.len() > 2) {
        assert!(!err.contains(part), "{err} quotes {part}");
    }
    err
}

#[test]
fn malformed_kept_values_of_required_attributes_are_held_back() {
    let d = deid_with(&[]);
    // Type 1 in the CT Image IOD, kept by the profile, free text instead of CS.
    let mut ds = ct();
    ds.put(text(tags::IMAGE_TYPE, "Doe^John"));
    held_back(&d, &ds, "(0008,0008)", "Doe^John");
    // Number of Frames holding a name: it describes the pixel data, so never cleaned away.
    let mut ds = ct();
    ds.put(text(tags::NUMBER_OF_FRAMES, "DOE^JOHN"));
    held_back(&d, &ds, "(0028,0008)", "DOE^JOHN");
    // Specific Character Set that is not a defined term: text cannot be read (or cleaned).
    let mut ds = ct();
    ds.put(text(tags::SPECIFIC_CHARACTER_SET, "JANE DOE"));
    held_back(&d, &ds, "(0008,0005)", "JANE DOE");
    // SOP Class UID that is not a UID.
    let mut ds = ct();
    ds.put(text(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2 SMITH"));
    held_back(&d, &ds, "(0008,0016)", "SMITH");
    // A DS of Type 1 (Pixel Spacing, Image Plane) with a name.
    let mut ds = ct();
    ds.put(text(tags::PIXEL_SPACING, "DOE^JOHN"));
    held_back(&d, &ds, "(0028,0030)", "DOE^JOHN");
    // Rows (US, Type 1) of a length that is no number of values.
    let mut ds = ct();
    ds.put(Element {
        tag: tags::ROWS,
        vr: Vr::UL,
        value: Value::Bytes(Cow::Owned(b"JD".to_vec())),
    });
    held_back(&d, &ds, "(0028,0010)", "");
}

#[test]
fn a_malformed_transfer_syntax_uid_is_held_back() {
    let mut bytes = encode(&ct(), part10::EXPLICIT_VR_LITTLE_ENDIAN);
    // Overwrite the Transfer Syntax UID's value (same length) with text.
    let ts = part10::EXPLICIT_VR_LITTLE_ENDIAN.as_bytes();
    let at = bytes.windows(ts.len()).position(|w| w == ts).unwrap();
    bytes[at..at + ts.len()].copy_from_slice(b"SMITH^JOHN^Q.Z.XY.W");
    let err = deid_with(&[]).deidentify(&bytes).unwrap_err().to_string();
    assert!(err.contains("(0002,0010)"), "{err}");
    assert!(!err.contains("SMITH"), "{err}");
}

#[test]
fn burned_in_annotation_neither_yes_nor_no_is_treated_as_yes() {
    let d = deid_with(&[]);
    for v in ["DOE^JOHN", "MAYBE", "yes", "N"] {
        let mut ds = ct();
        ds.put(text(tags::BURNED_IN_ANNOTATION, v));
        let err = held_back(&d, &ds, "(0028,0301)", v);
        assert!(err.contains("treated as YES"), "{err}");
    }
    let mut ds = ct();
    ds.put(text(tags::BURNED_IN_ANNOTATION, "NO"));
    let (_, out) = run(&d, &ds);
    assert_eq!(out.string(tags::BURNED_IN_ANNOTATION).unwrap(), "NO");
}

#[test]
fn malformed_optional_values_are_removed_and_type_2_emptied() {
    let d = deid_with(&[]);
    let mut ds = ct();
    // Scan Options (CS, Type 3 in CT Image, kept): a name in it goes.
    ds.put(text(tags::SCAN_OPTIONS, "Doe^John"));
    // Slice Thickness (DS, Type 2 in Image Plane): emptied.
    ds.put(text(tags::SLICE_THICKNESS, "JOHN DOE"));
    // KVP (DS, Type 2 in CT Image) that is a valid number stays as it is.
    ds.put(text(tags::KVP, "120"));
    // An FD of a length that is no number of values, Type 3 (CTDIvol), goes.
    ds.put(Element {
        tag: tags::CTDI_VOL,
        vr: Vr::FD,
        value: Value::Bytes(Cow::Owned(b"DOE^JO".to_vec())),
    });
    let (_, out) = run(&d, &ds);
    assert!(out.get(tags::SCAN_OPTIONS).is_none());
    assert_eq!(out.string(tags::SLICE_THICKNESS).unwrap(), "");
    assert_eq!(out.string(tags::KVP).unwrap(), "120");
    assert!(out.get(tags::CTDI_VOL).is_none());
}

#[test]
fn acr_nema_dates_and_times_kept_are_cleaned_to_the_standard_form() {
    let d = deid_with(&[ProfileOption::RetainLongFullDates]);
    let mut ds = ct();
    ds.put(text(tags::STUDY_DATE, "1994.11.05"));
    ds.put(text(tags::STUDY_TIME, "11:20:00"));
    let (_, out) = run(&d, &ds);
    assert_eq!(out.string(tags::STUDY_DATE).unwrap(), "19941105");
    assert_eq!(out.string(tags::STUDY_TIME).unwrap(), "112000");
    // A kept date that is no date at all is emptied (Study Date is Type 2).
    let mut ds = ct();
    ds.put(text(tags::STUDY_DATE, "SMITH"));
    let (_, out) = run(&d, &ds);
    assert_eq!(out.string(tags::STUDY_DATE).unwrap(), "");
}

#[test]
fn blank_uids_never_come_out_as_empty_required_uids() {
    let d = deid_with(&[]);
    // Series Instance UID of spaces: Type 1, so held back.
    let mut ds = ct();
    ds.put(Element {
        tag: tags::SERIES_INSTANCE_UID,
        vr: Vr::UI,
        value: Value::Bytes(Cow::Owned(b"        ".to_vec())),
    });
    held_back(&d, &ds, "(0020,000E)", "");
    let mut ds = ct();
    ds.put(Element {
        tag: tags::STUDY_INSTANCE_UID,
        vr: Vr::UI,
        value: Value::Bytes(Cow::Owned(b"  \0\0".to_vec())),
    });
    held_back(&d, &ds, "(0020,000D)", "");
    // The same under Retain UIDs.
    let mut ds = ct();
    ds.put(Element {
        tag: tags::SERIES_INSTANCE_UID,
        vr: Vr::UI,
        value: Value::Bytes(Cow::Owned(b"  ".to_vec())),
    });
    held_back(
        &deid_with(&[ProfileOption::RetainUids]),
        &ds,
        "(0020,000E)",
        "",
    );
}

/// Every UI value of an output is a valid UID: at most 64 characters of digits and dots, no
/// empty component, no leading zero.
fn assert_uids_valid(ds: &DataSet<'_>) {
    for el in &ds.elements {
        match &el.value {
            Value::Sequence(items) => items.iter().for_each(assert_uids_valid),
            Value::Bytes(_) if el.vr == Vr::UI => {
                let s = el.to_str().unwrap();
                for uid in s.split('\\') {
                    assert!(
                        uid.is_empty() || values::is_valid_uid(uid),
                        "{:08X}: {uid:?}",
                        el.tag
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn malformed_uids_are_replaced_even_under_retain_uids() {
    for options in [&[][..], &[ProfileOption::RetainUids][..]] {
        let d = deid_with(options);
        let mut ds = ct();
        ds.put(text(
            tags::STUDY_INSTANCE_UID,
            "dccc9599087131742838cc1162a630fea87ba9",
        ));
        ds.put(text(tags::FRAME_OF_REFERENCE_UID, "1.2.0123.4"));
        ds.put(seq(
            tags::REFERENCED_IMAGE_SEQUENCE,
            vec![{
                let mut i = DataSet::default();
                i.put(text(tags::REFERENCED_SOP_CLASS_UID, CT));
                i.put(text(tags::REFERENCED_SOP_INSTANCE_UID, "1.2.3.DOE JOHN"));
                i
            }],
        ));
        let (done, out) = run(&d, &ds);
        assert_uids_valid(&out);
        assert!(!contains(&done.bytes, "dccc9599"));
        assert!(!contains(&done.bytes, "DOE JOHN"));
        assert!(values::is_valid_uid(&done.identity.study_uid));
        if options.is_empty() {
            continue;
        }
        // Under Retain UIDs a valid UID is still kept as it is.
        assert_eq!(
            out.string(tags::SERIES_INSTANCE_UID).unwrap(),
            "1.2.3.4.5.6.7"
        );
    }
}

/// A unique marker planted as the value of attributes of every VR, one at a time and all at
/// once, in valid and in malformed positions: whatever happens, no error message quotes it.
#[test]
fn no_error_message_quotes_a_value() {
    const MARKER: &str = "QZXMARKERQZX";
    let d = deid_with(&[]);
    let mut tags: Vec<(u32, Vr)> = standard::generated::DICTIONARY
        .iter()
        .filter(|e| e.mask == u32::MAX && e.tag >> 16 != part10::FILE_META_GROUP && e.vr != Vr::SQ)
        .map(|e| (e.tag, e.vr))
        .step_by(7)
        .collect();
    tags.extend([
        (tags::SPECIFIC_CHARACTER_SET, Vr::CS),
        (tags::SOP_CLASS_UID, Vr::UI),
        (tags::SOP_INSTANCE_UID, Vr::UI),
        (tags::MODALITY, Vr::CS),
        (tags::SERIES_INSTANCE_UID, Vr::UI),
        (tags::NUMBER_OF_FRAMES, Vr::IS),
        (tags::BURNED_IN_ANNOTATION, Vr::CS),
        (tags::RECOGNIZABLE_VISUAL_FEATURES, Vr::CS),
    ]);
    let mut errors = 0;
    let mut check = |bytes: &[u8]| {
        if let Err(e) = d.deidentify(bytes) {
            errors += 1;
            let msg = e.to_string();
            assert!(!msg.contains(MARKER) && !msg.contains("QZX"), "{msg}");
        }
    };
    for &(tag, vr) in &tags {
        let mut ds = ct();
        ds.put(Element::text(tag, vr, MARKER));
        check(&encode(&ds, part10::EXPLICIT_VR_LITTLE_ENDIAN));
    }
    // Modality that burns text in, under the strict policy.
    let strict = Deidentifier::new(
        key(7),
        Config {
            burned_in: BurnedInPolicy::UnlessNo,
            ..Config::default()
        },
    )
    .unwrap();
    let mut ds = ct();
    ds.put(text(tags::MODALITY, "SC"));
    ds.put(text(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.7"));
    let msg = strict
        .deidentify(&encode(&ds, part10::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap_err()
        .to_string();
    assert!(!msg.contains(" SC "), "{msg}");
    // The marker as a VR code and in every byte of a header.
    let clean = encode(&ct(), part10::EXPLICIT_VR_LITTLE_ENDIAN);
    let mut corrupt = clean.clone();
    let at = clean.windows(2).rposition(|w| w == b"UI").unwrap();
    corrupt[at..at + 2].copy_from_slice(b"QZ");
    let msg = d.deidentify(&corrupt).unwrap_err().to_string();
    assert!(!msg.contains("QZ"), "{msg}");
    assert!(errors >= 5, "only {errors} errors");
}

#[test]
fn a_run_budget_bounds_a_deflate_bomb_and_changes_nothing_else() {
    let d = deid_with(&[]);
    let budget = part10::MemoryBudget::new(8 << 20);
    // A valid file: the same output with and without a budget, and the memory given back.
    for ts in [
        part10::EXPLICIT_VR_LITTLE_ENDIAN,
        part10::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ] {
        let bytes = encode(&ct(), ts);
        let plain = d.deidentify(&bytes).unwrap().file.to_vec();
        let mut grant = budget.try_reserve(0).unwrap();
        let charged = d
            .deidentify_in(&bytes, VisualFeatures::Untouched, &mut grant)
            .unwrap()
            .file
            .to_vec();
        assert_eq!(plain, charged, "{ts}");
        assert!(grant.bytes() > 0);
        drop(grant);
        assert_eq!(budget.in_use(), 0);
    }
    // A deflated data set of 300,000 empty private elements after a valid header: 2.4 MB
    // inflated, a tree of some 20 MB; the file itself is a few kilobytes.
    let mut header = ct();
    header.remove(part10::PIXEL_DATA);
    let mut body = Vec::new();
    part10::write_dataset(&header, Encoding::ExplicitLittle, &mut body);
    for _ in 0..300_000 {
        body.extend_from_slice(&[0x09, 0x00, 0x01, 0x10, b'L', b'O', 0, 0]);
    }
    let mut meta = DataSet::default();
    meta.put(Element::text(tags::MEDIA_STORAGE_SOP_CLASS_UID, Vr::UI, CT));
    meta.put(Element::text(
        tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
        Vr::UI,
        "1.2.3.4.5.6.7.1",
    ));
    meta.put(Element::text(
        tags::TRANSFER_SYNTAX_UID,
        Vr::UI,
        part10::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ));
    let mut bomb = Vec::new();
    part10::write_file(
        &meta,
        &DataSet::default(),
        part10::EXPLICIT_VR_LITTLE_ENDIAN,
        &mut bomb,
    );
    bomb.extend_from_slice(&part10::deflate(&body));
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let mut grant = budget.try_reserve(0).unwrap();
    let err = d
        .deidentify_in(&bomb, VisualFeatures::Untouched, &mut grant)
        .unwrap_err();
    assert!(
        matches!(err, DeidError::Read(part10::Error::Budget(_))),
        "{err}"
    );
    drop(grant);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_parsed_file_gives_the_output_of_its_bytes() {
    // The entry point on a parsed file is what the bytes entry point does after parsing: the
    // same output, in every transfer syntax, with the same charges to the budget's grant.
    for visual in [VisualFeatures::Untouched, VisualFeatures::Cleaned] {
        let d = deid_with(&[ProfileOption::CleanDescriptors]);
        for ts in [
            part10::IMPLICIT_VR_LITTLE_ENDIAN,
            part10::EXPLICIT_VR_LITTLE_ENDIAN,
            part10::EXPLICIT_VR_BIG_ENDIAN,
            part10::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let bytes = encode(&ct(), ts);
            let budget = part10::MemoryBudget::new(1 << 30);
            let mut g = budget.try_reserve(0).unwrap();
            let from_bytes = d.deidentify_in(&bytes, visual, &mut g).unwrap();
            let mut inflated = Vec::new();
            let (meta, ds, _) =
                part10::read_file(&bytes, &mut inflated, part10::Limits::default()).unwrap();
            let mut g2 = budget.try_reserve(0).unwrap();
            let parsed = d.deidentify_parsed(&meta, ds, visual, &mut g2).unwrap();
            assert_eq!(parsed.file.to_vec(), from_bytes.file.to_vec(), "{ts}");
            assert_eq!(parsed.identity, from_bytes.identity);
            // The tree is the caller's to charge: the parsed path charges no more than the
            // bytes path, which charges the tree it parses.
            assert!(g2.bytes() <= g.bytes(), "{ts}");
        }
    }
}

#[test]
fn a_parsed_file_is_written_in_the_transfer_syntax_of_its_meta() {
    // A caller that re-encodes the pixel data (defacing a compressed image) changes the
    // syntax in the meta it passes; the output is in that syntax, and an invalid one is held.
    let d = deid_with(&[]);
    let bytes = encode(&ct(), part10::EXPLICIT_VR_LITTLE_ENDIAN);
    let budget = part10::MemoryBudget::new(1 << 30);
    let mut inflated = Vec::new();
    let (mut meta, ds, _) =
        part10::read_file(&bytes, &mut inflated, part10::Limits::default()).unwrap();
    meta.transfer_syntax = part10::IMPLICIT_VR_LITTLE_ENDIAN.to_string();
    let mut g = budget.try_reserve(0).unwrap();
    let out = d
        .deidentify_parsed(&meta, ds.clone(), VisualFeatures::Untouched, &mut g)
        .unwrap()
        .file
        .to_vec();
    let (m, back) = decode(&out);
    assert_eq!(
        m.string(tags::TRANSFER_SYNTAX_UID).unwrap(),
        part10::IMPLICIT_VR_LITTLE_ENDIAN
    );
    assert!(back.get(part10::PIXEL_DATA).is_some());
    meta.transfer_syntax = "1.2.x".to_string();
    assert!(matches!(
        d.deidentify_parsed(&meta, ds, VisualFeatures::Untouched, &mut g),
        Err(DeidError::HeldBack(_))
    ));
}

/// An even-group element the dictionary does not know, read as UN (implicit VR).
fn unknown_name() -> Element<'static> {
    Element {
        tag: 0x0010_9999,
        vr: Vr::UN,
        value: Value::Bytes(Cow::Borrowed(b"DOE^JANE FOLLOW-UP ")),
    }
}

#[test]
fn unknown_standard_attributes_are_removed() {
    assert!(standard::dictionary_entry(0x0010_9999).is_none());
    let mut ds = ct();
    ds.put(unknown_name());
    let (out, back) = run(&deid_with(&[ProfileOption::CleanDescriptors]), &ds);
    assert!(back.get(0x0010_9999).is_none());
    assert!(!contains(&out.bytes, "JANE"));
    assert_eq!(out.counts.unknown_removed, 1);
    // Known ones are not counted: an overlay in another group of 60xx is known.
    assert!(standard::dictionary_entry(0x6002_3000).is_some());
}

#[test]
fn unknown_attributes_kept_by_a_site_rule_are_scrubbed() {
    let config = Config {
        profile: Profile::from_toml("[attributes]\n\"(0010,9999)\" = \"keep\"\n").unwrap(),
        ..Config::default()
    };
    let d = Deidentifier::new(key(7), config).unwrap();
    let mut ds = ct();
    ds.put(unknown_name());
    let (out, back) = run(&d, &ds);
    let kept = back.get(0x0010_9999).and_then(|e| e.bytes()).unwrap();
    assert!(kept.starts_with(b"XXX^XXXX FOLLOW-UP "), "{kept:?}");
    assert_eq!(out.counts.unknown_kept, 1);
}
