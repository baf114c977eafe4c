//! SMART App Launch v2 scopes (`context/resource.permissions`, e.g.
//! `patient/ImagingStudy.rs`), parsed into a typed set. SMART v1 forms (`.read`, `.write`,
//! `.*`) are read as their v2 equivalents. Scopes that are not resource scopes (`openid`,
//! `launch/patient`, `offline_access`…) are kept aside and grant nothing here.

/// Whose data a scope reaches (SMART v2 §"Scopes for requesting clinical data").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: only the data of the patient named by the token's `patient` claim.
    Patient,
    /// `user/`: what the user may see (every patient here; roles restrict further).
    User,
    /// `system/`: a backend service, no user.
    System,
}

/// The FHIR resource type a scope names, as far as the gateway cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `ImagingStudy`: the images and their metadata.
    ImagingStudy,
    /// `AuditEvent`: the audit trail.
    AuditEvent,
    /// `Consent`: patients' consent to research, AI training and commercial use.
    Consent,
    /// `CareTeam`: who treats a patient, as the EHR records it.
    CareTeam,
    /// `*`: every resource type.
    Any,
    /// Another resource type (grants nothing here).
    Other(String),
}

/// The SMART v2 permissions `c`, `r`, `u`, `d`, `s` as a small set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// `c`: create (STOW-RS).
    pub const CREATE: Permissions = Permissions(1);
    /// `r`: read (WADO-RS).
    pub const READ: Permissions = Permissions(2);
    /// `u`: update.
    pub const UPDATE: Permissions = Permissions(4);
    /// `d`: delete.
    pub const DELETE: Permissions = Permissions(8);
    /// `s`: search (QIDO-RS).
    pub const SEARCH: Permissions = Permissions(16);

    /// Whether every permission of `other` is in `self`.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    pub fn with(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// SMART v2 permission letters, which must appear at most once each and in the order
    /// `c r u d s`.
    fn parse_v2(text: &str) -> Option<Permissions> {
        let order = [
            (b'c', Self::CREATE),
            (b'r', Self::READ),
            (b'u', Self::UPDATE),
            (b'd', Self::DELETE),
            (b's', Self::SEARCH),
        ];
        let mut next = 0;
        let mut p = Permissions(0);
        for b in text.bytes() {
            let i = order[next..].iter().position(|(c, _)| *c == b)? + next;
            p = p.with(order[i].1);
            next = i + 1;
        }
        (p.0 != 0).then_some(p)
    }
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmartScope {
    /// `patient`, `user` or `system`.
    pub context: Context,
    /// The resource type.
    pub resource: Resource,
    /// What it permits.
    pub permissions: Permissions,
    /// Whether it was narrowed by a query (`?category=…`). The gateway does not evaluate
    /// such filters, so a narrowed scope grants nothing (refusing is the safe reading).
    pub narrowed: bool,
}

/// Why a scope string is not a resource scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not of the form `context/resource.permissions`.
    #[error("not a resource scope")]
    NotResourceScope,
    /// An unknown context (not `patient`, `user` or `system`).
    #[error("unknown context")]
    Context,
    /// Permissions that are neither SMART v2 letters in order nor `read`/`write`/`*`.
    #[error("invalid permissions")]
    Permissions,
    /// Longer than any sensible scope.
    #[error("too long")]
    TooLong,
}

/// Longest scope accepted (bytes).
const MAX_SCOPE: usize = 256;

impl SmartScope {
    /// Parses one scope.
    pub fn parse(text: &str) -> Result<SmartScope, ScopeError> {
        if text.len() > MAX_SCOPE {
            return Err(ScopeError::TooLong);
        }
        let (context, rest) = text.split_once('/').ok_or(ScopeError::NotResourceScope)?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            // `launch/patient` and the like are not resource scopes.
            "launch" => return Err(ScopeError::NotResourceScope),
            _ => return Err(ScopeError::Context),
        };
        let (rest, narrowed) = match rest.split_once('?') {
            Some((r, _query)) => (r, true),
            None => (rest, false),
        };
        let (resource, perms) = rest.split_once('.').ok_or(ScopeError::NotResourceScope)?;
        if resource.is_empty()
            || !resource
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'*')
        {
            return Err(ScopeError::NotResourceScope);
        }
        let resource = match resource {
            "ImagingStudy" => Resource::ImagingStudy,
            "AuditEvent" => Resource::AuditEvent,
            "Consent" => Resource::Consent,
            "CareTeam" => Resource::CareTeam,
            "*" => Resource::Any,
            other => Resource::Other(other.to_string()),
        };
        let all = Permissions::CREATE
            .with(Permissions::READ)
            .with(Permissions::UPDATE)
            .with(Permissions::DELETE)
            .with(Permissions::SEARCH);
        let permissions = match perms {
            // SMART v1.
            "read" => Permissions::READ.with(Permissions::SEARCH),
            "write" => Permissions::CREATE
                .with(Permissions::UPDATE)
                .with(Permissions::DELETE),
            "*" => all,
            v2 => Permissions::parse_v2(v2).ok_or(ScopeError::Permissions)?,
        };
        Ok(SmartScope {
            context,
            resource,
            permissions,
            narrowed,
        })
    }

    /// Whether this scope grants `wanted` on `resource` (an unnarrowed scope naming that
    /// resource or `*`).
    pub fn grants(&self, resource: &Resource, wanted: Permissions) -> bool {
        !self.narrowed
            && (self.resource == Resource::Any || &self.resource == resource)
            && self.permissions.contains(wanted)
    }
}

