//! Automatic call distribution: agent states, queues and the routing policy, as one sans-IO
//! state machine. It is fed inputs and `now`, says what to do through [`Acd::poll_output`]
//! and when to wake through [`Acd::poll_timeout`]; the call tasks and the web layer turn
//! outputs into INVITEs, CANCELs and events ([`runtime`] is that edge).
//!
//! Policy, in order: the customer's assigned agent when available; VIP callers ahead of
//! others, then first come first served; the queue's required skills; then the agent idle the
//! longest. Ring-no-answer withdraws the offer after the queue's ring timeout, pauses that
//! agent and tries the next; a caller who waits past the queue's maximum overflows (the caller
//! gets a callback work order). An agent never has two offers and a call is never offered to
//! two agents at once; an agent whose phone is not registered is never offered a call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub mod runtime;

pub(crate) type AgentId = i64;
pub(crate) type QueueId = i64;
/// The call's id as the call tasks know it.
pub(crate) use crate::ids::CallKey;

pub(crate) use crate::events::payload::PauseReason;

/// An agent's state; the one source of truth for who may get a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    Offline,
    Available,
    Ringing {
        call: CallKey,
        until: Instant,
    },
    /// Bridged; `wrap_up` is the call's queue's wrap-up time, applied when it ends.
    OnCall {
        call: CallKey,
        wrap_up: Duration,
    },
    WrapUp {
        until: Instant,
    },
    Paused {
        reason: PauseReason,
    },
}

impl AgentState {
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Available => "available",
            AgentState::Ringing { .. } => "ringing",
            AgentState::OnCall { .. } => "on_call",
            AgentState::WrapUp { .. } => "wrap_up",
            AgentState::Paused { .. } => "paused",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub id: QueueId,
    pub required_skills: BTreeSet<String>,
    pub ring_timeout: Duration,
    pub max_wait: Duration,
    pub wrap_up: Duration,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: AgentId,
    pub skills: BTreeSet<String>,
    pub queues: BTreeSet<QueueId>,
    /// Whether the agent's phone can be reached (registered, or a static URI).
    pub reachable: bool,
    pub state: AgentState,
    /// When the agent last became available; the longest idle gets the next call.
    pub idle_since: Instant,
    /// Where the agent goes once the current offer or call is over, when they asked to pause
    /// or closed their last desktop meanwhile (`None`: available again).
    pub after_call: Option<AfterCall>,
}

/// A state change an agent asked for while busy, applied when the call is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    Pause,
    Offline,
}

/// A caller waiting for an agent.
#[derive(Debug, Clone)]
struct Waiting {
    call: CallKey,
    queue: QueueId,
    vip: bool,
    assigned: Option<AgentId>,
    entered: Instant,
    /// Agents that already rang out on this call.
    tried: BTreeSet<AgentId>,
    /// The agent ringing for it now.
    offered_to: Option<AgentId>,
}

