//! An export end to end on a store made here: consent per patient and study, only
//! de-identified bytes written, counts, lineage and audit events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use radveil_audit::{Action, Actor, AuditKey, AuditLog};
use radveil_part10::{self as p10, DataSet, Element, Value, Vr};
use radveil_standard::tags;
use radveil_store::{Handle, InstanceIds, Key, Layout, Store};

use crate::lineage::Lineage;
use crate::query::Query;
use crate::run::{export, Places, Settings};
use crate::{ConsentCheck, Decision, Purpose};

struct Inst {
    patient: &'static str,
    name: &'static str,
    study: String,
    series: String,
    sop: String,
    date: &'static str,
    modality: &'static str,
}

fn dicom(i: &Inst) -> Vec<u8> {
    let mut ds = DataSet::default();
    let t = |tag, vr, v: &str| Element::text(tag, vr, v);
    ds.put(t(tags::SOP_CLASS_UID, Vr::UI, "1.2.840.10008.5.1.4.1.1.7"));
    ds.put(t(tags::SOP_INSTANCE_UID, Vr::UI, &i.sop));
    ds.put(t(tags::STUDY_DATE, Vr::DA, i.date));
    ds.put(t(tags::MODALITY, Vr::CS, i.modality));
    ds.put(t(tags::PATIENT_NAME, Vr::PN, i.name));
    ds.put(t(tags::PATIENT_ID, Vr::LO, i.patient));
    ds.put(t(tags::STUDY_INSTANCE_UID, Vr::UI, &i.study));
    ds.put(t(tags::SERIES_INSTANCE_UID, Vr::UI, &i.series));
    let us = |tag: u32, v: u16| Element {
        tag,
        vr: Vr::US,
        value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
    };
    ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
    ds.put(t(tags::PHOTOMETRIC_INTERPRETATION, Vr::CS, "MONOCHROME2"));
    ds.put(us(tags::ROWS, 4));
    ds.put(us(tags::COLUMNS, 4));
    ds.put(us(tags::BITS_ALLOCATED, 8));
    ds.put(us(tags::BITS_STORED, 8));
    ds.put(us(tags::HIGH_BIT, 7));
    ds.put(us(tags::PIXEL_REPRESENTATION, 0));
    ds.put(Element {
        tag: p10::PIXEL_DATA,
        vr: Vr::OB,
        value: Value::Bytes(Cow::Owned(vec![7; 16])),
    });
    let mut meta = DataSet::default();
    meta.put(t(
        tags::MEDIA_STORAGE_SOP_CLASS_UID,
        Vr::UI,
        "1.2.840.10008.5.1.4.1.1.7",
    ));
    meta.put(t(tags::MEDIA_STORAGE_SOP_INSTANCE_UID, Vr::UI, &i.sop));
    meta.put(t(
        tags::TRANSFER_SYNTAX_UID,
        Vr::UI,
        p10::EXPLICIT_VR_LITTLE_ENDIAN,
    ));
    let mut out = Vec::new();
    p10::write_file(&meta, &ds, p10::EXPLICIT_VR_LITTLE_ENDIAN, &mut out);
    out
}

