//! The campaigns inside `serve`: plans each run when it is due and sends what the runs
//! recorded, within each campaign's quiet hours, rate and window; hears SMS replies that opt a
//! customer out. Everything it decides is in the store (attempts claimed by this node, results,
//! the next run), so a restart, or another node on the same PostgreSQL, takes over where it
//! stood. Decisions are the pure [`plan`](super::plan) and [`spec`](super::spec); this module
//! is the loop, the clock and the channels.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, Notify};
use tracing::{info, info_span, warn, Instrument};

use super::plan::{after_try, Next, Outcome, Via};
use super::spec::Checked;
use crate::calls::greeting::Greeted;
use crate::calls::placing::{DialFailure, Dialer};
use crate::events::payload::CampaignProgress;
use crate::events::{Event, EventBus, Payload};
use crate::sip::pager::PagerResult;
use crate::store::campaigns::{Attempt, CampaignRow, CampaignState, TryLog};
use crate::store::Store;
use crate::time::now_ms;

/// SMS in flight per campaign (MESSAGE transactions waiting for the gateway's answer).
const SMS_WINDOW: usize = 32;
/// A claim older than this is a dead sender's: it goes back to the queue.
const STALE_CLAIM_MS: i64 = 10 * 60 * 1000;

/// A text received from a customer (a SIP MESSAGE from the gateway).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The sender's number as received.
    pub from: String,
    pub text: String,
}

/// What the API and the dispatcher use to reach the runner.
#[derive(Clone)]
pub struct Campaigns {
    wake: Arc<Notify>,
    replies: mpsc::Sender<Reply>,
    /// Where relative recording paths are read from.
    pub base: PathBuf,
}

impl Campaigns {
    /// Something changed (a campaign started, paused or resumed): look now, not at the next
    /// tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Hands over a reply; dropped (and logged) when the runner is far behind.
    pub fn reply(&self, r: Reply) {
        if self.replies.try_send(r).is_err() {
            warn!("campaign replies backlogged: one reply not read");
        }
    }

    /// A handle whose runner never runs: for a server without SIP.
    pub fn detached(base: PathBuf) -> Campaigns {
        let (replies, _) = mpsc::channel(1);
        Campaigns {
            wake: Arc::new(Notify::new()),
            replies,
            base,
        }
    }
}

/// What the runner needs.
pub struct RunnerConfig {
    pub store: Store,
    pub bus: Arc<dyn EventBus>,
    /// Sends SMS as SIP MESSAGE; `None` without `[outbound]`.
    pub dialer: Option<Dialer>,
    /// Sends SMS to the SMS center (`[sms] via = "smpp"`), with its receipts and customers'
    /// texts.
    pub smpp: Option<(
        super::smpp::link::SmppLink,
        mpsc::UnboundedReceiver<super::smpp::link::Incoming>,
    )>,
    pub plan: crate::phone::NumberPlan,
    pub opt_out_words: Vec<String>,
    pub base: PathBuf,
    /// This node's name in the attempts it claims; stable across restarts (host and SIP
    /// port), so a restart takes back what it held when it stopped.
    pub node: String,
    /// screenpop shutting down: no attempt is claimed, and those under way are waited for.
    pub in_flight: Arc<crate::calls::drain::InFlight>,
}

/// Per campaign, on this node.
struct Lane {
    row: CampaignRow,
    checked: Arc<Checked>,
    tokens: f64,
    refilled: Instant,
    in_flight: Arc<AtomicUsize>,
    progress_at: Option<Instant>,
    /// A try finished since the last `campaign.progress`.
    dirty: bool,
}

impl Lane {
    /// Tries in flight at most: calls are bounded by the campaign's max_calls (an
    /// SMS-then-voice campaign's texts too, since any of its attempts may become a call);
    /// texts by the SMS window.
    fn window(&self) -> usize {
        match self.checked.spec.channel {
            super::spec::Channel::Sms => SMS_WINDOW,
            _ => self.checked.spec.max_calls as usize,
        }
    }
}

