//! SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" states).
//!
//! Four sans-IO state machines: [`ClientTransaction`] and [`ServerTransaction`], each in an
//! INVITE and a non-INVITE flavour. They are fed messages and `now`, never read a clock, and say
//! what to transmit ([`TxOutput::Transmit`]), what to pass up to the transaction user, and when
//! they next need to be woken ([`ClientTransaction::poll_timeout`]). Retransmission timers only
//! run on unreliable transports (§17.1.1.2, §17.2.1).
//!
//! Timer names follow RFC 3261 Table 4: A/B/D client INVITE, E/F/K client non-INVITE,
//! G/H/I server INVITE, J server non-INVITE; L and M from RFC 6026 §8.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::headers::{HeaderName, Via, MAGIC_COOKIE};
use super::message::{Message, Method, Request, Response};
use super::peer::Peer;

/// Timer base values (RFC 3261 §17.1.1.1).
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    pub(crate) fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes to the transaction's peer.
    Transmit(Vec<u8>),
    /// A response for the transaction user (client transactions).
    Response(Response),
    /// An ACK for a 2xx (server INVITE in Accepted) or a CANCEL-free request for the TU.
    Request(Request),
    /// Timer B/F (client) or H/L-without-ACK (server): the peer never answered.
    Timeout,
    /// The transaction is over and can be dropped.
    Terminated,
}

/// Client transaction state (RFC 3261 Figures 5 and 6, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    Accepted,
    Completed,
    Terminated,
}

/// A client transaction: one request we sent and its responses.
#[derive(Debug)]
pub struct ClientTransaction {
    pub request: Request,
    pub branch: String,
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    bytes: Vec<u8>,
    ack: Option<Vec<u8>>,
    /// Timer A / E: next retransmission and current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B / F / D / K / M: when the current state ends.
    deadline: Option<Instant>,
    out: VecDeque<TxOutput>,
}

