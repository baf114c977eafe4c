//! The store's rules, each tested on a real store in a temporary folder.

use super::*;

fn ids<'a>(
    patient: &'a str,
    study: &'a str,
    series: &'a str,
    instance: &'a str,
) -> InstanceIds<'a> {
    InstanceIds {
        patient_id: patient,
        issuer: "",
        study,
        series,
        instance,
    }
}

fn kek(b: u8) -> Key {
    Key::from_slice(&[b; 32]).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every file under `dir`, read.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const PLANTED: &[&str] = &[
    "DOE^JANE^PLANTED",
    "PID-7731-PLANTED",
    "19230405",
    "1.2.826.0.1.3680043.99.424242",
];

fn instance_bytes(n: u32) -> Vec<u8> {
    format!(
        "DICM {} {} {} {} #{n} pixel data follows",
        PLANTED[0], PLANTED[1], PLANTED[2], PLANTED[3]
    )
    .into_bytes()
}

#[test]
fn stored_instances_come_back_byte_identical_and_nothing_identifying_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    rt().block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        let id = ids(PLANTED[1], PLANTED[3], "1.2.3.4", "1.2.3.4.5");
        let bytes = instance_bytes(1);
        let meta = format!("{{\"PatientName\":\"{}\"}}", PLANTED[0]);
        assert_eq!(
            store
                .put(&id, Bytes::from(bytes.clone()), meta.as_bytes())
                .await
                .unwrap(),
            PutOutcome::Stored
        );
        let h = store.handles(&id);
        assert_eq!(
            store
                .get(h.study, Some(h.series), h.instance)
                .await
                .unwrap(),
            bytes
        );
        let rows = store.rows(h.study, None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(store.meta(&rows[0]).await.unwrap(), meta.as_bytes());
    });
    let files = all_bytes(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    for (p, b) in &files {
        for needle in PLANTED {
            assert!(
                !contains(b, needle.as_bytes()),
                "{needle} in {}",
                p.display()
            );
        }
        assert!(!contains(b, b"1.2.3.4.5"), "a UID in {}", p.display());
    }
}

#[test]
fn a_second_copy_is_already_stored_when_identical_and_a_conflict_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let id = ids("P", "1.2", "1.2.3", "1.2.3.4");
        let a = Bytes::from(instance_bytes(1));
        assert_eq!(
            store.put(&id, a.clone(), b"").await.unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            store.put(&id, a.clone(), b"").await.unwrap(),
            PutOutcome::AlreadyStored
        );
        let b = Bytes::from(instance_bytes(2));
        assert!(matches!(
            store.put(&id, b, b"").await,
            Err(StoreError::Conflict)
        ));
        let h = store.handles(&id);
        assert_eq!(store.get(h.study, None, h.instance).await.unwrap(), a);
    });
}

#[test]
fn concurrent_copies_of_one_instance_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.put(
                    &ids("P", "1.2", "1.2.3", "1.2.3.4"),
                    Bytes::from(instance_bytes(1)),
                    b"",
                )
                .await
                .unwrap()
            }));
        }
        let mut stored = 0;
        for t in tasks {
            if t.await.unwrap() == PutOutcome::Stored {
                stored += 1;
            }
        }
        assert_eq!(stored, 1);
        let h = store.handles(&ids("P", "1.2", "1.2.3", "1.2.3.4"));
        assert_eq!(store.rows(h.study, None).await.unwrap().len(), 1);
    });
    // The losers' objects are gone.
    let objects = all_bytes(&dir.path().join("objects"));
    assert_eq!(
        objects.len(),
        1,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
}

#[test]
fn a_flipped_bit_in_a_stored_object_is_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let id = ids("P", "1.2", "1.2.3", "1.2.3.4");
        store
            .put(&id, Bytes::from(instance_bytes(1)), b"")
            .await
            .unwrap();
        let (path, mut b) = all_bytes(&dir.path().join("objects")).pop().unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let h = store.handles(&id);
        match store.get(h.study, None, h.instance).await {
            Err(StoreError::Tampered(name)) => {
                assert!(path.to_string_lossy().ends_with(&name), "{name}");
            }
            other => panic!("served an altered object: {other:?}"),
        }
        // A missing object is reported the same way, not as a missing instance.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            store.get(h.study, None, h.instance).await,
            Err(StoreError::Tampered(_))
        ));
    });
}

