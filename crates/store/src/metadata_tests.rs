//! The sealed metadata copy kept beside each instance ([`Store::put_with_metadata`]).

use super::*;

fn ids<'a>(patient: &'a str, study: &'a str, instance: &'a str) -> InstanceIds<'a> {
    InstanceIds {
        patient_id: patient,
        issuer: "",
        study,
        series: "1.2.9.1",
        instance,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn copy_without_keys(from: &Path, to: &Path) {
    for (p, b) in files(from) {
        let rel = p.strip_prefix(from).unwrap();
        if rel.starts_with("keys") {
            continue;
        }
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, b).unwrap();
    }
}

const SECRET: &str = "METADATA^PLANTED^QZ";

fn copy_of(i: &str) -> Vec<u8> {
    format!("{{\"name\":\"{SECRET}\",\"instance\":\"{i}\"}}").into_bytes()
}

/// The copy comes back as kept, is never on disk in plaintext, is absent (not an error)
/// for an instance stored without one, and opens from no copy of the data taken before its
/// instance was deleted, while its study's other instance's still does.
#[test]
fn metadata_copies_are_sealed_and_shredded_with_their_instance() {
    let live = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let kek = Key::from_slice(&[3; 32]).unwrap();
    let (a, b, c) = (
        ids("P1", "1.2.9", "1.2.9.1.1"),
        ids("P1", "1.2.9", "1.2.9.1.2"),
        ids("P1", "1.2.9", "1.2.9.1.3"),
    );
    let rt = rt();
    let (ha, hb) = rt.block_on(async {
        let store = Store::open(&Layout::under(live.path()), kek.clone()).unwrap();
        for i in [&a, &b] {
            let m = copy_of(i.instance);
            store
                .put_with_metadata(
                    i,
                    Bytes::from(i.instance.as_bytes().to_vec()),
                    b"m",
                    Some(&m),
                )
                .await
                .unwrap();
        }
        store
            .put(&c, Bytes::from_static(b"no copy"), b"m")
            .await
            .unwrap();
        let (ha, hb) = (store.handles(&a), store.handles(&b));
        let rows = store.rows(ha.study, None).await.unwrap();
        let got = store.metadata(rows.clone()).await.unwrap();
        for (r, m) in rows.iter().zip(&got) {
            let m = m.as_ref().unwrap();
            if r.instance == ha.instance {
                assert_eq!(m.as_deref(), Some(&copy_of(a.instance)[..]));
            } else if r.instance == hb.instance {
                assert_eq!(m.as_deref(), Some(&copy_of(b.instance)[..]));
            } else {
                assert_eq!(m, &None, "an instance stored without a copy has none");
            }
        }
        for (p, bytes) in files(live.path()) {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "plaintext metadata in {}",
                p.display()
            );
        }
        copy_without_keys(live.path(), saved.path());
        store
            .delete_instance(ha.study, None, ha.instance)
            .await
            .unwrap();
        (ha, hb)
    });
    let layout = Layout {
        keys: Layout::under(live.path()).keys,
        ..Layout::under(saved.path())
    };
    rt.block_on(async {
        let store = Store::open(&layout, kek).unwrap();
        let rows = store.rows(ha.study, None).await.unwrap();
        let got = store.metadata(rows.clone()).await.unwrap();
        for (r, m) in rows.iter().zip(got) {
            if r.instance == ha.instance {
                assert!(
                    matches!(m, Err(StoreError::NotFound)),
                    "a deleted instance's metadata opened from a copy taken before"
                );
            } else if r.instance == hb.instance {
                assert_eq!(m.unwrap().unwrap(), copy_of(b.instance));
            }
        }
    });
}

