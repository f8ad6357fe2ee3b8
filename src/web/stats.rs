//! The wallboard's figures: `GET /api/stats/queues` and `GET /api/stats/agents`.
//!
//! The day's totals come from the contact logs (one grouped query each); what is happening now
//! (callers waiting and since when, each agent's state and current call) comes from a
//! [`LiveBoard`] that follows the event bus. Following the bus rather than asking the ACD keeps
//! the board right when several nodes share one bus and one database.

use crate::ids::CallKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::events::{EventBus, Payload, Viewer};
use crate::store::agents::Role;
use crate::time::{parse_rfc3339_ms, rfc3339_ms};

/// A caller in a queue, not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    queue_id: i64,
    since_ms: i64,
}

/// An agent as the events last described them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AgentNow {
    state: String,
    since: Option<String>,
    call: Option<CallKey>,
    caller: Option<String>,
    /// The agent's caller is on hold.
    on_hold: bool,
}

/// The live part of the wallboard, kept from the events.
#[derive(Debug, Default)]
pub(crate) struct LiveBoard {
    waiting: HashMap<CallKey, Waiting>,
    agents: HashMap<i64, AgentNow>,
}

impl LiveBoard {
    /// Applies one event; `now_ms` stands in for a stamp that does not parse.
    pub fn apply(&mut self, e: &Payload, now_ms: i64) {
        let stamp = |t: &str| parse_rfc3339_ms(t).unwrap_or(now_ms);
        match e {
            Payload::CallQueued(q) => {
                self.waiting.insert(
                    q.call_id.clone(),
                    Waiting {
                        queue_id: q.queue_id,
                        since_ms: stamp(&q.queued_at),
                    },
                );
            }
            Payload::CallOffered(o) => {
                // Ringing is still waiting; after a resynchronization the offer may be all the
                // board knows of a call, and its `offered_at` is when the INVITE arrived.
                if let Some(q) = o.queue_id {
                    self.waiting.entry(o.call_id.clone()).or_insert(Waiting {
                        queue_id: q,
                        since_ms: stamp(&o.offered_at),
                    });
                }
                if let Some(a) = o.agent_id {
                    let caller = o.customer["name"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| o.caller.number.clone())
                        .or_else(|| Some(o.caller.raw.clone()));
                    let now = self.agents.entry(a).or_default();
                    now.call = Some(o.call_id.clone());
                    now.caller = caller;
                }
            }
            Payload::CallAnswered(a) => {
                self.waiting.remove(&a.call_id);
            }
            Payload::CallWithdrawn(w) => {
                if let Some(a) = self.agents.get_mut(&w.agent_id) {
                    if a.call.as_ref() == Some(&w.call_id) {
                        a.call = None;
                        a.caller = None;
                        a.on_hold = false;
                    }
                }
            }
            Payload::CallEnded(c) => {
                self.waiting.remove(&c.call_id);
                for a in self.agents.values_mut() {
                    if a.call.as_ref() == Some(&c.call_id) {
                        a.call = None;
                        a.caller = None;
                        a.on_hold = false;
                    }
                }
            }
            Payload::AgentState(st) => {
                let now = self.agents.entry(st.agent_id).or_default();
                now.state = st.state.to_string();
                now.since = Some(st.since.clone());
                if matches!(st.state, "available" | "paused" | "offline") {
                    now.call = None;
                    now.caller = None;
                    now.on_hold = false;
                }
            }
            Payload::CallHeld(h) | Payload::CallResumed(h) => {
                let held = matches!(e, Payload::CallHeld(_));
                for a in self.agents.values_mut() {
                    if a.call.as_ref() == Some(&h.call_id) {
                        a.on_hold = held;
                    }
                }
            }
            Payload::CallTransferred(t) => {
                // The agent who handed it on (a consulted agent has it now).
                for (id, a) in self.agents.iter_mut() {
                    let handed_on = t.agent_id.is_none_or(|from| from == *id);
                    if a.call.as_ref() == Some(&t.call_id) && handed_on {
                        a.call = None;
                        a.caller = None;
                        a.on_hold = false;
                    }
                }
            }
            Payload::CallSurvey(sv) => {
                // The agent hung up first: the caller answers the survey alone.
                for a in self.agents.values_mut() {
                    if a.call.as_ref() == Some(&sv.call_id) {
                        a.call = None;
                        a.caller = None;
                        a.on_hold = false;
                    }
                }
            }
            Payload::AgentDeactivated { .. }
            | Payload::CallConsult(_)
            | Payload::WorkOrderCreated { .. }
            | Payload::WorkOrderUpdated { .. }
            | Payload::CampaignProgress(_) => {}
        }
    }

