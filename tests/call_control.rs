//! Call control from the desktop's API (issue 11): hold with music and resume, hang-up, the
//! music queued callers hear, and what is refused. The caller is baresip dialling in as a trunk
//! (it records what it hears, so the music is checked by content); agents' phones are SIPp.

mod common;

use std::path::Path;
use std::time::Duration;

use common::center::center_with;
use common::desk::{for_call, is, state_of};
use common::softphone::{read_heard, softphone_or_skip, write_tone_wav, Baresip, Phone};
use common::{tone_level, Ports, AGENT_HZ, CALLER_HZ, DIALED, FRAME, TONE_PRESENT};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);
/// The music's tone, apart from the caller's 600 Hz and the agent's 1500 Hz.
const MUSIC_HZ: f64 = 1000.0;

/// The music file: 16 kHz stereo 16-bit PCM (screenpop converts it to 8 kHz G.711 once).
fn write_music(path: &Path) {
    let rate = 16_000u32;
    let n = rate as usize * 2;
    let mut data = Vec::with_capacity(n * 4);
    for i in 0..n {
        let v = ((2.0 * std::f64::consts::PI * MUSIC_HZ * i as f64 / f64::from(rate)).sin()
            * 0.4
            * 32767.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 4).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("music file");
}

/// One character per 20 ms frame of what the caller heard: `M` music, `A` the agent, `.`
/// neither (both would be `B`).
fn picture(heard: &[i16]) -> String {
    heard
        .chunks_exact(FRAME)
        .map(|f| {
            match (
                tone_level(f, MUSIC_HZ) >= TONE_PRESENT,
                tone_level(f, AGENT_HZ) >= TONE_PRESENT,
            ) {
                (true, true) => 'B',
                (true, false) => 'M',
                (false, true) => 'A',
                (false, false) => '.',
            }
        })
        .collect()
}

/// The longest run of `c` in `p`, in frames.
fn longest_run(p: &str, c: char) -> usize {
    p.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// A caller: baresip on its own ports, its microphone the caller's 600 Hz, calling the
/// server's trunk port.
fn caller(env: &common::Env) -> Baresip {
    let mic = env.dir.join("caller_600hz.wav");
    write_tone_wav(&mic, CALLER_HZ, 120.0);
    Baresip::start(env, "caller", &Ports::allocate(), &mic, None)
}

fn dial(trunk: &Baresip, env: &common::Env) {
    trunk.command(
        "dial",
        &format!("sip:{DIALED}@127.0.0.1:{}", env.ports.server_sip()),
    );
}

fn heard(trunk: &Baresip) -> Vec<i16> {
    let path = common::poll(Duration::from_secs(5), || trunk.heard())
        .unwrap_or_else(|| panic!("baresip wrote nothing of what it heard:\n{}", trunk.log()));
    read_heard(&path).expect("heard WAV")
}

/// A call center whose profile plays `write_music`'s file as `key` (`hold_music` or
/// `queue_music`), with baresip at hand as the caller and one queue (returned).
fn music_center(name: &str, key: &str) -> Option<(common::center::Center, i64)> {
    let dir = std::env::temp_dir().join(format!("screenpop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("music dir");
    let music = dir.join("music.wav");
    write_music(&music);
    let c = center_with(name, &format!("{key} = \"{}\"", music.display()))?;
    if !softphone_or_skip(name, "baresip") {
        return None;
    }
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true}),
    );
    Some((c, q))
}

/// The agent holds from the desktop: the caller hears the hold music (by content), the
/// agent's phone gets a re-INVITE with sendonly, then sendrecv on resume (SIPp checks both),
/// and the caller hears the agent again; the events say so, the recording runs through and
/// marks the hold; the desk's hang-up sends BYE to the phone and ends the call once.
#[test]
fn hold_from_the_desk_plays_music_to_the_caller_and_resume_brings_the_agent_back() {
    let Some((c, q)) = music_center("desk_hold", "hold_music") else {
        return;
    };
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &Ports::allocate(), &[], &[q]);
    let mut desk = c.desktop(&alice, "alice");
    desk.set_state("available");
    desk.wait_for(state_of(alice.agent_id, "available"), T);
    let mut phone = c
        .env
        .agent_phone("alice-phone", pa, "uas_reinvite.xml", &[]);

    let trunk = caller(&c.env);
    dial(&trunk, &c.env);
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let id = call.as_str().expect("call id").to_string();
    desk.wait_for(for_call("call.answered", call.clone()), T);
    std::thread::sleep(Duration::from_millis(1500));

    // Another agent cannot touch the call: it does not exist for them.
    let (status, body) = bob.req("POST", &format!("/api/calls/{id}/hold"), None);
    assert_eq!(status, 404, "{body}");
    // Not on hold: nothing to resume.
    let (status, body) = alice.req("POST", &format!("/api/calls/{id}/resume"), None);
    assert_eq!(status, 409, "{body}");

    let (status, body) = alice.req("POST", &format!("/api/calls/{id}/hold"), None);
    assert_eq!(status, 200, "{body}");
    let held = desk.wait_for(for_call("call.held", call.clone()), T);
    assert_eq!(held["by"], "desk", "{held}");
    let (status, body) = alice.req("POST", &format!("/api/calls/{id}/hold"), None);
    assert_eq!(status, 409, "on hold already: {body}");
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = alice.req("POST", &format!("/api/calls/{id}/resume"), None);
    assert_eq!(status, 200, "{body}");
    desk.wait_for(for_call("call.resumed", call.clone()), T);
    std::thread::sleep(Duration::from_millis(2000));
    // The contact log id names the call too.
    let log_id = offered["contact_log_id"].as_i64().expect("contact log id");
    let (status, body) = alice.req("POST", &format!("/api/calls/{log_id}/hangup"), None);
    assert_eq!(status, 200, "{body}");
    let ended = desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");
    phone.expect_success(T);
    let (status, body) = alice.req("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(status, 404, "the call is over: {body}");

    let heard = heard(&trunk);
    let p = picture(&heard);
    let music_run = longest_run(&p, 'M');
    assert!(
        music_run >= 100,
        "the caller must hear the music for most of the 2.5 s hold (longest run {} ms):\n{p}",
        music_run * 20
    );
    let (before, after) = p.split_at(p.find(&"M".repeat(music_run)).unwrap_or(0));
    assert!(
        longest_run(before, 'A') >= 40 && longest_run(&after[music_run..], 'A') >= 50,
        "the caller hears the agent before the hold and after the resume:\n{p}"
    );
    assert!(
        !after[music_run..].contains("MMMMM"),
        "the music stops at the resume:\n{p}"
    );

    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let holds = record["holds"].as_array().expect("holds").clone();
    assert_eq!(holds.len(), 1, "{record}");
    let span = holds[0]["end_ms"].as_u64().unwrap() - holds[0]["start_ms"].as_u64().unwrap();
    assert!((2300..4000).contains(&span), "{record}");
    assert_eq!(record["ended_by"], "desk", "{record}");
    assert!(
        record["media"]["played"][0].as_u64().unwrap_or(0) >= 110,
        "{record}"
    );
    trunk.quit();
}

/// With `queue_music` set, a caller waiting for an agent hears it (as early media) instead
/// of ringback; when an agent becomes available and answers, the caller hears the agent.
#[test]
fn a_queued_caller_hears_the_queue_music_until_an_agent_answers() {
    let Some((c, q)) = music_center("queue_music", "queue_music") else {
        return;
    };
    queued_caller_hears_music_then_the_agent(&c, q);
}

/// A queue with music of its own (set through the API, a file the server reads) plays it to
/// its waiting callers, with no `queue_music` in the profile; a file that cannot be read is
/// refused when the queue is saved (422 `music`).
#[test]
fn a_queue_plays_its_own_music_to_waiting_callers() {
    let Some(c) = center_with("queue_own_music", "") else {
        return;
    };
    if !softphone_or_skip("queue_own_music", "baresip") {
        return;
    }
    let music = c.env.dir.join("sales-music.wav");
    write_music(&music);
    let (st, e) = c.admin.req(
        "POST",
        "/api/queues",
        Some(&json!({"name": "sales", "music": "/nonexistent/music.wav"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("music")),
        "{e}"
    );
    let q = c.queue(
        json!({"name": "sales", "dialed_numbers": [DIALED], "wrap_up_secs": 1,
                           "is_default": true, "music": music.display().to_string()}),
    );
    queued_caller_hears_music_then_the_agent(&c, q);
}

/// A caller (baresip) waits 3 s in queue `q` before an agent goes available: the caller hears
/// the music (by content) while waiting, then the agent.
fn queued_caller_hears_music_then_the_agent(c: &common::center::Center, q: i64) {
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let mut desk = c.desktop(&alice, "alice");
    let mut phone = c.env.agent_phone("alice-phone", pa, "uas_answer.xml", &[]);
    let trunk = caller(&c.env);
    dial(&trunk, &c.env);
    std::thread::sleep(Duration::from_millis(3000));
    desk.set_state("available");
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    desk.wait_for(for_call("call.answered", call.clone()), T);
    std::thread::sleep(Duration::from_millis(2000));
    trunk.command("hangup", "");
    desk.wait_for(for_call("call.ended", call), T);
    phone.expect_success(T);
    let p = picture(&heard(&trunk));
    let music = p.find("MMMMMMMMMM").unwrap_or_else(|| {
        panic!("the queued caller must hear the music:\n{p}");
    });
    assert!(
        longest_run(&p, 'M') >= 100,
        "the music plays while the caller waits (3 s):\n{p}"
    );
    assert!(
        longest_run(&p[music..], 'A') >= 50,
        "then the agent is heard:\n{p}"
    );
    trunk.quit();
}

/// A blind transfer from the desktop: Alice's phone gets a BYE, Bob's phone rings and his
/// desktop pops with the same customer, the caller then talks to Bob; one recording, one
/// contact log (Bob's), the call record lists both agents; bad targets are refused.
#[test]
fn a_blind_transfer_hands_the_caller_to_another_agent() {
    let Some(c) = center_with("blind_transfer", "") else {
        return;
    };
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true}),
    );
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &pb, &[], &[q]);
    let cust =
        c.customer(json!({"name": "Transfer Test", "phones": [{"number": common::CALLER_NUMBER}]}));
    let mut a_desk = c.desktop(&alice, "alice");
    let mut b_desk = c.desktop(&bob, "bob");
    a_desk.set_state("available");
    a_desk.wait_for(state_of(alice.agent_id, "available"), T);
    let mut a_phone = c.env.agent_phone("alice-phone", pa, "uas_answer.xml", &[]);
    let mut b_phone = c.env.agent_phone("bob-phone", pb, "uas_answer.xml", &[]);
    let mut trunk = c.env.trunk("uac_call.xml", &["-d", "8000"]);
    let offered = a_desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let id = call.as_str().expect("call id").to_string();
    a_desk.wait_for(for_call("call.answered", call.clone()), T);

    // Bob is not available yet: 409; unknown targets and modes: 422 naming the field.
    let path = format!("/api/calls/{id}/transfer");
    let (st, e) = alice.req(
        "POST",
        &path,
        Some(&json!({"to": {"agent_id": bob.agent_id}})),
    );
    assert_eq!(st, 409, "{e}");
    for (body, field) in [
        (json!({"to": {"agent_id": 999_999}}), "to.agent_id"),
        (json!({"to": {"queue_id": 999_999}}), "to.queue_id"),
        (json!({"to": {}}), "to"),
        (
            json!({"to": {"agent_id": bob.agent_id}, "mode": "sideways"}),
            "mode",
        ),
    ] {
        let (st, e) = alice.req("POST", &path, Some(&body));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{e}"
        );
    }
    b_desk.set_state("available");
    b_desk.wait_for(state_of(bob.agent_id, "available"), T);
    std::thread::sleep(Duration::from_millis(1500));
    let (st, e) = alice.req(
        "POST",
        &path,
        Some(&json!({"to": {"agent_id": bob.agent_id}, "mode": "blind"})),
    );
    assert_eq!(st, 200, "{e}");
    let moved = a_desk.wait_for(for_call("call.transferred", call.clone()), T);
    assert_eq!(moved["to_agent_id"], bob.agent_id, "{moved}");
    a_phone.expect_success(T);
    let popped = b_desk.wait_for(for_call("call.offered", call.clone()), T);
    assert_eq!(
        popped["customer"]["id"], cust["id"],
        "the same card: {popped}"
    );
    assert_eq!(popped["agent_id"], bob.agent_id);
    b_desk.wait_for(for_call("call.answered", call.clone()), T);
    // Alice no longer controls the call; Bob does.
    let (st, _) = alice.req("POST", &format!("/api/calls/{id}/hold"), None);
    assert_eq!(st, 404);

    trunk.expect_success(Duration::from_secs(30));
    b_phone.expect_success(T);
    let ended = b_desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["agent_id"], bob.agent_id, "{ended}");
    assert_eq!(ended["disposition"], "answered");
    a_desk.pump(Duration::from_millis(300));
    assert!(
        a_desk.events("call.ended").is_empty(),
        "call.ended goes to the agent who had the call at the end"
    );

    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    assert_eq!(recs.len(), 1, "one recording follows the caller");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let agents: Vec<i64> = record["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["agent_id"].as_i64())
        .collect();
    assert_eq!(agents, [alice.agent_id, bob.agent_id], "{record}");
    let rec = common::read_wav(&recs[0].wav).unwrap_or_else(|e| panic!("{e}"));
    let right = common::analyse_channel(&rec.right);
    let bob_from = record["agents"][1]["start_ms"].as_u64().unwrap() as f64 / 1000.0;
    let (_, before) = right.window(0.3, 1.3);
    let (_, after) = right.window(bob_from + 0.5, rec.duration_secs() - 0.3);
    assert!(
        before >= 0.85 && after >= 0.85,
        "the agent side has Alice, then Bob (from {bob_from:.1} s): {}",
        right.timeline()
    );
    let log = c.admin.ok(
        "GET",
        &format!("/api/calls/{}", ended["contact_log_id"]),
        None,
    );
    assert_eq!(log["agent_id"], bob.agent_id, "{log}");
    assert_eq!(log["customer_id"], cust["id"], "{log}");
    // The contact log lists both agents in turn, each with their talk time.
    let turns: Vec<(i64, i64)> = log["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_i64().unwrap(),
                a["talk_secs"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        turns.iter().map(|t| t.0).collect::<Vec<_>>(),
        [alice.agent_id, bob.agent_id],
        "{log}"
    );
    assert!(turns.iter().all(|t| t.1 >= 1), "each talked: {log}");
}

/// Click-to-dial: the agent's own phone (baresip, registered with screenpop) rings first and
/// the desktop pops with the customer about to be called; when the agent answers, the gateway
/// (SIPp) gets an INVITE for the E.164 number with the configured caller ID, challenges it and
/// takes the digest (and, the call over, gets its challenge ACKed again); the agent hears ringback, then the customer (by content); the recording
/// has the customer left and the agent right; the contact log is outbound on the customer.
/// Numbers outside `outbound.allow`, an unknown customer and a second dial while busy are
/// refused with the reason.
#[test]
fn click_to_dial_rings_the_agent_then_calls_the_number_through_the_gateway() {
    let pg = Ports::allocate();
    let outbound = format!(
        "[outbound]\nuri = \"sip:{{number}}@127.0.0.1:{}\"\nusername = \"acct\"\npassword = \"gwpass\"\ncaller_id = \"+12015550100\"",
        pg.agent_sip()
    );
    let Some(c) = center_with("click_to_dial", &outbound) else {
        return;
    };
    if !softphone_or_skip("click_to_dial", "baresip") {
        return;
    }
    let q = c.queue(json!({"name": "support", "dialed_numbers": [DIALED], "is_default": true}));
    let alice = c.agent_with_phone("alice", "alice-phone-pw", &[q]);
    let cust =
        c.customer(json!({"name": "Ada Lovelace", "phones": [{"number": "+1 201 555 0123"}]}));
    let mut desk = c.desktop(&alice, "alice");
    desk.set_state("available");
    desk.wait_for(state_of(alice.agent_id, "available"), T);
    let mic = c.env.dir.join("alice_1500hz.wav");
    write_tone_wav(&mic, AGENT_HZ, 120.0);
    let phone = Baresip::registered(
        &c.env,
        "alice-phone",
        &Ports::allocate(),
        &mic,
        ("alice", "alice-phone-pw"),
    );
    phone.wait_registered(T);

    for (body, field, why) in [
        (json!({"number": "+44 20 7946 0018"}), "number", "outside"),
        (json!({"number": "1-900-555-0123"}), "number", "premium"),
        (json!({"number": "hello"}), "number", "not a phone number"),
        (
            json!({"number": "201 555 0123", "customer_id": 999_999}),
            "customer_id",
            "no customer",
        ),
    ] {
        let (st, e) = alice.req("POST", "/api/dial", Some(&body));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {e}"
        );
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{body}: {msg}");
    }

    let mut gateway = c
        .env
        .agent_phone("gateway", pg, "uas_gateway_auth.xml", &["-d", "4000"]);
    let (st, placed) = alice.req(
        "POST",
        "/api/dial",
        Some(&json!({"number": "(201) 555-0123"})),
    );
    assert_eq!(st, 202, "{placed}");
    assert_eq!(placed["number"], "+12015550123");
    assert_eq!(
        placed["customer_id"], cust["id"],
        "found by the number: {placed}"
    );
    let call = placed["call_id"].clone();
    let popped = desk.wait_for(for_call("call.offered", call.clone()), T);
    assert_eq!(popped["direction"], "outbound", "{popped}");
    assert_eq!(popped["customer"]["name"], "Ada Lovelace", "{popped}");
    // Busy with this call: a second one is refused.
    let (st, e) = alice.req(
        "POST",
        "/api/dial",
        Some(&json!({"number": "201 555 0124"})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("agent_busy")),
        "{e}"
    );

    desk.wait_for(
        for_call("call.answered", call.clone()),
        Duration::from_secs(20),
    );
    // The gateway's scenario ends with its 401 again a second after the call, as if our ACK
    // had been lost: ACKed again by what the call left the dispatcher, its task long gone.
    gateway.expect_success(Duration::from_secs(30));
    assert!(
        c.server
            .log_text()
            .contains("repeated refusal of an ended call's INVITE acknowledged again"),
        "the 401's ACK from the afterlife:\n{}",
        c.server.log_text()
    );
    let ended = desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");
    let log_id = ended["contact_log_id"].clone();
    assert_eq!(log_id, placed["contact_log_id"]);

    // The agent heard ringback, then the customer's 600 Hz.
    let heard = common::poll(Duration::from_secs(10), || phone.heard())
        .and_then(|p| read_heard(&p))
        .unwrap_or_else(|| panic!("baresip wrote nothing of what it heard:\n{}", phone.log()));
    let ringback: String = heard
        .chunks_exact(FRAME)
        .map(|f| {
            if tone_level(f, 440.0) >= TONE_PRESENT {
                'R'
            } else {
                '.'
            }
        })
        .collect();
    assert!(
        longest_run(&ringback, 'R') >= 20,
        "ringback before the answer: {ringback}"
    );
    let a = common::analyse_channel(&heard);
    let secs = heard.len() as f64 / 8000.0;
    let (customer, _) = a.window(secs - 3.3, secs - 0.3);
    assert!(
        customer >= 0.85,
        "the agent hears the customer: {}",
        a.timeline()
    );

    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    let rec = common::read_wav(&recs[0].wav).unwrap_or_else(|e| panic!("{e}"));
    let (left, right) = (
        common::analyse_channel(&rec.left),
        common::analyse_channel(&rec.right),
    );
    assert!(
        left.caller_fraction() >= 0.85 && right.agent_fraction() >= 0.85,
        "customer left, agent right:\nLEFT  {}\nRIGHT {}",
        left.timeline(),
        right.timeline()
    );
    let log = c.admin.ok("GET", &format!("/api/calls/{log_id}"), None);
    assert_eq!(log["direction"], "outbound", "{log}");
    assert_eq!(log["customer_id"], cust["id"], "{log}");
    assert_eq!(log["agent_id"], alice.agent_id, "{log}");
    assert_eq!(log["caller_e164"], "+12015550123", "{log}");
    assert!(log["recording_id"].as_i64().is_some(), "{log}");
    // No callback work order for a call the agent placed, and the agent is free again.
    desk.wait_for(state_of(alice.agent_id, "available"), T);
    phone.quit();
}

