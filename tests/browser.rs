//! Issue 8 in a real browser: the agent desktop and the supervisor console in headless Chromium
//! (`tests/browser/e2e.mjs`, playwright-core), with SIPp as the trunk and the agent's phone and
//! the real server. This file sets the center up, places the call when the script is ready, and
//! checks in the store what the pages did.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` run in `tests/browser`;
//! `SCREENPOP_REQUIRE_BROWSER=1` (set by `.ci/run`) makes a missing one fail instead of skip.
//! Screenshots of every page, at 1366×768 and 1920×1080, in English and Chinese, go to
//! `target/screenshots/` (or `SCREENPOP_SHOTS`).

mod common;

use common::{center, desk};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use center::center;
use common::Ports;
use serde_json::{json, Value};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

/// Whether node, Chromium and playwright-core are here; fails when they must be.
fn browser_or_skip() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!node).then_some("node"),
        (!Path::new(&chromium).exists()).then_some("chromium"),
        (!browser_dir().join("node_modules/playwright-core").exists())
            .then_some("playwright-core (npm ci in tests/browser)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("browser tests need: {}", missing.join(", "));
    if matches!(
        std::env::var("SCREENPOP_REQUIRE_BROWSER").as_deref(),
        Ok("1")
    ) {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// A browser script (`tests/browser/NAME.mjs`) and its line protocol: it prints steps on stdout
/// and reads answers on stdin; its stderr is echoed and kept for the failure message.
struct Script {
    node: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    log: Option<std::thread::JoinHandle<String>>,
}

impl Script {
    fn start(name: &str, config: &Value) -> Script {
        let mut node = Command::new("node")
            .arg(browser_dir().join(name))
            .current_dir(browser_dir())
            .env("E2E_CONFIG", config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node");
        let stdin = node.stdin.take().expect("stdin");
        let stdout = BufReader::new(node.stdout.take().expect("stdout"));
        let stderr = node.stderr.take().expect("stderr");
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[browser] {l}");
                s.push_str(&l);
                s.push('\n');
            }
            s
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in stdout.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Script {
            node,
            stdin,
            lines,
            log: Some(log),
        }
    }

    /// The next line the script prints (or its RESULT line if it gives up early).
    fn expect(&mut self, what: &str) -> String {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the browser script never said {what}"));
        if l.starts_with("RESULT ") && what != "RESULT" {
            let log = self.log.take().map(|h| h.join().unwrap_or_default());
            panic!(
                "the browser script stopped before {what}: {l}\n{}",
                log.unwrap_or_default()
            );
        }
        l
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("tell the script");
    }

    /// Waits for the RESULT line and the exit; panics with the script's log on failure.
    fn finish(mut self, server_log: &Path) -> Value {
        let result = loop {
            let l = self.expect("RESULT");
            if let Some(r) = l.strip_prefix("RESULT ") {
                break serde_json::from_str::<Value>(r).expect("result JSON");
            }
        };
        let status = self.node.wait().expect("node");
        let log = self.log.take().map(|h| h.join().unwrap_or_default());
        assert!(
            status.success() && result.get("error").is_none(),
            "browser script failed: {result}\n{}\nserver log: {}",
            log.unwrap_or_default(),
            server_log.display()
        );
        result
    }
}

fn shots_dir() -> PathBuf {
    std::env::var_os("SCREENPOP_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"))
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[test]
fn agent_desktop_and_supervisor_console_in_chromium() {
    if !browser_or_skip() {
        return;
    }
    let Some(c) = center("browser") else { return };
    let q = c.queue(
        json!({"name": "support", "is_default": true, "wrap_up_secs": 4,
                           "service_level_secs": 20}),
    );
    let phone_ports = Ports::allocate();
    let lina = c.agent("lina", &phone_ports, &[], &[q]);
    c.agent("wang", &Ports::allocate(), &[], &[q]);
    c.admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "sue", "password": "sue-password", "display_name": "Sue 苏",
                    "role": "supervisor"}),
        ),
    );
    // Two customers on the caller's number, stored in E.164; the caller presents it nationally.
    let vip = c.customer(
        json!({"name": "张伟", "company": "北京星辰科技", "tier": "vip",
                                "phones": [{"number": "+1 212-555-0123", "label": "mobile"}]}),
    );
    let other = c.customer(
        json!({"name": "Zhang Wei", "company": "Acme Trading", "tier": "key",
                                  "phones": [{"number": "(212) 555-0123", "label": "office"}]}),
    );
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "queue_id": q,
        "agent": {"username": "lina", "password": "lina-password", "id": lina.agent_id},
        "other": {"username": "wang", "password": "wang-password"},
        "supervisor": {"username": "sue", "password": "sue-password"},
        "candidates": [vip["name"], other["name"]],
    });
    let mut script = Script::start("e2e.mjs", &config);
    let line = script.expect("CALL");
    assert_eq!(line, "CALL", "{line}");
    let mut phone = c
        .env
        .agent_phone("lina-phone", phone_ports, "uas_reinvite_slow.xml", &[]);
    let invited = now_ms();
    let mut trunk = c
        .env
        .trunk_from("2125550123", "uac_call_from.xml", &["-d", "10000"]);
    script.say(&format!("GO {invited}"));
    let result = script.finish(&c.server.log);
    trunk.expect_success(Duration::from_secs(30));
    phone.expect_success(Duration::from_secs(30));
    eprintln!("browser e2e: {result}");

    // What the pages did is in the store.
    let calls = c.admin.ok("GET", "/api/calls?limit=5", None);
    let call = &calls["items"][0];
    assert_eq!(
        call["customer_id"], other["id"],
        "the picked candidate: {call}"
    );
    assert_eq!(call["notes"], "Asked about the invoice");
    assert_eq!(call["agent_disposition"], "follow_up");
    assert_eq!(call["agent_id"], lina.agent_id);
    assert_eq!(call["recording_id"], result["recording_id"]);
    let talk = call["talk_secs"].as_f64().expect("talk time");
    let played = result["audio_duration_s"].as_f64().expect("duration");
    assert!(
        (played - talk).abs() <= 1.5,
        "the player's duration {played} s matches the call's talk time {talk} s"
    );
    let wo = c.admin.ok(
        "GET",
        &format!("/api/work-orders/{}", result["work_order_id"]),
        None,
    );
    assert_eq!(wo["status"], "closed", "{wo}");
    assert_eq!(wo["customer_id"], other["id"]);
    assert_eq!(wo["priority"], 2);
    let audit = c.admin.ok("GET", "/api/audit?action=recording.", None);
    assert!(
        audit["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["actor"] == "sue"
                && e["action"] == "recording.play"
                && e["source"] == "127.0.0.1")),
        "{audit}"
    );
}

