//! The event bus between call tasks, the ACD and the desktops' WebSockets.
//!
//! Events are serialized once, when published, and fanned out to every subscriber, which keeps
//! only what its viewer may see: an agent their own calls and state, a supervisor everything.
//! The bus also keeps what a desktop needs after a reconnect: each agent's last state and the
//! last event of every call still in progress.
//!
//! [`EventBus`] is the seam for running several nodes: the in-process [`LocalBus`] is the first
//! implementation; a PostgreSQL LISTEN/NOTIFY one can publish to other nodes behind the same
//! trait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;

/// One event, ready to write to a socket.
#[derive(Debug)]
pub struct Event {
    /// The `type` field (`call.offered`, `agent.state`, …).
    pub kind: &'static str,
    /// The agent whose desktops get it; `None` goes to supervisors only.
    pub agent: Option<i64>,
    /// The call it is about, so the bus can keep the live calls for reconnecting desktops.
    pub call: Option<String>,
    /// The JSON text sent to desktops.
    pub json: Arc<str>,
    /// When the call's INVITE arrived: a `call.offered` written to a socket records the
    /// screen-pop latency from this instant.
    pub since: Option<Instant>,
}

impl Event {
    pub fn new(kind: &'static str, agent: Option<i64>, body: serde_json::Value) -> Event {
        let mut body = body;
        if let serde_json::Value::Object(m) = &mut body {
            m.insert("type".into(), serde_json::Value::from(kind));
        }
        Event {
            kind,
            agent,
            call: None,
            json: Arc::from(body.to_string()),
            since: None,
        }
    }

    pub fn for_call(mut self, call: &str) -> Event {
        self.call = Some(call.to_string());
        self
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
    pub fn may_see(&self, e: &Event) -> bool {
        self.sees_all || e.agent == Some(self.agent)
    }
}

/// Publishing and subscribing, in-process or across nodes.
pub trait EventBus: Send + Sync {
    fn publish(&self, e: Event);
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;
    /// What `viewer` should see on (re)connecting: agent states, then live calls.
    fn snapshot(&self, viewer: Viewer) -> Vec<Arc<Event>>;
}

#[derive(Default)]
struct Live {
    agents: HashMap<i64, Arc<Event>>,
    calls: BTreeMap<String, Arc<Event>>,
    /// Callers waiting in a queue (until answered or gone), kept apart from `calls` so that a
    /// withdrawn offer still leaves its caller on the supervisors' wallboard.
    queued: BTreeMap<String, Arc<Event>>,
}

/// The single-node bus: a broadcast channel and the live state.
pub struct LocalBus {
    tx: broadcast::Sender<Arc<Event>>,
    live: Mutex<Live>,
}

impl LocalBus {
    /// `capacity` events may queue for a slow desktop before it is resynchronized from the
    /// snapshot.
    pub fn new(capacity: usize) -> LocalBus {
        let (tx, _) = broadcast::channel(capacity);
        LocalBus {
            tx,
            live: Mutex::new(Live::default()),
        }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, e: Event) {
        let e = Arc::new(e);
        if let Ok(mut live) = self.live.lock() {
            match (e.kind, &e.call, e.agent) {
                ("agent.state", _, Some(a)) => {
                    live.agents.insert(a, e.clone());
                }
                ("call.queued", Some(c), _) => {
                    live.queued.insert(c.clone(), e.clone());
                }
                ("call.offered", Some(c), _) => {
                    live.calls.insert(c.clone(), e.clone());
                }
                ("call.answered", Some(c), _) => {
                    live.queued.remove(c);
                    live.calls.insert(c.clone(), e.clone());
                }
                ("call.withdrawn", Some(c), _) => {
                    live.calls.remove(c);
                }
                ("call.ended", Some(c), _) => {
                    live.queued.remove(c);
                    live.calls.remove(c);
                }
                _ => {}
            }
        }
        // No subscriber is not an error.
        let _ = self.tx.send(e);
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    fn snapshot(&self, viewer: Viewer) -> Vec<Arc<Event>> {
        let Ok(live) = self.live.lock() else {
            return Vec::new();
        };
        let mut agents: Vec<&Arc<Event>> =
            live.agents.values().filter(|e| viewer.may_see(e)).collect();
        agents.sort_by_key(|e| e.agent);
        agents
            .into_iter()
            .chain(live.queued.values().filter(|e| viewer.may_see(e)))
            .chain(live.calls.values().filter(|e| viewer.may_see(e)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agents_see_their_own_supervisors_everything() {
        let bus = LocalBus::new(16);
        let mut rx = bus.subscribe();
        bus.publish(Event::new("call.offered", Some(1), json!({"call_id": "a"})).for_call("a"));
        bus.publish(Event::new("call.offered", Some(2), json!({"call_id": "b"})).for_call("b"));
        let one = Viewer {
            agent: 1,
            sees_all: false,
        };
        let sup = Viewer {
            agent: 9,
            sees_all: true,
        };
        let first = rx.try_recv().expect("event");
        let second = rx.try_recv().expect("event");
        assert!(one.may_see(&first) && !one.may_see(&second));
        assert!(sup.may_see(&first) && sup.may_see(&second));
        assert!(first.json.contains("\"type\":\"call.offered\""));
    }

    #[test]
    fn snapshot_keeps_live_calls_and_latest_state() {
        let bus = LocalBus::new(16);
        bus.publish(Event::new(
            "agent.state",
            Some(1),
            json!({"state": "available"}),
        ));
        bus.publish(Event::new(
            "agent.state",
            Some(1),
            json!({"state": "ringing"}),
        ));
        bus.publish(Event::new("call.offered", Some(1), json!({})).for_call("a"));
        bus.publish(Event::new("call.answered", Some(1), json!({})).for_call("a"));
        bus.publish(Event::new("call.offered", Some(1), json!({})).for_call("b"));
        bus.publish(Event::new("call.ended", Some(1), json!({})).for_call("b"));
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
        bus.publish(Event::new("call.queued", None, json!({})).for_call("q"));
        bus.publish(Event::new("call.offered", Some(1), json!({})).for_call("q"));
        bus.publish(Event::new("call.withdrawn", Some(1), json!({})).for_call("q"));
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
        bus.publish(Event::new("call.answered", Some(2), json!({})).for_call("q"));
        assert_eq!(kinds(sup), ["call.answered"]);
        bus.publish(Event::new("call.ended", Some(2), json!({})).for_call("q"));
        assert!(kinds(sup).is_empty());
    }
}
