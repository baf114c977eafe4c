//! QIDO-RS (PS3.18 §10.6): searching studies, series and instances, at every level and
//! nested (`/studies/{study}/series`, ...), with the matching rules of PS3.4 C.2.2.2.
//!
//! The index holds no identifying value in plaintext, so it cannot be searched as it is.
//! Searches run on the [`Catalogue`], built at startup from the index and updated on every
//! store and deletion: the opened attributes of every study and series, each entity's
//! packed into one allocation (module `packed`), their instance counts and modalities derived,
//! and of each instance only its handle and geometry (64 bytes, for the series check of
//! integrity at ingest). So memory grows by a few dozen bytes per instance and a few
//! hundred per series, not by every instance's attributes. Memory is not storage at rest:
//! what the catalogue holds is never written anywhere (no swap file is ours to control;
//! operators who fear swap should disable it or encrypt it, as for any process that
//! handles images).
//!
//! Study and series searches answer from memory. Instance searches read the instances'
//! sealed attributes from the index, opened on demand, only for the series they narrow to:
//! - the path's study and series, a list of Study or Series Instance UIDs (looked up by
//!   handle: the keyed hashes the index names them by) and the study- and series-level keys
//!   narrow the series first, in memory;
//! - a list of SOP Instance UIDs is looked up by handle in the index (one keyed read per
//!   UID), whatever else the query says;
//! - otherwise the series are walked in order (studies, then series, then instances, by
//!   handle) in rounds of at most `ROUND_SERIES` series or `ROUND_ROWS` rows, each round
//!   read in one blocking task that stops once the page (`offset` + `limit`, and one more to
//!   tell there are more) is full; without instance-level keys whole series inside the
//!   offset are skipped unread. An instance search across all studies with only
//!   instance-level keys (`/instances?InstanceNumber=1`) reads every row until its page is
//!   full, as any server without an index on those attributes does.
//!
//! An instance is listed when the catalogue lists it and the index still holds its row: a
//! store not yet catalogued or a deletion not yet heard of does not show a half state.
//!
//! Matching (PS3.4 C.2.2.2):
//! - single value matching (case-sensitive, except person names: PS3.4 C.2.2.2.1 lets
//!   PN matching ignore case, and it does here);
//! - list of UID matching (UIDs separated by `,` as PS3.18 §8.3.4.1 writes them, or `\`);
//! - universal matching (an empty value);
//! - wild card matching (`*` any run of characters, `?` one character) for AE, CS, LO, LT,
//!   PN, SH, ST, UC, UR, UT;
//! - range matching for DA, TM and DT (`A-B`, `A-`, `-B`); a single TM or DT value matches
//!   the period it names (`10` is 10:00:00 to 10:59:59.999999);
//! - empty value matching (`""`, PS3.4 C.2.2.2.8-style: the attribute is absent or empty);
//! - multiple value attributes (ModalitiesInStudy) match when any of their values does.
//!
//! Sequence matching is not supported (a key naming a sequence item is refused).
//! `fuzzymatching=true` changes person-name matching only: each word of the key (words are
//! separated by `^`, `=` and spaces) must be, ignoring case, the beginning of some word of
//! the name (`doe^j` matches `DOE^JOHN`; `jo` matches `DOE^JOHN`), as Google's Healthcare
//! API defines it.
//!
//! Answers: 200 with a JSON array, `[]` when nothing matches (CP-2473 replaces the 204 of
//! PS3.18 §8.3.4.4.1 by this; `dicomweb-client` takes both). At most [`MAX_RESULTS`]
//! results per response; when more match, a `Warning: 299` header says so and `offset`
//! pages on. A key the catalogue does not keep is ignored with a `Warning: 299` naming its
//! tag (PS3.18 §8.3.4.1); an unknown parameter, keyword or malformed value is refused with
//! 400 and a reason that repeats no value of the request.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_part10::Vr;
use radveil_pipeline::ingest::{Geometry, SeriesCheck};
use radveil_standard::tags;
use radveil_store::{Handle, Handles, Store, StoreError};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::dicom_json::{self, Attr, Attrs, Level};
use crate::scope::Scope;

mod packed;
use packed::{Packed, View};

/// The most results one response carries.
pub const MAX_RESULTS: usize = 1000;
/// The longest value a matching key may have, in bytes.
const MAX_KEY_LEN: usize = 1024;

// ---------------------------------------------------------------------------------------
// The catalogue.

/// One instance of a series as the catalogue keeps it: its handle, and what the series
/// advisories of ingest compare a new instance with (its Image Position (Patient), NaN
/// when it has none, and which of its series' [`Shape`]s it has). 64 bytes: its search
/// attributes stay sealed in the index and are opened when an instance-level search
/// reaches its series.
#[derive(Debug, Clone, Copy)]
struct Member {
    instance: Handle,
    position: [f64; 3],
    shape: usize,
}

/// Matrix, pixel spacing and orientation: what the instances of a series normally share,
/// kept once per series for all its instances that have it.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    matrix: Option<(u16, u16)>,
    spacing: Box<[f64]>,
    orientation: Box<[f64]>,
}

#[derive(Debug, Default)]
struct Series {
    attrs: Packed,
    /// In handle order (the order searches list them).
    members: Vec<Member>,
    shapes: Vec<Shape>,
}

#[derive(Debug)]
struct Study {
    patient: Handle,
    attrs: Packed,
    series: SeriesList,
}

/// The series of a study, in handle order: a sorted vector, as a study has few series (a
/// `BTreeMap` node would take a kilobyte for a study of one series).
#[derive(Debug, Default)]
struct SeriesList(Vec<(Handle, Series)>);

