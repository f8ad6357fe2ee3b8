//! What music on hold costs the relay: the server's CPU with every call talking, with every
//! caller hearing hold music, and with the agents' phones toggling hold all the time.
//!
//!   cargo bench --bench hold_music                 (MUSIC_CALLS=100 MUSIC_SECONDS=20)
//!
//! One run of `screenpop serve` (loopback, a temp profile and store; `MUSIC_WAV=1` gives the
//! profile a `hold_music` WAV written here instead of the built-in chime). This program is the
//! trunk and the agents' phones: it sets up MUSIC_CALLS calls over SIP (UDP), streams 20 ms
//! G.711 both ways on every call, and reads the server's CPU (utime+stime from /proc) over a
//! MUSIC_SECONDS window in each phase, on the same calls:
//!
//! - A, plain: every call talking both ways.
//! - B, held: every phone re-INVITEs `a=sendonly` (its hold button) and stops sending; the
//!   trunk keeps sending. The music reaching each trunk socket in the window is counted
//!   against 50 packets/s; below 95% on any call fails the bench.
//! - C, churn: every phone toggles hold/resume every 2 s (staggered over the 2 s). After the
//!   last resume both sides must hear RTP again, and the music must have stopped.
//!
//! Prints a table (CPU-seconds per call-minute, ratio to A), then hangs up every call and reads
//! the call records (`<id>.json` beside each recording): holds per call against the holds
//! made, and `media.played` per call per held second (expect about 50).
//!
//! The child is the binary cargo built for this target dir (`CARGO_BIN_EXE_screenpop`), as in
//! `benches/srtp_relay.rs`. Ports: SIP 9160 (server), 9170 (trunk), 9190 (phones), server RTP
//! 61000-62999 (four ports a call, so at most 500 calls), outside the blocks the integration
//! tests take and the kernel's ephemeral range.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use screenpop::sip::{HeaderName, Message, Method, Request, Response};
use serde_json::Value;