#[test]
fn an_object_moved_to_another_instance_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let a = ids("P", "1.2", "1.2.3", "1.2.3.4");
        let b = ids("P", "1.2", "1.2.3", "1.2.3.5");
        store
            .put(&a, Bytes::from(instance_bytes(1)), b"")
            .await
            .unwrap();
        store
            .put(&b, Bytes::from(instance_bytes(2)), b"")
            .await
            .unwrap();
        let (ha, hb) = (store.handles(&a), store.handles(&b));
        let ra = &store.rows(ha.study, None).await.unwrap();
        let oa = ra.iter().find(|r| r.instance == ha.instance).unwrap();
        let ob = ra.iter().find(|r| r.instance == hb.instance).unwrap();
        let base = dir.path().join("objects").join(ha.study.hex());
        std::fs::copy(base.join(&oa.object), base.join(&ob.object)).unwrap();
        assert!(matches!(
            store.get(hb.study, None, hb.instance).await,
            Err(StoreError::Tampered(_))
        ));
        assert!(store.get(ha.study, None, ha.instance).await.is_ok());
    });
}

#[test]
fn lookups_check_the_study_and_series_named() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let id = ids("P", "1.2", "1.2.3", "1.2.3.4");
        store
            .put(&id, Bytes::from(instance_bytes(1)), b"")
            .await
            .unwrap();
        let h = store.handles(&id);
        let other = store.uid(Level::Study, "9.9");
        assert!(matches!(
            store.get(other, None, h.instance).await,
            Err(StoreError::NotFound)
        ));
        let other_series = store.uid(Level::Series, "9.9");
        assert!(matches!(
            store.get(h.study, Some(other_series), h.instance).await,
            Err(StoreError::NotFound)
        ));
    });
}

#[test]
fn a_study_cannot_move_to_another_patient() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        store
            .put(
                &ids("P1", "1.2", "1.2.3", "1.2.3.4"),
                Bytes::from(instance_bytes(1)),
                b"",
            )
            .await
            .unwrap();
        let r = store
            .put(
                &ids("P2", "1.2", "1.2.3", "1.2.3.5"),
                Bytes::from(instance_bytes(2)),
                b"",
            )
            .await;
        assert!(matches!(r, Err(StoreError::StudyOfAnotherPatient)), "{r:?}");
    });
}

/// The wrapped patient and study keys in a key store.
fn wrapped_keys(file: &Path) -> Vec<Vec<u8>> {
    let c = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT wrapped FROM patient UNION ALL SELECT wrapped FROM study")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Copies a data directory without its key store (a backup of the data).
fn backup(from: &Path, to: &Path) {
    for (p, b) in all_bytes(from) {
        let rel = p.strip_prefix(from).unwrap();
        if rel.starts_with("keys") {
            continue;
        }
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, b).unwrap();
    }
}

#[test]
fn a_deleted_study_does_not_open_from_a_backup_taken_before_while_others_do() {
    let live = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let gone = ids("P1", "1.2.1", "1.2.1.1", "1.2.1.1.1");
    let kept_same_patient = ids("P1", "1.2.2", "1.2.2.1", "1.2.2.1.1");
    let other_patient = ids("P2", "1.2.3", "1.2.3.1", "1.2.3.1.1");
    let rt = rt();
    let hs = rt.block_on(async {
        let store = Store::open(&Layout::under(live.path()), kek(1)).unwrap();
        for (n, i) in [gone, kept_same_patient, other_patient].iter().enumerate() {
            store
                .put(i, Bytes::from(instance_bytes(n as u32)), b"m")
                .await
                .unwrap();
        }
        backup(live.path(), saved.path());
        let h = store.handles(&gone);
        assert_eq!(store.delete_study(h.study).await.unwrap().instances, 1);
        assert!(matches!(
            store.get(h.study, None, h.instance).await,
            Err(StoreError::NotFound)
        ));
        [
            h,
            store.handles(&kept_same_patient),
            store.handles(&other_patient),
        ]
    });
    // Put the old data back beside the current key store.
    let restored = tempfile::tempdir().unwrap();
    backup(saved.path(), restored.path());
    let layout = Layout {
        keys: Layout::under(live.path()).keys,
        ..Layout::under(restored.path())
    };
    rt.block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        let [g, k, o] = hs;
        let rows = store.rows(g.study, None).await.unwrap();
        assert_eq!(rows.len(), 1, "the restored index still lists it");
        assert!(
            store.open_row(&rows[0]).await.is_err(),
            "a shredded study opened"
        );
        assert!(
            store.meta(&rows[0]).await.is_err(),
            "its index attributes opened"
        );
        assert_eq!(
            store.get(k.study, None, k.instance).await.unwrap(),
            instance_bytes(1)
        );
        assert_eq!(
            store.get(o.study, None, o.instance).await.unwrap(),
            instance_bytes(2)
        );
    });
}

