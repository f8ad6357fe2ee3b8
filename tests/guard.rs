//! Password guessing (issue 13, point 1), against a running server inside the loopback-only
//! namespace, with 127.0.0.2 and the like as attackers and 127.0.0.3 as the real phone. The
//! dictionary is scripted here: a REGISTER, the 401's challenge answered with the next word.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::desk::{call, Api};
use common::raw::status_of;
use serde_json::json;

const PASSWORD: &str = "s3cret-251";

/// Only 127.0.0.1 is trusted (it plays the PBX); phones register from elsewhere on loopback.
fn profile() -> String {
    format!(
        r#"name = "guarded"
realm = "screenpop"
[trust]
cidrs = ["127.0.0.1/32"]
[guard]
max_failures = 10
window_secs = 60
ban_secs = 300
user_failures = 12
[[users]]
username = "1001"
password = "{PASSWORD}"
"#
    )
}

/// A phone (or a guesser) registering user 1001 from `ip`.
struct Registrant {
    sock: UdpSocket,
    server: SocketAddr,
    call_id: String,
    cseq: u32,
}

impl Registrant {
    fn new(ip: &str, server: SocketAddr) -> Registrant {
        let sock = UdpSocket::bind((ip, 0)).expect("bind a loopback address");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Registrant {
            sock,
            server,
            call_id: format!("guard-{ip}-{}", rand_tag()),
            cseq: 0,
        }
    }

    fn request(&mut self, authorization: Option<&str>) -> Option<(u16, String)> {
        self.cseq += 1;
        let me = self.sock.local_addr().expect("local");
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{server}>;tag={t}\r\nTo: <sip:1001@{server}>\r\n\
             Call-ID: {id}\r\nCSeq: {n} REGISTER\r\nContact: <sip:1001@{me}>\r\nExpires: 60\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            server = self.server,
            b = rand_tag(),
            t = rand_tag(),
            id = self.call_id,
            n = self.cseq,
        );
        self.sock
            .send_to(msg.as_bytes(), self.server)
            .expect("send");
        let mut buf = [0u8; 4096];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        let status = status_of(&buf[..n])?;
        Some((status, String::from_utf8_lossy(&buf[..n]).into_owned()))
    }

    /// One try with `password`: the status of the answered REGISTER, or `None` when a request
    /// went unanswered (dropped).
    fn register(&mut self, password: &str) -> Option<u16> {
        let (status, text) = self.request(None)?;
        if status != 401 {
            return Some(status);
        }
        let challenge = common::parse_challenges(&text)
            .into_iter()
            .next()
            .expect("a challenge");
        let uri = format!("sip:{}", self.server);
        let authorization = common::digest_authorization(
            &challenge, "1001", password, "REGISTER", &uri, "0a4f113b",
        );
        self.request(Some(&authorization)).map(|(s, _)| s)
    }
}