const SIP: u16 = 9160;
const TRUNK: u16 = 9170;
const PHONE: u16 = 9190;
const RTP_PORTS: &str = "61000-62999";
const PAYLOAD: usize = 160;
const TICK: Duration = Duration::from_millis(20);
/// Packets per second of 20 ms audio.
const PPS: f64 = 50.0;
const TRUNK_SSRC: u32 = 1000;
const PHONE_SSRC: u32 = 500_000;
/// How long a phone's re-INVITE or a trunk's BYE waits for its final answer before it is
/// sent again.
const RESEND: Duration = Duration::from_millis(1000);
const TOGGLE: Duration = Duration::from_secs(2);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A running server, killed on drop; its folder is kept when `keep` is set (a failed run).
struct Server {
    child: Child,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Server {
    fn start(dir: PathBuf, profile: &str) -> Server {
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
            .args(["--rtp-ports", RTP_PORTS])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start screenpop");
        let server = Server {
            child,
            dir,
            keep: false,
        };
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
        panic!(
            "screenpop did not start (see {})",
            server.dir.join("server.log").display()
        );
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

fn sdp(owner: &str, version: u32, port: u16, dir: &str) -> String {
    format!(
        "v=0\r\no={owner} 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={dir}\r\n"
    )
}

/// The `m=audio` port of an SDP body.
fn sdp_port(body: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// The direction attribute of an SDP body (`sendrecv` when it has none, RFC 4566 §6).
fn sdp_dir(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    ["sendrecv", "sendonly", "recvonly", "inactive"]
        .into_iter()
        .find(|d| text.lines().any(|l| l.trim() == format!("a={d}")))
        .unwrap_or("sendrecv")
        .to_string()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The call a screenpop INVITE to the phone belongs to: the caller's number is ours,
/// `+1415200` and the call's index in four digits.
fn caller_index(req: &Request) -> Option<usize> {
    let user = req.from()?.uri.user?;
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    digits.get(digits.len().checked_sub(4)?..)?.parse().ok()
}

fn cseq_of(r: &Response) -> Option<(u32, Method)> {
    r.cseq().map(|c| (c.seq, c.method))
}

/// A re-INVITE of the phone's waiting for its final answer.
struct Pending {
    cseq: u32,
    hold: bool,
    sent: Instant,
    bytes: Vec<u8>,
}

/// RTP received by one call's two ends since the counters were last reset.
#[derive(Default, Clone, Copy)]
struct Counts {
    /// At the trunk: packets of another SSRC than the phone's (the music).
    music: u64,
    /// At the trunk: the phone's packets, relayed.
    agent: u64,
    /// At the phone: anything.
    at_phone: u64,
}

/// One call's two media ends and what the trunk and the phone know of their dialogs.
struct Call {
    trunk: UdpSocket,
    phone: UdpSocket,
    /// screenpop's caller-leg and agent-leg RTP addresses, once known.
    to_caller_leg: Option<SocketAddr>,
    to_agent_leg: Option<SocketAddr>,
    /// The trunk's dialog: screenpop's To (with its tag) and Contact, from its 200.
    trunk_to: String,
    trunk_target: String,
    /// The phone's dialog: screenpop's INVITE's Call-ID, its From (the phone's To), To plus
    /// the phone's tag (the phone's From) and Contact (the target of the phone's requests).
    agent_call_id: String,
    phone_from: String,
    phone_to: String,
    phone_target: String,
    /// The phone's 200 to screenpop's INVITE, sent again when the INVITE is.
    phone_answer: Vec<u8>,
    phone_cseq: u32,
    sdp_version: u32,
    /// The phone is on hold (it pressed hold: it sends nothing).
    held: bool,
    pending: Option<Pending>,
    /// Holds the phone made that screenpop took (answered recvonly).
    holds: u32,
    counts: Counts,
    bye: Option<(Instant, Vec<u8>)>,
    ended: bool,
}

impl Call {
    fn up(&self) -> bool {
        self.to_caller_leg.is_some()
            && self.to_agent_leg.is_some()
            && !self.agent_call_id.is_empty()
    }
}

#[derive(Default)]
struct Tally {
    reinvites: u64,
    resent: u64,
    /// Re-INVITEs answered other than 2xx, or with another direction than expected.
    refused: u64,
    wrong_direction: u64,
    /// Requests screenpop sent the trunk (it should not, for a phone's hold).
    to_trunk: u64,
}

struct Bench {
    server: Server,
    trunk_sip: UdpSocket,
    phone_sip: UdpSocket,
    calls: Vec<Call>,
    by_agent_call: HashMap<String, usize>,
    answered_in_order: usize,
    seq: u16,
    next_tick: Instant,
    buf: Vec<u8>,
    pkt: [u8; 12 + PAYLOAD],
    tally: Tally,
}

impl Bench {
    fn new(server: Server, n: usize) -> Bench {
        let trunk_sip = UdpSocket::bind(("127.0.0.1", TRUNK)).expect("trunk sip");
        let phone_sip = UdpSocket::bind(("127.0.0.1", PHONE)).expect("phone sip");
        for s in [&trunk_sip, &phone_sip] {
            s.set_nonblocking(true).expect("nonblocking");
        }
        let calls = (0..n)
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
                    trunk_to: String::new(),
                    trunk_target: String::new(),
                    agent_call_id: String::new(),
                    phone_from: String::new(),
                    phone_to: String::new(),
                    phone_target: String::new(),
                    phone_answer: Vec::new(),
                    phone_cseq: 0,
                    sdp_version: 1,
                    held: false,
                    pending: None,
                    holds: 0,
                    counts: Counts::default(),
                    bye: None,
                    ended: false,
                }
            })
            .collect();
        let mut pkt = [0xd5u8; 12 + PAYLOAD];
        pkt[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Bench {
            server,
            trunk_sip,
            phone_sip,
            calls,
            by_agent_call: HashMap::new(),
            answered_in_order: 0,
            seq: 0,
            next_tick: Instant::now(),
            buf: vec![0u8; 65536],
            pkt,
            tally: Tally::default(),
        }
    }

    /// One 20 ms tick: SIP in, re-sends, one packet each way on every call that talks, RTP
    /// in; then sleeps to the next tick.
    fn step(&mut self) {
        self.sip();
        self.resend();
        self.stream();
        self.next_tick += TICK;
        let now = Instant::now();
        match self.next_tick.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Far behind (a busy machine): carry on from now rather than in a burst.
            None if now - self.next_tick > TICK * 5 => self.next_tick = now,
            None => {}
        }
    }

    /// Steps for `d`, calling `each` before every step.
    fn run_for(&mut self, d: Duration, mut each: impl FnMut(&mut Bench, Instant)) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            each(self, Instant::now());
            self.step();
        }
    }

