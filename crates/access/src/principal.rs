//! Who is asking ([`Principal`], built from a verified token) and what they may do
//! ([`Principal::decide`]).

use crate::smart::{Context, Permissions, Resource, Scopes};

/// A role from the token's roles claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, on every patient (still within the token's scopes).
    Admin,
    /// Reads, searches and stores images; may break the glass to read outside their scope.
    Clinician,
    /// No access to identified data (this gateway holds only identified data).
    Researcher,
    /// The audit trail only.
    Auditor,
    /// Patients' consents (reads and records them for any patient); no images.
    PrivacyOfficer,
}

impl Role {
    /// The role named `name` (case-sensitive, as issued); unknown names are `None`.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "clinician" => Some(Role::Clinician),
            "researcher" => Some(Role::Researcher),
            "auditor" => Some(Role::Auditor),
            "privacy-officer" => Some(Role::PrivacyOfficer),
            _ => None,
        }
    }

    /// The role's name in tokens.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::PrivacyOfficer => "privacy-officer",
        }
    }

    fn permits(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Clinician => matches!(action, Action::Read | Action::Search | Action::Store),
            Role::Researcher => false,
            Role::Auditor => matches!(action, Action::ReadAudit),
            Role::PrivacyOfficer => matches!(
                action,
                Action::ReadConsent | Action::SearchConsent | Action::WriteConsent | Action::Export
            ),
        }
    }
}

/// A patient as DICOM names one: Patient ID (0010,0020) with Issuer of Patient ID
/// (0010,0021), empty where the site does not use issuers. Its `Debug` shows neither (they
/// are PHI).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PatientRef {
    id: String,
    issuer: String,
}

impl std::fmt::Debug for PatientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientRef(..)")
    }
}

/// Longest Patient ID or issuer (LO: 64 characters).
const MAX_LO: usize = 64;

impl PatientRef {
    /// A patient reference, trimmed of spaces like the values read from instances; `None`
    /// when the ID is empty, either value is longer than 64 characters (LO) or holds a
    /// control character or backslash.
    pub fn new(id: &str, issuer: &str) -> Option<PatientRef> {
        let ok = |s: &str| {
            s.chars().count() <= MAX_LO && !s.chars().any(|c| c.is_control() || c == '\\')
        };
        let id = id.trim_matches([' ', '\0']);
        let issuer = issuer.trim_matches([' ', '\0']);
        (!id.is_empty() && ok(id) && ok(issuer)).then(|| PatientRef {
            id: id.to_string(),
            issuer: issuer.to_string(),
        })
    }

    /// Patient ID (0010,0020).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Issuer of Patient ID (0010,0021), empty when not used.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Retrieve (WADO-RS): SMART `r`.
    Read,
    /// Search (QIDO-RS): SMART `s`.
    Search,
    /// Store (STOW-RS): SMART `c`.
    Store,
    /// Delete: SMART `d`.
    Delete,
    /// Read the audit trail: SMART `r` on `AuditEvent`.
    ReadAudit,
    /// Read a patient's consent (a version, or its history): SMART `r` on `Consent`.
    ReadConsent,
    /// Search consents by patient: SMART `s` on `Consent`.
    SearchConsent,
    /// Record a consent (create or a new version, `PUT`): SMART `u` on `Consent`.
    WriteConsent,
    /// Start a consent-checked, de-identified research export of every patient's images
    /// (the privacy officer's, from the portal): SMART `r` on `ImagingStudy` with a `user/`
    /// or `system/` scope, and always a role that permits it (a principal without roles
    /// never exports).
    Export,
    /// Read a care team: SMART `r` on `CareTeam`.
    ReadCareTeam,
    /// Record a care team (`PUT`, from the EHR): SMART `u` on `CareTeam`.
    WriteCareTeam,
}

impl Action {
    fn wants(self) -> (Resource, Permissions) {
        match self {
            Action::Read => (Resource::ImagingStudy, Permissions::READ),
            Action::Search => (Resource::ImagingStudy, Permissions::SEARCH),
            Action::Store => (Resource::ImagingStudy, Permissions::CREATE),
            Action::Delete => (Resource::ImagingStudy, Permissions::DELETE),
            Action::ReadAudit => (Resource::AuditEvent, Permissions::READ),
            Action::ReadConsent => (Resource::Consent, Permissions::READ),
            Action::SearchConsent => (Resource::Consent, Permissions::SEARCH),
            Action::WriteConsent => (Resource::Consent, Permissions::UPDATE),
            Action::Export => (Resource::ImagingStudy, Permissions::READ),
            Action::ReadCareTeam => (Resource::CareTeam, Permissions::READ),
            Action::WriteCareTeam => (Resource::CareTeam, Permissions::UPDATE),
        }
    }
}

