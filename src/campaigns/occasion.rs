//! On which day a customer's birthday or anniversary is kept. A Gregorian date is kept on its
//! month and day, and 29 February on 28 February in years without it. A lunar (农历) date, for a
//! customer whose record says so, is kept on that lunar month and day of the current lunar year
//! (in the regular month, not a leap month of the same number; a 30th in a month of 29 days on
//! its last day), converted with `chinese-lunisolar-calendar` (lunar years 1901–2100).

use chinese_lunisolar_calendar::{LunisolarDate, SolarDate};

/// A date from the customer's record: `YYYY-MM-DD`, or `MM-DD` (`--MM-DD`) without the year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordDate {
    pub year: Option<i32>,
    pub month: u32,
    pub day: u32,
}

impl RecordDate {
    pub fn parse(s: &str) -> Option<RecordDate> {
        Self::parse_in(s, Calendar::Gregorian)
    }

    /// As [`RecordDate::parse`], for a date in `calendar`: a lunar month has up to 30 days,
    /// whichever month it is.
    pub fn parse_in(s: &str, calendar: Calendar) -> Option<RecordDate> {
        let s = s.trim();
        let parts: Vec<&str> = s.trim_start_matches("--").split('-').collect();
        let num = |p: &str| p.parse::<u32>().ok();
        let (year, month, day) = match parts.as_slice() {
            [y, m, d] if y.len() == 4 => (Some(y.parse::<i32>().ok()?), num(m)?, num(d)?),
            [m, d] => (None, num(m)?, num(d)?),
            _ => return None,
        };
        let max = match (calendar, month) {
            (Calendar::Lunar, 1..=12) => 30,
            (_, 1 | 3 | 5 | 7 | 8 | 10 | 12) => 31,
            (_, 4 | 6 | 9 | 11) => 30,
            (_, 2) => 29,
            _ => return None,
        };
        (1..=max)
            .contains(&day)
            .then_some(RecordDate { year, month, day })
    }
}

/// The calendar a record's date is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Gregorian,
    /// The Chinese lunisolar calendar: month 1–12 and day 1–30.
    Lunar,
}

/// A Gregorian civil date (year, month, day).
pub type Civil = (i32, u32, u32);

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn next_day((y, m, d): Civil) -> Civil {
    if d < days_in_month(y, m) {
        (y, m, d + 1)
    } else if m < 12 {
        (y, m + 1, 1)
    } else {
        (y + 1, 1, 1)
    }
}

/// (lunar month, lunar day, is a leap month) of a Gregorian date; `None` out of range.
fn lunar((y, m, d): Civil) -> Option<(u8, u8, bool)> {
    let solar = SolarDate::from_ymd(
        u16::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
    )
    .ok()?;
    let l = LunisolarDate::from_solar_date(solar).ok()?;
    let month = l.to_lunar_month();
    Some((
        month.to_u8(),
        l.to_lunar_day().to_u8(),
        month.is_leap_month(),
    ))
}

/// The lunar year `today` is in (a lunar date can fall twice in one Gregorian year, so a
/// lunar birthday's once-a-year key is the lunar year).
pub fn lunar_year(today: Civil) -> Option<u16> {
    let (y, m, d) = today;
    let solar = SolarDate::from_ymd(
        u16::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
    )
    .ok()?;
    Some(
        LunisolarDate::from_solar_date(solar)
            .ok()?
            .to_lunisolar_year()
            .to_u16(),
    )
}

/// Whether the occasion recorded as `date` is kept on `today`.
pub fn falls_on(date: RecordDate, calendar: Calendar, today: Civil) -> bool {
    let (y, m, d) = today;
    match calendar {
        Calendar::Gregorian => {
            (date.month, date.day) == (m, d)
                || ((date.month, date.day) == (2, 29) && !is_leap(y) && (m, d) == (2, 28))
        }
        Calendar::Lunar => {
            let Some((lm, ld, leap)) = lunar(today) else {
                return false;
            };
            if leap || u32::from(lm) != date.month {
                return false;
            }
            let ld = u32::from(ld);
            // A 30th is kept on the 29th when this year's month ends there.
            ld == date.day
                || (date.day == 30 && ld == 29 && lunar(next_day(today)).is_some_and(|n| n.1 == 1))
        }
    }
}

/// Whole years since the recorded year (an age, or years as a customer) on an occasion kept
/// `today`; `None` when the record has no year.
pub fn years(date: RecordDate, today: Civil) -> Option<u32> {
    let y = date.year?;
    u32::try_from(today.0 - y).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(s: &str) -> RecordDate {
        RecordDate::parse(s).expect("a date")
    }

    #[test]
    fn record_dates_parse_with_or_without_the_year() {
        assert_eq!(
            RecordDate::parse("1980-02-29"),
            Some(RecordDate {
                year: Some(1980),
                month: 2,
                day: 29
            })
        );
        assert_eq!(rd("--12-24").year, None);
        assert_eq!(rd("12-24").month, 12);
        for bad in ["1980-02-30", "1980-13-01", "yesterday", "", "1980-4-31"] {
            assert_eq!(RecordDate::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_29_february_birthday_is_kept_on_28_february_in_other_years() {
        let b = rd("1992-02-29");
        assert!(falls_on(b, Calendar::Gregorian, (2024, 2, 29)));
        assert!(!falls_on(b, Calendar::Gregorian, (2024, 2, 28)));
        assert!(falls_on(b, Calendar::Gregorian, (2026, 2, 28)));
        assert!(!falls_on(b, Calendar::Gregorian, (2026, 3, 1)));
        assert!(falls_on(
            rd("1970-12-02"),
            Calendar::Gregorian,
            (2026, 12, 2)
        ));
        assert_eq!(years(rd("1970-12-02"), (2026, 12, 2)), Some(56));
        assert_eq!(years(rd("12-02"), (2026, 12, 2)), None);
    }

    #[test]
    fn a_lunar_birthday_moves_with_the_lunar_calendar() {
        // 八月十五: 17 September 2024, 6 October 2025.
        let mid_autumn = rd("1985-08-15");
        assert!(falls_on(mid_autumn, Calendar::Lunar, (2024, 9, 17)));
        assert!(falls_on(mid_autumn, Calendar::Lunar, (2025, 10, 6)));
        assert!(!falls_on(mid_autumn, Calendar::Lunar, (2025, 9, 17)));
        assert!(!falls_on(mid_autumn, Calendar::Gregorian, (2024, 9, 17)));
        // 2023 has a leap second month: 二月十五 is kept on 6 March, not on 闰二月十五 (5 April).
        let b = rd("1990-02-15");
        assert!(falls_on(b, Calendar::Lunar, (2023, 3, 6)));
        assert!(!falls_on(b, Calendar::Lunar, (2023, 4, 5)));
        // 正月 of 2024 has 29 days (10 February – 9 March): a 正月三十 birthday is kept on the 29th.
        let thirtieth = rd("2001-01-30");
        assert!(falls_on(thirtieth, Calendar::Lunar, (2024, 3, 9)));
        assert!(!falls_on(thirtieth, Calendar::Lunar, (2024, 3, 10)));
        assert!(
            falls_on(rd("1990-01-01"), Calendar::Lunar, (2024, 2, 10)),
            "春节"
        );
    }
}
