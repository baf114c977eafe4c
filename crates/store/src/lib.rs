//! `radveil-store`: the gateway's image store, where nothing identifying is on disk in
//! plaintext.
//!
//! - Each stored instance is sealed (AES-256-GCM) under a data key of its own, with its
//!   identity as associated data; the object is named by keyed handles, never by a UID.
//! - Data keys are wrapped by their study's key, study keys by their patient's key, patient
//!   keys by the operator's key-encryption key (KEK). All wrapped keys live in the
//!   [`keystore`], a file kept apart from the data: deleting a study or a patient deletes its
//!   keys, so no copy of the data (a backup taken before) opens again (crypto-shredding).
//! - The [`index`] names everything by keyed blind indexes ([`crypto::Handle`]) and keeps
//!   what queries show sealed under the study key.
//! - Objects are kept behind one interface, [`objects::Objects`]: a local folder now
//!   ([`objects::LocalFolder`]), any `object_store` (S3-compatible storage) through
//!   [`objects::ObjectStoreObjects`]. Every instance is stored by one path
//!   ([`Store::put_many`]; one instance is a batch of one).
//!
//! Layout of a data directory (see [`Layout`]): `index.db` (the index), `objects/` (the
//! sealed instances), and by default `keys/keys.db` (the key store), which backups of the
//! data must leave out for crypto-shredding to reach them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod index;
pub mod keystore;
pub mod objects;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use crypto::{Handle, Key};
pub use index::Row;
use index::{Index, Inserted};
use keystore::KeyStore;
pub use objects::Objects;
pub use sqlite::create_private;

/// What can go wrong in the store. Messages name handles and files, never an identifier.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key store does not open with the KEK given.
    #[error("the key-encryption key does not open this key store (a different key?)")]
    WrongKek,
    /// A key file's text is not 64 hexadecimal digits.
    #[error("a key is 64 hex digits (make one with `radveil keygen FILE`)")]
    KeyText,
    /// The operating system's random source failed.
    #[error("no random numbers: {0}")]
    Random(String),
    /// Encryption failed.
    #[error("encryption failed")]
    Crypto,
    /// A stored object does not open: it was altered (or its key does not fit it).
    #[error("stored object {0} fails its integrity check (altered or corrupt); not served")]
    Tampered(String),
    /// The instance, series or study is not in the store (or was deleted).
    #[error("not found")]
    NotFound,
    /// A study already stored for one patient arrived for another.
    #[error("the study is stored for another patient")]
    StudyOfAnotherPatient,
    /// A different object with the same SOP Instance UID is stored.
    #[error("another object with the same SOP Instance UID is stored")]
    Conflict,
    /// Sizes beyond what the index records.
    #[error("object too large")]
    TooLarge,
    /// A file of the store is not what it should be.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    /// A file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A blocking task did not finish (the runtime shut down).
    #[error("internal: {0}")]
    Join(String),
    /// The index rows of a [`Store::put_many`] batch were not committed (why, as the
    /// failure said it): none of its instances is stored.
    #[error("the instances were not indexed: {0}")]
    Batch(String),
}

/// Where the parts of a store are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The index database.
    pub index: PathBuf,
    /// The folder of sealed objects.
    pub objects: PathBuf,
    /// The key store database (keep it, and its backups, apart from the data's).
    pub keys: PathBuf,
}

impl Layout {
    /// The default layout under a data directory: `index.db`, `objects/`, `keys/keys.db`.
    pub fn under(dir: &Path) -> Layout {
        Layout {
            index: dir.join("index.db"),
            objects: dir.join("objects"),
            keys: dir.join("keys").join("keys.db"),
        }
    }

    /// Creates the folders (mode 0700) that do not exist yet.
    pub fn create_dirs(&self) -> Result<(), StoreError> {
        for d in [
            self.index.parent(),
            Some(self.objects.as_path()),
            self.keys.parent(),
        ]
        .into_iter()
        .flatten()
        {
            if !d.as_os_str().is_empty() {
                create_private_dir(d)?;
            }
        }
        Ok(())
    }
}

fn create_private_dir(d: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)?;
    let meta = std::fs::symlink_metadata(d)?;
    if !meta.is_dir() {
        return Err(StoreError::Corrupt(format!(
            "{} is not a directory",
            d.display()
        )));
    }
    // The mode asked for is reduced by the umask; the store's folders are private whatever
    // the umask.
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The identifiers of one instance, as read from it. The store keeps none of them.
#[derive(Debug, Clone, Copy)]
pub struct InstanceIds<'a> {
    /// Patient ID (0010,0020).
    pub patient_id: &'a str,
    /// Issuer of Patient ID (0010,0021), empty when absent.
    pub issuer: &'a str,
    /// Study Instance UID (0020,000D).
    pub study: &'a str,
    /// Series Instance UID (0020,000E).
    pub series: &'a str,
    /// SOP Instance UID (0008,0018).
    pub instance: &'a str,
}

