//! Contact logs (`calls`) and recordings. A call's row is written when it is offered and
//! completed at hang-up, so a crash in between leaves a row the restart can finish.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Row;

use super::columns::Columns;
use super::{Store, StoreError};

/// How many contact log ids a node takes from the sequence at a time, and how few left start
/// the next block ([`Store::reserve_call_id`]). The ids left must outlast the refill even when
/// the database is busy: at 500 set-ups a second 128 ids are a quarter of a second, and a
/// block of 32 (8 left) ran dry under that load, each caller then taking an id on its own.
pub const RESERVE_BLOCK: i64 = 256;
const RESERVE_LOW: usize = 128;

/// Contact log ids taken ahead.
#[derive(Default)]
pub(crate) struct ReservedIds {
    ids: std::sync::Mutex<std::collections::VecDeque<i64>>,
    refilling: AtomicBool,
}

impl ReservedIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<i64>> {
        // A panic while holding it leaves a list of ids, still good.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a call ended, as the contact log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDisposition {
    Answered,
    /// No agent answered (ring timeout, busy agents, or screenpop could not bridge).
    Missed,
    /// The caller hung up first.
    Abandoned,
    /// The agent's phone declined.
    Rejected,
    /// screenpop took the call but could not put it through (the agent's phone answered
    /// without usable SDP, a loop, an agent host that does not resolve).
    Failed,
}

impl CallDisposition {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDisposition::Answered => "answered",
            CallDisposition::Missed => "missed",
            CallDisposition::Abandoned => "abandoned",
            CallDisposition::Rejected => "rejected",
            CallDisposition::Failed => "failed",
        }
    }
}

/// A call as offered.
#[derive(Debug, Clone)]
pub struct OfferedCall {
    pub sip_call_id: String,
    pub caller_raw: String,
    pub caller_e164: Option<String>,
    pub dialed: String,
    pub customer_id: Option<i64>,
    pub offered_at: i64,
}

/// How it ended.
#[derive(Debug, Clone)]
pub struct EndedCall {
    /// The agent who answered (or last rang), and the queue the call waited in.
    pub agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    pub disposition: CallDisposition,
    pub recording_id: Option<i64>,
    /// When the caller was asked the post-call survey (epoch ms): the agent's talk ends there.
    pub survey_offered_at: Option<i64>,
    /// The caller's digit, 1 to 9.
    pub survey_score: Option<i64>,
    /// The call was recorded but the recording could not be written whole (a full disk):
    /// the contact log says so.
    pub recording_failed: bool,
}

/// A finished recording file.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub path: String,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub sha256: String,
}

impl Store {
    /// Writes the contact log row of a call being offered; returns its id.
    pub async fn insert_offered_call(&self, c: &OfferedCall) -> Result<i64, StoreError> {
        self.insert_call(c, "inbound").await
    }

