//! The event bus between call tasks, the ACD and the desktops' WebSockets.
//!
//! Events are serialized once, when published, and fanned out by audience: an agent's desktops
//! get their own calls and state on the agent's own channel, supervisors (and the server's own
//! followers: webhooks, the wallboard's figures) everything on one channel. (One channel for
//! all woke every desktop's task for every event: with 200 desktops, the one the pop was for
//! waited behind about a hundred others, 1.5 ms of a 3.5 ms pop.)
//! The bus also keeps what a desktop needs after a reconnect: each agent's last state and the
//! last event of every call still in progress.
//!
//! [`EventBus`] is the seam for running several nodes: the in-process [`LocalBus`] is the first
//! implementation; a PostgreSQL LISTEN/NOTIFY one can publish to other nodes behind the same
//! trait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::broadcast;

pub mod payload;
pub use payload::Payload;

/// One event, typed and ready to write to a socket.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub payload: Payload,
    /// The `type` field (`call.offered`, `agent.state`, …).
    pub kind: &'static str,
    /// The agent whose desktops get it; `None` goes to supervisors only.
    pub agent: Option<i64>,
    /// The call it is about, so the bus can keep the live calls for reconnecting desktops.
    pub call: Option<crate::ids::CallKey>,
    /// The JSON text sent to desktops.
    pub json: Arc<str>,
    /// When the call's INVITE arrived: a `call.offered` written to a socket records the
    /// screen-pop latency from this instant.
    pub since: Option<Instant>,
}

impl Event {
    /// The event for `payload`: its JSON (made once, here), who gets it and which call it is
    /// about all come from the payload.
    pub fn new(payload: Payload) -> Event {
        let json = serde_json::to_string(&payload).unwrap_or_else(|_| "{}".into());
        Event {
            kind: payload.kind(),
            agent: payload.audience(),
            call: payload.call().cloned(),
            json: Arc::from(json),
            since: None,
            payload,
        }
    }

    pub fn since(mut self, at: Instant) -> Event {
        self.since = Some(at);
        self
    }
}

/// Who is looking: decides which events a desktop receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub agent: i64,
    pub sees_all: bool,
}

impl Viewer {
    /// The server's own followers (webhooks, the wallboard's figures): everything.
    pub const EVERYTHING: Viewer = Viewer {
        agent: 0,
        sees_all: true,
    };

    pub fn may_see(&self, e: &Event) -> bool {
        self.sees_all || e.agent == Some(self.agent)
    }
}

/// Publishing and subscribing, in-process or across nodes.
pub trait EventBus: Send + Sync {
    fn publish(&self, e: Event);
    /// The events `viewer` may see, from now on.
    fn subscribe(&self, viewer: Viewer) -> broadcast::Receiver<Arc<Event>>;
    /// What `viewer` should see on (re)connecting: agent states, then live calls.
    fn snapshot(&self, viewer: Viewer) -> Vec<Arc<Event>>;
}

#[derive(Default)]
struct Live {
    agents: HashMap<i64, Arc<Event>>,
    /// By call and audience: during an attended transfer a call is live on two desktops.
    calls: BTreeMap<(crate::ids::CallKey, Option<i64>), Arc<Event>>,
    /// Callers waiting in a queue (until answered or gone), kept apart from `calls` so that a
    /// withdrawn offer still leaves its caller on the supervisors' wallboard.
    queued: BTreeMap<crate::ids::CallKey, Arc<Event>>,
    /// Calls on hold: a reconnecting desktop learns it after the call's own event.
    held: BTreeMap<crate::ids::CallKey, Arc<Event>>,
    /// Each agent's own channel, made when one of the agent's desktops subscribes and dropped
    /// at the first event for that agent after the last desktop has gone (at most one per
    /// agent, 256 slots each).
    agents_tx: HashMap<i64, broadcast::Sender<Arc<Event>>>,
}

/// How many events may queue on an agent's own channel: an agent gets a few per call.
const AGENT_CAPACITY: usize = 256;

