//! The call record kept beside each recording (`<id>.json`), and the one owner of how a call's
//! end reaches its contact log.
//!
//! The record is written when the call is answered (provisional, `complete: false`, before the
//! recording starts) and again when it ends. After a crash the restart reads the provisional
//! record back, completes it from the repaired recording and finishes the contact log from it.
//! Both directions use this one typed struct, so renaming a field cannot silently break crash
//! recovery; and [`CallRecord::ended_call`] is the only place that turns how a call ended into
//! what the contact log stores.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::ids::{CallKey, ContactLogId, SipCallId};
use crate::media::relay::{DtmfDigit, LegId, RelayStats};
use crate::sip::caller_id::CallerId;
use crate::store::calls::{EndedCall, NewRecording, OfferedCall};

pub use crate::events::payload::Disposition;

/// Who ended the call: one of its legs, or a crash of screenpop (set by the restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Agent,
    Crash,
    /// The agent's desktop or the API (`POST /api/calls/{id}/hangup`).
    Desk,
}

/// One agent who had the call: when they answered and when they left it, in milliseconds
/// from the call's answer (a transferred call lists each agent in turn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpan {
    pub agent_id: i64,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// A stretch of the call the caller spent on hold, in milliseconds from the answer (the
/// recording's time zero), so a player can mark it on the recording's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSpan {
    pub start_ms: u64,
    pub end_ms: u64,
    /// `desk` or `phone`.
    pub by: String,
}

impl From<LegId> for EndedBy {
    fn from(l: LegId) -> EndedBy {
        match l {
            LegId::Caller => EndedBy::Caller,
            LegId::Agent => EndedBy::Agent,
        }
    }
}

/// The call's record, beside its recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// screenpop's id of the call.
    pub id: CallKey,
    /// The caller leg's SIP Call-ID.
    pub call_id: SipCallId,
    /// The last agent leg's SIP Call-ID.
    pub agent_call_id: SipCallId,
    pub trunk: String,
    pub caller: CallerId,
    pub dialed: String,
    #[serde(default)]
    pub agent: Option<String>,
    /// The agent (from the store) who answered or last rang, and the queue.
    #[serde(default)]
    pub agent_id: Option<i64>,
    #[serde(default)]
    pub queue_id: Option<i64>,
    pub disposition: Disposition,
    pub final_status: u16,
    pub offered_at_ms: u64,
    #[serde(default)]
    pub answered_at_ms: Option<u64>,
    pub ended_at_ms: u64,
    pub duration_ms: u64,
    #[serde(default)]
    pub ended_by: Option<EndedBy>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub recording_duration_ms: Option<u64>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub dtmf: Vec<DtmfDigit>,
    /// When the caller was on hold.
    #[serde(default)]
    pub holds: Vec<HoldSpan>,
    /// Every agent who had the call, in turn, with their time on it.
    #[serde(default)]
    pub agents: Vec<AgentSpan>,
    #[serde(default)]
    pub media: Option<RelayStats>,
    /// Ended by screenpop because a leg stopped sending RTP (see `rtp_timeout_secs`).
    #[serde(default)]
    pub rtp_timeout: bool,
    /// Ended by screenpop because the session's refresher went silent (RFC 4028).
    #[serde(default)]
    pub session_expired: bool,
    /// The caller's number in E.164, when it parses.
    #[serde(default)]
    pub caller_e164: Option<String>,
    /// The matched (or created) customer.
    #[serde(default)]
    pub customer_id: Option<i64>,
    /// Every customer on the caller's number.
    #[serde(default)]
    pub candidates: Vec<i64>,
    /// The contact log row in the store.
    #[serde(default)]
    pub log_id: Option<ContactLogId>,
    /// A call screenpop placed (click-to-dial): the caller fields describe the number called.
    #[serde(default)]
    pub outbound: bool,
    /// False in the provisional record written at answer; a restart after a crash completes
    /// it from the repaired recording.
    #[serde(default)]
    pub complete: bool,
    /// The post-call survey, when the caller was asked.
    #[serde(default)]
    pub survey: Option<SurveyRecord>,
}

/// The caller was asked the post-call survey: when (the agent's talk ends there), and the
/// digit they pressed, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyRecord {
    /// Epoch milliseconds.
    pub offered_at_ms: u64,
    pub score: Option<u8>,
}

/// A recording as it ended up on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFile {
    pub path: String,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub sha256: String,
}

