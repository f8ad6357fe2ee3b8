//! The consultation leg of an attended transfer, as a sans-IO machine: screenpop's INVITE to
//! the target (an agent's phone, or a number through the outbound gateway) while the first
//! agent stays on the call and the caller hears music.
//!
//! It is a UAC leg with a life of its own beside the call's two legs: it rings, answers the
//! gateway's digest challenge, is CANCELled or hung up, answers the target's refreshes and
//! BYE, and tells the [`super::call::Call`] what happened through [`ConsultEvent`]s. When
//! the transfer is completed the call takes its dialog over ([`ConsultLeg::hand_over`]) and
//! it becomes the call's agent leg; when it is cancelled or fails it ends on its own and
//! lingers only to finish its transactions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::call::ALLOW;
use super::dialog::{cancel_of, target_peer, Dialog, LocalContact};
use super::outbound::{challenge_answer, Gateway};
use crate::media::g711::G711;
use crate::media::relay::RemoteMedia;
use crate::sip::headers::HeaderName;
use crate::sip::message::{Message, Method, Request, Response};
use crate::sip::peer::{response_peer, Peer, Transport};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, SessionDescription};
use crate::sip::transaction::{
    remains_of, ClientState, ClientTransaction, Remains, ServerKey, ServerState, ServerTransaction,
    TimerConfig, TxOutput,
};

/// How long an ended consultation keeps absorbing retransmissions, at most.
const LINGER: Duration = Duration::from_secs(40);

/// What happened on the consultation leg, for the call to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsultEvent {
    /// The target's phone rings (or the network plays early media).
    Ringing,
    /// Where the target's audio is (early media, the answer, or a re-INVITE that moved it).
    Media(RemoteMedia),
    /// The target answered: the two agents can talk.
    Answered,
    /// The target did not take the call: refused with this status, or 408 when it did not
    /// answer in time or at all.
    Failed(u16),
    /// The target hung up during the consultation.
    HungUp,
}

/// What the leg asks for, in order.
#[derive(Debug)]
pub(crate) enum ConsultOutput {
    Transmit { peer: Peer, bytes: Vec<u8> },
    Event(ConsultEvent),
}

/// How a consultation leg starts.
pub(crate) struct ConsultStart {
    pub me: LocalContact,
    pub timers: TimerConfig,
    /// The call's codec: the target is offered only it, so audio passes untouched.
    pub codec: Codec,
    /// A fresh dialog towards the target (its own Call-ID and tag).
    pub dialog: Dialog,
    /// Our media on the consultation ports (with an SDES key when the target gets SRTP).
    pub local: LocalMedia,
    /// Set when the target is an outside number: its challenge is answered with these.
    pub gateway: Option<Gateway>,
    /// Extra headers of the INVITE (P-Asserted-Identity, X-Screenpop-Call).
    pub headers: Vec<(HeaderName, String)>,
    pub ring_timeout: Duration,
}

/// What the call takes over when the transfer completes: the answered dialog and its media.
pub(crate) struct Handover {
    pub dialog: Dialog,
    pub local: LocalMedia,
    /// The SDP we sent last (repeated on a refresh).
    pub sdp: Option<SessionDescription>,
    pub dtmf_pt: Option<u8>,
    /// The ACK of its 2xx, sent again should the 2xx come again.
    pub ack: Option<Vec<u8>>,
    /// The target's 2xx (its session timer terms).
    pub answer: Option<Response>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    Up,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Bye,
    Cancel,
}

struct Client {
    tx: ClientTransaction,
    peer: Peer,
    purpose: Purpose,
    provisional: bool,
    cancel_pending: bool,
}

/// One consultation leg. See the module documentation.
pub(crate) struct ConsultLeg {
    me: LocalContact,
    timers: TimerConfig,
    codec: Codec,
    dialog: Dialog,
    local: LocalMedia,
    gateway: Option<Gateway>,
    headers: Vec<(HeaderName, String)>,
    state: State,
    /// Our offer, until an answer settles it.
    offer: Option<SessionDescription>,
    /// The SDP we sent last.
    sdp: Option<SessionDescription>,
    dtmf_pt: Option<u8>,
    ack: Option<Vec<u8>>,
    answer: Option<Response>,
    auth_tries: u32,
    /// An SRTP offer was refused: the target is asked again with plain RTP, once.
    plain_retry: bool,
    /// Our 2xx to an offerless re-INVITE carried an offer: the ACK brings the answer.
    ack_answers: bool,
    ring_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    clients: Vec<Client>,
    servers: Vec<(ServerTransaction, Peer)>,
    out: VecDeque<ConsultOutput>,
}