    /// An agent's state as the desktops last heard it (`available`, `on_call`, …).
    pub fn agent_state(&self, agent: i64) -> Option<&str> {
        self.agents
            .get(&agent)
            .map(|a| a.state.as_str())
            .filter(|s| !s.is_empty())
    }

    /// (callers waiting, oldest wait start) for a queue.
    fn queue(&self, queue_id: i64) -> (i64, Option<i64>) {
        let mut n = 0;
        let mut oldest = None::<i64>;
        for w in self.waiting.values().filter(|w| w.queue_id == queue_id) {
            n += 1;
            oldest = Some(oldest.map_or(w.since_ms, |o| o.min(w.since_ms)));
        }
        (n, oldest)
    }
}

/// The board shared by the handlers, fed by a task that follows the bus.
pub(crate) type SharedBoard = Arc<Mutex<LiveBoard>>;

/// Starts following `bus`; on falling behind it starts over from the bus's snapshot.
pub(crate) fn follow(bus: Arc<dyn EventBus>) -> SharedBoard {
    let board: SharedBoard = Arc::default();
    let b = board.clone();
    let mut rx = bus.subscribe(Viewer::EVERYTHING);
    let all = Viewer::EVERYTHING;
    let resync = move |board: &SharedBoard| {
        let snap = bus.snapshot(all);
        if let Ok(mut g) = board.lock() {
            *g = LiveBoard::default();
            for e in snap {
                g.apply(&e.payload, crate::store::now_ms());
            }
        }
    };
    resync(&b);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Ok(mut g) = b.lock() {
                        g.apply(&e.payload, crate::store::now_ms());
                    }
                }
                Err(RecvError::Lagged(_)) => resync(&b),
                Err(RecvError::Closed) => break,
            }
        }
    });
    board
}

#[derive(Deserialize)]
pub(crate) struct StatsQuery {
    /// Start of the period (RFC 3339; the page sends the user's local midnight). Default: the
    /// last midnight UTC.
    since: Option<String>,
}

fn since_ms(q: &StatsQuery) -> Result<i64, ApiError> {
    match q.since.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => parse_rfc3339_ms(s)
            .ok_or_else(|| ApiError::invalid("since", "not an RFC 3339 time or YYYY-MM-DD date")),
        None => {
            let now = crate::store::now_ms();
            Ok(now - now.rem_euclid(86_400_000))
        }
    }
}

/// One queue on the wallboard.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct QueueStats {
    queue_id: i64,
    name: String,
    waiting: i64,
    longest_wait_secs: i64,
    answered: i64,
    abandoned: i64,
    missed: i64,
    /// Share of the period's finished calls answered within `service_level_secs`; null before
    /// the first call.
    service_level: Option<f64>,
    service_level_secs: i64,
    avg_wait_secs: Option<f64>,
    avg_talk_secs: Option<f64>,
    /// Post-call surveys over the period: callers asked, callers who pressed a digit, and
    /// their mean score (1–9; null before the first).
    surveys_offered: i64,
    surveys_scored: i64,
    avg_survey_score: Option<f64>,
}

/// One agent on the wallboard.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AgentStats {
    agent_id: i64,
    display_name: String,
    state: String,
    since: Option<String>,
    current_call_id: Option<String>,
    current_caller: Option<String>,
    /// The current caller is on hold (hearing music).
    on_hold: bool,
    calls_today: i64,
    talk_secs_today: i64,
    /// The agent's callers asked the post-call survey over the period, those who pressed a
    /// digit, and their mean score (1–9; null before the first).
    surveys_offered: i64,
    surveys_scored: i64,
    avg_survey_score: Option<f64>,
}

/// Per queue: callers waiting now and the longest wait, and over the period answered /
/// abandoned / missed, service level, average wait and talk, and post-call survey scores
/// (supervisors).
#[utoipa::path(get, path = "/api/stats/queues", params(("since" = Option<String>, Query)),
    responses((status = 200, body = [QueueStats])))]