/// The handles of one instance's identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handles {
    /// The patient's.
    pub patient: Handle,
    /// The study's.
    pub study: Handle,
    /// The series'.
    pub series: Handle,
    /// The instance's.
    pub instance: Handle,
}

/// What a store request did with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored.
    Stored,
    /// The same bytes were already stored; nothing changed.
    AlreadyStored,
}

/// What a deletion destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deleted {
    /// Instances removed from the index.
    pub instances: usize,
}

/// Magic at the start of every sealed object, with the format's version.
const OBJECT_MAGIC: &[u8; 4] = b"RVS1";
/// Associated data of a sealed object.
const OBJECT_AAD: &[u8] = b"radveil/object/v1";
/// Associated data of sealed attributes.
const META_AAD: &[u8] = b"radveil/meta/v1";
/// Associated data of an instance's sealed metadata copy.
const METADATA_AAD: &[u8] = b"radveil/metadata/v1";

struct Inner {
    keys: Mutex<KeyStore>,
    index: Mutex<Index>,
    objects: Arc<dyn Objects>,
    index_key: Key,
    /// Makes the metadata copy of an instance from its bytes when the caller of
    /// [`Store::put`] gives none ([`Store::keep_metadata`]).
    metadata_maker: std::sync::OnceLock<MetadataMaker>,
}

/// Makes the metadata copy of an instance from its Part 10 bytes (`None`: no copy).
pub type MetadataMaker = fn(&[u8]) -> Option<Vec<u8>>;

/// The store: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store(..)")
    }
}

/// Runs blocking database work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite's own state consistent (the transaction
    // rolls back when dropped), so the guard is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Domain of the content handle of rows written before content handles were made from
/// the SHA-256 digest: a keyed hash of the whole object (see [`same_content`]).
const CONTENT_V1: &str = "content";
/// Domain of the content handle: a keyed hash of the object's SHA-256 digest, so bytes
/// hashed once (for the ledger) are not hashed again for the store.
const CONTENT_V2: &str = "content/sha256";

/// The content handle of an object of SHA-256 digest `digest`: tells two copies of an
/// instance apart without the index holding a plain hash of the bytes.
fn content_handle(index_key: &Key, digest: &[u8; 32]) -> Handle {
    index_key.blind(CONTENT_V2, &[digest])
}

/// Whether a stored row's content handle is that of `bytes` (whose handle is `content`):
/// rows stored before content handles were made from the digest hold the keyed hash of
/// the whole object instead, recomputed only when the new handle differs.
fn same_content(index_key: &Key, stored: &Handle, content: &Handle, bytes: &[u8]) -> bool {
    stored == content || *stored == index_key.blind(CONTENT_V1, &[bytes])
}

fn object_aad(object: &str, h: &Handles) -> Vec<u8> {
    let mut a = OBJECT_AAD.to_vec();
    for p in [object.as_bytes(), &h.instance.0, &h.study.0] {
        a.extend_from_slice(&(p.len() as u64).to_be_bytes());
        a.extend_from_slice(p);
    }
    a
}

/// The metadata copy is bound to its object and instance like the object itself, under
/// another label, so neither opens as the other and a copy moved to another row does not
/// open.
fn metadata_aad(object: &str, instance: &Handle, study: &Handle) -> Vec<u8> {
    let mut a = METADATA_AAD.to_vec();
    for p in [object.as_bytes(), &instance.0, &study.0] {
        a.extend_from_slice(&(p.len() as u64).to_be_bytes());
        a.extend_from_slice(p);
    }
    a
}

fn meta_aad(h: &Handle) -> Vec<u8> {
    let mut a = META_AAD.to_vec();
    a.extend_from_slice(&h.0);
    a
}

impl Store {
    /// Opens the store laid out as `layout` with the key-encryption key, creating what is
    /// missing on first use.
    pub fn open(layout: &Layout, kek: Key) -> Result<Store, StoreError> {
        let objects = Arc::new(objects::LocalFolder::new(&layout.objects));
        Store::open_with_objects(layout, kek, objects)
    }

