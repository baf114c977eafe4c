//! The matching rules of PS3.4 C.2.2.2, one test each, and the catalogue.

use super::*;

fn key(tag: u32, value: &str) -> Key {
    let (level, vr) = known(tag).unwrap();
    Key::parse(tag, level, vr, value, false).unwrap()
}

fn fuzzy(tag: u32, value: &str) -> Key {
    let (level, vr) = known(tag).unwrap();
    Key::parse(tag, level, vr, value, true).unwrap()
}

fn a(vr: Vr, vals: &[&str]) -> Attr {
    Attr {
        vr,
        values: vals.iter().map(|v| Box::<str>::from(*v)).collect(),
    }
}

fn m(k: &Key, vr: Vr, vals: &[&str]) -> bool {
    k.matches(Some(&a(vr, vals)))
}

#[test]
fn single_value_matching_is_exact_and_case_sensitive() {
    let k = key(tags::ACCESSION_NUMBER, "ACC1");
    assert!(m(&k, Vr::SH, &["ACC1"]));
    assert!(!m(&k, Vr::SH, &["acc1"]));
    assert!(!m(&k, Vr::SH, &["ACC12"]));
    assert!(!k.matches(None));
    let k = key(tags::MODALITY, "CT");
    assert!(m(&k, Vr::CS, &["CT"]));
    assert!(!m(&k, Vr::CS, &["MR"]));
}

#[test]
fn single_value_matching_of_person_names_ignores_case() {
    let k = key(tags::PATIENT_NAME, "doe^jane");
    assert!(m(&k, Vr::PN, &["DOE^JANE"]));
    assert!(!m(&k, Vr::PN, &["DOE^JANET"]));
    // Any component group.
    let k = key(tags::PATIENT_NAME, "山田^太郎");
    assert!(m(&k, Vr::PN, &["Yamada^Tarou=山田^太郎=やまだ^たろう"]));
}

#[test]
fn single_value_matching_of_numbers_compares_numbers() {
    let k = key(tags::SERIES_NUMBER, "3");
    assert!(m(&k, Vr::IS, &["3"]));
    assert!(m(&k, Vr::IS, &["+03"]));
    assert!(!m(&k, Vr::IS, &["4"]));
}

#[test]
fn list_of_uid_matching() {
    let k = key(tags::STUDY_INSTANCE_UID, "1.2.3,1.2.4");
    assert!(m(&k, Vr::UI, &["1.2.3"]));
    assert!(m(&k, Vr::UI, &["1.2.4"]));
    assert!(!m(&k, Vr::UI, &["1.2.5"]));
    let k = key(tags::STUDY_INSTANCE_UID, "1.2.3\\1.2.5");
    assert!(m(&k, Vr::UI, &["1.2.5"]));
    // A UID is matched whole, never as a prefix.
    assert!(!m(
        &key(tags::STUDY_INSTANCE_UID, "1.2"),
        Vr::UI,
        &["1.2.3"]
    ));
}

#[test]
fn uids_take_no_wildcards() {
    let (l, vr) = known(tags::STUDY_INSTANCE_UID).unwrap();
    assert!(Key::parse(tags::STUDY_INSTANCE_UID, l, vr, "1.2.*", false).is_err());
}

#[test]
fn universal_matching() {
    let k = key(tags::PATIENT_NAME, "");
    assert_eq!(k.rule, Rule::Universal);
    assert!(k.matches(None));
    assert!(m(&k, Vr::PN, &["X"]));
    assert!(m(&k, Vr::PN, &[]));
}

#[test]
fn empty_value_matching() {
    let k = key(tags::ACCESSION_NUMBER, "\"\"");
    assert!(k.matches(None));
    assert!(m(&k, Vr::SH, &[]));
    assert!(!m(&k, Vr::SH, &["A"]));
}

