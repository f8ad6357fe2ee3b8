//! A call screenpop places (click-to-dial) as a sans-IO machine. The agent's own phone is rung
//! first (the desktop already shows whom it is about to call); when the agent answers, the
//! number is called through the profile's outbound gateway, answering its digest challenge,
//! while the agent hears ringback (or the gateway's early media); when the far end answers the
//! two are bridged and recorded, and the contact log on the customer says `outbound`.
//!
//! Both legs are UAC legs here, unlike [`super::call::Call`] whose caller leg is the trunk's
//! INVITE, so this is its own, smaller machine; it speaks the same [`Output`] and the same
//! task runs it. Leg names follow the recording's channels: [`LegId::Caller`] is the customer
//! (left), [`LegId::Agent`] the agent's phone (right).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use super::call::{CallConfig, MediaCommand, Music, Output, Server, ALLOW};
use super::control::{Control, ControlError, Controller};
use super::dialog::{Dialog, LocalContact};
use super::pop::{self, PopCard};
use super::record::{AgentSpan, CallRecord, Disposition, EndedBy};
use crate::acd::runtime::AgentTarget;
use crate::acd::{AgentId, CallKey, Input as AcdInput};
use crate::events::payload::CallAnswered;
use crate::events::{Event, Payload};
use crate::ids::{ContactLogId, SipCallId};
use crate::media::g711::G711;
use crate::media::relay::{LegId, MediaEvent, RemoteMedia};
use crate::sip::caller_id::CallerId;
use crate::sip::digest;
use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Message, Method, Request, Response};
use crate::sip::peer::{response_peer, Peer, Transport};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, SessionDescription};
use crate::sip::transaction::{
    remains_of, ClientState, ClientTransaction, Remains, ServerKey, ServerState, ServerTransaction,
    TxOutput,
};
use crate::sip::Uri;
use crate::time::{civil_date, epoch_ms};

/// How long an ended call keeps absorbing retransmissions, at most.
const LINGER: Duration = Duration::from_secs(40);

/// The gateway and how to present ourselves to it, for one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The number called, in E.164.
    pub number: String,
    /// The Request-URI (the number filled in).
    pub uri: Uri,
    /// Where it is reached (resolved before the call starts).
    pub peer: Peer,
    /// Digest credentials for its 401/407.
    pub credentials: Option<(String, String)>,
    /// Presented in From and P-Asserted-Identity.
    pub caller_id: String,
    pub ring_timeout: Duration,
}

/// Everything a placed call starts from: the API has checked the number, the ACD has marked
/// the agent busy, the contact log row exists and the ports are bound.
pub struct OutboundInit {
    pub id: CallKey,
    pub now: Instant,
    pub wall: SystemTime,
    pub agent: AgentId,
    pub agent_target: AgentTarget,
    /// Where the agent's phone is reached (resolved).
    pub agent_peer: Peer,
    pub gateway: Gateway,
    /// The gateway leg's Call-ID (the contact log is written under it before the call starts).
    pub gateway_call_id: String,
    /// The number called, in E.164, and the customer's name when known.
    pub e164: String,
    pub name: Option<String>,
    pub customer_id: Option<i64>,
    pub card: PopCard,
    pub log_id: Option<ContactLogId>,
    /// The RTP ports bound for the customer's and the agent's legs.
    pub caller_port: u16,
    pub agent_port: u16,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Our INVITE to the agent's phone is out.
    RingingAgent,
    /// The agent answered; our INVITE to the gateway is out, the agent hears ringback.
    Dialling,
    /// Both answered and bridged.
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
    leg: LegId,
    purpose: Purpose,
    provisional: bool,
    cancel_pending: bool,
}

/// One leg: its dialog, our media on it and where its INVITE stands.
struct Leg {
    dialog: Dialog,
    local: LocalMedia,
    /// Our offer, until an answer settles it.
    offer: Option<SessionDescription>,
    /// The SDP we last sent on the leg (repeated to answer a refresh).
    sdp: Option<SessionDescription>,
    answered: bool,
    /// The ACK of its 2xx, sent again should the 2xx come again.
    ack: Option<Vec<u8>>,
    /// Challenges answered on this leg's INVITE.
    auth_tries: u32,
    /// Our 2xx to an offerless re-INVITE carried an offer: the ACK brings the answer.
    ack_answers: bool,
}

/// One placed call. See the module documentation.
pub struct OutboundCall {
    cfg: Arc<CallConfig>,
    id: CallKey,
    phase: Phase,
    legs: [Leg; 2],
    gateway: Gateway,
    agent: AgentId,
    agent_target: AgentTarget,
    e164: String,
    name: Option<String>,
    customer_id: Option<i64>,
    card: PopCard,
    log_id: Option<ContactLogId>,
    codec: Codec,
    clients: Vec<Client>,
    servers: Vec<Server>,
    started: Instant,
    wall0: SystemTime,
    ring_deadline: Option<Instant>,
    answered_at: Option<Instant>,
    ended_at: Option<Instant>,
    ended_by: Option<EndedBy>,
    linger_until: Option<Instant>,
    disposition: Option<Disposition>,
    final_status: u16,
    ringback: bool,
    out: VecDeque<Output>,
}

/// The Authorization (after 401) or Proxy-Authorization (after 407) header answering the
/// gateway's challenge `r` to an INVITE for `uri`; `None` when [outbound] has no credentials,
/// the challenge cannot be answered, or the same credentials were refused already (`tries`
/// counts the answers; a stale nonce is answered again).
pub(crate) fn challenge_answer(
    gw: &Gateway,
    r: &Response,
    uri: &str,
    tries: &mut u32,
) -> Option<(HeaderName, String)> {
    let Some((user, pass)) = gw.credentials.as_ref() else {
        warn!("the gateway asks for credentials and [outbound] has none");
        return None;
    };
    let (ch_name, auth_name) = if r.status == 401 {
        (HeaderName::WwwAuthenticate, HeaderName::Authorization)
    } else {
        (
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        )
    };
    let Ok(ch) = digest::best_challenge(r.headers.get_all(&ch_name)) else {
        warn!("the gateway's challenge cannot be answered");
        return None;
    };
    if *tries >= 1 && !ch.stale {
        warn!("the gateway refused the [outbound] credentials");
        return None;
    }
    *tries += 1;
    match digest::respond(&ch, user, pass, "INVITE", uri, &digest::new_cnonce(), 1) {
        Ok(value) => Some((auth_name, value)),
        Err(e) => {
            warn!(error = %e, "the gateway's challenge cannot be answered");
            None
        }
    }
}

