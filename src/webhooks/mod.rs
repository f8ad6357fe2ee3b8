//! Webhooks: the events on the bus that a webhook subscribes to, POSTed to its URL as the same
//! JSON the desktops get, signed so the receiver can trust them.
//!
//! Each request carries `X-Screenpop-Timestamp` (Unix seconds of the attempt),
//! `X-Screenpop-Signature: sha256=<hex HMAC-SHA256(secret, timestamp "." body)>` (see [`sign`])
//! and `X-Screenpop-Delivery` (the delivery's id, the same on every attempt, so a receiver can
//! drop a repeat: delivery is at least once).
//!
//! Nothing here may slow a call or a pop. The bus is read by a task that only forwards the
//! events some webhook wants into a bounded channel; a writer task records them in the store in
//! batches, before any attempt; a sender task claims due deliveries from the store and runs each
//! attempt in a task of its own, at most [`Settings::concurrency`] at once and
//! [`Settings::per_webhook`] per webhook, each bounded by [`Settings::timeout`]. When the writer
//! falls behind, the forwarder waits and the bus (a broadcast channel, which never blocks its
//! publishers) drops what this reader has not taken: those events are counted in
//! `screenpop_webhook_events_lagged_total` and logged.
//!
//! Order: deliveries of one subject to one webhook go out one at a time, in the order the events
//! were published. The subject is the event's call (`Event::call`), else the agent of an
//! `agent.*` event, else the work order of a `work_order.*` event; any other event has one
//! subject per webhook. Subjects are independent of each other: a call's events never wait for
//! another call's, and a failing delivery holds back only its own subject.
//!
//! A failed attempt (no 2xx answer within the timeout; redirects are not followed) is retried
//! after 1 s, 2 s, 4 s … at most [`Settings::max_delay`] apart, until
//! [`Settings::give_up_after`] from the event, then the delivery is marked failed and the next
//! of its subject goes. Metrics: `screenpop_webhook_deliveries_total{outcome="ok"|"retried"|
//! "failed"}`, `screenpop_webhook_delivery_seconds`, `screenpop_webhook_enqueued_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::events::{Event, EventBus, Payload};
use crate::store::webhooks::{Claimed, NewDelivery, NewWebhook, Outcome, Webhook, WebhookHealth};
use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// The event `type`s a webhook may subscribe to: those of [`Payload::kind`] (a test checks
/// that the two lists agree).
pub const EVENT_TYPES: &[&str] = &[
    "call.queued",
    "call.offered",
    "call.answered",
    "call.withdrawn",
    "call.ended",
    "call.held",
    "call.resumed",
    "call.transferred",
    "call.consult",
    "call.survey",
    "agent.state",
    "agent.deactivated",
    "work_order.created",
    "work_order.updated",
    "campaign.progress",
];

/// Subscribes a webhook to every event, including types added later.
pub const ALL_EVENTS: &str = "*";

/// The shortest secret accepted: shorter ones are too easy to guess from signed traffic.
pub const MIN_SECRET_CHARS: usize = 16;

const MAX_SECRET_CHARS: usize = 1024;
const MAX_URL_CHARS: usize = 2048;

/// Knobs of delivery; the defaults are the documented behaviour, tests shorten them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The wait after the first failed attempt; doubled after each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long after the event a failing delivery is still retried.
    pub give_up_after: Duration,
    /// One attempt, connection and answer together.
    pub timeout: Duration,
    /// Attempts in flight at once, all webhooks together.
    pub concurrency: usize,
    /// Attempts in flight at once to one webhook, so one slow receiver cannot hold every slot.
    pub per_webhook: usize,
    /// Events waiting between the bus and the writer.
    pub queue: usize,
    /// How long delivered and failed deliveries stay listed.
    pub retention: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            per_webhook: 8,
            queue: 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Settings {
    /// The wait after the `attempts`-th failed attempt.
    pub fn delay_after(&self, attempts: i64) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// How long an attempt holds its delivery: past it, a delivery whose process died
    /// mid-attempt is due again.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(20)
    }
}