impl SeriesList {
    fn find(&self, h: &Handle) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(h))
    }

    fn get(&self, h: &Handle) -> Option<&Series> {
        self.get_key_value(h).map(|(_, s)| s)
    }

    fn get_key_value(&self, h: &Handle) -> Option<(&Handle, &Series)> {
        let i = self.find(h).ok()?;
        let (k, s) = &self.0[i];
        Some((k, s))
    }

    /// The series, added empty when it is not there.
    fn entry(&mut self, h: Handle) -> &mut Series {
        let i = match self.find(&h) {
            Ok(i) => i,
            Err(i) => {
                grow(&mut self.0);
                self.0.insert(i, (h, Series::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    fn remove(&mut self, h: &Handle) {
        if let Ok(i) = self.find(h) {
            self.0.remove(i);
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&Handle, &mut Series)> {
        self.0.iter_mut().map(|(k, s)| (&*k, s))
    }

    fn retain(&mut self, mut keep: impl FnMut(&Series) -> bool) {
        self.0.retain(|(_, s)| keep(s));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn values(&self) -> impl Iterator<Item = &Series> {
        self.0.iter().map(|(_, s)| s)
    }

    /// The series from `lo` on, in handle order.
    fn starting(&self, lo: Bound<&Handle>) -> impl Iterator<Item = (&Handle, &Series)> {
        let start = match lo {
            Bound::Unbounded => 0,
            Bound::Included(h) => self.0.partition_point(|(k, _)| k < h),
            Bound::Excluded(h) => self.0.partition_point(|(k, _)| k <= h),
        };
        self.0[start..].iter().map(|(k, s)| (k, s))
    }
}

#[cfg(test)]
impl std::ops::Index<&Handle> for SeriesList {
    type Output = Series;

    fn index(&self, h: &Handle) -> &Series {
        self.get(h).expect("a series of the study")
    }
}

type Tree = BTreeMap<Handle, Study>;

/// The studies and series of the store with their search attributes, packed, and the
/// handles of their instances, shared by all requests behind a lock. It lives in memory
/// only (memory is not storage at rest); the index keeps the attributes sealed under each
/// study's key, and instance-level searches open the instances' attributes from it.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    studies: Arc<RwLock<Tree>>,
    /// Counts removals, so that a store that raced a deletion can tell (see [`Mark`]).
    removals: Arc<AtomicU64>,
    /// Index rows opened by instance-level searches (how the tests check what they read).
    opened: Arc<AtomicU64>,
    /// Series (study, series) with an index row found not to open: an instance-level walk
    /// reads them rather than skip them unread inside the offset, so that the row counts
    /// the same (not at all) either way.
    unopenable: Arc<Mutex<BTreeSet<(Handle, Handle)>>>,
    /// Run once between a walk's round reading the index and its matches being taken
    /// (how the tests delete a series meanwhile).
    #[cfg(test)]
    between: Arc<Mutex<Option<Between>>>,
}

#[cfg(test)]
struct Between(Box<dyn FnOnce(&Catalogue) + Send>);

#[cfg(test)]
impl std::fmt::Debug for Between {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Between")
    }
}

/// Where the catalogue's removals stood before an instance was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

fn get(attrs: &Attrs, tag: u32) -> Option<&Attr> {
    attrs
        .binary_search_by_key(&tag, |(t, _)| *t)
        .ok()
        .map(|i| &attrs[i].1)
}

/// Makes room for one more: by an eighth of what is there (little slack in memory, and
/// amortised copies), where `Vec` would double (and start at four).
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(1));
    }
}

impl Series {
    /// Adds an instance (or replaces the entry of one stored anew).
    fn add(&mut self, instance: Handle, g: &Geometry) {
        let shape = Shape {
            matrix: g.matrix,
            spacing: g.spacing.clone().into_boxed_slice(),
            orientation: g.orientation.clone().into_boxed_slice(),
        };
        // The latest first: a series' instances share one shape, unless a client makes
        // each differ (then this is linear, as the series check already is).
        let shape = match self.shapes.iter().rposition(|s| *s == shape) {
            Some(i) => i,
            None => {
                grow(&mut self.shapes);
                self.shapes.push(shape);
                self.shapes.len() - 1
            }
        };
        let position = match g.position[..] {
            [x, y, z] => [x, y, z],
            _ => [f64::NAN; 3],
        };
        let m = Member {
            instance,
            position,
            shape,
        };
        match self.members.binary_search_by(|x| x.instance.cmp(&instance)) {
            Ok(i) => self.members[i] = m,
            Err(i) => {
                grow(&mut self.members);
                self.members.insert(i, m);
            }
        }
    }

    /// Removes an instance; shapes no instance has any more go too.
    fn forget(&mut self, instance: &Handle) {
        if let Ok(i) = self.members.binary_search_by(|x| x.instance.cmp(instance)) {
            self.members.remove(i);
        }
        if self.members.capacity() > 2 * self.members.len() + 8 {
            self.members.shrink_to_fit();
        }
        // More shapes than instances: some are unused (a series whose instances are stored
        // and deleted over and over does not grow).
        if self.shapes.len() > self.members.len() {
            let mut used = vec![false; self.shapes.len()];
            for m in &self.members {
                if let Some(u) = used.get_mut(m.shape) {
                    *u = true;
                }
            }
            let mut moved = vec![0; self.shapes.len()];
            let mut kept = Vec::new();
            for (i, s) in std::mem::take(&mut self.shapes).into_iter().enumerate() {
                if used[i] {
                    moved[i] = kept.len();
                    kept.push(s);
                }
            }
            for m in &mut self.members {
                m.shape = moved.get(m.shape).copied().unwrap_or(0);
            }
            self.shapes = kept;
        }
    }

    fn is_member(&self, instance: &Handle) -> bool {
        self.members
            .binary_search_by(|x| x.instance.cmp(instance))
            .is_ok()
    }
}

impl Catalogue {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tree> {
        // The tree is consistent after every statement that changes it: a panic elsewhere
        // while the lock was held leaves it usable.
        self.studies.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tree> {
        self.studies.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The series known to hold a row that does not open (a set, consistent after every
    /// statement: a panic elsewhere leaves it usable).
    fn unopenable(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Handle, Handle)>> {
        self.unopenable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the catalogue from the store's index (every row's sealed attributes opened,
    /// one key look-up per study; only the study's and series' attributes and the
    /// instance's handle and geometry are kept). Rows whose attributes do not open
    /// (altered) are left out and counted; the count is returned.
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let (tree, bad) = store
            .for_each_meta(
                (Tree::new(), 0usize),
                |(tree, bad): &mut (Tree, usize), row, meta| {
                    let attrs = meta
                        .ok()
                        .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
                        .map(|v| dicom_json::attrs_from_json(&v));
                    match attrs {
                        Some(a) => {
                            let h = Handles {
                                patient: row.patient,
                                study: row.study,
                                series: row.series,
                                instance: row.instance,
                            };
                            insert_into(tree, &h, a);
                        }
                        None => *bad += 1,
                    }
                },
            )
            .await?;
        if bad > 0 {
            tracing::error!(
                rows = bad,
                "index rows whose attributes do not open are not searchable"
            );
        }
        *self.write() = tree;
        Ok(bad)
    }

    /// Adds a stored instance (its handles and the attributes sealed in its index row).
    /// A study's and a series' attributes are those of their first instance; later
    /// instances only add attributes it lacked (PS3.4 C.6 has one value per entity). Of
    /// the instance's own attributes only its geometry is kept (for [`Catalogue::check_series`]).
    pub fn insert(&self, h: &Handles, attrs: Attrs) {
        insert_into(&mut self.write(), h, attrs);
    }

    /// The patient of a study (handle, Patient ID, Issuer of Patient ID, empty when
    /// absent), for the audit trail; `None` for a study not in the catalogue.
    pub fn patient_of(&self, study: &Handle) -> Option<crate::audit::PatientOf> {
        let tree = self.read();
        let s = tree.get(study)?;
        let value = |tag| {
            s.attrs
                .get(tag)
                .and_then(|a| a.values().next())
                .map(str::to_string)
                .unwrap_or_default()
        };
        Some((
            s.patient,
            value(tags::PATIENT_ID),
            value(tags::ISSUER_OF_PATIENT_ID),
        ))
    }

    /// What a patient is told a study is ("your CT study of 3 March 2026"): its modalities
    /// (joined by `/`), date and description, as far as the catalogue knows them.
    pub fn describe(&self, study: &Handle) -> (Option<String>, Option<String>, Option<String>) {
        let tree = self.read();
        let Some(st) = tree.get(study) else {
            return (None, None, None);
        };
        let text = |f: Option<Field<'_>>| {
            let f = f?;
            let v: Vec<&str> = f.values().filter(|v| !v.is_empty()).collect();
            (!v.is_empty()).then(|| v.join("/"))
        };
        let packed = |tag| {
            st.attrs
                .get(tag)
                .and_then(|a| a.values().next())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        (
            text(study_attr(st, tags::MODALITIES_IN_STUDY)),
            packed(tags::STUDY_DATE),
            packed(tags::STUDY_DESCRIPTION),
        )
    }

    /// Take before storing an instance, for [`Catalogue::insert_stored`].
    pub fn mark(&self) -> Mark {
        Mark(self.removals.load(Ordering::SeqCst))
    }

    /// Adds an instance the store has just stored. A deletion of its study or series that
    /// ran between the store and this call has already taken its row away from the store
    /// but found nothing here to remove: when any removal happened since `before`, the
    /// store is asked whether the row is still there, and the instance goes if it is not.
    /// Without this, a search could count an instance that no longer exists.
    pub async fn insert_stored(&self, store: &Store, h: &Handles, attrs: Attrs, before: Mark) {
        self.insert(h, attrs);
        if self.mark() == before {
            return;
        }
        match store
            .instance_row(h.study, Some(h.series), h.instance)
            .await
        {
            Ok(_) => {}
            Err(radveil_store::StoreError::NotFound) => {
                self.remove(&h.study, Some(&h.series), Some(&h.instance))
            }
            // The store cannot tell now: keep the entry (a retrieve answers 404 if it is gone).
            Err(e) => {
                tracing::warn!(error = %e, "an instance stored during a deletion was not checked")
            }
        }
    }

    /// Removes a deleted study, series or instance (empty series and studies go too).
    pub fn remove(&self, study: &Handle, series: Option<&Handle>, instance: Option<&Handle>) {
        let mut tree = self.write();
        // Counted under the lock: an insert that follows sees it (see insert_stored).
        self.removals.fetch_add(1, Ordering::SeqCst);
        let Some(st) = tree.get_mut(study) else {
            return;
        };
        match (series, instance) {
            (None, None) => {
                tree.remove(study);
                self.unopenable().retain(|(st, _)| st != study);
                return;
            }
            (Some(se), None) => {
                st.series.remove(se);
            }
            (se, Some(i)) => {
                for (h, s) in st.series.iter_mut() {
                    if se.is_none_or(|se| se == h) {
                        s.forget(i);
                    }
                }
                st.series.retain(|s| !s.members.is_empty());
            }
        }
        if st.series.is_empty() {
            tree.remove(study);
        }
        // Series gone are no longer known to hold a row that does not open.
        self.unopenable()
            .retain(|(st, se)| tree.get(st).is_some_and(|s| s.series.get(se).is_some()));
    }

    /// Gives `check` (integrity at ingest: a new instance against its series) the stored
    /// instances of a series in handle order, each by its position, its whole geometry
    /// when asked (read-only, under the read lock).
    pub fn check_series(&self, study: &Handle, series: &Handle, check: &mut SeriesCheck<'_>) {
        let tree = self.read();
        let Some(se) = tree.get(study).and_then(|s| s.series.get(series)) else {
            return;
        };
        for m in &se.members {
            let has = !m.position[0].is_nan();
            // An instance without a position is at the origin for the first comparison
            // (its whole geometry, with no position, decides).
            let position = if has { m.position } else { [0.0; 3] };
            check.other(&position, || {
                let shape = se.shapes.get(m.shape);
                Geometry {
                    matrix: shape.and_then(|s| s.matrix),
                    spacing: shape.map(|s| s.spacing.to_vec()).unwrap_or_default(),
                    orientation: shape.map(|s| s.orientation.to_vec()).unwrap_or_default(),
                    position: if has { m.position.to_vec() } else { Vec::new() },
                }
            });
        }
    }

    /// How many instances the catalogue holds.
    pub fn instances(&self) -> usize {
        self.read()
            .values()
            .flat_map(|s| s.series.values())
            .map(|s| s.members.len())
            .sum()
    }
}

fn insert_into(tree: &mut Tree, h: &Handles, mut attrs: Attrs) {
    if !attrs.is_sorted_by_key(|(t, _)| *t) {
        attrs.sort_by_key(|(t, _)| *t);
    }
    let geometry = crate::ingest::geometry_of(&attrs);
    let (mut study, mut series) = (Attrs::new(), Attrs::new());
    for (tag, a) in attrs {
        match dicom_json::kept(tag).map(|k| k.0) {
            Some(Level::Study) => study.push((tag, a)),
            Some(Level::Series) => series.push((tag, a)),
            // The instance's own attributes stay sealed in the index (the transfer syntax
            // among them: it is neither matched nor returned).
            _ => {}
        }
    }
    let st = tree.entry(h.study).or_insert_with(|| Study {
        patient: h.patient,
        attrs: Packed::default(),
        series: SeriesList::default(),
    });
    st.attrs.merge(&study);
    let se = st.series.entry(h.series);
    se.attrs.merge(&series);
    se.add(h.instance, &geometry);
}

// ---------------------------------------------------------------------------------------
// Attributes derived from the tree (PS3.18 Table 10.6.3-3..5).

/// Attributes the catalogue derives, with their level and VR.
const DERIVED: &[(u32, Level, Vr)] = &[
    (tags::MODALITIES_IN_STUDY, Level::Study, Vr::CS),
    (tags::NUMBER_OF_STUDY_RELATED_SERIES, Level::Study, Vr::IS),
    (
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        Level::Study,
        Vr::IS,
    ),
    (
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        Level::Series,
        Vr::IS,
    ),
    (tags::INSTANCE_AVAILABILITY, Level::Study, Vr::CS),
];

/// The level and VR of an attribute the catalogue can match or return.
fn known(tag: u32) -> Option<(Level, Vr)> {
    dicom_json::kept(tag).or_else(|| {
        DERIVED
            .iter()
            .find(|(t, ..)| *t == tag)
            .map(|(_, l, v)| (*l, *v))
    })
}

/// An attribute of an entity as matched and returned: packed in the catalogue (study and
/// series attributes), or opened from the index (an instance's) or derived.
#[derive(Debug)]
enum Field<'a> {
    Packed(View<'a>),
    Attr(Cow<'a, Attr>),
}

/// The values of a [`Field`], as text.
enum FieldValues<'a> {
    Packed(packed::Values<'a>),
    Attr(std::slice::Iter<'a, Box<str>>),
}

impl<'a> Iterator for FieldValues<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            FieldValues::Packed(v) => v.next(),
            FieldValues::Attr(v) => v.next().map(|s| &**s),
        }
    }
}

impl Field<'_> {
    fn values(&self) -> FieldValues<'_> {
        match self {
            Field::Packed(v) => FieldValues::Packed(v.values()),
            Field::Attr(a) => FieldValues::Attr(a.values.iter()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Field::Packed(v) => dicom_json::to_json(&v.to_attr()),
            Field::Attr(a) => dicom_json::to_json(a),
        }
    }
}

fn number(vr: Vr, n: usize) -> Field<'static> {
    Field::Attr(Cow::Owned(Attr {
        vr,
        values: Box::new([n.to_string().into_boxed_str()]),
    }))
}

fn study_attr(st: &Study, tag: u32) -> Option<Field<'_>> {
    Some(match tag {
        tags::MODALITIES_IN_STUDY => {
            let set: BTreeSet<&str> = st
                .series
                .values()
                .filter_map(|s| s.attrs.get(tags::MODALITY))
                .flat_map(|a| a.values())
                .filter(|v| !v.is_empty())
                .collect();
            Field::Attr(Cow::Owned(Attr {
                vr: Vr::CS,
                values: set.into_iter().map(Box::from).collect(),
            }))
        }
        tags::NUMBER_OF_STUDY_RELATED_SERIES => number(Vr::IS, st.series.len()),
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES => {
            number(Vr::IS, st.series.values().map(|s| s.members.len()).sum())
        }
        tags::INSTANCE_AVAILABILITY => Field::Attr(Cow::Owned(Attr {
            vr: Vr::CS,
            values: Box::new(["ONLINE".into()]),
        })),
        _ => Field::Packed(st.attrs.get(tag)?),
    })
}

