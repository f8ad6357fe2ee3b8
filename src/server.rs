//! The SIP dispatcher: receives every parsed message, answers what needs no call (OPTIONS,
//! REGISTER, stray requests, policy refusals) and routes the rest to call tasks by Call-ID.
//!
//! Requests outside a call are answered statelessly: OPTIONS, REGISTER and the refusals are
//! idempotent, so a retransmission simply gets the same answer again (RFC 3261 §8.2.7 permits a
//! stateless UAS for them). Everything inside a call is transaction-stateful in its call task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::acd::runtime::AgentTarget;
use crate::calls::admission::{self, CallEnv, NewCall};
use crate::calls::call::{CallConfig, ALLOW};
use crate::calls::dialog::LocalContact;
use crate::calls::drain::{Drain, Step};
use crate::calls::record::{CallRecord, RecordedFile};
use crate::config::Profile;
use crate::events::{EventBus, LocalBus};
use crate::media::ports::PortPool;
use crate::media::recorder::Recorder;
use crate::media::relay::MediaEngine;
use crate::sip::digest::{self, NonceKey};
use crate::sip::headers::HeaderName;
use crate::sip::message::{check_request, Message, Method, Request, RequestProblem, Response};
use crate::sip::peer::response_peer;
use crate::sip::registrar::Registrar;
use crate::sip::registration::{RegConfig, RegEvent, RegistrationClient};
use crate::sip::transaction::TimerConfig;
use crate::sip::{caller_id, Uri};
use crate::transport::{Inbound, Peer, Routed, SipSocket, Transport};

/// Settings `serve` runs with.
pub struct ServeConfig {
    pub sip: SocketAddr,
    /// sqlite://FILE or postgres://…; migrated at start-up.
    pub database: String,
    pub recordings: PathBuf,
    pub profile: Profile,
    pub rtp_ports: (u16, u16),
    /// Media engine threads (each polls its share of the calls).
    pub media_threads: usize,
    /// HTTP API, WebSocket and pages; `None` runs SIP only.
    pub http: Option<SocketAddr>,
}