/// The scopes of a token: its resource scopes, and how many others it carried (`openid`,
/// `launch/patient`, or ones that did not parse: these grant nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    /// The resource scopes.
    pub resource: Vec<SmartScope>,
    /// How many scopes were not resource scopes.
    pub other: usize,
}

/// Most scopes read from one token.
const MAX_SCOPES: usize = 64;

impl Scopes {
    /// Parses scopes given one by one (a `scope` claim split on spaces, or an `scp` array).
    /// Beyond [`MAX_SCOPES`] the rest are counted as `other` and grant nothing.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut out = Scopes::default();
        for s in items.into_iter().filter(|s| !s.is_empty()) {
            match SmartScope::parse(s) {
                Ok(scope) if out.resource.len() < MAX_SCOPES => out.resource.push(scope),
                _ => out.other += 1,
            }
        }
        out
    }

    /// The scopes of `context` that grant `wanted` on `resource`.
    pub fn grant(&self, context: Context, resource: &Resource, wanted: Permissions) -> bool {
        self.resource
            .iter()
            .any(|s| s.context == context && s.grants(resource, wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing() {
        let s = SmartScope::parse("patient/ImagingStudy.rs").unwrap();
        assert_eq!(s.context, Context::Patient);
        assert_eq!(s.resource, Resource::ImagingStudy);
        assert!(s
            .permissions
            .contains(Permissions::READ.with(Permissions::SEARCH)));
        assert!(!s.permissions.contains(Permissions::CREATE));
        let s = SmartScope::parse("user/ImagingStudy.cruds").unwrap();
        assert!(s.grants(&Resource::ImagingStudy, Permissions::DELETE));
        let s = SmartScope::parse("system/*.rs").unwrap();
        assert_eq!(s.context, Context::System);
        assert!(s.grants(&Resource::ImagingStudy, Permissions::READ));
        assert!(!s.grants(&Resource::ImagingStudy, Permissions::CREATE));
        // SMART v1.
        let s = SmartScope::parse("user/ImagingStudy.read").unwrap();
        assert!(s.grants(&Resource::ImagingStudy, Permissions::SEARCH));
        let s = SmartScope::parse("user/*.write").unwrap();
        assert!(s.grants(&Resource::ImagingStudy, Permissions::CREATE));
        assert!(!s.grants(&Resource::ImagingStudy, Permissions::READ));
        // Letters out of order, repeated or unknown; unknown contexts; not resource scopes.
        for bad in [
            "user/ImagingStudy.sr",
            "user/ImagingStudy.rr",
            "user/ImagingStudy.rx",
            "user/ImagingStudy.",
            "admin/ImagingStudy.rs",
        ] {
            assert!(SmartScope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SmartScope::parse("launch/patient"),
            Err(ScopeError::NotResourceScope)
        );
        // A narrowed scope grants nothing.
        let s = SmartScope::parse("patient/ImagingStudy.rs?modality=CT").unwrap();
        assert!(s.narrowed);
        assert!(!s.grants(&Resource::ImagingStudy, Permissions::READ));
        // Another resource grants nothing on ImagingStudy.
        let s = SmartScope::parse("patient/Observation.rs").unwrap();
        assert!(!s.grants(&Resource::ImagingStudy, Permissions::READ));
        let set =
            Scopes::parse("openid fhirUser patient/ImagingStudy.rs  launch/patient".split(' '));
        assert_eq!(set.resource.len(), 1);
        assert_eq!(set.other, 3);
        assert!(set.grant(Context::Patient, &Resource::ImagingStudy, Permissions::READ));
        assert!(!set.grant(Context::User, &Resource::ImagingStudy, Permissions::READ));
        let s = SmartScope::parse("patient/Consent.ru").unwrap();
        assert_eq!(s.resource, Resource::Consent);
        assert!(s.grants(&Resource::Consent, Permissions::UPDATE));
        assert!(!s.grants(&Resource::ImagingStudy, Permissions::READ));
    }
}
