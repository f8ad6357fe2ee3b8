//! Agents, queues and API sessions. Skills and dialed numbers are JSON arrays in text columns
//! (the Any driver carries no arrays); an agent's queues are the `agent_queues` rows.

use std::collections::BTreeSet;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// What an account may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Supervisors and admins see every call.
    pub fn sees_all(self) -> bool {
        self >= Role::Supervisor
    }
}

/// Where an agent's phone is reached: one of the two, never both (the type says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipTarget {
    /// A phone on the PBX, called at this URI.
    Uri(String),
    /// A phone that registers with screenpop's registrar under this username; the HA1s are
    /// what digest needs, the password itself is not kept.
    Registered {
        username: String,
        ha1_md5: String,
        ha1_sha256: String,
    },
    /// No phone (supervisors and admins who only use the pages).
    None,
}

impl SipTarget {
    /// The `sip_uri`, `sip_username`, `sip_ha1_md5`, `sip_ha1_sha256` columns.
    fn columns(&self) -> [Option<String>; 4] {
        match self {
            SipTarget::Uri(u) => [Some(u.clone()), None, None, None],
            SipTarget::Registered {
                username,
                ha1_md5,
                ha1_sha256,
            } => [
                None,
                Some(username.clone()),
                Some(ha1_md5.clone()),
                Some(ha1_sha256.clone()),
            ],
            SipTarget::None => [None, None, None, None],
        }
    }
}

/// Puts an agent in `queues`; a queue that does not exist is named in the error.
async fn add_memberships(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    agent: i64,
    queues: &BTreeSet<i64>,
) -> Result<(), StoreError> {
    for q in queues {
        sqlx::query("INSERT INTO agent_queues (agent_id, queue_id) VALUES ($1, $2)")
            .bind(agent)
            .bind(*q)
            .execute(&mut **tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    invalid("queues", format!("no queue {q}"))
                }
                _ => StoreError::Db(e),
            })?;
    }
    Ok(())
}

/// An agent as stored (the password hash never leaves the store layer in API output).
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub sip: SipTarget,
    pub skills: BTreeSet<String>,
    pub queues: BTreeSet<i64>,
    pub created_at: i64,
    /// A deactivated account cannot log in and is offered no calls; its history keeps the name.
    pub active: bool,
    /// The language the pages show this user ("en", "zh"), once chosen.
    pub locale: Option<String>,
}

/// A new agent, with its password already hashed.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub sip: SipTarget,
    pub skills: BTreeSet<String>,
    pub queues: BTreeSet<i64>,
}

/// A queue: where calls to its dialed numbers wait for an agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Queue {
    pub id: i64,
    pub name: String,
    pub dialed_numbers: Vec<String>,
    pub ring_timeout_secs: i64,
    pub max_wait_secs: i64,
    pub wrap_up_secs: i64,
    pub required_skills: Vec<String>,
    /// Calls to numbers no queue lists go here.
    pub is_default: bool,
    /// A call answered within this many seconds counts towards the service level.
    pub service_level_secs: i64,
    /// A deactivated queue takes no calls (its dialed numbers fall to the default queue).
    pub active: bool,
    /// A link template for the desktop to open beside the pop (`{e164}`, `{call_id}`, …).
    pub crm_url: Option<String>,
    /// The queue's own music for waiting callers: a WAV on the server (any common format).
    pub music: Option<String>,
    /// The post-call survey's prompt (a WAV on the server); `None`: no survey. Played to a
    /// caller whose agent hung up first, who then presses a digit from 1 to 9.
    pub survey_prompt: Option<String>,
    /// Played after the caller's digit (a WAV on the server); `None`: hung up at once.
    pub survey_thanks: Option<String>,
    /// How long after the prompt's end the caller may press a digit.
    pub survey_timeout_secs: i64,
    /// Days the queue's recordings are kept before retention removes them; `None`: the
    /// profile's `[retention] keep_days`.
    pub keep_recordings_days: Option<i64>,
}