#[test]
fn a_deleted_patient_does_not_open_from_a_backup_and_their_keys_leave_the_key_store_file() {
    let live = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let a1 = ids("P1", "1.2.1", "1.2.1.1", "1.2.1.1.1");
    let a2 = ids("P1", "1.2.2", "1.2.2.1", "1.2.2.1.1");
    let b = ids("P2", "1.2.3", "1.2.3.1", "1.2.3.1.1");
    let rt = rt();
    let keys_file = Layout::under(live.path()).keys;
    let (ha1, ha2, hb, before) = rt.block_on(async {
        let store = Store::open(&Layout::under(live.path()), kek(1)).unwrap();
        for (n, i) in [a1, a2, b].iter().enumerate() {
            store
                .put(i, Bytes::from(instance_bytes(n as u32)), b"m")
                .await
                .unwrap();
        }
        backup(live.path(), saved.path());
        let before = wrapped_keys(&keys_file);
        let p = store.patient("P1", "");
        assert_eq!(store.delete_patient(p).await.unwrap().instances, 2);
        assert!(matches!(
            store.delete_patient(p).await,
            Err(StoreError::NotFound)
        ));
        (
            store.handles(&a1),
            store.handles(&a2),
            store.handles(&b),
            before,
        )
    });
    // The patient's wrapped keys were in the key store and are no longer in any of its
    // files (database, log).
    let wrapped_before = before;
    assert_eq!(wrapped_before.len(), 2 + 3);
    let now: Vec<u8> = all_bytes(keys_file.parent().unwrap())
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    let left = wrapped_before.iter().filter(|w| contains(&now, w)).count();
    assert_eq!(
        left, 2,
        "P2's patient key and study key stay, P1's three keys are gone"
    );
    let restored = tempfile::tempdir().unwrap();
    backup(saved.path(), restored.path());
    let layout = Layout {
        keys: keys_file.clone(),
        ..Layout::under(restored.path())
    };
    rt.block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        for h in [ha1, ha2] {
            let rows = store.rows(h.study, None).await.unwrap();
            assert!(
                store.open_row(&rows[0]).await.is_err(),
                "a shredded patient's study opened"
            );
        }
        assert_eq!(
            store.get(hb.study, None, hb.instance).await.unwrap(),
            instance_bytes(2)
        );
    });
}

#[test]
fn deleting_one_instance_or_series_leaves_the_rest_of_the_study() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(&Layout::under(dir.path()), kek(1)).unwrap();
        let a = ids("P", "1.2", "1.2.3", "1.2.3.4");
        let b = ids("P", "1.2", "1.2.3", "1.2.3.5");
        let c = ids("P", "1.2", "1.2.4", "1.2.4.1");
        for (n, i) in [a, b, c].iter().enumerate() {
            store
                .put(i, Bytes::from(instance_bytes(n as u32)), b"")
                .await
                .unwrap();
        }
        let (ha, hb, hc) = (store.handles(&a), store.handles(&b), store.handles(&c));
        assert_eq!(
            store
                .delete_instance(ha.study, None, ha.instance)
                .await
                .unwrap()
                .instances,
            1
        );
        assert!(matches!(
            store.get(ha.study, None, ha.instance).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.get(hb.study, None, hb.instance).await.is_ok());
        assert_eq!(
            store
                .delete_series(hc.study, hc.series)
                .await
                .unwrap()
                .instances,
            1
        );
        assert!(matches!(
            store.delete_series(hc.study, hc.series).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.rows(ha.study, None).await.unwrap().len(), 1);
        // Stored again after deletion: a new instance, served.
        assert_eq!(
            store
                .put(&a, Bytes::from(instance_bytes(9)), b"")
                .await
                .unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            store.get(ha.study, None, ha.instance).await.unwrap(),
            instance_bytes(9)
        );
    });
    assert_eq!(all_bytes(&dir.path().join("objects")).len(), 2);
}

