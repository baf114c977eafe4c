use super::*;

fn handle(n: u8) -> Handle {
    Handle([n; 32])
}

fn who(id: &str) -> PatientId {
    PatientId {
        id: id.into(),
        issuer: "HOSP".into(),
    }
}

fn staff() -> Recorder {
    Recorder {
        subject: Some("officer-1".into()),
        role: "privacy-officer".into(),
    }
}

fn open(dir: &Path, defaults: Defaults) -> Consents {
    Consents::open(dir, Key::from_slice(&[7; 32]).unwrap(), defaults).unwrap()
}

fn choice(purpose: Purpose, permitted: bool) -> DraftChoice {
    DraftChoice {
        purpose,
        permitted,
        since: None,
        data_period: None,
    }
}

fn draft(patient: &str, choices: Vec<DraftChoice>) -> Draft {
    Draft {
        id: None,
        patient: who(patient),
        status: Status::Active,
        date_time: None,
        base: None,
        choices,
    }
}

#[test]
fn every_change_is_a_new_version_and_old_ones_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(1);
    assert_eq!(c.current(&p).unwrap(), None);
    let first = c
        .record(
            &p,
            draft("PID-1", vec![choice(Purpose::Research, true)]),
            staff(),
            Source::Staff,
            None,
        )
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.granted, vec![Purpose::Research]);
    assert!(first.withdrawn.is_empty());
    let second = c
        .update(
            &p,
            &who("PID-1"),
            &[(Purpose::AiTraining, true)],
            staff(),
            Source::Portal,
        )
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.granted, vec![Purpose::AiTraining]);
    // Research did not change: its date is the first version's.
    assert_eq!(
        second.consent.choice(Purpose::Research).unwrap().since,
        first.consent.choice(Purpose::Research).unwrap().since
    );
    let h = c.history(&p).unwrap();
    assert_eq!(h.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(h[0], first.consent);
    assert_eq!(c.version(&p, 1).unwrap().unwrap(), first.consent);
    assert_eq!(c.version(&p, 3).unwrap(), None);
    assert_eq!(c.current(&p).unwrap().unwrap().version, 2);
    // The same id in every version (the patient's handle, none being asked for).
    assert!(h.iter().all(|v| v.id == p.hex()));
    // Another Consents on the same file sees the same.
    drop(c);
    let again = open(dir.path(), Defaults::default());
    assert_eq!(again.history(&p).unwrap(), h);
}

#[test]
fn if_match_must_name_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(2);
    let d = draft("PID-2", vec![choice(Purpose::Research, true)]);
    assert!(matches!(
        c.record(&p, d.clone(), staff(), Source::Fhir, Some(1)),
        Err(ConsentError::VersionMismatch { current: 0 })
    ));
    c.record(&p, d.clone(), staff(), Source::Fhir, Some(0))
        .unwrap();
    assert!(matches!(
        c.record(&p, d.clone(), staff(), Source::Fhir, Some(0)),
        Err(ConsentError::VersionMismatch { current: 1 })
    ));
    assert_eq!(
        c.record(&p, d, staff(), Source::Fhir, Some(1))
            .unwrap()
            .version,
        2
    );
}

#[test]
fn a_history_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(15);
    // (Not durable, for speed: a thousand fsyncs are not what is tested.)
    c.db()
        .unwrap()
        .conn()
        .execute_batch("PRAGMA synchronous = OFF")
        .unwrap();
    for n in 1..=MAX_VERSIONS {
        let change = c
            .update(
                &p,
                &who("PID-15"),
                &[(Purpose::Research, n % 2 == 0)],
                staff(),
                Source::Portal,
            )
            .unwrap();
        assert_eq!(change.version, n);
    }
    assert!(matches!(
        c.update(
            &p,
            &who("PID-15"),
            &[(Purpose::Research, true)],
            staff(),
            Source::Portal
        ),
        Err(ConsentError::Invalid(_))
    ));
    assert_eq!(c.history(&p).unwrap().len() as u64, MAX_VERSIONS);
    // The last version still decides.
    assert!(c.decide(&p, Purpose::Research, None).unwrap().permitted);
}

