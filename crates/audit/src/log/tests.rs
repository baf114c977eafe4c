use super::*;
use crate::sample;

const KEY: [u8; 32] = [7; 32];

fn key() -> AuditKey {
    AuditKey::new(&Key::from_slice(&KEY).unwrap()).unwrap()
}

/// A log of the sample events: the first four checkpointed (the checkpoint returned, to be
/// kept elsewhere), then the rest checkpointed too.
fn written(dir: &Path) -> (String, String) {
    let mut log = AuditLog::init(dir, key()).unwrap();
    let events = sample::events();
    log.append(&events[..4]).unwrap();
    let first = log.checkpoint().unwrap();
    log.append(&events[4..]).unwrap();
    let second = log.checkpoint().unwrap();
    (first, second)
}

/// An insider holding the audit key signs a checkpoint of the log as it is, with the
/// ledger's own call (AuditLog::checkpoint would refuse a log that does not extend its
/// latest checkpoint).
fn insider_checkpoint(dir: &Path) {
    Log::<Entry>::open(dir)
        .unwrap()
        .checkpoint(&key().signer().unwrap())
        .unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_entries(dir: &Path, lines: &[String]) {
    std::fs::write(dir.join("entries.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn events_are_sealed_and_read_back_by_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (_, latest) = written(dir.path());
    // Nothing identifying is on disk in plaintext.
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in [
                "PAT-JANE",
                "DOE^JANE",
                "House",
                "1.2.826.0.1",
                "dr-house",
                "192.0.2",
            ] {
                assert!(!text.contains(secret), "{secret} in {}", p.display());
            }
        }
    }
    let log = AuditLog::open(dir.path(), key()).unwrap();
    let all = log.read(&Filter::default()).unwrap();
    assert_eq!(all.len(), sample::events().len());
    assert_eq!(all[1].1, sample::events()[1]);
    // By patient: store, retrieve, query, audit read touch Jane.
    let jane = log.key().patient("PAT-JANE-0042", Some("HOSPITAL-A"));
    let idx: Vec<u64> = log
        .read(&Filter {
            patient: Some(jane),
            ..Filter::default()
        })
        .unwrap()
        .iter()
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(idx, [0, 1, 2, 6]);
    // The issuer is part of the patient's identity.
    let other = log.key().patient("PAT-JANE-0042", None);
    assert!(log
        .read(&Filter {
            patient: Some(other),
            ..Filter::default()
        })
        .unwrap()
        .is_empty());
    // By user, action and time.
    let f = Filter {
        user: Some("dr-house".into()),
        action: Some(Action::Retrieve),
        ..Filter::default()
    };
    assert_eq!(log.read(&f).unwrap().len(), 1);
    let f = Filter {
        since: Some("2026-12-02".into()),
        until: Some("2026-12-02".into()),
        ..Filter::default()
    };
    assert_eq!(log.read(&f).unwrap().len(), 3);
    let f = Filter {
        since: Some("2026-12-02T11:00:00Z".into()),
        until: Some("2026-12-03T08:00:00Z".into()),
        ..Filter::default()
    };
    assert_eq!(log.read(&f).unwrap().len(), 3);
    // And it verifies, against the latest checkpoint kept elsewhere too.
    let v = verify(dir.path(), key(), Some(&latest)).unwrap();
    assert_eq!((v.entries, v.checkpointed, v.trusted), (7, 7, Some(7)));
}

#[test]
fn an_edited_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = written(dir.path());
    let mut lines = entries(dir.path());
    // Flip one character of entry 2's sealed event.
    let mut entry: Entry = serde_json::from_str(&lines[2]).unwrap();
    let mut b = entry.sealed.into_bytes();
    b[40] = if b[40] == b'A' { b'B' } else { b'A' };
    entry.sealed = String::from_utf8(b).unwrap();
    lines[2] = serde_json::to_string(&entry).unwrap();
    write_entries(dir.path(), &lines);
    assert!(verify(dir.path(), key(), None).is_err());
    // Even once the checkpoints are signed again by an insider holding the audit key, the
    // edited entry does not open, and the checkpoint kept elsewhere disagrees.
    insider_checkpoint(dir.path());
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Tampered { index: 2 })
    ));
    assert!(verify(dir.path(), key(), Some(&first)).is_err());
}