fn remote_media(rtp: Option<std::net::SocketAddr>, codec: Codec, dtmf: Option<u8>) -> RemoteMedia {
    RemoteMedia {
        srtp: None,
        rtp,
        codec: match codec {
            Codec::Pcmu => G711::Pcmu,
            Codec::Pcma => G711::Pcma,
        },
        dtmf_pt: dtmf,
    }
}

fn new_leg(
    me: &LocalContact,
    rng: &mut StdRng,
    from_user: &str,
    from_name: Option<&str>,
    to: &Uri,
    peer: Peer,
    media: LocalMedia,
) -> Leg {
    let mut from = NameAddr::new(Uri::sip(Some(from_user), &me.host, None));
    from.display = from_name.map(str::to_string);
    from.set_param("tag", Some(&format!("{:016x}", rng.gen::<u64>())));
    Leg {
        dialog: Dialog {
            call_id: format!("{:032x}@{}", rng.gen::<u128>(), me.host),
            local: from,
            remote: NameAddr::new(to.clone()),
            remote_target: to.clone(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            secure: false,
            peer,
        },
        local: media,
        offer: None,
        sdp: None,
        answered: false,
        ack: None,
        auth_tries: 0,
        ack_answers: false,
    }
}

impl OutboundCall {
    /// Rings the agent's phone: `call.offered` goes to the agent's desktop at once, with the
    /// customer's card, so the agent sees whom the phone is about to call.
    pub fn new(cfg: Arc<CallConfig>, init: OutboundInit) -> OutboundCall {
        let mut rng = StdRng::seed_from_u64(init.seed);
        let media = |port: u16, rng: &mut StdRng| LocalMedia {
            addr: cfg.media_ip,
            port,
            session_id: rng.gen::<u32>() as u64,
            session_version: 1,
            username: "screenpop".into(),
            srtp: None,
        };
        let gw_media = media(init.caller_port, &mut rng);
        let agent_media = media(init.agent_port, &mut rng);
        let mut customer = new_leg(
            &cfg.me,
            &mut rng,
            &init.gateway.caller_id,
            None,
            &init.gateway.uri,
            init.gateway.peer,
            gw_media,
        );
        customer.dialog.call_id = init.gateway_call_id;
        // The agent's phone shows the number it is about to call, and the customer's name.
        let agent = new_leg(
            &cfg.me,
            &mut rng,
            &init.e164,
            init.name.as_deref(),
            &init.agent_target.uri,
            init.agent_peer,
            agent_media,
        );
        let mut c = OutboundCall {
            codec: cfg.codecs.first().copied().unwrap_or(Codec::Pcmu),
            cfg,
            id: init.id,
            phase: Phase::RingingAgent,
            legs: [customer, agent],
            gateway: init.gateway,
            agent: init.agent,
            agent_target: init.agent_target,
            e164: init.e164,
            name: init.name,
            customer_id: init.customer_id,
            card: init.card,
            log_id: init.log_id,
            clients: Vec::new(),
            servers: Vec::new(),
            started: init.now,
            wall0: init.wall,
            ring_deadline: None,
            answered_at: None,
            ended_at: None,
            ended_by: None,
            linger_until: None,
            disposition: None,
            final_status: 0,
            ringback: false,
            out: VecDeque::new(),
        };
        let now = init.now;
        c.publish_offered();
        let agent_ip = c.legs[LegId::Agent.index()].dialog.peer.addr.ip();
        c.media(MediaCommand::SignallingIp(LegId::Agent, agent_ip));
        c.ring_deadline = Some(now + c.cfg.ring_timeout);
        let codecs = c.cfg.codecs.clone();
        c.invite(now, LegId::Agent, &codecs, None);
        c.pump(now);
        c
    }

    pub fn id(&self) -> &CallKey {
        &self.id
    }

    pub fn call_ids(&self) -> Vec<String> {
        self.legs.iter().map(|l| l.dialog.call_id.clone()).collect()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers
            .iter()
            .filter_map(|s| s.tx.poll_timeout())
            .chain(self.clients.iter().filter_map(|c| c.tx.poll_timeout()))
            .chain(self.ring_deadline)
            .chain(self.linger_until)
            .min()
    }

    /// Ended, and nothing sent waits for an answer: a shutdown may exit.
    pub fn settled(&self) -> bool {
        self.phase == Phase::Ended
            && self.clients.iter().all(|c| !c.tx.awaits_final())
            && self.servers.iter().all(|s| !s.tx.awaits_ack())
    }

    /// Over, and all that is left is what [`OutboundCall::remains`] hands on: as with an
    /// inbound call, the task goes without waiting out its BYE's Timer J.
    pub fn is_done(&self, now: Instant) -> bool {
        self.phase == Phase::Ended
            && ((self.servers.iter().all(|s| s.tx.remains().is_some())
                && self.clients.iter().all(|c| c.tx.remains().is_some()))
                || self.linger_until.is_some_and(|l| now >= l))
    }

    /// What the dispatcher keeps once the task has gone: a BYE's 200 to repeat, the ACK of a
    /// challenged or refused INVITE to send again ([`remains_of`]).
    pub fn remains(&self) -> Vec<(Remains, Peer)> {
        remains_of(
            self.servers.iter().map(|s| (&s.tx, s.peer)),
            self.clients.iter().map(|c| (&c.tx, c.peer)),
        )
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.wall0 + now.saturating_duration_since(self.started)
    }

    fn media(&mut self, cmd: MediaCommand) {
        self.out.push_back(Output::Media(cmd));
    }

    fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit { peer, bytes });
    }

    fn leg(&mut self, leg: LegId) -> &mut Leg {
        &mut self.legs[leg.index()]
    }

    fn caller_view(&self) -> CallerId {
        CallerId {
            raw: self.e164.clone(),
            number: Some(self.e164.clone()),
            name: self.name.clone(),
            withheld: false,
        }
    }

    fn publish_offered(&mut self) {
        let caller = self.caller_view();
        let ev = pop::offered(pop::Offered {
            call_id: &self.id,
            log_id: self.log_id,
            queue: None,
            queue_id: None,
            agent_id: Some(self.agent),
            caller: &caller,
            caller_e164: Some(&self.e164),
            dialed: &self.e164,
            card: &self.card,
            offered_at: self.wall0,
            since: self.started,
            crm_url: None,
            outbound: true,
            from_agent_id: None,
        });
        self.out.push_back(Output::Publish(ev));
    }

    /// Sends the INVITE of `leg` offering `codecs`; `auth` is the Authorization or
    /// Proxy-Authorization header answering the gateway's challenge.
    fn invite(
        &mut self,
        now: Instant,
        leg: LegId,
        codecs: &[Codec],
        auth: Option<(HeaderName, String)>,
    ) {
        let me = self.cfg.me.clone();
        let l = self.leg(leg);
        let offer = sdp::offer(&l.local, codecs, Some(101), Direction::SendRecv);
        let mut inv = l.dialog.request(Method::Invite, &me, None);
        inv.headers.push(HeaderName::Allow, ALLOW);
        if leg == LegId::Caller {
            let host = me.host.clone();
            let id = self.gateway.caller_id.clone();
            inv.headers
                .push(HeaderName::PAssertedIdentity, format!("<sip:{id}@{host}>"));
        }
        inv.headers.push(
            HeaderName::Other("X-Screenpop-Call".into()),
            self.id.to_string(),
        );
        if let Some((name, value)) = auth {
            inv.headers.push(name, value);
        }
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        let l = self.leg(leg);
        l.offer = Some(offer.clone());
        l.sdp = Some(offer);
        let peer = l.dialog.peer;
        info!(?leg, uri = %inv.uri, peer = %peer.addr, "placing call leg");
        self.send_client(now, inv, leg, Purpose::Invite, peer);
    }

    fn send_client(
        &mut self,
        now: Instant,
        req: Request,
        leg: LegId,
        purpose: Purpose,
        peer: Peer,
    ) {
        let tx = ClientTransaction::new(now, req, peer.transport.reliable(), self.cfg.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg,
            purpose,
            provisional: false,
            cancel_pending: false,
        });
    }

    /// Where a leg's in-dialog requests go.
    fn leg_peer(&self, leg: LegId) -> Peer {
        let d = &self.legs[leg.index()].dialog;
        if d.route_set.is_empty() {
            return d.peer;
        }
        super::dialog::target_peer(&d.next_hop(), d.peer)
    }

    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        let call_id = msg.headers().get(&HeaderName::CallId).unwrap_or("");
        let leg = if call_id == self.legs[LegId::Agent.index()].dialog.call_id {
            LegId::Agent
        } else {
            LegId::Caller
        };
        match msg {
            Message::Response(resp) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&resp)) {
                    c.tx.handle_response(now, resp);
                } else if resp.status / 100 == 2
                    && resp.cseq().is_some_and(|c| c.method == Method::Invite)
                {
                    // A 2xx again after its transaction ended: ACK it again.
                    if let Some(ack) = self.legs[leg.index()].ack.clone() {
                        let p = self.leg_peer(leg);
                        self.send(p, ack);
                    }
                }
            }
            Message::Request(mut req) => {
                if peer.transport == Transport::Udp {
                    req.stamp_source(peer.addr);
                }
                self.on_request(now, leg, req, peer);
            }
        }
        self.pump(now);
    }

    fn on_request(&mut self, now: Instant, leg: LegId, req: Request, peer: Peer) {
        let Some(key) = ServerKey::of(&req) else {
            return;
        };
        if let Some(s) = self.servers.iter_mut().find(|s| s.tx.key == key) {
            s.tx.handle_request(now, req);
            return;
        }
        if req.method == Method::Ack {
            let seq = req.cseq().map(|c| c.seq);
            if let Some(s) = self.servers.iter_mut().find(|s| {
                s.leg == leg
                    && s.tx.request.method == Method::Invite
                    && s.tx.request.cseq().map(|c| c.seq) == seq
            }) {
                s.tx.handle_request(now, req);
            }
            return;
        }
        let peer = response_peer(&req, peer);
        self.servers.push(Server {
            tx: ServerTransaction::new(
                req.clone(),
                key,
                peer.transport.reliable(),
                self.cfg.timers,
            ),
            peer,
            leg,
        });
        let tag = self.legs[leg.index()].dialog.local_tag().to_string();
        let in_dialog = self.legs[leg.index()].answered || req.method == Method::Bye;
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        if !in_dialog || !self.leg(leg).dialog.accept_remote_cseq(seq) {
            let status = if in_dialog { 500 } else { 481 };
            self.respond_last(now, req.response(status, Some(&tag)));
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond_last(now, req.response(200, Some(&tag)));
                info!(?leg, "hang-up");
                self.hang_up(now, Some(leg));
            }
            Method::Invite | Method::Update if !req.body.is_empty() => {
                let resp = self.answer_offer(leg, &req, &tag);
                self.respond_last(now, resp);
            }
            Method::Invite => {
                // A refresh without an offer: our last SDP is the offer, the ACK answers.
                let mut resp = req.response(200, Some(&tag));
                let me = self.cfg.me.clone();
                resp.headers.push(
                    HeaderName::Contact,
                    self.legs[leg.index()].dialog.contact(&me),
                );
                if let Some(sdp) = self.legs[leg.index()].sdp.clone() {
                    resp.headers
                        .push(HeaderName::ContentType, "application/sdp");
                    resp.body = sdp.to_string().into_bytes();
                    self.leg(leg).ack_answers = true;
                }
                self.respond_last(now, resp);
            }
            Method::Update | Method::Options | Method::Info => {
                let mut resp = req.response(200, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
            Method::Refer => {
                // Hold and transfer are not offered on a placed call yet.
                let mut r = req.response(403, Some(&tag));
                r.headers.push(
                    HeaderName::Warning,
                    "399 screenpop \"no transfer on a placed call\"",
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

    /// A re-INVITE or UPDATE with an offer (a refresh, a new port, a hold): answered in the
    /// call's codec, the leg's audio re-pointed.
    fn answer_offer(&mut self, leg: LegId, req: &Request, tag: &str) -> Response {
        let codec = self.codec;
        let me = self.cfg.me.clone();
        let l = &mut self.legs[leg.index()];
        let Some(offer) = SessionDescription::parse(&req.body).ok() else {
            return req.response(400, Some(tag));
        };
        l.local.bump_version();
        let Ok(n) = sdp::answer(&offer, &l.local, &[codec]) else {
            let mut r = req.response(488, Some(tag));
            r.headers.push(HeaderName::Accept, "application/sdp");
            return r;
        };
        let answer = n.answer.clone();
        l.sdp = Some(answer.clone());
        let mut resp = req.response(200, Some(tag));
        resp.headers
            .push(HeaderName::Contact, l.dialog.contact(&me));
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = answer.to_string().into_bytes();
        self.media(MediaCommand::SetRemote(
            leg,
            remote_media(n.remote_rtp, n.codec, n.dtmf_pt),
        ));
        resp
    }

    /// The ACK of our 2xx to an offerless re-INVITE answers the offer that 2xx carried
    /// (RFC 3264 §4): the leg's audio goes where the answer says.
    fn on_ack(&mut self, leg: LegId, ack: &Request) {
        if !std::mem::take(&mut self.leg(leg).ack_answers) || ack.body.is_empty() {
            return;
        }
        let Some(ours) = self.legs[leg.index()].sdp.clone() else {
            return;
        };
        let answer = SessionDescription::parse(&ack.body).ok();
        match answer.and_then(|a| sdp::accept_answer(&ours, &a).ok()) {
            Some(acc) if acc.codec == self.codec => self.media(MediaCommand::SetRemote(
                leg,
                remote_media(acc.remote_rtp, acc.codec, acc.dtmf_pt),
            )),
            _ => warn!(
                ?leg,
                "the ACK's answer is unusable; the audio stays where it was"
            ),
        }
    }

    fn respond_last(&mut self, now: Instant, resp: Response) {
        if let Some(s) = self.servers.last_mut() {
            s.tx.respond(now, &resp);
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
            for s in self.servers.iter_mut() {
                while let Some(o) = s.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => sends.push((s.peer, b)),
                        TxOutput::Request(ack) => acks.push((s.leg, ack)),
                        _ => {}
                    }
                }
            }
            for (leg, ack) in acks {
                self.on_ack(leg, &ack);
            }
            let progressed = !events.is_empty();
            for (peer, bytes) in sends {
                self.send(peer, bytes);
            }
            for (i, ev) in events {
                let (leg, purpose) = (self.clients[i].leg, self.clients[i].purpose);
                match ev {
                    TxOutput::Response(r) if purpose == Purpose::Invite => {
                        if r.status < 200 {
                            self.clients[i].provisional = true;
                            if std::mem::take(&mut self.clients[i].cancel_pending) {
                                self.send_cancel(now, i);
                            }
                        }
                        self.on_invite_response(now, leg, r)
                    }
                    TxOutput::Timeout if purpose == Purpose::Invite => {
                        warn!(?leg, "no answer to our INVITE");
                        self.failed(now, leg, 408);
                    }
                    _ => {}
                }
            }
            let before = self.clients.len() + self.servers.len();
            self.clients
                .retain(|c| c.tx.state() != ClientState::Terminated);
            self.servers
                .retain(|s| s.tx.state() != ServerState::Terminated);
            if !progressed && before == self.clients.len() + self.servers.len() {
                break;
            }
        }
    }

    fn on_invite_response(&mut self, now: Instant, leg: LegId, r: Response) {
        let status = r.status;
        if status / 100 == 2 && self.legs[leg.index()].answered {
            // A 2xx again (our ACK was lost, RFC 3261 §13.2.2.4): the same ACK again. Another
            // fork's 2xx is ACKed and released, the bridged dialog left alone.
            let same = r.to().and_then(|t| t.tag().map(str::to_string));
            if same.as_deref() == self.legs[leg.index()].dialog.remote_tag() {
                if let Some(ack) = self.legs[leg.index()].ack.clone() {
                    let p = self.leg_peer(leg);
                    self.send(p, ack);
                }
            } else {
                self.release_fork(now, leg, &r);
            }
            return;
        }
        if self.phase == Phase::Ended {
            // Answered after we gave up (crossed our CANCEL): take and end that dialog.
            if status / 100 == 2 {
                self.ack(leg, &r);
                self.leg(leg).answered = true;
                self.bye(now, leg);
            }
            return;
        }
        match status {
            100 => {}
            101..=199 => {
                if let Some(to) = r.to().filter(|t| t.tag().is_some()) {
                    self.leg(leg).dialog.remote = to;
                }
                if leg == LegId::Caller && !r.body.is_empty() && self.accept(leg, &r.body) {
                    // Early media: the agent hears the network's ringback or announcement.
                    self.stop_ringback();
                }
            }
            200..=299 => {
                self.ack(leg, &r);
                let usable = self.legs[leg.index()].offer.is_none() || self.accept(leg, &r.body);
                self.leg(leg).answered = true;
                if !usable {
                    warn!(?leg, "answer without usable SDP");
                    self.disposition = Some(Disposition::Failed);
                    self.final_status = 488;
                    self.hang_up(now, None);
                    return;
                }
                match leg {
                    LegId::Agent => self.agent_answered(now),
                    LegId::Caller => self.customer_answered(now),
                }
            }
            401 | 407 if leg == LegId::Caller && self.answer_challenge(now, &r) => {}
            _ => {
                info!(?leg, status, "call leg refused");
                self.failed(now, leg, status);
            }
        }
    }

    /// Sends the INVITE again with credentials for the gateway's challenge; false when there
    /// are none, or the same credentials were refused already (a stale nonce is retried).
    fn answer_challenge(&mut self, now: Instant, r: &Response) -> bool {
        let l = &mut self.legs[LegId::Caller.index()];
        let uri = l.dialog.remote_target.to_string();
        // A new INVITE in the same dialog set: no To tag from a provisional (RFC 3261 §8.1.3.5).
        l.dialog.remote.remove_param("tag");
        match challenge_answer(&self.gateway, r, &uri, &mut l.auth_tries) {
            Some(auth) => {
                let codec = [self.codec];
                self.invite(now, LegId::Caller, &codec, Some(auth));
                true
            }
            None => false,
        }
    }

    /// ACKs and BYEs a second fork's 2xx without touching the leg's dialog.
    fn release_fork(&mut self, now: Instant, leg: LegId, r: &Response) {
        let me = self.cfg.me.clone();
        let mut fork = self.legs[leg.index()].dialog.clone();
        fork.establish_from(r);
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let peer = if fork.route_set.is_empty() {
            fork.peer
        } else {
            super::dialog::target_peer(&fork.next_hop(), fork.peer)
        };
        let ack = fork.request(Method::Ack, &me, Some(seq));
        self.send(peer, Message::Request(ack).to_bytes());
        let bye = fork.request(Method::Bye, &me, None);
        self.send_client(now, bye, leg, Purpose::Bye, peer);
    }

    /// Reads an answer to our offer on `leg`: the leg's audio goes where it says. The offer
    /// stays open when the answer is unusable (a later 200 may carry a good one).
    fn accept(&mut self, leg: LegId, body: &[u8]) -> bool {
        let codec = self.codec;
        let l = &mut self.legs[leg.index()];
        let (Some(offer), Ok(answer)) = (l.offer.as_ref(), SessionDescription::parse(body)) else {
            return false;
        };
        let Ok(acc) = sdp::accept_answer(offer, &answer) else {
            return false;
        };
        if leg == LegId::Caller && acc.codec != codec {
            return false;
        }
        l.offer = None;
        if leg == LegId::Agent {
            // The agent's phone picks the codec; the gateway is offered only that one, so the
            // relay passes audio through untouched.
            self.codec = acc.codec;
        }
        self.media(MediaCommand::SetRemote(
            leg,
            remote_media(acc.remote_rtp, acc.codec, acc.dtmf_pt),
        ));
        true
    }

    fn ack(&mut self, leg: LegId, r: &Response) {
        let me = self.cfg.me.clone();
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let l = self.leg(leg);
        l.dialog.establish_from(r);
        let ack = l.dialog.request(Method::Ack, &me, Some(seq));
        let bytes = Message::Request(ack).to_bytes();
        l.ack = Some(bytes.clone());
        let peer = self.leg_peer(leg);
        self.send(peer, bytes);
    }

    fn agent_answered(&mut self, now: Instant) {
        info!("agent answered; calling the number");
        self.phase = Phase::Dialling;
        self.ring_deadline = Some(now + self.gateway.ring_timeout);
        self.ringback = true;
        self.media(MediaCommand::Play(LegId::Agent, Music::Ringback));
        let gw_ip = self.legs[LegId::Caller.index()].dialog.peer.addr.ip();
        self.media(MediaCommand::SignallingIp(LegId::Caller, gw_ip));
        let codec = [self.codec];
        self.invite(now, LegId::Caller, &codec, None);
    }

    fn stop_ringback(&mut self) {
        if std::mem::take(&mut self.ringback) {
            self.media(MediaCommand::StopPlaying(LegId::Agent));
        }
    }

    fn customer_answered(&mut self, now: Instant) {
        info!("the number answered; bridged");
        self.phase = Phase::Up;
        self.ring_deadline = None;
        self.stop_ringback();
        self.answered_at = Some(now);
        self.disposition = Some(Disposition::Answered);
        self.final_status = 200;
        self.media(MediaCommand::Watch(self.cfg.rtp_timeout));
        let record = Box::new(self.record(now, false));
        self.out.push_back(Output::Record {
            record,
            date: civil_date(self.wall(now)),
            answered: now,
        });
        self.out
            .push_back(Output::Publish(Event::new(Payload::CallAnswered(
                CallAnswered {
                    call_id: self.id.clone(),
                    contact_log_id: self.log_id,
                    agent_id: Some(self.agent),
                    queue_id: None,
                    answered_at: crate::time::rfc3339(self.wall(now)),
                },
            ))));
    }

    /// A leg's INVITE failed with `status` before the call was up.
    fn failed(&mut self, now: Instant, leg: LegId, status: u16) {
        if self.phase == Phase::Ended || self.legs[leg.index()].answered {
            return;
        }
        self.final_status = status;
        self.disposition = Some(match (leg, status) {
            // The agent's own phone did not take the call: nothing was placed.
            (LegId::Agent, _) => Disposition::Abandoned,
            (LegId::Caller, 486 | 600 | 603) => Disposition::Rejected,
            (LegId::Caller, 408 | 480 | 487) => Disposition::Missed,
            (LegId::Caller, _) => Disposition::Failed,
        });
        self.hang_up(now, None);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.clients {
            c.tx.handle_timeout(now);
        }
        for s in &mut self.servers {
            s.tx.handle_timeout(now);
        }
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            match self.phase {
                Phase::RingingAgent => {
                    info!("the agent's phone did not answer");
                    self.disposition = Some(Disposition::Abandoned);
                    self.final_status = 408;
                    self.hang_up(now, None);
                }
                Phase::Dialling => {
                    info!("the number did not answer in time");
                    self.disposition = Some(Disposition::Missed);
                    self.final_status = 408;
                    self.hang_up(now, None);
                }
                _ => {}
            }
        }
        self.pump(now);
    }

    pub fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
        if let MediaEvent::Silent { leg } = ev {
            if self.phase == Phase::Up {
                warn!(?leg, "no RTP within the timeout; hanging up");
                self.hang_up(now, None);
            }
        }
        self.pump(now);
    }

    /// Only hang-up is taken on a placed call for now: hold and transfer are refused with
    /// the reason.
    pub fn handle_control(&mut self, now: Instant, token: u64, by: Controller, control: Control) {
        let mine = by.supervisor || by.agent == Some(self.agent);
        let result = if !mine || self.phase == Phase::Ended {
            Err(ControlError::NotFound)
        } else {
            match control {
                Control::Hangup => {
                    info!("hung up from the desk");
                    self.ended_by = Some(EndedBy::Desk);
                    if self.phase != Phase::Up {
                        self.disposition = Some(Disposition::Abandoned);
                        self.final_status = 487;
                    }
                    self.hang_up(now, None);
                    Ok(())
                }
                Control::Shutdown => {
                    info!("hung up: screenpop is shutting down");
                    if self.phase != Phase::Up {
                        self.disposition = Some(Disposition::Abandoned);
                        self.final_status = 503;
                    }
                    self.hang_up(now, None);
                    Ok(())
                }
                Control::Hold
                | Control::Resume
                | Control::Transfer(_)
                | Control::Consult(_)
                | Control::CompleteTransfer
                | Control::CancelTransfer => Err(ControlError::Conflict(
                    "hold and transfer are not available on a placed call",
                )),
            }
        };
        self.out.push_back(Output::Reply { token, result });
        self.pump(now);
    }

    fn bye(&mut self, now: Instant, leg: LegId) {
        let me = self.cfg.me.clone();
        let bye = self.leg(leg).dialog.request(Method::Bye, &me, None);
        let peer = self.leg_peer(leg);
        self.send_client(now, bye, leg, Purpose::Bye, peer);
    }

    /// CANCELs `leg`'s INVITE if it is still ringing (after a provisional, RFC 3261 §9.1).
    fn cancel(&mut self, now: Instant, leg: LegId) {
        let Some(i) = self.clients.iter().rposition(|c| {
            c.leg == leg
                && c.purpose == Purpose::Invite
                && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
        }) else {
            return;
        };
        if self.clients[i].provisional {
            self.send_cancel(now, i);
        } else {
            self.clients[i].cancel_pending = true;
        }
    }

    fn send_cancel(&mut self, now: Instant, i: usize) {
        let inv = &self.clients[i].tx.request;
        let (peer, leg) = (self.clients[i].peer, self.clients[i].leg);
        let cancel = super::dialog::cancel_of(inv);
        self.send_client(now, cancel, leg, Purpose::Cancel, peer);
    }

    /// Ends the call: BYE to every answered leg other than `by`, CANCEL to one still ringing.
    fn hang_up(&mut self, now: Instant, by: Option<LegId>) {
        if self.phase == Phase::Ended {
            return;
        }
        if by.is_some() && self.phase != Phase::Up && self.disposition.is_none() {
            // The agent put the phone down before the number answered.
            self.disposition = Some(Disposition::Abandoned);
            self.final_status = 487;
        }
        for leg in [LegId::Caller, LegId::Agent] {
            if Some(leg) == by {
                continue;
            }
            if self.legs[leg.index()].answered {
                self.bye(now, leg);
            } else {
                self.cancel(now, leg);
            }
        }
        if self.ended_by.is_none() {
            self.ended_by = by.map(EndedBy::from);
        }
        self.phase = Phase::Ended;
        self.ended_at = Some(now);
        self.ring_deadline = None;
        self.linger_until = Some(now + LINGER);
        debug!(disposition = ?self.disposition, "placed call over");
        let record = Box::new(self.record(now, true));
        self.out.push_back(Output::Ended { record, at: now });
        self.out.push_back(Output::Acd(AcdInput::Ended {
            call: self.id.clone(),
        }));
    }

    fn record(&self, now: Instant, complete: bool) -> CallRecord {
        let talk = |end: Instant| {
            self.answered_at
                .map(|a| end.saturating_duration_since(a).as_millis() as u64)
                .unwrap_or(0)
        };
        CallRecord {
            id: self.id.clone(),
            call_id: SipCallId::new(self.legs[LegId::Caller.index()].dialog.call_id.clone()),
            agent_call_id: SipCallId::new(self.legs[LegId::Agent.index()].dialog.call_id.clone()),
            trunk: "outbound".into(),
            caller: self.caller_view(),
            dialed: self.e164.clone(),
            agent: Some(self.agent_target.uri.to_string()),
            agent_id: Some(self.agent),
            queue_id: None,
            disposition: self.disposition.unwrap_or(Disposition::Failed),
            final_status: self.final_status,
            offered_at_ms: epoch_ms(self.wall0),
            answered_at_ms: self.answered_at.map(|a| epoch_ms(self.wall(a))),
            ended_at_ms: epoch_ms(self.wall(now)),
            duration_ms: talk(now),
            ended_by: self.ended_by,
            path: None,
            sha256: None,
            recording_duration_ms: None,
            size_bytes: None,
            dtmf: Vec::new(),
            holds: Vec::new(),
            agents: self
                .answered_at
                .map(|_| AgentSpan {
                    agent_id: self.agent,
                    start_ms: 0,
                    end_ms: talk(now),
                })
                .into_iter()
                .collect(),
            media: None,
            rtp_timeout: false,
            session_expired: false,
            caller_e164: Some(self.e164.clone()),
            customer_id: self.customer_id,
            candidates: self.customer_id.into_iter().collect(),
            log_id: self.log_id,
            outbound: true,
            complete,
            survey: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Placed calls fed byte for byte on fake time.
    use super::*;
    use crate::sip::transaction::TimerConfig;

    const GW: &str = "10.0.0.1:5060";
    const PHONE: &str = "10.0.0.10:5060";

    fn peer(a: &str) -> Peer {
        Peer {
            addr: a.parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn cfg() -> Arc<CallConfig> {
        Arc::new(CallConfig {
            me: LocalContact {
                host: "10.0.0.2".into(),
                port: 5060,
                tls_port: None,
            },
            media_ip: "10.0.0.2".parse().unwrap(),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            timers: TimerConfig::default(),
            ring_timeout: Duration::from_secs(20),
            rtp_timeout: None,
            min_se_secs: 90,
            session_expires_secs: 0,
            agent_srtp: crate::config::AgentSrtp::Never,
            queue_music: false,
        })
    }

    /// The agent's phone has answered: the number's gateway is being called with `gw`.
    fn dialling() -> (OutboundCall, Instant, Request) {
        let (mut c, t0) = start(false);
        let (sent, _) = drain(&mut c);
        let inv = requests(&sent, Method::Invite).remove(0).1;
        c.handle_message(t0, answer(&inv, 200, 40000, ""), peer(PHONE));
        let (sent, _) = drain(&mut c);
        let gw = requests(&sent, Method::Invite).remove(0).1;
        (c, t0, gw)
    }

    fn start(credentials: bool) -> (OutboundCall, Instant) {
        let now = Instant::now();
        let c = OutboundCall::new(
            cfg(),
            OutboundInit {
                id: "out-1".into(),
                now,
                wall: SystemTime::now(),
                agent: 7,
                agent_target: AgentTarget {
                    uri: Uri::parse("sip:alice@10.0.0.10:5060").unwrap(),
                    peer: Some(peer(PHONE)),
                },
                agent_peer: peer(PHONE),
                gateway: Gateway {
                    number: "+12015550123".into(),
                    uri: Uri::parse("sip:+12015550123@10.0.0.1:5060").unwrap(),
                    peer: peer(GW),
                    credentials: credentials.then(|| ("acct".into(), "secret".into())),
                    caller_id: "+12015550100".into(),
                    ring_timeout: Duration::from_secs(60),
                },
                gateway_call_id: "gw-1@10.0.0.2".into(),
                e164: "+12015550123".into(),
                name: Some("Ada Lovelace".into()),
                customer_id: Some(3),
                card: PopCard::default(),
                log_id: Some(ContactLogId::new(11)),
                caller_port: 20000,
                agent_port: 20002,
                seed: 1,
            },
        );
        (c, now)
    }

    /// What the call sent since the last drain (to whom, parsed), and the other outputs.
    fn drain(c: &mut OutboundCall) -> (Vec<(Peer, Message)>, Vec<Output>) {
        let (mut sent, mut other) = (Vec::new(), Vec::new());
        while let Some(o) = c.poll_output() {
            match o {
                Output::Transmit { peer, bytes } => {
                    sent.push((peer, Message::parse(&bytes).expect("we send parseable SIP")))
                }
                o => other.push(o),
            }
        }
        (sent, other)
    }

    fn requests(sent: &[(Peer, Message)], method: Method) -> Vec<(Peer, Request)> {
        sent.iter()
            .filter_map(|(p, m)| match m {
                Message::Request(r) if r.method == method => Some((*p, r.clone())),
                _ => None,
            })
            .collect()
    }

    fn answer(inv: &Request, status: u16, port: u16, extra: &str) -> Message {
        let mut r = inv.response(status, Some("far"));
        r.headers
            .push(HeaderName::Contact, format!("<sip:far@{}>", inv.uri.host));
        for line in extra.lines().filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(": ").unwrap();
            r.headers.push(HeaderName::Other(n.into()), v);
        }
        if status / 100 == 2 || status == 183 {
            r.headers.push(HeaderName::ContentType, "application/sdp");
            r.body = format!(
                "v=0\r\no=x 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            )
            .into_bytes();
        }
        // Through the parser, so extension headers get their proper names.
        Message::parse(&Message::Response(r).to_bytes()).expect("a response we built")
    }

    fn has_output(outs: &[Output], f: impl Fn(&Output) -> bool) -> bool {
        outs.iter().any(f)
    }

    /// The agent's phone rings first (and the desktop pops), then the gateway is called in
    /// the codec the phone chose, answering its 407; ringback plays to the agent until the
    /// number answers; then the call is recorded and `call.answered` goes out.
    #[test]
    fn the_agents_phone_rings_first_then_the_gateway_with_credentials() {
        let (mut c, t0) = start(true);
        let (sent, outs) = drain(&mut c);
        assert!(has_output(
            &outs,
            |o| matches!(o, Output::Publish(e) if e.kind == "call.offered")
        ));
        let invs = requests(&sent, Method::Invite);
        assert_eq!(invs.len(), 1, "only the agent's phone rings");
        let (p, inv) = &invs[0];
        assert_eq!(*p, peer(PHONE));
        let from = inv.headers.get(&HeaderName::From).unwrap();
        assert!(
            from.contains("+12015550123") && from.contains("Ada Lovelace"),
            "{from}"
        );
        let t = t0 + Duration::from_millis(300);
        c.handle_message(t, answer(inv, 200, 40000, ""), peer(PHONE));
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Ack).len(), 1);
        assert!(has_output(&outs, |o| matches!(
            o,
            Output::Media(MediaCommand::Play(LegId::Agent, Music::Ringback))
        )));
        let gw = requests(&sent, Method::Invite);
        assert_eq!(gw.len(), 1);
        let (p, inv) = &gw[0];
        assert_eq!(*p, peer(GW));
        assert_eq!(inv.uri.to_string(), "sip:+12015550123@10.0.0.1:5060");
        assert!(inv
            .headers
            .get(&HeaderName::From)
            .unwrap()
            .contains("+12015550100"));
        let body = String::from_utf8_lossy(&inv.body).to_string();
        assert!(
            body.contains("RTP/AVP 8 101"),
            "only the phone's codec: {body}"
        );

        let challenge = "Proxy-Authenticate: Digest realm=\"gw\", nonce=\"abc\", qop=\"auth\"\n";
        c.handle_message(t, answer(inv, 407, 0, challenge), peer(GW));
        let (sent, _) = drain(&mut c);
        let again = requests(&sent, Method::Invite);
        assert_eq!(again.len(), 1, "INVITE again with credentials");
        let auth = again[0]
            .1
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .unwrap();
        assert!(
            auth.contains("username=\"acct\"") && auth.contains("realm=\"gw\""),
            "{auth}"
        );
        assert_eq!(again[0].1.cseq().unwrap().seq, inv.cseq().unwrap().seq + 1);

        c.handle_message(t, answer(&again[0].1, 200, 30000, ""), peer(GW));
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Ack).len(), 1);
        assert!(has_output(&outs, |o| matches!(
            o,
            Output::Media(MediaCommand::StopPlaying(LegId::Agent))
        )));
        assert!(has_output(&outs, |o| matches!(o, Output::Record { .. })));
        assert!(has_output(
            &outs,
            |o| matches!(o, Output::Publish(e) if e.kind == "call.answered")
        ));

        // The customer hangs up: BYE to the phone, one record, the ACD hears of it.
        let t = t + Duration::from_secs(5);
        let bye = format!(
            "BYE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye1\r\nFrom: <sip:+12015550123@10.0.0.1>;tag=far\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            again[0].1.headers.get(&HeaderName::From).unwrap(),
            again[0].1.call_id().unwrap()
        );
        c.handle_message(t, Message::parse(bye.as_bytes()).unwrap(), peer(GW));
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Bye).len(), 1, "BYE to the phone");
        let record = outs
            .iter()
            .find_map(|o| match o {
                Output::Ended { record, .. } => Some(record),
                _ => None,
            })
            .expect("the end's record");
        assert_eq!(record.disposition, Disposition::Answered);
        assert_eq!(record.ended_by, Some(EndedBy::Caller));
        assert!(record.outbound);
        assert_eq!(record.duration_ms, 5000);
        assert!(has_output(&outs, |o| matches!(
            o,
            Output::Acd(AcdInput::Ended { .. })
        )));

        // The phone answers our BYE: the task goes at once. The gateway's 407 may still come
        // again (our ACK lost) until Timer D: the dispatcher is left that ACK to send again,
        // and the 200 for the gateway's BYE.
        let (_, to_phone) = requests(&sent, Method::Bye).remove(0);
        c.handle_message(
            t,
            Message::Response(to_phone.response(200, None)),
            peer(PHONE),
        );
        drain(&mut c);
        assert!(c.is_done(t), "nothing but its remains is left");
        let remains = c.remains();
        let branch = inv.top_via().unwrap().branch().unwrap().to_string();
        assert!(
            remains.iter().any(|(r, p)| matches!(r,
                Remains::Reack { branch: b, ack, until }
                    if *b == branch && ack.starts_with(b"ACK ") && *until > t && *p == peer(GW))),
            "{remains:?}"
        );
        assert!(
            remains.iter().any(|(r, p)| matches!(r,
                Remains::Replay { response: Some(ok), .. } if ok.starts_with(b"SIP/2.0 200")
                    && *p == peer(GW))),
            "{remains:?}"
        );
        assert_eq!(remains.len(), 2, "{remains:?}");
    }

    /// A placed call's task goes as soon as the call is over (the phone has answered our BYE),
    /// without waiting out its BYE's Timer J (32 s), as an inbound call's does (issue 13 point
    /// 4): what is left is the 200 to the gateway's BYE, for the dispatcher to repeat.
    #[test]
    fn an_ended_placed_call_leaves_only_its_last_response() {
        let (mut c, t0, gw) = dialling();
        c.handle_message(t0, answer(&gw, 200, 30000, ""), peer(GW));
        drain(&mut c);
        let t = t0 + Duration::from_secs(5);
        let bye = format!(
            "BYE sip:screenpop@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye2\r\nFrom: <sip:+12015550123@10.0.0.1>;tag=far\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            gw.headers.get(&HeaderName::From).unwrap(),
            gw.call_id().unwrap()
        );
        c.handle_message(t, Message::parse(bye.as_bytes()).unwrap(), peer(GW));
        let (sent, _) = drain(&mut c);
        assert!(!c.is_done(t), "our BYE to the phone awaits its answer");
        let (_, to_phone) = requests(&sent, Method::Bye).remove(0);
        c.handle_message(
            t,
            Message::Response(to_phone.response(200, None)),
            peer(PHONE),
        );
        drain(&mut c);
        assert!(c.is_done(t + Duration::from_millis(10)), "over at once");
        let remains = c.remains();
        assert_eq!(remains.len(), 1, "the 200 to the gateway's BYE");
        assert!(
            matches!(&remains[0], (Remains::Replay { response: Some(r), .. }, p)
                if *p == peer(GW) && r.starts_with(b"SIP/2.0 200")),
            "{remains:?}"
        );
    }

    /// A 2xx repeated (our ACK lost) gets the same ACK again and nothing else: no second
    /// INVITE to the gateway, no second recording; a gateway that only said 100 Trying can
    /// still be cancelled.
    #[test]
    fn a_repeated_answer_is_acked_again_and_a_trying_gateway_can_be_cancelled() {
        let (mut c, t0) = start(false);
        let (sent, _) = drain(&mut c);
        let inv = requests(&sent, Method::Invite).remove(0).1;
        let ok = answer(&inv, 200, 40000, "");
        c.handle_message(t0, ok.clone(), peer(PHONE));
        let (sent, _) = drain(&mut c);
        let gw = requests(&sent, Method::Invite).remove(0).1;
        c.handle_message(t0 + Duration::from_millis(500), ok, peer(PHONE));
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Ack).len(), 1, "the ACK again");
        assert_eq!(requests(&sent, Method::Invite).len(), 0, "no second INVITE");
        assert!(!has_output(&outs, |o| matches!(
            o,
            Output::Media(MediaCommand::Play(..))
        )));
        c.handle_message(t0, answer(&gw, 100, 0, ""), peer(GW));
        drain(&mut c);
        let me = Controller {
            agent: Some(7),
            supervisor: false,
        };
        c.handle_control(t0 + Duration::from_secs(1), 1, me, Control::Hangup);
        let (sent, _) = drain(&mut c);
        assert_eq!(
            requests(&sent, Method::Cancel).len(),
            1,
            "CANCEL after 100 Trying"
        );
    }

    /// A busy number: the agent's phone gets BYE, the record says rejected; a second
    /// challenge to the same credentials is not answered again.
    #[test]
    fn a_busy_number_or_refused_credentials_end_the_call_with_the_reason() {
        for (status, extra, want) in [
            (486, "", Disposition::Rejected),
            (
                407,
                "Proxy-Authenticate: Digest realm=\"gw\", nonce=\"n2\"\n",
                Disposition::Failed,
            ),
        ] {
            let (mut c, t0) = start(true);
            let (sent, _) = drain(&mut c);
            let inv = requests(&sent, Method::Invite).remove(0).1;
            c.handle_message(t0, answer(&inv, 200, 40000, ""), peer(PHONE));
            let (sent, _) = drain(&mut c);
            let mut gw = requests(&sent, Method::Invite).remove(0).1;
            if status == 407 {
                c.handle_message(t0, answer(&gw, 407, 0, extra), peer(GW));
                let (sent, _) = drain(&mut c);
                gw = requests(&sent, Method::Invite).remove(0).1;
            }
            c.handle_message(t0, answer(&gw, status, 0, extra), peer(GW));
            let (sent, outs) = drain(&mut c);
            assert_eq!(
                requests(&sent, Method::Invite).len(),
                0,
                "{status}: no third try"
            );
            assert_eq!(
                requests(&sent, Method::Bye).len(),
                1,
                "{status}: the phone is hung up"
            );
            let record = outs
                .iter()
                .find_map(|o| match o {
                    Output::Ended { record, .. } => Some(record),
                    _ => None,
                })
                .expect("ended");
            assert_eq!(record.disposition, want);
            assert_eq!(record.final_status, status);
        }
    }

    /// The agent's phone never answers: CANCEL after the ring timeout, nothing is dialled.
    #[test]
    fn an_agent_phone_that_does_not_answer_is_cancelled_and_nothing_is_dialled() {
        let (mut c, t0) = start(false);
        let (sent, _) = drain(&mut c);
        let inv = requests(&sent, Method::Invite).remove(0).1;
        c.handle_message(t0, answer(&inv, 180, 0, ""), peer(PHONE));
        drain(&mut c);
        c.handle_timeout(t0 + Duration::from_secs(21));
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Cancel).len(), 1);
        assert_eq!(requests(&sent, Method::Invite).len(), 0);
        assert!(has_output(
            &outs,
            |o| matches!(o, Output::Ended { record, .. } if record.disposition == Disposition::Abandoned)
        ));
    }

    /// Hang-up from the desk while the number rings: CANCEL to the gateway, BYE to the phone;
    /// another agent cannot.
    #[test]
    fn the_desk_hangs_up_a_ringing_number() {
        let (mut c, t0, gw) = dialling();
        c.handle_message(t0, answer(&gw, 180, 0, ""), peer(GW));
        drain(&mut c);
        let other = Controller {
            agent: Some(8),
            supervisor: false,
        };
        c.handle_control(t0, 1, other, Control::Hangup);
        let (_, outs) = drain(&mut c);
        assert!(has_output(&outs, |o| matches!(
            o,
            Output::Reply {
                result: Err(ControlError::NotFound),
                ..
            }
        )));
        let me = Controller {
            agent: Some(7),
            supervisor: false,
        };
        c.handle_control(t0, 2, me, Control::Hold);
        let (_, outs) = drain(&mut c);
        assert!(has_output(&outs, |o| matches!(
            o,
            Output::Reply {
                result: Err(ControlError::Conflict(_)),
                ..
            }
        )));
        c.handle_control(t0, 3, me, Control::Hangup);
        let (sent, outs) = drain(&mut c);
        assert_eq!(requests(&sent, Method::Cancel).len(), 1);
        assert_eq!(requests(&sent, Method::Bye).len(), 1);
        assert!(has_output(
            &outs,
            |o| matches!(o, Output::Ended { record, .. } if record.ended_by == Some(EndedBy::Desk))
        ));
    }
}
