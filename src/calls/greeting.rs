//! A voice greeting as a sans-IO machine: one outbound call through the gateway to a
//! customer that plays a recording once the customer answers and hangs up when it is over.
//!
//! The call leg is the same UAC leg an attended transfer rings its target with
//! ([`ConsultLeg`]: the gateway's digest challenge, CANCEL on no answer, the customer's BYE
//! and refreshes); this adds what a greeting needs around it: start the recording on answer,
//! hang up when the media engine says it has been played (or, should that word never come,
//! at its length and a margin), and one [`Greeted`] result. The task in
//! [`super::placing`] does the I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::info;

use super::consult::{ConsultEvent, ConsultLeg, ConsultOutput, ConsultStart};
use crate::media::relay::RemoteMedia;
use crate::sip::message::Message;
use crate::sip::peer::Peer;

/// How long past the recording's length a greeting may stay up when the media engine's
/// "played" never arrives (a stalled engine must not keep a customer on the line).
const MARGIN: Duration = Duration::from_secs(5);

/// How a greeting call ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Greeted {
    /// The customer answered. `heard_ms` is how long the recording played before the call
    /// ended; `hung_up_early` when the customer hung up before its end.
    Answered { heard_ms: u64, hung_up_early: bool },
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy { status: u16 },
    /// Nobody answered in the ring time (our CANCEL, 408), or the network says the customer
    /// is not reachable now (480, 487).
    NoAnswer { status: u16 },
    /// Any other refusal (404, 403, 484, 488, 5xx).
    Failed { status: u16 },
}

impl Greeted {
    fn refused(status: u16) -> Greeted {
        match status {
            486 | 600 => Greeted::Busy { status },
            408 | 480 | 487 => Greeted::NoAnswer { status },
            _ => Greeted::Failed { status },
        }
    }
}

/// What the greeting asks of its edge, in order.
#[derive(Debug)]
pub(crate) enum GreetingOutput {
    Transmit {
        peer: Peer,
        bytes: Vec<u8>,
    },
    /// Where the customer's audio goes (and in which codec).
    Remote(RemoteMedia),
    /// Start playing the recording to the customer, once.
    Play,
    /// The result; the media can stop. The machine may linger to finish its transactions.
    Done(Greeted),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    Playing { since: Instant, deadline: Instant },
    Over,
}

/// One greeting call. See the module documentation.
pub(crate) struct Greeting {
    leg: ConsultLeg,
    state: State,
    length: Duration,
    out: VecDeque<GreetingOutput>,
}

impl Greeting {
    /// Sends the INVITE; `length` is the recording's.
    pub fn start(now: Instant, start: ConsultStart, length: Duration) -> Greeting {
        let mut g = Greeting {
            leg: ConsultLeg::start(now, start),
            state: State::Ringing,
            length,
            out: VecDeque::new(),
        };
        g.drain(now);
        g
    }

    pub fn call_id(&self) -> &str {
        self.leg.call_id()
    }