    /// [`Store::open`] with the sealed objects kept in `objects` rather than in the
    /// layout's folder (which is then left empty): the index and the key store stay where
    /// the layout says.
    pub fn open_with_objects(
        layout: &Layout,
        kek: Key,
        objects: Arc<dyn Objects>,
    ) -> Result<Store, StoreError> {
        layout.create_dirs()?;
        let keys = KeyStore::open(&layout.keys, kek)?;
        let index = Index::open(&layout.index)?;
        let index_key = keys.index_key().clone();
        Ok(Store {
            inner: Arc::new(Inner {
                keys: Mutex::new(keys),
                index: Mutex::new(index),
                objects,
                index_key,
                metadata_maker: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The handles of an instance's identifiers.
    pub fn handles(&self, ids: &InstanceIds<'_>) -> Handles {
        let k = &self.inner.index_key;
        Handles {
            patient: self.patient(ids.patient_id, ids.issuer),
            study: k.blind("study", &[ids.study.as_bytes()]),
            series: k.blind("series", &[ids.series.as_bytes()]),
            instance: k.blind("instance", &[ids.instance.as_bytes()]),
        }
    }

    /// The handle of a patient (Patient ID with its issuer).
    pub fn patient(&self, patient_id: &str, issuer: &str) -> Handle {
        self.inner
            .index_key
            .blind("patient", &[issuer.as_bytes(), patient_id.as_bytes()])
    }

    /// The handle of a study, series or instance UID at that level.
    pub fn uid(&self, level: Level, uid: &str) -> Handle {
        self.inner
            .index_key
            .blind(level.domain(), &[uid.as_bytes()])
    }

    /// Stores one instance (`bytes`, its Part 10 file) with attributes for the index
    /// (`meta`, sealed under the study key). Acknowledge only after this returns `Ok`: the
    /// object, its key and its index row are then durable. A second copy of a stored
    /// instance is [`PutOutcome::AlreadyStored`] when identical and [`StoreError::Conflict`]
    /// otherwise.
    pub async fn put(
        &self,
        ids: &InstanceIds<'_>,
        bytes: Bytes,
        meta: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        self.put_with_metadata(ids, bytes, meta, None).await
    }

    /// From now on, every instance stored without a metadata copy of its own gets one made
    /// by `maker` from its bytes (the web layer's DICOM JSON of the data set without its
    /// bulk values): so each instance stored through any path keeps one. The first maker
    /// given stays.
    pub fn keep_metadata(&self, maker: MetadataMaker) {
        let _ = self.inner.metadata_maker.set(maker);
    }

    /// [`Store::put`], also keeping `metadata` (or, when `None`, what the maker given to
    /// [`Store::keep_metadata`] makes of `bytes`): a copy of the instance's data set without
    /// its bulk values (the web layer's DICOM JSON), sealed under the instance's own data
    /// key with its identity as associated data, so WADO-RS metadata is answered without
    /// opening the object, and the copy is shredded with the instance, its study and its
    /// patient. Read back with [`Store::metadata`].
    pub async fn put_with_metadata(
        &self,
        ids: &InstanceIds<'_>,
        bytes: Bytes,
        meta: &[u8],
        metadata: Option<&[u8]>,
    ) -> Result<PutOutcome, StoreError> {
        let one = Put {
            ids: *ids,
            bytes,
            meta: meta.to_vec(),
            metadata: metadata.map(<[u8]>::to_vec),
            sha256: None,
        };
        self.put_many(vec![one])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Join("no outcome".into())))
    }

    /// Stores the instances of one request: the one put path (one instance is a batch of
    /// one), run in one blocking task. What is already stored is sorted out; the keys of
    /// the rest are made in one key-store transaction, durable before any object is
    /// written; each object is written through [`Objects`] and the batch's objects made
    /// durable ([`Objects::sync`]) before every index row goes in in one transaction (one
    /// commit). An instance is acknowledged only after this returns its `Ok`, when its
    /// object, its key and its row are durable; what fails for one instance is its own
    /// result only (when the final commit fails, every instance's). Results are in the
    /// order of `items`.
    pub async fn put_many(&self, items: Vec<Put<'_>>) -> Vec<Result<PutOutcome, StoreError>> {
        let n = items.len();
        let owned: Vec<Pending> = items
            .into_iter()
            .map(|it| Pending {
                h: self.handles(&it.ids),
                bytes: it.bytes,
                meta: it.meta,
                metadata: it.metadata,
                sha256: it.sha256,
            })
            .collect();
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || put_batch(&inner, owned)).await {
            Ok(r) => r,
            Err(e) => (0..n)
                .map(|_| Err(StoreError::Join(e.to_string())))
                .collect(),
        }
    }

    /// The index row of an instance, checked to belong to the study (and series) named.
    async fn row(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Handle,
    ) -> Result<Row, StoreError> {
        let inner = self.inner.clone();
        let row = blocking(move || lock(&inner.index).get(&instance)).await?;
        match row {
            Some(r) if r.study == study && series.is_none_or(|s| s == r.series) => Ok(r),
            _ => Err(StoreError::NotFound),
        }
    }

    /// The index row of an instance, checked to belong to the study (and series) named:
    /// [`StoreError::NotFound`] otherwise. Whose it is ([`Row::patient`]) can then be
    /// checked before [`Store::open_row`] opens it.
    pub async fn instance_row(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Handle,
    ) -> Result<Row, StoreError> {
        self.row(study, series, instance).await
    }

    /// The bytes of a stored instance, opened and checked; an altered object is
    /// [`StoreError::Tampered`] and never returned.
    pub async fn get(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Handle,
    ) -> Result<Vec<u8>, StoreError> {
        let r = self.row(study, series, instance).await?;
        self.open_row(&r).await
    }

    /// Opens the object of an index row: its key looked up, the object read and opened in
    /// place, in one blocking task.
    pub async fn open_row(&self, r: &Row) -> Result<Vec<u8>, StoreError> {
        let inner = self.inner.clone();
        let r = r.clone();
        blocking(move || open_object(&inner, &r)).await
    }

    /// [`Store::open_row`] on the calling thread, for a caller that owns its threads (a
    /// research export's workers): no hand-off to the runtime's blocking pool per object.
    /// The thread must not be one of the runtime's async workers, and must have entered the
    /// runtime (`Runtime::enter`): an object-store backend drives its calls on it.
    pub fn open_row_here(&self, r: &Row) -> Result<Vec<u8>, StoreError> {
        open_object(&self.inner, r)
    }

    /// The bytes of one instance for a reader allowed to see `allowed` rows, in one
    /// blocking task: its row looked up alone and checked to belong to the study (and
    /// series) named, then (when `allowed` says the reader may see it) its object opened
    /// and checked. A row the reader may not see is [`StoreError::NotFound`], exactly as a
    /// missing one.
    pub async fn open_instance(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Handle,
        allowed: impl FnOnce(&Row) -> bool + Send + 'static,
    ) -> Result<Vec<u8>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let row = lock(&inner.index).get(&instance)?;
            match row {
                Some(r)
                    if r.study == study && series.is_none_or(|s| s == r.series) && allowed(&r) =>
                {
                    open_object(&inner, &r)
                }
                _ => Err(StoreError::NotFound),
            }
        })
        .await
    }

    /// The metadata copies of index rows (see [`Store::put_with_metadata`]), opened in one
    /// blocking task that looks the study key up once per study: for each row, in order,
    /// `Ok(Some(copy))`, `Ok(None)` when the instance was stored without one (before copies
    /// were kept: the caller opens the object instead), [`StoreError::Tampered`] when the
    /// copy does not open (altered or moved; never returned), [`StoreError::NotFound`] when
    /// its keys are gone. Only the copies are read: no object is opened.
    pub async fn metadata(
        &self,
        rows: Vec<Row>,
    ) -> Result<Vec<Result<Option<Vec<u8>>, StoreError>>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut keys = lock(&inner.keys);
            let index = lock(&inner.index);
            let mut current: Option<(Handle, Option<Key>)> = None;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let Some(sealed) = index.metadata(&r.instance)? else {
                    out.push(Ok(None));
                    continue;
                };
                if current.as_ref().is_none_or(|(s, _)| *s != r.study) {
                    current = Some((r.study, keys.study_key(&r.study)?));
                }
                let Some(sk) = current.as_ref().and_then(|(_, k)| k.as_ref()) else {
                    out.push(Err(StoreError::NotFound));
                    continue;
                };
                let Some(dk) = keys.data_key(sk, &r.study, &r.instance, &r.object)? else {
                    out.push(Err(StoreError::NotFound));
                    continue;
                };
                out.push(
                    dk.open(&sealed, &metadata_aad(&r.object, &r.instance, &r.study))
                        .map(Some)
                        .ok_or_else(|| {
                            StoreError::Tampered(format!("metadata copy of {}", r.object))
                        }),
                );
            }
            Ok(out)
        })
        .await
    }

    /// Keeps the metadata copy of an instance stored before copies were kept (read from
    /// its opened object by the caller), sealed like [`Store::put_with_metadata`]'s, so that
    /// the object need not be opened for its metadata again. Nothing is kept when the
    /// instance was deleted or replaced meanwhile, or already has a copy. Returns whether
    /// it was kept.
    pub async fn add_metadata(&self, r: &Row, metadata: &[u8]) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        let (study, instance, object) = (r.study, r.instance, r.object.clone());
        let metadata = metadata.to_vec();
        blocking(move || {
            let dk = {
                let mut ks = lock(&inner.keys);
                let Some(sk) = ks.study_key(&study)? else {
                    return Ok(false);
                };
                let Some(dk) = ks.data_key(&sk, &study, &instance, &object)? else {
                    return Ok(false);
                };
                dk
            };
            let sealed = dk.seal(&metadata, &metadata_aad(&object, &instance, &study))?;
            lock(&inner.index).add_metadata(&instance, &object, &sealed)
        })
        .await
    }

    /// The index rows of a study (or one of its series), in a stable order.
    pub async fn rows(
        &self,
        study: Handle,
        series: Option<Handle>,
    ) -> Result<Vec<Row>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || lock(&inner.index).of_study(&study, series.as_ref())).await
    }

    /// The attributes kept for an instance's index row, opened with the study key.
    pub async fn meta(&self, r: &Row) -> Result<Vec<u8>, StoreError> {
        let inner = self.inner.clone();
        let study = r.study;
        let sk = blocking(move || lock(&inner.keys).study_key(&study))
            .await?
            .ok_or(StoreError::NotFound)?;
        sk.open(&r.meta, &meta_aad(&r.instance))
            .ok_or_else(|| StoreError::Tampered(format!("index row of {}", r.object)))
    }

    /// Calls `each` with every index row and its attributes opened (or why they do not open:
    /// [`StoreError::Tampered`] for altered ones, [`StoreError::NotFound`] when the study's
    /// key is gone), in one blocking task that looks each study's key up once: how the web
    /// layer builds its in-memory catalogue at startup. Rows come study by study. Stores and
    /// deletions wait until it returns (it holds the key store and the index), so call it
    /// before serving. `each` folds the rows into `acc`, which is handed back.
    pub async fn for_each_meta<T, F>(&self, mut acc: T, mut each: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, &Row, Result<Vec<u8>, StoreError>) + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || {
            // The key store before the index, as delete_patient takes them.
            let mut keys = lock(&inner.keys);
            let index = lock(&inner.index);
            let mut current: Option<(Handle, Option<Key>)> = None;
            index.for_each(|r| {
                if current.as_ref().is_none_or(|(s, _)| *s != r.study) {
                    current = Some((r.study, keys.study_key(&r.study)?));
                }
                let opened = match current.as_ref().and_then(|(_, k)| k.as_ref()) {
                    Some(k) => k
                        .open(&r.meta, &meta_aad(&r.instance))
                        .ok_or_else(|| StoreError::Tampered(format!("index row of {}", r.object))),
                    None => Err(StoreError::NotFound),
                };
                each(&mut acc, &r, opened);
                Ok(())
            })?;
            Ok(acc)
        })
        .await
    }

    /// [`Store::for_each_meta`] for the rows of some series only: each `(study, series)` in
    /// turn, its instances in handle order, each study's key looked up once, all in one
    /// blocking task, until `each` answers `false`. How an instance-level search reads the
    /// instances of the series it narrowed to (their attributes are not kept in memory):
    /// rows are read and opened one at a time, so a search that has found its page stops.
    /// Stores and deletions wait while it runs (it holds the key store and the index).
    pub async fn for_each_meta_in<T, F>(
        &self,
        series: Vec<(Handle, Handle)>,
        mut acc: T,
        mut each: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, &Row, Result<Vec<u8>, StoreError>) -> bool + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || {
            // The key store before the index, as delete_patient takes them.
            let mut keys = lock(&inner.keys);
            let index = lock(&inner.index);
            let mut current: Option<(Handle, Option<Key>)> = None;
            let mut go_on = true;
            for (study, se) in &series {
                if !go_on {
                    break;
                }
                index.for_each_in_series(study, se, |r| {
                    if current.as_ref().is_none_or(|(s, _)| *s != r.study) {
                        current = Some((r.study, keys.study_key(&r.study)?));
                    }
                    let opened = match current.as_ref().and_then(|(_, k)| k.as_ref()) {
                        Some(k) => k.open(&r.meta, &meta_aad(&r.instance)).ok_or_else(|| {
                            StoreError::Tampered(format!("index row of {}", r.object))
                        }),
                        None => Err(StoreError::NotFound),
                    };
                    go_on = each(&mut acc, &r, opened);
                    Ok(go_on)
                })?;
            }
            Ok(acc)
        })
        .await
    }

    /// The index rows of these instances (those the index has, in the order asked), each
    /// with its attributes opened as [`Store::for_each_meta`] opens them, in one blocking
    /// task: how a search by SOP Instance UID finds its instances by their handles (keyed
    /// look-ups) rather than by walking the store.
    pub async fn metas_of(
        &self,
        instances: Vec<Handle>,
    ) -> Result<Vec<(Row, Result<Vec<u8>, StoreError>)>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut keys = lock(&inner.keys);
            let index = lock(&inner.index);
            let mut out = Vec::new();
            for h in &instances {
                let Some(r) = index.get(h)? else { continue };
                let opened = match keys.study_key(&r.study)? {
                    Some(k) => k
                        .open(&r.meta, &meta_aad(&r.instance))
                        .ok_or_else(|| StoreError::Tampered(format!("index row of {}", r.object))),
                    None => Err(StoreError::NotFound),
                };
                out.push((r, opened));
            }
            Ok(out)
        })
        .await
    }

    /// Deletes a study: its keys are destroyed first (crypto-shredding), then its index rows
    /// and objects.
    pub async fn delete_study(&self, study: Handle) -> Result<Deleted, StoreError> {
        let inner = self.inner.clone();
        let had_key = blocking(move || lock(&inner.keys).shred_study(&study)).await?;
        let gone = self.remove_rows(study, None, None).await?;
        if !had_key && gone == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(Deleted { instances: gone })
    }

    /// Deletes a series: the data keys of its instances are destroyed, then their index
    /// rows and objects.
    pub async fn delete_series(
        &self,
        study: Handle,
        series: Handle,
    ) -> Result<Deleted, StoreError> {
        self.delete_instances(study, Some(series), None).await
    }

    /// Deletes one instance: its data keys are destroyed, then its index row and object.
    pub async fn delete_instance(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Handle,
    ) -> Result<Deleted, StoreError> {
        self.delete_instances(study, series, Some(instance)).await
    }

    async fn delete_instances(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Option<Handle>,
    ) -> Result<Deleted, StoreError> {
        let rows: Vec<Row> = self
            .rows(study, series)
            .await?
            .into_iter()
            .filter(|r| instance.is_none_or(|i| i == r.instance))
            .collect();
        if rows.is_empty() {
            return Err(StoreError::NotFound);
        }
        let inner = self.inner.clone();
        let handles: Vec<Handle> = rows.iter().map(|r| r.instance).collect();
        blocking(move || {
            let mut ks = lock(&inner.keys);
            for h in &handles {
                ks.shred_instance(h)?;
            }
            Ok(())
        })
        .await?;
        let gone = self.remove_rows(study, series, instance).await?;
        Ok(Deleted { instances: gone })
    }

    /// Deletes every study of a patient and the patient's key.
    pub async fn delete_patient(&self, patient: Handle) -> Result<Deleted, StoreError> {
        let inner = self.inner.clone();
        let (shredded, indexed) = blocking(move || {
            let shredded = lock(&inner.keys).shred_patient(&patient)?;
            let indexed = lock(&inner.index).studies_of(&patient)?;
            Ok((shredded, indexed))
        })
        .await?;
        let mut studies: Vec<Handle> = shredded.into_iter().chain(indexed).collect();
        studies.sort();
        studies.dedup();
        if studies.is_empty() {
            return Err(StoreError::NotFound);
        }
        let mut d = Deleted::default();
        for s in studies {
            d.instances = d
                .instances
                .saturating_add(self.remove_rows(s, None, None).await?);
        }
        Ok(d)
    }

    /// Removes index rows (after their keys are gone) and then their objects.
    async fn remove_rows(
        &self,
        study: Handle,
        series: Option<Handle>,
        instance: Option<Handle>,
    ) -> Result<usize, StoreError> {
        let inner = self.inner.clone();
        let gone =
            blocking(move || lock(&inner.index).remove(&study, series.as_ref(), instance.as_ref()))
                .await?;
        let n = gone.len();
        let inner = self.inner.clone();
        blocking(move || {
            gone.iter()
                .try_for_each(|r| inner.objects.delete(&r.study, &r.object))
        })
        .await?;
        Ok(n)
    }
}

