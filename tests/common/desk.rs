#![allow(dead_code)]
//! Clients of screenpop's HTTP side for the end-to-end tests: the REST API (ureq) and a desktop
//! on the WebSocket (tungstenite), both real network clients.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A logged-in API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub agent_id: i64,
}

/// (status, body) of a request.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

impl Api {
    pub fn login(base: &str, username: &str, password: &str) -> Api {
        let (status, body) = call(
            "POST",
            &format!("{base}/api/login"),
            None,
            Some(&json!({"username": username, "password": password})),
        );
        assert_eq!(status, 200, "login {username}: {body}");
        Api {
            base: base.to_string(),
            token: body["token"].as_str().expect("token").to_string(),
            agent_id: body["agent_id"].as_i64().expect("agent_id"),
        }
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(
            method,
            &format!("{}{path}", self.base),
            Some(&self.token),
            body,
        )
    }

    /// A request that must succeed (2xx); returns the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.req(method, path, body.as_ref());
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status}: {v}"
        );
        v
    }
}

/// One desktop connected to `/ws`.
pub struct Desktop {
    ws: tungstenite::WebSocket<TcpStream>,
    pub seen: Vec<Value>,
    /// When each of `seen` arrived (wall clock, to set against a SIPp log).
    pub arrived: Vec<std::time::SystemTime>,
    pub name: String,
}

impl Desktop {
    pub fn connect(http_base: &str, token: &str, name: &str) -> Desktop {
        let host = http_base.trim_start_matches("http://");
        let stream = TcpStream::connect(host).expect("connect ws");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let url = format!("ws://{host}/ws?token={token}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("ws handshake");
        let mut d = Desktop {
            ws,
            seen: Vec::new(),
            arrived: Vec::new(),
            name: name.to_string(),
        };
        d.wait_for(|e| e["type"] == "hello", Duration::from_secs(5));
        d
    }

    pub fn send(&mut self, v: Value) {
        self.ws
            .send(tungstenite::Message::Text(v.to_string().into()))
            .expect("ws send");
    }

    pub fn set_state(&mut self, state: &str) {
        self.send(json!({"type": "set_state", "state": state}));
    }

    /// Reads whatever arrives within `d`.
    pub fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        self.seen.push(v);
                        self.arrived.push(std::time::SystemTime::now());
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("[{}] ws read: {e}", self.name),
            }
        }
    }

    /// Waits for the first event (seen before or arriving) that matches; panics with
    /// everything seen otherwise.
    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        let mut from = 0;
        loop {
            if let Some(v) = self.seen[from..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            from = self.seen.len();
            if Instant::now() >= end {
                panic!(
                    "[{}] event not seen within {timeout:?}; saw:\n{}",
                    self.name,
                    self.seen
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Forgets what was seen so far.
    pub fn forget(&mut self) {
        self.seen.clear();
        self.arrived.clear();
    }

    /// When the first event matching `pred` arrived.
    pub fn arrival_of(&self, pred: impl Fn(&Value) -> bool) -> Option<std::time::SystemTime> {
        let i = self.seen.iter().position(pred)?;
        self.arrived.get(i).copied()
    }

    pub fn events(&self, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == kind).collect()
    }
}

/// Matches an event of `kind`.
pub fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind
}

/// Matches `agent` entering `state`.
pub fn state_of(agent: i64, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "agent.state" && v["agent_id"] == agent && v["state"] == state
}

/// Matches an event of `kind` about `call`.
pub fn for_call(kind: &'static str, call: Value) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind && v["call_id"] == call
}