/// Option tags a request may require of screenpop: session timers (RFC 4028) and reliable
/// provisional responses (RFC 3262).
const SUPPORTED: &[&str] = &["timer", crate::sip::reliable::TAG];

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.recordings)?;
    let store = crate::store::Store::connect(&cfg.database).await?;
    store.migrate().await?;
    info!(database = %redact(&cfg.database), "store ready");
    first_admin(&store).await?;
    if let Some(q) = store.ensure_default_queue().await? {
        info!(queue = %q.name, "empty store: created the default queue every new agent joins");
    }
    // Repair recordings a crash left as `.part` and complete their calls' records before any
    // call starts.
    for record in recover_crashed_calls(&cfg.recordings) {
        complete_crashed_log(&store, &record).await;
    }
    let recorder = Arc::new(Recorder::spawn(cfg.recordings.clone())?);
    // Metrics from the first moment (the disk watch reads at once), not from the router's.
    crate::web::metrics_handle();
    // Old recordings go on schedule; a low disk is said before it fills.
    crate::retention::spawn(
        store.clone(),
        cfg.recordings.clone(),
        cfg.profile.retention.clone(),
    );
    let tls = match &cfg.profile.tls {
        Some(settings) => Some(crate::tls::Tls::load(settings)?),
        None => None,
    };
    // Floods are cut off before parsing; trusted addresses get their own limit.
    let flood = {
        let trust = cfg.profile.clone();
        Arc::new(crate::flood::FloodGate::new(cfg.profile.flood, move |ip| {
            trust.trusts(ip)
        }))
    };
    let defences = crate::transport::Defences {
        flood: flood.clone(),
        streams: cfg.profile.limits.streams(),
    };
    let (sock, mut inbound) = SipSocket::bind(cfg.sip, tls.clone(), defences).await?;
    let local = sock.local_addr();
    let ip = crate::calls::dialog::advertised_ip(local, cfg.profile.public_addr);
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let codecs = cfg
        .profile
        .codec_prefs()
        .map_err(|e| anyhow::anyhow!("profile codecs: {e}"))?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let (routes_tx, mut routes_rx) = mpsc::unbounded_channel::<admission::Route>();
    let ports = PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1);
    info!(
        profile = %cfg.profile.name,
        rtp = ?cfg.rtp_ports,
        recordings = %cfg.recordings.display(),
        "screenpop ready"
    );
    let profile = Arc::new(cfg.profile);
    let registrar = Arc::new(std::sync::Mutex::new(
        Registrar::new(
            &profile.realm,
            profile
                .users
                .iter()
                .map(|u| (u.username.clone(), u.password.clone())),
        )
        .with_algorithms(&profile.digest_algorithms),
    ));
    // The phones of agents that register with screenpop, before any REGISTER is answered.
    match crate::agents::Agents::load(&store, &registrar).await {
        Ok(n) if n > 0 => info!(phones = n, "agent phone credentials loaded"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "agent phone credentials not loaded"),
    }
    let bus: Arc<dyn EventBus> = Arc::new(LocalBus::new(4096));
    let acd = crate::acd::runtime::spawn(
        store.clone(),
        bus.clone(),
        registrar.clone(),
        profile.realm.clone(),
    )
    .await;
    let plan = profile.number_plan()?;
    let controls = crate::calls::control::Controls::new();
    let music = crate::media::music::MusicFiles::load(
        profile.hold_music.as_ref(),
        profile.queue_music.as_ref(),
    )?;
    let (dialer, dialer_inbox) = crate::calls::placing::Dialer::new();
    let dial_plan = profile
        .outbound
        .as_ref()
        .map(|o| crate::calls::dialplan::DialPlan::new(o, plan))
        .transpose()
        .map_err(|(field, why)| anyhow::anyhow!("profile {field}: {why}"))?;
    if let Some(o) = &profile.outbound {
        info!(gateway = %o.uri, "click-to-dial places calls through [outbound]");
    }
    // Campaigns send SMS as SIP MESSAGE through [outbound]; the runner plans and sends from
    // the store, so it starts before anything can be started through the API.
    let smpp = match (profile.sms.via, &profile.sms.smpp) {
        (crate::config::SmsVia::Smpp, Some(s)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let settings = crate::campaigns::smpp::SmppSettings {
                system_id: s.system_id.clone(),
                password: s.password.clone(),
                system_type: s.system_type.clone(),
                transceiver: s.bind != "transmitter",
                source_addr: profile
                    .sms
                    .sender
                    .clone()
                    .or_else(|| profile.outbound.as_ref().and_then(|o| o.caller_id.clone()))
                    .unwrap_or_else(|| "screenpop".into()),
                window: s.window,
                enquire_link: std::time::Duration::from_secs(s.enquire_link_secs.max(5)),
                response_timeout: std::time::Duration::from_secs(10),
            };
            info!(smsc = %s.address, "campaign SMS go to the SMS center over SMPP");
            let link = crate::campaigns::smpp::link::spawn(s.address.clone(), settings, tx);
            Some((link, rx))
        }
        (crate::config::SmsVia::Smpp, None) => {
            anyhow::bail!("profile [sms] via = \"smpp\" needs an [sms.smpp] section")
        }
        (crate::config::SmsVia::Sip, _) => None,
    };
    // Calls not yet written, for a shutdown to wait on; shared with /healthz, the dialer and
    // the campaigns.
    let in_flight = Arc::new(crate::calls::drain::InFlight::default());
    let campaigns = crate::campaigns::runner::spawn(crate::campaigns::runner::RunnerConfig {
        store: store.clone(),
        bus: bus.clone(),
        dialer: dial_plan.is_some().then(|| dialer.clone()),
        smpp,
        plan,
        opt_out_words: profile.sms.opt_out_words.clone(),
        base: std::env::current_dir().unwrap_or_default(),
        node: format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "screenpop".into()),
            local.port()
        ),
        in_flight: in_flight.clone(),
    });
    // Password guessing on SIP digest: shared with the admin API, which lists and lifts blocks.
    let guard = Arc::new(crate::guard::SharedGuard::new(profile.guard));
    let mut webhooks = None;
    if let Some(addr) = cfg.http {
        let mut state = crate::web::AppState::new(
            store.clone(),
            bus.clone(),
            acd.clone(),
            registrar.clone(),
            profile.realm.clone(),
            plan,
        );
        state.controls = controls.clone();
        state.dialer = Some(dialer.clone());
        state.campaigns = campaigns.clone();
        state.sip_guard = guard.clone();
        state.http_guard = Arc::new(crate::guard::SharedGuard::new(profile.guard));
        state.flood = flood.clone();
        state.limits = profile.limits;
        state.in_flight = in_flight.clone();
        webhooks = Some(state.webhooks.clone());
        let http = crate::web::spawn(addr, state).await?;
        first_run_hint(&store, http).await;
    }
    let env = Arc::new(CallEnv {
        sip: sock.clone(),
        call: Arc::new(CallConfig {
            me: LocalContact {
                host,
                port: local.port(),
                tls_port: sock.tls_local_addr().map(|a| a.port()),
            },
            media_ip: ip,
            codecs,
            timers: TimerConfig {
                t1: std::time::Duration::from_millis(profile.sip_t1_ms),
                ..TimerConfig::default()
            },
            ring_timeout: std::time::Duration::from_secs(profile.ring_timeout_secs),
            rtp_timeout: (profile.rtp_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(profile.rtp_timeout_secs)),
            min_se_secs: profile.min_se_secs,
            session_expires_secs: profile.session_expires_secs,
            agent_srtp: profile.agent_srtp,
            queue_music: music.queue.is_some(),
        }),
        profile: profile.clone(),
        ports,
        media: MediaEngine::spawn(cfg.media_threads)?,
        recorder,
        store: store.clone(),
        plan,
        bus,
        acd,
        routes: routes_tx,
        ended: ended_tx,
        controls,
        music,
        in_flight,
    });
    crate::calls::placing::serve(env.clone(), dial_plan, dialer_inbox);
    let mut d = Dispatcher {
        trunk_nonces: NonceKey::generate(),
        registrar,
        env,
        calls: HashMap::new(),
        received: Instant::now(),
        campaigns,
        texts_seen: std::collections::VecDeque::new(),
        guard,
        flood,
        afterlife: Default::default(),
    };
    for r in &profile.registrations {
        match start_registration(&d.env, r).await {
            Ok((call_id, tx)) => {
                d.calls.insert(call_id.clone(), (call_id, tx));
            }
            Err(e) => warn!(registrar = %r.registrar, error = %e, "registration not started"),
        }
    }
    let mut expiry = tokio::time::interval(std::time::Duration::from_secs(30));
    let mut afterlife_tick = tokio::time::interval(std::time::Duration::from_secs(5));
    // SIGHUP re-reads the TLS certificate and key (a renewal); calls and connections stay up.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // SIGTERM and SIGINT drain: see calls::drain.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut drain = Drain::new(std::time::Duration::from_secs(profile.drain_secs));
    let mut drain_tick = tokio::time::interval(std::time::Duration::from_millis(100));
    // Idle until a signal: the ticks missed meanwhile are not made up.
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Set when a signal said to exit at once.
    let mut at_once = false;
    crate::crm::caller::warm_up(&d.env.store, d.env.plan).await;
    serving(&d.env, local, cfg.http.is_some());
    crate::notify::notify("READY=1\nSTATUS=serving");
    loop {
        tokio::select! {
            // A call registers an agent-leg Call-ID before sending the INVITE: taking routes
            // first means the phone's responses always find their call. The rare housekeeping
            // branches come before the busy SIP socket so a flood cannot starve them.
            biased;
            Some(r) = routes_rx.recv() => {
                d.calls.insert(r.call_id, (r.owner, r.tx));
            }
            Some(ended) = ended_rx.recv() => {
                for call_id in &ended.call_ids {
                    // A new call may have taken the Call-ID over meanwhile: keep its route.
                    if d.calls.get(call_id).is_some_and(|(owner, _)| *owner == ended.id) {
                        d.calls.remove(call_id);
                    }
                }
                let quiet = Instant::now() + crate::sip::transaction::TimerConfig::default().t64();
                d.afterlife.bury(ended.remains, ended.call_ids, quiet);
            }
            _ = afterlife_tick.tick() => d.afterlife.expire(Instant::now()),
            _ = expiry.tick() => {
                let gone = d.registrar().expire(Instant::now());
                for user in gone {
                    d.env.acd.registered(&user, false);
                }
            }
            _ = hangup.recv() => match &tls {
                Some(t) => match t.reload() {
                    Ok(()) => info!("SIGHUP: tls certificate reloaded"),
                    Err(e) => warn!(error = %format!("{e:#}"), "SIGHUP: tls certificate not reloaded; the old one stays in use"),
                },
                None => info!("SIGHUP: nothing to reload (no [tls] in the profile)"),
            },
            _ = term.recv() => if d.stop_signal(&mut drain, "SIGTERM") {
                at_once = true;
                break;
            },
            _ = interrupt.recv() => if d.stop_signal(&mut drain, "SIGINT") {
                at_once = true;
                break;
            },
            _ = drain_tick.tick(), if drain.refusing() => {
                match drain.tick(Instant::now(), d.env.in_flight.len()) {
                    Step::Nothing | Step::StartDraining => {}
                    Step::HangUpAll => {
                        info!(calls = d.env.in_flight.len(), "drain time over: hanging up the calls in progress");
                        d.env.in_flight.refuse_new(drain.retry_after(Instant::now()));
                        d.hang_up_all();
                    }
                    Step::Exit => break,
                }
            }
            m = inbound.recv() => match m {
                Some(m) => d.on_inbound(m),
                None => break,
            },
        }
    }
    let left = d.env.in_flight.len();
    if left == 0 {
        info!("every call written: exiting");
    } else {
        warn!(
            calls = left,
            "exiting with calls not yet written (they were hung up)"
        );
    }
    // The events of the calls written (call.ended above all) are recorded for their webhooks
    // before the process goes: the restart sends them. Unless told to exit at once, which
    // another signal meanwhile also says.
    if let (Some(w), false) = (webhooks, at_once) {
        let flushed = tokio::select! {
            f = w.flush(std::time::Duration::from_secs(5)) => f,
            _ = term.recv() => false,
            _ = interrupt.recv() => false,
        };
        if !flushed {
            warn!("webhook events of the last moments not confirmed recorded: they may be lost");
        }
    }
    crate::notify::notify("STATUS=stopped");
    Ok(())
}