/// The sealed index attributes the gateway keeps (DICOM JSON, as `web::dicom_json` writes).
fn meta(i: &Inst) -> Vec<u8> {
    serde_json::json!({
        "00080020": {"vr": "DA", "Value": [i.date]},
        "00080060": {"vr": "CS", "Value": [i.modality]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": i.name}]},
        "00100020": {"vr": "LO", "Value": [i.patient]},
        "0020000D": {"vr": "UI", "Value": [i.study]},
        "0020000E": {"vr": "UI", "Value": [i.series]},
        "00080018": {"vr": "UI", "Value": [i.sop]},
    })
    .to_string()
    .into_bytes()
}

/// Consent by patient handle: (permitted, version) for every purpose and date, except
/// `before`: studies before this date are refused (a data period).
struct Fixed {
    by: BTreeMap<Handle, (bool, u64, Option<&'static str>)>,
    asked: Mutex<u32>,
}

impl ConsentCheck for Fixed {
    fn decide(&self, p: &Handle, _: Purpose, date: Option<&str>) -> Result<Decision, String> {
        *self.asked.lock().unwrap() += 1;
        let (permitted, version, from) = self.by.get(p).copied().unwrap_or((false, 0, None));
        let in_period = from.is_none_or(|f| date.is_some_and(|d| d >= f));
        Ok(Decision {
            permitted: permitted && in_period,
            version,
        })
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else if p.to_string_lossy().contains(".dcm") {
                out.push(p);
            }
        }
    }
    out
}

struct World {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    store: Store,
    rt: tokio::runtime::Runtime,
}

/// Patients: ALICE (consents, version 2; 2 studies, one before her data period), BOB (never
/// asked: site default), CAROL (withdrew, version 3), DAVE (consents, version 1).
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(&Layout::under(&data), Key::from_slice(&[5; 32]).unwrap()).unwrap();
    let mut n = 0;
    let mut add = |patient, name, study: &str, date, modality, count| {
        for k in 0..count {
            n += 1;
            let i = Inst {
                patient,
                name,
                study: study.to_string(),
                series: format!("{study}.1"),
                sop: format!("{study}.1.{k}"),
                date,
                modality,
            };
            let ids = InstanceIds {
                patient_id: patient,
                issuer: "",
                study: &i.study,
                series: &i.series,
                instance: &i.sop,
            };
            rt.block_on(store.put(&ids, dicom(&i).into(), &meta(&i)))
                .unwrap();
        }
    };
    add(
        "ALICE-1",
        "Liddell^Alice",
        "1.2.826.1.1",
        "20240110",
        "CT",
        3,
    );
    add(
        "ALICE-1",
        "Liddell^Alice",
        "1.2.826.1.2",
        "20190110",
        "CT",
        2,
    );
    add("BOB-2", "Builder^Bob", "1.2.826.2.1", "20240202", "CT", 2);
    add(
        "CAROL-3",
        "Singer^Carol",
        "1.2.826.3.1",
        "20240303",
        "CT",
        2,
    );
    add("DAVE-4", "Grohl^Dave", "1.2.826.4.1", "20240404", "MR", 2);
    let _ = n;
    World {
        _tmp: tmp,
        data,
        store,
        rt,
    }
}

fn deidentifier() -> radveil_deid::Deidentifier {
    let key = radveil_deid::Key::new(zeroize::Zeroizing::new(vec![b'q'; 40])).unwrap();
    radveil_deid::Deidentifier::new(key, radveil_deid::Config::default()).unwrap()
}

