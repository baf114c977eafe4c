//! The key store: every key that can open stored data, kept in its own SQLite file apart
//! from the data (and from the data's backups), so that deleting a key here destroys what
//! it opened everywhere, backups included (crypto-shredding).
//!
//! The hierarchy: the key-encryption key (KEK, given by the operator, never stored here)
//! wraps each patient's key and the index key; a patient's key wraps the keys of their
//! studies; a study's key wraps the data key of each stored object. Rotating the KEK
//! re-wraps the patient keys and the index key only. Deleting a patient, a study or an
//! object deletes its key rows with SQLite's `secure_delete` on (freed pages are zeroed)
//! and truncates the write-ahead log, so the wrapped keys are gone from the file.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::crypto::{Handle, Key};
use crate::StoreError;

/// Associated data of a wrapped patient key.
const PATIENT_AAD: &[u8] = b"radveil/patient-key/v1";
/// Associated data of a wrapped study key.
const STUDY_AAD: &[u8] = b"radveil/study-key/v1";
/// Associated data of a wrapped data key.
const DATA_AAD: &[u8] = b"radveil/data-key/v1";
/// Associated data of the wrapped index key.
const INDEX_AAD: &[u8] = b"radveil/index-key/v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS patient (handle BLOB PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS study (handle BLOB PRIMARY KEY, patient BLOB NOT NULL,
    wrapped BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS study_patient ON study (patient);
CREATE TABLE IF NOT EXISTS datakey (object TEXT PRIMARY KEY, instance BLOB NOT NULL,
    study BLOB NOT NULL, wrapped BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS datakey_study ON datakey (study);
CREATE INDEX IF NOT EXISTS datakey_instance ON datakey (instance);
";

/// The key store, opened with the KEK.
pub struct KeyStore {
    db: Connection,
    kek: Key,
    index: Key,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore(..)")
    }
}

fn aad(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut a = label.to_vec();
    for p in parts {
        a.push(0);
        a.extend_from_slice(p);
    }
    a
}

/// The index key, made and kept wrapped by the KEK on first use; a KEK that does not open
/// it is the wrong one.
fn index_key_or_create(db: &mut Connection, kek: &Key) -> Result<Key, StoreError> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE name = 'index-key'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let key = match found {
        Some(w) => kek.unwrap_key(&w, INDEX_AAD).ok_or(StoreError::WrongKek)?,
        None => {
            let k = Key::random()?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('index-key', ?1)",
                params![kek.wrap(&k, INDEX_AAD)?],
            )?;
            k
        }
    };
    tx.commit()?;
    Ok(key)
}

impl KeyStore {
    /// Opens (creating on first use) the key store at `path` with the KEK. The first open
    /// makes the index key; a later open with another KEK fails with [`StoreError::WrongKek`].
    pub fn open(path: &Path, kek: Key) -> Result<KeyStore, StoreError> {
        let mut db = crate::sqlite::open(path)?;
        // Freed pages are overwritten: a deleted key does not linger in the file.
        db.pragma_update(None, "secure_delete", "ON")?;
        // A key must outlive a crash once the object it opens is acknowledged.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        let index = index_key_or_create(&mut db, &kek)?;
        Ok(KeyStore { db, kek, index })
    }

    /// The key of the keyed blind indexes (handles) and of content comparison.
    pub fn index_key(&self) -> &Key {
        &self.index
    }

    /// The keys that open one study's objects, made when the study is new: its study key
    /// (wrapped by the patient's key, made too when the patient is new).
    pub fn study_key_or_create(
        &mut self,
        patient: &Handle,
        study: &Handle,
    ) -> Result<Key, StoreError> {
        // Inside [`KeyStore::in_one_transaction`]: a savepoint of its transaction (undone
        // alone when this fails); else a transaction of its own.
        if self.db.is_autocommit() {
            let tx = self
                .db
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let k = study_key_in(&self.kek, &tx, patient, study)?;
            tx.commit()?;
            Ok(k)
        } else {
            // The savepoint's statements are prepared once (this runs for every instance
            // of a STOW-RS request).
            self.db.prepare_cached("SAVEPOINT study_key")?.execute([])?;
            let k = study_key_in(&self.kek, &self.db, patient, study).and_then(|k| {
                self.db.prepare_cached("RELEASE study_key")?.execute([])?;
                Ok(k)
            });
            if k.is_err() {
                let _ = self
                    .db
                    .execute_batch("ROLLBACK TO study_key; RELEASE study_key");
            }
            k
        }
    }

