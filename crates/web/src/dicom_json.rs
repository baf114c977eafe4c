//! The attributes the gateway keeps of each instance for QIDO-RS (PS3.18 §10.6), read at
//! ingest from the same parse as the identifiers, and their DICOM JSON form (PS3.18 F.2),
//! which is what the store seals in the index.
//!
//! Values are kept as text (numbers in their decimal form, person names as
//! `Alphabetic=Ideographic=Phonetic`), which is what matching (PS3.4 C.2.2.2) compares;
//! they become JSON numbers, strings or person-name objects only when written.

use std::borrow::Cow;

use radveil_part10::{DataSet, Encoding, Vr};
use radveil_standard::tags;
use serde_json::{json, Map, Value};

/// The level of the information model an attribute belongs to (the patient's attributes
/// are kept with the study, as the Study Root model has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Patient and study attributes.
    Study,
    /// Series attributes.
    Series,
    /// Instance attributes.
    Instance,
}

/// One attribute: its VR and its values as text (empty strings for empty values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The value representation.
    pub vr: Vr,
    /// The values, as text.
    pub values: Box<[Box<str>]>,
}

/// Attributes by tag, in ascending tag order.
pub type Attrs = Vec<(u32, Attr)>;

/// The attributes kept, with their level and VR: those PS3.18 Tables 10.6.1-5, -6 and -7
/// require an origin server to match and return, and a few that sites commonly ask for.
pub const KEPT: &[(u32, Level, Vr)] = &[
    (tags::STUDY_DATE, Level::Study, Vr::DA),
    (tags::STUDY_TIME, Level::Study, Vr::TM),
    (tags::ACCESSION_NUMBER, Level::Study, Vr::SH),
    (tags::REFERRING_PHYSICIAN_NAME, Level::Study, Vr::PN),
    (tags::TIMEZONE_OFFSET_FROM_UTC, Level::Study, Vr::SH),
    (tags::STUDY_DESCRIPTION, Level::Study, Vr::LO),
    (tags::PATIENT_NAME, Level::Study, Vr::PN),
    (tags::PATIENT_ID, Level::Study, Vr::LO),
    (tags::ISSUER_OF_PATIENT_ID, Level::Study, Vr::LO),
    (tags::PATIENT_BIRTH_DATE, Level::Study, Vr::DA),
    (tags::PATIENT_SEX, Level::Study, Vr::CS),
    (tags::STUDY_INSTANCE_UID, Level::Study, Vr::UI),
    (tags::STUDY_ID, Level::Study, Vr::SH),
    (tags::SERIES_DATE, Level::Series, Vr::DA),
    (tags::SERIES_TIME, Level::Series, Vr::TM),
    (tags::MODALITY, Level::Series, Vr::CS),
    (tags::SERIES_DESCRIPTION, Level::Series, Vr::LO),
    (tags::BODY_PART_EXAMINED, Level::Series, Vr::CS),
    (tags::SERIES_INSTANCE_UID, Level::Series, Vr::UI),
    (tags::SERIES_NUMBER, Level::Series, Vr::IS),
    (
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        Level::Series,
        Vr::DA,
    ),
    (
        tags::PERFORMED_PROCEDURE_STEP_START_TIME,
        Level::Series,
        Vr::TM,
    ),
    (tags::TRANSFER_SYNTAX_UID, Level::Instance, Vr::UI),
    (tags::SOP_CLASS_UID, Level::Instance, Vr::UI),
    (tags::SOP_INSTANCE_UID, Level::Instance, Vr::UI),
    (tags::CONTENT_DATE, Level::Instance, Vr::DA),
    (tags::CONTENT_TIME, Level::Instance, Vr::TM),
    (tags::INSTANCE_NUMBER, Level::Instance, Vr::IS),
    (tags::NUMBER_OF_FRAMES, Level::Instance, Vr::IS),
    (tags::ROWS, Level::Instance, Vr::US),
    (tags::COLUMNS, Level::Instance, Vr::US),
    (tags::BITS_ALLOCATED, Level::Instance, Vr::US),
];

/// The level and VR of a kept attribute.
pub fn kept(tag: u32) -> Option<(Level, Vr)> {
    KEPT.iter()
        .chain(crate::ingest::PRIVATE)
        .find(|(t, ..)| *t == tag)
        .map(|(_, l, v)| (*l, *v))
}