#[test]
fn wildcard_matching() {
    let k = key(tags::PATIENT_NAME, "DOE*");
    assert!(m(&k, Vr::PN, &["DOE^JANE"]));
    assert!(m(&k, Vr::PN, &["doe"]));
    assert!(!m(&k, Vr::PN, &["JDOE"]));
    let k = key(tags::ACCESSION_NUMBER, "A?C*9");
    assert!(m(&k, Vr::SH, &["ABC9"]));
    assert!(m(&k, Vr::SH, &["AXC12349"]));
    assert!(!m(&k, Vr::SH, &["AC9"]));
    assert!(!m(&k, Vr::SH, &["abc9"]));
    let k = key(tags::STUDY_DESCRIPTION, "*");
    assert!(m(&k, Vr::LO, &[""]));
    assert!(wildcard(&['*', 'a', '*', 'b'], &['x', 'a', 'b', 'a', 'b']));
    assert!(!wildcard(&['*', 'a', '*', 'b'], &['x', 'a', 'b', 'a']));
}

#[test]
fn wildcard_matching_is_bounded_on_hostile_patterns() {
    let p: Vec<char> = "*a".repeat(500).chars().collect();
    let s: Vec<char> = "a".repeat(1000).chars().collect();
    let start = std::time::Instant::now();
    let _ = wildcard(&p, &s);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn date_range_matching() {
    let k = key(tags::STUDY_DATE, "20200101-20201231");
    assert!(m(&k, Vr::DA, &["20200101"]));
    assert!(m(&k, Vr::DA, &["20201231"]));
    assert!(m(&k, Vr::DA, &["2020.06.15"]));
    assert!(!m(&k, Vr::DA, &["20210101"]));
    assert!(!m(&k, Vr::DA, &["20191231"]));
    assert!(!k.matches(None));
    let open_start = key(tags::STUDY_DATE, "-20000101");
    assert!(m(&open_start, Vr::DA, &["19991231"]));
    assert!(!m(&open_start, Vr::DA, &["20000102"]));
    let open_end = key(tags::STUDY_DATE, "20000101-");
    assert!(m(&open_end, Vr::DA, &["20260101"]));
    assert!(!m(&open_end, Vr::DA, &["19991231"]));
    // A single date is that date.
    let one = key(tags::STUDY_DATE, "20200101");
    assert!(m(&one, Vr::DA, &["20200101"]));
    assert!(!m(&one, Vr::DA, &["20200102"]));
}

#[test]
fn time_range_matching() {
    let k = key(tags::STUDY_TIME, "1015-1030");
    assert!(m(&k, Vr::TM, &["101500"]));
    assert!(m(&k, Vr::TM, &["103059.999"]));
    assert!(m(&k, Vr::TM, &["10:20:00"]));
    assert!(!m(&k, Vr::TM, &["103100"]));
    assert!(!m(&k, Vr::TM, &["101459"]));
    // A single time names its period.
    let hour = key(tags::STUDY_TIME, "10");
    assert!(m(&hour, Vr::TM, &["105959"]));
    assert!(!m(&hour, Vr::TM, &["110000"]));
}

#[test]
fn invalid_dates_and_ranges_are_refused() {
    let (l, vr) = known(tags::STUDY_DATE).unwrap();
    for v in [
        "2020",
        "2020-01-01",
        "-",
        "x-20200101",
        "20200101-20201301x",
    ] {
        assert!(
            Key::parse(tags::STUDY_DATE, l, vr, v, false).is_err(),
            "{v}"
        );
    }
}

#[test]
fn multiple_values_match_when_any_does() {
    let k = key(tags::MODALITIES_IN_STUDY, "MR");
    assert!(m(&k, Vr::CS, &["CT", "MR"]));
    assert!(!m(&k, Vr::CS, &["CT", "US"]));
}

#[test]
fn fuzzy_matching_of_person_names() {
    let k = fuzzy(tags::PATIENT_NAME, "doe^j");
    assert!(m(&k, Vr::PN, &["DOE^JOHN"]));
    assert!(m(&k, Vr::PN, &["DOEBERT^JANE"]));
    assert!(!m(&k, Vr::PN, &["ROE^JOHN"]));
    let k = fuzzy(tags::PATIENT_NAME, "jo");
    assert!(m(&k, Vr::PN, &["DOE^JOHN"]));
    // Not fuzzy: the same key is a whole name.
    assert!(!m(&key(tags::PATIENT_NAME, "jo"), Vr::PN, &["DOE^JOHN"]));
    // Other VRs are unaffected by fuzzymatching.
    assert!(!m(&fuzzy(tags::ACCESSION_NUMBER, "acc"), Vr::SH, &["ACC1"]));
}

fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn keys_are_named_by_keyword_or_tag() {
    let a = SearchQuery::parse(&params(&[("PatientName", "DOE*")]), Target::Studies).unwrap();
    let b = SearchQuery::parse(&params(&[("00100010", "DOE*")]), Target::Studies).unwrap();
    assert_eq!(a.keys, b.keys);
}

#[test]
fn bad_parameters_are_refused_without_echoing_them() {
    for p in [
        ("NoSuchKeywordQZ", "x"),
        ("limit", "-1QZ"),
        ("offset", "xQZ"),
        ("fuzzymatching", "maybeQZ"),
        ("includefield", "NotAKeywordQZ"),
        ("StudyDate", "2020QZ"),
        ("ReferencedStudySequence.StudyInstanceUID", "1"),
    ] {
        let e = SearchQuery::parse(&params(&[p]), Target::Studies).unwrap_err();
        assert!(!e.0.contains("QZ"), "{e}");
    }
    let twice = params(&[("PatientID", "a"), ("00100020", "b")]);
    assert!(SearchQuery::parse(&twice, Target::Studies).is_err());
}

#[test]
fn keys_of_lower_levels_are_ignored_with_a_warning() {
    let q = SearchQuery::parse(&params(&[("SOPInstanceUID", "1.2")]), Target::Studies).unwrap();
    assert!(q.keys.is_empty());
    assert_eq!(q.unsupported, vec![tags::SOP_INSTANCE_UID]);
    let q = SearchQuery::parse(
        &params(&[("Manufacturer", "X")]),
        Target::Instances {
            study: None,
            series: None,
        },
    )
    .unwrap();
    assert_eq!(q.unsupported, vec![tags::MANUFACTURER]);
}

// ---------------------------------------------------------------------------------------
// The catalogue.

fn h(b: u8) -> Handle {
    Handle::from_slice(&[b; 32]).unwrap()
}

fn handles(p: u8, s: u8, se: u8, i: u8) -> Handles {
    Handles {
        patient: h(p),
        study: h(s),
        series: h(se),
        instance: h(i),
    }
}

fn inst(name: &str, study: &str, series: &str, sop: &str, modality: &str, date: &str) -> Attrs {
    let mut v: Attrs = vec![
        (tags::PATIENT_NAME, a(Vr::PN, &[name])),
        (tags::PATIENT_ID, a(Vr::LO, &[name])),
        (tags::STUDY_INSTANCE_UID, a(Vr::UI, &[study])),
        (tags::STUDY_DATE, a(Vr::DA, &[date])),
        (tags::SERIES_INSTANCE_UID, a(Vr::UI, &[series])),
        (tags::MODALITY, a(Vr::CS, &[modality])),
        (tags::SOP_INSTANCE_UID, a(Vr::UI, &[sop])),
        (
            tags::SOP_CLASS_UID,
            a(Vr::UI, &["1.2.840.10008.5.1.4.1.1.2"]),
        ),
        (tags::ROWS, a(Vr::US, &["512"])),
    ];
    v.sort_by_key(|(t, _)| *t);
    v
}

fn sample() -> Catalogue {
    let c = Catalogue::default();
    c.insert(
        &handles(1, 10, 100, 1),
        inst("DOE^JANE", "1.1", "1.1.1", "1.1.1.1", "CT", "20200101"),
    );
    c.insert(
        &handles(1, 10, 100, 2),
        inst("DOE^JANE", "1.1", "1.1.1", "1.1.1.2", "CT", "20200101"),
    );
    c.insert(
        &handles(1, 10, 101, 3),
        inst("DOE^JANE", "1.1", "1.1.2", "1.1.2.1", "MR", "20200101"),
    );
    c.insert(
        &handles(2, 20, 200, 4),
        inst("ROE^RICHARD", "2.1", "2.1.1", "2.1.1.1", "US", "20210101"),
    );
    c
}

fn run(c: &Catalogue, scope: &Scope, p: &[(&str, &str)], t: Target) -> Found {
    let q = SearchQuery::parse(&params(p), t).unwrap();
    c.search(scope, &q, t, "http://h/dicom-web")
}

fn strs(found: &Found, tag: u32) -> Vec<String> {
    found
        .results
        .iter()
        .map(|r| r[format!("{tag:08X}")]["Value"][0].to_string())
        .collect()
}

#[test]
fn studies_carry_derived_counts_and_modalities() {
    let c = sample();
    let f = run(&c, &Scope::All, &[("PatientName", "doe*")], Target::Studies);
    assert_eq!(f.results.len(), 1);
    let r = &f.results[0];
    assert_eq!(r["00080061"]["Value"], json!(["CT", "MR"]));
    assert_eq!(r["00201206"]["Value"], json!([2]));
    assert_eq!(r["00201208"]["Value"], json!([3]));
    assert_eq!(r["00081190"]["Value"][0], "http://h/dicom-web/studies/1.1");
    assert_eq!(r["00100010"]["Value"][0]["Alphabetic"], "DOE^JANE");
    // Required attributes the instance lacks come back empty.
    assert_eq!(r["00080050"], json!({"vr": "SH"}));
    let f = run(
        &c,
        &Scope::All,
        &[("ModalitiesInStudy", "MR")],
        Target::Studies,
    );
    assert_eq!(strs(&f, tags::STUDY_INSTANCE_UID), vec!["\"1.1\""]);
}

#[test]
fn scope_hides_other_patients_at_every_level() {
    let c = sample();
    let only2 = Scope::Patient(h(2));
    for t in [
        Target::Studies,
        Target::Series { study: None },
        Target::Instances {
            study: None,
            series: None,
        },
        Target::Instances {
            study: Some(h(10)),
            series: None,
        },
    ] {
        let f = run(&c, &only2, &[], t);
        assert!(f
            .results
            .iter()
            .all(|r| r["0020000D"]["Value"][0] == "2.1" || r.get("0020000D").is_none()));
    }
    assert!(run(&c, &only2, &[], Target::Series { study: Some(h(10)) })
        .results
        .is_empty());
    assert_eq!(run(&c, &only2, &[], Target::Studies).results.len(), 1);
}

#[test]
fn nested_routes_list_what_is_under_them() {
    let c = sample();
    let f = run(&c, &Scope::All, &[], Target::Series { study: Some(h(10)) });
    assert_eq!(f.results.len(), 2);
    assert_eq!(f.results[0]["00201209"]["Value"], json!([2]));
    // A study's series do not repeat the study's attributes by default.
    assert!(f.results[0].get("00100010").is_none());
    let f = run(&c, &Scope::All, &[], Target::Series { study: None });
    assert_eq!(f.results.len(), 3);
    assert!(f.results[0].get("00100010").is_some());
    let f = run(
        &c,
        &Scope::All,
        &[],
        Target::Instances {
            study: Some(h(10)),
            series: Some(h(100)),
        },
    );
    assert_eq!(f.results.len(), 2);
    assert_eq!(f.results[0]["00280010"]["Value"], json!([512]));
    assert!(f.results[0].get("00080060").is_none());
    let f = run(
        &c,
        &Scope::All,
        &[("Modality", "MR")],
        Target::Instances {
            study: None,
            series: None,
        },
    );
    assert_eq!(strs(&f, tags::SOP_INSTANCE_UID), vec!["\"1.1.2.1\""]);
    assert_eq!(f.results[0]["00080060"]["Value"][0], "MR");
}

#[test]
fn limit_and_offset_page_through_results() {
    let c = sample();
    let t = Target::Instances {
        study: None,
        series: None,
    };
    let all = strs(&run(&c, &Scope::All, &[], t), tags::SOP_INSTANCE_UID);
    assert_eq!(all.len(), 4);
    let p1 = run(&c, &Scope::All, &[("limit", "3")], t);
    assert!(p1.more);
    let p2 = run(&c, &Scope::All, &[("limit", "3"), ("offset", "3")], t);
    assert!(!p2.more);
    let mut paged = strs(&p1, tags::SOP_INSTANCE_UID);
    paged.extend(strs(&p2, tags::SOP_INSTANCE_UID));
    assert_eq!(paged, all);
    assert!(run(&c, &Scope::All, &[("offset", "9")], t)
        .results
        .is_empty());
}

#[test]
fn includefield_adds_attributes_and_all_adds_every_one() {
    let c = sample();
    let f = run(&c, &Scope::All, &[], Target::Studies);
    assert!(f.results[0].get("00080060").is_none());
    let f = run(
        &c,
        &Scope::All,
        &[("includefield", "00200010,StudyDescription")],
        Target::Studies,
    );
    assert_eq!(f.results[0]["00081030"], json!({"vr": "LO"}));
    let f = run(
        &c,
        &Scope::All,
        &[("includefield", "all")],
        Target::Instances {
            study: None,
            series: None,
        },
    );
    assert!(f.results[0].get("00100010").is_some());
    assert!(f.results[0].get("00080060").is_some());
    assert!(f.results[0].get("00280010").is_some());
    // The transfer syntax is never a search result.
    assert!(f.results[0].get("00020010").is_none());
}

#[test]
fn removal_prunes_empty_series_and_studies() {
    let c = sample();
    assert_eq!(c.instances(), 4);
    c.remove(&h(10), Some(&h(101)), Some(&h(3)));
    assert_eq!(
        run(&c, &Scope::All, &[], Target::Series { study: Some(h(10)) })
            .results
            .len(),
        1
    );
    c.remove(&h(10), Some(&h(100)), None);
    assert_eq!(run(&c, &Scope::All, &[], Target::Studies).results.len(), 1);
    c.remove(&h(20), None, None);
    assert_eq!(c.instances(), 0);
    // Removing what is not there is harmless.
    c.remove(&h(99), None, None);
}

#[test]
fn a_search_over_100000_instances_is_fast() {
    let c = Catalogue::default();
    for s in 0..1000u32 {
        let study = format!("1.2.{s}");
        for i in 0..100u32 {
            let sop = format!("{study}.1.{i}");
            let mut hs = [0u8; 32];
            hs[..4].copy_from_slice(&s.to_be_bytes());
            let mut hi = hs;
            hi[4..8].copy_from_slice(&i.to_be_bytes());
            let name = format!("PAT{s}^X");
            c.insert(
                &Handles {
                    patient: Handle::from_slice(&hs).unwrap(),
                    study: Handle::from_slice(&hs).unwrap(),
                    series: Handle::from_slice(&hs).unwrap(),
                    instance: Handle::from_slice(&hi).unwrap(),
                },
                inst(&name, &study, &format!("{study}.1"), &sop, "CT", "20200101"),
            );
        }
    }
    assert_eq!(c.instances(), 100_000);
    let t = Target::Instances {
        study: None,
        series: None,
    };
    let q =
        SearchQuery::parse(&params(&[("PatientName", "PAT999*"), ("limit", "1000")]), t).unwrap();
    let start = std::time::Instant::now();
    let f = c.search(&Scope::All, &q, t, "http://h");
    let took = start.elapsed();
    assert_eq!(f.results.len(), 100);
    let q = SearchQuery::parse(&params(&[("SOPInstanceUID", "1.2.500.1.7")]), t).unwrap();
    let start2 = std::time::Instant::now();
    let g = c.search(&Scope::All, &q, t, "http://h");
    let took2 = start2.elapsed();
    assert_eq!(g.results.len(), 1);
    eprintln!("100,000 instances: name wildcard {took:?}, one SOP Instance UID {took2:?}");
    // Debug builds are several times slower than release; the bound is for debug.
    assert!(
        took.as_millis() < 500 && took2.as_millis() < 500,
        "{took:?} {took2:?}"
    );
}

/// A deletion that runs between the store of an instance and its entry in the catalogue
/// leaves no entry for an instance the store no longer has; without a deletion the entry
/// stays.
#[test]
fn an_instance_deleted_while_it_was_being_stored_is_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let layout = radveil_store::Layout::under(dir.path());
        let store =
            Store::open(&layout, radveil_store::Key::from_slice(&[3; 32]).unwrap()).unwrap();
        let c = Catalogue::default();
        let ids = |sop: &'static str| radveil_store::InstanceIds {
            patient_id: "P",
            issuer: "",
            study: "1.1",
            series: "1.1.1",
            instance: sop,
        };
        // Stored, then deleted before its catalogue entry is made.
        let before = c.mark();
        store
            .put(&ids("1.1.1.1"), bytes::Bytes::from_static(b"one"), b"{}")
            .await
            .unwrap();
        let h = store.handles(&ids("1.1.1.1"));
        store.delete_study(h.study).await.unwrap();
        c.remove(&h.study, None, None);
        c.insert_stored(
            &store,
            &h,
            inst("P", "1.1", "1.1.1", "1.1.1.1", "CT", "20200101"),
            before,
        )
        .await;
        assert_eq!(c.instances(), 0);
        // Stored with no deletion meanwhile: listed.
        let before = c.mark();
        store
            .put(&ids("1.1.1.2"), bytes::Bytes::from_static(b"two"), b"{}")
            .await
            .unwrap();
        let h = store.handles(&ids("1.1.1.2"));
        c.insert_stored(
            &store,
            &h,
            inst("P", "1.1", "1.1.1", "1.1.1.2", "CT", "20200101"),
            before,
        )
        .await;
        assert_eq!(c.instances(), 1);
        // A deletion elsewhere meanwhile: checked, and still listed.
        let before = c.mark();
        c.remove(&h.study, Some(&h.series), Some(&h.study));
        let h3 = store.handles(&ids("1.1.1.3"));
        store
            .put(&ids("1.1.1.3"), bytes::Bytes::from_static(b"three"), b"{}")
            .await
            .unwrap();
        c.insert_stored(
            &store,
            &h3,
            inst("P", "1.1", "1.1.1", "1.1.1.3", "CT", "20200101"),
            before,
        )
        .await;
        assert_eq!(c.instances(), 2);
    });
}

