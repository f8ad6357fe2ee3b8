//! Trust, trunk digest authentication and outbound registration against running servers,
//! with `screenpop dial` and a second screenpop as the peers.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::raw::{dial, dial_full, invite, options, status_of, TestServer};

const DIGEST_TRUNK: &str = r#"
name = "digest"
ring_timeout_secs = 1
[trust]
cidrs = []
[[trunks]]
name = "fs"
digest = { username = "fs", password = "trunkpw" }
agent = "sip:agent@127.0.0.1:5999"
[[users]]
username = "1001"
password = "pw1001"
"#;

#[test]
fn untrusted_peer_gets_403_but_options_and_register_work() {
    let s = TestServer::start(
        "untrusted",
        5180,
        "42000-42100",
        "name = \"x\"\n[trust]\ncidrs = []\n",
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&options("opt-untrusted", 0), ("127.0.0.1", s.port))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(status_of(&buf[..n]), Some(200));
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains("Allow: INVITE"), "{text}");
    // An INVITE from a peer no profile trusts (and no digest trunk to try) is refused.
    let (ok, summary) = dial(&[
        "--to",
        &format!("sip:1@127.0.0.1:{}", s.port),
        "--hangup-after",
        "1s",
    ]);
    assert!(!ok);
    assert!(summary.contains("\"final_status\":403"), "{summary}");
}

/// Dials `to` answering challenges as `user`/`password`; returns the JSON summary.
fn dial_as(to: &str, user: &str, password: &str) -> String {
    let (ok, summary) = dial(&[
        "--to",
        to,
        "--hangup-after",
        "1s",
        "--username",
        user,
        "--password",
        password,
    ]);
    assert!(!ok, "no agent answers in these tests: {summary}");
    summary
}

#[test]
fn digest_trunk_is_challenged_with_407() {
    let s = TestServer::start("digest", 5181, "42100-42200", DIGEST_TRUNK);
    let to = format!("sip:100@127.0.0.1:{}", s.port);
    // Right credentials: accepted, then 480 because the agent never answers.
    let summary = dial_as(&to, "fs", "trunkpw");
    assert!(summary.contains("\"final_status\":480"), "{summary}");
    // Wrong password: challenged again and refused.
    let summary = dial_as(&to, "fs", "nope");
    assert!(summary.contains("\"final_status\":407"), "{summary}");
    // Unknown user gets exactly the same.
    assert_eq!(summary, dial_as(&to, "who", "nope"));
}

/// The 407 offers every digest trunk's algorithms, but each trunk may answer only with its own
/// `digest_algorithms`; `screenpop dial` answers the strongest offered (SHA-256).
#[test]
fn a_trunk_authenticates_only_with_its_own_algorithms() {
    let profile = r#"
name = "digest-algorithms"
ring_timeout_secs = 1
[trust]
cidrs = []
[[trunks]]
name = "modern"
digest = { username = "modern", password = "pw-modern" }
digest_algorithms = ["SHA-256"]
agent = "sip:agent@127.0.0.1:5999"
[[trunks]]
name = "legacy"
digest = { username = "legacy", password = "pw-legacy" }
agent = "sip:agent@127.0.0.1:5999"
"#;
    let s = TestServer::start("digest-algorithms", 5188, "42800-42900", profile);
    let to = format!("sip:100@127.0.0.1:{}", s.port);
    let summary = dial_as(&to, "modern", "pw-modern");
    assert!(summary.contains("\"final_status\":480"), "{summary}");
    // The right password, hashed with SHA-256, which the MD5-only trunk may not use.
    let summary = dial_as(&to, "legacy", "pw-legacy");
    assert!(summary.contains("\"final_status\":407"), "{summary}");
    assert!(
        s.wait_log(
            "trunk answered with an algorithm it may not use",
            Duration::from_secs(2)
        ),
        "{}",
        s.log()
    );
}

