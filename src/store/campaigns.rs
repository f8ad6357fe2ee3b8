//! Campaigns and their attempts. The attempts table is both the campaign's queue and its
//! memory: planning a run inserts one row per customer and occasion (`ON CONFLICT DO NOTHING`
//! on the unique key), and senders claim rows with a conditional update, so two runs at once,
//! a restart or a second node never contact a customer twice for one occasion.

use sqlx::{AssertSqlSafe, Row};

use super::{now_ms, Backend, Store, StoreError};
use crate::campaigns::plan::{Candidate, Via};
use crate::campaigns::spec::Audience;

/// A campaign's life: written (`draft`), running on its schedule (`active`), held (`paused`),
/// or finished (`done`, a single run whose attempts have all ended).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Draft,
    Active,
    Paused,
    Done,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Active => "active",
            CampaignState::Paused => "paused",
            CampaignState::Done => "done",
        }
    }
    fn parse(s: &str) -> CampaignState {
        match s {
            "active" => CampaignState::Active,
            "paused" => CampaignState::Paused,
            "done" => CampaignState::Done,
            _ => CampaignState::Draft,
        }
    }
}

/// A stored campaign; `spec` is the JSON the API took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub channel: String,
    pub spec: String,
    pub state: CampaignState,
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One customer to contact in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    pub customer_id: i64,
    /// See the migration: shared by the campaigns of a kind for greetings.
    pub occasion: String,
    /// After this (epoch ms) the attempt is not sent: a greeting's day is over.
    pub expires_at: Option<i64>,
    pub number: String,
    pub via: Via,
    pub body: String,
    /// `skipped` rows record why a selected customer is not contacted.
    pub skipped: Option<String>,
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: i64,
    pub campaign_id: i64,
    pub customer_id: i64,
    pub occasion: String,
    pub number: String,
    pub channel: Via,
    pub body: String,
    /// pending, sending, sent, delivered, answered, busy, no_answer, failed, skipped.
    pub status: String,
    pub tries: i64,
    pub next_attempt_at: Option<i64>,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    /// The contact log of the last try.
    pub call_id: Option<i64>,
    pub updated_at: i64,
}

/// Attempts of a campaign by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub total: i64,
    pub pending: i64,
    pub sending: i64,
    pub sent: i64,
    pub delivered: i64,
    pub answered: i64,
    pub busy: i64,
    pub no_answer: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl Progress {
    /// Nothing is left to send.
    pub fn finished(&self) -> bool {
        self.pending == 0 && self.sending == 0
    }
}

/// The contact log of one try.
#[derive(Debug, Clone)]
pub struct TryLog {
    /// The SIP Call-ID of the MESSAGE or the call, or the SMS center's id.
    pub key: String,
    pub campaign_id: i64,
    pub customer_id: i64,
    pub number: String,
    pub via: Via,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// `sent`, `delivered`, `answered`, `busy`, `no answer`, `failed: …`.
    pub result: String,
    pub body: Option<String>,
}

const CAMPAIGN_COLUMNS: &str = "id, name, kind, channel, spec, state, next_run_at, last_run_at, \
     created_by, created_at, updated_at";