#[test]
fn only_consenting_patients_go_out_de_identified_with_lineage_and_audit_events() {
    let w = world();
    let h = |id: &str| w.store.patient(id, "");
    let consents = Fixed {
        by: BTreeMap::from([
            (h("ALICE-1"), (true, 2, Some("20200101"))),
            (h("CAROL-3"), (false, 3, None)),
            (h("DAVE-4"), (true, 1, None)),
        ]),
        asked: Mutex::new(0),
    };
    let out = w.data.parent().unwrap().join("out");
    let run = radveil_pipeline::Run::new(
        deidentifier(),
        &out,
        &radveil_pipeline::Settings {
            memory_limit: 64 << 20,
            resume: false,
        },
    )
    .unwrap();
    let mut lineage = Lineage::open(
        &w.data.join(crate::lineage::LINEAGE_DB),
        Key::from_slice(&[6; 32]).unwrap(),
    )
    .unwrap();
    let audit_key = || AuditKey::new(&Key::from_slice(&[4; 32]).unwrap()).unwrap();
    let mut audit = AuditLog::init(&w.data.join("audit"), audit_key()).unwrap();
    let actor = Actor {
        subject: Some("operator".into()),
        ..Actor::default()
    };
    let settings = Settings {
        purpose: Purpose::AiTraining,
        recipient: "Acme Labs",
        project: Some("Project X"),
        profile_digest: "ab",
        jobs: 2,
        actor: &actor,
        sealing: None,
        clean_visual_features: false,
    };
    // CT studies only: DAVE's MR study is not selected at all.
    let query = Query::parse(&["ModalitiesInStudy=CT"]).unwrap();
    let report = export(
        Places {
            store: &w.store,
            runtime: w.rt.handle(),
            consents: &consents,
            lineage: &mut lineage,
            audit: &mut audit,
            run: &run,
        },
        &query,
        &settings,
    )
    .unwrap();
    let c = &report.counts;
    assert_eq!(
        (c.patients, c.studies, c.instances),
        (1, 1, 3),
        "{}",
        report.summary()
    );
    assert_eq!((c.left_out_no_consent, c.left_out_withdrawn), (1, 1));
    // ALICE's study before her data period, BOB's and CAROL's.
    assert_eq!(c.studies_left_out, 3);
    assert_eq!((c.held_back, c.failed), (0, 0));
    assert_eq!(
        *consents.asked.lock().unwrap(),
        4,
        "asked per selected study"
    );
    // Only ALICE's three instances, de-identified: no name, no ID, no original UID.
    let files = files_under(&out);
    assert_eq!(files.len(), 3);
    let mut written_uids = Vec::new();
    for f in &files {
        let b = std::fs::read(f).unwrap();
        for needle in ["Liddell", "ALICE-1", "Builder", "Singer", "1.2.826."] {
            assert!(
                !b.windows(needle.len()).any(|x| x == needle.as_bytes()),
                "{needle} in {}",
                f.display()
            );
        }
        written_uids.push(f.file_stem().unwrap().to_string_lossy().into_owned());
    }
    written_uids.sort();
    // The lineage: ALICE's export with exactly the files' UIDs; nobody else's.
    let held = lineage.exports_of(&h("ALICE-1")).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].instances, 3);
    assert_eq!(held[0].export.id, report.export);
    assert!(held[0].export.complete);
    assert_eq!(held[0].export.counts, report.counts);
    for p in ["BOB-2", "CAROL-3", "DAVE-4"] {
        assert!(lineage.exports_of(&h(p)).unwrap().is_empty(), "{p}");
    }
    let notices = lineage
        .notices_for(&h("ALICE-1"), &[Purpose::AiTraining])
        .unwrap();
    assert_eq!(notices.len(), 1);
    let mut noticed: Vec<String> = notices[0]
        .instances
        .iter()
        .map(|u| u.instance.clone())
        .collect();
    noticed.sort();
    assert_eq!(noticed, written_uids);
    assert!(lineage
        .notices_for(&h("ALICE-1"), &[Purpose::Research])
        .unwrap()
        .is_empty());
    // One audit event, for ALICE, in words for her access log.
    drop(audit);
    let audit = AuditLog::open(&w.data.join("audit"), audit_key()).unwrap();
    let events: Vec<_> = (0..audit.size()).map(|i| audit.event(i).unwrap()).collect();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.action, Action::Export);
    assert_eq!(e.patients.len(), 1);
    assert_eq!(e.patients[0].id, "ALICE-1");
    assert_eq!(e.patients[0].studies.len(), 1);
    assert_eq!(e.patients[0].studies[0].instances, Some(3));
    let words = radveil_audit::words::for_patient(e, "ALICE-1", None).unwrap();
    assert!(
        words.contains("in a de-identified dataset for Project X (AI training), sent to Acme Labs"),
        "{words}"
    );
    // The report names nobody.
    let json = serde_json::to_string(&report).unwrap();
    for needle in ["ALICE", "BOB", "CAROL", "DAVE", "Liddell"] {
        assert!(!json.contains(needle), "{json}");
    }
}

