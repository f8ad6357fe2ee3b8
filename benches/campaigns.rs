//! Campaigns at size (issue 12): a broadcast to CAMP_CUSTOMERS customers (default 100,000) by
//! SMS to an SMS center over SMPP with a window of 10, then CAMP_CALLS (default 50) voice
//! greetings at once through a SIPp gateway.
//!
//!   cargo bench --bench campaigns -- sqlite      (or postgres)
//!
//! One `screenpop serve` on a fresh store seeded in bulk SQL (one phone per customer). Reported,
//! as JSON on stdout:
//!
//! - `preview_ms`: `GET /api/campaigns/{id}/preview` walking the whole audience (it plans every
//!   customer and shows ten);
//! - `plan_ms`: from "run now" to every attempt recorded (the run's planning in the runner);
//! - `sms_per_s`: submits the SMS center took per second, whole run and median of one-second
//!   samples, with `rate_per_second` at its maximum (1000) and `window = 10`;
//! - `delivered`: attempts marked delivered by the center's receipts at the end (must be all);
//! - `cpu_s_per_1000_sms`, `rss_mb` (the server's peak resident memory, VmHWM) and its
//!   resident memory at the end;
//! - voice: `peak_at_once` (greetings streaming at the same moment, seen at the RTP sink; must
//!   reach CAMP_CALLS), `answered`, and the correlation of a sample of the streams with the
//!   greeting (must be above 0.9), with the server's CPU over the greetings.
//!
//! Needs SIPp (`sip-tester`) for the voice part; the SMS center is the tests' own
//! (`tests/common/smsc.rs`, on rusmpp). Ports: HTTP 18180, SIP 15160, gateway 15170, RTP
//! 30000-30999.