#[test]
fn site_defaults_decide_when_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let p = handle(3);
    let opt_in = open(dir.path(), Defaults::default());
    for purpose in Purpose::ALL {
        assert_eq!(
            opt_in.decide(&p, purpose, Some("20240101")).unwrap(),
            Decision {
                permitted: false,
                version: 0
            }
        );
    }
    drop(opt_in);
    let mixed = Defaults {
        research: Policy::OptOut,
        ai_training: Policy::OptIn,
        commercial: Policy::OptIn,
    };
    let c = open(dir.path(), mixed);
    assert!(c.decide(&p, Purpose::Research, None).unwrap().permitted);
    assert!(!c.decide(&p, Purpose::AiTraining, None).unwrap().permitted);
    // Opt-out: withdrawing research denies it; AI training given is permitted.
    c.record(
        &p,
        draft(
            "PID-3",
            vec![
                choice(Purpose::Research, false),
                choice(Purpose::AiTraining, true),
            ],
        ),
        staff(),
        Source::Staff,
        None,
    )
    .unwrap();
    assert_eq!(
        c.decide(&p, Purpose::Research, None).unwrap(),
        Decision {
            permitted: false,
            version: 1
        }
    );
    assert!(c.decide(&p, Purpose::AiTraining, None).unwrap().permitted);
    // Commercial, not mentioned: the site default.
    assert!(!c.decide(&p, Purpose::Commercial, None).unwrap().permitted);
    // An inactive consent says nothing: defaults again (under its version).
    let mut d = draft("PID-3", vec![choice(Purpose::Research, false)]);
    d.status = Status::Inactive;
    c.record(&p, d, staff(), Source::Staff, None).unwrap();
    assert_eq!(
        c.decide(&p, Purpose::Research, None).unwrap(),
        Decision {
            permitted: true,
            version: 2
        }
    );
}

#[test]
fn a_data_period_limits_a_choice_to_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(4);
    let mut ch = choice(Purpose::Research, true);
    ch.data_period = Some(DataPeriod {
        start: Some("20200101".into()),
        end: Some("20221231".into()),
    });
    c.record(&p, draft("PID-4", vec![ch]), staff(), Source::Fhir, None)
        .unwrap();
    let research = |d: Option<&str>| c.decide(&p, Purpose::Research, d).unwrap().permitted;
    assert!(research(Some("20200101")));
    assert!(research(Some("20221231")));
    assert!(!research(Some("20191231")));
    assert!(!research(Some("20230101")));
    // Unknown or malformed study date: not shown to be in the period.
    assert!(!research(None));
    assert!(!research(Some("2021")));
    // Under opt-out a deny limited to a period denies only that period.
    let dir2 = tempfile::tempdir().unwrap();
    let out = open(
        dir2.path(),
        Defaults {
            research: Policy::OptOut,
            ..Defaults::default()
        },
    );
    let mut ch = choice(Purpose::Research, false);
    ch.data_period = Some(DataPeriod {
        start: None,
        end: Some("20191231".into()),
    });
    let change = out
        .record(&p, draft("PID-4", vec![ch]), staff(), Source::Fhir, None)
        .unwrap();
    assert_eq!(change.withdrawn, vec![Purpose::Research]);
    assert!(
        !out.decide(&p, Purpose::Research, Some("20150505"))
            .unwrap()
            .permitted
    );
    assert!(
        out.decide(&p, Purpose::Research, Some("20200505"))
            .unwrap()
            .permitted
    );
    assert!(!out.decide(&p, Purpose::Research, None).unwrap().permitted);
}

