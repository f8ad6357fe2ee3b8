//! Issue 8, point 1: the first run of an installed binary, as a new user would do it. The
//! binary is copied alone into an empty folder outside the repository and started with no
//! profile, no database and no recordings flag (only ports, so tests can run side by side): it
//! must start on its built-in defaults, say where the console is and how to make the first
//! admin, serve the login page, and — after "create an admin, create an agent, open the
//! desktop, call in" with no profile editing — pop the caller on the agent's desktop.

mod common;

use common::desk;
use std::time::Duration;

use common::{server_binary, Env, Ports, Server};
use desk::{call, Api, Desktop};
use serde_json::json;

const T: Duration = Duration::from_secs(15);

/// A plain HTTP GET without following redirects: (status, headers, body).
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut req = agent.get(url).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    (status, hs, resp.into_string().unwrap_or_default())
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn installed_binary_starts_on_its_defaults_and_the_first_call_pops() {
    let Some(env) = Env::with_sipp("first_run") else {
        return;
    };
    // The installed binary, alone, and an empty folder to run it from.
    let bin_dir = env.dir.join("bin");
    let work = env.dir.join("empty");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let bin = bin_dir.join("screenpop");
    std::fs::copy(server_binary(), &bin).expect("install the binary");
    let (lo, hi) = env.ports.rtp_range();
    let base = env.http_base();
    let args = vec![
        "serve".to_string(),
        "--sip".into(),
        env.server_addr().to_string(),
        "--http".into(),
        format!("127.0.0.1:{}", env.ports.http()),
        "--rtp-ports".into(),
        format!("{lo}-{hi}"),
    ];
    let server = Server::launch(&env, env.dir.join("server.log"), &bin, args, &work, &[]);
    let log = server.log_text();
    assert!(
        log.contains("profile=default"),
        "built-in default profile:\n{log}"
    );
    assert!(
        log.contains(&format!("{base}/")) && log.contains("console"),
        "the console URL is logged:\n{log}"
    );
    assert!(
        log.contains("no accounts yet") && log.contains("admin create"),
        "how to make the first admin is logged:\n{log}"
    );
    assert!(
        work.join("screenpop.db").exists(),
        "SQLite store in the working folder"
    );
    assert!(
        work.join("recordings").is_dir(),
        "recordings folder in the working folder"
    );

    // `/` leads to the login page, which is served from the binary with its headers.
    let (status, hs, _) = get(&format!("{base}/"), &[]);
    assert_eq!((status, header(&hs, "location")), (303, "/login"));
    let (status, hs, body) = get(&format!("{base}/login"), &[]);
    assert_eq!(status, 200);
    assert!(header(&hs, "content-type").starts_with("text/html"));
    let csp = header(&hs, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&hs, "x-content-type-options"), "nosniff");
    assert!(body.contains("/assets/"), "{body}");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "nothing from outside"
    );
    // Assets carry validators: a second request with the ETag is 304.
    let script = body
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the login page loads a script");
    let (status, hs, _) = get(&format!("{base}{script}"), &[]);
    assert_eq!(status, 200, "{script}");
    assert!(header(&hs, "content-type").starts_with("text/javascript"));
    assert!(header(&hs, "cache-control").contains("max-age"));
    let etag = header(&hs, "etag").to_string();
    assert!(!etag.is_empty());
    let (status, _, _) = get(&format!("{base}{script}"), &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    // Not logged in: the desks send to the login page.
    let (status, hs, _) = get(&format!("{base}/agent"), &[]);
    assert_eq!(
        (status, header(&hs, "location")),
        (303, "/login?next=/agent")
    );

    // The README's way to make the first admin, from the same folder, while it runs.
    common::admin_create(&bin, &work, None, "admin", "first-admin-pw");
    let admin = Api::login(&base, "admin", "first-admin-pw");

    // An empty store has a default queue; a new agent joins it without being told.
    let (_, queues) = call(
        "GET",
        &format!("{base}/api/queues"),
        Some(&admin.token),
        None,
    );
    let default = queues["items"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["is_default"] == true))
        .cloned()
        .unwrap_or_else(|| panic!("a default queue: {queues}"));
    let phone_ports = Ports::allocate();
    let agent = admin.ok(
        "POST",
        "/api/agents",
        Some(json!({
            "username": "ann", "password": "ann-password", "display_name": "Ann",
            "sip_uri": format!("sip:ann@127.0.0.1:{}", phone_ports.agent_sip()),
        })),
    );
    assert_eq!(agent["queues"], json!([default["id"]]), "{agent}");
    let ann = Api::login(&base, "ann", "ann-password");
    let mut desk = Desktop::connect(&base, &ann.token, "ann");
    desk.set_state("available");
    desk.wait_for(
        |v| v["type"] == "agent.state" && v["state"] == "available",
        T,
    );

    // A call from loopback goes through the queues and pops on Ann's desktop.
    let mut phone = env.agent_phone("ann-phone", phone_ports, "uas_answer.xml", &[]);
    let mut trunk = env.trunk_from("2125550123", "uac_call_from.xml", &["-d", "2000"]);
    let offered = desk.wait_for(|v| v["type"] == "call.offered", T);
    assert_eq!(offered["queue"], default["name"], "{offered}");
    assert_eq!(offered["caller"]["number"], "+12125550123", "{offered}");
    assert_eq!(offered["agent_id"], ann.agent_id);
    desk.wait_for(|v| v["type"] == "call.answered", T);
    trunk.expect_success(Duration::from_secs(20));
    phone.expect_success(Duration::from_secs(20));
    desk.wait_for(|v| v["type"] == "call.ended", T);
}

/// `SCREENPOP_ADMIN_PASSWORD` on an empty store makes the first admin, and the log says so
/// instead of telling how to.
#[test]
fn admin_password_from_the_environment_makes_the_first_admin() {
    let env = Env::new("first_run_env_admin");
    let work = env.dir.join("empty");
    std::fs::create_dir_all(&work).unwrap();
    let (lo, hi) = env.ports.rtp_range();
    let args = vec![
        "serve".to_string(),
        "--sip".into(),
        env.server_addr().to_string(),
        "--http".into(),
        format!("127.0.0.1:{}", env.ports.http()),
        "--rtp-ports".into(),
        format!("{lo}-{hi}"),
    ];
    let server = Server::launch(
        &env,
        env.dir.join("server.log"),
        &server_binary(),
        args,
        &work,
        &[("SCREENPOP_ADMIN_PASSWORD", "env-admin-pass")],
    );
    let log = server.log_text();
    assert!(log.contains("first admin created"), "{log}");
    assert!(!log.contains("no accounts yet"), "{log}");
    let admin = Api::login(&env.http_base(), "admin", "env-admin-pass");
    let me = admin.ok("GET", "/api/me", None);
    assert_eq!(me["role"], "admin", "{me}");
}
