//! Recording retention (issue 13, point 6) against a running server inside the loopback-only
//! namespace: real calls recorded by SIPp, aged in the store (the fake clock: their
//! `created_at` moved back), then `screenpop recordings expire`: a day short of the retention
//! nothing goes; a dry run two days ahead lists the call and touches nothing; archiving moves
//! the WAV and its call record, and the API plays it from the archive; deleting removes them,
//! the API answers 410, the contact log stays marked, and each removal is one audit entry. The
//! recordings' disk watch warns and sets its metric; the pages show it all in Chromium. A disk
//! that fills mid-call (a small tmpfs in the server's own mount namespace) leaves the call
//! going, the audio so far playable and the contact log saying the recording failed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::desk::Api;
use common::{Env, RecordingFiles};

const T: Duration = Duration::from_secs(20);
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An RFC 3339 moment `days` from now.
fn days_ahead(days: i64) -> String {
    let ms = now_ms() + days * DAY_MS;
    let secs = ms / 1000;
    // Civil date from days since the epoch (Howard Hinnant's algorithm), to stay dependency-free.
    let (z, rem) = (secs.div_euclid(86_400) + 719_468, secs.rem_euclid(86_400));
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A profile for the CLI with the server's trunk and `[retention]` as given.
fn cli_profile(env: &Env, name: &str, retention: &str) -> PathBuf {
    let server = std::fs::read_to_string(&env.profile).expect("profile");
    let head = server.split("[retention]").next().unwrap_or(&server);
    let path = env.dir.join(name);
    std::fs::write(&path, format!("{head}\n[retention]\n{retention}\n")).expect("write");
    path
}

/// Moves a recording `days` back in time in the server's store (what the days would do).
fn age(env: &Env, rec: i64, days: i64) {
    let url = format!("sqlite://{}", env.dir.join("screenpop.db").display());
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = screenpop::store::Store::connect(&url).await.expect("store");
            sqlx::query("UPDATE recordings SET created_at = created_at - $1 WHERE id = $2")
                .bind(days * DAY_MS)
                .bind(rec)
                .execute(store.pool())
                .await
                .expect("aged");
        });
}

