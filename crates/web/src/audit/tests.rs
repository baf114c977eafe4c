use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use radveil_access::dev::DevIssuer;
use radveil_audit::{Action, AuditKey, AuditLog, Filter, Outcome, Role};
use radveil_store::Key;
use tower::ServiceExt;

use super::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(dev: &DevIssuer, scope: &str, roles: &[&str]) -> String {
    let t = now();
    dev.sign(&serde_json::json!({
        "iss": radveil_access::dev::DEV_ISSUER, "sub": "u1", "aud": "radveil",
        "nbf": t - 60, "exp": t + 600, "scope": scope, "roles": roles,
    }))
    .unwrap()
}

struct Fixture {
    app: axum::Router,
    dev: DevIssuer,
    dir: tempfile::TempDir,
    master: [u8; 32],
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevIssuer::from_seed(&[5; 32]).unwrap();
    let store = radveil_store::Store::open(
        &radveil_store::Layout::under(dir.path()),
        Key::random().unwrap(),
    )
    .unwrap();
    let master = [9u8; 32];
    let key = AuditKey::new(&Key::from_slice(&master).unwrap()).unwrap();
    let log = AuditLog::open_or_init(&dir.path().join("audit"), key).unwrap();
    let (auditor, _writer) = Auditor::start(log, "radveil@test".into()).unwrap();
    let verifier = radveil_access::Verifier::new(
        vec![dev.config("radveil")],
        Arc::new(radveil_access::HttpFetch::default()),
        radveil_access::Settings::default(),
    )
    .unwrap();
    let app = crate::router(AppState {
        store,
        limits: Default::default(),
        metrics: Default::default(),
        access: crate::auth::AccessControl::Tokens(Arc::new(verifier)),
        catalogue: Default::default(),
        auditor: Some(auditor),
        ingest: None,
        https: false,
        disk: None,
        portal: Default::default(),
    });
    Fixture {
        app,
        dev,
        dir,
        master,
    }
}