fn series_attr(se: &Series, tag: u32) -> Option<Field<'_>> {
    match tag {
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES => Some(number(Vr::IS, se.members.len())),
        _ => se.attrs.get(tag).map(Field::Packed),
    }
}

fn instance_attr(attrs: &Attrs, tag: u32) -> Option<Field<'_>> {
    get(attrs, tag).map(|a| Field::Attr(Cow::Borrowed(a)))
}

fn packed_uid(p: &Packed, tag: u32) -> &str {
    p.get(tag).and_then(|a| a.values().next()).unwrap_or("")
}
// ---------------------------------------------------------------------------------------
// Matching (PS3.4 C.2.2.2).

/// How a key matches a value.
#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// Universal matching: every entity matches.
    Universal,
    /// Empty value matching (`""`): the attribute is absent or has no value.
    Empty,
    /// Single value matching (case-insensitive for PN).
    Single(String),
    /// List of UID matching.
    Uids(Vec<String>),
    /// Wild card matching (pattern as characters; case-insensitive for PN).
    Wildcard(Vec<char>),
    /// Range matching of normalised DA, TM or DT values (bounds inclusive).
    Range(Option<String>, Option<String>),
    /// Fuzzy person-name matching: lowercase words, each a prefix of some word.
    Fuzzy(Vec<String>),
}