#[test]
fn a_consent_that_cannot_be_decided_exports_nothing() {
    struct Broken;
    impl ConsentCheck for Broken {
        fn decide(&self, _: &Handle, _: Purpose, _: Option<&str>) -> Result<Decision, String> {
            Err("database is locked".into())
        }
    }
    let w = world();
    let out = w.data.parent().unwrap().join("out");
    let run = radveil_pipeline::Run::new(
        deidentifier(),
        &out,
        &radveil_pipeline::Settings {
            memory_limit: 64 << 20,
            resume: false,
        },
    )
    .unwrap();
    let mut lineage = Lineage::open(
        &w.data.join(crate::lineage::LINEAGE_DB),
        Key::from_slice(&[6; 32]).unwrap(),
    )
    .unwrap();
    let key = AuditKey::new(&Key::from_slice(&[4; 32]).unwrap()).unwrap();
    let mut audit = AuditLog::init(&w.data.join("audit"), key).unwrap();
    let actor = Actor::default();
    let got = export(
        Places {
            store: &w.store,
            runtime: w.rt.handle(),
            consents: &Broken,
            lineage: &mut lineage,
            audit: &mut audit,
            run: &run,
        },
        &Query::default(),
        &Settings {
            purpose: Purpose::Research,
            recipient: "R",
            project: None,
            profile_digest: "ab",
            jobs: 2,
            actor: &actor,
            sealing: None,
            clean_visual_features: false,
        },
    );
    assert!(matches!(got, Err(crate::run::ExportError::Consent(_))));
    assert!(files_under(&out).is_empty());
    assert_eq!(audit.size(), 0);
}

/// Slice `z` of an MR series of 16 x 16 images with plane geometry (as the pipeline's
/// volume tests make them), for patient `pid`.
fn mr_slice(pid: &str, study: &str, z: usize) -> Vec<u8> {
    let us = |tag: u32, v: u16| Element {
        tag,
        vr: Vr::US,
        value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
    };
    let t = |tag, vr, v: &str| Element::text(tag, vr, v);
    let sop = format!("{study}.1.{z}");
    let mut ds = DataSet::default();
    ds.put(t(tags::SOP_CLASS_UID, Vr::UI, "1.2.840.10008.5.1.4.1.1.4"));
    ds.put(t(tags::SOP_INSTANCE_UID, Vr::UI, &sop));
    ds.put(t(tags::MODALITY, Vr::CS, "MR"));
    ds.put(t(tags::PATIENT_NAME, Vr::PN, "Volume^Vera"));
    ds.put(t(tags::PATIENT_ID, Vr::LO, pid));
    ds.put(t(tags::STUDY_INSTANCE_UID, Vr::UI, study));
    ds.put(t(tags::SERIES_INSTANCE_UID, Vr::UI, &format!("{study}.1")));
    ds.put(t(
        tags::IMAGE_POSITION_PATIENT,
        Vr::DS,
        &format!("0\\0\\{z}"),
    ));
    ds.put(t(
        tags::IMAGE_ORIENTATION_PATIENT,
        Vr::DS,
        "1\\0\\0\\0\\1\\0",
    ));
    ds.put(t(tags::PIXEL_SPACING, Vr::DS, "1\\1"));
    ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
    ds.put(us(tags::ROWS, 16));
    ds.put(us(tags::COLUMNS, 16));
    ds.put(us(tags::BITS_ALLOCATED, 16));
    ds.put(us(tags::BITS_STORED, 16));
    ds.put(Element {
        tag: p10::PIXEL_DATA,
        vr: Vr::OW,
        value: Value::Bytes(Cow::Owned(vec![1; 512])),
    });
    let mut meta = DataSet::default();
    meta.put(t(
        tags::MEDIA_STORAGE_SOP_CLASS_UID,
        Vr::UI,
        "1.2.840.10008.5.1.4.1.1.4",
    ));
    meta.put(t(tags::MEDIA_STORAGE_SOP_INSTANCE_UID, Vr::UI, &sop));
    meta.put(t(
        tags::TRANSFER_SYNTAX_UID,
        Vr::UI,
        p10::EXPLICIT_VR_LITTLE_ENDIAN,
    ));
    let mut out = Vec::new();
    p10::write_file(&meta, &ds, p10::EXPLICIT_VR_LITTLE_ENDIAN, &mut out);
    out
}