    /// An id for a new contact log row, taken from the table's sequence ahead of need, so that a
    /// caller's screen-pop waits for no write at all ([`Store::write_call_row`] writes the row
    /// beside the pop). On PostgreSQL an INSERT, or even `nextval` when it logs the sequence,
    /// can wait on the disk while recordings are fsynced beside it (ext4's journal): that was
    /// the 120 to 190 ms pops at 25 calls a second. On SQLite the INSERT waits for the one
    /// writer, which at hundreds of set-ups a second is busy with the ends of earlier calls
    /// (issue 13 point 4). Ids come in blocks of [`RESERVE_BLOCK`], refilled in the background
    /// when few are left; ids a node held when it stopped are never used (gaps, as a sequence
    /// has anyway). Always `Some` today; `None` would mean "insert the row and take its id".
    pub async fn reserve_call_id(&self) -> Result<Option<i64>, StoreError> {
        let (id, low) = {
            let mut ids = self.reserved.lock();
            (ids.pop_front(), ids.len() < RESERVE_LOW)
        };
        if low && !self.reserved.refilling.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            tokio::spawn(async move {
                match store.next_call_ids(RESERVE_BLOCK).await {
                    Ok(ids) => store.reserved.lock().extend(ids),
                    Err(e) => tracing::warn!(error = %e, "contact log ids not reserved"),
                }
                store.reserved.refilling.store(false, Ordering::Release);
            });
        }
        match id {
            Some(id) => Ok(Some(id)),
            None => {
                tracing::debug!("no contact log id reserved: taking one on its own");
                Ok(self.next_call_ids(1).await?.first().copied())
            }
        }
    }

    /// `n` ids no other writer will use: PostgreSQL's sequence; on SQLite the table's
    /// AUTOINCREMENT counter (`sqlite_sequence`), moved on by `n` in one transaction, so that
    /// a row another process inserts meanwhile (the command-line tools) gets an id after the
    /// block.
    async fn next_call_ids(&self, n: i64) -> Result<Vec<i64>, StoreError> {
        if self.backend() == super::Backend::Postgres {
            let rows = sqlx::query(
                "SELECT nextval(pg_get_serial_sequence('calls', 'id')) AS id \
                 FROM generate_series(1, $1)",
            )
            .bind(n)
            .fetch_all(&self.pool)
            .await?;
            return rows
                .iter()
                .map(|r| r.try_get("id").map_err(StoreError::from))
                .collect();
        }
        let mut tx = self.pool.begin().await?;
        // No counter before the table's first row: start it at the highest id there is.
        sqlx::query(
            "INSERT INTO sqlite_sequence (name, seq) \
             SELECT 'calls', COALESCE((SELECT MAX(id) FROM calls), 0) \
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'calls')",
        )
        .execute(&mut *tx)
        .await?;
        // The counter may lag a row inserted with its own id (write_call_row): past both.
        let last: i64 = sqlx::query(
            "UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT MAX(id) FROM calls), 0)) + $1 \
             WHERE name = 'calls' RETURNING seq",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await?
        .try_get("seq")?;
        tx.commit().await?;
        Ok((last - n + 1..=last).collect())
    }

    /// Writes a contact log row with an id given beforehand: one reserved at offer
    /// ([`Store::reserve_call_id`]), or again at the call's end should the row be missing (its
    /// write failed, or has not landed yet, or a database crash lost it). Whichever comes
    /// first writes the row; the other changes nothing.
    pub async fn write_call_row(
        &self,
        id: i64,
        c: &OfferedCall,
        outbound: bool,
    ) -> Result<(), StoreError> {
        let direction = if outbound { "outbound" } else { "inbound" };
        let c = c.clone();
        self.write(Box::new(move |conn| {
            let c = c.clone();
            Box::pin(async move {
                bind_offered(
                    sqlx::query(
                        "INSERT INTO calls (id, sip_call_id, direction, caller_raw, caller_e164, \
                         dialed, customer_id, offered_at, created_by) \
                         VALUES ($8, $1, $7, $2, $3, $4, $5, $6, 'screenpop') \
                         ON CONFLICT DO NOTHING",
                    ),
                    &c,
                    direction,
                )
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Writes the contact log row of a call screenpop places (click-to-dial): `caller_*` and
    /// `dialed` are the number called, `customer_id` whom it is for.
    pub async fn insert_placed_call(&self, c: &OfferedCall) -> Result<i64, StoreError> {
        self.insert_call(c, "outbound").await
    }

    async fn insert_call(
        &self,
        c: &OfferedCall,
        direction: &'static str,
    ) -> Result<i64, StoreError> {
        let row = bind_offered(
            sqlx::query(
                "INSERT INTO calls (sip_call_id, direction, caller_raw, caller_e164, dialed, \
                 customer_id, offered_at, created_by) \
                 VALUES ($1, $7, $2, $3, $4, $5, $6, 'screenpop') RETURNING id",
            ),
            c,
            direction,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Completes a contact log: times, wait and talk seconds, disposition, recording. One
    /// statement (the wait is counted from the row's own offer time): on SQLite every statement
    /// is a turn of the one writer.
    pub async fn finish_call(&self, id: i64, e: &EndedCall) -> Result<(), StoreError> {
        let e = e.clone();
        self.write(Box::new(move |conn| {
            Box::pin(finish_call_on(conn, id, e.clone()))
        }))
        .await
    }

    /// Records a finished recording; the same path twice returns the first row's id.
    pub async fn insert_recording(&self, r: &NewRecording) -> Result<i64, StoreError> {
        let r = r.clone();
        self.write(Box::new(move |conn| {
            Box::pin(insert_recording_on(conn, r.clone()))
        }))
        .await
    }

    /// The contact log row of a SIP call, for crash recovery and tests.
    pub async fn call_by_sip_id(&self, sip_call_id: &str) -> Result<Option<CallRow>, StoreError> {
        let row = sqlx::query(
            "SELECT c.id, c.customer_id, c.caller_e164, c.disposition, c.answered_at, \
             c.ended_at, c.talk_secs, r.path, r.sha256 \
             FROM calls c LEFT JOIN recordings r ON r.id = c.recording_id \
             WHERE c.sip_call_id = $1",
        )
        .bind(sip_call_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CallRow {
            id: row.try_get("id")?,
            customer_id: row.try_get("customer_id")?,
            caller_e164: row.try_get("caller_e164")?,
            disposition: row.try_get("disposition")?,
            answered_at: row.try_get("answered_at")?,
            ended_at: row.try_get("ended_at")?,
            talk_secs: row.try_get("talk_secs")?,
            recording_path: row.try_get("path")?,
            recording_sha256: row.try_get("sha256")?,
        }))
    }
}

/// A contact log as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallRow {
    pub id: i64,
    pub customer_id: Option<i64>,
    pub caller_e164: Option<String>,
    pub disposition: Option<String>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub talk_secs: Option<i64>,
    pub recording_path: Option<String>,
    pub recording_sha256: Option<String>,
}

/// A contact log for the API and the pop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ContactLog {
    pub id: i64,
    pub sip_call_id: String,
    pub direction: String,
    pub caller_raw: String,
    pub caller_e164: Option<String>,
    pub dialed: String,
    pub customer_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub queue_id: Option<i64>,
    pub offered_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub wait_secs: Option<i64>,
    pub talk_secs: Option<i64>,
    /// answered, missed, abandoned, rejected (null while the call is in progress).
    pub disposition: Option<String>,
    /// The agent's own wrap-up code.
    pub agent_disposition: Option<String>,
    pub recording_id: Option<i64>,
    pub notes: Option<String>,
    pub created_by: String,
    /// The campaign that made this contact (a greeting or a broadcast), if one did.
    pub campaign_id: Option<i64>,
    /// `sms` or `voice` for a campaign's contact; null for a call.
    pub channel: Option<String>,
    /// How a campaign's contact went: `sent`, `delivered`, `answered`, `busy`, `no answer`,
    /// `failed: …`.
    pub result: Option<String>,
    /// The caller's post-call survey score (1–9), if they gave one.
    pub survey_score: Option<i64>,
    /// When the caller was asked the post-call survey (epoch ms); null: not asked.
    pub survey_offered_at: Option<i64>,
    /// What became of the recording when it is not simply there: `failed` (the disk refused
    /// it), `expired` (deleted after the queue's retention) or `archived` (moved to the
    /// archive folder, still playable).
    pub recording_status: Option<String>,
    /// Every agent who had the call, in turn, with their talk time (a transferred call lists
    /// each). Filled in for one contact log (`GET /api/calls/{id}`), empty in lists.
    pub agents: Vec<CallAgent>,
}

/// One agent's turn on a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CallAgent {
    pub agent_id: i64,
    /// From the answer, in milliseconds (the recording's time).
    pub start_ms: i64,
    pub end_ms: i64,
    pub talk_secs: i64,
}

/// Filters for listing contact logs; all optional, newest first.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub agent: Option<i64>,
    pub customer: Option<i64>,
    /// Matches the caller's E.164 number or the number as received.
    pub number: Option<String>,
    pub disposition: Option<String>,
    /// Talk time bounds, inclusive.
    pub min_talk_secs: Option<i64>,
    pub max_talk_secs: Option<i64>,
    /// Only calls with a recording.
    pub has_recording: bool,
    pub before: Option<i64>,
    pub limit: i64,
}

/// A queue's finished calls over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDay {
    pub queue_id: i64,
    pub answered: i64,
    pub abandoned: i64,
    pub missed: i64,
    pub answered_within_level: i64,
    pub wait_secs_total: i64,
    pub talk_secs_total: i64,
    pub surveys: SurveyDay,
}

/// Post-call surveys over a period: how many callers were asked, how many pressed a digit,
/// and the sum of their digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SurveyDay {
    pub offered: i64,
    pub scored: i64,
    pub score_total: i64,
}

impl SurveyDay {
    fn of(r: &sqlx::any::AnyRow) -> Result<SurveyDay, sqlx::Error> {
        Ok(SurveyDay {
            offered: r.try_get("surveys_offered")?,
            scored: r.try_get("surveys_scored")?,
            score_total: r.try_get("score_total")?,
        })
    }

    /// The mean score, once anyone pressed a digit.
    pub fn average(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_total as f64 / self.scored as f64)
    }
}