/// What the ACD is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// Adds or replaces an agent (offline until it says otherwise).
    UpsertAgent {
        id: AgentId,
        skills: BTreeSet<String>,
        queues: BTreeSet<QueueId>,
        reachable: bool,
    },
    UpsertQueue(Queue),
    /// The agent asks to be available or paused (from the desktop).
    SetAvailable {
        agent: AgentId,
        available: bool,
    },
    /// The agent closed their last desktop: offline now, or once the current call is done.
    Offline {
        agent: AgentId,
    },
    /// The agent's phone registered or went away.
    Reachable {
        agent: AgentId,
        reachable: bool,
    },
    /// A call enters a queue.
    CallArrived {
        call: CallKey,
        queue: QueueId,
        vip: bool,
        assigned: Option<AgentId>,
    },
    /// `agent` answered. It may be an agent whose offer was just withdrawn (the answer crossed
    /// the ring timeout): the answer wins, and whoever rings for the call now is released.
    Answered {
        call: CallKey,
        agent: AgentId,
    },
    /// `agent`'s phone refused (busy, declined) or could not be reached. Ignored when the call
    /// is no longer offered to that agent (the refusal crossed a withdrawal).
    Refused {
        call: CallKey,
        agent: AgentId,
    },
    /// A bridged call ended: the agent goes to wrap-up.
    Ended {
        call: CallKey,
    },
    /// The agent on the call left it while the call goes on without the ACD (a transfer out
    /// to a number): the agent goes to wrap-up, and the call may come back with `Transfer`.
    AgentLeft {
        call: CallKey,
    },
    /// The agent on the call handed it on (a blind transfer): that agent goes to wrap-up and
    /// the caller waits in `queue` again, ahead of new callers, offered first to `to` (an
    /// agent's transfer target) and to the rest of the queue when `to` cannot take it.
    Transfer {
        call: CallKey,
        queue: QueueId,
        to: Option<AgentId>,
    },
    /// An attended transfer completed: the agent consulted under the key `consult` (marked
    /// busy with [`Input::Outbound`]) has `call` now, with `queue`'s wrap-up after it; the
    /// agent who had `call` goes to wrap-up.
    Joined {
        call: CallKey,
        consult: CallKey,
        queue: Option<QueueId>,
    },
    /// The caller hung up while waiting or ringing.
    Abandoned {
        call: CallKey,
    },
    /// The agent places a call (click-to-dial): busy with it until it ends, then back to what
    /// they were (available, or paused) without wrap-up. Ignored for an agent already ringing
    /// or on a call (the runtime refuses the dial first).
    Outbound {
        call: CallKey,
        agent: AgentId,
    },
}

/// What the ACD asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Ring this agent for this call.
    Offer { call: CallKey, agent: AgentId },
    /// Stop ringing (ring timeout); the call stays queued.
    Withdraw { call: CallKey, agent: AgentId },
    /// Nobody took the call within the queue's maximum wait.
    Overflow { call: CallKey },
    /// An agent's state changed (for the desktops): the whole state, so the desktop can show
    /// why an agent is paused and when a wrap-up ends.
    AgentState { agent: AgentId, state: AgentState },
}

#[derive(Debug, Default)]
pub struct Acd {
    agents: BTreeMap<AgentId, Agent>,
    queues: BTreeMap<QueueId, Queue>,
    waiting: Vec<Waiting>,
    out: std::collections::VecDeque<Output>,
}

impl Acd {
    pub fn new() -> Self {
        Acd::default()
    }

    pub fn agent(&self, id: AgentId) -> Option<&Agent> {
        self.agents.get(&id)
    }

    pub fn waiting_calls(&self) -> usize {
        self.waiting.len()
    }

    /// An offer or call is over for `id`: available again, or what the agent asked for meanwhile.
    fn release(&mut self, id: AgentId, now: Instant) {
        let next = match self.agents.get_mut(&id).and_then(|a| a.after_call.take()) {
            None => AgentState::Available,
            Some(AfterCall::Pause) => AgentState::Paused {
                reason: PauseReason::Requested,
            },
            Some(AfterCall::Offline) => AgentState::Offline,
        };
        self.set_state(id, next, now);
    }

