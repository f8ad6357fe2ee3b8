//! Raw SIP for tests that need only the server and hand-written messages: a running
//! `screenpop serve` on a fixed port with a given profile (`TestServer`): a temp dir with the
//! profile and recordings, killed on drop, ready once it answers an OPTIONS.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    /// Starts a server on `127.0.0.1:port` with the given profile text.
    pub fn start(tag: &str, port: u16, rtp: &str, profile: &str) -> TestServer {
        claim_ports(tag, port, rtp);
        let dir = std::env::temp_dir().join(format!("screenpop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("profile.toml"), profile).expect("profile");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new(super::server_binary())
            .args(["serve", "--sip", &format!("127.0.0.1:{port}")])
            .arg("--recordings")
            .arg(dir.join("rec"))
            .arg("--database")
            .arg(format!("sqlite://{}", dir.join("screenpop.db").display()))
            .arg("--profile")
            .arg(dir.join("profile.toml"))
            .args(["--rtp-ports", rtp])
            .args(["--http", "off"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start screenpop");
        let server = TestServer { child, dir, port };
        let probe = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let _ = probe.send_to(&options("ready-probe", 0), ("127.0.0.1", port));
            let mut buf = [0u8; 2048];
            if probe.recv_from(&mut buf).is_ok() {
                return server;
            }
        }
        panic!("server did not come up:\n{}", server.log());
    }

    /// Sends the server a signal (`libc::SIGHUP`, …).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// Tests of one binary run in parallel, so two servers given the same SIP port or
/// overlapping RTP ranges fail at random ("Address already in use"). Every claim made in this
/// process is remembered, and a second claim by another tag fails at once, naming both.
fn claim_ports(tag: &str, port: u16, rtp: &str) {
    use std::sync::Mutex;
    static CLAIMS: Mutex<Vec<(String, u16, u16, u16)>> = Mutex::new(Vec::new());
    let (lo, hi) = rtp
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .unwrap_or_else(|| panic!("rtp range {rtp:?} is not LOW-HIGH"));
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    for (other, p, l, h) in claims.iter() {
        if other == tag {
            continue;
        }
        assert!(*p != port, "{tag} and {other} both use SIP port {port}");
        assert!(
            hi <= *l || lo >= *h,
            "{tag} (rtp {lo}-{hi}) overlaps {other} (rtp {l}-{h})"
        );
    }
    claims.push((tag.to_string(), port, lo, hi));
}

/// An OPTIONS request; `via_port` 0 asks for rport.
pub fn options(call_id: &str, via_port: u16) -> Vec<u8> {
    let via = if via_port == 0 {
        format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{call_id};rport")
    } else {
        format!("SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{call_id}")
    };
    format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n\
         To: <sip:x@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An INVITE from `me` to the server on `port` offering one audio stream with `formats`
/// (e.g. `"0"` or `"18\r\na=rtpmap:18 G729/8000"`).
pub fn invite(
    me: std::net::SocketAddr,
    port: u16,
    call_id: &str,
    max_forwards: u32,
    formats: &str,
) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP {formats}\r\n"
    );
    format!(
        "INVITE sip:100@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:+15550001@127.0.0.1>;tag=t\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nMax-Forwards: {max_forwards}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        len = sdp.len()
    )
    .into_bytes()
}

pub fn status_of(resp: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(resp).ok()?;
    s.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Runs `screenpop dial` and returns (exit success, JSON summary line).
pub fn dial(args: &[&str]) -> (bool, String) {
    let (ok, summary, _) = dial_full(args);
    (ok, summary)
}

/// Runs `screenpop dial` and returns (exit success, JSON summary line, its log and errors).
pub fn dial_full(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(super::server_binary())
        .arg("dial")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run dial");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}