/// The survey columns of the stats queries (the same for queues and agents).
const SURVEY_SUMS: &str = "\
     CAST(SUM(CASE WHEN c.survey_offered_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS surveys_offered, \
     CAST(SUM(CASE WHEN c.survey_score IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS surveys_scored, \
     CAST(SUM(COALESCE(c.survey_score, 0)) AS BIGINT) AS score_total";

/// An agent's answered calls over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentDay {
    pub agent_id: i64,
    pub calls: i64,
    pub talk_secs: i64,
    pub surveys: SurveyDay,
}

/// A recording row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Recording {
    pub id: i64,
    pub path: String,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: i64,
    /// When retention removed the audio (epoch ms); null while it is kept.
    pub expired_at: Option<i64>,
    /// Where retention moved the audio (it is played from there); null if deleted or kept.
    pub archived_to: Option<String>,
}

pub(super) const LOG_COLUMNS: &str =
    "id, sip_call_id, direction, caller_raw, caller_e164, dialed, \
     customer_id, agent_id, queue_id, offered_at, answered_at, ended_at, wait_secs, talk_secs, \
     disposition, agent_disposition, recording_id, notes, created_by, campaign_id, channel, \
     result, survey_score, survey_offered_at, recording_status";

/// The order of a customer's contacts on the pop: newest first; the order of the `calls_customer`
/// index, so that reading the last few stops after them.
pub(super) const RECENT_ORDER: &str = "offered_at DESC, id DESC";

