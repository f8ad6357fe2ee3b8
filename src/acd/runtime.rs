//! The ACD at the edge: one task owns the [`Acd`] state machine, loads agents and queues from
//! the store, and turns its outputs into decisions sent to call tasks and `agent.state` events
//! for the desktops. Everything reaches it over one channel, so the policy never needs a lock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Acd, AgentId, AgentState, CallKey, Input, Output, PauseReason, Queue as AcdQueue, QueueId,
};
use crate::calls::survey::SurveySetup;
use crate::events::payload::AgentStateChanged;
use crate::events::{Event, EventBus, Payload};
use crate::media::player::Clip;
use crate::sip::peer::Peer;
use crate::sip::registrar::Registrar;
use crate::sip::Uri;
use crate::store::agents::{Queue, SipTarget};
use crate::store::Store;

/// What the ACD tells a call.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The call waits in this queue.
    Queued {
        queue: QueueId,
        name: String,
        /// The queue's CRM link template, for the pop.
        crm_url: Option<String>,
        /// The queue's own music for waiting callers (else the profile's, or ringback).
        music: Option<Arc<crate::media::player::Clip>>,
        /// The queue's post-call survey, when it has one.
        survey: Option<Arc<SurveySetup>>,
    },
    /// No queue takes calls to this number (no default queue either).
    NoQueue,
    /// Ring this agent.
    Offer(Box<AgentOffer>),
    /// Stop ringing the agent (ring-no-answer); the call stays queued.
    Withdraw { agent: AgentId },
    /// The queue's maximum wait passed: end the call with a callback.
    Overflow,
}

/// Where the agent leg goes.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub uri: Uri,
    /// The registered phone's signalling address, when it registered with us.
    pub peer: Option<Peer>,
}

#[derive(Debug, Clone)]
pub struct AgentOffer {
    pub agent: AgentId,
    pub display_name: String,
    pub target: AgentTarget,
}

/// A call entering the ACD.
pub struct RouteRequest {
    pub call: CallKey,
    pub dialed: String,
    pub vip: bool,
    pub assigned: Option<AgentId>,
    pub decisions: mpsc::UnboundedSender<Decision>,
}

enum Command {
    Route(RouteRequest),
    Call(Input),
    Registered {
        sip_user: String,
        reachable: bool,
    },
    Desktop {
        agent: AgentId,
        open: bool,
    },
    PauseNote {
        agent: AgentId,
        note: Option<String>,
    },
    Reload,
    DialOut {
        who: Reserve,
        call: CallKey,
        reply: tokio::sync::oneshot::Sender<Result<AgentOffer, DialOutError>>,
    },
}

/// Why an agent cannot place a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialOutError {
    #[error("not an active agent")]
    NotAnAgent,
    #[error("the agent is ringing or on a call")]
    Busy,
    #[error("the agent's phone is not registered or has no SIP address")]
    Unreachable,
    #[error("nobody in that queue is available")]
    NobodyFree,
}

/// Whom a reservation is for: an agent by id, or whoever of a queue the policy picks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    Agent(AgentId),
    Queue {
        queue: crate::acd::QueueId,
        /// Not this agent (the one asking).
        exclude: Option<AgentId>,
    },
}

/// The way in: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AcdHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl AcdHandle {
    pub fn route(&self, r: RouteRequest) {
        let _ = self.tx.send(Command::Route(r));
    }

    /// Tells the policy what happened to a call (answered, refused, ended, abandoned).
    pub fn tell(&self, input: Input) {
        let _ = self.tx.send(Command::Call(input));
    }

    /// An agent's desktop asks to be available or paused.
    pub fn set_available(&self, agent: AgentId, available: bool) {
        self.tell(Input::SetAvailable { agent, available });
    }

    /// Pauses an agent with the reason the agent gave ("Lunch", "Training").
    pub fn pause_with_note(&self, agent: AgentId, note: Option<String>) {
        let _ = self.tx.send(Command::PauseNote { agent, note });
        self.set_available(agent, false);
    }

    /// A desktop of `agent` opened (`true`) or closed: when the agent's last desktop closes,
    /// nobody is at the desk, so the agent goes offline (after the current call) until a desktop
    /// says "available" again. Presence is the ACD's input, not the WebSocket handler's count.
    pub fn desktop(&self, agent: AgentId, open: bool) {
        let _ = self.tx.send(Command::Desktop { agent, open });
    }

    /// A phone registered (or its last binding went away).
    pub fn registered(&self, sip_user: &str, reachable: bool) {
        let _ = self.tx.send(Command::Registered {
            sip_user: sip_user.to_string(),
            reachable,
        });
    }

    /// Click-to-dial: marks `agent` busy with `call` and returns where to ring their phone,
    /// or why they cannot place a call now. Asked of the ACD so that a caller is never offered
    /// to an agent in the same instant the agent starts dialling.
    pub async fn dial_out(
        &self,
        agent: AgentId,
        call: CallKey,
    ) -> Result<AgentOffer, DialOutError> {
        self.reserve(Reserve::Agent(agent), call).await
    }

    /// An attended transfer's consultation: marks the agent (or a free agent of the queue)
    /// busy under the consultation's own key, as click-to-dial does, and returns where to ring
    /// them. [`Input::Joined`] hands them the call; [`Input::Ended`] on the key releases them.
    pub async fn consult(&self, who: Reserve, call: CallKey) -> Result<AgentOffer, DialOutError> {
        self.reserve(who, call).await
    }

    async fn reserve(&self, who: Reserve, call: CallKey) -> Result<AgentOffer, DialOutError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Command::DialOut { who, call, reply });
        rx.await.unwrap_or(Err(DialOutError::NotAnAgent))
    }

    /// Re-reads agents and queues from the store (after the API changed them).
    pub fn reload(&self) {
        let _ = self.tx.send(Command::Reload);
    }
}

