//! One task per call: the back-to-back user agent that owns both legs' dialogs and
//! transactions and the call's media relay (RFC 3261 §§12–17, RFC 3264 offer/answer).
//!
//! The caller leg (A) is the UAS side of the trunk's INVITE; the agent leg (B) is the UAC side of
//! the INVITE screenpop sends to the agent's phone. Media is anchored: each leg gets screenpop's
//! own SDP, and the relay joins them. Other parts of the system talk to the task over its
//! bounded channel only; later the web layer will send it commands (hang up, hold, transfer)
//! the same way.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::dialog::{target_peer, Dialog, LocalContact};
use super::pop::{self, PopCard};
pub use super::record::{CallRecord, Disposition};
use super::record::{EndedBy, RecordedFile};
use crate::acd::runtime::AgentTarget;
use crate::acd::runtime::{AcdHandle, Decision, RouteRequest};
use crate::acd::Input as AcdInput;
use crate::config::Profile;
use crate::events::payload::{self, CallAnswered, CallWithdrawn};
use crate::events::{Event, EventBus, Payload};
use crate::media::g711::G711;
use crate::media::ports::PortPool;
use crate::media::recorder::{FinishedRecording, RecorderHandle};
use crate::media::relay::{LegId, MediaEngine, MediaEvent, MediaHandle, MediaReport, RemoteMedia};
use crate::sip::caller_id::CallerId;
use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Message, Method, Request, Response};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, SessionDescription};
use crate::sip::transaction::{
    ClientState, ClientTransaction, ServerKey, ServerTransaction, TimerConfig, TxOutput,
};
use crate::sip::Uri;
use crate::store::calls::{CallDisposition, OfferedCall};
use crate::store::customers::Tier;
use crate::store::Store;
use crate::time::{civil_date, epoch_ms};
use crate::transport::{Inbound, Peer, SipSocket};

/// Methods screenpop accepts in a call.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER";

/// What every call shares.
pub struct CallEnv {
    pub sip: SipSocket,
    pub me: LocalContact,
    /// Address for RTP sockets and SDP.
    pub media_ip: IpAddr,
    pub profile: Arc<Profile>,
    pub codecs: Vec<Codec>,
    pub ports: Arc<PortPool>,
    pub media: MediaEngine,
    pub recorder: Arc<RecorderHandle>,
    pub timers: TimerConfig,
    pub ended: mpsc::UnboundedSender<CallEnded>,
    /// Customers and contact logs.
    pub store: Store,
    /// Region for reading national caller numbers (the profile's `default_region`).
    pub region: phonenumber::country::Id,
    /// Events for the desktops.
    pub bus: Arc<dyn EventBus>,
    /// Queues and agents: calls without a fixed agent target are routed here.
    pub acd: AcdHandle,
    /// New Call-IDs a call answers to (each agent it rings gets a fresh agent-leg Call-ID).
    pub routes: mpsc::UnboundedSender<Route>,
}

/// Tells the dispatcher to send a Call-ID's messages to a call task.
pub struct Route {
    pub call_id: String,
    pub owner: String,
    pub tx: mpsc::Sender<Inbound>,
}

/// A new inbound call handed over by the dispatcher.
pub struct NewCall {
    pub invite: Request,
    pub peer: Peer,
    /// When the INVITE came off the socket.
    pub received: Instant,
    pub caller: CallerId,
    pub trunk: String,
    /// A fixed agent target (the trunk's `agent` setting); `None` routes through the ACD.
    pub agent: Option<AgentTarget>,
}

/// The call-ids a call answers to, so the dispatcher can route to it.
pub struct CallHandle {
    pub id: String,
    pub call_ids: Vec<String>,
    pub tx: mpsc::Sender<Inbound>,
}

/// Sent when a call task exits.
#[derive(Debug)]
pub struct CallEnded {
    /// The call's own id: routes are removed only if they still point at this call.
    pub id: String,
    pub call_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Agent leg INVITE sent, caller hears ringback.
    Ringing,
    /// Both legs answered.
    Up,
    /// Over: only retransmissions are absorbed until the transactions end.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    AgentInvite,
    ReInvite,
    Bye,
    Cancel,
}

struct Client {
    tx: ClientTransaction,
    peer: Peer,
    leg: LegId,
    purpose: Purpose,
    /// Which agent-leg attempt this belongs to (each agent rung is a new attempt).
    attempt: u32,
    /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
    provisional: bool,
    /// Cancel as soon as a provisional response arrives.
    cancel_pending: bool,
}

struct Server {
    tx: ServerTransaction,
    peer: Peer,
    leg: LegId,
}

/// A leg's media negotiation state.
struct LegMedia {
    local: LocalMedia,
    /// The last offer we sent on this leg and await an answer to.
    pending_offer: Option<SessionDescription>,
    dtmf_pt: Option<u8>,
    /// Our last answer or accepted offer body, repeated on retransmitted 2xx.
    last_sdp: Option<Vec<u8>>,
}

struct Call {
    env: Arc<CallEnv>,
    id: String,
    phase: Phase,
    a: Dialog,
    b: Dialog,
    invite: Request,
    invite_key: ServerKey,
    caller: CallerId,
    trunk: String,
    agent_uri: Option<Uri>,
    codec: Codec,
    a_media: LegMedia,
    b_media: LegMedia,
    media: Option<MediaHandle>,
    servers: Vec<Server>,
    clients: Vec<Client>,
    b_answered: bool,
    b_ack: Option<Vec<u8>>,
    /// The current agent-leg attempt; earlier attempts' dialogs are kept to release a late 2xx.
    attempt: u32,
    old_b: Vec<(u32, Dialog)>,
    /// Every agent-leg Call-ID this call used.
    b_call_ids: Vec<String>,
    /// Routed by the ACD (no fixed agent target).
    acd_mode: bool,
    /// Our own inbox, to register new agent-leg Call-IDs with the dispatcher.
    inbox: mpsc::Sender<Inbound>,
    /// The agent (store id) ringing or bridged, and the queue the call waits in.
    agent_id: Option<i64>,
    queue: Option<(i64, String)>,
    card: PopCard,
    vip: bool,
    assigned_agent: Option<i64>,
    /// When the INVITE came off the socket.
    received: Instant,
    ring_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    offered_at: SystemTime,
    answered_at: Option<(Instant, SystemTime)>,
    ended_at: Option<(Instant, SystemTime)>,
    ended_by: Option<LegId>,
    disposition: Option<Disposition>,
    final_status: u16,
    dialed: String,
    agent_needs_dns: bool,
    /// A leg offered sendonly/recvonly/inactive: silence is expected.
    on_hold: bool,
    /// The call was ended because a leg stopped sending RTP.
    rtp_timeout: bool,
    caller_e164: Option<String>,
    customer_id: Option<i64>,
    candidates: Vec<i64>,
    log_id: Option<i64>,
    /// The trunk INVITE's Max-Forwards; the agent leg gets one less, so a target that
    /// points back at screenpop ends instead of looping.
    max_forwards: u32,
}

fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn new_call_id(host: &str) -> String {
    format!("{:032x}@{host}", rand::random::<u128>())
}

