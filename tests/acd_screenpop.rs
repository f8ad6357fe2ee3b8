//! The whole path of issue 3: SIPp as the trunk and as the agents' phones, screenpop routing by
//! its store's queues and agents, and real WebSocket clients as the desktops.

mod common;

use common::center;
use std::time::Duration;

use center::center;
use common::desk::{for_call, is, state_of};
use common::{Ports, DIALED};
use serde_json::json;

const BILLING: &str = "8005550199";

const T: Duration = Duration::from_secs(15);

#[test]
fn known_caller_pops_on_the_agents_desktops_and_leaves_a_complete_contact_log() {
    let Some(c) = center("pop_known") else { return };
    let q = c.queue(
        json!({"name": "support", "dialed_numbers": [DIALED], "wrap_up_secs": 1, "is_default": true,
        "crm_url": "https://crm.example/customers?phone={e164}&call={call_id}"}),
    );
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &pb, &[], &[q]);
    let cust = c.customer(json!({
        "name": "王小明", "company": "Acme 有限公司", "tier": "key",
        "phones": [{"number": "+1 212-555-0123", "label": "office"}]
    }));
    let mut a1 = c.desktop(&alice, "alice-1");
    let mut a2 = c.desktop(&alice, "alice-2");
    let mut b1 = c.desktop(&bob, "bob");
    let mut sup = c.desktop(&c.admin, "admin");
    a1.set_state("available");
    a1.wait_for(state_of(alice.agent_id, "available"), T);

    let mut phone = c.env.agent_phone("alice-phone", pa, "uas_answer.xml", &[]);
    // The caller presents the national format; the customer was stored in E.164.
    let mut trunk = c
        .env
        .trunk_from("2125550123", "uac_call_from.xml", &["-d", "3000"]);
    let offered = a1.wait_for(is("call.offered"), T);
    let call = offered["call_id"].clone();
    assert_eq!(offered["customer"]["id"], cust["id"], "{offered}");
    assert_eq!(offered["customer"]["name"], "王小明");
    assert_eq!(offered["caller"]["number"], "+12125550123");
    assert_eq!(offered["queue"], "support");
    assert_eq!(offered["dialed"], DIALED);
    assert_eq!(offered["agent_id"], alice.agent_id);
    // The queue's CRM link, filled in for this caller and call.
    assert_eq!(
        offered["crm_url"],
        format!(
            "https://crm.example/customers?phone=%2B12125550123&call={}",
            call.as_str().unwrap_or_default()
        ),
        "{offered}"
    );
    assert!(offered["candidates"]
        .as_array()
        .is_some_and(|c| c.len() == 1));
    assert!(offered["recent_contacts"].is_array() && offered["open_work_orders"].is_array());
    assert!(offered["offered_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // Every desktop of the agent, and the supervisor, get it.
    a2.wait_for(for_call("call.offered", call.clone()), T);
    sup.wait_for(for_call("call.offered", call.clone()), T);
    a1.wait_for(for_call("call.answered", call.clone()), T);
    // A desktop that connects mid-call catches up: its state and the call in progress.
    let mut a3 = c.desktop(&alice, "alice-3");
    a3.wait_for(state_of(alice.agent_id, "on_call"), T);
    a3.wait_for(for_call("call.answered", call.clone()), T);

    trunk.expect_success(Duration::from_secs(20));
    phone.expect_success(Duration::from_secs(20));
    let ended = a1.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered", "{ended}");
    assert!(
        ended["talk_secs"].as_u64().is_some_and(|t| t >= 2),
        "{ended}"
    );
    let log_id = ended["contact_log_id"].as_i64().expect("contact log id");
    let rec_id = ended["recording_id"].as_i64().expect("recording id");
    a1.wait_for(state_of(alice.agent_id, "wrap_up"), T);

    // Bob's desktop heard nothing of Alice's call, and Bob cannot read it.
    b1.pump(Duration::from_millis(300));
    assert!(
        !b1.seen
            .iter()
            .any(|e| e["call_id"] == call || e["type"] == "call.offered"),
        "bob saw: {:?}",
        b1.seen
    );
    assert_eq!(bob.req("GET", &format!("/api/calls/{log_id}"), None).0, 404);
    let (status, _) = bob.req("GET", &format!("/api/recordings/{rec_id}/audio"), None);
    assert_eq!(status, 404);

    // The contact log is complete.
    let log = alice.ok("GET", &format!("/api/calls/{log_id}"), None);
    assert_eq!(log["agent_id"], alice.agent_id, "{log}");
    assert_eq!(log["customer_id"], cust["id"]);
    assert_eq!(log["queue_id"], q);
    assert_eq!(log["disposition"], "answered");
    assert_eq!(log["recording_id"], rec_id);
    assert_eq!(log["caller_e164"], "+12125550123");
    assert!(log["talk_secs"].as_i64().is_some_and(|t| t >= 2));
    // Notes, a disposition and a work order from the pop.
    let noted = alice.ok(
        "PATCH",
        &format!("/api/calls/{log_id}"),
        Some(json!({"notes": "客户要求回电", "disposition": "resolved"})),
    );
    assert_eq!(noted["notes"], "客户要求回电");
    assert_eq!(noted["agent_disposition"], "resolved");
    let wo = alice.ok(
        "POST",
        "/api/work-orders",
        Some(json!({"kind": "service", "title": "Replace router", "call_id": log_id})),
    );
    assert_eq!(wo["customer_id"], cust["id"]);
    assert_eq!(wo["assignee_agent_id"], alice.agent_id);
    assert_eq!(wo["status"], "open");
    a1.wait_for(is("work_order.created"), T);
    // It moves along its workflow, and a skipped step is refused naming the field.
    let id = wo["id"].as_i64().expect("id");
    let (st, err) = alice.req(
        "PATCH",
        &format!("/api/work-orders/{id}"),
        Some(&json!({"status": "resolved"})),
    );
    assert_eq!(st, 422, "{err}");
    assert_eq!(err["error"]["field"], "status");
    alice.ok(
        "PATCH",
        &format!("/api/work-orders/{id}"),
        Some(json!({"status": "in_progress"})),
    );
    alice.ok(
        "PATCH",
        &format!("/api/work-orders/{id}"),
        Some(json!({"status": "resolved"})),
    );
    let hist = alice.ok("GET", &format!("/api/work-orders/{id}/history"), None);
    let moves: Vec<&str> = hist["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|h| h["new_value"].as_str())
        .collect();
    assert_eq!(moves, ["open", "in_progress", "resolved"]);
    a1.wait_for(is("work_order.updated"), T);

    // The recording streams with Range support.
    let resp = ureq::get(&format!(
        "{}/api/recordings/{rec_id}/audio",
        c.env.http_base()
    ))
    .set("Authorization", &format!("Bearer {}", alice.token))
    .set("Range", "bytes=0-11")
    .call()
    .expect("audio");
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.header("Content-Type"), Some("audio/wav"));
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut head).expect("read");
    assert_eq!(&head[..4], b"RIFF");
    assert_eq!(&head[8..12], b"WAVE");

    // Filters: by number in another format, by agent, customers by phone.
    let by_number = c
        .admin
        .ok("GET", "/api/calls?number=(212)%20555-0123", None);
    assert_eq!(by_number["items"][0]["id"], log_id);
    let by_bob = c.admin.ok(
        "GET",
        &format!("/api/calls?agent_id={}", bob.agent_id),
        None,
    );
    assert_eq!(by_bob["items"].as_array().map(Vec::len), Some(0));
    let found = c.admin.ok("GET", "/api/customers?phone=212.555.0123", None);
    assert_eq!(found["items"][0]["id"], cust["id"]);
    let mine = alice.ok("GET", "/api/calls?from=2000-01-01", None);
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    // Closing every desktop logs the agent out: no calls for an empty desk.
    drop((a1, a2, a3));
    sup.wait_for(state_of(alice.agent_id, "offline"), T);

    let (st, err) = alice.req("GET", "/api/calls?from=yesterday", None);
    assert_eq!((st, err["error"]["field"].as_str()), (422, Some("from")));
}

