//! `consent.db`: one row per consent version, keyed by the patient's store handle and the
//! version number, the version sealed (AES-256-GCM under the consent key) with both as
//! associated data; and the logical ids of the patients' Consent resources, as keyed hashes
//! only (an EHR may choose an id that says who the patient is).

use std::path::Path;

use radveil_store::{Handle, Key};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::{Change, Consent, ConsentError};

/// Largest sealed version read back (a version is a few hundred bytes).
const MAX_SEALED: usize = 256 * 1024;

/// What the associated data of a sealed version starts with.
const AAD_LABEL: &[u8] = b"radveil-consent-v1";

pub(crate) struct Db {
    conn: rusqlite::Connection,
    /// Seals and opens versions.
    key: Key,
    /// Hashes logical ids (derived from the consent key, so one key file serves both).
    id_key: Key,
}

fn aad(patient: &Handle, version: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 32 + 8);
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(&patient.0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

fn version_of(v: i64) -> Result<u64, ConsentError> {
    u64::try_from(v).map_err(|_| ConsentError::Invalid("a stored version number is negative"))
}

fn sql_version(v: u64) -> Result<i64, ConsentError> {
    i64::try_from(v).map_err(|_| ConsentError::Invalid("version number too large"))
}

/// Opens the sealed row `version` of `patient`.
fn open_row(
    key: &Key,
    patient: &Handle,
    version: i64,
    sealed: &[u8],
) -> Result<Consent, ConsentError> {
    let version = version_of(version)?;
    if sealed.len() > MAX_SEALED {
        return Err(ConsentError::Sealed { version });
    }
    let plain = key
        .open(sealed, &aad(patient, version))
        .ok_or(ConsentError::Sealed { version })?;
    let c: Consent =
        serde_json::from_slice(&plain).map_err(|_| ConsentError::Sealed { version })?;
    if c.version != version {
        return Err(ConsentError::Sealed { version });
    }
    Ok(c)
}

/// The keyed hash a logical id is kept as.
fn id_hash(id_key: &Key, id: &str) -> Handle {
    id_key.blind("consent id", &[id.as_bytes()])
}

impl Db {
    pub(crate) fn open(path: &Path, key: Key) -> Result<Db, ConsentError> {
        let conn = rusqlite::Connection::open(path)?;
        // The file is the owner's alone, whatever the umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA secure_delete = ON;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS version (
                 patient BLOB NOT NULL,
                 version INTEGER NOT NULL,
                 sealed BLOB NOT NULL,
                 PRIMARY KEY (patient, version)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS resource (
                 id BLOB PRIMARY KEY,
                 patient BLOB NOT NULL UNIQUE
             ) WITHOUT ROWID;",
        )?;
        let id_key = Key::from_slice(&key.blind("radveil-consent id key", &[]).0)
            .map_err(|_| ConsentError::Crypto)?;
        Ok(Db { conn, key, id_key })
    }

    /// Changes whenever another connection commits (SQLite's `data_version`).
    pub(crate) fn data_version(&self) -> Result<i64, ConsentError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn open_row(
        &self,
        patient: &Handle,
        version: i64,
        sealed: &[u8],
    ) -> Result<Consent, ConsentError> {
        open_row(&self.key, patient, version, sealed)
    }

    pub(crate) fn latest(&self, patient: &Handle) -> Result<Option<Consent>, ConsentError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT version, sealed FROM version WHERE patient = ?1 ORDER BY version DESC LIMIT 1",
            )?
            .query_row([&patient.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(v, s)| self.open_row(patient, v, &s)).transpose()
    }

    pub(crate) fn one(
        &self,
        patient: &Handle,
        version: u64,
    ) -> Result<Option<Consent>, ConsentError> {
        let v = sql_version(version)?;
        let row: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT sealed FROM version WHERE patient = ?1 AND version = ?2")?
            .query_row(params![&patient.0[..], v], |r| r.get(0))
            .optional()?;
        row.map(|s| self.open_row(patient, v, &s)).transpose()
    }

    pub(crate) fn all(&self, patient: &Handle) -> Result<Vec<Consent>, ConsentError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, sealed FROM version WHERE patient = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([&patient.0[..]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (v, s) = row?;
            out.push(self.open_row(patient, v, &s)?);
        }
        Ok(out)
    }

    fn id_hash(&self, id: &str) -> Handle {
        id_hash(&self.id_key, id)
    }

    pub(crate) fn patient_of(&self, id: &str) -> Result<Option<Handle>, ConsentError> {
        let h = self.id_hash(id);
        let p: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT patient FROM resource WHERE id = ?1")?
            .query_row([&h.0[..]], |r| r.get(0))
            .optional()?;
        p.map(|p| {
            <[u8; 32]>::try_from(p.as_slice())
                .map(Handle)
                .map_err(|_| ConsentError::Invalid("a stored patient handle is not 32 bytes"))
        })
        .transpose()
    }

    /// Appends the version `make` builds from the current one, in one immediate transaction
    /// (another writer, in this process or another, waits).
    pub(crate) fn append(
        &mut self,
        patient: &Handle,
        make: impl FnOnce(Option<&Consent>) -> Result<Change, ConsentError>,
    ) -> Result<Change, ConsentError> {
        let Db { conn, key, id_key } = self;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read inside the transaction: the version made follows the one there now.
        let latest: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT version, sealed FROM version WHERE patient = ?1 ORDER BY version DESC LIMIT 1",
                [&patient.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let previous = match latest {
            Some((v, s)) => Some(open_row(key, patient, v, &s)?),
            None => None,
        };
        let change = make(previous.as_ref())?;
        let c = &change.consent;
        let h = id_hash(id_key, &c.id);
        let owner: Option<Vec<u8>> = tx
            .query_row(
                "SELECT patient FROM resource WHERE id = ?1",
                [&h.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        match owner {
            Some(p) if p.as_slice() != patient.0.as_slice() => return Err(ConsentError::IdTaken),
            Some(_) => {}
            None => {
                // A patient has one Consent resource: a second id for them is refused by
                // the UNIQUE constraint, reported as such.
                let other: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM resource WHERE patient = ?1",
                        [&patient.0[..]],
                        |r| r.get(0),
                    )
                    .optional()?;
                if other.is_some() {
                    return Err(ConsentError::OtherId);
                }
                tx.execute(
                    "INSERT INTO resource (id, patient) VALUES (?1, ?2)",
                    params![&h.0[..], &patient.0[..]],
                )?;
            }
        }
        let plain = serde_json::to_vec(c).map_err(|_| ConsentError::Crypto)?;
        let sealed = key
            .seal(&plain, &aad(patient, c.version))
            .map_err(|_| ConsentError::Crypto)?;
        tx.execute(
            "INSERT INTO version (patient, version, sealed) VALUES (?1, ?2, ?3)",
            params![&patient.0[..], sql_version(c.version)?, sealed],
        )?;
        tx.commit()?;
        Ok(change)
    }

    /// Test helper: the raw rows, to move them around.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &rusqlite::Connection {
        &self.conn
    }
}
