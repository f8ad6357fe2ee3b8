//! Shutdown and restart (issue 13, point 5), against a running server inside the loopback-only
//! namespace: SIGTERM mid-call refuses new calls with 503 and Retry-After, lets the call go on
//! for the drain time, then hangs it up with BYE both ways, writes its recording and contact
//! log and exits 0 once each BYE is answered; a second SIGTERM hurries it; systemd hears READY=1 and STOPPING=1, and the
//! unit in deploy/ passes `systemd-analyze verify`.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::desk::{call, Api};
use common::raw::{invite, status_of};
use common::{check_call_recording, CallExpect, Env, Sipp};

const T: Duration = Duration::from_secs(20);

/// A server with `drain_secs`, an admin, a webhook for `call.ended` whose receiver is down,
/// an answering agent and a trunk call that waits for the server's BYE; returns once the call
/// is answered (its recording has begun).
fn call_in_progress(name: &str, drain_secs: u64) -> Option<(Env, common::Server, Sipp, Sipp)> {
    let env = Env::with_sipp(name)?;
    env.write_profile_with(&format!("drain_secs = {drain_secs}"));
    env.admin_create("admin", "admin-pass-1");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", "admin-pass-1");
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", down.local_addr().expect("addr"));
    drop(down);
    let (status, hook) = admin.req(
        "POST",
        "/api/webhooks",
        Some(&serde_json::json!({"url": url, "events": ["call.ended"], "secret": "shutdown-secret-0123456789"})),
    );
    assert_eq!(status, 201, "{hook}");
    let agent = env.agent("uas_answer.xml", &[]);
    let trunk = env.trunk("uac_agent_bye.xml", &[]);
    let answered = common::poll(T, || {
        env.recording_files()
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".wav.part"))
            .then_some(())
    });
    assert!(answered.is_some(), "the call was never answered");
    // Some audio both ways before the signal.
    std::thread::sleep(Duration::from_millis(800));
    Some((env, server, agent, trunk))
}

/// After the exit: the one recording is whole and checked by content, and a restarted server
/// finds the contact log finished (nothing for it to repair) and the call's `call.ended` kept
/// for the webhook (recorded before the exit, to be sent once its receiver is up).
fn nothing_lost(env: &Env, trunk: &Sipp) {
    let recs = env.wait_for_recordings(1, T);
    let talk = trunk.talk_time().expect("the trunk's talk time");
    let mut expect = CallExpect::new(talk, trunk.call_id.clone());
    expect.length_tolerance = 0.2;
    check_call_recording(env, &recs[0], &expect);
    let again = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", "admin-pass-1");
    let calls = admin.ok("GET", "/api/calls", None);
    let items = calls["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{calls}");
    assert_eq!(items[0]["disposition"], "answered", "{calls}");
    assert!(items[0]["ended_at"].is_i64(), "{calls}");
    assert!(items[0]["recording_id"].is_i64(), "{calls}");
    let hooks = admin.ok("GET", "/api/webhooks", None);
    let hook = hooks["items"][0]["id"].as_i64().expect("the webhook");
    let deliveries = admin.ok("GET", &format!("/api/webhooks/{hook}/deliveries"), None);
    let ended: Vec<&serde_json::Value> = deliveries["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["event_type"] == "call.ended")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        ended.len(),
        1,
        "the call's end for the webhook: {deliveries}"
    );
    assert_eq!(ended[0]["status"], "pending", "{deliveries}");
    let log = again.log_text();
    assert!(
        !log.contains("after a crash"),
        "the restart had something to finish:\n{log}"
    );
}

/// SIGTERM mid-call: a new call (and a load balancer's OPTIONS) gets 503 with Retry-After and
/// /healthz says draining; the call goes on until the 5 s drain is over, then both legs get a
/// BYE, the recording and contact log are written and screenpop exits 0.
const DRAIN: Duration = Duration::from_secs(5);