    /// Runs a window of `d` with `each` before every step; the server's CPU seconds and the
    /// window's length. The RTP counters start at zero with the window.
    fn measure(&mut self, d: Duration, each: impl FnMut(&mut Bench, Instant)) -> (f64, f64) {
        self.reset_counts();
        let cpu0 = self.server.cpu();
        let t0 = Instant::now();
        self.run_for(d, each);
        let cpu = self.server.cpu() - cpu0;
        (cpu, t0.elapsed().as_secs_f64())
    }

    fn reset_counts(&mut self) {
        for c in &mut self.calls {
            // What arrived before now belongs to before the window.
            while c.trunk.recv(&mut self.buf).is_ok() {}
            while c.phone.recv(&mut self.buf).is_ok() {}
            c.counts = Counts::default();
        }
    }

    fn stream(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let ts = u32::from(self.seq) * PAYLOAD as u32;
        self.pkt[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.pkt[4..8].copy_from_slice(&ts.to_be_bytes());
        for (k, c) in self.calls.iter_mut().enumerate() {
            if c.ended {
                continue;
            }
            if let Some(to) = c.to_caller_leg {
                self.pkt[8..12].copy_from_slice(&(TRUNK_SSRC + k as u32).to_be_bytes());
                let _ = c.trunk.send_to(&self.pkt, to);
            }
            let phone_ssrc = PHONE_SSRC + k as u32;
            if let (Some(to), false) = (c.to_agent_leg, c.held) {
                self.pkt[8..12].copy_from_slice(&phone_ssrc.to_be_bytes());
                let _ = c.phone.send_to(&self.pkt, to);
            }
            while let Ok(len) = c.trunk.recv(&mut self.buf) {
                if len < 12 {
                    continue;
                }
                let ssrc =
                    u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
                if ssrc == phone_ssrc {
                    c.counts.agent += 1;
                } else {
                    c.counts.music += 1;
                }
            }
            while c.phone.recv(&mut self.buf).is_ok() {
                c.counts.at_phone += 1;
            }
        }
    }

    /// Sends `count` more trunk INVITEs (calls `from..from+count`).
    fn invite(&mut self, from: usize, count: usize) {
        for i in from..(from + count).min(self.calls.len()) {
            let port = self.calls[i].trunk.local_addr().expect("addr").port();
            let body = sdp("b", 1, port, "sendrecv");
            let inv = format!(
                "INVITE sip:100@127.0.0.1:{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKm{i};rport\r\n\
                 From: <sip:+1415200{i:04}@127.0.0.1>;tag=t{i}\r\nTo: <sip:100@127.0.0.1>\r\n\
                 Call-ID: music-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:b@127.0.0.1:{TRUNK}>\r\n\
                 Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.trunk_sip
                .send_to(inv.as_bytes(), loopback(SIP))
                .expect("invite");
        }
    }

    /// Sets up every call, 200 INVITEs a second.
    fn set_up(&mut self) -> Duration {
        let started = Instant::now();
        let mut sent = 0;
        let n = self.calls.len();
        while !self.calls.iter().all(Call::up) {
            let up = self.calls.iter().filter(|c| c.up()).count();
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "set-up stalled at {sent} sent, {up} up"
            );
            let due = (started.elapsed().as_millis() as usize / 5 + 1).min(n);
            if due > sent {
                self.invite(sent, due - sent);
                sent = due;
            }
            self.step();
        }
        started.elapsed()
    }

    fn sip(&mut self) {
        while let Ok((len, from)) = self.phone_sip.recv_from(&mut self.buf) {
            match Message::parse(&self.buf[..len]) {
                Ok(Message::Request(req)) => self.phone_request(req, from),
                Ok(Message::Response(resp)) => self.phone_response(resp, from),
                Err(_) => {}
            }
        }
        while let Ok((len, from)) = self.trunk_sip.recv_from(&mut self.buf) {
            match Message::parse(&self.buf[..len]) {
                Ok(Message::Request(req)) => self.trunk_request(req, from),
                Ok(Message::Response(resp)) => self.trunk_response(resp, from),
                Err(_) => {}
            }
        }
    }

    /// screenpop rings the phone (or sends it something within a call).
    fn phone_request(&mut self, req: Request, from: SocketAddr) {
        let call_id = req.call_id().unwrap_or_default().to_string();
        let known = self.by_agent_call.get(&call_id).copied();
        match req.method {
            Method::Invite if req.to().and_then(|t| t.tag().map(str::to_string)).is_none() => {
                if let Some(i) = known {
                    // screenpop sent its INVITE again: our answer again.
                    let _ = self.phone_sip.send_to(&self.calls[i].phone_answer, from);
                    return;
                }
                let i = caller_index(&req)
                    .filter(|i| *i < self.calls.len() && self.calls[*i].agent_call_id.is_empty())
                    .unwrap_or(self.answered_in_order);
                self.answered_in_order += 1;
                let Some(call) = self.calls.get_mut(i) else {
                    return;
                };
                call.to_agent_leg = sdp_port(&req.body).map(loopback);
                let port = call.phone.local_addr().expect("addr").port();
                let body = sdp("p", call.sdp_version, port, "sendrecv");
                let tag = format!("p{i}");
                let mut ok = req.response(200, Some(&tag));
                ok.headers.push(
                    HeaderName::Contact,
                    format!("<sip:phone@127.0.0.1:{PHONE}>"),
                );
                let ok = ok.with_body("application/sdp", body.into_bytes());
                call.phone_answer = Message::Response(ok).to_bytes();
                call.agent_call_id = call_id.clone();
                call.phone_to = req.headers.get(&HeaderName::From).unwrap_or("").to_string();
                call.phone_from = format!(
                    "{};tag={tag}",
                    req.headers.get(&HeaderName::To).unwrap_or("")
                );
                call.phone_target = req
                    .contact()
                    .map(|c| c.uri.to_string())
                    .unwrap_or_else(|| format!("sip:screenpop@127.0.0.1:{SIP}"));
                let _ = self.phone_sip.send_to(&call.phone_answer, from);
                self.by_agent_call.insert(call_id, i);
            }
            Method::Invite => {
                // screenpop re-INVITEs the phone (not expected here): take its offer.
                let port = known.map_or(9, |i| {
                    self.calls[i].phone.local_addr().map_or(9, |a| a.port())
                });
                let body = sdp("p", 99, port, "sendrecv");
                let ok = req
                    .response(200, None)
                    .with_body("application/sdp", body.into_bytes());
                let _ = self
                    .phone_sip
                    .send_to(&Message::Response(ok).to_bytes(), from);
            }
            Method::Ack => {}
            _ => {
                let r = req.response(200, None);
                let _ = self
                    .phone_sip
                    .send_to(&Message::Response(r).to_bytes(), from);
            }
        }
    }

    /// The answer to one of the phone's re-INVITEs.
    fn phone_response(&mut self, resp: Response, from: SocketAddr) {
        let Some(&i) = resp.call_id().and_then(|c| self.by_agent_call.get(c)) else {
            return;
        };
        let Some((cseq, Method::Invite)) = cseq_of(&resp) else {
            return;
        };
        if resp.status < 200 {
            return;
        }
        let c = &mut self.calls[i];
        let to = resp.headers.get(&HeaderName::To).unwrap_or("").to_string();
        if resp.status >= 300 {
            // A non-2xx is ACKed in its transaction (RFC 3261 §17.1.1.3).
            let ack = format!(
                "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{PHONE};branch=z9hG4bKh{i}x{cseq};rport\r\n\
                 From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                c.phone_target, c.phone_from, c.agent_call_id
            );
            let _ = self.phone_sip.send_to(ack.as_bytes(), from);
            if c.pending.as_ref().is_some_and(|p| p.cseq == cseq) {
                c.pending = None;
                self.tally.refused += 1;
                // The phone's state is what it asked for; the next toggle or settle asks again.
            }
            return;
        }
        // A 2xx is ACKed end to end, each time it comes (our ACK may have been lost).
        let ack = format!(
            "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{PHONE};branch=z9hG4bKk{i}x{cseq};rport\r\n\
             From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            c.phone_target, c.phone_from, c.agent_call_id
        );
        let _ = self.phone_sip.send_to(ack.as_bytes(), from);
        let Some(p) = c.pending.take_if(|p| p.cseq == cseq) else {
            return;
        };
        let want = if p.hold { "recvonly" } else { "sendrecv" };
        if sdp_dir(&resp.body) == want {
            if p.hold {
                c.holds += 1;
            }
        } else {
            self.tally.wrong_direction += 1;
        }
    }

    /// The phone presses hold (`hold`) or resume: a re-INVITE with sendonly or sendrecv. It
    /// stops or starts sending at once, as phones do.
    fn press(&mut self, i: usize, hold: bool) {
        let c = &mut self.calls[i];
        if c.ended || c.pending.is_some() {
            return;
        }
        c.phone_cseq += 1;
        c.sdp_version += 1;
        c.held = hold;
        let cseq = c.phone_cseq;
        let port = c.phone.local_addr().expect("addr").port();
        let body = sdp(
            "p",
            c.sdp_version,
            port,
            if hold { "sendonly" } else { "sendrecv" },
        );
        let inv = format!(
            "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{PHONE};branch=z9hG4bKh{i}x{cseq};rport\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:phone@127.0.0.1:{PHONE}>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            c.phone_target,
            c.phone_from,
            c.phone_to,
            c.agent_call_id,
            body.len()
        )
        .into_bytes();
        let _ = self.phone_sip.send_to(&inv, loopback(SIP));
        c.pending = Some(Pending {
            cseq,
            hold,
            sent: Instant::now(),
            bytes: inv,
        });
        self.tally.reinvites += 1;
    }

    /// Presses hold or resume on every phone not already so, and steps until screenpop took
    /// every one.
    fn press_all(&mut self, hold: bool) {
        let n = self.calls.len();
        let started = Instant::now();
        loop {
            for i in 0..n {
                let c = &self.calls[i];
                if c.held != hold && c.pending.is_none() {
                    self.press(i, hold);
                }
            }
            if self
                .calls
                .iter()
                .all(|c| c.held == hold && c.pending.is_none())
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not taken in 30 s",
                if hold { "holds" } else { "resumes" }
            );
            self.step();
        }
    }

