//! A campaign as a supervisor writes it (`POST /api/campaigns`), and its check: everything that
//! can be wrong with it is found when it is saved, named by field, not at 9 a.m. on the day it
//! runs. The store keeps the spec as JSON; [`Checked`] is the parsed form the runner works with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::schedule::{QuietHours, Schedule, ScheduleError};
use super::sms;
use super::template::{Template, Values};
use crate::media::player::Clip;
use crate::store::customers::Tier;

/// What a campaign greets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Customers whose birthday is today (in the campaign's zone; lunar when their record
    /// says so), each once a year.
    Birthday,
    /// Customers who became customers on this day in an earlier year, each once a year.
    Anniversary,
    /// Everyone the audience selects, once per run.
    Broadcast,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Birthday => "birthday",
            Kind::Anniversary => "anniversary",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// How customers are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    /// A call that plays the campaign's recording.
    Voice,
    /// SMS, and a voice call when the SMS cannot be delivered (or the customer opted out of
    /// SMS only).
    SmsThenVoice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::SmsThenVoice => "sms_then_voice",
        }
    }
    pub fn sends_sms(self) -> bool {
        self != Channel::Voice
    }
    pub fn calls(self) -> bool {
        self != Channel::Sms
    }
}

/// Who a campaign is for. Every filter given must hold; none given selects every customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Audience {
    /// Any of these tiers.
    pub tiers: Vec<Tier>,
    /// Any of these tags.
    pub tags: Vec<String>,
    /// The customer's number starts with this E.164 prefix (`+8610`: Beijing).
    pub region: Option<String>,
    pub assigned_agent_id: Option<i64>,
    /// Not contacted since this date (`YYYY-MM-DD`, in the campaign's zone).
    pub last_contact_before: Option<String>,
    /// A saved list: only these customers.
    pub customer_ids: Vec<i64>,
}

/// When a campaign runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub repeat: Repeat,
    /// `HH:MM` for a daily run; an RFC 3339 instant with its offset for a single run.
    pub at: String,
    /// IANA time zone, such as `Asia/Shanghai`: the day whose occasions are greeted and the
    /// clock of `at` and of the quiet hours.
    pub tz: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    Daily,
    Once,
}

/// A campaign as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    pub kind: Kind,
    pub channel: Channel,
    /// The SMS text, with `{name}`, `{company}`, `{agent}`, `{code}`, `{years}` (any language).
    #[serde(default)]
    pub template: Option<String>,
    /// The recording a voice greeting plays: a WAV on the server (PCM at any rate, mono or
    /// stereo, or G.711), converted to G.711 once.
    #[serde(default)]
    pub audio: Option<String>,
    #[serde(default)]
    pub audience: Audience,
    pub schedule: ScheduleSpec,
    /// A window of local time in which nothing is sent (`21:00-08:00`).
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// Messages or calls started per second, at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Voice greetings in progress at once, at most.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// How long a voice greeting rings before it counts as not answered.
    #[serde(default = "default_ring_secs")]
    pub ring_secs: u32,
    /// Further tries after busy, no answer or a temporary failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; each later one waits twice as long.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u32,
    /// The longest SMS, in parts of a concatenated message.
    #[serde(default = "default_max_parts")]
    pub max_sms_parts: u32,
}

fn default_rate() -> u32 {
    20
}
fn default_max_calls() -> u32 {
    10
}
fn default_ring_secs() -> u32 {
    30
}
fn default_retries() -> u32 {
    2
}
fn default_retry_after() -> u32 {
    600
}
fn default_max_parts() -> u32 {
    4
}

/// A refusal, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SpecError {
    pub field: &'static str,
    pub why: String,
}

fn refuse(field: &'static str, why: impl Into<String>) -> SpecError {
    SpecError {
        field,
        why: why.into(),
    }
}

impl From<ScheduleError> for SpecError {
    fn from(e: ScheduleError) -> SpecError {
        refuse(e.field(), e.to_string())
    }
}

/// The longest greeting recording: a greeting, not a programme.
pub const MAX_AUDIO: Duration = Duration::from_secs(300);

