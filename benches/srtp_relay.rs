//! What SRTP costs the relay (issue 10), and how fast the TLS listener takes handshakes.
//!
//!   cargo bench --bench srtp_relay                 (SRTP_CALLS=100,400 SRTP_SECONDS=20)
//!
//! For each call count, two runs of `screenpop serve` in the same process: `agent_srtp =
//! "never"` (plain RTP on both legs) and `"always"` (SDES-SRTP on the agent's leg, plain on
//! the trunk's). This program is the trunk and the agent's phone: it sets up the calls over SIP
//! (UDP), then streams G.711 both ways on every call at 50 packets/s, the phone's side
//! encrypted with the phone's key; every call is relayed and recorded. The server's CPU
//! (utime+stime from /proc) is read over a window in which every call is up and streaming, and
//! reported per call-minute, with the SRTP/plain ratio. A sample of what reaches each side is
//! checked (the phone decrypts what screenpop encrypted for it).
//!
//! Then the TLS listener: SRTP_HANDSHAKES (default 1000) full handshakes from two client
//! threads, each on a new connection, with an OPTIONS answered over each; handshakes per second
//! and the server's CPU per handshake.
//!
//! Prints one JSON object.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use screenpop::media::srtp::{Crypto, MasterKey, SrtpContext};
use screenpop::sip::{HeaderName, Message};
use serde_json::{json, Value};

const SIP: u16 = 16060;
const TLS: u16 = 16061;
const TRUNK: u16 = 16070;
const PHONE: u16 = 16090;
const PAYLOAD: usize = 160;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A running server, killed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn start(tag: &str, profile: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("screenpop-srtp-bench-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        Server::start_in(dir, profile)
    }

    fn start_in(dir: PathBuf, profile: &str) -> Server {
        std::fs::write(dir.join("profile.toml"), profile).expect("profile");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_screenpop"))
            .args([
                "serve",
                "--sip",
                &format!("127.0.0.1:{SIP}"),
                "--http",
                "off",
            ])
            .arg("--recordings")
            .arg(dir.join("rec"))
            .arg("--database")
            .arg(format!("sqlite://{}", dir.join("db.sqlite").display()))
            .arg("--profile")
            .arg(dir.join("profile.toml"))
            .args(["--rtp-ports", "30000-39999"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start screenpop");
        let server = Server { child, dir };
        let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        for _ in 0..100 {
            let _ = probe.send_to(&options("probe"), ("127.0.0.1", SIP));
            if probe.recv_from(&mut [0u8; 2048]).is_ok() {
                return server;
            }
        }
        panic!("screenpop did not start");
    }

    /// utime + stime in seconds.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at state.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz
    }
}

fn options(call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The `m=audio` port and the first `a=crypto` line of an SDP body.
fn sdp_of(body: &[u8]) -> (Option<u16>, Option<Crypto>) {
    let text = String::from_utf8_lossy(body);
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    let crypto = text
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .and_then(|v| Crypto::parse(v.trim()).ok());
    (port, crypto)
}

fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, PAYLOAD));
    p
}

/// One call's two media ends: the trunk's socket and the phone's.
struct Call {
    trunk: UdpSocket,
    phone: UdpSocket,
    /// screenpop's caller-leg and agent-leg RTP addresses, once known.
    to_caller_leg: Option<SocketAddr>,
    to_agent_leg: Option<SocketAddr>,
    /// The phone's SRTP: it encrypts with its key, decrypts with screenpop's.
    phone_tx: Option<SrtpContext>,
    phone_rx: Option<SrtpContext>,
}

