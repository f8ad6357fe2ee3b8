//! Webhooks end to end (issue 11, item 4): the real server POSTs events to a receiver on
//! loopback, which checks every signature with its own HMAC. The events come from the API
//! (work orders) and from a desktop (agent states); an admin's desktop on the WebSocket sees
//! the same bus and is the reference for what was published and in which order. A receiver
//! that answers 503 for a while, and one that is not listening across a restart of screenpop,
//! still get every event afterwards, in order per subject (a work order, an agent), none lost.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::desk::{self, Api, Desktop};
use common::{Env, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const T: Duration = Duration::from_secs(40);
const SECRET: &str = "receiver-secret-0123456789";

fn start(env: &Env) -> (Server, Api) {
    env.write_acd_profile();
    env.admin_create("root", "root-password");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "root", "root-password");
    (server, admin)
}

// ---------------------------------------------------------------- the receiver

/// What the receiver does with a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Accept,
    Unavailable,
}

#[derive(Debug, Clone)]
struct Got {
    delivery: String,
    body: Value,
}

#[derive(Default)]
struct Log {
    got: Vec<Got>,
    /// Requests that broke the contract (signature, headers): must stay empty.
    problems: Vec<String>,
    refused: usize,
}

/// A webhook receiver on 127.0.0.1: a std listener thread, a thread per connection (HTTP/1.1
/// with keep-alive, Content-Length bodies).
struct Receiver {
    port: u16,
    secret: &'static str,
    log: Arc<Mutex<Log>>,
    mode: Arc<Mutex<Mode>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Receiver {
    fn listening(secret: &'static str) -> Receiver {
        let mut r = Receiver::closed(secret);
        r.listen();
        r
    }

    /// A receiver whose port nothing listens on yet: connections are refused.
    fn closed(secret: &'static str) -> Receiver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Receiver {
            port,
            secret,
            log: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            running: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/screenpop", self.port)
    }

    fn set_mode(&self, m: Mode) {
        *self.mode.lock().expect("mode") = m;
    }

    fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("receiver bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (log, mode, secret, stop2) = (
            self.log.clone(),
            self.mode.clone(),
            self.secret,
            stop.clone(),
        );
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (log, mode, stop) = (log.clone(), mode.clone(), stop2.clone());
                        std::thread::spawn(move || serve(stream, secret, &log, &mode, &stop));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("receiver accept: {e}"),
                }
            }
        });
        self.running = Some((stop, accept));
    }

    /// Stops listening and drops open connections: from now on connections are refused.
    fn close(&mut self) {
        if let Some((stop, accept)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = accept.join();
            // Connection threads notice within their 100 ms read timeout.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn got(&self) -> Vec<Got> {
        self.log.lock().expect("log").got.clone()
    }

    fn problems(&self) -> Vec<String> {
        self.log.lock().expect("log").problems.clone()
    }

    fn refused(&self) -> usize {
        self.log.lock().expect("log").refused
    }

    /// Waits until `done` holds for what arrived; returns it either way.
    fn wait(&self, timeout: Duration, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.got();
            if done(&got) || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn find(buf: &[u8], pat: &[u8]) -> Option<usize> {
    buf.windows(pat.len()).position(|w| w == pat)
}

/// One connection: requests in turn until the peer closes it or the receiver stops.
fn serve(
    mut stream: TcpStream,
    secret: &str,
    log: &Mutex<Log>,
    mode: &Mutex<Mode>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A whole request in `buf`?
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or("").to_string();
            let headers: BTreeMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                let reply = handle(&request_line, &headers, &body, secret, log, mode);
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn handle(
    request_line: &str,
    h: &BTreeMap<String, String>,
    body: &str,
    secret: &str,
    log: &Mutex<Log>,
    mode: &Mutex<Mode>,
) -> String {
    let mut problems = Vec::new();
    if !request_line.starts_with("POST /hooks/screenpop ") {
        problems.push(format!("request line {request_line:?}"));
    }
    if h.get("content-type").map(String::as_str) != Some("application/json") {
        problems.push(format!("content-type {:?}", h.get("content-type")));
    }
    let ts = h.get("x-screenpop-timestamp").cloned().unwrap_or_default();
    match ts.parse::<i64>() {
        Ok(t) if (t - unix_now()).abs() <= 300 => {}
        _ => problems.push(format!("timestamp {ts:?}")),
    }
    // The receiver's own check, as an integrator would write it.
    let want = format!("sha256={}", hmac_hex(secret, &format!("{ts}.{body}")));
    if h.get("x-screenpop-signature") != Some(&want) {
        problems.push(format!(
            "signature {:?} for timestamp {ts}",
            h.get("x-screenpop-signature")
        ));
    }
    let delivery = h.get("x-screenpop-delivery").cloned().unwrap_or_default();
    if delivery.is_empty() {
        problems.push("no X-Screenpop-Delivery".into());
    }
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| {
        problems.push(format!("body is not JSON: {e}"));
        Value::Null
    });
    let mut log = log.lock().expect("log");
    log.problems.extend(problems);
    if *mode.lock().expect("mode") == Mode::Unavailable {
        log.refused += 1;
        let text = "down for maintenance";
        return format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
    }
    log.got.push(Got { delivery, body });
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
}

// ---------------------------------------------------------------- events and their order

/// What an event's order is kept within, as the receiver reads it from the body.
fn subject(v: &Value) -> String {
    let kind = v["type"].as_str().unwrap_or("");
    if let Some(c) = v["call_id"].as_str() {
        format!("call:{c}")
    } else if kind.starts_with("agent.") {
        format!("agent:{}", v["agent_id"])
    } else if kind.starts_with("work_order.") {
        format!("work_order:{}", v["work_order"]["id"])
    } else {
        String::new()
    }
}

/// Events per subject, in order, keeping only `subjects` and `kinds` (`*`: every kind).
fn by_subject<'a>(
    events: impl IntoIterator<Item = &'a Value>,
    subjects: &HashSet<String>,
    kinds: &[&str],
) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for v in events {
        let kind = v["type"].as_str().unwrap_or("");
        let s = subject(v);
        if subjects.contains(&s) && (kinds.contains(&"*") || kinds.contains(&kind)) {
            out.entry(s).or_default().push(v.clone());
        }
    }
    out
}

