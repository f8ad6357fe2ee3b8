//! What goes to the desktops: one variant per event `type` of DESIGN.md's contract, each with
//! its typed body. The JSON is made from these in one place ([`super::Event::new`]), so an event
//! name or a field cannot drift between the files that publish it, and readers of the bus (the
//! wallboard) match on the variant instead of parsing JSON back.

use serde::Serialize;
use serde_json::Value;

use crate::ids::{CallKey, ContactLogId};
use crate::sip::caller_id::CallerId;
use crate::store::calls::CallDisposition;
use crate::store::work_orders::WorkOrder;

/// The caller as desktops see them: no number when withheld.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerView {
    /// E.164, or null when withheld or not a number.
    pub number: Option<String>,
    pub raw: String,
    pub name: Option<String>,
    pub withheld: bool,
}

impl CallerView {
    pub fn of(caller: &CallerId, e164: Option<&str>) -> CallerView {
        CallerView {
            number: if caller.withheld {
                None
            } else {
                e164.map(str::to_string)
            },
            raw: caller.raw.clone(),
            name: caller.name.clone(),
            withheld: caller.withheld,
        }
    }
}

/// A caller entered a queue (supervisors: the wallboard's waiting callers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallQueued {
    pub call_id: CallKey,
    pub queue: String,
    pub queue_id: i64,
    pub caller: CallerView,
    /// RFC 3339.
    pub queued_at: String,
}

/// The screen-pop: the agent's phone is ringing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallOffered {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    pub queue: Option<String>,
    pub queue_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub caller: CallerView,
    pub dialed: String,
    /// The matched customer (the store's record) or null.
    pub customer: Value,
    pub candidates: Value,
    pub recent_contacts: Value,
    pub open_work_orders: Value,
    /// When the INVITE arrived (RFC 3339): a desktop measures the whole path from it.
    pub offered_at: String,
    /// The queue's CRM link for this caller, to open beside the card (null: none).
    pub crm_url: Option<String>,
    /// `inbound`, or `outbound` for a call the agent placed (click-to-dial): the card then
    /// shows whom the agent's phone is about to call.
    pub direction: &'static str,
    /// The agent handing the caller over (a blind transfer or a consultation); the desktop
    /// then shows the notes taken so far on the contact log.
    pub from_agent_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallAnswered {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    pub agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    /// RFC 3339.
    pub answered_at: String,
}

/// The caller was put on hold (music) or taken off it, from the desktop or the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallHold {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    pub agent_id: Option<i64>,
    /// `desk` (the desktop or the API) or `phone` (the phone's own hold button).
    pub by: &'static str,
    /// RFC 3339.
    pub at: String,
}

/// The agent handed the caller on (a blind transfer): the first agent's card closes, the
/// target's desktop gets its own `call.offered` with the same customer card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallTransferred {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    /// The agent who had the call (whose desktops get this event).
    pub agent_id: Option<i64>,
    /// The target: an agent, a queue, or an outside number (E.164).
    pub to_agent_id: Option<i64>,
    pub to_queue_id: Option<i64>,
    pub to_number: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// An attended transfer's consultation, to each of the two agents' desktops: the one who
/// asked for it (who may complete or cancel it) and the one consulted (whose desktop got its
/// own `call.offered` with the customer's card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallConsult {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    /// Whose desktops get it.
    pub agent_id: Option<i64>,
    /// The other agent of the consultation (null: an outside number, or not known yet).
    pub with_agent_id: Option<i64>,
    /// The consulted party as the desktop shows it: the agent's name or the number.
    pub with_name: String,
    /// The outside number consulted (E.164), if it is one.
    pub number: Option<String>,
    /// `ringing`, `talking` or `ended`.
    pub state: &'static str,
    /// Why it ended: `cancelled`, `busy`, `no answer`, `declined`, `hung up`, `failed`.
    pub reason: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// The post-call survey: the agent hung up first and the caller is asked to rate the call
/// (`asking`: the agent is done with it), then how it went (`scored` with the digit, or
/// `unanswered`: nothing pressed in time, or the caller hung up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallSurvey {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    /// The agent who had the call (whose desktops get this event).
    pub agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    /// `asking`, `scored` or `unanswered`.
    pub state: &'static str,
    /// The caller's digit, 1 to 9.
    pub score: Option<u8>,
    /// RFC 3339.
    pub at: String,
}