fn remote_media(a: &sdp::Accepted) -> RemoteMedia {
    RemoteMedia {
        rtp: a.remote_rtp,
        codec: g711(a.codec),
        dtmf_pt: a.dtmf_pt,
        srtp: a.srtp,
    }
}

fn g711(c: Codec) -> G711 {
    match c {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

impl ConsultLeg {
    /// Sends the INVITE to the target.
    pub fn start(now: Instant, s: ConsultStart) -> ConsultLeg {
        let mut leg = ConsultLeg {
            me: s.me,
            timers: s.timers,
            codec: s.codec,
            dialog: s.dialog,
            local: s.local,
            gateway: s.gateway,
            headers: s.headers,
            state: State::Ringing,
            offer: None,
            sdp: None,
            dtmf_pt: None,
            ack: None,
            answer: None,
            auth_tries: 0,
            plain_retry: false,
            ack_answers: false,
            ring_deadline: Some(now + s.ring_timeout),
            linger_until: None,
            clients: Vec::new(),
            servers: Vec::new(),
            out: VecDeque::new(),
        };
        leg.invite(now, None);
        leg.pump(now);
        leg
    }

    pub fn call_id(&self) -> &str {
        &self.dialog.call_id
    }

    /// Over (answered and hung up, refused, cancelled or handed over), whatever it still
    /// absorbs.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Over, and nothing left to absorb.
    /// Ended, and nothing sent waits for an answer: a shutdown may exit.
    pub fn settled(&self) -> bool {
        self.state == State::Ended
            && self.clients.iter().all(|c| !c.tx.awaits_final())
            && self.servers.iter().all(|(s, _)| !s.awaits_ack())
    }

    pub fn is_done(&self, now: Instant) -> bool {
        self.state == State::Ended
            && ((self.clients.is_empty() && self.servers.is_empty())
                || self.linger_until.is_some_and(|l| now >= l))
    }

    /// Over, and what is left of its transactions can be handed to the dispatcher
    /// ([`ConsultLeg::remains`]): the call's task need not stay for it.
    pub fn finished(&self, now: Instant) -> bool {
        self.is_done(now)
            || (self.state == State::Ended
                && self.clients.iter().all(|c| c.tx.remains().is_some())
                && self.servers.iter().all(|(s, _)| s.remains().is_some()))
    }

    /// What the dispatcher keeps of this leg once the call's task has gone.
    pub fn remains(&self) -> Vec<(Remains, Peer)> {
        remains_of(
            self.servers.iter().map(|(s, p)| (s, *p)),
            self.clients.iter().map(|c| (&c.tx, c.peer)),
        )
    }

    pub fn poll_output(&mut self) -> Option<ConsultOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter_map(|c| c.tx.poll_timeout())
            .chain(self.servers.iter().filter_map(|(s, _)| s.poll_timeout()))
            .chain(self.ring_deadline)
            .chain(self.linger_until)
            .min()
    }

    fn event(&mut self, ev: ConsultEvent) {
        self.out.push_back(ConsultOutput::Event(ev));
    }

    fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.out.push_back(ConsultOutput::Transmit { peer, bytes });
    }

    /// Where in-dialog requests go: the first hop of the route set, else the target's address.
    fn peer(&self) -> Peer {
        if self.dialog.route_set.is_empty() {
            return self.dialog.peer;
        }
        target_peer(&self.dialog.next_hop(), self.dialog.peer)
    }

    fn invite(&mut self, now: Instant, auth: Option<(HeaderName, String)>) {
        let offer = sdp::offer(&self.local, &[self.codec], Some(101), Direction::SendRecv);
        let mut inv = self.dialog.request(Method::Invite, &self.me, None);
        inv.headers.push(HeaderName::Allow, ALLOW);
        for (name, value) in &self.headers {
            inv.headers.push(name.clone(), value.clone());
        }
        if let Some((name, value)) = auth {
            inv.headers.push(name, value);
        }
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        self.offer = Some(offer.clone());
        self.sdp = Some(offer);
        let peer = self.dialog.peer;
        info!(target = %inv.uri, peer = %peer.addr, "consultation: ringing the target");
        self.send_client(now, inv, Purpose::Invite, peer);
    }

    fn send_client(&mut self, now: Instant, req: Request, purpose: Purpose, peer: Peer) {
        let tx = ClientTransaction::new(now, req, peer.transport.reliable(), self.timers);
        self.clients.push(Client {
            tx,
            peer,
            purpose,
            provisional: false,
            cancel_pending: false,
        });
    }

    /// Ends the consultation from our side: CANCEL while it rings, BYE once answered.
    pub fn end(&mut self, now: Instant) {
        match self.state {
            State::Ended => return,
            State::Up => {
                let bye = self.dialog.request(Method::Bye, &self.me, None);
                let peer = self.peer();
                self.send_client(now, bye, Purpose::Bye, peer);
            }
            State::Ringing => {
                if let Some(i) = self.clients.iter().rposition(|c| {
                    c.purpose == Purpose::Invite
                        && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
                }) {
                    if self.clients[i].provisional {
                        self.send_cancel(now, i);
                    } else {
                        self.clients[i].cancel_pending = true;
                    }
                }
            }
        }
        self.finish(now);
        self.pump(now);
    }

    fn finish(&mut self, now: Instant) {
        self.state = State::Ended;
        self.ring_deadline = None;
        self.linger_until = Some(now + LINGER);
    }

    fn send_cancel(&mut self, now: Instant, i: usize) {
        let cancel = cancel_of(&self.clients[i].tx.request);
        let peer = self.clients[i].peer;
        self.send_client(now, cancel, Purpose::Cancel, peer);
    }

    /// The answered dialog, for the call to take over as its agent leg; `None` (the leg left
    /// as it was) unless the target answered and no offer is in flight on the leg.
    pub fn hand_over(&mut self) -> Option<Handover> {
        let quiet = self.offer.is_none()
            && !self.ack_answers
            && self.servers.iter().all(|(s, _)| {
                s.request.method != Method::Invite || s.state() != ServerState::Proceeding
            });
        if self.state != State::Up || !quiet {
            return None;
        }
        self.state = State::Ended;
        self.ring_deadline = None;
        Some(Handover {
            dialog: self.dialog.clone(),
            local: self.local.clone(),
            sdp: self.sdp.clone(),
            dtmf_pt: self.dtmf_pt,
            ack: self.ack.clone(),
            answer: self.answer.take(),
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.clients {
            c.tx.handle_timeout(now);
        }
        for (s, _) in &mut self.servers {
            s.handle_timeout(now);
        }
        if self.ring_deadline.is_some_and(|d| now >= d) && self.state == State::Ringing {
            info!("consultation: the target did not answer in time");
            self.end(now);
            self.event(ConsultEvent::Failed(408));
        }
        self.pump(now);
    }

    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        match msg {
            Message::Response(r) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&r)) {
                    c.tx.handle_response(now, r);
                } else if r.status / 100 == 2
                    && r.cseq().is_some_and(|c| c.method == Method::Invite)
                {
                    self.answered_again(now, &r);
                }
            }
            Message::Request(mut req) => {
                if peer.transport == Transport::Udp {
                    req.stamp_source(peer.addr);
                }
                self.on_request(now, req, peer);
            }
        }
        self.pump(now);
    }

    /// A 2xx after its transaction: the same ACK again, or another fork released.
    fn answered_again(&mut self, now: Instant, r: &Response) {
        let tag = r.to().and_then(|t| t.tag().map(str::to_string));
        if tag.as_deref() == self.dialog.remote_tag() && self.ack.is_some() {
            if let Some(ack) = self.ack.clone() {
                let p = self.peer();
                self.send(p, ack);
            }
            return;
        }
        let mut fork = self.dialog.clone();
        fork.establish_from(r);
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let peer = if fork.route_set.is_empty() {
            fork.peer
        } else {
            target_peer(&fork.next_hop(), fork.peer)
        };
        let ack = fork.request(Method::Ack, &self.me, Some(seq));
        self.send(peer, Message::Request(ack).to_bytes());
        let bye = fork.request(Method::Bye, &self.me, None);
        self.send_client(now, bye, Purpose::Bye, peer);
    }

    fn on_request(&mut self, now: Instant, req: Request, peer: Peer) {
        let Some(key) = ServerKey::of(&req) else {
            return;
        };
        if let Some((s, _)) = self.servers.iter_mut().find(|(s, _)| s.key == key) {
            s.handle_request(now, req);
            return;
        }
        if req.method == Method::Ack {
            let seq = req.cseq().map(|c| c.seq);
            if let Some((s, _)) = self.servers.iter_mut().find(|(s, _)| {
                s.request.method == Method::Invite && s.request.cseq().map(|c| c.seq) == seq
            }) {
                s.handle_request(now, req.clone());
            }
            self.on_ack(&req);
            return;
        }
        let peer = response_peer(&req, peer);
        self.servers.push((
            ServerTransaction::new(req.clone(), key, peer.transport.reliable(), self.timers),
            peer,
        ));
        let tag = self.dialog.local_tag().to_string();
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let in_dialog = self.state == State::Up || req.method == Method::Bye;
        if !in_dialog || !self.dialog.accept_remote_cseq(seq) {
            let status = if in_dialog { 500 } else { 481 };
            self.respond_last(now, req.response(status, Some(&tag)));
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond_last(now, req.response(200, Some(&tag)));
                info!("consultation: the target hung up");
                self.finish(now);
                self.event(ConsultEvent::HungUp);
            }
            Method::Invite | Method::Update if !req.body.is_empty() => {
                let resp = self.answer_offer(&req, &tag);
                self.respond_last(now, resp);
            }
            Method::Invite => {
                let mut resp = req.response(200, Some(&tag));
                resp.headers
                    .push(HeaderName::Contact, self.dialog.contact(&self.me));
                if let Some(sdp) = self.sdp.clone() {
                    resp = resp.with_body("application/sdp", sdp.to_string().into_bytes());
                    self.ack_answers = true;
                }
                self.respond_last(now, resp);
            }
            Method::Update | Method::Options | Method::Info | Method::Notify => {
                let mut resp = req.response(200, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
            Method::Refer => {
                let mut r = req.response(403, Some(&tag));
                r.headers.push(
                    HeaderName::Warning,
                    "399 screenpop \"a consultation is not transferred from the phone\"",
                );
                self.respond_last(now, r);
            }
            Method::Extension(_) => self.respond_last(now, req.response(501, Some(&tag))),
            _ => {
                let mut resp = req.response(405, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
        }
    }

    /// A re-INVITE or UPDATE with an offer from the target (a refresh, a new port): answered
    /// in the call's codec, the audio re-pointed.
    fn answer_offer(&mut self, req: &Request, tag: &str) -> Response {
        let Ok(offer) = SessionDescription::parse(&req.body) else {
            return req.response(400, Some(tag));
        };
        self.local.bump_version();
        let Ok(n) = sdp::answer(&offer, &self.local, &[self.codec]) else {
            let mut r = req.response(488, Some(tag));
            r.headers.push(HeaderName::Accept, "application/sdp");
            return r;
        };
        self.sdp = Some(n.answer.clone());
        self.dtmf_pt = n.dtmf_pt;
        self.event(ConsultEvent::Media(RemoteMedia {
            rtp: n.remote_rtp,
            codec: g711(n.codec),
            dtmf_pt: n.dtmf_pt,
            srtp: n.srtp,
        }));
        let mut resp = req.response(200, Some(tag));
        resp.headers
            .push(HeaderName::Contact, self.dialog.contact(&self.me));
        resp.with_body("application/sdp", n.answer.to_string().into_bytes())
    }

    fn on_ack(&mut self, ack: &Request) {
        if !std::mem::take(&mut self.ack_answers) || ack.body.is_empty() {
            return;
        }
        let (Some(ours), Ok(theirs)) = (self.sdp.clone(), SessionDescription::parse(&ack.body))
        else {
            return;
        };
        match sdp::accept_answer(&ours, &theirs) {
            Ok(acc) if acc.codec == self.codec => {
                self.dtmf_pt = acc.dtmf_pt;
                self.event(ConsultEvent::Media(remote_media(&acc)));
            }
            _ => warn!("consultation: the ACK's answer is unusable"),
        }
    }

    fn respond_last(&mut self, now: Instant, resp: Response) {
        if let Some((s, _)) = self.servers.last_mut() {
            s.respond(now, &resp);
        }
    }

    fn pump(&mut self, now: Instant) {
        loop {
            let mut sends = Vec::new();
            let mut events = Vec::new();
            for (i, c) in self.clients.iter_mut().enumerate() {
                while let Some(o) = c.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => sends.push((c.peer, b)),
                        other => events.push((i, other)),
                    }
                }
            }
            let mut acks = Vec::new();
            for (s, peer) in self.servers.iter_mut() {
                while let Some(o) = s.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => sends.push((*peer, b)),
                        TxOutput::Request(ack) => acks.push(ack),
                        _ => {}
                    }
                }
            }
            for ack in acks {
                self.on_ack(&ack);
            }
            let progressed = !events.is_empty();
            for (peer, bytes) in sends {
                self.send(peer, bytes);
            }
            for (i, ev) in events {
                if self.clients[i].purpose != Purpose::Invite {
                    continue;
                }
                match ev {
                    TxOutput::Response(r) => {
                        if r.status < 200 {
                            self.clients[i].provisional = true;
                            if std::mem::take(&mut self.clients[i].cancel_pending) {
                                self.send_cancel(now, i);
                            }
                        }
                        self.on_invite_response(now, r);
                    }
                    TxOutput::Timeout if self.state == State::Ringing => {
                        warn!("consultation: no answer to our INVITE");
                        self.finish(now);
                        self.event(ConsultEvent::Failed(408));
                    }
                    _ => {}
                }
            }
            let before = self.clients.len() + self.servers.len();
            self.clients
                .retain(|c| c.tx.state() != ClientState::Terminated);
            self.servers
                .retain(|(s, _)| s.state() != ServerState::Terminated);
            if !progressed && before == self.clients.len() + self.servers.len() {
                break;
            }
        }
    }

    fn ack_2xx(&mut self, r: &Response) {
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        self.dialog.establish_from(r);
        let ack = self.dialog.request(Method::Ack, &self.me, Some(seq));
        let bytes = Message::Request(ack).to_bytes();
        self.ack = Some(bytes.clone());
        let peer = self.peer();
        self.send(peer, bytes);
    }

    /// Takes an answer to our offer: false when it is unusable (the offer stays open).
    fn accept(&mut self, body: &[u8]) -> bool {
        let (Some(offer), Ok(answer)) = (self.offer.as_ref(), SessionDescription::parse(body))
        else {
            return false;
        };
        match sdp::accept_answer(offer, &answer) {
            Ok(acc) if acc.codec == self.codec => {
                self.offer = None;
                self.dtmf_pt = acc.dtmf_pt;
                if let (Some(l), Some(k)) = (self.local.srtp.as_mut(), acc.srtp) {
                    l.suite = k.suite;
                }
                self.event(ConsultEvent::Media(remote_media(&acc)));
                true
            }
            _ => false,
        }
    }

    fn on_invite_response(&mut self, now: Instant, r: Response) {
        let status = r.status;
        if status / 100 == 2 && (self.ack.is_some() || self.state == State::Ended) {
            if self.state == State::Ended && self.ack.is_none() {
                // Answered as our CANCEL crossed it: take the dialog and end it.
                self.ack_2xx(&r);
                let bye = self.dialog.request(Method::Bye, &self.me, None);
                let peer = self.peer();
                self.send_client(now, bye, Purpose::Bye, peer);
            } else {
                self.answered_again(now, &r);
            }
            return;
        }
        if self.state == State::Ended {
            return;
        }
        match status {
            100 => {}
            101..=199 => {
                if let Some(to) = r.to().filter(|t| t.tag().is_some()) {
                    self.dialog.remote = to;
                }
                if !r.body.is_empty() {
                    self.accept(&r.body);
                }
                self.event(ConsultEvent::Ringing);
            }
            200..=299 => {
                self.ack_2xx(&r);
                let usable = self.offer.is_none() || self.accept(&r.body);
                if !usable {
                    warn!("consultation: answered without a usable SDP answer");
                    self.state = State::Up;
                    self.end(now);
                    self.event(ConsultEvent::Failed(488));
                    return;
                }
                info!("consultation: the target answered");
                self.state = State::Up;
                self.ring_deadline = None;
                self.answer = Some(r);
                self.event(ConsultEvent::Answered);
            }
            401 | 407 if self.gateway.is_some() => {
                let uri = self.dialog.remote_target.to_string();
                let auth = self
                    .gateway
                    .as_ref()
                    .and_then(|gw| challenge_answer(gw, &r, &uri, &mut self.auth_tries));
                match auth {
                    Some(auth) => {
                        self.dialog.remote.remove_param("tag");
                        self.invite(now, Some(auth));
                    }
                    None => self.failed(now, status),
                }
            }
            488 | 606 if self.local.srtp.is_some() && !self.plain_retry => {
                debug!("consultation: SRTP refused, offering plain RTP");
                self.plain_retry = true;
                self.local.srtp = None;
                self.dialog.remote.remove_param("tag");
                self.invite(now, None);
            }
            _ => self.failed(now, status),
        }
    }

    fn failed(&mut self, now: Instant, status: u16) {
        info!(status, "consultation: the target refused");
        self.finish(now);
        self.event(ConsultEvent::Failed(status));
    }
}
