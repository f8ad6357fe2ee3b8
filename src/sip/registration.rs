//! Registration client for trunks that need it (RFC 3261 §10.2): registers, answers 401/407
//! challenges (RFC 3261 §22.2, RFC 8760), refreshes before the granted expiry and retries with
//! back-off after failures. Sans-IO: driven by `now` and responses, it says what to send.

use std::time::{Duration, Instant};

use super::digest;
use super::headers::{HeaderName, NameAddr};
use super::message::{Method, Request, Response};
use super::transaction::{new_branch, ClientTransaction, TimerConfig, TxOutput};
use super::Uri;

/// What the registration is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    /// Waiting until `at` to send the next REGISTER.
    Idle { at: Instant },
    /// A REGISTER is in flight.
    Registering,
    /// Registered until `until`; the refresh is sent at `refresh_at`.
    Registered { until: Instant, refresh_at: Instant },
}

/// Reported to the owner for logging and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    Registered { expires: u32 },
    Failed { status: Option<u16> },
}

/// Static parameters of one registration.
#[derive(Debug, Clone)]
pub struct RegConfig {
    pub registrar: Uri,
    pub user: String,
    pub auth_user: String,
    pub password: String,
    pub expires: u32,
    /// Our Via sent-by (`host:port`) and transport name (`UDP`/`TCP`).
    pub sent_by: String,
    pub transport: &'static str,
    /// Our Contact value.
    pub contact: String,
    pub reliable: bool,
}

pub struct RegistrationClient {
    cfg: RegConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: RegState,
    tx: Option<ClientTransaction>,
    auth: Option<(HeaderName, String)>,
    challenges_in_a_row: u8,
    failures_in_a_row: u32,
    timers: TimerConfig,
    outbox: Vec<Vec<u8>>,
    events: Vec<RegEvent>,
}

impl RegistrationClient {
    pub fn new(now: Instant, cfg: RegConfig, call_id: String, timers: TimerConfig) -> Self {
        RegistrationClient {
            cfg,
            call_id,
            from_tag: format!("{:08x}", rand::random::<u32>()),
            cseq: 0,
            state: RegState::Idle { at: now },
            tx: None,
            auth: None,
            challenges_in_a_row: 0,
            failures_in_a_row: 0,
            timers,
            outbox: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn state(&self) -> RegState {
        self.state
    }

    fn register(&mut self, now: Instant) {
        self.cseq += 1;
        let aor = Uri::sip(Some(&self.cfg.user), &self.cfg.registrar.host, None);
        let mut from = NameAddr::new(aor.clone());
        from.set_param("tag", Some(&self.from_tag));
        let mut req = Request::new(Method::Register, self.cfg.registrar.clone());
        req.headers.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={};rport",
                self.cfg.transport,
                self.cfg.sent_by,
                new_branch()
            ),
        );
        req.headers.push(HeaderName::MaxForwards, "70");
        req.headers.push(HeaderName::From, from.to_string());
        req.headers
            .push(HeaderName::To, NameAddr::new(aor).to_string());
        req.headers.push(HeaderName::CallId, self.call_id.clone());
        req.headers
            .push(HeaderName::CSeq, format!("{} REGISTER", self.cseq));
        req.headers
            .push(HeaderName::Contact, self.cfg.contact.clone());
        req.headers
            .push(HeaderName::Expires, self.cfg.expires.to_string());
        if let Some((h, v)) = &self.auth {
            req.headers.push(h.clone(), v.clone());
        }
        let tx = ClientTransaction::new(now, req, self.cfg.reliable, self.timers);
        self.tx = Some(tx);
        self.state = RegState::Registering;
        self.drain_tx(now);
    }