/// The offer went elsewhere (ring-no-answer, refused): the agent's pop goes away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallWithdrawn {
    pub call_id: CallKey,
    pub agent_id: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallEnded {
    pub call_id: CallKey,
    pub contact_log_id: Option<ContactLogId>,
    pub recording_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    pub disposition: Disposition,
    pub wait_secs: u64,
    pub talk_secs: u64,
    pub duration_ms: u64,
    /// RFC 3339.
    pub ended_at: String,
    /// The caller's post-call survey score (1–9), when they gave one.
    pub survey_score: Option<u8>,
}

/// An agent's state, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStateChanged {
    pub agent_id: i64,
    /// offline, available, ringing, on_call, wrap_up, paused.
    pub state: &'static str,
    /// RFC 3339.
    pub since: String,
    /// Why paused: requested by the agent, or after a ring-no-answer.
    pub reason: Option<PauseReason>,
    /// What the agent said when pausing ("Lunch").
    pub note: Option<String>,
    /// When the wrap-up ends (RFC 3339).
    pub until: Option<String>,
}

/// Every event the desktops get, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Payload {
    #[serde(rename = "call.queued")]
    CallQueued(CallQueued),
    #[serde(rename = "call.offered")]
    CallOffered(Box<CallOffered>),
    #[serde(rename = "call.answered")]
    CallAnswered(CallAnswered),
    #[serde(rename = "call.withdrawn")]
    CallWithdrawn(CallWithdrawn),
    #[serde(rename = "call.ended")]
    CallEnded(CallEnded),
    #[serde(rename = "call.held")]
    CallHeld(CallHold),
    #[serde(rename = "call.resumed")]
    CallResumed(CallHold),
    #[serde(rename = "call.transferred")]
    CallTransferred(CallTransferred),
    #[serde(rename = "call.consult")]
    CallConsult(CallConsult),
    #[serde(rename = "call.survey")]
    CallSurvey(CallSurvey),
    #[serde(rename = "agent.state")]
    AgentState(AgentStateChanged),
    /// The account was deactivated: its desktops close.
    #[serde(rename = "agent.deactivated")]
    AgentDeactivated { agent_id: i64 },
    #[serde(rename = "work_order.created")]
    WorkOrderCreated { work_order: Box<WorkOrder> },
    #[serde(rename = "work_order.updated")]
    WorkOrderUpdated { work_order: Box<WorkOrder> },
    #[serde(rename = "campaign.progress")]
    CampaignProgress(CampaignProgress),
}

/// How a campaign is going: sent while it sends (at most about once a second) and when its
/// state changes. Supervisors only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignProgress {
    pub campaign_id: i64,
    pub name: String,
    pub state: crate::store::campaigns::CampaignState,
    #[serde(flatten)]
    pub progress: crate::store::campaigns::Progress,
}

impl Payload {
    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::CallQueued(_) => "call.queued",
            Payload::CallOffered(_) => "call.offered",
            Payload::CallAnswered(_) => "call.answered",
            Payload::CallWithdrawn(_) => "call.withdrawn",
            Payload::CallEnded(_) => "call.ended",
            Payload::CallHeld(_) => "call.held",
            Payload::CallResumed(_) => "call.resumed",
            Payload::CallTransferred(_) => "call.transferred",
            Payload::CallConsult(_) => "call.consult",
            Payload::CallSurvey(_) => "call.survey",
            Payload::AgentState(_) => "agent.state",
            Payload::AgentDeactivated { .. } => "agent.deactivated",
            Payload::WorkOrderCreated { .. } => "work_order.created",
            Payload::WorkOrderUpdated { .. } => "work_order.updated",
            Payload::CampaignProgress(_) => "campaign.progress",
        }
    }

    /// The agent whose desktops get it (supervisors get everything); `None`: supervisors only.
    pub fn audience(&self) -> Option<i64> {
        match self {
            Payload::CallQueued(_) => None,
            Payload::CallOffered(o) => o.agent_id,
            Payload::CallAnswered(a) => a.agent_id,
            Payload::CallWithdrawn(w) => Some(w.agent_id),
            Payload::CallEnded(e) => e.agent_id,
            Payload::CallHeld(h) | Payload::CallResumed(h) => h.agent_id,
            Payload::CallTransferred(t) => t.agent_id,
            Payload::CallConsult(c) => c.agent_id,
            Payload::CallSurvey(s) => s.agent_id,
            Payload::AgentState(s) => Some(s.agent_id),
            Payload::AgentDeactivated { agent_id } => Some(*agent_id),
            Payload::WorkOrderCreated { work_order } | Payload::WorkOrderUpdated { work_order } => {
                work_order.assignee_agent_id
            }
            Payload::CampaignProgress(_) => None,
        }
    }

    /// The call it is about, for the live calls a reconnecting desktop catches up on.
    pub fn call(&self) -> Option<&CallKey> {
        match self {
            Payload::CallQueued(q) => Some(&q.call_id),
            Payload::CallOffered(o) => Some(&o.call_id),
            Payload::CallAnswered(a) => Some(&a.call_id),
            Payload::CallWithdrawn(w) => Some(&w.call_id),
            Payload::CallEnded(e) => Some(&e.call_id),
            Payload::CallHeld(h) | Payload::CallResumed(h) => Some(&h.call_id),
            Payload::CallTransferred(t) => Some(&t.call_id),
            Payload::CallConsult(c) => Some(&c.call_id),
            Payload::CallSurvey(s) => Some(&s.call_id),
            _ => None,
        }
    }
}

