//! Time as screenpop stores and shows it: epoch milliseconds (the store's unit, the same on
//! SQLite and PostgreSQL), civil dates in UTC (the recordings' folders) and RFC 3339 (the API
//! and the events). One module, so every layer reads and writes times the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch of `t` (0 before the epoch).
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now: the store's time unit.
pub fn now_ms() -> i64 {
    epoch_ms(SystemTime::now()) as i64
}

/// (year, month, day) in UTC for the recording's directory.
pub(crate) fn civil_date(t: SystemTime) -> (i32, u32, u32) {
    let days = (epoch_ms(t) / 86_400_000) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rfc3339_ms(ms)
}

/// Formats epoch milliseconds as RFC 3339 UTC.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let (y, mo, d) = civil_date(t);
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        ms.rem_euclid(1000)
    )
}

/// Parses what [`rfc3339_ms`] writes, and the common variants (no fraction, `+00:00`, a bare
/// date meaning midnight UTC). Offsets other than UTC are applied.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some()
        || !(1..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut ms = days * 86_400_000;
    if let Some(t) = time {
        let (clock, offset_ms) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, off) = t.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            let (oh, om) = (oh.parse::<i64>().ok()?, om.parse::<i64>().ok()?);
            if !(0..=23).contains(&oh) || !(0..=59).contains(&om) {
                return None;
            }
            let off = oh * 60 + om;
            (c, sign * off * 60_000)
        } else {
            (t, 0)
        };
        let mut parts = clock.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let mi: i64 = parts.next()?.parse().ok()?;
        let sec: f64 = parts.next().unwrap_or("0").parse().ok()?;
        if h > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
            return None;
        }
        ms += h * 3_600_000 + mi * 60_000 + (sec * 1000.0).round() as i64 - offset_ms;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18 11:06 UTC
        assert_eq!(civil_date(t), (2026, 11, 18));
        assert_eq!(civil_date(UNIX_EPOCH), (1970, 1, 1));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(civil_date(leap), (2000, 2, 29));
        assert_eq!(epoch_ms(leap), 951_782_400_000);
    }

    #[test]
    fn rfc3339_round_trip() {
        for ms in [0, 1_795_000_000_123, 951_782_400_000, 4_102_444_799_999] {
            let s = rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T13:06:40+02:00"),
            Some(1_795_000_000_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-18"), Some(1_794_960_000_000));
        assert_eq!(parse_rfc3339_ms("2026-13-01"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("999999999999-01-01"), None);
        assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+99999999:00"), None);
    }
}