/// A customer's latest contacts; `customer` and `limit` are SQL expressions (the screen-pop's
/// one-statement read on PostgreSQL makes the same query inside its own).
pub(super) fn recent_contacts_sql(customer: &str, limit: &str) -> String {
    format!(
        "SELECT {LOG_COLUMNS} FROM calls WHERE customer_id = {customer} \
         ORDER BY {RECENT_ORDER} LIMIT {limit}"
    )
}

pub(super) fn log_of(r: &impl Columns) -> Result<ContactLog, sqlx::Error> {
    Ok(ContactLog {
        id: r.col("id")?,
        sip_call_id: r.col("sip_call_id")?,
        direction: r.col("direction")?,
        caller_raw: r.col("caller_raw")?,
        caller_e164: r.col("caller_e164")?,
        dialed: r.col("dialed")?,
        customer_id: r.col("customer_id")?,
        agent_id: r.col("agent_id")?,
        queue_id: r.col("queue_id")?,
        offered_at: r.col("offered_at")?,
        answered_at: r.col("answered_at")?,
        ended_at: r.col("ended_at")?,
        wait_secs: r.col("wait_secs")?,
        talk_secs: r.col("talk_secs")?,
        disposition: r.col("disposition")?,
        agent_disposition: r.col("agent_disposition")?,
        recording_id: r.col("recording_id")?,
        notes: r.col("notes")?,
        created_by: r.col("created_by")?,
        campaign_id: r.col("campaign_id")?,
        channel: r.col("channel")?,
        result: r.col("result")?,
        survey_score: r.col("survey_score")?,
        survey_offered_at: r.col("survey_offered_at")?,
        recording_status: r.col("recording_status")?,
        agents: Vec::new(),
    })
}