#[test]
fn unknown_callers_become_customers_anonymous_ones_do_not_and_abandoned_calls_get_callbacks() {
    let Some(c) = center("pop_unknown") else {
        return;
    };
    let q = c.queue(json!({"name": "main", "is_default": true, "wrap_up_secs": 0}));
    let pa = Ports::allocate();
    let alice = c.agent("alice", &pa, &[], &[q]);
    let mut a1 = c.desktop(&alice, "alice");
    a1.set_state("available");
    a1.wait_for(state_of(alice.agent_id, "available"), T);
    let mut phone = c.env.agent_phone(
        "alice-phone",
        pa,
        "uas_ring.xml",
        &["-m", "3", "-timeout", "60s"],
    );

    let mut trunk = c.env.trunk_from("+14155550199", "uac_cancel_from.xml", &[]);
    let first = a1.wait_for(is("call.offered"), T);
    assert_eq!(first["caller"]["number"], "+14155550199");
    assert_eq!(first["customer"]["created_via"], "call", "{first}");
    trunk.expect_success(T);
    a1.wait_for(for_call("call.ended", first["call_id"].clone()), T);
    a1.wait_for(state_of(alice.agent_id, "available"), T);

    let mut trunk = c.env.trunk_from("anonymous", "uac_cancel_from.xml", &[]);
    let second = a1.wait_for(
        |v| v["type"] == "call.offered" && v["call_id"] != first["call_id"],
        T,
    );
    assert!(second["customer"].is_null(), "{second}");
    assert!(second["caller"]["number"].is_null());
    assert_eq!(second["candidates"].as_array().map(Vec::len), Some(0));
    trunk.expect_success(T);
    let ended = a1.wait_for(for_call("call.ended", second["call_id"].clone()), T);
    assert_eq!(ended["disposition"], "abandoned");
    a1.wait_for(state_of(alice.agent_id, "available"), T);

    // The first caller again: the pop shows the earlier contact and its open callback.
    a1.forget();
    let mut trunk = c.env.trunk_from("+14155550199", "uac_cancel_from.xml", &[]);
    let third = a1.wait_for(is("call.offered"), T);
    assert_eq!(third["customer"]["id"], first["customer"]["id"]);
    let recent = third["recent_contacts"].as_array().expect("recent");
    assert_eq!(recent.len(), 1, "{third}");
    assert_eq!(recent[0]["disposition"], "abandoned");
    let open = third["open_work_orders"].as_array().expect("open");
    assert_eq!(open.len(), 1, "{third}");
    assert_eq!(open[0]["kind"], "callback");
    trunk.expect_success(T);
    a1.wait_for(for_call("call.ended", third["call_id"].clone()), T);
    phone.expect_success(T);

    let customers = c.admin.ok("GET", "/api/customers", None);
    assert_eq!(
        customers["items"].as_array().map(Vec::len),
        Some(1),
        "{customers}"
    );
    // One callback per abandoned call, left to the queue (nobody is assigned).
    let wos = c.admin.ok("GET", "/api/work-orders?kind=callback", None);
    let items = wos["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{wos}");
    assert!(items
        .iter()
        .all(|w| w["queue_id"] == q && w["assignee_agent_id"].is_null()));
    let mut calls: Vec<i64> = items.iter().filter_map(|w| w["call_id"].as_i64()).collect();
    calls.sort_unstable();
    calls.dedup();
    assert_eq!(calls.len(), 3, "one callback per call: {wos}");
}