/// How the call ended, as screenpop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Answered,
    /// The agent did not answer in time, or the agent leg failed.
    Missed,
    /// The caller hung up before an answer.
    Abandoned,
    /// The agent's phone declined or was busy.
    Rejected,
    /// screenpop could not take the call (no codec, no ports, no agent target).
    Failed,
}

impl Disposition {
    /// What the contact log stores: the same outcome, one to one (a failed call stays failed;
    /// like every call nobody answered it gets a callback).
    pub fn for_contact_log(self) -> CallDisposition {
        match self {
            Disposition::Answered => CallDisposition::Answered,
            Disposition::Abandoned => CallDisposition::Abandoned,
            Disposition::Rejected => CallDisposition::Rejected,
            Disposition::Missed => CallDisposition::Missed,
            Disposition::Failed => CallDisposition::Failed,
        }
    }
}

/// Why an agent is paused (on the wire in `agent.state`; the ACD decides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The agent chose to.
    Requested,
    /// The agent's phone rang out without an answer.
    NoAnswer,
}

/// Small events for the tests of the bus and its readers.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    fn caller() -> CallerView {
        CallerView {
            number: Some("+15551230001".into()),
            raw: "<sip:+15551230001@x>".into(),
            name: None,
            withheld: false,
        }
    }

    pub fn queued(call: &str, queue: i64, at: &str) -> Payload {
        Payload::CallQueued(CallQueued {
            call_id: call.into(),
            queue: format!("q{queue}"),
            queue_id: queue,
            caller: caller(),
            queued_at: at.into(),
        })
    }

    pub fn offered(
        call: &str,
        queue: i64,
        agent: i64,
        customer: Option<&str>,
        at: &str,
    ) -> Payload {
        Payload::CallOffered(Box::new(CallOffered {
            call_id: call.into(),
            contact_log_id: None,
            queue: Some(format!("q{queue}")),
            queue_id: Some(queue),
            agent_id: Some(agent),
            caller: caller(),
            dialed: "100".into(),
            customer: customer.map_or(Value::Null, |n| serde_json::json!({ "name": n })),
            candidates: serde_json::json!([]),
            recent_contacts: serde_json::json!([]),
            open_work_orders: serde_json::json!([]),
            offered_at: at.into(),
            crm_url: None,
            direction: "inbound",
            from_agent_id: None,
        }))
    }

    pub fn answered(call: &str, agent: i64) -> Payload {
        Payload::CallAnswered(CallAnswered {
            call_id: call.into(),
            contact_log_id: None,
            agent_id: Some(agent),
            queue_id: None,
            answered_at: "2026-12-01T10:00:00.000Z".into(),
        })
    }

    pub fn withdrawn(call: &str, agent: i64) -> Payload {
        Payload::CallWithdrawn(CallWithdrawn {
            call_id: call.into(),
            agent_id: agent,
            reason: "no_answer".into(),
        })
    }

    pub fn ended(call: &str, agent: Option<i64>) -> Payload {
        Payload::CallEnded(CallEnded {
            call_id: call.into(),
            contact_log_id: None,
            recording_id: None,
            agent_id: agent,
            queue_id: None,
            disposition: Disposition::Answered,
            wait_secs: 0,
            talk_secs: 0,
            duration_ms: 0,
            ended_at: "2026-12-01T10:00:00.000Z".into(),
            survey_score: None,
        })
    }

    pub fn state(agent: i64, state: &'static str) -> Payload {
        Payload::AgentState(AgentStateChanged {
            agent_id: agent,
            state,
            since: "2026-12-01T10:00:00.000Z".into(),
            reason: None,
            note: None,
            until: None,
        })
    }
}