#[test]
fn a_narrower_period_is_a_withdrawal_and_a_wider_one_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(5);
    let with = |s: &str, e: &str| {
        let mut ch = choice(Purpose::AiTraining, true);
        ch.data_period = Some(DataPeriod {
            start: Some(s.into()),
            end: Some(e.into()),
        });
        draft("PID-5", vec![ch])
    };
    let a = c
        .record(
            &p,
            with("20200101", "20201231"),
            staff(),
            Source::Fhir,
            None,
        )
        .unwrap();
    assert_eq!(a.granted, vec![Purpose::AiTraining]);
    let b = c
        .record(
            &p,
            with("20190101", "20211231"),
            staff(),
            Source::Fhir,
            None,
        )
        .unwrap();
    assert_eq!(
        (b.granted.clone(), b.withdrawn.clone()),
        (vec![Purpose::AiTraining], vec![])
    );
    let n = c
        .record(
            &p,
            with("20200601", "20211231"),
            staff(),
            Source::Fhir,
            None,
        )
        .unwrap();
    assert_eq!(n.withdrawn, vec![Purpose::AiTraining]);
    let same = c
        .record(
            &p,
            with("20200601", "20211231"),
            staff(),
            Source::Fhir,
            None,
        )
        .unwrap();
    assert!(same.withdrawn.is_empty() && same.granted.is_empty());
    assert_eq!(same.words(), "version 4: no change of purpose");
}

#[test]
fn decide_follows_a_withdrawal_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(6);
    c.update(
        &p,
        &who("PID-6"),
        &[(Purpose::AiTraining, true), (Purpose::Research, true)],
        staff(),
        Source::Portal,
    )
    .unwrap();
    // Cached now.
    assert!(c.decide(&p, Purpose::AiTraining, None).unwrap().permitted);
    let change = c
        .update(
            &p,
            &who("PID-6"),
            &[(Purpose::AiTraining, false)],
            staff(),
            Source::Portal,
        )
        .unwrap();
    assert_eq!(change.withdrawn, vec![Purpose::AiTraining]);
    assert_eq!(change.words(), "version 2: ai-training: withdrawn");
    assert_eq!(
        c.decide(&p, Purpose::AiTraining, None).unwrap(),
        Decision {
            permitted: false,
            version: 2
        }
    );
    assert!(c.decide(&p, Purpose::Research, None).unwrap().permitted);
}

#[test]
fn a_change_by_another_process_is_seen_by_a_cached_reader() {
    let dir = tempfile::tempdir().unwrap();
    let reader = open(dir.path(), Defaults::default());
    let writer = open(dir.path(), Defaults::default());
    let p = handle(7);
    writer
        .update(
            &p,
            &who("PID-7"),
            &[(Purpose::Research, true)],
            staff(),
            Source::Portal,
        )
        .unwrap();
    assert!(
        reader
            .decide(&p, Purpose::Research, None)
            .unwrap()
            .permitted
    );
    writer
        .withdraw_all(&p, &who("PID-7"), staff(), Source::Portal)
        .unwrap();
    assert_eq!(
        reader.decide(&p, Purpose::Research, None).unwrap(),
        Decision {
            permitted: false,
            version: 2
        }
    );
}

#[test]
fn withdraw_all_denies_every_purpose_in_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = Defaults {
        research: Policy::OptOut,
        ai_training: Policy::OptOut,
        commercial: Policy::OptOut,
    };
    let c = open(dir.path(), out);
    let p = handle(8);
    let mut ch = choice(Purpose::Research, true);
    ch.data_period = Some(DataPeriod {
        start: Some("20100101".into()),
        end: None,
    });
    let mut d = draft("PID-8", vec![ch]);
    d.base = Some(true);
    c.record(&p, d, staff(), Source::Fhir, None).unwrap();
    let change = c
        .withdraw_all(&p, &who("PID-8"), staff(), Source::Portal)
        .unwrap();
    assert_eq!(change.version, 2);
    assert_eq!(change.withdrawn, Purpose::ALL.to_vec());
    assert_eq!(
        change.words(),
        "version 2: research: withdrawn; ai-training: withdrawn; commercial: withdrawn"
    );
    for purpose in Purpose::ALL {
        for date in [None, Some("20000101"), Some("20240101")] {
            assert_eq!(
                c.decide(&p, purpose, date).unwrap(),
                Decision {
                    permitted: false,
                    version: 2
                },
                "{purpose} {date:?}"
            );
        }
        let ch = change.consent.choice(purpose).unwrap();
        assert!(!ch.permitted && ch.data_period.is_none());
    }
    assert_eq!(change.consent.source, Source::Portal);
}

