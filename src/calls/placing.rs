//! Click-to-dial at the edge: the API asks the [`Dialer`] to place a call for an agent; this
//! checks the number against the outbound rules, finds the customer, has the ACD mark the agent
//! busy (and say where the phone is), resolves the phone and the gateway, binds the ports,
//! writes the outbound contact log and starts an [`OutboundCall`] in a call task. Each refusal
//! comes back with its reason before anything rings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn, Instrument};

use super::admission::{CallEnv, Route};
use super::dialog::target_peer;
use super::dialplan::{DialError, DialPlan};
use super::greeting::Greeted;
use super::outbound::{Gateway, OutboundCall, OutboundInit};
use super::pop::{History, PopCard};
use super::task::CallTask;
use crate::acd::runtime::DialOutError;
use crate::acd::{AgentId, Input as AcdInput};
use crate::ids::{CallKey, ContactLogId};
use crate::media::player::Clip;
use crate::sip::caller_id::CallerId;
use crate::sip::peer::{Peer, Transport};
use crate::sip::Uri;
use crate::store::calls::OfferedCall;
use crate::time::epoch_ms;

/// A call to place for an agent.
#[derive(Debug, Clone)]
pub struct DialRequest {
    pub agent: AgentId,
    pub number: String,
    /// The customer the call is for; found by the number when absent.
    pub customer_id: Option<i64>,
}

/// A call placed: the agent's phone is ringing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placed {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    /// The number called, in E.164.
    pub number: String,
    pub customer_id: Option<i64>,
}

/// Why a call was not placed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DialFailure {
    #[error("screenpop places no calls: the profile has no [outbound] gateway")]
    NotConfigured,
    #[error(transparent)]
    Number(#[from] DialError),
    #[error("no customer {0}")]
    UnknownCustomer(i64),
    #[error("{0}")]
    Agent(#[from] DialOutError),
    #[error("{0}")]
    Unavailable(String),
    /// The request itself cannot be carried out (not worth another try).
    #[error("{0}")]
    Refused(String),
}

enum Job {
    Dial {
        req: DialRequest,
        reply: oneshot::Sender<Result<Placed, DialFailure>>,
    },
    Gateway {
        number: String,
        reply: oneshot::Sender<Result<Gateway, DialFailure>>,
    },
    Message {
        number: String,
        body: String,
        reply: oneshot::Sender<Result<MessageSent, DialFailure>>,
    },
    Greet {
        number: String,
        clip: Arc<Clip>,
        ring_timeout: Duration,
        reply: oneshot::Sender<Result<GreetingCall, DialFailure>>,
    },
}

/// A voice greeting that was placed, and how it ended.
#[derive(Debug, Clone)]
pub struct GreetingCall {
    /// The call's Call-ID towards the gateway (the contact log's key).
    pub call_id: String,
    /// The number, in E.164.
    pub number: String,
    pub result: Greeted,
}

/// A text sent as a SIP MESSAGE, and the gateway's answer.
#[derive(Debug, Clone)]
pub struct MessageSent {
    /// The MESSAGE's Call-ID (the contact log's key).
    pub call_id: String,
    /// The number, in E.164.
    pub number: String,
    pub result: crate::sip::pager::PagerResult,
}

/// The API's way to place calls; cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    tx: mpsc::Sender<Job>,
}

impl Dialer {
    /// A dialer and the receiving end [`serve`] takes once the call environment exists.
    pub(crate) fn new() -> (Dialer, DialerInbox) {
        let (tx, rx) = mpsc::channel(64);
        (Dialer { tx }, DialerInbox(rx))
    }

    pub async fn dial(&self, req: DialRequest) -> Result<Placed, DialFailure> {
        let (reply, rx) = oneshot::channel();
        self.ask(Job::Dial { req, reply }, rx).await
    }

    /// The gateway leg for an outside number (a transfer out): the number checked against
    /// `outbound.allow`, the gateway resolved.
    pub async fn gateway_for(&self, number: &str) -> Result<Gateway, DialFailure> {
        let (reply, rx) = oneshot::channel();
        let number = number.to_string();
        self.ask(Job::Gateway { number, reply }, rx).await
    }

    /// Sends `body` to `number` as a SIP MESSAGE through `[outbound]` (RFC 3428), answering the
    /// gateway's challenge; resolves once the gateway gave its final answer or timed out.
    pub async fn message(&self, number: &str, body: String) -> Result<MessageSent, DialFailure> {
        let (reply, rx) = oneshot::channel();
        let number = number.to_string();
        self.ask(
            Job::Message {
                number,
                body,
                reply,
            },
            rx,
        )
        .await
    }

