//! Work orders: the callback a missed, rejected or abandoned call leaves, exactly one per call
//! (a unique index on (call_id, kind) makes a retry or a crash-restart unable to create a
//! second), and the complaints, service and sales orders agents open from the pop. Status
//! moves open → in_progress → resolved → closed (or back to open when reopened); every change
//! of every field is a history row, written in the same transaction as the change.

use sqlx::Row;

use super::columns::Columns;
use super::{now_ms, Store, StoreError};

/// What a work order is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderKind {
    Callback,
    Complaint,
    Service,
    Sales,
}

impl WorkOrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderKind::Callback => "callback",
            WorkOrderKind::Complaint => "complaint",
            WorkOrderKind::Service => "service",
            WorkOrderKind::Sales => "sales",
        }
    }

    fn parse(s: &str) -> WorkOrderKind {
        match s {
            "complaint" => WorkOrderKind::Complaint,
            "service" => WorkOrderKind::Service,
            "sales" => WorkOrderKind::Sales,
            _ => WorkOrderKind::Callback,
        }
    }
}

/// Where a work order is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

impl WorkOrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderStatus::Open => "open",
            WorkOrderStatus::InProgress => "in_progress",
            WorkOrderStatus::Resolved => "resolved",
            WorkOrderStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<WorkOrderStatus> {
        match s {
            "open" => Some(WorkOrderStatus::Open),
            "in_progress" => Some(WorkOrderStatus::InProgress),
            "resolved" => Some(WorkOrderStatus::Resolved),
            "closed" => Some(WorkOrderStatus::Closed),
            _ => None,
        }
    }

    /// The moves the workflow allows: forward one step at a time (open may be closed at once,
    /// e.g. a duplicate), and reopening a resolved or closed order.
    pub fn may_become(self, next: WorkOrderStatus) -> bool {
        use WorkOrderStatus::*;
        matches!(
            (self, next),
            (Open, InProgress)
                | (Open, Closed)
                | (InProgress, Resolved)
                | (InProgress, Open)
                | (Resolved, Closed)
                | (Resolved, Open)
                | (Closed, Open)
        )
    }
}

/// A work order as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkOrder {
    pub id: i64,
    pub kind: WorkOrderKind,
    pub status: WorkOrderStatus,
    /// 1 (most urgent) to 5.
    pub priority: i64,
    pub title: String,
    pub description: Option<String>,
    pub assignee_agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    pub due_at: Option<i64>,
    pub call_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One change in a work order's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkOrderChange {
    pub at: i64,
    pub actor: String,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

/// A new work order (from the pop or the API).
#[derive(Debug, Clone)]
pub struct NewWorkOrder {
    pub kind: WorkOrderKind,
    pub priority: i64,
    pub title: String,
    pub description: Option<String>,
    pub assignee_agent_id: Option<i64>,
    pub due_at: Option<i64>,
    pub call_id: Option<i64>,
    pub customer_id: Option<i64>,
}

/// Fields to change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct WorkOrderPatch {
    pub status: Option<WorkOrderStatus>,
    pub priority: Option<i64>,
    pub assignee_agent_id: Option<Option<i64>>,
    pub due_at: Option<Option<i64>>,
    pub description: Option<String>,
}

/// Filters for listing work orders.
#[derive(Debug, Clone, Default)]
pub struct WorkOrderFilter {
    pub status: Option<WorkOrderStatus>,
    pub assignee: Option<i64>,
    pub customer: Option<i64>,
    pub kind: Option<WorkOrderKind>,
    /// Only orders assigned to this agent or to nobody (what an agent may see).
    pub visible_to: Option<i64>,
    /// Only ids below this (the page cursor; newest first).
    pub before: Option<i64>,
    /// Only orders due before this time (epoch ms): the overdue ones, with `now`.
    pub due_before: Option<i64>,
    pub limit: i64,
}

pub(super) const WO_COLUMNS: &str =
    "id, kind, status, priority, title, description, assignee_agent_id, \
     queue_id, due_at, call_id, customer_id, created_by, created_at, updated_at";

/// The order of a customer's open work orders on the pop: most urgent first, then newest.
pub(super) const OPEN_ORDER: &str = "priority, id DESC";

/// A customer's work orders not resolved or closed; `customer` is an SQL expression (the
/// screen-pop's one-statement read on PostgreSQL makes the same query inside its own).
pub(super) fn open_work_orders_sql(customer: &str) -> String {
    format!(
        "SELECT {WO_COLUMNS} FROM work_orders WHERE customer_id = {customer} \
         AND status IN ('open', 'in_progress') ORDER BY {OPEN_ORDER} LIMIT 20"
    )
}