/// Sets up `n` calls and streams on all of them; returns the server's CPU seconds over
/// `window` and what was checked.
fn run(n: usize, srtp: bool, warmup: Duration, window: Duration) -> Value {
    let mode = if srtp { "always" } else { "never" };
    let profile = format!(
        "name = \"bench\"\nring_timeout_secs = 30\nsession_expires_secs = 0\nrtp_timeout_secs = 0\n\
         agent_srtp = \"{mode}\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n[[trunks]]\nname = \"t\"\n\
         cidrs = [\"127.0.0.0/8\"]\nagent = \"sip:phone@127.0.0.1:{PHONE}\"\n"
    );
    let server = Server::start(&format!("{n}-{mode}"), &profile);
    let trunk_sip = UdpSocket::bind(("127.0.0.1", TRUNK)).expect("trunk sip");
    let phone_sip = UdpSocket::bind(("127.0.0.1", PHONE)).expect("phone sip");
    for s in [&trunk_sip, &phone_sip] {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut calls: Vec<Call> = (0..n)
        .map(|_| {
            let trunk = UdpSocket::bind("127.0.0.1:0").expect("trunk media");
            let phone = UdpSocket::bind("127.0.0.1:0").expect("phone media");
            trunk.set_nonblocking(true).expect("nonblocking");
            phone.set_nonblocking(true).expect("nonblocking");
            Call {
                trunk,
                phone,
                to_caller_leg: None,
                to_agent_leg: None,
                phone_tx: None,
                phone_rx: None,
            }
        })
        .collect();
    // The phone answers INVITEs in arrival order: the i-th INVITE gets phone media socket i.
    let mut answered = 0usize;
    let mut sent = 0usize;
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    let sip = SocketAddr::from(([127, 0, 0, 1], SIP));
    while calls
        .iter()
        .any(|c| c.to_caller_leg.is_none() || c.to_agent_leg.is_none())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "set-up stalled at {sent} sent, {answered} answered"
        );
        // 200 INVITEs a second.
        let due = (started.elapsed().as_millis() as usize / 5 + 1).min(n);
        while sent < due {
            let port = calls[sent].trunk.local_addr().expect("addr").port();
            let sdp = format!(
                "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
            );
            let inv = format!(
                "INVITE sip:100@127.0.0.1:{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKb{sent};rport\r\n\
                 From: <sip:+1415200{sent:04}@127.0.0.1>;tag=t{sent}\r\nTo: <sip:100@127.0.0.1>\r\n\
                 Call-ID: bench-{sent}\r\nCSeq: 1 INVITE\r\nContact: <sip:b@127.0.0.1:{TRUNK}>\r\n\
                 Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            );
            trunk_sip.send_to(inv.as_bytes(), sip).expect("invite");
            sent += 1;
        }
        let mut idle = true;
        while let Ok((len, from)) = phone_sip.recv_from(&mut buf) {
            idle = false;
            let Ok(Message::Request(req)) = Message::parse(&buf[..len]) else {
                continue;
            };
            match req.method.to_string().as_str() {
                "INVITE" if req.to().and_then(|t| t.tag().map(str::to_string)).is_none() => {
                    let i = answered;
                    answered += 1;
                    let Some(call) = calls.get_mut(i) else {
                        continue;
                    };
                    let (port, crypto) = sdp_of(&req.body);
                    call.to_agent_leg = port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
                    let my_port = call.phone.local_addr().expect("addr").port();
                    let mut media = format!("m=audio {my_port} RTP/AVP 0\r\n");
                    if let Some(theirs) = crypto {
                        let mine = MasterKey::generate();
                        call.phone_tx = Some(SrtpContext::new(&mine, theirs.suite));
                        call.phone_rx = Some(SrtpContext::new(&theirs.key, theirs.suite));
                        let line = Crypto {
                            tag: theirs.tag,
                            suite: theirs.suite,
                            key: mine,
                        };
                        media = format!(
                            "m=audio {my_port} RTP/SAVP 0\r\na=crypto:{}\r\n",
                            line.to_attr()
                        );
                    }
                    let body = format!(
                        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         {media}a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
                    );
                    let mut ok = req.response(200, Some(&format!("p{i}")));
                    ok.headers.push(
                        HeaderName::Contact,
                        format!("<sip:phone@127.0.0.1:{PHONE}>"),
                    );
                    let ok = ok.with_body("application/sdp", body.into_bytes());
                    let _ = phone_sip.send_to(&Message::Response(ok).to_bytes(), from);
                }
                "ACK" => {}
                _ => {
                    let r = req.response(200, None);
                    let _ = phone_sip.send_to(&Message::Response(r).to_bytes(), from);
                }
            }
        }
        while let Ok((len, from)) = trunk_sip.recv_from(&mut buf) {
            idle = false;
            let Ok(Message::Response(resp)) = Message::parse(&buf[..len]) else {
                continue;
            };
            if resp.status != 200 {
                continue;
            }
            let Some(i) = resp
                .headers
                .get(&HeaderName::CallId)
                .and_then(|c| c.strip_prefix("bench-"))
                .and_then(|k| k.parse::<usize>().ok())
            else {
                continue;
            };
            let (port, _) = sdp_of(&resp.body);
            if let Some(call) = calls.get_mut(i) {
                call.to_caller_leg = port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
            }
            let to = resp.headers.get(&HeaderName::To).unwrap_or("");
            let ack = format!(
                "ACK sip:screenpop@127.0.0.1:{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKa{i};rport\r\n\
                 From: <sip:+1415200{i:04}@127.0.0.1>;tag=t{i}\r\nTo: {to}\r\nCall-ID: bench-{i}\r\n\
                 CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = trunk_sip.send_to(ack.as_bytes(), from);
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let setup = started.elapsed();

    // Stream: every 20 ms one packet each way on every call.
    let mut tick = Instant::now();
    let mut seq: u16 = 0;
    let mut sealed = Vec::with_capacity(256);
    let mut opened = Vec::with_capacity(256);
    let (mut at_trunk, mut at_phone, mut phone_ok, mut phone_bad) = (0u64, 0u64, 0u64, 0u64);
    let streaming = Instant::now();
    let mut cpu0 = None;
    let mut window_started = None;
    let end = warmup + window;
    while streaming.elapsed() < end {
        if cpu0.is_none() && streaming.elapsed() >= warmup {
            cpu0 = Some(server.cpu());
            window_started = Some(Instant::now());
            at_trunk = 0;
            at_phone = 0;
        }
        seq = seq.wrapping_add(1);
        let ts = u32::from(seq) * PAYLOAD as u32;
        for (k, c) in calls.iter_mut().enumerate() {
            if let Some(to) = c.to_caller_leg {
                let _ = c.trunk.send_to(&rtp(seq, ts, 1000 + k as u32), to);
            }
            if let Some(to) = c.to_agent_leg {
                let pkt = rtp(seq, ts, 5000 + k as u32);
                match c.phone_tx.as_mut() {
                    Some(tx) => {
                        tx.protect(&pkt, &mut sealed).expect("protect");
                        let _ = c.phone.send_to(&sealed, to);
                    }
                    None => {
                        let _ = c.phone.send_to(&pkt, to);
                    }
                }
            }
            while let Ok(len) = c.trunk.recv(&mut buf) {
                at_trunk += 1;
                debug_assert!(len >= 12);
            }
            while let Ok(len) = c.phone.recv(&mut buf) {
                at_phone += 1;
                // Check one packet in 50 by decrypting it (all of them would load the
                // generator, which shares the machine).
                if let (Some(rx), true) = (c.phone_rx.as_mut(), at_phone % 50 == 0) {
                    match rx.unprotect(&buf[..len], &mut opened) {
                        Ok(()) if opened.len() == 12 + PAYLOAD => phone_ok += 1,
                        _ => phone_bad += 1,
                    }
                }
            }
        }
        tick += Duration::from_millis(20);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = server.cpu() - cpu0.unwrap_or(0.0);
    let secs = window_started.map_or(0.0, |w| w.elapsed().as_secs_f64());
    let expected = (n as f64) * secs * 50.0;
    let call_minutes = n as f64 * secs / 60.0;
    json!({
        "calls": n,
        "agent_srtp": mode,
        "setup_s": (setup.as_secs_f64() * 100.0).round() / 100.0,
        "window_s": (secs * 10.0).round() / 10.0,
        "server_cpu_s": (cpu * 1000.0).round() / 1000.0,
        "cpu_s_per_call_minute": cpu / call_minutes,
        "delivered_to_trunk": at_trunk as f64 / expected,
        "delivered_to_phone": at_phone as f64 / expected,
        "phone_decrypted_ok": phone_ok,
        "phone_decrypt_failed": phone_bad,
    })
}

/// `count` TLS handshakes from two threads, each followed by an OPTIONS and its 200.
fn handshakes(count: usize) -> Value {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = std::env::temp_dir().join("screenpop-srtp-bench-tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("key");
    let profile = format!(
        "name = \"tls-bench\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n[tls]\nport = {TLS}\n\
         cert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let server = Server::start_in(dir.clone(), &profile);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let cpu0 = server.cpu();
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for k in 0..count / 2 {
                    let tcp = TcpStream::connect(("127.0.0.1", TLS)).expect("connect");
                    let name = ServerName::try_from("127.0.0.1").expect("name");
                    let conn = rustls::ClientConnection::new(cfg.clone(), name).expect("client");
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    s.write_all(&options(&format!("hs-{t}-{k}"))).expect("send");
                    let mut buf = [0u8; 2048];
                    if s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"SIP/2.0 200"))
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let wall = started.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    json!({
        "handshakes": count,
        "answered": ok,
        "per_second": (ok as f64 / wall).round(),
        "server_cpu_ms_per_handshake": (cpu * 1000.0 / ok.max(1) as f64 * 1000.0).round() / 1000.0,
    })
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let counts: Vec<usize> = env_or("SRTP_CALLS", "100,400")
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let window = Duration::from_secs(env_or("SRTP_SECONDS", "20").parse().unwrap_or(20));
    let warmup = Duration::from_secs(3);
    let mut relay = Vec::new();
    for &n in &counts {
        let plain = run(n, false, warmup, window);
        let srtp = run(n, true, warmup, window);
        let ratio = srtp["cpu_s_per_call_minute"].as_f64().unwrap_or(0.0)
            / plain["cpu_s_per_call_minute"].as_f64().unwrap_or(f64::NAN);
        relay.push(json!({
            "calls": n,
            "plain": plain,
            "srtp_on_agent_leg": srtp,
            "srtp_over_plain_cpu": (ratio * 1000.0).round() / 1000.0,
        }));
    }
    let tls = handshakes(env_or("SRTP_HANDSHAKES", "1000").parse().unwrap_or(1000));
    let report = json!({ "relay": relay, "tls": tls });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
