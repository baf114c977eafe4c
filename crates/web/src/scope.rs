//! What a request may see: everything, one patient's studies, or one study (a share link).
//! Access control decides it from the token or the session; every route that reads or
//! lists asks it, so that a study outside the scope reads exactly as a study that does not
//! exist.

use radveil_store::{Handle, Row};

/// The part of the store a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every study (staff, services, and the loopback-only server without access control).
    All,
    /// Only the studies of this patient (the handle of Patient ID with its issuer).
    Patient(Handle),
    /// Only this one study of this patient (someone holding a patient's share link).
    Study {
        /// The study's patient.
        patient: Handle,
        /// The study.
        study: Handle,
    },
}

impl Scope {
    /// Whether every study of `patient` is visible. A one-study scope sees no patient as a
    /// whole: a place that knows only the patient answers "not found" to it (fail closed);
    /// places that know the study ask [`Scope::sees_study`].
    pub fn sees(&self, patient: &Handle) -> bool {
        match self {
            Scope::All => true,
            Scope::Patient(p) => p == patient,
            Scope::Study { .. } => false,
        }
    }

    /// Whether the study `study` of `patient` is visible.
    pub fn sees_study(&self, patient: &Handle, study: &Handle) -> bool {
        match self {
            Scope::Study {
                patient: p,
                study: s,
            } => p == patient && s == study,
            _ => self.sees(patient),
        }
    }

    /// Whether the instance of index row `r` is visible.
    pub fn sees_row(&self, r: &Row) -> bool {
        self.sees_study(&r.patient, &r.study)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_study_scope_sees_that_study_only() {
        let (p, q) = (Handle([1; 32]), Handle([2; 32]));
        let (s, t) = (Handle([3; 32]), Handle([4; 32]));
        let one = Scope::Study {
            patient: p,
            study: s,
        };
        assert!(one.sees_study(&p, &s));
        assert!(!one.sees_study(&p, &t), "another study of the same patient");
        assert!(
            !one.sees_study(&q, &s),
            "the study handle under another patient"
        );
        assert!(!one.sees(&p), "never the patient as a whole");
        assert!(Scope::Patient(p).sees_study(&p, &t));
        assert!(!Scope::Patient(q).sees_study(&p, &s));
        assert!(Scope::All.sees_study(&q, &t));
    }
}