#[test]
fn routing_follows_idle_time_skills_and_the_assigned_agent() {
    let Some(c) = center("routing") else { return };
    let main = c.queue(
        json!({"name": "main", "dialed_numbers": [DIALED], "is_default": true, "wrap_up_secs": 0}),
    );
    let billing = c.queue(json!({"name": "billing", "dialed_numbers": [BILLING], "required_skills": ["billing"], "wrap_up_secs": 0}));
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &["billing"], &[main, billing]);
    let bob = c.agent("bob", &pb, &[], &[main, billing]);
    c.customer(
        json!({"name": "Assigned Customer", "assigned_agent_id": alice.agent_id,
                      "phones": [{"number": "+13125550100"}]}),
    );
    let mut sup = c.desktop(&c.admin, "admin");
    let mut a = c.desktop(&alice, "alice");
    let mut b = c.desktop(&bob, "bob");
    // Alice has been idle longer than Bob.
    a.set_state("available");
    a.wait_for(state_of(alice.agent_id, "available"), T);
    std::thread::sleep(Duration::from_millis(300));
    b.set_state("available");
    b.wait_for(state_of(bob.agent_id, "available"), T);
    let extra = ["-m", "4", "-timeout", "90s"];
    let mut phone_a = c.env.agent_phone("alice-phone", pa, "uas_ring.xml", &extra);
    let mut phone_b = c.env.agent_phone("bob-phone", pb, "uas_ring.xml", &extra);

    sup.pump(Duration::from_millis(300));
    sup.forget();
    let mut offered_to = Vec::new();
    let calls: [(&str, &[&str]); 4] = [
        ("+14155550001", &[]),              // longest idle: Alice
        ("+14155550002", &[]),              // now Bob has waited longest
        ("+14155550003", &["-s", BILLING]), // needs billing: Alice, though Bob waited longer
        ("+13125550100", &[]),              // Alice's own customer, though Bob waited longer
    ];
    for (i, (caller, extra)) in calls.iter().enumerate() {
        let mut trunk = c.env.trunk_from(caller, "uac_cancel_from.xml", extra);
        let offer = sup.wait_for(
            |v| v["type"] == "call.offered" && v["caller"]["number"] == *caller,
            T,
        );
        offered_to.push(offer["agent_id"].as_i64().expect("agent"));
        trunk.expect_success(T);
        sup.wait_for(for_call("call.ended", offer["call_id"].clone()), T);
        // Both agents free again before the next call.
        let who = offer["agent_id"].as_i64().unwrap_or(0);
        sup.wait_for(
            move |v| {
                v["type"] == "agent.state" && v["agent_id"] == who && v["state"] == "available"
            },
            T,
        );
        sup.seen
            .retain(|v| !(v["type"] == "agent.state" && v["agent_id"] == who));
        eprintln!("call {i} from {caller} offered to agent {who}");
    }
    let (al, bo) = (alice.agent_id, bob.agent_id);
    assert_eq!(offered_to, [al, bo, al, al]);
    // The routed queue is in each contact log.
    let billing_calls = c.admin.ok("GET", "/api/calls?number=%2B14155550003", None);
    assert_eq!(billing_calls["items"][0]["queue_id"], billing);
    phone_a.kill();
    phone_b.kill();
}

