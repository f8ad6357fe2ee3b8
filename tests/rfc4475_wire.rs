//! RFC 4475 torture messages sent to a running server over UDP, TCP and TLS. These messages name
//! foreign hosts (192.0.2.x, example.com, 255.255.255.255), so this test must run inside a
//! network namespace with only loopback (`tests/run.sh` does that); it refuses to run
//! otherwise, so a wrong reply can never leave the machine.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::raw::{status_of, TestServer};

fn options(call_id: &str) -> Vec<u8> {
    common::raw::options(call_id, 0)
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc4475")
}

/// True when the only network interface is loopback (we are inside `unshare -n`).
fn loopback_only() -> bool {
    match std::fs::read_to_string("/proc/net/dev") {
        Ok(s) => s
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo"),
        Err(_) => false,
    }
}

const PROFILE: &str =
    "name = \"torture\"\nring_timeout_secs = 1\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
     [[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\nagent = \"sip:agent@127.0.0.1:5999\"\n";

/// The agent target is a port nobody listens on: valid INVITEs get 100 Trying and then a 480
/// when the ring timeout ends.
fn start_server(sip_port: u16, rtp: &str, tag: &str) -> TestServer {
    TestServer::start(&format!("4475-{tag}"), sip_port, rtp, PROFILE)
}

/// What the element must answer to each message (`None`: no answer at all).
fn expected(file: &str, verdict: &str) -> Expect {
    match file {
        "TC_INSUF_I.dat" | "TC_MULTI01_I.dat" | "TC_MCL01_I.dat" => Expect::Status(400),
        "TC_UNKSCM_V.dat" | "TC_NOVELSC_V.dat" => Expect::Status(416),
        "TC_BEXT01_V.dat" => Expect::Status(420),
        "TC_INVUT_V.dat" => Expect::Status(415),
        // MESSAGE is a method we know but do not take (RFC 3261 §8.2.1).
        "TC_MPART01.dat" => Expect::Status(405),
        "TC_SDP01_V.dat" => Expect::Status(406),
        // REGISTERs without (usable) credentials are challenged.
        "TC_REGAUT01_V.dat" | "TC_CPARAM01_V.dat" | "TC_CPARAM02_V.dat" | "TC_REGESCRT_V.dat"
        | "TC_UNKSM2_V.dat" | "TC_ESCNULL_V.dat" | "TC_DBLREQ.dat" => Expect::Status(401),
        // A UAS processes Max-Forwards: 0 normally (RFC 4475 §3.3.11).
        "TC_ZEROMF_V.dat" => Expect::Status(200),
        // Valid INVITEs (RFC 2543 syntax included) are taken: 100 Trying first.
        "TC_INV2543_I.dat" | "TC_ESC01_V.dat" | "TC_LONGREQ_V.dat" => Expect::Status(100),
        // Valid, but its To carries a tag: a request inside a dialog we do not have.
        "TC_WSINV.dat" => Expect::Status(481),
        "TC_INTMETH.dat" | "TC_ESC02_V.dat" => Expect::Status(501),
        // Responses to nothing we sent, and the broadcast Via, are dropped.
        "TC_BCAST_V.dat" | "TC_NOREASON_V.dat" | "TC_UNREASON_V.dat" | "TC_BIGCODE_V.dat"
        | "TC_SCALARLG_V.dat" => Expect::Nothing,
        "TC_BADVERS_V.dat" => Expect::Status(505),
        _ if verdict == "reject" => Expect::Status(400),
        _ => Expect::Status(200),
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    Status(u16),
    Nothing,
}

fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let csv = std::fs::read_to_string(vectors().join("verdicts.csv")).unwrap();
    csv.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            let bytes = std::fs::read(vectors().join(f[0])).unwrap();
            (f[0].to_string(), f[2].to_string(), bytes)
        })
        .collect()
}