/// Starts a call task; returns `None` after answering the caller itself when the call cannot be
/// taken (the INVITE has already been answered in that case).
pub fn spawn(env: Arc<CallEnv>, new: NewCall) -> Option<CallHandle> {
    let id = format!(
        "{}-{:08x}",
        epoch_ms(SystemTime::now()),
        rand::random::<u32>()
    );
    let a_call_id = new.invite.call_id().unwrap_or_default().to_string();
    let span = info_span!("call", call_id = %a_call_id, id = %id);
    let _enter = span.enter();
    let now = Instant::now();
    let key = ServerKey::of(&new.invite)?;
    let reliable = new.peer.transport.reliable();
    let mut server = ServerTransaction::new(new.invite.clone(), key.clone(), reliable, env.timers);
    let local_tag = new_tag();
    let mut reject = |status: u16, why: &str| {
        info!(status, why, "call refused");
        let mut r = new.invite.response(status, Some(&local_tag));
        if status == 488 || status == 415 {
            r.headers.push(HeaderName::Accept, "application/sdp");
        }
        server.respond(now, &r);
        while let Some(o) = server.poll_output() {
            if let TxOutput::Transmit(b) = o {
                env.sip.send(new.peer, b);
            }
        }
        // The transaction is dropped: an ACK or retransmission finds no call and is answered
        // statelessly again by the dispatcher.
        None
    };
    let (Some(from), Some(to)) = (new.invite.from(), new.invite.to()) else {
        return reject(400, "missing From/To");
    };
    let offer = if new.invite.body.is_empty() {
        None
    } else {
        match SessionDescription::parse(&new.invite.body) {
            Ok(o) => Some(o),
            Err(e) => {
                debug!(error = %e, "bad SDP");
                return reject(400, "malformed SDP");
            }
        }
    };
    let Some(offer) = offer else {
        // Delayed offer (INVITE without SDP) is not supported on trunks yet.
        return reject(488, "INVITE without SDP offer");
    };
    let Some(a_sock) = env.ports.bind(env.media_ip) else {
        return reject(503, "RTP port pool exhausted");
    };
    let Some(b_sock) = env.ports.bind(env.media_ip) else {
        return reject(503, "RTP port pool exhausted");
    };
    let mut a_local = LocalMedia {
        addr: env.media_ip,
        port: a_sock.port(),
        session_id: rand::random::<u32>() as u64,
        session_version: 1,
        username: "screenpop".into(),
    };
    let negotiated = match sdp::answer(&offer, &a_local, &env.codecs) {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "no common codec");
            return reject(488, "no common codec");
        }
    };
    a_local.session_version = 1;
    let (media, media_events) = env.media.add_call(a_sock, b_sock);
    let codec = negotiated.codec;

    let mut local_to = to.clone();
    local_to.set_param("tag", Some(&local_tag));
    let a = Dialog {
        call_id: a_call_id.clone(),
        local: local_to,
        remote: from.clone(),
        remote_target: new
            .invite
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| from.uri.clone()),
        route_set: new
            .invite
            .headers
            .get_all(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect(),
        local_cseq: rand::random::<u16>() as u32,
        remote_cseq: new.invite.cseq().map(|c| c.seq),
        peer: new.peer,
    };
    // With the ACD the agent leg is set up when an agent is offered the call; until then it
    // is a placeholder aimed at ourselves that is never used.
    let acd_mode = new.agent.is_none();
    let agent = new.agent.clone().unwrap_or_else(|| AgentTarget {
        uri: Uri::sip(None, &env.me.host, Some(env.me.port)),
        peer: Some(new.peer),
    });
    let (b, agent_needs_dns) = agent_dialog(&env, &new.caller, &agent, new.peer);
    let b_call_id = b.call_id.clone();
    let b_local = LocalMedia {
        addr: env.media_ip,
        port: media.agent_port,
        session_id: rand::random::<u32>() as u64,
        session_version: 1,
        username: "screenpop".into(),
    };
    let dialed = new.invite.uri.user_unescaped().unwrap_or_default();
    let (tx, rx) = mpsc::channel(64);
    let call = Call {
        env: env.clone(),
        id: id.clone(),
        phase: Phase::Ringing,
        a,
        b,
        invite: new.invite.clone(),
        invite_key: key,
        caller: new.caller,
        trunk: new.trunk,
        agent_uri: (!acd_mode).then_some(agent.uri),
        codec,
        a_media: LegMedia {
            local: a_local,
            pending_offer: None,
            dtmf_pt: negotiated.dtmf_pt,
            last_sdp: Some(negotiated.answer.to_string().into_bytes()),
        },
        b_media: LegMedia {
            local: b_local,
            pending_offer: None,
            dtmf_pt: negotiated.dtmf_pt.map(|_| 101),
            last_sdp: None,
        },
        media: None,
        servers: vec![Server {
            tx: server,
            peer: new.peer,
            leg: LegId::Caller,
        }],
        clients: Vec::new(),
        b_answered: false,
        b_ack: None,
        attempt: 0,
        old_b: Vec::new(),
        b_call_ids: if acd_mode {
            Vec::new()
        } else {
            vec![b_call_id.clone()]
        },
        acd_mode,
        inbox: tx.clone(),
        agent_id: None,
        queue: None,
        card: PopCard::default(),
        vip: false,
        assigned_agent: None,
        received: new.received,
        // With the ACD the queue's ring timeout applies instead.
        ring_deadline: (!acd_mode)
            .then(|| now + Duration::from_secs(env.profile.ring_timeout_secs)),
        linger_until: None,
        offered_at: SystemTime::now(),
        answered_at: None,
        ended_at: None,
        ended_by: None,
        disposition: None,
        final_status: 0,
        dialed,
        agent_needs_dns,
        on_hold: false,
        rtp_timeout: false,
        caller_e164: None,
        customer_id: None,
        candidates: Vec::new(),
        log_id: None,
        max_forwards: new
            .invite
            .headers
            .get(&HeaderName::MaxForwards)
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70),
    };
    let remote_a = remote_media(negotiated.remote_rtp, codec, negotiated.dtmf_pt);
    media.set_remote(LegId::Caller, remote_a);
    media.set_signalling_ip(LegId::Caller, call.a.peer.addr.ip());
    media.set_signalling_ip(LegId::Agent, call.b.peer.addr.ip());
    let mut call = call;
    call.media = Some(media);
    drop(_enter);
    tokio::spawn(call.run(rx, media_events).instrument(span));
    let mut call_ids = vec![a_call_id];
    if !acd_mode {
        call_ids.push(b_call_id);
    }
    Some(CallHandle { id, call_ids, tx })
}

/// A fresh agent-leg dialog towards `agent` (new Call-ID and tag), and whether its host name
/// must be resolved first. The peer of a host-named target is a placeholder until then.
fn agent_dialog(
    env: &CallEnv,
    caller: &CallerId,
    agent: &AgentTarget,
    fallback: Peer,
) -> (Dialog, bool) {
    let b_peer = agent
        .peer
        .unwrap_or_else(|| target_peer(&agent.uri, fallback));
    let needs_dns = agent.peer.is_none()
        && agent
            .uri
            .host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_err();
    let user = caller
        .number
        .clone()
        .unwrap_or_else(|| "anonymous".to_string());
    let mut b_from = NameAddr::new(Uri::sip(Some(&user), &env.me.host, None));
    b_from.display = caller.name.clone();
    b_from.set_param("tag", Some(&new_tag()));
    let b = Dialog {
        call_id: new_call_id(&env.me.host),
        local: b_from,
        remote: NameAddr::new(agent.uri.clone()),
        remote_target: agent.uri.clone(),
        route_set: Vec::new(),
        local_cseq: 0,
        remote_cseq: None,
        peer: b_peer,
    };
    (b, needs_dns)
}

async fn next_decision(rx: &mut Option<mpsc::UnboundedReceiver<Decision>>) -> Option<Decision> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn remote_media(rtp: Option<SocketAddr>, codec: Codec, dtmf_pt: Option<u8>) -> RemoteMedia {
    RemoteMedia {
        rtp,
        codec: g711_of(codec),
        dtmf_pt,
    }
}