fn campaign_of(r: &sqlx::any::AnyRow) -> Result<CampaignRow, sqlx::Error> {
    let state: String = r.try_get("state")?;
    Ok(CampaignRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        channel: r.try_get("channel")?,
        spec: r.try_get("spec")?,
        state: CampaignState::parse(&state),
        next_run_at: r.try_get("next_run_at")?,
        last_run_at: r.try_get("last_run_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const ATTEMPT_COLUMNS: &str = "id, campaign_id, customer_id, occasion, number, channel, body, \
     status, tries, next_attempt_at, message_id, reason, call_id, updated_at";

fn attempt_of(r: &sqlx::any::AnyRow) -> Result<Attempt, sqlx::Error> {
    let channel: String = r.try_get("channel")?;
    Ok(Attempt {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        customer_id: r.try_get("customer_id")?,
        occasion: r.try_get("occasion")?,
        number: r.try_get("number")?,
        channel: Via::parse(&channel),
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        tries: r.try_get("tries")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        message_id: r.try_get("message_id")?,
        reason: r.try_get("reason")?,
        call_id: r.try_get("call_id")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Saves a checked campaign; a name in use is refused by field.
    pub async fn create_campaign(
        &self,
        name: &str,
        kind: &str,
        channel: &str,
        spec: &str,
        created_by: &str,
    ) -> Result<CampaignRow, StoreError> {
        let now = now_ms();
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO campaigns (name, kind, channel, spec, state, created_by, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 'draft', $5, $6, $6) RETURNING {CAMPAIGN_COLUMNS}"
        )))
        .bind(name.to_string())
        .bind(kind.to_string())
        .bind(channel.to_string())
        .bind(spec.to_string())
        .bind(created_by.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Invalid {
                field: "name",
                why: "a campaign of that name exists".into(),
            },
            _ => StoreError::Db(e),
        })?;
        Ok(campaign_of(&row)?)
    }

    pub async fn campaign(&self, id: i64) -> Result<Option<CampaignRow>, StoreError> {
        let r = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(campaign_of).transpose()?)
    }

    pub async fn campaign_by_name(&self, name: &str) -> Result<Option<CampaignRow>, StoreError> {
        let r = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE name = $1"
        )))
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(campaign_of).transpose()?)
    }

    /// Every campaign, newest first.
    pub async fn campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id DESC LIMIT 1000"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(campaign_of).collect::<Result<_, _>>()?)
    }

    /// Moves a campaign to `to` if it is in one of `from`; returns whether it moved. The next
    /// run is set with it (`Some(None)` clears it, `None` leaves it).
    pub async fn set_campaign_state(
        &self,
        id: i64,
        from: &[CampaignState],
        to: CampaignState,
        next_run_at: Option<Option<i64>>,
    ) -> Result<bool, StoreError> {
        let list: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let (set_next, next) = match next_run_at {
            Some(n) => (", next_run_at = $4", n),
            None => ("", None),
        };
        let sql = format!(
            "UPDATE campaigns SET state = $1, updated_at = $2{set_next} \
             WHERE id = $3 AND state IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(now_ms())
            .bind(id);
        if next_run_at.is_some() {
            q = q.bind(next);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Runs a campaign now (a draft, a finished one or an active one); `false` when it is
    /// paused.
    pub async fn run_campaign_now(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET state = 'active', next_run_at = $1, updated_at = $1 \
             WHERE id = $2 AND state IN ('draft', 'done', 'active')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Active campaigns whose next run is due at `now`.
    pub async fn due_campaigns(&self, now: i64) -> Result<Vec<CampaignRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE state = 'active' \
             AND next_run_at IS NOT NULL AND next_run_at <= $1 ORDER BY next_run_at"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(campaign_of).collect::<Result<_, _>>()?)
    }

    /// Active campaigns, for the sender.
    pub async fn active_campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE state = 'active' ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(campaign_of).collect::<Result<_, _>>()?)
    }

    /// Takes the run due at `due` for this node: moves the next run on to `next` only if
    /// nobody else did. Returns whether this node is the one to plan it.
    pub async fn claim_campaign_run(
        &self,
        id: i64,
        due: i64,
        next: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET next_run_at = $1, last_run_at = $2, updated_at = $2 \
             WHERE id = $3 AND state = 'active' AND next_run_at = $4",
        )
        .bind(next)
        .bind(now)
        .bind(id)
        .bind(due)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Customers the audience selects, in id order after `after`, `limit` at a time, with
    /// their best number (mobile first) and assigned agent's name.
    pub async fn campaign_candidates(
        &self,
        a: &Audience,
        last_contact_before_ms: Option<i64>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>, StoreError> {
        let mut sql = String::from(
            "SELECT c.id, c.code, c.name, c.company, c.birthday, c.birthday_calendar, \
             c.anniversary, c.opt_out_sms, c.opt_out_voice, g.display_name AS agent, \
             (SELECT p.e164 FROM customer_phones p WHERE p.customer_id = c.id \
              AND p.e164 IS NOT NULL ORDER BY CASE WHEN LOWER(COALESCE(p.label, '')) \
              IN ('mobile', 'cell', '手机') THEN 0 ELSE 1 END, p.id LIMIT 1) AS number \
             FROM customers c LEFT JOIN agents g ON g.id = c.assigned_agent_id \
             WHERE c.id > $1",
        );
        let mut binds: Vec<Bind> = vec![Bind::Int(after)];
        let next = |b: Bind, binds: &mut Vec<Bind>| {
            binds.push(b);
            format!("${}", binds.len())
        };
        if !a.tiers.is_empty() {
            let ps: Vec<String> = a
                .tiers
                .iter()
                .map(|t| next(Bind::Text(t.as_str().to_string()), &mut binds))
                .collect();
            sql.push_str(&format!(" AND c.tier IN ({})", ps.join(", ")));
        }
        if !a.tags.is_empty() {
            let ps: Vec<String> = a
                .tags
                .iter()
                .map(|t| next(Bind::Text(t.trim().to_string()), &mut binds))
                .collect();
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM customer_tags t WHERE t.customer_id = c.id \
                 AND t.tag IN ({}))",
                ps.join(", ")
            ));
        }
        if let Some(r) = &a.region {
            let p = next(Bind::Text(format!("{r}%")), &mut binds);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM customer_phones p WHERE p.customer_id = c.id \
                 AND p.e164 LIKE {p})"
            ));
        }
        if let Some(g) = a.assigned_agent_id {
            let p = next(Bind::Int(g), &mut binds);
            sql.push_str(&format!(" AND c.assigned_agent_id = {p}"));
        }
        if let Some(before) = last_contact_before_ms {
            let p = next(Bind::Int(before), &mut binds);
            sql.push_str(&format!(
                " AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.customer_id = c.id \
                 AND k.offered_at >= {p})"
            ));
        }
        if !a.customer_ids.is_empty() {
            let ps: Vec<String> = a
                .customer_ids
                .iter()
                .map(|id| next(Bind::Int(*id), &mut binds))
                .collect();
            sql.push_str(&format!(" AND c.id IN ({})", ps.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY c.id LIMIT {}", limit.clamp(1, 10_000)));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let cal: String = r.try_get("birthday_calendar")?;
                Ok(Candidate {
                    customer_id: r.try_get("id")?,
                    code: r.try_get("code")?,
                    name: r.try_get("name")?,
                    company: r.try_get("company")?,
                    agent: r.try_get("agent")?,
                    birthday: r.try_get("birthday")?,
                    lunar_birthday: cal == "lunar",
                    anniversary: r.try_get("anniversary")?,
                    number: r.try_get("number")?,
                    opt_out_sms: r.try_get::<i64, _>("opt_out_sms")? != 0,
                    opt_out_voice: r.try_get::<i64, _>("opt_out_voice")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Db)
    }

    /// Records a run's plan; a customer who already has an attempt for `occasion` (from this
    /// run, an earlier one, another node, or another campaign of the same kind) is left as
    /// is. Returns how many rows were new.
    pub async fn insert_attempts(
        &self,
        campaign_id: i64,
        attempts: &[NewAttempt],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        let mut tx = self.pool.begin().await?;
        for chunk in attempts.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO campaign_attempts (campaign_id, customer_id, occasion, number, \
                 channel, body, status, next_attempt_at, reason, expires_at, created_at, \
                 updated_at) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                let b = i * 9;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "($1, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, $2, $2)",
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10,
                    b + 11
                ));
            }
            sql.push_str(" ON CONFLICT (customer_id, occasion) DO NOTHING");
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(campaign_id).bind(now);
            for a in chunk {
                let (status, next) = match &a.skipped {
                    Some(_) => ("skipped", None),
                    None => ("pending", Some(now)),
                };
                q = q
                    .bind(a.customer_id)
                    .bind(a.occasion.clone())
                    .bind(a.number.clone())
                    .bind(a.via.as_str())
                    .bind(a.body.clone())
                    .bind(status)
                    .bind(next)
                    .bind(a.skipped.clone())
                    .bind(a.expires_at);
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims up to `limit` attempts of a campaign that are due at `now` for `node` (and only
    /// attempts no other sender holds).
    pub async fn claim_attempts(
        &self,
        campaign_id: i64,
        node: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let limit = limit.clamp(1, 10_000);
        sqlx::query(
            "UPDATE campaign_attempts SET status = 'skipped', \
             reason = 'its day passed before it could be sent', updated_at = $2 \
             WHERE campaign_id = $1 AND status = 'pending' AND expires_at IS NOT NULL \
             AND expires_at <= $2",
        )
        .bind(campaign_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let sql = match self.backend {
            // PostgreSQL may run an `IN (SELECT … LIMIT … FOR UPDATE SKIP LOCKED)` once per
            // candidate row and so claim far more than the limit (seen: 9 of a limit of 1);
            // a materialized CTE picks once. SKIP LOCKED lets two nodes claim side by side.
            Backend::Postgres => format!(
                "WITH picked AS MATERIALIZED (SELECT id FROM campaign_attempts \
                 WHERE campaign_id = $3 AND status = 'pending' AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED) \
                 UPDATE campaign_attempts a SET status = 'sending', claimed_by = $1, \
                 claimed_at = $2, updated_at = $2 FROM picked WHERE a.id = picked.id \
                 RETURNING {}",
                ATTEMPT_COLUMNS
                    .split(", ")
                    .map(|c| format!("a.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // SQLite has one writer at a time: the statement is the claim.
            Backend::Sqlite => format!(
                "UPDATE campaign_attempts SET status = 'sending', claimed_by = $1, \
                 claimed_at = $2, updated_at = $2 WHERE status = 'pending' AND id IN \
                 (SELECT id FROM campaign_attempts WHERE campaign_id = $3 AND \
                 status = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at, id \
                 LIMIT {limit}) RETURNING {ATTEMPT_COLUMNS}"
            ),
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(node.to_string())
            .bind(now)
            .bind(campaign_id)
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<Attempt> = rows.iter().map(attempt_of).collect::<Result<_, _>>()?;
        out.sort_by_key(|a| (a.next_attempt_at, a.id));
        Ok(out)
    }

    /// Gives back what a sender held but did not finish: this node's claims at start-up
    /// (it died mid-send), and any claim older than `stale_before` (another node died).
    pub async fn release_attempt_claims(
        &self,
        node: &str,
        stale_before: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE campaign_attempts SET status = 'pending', claimed_by = NULL, \
             claimed_at = NULL, next_attempt_at = $3 \
             WHERE status = 'sending' AND (claimed_by = $1 OR claimed_at < $2)",
        )
        .bind(node.to_string())
        .bind(stale_before)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Writes the contact log of one try; returns its id.
    pub async fn insert_try_log(&self, t: &TryLog) -> Result<i64, StoreError> {
        let disposition = match (t.via, t.answered_at.is_some(), t.result.as_str()) {
            (Via::Voice, true, _) => Some("answered"),
            (Via::Voice, false, "busy" | "no answer") => Some("missed"),
            (Via::Voice, false, _) => Some("failed"),
            (Via::Sms, _, _) => None,
        };
        let talk = t.answered_at.map(|a| (t.ended_at - a).max(0) / 1000);
        let row = sqlx::query(
            "INSERT INTO calls (sip_call_id, direction, caller_raw, caller_e164, dialed, \
             customer_id, offered_at, answered_at, ended_at, wait_secs, talk_secs, disposition, \
             notes, created_by, campaign_id, channel, result) \
             VALUES ($1, 'outbound', $2, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'campaign', \
             $11, $12, $13) RETURNING id",
        )
        .bind(t.key.clone())
        .bind(t.number.clone())
        .bind(t.customer_id)
        .bind(t.started_at)
        .bind(t.answered_at)
        .bind(t.ended_at)
        .bind((t.answered_at.unwrap_or(t.ended_at) - t.started_at).max(0) / 1000)
        .bind(talk)
        .bind(disposition)
        .bind(t.body.clone())
        .bind(t.campaign_id)
        .bind(t.via.as_str())
        .bind(t.result.clone())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Stores what a try decided: the status (`pending` again for a retry), when the next try
    /// is due, on which channel, the reason, the SMS center's message id and the try's log.
    /// Only the sender holding the claim may: `false` when `node` no longer holds it (its
    /// claim was taken back as stale and someone else has the attempt).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_attempt_try(
        &self,
        node: &str,
        id: i64,
        status: &str,
        next_attempt_at: Option<i64>,
        via: Via,
        reason: Option<&str>,
        message_id: Option<&str>,
        call_id: Option<i64>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaign_attempts SET status = $1, next_attempt_at = $2, channel = $3, \
             reason = $4, message_id = COALESCE($5, message_id), call_id = COALESCE($6, call_id), \
             tries = tries + 1, claimed_by = NULL, claimed_at = NULL, updated_at = $7 \
             WHERE id = $8 AND status = 'sending' AND claimed_by = $9",
        )
        .bind(status.to_string())
        .bind(next_attempt_at)
        .bind(via.as_str())
        .bind(reason.map(str::to_string))
        .bind(message_id.map(str::to_string))
        .bind(call_id)
        .bind(now_ms())
        .bind(id)
        .bind(node.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Finishes an active campaign that has no run ahead and nothing left to send, in one
    /// statement (a run asked for meanwhile, or attempts still queued, keep it active).
    pub async fn finish_campaign_if_done(&self, id: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET state = 'done', updated_at = $2 WHERE id = $1 \
             AND state = 'active' AND next_run_at IS NULL AND NOT EXISTS \
             (SELECT 1 FROM campaign_attempts WHERE campaign_id = $1 \
              AND status IN ('pending', 'sending'))",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A delivery receipt: the attempt whose SMS has `message_id` becomes `status`, and its
    /// contact log says so. Returns the attempt, if one matched.
    pub async fn attempt_receipt(
        &self,
        message_id: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<Option<Attempt>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE campaign_attempts SET status = $1, reason = $2, updated_at = $3 \
             WHERE message_id = $4 AND status IN ('sent', 'delivered', 'failed') \
             RETURNING {ATTEMPT_COLUMNS}"
        )))
        .bind(status.to_string())
        .bind(reason.map(str::to_string))
        .bind(now_ms())
        .bind(message_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(a) = row.as_ref().map(attempt_of).transpose()? else {
            return Ok(None);
        };
        if let Some(log) = a.call_id {
            let result = match reason {
                Some(r) => format!("{status}: {r}"),
                None => status.to_string(),
            };
            sqlx::query("UPDATE calls SET result = $1 WHERE id = $2")
                .bind(result)
                .bind(log)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(a))
    }

    /// Attempts of a campaign by status.
    pub async fn campaign_progress(&self, campaign_id: i64) -> Result<Progress, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM campaign_attempts WHERE campaign_id = $1 \
             GROUP BY status",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        let mut p = Progress::default();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            p.total += n;
            match status.as_str() {
                "pending" => p.pending = n,
                "sending" => p.sending = n,
                "sent" => p.sent = n,
                "delivered" => p.delivered = n,
                "answered" => p.answered = n,
                "busy" => p.busy = n,
                "no_answer" => p.no_answer = n,
                "failed" => p.failed = n,
                _ => p.skipped += n,
            }
        }
        Ok(p)
    }

    /// A campaign's attempts in id order after `after`, optionally of one status.
    pub async fn campaign_attempts(
        &self,
        campaign_id: i64,
        status: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let filter = if status.is_some() {
            " AND status = $3"
        } else {
            ""
        };
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM campaign_attempts WHERE campaign_id = $1 \
             AND id > $2{filter} ORDER BY id LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(campaign_id)
        .bind(after);
        if let Some(s) = status {
            q = q.bind(s.to_string());
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(attempt_of).collect::<Result<_, _>>()?)
    }

    /// Whether the customer opted out of `via` (checked again just before each send: an
    /// opt-out that arrives mid-campaign stops what is still queued).
    pub async fn opted_out(&self, customer_id: i64, via: Via) -> Result<bool, StoreError> {
        let col = match via {
            Via::Sms => "opt_out_sms",
            Via::Voice => "opt_out_voice",
        };
        let r = sqlx::query(AssertSqlSafe(format!(
            "SELECT {col} AS o FROM customers WHERE id = $1"
        )))
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match r {
            Some(r) => r.try_get::<i64, _>("o")? != 0,
            None => true, // deleted meanwhile: contact nobody
        })
    }

    /// Opts every customer with this number (E.164) out of `via`; returns their ids.
    pub async fn opt_out_number(&self, e164: &str, via: Via) -> Result<Vec<i64>, StoreError> {
        let col = match via {
            Via::Sms => "opt_out_sms",
            Via::Voice => "opt_out_voice",
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE customers SET {col} = 1, updated_at = $1 WHERE id IN \
             (SELECT customer_id FROM customer_phones WHERE e164 = $2) RETURNING id"
        )))
        .bind(now_ms())
        .bind(e164.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }
}

enum Bind {
    Int(i64),
    Text(String),
}