/// Keep-alives from a phone behind NAT (RFC 5626 §3.5.1): over TCP a double-CRLF ping gets a
/// CRLF pong, a single CRLF gets nothing, and the connection still carries SIP afterwards; over
/// UDP a CRLF datagram is ignored and OPTIONS is answered.
#[test]
fn keep_alives_are_answered() {
    use std::io::{Read, Write};
    let s = TestServer::start("keepalive", 5189, "42900-43000", "name = \"k\"\n");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    // Half a ping, then the rest: one pong.
    tcp.write_all(b"\r\n").unwrap();
    tcp.write_all(b"\r\n").unwrap();
    let n = tcp.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\r\n", "pong");
    // A lone CRLF before a request is skipped, and the request answered.
    tcp.write_all(b"\r\n").unwrap();
    let req = String::from_utf8(options("ka-tcp", 0))
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(req.as_bytes()).unwrap();
    let n = tcp.read(&mut buf).unwrap();
    assert_eq!(
        status_of(&buf[..n]),
        Some(200),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(b"\r\n\r\n", ("127.0.0.1", s.port)).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a UDP CRLF gets no answer"
    );
    sock.send_to(&options("ka-udp", 0), ("127.0.0.1", s.port))
        .unwrap();
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(status_of(&buf[..n]), Some(200));
}

#[test]
fn registration_client_registers_through_a_challenge() {
    let registrar = TestServer::start("registrar", 5182, "42200-42300", DIGEST_TRUNK);
    let client_profile = format!(
        "name = \"client\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n[[registrations]]\nregistrar = \"sip:127.0.0.1:{}\"\nuser = \"1001\"\npassword = \"pw1001\"\nexpires = 60\n",
        registrar.port
    );
    let client = TestServer::start("registrant", 5183, "42300-42400", &client_profile);
    assert!(
        client.wait_log("registered", Duration::from_secs(5)),
        "client log:\n{}\nregistrar log:\n{}",
        client.log(),
        registrar.log()
    );
    let log = registrar.log();
    assert!(log.contains("status=401"), "challenged first:\n{log}");
    assert!(log.contains("status=200"), "then accepted:\n{log}");
    // A wrong password never registers and backs off.
    let bad = TestServer::start(
        "registrant-bad",
        5184,
        "42400-42500",
        &client_profile.replace("pw1001", "wrong"),
    );
    assert!(
        bad.wait_log("registration failed", Duration::from_secs(5)),
        "{}",
        bad.log()
    );
    assert!(!bad.log().contains("registered expires"));
}

