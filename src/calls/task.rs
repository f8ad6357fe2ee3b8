//! The call's task: owns the clock, the inbox, the ACD's decisions, the media relay, the store
//! and the files, feeds the [`Call`] machine and carries out what it asks for. Nothing here
//! decides anything about the call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::admission::{CallEnded, CallEnv, Route};
use super::call::{Call, CallerLookup, MediaCommand, Music, Output};
use super::call::{ConsultReady, ConsultRefused, ReferRefused};
use super::control::{Control, ControlError, ControlRequest, Controller, TransferTo};
use super::pop::{History, PopCard};
use super::record::{CallRecord, RecordedFile};
use crate::acd::runtime::{Decision, RouteRequest};
use crate::crm::callback::callback_title;
use crate::events::payload;
use crate::events::{Event, EventBus, Payload};
use crate::ids::CallKey;
use crate::ids::ContactLogId;
use crate::media::recorder::FinishedRecording;
use crate::media::relay::{MediaEvent, MediaHandle, MediaReport};
use crate::sip::caller_id::CallerId;
use crate::store::calls::{EndedCall, OfferedCall};
use crate::store::customers::Tier;
use crate::store::{Store, StoreError};
use crate::transport::Routed;

/// The answers to work the task ran beside the call (the store and DNS).
enum Done {
    Lookup(CallerLookup),
    Resolved(u32, Option<SocketAddr>),
    Refer(Result<TransferTo, ReferRefused>),
    /// A consultation's target, reserved and resolved (ports are bound in the task).
    Consult(CallKey, Result<ConsultTarget, ConsultRefused>),
}

/// Where a consultation rings, before its ports are bound.
struct ConsultTarget {
    agent: Option<crate::acd::AgentId>,
    name: String,
    target: crate::acd::runtime::AgentTarget,
    peer: crate::sip::peer::Peer,
    gateway: Option<Box<super::outbound::Gateway>>,
}

/// A call as its task drives it: the inbound [`Call`] or a placed
/// [`super::outbound::OutboundCall`]. Both speak [`Output`]; inputs a machine never asks for
/// (the ACD's decisions, a caller lookup, DNS) default to nothing.
pub(crate) trait Machine: Send + 'static {
    fn key(&self) -> &crate::ids::CallKey;
    fn call_ids(&self) -> Vec<String>;
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_done(&self, now: Instant) -> bool;
    fn settled(&self) -> bool;
    fn handle_message(
        &mut self,
        now: Instant,
        msg: crate::sip::message::Message,
        peer: crate::transport::Peer,
    );
    fn handle_media(&mut self, now: Instant, ev: MediaEvent);
    fn handle_control(&mut self, now: Instant, token: u64, by: Controller, control: Control);
    fn handle_timeout(&mut self, now: Instant);
    fn handle_decision(&mut self, _now: Instant, _d: Decision) {}
    fn handle_lookup(&mut self, _now: Instant, _found: CallerLookup) {}
    fn handle_resolved(&mut self, _now: Instant, _attempt: u32, _addr: Option<SocketAddr>) {}
    fn handle_refer(&mut self, _now: Instant, _to: Result<TransferTo, ReferRefused>) {}
    fn handle_consult(
        &mut self,
        _now: Instant,
        _key: CallKey,
        _r: Result<ConsultReady, ConsultRefused>,
    ) {
    }
    fn awaits_consult(&self, _key: &CallKey) -> bool {
        false
    }
    /// What the dispatcher answers retransmissions from once the task has gone.
    fn remains(&self) -> Vec<(crate::sip::transaction::Remains, crate::sip::peer::Peer)> {
        Vec::new()
    }
}

