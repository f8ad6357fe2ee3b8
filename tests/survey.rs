//! The post-call satisfaction survey (issue 12, point 5): a queue with a survey keeps the
//! caller when the agent hangs up first, plays the prompt, takes one digit and stores it on the
//! contact log. The digit comes from SIPp as the caller (its own RFC 4733 capture of digit 4);
//! the caller who presses nothing is baresip, which records what it hears, so the prompt is
//! checked by content. Agents' phones are SIPp.

mod common;

use std::path::Path;
use std::time::Duration;

use common::center::center;
use common::desk::{for_call, is, state_of};
use common::softphone::{read_heard, softphone_or_skip, write_tone_wav, Baresip, Phone};
use common::{tone_level, Ports, CALLER_HZ, DIALED, FRAME, TONE_PRESENT};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);
/// The prompt's and the thanks' tones, apart from the caller's 600 Hz and the agent's 1500 Hz.
const PROMPT_HZ: f64 = 800.0;
const THANKS_HZ: f64 = 1200.0;

/// A center with one queue whose survey is a 1 s prompt and a 0.5 s thanks (tones), with
/// `timeout` seconds to press; returns the queue.
fn survey_center(name: &str, timeout: u64) -> Option<(common::center::Center, i64)> {
    let c = center(name)?;
    let prompt = c.env.dir.join("survey-prompt.wav");
    let thanks = c.env.dir.join("survey-thanks.wav");
    write_tone_wav(&prompt, PROMPT_HZ, 1.0);
    write_tone_wav(&thanks, THANKS_HZ, 0.5);
    // A prompt that cannot be played is refused when the queue is saved, by name.
    let (st, e) = c.admin.req(
        "POST",
        "/api/queues",
        Some(&json!({"name": "care", "survey_prompt": "/nonexistent/prompt.wav"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("survey_prompt")),
        "{e}"
    );
    let (st, e) = c.admin.req(
        "POST",
        "/api/queues",
        Some(
            &json!({"name": "care", "survey_prompt": prompt.display().to_string(),
                     "survey_timeout_secs": 0}),
        ),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("survey_timeout_secs")),
        "{e}"
    );
    let q = c.queue(json!({
        "name": "care", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true,
        "survey_prompt": prompt.display().to_string(),
        "survey_thanks": thanks.display().to_string(),
        "survey_timeout_secs": timeout,
    }));
    Some((c, q))
}

/// Alice in queue `q`, available on her desktop; her phone (SIPp) answers and hangs up
/// `talk_ms` after the answer.
fn alice_hangs_up_after(
    c: &common::center::Center,
    q: i64,
    talk_ms: &str,
) -> (common::desk::Api, common::desk::Desktop, common::Sipp) {
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let mut desk = c.desktop(&alice, "alice");
    desk.set_state("available");
    desk.wait_for(state_of(alice.agent_id, "available"), T);
    let phone = c
        .env
        .agent_phone("alice-phone", pa, "uas_bye.xml", &["-d", talk_ms]);
    (alice, desk, phone)
}

/// The `call.survey` event that says how the survey ended.
fn survey_over(call: Value) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "call.survey" && v["call_id"] == call && v["state"] != "asking"
}

fn contact_log(api: &common::desk::Api, id: i64) -> Value {
    api.ok("GET", &format!("/api/calls/{id}"), None)
}

/// The one call record the recorder wrote.
fn record(c: &common::center::Center) -> Value {
    let recs = c.env.wait_for_recordings(1, Duration::from_secs(10));
    serde_json::from_str(&std::fs::read_to_string(&recs[0].json).expect("record")).expect("json")
}

/// SIPp's caller offers RFC 4733 events; the agent (SIPp) hangs up 1.5 s after answering;
/// the caller hears the 1 s prompt and presses 4 (SIPp's capture of the digit) 2 s after
/// it; the thanks plays and screenpop hangs up. The contact log has score 4 and the time the
/// survey began, the talk time stops there, the desktops hear `call.survey` and the stats
/// count it per queue and per agent.
#[test]
fn a_caller_rates_the_call_with_rfc4733_digit_4() {
    let Some((c, q)) = survey_center("survey_digit", 4) else {
        return;
    };
    let (alice, mut desk, mut phone) = alice_hangs_up_after(&c, q, "1500");
    let mut sup = c.desktop(&c.admin, "admin");
    let mut trunk = c.env.trunk("uac_survey.xml", &[]);

    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let log_id = offered["contact_log_id"].as_i64().expect("contact log id");
    desk.wait_for(for_call("call.answered", call.clone()), T);
    let asking = desk.wait_for(for_call("call.survey", call.clone()), T);
    assert_eq!(
        (asking["state"].as_str(), asking["agent_id"].as_i64()),
        (Some("asking"), Some(alice.agent_id)),
        "{asking}"
    );
    phone.expect_success(T);
    // The agent is free of the call (wrap-up) while the caller answers the survey.
    desk.wait_for(state_of(alice.agent_id, "wrap_up"), T);
    let scored = desk.wait_for(survey_over(call.clone()), T);
    assert_eq!(
        (scored["state"].as_str(), scored["score"].as_u64()),
        (Some("scored"), Some(4)),
        "{scored}"
    );
    let ended = sup.wait_for(for_call("call.ended", call.clone()), T);
    trunk.expect_success(T);
    assert_eq!(ended["survey_score"], 4, "{ended}");
    assert_eq!(ended["disposition"], "answered", "{ended}");

    let log = contact_log(&alice, log_id);
    assert_eq!(log["survey_score"], 4, "{log}");
    let offered_at = log["survey_offered_at"].as_i64().expect("survey time");
    let answered_at = log["answered_at"].as_i64().expect("answered");
    let ended_at = log["ended_at"].as_i64().expect("ended");
    assert!(
        (1_400..3_000).contains(&(offered_at - answered_at)),
        "the agent hung up 1.5 s after answering: {log}"
    );
    // The digit 2 s after the survey began (3.5 s after the answer: 1 s after the prompt's
    // end), then the 0.5 s thanks: about 2.6 s, where a missed digit would take 5 s (the 1 s
    // prompt and the 4 s timeout).
    assert!((2_300..4_000).contains(&(ended_at - offered_at)), "{log}");
    assert!(
        log["talk_secs"].as_i64().unwrap_or(99) <= 2,
        "the survey is not the agent's talk time: {log}"
    );

    let rec = record(&c);
    assert_eq!(rec["survey"]["score"], 4, "{rec}");
    assert_eq!(rec["ended_by"], "agent", "{rec}");
    // What played into the caller's leg: all of the 1 s prompt and of the 0.5 s thanks, 20 ms
    // packets, nothing else.
    assert_eq!(rec["media"]["played"][0], 75, "{rec}");
    let digits: Vec<&str> = rec["dtmf"]
        .as_array()
        .expect("dtmf")
        .iter()
        .filter_map(|d| d["digit"].as_str())
        .collect();
    assert_eq!(digits, ["4"], "{rec}");

    for (path, id) in [
        ("/api/stats/queues", ("queue_id", q)),
        ("/api/stats/agents", ("agent_id", alice.agent_id)),
    ] {
        let stats = c.admin.ok("GET", path, None);
        let row = stats["items"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r[id.0] == id.1))
            .cloned()
            .unwrap_or_else(|| panic!("{path}: {stats}"));
        assert_eq!(
            (
                row["surveys_offered"].as_i64(),
                row["surveys_scored"].as_i64(),
                row["avg_survey_score"].as_f64()
            ),
            (Some(1), Some(1), Some(4.0)),
            "{path}: {row}"
        );
    }
}

