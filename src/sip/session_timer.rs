//! Session timers (RFC 4028): a dialog whose peer vanished without a BYE is found and ended.
//!
//! The UAS side of the negotiation (§9): an INVITE's `Session-Expires` below our `Min-SE` gets
//! 422 (§8.1 of the UAS rules); otherwise the 2xx echoes the interval with the refresher, which
//! is the UAC's choice, or the UAC when it supports timers, or us (§9). The timer itself
//! (§10): the refresher refreshes at half the interval; the other side ends the session when no
//! refresh came by `interval − min(32 s, interval / 3)`. Sans-IO: fed `now`, asked for its
//! deadline.

use std::time::{Duration, Instant};

use super::headers::HeaderName;
use super::message::Request;

/// Who sends the refreshes (`refresher=uac` / `uas`, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: delta-seconds and the optional refresher parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub secs: u64,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses `1800;refresher=uac` (parameters in any order and case; unknown ones ignored).
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut parts = value.split(';');
        let secs = parts.next()?.trim().parse().ok()?;
        let refresher = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
            .and_then(|(_, v)| match v.trim().to_ascii_lowercase().as_str() {
                "uac" => Some(Refresher::Uac),
                "uas" => Some(Refresher::Uas),
                _ => None,
            });
        Some(SessionExpires { secs, refresher })
    }

    /// The header value, refresher included.
    pub fn value(&self) -> String {
        match self.refresher {
            Some(r) => format!("{};refresher={}", self.secs, r.as_str()),
            None => self.secs.to_string(),
        }
    }
}

/// Whether a request lists `tag` in its `Supported` headers.
pub fn supports(req: &Request, tag: &str) -> bool {
    req.headers
        .get_all(&HeaderName::Supported)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// What a UAS makes of an INVITE (or a refresh) with our `min_se` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasNegotiation {
    /// No `Session-Expires`: no timer.
    None,
    /// The interval is too small: 422 with `Min-SE: min_se`.
    TooSmall { min_se: u64 },
    /// The session is timed: echo `expires` in the 2xx, with `Require: timer` when the UAC
    /// supports timers.
    Timed {
        expires: SessionExpires,
        uac_supports: bool,
    },
}

/// The UAS rules of RFC 4028 §9 for a request.
pub fn negotiate_uas(req: &Request, min_se: u64) -> UasNegotiation {
    let Some(se) = req
        .headers
        .get(&HeaderName::SessionExpires)
        .and_then(SessionExpires::parse)
    else {
        return UasNegotiation::None;
    };
    if se.secs < min_se {
        return UasNegotiation::TooSmall { min_se };
    }
    let uac_supports = supports(req, "timer");
    let refresher = se.refresher.unwrap_or(if uac_supports {
        Refresher::Uac
    } else {
        Refresher::Uas
    });
    UasNegotiation::Timed {
        expires: SessionExpires {
            secs: se.secs,
            refresher: Some(refresher),
        },
        uac_supports,
    }
}

/// What is due when the timer's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// We are the refresher: send a refresh now.
    Refresh,
    /// The refresher went silent: end the session (BYE both ways).
    Expired,
}

/// One timed session, from our side.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    since: Instant,
    /// A refresh of ours is on its way: not sent again until it is answered.
    refreshing: bool,
}

impl SessionTimer {
    /// Starts at `now` (the 2xx that set it up).
    pub fn new(now: Instant, secs: u64, we_refresh: bool) -> SessionTimer {
        SessionTimer {
            interval: Duration::from_secs(secs),
            we_refresh,
            since: now,
            refreshing: false,
        }
    }

    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    /// A refresh succeeded (a 2xx to a re-INVITE or UPDATE either way): the interval restarts,
    /// with `secs` and the refresher it negotiated.
    pub fn refreshed(&mut self, now: Instant, secs: u64, we_refresh: bool) {
        *self = SessionTimer::new(now, secs, we_refresh);
    }

    /// Our refresh failed or timed out: try again at the next deadline only if the session is
    /// still alive then (the other side's expiry rules apply to us too).
    pub fn refresh_failed(&mut self) {
        self.refreshing = false;
        self.we_refresh = false;
    }

    /// When something is due (`None` while our refresh is pending and not yet expired).
    pub fn deadline(&self) -> Instant {
        if self.we_refresh && !self.refreshing {
            self.since + self.interval / 2
        } else {
            let guard = Duration::from_secs(32).min(self.interval / 3);
            self.since + self.interval.saturating_sub(guard)
        }
    }

    /// What is due at `now`, if anything; a refresh is reported once until answered.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Due> {
        if now < self.deadline() {
            return None;
        }
        if self.we_refresh && !self.refreshing {
            self.refreshing = true;
            Some(Due::Refresh)
        } else {
            Some(Due::Expired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn invite(extra: &str) -> Request {
        let raw = format!(
            "INVITE sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:100@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).expect("parses") {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn values_parse_and_print() {
        let se = SessionExpires::parse("1800 ; Refresher = UAC;x=1").expect("parses");
        assert_eq!(se.secs, 1800);
        assert_eq!(se.refresher, Some(Refresher::Uac));
        assert_eq!(se.value(), "1800;refresher=uac");
        assert_eq!(SessionExpires::parse("90").map(|s| s.refresher), Some(None));
        assert_eq!(SessionExpires::parse("soon"), None);
    }

    #[test]
    fn the_uas_rules() {
        assert_eq!(negotiate_uas(&invite(""), 90), UasNegotiation::None);
        assert_eq!(
            negotiate_uas(&invite("Session-Expires: 60\r\n"), 90),
            UasNegotiation::TooSmall { min_se: 90 }
        );
        // Compact form, refresher chosen by the UAC.
        assert_eq!(
            negotiate_uas(&invite("x: 120;refresher=uas\r\nSupported: timer\r\n"), 90),
            UasNegotiation::Timed {
                expires: SessionExpires {
                    secs: 120,
                    refresher: Some(Refresher::Uas)
                },
                uac_supports: true
            }
        );
        // No refresher: the UAC refreshes when it supports timers, we do otherwise.
        let pick = |extra: &str| match negotiate_uas(&invite(extra), 90) {
            UasNegotiation::Timed { expires, .. } => expires.refresher,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pick("Session-Expires: 1800\r\nSupported: 100rel, timer\r\n"),
            Some(Refresher::Uac)
        );
        assert_eq!(pick("Session-Expires: 1800\r\n"), Some(Refresher::Uas));
    }

    #[test]
    fn the_refresher_refreshes_at_half_and_the_other_side_expires_before_the_end() {
        let t0 = Instant::now();
        let mut ours = SessionTimer::new(t0, 90, true);
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(45));
        assert_eq!(ours.on_timeout(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            ours.on_timeout(t0 + Duration::from_secs(45)),
            Some(Due::Refresh)
        );
        // Unanswered: the session expires at 90 − 30 s like any other.
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(60));
        assert_eq!(ours.on_timeout(t0 + Duration::from_secs(59)), None);
        ours.refreshed(t0 + Duration::from_secs(46), 90, true);
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(91));

        let mut theirs = SessionTimer::new(t0, 1800, false);
        assert_eq!(theirs.deadline(), t0 + Duration::from_secs(1800 - 32));
        assert_eq!(
            theirs.on_timeout(t0 + Duration::from_secs(1800 - 32)),
            Some(Due::Expired)
        );
    }
}
