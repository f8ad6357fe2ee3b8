//! SIP profiles (`sip-profiles/*.toml`) and the command-line/environment settings.
//!
//! A profile describes one kind of PBX or gateway: which peers are trusted (by address or by
//! digest), how caller ID is read, which codecs and RTP ports to use, where calls go until the
//! ACD lands, which phones may register with us and which trunks we register to.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::digest::Algorithm;
use crate::sip::sdp::Codec;

/// Errors loading a profile: each names the file and the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("profile {path}: field `{field}`: {why}")]
    Field {
        path: PathBuf,
        field: &'static str,
        why: String,
    },
    #[error("--rtp-ports {0:?}: expected LOW-HIGH with LOW < HIGH, both even-aligned ports")]
    RtpPorts(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Digest realm for the registrar and for trunks that authenticate.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// ISO 3166 region used to read national numbers (e.g. "US", "GB", "CN").
    #[serde(default = "default_region")]
    pub default_region: String,
    /// The area code as written nationally (`"010"`), for a PBX that delivers local landline
    /// numbers without it (`62345678`).
    #[serde(default)]
    pub area_code: Option<String>,
    /// Headers that carry the caller's number, in order of preference.
    #[serde(default = "default_caller_id_headers")]
    pub caller_id_headers: Vec<String>,
    /// Codec preference, best first: "PCMU", "PCMA".
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// RTP port range "LOW-HIGH" (overridden by --rtp-ports).
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: String,
    /// Seconds an agent phone may ring before the call is withdrawn.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    /// On SIGTERM, how long calls in progress may go on (new ones get 503) before they are
    /// hung up and screenpop exits.
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
    /// Hang up a call whose caller or agent leg sends no RTP for this many seconds while it
    /// is up and not on hold (a gateway or phone that died without a BYE); 0 turns it off.
    #[serde(default = "default_rtp_timeout")]
    pub rtp_timeout_secs: u64,
    /// Create a customer record for a caller whose number matches none (never for withheld
    /// numbers).
    #[serde(default = "yes")]
    pub create_customers_from_calls: bool,
    /// The smallest session interval taken from a trunk (RFC 4028 `Min-SE`, seconds): a
    /// shorter `Session-Expires` gets 422. 90 is the RFC's floor; lower it only in tests.
    #[serde(default = "default_min_se")]
    pub min_se_secs: u64,
    /// The session interval asked of agents' phones (RFC 4028 as UAC, seconds): a phone
    /// that dies mid-call without a BYE is found by its missing refreshes. 0 asks for none.
    #[serde(default = "default_session_expires")]
    pub session_expires_secs: u64,
    /// SIP timer T1 in milliseconds (RFC 3261 §17.1.1.1: 500; lower it only on networks whose
    /// round trip is known to be short). Every transaction timer scales with it.
    #[serde(default = "default_t1_ms")]
    pub sip_t1_ms: u64,
    /// Address written into SDP and Contact when the SIP socket is bound to a wildcard.
    #[serde(default)]
    pub public_addr: Option<IpAddr>,
    /// Digest algorithms the registrar offers phones in its 401, in this order, and the only
    /// ones it accepts. MD5 alone by default: several phones (baresip/libre, SIPp) give up on
    /// a REGISTER as soon as a challenge they cannot answer comes first or at all, whereas
    /// every phone answers MD5. `["SHA-256", "MD5"]` adds RFC 8760 for phones that handle it.
    #[serde(default = "default_digest_algorithms")]
    pub digest_algorithms: Vec<Algorithm>,
    #[serde(default)]
    pub trust: Trust,
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub registrations: Vec<Registration>,
    /// SIP over TLS: a listener (port 5061 by default) with this certificate and key, reloaded
    /// on SIGHUP; TLS to trunks and registrars checks their certificates against `ca` and the
    /// system's store. Relative paths are read from the profile's folder. Absent: no TLS.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsSettings>,
    /// When agents' phones are offered SRTP (SDES, RFC 4568): `"tls"` (phones reached over
    /// TLS, where the keys in the SDP are protected), `"always"` or `"never"`.
    #[serde(default)]
    pub agent_srtp: AgentSrtp,
    /// A WAV callers hear on hold (any common format; converted once at start). Absent: a
    /// built-in chime. Relative paths are read from the profile's folder.
    #[serde(default)]
    pub hold_music: Option<PathBuf>,
    /// A WAV queued callers hear (as early media) instead of ringback. Absent: ringback.
    #[serde(default)]
    pub queue_music: Option<PathBuf>,
    /// The gateway screenpop places calls through (click-to-dial, transfers to numbers,
    /// campaigns). Absent: screenpop never calls out.
    #[serde(default)]
    pub outbound: Option<Outbound>,
    /// How campaigns send SMS and hear replies.
    #[serde(default)]
    pub sms: Sms,
    /// Password guessing: failed digest authentications that block a source, and for how
    /// long (trusted addresses are never blocked).
    #[serde(default)]
    pub guard: crate::guard::GuardConfig,
    /// Floods: the SIP messages a second a source may send before it is dropped for a while
    /// (trusted addresses have their own, higher limit and are never blocked).
    #[serde(default)]
    pub flood: crate::flood::FloodConfig,
    /// What one peer may hold of the server: connections, time and bytes.
    #[serde(default)]
    pub limits: Limits,
    /// How long recordings are kept, what becomes of them after, and when the disk is low.
    #[serde(default)]
    pub retention: Retention,
}