#[test]
fn rotating_the_kek_rewraps_keys_and_the_old_kek_no_longer_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let id = ids("P", "1.2", "1.2.3", "1.2.3.4");
    let rt = rt();
    rt.block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        store
            .put(&id, Bytes::from(instance_bytes(1)), b"")
            .await
            .unwrap();
    });
    let objects_before = all_bytes(&layout.objects);
    assert_eq!(rotate_kek(&layout, kek(1), kek(2)).unwrap(), 1);
    assert_eq!(
        all_bytes(&layout.objects),
        objects_before,
        "data is not re-encrypted"
    );
    assert!(matches!(
        Store::open(&layout, kek(1)),
        Err(StoreError::WrongKek)
    ));
    assert!(matches!(
        rotate_kek(&layout, kek(1), kek(3)),
        Err(StoreError::WrongKek)
    ));
    rt.block_on(async {
        let store = Store::open(&layout, kek(2)).unwrap();
        let h = store.handles(&id);
        assert_eq!(
            store.get(h.study, None, h.instance).await.unwrap(),
            instance_bytes(1)
        );
    });
}

#[test]
fn store_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(&dir.path().join("data"));
    rt().block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        store
            .put(
                &ids("P", "1.2", "1.2.3", "1.2.3.4"),
                Bytes::from(instance_bytes(1)),
                b"",
            )
            .await
            .unwrap();
    });
    for p in [&layout.index, &layout.keys] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    for d in [layout.objects.as_path(), layout.keys.parent().unwrap()] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}

#[test]
fn a_symlink_in_place_of_the_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    std::os::unix::fs::symlink("/tmp/elsewhere.db", &layout.index).unwrap();
    assert!(Store::open(&layout, kek(1)).is_err());
}

/// One instance's row is looked up by its handle alone (what WADO-RS and metadata of one
/// instance use, instead of reading its whole series), and only under the study and
/// series it belongs to: another study's or series' path to it finds nothing.
#[test]
fn one_instance_row_is_found_alone_and_only_under_its_own_study_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    rt().block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        let mut handles = Vec::new();
        for n in 0..20u32 {
            let inst = format!("1.2.3.4.{n}");
            let id = ids("P", "1.2", "1.2.3", &inst);
            store
                .put(&id, Bytes::from(instance_bytes(n)), b"")
                .await
                .unwrap();
            handles.push(store.handles(&id));
        }
        let other = ids("P", "1.2", "1.2.9", "1.2.9.1");
        store
            .put(&other, Bytes::from(instance_bytes(99)), b"")
            .await
            .unwrap();
        let o = store.handles(&other);
        let h = handles[7];
        let r = store
            .instance_row(h.study, Some(h.series), h.instance)
            .await
            .unwrap();
        assert_eq!(
            (r.study, r.series, r.instance),
            (h.study, h.series, h.instance)
        );
        assert_eq!(store.open_row(&r).await.unwrap(), instance_bytes(7));
        // Without the series, the study alone is checked.
        let r = store.instance_row(h.study, None, h.instance).await.unwrap();
        assert_eq!(r.instance, h.instance);
        // Under another series of the same study, or another study: absent.
        assert!(matches!(
            store
                .instance_row(h.study, Some(o.series), h.instance)
                .await,
            Err(StoreError::NotFound)
        ));
        let elsewhere = store.uid(Level::Study, "1.9");
        assert!(matches!(
            store
                .instance_row(elsewhere, Some(h.series), h.instance)
                .await,
            Err(StoreError::NotFound)
        ));
        // An instance never stored: absent.
        let never = store.uid(Level::Instance, "1.2.3.4.999");
        assert!(matches!(
            store.instance_row(h.study, Some(h.series), never).await,
            Err(StoreError::NotFound)
        ));
    });
}

