//! `radveil-consent`: a patient's consent to the secondary use of their images — research,
//! AI training, commercial use — recorded, versioned, sealed at rest and decided per patient
//! when a dataset is exported.
//!
//! - **Versioned.** A patient's consent is a list of versions; each change appends one
//!   ([`Consents::record`], [`Consents::update`], [`Consents::withdraw_all`]), nothing is
//!   overwritten, and every earlier version can be read back ([`Consents::history`]): an
//!   export records the version it was decided under, and that version must stay readable.
//! - **Site defaults.** For each [`Purpose`] the site chooses [`Policy::OptIn`] (denied
//!   unless the patient consented) or [`Policy::OptOut`] (permitted unless the patient
//!   withdrew); [`Defaults`] (opt-in for all three unless the site says otherwise).
//! - **Data periods.** A choice may speak only for images whose study date lies in a period
//!   (FHIR `provision.dataPeriod`); other images fall back to the consent's base rule or the
//!   site default ([`Consent::permits`]).
//! - **Sealed at rest.** `DATA/consent.db` (SQLite) holds one row per version, keyed by the
//!   patient's store handle (a keyed blind index, not the Patient ID) and the version number;
//!   the version itself is sealed with AES-256-GCM under the consent key
//!   (`DATA/keys/consent-key`) with the handle and the version as associated data, so a row
//!   moved to another patient or another version does not open. Logical ids of FHIR
//!   resources are kept only as keyed hashes. Nothing identifying is stored in plaintext.
//! - **FHIR R4.** [`fhir`] writes a version as a `Consent` resource and parses one strictly.
//!
//! [`careteam`] keeps the patients' care teams as the EHR records them (FHIR `CareTeam`),
//! sealed the same way, so that access by a clinician on none of them can be marked.
//!
//! [`Consents::decide`] is what exports call for every patient: the current version of each
//! patient is cached (invalidated when another process writes the database), so deciding
//! for thousands of patients costs a hash look-up each after the first.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod careteam;
mod db;
pub mod fhir;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use radveil_store::{Handle, Key};
use serde::{Deserialize, Serialize};

/// The file of the consent database under the gateway's data folder.
pub const CONSENT_DB: &str = "consent.db";
/// The consent key's file under the gateway's data folder (64 hex digits, 0600).
pub const CONSENT_KEY_FILE: &str = "keys/consent-key";

/// What a patient's images may be used for beyond their care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Research (HL7 v3 ActReason HRESCH).
    Research,
    /// Training machine-learning models (HL7 v3 ActReason MLTRAINING).
    AiTraining,
    /// Commercial use (no HL7 v3 ActReason code: the site code `urn:radveil:purpose#commercial`).
    Commercial,
}

impl Purpose {
    /// Every purpose, in a fixed order.
    pub const ALL: [Purpose; 3] = [Purpose::Research, Purpose::AiTraining, Purpose::Commercial];

    /// The word for this purpose: `research`, `ai-training`, `commercial`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Research => "research",
            Purpose::AiTraining => "ai-training",
            Purpose::Commercial => "commercial",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = ConsentError;
    fn from_str(s: &str) -> Result<Purpose, ConsentError> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(ConsentError::Invalid(
                "unknown purpose (research, ai-training or commercial expected)",
            ))
    }
}

/// What the site assumes for a purpose when the patient has said nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Denied unless the patient consented (HL7 v3 ActCode OPTIN).
    #[default]
    OptIn,
    /// Permitted unless the patient withdrew (HL7 v3 ActCode OPTOUT).
    OptOut,
}

impl Policy {
    /// Whether the default permits.
    pub fn permits(self) -> bool {
        self == Policy::OptOut
    }

    /// The word: `opt-in` or `opt-out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::OptIn => "opt-in",
            Policy::OptOut => "opt-out",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = ConsentError;
    fn from_str(s: &str) -> Result<Policy, ConsentError> {
        match s {
            "opt-in" => Ok(Policy::OptIn),
            "opt-out" => Ok(Policy::OptOut),
            _ => Err(ConsentError::Invalid("opt-in or opt-out expected")),
        }
    }
}

/// The site's default for each purpose (`[consent]` in `DATA/radveil.toml`); opt-in for all
/// three unless the site chose otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Defaults {
    /// Research.
    pub research: Policy,
    /// AI training.
    pub ai_training: Policy,
    /// Commercial use.
    pub commercial: Policy,
}

