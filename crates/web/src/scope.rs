//! What a request may see: everything, or one patient's studies. Access control decides
//! it from the token; every route that reads or lists asks it, so that a patient's token
//! sees another patient's study exactly as it sees a study that does not exist.

use radveil_store::Handle;

/// The part of the store a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every study (staff, services, and the loopback-only server without access control).
    All,
    /// Only the studies of this patient (the handle of Patient ID with its issuer).
    Patient(Handle),
}

impl Scope {
    /// Whether a study of `patient` is visible.
    pub fn sees(&self, patient: &Handle) -> bool {
        match self {
            Scope::All => true,
            Scope::Patient(p) => p == patient,
        }
    }
}
