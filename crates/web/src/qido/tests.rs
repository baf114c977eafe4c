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
    let attr = a(vr, vals);
    let packed = Packed::pack(&[(1, attr.clone())]);
    let owned = k.matches(Some(&Field::Attr(Cow::Owned(attr))));
    // Matching a packed attribute answers the same.
    assert_eq!(k.matches(packed.get(1).map(Field::Packed).as_ref()), owned);
    owned
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
// The catalogue, over a real store (instance-level searches read its index).

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

fn text(attrs: &Attrs, tag: u32) -> String {
    get(attrs, tag)
        .and_then(|a| a.values.first())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// A store in a temporary folder (in memory where /dev/shm is), a catalogue, a runtime.
struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    c: Catalogue,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let layout = radveil_store::Layout::under(dir.path());
        let store =
            Store::open(&layout, radveil_store::Key::from_slice(&[3; 32]).unwrap()).unwrap();
        Fixture {
            rt,
            store,
            c: Catalogue::default(),
            _dir: dir,
        }
    }

    fn ids(attrs: &Attrs) -> [String; 4] {
        [
            text(attrs, tags::PATIENT_ID),
            text(attrs, tags::STUDY_INSTANCE_UID),
            text(attrs, tags::SERIES_INSTANCE_UID),
            text(attrs, tags::SOP_INSTANCE_UID),
        ]
    }

    fn handles(&self, attrs: &Attrs) -> Handles {
        let [p, st, se, i] = Fixture::ids(attrs);
        self.store.handles(&radveil_store::InstanceIds {
            patient_id: &p,
            issuer: "",
            study: &st,
            series: &se,
            instance: &i,
        })
    }

    /// Stores instances as STOW-RS does (their attributes sealed in the index), without
    /// cataloguing them.
    fn store_only(&self, instances: &[Attrs]) {
        for attrs in instances {
            let [p, st, se, i] = Fixture::ids(attrs);
            let ids = radveil_store::InstanceIds {
                patient_id: &p,
                issuer: "",
                study: &st,
                series: &se,
                instance: &i,
            };
            let meta = dicom_json::attrs_to_json(attrs).to_string().into_bytes();
            let bytes = bytes::Bytes::from(i.clone().into_bytes());
            let r = self.rt.block_on(self.store.put(&ids, bytes, &meta));
            assert_eq!(r.unwrap(), radveil_store::PutOutcome::Stored);
        }
    }

    /// Stores and catalogues instances.
    fn add(&self, instances: &[Attrs]) {
        self.store_only(instances);
        for attrs in instances {
            self.c.insert(&self.handles(attrs), attrs.clone());
        }
    }

    fn run(&self, scope: &Scope, p: &[(&str, &str)], t: Target) -> Found {
        let q = SearchQuery::parse(&params(p), t).unwrap();
        self.rt
            .block_on(
                self.c
                    .search(&self.store, scope, &q, t, "http://h/dicom-web"),
            )
            .unwrap()
    }

    fn study(&self, uid: &str) -> Handle {
        self.store.uid(radveil_store::Level::Study, uid)
    }

    fn series(&self, uid: &str) -> Handle {
        self.store.uid(radveil_store::Level::Series, uid)
    }

    fn patient(&self, id: &str) -> Handle {
        self.store.patient(id, "")
    }
}

const ALL_INSTANCES: Target = Target::Instances {
    study: None,
    series: None,
};

fn sample() -> Fixture {
    let f = Fixture::new();
    f.add(&[
        inst("DOE^JANE", "1.1", "1.1.1", "1.1.1.1", "CT", "20200101"),
        inst("DOE^JANE", "1.1", "1.1.1", "1.1.1.2", "CT", "20200101"),
        inst("DOE^JANE", "1.1", "1.1.2", "1.1.2.1", "MR", "20200101"),
        inst("ROE^RICHARD", "2.1", "2.1.1", "2.1.1.1", "US", "20210101"),
    ]);
    f
}

