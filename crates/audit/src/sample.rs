//! Events for the tests: a clinician's retrieval, a break-glass view, a search touching two
//! patients, a store, a delete, a refused token and an audit read.

use crate::event::*;

pub(crate) fn clinician() -> Actor {
    Actor {
        subject: Some("dr-house".into()),
        name: Some("Dr Gregory House".into()),
        client: Some("viewer-app".into()),
        role: Some(Role::Clinician),
        address: Some("192.0.2.10".into()),
    }
}

pub(crate) fn ct_study() -> StudyRef {
    StudyRef {
        uid: "1.2.826.0.1.3680043.8.498.1".into(),
        instances: Some(120),
        modality: Some("CT".into()),
        date: Some("20240302".into()),
        description: Some("CT HEAD".into()),
        ..StudyRef::default()
    }
}

pub(crate) fn jane() -> PatientAccess {
    PatientAccess {
        id: "PAT-JANE-0042".into(),
        issuer: Some("HOSPITAL-A".into()),
        name: Some("DOE^JANE".into()),
        studies: vec![ct_study()],
    }
}

pub(crate) fn john() -> PatientAccess {
    PatientAccess {
        id: "PAT-JOHN-0077".into(),
        issuer: None,
        name: Some("ROE^JOHN".into()),
        studies: vec![StudyRef {
            uid: "1.2.826.0.1.3680043.8.498.2".into(),
            modality: Some("MR".into()),
            date: Some("20231111".into()),
            ..StudyRef::default()
        }],
    }
}

pub(crate) fn events() -> Vec<Event> {
    let at = |t: &str, action, outcome, actor: Actor| Event {
        time: t.into(),
        ..Event::now(action, outcome, actor)
    };
    let mut v = Vec::new();
    let mut e = at(
        "2026-12-01T09:00:00Z",
        Action::Store,
        Outcome::Success,
        Actor {
            subject: Some("modality-ct1".into()),
            client: Some("ct-scanner".into()),
            role: Some(Role::System),
            address: Some("192.0.2.50".into()),
            ..Actor::default()
        },
    );
    e.purpose = Some(PurposeOfUse::Operations);
    e.patients = vec![jane()];
    v.push(e);
    let mut e = at(
        "2026-12-02T10:15:00Z",
        Action::Retrieve,
        Outcome::Success,
        clinician(),
    );
    e.purpose = Some(PurposeOfUse::Treatment);
    e.patients = vec![jane()];
    v.push(e);
    let mut e = at(
        "2026-12-02T11:00:00Z",
        Action::Query,
        Outcome::Success,
        clinician(),
    );
    e.purpose = Some(PurposeOfUse::Treatment);
    e.query = Some("PatientName=DOE*&StudyDate=2023-2024".into());
    e.patients = vec![jane(), john()];
    v.push(e);
    let mut e = at(
        "2026-12-02T23:40:00Z",
        Action::Retrieve,
        Outcome::Success,
        Actor {
            subject: Some("dr-cuddy".into()),
            name: Some("Dr Lisa Cuddy".into()),
            role: Some(Role::Clinician),
            address: Some("192.0.2.11".into()),
            ..Actor::default()
        },
    );
    e.purpose = Some(PurposeOfUse::EmergencyTreatment);
    e.break_glass = Some("unconscious patient in the emergency room".into());
    e.patients = vec![john()];
    v.push(e);
    let mut e = at(
        "2026-12-03T08:00:00Z",
        Action::TokenRefused,
        Outcome::MinorFailure,
        Actor {
            address: Some("198.51.100.7".into()),
            ..Actor::default()
        },
    );
    e.detail = Some("token expired".into());
    v.push(e);
    let mut e = at(
        "2026-12-03T09:30:00Z",
        Action::Delete,
        Outcome::Success,
        Actor {
            subject: Some("admin-1".into()),
            role: Some(Role::Admin),
            ..Actor::default()
        },
    );
    e.purpose = Some(PurposeOfUse::Operations);
    e.patients = vec![john()];
    v.push(e);
    let mut e = at(
        "2026-12-03T10:00:00Z",
        Action::AuditRead,
        Outcome::Success,
        Actor {
            subject: Some("auditor-1".into()),
            role: Some(Role::Auditor),
            ..Actor::default()
        },
    );
    e.purpose = Some(PurposeOfUse::Compliance);
    e.query = Some("patient".into());
    e.patients = vec![PatientAccess {
        studies: vec![],
        ..jane()
    }];
    v.push(e);
    v
}