#[test]
fn torture_over_udp() {
    assert!(
        loopback_only(),
        "run inside `unshare -n` (tests/run.sh): these messages name foreign hosts"
    );
    let _server = start_server(5080, "41000-41200", "udp");
    // Responses without rport go to the Via's port, 5060 by default: listen there.
    let sock = UdpSocket::bind("127.0.0.1:5060").expect("bind 5060 inside the namespace");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut failures = Vec::new();
    for (file, verdict, bytes) in corpus() {
        sock.send_to(&bytes, "127.0.0.1:5080").unwrap();
        let call_id = call_id_of(&bytes);
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_millis(400);
        let mut got = Expect::Nothing;
        // Late answers to earlier messages (a 480 after a ring timeout) are skipped by Call-ID.
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if call_id.is_some() && call_id_of(&buf[..n]) != call_id {
                continue;
            }
            got = status_of(&buf[..n])
                .map(Expect::Status)
                .unwrap_or(Expect::Nothing);
            break;
        }
        let want = expected(&file, &verdict);
        if got != want {
            failures.push(format!("{file} ({verdict}): want {want:?}, got {got:?}"));
        }
    }
    // After all of it the server still answers.
    sock.send_to(&options("after-torture"), "127.0.0.1:5080")
        .unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut alive = false;
    while Instant::now() < deadline && !alive {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            alive = call_id_of(&buf[..n]).as_deref() == Some("after-torture")
                && status_of(&buf[..n]) == Some(200);
        }
    }
    assert!(alive, "server still answers after the torture run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn torture_over_tcp() {
    assert!(
        loopback_only(),
        "run inside `unshare -n` (tests/run.sh): these messages name foreign hosts"
    );
    let _server = start_server(5081, "41200-41400", "tcp");
    torture_over_stream(|| {
        let conn = TcpStream::connect("127.0.0.1:5081").unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        conn
    });
}

/// The same corpus over TLS (RFC 3261 §26.2), after a client that never finishes its
/// handshake and one that sends plain SIP to the TLS port: both cost their connection only.
#[test]
fn torture_over_tls() {
    assert!(
        loopback_only(),
        "run inside `unshare -n` (tests/run.sh): these messages name foreign hosts"
    );
    let dir = std::env::temp_dir().join(format!("screenpop-4475-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = common::tls::make_cert(&dir, "server");
    let profile = format!(
        "{PROFILE}[tls]\nport = 5084\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    );
    let server = TestServer::start("4475-tls", 5083, "41400-41600", &profile);
    let stalled = TcpStream::connect("127.0.0.1:5084").unwrap();
    let mut plain = TcpStream::connect("127.0.0.1:5084").unwrap();
    plain.write_all(&options("plain-to-tls")).unwrap();
    let cfg = common::tls::client_config(&cert.cert);
    torture_over_stream(|| {
        let s = common::tls::connect(5084, &cfg).unwrap_or_else(|e| {
            panic!("tls handshake: {e}\n{}", server.log());
        });
        s.sock
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    });
    assert!(
        server.wait_log("tls handshake failed", Duration::from_secs(2)),
        "the plain client is refused at the handshake:\n{}",
        server.log()
    );
    drop(stalled);
    std::fs::remove_dir_all(&dir).ok();
}

/// Sends each message of the corpus on a fresh connection from `connect` and checks the
/// answer; then the server must still answer an OPTIONS.
fn torture_over_stream<S: Read + Write>(connect: impl Fn() -> S) {
    let mut failures = Vec::new();
    for (file, verdict, bytes) in corpus() {
        let mut conn = connect();
        conn.write_all(&bytes).unwrap();
        let mut buf = [0u8; 8192];
        let got = match conn.read(&mut buf) {
            Ok(n) if n > 0 => status_of(&buf[..n])
                .map(Expect::Status)
                .unwrap_or(Expect::Nothing),
            _ => Expect::Nothing,
        };
        let mut want = expected(&file, &verdict);
        // Over a stream, Content-Length frames the message (RFC 3261 §18.3): without it the
        // message is refused; with one larger than what was sent, or without the blank line
        // ending the headers, the element waits for more bytes and does not answer.
        if !contains_content_length(&bytes) {
            want = Expect::Status(400);
        } else if matches!(file.as_str(), "TC_CLERR_I.dat" | "TC_BADDN_I.dat") {
            want = Expect::Nothing;
        }
        if got != want {
            failures.push(format!("{file} ({verdict}): want {want:?}, got {got:?}"));
        }
    }
    let mut conn = connect();
    conn.write_all(&options("after-stream")).unwrap();
    let mut buf = [0u8; 2048];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(status_of(&buf[..n]), Some(200));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn contains_content_length(bytes: &[u8]) -> bool {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    head.lines()
        .any(|l| l.starts_with("content-length") || l.starts_with("l:") || l.starts_with("l :"))
}

fn call_id_of(msg: &[u8]) -> Option<String> {
    let head_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    let head = String::from_utf8_lossy(&msg[..head_end]).into_owned();
    head.split("\r\n").find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim().to_string())
    })
}
