//! Slow and hostile connections (issue 13, point 3), against a running server inside the
//! loopback-only namespace: SIP over TCP capped per address and in all, a message dribbled out
//! or a silent connection cut off, a byte-at-a-time sender costing linear CPU; HTTP's body
//! limit and header timeout, desktops per user; hostile SDP refused without leaking a port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::desk::{call, Api, Desktop};
use common::raw::{invite, options, status_of, TestServer};
use common::{cpu_ns, Env};
use serde_json::{json, Value};

/// A TCP connection to `to` from `ip`.
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let me: SocketAddr = format!("{ip}:0").parse().expect("addr");
    s.bind(&me.into()).expect("bind");
    s.connect(&to.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_nodelay(true).expect("nodelay");
    s
}

/// An OPTIONS over TCP from `conn`: the status of the answer, or `None` when the server closed
/// the connection (or said nothing within 2 s).
fn ask(conn: &mut TcpStream, tag: &str) -> Option<u16> {
    let me = conn.local_addr().ok()?;
    let msg = String::from_utf8(options(tag, me.port()))
        .ok()?
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    conn.write_all(msg.as_bytes()).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 4096];
    match conn.read(&mut buf) {
        Ok(n) if n > 0 => status_of(&buf[..n]),
        _ => None,
    }
}