/// The phone's own transfer button: Alice's phone (SIPp) sends REFER to `bob`; screenpop
/// answers 202, NOTIFYs 100 then 200 (terminated), hangs the phone up and hands the caller to
/// Bob exactly as a blind transfer from the desktop does (Alice's desktop gets
/// `call.transferred`, Bob's pops with the same customer and answers; one contact log).
#[test]
fn a_refer_from_the_agents_phone_transfers_the_call() {
    let Some(c) = center_with("phone_refer", "") else {
        return;
    };
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true}),
    );
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &pb, &[], &[q]);
    let cust =
        c.customer(json!({"name": "Refer Test", "phones": [{"number": common::CALLER_NUMBER}]}));
    let mut a_desk = c.desktop(&alice, "alice");
    let mut b_desk = c.desktop(&bob, "bob");
    a_desk.set_state("available");
    a_desk.wait_for(state_of(alice.agent_id, "available"), T);
    std::thread::sleep(Duration::from_millis(1100));
    b_desk.set_state("available");
    b_desk.wait_for(state_of(bob.agent_id, "available"), T);
    let mut a_phone = c.env.agent_phone(
        "alice-phone",
        pa,
        "uas_refer.xml",
        &["-d", "2000", "-key", "target", "bob"],
    );
    let mut b_phone = c.env.agent_phone("bob-phone", pb, "uas_answer.xml", &[]);
    let mut trunk = c.env.trunk("uac_call.xml", &["-d", "8000"]);
    let offered = a_desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    assert_eq!(offered["agent_id"], alice.agent_id, "{offered}");
    let moved = a_desk.wait_for(for_call("call.transferred", call.clone()), T);
    assert_eq!(moved["to_agent_id"], bob.agent_id, "{moved}");
    a_phone.expect_success(T);
    let popped = b_desk.wait_for(for_call("call.offered", call.clone()), T);
    assert_eq!(popped["customer"]["id"], cust["id"], "{popped}");
    b_desk.wait_for(for_call("call.answered", call.clone()), T);
    trunk.expect_success(Duration::from_secs(30));
    b_phone.expect_success(T);
    let ended = b_desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["agent_id"], bob.agent_id, "{ended}");
    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let agents: Vec<i64> = record["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["agent_id"].as_i64())
        .collect();
    assert_eq!(agents, [alice.agent_id, bob.agent_id], "{record}");
}