/// One instance for [`Store::put_many`]: what [`Store::put_with_metadata`] takes.
#[derive(Debug)]
pub struct Put<'a> {
    /// Its identifiers.
    pub ids: InstanceIds<'a>,
    /// Its Part 10 bytes.
    pub bytes: Bytes,
    /// The attributes for the index, sealed under the study key.
    pub meta: Vec<u8>,
    /// Its metadata copy (`None`: made by the [`Store::keep_metadata`] maker, if any).
    pub metadata: Option<Vec<u8>>,
    /// The SHA-256 digest of `bytes` when the caller has already computed it (the ledger's
    /// entry holds it), so that the bytes are not hashed a second time; `None`: the store
    /// computes it. It must be the digest of `bytes`: it decides whether a second copy of
    /// an instance is the same.
    pub sha256: Option<[u8; 32]>,
}

/// A [`Put`] with its handles, owned for the blocking task.
struct Pending {
    h: Handles,
    bytes: Bytes,
    meta: Vec<u8>,
    metadata: Option<Vec<u8>>,
    sha256: Option<[u8; 32]>,
}

/// An index row with its sealed metadata copy, for [`Index::insert_many`].
type RowAndCopy = (Row, Option<Vec<u8>>);

/// An instance whose object is written, waiting for its index row.
struct Written {
    at: usize,
    study: Handle,
    object: String,
    content: Handle,
    bytes: Bytes,
}