/// Work orders moved through their life, interleaved: each publishes created, then an update
/// per step. Returns their subjects.
fn work_order_traffic(admin: &Api, n: usize, tag: &str) -> HashSet<String> {
    let ids: Vec<i64> = (0..n)
        .map(|i| {
            admin.ok(
                "POST",
                "/api/work-orders",
                Some(json!({"kind": "service", "title": format!("{tag} {i}")})),
            )["id"]
                .as_i64()
                .expect("work order id")
        })
        .collect();
    for status in ["in_progress", "resolved", "closed"] {
        for id in &ids {
            admin.ok(
                "PATCH",
                &format!("/api/work-orders/{id}"),
                Some(json!({"status": status})),
            );
        }
    }
    ids.iter().map(|id| format!("work_order:{id}")).collect()
}

/// What the admin's desktop saw from `mark` on: the bus's events in publish order.
fn published(desktop: &mut Desktop, mark: usize) -> Vec<Value> {
    desktop.pump(Duration::from_millis(800));
    desktop.seen[mark..].to_vec()
}

fn create_webhook(admin: &Api, url: &str, events: &[&str], secret: &str) -> i64 {
    let (status, v) = admin.req(
        "POST",
        "/api/webhooks",
        Some(&json!({"url": url, "events": events, "secret": secret})),
    );
    assert_eq!(status, 201, "create webhook: {v}");
    assert!(v.get("secret").is_none(), "the secret is never shown: {v}");
    v["id"].as_i64().expect("webhook id")
}

fn webhook_status(admin: &Api, id: i64) -> Value {
    let list = admin.ok("GET", "/api/webhooks", None);
    list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["id"] == id).cloned())
        .unwrap_or_else(|| panic!("webhook {id} not listed: {list}"))
}

