//! Date arithmetic for the Retain Longitudinal Temporal Information with Modified Dates
//! option: DA and DT values shifted by whole days, keeping their precision.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    next - days_from_civil(y, m, 1)
}

/// Whether year, month and day name a day of the proleptic Gregorian calendar (years 0 to
/// 9999, the range DA can write). The one civil-date check of the crate: date shifts and the
/// validation of kept dates both use it.
pub fn is_valid_date(y: i64, m: i64, d: i64) -> bool {
    (0..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// Shifts one DA value (`YYYYMMDD`, or the ACR-NEMA `YYYY.MM.DD`) by `days`. `None` when the
/// value is not a valid date: the caller must then remove it rather than keep it.
pub fn shift_da(value: &str, days: i64) -> Option<String> {
    let v: String = value.chars().filter(|&c| c != '.').collect();
    if v.len() != 8 {
        return None;
    }
    let (y, m, d) = (digits(&v[..4])?, digits(&v[4..6])?, digits(&v[6..8])?);
    if !is_valid_date(y, m, d) {
        return None;
    }
    let (y2, m2, d2) = civil_from_days(days_from_civil(y, m, d) + days);
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
        let a = days_from_civil(2020, 5, 17);
        let b = days_from_civil(2021, 2, 3);
        let sa = shift_da("20200517", -777).unwrap();
        let sb = shift_da("20210203", -777).unwrap();
        let parse = |s: &str| {
            days_from_civil(
                s[..4].parse().unwrap(),
                s[4..6].parse().unwrap(),
                s[6..].parse().unwrap(),
            )
        };
        assert_eq!(parse(&sb) - parse(&sa), b - a);
    }
}
