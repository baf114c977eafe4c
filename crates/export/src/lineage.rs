//! Lineage: where every exported image went. `DATA/lineage.db` (SQLite, mode 0600) holds,
//! per export, its record (id, time, recipient, project, purpose, profile digest, counts),
//! and per exported instance the store's keyed handles of its patient, of its SOP Instance
//! UID and of its content, the consent version that allowed it, and its de-identified
//! Study, Series and SOP Instance UIDs. What could identify or link is sealed at rest
//! (AES-256-GCM under the lineage key `DATA/keys/lineage-key`, each value bound to its row
//! by associated data, so a sealed value moved to another row does not open); the handles
//! beside it are keyed blind indexes, which tell nothing without the store's index key.
//!
//! Looked up by patient ([`Lineage::exports_of`]: the exports that hold their images), and
//! on a withdrawal of consent ([`Lineage::notices_for`]: per affected export, the
//! de-identified UIDs the recipient must delete, and nothing that names the patient).

use std::path::Path;
use std::time::Duration;

use radveil_store::{Handle, Key};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Counts, Purpose};

/// The lineage database's file under a gateway data directory.
pub const LINEAGE_DB: &str = "lineage.db";
/// The lineage key's file under a gateway data directory (64 hex digits, mode 0600).
pub const LINEAGE_KEY_FILE: &str = "keys/lineage-key";

/// Associated data of a sealed export record.
const EXPORT_AAD: &[u8] = b"radveil/lineage/export/v1";
/// Associated data of an instance's sealed de-identified UIDs.
const ITEM_AAD: &[u8] = b"radveil/lineage/item/v1";
/// How long a writer waits for another's lock.
const BUSY_WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS export (id TEXT PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item (
    export TEXT NOT NULL REFERENCES export (id),
    instance BLOB NOT NULL,
    patient BLOB NOT NULL,
    content BLOB NOT NULL,
    consent INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (export, instance)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_patient ON item (patient, export);
";

/// What can go wrong with the lineage. Names exports by id, never a patient.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    /// SQLite failed.
    #[error("lineage database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("lineage database: {0}")]
    Io(#[from] std::io::Error),
    /// Sealing failed.
    #[error("lineage: {0}")]
    Crypto(String),
    /// A sealed value does not open: altered, moved, or another key.
    #[error("lineage: the record of export {0} does not open under the lineage key (altered, moved, or another key)")]
    Tampered(String),
    /// The database is not what it should be.
    #[error("lineage database: {0}")]
    Corrupt(String),
}

/// The de-identified UIDs of one exported instance (what the recipient holds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeidUids {
    /// Study Instance UID, de-identified.
    pub study: String,
    /// Series Instance UID, de-identified.
    pub series: String,
    /// SOP Instance UID, de-identified.
    pub instance: String,
}

/// One export as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// The export's id (random, hex).
    pub id: String,
    /// When it was made, RFC 3339 UTC.
    pub time: String,
    /// Who receives it.
    pub recipient: String,
    /// The project it is for, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// What it is for.
    pub purpose: Purpose,
    /// SHA-256 (hex) of the de-identification profile and options used.
    pub profile: String,
    /// What went out and what was left out.
    pub counts: Counts,
    /// Whether the export ran to its end (an export cut short keeps what it wrote).
    pub complete: bool,
}

/// One exported instance, for [`Lineage::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The store's handle of its SOP Instance UID.
    pub instance: Handle,
    /// The store's handle of its patient.
    pub patient: Handle,
    /// The store's keyed hash of its content.
    pub content: Handle,
    /// The consent version that allowed it (0: the site's default, nothing recorded).
    pub consent: u64,
    /// Its de-identified UIDs.
    pub uids: DeidUids,
}

/// An export holding a patient's images ([`Lineage::exports_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The export.
    pub export: ExportRecord,
    /// How many of the patient's instances it holds.
    pub instances: u64,
}

/// What a recipient is told when the patient whose images an export holds withdraws
/// consent for its purpose: the export, and the de-identified UIDs to delete. No identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Always "withdrawal".
    pub notice: String,
    /// The export's id.
    pub export: String,
    /// Who received it.
    pub recipient: String,
    /// Its project, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Its purpose (the one withdrawn).
    pub purpose: Purpose,
    /// When the export was made, RFC 3339 UTC.
    pub exported: String,
    /// What the recipient must do, in words.
    pub request: String,
    /// The instances to delete, by their de-identified UIDs (sorted).
    pub instances: Vec<DeidUids>,
}