/// A campaign that passed its check, ready to plan and send.
#[derive(Debug, Clone)]
pub struct Checked {
    pub spec: CampaignSpec,
    pub template: Option<Template>,
    pub schedule: Schedule,
    pub quiet: Option<QuietHours>,
    pub audio: Option<PathBuf>,
    /// The recording, read and converted once: every greeting of the campaign plays it.
    pub clip: Option<Arc<Clip>>,
}

/// Values of a typical length, to tell at save time whether a template fits its SMS parts.
const SAMPLE: Values<'static> = Values {
    name: "Customer Name",
    company: Some("Company Name Ltd"),
    agent: Some("Agent Name"),
    code: "C000000",
    years: Some(10),
};

impl CampaignSpec {
    /// Checks everything that can be checked before the day: fields, template, zone,
    /// schedule (a single run in the past is refused), quiet hours, the SMS length and the
    /// recording (read and converted now). `now` decides what is past; `base` is where a
    /// relative audio path is found.
    pub fn check(self, now: Timestamp, base: &Path) -> Result<Checked, SpecError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(refuse("name", "1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(refuse("name", "no control characters"));
        }
        let template = match (&self.template, self.channel.sends_sms()) {
            (Some(t), _) => {
                Some(Template::parse(t).map_err(|e| refuse("template", e.to_string()))?)
            }
            (None, true) => return Err(refuse("template", "an SMS campaign needs its text")),
            (None, false) => None,
        };
        if !(1..=10).contains(&self.max_sms_parts) {
            return Err(refuse("max_sms_parts", "1 to 10"));
        }
        if let (Some(t), true) = (&template, self.channel.sends_sms()) {
            let parts = sms::count_parts(&t.render(&SAMPLE));
            if parts > self.max_sms_parts as usize {
                return Err(refuse(
                    "template",
                    format!(
                        "with typical names the message takes {parts} SMS parts; max_sms_parts is {}",
                        self.max_sms_parts
                    ),
                ));
            }
        }
        let audio = match (&self.audio, self.channel.calls()) {
            (Some(a), true) => {
                let p = Path::new(a);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                let bytes = std::fs::read(&p)
                    .map_err(|e| refuse("audio", format!("{}: {e}", p.display())))?;
                let clip = Clip::from_wav_at_most(&bytes, &p.display().to_string(), MAX_AUDIO)
                    .map_err(|e| refuse("audio", e.to_string()))?;
                Some((p, Arc::new(clip)))
            }
            (None, true) => return Err(refuse("audio", "a voice campaign needs its recording")),
            (Some(_), false) => return Err(refuse("audio", "an SMS campaign plays no recording")),
            (None, false) => None,
        };
        let schedule = match self.schedule.repeat {
            Repeat::Daily => Schedule::daily(&self.schedule.at, &self.schedule.tz)?,
            Repeat::Once => Schedule::once(&self.schedule.at, &self.schedule.tz, now)?,
        };
        let quiet = self
            .quiet_hours
            .as_deref()
            .map(QuietHours::parse)
            .transpose()?;
        if !(1..=1000).contains(&self.rate_per_second) {
            return Err(refuse("rate_per_second", "1 to 1000"));
        }
        if !(1..=500).contains(&self.max_calls) {
            return Err(refuse("max_calls", "1 to 500"));
        }
        if !(5..=120).contains(&self.ring_secs) {
            return Err(refuse("ring_secs", "5 to 120"));
        }
        if self.retries > 10 {
            return Err(refuse("retries", "at most 10"));
        }
        if !(10..=86_400).contains(&self.retry_after_secs) {
            return Err(refuse("retry_after_secs", "10 to 86400"));
        }
        let a = &self.audience;
        if let Some(r) = &a.region {
            let digits = r.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || r.len() > 16 {
                return Err(refuse("audience.region", "an E.164 prefix such as +8610"));
            }
        }
        if let Some(d) = &a.last_contact_before {
            if d.parse::<jiff::civil::Date>().is_err() {
                return Err(refuse("audience.last_contact_before", "a YYYY-MM-DD date"));
            }
        }
        if a.customer_ids.len() > 10_000 {
            return Err(refuse(
                "audience.customer_ids",
                "at most 10,000 customers in a saved list; select larger groups by tag",
            ));
        }
        if a.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(refuse("audience.tags", "a tag cannot be empty"));
        }
        let mut spec = self;
        spec.name = spec.name.trim().to_string();
        Ok(Checked {
            spec,
            template,
            schedule,
            quiet,
            clip: audio.as_ref().map(|(_, c)| c.clone()),
            audio: audio.map(|(p, _)| p),
        })
    }
}

