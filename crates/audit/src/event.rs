//! The audit event: who did what to which patients' images, when, with what outcome, and
//! why. Statuses and actions are enums, each with one `Display` (the word used in filters
//! and command lines) and the codes the exports need.

use serde::{Deserialize, Serialize};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Instances stored (STOW-RS).
    Store,
    /// A search (QIDO-RS).
    Query,
    /// Instances, metadata, frames or renderings retrieved (WADO-RS).
    Retrieve,
    /// A study, series or instance deleted.
    Delete,
    /// A bearer token refused (expired, forged, wrong audience...).
    TokenRefused,
    /// The audit trail read (by an auditor, or a patient reading their access log).
    AuditRead,
    /// A patient's consent recorded or changed (research, AI training, commercial use);
    /// the detail says which purpose and how, never who.
    ConsentChange,
    /// A patient's images included in a de-identified dataset sent to a recipient; the
    /// detail names the recipient and the purpose.
    Export,
    /// A share link to a study made, revoked or opened; the detail says which link and
    /// what happened to it.
    Share,
    /// A patient's own images (from a disc or drive) received through the portal and held
    /// apart, or a staff member's decision not to attach them; the detail says how many
    /// and what became of them. Attaching them is a [`Action::Store`] by the staff member.
    Upload,
    /// A patient's care team recorded or changed (from the EHR, FHIR `CareTeam`); the
    /// detail says what it now is.
    CareTeamChange,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Action; 11] = [
        Action::Store,
        Action::Query,
        Action::Retrieve,
        Action::Delete,
        Action::TokenRefused,
        Action::AuditRead,
        Action::ConsentChange,
        Action::Export,
        Action::Share,
        Action::Upload,
        Action::CareTeamChange,
    ];

    /// The word for this action (as in `--action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Store => "store",
            Action::Query => "query",
            Action::Retrieve => "retrieve",
            Action::Delete => "delete",
            Action::TokenRefused => "token-refused",
            Action::AuditRead => "audit-read",
            Action::ConsentChange => "consent-change",
            Action::Export => "export",
            Action::Share => "share",
            Action::Upload => "upload",
            Action::CareTeamChange => "careteam-change",
        }
    }

    /// The action code of FHIR AuditEvent.action and DICOM EventActionCode: C, R, D or E.
    pub fn action_code(self) -> &'static str {
        match self {
            Action::Store => "C",
            Action::Retrieve | Action::Export => "R",
            Action::Delete => "D",
            Action::ConsentChange | Action::CareTeamChange => "U",
            Action::Share | Action::Upload => "C",
            Action::Query | Action::TokenRefused | Action::AuditRead => "E",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown action (one of {})", all.join(", "))
            })
    }
}

/// How it ended, with the outcome codes of DICOM PS3.15 A.5 and FHIR R4 (0, 4, 8, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused or failed, the request being at fault (a bad token, a missing study).
    MinorFailure,
    /// Failed, the action terminated.
    SeriousFailure,
    /// Failed, the service unavailable.
    MajorFailure,
}

impl Outcome {
    /// The EventOutcomeIndicator / AuditEvent.outcome code.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
            Outcome::MajorFailure => "12",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Success => "success",
            Outcome::MinorFailure => "minor-failure",
            Outcome::SeriousFailure => "serious-failure",
            Outcome::MajorFailure => "major-failure",
        })
    }
}

/// The access-control role of whoever acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Administers the gateway.
    Admin,
    /// Cares for patients.
    Clinician,
    /// Sees no identified data.
    Researcher,
    /// Reads the audit trail only.
    Auditor,
    /// The patient, with a patient token.
    Patient,
    /// A service (system scopes).
    System,
    /// Answers for patients' consent and the exports made of their images.
    PrivacyOfficer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
            Role::System => "system",
            Role::PrivacyOfficer => "privacy officer",
        })
    }
}

/// Why the data was used: HL7 v3 ActReason (PurposeOfUse) codes, as FHIR and DICOM
/// PurposeOfUse carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PurposeOfUse {
    /// TREAT: treatment.
    Treatment,
    /// ETREAT: emergency treatment (break-glass access).
    EmergencyTreatment,
    /// HRESCH: research.
    Research,
    /// PATRQT: at the patient's request (the patient's own access).
    PatientRequest,
    /// HOPERAT: healthcare operations.
    Operations,
    /// HSYSADMIN: system administration.
    SystemAdministration,
    /// HCOMPL: compliance (auditing).
    Compliance,
}