#[test]
fn sigterm_drains_then_hangs_up_and_exits_zero() {
    let Some((env, mut server, mut agent, mut trunk)) =
        call_in_progress("shutdown_drain", DRAIN.as_secs())
    else {
        return;
    };
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    // Once the server has taken the signal (it says so), new calls are refused while the
    // call in progress goes on.
    let draining = common::poll(Duration::from_secs(5), || {
        server
            .log_text()
            .contains("shutting down: new calls get 503")
            .then_some(())
    });
    assert!(draining.is_some(), "the server never took the SIGTERM");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let me = sock.local_addr().expect("local");
    let port = env.server_addr().port();
    sock.send_to(&invite(me, port, "late", 70, "0"), env.server_addr())
        .expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to the new call");
    let refused = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&buf[..n]), Some(503), "{refused}");
    assert!(refused.contains("Retry-After: "), "{refused}");
    let options = common::raw::options("late-ping", me.port());
    sock.send_to(&options, env.server_addr()).expect("send");
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to the OPTIONS");
    let pong = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&buf[..n]), Some(503), "{pong}");
    assert!(pong.contains("Retry-After: "), "{pong}");
    let (st, health) = call("GET", &format!("{}/healthz", env.http_base()), None, None);
    assert_eq!(
        (st, health["status"].as_str()),
        (503, Some("draining")),
        "{health}"
    );
    assert!(server.is_running(), "still serving the call in progress");

    // The drain, then at most HANG_UP_GRACE (15 s) for the BYEs to be answered.
    let status = server
        .wait_exit(DRAIN + Duration::from_secs(25))
        .expect("screenpop exits");
    let took = signalled.elapsed();
    eprintln!("[shutdown_drain] exited {took:?} after SIGTERM (drain {DRAIN:?})");
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= DRAIN - Duration::from_millis(100) && took < DRAIN + Duration::from_secs(15),
        "exited {took:?} after SIGTERM (drain {DRAIN:?})"
    );
    trunk.expect_success(T);
    agent.expect_success(T);
    // The call went on through the drain: the trunk talked from before the signal to its end.
    let talk = trunk.talk_time().expect("the trunk's talk time");
    assert!(
        talk >= DRAIN.as_secs_f64(),
        "talked {talk} s: the call did not last the drain"
    );
    let log = server.log_text();
    assert!(log.contains("hung up: screenpop is shutting down"), "{log}");
    assert!(log.contains("every call written: exiting"), "{log}");
    nothing_lost(&env, &trunk);
}

/// A second SIGTERM during a long drain hangs up at once: BYE both ways, everything written,
/// exit 0 well before the drain would have ended.
#[test]
fn a_second_sigterm_hangs_up_at_once() {
    let Some((env, mut server, mut agent, mut trunk)) = call_in_progress("shutdown_hurry", 60)
    else {
        return;
    };
    server.signal(libc::SIGTERM);
    let draining = common::poll(Duration::from_secs(5), || {
        server
            .log_text()
            .contains("shutting down: new calls get 503")
            .then_some(())
    });
    assert!(
        draining.is_some(),
        "the server never took the first SIGTERM"
    );
    assert!(server.is_running(), "the first SIGTERM drains");
    let hurried = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("screenpop exits");
    eprintln!(
        "[shutdown_hurry] exited {:?} after the second SIGTERM",
        hurried.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    // Hang-up, each BYE answered, everything written: well before the 60 s drain.
    assert!(
        hurried.elapsed() < Duration::from_secs(15),
        "exited {:?} after the second SIGTERM",
        hurried.elapsed()
    );
    trunk.expect_success(T);
    agent.expect_success(T);
    nothing_lost(&env, &trunk);
}

/// Under systemd (Type=notify): READY=1 once serving, STOPPING=1 on SIGTERM, and with no call
/// in progress the exit is at once. The unit in deploy/ passes `systemd-analyze verify`.
#[test]
fn systemd_hears_ready_and_stopping_and_the_unit_verifies() {
    let env = Env::new("shutdown_systemd");
    let socket = env.dir.join("notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&socket).expect("bind");
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut server = env.start_server_with_vars(&[("NOTIFY_SOCKET", &socket.to_string_lossy())]);
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).expect("READY=1 from screenpop");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    let log = server.log_text();
    assert!(log.contains("screenpop serving"), "{log}");
    assert!(
        log.contains("no [outbound] gateway"),
        "what it lacks is said:\n{log}"
    );
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let n = manager.recv(&mut buf).expect("STOPPING=1 from screenpop");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let status = server.wait_exit(T).expect("exits");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "no call in progress: exits at once ({:?})",
        signalled.elapsed()
    );

    // The unit, with ExecStart at the binary under test (verify checks it is executable).
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/screenpop.service");
    let text = std::fs::read_to_string(&unit).expect("deploy/screenpop.service");
    for key in [
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(text.contains(key), "the unit has {key}");
    }
    let copy = env.dir.join("screenpop.service");
    let bin = common::server_binary();
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/screenpop", &bin.to_string_lossy()),
    )
    .expect("copy");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian systemd) is installed by .ci/run");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