/// One matching key of a query.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    tag: u32,
    level: Level,
    vr: Vr,
    rule: Rule,
}

/// Why a query is refused (400). Never holds a value of the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(String);

fn bad(why: impl Into<String>) -> BadQuery {
    BadQuery(why.into())
}

fn is_wildcard_vr(vr: Vr) -> bool {
    matches!(
        vr,
        Vr::AE | Vr::CS | Vr::LO | Vr::LT | Vr::PN | Vr::SH | Vr::ST | Vr::UC | Vr::UR | Vr::UT
    )
}

/// A DA value in the form compared: `YYYYMMDD` (the old `YYYY.MM.DD` is read too).
fn norm_date(v: &str) -> Option<String> {
    let d: String = v.chars().filter(|c| *c != '.').collect();
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// A TM value padded to `HHMMSSFFFFFF` with `pad` (`0` for the start of the period it
/// names, `9` for its end); the old `HH:MM:SS` form is read too.
fn norm_time(v: &str, pad: char) -> Option<String> {
    let t: String = v.chars().filter(|c| *c != ':').collect();
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || whole.len() % 2 != 0 || frac.len() > 6 {
        return None;
    }
    if !ok(whole) || !ok(frac) || (!frac.is_empty() && whole.len() != 6) {
        return None;
    }
    let mut out = String::with_capacity(12);
    out.push_str(whole);
    while out.len() < 6 {
        out.push(pad);
    }
    out.push_str(frac);
    while out.len() < 12 {
        out.push(pad);
    }
    Some(out)
}

/// A DT value (without a UTC offset) padded to `YYYYMMDDHHMMSSFFFFFF` with `pad`.
fn norm_datetime(v: &str, pad: char) -> Option<String> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.len() < 4
        || whole.len() > 14
        || whole.len() % 2 != 0
        || frac.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (!frac.is_empty() && whole.len() != 14)
    {
        return None;
    }
    // Padding a month or day with 9 stays after every real one, with 0 before: both keep
    // the order of real values, which is all comparisons need.
    let mut out = String::with_capacity(20);
    out.push_str(whole);
    while out.len() < 14 {
        out.push(pad);
    }
    out.push_str(frac);
    while out.len() < 20 {
        out.push(pad);
    }
    Some(out)
}

/// A value of the entity, normalised as its key's bounds are (the start of its period).
fn norm_value(vr: Vr, v: &str) -> Option<String> {
    match vr {
        Vr::DA => norm_date(v),
        Vr::TM => norm_time(v, '0'),
        // A stored DT with a UTC offset is compared on its local part.
        Vr::DT => norm_datetime(v.split(['+', '-']).next().unwrap_or(v), '0'),
        _ => None,
    }
}

fn bound(vr: Vr, v: &str, end: bool) -> Option<String> {
    let pad = if end { '9' } else { '0' };
    match vr {
        Vr::DA => norm_date(v),
        Vr::TM => norm_time(v, pad),
        Vr::DT => norm_datetime(v, pad),
        _ => None,
    }
}

fn fuzzy_words(v: &str) -> Vec<String> {
    v.split(['^', '=', ' '])
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Key {
    /// Parses a key's value for an attribute of this VR.
    fn parse(tag: u32, level: Level, vr: Vr, value: &str, fuzzy: bool) -> Result<Key, BadQuery> {
        let name = radveil_part10::tag_name(tag);
        if value.len() > MAX_KEY_LEN {
            return Err(bad(format!("the value for {name} is too long")));
        }
        let rule = if value.is_empty() {
            Rule::Universal
        } else if value == "\"\"" {
            Rule::Empty
        } else if vr == Vr::UI {
            let uids: Vec<String> = value
                .split([',', '\\'])
                .map(|u| u.trim().to_string())
                .collect();
            if uids
                .iter()
                .any(|u| u.is_empty() || !u.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            {
                return Err(bad(format!("the value for {name} is not a list of UIDs")));
            }
            Rule::Uids(uids)
        } else if matches!(vr, Vr::DA | Vr::TM | Vr::DT) {
            if let Some((lo, hi)) = value.split_once('-') {
                if lo.is_empty() && hi.is_empty() {
                    return Err(bad(format!("the range for {name} has no bound")));
                }
                let side = |v: &str, end| -> Result<Option<String>, BadQuery> {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    bound(vr, v, end).map(Some).ok_or_else(|| {
                        bad(format!(
                            "the range for {name} is not a valid range of its VR"
                        ))
                    })
                };
                Rule::Range(side(lo, false)?, side(hi, true)?)
            } else {
                let (lo, hi) = (bound(vr, value, false), bound(vr, value, true));
                match (lo, hi) {
                    (Some(lo), Some(hi)) => Rule::Range(Some(lo), Some(hi)),
                    _ => return Err(bad(format!("the value for {name} is not valid for its VR"))),
                }
            }
        } else if is_wildcard_vr(vr) && value.contains(['*', '?']) {
            let p = if vr == Vr::PN {
                value.to_lowercase()
            } else {
                value.to_string()
            };
            Rule::Wildcard(p.chars().collect())
        } else if vr == Vr::PN && fuzzy {
            Rule::Fuzzy(fuzzy_words(value))
        } else if vr == Vr::PN {
            Rule::Single(value.to_lowercase())
        } else {
            Rule::Single(value.to_string())
        };
        Ok(Key {
            tag,
            level,
            vr,
            rule,
        })
    }

    /// Whether an entity whose attribute is `attr` (None: absent) matches.
    fn matches(&self, attr: Option<&Field<'_>>) -> bool {
        let mut values = attr.into_iter().flat_map(Field::values);
        match &self.rule {
            Rule::Universal => true,
            Rule::Empty => values.all(|v| v.is_empty()),
            rule => values.any(|v| self.one(rule, v)),
        }
    }

    fn one(&self, rule: &Rule, v: &str) -> bool {
        let pn = self.vr == Vr::PN;
        match rule {
            Rule::Universal => true,
            Rule::Empty => v.is_empty(),
            Rule::Single(k) if pn => name_groups(v).any(|g| g.to_lowercase() == *k),
            Rule::Single(k) => match self.vr {
                Vr::IS | Vr::US | Vr::UL | Vr::SS | Vr::SL => {
                    match (k.trim().parse::<i64>(), v.trim().parse::<i64>()) {
                        (Ok(a), Ok(b)) => a == b,
                        _ => k == v,
                    }
                }
                Vr::DS | Vr::FL | Vr::FD => {
                    match (k.trim().parse::<f64>(), v.trim().parse::<f64>()) {
                        (Ok(a), Ok(b)) => a == b,
                        _ => k == v,
                    }
                }
                _ => k == v,
            },
            Rule::Uids(list) => list.iter().any(|u| u == v),
            Rule::Wildcard(p) if pn => {
                name_groups(v).any(|g| wildcard(p, &g.to_lowercase().chars().collect::<Vec<_>>()))
            }
            Rule::Wildcard(p) => wildcard(p, &v.chars().collect::<Vec<_>>()),
            Rule::Range(lo, hi) => norm_value(self.vr, v).is_some_and(|n| {
                lo.as_ref().is_none_or(|lo| n >= *lo) && hi.as_ref().is_none_or(|hi| n <= *hi)
            }),
            Rule::Fuzzy(words) => {
                let have = fuzzy_words(v);
                !words.is_empty()
                    && words
                        .iter()
                        .all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
            }
        }
    }
}

/// A person name whole, then each of its component groups (alphabetic, ideographic,
/// phonetic): a key without `=` matches any of them.
fn name_groups(v: &str) -> impl Iterator<Item = &str> {
    std::iter::once(v).chain(v.split('=').filter(|g| !g.is_empty() && g.len() != v.len()))
}

/// Wild card matching: `*` any run of characters (none included), `?` exactly one. Linear
/// in time apart from backtracking to the last `*` (O(n·m) at worst, with n and m bounded).
fn wildcard(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

// ---------------------------------------------------------------------------------------
// Queries.

/// What a search lists, and where in the tree (the nested routes fix a study or series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/studies`.
    Studies,
    /// `/series` or `/studies/{study}/series`.
    Series {
        /// The study of the path.
        study: Option<Handle>,
    },
    /// `/instances`, `/studies/{study}/instances` or `/studies/{s}/series/{se}/instances`.
    Instances {
        /// The study of the path.
        study: Option<Handle>,
        /// The series of the path.
        series: Option<Handle>,
    },
}

impl Target {
    fn level(self) -> Level {
        match self {
            Target::Studies => Level::Study,
            Target::Series { .. } => Level::Series,
            Target::Instances { .. } => Level::Instance,
        }
    }
}

/// A parsed QIDO-RS query.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    keys: Vec<Key>,
    include_all: bool,
    include: BTreeSet<u32>,
    limit: usize,
    offset: usize,
    /// Tags of keys that are not supported for matching (ignored, with a warning).
    pub unsupported: Vec<u32>,
}

/// An attribute named by keyword or by tag (8 hex digits).
fn attribute(name: &str) -> Result<u32, BadQuery> {
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(name, 16).map_err(|_| bad("a tag is not 8 hex digits"));
    }
    if name.contains('.') {
        return Err(bad("sequence matching is not supported"));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad("a query parameter is not an attribute keyword or tag"));
    }
    radveil_standard::tag_for_keyword(name)
        .ok_or_else(|| bad("a query parameter is neither a known keyword nor a tag"))
}

