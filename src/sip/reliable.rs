//! Reliable provisional responses, UAS side (RFC 3262): a trunk that asks for `100rel` gets
//! every 18x with `Require: 100rel` and an `RSeq`, retransmitted until its PRACK arrives.
//!
//! A carrier that sends `Require: 100rel` relies on the 183 carrying early media arriving; on
//! UDP an unreliable 183 can be lost and the caller hears silence until the answer. Sans-IO: the
//! call feeds responses, PRACKs and `now`, and sends what this returns.
//!
//! The rules kept (§3): one unacknowledged reliable provisional at a time (a later one waits;
//! a repeated 180 without a body is not resent); retransmission every T1, doubling, for 64*T1,
//! after which the INVITE is to be refused with a 5xx; a 2xx may not overtake an unacknowledged
//! provisional that carried SDP, so it waits for that PRACK too.

use std::time::{Duration, Instant};

use super::headers::HeaderName;
use super::message::{Request, Response};

/// The option tag.
pub const TAG: &str = "100rel";

/// Does this INVITE let us (Supported) or make us (Require) send 18x reliably?
pub fn requested(invite: &Request) -> bool {
    [HeaderName::Require, HeaderName::Supported]
        .iter()
        .flat_map(|h| invite.headers.get_all(h))
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(TAG))
}

/// A parsed `RAck: response-num CSeq-num Method` (RFC 3262 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RAck {
    pub rseq: u32,
    pub cseq: u32,
}

impl RAck {
    /// The RAck of a PRACK; the method must be INVITE (the only one with provisionals here).
    pub fn of(prack: &Request) -> Option<RAck> {
        let v = prack.headers.get(&HeaderName::Other("RAck".into()))?;
        let mut it = v.split_whitespace();
        let rseq = it.next()?.parse().ok()?;
        let cseq = it.next()?.parse().ok()?;
        let method = it.next()?;
        (method.eq_ignore_ascii_case("INVITE") && it.next().is_none())
            .then_some(RAck { rseq, cseq })
    }
}

/// What a PRACK did.
#[derive(Debug, PartialEq, Eq)]
pub enum Prack {
    /// It acknowledged the outstanding provisional: answer it 200, then send `next` (a
    /// provisional that waited) and, if the call held one back, its 2xx.
    Acked { next: Option<Response> },
    /// It matches nothing outstanding (RFC 3262 §3: 481).
    NoMatch,
}

/// What a timeout asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Retransmit(Response),
    /// 64*T1 without a PRACK: refuse the INVITE with a 5xx.
    GiveUp,
}

struct Outstanding {
    resp: Response,
    rseq: u32,
    has_sdp: bool,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// The reliable provisionals of one INVITE server transaction.
pub struct Reliable {
    t1: Duration,
    invite_cseq: u32,
    next_rseq: u32,
    outstanding: Option<Outstanding>,
    waiting: Option<Response>,
    /// Statuses already delivered without a body (a second 180 says nothing new).
    delivered_bare: Vec<u16>,
}

impl Reliable {
    /// `first_rseq` should be random (§3: between 1 and 2**31 - 1).
    pub fn new(t1: Duration, invite_cseq: u32, first_rseq: u32) -> Reliable {
        Reliable {
            t1,
            invite_cseq,
            next_rseq: first_rseq.clamp(1, (1 << 31) - 1),
            outstanding: None,
            waiting: None,
            delivered_bare: Vec::new(),
        }
    }

    /// A provisional (101–199) for the caller: returns it made reliable to send now, or `None`
    /// when it waits for (or, a bodiless repeat, is covered by) an earlier one.
    pub fn provisional(&mut self, now: Instant, resp: Response) -> Option<Response> {
        let bare = resp.body.is_empty();
        if bare && self.delivered_bare.contains(&resp.status) {
            return None;
        }
        if bare
            && self
                .outstanding
                .as_ref()
                .is_some_and(|o| o.resp.status == resp.status && !o.has_sdp)
        {
            return None;
        }
        if self.outstanding.is_some() {
            // The latest news replaces any waiting one, except that early media (a body) is
            // never replaced by a bodiless provisional.
            if !bare || self.waiting.as_ref().is_none_or(|w| w.body.is_empty()) {
                self.waiting = Some(resp);
            }
            return None;
        }
        Some(self.make_reliable(now, resp))
    }