    /// Calls `number` through `[outbound]` and plays `clip` once the customer answers, then
    /// hangs up; resolves with how it ended (answered, busy, no answer within `ring_timeout`,
    /// refused).
    pub async fn greet(
        &self,
        number: &str,
        clip: Arc<Clip>,
        ring_timeout: Duration,
    ) -> Result<GreetingCall, DialFailure> {
        let (reply, rx) = oneshot::channel();
        let number = number.to_string();
        self.ask(
            Job::Greet {
                number,
                clip,
                ring_timeout,
                reply,
            },
            rx,
        )
        .await
    }

    async fn ask<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, DialFailure>>,
    ) -> Result<T, DialFailure> {
        self.tx
            .send(job)
            .await
            .map_err(|_| DialFailure::Unavailable("SIP is not running".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(DialFailure::Unavailable("the call could not start".into())))
    }
}

/// Requests waiting for the SIP side.
pub(crate) struct DialerInbox(mpsc::Receiver<Job>);

/// Places each request in its own task (a slow DNS answer for one never holds up another).
pub(crate) fn serve(env: Arc<CallEnv>, plan: Option<DialPlan>, mut inbox: DialerInbox) {
    let plan = plan.map(Arc::new);
    tokio::spawn(async move {
        while let Some(job) = inbox.0.recv().await {
            let (env, plan) = (env.clone(), plan.clone());
            tokio::spawn(async move {
                // A shutdown waits for the job (the call placed, the text sent, the greeting
                // over) from before it is refused or not: there is no moment between.
                let _in_flight = env.in_flight.enter();
                let refusing = env.in_flight.refusing();
                // Shutting down: nothing new goes out (a campaign keeps the try for later).
                let closing = || {
                    DialFailure::Unavailable("screenpop is shutting down; try again later".into())
                };
                match job {
                    Job::Dial { req, reply } => {
                        let result = match plan {
                            _ if refusing => Err(closing()),
                            Some(plan) => place(env, &plan, req).await,
                            None => Err(DialFailure::NotConfigured),
                        };
                        let _ = reply.send(result);
                    }
                    Job::Gateway { number, reply } => {
                        let result = match plan {
                            Some(plan) => gateway(&env, &plan, &number).await,
                            None => Err(DialFailure::NotConfigured),
                        };
                        let _ = reply.send(result);
                    }
                    Job::Message {
                        number,
                        body,
                        reply,
                    } => {
                        let result = match plan {
                            _ if refusing => Err(closing()),
                            Some(plan) => send_message(&env, &plan, &number, body).await,
                            None => Err(DialFailure::NotConfigured),
                        };
                        let _ = reply.send(result);
                    }
                    Job::Greet {
                        number,
                        clip,
                        ring_timeout,
                        reply,
                    } => {
                        let result = match plan {
                            _ if refusing => Err(closing()),
                            Some(plan) => greet(env, &plan, &number, clip, ring_timeout).await,
                            None => Err(DialFailure::NotConfigured),
                        };
                        let _ = reply.send(result);
                    }
                }
            });
        }
    });
}

/// Where a SIP URI is reached: an IP as is, a host name through DNS (of our socket's family).
pub(crate) async fn resolve(uri: &Uri, peer: Option<Peer>, v4: bool) -> Option<Peer> {
    if let Some(p) = peer {
        return Some(p);
    }
    let fallback = Peer {
        addr: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 5060),
        transport: Transport::Udp,
    };
    let p = target_peer(uri, fallback);
    if !p.addr.ip().is_unspecified() {
        return Some(p);
    }
    let host = uri.host.trim_matches(['[', ']']);
    let port = uri.port.unwrap_or(5060);
    let mut addrs = tokio::net::lookup_host((host, port)).await.ok()?;
    let addr = addrs.find(|a| a.is_ipv4() == v4)?;
    Some(Peer { addr, ..p })
}

/// The gateway leg for `number`: checked, filled in, resolved, with the profile's credentials
/// and caller ID.
async fn gateway(env: &CallEnv, plan: &DialPlan, number: &str) -> Result<Gateway, DialFailure> {
    let n = plan.check(number)?;
    let v4 = env.call.media_ip.is_ipv4();
    let peer = resolve(&n.uri, None, v4).await.ok_or_else(|| {
        DialFailure::Unavailable(format!("the gateway {} does not resolve", n.uri.host))
    })?;
    let o = env.profile.outbound.as_ref();
    Ok(Gateway {
        number: n.e164,
        uri: n.uri,
        peer,
        credentials: o.and_then(|o| o.username.clone().zip(o.password.clone())),
        caller_id: o
            .and_then(|o| o.caller_id.clone())
            .unwrap_or_else(|| "screenpop".into()),
        ring_timeout: Duration::from_secs(o.map_or(60, |o| o.ring_timeout_secs)),
    })
}