/// The receiver got, per subject, exactly what was published, in the same order, each once.
fn assert_same_per_subject(
    expected: &BTreeMap<String, Vec<Value>>,
    got: &[Got],
    subjects: &HashSet<String>,
    kinds: &[&str],
) {
    let ids: HashSet<&str> = got.iter().map(|g| g.delivery.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "a delivery arrived twice");
    let have = by_subject(got.iter().map(|g| &g.body), subjects, kinds);
    for (s, want) in expected {
        let types = |v: &[Value]| -> Vec<String> {
            v.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["type"].as_str().unwrap_or(""),
                        e["work_order"]["status"]
                            .as_str()
                            .or(e["state"].as_str())
                            .unwrap_or("")
                    )
                })
                .collect()
        };
        let h = have.get(s).cloned().unwrap_or_default();
        assert_eq!(
            types(&h),
            types(want),
            "subject {s}: order or count differs"
        );
        assert_eq!(&h, want, "subject {s}: bodies differ from the bus's");
    }
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}

fn wait_all(
    receiver: &Receiver,
    expected: &BTreeMap<String, Vec<Value>>,
    subjects: &HashSet<String>,
    kinds: &[&str],
    timeout: Duration,
) -> Vec<Got> {
    let total: usize = expected.values().map(Vec::len).sum();
    receiver.wait(timeout, |got| {
        by_subject(got.iter().map(|g| &g.body), subjects, kinds)
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= total
    })
}

// ---------------------------------------------------------------- the tests

