//! The post-call satisfaction survey, as a sans-IO machine a [`super::call::Call`] drives.
//!
//! When the agent hangs up first in a queue with a survey, the call keeps the caller: the
//! prompt plays once, one digit from 1 to 9 (RFC 4733 events or SIP INFO) is the score, a
//! thanks plays, and the call ends. A caller who presses nothing within the timeout after the
//! prompt is hung up on without a score; a digit during the prompt counts (callers who know
//! the survey need not wait for it). It is fed `now` and never reads a clock, so the call's
//! unit tests drive it on fake time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::player::Clip;

/// How long past a clip's length a missing "played" report is waited for before the survey
/// moves on by itself (the report travels from the media thread and cannot be lost, but a
/// survey must never keep a caller on the line for ever).
const PLAY_MARGIN: Duration = Duration::from_secs(2);

/// A clip's end is never reported more than this much before its length has passed (the
/// player's packets are paced by the clock; a late wake-up only sends them later).
const EARLY: Duration = Duration::from_millis(250);

/// How early a clip from `since` to `ends` may report its end: [`EARLY`], or half of a
/// shorter clip (so a report at its very start is still told apart).
fn early(since: Instant, ends: Instant) -> Duration {
    EARLY.min((ends - since) / 2)
}

/// A queue's survey, as its calls get it from the ACD (the files decoded once).
#[derive(Debug, Clone)]
pub struct SurveySetup {
    pub prompt: Arc<Clip>,
    pub thanks: Option<Arc<Clip>>,
    /// How long after the prompt's end a digit is waited for.
    pub timeout: Duration,
}

/// What the call does for the survey.
#[derive(Debug, Clone)]
pub enum Step {
    /// Play this clip once to the caller (in place of anything playing).
    Play(Arc<Clip>),
    /// The survey is over: hang up on the caller.
    HangUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The prompt plays; `until` is its length and a margin.
    Prompt { until: Instant },
    /// The prompt is over; a digit is waited for until `until`.
    Waiting { until: Instant },
    /// The thanks plays after the score: it started at `since` and ends at `ends`.
    Thanks {
        since: Instant,
        ends: Instant,
        until: Instant,
    },
    /// Over: the call hangs up (or the caller did).
    Done,
}

/// One caller's survey.
#[derive(Debug, Clone)]
pub struct Survey {
    setup: Arc<SurveySetup>,
    stage: Stage,
    /// When the prompt started.
    started: Instant,
    score: Option<u8>,
}

impl Survey {
    /// Starts the survey: the prompt plays.
    pub fn start(now: Instant, setup: Arc<SurveySetup>) -> (Survey, Step) {
        let play = Step::Play(setup.prompt.clone());
        let until = now + setup.prompt.duration() + PLAY_MARGIN;
        (
            Survey {
                setup,
                stage: Stage::Prompt { until },
                started: now,
                score: None,
            },
            play,
        )
    }

    /// When the prompt started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The caller's score, once pressed.
    pub fn score(&self) -> Option<u8> {
        self.score
    }

    /// Still running (the caller is on the line for it).
    pub fn is_running(&self) -> bool {
        self.stage != Stage::Done
    }

    /// When [`Survey::on_timeout`] wants to run.
    pub fn deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Prompt { until } | Stage::Waiting { until } | Stage::Thanks { until, .. } => {
                Some(until)
            }
            Stage::Done => None,
        }
    }

    /// The clip played to the caller is over.
    pub fn on_played(&mut self, now: Instant) -> Option<Step> {
        match self.stage {
            Stage::Prompt { .. } => {
                self.stage = Stage::Waiting {
                    until: now + self.setup.timeout,
                };
                None
            }
            // The prompt's own report can cross the digit (it ended as the key was pressed):
            // a report long before the thanks can have played is that one, not the thanks'.
            Stage::Thanks { since, ends, .. } if now + early(since, ends) < ends => None,
            Stage::Thanks { .. } => self.finish(),
            Stage::Waiting { .. } | Stage::Done => None,
        }
    }

    /// A digit from the caller: the first from 1 to 9 while the prompt plays or after it is
    /// the score. Others (0, *, #, a second press) are ignored.
    pub fn on_digit(&mut self, now: Instant, digit: char) -> Option<Step> {
        if !matches!(self.stage, Stage::Prompt { .. } | Stage::Waiting { .. }) {
            return None;
        }
        let score = digit.to_digit(10).filter(|d| (1..=9).contains(d))?;
        self.score = Some(score as u8);
        match self.setup.thanks.clone() {
            Some(thanks) => {
                let ends = now + thanks.duration();
                self.stage = Stage::Thanks {
                    since: now,
                    ends,
                    until: ends + PLAY_MARGIN,
                };
                Some(Step::Play(thanks))
            }
            None => self.finish(),
        }
    }

    /// A deadline passed: the prompt's report is overdue (wait for the digit anyway), the
    /// caller pressed nothing in time, or the thanks' report is overdue.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Step> {
        match self.stage {
            Stage::Prompt { until } if now >= until => self.on_played(now),
            Stage::Waiting { until } | Stage::Thanks { until, .. } if now >= until => self.finish(),
            _ => None,
        }
    }

    /// The caller hung up: nothing more happens.
    pub fn abandon(&mut self) {
        self.stage = Stage::Done;
    }

    fn finish(&mut self) -> Option<Step> {
        self.stage = Stage::Done;
        Some(Step::HangUp)
    }
}

