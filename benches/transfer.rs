//! Blind transfers under load: how long a transfer takes from the API request until the caller
//! is bridged to the next agent's phone, at a steady rate of transfers.
//!
//!   cargo bench --bench transfer      (TRANSFER_RATE=20 TRANSFER_SECONDS=60 TRANSFER_AGENTS=40)
//!
//! One run of `screenpop serve` (loopback, a temp store, the ACD with one queue, no wrap-up).
//! This program is everything around it:
//! - the trunk: TRANSFER_RATE calls a second for TRANSFER_SECONDS;
//! - every agent's phone: one UDP socket, each agent's `sip_uri` pointing at it, answering at
//!   once;
//! - the agents' desktops: a WebSocket each, set `available`, read all the while.
//!
//! Each call is answered by the agent the ACD picks. 200 ms later the program POSTs
//! `/api/calls/{id}/transfer {"to": {"queue_id"}}` (as the admin). The ACD rings the next free
//! agent, whose phone answers. The transfer is complete when screenpop ACKs that phone's 200:
//! from then on the caller is bridged to it. 300 ms later the trunk hangs up.
//!
//! Prints the count and p50/p90/p99/max of the completion time, and the API's own answer time.
//! Fails when fewer than 99% of the transfers complete.
//!
//! Ports: SIP 9250 (server), 9260 (trunk), 9270 (phones), HTTP 9280, server RTP 63000-64999.

#[path = "../tests/common/desk.rs"]
mod desk;

use std::collections::HashMap;
use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use desk::{Api, Desktop};
use screenpop::sip::{HeaderName, Message, Method, Request};
use serde_json::json;