    fn make_reliable(&mut self, now: Instant, mut resp: Response) -> Response {
        let rseq = self.next_rseq;
        self.next_rseq = self.next_rseq.wrapping_add(1).max(1);
        resp.headers.push(HeaderName::Require, TAG);
        resp.headers
            .push(HeaderName::Other("RSeq".into()), rseq.to_string());
        self.outstanding = Some(Outstanding {
            has_sdp: !resp.body.is_empty(),
            resp: resp.clone(),
            rseq,
            next: now + self.t1,
            interval: self.t1,
            give_up: now + self.t1 * 64,
        });
        resp
    }

    /// A PRACK arrived on the INVITE's dialog.
    pub fn prack(&mut self, now: Instant, rack: RAck) -> Prack {
        let matches = self
            .outstanding
            .as_ref()
            .is_some_and(|o| o.rseq == rack.rseq && rack.cseq == self.invite_cseq);
        if !matches {
            return Prack::NoMatch;
        }
        if let Some(o) = self.outstanding.take() {
            if o.resp.body.is_empty() {
                self.delivered_bare.push(o.resp.status);
            }
        }
        let next = self.waiting.take().map(|w| self.make_reliable(now, w));
        Prack::Acked { next }
    }

    /// A 2xx must wait: an unacknowledged provisional carried SDP (§3), or one that does waits
    /// its turn behind the outstanding one.
    pub fn holds_2xx(&self) -> bool {
        self.outstanding.as_ref().is_some_and(|o| o.has_sdp)
            || self.waiting.as_ref().is_some_and(|w| !w.body.is_empty())
    }

    /// The INVITE got its final response: nothing more is retransmitted or sent.
    pub fn finish(&mut self) {
        self.outstanding = None;
        self.waiting = None;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.next.min(o.give_up))
    }