/// A desktop left open for a shift: it survives a server restart (reconnects by itself and the
/// agent is available again) and an ended session sends it to the login with a message.
#[test]
fn agent_page_survives_a_restart_and_an_expired_session() {
    if !browser_or_skip() {
        return;
    }
    let Some(mut c) = center("browser_resilience") else {
        return;
    };
    let lina = c.agent("lina", &Ports::allocate(), &[], &[]);
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "agent": {"username": "lina", "password": "lina-password", "id": lina.agent_id},
    });
    let mut script = Script::start("resilience.mjs", &config);
    assert_eq!(script.expect("RESTART"), "RESTART");
    c.server.kill9();
    // Back once the page has noticed.
    assert_eq!(script.expect("DOWN-SEEN"), "DOWN-SEEN");
    c.server = c.env.start_server();
    script.say("GO");
    assert_eq!(script.expect("CHECK-AVAILABLE"), "CHECK-AVAILABLE");
    // The restarted server learned from the page itself that the agent is available.
    let admin = desk::Api::login(&c.env.http_base(), "admin", center::ADMIN_PASSWORD);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agents = admin.ok("GET", "/api/stats/agents", None);
        let state = agents["items"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["agent_id"] == lina.agent_id))
            .map(|a| a["state"].clone());
        if state == Some(json!("available")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent not available after the restart: {agents}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    script.say("AVAILABLE");
    let result = script.finish(&c.server.log);
    eprintln!("browser resilience: {result}");
}

/// Click-to-dial from the agent desktop (`tests/browser/dial.mjs`): the Call button beside a
/// customer's number rings the agent's phone (SIPp), the gateway (SIPp, digest) is called and
/// hangs up after 5 s; the card goes Calling → On call (Outbound) → Call ended, and the store
/// has an outbound contact log on the customer.
#[test]
fn click_to_dial_from_the_agent_desktop_in_chromium() {
    if !browser_or_skip() {
        return;
    }
    let gw = Ports::allocate();
    let outbound = format!(
        "[outbound]\nuri = \"sip:{{number}}@127.0.0.1:{}\"\nusername = \"acct\"\npassword = \"gwpass\"\ncaller_id = \"+12015550100\"",
        gw.agent_sip()
    );
    let Some(c) = center::center_with("browser_dial", &outbound) else {
        return;
    };
    let q = c.queue(json!({"name": "support", "is_default": true}));
    let phone_ports = Ports::allocate();
    let ada = c.agent("ada", &phone_ports, &[], &[q]);
    let cust = c.customer(json!({"name": "Grace Hopper", "phones": [{"number": "201-555-0123"}]}));
    let mut phone = c
        .env
        .agent_phone("ada-phone", phone_ports, "uas_answer.xml", &[]);
    let mut gateway = c
        .env
        .agent_phone("gateway", gw, "uas_gateway_auth.xml", &["-d", "5000"]);
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "agent": {"username": "ada", "password": "ada-password"},
        "customer": "Grace Hopper",
        "number": "+12015550123",
    });
    let script = Script::start("dial.mjs", &config);
    script.finish(&c.server.log);
    gateway.expect_success(Duration::from_secs(30));
    phone.expect_success(Duration::from_secs(30));
    let calls = c.admin.ok("GET", "/api/calls?limit=5", None);
    let call = &calls["items"][0];
    assert_eq!(call["direction"], "outbound", "{call}");
    assert_eq!(call["customer_id"], cust["id"], "{call}");
    assert_eq!(call["agent_id"], ada.agent_id, "{call}");
    assert_eq!(call["disposition"], "answered", "{call}");
}

