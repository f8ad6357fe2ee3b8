//! Real softphones for the end-to-end tests: Debian's `baresip`, configured in a temp folder,
//! on loopback only, answering every call at once, its microphone a WAV file and what it hears
//! written to a WAV (the `sndfile` module), driven through its `ctrl_tcp` module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{env_flag, Env, Ports};

/// True if the softphone tests should run. Panics when `baresip` is missing, unless
/// `SCREENPOP_SKIP_SOFTPHONES=1` (and not `SCREENPOP_REQUIRE_SOFTPHONES=1`).
pub fn softphones_or_skip(test: &str) -> bool {
    let found = Command::new("baresip")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if env_flag("SCREENPOP_SKIP_SOFTPHONES") && !env_flag("SCREENPOP_REQUIRE_SOFTPHONES") {
        eprintln!("SKIP {test}: baresip is not installed (SCREENPOP_SKIP_SOFTPHONES=1)");
        return false;
    }
    panic!(
        "{test}: the softphone tests need baresip (Debian: `apt-get install baresip`); \
         .ci/run installs it and sets SCREENPOP_REQUIRE_SOFTPHONES=1"
    );
}

/// Writes `seconds` of a `hz` tone as an 8 kHz mono 16-bit WAV (baresip's `aufile` source and
/// `screenpop dial --play` both read this).
pub fn write_tone_wav(path: &Path, hz: f64, seconds: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: super::RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    for s in super::tone(hz, seconds, super::TONE_AMPLITUDE) {
        w.write_sample(s).expect("wav sample");
    }
    w.finalize().expect("wav finalize");
}

/// One baresip process.
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub sip_port: u16,
    ctrl_port: u16,
    log: PathBuf,
    heard_dir: PathBuf,
    user: String,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Baresip {
    /// Starts baresip in `env.dir/name` on `ports` (its own block: SIP on `agent_sip`, control
    /// on `control(0)`, RTP from `agent_media`), sending `mic` as its microphone. With
    /// `account = Some((user, password))` it registers to the env's server with digest;
    /// without, it only answers calls sent straight to it.
    pub fn start(
        env: &Env,
        name: &str,
        ports: &Ports,
        mic: &Path,
        account: Option<(&str, &str)>,
    ) -> Baresip {
        let dir = env.dir.join(name);
        let heard_dir = dir.join("heard");
        std::fs::create_dir_all(&heard_dir).expect("baresip dir");
        let (sip_port, ctrl_port) = (ports.agent_sip(), ports.control(0));
        let media = ports.agent_media();
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             audio_player\t\tnull,null\n\
             audio_source\t\taufile,{mic}\n\
             audio_alert\t\tnull,null\n\
             audio_level\t\tno\n\
             ausrc_format\t\ts16\n\
             auplay_format\t\ts16\n\
             auenc_format\t\ts16\n\
             audec_format\t\ts16\n\
             audio_buffer\t\t20-160\n\
             rtp_ports\t\t{media}-{}\n\
             rtp_stats\t\tyes\n\
             rtcp_mux\t\tno\n\
             jitter_buffer_delay\t5-10\n\
             dns_server\t\t127.0.0.1:53\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\tsndfile.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
             snd_path\t\t{heard}\n",
            media + 14,
            mic = mic.display(),
            heard = heard_dir.display(),
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        let common = "answermode=auto;audio_codecs=PCMU,PCMA;medianat=;mwi=no";
        let (user, account) = match account {
            Some((user, password)) => (
                user.to_string(),
                format!(
                    "<sip:{user}@127.0.0.1:{server};transport=udp>;auth_user={user};\
                     auth_pass={password};{common};regint=60\n",
                    server = env.ports.server_sip()
                ),
            ),
            None => (
                "phone".to_string(),
                format!("<sip:phone@127.0.0.1:{sip_port}>;{common};regint=0\n"),
            ),
        };
        std::fs::write(dir.join("accounts"), account).expect("baresip accounts");
        let log = dir.join("baresip.log");
        let out = std::fs::File::create(&log).expect("baresip log");
        let err = out.try_clone().expect("baresip log");
        let child = Command::new("baresip")
            .args(["-4", "-n", "127.0.0.1", "-f"])
            .arg(&dir)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start baresip");
        let phone = Baresip {
            child,
            dir,
            sip_port,
            ctrl_port,
            log,
            heard_dir,
            user,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", ctrl_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "baresip never opened its control port:\n{}",
                phone.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        phone
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the 200 to its REGISTER (`alice@127.0.0.1: {0/UDP/v4} 200 OK () [1 binding]`).
    pub fn wait_registered(&self, timeout: Duration) {
        let marker = format!("{}@127.0.0.1", self.user);
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log
                .lines()
                .any(|l| l.contains(&marker) && l.contains("200 OK") && l.contains("binding"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "baresip did not register within {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one `ctrl_tcp` command (netstring-framed JSON) and returns its response.
    pub fn command(&self, command: &str, params: &str) -> Value {
        let msg = serde_json::json!({"command": command, "params": params, "token": "t"});
        let body = msg.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("baresip control");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(format!("{}:{body},", body.len()).as_bytes())
            .expect("baresip command");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // Netstrings: LEN:DATA, — events may come before the response.
            while let Some(colon) = buf.iter().position(|b| *b == b':') {
                let len: usize = std::str::from_utf8(&buf[..colon])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("baresip control: bad netstring {buf:?}"));
                if buf.len() < colon + 1 + len + 1 {
                    break;
                }
                let v: Value = serde_json::from_slice(&buf[colon + 1..colon + 1 + len])
                    .expect("baresip control JSON");
                buf.drain(..colon + 1 + len + 1);
                if v["response"] == true {
                    assert_eq!(v["ok"], true, "baresip {command} {params}: {v}");
                    return v;
                }
            }
            let n = s
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("baresip {command}: {e}\n{}", self.log()));
            assert!(n > 0, "baresip closed its control connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// What the phone heard in its first call (the `sndfile` decode dump), once its call has
    /// ended and the file is complete (libsndfile writes the header's length on close).
    pub fn heard(&self) -> Option<PathBuf> {
        let dump = self.first_dump()?;
        super::read_wav(&dump)
            .ok()
            .filter(|r| r.frames() > 0)
            .map(|_| dump)
    }

    fn first_dump(&self) -> Option<PathBuf> {
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(&self.heard_dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        dumps.sort();
        dumps.into_iter().next()
    }

    /// Quits cleanly (un-registers) and waits for the process.
    pub fn quit(mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.command("quit", "");
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