/// How the text of a data set is decoded: UTF-8 (ISO_IR 192, and the default repertoire,
/// a subset of it) or Latin-1 (ISO_IR 100). Other repertoires are read as UTF-8, lossily:
/// searching names written in them needs their decoders (not built yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    Utf8,
    Latin1,
}

pub(crate) fn charset(ds: &DataSet<'_>) -> Charset {
    match ds.string(tags::SPECIFIC_CHARACTER_SET).as_deref() {
        Some("ISO_IR 100") => Charset::Latin1,
        _ => Charset::Utf8,
    }
}

pub(crate) fn decode(b: &[u8], cs: Charset) -> Cow<'_, str> {
    match cs {
        Charset::Utf8 => String::from_utf8_lossy(b),
        Charset::Latin1 => Cow::Owned(b.iter().map(|&c| char::from(c)).collect()),
    }
}

/// The values of one element as text, for the VR the dictionary gives it (the VR read is
/// used when it is one of the binary numbers, so that an explicit US stays US).
fn values_of(bytes: &[u8], vr: Vr, cs: Charset, enc: Encoding) -> Option<Box<[Box<str>]>> {
    let big = enc == Encoding::ExplicitBig;
    let numbers = |size: usize, f: &dyn Fn(&[u8]) -> String| -> Box<[Box<str>]> {
        bytes
            .chunks_exact(size)
            .map(|c| f(c).into_boxed_str())
            .collect()
    };
    let arr2 = |c: &[u8]| -> [u8; 2] { [c[0], c[1]] };
    let arr4 = |c: &[u8]| -> [u8; 4] { [c[0], c[1], c[2], c[3]] };
    Some(match vr {
        Vr::US => numbers(2, &|c| {
            let a = arr2(c);
            (if big {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            })
            .to_string()
        }),
        Vr::UL => numbers(4, &|c| {
            let a = arr4(c);
            (if big {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            })
            .to_string()
        }),
        Vr::SS => numbers(2, &|c| {
            let a = arr2(c);
            (if big {
                i16::from_be_bytes(a)
            } else {
                i16::from_le_bytes(a)
            })
            .to_string()
        }),
        Vr::SL => numbers(4, &|c| {
            let a = arr4(c);
            (if big {
                i32::from_be_bytes(a)
            } else {
                i32::from_le_bytes(a)
            })
            .to_string()
        }),
        v if v.is_text() => {
            let text = decode(radveil_part10::trim_text(bytes), cs);
            let parts: Vec<Box<str>> = if v.is_single_valued_text() {
                vec![text.trim_end().into()]
            } else {
                text.split('\\')
                    .map(|p| p.trim_matches([' ', '\0']).into())
                    .collect()
            };
            if parts.iter().all(|p| p.is_empty()) {
                Box::new([])
            } else {
                parts.into_boxed_slice()
            }
        }
        _ => return None,
    })
}

