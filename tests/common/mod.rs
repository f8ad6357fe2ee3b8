//! The one test harness for screenpop's integration tests (`mod common;` in each test).
//!
//! - this module: an [`Env`] per test and SIPp on both sides (below);
//! - [`center`]: a call center made the README's way (ACD profile, first admin, queues, agents
//!   with SIPp phones, desktops, customers);
//! - [`desk`]: the HTTP side's real clients, the REST API and a WebSocket desktop;
//! - [`raw`]: a server on a fixed port fed hand-written SIP (RFC 4475 on the wire, refusals).
//!
//! Each test gets an [`Env`]: its own temp dir (under `std::env::temp_dir()`),
//! its own block of 64 UDP ports, a profile TOML, and the two raw G.711 audio
//! files SIPp streams. From there it starts the server ([`Server`], killed on
//! drop, its stderr kept in a file and printed if the test fails), the agent
//! phone ([`Env::agent`], a SIPp UAS, started first) and the trunk
//! ([`Env::trunk`], a SIPp UAC), waits for them with a timeout ([`Sipp`]), and
//! checks the recording by content ([`check_call_recording`]): Goertzel energy
//! at the caller's tone (600 Hz, expected on the LEFT channel) and the agent's
//! (1500 Hz, expected on the RIGHT), per 20 ms frame.
//!
//! std, hound, serde_json and sha2 are used. Environment knobs:
//! - `SCREENPOP_SKIP_SIPP=1`: skip SIPp tests when `sipp` is missing (instead of failing).
//! - `SCREENPOP_REQUIRE_SIPP=1` (set by `.ci/run`): never skip, even with the above.
//! - `SCREENPOP_BIN`: run this server binary instead of cargo's `screenpop`.
//! - `SCREENPOP_KEEP_E2E=1`: keep every test's temp dir (failed tests always keep theirs).
//! - `RUST_LOG`: passed to the server (default `debug`).
#![allow(dead_code)]

pub mod center;
pub mod desk;
pub mod greeting;
#[allow(unused_imports)] // not every test binary decodes G.711
pub use greeting::ulaw_to_linear;
pub mod raw;
pub mod sipp_log;
pub mod smsc;
pub mod softphone;
pub mod tls;

pub use sipp_log::{parse_message_log, status_code, LoggedMessage};

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Constants shared with the scenarios in tests/sipp/
// ---------------------------------------------------------------------------

/// Sample rate of the audio SIPp sends and of the recording.
pub const RATE: u32 = 8000;
/// Tone the trunk (caller) streams; must end up on the LEFT channel.
pub const CALLER_HZ: f64 = 600.0;
/// Tone the agent phone streams; must end up on the RIGHT channel.
pub const AGENT_HZ: f64 = 1500.0;
/// Audio files, written into each test dir (SIPp's cwd): raw headerless
/// G.711 u-law, 8 kHz mono, exactly 1 s (a whole number of tone periods and of
/// 160-byte packets, so the `-1` loop is seamless). Named in the scenarios.
pub const CALLER_AUDIO: &str = "caller_600hz.ulaw";
pub const AGENT_AUDIO: &str = "agent_1500hz.ulaw";
/// Tone amplitude, as a fraction of full scale (-6 dBFS).
pub const TONE_AMPLITUDE: f64 = 0.5;
/// The caller's number, as the trunk sends it in From.
pub const CALLER_NUMBER: &str = "+15551230001";
/// The number the trunk dials (`-s`).
pub const DIALED: &str = "8005550100";
/// Profile's ring timeout.
pub const RING_TIMEOUT_SECS: u64 = 5;
/// Registrar user in the profile.
pub const SIP_USER: &str = "1001";
pub const SIP_PASSWORD: &str = "s3cret";

/// Analysis frame: 20 ms. 600 Hz and 1500 Hz fall on exact bins (50 Hz apart).
pub const FRAME: usize = 160;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

// ---------------------------------------------------------------------------
// SIPp presence
// ---------------------------------------------------------------------------

/// `Ok(version line)` if a usable `sipp` (with RTPSTREAM) is on PATH.
pub fn sipp_status() -> Result<String, String> {
    static STATUS: OnceLock<Result<String, String>> = OnceLock::new();
    STATUS
        .get_or_init(|| match Command::new("sipp").arg("-v").output() {
            Err(e) => Err(format!("cannot run `sipp`: {e}")),
            Ok(out) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let line = text
                    .lines()
                    .find(|l| l.contains("SIPp v"))
                    .map(|l| l.trim().to_string());
                match line {
                    None => Err(format!("`sipp -v` printed no version: {text:?}")),
                    Some(l) if !l.contains("RTPSTREAM") => Err(format!(
                        "{l}: this SIPp was built without RTPSTREAM (rtp_stream is needed)"
                    )),
                    Some(l) => Ok(l),
                }
            }
        })
        .clone()
}