struct AgentInfo {
    display_name: String,
    sip: SipTarget,
}

struct Runtime {
    acd: Acd,
    store: Store,
    bus: Arc<dyn EventBus>,
    registrar: Arc<Mutex<Registrar>>,
    realm: String,
    agents: HashMap<AgentId, AgentInfo>,
    queues: Vec<Queue>,
    calls: HashMap<CallKey, mpsc::UnboundedSender<Decision>>,
    /// What agents said when they paused ("Lunch"), shown on the wallboard.
    pause_notes: HashMap<AgentId, String>,
    /// Open desktops per agent.
    desktops: HashMap<AgentId, usize>,
    /// Each queue's music, decoded once (and again when its file changes).
    music: HashMap<QueueId, Arc<Clip>>,
    /// Each queue's survey, its files decoded the same way.
    surveys: HashMap<QueueId, Arc<SurveySetup>>,
    /// Decoded files by path, with their modification time.
    clip_cache: HashMap<String, (Option<SystemTime>, Arc<Clip>)>,
}

/// Starts the ACD task; agents and queues are loaded before it takes calls.
pub async fn spawn(
    store: Store,
    bus: Arc<dyn EventBus>,
    registrar: Arc<Mutex<Registrar>>,
    realm: String,
) -> AcdHandle {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut rt = Runtime {
        acd: Acd::new(),
        store,
        bus,
        registrar,
        realm,
        agents: HashMap::new(),
        queues: Vec::new(),
        calls: HashMap::new(),
        pause_notes: HashMap::new(),
        desktops: HashMap::new(),
        music: HashMap::new(),
        surveys: HashMap::new(),
        clip_cache: HashMap::new(),
    };
    rt.reload(Instant::now()).await;
    tokio::spawn(async move {
        loop {
            let wake = rt
                .acd
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    let now = Instant::now();
                    rt.on_command(now, cmd).await;
                    rt.drain();
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    rt.acd.handle_timeout(Instant::now());
                    rt.drain();
                }
            }
        }
    });
    AcdHandle { tx }
}

