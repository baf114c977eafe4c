//! QIDO-RS (PS3.18 §10.6): searching studies, series and instances, at every level and
//! nested (`/studies/{study}/series`, ...), with the matching rules of PS3.4 C.2.2.2.
//!
//! The index holds no identifying value in plaintext, so it cannot be searched as it is.
//! Searches run on the [`Catalogue`]: the opened attributes of every stored instance, kept
//! in memory (study → series → instance), built at startup from the index and updated on
//! every store and deletion. Memory is not storage at rest: what the catalogue holds is
//! never written anywhere (no swap file is ours to control; operators who fear swap should
//! disable it or encrypt it, as for any process that handles images).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_part10::Vr;
use radveil_standard::tags;
use radveil_store::{Handle, Handles, Store, StoreError};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::dicom_json::{self, Attr, Attrs, Level};
use crate::scope::Scope;

/// The most results one response carries.
pub const MAX_RESULTS: usize = 1000;
/// The longest value a matching key may have, in bytes.
const MAX_KEY_LEN: usize = 1024;

// ---------------------------------------------------------------------------------------
// The catalogue.

#[derive(Debug, Default)]
struct Instance {
    attrs: Attrs,
}

#[derive(Debug, Default)]
struct Series {
    attrs: Attrs,
    instances: BTreeMap<Handle, Instance>,
}

#[derive(Debug)]
struct Study {
    patient: Handle,
    attrs: Attrs,
    series: BTreeMap<Handle, Series>,
}

/// The opened QIDO attributes of every stored instance, study → series → instance, shared
/// by all requests behind a lock. It lives in memory only (memory is not storage at rest);
/// the index keeps these attributes sealed under each study's key.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    studies: Arc<RwLock<BTreeMap<Handle, Study>>>,
    /// Counts removals, so that a store that raced a deletion can tell (see [`Mark`]).
    removals: Arc<AtomicU64>,
}

/// Where the catalogue's removals stood before an instance was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

/// Adds the attributes in `from` that `into` lacks (attributes stay in tag order).
fn merge(into: &mut Attrs, from: Attrs) {
    let before = into.len();
    for (tag, a) in from {
        if into[..before]
            .binary_search_by_key(&tag, |(t, _)| *t)
            .is_err()
        {
            into.push((tag, a));
        }
    }
    if into.len() != before {
        into.sort_by_key(|(t, _)| *t);
    }
}

fn get(attrs: &Attrs, tag: u32) -> Option<&Attr> {
    attrs
        .binary_search_by_key(&tag, |(t, _)| *t)
        .ok()
        .map(|i| &attrs[i].1)
}