    pub fn on_timeout(&mut self, now: Instant) -> Option<Due> {
        let o = self.outstanding.as_mut()?;
        if now >= o.give_up {
            self.finish();
            return Some(Due::GiveUp);
        }
        if now < o.next {
            return None;
        }
        o.interval *= 2;
        o.next = now + o.interval;
        Some(Due::Retransmit(o.resp.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    const INVITE: &[u8] = b"INVITE sip:100@10.0.0.9 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n\
        From: <sip:+15551230001@10.0.0.1>;tag=c\r\n\
        To: <sip:100@10.0.0.9>\r\n\
        Call-ID: rel-1\r\n\
        CSeq: 7 INVITE\r\n\
        Supported: timer, 100rel\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match Message::parse(INVITE).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn prack(rack: &str) -> Request {
        let raw = format!(
            "PRACK sip:100@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp\r\n\
             From: <sip:+15551230001@10.0.0.1>;tag=c\r\nTo: <sip:100@10.0.0.9>;tag=s\r\n\
             Call-ID: rel-1\r\nCSeq: 8 PRACK\r\nRAck: {rack}\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn rseq(r: &Response) -> u32 {
        r.headers
            .get(&HeaderName::Other("RSeq".into()))
            .unwrap()
            .parse()
            .unwrap()
    }

    const T1: Duration = Duration::from_millis(500);

    #[test]
    fn supported_or_required_asks_for_it() {
        assert!(requested(&invite()));
        let plain =
            String::from_utf8_lossy(INVITE).replace("Supported: timer, 100rel", "Require: 100rel");
        let Message::Request(r) = Message::parse(plain.as_bytes()).unwrap() else {
            unreachable!()
        };
        assert!(requested(&r));
        let none = String::from_utf8_lossy(INVITE).replace(", 100rel", "");
        let Message::Request(r) = Message::parse(none.as_bytes()).unwrap() else {
            unreachable!()
        };
        assert!(!requested(&r));
    }

    #[test]
    fn rack_parses_and_refuses_other_methods() {
        assert_eq!(
            RAck::of(&prack("776656 7 INVITE")),
            Some(RAck {
                rseq: 776656,
                cseq: 7
            })
        );
        assert_eq!(RAck::of(&prack("1 7 BYE")), None);
        assert_eq!(RAck::of(&prack("x 7 INVITE")), None);
        assert_eq!(RAck::of(&prack("1 7")), None);
    }

    #[test]
    fn retransmitted_at_t1_doubling_until_the_prack() {
        let t0 = Instant::now();
        let mut rel = Reliable::new(T1, 7, 100);
        let inv = invite();
        let r = rel.provisional(t0, inv.response(180, Some("s"))).unwrap();
        assert_eq!(r.headers.get(&HeaderName::Require), Some("100rel"));
        assert_eq!(rseq(&r), 100);
        assert_eq!(rel.poll_timeout(), Some(t0 + T1));
        assert_eq!(rel.on_timeout(t0 + T1 / 2), None);
        assert!(matches!(rel.on_timeout(t0 + T1), Some(Due::Retransmit(x)) if rseq(&x) == 100));
        assert_eq!(rel.poll_timeout(), Some(t0 + T1 * 3));
        assert!(matches!(
            rel.on_timeout(t0 + T1 * 3),
            Some(Due::Retransmit(_))
        ));
        assert_eq!(rel.poll_timeout(), Some(t0 + T1 * 7));
        // A wrong RSeq or CSeq does not acknowledge it.
        assert_eq!(rel.prack(t0, RAck { rseq: 99, cseq: 7 }), Prack::NoMatch);
        assert_eq!(rel.prack(t0, RAck { rseq: 100, cseq: 6 }), Prack::NoMatch);
        assert_eq!(
            rel.prack(t0, RAck { rseq: 100, cseq: 7 }),
            Prack::Acked { next: None }
        );
        assert_eq!(rel.poll_timeout(), None);
        // The same PRACK again matches nothing.
        assert_eq!(rel.prack(t0, RAck { rseq: 100, cseq: 7 }), Prack::NoMatch);
        // A second bare 180 adds nothing; a 183 with early media goes out with the next RSeq.
        assert!(rel.provisional(t0, inv.response(180, Some("s"))).is_none());
        let early = inv
            .response(183, Some("s"))
            .with_body("application/sdp", b"v=0\r\n".to_vec());
        assert_eq!(rseq(&rel.provisional(t0, early).unwrap()), 101);
    }

    #[test]
    fn gives_up_after_64_t1() {
        let t0 = Instant::now();
        let mut rel = Reliable::new(T1, 7, 1);
        rel.provisional(t0, invite().response(180, Some("s")))
            .unwrap();
        let mut sent = 0;
        let now = loop {
            let now = rel.poll_timeout().unwrap();
            match rel.on_timeout(now) {
                Some(Due::Retransmit(_)) => sent += 1,
                Some(Due::GiveUp) => break now,
                None => {}
            }
        };
        assert_eq!(now, t0 + T1 * 64);
        assert_eq!(sent, 6, "at 1, 3, 7, 15, 31 and 63 T1");
        assert_eq!(rel.poll_timeout(), None);
    }

    #[test]
    fn one_outstanding_at_a_time_and_early_media_holds_the_2xx() {
        let t0 = Instant::now();
        let mut rel = Reliable::new(T1, 7, 5);
        let inv = invite();
        rel.provisional(t0, inv.response(180, Some("s"))).unwrap();
        assert!(!rel.holds_2xx(), "a bodiless 180 does not hold the answer");
        let early = inv
            .response(183, Some("s"))
            .with_body("application/sdp", b"v=0\r\n".to_vec());
        assert!(
            rel.provisional(t0, early).is_none(),
            "waits for the 180's PRACK"
        );
        // A later bare 180 does not push the early media out of the queue.
        assert!(rel.provisional(t0, inv.response(180, Some("s"))).is_none());
        assert!(rel.holds_2xx(), "the waiting 183 carries SDP");
        let Prack::Acked { next: Some(next) } = rel.prack(t0, RAck { rseq: 5, cseq: 7 }) else {
            panic!("the 183 goes out on the PRACK")
        };
        assert_eq!((next.status, rseq(&next)), (183, 6));
        assert!(rel.holds_2xx());
        assert_eq!(
            rel.prack(t0, RAck { rseq: 6, cseq: 7 }),
            Prack::Acked { next: None }
        );
        assert!(!rel.holds_2xx());
    }
}