    /// Runs `f` in one transaction of the key store (one commit, so one `fsync`, for all it
    /// makes): what [`KeyStore::study_key_or_create`] and [`KeyStore::new_data_key`] make
    /// in it is durable once this returns `Ok`. A step of `f` that fails undoes only its
    /// own writes; nothing is kept when the commit fails (or `f` panics).
    pub fn in_one_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut KeyStore) -> T,
    ) -> Result<T, StoreError> {
        // Prepared once: a STOW-RS request of one instance is one transaction here.
        self.db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        let out = match out {
            Ok(o) => o,
            Err(p) => {
                let _ = self.db.execute_batch("ROLLBACK");
                std::panic::resume_unwind(p)
            }
        };
        if let Err(e) = self
            .db
            .prepare_cached("COMMIT")
            .and_then(|mut c| c.execute([]))
        {
            if !self.db.is_autocommit() {
                let _ = self.db.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        Ok(out)
    }

    /// A study's key, or `None` when the study has no key (never stored, or shredded).
    pub fn study_key(&mut self, study: &Handle) -> Result<Option<Key>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = self
            .db
            .prepare_cached(
                "SELECT s.patient, s.wrapped, p.wrapped FROM study s
                 JOIN patient p ON p.handle = s.patient WHERE s.handle = ?1",
            )?
            .query_row([&study.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((patient, study_wrapped, patient_wrapped)) = row else {
            return Ok(None);
        };
        let patient_key = self
            .kek
            .unwrap_key(&patient_wrapped, &aad(PATIENT_AAD, &[&patient]))
            .ok_or_else(|| StoreError::Corrupt("a patient key does not open".into()))?;
        let key = patient_key
            .unwrap_key(&study_wrapped, &aad(STUDY_AAD, &[&study.0, &patient]))
            .ok_or_else(|| StoreError::Corrupt("a study key does not open".into()))?;
        Ok(Some(key))
    }

    /// Makes and keeps the data key of one stored object (named `object`), wrapped by its
    /// study's key; durable when this returns.
    pub fn new_data_key(
        &mut self,
        study_key: &Key,
        study: &Handle,
        instance: &Handle,
        object: &str,
    ) -> Result<Key, StoreError> {
        let k = Key::random()?;
        let a = aad(DATA_AAD, &[object.as_bytes(), &instance.0, &study.0]);
        self.db
            .prepare_cached(
                "INSERT INTO datakey (object, instance, study, wrapped) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                object,
                &instance.0[..],
                &study.0[..],
                study_key.wrap(&k, &a)?
            ])?;
        Ok(k)
    }

    /// The data key of one stored object, or `None` when it has none (shredded).
    pub fn data_key(
        &mut self,
        study_key: &Key,
        study: &Handle,
        instance: &Handle,
        object: &str,
    ) -> Result<Option<Key>, StoreError> {
        let wrapped: Option<Vec<u8>> = self
            .db
            .prepare_cached(
                "SELECT wrapped FROM datakey WHERE object = ?1 AND instance = ?2 AND study = ?3",
            )?
            .query_row(params![object, &instance.0[..], &study.0[..]], |r| r.get(0))
            .optional()?;
        let Some(w) = wrapped else { return Ok(None) };
        let a = aad(DATA_AAD, &[object.as_bytes(), &instance.0, &study.0]);
        Ok(Some(study_key.unwrap_key(&w, &a).ok_or_else(|| {
            StoreError::Corrupt("a data key does not open".into())
        })?))
    }

    /// Destroys one object's data key (an object stored in vain, or deleted).
    pub fn shred_object(&mut self, object: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM datakey WHERE object = ?1", [object])?;
        self.truncate_log()
    }

    /// Destroys the data keys of every stored copy of an instance.
    pub fn shred_instance(&mut self, instance: &Handle) -> Result<usize, StoreError> {
        let n = self
            .db
            .execute("DELETE FROM datakey WHERE instance = ?1", [&instance.0[..]])?;
        self.truncate_log()?;
        Ok(n)
    }

    /// Destroys a study's key and its objects' data keys: nothing of the study opens again,
    /// from this store or from any copy of the data.
    pub fn shred_study(&mut self, study: &Handle) -> Result<bool, StoreError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM datakey WHERE study = ?1", [&study.0[..]])?;
        let n = tx.execute("DELETE FROM study WHERE handle = ?1", [&study.0[..]])?;
        tx.commit()?;
        self.truncate_log()?;
        Ok(n > 0)
    }

    /// Destroys a patient's key and everything it wraps. Returns the studies shredded.
    pub fn shred_patient(&mut self, patient: &Handle) -> Result<Vec<Handle>, StoreError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let studies: Vec<Vec<u8>> = {
            let mut st = tx.prepare("SELECT handle FROM study WHERE patient = ?1")?;
            let rows = st.query_map([&patient.0[..]], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for s in &studies {
            tx.execute("DELETE FROM datakey WHERE study = ?1", [s])?;
        }
        tx.execute("DELETE FROM study WHERE patient = ?1", [&patient.0[..]])?;
        tx.execute("DELETE FROM patient WHERE handle = ?1", [&patient.0[..]])?;
        tx.commit()?;
        self.truncate_log()?;
        studies.iter().map(|s| Handle::from_slice(s)).collect()
    }

    /// The patient a study belongs to, if it has a key.
    pub fn patient_of(&mut self, study: &Handle) -> Result<Option<Handle>, StoreError> {
        let p: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT patient FROM study WHERE handle = ?1",
                [&study.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        p.map(|p| Handle::from_slice(&p)).transpose()
    }

    /// Re-wraps every key the KEK wraps (the patients' keys and the index key) under
    /// `new_kek`, in one transaction; nothing else is re-encrypted. Returns the number of
    /// patient keys re-wrapped.
    pub fn rotate(&mut self, new_kek: Key) -> Result<usize, StoreError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut st = tx.prepare("SELECT handle, wrapped FROM patient")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (handle, wrapped) in &rows {
            let a = aad(PATIENT_AAD, &[handle]);
            let k = self
                .kek
                .unwrap_key(wrapped, &a)
                .ok_or_else(|| StoreError::Corrupt("a patient key does not open".into()))?;
            tx.execute(
                "UPDATE patient SET wrapped = ?1 WHERE handle = ?2",
                params![new_kek.wrap(&k, &a)?, handle],
            )?;
        }
        let w: Vec<u8> =
            tx.query_row("SELECT value FROM meta WHERE name = 'index-key'", [], |r| {
                r.get(0)
            })?;
        let ik = self
            .kek
            .unwrap_key(&w, INDEX_AAD)
            .ok_or(StoreError::WrongKek)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'index-key'",
            params![new_kek.wrap(&ik, INDEX_AAD)?],
        )?;
        tx.commit()?;
        self.kek = new_kek;
        self.truncate_log()?;
        Ok(rows.len())
    }

    /// Moves the write-ahead log into the database and empties it, so that pages that held
    /// destroyed or old-wrapped keys are no longer in any file.
    fn truncate_log(&mut self) -> Result<(), StoreError> {
        self.db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The body of [`KeyStore::study_key_or_create`], in the transaction (or savepoint) `tx`.
fn study_key_in(
    kek: &Key,
    tx: &Connection,
    patient: &Handle,
    study: &Handle,
) -> Result<Key, StoreError> {
    let p_aad = aad(PATIENT_AAD, &[&patient.0]);
    let wrapped: Option<Vec<u8>> = tx
        .prepare_cached("SELECT wrapped FROM patient WHERE handle = ?1")?
        .query_row([&patient.0[..]], |r| r.get(0))
        .optional()?;
    let patient_key = match wrapped {
        Some(w) => kek
            .unwrap_key(&w, &p_aad)
            .ok_or_else(|| StoreError::Corrupt("a patient key does not open".into()))?,
        None => {
            let k = Key::random()?;
            tx.prepare_cached("INSERT INTO patient (handle, wrapped) VALUES (?1, ?2)")?
                .execute(params![&patient.0[..], kek.wrap(&k, &p_aad)?])?;
            k
        }
    };
    let s_aad = aad(STUDY_AAD, &[&study.0, &patient.0]);
    let row: Option<(Vec<u8>, Vec<u8>)> = tx
        .prepare_cached("SELECT patient, wrapped FROM study WHERE handle = ?1")?
        .query_row([&study.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let study_key = match row {
        Some((p, _)) if p != patient.0 => return Err(StoreError::StudyOfAnotherPatient),
        Some((_, w)) => patient_key
            .unwrap_key(&w, &s_aad)
            .ok_or_else(|| StoreError::Corrupt("a study key does not open".into()))?,
        None => {
            let k = Key::random()?;
            tx.prepare_cached("INSERT INTO study (handle, patient, wrapped) VALUES (?1, ?2, ?3)")?
                .execute(params![
                    &study.0[..],
                    &patient.0[..],
                    patient_key.wrap(&k, &s_aad)?
                ])?;
            k
        }
    };
    Ok(study_key)
}