#[test]
fn a_sealed_row_moved_to_another_patient_or_version_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let (a, b) = (handle(9), handle(10));
    c.update(
        &a,
        &who("PID-A"),
        &[(Purpose::Research, true)],
        staff(),
        Source::Portal,
    )
    .unwrap();
    c.update(
        &a,
        &who("PID-A"),
        &[(Purpose::Research, false)],
        staff(),
        Source::Portal,
    )
    .unwrap();
    c.update(
        &b,
        &who("PID-B"),
        &[(Purpose::Research, false)],
        staff(),
        Source::Portal,
    )
    .unwrap();
    {
        let db = c.db().unwrap();
        // A's permitting version 1 copied over B's version 1.
        let sealed: Vec<u8> = db
            .conn()
            .query_row(
                "SELECT sealed FROM version WHERE patient = ?1 AND version = 1",
                [&a.0[..]],
                |r| r.get(0),
            )
            .unwrap();
        db.conn()
            .execute(
                "UPDATE version SET sealed = ?1 WHERE patient = ?2 AND version = 1",
                rusqlite::params![sealed, &b.0[..]],
            )
            .unwrap();
        // A's version 1 put in place of A's version 2 (a rollback).
        db.conn()
            .execute(
                "UPDATE version SET sealed = ?1 WHERE patient = ?2 AND version = 2",
                rusqlite::params![sealed, &a.0[..]],
            )
            .unwrap();
    }
    let fresh = open(dir.path(), Defaults::default());
    assert!(matches!(
        fresh.version(&b, 1),
        Err(ConsentError::Sealed { version: 1 })
    ));
    assert!(matches!(
        fresh.decide(&a, Purpose::Research, None),
        Err(ConsentError::Sealed { version: 2 })
    ));
    assert!(fresh.version(&a, 1).unwrap().is_some());
    // Another key opens nothing.
    let other = Consents::open(
        dir.path(),
        Key::from_slice(&[8; 32]).unwrap(),
        Defaults::default(),
    )
    .unwrap();
    assert!(matches!(
        other.version(&a, 1),
        Err(ConsentError::Sealed { .. })
    ));
}

#[test]
fn nothing_identifying_is_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(11);
    let mut d = draft("MRN-SECRET-4242", vec![choice(Purpose::Research, true)]);
    d.id = Some("consent-of-MRN-SECRET-4242".into());
    d.patient.issuer = "ISSUER-PLAIN".into();
    c.record(&p, d, staff(), Source::Fhir, None).unwrap();
    drop(c);
    let bytes = std::fs::read(dir.path().join(CONSENT_DB)).unwrap();
    for needle in [
        &b"MRN-SECRET"[..],
        b"ISSUER-PLAIN",
        b"officer-1",
        b"research",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} in the database",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn logical_ids_belong_to_one_patient() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let (a, b) = (handle(12), handle(13));
    let mut d = draft("PID-A", vec![]);
    d.id = Some("c-1".into());
    c.record(&a, d.clone(), staff(), Source::Fhir, None)
        .unwrap();
    assert_eq!(c.patient_of("c-1").unwrap(), Some(a));
    assert_eq!(c.patient_of("c-2").unwrap(), None);
    // B may not take A's id, nor A a second one.
    let mut db_ = draft("PID-B", vec![]);
    db_.id = Some("c-1".into());
    assert!(matches!(
        c.record(&b, db_, staff(), Source::Fhir, None),
        Err(ConsentError::IdTaken)
    ));
    d.id = Some("c-2".into());
    assert!(matches!(
        c.record(&a, d, staff(), Source::Fhir, None),
        Err(ConsentError::OtherId)
    ));
    // Nothing was recorded by the refusals.
    assert_eq!(c.history(&a).unwrap().len(), 1);
    assert!(c.history(&b).unwrap().is_empty());
    assert_eq!(c.patient_of("c-2").unwrap(), None);
}

