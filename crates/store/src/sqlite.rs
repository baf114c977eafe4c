//! Opening the store's SQLite files: created mode 0600 (never following a link), in
//! write-ahead-log mode, waiting for a busy lock rather than failing.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// How long a writer waits for another's lock before giving up.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Opens the database file at `path`, creating it (mode 0600, exclusively, no symlink
/// followed) when missing.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    create_private(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Io(e),
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
    Ok(db)
}

/// Creates an empty file with mode 0600 when nothing is at `path` (the databases of a data
/// folder: the index, consents, lineage, shares, uploads, care teams); a symbolic link or
/// anything but a regular file there is an error (`InvalidData`), never followed.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        path,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(_) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            if std::fs::symlink_metadata(path)?.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a regular file", path.display()),
                ))
            }
        }
        Err(e) => Err(e.into()),
    }
}
