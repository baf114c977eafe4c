//! Whether a value is valid for its VR (PS3.5 §6.2) and, where the standard enumerates them,
//! one of the allowed values: a kept attribute must not carry free text where the standard
//! allows only a code, a number, a date or a UID.
//!
//! Free-text VRs (LO, SH, ST, LT, UT, UC, PN) are not checked here: kept text is cleaned of
//! identifying values instead. OB, UN and sequences have no form to check.

use radveil_standard::{tags, Vr};

use crate::dates;

/// Why a value is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A character the VR does not allow, or a value that does not have the VR's form.
    Form,
    /// A value longer than the VR allows.
    Length,
    /// A binary value whose length is not a multiple of the VR's value size.
    BinaryLength,
    /// A code that is not one of the values the standard enumerates for the attribute.
    NotAnAllowedValue,
}

impl Problem {
    /// A short description for messages (which never quote the value).
    pub fn describe(self) -> &'static str {
        match self {
            Problem::Form => "has characters or a form its VR does not allow",
            Problem::Length => "is longer than its VR allows",
            Problem::BinaryLength => "has a length that is not a whole number of values",
            Problem::NotAnAllowedValue => "is not one of the values the standard allows",
        }
    }
}

/// Whether `uid` is a valid UID (PS3.5 §9.1): at most 64 characters, components of digits
/// separated by dots, no empty component, no leading zero in a component other than `0`.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

/// The values PS3.3 enumerates (or defines, for Specific Character Set) for attributes a
/// de-identifier keeps and that decide how the object is read or treated.
pub fn allowed_values(tag: u32) -> Option<&'static [&'static str]> {
    Some(match tag {
        tags::BURNED_IN_ANNOTATION
        | tags::RECOGNIZABLE_VISUAL_FEATURES
        | tags::PATIENT_IDENTITY_REMOVED => &["YES", "NO"],
        tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED => &["UNMODIFIED", "MODIFIED", "REMOVED"],
        tags::PATIENT_SEX => &["M", "F", "O"],
        tags::LOSSY_IMAGE_COMPRESSION => &["00", "01"],
        // Photometric Interpretation (C.7.6.3.1.2).
        tags::PHOTOMETRIC_INTERPRETATION => &[
            "MONOCHROME1",
            "MONOCHROME2",
            "PALETTE COLOR",
            "RGB",
            "HSV",
            "ARGB",
            "CMYK",
            "YBR_FULL",
            "YBR_FULL_422",
            "YBR_PARTIAL_422",
            "YBR_PARTIAL_420",
            "YBR_ICT",
            "YBR_RCT",
            "XYB",
        ],
        // Specific Character Set (C.12.1.1.2): single-byte and multi-byte, without and
        // with code extensions; an empty first value means the default repertoire.
        tags::SPECIFIC_CHARACTER_SET => &[
            "",
            "ISO_IR 6",
            "ISO_IR 100",
            "ISO_IR 101",
            "ISO_IR 109",
            "ISO_IR 110",
            "ISO_IR 144",
            "ISO_IR 127",
            "ISO_IR 126",
            "ISO_IR 138",
            "ISO_IR 148",
            "ISO_IR 203",
            "ISO_IR 166",
            "ISO_IR 13",
            "ISO_IR 192",
            "GB18030",
            "GBK",
            "ISO 2022 IR 6",
            "ISO 2022 IR 100",
            "ISO 2022 IR 101",
            "ISO 2022 IR 109",
            "ISO 2022 IR 110",
            "ISO 2022 IR 144",
            "ISO 2022 IR 127",
            "ISO 2022 IR 126",
            "ISO 2022 IR 138",
            "ISO 2022 IR 148",
            "ISO 2022 IR 203",
            "ISO 2022 IR 166",
            "ISO 2022 IR 13",
            "ISO 2022 IR 87",
            "ISO 2022 IR 159",
            "ISO 2022 IR 149",
            "ISO 2022 IR 58",
        ],
        _ => return None,
    })
}

/// Checks an encoded value against its VR and, for the attributes of [`allowed_values`],
/// against the values allowed. UI values are checked by [`is_valid_uid`] per value by the
/// caller, which may replace them; here they only fail for their length.
pub fn check(tag: u32, vr: Vr, bytes: &[u8]) -> Result<(), Problem> {
    if let Some(unit) = binary_unit(vr) {
        return if bytes.len().checked_rem(unit) == Some(0) {
            Ok(())
        } else {
            Err(Problem::BinaryLength)
        };
    }
    if !matches!(
        vr,
        Vr::AE | Vr::AS | Vr::CS | Vr::DA | Vr::DS | Vr::DT | Vr::IS | Vr::TM | Vr::UI
    ) {
        return Ok(());
    }
    let text = trim_padding(bytes);
    for value in text.split(|&b| b == b'\\') {
        check_one(vr, value)?;
    }
    if let Some(allowed) = allowed_values(tag) {
        for (i, value) in text.split(|&b| b == b'\\').enumerate() {
            let v = trim_spaces(value);
            // An empty value is "no value" (allowed in Type 2 and 3 attributes, and as the
            // first value of Specific Character Set); any other must be listed.
            if v.is_empty() && (i == 0 || tag == tags::SPECIFIC_CHARACTER_SET) {
                continue;
            }
            if !allowed.iter().any(|a| a.as_bytes() == v) {
                return Err(Problem::NotAnAllowedValue);
            }
        }
    }
    Ok(())
}