#[test]
fn drafts_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), Defaults::default());
    let p = handle(14);
    let twice = draft(
        "PID",
        vec![
            choice(Purpose::Research, true),
            choice(Purpose::Research, false),
        ],
    );
    assert!(matches!(
        c.record(&p, twice, staff(), Source::Fhir, None),
        Err(ConsentError::Invalid(_))
    ));
    let mut backwards = choice(Purpose::Research, true);
    backwards.data_period = Some(DataPeriod {
        start: Some("20200101".into()),
        end: Some("20190101".into()),
    });
    assert!(c
        .record(
            &p,
            draft("PID", vec![backwards]),
            staff(),
            Source::Fhir,
            None
        )
        .is_err());
    let mut bad_date = choice(Purpose::Research, true);
    bad_date.data_period = Some(DataPeriod {
        start: Some("20200230".into()),
        end: None,
    });
    assert!(c
        .record(
            &p,
            draft("PID", vec![bad_date]),
            staff(),
            Source::Fhir,
            None
        )
        .is_err());
    assert!(c
        .record(&p, draft("", vec![]), staff(), Source::Fhir, None)
        .is_err());
    assert!(c.history(&p).unwrap().is_empty());
}

mod fhir_io {
    use super::*;
    use crate::fhir;
    use serde_json::json;

    fn consent_json() -> serde_json::Value {
        json!({
            "resourceType": "Consent",
            "id": "ehr-77",
            "status": "active",
            "scope": {"coding": [{"system": fhir::CONSENT_SCOPE, "code": "research"}]},
            "category": [{"coding": [{"system": fhir::LOINC, "code": "59284-0"}]}],
            "patient": {"identifier": {"system": "urn:oid:1.2.3.4", "value": "PID-77"}},
            "dateTime": "2026-03-01",
            "policyRule": {"coding": [{"system": fhir::ACT_CODE, "code": "OPTIN"}]},
            "provision": {
                "type": "deny",
                "provision": [
                    {"type": "permit", "purpose": [{"system": fhir::ACT_REASON, "code": "HRESCH"}],
                     "period": {"start": "2026-03-01T10:00:00Z"},
                     "dataPeriod": {"start": "2020", "end": "2022-06"}},
                    {"type": "deny", "purpose": [{"system": fhir::ACT_REASON, "code": "MLTRAINING"},
                                                 {"system": fhir::SITE_PURPOSE, "code": "commercial"}]}
                ]
            }
        })
    }

    #[test]
    fn a_consent_is_read_from_fhir() {
        let d = fhir::parse(consent_json().to_string().as_bytes()).unwrap();
        assert_eq!(d.id.as_deref(), Some("ehr-77"));
        assert_eq!(
            d.patient,
            PatientId {
                id: "PID-77".into(),
                issuer: "1.2.3.4".into()
            }
        );
        assert_eq!(d.base, Some(false));
        assert_eq!(d.choices.len(), 3);
        let r = &d.choices[0];
        assert_eq!((r.purpose, r.permitted), (Purpose::Research, true));
        assert_eq!(r.since.as_deref(), Some("2026-03-01T10:00:00Z"));
        assert_eq!(
            r.data_period,
            Some(DataPeriod {
                start: Some("20200101".into()),
                end: Some("20220630".into())
            })
        );
        assert_eq!(
            (d.choices[1].purpose, d.choices[1].permitted),
            (Purpose::AiTraining, false)
        );
        assert_eq!(
            (d.choices[2].purpose, d.choices[2].permitted),
            (Purpose::Commercial, false)
        );
    }