impl PurposeOfUse {
    /// The v3-ActReason code.
    pub fn code(self) -> &'static str {
        match self {
            PurposeOfUse::Treatment => "TREAT",
            PurposeOfUse::EmergencyTreatment => "ETREAT",
            PurposeOfUse::Research => "HRESCH",
            PurposeOfUse::PatientRequest => "PATRQT",
            PurposeOfUse::Operations => "HOPERAT",
            PurposeOfUse::SystemAdministration => "HSYSADMIN",
            PurposeOfUse::Compliance => "HCOMPL",
        }
    }

    /// The code system of [`PurposeOfUse::code`].
    pub const SYSTEM: &'static str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
    /// Its OID (DICOM's codeSystemName for it).
    pub const OID: &'static str = "2.16.840.1.113883.5.8";
}

impl std::fmt::Display for PurposeOfUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PurposeOfUse::Treatment => "treatment",
            PurposeOfUse::EmergencyTreatment => "emergency treatment",
            PurposeOfUse::Research => "research",
            PurposeOfUse::PatientRequest => "patient request",
            PurposeOfUse::Operations => "healthcare operations",
            PurposeOfUse::SystemAdministration => "system administration",
            PurposeOfUse::Compliance => "compliance",
        })
    }
}

/// Who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's subject (`sub`), when there was a valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A display name (`name` claim), for the patient's access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The OAuth client (`client_id` / `azp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The role from the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The client's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A study (or one series or instance of it) touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRef {
    /// Study Instance UID.
    pub uid: String,
    /// Series Instance UID, when one series was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// SOP Instance UID, when one instance was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// How many instances were touched (instances are counted, not listed, so an event
    /// stays small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// Modalities in the study (e.g. "CT").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Study Date (DICOM DA, YYYYMMDD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Study Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One patient touched by an event, with their studies that were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientAccess {
    /// Patient ID.
    pub id: String,
    /// Issuer of Patient ID, where the site uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Patient's Name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Their studies touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub studies: Vec<StudyRef>,
}

/// One audited event. It holds identifying data (patients, UIDs, names): it is only ever
/// written sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, RFC 3339 UTC to the second (`YYYY-MM-DDThh:mm:ssZ`).
    pub time: String,
    /// What was done.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// Who did it.
    pub actor: Actor,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<PurposeOfUse>,
    /// The reason given for a break-glass access; present exactly when the access was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// The patients touched, each with their studies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<PatientAccess>,
    /// The query of a search (its query string), or the filter of an audit read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Why it failed or was refused, in words that hold no value from the request (e.g.
    /// "token expired").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event happening now, touching no patient yet.
    pub fn now(action: Action, outcome: Outcome, actor: Actor) -> Event {
        Event {
            time: radveil_ledger::rfc3339_now(),
            action,
            outcome,
            actor,
            purpose: None,
            break_glass: None,
            patients: Vec::new(),
            query: None,
            detail: None,
        }
    }

    /// Whether this was a break-glass access.
    pub fn is_break_glass(&self) -> bool {
        self.break_glass.is_some()
    }
}

/// Whether `t` is RFC 3339 UTC to the second, `YYYY-MM-DDThh:mm:ssZ`, as events are kept
/// (so times order as strings).
pub fn is_event_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_from_their_display() {
        for a in Action::ALL {
            assert_eq!(a.to_string().parse::<Action>().unwrap(), a);
        }
        assert!("view".parse::<Action>().is_err());
        assert_eq!(Action::Store.action_code(), "C");
        assert_eq!(Action::Retrieve.action_code(), "R");
        assert_eq!(Action::Delete.action_code(), "D");
        assert_eq!(Action::Query.action_code(), "E");
    }

    #[test]
    fn event_times_are_rfc3339_utc_to_the_second() {
        assert!(is_event_time("2026-12-03T12:40:00Z"));
        assert!(is_event_time(&radveil_ledger::rfc3339_now()));
        for bad in [
            "2026-12-03T12:40:00+01:00",
            "2026-12-03T12:40:00.5Z",
            "2026-12-03 12:40:00Z",
            "20261203T124000Z",
            "",
        ] {
            assert!(!is_event_time(bad), "{bad}");
        }
    }
}
