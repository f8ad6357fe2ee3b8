//! The screen-pop's read: who is calling (every customer on the number, with phones and tags)
//! and, for the best guess, its last contacts and open work orders.
//!
//! On PostgreSQL it is one statement. Read as a match, then phones, tags, contacts and work
//! orders side by side, it was two round trips in a row, the second on four connections, each
//! a backend process the kernel has to schedule: on a busy two-core machine the slowest of
//! them set the pop's tail (p99 8.5–13.4 ms from outside against 6–8 ms on SQLite). SQLite
//! runs in the process, where a query is a function call, and reads as before.

use std::sync::LazyLock;

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};
use tracing::warn;

use super::calls::{log_of, ContactLog};
use super::columns::json_column;
use super::customers::{customer_of, phone_of, CallerMatch};
use super::work_orders::{work_order_of, WorkOrder};
use super::{Backend, Store, StoreError};
use crate::phone::NormalizedPhone;

/// What the pop shows of a customer's past.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerHistory {
    /// Newest first ([`Store::recent_contacts`]).
    pub recent_contacts: Vec<ContactLog>,
    /// Most urgent first ([`Store::open_work_orders`]).
    pub open_work_orders: Vec<WorkOrder>,
}

/// The card in one statement (PostgreSQL). `$1` the caller's E.164 (NULL when it has none),
/// `$2` its national number, `$3` how many contacts. The candidates, their best guess and the
/// reads below it are the ones [`Store::match_caller_then`], [`Store::recent_contacts`] and
/// [`Store::open_work_orders`] make, built from the same pieces; the store tests check that
/// both ways give the same card.
static CARD_SQL: LazyLock<String> = LazyLock::new(|| {
    use super::calls::{recent_contacts_sql, RECENT_ORDER};
    use super::customers::{CANDIDATE_LAST_CONTACT, CUSTOMER_COLUMNS};
    use super::work_orders::{open_work_orders_sql, OPEN_ORDER};
    let recent = recent_contacts_sql("cand.id", "$3");
    let open = open_work_orders_sql("cand.id");
    format!(
        "WITH by_e164 AS (SELECT customer_id FROM customer_phones WHERE e164 = $1), \
         matched AS (SELECT customer_id FROM by_e164 UNION \
           SELECT customer_id FROM customer_phones \
           WHERE national = $2 AND $2 <> '' AND NOT EXISTS (SELECT 1 FROM by_e164)), \
         cand AS (SELECT {CUSTOMER_COLUMNS}, {CANDIDATE_LAST_CONTACT} FROM customers \
           WHERE id IN (SELECT customer_id FROM matched)), \
         best AS (SELECT id FROM cand \
           WHERE last_contact IS NOT NULL OR (SELECT COUNT(*) FROM cand) = 1 \
           ORDER BY last_contact DESC NULLS LAST, id LIMIT 1) \
         SELECT cand.*, best.id AS best_id, \
           (SELECT json_agg(p ORDER BY p.id)::text FROM customer_phones p \
             WHERE p.customer_id = cand.id) AS phones_json, \
           (SELECT json_agg(t.tag ORDER BY t.tag)::text FROM customer_tags t \
             WHERE t.customer_id = cand.id) AS tags_json, \
           CASE WHEN cand.id = best.id THEN \
             (SELECT json_agg(l ORDER BY {RECENT_ORDER})::text FROM ({recent}) l) END AS recent_json, \
           CASE WHEN cand.id = best.id THEN \
             (SELECT json_agg(w ORDER BY {OPEN_ORDER})::text FROM ({open}) w) END AS open_json \
         FROM cand LEFT JOIN best ON TRUE ORDER BY cand.id"
    )
});

impl Store {
    /// The caller's customers and the best guess's history (`None` when there is no best
    /// guess). On SQLite a failure to read the history is logged and leaves it out: the pop
    /// still shows who is calling.
    pub async fn caller_card(
        &self,
        n: &NormalizedPhone,
        recent: i64,
    ) -> Result<(CallerMatch, Option<CustomerHistory>), StoreError> {
        match self.backend {
            Backend::Postgres => self.card_in_one(n, recent).await,
            Backend::Sqlite => {
                let (m, history) = self
                    .match_caller_then(n, |id| self.customer_history(id, recent))
                    .await?;
                let history = history.and_then(|h| {
                    h.map_err(|e| warn!(error = %e, "customer history not read"))
                        .ok()
                });
                Ok((m, history))
            }
        }
    }

    /// A customer's last `recent` contacts and open work orders, read side by side.
    pub async fn customer_history(
        &self,
        customer: i64,
        recent: i64,
    ) -> Result<CustomerHistory, StoreError> {
        let (recent_contacts, open_work_orders) = futures_util::future::try_join(
            self.recent_contacts(customer, recent),
            self.open_work_orders(customer),
        )
        .await?;
        Ok(CustomerHistory {
            recent_contacts,
            open_work_orders,
        })
    }

    async fn card_in_one(
        &self,
        n: &NormalizedPhone,
        recent: i64,
    ) -> Result<(CallerMatch, Option<CustomerHistory>), StoreError> {
        let rows = sqlx::query(AssertSqlSafe(CARD_SQL.as_str()))
            .bind(n.e164.clone())
            .bind(n.national.clone())
            .bind(recent.clamp(1, 100))
            .fetch_all(&self.pool)
            .await?;
        let mut m = CallerMatch::default();
        let mut history = None;
        for row in &rows {
            let mut c = customer_of(row)?;
            c.phones = json_column::<Map<String, Value>>(row, "phones_json")?
                .iter()
                .map(phone_of)
                .collect::<Result<_, _>>()?;
            c.tags = json_column(row, "tags_json")?;
            if row.try_get::<Option<i64>, _>("best_id")? == Some(c.id) {
                history = Some(CustomerHistory {
                    recent_contacts: json_column::<Map<String, Value>>(row, "recent_json")?
                        .iter()
                        .map(log_of)
                        .collect::<Result<_, _>>()?,
                    open_work_orders: json_column::<Map<String, Value>>(row, "open_json")?
                        .iter()
                        .map(work_order_of)
                        .collect::<Result<_, _>>()?,
                });
                m.customer = Some(c.clone());
            }
            m.candidates.push(c);
        }
        Ok((m, history))
    }
}