/// `[retention]`: recordings older than their queue's `keep_recordings_days` (or `keep_days`
/// here) are deleted or moved to `archive_dir` every `check_every_secs`, each in the audit
/// log, their contact logs kept and marked; the recordings' disk is watched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Days a recording is kept when its queue says nothing; 0 keeps it for ever.
    pub keep_days: u32,
    /// What happens to an expired recording: `"delete"` or `"archive"` (moved to
    /// `archive_dir`, still playable from there).
    pub action: RetentionAction,
    /// Where archived recordings go (relative: to the working directory), in the same
    /// day folders as under the recordings directory.
    pub archive_dir: PathBuf,
    /// How often expired recordings are looked for.
    pub check_every_secs: u64,
    /// Below this share of the recordings' disk free (percent), a warning and
    /// `screenpop_recordings_disk_low` 1; 0 turns the watch off.
    pub low_disk_percent: u8,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_days: 0,
            action: RetentionAction::Delete,
            archive_dir: PathBuf::from("recordings-archive"),
            check_every_secs: 3600,
            low_disk_percent: 10,
        }
    }
}

/// See [`Retention::action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    Delete,
    Archive,
}

/// `[limits]`: what one peer may hold of the server, so that slow or hostile clients cost
/// their own connection and not everyone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// SIP over TCP and TLS: inbound connections in all, and from one address (trusted
    /// addresses have no cap of their own).
    pub tcp_connections: usize,
    pub tcp_connections_per_address: usize,
    /// How long a SIP message may take to arrive whole once its first byte has.
    pub tcp_partial_secs: u64,
    /// How long a SIP connection may stay silent.
    pub tcp_idle_secs: u64,
    /// The largest HTTP request body (uploads of audio have their own, larger limit).
    pub http_body_bytes: usize,
    /// How long an HTTP client may take to send a request's headers, and to start the next
    /// one on a kept-alive connection.
    pub http_header_secs: u64,
    /// Live WebSocket connections (desktops, wallboards) per user.
    pub ws_per_user: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tcp_connections: 10_000,
            tcp_connections_per_address: 64,
            tcp_partial_secs: 10,
            tcp_idle_secs: 600,
            http_body_bytes: 1 << 20,
            http_header_secs: 30,
            ws_per_user: 8,
        }
    }
}

impl Limits {
    /// The SIP stream limits, within sane bounds (a zero would refuse every phone).
    pub fn streams(&self) -> crate::transport::StreamLimits {
        crate::transport::StreamLimits {
            connections: self.tcp_connections.max(1),
            per_address: self.tcp_connections_per_address.max(1),
            partial: std::time::Duration::from_secs(self.tcp_partial_secs.clamp(1, 3600)),
            idle: std::time::Duration::from_secs(self.tcp_idle_secs.clamp(1, 86_400)),
        }
    }