#[test]
fn ring_no_answer_moves_on_and_a_caller_nobody_takes_gets_a_callback() {
    let Some(c) = center("ring_no_answer") else {
        return;
    };
    let q = c.queue(
        json!({"name": "main", "is_default": true, "ring_timeout_secs": 2,
                           "max_wait_secs": 4, "wrap_up_secs": 0}),
    );
    let (pa, pb) = (Ports::allocate(), Ports::allocate());
    let alice = c.agent("alice", &pa, &[], &[q]);
    let bob = c.agent("bob", &pb, &[], &[q]);
    let mut a = c.desktop(&alice, "alice");
    let mut b = c.desktop(&bob, "bob");
    a.set_state("available");
    a.wait_for(state_of(alice.agent_id, "available"), T);
    std::thread::sleep(Duration::from_millis(200));
    b.set_state("available");
    b.wait_for(state_of(bob.agent_id, "available"), T);
    // Alice (idle longest) never answers; Bob does.
    let mut phone_a = c.env.agent_phone("alice-phone", pa, "uas_ring.xml", &[]);
    let mut phone_b = c.env.agent_phone("bob-phone", pb, "uas_answer.xml", &[]);
    let mut trunk = c
        .env
        .trunk_from("+14155550042", "uac_call_from.xml", &["-d", "2000"]);
    let first = a.wait_for(is("call.offered"), T);
    let call = first["call_id"].clone();
    a.wait_for(for_call("call.withdrawn", call.clone()), T);
    a.wait_for(state_of(alice.agent_id, "paused"), T);
    b.wait_for(for_call("call.offered", call.clone()), T);
    b.wait_for(for_call("call.answered", call.clone()), T);
    trunk.expect_success(Duration::from_secs(20));
    phone_a.expect_success(T);
    phone_b.expect_success(T);
    let ended = b.wait_for(for_call("call.ended", call.clone()), T);
    assert_eq!(ended["disposition"], "answered");
    assert_eq!(ended["agent_id"], bob.agent_id);
    // Alice's desktop never sees the rest of a call that went to Bob.
    assert!(a.events("call.answered").is_empty());

    // Nobody available (Alice paused by the ring-out, Bob pauses): the caller waits the
    // queue's maximum, gets 480, and a callback work order is left.
    b.set_state("paused");
    b.wait_for(state_of(bob.agent_id, "paused"), T);
    let mut trunk = c
        .env
        .trunk_from("+14155550043", "uac_noanswer_from.xml", &[]);
    trunk.expect_success(Duration::from_secs(20));
    // The work order is written once the call's end is (a moment after the 480).
    let wos = common::poll(T, || {
        let wos = c.admin.ok("GET", "/api/work-orders?kind=callback", None);
        let n = wos["items"].as_array().map_or(0, Vec::len);
        (n > 0).then_some(wos)
    })
    .unwrap_or_else(|| panic!("no callback work order after the 480"));
    let items = wos["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{wos}");
    let log = c
        .admin
        .ok("GET", &format!("/api/calls/{}", items[0]["call_id"]), None);
    assert_eq!(log["disposition"], "missed");
    assert_eq!(log["caller_e164"], "+14155550043");
}