/// Says where screenpop listens and what it lacks, once it is ready.
fn serving(env: &CallEnv, sip: SocketAddr, http: bool) {
    let profile = &env.profile;
    info!(
        %sip,
        tls = ?env.sip.tls_local_addr(),
        drain_secs = profile.drain_secs,
        "screenpop serving"
    );
    if profile.outbound.is_none() {
        warn!("no [outbound] gateway in the profile: click-to-dial, transfers to numbers and voice campaigns are off");
    }
    if profile.tls.is_none() {
        info!("no [tls] in the profile: SIP over TLS and SRTP to phones are off");
    }
    if !http {
        warn!("--http off: no pages, API, desktops or webhooks");
    }
    if profile.trunks.is_empty() {
        warn!("no [[trunks]] in the profile: no address may send calls");
    }
}

/// How a digest authentication went, for the guard.
#[derive(Debug, Clone, Copy)]
enum Authenticated {
    Ok,
    /// A wrong guess; `known`: at an account that exists.
    Failed {
        known: bool,
    },
}

struct Dispatcher {
    /// Nonces for the 407 challenges sent to trunks that authenticate by digest.
    trunk_nonces: NonceKey,
    /// Shared with the ACD, which rings agents at their registered contacts.
    registrar: Arc<std::sync::Mutex<Registrar>>,
    env: Arc<CallEnv>,
    /// Call-ID → (owning call's id, its task's channel).
    calls: HashMap<String, (String, mpsc::Sender<Routed>)>,
    /// When the request being handled came off the socket.
    received: Instant,
    /// Where customers' SMS replies go (opt-outs).
    campaigns: crate::campaigns::runner::Campaigns,
    /// The last replies taken (Call-ID and CSeq), so a retransmission is not taken twice.
    texts_seen: std::collections::VecDeque<String>,
    /// Password guessing: failed digest authentications per source and per username.
    guard: Arc<crate::guard::SharedGuard>,
    /// Floods: per-source rates (stray responses are charged here).
    flood: Arc<crate::flood::FloodGate>,
    /// Ended calls' finished transactions: retransmissions no live call owns are answered here.
    afterlife: crate::sip::afterlife::Afterlife,
}