/// The single-node bus: the channels and the live state.
pub(crate) struct LocalBus {
    /// Everything, for those who see everything.
    all: broadcast::Sender<Arc<Event>>,
    live: Mutex<Live>,
}

impl LocalBus {
    /// `capacity` events may queue for a slow supervisor's desktop before it is
    /// resynchronized from the snapshot (an agent's: up to 256).
    pub fn new(capacity: usize) -> LocalBus {
        let (all, _) = broadcast::channel(capacity);
        LocalBus {
            all,
            live: Mutex::new(Live::default()),
        }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, e: Event) {
        let e = Arc::new(e);
        // A publisher that panicked left nothing half-done that matters here.
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match &e.payload {
            Payload::AgentState(s) => {
                live.agents.insert(s.agent_id, e.clone());
            }
            Payload::CallQueued(q) => {
                live.queued.insert(q.call_id.clone(), e.clone());
            }
            Payload::CallOffered(o) => {
                live.calls
                    .insert((o.call_id.clone(), o.agent_id), e.clone());
            }
            Payload::CallAnswered(a) => {
                live.queued.remove(&a.call_id);
                live.calls
                    .insert((a.call_id.clone(), a.agent_id), e.clone());
            }
            Payload::CallWithdrawn(w) => {
                live.calls.remove(&(w.call_id.clone(), Some(w.agent_id)));
            }
            Payload::CallEnded(c) => {
                live.queued.remove(&c.call_id);
                live.calls.retain(|(call, _), _| *call != c.call_id);
                live.held.remove(&c.call_id);
            }
            Payload::CallHeld(h) => {
                live.held.insert(h.call_id.clone(), e.clone());
            }
            Payload::CallResumed(h) => {
                live.held.remove(&h.call_id);
            }
            Payload::CallTransferred(t) => {
                // The target's offer follows with the call's new state.
                // The agent who handed it on; a consulted agent's offer stays.
                live.calls.retain(|(call, agent), _| {
                    *call != t.call_id || (t.agent_id.is_some() && *agent != t.agent_id)
                });
                live.held.remove(&t.call_id);
            }
            Payload::CallSurvey(sv) if sv.state == "asking" => {
                // The agent is done with the call; the caller answers the survey alone.
                live.calls.retain(|(call, _), _| *call != sv.call_id);
                live.held.remove(&sv.call_id);
            }
            _ => {}
        }
        // Sent under the lock: each channel has the events in the order the live state took
        // them. No subscriber is not an error.
        if let Some(agent) = e.agent {
            if let Some(tx) = live.agents_tx.get(&agent) {
                if tx.send(e.clone()).is_err() {
                    live.agents_tx.remove(&agent);
                }
            }
        }
        let _ = self.all.send(e);
    }

    fn subscribe(&self, viewer: Viewer) -> broadcast::Receiver<Arc<Event>> {
        if viewer.sees_all {
            return self.all.subscribe();
        }
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .agents_tx
            .entry(viewer.agent)
            .or_insert_with(|| broadcast::channel(AGENT_CAPACITY).0)
            .subscribe()
    }

