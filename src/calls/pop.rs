//! The screen-pop's content and the call events sent to desktops. The customer card, the
//! candidates, the last contacts and the open work orders are read once, while the call is being
//! queued, so the `call.offered` frame goes out the moment the agent's phone is rung without a
//! database round trip on that path.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tracing::warn;

use crate::events::Event;
use crate::sip::caller_id::CallerId;
use crate::store::customers::CallerMatch;
use crate::store::Store;

/// How many past contacts the pop shows.
pub const RECENT_CONTACTS: i64 = 5;

/// What the pop says about the caller, prepared before any agent rings.
#[derive(Debug, Clone)]
pub struct PopCard {
    pub customer: Value,
    pub candidates: Value,
    pub recent_contacts: Value,
    pub open_work_orders: Value,
}

impl Default for PopCard {
    /// No customer: empty lists, never nulls, so desktops can iterate.
    fn default() -> PopCard {
        PopCard {
            customer: Value::Null,
            candidates: json!([]),
            recent_contacts: json!([]),
            open_work_orders: json!([]),
        }
    }
}

impl PopCard {
    /// Reads the last contacts and open work orders of the matched customer; a store failure
    /// leaves them empty (the pop still goes out).
    pub async fn load(store: &Store, m: &CallerMatch) -> PopCard {
        let mut card = PopCard {
            customer: serde_json::to_value(&m.customer).unwrap_or(Value::Null),
            candidates: serde_json::to_value(&m.candidates).unwrap_or_else(|_| json!([])),
            recent_contacts: json!([]),
            open_work_orders: json!([]),
        };
        if let Some(c) = &m.customer {
            match store.recent_contacts(c.id, RECENT_CONTACTS).await {
                Ok(v) => card.recent_contacts = serde_json::to_value(v).unwrap_or(json!([])),
                Err(e) => warn!(error = %e, "recent contacts not read"),
            }
            match store.open_work_orders(c.id).await {
                Ok(v) => card.open_work_orders = serde_json::to_value(v).unwrap_or(json!([])),
                Err(e) => warn!(error = %e, "open work orders not read"),
            }
        }
        card
    }
}

/// Everything `call.offered` carries.
pub struct Offered<'a> {
    pub call_id: &'a str,
    pub log_id: Option<i64>,
    pub queue: Option<&'a str>,
    pub queue_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub caller: &'a CallerId,
    pub caller_e164: Option<&'a str>,
    pub dialed: &'a str,
    pub card: &'a PopCard,
    pub offered_at: SystemTime,
    /// When the INVITE arrived (latency is measured from here).
    pub since: Instant,
}

pub fn offered(o: Offered<'_>) -> Event {
    let caller_number = if o.caller.withheld {
        None
    } else {
        o.caller_e164
    };
    Event::new(
        "call.offered",
        o.agent_id,
        json!({
            "call_id": o.call_id,
            "contact_log_id": o.log_id,
            "queue": o.queue,
            "queue_id": o.queue_id,
            "agent_id": o.agent_id,
            "caller": {
                "number": caller_number,
                "raw": o.caller.raw,
                "name": o.caller.name,
                "withheld": o.caller.withheld,
            },
            "dialed": o.dialed,
            "customer": o.card.customer,
            "candidates": o.card.candidates,
            "recent_contacts": o.card.recent_contacts,
            "open_work_orders": o.card.open_work_orders,
            // When the INVITE arrived (the contact log's `offered_at`): a desktop measures the
            // whole path from it.
            "offered_at": rfc3339(o.offered_at),
        }),
    )
    .for_call(o.call_id)
    .since(o.since)
}

/// A caller entered a queue: for the supervisors' wallboard (callers waiting, longest wait).
pub fn queued(
    call_id: &str,
    queue_id: i64,
    queue: &str,
    caller: &CallerId,
    caller_e164: Option<&str>,
    at: SystemTime,
) -> Event {
    Event::new(
        "call.queued",
        None,
        json!({
            "call_id": call_id,
            "queue": queue,
            "queue_id": queue_id,
            "caller": {
                "number": if caller.withheld { None } else { caller_e164 },
                "raw": caller.raw,
                "name": caller.name,
                "withheld": caller.withheld,
            },
            "queued_at": rfc3339(at),
        }),
    )
    .for_call(call_id)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rfc3339_ms(ms)
}

/// Formats epoch milliseconds as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let (y, mo, d) = super::b2bua::civil_date(t);
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