/// Runs one [`PagerMessage`](crate::sip::pager::PagerMessage) to its end: its responses
/// reach it through the dispatcher by Call-ID, like a call's.
async fn send_message(
    env: &CallEnv,
    plan: &DialPlan,
    number: &str,
    body: String,
) -> Result<MessageSent, DialFailure> {
    use crate::sip::pager::{PagerConfig, PagerMessage};
    use crate::sip::Message;
    let gw = gateway(env, plan, number).await?;
    // RFC 3428 §9: a MESSAGE over UDP stays well under the path MTU (1300 bytes with its
    // headers); a longer text needs a gateway reached over TCP or TLS.
    if !gw.peer.transport.reliable() && body.len() > 900 {
        return Err(DialFailure::Refused(format!(
            "the text is {} bytes, too long for a MESSAGE over UDP (900 at most); reach the \
             gateway over TCP for longer texts",
            body.len()
        )));
    }
    let me = &env.call.me;
    let call_id = format!("{:032x}@{}", rand::random::<u128>(), me.host);
    let sender = env
        .profile
        .sms
        .sender
        .clone()
        .unwrap_or_else(|| gw.caller_id.clone());
    let cfg = PagerConfig {
        target: gw.uri.clone(),
        from_user: sender,
        from_host: me.host.clone(),
        via: format!(
            "SIP/2.0/{} {}:{}",
            gw.peer.transport.as_str(),
            me.host,
            me.port_for(&gw.peer)
        ),
        reliable: gw.peer.transport.reliable(),
        credentials: gw.credentials.clone(),
        call_id: call_id.clone(),
        body,
    };
    let (tx, mut rx) = mpsc::channel(8);
    let _ = env.routes.send(Route {
        call_id: call_id.clone(),
        owner: call_id.clone(),
        tx,
    });
    let mut m = PagerMessage::start(Instant::now(), cfg, env.call.timers);
    let result = loop {
        while let Some(b) = m.poll_transmit() {
            env.sip.send(gw.peer, b);
        }
        if let Some(r) = m.result() {
            break r.clone();
        }
        let wake = m
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(inb) => {
                    if let Message::Response(r) = inb.msg {
                        m.handle_response(Instant::now(), r);
                    }
                }
                None => break crate::sip::pager::PagerResult::Timeout,
            },
            _ = tokio::time::sleep_until(wake.into()) => m.handle_timeout(Instant::now()),
        }
    };
    let _ = env.ended.send(super::admission::CallEnded {
        id: call_id.clone(),
        call_ids: vec![call_id.clone()],
        remains: Vec::new(),
    });
    Ok(MessageSent {
        call_id,
        number: gw.number,
        result,
    })
}