impl Checked {
    /// Re-reads a saved spec (the store keeps only specs that passed [`CampaignSpec::check`];
    /// a single run already past is no error here).
    pub fn load(json: &str, base: &Path) -> Result<Checked, SpecError> {
        let spec: CampaignSpec =
            serde_json::from_str(json).map_err(|e| refuse("spec", e.to_string()))?;
        let far_past = Timestamp::UNIX_EPOCH;
        spec.check(far_past, base)
    }

    /// The local-time `[start, end)` of "not contacted since" as epoch milliseconds.
    pub fn last_contact_before_ms(&self) -> Option<i64> {
        let d = self
            .spec
            .audience
            .last_contact_before
            .as_deref()?
            .parse::<jiff::civil::Date>()
            .ok()?;
        let z = d
            .to_datetime(jiff::civil::Time::midnight())
            .to_zoned_datetime(self.schedule.time_zone().clone())
            .ok()?;
        Some(z.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> CampaignSpec {
        serde_json::from_value(json).expect("a spec")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "Birthdays",
            "kind": "birthday",
            "channel": "sms",
            "template": "生日快乐，{name}！",
            "schedule": {"repeat": "daily", "at": "09:00", "tz": "Asia/Shanghai"},
            "quiet_hours": "21:00-08:00"
        })
    }

    fn field_of(json: serde_json::Value) -> &'static str {
        let now: Timestamp = "2026-12-02T00:00:00Z".parse().expect("now");
        spec(json)
            .check(now, Path::new("."))
            .expect_err("refused")
            .field
    }

    #[test]
    fn a_good_campaign_passes_with_its_defaults() {
        let now: Timestamp = "2026-12-02T00:00:00Z".parse().expect("now");
        let c = spec(base()).check(now, Path::new(".")).expect("valid");
        assert_eq!(c.spec.rate_per_second, 20);
        assert_eq!(c.spec.retries, 2);
        assert!(c.quiet.is_some());
        assert!(c.template.is_some());
    }

    #[test]
    fn each_refusal_names_its_field() {
        let mut j = base();
        j["template"] = "Dear {nmae}".into();
        assert_eq!(field_of(j), "template");
        let mut j = base();
        j["schedule"]["tz"] = "Mars/Olympus".into();
        assert_eq!(field_of(j), "schedule.tz");
        let mut j = base();
        j["schedule"] = serde_json::json!({"repeat": "once", "at": "2020-01-01T09:00:00+08:00", "tz": "Asia/Shanghai"});
        assert_eq!(field_of(j), "schedule.at");
        let mut j = base();
        j["quiet_hours"] = "late".into();
        assert_eq!(field_of(j), "quiet_hours");
        let mut j = base();
        j["template"] = "长".repeat(100).into();
        j["max_sms_parts"] = 1.into();
        assert_eq!(field_of(j), "template");
        let mut j = base();
        j["channel"] = "voice".into();
        assert_eq!(field_of(j), "audio");
        let mut j = base();
        j["channel"] = "voice".into();
        j["audio"] = "/nonexistent/greeting.wav".into();
        assert_eq!(field_of(j), "audio");
        let mut j = base();
        j["audience"] = serde_json::json!({"region": "8610"});
        assert_eq!(field_of(j), "audience.region");
        let mut j = base();
        j["rate_per_second"] = 0.into();
        assert_eq!(field_of(j), "rate_per_second");
        let mut j = base();
        j.as_object_mut().expect("object").remove("template");
        assert_eq!(field_of(j), "template");
    }
}
