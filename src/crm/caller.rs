//! Who is calling: the caller's number matched to customer records, and the rule for unknown
//! callers. A withheld number never matches and never creates a record; an unknown number
//! becomes a customer (named after the caller's display name, else the number) unless the
//! profile says `create_customers_from_calls = false`. The store only stores; this is the rule.

use tracing::{debug, info, warn};

use crate::phone::{normalize, NumberPlan};
use crate::sip::caller_id::CallerId;
use crate::store::card::CustomerHistory;
use crate::store::customers::{CallerMatch, NewCustomer, NewPhone, Tier};
use crate::store::Store;

/// What the call knows about its caller after matching.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The number in E.164, when it parses (never for a withheld number).
    pub e164: Option<String>,
    /// The best guess and every candidate (empty when withheld, unmatched or the store failed).
    pub matched: CallerMatch,
    /// The customer was created from this call.
    pub created: bool,
}

/// Does at start-up what the first call would otherwise do while its caller waits: parses the
/// phone-number metadata (libphonenumber's, built on first use) and prepares the store's
/// caller-matching statements. Read-only: the number matches no one or someone, and nothing is
/// created. (The first call after start popped in about 80 ms instead of 3.)
///
/// As many run at once as the pool has connections open, so that each connection does it: a
/// PostgreSQL connection prepares its statements and loads the tables' catalog entries
/// on first use, and the first pops after start took 10 ms instead of 4.
pub async fn warm_up(store: &Store, plan: NumberPlan) {
    let started = std::time::Instant::now();
    if let Ok(n) = normalize("+14155550100", plan) {
        let recent = crate::calls::pop::RECENT_CONTACTS;
        let n = &n;
        let each = (0..store.card_connections().max(1)).map(|_| async move {
            store.caller_card(n, recent).await?;
            // On SQLite the history's statements, which an unmatched number does not reach.
            store.customer_history(0, recent).await
        });
        if let Some(Err(e)) = futures_util::future::join_all(each)
            .await
            .into_iter()
            .find(Result::is_err)
        {
            warn!(error = %e, "caller matching could not be warmed up");
        }
    }
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "caller matching warmed up"
    );
}

/// Matches the caller, creating a customer for an unknown number when `create` allows. A store
/// failure is logged and leaves the caller unmatched: the call goes on.
pub async fn match_or_create(
    store: &Store,
    caller: &CallerId,
    plan: NumberPlan,
    create: bool,
) -> Caller {
    match_or_create_with_history(store, caller, plan, create, 1)
        .await
        .0
}

/// [`match_or_create`], and the best guess's last `recent` contacts and open work orders read
/// with the match ([`Store::caller_card`]): `None` when no existing customer is the best guess.
pub async fn match_or_create_with_history(
    store: &Store,
    caller: &CallerId,
    plan: NumberPlan,
    create: bool,
    recent: i64,
) -> (Caller, Option<CustomerHistory>) {
    let normalized = caller
        .number
        .as_deref()
        .filter(|_| !caller.withheld)
        .and_then(|n| normalize(n, plan).ok());
    let Some(n) = normalized else {
        return (Caller::default(), None);
    };
    let mut out = Caller {
        e164: n.e164.clone(),
        ..Caller::default()
    };
    let history = match store.caller_card(&n, recent).await {
        Ok((m, history)) => {
            out.matched = m;
            history
        }
        Err(e) => {
            warn!(error = %e, "caller not matched");
            return (out, None);
        }
    };
    if !out.matched.candidates.is_empty() || !create {
        return (out, history);
    }
    let number = caller.number.clone().unwrap_or_default();
    let new = NewCustomer {
        code: None,
        name: caller.name.clone().unwrap_or_else(|| number.clone()),
        company: None,
        tier: Tier::Regular,
        birthday: None,
        anniversary: None,
        address: None,
        notes: None,
        assigned_agent_id: None,
        phones: vec![NewPhone {
            number,
            label: None,
        }],
        opt_out_sms: false,
        opt_out_voice: false,
        birthday_calendar: Default::default(),
        tags: Vec::new(),
    };
    match store.create_customer_for_caller(&new, &n, plan).await {
        Ok((c, true)) => {
            info!(customer = c.id, "new customer from an unknown caller");
            out.matched = CallerMatch {
                customer: Some(c.clone()),
                candidates: vec![c],
            };
            out.created = true;
        }
        // Another call from the number made the customer meanwhile: its card, as if found.
        Ok((_, false)) => match store.caller_card(&n, recent).await {
            Ok((m, again)) => return (Caller { matched: m, ..out }, again),
            Err(e) => warn!(error = %e, "caller not matched"),
        },
        Err(e) => warn!(error = %e, "customer not created"),
    }
    // A customer made just now has no history.
    (out, history)
}