/// The body of [`Store::put_many`], run off the async runtime: what is already stored is
/// sorted out; the keys of the rest are made in one key-store transaction; their objects
/// are written through [`Objects`] and made durable once for the batch; their rows go in
/// in one index transaction.
fn put_batch(inner: &Inner, items: Vec<Pending>) -> Vec<Result<PutOutcome, StoreError>> {
    let key = &inner.index_key;
    let mut out: Vec<Result<PutOutcome, StoreError>> =
        items.iter().map(|_| Ok(PutOutcome::Stored)).collect();
    // A second copy of an instance in the batch waits on the first's outcome: (its
    // position, the first's position, whether the bytes are the same).
    let mut follows: Vec<(usize, usize, bool)> = Vec::new();
    let mut first: std::collections::HashMap<Handle, (usize, Handle)> = Default::default();
    let mut fresh: Vec<(usize, Pending, Handle, String)> = Vec::with_capacity(items.len());
    for (at, it) in items.into_iter().enumerate() {
        let h = it.h;
        debug_assert!(
            it.sha256
                .is_none_or(|d| d[..] == Sha256::digest(&it.bytes)[..]),
            "the digest given is not that of the bytes"
        );
        let digest = it
            .sha256
            .unwrap_or_else(|| Sha256::digest(&it.bytes).into());
        let content = content_handle(key, &digest);
        if let Some(&(f, c)) = first.get(&h.instance) {
            follows.push((at, f, c == content));
            continue;
        }
        let existing = match lock(&inner.index).get(&h.instance) {
            Ok(e) => e,
            Err(e) => {
                out[at] = Err(e);
                continue;
            }
        };
        if let Some(e) = existing {
            out[at] = if same_content(key, &e.content, &content, &it.bytes) {
                Ok(PutOutcome::AlreadyStored)
            } else {
                Err(StoreError::Conflict)
            };
            continue;
        }
        // A fresh name for this attempt: objects of attempts that failed half-way never
        // collide with it.
        let mut suffix = [0u8; 8];
        if let Err(e) = getrandom::getrandom(&mut suffix) {
            out[at] = Err(StoreError::Random(e.to_string()));
            continue;
        }
        let object = format!("{}.{}", h.instance.hex(), Handle::hex_of(&suffix));
        first.insert(h.instance, (at, content));
        fresh.push((at, it, content, object));
    }
    // The keys, durable before any object is written.
    let keys = lock(&inner.keys).in_one_transaction(|ks| {
        fresh
            .iter()
            .map(|(_, it, _, object)| {
                let sk = ks.study_key_or_create(&it.h.patient, &it.h.study)?;
                let dk = ks.new_data_key(&sk, &it.h.study, &it.h.instance, object)?;
                Ok((dk, sk))
            })
            .collect::<Vec<Result<(Key, Key), StoreError>>>()
    });
    let keys = match keys {
        Ok(k) => k,
        Err(e) => {
            let why = e.to_string();
            fresh
                .iter()
                .map(|_| Err(StoreError::Batch(why.clone())))
                .collect()
        }
    };
    let mut rows: Vec<RowAndCopy> = Vec::with_capacity(fresh.len());
    let mut written: Vec<Written> = Vec::with_capacity(fresh.len());
    let mut studies: std::collections::BTreeSet<Handle> = Default::default();
    for ((at, it, content, object), key) in fresh.into_iter().zip(keys) {
        let r = key.and_then(|(data_key, study_key)| {
            let h = it.h;
            let made;
            let metadata = match it.metadata.as_deref() {
                Some(m) => Some(m),
                None => {
                    made = inner.metadata_maker.get().and_then(|f| f(&it.bytes));
                    made.as_deref()
                }
            };
            let metadata = metadata
                .map(|m| data_key.seal(m, &metadata_aad(&object, &h.instance, &h.study)))
                .transpose()?;
            let sealed = data_key.seal_after(OBJECT_MAGIC, &it.bytes, &object_aad(&object, &h))?;
            drop(data_key);
            inner.objects.put(&h.study, &object, sealed)?;
            studies.insert(h.study);
            let row = Row {
                instance: h.instance,
                study: h.study,
                series: h.series,
                patient: h.patient,
                object: object.clone(),
                size: it.bytes.len() as u64,
                content,
                meta: study_key.seal(&it.meta, &meta_aad(&h.instance))?,
            };
            Ok((row, metadata))
        });
        match r {
            Ok((row, metadata)) => {
                written.push(Written {
                    at,
                    study: row.study,
                    object: row.object.clone(),
                    content: row.content,
                    bytes: it.bytes,
                });
                rows.push((row, metadata));
            }
            Err(e) => {
                // Its key goes (the object, if any, does not open without it).
                discard(inner, &it.h.study, &object);
                out[at] = Err(e);
            }
        }
    }
    let inserted = match inner.objects.sync(&studies) {
        Ok(()) => lock(&inner.index).insert_many(&rows),
        Err(e) => Err(e),
    };
    match inserted {
        Ok(found) => {
            for (w, f) in written.iter().zip(found) {
                if let Inserted::Exists(e) = f {
                    // Another request stored the instance meanwhile: ours goes.
                    discard(inner, &w.study, &w.object);
                    out[w.at] = if same_content(key, &e.content, &w.content, &w.bytes) {
                        Ok(PutOutcome::AlreadyStored)
                    } else {
                        Err(StoreError::Conflict)
                    };
                }
            }
        }
        Err(e) => {
            let why = e.to_string();
            for w in &written {
                discard(inner, &w.study, &w.object);
                out[w.at] = Err(StoreError::Batch(why.clone()));
            }
        }
    }
    // A second copy: stored when the first is (or conflicts with it); else the first's
    // failure.
    for (at, f, same) in follows {
        out[at] = match &out[f] {
            Ok(_) if same => Ok(PutOutcome::AlreadyStored),
            Ok(_) => Err(StoreError::Conflict),
            Err(StoreError::Conflict) if same => Err(StoreError::Conflict),
            Err(e) => Err(StoreError::Batch(e.to_string())),
        };
    }
    out
}