    /// Re-sends what waits too long for its answer (UDP; a busy server).
    fn resend(&mut self) {
        let now = Instant::now();
        for c in &mut self.calls {
            if let Some(p) = c.pending.as_mut().filter(|p| now - p.sent > RESEND) {
                let _ = self.phone_sip.send_to(&p.bytes, loopback(SIP));
                p.sent = now;
                self.tally.resent += 1;
            }
            if let Some((sent, bytes)) = c.bye.as_mut().filter(|(s, _)| now - *s > RESEND) {
                let _ = self.trunk_sip.send_to(bytes, loopback(SIP));
                *sent = now;
                self.tally.resent += 1;
            }
        }
    }

    fn trunk_request(&mut self, req: Request, from: SocketAddr) {
        self.tally.to_trunk += 1;
        let resp = if req.method == Method::Invite {
            let port = req
                .call_id()
                .and_then(|c| c.strip_prefix("music-"))
                .and_then(|k| k.parse::<usize>().ok())
                .and_then(|i| self.calls.get(i))
                .map_or(9, |c| c.trunk.local_addr().map_or(9, |a| a.port()));
            req.response(200, None).with_body(
                "application/sdp",
                sdp("b", 99, port, "sendrecv").into_bytes(),
            )
        } else if req.method == Method::Ack {
            return;
        } else {
            req.response(200, None)
        };
        let _ = self
            .trunk_sip
            .send_to(&Message::Response(resp).to_bytes(), from);
    }