fn strs(found: &Found, tag: u32) -> Vec<String> {
    found
        .results
        .iter()
        .map(|r| r[format!("{tag:08X}")]["Value"][0].to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn studies_carry_derived_counts_and_modalities() {
    let f = sample();
    let found = f.run(&Scope::All, &[("PatientName", "doe*")], Target::Studies);
    assert_eq!(found.results.len(), 1);
    let r = &found.results[0];
    assert_eq!(r["00080061"]["Value"], json!(["CT", "MR"]));
    assert_eq!(r["00201206"]["Value"], json!([2]));
    assert_eq!(r["00201208"]["Value"], json!([3]));
    assert_eq!(r["00081190"]["Value"][0], "http://h/dicom-web/studies/1.1");
    assert_eq!(r["00100010"]["Value"][0]["Alphabetic"], "DOE^JANE");
    // Required attributes the instance lacks come back empty.
    assert_eq!(r["00080050"], json!({"vr": "SH"}));
    let found = f.run(&Scope::All, &[("ModalitiesInStudy", "MR")], Target::Studies);
    assert_eq!(strs(&found, tags::STUDY_INSTANCE_UID), vec!["\"1.1\""]);
}

#[test]
fn scope_hides_other_patients_at_every_level() {
    let f = sample();
    let only2 = Scope::Patient(f.patient("ROE^RICHARD"));
    for t in [
        Target::Studies,
        Target::Series { study: None },
        ALL_INSTANCES,
        Target::Instances {
            study: Some(f.study("1.1")),
            series: None,
        },
    ] {
        let found = f.run(&only2, &[], t);
        assert!(found
            .results
            .iter()
            .all(|r| r["0020000D"]["Value"][0] == "2.1" || r.get("0020000D").is_none()));
    }
    assert!(f
        .run(
            &only2,
            &[],
            Target::Series {
                study: Some(f.study("1.1"))
            }
        )
        .results
        .is_empty());
    assert_eq!(f.run(&only2, &[], Target::Studies).results.len(), 1);
    // Named by their UIDs, another patient's instances stay hidden too.
    let found = f.run(
        &only2,
        &[("SOPInstanceUID", "1.1.1.1,2.1.1.1")],
        ALL_INSTANCES,
    );
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), vec!["\"2.1.1.1\""]);
}

#[test]
fn nested_routes_list_what_is_under_them() {
    let f = sample();
    let found = f.run(
        &Scope::All,
        &[],
        Target::Series {
            study: Some(f.study("1.1")),
        },
    );
    assert_eq!(found.results.len(), 2);
    let counts: BTreeMap<String, Value> = found
        .results
        .iter()
        .map(|r| {
            (
                r["0020000E"]["Value"][0].as_str().unwrap().to_string(),
                r["00201209"]["Value"].clone(),
            )
        })
        .collect();
    assert_eq!(counts["1.1.1"], json!([2]));
    assert_eq!(counts["1.1.2"], json!([1]));
    // A study's series do not repeat the study's attributes by default.
    assert!(found.results[0].get("00100010").is_none());
    let found = f.run(&Scope::All, &[], Target::Series { study: None });
    assert_eq!(found.results.len(), 3);
    assert!(found.results[0].get("00100010").is_some());
    let found = f.run(
        &Scope::All,
        &[],
        Target::Instances {
            study: Some(f.study("1.1")),
            series: Some(f.series("1.1.1")),
        },
    );
    assert_eq!(found.results.len(), 2);
    assert_eq!(found.results[0]["00280010"]["Value"], json!([512]));
    assert!(found.results[0].get("00080060").is_none());
    assert_eq!(
        found.results[0]["00081190"]["Value"][0]
            .as_str()
            .unwrap()
            .rsplit_once("/instances/")
            .unwrap()
            .0,
        "http://h/dicom-web/studies/1.1/series/1.1.1"
    );
    let found = f.run(&Scope::All, &[("Modality", "MR")], ALL_INSTANCES);
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), vec!["\"1.1.2.1\""]);
    assert_eq!(found.results[0]["00080060"]["Value"][0], "MR");
    // A study's instances, across its series.
    let found = f.run(
        &Scope::All,
        &[],
        Target::Instances {
            study: Some(f.study("1.1")),
            series: None,
        },
    );
    assert_eq!(
        sorted(strs(&found, tags::SOP_INSTANCE_UID)),
        vec!["\"1.1.1.1\"", "\"1.1.1.2\"", "\"1.1.2.1\""]
    );
    // A series of another study than the path's lists nothing.
    assert!(f
        .run(
            &Scope::All,
            &[],
            Target::Instances {
                study: Some(f.study("2.1")),
                series: Some(f.series("1.1.1")),
            },
        )
        .results
        .is_empty());
}