/// Byte size of one value of a binary VR whose length must be a multiple of it.
fn binary_unit(vr: Vr) -> Option<usize> {
    match vr {
        Vr::US | Vr::SS | Vr::OW => Some(2),
        Vr::UL | Vr::SL | Vr::FL | Vr::AT | Vr::OF | Vr::OL => Some(4),
        Vr::FD | Vr::SV | Vr::UV | Vr::OD | Vr::OV => Some(8),
        _ => None,
    }
}

/// Trailing padding removed: spaces, and NULs (the padding of UI, and what some writers pad
/// other text with).
fn trim_padding(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |p| p.saturating_add(1));
    b.get(..end).unwrap_or_default()
}

/// Leading and trailing spaces removed (insignificant in the VRs checked here).
fn trim_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ')
        .map_or(start, |p| p.saturating_add(1));
    b.get(start..end).unwrap_or_default()
}

fn check_one(vr: Vr, raw: &[u8]) -> Result<(), Problem> {
    if vr.max_value_len().is_some_and(|max| raw.len() > max) {
        return Err(Problem::Length);
    }
    let v = trim_spaces(raw);
    if v.is_empty() {
        return Ok(());
    }
    let ok = match vr {
        Vr::AE => v.iter().all(|&c| (0x20..0x7F).contains(&c)),
        Vr::AS => {
            v.len() == 4
                && v.get(..3).is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                && matches!(v.get(3), Some(b'D' | b'W' | b'M' | b'Y'))
        }
        Vr::CS => v
            .iter()
            .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ' || c == b'_'),
        Vr::DA => is_date(v),
        Vr::DS => is_decimal(v),
        Vr::DT => is_datetime(v),
        Vr::IS => is_integer(v),
        Vr::TM => is_time(v),
        Vr::UI => std::str::from_utf8(v).is_ok_and(is_valid_uid),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::Form)
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `YYYYMMDD`, a real calendar date.
pub fn is_date(v: &[u8]) -> bool {
    v.len() == 8 && date_parts(v).is_some()
}

fn date_parts(v: &[u8]) -> Option<(i64, i64, i64)> {
    let y = digits(v.get(..4)?)?;
    let m = digits(v.get(4..6)?)?;
    let d = digits(v.get(6..8)?)?;
    dates::is_valid_date(y, m, d).then_some((y, m, d))
}

/// `HH[MM[SS[.F{1,6}]]]`.
pub fn is_time(v: &[u8]) -> bool {
    let (hms, frac) = match v.iter().position(|&c| c == b'.') {
        Some(p) => (v.get(..p).unwrap_or_default(), v.get(p.saturating_add(1)..)),
        None => (v, None),
    };
    let fields_ok = match hms.len() {
        2 | 4 | 6 => hms
            .chunks(2)
            .zip([23, 59, 60])
            .all(|(f, max)| digits(f).is_some_and(|n| n <= max)),
        _ => false,
    };
    let frac_ok = match frac {
        None => true,
        Some(f) => hms.len() == 6 && (1..=6).contains(&f.len()) && digits(f).is_some(),
    };
    fields_ok && frac_ok
}

/// `YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`.
pub fn is_datetime(v: &[u8]) -> bool {
    let (main, offset) = match v.iter().position(|&c| c == b'+' || c == b'-') {
        Some(p) => (v.get(..p).unwrap_or_default(), v.get(p..)),
        None => (v, None),
    };
    if let Some(o) = offset {
        let ok = o.len() == 5
            && digits(o.get(1..3).unwrap_or_default()).is_some_and(|h| h <= 14)
            && digits(o.get(3..5).unwrap_or_default()).is_some_and(|m| m <= 59);
        if !ok {
            return false;
        }
    }
    let date_len = main.len().min(8);
    let (date, time) = main.split_at(date_len);
    let date_ok = match date.len() {
        4 => digits(date).is_some(),
        6 => {
            digits(date).is_some()
                && digits(date.get(4..6).unwrap_or_default()).is_some_and(|m| (1..=12).contains(&m))
        }
        8 => date_parts(date).is_some(),
        _ => false,
    };
    date_ok && (time.is_empty() || (date.len() == 8 && is_time(time)))
}

/// An integer string in the range of a 32-bit signed integer.
pub fn is_integer(v: &[u8]) -> bool {
    let body = match v.first() {
        Some(b'+' | b'-') => v.get(1..).unwrap_or_default(),
        _ => v,
    };
    !body.is_empty()
        && body.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim_start_matches('+').parse::<i64>().ok())
            .is_some_and(|n| i32::try_from(n).is_ok())
}

