//! Date arithmetic for the Retain Longitudinal Temporal Information with Modified Dates
//! option: DA and DT values shifted by whole days, keeping their precision.

use radveil_standard::civil;

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether year, month and day name a day of the proleptic Gregorian calendar (years 0 to
/// 9999, the range DA can write). The one civil-date check of the crate: date shifts and the
/// validation of kept dates both use it.
pub fn is_valid_date(y: i64, m: i64, d: i64) -> bool {
    day_number(y, m, d).is_some()
}

/// Days since 1970-01-01 of a date [`is_valid_date`] accepts.
fn day_number(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(0..=9999).contains(&y) {
        return None;
    }
    civil::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?)
}

/// Shifts one DA value (`YYYYMMDD`, or the ACR-NEMA `YYYY.MM.DD`) by `days`. `None` when the
/// value is not a valid date: the caller must then remove it rather than keep it.
pub fn shift_da(value: &str, days: i64) -> Option<String> {
    let v: String = value.chars().filter(|&c| c != '.').collect();
    if v.len() != 8 {
        return None;
    }
    // `get`: eight bytes need not split into ASCII digits at 4 and 6.
    let (y, m, d) = (
        digits(v.get(..4)?)?,
        digits(v.get(4..6)?)?,
        digits(v.get(6..8)?)?,
    );
    let (y2, m2, d2) = civil::civil_from_days(day_number(y, m, d)?.checked_add(days)?)?;
    if !(0..=9999).contains(&y2) {
        return None;
    }
    Some(format!("{y2:04}{m2:02}{d2:02}"))
}

/// Shifts one DT value by `days`, keeping its time and offset. A DT with only a year or a
/// month is shifted on its first day and keeps its precision.
pub fn shift_dt(value: &str, days: i64) -> Option<String> {
    let date_len = value
        .bytes()
        .take(8)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let (date, rest) = value.split_at(date_len);
    let full = match date.len() {
        4 => format!("{date}0101"),
        6 => format!("{date}01"),
        8 => date.to_string(),
        _ => return None,
    };
    let shifted = shift_da(&full, days)?;
    Some(format!("{}{rest}", &shifted[..date.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_across_months_years_and_leap_days() {
        assert_eq!(shift_da("20240301", -1).unwrap(), "20240229");
        assert_eq!(shift_da("20230101", -1).unwrap(), "20221231");
        assert_eq!(shift_da("2023.01.01", -365).unwrap(), "20220101");
        assert_eq!(shift_da("20000229", 366).unwrap(), "20010301");
    }

    #[test]
    fn invalid_dates_are_refused() {
        for v in ["", "2023", "20231301", "20230230", "abcdefgh", "2023010"] {
            assert!(shift_da(v, -10).is_none(), "{v}");
        }
    }

    /// Shifts that leave DA's years 0-9999, by any number of days, are refused (no
    /// overflow however large the shift).
    #[test]
    fn shifts_out_of_range_are_refused() {
        // Not ASCII: eight bytes, but no digit boundary at 4 or 6.
        for v in ["123\u{e9}567", "12345\u{e9}7", "\u{e9}\u{e9}\u{e9}\u{e9}"] {
            assert_eq!(v.len(), 8);
            assert_eq!(shift_da(v, 1), None, "{v}");
        }
        assert_eq!(shift_da("00000101", -1), None);
        assert_eq!(shift_da("99991231", 1), None);
        assert_eq!(shift_da("00000101", 0).unwrap(), "00000101");
        for days in [i64::MIN, i64::MIN + 1, i64::MAX, 1 << 62, -(1 << 62)] {
            assert_eq!(shift_da("20240229", days), None, "{days}");
            assert_eq!(shift_dt("2024", days), None, "{days}");
        }
    }

    #[test]
    fn datetimes_keep_time_and_precision() {
        assert_eq!(
            shift_dt("20240301123000.5+0100", -1).unwrap(),
            "20240229123000.5+0100"
        );
        assert_eq!(shift_dt("2024", -400).unwrap(), "2022");
        assert!(shift_dt("x", 1).is_none());
    }

    #[test]
    fn interval_is_preserved() {
        let a = day_number(2020, 5, 17).unwrap();
        let b = day_number(2021, 2, 3).unwrap();
        let sa = shift_da("20200517", -777).unwrap();
        let sb = shift_da("20210203", -777).unwrap();
        let parse = |s: &str| {
            day_number(
                s[..4].parse().unwrap(),
                s[4..6].parse().unwrap(),
                s[6..].parse().unwrap(),
            )
            .unwrap()
        };
        assert_eq!(parse(&sb) - parse(&sa), b - a);
    }
}
