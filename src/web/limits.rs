//! Password guessing on `POST /api/login`: failed logins are counted per client address and per
//! username within a sliding window; past the limit, that address (or that username, from any
//! address) gets 429 until the window has moved on. A successful login clears its address.
//!
//! The per-username limit is higher than the per-address one, so one guesser cannot lock a user
//! out, while many guessers spread over addresses are still slowed down. The policy is a plain
//! state machine fed `now`; [`LoginGuard`] puts it behind a lock for the handlers.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits for the login guard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginLimits {
    pub window: Duration,
    pub per_address: usize,
    pub per_username: usize,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            window: Duration::from_secs(300),
            per_address: 10,
            per_username: 20,
        }
    }
}

/// Failure times per key, oldest first.
#[derive(Debug, Default)]
struct Failures(HashMap<String, VecDeque<Instant>>);

impl Failures {
    fn prune(&mut self, key: &str, now: Instant, window: Duration) -> usize {
        let Some(q) = self.0.get_mut(key) else {
            return 0;
        };
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            q.pop_front();
        }
        let n = q.len();
        if n == 0 {
            self.0.remove(key);
        }
        n
    }

    /// How long until `key` falls back under `limit`, if it is at or over it.
    fn wait(
        &mut self,
        key: &str,
        now: Instant,
        window: Duration,
        limit: usize,
    ) -> Option<Duration> {
        if self.prune(key, now, window) < limit {
            return None;
        }
        let q = self.0.get(key)?;
        // The failure that must age out for the count to drop below the limit.
        let t = q.get(q.len() - limit)?;
        Some(window.saturating_sub(now.saturating_duration_since(*t)))
    }

    fn push(&mut self, key: String, now: Instant, cap: usize) {
        let q = self.0.entry(key).or_default();
        q.push_back(now);
        while q.len() > cap {
            q.pop_front();
        }
    }
}

/// A login attempt in progress: already counted as a failure, taken back if it succeeds.
/// Counting before the password is checked means concurrent guesses cannot all slip in
/// between a check and its count.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    addr: Option<IpAddr>,
    username: String,
    at: Instant,
}

/// The policy.
#[derive(Debug, Default)]
pub(crate) struct LoginLimiter {
    limits: LoginLimits,
    by_address: Failures,
    by_username: Failures,
    /// Addresses each user has logged in from: the per-username limit does not apply to them,
    /// so guessers spread over many addresses cannot lock the real user out.
    known: HashMap<String, VecDeque<IpAddr>>,
}

/// How many addresses are remembered per user.
const KNOWN_PER_USER: usize = 8;

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            ..LoginLimiter::default()
        }
    }

    /// Starts an attempt, or says how long this address (or this username, from an address it
    /// was never used from) must wait.
    pub fn begin(
        &mut self,
        now: Instant,
        addr: Option<IpAddr>,
        username: &str,
    ) -> Result<Attempt, Duration> {
        let l = self.limits;
        let user = username.to_lowercase();
        let by_addr = addr.and_then(|a| {
            self.by_address
                .wait(&a.to_string(), now, l.window, l.per_address)
        });
        let known = addr.is_some_and(|a| self.known.get(&user).is_some_and(|k| k.contains(&a)));
        let by_user = if known {
            None
        } else {
            self.by_username.wait(&user, now, l.window, l.per_username)
        };
        if let Some(wait) = by_addr.max(by_user) {
            return Err(wait);
        }
        if let Some(a) = addr {
            self.by_address.push(a.to_string(), now, l.per_address);
        }
        self.by_username.push(user.clone(), now, l.per_username);
        // Keep memory bounded under a spray of random usernames: forget idle keys.
        if self.by_username.0.len() > 100_000 {
            self.by_username.0.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < l.window)
            });
        }
        Ok(Attempt {
            addr,
            username: user,
            at: now,
        })
    }

    /// An admin lifted this address's block: its failures are forgotten.
    pub fn forgive(&mut self, addr: IpAddr) {
        self.by_address.0.remove(&addr.to_string());
    }

    /// The attempt was right: it is no failure, and its address is one this user uses.
    pub fn succeeded(&mut self, a: &Attempt) {
        let take_back = |f: &mut Failures, key: &str| {
            if let Some(q) = f.0.get_mut(key) {
                if let Some(i) = q.iter().rposition(|t| *t == a.at) {
                    q.remove(i);
                }
            }
        };
        if let Some(ip) = a.addr {
            take_back(&mut self.by_address, &ip.to_string());
            if self.known.len() < 100_000 || self.known.contains_key(&a.username) {
                let k = self.known.entry(a.username.clone()).or_default();
                if !k.contains(&ip) {
                    k.push_back(ip);
                    if k.len() > KNOWN_PER_USER {
                        k.pop_front();
                    }
                }
            }
        }
        take_back(&mut self.by_username, &a.username);
    }
}