/// Removes an object and its key after a failed or superseded attempt (best effort:
/// without its key the object does not open anyway).
fn discard(inner: &Inner, study: &Handle, object: &str) {
    let _ = lock(&inner.keys).shred_object(object);
    let _ = inner.objects.delete(study, object);
}

/// Opens the object of an index row, from a blocking task: its data key, then the object
/// read whole and opened in place (one buffer); an altered, moved or missing object is
/// [`StoreError::Tampered`] and never returned, a shredded key [`StoreError::NotFound`].
fn open_object(inner: &Inner, r: &Row) -> Result<Vec<u8>, StoreError> {
    let data_key = {
        let mut ks = lock(&inner.keys);
        let Some(sk) = ks.study_key(&r.study)? else {
            return Err(StoreError::NotFound);
        };
        ks.data_key(&sk, &r.study, &r.instance, &r.object)?
            .ok_or(StoreError::NotFound)?
    };
    let tampered = || StoreError::Tampered(r.object.clone());
    let mut buf = inner
        .objects
        .get(&r.study, &r.object)?
        .ok_or_else(tampered)?;
    let h = Handles {
        patient: r.patient,
        study: r.study,
        series: r.series,
        instance: r.instance,
    };
    let opened = buf.starts_with(OBJECT_MAGIC)
        && data_key.open_in_place(&mut buf, OBJECT_MAGIC.len(), &object_aad(&r.object, &h));
    if !opened || buf.len() as u64 != r.size {
        return Err(tampered());
    }
    Ok(buf)
}