/// Places one voice greeting and runs its [`Greeting`] machine in a task of its own; resolves
/// once the greeting has a result (the task goes on absorbing the last retransmissions).
async fn greet(
    env: Arc<CallEnv>,
    plan: &DialPlan,
    number: &str,
    clip: Arc<Clip>,
    ring_timeout: Duration,
) -> Result<GreetingCall, DialFailure> {
    use super::consult::ConsultStart;
    use super::dialog::Dialog;
    use super::greeting::{Greeting, GreetingOutput};
    use crate::media::player::Repeat;
    use crate::media::relay::{LegId, MediaEvent};
    use crate::sip::headers::{HeaderName, NameAddr};
    use crate::sip::sdp::{Codec, LocalMedia};
    let gw = gateway(&env, plan, number).await?;
    // The engine bridges two legs; the second is never pointed anywhere and stays silent.
    let (Some(sock), Some(spare)) = (
        env.ports.bind(env.call.media_ip),
        env.ports.bind(env.call.media_ip),
    ) else {
        return Err(DialFailure::Unavailable("no RTP ports free".into()));
    };
    let me = env.call.me.clone();
    let call_id = format!("{:032x}@{}", rand::random::<u128>(), me.host);
    let mut from = NameAddr::new(Uri::sip(Some(&gw.caller_id), &me.host, None));
    from.set_param("tag", Some(&format!("{:016x}", rand::random::<u64>())));
    let dialog = Dialog {
        call_id: call_id.clone(),
        local: from,
        remote: NameAddr::new(gw.uri.clone()),
        remote_target: gw.uri.clone(),
        route_set: Vec::new(),
        local_cseq: 0,
        remote_cseq: None,
        peer: gw.peer,
        secure: false,
    };
    let local = LocalMedia {
        addr: env.call.media_ip,
        port: sock.port(),
        session_id: rand::random::<u32>() as u64,
        session_version: 1,
        username: "screenpop".into(),
        srtp: None,
    };
    let headers = vec![(
        HeaderName::PAssertedIdentity,
        format!("<sip:{}@{}>", gw.caller_id, me.host),
    )];
    let (tx, mut rx) = mpsc::channel(16);
    let _ = env.routes.send(Route {
        call_id: call_id.clone(),
        owner: call_id.clone(),
        tx,
    });
    let (media, mut media_events) = env.media.add_call(sock, spare);
    media.set_signalling_ip(LegId::Caller, gw.peer.addr.ip());
    let span = info_span!("call", call_id = %call_id, greeting = true);
    let start = ConsultStart {
        me,
        timers: env.call.timers,
        codec: env.call.codecs.first().copied().unwrap_or(Codec::Pcmu),
        dialog,
        local,
        gateway: Some(gw.clone()),
        headers,
        ring_timeout,
    };
    let mut g = {
        let _enter = span.enter();
        info!(number = %gw.number, "voice greeting: calling");
        Greeting::start(Instant::now(), start, clip.duration())
    };
    let (done_tx, done_rx) = oneshot::channel();
    let task_env = env.clone();
    // A shutdown waits for the greeting's last BYE or CANCEL to be answered.
    let signalling = env.in_flight.enter();
    let shutdown = env.in_flight.until_hang_up();
    tokio::spawn(
        async move {
            let mut signalling = Some(signalling);
            tokio::pin!(shutdown);
            let mut shut_down = false;
            let env = task_env;
            let mut media = Some(media);
            let mut done_tx = Some(done_tx);
            let mut routed = true;
            loop {
                while let Some(o) = g.poll_output() {
                    match o {
                        GreetingOutput::Transmit { peer, bytes } => env.sip.send(peer, bytes),
                        GreetingOutput::Remote(r) => {
                            if let Some(m) = &media {
                                m.set_remote(LegId::Caller, r);
                            }
                        }
                        GreetingOutput::Play => {
                            if let Some(m) = &media {
                                m.play(LegId::Caller, clip.clone(), Repeat::Once);
                            }
                        }
                        GreetingOutput::Done(result) => {
                            info!(?result, "voice greeting ended");
                            if let Some(m) = media.take() {
                                m.stop(Instant::now()).await;
                            }
                            if let Some(tx) = done_tx.take() {
                                let _ = tx.send(result);
                            }
                        }
                    }
                }
                if g.settled() {
                    drop(signalling.take());
                }
                let now = Instant::now();
                if g.is_done(now) {
                    break;
                }
                let wake = g
                    .poll_timeout()
                    .unwrap_or_else(|| now + Duration::from_secs(1));
                tokio::select! {
                    msg = rx.recv(), if routed => match msg {
                        Some(inb) => g.handle_message(Instant::now(), inb.msg, inb.peer),
                        None => {
                            // The dispatcher is gone (the service is stopping).
                            routed = false;
                            g.abort(Instant::now());
                        }
                    },
                    Some(ev) = media_events.recv() => {
                        if matches!(ev, MediaEvent::Played { leg: LegId::Caller }) {
                            g.played(Instant::now());
                        }
                    }
                    _ = tokio::time::sleep_until(wake.into()) => g.handle_timeout(Instant::now()),
                    _ = &mut shutdown, if !shut_down => {
                        shut_down = true;
                        info!("voice greeting hung up: screenpop is shutting down");
                        g.abort(Instant::now());
                    }
                }
            }
            let _ = env.ended.send(super::admission::CallEnded {
                id: g.call_id().to_string(),
                call_ids: vec![g.call_id().to_string()],
                remains: Vec::new(),
            });
        }
        .instrument(span),
    );
    let result = done_rx
        .await
        .map_err(|_| DialFailure::Unavailable("the greeting call stopped".into()))?;
    Ok(GreetingCall {
        call_id,
        number: gw.number,
        result,
    })
}