const SIP: u16 = 9250;
const TRUNK: u16 = 9260;
const PHONE: u16 = 9270;
const HTTP: u16 = 9280;
const RTP_PORTS: &str = "63000-64999";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: PathBuf) -> Server {
    let profile = "name = \"bench\"\nrtp_timeout_secs = 0\nsession_expires_secs = 0\n\
                   [trust]\ncidrs = [\"127.0.0.0/8\"]\n[[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\n";
    std::fs::write(dir.join("profile.toml"), profile).expect("profile");
    let db = format!("sqlite://{}", dir.join("db.sqlite").display());
    let bin = env!("CARGO_BIN_EXE_screenpop");
    let mut admin = Command::new(bin)
        .args(["admin", "create", "--username", "admin", "--password-stdin"])
        .args(["--database", &db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("admin create");
    admin
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"bench-admin-pass\n")
        .expect("password");
    assert!(
        admin.wait().expect("admin").success(),
        "admin create failed"
    );
    let log = std::fs::File::create(dir.join("server.log")).expect("log");
    let child = Command::new(bin)
        .args(["serve", "--sip", &format!("127.0.0.1:{SIP}")])
        .args(["--http", &format!("127.0.0.1:{HTTP}")])
        .arg("--recordings")
        .arg(dir.join("rec"))
        .args(["--database", &db])
        .arg("--profile")
        .arg(dir.join("profile.toml"))
        .args(["--rtp-ports", RTP_PORTS])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start screenpop");
    Server { child, dir }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The reply to `req` that a UAS sends: 200 with an SDP for the phone, or a bare 200.
fn ok_for(req: &Request, tag: &str, sdp_port: Option<u16>) -> Vec<u8> {
    let mut r = req.response(200, Some(tag));
    r.headers.push(
        HeaderName::Contact,
        format!("<sip:phone@127.0.0.1:{PHONE}>"),
    );
    if let Some(port) = sdp_port {
        r.headers.push(HeaderName::ContentType, "application/sdp");
        r.body = format!(
            "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
        .into_bytes();
    }
    Message::Response(r).to_bytes()
}

/// One trunk call: its dialog once answered, and where its transfer stands.
#[derive(Default)]
struct TrunkCall {
    to: String,
    target: String,
    key: Option<String>,
    answers: u32,
    transfer_at: Option<Instant>,
    request_at: Option<Instant>,
    bye_at: Option<Instant>,
    bye_sent: bool,
    done: bool,
}

fn main() {
    let rate = env_num("TRANSFER_RATE", 20).max(1);
    let seconds = env_num("TRANSFER_SECONDS", 60).max(1);
    let agents = env_num("TRANSFER_AGENTS", 40).max(2) as usize;
    let total = (rate * seconds) as usize;
    let dir = std::env::temp_dir().join(format!("screenpop-transfer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server = start_server(dir.clone());
    let base = format!("http://127.0.0.1:{HTTP}");
    let admin = {
        let mut tries = 0;
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", HTTP)).is_ok();
            if up {
                break Api::login(&base, "admin", "bench-admin-pass");
            }
            tries += 1;
            assert!(
                tries < 200,
                "screenpop did not start: {}",
                server.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (_, q) = admin.req(
        "POST",
        "/api/queues",
        Some(
            &json!({"name": "bench", "is_default": true, "wrap_up_secs": 0,
                      "ring_timeout_secs": 10, "max_wait_secs": 300}),
        ),
    );
    let queue = q["id"].as_i64().expect("queue");
    eprintln!("screenpop up; {agents} agents and their desktops…");
    // The phones' media goes to a sink nobody reads.
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let sink_port = sink.local_addr().expect("sink").port();
    sink.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..agents {
        let (st, a) = admin.req(
            "POST",
            "/api/agents",
            Some(
                &json!({"username": format!("a{i}"), "password": format!("agent-pass-{i}"),
                          "display_name": format!("Agent {i}"), "queues": [queue],
                          "sip_uri": format!("sip:a{i}@127.0.0.1:{PHONE}")}),
            ),
        );
        assert_eq!(st, 201, "agent: {a}");
        let api = Api::login(&base, &format!("a{i}"), &format!("agent-pass-{i}"));
        let mut d = Desktop::connect(&base, &api.token, &format!("a{i}"));
        d.set_state("available");
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                d.pump(Duration::from_millis(200));
                d.seen.clear();
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("calling at {rate}/s for {seconds} s…");

    // Transfers go out from a few HTTP workers; each answers with the API's own time.
    let (todo_tx, todo_rx) = mpsc::channel::<String>();
    let todo_rx = Arc::new(std::sync::Mutex::new(todo_rx));
    let (api_tx, api_rx) = mpsc::channel::<(u16, f64)>();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (rx, tx, admin) = (todo_rx.clone(), api_tx.clone(), admin.clone());
        workers.push(std::thread::spawn(move || loop {
            let key = match rx.lock().map(|r| r.recv()) {
                Ok(Ok(k)) => k,
                _ => return,
            };
            let t = Instant::now();
            let (st, _) = admin.req(
                "POST",
                &format!("/api/calls/{key}/transfer"),
                Some(&json!({"to": {"queue_id": queue}, "mode": "blind"})),
            );
            let _ = tx.send((st, t.elapsed().as_secs_f64() * 1000.0));
        }));
    }
    drop(api_tx);

    let trunk = UdpSocket::bind(("127.0.0.1", TRUNK)).expect("trunk");
    let phone = UdpSocket::bind(("127.0.0.1", PHONE)).expect("phone");
    for s in [&trunk, &phone] {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut calls: Vec<TrunkCall> = (0..total).map(|_| TrunkCall::default()).collect();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut acked: std::collections::HashSet<String> = Default::default();
    let mut completions: Vec<f64> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let started = Instant::now();
    let mut sent = 0usize;
    let deadline = started + Duration::from_secs(seconds + 30);
    while Instant::now() < deadline {
        let now = Instant::now();
        // New calls at the rate.
        let due = ((now - started).as_secs_f64() * rate as f64) as usize;
        while sent < due.min(total) {
            let i = sent;
            let body = format!(
                "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {sink_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            );
            let inv = format!(
                "INVITE sip:100@127.0.0.1:{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKx{i};rport\r\n\
                 From: <sip:+1415300{i:04}@127.0.0.1>;tag=t{i}\r\nTo: <sip:100@127.0.0.1>\r\n\
                 Call-ID: xfer-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{TRUNK}>\r\n\
                 Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = trunk.send_to(inv.as_bytes(), ("127.0.0.1", SIP));
            sent += 1;
        }
        // The trunk's side: ACK the 200s, 200 any BYE.
        while let Ok((n, from)) = trunk.recv_from(&mut buf) {
            let Ok(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            match msg {
                Message::Response(r) => {
                    let Some(i) = r
                        .call_id()
                        .and_then(|c| c.strip_prefix("xfer-"))
                        .and_then(|c| c.parse::<usize>().ok())
                        .filter(|i| *i < total)
                    else {
                        continue;
                    };
                    let invite = r.cseq().is_some_and(|c| c.method == Method::Invite);
                    if invite && r.status == 200 {
                        let c = &mut calls[i];
                        c.to = r
                            .headers
                            .get(&HeaderName::To)
                            .unwrap_or_default()
                            .to_string();
                        c.target = r
                            .contact()
                            .map(|c| c.uri.to_string())
                            .unwrap_or_else(|| format!("sip:127.0.0.1:{SIP}"));
                        let ack = format!(
                            "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKa{i}\r\n\
                             From: <sip:+1415300{i:04}@127.0.0.1>;tag=t{i}\r\nTo: {}\r\nCall-ID: xfer-{i}\r\n\
                             CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                            c.target, c.to
                        );
                        let _ = trunk.send_to(ack.as_bytes(), from);
                    } else if !invite && r.status == 200 {
                        calls[i].done = true;
                    }
                }
                Message::Request(req) if req.method != Method::Ack => {
                    let _ = trunk.send_to(&ok_for(&req, "t", None), from);
                }
                _ => {}
            }
        }
        // The phones: answer every INVITE at once, 200 every BYE; an ACK of the second
        // answer completes a transfer.
        while let Ok((n, from)) = phone.recv_from(&mut buf) {
            let Ok(Message::Request(req)) = Message::parse(&buf[..n]) else {
                continue;
            };
            let call_id = req.call_id().unwrap_or_default().to_string();
            match req.method {
                Method::Invite => {
                    let key = req
                        .headers
                        .get(&HeaderName::Other("X-Screenpop-Call".into()))
                        .unwrap_or_default()
                        .to_string();
                    let index = req
                        .from()
                        .and_then(|f| f.uri.user)
                        .and_then(|u| u.get(u.len().saturating_sub(4)..).map(str::to_string))
                        .and_then(|d| d.parse::<usize>().ok())
                        .filter(|i| *i < total);
                    if let Some(i) = index {
                        by_key.insert(key.clone(), i);
                        calls[i].key = Some(key);
                        by_key.insert(call_id.clone(), i);
                    }
                    let _ = phone.send_to(&ok_for(&req, "p", Some(sink_port)), from);
                }
                Method::Ack => {
                    // One answer per agent leg, however often its 2xx was ACKed.
                    if !acked.insert(call_id.clone()) {
                        continue;
                    }
                    let Some(&i) = by_key.get(&call_id) else {
                        continue;
                    };
                    let c = &mut calls[i];
                    c.answers += 1;
                    let now = Instant::now();
                    if c.answers == 1 {
                        c.transfer_at = Some(now + Duration::from_millis(200));
                    } else if c.answers == 2 {
                        if let Some(t0) = c.request_at {
                            completions.push((now - t0).as_secs_f64() * 1000.0);
                        }
                        c.bye_at = Some(now + Duration::from_millis(300));
                    }
                }
                _ => {
                    let _ = phone.send_to(&ok_for(&req, "p", None), from);
                }
            }
        }
        // Transfers and hang-ups that are due.
        let now = Instant::now();
        for (i, c) in calls.iter_mut().enumerate() {
            if c.transfer_at.is_some_and(|t| now >= t) {
                c.transfer_at = None;
                if let Some(key) = c.key.clone() {
                    c.request_at = Some(now);
                    let _ = todo_tx.send(key);
                }
            }
            if !c.bye_sent && c.bye_at.is_some_and(|t| now >= t) {
                c.bye_sent = true;
                let bye = format!(
                    "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKb{i}\r\n\
                     From: <sip:+1415300{i:04}@127.0.0.1>;tag=t{i}\r\nTo: {}\r\nCall-ID: xfer-{i}\r\n\
                     CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    c.target, c.to
                );
                let _ = trunk.send_to(bye.as_bytes(), ("127.0.0.1", SIP));
            }
        }
        while sink.recv_from(&mut buf).is_ok() {}
        if sent == total
            && calls
                .iter()
                .all(|c| c.done || (c.answers == 0 && c.key.is_none()))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(todo_tx);
    stop.store(true, Ordering::Relaxed);
    let mut api: Vec<f64> = Vec::new();
    let mut refused = 0;
    for (st, ms) in api_rx.try_iter() {
        if st == 200 {
            api.push(ms);
        } else {
            refused += 1;
        }
    }
    let requested = calls.iter().filter(|c| c.request_at.is_some()).count();
    completions.sort_by(f64::total_cmp);
    api.sort_by(f64::total_cmp);
    println!(
        "transfer bench: {total} calls at {rate}/s over {seconds} s, {agents} agents (one queue, no wrap-up)"
    );
    println!(
        "  transfers requested {requested}, completed {}, refused by the API {refused}, calls ended {}",
        completions.len(),
        calls.iter().filter(|c| c.done).count()
    );
    for (name, v) in [
        ("completion (request → target bridged)", &completions),
        ("API answer", &api),
    ] {
        println!(
            "  {name:<40} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    let ok = requested > 0 && completions.len() * 100 >= requested * 99;
    for r in readers {
        let _ = r.join();
    }
    drop(server);
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "fewer than 99% of the transfers completed; kept {}",
            dir.display()
        );
        std::process::exit(1);
    }
}
