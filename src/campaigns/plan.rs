//! Who a campaign contacts on a given day and with what, and what happens after each try.
//! Pure: the store hands in candidates (customers its audience filters selected), the runner
//! hands in outcomes and `now`; the preview, the CLI and the scheduler all plan the same way.

use jiff::civil::Date;

use super::occasion::{self, Calendar, RecordDate};
use super::sms;
use super::spec::{Channel, Checked, Kind};
use super::template::Values;

/// A customer the audience selected, with what a message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub customer_id: i64,
    pub code: String,
    pub name: String,
    pub company: Option<String>,
    /// The assigned agent's display name.
    pub agent: Option<String>,
    pub birthday: Option<String>,
    pub lunar_birthday: bool,
    pub anniversary: Option<String>,
    /// The number to reach them on (E.164), mobile first.
    pub number: Option<String>,
    pub opt_out_sms: bool,
    pub opt_out_voice: bool,
}

/// How one customer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Sms,
    Voice,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Sms => "sms",
            Via::Voice => "voice",
        }
    }
    pub fn parse(s: &str) -> Via {
        if s == "voice" {
            Via::Voice
        } else {
            Via::Sms
        }
    }
}

/// One customer in a run's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Send {
        customer_id: i64,
        /// The once-only key ([`occasion`], or the lunar year's for a lunar birthday).
        occasion: String,
        number: String,
        via: Via,
        /// The SMS text (empty for a voice greeting).
        body: String,
        /// SMS parts it takes (0 for voice).
        parts: usize,
    },
    /// Selected, but not contacted; the reason says why.
    Skip { customer_id: i64, reason: String },
}

/// What a run is for: every campaign of a kind shares its occasion, so a customer is greeted
/// once per birthday whichever campaign gets there first. A broadcast's occasion is its own
/// run.
pub fn occasion(kind: Kind, campaign_id: i64, day: Date) -> String {
    match kind {
        Kind::Birthday => format!("birthday:{}", day.year()),
        Kind::Anniversary => format!("anniversary:{}", day.year()),
        Kind::Broadcast => format!("campaign:{campaign_id}:{day}"),
    }
}

/// Plans one candidate for the run of `day` of campaign `campaign_id`: `None` when today is
/// not their occasion.
pub fn plan(c: &Checked, campaign_id: i64, cand: &Candidate, day: Date) -> Option<Planned> {
    let today = (day.year() as i32, day.month() as u32, day.day() as u32);
    let mut key = occasion(c.spec.kind, campaign_id, day);
    let years = match c.spec.kind {
        Kind::Birthday => {
            let cal = if cand.lunar_birthday {
                Calendar::Lunar
            } else {
                Calendar::Gregorian
            };
            let d = RecordDate::parse_in(cand.birthday.as_deref()?, cal)?;
            if cal == Calendar::Lunar {
                key = format!("birthday:lunar-{}", occasion::lunar_year(today)?);
            }
            if !occasion::falls_on(d, cal, today) {
                return None;
            }
            occasion::years(d, today)
        }
        Kind::Anniversary => {
            let d = RecordDate::parse(cand.anniversary.as_deref()?)?;
            if !occasion::falls_on(d, Calendar::Gregorian, today) {
                return None;
            }
            match occasion::years(d, today) {
                Some(0) => return None, // the day they became a customer is no anniversary
                y => y,
            }
        }
        Kind::Broadcast => None,
    };
    let skip = |reason: &str| {
        Some(Planned::Skip {
            customer_id: cand.customer_id,
            reason: reason.to_string(),
        })
    };
    let Some(number) = cand.number.clone() else {
        return skip("no number to reach");
    };
    let via = match (c.spec.channel, cand.opt_out_sms, cand.opt_out_voice) {
        (Channel::Sms, true, _) => return skip("opted out of SMS"),
        (Channel::Voice, _, true) => return skip("opted out of voice calls"),
        (Channel::SmsThenVoice, true, true) => return skip("opted out of SMS and voice calls"),
        (Channel::Sms, false, _) => Via::Sms,
        (Channel::Voice, _, false) => Via::Voice,
        (Channel::SmsThenVoice, false, _) => Via::Sms,
        (Channel::SmsThenVoice, true, false) => Via::Voice,
    };
    let body = match (&c.template, via) {
        (Some(t), Via::Sms) => t.render(&Values {
            name: &cand.name,
            company: cand.company.as_deref(),
            agent: cand.agent.as_deref(),
            code: &cand.code,
            years,
        }),
        _ => String::new(),
    };
    let parts = if via == Via::Sms {
        sms::count_parts(&body)
    } else {
        0
    };
    if parts > c.spec.max_sms_parts as usize {
        return skip(&format!(
            "the message takes {parts} SMS parts, more than max_sms_parts ({})",
            c.spec.max_sms_parts
        ));
    }
    Some(Planned::Send {
        customer_id: cand.customer_id,
        occasion: key,
        number,
        via,
        body,
        parts,
    })
}

