//! k-anonymity of the quasi-identifiers left in a set: each patient's age, sex, size,
//! weight, ethnic group, study month, institution and equipment, grouped into classes of
//! patients who share all of them; k is the size of the smallest class (as ARX reports it).
//! A patient is told from another by Patient ID (else Patient's Name), whatever those now
//! hold; values are generalised as such reports usually are: age in years, size to 5 cm,
//! weight to 5 kg, the study date to its month.

use std::collections::BTreeMap;

use radveil_part10::DataSet;
use radveil_standard::tags;

/// The quasi-identifiers, in report order.
pub const NAMES: [&str; 8] = [
    "age",
    "sex",
    "size",
    "weight",
    "ethnic group",
    "study month",
    "institution",
    "equipment",
];

/// One file's patient and quasi-identifiers (absent, dummy or empty: `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Who the file is of, as the set tells patients apart (kept in memory only).
    pub patient: Option<String>,
    /// The values, in [`NAMES`] order.
    pub values: [Option<String>; 8],
}

fn text(ds: &DataSet<'_>, tag: u32) -> Option<String> {
    let v = ds.string(tag)?;
    let v = v.trim();
    let dummy = v.is_empty()
        || v.eq_ignore_ascii_case("ANONYMIZED")
        || v.eq_ignore_ascii_case("ANONYMOUS")
        || v.eq_ignore_ascii_case("REMOVED")
        || v == "0"
        || v == "000Y"
        || v.starts_with("19000101");
    (!dummy).then(|| v.to_string())
}

fn number(ds: &DataSet<'_>, tag: u32) -> Option<f64> {
    text(ds, tag)?
        .split('\\')
        .next()?
        .trim()
        .parse::<f64>()
        .ok()
}

/// Age in years: Patient's Age (AS), else the years between birth date and study date.
fn age(ds: &DataSet<'_>) -> Option<String> {
    if let Some(a) = text(ds, tags::PATIENT_AGE) {
        let (n, unit) = a.split_at(a.len().saturating_sub(1));
        let n: u32 = n.parse().ok()?;
        let years = match unit {
            "Y" => n,
            "M" => n / 12,
            "W" => n / 52,
            "D" => n / 365,
            _ => return None,
        };
        return Some(years.to_string());
    }
    let birth = text(ds, tags::PATIENT_BIRTH_DATE)?;
    let study = text(ds, tags::STUDY_DATE)?;
    let (b, s) = (birth.get(..8)?, study.get(..8)?);
    let by: i32 = b[..4].parse().ok()?;
    let sy: i32 = s[..4].parse().ok()?;
    let years = sy - by - i32::from(s[4..] < b[4..]);
    (years >= 0).then(|| years.to_string())
}

impl Record {
    /// The record of one file's data set.
    pub fn of(ds: &DataSet<'_>) -> Record {
        let patient = text(ds, tags::PATIENT_ID).or_else(|| text(ds, tags::PATIENT_NAME));
        let equipment = match (
            text(ds, tags::MANUFACTURER),
            text(ds, tags::MANUFACTURER_MODEL_NAME),
        ) {
            (None, None) => None,
            (a, b) => Some(
                format!("{} {}", a.unwrap_or_default(), b.unwrap_or_default())
                    .trim()
                    .to_string(),
            ),
        };
        Record {
            patient,
            values: [
                age(ds),
                text(ds, tags::PATIENT_SEX),
                number(ds, tags::PATIENT_SIZE)
                    .map(|m| format!("{:.2} m", (m * 20.0).round() / 20.0)),
                number(ds, tags::PATIENT_WEIGHT)
                    .map(|kg| format!("{} kg", ((kg / 5.0).round() * 5.0) as i64)),
                text(ds, tags::ETHNIC_GROUP),
                text(ds, tags::STUDY_DATE)
                    .filter(|d| d.len() >= 6)
                    .map(|d| format!("{}-{}", &d[..4], &d[4..6])),
                text(ds, tags::INSTITUTION_NAME),
                equipment,
            ],
        }
    }
}

/// The k-anonymity of a set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KAnonymity {
    /// Patients told apart.
    pub patients: usize,
    /// Quasi-identifiers present in any record.
    pub quasi_identifiers: Vec<&'static str>,
    /// Size of the smallest class (0 when there are no patients).
    pub k: usize,
    /// The smallest class's values (name, value); values absent in it are left out.
    pub smallest_class: Vec<(&'static str, String)>,
    /// Number of classes.
    pub classes: usize,
}

/// Computes k over the patients of `records` (each patient's first record counts).
pub fn k_anonymity(records: &[Record]) -> KAnonymity {
    let mut patients: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in records {
        if let Some(p) = r.patient.as_deref() {
            patients.entry(p).or_insert(r);
        }
    }
    let present: Vec<usize> = (0..NAMES.len())
        .filter(|&i| patients.values().any(|r| r.values[i].is_some()))
        .collect();
    let mut classes: BTreeMap<Vec<Option<&str>>, usize> = BTreeMap::new();
    for r in patients.values() {
        let key: Vec<Option<&str>> = present.iter().map(|&i| r.values[i].as_deref()).collect();
        *classes.entry(key).or_default() += 1;
    }
    // Of the smallest classes, the one that says most.
    let smallest = classes
        .iter()
        .min_by_key(|(key, n)| (**n, std::cmp::Reverse(key.iter().flatten().count())));
    KAnonymity {
        patients: patients.len(),
        quasi_identifiers: present.iter().map(|&i| NAMES[i]).collect(),
        k: smallest.map_or(0, |(_, n)| *n),
        smallest_class: smallest
            .map(|(key, _)| {
                present
                    .iter()
                    .zip(key)
                    .filter_map(|(&i, v)| v.map(|v| (NAMES[i], v.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        classes: classes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: &str, age: &str, sex: &str) -> Record {
        let mut r = Record {
            patient: Some(p.into()),
            ..Record::default()
        };
        r.values[0] = Some(age.into());
        r.values[1] = Some(sex.into());
        r
    }

    #[test]
    fn smallest_class_is_k() {
        let rs = vec![
            rec("a", "40", "F"),
            rec("a", "40", "F"), // same patient, another file
            rec("b", "40", "F"),
            rec("c", "40", "F"),
            rec("d", "71", "M"),
            rec("e", "40", "M"),
            rec("f", "40", "M"),
        ];
        let k = k_anonymity(&rs);
        assert_eq!(k.patients, 6);
        assert_eq!(k.k, 1);
        assert_eq!(
            k.smallest_class,
            vec![("age", "71".to_string()), ("sex", "M".to_string())]
        );
        assert_eq!(k.quasi_identifiers, vec!["age", "sex"]);
        assert_eq!(k.classes, 3);
    }

    #[test]
    fn empty_set() {
        assert_eq!(k_anonymity(&[]).k, 0);
    }
}