/// The `X-Screenpop-Signature` value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the hex HMAC-SHA256 keyed with `secret` of `"{timestamp}.{body}"`. The
/// timestamp is inside the MAC so a captured request cannot be replayed later with a fresh one.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What an event's order is kept within (see the module doc).
pub fn subject(e: &Event) -> String {
    if let Some(call) = &e.call {
        return format!("call:{call}");
    }
    match &e.payload {
        Payload::AgentState(s) => format!("agent:{}", s.agent_id),
        Payload::AgentDeactivated { agent_id } => format!("agent:{agent_id}"),
        Payload::WorkOrderCreated { work_order } | Payload::WorkOrderUpdated { work_order } => {
            format!("work_order:{}", work_order.id)
        }
        Payload::CampaignProgress(p) => format!("campaign:{}", p.campaign_id),
        _ => String::new(),
    }
}

/// Checks a webhook as an admin gave it; the error names the field.
pub fn validate(url: &str, events: &[String], secret: &str) -> Result<NewWebhook, StoreError> {
    let invalid = |field, why: &str| StoreError::Invalid {
        field,
        why: why.to_string(),
    };
    let url = url.trim();
    if url.len() > MAX_URL_CHARS {
        return Err(invalid("url", "too long"));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid("url", &format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "must name a host"));
    }
    if events.is_empty() {
        return Err(invalid("events", "name at least one event type, or \"*\""));
    }
    let mut chosen: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if e != ALL_EVENTS && !EVENT_TYPES.contains(&e) {
            return Err(invalid(
                "events",
                &format!(
                    "unknown event type {e:?}; known: {} or \"*\"",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !chosen.iter().any(|c| c == e) {
            chosen.push(e.to_string());
        }
    }
    if chosen.iter().any(|c| c == ALL_EVENTS) {
        chosen = vec![ALL_EVENTS.to_string()];
    }
    let n = secret.chars().count();
    if n < MIN_SECRET_CHARS {
        return Err(invalid(
            "secret",
            &format!("at least {MIN_SECRET_CHARS} characters"),
        ));
    }
    if n > MAX_SECRET_CHARS {
        return Err(invalid("secret", "too long"));
    }
    Ok(NewWebhook {
        url: parsed.to_string(),
        events: chosen,
        secret: secret.to_string(),
    })
}

/// A webhook as the sender keeps it in memory.
struct Hook {
    id: i64,
    url: String,
    secret: String,
    events: Vec<String>,
}

impl Hook {
    fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == ALL_EVENTS || e == kind)
    }
}

/// The webhooks in force; until first loaded every event is forwarded, so none published at
/// start-up is missed.
#[derive(Default)]
struct Hooks {
    loaded: bool,
    list: Vec<Arc<Hook>>,
    /// Which read of the store this list came from: a slower, older read (the start-up load
    /// racing a `create`) must not replace a newer one.
    read: u64,
}

struct Shared {
    store: Store,
    settings: Settings,
    hooks: RwLock<Arc<Hooks>>,
    /// Reads of the webhook list begun, numbering them for `Hooks::read`.
    reads: std::sync::atomic::AtomicU64,
    /// Wakes the sender: new deliveries recorded, an attempt finished.
    wake: Notify,
    /// Held while recording deliveries and while finishing one, so that a delivery released
    /// by a finish and one recorded behind it cannot cross (see the store's module doc).
    order: tokio::sync::Mutex<()>,
    client: Option<reqwest::Client>,
    slots: Arc<Semaphore>,
    in_flight: Mutex<HashMap<i64, usize>>,
}