impl ClientTransaction {
    /// Starts a transaction: the request is transmitted at once. The request's top Via must
    /// carry the branch (the owner builds it with [`new_branch`]).
    pub fn new(now: Instant, request: Request, reliable: bool, timers: TimerConfig) -> Self {
        let branch = request
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let bytes = Message::Request(request.clone()).to_bytes();
        let invite = request.method == Method::Invite;
        let mut tx = ClientTransaction {
            request,
            branch,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            reliable,
            timers,
            bytes: bytes.clone(),
            ack: None,
            retransmit: (!reliable).then(|| (now + timers.t1, timers.t1)),
            deadline: Some(now + timers.t64()),
            out: VecDeque::new(),
        };
        tx.out.push_back(TxOutput::Transmit(bytes));
        tx
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether the final response is still awaited: a shutdown waits for its BYEs and
    /// CANCELs to be answered.
    pub fn awaits_final(&self) -> bool {
        matches!(
            self.state,
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding
        )
    }

    pub fn is_invite(&self) -> bool {
        self.request.method == Method::Invite
    }

    /// What is left of this transaction once its call has gone (`None` while a response is
    /// still awaited). An INVITE refused with an error ACKs that error's repeats until Timer D
    /// (§17.1.1.2): a 487 after every CANCEL, a 401 before every authenticated retry. That is
    /// a few hundred bytes for the dispatcher to hold, where keeping the call's task for it
    /// held the whole call for 32 s. Anything else needs nothing: a completed non-INVITE only
    /// absorbs repeats, and a 2xx's repeats are the dialog's, which has ended (BYE).
    pub fn remains(&self) -> Option<Remains> {
        match self.state {
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding => None,
            ClientState::Completed if self.is_invite() => Some(match (&self.ack, self.deadline) {
                (Some(ack), Some(until)) => Remains::Reack {
                    branch: self.branch.clone(),
                    ack: ack.clone(),
                    until,
                },
                _ => Remains::Nothing,
            }),
            _ => Some(Remains::Nothing),
        }
    }

    /// True if `resp` belongs to this transaction (RFC 3261 §17.1.3: branch and CSeq method).
    pub fn matches(&self, resp: &Response) -> bool {
        let Some(via) = resp.top_via() else {
            return false;
        };
        let Some(cseq) = resp.cseq() else {
            return false;
        };
        via.branch() == Some(self.branch.as_str()) && cseq.method == self.request.method
    }

    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        let invite = self.is_invite();
        match (self.state, resp.status) {
            (ClientState::Calling | ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                if invite {
                    // Timers A and B stop: a ringing phone may ring for minutes, and the TU's
                    // own no-answer timer CANCELs it (RFC 3261 §17.1.1.2).
                    self.retransmit = None;
                    self.deadline = None;
                } else if let Some((_, _)) = self.retransmit {
                    // Timer E continues at T2 in Proceeding (§17.1.2.2).
                    self.retransmit = Some((now + self.timers.t2, self.timers.t2));
                }
                self.out.push_back(TxOutput::Response(resp));
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) if invite => {
                self.state = ClientState::Accepted;
                self.retransmit = None;
                self.deadline = Some(now + self.timers.t64()); // Timer M
                self.out.push_back(TxOutput::Response(resp));
            }
            (ClientState::Accepted, 200..=299) => {
                // 2xx retransmissions go to the TU, which re-sends its ACK (RFC 6026 §7.2).
                self.out.push_back(TxOutput::Response(resp));
            }
            (ClientState::Calling | ClientState::Proceeding, 300..=699) if invite => {
                let ack = build_ack(&self.request, &resp);
                self.out.push_back(TxOutput::Transmit(ack.clone()));
                self.ack = Some(ack);
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.deadline = Some(if self.reliable {
                    now
                } else {
                    now + Duration::from_secs(32) // Timer D
                });
                self.out.push_back(TxOutput::Response(resp));
            }
            (ClientState::Completed, 300..=699) if invite => {
                if let Some(ack) = &self.ack {
                    self.out.push_back(TxOutput::Transmit(ack.clone()));
                }
            }
            (ClientState::Trying | ClientState::Proceeding, 200..=699) if !invite => {
                self.state = ClientState::Completed;
                self.retransmit = None;
                self.deadline = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.t4 // Timer K
                });
                self.out.push_back(TxOutput::Response(resp));
            }
            _ => {} // retransmissions in Completed/Terminated are absorbed
        }
        self.handle_timeout(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ClientState::Terminated {
            return;
        }
        if let Some(deadline) = self.deadline {
            if now >= deadline {
                match self.state {
                    ClientState::Calling | ClientState::Trying => {
                        self.out.push_back(TxOutput::Timeout)
                    }
                    ClientState::Proceeding if !self.is_invite() => {
                        self.out.push_back(TxOutput::Timeout)
                    }
                    _ => {}
                }
                self.terminate();
                return;
            }
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                self.out.push_back(TxOutput::Transmit(self.bytes.clone()));
                let next = if self.is_invite() {
                    interval * 2
                } else {
                    (interval * 2).min(self.timers.t2)
                };
                self.retransmit = Some((now + next, next));
            }
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.deadline = None;
        self.out.push_back(TxOutput::Terminated);
    }

    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Builds the ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, Call-ID,
/// From, CSeq number and top Via as the INVITE, To from the response, Route copied.
pub(crate) fn build_ack(invite: &Request, resp: &Response) -> Vec<u8> {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(v) = invite.headers.get(&HeaderName::Via) {
        ack.headers.push(HeaderName::Via, v);
    }
    for r in invite.headers.get_all(&HeaderName::Route) {
        ack.headers.push(HeaderName::Route, r);
    }
    ack.headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = resp.headers.get(&HeaderName::To) {
        ack.headers.push(HeaderName::To, to);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    ack.headers.push(HeaderName::CSeq, format!("{seq} ACK"));
    Message::Request(ack).to_bytes()
}

/// Server transaction state (RFC 3261 Figures 7 and 8, RFC 6026 Figure 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// What a finished server transaction leaves behind when its call goes (see
/// [`ServerTransaction::remains`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remains {
    /// Nothing to keep: only ACKs can still come, and they are never answered.
    Nothing,
    /// Until `until`, a retransmission of the request keyed `key` gets `response` again
    /// (`None`: it is absorbed).
    Replay {
        key: ServerKey,
        response: Option<Vec<u8>>,
        until: Instant,
    },
    /// Until `until`, a repeat of the error response to our INVITE on `branch` gets `ack`
    /// again (a client INVITE transaction in Completed, Timer D: the peer did not get our ACK).
    Reack {
        branch: String,
        ack: Vec<u8>,
        until: Instant,
    },
}

