//! Shutting down without losing a call. The first SIGTERM (or SIGINT) stops new calls (503
//! with Retry-After, so a load balancer or the PBX tries another node) and lets the calls in
//! progress finish for up to the drain time; then they are hung up (BYE both ways, a caller
//! still waiting gets 503) and screenpop exits once each has its recording and contact log
//! written. A second signal hurries it: hang up now. A third exits at once.
//!
//! [`Drain`] is the policy, fed the signals, the number of calls not yet written and `now`;
//! [`InFlight`] counts the calls from their start until their contact log is written.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long hung-up calls get to write their recordings and contact logs (and their BYEs to
/// be answered) before screenpop exits regardless.
pub const HANG_UP_GRACE: Duration = Duration::from_secs(15);

/// What the server loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Refuse new calls and let those in progress finish (the first signal).
    StartDraining,
    /// Hang up every call still in progress.
    HangUpAll,
    /// Every call is written (or the grace is over): exit.
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Serving,
    Draining { deadline: Instant },
    HangingUp { since: Instant },
}

/// The longest drain taken (a day): a larger `drain_secs` is read as this.
pub const MAX_DRAIN: Duration = Duration::from_secs(86_400);

/// See the module documentation.
#[derive(Debug)]
pub struct Drain {
    drain: Duration,
    state: State,
    /// Signals received: the drain ending by itself is not a signal, so a second signal after
    /// it only hangs up (done already) and a third exits.
    signals: u8,
}

impl Drain {
    pub fn new(drain: Duration) -> Drain {
        Drain {
            drain: drain.min(MAX_DRAIN),
            state: State::Serving,
            signals: 0,
        }
    }

    /// Whether new calls are refused.
    pub fn refusing(&self) -> bool {
        self.state != State::Serving
    }

    /// When a caller refused now may try again, in seconds (Retry-After): after the drain, or
    /// soon when it is already over.
    pub fn retry_after(&self, now: Instant) -> u64 {
        match self.state {
            State::Draining { deadline } => deadline.saturating_duration_since(now).as_secs() + 5,
            _ => 5,
        }
    }

    /// A SIGTERM or SIGINT.
    pub fn signal(&mut self, now: Instant) -> Step {
        self.signals = self.signals.saturating_add(1);
        match self.state {
            State::Serving => {
                self.state = State::Draining {
                    deadline: now.checked_add(self.drain).unwrap_or(now),
                };
                Step::StartDraining
            }
            State::Draining { .. } => {
                self.state = State::HangingUp { since: now };
                Step::HangUpAll
            }
            // The drain ran out before this second signal: the calls are being hung up.
            State::HangingUp { .. } if self.signals <= 2 => Step::Nothing,
            State::HangingUp { .. } => Step::Exit,
        }
    }

    /// How things stand: `live` calls not yet written.
    pub fn tick(&mut self, now: Instant, live: usize) -> Step {
        match self.state {
            State::Serving => Step::Nothing,
            _ if live == 0 => Step::Exit,
            State::Draining { deadline } if now >= deadline => {
                self.state = State::HangingUp { since: now };
                Step::HangUpAll
            }
            State::Draining { .. } => Step::Nothing,
            State::HangingUp { since } if now >= since + HANG_UP_GRACE => Step::Exit,
            State::HangingUp { .. } => Step::Nothing,
        }
    }
}

