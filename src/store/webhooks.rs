//! Webhooks and their deliveries. A delivery row is written before its first attempt and is the
//! only record of it, so a restart resumes where the last process stopped (at-least-once: a
//! crash between the receiver's answer and the row's update sends that one again, with the same
//! id for the receiver to recognize).
//!
//! Order within a subject (a call, an agent, a work order) is kept by the rows themselves: only
//! the oldest pending delivery of a subject to a webhook has a `next_attempt_at`; the ones
//! behind it wait with NULL and the next is released when it is delivered or given up. Claiming
//! is then a plain range scan on due rows, however many wait behind a dead receiver.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Backend, Store, StoreError};

/// A receiver of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// Event type names, or `["*"]` for every event.
    pub events: Vec<String>,
    /// The HMAC key; never shown by the API once set.
    pub secret: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A webhook to create, already checked by [`crate::webhooks::validate`].
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
}

/// How a webhook's deliveries are doing, for the list an admin watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    pub delivered: i64,
    /// Not yet delivered, still being tried (including those waiting behind an earlier one).
    pub pending: i64,
    /// Pending ones whose last attempt failed: the receiver is failing now.
    pub failing: i64,
    /// Given up after the retry period.
    pub failed: i64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// Where a delivery is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event for one webhook, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_type: String,
    pub subject: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: i64,
    /// None while it waits behind an earlier delivery of its subject, or once finished.
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// An event to record for one webhook.
#[derive(Debug, Clone, Copy)]
pub struct NewDelivery<'a> {
    pub webhook_id: i64,
    pub event_type: &'a str,
    /// What the order is kept within (see the module doc); `""` for one order per webhook.
    pub subject: &'a str,
    pub body: &'a str,
}

/// A delivery taken for an attempt: what the sender needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub webhook_id: i64,
    pub event_type: String,
    pub subject: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    /// Failed; try again at `at`.
    Retry {
        at: i64,
        status: Option<u16>,
        error: String,
    },
    /// Failed for the last time.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, subject, status, attempts, \
     created_at, next_attempt_at, last_attempt_at, last_status, last_error, delivered_at";