/// A flipped bit in a kept copy, or a copy moved to another instance's row, is reported as
/// tampered and never returned.
#[test]
fn an_altered_or_moved_metadata_copy_is_reported_and_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&layout, Key::from_slice(&[4; 32]).unwrap()).unwrap();
        for i in ["1.2.9.1.1", "1.2.9.1.2"] {
            let id = ids("P1", "1.2.9", i);
            store
                .put_with_metadata(
                    &id,
                    Bytes::from(i.as_bytes().to_vec()),
                    b"m",
                    Some(&copy_of(i)),
                )
                .await
                .unwrap();
        }
        let db = rusqlite::Connection::open(&layout.index).unwrap();
        // Swap the two copies.
        let blobs: Vec<(Vec<u8>, Vec<u8>)> = db
            .prepare("SELECT handle, sealed FROM metadata")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(blobs.len(), 2);
        for (i, j) in [(0, 1), (1, 0)] {
            db.execute(
                "UPDATE metadata SET sealed = ?1 WHERE handle = ?2",
                rusqlite::params![blobs[j].1, blobs[i].0],
            )
            .unwrap();
        }
        let study = store.uid(Level::Study, "1.2.9");
        let rows = store.rows(study, None).await.unwrap();
        for m in store.metadata(rows.clone()).await.unwrap() {
            assert!(
                matches!(m, Err(StoreError::Tampered(_))),
                "a moved copy opened"
            );
        }
        // Put them back, then flip one bit of one.
        let mut flipped = blobs[0].1.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x10;
        db.execute(
            "UPDATE metadata SET sealed = ?1 WHERE handle = ?2",
            rusqlite::params![flipped, blobs[0].0],
        )
        .unwrap();
        db.execute(
            "UPDATE metadata SET sealed = ?1 WHERE handle = ?2",
            rusqlite::params![blobs[1].1, blobs[1].0],
        )
        .unwrap();
        let got = store.metadata(rows.clone()).await.unwrap();
        let bad = got
            .iter()
            .filter(|m| matches!(m, Err(StoreError::Tampered(_))))
            .count();
        assert_eq!(bad, 1);
        assert_eq!(got.iter().filter(|m| matches!(m, Ok(Some(_)))).count(), 1);
    });
}

/// With a maker given, a plain `put` keeps the copy the maker makes of the bytes.
#[test]
fn a_plain_put_keeps_the_copy_the_maker_makes() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(
            &Layout::under(dir.path()),
            Key::from_slice(&[5; 32]).unwrap(),
        )
        .unwrap();
        let id = ids("P1", "1.2.9", "1.2.9.1.1");
        store
            .put(&id, Bytes::from_static(b"before"), b"m")
            .await
            .unwrap();
        fn upper(b: &[u8]) -> Option<Vec<u8>> {
            Some(b.to_ascii_uppercase())
        }
        store.keep_metadata(upper);
        let id2 = ids("P1", "1.2.9", "1.2.9.1.2");
        store
            .put(&id2, Bytes::from_static(b"after"), b"m")
            .await
            .unwrap();
        let rows = store
            .rows(store.uid(Level::Study, "1.2.9"), None)
            .await
            .unwrap();
        let h2 = store.handles(&id2).instance;
        for (r, m) in rows.iter().zip(store.metadata(rows.clone()).await.unwrap()) {
            let m = m.unwrap();
            if r.instance == h2 {
                assert_eq!(m.as_deref(), Some(&b"AFTER"[..]));
            } else {
                assert_eq!(m, None);
            }
        }
    });
}

/// A copy added later (for an instance stored before copies were kept) opens like one kept
/// at store, is not added twice, and is not added for a deleted instance.
#[test]
fn a_copy_added_later_opens_and_none_is_added_for_a_deleted_instance() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(
            &Layout::under(dir.path()),
            Key::from_slice(&[6; 32]).unwrap(),
        )
        .unwrap();
        let (a, b) = (
            ids("P1", "1.2.9", "1.2.9.1.1"),
            ids("P1", "1.2.9", "1.2.9.1.2"),
        );
        for i in [&a, &b] {
            store
                .put(i, Bytes::from(i.instance.as_bytes().to_vec()), b"m")
                .await
                .unwrap();
        }
        let study = store.uid(Level::Study, "1.2.9");
        let rows = store.rows(study, None).await.unwrap();
        assert!(store.add_metadata(&rows[0], b"late").await.unwrap());
        assert!(!store.add_metadata(&rows[0], b"again").await.unwrap());
        let got = store.metadata(vec![rows[0].clone()]).await.unwrap();
        assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&b"late"[..]));
        store
            .delete_instance(study, None, rows[1].instance)
            .await
            .unwrap();
        assert!(!store.add_metadata(&rows[1], b"gone").await.unwrap());
        let db = rusqlite::Connection::open(Layout::under(dir.path()).index).unwrap();
        let n: i64 = db
            .query_row("SELECT count(*) FROM metadata", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    });
}
