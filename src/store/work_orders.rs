//! Work orders. Only what the call path needs so far: the callback a missed, rejected or
//! abandoned call leaves, exactly one per call (a unique index on (call_id, kind) makes a
//! retry or a crash-restart unable to create a second).

use sqlx::Row;

use super::{now_ms, Store, StoreError};

impl Store {
    /// Creates the callback work order of a call nobody answered, assigned to the customer's
    /// assigned agent when there is one (otherwise left to the queue). Returns `None` when the
    /// call already has its callback.
    pub async fn create_callback(
        &self,
        call_id: i64,
        customer_id: Option<i64>,
        title: &str,
    ) -> Result<Option<i64>, StoreError> {
        let assignee: Option<i64> = match customer_id {
            Some(c) => sqlx::query("SELECT assigned_agent_id FROM customers WHERE id = $1")
                .bind(c)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("assigned_agent_id"))
                .transpose()?
                .flatten(),
            None => None,
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO work_orders (kind, status, priority, title, assignee_agent_id, call_id, \
             customer_id, created_by, created_at, updated_at) \
             VALUES ('callback', 'open', 2, $1, $2, $3, $4, 'screenpop', $5, $6) \
             ON CONFLICT (call_id, kind) DO NOTHING RETURNING id",
        )
        .bind(title.to_string())
        .bind(assignee)
        .bind(call_id)
        .bind(customer_id)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO work_order_history (work_order_id, at, actor, field, old_value, new_value) \
             VALUES ($1, $2, 'screenpop', 'status', NULL, 'open')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }
}