    fn set_state(&mut self, id: AgentId, state: AgentState, now: Instant) {
        if let Some(a) = self.agents.get_mut(&id) {
            if state == AgentState::Available && a.state != AgentState::Available {
                a.idle_since = now;
            }
            // A new pause reason or a new wrap-up end is news too, not only a new state name.
            let changed = a.state != state;
            a.state = state;
            if changed {
                self.out.push_back(Output::AgentState {
                    agent: id,
                    state: a.state.clone(),
                });
            }
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::UpsertAgent {
                id,
                skills,
                queues,
                reachable,
            } => {
                let state = self
                    .agents
                    .get(&id)
                    .map(|a| a.state.clone())
                    .unwrap_or(AgentState::Offline);
                let idle_since = self.agents.get(&id).map_or(now, |a| a.idle_since);
                self.agents.insert(
                    id,
                    Agent {
                        id,
                        skills,
                        queues,
                        reachable,
                        state,
                        idle_since,
                        after_call: self.agents.get(&id).and_then(|a| a.after_call),
                    },
                );
            }
            Input::UpsertQueue(q) => {
                self.queues.insert(q.id, q);
            }
            Input::SetAvailable { agent, available } => {
                let Some(a) = self.agents.get(&agent) else {
                    return;
                };
                match (&a.state, available) {
                    // Ringing or on a call: the change waits for the call to end.
                    (AgentState::Ringing { .. } | AgentState::OnCall { .. }, _) => {
                        let pending = (!available).then_some(AfterCall::Pause);
                        if let Some(a) = self.agents.get_mut(&agent) {
                            a.after_call = pending;
                        }
                    }
                    (AgentState::WrapUp { .. }, false) => self.set_state(
                        agent,
                        AgentState::Paused {
                            reason: PauseReason::Requested,
                        },
                        now,
                    ),
                    (_, true) => {
                        if let Some(a) = self.agents.get_mut(&agent) {
                            a.after_call = None;
                        }
                        self.set_state(agent, AgentState::Available, now)
                    }
                    (_, false) => self.set_state(
                        agent,
                        AgentState::Paused {
                            reason: PauseReason::Requested,
                        },
                        now,
                    ),
                }
            }
            Input::Offline { agent } => match self.agents.get_mut(&agent) {
                Some(a)
                    if matches!(
                        a.state,
                        AgentState::Ringing { .. } | AgentState::OnCall { .. }
                    ) =>
                {
                    a.after_call = Some(AfterCall::Offline);
                }
                Some(_) => self.set_state(agent, AgentState::Offline, now),
                None => {}
            },
            Input::Reachable { agent, reachable } => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.reachable = reachable;
                }
            }
            Input::CallArrived {
                call,
                queue,
                vip,
                assigned,
            } => self.waiting.push(Waiting {
                call,
                queue,
                vip,
                assigned,
                entered: now,
                tried: BTreeSet::new(),
                offered_to: None,
            }),
            Input::Answered { call, agent } => {
                if let Some(i) = self.waiting.iter().position(|w| w.call == call) {
                    let w = self.waiting.remove(i);
                    if let Some(other) = w.offered_to.filter(|o| *o != agent) {
                        // Rung after the first agent's offer was withdrawn: stop it.
                        self.out.push_back(Output::Withdraw {
                            call: call.clone(),
                            agent: other,
                        });
                        self.release(other, now);
                    }
                    let wrap_up = self
                        .queues
                        .get(&w.queue)
                        .map_or(Duration::ZERO, |q| q.wrap_up);
                    self.set_state(agent, AgentState::OnCall { call, wrap_up }, now);
                }
            }
            Input::Refused { call, agent } => {
                if let Some(w) = self
                    .waiting
                    .iter_mut()
                    .find(|w| w.call == call && w.offered_to == Some(agent))
                {
                    w.offered_to = None;
                    w.tried.insert(agent);
                    self.release(agent, now);
                }
            }
            Input::Transfer { call, queue, to } => {
                let agent = self.agents.values().find_map(|a| match &a.state {
                    AgentState::OnCall { call: c, wrap_up } if *c == call => Some((a.id, *wrap_up)),
                    _ => None,
                });
                let mut tried = BTreeSet::new();
                if let Some((agent, wrap)) = agent {
                    self.set_state(agent, AgentState::WrapUp { until: now + wrap }, now);
                    tried.insert(agent);
                }
                if !self.waiting.iter().any(|w| w.call == call) {
                    self.waiting.push(Waiting {
                        call,
                        queue,
                        vip: true,
                        assigned: to,
                        entered: now,
                        tried,
                        offered_to: None,
                    });
                }
            }
            Input::Ended { call } | Input::AgentLeft { call } => {
                let agent = self.agents.values().find_map(|a| match &a.state {
                    AgentState::OnCall { call: c, wrap_up } if *c == call => Some((a.id, *wrap_up)),
                    _ => None,
                });
                if let Some((agent, wrap)) = agent {
                    self.set_state(agent, AgentState::WrapUp { until: now + wrap }, now);
                }
            }
            Input::Outbound { call, agent } => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    let back = match a.state {
                        AgentState::Ringing { .. } | AgentState::OnCall { .. } => return,
                        AgentState::Paused { .. } => Some(AfterCall::Pause),
                        AgentState::Offline => Some(AfterCall::Offline),
                        AgentState::Available | AgentState::WrapUp { .. } => None,
                    };
                    a.after_call = a.after_call.or(back);
                    self.set_state(
                        agent,
                        AgentState::OnCall {
                            call,
                            wrap_up: Duration::ZERO,
                        },
                        now,
                    );
                }
            }
            Input::Joined {
                call,
                consult,
                queue,
            } => {
                let on = |acd: &Acd, key: &CallKey| {
                    acd.agents.values().find_map(|a| match &a.state {
                        AgentState::OnCall { call: c, wrap_up } if c == key => {
                            Some((a.id, *wrap_up))
                        }
                        _ => None,
                    })
                };
                if let Some((agent, wrap)) = on(self, &call) {
                    self.set_state(agent, AgentState::WrapUp { until: now + wrap }, now);
                }
                if let Some((agent, _)) = on(self, &consult) {
                    let wrap_up = queue
                        .and_then(|q| self.queues.get(&q))
                        .map_or(Duration::ZERO, |q| q.wrap_up);
                    self.set_state(agent, AgentState::OnCall { call, wrap_up }, now);
                }
            }
            Input::Abandoned { call } => {
                if let Some(i) = self.waiting.iter().position(|w| w.call == call) {
                    let w = self.waiting.remove(i);
                    if let Some(agent) = w.offered_to {
                        self.release(agent, now);
                    }
                }
            }
        }
        self.handle_timeout(now);
    }

    /// Runs timers (ring timeout, maximum wait, end of wrap-up) and routes what can be routed.
    pub fn handle_timeout(&mut self, now: Instant) {
        // End of wrap-up.
        let done: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| matches!(a.state, AgentState::WrapUp { until } if now >= until))
            .map(|a| a.id)
            .collect();
        for id in done {
            self.release(id, now);
        }
        // Ring-no-answer: withdraw, pause the agent, try someone else.
        let rang_out: Vec<(CallKey, AgentId)> = self
            .agents
            .values()
            .filter_map(|a| match &a.state {
                AgentState::Ringing { call, until } if now >= *until => Some((call.clone(), a.id)),
                _ => None,
            })
            .collect();
        for (call, agent) in rang_out {
            if let Some(w) = self.waiting.iter_mut().find(|w| w.call == call) {
                w.offered_to = None;
                w.tried.insert(agent);
            }
            self.out.push_back(Output::Withdraw {
                call: call.clone(),
                agent,
            });
            self.set_state(
                agent,
                AgentState::Paused {
                    reason: PauseReason::NoAnswer,
                },
                now,
            );
        }
        // Maximum wait (only for callers not ringing an agent right now).
        let queues = &self.queues;
        let mut overflow = Vec::new();
        self.waiting.retain(|w| {
            let max = queues.get(&w.queue).map_or(Duration::MAX, |q| q.max_wait);
            let over = w.offered_to.is_none() && now.saturating_duration_since(w.entered) >= max;
            if over {
                overflow.push(w.call.clone());
            }
            !over
        });
        for call in overflow {
            self.out.push_back(Output::Overflow { call });
        }
        self.route(now);
    }

    /// Offers waiting calls to free agents: VIP first, then first come first served.
    fn route(&mut self, now: Instant) {
        let mut order: Vec<usize> = (0..self.waiting.len())
            .filter(|&i| self.waiting[i].offered_to.is_none())
            .collect();
        order.sort_by_key(|&i| (!self.waiting[i].vip, self.waiting[i].entered));
        for i in order {
            let Some(agent) = self.pick_agent(&self.waiting[i]) else {
                continue;
            };
            let ring = self
                .queues
                .get(&self.waiting[i].queue)
                .map_or(Duration::from_secs(20), |q| q.ring_timeout);
            let call = self.waiting[i].call.clone();
            self.waiting[i].offered_to = Some(agent);
            self.set_state(
                agent,
                AgentState::Ringing {
                    call: call.clone(),
                    until: now + ring,
                },
                now,
            );
            self.out.push_back(Output::Offer { call, agent });
        }
    }

    fn eligible(&self, a: &Agent, w: &Waiting) -> bool {
        let skills = self
            .queues
            .get(&w.queue)
            .map(|q| q.required_skills.is_subset(&a.skills))
            .unwrap_or(true);
        a.state == AgentState::Available
            && a.reachable
            && a.queues.contains(&w.queue)
            && skills
            && !w.tried.contains(&a.id)
    }

    /// The agent of `queue` the policy would offer a call to now (longest idle, skills met),
    /// other than `exclude`: whom an attended transfer to a queue consults.
    pub fn free_agent(
        &self,
        queue: QueueId,
        exclude: Option<AgentId>,
        now: Instant,
    ) -> Option<AgentId> {
        let w = Waiting {
            call: CallKey::from(String::new()),
            queue,
            vip: false,
            assigned: None,
            entered: now,
            tried: exclude.into_iter().collect(),
            offered_to: None,
        };
        self.pick_agent(&w)
    }

    fn pick_agent(&self, w: &Waiting) -> Option<AgentId> {
        if let Some(a) = w.assigned.and_then(|id| self.agents.get(&id)) {
            // The assigned agent takes their customer's call from any of their queues.
            let free = a.state == AgentState::Available && a.reachable && !w.tried.contains(&a.id);
            if free {
                return Some(a.id);
            }
        }
        self.agents
            .values()
            .filter(|a| self.eligible(a, w))
            .min_by_key(|a| (a.idle_since, a.id))
            .map(|a| a.id)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let agents = self.agents.values().filter_map(|a| match &a.state {
            AgentState::Ringing { until, .. } | AgentState::WrapUp { until } => Some(*until),
            _ => None,
        });
        let waits = self
            .waiting
            .iter()
            .filter(|w| w.offered_to.is_none())
            .filter_map(|w| {
                self.queues
                    .get(&w.queue)
                    .and_then(|q| w.entered.checked_add(q.max_wait))
            });
        agents.chain(waits).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn acd(t0: Instant) -> Acd {
        let mut acd = Acd::new();
        acd.handle(
            t0,
            Input::UpsertQueue(Queue {
                id: 1,
                required_skills: BTreeSet::new(),
                ring_timeout: Duration::from_secs(15),
                max_wait: Duration::from_secs(60),
                wrap_up: Duration::from_secs(10),
            }),
        );
        acd.handle(
            t0,
            Input::UpsertQueue(Queue {
                id: 2,
                required_skills: set(&["mandarin"]),
                ring_timeout: Duration::from_secs(15),
                max_wait: Duration::from_secs(60),
                wrap_up: Duration::from_secs(10),
            }),
        );
        acd
    }

    fn agent(acd: &mut Acd, now: Instant, id: AgentId, skills: &[&str], queues: &[QueueId]) {
        acd.handle(
            now,
            Input::UpsertAgent {
                id,
                skills: set(skills),
                queues: queues.iter().copied().collect(),
                reachable: true,
            },
        );
        acd.handle(
            now,
            Input::SetAvailable {
                agent: id,
                available: true,
            },
        );
    }

    fn offers(acd: &mut Acd) -> Vec<(CallKey, AgentId)> {
        std::iter::from_fn(|| acd.poll_output())
            .filter_map(|o| match o {
                Output::Offer { call, agent } => Some((call, agent)),
                _ => None,
            })
            .collect()
    }

    fn arrive(acd: &mut Acd, now: Instant, call: &str, queue: QueueId, vip: bool) {
        acd.handle(
            now,
            Input::CallArrived {
                call: call.into(),
                queue,
                vip,
                assigned: None,
            },
        );
    }

    /// A blind transfer: the first agent goes to wrap-up, the target is offered the call
    /// first, and when the target refuses the rest of the queue is (never the first agent).
    #[test]
    fn a_transferred_call_goes_to_its_target_then_to_the_queue() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(1), 2, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(2), 3, &[], &[1]);
        offers(&mut a);
        arrive(&mut a, t0 + Duration::from_secs(5), "c", 1, false);
        assert_eq!(offers(&mut a), vec![("c".into(), 1)]);
        a.handle(
            t0 + Duration::from_secs(6),
            Input::Answered {
                call: "c".into(),
                agent: 1,
            },
        );
        let t = t0 + Duration::from_secs(30);
        a.handle(
            t,
            Input::Transfer {
                call: "c".into(),
                queue: 1,
                to: Some(3),
            },
        );
        assert_eq!(a.agent(1).unwrap().state.name(), "wrap_up");
        assert_eq!(offers(&mut a), vec![("c".into(), 3)], "the target first");
        a.handle(
            t,
            Input::Refused {
                call: "c".into(),
                agent: 3,
            },
        );
        assert_eq!(offers(&mut a), vec![("c".into(), 2)], "then the queue");
    }

    /// Attended transfer: whoever of the queue the policy would pick is consulted (never the
    /// agent asking); completing it gives the consulted agent the call with the queue's
    /// wrap-up after it, and the first agent goes to wrap-up at once.
    #[test]
    fn a_consulted_agent_is_picked_by_the_policy_and_joined_to_the_call() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(1), 2, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(2), 3, &[], &[1]);
        offers(&mut a);
        arrive(&mut a, t0 + Duration::from_secs(5), "c", 1, false);
        assert_eq!(offers(&mut a), vec![("c".into(), 1)]);
        let t = t0 + Duration::from_secs(6);
        a.handle(
            t,
            Input::Answered {
                call: "c".into(),
                agent: 1,
            },
        );
        assert_eq!(a.free_agent(1, Some(1), t), Some(2), "longest idle, not 1");
        assert_eq!(a.free_agent(2, Some(1), t), None, "nobody has the skill");
        a.handle(
            t,
            Input::Outbound {
                call: "c~consult1".into(),
                agent: 2,
            },
        );
        assert_eq!(a.free_agent(1, Some(1), t), Some(3), "2 is busy now");
        arrive(&mut a, t, "other", 1, false);
        assert_eq!(offers(&mut a), vec![("other".into(), 3)]);
        let t = t0 + Duration::from_secs(20);
        a.handle(
            t,
            Input::Joined {
                call: "c".into(),
                consult: "c~consult1".into(),
                queue: Some(1),
            },
        );
        assert_eq!(a.agent(1).unwrap().state.name(), "wrap_up");
        assert_eq!(
            a.agent(2).unwrap().state,
            AgentState::OnCall {
                call: "c".into(),
                wrap_up: Duration::from_secs(10)
            }
        );
        a.handle(t, Input::Ended { call: "c".into() });
        assert_eq!(a.agent(2).unwrap().state.name(), "wrap_up");
    }

    /// An agent on a call they placed is not offered callers, and afterwards is what they
    /// were before (available at once, no wrap-up; a paused agent stays paused).
    #[test]
    fn an_agent_dialling_out_is_busy_until_the_call_ends_then_as_before() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0, 2, &[], &[1]);
        a.handle(
            t0,
            Input::SetAvailable {
                agent: 2,
                available: false,
            },
        );
        offers(&mut a);
        for id in [1, 2] {
            a.handle(
                t0,
                Input::Outbound {
                    call: format!("out{id}").as_str().into(),
                    agent: id,
                },
            );
            assert_eq!(a.agent(id).unwrap().state.name(), "on_call");
        }
        arrive(&mut a, t0 + Duration::from_secs(1), "in", 1, true);
        assert_eq!(offers(&mut a), vec![], "nobody free");
        // A second dial while on the call changes nothing.
        a.handle(
            t0,
            Input::Outbound {
                call: "again".into(),
                agent: 1,
            },
        );
        let t = t0 + Duration::from_secs(5);
        for id in [1, 2] {
            a.handle(
                t,
                Input::Ended {
                    call: format!("out{id}").as_str().into(),
                },
            );
        }
        assert_eq!(a.agent(2).unwrap().state.name(), "paused");
        assert_eq!(
            offers(&mut a),
            vec![("in".into(), 1)],
            "agent 1 is free again"
        );
    }

    #[test]
    fn longest_idle_agent_gets_the_call() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(5), 2, &[], &[1]);
        offers(&mut a);
        arrive(&mut a, t0 + Duration::from_secs(6), "c1", 1, false);
        assert_eq!(offers(&mut a), vec![("c1".into(), 1)]);
        arrive(&mut a, t0 + Duration::from_secs(7), "c2", 1, false);
        assert_eq!(
            offers(&mut a),
            vec![("c2".into(), 2)],
            "one offer per agent"
        );
        arrive(&mut a, t0 + Duration::from_secs(8), "c3", 1, false);
        assert!(offers(&mut a).is_empty(), "nobody free: c3 waits");
    }

    #[test]
    fn vip_callers_go_first_and_skills_are_required() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        arrive(&mut a, t0, "regular", 1, false);
        arrive(&mut a, t0 + Duration::from_secs(1), "vip", 1, true);
        arrive(&mut a, t0 + Duration::from_secs(2), "mandarin", 2, false);
        agent(
            &mut a,
            t0 + Duration::from_secs(3),
            1,
            &["english"],
            &[1, 2],
        );
        assert_eq!(offers(&mut a), vec![("vip".into(), 1)]);
        agent(&mut a, t0 + Duration::from_secs(4), 2, &["mandarin"], &[2]);
        assert_eq!(
            offers(&mut a),
            vec![("mandarin".into(), 2)],
            "only the skilled agent takes queue 2"
        );
    }

    #[test]
    fn assigned_agent_first_when_free() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(1), 7, &[], &[1]);
        offers(&mut a);
        a.handle(
            t0 + Duration::from_secs(2),
            Input::CallArrived {
                call: "mine".into(),
                queue: 1,
                vip: false,
                assigned: Some(7),
            },
        );
        assert_eq!(offers(&mut a), vec![("mine".into(), 7)]);
    }

    #[test]
    fn ring_no_answer_pauses_and_moves_on() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_secs(1), 2, &[], &[1]);
        offers(&mut a);
        arrive(&mut a, t0 + Duration::from_secs(2), "c", 1, false);
        assert_eq!(offers(&mut a), vec![("c".into(), 1)]);
        let due = a.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(17));
        a.handle_timeout(due);
        let out: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        assert!(out.contains(&Output::Withdraw {
            call: "c".into(),
            agent: 1
        }));
        assert!(out.contains(&Output::Offer {
            call: "c".into(),
            agent: 2
        }));
        assert_eq!(
            a.agent(1).unwrap().state,
            AgentState::Paused {
                reason: PauseReason::NoAnswer
            }
        );
    }

    #[test]
    fn unreachable_agents_get_nothing_and_max_wait_overflows() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        a.handle(
            t0,
            Input::Reachable {
                agent: 1,
                reachable: false,
            },
        );
        arrive(&mut a, t0, "c", 1, false);
        assert!(offers(&mut a).is_empty());
        a.handle_timeout(t0 + Duration::from_secs(60));
        let out: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        assert_eq!(out, vec![Output::Overflow { call: "c".into() }]);
        assert_eq!(a.waiting_calls(), 0);
    }

    #[test]
    fn answered_call_ends_in_wrap_up_then_available() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        arrive(&mut a, t0, "c", 1, false);
        offers(&mut a);
        a.handle(
            t0 + Duration::from_secs(3),
            Input::Answered {
                call: "c".into(),
                agent: 1,
            },
        );
        assert_eq!(a.agent(1).unwrap().state.name(), "on_call");
        a.handle(
            t0 + Duration::from_secs(60),
            Input::Ended { call: "c".into() },
        );
        assert_eq!(a.agent(1).unwrap().state.name(), "wrap_up");
        arrive(&mut a, t0 + Duration::from_secs(61), "next", 1, false);
        assert!(offers(&mut a).is_empty(), "no call during wrap-up");
        a.handle_timeout(t0 + Duration::from_secs(70));
        assert_eq!(offers(&mut a), vec![("next".into(), 1)]);
    }

    #[test]
    fn abandoned_while_ringing_frees_the_agent() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        arrive(&mut a, t0, "c", 1, false);
        offers(&mut a);
        a.handle(
            t0 + Duration::from_secs(2),
            Input::Abandoned { call: "c".into() },
        );
        assert_eq!(a.agent(1).unwrap().state, AgentState::Available);
        assert_eq!(a.waiting_calls(), 0);
    }

    #[test]
    fn an_answer_that_crosses_the_ring_timeout_wins() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_millis(1), 2, &[], &[1]);
        arrive(&mut a, t0, "c", 1, false);
        assert_eq!(offers(&mut a), vec![("c".into(), 1)]);
        // Ring timeout: 1 is withdrawn and paused, 2 rings ...
        a.handle_timeout(t0 + Duration::from_secs(30));
        let out: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        assert!(
            out.contains(&Output::Offer {
                call: "c".into(),
                agent: 2
            }),
            "{out:?}"
        );
        // ... but 1's answer was already on its way.
        a.handle(
            t0 + Duration::from_secs(30),
            Input::Answered {
                call: "c".into(),
                agent: 1,
            },
        );
        let out: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        assert!(
            out.contains(&Output::Withdraw {
                call: "c".into(),
                agent: 2
            }),
            "{out:?}"
        );
        assert_eq!(a.agent(1).unwrap().state.name(), "on_call");
        assert_eq!(a.agent(2).unwrap().state.name(), "available");
        assert_eq!(a.waiting_calls(), 0);
    }

    #[test]
    fn a_refusal_that_crosses_a_withdrawal_is_ignored() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_millis(1), 2, &[], &[1]);
        arrive(&mut a, t0, "c", 1, false);
        offers(&mut a);
        a.handle_timeout(t0 + Duration::from_secs(30));
        while a.poll_output().is_some() {}
        // 1's late 486 must not free 2, who is ringing now.
        a.handle(
            t0 + Duration::from_secs(30),
            Input::Refused {
                call: "c".into(),
                agent: 1,
            },
        );
        assert_eq!(a.agent(2).unwrap().state.name(), "ringing");
        assert_eq!(a.agent(1).unwrap().state.name(), "paused");
    }

    #[test]
    fn a_pause_or_logout_during_a_call_applies_after_it() {
        let t0 = Instant::now();
        let mut a = acd(t0);
        agent(&mut a, t0, 1, &[], &[1]);
        agent(&mut a, t0 + Duration::from_millis(1), 2, &[], &[1]);
        arrive(&mut a, t0, "c", 1, false);
        arrive(&mut a, t0, "d", 1, false);
        offers(&mut a);
        a.handle(
            t0,
            Input::Answered {
                call: "c".into(),
                agent: 1,
            },
        );
        a.handle(
            t0,
            Input::SetAvailable {
                agent: 1,
                available: false,
            },
        );
        a.handle(t0, Input::Offline { agent: 2 });
        assert_eq!(a.agent(1).unwrap().state.name(), "on_call");
        assert_eq!(a.agent(2).unwrap().state.name(), "ringing");
        // 2's caller gives up: 2 is logged out, not offered the next call.
        a.handle(t0, Input::Abandoned { call: "d".into() });
        assert_eq!(a.agent(2).unwrap().state.name(), "offline");
        a.handle(t0, Input::Ended { call: "c".into() });
        a.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(a.agent(1).unwrap().state.name(), "paused");
        arrive(&mut a, t0 + Duration::from_secs(12), "e", 1, false);
        assert!(offers(&mut a).is_empty());
        // Back from the pause: the waiting caller is offered at once.
        a.handle(
            t0 + Duration::from_secs(13),
            Input::SetAvailable {
                agent: 1,
                available: true,
            },
        );
        assert_eq!(offers(&mut a), vec![("e".into(), 1)]);
    }
}