#[test]
fn every_event_is_signed_filtered_and_in_order() {
    let env = Env::new("webhooks_signed");
    let (_server, admin) = start(&env);
    let base = env.http_base();
    let mut desktop = Desktop::connect(&base, &admin.token, "admin");
    desktop.pump(Duration::from_millis(300));

    let all = Receiver::listening(SECRET);
    let created_only = Receiver::listening("another-secret-abcdefgh");
    let all_id = create_webhook(&admin, &all.url(), &["*"], SECRET);
    let created_id = create_webhook(
        &admin,
        &created_only.url(),
        &["work_order.created"],
        "another-secret-abcdefgh",
    );
    desktop.pump(Duration::from_millis(200));
    let mark = desktop.seen.len();

    // An agent's desktop changes state; work orders move along.
    admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "hooky", "password": "hooky-password", "display_name": "Hooky",
                    "role": "agent", "sip_uri": "sip:hooky@127.0.0.1:5999"}),
        ),
    );
    let agent = Api::login(&base, "hooky", "hooky-password");
    let mut agent_desk = Desktop::connect(&base, &agent.token, "hooky");
    for state in ["available", "paused", "available", "paused"] {
        agent_desk.set_state(state);
        agent_desk.pump(Duration::from_millis(100));
    }
    let mut subjects = work_order_traffic(&admin, 3, "signed");
    subjects.insert(format!("agent:{}", agent.agent_id));

    let events = published(&mut desktop, mark);
    let expected = by_subject(&events, &subjects, &["*"]);
    assert!(
        expected.contains_key(&format!("agent:{}", agent.agent_id)),
        "the agent's state changes reach the bus: {events:?}"
    );
    assert_eq!(expected.len(), 4, "{expected:?}");
    let got = wait_all(&all, &expected, &subjects, &["*"], T);
    assert_eq!(all.problems(), Vec::<String>::new());
    assert_same_per_subject(&expected, &got, &subjects, &["*"]);

    // The second webhook gets the kinds it asked for, and no other.
    let created = by_subject(&events, &subjects, &["work_order.created"]);
    let got2 = wait_all(
        &created_only,
        &created,
        &subjects,
        &["work_order.created"],
        T,
    );
    assert_eq!(created_only.problems(), Vec::<String>::new());
    assert!(got2.iter().all(|g| g.body["type"] == "work_order.created"));
    assert_same_per_subject(&created, &got2, &subjects, &["work_order.created"]);

    // The list shows it all delivered, and a delivery's details.
    let total = got.len() as i64;
    let status = webhook_status(&admin, all_id);
    assert!(
        status["delivered"].as_i64() >= Some(total),
        "{status} ({total} received)"
    );
    assert_eq!(
        (status["pending"].as_i64(), status["failing"].as_i64()),
        (Some(0), Some(0)),
        "{status}"
    );
    assert!(status["last_success_at"].is_string(), "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(webhook_status(&admin, created_id)["delivered"], 3);
    let deliveries = admin.ok(
        "GET",
        &format!("/api/webhooks/{all_id}/deliveries?limit=5"),
        None,
    );
    let items = deliveries["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "{deliveries}");
    assert!(deliveries["next"].is_string(), "{deliveries}");
    for d in items {
        assert_eq!(
            (d["status"].as_str(), d["attempts"].as_i64()),
            (Some("delivered"), Some(1)),
            "{d}"
        );
        assert!(got
            .iter()
            .any(|g| g.delivery == d["id"].as_i64().unwrap_or(-1).to_string()));
    }
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(
        metrics.contains("screenpop_webhook_deliveries_total{outcome=\"ok\"}"),
        "{metrics}"
    );

    // Deleted: nothing more arrives.
    let (s, _) = admin.req("DELETE", &format!("/api/webhooks/{created_id}"), None);
    assert_eq!(s, 204);
    let before = created_only.got().len();
    work_order_traffic(&admin, 1, "after delete");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(created_only.got().len(), before);
}

#[test]
fn a_receiver_down_for_a_while_gets_everything_afterwards() {
    let env = Env::new("webhooks_down");
    let (_server, admin) = start(&env);
    let mut desktop = Desktop::connect(&env.http_base(), &admin.token, "admin");
    desktop.pump(Duration::from_millis(300));
    let receiver = Receiver::listening(SECRET);
    receiver.set_mode(Mode::Unavailable);
    let kinds = ["work_order.created", "work_order.updated"];
    let id = create_webhook(&admin, &receiver.url(), &kinds, SECRET);
    desktop.pump(Duration::from_millis(200));
    let mark = desktop.seen.len();

    // While the receiver fails, the API is as quick as ever.
    let t0 = Instant::now();
    let subjects = work_order_traffic(&admin, 4, "down");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "16 API requests took {took:?} with the receiver down"
    );
    let events = published(&mut desktop, mark);
    let expected = by_subject(&events, &subjects, &kinds);
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 16);

    std::thread::sleep(Duration::from_secs(3));
    assert!(receiver.refused() >= 4, "attempts made while down");
    assert!(receiver.got().is_empty());
    let status = webhook_status(&admin, id);
    assert_eq!(status["delivered"], 0, "{status}");
    assert_eq!(status["pending"], 16, "{status}");
    assert!(status["failing"].as_i64() >= Some(4), "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503") && e.contains("down for maintenance")),
        "{status}"
    );
    // Only each work order's oldest delivery is tried; the rest wait behind it.
    let pending = admin.ok(
        "GET",
        &format!("/api/webhooks/{id}/deliveries?status=pending&limit=100"),
        None,
    );
    let items = pending["items"].as_array().expect("items");
    assert_eq!(items.len(), 16, "{pending}");
    let waiting = items
        .iter()
        .filter(|d| d["next_attempt_at"].is_null() && d["attempts"] == 0)
        .count();
    assert_eq!(waiting, 12, "{pending}");
    assert!(items
        .iter()
        .any(|d| d["attempts"].as_i64() >= Some(2) && d["last_status"] == 503));

    receiver.set_mode(Mode::Accept);
    let got = wait_all(&receiver, &expected, &subjects, &kinds, T);
    assert_eq!(receiver.problems(), Vec::<String>::new());
    assert_same_per_subject(&expected, &got, &subjects, &kinds);
    let status = webhook_status(&admin, id);
    assert_eq!(
        (status["delivered"].as_i64(), status["pending"].as_i64()),
        (Some(16), Some(0)),
        "{status}"
    );
}