/// Starts the runner; the handle wakes it and hands it replies.
pub fn spawn(cfg: RunnerConfig) -> Campaigns {
    let wake = Arc::new(Notify::new());
    let (replies_tx, replies_rx) = mpsc::channel(1024);
    let handle = Campaigns {
        wake: wake.clone(),
        replies: replies_tx,
        base: cfg.base.clone(),
    };
    let node = cfg.node.clone();
    tokio::spawn(run(cfg, node, wake, replies_rx).instrument(info_span!("campaigns")));
    handle
}

async fn run(
    mut cfg: RunnerConfig,
    node: String,
    wake: Arc<Notify>,
    mut replies: mpsc::Receiver<Reply>,
) {
    let mut incoming = match cfg.smpp.as_mut() {
        Some((_, rx)) => std::mem::replace(rx, mpsc::unbounded_channel().1),
        None => mpsc::unbounded_channel().1,
    };
    let cfg = Arc::new(cfg);
    match cfg
        .store
        .release_attempt_claims(&node, now_ms() - STALE_CLAIM_MS)
        .await
    {
        Ok(0) => {}
        Ok(n) => info!(
            attempts = n,
            "attempts a stopped sender held are queued again"
        ),
        Err(e) => warn!(error = %e, "campaign claims not checked"),
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<i64>();
    let mut unmatched: Vec<(super::smpp::link::Incoming, Instant)> = Vec::new();
    let mut lanes: HashMap<i64, Lane> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut planned_at = Instant::now() - Duration::from_secs(60);
    let mut released_at = Instant::now();
    loop {
        let mut woken = false;
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => woken = true,
            Some(id) = done_rx.recv() => {
                if let Some(lane) = lanes.get_mut(&id) {
                    lane.dirty = true;
                    progress(&cfg, lane, false).await;
                    // Refill the window once half of it has come back, not at the next tick:
                    // the tick alone capped a campaign at a window per 200 ms.
                    if lane.in_flight.load(Ordering::Relaxed) <= lane.window() / 2 {
                        send_due(&cfg, &node, lane, &done_tx).await;
                    }
                }
                continue;
            }
            Some(r) = replies.recv() => {
                on_reply(&cfg, r).await;
                continue;
            }
            Some(i) = incoming.recv() => {
                if let Some(r) = on_incoming(&cfg, i).await {
                    unmatched.push((r, Instant::now()));
                }
                continue;
            }
        }
        // A receipt can overtake the storing of its message id (the SMS center answered and
        // the network delivered at once): it is tried again for a minute.
        if !unmatched.is_empty() {
            let mut still = Vec::new();
            for (r, since) in std::mem::take(&mut unmatched) {
                if let Some(r) = on_incoming(&cfg, r).await {
                    if since.elapsed() < Duration::from_secs(60) {
                        still.push((r, since));
                    } else if let super::smpp::link::Incoming::Receipt {
                        message_id, stat, ..
                    } = &r
                    {
                        info!(%message_id, %stat, "receipt for no attempt of ours");
                    }
                }
            }
            unmatched = still;
        }
        if woken || planned_at.elapsed() >= Duration::from_secs(1) {
            planned_at = Instant::now();
            plan_due_runs(&cfg).await;
            refresh_lanes(&cfg, &mut lanes).await;
        }
        if released_at.elapsed() >= Duration::from_secs(60) {
            released_at = Instant::now();
            let _ = cfg
                .store
                .release_attempt_claims("", now_ms() - STALE_CLAIM_MS)
                .await;
        }
        for lane in lanes.values_mut() {
            if lane.dirty {
                progress(&cfg, lane, false).await;
            }
            send_due(&cfg, &node, lane, &done_tx).await;
        }
    }
}