impl Shared {
    fn hooks(&self) -> Arc<Hooks> {
        self.hooks
            .read()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn wanted(&self, kind: &str) -> bool {
        let hooks = self.hooks();
        !hooks.loaded || hooks.list.iter().any(|h| h.wants(kind))
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let list = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .map(|w| {
                Arc::new(Hook {
                    id: w.id,
                    url: w.url,
                    secret: w.secret,
                    events: w.events,
                })
            })
            .collect();
        let fresh = Arc::new(Hooks {
            loaded: true,
            list,
            read,
        });
        let mut hooks = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        if !hooks.loaded || hooks.read < read {
            *hooks = fresh;
        }
        Ok(())
    }

    fn in_flight(&self, hook: i64) -> usize {
        self.in_flight
            .lock()
            .map(|m| m.get(&hook).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn adjust_in_flight(&self, hook: i64, up: bool) {
        if let Ok(mut m) = self.in_flight.lock() {
            let n = m.entry(hook).or_insert(0);
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
            if *n == 0 {
                m.remove(&hook);
            }
        }
    }
}

/// The webhook service: what the API changes webhooks through, so the running sender sees
/// a change at once.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Webhooks {
    /// Starts following `bus` and delivering, with the default [`Settings`]. Deliveries left
    /// by an earlier process are resumed.
    pub fn spawn(store: Store, bus: Arc<dyn EventBus>) -> Webhooks {
        Webhooks::spawn_with(store, bus, Settings::default())
    }

    /// As [`Webhooks::spawn`], with other knobs: tests shorten the back-off.
    pub fn spawn_with(store: Store, bus: Arc<dyn EventBus>, settings: Settings) -> Webhooks {
        let client = http_client(&settings);
        let shared = Arc::new(Shared {
            store,
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            hooks: RwLock::default(),
            reads: Default::default(),
            wake: Notify::new(),
            order: tokio::sync::Mutex::new(()),
            client,
            in_flight: Mutex::default(),
        });
        // The series exist from the start, so an alert on them sees zero, not nothing.
        metrics::counter!("screenpop_webhook_events_lagged_total").increment(0);
        for outcome in ["ok", "retried", "failed"] {
            metrics::counter!("screenpop_webhook_deliveries_total", "outcome" => outcome)
                .increment(0);
        }
        // Subscribed here, before anything is awaited: no event published after spawn is
        // missed.
        let rx = bus.subscribe(crate::events::Viewer::EVERYTHING);
        let (tx, events) = mpsc::channel(shared.settings.queue.max(1));
        let (flushes, flush_rx) = mpsc::unbounded_channel();
        tokio::spawn(forward(shared.clone(), rx, flush_rx, tx));
        let s = shared.clone();
        tokio::spawn(async move {
            load(&s).await;
            tokio::spawn(write(s.clone(), events));
            send(s).await;
        });
        Webhooks { shared, flushes }
    }

    /// Waits until the events published before the call are recorded as deliveries (false if
    /// `within` passed first). Events the bus had already dropped for this reader (counted in
    /// `screenpop_webhook_events_lagged_total`) are not among them. The process calls it before
    /// exiting, so the events of the calls it has written are sent after the restart instead
    /// of lost with the process.
    pub async fn flush(&self, within: Duration) -> bool {
        let (ack, done) = oneshot::channel();
        if self.flushes.send(ack).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, done).await, Ok(Ok(())))
    }

    /// Checks and records a webhook; it receives events published from now on.
    pub async fn create(
        &self,
        url: &str,
        events: &[String],
        secret: &str,
        actor: &str,
    ) -> Result<Webhook, StoreError> {
        let new = validate(url, events, secret)?;
        let w = self
            .shared
            .store
            .create_webhook(&new, actor, now_ms())
            .await?;
        self.reload().await;
        info!(webhook = w.id, url = %w.url, events = ?w.events, "webhook created");
        Ok(w)
    }

    /// Deletes a webhook with its deliveries; attempts already under way finish.
    pub async fn delete(&self, id: i64) -> Result<(), StoreError> {
        self.shared.store.delete_webhook(id).await?;
        self.reload().await;
        info!(webhook = id, "webhook deleted");
        Ok(())
    }

    /// Every webhook with how its deliveries are doing.
    pub async fn list(&self) -> Result<Vec<(Webhook, WebhookHealth)>, StoreError> {
        let mut out = Vec::new();
        for w in self.shared.store.webhooks().await? {
            let health = self.shared.store.webhook_health(w.id).await?;
            out.push((w, health));
        }
        Ok(out)
    }

    async fn reload(&self) {
        if let Err(e) = self.shared.reload().await {
            warn!(error = %e, "webhooks not reloaded; the sender keeps the previous list");
        }
        self.shared.wake.notify_one();
    }
}

fn http_client(settings: &Settings) -> Option<reqwest::Client> {
    let builder = || {
        reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            // A redirect would send the signed event somewhere the admin did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("screenpop/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(settings.per_webhook)
    };
    match builder().build() {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %e, "webhook HTTP client: the system's CA certificates are unusable; using the built-in roots only");
            match builder().tls_built_in_native_certs(false).build() {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "webhook HTTP client unavailable: deliveries will fail and be retried");
                    None
                }
            }
        }
    }
}

