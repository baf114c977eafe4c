//! Dates of the proleptic Gregorian calendar as days since 1970-01-01 and back, and Unix
//! times as UTC dates and times of day: H. Hinnant's `days_from_civil` and `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>). radveil's one civil-date
//! implementation: DA/DT date shifts, signature and certificate times, and ledger record
//! times all use it.
//!
//! Dates come from hostile files, so nothing here can overflow or panic: a year outside
//! [`MIN_YEAR`]..=[`MAX_YEAR`], a month outside 1-12 or a day the month does not have gives
//! `None`. Within that range no intermediate value exceeds about 4 * 10^14, far inside `i64`;
//! the range holds the date of every `i64` Unix time, so [`DateTime::from_unix_seconds`]
//! needs no `Option`.

/// The earliest year accepted (a proleptic Gregorian year: 0 is 1 BC).
pub const MIN_YEAR: i64 = -1_000_000_000_000;
/// The latest year accepted.
pub const MAX_YEAR: i64 = 1_000_000_000_000;
/// Days since 1970-01-01 of [`MIN_YEAR`]-01-01, the earliest day [`civil_from_days`] accepts.
pub const MIN_DAY: i64 = raw_days_from_civil(MIN_YEAR, 1, 1);
/// Days since 1970-01-01 of [`MAX_YEAR`]-12-31, the latest day [`civil_from_days`] accepts.
pub const MAX_DAY: i64 = raw_days_from_civil(MAX_YEAR, 12, 31);
/// Seconds in a day of Unix time (which counts no leap seconds).
pub const SECONDS_PER_DAY: i64 = 86_400;

// Every i64 Unix time falls on a day in MIN_DAY..=MAX_DAY: `from_unix_seconds` relies on it.
const _: () = assert!(
    MIN_DAY <= i64::MIN.div_euclid(SECONDS_PER_DAY)
        && MAX_DAY >= i64::MAX.div_euclid(SECONDS_PER_DAY)
);

/// Whether `year` has a 29 February.
pub const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days of `month` (1-12) in `year`; `None` for a month that does not exist.
pub const fn days_in_month(year: i64, month: u32) -> Option<u32> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// Days since 1970-01-01 of `year`-`month`-`day` (negative before it); `None` unless the date
/// exists and the year is in [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) || day == 0 || day > days_in_month(year, month)? {
        return None;
    }
    Some(raw_days_from_civil(year, month, day))
}

/// The date (year, month 1-12, day 1-31) `days` after 1970-01-01; `None` outside
/// [`MIN_DAY`]..=[`MAX_DAY`].
pub fn civil_from_days(days: i64) -> Option<(i64, u32, u32)> {
    (MIN_DAY..=MAX_DAY)
        .contains(&days)
        .then(|| raw_civil_from_days(days))
}

/// Hinnant's `days_from_civil` for a valid date with a year in range (the callers check).
const fn raw_days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // The year starts on 1 March, so a leap day is the last day of its year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let mp = (month as i64 + 9) % 12; // March is 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// Hinnant's `civil_from_days` for a day in range (the callers check).
fn raw_civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // 0..=11, March is 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // 1..=31
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32; // 1..=12
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC date and time of day, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-60 (60: a leap second, which Unix time counts as the next minute's first).
    pub second: u32,
}