/// The calls of this node from their start until their recording and contact log are
/// written and their signalling is over (each BYE or CANCEL answered), and whether new ones
/// are refused (shared by the dispatcher, the dialer, the campaign runner and the server loop).
#[derive(Debug)]
pub struct InFlight {
    calls: AtomicUsize,
    refusing: AtomicBool,
    retry_after: AtomicU64,
    /// Set once the drain is over: every call task, greeting and placed call (also one that
    /// starts after this) hangs up.
    hang_up: tokio::sync::watch::Sender<bool>,
}

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight {
            calls: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            retry_after: AtomicU64::new(0),
            hang_up: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// One call's place in [`InFlight`]: dropped once its contact log is written (or with its
/// task, should it end without).
#[derive(Debug)]
pub struct InFlightCall(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightCall {
        self.calls.fetch_add(1, Ordering::SeqCst);
        InFlightCall(self.clone())
    }

    pub fn len(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From now on new calls are refused; their callers may try again in `retry_after`
    /// seconds.
    pub fn refuse_new(&self, retry_after: u64) {
        self.retry_after.store(retry_after, Ordering::SeqCst);
        self.refusing.store(true, Ordering::SeqCst);
    }

    pub fn retry_after(&self) -> u64 {
        self.retry_after.load(Ordering::SeqCst)
    }

    /// Whether screenpop is shutting down and takes no new call.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    /// The drain is over: every call hangs up, those starting later at once.
    pub fn hang_up_all(&self) {
        self.hang_up.send_replace(true);
    }

    /// Resolves once [`InFlight::hang_up_all`] has been called (at once if it has been).
    pub fn until_hang_up(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.hang_up.subscribe();
        async move {
            // The sender lives as long as the server: an error means it is gone, hang up too.
            let _ = rx.wait_for(|h| *h).await;
        }
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(30);

    #[test]
    fn calls_finish_within_the_drain_and_screenpop_exits() {
        let mut d = Drain::new(DRAIN);
        let t0 = Instant::now();
        assert!(!d.refusing());
        assert_eq!(
            d.tick(t0, 3),
            Step::Nothing,
            "serving: calls are not counted"
        );
        assert_eq!(d.signal(t0), Step::StartDraining);
        assert!(d.refusing());
        assert_eq!(d.retry_after(t0), 35);
        assert_eq!(d.tick(t0 + Duration::from_secs(10), 2), Step::Nothing);
        assert_eq!(d.tick(t0 + Duration::from_secs(12), 0), Step::Exit);
    }

    #[test]
    fn calls_left_at_the_deadline_are_hung_up_then_waited_for() {
        let mut d = Drain::new(DRAIN);
        let t0 = Instant::now();
        d.signal(t0);
        assert_eq!(d.tick(t0 + DRAIN, 2), Step::HangUpAll);
        assert_eq!(d.retry_after(t0 + DRAIN), 5);
        assert_eq!(
            d.tick(t0 + DRAIN + Duration::from_secs(1), 1),
            Step::Nothing
        );
        assert_eq!(d.tick(t0 + DRAIN + Duration::from_secs(2), 0), Step::Exit);
        // A call that never writes its log does not keep screenpop up forever.
        let mut d = Drain::new(DRAIN);
        d.signal(t0);
        d.tick(t0 + DRAIN, 1);
        assert_eq!(d.tick(t0 + DRAIN + HANG_UP_GRACE, 1), Step::Exit);
    }

    #[test]
    fn a_second_signal_hurries_and_a_third_exits() {
        let mut d = Drain::new(DRAIN);
        let t0 = Instant::now();
        assert_eq!(d.signal(t0), Step::StartDraining);
        assert_eq!(d.signal(t0 + Duration::from_secs(1)), Step::HangUpAll);
        assert_eq!(d.tick(t0 + Duration::from_secs(2), 1), Step::Nothing);
        assert_eq!(d.signal(t0 + Duration::from_secs(3)), Step::Exit);
    }

    /// The drain ending by itself is not a signal: the next one does not exit at once.
    #[test]
    fn a_signal_after_the_drain_ran_out_waits_and_the_next_exits() {
        let mut d = Drain::new(DRAIN);
        let t0 = Instant::now();
        d.signal(t0);
        assert_eq!(d.tick(t0 + DRAIN, 1), Step::HangUpAll);
        assert_eq!(d.signal(t0 + DRAIN + Duration::from_secs(1)), Step::Nothing);
        assert_eq!(
            d.tick(t0 + DRAIN + Duration::from_secs(2), 1),
            Step::Nothing
        );
        assert_eq!(d.signal(t0 + DRAIN + Duration::from_secs(3)), Step::Exit);
    }

    /// An absurd `drain_secs` is a day, not a panic.
    #[test]
    fn a_huge_drain_is_capped() {
        let mut d = Drain::new(Duration::from_secs(u64::MAX));
        let t0 = Instant::now();
        assert_eq!(d.signal(t0), Step::StartDraining);
        assert_eq!(d.retry_after(t0), MAX_DRAIN.as_secs() + 5);
        assert_eq!(d.tick(t0 + MAX_DRAIN, 1), Step::HangUpAll);
    }

    #[test]
    fn in_flight_counts_until_the_guard_goes() {
        let f = Arc::new(InFlight::default());
        let a = f.enter();
        let b = f.enter();
        assert_eq!(f.len(), 2);
        drop(a);
        assert_eq!(f.len(), 1);
        drop(b);
        assert!(f.is_empty());
        assert!(!f.refusing());
        f.refuse_new(35);
        assert!(f.refusing());
        assert_eq!(f.retry_after(), 35);
    }

    /// A call that starts after the hang-up (placed while it was being decided) hangs up too.
    #[tokio::test]
    async fn the_hang_up_reaches_calls_started_before_and_after_it() {
        let f = Arc::new(InFlight::default());
        let before = tokio::spawn(f.until_hang_up());
        tokio::task::yield_now().await;
        assert!(!before.is_finished());
        f.hang_up_all();
        tokio::time::timeout(Duration::from_secs(5), before)
            .await
            .expect("woken")
            .expect("joined");
        tokio::time::timeout(Duration::from_secs(5), f.until_hang_up())
            .await
            .expect("a later call is told at once");
    }
}
