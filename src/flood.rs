//! Floods: a per-source request rate limit in front of the SIP parser, like Kamailio's pike.
//!
//! Every source (IPv4 address, IPv6 /64: [`crate::guard::source_key`]) has a token bucket
//! filled at `rate` tokens a second up to `burst`. A request costs one token, a message that
//! does not parse [`GARBAGE_COST`] more; responses cost nothing (they answer what we sent,
//! and a blocked source's are dropped all the same).
//!
//! - An **untrusted** source that empties its bucket is **blocked**: everything it sends is
//!   dropped unparsed for `ban_secs`, doubled on each repeat up to `max_ban_secs` (a day clean
//!   forgets), and it starts again with an empty bucket, so a flood that goes on is blocked
//!   again at once. One log line per block in the guard's fail2ban format (`scope=flood`).
//! - A **trusted** source (a trunk, the PBX) has its own, much higher `trusted_rate` and
//!   `trusted_burst` and is never blocked: what goes over is dropped (a carrier's
//!   retransmissions recover it) and said once a minute.
//!
//! A plain state machine fed `now`; the transport asks it before parsing, the admin API lists
//! and lifts its blocks. Memory is bounded: a full table forgets idle sources (full buckets)
//! first and then lets new sources through untracked rather than grow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::guard::{source_key, BlockInfo, Blocked};

/// The limits (the profile's `[flood]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloodConfig {
    /// Requests a second an untrusted source may keep up, and how many it may send at once.
    pub rate: f64,
    pub burst: u32,
    /// The first block's length; each repeat doubles it, up to `max_ban_secs`.
    pub ban_secs: u64,
    pub max_ban_secs: u64,
    /// The same for trusted addresses (trunks, the PBX), which are never blocked.
    pub trusted_rate: f64,
    pub trusted_burst: u32,
}

impl Default for FloodConfig {
    fn default() -> FloodConfig {
        FloodConfig {
            rate: 50.0,
            burst: 200,
            ban_secs: 60,
            max_ban_secs: 3600,
            trusted_rate: 5000.0,
            trusted_burst: 20_000,
        }
    }
}

impl FloodConfig {
    /// Within sane bounds: a typo must not block every phone (a rate of 0) nor make a ban that
    /// never ends.
    fn sane(self) -> FloodConfig {
        let rate = |r: f64| {
            if r.is_finite() {
                r.clamp(1.0, 1e6)
            } else {
                1e6
            }
        };
        let ban_secs = self.ban_secs.clamp(1, 86_400);
        FloodConfig {
            rate: rate(self.rate),
            burst: self.burst.clamp(1, 1_000_000),
            ban_secs,
            max_ban_secs: self.max_ban_secs.clamp(ban_secs, 30 * 86_400),
            trusted_rate: rate(self.trusted_rate),
            trusted_burst: self.trusted_burst.clamp(1, 10_000_000),
        }
    }
}

/// What a message that does not parse costs on top of its token: garbage is what scanners and
/// fuzzers send, and it costs a full parse and a 400.
pub const GARBAGE_COST: u32 = 4;

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// Drop it unparsed (a blocked source, or a trusted one over its rate).
    Drop,
    /// The source was blocked by this message (drop it, and say so once: [`report`]).
    Blocked(Blocked),
    /// A trusted source went over its rate for the first time in a minute: drop, and warn.
    Throttled,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    blocked_until: Option<Instant>,
    offences: u32,
    /// When the last block ended (offences are forgotten after a day clean).
    last_block: Option<Instant>,
    /// When a trusted source's throttling was last said.
    warned: Option<Instant>,
}

const MAX_ENTRIES: usize = 100_000;
const FORGET_OFFENCES: Duration = Duration::from_secs(86_400);
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The policy. See the module documentation.
#[derive(Debug)]
pub struct Flood {
    cfg: FloodConfig,
    sources: HashMap<IpAddr, Bucket>,
    /// When the full table was last swept (at most once a second: a sweep is a full scan).
    swept: Option<Instant>,
    /// One shared bucket (ten sources' worth, never blocked) for new sources while the table
    /// is full of active ones: a spray of addresses is limited as a whole, not let through.
    overflow: (f64, Option<Instant>),
}