impl Dispatcher {
    fn registrar(&self) -> std::sync::MutexGuard<'_, Registrar> {
        // A panic while holding the lock leaves bindings that are still valid data.
        self.registrar.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_inbound(&mut self, inb: Inbound) {
        let call_id = inb
            .msg
            .headers()
            .get(&HeaderName::CallId)
            .unwrap_or("")
            .to_string();
        if let Some((_, tx)) = self.calls.get(&call_id) {
            match tx.try_send(Box::new(inb)) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(%call_id, "call task backlogged; message dropped (peer retransmits)");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(inb)) => {
                    self.calls.remove(&call_id);
                    return self.on_inbound(*inb);
                }
            }
        }
        if let Message::Response(r) = &inb.msg {
            if self.reacked(r, &call_id) {
                return;
            }
        }
        if matches!(inb.msg, Message::Response(_))
            && self.afterlife.ended_recently(Instant::now(), &call_id)
        {
            return debug!(%call_id, "late response for an ended call dropped");
        }
        match inb.msg {
            // A response for no call of ours (e.g. RFC 4475 §3.3.10's broadcast Via): dropped,
            // and charged as garbage (responses pass the flood gate free, as answers to what
            // we sent: a stream of made-up ones must not).
            Message::Response(r) => {
                debug!(status = r.status, %call_id, "stray response dropped");
                let stream = inb.peer.transport != Transport::Udp;
                self.flood
                    .admit(inb.peer.addr.ip(), 1 + crate::flood::GARBAGE_COST, stream);
            }
            Message::Request(mut req) => {
                if inb.peer.transport == Transport::Udp {
                    req.stamp_source(inb.peer.addr);
                }
                self.received = inb.at;
                self.on_request(req, inb.peer)
            }
        }
    }

    /// A SIGTERM or SIGINT: the first stops new calls and drains, the second hangs the calls
    /// up, the third exits. True: exit now.
    fn stop_signal(&mut self, drain: &mut Drain, signal: &'static str) -> bool {
        let now = Instant::now();
        let calls = self.env.in_flight.len();
        match drain.signal(now) {
            Step::Nothing => {
                info!(
                    signal,
                    calls, "already hanging up the calls in progress; another signal exits at once"
                );
                false
            }
            Step::StartDraining => {
                self.env.in_flight.refuse_new(drain.retry_after(now));
                info!(
                    signal,
                    calls,
                    drain_secs = self.env.profile.drain_secs,
                    "shutting down: new calls get 503; calls in progress may finish"
                );
                crate::notify::notify(&format!("STOPPING=1\nSTATUS=draining {calls} calls"));
                false
            }
            Step::HangUpAll => {
                info!(signal, calls, "hurried: hanging up the calls in progress");
                self.env.in_flight.refuse_new(drain.retry_after(now));
                self.hang_up_all();
                false
            }
            Step::Exit => {
                warn!(signal, calls, "exiting at once");
                true
            }
        }
    }

    /// Ends every call in progress (the drain is over): each call task, greeting and placed
    /// call hangs up (BYE both ways, a caller not answered yet gets 503).
    fn hang_up_all(&self) {
        self.env.in_flight.hang_up_all();
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, crate::guard::Guard> {
        self.guard.lock()
    }

    /// A request from an untrusted source that is blocked (or that tries a username under
    /// attack from an address that never authenticated as it): dropped unanswered, so a
    /// guesser learns nothing and waits for its own timeouts.
    fn guarded(&self, req: &Request, ip: std::net::IpAddr) -> bool {
        if self.env.profile.trusts(ip) {
            return false;
        }
        // The credentials the registrar or the trunk check would take: the first in our realm
        // (a decoy in another realm first must not hide the username being guessed).
        let realm = &self.env.profile.realm;
        let user = req
            .headers
            .get_all(&HeaderName::Authorization)
            .chain(req.headers.get_all(&HeaderName::ProxyAuthorization))
            .filter_map(|v| digest::parse_authorization(v).ok())
            .find(|c| &c.realm == realm)
            .map(|c| c.username);
        let verdict = self.guard().check(Instant::now(), ip, user.as_deref());
        match verdict {
            crate::guard::Verdict::Allow => false,
            v => {
                debug!(%ip, method = %req.method, ?v, "request dropped by the guard");
                metrics::counter!("screenpop_guard_dropped_total", "scope" => "sip").increment(1);
                true
            }
        }
    }

    /// A digest authentication from `ip` as `user` went right, or was a wrong guess: the
    /// guard counts it (never for trusted addresses), and a block is logged once in fail2ban's
    /// format. A guessed username that is no account is counted against the source only (the
    /// guard keeps no state for made-up names).
    fn authenticated(&self, ip: std::net::IpAddr, user: &str, outcome: Authenticated) {
        if self.env.profile.trusts(ip) {
            return;
        }
        let known = match outcome {
            Authenticated::Ok => return self.guard().succeeded(ip, user),
            Authenticated::Failed { known } => known,
        };
        metrics::counter!("screenpop_auth_failures_total", "scope" => "sip").increment(1);
        let blocked = self
            .guard()
            .failed(Instant::now(), ip, known.then_some(user));
        if let Some(b) = blocked {
            crate::guard::report("sip", &b);
        }
    }

    /// 503 with Retry-After: screenpop is shutting down, the PBX or a load balancer tries
    /// another node (RFC 3261 §21.5.4).
    fn refuse_draining(&self, req: &Request, peer: Peer, tag: &str) {
        let mut r = req.response(503, Some(tag));
        r.headers.push(
            HeaderName::RetryAfter,
            self.env.in_flight.retry_after().to_string(),
        );
        self.reply(req, peer, r)
    }

    fn reply(&self, req: &Request, source: Peer, mut resp: crate::sip::Response) {
        if resp.status == 405 || resp.status == 200 && req.method == Method::Options {
            resp.headers.push(HeaderName::Allow, ALLOW);
        }
        let dest = response_peer(req, source);
        self.env.sip.send(dest, Message::Response(resp).to_bytes());
    }

    /// A late copy of a request of an ended call's finished transaction: its response again, or
    /// nothing for an INVITE that was answered (see `sip::afterlife`). True when it was one.
    fn answered_from_afterlife(&self, req: &Request) -> bool {
        use crate::sip::afterlife::Answer;
        let Some(key) = crate::sip::transaction::ServerKey::of(req) else {
            return false;
        };
        let call_id = req.call_id().unwrap_or_default();
        match self.afterlife.request(Instant::now(), &key) {
            Some(Answer::Repeat(bytes, peer)) => {
                debug!(%call_id, method = %req.method, "retransmission for an ended call answered again");
                self.env.sip.send(peer, bytes.to_vec());
                true
            }
            Some(Answer::Absorb) => {
                debug!(%call_id, "late INVITE for an ended call absorbed");
                true
            }
            None => false,
        }
    }

    /// A repeat of an error response to an ended call's INVITE (our ACK was lost): the ACK
    /// again (see `sip::afterlife`). True when it was one.
    fn reacked(&self, r: &Response, call_id: &str) -> bool {
        if r.status < 300 || r.cseq().map(|c| c.method) != Some(Method::Invite) {
            return false;
        }
        let Some(branch) = r.top_via().and_then(|v| v.branch().map(str::to_string)) else {
            return false;
        };
        match self.afterlife.response(Instant::now(), &branch) {
            Some((ack, peer)) => {
                debug!(%call_id, status = r.status, "repeated refusal of an ended call's INVITE acknowledged again");
                self.env.sip.send(peer, ack.to_vec());
                true
            }
            None => false,
        }
    }

    fn on_request(&mut self, req: Request, peer: Peer) {
        let tag = format!("{:08x}", rand::random::<u32>());
        if req.method == Method::Ack {
            return; // ACKs are never answered
        }
        if self.guarded(&req, peer.addr.ip()) {
            return;
        }
        if self.answered_from_afterlife(&req) {
            return;
        }
        if let Err(p) = check_request(&req) {
            let mut r = req.response(400, Some(&tag));
            r.reason = match p {
                RequestProblem::Missing(h) => format!("Missing {h}"),
                RequestProblem::Duplicate(h) => format!("Multiple {h}"),
            };
            return self.reply(&req, peer, r);
        }
        if !req.uri.is_sip() {
            // RFC 3261 §8.2.2.1; RFC 4475 §3.3.2.
            let mut r = req.response(416, Some(&tag));
            r.reason = "Unsupported URI Scheme".into();
            return self.reply(&req, peer, r);
        }
        if req.method != Method::Cancel {
            let unsupported: Vec<&str> = req
                .headers
                .get_all(&HeaderName::Require)
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
                .collect();
            if !unsupported.is_empty() {
                // RFC 3261 §8.2.2.3; RFC 4475 §3.3.5.
                let mut r = req.response(420, Some(&tag));
                r.headers
                    .push(HeaderName::Unsupported, unsupported.join(", "));
                return self.reply(&req, peer, r);
            }
        }
        match req.method {
            // A SIP load balancer's keepalive (Kamailio's dispatcher pings with OPTIONS): a
            // node that is shutting down says so and is taken out of the set.
            Method::Options if self.env.in_flight.refusing() => {
                return self.refuse_draining(&req, peer, &tag);
            }
            Method::Options => {
                let mut r = req.response(200, Some(&tag));
                r.headers.push(HeaderName::Accept, "application/sdp");
                return self.reply(&req, peer, r);
            }
            Method::Register => {
                let now_secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let now = Instant::now();
                let user = req.to().and_then(|t| t.uri.user);
                let (r, auth, reachable) = {
                    let mut reg = self.registrar();
                    let (r, auth) = reg.handle_auth(now, now_secs, &req, peer);
                    let reachable = user.as_deref().map(|u| !reg.contacts(u, now).is_empty());
                    (r, auth, reachable)
                };
                match auth {
                    crate::sip::registrar::Auth::Ok(u) => {
                        self.authenticated(peer.addr.ip(), &u, Authenticated::Ok)
                    }
                    crate::sip::registrar::Auth::Failed { user, known } => {
                        info!(ip = %peer.addr.ip(), %user, "registration authentication failed");
                        self.authenticated(peer.addr.ip(), &user, Authenticated::Failed { known })
                    }
                    crate::sip::registrar::Auth::None => {}
                }
                info!(status = r.status, user = ?user, "register");
                if let (Some(u), Some(reachable), 200) = (&user, reachable, r.status) {
                    self.env.acd.registered(u, reachable);
                }
                return self.reply(&req, peer, r);
            }
            _ => {}
        }
        let ip = peer.addr.ip();
        let mut digest_trunk = None;
        if !self.env.profile.trusts(ip) {
            let may_authenticate = req.method == Method::Invite
                && self.env.profile.trunks.iter().any(|t| t.digest.is_some());
            if !may_authenticate {
                info!(%ip, method = %req.method, "request from an untrusted peer refused");
                return self.reply(&req, peer, req.response(403, Some(&tag)));
            }
            match self.authenticate_trunk(&req, ip) {
                Ok(name) => digest_trunk = Some(name),
                Err(resp) => return self.reply(&req, peer, *resp),
            }
        }
        match req.method {
            Method::Invite => self.on_invite(req, peer, tag, digest_trunk),
            Method::Message => self.on_message(req, peer, tag),
            Method::Cancel | Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.reply(&req, peer, req.response(481, Some(&tag)))
            }
            Method::Extension(_) => self.reply(&req, peer, req.response(501, Some(&tag))),
            _ => self.reply(&req, peer, req.response(405, Some(&tag))),
        }
    }

    /// Checks a trunk's digest credentials on an INVITE from an address no profile trusts
    /// (RFC 3261 §22.3: 407 with Proxy-Authenticate). Returns the trunk's name, or the
    /// response to send.
    fn authenticate_trunk(
        &self,
        req: &Request,
        ip: std::net::IpAddr,
    ) -> Result<String, Box<crate::sip::Response>> {
        let profile = &self.env.profile;
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let challenge = |stale: bool| {
            let mut r = req.response(407, Some(&format!("{:08x}", rand::random::<u32>())));
            for v in digest::challenge(
                &profile.realm,
                &profile.trunk_challenge_algorithms(),
                &self.trunk_nonces,
                now_secs,
                ip,
                stale,
            ) {
                r.headers.push(HeaderName::ProxyAuthenticate, v);
            }
            Box::new(r)
        };
        let creds = req
            .headers
            .get_all(&HeaderName::ProxyAuthorization)
            .filter_map(|v| digest::parse_authorization(v).ok())
            .find(|c| c.realm == profile.realm);
        let Some(creds) = creds else {
            return Err(challenge(false));
        };
        let trunk = profile.trunks.iter().find(|t| {
            t.digest
                .as_ref()
                .is_some_and(|d| d.username == creds.username)
        });
        if trunk.is_some_and(|t| !profile.trunk_algorithms(t).contains(&creds.algorithm)) {
            info!(%ip, user = %creds.username, algorithm = %creds.algorithm, "trunk answered with an algorithm it may not use");
            return Err(challenge(false));
        }
        let verdict = match trunk.and_then(|t| t.digest.as_ref()) {
            Some(d) => digest::verify(
                &creds,
                "INVITE",
                &digest::Secret::Password(d.password.clone()),
                &profile.realm,
                &self.trunk_nonces,
                now_secs,
                ip,
            ),
            None => digest::verify_unknown_user(
                &creds,
                "INVITE",
                digest::SecretKind::Password,
                &profile.realm,
                &self.trunk_nonces,
                now_secs,
                ip,
            ),
        };
        match (verdict, trunk) {
            (digest::Verdict::Ok, Some(t)) => {
                self.authenticated(ip, &creds.username, Authenticated::Ok);
                Ok(t.name.clone())
            }
            (digest::Verdict::Stale, _) => Err(challenge(true)),
            _ => {
                info!(%ip, user = %creds.username, "trunk authentication failed");
                if digest::is_guess(&creds, &self.trunk_nonces, now_secs, ip) {
                    let known = trunk.is_some();
                    self.authenticated(ip, &creds.username, Authenticated::Failed { known });
                }
                Err(challenge(false))
            }
        }
    }

    /// A text from a customer through a trusted gateway (RFC 3428): taken with 200 and handed
    /// to the campaigns, which act on opt-out words. Only plain text is taken.
    fn on_message(&mut self, req: Request, peer: Peer, tag: String) {
        let ip = peer.addr.ip();
        let from = &self.env.profile.sms.reply_from;
        if from.is_empty() {
            // No gateway sends replies here: screenpop takes no MESSAGE at all.
            return self.reply(&req, peer, req.response(405, Some(&tag)));
        }
        if !from.iter().any(|n| n.contains(&ip)) {
            info!(%ip, "MESSAGE from an address not in [sms] reply_from refused");
            return self.reply(&req, peer, req.response(403, Some(&tag)));
        }
        if req.to().and_then(|t| t.tag().map(str::to_string)).is_some() {
            // Inside a dialog we do not have (RFC 3428 §7 allows it; screenpop has none).
            return self.reply(&req, peer, req.response(481, Some(&tag)));
        }
        // A retransmission (the gateway did not hear our 200) is answered again, not acted
        // on twice.
        let key = format!(
            "{} {}",
            req.call_id().unwrap_or_default(),
            req.headers.get(&HeaderName::CSeq).unwrap_or_default()
        );
        if self.texts_seen.contains(&key) {
            return self.reply(&req, peer, req.response(200, Some(&tag)));
        }
        if self.texts_seen.len() >= 512 {
            self.texts_seen.pop_front();
        }
        self.texts_seen.push_back(key);
        let plain = req
            .headers
            .get(&HeaderName::ContentType)
            .is_none_or(|t| t.trim().to_ascii_lowercase().starts_with("text/plain"));
        if !plain {
            let mut r = req.response(415, Some(&tag));
            r.headers.push(HeaderName::Accept, "text/plain");
            return self.reply(&req, peer, r);
        }
        let Ok(text) = String::from_utf8(req.body.clone()) else {
            let mut r = req.response(400, Some(&tag));
            r.reason = "Body Is Not UTF-8".into();
            return self.reply(&req, peer, r);
        };
        let caller = caller_id::extract(&req, &self.env.profile.caller_id_headers);
        info!(from = %caller.raw, chars = text.chars().count(), "SMS received");
        self.reply(&req, peer, req.response(200, Some(&tag)));
        if let Some(from) = caller.number.or(Some(caller.raw)) {
            self.campaigns
                .reply(crate::campaigns::runner::Reply { from, text });
        }
    }

    fn on_invite(&mut self, req: Request, peer: Peer, tag: String, digest_trunk: Option<String>) {
        if req.to().and_then(|t| t.tag().map(str::to_string)).is_some() {
            // A re-INVITE for a dialog we do not have.
            return self.reply(&req, peer, req.response(481, Some(&tag)));
        }
        if self.env.in_flight.refusing() {
            info!("new call refused: shutting down");
            return self.refuse_draining(&req, peer, &tag);
        }
        // We can only produce SDP answers (RFC 3261 §21.4.7; RFC 4475 §3.3.15).
        let accept: Vec<&str> = req.headers.get_all(&HeaderName::Accept).collect();
        if !accept.is_empty()
            && !accept.iter().any(|a| {
                let t = a.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|ok| t.eq_ignore_ascii_case(ok))
            })
        {
            let mut r = req.response(406, Some(&tag));
            r.headers.push(HeaderName::Accept, "application/sdp");
            return self.reply(&req, peer, r);
        }
        if !req.body.is_empty() {
            let ct = req.headers.get(&HeaderName::ContentType).unwrap_or("");
            let ct = ct.split(';').next().unwrap_or("").trim();
            if !ct.eq_ignore_ascii_case("application/sdp") {
                // RFC 3261 §21.4.13; RFC 4475 §3.3.6.
                let mut r = req.response(415, Some(&tag));
                r.headers.push(HeaderName::Accept, "application/sdp");
                return self.reply(&req, peer, r);
            }
        }
        let profile = &self.env.profile;
        let trunk = match &digest_trunk {
            Some(name) => profile.trunks.iter().find(|t| &t.name == name),
            None => profile.trunk_for(peer.addr.ip()),
        };
        let caller = caller_id::extract(&req, &profile.caller_id_headers);
        let agent =
            trunk
                .and_then(|t| t.agent.as_deref())
                .and_then(|a| match a.strip_prefix("user:") {
                    Some(user) => {
                        let reg = self.registrar();
                        let b = reg.contacts(user, Instant::now());
                        b.first().map(|b| AgentTarget {
                            uri: b.contact.uri.clone(),
                            peer: Some(b.source),
                        })
                    }
                    None => Uri::parse(a)
                        .ok()
                        .map(|uri| AgentTarget { uri, peer: None }),
                });
        let new = NewCall {
            received: self.received,
            peer: response_peer(&req, peer),
            invite: req,
            caller,
            trunk: trunk.map(|t| t.name.clone()).unwrap_or_default(),
            agent,
        };
        if let Some(h) = admission::spawn(self.env.clone(), new) {
            for call_id in h.call_ids {
                self.calls.insert(call_id, (h.id.clone(), h.tx.clone()));
            }
        }
    }
}

