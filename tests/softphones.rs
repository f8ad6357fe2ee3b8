//! Real phones as agents' phones: Debian's baresip and linphonec each register with screenpop
//! by digest, ring when the ACD offers them a call, answer, are recorded on their own channel
//! and hear the caller; their hold buttons and keypads reach the call; `screenpop dial` calls
//! baresip and it hears the file played. A SIPp trunk is the caller (600 Hz); the phone's
//! microphone is a 1500 Hz WAV.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::center::{center, center_tls, Center};
use common::desk::{for_call, is, state_of, Api, Desktop};
use common::softphone::{
    read_heard, softphone_or_skip, write_tone_wav, Baresip, Linphone, Phone, StartPhone,
};
use common::{analyse_channel, read_wav, server_binary, Ports, AGENT_HZ, CALLER_HZ};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);
const RECORDING_TIMEOUT: Duration = Duration::from_secs(10);
const PHONE_SECRET: &str = "phone-secret-1";

/// The phone's microphone: a long 1500 Hz tone (baresip hangs up when its source ends).
fn phone_mic(dir: &Path) -> std::path::PathBuf {
    let mic = dir.join("phone_1500hz.wav");
    write_tone_wav(&mic, AGENT_HZ, 120.0);
    mic
}

/// The fraction of 20 ms frames of what the phone heard carrying the caller's tone, and the
/// analysis for messages.
fn caller_tone_heard(wav: &Path) -> (f64, String) {
    let heard =
        read_heard(wav).unwrap_or_else(|| panic!("{} is no mono 16-bit WAV", wav.display()));
    let a = analyse_channel(&heard);
    (a.caller_fraction(), a.summary())
}

/// The recording holds the caller's 600 Hz on the left and the phone's 1500 Hz on the right,
/// each checked per 20 ms frame (the other tone at least 20 dB down); returned for more checks.
fn caller_left_phone_right(wav: &Path) -> common::Recording {
    let rec = read_wav(wav).unwrap_or_else(|e| panic!("{e}"));
    let (left, right) = (analyse_channel(&rec.left), analyse_channel(&rec.right));
    let picture = format!(
        "LEFT  {}\n{}\nRIGHT {}\n{}",
        left.summary(),
        left.timeline(),
        right.summary(),
        right.timeline()
    );
    assert!(
        left.caller_fraction() >= 0.85 && left.caller_over_agent_db() >= 20.0,
        "LEFT must be the caller's 600 Hz\n{picture}"
    );
    assert!(
        right.agent_fraction() >= 0.85 && right.caller_over_agent_db() <= -20.0,
        "RIGHT must be the phone's 1500 Hz\n{picture}"
    );
    rec
}

/// A call center whose agent `user` is available on its desktop and whose phone, started
/// with `start`, has registered.
fn agent_on_phone<P: Phone>(
    name: &str,
    program: &str,
    start: StartPhone<P>,
    user: &str,
) -> Option<(Center, Api, Desktop, P)> {
    agent_on_phone_at(center, name, program, start, user)
}

/// As [`agent_on_phone`], in the call center `make_center` sets up.
fn agent_on_phone_at<P: Phone>(
    make_center: fn(&str) -> Option<Center>,
    name: &str,
    program: &str,
    start: StartPhone<P>,
    user: &str,
) -> Option<(Center, Api, Desktop, P)> {
    let c = make_center(name)?;
    if !softphone_or_skip(name, program) {
        return None;
    }
    let q = c.queue(json!({"name": "support", "dialed_numbers": [common::DIALED], "wrap_up_secs": 1, "is_default": true}));
    let agent = c.agent_with_phone(user, PHONE_SECRET, &[q]);
    let mut desk = c.desktop(&agent, user);
    desk.set_state("available");
    desk.wait_for(state_of(agent.agent_id, "available"), T);
    let ports = Ports::allocate();
    let phone = start(
        &c.env,
        &format!("{user}-phone"),
        &ports,
        &phone_mic(&c.env.dir),
        (user, PHONE_SECRET),
    );
    phone.wait_registered(T);
    Some((c, agent, desk, phone))
}