impl SearchQuery {
    /// Parses the query parameters of a search of `target`.
    pub fn parse(params: &[(String, String)], target: Target) -> Result<SearchQuery, BadQuery> {
        let level = target.level();
        let mut q = SearchQuery {
            keys: Vec::new(),
            include_all: false,
            include: BTreeSet::new(),
            limit: MAX_RESULTS,
            offset: 0,
            unsupported: Vec::new(),
        };
        let fuzzy = match params
            .iter()
            .filter(|(k, _)| k == "fuzzymatching")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] | ["false"] => false,
            ["true"] => true,
            [_] => return Err(bad("fuzzymatching is true or false")),
            _ => return Err(bad("fuzzymatching is given more than once")),
        };
        let mut seen = BTreeSet::new();
        let mut limit_seen = false;
        let mut offset_seen = false;
        for (name, value) in params {
            match name.as_str() {
                "fuzzymatching" => {}
                "limit" | "offset" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad(format!("{name} is a non-negative integer")))?;
                    let first = if name == "limit" {
                        std::mem::replace(&mut limit_seen, true)
                    } else {
                        std::mem::replace(&mut offset_seen, true)
                    };
                    if first {
                        return Err(bad(format!("{name} is given more than once")));
                    }
                    if name == "limit" {
                        // 0 asks for no limit of the client's: the server's applies.
                        q.limit = if n == 0 {
                            MAX_RESULTS
                        } else {
                            n.min(MAX_RESULTS)
                        };
                    } else {
                        q.offset = n;
                    }
                }
                "includefield" => {
                    for f in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if f == "all" {
                            q.include_all = true;
                        } else {
                            q.include.insert(attribute(f)?);
                        }
                    }
                }
                _ => {
                    let tag = attribute(name)?;
                    if !seen.insert(tag) {
                        return Err(bad(format!(
                            "{} is given more than once",
                            radveil_part10::tag_name(tag)
                        )));
                    }
                    match known(tag) {
                        Some((l, vr)) if l <= level && tag != tags::TRANSFER_SYNTAX_UID => {
                            q.keys.push(Key::parse(tag, l, vr, value, fuzzy)?);
                        }
                        _ => q.unsupported.push(tag),
                    }
                }
            }
        }
        Ok(q)
    }
}

/// The attributes each level returns unless asked otherwise (PS3.18 Tables 10.6.3-3, -4
/// and -5); Retrieve URL is added apart.
const STUDY_DEFAULT: &[u32] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::MODALITIES_IN_STUDY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];
const SERIES_DEFAULT: &[u32] = &[
    tags::MODALITY,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
];
const INSTANCE_DEFAULT: &[u32] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_AVAILABILITY,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
];

/// The result of a search.
#[derive(Debug)]
pub struct Found {
    /// The matching entities, as DICOM JSON objects.
    pub results: Vec<Value>,
    /// Whether more matched than were returned.
    pub more: bool,
}

/// Index rows an instance-level search reads in one round at most (one blocking task that
/// holds the index; a series larger than this is one round of its own).
const ROUND_ROWS: usize = 2048;
/// Series an instance-level search reads in one round at most.
const ROUND_SERIES: usize = 256;

/// The page a search fills: `offset` matches skipped, then up to `limit` kept; one more
/// match tells that there are more.
struct Page {
    skip: usize,
    limit: usize,
    out: Vec<Value>,
    more: bool,
}

impl Page {
    /// Counts a match; false once the page is full (and notes that more matched).
    fn take(&mut self, make: impl FnOnce() -> Value) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return true;
        }
        if self.out.len() >= self.limit {
            self.more = true;
            return false;
        }
        self.out.push(make());
        true
    }

    /// Matches still wanted: those to skip, those to keep, and one to tell there are more.
    fn wanted(&self) -> usize {
        self.skip
            .saturating_add(self.limit.saturating_sub(self.out.len()))
            .saturating_add(1)
    }
}

/// What a search visits and shows, worked out from its query and target.
struct Plan<'q> {
    scope: &'q Scope,
    q: &'q SearchQuery,
    level: Level,
    /// The only studies it may list (the path's, or those a list of Study Instance UIDs
    /// names), by handle: keyed look-ups instead of a walk of every study.
    studies: Option<BTreeSet<Handle>>,
    /// The same for series (the path's, or a list of Series Instance UIDs).
    series: Option<BTreeSet<Handle>>,
    /// The instances a list of SOP Instance UIDs names, by handle (instance level).
    instances: Option<BTreeSet<Handle>>,
    /// The attributes each result shows.
    wanted: BTreeSet<u32>,
    base: &'q str,
}