/// Which patients' data an allowed action reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compartment {
    /// Every patient's.
    All,
    /// This patient's only.
    Patient(PatientRef),
}

/// A clinician's break-glass access: the reason given, kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    /// Why (as the clinician wrote it; may name the patient, so it is kept encrypted).
    pub reason: String,
}

/// Longest break-glass reason (bytes).
pub const MAX_REASON: usize = 512;

/// An allowed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Whose data it reaches.
    pub compartment: Compartment,
    /// Set when the access was widened by breaking the glass: the audit trail flags it.
    pub break_glass: Option<BreakGlass>,
}

/// Why an action is refused to a verified principal (HTTP 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No scope of the token grants the action.
    #[error("no scope of the token grants this")]
    Scope,
    /// The token's roles do not permit the action.
    #[error("the token's roles do not permit this")]
    Role,
    /// A `patient/` scope without a `patient` claim.
    #[error("a patient scope without a patient claim")]
    NoPatient,
    /// Break-glass asked without a reason (or with one that is too long or not text).
    #[error("break-glass access needs a reason")]
    BreakGlassWithoutReason,
    /// Break-glass asked by someone who is not a clinician, or for something other than
    /// reading.
    #[error("break-glass is for clinicians reading images")]
    BreakGlassNotAllowed,
}