fn g711_of(c: Codec) -> G711 {
    match c {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

impl Call {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Inbound>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
    ) {
        let now = Instant::now();
        // 100 Trying at once (RFC 3261 §8.2.6.1), then the agent leg.
        let trying = self.invite.response(100, None);
        self.respond_a_invite(now, trying);
        self.pump(now).await;
        self.log_offered().await;
        let mut decisions = None;
        if self.acd_mode {
            // The caller hears ringback while waiting for an agent (RFC 3261 §21.1.2).
            let tag = self.a.local_tag().to_string();
            let mut ringing = self.invite.response(180, Some(&tag));
            ringing
                .headers
                .push(HeaderName::Contact, self.env.me.contact(&self.a.peer));
            self.respond_a_invite(now, ringing);
            if self.max_forwards == 0 {
                self.disposition = Some(Disposition::Failed);
                self.fail_caller(now, 483);
                self.end(now, None).await;
            } else {
                let (tx, rx) = mpsc::unbounded_channel();
                decisions = Some(rx);
                self.env.acd.route(RouteRequest {
                    call: self.id.clone(),
                    dialed: self.dialed.clone(),
                    vip: self.vip,
                    assigned: self.assigned_agent,
                    decisions: tx,
                });
            }
        } else if self.agent_needs_dns && !self.resolve_agent().await {
            self.disposition = Some(Disposition::Failed);
            self.fail_caller(Instant::now(), 480);
            self.end(Instant::now(), None).await;
        } else if self.max_forwards == 0 {
            self.disposition = Some(Disposition::Failed);
            self.fail_caller(now, 483);
            self.end(now, None).await;
        } else {
            self.start_agent_leg(now);
        }
        let now = Instant::now();
        self.pump(now).await;
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                m = rx.recv() => m,
                Some(d) = next_decision(&mut decisions) => {
                    let now = Instant::now();
                    self.on_decision(now, d).await;
                    self.pump(now).await;
                    if self.done(now) { break; }
                    continue;
                }
                Some(ev) = media_events.recv() => {
                    let now = Instant::now();
                    self.on_media_event(now, ev).await;
                    self.pump(now).await;
                    if self.done(now) { break; }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.on_timer(now).await;
                    self.pump(now).await;
                    if self.done(now) { break; }
                    continue;
                }
            };
            let Some(input) = input else { break };
            let now = Instant::now();
            self.on_message(now, input).await;
            self.pump(now).await;
            if self.done(now) {
                break;
            }
        }
        // Make sure a call that ended without a hang-up (channel closed) is finalized too.
        let now = Instant::now();
        self.end(now, None).await;
        let mut call_ids = vec![self.a.call_id.clone()];
        call_ids.extend(self.b_call_ids.iter().cloned());
        let _ = self.env.ended.send(CallEnded {
            id: self.id.clone(),
            call_ids,
        });
    }

    /// Acts on the ACD's word: the queue, an agent to ring, a withdrawn offer, an overflow.
    async fn on_decision(&mut self, now: Instant, d: Decision) {
        match d {
            Decision::Queued { queue, name } => {
                // The queue goes into the contact log at the answer and at hang-up.
                info!(queue = %name, "queued");
                if self.phase == Phase::Ended {
                    // The caller left before the ACD's word arrived: nobody waits.
                    return;
                }
                self.env.bus.publish(pop::queued(
                    &self.id,
                    queue,
                    &name,
                    &self.caller,
                    self.caller_e164.as_deref(),
                    SystemTime::now(),
                ));
                self.queue = Some((queue, name));
            }
            Decision::NoQueue => {
                info!(dialed = %self.dialed, "no queue for this number and no default queue");
                if self.phase == Phase::Ringing {
                    self.cancel_agent(now);
                    self.disposition = Some(Disposition::Missed);
                    self.fail_caller(now, 480);
                    self.end(now, None).await;
                }
            }
            Decision::Overflow => {
                info!("nobody answered within the queue's maximum wait");
                if self.phase == Phase::Ringing {
                    self.cancel_agent(now);
                    self.disposition = Some(Disposition::Missed);
                    self.fail_caller(now, 480);
                    self.end(now, None).await;
                }
            }
            Decision::Withdraw { agent } => {
                if self.b_answered || self.agent_id != Some(agent) {
                    // The agent answered first, or its offer already ended (refused).
                    return;
                }
                info!(agent, "ring-no-answer: offer withdrawn");
                self.cancel_agent(now);
                self.withdrawn(agent, "no_answer");
            }
            Decision::Offer(offer) => {
                if self.phase != Phase::Ringing || self.b_answered {
                    // Answered or gone meanwhile; the ACD frees the agent when it hears so.
                    return;
                }
                // Never two phones ringing for one call.
                self.cancel_agent(now);
                let (b, needs_dns) =
                    agent_dialog(&self.env, &self.caller, &offer.target, self.a.peer);
                let old = std::mem::replace(&mut self.b, b);
                if self.attempt > 0 {
                    self.old_b.push((self.attempt, old));
                }
                self.attempt += 1;
                self.b_answered = false;
                self.b_ack = None;
                self.b_media.pending_offer = None;
                self.b_call_ids.push(self.b.call_id.clone());
                let _ = self.env.routes.send(Route {
                    call_id: self.b.call_id.clone(),
                    owner: self.id.clone(),
                    tx: self.inbox.clone(),
                });
                self.agent_id = Some(offer.agent);
                self.agent_uri = Some(offer.target.uri.clone());
                if needs_dns && !self.resolve_agent().await {
                    self.agent_id = None;
                    self.env.acd.tell(AcdInput::Refused {
                        call: self.id.clone(),
                        agent: offer.agent,
                    });
                    return;
                }
                if let Some(m) = &self.media {
                    m.set_signalling_ip(LegId::Agent, self.b.peer.addr.ip());
                }
                info!(agent = offer.agent, name = %offer.display_name, "offered");
                self.start_agent_leg(now);
                self.publish_offered();
                self.note_agent(offer.agent);
            }
        }
    }

    /// The contact log names the agent being rung, and then the one who answered, so that
    /// agent may work on the call from the pop at once (pick the customer, write notes) —
    /// written off the pop's path, after the pop went out.
    fn note_agent(&self, agent: i64) {
        let Some(log) = self.log_id else { return };
        let store = self.env.store.clone();
        let queue = self.queue.as_ref().map(|q| q.0);
        tokio::spawn(
            async move {
                if let Err(e) = store.set_call_agent(log, agent, queue).await {
                    warn!(error = %e, "contact log agent not noted");
                }
            }
            .in_current_span(),
        );
    }

    /// The screen-pop, to the agent being rung (and supervisors).
    fn publish_offered(&self) {
        self.env.bus.publish(pop::offered(pop::Offered {
            call_id: &self.id,
            log_id: self.log_id,
            queue: self.queue.as_ref().map(|q| q.1.as_str()),
            queue_id: self.queue.as_ref().map(|q| q.0),
            agent_id: self.agent_id,
            caller: &self.caller,
            caller_e164: self.caller_e164.as_deref(),
            dialed: &self.dialed,
            card: &self.card,
            offered_at: self.offered_at,
            since: self.received,
        }));
    }

    /// The agent's desktop drops the pop: the offer went elsewhere.
    fn withdrawn(&mut self, agent: i64, reason: &str) {
        self.env
            .bus
            .publish(Event::new(Payload::CallWithdrawn(CallWithdrawn {
                call_id: self.id.clone(),
                agent_id: agent,
                reason: reason.to_string(),
            })));
        self.agent_id = None;
        // Responses to the withdrawn INVITE belong to an old attempt from now on.
        let fresh = Dialog {
            call_id: String::new(),
            ..self.b.clone()
        };
        let old = std::mem::replace(&mut self.b, fresh);
        self.old_b.push((self.attempt, old));
        self.attempt += 1;
    }

    fn done(&self, now: Instant) -> bool {
        self.phase == Phase::Ended
            && ((self.servers.is_empty() && self.clients.is_empty())
                || self.linger_until.is_some_and(|l| now >= l))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let txs = self
            .servers
            .iter()
            .filter_map(|s| s.tx.poll_timeout())
            .chain(self.clients.iter().filter_map(|c| c.tx.poll_timeout()));
        txs.chain(self.ring_deadline).chain(self.linger_until).min()
    }

    fn dialog(&mut self, leg: LegId) -> &mut Dialog {
        match leg {
            LegId::Caller => &mut self.a,
            LegId::Agent => &mut self.b,
        }
    }

    fn leg_media(&mut self, leg: LegId) -> &mut LegMedia {
        match leg {
            LegId::Caller => &mut self.a_media,
            LegId::Agent => &mut self.b_media,
        }
    }

    /// Matches the caller to customers (creating one for an unknown number when the profile
    /// says so; never for withheld numbers) and writes the contact log row. A store failure is
    /// logged and the call goes on: a database outage must not drop calls.
    async fn log_offered(&mut self) {
        let store = self.env.store.clone();
        let caller = crate::crm::caller::match_or_create(
            &store,
            &self.caller,
            self.env.region,
            self.env.profile.create_customers_from_calls,
        )
        .await;
        self.caller_e164 = caller.e164;
        let m = caller.matched;
        self.candidates = m.candidates.iter().map(|c| c.id).collect();
        self.customer_id = m.customer.as_ref().map(|c| c.id);
        self.vip = m.customer.as_ref().is_some_and(|c| c.tier == Tier::Vip);
        self.assigned_agent = m.customer.as_ref().and_then(|c| c.assigned_agent_id);
        self.card = PopCard::load(&store, &m).await;
        let offered = OfferedCall {
            sip_call_id: self.a.call_id.clone(),
            caller_raw: self.caller.raw.clone(),
            caller_e164: self.caller_e164.clone(),
            dialed: self.dialed.clone(),
            customer_id: self.customer_id,
            offered_at: epoch_ms(self.offered_at) as i64,
        };
        match store.insert_offered_call(&offered).await {
            Ok(id) => self.log_id = Some(id),
            Err(e) => warn!(error = %e, "contact log not written"),
        }
    }

    /// Resolves a host-named agent target (A/AAAA; SRV/NAPTR are not used).
    async fn resolve_agent(&mut self) -> bool {
        let (host, port) = self.b.remote_target.host_port();
        let host = host.trim_matches(['[', ']']).to_string();
        // Our SIP socket speaks one address family: take an address of that family.
        let v4 = self.env.media_ip.is_ipv4();
        let resolved = tokio::net::lookup_host(format!("{host}:{port}"))
            .await
            .map(|mut addrs| addrs.find(|a| a.is_ipv4() == v4));
        match resolved {
            Ok(Some(addr)) => {
                self.b.peer.addr = addr;
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(%host, error = %e, "agent host does not resolve");
                false
            }
        }
    }

    fn start_agent_leg(&mut self, now: Instant) {
        let me = self.env.me.clone();
        let mut inv = self.b.request(Method::Invite, &me, None);
        inv.headers.set(
            HeaderName::MaxForwards,
            self.max_forwards.saturating_sub(1).min(70).to_string(),
        );
        let offer = sdp::offer(
            &self.b_media.local,
            &[self.codec],
            self.b_media.dtmf_pt,
            Direction::SendRecv,
        );
        inv.headers.push(HeaderName::Allow, ALLOW);
        if let Some(n) = &self.caller.number {
            inv.headers.push(
                HeaderName::PAssertedIdentity,
                format!("<sip:{n}@{}>", me.host),
            );
        }
        inv.headers.push(
            HeaderName::Other("X-Screenpop-Call".into()),
            self.id.clone(),
        );
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        self.b_media.pending_offer = Some(offer);
        info!(agent = %inv.uri, peer = %self.b.peer.addr, "ringing agent");
        self.send_client(now, inv, LegId::Agent, Purpose::AgentInvite);
    }

    fn send_client(&mut self, now: Instant, req: Request, leg: LegId, purpose: Purpose) {
        let peer = self.leg_peer(leg);
        let tx = ClientTransaction::new(now, req, peer.transport.reliable(), self.env.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg,
            purpose,
            attempt: self.attempt,
            provisional: false,
            cancel_pending: false,
        });
    }

    /// Where a leg's in-dialog requests go: the first hop of its route set, else its remote
    /// target (caller leg) or the agent phone's known address (agent leg).
    fn leg_peer(&self, leg: LegId) -> Peer {
        let d = match leg {
            LegId::Caller => &self.a,
            LegId::Agent => &self.b,
        };
        if leg == LegId::Agent && d.route_set.is_empty() {
            return d.peer;
        }
        target_peer(&d.next_hop(), d.peer)
    }

    fn respond_a_invite(&mut self, now: Instant, resp: Response) {
        if let Some(s) = self
            .servers
            .iter_mut()
            .find(|s| s.tx.key == self.invite_key)
        {
            s.tx.respond(now, &resp);
        }
    }

    fn a_invite_pending(&self) -> bool {
        self.servers.iter().any(|s| {
            s.tx.key == self.invite_key
                && matches!(
                    s.tx.state(),
                    crate::sip::transaction::ServerState::Proceeding
                )
        })
    }

    /// Moves transaction outputs to the network and to the call logic until nothing is left.
    async fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            let mut events: Vec<(usize, TxOutput)> = Vec::new();
            for (i, c) in self.clients.iter_mut().enumerate() {
                while let Some(o) = c.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => self.env.sip.send(c.peer, b),
                        other => events.push((i, other)),
                    }
                }
            }
            let mut server_events: Vec<(usize, TxOutput)> = Vec::new();
            for (i, s) in self.servers.iter_mut().enumerate() {
                while let Some(o) = s.tx.poll_output() {
                    match o {
                        TxOutput::Transmit(b) => self.env.sip.send(s.peer, b),
                        other => server_events.push((i, other)),
                    }
                }
            }
            for (i, ev) in events {
                progressed = true;
                let (leg, purpose, attempt) = (
                    self.clients[i].leg,
                    self.clients[i].purpose,
                    self.clients[i].attempt,
                );
                if let TxOutput::Response(r) = &ev {
                    if purpose == Purpose::AgentInvite && r.status < 200 {
                        // Any provisional allows a CANCEL (RFC 3261 §9.1).
                        self.clients[i].provisional = true;
                        if std::mem::take(&mut self.clients[i].cancel_pending) {
                            self.send_cancel(now, i);
                        }
                    }
                }
                match ev {
                    TxOutput::Response(r) if purpose == Purpose::AgentInvite => {
                        self.on_agent_invite_response(now, attempt, r).await
                    }
                    TxOutput::Response(r) => self.on_client_response(leg, purpose, r).await,
                    TxOutput::Timeout
                        if purpose == Purpose::AgentInvite && attempt != self.attempt => {}
                    TxOutput::Timeout => self.on_client_timeout(now, leg, purpose).await,
                    _ => {}
                }
            }
            for (i, ev) in server_events {
                progressed = true;
                let leg = self.servers[i].leg;
                match ev {
                    TxOutput::Request(ack) => self.on_ack(leg, ack).await,
                    TxOutput::Timeout => {
                        let invite = self.servers[i].tx.request.method == Method::Invite;
                        if invite && self.phase != Phase::Ended {
                            warn!(?leg, "no ACK for our final response");
                            self.hang_up(now, None).await;
                        }
                    }
                    _ => {}
                }
            }
            let before = self.clients.len() + self.servers.len();
            self.clients
                .retain(|c| c.tx.state() != crate::sip::transaction::ClientState::Terminated);
            self.servers
                .retain(|s| s.tx.state() != crate::sip::transaction::ServerState::Terminated);
            if !progressed && before == self.clients.len() + self.servers.len() {
                break;
            }
        }
    }

    async fn on_media_event(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::Silent { leg } if self.phase == Phase::Up => {
                warn!(?leg, "no RTP within the timeout; hanging up");
                self.rtp_timeout = true;
                self.hang_up(now, None).await;
            }
            MediaEvent::Silent { .. } => {}
        }
    }

    /// The silence timeout to watch with, unless a leg is on hold.
    fn media_watch(&self) -> Option<Duration> {
        let secs = self.env.profile.rtp_timeout_secs;
        (secs > 0 && !self.on_hold).then(|| Duration::from_secs(secs))
    }

    async fn on_timer(&mut self, now: Instant) {
        for c in &mut self.clients {
            c.tx.handle_timeout(now);
        }
        for s in &mut self.servers {
            s.tx.handle_timeout(now);
        }
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            if self.phase == Phase::Ringing {
                info!("agent did not answer in time");
                self.disposition = Some(Disposition::Missed);
                self.cancel_agent(now);
                self.fail_caller(now, 480);
                self.end(now, None).await;
            }
        }
    }

    async fn on_message(&mut self, now: Instant, input: Inbound) {
        let call_id = input.msg.headers().get(&HeaderName::CallId).unwrap_or("");
        if call_id != self.b.call_id && self.b_call_ids.iter().any(|c| c == call_id) {
            return self.on_stale_leg(now, input);
        }
        let leg = if call_id == self.b.call_id {
            LegId::Agent
        } else {
            LegId::Caller
        };
        match input.msg {
            Message::Response(resp) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&resp)) {
                    c.tx.handle_response(now, resp);
                } else if leg == LegId::Agent
                    && resp.status / 100 == 2
                    && resp.cseq().is_some_and(|c| c.method == Method::Invite)
                {
                    // A 2xx retransmitted after the transaction ended: ACK it again.
                    if let Some(ack) = &self.b_ack {
                        self.env.sip.send(self.b.peer, ack.clone());
                    }
                }
            }
            Message::Request(mut req) => {
                if input.peer.transport == crate::transport::Transport::Udp {
                    req.stamp_source(input.peer.addr);
                }
                self.on_request(now, leg, req, input.peer).await
            }
        }
    }

    /// A message on the Call-ID of an agent leg we no longer bridge (a withdrawn or released
    /// offer): responses still complete their transactions; requests are answered without
    /// touching the call (BYE and CANCEL 200, anything else 481).
    fn on_stale_leg(&mut self, now: Instant, input: Inbound) {
        match input.msg {
            Message::Response(resp) => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.tx.matches(&resp)) {
                    c.tx.handle_response(now, resp);
                }
            }
            Message::Request(req) if req.method == Method::Ack => {}
            Message::Request(req) => {
                let status = match req.method {
                    Method::Bye | Method::Cancel => 200,
                    _ => 481,
                };
                let peer = crate::sip::peer::response_peer(&req, input.peer);
                let resp = req.response(status, None);
                self.env.sip.send(peer, Message::Response(resp).to_bytes());
            }
        }
    }

    async fn on_request(&mut self, now: Instant, leg: LegId, req: Request, peer: Peer) {
        let Some(key) = ServerKey::of(&req) else {
            return;
        };
        // Retransmissions and ACKs belong to an existing transaction.
        if let Some(s) = self.servers.iter_mut().find(|s| s.tx.key == key) {
            s.tx.handle_request(now, req);
            return;
        }
        if req.method == Method::Ack {
            // The ACK for a 2xx is its own transaction with a new branch (RFC 3261 §17.1.1.3):
            // match it to our INVITE server transaction by dialog and CSeq number.
            let seq = req.cseq().map(|c| c.seq);
            let ours = self.dialog(leg).local_tag().to_string();
            let in_dialog = req.to().is_some_and(|t| t.tag() == Some(ours.as_str()));
            if let Some(s) = self.servers.iter_mut().find(|s| {
                s.leg == leg
                    && s.tx.request.method == Method::Invite
                    && s.tx.request.cseq().map(|c| c.seq) == seq
            }) {
                if in_dialog {
                    s.tx.handle_request(now, req);
                }
            }
            return;
        }
        let peer = crate::sip::peer::response_peer(&req, peer);
        let reliable = peer.transport.reliable();
        self.servers.push(Server {
            tx: ServerTransaction::new(req.clone(), key, reliable, self.env.timers),
            peer,
            leg,
        });
        let tag = self.dialog(leg).local_tag().to_string();
        if req.method == Method::Cancel {
            let target = ServerKey::cancelled_invite(&req);
            let ok = req.response(200, Some(&tag));
            if target.as_ref() == Some(&self.invite_key) && self.a_invite_pending() {
                info!("caller cancelled");
                self.caller_gave_up(now, ok).await;
            } else if target.as_ref() == Some(&self.invite_key) {
                // Too late: the INVITE already has its final response (RFC 3261 §9.2).
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
            } else {
                let resp = req.response(481, Some(&tag));
                self.respond_last(now, resp);
            }
            return;
        }
        // In-dialog request: the CSeq must advance (RFC 3261 §12.2.2).
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
        if !self.dialog(leg).accept_remote_cseq(seq) {
            let resp = req.response(500, Some(&tag));
            self.respond_last(now, resp);
            return;
        }
        match req.method {
            Method::Bye if leg == LegId::Caller && self.phase == Phase::Ringing => {
                // Only possible after an early dialog (183): end it like a CANCEL.
                info!("caller hung up while ringing");
                self.caller_gave_up(now, req.response(200, Some(&tag)))
                    .await;
            }
            Method::Bye => {
                let resp = req.response(200, Some(&tag));
                self.respond_last(now, resp);
                info!(?leg, "hang-up");
                self.hang_up(now, Some(leg)).await;
            }
            Method::Invite => self.on_reinvite(now, leg, req).await,
            Method::Options | Method::Info => {
                let mut resp = req.response(200, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
            Method::Extension(_) => {
                let resp = req.response(501, Some(&tag));
                self.respond_last(now, resp);
            }
            _ => {
                let mut resp = req.response(405, Some(&tag));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond_last(now, resp);
            }
        }
    }

    /// The caller left before an answer (CANCEL, or BYE on an early dialog): `ok` answers that
    /// request first, then the INVITE gets 487 (RFC 3261 §9.2) and the agent leg is cancelled.
    async fn caller_gave_up(&mut self, now: Instant, ok: Response) {
        self.respond_last(now, ok);
        self.flush_last();
        let tag = self.a.local_tag().to_string();
        let resp = self.invite.response(487, Some(&tag));
        self.respond_a_invite(now, resp);
        self.final_status = 487;
        self.disposition = Some(Disposition::Abandoned);
        self.cancel_agent(now);
        self.end(now, Some(LegId::Caller)).await;
    }

    /// Sends what the most recent server transaction has queued, ahead of everything else.
    fn flush_last(&mut self) {
        if let Some(s) = self.servers.last_mut() {
            let mut rest = Vec::new();
            while let Some(o) = s.tx.poll_output() {
                match o {
                    TxOutput::Transmit(b) => self.env.sip.send(s.peer, b),
                    other => rest.push(other),
                }
            }
            debug_assert!(rest.is_empty(), "a response produces only transmissions");
        }
    }

    /// Responds on the most recently created server transaction.
    fn respond_last(&mut self, now: Instant, resp: Response) {
        if let Some(s) = self.servers.last_mut() {
            s.tx.respond(now, &resp);
        }
    }

    async fn on_reinvite(&mut self, now: Instant, leg: LegId, req: Request) {
        let tag = self.dialog(leg).local_tag().to_string();
        let pending = self.clients.iter().any(|c| {
            c.purpose == Purpose::ReInvite
                && matches!(c.tx.state(), ClientState::Calling | ClientState::Proceeding)
        });
        if self.phase != Phase::Up || pending {
            // Glare or not yet established (RFC 3261 §14.2).
            let resp = req.response(491, Some(&tag));
            self.respond_last(now, resp);
            return;
        }
        if let Some(c) = req.contact() {
            self.dialog(leg).remote_target = c.uri;
        }
        let codec = self.codec;
        let me = self.env.me.clone();
        if req.body.is_empty() {
            // Offer in our 2xx, answer in the ACK (RFC 3264 §4).
            let lm = self.leg_media(leg);
            lm.local.bump_version();
            let offer = sdp::offer(&lm.local, &[codec], lm.dtmf_pt, Direction::SendRecv);
            lm.pending_offer = Some(offer.clone());
            let mut resp = req.response(200, Some(&tag));
            resp.headers
                .push(HeaderName::Contact, me.contact(&self.dialog(leg).peer));
            let resp = resp.with_body("application/sdp", offer.to_string().into_bytes());
            self.respond_last(now, resp);
            return;
        }
        let offer = match SessionDescription::parse(&req.body) {
            Ok(o) => o,
            Err(_) => {
                let resp = req.response(400, Some(&tag));
                self.respond_last(now, resp);
                return;
            }
        };
        let lm = self.leg_media(leg);
        lm.local.bump_version();
        let neg = match sdp::answer(&offer, &lm.local, &[codec]) {
            Ok(n) => n,
            Err(_) => {
                let resp = req.response(488, Some(&tag));
                self.respond_last(now, resp);
                return;
            }
        };
        lm.dtmf_pt = neg.dtmf_pt;
        let body = neg.answer.to_string().into_bytes();
        lm.last_sdp = Some(body.clone());
        let offered_dir = neg.direction.reversed();
        info!(?leg, direction = offered_dir.as_str(), "re-INVITE");
        self.on_hold = offered_dir != Direction::SendRecv;
        if let Some(m) = &self.media {
            m.watch(self.media_watch());
        }
        if let Some(m) = &self.media {
            m.set_remote(leg, remote_media(neg.remote_rtp, neg.codec, neg.dtmf_pt));
        }
        let mut resp = req.response(200, Some(&tag));
        resp.headers
            .push(HeaderName::Contact, me.contact(&self.dialog(leg).peer));
        resp.headers.push(HeaderName::Allow, ALLOW);
        let resp = resp.with_body("application/sdp", body);
        self.respond_last(now, resp);
        // Mirror the hold or resume to the other leg.
        let other = match leg {
            LegId::Caller => LegId::Agent,
            LegId::Agent => LegId::Caller,
        };
        let om = self.leg_media(other);
        om.local.bump_version();
        let o = sdp::offer(&om.local, &[codec], om.dtmf_pt, offered_dir);
        om.pending_offer = Some(o.clone());
        let mut reinvite = self.dialog(other).request(Method::Invite, &me, None);
        reinvite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        reinvite.body = o.to_string().into_bytes();
        self.send_client(now, reinvite, other, Purpose::ReInvite);
    }

    async fn on_ack(&mut self, leg: LegId, ack: Request) {
        if ack.body.is_empty() {
            return;
        }
        self.apply_answer(leg, &ack.body);
    }

    /// Takes the peer's answer to our pending offer on `leg` into the relay. False when there
    /// was no offer pending or the answer is unusable.
    fn apply_answer(&mut self, leg: LegId, body: &[u8]) -> bool {
        let lm = self.leg_media(leg);
        let (Some(offer), Ok(answer)) = (lm.pending_offer.take(), SessionDescription::parse(body))
        else {
            return false;
        };
        let Ok(acc) = sdp::accept_answer(&offer, &answer) else {
            return false;
        };
        lm.dtmf_pt = acc.dtmf_pt;
        if let Some(m) = &self.media {
            m.set_remote(leg, remote_media(acc.remote_rtp, acc.codec, acc.dtmf_pt));
        }
        true
    }

    /// Responses to our re-INVITEs, BYEs and CANCELs (agent INVITEs have their own handler).
    async fn on_client_response(&mut self, leg: LegId, purpose: Purpose, r: Response) {
        match purpose {
            Purpose::AgentInvite => {}
            Purpose::ReInvite => {
                if r.status / 100 == 2 {
                    self.ack_2xx(leg, &r);
                    self.apply_answer(leg, &r.body);
                } else if r.status >= 300 {
                    debug!(?leg, status = r.status, "re-INVITE refused");
                    self.leg_media(leg).pending_offer = None;
                }
            }
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// ACKs a 2xx to an INVITE we sent on `leg` (RFC 3261 §13.2.2.4): a new transaction-less
    /// request to the remote target, with the INVITE's CSeq number.
    fn ack_2xx(&mut self, leg: LegId, r: &Response) {
        let me = self.env.me.clone();
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = self.dialog(leg).request(Method::Ack, &me, Some(seq));
        let peer = self.leg_peer(leg);
        let bytes = Message::Request(ack).to_bytes();
        self.env.sip.send(peer, bytes.clone());
        if leg == LegId::Agent {
            self.b_ack = Some(bytes);
        }
    }

    async fn on_agent_invite_response(&mut self, now: Instant, attempt: u32, r: Response) {
        let status = r.status;
        if attempt != self.attempt {
            // An agent we stopped ringing answered anyway: ACK and release that dialog.
            if status / 100 == 2 {
                if let Some((_, d)) = self.old_b.iter().find(|(a, _)| *a == attempt) {
                    let d = d.clone();
                    self.release_dialog(now, d, &r);
                }
            }
            return;
        }
        if status == 100 {
            return;
        }
        if (101..200).contains(&status) {
            if let Some(to) = r.to() {
                if to.tag().is_some() {
                    self.b.remote = to;
                }
            }
            if self.phase == Phase::Ringing && self.a_invite_pending() {
                let tag = self.a.local_tag().to_string();
                let mut resp = self
                    .invite
                    .response(if status == 183 { 183 } else { 180 }, Some(&tag));
                resp.headers
                    .push(HeaderName::Contact, self.env.me.contact(&self.a.peer));
                if status == 183 && !r.body.is_empty() {
                    // Early media: relay the agent side's audio (ringback, announcements).
                    self.accept_agent_sdp(&r.body).await;
                    if let Some(body) = self.a_media.last_sdp.clone() {
                        resp = resp.with_body("application/sdp", body);
                    }
                }
                self.respond_a_invite(now, resp);
            }
            return;
        }
        if status / 100 == 2 {
            if self.b_answered {
                let tag = r.to().and_then(|t| t.tag().map(str::to_string));
                if tag.as_deref() == self.b.remote_tag() {
                    // A retransmitted 2xx: our ACK was lost.
                    if let Some(ack) = &self.b_ack {
                        self.env.sip.send(self.b.peer, ack.clone());
                    }
                } else {
                    // A second fork answered (RFC 3261 §13.2.2.4): ACK it and release it,
                    // leaving the bridged dialog alone.
                    let fork = self.b.clone();
                    self.release_dialog(now, fork, &r);
                }
                return;
            }
            self.b.establish_from(&r);
            self.ack_2xx(LegId::Agent, &r);
            self.b_answered = true;
            if self.phase != Phase::Ringing || !self.a_invite_pending() {
                // The caller is gone (CANCEL or timeout crossed the answer): release the agent.
                let me = self.env.me.clone();
                let bye = self.b.request(Method::Bye, &me, None);
                self.send_client(now, bye, LegId::Agent, Purpose::Bye);
                return;
            }
            if !self.accept_agent_sdp(&r.body).await {
                warn!("agent answered without a usable SDP answer");
                let me = self.env.me.clone();
                let bye = self.b.request(Method::Bye, &me, None);
                self.send_client(now, bye, LegId::Agent, Purpose::Bye);
                self.disposition = Some(Disposition::Failed);
                self.fail_caller(now, 488);
                self.end(now, None).await;
                return;
            }
            self.answer_caller(now).await;
            return;
        }
        // Agent leg failed.
        let mapped = match status {
            486 | 600 => 486,
            603 | 403 => 603,
            488 | 606 => 488,
            _ => 480,
        };
        info!(status, mapped, "agent leg failed");
        if self.acd_mode && self.phase == Phase::Ringing {
            // Busy, declined or gone: the ACD offers the call to the next agent.
            if let Some(agent) = self.agent_id {
                self.withdrawn(agent, "refused");
                self.env.acd.tell(AcdInput::Refused {
                    call: self.id.clone(),
                    agent,
                });
            }
            return;
        }
        if self.phase == Phase::Ringing {
            self.disposition = Some(if mapped == 486 || mapped == 603 {
                Disposition::Rejected
            } else {
                Disposition::Missed
            });
            self.fail_caller(now, mapped);
            self.end(now, None).await;
        }
    }

    /// ACKs and BYEs a 2xx we will not bridge: another fork of the agent INVITE, or an agent
    /// whose offer was withdrawn.
    fn release_dialog(&mut self, now: Instant, mut fork: Dialog, r: &Response) {
        let me = self.env.me.clone();
        fork.establish_from(r);
        let seq = r.cseq().map(|c| c.seq).unwrap_or(1);
        let peer = if fork.route_set.is_empty() {
            fork.peer
        } else {
            target_peer(&fork.next_hop(), fork.peer)
        };
        let ack = fork.request(Method::Ack, &me, Some(seq));
        self.env.sip.send(peer, Message::Request(ack).to_bytes());
        let bye = fork.request(Method::Bye, &me, None);
        let tx = ClientTransaction::new(now, bye, peer.transport.reliable(), self.env.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg: LegId::Agent,
            purpose: Purpose::Bye,
            attempt: 0,
            provisional: false,
            cancel_pending: false,
        });
        info!("extra answer released");
    }

    /// Reads the agent's SDP answer into the relay. Returns false when it is unusable.
    async fn accept_agent_sdp(&mut self, body: &[u8]) -> bool {
        if self.b_media.pending_offer.is_none() {
            return true; // already accepted (183 then 200 with the same answer)
        }
        self.apply_answer(LegId::Agent, body)
    }

    async fn answer_caller(&mut self, now: Instant) {
        let tag = self.a.local_tag().to_string();
        let mut resp = self.invite.response(200, Some(&tag));
        resp.headers
            .push(HeaderName::Contact, self.env.me.contact(&self.a.peer));
        resp.headers.push(HeaderName::Allow, ALLOW);
        if let Some(body) = self.a_media.last_sdp.clone() {
            resp = resp.with_body("application/sdp", body);
        }
        self.respond_a_invite(now, resp);
        self.phase = Phase::Up;
        self.ring_deadline = None;
        self.final_status = 200;
        self.disposition = Some(Disposition::Answered);
        let wall = SystemTime::now();
        self.answered_at = Some((now, wall));
        info!("answered");
        if let (true, Some(agent)) = (self.acd_mode, self.agent_id) {
            self.env.acd.tell(AcdInput::Answered {
                call: self.id.clone(),
                agent,
            });
            self.note_agent(agent);
        }
        self.env
            .bus
            .publish(Event::new(Payload::CallAnswered(CallAnswered {
                call_id: self.id.clone(),
                contact_log_id: self.log_id,
                agent_id: self.agent_id,
                queue_id: self.queue.as_ref().map(|q| q.0),
                answered_at: crate::time::rfc3339(wall),
            })));
        if let Some(m) = &self.media {
            m.watch(self.media_watch());
            let date = civil_date(wall);
            // A provisional record beside the recording, written before it starts (so the
            // final record always lands after it): if screenpop dies mid-call, the restart
            // repairs the WAV and completes this record from it.
            let mut record = self.record(now, wall, false);
            if let Ok(path) = self.env.recorder.path_for(&self.id, date) {
                record.path = Some(path.display().to_string());
                write_record(path.with_extension("json"), record).await;
            }
            match self.env.recorder.start(&self.id, date) {
                Ok(rec) => m.start_recording(rec, now),
                Err(e) => warn!(error = %e, "recording could not start"),
            }
        }
    }

    /// The call's record as of `now`.
    fn record(&self, now: Instant, wall: SystemTime, complete: bool) -> CallRecord {
        CallRecord {
            id: self.id.clone(),
            call_id: self.a.call_id.clone(),
            agent_call_id: self.b.call_id.clone(),
            trunk: self.trunk.clone(),
            caller: self.caller.clone(),
            dialed: self.dialed.clone(),
            agent: self.agent_uri.as_ref().map(|u| u.to_string()),
            agent_id: self.agent_id,
            queue_id: self.queue.as_ref().map(|q| q.0),
            disposition: self.disposition.unwrap_or(Disposition::Failed),
            final_status: self.final_status,
            offered_at_ms: epoch_ms(self.offered_at),
            answered_at_ms: self.answered_at.map(|a| epoch_ms(a.1)),
            ended_at_ms: epoch_ms(wall),
            duration_ms: self
                .answered_at
                .map(|a| now.saturating_duration_since(a.0).as_millis() as u64)
                .unwrap_or(0),
            ended_by: self.ended_by.map(EndedBy::from),
            path: None,
            sha256: None,
            recording_duration_ms: None,
            size_bytes: None,
            dtmf: Vec::new(),
            media: None,
            rtp_timeout: self.rtp_timeout,
            caller_e164: self.caller_e164.clone(),
            customer_id: self.customer_id,
            candidates: self.candidates.clone(),
            log_id: self.log_id,
            complete,
        }
    }

    fn fail_caller(&mut self, now: Instant, status: u16) {
        if self.a_invite_pending() {
            let tag = self.a.local_tag().to_string();
            let resp = self.invite.response(status, Some(&tag));
            self.respond_a_invite(now, resp);
            self.final_status = status;
        }
    }

    /// CANCELs the agent leg if it is still ringing (RFC 3261 §9.1: only after a provisional).
    fn cancel_agent(&mut self, now: Instant) {
        if self.b_answered {
            return;
        }
        let Some(i) = self
            .clients
            .iter()
            .position(|c| c.purpose == Purpose::AgentInvite && c.attempt == self.attempt)
        else {
            return;
        };
        if self.clients[i].provisional {
            self.send_cancel(now, i);
        } else {
            self.clients[i].cancel_pending = true;
        }
    }

    /// Sends the CANCEL for the agent INVITE of client `i`.
    fn send_cancel(&mut self, now: Instant, i: usize) {
        let inv = self.clients[i].tx.request.clone();
        let (peer, attempt) = (self.clients[i].peer, self.clients[i].attempt);
        let mut cancel = Request::new(Method::Cancel, inv.uri.clone());
        if let Some(v) = inv.headers.get(&HeaderName::Via) {
            cancel.headers.push(HeaderName::Via, v);
        }
        for r in inv.headers.get_all(&HeaderName::Route) {
            cancel.headers.push(HeaderName::Route, r);
        }
        cancel.headers.push(HeaderName::MaxForwards, "70");
        for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            if let Some(v) = inv.headers.get(&name) {
                cancel.headers.push(name, v);
            }
        }
        let seq = inv.cseq().map(|c| c.seq).unwrap_or(1);
        cancel
            .headers
            .push(HeaderName::CSeq, format!("{seq} CANCEL"));
        // The CANCEL goes where the INVITE went (RFC 3261 §9.1).
        let tx = ClientTransaction::new(now, cancel, peer.transport.reliable(), self.env.timers);
        self.clients.push(Client {
            tx,
            peer,
            leg: LegId::Agent,
            purpose: Purpose::Cancel,
            attempt,
            provisional: false,
            cancel_pending: false,
        });
    }

    async fn on_client_timeout(&mut self, now: Instant, leg: LegId, purpose: Purpose) {
        match purpose {
            Purpose::AgentInvite if self.acd_mode && self.phase == Phase::Ringing => {
                info!("agent phone unreachable");
                if let Some(agent) = self.agent_id {
                    self.withdrawn(agent, "unreachable");
                    self.env.acd.tell(AcdInput::Refused {
                        call: self.id.clone(),
                        agent,
                    });
                }
            }
            Purpose::AgentInvite if self.phase == Phase::Ringing => {
                info!("agent phone unreachable");
                self.disposition = Some(Disposition::Missed);
                self.fail_caller(now, 480);
                self.end(now, None).await;
            }
            Purpose::ReInvite => {
                warn!(?leg, "re-INVITE timed out; ending call");
                self.hang_up(now, None).await;
            }
            _ => {}
        }
    }

    /// Ends an established call: BYE to every leg other than `by` (which sent its own BYE).
    async fn hang_up(&mut self, now: Instant, by: Option<LegId>) {
        if self.phase == Phase::Ended {
            return;
        }
        // Before the answer the caller's INVITE still needs its final response.
        self.fail_caller(now, 480);
        let me = self.env.me.clone();
        if by != Some(LegId::Caller) && self.phase == Phase::Up {
            let bye = self.a.request(Method::Bye, &me, None);
            self.send_client(now, bye, LegId::Caller, Purpose::Bye);
        }
        if by != Some(LegId::Agent) && self.b_answered {
            let bye = self.b.request(Method::Bye, &me, None);
            self.send_client(now, bye, LegId::Agent, Purpose::Bye);
        }
        self.end(now, by).await;
    }

    async fn end(&mut self, now: Instant, by: Option<LegId>) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.ended_by = by;
        let wall = SystemTime::now();
        self.ended_at = Some((now, wall));
        self.ring_deadline = None;
        // Keep absorbing retransmissions for a while, but never forever.
        self.linger_until = Some(now + Duration::from_secs(40));
        // Media stops and the contact log is written at hang-up, not when the last
        // transaction ends.
        let report = match self.media.take() {
            Some(m) => m.stop(now).await,
            None => None,
        };
        if self.acd_mode {
            let call = self.id.clone();
            self.env.acd.tell(if self.answered_at.is_some() {
                AcdInput::Ended { call }
            } else {
                AcdInput::Abandoned { call }
            });
        }
        let record = self.record(now, wall, true);
        tokio::spawn(
            finalize(self.env.store.clone(), self.env.bus.clone(), record, report)
                .in_current_span(),
        );
    }
}