/// Attended transfer from the desktops: Alice presses "Consult first" with Bob picked, both
/// cards follow the consultation, "Complete transfer" hands the caller to Bob (SIPp phones and
/// trunk check the BYEs), and Bob hangs up from his card.
#[test]
fn attended_transfer_from_two_agent_desktops_in_chromium() {
    if !browser_or_skip() {
        return;
    }
    let Some(c) = center("browser_consult") else {
        return;
    };
    let q =
        c.queue(json!({"name": "support", "is_default": true, "dialed_numbers": [common::DIALED]}));
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &pb, &[], &[q]);
    c.customer(json!({"name": "Marie Curie", "phones": [{"number": common::CALLER_NUMBER}]}));
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "alice": {"username": "alice", "password": "alice-password"},
        "bob": {"username": "bob", "password": "bob-password"},
        "customer": "Marie Curie",
    });
    let mut script = Script::start("consult.mjs", &config);
    let line = script.expect("CALL");
    assert_eq!(line, "CALL", "{line}");
    let mut a_phone = c.env.agent_phone("alice-phone", pa, "uas_answer.xml", &[]);
    let mut b_phone = c.env.agent_phone("bob-phone", pb, "uas_answer.xml", &[]);
    let mut trunk = c.env.trunk("uac_agent_bye.xml", &[]);
    script.say("GO");
    script.finish(&c.server.log);
    trunk.expect_success(Duration::from_secs(30));
    a_phone.expect_success(Duration::from_secs(30));
    b_phone.expect_success(Duration::from_secs(30));
    let calls = c.admin.ok("GET", "/api/calls?limit=5", None);
    let call = &calls["items"][0];
    assert_eq!(call["agent_id"], bob.agent_id, "{call}");
    let log = c
        .admin
        .ok("GET", &format!("/api/calls/{}", call["id"]), None);
    let agents: Vec<i64> = log["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["agent_id"].as_i64())
        .collect();
    assert_eq!(agents, [alice.agent_id, bob.agent_id], "{log}");
}

