//! The index of stored objects: which object holds an instance, and the instance's sealed
//! attributes. It holds no identifier in plaintext: patients, studies, series and
//! instances are named by their keyed blind indexes ([`Handle`]s), and what a query needs
//! to show is sealed under the study's key, so it is shredded with the study.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::Handle;
use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instance (
    handle BLOB PRIMARY KEY,
    study BLOB NOT NULL,
    series BLOB NOT NULL,
    patient BLOB NOT NULL,
    object TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    meta BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instance_study ON instance (study, series);
CREATE INDEX IF NOT EXISTS instance_patient ON instance (patient);
CREATE TABLE IF NOT EXISTS metadata (
    handle BLOB PRIMARY KEY,
    sealed BLOB NOT NULL
) WITHOUT ROWID;
";

/// One stored instance as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The instance (SOP Instance UID's handle).
    pub instance: Handle,
    /// Its study.
    pub study: Handle,
    /// Its series.
    pub series: Handle,
    /// Its patient.
    pub patient: Handle,
    /// The name of the object that holds it, sealed.
    pub object: String,
    /// Bytes of the instance (plaintext).
    pub size: u64,
    /// Keyed hash of the instance's bytes, to tell an identical second copy from another.
    pub content: Handle,
    /// Attributes sealed under the study key.
    pub meta: Vec<u8>,
}

/// What inserting a row found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The row is in.
    New,
    /// The instance was already there, with this row.
    Exists(Box<Row>),
}

/// The SQLite index.
pub struct Index {
    db: Connection,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index(..)")
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let h = |i: usize| -> rusqlite::Result<Handle> {
        let b: Vec<u8> = r.get(i)?;
        Handle::from_slice(&b).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, e.into())
        })
    };
    let size: i64 = r.get(5)?;
    Ok(Row {
        instance: h(0)?,
        study: h(1)?,
        series: h(2)?,
        patient: h(3)?,
        object: r.get(4)?,
        size: u64::try_from(size).unwrap_or(0),
        content: h(6)?,
        meta: r.get(7)?,
    })
}

const COLUMNS: &str = "handle, study, series, patient, object, size, content, meta";

impl Index {
    /// Opens (creating on first use) the index at `path`.
    pub fn open(path: &Path) -> Result<Index, StoreError> {
        let db = crate::sqlite::open(path)?;
        // An acknowledged instance must survive a crash of the machine too.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Index { db })
    }

    /// Inserts the row unless the instance is already there; then returns what is there.
    pub fn insert(&mut self, r: &Row) -> Result<Inserted, StoreError> {
        self.insert_with_metadata(r, None)
    }

    /// [`Index::insert`], with the instance's sealed metadata copy (see
    /// [`crate::Store::put_with_metadata`]) kept in the same transaction.
    pub fn insert_with_metadata(
        &mut self,
        r: &Row,
        metadata: Option<&[u8]>,
    ) -> Result<Inserted, StoreError> {
        let mut found = self.insert_many(&[(r.clone(), metadata.map(<[u8]>::to_vec))])?;
        found
            .pop()
            .ok_or_else(|| StoreError::Batch("an insert answered nothing".into()))
    }

    /// [`Index::insert_with_metadata`] for several rows in one transaction (one commit,
    /// so one `fsync`, for a whole request): for each row, in order, what the insert found.
    /// Nothing is inserted when the transaction fails.
    pub fn insert_many(
        &mut self,
        rows: &[(Row, Option<Vec<u8>>)],
    ) -> Result<Vec<Inserted>, StoreError> {
        // BEGIN and COMMIT are statements prepared once (one STOW-RS request is one
        // transaction here, so their parsing was a part of every instance's cost).
        self.db.prepare_cached("BEGIN")?.execute([])?;
        let out = self.insert_rows(rows).and_then(|out| {
            self.db.prepare_cached("COMMIT")?.execute([])?;
            Ok(out)
        });
        if out.is_err() && !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
        out
    }