fn webhook_of(r: &AnyRow) -> Result<Webhook, sqlx::Error> {
    let events: String = r.try_get("events")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        events: events.split_whitespace().map(str::to_string).collect(),
        secret: r.try_get("secret")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn delivery_of(r: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_type: r.try_get("event_type")?,
        subject: r.try_get("subject")?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

impl Store {
    /// A transaction that holds SQLite's write lock from its first statement, so it waits its
    /// turn (the busy timeout) instead of failing when another connection writes meanwhile.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn create_webhook(
        &self,
        w: &NewWebhook,
        actor: &str,
        now: i64,
    ) -> Result<Webhook, StoreError> {
        let row = sqlx::query(
            "INSERT INTO webhooks (url, events, secret, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(w.url.clone())
        .bind(w.events.join(" "))
        .bind(w.secret.clone())
        .bind(actor.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.webhook(id)
            .await?
            .ok_or(StoreError::NotFound("webhook"))
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(
            "SELECT id, url, events, secret, created_by, created_at FROM webhooks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(webhook_of).transpose()?)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, url, events, secret, created_by, created_at FROM webhooks ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(webhook_of).collect::<Result<_, _>>()?)
    }

    /// Deletes a webhook and its deliveries, sent or not.
    pub async fn delete_webhook(&self, id: i64) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook"));
        }
        Ok(())
    }

    pub async fn webhook_health(&self, id: i64) -> Result<WebhookHealth, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'delivered') AS delivered, \
               (SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending') AS pending, \
               (SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending' \
                  AND last_error IS NOT NULL) AS failing, \
               (SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'failed') AS failed, \
               (SELECT MAX(delivered_at) FROM webhook_deliveries WHERE webhook_id = $1 \
                  AND status = 'delivered') AS last_success_at",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let last = sqlx::query(
            "SELECT last_error, last_attempt_at FROM webhook_deliveries \
             WHERE webhook_id = $1 AND last_error IS NOT NULL \
             ORDER BY last_attempt_at DESC, id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(WebhookHealth {
            delivered: row.try_get("delivered")?,
            pending: row.try_get("pending")?,
            failing: row.try_get("failing")?,
            failed: row.try_get("failed")?,
            last_success_at: row.try_get("last_success_at")?,
            last_error: last.as_ref().map(|r| r.try_get("last_error")).transpose()?,
            last_error_at: last
                .as_ref()
                .map(|r| r.try_get("last_attempt_at"))
                .transpose()?
                .flatten(),
        })
    }

    /// Records events for webhooks, all or none, each due at `now` unless an earlier delivery
    /// of its subject to the same webhook is still pending (then it waits behind that one).
    /// A webhook deleted meanwhile gets nothing. Returns the new deliveries' ids.
    pub async fn enqueue_webhook_deliveries(
        &self,
        items: &[NewDelivery<'_>],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(items.len());
        let mut tx = self.begin_write().await?;
        for d in items {
            let row = sqlx::query(
                "INSERT INTO webhook_deliveries \
                   (webhook_id, event_type, subject, body, status, attempts, created_at, next_attempt_at) \
                 SELECT w.id, $2, $3, $4, 'pending', 0, $5, \
                   CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook_id = $1 \
                                     AND p.subject = $3 AND p.status = 'pending') \
                        THEN NULL ELSE $5 END \
                 FROM webhooks w WHERE w.id = $1 RETURNING id",
            )
            .bind(d.webhook_id)
            .bind(d.event_type.to_string())
            .bind(d.subject.to_string())
            .bind(d.body.to_string())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                ids.push(r.try_get("id")?);
            }
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Takes up to `limit` due deliveries of one webhook for an attempt, oldest due first: each
    /// is leased until `lease_until` (a process that dies mid-attempt leaves it due again
    /// then). On PostgreSQL rows another node holds are skipped.
    pub async fn claim_webhook_deliveries(
        &self,
        webhook_id: i64,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $3 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE webhook_id = $1 AND status = 'pending' AND next_attempt_at <= $2 \
                          ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             RETURNING id, webhook_id, event_type, subject, body, attempts, created_at"
        )))
        .bind(webhook_id)
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    webhook_id: r.try_get("webhook_id")?,
                    event_type: r.try_get("event_type")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Records an attempt's outcome; a delivery delivered or given up releases the next one of
    /// its subject. A delivery no longer pending (its webhook was deleted) is left alone.
    pub async fn finish_webhook_delivery(
        &self,
        id: i64,
        now: i64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let (status, next, code, error, delivered_at) = match outcome {
            Outcome::Delivered { status } => ("delivered", None, Some(*status), None, Some(now)),
            Outcome::Retry { at, status, error } => {
                ("pending", Some(*at), *status, Some(error.clone()), None)
            }
            Outcome::Failed { status, error } => {
                ("failed", None, *status, Some(error.clone()), None)
            }
        };
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, \
               attempts = attempts + 1, last_attempt_at = $4, last_status = $5, \
               last_error = COALESCE($6, last_error), delivered_at = $7 \
             WHERE id = $1 AND status = 'pending' RETURNING webhook_id, subject",
        )
        .bind(id)
        .bind(status)
        .bind(next)
        .bind(now)
        .bind(code.map(i64::from))
        .bind(error)
        .bind(delivered_at)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(row), false) = (row, matches!(outcome, Outcome::Retry { .. })) {
            let webhook_id: i64 = row.try_get("webhook_id")?;
            let subject: String = row.try_get("subject")?;
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $3 \
                 WHERE id = (SELECT MIN(id) FROM webhook_deliveries \
                             WHERE webhook_id = $1 AND subject = $2 AND status = 'pending') \
                   AND next_attempt_at IS NULL",
            )
            .bind(webhook_id)
            .bind(subject)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Releases any waiting delivery that has no pending delivery before it: a safety net for
    /// an enqueue and a release that crossed (PostgreSQL's READ COMMITTED lets an enqueue see
    /// the earlier delivery still pending while the release does not yet see the new row).
    pub async fn release_stranded_webhook_deliveries(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 \
             WHERE status = 'pending' AND next_attempt_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                               WHERE e.webhook_id = webhook_deliveries.webhook_id \
                                 AND e.subject = webhook_deliveries.subject \
                                 AND e.status = 'pending' AND e.id < webhook_deliveries.id)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// When the next delivery falls due (leases included), so the sender can sleep until then.
    pub async fn next_webhook_attempt_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS at FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("at")?)
    }

    /// A webhook's deliveries, newest first; `before` is the page cursor (an id).
    pub async fn webhook_deliveries(
        &self,
        webhook_id: i64,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        // Only the filters given are in the SQL: a NULL parameter has no type PostgreSQL can
        // compare.
        let mut sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1");
        let mut n = 1;
        if status.is_some() {
            n += 1;
            sql.push_str(&format!(" AND status = ${n}"));
        }
        if before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND id < ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(webhook_id);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(delivery_of).collect::<Result<_, _>>()?)
    }

    /// Forgets finished deliveries created before `before`; pending ones are kept whatever
    /// their age. Returns how many went.
    pub async fn prune_webhook_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