#[test]
fn instances_are_found_by_their_uids_and_by_their_own_attributes() {
    let f = sample();
    let found = f.run(
        &Scope::All,
        &[("SOPInstanceUID", "2.1.1.1\\1.1.1.2,9.9.9")],
        ALL_INSTANCES,
    );
    // In the walk's order, whatever the order of the list.
    let walk = strs(
        &f.run(&Scope::All, &[], ALL_INSTANCES),
        tags::SOP_INSTANCE_UID,
    );
    let expected: Vec<String> = walk
        .into_iter()
        .filter(|s| s == "\"2.1.1.1\"" || s == "\"1.1.1.2\"")
        .collect();
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), expected);
    // With keys of every level.
    let found = f.run(
        &Scope::All,
        &[
            ("SOPInstanceUID", "2.1.1.1,1.1.1.2"),
            ("PatientName", "ROE*"),
            ("Modality", "US"),
            ("Rows", "512"),
        ],
        ALL_INSTANCES,
    );
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), vec!["\"2.1.1.1\""]);
    let found = f.run(
        &Scope::All,
        &[("SOPInstanceUID", "1.1.1.2"), ("Rows", "256")],
        ALL_INSTANCES,
    );
    assert!(found.results.is_empty());
    // Under a path that does not hold it: nothing.
    let found = f.run(
        &Scope::All,
        &[("SOPInstanceUID", "1.1.1.2")],
        Target::Instances {
            study: Some(f.study("2.1")),
            series: None,
        },
    );
    assert!(found.results.is_empty());
    // A list of Study or Series Instance UIDs.
    let found = f.run(
        &Scope::All,
        &[("StudyInstanceUID", "2.1,7.7")],
        Target::Studies,
    );
    assert_eq!(strs(&found, tags::STUDY_INSTANCE_UID), vec!["\"2.1\""]);
    let found = f.run(
        &Scope::All,
        &[("SeriesInstanceUID", "1.1.2")],
        ALL_INSTANCES,
    );
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), vec!["\"1.1.2.1\""]);
    // An instance-level key on the instance's own attributes.
    let found = f.run(&Scope::All, &[("Rows", "512")], ALL_INSTANCES);
    assert_eq!(found.results.len(), 4);
    let found = f.run(&Scope::All, &[("Rows", "1024")], ALL_INSTANCES);
    assert!(found.results.is_empty());
}

#[test]
fn limit_and_offset_page_through_results() {
    let f = sample();
    let t = ALL_INSTANCES;
    let all = strs(&f.run(&Scope::All, &[], t), tags::SOP_INSTANCE_UID);
    assert_eq!(all.len(), 4);
    let p1 = f.run(&Scope::All, &[("limit", "3")], t);
    assert!(p1.more);
    let p2 = f.run(&Scope::All, &[("limit", "3"), ("offset", "3")], t);
    assert!(!p2.more);
    let mut paged = strs(&p1, tags::SOP_INSTANCE_UID);
    paged.extend(strs(&p2, tags::SOP_INSTANCE_UID));
    assert_eq!(paged, all);
    assert!(f.run(&Scope::All, &[("offset", "9")], t).results.is_empty());
    // Each page of one, with and without an instance-level key.
    for key in [None, Some(("Rows", "512"))] {
        let mut one_by_one = Vec::new();
        for i in 0..5 {
            let off = i.to_string();
            let mut p = vec![("limit", "1"), ("offset", off.as_str())];
            p.extend(key);
            let page = f.run(&Scope::All, &p, t);
            assert_eq!(page.more, i < 3, "page {i}");
            one_by_one.extend(strs(&page, tags::SOP_INSTANCE_UID));
        }
        assert_eq!(one_by_one, all);
    }
}

#[test]
fn includefield_adds_attributes_and_all_adds_every_one() {
    let f = sample();
    let found = f.run(&Scope::All, &[], Target::Studies);
    assert!(found.results[0].get("00080060").is_none());
    let found = f.run(
        &Scope::All,
        &[("includefield", "00200010,StudyDescription")],
        Target::Studies,
    );
    assert_eq!(found.results[0]["00081030"], json!({"vr": "LO"}));
    let found = f.run(&Scope::All, &[("includefield", "all")], ALL_INSTANCES);
    assert!(found.results[0].get("00100010").is_some());
    assert!(found.results[0].get("00080060").is_some());
    assert!(found.results[0].get("00280010").is_some());
    assert!(found.results[0].get("00201208").is_some());
    // The transfer syntax is never a search result.
    assert!(found.results[0].get("00020010").is_none());
}