/// Plans every run that is due, once across nodes (the store's conditional update decides).
async fn plan_due_runs(cfg: &Arc<RunnerConfig>) {
    let now = now_ms();
    let due = match cfg.store.due_campaigns(now).await {
        Ok(d) => d,
        Err(e) => return warn!(error = %e, "due campaigns not read"),
    };
    for row in due {
        let Some(due_at) = row.next_run_at else {
            continue;
        };
        let span = info_span!("campaign", campaign = row.id, name = %row.name);
        async {
            let checked = match Checked::load(&row.spec, &cfg.base) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "campaign cannot run: paused");
                    let _ = cfg
                        .store
                        .set_campaign_state(
                            row.id,
                            &[CampaignState::Active],
                            CampaignState::Paused,
                            None,
                        )
                        .await;
                    return;
                }
            };
            let at = Timestamp::from_millisecond(due_at.max(0)).unwrap_or(Timestamp::UNIX_EPOCH);
            // A daily campaign goes on to its next day; a single run is this one, whether at
            // its time or brought forward.
            let next = match checked.spec.schedule.repeat {
                super::spec::Repeat::Once => None,
                super::spec::Repeat::Daily => checked
                    .schedule
                    .next_run(
                        at.max(Timestamp::from_millisecond(now).unwrap_or(at))
                            + Duration::from_secs(1),
                    )
                    .map(|t| t.as_millisecond()),
            };
            // The attempts first (recording is idempotent: a node racing this one adds
            // nothing), the move to the next run after: a run whose recording failed stays
            // due and is tried again, and a run marked as planned has all its attempts.
            let day = checked
                .schedule
                .local_date(Timestamp::from_millisecond(now).unwrap_or(at));
            let n = match super::run::record(&cfg.store, &checked, row.id, day, now).await {
                Ok(n) => n,
                Err(e) => return warn!(error = %e, "run not planned; tried again"),
            };
            match cfg
                .store
                .claim_campaign_run(row.id, due_at, next, now)
                .await
            {
                Ok(true) => info!(%day, new_attempts = n, next_run = ?next, "run planned"),
                Ok(false) => {} // another node moved it on
                Err(e) => warn!(error = %e, "next run not set"),
            }
        }
        .instrument(span)
        .await;
    }
}

/// Keeps one lane per active campaign, re-reading a campaign whose row changed.
async fn refresh_lanes(cfg: &Arc<RunnerConfig>, lanes: &mut HashMap<i64, Lane>) {
    let active = match cfg.store.active_campaigns().await {
        Ok(a) => a,
        Err(e) => return warn!(error = %e, "active campaigns not read"),
    };
    let ids: Vec<i64> = active.iter().map(|r| r.id).collect();
    // A campaign paused, finished or deleted: its lane goes (its sends in flight finish).
    let gone: Vec<i64> = lanes
        .keys()
        .filter(|id| !ids.contains(id))
        .copied()
        .collect();
    for id in gone {
        if let Some(mut lane) = lanes.remove(&id) {
            if let Ok(Some(row)) = cfg.store.campaign(id).await {
                lane.row = row;
            }
            progress(cfg, &mut lane, true).await;
        }
    }
    for row in active {
        let fresh = lanes
            .get(&row.id)
            .is_none_or(|l| l.row.updated_at != row.updated_at || l.row.spec != row.spec);
        if !fresh {
            if let Some(l) = lanes.get_mut(&row.id) {
                l.row = row;
            }
            continue;
        }
        match Checked::load(&row.spec, &cfg.base) {
            Ok(c) => {
                let in_flight = lanes
                    .get(&row.id)
                    .map(|l| l.in_flight.clone())
                    .unwrap_or_default();
                lanes.insert(
                    row.id,
                    Lane {
                        row,
                        checked: Arc::new(c),
                        tokens: 1.0,
                        refilled: Instant::now(),
                        in_flight,
                        progress_at: None,
                        dirty: true,
                    },
                );
            }
            Err(e) => warn!(campaign = row.id, error = %e, "campaign spec unreadable"),
        }
    }
}