    fn trunk_response(&mut self, resp: Response, from: SocketAddr) {
        let Some(i) = resp
            .call_id()
            .and_then(|c| c.strip_prefix("music-"))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|i| *i < self.calls.len())
        else {
            return;
        };
        let c = &mut self.calls[i];
        match cseq_of(&resp) {
            Some((_, Method::Invite)) if resp.status == 200 => {
                c.to_caller_leg = sdp_port(&resp.body).map(loopback);
                c.trunk_to = resp.headers.get(&HeaderName::To).unwrap_or("").to_string();
                c.trunk_target = resp
                    .contact()
                    .map(|c| c.uri.to_string())
                    .unwrap_or_else(|| format!("sip:screenpop@127.0.0.1:{SIP}"));
                let ack = format!(
                    "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKa{i};rport\r\n\
                     From: <sip:+1415200{i:04}@127.0.0.1>;tag=t{i}\r\nTo: {}\r\nCall-ID: music-{i}\r\n\
                     CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    c.trunk_target, c.trunk_to
                );
                let _ = self.trunk_sip.send_to(ack.as_bytes(), from);
            }
            Some((_, Method::Bye)) if resp.status >= 200 => {
                c.bye = None;
            }
            _ => {}
        }
    }

    /// The trunk hangs up every call (500 BYEs a second) and steps until all are answered.
    fn hang_up(&mut self) {
        let n = self.calls.len();
        let mut next = 0;
        let started = Instant::now();
        while next < n || self.calls.iter().any(|c| c.bye.is_some()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "BYEs not answered in 30 s"
            );
            for i in next..(next + 10).min(n) {
                let c = &mut self.calls[i];
                let bye = format!(
                    "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{TRUNK};branch=z9hG4bKy{i};rport\r\n\
                     From: <sip:+1415200{i:04}@127.0.0.1>;tag=t{i}\r\nTo: {}\r\nCall-ID: music-{i}\r\n\
                     CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    c.trunk_target, c.trunk_to
                )
                .into_bytes();
                let _ = self.trunk_sip.send_to(&bye, loopback(SIP));
                c.bye = Some((Instant::now(), bye));
                c.ended = true;
            }
            next = (next + 10).min(n);
            self.step();
        }
    }
}

