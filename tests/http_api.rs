//! The HTTP contract (DESIGN.md): auth and roles, JSON errors that name the field, OpenAPI,
//! CSV upload and export, /metrics and /healthz, WebSocket auth; and a phone that registers
//! with screenpop being offered calls only while registered.

mod common;

use common::desk;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Env, Server};
use desk::{call, Api, Desktop};
use serde_json::{json, Value};

use screenpop::sip::message::Message;
use screenpop::sip::registration::{RegConfig, RegEvent, RegistrationClient};
use screenpop::sip::transaction::TimerConfig;
use screenpop::sip::Uri;

const T: Duration = Duration::from_secs(15);

fn start(env: &Env) -> (Server, Api) {
    env.write_acd_profile();
    env.admin_create("root", "root-password");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "root", "root-password");
    (server, admin)
}

#[test]
fn auth_errors_openapi_csv_metrics_and_health() {
    let env = Env::new("http_contract");
    let (_server, admin) = start(&env);
    let base = env.http_base();

    // Login: wrong password and unknown user look the same.
    let (s1, e1) = call(
        "POST",
        &format!("{base}/api/login"),
        None,
        Some(&json!({"username": "root", "password": "nope"})),
    );
    let (s2, e2) = call(
        "POST",
        &format!("{base}/api/login"),
        None,
        Some(&json!({"username": "ghost", "password": "nope"})),
    );
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(e1, e2);
    let (s, e) = call(
        "POST",
        &format!("{base}/api/login"),
        None,
        Some(&json!({"username": "root"})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("password")),
        "{e}"
    );
    // No token, a bad token.
    assert_eq!(
        call("GET", &format!("{base}/api/customers"), None, None).0,
        401
    );
    assert_eq!(
        call(
            "GET",
            &format!("{base}/api/customers"),
            Some("forged"),
            None
        )
        .0,
        401
    );

    // Bodies that do not fit name the field.
    let (s, e) = admin.req("POST", "/api/customers", Some(&json!({"name": 5})));
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("name")),
        "{e}"
    );
    let (s, e) = admin.req(
        "POST",
        "/api/customers",
        Some(&json!({"name": "A", "tier": "gold"})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("tier")),
        "{e}"
    );
    let (s, e) = admin.req(
        "POST",
        "/api/customers",
        Some(&json!({"name": "A", "phones": [{"number": "no digits"}]})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("phones")),
        "{e}"
    );
    let (s, e) = admin.req(
        "POST",
        "/api/customers",
        Some(&json!({"name": "A", "birthday": "31/12/1990"})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("birthday")),
        "{e}"
    );
    let (s, e) = admin.req(
        "POST",
        "/api/agents",
        Some(&json!({"username": "x", "password": "short", "display_name": "X"})),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("password")),
        "{e}"
    );
    let (s, e) = admin.req("GET", "/api/calls?limit=100000", None);
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("limit")),
        "{e}"
    );
    assert_eq!(admin.req("GET", "/api/customers/999", None).0, 404);

    // Roles: an agent cannot create agents or queues, nor list accounts.
    admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "amy", "password": "amy-password", "display_name": "Amy",
                    "sip_uri": "sip:amy@127.0.0.1:5999"}),
        ),
    );
    let amy = Api::login(&base, "amy", "amy-password");
    assert_eq!(
        amy.req("POST", "/api/queues", Some(&json!({"name": "q"})))
            .0,
        403
    );
    assert_eq!(amy.req("GET", "/api/agents", None).0, 403);
    let me = amy.ok("GET", &format!("/api/agents/{}", amy.agent_id), None);
    assert!(me.get("password_hash").is_none() && me["sip_uri"] == "sip:amy@127.0.0.1:5999");

    // Work orders: an agent's own are hidden from other agents, and agents assign only to
    // themselves.
    admin.ok(
        "POST",
        "/api/agents",
        Some(json!({"username": "ben", "password": "ben-password", "display_name": "Ben"})),
    );
    let ben = Api::login(&base, "ben", "ben-password");
    let wo = amy.ok(
        "POST",
        "/api/work-orders",
        Some(json!({"kind": "sales", "title": "Quote"})),
    );
    assert_eq!(wo["assignee_agent_id"], amy.agent_id);
    let id = wo["id"].as_i64().expect("id");
    assert_eq!(
        ben.req("GET", &format!("/api/work-orders/{id}"), None).0,
        404
    );
    assert_eq!(
        ben.req(
            "PATCH",
            &format!("/api/work-orders/{id}"),
            Some(&json!({"status": "closed"}))
        )
        .0,
        404
    );
    let listed = ben.ok("GET", "/api/work-orders", None);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let (st, e) = amy.req(
        "PATCH",
        &format!("/api/work-orders/{id}"),
        Some(&json!({"assignee_agent_id": ben.agent_id})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("assignee_agent_id")),
        "{e}"
    );
    let (st, e) = amy.req(
        "POST",
        "/api/work-orders",
        Some(&json!({"kind": "sales", "title": "x", "assignee_agent_id": ben.agent_id})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("assignee_agent_id")),
        "{e}"
    );
    let (st, e) = amy.req(
        "POST",
        "/api/work-orders",
        Some(&json!({"kind": "gift", "title": "x"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (400, Some("kind")),
        "{e}"
    );
    assert_eq!(assignee_of(&admin, id), amy.agent_id);

    // Admins change accounts and queues; the changes are checked like new ones.
    let q = admin.ok("POST", "/api/queues", Some(json!({"name": "vip-line"})));
    let qid = q["id"].as_i64().expect("queue");
    let changed = admin.ok(
        "PATCH",
        &format!("/api/agents/{}", amy.agent_id),
        Some(
            json!({"display_name": "Amy Wong", "skills": ["cantonese"], "queues": [qid],
                    "sip_username": "2002", "sip_password": "phone-pw"}),
        ),
    );
    assert_eq!(changed["display_name"], "Amy Wong");
    assert_eq!(changed["sip_username"], "2002");
    assert!(changed["sip_uri"].is_null());
    assert_eq!(changed["queues"], json!([qid]));
    let (st, e) = admin.req(
        "PATCH",
        &format!("/api/agents/{}", amy.agent_id),
        Some(&json!({"queues": [9999]})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("queues")),
        "{e}"
    );
    let (st, e) = admin.req(
        "PATCH",
        &format!("/api/queues/{qid}"),
        Some(&json!({"ring_timeout_secs": 0})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (422, Some("ring_timeout_secs")),
        "{e}"
    );
    let q = admin.ok(
        "PATCH",
        &format!("/api/queues/{qid}"),
        Some(json!({"dialed_numbers": ["8005550177"], "is_default": true})),
    );
    assert_eq!(
        (q["is_default"].as_bool(), q["dialed_numbers"][0].as_str()),
        (Some(true), Some("8005550177"))
    );
    // A CRM link template naming a field that does not exist, or not a web address: 422.
    for bad in ["https://crm.example/c?phone={phone}", "javascript:alert(1)"] {
        let (st, e) = admin.req(
            "PATCH",
            &format!("/api/queues/{qid}"),
            Some(&json!({ "crm_url": bad })),
        );
        assert_eq!(
            (st, e["error"]["field"].as_str()),
            (422, Some("crm_url")),
            "{e}"
        );
    }
    let q = admin.ok(
        "PATCH",
        &format!("/api/queues/{qid}"),
        Some(json!({"crm_url": "https://crm.example/c?phone={e164}"})),
    );
    assert_eq!(q["crm_url"], "https://crm.example/c?phone={e164}", "{q}");
    let q = admin.ok(
        "PATCH",
        &format!("/api/queues/{qid}"),
        Some(json!({"crm_url": ""})),
    );
    assert!(q["crm_url"].is_null(), "an empty template removes it: {q}");
    assert_eq!(
        amy.req(
            "PATCH",
            &format!("/api/queues/{qid}"),
            Some(&json!({"wrap_up_secs": 1}))
        )
        .0,
        403
    );
    assert_eq!(
        amy.req(
            "PATCH",
            &format!("/api/agents/{}", amy.agent_id),
            Some(&json!({"role": "admin"}))
        )
        .0,
        403
    );

    // OpenAPI is generated and lists the resources.
    let doc = amy.ok("GET", "/api/openapi.json", None);
    for p in [
        "/api/login",
        "/api/customers",
        "/api/calls",
        "/api/calls/{id}",
        "/api/work-orders/{id}",
        "/api/recordings/{id}/audio",
        "/api/agents",
        "/api/queues",
        "/api/customers/import",
        "/api/calls/{id}/hold",
        "/api/calls/{id}/resume",
        "/api/calls/{id}/hangup",
        "/api/webhooks",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"].get("ContactLog").is_some());

    // CSV upload: a bad file is refused whole with every reason; a good one imports.
    let upload = |body: &str| {
        let resp = ureq::post(&format!("{base}/api/customers/import"))
            .set("Authorization", &format!("Bearer {}", admin.token))
            .set("Content-Type", "text/csv")
            .send_string(body);
        let r = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (r.status(), r.into_json::<Value>().expect("json"))
    };
    let (s, r) = upload("name,phones\n陈静,+86 10 6552 9988\n,123\nBob,abc\n");
    assert_eq!(s, 422, "{r}");
    assert_eq!(r["imported"], 0);
    let lines: Vec<i64> = r["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|x| x["line"].as_i64())
        .collect();
    assert_eq!(lines, [3, 4], "{r}");
    let (s, r) = upload("name,phones,tier\n陈静,+86 10 6552 9988,vip\nBob Lee,(415) 555-0142,\n");
    assert_eq!((s, r["imported"].as_i64()), (200, Some(2)), "{r}");
    let found = admin.ok("GET", "/api/customers?name=%E9%99%88", None);
    assert_eq!(found["items"][0]["name"], "陈静");
    assert_eq!(found["items"][0]["phones"][0]["e164"], "+861065529988");
    let csv = ureq::get(&format!("{base}/api/customers/export"))
        .set("Authorization", &format!("Bearer {}", admin.token))
        .call()
        .expect("export")
        .into_string()
        .expect("text");
    assert!(
        csv.starts_with("code,name,") && csv.contains("陈静") && csv.contains("Bob Lee"),
        "{csv}"
    );
    assert_eq!(amy.req("GET", "/api/customers/export", None).0, 403);
    // Agents keep cards current; a misspelt field is named.
    let id = found["items"][0]["id"].as_i64().expect("id");
    let upd = amy.ok(
        "PATCH",
        &format!("/api/customers/{id}"),
        Some(json!({"notes": "prefers WeChat", "opt_out_sms": true})),
    );
    assert_eq!(
        (upd["notes"].as_str(), upd["opt_out_sms"].as_bool()),
        (Some("prefers WeChat"), Some(true))
    );
    let (st, e) = amy.req(
        "PATCH",
        &format!("/api/customers/{id}"),
        Some(&json!({"phone": "123"})),
    );
    assert_eq!(
        (st, e["error"]["field"].as_str()),
        (400, Some("phone")),
        "{e}"
    );

    // WebSocket: a bad token gets an error frame; a first-message token works.
    let host = base.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(host).expect("tcp");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (mut ws, _) = tungstenite::client(format!("ws://{host}/ws").as_str(), stream).expect("ws");
    ws.send(tungstenite::Message::Text(
        json!({"type": "auth", "token": amy.token})
            .to_string()
            .into(),
    ))
    .expect("send");
    let hello: Value = match ws.read().expect("read") {
        tungstenite::Message::Text(t) => serde_json::from_str(&t).expect("json"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (hello["type"].as_str(), hello["agent_id"].as_i64()),
        (Some("hello"), Some(amy.agent_id))
    );
    let stream = std::net::TcpStream::connect(host).expect("tcp");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (mut bad, _) =
        tungstenite::client(format!("ws://{host}/ws?token=forged").as_str(), stream).expect("ws");
    match bad.read().expect("read") {
        tungstenite::Message::Text(t) => assert!(t.contains("unauthorized"), "{t}"),
        other => panic!("{other:?}"),
    }
    // An invalid state is refused with a message naming it.
    let mut d = Desktop::connect(&base, &amy.token, "amy");
    // A desktop always learns its own state on connecting (never set: offline).
    d.wait_for(
        |v| v["type"] == "agent.state" && v["agent_id"] == amy.agent_id && v["state"] == "offline",
        T,
    );
    d.set_state("lunch");
    d.wait_for(
        |v| {
            v["type"] == "error"
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("state"))
        },
        T,
    );

    // Health and metrics.
    assert_eq!(call("GET", &format!("{base}/healthz"), None, None).0, 200);
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(metrics.contains("screenpop_desktops"), "{metrics}");
}

/// Registers a "phone" (a UDP socket driven by screenpop's own registration client).
fn register(env: &Env, sock: &UdpSocket, user: &str, password: &str) {
    let me = sock.local_addr().expect("addr");
    let server = env.server_addr();
    let cfg = RegConfig {
        registrar: Uri::parse(&format!("sip:{server}")).expect("uri"),
        user: user.into(),
        auth_user: user.into(),
        password: password.into(),
        expires: 300,
        sent_by: me.to_string(),
        transport: "UDP",
        contact: format!("<sip:{user}@{me}>"),
        reliable: false,
    };
    let mut client = RegistrationClient::new(
        Instant::now(),
        cfg,
        format!("reg-{}", me.port()),
        TimerConfig::default(),
    );
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let end = Instant::now() + T;
    loop {
        while let Some(b) = client.poll_transmit() {
            sock.send_to(&b, server).expect("send");
        }
        match client.poll_event() {
            Some(RegEvent::Registered { .. }) => return,
            Some(RegEvent::Failed { status }) => panic!("registration failed: {status:?}"),
            None => {}
        }
        assert!(Instant::now() < end, "registration timed out");
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(Message::Response(r)) = Message::parse(&buf[..n]) {
                client.handle_response(Instant::now(), r);
            }
        }
        client.handle_timeout(Instant::now());
    }
}

#[test]
fn a_registered_phone_gets_calls_only_while_registered() {
    let Some(env) = Env::with_sipp("registered_phone") else {
        return;
    };
    let (_server, admin) = start(&env);
    let q = admin.ok("POST", "/api/queues", Some(json!({"name": "main", "is_default": true,
                                                          "ring_timeout_secs": 3, "max_wait_secs": 2})))["id"]
        .as_i64()
        .expect("queue");
    let agent = admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "rita", "password": "rita-password", "display_name": "Rita",
                    "sip_username": "2001", "sip_password": "phone-secret", "queues": [q]}),
        ),
    );
    assert_eq!(agent["sip_username"], "2001");
    assert!(agent.get("sip_password").is_none());
    let rita = Api::login(&env.http_base(), "rita", "rita-password");
    let mut desk = Desktop::connect(&env.http_base(), &rita.token, "rita");
    desk.set_state("available");
    desk.wait_for(
        |v| v["type"] == "agent.state" && v["state"] == "available",
        T,
    );

    // Not registered: nobody can take the call; the caller waits the maximum and gets 480.
    let mut trunk = env.trunk_from("+14155550123", "uac_noanswer_from.xml", &[]);
    trunk.expect_success(T);
    desk.pump(Duration::from_millis(300));
    assert!(desk.events("call.offered").is_empty(), "{:?}", desk.seen);

    // Registered with the agent's SIP credentials: the INVITE reaches the phone.
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    register(&env, &phone, "2001", "phone-secret");
    let mut trunk = env.trunk_from("+14155550124", "uac_noanswer_from.xml", &[]);
    let offered = desk.wait_for(|v| v["type"] == "call.offered", T);
    assert_eq!(offered["caller"]["number"], "+14155550124");
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 8192];
    let (n, from) = phone
        .recv_from(&mut buf)
        .expect("INVITE at the registered phone");
    let Ok(Message::Request(invite)) = Message::parse(&buf[..n]) else {
        panic!("not a request: {}", String::from_utf8_lossy(&buf[..n]));
    };
    assert_eq!(invite.method.to_string(), "INVITE");
    assert_eq!(invite.uri.user.as_deref(), Some("2001"));
    // The phone is busy: the offer is withdrawn from the desktop and the caller still gets
    // the queue's answer.
    let busy = Message::Response(invite.response(486, Some("busy1"))).to_bytes();
    phone.send_to(&busy, from).expect("486");
    desk.wait_for(
        |v| v["type"] == "call.withdrawn" && v["reason"] == "refused",
        T,
    );
    trunk.expect_success(T);
    let wos = admin.ok("GET", "/api/work-orders?kind=callback", None);
    assert_eq!(wos["items"].as_array().map(Vec::len), Some(2), "{wos}");
}