impl<'q> Plan<'q> {
    fn new(
        store: &Store,
        scope: &'q Scope,
        q: &'q SearchQuery,
        target: Target,
        base: &'q str,
    ) -> Plan<'q> {
        let level = target.level();
        let (path_study, path_series) = match target {
            Target::Studies => (None, None),
            Target::Series { study } => (study, None),
            Target::Instances { study, series } => (study, series),
        };
        let mut wanted: BTreeSet<u32> = BTreeSet::new();
        let defaults: &[(&[u32], Level, bool)] = &[
            (STUDY_DEFAULT, Level::Study, path_study.is_none()),
            (SERIES_DEFAULT, Level::Series, path_series.is_none()),
            (INSTANCE_DEFAULT, Level::Instance, true),
        ];
        for (list, l, shown) in defaults {
            if *l == level || (*l < level && *shown) {
                wanted.extend(list.iter().copied());
            }
        }
        wanted.extend(q.keys.iter().map(|k| k.tag));
        wanted.extend(
            q.include
                .iter()
                .copied()
                .filter(|t| known(*t).is_some_and(|(l, _)| l <= level)),
        );
        if q.include_all {
            for (t, l, _) in dicom_json::KEPT.iter().chain(DERIVED) {
                if *l <= level {
                    wanted.insert(*t);
                }
            }
        }
        wanted.remove(&tags::TRANSFER_SYNTAX_UID);
        // A list of UIDs names its entities by their handles.
        let keyed = |tag: u32, l: radveil_store::Level| -> Option<BTreeSet<Handle>> {
            q.keys
                .iter()
                .find(|k| k.tag == tag)
                .and_then(|k| match &k.rule {
                    Rule::Uids(list) => Some(list.iter().map(|u| store.uid(l, u)).collect()),
                    _ => None,
                })
        };
        let narrow = |path: Option<Handle>, listed: Option<BTreeSet<Handle>>| match (path, listed) {
            (None, listed) => listed,
            (Some(p), None) => Some(BTreeSet::from([p])),
            (Some(p), Some(listed)) => Some(listed.into_iter().filter(|h| *h == p).collect()),
        };
        Plan {
            scope,
            q,
            level,
            studies: narrow(
                path_study,
                keyed(tags::STUDY_INSTANCE_UID, radveil_store::Level::Study),
            ),
            series: narrow(
                path_series,
                keyed(tags::SERIES_INSTANCE_UID, radveil_store::Level::Series),
            ),
            instances: keyed(tags::SOP_INSTANCE_UID, radveil_store::Level::Instance)
                .filter(|_| level == Level::Instance),
            wanted,
            base,
        }
    }

    fn keys_at(&self, l: Level) -> impl Iterator<Item = &Key> {
        self.q.keys.iter().filter(move |k| k.level == l)
    }

    fn study_ok(&self, h: &Handle, st: &Study) -> bool {
        self.scope.sees_study(&st.patient, h)
            && self
                .keys_at(Level::Study)
                .all(|k| k.matches(study_attr(st, k.tag).as_ref()))
    }

    fn series_ok(&self, se: &Series) -> bool {
        self.keys_at(Level::Series)
            .all(|k| k.matches(series_attr(se, k.tag).as_ref()))
    }

    /// Calls `f` with each study the search may list, in handle order, from `from` on
    /// (itself included), until `f` answers false; true when it went to the end.
    fn visit_studies<'t>(
        &self,
        tree: &'t Tree,
        from: Option<&Handle>,
        mut f: impl FnMut(&'t Handle, &'t Study) -> bool,
    ) -> bool {
        let lo = from.map_or(Bound::Unbounded, Bound::Included);
        match &self.studies {
            Some(only) => {
                for h in only.range((lo, Bound::Unbounded)) {
                    if let Some((h, st)) = tree.get_key_value(h) {
                        if self.study_ok(h, st) && !f(h, st) {
                            return false;
                        }
                    }
                }
            }
            None => {
                for (h, st) in tree.range((lo, Bound::Unbounded)) {
                    if self.study_ok(h, st) && !f(h, st) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Calls `f` with each series the search may list, in handle order (study by study),
    /// after the series `after` names when it is given, until `f` answers false; true when
    /// it went to the end.
    fn visit_series<'t>(
        &self,
        tree: &'t Tree,
        after: Option<(Handle, Handle)>,
        mut f: impl FnMut(&'t Handle, &'t Study, &'t Handle, &'t Series) -> bool,
    ) -> bool {
        self.visit_studies(tree, after.as_ref().map(|a| &a.0), |sth, st| {
            let lo = match &after {
                Some((s, se)) if s == sth => Bound::Excluded(se),
                _ => Bound::Unbounded,
            };
            match &self.series {
                Some(only) => {
                    for h in only.range((lo, Bound::Unbounded)) {
                        if let Some((h, se)) = st.series.get_key_value(h) {
                            if self.series_ok(se) && !f(sth, st, h, se) {
                                return false;
                            }
                        }
                    }
                }
                None => {
                    for (h, se) in st.series.starting(lo) {
                        if self.series_ok(se) && !f(sth, st, h, se) {
                            return false;
                        }
                    }
                }
            }
            true
        })
    }

    /// Whether the search may list an instance of this series (for instances found by
    /// their handles rather than by the walk).
    fn lists(&self, sth: &Handle, st: &Study, seh: &Handle, se: &Series) -> bool {
        self.studies.as_ref().is_none_or(|s| s.contains(sth))
            && self.series.as_ref().is_none_or(|s| s.contains(seh))
            && self.study_ok(sth, st)
            && self.series_ok(se)
    }

    fn study_result(&self, st: &Study) -> Value {
        let mut m = Map::new();
        for &t in &self.wanted {
            put(&mut m, t, study_attr(st, t).as_ref());
        }
        let study_uid = packed_uid(&st.attrs, tags::STUDY_INSTANCE_UID);
        retrieve_url(&mut m, format!("{}/studies/{study_uid}", self.base));
        Value::Object(m)
    }

    /// Puts a study or series attribute in a result.
    fn upper(&self, m: &mut Map<String, Value>, st: &Study, se: &Series, t: u32) {
        match known(t).map(|k| k.0) {
            Some(Level::Study) => put(m, t, study_attr(st, t).as_ref()),
            _ => put(m, t, series_attr(se, t).as_ref()),
        }
    }

    fn series_result(&self, st: &Study, se: &Series) -> Value {
        let mut m = Map::new();
        for &t in &self.wanted {
            self.upper(&mut m, st, se, t);
        }
        let study_uid = packed_uid(&st.attrs, tags::STUDY_INSTANCE_UID);
        let series_uid = packed_uid(&se.attrs, tags::SERIES_INSTANCE_UID);
        retrieve_url(
            &mut m,
            format!("{}/studies/{study_uid}/series/{series_uid}", self.base),
        );
        Value::Object(m)
    }

    fn instance_result(&self, st: &Study, se: &Series, attrs: &Attrs) -> Value {
        let mut m = Map::new();
        for &t in &self.wanted {
            match known(t).map(|k| k.0) {
                Some(Level::Instance) => put(&mut m, t, instance_attr(attrs, t).as_ref()),
                // Instance Availability is the same at every level.
                _ if t == tags::INSTANCE_AVAILABILITY => put(&mut m, t, study_attr(st, t).as_ref()),
                _ => self.upper(&mut m, st, se, t),
            }
        }
        let study_uid = packed_uid(&st.attrs, tags::STUDY_INSTANCE_UID);
        let series_uid = packed_uid(&se.attrs, tags::SERIES_INSTANCE_UID);
        let sop = get(attrs, tags::SOP_INSTANCE_UID)
            .and_then(|a| a.values.first())
            .map(|v| &**v)
            .unwrap_or("");
        retrieve_url(
            &mut m,
            format!(
                "{}/studies/{study_uid}/series/{series_uid}/instances/{sop}",
                self.base
            ),
        );
        Value::Object(m)
    }
}

/// An instance's attributes from its opened index row (`None`: they do not open).
fn opened_attrs(meta: Result<Vec<u8>, StoreError>) -> Option<Attrs> {
    let v = serde_json::from_slice::<Value>(&meta.ok()?).ok()?;
    Some(dicom_json::attrs_from_json(&v))
}

fn report_unopened(rows: usize) {
    if rows > 0 {
        tracing::error!(
            rows,
            "index rows whose attributes do not open were left out of a search"
        );
    }
}

/// What one round of an instance-level walk found in the index.
struct Round {
    /// The round's series, and their instances in the catalogue (in handle order).
    series: Vec<(Handle, Handle)>,
    members: Vec<Vec<Handle>>,
    /// Instance-level keys.
    keys: Vec<Key>,
    /// A series and the last of its instances an earlier round read: its rows up to that
    /// one are passed over.
    resume: Option<((Handle, Handle), Handle)>,
    /// Which series the rows read are of (they come series by series).
    at: usize,
    /// Matches still to skip for the offset.
    skip: usize,
    /// Matches wanted (the page's and one more).
    want: usize,
    /// The matches: the series (index into `series`) and the instance's attributes.
    hits: Vec<(usize, Attrs)>,
    /// Rows whose attributes did not open, and their series (indices into `series`).
    unopened: usize,
    unopened_in: Vec<usize>,
    /// Where it stopped once it had the matches it wanted: the series (index into
    /// `series`) and instance of the last row read.
    stopped: Option<(usize, Handle)>,
}

impl Round {
    /// Takes one row read from the index; false once enough matched.
    fn row(&mut self, row: &radveil_store::Row, meta: Result<Vec<u8>, StoreError>) -> bool {
        while self
            .series
            .get(self.at)
            .is_some_and(|s| *s != (row.study, row.series))
        {
            self.at += 1;
        }
        let Some(members) = self.members.get(self.at) else {
            return false;
        };
        if self
            .resume
            .is_some_and(|(s, i)| s == (row.study, row.series) && row.instance <= i)
        {
            return true;
        }
        // Rows the catalogue does not list (a store that raced a deletion, one whose
        // attributes did not open when the catalogue was loaded) are not listed here either.
        if members.binary_search(&row.instance).is_err() {
            return true;
        }
        let Some(attrs) = opened_attrs(meta) else {
            self.unopened += 1;
            if self.unopened_in.last() != Some(&self.at) {
                self.unopened_in.push(self.at);
            }
            return true;
        };
        if !self
            .keys
            .iter()
            .all(|k| k.matches(instance_attr(&attrs, k.tag).as_ref()))
        {
            return true;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return true;
        }
        self.hits.push((self.at, attrs));
        if self.hits.len() < self.want {
            return true;
        }
        self.stopped = Some((self.at, row.instance));
        false
    }
}

impl Catalogue {
    /// Runs a search of `target` for a request that may see `scope`; `base` is the
    /// service's URL (for Retrieve URL). Study and series searches answer from memory;
    /// instance searches read the instances' attributes from the store's index (see the
    /// module's documentation); a failure to read the index is the error.
    pub async fn search(
        &self,
        store: &Store,
        scope: &Scope,
        q: &SearchQuery,
        target: Target,
        base: &str,
    ) -> Result<Found, StoreError> {
        let plan = Plan::new(store, scope, q, target, base);
        let mut page = Page {
            skip: q.offset,
            limit: q.limit,
            out: Vec::new(),
            more: false,
        };
        match plan.level {
            Level::Study => {
                let tree = self.read();
                plan.visit_studies(&tree, None, |_, st| page.take(|| plan.study_result(st)));
            }
            Level::Series => {
                let tree = self.read();
                plan.visit_series(&tree, None, |_, st, _, se| {
                    page.take(|| plan.series_result(st, se))
                });
            }
            Level::Instance => match &plan.instances {
                Some(handles) => {
                    let handles: Vec<Handle> = handles.iter().copied().collect();
                    self.instances_by_handle(store, &plan, handles, &mut page)
                        .await?
                }
                None => self.instances_by_walk(store, &plan, &mut page).await?,
            },
        }
        Ok(Found {
            results: page.out,
            more: page.more,
        })
    }

    /// Instances named by a list of SOP Instance UIDs: their rows looked up by handle,
    /// kept when the catalogue lists them under a study and series the search may list,
    /// in the walk's order.
    async fn instances_by_handle(
        &self,
        store: &Store,
        plan: &Plan<'_>,
        handles: Vec<Handle>,
        page: &mut Page,
    ) -> Result<(), StoreError> {
        let rows = store.metas_of(handles).await?;
        self.opened.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut unopened = 0;
        let mut found: Vec<(Handle, Handle, Handle, Attrs)> = Vec::new();
        for (row, meta) in rows {
            match opened_attrs(meta) {
                Some(a) => found.push((row.study, row.series, row.instance, a)),
                None => {
                    unopened += 1;
                    self.unopenable().insert((row.study, row.series));
                }
            }
        }
        report_unopened(unopened);
        found.sort_by_key(|f| (f.0, f.1, f.2));
        let tree = self.read();
        for (sth, seh, i, attrs) in &found {
            let Some(st) = tree.get(sth) else { continue };
            let Some(se) = st.series.get(seh) else {
                continue;
            };
            if !se.is_member(i)
                || !plan.lists(sth, st, seh, se)
                || !plan
                    .keys_at(Level::Instance)
                    .all(|k| k.matches(instance_attr(attrs, k.tag).as_ref()))
            {
                continue;
            }
            if !page.take(|| plan.instance_result(st, se, attrs)) {
                break;
            }
        }
        Ok(())
    }

    /// Instances found by walking the series the search may list, in order, in rounds:
    /// each round takes the next series under the read lock (until their instances cover
    /// what the page still wants, or [`ROUND_ROWS`] / [`ROUND_SERIES`]), reads their rows
    /// from the index, and stops reading once the page is full. Without instance-level
    /// keys, whole series inside the offset are skipped unread (but for those known to hold
    /// a row that does not open, which the offset would count when skipped and not when
    /// read). A round that stopped reading with the matches it wanted, some of which were
    /// then dropped, is followed by one that goes on from the last row it read.
    async fn instances_by_walk(
        &self,
        store: &Store,
        plan: &Plan<'_>,
        page: &mut Page,
    ) -> Result<(), StoreError> {
        let keys: Vec<Key> = plan.keys_at(Level::Instance).cloned().collect();
        // The walk goes on after the series `after` names; when `resume` is given, in its
        // series after its instance (the rows before it read by an earlier round).
        let mut after: Option<(Handle, Handle)> = None;
        let mut resume: Option<((Handle, Handle), Handle)> = None;
        loop {
            let mut series = Vec::new();
            let mut members = Vec::new();
            // Where the walk stood before the round's first series.
            let mut before = after;
            let ended = {
                let tree = self.read();
                let unopenable = self.unopenable();
                let mut rows = 0usize;
                plan.visit_series(&tree, after, |sth, _, seh, se| {
                    let full = series.len() >= ROUND_SERIES
                        || rows >= ROUND_ROWS
                        || (keys.is_empty() && rows >= page.wanted());
                    if full {
                        return false;
                    }
                    let at = (*sth, *seh);
                    if series.is_empty() {
                        before = after;
                    }
                    after = Some(at);
                    let n = se.members.len();
                    // Skipped unread only before the round reads anything (the offset
                    // counts from the first instance it has not passed), and only when
                    // every row is taken to open, as when it is read.
                    if keys.is_empty()
                        && series.is_empty()
                        && page.skip >= n
                        && !unopenable.contains(&at)
                        && resume.is_none_or(|(s, _)| s != at)
                    {
                        page.skip -= n;
                        return true;
                    }
                    series.push(at);
                    members.push(se.members.iter().map(|m| m.instance).collect::<Vec<_>>());
                    rows += n;
                    true
                })
            };
            if series.is_empty() {
                return Ok(());
            }
            let round = Round {
                series: series.clone(),
                members,
                keys: keys.clone(),
                resume: resume.take(),
                at: 0,
                skip: page.skip,
                want: page.wanted().saturating_sub(page.skip),
                hits: Vec::new(),
                unopened: 0,
                unopened_in: Vec::new(),
                stopped: None,
            };
            let opened = self.opened.clone();
            let round = store
                .for_each_meta_in(series, round, move |round, row, meta| {
                    opened.fetch_add(1, Ordering::Relaxed);
                    round.row(row, meta)
                })
                .await?;
            report_unopened(round.unopened);
            if !round.unopened_in.is_empty() {
                let mut known = self.unopenable();
                for at in &round.unopened_in {
                    known.insert(round.series[*at]);
                }
            }
            page.skip = round.skip;
            #[cfg(test)]
            self.run_between();
            {
                let tree = self.read();
                for (at, attrs) in &round.hits {
                    let (sth, seh) = &round.series[*at];
                    // Gone since the round read it (deleted meanwhile): not listed.
                    let Some(st) = tree.get(sth) else { continue };
                    let Some(se) = st.series.get(seh) else {
                        continue;
                    };
                    if !page.take(|| plan.instance_result(st, se, attrs)) {
                        return Ok(());
                    }
                }
            }
            // The round stopped reading with the matches it wanted and some were dropped:
            // the next goes on from the last row it read, not after the series it queued.
            if let Some((at, instance)) = round.stopped {
                after = match at.checked_sub(1) {
                    Some(prev) => Some(round.series[prev]),
                    None => before,
                };
                resume = Some((round.series[at], instance));
                continue;
            }
            if ended {
                return Ok(());
            }
        }
    }

    /// Has `f` run once between a walk's round reading the index and its matches being
    /// taken.
    #[cfg(test)]
    fn between_rounds(&self, f: impl FnOnce(&Catalogue) + Send + 'static) {
        *self.between.lock().unwrap() = Some(Between(Box::new(f)));
    }

    #[cfg(test)]
    fn run_between(&self) {
        let f = self.between.lock().unwrap().take();
        if let Some(Between(f)) = f {
            f(self);
        }
    }

    /// Index rows opened by instance-level searches so far.
    #[cfg(test)]
    fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// Puts an attribute in a result: its value, or only its VR when the entity has none.
fn put(m: &mut Map<String, Value>, tag: u32, a: Option<&Field<'_>>) {
    let v = match a {
        Some(a) => a.to_json(),
        None => match known(tag) {
            Some((_, vr)) => json!({ "vr": String::from_utf8_lossy(&vr.code()) }),
            None => return,
        },
    };
    m.insert(format!("{tag:08X}"), v);
}

fn retrieve_url(m: &mut Map<String, Value>, url: String) {
    m.insert(
        format!("{:08X}", tags::RETRIEVE_URL),
        json!({ "vr": "UR", "Value": [url] }),
    );
}

// ---------------------------------------------------------------------------------------
// Handlers.

fn study_handle(state: &AppState, uid: &str) -> Handle {
    state.store.uid(radveil_store::Level::Study, uid)
}

fn series_handle(state: &AppState, uid: &str) -> Handle {
    state.store.uid(radveil_store::Level::Series, uid)
}

/// Runs a search and shapes the response.
/// Whether the client accepts DICOM JSON (PS3.18 §8.7.5): no Accept header, or one with
/// `application/dicom+json`, `application/json`, `application/*` or `*/*` not refused by
/// `q=0`. XML (`multipart/related; type="application/dicom+xml"`) is not offered.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        any = true;
        let Ok(v) = v.to_str() else { continue };
        for range in v.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let fits = matches!(
                media.as_str(),
                "application/dicom+json" | "application/json" | "application/*" | "*/*"
            );
            if fits && !refused {
                return true;
            }
        }
    }
    !any
}