/// The lineage database, open with its key.
pub struct Lineage {
    db: Connection,
    key: Key,
}

impl std::fmt::Debug for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lineage(..)")
    }
}

fn export_aad(id: &str) -> Vec<u8> {
    let mut a = EXPORT_AAD.to_vec();
    a.push(0);
    a.extend_from_slice(id.as_bytes());
    a
}

fn item_aad(export: &str, instance: &Handle, patient: &Handle, consent: u64) -> Vec<u8> {
    let mut a = ITEM_AAD.to_vec();
    a.push(0);
    a.extend_from_slice(export.as_bytes());
    a.push(0);
    a.extend_from_slice(&instance.0);
    a.extend_from_slice(&patient.0);
    a.extend_from_slice(&consent.to_be_bytes());
    a
}

fn handle(b: Vec<u8>) -> Result<Handle, LineageError> {
    Handle::from_slice(&b).map_err(|_| LineageError::Corrupt("a handle is not 32 bytes".into()))
}

impl Lineage {
    /// Opens (creating on first use, mode 0600) the lineage database at `path` with its key.
    pub fn open(path: &Path, key: Key) -> Result<Lineage, LineageError> {
        radveil_store::create_private(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => LineageError::Corrupt(e.to_string()),
            _ => LineageError::Io(e),
        })?;
        let db = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(BUSY_WAIT)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        // A recorded export must survive a crash of the machine.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Lineage { db, key })
    }

    fn seal_record(&self, r: &ExportRecord) -> Result<Vec<u8>, LineageError> {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(r).map_err(|e| LineageError::Crypto(e.to_string()))?,
        );
        self.key
            .seal(&plain, &export_aad(&r.id))
            .map_err(|e| LineageError::Crypto(e.to_string()))
    }

    /// Records a new export (its counts as they stand; [`Lineage::finish`] updates them).
    pub fn begin(&mut self, r: &ExportRecord) -> Result<(), LineageError> {
        let sealed = self.seal_record(r)?;
        self.db.execute(
            "INSERT INTO export (id, sealed) VALUES (?1, ?2)",
            params![r.id, sealed],
        )?;
        Ok(())
    }

    /// Records the export's final counts and completion.
    pub fn finish(&mut self, r: &ExportRecord) -> Result<(), LineageError> {
        let sealed = self.seal_record(r)?;
        let n = self.db.execute(
            "UPDATE export SET sealed = ?2 WHERE id = ?1",
            params![r.id, sealed],
        )?;
        if n != 1 {
            return Err(LineageError::Corrupt(format!(
                "export {} is not recorded",
                r.id
            )));
        }
        Ok(())
    }

    /// Records exported instances of export `export`, in one transaction.
    pub fn add(&mut self, export: &str, items: &[Item]) -> Result<(), LineageError> {
        let tx = self.db.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO item (export, instance, patient, content, consent, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for it in items {
                let plain = serde_json::to_vec(&it.uids)
                    .map_err(|e| LineageError::Crypto(e.to_string()))?;
                let sealed = self
                    .key
                    .seal(
                        &plain,
                        &item_aad(export, &it.instance, &it.patient, it.consent),
                    )
                    .map_err(|e| LineageError::Crypto(e.to_string()))?;
                let consent = i64::try_from(it.consent)
                    .map_err(|_| LineageError::Corrupt("consent version out of range".into()))?;
                st.execute(params![
                    export,
                    &it.instance.0[..],
                    &it.patient.0[..],
                    &it.content.0[..],
                    consent,
                    sealed
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The record of export `id`, opened.
    pub fn export(&self, id: &str) -> Result<Option<ExportRecord>, LineageError> {
        let sealed: Option<Vec<u8>> = self
            .db
            .query_row("SELECT sealed FROM export WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        sealed.map(|s| self.open_record(id, &s)).transpose()
    }

    fn open_record(&self, id: &str, sealed: &[u8]) -> Result<ExportRecord, LineageError> {
        let plain = zeroize::Zeroizing::new(
            self.key
                .open(sealed, &export_aad(id))
                .ok_or_else(|| LineageError::Tampered(id.to_string()))?,
        );
        let r: ExportRecord = serde_json::from_slice(&plain)
            .map_err(|_| LineageError::Corrupt(format!("the record of export {id} is not one")))?;
        if r.id != id {
            return Err(LineageError::Tampered(id.to_string()));
        }
        Ok(r)
    }

    /// Every export holding images of `patient` (the store's patient handle), oldest first,
    /// each with how many of their instances it holds. Only that patient's rows are read.
    pub fn exports_of(&self, patient: &Handle) -> Result<Vec<Holding>, LineageError> {
        let mut st = self.db.prepare_cached(
            "SELECT export, count(*) FROM item WHERE patient = ?1 GROUP BY export",
        )?;
        let found: Vec<(String, i64)> = st
            .query_map([&patient.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(found.len());
        for (id, n) in found {
            let export = self
                .export(&id)?
                .ok_or_else(|| LineageError::Corrupt(format!("export {id} is not recorded")))?;
            out.push(Holding {
                export,
                instances: u64::try_from(n).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (&a.export.time, &a.export.id).cmp(&(&b.export.time, &b.export.id)));
        Ok(out)
    }

    /// The de-identified UIDs of `patient`'s instances in export `export`, sorted.
    pub fn uids_of(&self, export: &str, patient: &Handle) -> Result<Vec<DeidUids>, LineageError> {
        let mut st = self.db.prepare_cached(
            "SELECT instance, consent, sealed FROM item WHERE export = ?1 AND patient = ?2",
        )?;
        let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = st
            .query_map(params![export, &patient.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (instance, consent, sealed) in rows {
            let instance = handle(instance)?;
            let consent = u64::try_from(consent).unwrap_or(u64::MAX);
            let plain = self
                .key
                .open(&sealed, &item_aad(export, &instance, patient, consent))
                .ok_or_else(|| LineageError::Tampered(export.to_string()))?;
            out.push(serde_json::from_slice(&plain).map_err(|_| {
                LineageError::Corrupt(format!("an instance of export {export} is not readable"))
            })?);
        }
        out.sort();
        Ok(out)
    }

    /// The withdrawal notices for `patient` (the store's patient handle) who withdrew
    /// consent for the purposes `withdrawn`: one per export of one of those purposes that
    /// holds their images, listing exactly their instances' de-identified UIDs, oldest
    /// export first. Nothing in a notice names or identifies the patient.
    pub fn notices_for(
        &self,
        patient: &Handle,
        withdrawn: &[Purpose],
    ) -> Result<Vec<Notice>, LineageError> {
        let mut out = Vec::new();
        for h in self.exports_of(patient)? {
            let e = h.export;
            if !withdrawn.contains(&e.purpose) {
                continue;
            }
            let instances = self.uids_of(&e.id, patient)?;
            out.push(Notice {
                notice: "withdrawal".into(),
                request: format!(
                    "A person whose images are in export {} has withdrawn their consent to {} use. Delete the {} instance{} listed here, by their de-identified UIDs, and every copy or derivative of them.",
                    e.id,
                    crate::purpose_words(e.purpose),
                    instances.len(),
                    if instances.len() == 1 { "" } else { "s" }
                ),
                export: e.id,
                recipient: e.recipient,
                project: e.project,
                purpose: e.purpose,
                exported: e.time,
                instances,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Handle {
        Handle([b; 32])
    }

    fn record(id: &str, time: &str, purpose: Purpose) -> ExportRecord {
        ExportRecord {
            id: id.into(),
            time: time.into(),
            recipient: "Acme Labs".into(),
            project: Some("Project X".into()),
            purpose,
            profile: "00".repeat(32),
            counts: Counts::default(),
            complete: true,
        }
    }

    fn item(instance: u8, patient: u8, uid: &str) -> Item {
        Item {
            instance: h(instance),
            patient: h(patient),
            content: h(instance ^ 0x80),
            consent: 3,
            uids: DeidUids {
                study: format!("2.25.1{uid}"),
                series: format!("2.25.2{uid}"),
                instance: format!("2.25.3{uid}"),
            },
        }
    }

    fn open(dir: &Path) -> Lineage {
        Lineage::open(&dir.join(LINEAGE_DB), Key::from_slice(&[9; 32]).unwrap()).unwrap()
    }

    fn sample(dir: &Path) -> Lineage {
        let mut l = open(dir);
        l.begin(&record("e1", "2026-01-01T00:00:00Z", Purpose::AiTraining))
            .unwrap();
        l.add(
            "e1",
            &[item(1, 0xA, "11"), item(2, 0xA, "12"), item(3, 0xB, "13")],
        )
        .unwrap();
        l.begin(&record("e2", "2026-02-01T00:00:00Z", Purpose::Research))
            .unwrap();
        l.add("e2", &[item(1, 0xA, "21"), item(4, 0xB, "24")])
            .unwrap();
        l
    }

    #[test]
    fn a_patient_sees_the_exports_holding_their_images_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let l = sample(dir.path());
        let a = l.exports_of(&h(0xA)).unwrap();
        let got: Vec<(&str, u64)> = a
            .iter()
            .map(|x| (x.export.id.as_str(), x.instances))
            .collect();
        assert_eq!(got, vec![("e1", 2), ("e2", 1)]);
        assert_eq!(a[0].export.purpose, Purpose::AiTraining);
        assert_eq!(a[0].export.recipient, "Acme Labs");
        let b = l.exports_of(&h(0xB)).unwrap();
        assert_eq!(
            b.iter().map(|x| x.instances).collect::<Vec<_>>(),
            vec![1, 1]
        );
        assert!(l.exports_of(&h(0xC)).unwrap().is_empty());
    }

    #[test]
    fn notices_hold_exactly_the_patients_uids_of_exports_of_the_withdrawn_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let l = sample(dir.path());
        let n = l.notices_for(&h(0xA), &[Purpose::AiTraining]).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].export, "e1");
        assert_eq!(n[0].purpose, Purpose::AiTraining);
        let uids: Vec<&str> = n[0].instances.iter().map(|u| u.instance.as_str()).collect();
        assert_eq!(uids, vec!["2.25.311", "2.25.312"]);
        // Both purposes: both exports, each with only this patient's instances.
        let n = l
            .notices_for(&h(0xA), &[Purpose::AiTraining, Purpose::Research])
            .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].instances.len(), 1);
        assert_eq!(n[1].instances[0].instance, "2.25.321");
        // A purpose no export had: nothing.
        assert!(l
            .notices_for(&h(0xA), &[Purpose::Commercial])
            .unwrap()
            .is_empty());
        // The notice names no patient handle.
        let text = serde_json::to_string(&n).unwrap();
        assert!(!text.contains(&h(0xA).hex()) && !text.contains(&h(0xB).hex()));
        assert!(
            !text.contains("2.25.313") && !text.contains("2.25.324"),
            "{text}"
        );
    }

    #[test]
    fn rows_are_sealed_at_rest_and_do_not_open_moved_or_under_another_key() {
        let dir = tempfile::tempdir().unwrap();
        drop(sample(dir.path()));
        let bytes = std::fs::read(dir.path().join(LINEAGE_DB)).unwrap();
        let wal = std::fs::read(dir.path().join("lineage.db-wal")).unwrap_or_default();
        for needle in ["2.25.311", "Acme Labs", "Project X"] {
            let n = needle.as_bytes();
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{needle} in the clear"
            );
            assert!(!wal.windows(n.len()).any(|w| w == n), "{needle} in the WAL");
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(LINEAGE_DB))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // Another key opens nothing.
        let other = Lineage::open(
            &dir.path().join(LINEAGE_DB),
            Key::from_slice(&[8; 32]).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            other.exports_of(&h(0xA)),
            Err(LineageError::Tampered(_))
        ));
        // A sealed value moved to another patient's row does not open.
        let l = open(dir.path());
        l.db.execute(
            "UPDATE item SET patient = ?1 WHERE export = 'e1' AND instance = ?2",
            params![&h(0xB).0[..], &h(1).0[..]],
        )
        .unwrap();
        assert!(matches!(
            l.notices_for(&h(0xB), &[Purpose::AiTraining]),
            Err(LineageError::Tampered(_))
        ));
        // A record swapped to another export id does not open.
        l.db.execute("UPDATE export SET sealed = (SELECT sealed FROM export WHERE id = 'e2') WHERE id = 'e1'", [])
            .unwrap();
        assert!(matches!(l.export("e1"), Err(LineageError::Tampered(_))));
    }

    #[test]
    fn finish_updates_the_counts_and_an_unknown_export_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = open(dir.path());
        let mut r = record("e9", "2026-03-01T00:00:00Z", Purpose::Research);
        r.complete = false;
        l.begin(&r).unwrap();
        r.counts.instances = 7;
        r.complete = true;
        l.finish(&r).unwrap();
        assert_eq!(l.export("e9").unwrap().unwrap(), r);
        assert!(l.finish(&record("nope", "x", Purpose::Research)).is_err());
        // An item of an export never begun is refused.
        assert!(l.add("nope", &[item(1, 1, "1")]).is_err());
    }
}
