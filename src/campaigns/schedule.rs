//! When a campaign runs and when it must keep quiet, in the campaign's own time zone (an IANA
//! name such as `Asia/Shanghai`, checked when the campaign is saved; the zone database is
//! built in, so a server without tzdata reads it the same). Pure functions of `now`, so the
//! scheduler and its tests run on any clock.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A campaign's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tz_name: String,
    tz: TimeZone,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every day at this local time.
    Daily(Time),
    /// Once, at this instant.
    Once(Timestamp),
}

/// Why a schedule or quiet hours are refused; [`ScheduleError::field`] names the API field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown time zone {0:?} (an IANA name such as Asia/Shanghai)")]
    UnknownZone(String),
    #[error("{0:?} is not a time of day (HH:MM)")]
    BadTime(String),
    #[error(
        "{0:?} is not a date and time (2026-12-24T09:00 in the zone, or 2026-12-24T09:00:00+08:00)"
    )]
    BadInstant(String),
    #[error("{0} is in the past")]
    Past(String),
    #[error("{0:?} is not a window of local time (21:00-08:00)")]
    BadQuietHours(String),
}

impl ScheduleError {
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::UnknownZone(_) => "schedule.tz",
            ScheduleError::BadTime(_) | ScheduleError::BadInstant(_) | ScheduleError::Past(_) => {
                "schedule.at"
            }
            ScheduleError::BadQuietHours(_) => "quiet_hours",
        }
    }
}

fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| ScheduleError::UnknownZone(name.to_string()))
}

fn time_of_day(s: &str) -> Result<Time, ScheduleError> {
    s.trim()
        .parse::<Time>()
        .map_err(|_| ScheduleError::BadTime(s.to_string()))
}

impl Schedule {
    /// Every day at `at` (`HH:MM`) in `tz`.
    pub fn daily(at: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            tz: zone(tz)?,
            tz_name: tz.to_string(),
            kind: Kind::Daily(time_of_day(at)?),
        })
    }

    /// Once at `at`, which must be after `now`: RFC 3339 with an offset, or a local date and
    /// time (`2026-12-24T09:00`, what a browser's date-time field gives) in `tz`; `tz` also
    /// says which day it is for the customers' occasions.
    pub fn once(at: &str, tz: &str, now: Timestamp) -> Result<Schedule, ScheduleError> {
        let tz_ = zone(tz)?;
        let bad = || ScheduleError::BadInstant(at.to_string());
        let when = match at.trim().parse::<Timestamp>() {
            Ok(t) => t,
            Err(_) => at
                .trim()
                .parse::<jiff::civil::DateTime>()
                .map_err(|_| bad())?
                .to_zoned_datetime(tz_.clone())
                .map_err(|_| bad())?
                .timestamp(),
        };
        if when <= now {
            return Err(ScheduleError::Past(at.to_string()));
        }
        Ok(Schedule {
            tz: tz_,
            tz_name: tz.to_string(),
            kind: Kind::Once(when),
        })
    }

    /// The first run at or after `after`; `None` for a single run already past.
    pub fn next_run(&self, after: Timestamp) -> Option<Timestamp> {
        match self.kind {
            Kind::Once(at) => (at >= after).then_some(at),
            Kind::Daily(time) => {
                let mut day = after.to_zoned_datetime(self.tz.clone()).date();
                for _ in 0..3 {
                    // A time a DST change skips is taken as the same wall time after it.
                    let at = day
                        .to_datetime(time)
                        .to_zoned_datetime(self.tz.clone())
                        .ok()?
                        .timestamp();
                    if at >= after {
                        return Some(at);
                    }
                    day = day.tomorrow().ok()?;
                }
                None
            }
        }
    }

    /// The campaign's local date at `at`: the day whose birthdays and anniversaries it greets.
    pub fn local_date(&self, at: Timestamp) -> Date {
        at.to_zoned_datetime(self.tz.clone()).date()
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

/// A window of local time in which nothing is sent; it may wrap over midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    from: Time,
    to: Time,
}

impl QuietHours {
    /// `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<QuietHours, ScheduleError> {
        let bad = || ScheduleError::BadQuietHours(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (from, to) = (
            time_of_day(a).map_err(|_| bad())?,
            time_of_day(b).map_err(|_| bad())?,
        );
        if from == to {
            return Err(bad());
        }
        Ok(QuietHours { from, to })
    }

    /// Whether `local` falls in the window (its start included, its end not).
    pub fn contains(&self, local: Time) -> bool {
        if self.from < self.to {
            local >= self.from && local < self.to
        } else {
            local >= self.from || local < self.to
        }
    }

