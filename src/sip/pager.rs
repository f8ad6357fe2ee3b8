//! One pager-mode instant message (RFC 3428): a MESSAGE request outside any dialog, as
//! gateways that take SMS over SIP expect it (`text/plain;charset=UTF-8`, the number in the
//! Request-URI). It answers the gateway's 401/407 once (RFC 3261 §22.2), and its result is the
//! final response's status, or none after Timer F. Sans-IO: fed `now` and responses, it says
//! what to send.

use std::time::Instant;

use super::digest;
use super::headers::{HeaderName, NameAddr};
use super::message::{Method, Request, Response};
use super::transaction::{new_branch, ClientTransaction, TimerConfig, TxOutput};
use super::Uri;

/// What one message needs.
#[derive(Debug, Clone)]
pub struct PagerConfig {
    /// The Request-URI: the recipient's number at the gateway.
    pub target: Uri,
    /// Our number or name, presented in From.
    pub from_user: String,
    /// Our host, for From.
    pub from_host: String,
    /// The Via value up to the branch (`SIP/2.0/UDP host:port`).
    pub via: String,
    pub reliable: bool,
    /// Digest credentials for the gateway's challenge.
    pub credentials: Option<(String, String)>,
    pub call_id: String,
    pub body: String,
}

/// How the message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagerResult {
    /// A final response (2xx: the gateway took the message).
    Final { status: u16, reason: String },
    /// No final response before Timer F (32 s on UDP).
    Timeout,
}

pub struct PagerMessage {
    cfg: PagerConfig,
    from_tag: String,
    cseq: u32,
    tx: Option<ClientTransaction>,
    challenged: bool,
    timers: TimerConfig,
    outbox: Vec<Vec<u8>>,
    result: Option<PagerResult>,
}

impl PagerMessage {
    /// Builds the MESSAGE and its transaction; the first bytes are ready at once.
    pub fn start(now: Instant, cfg: PagerConfig, timers: TimerConfig) -> PagerMessage {
        let mut m = PagerMessage {
            cfg,
            from_tag: format!("{:08x}", rand::random::<u32>()),
            cseq: 0,
            tx: None,
            challenged: false,
            timers,
            outbox: Vec::new(),
            result: None,
        };
        m.send(now, None);
        m
    }

    fn send(&mut self, now: Instant, auth: Option<(HeaderName, String)>) {
        self.cseq += 1;
        let mut from = NameAddr::new(Uri::sip(
            Some(&self.cfg.from_user),
            &self.cfg.from_host,
            None,
        ));
        from.set_param("tag", Some(&self.from_tag));
        let mut req = Request::new(Method::Message, self.cfg.target.clone());
        req.headers.push(
            HeaderName::Via,
            format!("{};branch={};rport", self.cfg.via, new_branch()),
        );
        req.headers.push(HeaderName::MaxForwards, "70");
        req.headers.push(HeaderName::From, from.to_string());
        req.headers.push(
            HeaderName::To,
            NameAddr::new(self.cfg.target.clone()).to_string(),
        );
        req.headers
            .push(HeaderName::CallId, self.cfg.call_id.clone());
        req.headers
            .push(HeaderName::CSeq, format!("{} MESSAGE", self.cseq));
        if let Some((h, v)) = auth {
            req.headers.push(h, v);
        }
        req.headers
            .push(HeaderName::ContentType, "text/plain;charset=UTF-8");
        req.body = self.cfg.body.clone().into_bytes();
        self.tx = Some(ClientTransaction::new(
            now,
            req,
            self.cfg.reliable,
            self.timers,
        ));
        self.drain(now);
    }