    /// The HTTP body limit, at least enough for any JSON request the API takes.
    pub fn http_body(&self) -> usize {
        self.http_body_bytes.max(16 * 1024)
    }
}

/// `[sms]`: how campaigns send SMS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sms {
    /// `"sip"`: a MESSAGE (RFC 3428) through `[outbound]`, with its URI and credentials.
    #[serde(default)]
    pub via: SmsVia,
    /// The sender shown on the customer's phone; absent: `[outbound] caller_id`.
    #[serde(default)]
    pub sender: Option<String>,
    /// A reply that is one of these words (any case, alone) opts the customer out of SMS.
    #[serde(default = "default_opt_out_words")]
    pub opt_out_words: Vec<String>,
    /// The gateways whose MESSAGEs are customers' replies (their addresses). A MESSAGE from
    /// anywhere else gets 403: a phone or a PBX extension on a trusted network must not be
    /// able to opt a customer out by forging a From. Empty: replies are not taken.
    #[serde(default)]
    pub reply_from: Vec<ipnet::IpNet>,
    /// `[sms.smpp]`: the SMS center, when `via = "smpp"`.
    #[serde(default)]
    pub smpp: Option<Smpp>,
}

/// `[sms.smpp]`: an SMS center reached over SMPP 3.4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smpp {
    /// `host:port` (2775 is usual).
    pub address: String,
    pub system_id: String,
    pub password: String,
    #[serde(default)]
    pub system_type: String,
    /// `"transceiver"` (receipts and replies on the same link) or `"transmitter"`.
    #[serde(default = "default_smpp_bind")]
    pub bind: String,
    /// Submits awaiting their response, at most.
    #[serde(default = "default_smpp_window")]
    pub window: usize,
    /// Idle seconds before an `enquire_link`.
    #[serde(default = "default_enquire_link")]
    pub enquire_link_secs: u64,
}

fn default_smpp_bind() -> String {
    "transceiver".into()
}
fn default_smpp_window() -> usize {
    10
}
fn default_enquire_link() -> u64 {
    30
}

impl Default for Sms {
    fn default() -> Sms {
        Sms {
            via: SmsVia::default(),
            sender: None,
            opt_out_words: default_opt_out_words(),
            reply_from: Vec::new(),
            smpp: None,
        }
    }
}

/// The way SMS leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsVia {
    #[default]
    Sip,
    /// To an SMS center over SMPP 3.4 (`[sms.smpp]`).
    Smpp,
}

fn default_opt_out_words() -> Vec<String> {
    ["TD", "T", "STOP", "UNSUBSCRIBE", "退订"]
        .iter()
        .map(|w| w.to_string())
        .collect()
}

/// `[outbound]`: the gateway for calls screenpop places, and what it may call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// The Request-URI, `sip:{number}@host:port`; `{number}` is written per `number_format`
    /// (`{e164}` and `{national}` are there too).
    pub uri: String,
    #[serde(default)]
    pub number_format: NumberFormat,
    /// Digest credentials, when the gateway challenges (401 or 407).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The number presented to the called party (From and P-Asserted-Identity).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// What may be called: `national` (fixed-line and mobile numbers of `default_region`),
    /// `mobile`, `toll_free`, or E.164 prefixes like `"+44*"` (a number without `*` is that
    /// number only). Absent: `["national"]`.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// How long the called number may ring before screenpop gives up.
    #[serde(default = "default_outbound_ring")]
    pub ring_timeout_secs: u64,
}

/// How `{number}` is written in the gateway's URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// `+8613800138000`.
    #[default]
    E164,
    /// E.164 without the plus: `8613800138000`.
    Digits,
    /// As dialled inside the country: `13800138000`, `2015550123`.
    National,
}

fn default_outbound_ring() -> u64 {
    60
}

/// When screenpop offers SRTP to an agent's phone. Trunks that offer SRTP get it back
/// whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentSrtp {
    Never,
    /// Only to phones reached over TLS: SDES keys sent in clear SIP protect nothing.
    #[default]
    Tls,
    Always,
}

