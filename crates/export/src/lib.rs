//! `radveil-export`: consent-checked research exports from the gateway's encrypted store,
//! with lineage (issue 15, item 3).
//!
//! An export ([`run::export`]) selects studies of the store by a [`query::Query`] over the
//! attributes its sealed index rows hold, decides per patient and study at export time
//! whether the patient's consent allows the purpose ([`ConsentCheck`], which
//! `radveil_consent::Consents` implements), and de-identifies every allowed instance
//! through the pipeline's [`Run`](radveil_pipeline::Run): instances are opened (decrypted)
//! into memory under the run's memory budget, and only de-identified bytes reach the disk,
//! below the output folder through the pipeline's output writer (optionally sealed to the
//! recipients first). Patients left out are counted, never named. Each exported instance
//! is recorded in the [`lineage::Lineage`] (which consent version allowed it, its
//! de-identified UIDs), and each patient's inclusion is an audit event (action Export) in
//! the gateway's audit trail, which the patient's access log shows in words.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod lineage;
pub mod query;
pub mod recipe;
pub mod run;
pub mod select;
mod volume;

use serde::{Deserialize, Serialize};

pub use radveil_consent::{Decision, Purpose};

/// Decides whether a patient's image may be used for a purpose, at export time.
pub trait ConsentCheck: Sync {
    /// The decision for an image of `patient` (the store's patient handle) taken on
    /// `study_date` (DICOM DA, or `None` when unknown), and whether a refusal is one the
    /// patient recorded (a withdrawal or a "no") rather than the site's default.
    fn decide(
        &self,
        patient: &radveil_store::Handle,
        purpose: Purpose,
        study_date: Option<&str>,
    ) -> Result<Decision, String>;
}

impl ConsentCheck for radveil_consent::Consents {
    fn decide(
        &self,
        patient: &radveil_store::Handle,
        purpose: Purpose,
        study_date: Option<&str>,
    ) -> Result<Decision, String> {
        radveil_consent::Consents::decide(self, patient, purpose, study_date)
            .map_err(|e| e.to_string())
    }
}

/// What an export took and what it left out. Counts only: no patient is named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Patients with at least one instance exported.
    pub patients: u64,
    /// Studies with at least one instance exported.
    pub studies: u64,
    /// Instances exported (written).
    pub instances: u64,
    /// Patients matched but left out because they never consented (the site's default,
    /// opt-in, decided).
    pub left_out_no_consent: u64,
    /// Patients matched but left out because they withdrew (or refused) consent.
    pub left_out_withdrawn: u64,
    /// Studies left out for consent (a data period may allow some of a patient's studies).
    pub studies_left_out: u64,
    /// Instances held back by de-identification (possible burned-in text, a face that
    /// could not be removed).
    pub held_back: u64,
    /// Instances that failed (unreadable, not DICOM, too large for the memory budget, not
    /// writable) or whose index row did not open.
    pub failed: u64,
}

/// The purpose in plain words, for people: "research", "AI training", "commercial".
pub fn purpose_words(p: Purpose) -> &'static str {
    match p {
        Purpose::Research => "research",
        Purpose::AiTraining => "AI training",
        Purpose::Commercial => "commercial",
    }
}

#[cfg(test)]
mod tests;
