//! Real softphones for the end-to-end tests: Debian's `baresip` and `linphonec`, each
//! configured in a temp folder, on loopback only, answering every call at once, its microphone a
//! WAV file and what it hears written to a WAV, driven the way a user's buttons would be
//! (baresip's `ctrl_tcp` module, linphonec's command line).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{env_flag, Env, Ports};

/// True if the tests of softphone `program` (`baresip`, `linphonec`) should run. Panics when
/// it is missing, unless `SCREENPOP_SKIP_SOFTPHONES=1` (and not
/// `SCREENPOP_REQUIRE_SOFTPHONES=1`).
pub fn softphone_or_skip(test: &str, program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if env_flag("SCREENPOP_SKIP_SOFTPHONES") && !env_flag("SCREENPOP_REQUIRE_SOFTPHONES") {
        eprintln!("SKIP {test}: {program} is not installed (SCREENPOP_SKIP_SOFTPHONES=1)");
        return false;
    }
    panic!(
        "{test}: the softphone tests need {program} (Debian: baresip-core, linphone-cli); \
         .ci/run installs them and sets SCREENPOP_REQUIRE_SOFTPHONES=1"
    );
}

/// What the tests do with a phone, whichever it is.
pub trait Phone {
    /// Waits for the 200 to its REGISTER.
    fn wait_registered(&self, timeout: Duration);
    /// The phone's hold button (re-INVITE `a=sendonly`).
    fn hold(&mut self);
    /// Its resume button.
    fn resume(&mut self);
    /// A key pressed during the call, sent as RFC 4733 events.
    fn press(&mut self, digit: char);
    /// What it heard in its first call, once that call has ended and the file is complete.
    fn heard(&self) -> Option<PathBuf>;
    fn log(&self) -> String;
    /// Quits cleanly (un-registers) and waits for the process.
    fn quit(self);
}

/// How a test starts a phone: in `env.dir/name`, on its own block of `ports`, sending `mic`,
/// registering as `(user, password)`.
pub type StartPhone<P> = fn(&Env, &str, &Ports, &Path, (&str, &str)) -> P;

/// `path` once its header announces samples (writers fill in the length on close).
fn complete_wav(path: PathBuf) -> Option<PathBuf> {
    read_heard(&path).filter(|s| !s.is_empty()).map(|_| path)
}

/// The 16-bit mono samples of what a phone heard. A phone's own WAV writer is not what is
/// tested: linphonec's announces a few more bytes than it wrote, so the data chunk is read as
/// far as it goes rather than refused as `read_wav` does with recordings.
pub fn read_heard(path: &Path) -> Option<Vec<i16>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut format_ok = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let f = bytes.get(body..body + 16)?;
            let (format, channels) = (
                u16::from_le_bytes([f[0], f[1]]),
                u16::from_le_bytes([f[2], f[3]]),
            );
            let bits = u16::from_le_bytes([f[14], f[15]]);
            format_ok = format == 1 && channels == 1 && bits == 16;
        } else if id == b"data" {
            if !format_ok || len == 0 {
                return None;
            }
            let data = &bytes[body..bytes.len().min(body + len)];
            return Some(
                data.chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            );
        }
        at = body + len + (len & 1);
    }
    None
}