#[test]
fn removal_prunes_empty_series_and_studies() {
    let f = sample();
    let c = &f.c;
    assert_eq!(c.instances(), 4);
    c.remove(
        &f.study("1.1"),
        Some(&f.series("1.1.2")),
        Some(
            &f.handles(&inst("DOE^JANE", "1.1", "1.1.2", "1.1.2.1", "", ""))
                .instance,
        ),
    );
    assert_eq!(
        f.run(
            &Scope::All,
            &[],
            Target::Series {
                study: Some(f.study("1.1"))
            }
        )
        .results
        .len(),
        1
    );
    c.remove(&f.study("1.1"), Some(&f.series("1.1.1")), None);
    assert_eq!(f.run(&Scope::All, &[], Target::Studies).results.len(), 1);
    c.remove(&f.study("2.1"), None, None);
    assert_eq!(c.instances(), 0);
    // Removing what is not there is harmless.
    c.remove(&f.study("9.9"), None, None);
}

/// Instance-level searches list what the catalogue lists and the index still holds: a
/// deleted instance is gone from both; an instance whose row is gone but whose deletion
/// the catalogue has not heard of yet, or one stored but not yet catalogued, is not listed.
#[test]
fn instance_searches_after_deletions_list_only_what_is_there() {
    let f = Fixture::new();
    let three: Vec<Attrs> = (1..=3)
        .map(|i| inst("P", "1.1", "1.1.1", &format!("1.1.1.{i}"), "CT", "20200101"))
        .collect();
    f.add(&three);
    let in_series = Target::Instances {
        study: Some(f.study("1.1")),
        series: Some(f.series("1.1.1")),
    };
    let sops = |t| sorted(strs(&f.run(&Scope::All, &[], t), tags::SOP_INSTANCE_UID));
    assert_eq!(sops(in_series).len(), 3);
    // Deleted as DELETE does: the store, then the catalogue.
    let h2 = f.handles(&three[1]);
    f.rt.block_on(
        f.store
            .delete_instance(h2.study, Some(h2.series), h2.instance),
    )
    .unwrap();
    f.c.remove(&h2.study, Some(&h2.series), Some(&h2.instance));
    for t in [in_series, ALL_INSTANCES] {
        assert_eq!(sops(t), vec!["\"1.1.1.1\"", "\"1.1.1.3\""]);
    }
    let by_uid = f.run(&Scope::All, &[("SOPInstanceUID", "1.1.1.2")], ALL_INSTANCES);
    assert!(by_uid.results.is_empty());
    // Gone from the store, not yet from the catalogue (a DELETE in flight).
    let h3 = f.handles(&three[2]);
    f.rt.block_on(
        f.store
            .delete_instance(h3.study, Some(h3.series), h3.instance),
    )
    .unwrap();
    assert_eq!(f.c.instances(), 2);
    assert_eq!(sops(in_series), vec!["\"1.1.1.1\""]);
    let by_uid = f.run(&Scope::All, &[("SOPInstanceUID", "1.1.1.3")], ALL_INSTANCES);
    assert!(by_uid.results.is_empty());
    f.c.remove(&h3.study, Some(&h3.series), Some(&h3.instance));
    // Stored, not yet catalogued (a STOW-RS in flight): not listed until it is.
    let four = inst("P", "1.1", "1.1.1", "1.1.1.4", "CT", "20200101");
    f.store_only(std::slice::from_ref(&four));
    assert_eq!(sops(in_series), vec!["\"1.1.1.1\""]);
    let by_uid = f.run(&Scope::All, &[("SOPInstanceUID", "1.1.1.4")], ALL_INSTANCES);
    assert!(by_uid.results.is_empty());
    f.c.insert(&f.handles(&four), four.clone());
    assert_eq!(sops(in_series), vec!["\"1.1.1.1\"", "\"1.1.1.4\""]);
    // The whole study deleted: nothing at any level.
    f.rt.block_on(f.store.delete_study(f.study("1.1"))).unwrap();
    f.c.remove(&f.study("1.1"), None, None);
    for t in [
        Target::Studies,
        Target::Series { study: None },
        ALL_INSTANCES,
        in_series,
    ] {
        assert!(f.run(&Scope::All, &[], t).results.is_empty());
    }
}