/// Runs one outbound registration (a trunk that wants us registered) as its own task; its
/// responses reach it through the dispatcher by Call-ID like a call's.
async fn start_registration(
    env: &Arc<CallEnv>,
    r: &crate::config::Registration,
) -> anyhow::Result<(String, mpsc::Sender<Routed>)> {
    let registrar = Uri::parse(&r.registrar).map_err(|e| anyhow::anyhow!("registrar URI: {e}"))?;
    let transport = Transport::of_uri(&registrar).unwrap_or(Transport::Udp);
    let host = registrar.host.trim_matches(['[', ']']).to_string();
    let port = registrar.port.unwrap_or(transport.default_port());
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("registrar {host} does not resolve"))?;
    if transport == Transport::Tls {
        anyhow::ensure!(
            env.profile.tls.is_some(),
            "registrar {} needs TLS: add a [tls] section to the profile",
            r.registrar
        );
        env.sip.name_tls_peer(addr, &host);
    }
    let peer = Peer { addr, transport };
    let me = &env.call.me;
    let cfg = RegConfig {
        registrar,
        user: r.user.clone(),
        auth_user: r.auth_user.clone().unwrap_or_else(|| r.user.clone()),
        password: r.password.clone(),
        expires: r.expires,
        sent_by: format!("{}:{}", me.host, me.port_for(&peer)),
        transport: transport.as_str(),
        contact: me
            .contact(&peer)
            .replacen("screenpop@", &format!("{}@", r.user), 1),
        reliable: transport.reliable(),
    };
    let call_id = format!("reg-{:016x}@{}", rand::random::<u64>(), me.host);
    let mut client = RegistrationClient::new(Instant::now(), cfg, call_id.clone(), env.call.timers);
    let (tx, mut rx) = mpsc::channel::<Routed>(16);
    let sip = env.sip.clone();
    let span = tracing::info_span!("registration", registrar = %r.registrar, user = %r.user);
    tokio::spawn(
        async move {
            loop {
                while let Some(b) = client.poll_transmit() {
                    sip.send(peer, b);
                }
                while let Some(ev) = client.poll_event() {
                    match ev {
                        RegEvent::Registered { expires } => info!(expires, "registered"),
                        RegEvent::Failed { status } => warn!(?status, "registration failed"),
                    }
                }
                let wake = client
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(60));
                tokio::select! {
                    m = rx.recv() => match m.map(|b| *b) {
                        Some(Inbound { msg: Message::Response(resp), .. }) => {
                            client.handle_response(Instant::now(), resp)
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now()),
                }
            }
        }
        .instrument(span),
    );
    Ok((call_id, tx))
}