/// The campaigns page (`tests/browser/campaigns.mjs`): a supervisor writes a broadcast (the
/// mistyped field refused by name), previews it, runs it and sees it finish live, reads the
/// results, and writes a voice campaign by uploading its WAV. The SIPp gateway takes the two
/// texts; the store has the campaigns the page made, the upload kept where the spec says.
#[test]
fn campaigns_page_in_chromium() {
    if !browser_or_skip() {
        return;
    }
    let gw = Ports::allocate();
    let outbound = format!(
        "[outbound]\nuri = \"sip:{{number}}@127.0.0.1:{}\"\nusername = \"acct\"\npassword = \"gwpass\"\n\
         caller_id = \"+12015550100\"\nallow = [\"+1*\"]",
        gw.agent_sip()
    );
    let Some(c) = center::center_with("browser_campaigns", &outbound) else {
        return;
    };
    c.admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "sue", "password": "sue-password", "display_name": "Sue 苏",
                    "role": "supervisor"}),
        ),
    );
    let visitors = ["Ada Lovelace", "Grace Hopper"];
    for (i, name) in visitors.iter().enumerate() {
        c.customer(json!({"name": name, "tags": ["fair"],
            "phones": [{"number": format!("+1 201 555 07{i:02}")}]}));
    }
    c.customer(
        json!({"name": "Alan Turing", "tags": ["fair"], "opt_out_sms": true,
        "phones": [{"number": "+1 201 555 0799"}]}),
    );
    let wav = c.env.dir.join("greeting.wav");
    common::greeting::write_wav(&wav, 16_000, &common::greeting::tones(16_000, 0.25));
    let not_wav = c.env.dir.join("minutes.wav");
    std::fs::write(&not_wav, "minutes of the meeting").expect("file");
    let mut gateway = c.env.agent_phone(
        "gateway",
        gw,
        "uas_sms_gateway.xml",
        &["-m", "2", "-timeout", "120s"],
    );
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "supervisor": {"username": "sue", "password": "sue-password"},
        "zone": "Asia/Shanghai",
        "wav": wav,
        "not_wav": not_wav,
        "visitors": visitors,
        "opted_out": "Alan Turing",
    });
    let script = Script::start("campaigns.mjs", &config);
    let result = script.finish(&c.server.log);
    eprintln!("campaigns page: {result}");
    gateway.expect_success(Duration::from_secs(30));
    // The gateway took each visitor's text once (after its challenge).
    let mut bodies: Vec<String> = gateway
        .messages()
        .into_iter()
        .filter(|m| {
            !m.sent && m.first_line.starts_with("MESSAGE ") && m.text.contains("Authorization:")
        })
        .filter_map(|m| m.text.split_once("\n\n").map(|(_, b)| b.trim().to_string()))
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies,
        vec![
            "Ada Lovelace: see you at the fair, booth 12.".to_string(),
            "Grace Hopper: see you at the fair, booth 12.".to_string()
        ]
    );
    let list = c.admin.ok("GET", "/api/campaigns", None);
    let find = |name: &str| {
        list["items"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {list}"))
    };
    let fair = find("Fair invitation");
    assert_eq!(fair["state"], "done", "{fair}");
    assert_eq!(fair["created_by"], "sue", "{fair}");
    assert_eq!(fair["spec"]["schedule"]["at"], "2099-01-01T09:00", "{fair}");
    assert_eq!(fair["progress"]["sent"], 2, "{fair}");
    let voice = find("Birthday call");
    assert_eq!(voice["state"], "draft", "{voice}");
    assert_eq!(voice["spec"]["ring_secs"], 25, "{voice}");
    let audio = voice["spec"]["audio"].as_str().expect("audio");
    assert!(audio.starts_with("campaign-audio/"), "{audio}");
    let kept = c.env.dir.join(audio);
    assert_eq!(
        std::fs::read(&kept).expect("the upload kept"),
        std::fs::read(&wav).expect("wav"),
        "kept as uploaded"
    );
}

/// The post-call survey on the pages (`tests/browser/survey.mjs`): the queue's survey settings
/// in the admin's dialog (a bad wait refused by name), the agent's card while the caller rates
/// the call and with the score, the wallboard's satisfaction per queue and agent, the score in
/// the recordings, in English and Chinese. SIPp's caller presses 4 after the agent's phone
/// (SIPp) hangs up first; the store has the score.
#[test]
fn post_call_survey_in_chromium() {
    if !browser_or_skip() {
        return;
    }
    let Some(c) = center("browser_survey") else {
        return;
    };
    let prompt = c.env.dir.join("survey-prompt.wav");
    let thanks = c.env.dir.join("survey-thanks.wav");
    common::softphone::write_tone_wav(&prompt, 800.0, 1.0);
    common::softphone::write_tone_wav(&thanks, 1200.0, 0.5);
    let q = c.queue(json!({
        "name": "care", "dialed_numbers": [common::DIALED], "is_default": true,
        "survey_prompt": prompt.display().to_string(),
        "survey_thanks": thanks.display().to_string(), "survey_timeout_secs": 4,
    }));
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let config = json!({
        "base": c.env.http_base(),
        "shots": shots_dir(),
        "queue": "care",
        "queue_id": q,
        "agent": {"username": "alice", "password": "alice-password", "id": alice.agent_id},
        "admin": {"username": "admin", "password": center::ADMIN_PASSWORD},
    });
    let mut script = Script::start("survey.mjs", &config);
    let line = script.expect("CALL");
    assert_eq!(line, "CALL", "{line}");
    let mut phone = c
        .env
        .agent_phone("alice-phone", pa, "uas_bye.xml", &["-d", "1500"]);
    let mut trunk = c.env.trunk("uac_survey.xml", &[]);
    script.say("GO");
    script.finish(&c.server.log);
    trunk.expect_success(Duration::from_secs(30));
    phone.expect_success(Duration::from_secs(30));
    let calls = c.admin.ok("GET", "/api/calls?limit=5", None);
    let call = &calls["items"][0];
    assert_eq!(call["survey_score"], 4, "{call}");
    let queue = c.admin.ok("GET", "/api/queues", None)["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == q).cloned())
        .expect("the queue");
    assert_eq!(queue["survey_timeout_secs"], 4, "saved back as 4: {queue}");
}