/// How long until the server closes `conn` (reads nothing but its end), up to `max`.
fn closed_after(conn: &mut TcpStream, started: Instant, max: Duration) -> Option<Duration> {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    while started.elapsed() < max {
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

fn metric(base: &str, line_prefix: &str) -> f64 {
    let text = call("GET", &format!("{base}/metrics"), None, None).1;
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A server trusting 127.0.0.1 only, with `limits` as its `[limits]`.
fn server_with_limits(name: &str, limits: &str) -> (Env, common::Server) {
    let env = Env::new(name);
    let profile = std::fs::read_to_string(&env.profile).expect("profile");
    let profile = profile
        .replace(r#"["127.0.0.0/8", "::1/128"]"#, r#"["127.0.0.1/32"]"#)
        .replace(r#"["127.0.0.0/8"]"#, r#"["127.0.0.1/32"]"#);
    std::fs::write(&env.profile, format!("{profile}\n[limits]\n{limits}\n")).expect("profile");
    env.admin_create("admin", "admin-pass-1");
    let server = env.start_server();
    (env, server)
}

/// Five connections from one address are served, a sixth is closed at once; another address
/// gets its own five; the trusted address has no cap of its own and counts towards the total
/// of 12, past which every untrusted address is refused until a connection goes. A message dribbled out a
/// byte every 300 ms is cut off 2 s after its first byte, a silent connection after 8 s.
#[test]
fn stream_connections_are_capped_and_slow_ones_cut_off() {
    let (env, _server) = server_with_limits(
        "stream_caps",
        "tcp_connections = 12\ntcp_connections_per_address = 5\ntcp_partial_secs = 2\n\
         tcp_idle_secs = 8",
    );
    let sip = env.server_addr();
    let base = env.http_base();

    let mut held = Vec::new();
    for i in 0..5 {
        let mut c = connect_from("127.0.0.3", sip);
        assert_eq!(
            ask(&mut c, &format!("cap3-{i}")),
            Some(200),
            "connection {i}"
        );
        held.push(c);
    }
    let mut sixth = connect_from("127.0.0.3", sip);
    assert_eq!(
        ask(&mut sixth, "cap3-6"),
        None,
        "the sixth from one address"
    );
    for i in 0..5 {
        let mut c = connect_from("127.0.0.5", sip);
        assert_eq!(
            ask(&mut c, &format!("cap5-{i}")),
            Some(200),
            "127.0.0.5 #{i}"
        );
        held.push(c);
    }
    for i in 0..2 {
        let mut c = connect_from("127.0.0.1", sip);
        assert_eq!(ask(&mut c, &format!("cap1-{i}")), Some(200), "trusted #{i}");
        held.push(c);
    }
    let mut over = connect_from("127.0.0.6", sip);
    assert_eq!(
        ask(&mut over, "cap6-over"),
        None,
        "the 13th, past the total"
    );
    // The trusted address is not held to the total (others filling it must not lock out
    // the PBX).
    let mut pbx = connect_from("127.0.0.1", sip);
    assert_eq!(
        ask(&mut pbx, "cap1-over"),
        Some(200),
        "trusted past the total"
    );
    drop(pbx);
    // One goes; its place is taken again.
    drop(held.remove(0));
    let mut again = None;
    // (The place comes back once the server has seen the close and sent what it owed.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while again.is_none() && Instant::now() < deadline {
        let mut c = connect_from("127.0.0.6", sip);
        if ask(&mut c, "cap6-again") == Some(200) {
            again = Some(c);
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        again.is_some(),
        "a place freed by a closed connection is taken again"
    );
    assert_eq!(
        metric(
            &base,
            "screenpop_sip_stream_refused_total{why=\"per_address\"} "
        ),
        1.0
    );
    assert!(metric(&base, "screenpop_sip_stream_refused_total{why=\"total\"} ") >= 1.0);
    drop(held);
    drop(again);
    // Every place is given back (the server saw the connections close).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probes: Vec<TcpStream> = Vec::new();
        let mut served = 0;
        for i in 0..5 {
            let mut c = connect_from("127.0.0.5", sip);
            if ask(&mut c, &format!("back-{i}")) == Some(200) {
                served += 1;
            }
            probes.push(c);
        }
        drop(probes);
        if served == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "places not given back: {served} of 5"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A dribbler and a silent one, from 127.0.0.4.
    let mut silent = connect_from("127.0.0.4", sip);
    let silent_since = Instant::now();
    let mut dribbler = connect_from("127.0.0.4", sip);
    let dribble_since = Instant::now();
    let head = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.4;branch=z9hG4bKd\r\n";
    let mut cut = None;
    for b in head.iter().cycle().take(40) {
        if dribbler.write_all(std::slice::from_ref(b)).is_err() {
            cut = Some(dribble_since.elapsed());
            break;
        }
        dribbler
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        if let Ok(0) = dribbler.read(&mut [0u8; 64]) {
            cut = Some(dribble_since.elapsed());
            break;
        }
    }
    let cut = cut.expect("the dribbler is cut off");
    assert!(
        cut >= Duration::from_millis(1900) && cut <= Duration::from_millis(3200),
        "cut off {cut:?} after its first byte (limit 2 s)"
    );
    let idle = closed_after(&mut silent, silent_since, Duration::from_secs(12))
        .expect("the silent connection is closed");
    assert!(
        idle >= Duration::from_millis(7900) && idle <= Duration::from_millis(9500),
        "silent connection closed after {idle:?} (limit 8 s)"
    );
    assert_eq!(
        metric(&base, "screenpop_sip_stream_closed_total{why=\"partial\"} "),
        1.0
    );
    assert!(metric(&base, "screenpop_sip_stream_closed_total{why=\"idle\"} ") >= 1.0);
}

/// An OPTIONS of about `size` bytes (half of it headers, half body) sent a byte at a time:
/// answered, and the server's CPU for it.
fn byte_at_a_time(sip: SocketAddr, pid: u32, size: usize, tag: &str) -> u64 {
    let mut pad = String::new();
    let mut i = 0;
    while pad.len() < size / 2 {
        pad.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(60)));
        i += 1;
    }
    let body = "b".repeat(size / 2);
    let msg = format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{tag}\r\n\
         From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: {tag}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{pad}Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = connect_from("127.0.0.1", sip);
    let before = cpu_ns(pid);
    assert!(before > 0, "the server's CPU time is readable");
    // Paced, so that the server reads (nearly) one byte at a time rather than catching up
    // with several.
    for b in msg.as_bytes() {
        conn.write_all(std::slice::from_ref(b)).expect("write");
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(25) {
            std::hint::spin_loop();
        }
    }
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).expect("an answer");
    let used = cpu_ns(pid).saturating_sub(before);
    assert_eq!(status_of(&buf[..n]), Some(200), "{tag}");
    used
}

/// A message sent a byte at a time costs the server CPU in proportion to its length: 8 times
/// the bytes costs about 8 times the CPU (a re-parse of everything so far on every read would
/// cost 64 times).
#[test]
fn a_byte_at_a_time_sender_costs_linear_cpu() {
    let (env, server) = server_with_limits("byte_at_a_time", "tcp_partial_secs = 30");
    let sip = env.server_addr();
    let pid = server.pid().expect("pid");
    // Warm up (the first connection's task, buffers).
    byte_at_a_time(sip, pid, 2_000, "warm");
    let small = byte_at_a_time(sip, pid, 4_000, "small");
    let large = byte_at_a_time(sip, pid, 32_000, "large");
    let ratio = large as f64 / small.max(1) as f64;
    eprintln!(
        "[byte_at_a_time] 4 kB: {:.1} ms CPU, 32 kB: {:.1} ms CPU, ratio {ratio:.1} (bytes: 8)",
        small as f64 / 1e6,
        large as f64 / 1e6
    );
    assert!(ratio < 16.0, "CPU grows faster than the bytes: {ratio:.1}");
}

/// A body over `http_body_bytes` gets 413 naming the body; headers sent too slowly, a
/// connection that says nothing and a kept-alive connection left idle are closed after
/// `http_header_secs`; a user gets
/// `ws_per_user` desktops, the next one is told why and closed, and a freed place is taken.
#[test]
fn http_limits_and_desktops_per_user() {
    let (env, _server) = server_with_limits(
        "http_limits",
        "http_body_bytes = 65536\nhttp_header_secs = 2\nws_per_user = 2",
    );
    let base = env.http_base();
    let admin = Api::login(&base, "admin", "admin-pass-1");

    // A 100 kB body is refused once more than the limit has been read: the client sends a
    // little over 64 kB and reads the answer (were it to send on, the server closing the
    // connection with unread bytes would reset it, and the answer could be lost).
    let http: SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let mut big = TcpStream::connect(http).expect("connect");
    write!(
        big,
        "POST /api/customers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"name\": \"{}",
        admin.token,
        "x".repeat(65_600)
    )
    .expect("write");
    big.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body: Value = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    assert_eq!(body["error"]["field"], "body", "{answer}");
    let (st, e) = admin.req(
        "POST",
        "/api/customers",
        Some(&json!({"name": "Small Body", "phones": [{"number": "+12125550111"}]})),
    );
    assert_eq!(st, 201, "{e}");

    let mut mute = TcpStream::connect(http).expect("connect");
    let mute_since = Instant::now();
    let mut slow = TcpStream::connect(http).expect("connect");
    let slow_since = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .expect("write");
    let mut idle = TcpStream::connect(http).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    idle.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).expect("an answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let idle_since = Instant::now();
    let slow_cut = closed_after(&mut slow, slow_since, Duration::from_secs(6))
        .expect("slow headers are cut off");
    assert!(
        slow_cut >= Duration::from_millis(1900) && slow_cut <= Duration::from_millis(3200),
        "slow headers cut off after {slow_cut:?} (limit 2 s)"
    );
    let mute_cut = closed_after(&mut mute, mute_since, Duration::from_secs(6))
        .expect("a connection that says nothing is cut off");
    assert!(
        mute_cut >= Duration::from_millis(1900) && mute_cut <= Duration::from_millis(3200),
        "a mute connection cut off after {mute_cut:?} (limit 2 s)"
    );
    let idle_cut = closed_after(&mut idle, idle_since, Duration::from_secs(6))
        .expect("an idle kept-alive connection is closed");
    assert!(
        idle_cut <= Duration::from_millis(3200),
        "idle connection closed after {idle_cut:?} (limit 2 s)"
    );

    let d1 = Desktop::connect(&base, &admin.token, "admin-1");
    let _d2 = Desktop::connect(&base, &admin.token, "admin-2");
    let refused = third_desktop(&base, &admin.token);
    assert_eq!(
        refused.0["error"]["code"], "too_many_connections",
        "{:?}",
        refused
    );
    assert_eq!(refused.1, Some(1008), "closed as a policy violation");
    assert!(metric(&base, "screenpop_ws_refused_total{why=\"per_user\"} ") >= 1.0);
    drop(d1);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (first, code) = third_desktop(&base, &admin.token);
        if first["type"] == "hello" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a freed place is not taken: {first} {code:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects one more desktop: its first frame, and the close code if it is closed.
fn third_desktop(base: &str, token: &str) -> (Value, Option<u16>) {
    let host = base.trim_start_matches("http://");
    let stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let (mut ws, _) = tungstenite::client(format!("ws://{host}/ws?token={token}").as_str(), stream)
        .expect("handshake");
    let mut first = Value::Null;
    let mut code = None;
    for _ in 0..4 {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if first.is_null() => {
                first = serde_json::from_str(&t).unwrap_or(Value::Null);
                if first["type"] == "hello" {
                    break;
                }
            }
            Ok(tungstenite::Message::Close(Some(f))) => {
                code = Some(u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (first, code)
}

/// Hostile offers from the trusted trunk (thousands of m-lines, a huge attribute, the only
/// audio on port 0, 65535 or a privileged port) get 488 before any port is taken: with a pool
/// of exactly one call's ports, a good call still rings the agent afterwards.
#[test]
fn hostile_sdp_gets_488_and_leaks_no_port() {
    let agent = UdpSocket::bind("127.0.0.1:5996").expect("agent");
    agent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let profile = "name = \"hostile-sdp\"\nring_timeout_secs = 2\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
                   [[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\nagent = \"sip:agent@127.0.0.1:5996\"\n";
    let s = TestServer::start("hostile-sdp", 5188, "42800-42804", profile);
    let many_m: String = (0..2400)
        .map(|i| format!("m=audio {} RTP/AVP 0\r\n", 40000 + 2 * (i % 1000)))
        .collect();
    let huge_attribute = format!("0\r\na=fmtp:0 {}", "x".repeat(30_000));
    let cases: [(&str, String); 5] = [
        ("thousands of m-lines", format!("0\r\n{many_m}")),
        ("a huge attribute", huge_attribute),
        ("port 0", "0".to_string()),
        ("port 65535", "0".to_string()),
        ("port 53", "0".to_string()),
    ];
    for (i, (what, formats)) in cases.iter().enumerate() {
        let mut conn = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        let me = conn.local_addr().expect("local");
        let msg = String::from_utf8(invite(me, s.port, &format!("hostile-{i}"), 70, formats))
            .expect("utf8")
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        let port = match *what {
            "port 0" => "0",
            "port 65535" => "65535",
            "port 53" => "53",
            _ => "40000",
        };
        let msg = msg.replacen("m=audio 40000 ", &format!("m=audio {port} "), 1);
        // The body changed length: say so.
        let (head, body) = msg.split_once("\r\n\r\n").expect("a body");
        let head = head
            .lines()
            .map(|l| {
                if l.starts_with("Content-Length:") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        conn.write_all(format!("{head}\r\n\r\n{body}").as_bytes())
            .expect("send");
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let status = loop {
            let n = conn.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break None;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let finals: Vec<u16> = text
                .split("SIP/2.0 ")
                .skip(1)
                .filter_map(|r| r.get(..3)?.parse().ok())
                .filter(|s| *s >= 200)
                .collect();
            if let Some(s) = finals.first() {
                break Some(*s);
            }
        };
        assert_eq!(status, Some(488), "{what}:\n{}", s.log());
    }
    // The pool holds exactly one call: a good offer still gets its ports and rings the agent.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("local");
    sock.send_to(
        &invite(me, s.port, "good-after", 70, "0"),
        ("127.0.0.1", s.port),
    )
    .expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = agent.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no agent INVITE after the hostile offers ({e}):\n{}",
            s.log()
        )
    });
    assert!(buf[..n].starts_with(b"INVITE "));
}
