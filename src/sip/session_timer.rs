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

/// The longest interval we keep (RFC 4028 §9 lets the UAS lower it): a day. A larger value
/// from a peer is lowered, never trusted into clock arithmetic.
pub const MAX_SESSION_SECS: u64 = 86_400;

/// A timed session's terms from our side of the dialog with the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub secs: u64,
    /// We send the refreshes.
    pub we_refresh: bool,
    /// The peer's last request said `Supported: timer` (so our 2xx may `Require` it).
    pub peer_supports: bool,
}

impl Terms {
    /// `Session-Expires` in our 2xx to the peer's request (the peer is the UAC).
    pub fn answer_value(&self) -> String {
        self.value(if self.we_refresh {
            Refresher::Uas
        } else {
            Refresher::Uac
        })
    }

    /// `Session-Expires` in our own refresh (we are the UAC).
    pub fn request_value(&self) -> String {
        self.value(if self.we_refresh {
            Refresher::Uac
        } else {
            Refresher::Uas
        })
    }

    fn value(&self, refresher: Refresher) -> String {
        SessionExpires {
            secs: self.secs,
            refresher: Some(refresher),
        }
        .value()
    }

    /// The terms after the peer's 2xx to our refresh (§7.2): its interval and refresher, or
    /// ours where it says nothing.
    pub fn after_our_refresh(self, answer: Option<SessionExpires>) -> Terms {
        let Some(se) = answer else {
            return self;
        };
        Terms {
            secs: se.secs.clamp(1, MAX_SESSION_SECS),
            we_refresh: se
                .refresher
                .map_or(self.we_refresh, |r| r == Refresher::Uac),
            peer_supports: self.peer_supports,
        }
    }
}

/// What a UAS makes of an INVITE (or a refresh) with our `min_se` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasNegotiation {
    /// No `Session-Expires` (and no session timed before): no timer.
    None,
    /// The interval is too small: 422 with `Min-SE: min_se`.
    TooSmall { min_se: u64 },
    /// The session is timed: echo the terms in the 2xx, with `Require: timer` when the peer
    /// supports timers.
    Timed(Terms),
}

/// The UAS rules of RFC 4028 §9 for a request from the peer; `current` are the terms of a
/// session already timed (a refresh without `Session-Expires` keeps its interval).
pub fn negotiate_uas(req: &Request, min_se: u64, current: Option<Terms>) -> UasNegotiation {
    let peer_supports = supports(req, "timer");
    let se = req
        .headers
        .get(&HeaderName::SessionExpires)
        .and_then(SessionExpires::parse);
    let (secs, asked) = match (se, current) {
        (Some(se), _) => (se.secs, se.refresher),
        (None, Some(t)) => (t.secs, None),
        (None, None) => return UasNegotiation::None,
    };
    if secs < min_se {
        return UasNegotiation::TooSmall { min_se };
    }
    // The UAC's choice; else the UAC when it supports timers, we otherwise (§9). Without
    // support on this request only we can refresh.
    let refresher = match asked {
        Some(r) if peer_supports || r == Refresher::Uas => r,
        _ if peer_supports => Refresher::Uac,
        _ => Refresher::Uas,
    };
    UasNegotiation::Timed(Terms {
        secs: secs.min(MAX_SESSION_SECS),
        we_refresh: refresher == Refresher::Uas,
        peer_supports,
    })
}

/// What is due when the timer's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// We are the refresher: send a refresh now.
    Refresh,
    /// The refresher went silent: end the session (BYE both ways).
    Expired,
}

/// How long after a failed refresh (a 491 glare, a 500) ours is tried again.
pub const REFRESH_RETRY: Duration = Duration::from_secs(2);

/// One timed session, from our side.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    since: Instant,
    /// A refresh of ours is on its way: not sent again until it is answered.
    refreshing: bool,
    /// Not before this, after a failed refresh.
    retry_at: Option<Instant>,
}

impl SessionTimer {
    /// Starts at `now` (the 2xx that set it up).
    pub fn new(now: Instant, terms: Terms) -> SessionTimer {
        SessionTimer {
            interval: Duration::from_secs(terms.secs.clamp(1, MAX_SESSION_SECS)),
            we_refresh: terms.we_refresh,
            since: now,
            refreshing: false,
            retry_at: None,
        }
    }

    /// A refresh succeeded (a 2xx to a re-INVITE or UPDATE either way): the interval restarts
    /// with the terms it negotiated.
    pub fn refreshed(&mut self, now: Instant, terms: Terms) {
        *self = SessionTimer::new(now, terms);
    }