/// The phone registers, rings when the ACD offers it a call, answers; the recording has the
/// caller left and the phone right, and the phone heard the caller.
fn rings_answers_is_recorded_and_hears_the_caller<P: Phone>(
    name: &str,
    program: &str,
    start: StartPhone<P>,
) {
    rings_answers_is_recorded_and_hears_the_caller_at(
        center, name, program, start, None, [false; 2],
    );
}

/// As [`rings_answers_is_recorded_and_hears_the_caller`], in the call center `make_center`
/// sets up; `registered_by` must appear in the phone's log (how it registered), and the call
/// record must say which legs (caller, agent) ran SRTP.
fn rings_answers_is_recorded_and_hears_the_caller_at<P: Phone>(
    make_center: fn(&str) -> Option<Center>,
    name: &str,
    program: &str,
    start: StartPhone<P>,
    registered_by: Option<&str>,
    srtp: [bool; 2],
) {
    let Some((c, alice, mut desk, phone)) =
        agent_on_phone_at(make_center, name, program, start, "alice")
    else {
        return;
    };

    let mut trunk = c.env.trunk("uac_call.xml", &["-d", "4000"]);
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    assert_eq!(offered["agent_id"], alice.agent_id, "{offered}");
    desk.wait_for(for_call("call.answered", call.clone()), T);
    trunk.expect_success(Duration::from_secs(20));
    let ended = desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");

    // The recording: the caller left, the phone right, each checked by content.
    let recs = c.env.wait_for_recordings(1, RECORDING_TIMEOUT);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    assert_eq!(
        record["media"]["srtp"],
        json!(srtp),
        "SRTP on (caller, agent): {record}"
    );
    let rec = caller_left_phone_right(&recs[0].wav);
    assert!(
        (rec.duration_secs() - 4.0).abs() < 0.5,
        "recording {:.2} s for a 4 s call",
        rec.duration_secs()
    );

    // The phone heard the caller.
    let heard = common::poll(Duration::from_secs(5), || phone.heard())
        .unwrap_or_else(|| panic!("{program} wrote nothing of what it heard:\n{}", phone.log()));
    let (fraction, summary) = caller_tone_heard(&heard);
    assert!(
        fraction >= 0.75,
        "the phone must hear the caller's 600 Hz: {summary}"
    );
    if let Some(how) = registered_by {
        assert!(phone.log().contains(how), "{how:?}:\n{}", phone.log());
    }
    phone.quit();
}

#[test]
fn baresip_registers_rings_answers_is_recorded_and_hears_the_caller() {
    rings_answers_is_recorded_and_hears_the_caller("baresip_acd", "baresip", Baresip::registered);
}

/// The same over TLS with SRTP: baresip registers to screenpop's TLS listener (checking its
/// certificate), is rung over that connection with an SRTP offer (SDES), which it insists on;
/// what it says is decrypted into the recording and what it hears was encrypted for it.
#[test]
fn baresip_over_tls_with_srtp_registers_rings_answers_is_recorded_and_hears_the_caller() {
    rings_answers_is_recorded_and_hears_the_caller_at(
        center_tls,
        "baresip_tls",
        "baresip",
        Baresip::registered_tls,
        // baresip's line for a registration's 200 names the transport it used.
        Some("alice@127.0.0.1: {0/TLS/v4} 200 OK"),
        // The phone insists on SRTP (`mediaenc=srtp-mand`): the agent's leg is encrypted, the
        // recording is made from the decrypted audio.
        [false, true],
    );
}

#[test]
fn linphone_registers_rings_answers_is_recorded_and_hears_the_caller() {
    rings_answers_is_recorded_and_hears_the_caller(
        "linphone_acd",
        "linphonec",
        Linphone::registered,
    );
}