async fn answer(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    params: &[(String, String)],
    target: Target,
) -> Response {
    if !accepts_json(headers) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "searches answer application/dicom+json only\n",
        )
            .into_response();
    }
    let q = match SearchQuery::parse(params, target) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain")],
                format!("{e}\n"),
            )
                .into_response()
        }
    };
    let base = crate::app::base_url(state, headers);
    let found = match state
        .catalogue
        .search(&state.store, scope, &q, target, &base)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "a search could not read the index");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "the index could not be read\n",
            )
                .into_response();
        }
    };
    let what = searched(state, scope, params, &found.results);
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Value::Array(found.results).to_string(),
    )
        .into_response();
    let mut warnings = Vec::new();
    if !q.unsupported.is_empty() {
        let names: Vec<String> = q
            .unsupported
            .iter()
            .map(|t| radveil_part10::tag_name(*t))
            .collect();
        warnings.push(format!(
            "299 radveil \"The following attributes are not supported for matching at this level and were ignored: {}\"",
            names.join(" ")
        ));
    }
    if found.more {
        warnings.push(
            "299 radveil \"There are more results than returned: ask again with a larger offset\""
                .to_string(),
        );
    }
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&w) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    what.attach(resp)
}

/// What a search touched, for the audit trail: its query string, and the patients and
/// studies of the results that name a study.
pub(crate) fn searched(
    state: &AppState,
    scope: &Scope,
    params: &[(String, String)],
    results: &[Value],
) -> crate::audit::What {
    let text = |v: &Value, tag: u32| -> Option<String> {
        v.get(format!("{tag:08X}"))?
            .get("Value")?
            .get(0)?
            .as_str()
            .map(str::to_string)
    };
    let mut what = crate::audit::What::default();
    for r in results {
        let Some(study) = text(r, tags::STUDY_INSTANCE_UID) else {
            continue;
        };
        let found = crate::audit::study(state, scope, &study, None, None, None);
        for p in found.patients {
            for s in p.studies {
                what.add(&p.id, p.issuer.as_deref().unwrap_or(""), s);
            }
        }
    }
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    what.query = Some(q.join("&"));
    what
}