#[test]
fn rtp_port_pool_exhaustion_gives_503_and_ports_come_back() {
    // The agent never answers: each call rings it until the ring timeout, then gets 480.
    let agent = UdpSocket::bind("127.0.0.1:5998").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let profile = "name = \"ports\"\nring_timeout_secs = 2\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
                   [[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\nagent = \"sip:agent@127.0.0.1:5998\"\n";
    // Two RTP/RTCP pairs: exactly one call (two legs).
    let s = TestServer::start("ports", 5185, "42500-42504", profile);
    let to = format!("sip:100@127.0.0.1:{}", s.port);
    let first = {
        let to = to.clone();
        std::thread::spawn(move || dial(&["--to", &to, "--hangup-after", "1s"]))
    };
    // Both legs' ports are taken before the agent is rung: once its INVITE arrives, the pool
    // is empty.
    let agent_invite = |what: &str| {
        let mut buf = [0u8; 4096];
        let (n, _) = agent
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: no agent INVITE ({e}):\n{}", s.log()));
        assert!(buf[..n].starts_with(b"INVITE "), "{what}");
    };
    agent_invite("first call");
    let (_, busy) = dial(&["--to", &to, "--hangup-after", "1s"]);
    assert!(busy.contains("\"final_status\":503"), "{busy}");
    let (_, first) = first.join().unwrap();
    assert!(first.contains("\"final_status\":480"), "{first}");
    // The first call's ports were returned when it ended (its task logs the end only after
    // the media engine has released them).
    assert!(
        s.wait_log("call ended", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let (_, again) = dial(&["--to", &to, "--hangup-after", "1s"]);
    assert!(
        again.contains("\"final_status\":480"),
        "{again}\n{}",
        s.log()
    );
}

/// An offer with no codec screenpop speaks (G.729 only) gets 488 with an Accept header.
#[test]
fn no_common_codec_gives_488() {
    let profile = "name = \"codec\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
                   [[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\nagent = \"sip:agent@127.0.0.1:5997\"\n";
    let s = TestServer::start("codec", 5186, "42600-42700", profile);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap();
    let invite = invite(me, s.port, "g729-only", 70, "18\r\na=rtpmap:18 G729/8000");
    sock.send_to(&invite, ("127.0.0.1", s.port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status_of(&buf[..n]), Some(488), "{text}");
    assert!(text.contains("Accept: application/sdp"), "{text}");
}

/// An agent target given by host name is resolved (here `localhost`), and an INVITE that has
/// run out of hops (Max-Forwards: 0) is not forwarded to the agent: 483.
#[test]
fn agent_host_name_is_resolved_and_max_forwards_zero_gets_483() {
    let agent = UdpSocket::bind("127.0.0.1:5996").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let profile = "name = \"dns\"\nring_timeout_secs = 1\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
                   [[trunks]]\nname = \"t\"\ncidrs = [\"127.0.0.0/8\"]\nagent = \"sip:agent@localhost:5996\"\n";
    let s = TestServer::start("dns", 5187, "42700-42800", profile);
    let to = format!("sip:100@127.0.0.1:{}", s.port);
    let caller = std::thread::spawn(move || dial_full(&["--to", &to, "--hangup-after", "1s"]));
    let mut buf = [0u8; 4096];
    let n = match agent.recv_from(&mut buf) {
        Ok((n, _)) => n,
        Err(e) => {
            let dialed = caller.join().unwrap_or_default();
            panic!(
                "the agent leg INVITE did not reach localhost ({e}); dial said {dialed:?}\n{}",
                s.log()
            );
        }
    };
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        text.starts_with("INVITE sip:agent@localhost:5996 SIP/2.0"),
        "{text}"
    );
    assert!(
        text.contains("Max-Forwards: 69"),
        "one hop less than the trunk's 70: {text}"
    );
    let (_, summary, _) = caller.join().unwrap();
    assert!(summary.contains("\"final_status\":480"), "{summary}");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap();
    let invite = invite(me, s.port, "mf0", 0, "0");
    sock.send_to(&invite, ("127.0.0.1", s.port)).unwrap();
    let mut last = None;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        last = status_of(&buf[..n]);
        if last.is_some_and(|s| s >= 200) {
            break;
        }
    }
    assert_eq!(last, Some(483));
    // Nothing was sent towards the agent for it.
    agent
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok((n, _)) = agent.recv_from(&mut buf) {
        let t = String::from_utf8_lossy(&buf[..n]);
        assert!(!t.contains("Max-Forwards: 0") && !t.contains("mf0"), "{t}");
    }
}

/// A `[tls]` section for a profile: listener on `port`, this certificate, and `ca` to check
/// the registrars and trunks screenpop itself connects to.
fn tls_section(port: u16, cert: &common::tls::TestCert, ca: Option<&std::path::Path>) -> String {
    let ca = ca
        .map(|p| format!("ca = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        "[tls]\nport = {port}\ncert = \"{}\"\nkey = \"{}\"\n{ca}",
        cert.cert.display(),
        cert.key.display()
    )
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("screenpop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SIGHUP swaps the TLS certificate (a renewal): the next handshake presents the new one, a
/// connection made before keeps working, and a broken renewal keeps the one in use.
#[test]
fn tls_certificate_reloads_on_sighup_without_dropping_connections() {
    use common::tls::{client_config, connect, exchange, make_cert, presented};
    let dir = temp_dir("tls-hup-certs");
    let old = make_cert(&dir, "old");
    let new = make_cert(&dir, "new");
    let live = make_cert(&dir, "live");
    let ca = dir.join("ca.pem");
    let both = [&old, &new]
        .iter()
        .map(|c| std::fs::read_to_string(&c.cert).unwrap())
        .collect::<String>();
    std::fs::write(&ca, both).unwrap();
    std::fs::copy(&old.cert, &live.cert).unwrap();
    std::fs::copy(&old.key, &live.key).unwrap();
    let profile = format!(
        "name = \"tls\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n{}",
        tls_section(5194, &live, None)
    );
    let s = TestServer::start("tls-hup", 5193, "43000-43100", &profile);
    let cfg = client_config(&ca);
    let mut before = connect(5194, &cfg).unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert_eq!(presented(&before), old.der);
    let r = exchange(&mut before, &options("tls-before", 0)).unwrap();
    assert_eq!(status_of(&r), Some(200), "{}", String::from_utf8_lossy(&r));

    std::fs::copy(&new.key, &live.key).unwrap();
    std::fs::copy(&new.cert, &live.cert).unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_log("tls certificate reloaded", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let after = connect(5194, &cfg).unwrap();
    assert_eq!(presented(&after), new.der, "the renewed certificate");
    let r = exchange(&mut before, &options("tls-still", 0)).unwrap();
    assert_eq!(
        status_of(&r),
        Some(200),
        "the old connection is still served"
    );

    std::fs::write(&live.key, "not a key").unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_log("tls certificate not reloaded", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let again = connect(5194, &cfg).unwrap();
    assert_eq!(
        presented(&again),
        new.der,
        "a broken renewal keeps the one in use"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Outbound registration over TLS (`transport=tls`) to a registrar whose certificate the
/// profile's `ca` vouches for; with another `ca` the handshake fails and nothing is sent.
#[test]
fn registration_over_tls_checks_the_registrars_certificate() {
    let dir = temp_dir("tls-reg-certs");
    let registrar_cert = common::tls::make_cert(&dir, "registrar");
    let client_cert = common::tls::make_cert(&dir, "client");
    let stranger = common::tls::make_cert(&dir, "stranger");
    let registrar = TestServer::start(
        "tls-registrar",
        5195,
        "43100-43200",
        &format!("{DIGEST_TRUNK}{}", tls_section(5196, &registrar_cert, None)),
    );
    let client_profile = |ca: &std::path::Path, tls_port: u16| {
        format!(
            "name = \"client\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n[[registrations]]\n\
             registrar = \"sip:127.0.0.1:5196;transport=tls\"\nuser = \"1001\"\n\
             password = \"pw1001\"\nexpires = 60\n{}",
            tls_section(tls_port, &client_cert, Some(ca))
        )
    };
    let client = TestServer::start(
        "tls-registrant",
        5197,
        "43200-43300",
        &client_profile(&registrar_cert.cert, 5198),
    );
    assert!(
        client.wait_log("registered", Duration::from_secs(5)),
        "client log:\n{}\nregistrar log:\n{}",
        client.log(),
        registrar.log()
    );
    let log = registrar.log();
    assert!(log.contains("status=200"), "accepted over TLS:\n{log}");
    drop(client);
    let fooled = TestServer::start(
        "tls-registrant-bad-ca",
        5199,
        "43300-43400",
        &client_profile(&stranger.cert, 5200),
    );
    assert!(
        fooled.wait_log("tls handshake failed", Duration::from_secs(5)),
        "{}",
        fooled.log()
    );
    assert!(!fooled.log().contains("registered expires"));
    std::fs::remove_dir_all(&dir).ok();
}