/// A new queue.
#[derive(Debug, Clone)]
pub struct NewQueue {
    pub name: String,
    pub dialed_numbers: Vec<String>,
    pub ring_timeout_secs: i64,
    pub max_wait_secs: i64,
    pub wrap_up_secs: i64,
    pub required_skills: Vec<String>,
    pub is_default: bool,
    pub service_level_secs: i64,
    pub active: bool,
    pub crm_url: Option<String>,
    pub music: Option<String>,
    pub survey_prompt: Option<String>,
    pub survey_thanks: Option<String>,
    pub survey_timeout_secs: i64,
    pub keep_recordings_days: Option<i64>,
}

impl NewQueue {
    /// The queue an empty store starts with: every new agent joins it, every number reaches it.
    pub fn general() -> NewQueue {
        NewQueue {
            name: "General".into(),
            dialed_numbers: Vec::new(),
            ring_timeout_secs: 20,
            max_wait_secs: 120,
            wrap_up_secs: 10,
            required_skills: Vec::new(),
            is_default: true,
            service_level_secs: 20,
            active: true,
            crm_url: None,
            music: None,
            survey_prompt: None,
            survey_thanks: None,
            survey_timeout_secs: DEFAULT_SURVEY_TIMEOUT_SECS,
            keep_recordings_days: None,
        }
    }
}

/// How long a caller has to press a digit after the survey's prompt, unless the queue says.
pub const DEFAULT_SURVEY_TIMEOUT_SECS: i64 = 8;

const AGENT_COLUMNS: &str = "id, username, display_name, role, password_hash, sip_uri, \
     sip_username, sip_ha1_md5, sip_ha1_sha256, skills, created_at, active, locale";

fn json_set(s: &str) -> BTreeSet<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn agent_of(row: &AnyRow) -> Result<Agent, sqlx::Error> {
    let role: String = row.try_get("role")?;
    let uri: Option<String> = row.try_get("sip_uri")?;
    let user: Option<String> = row.try_get("sip_username")?;
    let md5: Option<String> = row.try_get("sip_ha1_md5")?;
    let sha: Option<String> = row.try_get("sip_ha1_sha256")?;
    let sip = match (uri, user, md5, sha) {
        (Some(u), _, _, _) => SipTarget::Uri(u),
        (None, Some(username), Some(ha1_md5), Some(ha1_sha256)) => SipTarget::Registered {
            username,
            ha1_md5,
            ha1_sha256,
        },
        _ => SipTarget::None,
    };
    let skills: String = row.try_get("skills")?;
    Ok(Agent {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role: Role::parse(&role).unwrap_or(Role::Agent),
        password_hash: row.try_get("password_hash")?,
        sip,
        skills: json_set(&skills),
        queues: BTreeSet::new(),
        created_at: row.try_get("created_at")?,
        active: row.try_get::<i64, _>("active")? != 0,
        locale: row.try_get("locale")?,
    })
}

fn queue_of(row: &AnyRow) -> Result<Queue, sqlx::Error> {
    let dialed: String = row.try_get("dialed_numbers")?;
    let skills: String = row.try_get("required_skills")?;
    Ok(Queue {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        dialed_numbers: serde_json::from_str(&dialed).unwrap_or_default(),
        ring_timeout_secs: row.try_get("ring_timeout_secs")?,
        max_wait_secs: row.try_get("max_wait_secs")?,
        wrap_up_secs: row.try_get("wrap_up_secs")?,
        required_skills: serde_json::from_str(&skills).unwrap_or_default(),
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        service_level_secs: row.try_get("service_level_secs")?,
        active: row.try_get::<i64, _>("active")? != 0,
        crm_url: row.try_get("crm_url")?,
        music: row.try_get("music")?,
        survey_prompt: row.try_get("survey_prompt")?,
        survey_thanks: row.try_get("survey_thanks")?,
        survey_timeout_secs: row.try_get("survey_timeout_secs")?,
        keep_recordings_days: row.try_get("keep_recordings_days")?,
    })
}

fn invalid(field: &'static str, why: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        field,
        why: why.into(),
    }
}