/// True if SIPp tests should run. Panics with a clear message when `sipp` is
/// missing, unless `SCREENPOP_SKIP_SIPP=1` (and not `SCREENPOP_REQUIRE_SIPP=1`),
/// in which case it prints a SKIP line and returns false.
pub fn sipp_or_skip(test: &str) -> bool {
    match sipp_status() {
        Ok(_) => true,
        Err(why) => {
            if env_flag("SCREENPOP_SKIP_SIPP") && !env_flag("SCREENPOP_REQUIRE_SIPP") {
                eprintln!("SKIP {test}: {why} (SCREENPOP_SKIP_SIPP=1)");
                false
            } else {
                panic!(
                    "{test}: SIPp is required for the end-to-end tests and is not usable: {why}\n\
                     Install it (Debian/Ubuntu: `apt-get install sip-tester`, SIPp >= 3.6 with \
                     RTPSTREAM), or set SCREENPOP_SKIP_SIPP=1 to skip these tests \
                     (.ci/run installs it and sets SCREENPOP_REQUIRE_SIPP=1)."
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A block of 64 consecutive UDP ports, all free when handed out, below the
/// kernel's ephemeral range so nothing else grabs them meanwhile.
///
/// Layout (offsets from `base`): 0 server SIP; 1 agent SIP; 2..=4 trunk SIP
/// (instances 0..3); 5 challenge shim; 8..=15 SIPp control ports; 16 agent
/// media (SIPp walks up by 2 if taken); 20/24/28 trunk media; 32..=62 server
/// `--rtp-ports`.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub base: u16,
}

const BLOCK: u16 = 64;
const FIRST_PORT: u16 = 10_240;
const BLOCKS: u32 = ((32_768 - FIRST_PORT as u32) / BLOCK as u32) - 1;

impl Ports {
    pub fn allocate() -> Ports {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
        // Spread parallel test processes apart; a counter spreads this process's tests.
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        for _ in 0..BLOCKS {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let idx = (seed.wrapping_add(n.wrapping_mul(7))) % BLOCKS;
            let base = FIRST_PORT + (idx as u16) * BLOCK;
            {
                let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
                let set = taken.get_or_insert_with(HashSet::new);
                if set.contains(&base) {
                    continue;
                }
                if (base..base + BLOCK).all(udp_port_free) {
                    set.insert(base);
                    return Ports { base };
                }
            }
        }
        panic!("no free block of {BLOCK} UDP ports found in {FIRST_PORT}..32768");
    }
    pub fn server_sip(&self) -> u16 {
        self.base
    }
    /// The server's TLS listener (TCP), when its profile has one.
    pub fn tls(&self) -> u16 {
        self.base + 7
    }
    pub fn agent_sip(&self) -> u16 {
        self.base + 1
    }
    pub fn trunk_sip(&self, instance: u16) -> u16 {
        self.base + 2 + instance % 3
    }
    pub fn control(&self, slot: u16) -> u16 {
        self.base + 8 + slot % 8
    }
    pub fn agent_media(&self) -> u16 {
        self.base + 16
    }
    pub fn trunk_media(&self, instance: u16) -> u16 {
        self.base + 20 + 4 * (instance % 3)
    }
    /// Even LOW and HIGH, so a LOW-HIGH pair allocator stays inside the block.
    pub fn rtp_range(&self) -> (u16, u16) {
        (self.base + 32, self.base + BLOCK - 2)
    }
    /// The [`ChallengeShim`]'s port.
    pub fn shim(&self) -> u16 {
        self.base + 5
    }
    /// The server's HTTP port (TCP).
    pub fn http(&self) -> u16 {
        self.base + 6
    }
}

/// Free if it can be bound on the wildcard address (which also fails when
/// someone holds it on 127.0.0.1).
fn udp_port_free(port: u16) -> bool {
    UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// Whether some process has a UDP socket bound to `port`, read from
/// /proc/net/udp{,6} (probing with bind() could steal the port from the
/// process being waited for). None if /proc is not readable.
fn udp_port_bound(port: u16) -> Option<bool> {
    let mut readable = false;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        let bound = text.lines().skip(1).any(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                == Some(port)
        });
        if bound {
            return Some(true);
        }
    }
    readable.then_some(false)
}

// ---------------------------------------------------------------------------
// Audio fixtures (generated at test time)
// ---------------------------------------------------------------------------

/// G.711 u-law encoder (the classic biased segment encoder).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > CLIP {
        s = CLIP;
    }
    s += BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// `seconds` of a sine at `hz`, as 16-bit PCM at [`RATE`].
pub fn tone(hz: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (seconds * RATE as f64).round() as usize;
    (0..n)
        .map(|i| {
            let v = amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / RATE as f64).sin();
            (v * 32767.0).round() as i16
        })
        .collect()
}

/// What SIPp 3.6.1's `rtp_stream="file,-1,0"` needs: the file's bytes are sent
/// verbatim as PCMU payload, 160 bytes per 20 ms packet, so raw headerless
/// u-law at 8 kHz mono (a WAV header would be played as noise).
pub fn write_ulaw_tone(path: &Path, hz: f64) {
    let bytes: Vec<u8> = tone(hz, 1.0, TONE_AMPLITUDE)
        .into_iter()
        .map(linear_to_ulaw)
        .collect();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Env: one test's sandbox
// ---------------------------------------------------------------------------

pub struct Env {
    pub name: String,
    pub dir: PathBuf,
    pub recordings: PathBuf,
    pub profile: PathBuf,
    pub ports: Ports,
    pub ring_timeout_secs: u64,
    trunks: AtomicU32,
    servers: AtomicU32,
}

impl Env {
    /// A sandbox for a test that does not need SIPp.
    pub fn new(name: &str) -> Env {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir()
            .join("screenpop-e2e")
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        let recordings = dir.join("recordings");
        fs::create_dir_all(&recordings)
            .unwrap_or_else(|e| panic!("creating {}: {e}", recordings.display()));
        write_ulaw_tone(&dir.join(CALLER_AUDIO), CALLER_HZ);
        write_ulaw_tone(&dir.join(AGENT_AUDIO), AGENT_HZ);
        let env = Env {
            name: name.to_string(),
            profile: dir.join("profile.toml"),
            dir,
            recordings,
            ports: Ports::allocate(),
            ring_timeout_secs: RING_TIMEOUT_SECS,
            trunks: AtomicU32::new(0),
            servers: AtomicU32::new(0),
        };
        env.write_profile();
        env
    }

    /// A sandbox for a SIPp test, or None if SIPp is missing and skipping is allowed.
    pub fn with_sipp(name: &str) -> Option<Env> {
        if sipp_or_skip(name) {
            Some(Env::new(name))
        } else {
            None
        }
    }

    pub fn server_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.server_sip()))
    }

    pub fn write_profile(&self) {
        self.write_profile_with("");
    }

    /// The test profile with `top` (keys of the profile's top level) added.
    pub fn write_profile_with(&self, top: &str) {
        let text = format!(
            r#"name = "test"
realm = "screenpop"
default_region = "US"
codecs = ["PCMU", "PCMA"]
ring_timeout_secs = {ring}
{top}

[trust]
cidrs = ["127.0.0.0/8", "::1/128"]

[[trunks]]
name = "local"
cidrs = ["127.0.0.0/8"]
agent = "sip:agent@127.0.0.1:{agent}"

[[users]]
username = "{user}"
password = "{password}"
"#,
            ring = self.ring_timeout_secs,
            agent = self.ports.agent_sip(),
            user = SIP_USER,
            password = SIP_PASSWORD,
        );
        fs::write(&self.profile, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.profile.display()));
    }

    /// A profile whose trunk has no fixed agent: calls go through the store's queues and
    /// agents (the ACD).
    pub fn write_acd_profile(&self) {
        let text = r#"name = "test-acd"
realm = "screenpop"
default_region = "US"
codecs = ["PCMU", "PCMA"]

[trust]
cidrs = ["127.0.0.0/8", "::1/128"]

[[trunks]]
name = "local"
cidrs = ["127.0.0.0/8"]
"#;
        fs::write(&self.profile, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.profile.display()));
    }

    /// An agent phone (SIPp UAS) on its own block of ports; returns it and its SIP port.
    pub fn agent_phone(&self, role: &str, ports: Ports, scenario: &str, extra: &[&str]) -> Sipp {
        let args = vec![
            "-p".to_string(),
            ports.agent_sip().to_string(),
            "-mp".to_string(),
            ports.agent_media().to_string(),
            "-cp".to_string(),
            ports.control(0).to_string(),
        ];
        let mut sipp = Sipp::spawn(self, role, scenario, None, args, extra);
        sipp.wait_bound(ports.agent_sip(), Duration::from_secs(5));
        sipp
    }

    /// A trunk call from `caller` (a number, or `anonymous`) using a `*_from.xml` scenario.
    pub fn trunk_from(&self, caller: &str, scenario: &str, extra: &[&str]) -> Sipp {
        let mut args: Vec<&str> = vec!["-key", "caller", caller];
        args.extend_from_slice(extra);
        self.trunk(scenario, &args)
    }

    /// The server's HTTP base URL.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http())
    }

    /// Starts screenpop on this env's ports and waits until it answers OPTIONS.
    pub fn start_server(&self) -> Server {
        let n = self.servers.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(if n == 0 {
            "server.log".to_string()
        } else {
            format!("server-{}.log", n + 1)
        });
        Server::start(self, log)
    }

    /// As [`Env::start_server`], with environment variables set for the server.
    pub fn start_server_with_vars(&self, vars: &[(&str, &str)]) -> Server {
        let n = self.servers.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("server-{}.log", n + 1));
        Server::start_full(self, log, &[], vars)
    }

    /// As [`Env::start_server`], on `database` (a PostgreSQL URL, or a SQLite file shared by
    /// several servers in turn).
    pub fn start_server_on(&self, database: &str) -> Server {
        let n = self.servers.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("server-{}.log", n + 1));
        Server::start_with(self, log, &["--database", database])
    }

    /// Starts the agent phone (a SIPp UAS on the profile's agent port) in the
    /// background and waits until its SIP socket is bound. Start it first.
    pub fn agent(&self, scenario: &str, extra: &[&str]) -> Sipp {
        let p = &self.ports;
        let args = vec![
            "-p".to_string(),
            p.agent_sip().to_string(),
            "-mp".to_string(),
            p.agent_media().to_string(),
            "-cp".to_string(),
            p.control(0).to_string(),
        ];
        let mut sipp = Sipp::spawn(self, "agent", scenario, None, args, extra);
        sipp.wait_bound(p.agent_sip(), Duration::from_secs(5));
        sipp
    }

    /// Starts the trunk (a SIPp UAC) towards the server.
    pub fn trunk(&self, scenario: &str, extra: &[&str]) -> Sipp {
        self.trunk_to(self.ports.server_sip(), scenario, extra)
    }

    /// Starts the trunk towards any port on 127.0.0.1 (e.g. straight at the
    /// agent, to check a scenario pair without the server).
    pub fn trunk_to(&self, port: u16, scenario: &str, extra: &[&str]) -> Sipp {
        let i = self.trunks.fetch_add(1, Ordering::SeqCst) as u16;
        self.trunk_instance(i, port, scenario, extra)
    }

    /// A phone registering to the server through a [`ChallengeShim`]
    /// (SIPp sends to the shim with `-rsa`; URIs and the digest `uri` still
    /// name the server).
    pub fn registering_phone(&self, scenario: &str) -> (Sipp, ChallengeShim) {
        let i = self.trunks.fetch_add(1, Ordering::SeqCst) as u16;
        let shim = ChallengeShim::start(self, self.ports.trunk_sip(i));
        let rsa = format!("127.0.0.1:{}", shim.port);
        let sipp = self.trunk_instance(i, self.ports.server_sip(), scenario, &["-rsa", &rsa]);
        (sipp, shim)
    }

    fn trunk_instance(&self, i: u16, port: u16, scenario: &str, extra: &[&str]) -> Sipp {
        let p = &self.ports;
        let call_id_prefix = format!("{}-{}-{}", sanitize(&self.name), std::process::id(), i);
        let args = vec![
            format!("127.0.0.1:{port}"),
            "-p".into(),
            p.trunk_sip(i).to_string(),
            "-mp".into(),
            p.trunk_media(i).to_string(),
            "-cp".into(),
            p.control(1 + i).to_string(),
            "-s".into(),
            DIALED.into(),
            // Call-ID = <prefix>-<call number>@127.0.0.1; with -m 1 the number is 1.
            "-cid_str".into(),
            format!("{call_id_prefix}-%u@%s"),
        ];
        let call_id = format!("{call_id_prefix}-1@127.0.0.1");
        Sipp::spawn(
            self,
            &format!("trunk{i}"),
            scenario,
            Some(call_id),
            args,
            extra,
        )
    }

    /// All files under the recordings dir (recursively), sorted.
    pub fn recording_files(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        walk(&self.recordings, &mut out);
        out.sort();
        out
    }

    /// Waits until `n` finished recordings exist: `<id>.wav` each with its
    /// `<id>.json`, and no `.wav.part` left. Panics with a listing on timeout.
    pub fn wait_for_recordings(&self, n: usize, timeout: Duration) -> Vec<RecordingFiles> {
        let start = Instant::now();
        loop {
            let files = self.recording_files();
            let parts = files
                .iter()
                .filter(|f| name_of(f).ends_with(".wav.part"))
                .count();
            let done: Vec<RecordingFiles> = files
                .iter()
                .filter(|f| name_of(f).ends_with(".wav"))
                .filter_map(|wav| {
                    let json = wav.with_extension("json");
                    json.exists().then(|| RecordingFiles {
                        wav: wav.clone(),
                        json,
                    })
                })
                .collect();
            if done.len() >= n && parts == 0 {
                // Let a writer finish a sidecar it just created.
                sleep(Duration::from_millis(100));
                return done;
            }
            if start.elapsed() > timeout {
                panic!(
                    "expected {n} finished recording(s) (<id>.wav + <id>.json, no .wav.part) under {} \
                     within {timeout:?}; found:\n{}",
                    self.recordings.display(),
                    listing(&files)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// For calls that were never answered: after a grace period, every WAV
    /// (finished or not) must be empty or silent.
    pub fn assert_no_audio_recorded(&self, grace: Duration) {
        sleep(grace);
        let files = self.recording_files();
        for f in files.iter().filter(|f| {
            let n = name_of(f);
            n.ends_with(".wav") || n.ends_with(".wav.part")
        }) {
            let Ok(rec) = read_wav(f) else {
                continue; // an unreadable stub is no audio either
            };
            let (l, r) = (analyse_channel(&rec.left), analyse_channel(&rec.right));
            let audible = |c: &ChannelAnalysis| c.frames > 0 && c.loud_fraction() > 0.05;
            assert!(
                !audible(&l) && !audible(&r),
                "an unanswered call must not leave a recording with audio, but {} has \
                 {:.2} s with LEFT {} / RIGHT {}",
                f.display(),
                rec.duration_secs(),
                l.summary(),
                r.summary()
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() || env_flag("SCREENPOP_KEEP_E2E") {
            eprintln!("[{}] test files kept in {}", self.name, self.dir.display());
            if std::thread::panicking() {
                eprintln!(
                    "[{}] recordings dir:\n{}",
                    self.name,
                    listing(&self.recording_files())
                );
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

fn listing(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "  (nothing)".into();
    }
    files
        .iter()
        .map(|f| {
            let len = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            format!("  {} ({len} bytes)", f.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max_lines);
    let mut s = String::new();
    if from > 0 {
        let _ = writeln!(s, "[... {from} earlier lines ...]");
    }
    s.push_str(&lines[from..].join("\n"));
    s
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// The README's way to make the first admin: `screenpop admin create --password-stdin`, run by
/// `bin` from `cwd` (its default database is `screenpop.db` there) or on `database`; panics with
/// its output when it fails.
pub fn admin_create(
    bin: &Path,
    cwd: &Path,
    database: Option<&str>,
    username: &str,
    password: &str,
) {
    let mut cmd = Command::new(bin);
    cmd.args([
        "admin",
        "create",
        "--username",
        username,
        "--password-stdin",
    ])
    .current_dir(cwd)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(db) = database {
        cmd.args(["--database", db]);
    }
    let mut child = cmd.spawn().expect("admin create");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    let out = child.wait_with_output().expect("admin create");
    assert!(
        out.status.success(),
        "admin create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Env {
    /// Makes the first admin in this env's store (`screenpop.db` in its folder).
    pub fn admin_create(&self, username: &str, password: &str) {
        let db = format!("sqlite://{}", self.dir.join("screenpop.db").display());
        admin_create(&server_binary(), &self.dir, Some(&db), username, password);
    }
}

pub fn server_binary() -> PathBuf {
    match std::env::var_os("SCREENPOP_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_screenpop")),
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub rtp: (u16, u16),
    name: String,
    cmdline: String,
}

/// What `screenpop serve` is given in `env`: its SIP address, recordings folder, profile, RTP
/// ports and HTTP address, then `extra`.
pub fn serve_args(env: &Env, extra: &[&str]) -> Vec<String> {
    let (lo, hi) = env.ports.rtp_range();
    let args: Vec<String> = vec![
        "serve".into(),
        "--sip".into(),
        env.server_addr().to_string(),
        "--recordings".into(),
        env.recordings.display().to_string(),
        "--profile".into(),
        env.profile.display().to_string(),
        "--rtp-ports".into(),
        format!("{lo}-{hi}"),
        "--http".into(),
        format!("127.0.0.1:{}", env.ports.http()),
    ];
    args.into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect()
}

impl Server {
    fn start(env: &Env, log: PathBuf) -> Server {
        Server::start_with(env, log, &[])
    }

    fn start_with(env: &Env, log: PathBuf, extra: &[&str]) -> Server {
        Server::start_full(env, log, extra, &[])
    }

    fn start_full(env: &Env, log: PathBuf, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        let bin = server_binary();
        Server::launch(env, log, &bin, serve_args(env, extra), &env.dir, vars)
    }

    /// Starts `bin` with exactly `args` from the folder `cwd` (e.g. an installed binary in an
    /// empty folder, on its built-in defaults) and waits until it answers OPTIONS on the env's
    /// server address.
    pub fn launch(
        env: &Env,
        log: PathBuf,
        bin: &Path,
        args: Vec<String>,
        cwd: &Path,
        vars: &[(&str, &str)],
    ) -> Server {
        let (lo, hi) = env.ports.rtp_range();
        let file = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let file2 = file.try_clone().expect("dup log file");
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into());
        let cmdline = format!("RUST_LOG={rust_log} {} {}", bin.display(), args.join(" "));
        let child = Command::new(bin)
            .args(&args)
            .env("RUST_LOG", &rust_log)
            .envs(vars.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file2))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmdline}: {e}"));
        let mut server = Server {
            child: Some(child),
            addr: env.server_addr(),
            log,
            rtp: (lo, hi),
            name: env.name.clone(),
            cmdline,
        };
        server.wait_ready(Duration::from_secs(15));
        server
    }

    /// Ready = answers an OPTIONS with 200. Logging `sip listening` is
    /// accepted too, if OPTIONS still gets nothing 2 s after that line.
    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        sock.set_read_timeout(Some(Duration::from_millis(150))).ok();
        let mut listening_since: Option<Instant> = None;
        let mut n = 0;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "screenpop exited during startup ({status}); command:\n  {}\n(its log follows)",
                    self.cmdline
                );
            }
            n += 1;
            let req = options_request(sock.local_addr().unwrap(), self.addr, &format!("ready-{n}"));
            let _ = sock.send_to(req.as_bytes(), self.addr);
            let mut buf = [0u8; 4096];
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                if String::from_utf8_lossy(&buf[..len]).starts_with("SIP/2.0 200") {
                    return;
                }
            }
            if listening_since.is_none() && self.log_text().contains("sip listening") {
                listening_since = Some(Instant::now());
            }
            if listening_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
                eprintln!(
                    "[{}] warning: screenpop logged `sip listening` but does not answer OPTIONS with 200",
                    self.name
                );
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "screenpop not ready after {timeout:?} (no 200 to OPTIONS on {}, no `sip listening` \
                     in its log); command:\n  {}\n(its log follows)",
                    self.addr,
                    self.cmdline
                );
            }
        }
    }

    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends the server a signal (`libc::SIGTERM`, …).
    pub fn signal(&self, sig: i32) {
        let pid = self.pid().expect("a running server") as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Waits up to `timeout` for the server to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status);
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL (std's `Child::kill` on Unix), then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let was_running = self.is_running();
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "[{}] --- screenpop log {} (still running at the end: {was_running}) ---\n\
                 command: {}\n{}\n--- end of screenpop log ---",
                self.name,
                self.log.display(),
                self.cmdline,
                tail(&self.log_text(), 300)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// SIPp processes
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Exit code; None if killed (by us on timeout, or by a signal).
    pub code: Option<i32>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

pub struct Sipp {
    pub role: String,
    pub scenario: String,
    /// The Call-ID a trunk uses (set with -cid_str).
    pub call_id: Option<String>,
    pub started: Instant,
    child: Option<Child>,
    outcome: Option<Outcome>,
    prefix: PathBuf,
    cmdline: String,
    test: String,
}

impl Sipp {
    pub fn spawn(
        env: &Env,
        role: &str,
        scenario: &str,
        call_id: Option<String>,
        mut args: Vec<String>,
        extra: &[&str],
    ) -> Sipp {
        let path = scenario_dir().join(scenario);
        assert!(path.exists(), "no scenario {}", path.display());
        let prefix = env.dir.join(role);
        let f = |suffix: &str| format!("{}_{suffix}", prefix.display());
        let common = [
            "-sf".to_string(),
            path.display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-bind_local".into(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "20s".into(),
            "-timeout_error".into(),
            "-nostdin".into(),
            "-trace_err".into(),
            "-error_file".into(),
            f("errors.log"),
            "-trace_msg".into(),
            "-message_file".into(),
            f("messages.log"),
            "-trace_stat".into(),
            "-stf".into(),
            f("stat.csv"),
            "-trace_screen".into(),
            "-screen_file".into(),
            f("screen.log"),
        ];
        args.extend(common);
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = File::create(f("stdout.log")).expect("create sipp stdout log");
        let err = out.try_clone().expect("dup sipp log");
        let cmdline = format!("cd {} && sipp {}", env.dir.display(), args.join(" "));
        let child = Command::new("sipp")
            .args(&args)
            // Its message log's clock, in UTC, can be set against this process's wall clock.
            .env("TZ", "UTC")
            .current_dir(&env.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning sipp ({cmdline}): {e}"));
        Sipp {
            role: role.to_string(),
            scenario: scenario.to_string(),
            call_id,
            started: Instant::now(),
            child: Some(child),
            outcome: None,
            prefix,
            cmdline,
            test: env.name.clone(),
        }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}_{suffix}", self.prefix.display()))
    }

    fn read(&self, suffix: &str) -> String {
        fs::read(self.file(suffix))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn wait_bound(&mut self, port: u16, timeout: Duration) {
        let start = Instant::now();
        loop {
            match udp_port_bound(port) {
                Some(true) => return,
                Some(false) => {}
                None => {
                    // no /proc: give SIPp a moment and hope
                    sleep(Duration::from_millis(500));
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "{} ({}) exited before binding port {port}: {st}\n{}",
                        self.role,
                        self.scenario,
                        self.report()
                    );
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} ({}) did not bind port {port} within {timeout:?}\n{}",
                    self.role,
                    self.scenario,
                    self.report()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits for exit; kills it if `timeout` passes. Idempotent.
    pub fn wait(&mut self, timeout: Duration) -> Outcome {
        if let Some(o) = self.outcome {
            return o;
        }
        let mut child = self.child.take().expect("sipp child");
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    break Outcome {
                        code: st.code(),
                        elapsed: self.started.elapsed(),
                        timed_out: false,
                    }
                }
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Outcome {
                        code: None,
                        elapsed: self.started.elapsed(),
                        timed_out: true,
                    };
                }
            }
        };
        self.outcome = Some(outcome);
        outcome
    }

    /// Waits and panics with SIPp's logs unless it exited 0.
    pub fn expect_success(&mut self, timeout: Duration) -> Outcome {
        let o = self.wait(timeout);
        if !o.ok() {
            panic!(
                "{} ({}) failed: {}\n{}",
                self.role,
                self.scenario,
                describe(&o, timeout),
                self.report()
            );
        }
        o
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.outcome.get_or_insert(Outcome {
                code: None,
                elapsed: self.started.elapsed(),
                timed_out: false,
            });
        }
    }

    pub fn errors(&self) -> String {
        self.read("errors.log")
    }

    /// SIP messages from `-trace_msg`, in order.
    pub fn messages(&self) -> Vec<LoggedMessage> {
        parse_message_log(&self.read("messages.log"))
    }

    /// Everything useful for a failure message.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- {} [{}] ---", self.role, self.scenario);
        let _ = writeln!(s, "command: {}", self.cmdline);
        let errors = self.errors();
        let _ = writeln!(
            s,
            "errors ({}):\n{}",
            self.file("errors.log").display(),
            if errors.trim().is_empty() {
                "(none)".to_string()
            } else {
                tail(&errors, 60)
            }
        );
        let msgs = self.messages();
        let _ = writeln!(s, "SIP flow ({}):", self.file("messages.log").display());
        for m in &msgs {
            let _ = writeln!(
                s,
                "  {:>10.3} {} {}",
                m.time - msgs[0].time,
                if m.sent { "-->" } else { "<--" },
                m.first_line
            );
        }
        if errors.trim().is_empty() {
            // e.g. SIPp could not start: the reason is on its stdout
            let stdout = self.read("stdout.log");
            let _ = writeln!(s, "stdout tail:\n{}", tail(&stdout, 30));
        }
        s
    }

    /// Talk time seen by a trunk: from the first ACK it sent (for the 2xx)
    /// to the first BYE after it, sent or received. None if either is absent.
    pub fn talk_time(&self) -> Option<f64> {
        let msgs = self.messages();
        let ack = msgs
            .iter()
            .position(|m| m.sent && m.first_line.starts_with("ACK "))?;
        let bye = msgs[ack..]
            .iter()
            .find(|m| m.first_line.starts_with("BYE "))?;
        Some(bye.time - msgs[ack].time)
    }

    /// Seconds from the first INVITE sent to the first final (>= 200)
    /// response received, and that response's code.
    pub fn time_to_final(&self) -> Option<(f64, u16)> {
        let msgs = self.messages();
        let inv = msgs
            .iter()
            .find(|m| m.sent && m.first_line.starts_with("INVITE "))?;
        let fin = msgs
            .iter()
            .find(|m| !m.sent && m.status().is_some_and(|c| c >= 200))?;
        Some((fin.time - inv.time, fin.status()?))
    }

    /// `m=audio` ports in SDP bodies this SIPp received.
    pub fn received_sdp_ports(&self) -> Vec<u16> {
        self.messages()
            .iter()
            .filter(|m| !m.sent)
            .filter_map(|m| m.sdp_audio_port())
            .collect()
    }

    /// `m=audio` ports in SDP bodies this SIPp sent (its own media ports).
    pub fn sent_sdp_ports(&self) -> Vec<u16> {
        self.messages()
            .iter()
            .filter(|m| m.sent)
            .filter_map(|m| m.sdp_audio_port())
            .collect()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let running = self.child.is_some();
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "[{}] {}{}",
                self.test,
                if running {
                    "(killed at the end of the test) "
                } else {
                    ""
                },
                self.report()
            );
        }
    }
}

