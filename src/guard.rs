//! Password guessing: failed authentications (SIP digest on REGISTER and on trunks' INVITEs)
//! are counted per source address and per username within a sliding window.
//!
//! - A source with `max_failures` failures within `window` is **blocked**: its requests are
//!   dropped unanswered for `ban`, doubled on each repeat offence (up to `max_ban`), so a
//!   dictionary attack from one address gets a handful of guesses an hour instead of
//!   thousands a second.
//! - A username failing `user_failures` times within `window` from more than one address is
//!   **under attack**: while it is, only addresses that authenticated as it before may try
//!   it (others are dropped), so guessers spread over many addresses are slowed down while the
//!   real phone, from the address it registers from, keeps registering.
//! - Trusted addresses (trunks, the PBX) are never counted nor blocked: the caller says so.
//!
//! A plain state machine fed `now`, with bounded memory (idle entries are forgotten); the SIP
//! dispatcher owns the decisions, the admin API lists and lifts blocks.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits (the profile's `[guard]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Failures from one address within `window_secs` that block it.
    pub max_failures: u32,
    pub window_secs: u64,
    /// The first block's length; each repeat doubles it, up to `max_ban_secs`.
    pub ban_secs: u64,
    pub max_ban_secs: u64,
    /// Failures for one username (from several addresses) within the window that put it under
    /// attack.
    pub user_failures: u32,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            max_failures: 10,
            window_secs: 60,
            ban_secs: 600,
            max_ban_secs: 86_400,
            user_failures: 20,
        }
    }
}

impl GuardConfig {
    /// The settings within sane bounds (a profile's typo must not make a ban that never ends
    /// or overflows the clock): a window of 1 s to a day, bans of 1 s to 30 days.
    fn sane(self) -> GuardConfig {
        let ban_secs = self.ban_secs.clamp(1, 30 * 86_400);
        GuardConfig {
            max_failures: self.max_failures.max(1),
            window_secs: self.window_secs.clamp(1, 86_400),
            ban_secs,
            max_ban_secs: self.max_ban_secs.clamp(ban_secs, 30 * 86_400),
            user_failures: self.user_failures.max(1),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

/// The key an address is counted under: IPv4 (also when seen as IPv4-mapped IPv6 on a
/// dual-stack socket) by itself, IPv6 by its /64, which one host usually has whole (counting
/// single IPv6 addresses would give each guesser 2^64 fresh starts).
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A source just blocked: what the log line and the metrics say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub addr: IpAddr,
    pub ban: Duration,
    /// 1 for the first block, 2 for the next (twice as long), …
    pub offence: u32,
    /// The username of the last failure, if it named one.
    pub user: Option<String>,
}

/// A block in force, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub addr: IpAddr,
    pub remaining: Duration,
    pub offence: u32,
}

/// Whether a request from a source may be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The source is blocked: drop the request unanswered.
    Blocked,
    /// The username is under attack and this source never authenticated as it: drop.
    UserUnderAttack,
}

#[derive(Debug, Default)]
struct Source {
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    /// Blocks so far, and when the last one ended (offences are forgotten after a day clean).
    offences: u32,
    last_block: Option<Instant>,
}

#[derive(Debug, Default)]
struct User {
    failures: VecDeque<(Instant, IpAddr)>,
    /// Addresses that authenticated as this user, most recent last.
    known: VecDeque<IpAddr>,
}

/// How many addresses are remembered per user, and how many sources and users at most.
const KNOWN_PER_USER: usize = 8;
const MAX_ENTRIES: usize = 100_000;
/// A source clean for this long starts again from the first ban.
const FORGET_OFFENCES: Duration = Duration::from_secs(86_400);