impl Store {
    /// Notes the agent under the call's row (the call's agent is set by the ring).
    pub async fn set_call_agent(
        &self,
        id: i64,
        agent: i64,
        queue: Option<i64>,
    ) -> Result<(), StoreError> {
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE calls SET agent_id = $1, queue_id = COALESCE($2, queue_id) \
                     WHERE id = $3",
                )
                .bind(agent)
                .bind(queue)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    pub async fn contact_log(&self, id: i64) -> Result<Option<ContactLog>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LOG_COLUMNS} FROM calls WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut log) = row.as_ref().map(log_of).transpose()? else {
            return Ok(None);
        };
        log.agents = self.call_agents(id).await?;
        Ok(Some(log))
    }

    /// Records who had the call in turn, as `(agent, start_ms, end_ms)` from the answer. Written
    /// once at the end (again after a crash: the same rows are kept).
    pub async fn set_call_agents(
        &self,
        id: i64,
        agents: &[(i64, i64, i64)],
    ) -> Result<(), StoreError> {
        if agents.is_empty() {
            return Ok(());
        }
        // One statement for all the rows, so that the write stands or fails whole inside the
        // writer's batch (SQLite undoes only a failing statement, not the write's earlier ones).
        let values = (0..agents.len())
            .map(|i| {
                let p = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO call_agents (call_id, seq, agent_id, start_ms, end_ms) VALUES {values} \
             ON CONFLICT (call_id, seq) DO NOTHING"
        );
        let agents = agents.to_vec();
        self.write(Box::new(move |conn| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for (seq, (agent, start, end)) in agents.iter().enumerate() {
                q = q
                    .bind(id)
                    .bind(seq as i32)
                    .bind(*agent)
                    .bind(*start)
                    .bind(*end);
            }
            Box::pin(async move {
                q.execute(&mut *conn).await?;
                Ok(())
            })
        }))
        .await
    }

    async fn call_agents(&self, id: i64) -> Result<Vec<CallAgent>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, start_ms, end_ms FROM call_agents WHERE call_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (start, end): (i64, i64) = (r.try_get("start_ms")?, r.try_get("end_ms")?);
                Ok(CallAgent {
                    agent_id: r.try_get("agent_id")?,
                    start_ms: start,
                    end_ms: end,
                    talk_secs: (end - start).max(0) / 1000,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub async fn contact_logs(&self, f: &CallFilter) -> Result<Vec<ContactLog>, StoreError> {
        let mut sql = format!("SELECT {LOG_COLUMNS} FROM calls WHERE 1 = 1");
        let mut n = 0;
        let mut cond = |sql: &mut String, c: &str| {
            n += 1;
            sql.push_str(&c.replace('?', &format!("${n}")));
        };
        if f.from_ms.is_some() {
            cond(&mut sql, " AND offered_at >= ?");
        }
        if f.to_ms.is_some() {
            cond(&mut sql, " AND offered_at < ?");
        }
        if f.agent.is_some() {
            cond(&mut sql, " AND agent_id = ?");
        }
        if f.customer.is_some() {
            cond(&mut sql, " AND customer_id = ?");
        }
        if f.number.is_some() {
            cond(&mut sql, " AND (caller_e164 = ? OR caller_raw = ?)");
        }
        if f.disposition.is_some() {
            cond(&mut sql, " AND disposition = ?");
        }
        if f.before.is_some() {
            cond(&mut sql, " AND id < ?");
        }
        if f.min_talk_secs.is_some() {
            cond(&mut sql, " AND talk_secs >= ?");
        }
        if f.max_talk_secs.is_some() {
            cond(&mut sql, " AND talk_secs <= ?");
        }
        if f.has_recording {
            sql.push_str(" AND recording_id IS NOT NULL");
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            f.limit.clamp(1, 500)
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in [f.from_ms, f.to_ms, f.agent, f.customer]
            .into_iter()
            .flatten()
        {
            q = q.bind(v);
        }
        if let Some(num) = &f.number {
            q = q.bind(num.clone());
        }
        if let Some(d) = &f.disposition {
            q = q.bind(d.clone());
        }
        for v in [f.before, f.min_talk_secs, f.max_talk_secs]
            .into_iter()
            .flatten()
        {
            q = q.bind(v);
        }
        let rows = q.fetch_all(self.reader()).await?;
        Ok(rows.iter().map(log_of).collect::<Result<_, _>>()?)
    }

    /// The customer's latest contacts, newest first (for the screen-pop).
    pub async fn recent_contacts(
        &self,
        customer: i64,
        limit: i64,
    ) -> Result<Vec<ContactLog>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(recent_contacts_sql(
            "$1",
            &limit.clamp(1, 100).to_string(),
        )))
        .bind(customer)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.iter().map(log_of).collect::<Result<_, _>>()?)
    }

    /// The agent's notes and wrap-up code on a call; `None` leaves a field alone.
    pub async fn annotate_call(
        &self,
        id: i64,
        notes: Option<&str>,
        agent_disposition: Option<&str>,
    ) -> Result<ContactLog, StoreError> {
        sqlx::query(
            "UPDATE calls SET notes = COALESCE($1, notes), \
             agent_disposition = COALESCE($2, agent_disposition) WHERE id = $3",
        )
        .bind(notes.map(str::to_string))
        .bind(agent_disposition.map(str::to_string))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.contact_log(id)
            .await?
            .ok_or(StoreError::NotFound("call"))
    }

    /// Links a call to the customer the agent picked among the candidates (or found).
    pub async fn link_call_customer(&self, id: i64, customer: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE calls SET customer_id = $1 WHERE id = $2")
            .bind(customer)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::Invalid {
                    field: "customer_id",
                    why: format!("no customer {customer}"),
                },
                _ => StoreError::Db(e),
            })?;
        Ok(())
    }

    /// Per queue, the finished calls offered since `since_ms`: the wallboard's day figures.
    /// A call counts towards the service level when it was answered within its queue's
    /// threshold; the share is of all finished calls. "missed" counts every call nobody
    /// answered that the caller did not abandon: missed, rejected, failed.
    pub async fn queue_stats_since(&self, since_ms: i64) -> Result<Vec<QueueDay>, StoreError> {
        let sql = format!(
            "SELECT c.queue_id AS queue_id, {SURVEY_SUMS}, \
               CAST(SUM(CASE WHEN c.disposition = 'answered' THEN 1 ELSE 0 END) AS BIGINT) AS answered, \
               CAST(SUM(CASE WHEN c.disposition = 'abandoned' THEN 1 ELSE 0 END) AS BIGINT) AS abandoned, \
               CAST(SUM(CASE WHEN c.disposition IN ('missed', 'rejected', 'failed') THEN 1 ELSE 0 END) AS BIGINT) AS missed, \
               CAST(SUM(CASE WHEN c.disposition = 'answered' AND COALESCE(c.wait_secs, 0) <= q.service_level_secs \
                        THEN 1 ELSE 0 END) AS BIGINT) AS within, \
               CAST(SUM(CASE WHEN c.disposition = 'answered' THEN COALESCE(c.wait_secs, 0) ELSE 0 END) AS BIGINT) AS wait_total, \
               CAST(SUM(CASE WHEN c.disposition = 'answered' THEN COALESCE(c.talk_secs, 0) ELSE 0 END) AS BIGINT) AS talk_total \
             FROM calls c JOIN queues q ON q.id = c.queue_id \
             WHERE c.offered_at >= $1 AND c.disposition IS NOT NULL \
             GROUP BY c.queue_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since_ms)
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueDay {
                    queue_id: r.try_get("queue_id")?,
                    answered: r.try_get("answered")?,
                    abandoned: r.try_get("abandoned")?,
                    missed: r.try_get("missed")?,
                    answered_within_level: r.try_get("within")?,
                    wait_secs_total: r.try_get("wait_total")?,
                    talk_secs_total: r.try_get("talk_total")?,
                    surveys: SurveyDay::of(r)?,
                })
            })
            .collect()
    }

    /// Per agent, the calls answered since `since_ms` and their talk time.
    pub async fn agent_stats_since(&self, since_ms: i64) -> Result<Vec<AgentDay>, StoreError> {
        let sql = format!(
            "SELECT c.agent_id AS agent_id, COUNT(*) AS calls, {SURVEY_SUMS}, \
               CAST(SUM(COALESCE(c.talk_secs, 0)) AS BIGINT) AS talk \
             FROM calls c WHERE c.offered_at >= $1 AND c.disposition = 'answered' \
               AND c.agent_id IS NOT NULL GROUP BY c.agent_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since_ms)
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentDay {
                    agent_id: r.try_get("agent_id")?,
                    calls: r.try_get("calls")?,
                    talk_secs: r.try_get("talk")?,
                    surveys: SurveyDay::of(r)?,
                })
            })
            .collect()
    }

    pub async fn recording(&self, id: i64) -> Result<Option<Recording>, StoreError> {
        let row = sqlx::query(
            "SELECT id, path, duration_ms, size_bytes, sha256, created_at, expired_at, archived_to \
             FROM recordings WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Recording {
            id: r.try_get("id")?,
            path: r.try_get("path")?,
            duration_ms: r.try_get("duration_ms")?,
            size_bytes: r.try_get("size_bytes")?,
            sha256: r.try_get("sha256")?,
            created_at: r.try_get("created_at")?,
            expired_at: r.try_get("expired_at")?,
            archived_to: r.try_get("archived_to")?,
        }))
    }

    /// Recordings past their retention at `now_ms`, oldest first from after `after` (the
    /// last one of the previous page: `(created_at, id)`), at most `limit`: kept
    /// `keep_recordings_days` of their call's queue, else `default_days` (0: for ever). One
    /// another node is removing (its lease younger than [`EXPIRY_LEASE_MS`]) is left out.
    pub async fn expiring_recordings(
        &self,
        now_ms: i64,
        default_days: i64,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<ExpiringRecording>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id AS id, r.path AS path, r.created_at AS created_at, c.id AS call_id, \
               q.name AS queue, CAST(COALESCE(q.keep_recordings_days, $2) AS BIGINT) AS days \
             FROM recordings r \
             LEFT JOIN calls c ON c.recording_id = r.id \
             LEFT JOIN queues q ON q.id = c.queue_id \
             WHERE r.expired_at IS NULL AND COALESCE(q.keep_recordings_days, $2) > 0 \
               AND r.created_at <= \
                 $1 - CAST(COALESCE(q.keep_recordings_days, $2) AS BIGINT) * 86400000 \
               AND (r.created_at > $3 OR (r.created_at = $3 AND r.id > $4)) \
               AND (r.expiry_claimed_at IS NULL OR r.expiry_claimed_at < $5) \
             ORDER BY r.created_at, r.id LIMIT $6",
        )
        .bind(now_ms)
        .bind(default_days)
        .bind(after.0)
        .bind(after.1)
        .bind(crate::time::now_ms() - EXPIRY_LEASE_MS)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExpiringRecording {
                    id: r.try_get("id")?,
                    path: r.try_get("path")?,
                    created_at: r.try_get("created_at")?,
                    call_id: r.try_get("call_id")?,
                    queue: r.try_get("queue")?,
                    days: r.try_get("days")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Takes a recording's removal for this node (several nodes on one database sweep at
    /// once): true for the one whose update found it kept and not leased to another. The
    /// lease lapses after [`EXPIRY_LEASE_MS`], so a node that died mid-way holds nothing.
    pub async fn claim_expiry(&self, id: i64) -> Result<bool, StoreError> {
        let now = crate::time::now_ms();
        let r = sqlx::query(
            "UPDATE recordings SET expiry_claimed_at = $2 WHERE id = $1 AND expired_at IS NULL \
             AND (expiry_claimed_at IS NULL OR expiry_claimed_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(now - EXPIRY_LEASE_MS)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives a claim back (the file could not be removed): tried again next sweep.
    pub async fn unclaim_expiry(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE recordings SET expiry_claimed_at = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The audio is gone (`archived_to` `None`) or moved: the recording, its contact log and
    /// the audit log say so, all at once.
    pub async fn recording_expired(
        &self,
        id: i64,
        archived_to: Option<&str>,
        audit: (&str, &str),
    ) -> Result<(), StoreError> {
        let now = crate::time::now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE recordings SET expired_at = $2, archived_to = $3, expiry_claimed_at = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(archived_to.map(str::to_string))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE calls SET recording_status = $2 WHERE recording_id = $1")
            .bind(id)
            .bind(if archived_to.is_some() {
                "archived"
            } else {
                "expired"
            })
            .execute(&mut *tx)
            .await?;
        let (action, detail) = audit;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, detail, source) \
             VALUES ($1, 'retention', $2, $3, $4, NULL)",
        )
        .bind(now)
        .bind(action.to_string())
        .bind(format!("recording:{id}"))
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How long a node's claim on a recording's removal holds (an hour).
pub const EXPIRY_LEASE_MS: i64 = 3_600_000;

/// A recording past its retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringRecording {
    pub id: i64,
    pub path: String,
    pub created_at: i64,
    /// Its contact log, and the queue whose retention applies (none: the profile's).
    pub call_id: Option<i64>,
    pub queue: Option<String>,
    pub days: i64,
}

/// [`Store::finish_call`]'s statement.
async fn finish_call_on(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    e: EndedCall,
) -> Result<(), StoreError> {
    let waited_until = e.answered_at.unwrap_or(e.ended_at);
    let talk_end = e.survey_offered_at.unwrap_or(e.ended_at);
    let talk_secs = e
        .answered_at
        .map(|a| (talk_end - a).max(0) / 1000)
        .unwrap_or(0);
    let done = sqlx::query(
        "UPDATE calls SET answered_at = $1, ended_at = $2, \
         wait_secs = (CASE WHEN $3 > offered_at THEN $3 - offered_at ELSE 0 END) / 1000, \
         talk_secs = $4, \
         disposition = $5, recording_id = $6, agent_id = COALESCE($8, agent_id), \
         queue_id = COALESCE($9, queue_id), survey_offered_at = $10, survey_score = $11, \
         recording_status = COALESCE($12, recording_status) WHERE id = $7",
    )
    .bind(e.answered_at)
    .bind(e.ended_at)
    .bind(waited_until)
    .bind(talk_secs)
    .bind(e.disposition.as_str())
    .bind(e.recording_id)
    .bind(id)
    .bind(e.agent_id)
    .bind(e.queue_id)
    .bind(e.survey_offered_at)
    .bind(e.survey_score)
    .bind(e.recording_failed.then_some("failed"))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("call"));
    }
    Ok(())
}