impl Catalogue {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Handle, Study>> {
        // The tree is consistent after every statement that changes it: a panic elsewhere
        // while the lock was held leaves it usable.
        self.studies.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Handle, Study>> {
        self.studies.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the catalogue from the store's index (every row's sealed attributes opened,
    /// one key look-up per study). Rows whose attributes do not open (altered) are left out
    /// and counted; the count is returned.
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let (tree, bad) = store
            .for_each_meta(
                (BTreeMap::new(), 0usize),
                |(tree, bad): &mut (BTreeMap<Handle, Study>, usize), row, meta| {
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
    /// instances only add attributes it lacked (PS3.4 C.6 has one value per entity).
    pub fn insert(&self, h: &Handles, attrs: Attrs) {
        insert_into(&mut self.write(), h, attrs);
    }

    /// The patient of a study (handle, Patient ID, Issuer of Patient ID, empty when
    /// absent), for the audit trail; `None` for a study not in the catalogue.
    pub fn patient_of(&self, study: &Handle) -> Option<crate::audit::PatientOf> {
        let tree = self.read();
        let s = tree.get(study)?;
        let value = |tag| {
            get(&s.attrs, tag)
                .and_then(|a| a.values.first())
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        Some((
            s.patient,
            value(tags::PATIENT_ID),
            value(tags::ISSUER_OF_PATIENT_ID),
        ))
    }

    /// Take before storing an instance, for [`Catalogue::insert_stored`].
    pub fn mark(&self) -> Mark {
        Mark(self.removals.load(Ordering::SeqCst))
    }

    /// Adds an instance the store has just stored. A deletion of its study or series that
    /// ran between the store and this call has already taken its row away from the store
    /// but found nothing here to remove: when any removal happened since `before`, the
    /// store is asked whether the row is still there, and the instance goes if it is not.
    /// Without this, a search could list an instance that no longer exists.
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
                return;
            }
            (Some(se), None) => {
                st.series.remove(se);
            }
            (se, Some(i)) => {
                for (h, s) in st.series.iter_mut() {
                    if se.is_none_or(|se| se == h) {
                        s.instances.remove(i);
                    }
                }
                st.series.retain(|_, s| !s.instances.is_empty());
            }
        }
        if st.series.is_empty() {
            tree.remove(study);
        }
    }

    /// Visits the search attributes of each stored instance of a series (read-only, under
    /// the read lock: `f` must not call back into the catalogue). Integrity at ingest
    /// compares a new instance's geometry with them.
    pub fn for_each_in_series(&self, study: &Handle, series: &Handle, mut f: impl FnMut(&Attrs)) {
        let tree = self.read();
        if let Some(se) = tree.get(study).and_then(|s| s.series.get(series)) {
            for i in se.instances.values() {
                f(&i.attrs);
            }
        }
    }

    /// How many instances the catalogue holds.
    pub fn instances(&self) -> usize {
        self.read()
            .values()
            .flat_map(|s| s.series.values())
            .map(|s| s.instances.len())
            .sum()
    }
}

fn insert_into(tree: &mut BTreeMap<Handle, Study>, h: &Handles, attrs: Attrs) {
    let (mut study, mut series, mut instance) = (Attrs::new(), Attrs::new(), Attrs::new());
    for (tag, a) in attrs {
        // The transfer syntax is neither matched nor returned: not kept in memory.
        if tag == tags::TRANSFER_SYNTAX_UID {
            continue;
        }
        match dicom_json::kept(tag).map(|k| k.0) {
            Some(Level::Study) => study.push((tag, a)),
            Some(Level::Series) => series.push((tag, a)),
            _ => instance.push((tag, a)),
        }
    }
    let st = tree.entry(h.study).or_insert_with(|| Study {
        patient: h.patient,
        attrs: Attrs::new(),
        series: BTreeMap::new(),
    });
    merge(&mut st.attrs, study);
    let se = st.series.entry(h.series).or_default();
    merge(&mut se.attrs, series);
    se.instances
        .insert(h.instance, Instance { attrs: instance });
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

fn number(vr: Vr, n: usize) -> Attr {
    Attr {
        vr,
        values: Box::new([n.to_string().into_boxed_str()]),
    }
}

fn study_attr(st: &Study, tag: u32) -> Option<Cow<'_, Attr>> {
    Some(match tag {
        tags::MODALITIES_IN_STUDY => {
            let set: BTreeSet<&str> = st
                .series
                .values()
                .filter_map(|s| get(&s.attrs, tags::MODALITY))
                .flat_map(|a| a.values.iter().map(|v| &**v))
                .filter(|v| !v.is_empty())
                .collect();
            Cow::Owned(Attr {
                vr: Vr::CS,
                values: set.into_iter().map(Box::from).collect(),
            })
        }
        tags::NUMBER_OF_STUDY_RELATED_SERIES => Cow::Owned(number(Vr::IS, st.series.len())),
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES => Cow::Owned(number(
            Vr::IS,
            st.series.values().map(|s| s.instances.len()).sum(),
        )),
        tags::INSTANCE_AVAILABILITY => Cow::Owned(Attr {
            vr: Vr::CS,
            values: Box::new(["ONLINE".into()]),
        }),
        _ => Cow::Borrowed(get(&st.attrs, tag)?),
    })
}

fn series_attr(se: &Series, tag: u32) -> Option<Cow<'_, Attr>> {
    match tag {
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES => {
            Some(Cow::Owned(number(Vr::IS, se.instances.len())))
        }
        _ => get(&se.attrs, tag).map(Cow::Borrowed),
    }
}

fn uid(attrs: &Attrs, tag: u32) -> &str {
    get(attrs, tag)
        .and_then(|a| a.values.first())
        .map(|v| &**v)
        .unwrap_or("")
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
    fn matches(&self, attr: Option<&Attr>) -> bool {
        let values: &[Box<str>] = attr.map(|a| &*a.values).unwrap_or(&[]);
        match &self.rule {
            Rule::Universal => true,
            Rule::Empty => values.iter().all(|v| v.is_empty()),
            rule => values.iter().any(|v| self.one(rule, v)),
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

impl Catalogue {
    /// Runs a search of `target` for a request that may see `scope`; `base` is the
    /// service's URL (for Retrieve URL).
    pub fn search(&self, scope: &Scope, q: &SearchQuery, target: Target, base: &str) -> Found {
        let level = target.level();
        let (path_study, path_series) = match target {
            Target::Studies => (None, None),
            Target::Series { study } => (study, None),
            Target::Instances { study, series } => (study, series),
        };
        // What each result shows.
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
        let keys_at = |l: Level| q.keys.iter().filter(move |k| k.level == l);

        let tree = self.read();
        let mut out = Vec::new();
        let mut skipped = 0usize;
        let mut more = false;
        // Counts a match; false once the page is full (and notes that more matched).
        let mut take = |out: &mut Vec<Value>, make: &dyn Fn() -> Value| -> bool {
            if skipped < q.offset {
                skipped += 1;
                return true;
            }
            if out.len() >= q.limit {
                more = true;
                return false;
            }
            out.push(make());
            true
        };
        let studies: Box<dyn Iterator<Item = (&Handle, &Study)>> = match path_study {
            Some(s) => Box::new(tree.get_key_value(&s).into_iter()),
            None => Box::new(tree.iter()),
        };
        'studies: for (_, st) in studies {
            if !scope.sees(&st.patient)
                || !keys_at(Level::Study).all(|k| k.matches(study_attr(st, k.tag).as_deref()))
            {
                continue;
            }
            let study_uid = uid(&st.attrs, tags::STUDY_INSTANCE_UID);
            if level == Level::Study {
                let make = || {
                    let mut m = Map::new();
                    for &t in &wanted {
                        put(&mut m, t, study_attr(st, t).as_deref());
                    }
                    retrieve_url(&mut m, format!("{base}/studies/{study_uid}"));
                    Value::Object(m)
                };
                if !take(&mut out, &make) {
                    break;
                }
                continue;
            }
            let series: Box<dyn Iterator<Item = (&Handle, &Series)>> = match path_series {
                Some(s) => Box::new(st.series.get_key_value(&s).into_iter()),
                None => Box::new(st.series.iter()),
            };
            for (_, se) in series {
                if !keys_at(Level::Series).all(|k| k.matches(series_attr(se, k.tag).as_deref())) {
                    continue;
                }
                let series_uid = uid(&se.attrs, tags::SERIES_INSTANCE_UID);
                let upper = |m: &mut Map<String, Value>, t: u32| match known(t).map(|k| k.0) {
                    Some(Level::Study) => put(m, t, study_attr(st, t).as_deref()),
                    _ => put(m, t, series_attr(se, t).as_deref()),
                };
                if level == Level::Series {
                    let make = || {
                        let mut m = Map::new();
                        for &t in &wanted {
                            upper(&mut m, t);
                        }
                        retrieve_url(
                            &mut m,
                            format!("{base}/studies/{study_uid}/series/{series_uid}"),
                        );
                        Value::Object(m)
                    };
                    if !take(&mut out, &make) {
                        break 'studies;
                    }
                    continue;
                }
                for inst in se.instances.values() {
                    if !keys_at(Level::Instance).all(|k| k.matches(get(&inst.attrs, k.tag))) {
                        continue;
                    }
                    let make = || {
                        let mut m = Map::new();
                        for &t in &wanted {
                            match known(t).map(|k| k.0) {
                                Some(Level::Instance) => put(&mut m, t, get(&inst.attrs, t)),
                                // Instance Availability is the same at every level.
                                _ if t == tags::INSTANCE_AVAILABILITY => {
                                    put(&mut m, t, study_attr(st, t).as_deref())
                                }
                                _ => upper(&mut m, t),
                            }
                        }
                        let sop = uid(&inst.attrs, tags::SOP_INSTANCE_UID);
                        retrieve_url(
                            &mut m,
                            format!(
                                "{base}/studies/{study_uid}/series/{series_uid}/instances/{sop}"
                            ),
                        );
                        Value::Object(m)
                    };
                    if !take(&mut out, &make) {
                        break 'studies;
                    }
                }
            }
        }
        Found { results: out, more }
    }
}

/// Puts an attribute in a result: its value, or only its VR when the entity has none.
fn put(m: &mut Map<String, Value>, tag: u32, a: Option<&Attr>) {
    let v = match a {
        Some(a) => dicom_json::to_json(a),
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

fn answer(
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
    let found = state.catalogue.search(scope, &q, target, &base);
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
fn searched(
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
    answer(&state, &scope, &headers, &p, Target::Studies)
}

/// `GET /dicom-web/series`.
pub async fn all_series(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    answer(&state, &scope, &headers, &p, Target::Series { study: None })
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
    answer(&state, &scope, &headers, &p, t)
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
    answer(&state, &scope, &headers, &p, t)
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
    answer(&state, &scope, &headers, &p, t)
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
    answer(&state, &scope, &headers, &p, t)
}

#[cfg(test)]
mod tests;