#[test]
fn an_entry_resealed_by_an_insider_is_caught_by_a_kept_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = written(dir.path());
    // Rewrite the whole log with entry 1 changed, properly sealed and re-checkpointed.
    let mut events = sample::events();
    events[1].actor.subject = Some("someone-else".into());
    let copy = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(copy.path(), key()).unwrap();
    log.append(&events).unwrap();
    log.checkpoint().unwrap();
    std::fs::copy(
        copy.path().join("entries.jsonl"),
        dir.path().join("entries.jsonl"),
    )
    .unwrap();
    std::fs::copy(
        copy.path().join("checkpoint"),
        dir.path().join("checkpoint"),
    )
    .unwrap();
    // Self-consistent, so only the checkpoint kept elsewhere can tell.
    assert!(verify(dir.path(), key(), None).is_ok());
    assert!(matches!(
        verify(dir.path(), key(), Some(&first)),
        Err(AuditError::Log(
            radveil_ledger::LedgerError::Inconsistent { .. }
        ))
    ));
}

#[test]
fn a_deleted_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let mut lines = entries(dir.path());
    lines.remove(3);
    write_entries(dir.path(), &lines);
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Log(
            radveil_ledger::LedgerError::Inconsistent { .. }
        ))
    ));
}

#[test]
fn a_deleted_entry_after_the_last_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let mut log = AuditLog::open(dir.path(), key()).unwrap();
    log.append(&sample::events()[..3]).unwrap();
    let mut lines = entries(dir.path());
    lines.remove(8);
    write_entries(dir.path(), &lines);
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Tampered { index: 8 })
    ));
}

#[test]
fn reordered_entries_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let mut lines = entries(dir.path());
    lines.swap(1, 2);
    write_entries(dir.path(), &lines);
    assert!(verify(dir.path(), key(), None).is_err());
    // Reordered after the last checkpoint: the positions in the sealed data tell.
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    AuditLog::open(dir.path(), key())
        .unwrap()
        .append(&sample::events()[..3])
        .unwrap();
    let mut lines = entries(dir.path());
    lines.swap(7, 8);
    write_entries(dir.path(), &lines);
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Tampered { index: 7 })
    ));
}

#[test]
fn a_truncated_log_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let lines = entries(dir.path());
    write_entries(dir.path(), &lines[..5]);
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Log(
            radveil_ledger::LedgerError::Inconsistent { .. }
        ))
    ));
}

#[test]
fn a_truncated_or_rewritten_log_is_not_checkpointed_over() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let lines = entries(dir.path());
    write_entries(dir.path(), &lines[..5]);
    let mut log = AuditLog::open(dir.path(), key()).unwrap();
    // Appending goes on (the trail keeps recording), but no checkpoint covers the cut.
    log.append(&sample::events()[..2]).unwrap();
    assert!(matches!(
        log.checkpoint(),
        Err(AuditError::Log(
            radveil_ledger::LedgerError::Inconsistent { .. }
        ))
    ));
    assert!(verify(dir.path(), key(), None).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn a_rollback_behind_a_kept_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (first, latest) = written(dir.path());
    // Roll back: the entries cut to the first checkpoint's size and that checkpoint put back
    // as the latest. The log is consistent with itself...
    let lines = entries(dir.path());
    write_entries(dir.path(), &lines[..4]);
    std::fs::write(dir.path().join("checkpoint"), &first).unwrap();
    assert_eq!(verify(dir.path(), key(), None).unwrap().checkpointed, 4);
    // ...but not with the checkpoint kept elsewhere.
    assert!(matches!(
        verify(dir.path(), key(), Some(&latest)),
        Err(AuditError::Log(_))
    ));
}

#[test]
fn a_patient_handle_moved_to_another_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let mut lines = entries(dir.path());
    // Entry 3 is John's: give it Jane's handle (as if to hide it from John's access log).
    let jane: Entry = serde_json::from_str(&lines[1]).unwrap();
    let mut e: Entry = serde_json::from_str(&lines[3]).unwrap();
    e.patients = jane.patients;
    lines[3] = serde_json::to_string(&e).unwrap();
    write_entries(dir.path(), &lines);
    insider_checkpoint(dir.path());
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Tampered { index: 3 })
    ));
}