impl Defaults {
    /// The default for `purpose`.
    pub fn of(&self, purpose: Purpose) -> Policy {
        match purpose {
            Purpose::Research => self.research,
            Purpose::AiTraining => self.ai_training,
            Purpose::Commercial => self.commercial,
        }
    }

    /// The one policy of all three purposes, when they agree.
    pub fn common(&self) -> Option<Policy> {
        (self.research == self.ai_training && self.ai_training == self.commercial)
            .then_some(self.research)
    }
}

/// The answer for one patient, purpose and image: permitted or not, and under which
/// consent version (0: nothing recorded, the site default decided). Exports record the
/// version in their lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the image may be used for the purpose.
    pub permitted: bool,
    /// The consent version that decided, 0 when none is recorded.
    pub version: u64,
}

/// The state of a consent version (FHIR R4 Consent.status, the values this service takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// In force.
    Active,
    /// No longer in force: the site defaults decide.
    Inactive,
    /// The patient declined to give any consent: the site defaults decide.
    Rejected,
}

impl Status {
    /// The FHIR code.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Rejected => "rejected",
        }
    }
}

/// Where a consent version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The patient, in the portal.
    Portal,
    /// A FHIR client (an EHR that already records consent), by `PUT /fhir/Consent`.
    Fhir,
    /// Staff on the patient's behalf.
    Staff,
}

/// Who recorded a version: the token's subject and role. Kept sealed with the version and
/// never logged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Recorder {
    /// The token's subject, when there was a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The role: `patient`, `admin`, `privacy-officer`, `system`, or `local` without access
    /// control.
    pub role: String,
}

/// The patient a consent is about: Patient ID (0010,0020) and Issuer of Patient ID
/// (0010,0021, empty when the site does not use issuers). Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientId {
    /// Patient ID.
    pub id: String,
    /// Issuer of Patient ID, empty when not used.
    #[serde(default)]
    pub issuer: String,
}

impl std::fmt::Debug for PatientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientId(..)")
    }
}

/// The images a choice speaks for by study date: DICOM dates (YYYYMMDD), both ends
/// included, either end open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPeriod {
    /// First study date included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last study date included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

impl DataPeriod {
    /// Whether the study date `date` (YYYYMMDD) lies in the period.
    pub fn contains(&self, date: &str) -> bool {
        self.start.as_deref().is_none_or(|s| s <= date)
            && self.end.as_deref().is_none_or(|e| date <= e)
    }

    /// Whether every date of `other` lies in this period.
    fn covers(&self, other: &DataPeriod) -> bool {
        let starts = match (&self.start, &other.start) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a <= b,
        };
        let ends = match (&self.end, &other.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        starts && ends
    }
}

/// A patient's choice for one purpose in a consent version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The purpose.
    pub purpose: Purpose,
    /// Permitted (consent given) or denied (refused or withdrawn).
    pub permitted: bool,
    /// When this choice was made: the date consent was given, or withdrawn (FHIR date or
    /// dateTime). Kept from the previous version while the choice stays the same.
    pub since: String,
    /// Only the images of this period, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_period: Option<DataPeriod>,
}

/// One version of a patient's consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The FHIR logical id of the patient's Consent resource (the same in every version).
    pub id: String,
    /// This version's number, from 1.
    pub version: u64,
    /// When this version was recorded (RFC 3339 UTC; FHIR meta.lastUpdated).
    pub recorded: String,
    /// Whose consent.
    pub patient: PatientId,
    /// In force or not.
    pub status: Status,
    /// When the consent was given (FHIR Consent.dateTime).
    pub date_time: String,
    /// What the consent says for the images and purposes no choice speaks for: permit,
    /// deny, or (`None`) the site default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<bool>,
    /// The choices, at most one per purpose.
    pub choices: Vec<Choice>,
    /// Who recorded it.
    pub recorder: Recorder,
    /// Where it came from.
    pub source: Source,
}

impl Consent {
    /// The choice for `purpose`, if the consent makes one.
    pub fn choice(&self, purpose: Purpose) -> Option<&Choice> {
        self.choices.iter().find(|c| c.purpose == purpose)
    }