/// The policy. See the module documentation.
#[derive(Debug, Default)]
pub struct Guard {
    cfg: GuardConfig,
    sources: HashMap<IpAddr, Source>,
    users: HashMap<String, User>,
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            cfg: cfg.sane(),
            ..Guard::default()
        }
    }

    /// May a request from `addr` (naming `user`, when it carries credentials) be handled?
    pub fn check(&mut self, now: Instant, addr: IpAddr, user: Option<&str>) -> Verdict {
        let addr = source_key(addr);
        if let Some(s) = self.sources.get_mut(&addr) {
            match s.blocked_until {
                Some(until) if now < until => return Verdict::Blocked,
                Some(_) => {
                    s.blocked_until = None;
                    s.last_block = Some(now);
                }
                None => {}
            }
        }
        if let Some(u) = user.and_then(|u| self.users.get_mut(u)) {
            let window = self.cfg.window();
            prune(&mut u.failures, now, window, |(t, _)| *t);
            if under_attack(u, self.cfg.user_failures) && !u.known.contains(&addr) {
                return Verdict::UserUnderAttack;
            }
        }
        Verdict::Allow
    }

    /// A failed authentication from `addr` (as `user`, an account that exists; made-up names
    /// are passed as `None` and count against the source only): counted, and the source
    /// blocked when it reaches the limit.
    pub fn failed(&mut self, now: Instant, addr: IpAddr, user: Option<&str>) -> Option<Blocked> {
        let addr = source_key(addr);
        let window = self.cfg.window();
        if !self.bound(now, addr) {
            // Full of sources active within the window (a botnet): the new one is not
            // tracked; the ones already counted still are.
            return None;
        }
        if let Some(name) = user {
            let u = self.users.entry(name.to_string()).or_default();
            prune(&mut u.failures, now, window, |(t, _)| *t);
            u.failures.push_back((now, addr));
            // Enough to tell an attack; older entries add nothing.
            while u.failures.len() > self.cfg.user_failures.max(1) as usize * 4 {
                u.failures.pop_front();
            }
        }
        let s = self.sources.entry(addr).or_default();
        prune(&mut s.failures, now, window, |t| *t);
        s.failures.push_back(now);
        if s.failures.len() < self.cfg.max_failures.max(1) as usize {
            return None;
        }
        if s.last_block
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_OFFENCES)
        {
            s.offences = 0;
        }
        s.offences += 1;
        let ban = Duration::from_secs(
            self.cfg
                .ban_secs
                .saturating_mul(1 << (s.offences - 1).min(20))
                .min(self.cfg.max_ban_secs.max(self.cfg.ban_secs)),
        );
        s.blocked_until = Some(now + ban);
        s.last_block = Some(now + ban);
        s.failures.clear();
        Some(Blocked {
            addr,
            ban,
            offence: s.offences,
            user: user.map(str::to_string),
        })
    }

    /// `addr` authenticated as `user`: it may try this user even while the user is under
    /// attack, and its failures at this user no longer count towards the attack. The source's
    /// own failures stay (they age out): an account of one's own must not buy fresh guesses at
    /// another's password.
    pub fn succeeded(&mut self, addr: IpAddr, user: &str) {
        let addr = source_key(addr);
        if self.users.len() >= MAX_ENTRIES && !self.users.contains_key(user) {
            return;
        }
        let u = self.users.entry(user.to_string()).or_default();
        u.failures.retain(|(_, a)| *a != addr);
        if !u.known.contains(&addr) {
            u.known.push_back(addr);
            if u.known.len() > KNOWN_PER_USER {
                u.known.pop_front();
            }
        }
    }

    /// How long `addr` stays blocked, if it is.
    pub fn blocked_for(&self, now: Instant, addr: IpAddr) -> Option<Duration> {
        let until = self.sources.get(&source_key(addr))?.blocked_until?;
        (now < until).then(|| until - now)
    }

    /// The blocks in force.
    pub fn blocks(&self, now: Instant) -> Vec<BlockInfo> {
        let mut v: Vec<BlockInfo> = self
            .sources
            .iter()
            .filter_map(|(addr, s)| {
                let until = s.blocked_until.filter(|u| now < *u)?;
                Some(BlockInfo {
                    addr: *addr,
                    remaining: until - now,
                    offence: s.offences,
                })
            })
            .collect();
        v.sort_by_key(|b| b.addr);
        v
    }

    /// Lifts the block on `addr` (an admin's decision): it starts again with no failures and
    /// no offences. False when it was not blocked.
    pub fn lift(&mut self, now: Instant, addr: IpAddr) -> bool {
        match self.sources.remove(&source_key(addr)) {
            Some(s) => s.blocked_until.is_some_and(|u| now < u),
            None => false,
        }
    }

    /// Keeps memory bounded under a spray of addresses: idle entries go once the table is
    /// full (users are bounded by the accounts that exist). False when there is still no room
    /// for `addr`.
    fn bound(&mut self, now: Instant, addr: IpAddr) -> bool {
        let window = self.cfg.window();
        if self.sources.len() >= MAX_ENTRIES && !self.sources.contains_key(&addr) {
            self.sources.retain(|_, s| {
                s.blocked_until.is_some_and(|u| now < u)
                    || s.failures
                        .back()
                        .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
        if self.users.len() >= MAX_ENTRIES {
            self.users.retain(|_, u| {
                !u.known.is_empty()
                    || u.failures
                        .back()
                        .is_some_and(|(t, _)| now.saturating_duration_since(*t) < window)
            });
        }
        self.sources.len() < MAX_ENTRIES || self.sources.contains_key(&addr)
    }
}

/// A guard shared by the SIP dispatcher (or the login handler) and the admin API. A panic
/// while it was held leaves counts that are still valid data, so a poisoned lock is taken as is.
#[derive(Debug, Default)]
pub struct SharedGuard(std::sync::Mutex<Guard>);

impl SharedGuard {
    pub fn new(cfg: GuardConfig) -> SharedGuard {
        SharedGuard(std::sync::Mutex::new(Guard::new(cfg)))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn prune<T>(q: &mut VecDeque<T>, now: Instant, window: Duration, at: impl Fn(&T) -> Instant) {
    while q
        .front()
        .is_some_and(|x| now.saturating_duration_since(at(x)) >= window)
    {
        q.pop_front();
    }
}

/// Many failures from more than one address: not one phone with a stale password.
fn under_attack(u: &User, limit: u32) -> bool {
    if u.failures.len() < limit.max(1) as usize {
        return false;
    }
    let first = u.failures.front().map(|(_, a)| *a);
    u.failures.iter().any(|(_, a)| Some(*a) != first)
}

/// Says so once a source is blocked: the log line and the counter (the blocks in force are
/// listed by the admin API).
pub fn report(scope: &'static str, b: &Blocked) {
    tracing::warn!("{}", block_line(scope, b));
    metrics::counter!("screenpop_blocks_total", "scope" => scope).increment(1);
}

/// The one log line per block, in a format that does not change (a fail2ban filter matches
/// `screenpop-block ip=<HOST> `).
pub fn block_line(scope: &str, b: &Blocked) -> String {
    format!(
        "screenpop-block ip={} scope={scope} ban_secs={} offence={} user={}",
        b.addr,
        b.ban.as_secs(),
        b.offence,
        b.user.as_deref().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn guard() -> Guard {
        Guard::new(GuardConfig {
            max_failures: 3,
            window_secs: 60,
            ban_secs: 100,
            max_ban_secs: 350,
            user_failures: 6,
        })
    }

    #[test]
    fn a_source_is_blocked_at_the_limit_and_each_repeat_doubles_the_ban() {
        let mut g = guard();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        assert!(g.failed(t0, a, Some("1001")).is_none());
        assert!(g.failed(t0, a, Some("1001")).is_none());
        let b = g.failed(t0, a, Some("1001")).expect("blocked");
        assert_eq!((b.ban, b.offence), (Duration::from_secs(100), 1));
        assert_eq!(
            block_line("sip", &b),
            "screenpop-block ip=192.0.2.7 scope=sip ban_secs=100 offence=1 user=1001"
        );
        assert_eq!(g.check(t0, a, None), Verdict::Blocked);
        assert_eq!(g.check(t0, ip("192.0.2.8"), None), Verdict::Allow);
        let listed = g.blocks(t0 + Duration::from_secs(40));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].remaining, Duration::from_secs(60));
        // Over: allowed again, and the next block is twice as long, then capped.
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(g.check(t1, a, None), Verdict::Allow);
        for _ in 0..2 {
            assert!(g.failed(t1, a, None).is_none());
        }
        assert_eq!(g.failed(t1, a, None).map(|b| b.ban.as_secs()), Some(200));
        let t2 = t1 + Duration::from_secs(200);
        for _ in 0..2 {
            g.failed(t2, a, None);
        }
        assert_eq!(g.failed(t2, a, None).map(|b| b.ban.as_secs()), Some(350));
        // A day clean: back to the first ban.
        let t3 = t2 + Duration::from_secs(350) + FORGET_OFFENCES;
        for _ in 0..2 {
            g.failed(t3, a, None);
        }
        assert_eq!(g.failed(t3, a, None).map(|b| b.offence), Some(1));
    }

    #[test]
    fn failures_age_out_of_the_window_and_success_forgives_them() {
        let mut g = guard();
        let t0 = Instant::now();
        let a = ip("198.51.100.1");
        g.failed(t0, a, None);
        g.failed(t0, a, None);
        // A minute later the two are gone.
        let t1 = t0 + Duration::from_secs(60);
        g.failed(t1, a, None);
        assert!(g.failed(t1, a, None).is_none());
        // An account of one's own buys no fresh guesses at another's password.
        g.succeeded(a, "1002");
        assert!(
            g.failed(t1, a, Some("1001")).is_some(),
            "the third within the window"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_and_ipv6_counts_per_64() {
        let mut g = guard();
        let t0 = Instant::now();
        g.failed(t0, ip("::ffff:192.0.2.1"), None);
        g.failed(t0, ip("192.0.2.1"), None);
        let b = g.failed(t0, ip("::ffff:192.0.2.1"), None).expect("blocked");
        assert_eq!(b.addr, ip("192.0.2.1"));
        assert_eq!(g.check(t0, ip("192.0.2.1"), None), Verdict::Blocked);
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
            g.failed(t0, ip(host), None);
        }
        assert_eq!(g.check(t0, ip("2001:db8:1:2::99"), None), Verdict::Blocked);
        assert_eq!(g.check(t0, ip("2001:db8:1:3::1"), None), Verdict::Allow);
        assert!(g.lift(t0, ip("2001:db8:1:2::1234")));
    }

    #[test]
    fn settings_out_of_bounds_are_brought_in() {
        let mut g = Guard::new(GuardConfig {
            max_failures: 0,
            window_secs: 0,
            ban_secs: u64::MAX,
            max_ban_secs: 0,
            user_failures: 0,
        });
        let t0 = Instant::now();
        let b = g
            .failed(t0, ip("192.0.2.9"), None)
            .expect("one failure blocks");
        assert_eq!(b.ban, Duration::from_secs(30 * 86_400));
        g.lift(t0, ip("192.0.2.9"));
        // Repeats stay at the cap.
        for _ in 0..40 {
            g.failed(t0, ip("192.0.2.9"), None);
            g.lift(t0, ip("192.0.2.9"));
        }
    }

    #[test]
    fn a_user_under_attack_from_many_addresses_keeps_its_own_phone() {
        let mut g = guard();
        let t0 = Instant::now();
        let phone = ip("10.0.0.5");
        g.succeeded(phone, "1001");
        // Two guessers per address, spread over addresses: none is blocked by itself.
        for i in 0..6 {
            let a = ip(&format!("203.0.113.{i}"));
            g.failed(t0, a, Some("1001"));
        }
        assert_eq!(
            g.check(t0, ip("203.0.113.99"), Some("1001")),
            Verdict::UserUnderAttack
        );
        assert_eq!(g.check(t0, phone, Some("1001")), Verdict::Allow);
        assert_eq!(
            g.check(t0, ip("203.0.113.99"), Some("1002")),
            Verdict::Allow
        );
        // One phone with a stale password failing alone is no attack on its user.
        let mut g = guard();
        for _ in 0..2 {
            g.failed(t0, ip("10.0.0.9"), Some("1003"));
        }
        assert_eq!(g.check(t0, ip("10.0.0.10"), Some("1003")), Verdict::Allow);
        // The attack ends with the window.
        let mut g2 = guard();
        for i in 0..6 {
            g2.failed(t0, ip(&format!("203.0.113.{i}")), Some("1001"));
        }
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            g2.check(later, ip("203.0.113.99"), Some("1001")),
            Verdict::Allow
        );
    }

    #[test]
    fn an_admin_lifts_a_block() {
        let mut g = guard();
        let t0 = Instant::now();
        let a = ip("2001:db8::1");
        for _ in 0..3 {
            g.failed(t0, a, None);
        }
        assert!(g.lift(t0, a));
        assert_eq!(g.check(t0, a, None), Verdict::Allow);
        assert!(g.blocks(t0).is_empty());
        assert!(!g.lift(t0, a), "nothing left to lift");
    }
}