#[test]
fn another_key_or_a_replaced_verifier_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let other = AuditKey::new(&Key::from_slice(&[8; 32]).unwrap()).unwrap();
    assert!(matches!(
        verify(dir.path(), other, None),
        Err(AuditError::ForeignVerifier)
    ));
    let other = AuditKey::new(&Key::from_slice(&[8; 32]).unwrap()).unwrap();
    std::fs::write(
        dir.path().join("verifier.pub"),
        format!("{}\n", other.verifier().unwrap()),
    )
    .unwrap();
    assert!(verify(dir.path(), key(), None).is_err());
}

#[test]
fn bad_events_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(dir.path(), key()).unwrap();
    let mut e = sample::events().remove(0);
    e.time = "yesterday".into();
    assert!(matches!(log.append(&[e]), Err(AuditError::Invalid(_))));
    // An event too large for one line of the log is refused rather than written unreadable.
    let mut e = sample::events().remove(0);
    e.query = Some("x".repeat(100_000));
    assert!(matches!(log.append(&[e]), Err(AuditError::Invalid(_))));
    assert_eq!(AuditLog::open(dir.path(), key()).unwrap().size(), 0);
}

#[test]
fn audit_keys_parse_from_hex() {
    let hex = "07".repeat(32);
    let k = AuditKey::from_hex(format!("{hex}\n").as_bytes()).unwrap();
    assert_eq!(k.verifier().unwrap(), key().verifier().unwrap());
    assert!(AuditKey::from_hex(b"0707").is_err());
    assert!(AuditKey::from_hex("zz".repeat(32).as_bytes()).is_err());
}

/// The committed fixture: a gateway data directory with an audit key and an audit log of
/// the sample events (four, checkpointed, then three more, checkpointed), which the
/// command-line tests (tests/integration/test_audit.py) verify, export and tamper with.
fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

const FIXTURE_KEY: [u8; 32] = [0x5a; 32];

fn fixture_key() -> AuditKey {
    AuditKey::new(&Key::from_slice(&FIXTURE_KEY).unwrap()).unwrap()
}

/// Writes the fixture anew: `cargo test -p radveil-audit -- --ignored write_the_fixture`.
#[test]
#[ignore = "writes the committed fixture"]
fn write_the_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(
        dir.join(AUDIT_KEY_FILE),
        radveil_store::Handle::hex_of(&FIXTURE_KEY) + "\n",
    )
    .unwrap();
    let mut log = AuditLog::init(&dir.join(AUDIT_DIR), fixture_key()).unwrap();
    let events = sample::events();
    log.append(&events[..4]).unwrap();
    log.checkpoint().unwrap();
    log.append(&events[4..]).unwrap();
    log.checkpoint().unwrap();
}

#[test]
fn the_committed_fixture_verifies_and_holds_the_sample_events() {
    let dir = fixture_dir().join(AUDIT_DIR);
    let v = verify(&dir, fixture_key(), None).unwrap();
    assert_eq!((v.entries, v.checkpointed), (7, 7));
    let log = AuditLog::open(&dir, fixture_key()).unwrap();
    let events: Vec<Event> = log
        .read(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(events, sample::events());
    let text = std::fs::read_to_string(fixture_dir().join(AUDIT_KEY_FILE)).unwrap();
    assert_eq!(
        AuditKey::from_hex(text.as_bytes())
            .unwrap()
            .verifier()
            .unwrap(),
        fixture_key().verifier().unwrap()
    );
}

#[test]
fn a_torn_last_line_is_reported_and_appends_wait_for_its_repair() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let path = dir.path().join("entries.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"v\":1,\"sea");
    std::fs::write(&path, &bytes).unwrap();
    // Everything acknowledged still verifies; the torn line is reported.
    let v = verify(dir.path(), key(), None).unwrap();
    assert_eq!(v.entries, 7);
    assert_eq!(v.torn.map(|t| t.len), Some(11));
    // Nothing is appended after it until it is repaired (the ledger's rule).
    let mut log = AuditLog::open(dir.path(), key()).unwrap();
    assert!(matches!(
        log.append(&sample::events()[..1]),
        Err(AuditError::Log(
            radveil_ledger::LedgerError::TornTail { .. }
        ))
    ));
}