pub(super) fn work_order_of(r: &impl Columns) -> Result<WorkOrder, sqlx::Error> {
    let kind: String = r.col("kind")?;
    let status: String = r.col("status")?;
    Ok(WorkOrder {
        id: r.col("id")?,
        kind: WorkOrderKind::parse(&kind),
        status: WorkOrderStatus::parse(&status).unwrap_or(WorkOrderStatus::Open),
        priority: r.col("priority")?,
        title: r.col("title")?,
        description: r.col("description")?,
        assignee_agent_id: r.col("assignee_agent_id")?,
        queue_id: r.col("queue_id")?,
        due_at: r.col("due_at")?,
        call_id: r.col("call_id")?,
        customer_id: r.col("customer_id")?,
        created_by: r.col("created_by")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
    })
}

fn opt_str(v: Option<i64>) -> Option<String> {
    v.map(|v| v.to_string())
}

impl Store {
    /// Creates the callback work order of a call nobody answered, assigned to the customer's
    /// assigned agent when there is one (otherwise left to the queue). Returns `None` when the
    /// call already has its callback.
    pub async fn create_callback(
        &self,
        call_id: i64,
        customer_id: Option<i64>,
        queue_id: Option<i64>,
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
            "INSERT INTO work_orders (kind, status, priority, title, assignee_agent_id, queue_id, \
             call_id, customer_id, created_by, created_at, updated_at) \
             VALUES ('callback', 'open', 2, $1, $2, $7, $3, $4, 'screenpop', $5, $6) \
             ON CONFLICT (call_id, kind) DO NOTHING RETURNING id",
        )
        .bind(title.to_string())
        .bind(assignee)
        .bind(call_id)
        .bind(customer_id)
        .bind(now)
        .bind(now)
        .bind(queue_id)
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