/// A blind transfer out to a number: refused with the reason outside `outbound.allow`; to an
/// allowed number the first phone is hung up, the gateway (SIPp) gets an INVITE for the E.164
/// number with the configured caller ID, takes the digest and answers; the far end's audio is
/// on the agent side of the one recording; the far end's BYE ends the call for the caller.
#[test]
fn a_blind_transfer_to_an_outside_number_goes_out_through_the_gateway() {
    let pg = Ports::allocate();
    let outbound = format!(
        "[outbound]\nuri = \"sip:{{number}}@127.0.0.1:{}\"\nusername = \"acct\"\npassword = \"gwpass\"\ncaller_id = \"+12015550100\"",
        pg.agent_sip()
    );
    let Some(c) = center_with("transfer_out", &outbound) else {
        return;
    };
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true}),
    );
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let mut desk = c.desktop(&alice, "alice");
    desk.set_state("available");
    desk.wait_for(state_of(alice.agent_id, "available"), T);
    let mut phone = c.env.agent_phone("alice-phone", pa, "uas_answer.xml", &[]);
    let mut trunk = c.env.trunk("uac_agent_bye.xml", &[]);
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let id = call.as_str().expect("call id").to_string();
    desk.wait_for(for_call("call.answered", call.clone()), T);
    std::thread::sleep(Duration::from_millis(1500));

    let path = format!("/api/calls/{id}/transfer");
    let (st, e) = alice.req(
        "POST",
        &path,
        Some(&json!({"to": {"number": "+44 20 7946 0018"}})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("to.number")),
        "{e}"
    );
    let mut gateway = c
        .env
        .agent_phone("gateway", pg, "uas_gateway_auth.xml", &["-d", "3000"]);
    let (st, e) = alice.req(
        "POST",
        &path,
        Some(&json!({"to": {"number": "(201) 555-0123"}})),
    );
    assert_eq!(st, 200, "{e}");
    let moved = desk.wait_for(for_call("call.transferred", call.clone()), T);
    assert_eq!(moved["to_number"], "+12015550123", "{moved}");
    phone.expect_success(T);
    gateway.expect_success(Duration::from_secs(30));
    trunk.expect_success(T);

    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let rec = common::read_wav(&recs[0].wav).unwrap_or_else(|e| panic!("{e}"));
    let right = common::analyse_channel(&rec.right);
    let secs = rec.duration_secs();
    // The last 3 s of the agent side are the far end (600 Hz from the gateway); before the
    // transfer, Alice's phone (1500 Hz).
    let (far, _) = right.window(secs - 2.7, secs - 0.3);
    let (_, alice_part) = right.window(0.3, 1.3);
    assert!(
        far >= 0.85 && alice_part >= 0.85,
        "Alice, then the number called: {}\n{record}",
        right.timeline()
    );
    let log = c
        .admin
        .ok("GET", &format!("/api/calls/{}", record["log_id"]), None);
    assert_eq!(log["agent_id"], alice.agent_id, "{log}");
    assert_eq!(log["disposition"], "answered", "{log}");
}

