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
pub struct LoginLimits {
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

/// The policy.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    limits: LoginLimits,
    by_address: Failures,
    by_username: Failures,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            ..LoginLimiter::default()
        }
    }

    /// `Some(wait)` when this attempt must be refused.
    pub fn blocked(
        &mut self,
        now: Instant,
        addr: Option<IpAddr>,
        username: &str,
    ) -> Option<Duration> {
        let l = self.limits;
        let by_addr = addr.and_then(|a| {
            self.by_address
                .wait(&a.to_string(), now, l.window, l.per_address)
        });
        let by_user =
            self.by_username
                .wait(&username.to_lowercase(), now, l.window, l.per_username);
        by_addr.max(by_user)
    }

    pub fn failed(&mut self, now: Instant, addr: Option<IpAddr>, username: &str) {
        let l = self.limits;
        if let Some(a) = addr {
            self.by_address.push(a.to_string(), now, l.per_address);
        }
        self.by_username
            .push(username.to_lowercase(), now, l.per_username);
        // Keep memory bounded under a spray of random usernames: forget idle keys.
        if self.by_username.0.len() > 100_000 {
            self.by_username.0.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < l.window)
            });
        }
    }

    pub fn succeeded(&mut self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.by_address.0.remove(&a.to_string());
        }
    }
}

/// The limiter shared by the login handlers.
#[derive(Debug, Default)]
pub struct LoginGuard(Mutex<LoginLimiter>);

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> LoginGuard {
        LoginGuard(Mutex::new(LoginLimiter::new(limits)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut LoginLimiter) -> T) -> T {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn blocked(&self, now: Instant, addr: Option<IpAddr>, username: &str) -> Option<Duration> {
        self.with(|l| l.blocked(now, addr, username))
    }

    pub fn failed(&self, now: Instant, addr: Option<IpAddr>, username: &str) {
        self.with(|l| l.failed(now, addr, username))
    }

    pub fn succeeded(&self, addr: Option<IpAddr>, _username: &str) {
        self.with(|l| l.succeeded(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn an_address_is_blocked_after_its_limit_until_the_window_moves() {
        let mut l = LoginLimiter::new(LoginLimits {
            window: Duration::from_secs(60),
            per_address: 3,
            per_username: 100,
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(
                l.blocked(t0, ip("10.0.0.1"), "ann").is_none(),
                "attempt {i}"
            );
            l.failed(t0 + Duration::from_secs(i), ip("10.0.0.1"), "ann");
        }
        let wait = l.blocked(t0 + Duration::from_secs(3), ip("10.0.0.1"), "bob");
        assert_eq!(
            wait,
            Some(Duration::from_secs(57)),
            "any username from that address"
        );
        // Another address is not affected.
        assert!(l.blocked(t0, ip("10.0.0.2"), "ann").is_none());
        // The oldest failure ages out after the window.
        assert!(l
            .blocked(t0 + Duration::from_secs(60), ip("10.0.0.1"), "ann")
            .is_none());
    }

    #[test]
    fn a_username_sprayed_from_many_addresses_is_slowed_and_success_clears_the_address() {
        let mut l = LoginLimiter::new(LoginLimits {
            window: Duration::from_secs(60),
            per_address: 3,
            per_username: 5,
        });
        let t = Instant::now();
        for i in 0..5 {
            l.failed(t, ip(&format!("10.0.1.{i}")), "Ann");
        }
        assert!(
            l.blocked(t, ip("10.9.9.9"), "ann").is_some(),
            "case-insensitive"
        );
        assert!(l.blocked(t, ip("10.9.9.9"), "bob").is_none());
        l.failed(t, ip("10.0.0.7"), "x");
        l.failed(t, ip("10.0.0.7"), "y");
        l.succeeded(ip("10.0.0.7"));
        l.failed(t, ip("10.0.0.7"), "z");
        assert!(l.blocked(t, ip("10.0.0.7"), "w").is_none());
    }
}