async fn place(
    env: Arc<CallEnv>,
    plan: &DialPlan,
    req: DialRequest,
) -> Result<Placed, DialFailure> {
    let number = plan.check(&req.number)?;
    let store = &env.store;
    // Whom the call is for: the customer named, or whoever has the number.
    let (customer, card) = match req.customer_id {
        Some(id) => {
            let c = store
                .customer(id)
                .await
                .map_err(|e| DialFailure::Unavailable(format!("store: {e}")))?
                .ok_or(DialFailure::UnknownCustomer(id))?;
            let m = crate::store::customers::CallerMatch {
                customer: Some(c.clone()),
                candidates: vec![c],
            };
            let card = PopCard::load(store, &m).await;
            (m.customer, card)
        }
        None => {
            let as_caller = CallerId {
                raw: number.e164.clone(),
                number: Some(number.e164.clone()),
                name: None,
                withheld: false,
            };
            let (found, history) = crate::crm::caller::match_or_create_with_history(
                store,
                &as_caller,
                env.plan,
                false,
                crate::calls::pop::RECENT_CONTACTS,
            )
            .await;
            let card = PopCard::new(&found.matched, history.map(History::from));
            (found.matched.customer, card)
        }
    };
    let wall = SystemTime::now();
    let id = CallKey::new(format!("{}-{:08x}", epoch_ms(wall), rand::random::<u32>()));
    let offer = env.acd.dial_out(req.agent, id.clone()).await?;
    // From here on the agent is busy with `id`: every way out tells the ACD.
    let release = |why: String| {
        env.acd.tell(AcdInput::Ended { call: id.clone() });
        DialFailure::Unavailable(why)
    };
    let v4 = env.call.media_ip.is_ipv4();
    let Some(agent_peer) = resolve(&offer.target.uri, offer.target.peer, v4).await else {
        return Err(release(format!(
            "the agent's phone {} does not resolve",
            offer.target.uri
        )));
    };
    let gw = match gateway(&env, plan, &req.number).await {
        Ok(gw) => gw,
        Err(e) => {
            env.acd.tell(AcdInput::Ended { call: id.clone() });
            return Err(e);
        }
    };
    let (Some(caller_sock), Some(agent_sock)) = (
        env.ports.bind(env.call.media_ip),
        env.ports.bind(env.call.media_ip),
    ) else {
        return Err(release("no RTP ports free".into()));
    };
    let gateway_call_id = format!("{:032x}@{}", rand::random::<u128>(), env.call.me.host);
    let log_id = match store
        .insert_placed_call(&OfferedCall {
            sip_call_id: gateway_call_id.clone(),
            caller_raw: req.number.clone(),
            caller_e164: Some(number.e164.clone()),
            dialed: number.e164.clone(),
            customer_id: customer.as_ref().map(|c| c.id),
            offered_at: epoch_ms(wall) as i64,
        })
        .await
    {
        Ok(id) => Some(ContactLogId::new(id)),
        Err(e) => {
            // The call goes on: a database outage must not stop the agent from calling.
            warn!(error = %e, "outbound contact log not written");
            None
        }
    };
    if let Some(log) = log_id {
        if let Err(e) = store.set_call_agent(log.get(), req.agent, None).await {
            warn!(error = %e, "contact log agent not noted");
        }
    }
    let span = info_span!("call", call_id = %gateway_call_id, id = %id, outbound = true);
    let init = OutboundInit {
        id: id.clone(),
        now: Instant::now(),
        wall,
        agent: req.agent,
        agent_target: offer.target,
        agent_peer,
        gateway: gw,
        gateway_call_id,
        e164: number.e164.clone(),
        name: customer.as_ref().map(|c| c.name.clone()),
        customer_id: customer.as_ref().map(|c| c.id),
        card,
        log_id,
        caller_port: caller_sock.port(),
        agent_port: agent_sock.port(),
        seed: rand::random(),
    };
    let call = {
        let _enter = span.enter();
        info!(number = %number.e164, agent = req.agent, "placing a call");
        OutboundCall::new(env.call.clone(), init)
    };
    let (media, media_events) = env.media.add_call(caller_sock, agent_sock);
    let (tx, rx) = mpsc::channel(64);
    for call_id in call.call_ids() {
        let _ = env.routes.send(Route {
            call_id,
            owner: id.to_string(),
            tx: tx.clone(),
        });
    }
    let (control_tx, control_rx) = mpsc::channel(8);
    env.controls.register(id.as_str(), control_tx);
    if let Some(log) = log_id {
        env.controls.link_log(id.as_str(), log.get());
    }
    let placed = Placed {
        call_id: id,
        contact_log_id: log_id,
        number: number.e164,
        customer_id: customer.map(|c| c.id),
    };
    let task = CallTask::new(env, call, media, tx);
    tokio::spawn(task.run(rx, media_events, control_rx).instrument(span));
    Ok(placed)
}