/// Whether `now` is inside the campaign's quiet hours; then nothing is sent.
pub fn quiet_now(c: &Checked, now: Timestamp) -> bool {
    c.quiet
        .is_some_and(|q| q.contains(now.to_zoned_datetime(c.schedule.time_zone().clone()).time()))
}

/// Claims and starts what the lane may send now.
async fn send_due(
    cfg: &Arc<RunnerConfig>,
    node: &str,
    lane: &mut Lane,
    done: &mpsc::UnboundedSender<i64>,
) {
    let now = Timestamp::now();
    if quiet_now(&lane.checked, now) || cfg.in_flight.refusing() {
        return;
    }
    // No link to the SMS center: the texts wait (their tries are not spent on it).
    if lane.checked.spec.channel == super::spec::Channel::Sms
        && cfg.smpp.as_ref().is_some_and(|(link, _)| !link.is_up())
    {
        return;
    }
    let rate = lane.checked.spec.rate_per_second as f64;
    let elapsed = lane.refilled.elapsed().as_secs_f64();
    lane.refilled = Instant::now();
    lane.tokens = (lane.tokens + rate * elapsed).min(rate.max(1.0));
    let window = lane
        .window()
        .saturating_sub(lane.in_flight.load(Ordering::Relaxed));
    let n = (lane.tokens.floor() as usize).min(window);
    if n == 0 {
        return;
    }
    let claimed = match cfg
        .store
        .claim_attempts(lane.row.id, node, now.as_millisecond(), n as i64)
        .await
    {
        Ok(c) => c,
        Err(e) => return warn!(campaign = lane.row.id, error = %e, "attempts not claimed"),
    };
    for a in claimed {
        lane.tokens -= 1.0;
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        let (cfg, checked, in_flight, done) = (
            cfg.clone(),
            lane.checked.clone(),
            lane.in_flight.clone(),
            done.clone(),
        );
        let campaign = lane.row.id;
        let span = info_span!(
            "campaign_attempt",
            campaign,
            attempt = a.id,
            customer = a.customer_id
        );
        // A shutdown waits until the try's result is stored.
        let attempt = cfg.in_flight.enter();
        tokio::spawn(
            async move {
                let _attempt = attempt;
                send_one(&cfg, &checked, a).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = done.send(campaign);
            }
            .instrument(span),
        );
    }
}

/// One try of one attempt, start to finish: the opt-out checked again, the message sent, the
/// contact log written, the attempt moved on.
async fn send_one(cfg: &RunnerConfig, c: &Checked, a: Attempt) {
    let store = &cfg.store;
    let via = a.channel;
    match store.opted_out(a.customer_id, via).await {
        Ok(true) => {
            info!("opted out since the run was planned: skipped");
            let _ = store
                .finish_attempt_try(
                    &cfg.node,
                    a.id,
                    "skipped",
                    None,
                    via,
                    Some("opted out"),
                    None,
                    None,
                )
                .await;
            return;
        }
        Ok(false) => {}
        Err(e) => {
            // Not sent, not lost: the claim goes back after the stale time.
            return warn!(error = %e, "opt-out not checked; the attempt waits");
        }
    }
    let started = now_ms();
    let Tried {
        outcome,
        key,
        answered_at,
        note,
    } = match via {
        Via::Sms => {
            let (outcome, key) = send_sms(cfg, &a).await;
            Tried {
                outcome,
                key,
                answered_at: None,
                note: Some(a.body.clone()),
            }
        }
        Via::Voice => send_voice(cfg, c, &a).await,
    };
    if matches!(outcome, Outcome::Temporary(_)) && cfg.in_flight.refusing() {
        // Not sent because screenpop is shutting down: the try is not spent, and the claim
        // goes back when this node starts again (or after the stale time, to another).
        return info!("shutting down: the attempt waits for the restart");
    }
    let ended = now_ms();
    let tries = a.tries as u32 + 1;
    let result = describe(&outcome);
    info!(%result, tries, "campaign try");
    let log = store
        .insert_try_log(&TryLog {
            key: key.unwrap_or_else(|| format!("campaign-{}-{}-{tries}", a.campaign_id, a.id)),
            campaign_id: a.campaign_id,
            customer_id: a.customer_id,
            number: a.number.clone(),
            via,
            started_at: started,
            answered_at,
            ended_at: ended,
            result,
            body: note,
        })
        .await;
    let log = match log {
        Ok(id) => Some(id),
        Err(e) => {
            warn!(error = %e, "campaign contact log not written");
            None
        }
    };
    let message_id = match &outcome {
        Outcome::Sent { message_id } => message_id.clone(),
        _ => None,
    };
    let (status, next_at, next_via, reason) = match after_try(c, via, tries, outcome, ended) {
        Next::Done { status, reason } => (status, None, via, reason),
        Next::Retry { at_ms, reason } => ("pending", Some(at_ms), via, Some(reason)),
        Next::Fallback { reason } => ("pending", Some(ended), Via::Voice, Some(reason)),
    };
    // The message has gone: its result must be stored, or the claim would be taken back
    // and the customer messaged again. A database hiccup is waited out.
    for wait in [0u64, 1, 2, 4, 8] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match store
            .finish_attempt_try(
                &cfg.node,
                a.id,
                status,
                next_at,
                next_via,
                reason.as_deref(),
                message_id.as_deref(),
                log,
            )
            .await
        {
            Ok(true) => return,
            Ok(false) => return warn!("the claim was taken back meanwhile: result not stored"),
            Err(e) => warn!(error = %e, "attempt result not stored yet"),
        }
    }
}