    /// `at` itself when it is not quiet in `tz`, else when the quiet time ends.
    pub fn next_allowed(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let local = at.to_zoned_datetime(tz.clone());
        if !self.contains(local.time()) {
            return at;
        }
        let mut day = local.date();
        if self.from > self.to && local.time() >= self.from {
            // Quiet until tomorrow morning.
            day = day.tomorrow().unwrap_or(day);
        }
        day.to_datetime(self.to)
            .to_zoned_datetime(tz.clone())
            .map_or(at, |z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("an instant")
    }

    #[test]
    fn a_daily_schedule_runs_at_its_local_time() {
        let s = Schedule::daily("09:00", "Asia/Shanghai").unwrap();
        assert_eq!(
            s.next_run(ts("2026-12-02T00:30:00Z")),
            Some(ts("2026-12-02T01:00:00Z"))
        );
        assert_eq!(
            s.next_run(ts("2026-12-02T01:00:00Z")),
            Some(ts("2026-12-02T01:00:00Z")),
            "at the very time"
        );
        assert_eq!(
            s.next_run(ts("2026-12-02T02:00:00Z")),
            Some(ts("2026-12-03T01:00:00Z"))
        );
        // 23:30 UTC on 1 December is already 2 December in Shanghai.
        assert_eq!(
            s.local_date(ts("2026-12-01T23:30:00Z")),
            jiff::civil::date(2026, 12, 2)
        );
    }

    #[test]
    fn a_time_the_clocks_skip_still_runs_that_day() {
        // New York springs forward at 02:00 on 8 March 2026: 02:30 does not exist that day.
        let s = Schedule::daily("02:30", "America/New_York").unwrap();
        let run = s.next_run(ts("2026-03-08T05:00:00Z")).unwrap();
        assert!(
            run > ts("2026-03-08T06:59:59Z") && run < ts("2026-03-08T08:00:01Z"),
            "{run}"
        );
    }

    #[test]
    fn a_single_run_may_be_written_in_local_time() {
        let now = ts("2026-12-02T00:00:00Z");
        let s = Schedule::once("2026-12-24T09:00", "Asia/Shanghai", now).unwrap();
        assert_eq!(s.next_run(now), Some(ts("2026-12-24T01:00:00Z")));
        let s = Schedule::once("2026-12-24T09:00:00-05:00", "Asia/Shanghai", now).unwrap();
        assert_eq!(s.next_run(now), Some(ts("2026-12-24T14:00:00Z")));
        assert!(matches!(
            Schedule::once("2026-12-01T09:00", "Asia/Shanghai", now),
            Err(ScheduleError::Past(_))
        ));
        assert!(matches!(
            Schedule::once("Christmas morning", "Asia/Shanghai", now),
            Err(ScheduleError::BadInstant(_))
        ));
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_field() {
        let now = ts("2026-12-02T00:00:00Z");
        let e = Schedule::daily("09:00", "Mars/Olympus_Mons").unwrap_err();
        assert_eq!(e.field(), "schedule.tz");
        assert!(e.to_string().contains("Mars/Olympus_Mons"), "{e}");
        assert_eq!(
            Schedule::daily("25:00", "UTC").unwrap_err().field(),
            "schedule.at"
        );
        let e = Schedule::once("2026-12-01T09:00:00+08:00", "Asia/Shanghai", now).unwrap_err();
        assert!(matches!(e, ScheduleError::Past(_)), "{e}");
        let once = Schedule::once("2026-12-24T09:00:00+08:00", "Asia/Shanghai", now).unwrap();
        assert_eq!(once.next_run(now), Some(ts("2026-12-24T01:00:00Z")));
        assert_eq!(once.next_run(ts("2026-12-25T00:00:00Z")), None);
        assert_eq!(
            QuietHours::parse("21:00").unwrap_err().field(),
            "quiet_hours"
        );
    }

    #[test]
    fn quiet_hours_hold_sending_back_until_they_end() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let night = QuietHours::parse("21:00-08:00").unwrap();
        let t = |h, m| Time::new(h, m, 0, 0).unwrap();
        assert!(night.contains(t(22, 0)) && night.contains(t(7, 59)) && night.contains(t(21, 0)));
        assert!(!night.contains(t(8, 0)) && !night.contains(t(12, 0)));
        // 22:00 in Shanghai waits until 08:00 the next morning; 03:00 until 08:00 that day.
        assert_eq!(
            night.next_allowed(ts("2026-12-02T14:00:00Z"), &tz),
            ts("2026-12-03T00:00:00Z")
        );
        assert_eq!(
            night.next_allowed(ts("2026-12-02T19:00:00Z"), &tz),
            ts("2026-12-03T00:00:00Z")
        );
        let noon = ts("2026-12-02T04:00:00Z");
        assert_eq!(night.next_allowed(noon, &tz), noon);
        let lunch = QuietHours::parse("12:00-14:00").unwrap();
        assert_eq!(lunch.next_allowed(noon, &tz), ts("2026-12-02T06:00:00Z"));
    }
}
