//! Campaigns end to end: screenpop sends SMS greetings and broadcasts as SIP MESSAGE through a
//! SIPp gateway that challenges every message (`uas_sms_gateway.xml`), on SQLite and on the
//! PostgreSQL server of this machine, across a restart; a customer's "TD" reply (SIPp,
//! `uac_sms_reply.xml`) opts them out.

mod common;
#[path = "common/pg_schema.rs"]
#[allow(dead_code)] // base_url: this test reaches PostgreSQL by its socket
mod pg_schema;

use std::time::{Duration, Instant};

use common::desk::{is, Api, Desktop};
use common::greeting::{self, Taken};
use common::*;
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-pass-1";
const ZONE: &str = "Asia/Shanghai";

/// This machine's PostgreSQL through its Unix socket: the test runs inside the loopback-only
/// network namespace (it sends SIP), which a socket file crosses and 127.0.0.1:5432 does not.
fn pg_url() -> String {
    std::env::var("SCREENPOP_TEST_POSTGRES_SOCKET").unwrap_or_else(|_| {
        "postgres://postgres@localhost/test?host=/var/run/postgresql".to_string()
    })
}

/// A fresh schema on the test PostgreSQL: the URL whose search_path is that schema, and its name.
fn postgres_database(tag: &str) -> (String, String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(pg_schema::create(&pg_url(), tag))
}

/// Today in the campaigns' zone, as `YYYY-MM-DD`, and another day that is not today.
fn today() -> (String, String) {
    let tz = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let d = jiff::Timestamp::now().to_zoned_datetime(tz).date();
    let other = d.checked_add(jiff::Span::new().days(40)).expect("date");
    (d.to_string(), other.to_string())
}

/// The same month and day `years` earlier (a birthday); a multiple of 4 keeps 29 February.
fn years_ago(day: &str, years: i16) -> String {
    assert_eq!(years % 4, 0);
    let d: jiff::civil::Date = day.parse().expect("date");
    jiff::civil::date(d.year() - years, d.month(), d.day()).to_string()
}

/// Today's date in the lunar calendar, as a record would keep it (a lunar birthday); `None`
/// in a leap month, where no birthday is kept (they are kept in the regular month).
fn lunar_today(day: &str) -> Option<String> {
    use chinese_lunisolar_calendar::{LunisolarDate, SolarDate};
    let d: jiff::civil::Date = day.parse().expect("date");
    let solar =
        SolarDate::from_ymd(d.year() as u16, d.month() as u8, d.day() as u8).expect("solar");
    let lunar = LunisolarDate::from_solar_date(solar).expect("lunar");
    (!lunar.to_lunar_month().is_leap_month()).then(|| {
        format!(
            "1980-{:02}-{:02}",
            lunar.to_lunar_month().to_u8(),
            lunar.to_lunar_day().to_u8()
        )
    })
}

/// MESSAGE requests the gateway took after a valid digest (the second of each pair), as
/// (Request-URI user, body); a retransmission (same Call-ID and CSeq) counts once.
fn delivered(gw: &Sipp) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    gw.messages()
        .into_iter()
        .filter(|m| !m.sent && m.first_line.starts_with("MESSAGE "))
        .filter(|m| m.text.contains("\nAuthorization: Digest"))
        .filter(|m| {
            let header = |name: &str| {
                m.text
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or_default()
                    .to_string()
            };
            seen.insert((header("Call-ID:"), header("CSeq:")))
        })
        .map(|m| {
            let user = m
                .first_line
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.strip_prefix("sip:"))
                .and_then(|u| u.split('@').next())
                .unwrap_or_default()
                .to_string();
            let body = m
                .text
                .split_once("\n\n")
                .map(|(_, b)| b.trim().to_string())
                .unwrap_or_default();
            (user, body)
        })
        .collect()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `screenpop campaign ARGS` on `database`; killed (and failed) after 60 s.
fn campaign_cli(env: &Env, database: &str, args: &[&str]) -> (bool, String) {
    let out_path = env.dir.join("campaign-cli.out");
    let out = std::fs::File::create(&out_path).expect("cli output");
    let mut child = std::process::Command::new(server_binary())
        .arg("campaign")
        .args(args)
        .args(["--database", database])
        .current_dir(&env.dir)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("screenpop campaign");
    let start = Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (ok, std::fs::read_to_string(&out_path).unwrap_or_default())
}