pub async fn queues(
    State(s): State<AppState>,
    me: Principal,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    me.require(Role::Supervisor)?;
    let since = since_ms(&q)?;
    let day = s.store.queue_stats_since(since).await?;
    let now = crate::store::now_ms();
    let queues = s.store.queues().await?;
    let board = s.board.lock().map_err(|_| ApiError::internal("board"))?;
    let items: Vec<QueueStats> = queues
        .into_iter()
        .filter(|q| q.active)
        .map(|q| {
            let d = day
                .iter()
                .find(|d| d.queue_id == q.id)
                .cloned()
                .unwrap_or_default();
            let (waiting, oldest) = board.queue(q.id);
            let finished = d.answered + d.abandoned + d.missed;
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            QueueStats {
                queue_id: q.id,
                name: q.name,
                waiting,
                longest_wait_secs: oldest.map_or(0, |o| (now - o).max(0) / 1000),
                answered: d.answered,
                abandoned: d.abandoned,
                missed: d.missed,
                service_level: ratio(d.answered_within_level, finished),
                service_level_secs: q.service_level_secs,
                avg_wait_secs: ratio(d.wait_secs_total, d.answered),
                avg_talk_secs: ratio(d.talk_secs_total, d.answered),
                surveys_offered: d.surveys.offered,
                surveys_scored: d.surveys.scored,
                avg_survey_score: d.surveys.average(),
            }
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "items": items, "next": null, "since": rfc3339_ms(since) }),
    ))
}

/// Per active agent: state and time in it, current call, calls answered over the period and
/// their post-call survey scores (supervisors).
#[utoipa::path(get, path = "/api/stats/agents", params(("since" = Option<String>, Query)),
    responses((status = 200, body = [AgentStats])))]
pub async fn agents(
    State(s): State<AppState>,
    me: Principal,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    me.require(Role::Supervisor)?;
    let since = since_ms(&q)?;
    let day = s.store.agent_stats_since(since).await?;
    let agents = s.store.agents().await?;
    let board = s.board.lock().map_err(|_| ApiError::internal("board"))?;
    let items: Vec<AgentStats> = agents
        .into_iter()
        // Everyone who takes calls: agents, and supervisors or admins with a phone.
        .filter(|a| {
            a.active
                && (a.role == Role::Agent
                    || !matches!(a.sip, crate::store::agents::SipTarget::None))
        })
        .map(|a| {
            let d = day
                .iter()
                .find(|d| d.agent_id == a.id)
                .cloned()
                .unwrap_or_default();
            let now = board.agents.get(&a.id).cloned().unwrap_or_default();
            AgentStats {
                agent_id: a.id,
                display_name: a.display_name,
                state: if now.state.is_empty() {
                    "offline".into()
                } else {
                    now.state
                },
                since: now.since,
                current_call_id: now.call.map(|c| c.to_string()),
                current_caller: now.caller,
                on_hold: now.on_hold,
                calls_today: d.calls,
                talk_secs_today: d.talk_secs,
                surveys_offered: d.surveys.offered,
                surveys_scored: d.surveys.scored,
                avg_survey_score: d.surveys.average(),
            }
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "items": items, "next": null, "since": rfc3339_ms(since) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::payload::sample::*;

    #[test]
    fn waiting_callers_and_agent_calls_follow_the_events() {
        let mut b = LiveBoard::default();
        b.apply(&queued("a", 1, "2026-12-01T10:00:00.000Z"), 0);
        b.apply(&queued("b", 1, "2026-12-01T10:00:05.000Z"), 0);
        b.apply(&queued("c", 2, "2026-12-01T10:00:09.000Z"), 0);
        let t0 = parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(b.queue(1), (2, Some(t0)));
        b.apply(
            &offered("a", 1, 7, Some("Ann"), "2026-12-01T10:00:00.000Z"),
            0,
        );
        assert_eq!(b.agents[&7].caller.as_deref(), Some("Ann"));
        assert_eq!(b.queue(1).0, 2, "ringing is still waiting");
        b.apply(&answered("a", 7), 0);
        assert_eq!(b.queue(1), (1, Some(t0 + 5000)));
        b.apply(&state(7, "on_call"), 0);
        assert_eq!(b.agents[&7].call.as_ref().map(|c| c.as_str()), Some("a"));
        b.apply(&ended("a", Some(7)), 0);
        assert_eq!(b.agents[&7].call, None);
        b.apply(&ended("b", None), 0);
        assert_eq!(b.queue(1), (0, None));
        assert_eq!(b.queue(2).0, 1);
        // Resynchronized from a snapshot that has only the offer of a ringing call.
        let mut r = LiveBoard::default();
        r.apply(&offered("z", 3, 1, None, "2026-12-01T10:00:00.000Z"), 0);
        assert_eq!(r.queue(3), (1, Some(t0)));
        // A withdrawn offer frees the agent but the caller still waits.
        r.apply(&withdrawn("z", 1), 0);
        assert_eq!((r.queue(3).0, r.agents[&1].call.as_ref()), (1, None));
    }
}
