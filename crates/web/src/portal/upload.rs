//! Secure upload's quarantine: the images a patient sends from a disc or drive, held apart
//! from the store until a member of staff confirms they are the patient's (import
//! reconciliation, as IHE IRWF.b has it), then attached to the patient's record with the
//! site's Patient ID, the IDs the files came with kept in Other Patient IDs Sequence and
//! Original Attributes Sequence ([`reconcile`]); or declined and deleted.
//!
//! `DATA/uploads.db` holds each upload's files and what was found in them (names, IDs,
//! dates: identifying), all sealed with AES-256-GCM under `DATA/keys/upload-key`: a file
//! bound to its upload and place, an upload's summary to its id, patient, time and status.
//! Deleted rows are overwritten (`secure_delete`).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use radveil_part10::{self as p10, DataSet, Element, Limits, Value, Vr};
use radveil_standard::tags;
use radveil_store::{Handle, Key};

/// The upload database's file under the gateway's data folder.
pub const UPLOADS_DB: &str = "uploads.db";
/// The upload key's file under the gateway's data folder.
pub const UPLOAD_KEY_FILE: &str = "keys/upload-key";
/// Uploads one patient may have waiting for staff at once.
pub const MAX_PENDING_PER_PATIENT: usize = 5;
/// Most uploads the staff's list shows (the oldest waiting first).
pub const MAX_LISTED: usize = 200;
/// What the Modifying System (0400,0563) of a reconciled instance says.
pub const MODIFYING_SYSTEM: &str = "RADVEIL PORTAL UPLOAD";

const AAD: &[u8] = b"radveil upload 1";

/// Why an upload could not be kept, found or decided.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The database failed.
    #[error("upload database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A row did not open with the key (altered, moved, or another key).
    #[error("an upload's record failed its integrity check")]
    Tampered,
    /// No randomness.
    #[error("no randomness from the operating system")]
    Random,
    /// The request is not acceptable (in words for the user).
    #[error("{0}")]
    Invalid(&'static str),
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Held apart, waiting for staff.
    Pending,
    /// Attached to the patient's record by staff.
    Attached,
    /// Not the patient's (or not attachable): deleted.
    Declined,
}

impl Status {
    fn code(self) -> i64 {
        match self {
            Status::Pending => 0,
            Status::Attached => 1,
            Status::Declined => 2,
        }
    }

    fn of(code: i64) -> Option<Status> {
        match code {
            0 => Some(Status::Pending),
            1 => Some(Status::Attached),
            2 => Some(Status::Declined),
            _ => None,
        }
    }

    /// In words, for the patient and staff.
    pub fn words(self) -> &'static str {
        match self {
            Status::Pending => "waiting for staff to check",
            Status::Attached => "added to your record",
            Status::Declined => "not added (deleted)",
        }
    }
}

/// One study as the uploaded files describe it (identifying: sealed at rest, shown only
/// to staff deciding the match and to the patient who sent it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundStudy {
    /// Study Instance UID.
    pub uid: String,
    /// Patient's Name in the files.
    pub patient_name: String,
    /// Patient ID in the files.
    pub patient_id: String,
    /// Issuer of Patient ID in the files.
    pub issuer: String,
    /// Patient's Birth Date in the files.
    pub birth_date: String,
    /// Patient's Sex in the files.
    pub sex: String,
    /// Study Date.
    pub date: String,
    /// The modalities of its series.
    pub modalities: Vec<String>,
    /// Study Description.
    pub description: String,
    /// How many instances.
    pub instances: usize,
}

/// What an upload held and what became of it (sealed at rest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The sending patient's Patient ID at this site.
    pub patient_id: String,
    /// Its issuer (empty when none).
    pub issuer: String,
    /// The patient's name as their sign-in gave it, when it did.
    pub patient_name: Option<String>,
    /// The studies found in the files kept.
    pub studies: Vec<FoundStudy>,
    /// Files left out, by reason (words naming no value) with a count.
    pub left_out: Vec<(String, usize)>,
    /// Who decided, when staff did.
    pub decided_by: Option<String>,
    /// What the decision came to, in words.
    pub outcome: Option<String>,
}