/// A caller whose token verified: subject, client, roles, scopes and patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The issuer (`iss`).
    pub issuer: String,
    /// The subject (`sub`): the user or service.
    pub subject: String,
    /// The client application (`client_id`, else `azp`).
    pub client: Option<String>,
    /// The roles the gateway knows (others are dropped).
    pub roles: Vec<Role>,
    /// The SMART scopes.
    pub scopes: Scopes,
    /// The `patient` claim.
    pub patient: Option<PatientRef>,
    /// The user's display name (the OpenID `name` claim), for the audit trail and the
    /// patient's access log ("Dr A. Smith viewed…"); never used to decide anything.
    pub name: Option<String>,
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Decides `action`. A principal with roles needs one that permits it; the scopes must
    /// grant it: a `user/` or `system/` scope reaches every patient, a `patient/` scope only
    /// the `patient` claim's. `break_glass` is the reason a clinician gave to read outside
    /// their patient compartment: it widens a read or search to every patient (flagged in
    /// the grant for the audit trail) and never grants anything else.
    pub fn decide(&self, action: Action, break_glass: Option<&str>) -> Result<Grant, Denied> {
        let permitted = self.roles.iter().any(|r| r.permits(action));
        if (!self.roles.is_empty() || action == Action::Export) && !permitted {
            return Err(Denied::Role);
        }
        let (resource, wanted) = action.wants();
        let wide = self.scopes.grant(Context::User, &resource, wanted)
            || self.scopes.grant(Context::System, &resource, wanted);
        // An export reaches every patient, and care teams are the EHR's: never by a
        // patient's scope.
        let narrow = !matches!(
            action,
            Action::Export | Action::ReadCareTeam | Action::WriteCareTeam
        ) && self.scopes.grant(Context::Patient, &resource, wanted);
        let normal = if wide {
            Ok(Compartment::All)
        } else if narrow {
            self.patient
                .clone()
                .map(Compartment::Patient)
                .ok_or(Denied::NoPatient)
        } else {
            Err(Denied::Scope)
        };
        let Some(reason) = break_glass else {
            return normal.map(|compartment| Grant {
                compartment,
                break_glass: None,
            });
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(Denied::BreakGlassWithoutReason);
        }
        if !self.has(Role::Clinician) || !matches!(action, Action::Read | Action::Search) {
            return Err(Denied::BreakGlassNotAllowed);
        }
        match normal {
            // Nothing to widen: an ordinary access.
            Ok(Compartment::All) => Ok(Grant {
                compartment: Compartment::All,
                break_glass: None,
            }),
            // Break-glass widens the compartment of a read the scopes grant; a clinician
            // with no read scope at all gets none.
            Ok(Compartment::Patient(_)) | Err(Denied::NoPatient) => Ok(Grant {
                compartment: Compartment::All,
                break_glass: Some(BreakGlass {
                    reason: reason.to_string(),
                }),
            }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &str, roles: &[Role], patient: Option<&str>) -> Principal {
        Principal {
            issuer: "https://issuer.example".into(),
            subject: "u1".into(),
            client: None,
            roles: roles.to_vec(),
            scopes: Scopes::parse(scopes.split(' ')),
            patient: patient.and_then(|p| PatientRef::new(p, "")),
            name: None,
        }
    }

    #[test]
    fn patient_scope_sees_only_its_patient() {
        let p = principal("patient/ImagingStudy.rs", &[], Some("PID-1"));
        let g = p.decide(Action::Read, None).unwrap();
        assert_eq!(
            g.compartment,
            Compartment::Patient(PatientRef::new("PID-1", "").unwrap())
        );
        assert_eq!(
            p.decide(Action::Search, None).unwrap().compartment,
            g.compartment
        );
        assert_eq!(p.decide(Action::Store, None), Err(Denied::Scope));
        assert_eq!(p.decide(Action::Delete, None), Err(Denied::Scope));
        // Without the patient claim, a patient scope reaches nobody.
        let p = principal("patient/ImagingStudy.rs", &[], None);
        assert_eq!(p.decide(Action::Read, None), Err(Denied::NoPatient));
    }

    #[test]
    fn staff_and_services_reach_every_patient() {
        let p = principal("user/ImagingStudy.cruds", &[Role::Admin], None);
        for a in [Action::Read, Action::Search, Action::Store, Action::Delete] {
            assert_eq!(p.decide(a, None).unwrap().compartment, Compartment::All);
        }
        let c = principal("user/ImagingStudy.cruds", &[Role::Clinician], None);
        assert_eq!(c.decide(Action::Delete, None), Err(Denied::Role));
        let s = principal("system/*.rs", &[], None);
        assert_eq!(
            s.decide(Action::Read, None).unwrap().compartment,
            Compartment::All
        );
        assert_eq!(s.decide(Action::Store, None), Err(Denied::Scope));
    }

    #[test]
    fn researchers_and_auditors_have_no_identified_access() {
        for role in [Role::Researcher, Role::Auditor] {
            let p = principal("user/*.cruds", &[role], None);
            for a in [Action::Read, Action::Search, Action::Store, Action::Delete] {
                assert_eq!(p.decide(a, None), Err(Denied::Role), "{role:?} {a:?}");
            }
        }
        let a = principal("user/AuditEvent.rs", &[Role::Auditor], None);
        assert!(a.decide(Action::ReadAudit, None).is_ok());
    }

    #[test]
    fn care_teams_are_written_by_admins_and_services_never_by_patients_or_clinicians() {
        let a = principal("user/CareTeam.ru", &[Role::Admin], None);
        for act in [Action::ReadCareTeam, Action::WriteCareTeam] {
            assert_eq!(a.decide(act, None).unwrap().compartment, Compartment::All);
        }
        let ehr = principal("system/CareTeam.u", &[], None);
        assert!(ehr.decide(Action::WriteCareTeam, None).is_ok());
        assert_eq!(ehr.decide(Action::ReadCareTeam, None), Err(Denied::Scope));
        for role in [
            Role::Clinician,
            Role::PrivacyOfficer,
            Role::Auditor,
            Role::Researcher,
        ] {
            let p = principal("user/*.cruds", &[role], None);
            assert_eq!(
                p.decide(Action::WriteCareTeam, None),
                Err(Denied::Role),
                "{role:?}"
            );
        }
        let p = principal("patient/*.cruds", &[], Some("PID-1"));
        assert_eq!(p.decide(Action::WriteCareTeam, None), Err(Denied::Scope));
    }

    #[test]
    fn exports_are_the_privacy_officers_and_admins_with_a_wide_image_scope() {
        for role in [Role::PrivacyOfficer, Role::Admin] {
            let p = principal("user/ImagingStudy.rs", &[role], None);
            assert_eq!(
                p.decide(Action::Export, None).unwrap().compartment,
                Compartment::All
            );
            // Without an image scope, no export.
            let p = principal("user/Consent.rus", &[role], None);
            assert_eq!(p.decide(Action::Export, None), Err(Denied::Scope));
        }
        for role in [Role::Clinician, Role::Researcher, Role::Auditor] {
            let p = principal("user/*.cruds", &[role], None);
            assert_eq!(
                p.decide(Action::Export, None),
                Err(Denied::Role),
                "{role:?}"
            );
        }
        // No roles: a service's wide scope is not enough, and a patient never exports.
        let p = principal("system/ImagingStudy.rs", &[], None);
        assert_eq!(p.decide(Action::Export, None), Err(Denied::Role));
        let p = principal("patient/ImagingStudy.rs", &[Role::Admin], Some("PID-1"));
        assert_eq!(p.decide(Action::Export, None), Err(Denied::Scope));
        // Break-glass never widens to an export.
        let p = principal("user/ImagingStudy.rs", &[Role::PrivacyOfficer], None);
        assert_eq!(
            p.decide(Action::Export, Some("urgent")),
            Err(Denied::BreakGlassNotAllowed)
        );
    }

    #[test]
    fn consents_are_the_patients_own_the_privacy_officers_and_admins() {
        let consent = [
            Action::ReadConsent,
            Action::SearchConsent,
            Action::WriteConsent,
        ];
        let p = principal("patient/Consent.rus", &[], Some("PID-1"));
        for a in consent {
            assert_eq!(
                p.decide(a, None).unwrap().compartment,
                Compartment::Patient(PatientRef::new("PID-1", "").unwrap())
            );
        }
        // An image scope is no consent scope.
        let p = principal("patient/ImagingStudy.rs", &[], Some("PID-1"));
        assert_eq!(p.decide(Action::ReadConsent, None), Err(Denied::Scope));
        let o = principal("user/Consent.rus", &[Role::PrivacyOfficer], None);
        for a in consent {
            assert_eq!(o.decide(a, None).unwrap().compartment, Compartment::All);
        }
        // A privacy officer sees no images, and no audit trail.
        let o = principal("user/*.cruds", &[Role::PrivacyOfficer], None);
        for a in [
            Action::Read,
            Action::Search,
            Action::Store,
            Action::Delete,
            Action::ReadAudit,
        ] {
            assert_eq!(o.decide(a, None), Err(Denied::Role), "{a:?}");
        }
        let admin = principal("user/Consent.rus", &[Role::Admin], None);
        assert!(admin.decide(Action::WriteConsent, None).is_ok());
        for role in [Role::Clinician, Role::Researcher, Role::Auditor] {
            let p = principal("user/*.cruds", &[role], None);
            for a in consent {
                assert_eq!(p.decide(a, None), Err(Denied::Role), "{role:?} {a:?}");
            }
            // Break-glass opens no consent.
            assert!(p.decide(Action::ReadConsent, Some("why")).is_err());
        }
        assert_eq!(
            Role::from_name("privacy-officer"),
            Some(Role::PrivacyOfficer)
        );
        assert_eq!(Role::PrivacyOfficer.name(), "privacy-officer");
    }

    #[test]
    fn break_glass_needs_a_clinician_and_a_reason() {
        let c = principal("patient/ImagingStudy.rs", &[Role::Clinician], Some("PID-1"));
        // Without break-glass: their patient only.
        assert!(matches!(
            c.decide(Action::Read, None).unwrap().compartment,
            Compartment::Patient(_)
        ));
        // Break-glass without a reason is refused.
        for empty in ["", "   ", "\u{7}"] {
            assert_eq!(
                c.decide(Action::Read, Some(empty)),
                Err(Denied::BreakGlassWithoutReason)
            );
        }
        assert_eq!(
            c.decide(Action::Read, Some(&"x".repeat(MAX_REASON + 1))),
            Err(Denied::BreakGlassWithoutReason)
        );
        // With one: every patient, flagged.
        let g = c
            .decide(Action::Read, Some("emergency: unconscious"))
            .unwrap();
        assert_eq!(g.compartment, Compartment::All);
        assert_eq!(g.break_glass.unwrap().reason, "emergency: unconscious");
        // Never for writing, never for others.
        assert_eq!(c.decide(Action::Delete, Some("why")), Err(Denied::Role));
        assert_eq!(
            c.decide(Action::Store, Some("why")),
            Err(Denied::BreakGlassNotAllowed)
        );
        let p = principal("patient/ImagingStudy.rs", &[], Some("PID-1"));
        assert_eq!(
            p.decide(Action::Read, Some("why")),
            Err(Denied::BreakGlassNotAllowed)
        );
        // A clinician without any read scope gets nothing by breaking the glass.
        let none = principal("openid", &[Role::Clinician], None);
        assert_eq!(none.decide(Action::Read, Some("why")), Err(Denied::Scope));
    }

    #[test]
    fn patient_ref_is_bounded_and_redacted() {
        assert!(PatientRef::new("", "").is_none());
        assert!(PatientRef::new(&"9".repeat(65), "").is_none());
        assert!(PatientRef::new("A\\B", "").is_none());
        let p = PatientRef::new(" PID-7 ", "HOSP").unwrap();
        assert_eq!((p.id(), p.issuer()), ("PID-7", "HOSP"));
        assert!(!format!("{p:?}").contains("PID"));
    }
}