impl Store {
    /// Creates an agent and its queue memberships in one transaction.
    pub async fn create_agent(&self, a: &NewAgent) -> Result<Agent, StoreError> {
        let username = a.username.trim();
        if username.is_empty() || username.len() > 64 || username.contains(char::is_whitespace) {
            return Err(invalid("username", "1 to 64 characters, no spaces"));
        }
        if a.display_name.trim().is_empty() {
            return Err(invalid("display_name", "must not be empty"));
        }
        let [uri, user, md5, sha] = a.sip.columns();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO agents (username, display_name, role, password_hash, sip_uri, \
             sip_username, sip_ha1_md5, sip_ha1_sha256, skills, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(username.to_string())
        .bind(a.display_name.trim().to_string())
        .bind(a.role.as_str())
        .bind(a.password_hash.clone())
        .bind(uri)
        .bind(user)
        .bind(md5)
        .bind(sha)
        .bind(serde_json::to_string(&a.skills).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                let field = if d.message().contains("sip_username") {
                    "sip_username"
                } else {
                    "username"
                };
                invalid(field, "already in use")
            }
            _ => StoreError::Db(e),
        })?;
        let id: i64 = row.try_get("id")?;
        add_memberships(&mut tx, id, &a.queues).await?;
        tx.commit().await?;
        self.agent(id).await?.ok_or(StoreError::NotFound("agent"))
    }

    pub async fn agent(&self, id: i64) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut a = agent_of(&row)?;
        a.queues = self.queues_of(id).await?;
        Ok(Some(a))
    }

    pub async fn agent_by_username(&self, username: &str) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE username = $1"
        )))
        .bind(username.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut a = agent_of(&row)?;
        a.queues = self.queues_of(a.id).await?;
        Ok(Some(a))
    }

    /// Every agent with their queues (the ACD loads this at start and after changes).
    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut agents = rows.iter().map(agent_of).collect::<Result<Vec<_>, _>>()?;
        let links = sqlx::query("SELECT agent_id, queue_id FROM agent_queues")
            .fetch_all(&self.pool)
            .await?;
        for l in &links {
            let (a, q): (i64, i64) = (l.try_get("agent_id")?, l.try_get("queue_id")?);
            if let Some(agent) = agents.iter_mut().find(|x| x.id == a) {
                agent.queues.insert(q);
            }
        }
        Ok(agents)
    }

    async fn queues_of(&self, agent: i64) -> Result<BTreeSet<i64>, StoreError> {
        let rows = sqlx::query("SELECT queue_id FROM agent_queues WHERE agent_id = $1")
            .bind(agent)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("queue_id").map_err(StoreError::from))
            .collect()
    }

    /// Whether any account exists (the first admin is created only into an empty table).
    pub async fn agent_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM agents")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a queue; making it the default takes the flag from any other queue.
    pub async fn create_queue(&self, q: &NewQueue) -> Result<Queue, StoreError> {
        check_queue(q)?;
        check_audio("music", q.music.as_ref()).await?;
        check_audio("survey_prompt", q.survey_prompt.as_ref()).await?;
        check_audio("survey_thanks", q.survey_thanks.as_ref()).await?;
        let mut tx = self.pool.begin().await?;
        if q.is_default {
            sqlx::query("UPDATE queues SET is_default = 0")
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "INSERT INTO queues (name, dialed_numbers, ring_timeout_secs, max_wait_secs, \
             wrap_up_secs, required_skills, is_default, service_level_secs, active, crm_url, music, \
             survey_prompt, survey_thanks, survey_timeout_secs, keep_recordings_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(q.name.trim().to_string())
        .bind(serde_json::to_string(&q.dialed_numbers).unwrap_or_else(|_| "[]".into()))
        .bind(q.ring_timeout_secs)
        .bind(q.max_wait_secs)
        .bind(q.wrap_up_secs)
        .bind(serde_json::to_string(&q.required_skills).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(q.is_default))
        .bind(q.service_level_secs)
        .bind(i64::from(q.active))
        .bind(q.crm_url.clone())
        .bind(q.music.clone())
        .bind(q.survey_prompt.clone())
        .bind(q.survey_thanks.clone())
        .bind(q.survey_timeout_secs)
        .bind(q.keep_recordings_days)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                invalid("name", "already in use")
            }
            _ => StoreError::Db(e),
        })?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        self.queues()
            .await?
            .into_iter()
            .find(|q| q.id == id)
            .ok_or(StoreError::NotFound("queue"))
    }

    pub async fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, dialed_numbers, ring_timeout_secs, max_wait_secs, wrap_up_secs, \
             required_skills, is_default, service_level_secs, active, crm_url, music, \
             survey_prompt, survey_thanks, survey_timeout_secs, keep_recordings_days \
             FROM queues ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(queue_of).collect::<Result<_, _>>()?)
    }

    /// Stores a new API session under the SHA-256 of its token.
    pub async fn create_session(
        &self,
        token_sha256: &str,
        agent_id: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_tokens (token_sha256, agent_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_sha256.to_string())
        .bind(agent_id)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The agent a live session belongs to.
    pub async fn session_agent(&self, token_sha256: &str) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(
            "SELECT agent_id FROM api_tokens WHERE token_sha256 = $1 AND expires_at > $2",
        )
        .bind(token_sha256.to_string())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(self
                .agent(r.try_get("agent_id")?)
                .await?
                .filter(|a| a.active)),
            None => Ok(None),
        }
    }

    /// Writes one audit entry (who did what to which record).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.audit_from(actor, action, subject, detail, None).await
    }

    /// Writes one audit entry with the address the action came from.
    pub async fn audit_from(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: Option<&str>,
        source: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, detail, source) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_ms())
        .bind(actor.to_string())
        .bind(action.to_string())
        .bind(subject.to_string())
        .bind(detail.map(str::to_string))
        .bind(source.map(str::to_string))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit entries, newest first; `action` is an exact action or a prefix ending in `.`
    /// (`recording.` for plays and downloads).
    pub async fn audit_entries(
        &self,
        action: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at, actor, action, subject, detail, source FROM audit_log WHERE 1 = 1",
        );
        let mut n = 0;
        let mut arg = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        let pattern = action.map(|a| {
            if a.ends_with('.') {
                format!("{a}%")
            } else {
                a.to_string()
            }
        });
        if pattern.is_some() {
            arg(&mut sql, " AND action LIKE ?");
        }
        if before.is_some() {
            arg(&mut sql, " AND id < ?");
        }
        arg(&mut sql, " ORDER BY id DESC LIMIT ?");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(p) = pattern {
            q = q.bind(p);
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: r.try_get("detail")?,
                    source: r.try_get("source")?,
                })
            })
            .collect()
    }

    /// Remembers the language a user chose for the pages.
    pub async fn set_locale(&self, agent: i64, locale: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET locale = $1 WHERE id = $2")
            .bind(locale.to_string())
            .bind(agent)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An empty store gets the "General" default queue, so that the first agent created can
    /// take the first call without any set-up. Returns the queue when it was created.
    pub async fn ensure_default_queue(&self) -> Result<Option<Queue>, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM queues")
            .fetch_one(&self.pool)
            .await?;
        if row.try_get::<i64, _>("n")? > 0 {
            return Ok(None);
        }
        self.create_queue(&NewQueue::general()).await.map(Some)
    }

    /// The queue new agents join when they are created without a list: the default queue.
    pub async fn default_queue(&self) -> Result<Option<Queue>, StoreError> {
        Ok(self
            .queues()
            .await?
            .into_iter()
            .find(|q| q.is_default && q.active))
    }

    /// Deletes one session (logging out).
    pub async fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_tokens WHERE token_sha256 = $1")
            .bind(token_sha256.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether `agent` took (or was rung for) the call a recording belongs to.
    pub async fn recording_is_agents(
        &self,
        recording: i64,
        agent: i64,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT 1 AS one FROM calls WHERE recording_id = $1 AND agent_id = $2")
                .bind(recording)
                .bind(agent)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Drops sessions past their expiry.
    pub async fn purge_sessions(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM api_tokens WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Changes an agent; `None` leaves a field alone; `queues` replaces the memberships.
    pub async fn update_agent(&self, id: i64, p: &AgentPatch) -> Result<Agent, StoreError> {
        let cur = self.agent(id).await?.ok_or(StoreError::NotFound("agent"))?;
        if p.display_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
            return Err(invalid("display_name", "must not be empty"));
        }
        let [uri, user, md5, sha] = p.sip.as_ref().unwrap_or(&cur.sip).columns();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE agents SET display_name = $1, role = $2, password_hash = $3, sip_uri = $4, \
             sip_username = $5, sip_ha1_md5 = $6, sip_ha1_sha256 = $7, skills = $8, active = $9 \
             WHERE id = $10",
        )
        .bind(
            p.display_name
                .clone()
                .unwrap_or(cur.display_name.clone())
                .trim()
                .to_string(),
        )
        .bind(p.role.unwrap_or(cur.role).as_str())
        .bind(p.password_hash.clone().unwrap_or(cur.password_hash.clone()))
        .bind(uri)
        .bind(user)
        .bind(md5)
        .bind(sha)
        .bind(
            serde_json::to_string(p.skills.as_ref().unwrap_or(&cur.skills))
                .unwrap_or_else(|_| "[]".into()),
        )
        .bind(i64::from(p.active.unwrap_or(cur.active)))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                invalid("sip_username", "already in use")
            }
            _ => StoreError::Db(e),
        })?;
        if let Some(queues) = &p.queues {
            sqlx::query("DELETE FROM agent_queues WHERE agent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            add_memberships(&mut tx, id, queues).await?;
        }
        if p.active == Some(false) {
            // A deactivated account is logged out everywhere at once.
            sqlx::query("DELETE FROM api_tokens WHERE agent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.agent(id).await?.ok_or(StoreError::NotFound("agent"))
    }

    /// Changes a queue; making it the default takes the flag from any other queue.
    pub async fn update_queue(&self, id: i64, p: &QueuePatch) -> Result<Queue, StoreError> {
        let cur = self
            .queues()
            .await?
            .into_iter()
            .find(|q| q.id == id)
            .ok_or(StoreError::NotFound("queue"))?;
        let next = NewQueue {
            name: p.name.clone().unwrap_or(cur.name),
            dialed_numbers: p.dialed_numbers.clone().unwrap_or(cur.dialed_numbers),
            ring_timeout_secs: p.ring_timeout_secs.unwrap_or(cur.ring_timeout_secs),
            max_wait_secs: p.max_wait_secs.unwrap_or(cur.max_wait_secs),
            wrap_up_secs: p.wrap_up_secs.unwrap_or(cur.wrap_up_secs),
            required_skills: p.required_skills.clone().unwrap_or(cur.required_skills),
            is_default: p.is_default.unwrap_or(cur.is_default),
            service_level_secs: p.service_level_secs.unwrap_or(cur.service_level_secs),
            active: p.active.unwrap_or(cur.active),
            // An empty string takes the link away.
            crm_url: match &p.crm_url {
                Some(u) if u.trim().is_empty() => None,
                Some(u) => Some(u.trim().to_string()),
                None => cur.crm_url,
            },
            // An empty string takes the music away (the profile's, or ringback, again).
            music: emptied(&p.music, &cur.music),
            survey_prompt: emptied(&p.survey_prompt, &cur.survey_prompt),
            survey_thanks: emptied(&p.survey_thanks, &cur.survey_thanks),
            survey_timeout_secs: p.survey_timeout_secs.unwrap_or(cur.survey_timeout_secs),
            // 0 goes back to the profile's retention.
            keep_recordings_days: match p.keep_recordings_days {
                Some(0) => None,
                Some(d) => Some(d),
                None => cur.keep_recordings_days,
            },
        };
        check_queue(&next)?;
        // Only a new file is checked: a queue whose file went missing can still be changed.
        for (field, new, old) in [
            ("music", &next.music, &cur.music),
            ("survey_prompt", &next.survey_prompt, &cur.survey_prompt),
            ("survey_thanks", &next.survey_thanks, &cur.survey_thanks),
        ] {
            if new != old {
                check_audio(field, new.as_ref()).await?;
            }
        }
        let mut tx = self.pool.begin().await?;
        if next.is_default && !cur.is_default {
            sqlx::query("UPDATE queues SET is_default = 0")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE queues SET name = $1, dialed_numbers = $2, ring_timeout_secs = $3, \
             max_wait_secs = $4, wrap_up_secs = $5, required_skills = $6, is_default = $7, \
             service_level_secs = $8, active = $9, crm_url = $10, music = $12, \
             survey_prompt = $13, survey_thanks = $14, survey_timeout_secs = $15, \
             keep_recordings_days = $16 WHERE id = $11",
        )
        .bind(next.name.trim().to_string())
        .bind(serde_json::to_string(&next.dialed_numbers).unwrap_or_else(|_| "[]".into()))
        .bind(next.ring_timeout_secs)
        .bind(next.max_wait_secs)
        .bind(next.wrap_up_secs)
        .bind(serde_json::to_string(&next.required_skills).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(next.is_default))
        .bind(next.service_level_secs)
        .bind(i64::from(next.active))
        .bind(next.crm_url.clone())
        .bind(id)
        .bind(next.music.clone())
        .bind(next.survey_prompt.clone())
        .bind(next.survey_thanks.clone())
        .bind(next.survey_timeout_secs)
        .bind(next.keep_recordings_days)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                invalid("name", "already in use")
            }
            _ => StoreError::Db(e),
        })?;
        tx.commit().await?;
        self.queues()
            .await?
            .into_iter()
            .find(|q| q.id == id)
            .ok_or(StoreError::NotFound("queue"))
    }
}