impl AgentSrtp {
    /// Whether a phone reached over `transport` is offered SRTP.
    pub fn offers(self, transport: crate::sip::peer::Transport) -> bool {
        match self {
            AgentSrtp::Never => false,
            AgentSrtp::Tls => transport == crate::sip::peer::Transport::Tls,
            AgentSrtp::Always => true,
        }
    }
}

/// Peers whose requests are accepted without authentication.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
}

/// A trunk: where calls come from and, until the ACD lands, which agent they go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: String,
    /// Source addresses of this trunk.
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// Digest credentials a trunk that is not trusted by address must present (407 challenge).
    #[serde(default)]
    pub digest: Option<Credentials>,
    /// The algorithms this trunk may answer the 407 with; the profile's `digest_algorithms`
    /// when not given. The 407 goes out before the trunk is known, so it offers every digest
    /// trunk's algorithms; the answer must use one of this trunk's own.
    #[serde(default)]
    pub digest_algorithms: Option<Vec<Algorithm>>,
    /// Agent target: a SIP URI (`sip:2001@pbx.local`) or `user:NAME` for a phone registered
    /// with screenpop's registrar.
    #[serde(default)]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A phone that may register with screenpop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub password: String,
}

/// Registration to an upstream registrar (a trunk that needs it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Registrar URI, e.g. `sip:sip.carrier.example:5060`.
    pub registrar: String,
    /// Address-of-record user.
    pub user: String,
    /// Authentication user when it differs from `user`.
    #[serde(default)]
    pub auth_user: Option<String>,
    pub password: String,
    #[serde(default = "default_expiry")]
    pub expires: u32,
}

fn default_realm() -> String {
    "screenpop".into()
}
fn default_region() -> String {
    "US".into()
}
fn default_caller_id_headers() -> Vec<String> {
    vec![
        "P-Asserted-Identity".into(),
        "Remote-Party-ID".into(),
        "From".into(),
    ]
}
fn default_codecs() -> Vec<String> {
    vec!["PCMU".into(), "PCMA".into()]
}
fn default_rtp_ports() -> String {
    "20000-29999".into()
}
fn default_ring_timeout() -> u64 {
    30
}
fn default_drain() -> u64 {
    300
}
fn yes() -> bool {
    true
}
fn default_rtp_timeout() -> u64 {
    60
}
fn default_session_expires() -> u64 {
    1800
}
fn default_min_se() -> u64 {
    90
}
fn default_t1_ms() -> u64 {
    500
}
fn default_expiry() -> u32 {
    3600
}
fn default_digest_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Md5]
}