/// A level of the DICOM information model, for handles of UIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Study Instance UID.
    Study,
    /// Series Instance UID.
    Series,
    /// SOP Instance UID.
    Instance,
}

impl Level {
    fn domain(self) -> &'static str {
        match self {
            Level::Study => "study",
            Level::Series => "series",
            Level::Instance => "instance",
        }
    }
}

/// Re-wraps a key store's keys under a new KEK (`radveil keys rotate`): nothing else is
/// re-encrypted. Returns the number of patient keys re-wrapped.
pub fn rotate_kek(layout: &Layout, old: Key, new: Key) -> Result<usize, StoreError> {
    KeyStore::open(&layout.keys, old)?.rotate(new)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod metadata_tests;

#[cfg(test)]
mod meta_scan_tests {
    use super::*;

    fn ids<'a>(patient: &'a str, study: &'a str, instance: &'a str) -> InstanceIds<'a> {
        InstanceIds {
            patient_id: patient,
            issuer: "",
            study,
            series: "1.2.3.1",
            instance,
        }
    }

    /// Every row comes back once with its attributes opened, study by study; a deleted
    /// study's rows are gone; an altered meta is reported as tampered, not skipped.
    #[test]
    fn for_each_meta_opens_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::open(&layout, Key::from_slice(&[7; 32]).unwrap()).unwrap();
            for (p, s, i) in [("A", "1.2.3", "1.2.3.1.1"), ("A", "1.2.3", "1.2.3.1.2"), ("B", "1.2.4", "1.2.4.1.1"), ("B", "1.2.5", "1.2.5.1.1")] {
                let meta = format!("meta of {i}");
                store
                    .put(&ids(p, s, i), Bytes::from(i.as_bytes().to_vec()), meta.as_bytes())
                    .await
                    .unwrap();
            }
            store
                .delete_study(store.uid(Level::Study, "1.2.5"))
                .await
                .unwrap();
            let got = store
                .for_each_meta(Vec::new(), |acc, r, m| {
                    acc.push((r.study, r.patient, m.map(|m| String::from_utf8(m).unwrap())));
                })
                .await
                .unwrap();
            let texts: Vec<&str> = got.iter().map(|g| g.2.as_deref().unwrap()).collect();
            assert_eq!(texts.len(), 3);
            for i in ["1.2.3.1.1", "1.2.3.1.2", "1.2.4.1.1"] {
                assert!(texts.contains(&format!("meta of {i}").as_str()));
            }
            // Study by study: rows of one study are adjacent.
            let changes = got.windows(2).filter(|w| w[0].0 != w[1].0).count();
            assert_eq!(changes, 1, "the rows of one study are apart");
            assert_eq!(got.iter().filter(|g| g.1 == store.patient("A", "")).count(), 2);
            // An altered meta is reported as such.
            {
                let db = rusqlite::Connection::open(&layout.index).unwrap();
                db.execute("UPDATE instance SET meta = X'00112233445566778899AABBCCDDEEFF00112233445566778899'", [])
                    .unwrap();
            }
            let got = store
                .for_each_meta(0usize, |n, _, m| {
                    assert!(matches!(m, Err(StoreError::Tampered(_))));
                    *n += 1;
                })
                .await
                .unwrap();
            assert_eq!(got, 3);
        });
    }
}