fn put<'a>(i: &'a str, n: u32, patient: &'a str) -> Put<'a> {
    Put {
        ids: InstanceIds {
            patient_id: patient,
            issuer: "",
            study: "1.2",
            series: "1.2.3",
            instance: i,
        },
        bytes: Bytes::from(instance_bytes(n)),
        meta: format!("meta {n}").into_bytes(),
        metadata: Some(format!("copy {n}").into_bytes()),
        sha256: None,
    }
}

/// A request's instances stored as one batch: each is stored, already stored or refused
/// on its own (a second copy in the same batch is judged against the first, another
/// patient's study is refused without failing the rest), every stored one opens with its
/// own bytes and metadata copy, and all have their rows.
#[test]
fn a_batch_is_stored_each_instance_on_its_own_merits() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    rt().block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        let before = ids("P", "1.2", "1.2.3", "1.2.3.4.0");
        store
            .put(&before, Bytes::from(instance_bytes(0)), b"")
            .await
            .unwrap();
        let insts: Vec<String> = (1..=4).map(|n| format!("1.2.3.4.{n}")).collect();
        let first = "1.2.3.4.0".to_string();
        let batch = vec![
            put(&insts[0], 1, "P"),
            put(&first, 0, "P"), // stored before, same bytes
            put(&first, 9, "P"), // stored before, other bytes
            put(&insts[1], 2, "P"),
            put(&insts[1], 2, "P"), // again in the batch, same bytes
            put(&insts[2], 3, "P"),
            put(&insts[2], 8, "P"),     // again in the batch, other bytes
            put(&insts[3], 4, "OTHER"), // the study is another patient's
            put(&insts[3], 4, "OTHER"), // again: not stored, as the first was not
        ];
        let out = store.put_many(batch).await;
        let kinds: Vec<String> = out
            .iter()
            .map(|r| match r {
                Ok(o) => format!("{o:?}"),
                Err(e) => format!("{e:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Stored",
                "AlreadyStored",
                "Conflict",
                "Stored",
                "AlreadyStored",
                "Stored",
                "Conflict",
                "StudyOfAnotherPatient",
                "Batch(\"the study is stored for another patient\")"
            ]
        );
        for (i, n) in [(&insts[0], 1), (&insts[1], 2), (&insts[2], 3)] {
            let h = store.handles(&ids("P", "1.2", "1.2.3", i));
            let r = store
                .instance_row(h.study, Some(h.series), h.instance)
                .await
                .unwrap();
            assert_eq!(store.open_row(&r).await.unwrap(), instance_bytes(n));
            assert_eq!(
                store.meta(&r).await.unwrap(),
                format!("meta {n}").as_bytes()
            );
            let mut copies = store.metadata(vec![r]).await.unwrap();
            assert_eq!(
                copies.remove(0).unwrap(),
                Some(format!("copy {n}").into_bytes())
            );
        }
        let h = store.handles(&before);
        assert_eq!(store.rows(h.study, None).await.unwrap().len(), 4);
    });
    // Nothing identifying on disk, as with one at a time.
    for (p, b) in all_bytes(dir.path()) {
        for needle in PLANTED {
            assert!(!contains(&b, needle.as_bytes()), "{}", p.display());
        }
    }
}