/// Repairs `.wav.part` files left by a crash and completes the provisional call record beside
/// each (written at answer) from the repaired file: duration, size, SHA-256, ended by `crash`.
fn recover_crashed_calls(root: &std::path::Path) -> Vec<CallRecord> {
    use crate::media::recorder::{repair_partials, RepairedRecording};
    let mut completed = Vec::new();
    let repaired = match repair_partials(root) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "recordings not checked for crash leftovers");
            return completed;
        }
    };
    for r in repaired {
        match r {
            RepairedRecording::Recovered {
                path,
                duration_ms,
                size_bytes,
                sha256,
                frames,
                truncated_bytes,
            } => {
                info!(path = %path.display(), frames, duration_ms, truncated_bytes, "recording recovered after a crash");
                let json = path.with_extension("json");
                let Some(record) = CallRecord::read(&json) else {
                    warn!(path = %json.display(), "a recovered recording has no call record: its contact log stays open");
                    continue;
                };
                let record = record.recovered(&RecordedFile {
                    path: path.display().to_string(),
                    duration_ms,
                    size_bytes,
                    sha256,
                });
                if let Err(e) = record.write(&json) {
                    warn!(error = %e, "recovered call record not written");
                }
                completed.push(record);
            }
            RepairedRecording::MovedAside { from, to, reason } => {
                warn!(from = %from.display(), to = %to.display(), reason, "unrepairable recording moved aside")
            }
            RepairedRecording::Failed { path, error } => {
                warn!(path = %path.display(), error = %error, "recording repair failed")
            }
        }
    }
    completed
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Completes the contact log of a call a crash interrupted, from its repaired record.
async fn complete_crashed_log(store: &crate::store::Store, record: &CallRecord) {
    let Some(log_id) = record.log_id else {
        return;
    };
    let recording_id = match record.new_recording() {
        Some(r) => store
            .insert_recording(&r)
            .await
            .map_err(|e| warn!(error = %e, "recovered recording not stored"))
            .ok(),
        None => None,
    };
    let ended = record.ended_call(recording_id);
    match crate::calls::task::finish_contact_log(store, log_id, record, &ended).await {
        Ok(()) => info!(log_id = log_id.get(), "contact log completed after a crash"),
        Err(e) => {
            warn!(error = %e, log_id = log_id.get(), "contact log not completed after a crash")
        }
    }
}