/// A deletion that runs between the store of an instance and its entry in the catalogue
/// leaves no entry for an instance the store no longer has; without a deletion the entry
/// stays. Instance-level searches agree.
#[test]
fn an_instance_deleted_while_it_was_being_stored_is_not_listed() {
    let f = Fixture::new();
    let c = &f.c;
    let one = inst("P", "1.1", "1.1.1", "1.1.1.1", "CT", "20200101");
    let series = Target::Instances {
        study: Some(f.study("1.1")),
        series: Some(f.series("1.1.1")),
    };
    // Stored, then deleted before its catalogue entry is made.
    let before = c.mark();
    f.store_only(std::slice::from_ref(&one));
    let h = f.handles(&one);
    f.rt.block_on(f.store.delete_study(h.study)).unwrap();
    c.remove(&h.study, None, None);
    f.rt.block_on(c.insert_stored(&f.store, &h, one.clone(), before));
    assert_eq!(c.instances(), 0);
    for t in [Target::Studies, ALL_INSTANCES, series] {
        assert!(f.run(&Scope::All, &[], t).results.is_empty());
    }
    // Stored with no deletion meanwhile: listed.
    let two = inst("P", "1.1", "1.1.1", "1.1.1.2", "CT", "20200101");
    let before = c.mark();
    f.store_only(std::slice::from_ref(&two));
    let h = f.handles(&two);
    f.rt.block_on(c.insert_stored(&f.store, &h, two.clone(), before));
    assert_eq!(c.instances(), 1);
    // A deletion elsewhere meanwhile: checked, and still listed.
    let three = inst("P", "1.1", "1.1.1", "1.1.1.3", "CT", "20200101");
    let before = c.mark();
    c.remove(&h.study, Some(&h.series), Some(&h.study));
    f.store_only(std::slice::from_ref(&three));
    let h3 = f.handles(&three);
    f.rt.block_on(c.insert_stored(&f.store, &h3, three.clone(), before));
    assert_eq!(c.instances(), 2);
    assert_eq!(
        strs(&f.run(&Scope::All, &[], series), tags::SOP_INSTANCE_UID).len(),
        2
    );
    let found = f.run(&Scope::All, &[("SOPInstanceUID", "1.1.1.3")], ALL_INSTANCES);
    assert_eq!(strs(&found, tags::SOP_INSTANCE_UID), vec!["\"1.1.1.3\""]);
}

/// An instance-level search reads the rows of the series it needs, not the store: a page
/// stops the reading, whole series inside the offset are skipped unread, and instances
/// named by UID are looked up by handle.
#[test]
fn instance_searches_read_only_what_the_page_needs() {
    let f = Fixture::new();
    let mut all = Vec::new();
    // Series of 1 to 10 instances (165 in all), so that pages end inside series and
    // offsets pass over several.
    for s in 0..30 {
        for i in 0..1 + (s * 7 % 10) {
            let study = format!("1.{s}");
            all.push(inst(
                &format!("PAT{s}^X"),
                &study,
                &format!("{study}.1"),
                &format!("{study}.1.{i}"),
                "CT",
                "20200101",
            ));
        }
    }
    f.add(&all);
    let read = |p: &[(&str, &str)]| {
        let before = f.c.opened();
        let found = f.run(&Scope::All, p, ALL_INSTANCES);
        (found, f.c.opened() - before)
    };
    let (found, n) = read(&[("limit", "5")]);
    assert_eq!(found.results.len(), 5);
    assert!(found.more);
    assert!(n <= 6, "{n} rows read for a page of 5");
    let (found, n) = read(&[("limit", "5"), ("offset", "100")]);
    assert_eq!(found.results.len(), 5);
    assert!(n <= 15, "{n} rows read for a page of 5 after 100");
    let (found, n) = read(&[("limit", "2"), ("InstanceNumber", "")]);
    assert_eq!(found.results.len(), 2);
    assert!(n <= 3, "{n} rows read for 2 results");
    let (found, n) = read(&[("SOPInstanceUID", "1.17.1.4,1.3.1.1")]);
    assert_eq!(found.results.len(), 2);
    assert_eq!(n, 2);
    let (found, n) = read(&[("PatientName", "PAT7^*")]);
    assert_eq!(found.results.len(), 10);
    assert_eq!(n, 10, "only the study the name narrows to is read");
    // The whole walk, paged, is the walk unpaged.
    let (whole, n) = read(&[]);
    assert_eq!(whole.results.len(), 165);
    assert_eq!(n, 165);
    let mut paged = Vec::new();
    for off in (0..165).step_by(7) {
        let off = off.to_string();
        paged.extend(strs(
            &read(&[("limit", "7"), ("offset", &off)]).0,
            tags::SOP_INSTANCE_UID,
        ));
    }
    assert_eq!(paged, strs(&whole, tags::SOP_INSTANCE_UID));
}