type Params = Query<Vec<(String, String)>>;

/// `GET /dicom-web/studies`.
pub async fn studies(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    answer(&state, &scope, &headers, &p, Target::Studies).await
}

/// `GET /dicom-web/series`.
pub async fn all_series(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    answer(&state, &scope, &headers, &p, Target::Series { study: None }).await
}

/// `GET /dicom-web/instances`.
pub async fn all_instances(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let t = Target::Instances {
        study: None,
        series: None,
    };
    answer(&state, &scope, &headers, &p, t).await
}

/// `GET /dicom-web/studies/{study}/series`.
pub async fn study_series(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let t = Target::Series {
        study: Some(study_handle(&state, &study)),
    };
    answer(&state, &scope, &headers, &p, t).await
}

/// `GET /dicom-web/studies/{study}/instances`.
pub async fn study_instances(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let t = Target::Instances {
        study: Some(study_handle(&state, &study)),
        series: None,
    };
    answer(&state, &scope, &headers, &p, t).await
}

/// `GET /dicom-web/studies/{study}/series/{series}/instances`.
pub async fn series_instances(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let t = Target::Instances {
        study: Some(study_handle(&state, &study)),
        series: Some(series_handle(&state, &series)),
    };
    answer(&state, &scope, &headers, &p, t).await
}

#[cfg(test)]
mod tests;