/// The consulted agent's microphone: apart from the caller, Alice and the music.
const BOB_HZ: f64 = 2000.0;

/// One character per 20 ms frame of `heard`: the first of `tones` (char, Hz) present, or `.`.
fn picture_of(heard: &[i16], tones: &[(char, f64)]) -> String {
    heard
        .chunks_exact(FRAME)
        .map(|f| {
            tones
                .iter()
                .find(|(_, hz)| tone_level(f, *hz) >= TONE_PRESENT)
                .map_or('.', |(c, _)| *c)
        })
        .collect()
}

/// Where the first run of at least `n` frames of `c` starts in `p`.
fn run_at(p: &str, c: char, n: usize) -> Option<usize> {
    p.find(&c.to_string().repeat(n))
}

/// An attended transfer as a call center uses it, with three baresip phones whose
/// microphones play distinct tones (caller 600 Hz, Alice 1500 Hz, Bob 2000 Hz) and which
/// record what they hear. Alice has the caller and asks to consult Bob: the caller hears the
/// hold music while Alice and Bob talk (each hears the other), Bob's desktop pops with the
/// same customer card; then `complete` (or `cancel`). Returns what each heard, the call's
/// events on both desktops, the recording and the contact log.
struct Attended {
    caller: String,
    alice: String,
    bob: String,
    record: Value,
    right: Vec<i16>,
    log: Value,
}