/// What the dispatcher keeps of a call's transactions once its task has gone: each finished
/// server transaction's response to repeat (or an INVITE to absorb) for its peer's
/// retransmissions, and each refused INVITE's ACK to send again for repeats of the refusal.
pub fn remains_of<'a>(
    servers: impl IntoIterator<Item = (&'a ServerTransaction, Peer)>,
    clients: impl IntoIterator<Item = (&'a ClientTransaction, Peer)>,
) -> Vec<(Remains, Peer)> {
    let servers = servers
        .into_iter()
        .filter_map(|(tx, peer)| match tx.remains() {
            Some(r @ Remains::Replay { .. }) => Some((r, peer)),
            _ => None,
        });
    let clients = clients
        .into_iter()
        .filter_map(|(tx, peer)| match tx.remains() {
            Some(r @ Remains::Reack { .. }) => Some((r, peer)),
            _ => None,
        });
    servers.chain(clients).collect()
}

/// Identifies a server transaction (RFC 3261 §17.2.3), with the RFC 2543 fallback for
/// branches without the magic cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKey {
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: Method,
    },
    Rfc2543 {
        call_id: String,
        cseq: u32,
        from_tag: String,
        via: String,
        method: Method,
    },
}

impl ServerKey {
    /// The key of the transaction `req` belongs to; ACK maps to its INVITE.
    pub fn of(req: &Request) -> Option<ServerKey> {
        let via_raw = req.headers.get(&HeaderName::Via)?;
        let via = Via::parse(via_raw).ok()?;
        let method = match &req.method {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len() => {
                Some(ServerKey::Rfc3261 {
                    branch: b.to_string(),
                    sent_by: format!("{}:{}", via.host, via.port.unwrap_or(5060)),
                    method,
                })
            }
            _ => Some(ServerKey::Rfc2543 {
                call_id: req.call_id()?.to_string(),
                cseq: req.cseq()?.seq,
                from_tag: req.from()?.tag().unwrap_or("").to_string(),
                via: format!("{}:{}", via.host, via.port.unwrap_or(5060)),
                method,
            }),
        }
    }

    /// The key of the INVITE a CANCEL targets (RFC 3261 §9.2).
    pub fn cancelled_invite(cancel: &Request) -> Option<ServerKey> {
        match ServerKey::of(cancel)? {
            ServerKey::Rfc3261 {
                branch, sent_by, ..
            } => Some(ServerKey::Rfc3261 {
                branch,
                sent_by,
                method: Method::Invite,
            }),
            ServerKey::Rfc2543 {
                call_id,
                cseq,
                from_tag,
                via,
                ..
            } => Some(ServerKey::Rfc2543 {
                call_id,
                cseq,
                from_tag,
                via,
                method: Method::Invite,
            }),
        }
    }
}

/// A server transaction: one request we received and our responses to it.
#[derive(Debug)]
pub struct ServerTransaction {
    pub request: Request,
    pub key: ServerKey,
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Vec<u8>>,
    /// Timer G (non-2xx) or the §13.3.1.4 2xx retransmission, with its interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H / I / J / L.
    deadline: Option<Instant>,
    out: VecDeque<TxOutput>,
}