fn expire_cmd(env: &Env, profile: &Path, as_of: Option<&str>, dry_run: bool) -> Command {
    let mut cmd = Command::new(common::server_binary());
    cmd.current_dir(&env.dir).args(["recordings", "expire"]);
    if let Some(t) = as_of {
        cmd.args(["--as-of", t]);
    }
    cmd.arg("--profile")
        .arg(profile)
        .arg("--recordings")
        .arg(&env.recordings)
        // The server's own store: sqlite://screenpop.db in the env's folder.
        .args(["--database", "sqlite://screenpop.db"]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd
}

/// Runs `screenpop recordings expire` on the server's database; returns the JSON report.
fn expire(env: &Env, profile: &Path, as_of: Option<&str>, dry_run: bool) -> serde_json::Value {
    let out = expire_cmd(env, profile, as_of, dry_run)
        .output()
        .expect("run screenpop recordings expire");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "expire failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn removed_ids(report: &serde_json::Value) -> Vec<i64> {
    report["removed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["recording_id"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// One call from the trunk, answered and recorded; returns its files and contact log.
fn record_a_call(env: &Env, admin: &Api, n: usize) -> (RecordingFiles, serde_json::Value) {
    let mut agent = env.agent("uas_answer.xml", &[]);
    let mut trunk = env.trunk("uac_call.xml", &["-d", "1500"]);
    trunk.expect_success(T);
    agent.expect_success(T);
    let recs = env.wait_for_recordings(n, T);
    let call_id = trunk.call_id.clone().expect("the trunk's Call-ID");
    let files = recs
        .into_iter()
        .find(|r| {
            std::fs::read_to_string(&r.json)
                .map(|j| j.contains(&call_id))
                .unwrap_or(false)
        })
        .expect("this call's recording");
    let log = common::poll(T, || {
        let calls = admin.ok("GET", "/api/calls", None);
        calls["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|l| l["sip_call_id"] == call_id.as_str() && l["recording_id"].is_i64())
            })
            .cloned()
    })
    .expect("the call's contact log with its recording");
    (files, log)
}

fn audio(env: &Env, admin: &Api, rec: i64) -> (u16, Vec<u8>) {
    let r = ureq::get(&format!("{}/api/recordings/{rec}/audio", env.http_base()))
        .set("Authorization", &format!("Bearer {}", admin.token))
        .call();
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("audio {rec}: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("read");
    (status, body)
}

#[test]
fn recordings_past_their_retention_are_archived_or_deleted_and_audited() {
    let Some(env) = Env::with_sipp("retention") else {
        return;
    };
    // The server keeps 30 days; its own sweep runs at start (nothing is old yet) and then not
    // for a day, so the CLI below does every removal.
    env.write_profile_with(
        "[retention]\nkeep_days = 30\ncheck_every_secs = 86400\nlow_disk_percent = 100",
    );
    env.admin_create("admin", "admin-pass-1");
    let server = env.start_server();
    let admin = Api::login(&env.http_base(), "admin", "admin-pass-1");
    let archive = env.dir.join("archive");
    let archiving = cli_profile(
        &env,
        "archive.toml",
        &format!(
            "keep_days = 30\naction = \"archive\"\narchive_dir = \"{}\"",
            archive.display()
        ),
    );
    let deleting = cli_profile(&env, "delete.toml", "keep_days = 30\naction = \"delete\"");

    // First call: archived once past 30 days.
    let (a_files, a_log) = record_a_call(&env, &admin, 1);
    let a_rec = a_log["recording_id"].as_i64().expect("recording id");
    let a_bytes = std::fs::read(&a_files.wav).expect("the WAV");
    age(&env, a_rec, 29);
    assert!(
        removed_ids(&expire(&env, &archiving, None, false)).is_empty(),
        "29 days old, the recording is kept"
    );
    let dry = expire(&env, &archiving, Some(&days_ahead(2)), true);
    assert_eq!(removed_ids(&dry), [a_rec], "{dry}");
    assert!(a_files.wav.exists(), "a dry run touches nothing");
    // Removing ahead of time is refused.
    let early = expire_cmd(&env, &archiving, Some(&days_ahead(2)), false)
        .output()
        .expect("run");
    assert!(!early.status.success(), "a future --as-of removes nothing");
    assert!(a_files.wav.exists());
    age(&env, a_rec, 2);
    let done = expire(&env, &archiving, None, false);
    assert_eq!(removed_ids(&done), [a_rec], "{done}");
    assert!(
        !a_files.wav.exists() && !a_files.json.exists(),
        "moved away"
    );
    let moved = PathBuf::from(
        done["removed"][0]["archived_to"]
            .as_str()
            .expect("where to"),
    );
    assert!(moved.starts_with(&archive), "{}", moved.display());
    assert!(
        moved.with_extension("json").exists(),
        "the call record goes along"
    );
    let rel_before = a_files
        .wav
        .strip_prefix(&env.recordings)
        .expect("under recordings");
    assert!(
        moved.ends_with(rel_before),
        "same day folders: {}",
        moved.display()
    );
    // Still playable, from the archive, byte for byte.
    let (st, body) = audio(&env, &admin, a_rec);
    assert_eq!(st, 200);
    assert!(body == a_bytes, "the archived audio is the recorded audio");

    // Second call: deleted once past 30 days; the archived one is not touched again.
    let (b_files, b_log) = record_a_call(&env, &admin, 1);
    let b_rec = b_log["recording_id"].as_i64().expect("recording id");
    age(&env, b_rec, 31);
    let done = expire(&env, &deleting, None, false);
    assert_eq!(removed_ids(&done), [b_rec], "{done}");
    assert!(!b_files.wav.exists() && !b_files.json.exists(), "deleted");
    assert!(moved.exists(), "the archived recording stays");
    let (st, body) = audio(&env, &admin, b_rec);
    assert_eq!(st, 410, "{}", String::from_utf8_lossy(&body));
    let err: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(err["error"]["code"], "expired", "{err}");
    assert!(
        removed_ids(&expire(&env, &deleting, Some(&days_ahead(400)), true)).is_empty(),
        "nothing is removed twice"
    );

    // The contact logs stay, saying what became of the audio.
    let log = |id: i64| admin.ok("GET", &format!("/api/calls/{id}"), None);
    let a = log(a_log["id"].as_i64().expect("id"));
    let b = log(b_log["id"].as_i64().expect("id"));
    assert_eq!(
        (a["recording_status"].as_str(), a["recording_id"].as_i64()),
        (Some("archived"), Some(a_rec)),
        "{a}"
    );
    assert_eq!(
        (b["recording_status"].as_str(), b["recording_id"].as_i64()),
        (Some("expired"), Some(b_rec)),
        "{b}"
    );
    assert_eq!(b["disposition"], "answered", "{b}");

    // One audit entry per removal, by "retention".
    let audit = admin.ok("GET", "/api/audit?action=recording.", None);
    let entries: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["actor"] == "retention")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["subject"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("recording.expire", format!("recording:{b_rec}").as_str())
    );
    assert_eq!(
        (entries[1].0.as_str(), entries[1].1.as_str()),
        ("recording.archive", format!("recording:{a_rec}").as_str())
    );
    assert!(entries[0].2.contains("kept 30 days"), "{:?}", entries[0]);

    // The disk watch: every disk is under 100 % free, so it warns once and says so in
    // /metrics.
    let warned = common::poll(Duration::from_secs(5), || {
        server
            .log_text()
            .contains("recordings disk low")
            .then_some(())
    });
    assert!(warned.is_some(), "{}", server.log_text());
    let metrics = ureq::get(&format!("{}/metrics", env.http_base()))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(
        metrics.contains("screenpop_recordings_disk_low 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("screenpop_recordings_disk_free_bytes"),
        "{metrics}"
    );

    // The pages: the recordings list and the queue's retention, in Chromium.
    if let Some(result) = browser_script(
        "retention.mjs",
        &serde_json::json!({
            "base": env.http_base(),
            "shots": shots_dir(),
            "admin": {"username": "admin", "password": "admin-pass-1"},
            "archived": a_rec,
            "expired": b_rec,
        }),
    ) {
        assert!(result["error"].is_null(), "{result}");
        let queues = admin.ok("GET", "/api/queues", None);
        let general = queues["items"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "General"))
            .cloned()
            .expect("the General queue");
        assert_eq!(general["keep_recordings_days"], 45, "{general}");
    }
}

fn shots_dir() -> PathBuf {
    std::env::var_os("SCREENPOP_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"))
}

/// Runs `tests/browser/NAME` (headless Chromium through playwright-core) to its end and returns
/// its RESULT; `None` when node, Chromium or playwright-core is missing and that is allowed
/// (`SCREENPOP_REQUIRE_BROWSER=1`, set by `.ci/run`, makes it a failure).
fn browser_script(name: &str, config: &serde_json::Value) -> Option<serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var("SCREENPOP_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "the browser step needs Chromium and `npm ci` in tests/browser"
        );
        eprintln!("skipping the browser step: no Chromium or playwright-core");
        return None;
    }
    let out = Command::new("node")
        .arg(dir.join(name))
        .current_dir(&dir)
        .env("E2E_CONFIG", config.to_string())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{name} gave no RESULT:\n{stdout}\n{stderr}"));
    assert!(out.status.success(), "{name} failed:\n{stderr}");
    Some(serde_json::from_str(result).expect("RESULT json"))
}

