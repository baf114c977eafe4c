use super::*;
use crate::event::Role;
use crate::log::verify;
use crate::sample;
use radveil_store::Key;

fn key() -> AuditKey {
    AuditKey::new(&Key::from_slice(&[9; 32]).unwrap()).unwrap()
}

fn source() -> Source {
    Source {
        id: "radveil@test-host".into(),
        site: None,
    }
}

fn reader() -> Actor {
    Actor {
        subject: Some("operator".into()),
        client: Some("radveil audit export".into()),
        role: Some(Role::Admin),
        ..Actor::default()
    }
}

fn jane() -> Export {
    Export {
        patient: Some("PAT-JANE-0042".into()),
        issuer: Some("HOSPITAL-A".into()),
        ..Export::default()
    }
}

/// A log of the sample events, all checkpointed.
fn written(dir: &std::path::Path) -> AuditLog {
    let mut log = AuditLog::init(dir, key()).unwrap();
    log.append(&sample::events()).unwrap();
    log.checkpoint().unwrap();
    log
}

#[test]
fn the_filter_in_words_names_the_fields_given_and_never_the_patient() {
    assert_eq!(Export::default().words(), "all");
    assert_eq!(jane().words(), "patient");
    let all = Export {
        user: Some("dr-house".into()),
        since: Some("2026-12-01".into()),
        until: Some("2026-12-02T12:00:00Z".into()),
        action: Some(Action::Retrieve),
        ..jane()
    };
    assert_eq!(
        all.words(),
        "patient&user=dr-house&since=2026-12-01&until=2026-12-02T12:00:00Z&action=retrieve"
    );
    assert!(!all.words().contains("JANE"));
}

#[test]
fn an_export_reads_the_matching_events_and_is_recorded_and_checkpointed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = written(dir.path());
    let events = jane().read(&mut log, reader()).unwrap();
    // Jane's store, retrieval, the search touching her and John, and the audit read of her
    // record; not John's own events.
    let indexes: Vec<u64> = events.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1, 2, 6]);
    // The export is the log's last event, covered by the latest checkpoint.
    assert_eq!(log.size(), 8);
    let recorded = log.event(7).unwrap();
    assert_eq!(
        (recorded.action, recorded.outcome, recorded.purpose),
        (
            Action::AuditRead,
            Outcome::Success,
            Some(PurposeOfUse::Compliance)
        )
    );
    assert_eq!(recorded.actor, reader());
    assert_eq!(recorded.query.as_deref(), Some("patient"));
    assert_eq!(recorded.patients.len(), 1);
    assert_eq!(recorded.patients[0].id, "PAT-JANE-0042");
    assert_eq!(recorded.patients[0].issuer.as_deref(), Some("HOSPITAL-A"));
    let v = verify(dir.path(), key(), None).unwrap();
    assert_eq!((v.entries, v.checkpointed), (8, 8));
    // The filters narrow it as the log's do.
    let by_action = Export {
        action: Some(Action::Retrieve),
        ..Export::default()
    };
    let found = by_action.read(&mut log, reader()).unwrap();
    assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        log.event(8).unwrap().query.as_deref(),
        Some("action=retrieve")
    );
}

#[test]
fn an_export_that_cannot_be_recorded_gives_nothing_out() {
    let dir = tempfile::tempdir().unwrap();
    drop(written(dir.path()));
    // A torn last line: appends are refused until it is repaired.
    let path = dir.path().join("entries.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"v\":1,\"sea");
    std::fs::write(&path, &bytes).unwrap();
    let mut log = AuditLog::open(dir.path(), key()).unwrap();
    let err = Export::default().read(&mut log, reader()).unwrap_err();
    assert!(matches!(
        &err,
        AuditError::NotRecorded(inner) if matches!(**inner, AuditError::Log(
            radveil_ledger::LedgerError::TornTail { .. }
        ))
    ));
    assert_eq!(err.to_string(), "recording this export in the audit trail");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn events_render_in_each_format_and_a_patient_export_shows_only_that_patient() {
    let events = sample::events();
    let search = &events[2];
    let (src, host) = (source(), "test-host");
    let all = Export::default();
    // FHIR: one AuditEvent per patient touched; only Jane's in her export.
    let lines = all.render(Format::Fhir, 2, search, &src, host);
    assert_eq!(lines.len(), 2);
    let mine = jane().render(Format::Fhir, 2, search, &src, host);
    assert_eq!(mine.len(), 1);
    assert!(mine[0].contains("PAT-JANE-0042") && !mine[0].contains("PAT-JOHN-0077"));
    for line in lines.iter().chain(&mine) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["resourceType"], "AuditEvent");
    }
    // DICOM and syslog: one line an event.
    let dicom = all.render(Format::Dicom, 2, search, &src, host);
    assert_eq!(dicom, [crate::dicom::message(search, &src)]);
    assert!(!dicom[0].contains('\n'));
    let syslog = all.render(Format::Syslog, 2, search, &src, host);
    assert_eq!(syslog, [crate::syslog::line(search, &src, host)]);
    // Words: the patient's sentence; nothing for an event about another patient, or
    // without a patient to tell.
    let words = jane().render(Format::Text, 1, &events[1], &src, host);
    assert_eq!(
        words,
        [crate::words::for_patient(&events[1], "PAT-JANE-0042", Some("HOSPITAL-A")).unwrap()]
    );
    assert!(jane()
        .render(Format::Text, 3, &events[3], &src, host)
        .is_empty());
    assert!(all
        .render(Format::Text, 1, &events[1], &src, host)
        .is_empty());
    assert!(Format::Text.needs_patient());
    assert!(!Format::Fhir.needs_patient() && !Format::Dicom.needs_patient());
}

#[test]
fn a_verification_in_words() {
    let v = Verified {
        entries: 9,
        checkpointed: 7,
        trusted: Some(4),
        torn: Some(radveil_ledger::TornTail {
            offset: 3000,
            len: 11,
            entries: 9,
        }),
    };
    assert_eq!(
        v.summary(),
        "audit trail verified: 9 entries open at their places; latest checkpoint (size 7) \
         signed and consistent; trusted checkpoint (size 4) extended"
    );
    assert_eq!(
        v.uncovered().as_deref(),
        Some("2 entries after the latest checkpoint are not yet covered by one")
    );
    assert_eq!(
        v.torn_warning().as_deref(),
        Some("a torn last line (11 bytes at offset 3000): an append crashed before it was acknowledged")
    );
    let whole = Verified {
        entries: 7,
        checkpointed: 7,
        trusted: None,
        torn: None,
    };
    assert_eq!(
        whole.summary(),
        "audit trail verified: 7 entries open at their places; latest checkpoint (size 7) \
         signed and consistent"
    );
    assert_eq!((whole.uncovered(), whole.torn_warning()), (None, None));
}
