//! The patient's side of the gateway: the portal pages under `/portal`, the viewer under
//! `/viewer`, consent (`/fhir/Consent`), and the downloads a patient may take. What these
//! parts share lives in [`PortalState`], one field of [`crate::AppState`]; each part is
//! `None` (and its routes answer 404) when `radveil serve` was not given what it needs.

/// What the patient's side shares between requests. Every field is optional, so tests of
/// other parts of the gateway build it with `Default::default()`.
#[derive(Debug, Clone, Default)]
pub struct PortalState {
    /// Patients' consents (`DATA/consent.db`), read and written by `/fhir/Consent` and the
    /// portal; `None`: none kept (those routes answer 404).
    pub consents: Option<std::sync::Arc<radveil_consent::Consents>>,
}
