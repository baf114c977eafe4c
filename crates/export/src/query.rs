//! Which studies an export takes: `KEY=VALUE` keys over the study-level attributes the
//! store's sealed index rows hold, matched as PS3.4 C.2.2.2 matches them.
//!
//! Supported keys (by keyword or as 8 hex digits): StudyDate, StudyTime, AccessionNumber,
//! StudyDescription, StudyID, StudyInstanceUID, ReferringPhysicianName, PatientName,
//! PatientID, IssuerOfPatientID, PatientBirthDate, PatientSex, and two derived from the
//! study's series: ModalitiesInStudy (the Modality of any series) and BodyPartExamined (of
//! any series). Matching:
//! - an empty value matches everything (universal matching); `""` matches an empty or
//!   absent attribute;
//! - DA and TM: a single value or a range `A-B`, `A-`, `-B` (C.2.2.2.5);
//! - StudyInstanceUID: a list of UIDs separated by `\` or `,` (C.2.2.2.2);
//! - other text: `*` and `?` wild cards (C.2.2.2.4), person names without regard to case;
//!   several values separated by `\` match a study having any of them (C.2.2.2.8), so
//!   `PatientID=A\B\C` lists patients and `ModalitiesInStudy=CT\MR` takes either.
//!
//! A key that is not supported is refused, never ignored: an export that dropped a filter
//! would take more patients' images than asked for.

use std::collections::BTreeMap;

use radveil_standard::tags;

/// Longest value of one key.
const MAX_KEY_LEN: usize = 4096;

/// Why a query is refused. Names keys by keyword, never repeats a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--query: {0}")]
pub struct BadQuery(String);

fn bad(why: impl Into<String>) -> BadQuery {
    BadQuery(why.into())
}

/// How a key's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Dates (DA).
    Date,
    /// Times (TM).
    Time,
    /// UIDs (UI).
    Uid,
    /// Text compared exactly, wild cards allowed.
    Text,
    /// Person names (PN): without regard to case, each component group too.
    Name,
}

/// The keys an export query accepts: tag, keyword and how it is compared.
const KEYS: &[(u32, &str, Kind)] = &[
    (tags::STUDY_DATE, "StudyDate", Kind::Date),
    (tags::STUDY_TIME, "StudyTime", Kind::Time),
    (tags::ACCESSION_NUMBER, "AccessionNumber", Kind::Text),
    (tags::STUDY_DESCRIPTION, "StudyDescription", Kind::Text),
    (tags::STUDY_ID, "StudyID", Kind::Text),
    (tags::STUDY_INSTANCE_UID, "StudyInstanceUID", Kind::Uid),
    (
        tags::REFERRING_PHYSICIAN_NAME,
        "ReferringPhysicianName",
        Kind::Name,
    ),
    (tags::PATIENT_NAME, "PatientName", Kind::Name),
    (tags::PATIENT_ID, "PatientID", Kind::Text),
    (tags::ISSUER_OF_PATIENT_ID, "IssuerOfPatientID", Kind::Text),
    (tags::PATIENT_BIRTH_DATE, "PatientBirthDate", Kind::Date),
    (tags::PATIENT_SEX, "PatientSex", Kind::Text),
    (tags::MODALITIES_IN_STUDY, "ModalitiesInStudy", Kind::Text),
    (tags::BODY_PART_EXAMINED, "BodyPartExamined", Kind::Text),
];

/// The keyword of a supported key.
fn keyword(tag: u32) -> String {
    KEYS.iter().find(|(t, ..)| *t == tag).map_or_else(
        || radveil_part10::tag_name(tag),
        |(_, k, _)| (*k).to_string(),
    )
}

/// One value of a key: a literal or a pattern with wild cards.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Wild(Vec<char>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Universal,
    Empty,
    /// Any of these values (a list of one for a single value).
    Any(Vec<Pattern>),
    /// Inclusive bounds, normalised (`YYYYMMDD`, `HHMMSSFFFFFF`).
    Range(Option<String>, Option<String>),
    Uids(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    tag: u32,
    kind: Kind,
    rule: Rule,
}