fn progress(admin: &Api, id: i64) -> Value {
    admin.ok("GET", &format!("/api/campaigns/{id}"), None)["progress"].clone()
}

/// The ACD profile with `[outbound]` through the SIPp gateway on `port` (credentials
/// acct/gwpass, caller ID +12015550100) and `[sms]` with replies taken from loopback.
fn write_gateway_profile(env: &Env, port: u16) {
    env.write_acd_profile();
    let profile = std::fs::read_to_string(&env.profile).expect("profile");
    let top = format!(
        "[outbound]\nuri = \"sip:{{number}}@127.0.0.1:{port}\"\nusername = \"acct\"\npassword = \"gwpass\"\n\
         caller_id = \"+12015550100\"\nallow = [\"+1*\", \"+86*\"]\n\n[sms]\nsender = \"95555\"\n\
         reply_from = [\"127.0.0.0/8\"]\n"
    );
    let profile = profile.replacen("\n[trust]", &format!("\n{top}\n[trust]"), 1);
    std::fs::write(&env.profile, profile).expect("profile");
}

fn sms_campaigns(tag: &str, database: Option<String>) {
    let Some(env) = Env::with_sipp(tag) else {
        return;
    };
    let gw_ports = Ports::allocate();
    write_gateway_profile(&env, gw_ports.agent_sip());
    let database =
        database.unwrap_or_else(|| format!("sqlite://{}", env.dir.join("screenpop.db").display()));
    admin_create(
        &server_binary(),
        &env.dir,
        Some(&database),
        "admin",
        ADMIN_PASSWORD,
    );
    let mut gw = env.agent_phone(
        "gateway",
        gw_ports,
        "uas_sms_gateway.xml",
        &["-m", "100", "-timeout", "180s"],
    );
    let mut server = env.start_server_on(&database);
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    let mut board = Desktop::connect(&env.http_base(), &admin.token, "supervisor");

    let alice = admin.ok(
        "POST",
        "/api/agents",
        Some(
            json!({"username": "alice", "password": "alice-password", "display_name": "Alice Wang",
                    "role": "agent", "sip_uri": "sip:alice@127.0.0.1:5999"}),
        ),
    )["id"]
        .as_i64()
        .expect("agent id");
    let (day, other_day) = today();
    let customer = |body: Value| {
        admin.ok("POST", "/api/customers", Some(body))["id"]
            .as_i64()
            .expect("id")
    };
    let wang = customer(
        json!({"name": "王小明", "birthday": years_ago(&day, 36), "assigned_agent_id": alice,
        "phones": [{"number": "+86 138 0013 8000", "label": "mobile"}], "tags": ["fair"]}),
    );
    // A lunar birthday today; on a day of a lunar leap month (no birthday is kept in one),
    // a Gregorian one instead.
    let (li_birthday, li_calendar) = match lunar_today(&day) {
        Some(d) => (d, "lunar"),
        None => (years_ago(&day, 40), "gregorian"),
    };
    let lunar = customer(
        json!({"name": "Li Lei", "birthday": li_birthday, "birthday_calendar": li_calendar,
        "phones": [{"number": "+1 201 555 0123"}], "tags": ["fair"]}),
    );
    let opted_out = customer(
        json!({"name": "Han Meimei", "birthday": years_ago(&day, 32), "opt_out_sms": true,
        "phones": [{"number": "+1 201 555 0150"}], "tags": ["fair"]}),
    );
    let not_today = customer(json!({"name": "Jim Green", "birthday": other_day,
        "phones": [{"number": "+1 201 555 0160"}], "tags": ["fair"]}));
    let unreachable = customer(json!({"name": "Kate King", "birthday": years_ago(&day, 24),
        "phones": [{"number": "+1 201 555 0480"}]}));

    // Refusals name the field, at save time.
    let birthday = json!({
        "name": "Birthday greetings", "kind": "birthday", "channel": "sms",
        "template": "{name}，祝您生日快乐！—— {agent}",
        "schedule": {"repeat": "daily", "at": "09:00", "tz": ZONE},
        "retries": 1, "retry_after_secs": 10, "rate_per_second": 50
    });
    let refused = |change: Value, field: &str| {
        let mut body = birthday.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, v) = admin.req("POST", "/api/campaigns", Some(&body));
        assert_eq!(status, 422, "{change} → {v}");
        assert_eq!(v["error"]["field"], field, "{change} → {v}");
    };
    refused(json!({"template": "Dear {nmae}"}), "template");
    refused(
        json!({"schedule": {"repeat": "once", "at": "2020-01-01T09:00:00+08:00", "tz": ZONE}}),
        "schedule.at",
    );
    refused(
        json!({"schedule": {"repeat": "daily", "at": "09:00", "tz": "Mars/Olympus"}}),
        "schedule.tz",
    );
    refused(
        json!({"template": "长".repeat(200), "max_sms_parts": 2}),
        "template",
    );
    refused(json!({"quiet_hours": "after dinner"}), "quiet_hours");
    let created = admin.ok("POST", "/api/campaigns", Some(birthday.clone()));
    let id = created["id"].as_i64().expect("campaign id");
    assert_eq!(created["state"], "draft");
    refused(json!({}), "name");

    // The preview: who gets what, nothing sent.
    let p = admin.ok("GET", &format!("/api/campaigns/{id}/preview"), None);
    assert_eq!(p["sms"], 3, "{p}");
    assert_eq!(p["skipped"], 1, "{p}");
    let item = |cid: i64| {
        p["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["customer_id"] == cid)
            .cloned()
    };
    assert_eq!(
        item(wang).expect("wang")["text"],
        "王小明，祝您生日快乐！—— Alice Wang"
    );
    assert_eq!(item(lunar).expect("lunar")["number"], "+12015550123");
    assert!(item(opted_out).expect("opted out")["skipped"]
        .as_str()
        .is_some_and(|s| s.contains("opted out")));
    assert!(item(not_today).is_none());
    let (ok, out) = campaign_cli(&env, &database, &["preview", "Birthday greetings"]);
    assert!(ok, "{out}");
    assert!(out.contains("王小明，祝您生日快乐！—— Alice Wang"), "{out}");
    assert!(out.contains("3 by SMS"), "{out}");
    assert!(delivered(&gw).is_empty(), "the preview sent nothing");

    // Run it now.
    admin.ok(
        "POST",
        &format!("/api/campaigns/{id}/start"),
        Some(json!({"run_now": true})),
    );
    board.wait_for(
        |e| is("campaign.progress")(e) && e["campaign_id"] == id && e["sent"] == 2,
        Duration::from_secs(20),
    );
    // The unreachable number is tried twice, 10 s apart, then given up.
    let p = wait_until("the campaign to finish", Duration::from_secs(40), || {
        let p = progress(&admin, id);
        (p["pending"] == 0 && p["sending"] == 0 && p["failed"] == 1).then_some(p)
    });
    assert_eq!(p["sent"], 2, "{p}");
    assert_eq!(p["skipped"], 1, "{p}");
    let first_total = p["total"].clone();
    let got = delivered(&gw);
    let to = |n: &str| {
        got.iter()
            .filter(|(u, _)| u == n)
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        to("+8613800138000"),
        vec!["王小明，祝您生日快乐！—— Alice Wang".to_string()],
        "{got:?}"
    );
    assert_eq!(
        to("+12015550123"),
        vec!["Li Lei，祝您生日快乐！——".to_string()],
        "{got:?}"
    );
    assert_eq!(to("+12015550480").len(), 2, "tried twice: {got:?}");
    assert!(
        to("+12015550150").is_empty() && to("+12015550160").is_empty(),
        "{got:?}"
    );
    let message = gw
        .messages()
        .into_iter()
        .find(|m| !m.sent && m.first_line.starts_with("MESSAGE sip:+8613800138000"))
        .expect("a MESSAGE");
    assert!(
        message
            .text
            .contains("Content-Type: text/plain;charset=UTF-8"),
        "{}",
        message.text
    );
    assert!(
        message.text.contains("<sip:95555@"),
        "the sender: {}",
        message.text
    );

    // Every try is a contact log on the customer; the attempt keeps the outcome.
    let logs = admin.ok("GET", &format!("/api/calls?customer_id={wang}"), None);
    let log = &logs["items"][0];
    assert_eq!(log["channel"], "sms", "{logs}");
    assert_eq!(log["campaign_id"], id, "{logs}");
    assert_eq!(log["result"], "sent", "{logs}");
    assert_eq!(log["direction"], "outbound", "{logs}");
    let logs = admin.ok(
        "GET",
        &format!("/api/calls?customer_id={unreachable}"),
        None,
    );
    assert_eq!(logs["items"].as_array().map(Vec::len), Some(2), "{logs}");
    assert_eq!(
        logs["items"][0]["result"], "failed: 480 Temporarily Unavailable",
        "{logs}"
    );
    let failed = admin.ok(
        "GET",
        &format!("/api/campaigns/{id}/attempts?status=failed"),
        None,
    );
    assert_eq!(failed["items"][0]["customer_id"], unreachable, "{failed}");
    assert_eq!(failed["items"][0]["tries"], 2, "{failed}");

    // A broadcast to the "fair" tag at 2 a second, paused mid-way, across a restart.
    let fair: Vec<i64> = (0..6)
        .map(|i| {
            customer(json!({"name": format!("Visitor {i}"), "tags": ["fair"],
            "phones": [{"number": format!("+1 201 555 07{i:02}")}]}))
        })
        .collect();
    let broadcast = admin.ok(
        "POST",
        "/api/campaigns",
        Some(
            json!({"name": "Fair invitation", "kind": "broadcast", "channel": "sms",
            "template": "{name}: see you at the fair, booth 12.",
            "audience": {"tags": ["fair"]},
            "schedule": {"repeat": "once", "at": "2099-01-01T09:00:00+08:00", "tz": ZONE},
            "rate_per_second": 2}),
        ),
    );
    let bid = broadcast["id"].as_i64().expect("id");
    admin.ok(
        "POST",
        &format!("/api/campaigns/{bid}/start"),
        Some(json!({"run_now": true})),
    );
    wait_until(
        "the broadcast to start sending",
        Duration::from_secs(10),
        || (progress(&admin, bid)["sent"].as_i64() >= Some(2)).then_some(()),
    );
    let paused = admin.ok("POST", &format!("/api/campaigns/{bid}/pause"), None);
    assert_eq!(paused["state"], "paused");
    let (status, v) = admin.req("POST", &format!("/api/campaigns/{bid}/pause"), None);
    assert_eq!(status, 409, "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    let sent_at_pause = progress(&admin, bid)["sent"].as_i64().expect("sent");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        progress(&admin, bid)["sent"].as_i64(),
        Some(sent_at_pause),
        "nothing is sent while paused"
    );
    assert!(sent_at_pause < 9, "paused before the end: {sent_at_pause}");

    server.kill9();
    drop(board);
    let _server = env.start_server_on(&database);
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    assert_eq!(
        admin.ok("GET", &format!("/api/campaigns/{bid}"), None)["state"],
        "paused",
        "the pause survives the restart"
    );
    admin.ok("POST", &format!("/api/campaigns/{bid}/resume"), None);
    let p = wait_until("the broadcast to finish", Duration::from_secs(20), || {
        let v = admin.ok("GET", &format!("/api/campaigns/{bid}"), None);
        (v["state"] == "done").then(|| v["progress"].clone())
    });
    // Ten with the tag: six visitors, Wang, Li, Jim, and Han, who opted out.
    assert_eq!(p["sent"], 9, "{p}");
    assert_eq!(p["skipped"], 1, "{p}");
    let got = delivered(&gw);
    for i in 0..6 {
        let n = format!("+120155507{i:02}");
        let bodies: Vec<&String> = got
            .iter()
            .filter(|(u, _)| *u == n)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(
            bodies,
            vec![&format!("Visitor {i}: see you at the fair, booth 12.")],
            "{n}: {got:?}"
        );
    }
    assert_eq!(fair.len(), 6);

    // Running the birthday campaign again (after the restart, from the CLI) and a second
    // birthday campaign greets nobody twice.
    let before = delivered(&gw).len();
    let (ok, out) = campaign_cli(&env, &database, &["run", "Birthday greetings", "--wait"]);
    assert!(ok, "{out}");
    let mut second = birthday.clone();
    second["name"] = "Birthday greetings, second".into();
    let sid = admin.ok("POST", "/api/campaigns", Some(second))["id"]
        .as_i64()
        .expect("id");
    admin.ok(
        "POST",
        &format!("/api/campaigns/{sid}/start"),
        Some(json!({"run_now": true})),
    );
    wait_until(
        "the second birthday run to be planned",
        Duration::from_secs(10),
        || {
            let v = admin.ok("GET", &format!("/api/campaigns/{sid}"), None);
            v["last_run_at"].as_str().map(|_| ())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    // Its run was recorded (Han's skip is a row of its own) and added no greeting.
    let p2 = progress(&admin, sid);
    assert_eq!(
        (
            p2["sent"].as_i64(),
            p2["skipped"].as_i64(),
            p2["total"].as_i64()
        ),
        (Some(0), Some(1), Some(1)),
        "{p2}"
    );
    assert_eq!(
        progress(&admin, id)["total"],
        first_total,
        "running the first campaign again added nothing"
    );
    assert_eq!(
        delivered(&gw).len(),
        before,
        "nobody was greeted twice: {:?}",
        delivered(&gw)
    );

    // A "TD" reply opts the customer out of SMS.
    let mut reply = env.trunk_from("+12015550123", "uac_sms_reply.xml", &["-key", "text", "TD"]);
    reply.expect_success(Duration::from_secs(10));
    wait_until("the opt-out", Duration::from_secs(5), || {
        let c = admin.ok("GET", &format!("/api/customers/{lunar}"), None);
        (c["opt_out_sms"] == true).then_some(())
    });
    let c = admin.ok("GET", &format!("/api/customers/{wang}"), None);
    assert_eq!(c["opt_out_sms"], false, "only the sender opted out");
    gw.kill();
}

#[test]
fn sms_campaigns_by_sip_message_on_sqlite() {
    sms_campaigns("campaigns_sqlite", None);
}

#[test]
fn sms_campaigns_by_sip_message_on_postgres() {
    let (url, schema) = postgres_database("campaigns");
    sms_campaigns("campaigns_pg", Some(url));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(pg_schema::drop(&pg_url(), &schema))
        .expect("drop schema");
}

/// SMS to an SMS center over SMPP (the test SMS center in `tests/common/smsc.rs`, on
/// `rusmpp`): the first bind is refused and retried, a Chinese greeting goes as UCS-2, a long
/// English broadcast as concatenated GSM 7-bit parts that reassemble to the text, a throttled
/// submit is sent again, each receipt marks its attempt delivered (and its contact log), and a
/// customer's "TD" sent back through the SMS center opts them out.
#[test]
fn sms_campaigns_by_smpp() {
    let env = Env::new("campaigns_smpp");
    let smsc = common::smsc::Smsc::start("smpp-pw", 1, 1);
    env.write_acd_profile();
    let profile = std::fs::read_to_string(&env.profile).expect("profile");
    let top = format!(
        "[sms]\nvia = \"smpp\"\nsender = \"95555\"\n\n[sms.smpp]\naddress = \"{}\"\n\
         system_id = \"screenpop\"\npassword = \"smpp-pw\"\nwindow = 10\nenquire_link_secs = 5\n",
        smsc.addr
    );
    let profile = profile.replacen("\n[trust]", &format!("\n{top}\n[trust]"), 1);
    std::fs::write(&env.profile, profile).expect("profile");
    let database = format!("sqlite://{}", env.dir.join("screenpop.db").display());
    admin_create(
        &server_binary(),
        &env.dir,
        Some(&database),
        "admin",
        ADMIN_PASSWORD,
    );
    let server = env.start_server_on(&database);
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    let (day, _) = today();
    let customer = |body: Value| {
        admin.ok("POST", "/api/customers", Some(body))["id"]
            .as_i64()
            .expect("id")
    };
    let wang = customer(json!({"name": "王小明", "birthday": years_ago(&day, 36),
        "phones": [{"number": "+86 138 0013 8000"}], "tags": ["news"]}));
    let ada = customer(json!({"name": "Ada Lovelace", "tags": ["news"],
        "phones": [{"number": "+1 201 555 0123"}]}));

    let birthday = admin.ok(
        "POST",
        "/api/campaigns",
        Some(
            json!({"name": "Birthdays", "kind": "birthday", "channel": "sms",
            "template": "{name}，祝您生日快乐！",
            "schedule": {"repeat": "daily", "at": "09:00", "tz": ZONE}}),
        ),
    );
    let bid = birthday["id"].as_i64().expect("id");
    admin.ok(
        "POST",
        &format!("/api/campaigns/{bid}/start"),
        Some(json!({"run_now": true})),
    );
    let news =
        "Dear {name}, our new branch opens on Monday at 9 in the morning. Bring this message \
                to the front desk for a free coffee and a chat with your advisor. We look forward \
                to seeing you there.";
    let broadcast = admin.ok(
        "POST",
        "/api/campaigns",
        Some(
            json!({"name": "News", "kind": "broadcast", "channel": "sms",
            "template": news, "audience": {"tags": ["news"]},
            "schedule": {"repeat": "once", "at": "2099-01-01T09:00:00+08:00", "tz": ZONE}}),
        ),
    );
    let nid = broadcast["id"].as_i64().expect("id");
    admin.ok(
        "POST",
        &format!("/api/campaigns/{nid}/start"),
        Some(json!({"run_now": true})),
    );

    // Every attempt delivered: the receipts came back and matched.
    for (id, n) in [(bid, 1), (nid, 2)] {
        wait_until("the receipts", Duration::from_secs(20), || {
            let p = progress(&admin, id);
            (p["delivered"] == n).then_some(())
        });
    }
    let log = smsc.log.lock().expect("log").binds.clone();
    assert_eq!(
        log.iter().map(|b| b.2).collect::<Vec<_>>(),
        [false, true],
        "the first bind refused, the next taken: {log:?}"
    );
    assert!(server
        .log_text()
        .contains("the SMS center refused the bind"));
    assert_eq!(smsc.log.lock().expect("log").throttled, 1);
    let birthday_text = "王小明，祝您生日快乐！".to_string();
    let long = news.replace("{name}", "Ada Lovelace");
    assert!(long.len() > 160);
    assert_eq!(
        smsc.texts_to("8613800138000").len(),
        2,
        "a greeting and the news"
    );
    assert!(smsc.texts_to("8613800138000").contains(&birthday_text));
    assert_eq!(smsc.texts_to("12015550123"), vec![long.clone()]);
    {
        let log = smsc.log.lock().expect("log");
        let to_ada: Vec<&common::smsc::Taken> = log
            .submits
            .iter()
            .filter(|t| t.to == "12015550123")
            .collect();
        assert_eq!(to_ada.len(), 2, "two concatenated parts");
        assert!(to_ada
            .iter()
            .all(|t| t.data_coding == 0 && t.esm_class & 0x40 != 0));
        let greeting = log
            .submits
            .iter()
            .find(|t| t.to == "8613800138000" && t.data_coding == 8)
            .expect("a UCS-2 submit");
        assert_eq!(greeting.from, "95555");
    }
    let logs = admin.ok("GET", &format!("/api/calls?customer_id={ada}"), None);
    assert_eq!(logs["items"][0]["result"], "delivered", "{logs}");

    // A reply through the SMS center opts the customer out.
    smsc.send_text("8613800138000", "退订");
    wait_until("the opt-out", Duration::from_secs(5), || {
        let c = admin.ok("GET", &format!("/api/customers/{wang}"), None);
        (c["opt_out_sms"] == true).then_some(())
    });
}

/// Voice greetings through a SIPp gateway that challenges every INVITE: answered customers
/// hear the campaign's recording (16 kHz WAV, sent as PCMU; checked by correlation with the
/// tones it holds) and are hung up on at its end, at most `max_calls` at once; a busy number
/// and one that never answers are tried again and given up; a customer opted out of calls is
/// skipped; every try is a contact log; a recording that cannot be read is refused when the
/// campaign is saved.
#[test]
fn voice_greetings_through_a_sipp_gateway() {
    let Some(env) = Env::with_sipp("campaigns_voice") else {
        return;
    };
    let gw_ports = Ports::allocate();
    write_gateway_profile(&env, gw_ports.agent_sip());
    let database = format!("sqlite://{}", env.dir.join("screenpop.db").display());
    admin_create(
        &server_binary(),
        &env.dir,
        Some(&database),
        "admin",
        ADMIN_PASSWORD,
    );
    let wav = env.dir.join("greeting.wav");
    greeting::write_wav(&wav, 16_000, &greeting::tones(16_000, 0.6));
    let not_wav = env.dir.join("notes.wav");
    std::fs::write(&not_wav, "meeting notes, not audio").expect("file");

    let (sink_port, stop_sink, sink) = greeting::rtp_sink();
    // 4 answered, the busy and the silent number twice each.
    let mut gw = env.agent_phone(
        "gateway",
        gw_ports,
        "uas_voice_gateway.xml",
        &[
            "-m",
            "8",
            "-key",
            "sink_port",
            &sink_port.to_string(),
            "-timeout",
            "120s",
        ],
    );
    let _server = env.start_server_on(&database);
    let admin = Api::login(&env.http_base(), "admin", ADMIN_PASSWORD);
    let customer = |body: Value| {
        admin.ok("POST", "/api/customers", Some(body))["id"]
            .as_i64()
            .expect("id")
    };
    let answering: Vec<i64> = (0..4)
        .map(|i| {
            customer(
                json!({"name": format!("Listener {i}"), "tags": ["vip-news"],
                "phones": [{"number": format!("+1 201 555 08{i:02}")}]}),
            )
        })
        .collect();
    let busy = customer(json!({"name": "Busy Bee", "tags": ["vip-news"],
        "phones": [{"number": "+1 201 555 0486"}]}));
    let silent = customer(json!({"name": "Nobody Home", "tags": ["vip-news"],
        "phones": [{"number": "+1 201 555 0408"}]}));
    let declined = customer(
        json!({"name": "No Calls", "tags": ["vip-news"], "opt_out_voice": true,
        "phones": [{"number": "+1 201 555 0499"}]}),
    );

    let spec = json!({
        "name": "VIP news by voice", "kind": "broadcast", "channel": "voice",
        "audio": "greeting.wav",
        "audience": {"tags": ["vip-news"]},
        "schedule": {"repeat": "once", "at": "2099-01-01T09:00:00+08:00", "tz": ZONE},
        "retries": 1, "retry_after_secs": 10, "ring_secs": 5, "max_calls": 2,
        "rate_per_second": 10
    });
    for (change, field) in [
        (json!({"audio": "notes.wav"}), "audio"),
        (json!({"audio": wav.display().to_string()}), "audio"),
        (json!({"audio": "../greeting.wav"}), "audio"),
        (json!({"audio": null}), "audio"),
        (json!({"ring_secs": 1}), "ring_secs"),
    ] {
        let mut body = spec.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, v) = admin.req("POST", "/api/campaigns", Some(&body));
        assert_eq!(status, 422, "{change} → {v}");
        assert_eq!(v["error"]["field"], field, "{change} → {v}");
    }
    let id = admin.ok("POST", "/api/campaigns", Some(spec))["id"]
        .as_i64()
        .expect("id");
    let p = admin.ok("GET", &format!("/api/campaigns/{id}/preview"), None);
    assert_eq!(
        (p["voice"].as_i64(), p["skipped"].as_i64()),
        (Some(6), Some(1)),
        "{p}"
    );

    let started = Instant::now();
    admin.ok(
        "POST",
        &format!("/api/campaigns/{id}/start"),
        Some(json!({"run_now": true})),
    );
    let p = wait_until(
        "the voice campaign to finish",
        Duration::from_secs(90),
        || {
            let v = admin.ok("GET", &format!("/api/campaigns/{id}"), None);
            (v["state"] == "done").then(|| v["progress"].clone())
        },
    );
    let took = started.elapsed();
    assert_eq!(
        (
            p["answered"].as_i64(),
            p["busy"].as_i64(),
            p["no_answer"].as_i64(),
            p["skipped"].as_i64()
        ),
        (Some(4), Some(1), Some(1), Some(1)),
        "{p}"
    );
    gw.expect_success(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    stop_sink.store(true, std::sync::atomic::Ordering::Relaxed);
    let taken = sink.join().expect("sink");

    // One stream per answered customer, each the whole greeting, in PCMU, by content.
    let mut streams: std::collections::BTreeMap<std::net::SocketAddr, Vec<&Taken>> =
        Default::default();
    for t in &taken {
        streams.entry(t.from).or_default().push(t);
    }
    assert_eq!(streams.len(), 4, "one stream per answered customer");
    let want = greeting::tones(8_000, 0.6);
    let mut spans = Vec::new();
    for (from, packets) in &streams {
        let mut pkts: Vec<&&Taken> = packets.iter().filter(|t| t.packet.len() > 12).collect();
        // In sequence order, counted from the first packet (a stream may wrap past 65535).
        let seq = |t: &Taken| u16::from_be_bytes([t.packet[2], t.packet[3]]);
        let first_seq = pkts
            .iter()
            .min_by_key(|t| t.at)
            .map(|t| seq(t))
            .unwrap_or(0);
        pkts.sort_by_key(|t| seq(t).wrapping_sub(first_seq));
        assert!(
            pkts.iter().all(|t| t.packet[1] & 0x7f == 0),
            "{from}: PCMU only"
        );
        // 2.4 s in 20 ms packets.
        assert!(
            (118..=122).contains(&pkts.len()),
            "{from}: {} packets",
            pkts.len()
        );
        let pcm: Vec<f64> = pkts
            .iter()
            .flat_map(|t| {
                t.packet[12..]
                    .iter()
                    .map(|&b| ulaw_to_linear(b) as f64 / 32768.0)
            })
            .collect();
        let r = greeting::best_correlation(&pcm, &want, 160);
        let wrong = greeting::best_correlation(&pcm, &want[4800..], 160);
        eprintln!("{from}: {} packets, correlation {r:.3} (against the greeting shifted by a tone: {wrong:.3})", pkts.len());
        assert!(
            wrong < 0.5,
            "{from}: the check tells one greeting from another ({wrong:.3})"
        );
        assert!(
            r > 0.9,
            "{from}: the greeting by content, correlation {r:.3}"
        );
        let first = pkts.iter().map(|t| t.at).min().expect("first");
        let last = pkts.iter().map(|t| t.at).max().expect("last");
        spans.push((first, last));
    }
    // At most max_calls (2) greetings at once.
    for (a, _) in &spans {
        let at_once = spans.iter().filter(|(s, e)| s <= a && a <= e).count();
        assert!(at_once <= 2, "{at_once} greetings at once");
    }
    // Hung up at the greeting's end (2.4 s after the ACK, not at the 5 s fallback).
    let msgs = gw.messages();
    let call_id = |m: &common::LoggedMessage| {
        m.text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID:"))
            .map(|v| v.trim().to_string())
    };
    let byes: Vec<&common::LoggedMessage> = msgs
        .iter()
        .filter(|m| !m.sent && m.first_line.starts_with("BYE "))
        .collect();
    assert_eq!(byes.len(), 4, "screenpop hung up each answered greeting");
    for bye in &byes {
        // The last ACK before the BYE acknowledges the 200 (an earlier one, the 401).
        let ack = msgs
            .iter()
            .filter(|m| {
                !m.sent
                    && m.first_line.starts_with("ACK ")
                    && call_id(m) == call_id(bye)
                    && m.time <= bye.time
            })
            .max_by(|a, b| a.time.total_cmp(&b.time))
            .expect("the ACK of the answered greeting");
        let talk = bye.time - ack.time;
        assert!(
            (2.2..3.4).contains(&talk),
            "BYE {talk:.2} s after the answer: {:?}",
            call_id(bye)
        );
    }
    let cancels = msgs
        .iter()
        .filter(|m| !m.sent && m.first_line.starts_with("CANCEL sip:+12015550408@"))
        .count();
    assert_eq!(cancels, 2, "the silent number rang out twice");
    assert!(
        took < Duration::from_secs(60),
        "retries 10 s apart: {took:?}"
    );

    // Every try is a contact log; the attempts keep their results.
    let logs = |cid: i64| {
        admin.ok("GET", &format!("/api/calls?customer_id={cid}"), None)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for cid in &answering {
        let l = logs(*cid);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0]["result"], "answered", "{l:?}");
        assert_eq!(l[0]["channel"], "voice", "{l:?}");
        assert_eq!(l[0]["campaign_id"], id, "{l:?}");
        assert!(l[0]["answered_at"].as_i64().is_some(), "{l:?}");
        assert_eq!(l[0]["talk_secs"], 2, "the 2.4 s greeting: {l:?}");
        assert_eq!(l[0]["disposition"], "answered", "{l:?}");
    }
    let l = logs(busy);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l.iter().all(|c| c["result"] == "busy"), "{l:?}");
    let l = logs(silent);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l.iter().all(|c| c["result"] == "no answer"), "{l:?}");
    assert!(logs(declined).is_empty());
    let a = admin.ok(
        "GET",
        &format!("/api/campaigns/{id}/attempts?status=busy"),
        None,
    );
    assert_eq!(a["items"][0]["customer_id"], busy, "{a}");
    assert_eq!(a["items"][0]["tries"], 2, "{a}");
    let a = admin.ok(
        "GET",
        &format!("/api/campaigns/{id}/attempts?status=skipped"),
        None,
    );
    assert!(
        a["items"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("voice")),
        "{a}"
    );
}