/// Creates an admin account (argon2id password hash).
pub async fn create_admin(
    store: &crate::store::Store,
    username: &str,
    display_name: &str,
    password: &str,
) -> anyhow::Result<crate::store::agents::Agent> {
    use crate::store::agents::{NewAgent, Role, SipTarget};
    let hash = crate::web::auth::hash_password(password).map_err(|e| anyhow::anyhow!(e.message))?;
    let a = store
        .create_agent(&NewAgent {
            username: username.to_string(),
            display_name: display_name.to_string(),
            role: Role::Admin,
            password_hash: hash,
            sip: SipTarget::None,
            skills: Default::default(),
            queues: Default::default(),
        })
        .await?;
    store
        .audit(
            "screenpop",
            "agent.create",
            &format!("agent:{}", a.id),
            Some("first admin"),
        )
        .await?;
    Ok(a)
}

/// Tells a new user where the console is and, on a store with no accounts, how to make the
/// first admin.
async fn first_run_hint(store: &crate::store::Store, http: SocketAddr) {
    let host = if http.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match http.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    };
    let url = format!("http://{host}:{}/", http.port());
    info!(%url, "console: agents at /agent, supervisors at /supervisor");
    if matches!(store.agent_count().await, Ok(0)) {
        warn!(
            %url,
            "no accounts yet: create the first admin with \
             `echo 'a-long-password' | screenpop admin create --username admin --password-stdin` \
             (same --database), or start once with SCREENPOP_ADMIN_PASSWORD set; then log in at the console"
        );
    }
}

/// On a store with no accounts, `SCREENPOP_ADMIN_PASSWORD` creates the first admin
/// (`SCREENPOP_ADMIN_USERNAME`, default `admin`).
async fn first_admin(store: &crate::store::Store) -> anyhow::Result<()> {
    let Ok(password) = std::env::var("SCREENPOP_ADMIN_PASSWORD") else {
        return Ok(());
    };
    if store.agent_count().await? > 0 {
        return Ok(());
    }
    let username = std::env::var("SCREENPOP_ADMIN_USERNAME").unwrap_or_else(|_| "admin".into());
    let a = create_admin(store, &username, "Administrator", &password).await?;
    info!(username = %a.username, "first admin created from SCREENPOP_ADMIN_PASSWORD");
    Ok(())
}