/// How one try went, for its contact log.
struct Tried {
    outcome: Outcome,
    /// The contact log's key (a Call-ID or the SMS center's message id).
    key: Option<String>,
    answered_at: Option<i64>,
    /// The contact log's text: the SMS, or what the customer heard of a greeting.
    note: Option<String>,
}

/// Places one voice greeting and waits for its end.
async fn send_voice(cfg: &RunnerConfig, c: &Checked, a: &Attempt) -> Tried {
    let tried = |outcome, key, answered_at, note| Tried {
        outcome,
        key,
        answered_at,
        note,
    };
    let (Some(dialer), Some(clip)) = (&cfg.dialer, &c.clip) else {
        let why = if cfg.dialer.is_none() {
            "no way to call: the profile has no [outbound] gateway"
        } else {
            "the campaign has no recording"
        };
        return tried(Outcome::Failed(why.into()), None, None, None);
    };
    let ring = Duration::from_secs(c.spec.ring_secs.into());
    match dialer.greet(&a.number, clip.clone(), ring).await {
        Ok(call) => {
            let (outcome, answered_at, note) = greeting_outcome(&call.result, clip.duration());
            let answered_at = answered_at.map(|heard_ms| now_ms() - heard_ms as i64);
            tried(outcome, Some(call.call_id), answered_at, note)
        }
        Err(DialFailure::Unavailable(why)) => tried(Outcome::Temporary(why), None, None, None),
        Err(e) => tried(Outcome::Failed(e.to_string()), None, None, None),
    }
}

/// A greeting call's end as a campaign outcome, with how long ago it was answered (in ms
/// before now: the recording heard) and the contact log's note.
pub fn greeting_outcome(g: &Greeted, length: Duration) -> (Outcome, Option<u64>, Option<String>) {
    match *g {
        Greeted::Answered {
            heard_ms,
            hung_up_early,
        } => {
            let note = format!(
                "greeting heard for {:.1} s of {:.1} s{}",
                heard_ms as f64 / 1000.0,
                length.as_secs_f64(),
                if hung_up_early {
                    "; the customer hung up"
                } else {
                    ""
                }
            );
            (Outcome::Answered, Some(heard_ms), Some(note))
        }
        Greeted::Busy { .. } => (Outcome::Busy, None, None),
        Greeted::NoAnswer { .. } => (Outcome::NoAnswer, None, None),
        Greeted::Failed { status } => {
            let why = format!("{status} {}", crate::sip::message::reason_phrase(status));
            let outcome = match status {
                500 | 503 | 504 => Outcome::Temporary(why),
                _ => Outcome::Failed(why),
            };
            (outcome, None, None)
        }
    }
}

