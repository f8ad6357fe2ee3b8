//! Screen-pop latency under load (issues 3 and 13), taken two ways in the same run:
//!
//! - from outside, as the agent sees it: SIPp's INVITE leaving the trunk (the send time in SIPp's
//!   message trace) to the `call.offered` frame for that caller read off the desktop's
//!   WebSocket (stamped by the desktop thread the moment `read` returns it);
//! - inside screenpop: the INVITE coming off its SIP socket to the frame written (its
//!   `screen-pop written latency_us=…` log lines).
//!
//! SIPp's stamp is its event loop's clock around the send: it may be a fraction of a
//! millisecond off either way (on a loaded machine a pop has come out 0.12 ms "before" its
//! INVITE). The two figures come from the same run, so they can be compared.
//!
//!   cargo bench --bench pop_latency -- sqlite      (or postgres)
//!
//! Setup: a store seeded with POP_CUSTOMERS customers (default 1,000,000, each with a phone),
//! POP_DESKTOPS agents (default 200), each with a desktop connected over WebSocket and
//! available; SIPp as the trunk places calls from random customers at POP_RATE calls per second
//! (default 50) for POP_SECONDS (default 60), each bridged to a SIPp agent phone, relayed with
//! RTP both ways and recorded, held one second. Prints p50/p90/p99/max and the counts as JSON.
//!
//! Real pages (issue 8): with POP_BROWSERS=N (default 0) the first N agents are the agent page
//! `/agent` in headless Chromium (`bench/page_pop.mjs`, needs `npm ci` in `tests/browser`) instead
//! of WebSocket clients; the report then has the time from the INVITE (the pop's `offered_at`,
//! stamped when the INVITE arrives) to the caller's name painted in the page, measured in the
//! page against the same clock. The server's CPU (utime+stime from /proc) over the load window is reported too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

#[path = "../tests/common/pg_schema.rs"]
mod pg_schema;
#[path = "common/seed.rs"]
mod seed;
#[path = "../tests/common/sipp_log.rs"]
#[allow(dead_code)]
mod sipp_log;
use seed::seed;
use sipp_log::{clock_of, parse_message_log};