/// One audit log entry: who did what, to which record, when and from where.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Epoch milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: Option<String>,
    /// The client address (HTTP) the action came from, when known.
    pub source: Option<String>,
}

/// Changes to an agent (the password already hashed).
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
    pub sip: Option<SipTarget>,
    pub skills: Option<BTreeSet<String>>,
    pub queues: Option<BTreeSet<i64>>,
    pub active: Option<bool>,
}

/// Changes to a queue; `None` leaves a field alone.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    pub name: Option<String>,
    pub dialed_numbers: Option<Vec<String>>,
    pub ring_timeout_secs: Option<i64>,
    pub max_wait_secs: Option<i64>,
    pub wrap_up_secs: Option<i64>,
    pub required_skills: Option<Vec<String>>,
    pub is_default: Option<bool>,
    pub service_level_secs: Option<i64>,
    pub active: Option<bool>,
    /// A CRM link template; `""` removes it.
    pub crm_url: Option<String>,
    /// The queue's music (a WAV on the server); `""` removes it.
    pub music: Option<String>,
    /// The post-call survey's prompt (a WAV on the server); `""` removes the survey.
    pub survey_prompt: Option<String>,
    /// What the caller hears after their digit (a WAV on the server); `""` removes it.
    pub survey_thanks: Option<String>,
    /// Seconds after the prompt's end to press a digit (1–60).
    pub survey_timeout_secs: Option<i64>,
    /// Days to keep the queue's recordings (1–36500); 0: the profile's `[retention]`.
    pub keep_recordings_days: Option<i64>,
}