/// Sends one SMS the configured way; the key is the contact log's (the MESSAGE's Call-ID,
/// or the SMS center's message id).
async fn send_sms(cfg: &RunnerConfig, a: &Attempt) -> (Outcome, Option<String>) {
    if let Some((link, _)) = &cfg.smpp {
        return match link.send(&a.number, &a.body).await {
            Ok(message_id) => (
                Outcome::Sent {
                    message_id: Some(message_id.clone()),
                },
                Some(format!("smpp-{}-{message_id}", a.id)),
            ),
            Err((why, true)) => (Outcome::Temporary(why), None),
            Err((why, false)) => (Outcome::Failed(why), None),
        };
    }
    let Some(dialer) = &cfg.dialer else {
        return (
            Outcome::Failed("no way to send SMS: the profile has no [outbound] gateway".into()),
            None,
        );
    };
    match dialer.message(&a.number, a.body.clone()).await {
        Ok(sent) => (pager_outcome(&sent.result), Some(sent.call_id)),
        Err(DialFailure::Unavailable(why)) => (Outcome::Temporary(why), None),
        Err(e) => (Outcome::Failed(e.to_string()), None),
    }
}

/// A MESSAGE's final answer as a campaign outcome: 2xx sent; a timeout, 408, 480, 486, 500,
/// 503 and 504 worth another try; anything else (404, 403, 415, 488, a challenge we could not
/// answer) final.
pub fn pager_outcome(r: &PagerResult) -> Outcome {
    match r {
        PagerResult::Final { status, .. } if (200..300).contains(status) => {
            Outcome::Sent { message_id: None }
        }
        PagerResult::Final { status, reason } => {
            let why = format!("{status} {reason}");
            match status {
                408 | 480 | 486 | 500 | 503 | 504 => Outcome::Temporary(why),
                _ => Outcome::Failed(why),
            }
        }
        PagerResult::Timeout => Outcome::Temporary("the gateway did not answer".into()),
    }
}

/// The contact log's `result` for an outcome.
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Sent { .. } => "sent".into(),
        Outcome::Delivered => "delivered".into(),
        Outcome::Answered => "answered".into(),
        Outcome::Busy => "busy".into(),
        Outcome::NoAnswer => "no answer".into(),
        Outcome::Temporary(why) | Outcome::Failed(why) => format!("failed: {why}"),
    }
}

/// Publishes `campaign.progress` at most once a second per campaign (always when `force`; a
/// lane left `dirty` is published at a later tick), and finishes a single run whose attempts
/// have all ended.
async fn progress(cfg: &RunnerConfig, lane: &mut Lane, force: bool) {
    if !force
        && lane
            .progress_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
    {
        return;
    }
    let Ok(p) = cfg.store.campaign_progress(lane.row.id).await else {
        return;
    };
    if p.finished() && lane.row.state == CampaignState::Active {
        if let Ok(true) = cfg.store.finish_campaign_if_done(lane.row.id).await {
            info!(campaign = lane.row.id, "campaign done");
            lane.row.state = CampaignState::Done;
        }
    }
    lane.progress_at = Some(Instant::now());
    lane.dirty = false;
    cfg.bus
        .publish(Event::new(Payload::CampaignProgress(CampaignProgress {
            campaign_id: lane.row.id,
            name: lane.row.name.clone(),
            state: lane.row.state,
            progress: p,
        })));
}

