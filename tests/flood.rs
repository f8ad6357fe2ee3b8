//! Floods (issue 13, point 2), against a running server inside the loopback-only namespace:
//! 127.0.0.2 floods the SIP port with REGISTERs, INVITEs, OPTIONS and garbage while the trunk
//! (127.0.0.1, trusted) places a call that SIPp's phone answers, with the pop on a desktop and
//! the call recorded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::center::{Center, ADMIN_PASSWORD};
use common::desk::{call, for_call, is, state_of, Api};
use common::sipp_log::clock_of;
use common::{check_call_recording, CallExpect, Env, Ports, DIALED};

use serde_json::json;

const T: Duration = Duration::from_secs(15);

/// The ACD profile with only 127.0.0.1 trusted (the trunk and the agents' phones); the flood
/// limits are the defaults (50 a second, 200 at once, 60 s).
fn center(name: &str) -> Option<Center> {
    let env = Env::with_sipp(name)?;
    env.write_acd_profile();
    let profile = std::fs::read_to_string(&env.profile).expect("profile");
    let profile = profile
        .replace(r#"["127.0.0.0/8", "::1/128"]"#, r#"["127.0.0.1/32"]"#)
        .replace(r#"["127.0.0.0/8"]"#, r#"["127.0.0.1/32"]"#);
    assert!(!profile.contains("127.0.0.0/8"), "{profile}");
    std::fs::write(&env.profile, profile).expect("profile");
    env.admin_create("admin", ADMIN_PASSWORD);
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    Some(Center { env, server, admin })
}

/// What the flooder sends, in turn: the methods pike counts, and bytes that are no SIP.
fn flood_message(i: usize, me: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let method = ["REGISTER", "INVITE", "OPTIONS"][i % 4 % 3];
    if i % 4 == 3 {
        return format!("\u{1}\u{2}garbage {i} \u{ff}\r\n\r\n").into_bytes();
    }
    format!(
        "{method} sip:1001@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfl{i}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@{me}>;tag=f{i}\r\nTo: <sip:1001@{server}>\r\n\
         Call-ID: flood-{i}\r\nCSeq: 1 {method}\r\nContact: <sip:flood@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Floods `server` from `ip`: `per_tick` messages every millisecond until `stop` or `max`
/// messages; counts the answers. Returns (sent, answered).
fn flood(
    ip: &str,
    server: SocketAddr,
    per_tick: usize,
    max: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    let sock = UdpSocket::bind((ip, 0)).expect("bind the flooder");
    let me = sock.local_addr().expect("local");
    let answered = Arc::new(AtomicUsize::new(0));
    let reader = {
        let sock = sock.try_clone().expect("clone");
        let answered = answered.clone();
        let stop = stop.clone();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if sock.recv_from(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::spawn(move || {
        let mut sent = 0;
        let start = Instant::now();
        let mut tick = 0u32;
        while sent < max && !stop.load(Ordering::Relaxed) {
            for _ in 0..per_tick {
                let _ = sock.send_to(&flood_message(sent, me, server), server);
                sent += 1;
            }
            tick += 1;
            let next = start + Duration::from_millis(u64::from(tick));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        // Answers still on their way.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        (sent, answered.load(Ordering::Relaxed))
    })
}

/// The `nth` trunk call from 127.0.0.1 to the agent: the pop's latency from outside (SIPp's
/// INVITE sent to the desktop's frame received), and the recording checked by content.
fn trunk_call(
    c: &Center,
    nth: usize,
    ports: Ports,
    agent: &Api,
    desk: &mut common::desk::Desktop,
) -> f64 {
    // Available (again: after the first call, wrap-up ends at once and says so).
    desk.set_state("available");
    let deadline = Instant::now() + T;
    loop {
        desk.pump(Duration::from_millis(100));
        let last = desk
            .seen
            .iter()
            .rev()
            .find(|e| e["type"] == "agent.state" && e["agent_id"] == agent.agent_id);
        if last.is_some_and(|e| state_of(agent.agent_id, "available")(e)) {
            break;
        }
        assert!(Instant::now() < deadline, "not available: {:?}", desk.seen);
    }
    desk.forget();
    let mut phone = c.env.agent_phone("phone", ports, "uas_answer.xml", &[]);
    let mut trunk = c.env.trunk("uac_call.xml", &["-d", "2000"]);
    let offered = desk.wait_for(is("call.offered"), T);
    let at = desk.arrival_of(is("call.offered")).expect("arrival");
    let ended = desk.wait_for(for_call("call.ended", offered["call_id"].clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");
    trunk.expect_success(T);
    phone.expect_success(T);
    let invite = trunk
        .messages()
        .into_iter()
        .find(|m| m.sent && m.first_line.starts_with("INVITE"))
        .expect("the trunk's INVITE in its log");
    let latency_ms = ((clock_of(at) - invite.time + 86_400.0) % 86_400.0) * 1000.0;
    let talk = trunk.talk_time().expect("the trunk's talk time");
    let call_id = trunk.call_id.clone().expect("the trunk's Call-ID");
    let recs = c.env.wait_for_recordings(nth, T);
    let this = recs
        .iter()
        .find(|r| std::fs::read_to_string(&r.json).is_ok_and(|j| j.contains(&call_id)))
        .expect("this call's recording");
    check_call_recording(&c.env, this, &CallExpect::new(talk, Some(call_id)));
    latency_ms
}

/// While 127.0.0.2 floods (REGISTER, INVITE, OPTIONS and garbage at 10,000 a second for up to
/// four seconds), its first burst is answered and then nothing; it is blocked once (one
/// fail2ban line, /metrics, the API), its TCP connections are closed at once; a trunk call in
/// the middle of it pops as fast as one without the flood and is recorded whole; the trusted
/// trunk's own burst of OPTIONS is all answered; an admin lifts the block.
#[test]
fn a_flood_from_one_address_is_cut_off_while_trunk_calls_go_on() {
    let Some(c) = center("flood") else { return };
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 0,
        "is_default": true}),
    );
    let ports = Ports::allocate();
    let alice = c.agent("alice", &ports, &[], &[q]);
    let mut desk = c.desktop(&alice, "alice");
    let sip = c.env.server_addr();

    // A first call (the first after start sets up what later ones find ready).
    let first_ms = trunk_call(&c, 1, ports, &alice, &mut desk);

    let pid = c.server.pid().expect("pid");
    let (cpu_before, flood_start) = (common::cpu_ns(pid), Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood("127.0.0.2", sip, 10, 80_000, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let flood_ms = trunk_call(&c, 2, ports, &alice, &mut desk);
    // Still flooding: a TCP connection from the flooder is closed before it says anything.
    let tcp =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    tcp.bind(&"127.0.0.2:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    tcp.connect(&sip.into()).expect("connect");
    let mut tcp: std::net::TcpStream = tcp.into();
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let t0 = Instant::now();
    let closed = matches!(
        std::io::Read::read(&mut tcp, &mut [0u8; 64]),
        Ok(0) | Err(_)
    );
    assert!(
        closed && t0.elapsed() < Duration::from_secs(1),
        "a blocked source's TCP connection is closed at once ({:?})",
        t0.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, answered) = flooder.join().expect("flooder");
    // The server's CPU over the flood (the trunk call included).
    let cpu = (common::cpu_ns(pid) - cpu_before) as f64 / flood_start.elapsed().as_nanos() as f64;
    // The same call once the flood is over, for comparison.
    let quiet_ms = trunk_call(&c, 3, ports, &alice, &mut desk);
    eprintln!(
        "[flood] sent {sent}, answered {answered}; pop {first_ms:.1} ms (first call), \
         {flood_ms:.1} ms under the flood, {quiet_ms:.1} ms after it; server CPU {:.0}% of a \
         core while flooded",
        cpu * 100.0
    );
    assert!(sent >= 20_000, "the flood ran: {sent}");
    // 200 tokens: each round of REGISTER, INVITE, OPTIONS (one each, answered) and garbage
    // (five, unanswerable) costs 8, so 25 rounds get 75 answers, and a little refill.
    assert!(
        (70..=85).contains(&answered),
        "the first burst is answered, then nothing: {answered} of {sent}"
    );
    assert!(
        flood_ms < (quiet_ms * 3.0).max(25.0),
        "the pop under the flood ({flood_ms:.1} ms) is as quick as without ({quiet_ms:.1} ms)"
    );

    let log = c.server.log_text();
    assert_eq!(
        log.matches("screenpop-block ip=127.0.0.2 scope=flood ban_secs=60 offence=1 user=-")
            .count(),
        1,
        "one line per block:\n{}",
        log.lines()
            .filter(|l| l.contains("screenpop-block"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let metrics = call("GET", &format!("{}/metrics", c.env.http_base()), None, None).1;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let metric = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        metric("screenpop_blocks_total{scope=\"flood\"} "),
        1.0,
        "{metrics}"
    );
    let dropped = metric("screenpop_flood_dropped_total{scope=\"untrusted\"} ");
    assert!(dropped >= 10_000.0, "dropped {dropped}:\n{metrics}");

    let blocks = c.admin.ok("GET", "/api/blocks", None);
    let items = blocks["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{blocks}");
    assert_eq!(
        (items[0]["scope"].as_str(), items[0]["address"].as_str()),
        (Some("flood"), Some("127.0.0.2")),
        "{blocks}"
    );

    // The trusted trunk's own burst is all answered, and it is never blocked.
    let pbx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    pbx.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let me = pbx.local_addr().expect("local");
    let mut answers = 0;
    for round in 0..10 {
        for i in 0..100 {
            let n = 1_000_000 + round * 100 + i;
            let msg = String::from_utf8(flood_message(n * 4 + 2, me, sip)).expect("utf8");
            pbx.send_to(msg.as_bytes(), sip).expect("send");
        }
        let mut buf = [0u8; 4096];
        while answers < (round + 1) * 100 && pbx.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    assert_eq!(
        answers, 1000,
        "the trusted trunk's 1000 OPTIONS are all answered"
    );

    // Lifted: the flooder is answered again.
    let (st, body) = c.admin.req("DELETE", "/api/blocks/flood/127.0.0.2", None);
    assert_eq!(st, 204, "{body}");
    let again = UdpSocket::bind("127.0.0.2:0").expect("bind");
    let ask = common::options_request(again.local_addr().expect("local"), sip, "after-lift");
    let replies = common::exchange(&again, sip, ask.as_bytes(), Duration::from_secs(2));
    assert!(
        replies.iter().any(|r| r.starts_with("SIP/2.0 ")),
        "answered after the lift: {replies:?}"
    );
}