    /// The inserts of [`Index::insert_many`], inside its transaction. The row goes in
    /// unless the instance's handle (the primary key) is taken: that constraint, checked
    /// in the transaction, is what answers a concurrent store of the same instance, so the
    /// row there is looked up only when the insert did nothing.
    fn insert_rows(&self, rows: &[(Row, Option<Vec<u8>>)]) -> Result<Vec<Inserted>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        let mut find = self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM instance WHERE handle = ?1"))?;
        let mut insert = self.db.prepare_cached(&format!(
            "INSERT INTO instance ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (handle) DO NOTHING"
        ))?;
        let mut forget = self
            .db
            .prepare_cached("DELETE FROM metadata WHERE handle = ?1")?;
        // A copy left by an instance removed earlier is replaced.
        let mut keep = self
            .db
            .prepare_cached("INSERT OR REPLACE INTO metadata (handle, sealed) VALUES (?1, ?2)")?;
        for (r, metadata) in rows {
            let n = insert.execute(params![
                &r.instance.0[..],
                &r.study.0[..],
                &r.series.0[..],
                &r.patient.0[..],
                r.object,
                i64::try_from(r.size).map_err(|_| StoreError::TooLarge)?,
                &r.content.0[..],
                r.meta,
            ])?;
            if n == 0 {
                let e = find.query_row([&r.instance.0[..]], row)?;
                out.push(Inserted::Exists(Box::new(e)));
                continue;
            }
            match metadata {
                Some(m) => keep.execute(params![&r.instance.0[..], m])?,
                // A copy left by an instance removed earlier goes.
                None => forget.execute([&r.instance.0[..]])?,
            };
            out.push(Inserted::New);
        }
        Ok(out)
    }

    /// The row of an instance.
    pub fn get(&self, instance: &Handle) -> Result<Option<Row>, StoreError> {
        Ok(self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM instance WHERE handle = ?1"))?
            .query_row([&instance.0[..]], row)
            .optional()?)
    }

    /// The rows of a study, or of one series of it, in a stable order.
    pub fn of_study(
        &self,
        study: &Handle,
        series: Option<&Handle>,
    ) -> Result<Vec<Row>, StoreError> {
        let mut st;
        let rows = match series {
            Some(s) => {
                st = self.db.prepare(&format!(
                    "SELECT {COLUMNS} FROM instance WHERE study = ?1 AND series = ?2 ORDER BY handle"
                ))?;
                st.query_map(params![&study.0[..], &s.0[..]], row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                st = self.db.prepare(&format!(
                    "SELECT {COLUMNS} FROM instance WHERE study = ?1 ORDER BY series, handle"
                ))?;
                st.query_map([&study.0[..]], row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// The sealed metadata copy of an instance, if one was kept when it was stored.
    pub fn metadata(&self, instance: &Handle) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT sealed FROM metadata WHERE handle = ?1",
                [&instance.0[..]],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Keeps a sealed metadata copy for an instance stored without one, if its row still
    /// names `object` and it has none yet; returns whether it was kept.
    pub fn add_metadata(
        &mut self,
        instance: &Handle,
        object: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.db.execute(
            "INSERT OR IGNORE INTO metadata (handle, sealed) \
             SELECT handle, ?3 FROM instance WHERE handle = ?1 AND object = ?2",
            params![&instance.0[..], object, sealed],
        )?;
        Ok(n > 0)
    }

    /// The studies of a patient.
    pub fn studies_of(&self, patient: &Handle) -> Result<Vec<Handle>, StoreError> {
        let mut st = self
            .db
            .prepare("SELECT DISTINCT study FROM instance WHERE patient = ?1")?;
        let rows = st
            .query_map([&patient.0[..]], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.iter().map(|b| Handle::from_slice(b)).collect()
    }

    /// Removes the rows of a study (or one series, or one instance of it); returns them.
    pub fn remove(
        &mut self,
        study: &Handle,
        series: Option<&Handle>,
        instance: Option<&Handle>,
    ) -> Result<Vec<Row>, StoreError> {
        let gone: Vec<Row> = self
            .of_study(study, series)?
            .into_iter()
            .filter(|r| instance.is_none_or(|i| *i == r.instance))
            .collect();
        let tx = self.db.transaction()?;
        for r in &gone {
            tx.execute(
                "DELETE FROM instance WHERE handle = ?1",
                [&r.instance.0[..]],
            )?;
            tx.execute(
                "DELETE FROM metadata WHERE handle = ?1",
                [&r.instance.0[..]],
            )?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Calls `each` with every row, study by study (then series, then instance), reading
    /// one row at a time: how a catalogue of the whole store is built without holding every
    /// row in memory at once. Stops at the first error `each` returns.
    pub fn for_each(
        &self,
        mut each: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self.db.prepare(&format!(
            "SELECT {COLUMNS} FROM instance ORDER BY study, series, handle"
        ))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            each(row(r)?)?;
        }
        Ok(())
    }

    /// Calls `each` with the rows of one series of a study, in handle order, reading one row
    /// at a time, until `each` answers `false` (an instance-level search that has found
    /// what it needs reads no further). Stops at the first error `each` returns.
    pub fn for_each_in_series(
        &self,
        study: &Handle,
        series: &Handle,
        mut each: impl FnMut(Row) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self.db.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM instance WHERE study = ?1 AND series = ?2 ORDER BY handle"
        ))?;
        let mut rows = st.query(params![&study.0[..], &series.0[..]])?;
        while let Some(r) = rows.next()? {
            if !each(row(r)?)? {
                break;
            }
        }
        Ok(())
    }

    /// Every object name the index refers to (to find objects left by a crash).
    pub fn objects(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut st = self.db.prepare("SELECT object FROM instance")?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Handle {
        Handle([n; 32])
    }

    fn row_of(n: u8, object: &str) -> Row {
        Row {
            instance: h(n),
            study: h(100),
            series: h(101),
            patient: h(102),
            object: object.into(),
            size: 10,
            content: h(n.wrapping_add(50)),
            meta: vec![n],
        }
    }

    #[test]
    fn a_taken_handle_answers_the_row_there_and_a_failed_batch_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let a = row_of(1, "a.1");
        let found = ix
            .insert_many(&[
                (a.clone(), Some(b"copy a".to_vec())),
                (row_of(1, "a.2"), Some(b"copy a2".to_vec())),
                (row_of(2, "b.1"), None),
            ])
            .unwrap();
        assert_eq!(
            found,
            [
                Inserted::New,
                Inserted::Exists(Box::new(a.clone())),
                Inserted::New
            ]
        );
        assert_eq!(ix.get(&h(1)).unwrap(), Some(a.clone()));
        assert_eq!(ix.metadata(&h(1)).unwrap().as_deref(), Some(&b"copy a"[..]));
        assert_eq!(ix.metadata(&h(2)).unwrap(), None);

        // A row that cannot go in (its size does not fit the column) undoes the batch,
        // and the index takes the next one.
        let mut big = row_of(4, "d.1");
        big.size = u64::MAX;
        let r = ix.insert_many(&[(row_of(3, "c.1"), None), (big, None)]);
        assert!(matches!(r, Err(StoreError::TooLarge)), "{r:?}");
        assert_eq!(ix.get(&h(3)).unwrap(), None);
        assert_eq!(
            ix.insert_many(&[(row_of(3, "c.2"), None)]).unwrap(),
            [Inserted::New]
        );

        // A copy left by a removed instance is replaced, or goes when none comes.
        ix.remove(&h(100), None, Some(&h(1))).unwrap();
        ix.remove(&h(100), None, Some(&h(2))).unwrap();
        assert!(ix.add_metadata(&h(3), "c.2", b"old c").unwrap());
        ix.db
            .execute(
                "INSERT INTO metadata (handle, sealed) VALUES (?1, 'stale')",
                [&h(2).0[..]],
            )
            .unwrap();
        let found = ix
            .insert_many(&[
                (row_of(1, "a.3"), Some(b"copy a3".to_vec())),
                (row_of(2, "b.2"), None),
            ])
            .unwrap();
        assert_eq!(found, [Inserted::New, Inserted::New]);
        assert_eq!(
            ix.metadata(&h(1)).unwrap().as_deref(),
            Some(&b"copy a3"[..])
        );
        assert_eq!(ix.metadata(&h(2)).unwrap(), None);
        assert_eq!(ix.metadata(&h(3)).unwrap().as_deref(), Some(&b"old c"[..]));
    }
}