impl Flood {
    pub fn new(cfg: FloodConfig) -> Flood {
        Flood {
            cfg: cfg.sane(),
            sources: HashMap::new(),
            swept: None,
            overflow: (0.0, None),
        }
    }

    fn limits(&self, trusted: bool) -> (f64, f64) {
        if trusted {
            (self.cfg.trusted_rate, f64::from(self.cfg.trusted_burst))
        } else {
            (self.cfg.rate, f64::from(self.cfg.burst))
        }
    }

    /// A message of `cost` tokens (0: a response, checked only against a block) from `addr`.
    pub fn admit(&mut self, now: Instant, addr: IpAddr, trusted: bool, cost: u32) -> Admit {
        // A trusted address has a bucket of its own, apart from untrusted neighbours in its
        // IPv6 /64 (whose flood must not use up its tokens nor get it blocked).
        let key = if trusted {
            addr.to_canonical()
        } else {
            source_key(addr)
        };
        let (rate, burst) = self.limits(trusted);
        if !self.sources.contains_key(&key) {
            if cost == 0 {
                return Admit::Pass;
            }
            if !self.bound(now) {
                return self.overflow(now, cost);
            }
            self.sources.insert(
                key,
                Bucket {
                    tokens: burst,
                    at: now,
                    blocked_until: None,
                    offences: 0,
                    last_block: None,
                    warned: None,
                },
            );
        }
        let Some(b) = self.sources.get_mut(&key) else {
            return Admit::Pass;
        };
        match b.blocked_until {
            Some(until) if now < until && !trusted => return Admit::Drop,
            Some(until) => {
                // Over (or the address became trusted): the bucket was empty when the ban
                // ended and has been filling since.
                b.blocked_until = None;
                b.tokens = 0.0;
                b.at = until.min(now);
            }
            None => {}
        }
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        let cost = f64::from(cost);
        if b.tokens >= cost {
            b.tokens -= cost;
            return Admit::Pass;
        }
        if trusted {
            if b.warned
                .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
            {
                return Admit::Drop;
            }
            b.warned = Some(now);
            return Admit::Throttled;
        }
        if b.last_block
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_OFFENCES)
        {
            b.offences = 0;
        }
        b.offences += 1;
        let ban = Duration::from_secs(
            self.cfg
                .ban_secs
                .saturating_mul(1 << (b.offences - 1).min(20))
                .min(self.cfg.max_ban_secs),
        );
        b.blocked_until = Some(now + ban);
        b.last_block = Some(now + ban);
        b.tokens = 0.0;
        Admit::Blocked(Blocked {
            addr: key,
            ban,
            offence: b.offences,
            user: None,
        })
    }

    /// New sources while the table is full share one bucket of ten sources' worth.
    fn overflow(&mut self, now: Instant, cost: u32) -> Admit {
        let (rate, burst) = (self.cfg.rate * 10.0, f64::from(self.cfg.burst) * 10.0);
        let (tokens, at) = &mut self.overflow;
        let elapsed = at.map_or(burst / rate, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        *tokens = (*tokens + elapsed * rate).min(burst);
        *at = Some(now);
        if *tokens >= f64::from(cost) {
            *tokens -= f64::from(cost);
            Admit::Pass
        } else {
            Admit::Drop
        }
    }

    /// Whether `addr` is blocked now.
    pub fn is_blocked(&self, now: Instant, addr: IpAddr) -> bool {
        self.sources
            .get(&source_key(addr))
            .and_then(|b| b.blocked_until)
            .is_some_and(|u| now < u)
    }

    /// The blocks in force.
    pub fn blocks(&self, now: Instant) -> Vec<BlockInfo> {
        let mut v: Vec<BlockInfo> = self
            .sources
            .iter()
            .filter_map(|(addr, b)| {
                let until = b.blocked_until.filter(|u| now < *u)?;
                Some(BlockInfo {
                    addr: *addr,
                    remaining: until - now,
                    offence: b.offences,
                })
            })
            .collect();
        v.sort_by_key(|b| b.addr);
        v
    }

    /// Lifts the block on `addr` (an admin's decision): it starts again with a full bucket and
    /// no offences. False when it was not blocked.
    pub fn lift(&mut self, now: Instant, addr: IpAddr) -> bool {
        match self.sources.remove(&source_key(addr)) {
            Some(b) => b.blocked_until.is_some_and(|u| now < u),
            None => false,
        }
    }

    /// Room for one more source: when the table is full, sources whose bucket has filled up
    /// again and that are not blocked go (they would start full anyway). False when there is
    /// still no room (a spray of addresses, each sending a little): the new one goes untracked.
    fn bound(&mut self, now: Instant) -> bool {
        if self.sources.len() < MAX_ENTRIES {
            return true;
        }
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.swept = Some(now);
        let (rate, burst) = (self.cfg.rate, f64::from(self.cfg.burst));
        self.sources.retain(|_, b| {
            let refilled = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
            b.blocked_until.is_some_and(|u| now < u) || refilled < burst
        });
        self.sources.len() < MAX_ENTRIES
    }
}