fn attended(name: &str, finish: &str) -> Option<Attended> {
    let (c, q) = music_center(name, "hold_music")?;
    let alice = c.agent_with_phone("alice", "alice-phone-pw", &[q]);
    let bob = c.agent_with_phone("bob", "bob-phone-pw", &[q]);
    let cust = c.customer(json!({"name": "Consult Test", "phones": [{"number": "+15551230001"}]}));
    let mut a_desk = c.desktop(&alice, "alice");
    let mut b_desk = c.desktop(&bob, "bob");
    let phone = |who: &str, hz: f64, pw: &str| {
        let mic = c.env.dir.join(format!("{who}_mic.wav"));
        write_tone_wav(&mic, hz, 120.0);
        let p = Baresip::registered(
            &c.env,
            &format!("{who}-phone"),
            &Ports::allocate(),
            &mic,
            (who, pw),
        );
        p.wait_registered(T);
        p
    };
    let a_phone = phone("alice", AGENT_HZ, "alice-phone-pw");
    let b_phone = phone("bob", BOB_HZ, "bob-phone-pw");
    a_desk.set_state("available");
    a_desk.wait_for(state_of(alice.agent_id, "available"), T);

    let mic = c.env.dir.join("caller_600hz.wav");
    write_tone_wav(&mic, CALLER_HZ, 120.0);
    let trunk = Baresip::caller_as(&c.env, "caller", &Ports::allocate(), &mic, "+15551230001");
    trunk.command(
        "dial",
        &format!("sip:{DIALED}@127.0.0.1:{}", c.env.ports.server_sip()),
    );
    let offered = a_desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let id = call.as_str().expect("call id").to_string();
    a_desk.wait_for(for_call("call.answered", call.clone()), T);
    b_desk.set_state("available");
    b_desk.wait_for(state_of(bob.agent_id, "available"), T);
    std::thread::sleep(Duration::from_millis(1500));

    let path = format!("/api/calls/{id}/transfer");
    for (body, field) in [
        (
            json!({"to": {"agent_id": bob.agent_id}, "mode": "sideways"}),
            "mode",
        ),
        (
            json!({"to": {"agent_id": 999_999}, "mode": "attended"}),
            "to.agent_id",
        ),
    ] {
        let (st, e) = alice.req("POST", &path, Some(&body));
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{e}"
        );
    }
    let (st, e) = alice.req("POST", &format!("{path}/complete"), None);
    assert_eq!(st, 409, "nothing to complete yet: {e}");
    let (st, e) = alice.req(
        "POST",
        &path,
        Some(&json!({"to": {"agent_id": bob.agent_id}, "mode": "attended"})),
    );
    assert_eq!((st, e["done"].as_str()), (200, Some("consult")), "{e}");
    let popped = b_desk.wait_for(for_call("call.offered", call.clone()), T);
    assert_eq!(
        popped["customer"]["id"], cust["id"],
        "the same card: {popped}"
    );
    let talking = |v: &Value| v["type"] == "call.consult" && v["state"] == "talking";
    let t = a_desk.wait_for(talking, T);
    assert_eq!(t["with_agent_id"], bob.agent_id, "{t}");
    let t = b_desk.wait_for(talking, T);
    assert_eq!(t["with_agent_id"], alice.agent_id, "{t}");
    // While consulting, the call takes no other request, and Bob cannot complete it.
    let (st, _) = alice.req("POST", &format!("/api/calls/{id}/hold"), None);
    assert_eq!(st, 409);
    let (st, _) = bob.req("POST", &format!("{path}/complete"), None);
    assert_eq!(st, 404);
    std::thread::sleep(Duration::from_millis(3000));

    let (st, e) = alice.req("POST", &format!("{path}/{finish}"), None);
    assert_eq!(st, 200, "{e}");
    let (hangs_up, desk) = if finish == "complete" {
        let moved = a_desk.wait_for(for_call("call.transferred", call.clone()), T);
        assert_eq!(moved["to_agent_id"], bob.agent_id, "{moved}");
        let answered = b_desk.wait_for(for_call("call.answered", call.clone()), T);
        assert_eq!(answered["agent_id"], bob.agent_id, "{answered}");
        (&bob, &mut b_desk)
    } else {
        let over = a_desk.wait_for(|v| v["type"] == "call.consult" && v["state"] == "ended", T);
        assert_eq!(over["reason"], "cancelled", "{over}");
        b_desk.wait_for(for_call("call.withdrawn", call.clone()), T);
        (&alice, &mut a_desk)
    };
    std::thread::sleep(Duration::from_millis(3000));
    let (st, e) = hangs_up.req("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(st, 200, "{e}");
    let ended = desk.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["agent_id"], hangs_up.agent_id, "{ended}");
    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    assert_eq!(recs.len(), 1, "one recording follows the caller");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&recs[0].json).unwrap()).unwrap();
    let rec = common::read_wav(&recs[0].wav).unwrap_or_else(|e| panic!("{e}"));
    let log_id = offered["contact_log_id"].as_i64().expect("contact log id");
    let log = c.admin.ok("GET", &format!("/api/calls/{log_id}"), None);
    let tones = [
        ('C', CALLER_HZ),
        ('A', AGENT_HZ),
        ('B', BOB_HZ),
        ('M', MUSIC_HZ),
    ];
    let out = Attended {
        caller: picture_of(&heard(&trunk), &tones),
        alice: picture_of(&heard(&a_phone), &tones),
        bob: picture_of(&heard(&b_phone), &tones),
        record,
        right: rec.right.clone(),
        log,
    };
    eprintln!(
        "{name}: what each heard (20 ms per character)\ncaller {}\nalice  {}\nbob    {}",
        out.caller, out.alice, out.bob
    );
    trunk.quit();
    Some(out)
}