/// An upload as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Its id (32 hex digits).
    pub id: String,
    /// The sending patient's handle.
    pub patient: Handle,
    /// Received (Unix seconds).
    pub created: u64,
    /// Where it stands.
    pub status: Status,
    /// Decided (Unix seconds).
    pub decided: Option<u64>,
    /// Files held (0 once decided).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// What it held.
    pub summary: Summary,
}

/// The quarantine of one data folder.
pub struct Uploads {
    db: Mutex<Connection>,
    key: Key,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uploads")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn summary_aad(id: &[u8], patient: &[u8], created: u64, status: Status) -> Vec<u8> {
    let mut a = AAD.to_vec();
    a.extend_from_slice(b" summary ");
    a.extend_from_slice(id);
    a.extend_from_slice(patient);
    a.extend_from_slice(&created.to_be_bytes());
    a.push(status.code() as u8);
    a
}

fn file_aad(id: &[u8], n: usize) -> Vec<u8> {
    let mut a = AAD.to_vec();
    a.extend_from_slice(b" file ");
    a.extend_from_slice(id);
    a.extend_from_slice(&(n as u64).to_be_bytes());
    a
}

const COLUMNS: &str = "id, patient, created, status, decided, files, bytes, sealed";

impl Uploads {
    /// Opens (making it 0600 on first use) the upload database at `path`.
    pub fn open(path: &Path, key: Key) -> Result<Uploads, UploadError> {
        radveil_store::create_private(path).map_err(|_| {
            UploadError::Invalid("the upload database could not be made, or is not a regular file")
        })?;
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;
             CREATE TABLE IF NOT EXISTS upload (
                 id BLOB PRIMARY KEY, patient BLOB NOT NULL, created INTEGER NOT NULL,
                 status INTEGER NOT NULL, decided INTEGER, files INTEGER NOT NULL,
                 bytes INTEGER NOT NULL, sealed BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS upload_patient ON upload(patient);
             CREATE INDEX IF NOT EXISTS upload_status ON upload(status, created);
             CREATE TABLE IF NOT EXISTS upload_file (
                 upload BLOB NOT NULL, n INTEGER NOT NULL, sealed BLOB NOT NULL,
                 PRIMARY KEY (upload, n));",
        )?;
        Ok(Uploads {
            db: Mutex::new(db),
            key,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `files` from `patient` with what was found in them, waiting for staff.
    pub fn create(
        &self,
        patient: Handle,
        summary: &Summary,
        files: &[bytes::Bytes],
        now: u64,
    ) -> Result<Upload, UploadError> {
        if files.is_empty() {
            return Err(UploadError::Invalid("no images to keep"));
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|_| UploadError::Random)?;
        let sealed_summary = self
            .key
            .seal(
                &serde_json::to_vec(summary).map_err(|_| UploadError::Tampered)?,
                &summary_aad(&id, &patient.0, now, Status::Pending),
            )
            .map_err(|_| UploadError::Invalid("the upload could not be sealed"))?;
        let bytes: u64 = files.iter().map(|f| f.len() as u64).sum();
        let mut db = self.db();
        let tx = db.transaction()?;
        let waiting: i64 = tx.query_row(
            "SELECT COUNT(*) FROM upload WHERE patient = ?1 AND status = 0",
            params![&patient.0[..]],
            |r| r.get(0),
        )?;
        if waiting as usize >= MAX_PENDING_PER_PATIENT {
            return Err(UploadError::Invalid(
                "You already have several uploads waiting for staff. Please wait until they have been checked.",
            ));
        }
        tx.execute(
            "INSERT INTO upload (id, patient, created, status, files, bytes, sealed) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            params![&id[..], &patient.0[..], now as i64, files.len() as i64, bytes as i64, sealed_summary],
        )?;
        {
            let mut put =
                tx.prepare("INSERT INTO upload_file (upload, n, sealed) VALUES (?1, ?2, ?3)")?;
            for (n, f) in files.iter().enumerate() {
                let sealed = self
                    .key
                    .seal(f, &file_aad(&id, n))
                    .map_err(|_| UploadError::Invalid("the upload could not be sealed"))?;
                put.execute(params![&id[..], n as i64, sealed])?;
            }
        }
        tx.commit()?;
        Ok(Upload {
            id: hex(&id),
            patient,
            created: now,
            status: Status::Pending,
            decided: None,
            files: files.len(),
            bytes,
            summary: summary.clone(),
        })
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> Result<Upload, UploadError> {
        let id: Vec<u8> = r.get(0)?;
        let patient: Vec<u8> = r.get(1)?;
        let created = r.get::<_, i64>(2)? as u64;
        let status = Status::of(r.get(3)?).ok_or(UploadError::Tampered)?;
        let decided: Option<i64> = r.get(4)?;
        let files = r.get::<_, i64>(5)? as usize;
        let bytes = r.get::<_, i64>(6)? as u64;
        let sealed: Vec<u8> = r.get(7)?;
        let plain = self
            .key
            .open(&sealed, &summary_aad(&id, &patient, created, status))
            .ok_or(UploadError::Tampered)?;
        let summary: Summary = serde_json::from_slice(&plain).map_err(|_| UploadError::Tampered)?;
        Ok(Upload {
            id: hex(&id),
            patient: Handle(patient.try_into().map_err(|_| UploadError::Tampered)?),
            created,
            status,
            decided: decided.map(|d| d as u64),
            files,
            bytes,
            summary,
        })
    }

    fn select(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Upload>, UploadError> {
        let db = self.db();
        let mut q = db.prepare(sql)?;
        let rows = q.query_map(args, |r| Ok(self.row(r)))?;
        rows.map(|r| r.map_err(UploadError::from).and_then(|x| x))
            .collect()
    }

    /// The uploads of `patient`, newest first.
    pub fn of_patient(&self, patient: &Handle) -> Result<Vec<Upload>, UploadError> {
        self.select(
            &format!("SELECT {COLUMNS} FROM upload WHERE patient = ?1 ORDER BY created DESC LIMIT {MAX_LISTED}"),
            params![&patient.0[..]],
        )
    }

    /// The uploads waiting for staff, oldest first.
    pub fn pending(&self) -> Result<Vec<Upload>, UploadError> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM upload WHERE status = 0 ORDER BY created LIMIT {MAX_LISTED}"
            ),
            [],
        )
    }

    /// The upload `id`, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<Upload>, UploadError> {
        let Some(raw) = unhex(id) else {
            return Ok(None);
        };
        Ok(self
            .select(
                &format!("SELECT {COLUMNS} FROM upload WHERE id = ?1"),
                params![&raw[..]],
            )?
            .pop())
    }

    /// The files of the upload `id`, in the order received.
    pub fn files(&self, id: &str) -> Result<Vec<Vec<u8>>, UploadError> {
        let raw = unhex(id).ok_or(UploadError::Invalid("no such upload"))?;
        let db = self.db();
        let mut q = db.prepare("SELECT n, sealed FROM upload_file WHERE upload = ?1 ORDER BY n")?;
        let rows = q.query_map(params![&raw[..]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for (i, row) in rows.enumerate() {
            let (n, sealed) = row?;
            if n != i as i64 {
                return Err(UploadError::Tampered);
            }
            out.push(
                self.key
                    .open(&sealed, &file_aad(&raw, i))
                    .ok_or(UploadError::Tampered)?,
            );
        }
        Ok(out)
    }

    /// Records staff's decision on a waiting upload and deletes its files: `status`
    /// (attached or declined), who decided, and what it came to in words. Refused when the
    /// upload is not waiting (decided by someone else meanwhile).
    pub fn decide(
        &self,
        id: &str,
        status: Status,
        decided_by: &str,
        outcome: String,
        now: u64,
    ) -> Result<Upload, UploadError> {
        if status == Status::Pending {
            return Err(UploadError::Invalid("a decision attaches or declines"));
        }
        let raw = unhex(id).ok_or(UploadError::Invalid("no such upload"))?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let found = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM upload WHERE id = ?1"),
                params![&raw[..]],
                |r| Ok(self.row(r)),
            )
            .optional()?
            .transpose()?;
        let Some(mut up) = found else {
            return Err(UploadError::Invalid("no such upload"));
        };
        if up.status != Status::Pending {
            return Err(UploadError::Invalid("this upload has already been decided"));
        }
        up.summary.decided_by = Some(decided_by.to_string());
        up.summary.outcome = Some(outcome);
        let sealed = self
            .key
            .seal(
                &serde_json::to_vec(&up.summary).map_err(|_| UploadError::Tampered)?,
                &summary_aad(&raw, &up.patient.0, up.created, status),
            )
            .map_err(|_| UploadError::Invalid("the upload could not be sealed"))?;
        tx.execute(
            "UPDATE upload SET status = ?2, decided = ?3, files = 0, bytes = 0, sealed = ?4 WHERE id = ?1",
            params![&raw[..], status.code(), now as i64, sealed],
        )?;
        tx.execute(
            "DELETE FROM upload_file WHERE upload = ?1",
            params![&raw[..]],
        )?;
        tx.commit()?;
        up.status = status;
        up.decided = Some(now);
        up.files = 0;
        up.bytes = 0;
        Ok(up)
    }
}

/// Why a file could not be reconciled (words naming tags, never values).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

/// Rewrites one uploaded Part 10 file for the patient `(id, issuer)` of this site, as IHE
/// IRWF.b's Importer does: Patient ID and Issuer of Patient ID become the site's; the IDs the
/// file came with are kept as an item of Other Patient IDs Sequence (0010,1002), and the
/// replaced values in an Original Attributes Sequence (0400,0561) item saying when, by what
/// and why ("COERCE"). Everything else (UIDs, names, pixels) is kept as sent; the file
/// meta is kept, the data set re-encoded in its transfer syntax.
pub fn reconcile(
    file: &[u8],
    id: &str,
    issuer: &str,
    now_utc: &str,
) -> Result<Vec<u8>, ReconcileError> {
    let mut inflated = Vec::new();
    let (meta, mut ds, _) = p10::read_file(file, &mut inflated, Limits::default())
        .map_err(|e| ReconcileError(format!("not a readable DICOM file: {e}")))?;
    let old_id = ds.get(tags::PATIENT_ID).cloned();
    let old_issuer = ds.get(tags::ISSUER_OF_PATIENT_ID).cloned();
    let text = |e: &Option<Element<'_>>| {
        e.as_ref()
            .and_then(|e| e.to_str().map(|s| s.into_owned()))
            .unwrap_or_default()
    };
    let (was_id, was_issuer) = (text(&old_id), text(&old_issuer));
    if was_id == id && was_issuer == issuer {
        // Already the site's own identifiers: nothing to coerce.
        let mut out = Vec::with_capacity(file.len());
        p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
        return Ok(out);
    }
    // The IDs the file came with, as another ID of the patient (PS3.3 C.7.1.1).
    if !was_id.is_empty() {
        let mut item = DataSet::default();
        item.put(Element::text(tags::PATIENT_ID, Vr::LO, &was_id));
        if !was_issuer.is_empty() {
            item.put(Element::text(
                tags::ISSUER_OF_PATIENT_ID,
                Vr::LO,
                &was_issuer,
            ));
        }
        item.put(Element::text(tags::TYPE_OF_PATIENT_ID, Vr::CS, "TEXT"));
        let mut others = match ds.get(tags::OTHER_PATIENT_IDS_SEQUENCE) {
            Some(Element {
                value: Value::Sequence(items),
                ..
            }) => items.clone(),
            _ => Vec::new(),
        };
        others.push(item);
        ds.put(Element {
            tag: tags::OTHER_PATIENT_IDS_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(others),
        });
    }
    // The values replaced, in Original Attributes Sequence (PS3.3 C.12.1.1.9).
    let mut modified = DataSet::default();
    modified.put(old_id.unwrap_or_else(|| Element::text(tags::PATIENT_ID, Vr::LO, "")));
    if let Some(e) = old_issuer {
        modified.put(e);
    }
    let mut original = DataSet::default();
    original.put(Element::text(
        tags::ATTRIBUTE_MODIFICATION_DATE_TIME,
        Vr::DT,
        now_utc,
    ));
    original.put(Element::text(
        tags::MODIFYING_SYSTEM,
        Vr::LO,
        MODIFYING_SYSTEM,
    ));
    original.put(Element::text(tags::SOURCE_OF_PREVIOUS_VALUES, Vr::LO, ""));
    original.put(Element::text(
        tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION,
        Vr::CS,
        "COERCE",
    ));
    original.put(Element {
        tag: tags::MODIFIED_ATTRIBUTES_SEQUENCE,
        vr: Vr::SQ,
        value: Value::Sequence(vec![modified]),
    });
    let mut originals = match ds.get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE) {
        Some(Element {
            value: Value::Sequence(items),
            ..
        }) => items.clone(),
        _ => Vec::new(),
    };
    originals.push(original);
    ds.put(Element {
        tag: tags::ORIGINAL_ATTRIBUTES_SEQUENCE,
        vr: Vr::SQ,
        value: Value::Sequence(originals),
    });
    ds.put(Element::text(tags::PATIENT_ID, Vr::LO, id));
    if issuer.is_empty() {
        ds.remove(tags::ISSUER_OF_PATIENT_ID);
    } else {
        ds.put(Element::text(tags::ISSUER_OF_PATIENT_ID, Vr::LO, issuer));
    }
    let mut out = Vec::with_capacity(file.len() + 512);
    p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::random().unwrap()
    }

    #[test]
    fn an_upload_is_kept_sealed_listed_and_deleted_when_decided() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(UPLOADS_DB);
        let u = Uploads::open(&path, key()).unwrap();
        let p = Handle([7; 32]);
        let summary = Summary {
            patient_id: "PID-SECRET-7".into(),
            ..Summary::default()
        };
        let files = vec![
            bytes::Bytes::from_static(b"first file PLANTED-NAME"),
            bytes::Bytes::from_static(b"second"),
        ];
        let up = u.create(p, &summary, &files, 1000).unwrap();
        assert_eq!(up.status, Status::Pending);
        assert_eq!(u.pending().unwrap().len(), 1);
        assert_eq!(u.of_patient(&p).unwrap()[0].summary, summary);
        assert!(u.of_patient(&Handle([8; 32])).unwrap().is_empty());
        assert_eq!(
            u.files(&up.id).unwrap(),
            vec![b"first file PLANTED-NAME".to_vec(), b"second".to_vec()]
        );
        // Nothing identifying in the database's bytes.
        drop(u);
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join(format!("{UPLOADS_DB}-wal"))).unwrap_or_default();
        for hay in [&raw, &wal] {
            assert!(!hay.windows(12).any(|w| w == b"PLANTED-NAME"));
            assert!(!hay.windows(12).any(|w| w == b"PID-SECRET-7"));
        }
        // Rows open only with their key.
        let u = Uploads::open(&path, key()).unwrap();
        assert!(
            matches!(u.pending(), Err(UploadError::Tampered)),
            "another key"
        );
    }

    #[test]
    fn a_decision_is_made_once_and_empties_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let u = Uploads::open(&dir.path().join(UPLOADS_DB), key()).unwrap();
        let p = Handle([1; 32]);
        let up = u
            .create(
                p,
                &Summary::default(),
                &[bytes::Bytes::from_static(b"x")],
                5,
            )
            .unwrap();
        assert!(u
            .decide(&up.id, Status::Pending, "a", "b".into(), 6)
            .is_err());
        let done = u
            .decide(&up.id, Status::Declined, "Dr A", "not theirs".into(), 6)
            .unwrap();
        assert_eq!(done.status, Status::Declined);
        assert!(u.files(&up.id).unwrap().is_empty());
        assert!(u.pending().unwrap().is_empty());
        let again = u.get(&up.id).unwrap().unwrap();
        assert_eq!(again.summary.decided_by.as_deref(), Some("Dr A"));
        assert!(u
            .decide(&up.id, Status::Attached, "Dr B", "x".into(), 7)
            .is_err());
        assert!(u.get("not-hex").unwrap().is_none());
    }

    #[test]
    fn a_patient_may_have_only_a_few_uploads_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let u = Uploads::open(&dir.path().join(UPLOADS_DB), key()).unwrap();
        let p = Handle([1; 32]);
        let one = [bytes::Bytes::from_static(b"x")];
        for _ in 0..MAX_PENDING_PER_PATIENT {
            u.create(p, &Summary::default(), &one, 5).unwrap();
        }
        assert!(matches!(
            u.create(p, &Summary::default(), &one, 5),
            Err(UploadError::Invalid(_))
        ));
        assert!(u
            .create(Handle([2; 32]), &Summary::default(), &one, 5)
            .is_ok());
    }
}