macro_rules! machine {
    ($t:ty { $($extra:tt)* }) => {
        impl Machine for $t {
            fn key(&self) -> &crate::ids::CallKey {
                self.id()
            }
            fn call_ids(&self) -> Vec<String> {
                <$t>::call_ids(self)
            }
            fn poll_output(&mut self) -> Option<Output> {
                <$t>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
            fn is_done(&self, now: Instant) -> bool {
                <$t>::is_done(self, now)
            }
            fn settled(&self) -> bool {
                <$t>::settled(self)
            }
            fn handle_message(&mut self, now: Instant, msg: crate::sip::message::Message, peer: crate::transport::Peer) {
                <$t>::handle_message(self, now, msg, peer)
            }
            fn handle_media(&mut self, now: Instant, ev: MediaEvent) {
                <$t>::handle_media(self, now, ev)
            }
            fn handle_control(&mut self, now: Instant, token: u64, by: Controller, control: Control) {
                <$t>::handle_control(self, now, token, by, control)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            $($extra)*
        }
    };
}

machine!(Call {
    fn handle_decision(&mut self, now: Instant, d: Decision) {
        Call::handle_decision(self, now, d)
    }
    fn handle_lookup(&mut self, now: Instant, found: CallerLookup) {
        Call::handle_lookup(self, now, found)
    }
    fn handle_resolved(&mut self, now: Instant, attempt: u32, addr: Option<SocketAddr>) {
        Call::handle_resolved(self, now, attempt, addr)
    }
    fn handle_refer(&mut self, now: Instant, to: Result<TransferTo, ReferRefused>) {
        Call::handle_refer(self, now, to)
    }
    fn handle_consult(
        &mut self,
        now: Instant,
        key: CallKey,
        r: Result<ConsultReady, ConsultRefused>,
    ) {
        Call::handle_consult(self, now, key, r)
    }
    fn awaits_consult(&self, key: &CallKey) -> bool {
        Call::awaits_consult(self, key)
    }
    fn remains(&self) -> Vec<(crate::sip::transaction::Remains, crate::sip::peer::Peer)> {
        Call::remains(self)
    }
});
machine!(super::outbound::OutboundCall {
    fn remains(&self) -> Vec<(crate::sip::transaction::Remains, crate::sip::peer::Peer)> {
        super::outbound::OutboundCall::remains(self)
    }
});

/// One call's edges.
pub(crate) struct CallTask<M: Machine> {
    env: Arc<CallEnv>,
    /// Boxed: `run` is an `async fn`, whose future keeps its arguments and their moved-in
    /// copies apart (rust-lang/rust#62958), so a 7 kB call inline cost 14 kB a call.
    call: Box<M>,
    media: Option<MediaHandle>,
    /// Our own inbox, for the agent-leg Call-IDs the dispatcher must route to us.
    inbox: mpsc::Sender<Routed>,
    decisions: Option<mpsc::UnboundedReceiver<Decision>>,
    done_tx: mpsc::UnboundedSender<Box<Done>>,
    done_rx: mpsc::UnboundedReceiver<Box<Done>>,
    /// Control requests waiting for the call's answer, by token.
    replies: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Result<(), ControlError>>>,
    next_token: u64,
    /// The call's place among those not yet written, handed to its finalizing when it ends.
    in_flight: Option<super::drain::InFlightCall>,
    /// Its place among those whose signalling is not over (a shutdown waits for its BYEs to
    /// be answered), dropped once the call is settled.
    signalling: Option<super::drain::InFlightCall>,
}

async fn next_decision(rx: &mut Option<mpsc::UnboundedReceiver<Decision>>) -> Option<Decision> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<M: Machine> CallTask<M> {
    pub fn new(
        env: Arc<CallEnv>,
        call: M,
        media: MediaHandle,
        inbox: mpsc::Sender<Routed>,
    ) -> CallTask<M> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let in_flight = env.in_flight.enter();
        let signalling = env.in_flight.enter();
        CallTask {
            env,
            call: Box::new(call),
            media: Some(media),
            inbox,
            decisions: None,
            done_tx,
            done_rx,
            replies: Default::default(),
            next_token: 0,
            in_flight: Some(in_flight),
            signalling: Some(signalling),
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Routed>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
        mut controls: mpsc::Receiver<ControlRequest>,
    ) {
        // screenpop shutting down, the drain over: the call ends whatever its phase.
        let shutdown = self.env.in_flight.until_hang_up();
        tokio::pin!(shutdown);
        let mut shut_down = false;
        loop {
            while let Some(o) = self.call.poll_output() {
                self.perform(o).await;
            }
            if self.signalling.is_some() && self.call.settled() {
                self.signalling = None;
            }
            if self.call.is_done(Instant::now()) {
                break;
            }
            let deadline = self
                .call
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // The task holds a sender of its own inbox, so `rx` never closes.
            tokio::select! {
                Some(m) = rx.recv() => self.call.handle_message(Instant::now(), m.msg, m.peer),
                Some(d) = next_decision(&mut self.decisions) => {
                    self.call.handle_decision(Instant::now(), d)
                }
                Some(ev) = media_events.recv() => self.call.handle_media(Instant::now(), ev),
                Some(req) = controls.recv() => {
                    self.next_token += 1;
                    let token = self.next_token;
                    self.replies.insert(token, req.reply);
                    self.call.handle_control(Instant::now(), token, req.by, req.control)
                }
                Some(done) = self.done_rx.recv() => match *done {
                    Done::Lookup(found) => {
                        if let Some(log) = found.log_id {
                            self.env.controls.link_log(self.call.key().as_str(), log.get());
                        }
                        self.call.handle_lookup(Instant::now(), found)
                    }
                    Done::Resolved(attempt, addr) => {
                        self.call.handle_resolved(Instant::now(), attempt, addr)
                    }
                    Done::Refer(to) => self.call.handle_refer(Instant::now(), to),
                    Done::Consult(key, target) => self.consult_ready(key, target),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.call.handle_timeout(Instant::now())
                }
                _ = &mut shutdown, if !shut_down => {
                    shut_down = true;
                    self.next_token += 1;
                    let server = Controller { agent: None, supervisor: true };
                    self.call.handle_control(Instant::now(), self.next_token, server, Control::Shutdown)
                }
            }
        }
        self.env.controls.remove(self.call.key().as_str());
        let remains = self.call.remains();
        debug!(
            transactions = remains.len(),
            "call task ended; the dispatcher keeps its finished transactions"
        );
        let _ = self.env.ended.send(CallEnded {
            id: self.call.key().to_string(),
            call_ids: self.call.call_ids(),
            remains,
        });
    }

    /// Binds the consultation's ports and hands them to the media engine, then tells the
    /// call; without ports the reservation is given back.
    fn consult_ready(&mut self, key: CallKey, target: Result<ConsultTarget, ConsultRefused>) {
        let now = Instant::now();
        let t = match target {
            Ok(t) => t,
            Err(e) => return self.call.handle_consult(now, key, Err(e)),
        };
        if !self.call.awaits_consult(&key) {
            // Cancelled or ended meanwhile: no ports, and the reservation goes back.
            if t.agent.is_some() {
                self.env.acd.tell(crate::acd::Input::Ended { call: key });
            }
            return;
        }
        let sockets = self
            .media
            .as_ref()
            .and_then(|_| self.env.ports.bind(self.env.call.media_ip));
        match (self.media.as_ref(), sockets) {
            (Some(m), Some(sockets)) => {
                let port = sockets.port();
                m.consult(sockets);
                let ready = ConsultReady {
                    agent: t.agent,
                    name: t.name,
                    target: t.target,
                    peer: t.peer,
                    port,
                    gateway: t.gateway,
                };
                self.call.handle_consult(now, key, Ok(ready));
            }
            _ => {
                if t.agent.is_some() {
                    self.env
                        .acd
                        .tell(crate::acd::Input::Ended { call: key.clone() });
                }
                self.call
                    .handle_consult(now, key, Err(ConsultRefused::NoPorts));
            }
        }
    }

    async fn perform(&mut self, o: Output) {
        let env = &self.env;
        match o {
            Output::Reply { token, result } => {
                if let Some(tx) = self.replies.remove(&token) {
                    let _ = tx.send(result);
                }
            }
            Output::Transmit { peer, bytes } => env.sip.send(peer, bytes),
            Output::Refer { target } => {
                let (store, done) = (env.store.clone(), self.done_tx.clone());
                tokio::spawn(
                    async move {
                        let to = refer_target(&store, &target).await;
                        let _ = done.send(Box::new(Done::Refer(to)));
                    }
                    .in_current_span(),
                );
            }
            Output::Publish(event) => env.bus.publish(event),
            Output::Consult { key, to, exclude } => {
                let (env, done) = (env.clone(), self.done_tx.clone());
                tokio::spawn(
                    async move {
                        let target = consult_target(&env, &key, to, exclude).await;
                        let reserved = target.as_ref().is_ok_and(|t| t.agent.is_some());
                        if done
                            .send(Box::new(Done::Consult(key.clone(), target)))
                            .is_err()
                            && reserved
                        {
                            // The call's task is gone: give the agent back.
                            env.acd.tell(crate::acd::Input::Ended { call: key });
                        }
                    }
                    .in_current_span(),
                );
            }
            Output::Lookup {
                caller,
                sip_call_id,
                dialed,
                offered_at_ms,
            } => {
                let offered = OfferedCall {
                    sip_call_id: sip_call_id.to_string(),
                    caller_raw: caller.raw.clone(),
                    caller_e164: None,
                    dialed,
                    customer_id: None,
                    offered_at: offered_at_ms as i64,
                };
                let (env, done) = (env.clone(), self.done_tx.clone());
                tokio::spawn(
                    async move {
                        tracing::debug!(target: "screenpop::pop", "caller lookup starts");
                        let started = Instant::now();
                        let found = lookup(&env, &caller, offered).await;
                        // The store's share of the pop's latency (benches/pop_latency.rs).
                        info!(
                            target: "screenpop::pop",
                            lookup_us = started.elapsed().as_micros() as u64,
                            "caller looked up"
                        );
                        let _ = done.send(Box::new(Done::Lookup(found)));
                    }
                    .in_current_span(),
                );
            }
            Output::Route {
                dialed,
                vip,
                assigned,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.decisions = Some(rx);
                env.acd.route(RouteRequest {
                    call: self.call.key().clone(),
                    dialed,
                    vip,
                    assigned,
                    decisions: tx,
                });
            }
            Output::Acd(input) => env.acd.tell(input),
            Output::Listen { call_id } => {
                let _ = env.routes.send(Route {
                    call_id,
                    owner: self.call.key().to_string(),
                    tx: self.inbox.clone(),
                });
            }
            Output::Resolve {
                attempt,
                host,
                port,
            } => {
                // Our SIP socket speaks one address family: take an address of that family.
                let v4 = env.call.media_ip.is_ipv4();
                let done = self.done_tx.clone();
                tokio::spawn(
                    async move {
                        let addr = match tokio::net::lookup_host(format!("{host}:{port}")).await {
                            Ok(mut addrs) => addrs.find(|a| a.is_ipv4() == v4),
                            Err(e) => {
                                warn!(%host, error = %e, "agent host does not resolve");
                                None
                            }
                        };
                        let _ = done.send(Box::new(Done::Resolved(attempt, addr)));
                    }
                    .in_current_span(),
                );
            }
            Output::NoteAgent {
                log_id,
                agent,
                queue,
            } => {
                // Off the pop's path: the pop went out first.
                let store = env.store.clone();
                tokio::spawn(
                    async move {
                        if let Err(e) = store.set_call_agent(log_id.get(), agent, queue).await {
                            warn!(error = %e, "contact log agent not noted");
                        }
                    }
                    .in_current_span(),
                );
            }
            Output::Media(cmd) => {
                if let Some(m) = &self.media {
                    match cmd {
                        MediaCommand::SetRemote(leg, remote) => m.set_remote(leg, remote),
                        MediaCommand::SignallingIp(leg, ip) => m.set_signalling_ip(leg, ip),
                        MediaCommand::Watch(timeout) => m.watch(timeout),
                        MediaCommand::Play(leg, music) => {
                            let clip = match music {
                                Music::Hold => Some(&env.music.hold),
                                Music::Queue => env.music.queue.as_ref(),
                                Music::Ringback => Some(&env.music.ringback),
                            };
                            if let Some(clip) = clip {
                                m.play(leg, clip.clone(), crate::media::player::Repeat::Loop);
                            }
                        }
                        MediaCommand::PlayClip(leg, clip) => {
                            m.play(leg, clip, crate::media::player::Repeat::Loop)
                        }
                        MediaCommand::PlayOnce(leg, clip) => {
                            m.play(leg, clip, crate::media::player::Repeat::Once)
                        }
                        MediaCommand::StopPlaying(leg) => m.stop_playing(leg),
                        MediaCommand::Hush(leg, on) => m.hush(leg, on),
                        MediaCommand::ConsultRemote(remote) => m.set_consult_remote(remote),
                        MediaCommand::ConsultSignallingIp(ip) => m.set_consult_signalling_ip(ip),
                        MediaCommand::PromoteConsult => m.promote_consult(),
                        MediaCommand::DropConsult => m.drop_consult(),
                    }
                }
            }
            Output::Record {
                mut record,
                date,
                answered,
            } => {
                let Some(m) = &self.media else { return };
                // The provisional record lands before the recording starts, so the final
                // record always lands after it.
                if let Ok(path) = env.recorder.path_for(record.id.as_str(), date) {
                    record.path = Some(path.display().to_string());
                    write_record(path.with_extension("json"), *record.clone()).await;
                }
                match env.recorder.start(record.id.as_str(), date) {
                    Ok(rec) => m.start_recording(rec, answered),
                    Err(e) => warn!(error = %e, "recording could not start"),
                }
            }
            Output::Ended { record, at } => {
                // Media stops (and its ports go back) before anything else hears of the end.
                let report = match self.media.take() {
                    Some(m) => m.stop(at).await,
                    None => None,
                };
                // The call counts as in progress until its recording and contact log are written:
                // a shutdown waits for that.
                let in_flight = self.in_flight.take();
                let done = finalize(env.store.clone(), env.bus.clone(), *record, report);
                tokio::spawn(
                    async move {
                        done.await;
                        drop(in_flight);
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

/// Reserves a consultation's target in the ACD (an agent, or whoever of a queue is free) and
/// resolves where to ring it; an outside number needs neither. A target that cannot be
/// resolved is given back at once.
async fn consult_target(
    env: &CallEnv,
    key: &CallKey,
    to: TransferTo,
    exclude: Option<crate::acd::AgentId>,
) -> Result<ConsultTarget, ConsultRefused> {
    use crate::acd::runtime::{DialOutError, Reserve};
    let who = match to {
        TransferTo::Number(gw) => {
            return Ok(ConsultTarget {
                agent: None,
                name: gw.number.clone(),
                target: crate::acd::runtime::AgentTarget {
                    uri: gw.uri.clone(),
                    peer: Some(gw.peer),
                },
                peer: gw.peer,
                gateway: Some(gw),
            })
        }
        TransferTo::Agent(a) => Reserve::Agent(a),
        TransferTo::Queue(queue) => Reserve::Queue { queue, exclude },
    };
    let offer = env
        .acd
        .consult(who, key.clone())
        .await
        .map_err(|e| match e {
            DialOutError::NotAnAgent => ConsultRefused::NotAnAgent,
            DialOutError::Busy => ConsultRefused::Busy,
            DialOutError::Unreachable => ConsultRefused::Unreachable,
            DialOutError::NobodyFree => ConsultRefused::NobodyFree,
        })?;
    let v4 = env.call.media_ip.is_ipv4();
    let Some(peer) = super::placing::resolve(&offer.target.uri, offer.target.peer, v4).await else {
        warn!(target = %offer.target.uri, "consulted agent's phone does not resolve");
        env.acd.tell(crate::acd::Input::Ended { call: key.clone() });
        return Err(ConsultRefused::Unreachable);
    };
    Ok(ConsultTarget {
        agent: Some(offer.agent),
        name: offer.display_name,
        target: offer.target,
        peer,
        gateway: None,
    })
}

/// Whom a phone's REFER names, by the user part of its Refer-To: an active agent (by the
/// phone's SIP username, the login, or the user of the agent's PBX URI), else a queue (by one of
/// its dialed numbers).
async fn refer_target(store: &Store, target: &crate::sip::Uri) -> Result<TransferTo, ReferRefused> {
    let Some(user) = target.user.as_deref().filter(|u| !u.is_empty()) else {
        return Err(ReferRefused::Unknown);
    };
    let agents = store.agents().await.map_err(|e| {
        warn!(error = %e, "REFER target not looked up");
        ReferRefused::Unknown
    })?;
    use crate::store::agents::SipTarget;
    let agent = agents.iter().filter(|a| a.active).find(|a| {
        a.username == user
            || match &a.sip {
                SipTarget::Registered { username, .. } => username == user,
                SipTarget::Uri(u) => crate::sip::Uri::parse(u)
                    .ok()
                    .is_some_and(|u| u.user.as_deref() == Some(user)),
                SipTarget::None => false,
            }
    });
    if let Some(a) = agent {
        return Ok(TransferTo::Agent(a.id));
    }
    let digits = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
    let queues = store.queues().await.map_err(|_| ReferRefused::Unknown)?;
    queues
        .iter()
        .filter(|q| q.active)
        .find(|q| {
            q.dialed_numbers
                .iter()
                .any(|n| n == user || (!digits(user).is_empty() && digits(n) == digits(user)))
        })
        .map(|q| TransferTo::Queue(q.id))
        .ok_or(ReferRefused::Unknown)
}

/// Matches the caller to customers (creating one for an unknown number when the profile says
/// so; never for withheld numbers) and writes the contact log row. A store failure is logged and
/// the call goes on: a database outage must not drop calls.
async fn lookup(env: &CallEnv, caller: &CallerId, mut offered: OfferedCall) -> CallerLookup {
    let store = &env.store;
    // The card shows the contacts before this one: it is read before this call's row exists,
    // beside the candidates' phones and tags.
    let (found, history) = crate::crm::caller::match_or_create_with_history(
        store,
        caller,
        env.plan,
        env.profile.create_customers_from_calls,
        crate::calls::pop::RECENT_CONTACTS,
    )
    .await;
    tracing::debug!(target: "screenpop::pop", "caller matched");
    let m = found.matched;
    let customer = m.customer.as_ref();
    let card = PopCard::new(&m, history.map(History::from));
    offered.caller_e164 = found.e164.clone();
    offered.customer_id = customer.map(|c| c.id);
    let written = match store.reserve_call_id().await {
        // PostgreSQL: the pop goes with the reserved id while the row is written beside it.
        Ok(Some(id)) => {
            let store = store.clone();
            tokio::spawn(
                async move {
                    if let Err(e) = store.write_call_row(id, &offered, false).await {
                        warn!(error = %e, "contact log not written at offer: the call's end writes it");
                    }
                }
                .in_current_span(),
            );
            Ok(id)
        }
        Ok(None) => store.insert_offered_call(&offered).await,
        Err(e) => Err(e),
    };
    let log_id = match written {
        Ok(id) => Some(ContactLogId::new(id)),
        Err(e) => {
            warn!(error = %e, "contact log not written");
            None
        }
    };
    CallerLookup {
        e164: found.e164,
        customer_id: customer.map(|c| c.id),
        candidates: m.candidates.iter().map(|c| c.id).collect(),
        vip: customer.is_some_and(|c| c.tier == Tier::Vip),
        assigned_agent: customer.and_then(|c| c.assigned_agent_id),
        card,
        log_id,
    }
}

/// Finishes the recording and writes the call record next to it.
async fn finalize(
    store: Store,
    bus: Arc<dyn EventBus>,
    mut record: CallRecord,
    report: Option<MediaReport>,
) {
    let mut recording_failed = false;
    let recording = report.and_then(|r| {
        debug!(
            frames = r.recorded_frames,
            "relay handed the recording over"
        );
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
                    // What reached the disk stays as a `.part` (repaired at the next start).
                    warn!(error = %e, "recording failed");
                    recording_failed = true;
                    None
                }
                _ => {
                    recording_failed = true;
                    None
                }
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
        let mut ended = record.ended_call(recording_id);
        ended.recording_failed = recording_failed;
        if let Err(e) = finish_contact_log(&store, log_id, &record, &ended).await {
            warn!(error = %e, "contact log not completed");
        }
        let agents: Vec<(i64, i64, i64)> = record
            .agents
            .iter()
            .map(|a| (a.agent_id, a.start_ms as i64, a.end_ms as i64))
            .collect();
        if let Err(e) = store.set_call_agents(log_id.get(), &agents).await {
            warn!(error = %e, "the call's agents not recorded");
        }
        // Nobody answered: the caller gets called back (not a number an agent dialled).
        let callback = callback_title(ended.disposition, record.caller.number.as_deref())
            .filter(|_| !record.outbound);
        if let Some(title) = callback {
            match store
                .create_callback(log_id.get(), record.customer_id, record.queue_id, &title)
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
        talk_secs: record.talk_ms() / 1000,
        duration_ms: record.duration_ms,
        ended_at: crate::time::rfc3339_ms(record.ended_at_ms as i64),
        survey_score: record.survey.and_then(|s| s.score),
    })));
    if let Some(f) = &finished {
        write_record(f.path.with_extension("json"), record).await;
    }
}

/// Completes the call's contact log. A row that is not there (on PostgreSQL it is written
/// beside the pop, [`Store::reserve_call_id`], and that write may have failed or not landed
/// yet) is first written, with its id, from the call's own record.
pub(crate) async fn finish_contact_log(
    store: &Store,
    log_id: ContactLogId,
    record: &CallRecord,
    ended: &EndedCall,
) -> Result<(), StoreError> {
    match store.finish_call(log_id.get(), ended).await {
        Err(StoreError::NotFound(_)) => {
            warn!(
                log_id = log_id.get(),
                "contact log row missing at the call's end: written from the call record"
            );
            store
                .write_call_row(log_id.get(), &record.offered_call(), record.outbound)
                .await?;
            store.finish_call(log_id.get(), ended).await
        }
        done => done,
    }
}

async fn write_record(path: PathBuf, record: CallRecord) {
    let written =
        tokio::task::spawn_blocking(move || record.write(&path).map_err(|e| (e, path))).await;
    if let Ok(Err((e, path))) = written {
        warn!(error = %e, path = %path.display(), "call record not written");
    }
}