/// [`Store::insert_recording`]'s statements: the INSERT, and only when the path is known
/// already the SELECT of its row.
async fn insert_recording_on(
    conn: &mut sqlx::AnyConnection,
    r: NewRecording,
) -> Result<i64, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO recordings (path, duration_ms, size_bytes, sha256, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (path) DO NOTHING RETURNING id",
    )
    .bind(r.path.clone())
    .bind(r.duration_ms)
    .bind(r.size_bytes)
    .bind(r.sha256.clone())
    .bind(super::now_ms())
    .fetch_optional(&mut *conn)
    .await?;
    let row = match inserted {
        Some(row) => row,
        None => {
            sqlx::query("SELECT id FROM recordings WHERE path = $1")
                .bind(r.path)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    Ok(row.try_get("id")?)
}

/// Binds what a contact log row starts with as `$1` to `$7`: the SIP Call-ID, the caller as
/// sent and in E.164, the number dialed, the customer, when it was offered, the direction.
fn bind_offered<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    c: &OfferedCall,
    direction: &'static str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(c.sip_call_id.clone())
        .bind(c.caller_raw.clone())
        .bind(c.caller_e164.clone())
        .bind(c.dialed.clone())
        .bind(c.customer_id)
        .bind(c.offered_at)
        .bind(direction)
}
