//! The screen-pop's content and the call events sent to desktops. The customer card, the
//! candidates, the last contacts and the open work orders are read once, while the call is being
//! queued, so the `call.offered` frame goes out the moment the agent's phone is rung without a
//! database round trip on that path.

use std::time::{Instant, SystemTime};

use crate::time::rfc3339;

use serde_json::{json, Value};
use tracing::warn;

use crate::events::payload::{CallOffered, CallQueued, CallerView};
use crate::events::{Event, Payload};
use crate::ids::{CallKey, ContactLogId};
use crate::sip::caller_id::CallerId;
use crate::store::card::CustomerHistory;
use crate::store::customers::CallerMatch;
use crate::store::Store;

/// How many past contacts the pop shows.
pub(crate) const RECENT_CONTACTS: i64 = 5;

/// What the pop says about the caller, prepared before any agent rings.
#[derive(Debug, Clone)]
pub struct PopCard {
    pub customer: Value,
    pub candidates: Value,
    pub recent_contacts: Value,
    pub open_work_orders: Value,
}

impl Default for PopCard {
    /// No customer: empty lists, never nulls, so desktops can iterate.
    fn default() -> PopCard {
        PopCard::new(&CallerMatch::default(), None)
    }
}

/// What the pop shows of a customer's past, as JSON (empty lists when it could not be read).
#[derive(Debug, Clone)]
pub struct History {
    recent_contacts: Value,
    open_work_orders: Value,
}

impl Default for History {
    /// Nothing to show: empty lists, never nulls, so desktops can iterate.
    fn default() -> History {
        History {
            recent_contacts: json!([]),
            open_work_orders: json!([]),
        }
    }
}

impl From<CustomerHistory> for History {
    fn from(h: CustomerHistory) -> History {
        History {
            recent_contacts: serde_json::to_value(h.recent_contacts).unwrap_or(json!([])),
            open_work_orders: serde_json::to_value(h.open_work_orders).unwrap_or(json!([])),
        }
    }
}

impl History {
    /// Reads the customer's last contacts and open work orders; a store failure leaves the
    /// lists empty (the pop still goes out).
    pub async fn read(store: &Store, customer: i64) -> History {
        match store.customer_history(customer, RECENT_CONTACTS).await {
            Ok(h) => h.into(),
            Err(e) => {
                warn!(error = %e, "customer history not read");
                History::default()
            }
        }
    }
}

impl PopCard {
    /// The card of a match whose customer's history was read beside it
    /// ([`crate::crm::caller::match_or_create_then`]); `None` shows none.
    pub fn new(m: &CallerMatch, history: Option<History>) -> PopCard {
        let history = history.unwrap_or_default();
        PopCard {
            customer: serde_json::to_value(&m.customer).unwrap_or(Value::Null),
            candidates: serde_json::to_value(&m.candidates).unwrap_or_else(|_| json!([])),
            recent_contacts: history.recent_contacts,
            open_work_orders: history.open_work_orders,
        }
    }

    /// Reads the matched customer's history and makes the card.
    pub async fn load(store: &Store, m: &CallerMatch) -> PopCard {
        let history = match &m.customer {
            Some(c) => Some(History::read(store, c.id).await),
            None => None,
        };
        PopCard::new(m, history)
    }
}

/// Everything `call.offered` carries.
pub struct Offered<'a> {
    pub call_id: &'a CallKey,
    pub log_id: Option<ContactLogId>,
    pub queue: Option<&'a str>,
    pub queue_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub caller: &'a CallerId,
    pub caller_e164: Option<&'a str>,
    pub dialed: &'a str,
    pub card: &'a PopCard,
    pub offered_at: SystemTime,
    /// When the INVITE arrived (latency is measured from here).
    pub since: Instant,
    /// The queue's CRM link, filled in.
    pub crm_url: Option<String>,
    /// A call screenpop places for the agent (click-to-dial), not one coming in.
    pub outbound: bool,
    /// The agent who hands the caller over (a transfer or a consultation).
    pub from_agent_id: Option<i64>,
}

pub fn offered(o: Offered<'_>) -> Event {
    Event::new(Payload::CallOffered(Box::new(CallOffered {
        call_id: o.call_id.clone(),
        contact_log_id: o.log_id,
        queue: o.queue.map(str::to_string),
        queue_id: o.queue_id,
        agent_id: o.agent_id,
        caller: CallerView::of(o.caller, o.caller_e164),
        dialed: o.dialed.to_string(),
        customer: o.card.customer.clone(),
        candidates: o.card.candidates.clone(),
        recent_contacts: o.card.recent_contacts.clone(),
        open_work_orders: o.card.open_work_orders.clone(),
        offered_at: rfc3339(o.offered_at),
        crm_url: o.crm_url,
        direction: if o.outbound { "outbound" } else { "inbound" },
        from_agent_id: o.from_agent_id,
    })))
    .since(o.since)
}

/// A caller entered a queue: for the supervisors' wallboard (callers waiting, longest wait).
pub(crate) fn queued(
    call_id: &CallKey,
    queue_id: i64,
    queue: &str,
    caller: &CallerId,
    caller_e164: Option<&str>,
    at: SystemTime,
) -> Event {
    Event::new(Payload::CallQueued(CallQueued {
        call_id: call_id.clone(),
        queue: queue.to_string(),
        queue_id,
        caller: CallerView::of(caller, caller_e164),
        queued_at: rfc3339(at),
    }))
}
