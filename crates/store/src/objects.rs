//! Where sealed objects are kept, behind one interface ([`Objects`]) that a local folder
//! ([`LocalFolder`]) and any `object_store` ([`ObjectStoreObjects`]: S3-compatible storage
//! later) both fill. The store writes, reads and removes objects only through it, so its
//! one put path ([`crate::Store::put_many`]) serves every kind of storage.
//!
//! Objects are named by the study's handle (a folder, or a key prefix) and an object name
//! made of handles and random digits: nothing identifying. The methods block; the store
//! calls them from its blocking tasks, never on the async runtime's threads.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{Handle, StoreError};

/// Where sealed objects are kept. Durability: after [`Objects::put`] of each object of a
/// batch and [`Objects::sync`] of their studies, every one of them survives a crash of the
/// process and of the machine; the store acknowledges nothing before.
pub trait Objects: Send + Sync + 'static {
    /// Writes the new object `name` of `study` (never over another: an existing one is an
    /// error). `sealed` is handed over, so a store that needs an owned buffer copies nothing.
    fn put(&self, study: &Handle, name: &str, sealed: Vec<u8>) -> Result<(), StoreError>;
    /// Makes durable what [`Objects::put`] wrote under these studies (a local folder
    /// `fsync`s their folders' entries; a store whose writes are durable when acknowledged
    /// does nothing).
    fn sync(&self, studies: &BTreeSet<Handle>) -> Result<(), StoreError>;
    /// An object, read whole; `None` when there is none of that name.
    fn get(&self, study: &Handle, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes an object; one already gone is not an error.
    fn delete(&self, study: &Handle, name: &str) -> Result<(), StoreError>;
}

/// Objects as files in a local folder: `FOLDER/<study handle>/<name>`, folders 0700 and
/// files 0600, each file `fsync`ed when written and its folders' entries by
/// [`Objects::sync`] (the `object_store` crate's local store writes without `fsync`).
#[derive(Debug, Clone)]
pub struct LocalFolder {
    root: PathBuf,
}

impl LocalFolder {
    /// Objects under `root` (created by [`crate::Layout::create_dirs`]).
    pub fn new(root: impl Into<PathBuf>) -> LocalFolder {
        LocalFolder { root: root.into() }
    }

    fn folder(&self, study: &Handle) -> PathBuf {
        self.root.join(study.hex())
    }
}

impl Objects for LocalFolder {
    fn put(&self, study: &Handle, name: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let folder = self.folder(study);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&folder)?;
        let path = folder.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        if let Err(e) = f.write_all(&sealed).and_then(|()| f.sync_all()) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(())
    }

    fn sync(&self, studies: &BTreeSet<Handle>) -> Result<(), StoreError> {
        // Each study folder's entries, then the root's (new study folders), once a batch.
        for f in studies
            .iter()
            .map(|s| self.folder(s))
            .chain(std::iter::once(self.root.clone()))
        {
            std::fs::File::open(&f)?.sync_all()?;
        }
        Ok(())
    }

    fn get(&self, study: &Handle, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.folder(study).join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, study: &Handle, name: &str) -> Result<(), StoreError> {
        match std::fs::remove_file(self.folder(study).join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Objects in any `object_store` (S3-compatible storage, an in-memory store for tests) at
/// `<study handle>/<name>`. Its writes are taken as durable when the store acknowledges
/// them, as S3's are. Its calls are driven by the tokio runtime the store's blocking tasks
/// belong to (a multi-threaded runtime, whose workers drive network I/O).
#[derive(Debug, Clone)]
pub struct ObjectStoreObjects {
    store: Arc<dyn ObjectStore>,
}

impl ObjectStoreObjects {
    /// Objects kept in `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> ObjectStoreObjects {
        ObjectStoreObjects { store }
    }

    fn path(study: &Handle, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}", study.hex()))
    }
}

/// Runs an `object_store` call to completion from one of the store's blocking tasks.
fn wait<T>(f: impl std::future::Future<Output = T>) -> Result<T, StoreError> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Join("object store used outside the runtime".into()))?;
    Ok(rt.block_on(f))
}

impl Objects for ObjectStoreObjects {
    fn put(&self, study: &Handle, name: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        let path = Self::path(study, name);
        wait(self.store.put_opts(
            &path,
            PutPayload::from(sealed),
            PutOptions::from(PutMode::Create),
        ))??;
        Ok(())
    }

    fn sync(&self, _studies: &BTreeSet<Handle>) -> Result<(), StoreError> {
        Ok(())
    }

    fn get(&self, study: &Handle, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = Self::path(study, name);
        wait(async {
            match self.store.get(&path).await {
                Ok(g) => Ok(Some(g.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })?
    }

    fn delete(&self, study: &Handle, name: &str) -> Result<(), StoreError> {
        let path = Self::path(study, name);
        match wait(self.store.delete(&path))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