/// A 3 s 16 kHz mono WAV (a slow two-tone warble), so the server converts it at start.
fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for n in 0..48_000u32 {
        let t = f64::from(n) / 16000.0;
        let hz = if (t * 2.0) as u32 % 2 == 0 {
            440.0
        } else {
            554.37
        };
        let v = (2.0 * std::f64::consts::PI * hz * t).sin() * 8000.0;
        w.write_sample(v as i16).expect("sample");
    }
    w.finalize().expect("wav");
}

/// The complete call records under `rec` of our calls, by call index.
fn records(rec: &Path) -> HashMap<usize, Value> {
    let mut out = HashMap::new();
    let mut dirs = vec![rec.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some(v) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            let i = v["call_id"]
                .as_str()
                .and_then(|c| c.strip_prefix("music-"))
                .and_then(|k| k.parse::<usize>().ok());
            if let (Some(i), true) = (i, v["complete"].as_bool() == Some(true)) {
                out.insert(i, v);
            }
        }
    }
    out
}

fn min_mean_max(xs: &[f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, xs.iter().sum::<f64>() / xs.len() as f64, max)
}

struct Row {
    phase: &'static str,
    cpu: f64,
    secs: f64,
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let n: usize = env_or("MUSIC_CALLS", "100")
        .parse()
        .unwrap_or(100)
        .clamp(1, 500);
    let window = Duration::from_secs(env_or("MUSIC_SECONDS", "20").parse().unwrap_or(20).max(1));
    let wav = env_or("MUSIC_WAV", "0") == "1";
    let dir = std::env::temp_dir().join(format!("screenpop-music-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let music = if wav {
        let p = dir.join("hold.wav");
        write_wav(&p);
        format!("hold_music = \"{}\"\n", p.display())
    } else {
        String::new()
    };
    let profile = format!(
        "name = \"bench\"\nring_timeout_secs = 30\nsession_expires_secs = 0\nrtp_timeout_secs = 0\n\
         agent_srtp = \"never\"\n{music}[trust]\ncidrs = [\"127.0.0.0/8\"]\n[[trunks]]\nname = \"t\"\n\
         cidrs = [\"127.0.0.0/8\"]\nagent = \"sip:phone@127.0.0.1:{PHONE}\"\n"
    );
    let server = Server::start(dir.clone(), &profile);
    let mut b = Bench::new(server, n);
    let mut failures: Vec<String> = Vec::new();
    let mut fail = |msg: String| {
        eprintln!("FAIL: {msg}");
        failures.push(msg);
    };

    let setup = b.set_up();
    println!(
        "{n} calls up in {:.2} s; music: {}",
        setup.as_secs_f64(),
        if wav {
            "hold.wav (16 kHz)"
        } else {
            "built-in chime"
        }
    );
    let mut rows = Vec::new();

    // A: plain.
    b.run_for(Duration::from_secs(3), |_, _| {});
    let (cpu, secs) = b.measure(window, |_, _| {});
    rows.push(Row {
        phase: "A plain",
        cpu,
        secs,
    });
    let expected = secs * PPS;
    let agent_at_trunk: Vec<f64> = b
        .calls
        .iter()
        .map(|c| c.counts.agent as f64 / expected)
        .collect();
    let at_phone: Vec<f64> = b
        .calls
        .iter()
        .map(|c| c.counts.at_phone as f64 / expected)
        .collect();
    let (lo_t, mean_t, _) = min_mean_max(&agent_at_trunk);
    let (lo_p, mean_p, _) = min_mean_max(&at_phone);
    println!(
        "A: delivered to trunk {mean_t:.3} (worst call {lo_t:.3}), to phone {mean_p:.3} (worst {lo_p:.3})"
    );

    // B: every phone holds; the trunks hear music.
    let t_hold = Instant::now();
    b.press_all(true);
    println!(
        "B: {n} holds taken in {:.2} s",
        t_hold.elapsed().as_secs_f64()
    );
    b.run_for(Duration::from_secs(1), |_, _| {});
    let (cpu, secs) = b.measure(window, |_, _| {});
    rows.push(Row {
        phase: "B held",
        cpu,
        secs,
    });
    let expected = secs * PPS;
    let music: Vec<f64> = b
        .calls
        .iter()
        .map(|c| c.counts.music as f64 / expected)
        .collect();
    let (lo, mean, hi) = min_mean_max(&music);
    let relayed_while_held: u64 = b.calls.iter().map(|c| c.counts.agent).sum();
    println!(
        "B: music at the trunk, received/expected per call: mean {mean:.3}, min {lo:.3}, max {hi:.3} \
         ({expected:.0} expected per call); phone audio relayed while held: {relayed_while_held}"
    );
    let short: Vec<usize> = (0..n).filter(|&i| music[i] < 0.95).collect();
    if !short.is_empty() {
        fail(format!(
            "B: {} of {n} calls got under 95% of the hold music (worst {lo:.3}; calls {:?})",
            short.len(),
            &short[..short.len().min(10)]
        ));
    }

    // C: churn; start from all resumed, each phone toggling every 2 s, staggered.
    b.press_all(false);
    b.run_for(Duration::from_secs(1), |_, _| {});
    let t0 = Instant::now();
    let mut next: Vec<Instant> = (0..n)
        .map(|i| t0 + TOGGLE.mul_f64(i as f64 / n as f64))
        .collect();
    let mut churn = move |b: &mut Bench, now: Instant| {
        for (i, at) in next.iter_mut().enumerate() {
            if now >= *at && b.calls[i].pending.is_none() {
                let hold = !b.calls[i].held;
                b.press(i, hold);
                *at += TOGGLE;
            }
        }
    };
    let reinvites0 = b.tally.reinvites;
    b.run_for(TOGGLE, &mut churn);
    let (cpu, secs) = b.measure(window, &mut churn);
    rows.push(Row {
        phase: "C churn",
        cpu,
        secs,
    });
    let churn_reinvites = b.tally.reinvites - reinvites0;
    b.press_all(false);
    // In-flight music and packets from before the resume drain; then 2 s of talk.
    b.run_for(Duration::from_millis(300), |_, _| {});
    let (_, secs) = b.measure(Duration::from_secs(2), |_, _| {});
    let expected = secs * PPS;
    let mut deaf = Vec::new();
    let mut still_music = Vec::new();
    for (i, c) in b.calls.iter().enumerate() {
        if (c.counts.agent as f64) < 0.8 * expected || (c.counts.at_phone as f64) < 0.8 * expected {
            deaf.push(i);
        }
        if c.counts.music > 5 {
            still_music.push(i);
        }
    }
    println!(
        "C: {churn_reinvites} re-INVITEs ({:.1}/s); after the last resume, {} of {n} calls talk both ways, \
         {} still hear music",
        churn_reinvites as f64 / (rows[2].secs + TOGGLE.as_secs_f64()),
        n - deaf.len(),
        still_music.len()
    );
    if !deaf.is_empty() {
        fail(format!(
            "C: {} calls not talking both ways after the last resume: {:?}",
            deaf.len(),
            &deaf[..deaf.len().min(10)]
        ));
    }
    if !still_music.is_empty() {
        fail(format!(
            "C: {} calls still hear music after the last resume: {:?}",
            still_music.len(),
            &still_music[..still_music.len().min(10)]
        ));
    }
    let t = &b.tally;
    println!(
        "SIP: {} re-INVITEs, {} re-sent, {} refused, {} answered with the wrong direction, \
         {} requests to the trunk",
        t.reinvites, t.resent, t.refused, t.wrong_direction, t.to_trunk
    );
    if t.refused + t.wrong_direction > 0 {
        fail(format!(
            "{} re-INVITEs refused, {} answered with the wrong direction",
            t.refused, t.wrong_direction
        ));
    }

    // The table.
    let per_call_minute = |r: &Row| r.cpu / (n as f64 * r.secs / 60.0);
    let base = per_call_minute(&rows[0]);
    println!();
    println!(
        "{:<8} {:>6} {:>8} {:>12} {:>20} {:>10}",
        "phase", "calls", "seconds", "CPU-seconds", "CPU-s/call-minute", "ratio to A"
    );
    for r in &rows {
        let pcm = per_call_minute(r);
        println!(
            "{:<8} {:>6} {:>8.1} {:>12.3} {:>20.5} {:>10.3}",
            r.phase,
            n,
            r.secs,
            r.cpu,
            pcm,
            pcm / base
        );
    }
    println!();

    // Hang up and read the records.
    let holds_made: Vec<u32> = b.calls.iter().map(|c| c.holds).collect();
    b.hang_up();
    let rec = dir.join("rec");
    let started = Instant::now();
    let mut recs = records(&rec);
    while recs.len() < n && started.elapsed() < Duration::from_secs(30) {
        // Still answering SIP (screenpop's BYEs to the phones) while the records land.
        b.run_for(Duration::from_millis(200), |_, _| {});
        recs = records(&rec);
    }
    if recs.len() < n {
        fail(format!("only {} of {n} complete call records", recs.len()));
    }
    let mut holds = Vec::new();
    let mut mismatched = Vec::new();
    let mut per_held_sec = Vec::new();
    let mut to_agent = 0u64;
    for (i, v) in &recs {
        let spans = v["holds"].as_array().cloned().unwrap_or_default();
        holds.push(spans.len() as f64);
        if spans.len() != holds_made[*i] as usize {
            mismatched.push(*i);
        }
        let held_ms: u64 = spans
            .iter()
            .map(|s| {
                s["end_ms"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(s["start_ms"].as_u64().unwrap_or(0))
            })
            .sum();
        let played = &v["media"]["played"];
        to_agent += played[1].as_u64().unwrap_or(0);
        if held_ms > 0 {
            per_held_sec.push(played[0].as_u64().unwrap_or(0) as f64 / (held_ms as f64 / 1000.0));
        }
    }
    let (hlo, hmean, hhi) = min_mean_max(&holds);
    let (plo, pmean, phi) = min_mean_max(&per_held_sec);
    let made: u32 = holds_made.iter().sum();
    println!(
        "records: {} of {n}; holds per call: mean {hmean:.2}, min {hlo}, max {hhi} ({made} made in all, \
         {} calls whose record disagrees)",
        recs.len(),
        mismatched.len()
    );
    println!(
        "media.played into the caller leg per held second: mean {pmean:.2}, min {plo:.2}, max {phi:.2} \
         (50 expected); into the agent leg: {to_agent} in all"
    );
    if !mismatched.is_empty() {
        mismatched.sort_unstable();
        fail(format!(
            "{} records' holds disagree with the holds made: calls {:?}",
            mismatched.len(),
            &mismatched[..mismatched.len().min(10)]
        ));
    }
    if !per_held_sec.is_empty() && plo < 0.95 * PPS {
        fail(format!(
            "a record says {plo:.2} packets played per held second (under 95% of 50)"
        ));
    }

    if !failures.is_empty() {
        b.server.keep = true;
        let log = dir.join("server.log");
        drop(b);
        panic!(
            "{} check(s) failed (server log kept: {}):\n{}",
            failures.len(),
            log.display(),
            failures.join("\n")
        );
    }
}