    fn snapshot(&self, viewer: Viewer) -> Vec<Arc<Event>> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut agents: Vec<&Arc<Event>> =
            live.agents.values().filter(|e| viewer.may_see(e)).collect();
        agents.sort_by_key(|e| e.agent);
        agents
            .into_iter()
            .chain(live.queued.values().filter(|e| viewer.may_see(e)))
            .chain(live.calls.values().filter(|e| viewer.may_see(e)))
            .chain(live.held.values().filter(|e| viewer.may_see(e)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::payload::sample::*;
    use super::*;

    #[test]
    fn agents_see_their_own_supervisors_everything() {
        let bus = LocalBus::new(16);
        let one = Viewer {
            agent: 1,
            sees_all: false,
        };
        let sup = Viewer {
            agent: 9,
            sees_all: true,
        };
        let mut rx = bus.subscribe(sup);
        let mut mine = bus.subscribe(one);
        let mut mine_too = bus.subscribe(one);
        bus.publish(Event::new(offered("a", 1, 1, None, "x")));
        bus.publish(Event::new(offered("b", 1, 2, None, "x")));
        bus.publish(Event::new(queued("c", 1, "x")));
        bus.publish(Event::new(state(1, "ringing")));
        let first = rx.try_recv().expect("event");
        let second = rx.try_recv().expect("event");
        assert!(one.may_see(&first) && !one.may_see(&second));
        assert!(sup.may_see(&first) && sup.may_see(&second));
        assert_eq!(rx.len(), 2, "the supervisor gets everything");
        // Agent 1's own channel has agent 1's events only, in order, on each desktop.
        for rx in [&mut mine, &mut mine_too] {
            let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|e| e.kind)
                .collect();
            assert_eq!(kinds, ["call.offered", "agent.state"]);
        }
        // An agent's channel goes with its last desktop; a new desktop gets a new one.
        drop((mine, mine_too));
        bus.publish(Event::new(state(1, "available")));
        assert!(bus.live.lock().unwrap().agents_tx.is_empty());
        let mut again = bus.subscribe(one);
        bus.publish(Event::new(state(1, "away")));
        assert!(again.try_recv().expect("event").json.contains("away"));
        assert!(first.json.contains("\"type\":\"call.offered\""));
        assert_eq!(
            (first.kind, first.call.as_ref().map(|c| c.as_str())),
            ("call.offered", Some("a"))
        );
    }

    #[test]
    fn snapshot_keeps_live_calls_and_latest_state() {
        let bus = LocalBus::new(16);
        bus.publish(Event::new(state(1, "available")));
        bus.publish(Event::new(state(1, "ringing")));
        bus.publish(Event::new(offered("a", 1, 1, None, "x")));
        bus.publish(Event::new(answered("a", 1)));
        bus.publish(Event::new(offered("b", 1, 1, None, "x")));
        bus.publish(Event::new(ended("b", Some(1))));
        let v = Viewer {
            agent: 1,
            sees_all: false,
        };
        let kinds: Vec<&str> = bus.snapshot(v).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["agent.state", "call.answered"]);
        let snap = bus.snapshot(v);
        assert!(snap[0].json.contains("ringing"));
        let other = Viewer {
            agent: 2,
            sees_all: false,
        };
        assert!(bus.snapshot(other).is_empty());
    }

    #[test]
    fn a_queued_caller_stays_in_the_supervisors_snapshot_until_answered_or_gone() {
        let bus = LocalBus::new(16);
        let sup = Viewer {
            agent: 9,
            sees_all: true,
        };
        let agent = Viewer {
            agent: 1,
            sees_all: false,
        };
        bus.publish(Event::new(queued("q", 1, "x")));
        bus.publish(Event::new(offered("q", 1, 1, None, "x")));
        bus.publish(Event::new(withdrawn("q", 1)));
        let kinds = |v| -> Vec<&'static str> { bus.snapshot(v).iter().map(|e| e.kind).collect() };
        assert_eq!(
            kinds(sup),
            ["call.queued"],
            "still waiting after the withdrawal"
        );
        assert!(
            kinds(agent).is_empty(),
            "the withdrawn pop does not come back"
        );
        bus.publish(Event::new(answered("q", 2)));
        assert_eq!(kinds(sup), ["call.answered"]);
        bus.publish(Event::new(ended("q", Some(2))));
        assert!(kinds(sup).is_empty());
    }

    #[test]
    fn every_payload_serializes_with_its_type_and_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&Event::new(state(3, "paused")).json).expect("json");
        assert_eq!(v["type"], "agent.state");
        assert_eq!(v["agent_id"], 3);
        assert!(v["reason"].is_null() && v["until"].is_null());
        let v: serde_json::Value =
            serde_json::from_str(&Event::new(ended("c", None)).json).expect("json");
        assert_eq!(
            (v["type"].as_str(), v["disposition"].as_str()),
            (Some("call.ended"), Some("answered"))
        );
        assert!(v["agent_id"].is_null());
    }
}
