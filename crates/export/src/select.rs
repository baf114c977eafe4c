//! The studies of the store a query selects, read from the sealed index rows (one pass over
//! the index, each study's key looked up once; rows of studies that do not match are
//! dropped as the pass goes, so memory follows what is selected, not the store's size).

use radveil_standard::tags;
use radveil_store::{Handle, Row, Store, StoreError};

use crate::query::{attrs_of_meta, Query, StudyAttrs};

/// One selected study: its handles, the attributes matched (identifying: memory only), and
/// the index rows of its instances (their sealed attributes dropped).
#[derive(Debug, Clone)]
pub struct Study {
    /// The study's handle.
    pub handle: Handle,
    /// Its patient's handle (the store's, as consent and lineage key it).
    pub patient: Handle,
    /// Study-level attributes, with ModalitiesInStudy and BodyPartExamined gathered.
    pub attrs: StudyAttrs,
    /// Its instances' index rows, in the store's order.
    pub rows: Vec<Row>,
    /// The Modality of each row's series (empty when absent), in the rows' order.
    pub modality: Vec<String>,
}

impl Study {
    /// Patient ID (empty when absent).
    pub fn patient_id(&self) -> &str {
        self.attrs.first(tags::PATIENT_ID).unwrap_or("")
    }

    /// Issuer of Patient ID, when present.
    pub fn issuer(&self) -> Option<&str> {
        self.attrs.first(tags::ISSUER_OF_PATIENT_ID)
    }

    /// Study Date (DA), when present and eight digits.
    pub fn date(&self) -> Option<&str> {
        self.attrs
            .first(tags::STUDY_DATE)
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// What the selection found.
#[derive(Debug, Default)]
pub struct Selected {
    /// The studies that match, grouped by patient (a patient's studies adjacent).
    pub studies: Vec<Study>,
    /// Index rows whose sealed attributes did not open (altered, or keys gone): never
    /// exported, counted as failures.
    pub unreadable: u64,
}

/// Attributes read from every row of a study into the study's (the rest from its first).
const GATHERED: [(u32, u32); 2] = [
    (tags::MODALITY, tags::MODALITIES_IN_STUDY),
    (tags::BODY_PART_EXAMINED, tags::BODY_PART_EXAMINED),
];

struct Walk {
    query: Query,
    current: Option<Study>,
    out: Selected,
}

impl Walk {
    fn close(&mut self) {
        if let Some(s) = self.current.take() {
            if self.query.matches(&s.attrs) {
                self.out.studies.push(s);
            }
        }
    }

    fn row(&mut self, r: &Row, meta: Result<Vec<u8>, StoreError>) {
        let Some(json) = meta
            .ok()
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
        else {
            self.out.unreadable = self.out.unreadable.saturating_add(1);
            return;
        };
        if self.current.as_ref().is_none_or(|s| s.handle != r.study) {
            self.close();
            self.current = Some(Study {
                handle: r.study,
                patient: r.patient,
                attrs: StudyAttrs::default(),
                rows: Vec::new(),
                modality: Vec::new(),
            });
        }
        let Some(study) = self.current.as_mut() else {
            return;
        };
        let first = study.rows.is_empty();
        let mut modality = String::new();
        for (tag, values) in attrs_of_meta(&json) {
            if tag == tags::MODALITY {
                modality = values.first().cloned().unwrap_or_default();
            }
            if let Some(&(_, into)) = GATHERED.iter().find(|(t, _)| *t == tag) {
                study.attrs.add(into, values);
            } else if first {
                study.attrs.set(tag, values);
            }
        }
        let mut row = r.clone();
        row.meta = Vec::new();
        study.rows.push(row);
        study.modality.push(modality);
    }
}

/// The studies of `store` that match `query` (run on `runtime`: the store's reads are
/// blocking tasks of it). Read-only: nothing in the store changes, and a gateway serving
/// the same data folder goes on (SQLite's write-ahead log lets readers and a writer be).
pub fn studies(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    query: &Query,
) -> Result<Selected, StoreError> {
    let walk = Walk {
        query: query.clone(),
        current: None,
        out: Selected::default(),
    };
    let mut walk = runtime.block_on(store.for_each_meta(walk, |w, r, meta| w.row(r, meta)))?;
    walk.close();
    let mut out = walk.out;
    // A patient's studies adjacent (the index walks by study).
    out.studies.sort_by_key(|s| (s.patient, s.handle));
    Ok(out)
}
