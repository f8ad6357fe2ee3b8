//! The screen-pop's read: who is calling (every customer on the number, with phones and tags)
//! and, for the best guess, its last contacts and open work orders.
//!
//! It is one statement on either database. Read as a match, then phones, tags, contacts and
//! work orders side by side, it was two round trips in a row on four connections. On
//! PostgreSQL each is a backend process the kernel has to schedule: on a busy two-core machine
//! the slowest of them set the pop's tail (p99 8.5–13.4 ms from outside against 6–8 ms on
//! SQLite). On SQLite each statement is a hand-over to a connection's worker thread and back,
//! and each connection a turn of the pool: at 400 set-ups a second, with the cores busy
//! relaying and recording, those turns came slower than the calls and the lookups queued for
//! seconds (issue 13 point 4), though the statements themselves took 20 to 50 µs.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

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

/// The card in one statement. `$1` the caller's E.164 (NULL when it has none), `$2` its
/// national number; `recent` how many contacts, written into the text: SQLite prepares a
/// statement again each time a parameter of its LIMIT is bound anew (the planner may use the
/// value), and this statement's preparing cost twenty times its running (1 ms a pop, and the
/// reads queued behind it at 400 set-ups a second). The candidates, their best guess and the reads
/// below it are the ones [`Store::match_caller_then`], [`Store::recent_contacts`] and
/// [`Store::open_work_orders`] make, built from the same pieces; the store tests check that
/// both ways give the same card, on both databases. Rows below a candidate come back as JSON
/// arrays of objects, which the row mappers read like rows ([`super::columns`]).
fn card_sql(backend: Backend, recent: i64) -> String {
    use super::calls::{recent_contacts_sql, LOG_COLUMNS, RECENT_ORDER};
    use super::customers::{CANDIDATE_LAST_CONTACT, CUSTOMER_COLUMNS};
    use super::work_orders::{open_work_orders_sql, OPEN_ORDER, WO_COLUMNS};
    // The rows of `alias` (with these columns) as a JSON array text, in `order`.
    let rows = |alias: &str, columns: &str, order: &str| match backend {
        Backend::Postgres => format!("json_agg({alias} ORDER BY {order})::text"),
        Backend::Sqlite => {
            let pairs: Vec<String> = columns
                .split(',')
                .map(str::trim)
                .map(|c| format!("'{c}', {alias}.{c}"))
                .collect();
            format!(
                "json_group_array(json_object({}) ORDER BY {order})",
                pairs.join(", ")
            )
        }
    };
    let list = match backend {
        Backend::Postgres => "json_agg",
        Backend::Sqlite => "json_group_array",
    };
    let cast = match backend {
        Backend::Postgres => "::text",
        Backend::Sqlite => "",
    };
    let phones = rows("p", "raw, e164, national, label", "p.id");
    let contacts = rows("l", LOG_COLUMNS, RECENT_ORDER);
    let open = rows("w", WO_COLUMNS, OPEN_ORDER);
    let recent_rows = recent_contacts_sql("cand.id", &recent.to_string());
    let open_rows = open_work_orders_sql("cand.id");
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
           (SELECT {phones} FROM customer_phones p WHERE p.customer_id = cand.id) AS phones_json, \
           (SELECT {list}(t.tag ORDER BY t.tag){cast} FROM customer_tags t \
             WHERE t.customer_id = cand.id) AS tags_json, \
           CASE WHEN cand.id = best.id THEN \
             (SELECT {contacts} FROM ({recent_rows}) l) END AS recent_json, \
           CASE WHEN cand.id = best.id THEN \
             (SELECT {open} FROM ({open_rows}) w) END AS open_json \
         FROM cand LEFT JOIN best ON TRUE ORDER BY cand.id"
    )
}

/// The most contacts a card shows.
const MOST_RECENT: usize = 100;

/// [`card_sql`] for `recent` contacts (1 to [`MOST_RECENT`]), made once.
fn card_sql_for(backend: Backend, recent: usize) -> &'static str {
    static PG: [OnceLock<String>; MOST_RECENT] = [const { OnceLock::new() }; MOST_RECENT];
    static SQLITE: [OnceLock<String>; MOST_RECENT] = [const { OnceLock::new() }; MOST_RECENT];
    let recent = recent.clamp(1, MOST_RECENT);
    let made = match backend {
        Backend::Postgres => &PG[recent - 1],
        Backend::Sqlite => &SQLITE[recent - 1],
    };
    made.get_or_init(|| card_sql(backend, recent as i64))
}

impl Store {
    /// The caller's customers and the best guess's history (`None` when there is no best
    /// guess), in one statement.
    pub async fn caller_card(
        &self,
        n: &NormalizedPhone,
        recent: i64,
    ) -> Result<(CallerMatch, Option<CustomerHistory>), StoreError> {
        let recent = usize::try_from(recent).unwrap_or(1);
        let sql = card_sql_for(self.backend, recent);
        let (e164, national) = (n.e164.clone(), n.national.clone());
        let rows = self
            .read_card(Box::new(move |conn| {
                let (e164, national) = (e164.clone(), national.clone());
                Box::pin(async move {
                    Ok(sqlx::query(AssertSqlSafe(sql))
                        .bind(e164)
                        .bind(national)
                        .fetch_all(&mut *conn)
                        .await?)
                })
            }))
            .await?;
        Self::card_of(&rows)
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

    /// The card's rows read into the match and the history.
    fn card_of(
        rows: &[sqlx::any::AnyRow],
    ) -> Result<(CallerMatch, Option<CustomerHistory>), StoreError> {
        let mut m = CallerMatch::default();
        let mut history = None;
        for row in rows {
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