/// Exports `query` for consenting `pid` with clean-recognizable-visual-features.
fn export_defacing(
    w: &World,
    pid: &str,
    query: &str,
) -> (crate::run::Report, Vec<std::path::PathBuf>, u64) {
    let consents = Fixed {
        by: BTreeMap::from([(w.store.patient(pid, ""), (true, 1, None))]),
        asked: Mutex::new(0),
    };
    let out = w.data.parent().unwrap().join(format!("out-{pid}"));
    let run = radveil_pipeline::Run::new(
        deidentifier(),
        &out,
        &radveil_pipeline::Settings {
            memory_limit: 64 << 20,
            resume: false,
        },
    )
    .unwrap();
    let mut lineage = Lineage::open(
        &w.data.join(crate::lineage::LINEAGE_DB),
        Key::from_slice(&[6; 32]).unwrap(),
    )
    .unwrap();
    let key = AuditKey::new(&Key::from_slice(&[4; 32]).unwrap()).unwrap();
    let mut audit = AuditLog::open_or_init(&w.data.join("audit"), key).unwrap();
    let actor = Actor::default();
    let report = export(
        Places {
            store: &w.store,
            runtime: w.rt.handle(),
            consents: &consents,
            lineage: &mut lineage,
            audit: &mut audit,
            run: &run,
        },
        &Query::parse(&[query]).unwrap(),
        &Settings {
            purpose: Purpose::Research,
            recipient: "R",
            project: None,
            profile_digest: "ab",
            jobs: 2,
            actor: &actor,
            sealing: None,
            clean_visual_features: true,
        },
    )
    .unwrap();
    assert_eq!(run.budget().in_use(), 0, "every grant given back");
    (report, files_under(&out), audit.size())
}

#[test]
fn images_that_make_no_volume_go_through_untouched_under_the_defacing_option() {
    // DAVE's MR images have no plane geometry: no volume, de-identified as deid sends them.
    let w = world();
    let (report, files, events) = export_defacing(&w, "DAVE-4", "PatientID=DAVE-4");
    assert_eq!(report.counts.instances, 2, "{}", report.summary());
    assert_eq!((report.counts.held_back, report.counts.failed), (0, 0));
    assert_eq!(files.len(), 2);
    assert_eq!(events, 1);
}

#[test]
fn a_series_is_defaced_as_a_volume_in_memory_or_held_back_whole() {
    // Ten flat MR slices: a volume, but no head. Either no face is found (each slice is then
    // de-identified as it is, its pixels unchanged) or the whole series is held back; never
    // some slices out and others not, never an identified byte on disk.
    let w = world();
    let study = "1.2.826.9.1";
    for z in 0..10 {
        let sop = format!("{study}.1.{z}");
        let ids = InstanceIds {
            patient_id: "VERA-9",
            issuer: "",
            study,
            series: &format!("{study}.1"),
            instance: &sop,
        };
        let meta = serde_json::json!({
            "00080060": {"vr": "CS", "Value": ["MR"]},
            "00100020": {"vr": "LO", "Value": ["VERA-9"]},
            "0020000D": {"vr": "UI", "Value": [study]},
        })
        .to_string();
        w.rt.block_on(
            w.store
                .put(&ids, mr_slice("VERA-9", study, z).into(), meta.as_bytes()),
        )
        .unwrap();
    }
    let (report, files, _) = export_defacing(&w, "VERA-9", "PatientID=VERA-9");
    let c = &report.counts;
    assert_eq!(c.failed, 0, "{:?}", report.failures);
    match (c.instances, c.held_back) {
        (10, 0) => {
            assert_eq!(files.len(), 10);
            for f in &files {
                let b = std::fs::read(f).unwrap();
                assert!(
                    b.ends_with(&[1; 512]),
                    "pixels unchanged when no face is found"
                );
                assert!(!b.windows(4).any(|x| x == b"Vera" || x == b"VERA"));
            }
        }
        (0, 10) => {
            assert!(files.is_empty());
            assert!(
                report.held_back[0].reason.starts_with("held back: "),
                "{:?}",
                report.held_back
            );
        }
        other => panic!("a volume split: {other:?} ({:?})", report.held_back),
    }
}