    /// Feeds a response whose Call-ID is ours.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        if let Some(tx) = &mut self.tx {
            if tx.matches(&resp) {
                tx.handle_response(now, resp);
            }
        }
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = &mut self.tx {
            tx.handle_timeout(now);
        }
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        let Some(tx) = &mut self.tx else { return };
        let mut last = None;
        let mut timed_out = false;
        while let Some(o) = tx.poll_output() {
            match o {
                TxOutput::Transmit(b) => self.outbox.push(b),
                TxOutput::Response(r) if r.status >= 200 => last = Some(r),
                TxOutput::Timeout => timed_out = true,
                _ => {}
            }
        }
        if let Some(r) = last {
            self.tx = None;
            self.on_final(now, r);
        } else if timed_out {
            self.tx = None;
            self.result = Some(PagerResult::Timeout);
        }
    }

    fn on_final(&mut self, now: Instant, r: Response) {
        if matches!(r.status, 401 | 407) && !self.challenged {
            if let Some((user, password)) = self.cfg.credentials.clone() {
                self.challenged = true;
                let (ch, auth) = if r.status == 401 {
                    (HeaderName::WwwAuthenticate, HeaderName::Authorization)
                } else {
                    (
                        HeaderName::ProxyAuthenticate,
                        HeaderName::ProxyAuthorization,
                    )
                };
                let answer = digest::best_challenge(r.headers.get_all(&ch)).and_then(|c| {
                    digest::respond(
                        &c,
                        &user,
                        &password,
                        "MESSAGE",
                        &self.cfg.target.to_string(),
                        &digest::new_cnonce(),
                        1,
                    )
                });
                if let Ok(v) = answer {
                    return self.send(now, Some((auth, v)));
                }
            }
        }
        self.result = Some(PagerResult::Final {
            status: r.status,
            reason: r.reason,
        });
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbox.is_empty()).then(|| self.outbox.remove(0))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tx.as_ref().and_then(|t| t.poll_timeout())
    }

    /// The outcome, once there is one.
    pub fn result(&self) -> Option<&PagerResult> {
        self.result.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use std::time::Duration;

    fn request(bytes: &[u8]) -> Request {
        match Message::parse(bytes).expect("parses") {
            Message::Request(r) => r,
            Message::Response(_) => panic!("a request"),
        }
    }

    fn cfg() -> PagerConfig {
        PagerConfig {
            target: Uri::parse("sip:+8613800138000@127.0.0.1:5070").expect("uri"),
            from_user: "10086".into(),
            from_host: "127.0.0.1".into(),
            via: "SIP/2.0/UDP 127.0.0.1:5060".into(),
            reliable: false,
            credentials: Some(("screenpop".into(), "s3cret".into())),
            call_id: "m1@127.0.0.1".into(),
            body: "生日快乐".into(),
        }
    }

    #[test]
    fn a_message_answers_the_challenge_once_and_reports_the_final_status() {
        let t0 = Instant::now();
        let mut m = PagerMessage::start(t0, cfg(), TimerConfig::default());
        let first = request(&m.poll_transmit().expect("MESSAGE"));
        assert_eq!(first.method, Method::Message);
        assert_eq!(
            first.headers.get(&HeaderName::ContentType),
            Some("text/plain;charset=UTF-8")
        );
        assert_eq!(first.body, "生日快乐".as_bytes());
        let mut challenge = first.response(407, Some("gw"));
        challenge.headers.push(
            HeaderName::ProxyAuthenticate,
            r#"Digest realm="gw", nonce="abc", algorithm=MD5, qop="auth""#,
        );
        m.handle_response(t0, challenge);
        let second = request(&m.poll_transmit().expect("MESSAGE with credentials"));
        let auth = second
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .expect("answered");
        assert!(auth.contains(r#"username="screenpop""#), "{auth}");
        assert!(second.headers.get(&HeaderName::CSeq) == Some("2 MESSAGE"));
        // A second challenge is the end: the credentials are wrong.
        let mut again = second.response(407, Some("gw"));
        again.headers.push(
            HeaderName::ProxyAuthenticate,
            r#"Digest realm="gw", nonce="def""#,
        );
        m.handle_response(t0, again);
        assert_eq!(
            m.result(),
            Some(&PagerResult::Final {
                status: 407,
                reason: "Proxy Authentication Required".into()
            })
        );
    }

    #[test]
    fn a_silent_gateway_times_out_after_timer_f() {
        let t0 = Instant::now();
        let mut m = PagerMessage::start(t0, cfg(), TimerConfig::default());
        let mut now = t0;
        let mut sent = 0;
        while m.result().is_none() {
            while m.poll_transmit().is_some() {
                sent += 1;
            }
            now = m.poll_timeout().expect("a timer");
            m.handle_timeout(now);
        }
        assert_eq!(m.result(), Some(&PagerResult::Timeout));
        assert!(sent >= 7, "retransmitted over UDP: {sent}");
        assert!(now - t0 >= Duration::from_secs(31));
    }
}