/// Finishes the recording and writes the call record next to it.
async fn finalize(
    store: Store,
    bus: Arc<dyn EventBus>,
    mut record: CallRecord,
    report: Option<MediaReport>,
) {
    let recording = report.and_then(|r| {
        record.media = Some(r.stats);
        record.dtmf = r.dtmf;
        r.recording
    });
    let finished: Option<FinishedRecording> = match recording {
        Some(rec) => {
            let rx = rec.finish();
            match tokio::task::spawn_blocking(move || rx.recv()).await {
                Ok(Ok(Ok(f))) => Some(f),
                Ok(Ok(Err(e))) => {
                    warn!(error = %e, "recording failed");
                    None
                }
                _ => None,
            }
        }
        None => None,
    };
    if let Some(f) = &finished {
        record.set_recording(&RecordedFile {
            path: f.path.display().to_string(),
            duration_ms: f.duration_ms,
            size_bytes: f.size_bytes,
            sha256: f.sha256.clone(),
        });
    }
    info!(
        disposition = ?record.disposition,
        duration_ms = record.duration_ms,
        sha256 = record.sha256.as_deref().unwrap_or("-"),
        "call ended"
    );
    let mut recording_id = None;
    if let Some(log_id) = record.log_id {
        recording_id = match record.new_recording().filter(|_| finished.is_some()) {
            Some(r) => store
                .insert_recording(&r)
                .await
                .map_err(|e| warn!(error = %e, "recording not stored"))
                .ok(),
            None => None,
        };
        let ended = record.ended_call(recording_id);
        if let Err(e) = store.finish_call(log_id, &ended).await {
            warn!(error = %e, "contact log not completed");
        }
        // Nobody answered: the caller gets called back.
        if ended.disposition != CallDisposition::Answered {
            let who = record
                .caller
                .number
                .clone()
                .unwrap_or_else(|| "a withheld number".into());
            let title = format!("Call back {who} ({} call)", ended.disposition.as_str());
            match store
                .create_callback(log_id, record.customer_id, record.queue_id, &title)
                .await
            {
                Ok(Some(id)) => {
                    info!(work_order = id, "callback work order created");
                    if let Ok(Some(wo)) = store.work_order(id).await {
                        bus.publish(Event::new(Payload::WorkOrderCreated {
                            work_order: Box::new(wo),
                        }));
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "callback work order not created"),
            }
        }
    }
    bus.publish(Event::new(Payload::CallEnded(payload::CallEnded {
        call_id: record.id.clone(),
        contact_log_id: record.log_id,
        recording_id,
        agent_id: record.agent_id,
        queue_id: record.queue_id,
        disposition: record.disposition,
        wait_secs: record
            .answered_at_ms
            .unwrap_or(record.ended_at_ms)
            .saturating_sub(record.offered_at_ms)
            / 1000,
        talk_secs: record.duration_ms / 1000,
        duration_ms: record.duration_ms,
        ended_at: crate::time::rfc3339_ms(record.ended_at_ms as i64),
    })));
    if let Some(f) = &finished {
        write_record(f.path.with_extension("json"), record).await;
    }
}

async fn write_record(path: PathBuf, record: CallRecord) {
    let written =
        tokio::task::spawn_blocking(move || record.write(&path).map_err(|e| (e, path))).await;
    if let Ok(Err((e, path))) = written {
        warn!(error = %e, path = %path.display(), "call record not written");
    }
}

/// The address written into SDP and Contact: the profile's `public_addr`, else the bound
/// address, else loopback when bound to a wildcard (nothing better is known).
pub fn advertised_ip(bound: SocketAddr, public: Option<IpAddr>) -> IpAddr {
    match public {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            if bound.is_ipv6() {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
        }
        None => bound.ip(),
    }
}