/// Loads the webhooks, retrying while the store is unreachable.
async fn load(shared: &Shared) {
    let mut wait = Duration::from_millis(200);
    while let Err(e) = shared.reload().await {
        warn!(error = %e, "webhooks not loaded yet; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// What goes from the bus reader to the writer.
enum Item {
    Event(Arc<Event>),
    /// Answered once every event before it is recorded: [`Webhooks::flush`].
    Flushed(oneshot::Sender<()>),
}

/// Reads the bus and passes on what a webhook wants; waits (never the publisher) when the
/// writer is behind. A flush takes the events the bus holds for this reader when it arrives
/// (no more, so a busy bus cannot keep it waiting), then puts its marker behind them.
async fn forward(
    shared: Arc<Shared>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    tx: mpsc::Sender<Item>,
) {
    let lagged = |n: u64| {
        metrics::counter!("screenpop_webhook_events_lagged_total").increment(n);
        warn!(
            lost = n,
            "webhooks fell behind the event bus: events lost for webhooks"
        );
    };
    loop {
        let item = tokio::select! {
            biased;
            Some(ack) = flushes.recv() => {
                let mut left = rx.len();
                while left > 0 {
                    left -= 1;
                    match rx.try_recv() {
                        Ok(e) => {
                            if shared.wanted(e.kind) && tx.send(Item::Event(e)).await.is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            lagged(n);
                            left = rx.len();
                        }
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                Item::Flushed(ack)
            }
            r = rx.recv() => match r {
                Ok(e) if shared.wanted(e.kind) => Item::Event(e),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    lagged(n);
                    continue;
                }
                Err(RecvError::Closed) => break,
            },
        };
        if tx.send(item).await.is_err() {
            break;
        }
    }
}

/// The most events recorded in one transaction.
const BATCH: usize = 256;

/// Records the forwarded events as deliveries, in batches; a store failure is retried with the
/// batch kept (meanwhile the channel fills and the bus reader falls behind, counted). Flush
/// markers in a batch are answered once it is recorded.
async fn write(shared: Arc<Shared>, mut items: mpsc::Receiver<Item>) {
    let mut received: Vec<Item> = Vec::with_capacity(BATCH);
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(BATCH);
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    while items.recv_many(&mut received, BATCH).await > 0 {
        for item in received.drain(..) {
            match item {
                Item::Event(e) => batch.push(e),
                Item::Flushed(ack) => flushed.push(ack),
            }
        }
        let hooks = shared.hooks();
        let subjects: Vec<String> = batch.iter().map(|e| subject(e)).collect();
        let items: Vec<NewDelivery<'_>> = batch
            .iter()
            .zip(&subjects)
            .flat_map(|(e, subject)| {
                hooks
                    .list
                    .iter()
                    .filter(|h| h.wants(e.kind))
                    .map(move |h| NewDelivery {
                        webhook_id: h.id,
                        event_type: e.kind,
                        subject,
                        body: &e.json,
                    })
            })
            .collect();
        if !items.is_empty() {
            let mut wait = Duration::from_millis(100);
            loop {
                let done = {
                    let _order = shared.order.lock().await;
                    shared
                        .store
                        .enqueue_webhook_deliveries(&items, now_ms())
                        .await
                };
                match done {
                    Ok(ids) => {
                        metrics::counter!("screenpop_webhook_enqueued_total")
                            .increment(ids.len() as u64);
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, events = batch.len(), "webhook deliveries not recorded yet; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
            shared.wake.notify_one();
        }
        batch.clear();
        for ack in flushed.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Claims due deliveries and starts their attempts; sleeps until the next is due, new ones are
/// recorded or an attempt ends.
async fn send(shared: Arc<Shared>) {
    let settings = shared.settings.clone();
    let lease = settings.lease().as_millis() as i64;
    let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
    let mut last_prune: Option<Instant> = None;
    loop {
        let now = now_ms();
        let hooks = shared.hooks();
        for hook in &hooks.list {
            let free = shared.slots.available_permits().min(
                settings
                    .per_webhook
                    .saturating_sub(shared.in_flight(hook.id)),
            );
            if free == 0 {
                continue;
            }
            let claimed = match shared
                .store
                .claim_webhook_deliveries(hook.id, now, now + lease, free as i64)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    warn!(webhook = hook.id, error = %e, "webhook deliveries not claimed");
                    continue;
                }
            };
            for d in claimed {
                let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                    // Cannot happen (only this task takes slots); the lease brings it back.
                    break;
                };
                shared.adjust_in_flight(hook.id, true);
                let (s, h) = (shared.clone(), hook.clone());
                tokio::spawn(async move {
                    attempt(&s, &h, d).await;
                    drop(slot);
                    s.adjust_in_flight(h.id, false);
                    s.wake.notify_one();
                });
            }
        }
        let wait = match shared.store.next_webhook_attempt_at().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(100, 30_000) as u64),
            Ok(None) => Duration::from_secs(30),
            Err(e) => {
                warn!(error = %e, "webhook sender cannot read the store");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = housekeeping.tick() => {
                match shared.store.release_stranded_webhook_deliveries(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => warn!(released = n, "webhook deliveries released that waited behind nothing"),
                    Err(e) => warn!(error = %e, "webhook housekeeping failed"),
                }
                if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    last_prune = Some(Instant::now());
                    let before = now_ms() - settings.retention.as_millis() as i64;
                    match shared.store.prune_webhook_deliveries(before).await {
                        Ok(0) => {}
                        Ok(n) => info!(pruned = n, "old webhook deliveries forgotten"),
                        Err(e) => warn!(error = %e, "webhook deliveries not pruned"),
                    }
                }
            }
        }
    }
}

/// One POST of one delivery, and its outcome recorded.
async fn attempt(shared: &Shared, hook: &Hook, d: Claimed) {
    let settings = &shared.settings;
    let started = Instant::now();
    let timestamp = now_ms().div_euclid(1000);
    let result = match &shared.client {
        Some(client) => {
            client
                .post(&hook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Screenpop-Timestamp", timestamp.to_string())
                .header(
                    "X-Screenpop-Signature",
                    sign(&hook.secret, timestamp, &d.body),
                )
                .header("X-Screenpop-Delivery", d.id.to_string())
                .header("X-Screenpop-Event", d.event_type.as_str())
                .body(d.body.clone())
                .send()
                .await
        }
        None => {
            metrics::counter!("screenpop_webhook_deliveries_total", "outcome" => "retried")
                .increment(1);
            return finish(
                shared,
                &d,
                failure(settings, &d, None, "no HTTP client".into()),
            )
            .await;
        }
    };
    metrics::histogram!("screenpop_webhook_delivery_seconds")
        .record(started.elapsed().as_secs_f64());
    let outcome = match result {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered {
            status: resp.status().as_u16(),
        },
        Ok(mut resp) => {
            let status = resp.status();
            // The start of the receiver's answer often says why; no more is read.
            let detail = match tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let text: String = text.chars().take(200).collect();
                    format!(": {}", text.trim())
                }
                _ => String::new(),
            };
            failure(
                settings,
                &d,
                Some(status.as_u16()),
                format!("HTTP {status}{detail}"),
            )
        }
        Err(e) => failure(settings, &d, None, describe(&e, settings.timeout)),
    };
    let label = match &outcome {
        Outcome::Delivered { .. } => "ok",
        Outcome::Retry { .. } => "retried",
        Outcome::Failed { .. } => "failed",
    };
    metrics::counter!("screenpop_webhook_deliveries_total", "outcome" => label).increment(1);
    match &outcome {
        Outcome::Delivered { .. } => {
            debug!(webhook = hook.id, delivery = d.id, event = %d.event_type, "webhook delivered")
        }
        Outcome::Retry { at, error, .. } => debug!(
            webhook = hook.id,
            delivery = d.id,
            attempts = d.attempts + 1,
            retry_in_ms = at - now_ms(),
            error = %error,
            "webhook attempt failed"
        ),
        Outcome::Failed { error, .. } => warn!(
            webhook = hook.id,
            delivery = d.id,
            attempts = d.attempts + 1,
            error = %error,
            "webhook delivery given up"
        ),
    }
    finish(shared, &d, outcome).await;
}

/// A failed attempt: retried later, or given up once past the retry period.
fn failure(settings: &Settings, d: &Claimed, status: Option<u16>, error: String) -> Outcome {
    let now = now_ms();
    let give_up_at = d.created_at + settings.give_up_after.as_millis() as i64;
    if now >= give_up_at {
        Outcome::Failed { status, error }
    } else {
        let delay = settings.delay_after(d.attempts + 1).as_millis() as i64;
        Outcome::Retry {
            at: now + delay,
            status,
            error,
        }
    }
}

async fn finish(shared: &Shared, d: &Claimed, outcome: Outcome) {
    // A retry releases nothing, so it need not wait for the writer.
    let _order = match outcome {
        Outcome::Retry { .. } => None,
        _ => Some(shared.order.lock().await),
    };
    if let Err(e) = shared
        .store
        .finish_webhook_delivery(d.id, now_ms(), &outcome)
        .await
    {
        // The lease runs out and the delivery is tried again: at least once, never lost.
        warn!(delivery = d.id, error = %e, "webhook delivery outcome not recorded");
    }
}

/// An error as the delivery list shows it: what failed, not reqwest's wrapping.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let mut text = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::payload::sample;
    use crate::events::LocalBus;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // printf '%s' '1795000000.{"type":"work_order.created","work_order":{"id":7}}' \
        //   | openssl dgst -sha256 -hmac 'whsec-0123456789abcdef'
        assert_eq!(
            sign(
                "whsec-0123456789abcdef",
                1_795_000_000,
                r#"{"type":"work_order.created","work_order":{"id":7}}"#
            ),
            "sha256=34fd0581f33c3daa8ac9cdf7bf36648ffbd5f7bc8f814815f207eb878b3a4a1c"
        );
    }

    #[test]
    fn event_types_are_those_the_bus_publishes() {
        // Payload::kind is a match over the variants: its string literals are the event types.
        let source = include_str!("../events/payload.rs");
        let start = source.find("pub fn kind(&self)").expect("Payload::kind");
        let body = &source[start..];
        let body = &body[..body.find("\n    }\n").expect("end of kind")];
        let mut kinds: Vec<&str> = body
            .split("=> \"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        let mut ours = EVENT_TYPES.to_vec();
        kinds.sort_unstable();
        ours.sort_unstable();
        assert_eq!(
            ours, kinds,
            "webhooks::EVENT_TYPES must list exactly the types of Payload::kind"
        );
    }

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let s = Settings::default();
        let secs: Vec<u64> = (1..=12).map(|n| s.delay_after(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(s.delay_after(10_000), Duration::from_secs(600));
    }

    #[test]
    fn validation_names_the_field() {
        let ev = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let secret = "0123456789abcdef";
        let field = |r: Result<NewWebhook, StoreError>| match r {
            Err(StoreError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        for url in [
            "ftp://crm.example/x",
            "not a url",
            "http://",
            "crm.example/hook",
            "",
        ] {
            assert_eq!(
                field(validate(url, &ev(&["call.ended"]), secret)),
                "url",
                "{url}"
            );
        }
        assert_eq!(
            field(validate(
                "https://crm.example/h",
                &ev(&["call.rang"]),
                secret
            )),
            "events"
        );
        assert_eq!(
            field(validate("https://crm.example/h", &[], secret)),
            "events"
        );
        assert_eq!(
            field(validate(
                "https://crm.example/h",
                &ev(&["call.ended"]),
                "short"
            )),
            "secret"
        );
        let ok = validate(
            " https://crm.example/hook?x=1 ",
            &ev(&["call.ended", "call.ended", "agent.state"]),
            secret,
        )
        .expect("valid");
        assert_eq!(ok.url, "https://crm.example/hook?x=1");
        assert_eq!(ok.events, ["call.ended", "agent.state"]);
        let all =
            validate("http://127.0.0.1:9/", &ev(&["call.ended", "*"]), secret).expect("valid");
        assert_eq!(all.events, ["*"]);
    }

    #[test]
    fn subjects_follow_the_call_then_the_agent() {
        assert_eq!(subject(&Event::new(sample::answered("c1", 3))), "call:c1");
        assert_eq!(subject(&Event::new(sample::state(3, "paused"))), "agent:3");
        assert_eq!(
            subject(&Event::new(Payload::AgentDeactivated { agent_id: 4 })),
            "agent:4"
        );
    }

    /// A receiver on loopback: answers 503 to the first `fail_first` requests, then 200, and
    /// keeps what it accepted.
    struct Receiver {
        url: String,
        seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
        bad_signatures: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn receiver(secret: &'static str, fail_first: usize) -> Receiver {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let bad = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, b) = (seen.clone(), bad.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (s, b, count) = (s.clone(), b.clone(), count.clone());
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let ts: i64 = h("x-screenpop-timestamp").parse().unwrap_or(0);
                    if h("x-screenpop-signature") != sign(secret, ts, &body)
                        || h("content-type") != "application/json"
                    {
                        b.fetch_add(1, Ordering::SeqCst);
                    }
                    if count.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v = serde_json::from_str(&body).unwrap_or_default();
                    if let Ok(mut g) = s.lock() {
                        g.push((h("x-screenpop-delivery"), v));
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            seen,
            bad_signatures: bad,
        }
    }

    async fn temp_store(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-webhooks-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    fn quick() -> Settings {
        Settings {
            base_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            ..Settings::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_receiver_gets_every_call_event_in_order_per_call() {
        const SECRET: &str = "test-secret-0123456789";
        let rx = receiver(SECRET, 7).await;
        let store = temp_store("order").await;
        let bus: Arc<dyn EventBus> = Arc::new(LocalBus::new(1024));
        let hooks = Webhooks::spawn_with(store.clone(), bus.clone(), quick());
        hooks
            .create(&rx.url, &["*".to_string()], SECRET, "test")
            .await
            .expect("webhook");
        // Three calls interleaved, and agent states: each subject's order must hold.
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for round in 0..4 {
            for call in ["a", "b", "c"] {
                let p = match round {
                    0 => sample::queued(call, 1, "2026-12-01T10:00:00.000Z"),
                    1 => sample::offered(call, 1, 1, None, "2026-12-01T10:00:00.000Z"),
                    2 => sample::answered(call, 1),
                    _ => sample::ended(call, Some(1)),
                };
                let e = Event::new(p);
                expected
                    .entry(subject(&e))
                    .or_default()
                    .push(e.kind.to_string());
                bus.publish(e);
            }
            let state = ["ringing", "on_call", "wrap_up", "available"][round];
            let e = Event::new(sample::state(1, state));
            expected
                .entry(subject(&e))
                .or_default()
                .push(format!("agent.state {state}"));
            bus.publish(e);
        }
        let total: usize = expected.values().map(Vec::len).sum();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = rx.seen.lock().map(|g| g.len()).unwrap_or(0);
            if n >= total || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = rx.seen.lock().expect("seen").clone();
        assert_eq!(
            rx.bad_signatures.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        let ids: std::collections::HashSet<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            (seen.len(), ids.len()),
            (total, total),
            "each event once: {seen:?}"
        );
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        for (_, v) in &seen {
            let kind = v["type"].as_str().unwrap_or("");
            let (key, item) = match (v["call_id"].as_str(), v["state"].as_str()) {
                (Some(c), _) => (format!("call:{c}"), kind.to_string()),
                (None, Some(state)) => (
                    format!("agent:{}", v["agent_id"]),
                    format!("{kind} {state}"),
                ),
                (None, None) => (String::new(), kind.to_string()),
            };
            got.entry(key).or_default().push(item);
        }
        assert_eq!(got, expected);
        // The receiver has answered the last event; the sender counts it once it has read that
        // answer, a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        let list = loop {
            let list = hooks.list().await.expect("list");
            let counted = list
                .first()
                .is_some_and(|(_, h)| (h.delivered, h.pending) == (total as i64, 0));
            if counted || Instant::now() > deadline {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(list.len(), 1);
        let health = &list[0].1;
        assert_eq!((health.delivered, health.pending), (total as i64, 0));
        assert!(
            health
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("503")),
            "{health:?}"
        );
        assert!(health.last_success_at.is_some());
    }

    /// What a shutdown relies on: once `flush` returns, every event published before it is in
    /// the store as a delivery (here nobody listens at the URL, so they stay pending), and
    /// those of types the webhook did not choose are not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_returns_once_every_event_before_it_is_recorded() {
        let store = temp_store("flush").await;
        let bus: Arc<dyn EventBus> = Arc::new(LocalBus::new(4096));
        let hooks = Webhooks::spawn_with(store.clone(), bus.clone(), quick());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
        drop(closed);
        let hook = hooks
            .create(
                &url,
                &["call.ended".to_string()],
                "flush-secret-0123456789",
                "test",
            )
            .await
            .expect("webhook");
        const CALLS: usize = 600;
        for i in 0..CALLS {
            let call = format!("flush-{i}");
            bus.publish(Event::new(sample::queued(
                &call,
                1,
                "2026-12-01T10:00:00.000Z",
            )));
            bus.publish(Event::new(sample::ended(&call, Some(1))));
        }
        assert!(
            hooks.flush(Duration::from_secs(10)).await,
            "flush timed out"
        );
        let health = store.webhook_health(hook.id).await.expect("health");
        assert_eq!(
            health.pending + health.delivered + health.failed,
            CALLS as i64,
            "{health:?}"
        );
        // Nothing more comes after the flush: it waited for all of them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = store.webhook_health(hook.id).await.expect("health");
        assert_eq!(later.pending, CALLS as i64, "{later:?}");
    }
}