impl CallRecord {
    /// Reads a record; `None` (logged) when it is missing or does not parse.
    pub fn read(path: &Path) -> Option<CallRecord> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "call record not read");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "call record does not parse");
                None
            }
        }
    }

    /// Writes the record (pretty JSON), creating its folder.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// Notes the finished recording.
    pub fn set_recording(&mut self, f: &RecordedFile) {
        self.path = Some(f.path.clone());
        self.sha256 = Some(f.sha256.clone());
        self.recording_duration_ms = Some(f.duration_ms);
        self.size_bytes = Some(f.size_bytes);
    }

    /// The provisional record of a call a crash interrupted, completed from its repaired
    /// recording: answered (only answered calls are recorded), ended by the crash, as long as
    /// the audio that reached the disk.
    pub fn recovered(mut self, f: &RecordedFile) -> CallRecord {
        self.set_recording(f);
        self.complete = true;
        self.ended_by = Some(EndedBy::Crash);
        self.disposition = Disposition::Answered;
        self.duration_ms = f.duration_ms;
        if let Some(a) = self.answered_at_ms {
            self.ended_at_ms = a + f.duration_ms;
        }
        self
    }

    /// The recording row this record names, if it has one.
    pub fn new_recording(&self) -> Option<NewRecording> {
        Some(NewRecording {
            path: self.path.clone()?,
            duration_ms: self.recording_duration_ms.unwrap_or(0) as i64,
            size_bytes: self.size_bytes.unwrap_or(0) as i64,
            sha256: self.sha256.clone()?,
        })
    }

    /// The contact log row as it is written at offer, for the call's end to write should it
    /// be missing ([`crate::store::Store::write_call_row`]).
    pub fn offered_call(&self) -> OfferedCall {
        OfferedCall {
            sip_call_id: self.call_id.to_string(),
            caller_raw: self.caller.raw.clone(),
            caller_e164: self.caller_e164.clone(),
            dialed: self.dialed.clone(),
            customer_id: self.customer_id,
            offered_at: self.offered_at_ms as i64,
        }
    }

    /// What the contact log gets when the call ends (normally or through crash recovery).
    pub fn ended_call(&self, recording_id: Option<i64>) -> EndedCall {
        EndedCall {
            agent_id: self.agent_id,
            queue_id: self.queue_id,
            answered_at: self.answered_at_ms.map(|a| a as i64),
            ended_at: self.ended_at_ms as i64,
            disposition: self.disposition.for_contact_log(),
            recording_id,
            survey_offered_at: self.survey.map(|s| s.offered_at_ms as i64),
            survey_score: self.survey.and_then(|s| s.score).map(i64::from),
            recording_failed: false,
        }
    }

    /// The agent's talk time: from the answer to the end, or to the survey (the caller alone
    /// with the survey is not talk).
    pub fn talk_ms(&self) -> u64 {
        let Some(answered) = self.answered_at_ms else {
            return 0;
        };
        let end = self.survey.map_or(self.ended_at_ms, |s| s.offered_at_ms);
        end.saturating_sub(answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::calls::CallDisposition;

    fn provisional() -> CallRecord {
        CallRecord {
            id: "1-a".into(),
            call_id: "sip-1".into(),
            agent_call_id: "sip-1b".into(),
            trunk: "t".into(),
            caller: CallerId {
                raw: "<sip:+15551230001@x>".into(),
                number: Some("+15551230001".into()),
                name: None,
                withheld: false,
            },
            dialed: "100".into(),
            agent: None,
            agent_id: Some(3),
            queue_id: Some(1),
            disposition: Disposition::Answered,
            final_status: 200,
            offered_at_ms: 1_000,
            answered_at_ms: Some(2_000),
            ended_at_ms: 2_000,
            duration_ms: 0,
            ended_by: None,
            path: Some("rec/1-a.wav".into()),
            sha256: None,
            recording_duration_ms: None,
            size_bytes: None,
            dtmf: Vec::new(),
            holds: Vec::new(),
            agents: Vec::new(),
            media: None,
            rtp_timeout: false,
            session_expired: false,
            caller_e164: Some("+15551230001".into()),
            customer_id: Some(9),
            candidates: vec![9],
            log_id: Some(ContactLogId::new(42)),
            outbound: false,
            complete: false,
            survey: None,
        }
    }

    #[test]
    fn a_provisional_record_round_trips_and_recovers_into_the_contact_log() {
        let dir = std::env::temp_dir().join(format!("sp-record-{}", std::process::id()));
        let path = dir.join("x/1-a.json");
        provisional().write(&path).expect("write");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"disposition\": \"answered\""), "{text}");
        let back = CallRecord::read(&path).expect("read back");
        let file = RecordedFile {
            path: "rec/1-a.wav".into(),
            duration_ms: 5_000,
            size_bytes: 80_044,
            sha256: "ab".into(),
        };
        let done = back.recovered(&file);
        assert!(done.complete);
        assert_eq!(done.ended_by, Some(EndedBy::Crash));
        let ended = done.ended_call(Some(7));
        assert_eq!(ended.ended_at, 7_000);
        assert_eq!(ended.answered_at, Some(2_000));
        assert_eq!(ended.disposition, CallDisposition::Answered);
        assert_eq!(
            (ended.agent_id, ended.queue_id, ended.recording_id),
            (Some(3), Some(1), Some(7))
        );
        let rec = done.new_recording().expect("recording row");
        assert_eq!((rec.size_bytes, rec.duration_ms), (80_044, 5_000));
        // What the record says on disk after recovery is what a reader sees.
        done.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"ended_by\": \"crash\""), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_that_does_not_parse_is_none_and_every_end_maps_once() {
        let dir = std::env::temp_dir().join(format!("sp-record-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, b"{\"id\": 1}").unwrap();
        assert!(CallRecord::read(&path).is_none());
        assert!(CallRecord::read(&dir.join("missing.json")).is_none());
        for (d, c) in [
            (Disposition::Answered, CallDisposition::Answered),
            (Disposition::Missed, CallDisposition::Missed),
            (Disposition::Abandoned, CallDisposition::Abandoned),
            (Disposition::Rejected, CallDisposition::Rejected),
            (Disposition::Failed, CallDisposition::Failed),
        ] {
            assert_eq!(d.for_contact_log(), c);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