impl Profile {
    /// Loads a profile by name or by path. A name is looked up as `sip-profiles/NAME.toml`
    /// under the working folder first, then among the profiles built into the binary, so an
    /// installed `screenpop serve` starts on its defaults from any folder.
    pub fn load(name_or_path: &str) -> Result<Profile, ConfigError> {
        let by_path = name_or_path.ends_with(".toml") || name_or_path.contains('/');
        let path = if by_path {
            PathBuf::from(name_or_path)
        } else {
            Path::new("sip-profiles").join(format!("{name_or_path}.toml"))
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !by_path && e.kind() == std::io::ErrorKind::NotFound => {
                match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
                    Some((_, text)) => {
                        return Profile::parse(
                            text,
                            PathBuf::from(format!("(built-in) {name_or_path}")),
                        )
                    }
                    None => return Err(ConfigError::Read { path, source: e }),
                }
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Profile::parse(&text, path)
    }

    /// Parses and checks a profile's text; `path` names it in errors.
    pub fn parse(text: &str, path: PathBuf) -> Result<Profile, ConfigError> {
        let mut profile: Profile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            for file in [profile.hold_music.as_mut(), profile.queue_music.as_mut()]
                .into_iter()
                .flatten()
            {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        if let (Some(tls), Some(dir)) = (profile.tls.as_mut(), path.parent()) {
            for file in [Some(&mut tls.cert), Some(&mut tls.key), tls.ca.as_mut()]
                .into_iter()
                .flatten()
            {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        profile.codec_prefs().map_err(|why| ConfigError::Field {
            path: path.clone(),
            field: "codecs",
            why,
        })?;
        crate::phone::region(&profile.default_region).map_err(|e| ConfigError::Field {
            path: path.clone(),
            field: "default_region",
            why: e.to_string(),
        })?;
        profile.number_plan().map_err(|e| ConfigError::Field {
            path: path.clone(),
            field: "area_code",
            why: e.to_string(),
        })?;
        if let Some(o) = &profile.outbound {
            let plan = profile.number_plan().map_err(|e| ConfigError::Field {
                path: path.clone(),
                field: "area_code",
                why: e.to_string(),
            })?;
            crate::calls::dialplan::DialPlan::new(o, plan).map_err(|(field, why)| {
                ConfigError::Field {
                    path: path.clone(),
                    field,
                    why,
                }
            })?;
        }
        if profile.min_se_secs == 0 {
            return Err(ConfigError::Field {
                path,
                field: "min_se_secs",
                why: "must be at least 1 (RFC 4028 recommends 90)".into(),
            });
        }
        if !(10..=5000).contains(&profile.sip_t1_ms) {
            return Err(ConfigError::Field {
                path,
                field: "sip_t1_ms",
                why: format!("{} is outside 10..=5000", profile.sip_t1_ms),
            });
        }
        parse_port_range(&profile.rtp_ports).map_err(|_| ConfigError::Field {
            path: path.clone(),
            field: "rtp_ports",
            why: format!("{:?} is not LOW-HIGH", profile.rtp_ports),
        })?;
        if profile.digest_algorithms.is_empty() {
            return Err(ConfigError::Field {
                path,
                field: "digest_algorithms",
                why: "offers no algorithm (MD5, SHA-256)".into(),
            });
        }
        for t in &profile.trunks {
            if t.digest_algorithms.as_ref().is_some_and(Vec::is_empty) {
                return Err(ConfigError::Field {
                    path,
                    field: "trunks.digest_algorithms",
                    why: format!("trunk {:?} offers no algorithm (MD5, SHA-256)", t.name),
                });
            }
            if let Some(a) = &t.agent {
                if !a.starts_with("user:") && crate::sip::Uri::parse(a).is_err() {
                    return Err(ConfigError::Field {
                        path,
                        field: "trunks.agent",
                        why: format!("{a:?} is neither a SIP URI nor user:NAME"),
                    });
                }
            }
        }
        Ok(profile)
    }

    /// How numbers are read: `default_region` and `area_code`.
    pub fn number_plan(&self) -> Result<crate::phone::NumberPlan, crate::phone::PhoneError> {
        let plan = crate::phone::NumberPlan::new(crate::phone::region(&self.default_region)?);
        match &self.area_code {
            Some(code) => plan.with_area_code(code),
            None => Ok(plan),
        }
    }

    /// Codec preference list, validated.
    pub fn codec_prefs(&self) -> Result<Vec<Codec>, String> {
        self.codecs
            .iter()
            .map(|c| match c.to_ascii_uppercase().as_str() {
                "PCMU" => Ok(Codec::Pcmu),
                "PCMA" => Ok(Codec::Pcma),
                other => Err(format!("unknown codec {other:?} (PCMU, PCMA)")),
            })
            .collect()
    }

    /// True when requests from `ip` are trusted without authentication.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trust.cidrs.iter().any(|n| n.contains(&ip))
            || self
                .trunks
                .iter()
                .any(|t| t.cidrs.iter().any(|n| n.contains(&ip)))
    }

    /// The digest algorithms `trunk` may authenticate with.
    pub fn trunk_algorithms<'a>(&'a self, trunk: &'a Trunk) -> &'a [Algorithm] {
        trunk
            .digest_algorithms
            .as_deref()
            .unwrap_or(&self.digest_algorithms)
    }

    /// What a 407 offers: every digest trunk's algorithms, in the order they first appear.
    pub fn trunk_challenge_algorithms(&self) -> Vec<Algorithm> {
        let mut offered = Vec::new();
        for t in self.trunks.iter().filter(|t| t.digest.is_some()) {
            for a in self.trunk_algorithms(t) {
                if !offered.contains(a) {
                    offered.push(*a);
                }
            }
        }
        offered
    }

    /// The trunk a request from `ip` belongs to (first match wins).
    pub fn trunk_for(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.cidrs.iter().any(|n| n.contains(&ip)))
            .or_else(|| self.trunks.iter().find(|t| t.cidrs.is_empty()))
    }
}

/// The profiles shipped in `sip-profiles/`, built into the binary.
pub(crate) const BUILT_IN: &[(&str, &str)] = &[
    ("default", include_str!("../sip-profiles/default.toml")),
    ("dev", include_str!("../sip-profiles/dev.toml")),
    (
        "asterisk-pjsip",
        include_str!("../sip-profiles/asterisk-pjsip.toml"),
    ),
    (
        "freeswitch-gateway",
        include_str!("../sip-profiles/freeswitch-gateway.toml"),
    ),
    (
        "generic-gateway",
        include_str!("../sip-profiles/generic-gateway.toml"),
    ),
];

/// Parses "LOW-HIGH".
pub fn parse_port_range(s: &str) -> Result<(u16, u16), ConfigError> {
    let err = || ConfigError::RtpPorts(s.to_string());
    let (a, b) = s.split_once('-').ok_or_else(err)?;
    let lo: u16 = a.trim().parse().map_err(|_| err())?;
    let hi: u16 = b.trim().parse().map_err(|_| err())?;
    if lo == 0 || lo >= hi {
        return Err(err());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Profile::load(p.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(
            n >= 4,
            "default, asterisk, freeswitch, generic-gateway, dev"
        );
    }

    #[test]
    fn built_in_profiles_parse_and_the_default_routes_through_the_queues() {
        for (name, text) in BUILT_IN {
            let p = Profile::parse(text, PathBuf::from(name)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&p.name, name);
        }
        let (_, text) = BUILT_IN[0];
        let d = Profile::parse(text, PathBuf::from("default")).unwrap();
        assert!(
            d.trunks.iter().all(|t| t.agent.is_none()),
            "loopback calls go to the ACD"
        );
        assert!(d.trusts("127.0.0.1".parse().unwrap()));
        assert!(!d.trusts("192.0.2.1".parse().unwrap()));
        // A name with no file in sip-profiles/ falls back to the built-in profile.
        let dir = std::env::temp_dir().join(format!("sp-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Profile::load("no-such-profile").is_err());
        assert!(Profile::load(dir.join("missing.toml").to_str().unwrap()).is_err());
    }

    #[test]
    fn digest_algorithms_default_to_md5_and_are_checked() {
        let base = "name = \"t\"\n";
        let p = Profile::parse(base, PathBuf::from("t")).unwrap();
        assert_eq!(p.digest_algorithms, [Algorithm::Md5]);
        let text = format!(
            "{base}digest_algorithms = [\"SHA-256\", \"MD5\"]\n\
             [[trunks]]\nname = \"a\"\ndigest = {{ username = \"a\", password = \"p\" }}\n\
             [[trunks]]\nname = \"b\"\ndigest = {{ username = \"b\", password = \"p\" }}\n\
             digest_algorithms = [\"MD5\", \"SHA-256-sess\"]\n"
        );
        let p = Profile::parse(&text, PathBuf::from("t")).unwrap();
        assert_eq!(p.digest_algorithms, [Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(p.trunk_algorithms(&p.trunks[0]), p.digest_algorithms);
        assert_eq!(
            p.trunk_challenge_algorithms(),
            [Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha256Sess],
            "every digest trunk's, in the order they first appear"
        );
        let bad = Profile::parse(
            &format!("{base}digest_algorithms = [\"SHA-1\"]"),
            "t".into(),
        );
        let why = bad.unwrap_err().to_string();
        assert!(
            why.contains("digest_algorithms") && why.contains("SHA-1"),
            "{why}"
        );
        let none = Profile::parse(&format!("{base}digest_algorithms = []"), "t".into());
        assert!(none
            .unwrap_err()
            .to_string()
            .contains("`digest_algorithms`"));
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("20000-20100").unwrap(), (20000, 20100));
        assert!(parse_port_range("5-5").is_err());
        assert!(parse_port_range("x").is_err());
    }
}