#[test]
fn a_search_over_100000_instances_is_fast() {
    // The catalogue holds 100,000 instances; the index only the rows the searches reach.
    let f = Fixture::new();
    let mut reached = Vec::new();
    for s in 0..1000u32 {
        let study = format!("1.2.{s}");
        for i in 0..100u32 {
            let attrs = inst(
                &format!("PAT{s}^X"),
                &study,
                &format!("{study}.1"),
                &format!("{study}.1.{i}"),
                "CT",
                "20200101",
            );
            f.c.insert(&f.handles(&attrs), attrs.clone());
            if s == 999 || (s == 500 && i == 7) {
                reached.push(attrs);
            }
        }
    }
    f.store_only(&reached);
    assert_eq!(f.c.instances(), 100_000);
    let timed = |p: &[(&str, &str)], t: Target| {
        let start = std::time::Instant::now();
        let found = f.run(&Scope::All, p, t);
        (found, start.elapsed())
    };
    let (found, took) = timed(
        &[("PatientName", "PAT999*"), ("limit", "1000")],
        ALL_INSTANCES,
    );
    assert_eq!(found.results.len(), 100);
    let (one, took2) = timed(&[("SOPInstanceUID", "1.2.500.1.7")], ALL_INSTANCES);
    assert_eq!(one.results.len(), 1);
    let (studies, took3) = timed(&[("PatientName", "PAT9*")], Target::Studies);
    assert_eq!(studies.results.len(), 111);
    eprintln!(
        "100,000 instances: name wildcard {took:?}, one SOP Instance UID {took2:?}, studies {took3:?}"
    );
    // Debug builds are several times slower than release; the bound is for debug.
    assert!(
        took.as_millis() < 500 && took2.as_millis() < 500 && took3.as_millis() < 500,
        "{took:?} {took2:?} {took3:?}"
    );
}

/// What the catalogue keeps per instance: its handle and geometry (64 bytes), in a vector
/// with little slack; the instance's attributes (the transfer syntax among them) are not
/// kept, and a study's and a series' are packed.
#[test]
fn an_instance_costs_a_few_dozen_bytes_in_memory() {
    assert_eq!(std::mem::size_of::<Member>(), 64);
    let c = Catalogue::default();
    let h = |b: u8, n: u32| {
        let mut x = [b; 32];
        x[..4].copy_from_slice(&n.to_be_bytes());
        Handle::from_slice(&x).unwrap()
    };
    for i in 0..1000u32 {
        let mut attrs = inst("P", "1.1", "1.1.1", &format!("1.1.1.{i}"), "CT", "20200101");
        attrs.push((
            tags::TRANSFER_SYNTAX_UID,
            a(Vr::UI, &["1.2.840.10008.1.2.1"]),
        ));
        attrs.sort_by_key(|(t, _)| *t);
        c.insert(
            &Handles {
                patient: h(1, 0),
                study: h(2, 0),
                series: h(3, 0),
                instance: h(4, i.wrapping_mul(2_654_435_761)),
            },
            attrs,
        );
    }
    let tree = c.read();
    let st = &tree[&h(2, 0)];
    let se = &st.series[&h(3, 0)];
    assert_eq!(se.members.len(), 1000);
    assert!(
        se.members.capacity() <= 1000 * 9 / 8 + 1,
        "{}",
        se.members.capacity()
    );
    assert!(se.members.windows(2).all(|w| w[0].instance < w[1].instance));
    assert_eq!(se.shapes.len(), 1);
    for p in [&st.attrs, &se.attrs] {
        assert!(p.get(tags::TRANSFER_SYNTAX_UID).is_none());
        assert!(p.get(tags::SOP_INSTANCE_UID).is_none());
        assert!(p.get(tags::ROWS).is_none());
    }
    assert_eq!(st.series.0.capacity(), 1, "a study of one series holds one");
    assert!(st.attrs.len() < 100, "{}", st.attrs.len());
    assert!(se.attrs.len() < 60, "{}", se.attrs.len());
}