/// What the SMS center sends: a receipt settles its attempt (delivered, or failed with the
/// receipt's state); a customer's text is a reply.
/// Returns a receipt that matched no attempt yet, to be tried again.
async fn on_incoming(
    cfg: &RunnerConfig,
    i: super::smpp::link::Incoming,
) -> Option<super::smpp::link::Incoming> {
    use super::smpp::link::Incoming;
    match i {
        Incoming::Receipt {
            ref message_id,
            delivered,
            ref stat,
        } => {
            let (status, reason) = if delivered {
                ("delivered", None)
            } else {
                ("failed", Some(stat.as_str()))
            };
            match cfg.store.attempt_receipt(message_id, status, reason).await {
                Ok(Some(a)) => {
                    info!(attempt = a.id, %stat, "delivery receipt");
                    None
                }
                Ok(None) => Some(i),
                Err(e) => {
                    warn!(error = %e, "receipt not stored yet");
                    Some(i)
                }
            }
        }
        Incoming::Text { from, text } => {
            on_reply(cfg, Reply { from, text }).await;
            None
        }
    }
}

/// A reply that is an opt-out word opts every customer on that number out of SMS.
async fn on_reply(cfg: &RunnerConfig, r: Reply) {
    let word = r.text.trim();
    let is_opt_out = cfg
        .opt_out_words
        .iter()
        .any(|w| w.trim().to_lowercase() == word.to_lowercase());
    if !is_opt_out {
        info!(from = %r.from, "SMS reply (not an opt-out word)");
        return;
    }
    let Ok(n) = crate::phone::normalize(&r.from, cfg.plan) else {
        return warn!(from = %r.from, "opt-out from a number that does not parse");
    };
    let Some(e164) = n.e164 else {
        return warn!(from = %r.from, "opt-out from a number without E.164 form");
    };
    match cfg.store.opt_out_number(&e164, Via::Sms).await {
        Ok(ids) => {
            info!(number = %e164, customers = ?ids, word, "opted out of SMS by reply");
            for id in ids {
                let _ = cfg
                    .store
                    .audit(
                        "sms-reply",
                        "customer.opt_out",
                        &format!("customer:{id}"),
                        Some(&format!("sms: {word:?} from {e164}")),
                    )
                    .await;
            }
        }
        Err(e) => warn!(error = %e, "opt-out not stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaigns::spec::CampaignSpec;

    #[test]
    fn quiet_hours_hold_sending_back_in_the_campaigns_zone() {
        let spec: CampaignSpec = serde_json::from_value(serde_json::json!({
            "name": "q", "kind": "broadcast", "channel": "sms", "template": "hi",
            "schedule": {"repeat": "daily", "at": "09:00", "tz": "Asia/Shanghai"},
            "quiet_hours": "21:00-08:00"
        }))
        .expect("spec");
        let c = spec
            .check(Timestamp::UNIX_EPOCH, std::path::Path::new("."))
            .expect("valid");
        let at = |s: &str| s.parse::<Timestamp>().expect("instant");
        // 22:30 and 07:59 in Shanghai are quiet; 08:00 and 20:59 are not.
        assert!(quiet_now(&c, at("2026-12-02T14:30:00Z")));
        assert!(quiet_now(&c, at("2026-12-02T23:59:00Z")));
        assert!(!quiet_now(&c, at("2026-12-03T00:00:00Z")));
        assert!(!quiet_now(&c, at("2026-12-02T12:59:00Z")));
    }

    #[test]
    fn a_gateways_answer_decides_between_retry_and_giving_up() {
        let f = |status, reason: &str| PagerResult::Final {
            status,
            reason: reason.into(),
        };
        assert_eq!(
            pager_outcome(&f(202, "Accepted")),
            Outcome::Sent { message_id: None }
        );
        assert!(matches!(
            pager_outcome(&f(503, "Service Unavailable")),
            Outcome::Temporary(_)
        ));
        assert!(matches!(
            pager_outcome(&f(404, "Not Found")),
            Outcome::Failed(w) if w == "404 Not Found"
        ));
        assert!(matches!(
            pager_outcome(&PagerResult::Timeout),
            Outcome::Temporary(_)
        ));
    }
}