/// Completed: the caller hears Alice, the music while Alice and Bob consult (each hearing the
/// other), then Bob; Bob hears Alice, then the caller. One recording has Alice then Bob on the
/// agent's channel; the contact log lists both.
#[test]
fn an_attended_transfer_consults_the_target_then_hands_the_caller_over() {
    let Some(a) = attended("attended_complete", "complete") else {
        return;
    };
    let at = |p: &str, c: char, n: usize| run_at(p, c, n).unwrap_or(usize::MAX);
    let (cp, ap, bp) = (&a.caller, &a.alice, &a.bob);
    assert!(
        at(cp, 'A', 40) < at(cp, 'M', 100) && at(cp, 'M', 100) < at(cp, 'B', 100),
        "the caller hears Alice, the music, then Bob:\n{cp}"
    );
    assert!(
        !cp[at(cp, 'M', 100)..].contains("AAAAA"),
        "the caller never hears the consultation:\n{cp}"
    );
    assert!(at(ap, 'B', 100) < usize::MAX, "Alice hears Bob:\n{ap}");
    assert!(
        at(bp, 'A', 100) < at(bp, 'C', 100) && at(bp, 'C', 100) < usize::MAX,
        "Bob hears Alice, then the caller:\n{bp}"
    );
    let agents: Vec<i64> = a.record["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|x| x["agent_id"].as_i64())
        .collect();
    assert_eq!(agents.len(), 2, "{}", a.record);
    assert_eq!(
        agents,
        [
            a.log["agents"][0]["agent_id"].as_i64().unwrap(),
            a.log["agents"][1]["agent_id"].as_i64().unwrap()
        ],
        "{}",
        a.log
    );
    let right = picture_of(&a.right, &[('A', AGENT_HZ), ('B', BOB_HZ)]);
    assert!(
        at(&right, 'A', 40) < at(&right, 'B', 100) && at(&right, 'B', 100) < usize::MAX,
        "the recording's agent channel has Alice, then Bob:\n{right}"
    );
    assert!(
        a.record["media"]["consulted"][0].as_u64().unwrap_or(0) >= 100,
        "{}",
        a.record
    );
}

/// Cancelled: the caller hears Alice, the music during the consultation, then Alice again;
/// Bob hears only Alice; Bob's pop is withdrawn and the call stays Alice's.
#[test]
fn a_cancelled_attended_transfer_goes_back_to_the_caller() {
    let Some(a) = attended("attended_cancel", "cancel") else {
        return;
    };
    let at = |p: &str, c: char, n: usize| run_at(p, c, n).unwrap_or(usize::MAX);
    let (cp, bp) = (&a.caller, &a.bob);
    let music = at(cp, 'M', 100);
    assert!(
        at(cp, 'A', 40) < music && music < usize::MAX && cp[music..].contains(&"A".repeat(100)),
        "the caller hears Alice, the music, then Alice again:\n{cp}"
    );
    assert!(!cp.contains("BBBBB"), "the caller never hears Bob:\n{cp}");
    assert!(at(bp, 'A', 100) < usize::MAX, "Bob hears Alice:\n{bp}");
    assert!(!bp.contains("CCCCC"), "Bob never hears the caller:\n{bp}");
    assert_eq!(
        a.log["agents"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.log
    );
}