    /// Feeds a response whose Call-ID is ours.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        if let Some(tx) = &mut self.tx {
            if tx.matches(&resp) {
                tx.handle_response(now, resp);
            }
        }
        self.drain_tx(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = &mut self.tx {
            tx.handle_timeout(now);
            self.drain_tx(now);
        }
        match self.state {
            RegState::Idle { at } if now >= at => self.register(now),
            RegState::Registered { refresh_at, .. } if now >= refresh_at => self.register(now),
            _ => {}
        }
    }

    fn drain_tx(&mut self, now: Instant) {
        let Some(tx) = &mut self.tx else { return };
        let mut finals = Vec::new();
        let mut timed_out = false;
        while let Some(o) = tx.poll_output() {
            match o {
                TxOutput::Transmit(b) => self.outbox.push(b),
                TxOutput::Response(r) if r.status >= 200 => finals.push(r),
                TxOutput::Timeout => timed_out = true,
                _ => {}
            }
        }
        if timed_out {
            self.tx = None;
            self.fail(now, None);
            return;
        }
        for r in finals {
            self.tx = None;
            self.on_final(now, r);
        }
    }

    fn on_final(&mut self, now: Instant, r: Response) {
        match r.status {
            200..=299 => {
                self.challenges_in_a_row = 0;
                self.failures_in_a_row = 0;
                // The registrar may grant less than we asked for (RFC 3261 §10.2.4): read the
                // expiry of our own Contact, else the Expires header.
                let ours = NameAddr::parse(&self.cfg.contact, "Contact").ok();
                let granted = r
                    .headers
                    .get_all(&HeaderName::Contact)
                    .filter_map(|c| NameAddr::parse(c, "Contact").ok())
                    .find(|c| {
                        ours.as_ref().is_some_and(|o| {
                            o.uri.user == c.uri.user
                                && o.uri.host == c.uri.host
                                && o.uri.port == c.uri.port
                        })
                    })
                    .and_then(|c| c.param("expires").flatten().and_then(|e| e.parse().ok()))
                    .or_else(|| {
                        r.headers
                            .get(&HeaderName::Expires)
                            .and_then(|e| e.trim().parse().ok())
                    })
                    .unwrap_or(self.cfg.expires);
                let until = now + Duration::from_secs(granted as u64);
                // Refresh when most of the interval has passed, well before expiry, but never
                // sooner than 5 s from now: a tiny grant must not become a REGISTER storm.
                let lead = (granted as u64 / 4).clamp(1, 60);
                let refresh_in = (granted as u64).saturating_sub(lead).max(5);
                let refresh_at = now + Duration::from_secs(refresh_in);
                self.state = RegState::Registered { until, refresh_at };
                self.events.push(RegEvent::Registered { expires: granted });
            }
            401 | 407 if self.challenges_in_a_row < 2 => {
                self.challenges_in_a_row += 1;
                let (ch, auth) = if r.status == 401 {
                    (HeaderName::WwwAuthenticate, HeaderName::Authorization)
                } else {
                    (
                        HeaderName::ProxyAuthenticate,
                        HeaderName::ProxyAuthorization,
                    )
                };
                let value = digest::best_challenge(r.headers.get_all(&ch)).and_then(|c| {
                    digest::respond(
                        &c,
                        &self.cfg.auth_user,
                        &self.cfg.password,
                        "REGISTER",
                        &self.cfg.registrar.to_string(),
                        &digest::new_cnonce(),
                        1,
                    )
                });
                match value {
                    Ok(v) => {
                        self.auth = Some((auth, v));
                        self.register(now);
                    }
                    Err(_) => self.fail(now, Some(r.status)),
                }
            }
            423 => {
                // Interval too brief: take the registrar's minimum (RFC 3261 §10.2.8).
                if let Some(min) = r
                    .headers
                    .get_named("Min-Expires")
                    .and_then(|m| m.trim().parse().ok())
                {
                    self.cfg.expires = min;
                    self.register(now);
                } else {
                    self.fail(now, Some(423));
                }
            }
            s => self.fail(now, Some(s)),
        }
    }

    fn fail(&mut self, now: Instant, status: Option<u16>) {
        self.challenges_in_a_row = 0;
        self.failures_in_a_row += 1;
        let backoff = (5u64 << self.failures_in_a_row.min(6)).min(300);
        self.state = RegState::Idle {
            at: now + Duration::from_secs(backoff),
        };
        self.events.push(RegEvent::Failed { status });
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.outbox.is_empty() {
            None
        } else {
            Some(self.outbox.remove(0))
        }
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            RegState::Idle { at } => Some(at),
            RegState::Registered { refresh_at, .. } => Some(refresh_at),
            RegState::Registering => None,
        };
        let tx = self.tx.as_ref().and_then(|t| t.poll_timeout());
        match (state, tx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::registrar::Registrar;
    use crate::transport::{Peer, Transport};

    fn parse_request(bytes: &[u8]) -> Option<Request> {
        match Message::parse(bytes).ok()? {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    fn cfg(pw: &str) -> RegConfig {
        RegConfig {
            registrar: Uri::parse("sip:127.0.0.1:5070").unwrap(),
            user: "1001".into(),
            auth_user: "1001".into(),
            password: pw.into(),
            expires: 120,
            sent_by: "127.0.0.1:5060".into(),
            transport: "UDP",
            contact: "<sip:screenpop@127.0.0.1:5060>".into(),
            reliable: false,
        }
    }

    /// Steps our client against our own registrar on fake time.
    fn exchange(client: &mut RegistrationClient, reg: &mut Registrar, now: Instant, secs: u64) {
        let peer = Peer {
            addr: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        };
        while let Some(b) = client.poll_transmit() {
            let req = parse_request(&b).unwrap();
            let resp = reg.handle(now, secs, &req, peer);
            client.handle_response(now, resp);
        }
    }

    #[test]
    fn registers_through_a_challenge_and_refreshes_before_expiry() {
        let t0 = Instant::now();
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        let mut c = RegistrationClient::new(t0, cfg("pw"), "reg-1".into(), TimerConfig::default());
        c.handle_timeout(t0);
        exchange(&mut c, &mut reg, t0, 1000);
        let RegState::Registered { until, refresh_at } = c.state() else {
            panic!("not registered: {:?}", c.state());
        };
        assert_eq!(until - t0, Duration::from_secs(120));
        assert_eq!(refresh_at - t0, Duration::from_secs(90));
        assert_eq!(c.poll_event(), Some(RegEvent::Registered { expires: 120 }));
        assert_eq!(c.poll_timeout(), Some(refresh_at));
        // At the refresh time it registers again, still bound, before expiry.
        c.handle_timeout(refresh_at);
        exchange(&mut c, &mut reg, refresh_at, 1090);
        assert!(matches!(c.state(), RegState::Registered { .. }));
        assert_eq!(reg.contacts("1001", refresh_at).len(), 1);
        assert!(reg.contacts("1001", until + Duration::from_secs(1)).len() == 1);
    }

    #[test]
    fn wrong_password_backs_off() {
        let t0 = Instant::now();
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        let mut c = RegistrationClient::new(t0, cfg("bad"), "reg-2".into(), TimerConfig::default());
        c.handle_timeout(t0);
        exchange(&mut c, &mut reg, t0, 1000);
        let RegState::Idle { at } = c.state() else {
            panic!("{:?}", c.state())
        };
        assert!(at > t0 + Duration::from_secs(5));
        assert!(matches!(
            c.poll_event(),
            Some(RegEvent::Failed { status: Some(401) })
        ));
    }

    #[test]
    fn timeout_without_registrar() {
        let t0 = Instant::now();
        let mut c = RegistrationClient::new(t0, cfg("pw"), "reg-3".into(), TimerConfig::default());
        c.handle_timeout(t0);
        let mut sent = 0;
        let mut now = t0;
        while let Some(at) = c.poll_timeout() {
            if at > t0 + Duration::from_secs(40) {
                break;
            }
            now = at;
            c.handle_timeout(now);
            while c.poll_transmit().is_some() {
                sent += 1;
            }
        }
        assert!(sent >= 10, "Timer E retransmissions: {sent}");
        assert!(matches!(c.state(), RegState::Idle { .. }));
        assert_eq!(c.poll_event(), Some(RegEvent::Failed { status: None }));
        let _ = now;
    }
}