    #[test]
    fn what_cannot_be_enforced_is_refused() {
        let status =
            |v: serde_json::Value| fhir::parse(v.to_string().as_bytes()).unwrap_err().status;
        let mut v = consent_json();
        v["provision"]["provision"][0]["purpose"][0]["code"] = json!("MARKETING");
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["provision"]["provision"][0]["actor"] = json!([]);
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["modifierExtension"] = json!([]);
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["somethingElse"] = json!(1);
        assert_eq!(status(v), 400);
        let mut v = consent_json();
        v["resourceType"] = json!("Patient");
        assert_eq!(status(v), 400);
        let mut v = consent_json();
        v["status"] = json!("draft");
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["scope"]["coding"][0]["code"] = json!("patient-privacy");
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["patient"] = json!({"reference": "Patient/1"});
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["provision"]["provision"][1]["purpose"][1] =
            json!({"system": fhir::ACT_REASON, "code": "MLTRAINING"});
        assert_eq!(status(v), 422);
        let mut v = consent_json();
        v["provision"]["provision"][0]["dataPeriod"] = json!({"start": "2020-02-30"});
        assert_eq!(status(v), 400);
        let mut v = consent_json();
        v["dateTime"] = json!("2026-03-01T10:00");
        assert_eq!(status(v), 400);
        assert_eq!(fhir::parse(b"{").unwrap_err().status, 400);
        assert_eq!(
            fhir::parse(&vec![b' '; fhir::MAX_BODY + 1])
                .unwrap_err()
                .status,
            413
        );
        // Messages name elements, never values.
        let mut v = consent_json();
        v["patient"]["identifier"]["value"] = json!("PID\\SECRET");
        let e = fhir::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(!e.why.contains("SECRET"), "{}", e.why);
    }

    #[test]
    fn a_consent_round_trips_through_fhir() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), Defaults::default());
        let p = handle(20);
        let d = fhir::parse(consent_json().to_string().as_bytes()).unwrap();
        let change = c.record(&p, d, staff(), Source::Fhir, None).unwrap();
        let out = fhir::to_fhir(&change.consent, &c.defaults());
        assert_eq!(out["meta"]["versionId"], "1");
        assert_eq!(out["id"], "ehr-77");
        assert_eq!(out["policyRule"]["coding"][0]["code"], "OPTIN");
        assert_eq!(out["patient"]["identifier"]["system"], "urn:oid:1.2.3.4");
        assert_eq!(
            out["provision"]["provision"][0]["dataPeriod"]["end"],
            "2022-06-30"
        );
        let back = fhir::parse(out.to_string().as_bytes()).unwrap();
        let again = c.record(&p, back, staff(), Source::Fhir, Some(1)).unwrap();
        assert_eq!(again.consent.choices, change.consent.choices);
        assert_eq!(again.consent.patient, change.consent.patient);
        assert!(again.withdrawn.is_empty() && again.granted.is_empty());
        // A plain issuer goes to the assigner.
        let mut plain = change.consent.clone();
        plain.patient.issuer = "HOSP A".into();
        let v = fhir::to_fhir(&plain, &c.defaults());
        assert_eq!(v["patient"]["identifier"]["assigner"]["display"], "HOSP A");
        assert_eq!(
            fhir::parse(v.to_string().as_bytes()).unwrap().patient,
            plain.patient
        );
    }

    #[test]
    fn fhir_date_times() {
        for ok in [
            "2026",
            "2026-03",
            "2026-03-01",
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.5+01:00",
            "2024-02-29",
        ] {
            assert!(fhir::is_date_time(ok), "{ok}");
        }
        for bad in [
            "",
            "26",
            "2026-3",
            "2026-02-30",
            "2026-03-01T10:00Z",
            "2026-03-01T10:00:00",
            "2026-03T10:00:00Z",
            "0000",
            "2026-03-01T24:00:00Z",
        ] {
            assert!(!fhir::is_date_time(bad), "{bad}");
        }
    }
}