fn wait_for_log(
    what: &str,
    log: impl Fn() -> String,
    found: impl Fn(&str) -> bool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = log();
        if text.lines().any(&found) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        Baresip::start_on(env, name, ports, mic, account, None, "phone")
    }

    /// A caller that registers nowhere and presents `user` (a number) in its From.
    pub fn caller_as(env: &Env, name: &str, ports: &Ports, mic: &Path, user: &str) -> Baresip {
        Baresip::start_on(env, name, ports, mic, None, None, user)
    }

    /// As [`Baresip::start`]; with `tls = Some(ca)` the account registers over TLS to the
    /// server's TLS port, trusting `ca`.
    fn start_on(
        env: &Env,
        name: &str,
        ports: &Ports,
        mic: &Path,
        account: Option<(&str, &str)>,
        tls: Option<&Path>,
        caller: &str,
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
             snd_path\t\t{heard}\n{cafile}",
            media + 14,
            mic = mic.display(),
            heard = heard_dir.display(),
            // Over TLS the phone insists on SRTP (SDES), as a secure deployment would.
            cafile = tls
                .map(|ca| format!("sip_cafile\t\t{}\nmodule\t\t\tsrtp.so\n", ca.display()))
                .unwrap_or_default(),
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        let common = "answermode=auto;audio_codecs=PCMU,PCMA;medianat=;mwi=no";
        let (user, account) =
            match account {
                Some((user, password)) => {
                    (
                        user.to_string(),
                        format!(
                    "<sip:{user}@127.0.0.1:{server};transport={transport}>;auth_user={user};\
                     auth_pass={password};{common};regint=60{srtp}\n",
                    server = if tls.is_some() {
                        env.ports.tls()
                    } else {
                        env.ports.server_sip()
                    },
                    transport = if tls.is_some() { "tls" } else { "udp" },
                    srtp = if tls.is_some() { ";mediaenc=srtp-mand" } else { "" },
                ),
                    )
                }
                None => (
                    caller.to_string(),
                    format!(
                        "<sip:{caller}@127.0.0.1:{sip_port}>;{common};regint=0{srtp}\n",
                        srtp = if tls.is_some() {
                            ";mediaenc=srtp-mand"
                        } else {
                            ""
                        },
                    ),
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

    /// A registering baresip, as [`StartPhone`].
    pub fn registered(
        env: &Env,
        name: &str,
        ports: &Ports,
        mic: &Path,
        account: (&str, &str),
    ) -> Baresip {
        Baresip::start(env, name, ports, mic, Some(account))
    }

    /// A baresip that registers nowhere and calls over TLS trusting `ca`, insisting on SRTP:
    /// a trunk or PBX that only speaks TLS and SRTP.
    pub fn caller_tls(env: &Env, name: &str, ports: &Ports, mic: &Path, ca: &Path) -> Baresip {
        Baresip::start_on(env, name, ports, mic, None, Some(ca), "phone")
    }

    /// A baresip registering over TLS (the env's server must have been started with
    /// `center_tls`, whose certificate it trusts).
    pub fn registered_tls(
        env: &Env,
        name: &str,
        ports: &Ports,
        mic: &Path,
        account: (&str, &str),
    ) -> Baresip {
        let ca = env.dir.join("server.pem");
        Baresip::start_on(env, name, ports, mic, Some(account), Some(&ca), "phone")
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

    /// The `sndfile` module's dump of what the phone heard in its first call.
    fn first_dump(&self) -> Option<PathBuf> {
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(&self.heard_dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        dumps.sort();
        dumps.into_iter().next()
    }
}

impl Phone for Baresip {
    /// The 200 to its REGISTER (`alice@127.0.0.1: {0/UDP/v4} 200 OK () [1 binding]`).
    fn wait_registered(&self, timeout: Duration) {
        let marker = format!("{}@127.0.0.1", self.user);
        wait_for_log(
            "baresip did not register",
            || self.log(),
            |l| l.contains(&marker) && l.contains("200 OK") && l.contains("binding"),
            timeout,
        );
    }

    fn hold(&mut self) {
        self.command("hold", "");
    }

    fn resume(&mut self) {
        self.command("resume", "");
    }

    fn press(&mut self, digit: char) {
        self.command("sndcode", &digit.to_string());
    }

    fn heard(&self) -> Option<PathBuf> {
        complete_wav(self.first_dump()?)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn quit(mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.command("quit", "");
        }));
        wait_exit(&mut self.child);
    }
}

/// One linphonec process (liblinphone 5), commands on its standard input.
pub struct Linphone {
    child: Child,
    stdin: std::process::ChildStdin,
    pub dir: PathBuf,
    log: PathBuf,
    heard: PathBuf,
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Linphone {
    /// Starts linphonec in `env.dir/name` on `ports` (SIP on `agent_sip`, RTP on
    /// `agent_media`), auto-answering, registering to the env's server as `user` with digest,
    /// its microphone `mic` and what it hears recorded to `heard.wav`.
    pub fn registered(
        env: &Env,
        name: &str,
        ports: &Ports,
        mic: &Path,
        (user, password): (&str, &str),
    ) -> Linphone {
        let dir = env.dir.join(name);
        // liblinphone does not start its SIP stack without its data folder.
        std::fs::create_dir_all(dir.join(".local/share/linphone")).expect("linphone dir");
        let codecs: String = [
            ("PCMU", 8000, 1, 1),
            ("PCMA", 8000, 1, 1),
            ("opus", 48000, 2, 0),
            ("speex", 16000, 1, 0),
            ("speex", 8000, 1, 0),
            ("GSM", 8000, 1, 0),
            ("G722", 8000, 1, 0),
            ("G729", 8000, 1, 0),
            ("speex", 32000, 1, 0),
            ("L16", 44100, 2, 0),
            ("L16", 44100, 1, 0),
        ]
        .iter()
        .enumerate()
        .map(|(i, (mime, rate, ch, on))| {
            format!("[audio_codec_{i}]\nmime={mime}\nrate={rate}\nchannels={ch}\nenabled={on}\n\n")
        })
        .collect();
        // Every codec it knows is listed: one left out is enabled by default. With only
        // loopback, `auto_net_state_mon=0` keeps it from deciding the network is down.
        let rc = format!(
            "[sip]\n\
             sip_port={sip}\nsip_tcp_port={sip}\nsip_tls_port=-1\nbind_address=127.0.0.1\n\
             use_ipv6=0\nregister_only_when_network_is_up=0\nguess_hostname=1\n\
             default_proxy=0\nuse_info=0\nuse_rfc2833=1\nmedia_encryption=none\n\
             inc_timeout=30\nverify_server_certs=0\n\
             auto_net_state_mon=0\n\n\
             [rtp]\naudio_rtp_port={rtp}\naudio_jitt_comp=60\nnortp_timeout=30\nrtcp_mux=0\n\n\
             [video]\ndisplay=0\ncapture=0\n\n\
             [proxy_0]\nreg_proxy=<sip:127.0.0.1:{server};transport=udp>\n\
             reg_identity=\"{user}\" <sip:{user}@127.0.0.1>\nreg_expires=60\nreg_sendregister=1\n\
             publish=0\ndial_escape_plus=0\navpf=0\n\n\
             [auth_info_0]\nusername={user}\nuserid={user}\npasswd={password}\nrealm=screenpop\n\
             domain=127.0.0.1\nalgorithm=MD5\n\n{codecs}",
            sip = ports.agent_sip(),
            rtp = ports.agent_media(),
            server = env.ports.server_sip(),
        );
        let rc_path = dir.join("linphonerc");
        std::fs::write(&rc_path, rc).expect("linphonerc");
        let log = dir.join("linphone.log");
        let heard = dir.join("heard.wav");
        let out = std::fs::File::create(dir.join("linphonec.out")).expect("linphonec out");
        let err = out.try_clone().expect("linphonec out");
        let mut child = Command::new("linphonec")
            .arg("-c")
            .arg(&rc_path)
            .args(["-a", "-d", "6", "-l"])
            .arg(&log)
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start linphonec");
        let stdin = child.stdin.take().expect("linphonec stdin");
        let mut phone = Linphone {
            child,
            stdin,
            dir,
            log,
            heard,
        };
        phone.send("soundcard use files");
        phone.send(&format!("play {}", mic.display()));
        let record = format!("record {}", phone.heard.display());
        phone.send(&record);
        phone
    }

    /// Types one command line.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("linphonec command");
        self.stdin.flush().expect("linphonec command");
    }
}

impl Phone for Linphone {
    fn wait_registered(&self, timeout: Duration) {
        wait_for_log(
            "linphonec did not register",
            || self.log(),
            |l| l.contains("LinphoneRegistrationOk"),
            timeout,
        );
    }

    fn hold(&mut self) {
        self.send("pause");
    }

    fn resume(&mut self) {
        self.send("resume");
    }

    /// linphonec sends a digit's events for about a second and handles nothing else meanwhile.
    fn press(&mut self, digit: char) {
        self.send(&digit.to_string());
    }

    fn heard(&self) -> Option<PathBuf> {
        complete_wav(self.heard.clone())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn quit(mut self) {
        self.send("quit");
        wait_exit(&mut self.child);
    }
}