impl DateTime {
    /// The date and time of a Unix time (seconds since 1970-01-01T00:00:00Z). Every `i64`
    /// has one.
    pub fn from_unix_seconds(secs: i64) -> DateTime {
        let rem = secs.rem_euclid(SECONDS_PER_DAY) as u32; // 0..86400
                                                           // In MIN_DAY..=MAX_DAY for every i64 (checked at compile time above).
        let (year, month, day) = raw_civil_from_days(secs.div_euclid(SECONDS_PER_DAY));
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// The Unix time of this date and time; `None` if a field is out of its range or the
    /// time does not fit an `i64`.
    pub fn unix_seconds(&self) -> Option<i64> {
        if self.hour > 23 || self.minute > 59 || self.second > 60 {
            return None;
        }
        let time = i128::from(self.hour * 3600 + self.minute * 60 + self.second);
        let days = i128::from(days_from_civil(self.year, self.month, self.day)?);
        // Exact in i128 (|days| < 4 * 10^14); the day of i64::MIN times 86,400 alone does
        // not fit an i64, so the sum is formed first and narrowed once.
        i64::try_from(days * i128::from(SECONDS_PER_DAY) + time).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_day_zero() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(civil_from_days(0), Some((1970, 1, 1)));
        assert_eq!(days_from_civil(1969, 12, 31), Some(-1));
        assert_eq!(civil_from_days(-1), Some((1969, 12, 31)));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(civil_from_days(-719_468), Some((0, 3, 1)));
    }

    #[test]
    fn leap_days_follow_the_gregorian_rules() {
        for (year, leap) in [(1600, true), (1900, false), (2000, true), (2100, false)] {
            assert_eq!(is_leap_year(year), leap, "{year}");
            assert_eq!(days_from_civil(year, 2, 29).is_some(), leap, "{year}");
        }
        for year in [1600, 2000, 2400, 0, -4, -400] {
            let feb29 = days_from_civil(year, 2, 29).unwrap();
            assert_eq!(civil_from_days(feb29), Some((year, 2, 29)));
            assert_eq!(civil_from_days(feb29 + 1), Some((year, 3, 1)));
            assert_eq!(days_from_civil(year, 2, 28), Some(feb29 - 1));
        }
        assert_eq!(days_from_civil(1900, 2, 29), None);
        assert_eq!(
            civil_from_days(days_from_civil(1900, 2, 28).unwrap() + 1),
            Some((1900, 3, 1))
        );
        // 400 years are 146,097 days, whichever the start.
        assert_eq!(
            days_from_civil(2400, 1, 1).unwrap() - days_from_civil(2000, 1, 1).unwrap(),
            146_097
        );
    }

    #[test]
    fn days_and_dates_round_trip_over_a_wide_range() {
        // Every day from 1500 to 2500, each after the one before.
        let first = days_from_civil(1500, 1, 1).unwrap();
        let mut expect = (1500, 1, 1);
        for days in first..=days_from_civil(2500, 12, 31).unwrap() {
            let date = civil_from_days(days).unwrap();
            assert_eq!(date, expect, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), Some(days));
            let (y, m, d) = date;
            expect = if d < days_in_month(y, m).unwrap() {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
        // Spot checks across the whole range, negative days included.
        let mut days = MIN_DAY;
        while days < MAX_DAY - 1_000_000_007 {
            let (y, m, d) = civil_from_days(days).unwrap();
            assert_eq!(days_from_civil(y, m, d), Some(days));
            days += 1_000_000_007;
        }
    }

    #[test]
    fn invalid_dates_are_refused() {
        for (y, m, d) in [
            (2023, 0, 1),
            (2023, 13, 1),
            (2023, 1, 0),
            (2023, 1, 32),
            (2023, 4, 31),
            (2023, 2, 29),
            (2023, u32::MAX, u32::MAX),
        ] {
            assert_eq!(days_from_civil(y, m, d), None, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn extremes_give_none_and_never_overflow() {
        for year in [i64::MIN, i64::MIN + 1, MIN_YEAR - 1, MAX_YEAR + 1, i64::MAX] {
            assert_eq!(days_from_civil(year, 1, 1), None, "{year}");
            assert_eq!(days_from_civil(year, 12, 31), None, "{year}");
        }
        assert_eq!(days_from_civil(MIN_YEAR, 1, 1), Some(MIN_DAY));
        assert_eq!(days_from_civil(MAX_YEAR, 12, 31), Some(MAX_DAY));
        assert_eq!(civil_from_days(MIN_DAY), Some((MIN_YEAR, 1, 1)));
        assert_eq!(civil_from_days(MAX_DAY), Some((MAX_YEAR, 12, 31)));
        for days in [i64::MIN, MIN_DAY - 1, MAX_DAY + 1, i64::MAX] {
            assert_eq!(civil_from_days(days), None, "{days}");
        }
    }

    #[test]
    fn unix_seconds_round_trip_and_every_i64_has_a_date() {
        let t = DateTime::from_unix_seconds(1_795_437_486);
        assert_eq!(
            t,
            DateTime {
                year: 2026,
                month: 11,
                day: 23,
                hour: 12,
                minute: 38,
                second: 6
            }
        );
        assert_eq!(t.unix_seconds(), Some(1_795_437_486));
        for secs in [0, -1, 951_782_400, -62_167_219_200, 253_402_300_799] {
            assert_eq!(DateTime::from_unix_seconds(secs).unix_seconds(), Some(secs));
        }
        assert_eq!(
            DateTime::from_unix_seconds(-1),
            DateTime {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        for secs in [i64::MIN, i64::MAX] {
            let t = DateTime::from_unix_seconds(secs);
            assert_eq!(t.unix_seconds(), Some(secs), "{t:?}");
        }
        // Years in range whose seconds do not fit an i64, and fields out of range.
        let far = DateTime {
            year: MAX_YEAR,
            ..DateTime::from_unix_seconds(0)
        };
        assert_eq!(far.unix_seconds(), None);
        let epoch = DateTime::from_unix_seconds(0);
        for bad in [
            DateTime { hour: 24, ..epoch },
            DateTime {
                minute: 60,
                ..epoch
            },
            DateTime {
                second: 61,
                ..epoch
            },
            DateTime {
                hour: u32::MAX,
                ..epoch
            },
        ] {
            assert_eq!(bad.unix_seconds(), None, "{bad:?}");
        }
        assert_eq!(
            DateTime {
                second: 60,
                ..epoch
            }
            .unix_seconds(),
            Some(60)
        );
    }
}