#[path = "../tests/common/greeting.rs"]
mod greeting;
#[path = "../tests/common/pg_schema.rs"]
mod pg_schema;
#[path = "common/seed.rs"]
mod seed;
#[path = "../tests/common/smsc.rs"]
mod smsc;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const HTTP: u16 = 18180;
const SIP: u16 = 15160;
const GATEWAY: u16 = 15170;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn api(method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let url = format!("http://127.0.0.1:{HTTP}{path}");
    let req = ureq::request(method, &url)
        .timeout(Duration::from_secs(300))
        .set("Authorization", &format!("Bearer {token}"));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match resp {
        Ok(r) => r.into_json().expect("json"),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's CPU seconds (utime + stime) and resident memory now and at its peak, in MB.
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat, counted after the command's closing parenthesis.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let kind = std::env::args()
        .skip(1)
        .find(|a| a == "sqlite" || a == "postgres")
        .unwrap_or_else(|| "sqlite".into());
    let customers = env_or("CAMP_CUSTOMERS", 100_000);
    let calls = env_or("CAMP_CALLS", 50);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("screenpop-camp-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // A PostgreSQL run has a schema of its own, dropped at the end.
    let mut schema_of_run: Option<(String, String)> = None;
    let url = match kind.as_str() {
        "postgres" => {
            let base = pg_schema::base_url();
            let (url, schema) = rt.block_on(pg_schema::create(&base, "camp_bench"));
            schema_of_run = Some((base, schema));
            url
        }
        _ => format!("sqlite://{}", work.join("camp.db").display()),
    };
    let seeded = Instant::now();
    rt.block_on(async {
        let store = screenpop::store::Store::connect(&url).await.expect("store");
        store.migrate().await.expect("migrate");
        seed::seed(&store, customers).await;
        screenpop::server::create_admin(&store, "admin", "Admin", "bench-admin-pw")
            .await
            .expect("admin");
    });
    eprintln!(
        "seeded {customers} customers in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );

    let smsc = smsc::Smsc::start("bench-pw", 0, 0);
    std::fs::write(
        work.join("bench.toml"),
        format!(
            "name = \"camp-bench\"\ndefault_region = \"US\"\n\
             [outbound]\nuri = \"sip:{{number}}@127.0.0.1:{GATEWAY}\"\nusername = \"acct\"\n\
             password = \"gwpass\"\ncaller_id = \"+12015550100\"\nallow = [\"+1*\"]\n\
             [sms]\nvia = \"smpp\"\nsender = \"95555\"\n\
             [sms.smpp]\naddress = \"{}\"\nsystem_id = \"bench\"\npassword = \"bench-pw\"\nwindow = 10\n\
             [trust]\ncidrs = [\"127.0.0.0/8\"]\n",
            smsc.addr
        ),
    )
    .expect("profile");
    let log = std::fs::File::create(work.join("server.log")).expect("log");
    let server = Reaped(
        Command::new(
            std::env::var_os("SCREENPOP_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_screenpop").into()),
        )
        .args(["serve", "--sip", &format!("127.0.0.1:{SIP}")])
        .args(["--http", &format!("127.0.0.1:{HTTP}")])
        .args(["--database", &url, "--profile", "bench.toml"])
        .args(["--recordings", "rec", "--rtp-ports", "30000-30999"])
        .env("RUST_LOG", "info,sqlx=warn")
        .current_dir(&work)
        .stderr(Stdio::from(log))
        .spawn()
        .expect("server"),
    );
    let pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", HTTP)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start; see {}",
            work.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let login = ureq::post(&format!("http://127.0.0.1:{HTTP}/api/login"))
        .send_json(json!({"username": "admin", "password": "bench-admin-pw"}))
        .expect("login")
        .into_json::<Value>()
        .expect("json");
    let token = login["token"].as_str().expect("token").to_string();

    // ---- SMS broadcast to everyone.
    let c = api(
        "POST",
        "/api/campaigns",
        &token,
        Some(
            json!({"name": "Store move", "kind": "broadcast", "channel": "sms",
            "template": "{name}, our store moves to 12 Main St. on Monday. Reply STOP to opt out.",
            "schedule": {"repeat": "once", "at": "2099-01-01T09:00:00Z", "tz": "UTC"},
            "rate_per_second": 1000, "retries": 0}),
        ),
    );
    let id = c["id"].as_i64().expect("id");
    let t = Instant::now();
    let p = api(
        "GET",
        &format!("/api/campaigns/{id}/preview?limit=10"),
        &token,
        None,
    );
    let preview_ms = t.elapsed().as_millis();
    assert_eq!(p["sms"].as_u64(), Some(customers), "{}", p["sms"]);
    eprintln!("preview of {customers}: {preview_ms} ms");

    let (cpu0, _, _) = usage(pid);
    let started = Instant::now();
    api(
        "POST",
        &format!("/api/campaigns/{id}/start"),
        &token,
        Some(json!({"run_now": true})),
    );
    let submitted = || smsc.log.lock().map(|l| l.submits.len()).unwrap_or(0) as u64;
    let mut plan_ms = None;
    let mut first_submit = None;
    let mut samples = Vec::new();
    let mut last = (Instant::now(), 0u64);
    let mut peak_rss: f64 = 0.0;
    let all_sent = loop {
        std::thread::sleep(Duration::from_millis(250));
        let n = submitted();
        if n > 0 && first_submit.is_none() {
            first_submit = Some(Instant::now());
        }
        if last.0.elapsed() >= Duration::from_secs(1) {
            samples.push((n - last.1) as f64 / last.0.elapsed().as_secs_f64());
            last = (Instant::now(), n);
        }
        peak_rss = peak_rss.max(usage(pid).1);
        if plan_ms.is_none() {
            let v = api("GET", &format!("/api/campaigns/{id}"), &token, None);
            if v["progress"]["total"].as_u64() == Some(customers) {
                plan_ms = Some(started.elapsed().as_millis());
            }
        }
        if n >= customers {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "only {n} of {customers} sent in 30 minutes; see {}",
            work.display()
        );
    };
    let (cpu1, _, _) = usage(pid);
    let send_secs = all_sent
        .duration_since(first_submit.unwrap_or(started))
        .as_secs_f64();
    // The receipts settle every attempt.
    let done = loop {
        let v = api("GET", &format!("/api/campaigns/{id}"), &token, None);
        if v["state"] == "done" && v["progress"]["delivered"].as_u64() == Some(customers) {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2400),
            "not all delivered: {}",
            v["progress"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (cpu2, rss_end, hwm) = usage(pid);
    let sms = json!({
        "customers": customers,
        "preview_ms": preview_ms,
        "plan_ms": plan_ms,
        "send_s": (send_secs * 10.0).round() / 10.0,
        "sms_per_s": (customers as f64 / send_secs).round(),
        "sms_per_s_median_1s": median(samples.clone()).round(),
        "delivered": done["progress"]["delivered"],
        "cpu_s_sending": ((cpu1 - cpu0) * 100.0).round() / 100.0,
        "cpu_s_per_1000_sms": ((cpu2 - cpu0) / customers as f64 * 1000.0 * 1000.0).round() / 1000.0,
        "rss_mb_peak": hwm.max(peak_rss).round(),
        "rss_mb_end": rss_end.round(),
    });
    eprintln!("sms: {sms}");

    // ---- Voice greetings, all at once.
    let wav = work.join("greeting.wav");
    greeting::write_wav(&wav, 16_000, &greeting::tones(16_000, 2.5));
    let (sink_port, stop, collector) = greeting::rtp_sink();
    let gateway = Reaped(
        Command::new("sipp")
            .args([
                "-sf",
                &root
                    .join("tests/sipp/uas_voice_gateway.xml")
                    .display()
                    .to_string(),
            ])
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &GATEWAY.to_string(),
                "-mp",
                "15180",
            ])
            .args([
                "-m",
                &calls.to_string(),
                "-key",
                "sink_port",
                &sink_port.to_string(),
            ])
            .args(["-timeout", "300s", "-nostdin"])
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (apt install sip-tester)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut ids = Vec::new();
    for i in 0..calls {
        let c = api(
            "POST",
            "/api/customers",
            &token,
            Some(json!({"name": format!("Listener {i}"), "tags": ["greet"],
                "phones": [{"number": format!("+1201555{:04}", 1000 + i)}]})),
        );
        ids.push(c["id"].as_i64().expect("id"));
    }
    let v = api(
        "POST",
        "/api/campaigns",
        &token,
        Some(
            json!({"name": "Greetings", "kind": "broadcast", "channel": "voice",
            "audio": "greeting.wav", "audience": {"tags": ["greet"]},
            "schedule": {"repeat": "once", "at": "2099-01-01T09:00:00Z", "tz": "UTC"},
            "rate_per_second": calls, "max_calls": calls, "retries": 0}),
        ),
    );
    let vid = v["id"].as_i64().expect("id");
    let (vcpu0, _, _) = usage(pid);
    let vstart = Instant::now();
    api(
        "POST",
        &format!("/api/campaigns/{vid}/start"),
        &token,
        Some(json!({"run_now": true})),
    );
    let vdone = loop {
        std::thread::sleep(Duration::from_millis(500));
        let v = api("GET", &format!("/api/campaigns/{vid}"), &token, None);
        if v["state"] == "done" {
            break v;
        }
        assert!(
            vstart.elapsed() < Duration::from_secs(120),
            "greetings: {}",
            v["progress"]
        );
    };
    let voice_secs = vstart.elapsed().as_secs_f64();
    let (vcpu1, _, _) = usage(pid);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let packets = collector.join().expect("sink");
    drop(gateway);
    let mut streams: std::collections::BTreeMap<std::net::SocketAddr, Vec<(Instant, Vec<u8>)>> =
        Default::default();
    for t in packets {
        if t.packet.len() > 12 {
            streams.entry(t.from).or_default().push((t.at, t.packet));
        }
    }
    let spans: Vec<(Instant, Instant)> = streams
        .values()
        .map(|s| (s[0].0, s[s.len() - 1].0))
        .collect();
    let peak = spans
        .iter()
        .map(|(a, _)| spans.iter().filter(|(s, e)| s <= a && a <= e).count())
        .max()
        .unwrap_or(0);
    let want = greeting::tones(8_000, 2.5);
    let sample: Vec<f64> = streams
        .values()
        .step_by((streams.len() / 5).max(1))
        .take(5)
        .map(|s| {
            let first = u16::from_be_bytes([s[0].1[2], s[0].1[3]]);
            let mut s = s.clone();
            s.sort_by_key(|(_, p)| u16::from_be_bytes([p[2], p[3]]).wrapping_sub(first));
            let pcm: Vec<f64> = s
                .iter()
                .flat_map(|(_, p)| {
                    p[12..]
                        .iter()
                        .map(|&b| greeting::ulaw_to_linear(b) as f64 / 32768.0)
                })
                .collect();
            (greeting::best_correlation(&pcm, &want, 160) * 1000.0).round() / 1000.0
        })
        .collect();
    let voice = json!({
        "calls": calls,
        "answered": vdone["progress"]["answered"],
        "streams": streams.len(),
        "peak_at_once": peak,
        "correlation_sample": sample,
        "seconds": (voice_secs * 10.0).round() / 10.0,
        "cpu_s": ((vcpu1 - vcpu0) * 100.0).round() / 100.0,
    });
    println!("{}", json!({"store": kind, "sms": sms, "voice": voice}));
    assert_eq!(
        vdone["progress"]["answered"].as_u64(),
        Some(calls),
        "{voice}"
    );
    assert!(peak as u64 >= calls, "not all at once: {voice}");
    assert!(sample.iter().all(|r| *r > 0.9), "greeting audio: {voice}");
    drop(server);
    if let Some((base, schema)) = schema_of_run {
        if let Err(e) = rt.block_on(pg_schema::drop(&base, &schema)) {
            eprintln!("{e}");
        }
    }
    if std::env::var_os("CAMP_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("kept {}", work.display());
    }
}
