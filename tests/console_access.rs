//! Issue 8, point 5: access to the console is enforced by the server. The session cookie is
//! HttpOnly and SameSite=Strict; a cookie-authenticated change or WebSocket from a foreign
//! origin is refused; agents cannot open the supervisor console or its figures; a deactivated
//! account is logged out and cannot log in; logins are rate-limited per address; every response
//! carries the security headers; the audit log records who did what from where.

mod common;

use common::desk;
use std::net::TcpStream;
use std::time::Duration;

use common::{Env, Server};
use desk::{call, Api, Desktop};
use serde_json::{json, Value};

/// A request with explicit headers and no redirects: (status, headers, body).
fn req(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut r = agent.request(method, url).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let res = match body {
        Some(b) => r.send_json(b.clone()),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .flat_map(|n| {
            resp.all(&n)
                .into_iter()
                .map(|v| (n.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        hs,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Logs in through the page's way: returns the `Cookie` header value and the Set-Cookie text.
fn cookie_login(base: &str, user: &str, password: &str) -> (String, String) {
    let (status, hs, body) = req(
        "POST",
        &format!("{base}/api/login"),
        &[("Origin", base)],
        Some(&json!({"username": user, "password": password})),
    );
    assert_eq!(status, 200, "{body}");
    let set = header(&hs, "set-cookie").to_string();
    let pair = set.split(';').next().unwrap_or("").to_string();
    assert!(pair.starts_with("screenpop_session="), "{set}");
    (pair, set)
}

fn start(env: &Env) -> (Server, Api) {
    env.write_acd_profile();
    env.admin_create("root", "root-password");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "root", "root-password");
    (server, admin)
}

/// A WebSocket handshake with the given headers; the HTTP status it got.
fn ws_status(base: &str, query: &str, headers: &[(&str, &str)]) -> u16 {
    use tungstenite::client::IntoClientRequest;
    let host = base.trim_start_matches("http://");
    let stream = TcpStream::connect(host).expect("connect");
    let mut r = format!("ws://{host}/ws{query}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        r.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match tungstenite::client(r, stream) {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            resp.status().as_u16()
        }
        Err(e) => panic!("ws handshake: {e}"),
    }
}

#[test]
fn the_server_enforces_who_may_see_and_do_what() {
    let env = Env::new("console_access");
    let (_server, admin) = start(&env);
    let base = env.http_base();

    // Every response carries the security headers, API and pages alike.
    for path in ["/login", "/api/openapi.json", "/healthz", "/assets/app.css"] {
        let (status, hs, _) = req("GET", &format!("{base}{path}"), &[], None);
        assert_eq!(status, 200, "{path}");
        let csp = header(&hs, "content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header(&hs, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&hs, "x-frame-options"), "DENY", "{path}");
    }

    // An empty store got the default queue; agents created without queues join it.
    let (_, dir) = call(
        "GET",
        &format!("{base}/api/directory"),
        Some(&admin.token),
        None,
    );
    let general = dir["queues"][0]["id"].as_i64().expect("default queue");
    admin.ok(
        "POST",
        "/api/agents",
        Some(json!({"username": "amy", "password": "amy-password", "display_name": "Amy"})),
    );
    admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "sue", "password": "sue-password", "display_name": "Sue",
                    "role": "supervisor"}),
        ),
    );

    // The page's session is an HttpOnly, SameSite=Strict cookie.
    let (amy_cookie, set) = cookie_login(&base, "amy", "amy-password");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = [("Cookie", amy_cookie.as_str())];
    let (status, _, me) = req("GET", &format!("{base}/api/me"), &cookie, None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("amy"), Some("agent"))
    );
    let amy_id = me["agent_id"].as_i64().expect("id");
    let (_, _, agent) = req("GET", &format!("{base}/api/agents/{amy_id}"), &cookie, None);
    assert_eq!(agent["queues"], json!([general]), "{agent}");

    // A change with the cookie from another origin (another port counts) is refused; from the
    // console's own origin it goes through.
    let evil = "http://127.0.0.1:1";
    let (status, _, e) = req(
        "PATCH",
        &format!("{base}/api/me"),
        &[cookie[0], ("Origin", evil)],
        Some(&json!({"locale": "zh"})),
    );
    assert_eq!(status, 403, "{e}");
    let (status, _, me) = req(
        "PATCH",
        &format!("{base}/api/me"),
        &[cookie[0], ("Origin", base.as_str())],
        Some(&json!({"locale": "zh"})),
    );
    assert_eq!((status, me["locale"].as_str()), (200, Some("zh")), "{me}");
    let (status, _, e) = req(
        "PATCH",
        &format!("{base}/api/me"),
        &cookie,
        Some(&json!({"locale": "fr"})),
    );
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (422, Some("locale")),
        "{e}"
    );

    // The WebSocket: the cookie from the console's own origin works; any foreign Origin is
    // refused before the upgrade, with a cookie or with a token.
    assert_eq!(
        ws_status(&base, "", &[cookie[0], ("Origin", base.as_str())]),
        101
    );
    assert_eq!(
        ws_status(&base, "", &[cookie[0], ("Origin", "http://evil.example")]),
        403
    );
    assert_eq!(ws_status(&base, "", &[cookie[0], ("Origin", evil)]), 403);
    assert_eq!(
        ws_status(
            &base,
            &format!("?token={}", admin.token),
            &[("Origin", "http://evil.example")]
        ),
        403
    );

    // Pages: an agent gets the desktop but not the console; a supervisor gets both; nobody
    // logged in is sent to the login page, an expired session says so.
    let page = |path: &str, hs: &[(&str, &str)]| {
        let (s, h, _) = req("GET", &format!("{base}{path}"), hs, None);
        (s, header(&h, "location").to_string())
    };
    assert_eq!(page("/agent", &cookie).0, 200);
    assert_eq!(page("/supervisor", &cookie).0, 403);
    assert_eq!(page("/", &cookie), (303, "/agent".to_string()));
    let (sue_cookie, _) = cookie_login(&base, "sue", "sue-password");
    let sue = [("Cookie", sue_cookie.as_str())];
    assert_eq!(page("/supervisor", &sue).0, 200);
    assert_eq!(page("/", &sue), (303, "/supervisor".to_string()));
    assert_eq!(
        page("/supervisor", &[]),
        (303, "/login?next=/supervisor".to_string())
    );
    assert_eq!(
        page("/agent", &[("Cookie", "screenpop_session=stale")]),
        (303, "/login?next=/agent&expired=1".to_string())
    );

    // The wallboard's figures and the audit log are for supervisors.
    let (status, _, _) = req("GET", &format!("{base}/api/stats/queues"), &cookie, None);
    assert_eq!(status, 403);
    let (status, _, _) = req("GET", &format!("{base}/api/audit"), &cookie, None);
    assert_eq!(status, 403);
    let (status, _, stats) = req("GET", &format!("{base}/api/stats/queues"), &sue, None);
    assert_eq!(status, 200, "{stats}");
    let row = &stats["items"][0];
    assert_eq!(
        (row["queue_id"].as_i64(), row["waiting"].as_i64()),
        (Some(general), Some(0))
    );
    assert_eq!(row["service_level_secs"], 20);
    assert!(row["service_level"].is_null(), "no calls yet: {row}");
    let (status, _, agents) = req("GET", &format!("{base}/api/stats/agents"), &sue, None);
    assert_eq!(status, 200);
    assert!(
        agents["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["agent_id"] == amy_id && a["state"] == "offline")),
        "{agents}"
    );
    let (_, _, audit) = req("GET", &format!("{base}/api/audit?action=login"), &sue, None);
    let logins = audit["items"].as_array().cloned().unwrap_or_default();
    assert!(
        logins
            .iter()
            .any(|e| e["actor"] == "amy" && e["source"] == "127.0.0.1"),
        "{audit}"
    );

    // Deactivating an account logs it out everywhere and keeps it from logging in; a pause
    // note reaches the board meanwhile.
    let mut desk = Desktop::connect(
        &base,
        &Api::login(&base, "amy", "amy-password").token,
        "amy",
    );
    desk.send(json!({"type": "set_state", "state": "paused", "note": "Lunch"}));
    let paused = desk.wait_for(
        |v| v["type"] == "agent.state" && v["state"] == "paused",
        Duration::from_secs(5),
    );
    assert_eq!(
        (paused["reason"].as_str(), paused["note"].as_str()),
        (Some("requested"), Some("Lunch"))
    );
    assert!(
        paused["since"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{paused}"
    );
    let off = admin.ok(
        "PATCH",
        &format!("/api/agents/{amy_id}"),
        Some(json!({"active": false})),
    );
    assert_eq!(off["active"], false);
    let (status, _, _) = req("GET", &format!("{base}/api/me"), &cookie, None);
    assert_eq!(status, 401, "the session ended");
    let (status, _) = call(
        "POST",
        &format!("{base}/api/login"),
        None,
        Some(&json!({"username": "amy", "password": "amy-password"})),
    );
    assert_eq!(status, 401, "a deactivated account cannot log in");
    let (_, dir) = call(
        "GET",
        &format!("{base}/api/directory"),
        Some(&admin.token),
        None,
    );
    assert!(
        dir["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == amy_id && a["active"] == false)),
        "history keeps the name: {dir}"
    );

    // Logging out ends the cookie's session and clears it.
    let (status, hs, _) = req(
        "POST",
        &format!("{base}/api/logout"),
        &[sue[0], ("Origin", base.as_str())],
        None,
    );
    assert_eq!(status, 204);
    assert!(header(&hs, "set-cookie").contains("Max-Age=0"));
    assert_eq!(page("/supervisor", &sue).0, 303);

    // Password guessing from one address: cut off after 10 failures (the deactivated account's
    // login above was the first), whatever the username, even with the right password, with
    // Retry-After.
    for i in 0..9 {
        let (status, _) = call(
            "POST",
            &format!("{base}/api/login"),
            None,
            Some(&json!({"username": "root", "password": format!("guess-{i}")})),
        );
        assert_eq!(status, 401, "guess {i}");
    }
    let (status, hs, e) = req(
        "POST",
        &format!("{base}/api/login"),
        &[],
        Some(&json!({"username": "root", "password": "root-password"})),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{e}"
    );
    assert!(header(&hs, "retry-after")
        .parse::<u64>()
        .is_ok_and(|s| s > 0));
    let (_, audit) = call(
        "GET",
        &format!("{base}/api/audit?action=login.failed"),
        Some(&admin.token),
        None,
    );
    assert!(
        audit["items"].as_array().is_some_and(|a| a.len() == 10),
        "failures are audited: {audit}"
    );
}