/// The limiter as the transport and the admin API share it, with the trust the profile gives
/// (trusted addresses get their own limit and are never blocked). A panic while it was held
/// leaves buckets that are still valid data, so a poisoned lock is taken as is.
pub struct FloodGate {
    flood: std::sync::Mutex<Flood>,
    trusted: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for FloodGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodGate").finish_non_exhaustive()
    }
}

impl Default for FloodGate {
    /// No limits to speak of: for sockets that only ever talk to peers they chose (`screenpop
    /// dial`) and for tests of other parts.
    fn default() -> FloodGate {
        FloodGate::new(FloodConfig::default(), |_| true)
    }
}

impl FloodGate {
    pub fn new(cfg: FloodConfig, trusted: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        FloodGate {
            flood: std::sync::Mutex::new(Flood::new(cfg)),
            trusted: Box::new(trusted),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Flood> {
        self.flood.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a message (or a new connection) of `cost` from `addr` be taken? Says so once
    /// when a source is blocked or a trusted one goes over its rate; counts what is dropped.
    /// Over a stream a trusted peer is never refused (it would not retransmit what we drop):
    /// what goes over its rate is only said.
    pub fn admit(&self, addr: IpAddr, cost: u32, stream: bool) -> bool {
        let trusted = (self.trusted)(addr);
        let verdict = self.lock().admit(Instant::now(), addr, trusted, cost);
        match verdict {
            Admit::Pass => return true,
            Admit::Drop => {}
            Admit::Blocked(b) => crate::guard::report("flood", &b),
            Admit::Throttled => tracing::warn!(
                ip = %addr,
                rate = self.lock().cfg.trusted_rate,
                "a trusted address sends faster than [flood] trusted_rate"
            ),
        }
        if trusted && stream {
            return true;
        }
        let scope = if trusted { "trusted" } else { "untrusted" };
        metrics::counter!("screenpop_flood_dropped_total", "scope" => scope).increment(1);
        false
    }

    /// Whether `addr` is trusted (its own limits, never blocked).
    pub fn trusts(&self, addr: IpAddr) -> bool {
        (self.trusted)(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn flood() -> Flood {
        Flood::new(FloodConfig {
            rate: 10.0,
            burst: 20,
            ban_secs: 30,
            max_ban_secs: 100,
            trusted_rate: 100.0,
            trusted_burst: 200,
        })
    }

    fn passed(f: &mut Flood, now: Instant, a: IpAddr, trusted: bool, n: usize) -> usize {
        (0..n)
            .filter(|_| f.admit(now, a, trusted, 1) == Admit::Pass)
            .count()
    }

    #[test]
    fn a_burst_passes_a_flood_is_blocked_and_the_ban_doubles_on_repeat() {
        let mut f = flood();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        assert_eq!(passed(&mut f, t0, a, false, 20), 20);
        let b = match f.admit(t0, a, false, 1) {
            Admit::Blocked(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!((b.addr, b.ban, b.offence), (a, Duration::from_secs(30), 1));
        assert_eq!(
            crate::guard::block_line("flood", &b),
            "screenpop-block ip=192.0.2.7 scope=flood ban_secs=30 offence=1 user=-"
        );
        // Blocked: everything is dropped, responses too, and nothing is said again.
        assert_eq!(
            f.admit(t0 + Duration::from_secs(29), a, false, 1),
            Admit::Drop
        );
        assert_eq!(
            f.admit(t0 + Duration::from_secs(29), a, false, 0),
            Admit::Drop
        );
        assert!(f.is_blocked(t0, a));
        // Another source is not touched.
        assert_eq!(passed(&mut f, t0, ip("192.0.2.8"), false, 20), 20);
        // After the ban the bucket starts empty: a flood that goes on is blocked again at
        // once, for twice as long; a polite sender gets its rate.
        let t1 = t0 + Duration::from_secs(30);
        assert!(!f.is_blocked(t1, a));
        match f.admit(t1, a, false, 1) {
            Admit::Blocked(b) => assert_eq!((b.ban, b.offence), (Duration::from_secs(60), 2)),
            other => panic!("{other:?}"),
        }
        let t2 = t1 + Duration::from_secs(60);
        match f.admit(t2, a, false, 1) {
            Admit::Blocked(b) => assert_eq!((b.ban, b.offence), (Duration::from_secs(100), 3)),
            other => panic!("{other:?}"),
        }
        // A day clean after the last ban forgets the offences.
        let t3 = t2 + Duration::from_secs(100) + FORGET_OFFENCES;
        let polite: usize = (0..50)
            .map(|i| {
                let now = t3 + Duration::from_millis(100 * i);
                usize::from(f.admit(now, a, false, 1) == Admit::Pass)
            })
            .sum();
        assert!(polite >= 49, "{polite}");
        assert_eq!(
            passed(&mut f, t3 + Duration::from_secs(5), a, false, 20),
            20
        );
        match f.admit(t3 + Duration::from_secs(5), a, false, 1) {
            Admit::Blocked(b) => assert_eq!(b.offence, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_steady_rate_under_the_limit_is_never_blocked() {
        let mut f = flood();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        // 9 a second for ten minutes.
        for i in 0..5400u64 {
            let now = t0 + Duration::from_millis(i * 1000 / 9);
            assert_eq!(f.admit(now, a, false, 1), Admit::Pass, "message {i}");
        }
    }

    #[test]
    fn garbage_costs_more_and_responses_nothing() {
        let mut f = flood();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        assert_eq!(
            (0..4)
                .filter(|_| f.admit(t0, a, false, 1 + GARBAGE_COST) == Admit::Pass)
                .count(),
            4
        );
        for _ in 0..1000 {
            assert_eq!(f.admit(t0, a, false, 0), Admit::Pass);
        }
        assert!(matches!(
            f.admit(t0, a, false, 1 + GARBAGE_COST),
            Admit::Blocked(_)
        ));
        // A response from a source never seen is not tracked at all.
        assert_eq!(f.admit(t0, ip("192.0.2.99"), false, 0), Admit::Pass);
        assert!(!f.sources.contains_key(&ip("192.0.2.99")));
    }

    #[test]
    fn a_trusted_source_has_its_own_limit_and_is_never_blocked() {
        let mut f = flood();
        let t0 = Instant::now();
        let pbx = ip("198.51.100.1");
        assert_eq!(passed(&mut f, t0, pbx, true, 200), 200);
        assert_eq!(f.admit(t0, pbx, true, 1), Admit::Throttled);
        assert_eq!(f.admit(t0, pbx, true, 1), Admit::Drop);
        assert!(!f.is_blocked(t0, pbx));
        assert!(f.blocks(t0).is_empty());
        // It refills at its own rate, and a minute on it is said again.
        assert_eq!(
            passed(&mut f, t0 + Duration::from_secs(1), pbx, true, 150),
            100
        );
        assert_eq!(
            f.admit(t0 + Duration::from_secs(1), pbx, true, 1),
            Admit::Drop
        );
        assert_eq!(
            f.admit(t0 + Duration::from_secs(61), pbx, true, 1000),
            Admit::Throttled
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_an_admin_lifts_a_block() {
        let mut f = flood();
        let t0 = Instant::now();
        // Twenty addresses of one /64 share a bucket.
        for i in 0..20u16 {
            let a = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i + 1));
            assert_eq!(f.admit(t0, a, false, 1), Admit::Pass);
        }
        let last = ip("2001:db8:0:1::ffff");
        assert!(matches!(f.admit(t0, last, false, 1), Admit::Blocked(_)));
        let blocks = f.blocks(t0);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].addr, ip("2001:db8:0:1::"));
        assert_eq!(blocks[0].remaining, Duration::from_secs(30));
        assert!(f.lift(t0, ip("2001:db8:0:1::5")));
        assert!(!f.lift(t0, ip("2001:db8:0:1::5")), "already lifted");
        assert_eq!(f.admit(t0, last, false, 1), Admit::Pass);
        // IPv4-mapped is the IPv4 address.
        let v4 = ip("192.0.2.1");
        assert_eq!(passed(&mut f, t0, v4, false, 20), 20);
        assert!(matches!(
            f.admit(t0, ip("::ffff:192.0.2.1"), false, 1),
            Admit::Blocked(_)
        ));
    }

    /// A trusted PBX and an untrusted flooder in one IPv6 /64: the flood neither uses up the
    /// PBX's tokens nor gets it blocked, and the PBX's traffic does not lift the flooder's ban.
    #[test]
    fn a_trusted_address_is_apart_from_its_untrusted_neighbours() {
        let mut f = flood();
        let t0 = Instant::now();
        let pbx = ip("2001:db8:0:1::10");
        let flooder = ip("2001:db8:0:1::66");
        assert_eq!(passed(&mut f, t0, flooder, false, 20), 20);
        assert!(matches!(f.admit(t0, flooder, false, 1), Admit::Blocked(_)));
        assert_eq!(passed(&mut f, t0, pbx, true, 200), 200);
        assert_eq!(f.admit(t0, flooder, false, 1), Admit::Drop, "still blocked");
    }

    #[test]
    fn a_spray_of_addresses_keeps_memory_bounded() {
        let mut f = flood();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.admit(t0, a, false, 1);
        }
        assert!(f.sources.len() <= MAX_ENTRIES);
        // While the table is full, new sources share one bucket of ten sources' worth (200
        // tokens): a spray is limited as a whole, not let through.
        let shared: usize = (0..1000u32)
            .filter(|i| {
                let a = IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0000 + i));
                f.admit(t0, a, false, 1) == Admit::Pass
            })
            .count();
        assert!(shared <= 200, "{shared}");
        // Once their buckets have filled up again, old sources make room for new ones.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(f.admit(later, ip("192.0.2.200"), false, 1), Admit::Pass);
        assert!(f.sources.contains_key(&ip("192.0.2.200")));
        assert!(f.sources.len() < 10);
    }

    #[test]
    fn nonsense_settings_are_clamped() {
        let f = Flood::new(FloodConfig {
            rate: 0.0,
            burst: 0,
            ban_secs: 0,
            max_ban_secs: 0,
            trusted_rate: f64::NAN,
            trusted_burst: 0,
        });
        assert_eq!(f.cfg.rate, 1.0);
        assert_eq!(f.cfg.burst, 1);
        assert_eq!((f.cfg.ban_secs, f.cfg.max_ban_secs), (1, 1));
        assert_eq!(f.cfg.trusted_rate, 1e6);
    }
}