fn skills(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

impl Runtime {
    async fn reload(&mut self, now: Instant) {
        let (agents, queues) = match (self.store.agents().await, self.store.queues().await) {
            (Ok(a), Ok(q)) => (a, q),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "agents and queues not loaded");
                return;
            }
        };
        for q in queues.iter().filter(|q| q.active) {
            self.acd.handle(
                now,
                Input::UpsertQueue(AcdQueue {
                    id: q.id,
                    required_skills: skills(&q.required_skills),
                    ring_timeout: Duration::from_secs(q.ring_timeout_secs.max(1) as u64),
                    max_wait: Duration::from_secs(q.max_wait_secs.max(0) as u64),
                    wrap_up: Duration::from_secs(q.wrap_up_secs.max(0) as u64),
                }),
            );
        }
        self.queues = queues.into_iter().filter(|q| q.active).collect();
        // Decoded on a blocking thread, and only files that are new or changed since the last
        // reload (an agent's change reloads too): routing waits for nothing it had already.
        let files: Vec<String> = self
            .queues
            .iter()
            .flat_map(|q| [&q.music, &q.survey_prompt, &q.survey_thanks])
            .flatten()
            .cloned()
            .collect();
        let mut cache = std::mem::take(&mut self.clip_cache);
        let cache = tokio::task::spawn_blocking(move || {
            let mut fresh = HashMap::new();
            for path in files {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                match cache.remove(&path) {
                    Some((when, clip)) if when == modified => {
                        fresh.insert(path, (when, clip));
                    }
                    _ => match Clip::load(std::path::Path::new(&path)) {
                        Ok(c) => {
                            fresh.insert(path, (modified, Arc::new(c)));
                        }
                        Err(e) => warn!(error = %e, "queue audio not loaded"),
                    },
                }
            }
            fresh
        })
        .await
        .unwrap_or_default();
        let clip = |path: &Option<String>| -> Option<Arc<Clip>> {
            path.as_ref()
                .and_then(|p| cache.get(p))
                .map(|(_, c)| c.clone())
        };
        self.music.clear();
        self.surveys.clear();
        for q in &self.queues {
            if let Some(m) = clip(&q.music) {
                self.music.insert(q.id, m);
            } else if q.music.is_some() {
                warn!(
                    queue = q.id,
                    "the queue's music does not play; the profile's plays"
                );
            }
            match clip(&q.survey_prompt) {
                Some(prompt) => {
                    self.surveys.insert(
                        q.id,
                        Arc::new(SurveySetup {
                            prompt,
                            thanks: clip(&q.survey_thanks),
                            timeout: Duration::from_secs(q.survey_timeout_secs.clamp(1, 60) as u64),
                        }),
                    );
                }
                None if q.survey_prompt.is_some() => {
                    warn!(
                        queue = q.id,
                        "the queue's survey prompt does not play; no survey"
                    );
                }
                None => {}
            }
        }
        self.clip_cache = cache;
        for a in agents {
            if !a.active {
                // Deactivated: in no queue, never reachable, and logged off.
                self.acd.handle(
                    now,
                    Input::UpsertAgent {
                        id: a.id,
                        skills: Default::default(),
                        queues: Default::default(),
                        reachable: false,
                    },
                );
                self.acd.handle(now, Input::Offline { agent: a.id });
                self.agents.remove(&a.id);
                continue;
            }
            let reachable = match &a.sip {
                SipTarget::Uri(_) => true,
                // The agents service keeps the registrar's credentials; the ACD only reads
                // whether the phone is registered.
                SipTarget::Registered { username, .. } => {
                    let reg = match self.registrar.lock() {
                        Ok(r) => r,
                        Err(p) => p.into_inner(),
                    };
                    !reg.contacts(username, now).is_empty()
                }
                SipTarget::None => false,
            };
            self.acd.handle(
                now,
                Input::UpsertAgent {
                    id: a.id,
                    skills: a.skills.clone(),
                    queues: a.queues.clone(),
                    reachable,
                },
            );
            self.agents.insert(
                a.id,
                AgentInfo {
                    display_name: a.display_name.clone(),
                    sip: a.sip.clone(),
                },
            );
        }
        info!(
            agents = self.agents.len(),
            queues = self.queues.len(),
            realm = %self.realm,
            "ACD loaded"
        );
    }

    /// The queue for a dialed number: one that lists it, else the default queue.
    fn queue_for(&self, dialed: &str) -> Option<&Queue> {
        let digits = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_digit()).collect() };
        let want = digits(dialed);
        self.queues
            .iter()
            .find(|q| {
                q.dialed_numbers
                    .iter()
                    .any(|n| n == dialed || (!want.is_empty() && digits(n) == want))
            })
            .or_else(|| self.queues.iter().find(|q| q.is_default))
    }

    async fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Route(r) => {
                let Some(q) = self.queue_for(&r.dialed) else {
                    let _ = r.decisions.send(Decision::NoQueue);
                    return;
                };
                let _ = r.decisions.send(Decision::Queued {
                    queue: q.id,
                    name: q.name.clone(),
                    crm_url: q.crm_url.clone(),
                    music: self.music.get(&q.id).cloned(),
                    survey: self.surveys.get(&q.id).cloned(),
                });
                let queue = q.id;
                self.calls.insert(r.call.clone(), r.decisions);
                self.acd.handle(
                    now,
                    Input::CallArrived {
                        call: r.call,
                        queue,
                        vip: r.vip,
                        assigned: r.assigned,
                    },
                );
            }
            Command::Call(input) => {
                let gone = match &input {
                    Input::Ended { call } | Input::Abandoned { call } => Some(call.clone()),
                    _ => None,
                };
                self.acd.handle(now, input);
                if let Some(call) = gone {
                    self.calls.remove(&call);
                }
            }
            Command::Registered {
                sip_user,
                reachable,
            } => {
                let agent = self.agents.iter().find_map(|(id, a)| match &a.sip {
                    SipTarget::Registered { username, .. } if *username == sip_user => Some(*id),
                    _ => None,
                });
                if let Some(agent) = agent {
                    self.acd.handle(now, Input::Reachable { agent, reachable });
                }
            }
            Command::PauseNote { agent, note } => {
                match note {
                    Some(n) => self.pause_notes.insert(agent, n),
                    None => self.pause_notes.remove(&agent),
                };
                // Already paused: the new reason is news on its own.
                let state = self.acd.agent(agent).map(|a| a.state.clone());
                if let Some(s @ AgentState::Paused { .. }) = state {
                    self.publish_state(agent, &s);
                }
            }
            Command::Desktop { agent, open } => {
                let n = self.desktops.entry(agent).or_insert(0);
                if open {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.desktops.remove(&agent);
                        self.acd.handle(now, Input::Offline { agent });
                    }
                }
            }
            Command::Reload => self.reload(now).await,
            Command::DialOut { who, call, reply } => {
                let agent = match who {
                    Reserve::Agent(a) => Some(a),
                    Reserve::Queue { queue, exclude } => self.acd.free_agent(queue, exclude, now),
                };
                let Some(agent) = agent else {
                    let _ = reply.send(Err(DialOutError::NobodyFree));
                    return;
                };
                let result = match self.acd.agent(agent).map(|a| &a.state) {
                    None => Err(DialOutError::NotAnAgent),
                    Some(AgentState::Ringing { .. } | AgentState::OnCall { .. }) => {
                        Err(DialOutError::Busy)
                    }
                    Some(_) => match self.target(agent) {
                        None => Err(DialOutError::Unreachable),
                        Some(target) => {
                            self.acd.handle(now, Input::Outbound { call, agent });
                            Ok(self.offer(agent, target))
                        }
                    },
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Where to ring an agent now, or `None` when the phone cannot be reached.
    fn target(&self, agent: AgentId) -> Option<AgentTarget> {
        match &self.agents.get(&agent)?.sip {
            SipTarget::Uri(u) => Uri::parse(u)
                .ok()
                .map(|uri| AgentTarget { uri, peer: None }),
            SipTarget::Registered { username, .. } => {
                let reg = match self.registrar.lock() {
                    Ok(r) => r,
                    Err(p) => p.into_inner(),
                };
                reg.contacts(username, Instant::now())
                    .first()
                    .map(|b| AgentTarget {
                        uri: b.contact.uri.clone(),
                        peer: Some(b.source),
                    })
            }
            SipTarget::None => None,
        }
    }

    fn offer(&self, agent: AgentId, target: AgentTarget) -> AgentOffer {
        AgentOffer {
            agent,
            display_name: self
                .agents
                .get(&agent)
                .map(|a| a.display_name.clone())
                .unwrap_or_default(),
            target,
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.acd.poll_output() {
            match out {
                Output::Offer { call, agent } => {
                    let Some(target) = self.target(agent) else {
                        // Registration lapsed since the last check: not reachable, next agent.
                        self.acd.handle(
                            Instant::now(),
                            Input::Reachable {
                                agent,
                                reachable: false,
                            },
                        );
                        self.acd
                            .handle(Instant::now(), Input::Refused { call, agent });
                        continue;
                    };
                    let offer = self.offer(agent, target);
                    self.send(&call, Decision::Offer(Box::new(offer)));
                }
                Output::Withdraw { call, agent } => self.send(&call, Decision::Withdraw { agent }),
                Output::Overflow { call } => {
                    self.send(&call, Decision::Overflow);
                    self.calls.remove(&call);
                }
                Output::AgentState { agent, state } => self.publish_state(agent, &state),
            }
        }
    }

    /// `agent.state` for the desktops and the wallboard: the state, since when (wall clock),
    /// why an agent is paused (and the reason the agent gave), when a wrap-up ends.
    fn publish_state(&mut self, agent: AgentId, state: &AgentState) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let (reason, until) = match state {
            AgentState::Paused { reason } => (Some(*reason), None),
            AgentState::WrapUp { until } => {
                (None, Some(wall + until.saturating_duration_since(now)))
            }
            _ => (None, None),
        };
        // The reason an agent gave for pausing lasts until the agent is available (or gone);
        // a pause asked for during a call keeps it through the call and its wrap-up.
        if matches!(state, AgentState::Available | AgentState::Offline) {
            self.pause_notes.remove(&agent);
        }
        let note = match reason {
            Some(PauseReason::Requested) => self.pause_notes.get(&agent).cloned(),
            _ => None,
        };
        self.bus
            .publish(Event::new(Payload::AgentState(AgentStateChanged {
                agent_id: agent,
                state: state.name(),
                since: crate::time::rfc3339(wall),
                reason,
                note,
                until: until.map(crate::time::rfc3339),
            })));
    }

    fn send(&mut self, call: &CallKey, d: Decision) {
        let gone = match self.calls.get(call) {
            Some(tx) => tx.send(d).is_err(),
            None => true,
        };
        if gone {
            // The call task is gone without saying so: free whoever was ringing for it.
            self.calls.remove(call);
            self.acd
                .handle(Instant::now(), Input::Abandoned { call: call.clone() });
        }
    }
}