    /// Creates a work order (from the pop or the API) with its first history row.
    pub async fn create_work_order(
        &self,
        w: &NewWorkOrder,
        actor: &str,
    ) -> Result<WorkOrder, StoreError> {
        if w.title.trim().is_empty() {
            return Err(StoreError::Invalid {
                field: "title",
                why: "must not be empty".into(),
            });
        }
        if !(1..=5).contains(&w.priority) {
            return Err(StoreError::Invalid {
                field: "priority",
                why: "must be between 1 and 5".into(),
            });
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO work_orders (kind, status, priority, title, description, \
             assignee_agent_id, due_at, call_id, customer_id, created_by, created_at, updated_at) \
             VALUES ($1, 'open', $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(w.kind.as_str())
        .bind(w.priority)
        .bind(w.title.trim().to_string())
        .bind(w.description.clone())
        .bind(w.assignee_agent_id)
        .bind(w.due_at)
        .bind(w.call_id)
        .bind(w.customer_id)
        .bind(actor.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::Invalid {
                field: "customer_id",
                why: "customer, call or assignee does not exist".into(),
            },
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Invalid {
                field: "call_id",
                why: "this call already has a work order of this kind".into(),
            },
            _ => StoreError::Db(e),
        })?;
        let id: i64 = row.try_get("id")?;
        history(&mut tx, id, now, actor, "status", None, Some("open".into())).await?;
        tx.commit().await?;
        self.work_order(id)
            .await?
            .ok_or(StoreError::NotFound("work order"))
    }

    pub async fn work_order(&self, id: i64) -> Result<Option<WorkOrder>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WO_COLUMNS} FROM work_orders WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(work_order_of).transpose()?)
    }

    /// Applies a change; a status move the workflow does not allow is refused naming `status`.
    pub async fn update_work_order(
        &self,
        id: i64,
        p: &WorkOrderPatch,
        actor: &str,
    ) -> Result<WorkOrder, StoreError> {
        let now = now_ms();
        // This transaction reads before it writes: on SQLite it must hold the write lock from
        // the start, or any write committed by another connection in between (a call's record,
        // a webhook delivery) fails it at once with SQLITE_BUSY, which no busy timeout waits
        // out.
        let mut tx = match self.backend {
            super::Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            super::Backend::Postgres => self.pool.begin().await?,
        };
        // Lock the row on PostgreSQL so two updates cannot both pass the status check.
        let lock = match self.backend {
            super::Backend::Postgres => " FOR UPDATE",
            super::Backend::Sqlite => "",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WO_COLUMNS} FROM work_orders WHERE id = $1{lock}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("work order"))?;
        let cur = work_order_of(&row)?;
        if let Some(next) = p.status {
            if next != cur.status && !cur.status.may_become(next) {
                return Err(StoreError::Invalid {
                    field: "status",
                    why: format!(
                        "cannot go from {} to {}",
                        cur.status.as_str(),
                        next.as_str()
                    ),
                });
            }
            if next != cur.status {
                sqlx::query("UPDATE work_orders SET status = $1, updated_at = $2, resolved_at = $3 WHERE id = $4")
                    .bind(next.as_str())
                    .bind(now)
                    .bind(matches!(next, WorkOrderStatus::Resolved | WorkOrderStatus::Closed).then_some(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                history(
                    &mut tx,
                    id,
                    now,
                    actor,
                    "status",
                    Some(cur.status.as_str().into()),
                    Some(next.as_str().into()),
                )
                .await?;
            }
        }
        if let Some(pr) = p.priority {
            if !(1..=5).contains(&pr) {
                return Err(StoreError::Invalid {
                    field: "priority",
                    why: "must be between 1 and 5".into(),
                });
            }
            if pr != cur.priority {
                let old = opt_str(Some(cur.priority));
                change(
                    &mut tx,
                    id,
                    now,
                    actor,
                    "priority",
                    pr,
                    old,
                    opt_str(Some(pr)),
                )
                .await?;
            }
        }
        if let Some(a) = p.assignee_agent_id {
            if a != cur.assignee_agent_id {
                let old = opt_str(cur.assignee_agent_id);
                change(
                    &mut tx,
                    id,
                    now,
                    actor,
                    "assignee_agent_id",
                    a,
                    old,
                    opt_str(a),
                )
                .await
                .map_err(|e| match &e {
                    StoreError::Db(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                        StoreError::Invalid {
                            field: "assignee_agent_id",
                            why: "no such agent".into(),
                        }
                    }
                    _ => e,
                })?;
            }
        }
        if let Some(d) = p.due_at {
            if d != cur.due_at {
                let old = opt_str(cur.due_at);
                change(&mut tx, id, now, actor, "due_at", d, old, opt_str(d)).await?;
            }
        }
        if let Some(desc) = &p.description {
            if Some(desc) != cur.description.as_ref() {
                let old = cur.description.clone();
                let new = Some(desc.clone());
                change(
                    &mut tx,
                    id,
                    now,
                    actor,
                    "description",
                    desc.clone(),
                    old,
                    new,
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.work_order(id)
            .await?
            .ok_or(StoreError::NotFound("work order"))
    }

    /// Newest first; `before` pages.
    pub async fn work_orders(&self, f: &WorkOrderFilter) -> Result<Vec<WorkOrder>, StoreError> {
        let mut sql = format!("SELECT {WO_COLUMNS} FROM work_orders WHERE 1 = 1");
        let mut n = 0;
        let mut arg = |sql: &mut String, cond: &str| {
            n += 1;
            sql.push_str(&format!(" AND {cond} ${n}"));
        };
        if f.status.is_some() {
            arg(&mut sql, "status =");
        }
        if f.assignee.is_some() {
            arg(&mut sql, "assignee_agent_id =");
        }
        if f.customer.is_some() {
            arg(&mut sql, "customer_id =");
        }
        if f.kind.is_some() {
            arg(&mut sql, "kind =");
        }
        if f.before.is_some() {
            arg(&mut sql, "id <");
        }
        if f.due_before.is_some() {
            arg(&mut sql, "due_at <");
        }
        if f.visible_to.is_some() {
            n += 1;
            sql.push_str(&format!(
                " AND (assignee_agent_id = ${n} OR assignee_agent_id IS NULL)"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            f.limit.clamp(1, 500)
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(s) = f.status {
            q = q.bind(s.as_str());
        }
        if let Some(a) = f.assignee {
            q = q.bind(a);
        }
        if let Some(c) = f.customer {
            q = q.bind(c);
        }
        if let Some(k) = f.kind {
            q = q.bind(k.as_str());
        }
        if let Some(b) = f.before {
            q = q.bind(b);
        }
        if let Some(d) = f.due_before {
            q = q.bind(d);
        }
        if let Some(a) = f.visible_to {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(work_order_of).collect::<Result<_, _>>()?)
    }

    /// A customer's work orders that are not resolved or closed (for the screen-pop).
    pub async fn open_work_orders(&self, customer: i64) -> Result<Vec<WorkOrder>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(open_work_orders_sql("$1")))
            .bind(customer)
            .fetch_all(self.reader())
            .await?;
        Ok(rows.iter().map(work_order_of).collect::<Result<_, _>>()?)
    }

    pub async fn work_order_history(&self, id: i64) -> Result<Vec<WorkOrderChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, field, old_value, new_value FROM work_order_history \
             WHERE work_order_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkOrderChange {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    field: r.try_get("field")?,
                    old_value: r.try_get("old_value")?,
                    new_value: r.try_get("new_value")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// Sets one column of a work order and records the change in its history. `column` is one
/// of this module's constants, never input.
#[allow(clippy::too_many_arguments)]
async fn change<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    at: i64,
    actor: &str,
    column: &'static str,
    value: T,
    old: Option<String>,
    new: Option<String>,
) -> Result<(), StoreError>
where
    T: sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
{
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE work_orders SET {column} = $1, updated_at = $2 WHERE id = $3"
    )))
    .bind(value)
    .bind(at)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    history(tx, id, at, actor, column, old, new).await
}

async fn history(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    at: i64,
    actor: &str,
    field: &str,
    old: Option<String>,
    new: Option<String>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO work_order_history (work_order_id, at, actor, field, old_value, new_value) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(at)
    .bind(actor.to_string())
    .bind(field.to_string())
    .bind(old)
    .bind(new)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