    pub fn poll_output(&mut self) -> Option<GreetingOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = match self.state {
            State::Playing { deadline, .. } => Some(deadline),
            _ => None,
        };
        self.leg.poll_timeout().into_iter().chain(deadline).min()
    }

    /// The result is out and the leg has nothing left to absorb.
    /// The result is out and nothing sent waits for an answer: a shutdown may exit.
    pub fn settled(&self) -> bool {
        self.state == State::Over && self.leg.settled()
    }

    pub fn is_done(&self, now: Instant) -> bool {
        self.state == State::Over && self.leg.is_done(now)
    }

    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        self.leg.handle_message(now, msg, peer);
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.leg.handle_timeout(now);
        self.drain(now);
        if let State::Playing { deadline, .. } = self.state {
            if now >= deadline {
                info!("greeting: the recording's end was not reported; hanging up");
                self.hang_up(now, false);
            }
        }
    }

    /// The media engine played the whole recording: the greeting hangs up.
    pub fn played(&mut self, now: Instant) {
        if matches!(self.state, State::Playing { .. }) {
            self.hang_up(now, false);
        }
    }

    /// Ends the call now from our side (CANCEL or BYE), as when the service stops.
    pub fn abort(&mut self, now: Instant) {
        match self.state {
            State::Ringing => {
                self.leg.end(now);
                self.state = State::Over;
                self.out
                    .push_back(GreetingOutput::Done(Greeted::NoAnswer { status: 487 }));
                self.drain(now);
            }
            State::Playing { .. } => self.hang_up(now, false),
            State::Over => {}
        }
    }

    fn hang_up(&mut self, now: Instant, early: bool) {
        let State::Playing { since, .. } = self.state else {
            return;
        };
        self.leg.end(now);
        self.finish_answered(now, since, early);
        self.drain(now);
    }

    fn finish_answered(&mut self, now: Instant, since: Instant, hung_up_early: bool) {
        let heard = now.saturating_duration_since(since).min(self.length);
        self.state = State::Over;
        self.out.push_back(GreetingOutput::Done(Greeted::Answered {
            heard_ms: heard.as_millis() as u64,
            hung_up_early,
        }));
    }

    fn drain(&mut self, now: Instant) {
        while let Some(o) = self.leg.poll_output() {
            match o {
                ConsultOutput::Transmit { peer, bytes } => {
                    self.out.push_back(GreetingOutput::Transmit { peer, bytes })
                }
                ConsultOutput::Event(ev) => self.on_event(now, ev),
            }
        }
        // However the leg ended before an answer (a BYE overtaking a lost 200, a refusal the
        // leg swallowed), the greeting has a result: no caller waits for one forever.
        if self.state == State::Ringing && self.leg.is_ended() {
            info!("greeting: the call ended before it was answered");
            self.state = State::Over;
            self.out
                .push_back(GreetingOutput::Done(Greeted::NoAnswer { status: 487 }));
        }
    }

    fn on_event(&mut self, now: Instant, ev: ConsultEvent) {
        match ev {
            ConsultEvent::Ringing => {}
            ConsultEvent::Media(r) => self.out.push_back(GreetingOutput::Remote(r)),
            ConsultEvent::Answered if self.state == State::Ringing => {
                info!("greeting: answered; playing the recording");
                self.state = State::Playing {
                    since: now,
                    deadline: now + self.length + MARGIN,
                };
                self.out.push_back(GreetingOutput::Play);
            }
            ConsultEvent::Answered => {}
            ConsultEvent::Failed(status) if self.state == State::Ringing => {
                self.state = State::Over;
                self.out
                    .push_back(GreetingOutput::Done(Greeted::refused(status)));
            }
            ConsultEvent::Failed(_) => {}
            ConsultEvent::HungUp => {
                if let State::Playing { since, .. } = self.state {
                    let early = now.saturating_duration_since(since) < self.length;
                    info!(early, "greeting: the customer hung up");
                    self.finish_answered(now, since, early);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::dialog::{Dialog, LocalContact};
    use crate::calls::outbound::Gateway;
    use crate::sip::headers::NameAddr;
    use crate::sip::message::{Method, Request, Response};
    use crate::sip::peer::Transport;
    use crate::sip::sdp::{Codec, LocalMedia};
    use crate::sip::transaction::TimerConfig;
    use crate::sip::Uri;

    fn gw_peer() -> Peer {
        Peer {
            addr: "127.0.0.1:5090".parse().expect("addr"),
            transport: Transport::Udp,
        }
    }

    fn start(now: Instant) -> Greeting {
        let uri = Uri::parse("sip:+12015550123@127.0.0.1:5090").expect("uri");
        let mut from = NameAddr::new(Uri::sip(Some("+12015550100"), "127.0.0.1", None));
        from.set_param("tag", Some("g1"));
        let dialog = Dialog {
            call_id: "greet-1@127.0.0.1".into(),
            local: from,
            remote: NameAddr::new(uri.clone()),
            remote_target: uri.clone(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            peer: gw_peer(),
            secure: false,
        };
        let gateway = Gateway {
            number: "+12015550123".into(),
            uri,
            peer: gw_peer(),
            credentials: Some(("acct".into(), "gwpass".into())),
            caller_id: "+12015550100".into(),
            ring_timeout: Duration::from_secs(30),
        };
        Greeting::start(
            now,
            ConsultStart {
                me: LocalContact {
                    host: "127.0.0.1".into(),
                    port: 5060,
                    tls_port: None,
                },
                timers: TimerConfig::default(),
                codec: Codec::Pcmu,
                dialog,
                local: LocalMedia {
                    addr: "127.0.0.1".parse().expect("ip"),
                    port: 40000,
                    session_id: 1,
                    session_version: 1,
                    username: "screenpop".into(),
                    srtp: None,
                },
                gateway: Some(gateway),
                headers: Vec::new(),
                ring_timeout: Duration::from_secs(3),
            },
            Duration::from_secs(2),
        )
    }

    /// The requests sent so far (and what else came out, for the assertions).
    fn outputs(g: &mut Greeting) -> (Vec<Request>, Vec<GreetingOutput>) {
        let (mut sent, mut other) = (Vec::new(), Vec::new());
        while let Some(o) = g.poll_output() {
            match o {
                GreetingOutput::Transmit { bytes, .. } => {
                    if let Ok(Message::Request(r)) = Message::parse(&bytes) {
                        sent.push(r);
                    }
                }
                o => other.push(o),
            }
        }
        (sent, other)
    }

    fn answer(inv: &Request) -> Response {
        let sdp = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let mut r = inv.response(200, Some("gw"));
        r.headers.push(
            crate::sip::headers::HeaderName::Contact,
            "<sip:gw@127.0.0.1:5090>",
        );
        r.with_body("application/sdp", sdp.as_bytes().to_vec())
    }

    /// The gateway's BYE in the dialog of our INVITE `inv`, as bytes on the wire parse.
    fn gateway_bye(inv: &Request, cseq: u32) -> Message {
        let bye = format!(
            "BYE sip:screenpop@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbye{cseq}\r\n\
             From: <sip:+12015550123@127.0.0.1:5090>;tag=gw\r\nTo: {}\r\nCall-ID: greet-1@127.0.0.1\r\n\
             CSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n",
            inv.headers.get(&crate::sip::headers::HeaderName::From).expect("from")
        );
        Message::parse(bye.as_bytes()).expect("BYE parses")
    }

    fn respond(g: &mut Greeting, now: Instant, r: Response) {
        g.handle_message(now, Message::Response(r), gw_peer());
    }

    #[test]
    fn an_answered_greeting_plays_then_hangs_up_when_played() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        assert_eq!(sent.len(), 1);
        let inv = &sent[0];
        assert_eq!(inv.method, Method::Invite);
        let t1 = t0 + Duration::from_millis(800);
        respond(&mut g, t1, answer(inv));
        let (sent, other) = outputs(&mut g);
        assert!(sent.iter().any(|r| r.method == Method::Ack), "{sent:?}");
        assert!(
            matches!(other[0], GreetingOutput::Remote(r) if r.rtp == Some("127.0.0.1:30000".parse().expect("a")))
        );
        assert!(matches!(other[1], GreetingOutput::Play));
        let t2 = t1 + Duration::from_millis(2000);
        g.played(t2);
        let (sent, other) = outputs(&mut g);
        assert!(sent.iter().any(|r| r.method == Method::Bye), "{sent:?}");
        assert!(matches!(
            other[..],
            [GreetingOutput::Done(Greeted::Answered {
                heard_ms: 2000,
                hung_up_early: false
            })]
        ));
        assert!(!g.is_done(t2), "the BYE is still in flight");
    }

    #[test]
    fn busy_is_busy_and_a_challenge_is_answered_first() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        let mut challenge = sent[0].response(401, Some("gw"));
        challenge.headers.push(
            crate::sip::headers::HeaderName::WwwAuthenticate,
            "Digest realm=\"gateway\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
        );
        respond(&mut g, t0, challenge);
        let (sent, _) = outputs(&mut g);
        let again = sent
            .iter()
            .find(|r| r.method == Method::Invite)
            .expect("the INVITE again");
        assert!(again
            .headers
            .get(&crate::sip::headers::HeaderName::Authorization)
            .is_some_and(|a| a.contains("username=\"acct\"")));
        respond(&mut g, t0, again.response(486, Some("gw2")));
        let (_, other) = outputs(&mut g);
        assert!(matches!(
            other[..],
            [GreetingOutput::Done(Greeted::Busy { status: 486 })]
        ));
    }

    #[test]
    fn nobody_answering_is_cancelled_at_the_ring_time() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        respond(&mut g, t0, sent[0].response(180, Some("gw")));
        outputs(&mut g);
        let t3 = t0 + Duration::from_secs(3);
        assert!(g.poll_timeout().is_some_and(|t| t <= t3));
        g.handle_timeout(t3);
        let (sent, other) = outputs(&mut g);
        assert!(sent.iter().any(|r| r.method == Method::Cancel), "{sent:?}");
        assert!(matches!(
            other[..],
            [GreetingOutput::Done(Greeted::NoAnswer { status: 408 })]
        ));
    }

    #[test]
    fn a_customer_who_hangs_up_mid_way_heard_part_of_it() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        respond(&mut g, t0, answer(&sent[0]));
        outputs(&mut g);
        let t1 = t0 + Duration::from_millis(500);
        g.handle_message(t1, gateway_bye(&sent[0], 1), gw_peer());
        let (_, other) = outputs(&mut g);
        assert!(matches!(
            other[..],
            [GreetingOutput::Done(Greeted::Answered {
                heard_ms: 500,
                hung_up_early: true
            })]
        ));
    }

    #[test]
    fn a_bye_before_the_answer_ends_the_greeting_as_not_answered() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        respond(&mut g, t0, sent[0].response(180, Some("gw")));
        outputs(&mut g);
        // The 200 was lost; the gateway gave up waiting for our ACK and hung up.
        g.handle_message(t0, gateway_bye(&sent[0], 2), gw_peer());
        let (_, other) = outputs(&mut g);
        assert!(
            matches!(other[..], [GreetingOutput::Done(Greeted::NoAnswer { .. })]),
            "{other:?}"
        );
        // And it finishes, whatever comes late.
        let late = t0 + Duration::from_secs(60);
        g.handle_timeout(late);
        assert!(g.is_done(late));
    }

    #[test]
    fn a_greeting_whose_end_is_never_reported_hangs_up_after_its_length_and_margin() {
        let t0 = Instant::now();
        let mut g = start(t0);
        let (sent, _) = outputs(&mut g);
        respond(&mut g, t0, answer(&sent[0]));
        outputs(&mut g);
        let late = t0 + Duration::from_secs(2) + MARGIN;
        assert_eq!(g.poll_timeout(), Some(late));
        g.handle_timeout(late);
        let (sent, other) = outputs(&mut g);
        assert!(sent.iter().any(|r| r.method == Method::Bye));
        assert!(matches!(
            other[..],
            [GreetingOutput::Done(Greeted::Answered {
                heard_ms: 2000,
                ..
            })]
        ));
    }
}