    /// Our refresh failed (or could not be sent yet): it is tried again after
    /// [`REFRESH_RETRY`], while the session lasts.
    pub fn refresh_failed(&mut self, now: Instant) {
        self.refreshing = false;
        self.retry_at = Some(now + REFRESH_RETRY);
    }

    /// When the session ends without a refresh (the refresher's own view included).
    fn expiry(&self) -> Instant {
        let guard = Duration::from_secs(32).min(self.interval / 3);
        self.since + self.interval.saturating_sub(guard)
    }

    fn refresh_due(&self) -> Instant {
        let half = self.since + self.interval / 2;
        self.retry_at.map_or(half, |r| r.max(half))
    }

    /// When something is due next.
    pub fn deadline(&self) -> Instant {
        if self.we_refresh && !self.refreshing {
            self.refresh_due().min(self.expiry())
        } else {
            self.expiry()
        }
    }

    /// What is due at `now`, if anything; a refresh is reported once until answered.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Due> {
        if now >= self.expiry() {
            return Some(Due::Expired);
        }
        if self.we_refresh && !self.refreshing && now >= self.refresh_due() {
            self.refreshing = true;
            return Some(Due::Refresh);
        }
        None
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
        assert_eq!(negotiate_uas(&invite(""), 90, None), UasNegotiation::None);
        assert_eq!(
            negotiate_uas(&invite("Session-Expires: 60\r\n"), 90, None),
            UasNegotiation::TooSmall { min_se: 90 }
        );
        // Compact form, refresher chosen by the UAC.
        let t = |extra: &str, current| match negotiate_uas(&invite(extra), 90, current) {
            UasNegotiation::Timed(t) => t,
            other => panic!("{extra}: {other:?}"),
        };
        let ours = t("x: 120;refresher=uas\r\nSupported: timer\r\n", None);
        assert_eq!(
            ours,
            Terms {
                secs: 120,
                we_refresh: true,
                peer_supports: true
            }
        );
        assert_eq!(ours.answer_value(), "120;refresher=uas");
        assert_eq!(
            ours.request_value(),
            "120;refresher=uac",
            "we are the UAC of our refresh"
        );
        // No refresher: the UAC refreshes when it supports timers, we do otherwise; a UAC
        // that does not support timers cannot be made the refresher.
        let theirs = t(
            "Session-Expires: 1800\r\nSupported: 100rel, timer\r\n",
            None,
        );
        assert!(!theirs.we_refresh);
        assert_eq!(theirs.answer_value(), "1800;refresher=uac");
        assert!(t("Session-Expires: 1800\r\n", None).we_refresh);
        assert!(t("Session-Expires: 1800;refresher=uac\r\n", None).we_refresh);
        // A refresh without Session-Expires keeps the interval.
        assert_eq!(t("Supported: timer\r\n", Some(theirs)).secs, 1800);
        // A huge interval is lowered, never overflowing the clock.
        assert_eq!(
            t("Session-Expires: 18446744073709551615\r\n", None).secs,
            MAX_SESSION_SECS
        );
        // Our refresh's 2xx: `uac` is us.
        let after = theirs.after_our_refresh(SessionExpires::parse("900;refresher=uac"));
        assert_eq!((after.secs, after.we_refresh), (900, true));
        assert_eq!(theirs.after_our_refresh(None), theirs);
    }

    #[test]
    fn the_refresher_refreshes_at_half_and_the_other_side_expires_before_the_end() {
        let t0 = Instant::now();
        let terms = |secs, we_refresh| Terms {
            secs,
            we_refresh,
            peer_supports: true,
        };
        let mut ours = SessionTimer::new(t0, terms(90, true));
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(45));
        assert_eq!(ours.on_timeout(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            ours.on_timeout(t0 + Duration::from_secs(45)),
            Some(Due::Refresh)
        );
        // Unanswered: the session expires at 90 − 30 s like any other.
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(60));
        assert_eq!(ours.on_timeout(t0 + Duration::from_secs(59)), None);
        ours.refreshed(t0 + Duration::from_secs(46), terms(90, true));
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(91));
        // A failed refresh is tried again two seconds later, not before.
        assert_eq!(
            ours.on_timeout(t0 + Duration::from_secs(91)),
            Some(Due::Refresh)
        );
        ours.refresh_failed(t0 + Duration::from_secs(92));
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(94));
        assert_eq!(
            ours.on_timeout(t0 + Duration::from_secs(94)),
            Some(Due::Refresh)
        );

        let mut theirs = SessionTimer::new(t0, terms(1800, false));
        assert_eq!(theirs.deadline(), t0 + Duration::from_secs(1800 - 32));
        assert_eq!(
            theirs.on_timeout(t0 + Duration::from_secs(1800 - 32)),
            Some(Due::Expired)
        );
    }
}