#[test]
fn searches_answer_dicom_json_only() {
    let with = |v: &[&str]| {
        let mut h = HeaderMap::new();
        for x in v {
            h.append(header::ACCEPT, HeaderValue::from_str(x).unwrap());
        }
        accepts_json(&h)
    };
    assert!(with(&[]));
    assert!(with(&["application/dicom+json, application/json"]));
    assert!(with(&["*/*"]));
    assert!(with(&["text/html", "application/json;q=0.5"]));
    assert!(!with(&[
        "multipart/related; type=\"application/dicom+xml\""
    ]));
    assert!(!with(&["application/dicom+json;q=0"]));
    assert!(!with(&["text/html"]));
}

#[test]
fn the_transfer_syntax_is_not_kept_in_memory() {
    let c = Catalogue::default();
    let mut attrs = inst("P", "1.1", "1.1.1", "1.1.1.1", "CT", "20200101");
    attrs.push((
        tags::TRANSFER_SYNTAX_UID,
        a(Vr::UI, &["1.2.840.10008.1.2.1"]),
    ));
    attrs.sort_by_key(|(t, _)| *t);
    c.insert(&handles(1, 10, 100, 1), attrs);
    let tree = c.read();
    let inst = &tree[&h(10)].series[&h(100)].instances[&h(1)];
    assert!(get(&inst.attrs, tags::TRANSFER_SYNTAX_UID).is_none());
    assert!(get(&inst.attrs, tags::SOP_INSTANCE_UID).is_some());
}
