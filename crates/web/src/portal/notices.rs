//! Withdrawal notices: when a patient withdraws consent for a purpose (in the portal or by
//! `PUT /fhir/Consent`), every research export of that purpose that holds their images gets
//! a notice listing the de-identified UIDs its recipient must delete
//! ([`radveil_export::lineage::Lineage::notices_for`]: no identity in it), written as JSON
//! to `DATA/notices/` (0600 files, never over another) for the privacy office to send.
//! The consent change is recorded before this runs: a notice that cannot be written is
//! logged as an error (and `radveil lineage --withdrawal-notices` makes them again), not a
//! reason to undo the patient's choice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use radveil_consent::Change;
use radveil_export::lineage::{Lineage, Notice};
use radveil_store::Handle;

use crate::app::AppState;

/// Most notices the privacy officer's page lists.
pub const MAX_LISTED: usize = 200;

/// The lineage of the data folder and where notices go.
pub struct Notices {
    lineage: Mutex<Lineage>,
    dir: PathBuf,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").field("dir", &self.dir).finish()
    }
}

impl Notices {
    /// Notices from `lineage`, written below `dir` (made 0700 when missing).
    pub fn new(lineage: Lineage, dir: PathBuf) -> Notices {
        Notices {
            lineage: Mutex::new(lineage),
            dir,
        }
    }

    /// The folder notices are written to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The exports holding `patient`'s images (the privacy officer's page).
    pub fn holdings(
        &self,
        patient: &Handle,
    ) -> Result<Vec<radveil_export::lineage::Holding>, String> {
        let lineage = self.lineage.lock().map_err(|_| "lineage lock poisoned")?;
        lineage.exports_of(patient).map_err(|e| e.to_string())
    }

    /// The notices written so far (file name, notice), newest file first; at most
    /// [`MAX_LISTED`], each read only when a regular file of at most 4 MiB.
    pub fn written(&self) -> Vec<(String, Notice)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, String, Notice)> = Vec::new();
        for entry in dir.flatten().take(MAX_LISTED * 4) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("withdrawal-") || !name.ends_with(".json") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || meta.len() > 4 << 20 {
                continue;
            }
            let Ok(bytes) = radveil_pipeline::input::read_regular(&entry.path(), 4 << 20) else {
                continue;
            };
            if let Ok(n) = serde_json::from_slice::<Notice>(&bytes) {
                found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), name, n));
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.truncate(MAX_LISTED);
        found.into_iter().map(|(_, f, n)| (f, n)).collect()
    }

    /// Writes the notices `patient`'s withdrawal calls for; gives them.
    pub fn write_for(&self, patient: &Handle, change: &Change) -> Result<Vec<Notice>, String> {
        let notices = {
            let lineage = self.lineage.lock().map_err(|_| "lineage lock poisoned")?;
            lineage
                .notices_for(patient, &change.withdrawn)
                .map_err(|e| e.to_string())?
        };
        if notices.is_empty() {
            return Ok(notices);
        }
        let out = radveil_pipeline::Dir::create(&self.dir).map_err(|e| e.to_string())?;
        for n in &notices {
            let mut r = [0u8; 4];
            getrandom::getrandom(&mut r).map_err(|_| "no random numbers")?;
            let name = format!("withdrawal-{}-{}.json", n.export, Handle::hex_of(&r));
            let json = serde_json::to_vec_pretty(n).map_err(|e| e.to_string())?;
            out.write_bytes_at(std::path::Path::new(&name), &json)
                .map_err(|e| e.to_string())?;
        }
        Ok(notices)
    }
}

/// After `change` withdrew some purpose for `patient`: the notices, written off the
/// runtime's threads; failures logged (never with an identifying value).
pub async fn after_withdrawal(state: &AppState, patient: &Handle, change: &Change) {
    let Some(notices) = state.portal.notices.clone() else {
        return;
    };
    let (patient, change) = (*patient, change.clone());
    let done = tokio::task::spawn_blocking(move || notices.write_for(&patient, &change)).await;
    match done {
        Ok(Ok(n)) if !n.is_empty() => {
            tracing::info!(notices = n.len(), "withdrawal notices written")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "withdrawal notices could not be written"),
        Err(_) => tracing::error!("withdrawal notices could not be written"),
    }
}

/// Unused in builds without the lineage; keeps the type's `Arc` form in one place.
pub type Shared = Arc<Notices>;