impl ServerTransaction {
    pub fn new(request: Request, key: ServerKey, reliable: bool, timers: TimerConfig) -> Self {
        let invite = request.method == Method::Invite;
        ServerTransaction {
            request,
            key,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            reliable,
            timers,
            last_response: None,
            retransmit: None,
            deadline: None,
            out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// What is left of this transaction for a retransmission of its request once nothing
    /// remains for the TU to do, and until when (`None` while the TU still has a part: it has
    /// not answered, an answer is still being retransmitted, or a 2xx awaits its ACK).
    ///
    /// A completed non-INVITE transaction repeats its final response (§17.2.2, Timer J); an
    /// INVITE whose 2xx was acknowledged absorbs retransmissions of the INVITE (RFC 6026 §7.1,
    /// Timer L), and one whose error response was acknowledged only absorbs ACKs, which are
    /// never answered anyway. That is all the ended call's task would still be kept for.
    pub fn remains(&self) -> Option<Remains> {
        let until = self.deadline?;
        let response = match (self.state, self.is_invite()) {
            (ServerState::Completed, false) => self.last_response.clone(),
            (ServerState::Accepted, true) if self.retransmit.is_none() || self.reliable => None,
            (ServerState::Confirmed, true) => return Some(Remains::Nothing),
            _ => return None,
        };
        Some(Remains::Replay {
            key: self.key.clone(),
            response,
            until,
        })
    }

    /// An INVITE's final error response not yet acknowledged (retransmitted until its ACK):
    /// a shutdown waits for it.
    pub fn awaits_ack(&self) -> bool {
        self.is_invite() && self.state == ServerState::Completed
    }

    fn is_invite(&self) -> bool {
        self.request.method == Method::Invite
    }

    /// The TU responds. Provisional responses can be repeated; the first final response
    /// moves the transaction on and later ones are ignored.
    pub fn respond(&mut self, now: Instant, resp: &Response) {
        let bytes = Message::Response(resp.clone()).to_bytes();
        let invite = self.is_invite();
        match (self.state, resp.status) {
            (ServerState::Trying | ServerState::Proceeding, 100..=199) => {
                self.state = ServerState::Proceeding;
            }
            (ServerState::Trying | ServerState::Proceeding, 200..=299) if invite => {
                // RFC 6026 Accepted; the 2xx is retransmitted until the ACK (RFC 3261 §13.3.1.4).
                self.state = ServerState::Accepted;
                if !self.reliable {
                    self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                }
                self.deadline = Some(now + self.timers.t64()); // Timer L
            }
            (ServerState::Accepted, 200..=299) => {}
            (ServerState::Trying | ServerState::Proceeding, 300..=699) if invite => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.retransmit = Some((now + self.timers.t1, self.timers.t1));
                    // Timer G
                }
                self.deadline = Some(now + self.timers.t64()); // Timer H
            }
            (ServerState::Trying | ServerState::Proceeding, 200..=699) => {
                self.state = ServerState::Completed;
                self.deadline = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.t64() // Timer J
                });
            }
            _ => return,
        }
        self.out.push_back(TxOutput::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        self.handle_timeout(now);
    }

    /// A request matching this transaction arrived again (or the ACK for it).
    pub fn handle_request(&mut self, now: Instant, req: Request) {
        if req.method == Method::Ack {
            match self.state {
                ServerState::Completed => {
                    self.state = ServerState::Confirmed;
                    self.retransmit = None;
                    self.deadline = Some(if self.reliable {
                        now
                    } else {
                        now + self.timers.t4 // Timer I
                    });
                }
                ServerState::Accepted => {
                    // The ACK for our 2xx ends retransmission; it goes to the TU (it may carry
                    // the answer to a delayed offer).
                    let first_ack = self.retransmit.take().is_some() || self.reliable;
                    if first_ack {
                        self.out.push_back(TxOutput::Request(req));
                    }
                }
                _ => {}
            }
        } else if matches!(
            self.state,
            ServerState::Proceeding | ServerState::Completed | ServerState::Accepted
        ) {
            // Retransmitted request: repeat the last response (§17.2.1, §17.2.2); in Accepted
            // the INVITE is absorbed (RFC 6026 §7.1).
            if self.state != ServerState::Accepted {
                if let Some(last) = &self.last_response {
                    self.out.push_back(TxOutput::Transmit(last.clone()));
                }
            }
        }
        self.handle_timeout(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ServerState::Terminated {
            return;
        }
        if let Some(deadline) = self.deadline {
            if now >= deadline {
                let acked = self.state == ServerState::Confirmed
                    || (self.state == ServerState::Accepted && self.retransmit.is_none());
                if matches!(self.state, ServerState::Completed | ServerState::Accepted) && !acked {
                    // Timer H, or no ACK for a 2xx within 64*T1 (§13.3.1.4).
                    if !(self.state == ServerState::Accepted && self.reliable) {
                        self.out.push_back(TxOutput::Timeout);
                    }
                }
                self.state = ServerState::Terminated;
                self.retransmit = None;
                self.deadline = None;
                self.out.push_back(TxOutput::Terminated);
                return;
            }
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at {
                if let Some(last) = &self.last_response {
                    self.out.push_back(TxOutput::Transmit(last.clone()));
                }
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A fresh RFC 3261 branch (magic cookie plus 64 random bits).
pub(crate) fn new_branch() -> String {
    format!("{MAGIC_COOKIE}{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    fn invite() -> Request {
        let mut r = Request::new(Method::Invite, Uri::sip(Some("bob"), "b.example", None));
        r.headers
            .push(HeaderName::Via, "SIP/2.0/UDP a.example;branch=z9hG4bKabc");
        r.headers
            .push(HeaderName::From, "<sip:alice@a.example>;tag=1");
        r.headers.push(HeaderName::To, "<sip:bob@b.example>");
        r.headers.push(HeaderName::CallId, "c1");
        r.headers.push(HeaderName::CSeq, "1 INVITE");
        r
    }

    fn options() -> Request {
        let mut r = invite();
        r.method = Method::Options;
        r.headers.set(HeaderName::CSeq, "2 OPTIONS");
        r
    }

    fn drain_tx(out: &mut dyn FnMut() -> Option<TxOutput>) -> Vec<TxOutput> {
        std::iter::from_fn(out).collect()
    }

    fn transmits(v: &[TxOutput]) -> usize {
        v.iter()
            .filter(|o| matches!(o, TxOutput::Transmit(_)))
            .count()
    }

    #[test]
    fn client_invite_timer_a_doubles_until_b() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut tx = ClientTransaction::new(t0, invite(), false, cfg);
        let mut sent = transmits(&drain_tx(&mut || tx.poll_output()));
        let mut now = t0;
        let mut times = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            now = at;
            tx.handle_timeout(now);
            let out = drain_tx(&mut || tx.poll_output());
            if transmits(&out) > 0 {
                times.push((now - t0).as_millis());
            }
            sent += transmits(&out);
            if out.contains(&TxOutput::Timeout) {
                break;
            }
        }
        // A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(times, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(sent, 7);
        assert_eq!((now - t0).as_secs(), 32);
        assert_eq!(tx.state(), ClientState::Terminated);
    }

    #[test]
    fn client_invite_non2xx_acks_and_absorbs() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(t0, invite(), false, TimerConfig::default());
        drain_tx(&mut || tx.poll_output());
        assert_eq!(tx.remains(), None, "still awaiting an answer");
        let busy = invite().response(486, Some("x"));
        assert!(tx.matches(&busy));
        tx.handle_response(t0, busy.clone());
        let out = drain_tx(&mut || tx.poll_output());
        let ack = out
            .iter()
            .find_map(|o| match o {
                TxOutput::Transmit(b) => Some(b.clone()),
                _ => None,
            })
            .unwrap();
        let Message::Request(ack) = Message::parse(&ack).unwrap() else {
            panic!()
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_eq!(ack.to().unwrap().tag(), Some("x"));
        assert!(out
            .iter()
            .any(|o| matches!(o, TxOutput::Response(r) if r.status == 486)));
        // What an ended call leaves of it: that ACK, for repeats of the 486 until Timer D.
        assert_eq!(
            tx.remains(),
            Some(Remains::Reack {
                branch: "z9hG4bKabc".into(),
                ack: Message::Request(ack.clone()).to_bytes(),
                until: t0 + Duration::from_secs(32),
            })
        );
        // A retransmitted 486 is answered with the same ACK and not passed up again.
        tx.handle_response(t0 + Duration::from_secs(1), busy);
        let out = drain_tx(&mut || tx.poll_output());
        assert_eq!(transmits(&out), 1);
        assert!(!out.iter().any(|o| matches!(o, TxOutput::Response(_))));
        // Timer D ends it after 32 s.
        tx.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(tx.state(), ClientState::Terminated);
        assert_eq!(tx.remains(), Some(Remains::Nothing));
    }

    #[test]
    fn client_invite_2xx_retransmissions_reach_tu() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(t0, invite(), false, TimerConfig::default());
        drain_tx(&mut || tx.poll_output());
        tx.handle_response(t0, invite().response(180, Some("x")));
        tx.handle_response(t0, invite().response(200, Some("x")));
        tx.handle_response(t0, invite().response(200, Some("x")));
        let out = drain_tx(&mut || tx.poll_output());
        let n200 = out
            .iter()
            .filter(|o| matches!(o, TxOutput::Response(r) if r.status == 200))
            .count();
        assert_eq!(n200, 2);
        assert_eq!(transmits(&out), 0, "no ACK from the transaction for 2xx");
        assert_eq!(tx.state(), ClientState::Accepted);
        assert_eq!(
            tx.remains(),
            Some(Remains::Nothing),
            "the dialog ACKs a 2xx"
        );
    }

    #[test]
    fn client_non_invite_timer_e_caps_at_t2() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(t0, options(), false, TimerConfig::default());
        drain_tx(&mut || tx.poll_output());
        let mut times = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            tx.handle_timeout(at);
            let out = drain_tx(&mut || tx.poll_output());
            if transmits(&out) > 0 {
                times.push((at - t0).as_millis());
            }
            if out.contains(&TxOutput::Timeout) {
                break;
            }
        }
        assert_eq!(
            &times[..6],
            &[500, 1500, 3500, 7500, 11500, 15500],
            "E doubles to T2=4s then stays"
        );
    }

    #[test]
    fn reliable_transport_has_no_retransmissions() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(t0, options(), true, TimerConfig::default());
        drain_tx(&mut || tx.poll_output());
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        tx.handle_response(t0, options().response(200, None));
        assert_eq!(
            tx.state(),
            ClientState::Terminated,
            "Timer K is zero on TCP"
        );
    }

    #[test]
    fn server_invite_error_retransmits_until_ack() {
        let t0 = Instant::now();
        let req = invite();
        let key = ServerKey::of(&req).unwrap();
        let mut tx = ServerTransaction::new(req.clone(), key, false, TimerConfig::default());
        tx.respond(t0, &req.response(100, None));
        tx.handle_request(t0, req.clone()); // retransmitted INVITE
        let out = drain_tx(&mut || tx.poll_output());
        assert_eq!(
            transmits(&out),
            2,
            "100 sent, then repeated for the retransmission"
        );
        tx.respond(t0, &req.response(486, Some("t")));
        drain_tx(&mut || tx.poll_output());
        tx.handle_timeout(t0 + Duration::from_millis(500)); // Timer G
        assert_eq!(transmits(&drain_tx(&mut || tx.poll_output())), 1);
        let mut ack = req.clone();
        ack.method = Method::Ack;
        tx.handle_request(t0 + Duration::from_millis(600), ack);
        assert_eq!(tx.state(), ServerState::Confirmed);
        tx.handle_timeout(t0 + Duration::from_millis(1600));
        assert_eq!(transmits(&drain_tx(&mut || tx.poll_output())), 0);
        tx.handle_timeout(t0 + Duration::from_millis(5600)); // Timer I = T4
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn server_invite_timer_h_without_ack() {
        let t0 = Instant::now();
        let req = invite();
        let key = ServerKey::of(&req).unwrap();
        let mut tx = ServerTransaction::new(req.clone(), key, false, TimerConfig::default());
        tx.respond(t0, &req.response(480, Some("t")));
        tx.handle_timeout(t0 + Duration::from_secs(32));
        let out = drain_tx(&mut || tx.poll_output());
        assert!(out.contains(&TxOutput::Timeout));
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn server_invite_2xx_retransmitted_until_ack() {
        let t0 = Instant::now();
        let req = invite();
        let key = ServerKey::of(&req).unwrap();
        let mut tx = ServerTransaction::new(req.clone(), key, false, TimerConfig::default());
        tx.respond(t0, &req.response(200, Some("t")));
        drain_tx(&mut || tx.poll_output());
        tx.handle_timeout(t0 + Duration::from_millis(500));
        tx.handle_timeout(t0 + Duration::from_millis(1500));
        assert_eq!(transmits(&drain_tx(&mut || tx.poll_output())), 2);
        let mut ack = req.clone();
        ack.method = Method::Ack;
        tx.handle_request(t0 + Duration::from_millis(1600), ack.clone());
        let out = drain_tx(&mut || tx.poll_output());
        assert!(out
            .iter()
            .any(|o| matches!(o, TxOutput::Request(r) if r.method == Method::Ack)));
        tx.handle_request(t0 + Duration::from_millis(1700), ack); // duplicate ACK absorbed
        assert!(drain_tx(&mut || tx.poll_output()).is_empty());
        tx.handle_timeout(t0 + Duration::from_secs(40));
        let out = drain_tx(&mut || tx.poll_output());
        assert!(!out.contains(&TxOutput::Timeout));
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn server_non_invite_repeats_final() {
        let t0 = Instant::now();
        let req = options();
        let key = ServerKey::of(&req).unwrap();
        let mut tx = ServerTransaction::new(req.clone(), key, false, TimerConfig::default());
        tx.respond(t0, &req.response(200, Some("t")));
        tx.handle_request(t0 + Duration::from_millis(100), req.clone());
        assert_eq!(transmits(&drain_tx(&mut || tx.poll_output())), 2);
        tx.handle_timeout(t0 + Duration::from_secs(32)); // Timer J
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn keys_match_ack_and_cancel_to_invite() {
        let inv = invite();
        let mut ack = inv.clone();
        ack.method = Method::Ack;
        assert_eq!(ServerKey::of(&inv), ServerKey::of(&ack));
        let mut cancel = inv.clone();
        cancel.method = Method::Cancel;
        assert_ne!(ServerKey::of(&inv), ServerKey::of(&cancel));
        assert_eq!(ServerKey::cancelled_invite(&cancel), ServerKey::of(&inv));
        let mut old = inv.clone();
        old.headers
            .set(HeaderName::Via, "SIP/2.0/UDP iftgw.example.com");
        assert!(matches!(
            ServerKey::of(&old),
            Some(ServerKey::Rfc2543 { .. })
        ));
    }
}