/// The digit of a SIP INFO (the fallback for gateways that send no RFC 4733 events):
/// `application/dtmf-relay` (`Signal=4`, Cisco and most phones) or `application/dtmf` (`4`).
/// `None` for any other body.
pub fn info_digit(content_type: Option<&str>, body: &[u8]) -> Option<char> {
    let ct = content_type?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let value = match ct.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    let mut chars = value.chars();
    let c = chars.next()?;
    // Events 10 and 11 are * and # (RFC 4733 §3.2), as some phones send them.
    match (c, chars.as_str()) {
        (c, "") if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') => Some(c),
        ('1', "0") => Some('*'),
        ('1', "1") => Some('#'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(thanks: bool) -> Arc<SurveySetup> {
        Arc::new(SurveySetup {
            // 1 s of silence each.
            prompt: Arc::new(Clip::from_pcm(vec![0; 8000])),
            thanks: thanks.then(|| Arc::new(Clip::from_pcm(vec![0; 4000]))),
            timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn a_digit_after_the_prompt_is_the_score_then_thanks_then_hang_up() {
        let t0 = Instant::now();
        let (mut s, step) = Survey::start(t0, setup(true));
        assert!(matches!(step, Step::Play(ref c) if c.duration() == Duration::from_secs(1)));
        assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(3)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(s.on_played(t1).is_none());
        assert_eq!(s.deadline(), Some(t1 + Duration::from_secs(5)));
        assert!(s.on_digit(t1, '0').is_none(), "0 is no score");
        assert!(s.on_digit(t1, '#').is_none());
        let t2 = t1 + Duration::from_secs(2);
        assert!(
            matches!(s.on_digit(t2, '4'), Some(Step::Play(ref c)) if c.duration() == Duration::from_millis(500))
        );
        assert_eq!(s.score(), Some(4));
        assert!(s.on_digit(t2, '5').is_none(), "one digit only");
        assert_eq!(s.score(), Some(4));
        assert!(matches!(
            s.on_played(t2 + Duration::from_millis(500)),
            Some(Step::HangUp)
        ));
        assert!(!s.is_running());
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn the_prompts_report_crossing_the_digit_does_not_cut_the_thanks_short() {
        let t0 = Instant::now();
        let (mut s, _) = Survey::start(t0, setup(true));
        let t = t0 + Duration::from_secs(1);
        assert!(matches!(s.on_digit(t, '7'), Some(Step::Play(_))));
        // The prompt ended just as the key was pressed: its report comes after the digit.
        assert!(s.on_played(t + Duration::from_millis(5)).is_none());
        assert!(s.is_running());
        // The thanks' own report (500 ms long) ends it.
        assert!(matches!(
            s.on_played(t + Duration::from_millis(520)),
            Some(Step::HangUp)
        ));
        assert_eq!(s.score(), Some(7));
    }

    #[test]
    fn a_digit_during_the_prompt_counts_and_without_thanks_the_call_ends_at_once() {
        let t0 = Instant::now();
        let (mut s, _) = Survey::start(t0, setup(false));
        let t = t0 + Duration::from_millis(300);
        assert!(matches!(s.on_digit(t, '9'), Some(Step::HangUp)));
        assert_eq!(s.score(), Some(9));
        // The prompt's late report changes nothing.
        assert!(s.on_played(t).is_none());
    }

    #[test]
    fn silence_ends_the_survey_without_a_score_even_when_no_report_comes() {
        let t0 = Instant::now();
        let (mut s, _) = Survey::start(t0, setup(true));
        // The prompt's report never comes: its length and margin stand in for it.
        let t = t0 + Duration::from_secs(3);
        assert!(s.on_timeout(t - Duration::from_millis(1)).is_none());
        assert!(s.on_timeout(t).is_none());
        assert_eq!(s.deadline(), Some(t + Duration::from_secs(5)));
        assert!(s.on_timeout(t + Duration::from_secs(4)).is_none());
        assert!(matches!(
            s.on_timeout(t + Duration::from_secs(5)),
            Some(Step::HangUp)
        ));
        assert_eq!(s.score(), None);
        assert!(
            s.on_digit(t + Duration::from_secs(6), '3').is_none(),
            "too late"
        );
        assert_eq!(s.score(), None);
    }

    #[test]
    fn a_caller_who_leaves_ends_it() {
        let t0 = Instant::now();
        let (mut s, _) = Survey::start(t0, setup(true));
        s.abandon();
        assert!(!s.is_running());
        assert!(s.on_digit(t0, '5').is_none());
        assert!(s.on_timeout(t0 + Duration::from_secs(60)).is_none());
    }

    #[test]
    fn info_bodies_give_their_digit() {
        let relay = Some("application/dtmf-relay");
        assert_eq!(
            info_digit(relay, b"Signal=4\r\nDuration=160\r\n"),
            Some('4')
        );
        assert_eq!(info_digit(relay, b"signal= 7\nDuration=250"), Some('7'));
        assert_eq!(info_digit(relay, b"Signal=11\r\n"), Some('#'));
        assert_eq!(info_digit(relay, b"Duration=160\r\n"), None);
        assert_eq!(info_digit(relay, b"Signal=42\r\n"), None);
        assert_eq!(info_digit(relay, b"Signal=\xff"), None);
        assert_eq!(info_digit(Some("application/dtmf"), b"5"), Some('5'));
        assert_eq!(
            info_digit(Some("Application/DTMF-Relay; charset=x"), b"Signal=2"),
            Some('2')
        );
        assert_eq!(
            info_digit(Some("application/media_control+xml"), b"4"),
            None
        );
        assert_eq!(info_digit(None, b"Signal=4"), None);
    }
}