/// A decimal string: an optional sign, digits with an optional point, an optional exponent.
pub fn is_decimal(v: &[u8]) -> bool {
    let mut i = 0usize;
    let at = |i: usize| v.get(i).copied();
    if matches!(at(i), Some(b'+' | b'-')) {
        i = i.saturating_add(1);
    }
    let mut mantissa_digits = 0usize;
    while at(i).is_some_and(|c| c.is_ascii_digit()) {
        i = i.saturating_add(1);
        mantissa_digits = mantissa_digits.saturating_add(1);
    }
    if at(i) == Some(b'.') {
        i = i.saturating_add(1);
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i = i.saturating_add(1);
            mantissa_digits = mantissa_digits.saturating_add(1);
        }
    }
    if mantissa_digits == 0 {
        return false;
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i = i.saturating_add(1);
        if matches!(at(i), Some(b'+' | b'-')) {
            i = i.saturating_add(1);
        }
        let start = i;
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i = i.saturating_add(1);
        }
        if i == start {
            return false;
        }
    }
    i == v.len()
}

/// The standard form of a value written in an ACR-NEMA form that keeps its meaning: a date
/// `YYYY.MM.DD` becomes `YYYYMMDD`, a time `HH:MM[:SS[.F]]` becomes `HHMM[SS[.F]]`. `None`
/// when the value has no such form (or is valid already).
pub fn standard_form(vr: Vr, bytes: &[u8]) -> Option<String> {
    let text = trim_padding(bytes);
    let mut out = Vec::new();
    for value in text.split(|&b| b == b'\\') {
        let v = trim_spaces(value);
        let fixed: Vec<u8> = match vr {
            Vr::DA if v.len() == 10 && v.get(4) == Some(&b'.') && v.get(7) == Some(&b'.') => {
                v.iter().copied().filter(|&c| c != b'.').collect()
            }
            Vr::TM if v.contains(&b':') => v.iter().copied().filter(|&c| c != b':').collect(),
            _ => v.to_vec(),
        };
        if check_one(vr, &fixed).is_err() {
            return None;
        }
        out.push(String::from_utf8(fixed).ok()?);
    }
    let joined = out.join("\\");
    (joined.as_bytes() != text).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids() {
        assert!(is_valid_uid("1.2.840.10008.1.2"));
        assert!(is_valid_uid("0.1"));
        for bad in [
            "",
            "1..2",
            "1.02",
            ".1",
            "1.",
            "1.2a",
            "1.2 3",
            &"1".repeat(65),
        ] {
            assert!(!is_valid_uid(bad), "{bad}");
        }
    }

    #[test]
    fn codes_numbers_dates_and_times() {
        use Vr::*;
        for (vr, good) in [
            (CS, &b"ORIGINAL\\PRIMARY\\AXIAL "[..]),
            (CS, b"ISO_IR 100"),
            (DS, b" -1.5e-3\\0.68359375000000"),
            (IS, b"+12 "),
            (DA, b"20000229"),
            (TM, b"235960.123456"),
            (TM, b"10"),
            (DT, b"20240301123000.5+0100"),
            (DT, b"2024"),
            (AS, b"042Y"),
            (AE, b"STORE SCP"),
            (US, &[1, 0, 2, 0][..]),
            (UI, b"1.2.3\0"),
        ] {
            assert_eq!(check(0, vr, good), Ok(()), "{vr:?} {good:?}");
        }
        for (vr, bad) in [
            (CS, &b"Doe^John"[..]),
            (CS, b"ABDOM/RAD"),
            (CS, b"SEVENTEEN_LETTERS"),
            (DS, b"JOHN"),
            (DS, b"1.5.2"),
            (IS, b"1A"),
            (IS, b"99999999999"),
            (DA, b"20230230"),
            (DA, b"1994.11.05"),
            (TM, b"11:20:00"),
            (TM, b"2500"),
            (DT, b"2024030112300"),
            (AS, b"42Y"),
            (AE, b"TAB\tAE"),
            (US, &[1, 0, 2][..]),
            (FD, &[0; 12][..]),
            (UI, b"1.2.03"),
        ] {
            assert!(check(0, vr, bad).is_err(), "{vr:?} {bad:?}");
        }
    }

    #[test]
    fn enumerated_values() {
        assert_eq!(check(tags::BURNED_IN_ANNOTATION, Vr::CS, b"NO"), Ok(()));
        assert_eq!(
            check(tags::BURNED_IN_ANNOTATION, Vr::CS, b"JOHN DOE"),
            Err(Problem::NotAnAllowedValue)
        );
        assert_eq!(
            check(tags::SPECIFIC_CHARACTER_SET, Vr::CS, b"\\ISO 2022 IR 87"),
            Ok(())
        );
        assert!(check(tags::SPECIFIC_CHARACTER_SET, Vr::CS, b"JANE DOE").is_err());
    }

    #[test]
    fn acr_nema_forms_become_standard() {
        assert_eq!(
            standard_form(Vr::DA, b"1994.11.05").as_deref(),
            Some("19941105")
        );
        assert_eq!(
            standard_form(Vr::TM, b"11:20:00").as_deref(),
            Some("112000")
        );
        assert_eq!(standard_form(Vr::DA, b"19941105"), None);
        assert_eq!(standard_form(Vr::DA, b"SMITH"), None);
    }
}