/// The series check of integrity at ingest sees, from the catalogue, what it saw when
/// every instance's attributes were kept: the same advisories as the check over their
/// geometry read from their attributes.
#[test]
fn the_series_check_sees_each_instances_geometry() {
    use radveil_pipeline::ingest::series_advisories;
    let ds = |v: &[f64]| Attr {
        vr: Vr::DS,
        values: v.iter().map(|f| f.to_string().into()).collect(),
    };
    let with_geometry = |i: u32, z: f64, spacing: f64| {
        let mut attrs = inst("P", "1.1", "1.1.1", &format!("1.1.1.{i}"), "CT", "20200101");
        attrs.push((tags::PIXEL_SPACING, ds(&[spacing, spacing])));
        attrs.push((
            tags::IMAGE_ORIENTATION_PATIENT,
            ds(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        ));
        attrs.push((tags::IMAGE_POSITION_PATIENT, ds(&[-125.0, -130.5, z])));
        attrs.sort_by_key(|(t, _)| *t);
        attrs
    };
    let c = Catalogue::default();
    let stored: Vec<Attrs> = vec![
        with_geometry(1, 10.0, 0.5),
        with_geometry(2, 12.5, 0.5),
        with_geometry(3, 15.0, 0.7),
        // No geometry at all.
        inst("P", "1.1", "1.1.1", "1.1.1.4", "CT", "20200101"),
    ];
    let hs: Vec<Handles> = stored
        .iter()
        .enumerate()
        .map(|(i, _)| Handles {
            patient: Handle::from_slice(&[1; 32]).unwrap(),
            study: Handle::from_slice(&[2; 32]).unwrap(),
            series: Handle::from_slice(&[3; 32]).unwrap(),
            instance: Handle::from_slice(&[10 + i as u8; 32]).unwrap(),
        })
        .collect();
    for (h, a) in hs.iter().zip(&stored) {
        c.insert(h, a.clone());
    }
    let others: Vec<Geometry> = stored.iter().map(crate::ingest::geometry_of).collect();
    let mut seen = 0;
    for (z, spacing) in [
        (12.5, 0.5),
        (12.5, 0.7),
        (20.0, 0.5),
        (20.0, 0.7),
        (15.0, 0.7),
    ] {
        let new = crate::ingest::geometry_of(&with_geometry(9, z, spacing));
        let mut check = SeriesCheck::new(&new);
        c.check_series(&hs[0].study, &hs[0].series, &mut check);
        let got = check.advisories();
        assert_eq!(
            got,
            series_advisories(&new, &others),
            "z {z}, spacing {spacing}"
        );
        seen += got.len();
    }
    assert!(seen >= 3, "the cases raise advisories");
    // Removing instances keeps the rest as they were (their shapes renumbered).
    c.remove(&hs[0].study, Some(&hs[0].series), Some(&hs[0].instance));
    c.remove(&hs[0].study, Some(&hs[0].series), Some(&hs[1].instance));
    let new = crate::ingest::geometry_of(&with_geometry(9, 15.0, 0.5));
    let mut check = SeriesCheck::new(&new);
    c.check_series(&hs[0].study, &hs[0].series, &mut check);
    assert_eq!(check.advisories(), series_advisories(&new, &others[2..]));
    let tree = c.read();
    assert_eq!(tree[&hs[0].study].series[&hs[0].series].shapes.len(), 2);
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

/// Series UIDs in the order the walk visits them (by handle).
fn in_walk_order(f: &Fixture, uids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
    v.sort_by_key(|u| f.series(u));
    v
}

/// The `n` instances `{series}.{i}` of a series in the order the walk lists them (by
/// handle), quoted as [`strs`] gives them.
fn instances_in_walk_order(f: &Fixture, series: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{series}.{i}")).collect();
    v.sort_by_key(|u| f.store.uid(radveil_store::Level::Instance, u));
    v.into_iter().map(|u| format!("\"{u}\"")).collect()
}

/// A round that stopped once it had its matches, one of which is then dropped (its series
/// deleted before the hits were taken), goes on from the last row it read: the rows of a
/// series it queued but did not read are still listed.
#[test]
fn a_match_dropped_after_a_round_does_not_skip_series_it_queued() {
    let f = Fixture::new();
    let order = in_walk_order(&f, &["1.1.1", "1.1.2", "1.1.3"]);
    let mut all = Vec::new();
    // The first series has one instance, the second two (the round stops there, with
    // the three matches a page of 2 wants), the third two (queued, never read).
    for (s, n) in order.iter().zip([1, 2, 2]) {
        for i in 0..n {
            all.push(inst(
                "DOE^JANE",
                "1.1",
                s,
                &format!("{s}.{i}"),
                "CT",
                "20200101",
            ));
        }
    }
    f.add(&all);
    let gone = f.series(&order[1]);
    let study = f.study("1.1");
    f.c.between_rounds(move |c| c.remove(&study, Some(&gone), None));
    // An instance-level key: the round queues every series.
    let found = f.run(
        &Scope::All,
        &[("limit", "2"), ("InstanceNumber", "")],
        ALL_INSTANCES,
    );
    assert_eq!(
        strs(&found, tags::SOP_INSTANCE_UID),
        vec![
            format!("\"{}.0\"", order[0]),
            instances_in_walk_order(&f, &order[2], 2)[0].clone()
        ]
    );
    assert!(found.more);

    // The round stops inside a series it goes on with: its rows already read are not
    // listed twice.
    let f = Fixture::new();
    let order = in_walk_order(&f, &["2.1.1", "2.1.2", "2.1.3"]);
    let mut all = Vec::new();
    // A page of 3 wants 4: the round reads both of the first series (then deleted), the
    // second's one and the third's first, and stops there.
    for (s, n) in order.iter().zip([2, 1, 4]) {
        for i in 0..n {
            all.push(inst(
                "DOE^JANE",
                "2.1",
                s,
                &format!("{s}.{i}"),
                "CT",
                "20200101",
            ));
        }
    }
    f.add(&all);
    let gone = f.series(&order[0]);
    let study = f.study("2.1");
    f.c.between_rounds(move |c| c.remove(&study, Some(&gone), None));
    let found = f.run(
        &Scope::All,
        &[("limit", "3"), ("InstanceNumber", "")],
        ALL_INSTANCES,
    );
    let third = instances_in_walk_order(&f, &order[2], 4);
    assert_eq!(
        strs(&found, tags::SOP_INSTANCE_UID),
        vec![
            format!("\"{}.0\"", order[1]),
            third[0].clone(),
            third[1].clone()
        ]
    );
    assert!(found.more);
}

/// An index row whose attributes do not open counts the same in the offset whether its
/// series is read or skipped unread: paging one by one lists each instance once.
#[test]
fn offsets_count_a_series_with_an_unopenable_row_alike_read_or_skipped() {
    let f = Fixture::new();
    let order = in_walk_order(&f, &["1.1.1", "1.1.2"]);
    let mut good = Vec::new();
    for (s, n) in order.iter().zip([3, 2]) {
        for i in 0..n {
            let a = inst("DOE^JANE", "1.1", s, &format!("{s}.{i}"), "CT", "20200101");
            if *s == order[0] && i == 1 {
                // Catalogued, but its sealed attributes are not DICOM JSON: it does not open.
                let [p, st, se, sop] = Fixture::ids(&a);
                let ids = radveil_store::InstanceIds {
                    patient_id: &p,
                    issuer: "",
                    study: &st,
                    series: &se,
                    instance: &sop,
                };
                let r = f.rt.block_on(f.store.put(
                    &ids,
                    bytes::Bytes::from(sop.clone().into_bytes()),
                    b"not json",
                ));
                assert_eq!(r.unwrap(), radveil_store::PutOutcome::Stored);
                f.c.insert(&f.handles(&a), a);
            } else {
                good.push(a);
            }
        }
    }
    f.add(&good);
    let whole = strs(
        &f.run(&Scope::All, &[], ALL_INSTANCES),
        tags::SOP_INSTANCE_UID,
    );
    assert_eq!(whole.len(), 4);
    let mut paged = Vec::new();
    for off in 0..6 {
        let off = off.to_string();
        paged.extend(strs(
            &f.run(
                &Scope::All,
                &[("limit", "1"), ("offset", &off)],
                ALL_INSTANCES,
            ),
            tags::SOP_INSTANCE_UID,
        ));
    }
    assert_eq!(paged, whole);
}