async fn get(app: &axum::Router, uri: &str, token: Option<&str>) -> Response {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn events(f: &Fixture) -> Vec<Event> {
    let key = AuditKey::new(&Key::from_slice(&f.master).unwrap()).unwrap();
    let log = AuditLog::open(&f.dir.path().join("audit"), key).unwrap();
    log.read(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

#[tokio::test]
async fn every_request_is_one_event_with_who_and_outcome() {
    let f = fixture();
    // A forged token: refused, recorded without its text.
    let r = get(&f.app, "/dicom-web/studies/1.2.3", Some("aaa.bbb.ccc")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A clinician's read of a missing study: a failed retrieve.
    let clinician = token(&f.dev, "user/ImagingStudy.rs", &["clinician"]);
    let r = get(&f.app, "/dicom-web/studies/1.2.3", Some(&clinician)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A search.
    let r = get(&f.app, "/dicom-web/studies", Some(&clinician)).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The clinician may not read the audit trail: 403, recorded.
    let r = get(&f.app, "/audit", Some(&clinician)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Health is not audited.
    assert_eq!(get(&f.app, "/healthz", None).await.status(), StatusCode::OK);
    // An auditor reads it: NDJSON of AuditEvents, the read itself recorded.
    let auditor = token(&f.dev, "user/AuditEvent.rs", &["auditor"]);
    let r = get(&f.app, "/audit?action=token-refused", Some(&auditor)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(v["resourceType"], "AuditEvent");
    assert!(!String::from_utf8_lossy(&body).contains("aaa.bbb.ccc"));
    // A bad filter is 400.
    let r = get(&f.app, "/audit?since=yesterday", Some(&auditor)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let e = events(&f);
    let kinds: Vec<(Action, Outcome)> = e.iter().map(|e| (e.action, e.outcome)).collect();
    assert_eq!(
        kinds,
        [
            (Action::TokenRefused, Outcome::MinorFailure),
            (Action::Retrieve, Outcome::MinorFailure),
            (Action::Query, Outcome::Success),
            (Action::AuditRead, Outcome::MinorFailure),
            (Action::AuditRead, Outcome::Success),
            (Action::AuditRead, Outcome::MinorFailure),
        ]
    );
    assert_eq!(e[0].actor.subject, None);
    assert!(!serde_json::to_string(&e[0]).unwrap().contains("aaa.bbb"));
    assert_eq!(e[1].actor.subject.as_deref(), Some("u1"));
    assert_eq!(e[1].actor.role, Some(Role::Clinician));
    assert_eq!(e[1].purpose, Some(PurposeOfUse::Treatment));
    assert_eq!(e[4].actor.role, Some(Role::Auditor));
    assert_eq!(e[4].query.as_deref(), Some("action=token-refused"));
}

#[tokio::test]
async fn a_request_whose_event_cannot_be_written_is_refused() {
    let f = fixture();
    let clinician = token(&f.dev, "user/ImagingStudy.rs", &["clinician"]);
    let r = get(&f.app, "/dicom-web/studies", Some(&clinician)).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The entries file replaced by a folder: appends fail.
    let entries = f.dir.path().join("audit/entries.jsonl");
    std::fs::rename(&entries, f.dir.path().join("entries.bak")).unwrap();
    std::fs::create_dir(&entries).unwrap();
    let r = get(&f.app, "/dicom-web/studies", Some(&clinician)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn what_merges_studies_and_counts_instances() {
    let mut w = What::default();
    let s = |uid: &str| StudyRef {
        uid: uid.into(),
        instances: Some(1),
        ..StudyRef::default()
    };
    w.add("P1", "", s("1.1"));
    w.add("P1", "", s("1.1"));
    w.add("P1", "", s("1.2"));
    w.add("P1", "HOSP", s("1.3"));
    assert_eq!(w.patients.len(), 2);
    assert_eq!(w.patients[0].issuer, None);
    assert_eq!(w.patients[0].studies.len(), 2);
    assert_eq!(w.patients[0].studies[0].instances, Some(2));
    assert_eq!(w.patients[1].issuer.as_deref(), Some("HOSP"));
}

#[tokio::test]
async fn a_read_sees_the_events_other_processes_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit");
    let key = || AuditKey::new(&Key::from_slice(&[9; 32]).unwrap()).unwrap();
    let log = AuditLog::open_or_init(&path, key()).unwrap();
    let (auditor, writer) = Auditor::start(log, "radveil@test".into()).unwrap();
    let event = |action| Event::now(action, Outcome::Success, Actor::default());
    auditor.append(event(Action::Query)).await.unwrap();
    // `radveil audit export` records its read through a handle of its own.
    let mut other = AuditLog::open(&path, key()).unwrap();
    other.append(&[event(Action::AuditRead)]).unwrap();
    // The server's next read has it, with no append of the server's in between.
    let read = auditor.read(Query::default()).await.unwrap();
    let actions: Vec<Action> = read.iter().map(|(_, e)| e.action).collect();
    assert_eq!(actions, [Action::Query, Action::AuditRead]);
    drop(auditor);
    writer.finish().unwrap();
}

#[test]
fn an_idle_writer_has_the_file_rechecked_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit");
    let key = AuditKey::new(&Key::from_slice(&[9; 32]).unwrap()).unwrap();
    let mut log = AuditLog::open_or_init(&path, key).unwrap();
    let event = |action| Event::now(action, Outcome::Success, Actor::default());
    log.append(&[
        event(Action::Query),
        event(Action::Store),
        event(Action::Query),
    ])
    .unwrap();
    // Not before its time.
    let mut last = Recheck {
        at: Some(std::time::Instant::now()),
        running: None,
    };
    recheck(&log, &mut last);
    assert!(last.running.is_none());
    // Due: the file holds what the log wrote.
    last.at = None;
    recheck(&log, &mut last);
    assert!(last.running.take().unwrap().join().unwrap());
    // Entry 1 edited behind the open log: found.
    let entries = path.join("entries.jsonl");
    let text = std::fs::read_to_string(&entries).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines[1].find("\"sealed\":\"").unwrap() + 12;
    let flipped = if lines[1].as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[1].replace_range(at..at + 1, flipped);
    std::fs::write(&entries, lines.join("\n") + "\n").unwrap();
    last.at = None;
    recheck(&log, &mut last);
    assert!(!last.running.take().unwrap().join().unwrap());
}

/// A read streams the whole log (every line hashed, every event opened): it must not hold
/// up the appends every response waits for. A read over a long log is started first; an
/// append made while it runs is acknowledged before the read ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_not_held_up_by_a_long_read() {
    const ENTRIES: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let key = AuditKey::new(&Key::from_slice(&[9; 32]).unwrap()).unwrap();
    let mut log = AuditLog::open_or_init(&dir.path().join("audit"), key).unwrap();
    let event = |action| Event::now(action, Outcome::Success, Actor::default());
    for _ in 0..ENTRIES / 500 {
        let batch: Vec<Event> = (0..500).map(|_| event(Action::Query)).collect();
        log.append(&batch).unwrap();
    }
    let (auditor, writer) = Auditor::start(log, "radveil@test".into()).unwrap();
    let reader = auditor.clone();
    let read = tokio::spawn(async move { reader.read(Query::default()).await });
    // The read is under way (it takes seconds over this log).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let append = auditor.append(event(Action::Retrieve));
    tokio::pin!(read);
    tokio::select! {
        biased;
        done = &mut read => {
            panic!(
                "the read ended ({} events) before the append made after it was acknowledged",
                done.unwrap().map(|r| r.len()).unwrap_or(0)
            );
        }
        appended = append => appended.unwrap(),
    }
    let waited = started.elapsed();
    // The read still gives the whole log as it stood when it was asked for.
    let read = read.await.unwrap().unwrap();
    assert_eq!(read.len(), ENTRIES);
    assert!(read.iter().all(|(_, e)| e.action == Action::Query));
    assert!(
        waited < Duration::from_secs(5),
        "the append took {waited:?}"
    );
    drop(auditor);
    writer.finish().unwrap();
}
