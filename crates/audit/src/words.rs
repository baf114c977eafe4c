//! The patient's access log in plain words: "Dr Gregory House (clinician) viewed your CT
//! study of 2 March 2024 on 2 December 2026 at 10:15 UTC, for treatment." Only what concerns
//! that patient is said: another patient touched by the same request is never mentioned.

use crate::event::{Action, Event, Outcome, PatientAccess, PurposeOfUse, Role, StudyRef};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// "2 March 2024" from a DICOM date (YYYYMMDD) or an RFC 3339 date; `None` when it is not one.
fn day(date: &str) -> Option<String> {
    let d: String = date.chars().filter(char::is_ascii_digit).take(8).collect();
    if d.len() != 8 {
        return None;
    }
    let month: usize = d[4..6].parse().ok()?;
    let dd: u32 = d[6..8].parse().ok()?;
    let name = MONTHS.get(month.checked_sub(1)?)?;
    (1..=31)
        .contains(&dd)
        .then(|| format!("{dd} {name} {}", &d[..4]))
}

fn who(e: &Event) -> String {
    let role = e.actor.role;
    let what = match role {
        Some(Role::Clinician) => "a clinician",
        Some(Role::Admin) => "an administrator",
        Some(Role::Researcher) => "a researcher",
        Some(Role::Auditor) => "an auditor",
        Some(Role::Patient) => "you",
        Some(Role::System) => "an automated service",
        Some(Role::PrivacyOfficer) => "the privacy office",
        None => "someone",
    };
    match (&e.actor.name, role) {
        (Some(n), Some(r)) if r != Role::Patient => format!("{n} ({r})"),
        (Some(n), None) => n.clone(),
        _ => {
            let mut w = what.to_string();
            if let Some(first) = w.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            w
        }
    }
}

fn study(s: &StudyRef) -> String {
    let mut t = String::from("your ");
    if let Some(m) = &s.modality {
        t.push_str(m);
        t.push(' ');
    }
    t.push_str("study");
    if let Some(d) = s.date.as_deref().and_then(day) {
        t.push_str(" of ");
        t.push_str(&d);
    }
    t
}

fn studies(p: &PatientAccess) -> String {
    match p.studies.as_slice() {
        [] => "your images".into(),
        [one] => study(one),
        [first, rest @ ..] => format!(
            "{} and {} other {}",
            study(first),
            rest.len(),
            if rest.len() == 1 { "study" } else { "studies" }
        ),
    }
}

fn purpose(p: PurposeOfUse) -> &'static str {
    match p {
        PurposeOfUse::Treatment => "for your care",
        PurposeOfUse::EmergencyTreatment => "for emergency care",
        PurposeOfUse::Research => "for research",
        PurposeOfUse::PatientRequest => "at your request",
        PurposeOfUse::Operations => "for the running of the service",
        PurposeOfUse::SystemAdministration => "for system administration",
        PurposeOfUse::Compliance => "to check that your records are used properly",
    }
}