/// One character per 20 ms frame of what the caller heard: `P` prompt, `T` thanks, `A` the
/// agent, `.` none of them.
fn picture(heard: &[i16]) -> String {
    heard
        .chunks_exact(FRAME)
        .map(|f| {
            if tone_level(f, PROMPT_HZ) >= TONE_PRESENT {
                'P'
            } else if tone_level(f, THANKS_HZ) >= TONE_PRESENT {
                'T'
            } else if tone_level(f, common::AGENT_HZ) >= TONE_PRESENT {
                'A'
            } else {
                '.'
            }
        })
        .collect()
}

fn longest_run(p: &str, c: char) -> usize {
    p.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// baresip calls and presses nothing: after the agent hangs up it hears the prompt (by
/// content), no thanks, and screenpop hangs up 2 s after the prompt's end. The contact log
/// says the survey was offered and has no score; the stats count it offered, not scored.
#[test]
fn a_caller_who_presses_nothing_hears_the_prompt_and_gets_no_score() {
    let Some((c, q)) = survey_center("survey_silent", 2) else {
        return;
    };
    if !softphone_or_skip("survey_silent", "baresip") {
        return;
    }
    let (alice, mut desk, mut phone) = alice_hangs_up_after(&c, q, "2000");
    let mic = c.env.dir.join("caller_600hz.wav");
    write_tone_wav(&mic, CALLER_HZ, 120.0);
    let trunk = Baresip::start(&c.env, "caller", &Ports::allocate(), &mic, None);
    trunk.command(
        "dial",
        &format!("sip:{DIALED}@127.0.0.1:{}", c.env.ports.server_sip()),
    );
    let offered = desk.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    let log_id = offered["contact_log_id"].as_i64().expect("contact log id");
    desk.wait_for(for_call("call.survey", call.clone()), T);
    let done = desk.wait_for(survey_over(call.clone()), T);
    assert_eq!(
        (done["state"].as_str(), done["score"].as_u64()),
        (Some("unanswered"), None),
        "{done}"
    );
    let ended = desk.wait_for(for_call("call.ended", call), T);
    assert!(ended["survey_score"].is_null(), "{ended}");
    phone.expect_success(T);

    let path = common::poll(Duration::from_secs(5), || trunk.heard())
        .unwrap_or_else(|| panic!("baresip wrote nothing of what it heard:\n{}", trunk.log()));
    let p = picture(&read_heard(Path::new(&path)).expect("heard WAV"));
    let prompt = longest_run(&p, 'P');
    assert!(
        (40..=55).contains(&prompt),
        "the caller hears the 1 s prompt once ({} ms):\n{p}",
        prompt * 20
    );
    let at = p.find(&"P".repeat(prompt)).unwrap_or(0);
    assert!(
        longest_run(&p[..at], 'A') >= 50,
        "the agent is heard before it:\n{p}"
    );
    assert!(
        !p[at..].contains('A') && !p.contains("TTT"),
        "neither the agent nor a thanks after it:\n{p}"
    );

    let log = contact_log(&alice, log_id);
    assert!(log["survey_score"].is_null(), "{log}");
    let asked = log["survey_offered_at"].as_i64().expect("asked");
    let took = log["ended_at"].as_i64().expect("ended") - asked;
    assert!(
        (2_900..3_800).contains(&took),
        "the 1 s prompt, then 2 s to press: {took} ms"
    );
    let stats = c.admin.ok("GET", "/api/stats/queues", None);
    let row = stats["items"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["queue_id"] == q))
        .cloned()
        .expect("the queue's stats");
    assert_eq!(
        (
            row["surveys_offered"].as_i64(),
            row["surveys_scored"].as_i64()
        ),
        (Some(1), Some(0)),
        "{row}"
    );
    assert!(row["avg_survey_score"].is_null(), "{row}");
    trunk.quit();
}