fn rand_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A dictionary attack on 1001's password from 127.0.0.2 is cut off after 10 wrong guesses
/// (dropped unanswered from then on, so it never reaches the right word at 251), logged once
/// for fail2ban, counted in /metrics and listed by the API; the real phone from 127.0.0.3
/// keeps registering; the admin lifts the block. Guessers spread over many addresses put the
/// user under attack: a new address is dropped even with the right password, the phone that
/// registered before is not. The trusted PBX address is never blocked. `POST /api/login`
/// blocks the same way.
#[test]
fn password_guessing_is_cut_off_and_the_real_phone_keeps_registering() {
    let env = common::Env::new("guard");
    std::fs::write(&env.profile, profile()).expect("profile");
    env.admin_create("admin", "admin-pass-1");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", "admin-pass-1");
    let sip = env.server_addr();

    // The real phone registers before the attack.
    let mut phone = Registrant::new("127.0.0.3", sip);
    assert_eq!(phone.register(PASSWORD), Some(200));

    let mut words: Vec<String> = (0..300).map(|i| format!("guess-{i:03}")).collect();
    words[250] = PASSWORD.to_string();
    let mut guesser = Registrant::new("127.0.0.2", sip);
    let (mut refused, mut silent) = (0, 0);
    for w in &words {
        match guesser.register(w) {
            Some(200) => panic!("the guesser found the password after {refused} refusals"),
            Some(401) => refused += 1,
            Some(other) => panic!("unexpected {other}"),
            None => {
                silent += 1;
                if silent == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 10, "ten wrong guesses are answered, then nothing");
    assert_eq!(
        guesser.register(PASSWORD),
        None,
        "blocked: even the right word is dropped"
    );
    let log = server.log_text();
    assert_eq!(
        log.matches("screenpop-block ip=127.0.0.2 scope=sip ban_secs=300 offence=1 user=1001")
            .count(),
        1,
        "one line per block:\n{log}"
    );
    // The phone goes on registering meanwhile.
    assert_eq!(phone.register(PASSWORD), Some(200));

    let metrics = call("GET", &format!("{}/metrics", env.http_base()), None, None).1;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("screenpop_blocks_total{scope=\"sip\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("screenpop_auth_failures_total{scope=\"sip\"} 10"),
        "{metrics}"
    );
    let blocks = admin.ok("GET", "/api/blocks", None);
    let items = blocks["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{blocks}");
    assert_eq!(
        (
            items[0]["scope"].as_str(),
            items[0]["address"].as_str(),
            items[0]["offence"].as_u64()
        ),
        (Some("sip"), Some("127.0.0.2"), Some(1)),
        "{blocks}"
    );
    let left = items[0]["remaining_secs"].as_u64().unwrap_or(0);
    assert!((290..=300).contains(&left), "{blocks}");
    // Bad input names the field; a source that is not blocked is 404.
    let (st, e) = admin.req("DELETE", "/api/blocks/sip/not-an-ip", None);
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("address")),
        "{e}"
    );
    let (st, e) = admin.req("DELETE", "/api/blocks/ftp/127.0.0.2", None);
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("scope")),
        "{e}"
    );
    let (st, _) = admin.req("DELETE", "/api/blocks/sip/127.0.0.9", None);
    assert_eq!(st, 404);
    let (st, body) = admin.req("DELETE", "/api/blocks/sip/127.0.0.2", None);
    assert_eq!(st, 204, "{body}");
    assert_eq!(guesser.register("guess-again"), Some(401), "answered again");
    let audit = admin.ok("GET", "/api/audit?action=block.", None);
    assert!(
        audit["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["action"] == "block.lift" && e["subject"] == "address:127.0.0.2")),
        "{audit}"
    );

    // 127.0.0.2's eleven failures are still in the window: one more address failing makes 12
    // from two addresses, and 1001 is under attack. Every other address that never
    // registered as 1001 is dropped for it (none of them is blocked: one guess each).
    let answered: Vec<Option<u16>> = (10..22)
        .map(|i| Registrant::new(&format!("127.0.0.{i}"), sip).register("wrong"))
        .collect();
    assert_eq!(answered[0], Some(401));
    assert!(answered[1..].iter().all(Option::is_none), "{answered:?}");
    let mut newcomer = Registrant::new("127.0.0.40", sip);
    assert_eq!(
        newcomer.register(PASSWORD),
        None,
        "a new address waits out the attack"
    );
    assert_eq!(
        phone.register(PASSWORD),
        Some(200),
        "the known phone does not"
    );

    // Credentials whose nonce we never gave that address (a spoofed packet, a phone holding a
    // nonce from before a restart) say nothing about a password: never counted, so nobody can
    // get an address blocked by sending garbage in its name.
    let mut spoofer = Registrant::new("127.0.0.5", sip);
    let forged = format!(
        "Digest username=\"1002\", realm=\"screenpop\", nonce=\"00112233\", uri=\"sip:{sip}\", \
         response=\"00000000000000000000000000000000\", algorithm=MD5, qop=auth, nc=00000001, \
         cnonce=\"x\""
    );
    for _ in 0..15 {
        assert_eq!(spoofer.request(Some(&forged)).map(|r| r.0), Some(401));
    }

    // The PBX's address is trusted: never counted, never blocked.
    let mut pbx = Registrant::new("127.0.0.1", sip);
    for _ in 0..15 {
        assert_eq!(pbx.register("wrong"), Some(401));
    }
    assert!(admin.ok("GET", "/api/blocks", None)["items"]
        .as_array()
        .is_some_and(|a| a.is_empty()));

    // The login page's API: ten wrong passwords, then 429 for the ban, listed and liftable.
    let login = |password: &str| {
        call(
            "POST",
            &format!("{}/api/login", env.http_base()),
            None,
            Some(&json!({"username": "admin", "password": password})),
        )
    };
    for _ in 0..10 {
        assert_eq!(login("nope").0, 401);
    }
    let (st, body) = login("admin-pass-1");
    assert_eq!(st, 429, "blocked even with the right password: {body}");
    let blocks = admin.ok("GET", "/api/blocks", None);
    assert!(
        blocks["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|b| b["scope"] == "http" && b["address"] == "127.0.0.1")),
        "{blocks}"
    );
    assert!(server
        .log_text()
        .contains("screenpop-block ip=127.0.0.1 scope=http ban_secs=300 offence=1 user=admin"));
    let (st, _) = admin.req("DELETE", "/api/blocks/http/127.0.0.1", None);
    assert_eq!(st, 204);
    assert_eq!(login("admin-pass-1").0, 200, "lifted");
}