    /// Whether this version permits `purpose` for an image of `study_date` (YYYYMMDD),
    /// under the site `defaults`. A version that is not active says nothing: the site
    /// default decides. A choice limited to a data period speaks for the images of that
    /// period; the others get the consent's base rule, else the site default. An image
    /// whose study date is unknown (or not a date) is permitted only when both would permit
    /// it.
    pub fn permits(&self, defaults: &Defaults, purpose: Purpose, study_date: Option<&str>) -> bool {
        let default = defaults.of(purpose).permits();
        if self.status != Status::Active {
            return default;
        }
        let fallback = self.base.unwrap_or(default);
        let Some(choice) = self.choice(purpose) else {
            return fallback;
        };
        let Some(period) = &choice.data_period else {
            return choice.permitted;
        };
        match study_date.filter(|d| is_dicom_date(d)) {
            Some(d) if period.contains(d) => choice.permitted,
            Some(_) => fallback,
            None => choice.permitted && fallback,
        }
    }

    /// What this version says for `purpose`, summarised for comparing versions.
    fn stance(&self, defaults: &Defaults, purpose: Purpose) -> Stance {
        stance(Some(self), defaults, purpose)
    }
}

/// What a version says for one purpose: the same for every image, or one answer inside a
/// data period and another outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stance {
    All(bool),
    Split {
        period: DataPeriod,
        inside: bool,
        outside: bool,
    },
}

fn stance(c: Option<&Consent>, defaults: &Defaults, purpose: Purpose) -> Stance {
    let default = defaults.of(purpose).permits();
    let Some(c) = c.filter(|c| c.status == Status::Active) else {
        return Stance::All(default);
    };
    let fallback = c.base.unwrap_or(default);
    match c.choice(purpose) {
        None => Stance::All(fallback),
        Some(ch) => match &ch.data_period {
            None => Stance::All(ch.permitted),
            Some(_) if ch.permitted == fallback => Stance::All(fallback),
            Some(p) => Stance::Split {
                period: p.clone(),
                inside: ch.permitted,
                outside: fallback,
            },
        },
    }
}

/// Whether some image `before` permits is not permitted `after` (conservatively: when in
/// doubt, yes — a withdrawal notice too many is harmless, one too few is not).
fn narrowed(before: &Stance, after: &Stance) -> bool {
    use Stance::*;
    match (before, after) {
        (All(false), _) | (_, All(true)) => false,
        (All(true), _) => true,
        (Split { .. }, All(false)) => true,
        (
            Split {
                period: p1,
                inside: i1,
                outside: o1,
            },
            Split {
                period: p2,
                inside: i2,
                outside: o2,
            },
        ) => {
            // Two periods: the permitted set of each is the period (inside) or its
            // complement (outside).
            match ((*i1, *o1), (*i2, *o2)) {
                ((true, false), (true, false)) => !p2.covers(p1),
                ((false, true), (false, true)) => !p1.covers(p2),
                _ => true,
            }
        }
    }
}

/// A new version of a patient's consent, as a client proposes it (the FHIR body, the
/// portal's form): the service adds the version, the times it does not give, the recorder
/// and the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The FHIR logical id asked for (`PUT /fhir/Consent/{id}`); `None` keeps the patient's
    /// (or makes one from the patient's handle for a first version).
    pub id: Option<String>,
    /// Whose consent.
    pub patient: PatientId,
    /// In force or not.
    pub status: Status,
    /// When the consent was given; now when not given.
    pub date_time: Option<String>,
    /// The rule for the purposes and images no choice speaks for (`None`: the site default).
    pub base: Option<bool>,
    /// The choices, at most one per purpose.
    pub choices: Vec<DraftChoice>,
}

/// A choice of a [`Draft`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftChoice {
    /// The purpose.
    pub purpose: Purpose,
    /// Permitted or denied.
    pub permitted: bool,
    /// When given or withdrawn; when `None`, kept from the previous version if the choice
    /// did not change, else now.
    pub since: Option<String>,
    /// Only the images of this period.
    pub data_period: Option<DataPeriod>,
}

/// What a recorded change did, so the caller can react: the withdrawals (the purposes for
/// which some image permitted before no longer is; exports that hold them get withdrawal
/// notices) and the grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new version's number.
    pub version: u64,
    /// Purposes withdrawn (fully or for some images).
    pub withdrawn: Vec<Purpose>,
    /// Purposes granted (fully or for some images).
    pub granted: Vec<Purpose>,
    /// The new version.
    pub consent: Consent,
}