/// Rows stored before content handles were made from the SHA-256 digest (a keyed hash of
/// the whole object) are still told apart: a second identical copy is already stored, a
/// different one a conflict. A digest given by the caller makes the same handle as the
/// store's own.
#[test]
fn copies_are_judged_against_rows_of_either_content_handle() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    rt().block_on(async {
        let store = Store::open(&layout, kek(1)).unwrap();
        let id = ids("P", "1.2", "1.2.3", "1.2.3.4.1");
        let bytes = instance_bytes(1);
        store
            .put(&id, Bytes::from(bytes.clone()), b"")
            .await
            .unwrap();
        // As an older store wrote the row.
        let old = store.inner.index_key.blind(CONTENT_V1, &[&bytes]);
        {
            let db = rusqlite::Connection::open(&layout.index).unwrap();
            let n = db
                .execute("UPDATE instance SET content = ?1", [&old.0[..]])
                .unwrap();
            assert_eq!(n, 1);
        }
        assert_eq!(
            store
                .put(&id, Bytes::from(bytes.clone()), b"")
                .await
                .unwrap(),
            PutOutcome::AlreadyStored
        );
        assert!(matches!(
            store.put(&id, Bytes::from(instance_bytes(2)), b"").await,
            Err(StoreError::Conflict)
        ));
        // The caller's digest: the same handle as the store's.
        let two = ids("P", "1.2", "1.2.3", "1.2.3.4.2");
        let digest: [u8; 32] = Sha256::digest(instance_bytes(2)).into();
        let given = Put {
            ids: two,
            bytes: Bytes::from(instance_bytes(2)),
            meta: Vec::new(),
            metadata: None,
            sha256: Some(digest),
        };
        assert_eq!(
            store.put_many(vec![given]).await.pop().unwrap().unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            store
                .put(&two, Bytes::from(instance_bytes(2)), b"")
                .await
                .unwrap(),
            PutOutcome::AlreadyStored
        );
        let h = store.handles(&two);
        let r = store.instance_row(h.study, None, h.instance).await.unwrap();
        assert_eq!(r.content, content_handle(&store.inner.index_key, &digest));
    });
}

/// The one put path serves any object store: instances kept in an `object_store` (here in
/// memory, as S3 will be) are stored, deduplicated, opened, refused when altered and
/// deleted exactly as in a local folder, and nothing is written to the layout's folder.
#[test]
fn an_object_store_fills_the_same_interface_as_the_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let memory = Arc::new(object_store::memory::InMemory::new());
    rt().block_on(async {
        let objects = Arc::new(objects::ObjectStoreObjects::new(memory.clone()));
        let store = Store::open_with_objects(&layout, kek(1), objects).unwrap();
        let batch = vec![put("1.2.3.4.1", 1, "P"), put("1.2.3.4.2", 2, "P")];
        let out = store.put_many(batch).await;
        assert!(
            out.iter().all(|r| matches!(r, Ok(PutOutcome::Stored))),
            "{out:?}"
        );
        assert_eq!(
            store
                .put(
                    &ids("P", "1.2", "1.2.3", "1.2.3.4.1"),
                    Bytes::from(instance_bytes(1)),
                    b""
                )
                .await
                .unwrap(),
            PutOutcome::AlreadyStored
        );
        let h = store.handles(&ids("P", "1.2", "1.2.3", "1.2.3.4.1"));
        let opened = store
            .open_instance(h.study, Some(h.series), h.instance, |_| true)
            .await
            .unwrap();
        assert_eq!(opened, instance_bytes(1));
        // Not allowed: as absent as a missing instance.
        assert!(matches!(
            store
                .open_instance(h.study, None, h.instance, |_| false)
                .await,
            Err(StoreError::NotFound)
        ));
        // Altered in the object store: detected, never served.
        let r = store.instance_row(h.study, None, h.instance).await.unwrap();
        let path = object_store::path::Path::from(format!("{}/{}", h.study.hex(), r.object));
        {
            use object_store::ObjectStoreExt;
            let mut b = memory
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec();
            let last = b.len() - 1;
            b[last] ^= 1;
            memory.put(&path, b.into()).await.unwrap();
        }
        assert!(matches!(
            store.open_row(&r).await,
            Err(StoreError::Tampered(_))
        ));
        store
            .delete_instance(h.study, None, h.instance)
            .await
            .unwrap();
        {
            use object_store::ObjectStoreExt;
            assert!(matches!(
                memory.get(&path).await,
                Err(object_store::Error::NotFound { .. })
            ));
        }
    });
    let local: Vec<_> = all_bytes(&layout.objects);
    assert!(local.is_empty(), "objects written to the local folder");
}