#[test]
fn events_appended_by_another_process_are_sealed_at_their_positions() {
    // The server's writer keeps its log open; `radveil audit export` appends its own read
    // event through another handle in between.
    let dir = tempfile::tempdir().unwrap();
    let events = sample::events();
    let mut server = AuditLog::init(dir.path(), key()).unwrap();
    server.append(&events[..2]).unwrap();
    let mut export = AuditLog::open(dir.path(), key()).unwrap();
    assert_eq!(export.append(&events[2..3]).unwrap(), 2..3);
    // The server reads it once refreshed, before appending anything.
    assert_eq!(server.read(&Filter::default()).unwrap().len(), 2);
    server.refresh().unwrap();
    assert_eq!(server.event(2).unwrap(), events[2]);
    // The server's next events go after it, sealed at their own positions.
    assert_eq!(server.append(&events[3..5]).unwrap(), 3..5);
    assert_eq!(server.event(2).unwrap(), events[2]);
    server.checkpoint().unwrap();
    let v = verify(dir.path(), key(), None).unwrap();
    assert_eq!((v.entries, v.checkpointed), (5, 5));
    let read = AuditLog::open(dir.path(), key())
        .unwrap()
        .read(&Filter::default())
        .unwrap();
    assert_eq!(
        read.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        events[..5]
    );
}

#[test]
fn an_entry_edited_behind_an_open_log_is_not_endorsed() {
    // An open log (the server's writer) reads only what is added past its last line, and
    // signs the entries as it read and wrote them. An entry edited in place before that
    // line, checkpointed or not, is not endorsed: the next checkpoint commits to the entry
    // as it was written, and verification names the edited entry.
    let events = sample::events();
    let flip = |line: &mut String| {
        let at = line.find("\"sealed\":\"").unwrap() + 12;
        let mut bytes = std::mem::take(line).into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        *line = String::from_utf8(bytes).unwrap();
    };
    for edited in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::init(dir.path(), key()).unwrap();
        log.append(&events[..4]).unwrap();
        log.checkpoint().unwrap();
        log.append(&events[4..6]).unwrap();
        let written = entries(dir.path());
        let mut lines = written.clone();
        flip(&mut lines[edited]);
        write_entries(dir.path(), &lines);
        log.append(&events[6..]).unwrap();
        let signed = log.checkpoint().unwrap();
        // The log keeps no entry: read from the file, the edited one does not open.
        assert!(matches!(
            log.event(edited as u64),
            Err(AuditError::Tampered { index }) if index == edited as u64
        ));
        assert!(
            matches!(
                verify(dir.path(), key(), None),
                Err(AuditError::Tampered { index }) if index == edited as u64
            ),
            "entry {edited}"
        );
        // A check of the file against what the log read and wrote finds it too, while the
        // log is open.
        assert!(log.snapshot().check().is_err(), "entry {edited}");
        // Put back as written, the log verifies against the checkpoint signed meanwhile.
        let mut lines = entries(dir.path());
        lines[edited] = written[edited].clone();
        write_entries(dir.path(), &lines);
        let v = verify(dir.path(), key(), Some(&signed)).unwrap();
        assert_eq!((v.entries, v.checkpointed, v.trusted), (7, 7, Some(7)));
        log.snapshot().check().unwrap();
    }
    // The last entry the log read, edited: its next append reads the log again whole, sees
    // the entry changed, and no checkpoint is signed over it.
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(dir.path(), key()).unwrap();
    log.append(&events[..4]).unwrap();
    log.checkpoint().unwrap();
    log.append(&events[4..6]).unwrap();
    let mut lines = entries(dir.path());
    flip(&mut lines[5]);
    write_entries(dir.path(), &lines);
    log.append(&events[6..]).unwrap();
    assert!(matches!(
        log.checkpoint(),
        Err(AuditError::Log(radveil_ledger::LedgerError::Inconsistent {
            size: 6,
            ..
        }))
    ));
    assert_eq!(
        std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count(),
        2
    );
    assert!(matches!(
        verify(dir.path(), key(), None),
        Err(AuditError::Tampered { index: 5 })
    ));
}