impl Change {
    /// The change in words for the audit trail, without any identifying value:
    /// "ai-training: withdrawn; research: given", or "no change of purpose".
    pub fn words(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for p in Purpose::ALL {
            if self.withdrawn.contains(&p) {
                parts.push(format!("{p}: withdrawn"));
            } else if self.granted.contains(&p) {
                parts.push(format!("{p}: given"));
            }
        }
        if parts.is_empty() {
            format!("version {}: no change of purpose", self.version)
        } else {
            format!("version {}: {}", self.version, parts.join("; "))
        }
    }
}

/// Why a consent could not be read or recorded. Messages hold no identifying value.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The database failed.
    #[error("consent database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored version does not open: altered, moved to another patient or version, or
    /// sealed under another key.
    #[error("consent version {version} does not open (altered, moved, or another key)")]
    Sealed {
        /// The version number of the row.
        version: u64,
    },
    /// `If-Match` named another version than the current one.
    #[error("the current version is {current}, not the one given")]
    VersionMismatch {
        /// The current version (0: none).
        current: u64,
    },
    /// The logical id is another patient's Consent.
    #[error("this id is another patient's Consent")]
    IdTaken,
    /// The patient's Consent already has another logical id.
    #[error("this patient's Consent has another id")]
    OtherId,
    /// A value that is not acceptable (the reason in words).
    #[error("{0}")]
    Invalid(&'static str),
    /// Sealing failed (the random source or the cipher).
    #[error("sealing a consent version failed")]
    Crypto,
    /// A lock was poisoned by a panic in another thread.
    #[error("the consent store is unusable after an earlier failure")]
    Poisoned,
}

/// Most patients whose current version is cached.
const MAX_CACHED: usize = 50_000;

/// Most versions of one patient's consent: far more than any patient changes their mind,
/// and a bound on what a history holds (a client looping on PUT cannot grow one without end).
pub const MAX_VERSIONS: u64 = 1000;

/// The consents of a gateway's data folder: `DATA/consent.db` sealed under the consent key.
/// Shared by the server's requests (`Arc<Consents>`); every method takes `&self`.
pub struct Consents {
    db: Mutex<db::Db>,
    cache: Mutex<Cache>,
    defaults: Defaults,
    path: PathBuf,
}

impl std::fmt::Debug for Consents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consents")
            .field("path", &self.path)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// The current version of recently asked patients, valid while the database's
/// `data_version` (which changes when another connection commits) is the one read.
#[derive(Default)]
struct Cache {
    data_version: i64,
    current: HashMap<Handle, Option<Arc<Consent>>>,
}

impl Consents {
    /// Opens (making it on first use) `DATA/consent.db` with the consent `key`
    /// (`DATA/keys/consent-key`, which the binary makes and loads) and the site's
    /// `defaults`.
    pub fn open(data: &Path, key: Key, defaults: Defaults) -> Result<Consents, ConsentError> {
        Consents::open_file(&data.join(CONSENT_DB), key, defaults)
    }

    /// Opens (making it) the consent database at `path`.
    pub fn open_file(path: &Path, key: Key, defaults: Defaults) -> Result<Consents, ConsentError> {
        let db = db::Db::open(path, key)?;
        Ok(Consents {
            db: Mutex::new(db),
            cache: Mutex::new(Cache::default()),
            defaults,
            path: path.to_path_buf(),
        })
    }