/// The phone's own hold button (a re-INVITE with `a=sendonly`, then `a=sendrecv`) holds the
/// call as the desktop's Hold would: the caller hears music (not a re-INVITE), the desktop gets
/// `call.held` and `call.resumed` (by the phone), both legs stay up and the recording carries
/// on and marks the hold; a key pressed on the phone (RFC 4733) is kept with the call.
fn hold_resume_and_keypad_reach_the_call<P: Phone>(
    name: &str,
    program: &str,
    start: StartPhone<P>,
) {
    let Some((c, _bob, mut desk, mut phone)) = agent_on_phone(name, program, start, "bob") else {
        return;
    };

    // The trunk talks throughout; it is not re-INVITEd (it hears music instead).
    let mut trunk = c.env.trunk("uac_call.xml", &["-d", "6000"]);
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    desk.wait_for(for_call("call.answered", call.clone()), T);
    let answered = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    phone.hold();
    let held = answered.elapsed().as_secs_f64();
    let ev = desk.wait_for(for_call("call.held", call.clone()), T);
    assert_eq!(ev["by"], "phone", "{ev}");
    std::thread::sleep(Duration::from_millis(1500));
    phone.resume();
    let resumed = answered.elapsed().as_secs_f64();
    desk.wait_for(for_call("call.resumed", call.clone()), T);
    std::thread::sleep(Duration::from_millis(500));
    phone.press('5');
    trunk.expect_success(Duration::from_secs(20));
    let ended = desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");

    let recs = c.env.wait_for_recordings(1, RECORDING_TIMEOUT);
    let rec = read_wav(&recs[0].wav).unwrap_or_else(|e| panic!("{e}"));
    let (left, right) = (analyse_channel(&rec.left), analyse_channel(&rec.right));
    let picture = format!(
        "hold at {held:.2} s, resume at {resumed:.2} s, {:.2} s recorded\nLEFT  {}\n{}\nRIGHT {}\n{}",
        rec.duration_secs(),
        left.summary(),
        left.timeline(),
        right.summary(),
        right.timeline()
    );
    let end = rec.duration_secs();
    // One recording from answer to hang-up, hold included.
    assert!(
        end >= resumed + 2.0,
        "the recording must run past the resume to the hang-up\n{picture}"
    );
    let (caller_before, _) = left.window(0.3, held - 0.3);
    let (caller_after, _) = left.window(resumed + 0.6, end - 0.3);
    let (_, phone_after) = right.window(resumed + 0.6, end - 0.3);
    assert!(
        caller_before >= 0.85 && caller_after >= 0.85,
        "LEFT must have the caller before the hold ({:.0}%) and after the resume ({:.0}%)\n{picture}",
        caller_before * 100.0,
        caller_after * 100.0
    );
    assert!(
        phone_after >= 0.85,
        "RIGHT must have the phone after the resume ({:.0}%)\n{picture}",
        phone_after * 100.0
    );

    // The digit pressed on the phone is kept with the call, on the agent's leg.
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let digits: Vec<(String, String)> = record["dtmf"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    (
                        d["leg"].as_str().unwrap_or("").to_ascii_lowercase(),
                        d["digit"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(digits, [("agent".to_string(), "5".to_string())], "{record}");
    let holds = record["holds"].as_array().cloned().unwrap_or_default();
    assert!(
        holds.len() == 1 && holds[0]["by"] == "phone",
        "one hold, by the phone: {record}"
    );
    assert!(
        record["media"]["played"][0].as_u64().unwrap_or(0) > 50,
        "the caller was played music while held: {record}"
    );
    assert!(
        !trunk
            .messages()
            .iter()
            .any(|m| !m.sent && m.first_line.starts_with("INVITE")),
        "the trunk is not re-INVITEd"
    );
    phone.quit();
}

#[test]
fn baresip_hold_resume_and_keypad_reach_the_call() {
    hold_resume_and_keypad_reach_the_call("baresip_hold", "baresip", Baresip::registered);
}

#[test]
fn linphone_hold_resume_and_keypad_reach_the_call() {
    hold_resume_and_keypad_reach_the_call("linphone_hold", "linphonec", Linphone::registered);
}

/// `screenpop dial` calls the softphone directly and plays a file; the phone hears it, and the
/// phone's audio comes back.
#[test]
fn dial_plays_a_file_to_baresip() {
    let env = common::Env::new("baresip_dial");
    if !softphone_or_skip("baresip_dial", "baresip") {
        return;
    }
    let ports = Ports::allocate();
    let phone = Baresip::start(&env, "baresip", &ports, &phone_mic(&env.dir), None);
    let played = env.dir.join("caller_600hz.wav");
    write_tone_wav(&played, CALLER_HZ, 3.0);
    let out = std::process::Command::new(server_binary())
        .args([
            "dial",
            "--to",
            &format!("sip:phone@127.0.0.1:{}", phone.sip_port),
            "--from",
            "+15551230001",
            "--hangup-after",
            "3s",
            "--play",
        ])
        .arg(&played)
        .output()
        .expect("screenpop dial");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{summary}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        phone.log()
    );
    let s: Value = serde_json::from_str(summary.trim()).expect("dial summary JSON");
    assert_eq!(s["answered"], true, "{s}");
    assert!(
        s["rtp_received"].as_u64().is_some_and(|n| n >= 100),
        "the phone's audio must reach dial: {s}"
    );
    let heard = common::poll(Duration::from_secs(5), || phone.heard())
        .unwrap_or_else(|| panic!("baresip wrote no dump of what it heard:\n{}", phone.log()));
    let (fraction, summary) = caller_tone_heard(&heard);
    assert!(
        fraction >= 0.75,
        "the phone must hear the played file's 600 Hz: {summary}"
    );
    phone.quit();
}

/// A trunk over TLS that insists on SRTP (baresip dialling in with `mediaenc=srtp-mand`) and a
/// plain agent's phone (SIPp): the trunk's leg is SRTP and the phone's plain RTP; the recording
/// has the caller's decrypted audio left and the phone's right, and the trunk hears the phone
/// through the encryption screenpop did for it.
#[test]
fn a_tls_trunk_with_srtp_is_bridged_to_a_plain_phone_and_recorded() {
    let Some(env) = common::Env::with_sipp("tls_srtp_trunk") else {
        return;
    };
    if !softphone_or_skip("tls_srtp_trunk", "baresip") {
        return;
    }
    let cert = common::tls::make_cert(&env.dir, "server");
    let mut profile = std::fs::read_to_string(&env.profile).unwrap();
    profile.push_str(&format!(
        "\n[tls]\nport = {}\ncert = \"{}\"\nkey = \"{}\"\n",
        env.ports.tls(),
        cert.cert.display(),
        cert.key.display()
    ));
    std::fs::write(&env.profile, profile).unwrap();
    let _server = env.start_server();
    let mut agent = env.agent("uas_answer.xml", &[]);
    let mic = env.dir.join("trunk_600hz.wav");
    write_tone_wav(&mic, CALLER_HZ, 120.0);
    let ports = Ports::allocate();
    let trunk = Baresip::caller_tls(&env, "trunk", &ports, &mic, &cert.cert);
    let to = format!(
        "sip:{}@127.0.0.1:{};transport=tls",
        common::DIALED,
        env.ports.tls()
    );
    trunk.command("dial", &to);
    std::thread::sleep(Duration::from_secs(5));
    trunk.command("hangup", "");
    agent.expect_success(Duration::from_secs(10));

    let recs = env.wait_for_recordings(1, RECORDING_TIMEOUT);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    assert_eq!(record["media"]["srtp"], json!([true, false]), "{record}");
    assert_eq!(record["media"]["srtp_rejected"], json!([0, 0]), "{record}");
    caller_left_phone_right(&recs[0].wav);
    let heard = common::poll(Duration::from_secs(5), || trunk.heard())
        .unwrap_or_else(|| panic!("baresip wrote nothing of what it heard:\n{}", trunk.log()));
    let samples = read_heard(&heard).expect("heard WAV");
    let a = analyse_channel(&samples);
    assert!(
        a.agent_fraction() >= 0.75,
        "the trunk must hear the phone's 1500 Hz through SRTP: {}",
        a.summary()
    );
    assert!(
        trunk.log().contains("SRTP is Enabled"),
        "the trunk ran SRTP:\n{}",
        trunk.log()
    );
    trunk.quit();
}