/// Reads the kept attributes of a data set (and the transfer syntax of its file).
pub fn extract(ds: &DataSet<'_>, enc: Encoding, transfer_syntax: &str) -> Attrs {
    let cs = charset(ds);
    let mut out = Attrs::new();
    for &(tag, _, vr) in KEPT {
        if tag == tags::TRANSFER_SYNTAX_UID {
            out.push((
                tag,
                Attr {
                    vr,
                    values: Box::new([transfer_syntax.into()]),
                },
            ));
            continue;
        }
        let Some(e) = ds.get(tag) else { continue };
        // A binary number read with an explicit VR keeps it (US or SS for Rows is US in
        // practice; the dictionary's VR decides for text).
        let vr = if matches!(e.vr, Vr::US | Vr::UL | Vr::SS | Vr::SL) {
            e.vr
        } else {
            vr
        };
        let values = e
            .bytes()
            .and_then(|b| values_of(b, vr, cs, enc))
            .unwrap_or_default();
        out.push((tag, Attr { vr, values }));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

fn vr_code(vr: Vr) -> String {
    String::from_utf8_lossy(&vr.code()).into_owned()
}

/// One attribute in DICOM JSON (PS3.18 F.2.2): numbers for IS, DS and the binary numbers
/// (a value that is not a number is left out), person names as objects, null for empty
/// values of a multi-valued attribute, no `Value` when all are empty.
pub fn to_json(a: &Attr) -> Value {
    let mut m = Map::new();
    m.insert("vr".into(), json!(vr_code(a.vr)));
    if !a.values.is_empty() {
        let vals: Vec<Value> = a
            .values
            .iter()
            .filter_map(|v| {
                if v.is_empty() {
                    return Some(Value::Null);
                }
                match a.vr {
                    Vr::IS | Vr::US | Vr::UL | Vr::SS | Vr::SL => {
                        v.trim().parse::<i64>().ok().map(Value::from)
                    }
                    Vr::DS | Vr::FL | Vr::FD => v
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Value::from),
                    Vr::PN => {
                        let mut pn = Map::new();
                        for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
                            .iter()
                            .zip(v.split('='))
                        {
                            if !group.is_empty() {
                                pn.insert((*name).into(), json!(group));
                            }
                        }
                        Some(Value::Object(pn))
                    }
                    _ => Some(json!(v)),
                }
            })
            .collect();
        if !vals.is_empty() {
            m.insert("Value".into(), Value::Array(vals));
        }
    }
    Value::Object(m)
}

/// The attributes as a DICOM JSON object (keys are tags as 8 hex digits).
pub fn attrs_to_json(attrs: &Attrs) -> Value {
    let mut m = Map::new();
    for (tag, a) in attrs {
        m.insert(format!("{tag:08X}"), to_json(a));
    }
    Value::Object(m)
}

/// Reads back what [`attrs_to_json`] wrote (the sealed meta of an index row). Attributes
/// that are not understood are skipped.
pub fn attrs_from_json(v: &Value) -> Attrs {
    let mut out = Attrs::new();
    let Some(obj) = v.as_object() else {
        return out;
    };
    for (k, a) in obj {
        let Ok(tag) = u32::from_str_radix(k, 16) else {
            continue;
        };
        let Some(vr) = a
            .get("vr")
            .and_then(Value::as_str)
            .and_then(|s| <[u8; 2]>::try_from(s.as_bytes()).ok())
            .and_then(Vr::from_bytes)
        else {
            continue;
        };
        let values: Box<[Box<str>]> = a
            .get("Value")
            .and_then(Value::as_array)
            .map(|vals| {
                vals.iter()
                    .map(|v| -> Box<str> {
                        match v {
                            Value::String(s) => s.as_str().into(),
                            Value::Number(n) => n.to_string().into(),
                            Value::Object(pn) => {
                                let g = |n: &str| pn.get(n).and_then(Value::as_str).unwrap_or("");
                                let mut s = format!(
                                    "{}={}={}",
                                    g("Alphabetic"),
                                    g("Ideographic"),
                                    g("Phonetic")
                                );
                                while s.ends_with('=') {
                                    s.pop();
                                }
                                s.into()
                            }
                            _ => "".into(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((tag, Attr { vr, values }));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(vr: Vr, vals: &[&str]) -> Attr {
        Attr {
            vr,
            values: vals.iter().map(|v| Box::<str>::from(*v)).collect(),
        }
    }

    #[test]
    fn json_round_trip_keeps_every_kind_of_value() {
        let attrs: Attrs = vec![
            (tags::PATIENT_NAME, attr(Vr::PN, &["DOE^JANE=ド^ジェーン"])),
            (tags::ROWS, attr(Vr::US, &["512"])),
            (tags::SERIES_NUMBER, attr(Vr::IS, &["3"])),
            (tags::MODALITY, attr(Vr::CS, &["CT"])),
            (tags::STUDY_DATE, attr(Vr::DA, &[])),
        ];
        let j = attrs_to_json(&attrs);
        assert_eq!(j["00100010"]["Value"][0]["Alphabetic"], "DOE^JANE");
        assert_eq!(j["00100010"]["Value"][0]["Ideographic"], "ド^ジェーン");
        assert_eq!(j["00280010"]["Value"][0], 512);
        assert_eq!(j["00200011"]["Value"][0], 3);
        assert!(j["00080020"].get("Value").is_none());
        let mut sorted = attrs.clone();
        sorted.sort_by_key(|(t, _)| *t);
        assert_eq!(attrs_from_json(&j), sorted);
    }

    #[test]
    fn a_number_that_is_not_one_is_left_out() {
        let j = to_json(&attr(Vr::IS, &["12", "x"]));
        assert_eq!(j["Value"], json!([12]));
    }

    #[test]
    fn latin1_names_are_decoded() {
        let v = values_of(
            b"M\xfcller^Hans ",
            Vr::PN,
            Charset::Latin1,
            Encoding::ExplicitLittle,
        )
        .unwrap();
        assert_eq!(&*v[0], "Müller^Hans");
    }
}