    /// The site's defaults.
    pub fn defaults(&self) -> Defaults {
        self.defaults
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, db::Db>, ConsentError> {
        self.db.lock().map_err(|_| ConsentError::Poisoned)
    }

    /// The current version of `patient` through the cache.
    fn cached(&self, patient: &Handle) -> Result<Option<Arc<Consent>>, ConsentError> {
        let db = self.db()?;
        let mut cache = self.cache.lock().map_err(|_| ConsentError::Poisoned)?;
        let dv = db.data_version()?;
        if dv != cache.data_version {
            cache.current.clear();
            cache.data_version = dv;
        }
        if let Some(c) = cache.current.get(patient) {
            return Ok(c.clone());
        }
        let c = db.latest(patient)?.map(Arc::new);
        if cache.current.len() >= MAX_CACHED {
            cache.current.clear();
        }
        cache.current.insert(*patient, c.clone());
        Ok(c)
    }

    /// Decides whether an image of `patient` (their store handle, `store.patient(id,
    /// issuer)`) taken on `study_date` (DICOM DA, YYYYMMDD; `None` when unknown) may be used
    /// for `purpose`, under the patient's current consent, else the site default.
    pub fn decide(
        &self,
        patient: &Handle,
        purpose: Purpose,
        study_date: Option<&str>,
    ) -> Result<Decision, ConsentError> {
        Ok(match self.cached(patient)? {
            None => Decision {
                permitted: self.defaults.of(purpose).permits(),
                version: 0,
            },
            Some(c) => Decision {
                permitted: c.permits(&self.defaults, purpose, study_date),
                version: c.version,
            },
        })
    }

    /// The patient's current version, if any was recorded.
    pub fn current(&self, patient: &Handle) -> Result<Option<Consent>, ConsentError> {
        Ok(self.cached(patient)?.map(|c| (*c).clone()))
    }

    /// Every version of the patient's consent, oldest first.
    pub fn history(&self, patient: &Handle) -> Result<Vec<Consent>, ConsentError> {
        self.db()?.all(patient)
    }

    /// Version `version` of the patient's consent.
    pub fn version(&self, patient: &Handle, version: u64) -> Result<Option<Consent>, ConsentError> {
        self.db()?.one(patient, version)
    }

    /// The patient whose Consent has the logical id `id`, if any.
    pub fn patient_of(&self, id: &str) -> Result<Option<Handle>, ConsentError> {
        self.db()?.patient_of(id)
    }

    /// Records a new version of `patient`'s consent (`patient` must be the store handle of
    /// `draft.patient`). `if_match`, when given, must be the current version (0: none yet),
    /// else nothing is recorded ([`ConsentError::VersionMismatch`]). Returns what changed.
    pub fn record(
        &self,
        patient: &Handle,
        draft: Draft,
        recorder: Recorder,
        source: Source,
        if_match: Option<u64>,
    ) -> Result<Change, ConsentError> {
        check_draft(&draft)?;
        let now = radveil_ledger::rfc3339_now();
        let defaults = self.defaults;
        let mut db = self.db()?;
        let change = db.append(patient, |previous| {
            let current = previous.map_or(0, |c| c.version);
            if if_match.is_some_and(|v| v != current) {
                return Err(ConsentError::VersionMismatch { current });
            }
            if current >= MAX_VERSIONS {
                return Err(ConsentError::Invalid(
                    "this patient's consent has as many versions as are kept",
                ));
            }
            let id = match (previous, draft.id.clone()) {
                (Some(p), Some(id)) if p.id != id => return Err(ConsentError::OtherId),
                (Some(p), _) => p.id.clone(),
                (None, Some(id)) => id,
                (None, None) => patient.hex(),
            };
            let choices = draft
                .choices
                .iter()
                .map(|d| {
                    let same = previous
                        .and_then(|p| p.choice(d.purpose))
                        .filter(|p| p.permitted == d.permitted && p.data_period == d.data_period);
                    Choice {
                        purpose: d.purpose,
                        permitted: d.permitted,
                        since: d
                            .since
                            .clone()
                            .or_else(|| same.map(|s| s.since.clone()))
                            .unwrap_or_else(|| now.clone()),
                        data_period: d.data_period.clone(),
                    }
                })
                .collect();
            let consent = Consent {
                id,
                version: current
                    .checked_add(1)
                    .ok_or(ConsentError::Invalid("too many versions"))?,
                recorded: now.clone(),
                patient: draft.patient.clone(),
                status: draft.status,
                date_time: draft.date_time.clone().unwrap_or_else(|| now.clone()),
                base: draft.base,
                choices,
                recorder: recorder.clone(),
                source,
            };
            let mut withdrawn = Vec::new();
            let mut granted = Vec::new();
            for p in Purpose::ALL {
                let before = stance(previous, &defaults, p);
                let after = consent.stance(&defaults, p);
                if narrowed(&before, &after) {
                    withdrawn.push(p);
                }
                if narrowed(&after, &before) {
                    granted.push(p);
                }
            }
            Ok(Change {
                version: consent.version,
                withdrawn,
                granted,
                consent,
            })
        })?;
        drop(db);
        let mut cache = self.cache.lock().map_err(|_| ConsentError::Poisoned)?;
        cache
            .current
            .insert(*patient, Some(Arc::new(change.consent.clone())));
        Ok(change)
    }

    /// Records a new version that changes only the purposes in `set` (each permitted or
    /// denied for every image, from now), keeping the rest of the current version (or
    /// starting from an empty active consent): what the portal's yes/no switches do. A
    /// version recorded meanwhile by another request makes it fail with
    /// [`ConsentError::VersionMismatch`], recording nothing (the patient saw another state).
    pub fn update(
        &self,
        patient: &Handle,
        who: &PatientId,
        set: &[(Purpose, bool)],
        recorder: Recorder,
        source: Source,
    ) -> Result<Change, ConsentError> {
        let current = self.current(patient)?;
        let mut choices: Vec<DraftChoice> = current
            .as_ref()
            .map(|c| {
                c.choices
                    .iter()
                    .map(|ch| DraftChoice {
                        purpose: ch.purpose,
                        permitted: ch.permitted,
                        since: Some(ch.since.clone()),
                        data_period: ch.data_period.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for &(purpose, permitted) in set {
            choices.retain(|c| c.purpose != purpose);
            choices.push(DraftChoice {
                purpose,
                permitted,
                since: None,
                data_period: None,
            });
        }
        choices.sort_by_key(|c| c.purpose);
        // A choice that did not change keeps its date through `record`.
        for c in &mut choices {
            if set.iter().any(|(p, _)| *p == c.purpose) {
                c.since = None;
            }
        }
        let draft = Draft {
            id: None,
            patient: who.clone(),
            status: Status::Active,
            date_time: None,
            base: current
                .as_ref()
                .filter(|c| c.status == Status::Active)
                .and_then(|c| c.base),
            choices,
        };
        self.record(
            patient,
            draft,
            recorder,
            source,
            current.map(|c| c.version).or(Some(0)),
        )
    }

    /// "Remove my images from future research and AI-training datasets": one version that
    /// denies research, AI training and commercial use for every image.
    pub fn withdraw_all(
        &self,
        patient: &Handle,
        who: &PatientId,
        recorder: Recorder,
        source: Source,
    ) -> Result<Change, ConsentError> {
        let all: Vec<(Purpose, bool)> = Purpose::ALL.iter().map(|p| (*p, false)).collect();
        self.update(patient, who, &all, recorder, source)
    }
}

/// Longest logical id (FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`).
pub const MAX_ID: usize = 64;

/// Whether `id` is a FHIR id.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `d` is a DICOM date (YYYYMMDD) that exists.
pub fn is_dicom_date(d: &str) -> bool {
    let b = d.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| d[r].parse::<u32>().unwrap_or(0);
    radveil_standard::civil::days_from_civil(i64::from(n(0..4)), n(4..6), n(6..8)).is_some()
}

fn check_draft(d: &Draft) -> Result<(), ConsentError> {
    if d.id.as_deref().is_some_and(|id| !is_fhir_id(id)) {
        return Err(ConsentError::Invalid("the id is not a FHIR id"));
    }
    let lo = |s: &str| s.chars().count() <= 64 && !s.chars().any(|c| c.is_control() || c == '\\');
    if d.patient.id.trim().is_empty() || !lo(&d.patient.id) || !lo(&d.patient.issuer) {
        return Err(ConsentError::Invalid(
            "the Patient ID must be 1 to 64 characters (no backslash or control character)",
        ));
    }
    for (i, c) in d.choices.iter().enumerate() {
        if d.choices[..i].iter().any(|o| o.purpose == c.purpose) {
            return Err(ConsentError::Invalid("more than one choice for a purpose"));
        }
        if c.since.as_deref().is_some_and(|s| !fhir::is_date_time(s)) {
            return Err(ConsentError::Invalid(
                "a choice's date is not a FHIR dateTime",
            ));
        }
        if let Some(p) = &c.data_period {
            let ok = |d: &Option<String>| d.as_deref().is_none_or(is_dicom_date);
            if !ok(&p.start) || !ok(&p.end) {
                return Err(ConsentError::Invalid("a data period's end is not a date"));
            }
            if let (Some(s), Some(e)) = (&p.start, &p.end) {
                if s > e {
                    return Err(ConsentError::Invalid("a data period ends before it starts"));
                }
            }
        }
    }
    if d.date_time
        .as_deref()
        .is_some_and(|s| !fhir::is_date_time(s))
    {
        return Err(ConsentError::Invalid(
            "the consent's dateTime is not a FHIR dateTime",
        ));
    }
    Ok(())
}