/// A parsed export query: every key must match (an empty query takes every study).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    keys: Vec<Key>,
}

/// The attributes of one study the query is matched against: its study-level attributes,
/// and ModalitiesInStudy and BodyPartExamined gathered from its series. Values as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyAttrs {
    values: BTreeMap<u32, Vec<String>>,
}

impl StudyAttrs {
    /// Adds the values of `tag` (a derived attribute gathers them without repeats).
    pub fn add(&mut self, tag: u32, values: impl IntoIterator<Item = String>) {
        let slot = self.values.entry(tag).or_default();
        for v in values {
            if !slot.contains(&v) {
                slot.push(v);
            }
        }
    }

    /// Sets the values of `tag` (replacing what was there).
    pub fn set(&mut self, tag: u32, values: Vec<String>) {
        self.values.insert(tag, values);
    }

    /// The values of `tag` (empty when absent).
    pub fn get(&self, tag: u32) -> &[String] {
        self.values.get(&tag).map_or(&[], Vec::as_slice)
    }

    /// The first value of `tag`, if any and not empty.
    pub fn first(&self, tag: u32) -> Option<&str> {
        self.get(tag)
            .first()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether `tag` is present at all.
    fn has(&self, tag: u32) -> bool {
        self.values.contains_key(&tag)
    }
}

/// A DA value as compared: `YYYYMMDD` (the old `YYYY.MM.DD` read too).
fn norm_date(v: &str) -> Option<String> {
    let d: String = v.chars().filter(|c| *c != '.').collect();
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// A TM value padded to `HHMMSSFFFFFF` with `pad` (`0` for the start of the period it
/// names, `9` for its end); the old `HH:MM:SS` form read too.
fn norm_time(v: &str, pad: char) -> Option<String> {
    let t: String = v.chars().filter(|c| *c != ':').collect();
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 6
        || whole.len() % 2 != 0
        || frac.len() > 6
        || !digits(whole)
        || !digits(frac)
        || (!frac.is_empty() && whole.len() != 6)
    {
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

fn bound(kind: Kind, v: &str, end: bool) -> Option<String> {
    match kind {
        Kind::Date => norm_date(v),
        Kind::Time => norm_time(v, if end { '9' } else { '0' }),
        _ => None,
    }
}

/// Wild card matching: `*` any run of characters (none included), `?` exactly one; linear
/// apart from backtracking to the last `*`.
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

/// A person name whole, then each of its component groups.
fn name_groups(v: &str) -> impl Iterator<Item = &str> {
    std::iter::once(v).chain(
        v.split('=')
            .filter(move |g| !g.is_empty() && g.len() != v.len()),
    )
}

impl Key {
    fn parse(tag: u32, kind: Kind, value: &str) -> Result<Key, BadQuery> {
        let name = keyword(tag);
        if value.len() > MAX_KEY_LEN {
            return Err(bad(format!("the value for {name} is too long")));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(bad(format!(
                "the value for {name} holds a control character"
            )));
        }
        let rule = if value.is_empty() {
            Rule::Universal
        } else if value == "\"\"" {
            Rule::Empty
        } else {
            match kind {
                Kind::Uid => {
                    let uids: Vec<String> = value
                        .split([',', '\\'])
                        .map(|u| u.trim().to_string())
                        .collect();
                    if uids.iter().any(|u| {
                        u.is_empty() || !u.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    }) {
                        return Err(bad(format!("the value for {name} is not a list of UIDs")));
                    }
                    Rule::Uids(uids)
                }
                Kind::Date | Kind::Time => {
                    let invalid = || {
                        bad(format!(
                            "the value for {name} is not a valid date or time, or range of them"
                        ))
                    };
                    match value.split_once('-') {
                        Some(("", "")) => return Err(invalid()),
                        Some((lo, hi)) => {
                            let side = |v: &str, end| -> Result<Option<String>, BadQuery> {
                                if v.is_empty() {
                                    Ok(None)
                                } else {
                                    bound(kind, v, end).map(Some).ok_or_else(invalid)
                                }
                            };
                            Rule::Range(side(lo, false)?, side(hi, true)?)
                        }
                        None => Rule::Range(
                            Some(bound(kind, value, false).ok_or_else(invalid)?),
                            Some(bound(kind, value, true).ok_or_else(invalid)?),
                        ),
                    }
                }
                Kind::Text | Kind::Name => {
                    let one = |v: &str| {
                        let v = if kind == Kind::Name {
                            v.to_lowercase()
                        } else {
                            v.to_string()
                        };
                        if v.contains(['*', '?']) {
                            Pattern::Wild(v.chars().collect())
                        } else {
                            Pattern::Exact(v)
                        }
                    };
                    let values: Vec<Pattern> = value.split('\\').map(one).collect();
                    Rule::Any(values)
                }
            }
        };
        Ok(Key { tag, kind, rule })
    }

    fn matches(&self, study: &StudyAttrs) -> bool {
        let values = study.get(self.tag);
        match &self.rule {
            Rule::Universal => true,
            Rule::Empty => !study.has(self.tag) || values.iter().all(|v| v.is_empty()),
            rule => values.iter().any(|v| self.one(rule, v)),
        }
    }

    fn one(&self, rule: &Rule, v: &str) -> bool {
        match rule {
            Rule::Universal => true,
            Rule::Empty => v.is_empty(),
            Rule::Uids(list) => list.iter().any(|u| u == v),
            Rule::Range(lo, hi) => {
                let n = match self.kind {
                    Kind::Date => norm_date(v),
                    Kind::Time => norm_time(v, '0'),
                    _ => None,
                };
                n.is_some_and(|n| {
                    lo.as_ref().is_none_or(|lo| n >= *lo) && hi.as_ref().is_none_or(|hi| n <= *hi)
                })
            }
            Rule::Any(patterns) => patterns.iter().any(|p| match (self.kind, p) {
                (Kind::Name, Pattern::Exact(k)) => name_groups(v).any(|g| g.to_lowercase() == *k),
                (Kind::Name, Pattern::Wild(w)) => name_groups(v)
                    .any(|g| wildcard(w, &g.to_lowercase().chars().collect::<Vec<_>>())),
                (_, Pattern::Exact(k)) => k == v,
                (_, Pattern::Wild(w)) => wildcard(w, &v.chars().collect::<Vec<_>>()),
            }),
        }
    }
}

impl Query {
    /// Parses `KEY=VALUE` keys (keyword or 8 hex digits; each key at most once).
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<Query, BadQuery> {
        let mut q = Query::default();
        for text in keys {
            let text = text.as_ref();
            let Some((name, value)) = text.split_once('=') else {
                return Err(bad("a key is KEY=VALUE (like StudyDate=20240101-20241231)"));
            };
            let tag = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                u32::from_str_radix(name, 16).map_err(|_| bad("a tag is 8 hex digits"))?
            } else {
                KEYS.iter()
                    .find(|(_, k, _)| *k == name)
                    .map(|(t, ..)| *t)
                    .ok_or_else(|| bad(unsupported()))?
            };
            let Some(&(_, _, kind)) = KEYS.iter().find(|(t, ..)| *t == tag) else {
                return Err(bad(unsupported()));
            };
            if q.keys.iter().any(|k| k.tag == tag) {
                return Err(bad(format!("{} is given more than once", keyword(tag))));
            }
            q.keys.push(Key::parse(tag, kind, value)?);
        }
        Ok(q)
    }

    /// Whether the study matches every key.
    pub fn matches(&self, study: &StudyAttrs) -> bool {
        self.keys.iter().all(|k| k.matches(study))
    }

    /// Whether the query has no key (it takes every study).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The words for an unsupported key, listing those supported.
fn unsupported() -> String {
    let names: Vec<&str> = KEYS.iter().map(|(_, k, _)| *k).collect();
    format!(
        "a key is not supported for exports (supported: {})",
        names.join(", ")
    )
}

/// The study-level attributes of a sealed index row's DICOM JSON (the store's `meta`), and
/// the Modality and Body Part Examined of its series: what [`StudyAttrs`] gathers per study.
/// Values that are not text, numbers or person names are skipped.
pub fn attrs_of_meta(meta: &serde_json::Value) -> Vec<(u32, Vec<String>)> {
    let mut out = Vec::new();
    let Some(obj) = meta.as_object() else {
        return out;
    };
    for (k, a) in obj {
        let Ok(tag) = u32::from_str_radix(k, 16) else {
            continue;
        };
        if !(KEYS.iter().any(|(t, ..)| *t == tag) || tag == tags::MODALITY) {
            continue;
        }
        let values = a
            .get("Value")
            .and_then(serde_json::Value::as_array)
            .map(|vals| vals.iter().map(json_text).collect())
            .unwrap_or_default();
        out.push((tag, values));
    }
    out
}

/// A DICOM JSON value as text (person names as `Alphabetic=Ideographic=Phonetic`).
fn json_text(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(pn) => {
            let g = |k: &str| pn.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut s = [g("Alphabetic"), g("Ideographic"), g("Phonetic")].join("=");
            while s.ends_with('=') {
                s.pop();
            }
            s
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(pairs: &[(u32, &[&str])]) -> StudyAttrs {
        let mut s = StudyAttrs::default();
        for (t, vs) in pairs {
            s.add(*t, vs.iter().map(|v| v.to_string()));
        }
        s
    }

    fn q(keys: &[&str]) -> Query {
        Query::parse(keys).unwrap()
    }

    #[test]
    fn dates_match_single_values_and_ranges() {
        let s = study(&[(tags::STUDY_DATE, &["20240315"])]);
        assert!(q(&["StudyDate=20240315"]).matches(&s));
        assert!(!q(&["StudyDate=20240316"]).matches(&s));
        assert!(q(&["StudyDate=20240101-20241231"]).matches(&s));
        assert!(q(&["StudyDate=20240315-20240315"]).matches(&s));
        assert!(!q(&["StudyDate=20240316-"]).matches(&s));
        assert!(q(&["StudyDate=-20240315"]).matches(&s));
        assert!(!q(&["StudyDate=-20240314"]).matches(&s));
        // No date: no range matches it.
        assert!(!q(&["StudyDate=19000101-"]).matches(&StudyAttrs::default()));
        for badv in [
            "StudyDate=2024",
            "StudyDate=-",
            "StudyDate=20240101-x",
            "StudyDate=abc",
        ] {
            assert!(Query::parse(&[badv]).is_err(), "{badv}");
        }
    }

    #[test]
    fn times_are_padded_to_the_period_they_name() {
        let s = study(&[(tags::STUDY_TIME, &["143015.25"])]);
        assert!(q(&["StudyTime=14"]).matches(&s));
        assert!(q(&["StudyTime=1430-1431"]).matches(&s));
        assert!(!q(&["StudyTime=1431-"]).matches(&s));
        assert!(q(&["StudyTime=14:30-"]).matches(&s));
    }

    #[test]
    fn wildcards_lists_and_names() {
        let s = study(&[
            (tags::STUDY_DESCRIPTION, &["CT HEAD W/O CONTRAST"]),
            (tags::PATIENT_ID, &["PAT-2"]),
            (tags::PATIENT_NAME, &["Doe^Jane=ドウ^ジェーン"]),
            (tags::MODALITIES_IN_STUDY, &["CT", "SR"]),
        ]);
        assert!(q(&["StudyDescription=*HEAD*"]).matches(&s));
        assert!(q(&["StudyDescription=CT HEAD?W/O*"]).matches(&s));
        // Case matters for text, not for names.
        assert!(!q(&["StudyDescription=*head*"]).matches(&s));
        assert!(q(&["PatientName=DOE^JANE"]).matches(&s));
        assert!(q(&["PatientName=doe*"]).matches(&s));
        assert!(q(&["PatientName=ドウ^ジェーン"]).matches(&s));
        assert!(!q(&["PatientName=Doe"]).matches(&s));
        assert!(q(&["PatientID=PAT-1\\PAT-2\\PAT-3"]).matches(&s));
        assert!(!q(&["PatientID=PAT-1\\PAT-3"]).matches(&s));
        // A single value matches exactly: no prefix matching.
        assert!(!q(&["PatientID=PAT"]).matches(&s));
        assert!(q(&["ModalitiesInStudy=MR\\CT"]).matches(&s));
        assert!(q(&["ModalitiesInStudy=SR"]).matches(&s));
        assert!(!q(&["ModalitiesInStudy=MR"]).matches(&s));
        // Every key must match.
        assert!(!q(&["ModalitiesInStudy=CT", "PatientID=PAT-1"]).matches(&s));
        assert!(q(&["ModalitiesInStudy=CT", "PatientID=PAT-2"]).matches(&s));
    }

    #[test]
    fn universal_empty_and_uid_lists() {
        let s = study(&[
            (tags::STUDY_INSTANCE_UID, &["1.2.3"]),
            (tags::ACCESSION_NUMBER, &[]),
        ]);
        assert!(q(&["AccessionNumber="]).matches(&s));
        assert!(q(&["AccessionNumber=\"\""]).matches(&s));
        assert!(q(&["StudyID=\"\""]).matches(&s));
        assert!(q(&["StudyInstanceUID=1.2.4,1.2.3"]).matches(&s));
        assert!(q(&["StudyInstanceUID=1.2.4\\1.2.3"]).matches(&s));
        assert!(!q(&["StudyInstanceUID=1.2.30"]).matches(&s));
        assert!(Query::parse(&["StudyInstanceUID=1.2.x"]).is_err());
        assert!(q(&[] as &[&str]).matches(&s));
    }

    #[test]
    fn unsupported_repeated_or_malformed_keys_are_refused_without_their_values() {
        for keys in [
            &["SeriesDescription=x"][..],
            &["00080060=CT"][..],
            &["NoSuchKeyword=1"][..],
            &["PatientID"][..],
            &["PatientID=A", "00100020=B"][..],
            &["PatientID=SECRET\u{7}"][..],
        ] {
            let e = Query::parse(keys).unwrap_err().to_string();
            assert!(!e.contains("SECRET") && !e.contains("=B"), "{e}");
        }
        // By tag.
        assert!(q(&["00080020=20240101"]).matches(&study(&[(tags::STUDY_DATE, &["20240101"])])));
    }

    #[test]
    fn meta_json_gives_text_values() {
        let meta = serde_json::json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00080020": {"vr": "DA", "Value": ["20240102"]},
            "00080060": {"vr": "CS", "Value": ["MR"]},
            "00200011": {"vr": "IS", "Value": [3]},
            "00081030": {"vr": "LO"},
        });
        let mut got = attrs_of_meta(&meta);
        got.sort();
        assert_eq!(
            got,
            vec![
                (tags::STUDY_DATE, vec!["20240102".to_string()]),
                (tags::MODALITY, vec!["MR".to_string()]),
                (tags::STUDY_DESCRIPTION, vec![]),
                (tags::PATIENT_NAME, vec!["Doe^Jane".to_string()]),
            ]
        );
    }
}