/// The limiter shared by the login handlers, and a bound on concurrent password checks (argon2
/// takes memory and CPU on purpose; a flood must queue, not exhaust the machine).
#[derive(Debug)]
pub(crate) struct LoginGuard {
    limiter: Mutex<LoginLimiter>,
    pub checks: tokio::sync::Semaphore,
}

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> LoginGuard {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoginGuard {
            limiter: Mutex::new(LoginLimiter::new(limits)),
            checks: tokio::sync::Semaphore::new(cores),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LoginLimiter) -> T) -> T {
        let mut g = match self.limiter.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn begin(
        &self,
        now: Instant,
        addr: Option<IpAddr>,
        username: &str,
    ) -> Result<Attempt, Duration> {
        self.with(|l| l.begin(now, addr, username))
    }

    pub fn succeeded(&self, a: &Attempt) {
        self.with(|l| l.succeeded(a))
    }

    pub fn forgive(&self, addr: IpAddr) {
        self.with(|l| l.forgive(addr))
    }
}

/// Which user played which recording when: the requests of one playback (a player fetches
/// many ranges while seeking) make one audit entry, however they are split.
#[derive(Debug, Default)]
pub(crate) struct RecentPlays(Mutex<HashMap<(String, i64), Instant>>);

/// Requests closer together than this belong to the same playback.
const PLAYBACK: Duration = Duration::from_secs(60);

impl RecentPlays {
    /// True when `user` has not fetched `recording` within the last minute (and notes it now).
    pub fn first_in_a_while(&self, user: &str, recording: i64) -> bool {
        let now = Instant::now();
        let mut m = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if m.len() > 10_000 {
            m.retain(|_, t| now.saturating_duration_since(*t) < PLAYBACK);
        }
        match m.insert((user.to_string(), recording), now) {
            Some(t) => now.saturating_duration_since(t) >= PLAYBACK,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn limiter(per_address: usize, per_username: usize) -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            window: Duration::from_secs(60),
            per_address,
            per_username,
        })
    }

    #[test]
    fn an_address_is_blocked_after_its_limit_until_the_window_moves() {
        let mut l = limiter(3, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(
                l.begin(t0 + Duration::from_secs(i), ip("10.0.0.1"), "ann")
                    .is_ok(),
                "attempt {i}"
            );
        }
        let wait = l
            .begin(t0 + Duration::from_secs(3), ip("10.0.0.1"), "bob")
            .err();
        assert_eq!(
            wait,
            Some(Duration::from_secs(57)),
            "any username from that address"
        );
        assert!(
            l.begin(t0, ip("10.0.0.2"), "ann").is_ok(),
            "another address is not affected"
        );
        assert!(
            l.begin(t0 + Duration::from_secs(60), ip("10.0.0.1"), "ann")
                .is_ok(),
            "aged out"
        );
    }

    #[test]
    fn concurrent_attempts_count_before_any_password_is_checked() {
        let mut l = limiter(3, 100);
        let t = Instant::now();
        // Four requests arrive together: the fourth is refused before any of them finishes.
        let started: Vec<_> = (0..4).map(|_| l.begin(t, ip("10.0.0.1"), "ann")).collect();
        assert_eq!(started.iter().filter(|r| r.is_ok()).count(), 3);
    }

    #[test]
    fn a_success_takes_back_only_itself() {
        let mut l = limiter(3, 100);
        let t = Instant::now();
        let _ = l.begin(t, ip("10.0.0.7"), "x");
        let _ = l.begin(t, ip("10.0.0.7"), "y");
        let mine = l
            .begin(t + Duration::from_millis(1), ip("10.0.0.7"), "me")
            .unwrap();
        l.succeeded(&mine);
        // The guesses before still count: a valid login does not reset the address.
        let _ = l.begin(t, ip("10.0.0.7"), "z");
        assert!(l.begin(t, ip("10.0.0.7"), "w").is_err());
    }

    #[test]
    fn a_sprayed_username_is_refused_except_from_addresses_it_logged_in_from() {
        let mut l = limiter(100, 5);
        let t = Instant::now();
        let ok = l.begin(t, ip("10.9.9.9"), "Ann").unwrap();
        l.succeeded(&ok);
        for i in 0..5 {
            let _ = l.begin(t, ip(&format!("10.0.1.{i}")), "ann");
        }
        assert!(
            l.begin(t, ip("10.8.8.8"), "ANN").is_err(),
            "case-insensitive, new address"
        );
        assert!(
            l.begin(t, ip("10.9.9.9"), "ann").is_ok(),
            "the real user's address"
        );
        assert!(
            l.begin(t, ip("10.8.8.8"), "bob").is_ok(),
            "other users are not affected"
        );
    }
}