const SIP: u16 = 15060;
const HTTP: u16 = 18080;
const PHONE: u16 = 15090;
const TRUNK: u16 = 15070;
const DIALED: &str = "8005550100";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn api(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let url = format!("http://127.0.0.1:{HTTP}{path}");
    let mut req = ureq::request(method, &url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match resp {
        Ok(r) => r.into_json().expect("json"),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn silence(path: &Path) {
    // Ten seconds of G.711 u-law silence for SIPp to loop as RTP.
    std::fs::write(path, vec![0xFFu8; 80_000]).expect("write audio");
}

/// A child process killed when dropped, so a failed run leaves no server holding the ports.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sipp(dir: &Path, args: &[String]) -> Child {
    Command::new("sipp")
        .args(args)
        .current_dir(dir)
        // The message trace's times are local: UTC makes them epoch times.
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (apt install sip-tester)")
}

/// When SIPp first sent each call's INVITE (seconds since midnight UTC) by the caller's number
/// (the From user), in the order sent. The pop names the call by screenpop's own key, not the
/// SIP Call-ID, so calls are matched to pops by caller: each call's number is its own, and
/// should a number come twice the calls and the pops pair up in order.
fn invites_sent(trace: &str) -> HashMap<String, VecDeque<f64>> {
    let mut seen = HashSet::new();
    let mut sent: HashMap<String, VecDeque<f64>> = HashMap::new();
    for m in parse_message_log(trace) {
        if !(m.sent && m.first_line.starts_with("INVITE ")) {
            continue;
        }
        let header = |name: &str| {
            m.text
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
        };
        let (Some(id), Some(from)) = (header("Call-ID:"), header("From:")) else {
            continue;
        };
        let Some(number) = from
            .split_once("sip:")
            .and_then(|(_, uri)| uri.split_once('@'))
            .map(|(user, _)| user.to_string())
        else {
            continue;
        };
        // A retransmission keeps its first send time.
        if seen.insert(id.to_string()) {
            sent.entry(number).or_default().push_back(m.time);
        }
    }
    sent
}

fn main() {
    let kind = std::env::args()
        .skip(1)
        .find(|a| a == "sqlite" || a == "postgres")
        .unwrap_or_else(|| "sqlite".into());
    let customers = env_or("POP_CUSTOMERS", 1_000_000);
    let desktops = env_or("POP_DESKTOPS", 200);
    let rate = env_or("POP_RATE", 50);
    let seconds = env_or("POP_SECONDS", 60);
    let browsers = env_or("POP_BROWSERS", 0).min(desktops);
    let calls = rate * seconds;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("screenpop-pop-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The store. A PostgreSQL run has a schema of its own, dropped at the end.
    let mut schema_of_run: Option<(String, String)> = None;
    let url = match kind.as_str() {
        "postgres" => {
            let base = pg_schema::base_url();
            let (url, schema) = rt.block_on(pg_schema::create(&base, "pop_bench"));
            schema_of_run = Some((base, schema));
            url
        }
        _ => format!("sqlite://{}", work.join("pop.db").display()),
    };
    rt.block_on(async {
        let store = screenpop::store::Store::connect(&url).await.expect("store");
        store.migrate().await.expect("migrate");
        seed(&store, customers).await;
        screenpop::server::create_admin(&store, "admin", "Admin", "bench-admin-pw")
            .await
            .expect("admin");
    });

    // The server.
    std::fs::write(
        work.join("bench.toml"),
        "name = \"pop-bench\"\ndefault_region = \"US\"\n[trust]\ncidrs = [\"127.0.0.0/8\"]\n\
         [[trunks]]\nname = \"sipp\"\ncidrs = [\"127.0.0.0/8\"]\n",
    )
    .expect("profile");
    let log = std::fs::File::create(work.join("server.log")).expect("log");
    let mut server = Reaped(
        // SCREENPOP_BIN compares another build (e.g. the previous commit's) on the same load.
        Command::new(
            std::env::var_os("SCREENPOP_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_screenpop").into()),
        )
        .args(["serve", "--sip", &format!("127.0.0.1:{SIP}")])
        .args(["--http", &format!("127.0.0.1:{HTTP}")])
        .args(["--database", &url, "--profile", "bench.toml"])
        .args(["--recordings", "rec", "--rtp-ports", "20000-29999"])
        .env("RUST_LOG", "info,sqlx=warn")
        .current_dir(&work)
        .stderr(Stdio::from(log))
        .spawn()
        .expect("server"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", HTTP)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start; see {}",
            work.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Something answering on the port is not enough: it must be this server.
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(status)) = server.0.try_wait() {
        panic!(
            "screenpop exited ({status}); is another one on port {HTTP}? see {}",
            work.display()
        );
    }

    // Agents and their desktops.
    let admin = api(
        "POST",
        "/api/login",
        None,
        Some(json!({"username": "admin", "password": "bench-admin-pw"})),
    );
    let admin = admin["token"].as_str().expect("token").to_string();
    let q = api(
        "POST",
        "/api/queues",
        Some(&admin),
        Some(
            json!({"name": "main", "dialed_numbers": [DIALED], "is_default": true,
                    "ring_timeout_secs": 10, "max_wait_secs": 60, "wrap_up_secs": 0}),
        ),
    );
    let queue = q["id"].as_i64().expect("queue");
    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicUsize::new(0));
    // (caller's number, when) of each `call.offered` frame as a desktop read it.
    let received: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let ready = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    let mut page_users = Vec::new();
    for i in 0..desktops {
        let user = format!("agent{i:03}");
        api(
            "POST",
            "/api/agents",
            Some(&admin),
            Some(
                json!({"username": user, "password": "agent-password", "display_name": user,
                        "sip_uri": format!("sip:{user}@127.0.0.1:{PHONE}"), "queues": [queue]}),
            ),
        );
        let login = api(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": user, "password": "agent-password"})),
        );
        let token = login["token"].as_str().expect("token").to_string();
        if i < browsers {
            page_users.push(json!({"username": user, "password": "agent-password"}));
            continue;
        }
        let (stop, offered, ready) = (stop.clone(), offered.clone(), ready.clone());
        let received = received.clone();
        threads.push(std::thread::spawn(move || {
            let stream = TcpStream::connect(("127.0.0.1", HTTP)).expect("ws connect");
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok();
            let url = format!("ws://127.0.0.1:{HTTP}/ws?token={token}");
            let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("ws");
            ws.send(tungstenite::Message::Text(
                r#"{"type":"set_state","state":"available"}"#.into(),
            ))
            .expect("set_state");
            ready.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                let frame = ws.read();
                let at = SystemTime::now();
                match frame {
                    Ok(tungstenite::Message::Text(t))
                        if t.contains("\"type\":\"call.offered\"") =>
                    {
                        offered.fetch_add(1, Ordering::SeqCst);
                        let number = serde_json::from_str::<Value>(&t)
                            .ok()
                            .and_then(|v| v["caller"]["number"].as_str().map(str::to_string));
                        if let Some(number) = number {
                            received.lock().expect("received").push((number, at));
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(_)) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    while ready.load(Ordering::SeqCst) < (desktops - browsers) as usize {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut pages = (browsers > 0).then(|| {
        let mut node = Command::new("node")
            .arg(root.join("bench/page_pop.mjs"))
            .env(
                "PAGE_POP_CONFIG",
                json!({"base": format!("http://127.0.0.1:{HTTP}"), "users": page_users})
                    .to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node bench/page_pop.mjs (npm ci in tests/browser)");
        let mut out = std::io::BufReader::new(node.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("page_pop");
        assert_eq!(line.trim(), "READY", "the pages did not come up");
        (node, out)
    });
    eprintln!("{desktops} agents available on their desktops ({browsers} in Chromium)");
    let cpu = |pid: u32| -> f64 {
        // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 Hz).
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                let u: f64 = rest.get(11)?.parse().ok()?;
                let k: f64 = rest.get(12)?.parse().ok()?;
                Some((u + k) / 100.0)
            })
            .unwrap_or(f64::NAN)
    };
    let cpu_before = cpu(server.0.id());

    // SIPp: the agents' phone and the trunk.
    silence(&work.join("caller_600hz.ulaw"));
    silence(&work.join("agent_1500hz.ulaw"));
    let uac = std::fs::read_to_string(root.join("tests/sipp/uac_call_from.xml"))
        .expect("scenario")
        .replace("[caller]", "[field0]");
    std::fs::write(work.join("uac.xml"), uac).expect("scenario");
    std::fs::copy(root.join("tests/sipp/uas_answer.xml"), work.join("uas.xml")).expect("scenario");
    let mut csv = std::fs::File::create(work.join("callers.csv")).expect("csv");
    // Random customers, each called once while there are enough (the pops are matched to the
    // INVITEs by caller).
    writeln!(csv, "SEQUENTIAL").expect("csv");
    let mut drawn = HashSet::new();
    for _ in 0..calls.min(100_000) {
        let id = loop {
            let id = 1 + rand::random::<u64>() % customers.max(1);
            if drawn.insert(id) || drawn.len() as u64 >= customers {
                break id;
            }
        };
        writeln!(csv, "+1415{};", 2_000_000 + id).expect("csv");
    }
    drop(csv);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut phone = sipp(
        &work,
        &s(&[
            "-sf",
            "uas.xml",
            "-p",
            &PHONE.to_string(),
            "-mp",
            "40000",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-bind_local",
            "-nostdin",
            "-trace_stat",
            "-stf",
            "phone_stat.csv",
        ]),
    );
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut trunk = sipp(
        &work,
        &s(&[
            "-trace_msg",
            "-message_file",
            "trunk_msg.log",
            &format!("127.0.0.1:{SIP}"),
            "-sf",
            "uac.xml",
            "-inf",
            "callers.csv",
            "-p",
            &TRUNK.to_string(),
            "-mp",
            "50000",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-bind_local",
            "-s",
            DIALED,
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
            "-d",
            "1000",
            "-nostdin",
            "-timeout",
            &format!("{}s", seconds + 60),
            "-trace_stat",
            "-stf",
            "trunk_stat.csv",
        ]),
    );
    let status = trunk.wait().expect("trunk");
    let elapsed = started.elapsed();
    let server_cpu = cpu(server.0.id()) - cpu_before;
    let page_pops: Vec<Value> = match pages.as_mut() {
        Some((node, out)) => {
            std::thread::sleep(Duration::from_secs(2));
            writeln!(node.stdin.as_mut().expect("stdin"), "STOP").expect("stop pages");
            let mut line = String::new();
            std::io::BufRead::read_line(out, &mut line).expect("page_pop result");
            let _ = node.wait();
            let v: Value = line
                .trim()
                .strip_prefix("RESULT ")
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            v["pops"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    };
    let stamp = |v: &Value, k: &str| -> Option<f64> {
        let ms = screenpop::time::parse_rfc3339_ms(v[k].as_str()?)?;
        Some(ms as f64)
    };
    let page_lat = |from: &str| -> Value {
        let mut d: Vec<f64> = page_pops
            .iter()
            .filter_map(|p| Some(p["painted_ms"].as_f64()? - stamp(p, from)?))
            .collect();
        d.sort_by(f64::total_cmp);
        let mut q = quantiles(&d);
        q["n"] = json!(d.len());
        q
    };
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let _ = phone.kill();
    let _ = phone.wait();
    drop(server);

    // The latencies screenpop logged, and the store's share (matching the caller and reading
    // the card).
    let text = std::fs::read_to_string(work.join("server.log")).expect("server log");
    let lat = logged_ms(&text, "screen-pop written", "latency_us=");
    let lookups = logged_ms(&text, "caller looked up", "lookup_us=");
    let answered = text.lines().filter(|l| l.contains(" answered")).count();

    // The same pops from outside: SIPp's INVITE sent to the frame read by the desktop.
    let trace = std::fs::read_to_string(work.join("trunk_msg.log")).unwrap_or_default();
    let mut sent = invites_sent(&trace);
    let invites: usize = sent.values().map(VecDeque::len).sum();
    let mut pops = received.lock().expect("received").clone();
    pops.sort_by_key(|(_, at)| *at);
    let mut outside: Vec<f64> = pops
        .iter()
        .filter_map(|(number, at)| {
            let invite = sent.get_mut(number)?.pop_front()?;
            // Times of day: a run may cross midnight.
            let secs = match clock_of(*at) - invite {
                d if d < -43_200.0 => d + 86_400.0,
                d => d,
            };
            // To the µs SIPp logs.
            Some((secs * 1e6).round() / 1000.0)
        })
        .collect();
    outside.sort_by(f64::total_cmp);
    let report = json!({
        "database": kind,
        "customers": customers,
        "desktops": desktops,
        "rate_cps": rate,
        "calls_placed": calls,
        "sipp_exit": status.code(),
        "load_seconds": elapsed.as_secs_f64(),
        "pops_written": lat.len(),
        "pops_received_by_desktops": offered.load(Ordering::SeqCst),
        "calls_answered": answered,
        "invites_sent": invites,
        "pops_timed_from_outside": outside.len(),
        "outside_invite_to_frame_read_ms":
            quantiles(&outside),
        "inside_invite_to_frame_written_ms":
            quantiles(&lat),
        "inside_caller_lookup_ms":
            quantiles(&lookups),
        "browser_pages": browsers,
        "page_invite_to_painted_ms": page_lat("offered_at"),
        "server_cpu_seconds": server_cpu,
        "server_cpu_share_of_one_core": server_cpu / elapsed.as_secs_f64(),
        "work_dir": work.display().to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    // Its 50,000 customers and its calls would stay in the test database run after run.
    if let Some((base, schema)) = schema_of_run {
        if let Err(e) = rt.block_on(pg_schema::drop(&base, &schema)) {
            eprintln!("{e}");
        }
    }
}

/// The `key=` microseconds of the server's log lines saying `what`, in ms, sorted.
fn logged_ms(log: &str, what: &str, key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = log
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split(key).nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|us| us as f64 / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// p50, p90, p99 and max of sorted values (NaN when there are none).
fn quantiles(sorted: &[f64]) -> Value {
    let at = |p: f64| {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(i).copied().unwrap_or(f64::NAN)
    };
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0)})
}