/// A patched text setting: `""` removes it, nothing leaves it as it was.
fn emptied(patch: &Option<String>, cur: &Option<String>) -> Option<String> {
    match patch {
        Some(m) if m.trim().is_empty() => None,
        Some(m) => Some(m.trim().to_string()),
        None => cur.clone(),
    }
}

fn check_queue(q: &NewQueue) -> Result<(), StoreError> {
    if q.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    for (field, v, min) in [
        ("ring_timeout_secs", q.ring_timeout_secs, 1),
        ("max_wait_secs", q.max_wait_secs, 1),
        ("wrap_up_secs", q.wrap_up_secs, 0),
        ("service_level_secs", q.service_level_secs, 1),
    ] {
        if !(min..=86_400).contains(&v) {
            return Err(invalid(field, format!("must be between {min} and 86400")));
        }
    }
    if let Some(u) = &q.crm_url {
        crate::crm::link::check(u).map_err(|why| invalid("crm_url", why))?;
    }
    if !(1..=60).contains(&q.survey_timeout_secs) {
        return Err(invalid("survey_timeout_secs", "must be between 1 and 60"));
    }
    if q.keep_recordings_days
        .is_some_and(|d| !(1..=36_500).contains(&d))
    {
        return Err(invalid(
            "keep_recordings_days",
            "must be between 1 and 36500 (0 or nothing: the profile's retention)",
        ));
    }
    if q.survey_thanks.is_some() && q.survey_prompt.is_none() {
        return Err(invalid(
            "survey_thanks",
            "needs a survey_prompt (a thanks without a survey is never played)",
        ));
    }
    Ok(())
}

/// A queue's music or survey file must play: refused when it is set, not found out by the
/// first caller. Decoded on a blocking thread (a long WAV must not stall the API's workers).
async fn check_audio(field: &'static str, file: Option<&String>) -> Result<(), StoreError> {
    let Some(m) = file.cloned() else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || crate::media::player::Clip::load(std::path::Path::new(&m)))
        .await
        .map_err(|e| invalid(field, e.to_string()))?
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}