/// A full disk (point 6: "a full disk keeps the behaviour it has today"): the recordings' file
/// system fills in the middle of a call. The call goes on to its end, what was written stays
/// playable with the caller's tone in it, and the contact log says the recording failed.
///
/// The server runs in a mount namespace of its own with a 160 kB tmpfs on its recordings
/// folder (`unshare -m`, as root, which CI is); the test reads that folder through
/// `/proc/PID/root`. A 12 s call records 32 kB a second: the disk is full after about 5 s.
#[test]
fn a_full_disk_keeps_the_call_and_the_audio_written_so_far() {
    let Some(env) = Env::with_sipp("full_disk") else {
        return;
    };
    let script = format!(
        "mount -t tmpfs -o size=160k screenpop-full-disk {} && exec {} {}",
        env.recordings.display(),
        common::server_binary().display(),
        common::serve_args(&env, &[]).join(" ")
    );
    let server = common::Server::launch(
        &env,
        env.dir.join("server.log"),
        Path::new("unshare"),
        ["-m", "--propagation", "private", "sh", "-c", &script]
            .map(String::from)
            .to_vec(),
        &env.dir,
        &[],
    );
    let pid = server.pid().expect("the server's pid");
    let mut agent = env.agent("uas_answer.xml", &[]);
    let mut trunk = env.trunk("uac_call.xml", &["-d", "12000"]);
    trunk.expect_success(Duration::from_secs(40));
    agent.expect_success(Duration::from_secs(10));
    let talk = trunk.talk_time().expect("the trunk's talk time");
    assert!(
        talk > 11.5,
        "the call went on to its end: {talk} s\n{}",
        server.log_text()
    );

    // The contact log: answered, its recording failed.
    let sip_call_id = trunk.call_id.clone().expect("the trunk's Call-ID");
    let db = format!("sqlite://{}", env.dir.join("screenpop.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (disposition, status) = rt.block_on(async {
        let store = screenpop::store::Store::connect(&db).await.expect("store");
        for _ in 0..100 {
            let row = sqlx::query(
                "SELECT disposition, recording_status FROM calls WHERE sip_call_id = $1",
            )
            .bind(sip_call_id.clone())
            .fetch_optional(store.pool())
            .await
            .expect("query");
            use sqlx::Row;
            if let Some(r) = row {
                let d: Option<String> = r.get("disposition");
                if d.is_some() {
                    return (d, r.get::<Option<String>, _>("recording_status"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (None, None)
    });
    assert_eq!(
        (disposition.as_deref(), status.as_deref()),
        (Some("answered"), Some("failed")),
        "{}",
        server.log_text()
    );

    // What reached the disk is a WAV a player reads, holding the caller's 600 Hz.
    let inside = PathBuf::from(format!("/proc/{pid}/root")).join(
        env.recordings
            .strip_prefix("/")
            .expect("an absolute recordings folder"),
    );
    let mut files = Vec::new();
    let mut dirs = vec![inside.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let audio: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains(".wav"))
        .collect();
    assert_eq!(audio.len(), 1, "one recording: {files:?}");
    let rec = common::read_wav(audio[0]).unwrap_or_else(|e| panic!("{e}"));
    let secs = rec.left.len() as f64 / f64::from(common::RATE);
    eprintln!(
        "full disk: {secs:.2} s recorded of a {talk:.2} s call in {}",
        audio[0].display()
    );
    assert!(
        (2.0..talk - 3.0).contains(&secs),
        "the audio up to the full disk (160 kB: 5 s): {secs} s of a {talk} s call"
    );
    let left = common::analyse_channel(&rec.left);
    assert!(
        left.caller_fraction() >= 0.8,
        "the caller's tone on the left: {}",
        left.timeline()
    );
    drop(server);
}