/// A supervisor reads any work order.
fn assignee_of(admin: &Api, id: i64) -> i64 {
    admin.ok("GET", &format!("/api/work-orders/{id}"), None)["assignee_agent_id"]
        .as_i64()
        .expect("assignee")
}

/// The status of a REGISTER answered with `password` (401 when the registrar does not know the
/// user or the password is wrong).
fn register_status(env: &Env, user: &str, password: &str) -> Option<u16> {
    let r = common::register_digest(env, user, password, "MD5");
    r.answer
        .as_deref()
        .and_then(|a| common::status_code(a.lines().next().unwrap_or("")))
}

#[test]
fn phone_credentials_follow_the_account() {
    let env = Env::new("phone_credentials");
    let (server, admin) = start(&env);
    let carol = admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "carol", "display_name": "Carol", "password": "carol-pass-1",
                    "sip_username": "carol-phone", "sip_password": "phone-pw-1"}),
        ),
    );
    let carol_id = carol["id"].as_i64().expect("id");
    assert_eq!(
        register_status(&env, "carol-phone", "phone-pw-1"),
        Some(200)
    );
    assert_eq!(register_status(&env, "carol-phone", "wrong"), Some(401));

    // A new SIP user name: the old one no longer registers, the new one does.
    admin.ok(
        "PATCH",
        &format!("/api/agents/{carol_id}"),
        Some(json!({"sip_username": "carol-desk", "sip_password": "phone-pw-2"})),
    );
    assert_eq!(
        register_status(&env, "carol-phone", "phone-pw-1"),
        Some(401)
    );
    assert_eq!(register_status(&env, "carol-desk", "phone-pw-2"), Some(200));

    // A deactivated account's phone can no longer register.
    admin.ok(
        "PATCH",
        &format!("/api/agents/{carol_id}"),
        Some(json!({"active": false})),
    );
    assert_eq!(register_status(&env, "carol-desk", "phone-pw-2"), Some(401));

    // After a restart the registrar knows exactly the active accounts' phones again.
    admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "dave", "display_name": "Dave", "password": "dave-pass-1",
                    "sip_username": "dave-phone", "sip_password": "phone-pw-3"}),
        ),
    );
    drop(server);
    let _server = env.start_server();
    assert_eq!(register_status(&env, "dave-phone", "phone-pw-3"), Some(200));
    assert_eq!(register_status(&env, "carol-desk", "phone-pw-2"), Some(401));
}