/// How one try went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken by the gateway (a 2xx to a MESSAGE) or the SMS center (`submit_sm_resp` OK,
    /// a delivery receipt may follow and is matched by `message_id`).
    Sent {
        message_id: Option<String>,
    },
    /// The SMS center's receipt says delivered.
    Delivered,
    /// The voice greeting was answered and played.
    Answered,
    Busy,
    NoAnswer,
    /// Worth another try later (a timeout, 408/480/503, throttling, no connection).
    Temporary(String),
    /// Not worth another try (404, a refused number, an SMS center's permanent error).
    Failed(String),
}

/// What to do with the attempt after a try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Finished with this status (`sent`, `delivered`, `answered`, `busy`, `no_answer`,
    /// `failed`) and reason.
    Done {
        status: &'static str,
        reason: Option<String>,
    },
    /// Try again at `at_ms` on the same channel.
    Retry { at_ms: i64, reason: String },
    /// Try again now by voice (SMS failed on an SMS-then-voice campaign).
    Fallback { reason: String },
}

/// Decides after try number `tries` (1 for the first) on `via`.
pub fn after_try(c: &Checked, via: Via, tries: u32, outcome: Outcome, now_ms: i64) -> Next {
    let retry = |status: &'static str, reason: String| {
        if tries <= c.spec.retries {
            let wait = (c.spec.retry_after_secs as i64) << (tries - 1).min(10);
            Next::Retry {
                at_ms: now_ms + wait * 1000,
                reason,
            }
        } else {
            Next::Done {
                status,
                reason: Some(reason),
            }
        }
    };
    let fallback = |reason: String, otherwise: Next| {
        if via == Via::Sms && c.spec.channel == Channel::SmsThenVoice && c.audio.is_some() {
            Next::Fallback { reason }
        } else {
            otherwise
        }
    };
    match outcome {
        Outcome::Sent { .. } => Next::Done {
            status: "sent",
            reason: None,
        },
        Outcome::Delivered => Next::Done {
            status: "delivered",
            reason: None,
        },
        Outcome::Answered => Next::Done {
            status: "answered",
            reason: None,
        },
        Outcome::Busy => retry("busy", "busy".into()),
        Outcome::NoAnswer => retry("no_answer", "no answer".into()),
        Outcome::Temporary(why) => match retry("failed", why.clone()) {
            done @ Next::Done { .. } => fallback(why, done),
            r => r,
        },
        Outcome::Failed(why) => fallback(
            why.clone(),
            Next::Done {
                status: "failed",
                reason: Some(why),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaigns::spec::CampaignSpec;

    fn checked(kind: &str, channel: &str, template: &str) -> Checked {
        let spec: CampaignSpec = serde_json::from_value(serde_json::json!({
            "name": "t", "kind": kind, "channel": channel, "template": template,
            "schedule": {"repeat": "daily", "at": "09:00", "tz": "Asia/Shanghai"},
            "retries": 2, "retry_after_secs": 60
        }))
        .expect("spec");
        spec.check(jiff::Timestamp::UNIX_EPOCH, std::path::Path::new("."))
            .expect("valid")
    }

    fn cand(id: i64, birthday: &str) -> Candidate {
        Candidate {
            customer_id: id,
            code: format!("C{id}"),
            name: "王小明".into(),
            company: None,
            agent: Some("Alice".into()),
            birthday: Some(birthday.into()),
            lunar_birthday: false,
            anniversary: Some("2016-12-02".into()),
            number: Some("+8613800138000".into()),
            opt_out_sms: false,
            opt_out_voice: false,
        }
    }

    fn day(s: &str) -> Date {
        s.parse().expect("date")
    }

    #[test]
    fn birthdays_today_get_their_greeting_and_others_nothing() {
        let c = checked("birthday", "sms", "{name}，{years}岁生日快乐！{agent}");
        let p = plan(&c, 9, &cand(1, "1990-12-02"), day("2026-12-02"));
        assert_eq!(
            p,
            Some(Planned::Send {
                customer_id: 1,
                number: "+8613800138000".into(),
                via: Via::Sms,
                body: "王小明，36岁生日快乐！Alice".into(),
                parts: 1,
                occasion: "birthday:2026".into(),
            })
        );
        assert_eq!(plan(&c, 9, &cand(1, "1990-12-03"), day("2026-12-02")), None);
        let mut lunar = cand(2, "1990-10-13");
        lunar.lunar_birthday = true; // 十月十三 2026 is 21 November
        assert!(matches!(
            plan(&c, 9, &lunar, day("2026-11-21")),
            Some(Planned::Send { occasion, .. }) if occasion == "birthday:lunar-2026"
        ));
        // A lunar 30th of the second month exists (any lunar month may have 30 days).
        assert!(RecordDate::parse_in("1990-02-30", Calendar::Lunar).is_some());
        assert!(RecordDate::parse("1990-02-30").is_none());
        assert!(plan(&c, 9, &lunar, day("2026-10-13")).is_none());
        assert_eq!(
            occasion(Kind::Birthday, 9, day("2026-12-02")),
            "birthday:2026"
        );
        assert_eq!(
            occasion(Kind::Broadcast, 9, day("2026-12-02")),
            "campaign:9:2026-12-02"
        );
    }

    #[test]
    fn opt_outs_and_missing_numbers_are_skipped_with_a_reason() {
        let c = checked("anniversary", "sms", "{years} years with us, {name}");
        let mut x = cand(3, "1990-01-01");
        x.opt_out_sms = true;
        assert!(matches!(
            plan(&c, 9, &x, day("2026-12-02")),
            Some(Planned::Skip { reason, .. }) if reason.contains("opted out")
        ));
        let mut y = cand(4, "1990-01-01");
        y.number = None;
        assert!(matches!(
            plan(&c, 9, &y, day("2026-12-02")),
            Some(Planned::Skip { .. })
        ));
        let mut c2 = checked("broadcast", "sms", "News");
        c2.spec.channel = Channel::SmsThenVoice;
        let mut z = cand(5, "1990-01-01");
        z.opt_out_sms = true;
        // Someone who opted out of SMS only is called instead.
        assert!(matches!(
            plan(&c2, 9, &z, day("2026-12-02")),
            Some(Planned::Send {
                via: Via::Voice,
                ..
            })
        ));
    }

    #[test]
    fn busy_is_retried_with_back_off_then_given_up() {
        let c = checked("broadcast", "sms", "x");
        let now = 1_000_000;
        assert_eq!(
            after_try(&c, Via::Voice, 1, Outcome::Busy, now),
            Next::Retry {
                at_ms: now + 60_000,
                reason: "busy".into()
            }
        );
        assert_eq!(
            after_try(&c, Via::Voice, 2, Outcome::Busy, now),
            Next::Retry {
                at_ms: now + 120_000,
                reason: "busy".into()
            }
        );
        assert_eq!(
            after_try(&c, Via::Voice, 3, Outcome::Busy, now),
            Next::Done {
                status: "busy",
                reason: Some("busy".into())
            }
        );
        assert_eq!(
            after_try(
                &c,
                Via::Sms,
                1,
                Outcome::Failed("404 Not Found".into()),
                now
            ),
            Next::Done {
                status: "failed",
                reason: Some("404 Not Found".into())
            }
        );
    }
}
