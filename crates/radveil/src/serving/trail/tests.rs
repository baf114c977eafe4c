use std::path::Path;

use radveil_audit::{
    Action, Actor, AuditKey, AuditLog, Event, Outcome, PatientAccess, Role, StudyRef,
};
use radveil_store::Key;

use super::*;

const HEX: &[u8] = b"0101010101010101010101010101010101010101010101010101010101010101";

fn key() -> AuditKey {
    AuditKey::from_hex(HEX).unwrap()
}

/// A retrieve of one study by a clinician, as the gateway records it.
fn event(n: u64) -> Event {
    let mut e = Event::now(
        Action::Retrieve,
        Outcome::Success,
        Actor {
            subject: Some(format!("user-{}", n % 50)),
            client: Some("viewer".into()),
            role: Some(Role::Clinician),
            address: Some("127.0.0.1".into()),
            ..Actor::default()
        },
    );
    e.patients = vec![PatientAccess {
        id: format!("PID-{}", n % 1000),
        studies: vec![StudyRef {
            uid: format!("2.25.{}", 1_000_000_000 + n),
            instances: Some(12),
            modality: Some("CT".into()),
            ..StudyRef::default()
        }],
        ..PatientAccess::default()
    }];
    e
}

/// An audit trail of `n` events in `data/audit` (appended in batches, checkpointed).
fn trail(data: &Path, n: u64) {
    let mut log = AuditLog::open_or_init(&data.join(AUDIT_DIR), key()).unwrap();
    let mut done = 0;
    while done < n {
        let batch: Vec<Event> = (done..n.min(done + 1000)).map(event).collect();
        done += batch.len() as u64;
        log.append(&batch).unwrap();
    }
    log.checkpoint().unwrap();
}

fn data() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("keys")).unwrap();
    d
}

/// The folder of kept checkpoints (apart from the data in real use; beside it here).
fn kept(data: &Path) -> std::path::PathBuf {
    data.join("kept")
}

fn entries(data: &Path) -> std::path::PathBuf {
    data.join(AUDIT_DIR).join("entries.jsonl")
}

fn lines(data: &Path) -> Vec<String> {
    std::fs::read_to_string(entries(data))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(data: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(entries(data), text).unwrap();
}

/// The refusal's text, which must name the command to run.
fn refused(data: &Path) -> String {
    let e = check_audit(data, Some(&kept(data)), || Ok(key()))
        .expect_err("a tampered trail must stop the start");
    let text = format!("{e:#}");
    assert!(text.contains("radveil audit verify --data"), "{text}");
    text
}

#[test]
fn a_clean_trail_passes_and_its_checkpoint_is_kept() {
    let d = data();
    // No trail yet: no key is needed, nothing is kept.
    check_audit(d.path(), Some(&kept(d.path())), || {
        panic!("no key is needed without a trail")
    })
    .unwrap();
    assert!(!Trail::Audit.kept(&kept(d.path())).exists());
    trail(d.path(), 20);
    check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
    let note = std::fs::read_to_string(Trail::Audit.kept(&kept(d.path()))).unwrap();
    let cp = Checkpoint::open(&note, &key().verifier().unwrap()).unwrap();
    assert_eq!(cp.size, 20);
    // Again: still passes against what it kept.
    check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
}

#[test]
fn each_kind_of_tampering_stops_the_start() {
    type Tamper = fn(&mut Vec<String>);
    let kinds: [(&str, Tamper, &str); 4] = [
        (
            "edited",
            |l| l[5] = l[5].replacen("\"sealed\":\"", "\"sealed\":\"AAAA", 1),
            "entry 5",
        ),
        (
            "deleted",
            |l| {
                l.remove(7);
            },
            "entries were removed",
        ),
        ("reordered", |l| l.swap(3, 4), "entry 3"),
        (
            "truncated",
            |l| {
                l.truncate(15);
            },
            "entries were removed",
        ),
    ];
    for (kind, tamper, says) in kinds {
        let d = data();
        trail(d.path(), 20);
        check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
        let mut l = lines(d.path());
        tamper(&mut l);
        write_lines(d.path(), &l);
        let text = refused(d.path());
        assert!(text.contains(says), "{kind}: {text}");
    }
}

#[test]
fn a_trail_put_back_from_an_older_copy_is_a_rollback() {
    let d = data();
    trail(d.path(), 10);
    check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
    let old = tempfile::tempdir().unwrap();
    let audit = d.path().join(AUDIT_DIR);
    for f in ["origin", "entries.jsonl", "checkpoint", "verifier.pub"] {
        std::fs::copy(audit.join(f), old.path().join(f)).unwrap();
    }
    trail(d.path(), 20);
    check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
    // The older copy is consistent in itself; only the kept checkpoint tells.
    for f in ["entries.jsonl", "checkpoint"] {
        std::fs::copy(old.path().join(f), audit.join(f)).unwrap();
    }
    check_audit(d.path(), None, || Ok(key())).unwrap();
    let text = refused(d.path());
    assert!(text.contains("--trusted"), "{text}");
    assert!(
        text.contains("entries were removed") || text.contains("rolled back"),
        "{text}"
    );
    // Without a kept checkpoint the older copy starts (a data directory restored from a
    // backup); with it, it does not, and the kept copy did not move backwards.
    let note = std::fs::read_to_string(Trail::Audit.kept(&kept(d.path()))).unwrap();
    assert_eq!(
        Checkpoint::open(&note, &key().verifier().unwrap())
            .unwrap()
            .size,
        30
    );
}

#[test]
fn a_trail_deleted_while_its_checkpoint_is_kept_stops_the_start() {
    let d = data();
    trail(d.path(), 3);
    check_audit(d.path(), Some(&kept(d.path())), || Ok(key())).unwrap();
    std::fs::remove_dir_all(d.path().join(AUDIT_DIR)).unwrap();
    let text = refused(d.path());
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn another_key_stops_the_start() {
    let d = data();
    trail(d.path(), 3);
    let other = AuditKey::new(&Key::from_slice(&[9; 32]).unwrap()).unwrap();
    let e = check_audit(d.path(), Some(&kept(d.path())), || Ok(other)).unwrap_err();
    assert!(format!("{e:#}").contains("radveil audit verify"), "{e:#}");
}

/// Writes a large audit trail for timing `radveil serve`'s start:
/// `RADVEIL_BENCH_AUDIT=DIR RADVEIL_BENCH_ENTRIES=200000 cargo test --release -p radveil
/// -- --ignored write_a_large_trail` makes DIR/audit and DIR/keys/audit-key (then
/// `radveil serve --data DIR`).
#[test]
#[ignore = "writes a large audit trail where RADVEIL_BENCH_AUDIT says"]
fn write_a_large_trail() {
    let dir = std::path::PathBuf::from(std::env::var_os("RADVEIL_BENCH_AUDIT").unwrap());
    let n: u64 = std::env::var("RADVEIL_BENCH_ENTRIES").map_or(200_000, |s| s.parse().unwrap());
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/audit-key"), HEX).unwrap();
    trail(&dir, n);
    let t = std::time::Instant::now();
    check_audit(&dir, None, || Ok(key())).unwrap();
    eprintln!("verified {n} entries in {:?}", t.elapsed());
}
