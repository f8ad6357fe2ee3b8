//! Contact logs (`calls`) and recordings. A call's row is written when it is offered and
//! completed at hang-up, so a crash in between leaves a row the restart can finish.

use sqlx::Row;

use super::{Store, StoreError};

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
}

impl CallDisposition {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDisposition::Answered => "answered",
            CallDisposition::Missed => "missed",
            CallDisposition::Abandoned => "abandoned",
            CallDisposition::Rejected => "rejected",
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
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    pub disposition: CallDisposition,
    pub recording_id: Option<i64>,
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
        let row = sqlx::query(
            "INSERT INTO calls (sip_call_id, direction, caller_raw, caller_e164, dialed, \
             customer_id, offered_at, created_by) \
             VALUES ($1, 'inbound', $2, $3, $4, $5, $6, 'screenpop') RETURNING id",
        )
        .bind(c.sip_call_id.clone())
        .bind(c.caller_raw.clone())
        .bind(c.caller_e164.clone())
        .bind(c.dialed.clone())
        .bind(c.customer_id)
        .bind(c.offered_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Completes a contact log: times, wait and talk seconds, disposition, recording.
    pub async fn finish_call(&self, id: i64, e: &EndedCall) -> Result<(), StoreError> {
        let offered: i64 = sqlx::query("SELECT offered_at FROM calls WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("call"))?
            .try_get("offered_at")?;
        let wait_secs = (e.answered_at.unwrap_or(e.ended_at) - offered).max(0) / 1000;
        let talk_secs = e
            .answered_at
            .map(|a| (e.ended_at - a).max(0) / 1000)
            .unwrap_or(0);
        sqlx::query(
            "UPDATE calls SET answered_at = $1, ended_at = $2, wait_secs = $3, talk_secs = $4, \
             disposition = $5, recording_id = $6 WHERE id = $7",
        )
        .bind(e.answered_at)
        .bind(e.ended_at)
        .bind(wait_secs)
        .bind(talk_secs)
        .bind(e.disposition.as_str())
        .bind(e.recording_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a finished recording; the same path twice returns the first row's id.
    pub async fn insert_recording(&self, r: &NewRecording) -> Result<i64, StoreError> {
        if let Some(row) = sqlx::query("SELECT id FROM recordings WHERE path = $1")
            .bind(r.path.clone())
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(row.try_get("id")?);
        }
        let row = sqlx::query(
            "INSERT INTO recordings (path, duration_ms, size_bytes, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(r.path.clone())
        .bind(r.duration_ms)
        .bind(r.size_bytes)
        .bind(r.sha256.clone())
        .bind(super::now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
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