#[test]
fn pending_deliveries_survive_a_restart() {
    let env = Env::new("webhooks_restart");
    let (mut server, admin) = start(&env);
    let mut desktop = Desktop::connect(&env.http_base(), &admin.token, "admin");
    desktop.pump(Duration::from_millis(300));
    // Nothing listens yet: every connection is refused.
    let mut receiver = Receiver::closed(SECRET);
    let kinds = ["work_order.created", "work_order.updated"];
    let id = create_webhook(&admin, &receiver.url(), &kinds, SECRET);
    desktop.pump(Duration::from_millis(200));
    let mark = desktop.seen.len();
    let subjects = work_order_traffic(&admin, 3, "restart");
    let events = published(&mut desktop, mark);
    let expected = by_subject(&events, &subjects, &kinds);
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 12);

    // Tried and failed at least once, then screenpop dies.
    let end = Instant::now() + T;
    loop {
        let status = webhook_status(&admin, id);
        if status["failing"].as_i64() >= Some(3) {
            assert!(
                status["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("connection")),
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < end, "no failed attempt recorded: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(desktop);
    server.kill9();

    let _server = env.start_server();
    let admin = Api::login(&env.http_base(), "root", "root-password");
    let status = webhook_status(&admin, id);
    assert_eq!(status["pending"], 12, "kept across the restart: {status}");
    receiver.listen();
    let got = wait_all(&receiver, &expected, &subjects, &kinds, T);
    assert_eq!(receiver.problems(), Vec::<String>::new());
    assert_same_per_subject(&expected, &got, &subjects, &kinds);
    let status = webhook_status(&admin, id);
    assert_eq!(
        (status["delivered"].as_i64(), status["pending"].as_i64()),
        (Some(12), Some(0)),
        "{status}"
    );
}

#[test]
fn webhook_input_is_checked() {
    let env = Env::new("webhooks_input");
    let (_server, admin) = start(&env);
    let base = env.http_base();
    for (name, role) in [("sup", "supervisor"), ("agt", "agent")] {
        admin.ok(
            "POST",
            "/api/agents",
            Some(
                json!({"username": name, "password": format!("{name}-password"),
                        "display_name": name, "role": role}),
            ),
        );
        let who = Api::login(&base, name, &format!("{name}-password"));
        let body = json!({"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": SECRET});
        let (s, e) = who.req("POST", "/api/webhooks", Some(&body));
        assert_eq!(s, 403, "{role}: {e}");
        assert_eq!(e["error"]["code"], "forbidden");
        assert_eq!(who.req("GET", "/api/webhooks", None).0, 403, "{role}");
    }
    assert_eq!(
        desk::call("GET", &format!("{base}/api/webhooks"), None, None).0,
        401
    );

    let check = |body: Value, status: u16, field: &str| {
        let (s, e) = admin.req("POST", "/api/webhooks", Some(&body));
        assert_eq!(
            (s, e["error"]["field"].as_str()),
            (status, Some(field)),
            "{body} → {e}"
        );
    };
    for url in [
        "ftp://127.0.0.1/x",
        "not a url",
        "http://",
        "127.0.0.1:9/x",
        "",
    ] {
        check(
            json!({"url": url, "events": ["call.offered"], "secret": SECRET}),
            422,
            "url",
        );
    }
    check(
        json!({"url": "http://127.0.0.1:9/x", "events": ["call.rang"], "secret": SECRET}),
        422,
        "events",
    );
    check(
        json!({"url": "http://127.0.0.1:9/x", "events": [], "secret": SECRET}),
        422,
        "events",
    );
    check(
        json!({"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": "too-short"}),
        422,
        "secret",
    );
    check(
        json!({"url": "http://127.0.0.1:9/x", "events": ["*"]}),
        400,
        "secret",
    );
    let (s, e) = admin.req(
        "POST",
        "/api/webhooks",
        Some(&json!({"url": "http://127.0.0.1:9/x", "events": "*", "secret": SECRET})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("events")),
        "{e}"
    );

    let id = create_webhook(
        &admin,
        "https://crm.example/hooks?token=abc",
        &["call.offered", "call.ended"],
        SECRET,
    );
    let w = admin.ok("GET", &format!("/api/webhooks/{id}"), None);
    assert_eq!(w["events"], json!(["call.offered", "call.ended"]));
    assert_eq!(w["url"], "https://crm.example/hooks?token=abc");
    let (s, e) = admin.req(
        "GET",
        &format!("/api/webhooks/{id}/deliveries?status=lost"),
        None,
    );
    assert_eq!((s, e["error"]["field"].as_str()), (422, Some("status")));
    assert_eq!(
        admin.req("DELETE", &format!("/api/webhooks/{id}"), None).0,
        204
    );
    assert_eq!(
        admin.req("DELETE", &format!("/api/webhooks/{id}"), None).0,
        404
    );
    assert_eq!(
        admin
            .req("GET", &format!("/api/webhooks/{id}/deliveries"), None)
            .0,
        404
    );
    let audit = admin.ok("GET", "/api/audit?action=webhook.", None);
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "{audit}");
}