/// The sentence telling the patient `p` what event `e` did with their images, or `None`
/// when the event does not concern them.
pub fn for_patient(e: &Event, id: &str, issuer: Option<&str>) -> Option<String> {
    let p = e
        .patients
        .iter()
        .find(|p| p.id == id && p.issuer.as_deref() == issuer)?;
    let what = studies(p);
    let failed = e.outcome != Outcome::Success;
    let verb = match (e.action, failed) {
        (Action::Retrieve, false) => format!("viewed {what}"),
        (Action::Retrieve, true) => format!("tried to view {what} and was refused"),
        // A read of the patient's consent (FHIR Consent), not of their images.
        (Action::Query, false) if e.query.as_deref().is_some_and(|q| q.starts_with("Consent")) => {
            "read your consent choices".into()
        }
        (Action::Query, false) => format!("searched the records and found {what}"),
        (Action::Query, true) => format!("tried to search for {what} and was refused"),
        (Action::Store, false) => match &e.detail {
            // "from the images you sent (upload …), after checking they are yours"
            Some(d) => format!("added {what} {d}"),
            None => format!("added {what}"),
        },
        (Action::Store, true) => format!("tried to add {what} and it failed"),
        (Action::Delete, false) => format!("deleted {what}"),
        (Action::Delete, true) => format!("tried to delete {what} and it failed"),
        (Action::AuditRead, _) => "read the record of who has seen your images".into(),
        (Action::TokenRefused, _) => format!("was refused access to {what}"),
        (Action::CareTeamChange, _) => match &e.detail {
            Some(d) => format!("recorded who is on your care team: {d}"),
            None => "recorded who is on your care team".into(),
        },
        (Action::ConsentChange, _) => match &e.detail {
            Some(d) => format!("recorded a change to your consent: {d}"),
            None => "recorded a change to your consent".into(),
        },
        (Action::Share, _) => match &e.detail {
            // "made a link (good until 10 December 2026) to share" + "your CT study of …"
            Some(d) => format!("{d} {what}"),
            None => format!("made a link to share {what}"),
        },
        (Action::Upload, _) => match &e.detail {
            Some(d) => d.clone(),
            None => "received images you sent".into(),
        },
        (Action::Export, _) => match &e.detail {
            Some(d) => format!("included {what} in a de-identified dataset for {d}"),
            None => format!("included {what} in a de-identified dataset"),
        },
    };
    let (date, time) = e.time.split_once('T').unwrap_or((&e.time, ""));
    let mut s = format!(
        "{} {} on {}",
        who(e),
        verb,
        day(date).unwrap_or_else(|| date.to_string())
    );
    if let Some(hm) = time.get(..5) {
        s.push_str(&format!(" at {hm} UTC"));
    }
    if let Some(reason) = &e.break_glass {
        s.push_str(&format!(
            ", using emergency access outside their usual permissions (reason given: \"{reason}\")"
        ));
    } else if let Some(p) = e.purpose {
        s.push_str(", ");
        s.push_str(purpose(p));
    }
    s.push('.');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn a_patient_reads_what_happened_in_words() {
        let ev = sample::events();
        let jane = |e: &Event| for_patient(e, "PAT-JANE-0042", Some("HOSPITAL-A"));
        assert_eq!(
            jane(&ev[1]).unwrap(),
            "Dr Gregory House (clinician) viewed your CT study of 2 March 2024 on 2 December 2026 at 10:15 UTC, for your care."
        );
        assert_eq!(
            jane(&ev[0]).unwrap(),
            "An automated service added your CT study of 2 March 2024 on 1 December 2026 at 09:00 UTC, for the running of the service."
        );
        // The two-patient search mentions only Jane's study.
        let q = jane(&ev[2]).unwrap();
        assert!(q.contains("your CT study of 2 March 2024"), "{q}");
        assert!(!q.contains("MR") && !q.contains("JOHN"), "{q}");
        // Not hers: nothing.
        assert_eq!(jane(&ev[3]), None);
        assert_eq!(jane(&ev[4]), None);
        // Another issuer is another patient.
        assert_eq!(for_patient(&ev[1], "PAT-JANE-0042", None), None);
        let john = for_patient(&ev[3], "PAT-JOHN-0077", None).unwrap();
        assert_eq!(
            john,
            "Dr Lisa Cuddy (clinician) viewed your MR study of 11 November 2023 on 2 December 2026 at 23:40 UTC, using emergency access outside their usual permissions (reason given: \"unconscious patient in the emergency room\")."
        );
        assert!(jane(&ev[6])
            .unwrap()
            .starts_with("An auditor read the record"));
    }

    #[test]
    fn dates_in_words() {
        assert_eq!(day("20240302").as_deref(), Some("2 March 2024"));
        assert_eq!(day("2026-12-31").as_deref(), Some("31 December 2026"));
        assert_eq!(day("20241302"), None);
        assert_eq!(day("2024"), None);
        assert_eq!(day("20240200"), None);
    }
}