fn describe(o: &Outcome, timeout: Duration) -> String {
    match (o.code, o.timed_out) {
        (_, true) => format!("still running after {timeout:?}, killed"),
        (Some(0), _) => "exit 0".into(),
        (Some(1), _) => "exit 1 (a call failed: see errors)".into(),
        (Some(255), _) => "exit 255 (SIPp's -timeout hit, or a fatal error)".into(),
        (Some(c), _) => format!("exit {c}"),
        (None, _) => "killed by a signal".into(),
    }
}

/// Runs an agent scenario and a trunk scenario straight at each other (no
/// server) and panics unless both exit 0. Validates a scenario pair.
pub fn run_pair_direct(env: &Env, uas: &str, uas_args: &[&str], uac: &str, uac_args: &[&str]) {
    let mut agent = env.agent(uas, uas_args);
    let mut trunk = env.trunk_to(env.ports.agent_sip(), uac, uac_args);
    trunk.expect_success(Duration::from_secs(25));
    agent.expect_success(Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// Raw SIP over UDP
// ---------------------------------------------------------------------------

pub fn options_request(from: SocketAddr, to: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag=probe-{call_id}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {call_id}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:probe@{from}>\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends `msg` from `sock` and collects responses until a final one (>= 200)
/// or `timeout`. Returns every response received, in order.
pub fn exchange(sock: &UdpSocket, to: SocketAddr, msg: &[u8], timeout: Duration) -> Vec<String> {
    let _ = sock.send_to(msg, to);
    let deadline = Instant::now() + timeout;
    let mut out = vec![];
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let fin = status_code(text.lines().next().unwrap_or("")).is_some_and(|c| c >= 200);
                out.push(text);
                if fin {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// OPTIONS from a fresh socket; the final status code, if any came.
pub fn ping(to: SocketAddr, tag: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    let req = options_request(sock.local_addr().ok()?, to, tag);
    exchange(&sock, to, req.as_bytes(), Duration::from_secs(2))
        .last()
        .and_then(|r| status_code(r.lines().next().unwrap_or("")))
}

// ---------------------------------------------------------------------------
// REGISTER: SIPp 3.6.1's digest limits, and a SHA-256 digest client
// ---------------------------------------------------------------------------

/// A UDP shim between a registering SIPp and the server.
///
/// SIPp 3.6.1 computes digests with MD5 only and reads only the FIRST
/// `WWW-Authenticate` header. A server following RFC 7616 §3.7 / RFC 8760
/// lists its challenges strongest first (SHA-256, then MD5), and RFC 8760
/// §2.5 has the UAC use the topmost one *it supports*; SIPp 3.6.1 just fails
/// ("createAuthHeader: authentication must use MD5 or AKAv1-MD5"). The shim
/// moves MD5 challenges first in 401/407 responses for SIPp, keeping the
/// server's originals for the test to check. It points the top Via at itself
/// so that responses come back through it, and restores it on the way back.
pub struct ChallengeShim {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: std::sync::Arc<Mutex<Vec<String>>>,
}

impl ChallengeShim {
    pub fn start(env: &Env, phone_port: u16) -> ChallengeShim {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let port = env.ports.shim();
        let sock = UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("challenge shim: bind 127.0.0.1:{port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = env.server_addr();
        let phone = SocketAddr::from(([127, 0, 0, 1], phone_port));
        let (me, them) = (
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{phone_port}"),
        );
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, src)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if src == server {
                        let mut out = rewrite_via(&text, &me, &them);
                        if matches!(
                            status_code(text.lines().next().unwrap_or("")),
                            Some(401 | 407)
                        ) {
                            seen.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                            out = md5_challenges_first(&out);
                        }
                        let _ = sock.send_to(out.as_bytes(), phone);
                    } else {
                        let _ = sock.send_to(rewrite_via(&text, &them, &me).as_bytes(), server);
                    }
                }
            })
        };
        ChallengeShim {
            port,
            stop,
            thread: Some(thread),
            seen,
        }
    }

    /// The 401/407 responses as the server sent them.
    pub fn challenges_seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ChallengeShim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn split_head(msg: &str) -> (&str, &str) {
    match msg.find("\r\n\r\n") {
        Some(i) => (&msg[..i], &msg[i..]),
        None => (msg, ""),
    }
}

fn header_is(line: &str, names: &[&str]) -> bool {
    let lower = line.to_ascii_lowercase();
    names.iter().any(|n| {
        lower
            .strip_prefix(n)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

/// Replaces `from` by `to` in Via header lines only.
fn rewrite_via(msg: &str, from: &str, to: &str) -> String {
    let (head, rest) = split_head(msg);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if header_is(l, &["via", "v"]) {
                l.replace(from, to)
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}{rest}", head.join("\r\n"))
}

/// Stable-sorts the (Proxy-/)WWW-Authenticate lines so that MD5 ones (or
/// ones without an algorithm, which means MD5) come first.
fn md5_challenges_first(msg: &str) -> String {
    let (head, rest) = split_head(msg);
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let names = ["www-authenticate", "proxy-authenticate"];
    let slots: Vec<usize> = (0..lines.len())
        .filter(|&i| header_is(&lines[i], &names))
        .collect();
    let mut challenges: Vec<String> = slots.iter().map(|&i| lines[i].clone()).collect();
    challenges.sort_by_key(|c| {
        let alg = auth_param(c, "algorithm").unwrap_or_else(|| "MD5".into());
        !alg.eq_ignore_ascii_case("MD5")
    });
    for (slot, c) in slots.into_iter().zip(challenges) {
        lines[slot] = c;
    }
    format!("{}{rest}", lines.join("\r\n"))
}

/// A digest challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub algorithm: String,
    pub realm: String,
    pub nonce: String,
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

/// `name=value` or `name="value"` in a header value (not inside quotes of another).
pub fn auth_param(header: &str, name: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let needle = format!("{}=", name.to_ascii_lowercase());
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let at = from + pos;
        let before = lower[..at].chars().last();
        let quotes_before = header[..at].matches('"').count();
        if quotes_before & 1 == 0 && matches!(before, None | Some(' ' | ',' | '\t' | ':')) {
            let v = &header[at + needle.len()..];
            return Some(if let Some(q) = v.strip_prefix('"') {
                q.split('"').next().unwrap_or("").to_string()
            } else {
                v.split([',', ' ', '\r', '\n'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
        }
        from = at + needle.len();
    }
    None
}

/// The Digest challenges of a 401/407, in order.
pub fn parse_challenges(response: &str) -> Vec<Challenge> {
    let (head, _) = split_head(response);
    head.split("\r\n")
        .filter(|l| header_is(l, &["www-authenticate", "proxy-authenticate"]))
        .filter_map(|l| {
            let value = l.split_once(':')?.1.trim();
            if !value.to_ascii_lowercase().starts_with("digest") {
                return None;
            }
            Some(Challenge {
                algorithm: auth_param(value, "algorithm").unwrap_or_else(|| "MD5".into()),
                realm: auth_param(value, "realm")?,
                nonce: auth_param(value, "nonce")?,
                qop: auth_param(value, "qop"),
                opaque: auth_param(value, "opaque"),
            })
        })
        .collect()
}

/// The `Authorization` value answering `c` (MD5 or SHA-256; qop=auth when offered) as `user`
/// with `password` for `method` on `uri`.
pub fn digest_authorization(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let h = |s: String| {
        if c.algorithm.eq_ignore_ascii_case("MD5") {
            use md5::Digest;
            hex::encode(md5::Md5::digest(s.as_bytes()))
        } else {
            sha256_hex(s.as_bytes())
        }
    };
    let ha1 = h(format!("{user}:{}:{password}", c.realm));
    let ha2 = h(format!("{method}:{uri}"));
    let mut auth = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
        c.realm, c.nonce, c.algorithm
    );
    let response = if c
        .qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"))
    {
        let _ = write!(auth, ", qop=auth, nc=00000001, cnonce=\"{cnonce}\"");
        h(format!("{ha1}:{}:00000001:{cnonce}:auth:{ha2}", c.nonce))
    } else {
        h(format!("{ha1}:{}:{ha2}", c.nonce))
    };
    let _ = write!(auth, ", response=\"{response}\"");
    if let Some(o) = &c.opaque {
        let _ = write!(auth, ", opaque=\"{o}\"");
    }
    auth
}

/// The result of [`register_digest`].
#[derive(Clone, Debug)]
pub struct RegisterExchange {
    /// The first response (the challenge) and the one to the authenticated REGISTER.
    pub challenge: String,
    pub answer: Option<String>,
    pub contact: String,
}

/// REGISTERs `user` to the server from a raw UDP socket, answering the challenge for
/// `algorithm` ("MD5" or "SHA-256" (RFC 8760), qop=auth) with `password`; no answer when the
/// 401 does not offer it.
pub fn register_digest(env: &Env, user: &str, password: &str, algorithm: &str) -> RegisterExchange {
    let to = env.server_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().unwrap();
    let call_id = format!("reg-digest-{}-{}@127.0.0.1", std::process::id(), me.port());
    let contact = format!("sip:{user}@{me}");
    let uri = format!("sip:{to}");
    // A branch is a token (RFC 3261 §25.1): no '@', so not the Call-ID.
    let branch = format!("reg-digest-{}-{}", std::process::id(), me.port());
    let request = |cseq: u32, auth: Option<String>| {
        format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{branch}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{to}>;tag=reg{cseq}\r\n\
             To: <sip:{user}@{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>\r\n\
             Expires: 300\r\n\
             {}Content-Length: 0\r\n\r\n",
            auth.map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default()
        )
    };
    let first = exchange(
        &sock,
        to,
        request(1, None).as_bytes(),
        Duration::from_secs(3),
    );
    let challenge = first.last().cloned().unwrap_or_default();
    assert_eq!(
        status_code(challenge.lines().next().unwrap_or("")),
        Some(401),
        "an unauthenticated REGISTER must get 401, got:\n{challenge}"
    );
    let Some(c) = parse_challenges(&challenge)
        .into_iter()
        .find(|c| c.algorithm.eq_ignore_ascii_case(algorithm))
    else {
        return RegisterExchange {
            challenge,
            answer: None,
            contact,
        };
    };
    let cnonce = format!(
        "{:016x}",
        std::process::id() as u64 * 0x9e37_79b9 + me.port() as u64
    );
    let auth = digest_authorization(&c, user, password, "REGISTER", &uri, &cnonce);
    let second = exchange(
        &sock,
        to,
        request(2, Some(auth)).as_bytes(),
        Duration::from_secs(3),
    );
    RegisterExchange {
        challenge,
        answer: second.last().cloned(),
        contact,
    }
}

// ---------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct RecordingFiles {
    pub wav: PathBuf,
    pub json: PathBuf,
}

pub struct Recording {
    pub path: PathBuf,
    pub spec: hound::WavSpec,
    pub left: Vec<i16>,
    pub right: Vec<i16>,
}

impl Recording {
    pub fn frames(&self) -> usize {
        self.left.len()
    }
    pub fn duration_secs(&self) -> f64 {
        self.left.len() as f64 / self.spec.sample_rate.max(1) as f64
    }
}

/// Reads a WAV (or a `.wav.part`) with hound: every sample the header
/// announces must be there. Mono is returned as LEFT only.
pub fn read_wav(path: &Path) -> Result<Recording, String> {
    let mut reader = hound::WavReader::open(path)
        .map_err(|e| format!("hound cannot open {}: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!("{}: not 16-bit PCM: {spec:?}", path.display()));
    }
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("hound cannot read the samples of {}: {e}", path.display()))?;
    let ch = spec.channels.max(1) as usize;
    let left = samples.iter().step_by(ch).copied().collect();
    let right = if ch > 1 {
        samples.iter().skip(1).step_by(ch).copied().collect()
    } else {
        vec![]
    };
    Ok(Recording {
        path: path.to_path_buf(),
        spec,
        left,
        right,
    })
}

/// Goertzel power of `x` at `hz` (sample rate [`RATE`]).
pub fn goertzel(x: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// Amplitude (fraction of full scale) of the `hz` component of a frame.
pub fn tone_level(frame: &[i16], hz: f64) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    2.0 * goertzel(frame, hz).max(0.0).sqrt() / frame.len() as f64 / 32768.0
}

/// A frame "has" a tone at or above this level (-26 dBFS; the tones are -6 dBFS).
pub const TONE_PRESENT: f64 = 0.05;

#[derive(Clone, Debug, Default)]
pub struct ChannelAnalysis {
    pub frames: usize,
    /// Per-frame levels of each tone.
    pub caller: Vec<f64>,
    pub agent: Vec<f64>,
    /// Summed Goertzel power of each tone over the channel.
    pub caller_power: f64,
    pub agent_power: f64,
}

impl ChannelAnalysis {
    pub fn frac_with(levels: &[f64]) -> f64 {
        if levels.is_empty() {
            return 0.0;
        }
        levels.iter().filter(|&&l| l >= TONE_PRESENT).count() as f64 / levels.len() as f64
    }
    pub fn caller_fraction(&self) -> f64 {
        Self::frac_with(&self.caller)
    }
    pub fn agent_fraction(&self) -> f64 {
        Self::frac_with(&self.agent)
    }
    pub fn loud_fraction(&self) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        (0..self.frames)
            .filter(|&i| self.caller[i] >= TONE_PRESENT || self.agent[i] >= TONE_PRESENT)
            .count() as f64
            / self.frames as f64
    }
    /// dB by which the caller tone exceeds the agent tone (negative: below).
    pub fn caller_over_agent_db(&self) -> f64 {
        (10.0 * ((self.caller_power + 1e-9) / (self.agent_power + 1e-9)).log10())
            .clamp(-120.0, 120.0)
    }
    /// Fraction of frames in [from, to) seconds with each tone.
    pub fn window(&self, from: f64, to: f64) -> (f64, f64) {
        let fps = RATE as f64 / FRAME as f64;
        let a = ((from * fps).floor().max(0.0) as usize).min(self.frames);
        let b = ((to * fps).ceil().max(0.0) as usize).min(self.frames);
        if b <= a {
            return (0.0, 0.0);
        }
        (
            Self::frac_with(&self.caller[a..b]),
            Self::frac_with(&self.agent[a..b]),
        )
    }
    pub fn summary(&self) -> String {
        format!(
            "{} frames: {:.0}% with the caller tone, {:.0}% with the agent tone, caller/agent {:+.1} dB",
            self.frames,
            100.0 * self.caller_fraction(),
            100.0 * self.agent_fraction(),
            self.caller_over_agent_db()
        )
    }
    /// A 1-line-per-second picture: `C` caller tone, `A` agent, `B` both, `.` neither.
    pub fn timeline(&self) -> String {
        let mut s = String::new();
        for (i, (c, a)) in self.caller.iter().zip(&self.agent).enumerate() {
            if i > 0 && i % 50 == 0 {
                s.push('|');
            }
            s.push(match (*c >= TONE_PRESENT, *a >= TONE_PRESENT) {
                (true, true) => 'B',
                (true, false) => 'C',
                (false, true) => 'A',
                (false, false) => '.',
            });
        }
        s
    }
}

pub fn analyse_channel(x: &[i16]) -> ChannelAnalysis {
    let mut a = ChannelAnalysis::default();
    for frame in x.chunks_exact(FRAME) {
        a.frames += 1;
        let pc = goertzel(frame, CALLER_HZ);
        let pa = goertzel(frame, AGENT_HZ);
        a.caller_power += pc.max(0.0);
        a.agent_power += pa.max(0.0);
        a.caller.push(tone_level(frame, CALLER_HZ));
        a.agent.push(tone_level(frame, AGENT_HZ));
    }
    a
}

/// What a finished call's recording must look like.
#[derive(Clone, Debug)]
pub struct CallExpect {
    /// The call length (answer to hangup) in seconds; the WAV must be within
    /// `length_tolerance` of it.
    pub length: f64,
    pub length_tolerance: f64,
    /// The trunk's Call-ID, expected as the sidecar's `call_id`.
    pub call_id: Option<String>,
    /// Minimum fraction of 20 ms frames carrying the caller tone on LEFT / the agent tone on RIGHT.
    pub min_caller_fraction: f64,
    pub min_agent_fraction: f64,
    /// Each channel's own tone must beat the other's by this much (no leak).
    pub min_separation_db: f64,
}

impl CallExpect {
    pub fn new(length: f64, call_id: Option<String>) -> CallExpect {
        CallExpect {
            length,
            length_tolerance: 0.100,
            call_id,
            min_caller_fraction: 0.85,
            min_agent_fraction: 0.85,
            min_separation_db: 20.0,
        }
    }
}

/// Checks a finished recording: format, layout, length, content per
/// channel, and the JSON sidecar. Returns the analysis for extra checks.
pub fn check_call_recording(
    env: &Env,
    files: &RecordingFiles,
    expect: &CallExpect,
) -> (Recording, ChannelAnalysis, ChannelAnalysis) {
    // <recordings>/YYYY/MM/DD/<id>.wav
    let rel = files.wav.strip_prefix(&env.recordings).unwrap_or_else(|_| {
        panic!(
            "{} is not under {}",
            files.wav.display(),
            env.recordings.display()
        )
    });
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    assert!(
        parts.len() == 4 && digits(&parts[0], 4) && digits(&parts[1], 2) && digits(&parts[2], 2),
        "recording must be at <recordings>/YYYY/MM/DD/<id>.wav, got {}",
        rel.display()
    );

    let rec = read_wav(&files.wav).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            rec.spec.channels,
            rec.spec.sample_rate,
            rec.spec.bits_per_sample
        ),
        (2, RATE, 16),
        "recording must be stereo 8 kHz 16-bit PCM: {:?}",
        rec.spec
    );
    let left = analyse_channel(&rec.left);
    let right = analyse_channel(&rec.right);
    let picture = format!(
        "LEFT  {}\n  {}\nRIGHT {}\n  {}",
        left.summary(),
        left.timeline(),
        right.summary(),
        right.timeline()
    );

    let dur = rec.duration_secs();
    eprintln!(
        "[{}] {}: {dur:.3} s (call {:.3} s)\n{picture}",
        env.name,
        files.wav.display(),
        expect.length
    );
    assert!(
        (dur - expect.length).abs() <= expect.length_tolerance,
        "recording lasts {dur:.3} s, the call lasted {:.3} s (tolerance {:.0} ms): {}\n{picture}",
        expect.length,
        expect.length_tolerance * 1000.0,
        files.wav.display()
    );
    assert!(
        left.caller_fraction() >= expect.min_caller_fraction,
        "LEFT must carry the caller's {CALLER_HZ} Hz tone for >= {:.0}% of the call\n{picture}",
        expect.min_caller_fraction * 100.0
    );
    assert!(
        right.agent_fraction() >= expect.min_agent_fraction,
        "RIGHT must carry the agent's {AGENT_HZ} Hz tone for >= {:.0}% of the call\n{picture}",
        expect.min_agent_fraction * 100.0
    );
    assert!(
        left.caller_over_agent_db() >= expect.min_separation_db,
        "the agent's tone leaks into LEFT: caller only {:+.1} dB over agent (need {} dB)\n{picture}",
        left.caller_over_agent_db(),
        expect.min_separation_db
    );
    assert!(
        -right.caller_over_agent_db() >= expect.min_separation_db,
        "the caller's tone leaks into RIGHT: agent only {:+.1} dB over caller (need {} dB)\n{picture}",
        -right.caller_over_agent_db(),
        expect.min_separation_db
    );

    check_sidecar(files, dur, expect.call_id.as_deref());
    (rec, left, right)
}

/// The sidecar: required fields, consistent times, sha256 of the WAV, path.
pub fn check_sidecar(files: &RecordingFiles, wav_secs: f64, call_id: Option<&str>) {
    let text = fs::read_to_string(&files.json)
        .unwrap_or_else(|e| panic!("reading {}: {e}", files.json.display()));
    let json = serde_json::from_str::<serde_json::Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", files.json.display()));
    let ctx = || format!("{}:\n{text}", files.json.display());
    for key in [
        "call_id",
        "caller",
        "answered_at_ms",
        "ended_at_ms",
        "duration_ms",
        "sha256",
        "path",
    ] {
        assert!(
            json.get(key).is_some(),
            "sidecar lacks \"{key}\": {}",
            ctx()
        );
    }
    let num = |k: &str| {
        json.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("sidecar \"{k}\" must be a number: {}", ctx()))
    };
    let string = |k: &str| {
        json.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("sidecar \"{k}\" must be a string: {}", ctx()))
            .to_string()
    };
    if let Some(cid) = call_id {
        assert_eq!(
            string("call_id"),
            cid,
            "sidecar call_id must be the trunk's Call-ID: {}",
            ctx()
        );
    }
    // "caller" may be the number itself or an object holding it (e.g. {"number": ...}).
    let caller = json.get("caller").expect("checked above");
    let digits = CALLER_NUMBER.trim_start_matches("+1");
    assert!(
        contains_text(caller, digits),
        "sidecar caller should carry the trunk's From number {CALLER_NUMBER}: {}",
        ctx()
    );
    let (answered, ended, duration) = (
        num("answered_at_ms"),
        num("ended_at_ms"),
        num("duration_ms"),
    );
    assert!(
        answered > 1.0e12 && ended >= answered,
        "answered_at_ms/ended_at_ms must be Unix epoch milliseconds, ended >= answered: {}",
        ctx()
    );
    assert!(
        (ended - answered - duration).abs() <= 5.0,
        "duration_ms must be ended_at_ms - answered_at_ms: {}",
        ctx()
    );
    assert!(
        (duration / 1000.0 - wav_secs).abs() <= 0.100,
        "sidecar duration_ms {duration} vs WAV length {:.0} ms: {}",
        wav_secs * 1000.0,
        ctx()
    );
    let bytes = fs::read(&files.wav).expect("read wav");
    let digest = sha256_hex(&bytes);
    assert_eq!(
        string("sha256").to_ascii_lowercase(),
        digest,
        "sidecar sha256 must be the SHA-256 of the final WAV file: {}",
        ctx()
    );
    let path = string("path");
    assert_eq!(
        Path::new(&path).file_name(),
        files.wav.file_name(),
        "sidecar path must name the WAV: {}",
        ctx()
    );
}

/// Whether any string inside `v` contains `needle`.
fn contains_text(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains(needle),
        serde_json::Value::Array(items) => items.iter().any(|v| contains_text(v, needle)),
        serde_json::Value::Object(kv) => kv.values().any(|v| contains_text(v, needle)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// SHA-256 of a file's bytes (the sidecar's checksum)
// ---------------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Writes a stereo 16-bit 8 kHz WAV (for the harness self-check).
pub fn write_stereo_wav(path: &Path, left: &[i16], right: &[i16]) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for i in 0..left.len().max(right.len()) {
        w.write_sample(*left.get(i).unwrap_or(&0)).unwrap();
        w.write_sample(*right.get(i).unwrap_or(&0)).unwrap();
    }
    w.finalize().unwrap();
}

/// Appends a line to a file (used to leave notes next to the logs).
pub fn note(env: &Env, text: &str) {
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.dir.join("notes.txt"))
    {
        let _ = writeln!(f, "{text}");
    }
}

/// Polls `f` every 50 ms until it returns Some, or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}

pub fn file_name(p: &Path) -> String {
    name_of(p)
}

/// CPU time a process's threads have had so far, from /proc (nanoseconds; finer than the
/// clock ticks of /proc/PID/stat).
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stat = fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}