#[test]
fn an_open_audit_log_holds_the_same_memory_whatever_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(dir.path(), key()).unwrap();
    let events = sample::events();
    let mut held = Vec::new();
    for round in 0..1_000 {
        log.append(&events[..10.min(events.len())]).unwrap();
        if round % 100 == 99 {
            log.checkpoint().unwrap();
            held.push(log.held());
        }
    }
    assert!(log.size() >= 5_000, "{}", log.size());
    // The ledger's frontier and a few roots: no entry, no leaf list.
    assert!(held.iter().all(|&h| h <= 2 * 64), "{held:?}");
    // The events are read back from the file, every one.
    let read = log.read(&Filter::default()).unwrap();
    assert_eq!(read.len() as u64, log.size());
    assert_eq!(read[3].1, events[3]);
}

#[test]
fn a_reader_reads_what_the_open_log_reads_and_reports_an_edited_entry() {
    // The server's reads run on a view of the open log (AuditLog::reader) away from the
    // handle, so that its appends are not held up: the view gives what the handle's own
    // read gives, covers what the handle had read and written when it was taken, and still
    // opens and checks every entry.
    let events = sample::events();
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(dir.path(), key()).unwrap();
    log.append(&events[..6]).unwrap();
    let reader = log.reader();
    log.append(&events[6..]).unwrap();
    assert_eq!(reader.size(), 6);
    assert_eq!(reader.read(&Filter::default()).unwrap().len(), 6);
    let reader = log.reader();
    let jane = Filter {
        patient: Some(reader.key().patient("PAT-JANE-0042", Some("HOSPITAL-A"))),
        ..Filter::default()
    };
    for filter in [Filter::default(), jane] {
        let read = reader.read(&filter).unwrap();
        assert!(!read.is_empty());
        assert_eq!(read, log.read(&filter).unwrap());
    }
    // An entry edited in the file behind the open log: the view's read reports it as the
    // handle's read does.
    let mut lines = entries(dir.path());
    let at = lines[2].find("\"sealed\":\"").unwrap() + 12;
    let flipped = if lines[2].as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[2].replace_range(at..at + 1, flipped);
    write_entries(dir.path(), &lines);
    assert!(matches!(
        log.read(&Filter::default()),
        Err(AuditError::Tampered { index: 2 })
    ));
    assert!(matches!(
        log.reader().read(&Filter::default()),
        Err(AuditError::Tampered { index: 2 })
    ));
    assert!(matches!(
        reader.read(&Filter::default()),
        Err(AuditError::Tampered { index: 2 })
    ));
}

#[test]
fn a_patients_places_read_what_a_full_read_for_them_reads() {
    // The portal's access log reads one patient's events by their places (one seek each)
    // instead of a pass over the whole log: the same events, kept up to date as events are
    // added (by this handle or another process), and an edited entry still reported.
    let events = sample::events();
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::init(dir.path(), key()).unwrap();
    log.append(&events[..5]).unwrap();
    let jane = log.key().patient("PAT-JANE-0042", Some("HOSPITAL-A"));
    let filter = Filter {
        patient: Some(jane),
        ..Filter::default()
    };
    let places = log.places_of(&jane).unwrap();
    let by_places = log.reader().read_at(&places, &filter).unwrap();
    assert!(!by_places.is_empty());
    assert_eq!(by_places, log.read(&filter).unwrap());
    // Events added since, by this handle and by another process, are found too.
    log.append(&events[5..7]).unwrap();
    let mut other = AuditLog::open(dir.path(), key()).unwrap();
    other.append(&events[7..]).unwrap();
    log.refresh().unwrap();
    let places = log.places_of(&jane).unwrap();
    let all = log.read(&filter).unwrap();
    assert!(
        all.len() > by_places.len(),
        "later events name the patient too"
    );
    assert_eq!(log.reader().read_at(&places, &filter).unwrap(), all);
    // Someone else's handle: none of Jane's events.
    let nobody = log.key().patient("NOBODY", None);
    assert!(log.places_of(&nobody).unwrap().is_empty());
    // A place whose line was edited behind the log: reported, never read as another event.
    let first = places[0].index as usize;
    let mut lines = entries(dir.path());
    let at = lines[first].find("\"sealed\":\"").unwrap() + 12;
    let flipped = if lines[first].as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[first].replace_range(at..at + 1, flipped);
    write_entries(dir.path(), &lines);
    assert!(matches!(
        log.reader().read_at(&places, &filter),
        Err(AuditError::Tampered { .. })
    ));
}
